//! The front process's request metrics for `--status-addr`'s `/metrics` (OpenMetrics text,
//! through the prometheus-client crate): requests by process group, application group and
//! status class, their duration (head read to the body's last byte), requests in flight,
//! and the embedded workers' busy threads and queue; with the daemon groups' counters from
//! the master's snapshot. Kept only when the status endpoint is on.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Where a request went, as metric labels: its process group (`embedded` or the daemon
/// group's name) and application group (`%{GLOBAL}` for the main interpreter); both empty
/// for what no application answered (static files, redirects, refusals).
#[derive(Debug, Clone, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabels {
    /// `embedded`, a daemon group's name, or empty.
    pub process_group: String,
    /// The application group, or empty.
    pub application_group: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    process_group: String,
    application_group: String,
    /// `2xx`, `4xx`...
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabel {
    group: String,
}

type Durations = Family<AppLabels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // Prometheus's default buckets, in seconds.
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

/// The front's counters, shared by every connection.
#[derive(Debug)]
pub struct FrontMetrics {
    requests: Family<RequestLabels, Counter>,
    durations: Durations,
    in_flight: Gauge<i64, std::sync::atomic::AtomicI64>,
}

impl Default for FrontMetrics {
    fn default() -> Self {
        FrontMetrics {
            requests: Family::default(),
            durations: Family::new_with_constructor(duration_histogram),
            in_flight: Gauge::default(),
        }
    }
}

/// One request being counted: in flight from [`FrontMetrics::begin`], counted as answered
/// (with its labels and status) when dropped.
#[derive(Debug)]
pub struct RequestMetric {
    metrics: Arc<FrontMetrics>,
    start: Instant,
    /// Where it went (set once routed).
    pub labels: AppLabels,
    /// Its status (set once answered).
    pub status: u16,
}

impl FrontMetrics {
    /// A request that began at `start`: in flight from now.
    pub fn begin(self: &Arc<Self>, start: Instant) -> RequestMetric {
        self.in_flight.inc();
        RequestMetric {
            metrics: self.clone(),
            start,
            labels: AppLabels::default(),
            status: 0,
        }
    }

    /// The metrics text for `/metrics`: these counters, `pool` (busy workers and queued
    /// requests of the embedded Python, when it runs here) and the daemon groups of the
    /// master's JSON snapshot (`daemons`, the `/status.json` array).
    pub fn render(&self, pool: Option<(usize, usize)>, daemons: &serde_json::Value) -> String {
        let mut registry = Registry::default();
        registry.register(
            "wsgi_requests",
            "Requests answered, by process group, application group and status class",
            self.requests.clone(),
        );
        registry.register(
            "wsgi_request_duration_seconds",
            "Time from a request's head to its response's last byte",
            self.durations.clone(),
        );
        registry.register(
            "wsgi_requests_in_flight",
            "Requests being answered now",
            self.in_flight.clone(),
        );
        if let Some((busy, queued)) = pool {
            let gauge = |value: usize| {
                let g: Gauge = Gauge::default();
                g.set(i64::try_from(value).unwrap_or(i64::MAX));
                g
            };
            registry.register(
                "wsgi_embedded_busy_threads",
                "Embedded worker threads running a request",
                gauge(busy),
            );
            registry.register(
                "wsgi_embedded_queued_requests",
                "Requests waiting for an embedded worker thread",
                gauge(queued),
            );
        }
        register_daemons(&mut registry, daemons);
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

/// A number read from one group of the snapshot.
type GroupValue = fn(&serde_json::Value) -> u64;

/// The daemon groups' counters (`wsgi_daemon_*`, one sample per group) from the snapshot.
fn register_daemons(registry: &mut Registry, daemons: &serde_json::Value) {
    let groups = daemons.as_array().map(Vec::as_slice).unwrap_or_default();
    if groups.is_empty() {
        return;
    }
    let number = |g: &serde_json::Value, key: &str| g[key].as_u64().unwrap_or(0);
    let label = |g: &serde_json::Value| GroupLabel {
        group: g["name"].as_str().unwrap_or("").to_string(),
    };
    let gauges: [(&str, &str, GroupValue); 2] = [
        (
            "wsgi_daemon_processes",
            "Daemon processes running (retiring ones included)",
            |g| g["processes"].as_array().map_or(0, |p| p.len() as u64),
        ),
        (
            "wsgi_daemon_requests_in_flight",
            "Requests running now in the group's processes",
            |g| g["in_flight"].as_u64().unwrap_or(0),
        ),
    ];
    for (name, help, value) in gauges {
        let family = Family::<GroupLabel, Gauge<u64, AtomicU64>>::default();
        for g in groups {
            family.get_or_create(&label(g)).set(value(g));
        }
        registry.register(name, help, family);
    }
    let counters = [
        (
            "wsgi_daemon_requests",
            "Requests served by the group's processes",
            "requests_served",
        ),
        (
            "wsgi_daemon_restarts",
            "Processes restarted after a crash",
            "restarts",
        ),
        (
            "wsgi_daemon_recycles",
            "Processes replaced gracefully",
            "recycles",
        ),
    ];
    for (name, help, key) in counters {
        let family = Family::<GroupLabel, Counter>::default();
        for g in groups {
            family.get_or_create(&label(g)).inc_by(number(g, key));
        }
        registry.register(name, help, family);
    }
}

impl Drop for RequestMetric {
    fn drop(&mut self) {
        let m = &self.metrics;
        m.in_flight.dec();
        let class = match self.status {
            100..=599 => format!("{}xx", self.status / 100),
            _ => "other".to_string(),
        };
        m.requests
            .get_or_create(&RequestLabels {
                process_group: self.labels.process_group.clone(),
                application_group: self.labels.application_group.clone(),
                status: class,
            })
            .inc();
        m.durations
            .get_or_create(&self.labels)
            .observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_by_group_and_class_with_the_daemon_groups() {
        let metrics = Arc::new(FrontMetrics::default());
        let mut done = metrics.begin(Instant::now());
        done.labels = AppLabels {
            process_group: "embedded".into(),
            application_group: "%{GLOBAL}".into(),
        };
        done.status = 200;
        let running = metrics.begin(Instant::now());
        drop(done);
        let daemons = serde_json::json!([{
            "name": "site", "processes": [{}, {}], "requests_served": 9,
            "in_flight": 1, "restarts": 0, "recycles": 2
        }]);
        let text = metrics.render(Some((1, 3)), &daemons);
        for line in [
            "wsgi_requests_total{process_group=\"embedded\",application_group=\"%{GLOBAL}\",status=\"2xx\"} 1\n",
            "wsgi_requests_in_flight 1\n",
            "wsgi_request_duration_seconds_count{process_group=\"embedded\",application_group=\"%{GLOBAL}\"} 1\n",
            "wsgi_embedded_busy_threads 1\n",
            "wsgi_embedded_queued_requests 3\n",
            "wsgi_daemon_processes{group=\"site\"} 2\n",
            "wsgi_daemon_requests_total{group=\"site\"} 9\n",
            "wsgi_daemon_recycles_total{group=\"site\"} 2\n",
            "# EOF\n",
        ] {
            assert!(text.contains(line), "{line:?} in\n{text}");
        }
        drop(running);
    }
}
