//! Change announcements over PostgreSQL's LISTEN/NOTIFY (docs/adr/0011-change-propagation.md).
//!
//! The writer calls [`announce`] in the savepoint of every change that other nodes cache: one
//! statement bumps the change serial and NOTIFYs `keysafe_changes` with `SERIAL CHANGE`.
//! PostgreSQL delivers the notification when (and only if) the transaction commits, in commit
//! order, to every session listening on that server.
//!
//! [`Listener`] keeps one connection of its own (to the primary: a standby cannot LISTEN) that
//! listens and forwards each announcement to its subscribers. Whenever that connection is
//! (re)established it sends [`ChangeEvent::Resync`] first: announcements made while it was not
//! listening are lost, so subscribers forget what they cache. It checks its connection every
//! [`PING_INTERVAL`] so that a connection to a server that vanished (a failover) is replaced
//! within seconds even when no notification arrives, and it stops when nobody subscribes any
//! more.

use super::config::PgConfig;
use super::writer::{Tx, TxResult};
use keysafe_core::store::{Change, ChangeEvent, ChangeNotice};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio_postgres::AsyncMessage;

/// The channel every node listens on.
pub(crate) const CHANNEL: &str = "keysafe_changes";
/// How often the listening connection is checked.
const PING_INTERVAL: Duration = Duration::from_secs(2);
/// Between attempts to connect.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(2);

/// Counts the change and announces it when the transaction commits.
pub(crate) async fn announce(tx: &Tx<'_>, change: &Change) -> TxResult<()> {
    let st = tx
        .prepare_cached(
            "WITH s AS (UPDATE cluster_changes SET serial = serial + 1 RETURNING serial) \
             SELECT pg_notify('keysafe_changes', s.serial::text || ' ' || $1) FROM s",
        )
        .await?;
    tx.execute(&st, &[&change.encode()]).await?;
    Ok(())
}

/// Reads `SERIAL CHANGE`; `None` when it is not one.
fn parse(payload: &str) -> Option<ChangeNotice> {
    let (serial, change) = payload.split_once(' ')?;
    Some(ChangeNotice {
        serial: serial.parse().ok()?,
        change: Change::parse(change),
    })
}

/// The listening task, started by the first subscriber and stopped after the last one left.
pub(crate) struct Listener {
    cfg: PgConfig,
    running: Mutex<Option<broadcast::Sender<ChangeEvent>>>,
}

impl Listener {
    pub(crate) fn new(cfg: PgConfig) -> Arc<Self> {
        Arc::new(Self {
            cfg,
            running: Mutex::new(None),
        })
    }

    pub(crate) fn subscribe(self: &Arc<Self>) -> broadcast::Receiver<ChangeEvent> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = running.as_ref() {
            return tx.subscribe();
        }
        let (tx, rx) = broadcast::channel(1024);
        *running = Some(tx.clone());
        tokio::spawn(self.clone().run(tx));
        rx
    }

    /// Whether the task should go on: somebody still listens. Decided under the lock that
    /// [`Listener::subscribe`] takes, so a new subscriber either finds this task running or
    /// starts a new one.
    fn keep_going(&self, tx: &broadcast::Sender<ChangeEvent>) -> bool {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if tx.receiver_count() > 0 {
            return true;
        }
        if running.as_ref().is_some_and(|r| r.same_channel(tx)) {
            *running = None;
        }
        false
    }

    async fn run(self: Arc<Self>, tx: broadcast::Sender<ChangeEvent>) {
        let mut wait = RECONNECT_MIN;
        loop {
            if !self.keep_going(&tx) {
                return;
            }
            match self.listen(&tx).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "change listener: no connection; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(RECONNECT_MAX);
                }
            }
            // A connection was lost or never made: whatever was announced meanwhile is gone.
            if !self.keep_going(&tx) {
                return;
            }
        }
    }

    /// One listening connection, until it fails (`Err`) or nobody listens (`Ok`).
    async fn listen(&self, tx: &broadcast::Sender<ChangeEvent>) -> Result<(), String> {
        let tls = super::tls::connector(&self.cfg).map_err(|e| e.to_string())?;
        let (client, mut connection) = self.cfg.pg.connect(tls).await.map_err(|e| e.to_string())?;
        let (ntx, mut nrx) = mpsc::unbounded_channel::<String>();
        let driver = tokio::spawn(async move {
            loop {
                match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(n))) => {
                        if n.channel() == CHANNEL && ntx.send(n.payload().to_owned()).is_err() {
                            return;
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "change listener connection failed");
                        return;
                    }
                    None => return,
                }
            }
        });
        let _abort = AbortOnDrop(driver);
        client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .await
            .map_err(|e| e.to_string())?;
        let _ = tx.send(ChangeEvent::Resync);
        let mut ping = tokio::time::interval(PING_INTERVAL);
        ping.tick().await;
        loop {
            tokio::select! {
                payload = nrx.recv() => {
                    let Some(payload) = payload else {
                        return Err("the listening connection ended".into());
                    };
                    match parse(&payload) {
                        Some(n) => {
                            let _ = tx.send(ChangeEvent::Notice(n));
                        }
                        None => tracing::warn!("change listener: an announcement it cannot read"),
                    }
                }
                _ = ping.tick() => {
                    if !self.keep_going(tx) {
                        return Ok(());
                    }
                    match tokio::time::timeout(PING_INTERVAL, client.simple_query("")).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Err(e.to_string()),
                        Err(_) => return Err("the listening connection does not answer".into()),
                    }
                }
            }
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_parse() {
        assert_eq!(
            parse("7 keyring"),
            Some(ChangeNotice {
                serial: 7,
                change: Some(Change::Keyring)
            })
        );
        assert_eq!(
            parse("8 something-new"),
            Some(ChangeNotice {
                serial: 8,
                change: None
            })
        );
        assert_eq!(parse("x keyring"), None);
        assert_eq!(parse("keyring"), None);
    }
}
