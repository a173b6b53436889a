//! Delegation tokens: issued to an authenticated caller, honoured by every gateway of the
//! organisation (as a header or the `delegation` parameter), renewed only by their renewer,
//! cancelled without authentication and then dead everywhere, and refused when forged or used
//! to ask for another token.

use crate::common::*;
use reqwest::{Method, StatusCode};

const AUTHN: &str = "org.apache.hadoop.security.authentication.client.AuthenticationException";

#[tokio::test]
async fn delegation_tokens() {
    let env = Env::new().await;
    let a = env.gateway("127.0.0.1", |_, _| {}).await;
    let b = env.gateway("127.0.0.2", |_, _| {}).await;
    let mut root = Caller::new("root");
    root.call(&a, Method::POST, "/keys", Some(r#"{"name":"k"}"#))
        .await;
    // Get a token (renewer yarn).
    let r = root
        .call(
            &a,
            Method::GET,
            "/?op=GETDELEGATIONTOKEN&renewer=yarn",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let t = r.json()["Token"]["urlString"].as_str().unwrap().to_owned();
    let id = keysafe_kms::token::Token::decode_url_string(&t).unwrap();
    assert_eq!(id.kind, "kms-dt");
    let ident = keysafe_kms::token::TokenIdent::decode(&id.identifier).unwrap();
    assert_eq!(
        (ident.owner.as_str(), ident.renewer.as_str()),
        ("root", "yarn")
    );
    // Used with only the header, at the OTHER gateway: authenticated as the owner, no cookie.
    let h = crate::common::http();
    let r = h
        .get(format!("{}/keys/names", b.base))
        .header("X-Hadoop-Delegation-Token", &t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().get("set-cookie").is_none());
    let r = h
        .get(format!("{}/keys/names?delegation={t}", a.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // A forged token (changed owner, old password) is refused with 403 AuthenticationException.
    let mut forged_ident = ident.clone();
    forged_ident.owner = "admin".into();
    let forged = keysafe_kms::token::Token {
        identifier: forged_ident.encode(),
        ..id.clone()
    }
    .encode_url_string();
    let r = h
        .get(format!("{}/keys/names", a.base))
        .header("X-Hadoop-Delegation-Token", &forged)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["RemoteException"]["javaClassName"], AUTHN);
    // Renew: only the renewer (yarn), at b.
    let r = root
        .call(
            &b,
            Method::PUT,
            &format!("/?op=RENEWDELEGATIONTOKEN&token={t}"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let mut yarn = Caller::new("yarn");
    let r = yarn
        .call(
            &b,
            Method::PUT,
            &format!("/?op=RENEWDELEGATIONTOKEN&token={t}"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.json()["long"].as_i64().unwrap() > ident.issue_date);
    let r = yarn
        .call(&b, Method::PUT, "/?op=RENEWDELEGATIONTOKEN", None)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.message(),
        "Operation [RENEWDELEGATIONTOKEN] requires the parameter [token]"
    );
    let r = yarn
        .call(
            &b,
            Method::GET,
            &format!("/?op=RENEWDELEGATIONTOKEN&token={t}"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // A token cannot mint a token.
    let r = h
        .get(format!("{}/?op=GETDELEGATIONTOKEN&renewer=x", a.base))
        .header("X-Hadoop-Delegation-Token", &t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Cancel needs no authentication at all; then the token is dead everywhere.
    let r = h
        .put(format!("{}/?op=CANCELDELEGATIONTOKEN&token={t}", b.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = h
        .get(format!("{}/keys/names", b.base))
        .header("X-Hadoop-Delegation-Token", &t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = h
        .put(format!("{}/?op=CANCELDELEGATIONTOKEN&token={t}", a.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // Unauthenticated GETDELEGATIONTOKEN: the pseudo challenge.
    let r = h
        .get(format!("{}/?op=GETDELEGATIONTOKEN&renewer=x", a.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}
