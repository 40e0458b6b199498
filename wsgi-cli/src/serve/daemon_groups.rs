//! Daemon mode for `wsgi serve`, split as Apache splits it between its parent and its
//! children:
//!
//! * [`DaemonGroups`], in the master process (root when the server started as root): the
//!   configuration's `WSGIDaemonProcess` groups run by a [`wsgi_daemon::Supervisor`] (daemon
//!   processes exec'd as `wsgi daemon-process`, each becoming its group's user), their sockets
//!   owned by the front's user so it can connect. [`DaemonGroups::wait_ready`] waits (bounded)
//!   for every process to report ready, so the banner shows the pids that will answer.
//! * [`DaemonPools`], in the front process (never root): one [`WorkerPool`] per group, whose
//!   jobs are tokio tasks sending their requests with `AsyncDaemonClient::dispatch`, at most
//!   `processes × threads` at once, one per daemon worker thread; requests beyond that queue
//!   for `queue-timeout` (the group's, else `--queue-timeout`), then get 504 (the group's, as
//!   mod_wsgi answers) or 503.
//!
//! A reload starts a new set of groups beside the old one; the old set is stopped once the
//! front that used it has finished its requests (see `master.rs`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use wsgi_config::Config;
use wsgi_daemon::AsyncDaemonClient;
use wsgi_daemon::client::Endpoint;
use wsgi_daemon::{GroupStatus, Supervisor, SupervisorOptions};

use super::error::ServeError;
use super::pool::WorkerPool;
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

/// The running daemon process groups of a site (in the master process).
pub struct DaemonGroups {
    supervisor: Mutex<Option<Supervisor>>,
    /// Held for the whole of [`DaemonGroups::stop`], so a second caller returns only once
    /// the processes are gone.
    stopping: Mutex<()>,
    groups: Vec<GroupInfo>,
    sockets: HashMap<String, PathBuf>,
}

impl DaemonGroups {
    /// Starts every `WSGIDaemonProcess` group of `site` (None when it has none). `front_user`
    /// is who the front process connects to the groups' sockets as (their owner when running
    /// as root, unless a group says `socket-user=`).
    pub fn start(
        site: &Site,
        front_user: Option<&str>,
        preload_must_succeed: bool,
        json_logs: bool,
    ) -> Result<Option<DaemonGroups>, ServeError> {
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
        let mut options = SupervisorOptions::new(program, &[wsgi_daemon::program::PROCESS_COMMAND]);
        options.preload_must_succeed = preload_must_succeed;
        // This front process is the groups' only client, and its pool reuses the connection
        // it used last first.
        options.linger = true;
        if json_logs {
            options
                .env
                .push((wsgi_daemon::LOG_FORMAT_VAR.into(), "json".into()));
        }
        let mut config = config.clone();
        if let Some(user) = front_user {
            for group in &mut config.daemons {
                group
                    .options
                    .socket_user
                    .get_or_insert_with(|| user.to_string());
            }
        }
        let supervisor = Supervisor::start(&config, &options)
            .map_err(|source| ServeError::Daemons { source, hint })?;
        let sockets = supervisor
            .endpoints()
            .iter()
            .map(|e| (e.group.clone(), e.socket.clone()))
            .collect();
        let groups = config
            .daemons
            .iter()
            .map(|d| GroupInfo {
                name: d.name.clone(),
                processes: d.options.processes,
                threads: d.options.threads,
                python_home: d.python_home(&config.python).cloned(),
                user: d.options.user.clone().or(config.user.clone()),
            })
            .collect();
        Ok(Some(DaemonGroups {
            supervisor: Mutex::new(Some(supervisor)),
            stopping: Mutex::new(()),
            groups,
            sockets,
        }))
    }

    /// Each group's socket, for the front process.
    pub fn sockets(&self) -> &HashMap<String, PathBuf> {
        &self.sockets
    }

    /// A status snapshot of every group (empty once stopped).
    pub fn status(&self) -> Vec<GroupStatus> {
        self.supervisor
            .lock()
            .as_ref()
            .map(Supervisor::status)
            .unwrap_or_default()
    }

    /// Waits up to `limit` for every process of every group to be ready: Ok(false) when some
    /// were not in time, Err with a group's start-up failure (a script that must load at
    /// start did not) as soon as one is reported.
    pub fn wait_ready(&self, limit: Duration) -> Result<bool, String> {
        let deadline = Instant::now() + limit;
        loop {
            let status = self.status();
            if let Some(failure) = status.iter().find_map(|s| s.failure.clone()) {
                return Err(failure);
            }
            let ready = self.groups.iter().all(|g| {
                status.iter().any(|s| {
                    s.name == g.name
                        && s.processes.len() == g.processes as usize
                        && s.processes.iter().all(|p| p.state == "ready")
                })
            });
            if ready {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
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

    /// Stops every daemon process and removes the sockets. Blocking; later calls do nothing.
    pub fn stop(&self) {
        let _one_at_a_time = self.stopping.lock();
        let supervisor = self.supervisor.lock().take();
        if let Some(s) = supervisor {
            s.shutdown();
        }
    }
}

/// The front process's side of the daemon groups: a pool per group feeding its processes.
pub struct DaemonPools {
    pools: HashMap<String, WorkerPool>,
}

impl DaemonPools {
    /// Pools for every `WSGIDaemonProcess` group of `config`, reaching each at its socket in
    /// `sockets` (None when it has none). `queue_size` and `queue_timeout` are the front pools'
    /// (`--queue-size`, `--queue-timeout`); a group's own `queue-timeout=` wins over the
    /// latter.
    pub fn start(
        config: &Config,
        sockets: &HashMap<String, PathBuf>,
        queue_size: usize,
        queue_timeout: Duration,
    ) -> Result<Option<DaemonPools>, ServeError> {
        if config.daemons.is_empty() {
            return Ok(None);
        }
        let default_socket_timeout = SupervisorOptions::new("", &[]).default_socket_timeout;
        let endpoints = config
            .daemons
            .iter()
            .filter_map(|d| {
                Some(Endpoint {
                    group: d.name.clone(),
                    socket: sockets.get(&d.name)?.clone(),
                    options: d.options.clone(),
                    default_socket_timeout,
                })
            })
            .collect();
        let client = Arc::new(AsyncDaemonClient::new(endpoints));
        let mut pools = HashMap::new();
        for d in &config.daemons {
            let o = &d.options;
            let threads = (o.processes.max(1) as usize).saturating_mul(o.threads.max(1) as usize);
            // The group's own queue-timeout= answers 504, as mod_wsgi's; the server's 503.
            let (wait, expired_status) = if o.queue_timeout.is_zero() {
                (queue_timeout, 503)
            } else {
                (o.queue_timeout, 504)
            };
            let pool = WorkerPool::for_daemon_group(
                client.clone(),
                d.name.clone(),
                threads,
                queue_size,
                wait,
                expired_status,
            );
            pools.insert(d.name.clone(), pool);
        }
        Ok(Some(DaemonPools { pools }))
    }

    /// The front pool of group `name`.
    pub fn pool(&self, name: &str) -> Option<&WorkerPool> {
        self.pools.get(name)
    }

    /// Stops the pools, waiting up to `graceful` for the requests they run.
    pub fn stop(&self, graceful: Duration) {
        let deadline = Instant::now() + graceful;
        for pool in self.pools.values() {
            let left = deadline.saturating_duration_since(Instant::now());
            pool.stop(left.max(Duration::from_millis(50)));
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
            failure: None,
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
