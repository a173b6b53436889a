//! What an online backup reads through the service: the store's export and the audit signing
//! key that signs the backup, for administrators only. The key-bearing parts of a backup
//! (root key, TLS key, administrator identity) are files of the data directory and never pass
//! through here.

use crate::audit::AuditSigner;
use crate::error::CoreError;
use crate::store::RecordStream;
use crate::{Caller, Service};
use std::sync::Arc;

/// The records of a backup and the key that signs it.
pub struct BackupSource {
    pub records: RecordStream,
    pub signer: Arc<AuditSigner>,
}

impl std::fmt::Debug for BackupSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupSource")
            .field("signer", &self.signer)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// Starts an export of the whole store for a backup (administrators only; `Sealed` while
    /// the keyring is sealed, since the backup must be signed).
    pub async fn backup_source(&self, caller: &Caller) -> Result<BackupSource, CoreError> {
        caller.require_admin()?;
        let signer = self.audit_signer().await?;
        let records = self.store().export().await?;
        Ok(BackupSource { records, signer })
    }
}
