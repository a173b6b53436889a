//! The server side of the audit trail: the bounded queue that takes the entries of requests that
//! wrote nothing (reads, refusals) off the request path and appends them to the chain in
//! batches, the failure policy (fail closed by default), periodic signed checkpoints, and the
//! sinks that copy the chain to a JSON-lines file and to syslog. Writes carry their own entry
//! into the store's transaction (see `keysafe_core::audit`); this module never sees them until
//! they are committed.
//!
//! Nothing here waits on the queue: a full queue is a failure, handled by the policy, never a
//! stalled request.
//!
//! While the database accepts no writes (only a standby answers), batches go to the node's
//! spool file instead (`audit_spool`), which counts as recorded; they reach the chain, before
//! anything newer, once a primary answers.

use crate::config::{AuditConfig, AuditFailurePolicy, SyslogProtocol};
use keysafe_core::store::AuditAppendError;
use keysafe_core::{Service, Store};
use keysafe_proto::audit::{AuditEntry, AuditEvent};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

/// How many queued entries one append takes. One append is in flight at a time, and the queue
/// fills while it commits, so the trail keeps up only while `BATCH / commit time` exceeds the
/// rate of requests: at 512 a shared disk's 50-100 ms fsync held it near 5,000 entries a second
/// and a faster read path filled the queue (fail closed: `503`). Appending 4,096 entries costs
/// a few milliseconds of inserts and about 1.2 MB of events in memory.
const BATCH: usize = 4096;

/// The least time between two appends of queued entries. Each append is a commit, and on
/// SQLite every commit also empties the page cache of each read connection (a reader that
/// starts after a commit reads its pages again), so under load appends are spaced by this much
/// and take everything that queued meanwhile. Entries that come further apart than this are
/// appended at once. It bounds how much longer an entry can wait in memory (and so what a crash
/// can lose) at high request rates.
const APPEND_SPACING: Duration = Duration::from_millis(10);

/// The queue and its state, shared by every request.
#[derive(Debug)]
pub struct AuditTrail {
    tx: mpsc::Sender<AuditEvent>,
    capacity: usize,
    /// Entries handed to `record` and not yet committed or spooled: counted before they enter
    /// the queue and uncounted only once they are durable, so `flush` never sees zero while an
    /// entry is on its way (in the queue, between the queue and the writer, or in a batch).
    pending: AtomicUsize,
    /// False while the last append failed (cleared by the next success).
    healthy: AtomicBool,
    policy: AuditFailurePolicy,
    pub node: String,
    lost: AtomicU64,
    /// Where batches go while the database is read-only (absent in tests that build a trail
    /// without a data directory).
    spool: Option<Arc<crate::audit_spool::AuditSpool>>,
}

impl AuditTrail {
    /// Starts the batch writer and returns the trail.
    pub fn start(config: &AuditConfig, store: Arc<dyn Store>) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(config.queue_capacity);
        let spool = config.spool.as_ref().and_then(|(path, node)| {
            match crate::audit_spool::AuditSpool::open(path.clone(), node) {
                Ok(s) => Some(Arc::new(s)),
                Err(e) => {
                    // Kept as it is for inspection; the trail records on, without a spool.
                    tracing::error!(error = %e, "the audit spool cannot be used");
                    None
                }
            }
        });
        let trail = Arc::new(Self {
            tx,
            capacity: config.queue_capacity,
            pending: AtomicUsize::new(0),
            healthy: AtomicBool::new(true),
            policy: config.on_failure,
            node: config.node.clone(),
            lost: AtomicU64::new(0),
            spool: spool.clone(),
        });
        for reason in ["store", "queue_full", "file", "syslog"] {
            metrics::counter!("keysafe_audit_failures_total", "reason" => reason).increment(0);
        }
        tokio::spawn(batch_writer(rx, store, Arc::downgrade(&trail), spool));
        trail
    }

    /// Entries spooled on this node, waiting for a primary.
    pub fn spooled(&self) -> u64 {
        self.spool.as_ref().map_or(0, |s| s.len())
    }

    pub fn policy(&self) -> AuditFailurePolicy {
        self.policy
    }

    /// Entries waiting in the queue.
    pub fn depth(&self) -> usize {
        self.capacity.saturating_sub(self.tx.capacity())
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// `ok`, `spooling` (entries wait in the node's spool for a primary: recorded, not yet
    /// chained), `failing` (the store refuses appends) or `queue_full`.
    pub fn state(&self) -> &'static str {
        if !self.is_healthy() {
            "failing"
        } else if self.tx.capacity() == 0 {
            "queue_full"
        } else if self.spooled() > 0 {
            "spooling"
        } else {
            "ok"
        }
    }

    /// Whether a new request can be audited now.
    pub fn accepting(&self) -> bool {
        matches!(self.state(), "ok" | "spooling")
    }

    /// Queues an entry. `false` when it could not be queued (full or stopped): the caller
    /// applies the policy. Counted and logged here, so no loss is silent.
    pub fn record(&self, event: AuditEvent) -> bool {
        self.pending.fetch_add(1, Ordering::SeqCst);
        match self.tx.try_send(event) {
            Ok(()) => true,
            Err(e) => {
                self.pending.fetch_sub(1, Ordering::SeqCst);
                let (reason, ev) = match e {
                    mpsc::error::TrySendError::Full(ev) => ("queue_full", ev),
                    mpsc::error::TrySendError::Closed(ev) => ("stopped", ev),
                };
                metrics::counter!("keysafe_audit_failures_total", "reason" => reason).increment(1);
                self.lost.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    reason,
                    request_id = %ev.request_id,
                    operation = %ev.operation,
                    "audit entry could not be queued"
                );
                false
            }
        }
    }

    /// Waits (up to `limit`) until no recorded entry is left waiting: every entry recorded so
    /// far is committed (or spooled). For shutdown, after the listener closed, and for tests
    /// that read the chain; under steady traffic it waits until `limit`.
    pub async fn flush(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.pending.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Appends queued entries in batches. A failed append is retried (with backoff) with the same
/// entries, so nothing is dropped; meanwhile the trail reports itself failing and, failing
/// closed, requests are refused.
async fn batch_writer(
    mut rx: mpsc::Receiver<AuditEvent>,
    store: Arc<dyn Store>,
    trail: std::sync::Weak<AuditTrail>,
    spool: Option<Arc<crate::audit_spool::AuditSpool>>,
) {
    let start = tokio::time::Instant::now();
    let mut last_append = start.checked_sub(APPEND_SPACING).unwrap_or(start);
    let mut last_full = false;
    loop {
        // While entries wait in the spool, try to replay them every second even when no new
        // entry comes.
        let waiting = spool.as_ref().is_some_and(|s| !s.is_empty());
        let first = tokio::select! {
            e = rx.recv() => match e {
                Some(e) => e,
                None => break,
            },
            _ = tokio::time::sleep(Duration::from_secs(1)), if waiting => {
                if let Some(s) = &spool {
                    let _ = replay_spool(s, store.as_ref()).await;
                }
                continue;
            }
        };
        // A full last batch means entries are coming faster than one batch per spacing: no
        // wait then, so the spacing never limits how fast the queue drains.
        let since = last_append.elapsed();
        if since < APPEND_SPACING && !last_full {
            tokio::time::sleep(APPEND_SPACING - since).await;
        }
        last_append = tokio::time::Instant::now();
        let mut batch = Vec::with_capacity(BATCH);
        batch.push(first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        last_full = batch.len() == BATCH;
        let entries = batch.len();
        let mut backoff = Duration::from_millis(50);
        let mut failures = 0u32;
        loop {
            // Spooled entries first: this batch is newer. While they cannot be replayed, this
            // batch joins them in the spool, so the chain gets them in the order they came.
            if let Some(s) = &spool
                && !s.is_empty()
                && replay_spool(s, store.as_ref()).await.is_err()
            {
                if spool_batch(s, &batch, &trail) {
                    break;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
            // A failed append hands the same entries back (moved, not copied) for the retry.
            match store.append_audit(batch).await {
                Ok(()) => {
                    if let Some(t) = trail.upgrade() {
                        t.healthy.store(true, Ordering::Relaxed);
                        t.pending.fetch_sub(entries, Ordering::SeqCst);
                    }
                    break;
                }
                Err(AuditAppendError {
                    error: keysafe_core::store::StoreError::ReadOnly,
                    events,
                }) if spool.is_some() => {
                    batch = events;
                    if let Some(s) = &spool
                        && spool_batch(s, &batch, &trail)
                    {
                        break;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(AuditAppendError { error: e, events }) => {
                    batch = events;
                    metrics::counter!("keysafe_audit_failures_total", "reason" => "store")
                        .increment(1);
                    tracing::error!(error = %e, entries = batch.len(), "cannot append to the audit trail; retrying");
                    // One failure is retried at once before the trail counts as failing: a
                    // database failover breaks the connection the append was using, and the
                    // retry learns what the store says now (often `ReadOnly`: then spooled).
                    failures += 1;
                    match trail.upgrade() {
                        Some(t) if failures > 1 => t.healthy.store(false, Ordering::Relaxed),
                        Some(_) => {}
                        None => return,
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// Writes a batch to the spool; `true` when it is there (durably), so it counts as recorded.
fn spool_batch(
    spool: &crate::audit_spool::AuditSpool,
    batch: &[AuditEvent],
    trail: &std::sync::Weak<AuditTrail>,
) -> bool {
    match spool.write(batch) {
        Ok(()) => {
            metrics::counter!("keysafe_audit_spooled_total").increment(batch.len() as u64);
            if let Some(t) = trail.upgrade() {
                t.healthy.store(true, Ordering::Relaxed);
                t.pending.fetch_sub(batch.len(), Ordering::SeqCst);
            }
            true
        }
        Err(e) => {
            metrics::counter!("keysafe_audit_failures_total", "reason" => "spool").increment(1);
            tracing::error!(error = %e, entries = batch.len(), "cannot spool audit entries; retrying");
            if let Some(t) = trail.upgrade() {
                t.healthy.store(false, Ordering::Relaxed);
            }
            false
        }
    }
}

/// Appends every spooled batch to the chain, oldest first, and removes the spool when all are
/// in. Stops at the first batch the store does not take (still read-only).
async fn replay_spool(
    spool: &crate::audit_spool::AuditSpool,
    store: &dyn Store,
) -> Result<(), keysafe_core::store::StoreError> {
    let batches = match spool.batches() {
        Ok(b) => b,
        Err(e @ crate::audit_spool::SpoolError::Altered { .. }) => {
            // Evidence, not entries to trust: kept aside, reported, and recording goes on.
            metrics::counter!("keysafe_audit_failures_total", "reason" => "spool").increment(1);
            match spool.quarantine() {
                Ok(aside) => tracing::error!(
                    error = %e,
                    kept = %aside.display(),
                    "the audit spool was altered while it waited for a primary; its entries \
                     are not appended to the chain"
                ),
                Err(q) => {
                    tracing::error!(error = %e, quarantine = %q, "the audit spool was altered")
                }
            }
            return Ok(());
        }
        Err(e) => return Err(keysafe_core::store::StoreError::Unavailable(e.to_string())),
    };
    let n = batches.len();
    let mut entries = 0usize;
    for b in batches {
        entries += b.events.len();
        store
            .append_spooled(b)
            .await
            .map_err(|AuditAppendError { error, .. }| error)?;
    }
    spool
        .clear(n)
        .map_err(|e| keysafe_core::store::StoreError::Unavailable(e.to_string()))?;
    if n > 0 {
        tracing::info!(
            batches = n,
            entries,
            "audit entries spooled while the database was read-only are in the chain now"
        );
    }
    Ok(())
}

/// Signs the head of the chain every `interval` (if it moved).
pub fn spawn_checkpoints(service: Arc<Service>, interval: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = service.audit_checkpoint().await {
                tracing::warn!(error = %e, "cannot sign an audit checkpoint");
            }
        }
    });
}

/// Copies committed entries, in order, to the file and syslog sinks. It follows the chain in
/// the database from the head at start, so the sinks see writes and reads alike, once each.
pub fn spawn_sinks(config: &AuditConfig, store: Arc<dyn Store>) {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if let Some(path) = &config.file {
        sinks.push(Box::new(FileSink {
            path: path.clone(),
            max_size: config.file_max_size,
            keep: config.file_keep,
        }));
    }
    if let Some((addr, proto)) = &config.syslog {
        sinks.push(Box::new(SyslogSink {
            addr: addr.clone(),
            proto: *proto,
            tcp: None,
            udp: None,
        }));
    }
    if sinks.is_empty() {
        return;
    }
    let mut next = store.audit_head().seq.saturating_add(1);
    tokio::spawn(async move {
        loop {
            match store.audit_entries(next, None, 1000).await {
                Ok(entries) if !entries.is_empty() => {
                    for e in &entries {
                        for s in sinks.iter_mut() {
                            if let Err(err) = s.send(e).await {
                                metrics::counter!("keysafe_audit_failures_total", "reason" => s.name())
                                    .increment(1);
                                tracing::error!(sink = s.name(), error = %err, seq = e.seq, "audit sink failed");
                            }
                        }
                        next = e.seq.saturating_add(1);
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "audit sinks cannot read the trail"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

#[async_trait::async_trait]
trait Sink: Send {
    fn name(&self) -> &'static str;
    async fn send(&mut self, e: &AuditEntry) -> std::io::Result<()>;
}

/// JSON lines, one entry each; rotated by size (FILE -> FILE.1 -> ... -> FILE.keep).
struct FileSink {
    path: PathBuf,
    max_size: u64,
    keep: u32,
}

impl FileSink {
    fn rotated(&self, n: u32) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    }

    fn rotate(&self) -> std::io::Result<()> {
        if self.keep == 0 {
            return std::fs::remove_file(&self.path);
        }
        let _ = std::fs::remove_file(self.rotated(self.keep));
        for n in (1..self.keep).rev() {
            let from = self.rotated(n);
            if from.exists() {
                std::fs::rename(&from, self.rotated(n + 1))?;
            }
        }
        std::fs::rename(&self.path, self.rotated(1))
    }
}

#[async_trait::async_trait]
impl Sink for FileSink {
    fn name(&self) -> &'static str {
        "file"
    }

    async fn send(&mut self, e: &AuditEntry) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(e)?;
        line.push(b'\n');
        let size = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        if size > 0 && size + line.len() as u64 > self.max_size {
            self.rotate()?;
        }
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)?;
        f.write_all(&line)
    }
}

/// RFC 5424 messages: `<PRI>1 TIMESTAMP NODE keysafe - audit - JSON`, facility 13 (log audit),
/// severity informational for `ok` and warning otherwise.
struct SyslogSink {
    addr: String,
    proto: SyslogProtocol,
    tcp: Option<tokio::net::TcpStream>,
    udp: Option<tokio::net::UdpSocket>,
}

pub fn syslog_message(e: &AuditEntry) -> String {
    let severity = if e.event.outcome == "ok" { 6 } else { 4 };
    let pri = 13 * 8 + severity;
    let time = keysafe_proto::Timestamp::from_unix_millis(e.event.time).to_rfc3339();
    let host: String = e
        .event
        .node
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect();
    let host = if host.is_empty() { "-".into() } else { host };
    let json = serde_json::to_string(e).unwrap_or_default();
    format!("<{pri}>1 {time} {host} keysafe - audit - {json}")
}

#[async_trait::async_trait]
impl Sink for SyslogSink {
    fn name(&self) -> &'static str {
        "syslog"
    }

    async fn send(&mut self, e: &AuditEntry) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        let msg = syslog_message(e);
        match self.proto {
            SyslogProtocol::Udp => {
                if self.udp.is_none() {
                    let target = tokio::net::lookup_host(&self.addr)
                        .await?
                        .next()
                        .ok_or_else(|| std::io::Error::other("syslog address does not resolve"))?;
                    // A client socket on the matching loopback or wildcard address.
                    let local: std::net::SocketAddr = match (target.ip().is_loopback(), target) {
                        (true, std::net::SocketAddr::V4(_)) => ([127, 0, 0, 1], 0).into(),
                        (true, std::net::SocketAddr::V6(_)) => {
                            (std::net::Ipv6Addr::LOCALHOST, 0).into()
                        }
                        (false, std::net::SocketAddr::V4(_)) => ([0, 0, 0, 0], 0).into(),
                        (false, std::net::SocketAddr::V6(_)) => {
                            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                        }
                    };
                    let sock = tokio::net::UdpSocket::bind(local).await?;
                    sock.connect(target).await?;
                    self.udp = Some(sock);
                }
                match self.udp.as_ref() {
                    Some(s) => s.send(msg.as_bytes()).await.map(|_| ()),
                    None => Ok(()),
                }
            }
            SyslogProtocol::Tcp => {
                if self.tcp.is_none() {
                    self.tcp = Some(tokio::net::TcpStream::connect(&self.addr).await?);
                }
                let frame = format!("{} {msg}", msg.len());
                let r = match self.tcp.as_mut() {
                    Some(s) => s.write_all(frame.as_bytes()).await,
                    None => Ok(()),
                };
                if r.is_err() {
                    self.tcp = None;
                }
                r
            }
        }
    }
}
