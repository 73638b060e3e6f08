//! Telling systemd how the daemon is (`Type=notify`): ready once every
//! listener is bound, the firewall table loaded and the store open;
//! reloading on SIGHUP; stopping; and watchdog pings that only go out
//! while the call core answers, so a wedged core gets the service
//! restarted rather than a process that merely exists.
//!
//! The `sd-notify` crate speaks the protocol; without `$NOTIFY_SOCKET`
//! (not under systemd) every call is a no-op.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::calls::core::GuardRequest;

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        warn!("systemd notify: {e}");
    }
}

/// Startup is complete.
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload (SIGHUP) starts; [`ready`] ends it.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
}

/// The daemon is stopping.
pub fn stopping() {
    notify(&[NotifyState::Stopping]);
}

/// The watchdog interval systemd asked for, read as libsystemd's
/// `sd_watchdog_enabled` does: `$WATCHDOG_USEC`, for this process when
/// `$WATCHDOG_PID` names it or is unset. (The crate's `watchdog_enabled`
/// also requires `$WATCHDOG_PID`, which libsystemd does not.)
fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    match std::env::var("WATCHDOG_PID") {
        Ok(pid) if pid.parse::<u32>().ok() != Some(std::process::id()) => None,
        _ => (usec > 0).then(|| Duration::from_micros(usec)),
    }
}

/// When systemd asked for a watchdog (`WatchdogSec=`), pings it at half
/// the interval, each time only after the call core has answered.
pub fn spawn_watchdog(core: mpsc::Sender<GuardRequest>) {
    let Some(interval) = watchdog_interval() else {
        return;
    };
    let every = interval / 2;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (tx, rx) = oneshot::channel();
            if core.send(GuardRequest::Alive(tx)).await.is_err() {
                return;
            }
            match tokio::time::timeout(every, rx).await {
                Ok(Ok(())) => notify(&[NotifyState::Watchdog]),
                Ok(Err(_)) => return,
                Err(_) => warn!("the call core did not answer the watchdog in time"),
            }
        }
    });
}
