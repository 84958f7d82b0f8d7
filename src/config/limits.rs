//! [`Limits`]: the bounds of each listener (the `[limits]` section), and fitting the
//! connection cap to the process's descriptor limit. Enforced by `listener`; see its docs for
//! what a client sees at each bound.

use std::time::Duration;

/// Default for [`Limits::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default for [`Limits::max_concurrent_streams`]. RFC 9113 recommends no fewer than 100;
/// nginx uses 128.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 128;
/// Default for [`Limits::first_request_timeout`]: well within a probe's patience (the
/// kubelet's default period is 10 s), so connections that never speak cannot keep slots.
pub const DEFAULT_FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Default for [`Limits::idle_timeout`]: longer than any health checker's interval, so their
/// connections are reused rather than churned.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Descriptors kept free for everything that is not a client connection (probes' sockets are
/// counted separately, see [`Limits::fit_fd_limit`]): log files, the resolver, OTLP, stdio.
pub const FD_RESERVE: u64 = 64;

/// The bounds of one listener; see `listener` for what a client sees at each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open connections at most; the newest beyond it is closed at once.
    pub max_connections: usize,
    /// Concurrent streams per HTTP/2 connection, advertised in SETTINGS.
    pub max_concurrent_streams: u32,
    /// A new connection must start its first request within this.
    pub first_request_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            first_request_timeout: DEFAULT_FIRST_REQUEST_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

impl Limits {
    /// These limits with `max_connections` lowered, if needed, so that `listeners` listeners
    /// at their cap, `dependencies` probes (two descriptors each: a kept connection and one
    /// being opened) and [`FD_RESERVE`] fit under `fd_limit` (the process's soft
    /// `RLIMIT_NOFILE`). Returns the limits and whether the cap was lowered. At least 8
    /// connections per listener are kept, whatever the limit.
    pub fn fit_fd_limit(
        self,
        fd_limit: Option<u64>,
        listeners: usize,
        dependencies: usize,
    ) -> (Limits, bool) {
        let Some(fd_limit) = fd_limit else {
            return (self, false);
        };
        let used = FD_RESERVE.saturating_add(2u64.saturating_mul(dependencies as u64));
        let budget = fd_limit.saturating_sub(used) / listeners.max(1) as u64;
        let budget = usize::try_from(budget).unwrap_or(usize::MAX).max(8);
        if budget < self.max_connections {
            let limits = Limits {
                max_connections: budget,
                ..self
            };
            (limits, true)
        } else {
            (self, false)
        }
    }
}

/// The soft limit on open file descriptors (`RLIMIT_NOFILE`), read from `/proc/self/limits`;
/// `None` where that cannot be read or says "unlimited".
pub fn fd_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
