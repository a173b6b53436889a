//! Hadoop `kms-dt` delegation tokens (keysafe-kms `token`, `delegation`): the URL-safe base64
//! Writable container, the token identifier, `WritableUtils` variable-length integers, and the
//! delegation-token manager that verifies, renews and cancels them for the gateway.
//!
//! A fuzzer cannot forge the HMAC, so the `Signed` case signs the identifier the fuzzer chose
//! with the manager's master key (planted in an in-memory backend) and then checks the
//! manager's verdicts against a model: a token is good while its kind and key id are right,
//! it has not reached its max date, its current expiry (issue date + renew interval, or the
//! last renewal) is ahead, and it was not cancelled; only its renewer renews it; only its owner
//! or renewer cancels it. Verdicts within a minute of "now" are not judged (the clock moves).
#![no_main]

use arbitrary::Arbitrary;
use keysafe_kms::backend::{KeyBackend, MemoryBackend};
use keysafe_kms::config::DtConfig;
use keysafe_kms::crypto::hmac_sha1;
use keysafe_kms::delegation::DtManager;
use keysafe_kms::token::{KIND, Token, TokenIdent, read_vlong, write_vlong};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const MASTER: [u8; 64] = [0x5a; 64];
const RENEW: Duration = Duration::from_secs(3600);
const MARGIN: i64 = 60_000;

#[derive(Arbitrary, Debug)]
enum Op {
    Verify,
    Renew { as_renewer: bool, other: String },
    Cancel { who: u8, other: String },
}

#[derive(Arbitrary, Debug)]
enum Input {
    Ident(Vec<u8>),
    Vlong(Vec<u8>),
    Signed {
        owner: String,
        renewer: String,
        real_user: String,
        /// Milliseconds relative to now.
        issued: i32,
        max: i32,
        sequence: i32,
        master_key_id: i32,
        kind: Option<String>,
        service: String,
        ops: Vec<Op>,
    },
}

/// A manager whose master key is [`MASTER`], over a backend of its own (a record left by
/// another input must not change this one's verdicts).
async fn fresh_manager() -> DtManager {
    let backend = Arc::new(MemoryBackend::default());
    backend
        .put_shared("dt-master-key", &MASTER, None)
        .await
        .expect("an empty backend");
    let cfg = DtConfig {
        renew_interval: RENEW,
        ..DtConfig::default()
    };
    DtManager::shared(backend, cfg).await.expect("a manager")
}

fn manager() -> &'static DtManager {
    static M: OnceLock<DtManager> = OnceLock::new();
    M.get_or_init(|| keysafe_fuzz::runtime().block_on(fresh_manager()))
}

fn now_ms() -> i64 {
    keysafe_kms::auth::now_ms()
}

fn decode_round_trip(s: &str) {
    if let Some(t) = Token::decode_url_string(s) {
        let again = Token::decode_url_string(&t.encode_url_string()).expect("re-encoded token");
        assert_eq!(again.identifier, t.identifier);
        assert_eq!(again.password, t.password);
        assert_eq!(again.kind, t.kind);
        assert_eq!(again.service, t.service);
        ident_round_trip(&t.identifier);
    }
}

fn ident_round_trip(b: &[u8]) {
    if let Some(id) = TokenIdent::decode(b) {
        // Non-minimal variable-length integers decode too, so only the value round-trips.
        assert_eq!(TokenIdent::decode(&id.encode()), Some(id));
    }
}

/// Raw input: a token's URL string, as in `?delegation=` or `X-Hadoop-Delegation-Token`.
fn raw(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    decode_round_trip(s);
    let m = manager();
    keysafe_fuzz::runtime().block_on(async {
        let _ = m.verify(s).await;
        let _ = m.renew(s, "someone").await;
        let _ = m.cancel(s, None).await;
    });
}

fuzz_target!(|data: &[u8]| {
    let input = match keysafe_fuzz::raw_or::<Input>(data) {
        Ok(rest) => return raw(rest),
        Err(None) => return,
        Err(Some(i)) => i,
    };
    let rt = keysafe_fuzz::runtime();
    match input {
        Input::Ident(b) => ident_round_trip(&b),
        Input::Vlong(b) => {
            let mut pos = 0;
            while let Some(v) = read_vlong(&b, &mut pos) {
                assert!(pos <= b.len());
                let mut out = Vec::new();
                write_vlong(&mut out, v);
                let mut p = 0;
                assert_eq!(read_vlong(&out, &mut p), Some(v));
                assert_eq!(p, out.len());
            }
        }
        Input::Signed {
            owner,
            renewer,
            real_user,
            issued,
            max,
            sequence,
            master_key_id,
            kind,
            service,
            ops,
        } => {
            let now = now_ms();
            let id = TokenIdent {
                owner,
                renewer,
                real_user,
                issue_date: now + i64::from(issued),
                max_date: now + i64::from(max),
                sequence,
                master_key_id,
            };
            let ident = id.encode();
            assert_eq!(TokenIdent::decode(&ident).as_ref(), Some(&id));
            let kind = kind.unwrap_or_else(|| KIND.to_owned());
            let token = Token {
                password: hmac_sha1(&MASTER, &ident),
                identifier: ident,
                kind: kind.clone(),
                service,
            };
            let url = token.encode_url_string();
            decode_round_trip(&url);
            let authentic = kind == KIND && id.master_key_id == 1;
            // The model: the token's current expiry and whether it was cancelled.
            let mut expiry = (id.issue_date + RENEW.as_millis() as i64).min(id.max_date);
            let mut cancelled = false;
            let m = rt.block_on(fresh_manager());
            let m = &m;
            for op in ops.into_iter().take(8) {
                let now = now_ms();
                let near = |t: i64| (t - now).abs() < MARGIN;
                if near(expiry) || near(id.max_date) {
                    return;
                }
                let live = authentic && !cancelled && expiry > now && id.max_date > now;
                match op {
                    Op::Verify => {
                        let r = rt.block_on(m.verify(&url));
                        assert_eq!(r.is_ok(), live, "verify: {r:?}");
                        if let Ok(u) = r {
                            assert_eq!(u.owner, id.owner);
                            assert_eq!(u.real_user.as_deref().unwrap_or(""), id.real_user);
                        }
                    }
                    Op::Renew { as_renewer, other } => {
                        let caller = if as_renewer {
                            id.renewer.clone()
                        } else {
                            other
                        };
                        let r = rt.block_on(m.renew(&url, &caller));
                        let may = live && !id.renewer.is_empty() && caller == id.renewer;
                        assert_eq!(r.is_ok(), may, "renew: {r:?}");
                        if let Ok(new_expiry) = r {
                            assert!(new_expiry <= id.max_date);
                            expiry = new_expiry;
                        }
                    }
                    Op::Cancel { who, other } => {
                        let caller = match who % 4 {
                            0 => None,
                            1 => Some(id.owner.clone()),
                            2 => Some(id.renewer.clone()),
                            _ => Some(other),
                        };
                        let r = rt.block_on(m.cancel(&url, caller.as_deref()));
                        let entitled = caller
                            .as_ref()
                            .is_none_or(|c| *c == id.owner || *c == id.renewer);
                        assert_eq!(r.is_ok(), live && entitled, "cancel: {r:?}");
                        if r.is_ok() {
                            cancelled = true;
                        }
                    }
                }
            }
        }
    }
});
