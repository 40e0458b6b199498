//! The process's request counters, read by `mod_wsgi.process_metrics()` and
//! `mod_wsgi.request_metrics()`: requests served, their summed duration (mod_wsgi's
//! `request_busy_time`), those in flight, and the requests of each thread that served one
//! (numbered 1, 2, ... in the order they first did, as mod_wsgi numbers its request threads).
//!
//! One CPython per process, so the counters are process-wide, over every interpreter. A call
//! costs one thread-local look-up, two clock reads and five relaxed atomic additions.

use std::cell::OnceCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

static REQUESTS: AtomicU64 = AtomicU64::new(0);
static BUSY_NS: AtomicU64 = AtomicU64::new(0);
static ACTIVE: AtomicU64 = AtomicU64::new(0);
/// Each request thread's count, at index `thread_id - 1` (a counter lives as long as the
/// process: one per thread that ever served a request).
static THREADS: Mutex<Vec<&'static AtomicU64>> = Mutex::new(Vec::new());
/// When the runtime started (mod_wsgi's `restart_time`), in seconds since the epoch.
static STARTED: OnceLock<f64> = OnceLock::new();

thread_local! {
    static SLOT: OnceCell<(u32, &'static AtomicU64)> = const { OnceCell::new() };
}

/// Records the runtime's start time (the first call wins: one runtime per process).
pub(crate) fn mark_started() {
    STARTED.get_or_init(now_secs);
}

/// Seconds since the epoch, now.
pub(crate) fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The calling thread's request-thread number and counter, given on its first request.
fn slot() -> Option<(u32, &'static AtomicU64)> {
    SLOT.try_with(|s| {
        *s.get_or_init(|| {
            let mut threads = THREADS.lock().unwrap_or_else(|p| p.into_inner());
            let counter: &'static AtomicU64 = Box::leak(Box::new(AtomicU64::new(0)));
            threads.push(counter);
            (threads.len() as u32, counter)
        })
    })
    .ok()
}

/// The calling thread's request-thread number (`thread_id` of mod_wsgi's events and
/// `process_metrics()['threads']`), 0 when it cannot have one (thread ending).
pub(crate) fn thread_id() -> u32 {
    SLOT.try_with(|s| s.get().map_or(0, |(id, _)| *id))
        .unwrap_or(0)
}

/// One request in flight: counted as active until dropped, then as served.
pub(crate) struct InFlight {
    started: Instant,
    thread: Option<&'static AtomicU64>,
}

/// Counts a request as started on the calling thread.
pub(crate) fn begin() -> InFlight {
    ACTIVE.fetch_add(1, Ordering::Relaxed);
    InFlight {
        started: Instant::now(),
        thread: slot().map(|(_, counter)| counter),
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let ns = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        BUSY_NS.fetch_add(ns, Ordering::Relaxed);
        REQUESTS.fetch_add(1, Ordering::Relaxed);
        ACTIVE.fetch_sub(1, Ordering::Relaxed);
        if let Some(t) = self.thread {
            t.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The counters at one moment.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Snapshot {
    /// Requests finished.
    pub requests: u64,
    /// Their summed durations, in seconds.
    pub busy_seconds: f64,
    /// Requests in flight.
    pub active: u64,
    /// `(thread_id, requests)` of every thread that served a request.
    pub threads: Vec<(u32, u64)>,
    /// When the runtime started, in seconds since the epoch.
    pub started: f64,
    /// Peak resident memory of the process, in bytes (`VmHWM`, as `ru_maxrss`).
    pub max_rss: u64,
    /// Resident memory now, in bytes (`VmRSS`).
    pub rss: u64,
}

/// Reads the counters and the process's memory (`/proc/self/status`; 0 where unreadable).
pub(crate) fn snapshot() -> Snapshot {
    let threads = THREADS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .enumerate()
        .map(|(i, c)| (i as u32 + 1, c.load(Ordering::Relaxed)))
        .collect();
    let (max_rss, rss) = memory();
    Snapshot {
        requests: REQUESTS.load(Ordering::Relaxed),
        busy_seconds: BUSY_NS.load(Ordering::Relaxed) as f64 / 1e9,
        active: ACTIVE.load(Ordering::Relaxed),
        threads,
        started: STARTED.get().copied().unwrap_or_else(now_secs),
        max_rss,
        rss,
    }
}

/// `(VmHWM, VmRSS)` of this process in bytes.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_per_thread() {
        let before = snapshot();
        {
            let _a = begin();
            assert_eq!(snapshot().active, before.active + 1);
        }
        let id = thread_id();
        assert!(id >= 1);
        let other = std::thread::spawn(|| {
            drop(begin());
            thread_id()
        })
        .join()
        .unwrap();
        assert_ne!(other, id);
        let after = snapshot();
        assert_eq!(after.requests, before.requests + 2);
        assert_eq!(after.active, before.active);
        assert!(after.busy_seconds >= before.busy_seconds);
        let count = |s: &Snapshot, t: u32| {
            s.threads
                .iter()
                .find(|(i, _)| *i == t)
                .map_or(0, |(_, n)| *n)
        };
        assert_eq!(count(&after, id), count(&before, id) + 1);
        assert_eq!(count(&after, other), 1);
        assert!(after.rss > 0 && after.max_rss >= after.rss, "{after:?}");
    }
}
