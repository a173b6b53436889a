//! Impersonation (doAs): proxy-user rules by user and by host, the parameter matched
//! case-insensitively, refusals as AuthorizationException, and delegation tokens asked for with
//! doAs owned by the proxied user with the proxy as real user.

use super::AUTHZ;
use crate::common::*;
use reqwest::{Method, StatusCode};

#[tokio::test]
async fn proxy_users() {
    let env = Env::new().await;
    let gw = env
        .gateway("127.0.0.1", |c, _| {
            c.proxyuser.insert(
                "oozie".into(),
                keysafe_kms::config::ProxyUserConfig {
                    users: Some("alice".into()),
                    groups: None,
                    hosts: Some("127.0.0.1".into()),
                },
            );
            c.proxyuser.insert(
                "remote".into(),
                keysafe_kms::config::ProxyUserConfig {
                    users: Some("*".into()),
                    groups: None,
                    hosts: Some("10.0.0.0/8".into()),
                },
            );
        })
        .await;
    let mut oozie = Caller::new("oozie");
    // The handshake itself carries doAs (captured client behaviour).
    let r = oozie
        .raw(
            Method::OPTIONS,
            &format!("{}/keys/names?doAs=alice&user.name=oozie", gw.base),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    oozie.cookie = set_cookie(&r.headers);
    let r = oozie
        .call(
            &gw,
            Method::POST,
            "/keys?doAs=alice",
            Some(r#"{"name":"k"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    // doAs matched case-insensitively; the audit shows the proxied user.
    let r = oozie
        .call(&gw, Method::GET, "/keys/names?DOAS=alice", None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = oozie
        .call(&gw, Method::GET, "/keys/names?doAs=bob", None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.exception(), AUTHZ);
    assert_eq!(r.message(), "User: oozie is not allowed to impersonate bob");
    // alice may not impersonate anyone.
    let r = Caller::new("alice")
        .call(&gw, Method::GET, "/keys/names?doAs=oozie", None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Host rule.
    let r = Caller::new("remote")
        .call(&gw, Method::GET, "/keys/names?doAs=alice", None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        r.message()
            .contains("Unauthorized connection for super-user: remote")
    );
    // A token asked for with doAs belongs to the proxied user, with the proxy as real user.
    let r = oozie
        .call(
            &gw,
            Method::GET,
            "/?op=GETDELEGATIONTOKEN&renewer=yarn&doAs=alice",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let t = keysafe_kms::token::Token::decode_url_string(
        r.json()["Token"]["urlString"].as_str().unwrap(),
    )
    .unwrap();
    let id = keysafe_kms::token::TokenIdent::decode(&t.identifier).unwrap();
    assert_eq!(
        (
            id.owner.as_str(),
            id.real_user.as_str(),
            id.renewer.as_str()
        ),
        ("alice", "oozie", "yarn")
    );
    // Without renewer, the renewer is the caller.
    let r = oozie
        .call(&gw, Method::GET, "/?op=GETDELEGATIONTOKEN", None)
        .await;
    let t = keysafe_kms::token::Token::decode_url_string(
        r.json()["Token"]["urlString"].as_str().unwrap(),
    )
    .unwrap();
    let id = keysafe_kms::token::TokenIdent::decode(&t.identifier).unwrap();
    assert_eq!(
        (
            id.owner.as_str(),
            id.real_user.as_str(),
            id.renewer.as_str()
        ),
        ("oozie", "", "oozie")
    );
    // A refused impersonation gets no token.
    let r = oozie
        .call(
            &gw,
            Method::GET,
            "/?op=GETDELEGATIONTOKEN&renewer=yarn&doAs=bob",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    gw.gw.audit.flush();
    let log = std::fs::read_to_string(gw.audit_log()).unwrap();
    assert!(
        log.contains("OK[op=CREATE_KEY, key=k, user=alice] "),
        "{log}"
    );
}
