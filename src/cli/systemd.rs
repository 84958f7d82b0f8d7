//! systemd's service notifications (`sd_notify(3)`), for `Type=notify` units: `READY=1` once
//! every listener is bound, `RELOADING=1` (with `MONOTONIC_USEC`, as `Type=notify-reload`
//! wants) then `READY=1` around a SIGHUP reload, `STOPPING=1` when the drain begins, and
//! `WATCHDOG=1` at half the unit's `WatchdogSec=` while the serving thread runs. Outside
//! systemd (`NOTIFY_SOCKET` unset) every call does nothing; a failed send is logged, never
//! fatal: the notifications describe the service, they are not the service.
//!
//! The datagrams are sent by the `sd-notify` crate.

use std::time::Duration;

use sd_notify::NotifyState;
use tracing::debug;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        debug!(error = %e, "systemd notification not sent");
    }
}

/// Every listener is bound: the service answers.
pub(crate) fn ready() {
    send(&[NotifyState::Ready, NotifyState::Status("serving")]);
}

/// A reload begins; [`reloaded`] ends it.
pub(crate) fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// A reload ended (applied or refused: the service answers either way).
pub(crate) fn reloaded(outcome: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(outcome)]);
}

/// The drain began.
pub(crate) fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("draining")]);
}

/// Pings systemd's watchdog at half its period, from the serving thread's runtime: if that
/// thread stops turning (a defect that blocks it), the pings stop and systemd restarts the
/// service. Resolves at once when no watchdog is configured.
pub(crate) async fn watchdog() {
    let Some(period) = sd_notify::watchdog_enabled() else {
        return;
    };
    let mut every = tokio::time::interval((period / 2).max(Duration::from_millis(10)));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        send(&[NotifyState::Watchdog]);
    }
}
