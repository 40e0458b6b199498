//! What the supervisor tells about its groups: a status snapshot per group and process
//! ([`super::Core::status`] makes it), and its rendering in the Prometheus text format.

use std::path::PathBuf;

use serde::Serialize;

/// One process in a status snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessStatus {
    /// Process id.
    pub pid: u32,
    /// Slot in the group.
    pub slot: u32,
    /// `starting`, `ready` or `retiring`.
    pub state: &'static str,
    /// Requests it has served.
    pub served: u64,
    /// Requests it is running.
    pub in_flight: u64,
    /// Seconds since it started.
    pub uptime_secs: f64,
}

/// A group in a status snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct GroupStatus {
    /// The group's name.
    pub name: String,
    /// Its socket.
    pub socket: PathBuf,
    /// Its processes (retiring ones included).
    pub processes: Vec<ProcessStatus>,
    /// Requests served by all its processes, past and present.
    pub requests_served: u64,
    /// Requests running now.
    pub in_flight: u64,
    /// Restarts after a crash.
    pub restarts: u64,
    /// Graceful replacements (maximum-requests, script change, timeouts...).
    pub recycles: u64,
    /// Why its last process that failed to start did (a script that failed to load...).
    pub failure: Option<String>,
}

/// Renders a snapshot in the Prometheus text format.
pub fn prometheus_text(groups: &[GroupStatus]) -> String {
    let mut out = String::new();
    type Metric = (
        &'static str,
        &'static str,
        &'static str,
        fn(&GroupStatus) -> u64,
    );
    let metrics: [Metric; 5] = [
        (
            "wsgi_daemon_processes",
            "gauge",
            "Daemon processes running (retiring ones included).",
            |g| g.processes.len() as u64,
        ),
        (
            "wsgi_daemon_requests_total",
            "counter",
            "Requests served by the group's processes.",
            |g| g.requests_served,
        ),
        (
            "wsgi_daemon_requests_in_flight",
            "gauge",
            "Requests running now.",
            |g| g.in_flight,
        ),
        (
            "wsgi_daemon_restarts_total",
            "counter",
            "Processes restarted after a crash.",
            |g| g.restarts,
        ),
        (
            "wsgi_daemon_recycles_total",
            "counter",
            "Processes replaced gracefully.",
            |g| g.recycles,
        ),
    ];
    for (name, kind, help, value) in metrics {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for g in groups {
            let label = g.name.replace('\\', "\\\\").replace('"', "\\\"");
            out.push_str(&format!("{name}{{group=\"{label}\"}} {}\n", value(g)));
        }
    }
    out
}
