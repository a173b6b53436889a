//! What both backends' export and import share: the bounded channel an export task feeds (so
//! the records are read from the database only as fast as the consumer takes them), the SQL
//! that is the same in both dialects, and the batching of an import.
//!
//! An export runs as a task that owns its own connection and read transaction and sends
//! records into the channel; the consumer's stream ends normally only after the task said it
//! reached the end (`RecordSender::done`), so a task that stopped early can never pass for a
//! complete export.

use futures_util::StreamExt;
use keysafe_core::store::export::{ExportRecord, RECORD_KINDS, RecordKind};
use keysafe_core::store::{RecordStream, StoreError, StoreResult};

/// Records in flight between an export task and its consumer.
const CHANNEL: usize = 64;

pub(crate) type Producer = keysafe_core::store::export::RecordSender;

/// A channel whose receiving end is the export's [`RecordStream`].
pub(crate) fn channel() -> (Producer, RecordStream) {
    keysafe_core::store::export::record_channel(CHANNEL)
}

/// `"name"`: identifiers are quoted the same way in both dialects.
fn quoted(name: &str) -> String {
    format!("\"{name}\"")
}

/// `SELECT fields FROM kind ORDER BY key`.
pub(crate) fn select_all(kind: &RecordKind) -> String {
    let fields: Vec<String> = kind.fields.iter().map(|f| quoted(f.name)).collect();
    let key: Vec<String> = kind.key.iter().map(|f| quoted(f)).collect();
    format!(
        "SELECT {} FROM {} ORDER BY {}",
        fields.join(", "),
        quoted(kind.name),
        key.join(", ")
    )
}

/// One query answering whether any kind holds a record: the name of the first that does.
pub(crate) fn first_non_empty() -> String {
    let parts: Vec<String> = RECORD_KINDS
        .iter()
        .map(|k| {
            format!(
                "SELECT '{}' AS kind FROM {} WHERE EXISTS (SELECT 1 FROM {})",
                k.name,
                quoted(k.name),
                quoted(k.name)
            )
        })
        .collect();
    format!(
        "SELECT kind FROM ({}) AS t LIMIT 1",
        parts.join(" UNION ALL ")
    )
}

/// The column list of an INSERT of every field of `kind`.
pub(crate) fn column_list(kind: &RecordKind) -> String {
    let fields: Vec<String> = kind.fields.iter().map(|f| quoted(f.name)).collect();
    format!("{} ({})", quoted(kind.name), fields.join(", "))
}

pub(crate) fn not_empty(kind: &str) -> StoreError {
    tracing::debug!(kind, "import refused: the store holds records");
    StoreError::AlreadyExists
}

/// Most records, and about most bytes, an import writes in one statement.
pub(crate) const BATCH_ROWS: usize = 256;
pub(crate) const BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Records of one kind waiting to be written together.
#[derive(Default)]
pub(crate) struct Batch {
    pub kind: Option<&'static RecordKind>,
    pub rows: Vec<ExportRecord>,
    bytes: usize,
}

impl Batch {
    /// Whether `r` must wait for the batch to be written first (another kind, or full).
    pub(crate) fn must_flush_before(&self, r: &ExportRecord) -> bool {
        !self.rows.is_empty()
            && (self.kind.is_some_and(|k| !std::ptr::eq(k, r.kind()))
                || self.rows.len() >= BATCH_ROWS
                || self.bytes >= BATCH_BYTES)
    }

    pub(crate) fn push(&mut self, r: ExportRecord) {
        self.kind = Some(r.kind());
        self.bytes += r.weight();
        self.rows.push(r);
    }

    /// The batch's records, leaving it empty.
    pub(crate) fn take(&mut self) -> Option<(&'static RecordKind, Vec<ExportRecord>)> {
        self.bytes = 0;
        let rows = std::mem::take(&mut self.rows);
        match self.kind {
            Some(k) if !rows.is_empty() => Some((k, rows)),
            _ => None,
        }
    }
}

/// Where the audit chain stands after the records imported so far: the entry with the highest
/// sequence number.
#[derive(Debug, Default)]
pub(crate) struct ChainEnd {
    pub last: Option<(i64, String)>,
}

impl ChainEnd {
    pub(crate) fn see(&mut self, r: &ExportRecord) {
        use keysafe_core::store::export::{AUDIT_LOG, Value};
        if r.kind().name != AUDIT_LOG {
            return;
        }
        if let (Some(Value::Int(seq)), Some(Value::Text(hash))) = (r.get("seq"), r.get("hash"))
            && self.last.as_ref().is_none_or(|(s, _)| seq > s)
        {
            self.last = Some((*seq, hash.clone()));
        }
    }

    pub(crate) fn head(&self) -> StoreResult<Option<keysafe_core::store::AuditHead>> {
        self.last
            .as_ref()
            .map(|(seq, hash)| {
                Ok(keysafe_core::store::AuditHead {
                    seq: u64::try_from(*seq)
                        .map_err(|_| StoreError::Corrupt("a negative audit seq".into()))?,
                    hash: hash.clone(),
                })
            })
            .transpose()
    }
}

/// Reads the next record of an import's stream.
pub(crate) async fn next(records: &mut RecordStream) -> StoreResult<Option<ExportRecord>> {
    records.next().await.transpose()
}
