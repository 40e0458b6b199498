//! Draining: a process that recycles or stops takes no new request, tells the supervisor
//! (which starts its replacement at once), gives the running requests their grace, and exits.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Shared;
use crate::spec::Report;

/// Why a process is draining.
#[derive(Debug, Clone)]
pub(super) struct Drain {
    reason: String,
    /// How long running requests get.
    grace: Duration,
}

impl Shared {
    /// Stops taking requests at once (idle connections are closed, new requests on busy
    /// ones rejected), tells the supervisor to start the replacement, and leaves the rest
    /// of the drain to the monitor.
    pub(super) fn request_drain(&self, reason: &str, grace: Duration) {
        let mut r = self.recycle.lock();
        if r.is_some() {
            return;
        }
        *r = Some(Drain {
            reason: reason.to_string(),
            grace,
        });
        drop(r);
        self.draining.store(true, Ordering::SeqCst);
        if let Some(listener) = self.listener.lock().take() {
            let _ = self.epoll.delete(&listener);
        }
        self.report.send(&Report::Recycling(reason.to_string()));
        // Idle front connections are closed; a front retries elsewhere a request it had sent
        // on one (unread, it resets the front's end: see the protocol's doc).
        self.idle.lock().clear();
    }

    pub(super) fn drain(&self, drain: &Drain) -> i32 {
        let group = &self.spec.group;
        let report = &self.report;
        tracing::info!(%group, pid = std::process::id(), reason = %drain.reason, "daemon process stopping");
        // mod_wsgi's `process_stopping` callbacks run now, before the wait for requests.
        self.runtime
            .process_stopping(shutdown_reason(&drain.reason));
        let deadline = Instant::now() + drain.grace;
        let limit = self.spec.options.request_timeout;
        let stuck = |now: Instant| {
            if limit.is_zero() {
                0
            } else {
                self.timed_out(now, limit)
            }
        };
        loop {
            let now = Instant::now();
            let running = self.in_flight.load(Ordering::SeqCst);
            if running <= stuck(now) || now >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let left = self.in_flight.load(Ordering::SeqCst);
        report.send(&Report::Stats {
            served: self.served.load(Ordering::SeqCst),
            in_flight: left as u64,
        });
        if left > 0 {
            tracing::warn!(%group, pid = std::process::id(), "exiting with {left} request(s) still running");
            // Python is not finalised under a running call: exit now.
            return 0;
        }
        let r = self
            .runtime
            .shutdown(Duration::from_millis(200), Duration::from_millis(300));
        tracing::info!(%group, pid = std::process::id(), elapsed = ?r.elapsed, "daemon process stopped");
        0
    }
}

/// mod_wsgi's `shutdown_reason` code for a drain reason of [`Shared::request_drain`].
fn shutdown_reason(reason: &str) -> &str {
    const CODES: [(&str, &str); 11] = [
        ("maximum-requests", "maximum_requests"),
        ("restart-interval", "restart_interval"),
        ("inactivity-timeout", "inactivity_timeout"),
        ("request-timeout", "request_timeout"),
        ("startup-timeout", "startup_timeout"),
        ("deadlock-timeout", "deadlock_timeout"),
        ("cpu-time-limit", "cpu_time_limit"),
        ("script changed", "script_reload"),
        ("SIGUSR1", "graceful_signal"),
        ("stop requested", "shutdown_signal"),
        ("the supervisor exited", "shutdown_signal"),
    ];
    CODES
        .iter()
        .find(|(prefix, _)| reason.starts_with(prefix))
        .map_or(reason, |(_, code)| code)
}
