//! Notifications to systemd for `Type=notify` services (`keysafe serve`, `keysafe kms`):
//! `READY=1` once the listener is bound and the store is open, `WATCHDOG=1` at half the
//! `WATCHDOG_USEC` the unit asks for, `RELOADING=1` / `READY=1` around a SIGHUP reload and
//! `STOPPING=1` at shutdown. Without `NOTIFY_SOCKET` (not run by systemd) every call does
//! nothing. A notification that cannot be sent is logged, never fatal: the service works the
//! same, only systemd's view of it is late.

use sd_notify::NotifyState;
use std::time::Duration;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET)");
    }
}

/// The service is ready; `status` is shown by `systemctl status`.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A configuration or certificate reload starts (followed by [`ready`] when it is done).
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// The service is shutting down.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
}

/// When the unit sets `WatchdogSec=`, pings systemd at half that interval from a task on the
/// runtime, so a wedged runtime stops the pings and systemd restarts the service. Returns the
/// task (it runs until aborted), or `None` without a watchdog.
pub fn spawn_watchdog() -> Option<tokio::task::JoinHandle<()>> {
    let every = watchdog_interval(sd_notify::watchdog_enabled())?;
    tracing::info!(every = ?every, "systemd watchdog enabled");
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            send(&[NotifyState::Watchdog]);
        }
    }))
}

/// Half the watchdog timeout (systemd's advice), never zero.
fn watchdog_interval(timeout: Option<Duration>) -> Option<Duration> {
    timeout
        .filter(|t| !t.is_zero())
        .map(|t| (t / 2).max(Duration::from_millis(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_pings_at_half_its_timeout() {
        assert_eq!(watchdog_interval(None), None);
        assert_eq!(watchdog_interval(Some(Duration::ZERO)), None);
        assert_eq!(
            watchdog_interval(Some(Duration::from_secs(30))),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            watchdog_interval(Some(Duration::from_micros(1))),
            Some(Duration::from_millis(1))
        );
    }
}
