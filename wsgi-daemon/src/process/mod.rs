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
//!   `Drain`: stop accepting, tell the supervisor (which starts the replacement at once),
//!   finish what is running, exit.
//!
//! Files: `start.rs` (privileges, limits, Python, preloads, threads), `reactor.rs` (epoll on
//! the listener and idle connections), `worker.rs` (one request per connection turn),
//! `wire.rs` (the request body and response over the frames), `monitor.rs` (the main
//! thread's triggers and the GIL probe), `drain.rs` (stopping and exiting), `signals.rs`
//! (the signal thread). This file holds the entry points and `Shared`, the state every
//! thread sees.

mod drain;
mod monitor;
mod reactor;
mod signals;
mod start;
mod wire;
mod worker;

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, AtomicUsize};
use std::time::Instant;

use nix::sys::epoll::Epoll;
use nix::sys::signal::Signal;
use parking_lot::Mutex;
use wsgi_interp::{CallOptions, Runtime};

use crate::spec::{HandoverError, ProcessSpec, Report, receive_spec};
use crate::timers::{InactivityTimer, StartupTimer};
use drain::Drain;
use start::{limit_malloc_arenas, refuse_waiting, setup_err, start, unset_env};

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
    let signals = signals::block_signals().map_err(|e| setup_err("", io::Error::from(e)))?;

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

/// A request a worker runs: since when, on which thread (its pthread id, Python's
/// `threading.get_ident()`), in which application group, and when `RequestTimeout` was raised
/// in it (interrupt-timeout).
struct Running {
    started: Instant,
    thread: u64,
    group: String,
    interrupted: Option<Instant>,
}

/// A connection from the front, with the response buffer made for it
/// ([`crate::shared_buffer`]), if any.
struct FrontConn {
    stream: UnixStream,
    buffer: BufferState,
}

/// Whether a front connection has a response buffer.
enum BufferState {
    /// None made yet.
    None,
    /// Made, and handed to the front.
    Made(crate::shared_buffer::ResponseBuffer),
    /// Making one failed: chunks go through the socket.
    Failed,
}

impl FrontConn {
    fn new(stream: UnixStream) -> Self {
        FrontConn {
            stream,
            buffer: BufferState::None,
        }
    }
}

struct Shared {
    spec: ProcessSpec,
    runtime: Runtime,
    epoll: Epoll,
    listener: Mutex<Option<UnixListener>>,
    listener_armed: AtomicBool,
    /// Idle connections, registered (one-shot) with the poller, by token.
    idle: Mutex<HashMap<u64, (FrontConn, bool)>>,
    next_token: AtomicU64,
    jobs: std::sync::Arc<crate::job_queue::JobQueue<(u64, FrontConn, bool)>>,
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
