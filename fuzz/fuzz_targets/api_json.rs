//! Every JSON body of the HTTP API, read as the server reads a request (`ApiJson`: serde_json
//! over the whole body, trailing bytes refused) and as the client reads an answer. The first
//! byte picks the type, the rest is the body. Properties: nothing panics; an accepted body
//! serialises to JSON that is accepted again and means the same (`to_value(from(to(x)))`
//! equals `to_value(x)`); a secret never shows in `Debug` (the output does not change when
//! only the secret does, so a secret that happens to equal other text is no false alarm); a
//! backup request's recipients go through the server's own check.
//! Authorisation and the checks that need the store are exercised by `server_api`.
#![no_main]

use keysafe_proto::api::*;
use keysafe_proto::audit::{AuditCheckpoints, AuditPage, AuditPublicKey};
use keysafe_proto::{ErrorBody, Timestamp};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A different secret of the same length (a `Debug` that showed only the length would still
/// compare equal): every character replaced.
fn other_secret(s: &str) -> String {
    s.chars()
        .map(|c| if c == 'x' { 'y' } else { 'x' })
        .collect()
}

/// Reads `body` as `T` exactly as axum's `Json` does, then checks the round trip.
fn check<T: DeserializeOwned + Serialize>(body: &[u8]) -> Option<T> {
    let v: T = axum::Json::<T>::from_bytes(body).ok()?.0;
    let direct: T = match serde_json::from_slice(body) {
        Ok(d) => d,
        Err(e) => panic!("axum accepted a body serde_json refuses: {e}"),
    };
    let first = serde_json::to_value(&v).expect("an accepted body serialises");
    assert_eq!(serde_json::to_value(&direct).expect("serialises"), first);
    let text = serde_json::to_vec(&v).expect("serialises");
    let again: T = match serde_json::from_slice(&text) {
        Ok(a) => a,
        Err(e) => panic!(
            "re-serialised body refused: {e}: {}",
            String::from_utf8_lossy(&text)
        ),
    };
    assert_eq!(serde_json::to_value(&again).expect("serialises"), first);
    Some(v)
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 40 {
        // Requests (server side).
        0 => {
            if let Some(r) = check::<RegisterRequest>(body)
                && let Some(s) = &r.auth_secret
            {
                let mut other = r.clone();
                other.auth_secret = Some(AuthSecret::new(other_secret(s.expose())));
                assert_eq!(format!("{r:?}"), format!("{other:?}"), "the secret shows");
            }
        }
        1 => {
            check::<OrgCreateRequest>(body);
        }
        2 => {
            if let Some(r) = check::<OrgSetAuthRequest>(body)
                && let OrgSetAuthRequest::Secret { secret } = &r
            {
                let other = OrgSetAuthRequest::Secret {
                    secret: AuthSecret::new(other_secret(secret.expose())),
                };
                assert_eq!(format!("{r:?}"), format!("{other:?}"), "the secret shows");
            }
        }
        3 => {
            check::<AclUpdate>(body);
        }
        4 => {
            check::<GroupCreateRequest>(body);
        }
        5 => {
            check::<GroupAdmitRequest>(body);
        }
        6 => {
            check::<GroupAddMember>(body);
        }
        7 => {
            check::<GroupRemoveMember>(body);
        }
        8 => {
            check::<RegistrationTokenRequest>(body);
        }
        9 => {
            check::<DisableUnactivatedRequest>(body);
        }
        10 => {
            if let Ok(axum::Json(r)) = axum::Json::<UnsealRequest>::from_bytes(body) {
                let other = UnsealRequest {
                    passphrase: other_secret(&r.passphrase),
                };
                assert_eq!(
                    format!("{r:?}"),
                    format!("{other:?}"),
                    "the passphrase shows"
                );
            }
        }
        11 => {
            check::<KeyringRetireRequest>(body);
        }
        12 => {
            if let Some(r) = check::<BackupRequest>(body)
                && let Ok(list) = keysafe_server::backup::parse_recipients(&r.recipients)
            {
                assert_eq!(list.len(), r.recipients.len());
                for (parsed, given) in list.iter().zip(&r.recipients) {
                    assert_eq!(parsed.to_string(), given.trim());
                }
            }
        }
        13 => {
            check::<ListQuery>(body);
        }
        14 => {
            check::<AclChange>(body);
        }
        // Answers (client side).
        15 => {
            check::<Health>(body);
        }
        16 => {
            check::<ClientInfo>(body);
        }
        17 => {
            check::<ClientList>(body);
        }
        18 => {
            check::<OrgCreated>(body);
        }
        19 => {
            check::<OrgList>(body);
        }
        20 => {
            check::<OrgSetAuthResponse>(body);
        }
        21 => {
            check::<DepositList>(body);
        }
        22 => {
            check::<VersionList>(body);
        }
        23 => {
            check::<PutResponse>(body);
        }
        24 => {
            check::<Acl>(body);
        }
        25 => {
            check::<SharedList>(body);
        }
        26 => {
            check::<RecipientInfo>(body);
        }
        27 => {
            check::<GroupInfo>(body);
        }
        28 => {
            check::<GroupList>(body);
        }
        29 => {
            check::<GroupKeys>(body);
        }
        30 => {
            check::<RegistrationToken>(body);
        }
        31 => {
            check::<PurgeResponse>(body);
        }
        32 => {
            if let Some(s) = check::<KeyringStatusInfo>(body) {
                for v in &s.versions {
                    for u in &v.usage {
                        if let Some(k) = u.wrapped_kind() {
                            assert_eq!(k.as_str(), u.kind);
                        }
                    }
                }
            }
        }
        33 => {
            check::<KeyringRotated>(body);
        }
        34 => {
            check::<ErrorBody>(body);
        }
        35 => {
            check::<AuditPage>(body);
        }
        36 => {
            check::<AuditCheckpoints>(body);
        }
        37 => {
            check::<AuditPublicKey>(body);
        }
        38 => {
            check::<Timestamp>(body);
        }
        _ => {
            check::<KekUsageInfo>(body);
        }
    }
});
