//! The idle-process timers of a daemon process, started where mod_wsgi starts them (its
//! `wsgi_execute.c`, `wsgi_adapter.c` and monitor thread in `wsgi_daemon.c`), so a process
//! that never receives a request keeps running:
//!
//! * **startup-timeout** ([`StartupTimer`]) is the time a process gets to load a WSGI script
//!   once a request is waiting for it. It starts at the first request (or, while the process
//!   is still preloading, when a connection has waited on the group's socket for a moment:
//!   [`BacklogWatch`]) and stops for good once a script has loaded. An idle process never
//!   starts it.
//! * **inactivity-timeout** ([`InactivityTimer`]) restarts a process that has had activity
//!   (a request started or ended) and then none for that long, never while a request runs. A
//!   process that has never served stays.
//!
//! Both are plain state driven by the `Instant`s their callers pass, so they are tested
//! without clocks or processes.

use std::time::{Duration, Instant};

/// startup-timeout's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Startup {
    /// Armed: no request has waited for this process yet.
    Armed,
    /// A request came at some point; the process is restarted at `deadline` unless a script
    /// loads first.
    Running { deadline: Instant },
    /// A script has loaded (or the timeout is 0): it never fires.
    Done,
}

/// `startup-timeout=`: restart a process that was given a request and has not loaded a WSGI
/// script within the timeout (mod_wsgi's `wsgi_startup_shutdown_time`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct StartupTimer {
    timeout: Duration,
    state: Startup,
}

impl StartupTimer {
    /// A timer for `timeout` (zero: off).
    pub(crate) fn new(timeout: Duration) -> Self {
        StartupTimer {
            timeout,
            state: if timeout.is_zero() {
                Startup::Done
            } else {
                Startup::Armed
            },
        }
    }

    /// A request is waiting for this process (it arrived at `at`): starts the timer if it
    /// is armed. True if this call started it.
    pub(crate) fn request_waiting(&mut self, at: Instant) -> bool {
        if self.state == Startup::Armed {
            self.state = Startup::Running {
                deadline: at + self.timeout,
            };
            true
        } else {
            false
        }
    }

    /// A WSGI script has loaded: the timer never fires again. True if it was running.
    pub(crate) fn script_loaded(&mut self) -> bool {
        let was_running = matches!(self.state, Startup::Running { .. });
        self.state = Startup::Done;
        was_running
    }

    /// Whether a script has loaded (or the timer is off): nothing more to watch.
    pub(crate) fn done(&self) -> bool {
        self.state == Startup::Done
    }

    /// Whether the process must be restarted at `now`.
    pub(crate) fn expired(&self, now: Instant) -> bool {
        matches!(self.state, Startup::Running { deadline } if now >= deadline)
    }
}

/// `inactivity-timeout=`: restart a process that has been idle this long since its last
/// activity (mod_wsgi's `wsgi_idle_shutdown_time`, which only activity sets).
#[derive(Debug, Clone, Copy)]
pub(crate) struct InactivityTimer {
    timeout: Duration,
    last: Option<Instant>,
}

impl InactivityTimer {
    /// A timer for `timeout` (zero: off).
    pub(crate) fn new(timeout: Duration) -> Self {
        InactivityTimer {
            timeout,
            last: None,
        }
    }

    /// Activity at `now`: a request started or finished.
    pub(crate) fn activity(&mut self, now: Instant) {
        self.last = Some(now);
    }

    /// Whether the process must be restarted at `now`, with `in_flight` requests running:
    /// only after some activity, none for the timeout, and nothing running.
    pub(crate) fn expired(&self, now: Instant, in_flight: usize) -> bool {
        !self.timeout.is_zero()
            && in_flight == 0
            && self
                .last
                .is_some_and(|last| now.saturating_duration_since(last) >= self.timeout)
    }
}

/// While a process is still preloading it accepts nothing, so a request for it waits in the
/// group socket's backlog. A connection seen waiting there for [`BacklogWatch::PATIENCE`]
/// (not one a ready sibling process takes at once) counts as a request waiting for this
/// process.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BacklogWatch {
    since: Option<Instant>,
}

impl BacklogWatch {
    /// How long a connection must wait in the backlog before it counts.
    pub(crate) const PATIENCE: Duration = Duration::from_millis(100);

    /// Records one look at the backlog at `now` (`pending`: a connection is waiting). Returns
    /// since when a request has been waiting, once it has waited [`Self::PATIENCE`].
    pub(crate) fn observe(&mut self, pending: bool, now: Instant) -> Option<Instant> {
        if !pending {
            self.since = None;
            return None;
        }
        let since = *self.since.get_or_insert(now);
        (now.saturating_duration_since(since) >= Self::PATIENCE).then_some(since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(2);

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn startup_timer_never_fires_for_an_idle_process() {
        let born = Instant::now();
        let timer = StartupTimer::new(T);
        for s in [0.0, 2.0, 15.0, 3600.0] {
            assert!(!timer.expired(born + secs(s)), "at {s}s");
        }
        assert!(!timer.done());
    }

    #[test]
    fn startup_timer_runs_from_the_first_request_until_a_script_loads() {
        let born = Instant::now();
        let mut timer = StartupTimer::new(T);
        let first = born + secs(60.0);
        assert!(timer.request_waiting(first));
        // A later request does not move the deadline.
        assert!(!timer.request_waiting(first + secs(1.5)));
        assert!(!timer.expired(first + secs(1.9)));
        assert!(timer.expired(first + T));
        assert!(timer.expired(first + secs(10.0)));
    }

    #[test]
    fn a_loaded_script_stops_the_startup_timer_for_good() {
        let born = Instant::now();
        let mut timer = StartupTimer::new(T);
        timer.request_waiting(born);
        assert!(timer.script_loaded());
        assert!(timer.done());
        assert!(!timer.expired(born + secs(100.0)));
        // Requests after the load start nothing.
        assert!(!timer.request_waiting(born + secs(200.0)));
        assert!(!timer.expired(born + secs(300.0)));
        // Loaded before any request (a preload): never started, never fires.
        let mut preloaded = StartupTimer::new(T);
        assert!(!preloaded.script_loaded());
        assert!(!preloaded.request_waiting(born));
        assert!(!preloaded.expired(born + secs(100.0)));
    }

    #[test]
    fn startup_timeout_zero_is_off() {
        let now = Instant::now();
        let mut timer = StartupTimer::new(Duration::ZERO);
        assert!(timer.done());
        assert!(!timer.request_waiting(now));
        assert!(!timer.expired(now + secs(1e6)));
    }

    #[test]
    fn inactivity_timer_keeps_a_process_that_never_served() {
        let born = Instant::now();
        let timer = InactivityTimer::new(T);
        for s in [0.0, 2.0, 15.0, 3600.0] {
            assert!(!timer.expired(born + secs(s), 0), "at {s}s");
        }
    }

    #[test]
    fn inactivity_timer_counts_from_the_last_activity_and_waits_for_running_requests() {
        let born = Instant::now();
        let mut timer = InactivityTimer::new(T);
        let start = born + secs(30.0);
        timer.activity(start);
        // Running longer than the timeout is not idleness.
        assert!(!timer.expired(start + secs(5.0), 1));
        let end = start + secs(5.0);
        timer.activity(end);
        assert!(!timer.expired(end + secs(1.9), 0));
        assert!(timer.expired(end + T, 0));
        // ...unless a request runs.
        assert!(!timer.expired(end + secs(10.0), 1));
        // New activity starts the count again.
        timer.activity(end + secs(3.0));
        assert!(!timer.expired(end + secs(4.0), 0));
        assert!(timer.expired(end + secs(5.0), 0));
    }

    #[test]
    fn inactivity_timeout_zero_is_off() {
        let now = Instant::now();
        let mut timer = InactivityTimer::new(Duration::ZERO);
        timer.activity(now);
        assert!(!timer.expired(now + secs(1e6), 0));
    }

    #[test]
    fn a_connection_counts_once_it_has_waited_in_the_backlog() {
        let t0 = Instant::now();
        let mut watch = BacklogWatch::default();
        assert_eq!(watch.observe(false, t0), None);
        assert_eq!(watch.observe(true, t0), None);
        assert_eq!(watch.observe(true, t0 + secs(0.05)), None);
        assert_eq!(watch.observe(true, t0 + secs(0.1)), Some(t0));
        // Still waiting: still since t0.
        assert_eq!(watch.observe(true, t0 + secs(0.5)), Some(t0));
        // Taken (by a sibling) before it counted: the count starts again.
        let t1 = t0 + secs(1.0);
        assert_eq!(watch.observe(false, t1), None);
        assert_eq!(watch.observe(true, t1 + secs(0.02)), None);
        assert_eq!(watch.observe(false, t1 + secs(0.04)), None);
        assert_eq!(watch.observe(true, t1 + secs(0.06)), None);
        assert_eq!(watch.observe(true, t1 + secs(0.14)), None);
        assert_eq!(watch.observe(true, t1 + secs(0.16)), Some(t1 + secs(0.06)));
    }
}
