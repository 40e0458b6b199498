//! The supervisor: for every `WSGIDaemonProcess` group, one listening socket (in a private
//! directory) and `processes` daemon processes started by exec, kept running.
//!
//! # Process lifecycle
//!
//! ```text
//! Starting --ready--> Ready --"recycling"--> Retiring --exit--> gone
//!     \                  \------- exit (crash) -------> gone, slot restarts after backoff
//!      \---- exit (crash, or "fatal" start-up error) --> gone, slot restarts after backoff
//! ```
//!
//! Invariants, kept by [`Core::tick`]:
//! * each slot has at most one *current* process (Starting or Ready); a process that reports
//!   it is recycling leaves the slot at once and a replacement is launched in the same tick,
//!   so the old one drains while the new one starts taking connections;
//! * a current process that exits without having announced a recycle is a crash: the exit
//!   status or signal is logged as it is, and the slot restarts immediately the first time,
//!   then with a doubling delay (100 ms up to 10 s) while it keeps crashing within 10 s of
//!   starting;
//! * a retiring process that outlives its drain allowance (graceful-timeout +
//!   shutdown-timeout + 1 s) is killed;
//! * once stopping, nothing is launched; every process gets SIGTERM, and SIGKILL after
//!   shutdown-timeout + 1 s; the socket files and their directories are removed when the
//!   [`Supervisor`] is shut down or dropped.
//!
//! Process spawning, waiting and signalling sit behind [`Launcher`] and [`ChildProcess`],
//! so this logic is unit-tested with mocks and no processes.

use std::ffi::OsString;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::sys::socket::{AddressFamily, Backlog, SockFlag, SockType, UnixAddr};
use nix::unistd::{Gid, Group, Uid, User};
use parking_lot::Mutex;
use serde::Serialize;
use wsgi_config::{Config, DaemonGroup, GroupSpec};

use crate::client::{ClientOptions, DaemonClient, Endpoint};
use crate::spec::{Identity, Preload, ProcessSpec, Report, send_spec};

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
        source: Box<crate::runtime::RuntimeError>,
    },
}

/// Settings for the memory allocator of the program a daemon process runs, passed in its
/// environment because the allocator reads them before `main` (the process removes them
/// again before Python starts, [`ProcessSpec::unset_env`]). The `wsgi` program allocates
/// through mimalloc, which otherwise reserves its memory 1 GiB at a time and commits it at
/// once: a daemon process would start with over 1 GB of data and address space, more than
/// a `memory-limit=` or `virtual-memory-limit=` of a few hundred MB allows. With these it
/// reserves 64 MiB (its smallest block) at a time and commits what it uses. Ignored by
/// programs without mimalloc (`wsgi-daemon`); a variable already in the supervisor's
/// environment is left as the operator set it.
pub const ALLOCATOR_ENV: &[(&str, &str)] = &[
    ("MIMALLOC_ARENA_RESERVE", "64MiB"),
    ("MIMALLOC_ARENA_EAGER_COMMIT", "0"),
];

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
        }
    }
}

/// Starts processes. The production one execs a program; tests use mocks.
pub trait Launcher: Send + 'static {
    /// Starts a process for slot `slot` of group number `group` (position in the plan).
    fn launch(&mut self, group: usize, slot: u32) -> io::Result<Box<dyn ChildProcess>>;
}

/// A started process, as the supervisor sees it.
pub trait ChildProcess: Send {
    /// Its process id.
    fn pid(&self) -> u32;
    /// Reaps it if it has exited.
    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>>;
    /// Sends a signal (never after it was reaped).
    fn signal(&mut self, signal: Signal);
    /// Reports it sent since the last call.
    fn reports(&mut self) -> Vec<Report>;
}

/// What the supervisor keeps per group besides its processes.
#[derive(Debug, Clone)]
pub struct GroupPlan {
    /// The group's name.
    pub name: String,
    /// `processes=`.
    pub processes: u32,
    /// How long a retiring process may run before it is killed.
    pub retire_allowance: Duration,
    /// How long a stopping process may run before it is killed.
    pub stop_allowance: Duration,
    /// Its socket.
    pub socket: PathBuf,
}

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

struct Running {
    child: Box<dyn ChildProcess>,
    slot: u32,
    started: Instant,
    ready: bool,
    served: u64,
    in_flight: u64,
    kill_at: Option<Instant>,
    killed: bool,
    /// It reported that it could not start (`fatal`).
    start_failed: bool,
}

struct SlotRun {
    current: Option<Running>,
    crashes: u32,
    next_start: Instant,
}

struct GroupRun {
    plan: GroupPlan,
    slots: Vec<SlotRun>,
    retiring: Vec<Running>,
    served_before: u64,
    restarts: u64,
    recycles: u64,
    /// The last start-up failure a process reported.
    failure: Option<String>,
}

/// The supervisor's state machine, advanced by [`Core::tick`].
pub struct Core {
    groups: Vec<GroupRun>,
    launcher: Box<dyn Launcher>,
    stopping: bool,
}

/// A crashing slot's delay before its next start.
pub fn backoff(crashes: u32) -> Duration {
    match crashes {
        0 | 1 => Duration::ZERO,
        n => Duration::from_millis(100u64 << (n - 2).min(7)).min(Duration::from_secs(10)),
    }
}

/// How an exit reads in the log: the real status or signal.
pub fn describe_exit(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        format!("exited with status {code}")
    } else if let Some(sig) = status.signal() {
        let name = Signal::try_from(sig)
            .map(|s| s.as_str().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let core = if status.core_dumped() {
            ", core dumped"
        } else {
            ""
        };
        format!("was killed by signal {sig} ({name}{core})")
    } else {
        format!("ended ({status})")
    }
}

impl Core {
    /// A state machine over `plans`, starting processes with `launcher` from the first tick.
    pub fn new(plans: Vec<GroupPlan>, launcher: Box<dyn Launcher>, now: Instant) -> Core {
        let groups = plans
            .into_iter()
            .map(|plan| GroupRun {
                slots: (0..plan.processes)
                    .map(|_| SlotRun {
                        current: None,
                        crashes: 0,
                        next_start: now,
                    })
                    .collect(),
                plan,
                retiring: Vec::new(),
                served_before: 0,
                restarts: 0,
                recycles: 0,
                failure: None,
            })
            .collect();
        Core {
            groups,
            launcher,
            stopping: false,
        }
    }

    /// Advances every group: reads reports, reaps, restarts, retires and kills.
    pub fn tick(&mut self, now: Instant) {
        for (gi, g) in self.groups.iter_mut().enumerate() {
            let name = g.plan.name.clone();
            for (si, slot) in g.slots.iter_mut().enumerate() {
                let mut retire = None;
                if let Some(cur) = slot.current.as_mut() {
                    for r in cur.child.reports() {
                        match r {
                            Report::Ready => cur.ready = true,
                            Report::Stats { served, in_flight } => {
                                cur.served = served;
                                cur.in_flight = in_flight;
                            }
                            Report::Recycling(reason) => retire = Some(reason),
                            Report::Fatal(msg) => {
                                tracing::error!(
                                    group = %name,
                                    pid = cur.child.pid(),
                                    "daemon process failed to start: {msg}"
                                );
                                g.failure = Some(msg);
                                cur.start_failed = true;
                            }
                        }
                    }
                }
                if let Some(reason) = retire {
                    let mut old = slot.current.take().expect("checked above");
                    tracing::info!(group = %name, pid = old.child.pid(), %reason, "daemon process is being replaced");
                    old.kill_at = Some(now + g.plan.retire_allowance);
                    g.retiring.push(old);
                    g.recycles += 1;
                    slot.crashes = 0;
                    slot.next_start = now;
                }
                if let Some(cur) = slot.current.as_mut() {
                    match cur.child.try_wait() {
                        Ok(Some(status)) => {
                            let lived = now.saturating_duration_since(cur.started);
                            let pid = cur.child.pid();
                            let start_failed = cur.start_failed;
                            g.served_before += cur.served;
                            slot.current = None;
                            if self.stopping {
                                tracing::info!(group = %name, pid, "daemon process {}", describe_exit(status));
                            } else {
                                if lived >= Duration::from_secs(10) {
                                    slot.crashes = 0;
                                }
                                slot.crashes += 1;
                                g.restarts += 1;
                                let delay = backoff(slot.crashes);
                                slot.next_start = now + delay;
                                let when = if delay.is_zero() {
                                    String::new()
                                } else {
                                    format!(" in {:.1}s", delay.as_secs_f64())
                                };
                                if start_failed {
                                    // Its reason is logged above, and the requests waiting
                                    // for it were answered 503 with it.
                                    tracing::error!(group = %name, pid, "daemon process could not start and {}; trying again{when}", describe_exit(status));
                                } else {
                                    tracing::error!(group = %name, pid, "daemon process {}; its requests failed with 502; restarting{when}", describe_exit(status));
                                }
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(group = %name, "cannot wait for a daemon process: {e}")
                        }
                    }
                }
                if slot.current.is_none() && !self.stopping && now >= slot.next_start {
                    match self.launcher.launch(gi, si as u32) {
                        Ok(child) => {
                            tracing::debug!(group = %name, pid = child.pid(), slot = si, "daemon process started");
                            slot.current = Some(Running {
                                child,
                                slot: si as u32,
                                started: now,
                                ready: false,
                                served: 0,
                                in_flight: 0,
                                kill_at: None,
                                killed: false,
                                start_failed: false,
                            });
                        }
                        Err(e) => {
                            slot.crashes += 1;
                            let delay = backoff(slot.crashes).max(Duration::from_millis(100));
                            slot.next_start = now + delay;
                            tracing::error!(group = %name, "cannot start a daemon process: {e}; retrying in {:.1}s", delay.as_secs_f64());
                        }
                    }
                }
            }
            let mut i = 0;
            while i < g.retiring.len() {
                let r = &mut g.retiring[i];
                for rep in r.child.reports() {
                    if let Report::Stats { served, in_flight } = rep {
                        r.served = served;
                        r.in_flight = in_flight;
                    }
                }
                match r.child.try_wait() {
                    Ok(Some(status)) => {
                        tracing::info!(group = %name, pid = r.child.pid(), "replaced daemon process {}", describe_exit(status));
                        g.served_before += r.served;
                        g.retiring.swap_remove(i);
                        continue;
                    }
                    Ok(None) => {
                        if !r.killed && r.kill_at.is_some_and(|t| now >= t) {
                            tracing::warn!(group = %name, pid = r.child.pid(), "daemon process did not stop in time: killing it");
                            r.child.signal(Signal::SIGKILL);
                            r.killed = true;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(group = %name, "cannot wait for a daemon process: {e}")
                    }
                }
                i += 1;
            }
        }
    }

    /// Starts stopping: SIGTERM to every process; SIGKILL to those still there after their
    /// stop allowance (on later ticks).
    pub fn begin_stop(&mut self, now: Instant) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        for g in &mut self.groups {
            let allowance = g.plan.stop_allowance;
            let slots = g.slots.iter_mut().filter_map(|s| s.current.take());
            let all: Vec<Running> = slots.collect();
            g.retiring.extend(all);
            for r in &mut g.retiring {
                r.child.signal(Signal::SIGTERM);
                r.kill_at = Some(
                    r.kill_at
                        .map_or(now + allowance, |t| t.min(now + allowance)),
                );
            }
        }
    }

    /// True when stopping and every process has exited.
    pub fn stopped(&self) -> bool {
        self.stopping
            && self
                .groups
                .iter()
                .all(|g| g.retiring.is_empty() && g.slots.iter().all(|s| s.current.is_none()))
    }

    /// A snapshot of every group.
    pub fn status(&self, now: Instant) -> Vec<GroupStatus> {
        self.groups
            .iter()
            .map(|g| {
                let current = g.slots.iter().filter_map(|s| s.current.as_ref());
                let mut processes: Vec<ProcessStatus> = current
                    .map(|r| (r, if r.ready { "ready" } else { "starting" }))
                    .chain(g.retiring.iter().map(|r| (r, "retiring")))
                    .map(|(r, state)| ProcessStatus {
                        pid: r.child.pid(),
                        slot: r.slot,
                        state,
                        served: r.served,
                        in_flight: r.in_flight,
                        uptime_secs: now.saturating_duration_since(r.started).as_secs_f64(),
                    })
                    .collect();
                processes.sort_by_key(|p| (p.slot, p.pid));
                GroupStatus {
                    name: g.plan.name.clone(),
                    socket: g.plan.socket.clone(),
                    requests_served: g.served_before
                        + processes.iter().map(|p| p.served).sum::<u64>(),
                    in_flight: processes.iter().map(|p| p.in_flight).sum(),
                    processes,
                    restarts: g.restarts,
                    recycles: g.recycles,
                    failure: g.failure.clone(),
                }
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// The real thing: exec'd processes.

struct ExecPlan {
    spec: ProcessSpec,
    /// The program of a group on another Python (its venv's `wsgi`); None: the launcher's.
    program: Option<PathBuf>,
    listener: UnixListener,
    env: Vec<(String, OsString)>,
    /// The processes' stderr: the `ErrorLog` of the virtual host the group is defined in, as
    /// mod_wsgi connects it (None: the supervisor's own stderr).
    stderr: Option<std::fs::File>,
}

struct ExecLauncher {
    program: PathBuf,
    args: Vec<OsString>,
    plans: Vec<ExecPlan>,
    /// The (group, slot)s started once: [`ProcessSpec::preload_must_succeed`] holds for a
    /// slot's first process only (the start); its replacements log a failure, as mod_wsgi.
    started: std::collections::HashSet<(usize, u32)>,
}

impl Launcher for ExecLauncher {
    fn launch(&mut self, group: usize, slot: u32) -> io::Result<Box<dyn ChildProcess>> {
        let plan = &self.plans[group];
        let (ours, theirs) = UnixStream::pair()?;
        let program = plan.program.as_ref().unwrap_or(&self.program);
        let mut cmd = Command::new(program);
        match &plan.program {
            Some(_) => cmd.arg(crate::runtime::PROCESS_COMMAND),
            None => cmd.args(&self.args),
        }
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
        .envs(plan.env.iter().map(|(k, v)| (k, v)));
        if let Some(log) = &plan.stderr {
            cmd.stderr(log.try_clone()?);
        }
        if let Some(title) = &plan.spec.display_name {
            cmd.arg0(title);
        }
        let mut child = cmd.spawn().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot exec `{}`: {e}", program.display()),
            )
        })?;
        let mut spec = plan.spec.clone();
        spec.slot = slot;
        spec.preload_must_succeed &= self.started.insert((group, slot));
        if let Err(e) = send_spec(&ours, &spec, &plan.listener) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other(e.to_string()));
        }
        ours.set_nonblocking(true)?;
        Ok(Box::new(ExecChild {
            child,
            control: ours,
            buf: Vec::new(),
            reaped: false,
        }))
    }
}

struct ExecChild {
    child: std::process::Child,
    control: UnixStream,
    buf: Vec<u8>,
    reaped: bool,
}

impl ChildProcess for ExecChild {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        let r = self.child.try_wait()?;
        if r.is_some() {
            self.reaped = true;
        }
        Ok(r)
    }

    fn signal(&mut self, signal: Signal) {
        if !self.reaped {
            let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
            let _ = nix::sys::signal::kill(pid, signal);
        }
    }

    fn reports(&mut self) -> Vec<Report> {
        let mut chunk = [0u8; 4096];
        loop {
            match self.control.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => break,
            }
        }
        let mut out = Vec::new();
        while let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=end).collect();
            if let Some(r) = Report::parse(String::from_utf8_lossy(&line[..end]).as_ref()) {
                out.push(r);
            }
        }
        out
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
                Some(home) => crate::runtime::inspect_daemon_home(home, &embedded)
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
                options: ClientOptions::from_daemon(o, options.default_socket_timeout),
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
        let launcher = ExecLauncher {
            program: options.program.clone(),
            args: options.args.clone(),
            plans: exec_plans,
            started: Default::default(),
        };
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

fn lookup_user(group: &str, spec: &str) -> Result<(u32, u32, String), SupervisorError> {
    let missing = || SupervisorError::NoSuchId {
        group: group.to_string(),
        what: "user",
        name: spec.to_string(),
    };
    if let Some(id) = spec.strip_prefix('#') {
        let uid: u32 = id.parse().map_err(|_| missing())?;
        let user = User::from_uid(Uid::from_raw(uid)).ok().flatten();
        return Ok(match user {
            Some(u) => (uid, u.gid.as_raw(), u.name),
            None => (uid, uid, spec.to_string()),
        });
    }
    let user = User::from_name(spec).ok().flatten().ok_or_else(missing)?;
    Ok((user.uid.as_raw(), user.gid.as_raw(), user.name))
}

fn lookup_group(group: &str, what: &'static str, spec: &str) -> Result<u32, SupervisorError> {
    let missing = || SupervisorError::NoSuchId {
        group: group.to_string(),
        what,
        name: spec.to_string(),
    };
    if let Some(id) = spec.strip_prefix('#') {
        return id.parse().map_err(|_| missing());
    }
    let g = Group::from_name(spec).ok().flatten().ok_or_else(missing)?;
    Ok(g.gid.as_raw())
}

fn resolve_identity(group: &DaemonGroup, config: &Config) -> Result<Identity, SupervisorError> {
    let o = &group.options;
    let user = o
        .user
        .as_deref()
        .or(config.user.as_deref())
        .ok_or_else(|| SupervisorError::WouldRunAsRoot(group.name.clone()))?;
    let (uid, primary, user_name) = lookup_user(&group.name, user)?;
    if uid == 0 {
        return Err(SupervisorError::WouldRunAsRoot(group.name.clone()));
    }
    let gid = match o.group.as_deref().or(config.group.as_deref()) {
        Some(g) => lookup_group(&group.name, "group", g)?,
        None => primary,
    };
    let supplementary = if o.supplementary_groups.is_empty() {
        None
    } else {
        Some(
            o.supplementary_groups
                .iter()
                .map(|g| lookup_group(&group.name, "supplementary group", g))
                .collect::<Result<Vec<_>, _>>()?,
        )
    };
    Ok(Identity {
        user_name,
        uid,
        gid,
        supplementary,
    })
}

/// Creates `<base>.<pid>.<id>.XXXXXX/` (mode 0700) holding `sock` (mode 0600), both owned by
/// `owner` when given, listening with the group's listen-backlog.
fn create_socket(
    config: &Config,
    options: &SupervisorOptions,
    group: &DaemonGroup,
    id: usize,
    pid: u32,
    owner: Option<u32>,
) -> Result<(tempfile::TempDir, PathBuf, UnixListener), SupervisorError> {
    let (parent, base) = match &config.server.socket_prefix {
        Some(prefix) => {
            let prefix = if prefix.is_absolute() {
                prefix.clone()
            } else {
                config.server_root.join(prefix)
            };
            let parent = prefix
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| "/".into());
            let base = prefix
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "wsgi".into());
            (parent, base)
        }
        None => (
            options
                .socket_dir
                .clone()
                .unwrap_or_else(std::env::temp_dir),
            "wsgi-rs".to_string(),
        ),
    };
    let err = |path: &Path, source: io::Error| SupervisorError::Socket {
        group: group.name.clone(),
        path: path.to_path_buf(),
        source,
    };
    let dir = tempfile::Builder::new()
        .prefix(&format!("{base}.{pid}.{id}."))
        .tempdir_in(&parent)
        .map_err(|e| err(&parent, e))?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
        .map_err(|e| err(dir.path(), e))?;
    let path = dir.path().join("sock");
    let len = path.as_os_str().len();
    if len > 107 {
        return Err(SupervisorError::PathTooLong { path, len });
    }
    let fd = nix::sys::socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| err(&path, e.into()))?;
    let addr = UnixAddr::new(&path).map_err(|e| err(&path, e.into()))?;
    {
        use std::os::fd::AsRawFd;
        nix::sys::socket::bind(fd.as_raw_fd(), &addr).map_err(|e| err(&path, e.into()))?;
    }
    let backlog = Backlog::new(group.options.listen_backlog.min(i32::MAX as u32) as i32)
        .unwrap_or(Backlog::MAXCONN);
    nix::sys::socket::listen(&fd, backlog).map_err(|e| err(&path, e.into()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| err(&path, e))?;
    if let Some(uid) = owner {
        let uid = Some(Uid::from_raw(uid));
        nix::unistd::chown(dir.path(), uid, None::<Gid>).map_err(|e| err(dir.path(), e.into()))?;
        nix::unistd::chown(&path, uid, None::<Gid>).map_err(|e| err(&path, e.into()))?;
    }
    Ok((dir, path, UnixListener::from(fd)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// What a mock process will do, shared with the test.
    #[derive(Default)]
    struct MockState {
        next_pid: u32,
        launched: Vec<u32>,
        exits: std::collections::HashMap<u32, ExitStatus>,
        reports: std::collections::HashMap<u32, VecDeque<Report>>,
        signals: Vec<(u32, Signal)>,
        fail_launch: bool,
    }

    struct MockLauncher(Arc<Mutex<MockState>>);
    struct MockChild(Arc<Mutex<MockState>>, u32);

    impl Launcher for MockLauncher {
        fn launch(&mut self, _: usize, _: u32) -> io::Result<Box<dyn ChildProcess>> {
            let mut s = self.0.lock();
            if s.fail_launch {
                return Err(io::Error::other("exec failed"));
            }
            s.next_pid += 1;
            let pid = 1000 + s.next_pid;
            s.launched.push(pid);
            Ok(Box::new(MockChild(self.0.clone(), pid)))
        }
    }

    impl ChildProcess for MockChild {
        fn pid(&self) -> u32 {
            self.1
        }
        fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
            Ok(self.0.lock().exits.get(&self.1).copied())
        }
        fn signal(&mut self, signal: Signal) {
            let mut s = self.0.lock();
            s.signals.push((self.1, signal));
            // A mock process obeys SIGTERM and SIGKILL at once.
            let status = if signal == Signal::SIGKILL { 9 } else { 0 };
            s.exits.insert(self.1, ExitStatus::from_raw(status));
        }
        fn reports(&mut self) -> Vec<Report> {
            self.0
                .lock()
                .reports
                .get_mut(&self.1)
                .map(|q| q.drain(..).collect())
                .unwrap_or_default()
        }
    }

    fn core(processes: u32) -> (Core, Arc<Mutex<MockState>>, Instant) {
        let state = Arc::new(Mutex::new(MockState::default()));
        let now = Instant::now();
        let plan = GroupPlan {
            name: "site".into(),
            processes,
            retire_allowance: Duration::from_secs(20),
            stop_allowance: Duration::from_secs(6),
            socket: "/tmp/x.sock".into(),
        };
        (
            Core::new(vec![plan], Box::new(MockLauncher(state.clone())), now),
            state,
            now,
        )
    }

    fn pids(c: &Core, now: Instant) -> Vec<(u32, &'static str)> {
        c.status(now)[0]
            .processes
            .iter()
            .map(|p| (p.pid, p.state))
            .collect()
    }

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

    #[test]
    fn starts_every_slot_and_marks_ready() {
        let (mut c, s, t) = core(2);
        c.tick(t);
        assert_eq!(s.lock().launched, vec![1001, 1002]);
        s.lock()
            .reports
            .insert(1001, VecDeque::from([Report::Ready]));
        c.tick(t);
        assert_eq!(pids(&c, t), vec![(1001, "ready"), (1002, "starting")]);
    }

    #[test]
    fn a_start_up_failure_is_kept_for_the_status() {
        let (mut c, s, t) = core(1);
        c.tick(t);
        assert_eq!(c.status(t)[0].failure, None);
        s.lock().reports.insert(
            1001,
            VecDeque::from([Report::Fatal("app.wsgi failed to load at start".into())]),
        );
        c.tick(t);
        assert_eq!(
            c.status(t)[0].failure.as_deref(),
            Some("app.wsgi failed to load at start")
        );
    }

    #[test]
    fn crash_restarts_at_once_then_backs_off() {
        let (mut c, s, t) = core(1);
        c.tick(t);
        // Exit status 1 is a crash (and is not "signal 1").
        s.lock().exits.insert(1001, ExitStatus::from_raw(1 << 8));
        c.tick(t + Duration::from_secs(1));
        assert_eq!(
            s.lock().launched,
            vec![1001, 1002],
            "first crash: immediate restart"
        );
        s.lock().exits.insert(1002, ExitStatus::from_raw(9));
        let t2 = t + Duration::from_secs(2);
        c.tick(t2);
        assert_eq!(s.lock().launched.len(), 2, "second quick crash waits");
        c.tick(t2 + Duration::from_millis(99));
        assert_eq!(s.lock().launched.len(), 2);
        c.tick(t2 + Duration::from_millis(100));
        assert_eq!(s.lock().launched.len(), 3);
        assert_eq!(c.status(t2)[0].restarts, 2);
    }

    #[test]
    fn exit_descriptions_are_the_real_status() {
        assert_eq!(
            describe_exit(ExitStatus::from_raw(1 << 8)),
            "exited with status 1"
        );
        assert_eq!(
            describe_exit(ExitStatus::from_raw(9)),
            "was killed by signal 9 (SIGKILL)"
        );
        assert_eq!(
            describe_exit(ExitStatus::from_raw(11 | 0x80)),
            "was killed by signal 11 (SIGSEGV, core dumped)"
        );
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::ZERO);
        assert_eq!(backoff(2), Duration::from_millis(100));
        assert_eq!(backoff(3), Duration::from_millis(200));
        assert_eq!(backoff(40), Duration::from_secs(10));
    }

    #[test]
    fn recycle_starts_the_replacement_before_the_old_one_exits() {
        let (mut c, s, t) = core(1);
        c.tick(t);
        s.lock().reports.insert(
            1001,
            VecDeque::from([Report::Ready, Report::Recycling("maximum-requests".into())]),
        );
        c.tick(t);
        assert_eq!(pids(&c, t), vec![(1001, "retiring"), (1002, "starting")]);
        // The old one exits cleanly later: not a crash, not restarted again.
        s.lock().exits.insert(1001, ExitStatus::from_raw(0));
        c.tick(t + Duration::from_secs(1));
        assert_eq!(pids(&c, t), vec![(1002, "starting")]);
        let st = &c.status(t)[0];
        assert_eq!((st.restarts, st.recycles), (0, 1));
        assert_eq!(s.lock().launched.len(), 2);
    }

    #[test]
    fn a_retiring_process_that_hangs_is_killed() {
        let (mut c, s, t) = core(1);
        c.tick(t);
        s.lock().reports.insert(
            1001,
            VecDeque::from([Report::Recycling("request-timeout".into())]),
        );
        c.tick(t);
        c.tick(t + Duration::from_secs(19));
        assert!(s.lock().signals.is_empty());
        c.tick(t + Duration::from_secs(20));
        assert_eq!(s.lock().signals, vec![(1001, Signal::SIGKILL)]);
    }

    #[test]
    fn stop_terminates_everything_and_launches_nothing() {
        let (mut c, s, t) = core(2);
        c.tick(t);
        c.begin_stop(t);
        c.tick(t);
        assert!(c.stopped());
        let sig = s.lock().signals.clone();
        assert_eq!(sig, vec![(1001, Signal::SIGTERM), (1002, Signal::SIGTERM)]);
        c.tick(t + Duration::from_secs(60));
        assert_eq!(s.lock().launched.len(), 2);
    }

    #[test]
    fn failed_launch_is_retried() {
        let (mut c, s, t) = core(1);
        s.lock().fail_launch = true;
        c.tick(t);
        s.lock().fail_launch = false;
        c.tick(t + Duration::from_millis(50));
        assert!(s.lock().launched.is_empty());
        c.tick(t + Duration::from_millis(100));
        assert_eq!(s.lock().launched, vec![1001]);
    }

    #[test]
    fn status_counts_served_requests_across_generations_and_renders_prometheus() {
        let (mut c, s, t) = core(1);
        c.tick(t);
        s.lock().reports.insert(
            1001,
            VecDeque::from([
                Report::Stats {
                    served: 7,
                    in_flight: 1,
                },
                Report::Recycling("maximum-requests".into()),
            ]),
        );
        c.tick(t);
        s.lock().exits.insert(1001, ExitStatus::from_raw(0));
        s.lock().reports.insert(
            1002,
            VecDeque::from([Report::Stats {
                served: 3,
                in_flight: 2,
            }]),
        );
        c.tick(t);
        let st = c.status(t);
        assert_eq!((st[0].requests_served, st[0].in_flight), (10, 2));
        let text = prometheus_text(&st);
        assert!(
            text.contains("wsgi_daemon_requests_total{group=\"site\"} 10\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE wsgi_daemon_recycles_total counter\n"),
            "{text}"
        );
    }
}
