//! Shared state handed to every handler.

use keysafe_core::Service;
use keysafe_proto::ClientFingerprint;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct AppState {
    pub service: Arc<Service>,
    /// The server's own fingerprint (SHA-256 of its certificate's public key).
    pub fingerprint: ClientFingerprint,
    /// What a backup contains besides the database (issue 5).
    pub backup: Arc<crate::backup::BackupSources>,
}
