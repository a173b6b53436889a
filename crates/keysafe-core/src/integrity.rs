//! The key that authenticates access rows (ADR 0013): HMAC-SHA256 under a key derived with
//! HKDF-SHA256 from the audit signing key's seed. That seed is wrapped by the keyring, so only a
//! holder of the seal can derive the key; it is one per database (every node of a cluster and a
//! restored backup derive the same key), and it survives keyring rotation and retirement,
//! because the re-wrap job moves the seed to the current keyring version without changing it.

use crate::crypto::SecretKey;
use crate::store::{AccessRow, RowAuthenticator};
use aws_lc_rs::{hkdf, hmac};

/// The row MAC key. Never leaves the process; its Debug output says nothing about it.
pub struct RowMacKey {
    key: hmac::Key,
}

impl std::fmt::Debug for RowMacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RowMacKey")
    }
}

impl RowMacKey {
    /// Derives the key from the audit signing key's seed, for this purpose only (the seed's own
    /// use, Ed25519 signing, never sees the derived key, and the derivation is one-way).
    pub fn derive(seed: &SecretKey) -> Option<Self> {
        let prk =
            hkdf::Salt::new(hkdf::HKDF_SHA256, b"keysafe/row-mac-key/v1").extract(seed.expose());
        let info = [b"keysafe authenticated access rows".as_slice()];
        let key = hmac::Key::from(prk.expand(&info, hmac::HMAC_SHA256).ok()?);
        Some(Self { key })
    }
}

impl RowAuthenticator for RowMacKey {
    fn mac(&self, row: &AccessRow) -> Vec<u8> {
        hmac::sign(&self.key, &row.encode()).as_ref().to_vec()
    }

    fn verify_encoded(&self, encoded: &[u8], mac: &[u8]) -> bool {
        hmac::verify(&self.key, encoded, mac).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keysafe_proto::api::{ClientRole, ClientState};
    use keysafe_proto::{ClientFingerprint, OrgName};

    fn client(state: ClientState, role: ClientRole, recipient: Option<&str>) -> AccessRow {
        AccessRow::Client {
            fingerprint: ClientFingerprint::parse(&"ab".repeat(32)).unwrap(),
            org: OrgName::parse("acme").unwrap(),
            state,
            role,
            recipient: recipient.map(str::to_owned),
        }
    }

    #[test]
    fn every_access_field_is_bound_and_keys_differ() {
        let seed = SecretKey::generate().unwrap();
        let k = RowMacKey::derive(&seed).unwrap();
        let row = client(ClientState::Active, ClientRole::Client, Some("age1x"));
        let mac = k.mac(&row);
        assert!(k.verify(&row, &mac));
        assert!(RowMacKey::derive(&seed).unwrap().verify(&row, &mac));
        for other in [
            client(ClientState::Disabled, ClientRole::Client, Some("age1x")),
            client(ClientState::Active, ClientRole::Admin, Some("age1x")),
            client(ClientState::Active, ClientRole::Client, Some("age1y")),
            client(ClientState::Active, ClientRole::Client, Some("")),
            client(ClientState::Active, ClientRole::Client, None),
        ] {
            assert!(!k.verify(&other, &mac), "{other:?}");
        }
        let other_key = RowMacKey::derive(&SecretKey::generate().unwrap()).unwrap();
        assert!(!other_key.verify(&row, &mac));
        assert!(!k.verify(&row, &mac[..31]));
        assert_eq!(format!("{k:?}"), "RowMacKey");
    }

    #[test]
    fn a_deposit_headers_encoding_is_its_access_rows() {
        use crate::store::DepositRecord;
        use keysafe_proto::{DepositName, DepositVersion, GroupName, Principal, Timestamp};
        let k = RowMacKey::derive(&SecretKey::generate().unwrap()).unwrap();
        for owner in [
            Principal::Client(ClientFingerprint::parse(&"cd".repeat(32)).unwrap()),
            Principal::Group {
                org: OrgName::parse("acme").unwrap(),
                name: GroupName::parse("ops").unwrap(),
            },
        ] {
            for (version, serial, deleted) in [(1, 0, false), (7, 3, true)] {
                let rec = DepositRecord {
                    org: OrgName::parse("acme").unwrap(),
                    owner: owner.clone(),
                    name: DepositName::parse("db/key").unwrap(),
                    current_version: DepositVersion::new(version).unwrap(),
                    current_size: 32,
                    deleted,
                    acl_serial: serial,
                    created_at: Timestamp::from_unix_millis(1),
                    updated_at: Timestamp::from_unix_millis(2),
                    mac: None,
                    newest_version: version,
                };
                let row = AccessRow::deposit(&rec);
                assert_eq!(AccessRow::deposit_encoding(&rec), row.encode(), "{row:?}");
                let mac = k.mac(&row);
                assert!(k.verify_encoded(&AccessRow::deposit_encoding(&rec), &mac));
            }
        }
    }
}
