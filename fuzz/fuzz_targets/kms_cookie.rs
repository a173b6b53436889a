//! The gateway's `hadoop.auth` cookie (keysafe-kms `auth`): finding it in `Cookie` headers,
//! and verifying it. A fuzzer cannot forge the HMAC, so the `Signed` case signs a payload the
//! fuzzer built and compares the verdict with a model of the rules: attributes are `k=v`
//! separated by `&`, each of `u`, `t`, `e` at most once, `t` must be the scheme's type, `e` a
//! time still ahead, `u` non-empty. Issued cookies verify to the user they were issued for,
//! and only for their own type.
#![no_main]

use arbitrary::Arbitrary;
use keysafe_kms::auth::{CookieSigner, check_user_name, cookie_value, now_ms};
use keysafe_kms::crypto::hmac_sha256;
use libfuzzer_sys::fuzz_target;
use std::time::Duration;
use zeroize::Zeroizing;

const SECRET: [u8; 32] = [0x42; 32];
const TYPE: &str = "simple-dt";

#[derive(Arbitrary, Debug)]
enum Input {
    Raw {
        headers: Vec<String>,
        value: String,
    },
    Issue {
        user: String,
        principal: Option<String>,
    },
    Signed {
        attrs: Vec<(String, String)>,
        expires_in: Option<i32>,
        quoted: bool,
    },
}

fn signer() -> CookieSigner {
    CookieSigner::new(Zeroizing::new(SECRET.to_vec()), Duration::from_secs(3600))
}

/// What `verify` must answer for a correctly signed payload: `Some(verdict)`, or `None` when
/// the expiry is too close to now to judge (the clock moves between here and there).
fn model(payload: &str, now: i64) -> Option<Option<String>> {
    let refused = Some(None);
    let (mut u, mut t, mut e) = (None, None, None);
    for part in payload.split('&') {
        let Some((k, v)) = part.split_once('=') else {
            return refused;
        };
        match k {
            "u" if u.is_none() => u = Some(v),
            "t" if t.is_none() => t = Some(v),
            "e" if e.is_none() => match v.parse::<i64>() {
                Ok(x) => e = Some(x),
                Err(_) => return refused,
            },
            "u" | "t" | "e" => return refused,
            _ => {}
        }
    }
    let (Some(t), Some(e)) = (t, e) else {
        return refused;
    };
    if e.abs_diff(now) < 60_000 {
        return None;
    }
    if t != TYPE || e <= now {
        return refused;
    }
    Some(u.filter(|u| !u.is_empty()).map(str::to_owned))
}

/// Raw input: a `Cookie` header value.
fn raw(data: &[u8]) {
    let Ok(v) = http::HeaderValue::from_bytes(data) else {
        return;
    };
    let mut h = http::HeaderMap::new();
    h.insert(http::header::COOKIE, v);
    if let Some(c) = cookie_value(&h) {
        assert!(!c.is_empty());
        let _ = signer().verify(&c, TYPE);
    }
}

fuzz_target!(|data: &[u8]| {
    let input = match keysafe_fuzz::raw_or::<Input>(data) {
        Ok(rest) => return raw(rest),
        Err(None) => return,
        Err(Some(i)) => i,
    };
    let s = signer();
    match input {
        Input::Raw { headers, value } => {
            let mut h = http::HeaderMap::new();
            for v in headers.iter().take(8) {
                if let Ok(v) = http::HeaderValue::from_str(v) {
                    h.append(http::header::COOKIE, v);
                }
            }
            if let Some(c) = cookie_value(&h) {
                assert!(!c.is_empty());
                let _ = s.verify(&c, TYPE);
            }
            let _ = s.verify(&value, TYPE);
        }
        Input::Issue { user, principal } => {
            if check_user_name(&user).is_err() {
                return;
            }
            let c = s.issue(&user, principal.as_deref(), TYPE);
            assert_eq!(s.verify(&c, TYPE).as_deref(), Some(user.as_str()));
            assert_eq!(
                s.verify(&format!("\"{c}\""), TYPE).as_deref(),
                Some(user.as_str())
            );
            assert_eq!(
                s.verify(&c, "kerberos-dt"),
                None,
                "a cookie of another type"
            );
            let mut h = http::HeaderMap::new();
            if let Ok(v) = http::HeaderValue::from_str(&format!("a=b; hadoop.auth=\"{c}\"")) {
                h.insert(http::header::COOKIE, v);
                assert_eq!(cookie_value(&h).as_deref(), Some(c.as_str()));
            }
        }
        Input::Signed {
            attrs,
            expires_in,
            quoted,
        } => {
            let now = now_ms();
            let mut parts: Vec<String> = attrs
                .iter()
                .take(8)
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            if let Some(d) = expires_in {
                parts.push(format!("e={}", now + i64::from(d)));
            }
            let payload = parts.join("&");
            // What verify sees is trimmed of whitespace and quotes first; the model judges that.
            if payload.trim().trim_matches('"') != payload || payload.contains("&s=") {
                return;
            }
            use base64::Engine;
            let sig = base64::engine::general_purpose::STANDARD
                .encode(hmac_sha256(&SECRET, payload.as_bytes()));
            let mut cookie = format!("{payload}&s={sig}");
            if quoted {
                cookie = format!("\"{cookie}\"");
            }
            let got = s.verify(&cookie, TYPE);
            if let Some(want) = model(&payload, now) {
                assert_eq!(got, want, "payload {payload:?}");
            }
        }
    }
});
