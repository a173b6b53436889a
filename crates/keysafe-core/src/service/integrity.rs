//! Authenticated access rows on the service's side (ADR 0013): the row MAC key is derived and
//! installed in the store when the keyring opens (after the one-time back-fill of rows written
//! before MACs existed), and every row read to decide access is verified here before it is
//! used or cached. A row that fails is refused with `integrity_error`, logged (kind and logical
//! key, never the MAC) and counted; it is never repaired.

use super::Service;
use crate::error::CoreError;
use crate::keyring::Keyring;
use crate::store::{
    AccessRow, Applied, ClientRecord, DepositKey, DepositRecord, GrantRecord, GroupRecord,
    Mutation, RowAuth, RowAuthMode, RowAuthenticator, StoreError,
};
use keysafe_proto::{ClientFingerprint, GroupName, OrgName};
use std::sync::Arc;
use std::sync::atomic::Ordering;

impl Service {
    /// Derives the row MAC key from the audit signing key (created on the first start) under
    /// `ring`, and back-fills rows without a MAC once. A database that cannot be written now
    /// (a standby) is back-filled by the node that can.
    pub(super) async fn enable_row_macs(
        &self,
        ring: &Arc<Keyring>,
    ) -> Result<Arc<dyn RowAuthenticator>, CoreError> {
        let signer = Arc::new(
            crate::audit::AuditSigner::load_or_create(self.store.as_ref(), ring, self.clock.now())
                .await?,
        );
        let key: Arc<dyn RowAuthenticator> = signer.row_key();
        let _ = self.audit_signer.set(signer);
        match self
            .store
            .apply(Mutation::BackfillRowMacs {
                auth: RowAuth(key.clone()),
                at: self.clock.now(),
            })
            .await
        {
            Ok(Applied::Backfilled(0)) => {}
            Ok(Applied::Backfilled(n)) => tracing::warn!(
                rows = n,
                "authenticated the access rows written before row MACs existed (once, at the \
                 first unsealed start after the upgrade)"
            ),
            Ok(_) => {}
            Err(StoreError::Conflict) => tracing::error!(
                "the record that row MACs were back-filled is missing although rows carry MACs: \
                 someone removed it; refusing to back-fill (rows without a MAC stay refused; \
                 run `keysafe admin integrity verify`)"
            ),
            Err(e @ (StoreError::ReadOnly | StoreError::Unavailable(_))) => tracing::warn!(
                error = %e,
                "cannot record the back-fill of row MACs now; the node that can write does it"
            ),
            Err(e) => return Err(CoreError::from_store(e, "row MACs")),
        }
        Ok(key)
    }

    /// Refuses a row whose MAC does not verify (or is missing). While sealed nothing can be
    /// verified: rows are used as read, and every change of an authenticated row is refused
    /// (`sealed`), so nothing read then is written back with a MAC.
    pub(super) fn verify_row(&self, row: &AccessRow, mac: Option<&[u8]>) -> Result<(), CoreError> {
        self.verify_encoded_row(&row.encode(), mac, || row.clone())
    }

    /// [`Self::verify_row`] of a row given by its encoding; `row` names it in the refusal.
    fn verify_encoded_row(
        &self,
        encoded: &[u8],
        mac: Option<&[u8]>,
        row: impl FnOnce() -> AccessRow,
    ) -> Result<(), CoreError> {
        let RowAuthMode::On(auth) = self.store.row_auth().get() else {
            return Ok(());
        };
        if mac.is_some_and(|m| auth.verify_encoded(encoded, m)) {
            return Ok(());
        }
        let which = row().describe();
        self.integrity_failures.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            kind = which.kind.as_str(),
            key = %which.key,
            "an access row fails its integrity check (edited outside keysafe?); refused"
        );
        Err(CoreError::Integrity(format!(
            "the stored {which} fails its integrity check"
        )))
    }

    pub(super) fn verify_client(&self, rec: &ClientRecord) -> Result<(), CoreError> {
        self.verify_row(&AccessRow::client(rec), rec.mac.as_deref())
    }

    /// A client as stored, verified.
    pub(super) async fn verified_client(
        &self,
        fp: &ClientFingerprint,
    ) -> Result<Option<ClientRecord>, CoreError> {
        let rec = self.store.get_client(fp).await?;
        if let Some(r) = &rec {
            self.verify_client(r)?;
        }
        Ok(rec)
    }

    /// A deposit header as read, verified: its MAC, and that no version newer than its current
    /// one is stored (a header replayed from before the last write, with its old MAC).
    pub(super) fn verify_deposit(&self, d: &DepositRecord) -> Result<(), CoreError> {
        // Every read checks a header: encoded from the record as it is, without copying it
        // into an `AccessRow` first.
        let encoded = AccessRow::deposit_encoding(d);
        self.verify_encoded_row(&encoded, d.mac.as_deref(), || AccessRow::deposit(d))?;
        if d.newest_version > d.current_version.get() {
            let which = AccessRow::deposit(d).describe();
            self.integrity_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                kind = which.kind.as_str(),
                key = %which.key,
                current = d.current_version.get(),
                newest = d.newest_version,
                "a deposit header names an older version than its newest: rolled back; refused"
            );
            return Err(CoreError::Integrity(format!(
                "the stored {which} was rolled back to an older version"
            )));
        }
        Ok(())
    }

    /// A deposit header as stored, verified.
    pub(super) async fn verified_deposit(
        &self,
        key: &DepositKey,
    ) -> Result<Option<DepositRecord>, CoreError> {
        let d = self.store.get_deposit(key).await?;
        if let Some(d) = &d {
            self.verify_deposit(d)?;
        }
        Ok(d)
    }

    /// A deposit's grants as stored, each verified.
    pub(super) async fn verified_grants(
        &self,
        key: &DepositKey,
    ) -> Result<Vec<GrantRecord>, CoreError> {
        let grants = self.store.get_grants(key).await?;
        for g in &grants {
            self.verify_row(&AccessRow::grant(key, g), g.mac.as_deref())?;
        }
        Ok(grants)
    }

    pub(super) fn verify_grant(&self, key: &DepositKey, g: &GrantRecord) -> Result<(), CoreError> {
        self.verify_row(&AccessRow::grant(key, g), g.mac.as_deref())
    }

    /// The groups of `org` that `member` belongs to, each membership verified.
    pub(super) async fn member_groups(
        &self,
        org: &OrgName,
        member: &ClientFingerprint,
    ) -> Result<Vec<GroupName>, CoreError> {
        let found = self.store.member_groups(org, member).await?;
        let mut out = Vec::with_capacity(found.len());
        for g in found {
            let row = AccessRow::GroupMember {
                org: org.clone(),
                name: g.name,
                member: member.clone(),
            };
            self.verify_row(&row, g.mac.as_deref())?;
            let AccessRow::GroupMember { name, .. } = row else {
                continue;
            };
            out.push(name);
        }
        Ok(out)
    }

    /// A group as read, verified: every membership and epoch row, and that its current epoch
    /// is its newest epoch row (an edited epoch number would make clients encrypt to an older
    /// epoch's recipient, which removed members still hold).
    pub(super) fn verify_group(&self, g: &GroupRecord) -> Result<(), CoreError> {
        for m in &g.members {
            let row = AccessRow::GroupMember {
                org: g.org.clone(),
                name: g.name.clone(),
                member: m.fingerprint.clone(),
            };
            self.verify_row(&row, m.mac.as_deref())?;
        }
        for (i, (epoch, recipient)) in g.epochs.iter().enumerate() {
            let row = AccessRow::GroupEpoch {
                org: g.org.clone(),
                name: g.name.clone(),
                epoch: *epoch,
                recipient: recipient.clone(),
            };
            let mac = g.epoch_macs.get(i).and_then(|m| m.as_deref());
            self.verify_row(&row, mac)?;
        }
        if g.epochs.last().map(|(e, _)| *e) != Some(g.epoch) {
            self.integrity_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                kind = "group",
                key = %format!("{}/{}", g.org, g.name),
                epoch = g.epoch,
                "a group names an epoch other than its newest epoch row; refused"
            );
            return Err(CoreError::Integrity(format!(
                "the stored group {}/{} names an epoch other than its newest",
                g.org, g.name
            )));
        }
        Ok(())
    }

    /// A group as stored, verified.
    pub(super) async fn verified_group(
        &self,
        org: &OrgName,
        name: &GroupName,
    ) -> Result<Option<GroupRecord>, CoreError> {
        let g = self.store.get_group(org, name).await?;
        if let Some(g) = &g {
            self.verify_group(g)?;
        }
        Ok(g)
    }

    /// Rows refused for a failed integrity check since start (a metric).
    pub fn integrity_failures(&self) -> u64 {
        self.integrity_failures.load(Ordering::Relaxed)
    }
}
