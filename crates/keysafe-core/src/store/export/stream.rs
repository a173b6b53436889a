//! An export's records in motion: the [`RecordStream`] an export produces and an import
//! consumes, the bounded [`record_channel`] that feeds it (the stream ends cleanly only when its
//! producer says it is done), and the [`ImportSummary`] an import answers with.

use super::kinds::{RECORD_KINDS, RecordKind};
use super::record::ExportRecord;
use crate::store::{StoreError, StoreResult};
use std::pin::Pin;

/// The records of an export, read as they are consumed (never the whole store in memory).
pub type RecordStream =
    Pin<Box<dyn futures_util::Stream<Item = StoreResult<ExportRecord>> + Send + 'static>>;

enum Msg {
    Record(ExportRecord),
    Failed(StoreError),
    Done,
}

/// The producing end of a [`record_channel`]: whoever reads the records (an export task, a
/// backup reader) sends them here. The stream ends normally only after [`RecordSender::done`]:
/// a producer that stops without saying so (dropped, panicked) ends the stream with an error,
/// so a partial export can never pass for a complete one.
#[derive(Debug)]
pub struct RecordSender {
    tx: tokio::sync::mpsc::Sender<Msg>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Record(r) => write!(f, "Record({})", r.kind().name),
            Msg::Failed(e) => write!(f, "Failed({e})"),
            Msg::Done => f.write_str("Done"),
        }
    }
}

impl RecordSender {
    /// Sends one record; `false` when the consumer is gone (the producer should stop).
    pub async fn send(&self, r: ExportRecord) -> bool {
        self.tx.send(Msg::Record(r)).await.is_ok()
    }

    /// [`RecordSender::send`] from a thread outside the async runtime.
    pub fn blocking_send(&self, r: ExportRecord) -> bool {
        self.tx.blocking_send(Msg::Record(r)).is_ok()
    }

    /// Ends the stream with an error.
    pub async fn fail(self, e: StoreError) {
        let _ = self.tx.send(Msg::Failed(e)).await;
    }

    pub fn blocking_fail(self, e: StoreError) {
        let _ = self.tx.blocking_send(Msg::Failed(e));
    }

    /// Ends the stream: every record was sent.
    pub async fn done(self) {
        let _ = self.tx.send(Msg::Done).await;
    }

    pub fn blocking_done(self) {
        let _ = self.tx.blocking_send(Msg::Done);
    }
}

/// A bounded channel (at most `capacity` records in flight) whose receiving end is a
/// [`RecordStream`].
pub fn record_channel(capacity: usize) -> (RecordSender, RecordStream) {
    let (tx, rx) = tokio::sync::mpsc::channel(capacity.max(1));
    let stream = futures_util::stream::unfold(Some(rx), |rx| async move {
        let mut rx = rx?;
        match rx.recv().await {
            Some(Msg::Record(r)) => Some((Ok(r), Some(rx))),
            Some(Msg::Failed(e)) => Some((Err(e), None)),
            Some(Msg::Done) => None,
            None => Some((
                Err(StoreError::Unavailable(
                    "the records stopped before their end".into(),
                )),
                None,
            )),
        }
    });
    (RecordSender { tx }, Box::pin(stream))
}

/// What an import wrote: how many records of each kind, in [`RECORD_KINDS`] order (kinds with
/// none included).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportSummary {
    pub counts: Vec<(&'static str, u64)>,
}

impl ImportSummary {
    pub fn new() -> Self {
        Self {
            counts: RECORD_KINDS.iter().map(|k| (k.name, 0)).collect(),
        }
    }

    pub fn add(&mut self, kind: &RecordKind) {
        if let Some((_, n)) = self.counts.iter_mut().find(|(k, _)| *k == kind.name) {
            *n += 1;
        }
    }

    pub fn count(&self, kind: &str) -> u64 {
        self.counts
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, n)| *n)
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().map(|(_, n)| n).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::super::record::Value;
    use super::*;

    fn kind(name: &str) -> &'static RecordKind {
        RecordKind::named(name).unwrap()
    }

    #[tokio::test]
    async fn a_channel_ends_cleanly_only_when_told() {
        use futures_util::StreamExt;
        let rec = ExportRecord::new(
            kind("keyring"),
            vec![
                Value::Text("file".into()),
                Value::Int(1),
                Value::Bytes(vec![]),
                Value::Int(2),
            ],
        )
        .unwrap();
        let (tx, mut rx) = record_channel(4);
        assert!(tx.send(rec.clone()).await);
        tx.done().await;
        assert_eq!(rx.next().await.unwrap().unwrap(), rec);
        assert!(rx.next().await.is_none());
        // Dropped without `done`: an error, never a clean end.
        let (tx, mut rx) = record_channel(4);
        assert!(tx.send(rec.clone()).await);
        drop(tx);
        assert!(rx.next().await.unwrap().is_ok());
        assert!(rx.next().await.unwrap().is_err());
        assert!(rx.next().await.is_none());
        // A failure ends it with that error.
        let (tx, mut rx) = record_channel(4);
        tx.fail(StoreError::Corrupt("x".into())).await;
        assert_eq!(
            rx.next().await.unwrap().unwrap_err(),
            StoreError::Corrupt("x".into())
        );
        assert!(rx.next().await.is_none());
        // A consumer that went away stops the producer.
        let (tx, rx) = record_channel(4);
        drop(rx);
        assert!(!tx.send(rec).await);
    }
}
