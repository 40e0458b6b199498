//! The monitor, on the main thread once the process serves: stats to the supervisor, and the
//! recycling triggers (signals, supervisor gone, restart-interval, startup-timeout,
//! inactivity-timeout, request-timeout and interrupt-timeout, deadlock-timeout), each ending
//! in a drain; with the startup-timeout watch during preloading and the GIL probe.

use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::Shared;
use crate::spec::Report;
use crate::timers::BacklogWatch;

impl Shared {
    /// A request is waiting for this process (since `at`): starts startup-timeout if no
    /// script has loaded yet.
    pub(super) fn request_waiting(&self, at: Instant) {
        if self.startup.lock().request_waiting(at) {
            tracing::info!(
                group = %self.spec.group,
                pid = std::process::id(),
                "application startup timer started: a request is waiting and no WSGI script has loaded yet (startup-timeout {:.1}s)",
                self.spec.options.startup_timeout.as_secs_f64()
            );
        }
    }

    /// A WSGI script has loaded: startup-timeout never fires in this process.
    pub(super) fn script_loaded(&self) {
        if self.startup.lock().script_loaded() {
            tracing::info!(group = %self.spec.group, pid = std::process::id(), "application startup timer cancelled: a WSGI script has loaded");
        }
    }

    /// startup-timeout while the main thread preloads (the monitor takes over once the
    /// process serves): the process accepts nothing yet, so a request for it waits on the
    /// group's socket; once one has waited there ([`BacklogWatch`]) the timer starts, and if
    /// it expires before a script has loaded, the process is replaced at once (a script that
    /// hangs at import; no request has been accepted, so none is lost).
    pub(super) fn startup_watch(self: Arc<Self>) {
        let mut backlog = BacklogWatch::default();
        loop {
            if self.serving.load(Ordering::SeqCst) || self.startup.lock().done() {
                return;
            }
            let now = Instant::now();
            if let Some(since) = backlog.observe(self.connection_waiting(), now) {
                self.request_waiting(since);
            }
            if self.startup.lock().expired(now) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::error!(
            group = %self.spec.group,
            pid = std::process::id(),
            "a request waited and preloading did not finish within startup-timeout ({:.1}s): restarting this process",
            self.spec.options.startup_timeout.as_secs_f64()
        );
        self.report
            .send(&Report::Recycling("startup-timeout".into()));
        // SAFETY: `_exit` ends the process at once without running exit handlers, so
        // nothing touches Python, which the main thread is still running (no request has
        // been accepted yet, so none is lost).
        unsafe { nix::libc::_exit(5) };
    }

    /// Whether a connection is waiting to be accepted on the group's socket.
    fn connection_waiting(&self) -> bool {
        let guard = self.listener.lock();
        let Some(listener) = guard.as_ref() else {
            return false;
        };
        let mut fds = [nix::poll::PollFd::new(
            listener.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        matches!(nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO), Ok(n) if n > 0)
    }

    pub(super) fn gil_probe(self: Arc<Self>) {
        let Ok(main) = self.runtime.interpreter("") else {
            return;
        };
        loop {
            if main.run(|_| ()).is_err() {
                return;
            }
            *self.gil_seen.lock() = Instant::now();
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// The monitor loop on the main thread; returns the exit status.
    pub(super) fn serve(self: Arc<Self>) -> i32 {
        let report = &self.report;
        let group = self.spec.group.clone();
        let born = Instant::now();
        let mut last_stats = (u64::MAX, usize::MAX);
        let drain = loop {
            std::thread::sleep(Duration::from_millis(25));
            let now = Instant::now();
            let stats = (
                self.served.load(Ordering::SeqCst),
                self.in_flight.load(Ordering::SeqCst),
            );
            if stats != last_stats {
                report.send(&Report::Stats {
                    served: stats.0,
                    in_flight: stats.1 as u64,
                });
                last_stats = stats;
            }
            match self.signal.lock().take() {
                Some(Signal::SIGUSR1) => {
                    // eviction-timeout, else graceful-timeout (zero: at once).
                    let grace = if self.spec.options.eviction_timeout.is_zero() {
                        self.spec.options.graceful_timeout
                    } else {
                        self.spec.options.eviction_timeout
                    };
                    self.request_drain("SIGUSR1 (graceful restart)", grace);
                }
                Some(Signal::SIGXCPU) => {
                    tracing::warn!(
                        %group,
                        pid = std::process::id(),
                        "cpu-time-limit ({}s of CPU) reached: restarting this process gracefully",
                        self.spec.options.cpu_time_limit
                    );
                    self.request_drain(
                        "cpu-time-limit reached (SIGXCPU)",
                        self.spec.options.graceful_timeout,
                    );
                }
                Some(_) => {
                    self.request_drain(
                        "stop requested (SIGTERM)",
                        self.spec.options.shutdown_timeout,
                    );
                }
                None => {}
            }
            if report.supervisor_gone() {
                self.request_drain("the supervisor exited", self.spec.options.shutdown_timeout);
            }
            let t = self.spec.options.restart_interval;
            if !t.is_zero() && now.duration_since(born) >= t {
                self.request_drain(
                    "restart-interval expired",
                    self.spec.options.graceful_timeout,
                );
            }
            if self.startup.lock().expired(now) {
                tracing::error!(
                    %group,
                    pid = std::process::id(),
                    "no WSGI script loaded within startup-timeout ({:.1}s) of the first request: restarting this process",
                    self.spec.options.startup_timeout.as_secs_f64()
                );
                self.request_drain("startup-timeout", self.spec.options.graceful_timeout);
            }
            if self.inactivity.lock().expired(now, stats.1) {
                tracing::info!(
                    %group,
                    pid = std::process::id(),
                    "no request for inactivity-timeout ({:.1}s): restarting this process",
                    self.spec.options.inactivity_timeout.as_secs_f64()
                );
                self.request_drain("inactivity-timeout expired", Duration::ZERO);
            }
            let t = self.spec.options.request_timeout;
            let grace = self.spec.options.interrupt_timeout;
            if !t.is_zero() && !grace.is_zero() {
                self.interrupt_overdue(now, t);
                if self.timed_out(now, t + grace) > 0 {
                    tracing::error!(
                        %group,
                        pid = std::process::id(),
                        "a request interrupted at request-timeout ({:.1}s) did not end within interrupt-timeout ({:.1}s): replacing this process",
                        t.as_secs_f64(),
                        grace.as_secs_f64()
                    );
                    self.request_drain("request-timeout", self.spec.options.shutdown_timeout);
                }
            } else if !t.is_zero() && self.timed_out(now, t) > 0 {
                tracing::error!(
                    %group,
                    pid = std::process::id(),
                    "a request has run longer than request-timeout ({:.1}s): the front answered 504; replacing this process",
                    t.as_secs_f64()
                );
                self.request_drain("request-timeout", self.spec.options.shutdown_timeout);
            }
            let t = self.spec.options.deadlock_timeout;
            if !t.is_zero() && now.duration_since(*self.gil_seen.lock()) >= t {
                tracing::error!(%group, pid = std::process::id(), "the Python GIL could not be acquired for deadlock-timeout ({:.0}s): exiting", t.as_secs_f64());
                report.send(&Report::Recycling("deadlock-timeout".into()));
                return 4;
            }
            if let Some(d) = self.recycle.lock().clone() {
                break d;
            }
        };
        self.drain(&drain)
    }

    /// Raises `RequestTimeout` once in every request that has run longer than `limit`
    /// (interrupt-timeout, as mod_wsgi 6): the app unwinds, the front has answered 504, and
    /// the process lives on.
    fn interrupt_overdue(&self, now: Instant, limit: Duration) {
        for slot in &self.running {
            let target = {
                let mut r = slot.lock();
                match r.as_mut() {
                    Some(run)
                        if run.interrupted.is_none()
                            && now.duration_since(run.started) >= limit =>
                    {
                        run.interrupted = Some(now);
                        Some((run.thread, run.group.clone()))
                    }
                    _ => None,
                }
            };
            let Some((thread, app_group)) = target else {
                continue;
            };
            let raised = self
                .runtime
                .interpreter(&app_group)
                .and_then(|interp| interp.run(|py| py.interrupt_thread(thread)));
            tracing::warn!(
                group = %self.spec.group,
                application_group = %app_group,
                pid = std::process::id(),
                raised = ?raised,
                "a request has run longer than request-timeout ({:.1}s): RequestTimeout raised in it; the process is replaced only if it does not end within interrupt-timeout ({:.1}s)",
                limit.as_secs_f64(),
                self.spec.options.interrupt_timeout.as_secs_f64()
            );
        }
    }

    pub(super) fn timed_out(&self, now: Instant, limit: Duration) -> usize {
        self.running
            .iter()
            .filter(|r| {
                r.lock()
                    .as_ref()
                    .is_some_and(|s| now.duration_since(s.started) >= limit)
            })
            .count()
    }
}
