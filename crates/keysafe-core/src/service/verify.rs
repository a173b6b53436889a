//! Bulk verification of every authenticated access row (ADR 0013): `keysafe admin integrity
//! verify`, over the API for an administrator or offline on the data directory. It reads the
//! store's export (one consistent snapshot, streamed) and checks each row's MAC, that each
//! deposit header names its newest version and each group its newest epoch, and the back-fill
//! record. It reports each failing row by kind and logical key and repairs nothing.
//!
//! Memory grows with the number of deposits and groups (their headers are held until their
//! versions and epochs have streamed past), not with their payloads.

use super::{Caller, Service};
use crate::error::CoreError;
use crate::store::export::{ExportRecord, Value};
use crate::store::{AccessRow, AccessRowKind, RowAuthMode};
use futures_util::StreamExt;
use keysafe_proto::api::{Access, ClientRole, ClientState, IntegrityFailure, IntegrityReport};
use keysafe_proto::{ClientFingerprint, DepositName, GroupName, OrgName, Principal, Timestamp};
use std::collections::BTreeMap;

fn text<'a>(r: &'a ExportRecord, f: &str) -> Option<&'a str> {
    match r.get(f) {
        Some(Value::Text(t)) => Some(t),
        _ => None,
    }
}

fn int(r: &ExportRecord, f: &str) -> Option<i64> {
    match r.get(f) {
        Some(Value::Int(v)) => Some(*v),
        _ => None,
    }
}

fn uint(r: &ExportRecord, f: &str) -> Option<u64> {
    int(r, f).and_then(|v| u64::try_from(v).ok())
}

fn mac(r: &ExportRecord) -> Option<&[u8]> {
    match r.get("mac") {
        Some(Value::Bytes(b)) => Some(b),
        _ => None,
    }
}

/// The authenticated row a record holds, or `None` for a kind that is not authenticated;
/// `Some(Err(key))` when the record does not decode (reported as a failure).
fn access_row(r: &ExportRecord) -> Option<Result<AccessRow, String>> {
    let kind = r.kind().name;
    let row = match kind {
        "clients" => (|| {
            Some(AccessRow::Client {
                fingerprint: ClientFingerprint::parse(text(r, "fingerprint")?).ok()?,
                org: OrgName::parse(text(r, "org")?).ok()?,
                state: ClientState::parse(text(r, "state")?)?,
                role: ClientRole::parse(text(r, "role")?)?,
                recipient: text(r, "recipient").map(str::to_owned),
            })
        })(),
        "deposits" => (|| {
            Some(AccessRow::DepositHead {
                owner: Principal::parse_stored(text(r, "owner")?).ok()?,
                name: DepositName::parse(text(r, "name")?).ok()?,
                org: OrgName::parse(text(r, "org")?).ok()?,
                current_version: uint(r, "current_version")?,
                acl_serial: uint(r, "acl_serial")?,
                deleted: matches!(r.get("deleted"), Some(Value::Bool(true))),
            })
        })(),
        "deposit_grants" => (|| {
            Some(AccessRow::Grant {
                owner: Principal::parse_stored(text(r, "owner")?).ok()?,
                name: DepositName::parse(text(r, "name")?).ok()?,
                grantee: Principal::parse_stored(text(r, "grantee")?).ok()?,
                access: Access::parse(text(r, "access")?)?,
            })
        })(),
        "group_members" => (|| {
            Some(AccessRow::GroupMember {
                org: OrgName::parse(text(r, "org")?).ok()?,
                name: GroupName::parse(text(r, "name")?).ok()?,
                member: ClientFingerprint::parse(text(r, "member")?).ok()?,
            })
        })(),
        "group_epochs" => (|| {
            Some(AccessRow::GroupEpoch {
                org: OrgName::parse(text(r, "org")?).ok()?,
                name: GroupName::parse(text(r, "name")?).ok()?,
                epoch: uint(r, "epoch")?,
                recipient: text(r, "recipient")?.to_owned(),
            })
        })(),
        "row_macs_backfill" => int(r, "completed_at").map(|at| AccessRow::BackfillCompleted {
            at: Timestamp::from_unix_millis(at),
        }),
        _ => return None,
    };
    Some(row.ok_or_else(|| {
        let key: Vec<String> = r
            .kind()
            .key
            .iter()
            .filter_map(|k| match r.get(k) {
                Some(Value::Text(t)) => Some(t.clone()),
                Some(Value::Int(i)) => Some(i.to_string()),
                _ => None,
            })
            .collect();
        format!("{kind} {}", key.join("/"))
    }))
}

fn failure(kind: AccessRowKind, key: String, reason: &str) -> IntegrityFailure {
    IntegrityFailure {
        kind: kind.as_str().to_owned(),
        key,
        reason: reason.to_owned(),
    }
}

impl Service {
    /// `POST /v1/admin/integrity/verify`: administrators only.
    pub async fn verify_integrity_as(&self, caller: &Caller) -> Result<IntegrityReport, CoreError> {
        caller.require_admin()?;
        self.verify_integrity().await
    }

    /// Checks every authenticated row (see the module). `Sealed` while the key is not held.
    pub async fn verify_integrity(&self) -> Result<IntegrityReport, CoreError> {
        let RowAuthMode::On(auth) = self.store.row_auth().get() else {
            return Err(CoreError::Sealed);
        };
        let mut stream = self.store.export().await?;
        let mut report = IntegrityReport::default();
        // Deposit headers and groups until their versions and epochs have been seen.
        let mut heads: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
        let mut groups: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
        let mut backfilled = false;
        while let Some(rec) = stream.next().await {
            let rec = rec?;
            match rec.kind().name {
                "groups" => {
                    if let (Some(o), Some(n), Some(e)) =
                        (text(&rec, "org"), text(&rec, "name"), uint(&rec, "epoch"))
                    {
                        groups.insert((o.to_owned(), n.to_owned()), (e, 0));
                    }
                    continue;
                }
                "deposit_versions" => {
                    if let (Some(o), Some(n), Some(v)) = (
                        text(&rec, "owner"),
                        text(&rec, "name"),
                        uint(&rec, "version"),
                    ) && let Some(h) = heads.get_mut(&(o.to_owned(), n.to_owned()))
                    {
                        h.1 = h.1.max(v);
                    }
                    continue;
                }
                _ => {}
            }
            let Some(row) = access_row(&rec) else {
                continue;
            };
            report.checked += 1;
            let row = match row {
                Ok(row) => row,
                Err(key) => {
                    report.failures.push(IntegrityFailure {
                        kind: rec.kind().name.to_owned(),
                        key,
                        reason: "does not decode".into(),
                    });
                    continue;
                }
            };
            match &row {
                AccessRow::DepositHead {
                    owner,
                    name,
                    current_version,
                    ..
                } => {
                    heads.insert(
                        (owner.stored(), name.as_str().to_owned()),
                        (*current_version, 0),
                    );
                }
                AccessRow::GroupEpoch {
                    org, name, epoch, ..
                } => {
                    if let Some(g) = groups.get_mut(&(org.as_str().to_owned(), name.to_string())) {
                        g.1 = g.1.max(*epoch);
                    }
                }
                AccessRow::BackfillCompleted { .. } => backfilled = true,
                _ => {}
            }
            let ok = mac(&rec).is_some_and(|m| auth.verify(&row, m));
            if !ok {
                let which = row.describe();
                report.failures.push(failure(
                    which.kind,
                    which.key,
                    if mac(&rec).is_none() {
                        "no MAC"
                    } else {
                        "MAC does not match"
                    },
                ));
            }
        }
        for ((owner, name), (current, newest)) in &heads {
            if newest > current {
                report.failures.push(failure(
                    AccessRowKind::Deposit,
                    format!("{owner}/{name}"),
                    "rolled back: a newer version is stored",
                ));
            }
        }
        for ((org, name), (epoch, newest)) in &groups {
            if epoch != newest {
                report.failures.push(IntegrityFailure {
                    kind: "group".into(),
                    key: format!("{org}/{name}"),
                    reason: "names an epoch other than its newest".into(),
                });
            }
        }
        if !backfilled {
            report.failures.push(failure(
                AccessRowKind::BackfillMarker,
                "row_macs_backfill".into(),
                "missing: rows without a MAC cannot be told from stripped ones",
            ));
        }
        if !report.failures.is_empty() {
            self.integrity_failures.fetch_add(
                report.failures.len() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
            tracing::error!(
                failures = report.failures.len(),
                "integrity verify found access rows that fail their check"
            );
        }
        Ok(report)
    }
}
