//! One daemon process: started by exec (`wsgi daemon-process`, `wsgi-daemon process`), it
//! takes its [`ProcessSpec`] and the group's listening socket from the supervisor, drops
//! privileges, starts CPython and serves requests on `threads` worker threads until it is
//! told to stop or decides to recycle.
//!
//! Threads:
//! * the **reactor** polls (epoll) the listening socket and every idle front connection; a
//!   connection with a request waiting is handed to a worker. Connections are never pinned to
//!   a thread, so a front may keep any number of them open. The listener is polled only while
//!   a worker is idle, so a busy process leaves new connections to its siblings.
//! * **workers** (`threads=`) run one request at a time through `wsgi-interp`, then give the
//!   connection back to the reactor;
//! * the **signal** thread turns SIGTERM/SIGINT into a stop, and SIGUSR1 (drain for
//!   eviction-timeout, else graceful-timeout) and SIGXCPU (cpu-time-limit) into a graceful
//!   restart (signals are blocked in every other thread);
//! * the **GIL probe** enters the main interpreter every second (deadlock-timeout);
//! * the main thread is the **monitor**: maximum-requests, restart-interval,
//!   inactivity-timeout, request-timeout, script changes and signals all end in
//!   [`Drain`]: stop accepting, tell the supervisor (which starts the replacement at once),
//!   finish what is running, exit.

use std::collections::{HashMap, HashSet};
use std::io::{self, BufWriter, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::{Gid, Uid};
use parking_lot::Mutex;
use wsgi_interp::{
    CallOptions, InterpreterHandle, Outcome, RequestBody, ResponseSink, Runtime, ScriptSpec,
    StartConfig, now_us,
};

use crate::protocol::{
    self, CHUNK, End, FrameReader, ProtocolError, RejectReason, encode_body_wanted, encode_end,
    encode_start, kind, write_raw,
};
use crate::spec::{HandoverError, Identity, ProcessSpec, Report, receive_spec};
use crate::timers::{BacklogWatch, InactivityTimer, StartupTimer};

/// Why a daemon process could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The hand-over from the supervisor failed.
    #[error(transparent)]
    Handover(#[from] HandoverError),
    /// Switching user or group failed.
    #[error(
        "cannot switch daemon process group `{group}` to {what}: {source} (the server must start as root to use user=/group=)"
    )]
    Privileges {
        /// The daemon group.
        group: String,
        /// What was being set.
        what: String,
        /// The OS error.
        source: nix::Error,
    },
    /// The process would run as root.
    #[error(
        "daemon process group `{0}` would run as root: set user= on its WSGIDaemonProcess (or a User directive) to an unprivileged user such as www-data"
    )]
    Root(String),
    /// `home=` cannot be entered.
    #[error("cannot change daemon process group `{group}` to home `{}`: {source}; make it exist and readable by the daemon user", .home.display())]
    Home {
        /// The daemon group.
        group: String,
        /// The directory.
        home: std::path::PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A script it must load at start did not load ([`ProcessSpec::preload_must_succeed`]).
    #[error("{} failed to load at start in daemon process group `{group}`: {why}", .script.display())]
    Preload {
        /// The daemon group.
        group: String,
        /// The script.
        script: std::path::PathBuf,
        /// The error, on one line (the traceback is in the log).
        why: String,
    },
    /// CPython did not start.
    #[error("Python did not start in daemon process group `{group}`: {source}{hint}")]
    Python {
        /// The daemon group.
        group: String,
        /// Why.
        source: wsgi_interp::StartError,
        /// What to change when a memory limit is the likely cause (else empty).
        hint: String,
    },
    /// One of the process's threads could not be created.
    #[error("daemon process group `{group}` cannot start its {thread} thread: {source}{hint}")]
    Thread {
        /// The daemon group.
        group: String,
        /// Which thread.
        thread: String,
        /// The OS error.
        source: io::Error,
        /// What to change when a memory limit is the likely cause (else empty).
        hint: String,
    },
    /// The poller or the listening socket could not be set up.
    #[error("daemon process group `{group}` could not start: {source}")]
    Setup {
        /// The daemon group.
        group: String,
        /// The OS error.
        source: io::Error,
    },
}

/// The daemon-process entry point for a binary: the control socket is stdin. Returns the
/// process exit status (0 after a clean stop or recycle).
pub fn main() -> i32 {
    crate::init_logging();
    let control = match io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => UnixStream::from(fd),
        Err(e) => {
            tracing::error!("wsgi daemon process: stdin is unusable: {e}");
            return 2;
        }
    };
    match run(control) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e}");
            3
        }
    }
}

/// Runs a daemon process over `control` (the supervisor's end of the control socket must be
/// on the other side). Returns the exit status. Call it on the process's only thread: it sets
/// the signal mask and malloc's arena count that every later thread gets, and removes
/// variables from the environment.
pub fn run(control: UnixStream) -> Result<i32, ProcessError> {
    // Signals first, before any thread exists, so every thread inherits the mask.
    let mut signals = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGUSR1,
        Signal::SIGHUP,
        Signal::SIGXCPU,
    ] {
        signals.add(s);
    }
    signals
        .thread_block()
        .map_err(|e| setup_err("", io::Error::from(e)))?;

    let (spec, listener) = receive_spec(&control)?;
    // Both before the first thread starts.
    limit_malloc_arenas(&spec);
    unset_env(&spec.unset_env);
    let report = Reporter::new(control);
    let fatal = report.control.try_clone().ok();
    // A second descriptor of the group's socket, to answer the requests waiting on it if
    // this process cannot start.
    let waiting = listener.try_clone().ok();
    match start(&spec, listener, report, signals) {
        Ok(process) => Ok(process.serve()),
        Err(e) => {
            if let Some(control) = fatal {
                Reporter { control }.send(&Report::Fatal(e.to_string()));
            }
            if let Some(listener) = waiting {
                refuse_waiting(listener, &e.to_string());
            }
            Err(e)
        }
    }
}

/// glibc's malloc gives each thread that allocates under contention an arena of its own, up
/// to 8 per CPU, and reserves 64 MiB of address space for each: over 1 GB for a daemon of 15
/// threads, which `virtual-memory-limit=` counts. Python's allocations are serialised by
/// the GIL anyway, so a daemon process keeps two arenas (the main one and one more), and
/// only the main one under `virtual-memory-limit=`, unless `MALLOC_ARENA_MAX` in its
/// environment says otherwise (glibc reads that itself).
fn limit_malloc_arenas(spec: &ProcessSpec) {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    let arenas: libc::c_int = if spec.options.virtual_memory_limit > 0 {
        1
    } else {
        2
    };
    // SAFETY: mallopt only sets a malloc parameter (under malloc's own lock); no memory of
    // ours is involved. It fails only for an unknown parameter, which M_ARENA_MAX is not.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, arenas) };
}

/// Removes the variables the supervisor set only for this program's start-up (its
/// allocator's settings, read before `main`), so the application's `os.environ` does not see
/// them. Done only while the process has a single thread, when nothing can read the
/// environment concurrently.
fn unset_env(names: &[String]) {
    if names.is_empty() || threads_of_this_process() != Some(1) {
        return;
    }
    for name in names {
        // SAFETY: this process has one thread (checked just above, and no thread is started
        // by this loop), so no other thread reads or writes the environment meanwhile.
        unsafe { std::env::remove_var(name) };
    }
}

/// The number of threads of this process (`Threads:` of `/proc/self/status`).
fn threads_of_this_process() -> Option<u64> {
    proc_status_field("Threads:")
}

/// A numeric field of `/proc/self/status` (`VmSize:` and `VmData:` are in kB).
fn proc_status_field(name: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

/// After a failed start: answers the requests already waiting on the group's socket with
/// why (the front answers 503 with it), instead of leaving them to wait for a process that
/// cannot start. Bounded: what is queued now, for 2 s at most.
fn refuse_waiting(listener: OwnedFd, why: &str) {
    let listener = UnixListener::from(listener);
    if listener.set_nonblocking(true).is_err() {
        return;
    }
    let end = encode_end(&End::StartFailed(why.to_string()));
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let Ok((conn, _)) = listener.accept() else {
            break;
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let wait = Some(left.clamp(Duration::from_millis(1), Duration::from_millis(500)));
        let _ = conn.set_nonblocking(false);
        let _ = conn.set_read_timeout(wait);
        let _ = conn.set_write_timeout(wait);
        // The request first, so the front never writes to a socket closed under it.
        if let Ok(Some((kind::REQUEST, _))) = FrameReader::new(&conn).next_frame() {
            let _ = (&conn).write_all(&end);
        }
    }
}

/// The stack of the process's own threads (reactor, signals, GIL probe, startup watch): they
/// run no application code, so they need far less than a worker.
const HELPER_STACK: usize = 256 * 1024;

/// What to change when `source` (a thread or Python that could not start) is likely a memory
/// limit's doing: ENOMEM or EAGAIN while `memory-limit=` or `virtual-memory-limit=` is set.
/// Empty otherwise.
fn limit_hint(spec: &ProcessSpec, source: &io::Error) -> String {
    let by_limit = matches!(
        source.raw_os_error(),
        Some(libc::EAGAIN) | Some(libc::ENOMEM)
    );
    if !by_limit || (spec.options.memory_limit == 0 && spec.options.virtual_memory_limit == 0) {
        return String::new();
    }
    // Enough for either program (wsgi serve's `wsgi` needs the more).
    let floor = wsgi_config::daemon::memory_floor(
        wsgi_config::daemon::DaemonProgram::Wsgi,
        spec.options.threads,
        spec.options.stack_size,
    );
    let stacks = u64::from(spec.options.threads.max(1))
        * spec
            .options
            .stack_size
            .unwrap_or(wsgi_config::daemon::WORKER_STACK as u64);
    let limits = [
        (
            "memory-limit",
            "RLIMIT_DATA",
            spec.options.memory_limit,
            floor.data,
            "VmData:",
            "data",
        ),
        (
            "virtual-memory-limit",
            "RLIMIT_AS",
            spec.options.virtual_memory_limit,
            floor.address_space,
            "VmSize:",
            "address space",
        ),
    ];
    let mut advice = Vec::new();
    for (option, rlimit, limit, least, field, what) in limits {
        if limit == 0 {
            continue;
        }
        // The kernel's kB are KiB.
        let had = proc_status_field(field)
            .map_or("?".to_string(), |kb| (kb * 1024 / 1_000_000).to_string());
        let fix = if limit < least {
            format!("set it to at least {least}, plus what the application needs")
        } else {
            format!(
                "the application and its preloaded scripts hold the rest: raise it by at least {stacks} bytes (the worker threads' stacks), or lower threads="
            )
        };
        advice.push(format!(
            "{option}={limit} ({rlimit}; the process held {had} MB of {what}, {} in /proc/PID/status, when this failed): {fix}",
            field.trim_end_matches(':')
        ));
    }
    format!(
        "; its memory limit is too small for it to start (Python and {} worker threads): {}; or remove the limit",
        spec.options.threads.max(1),
        advice.join("; ")
    )
}

/// [`limit_hint`] for Python's start-up errors.
fn python_hint(spec: &ProcessSpec, source: &wsgi_interp::StartError) -> String {
    match source {
        wsgi_interp::StartError::Thread(e) => limit_hint(spec, e),
        wsgi_interp::StartError::Init { message, .. } if message.contains("memory") => {
            limit_hint(spec, &io::Error::from_raw_os_error(libc::ENOMEM))
        }
        wsgi_interp::StartError::Setup(e) if e.type_name == "MemoryError" => {
            limit_hint(spec, &io::Error::from_raw_os_error(libc::ENOMEM))
        }
        _ => String::new(),
    }
}

fn thread_err(spec: &ProcessSpec, thread: &str, source: io::Error) -> ProcessError {
    ProcessError::Thread {
        group: spec.group.clone(),
        thread: thread.to_string(),
        hint: limit_hint(spec, &source),
        source,
    }
}

fn setup_err(group: &str, source: io::Error) -> ProcessError {
    ProcessError::Setup {
        group: group.to_string(),
        source,
    }
}

/// Sends reports to the supervisor without ever blocking the process on it.
struct Reporter {
    control: UnixStream,
}

impl Reporter {
    fn new(control: UnixStream) -> Self {
        let _ = control.set_nonblocking(true);
        Reporter { control }
    }

    fn send(&self, report: &Report) {
        let _ = (&self.control).write_all(report.to_line().as_bytes());
    }

    /// True once the supervisor's end is closed (it died or dropped us).
    fn supervisor_gone(&self) -> bool {
        let mut buf = [0u8; 64];
        matches!(io::Read::read(&mut &self.control, &mut buf), Ok(0))
    }
}

/// Process-wide set-up in mod_wsgi's order: process title, CPU priority, groups, user, cwd,
/// umask, resource limits, then Python, the preloads and the threads.
fn start(
    spec: &ProcessSpec,
    listener: OwnedFd,
    report: Reporter,
    signals: SigSet,
) -> Result<Arc<Shared>, ProcessError> {
    let group = spec.group.clone();
    if let Some(title) = &spec.display_name {
        // The kernel keeps 15 bytes; argv[0] already carries the full title (set by exec).
        let short: Vec<u8> = title.bytes().filter(|b| *b != 0).take(15).collect();
        if let Ok(name) = std::ffi::CString::new(short) {
            let _ = nix::sys::prctl::set_name(&name);
        }
    }
    // Before the identity switch: only root may raise the priority (a negative nice value).
    crate::limits::apply_priority(&group, spec.options.cpu_priority);
    if let Some(id) = &spec.identity {
        drop_privileges(&group, id)?;
    }
    if Uid::effective().is_root() {
        return Err(ProcessError::Root(group));
    }
    // After the credential change (which clears it): die with the supervisor.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
    if nix::unistd::getppid().as_raw() != spec.supervisor_pid {
        return Err(setup_err(
            &group,
            io::Error::other("the supervisor exited while this process started"),
        ));
    }
    if let Some(home) = &spec.options.home {
        std::env::set_current_dir(home).map_err(|source| ProcessError::Home {
            group: group.clone(),
            home: home.clone(),
            source,
        })?;
    }
    if let Some(mask) = spec.options.umask {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    crate::limits::apply_rlimits(spec);
    let mut python_path = Vec::new();
    if let Some(home) = &spec.options.home {
        python_path.push(home.clone());
    }
    python_path.extend(spec.options.python_path.iter().cloned());
    if let Some(version) = spec.apache_version {
        wsgi_interp::set_apache_version(version);
    }
    let runtime = Runtime::start_with(
        &StartConfig {
            python_home: spec.python_home.clone(),
            python_path,
            optimize: spec.optimize,
            dont_write_bytecode: spec.dont_write_bytecode,
            process_group: group.clone(),
            maximum_processes: spec.options.processes,
            threads_per_process: spec.options.threads,
            interpreter_rules: spec.interpreter_rules.clone(),
        },
        &wsgi_interp::InterpreterOptions {
            per_interpreter_gil: spec.per_interpreter_gil,
        },
    )
    .map_err(|source| ProcessError::Python {
        group: group.clone(),
        hint: python_hint(spec, &source),
        source,
    })?;

    let listener = UnixListener::from(listener);
    listener
        .set_nonblocking(true)
        .map_err(|e| setup_err(&group, e))?;
    let epoll =
        Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| setup_err(&group, e.into()))?;
    epoll
        .add(&listener, EpollEvent::new(listener_flags(), LISTENER))
        .map_err(|e| setup_err(&group, e.into()))?;
    let threads = spec.options.threads.max(1) as usize;
    let (jobs_tx, jobs_rx) = crossbeam_channel::unbounded();
    let shared = Arc::new(Shared {
        spec: spec.clone(),
        runtime,
        epoll,
        listener: Mutex::new(Some(listener)),
        listener_armed: AtomicBool::new(true),
        idle: Mutex::new(HashMap::new()),
        next_token: AtomicU64::new(FIRST_CONN),
        jobs: jobs_tx,
        free: AtomicIsize::new(threads as isize),
        report,
        draining: AtomicBool::new(false),
        served: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
        running: (0..threads).map(|_| Mutex::new(None)).collect(),
        process_options: CallOptions {
            process_group: spec.group.clone(),
            multithread: spec.options.threads != 1,
            multiprocess: spec.options.processes_given,
            run_once: spec.options.threads == 1 && spec.options.maximum_requests == 1,
            pass_authorization: false,
        },
        inactivity: Mutex::new(InactivityTimer::new(spec.options.inactivity_timeout)),
        startup: Mutex::new(StartupTimer::new(spec.options.startup_timeout)),
        gil_seen: Mutex::new(Instant::now()),
        recycle: Mutex::new(None),
        signal: Mutex::new(None),
        prepared: Mutex::new(HashSet::new()),
        serving: AtomicBool::new(false),
    });
    // The main interpreter exists already: set it up now (the GIL probe uses it).
    if let Ok(main) = shared.runtime.interpreter("") {
        shared.prepare(&main);
    }
    let spawn = |name: &str, stack: usize, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name.to_string())
            .stack_size(stack)
            .spawn(f)
            .map(drop)
            .map_err(|e| thread_err(spec, name, e))
    };
    let helper = |name: &str, run: fn(Arc<Shared>)| {
        let s = shared.clone();
        spawn(name, HELPER_STACK, Box::new(move || run(s)))
    };
    if !spec.options.startup_timeout.is_zero() && !spec.preload.is_empty() {
        helper("wsgi-startup-watch", Shared::startup_watch)?;
    }
    // mod_wsgi loads these on the main thread before any request is accepted.
    shared.preload()?;
    let worker_stack = spec
        .options
        .stack_size
        .map_or(wsgi_config::daemon::WORKER_STACK, |s| s as usize);
    for i in 0..threads {
        let s = shared.clone();
        let rx = jobs_rx.clone();
        spawn(
            &format!("wsgi-worker-{i}"),
            worker_stack,
            Box::new(move || s.worker(i, rx)),
        )?;
    }
    helper("wsgi-reactor", Shared::reactor)?;
    if !spec.options.deadlock_timeout.is_zero() {
        helper("wsgi-gil-probe", Shared::gil_probe)?;
    }
    let s = shared.clone();
    spawn(
        "wsgi-signals",
        HELPER_STACK,
        Box::new(move || s.wait_signals(signals)),
    )?;
    shared.serving.store(true, Ordering::SeqCst);
    shared.report.send(&Report::Ready);
    tracing::info!(
        group = %spec.group,
        pid = std::process::id(),
        threads,
        "daemon process ready"
    );
    Ok(shared)
}

fn drop_privileges(group: &str, id: &Identity) -> Result<(), ProcessError> {
    let fail = |what: String, source: nix::Error| ProcessError::Privileges {
        group: group.to_string(),
        what,
        source,
    };
    if id.uid == 0 {
        return Err(ProcessError::Root(group.to_string()));
    }
    let gid = Gid::from_raw(id.gid);
    nix::unistd::setgid(gid).map_err(|e| fail(format!("group id {}", id.gid), e))?;
    match &id.supplementary {
        Some(gids) => {
            let gids: Vec<Gid> = gids.iter().map(|g| Gid::from_raw(*g)).collect();
            nix::unistd::setgroups(&gids)
                .map_err(|e| fail(format!("supplementary groups {gids:?}"), e))?
        }
        None => {
            let name =
                std::ffi::CString::new(id.user_name.trim_start_matches('#')).unwrap_or_default();
            if id.user_name.starts_with('#') {
                nix::unistd::setgroups(&[gid])
                    .map_err(|e| fail(format!("supplementary groups [{gid}]"), e))?
            } else {
                nix::unistd::initgroups(&name, gid)
                    .map_err(|e| fail(format!("the groups of user {}", id.user_name), e))?
            }
        }
    }
    nix::unistd::setuid(Uid::from_raw(id.uid))
        .map_err(|e| fail(format!("user {} (uid {})", id.user_name, id.uid), e))?;
    if Uid::effective().is_root() || Uid::current().is_root() {
        return Err(ProcessError::Root(group.to_string()));
    }
    Ok(())
}

const LISTENER: u64 = 0;
const FIRST_CONN: u64 = 1;

fn listener_flags() -> EpollFlags {
    EpollFlags::EPOLLIN | EpollFlags::EPOLLONESHOT
}

fn conn_flags() -> EpollFlags {
    EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLONESHOT
}

/// Why a process is draining.
#[derive(Debug, Clone)]
struct Drain {
    reason: String,
    /// How long running requests get.
    grace: Duration,
}

/// A request a worker runs: since when, on which thread (its pthread id, Python's
/// `threading.get_ident()`), in which application group, and when `RequestTimeout` was raised
/// in it (interrupt-timeout).
struct Running {
    started: Instant,
    thread: u64,
    group: String,
    interrupted: Option<Instant>,
}

struct Shared {
    spec: ProcessSpec,
    runtime: Runtime,
    epoll: Epoll,
    listener: Mutex<Option<UnixListener>>,
    listener_armed: AtomicBool,
    /// Idle connections, registered (one-shot) with the poller, by token.
    idle: Mutex<HashMap<u64, (UnixStream, bool)>>,
    next_token: AtomicU64,
    jobs: crossbeam_channel::Sender<(u64, UnixStream, bool)>,
    /// Workers not busy and not promised to a freshly accepted connection (negative: work
    /// is queued). The listener is polled only while this is positive.
    free: AtomicIsize,
    report: Reporter,
    draining: AtomicBool,
    served: AtomicU64,
    in_flight: AtomicUsize,
    /// Per worker: when its current request started.
    running: Vec<Mutex<Option<Running>>>,
    /// What every call in this process runs with (`mod_wsgi.process_group`, `wsgi.multithread`
    /// ...); a request adds its own `WSGIPassAuthorization` ([`wsgi_interp::AppCall::options`]).
    process_options: CallOptions,
    /// inactivity-timeout: activity is a request starting or ending.
    inactivity: Mutex<InactivityTimer>,
    /// startup-timeout: from the first request waiting until a WSGI script has loaded
    /// (preloaded or for a request).
    startup: Mutex<StartupTimer>,
    gil_seen: Mutex<Instant>,
    recycle: Mutex<Option<Drain>>,
    /// The last stop or restart signal received (SIGTERM stands for every stop signal).
    signal: Mutex<Option<Signal>>,
    /// Interpreters (by application group) already given the per-interpreter settings.
    prepared: Mutex<HashSet<String>>,
    /// Preloading is over and the workers are running.
    serving: AtomicBool,
}

enum After {
    Keep(UnixStream),
    Close,
}

impl Shared {
    fn reactor(self: Arc<Self>) {
        let mut events = vec![EpollEvent::empty(); 64];
        loop {
            let n = match self.epoll.wait(&mut events, EpollTimeout::from(100u16)) {
                Ok(n) => n,
                Err(nix::Error::EINTR) => continue,
                Err(e) => {
                    tracing::error!(group = %self.spec.group, "poller failed: {e}; stopping");
                    self.request_drain("poller failure", Duration::ZERO);
                    return;
                }
            };
            for ev in &events[..n] {
                if ev.data() == LISTENER {
                    self.accept_ready();
                } else if let Some((conn, reserved)) = self.idle.lock().remove(&ev.data()) {
                    // A worker picks it up (a closed connection reads as end of stream).
                    let _ = self.jobs.send((ev.data(), conn, reserved));
                }
            }
        }
    }

    /// Accepts as many connections as there are idle workers, then re-arms the listener
    /// only if a worker is still idle (a worker re-arms it when it becomes idle).
    fn accept_ready(&self) {
        let guard = self.listener.lock();
        let Some(listener) = guard.as_ref() else {
            return;
        };
        while self.free.load(Ordering::SeqCst) > 0 {
            match listener.accept() {
                Ok((conn, _)) => {
                    crate::client::set_buffer_sizes(
                        &conn,
                        self.spec.options.send_buffer_size,
                        self.spec.options.receive_buffer_size,
                    );
                    // This connection's first request has a worker promised to it.
                    self.free.fetch_sub(1, Ordering::SeqCst);
                    let token = self.next_token.fetch_add(1, Ordering::Relaxed);
                    if !self.register(token, conn, true) {
                        self.free.fetch_add(1, Ordering::SeqCst);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!(group = %self.spec.group, "accept failed: {e}");
                    break;
                }
            }
        }
        self.listener_armed.store(false, Ordering::SeqCst);
        if self.free.load(Ordering::SeqCst) > 0 {
            self.arm_listener(&guard);
        }
    }

    fn arm_listener(&self, guard: &Option<UnixListener>) {
        if self.draining.load(Ordering::SeqCst) {
            return;
        }
        if let Some(listener) = guard.as_ref() {
            if !self.listener_armed.swap(true, Ordering::SeqCst) {
                let mut ev = EpollEvent::new(listener_flags(), LISTENER);
                let _ = self.epoll.modify(listener, &mut ev);
            }
        }
    }

    /// Hands `conn` to the poller; false if it was dropped instead.
    fn register(&self, token: u64, conn: UnixStream, new: bool) -> bool {
        if self.draining.load(Ordering::SeqCst) {
            return false;
        }
        let mut idle = self.idle.lock();
        let mut ev = EpollEvent::new(conn_flags(), token);
        let ok = if new {
            self.epoll.add(&conn, ev).is_ok()
        } else {
            self.epoll.modify(&conn, &mut ev).is_ok()
        };
        if ok {
            idle.insert(token, (conn, new));
        }
        ok
    }

    fn worker(
        self: Arc<Self>,
        index: usize,
        jobs: crossbeam_channel::Receiver<(u64, UnixStream, bool)>,
    ) {
        while let Ok((token, conn, reserved)) = jobs.recv() {
            if !reserved {
                self.free.fetch_sub(1, Ordering::SeqCst);
            }
            match crate::panics::catch(|| self.serve_connection(index, conn)) {
                Ok(After::Keep(conn)) => {
                    self.register(token, conn, false);
                }
                Ok(After::Close) => {}
                Err(panic) => self.worker_panicked(index, &panic),
            }
            let free = self.free.fetch_add(1, Ordering::SeqCst) + 1;
            if free > 0 && !self.listener_armed.load(Ordering::SeqCst) {
                let guard = self.listener.lock();
                self.arm_listener(&guard);
            }
        }
        Runtime::release_thread();
    }

    /// Serves the one request waiting on `conn`.
    fn serve_connection(&self, index: usize, conn: UnixStream) -> After {
        let group = &self.spec.group;
        let timeout = (!self.spec.options.socket_timeout.is_zero())
            .then_some(self.spec.options.socket_timeout);
        let _ = conn.set_read_timeout(timeout);
        let mut reader = FrameReader::new(&conn);
        let request = match reader.next_frame() {
            Ok(None) => return After::Close,
            Ok(Some((kind::REQUEST, payload))) => match protocol::decode_request(payload) {
                Ok(mut r) => {
                    // `mod_wsgi.daemon_start`: when this process took the request.
                    r.head.stamps.daemon_start_us = now_us();
                    r
                }
                Err(e) => {
                    tracing::warn!(%group, "refusing a request from the front: {e}");
                    return After::Close;
                }
            },
            Ok(Some((other, _))) => {
                tracing::warn!(
                    %group,
                    "{}",
                    ProtocolError::Unexpected {
                        got: other,
                        expected: "REQUEST"
                    }
                );
                return After::Close;
            }
            Err(e) => {
                tracing::debug!(%group, "front connection ended: {e}");
                return After::Close;
            }
        };
        let send_end = |end: &End| (&conn).write_all(&encode_end(end)).is_ok();
        if self.draining.load(Ordering::SeqCst) {
            send_end(&End::Rejected(RejectReason::Draining));
            return After::Close;
        }
        if !self.spec.options.queue_timeout.is_zero() {
            let waited = now_us().saturating_sub(request.queued_at_us);
            if waited > self.spec.options.queue_timeout.as_micros() as u64 {
                tracing::warn!(
                    %group,
                    "request waited {:.3}s for a worker, more than queue-timeout: 503",
                    waited as f64 / 1e6
                );
                return if send_end(&End::QueueTimeout) {
                    After::Keep(conn)
                } else {
                    After::Close
                };
            }
        }
        if write_raw(&mut &conn, kind::ACCEPTED, &[]).is_err() {
            return After::Close;
        }
        let started = Instant::now();
        self.request_waiting(started);
        *self.running[index].lock() = Some(Running {
            started,
            // SAFETY: pthread_self has no preconditions.
            thread: unsafe { libc::pthread_self() } as u64,
            group: request.app.application_group.clone(),
            interrupted: None,
        });
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.inactivity.lock().activity(started);

        let app = &request.app;
        let opts = app.options(&self.process_options);
        let keep = {
            let mut body = WireBody {
                conn: &conn,
                reader: FrameReader::new(&conn),
                pending: Vec::new(),
                pos: 0,
                ended: false,
                broken: false,
            };
            let mut sink = WireSink {
                out: BufWriter::with_capacity(CHUNK + 64, &conn),
            };
            let outcome = match self.runtime.interpreter(&app.application_group) {
                Ok(interp) => {
                    self.prepare(&interp);
                    let outcome =
                        interp.call(&app.script, &request.head, &opts, &mut body, &mut sink);
                    // A missing file (404) says nothing about whether the app can load.
                    if !matches!(outcome, Outcome::Script(_) | Outcome::Unavailable(_)) {
                        self.script_loaded();
                    }
                    outcome
                }
                Err(e) => Outcome::Unavailable(e),
            };
            let broken = body.broken;
            let mut out = sink.out;
            match outcome {
                Outcome::ClientGone { .. } => false,
                Outcome::ScriptChanged => {
                    tracing::info!(%group, script = %app.script.path.display(), "WSGI script changed: restarting this process");
                    self.request_drain("script changed", self.spec.options.graceful_timeout);
                    let _ = out.write_all(&encode_end(&End::Rejected(RejectReason::ScriptChanged)));
                    let _ = out.flush();
                    false
                }
                outcome => {
                    let end = End::Ran(outcome);
                    out.write_all(&encode_end(&end)).is_ok() && out.flush().is_ok() && !broken
                }
            }
        };
        *self.running[index].lock() = None;
        self.inactivity.lock().activity(Instant::now());
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        let served = self.served.fetch_add(1, Ordering::SeqCst) + 1;
        let max = self.spec.options.maximum_requests;
        if max > 0 && served >= max {
            self.request_drain(
                &format!("maximum-requests ({max}) reached"),
                self.spec.options.graceful_timeout,
            );
        }
        if keep && !self.draining.load(Ordering::SeqCst) {
            After::Keep(conn)
        } else {
            After::Close
        }
    }

    /// After a panic in worker `index`: its request is lost (the front answers 502 for the
    /// closed connection), its bookkeeping is undone, and the process is replaced gracefully,
    /// since the panic may have left state shared with the other threads half-updated. The
    /// thread itself keeps serving until the replacement takes over.
    fn worker_panicked(&self, index: usize, panic: &str) {
        tracing::error!(
            group = %self.spec.group,
            "a worker thread panicked: {panic}; its request failed, restarting this process"
        );
        if self.running[index].lock().take().is_some() {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
        self.request_drain(
            "a worker thread panicked",
            self.spec.options.graceful_timeout,
        );
    }

    /// Stops taking requests at once (idle connections are closed, new requests on busy
    /// ones rejected), tells the supervisor to start the replacement, and leaves the rest
    /// of the drain to the monitor.
    fn request_drain(&self, reason: &str, grace: Duration) {
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
        // Idle front connections are closed; a front retries them elsewhere (no ACCEPTED).
        self.idle.lock().clear();
    }

    /// Applies the per-interpreter settings (`switch-interval`) to an interpreter the first
    /// time it is used.
    fn prepare(&self, interp: &InterpreterHandle) {
        let Some(interval) = self.spec.switch_interval else {
            return;
        };
        if self.prepared.lock().contains(interp.group()) {
            return;
        }
        let code = format!("__import__('sys').setswitchinterval({interval:?})");
        match interp.run(|py| py.exec(&code)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(
                group = %self.spec.group,
                application_group = %interp.group(),
                "switch-interval={interval} was not applied: {e}"
            ),
            // The interpreter is unusable: the request that follows reports it.
            Err(_) => return,
        }
        self.prepared.lock().insert(interp.group().to_string());
    }

    /// Loads the [`ProcessSpec::preload`] scripts, in order, stopping early if the process
    /// is told to stop. A failure is logged, or, with [`ProcessSpec::preload_must_succeed`],
    /// returned.
    fn preload(&self) -> Result<(), ProcessError> {
        let group = &self.spec.group;
        for p in &self.spec.preload {
            if self.draining.load(Ordering::SeqCst) {
                return Ok(());
            }
            let mut script = ScriptSpec::new(p.script.clone());
            if let Some(callable) = &p.callable {
                script.callable = callable.clone();
            }
            let loaded = self
                .runtime
                .interpreter(&p.application_group)
                .map_err(wsgi_interp::ScriptError::from)
                .and_then(|interp| {
                    self.prepare(&interp);
                    match interp.load_script(&script) {
                        // An import script needs no WSGI callable: it ran.
                        Err(wsgi_interp::ScriptError::MissingCallable { .. })
                            if p.callable.is_none() =>
                        {
                            Ok(())
                        }
                        other => other.map(drop),
                    }
                });
            match loaded {
                Ok(()) => {
                    self.script_loaded();
                    tracing::info!(%group, script = %p.script.display(), application_group = %p.application_group, "preloaded");
                }
                Err(e) if self.spec.preload_must_succeed => {
                    let why = match &e {
                        wsgi_interp::ScriptError::Raised { error, .. } => {
                            format!("{error} (the traceback is above)")
                        }
                        other => other.to_string(),
                    };
                    return Err(ProcessError::Preload {
                        group: group.clone(),
                        script: p.script.clone(),
                        why,
                    });
                }
                Err(e) => tracing::error!(
                    %group,
                    script = %p.script.display(),
                    application_group = %p.application_group,
                    "preloading failed: {e}"
                ),
            }
        }
        Ok(())
    }

    /// A request is waiting for this process (since `at`): starts startup-timeout if no
    /// script has loaded yet.
    fn request_waiting(&self, at: Instant) {
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
    fn script_loaded(&self) {
        if self.startup.lock().script_loaded() {
            tracing::info!(group = %self.spec.group, pid = std::process::id(), "application startup timer cancelled: a WSGI script has loaded");
        }
    }

    /// startup-timeout while the main thread preloads (the monitor takes over once the
    /// process serves): the process accepts nothing yet, so a request for it waits on the
    /// group's socket; once one has waited there ([`BacklogWatch`]) the timer starts, and if
    /// it expires before a script has loaded, the process is replaced at once (a script that
    /// hangs at import; no request has been accepted, so none is lost).
    fn startup_watch(self: Arc<Self>) {
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

    /// The signal thread: SIGTERM/SIGINT (and SIGHUP) stop, SIGUSR1 and SIGXCPU restart
    /// gracefully; the monitor acts on them.
    fn wait_signals(self: Arc<Self>, signals: SigSet) {
        while let Ok(sig) = signals.wait() {
            let mut s = self.signal.lock();
            // A stop wins over a graceful restart.
            if *s != Some(Signal::SIGTERM) {
                *s = Some(match sig {
                    Signal::SIGUSR1 | Signal::SIGXCPU => sig,
                    _ => Signal::SIGTERM,
                });
            }
        }
    }

    fn gil_probe(self: Arc<Self>) {
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
    fn serve(self: Arc<Self>) -> i32 {
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

    fn timed_out(&self, now: Instant, limit: Duration) -> usize {
        self.running
            .iter()
            .filter(|r| {
                r.lock()
                    .as_ref()
                    .is_some_and(|s| now.duration_since(s.started) >= limit)
            })
            .count()
    }

    fn drain(&self, drain: &Drain) -> i32 {
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

/// The request body, pulled from the front one BODY_WANTED at a time.
struct WireBody<'a> {
    conn: &'a UnixStream,
    reader: FrameReader<&'a UnixStream>,
    pending: Vec<u8>,
    pos: usize,
    ended: bool,
    broken: bool,
}

impl RequestBody for WireBody<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.pos < self.pending.len() {
            let n = buf.len().min(self.pending.len() - self.pos);
            buf[..n].copy_from_slice(&self.pending[self.pos..self.pos + n]);
            self.pos += n;
            return Ok(n);
        }
        if self.ended {
            return Ok(0);
        }
        if self.broken {
            return Err(io::Error::other("the front connection failed"));
        }
        let want = buf.len().min(CHUNK) as u32;
        let result = (|| {
            let mut conn = self.conn;
            conn.write_all(&encode_body_wanted(want))?;
            match self.reader.next_frame() {
                Ok(Some((kind::BODY, chunk))) if !chunk.is_empty() => {
                    let n = buf.len().min(chunk.len());
                    buf[..n].copy_from_slice(&chunk[..n]);
                    self.pending.clear();
                    self.pending.extend_from_slice(&chunk[n..]);
                    self.pos = 0;
                    Ok(n)
                }
                Ok(Some((kind::BODY_END, _))) => {
                    self.ended = true;
                    Ok(0)
                }
                Ok(Some((kind::BODY_ERROR, msg))) => {
                    self.ended = true;
                    Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        format!(
                            "reading the request body failed: {}",
                            String::from_utf8_lossy(msg)
                        ),
                    ))
                }
                Ok(Some((other, _))) => Err(io::Error::other(ProtocolError::Unexpected {
                    got: other,
                    expected: "BODY, BODY_END or BODY_ERROR",
                })),
                Ok(None) => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the front closed the connection during the request body",
                )),
                Err(ProtocolError::Io(e)) => Err(e),
                Err(e) => Err(io::Error::other(e)),
            }
        })();
        if let Err(e) = &result {
            if e.kind() != io::ErrorKind::ConnectionAborted {
                self.broken = true;
            }
        }
        result
    }
}

/// The response, as START/DATA frames (START is sent with the first DATA or the END).
struct WireSink<'a> {
    out: BufWriter<&'a UnixStream>,
}

impl ResponseSink for WireSink<'_> {
    fn start(
        &mut self,
        status: u16,
        reason: &str,
        headers: Vec<(String, Vec<u8>)>,
    ) -> io::Result<()> {
        self.out.write_all(&encode_start(status, reason, &headers))
    }

    fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        for part in chunk.chunks(CHUNK) {
            write_raw(&mut self.out, kind::DATA, part)?;
        }
        self.out.flush()
    }
}
