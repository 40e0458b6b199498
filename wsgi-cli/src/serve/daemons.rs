//! Daemon mode for `wsgi serve`: the configuration's `WSGIDaemonProcess` groups run by a
//! [`wsgi_daemon::Supervisor`] (daemon processes exec'd as `wsgi daemon-process`), each group
//! with a front [`WorkerPool`] of its own whose threads block in `DaemonClient::dispatch`.
//!
//! * Start: [`DaemonSet::start`] creates the sockets, starts the processes and the pools;
//!   [`DaemonSet::wait_ready`] waits (bounded) for every process to report ready, so the
//!   banner shows the pids that will answer.
//! * Pool size per group: `processes × threads`, one front thread per daemon worker thread;
//!   requests beyond that queue in the pool for `queue-timeout` (the group's, else
//!   `--queue-timeout`), then get 503.
//! * Stop ([`DaemonSet::stop`]): the pools finish what they run (bounded), then the
//!   supervisor stops every process (SIGTERM, SIGKILL after shutdown-timeout + 1 s) and
//!   removes the sockets and their folders.
//! * SIGHUP: the whole set is replaced (fresh processes load the apps anew, as Apache's
//!   graceful restart does); the old set is stopped once the requests it runs are done (see
//!   `mod.rs`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use wsgi_daemon::{GroupStatus, Supervisor, SupervisorOptions};

use super::error::ServeError;
use super::pool::{AppHost, DaemonHost, WorkerPool};
use super::site::{Site, SiteSource};

/// What the banner says about one group.
#[derive(Debug, Clone)]
pub struct GroupInfo {
    /// The group's name.
    pub name: String,
    /// `processes=`.
    pub processes: u32,
    /// `threads=`.
    pub threads: u32,
    /// The venv its processes start with.
    pub python_home: Option<PathBuf>,
    /// `user=` (or the server's `User`): who the daemons become when the server runs as root
    /// (ignored otherwise, as in mod_wsgi).
    pub user: Option<String>,
}

/// The running daemon process groups of a site, and the front pools that feed them.
pub struct DaemonSet {
    supervisor: Mutex<Option<Supervisor>>,
    /// Held for the whole of [`DaemonSet::stop`], so a second caller returns only once the
    /// processes are gone.
    stopping: Mutex<()>,
    pools: HashMap<String, WorkerPool>,
    groups: Vec<GroupInfo>,
}

impl DaemonSet {
    /// Starts every `WSGIDaemonProcess` group of `site` (None when it has none).
    /// `queue_size` and `queue_timeout` are the front pools' (`--queue-size`,
    /// `--queue-timeout`); a group's own `queue-timeout=` wins over the latter.
    pub fn start(
        site: &Site,
        queue_size: usize,
        queue_timeout: Duration,
    ) -> Result<Option<DaemonSet>, ServeError> {
        let config = &site.config;
        if config.daemons.is_empty() {
            return Ok(None);
        }
        let hint = match site.source {
            SiteSource::CommandLine(_) => {
                "; with `wsgi serve --processes`, name the user with --user (for example --user nobody)"
            }
            SiteSource::ConfigFile { .. } => "",
        };
        let program = std::env::current_exe().map_err(|e| ServeError::Daemons {
            source: wsgi_daemon::SupervisorError::Thread(e),
            hint: " (cannot find the wsgi program to exec for the daemon processes)",
        })?;
        let options = SupervisorOptions::new(program, &["daemon-process"]);
        let supervisor = Supervisor::start(config, &options)
            .map_err(|source| ServeError::Daemons { source, hint })?;
        let client = Arc::new(supervisor.client());
        let mut pools = HashMap::new();
        let mut groups = Vec::new();
        for d in &config.daemons {
            let o = &d.options;
            let host: Arc<dyn AppHost> = Arc::new(DaemonHost {
                client: client.clone(),
                group: d.name.clone(),
            });
            let threads = (o.processes.max(1) as usize).saturating_mul(o.threads.max(1) as usize);
            let wait = if o.queue_timeout.is_zero() {
                queue_timeout
            } else {
                o.queue_timeout
            };
            let pool =
                WorkerPool::start(host, threads, queue_size, wait).map_err(ServeError::Threads)?;
            pools.insert(d.name.clone(), pool);
            groups.push(GroupInfo {
                name: d.name.clone(),
                processes: o.processes,
                threads: o.threads,
                python_home: d.python_home(&config.python).cloned(),
                user: o.user.clone().or(config.user.clone()),
            });
        }
        Ok(Some(DaemonSet {
            supervisor: Mutex::new(Some(supervisor)),
            stopping: Mutex::new(()),
            pools,
            groups,
        }))
    }

    /// The front pool of group `name`.
    pub fn pool(&self, name: &str) -> Option<&WorkerPool> {
        self.pools.get(name)
    }

    /// A status snapshot of every group (empty once stopped).
    pub fn status(&self) -> Vec<GroupStatus> {
        self.supervisor
            .lock()
            .as_ref()
            .map(Supervisor::status)
            .unwrap_or_default()
    }

    /// Waits until every group runs its `processes` and all report ready, at most `limit`.
    /// Returns whether they did.
    pub fn wait_ready(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let status = self.status();
            let ready = self.groups.iter().all(|g| {
                status.iter().any(|s| {
                    s.name == g.name
                        && s.processes.len() == g.processes as usize
                        && s.processes.iter().all(|p| p.state == "ready")
                })
            });
            if ready {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The banner's lines: one per group with its shape, Python and pids.
    pub fn banner(&self) -> String {
        let status = self.status();
        let mut out = String::new();
        for g in &self.groups {
            let home = g.python_home.as_ref().map_or_else(
                || "(the embedded Python itself)".to_string(),
                |h| h.display().to_string(),
            );
            let user = g
                .user
                .as_ref()
                .map(|u| format!(", user={u}"))
                .unwrap_or_default();
            let procs = status
                .iter()
                .find(|s| s.name == g.name)
                .map(|s| {
                    s.processes
                        .iter()
                        .map(|p| {
                            if p.state == "ready" {
                                p.pid.to_string()
                            } else {
                                format!("{}({})", p.pid, p.state)
                            }
                        })
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            out.push_str(&format!(
                "daemon process group {}: {} process(es) x {} thread(s), python-home {home}{user}; pids: {procs}\n",
                g.name, g.processes, g.threads
            ));
        }
        out
    }

    /// Front threads across all groups.
    pub fn front_threads(&self) -> usize {
        self.groups
            .iter()
            .map(|g| (g.processes.max(1) * g.threads.max(1)) as usize)
            .sum()
    }

    /// Stops the pools (waiting up to `graceful` for the requests they run), then every daemon
    /// process, and removes the sockets. Blocking; later calls do nothing.
    pub fn stop(&self, graceful: Duration) {
        let _one_at_a_time = self.stopping.lock();
        let deadline = Instant::now() + graceful;
        for pool in self.pools.values() {
            let left = deadline.saturating_duration_since(Instant::now());
            pool.stop(left.max(Duration::from_millis(50)));
        }
        let supervisor = self.supervisor.lock().take();
        if let Some(s) = supervisor {
            s.shutdown();
        }
    }
}

/// Renders a status snapshot as a text table (what `wsgi status` prints).
pub fn status_table(groups: &[GroupStatus]) -> String {
    if groups.is_empty() {
        return "no daemon process groups (every application runs embedded)\n".to_string();
    }
    let mut out = String::new();
    for g in groups {
        out.push_str(&format!(
            "group {}: {} process(es), {} request(s) served, {} in flight, {} restart(s), {} recycle(s)\n",
            g.name,
            g.processes.len(),
            g.requests_served,
            g.in_flight,
            g.restarts,
            g.recycles
        ));
        out.push_str("  PID      SLOT  STATE     SERVED  IN-FLIGHT  UPTIME\n");
        for p in &g.processes {
            out.push_str(&format!(
                "  {:<8} {:<5} {:<9} {:>6}  {:>9}  {:.1}s\n",
                p.pid, p.slot, p.state, p.served, p.in_flight, p.uptime_secs
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use wsgi_daemon::ProcessStatus;

    #[test]
    fn table_lists_groups_and_processes() {
        let g = GroupStatus {
            name: "site".into(),
            socket: "/tmp/x/sock".into(),
            processes: vec![ProcessStatus {
                pid: 42,
                slot: 0,
                state: "ready",
                served: 7,
                in_flight: 1,
                uptime_secs: 3.25,
            }],
            requests_served: 9,
            in_flight: 1,
            restarts: 2,
            recycles: 0,
        };
        let text = status_table(&[g]);
        assert!(
            text.starts_with("group site: 1 process(es), 9 request(s) served, 1 in flight, 2 restart(s), 0 recycle(s)\n"),
            "{text}"
        );
        assert!(
            text.contains("  42       0     ready          7          1  3.2s\n"),
            "{text}"
        );
        assert!(status_table(&[]).contains("no daemon process groups"));
    }
}
