//! Keys in keysafe: a volume's password (or a LUKS key) is a deposit of this client, end-to-end
//! encrypted like every deposit (age, to this client and to whoever it is shared with), shared
//! read-only with the recovery principals chosen at `prepare`/`bind` so an administrator can
//! recover the data after the host is lost. Fetching asks every configured server at once and
//! falls back to the client cache under its own rules when no server answers.

use crate::VolumeError;
use keysafe_client::vault::Vault;
use keysafe_client::{Precondition, Source};
use keysafe_proto::DepositName;
use keysafe_proto::api::{Access, AclChange, Encoding};
use zeroize::Zeroizing;

/// Which deposit holds a key, and whose it is (`None`: this client's own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRef {
    pub deposit: DepositName,
    pub owner: Option<String>,
}

/// A fetched key and where it came from (a stale cached copy is said so).
pub struct FetchedKey {
    pub secret: Zeroizing<Vec<u8>>,
    pub source: Source,
}

impl std::fmt::Debug for FetchedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchedKey")
            .field("secret", &"[redacted]")
            .field("source", &self.source)
            .finish()
    }
}

/// Checks the form of a principal given on the command line: a client fingerprint or
/// `group:NAME` (the server resolves the group in the caller's organisation).
pub fn check_principal(p: &str) -> Result<(), VolumeError> {
    let ok = match p.strip_prefix("group:") {
        Some(g) => keysafe_proto::GroupName::parse(g).is_ok(),
        None => keysafe_proto::ClientFingerprint::parse(p).is_ok(),
    };
    if ok {
        Ok(())
    } else {
        Err(VolumeError::Invalid(format!(
            "invalid principal {:?}: a client fingerprint (64 hex characters) or group:NAME",
            p.chars().take(80).collect::<String>()
        )))
    }
}

/// Checks that every recovery principal exists and can be encrypted to, before anything is
/// created (bad input changes nothing).
pub async fn check_recovery(vault: &Vault, recovery: &[String]) -> Result<(), VolumeError> {
    for r in recovery {
        check_principal(r)?;
    }
    for r in recovery {
        vault.client().recipient(r).await.map_err(|e| {
            VolumeError::Invalid(format!(
                "recovery principal {r} cannot receive keys ({e}); name an existing group as \
                 group:NAME or a client fingerprint"
            ))
        })?;
    }
    Ok(())
}

/// Deposits `secret` as a new deposit `name` (never over an existing one) and shares it
/// read-only with each of `recovery`.
pub async fn deposit_key(
    vault: &Vault,
    name: &DepositName,
    secret: &[u8],
    recovery: &[String],
) -> Result<(), VolumeError> {
    vault
        .put(None, name, secret, Precondition::IfAbsent)
        .await
        .map_err(|e| match e.code() {
            Some(keysafe_proto::ErrorCode::AlreadyExists)
            | Some(keysafe_proto::ErrorCode::VersionConflict) => VolumeError::Conflict(format!(
                "a deposit {name} exists already: choose another --name (or purge it if no \
                 volume or disk uses it)"
            )),
            _ => VolumeError::Client(e),
        })?;
    for r in recovery {
        vault
            .change_acl(
                None,
                name,
                AclChange::Grant {
                    grantee: r.clone(),
                    access: Access::Read,
                },
                &|_, _| {},
            )
            .await
            .map_err(|e| {
                VolumeError::Incomplete(format!(
                    "the key is deposited as {name} but sharing it with {r} failed ({e}); run \
                     `keysafe share {name} --with {r}`"
                ))
            })?;
    }
    Ok(())
}

/// Fetches a key from every configured server at once (or the cache when none answers).
pub async fn fetch_key(vault: &Vault, key: &KeyRef) -> Result<FetchedKey, VolumeError> {
    if let Some(o) = &key.owner {
        check_principal(o)?;
    }
    let f = vault
        .client()
        .get_racing(key.owner.as_deref(), &key.deposit, None)
        .await?;
    let encoding = f
        .encoding
        .as_deref()
        .and_then(Encoding::parse)
        .unwrap_or(Encoding::Raw);
    let secret = match encoding {
        Encoding::Age => vault.decrypt(&f.payload).await?,
        Encoding::Raw => Zeroizing::new(f.payload.to_vec()),
    };
    Ok(FetchedKey {
        secret,
        source: f.source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_are_checked_locally() {
        assert!(check_principal("group:recovery").is_ok());
        assert!(check_principal(&"ab".repeat(32)).is_ok());
        for bad in ["", "group:", "group:a b", "recovery", "ab12", "group:x/y"] {
            assert!(check_principal(bad).is_err(), "{bad}");
        }
    }
}
