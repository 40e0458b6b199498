//! The supervisor: for every `WSGIDaemonProcess` group, one listening socket (in a private
//! directory) and `processes` daemon processes started by exec, kept running.
//!
//! This file is the [`Supervisor`] itself: it turns a configuration into each group's plan,
//! socket and process spec, and runs the state machine on its own thread until shut down.
//! * `machine.rs`: the state machine, [`Core::tick`] (its module doc draws the process
//!   lifecycle): restarts, back-off, recycling, stopping;
//! * `exec.rs`: the production [`Launcher`], which execs the daemon program and reads its
//!   reports;
//! * `socket.rs`: each group's listening socket in its private directory;
//! * `identity.rs`: the user and groups a group's processes run as;
//! * `snapshot.rs`: the status snapshot and its Prometheus text.

mod exec;
mod identity;
mod machine;
mod snapshot;
mod socket;

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::unistd::Uid;
use parking_lot::Mutex;
use wsgi_config::{Config, GroupSpec};

pub use exec::ALLOCATOR_ENV;
pub use machine::{ChildProcess, Core, GroupPlan, Launcher, backoff, describe_exit};
pub use snapshot::{GroupStatus, ProcessStatus, prometheus_text};

use crate::client::{DaemonClient, Endpoint};
use crate::spec::{Preload, ProcessSpec};
use exec::{ExecLauncher, ExecPlan};
use identity::{lookup_user, resolve_identity};
use socket::create_socket;

/// Why the supervisor could not start.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// The daemons would run as root.
    #[error(
        "daemon process group `{0}` would run as root: give its WSGIDaemonProcess user= (or add a User directive) naming an unprivileged user such as www-data"
    )]
    WouldRunAsRoot(String),
    /// A user or group name does not exist.
    #[error(
        "daemon process group `{group}`: {what} `{name}` does not exist on this system; create it or name another"
    )]
    NoSuchId {
        /// The daemon group.
        group: String,
        /// `user`, `group` or `supplementary group`.
        what: &'static str,
        /// The name given.
        name: String,
    },
    /// `threads=0` (service-script mode) is not supported.
    #[error(
        "daemon process group `{0}` has threads=0 (service-script mode), which wsgi-rs does not support: give it threads=1 or more"
    )]
    NoThreads(String),
    /// The socket path does not fit a unix socket address.
    #[error("socket path `{}` is {len} bytes, more than a unix socket address holds (107): set WSGISocketPrefix to a shorter path", .path.display())]
    PathTooLong {
        /// The path.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
    /// Creating the socket or its directory failed.
    #[error("cannot create the socket for daemon process group `{group}` in `{}`: {source}; check that the WSGISocketPrefix directory exists and is writable", .path.display())]
    Socket {
        /// The daemon group.
        group: String,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The supervisor thread could not start.
    #[error("cannot start the supervisor thread: {0}")]
    Thread(io::Error),
    /// The `ErrorLog` of the virtual host a group is defined in cannot be opened.
    #[error("daemon process group `{group}`: cannot open its virtual host's ErrorLog `{}`: {source}; check that its folder exists and is writable", .path.display())]
    ErrorLog {
        /// The daemon group.
        group: String,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A group's python-home is a venv of another Python that cannot run it.
    #[error("daemon process group `{group}`: python-home: {source}")]
    Runtime {
        /// The daemon group.
        group: String,
        /// Why.
        source: Box<crate::program::RuntimeError>,
    },
}

/// How to run the daemon processes.
#[derive(Debug, Clone)]
pub struct SupervisorOptions {
    /// The program to exec for each daemon process (`wsgi` or `wsgi-daemon`).
    pub program: PathBuf,
    /// Its arguments, such as `["daemon-process"]`; the control socket is its stdin.
    pub args: Vec<OsString>,
    /// Where to create the sockets' private directories when the configuration has no
    /// `WSGISocketPrefix` (default: the system temporary directory).
    pub socket_dir: Option<PathBuf>,
    /// How often the processes are checked.
    pub tick: Duration,
    /// The front's socket timeout when `socket-timeout=` is 0 (Apache's `Timeout`, 60 s).
    pub default_socket_timeout: Duration,
    /// A script a process loads at start that fails stops that process (see
    /// [`GroupStatus::failure`]) instead of being logged.
    pub preload_must_succeed: bool,
    /// Environment variables set for every process (after the group's own).
    pub env: Vec<(String, OsString)>,
    /// `apache.version` in the processes' environs: the Apache module's httpd (None: `wsgi
    /// serve`'s, [`wsgi_interp::SERVE_APACHE_VERSION`]).
    pub apache_version: Option<(u16, u16, u16)>,
    /// [`ProcessSpec::linger`] for every process: set when this front process is the groups'
    /// only client.
    pub linger: bool,
}

impl SupervisorOptions {
    /// Options that exec `program args...`.
    pub fn new(program: impl Into<PathBuf>, args: &[&str]) -> Self {
        SupervisorOptions {
            program: program.into(),
            args: args.iter().map(OsString::from).collect(),
            socket_dir: None,
            tick: Duration::from_millis(20),
            default_socket_timeout: Duration::from_secs(60),
            preload_must_succeed: false,
            env: Vec::new(),
            apache_version: None,
            linger: false,
        }
    }
}

/// Runs every daemon process group of a configuration.
pub struct Supervisor {
    core: Arc<Mutex<Core>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    endpoints: Vec<Endpoint>,
    dirs: Vec<tempfile::TempDir>,
    tick: Duration,
}

impl Supervisor {
    /// Creates each group's socket and starts its processes (from a background thread that
    /// keeps them running). Errors name the group and the fix.
    pub fn start(
        config: &Config,
        options: &SupervisorOptions,
    ) -> Result<Supervisor, SupervisorError> {
        let root = Uid::effective().is_root();
        let pid = std::process::id();
        let embedded = wsgi_interp::embedded::embedded_python();
        let mut plans = Vec::new();
        let mut exec_plans = Vec::new();
        let mut endpoints = Vec::new();
        let mut dirs = Vec::new();
        for (index, group) in config.daemons.iter().enumerate() {
            let o = &group.options;
            if o.threads == 0 {
                return Err(SupervisorError::NoThreads(group.name.clone()));
            }
            let identity = if root {
                Some(resolve_identity(group, config)?)
            } else {
                None
            };
            let socket_owner = match (&o.socket_user, &identity) {
                (Some(u), _) if root => Some(lookup_user(&group.name, u)?.0),
                (_, Some(id)) => Some(id.uid),
                _ => None,
            };
            let stderr = match group
                .host
                .and_then(|h| config.virtual_hosts.get(h)?.error_log.as_ref())
            {
                Some(path) => Some(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .map_err(|source| SupervisorError::ErrorLog {
                            group: group.name.clone(),
                            path: path.clone(),
                            source,
                        })?,
                ),
                None => None,
            };
            // A venv of another Python runs on the wsgi installed in it (checked at start).
            let program = match &o.python_home {
                Some(home) => crate::program::inspect_daemon_home(home, &embedded)
                    .map_err(|source| SupervisorError::Runtime {
                        group: group.name.clone(),
                        source: Box::new(source),
                    })?
                    .runtime
                    .map(|r| r.program),
                None => None,
            };
            let (dir, socket, listener) =
                create_socket(config, options, group, index + 1, pid, socket_owner)?;
            dirs.push(dir);
            let mut env = Vec::new();
            let mut unset_env = Vec::new();
            for (name, value) in ALLOCATOR_ENV {
                // An operator's own setting wins (and stays in the application's environment).
                if std::env::var_os(name).is_none() {
                    env.push((name.to_string(), OsString::from(value)));
                    unset_env.push(name.to_string());
                }
            }
            let spec = ProcessSpec {
                group: group.name.clone(),
                slot: 0,
                supervisor_pid: pid as i32,
                options: o.clone(),
                python_home: group.python_home(&config.python).cloned(),
                optimize: config.python.optimize,
                dont_write_bytecode: config.python.dont_write_bytecode,
                per_interpreter_gil: config.python.per_interpreter_gil,
                interpreter_rules: config.python.interpreter_rules(),
                apache_version: options.apache_version,
                identity,
                display_name: o.process_title(&group.name),
                switch_interval: o
                    .switch_interval
                    .or(config.python.switch_interval_for(&group.name)),
                preload: preloads(config, &group.name),
                preload_must_succeed: options.preload_must_succeed,
                unset_env,
                linger: options.linger,
            };
            if let Some(lang) = &o.lang {
                env.push(("LANG".to_string(), OsString::from(lang)));
            }
            if let Some(locale) = &o.locale {
                env.push(("LC_ALL".to_string(), OsString::from(locale)));
            }
            if let Some(eggs) = o.python_eggs.as_ref().or(config.python.eggs.as_ref()) {
                env.push((
                    "PYTHON_EGG_CACHE".to_string(),
                    eggs.clone().into_os_string(),
                ));
            }
            plans.push(GroupPlan {
                name: group.name.clone(),
                processes: o.processes,
                retire_allowance: o
                    .graceful_timeout
                    .max(o.eviction_timeout)
                    .max(o.request_timeout)
                    + o.shutdown_timeout
                    + Duration::from_secs(1),
                stop_allowance: o.shutdown_timeout + Duration::from_secs(1),
                socket: socket.clone(),
            });
            endpoints.push(Endpoint {
                group: group.name.clone(),
                socket,
                options: o.clone(),
                default_socket_timeout: options.default_socket_timeout,
            });
            exec_plans.push(ExecPlan {
                spec,
                program,
                listener,
                env,
                stderr,
            });
        }
        for plan in &mut exec_plans {
            plan.env.extend(options.env.iter().cloned());
        }
        let launcher = ExecLauncher::new(options.program.clone(), options.args.clone(), exec_plans);
        let mut sup = Supervisor::with_launcher(plans, Box::new(launcher), options.tick)?;
        sup.endpoints = endpoints;
        sup.dirs = dirs;
        Ok(sup)
    }

    /// A supervisor over `plans` with any launcher (tests use mocks). It ticks every `tick`
    /// on a background thread.
    pub fn with_launcher(
        plans: Vec<GroupPlan>,
        launcher: Box<dyn Launcher>,
        tick: Duration,
    ) -> Result<Supervisor, SupervisorError> {
        let core = Arc::new(Mutex::new(Core::new(plans, launcher, Instant::now())));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let core = core.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("wsgi-supervisor".into())
                .spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        core.lock().tick(Instant::now());
                        std::thread::sleep(tick);
                    }
                })
                .map_err(SupervisorError::Thread)?
        };
        Ok(Supervisor {
            core,
            stop,
            thread: Some(thread),
            endpoints: Vec::new(),
            dirs: Vec::new(),
            tick,
        })
    }

    /// Each group's socket and the options a front uses to reach it.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// A front-side client for every group.
    pub fn client(&self) -> DaemonClient {
        DaemonClient::new(self.endpoints.clone())
    }

    /// A status snapshot of every group.
    pub fn status(&self) -> Vec<GroupStatus> {
        self.core.lock().status(Instant::now())
    }

    /// Stops every process (SIGTERM, then SIGKILL after shutdown-timeout + 1 s), waits for
    /// them, and removes the sockets and their directories.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.stop.store(true, Ordering::SeqCst);
        let _ = thread.join();
        let mut core = self.core.lock();
        core.begin_stop(Instant::now());
        while !core.stopped() {
            core.tick(Instant::now());
            std::thread::sleep(self.tick.min(Duration::from_millis(10)));
        }
        drop(core);
        for e in &self.endpoints {
            let _ = std::fs::remove_file(&e.socket);
        }
        for dir in self.dirs.drain(..) {
            let _ = dir.close();
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// What daemon process group `group` loads at start ([`Config::preloads`]).
fn preloads(config: &Config, group: &str) -> Vec<Preload> {
    config
        .preloads(&GroupSpec::Named(group.to_string()))
        .into_iter()
        .map(|p| Preload {
            script: p.script,
            application_group: p.application_group,
            callable: p.callable,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn preloads_are_import_scripts_and_aliases_with_both_literal_groups_in_order() {
        let text = "WSGIDaemonProcess site\n\
                    WSGIDaemonProcess other\n\
                    WSGIScriptAlias /a /srv/a.wsgi process-group=site application-group=%{GLOBAL} callable-object=app\n\
                    WSGIImportScript /srv/i.py process-group=site application-group=sub\n\
                    WSGIScriptAlias /b /srv/b.wsgi process-group=site\n\
                    WSGIScriptAlias /c /srv/c.wsgi process-group=site application-group=%{RESOURCE}\n\
                    WSGIScriptAlias /d /srv/d.wsgi process-group=other application-group=x\n\
                    WSGIImportScript /srv/j.py process-group=other application-group=%{GLOBAL}\n";
        let config = wsgi_config::load_str(
            text,
            Path::new("site.conf"),
            &wsgi_config::reader::ReadOptions::default(),
        )
        .unwrap();
        let site = preloads(&config, "site");
        let expect = |script: &str, app: &str, callable: Option<&str>| Preload {
            script: script.into(),
            application_group: app.into(),
            callable: callable.map(String::from),
        };
        assert_eq!(
            site,
            vec![
                expect("/srv/a.wsgi", "", Some("app")),
                expect("/srv/i.py", "sub", None),
            ]
        );
        assert_eq!(
            preloads(&config, "other"),
            vec![
                expect("/srv/d.wsgi", "x", Some("application")),
                expect("/srv/j.py", "", None),
            ]
        );
    }
}
