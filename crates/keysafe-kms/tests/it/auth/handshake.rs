//! Authentication handshakes: Hadoop's pseudo authentication and its signed cookie (honoured by
//! every gateway of the organisation, refused when tampered with or from another organisation's
//! gateway), the cookie's `Secure` flag on an HTTPS listener, and a pluggable multi-round
//! authenticator after which cookies work as for pseudo authentication.

use crate::common::*;
use reqwest::{Method, StatusCode};

#[tokio::test]
async fn pseudo_handshake_and_cookie() {
    let env = Env::new().await;
    let gw = env.gateway("127.0.0.1", |_, _| {}).await;
    let anon = Caller::new("x");
    // OPTIONS without credentials: 401 PseudoAuth.
    let r = anon
        .raw(Method::OPTIONS, &format!("{}/keys/names", gw.base), None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers["www-authenticate"], "PseudoAuth");
    // A real request without credentials: 401 as well, no key data.
    let r = anon
        .raw(Method::GET, &format!("{}/keys/names", gw.base), None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // OPTIONS ?user.name=: 200 + signed cookie.
    let r = anon
        .raw(
            Method::OPTIONS,
            &format!("{}/keys/names?user.name=root", gw.base),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let raw = r.headers["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        raw.starts_with("hadoop.auth=\"u=root&p=root&t=simple-dt&e="),
        "{raw}"
    );
    assert!(raw.contains("&s="));
    assert!(raw.ends_with("; Path=/; HttpOnly"));
    let cookie = set_cookie(&r.headers).unwrap();
    // A user name that would smuggle cookie attributes (or audit-log lines) is refused.
    for bad in ["x%26u%3Dadmin", "x%0AOK", "a+b"] {
        let r = anon
            .raw(
                Method::OPTIONS,
                &format!("{}/keys/names?user.name={bad}", gw.base),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{bad}");
        assert!(r.headers.get("set-cookie").is_none());
    }
    // The cookie alone authenticates.
    let mut c = Caller::new("root");
    c.cookie = Some(cookie.clone());
    let r = c
        .raw(Method::GET, &format!("{}/keys/names", gw.base), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.headers.get("set-cookie").is_none(),
        "no new cookie for a cookie request"
    );
    // A tampered cookie (another user, same signature) is refused.
    c.cookie = Some(cookie.replace("u=root&p=root", "u=admin&p=admin"));
    let r = c
        .raw(Method::GET, &format!("{}/keys/names", gw.base), None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // A cookie from a gateway of another organisation (another secret) is refused here.
    let other_env = Env::new().await;
    let other = other_env.gateway("127.0.0.1", |_, _| {}).await;
    let mut o = Caller::new("root");
    o.login(&other.base).await;
    let r = o
        .raw(Method::GET, &format!("{}/keys/names", gw.base), None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // A second gateway of the same organisation honours the first one's cookie.
    let gw2 = env.gateway("127.0.0.2", |_, _| {}).await;
    c.cookie = Some(cookie);
    let r = c
        .raw(Method::GET, &format!("{}/keys/names", gw2.base), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn https_listener() {
    let env = Env::new().await;
    let (cert, key) = (
        env.server.config.tls_cert.clone(),
        env.server.config.tls_key.clone(),
    );
    let gw = env
        .gateway("127.0.0.1", |c, _| {
            c.tls = Some(keysafe_kms::config::TlsConfig { cert, key });
        })
        .await;
    assert!(gw.base.starts_with("https://"));
    let mut c = Caller::new("alice");
    let r = c
        .http
        .request(
            Method::OPTIONS,
            format!("{}/keys/names?user.name=alice", gw.base),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("; Secure")
    );
    let r = c
        .call(&gw, Method::POST, "/keys", Some(r#"{"name":"k"}"#))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(
        r.headers["location"]
            .to_str()
            .unwrap()
            .starts_with("https://")
    );
    // Plain HTTP to the HTTPS port gets no answer.
    let plain = gw.base.replace("https://", "http://");
    assert!(
        c.http
            .get(format!("{plain}/keys/names"))
            .send()
            .await
            .is_err()
    );
}

/// The authentication extension point: a two-round scheme (shaped like SPNEGO) plugged in as
/// the gateway's authenticator; cookies then work as for pseudo authentication.
#[tokio::test]
async fn a_multi_round_authenticator_plugs_in() {
    use keysafe_kms::auth::{AuthRequest, AuthStep, HttpAuthenticator};
    use keysafe_kms::error::KmsResult;
    struct TwoRound;
    #[async_trait::async_trait]
    impl HttpAuthenticator for TwoRound {
        fn token_type(&self) -> &'static str {
            "test-dt"
        }
        fn challenge(&self) -> &'static str {
            "Test"
        }
        async fn authenticate(&self, req: &AuthRequest<'_>) -> KmsResult<AuthStep> {
            let hv = |s: &str| http::HeaderValue::from_str(s).unwrap();
            Ok(
                match req
                    .headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                {
                    Some("Test round1") => AuthStep::Continue {
                        headers: vec![(http::header::WWW_AUTHENTICATE, hv("Test round2"))],
                    },
                    Some(s) if s.starts_with("Test final ") => AuthStep::User {
                        user: s["Test final ".len()..].to_owned(),
                        principal: None,
                        headers: vec![(http::header::WWW_AUTHENTICATE, hv("Test done"))],
                    },
                    _ => AuthStep::None,
                },
            )
        }
    }
    let env = Env::new().await;
    let gw = keysafe_kms::Gateway::with_authenticator(
        std::sync::Arc::new(
            keysafe_kms::deposits::DepositBackend::open(
                &env.client.home,
                env.client.client.clone(),
                "kms",
                None,
            )
            .await
            .unwrap(),
        ),
        &keysafe_kms::KmsConfig {
            audit_log: None,
            key_admins: "*".into(),
            ..Default::default()
        },
        Box::new(TwoRound),
    )
    .await
    .unwrap();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/kms/v1", l.local_addr().unwrap());
    tokio::spawn(keysafe_kms::server::serve(l, gw, std::future::pending()));
    let h = http();
    let url = format!("{base}/keys/names");
    let r = h.request(Method::OPTIONS, &url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["www-authenticate"], "Test");
    // user.name means nothing to this scheme.
    let r = h
        .request(Method::OPTIONS, format!("{url}?user.name=alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = h
        .request(Method::OPTIONS, &url)
        .header("authorization", "Test round1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["www-authenticate"], "Test round2");
    let r = h
        .request(Method::OPTIONS, &url)
        .header("authorization", "Test final alice")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["www-authenticate"], "Test done");
    let cookie = set_cookie(r.headers()).unwrap();
    assert!(cookie.contains("t=test-dt"), "{cookie}");
    let r = h.get(&url).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}
