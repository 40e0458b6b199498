//! `wsgi serve`: the standalone HTTP server, in embedded and daemon mode.
//!
//! Architecture:
//!
//! * [`front`]: hyper 1 HTTP/1.1 connections on a small tokio runtime. Each request is routed
//!   by `wsgi_config::Config::route` (one code path for `--config site.conf` and for
//!   `wsgi serve app.wsgi`, whose flags are turned into mod_wsgi directives by [`site`]) or
//!   served from a static `--url-alias` folder.
//! * [`pool`]: N Python worker threads fed through a bounded crossbeam channel; admission waits
//!   at most the queue timeout, then 503. tokio threads never touch Python.
//! * [`bridge`]: the request and response bodies stream between the two sides through bounded
//!   channels (backpressure both ways); a client that leaves makes the app's next write fail,
//!   so its `close()` runs; an app failing mid-body aborts the connection.
//! * [`daemons`]: daemon mode. Routes that name a `WSGIDaemonProcess` group (from
//!   `--config`, or the group `wsgi serve --processes N` generates) go to a front pool of
//!   that group, whose threads run them in the group's daemon processes through
//!   `wsgi_daemon::DaemonClient`; the processes are started (by exec of this program as
//!   `wsgi daemon-process`) and kept running by a `wsgi_daemon::Supervisor`. This process
//!   starts its own Python only when some mount runs embedded.
//! * [`status`]: the opt-in `--status-addr` endpoint `wsgi status` reads.
//! * [`access_log`]: Apache combined format, from a thread of its own.
//!
//! Signals: SIGTERM/SIGINT stop accepting, let in-flight requests finish (up to
//! `--graceful-timeout`), stop the workers, stop the daemon processes (none is left, nor any
//! socket file), shut Python down (atexit) and exit 0. SIGHUP re-reads the configuration
//! and, when it is valid, reloads it and every application without dropping a request:
//! * with embedded mounts (or changed `Listen` addresses), by a restart in place: in-flight
//!   requests finish, then the program execs itself (same process id) keeping its listening
//!   sockets open ([`inherit`]), so connections made meanwhile wait in the listen queue;
//! * in daemon mode only, a new set of daemon groups is started first, requests move to it,
//!   and the old set is stopped once the requests it runs are done (at most
//!   `--graceful-timeout`). A reload that cannot start the new daemons is refused and the
//!   previous configuration stays.
//!
//! An invalid configuration is refused with `wsgi check`'s messages, and the server keeps
//! serving the previous one.

pub mod access_log;
pub mod bridge;
pub mod daemons;
pub mod error;
pub mod front;
#[allow(unsafe_code)]
pub mod inherit;
pub mod pool;
pub mod reload;
#[allow(unsafe_code)]
pub mod sendfile;
pub mod site;
pub mod status;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use parking_lot::RwLock;
use wsgi_config::reader::ReadOptions;

use daemons::DaemonSet;
pub use error::ServeError;
use front::{Front, Limits, Listener};
use pool::{AppHost, PythonHost, WorkerPool};
use site::{AppFlags, DaemonFlags, Site, SiteSource, UrlAlias};

/// `--log-level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    /// Failures only.
    Error,
    /// Failures and things worth a look (503s, slow shutdowns).
    Warn,
    /// Start-up, reloads and every refused request.
    Info,
    /// Per-connection detail.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    fn filter(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// The flags of `wsgi serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The WSGI script to serve at `/` (a .wsgi or .py file defining `application`).
    pub app: Option<PathBuf>,
    /// Serve an Apache mod_wsgi configuration instead: its `Listen` ports, virtual hosts,
    /// `WSGIScriptAlias` mounts, application groups and `WSGIDaemonProcess` groups.
    #[arg(long, conflicts_with_all = ["app", "mount", "python_home", "python_path", "application_group", "callable_object", "processes", "user", "group"])]
    pub config: Option<PathBuf>,
    /// With --config: the ServerRoot relative paths resolve against (default: the file's folder).
    #[arg(long, requires = "config")]
    pub server_root: Option<PathBuf>,
    /// With --config: define a name for <IfDefine>, as `httpd -D NAME`.
    #[arg(short = 'D', value_name = "NAME", requires = "config")]
    pub define: Vec<String>,
    /// The address to listen on (default 127.0.0.1; with --config, the `Listen` addresses).
    #[arg(long)]
    pub host: Option<String>,
    /// The port to listen on (default 8000; 0 picks a free one, shown in the banner). With
    /// --config it replaces the `Listen` ports, and requests are routed as if they came in on
    /// the configuration's first `Listen` port.
    #[arg(long, overrides_with = "port")]
    pub port: Option<u16>,
    /// Python worker threads (requests running at once); with --processes, the threads of
    /// each daemon process.
    #[arg(long, default_value_t = 5)]
    pub threads: usize,
    /// Daemon mode: run the applications in this many daemon processes (a generated
    /// `WSGIDaemonProcess` group with --threads threads each and the --python-home and
    /// --python-path), as mod_wsgi-express does. Without it, they run in this process.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub processes: Option<u32>,
    /// With --processes: the user the daemon processes run as (needed when the server
    /// starts as root, which daemons never stay), for example `nobody` or `www-data`.
    #[arg(long, requires = "processes")]
    pub user: Option<String>,
    /// With --processes: the daemon processes' group (default: the user's).
    #[arg(long, requires = "processes")]
    pub group: Option<String>,
    /// Serve the daemon groups' status on this loopback address (`/status`, `/status.json`,
    /// Prometheus `/metrics`), for `wsgi status --status-addr ADDR`. Off by default.
    #[arg(long, value_name = "IP:PORT")]
    pub status_addr: Option<SocketAddr>,
    /// Requests that may wait for a worker thread beyond those running.
    #[arg(long, default_value_t = 100)]
    pub queue_size: usize,
    /// Seconds a request may wait for a worker thread before it gets 503.
    #[arg(long, default_value_t = 45.0)]
    pub queue_timeout: f64,
    /// Seconds a client may take to send its request headers (and to stay idle between
    /// keep-alive requests).
    #[arg(long, default_value_t = 15.0)]
    pub header_timeout: f64,
    /// Seconds in-flight requests get to finish on SIGTERM/SIGINT.
    #[arg(long, default_value_t = 15.0)]
    pub graceful_timeout: f64,
    /// The most bytes of request line and headers a request may have (431 beyond).
    #[arg(long, default_value_t = 65536)]
    pub max_header_size: usize,
    /// The most header fields a request may have (431 beyond).
    #[arg(long, default_value_t = 100)]
    pub max_headers: usize,
    /// The virtual environment to run (its root: what `sys.prefix` prints in it).
    #[arg(long)]
    pub python_home: Option<PathBuf>,
    /// A folder to put at the front of `sys.path` (repeatable).
    #[arg(long)]
    pub python_path: Vec<PathBuf>,
    /// The application group (sub-interpreter) to run the apps in; default `%{GLOBAL}`, the
    /// main interpreter.
    #[arg(long)]
    pub application_group: Option<String>,
    /// The name of the WSGI callable in the scripts (default `application`).
    #[arg(long)]
    pub callable_object: Option<String>,
    /// Serve another script under a URL prefix: `/api=api.wsgi` (repeatable).
    #[arg(long, value_name = "URL=SCRIPT")]
    pub mount: Vec<String>,
    /// Serve a folder of static files under a URL prefix (repeatable): `--url-alias /static ./static`.
    #[arg(long, num_args = 2, value_names = ["URL", "DIR"])]
    pub url_alias: Vec<String>,
    /// Write the access log (Apache combined format) to this file, or `-` for standard output.
    #[arg(long, value_name = "FILE|-")]
    pub access_log: Option<PathBuf>,
    /// How much the server logs (to standard error).
    #[arg(long, value_enum, default_value = "info")]
    pub log_level: LogLevel,
    /// Restart the server (gracefully) when a .py or .wsgi file below the applications'
    /// folders or python-path changes; for development.
    #[arg(long)]
    pub reload_on_changes: bool,
}

impl ServeArgs {
    fn source(&self) -> SiteSource {
        match &self.config {
            Some(path) => SiteSource::ConfigFile {
                path: path.clone(),
                options: ReadOptions {
                    server_root: self.server_root.clone(),
                    defines: self.define.iter().map(|d| (d.clone(), None)).collect(),
                    ..ReadOptions::default()
                },
            },
            None => SiteSource::CommandLine(AppFlags {
                app: self.app.clone(),
                mounts: self.mount.clone(),
                python_home: self.python_home.clone(),
                python_path: self.python_path.clone(),
                application_group: self.application_group.clone(),
                callable_object: self.callable_object.clone(),
                daemon: self.processes.map(|processes| DaemonFlags {
                    processes,
                    threads: u32::try_from(self.threads.max(1)).unwrap_or(u32::MAX),
                    user: self.user.clone(),
                    group: self.group.clone(),
                }),
            }),
        }
    }

    fn aliases(&self) -> Result<Vec<UrlAlias>, ServeError> {
        self.url_alias
            .chunks(2)
            .map(|pair| UrlAlias::new(&pair[0], std::path::Path::new(&pair[1])))
            .collect()
    }
}

/// How long the start waits for the daemon processes to report ready before the banner.
const DAEMON_READY_WAIT: Duration = Duration::from_secs(20);

fn seconds(value: f64) -> Duration {
    Duration::try_from_secs_f64(value.max(0.0)).unwrap_or(Duration::MAX)
}

/// The addresses to listen on, each with the port requests on it are routed as.
fn listen_addresses(
    args: &ServeArgs,
    site: &Site,
) -> Result<Vec<(SocketAddr, Option<u16>)>, ServeError> {
    let host: Option<IpAddr> = args
        .host
        .as_deref()
        .map(|h| h.parse().map_err(|_| ServeError::BadHost(h.to_string())))
        .transpose()?;
    let config = &site.config;
    let from_config: Vec<(Option<IpAddr>, u16)> = if !config.listen.is_empty() {
        config.listen.iter().map(|l| (l.ip, l.port)).collect()
    } else {
        // No Listen: the virtual hosts' ports.
        let mut ports: Vec<(Option<IpAddr>, u16)> = config
            .virtual_hosts
            .iter()
            .flat_map(|h| h.addresses.iter().filter_map(|a| a.port.map(|p| (a.ip, p))))
            .collect();
        ports.sort();
        ports.dedup();
        ports
    };
    let any = IpAddr::from([0, 0, 0, 0]);
    let local = IpAddr::from([127, 0, 0, 1]);
    if args.config.is_none() || from_config.is_empty() || args.port.is_some() {
        let port = args.port.unwrap_or(8000);
        let route_as = (args.config.is_some() && args.port.is_some())
            .then(|| from_config.first().map(|(_, p)| *p))
            .flatten();
        return Ok(vec![(
            SocketAddr::new(host.unwrap_or(local), port),
            route_as,
        )]);
    }
    Ok(from_config
        .into_iter()
        .map(|(ip, port)| (SocketAddr::new(host.or(ip).unwrap_or(any), port), None))
        .collect())
}

fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, ServeError> {
    let listener =
        std::net::TcpListener::bind(addr).map_err(|source| ServeError::Bind { addr, source })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| ServeError::Bind { addr, source })?;
    Ok(listener)
}

fn init_tracing(level: LogLevel) {
    let filter = tracing_subscriber::EnvFilter::new(format!(
        "{level},hyper=warn,hyper_util=warn",
        level = level.filter()
    ));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// The start-up banner: the mode, the daemon process groups with their pids, the addresses,
/// then each mount with its script, process group, application group and python-home, and
/// the static folders.
fn banner(
    site: &Site,
    addresses: &[SocketAddr],
    embedded_threads: Option<usize>,
    daemons: Option<&DaemonSet>,
    status_addr: Option<SocketAddr>,
    python: &str,
) -> String {
    let mode = match (embedded_threads, daemons) {
        (Some(t), None) => format!("embedded mode with {t} worker thread(s)"),
        (Some(t), Some(_)) => {
            format!("daemon mode, and embedded mode with {t} worker thread(s),")
        }
        (None, _) => "daemon mode".to_string(),
    };
    let mut out = format!(
        "wsgi-rs {} serving in {mode} with Python {python}\n",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(d) = daemons {
        out.push_str(&d.banner());
    }
    if let Some(a) = status_addr {
        out.push_str(&format!(
            "status on http://{a}/status (and /status.json, /metrics): wsgi status --status-addr {a}\n"
        ));
    }
    for a in addresses {
        out.push_str(&format!("listening on http://{a}/\n"));
    }
    let mounts = site.mounts();
    let show_hosts = !site.config.virtual_hosts.is_empty();
    let mut host = "";
    for m in &mounts {
        if show_hosts && m.host != host {
            out.push_str(&format!("{}\n", m.host));
            host = &m.host;
        }
        let home = m.python_home.as_ref().map_or_else(
            || "(the embedded Python itself)".to_string(),
            |h| h.display().to_string(),
        );
        out.push_str(&format!(
            "  {} -> {}\n      process group: {}   application group: {}   python-home: {}\n",
            m.mount, m.script, m.process_group, m.application_group, home
        ));
    }
    for a in &site.aliases {
        out.push_str(&format!(
            "  {} -> {} (static files)\n",
            a.url,
            a.dir.display()
        ));
    }
    out
}

/// Runs `wsgi serve` until SIGTERM/SIGINT. Start-up problems are returned before anything is
/// served; after that the server only stops on a signal.
pub fn run(args: ServeArgs) -> Result<(), ServeError> {
    init_tracing(args.log_level);
    let aliases = args.aliases()?;
    let site = Site::load(args.source(), aliases.clone())?;
    for w in &site.warnings {
        tracing::warn!("{w}");
    }
    let addresses = listen_addresses(&args, &site)?;
    // After a restart in place, the sockets the previous program listened on.
    let mut inherited = inherit::take();
    let mut sockets = Vec::new();
    for (addr, route_as) in &addresses {
        let socket = match inherit::claim(&mut inherited, *addr) {
            Some(socket) => {
                socket
                    .set_nonblocking(true)
                    .map_err(|source| ServeError::Bind {
                        addr: *addr,
                        source,
                    })?;
                socket
            }
            None => bind(*addr)?,
        };
        let actual = socket.local_addr().map_err(|source| ServeError::Bind {
            addr: *addr,
            source,
        })?;
        sockets.push((socket, actual, route_as.unwrap_or(actual.port())));
    }
    for (addr, _) in inherited {
        tracing::info!("no longer listening on {addr}: the configuration stopped naming it");
    }
    let access_log = match &args.access_log {
        Some(path) => {
            Some(
                access_log::AccessLog::open(path).map_err(|source| ServeError::AccessLog {
                    path: path.clone(),
                    source,
                })?,
            )
        }
        None => None,
    };
    let status_listener = args.status_addr.map(status::bind).transpose()?;
    let graceful = seconds(args.graceful_timeout);
    // Daemon process groups first (exec'd while this process runs few threads), then this
    // process's own Python only when some mount runs embedded.
    let daemon_set = DaemonSet::start(&site, args.queue_size, seconds(args.queue_timeout))?;
    let runtime = if site.needs_embedded() {
        Some(Arc::new(wsgi_interp::Runtime::start_with(
            &wsgi_interp::StartConfig {
                python_home: site.python_home.clone(),
                python_path: site.python_path.clone(),
                optimize: site.config.python.optimize,
                dont_write_bytecode: site.config.python.dont_write_bytecode,
                ..Default::default()
            },
            &wsgi_interp::InterpreterOptions {
                per_interpreter_gil: site.config.python.per_interpreter_gil,
            },
        )?))
    } else {
        None
    };
    let python = match &runtime {
        Some(rt) => {
            let (major, minor, micro) = rt.python_version();
            format!("{major}.{minor}.{micro}")
        }
        None => wsgi_interp::embedded::BUILD_PYTHON_VERSION.to_string(),
    };
    let threads = args.threads.max(1);
    let pool = match &runtime {
        Some(rt) => {
            let host: Arc<dyn AppHost> = Arc::new(PythonHost(rt.clone()));
            Some(
                WorkerPool::start(host, threads, args.queue_size, seconds(args.queue_timeout))
                    .map_err(ServeError::Threads)?,
            )
        }
        None => None,
    };
    if let Some(d) = &daemon_set {
        if !d.wait_ready(DAEMON_READY_WAIT) {
            tracing::warn!(
                "some daemon processes were not ready within {DAEMON_READY_WAIT:?}: serving anyway (their requests wait for them up to connect-timeout)"
            );
        }
    }
    let io_threads = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 4));
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(io_threads)
        .thread_name("wsgi-io")
        .enable_all()
        .build()
        .map_err(ServeError::Threads)?;
    // The signal handlers go in before the banner: whoever reads the banner may signal at once
    // (SIGHUP's default action would end the server).
    let stop_signals = tokio.block_on(async { StopSignals::install() });
    let actual: Vec<SocketAddr> = sockets.iter().map(|(_, a, _)| *a).collect();
    print!(
        "{}",
        banner(
            &site,
            &actual,
            pool.as_ref().map(|_| threads),
            daemon_set.as_ref(),
            status_listener.as_ref().and_then(|l| l.local_addr().ok()),
            &python
        )
    );
    let front = Arc::new(Front {
        site: RwLock::new(Arc::new(site)),
        pool,
        daemons: RwLock::new(daemon_set.map(Arc::new)),
        retired: parking_lot::Mutex::new(Vec::new()),
        access_log: access_log.as_ref().map(|(log, _)| log.clone()),
        multithread: threads > 1,
        limits: Limits {
            header_timeout: seconds(args.header_timeout),
            max_header_size: args.max_header_size,
            max_headers: args.max_headers,
        },
    });
    let watch_roots = args
        .reload_on_changes
        .then(|| reload::SourceWatch::roots(&front.site.read()));
    let restart = Arc::new(AtomicBool::new(false));
    // Copies of the listening sockets, held open through a restart in place.
    let kept = sockets
        .iter()
        .map(|(socket, _, _)| socket.try_clone())
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(ServeError::Threads)?;
    let started = tokio.block_on(async {
        let listeners = sockets
            .into_iter()
            .map(|(socket, _, route_port)| {
                tokio::net::TcpListener::from_std(socket)
                    .map(|socket| Listener { socket, route_port })
            })
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(ServeError::Threads)?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        if let Some(listener) = status_listener {
            let listener =
                tokio::net::TcpListener::from_std(listener).map_err(ServeError::Threads)?;
            tokio::spawn(status::serve(front.clone(), listener, stop_rx.clone()));
        }
        if let Some(roots) = watch_roots {
            tokio::spawn(watch_sources(roots, restart.clone(), stop_tx.clone()));
        }
        let signals = tokio::spawn(signal_loop(
            stop_signals,
            front.clone(),
            args.clone(),
            aliases,
            stop_tx,
            graceful,
            restart.clone(),
        ));
        let finished = front::serve(front.clone(), listeners, stop_rx, graceful).await;
        signals.abort();
        Ok::<_, ServeError>((finished, Instant::now()))
    })?;
    let (finished, stop_began) = started;
    // In-flight requests are done (or the graceful time is up): stop the workers, the daemon
    // processes, then Python.
    let left = graceful
        .saturating_sub(stop_began.elapsed())
        .max(Duration::from_millis(100));
    let left = if finished {
        left
    } else {
        Duration::from_millis(100)
    };
    let workers_done = front.pool.as_ref().is_none_or(|p| p.stop(left));
    let current = front.daemons.write().take();
    let retired: Vec<Arc<DaemonSet>> = front.retired.lock().clone();
    for d in current.iter().chain(&retired) {
        d.stop(left);
    }
    tokio.shutdown_timeout(Duration::from_millis(200));
    if let Some(runtime) = runtime {
        let report = runtime.shutdown(
            if workers_done {
                wsgi_interp::DEFAULT_DRAIN
            } else {
                Duration::from_millis(100)
            },
            wsgi_interp::DEFAULT_THREAD_JOIN,
        );
        if report.busy_calls > 0 {
            tracing::warn!(
                "{} request(s) were still running in Python at exit",
                report.busy_calls
            );
        }
    }
    drop(front);
    if let Some((log, thread)) = access_log {
        drop(log);
        let _ = thread.join();
    }
    if restart.load(Ordering::Acquire) {
        return Err(restart_self(&args, &actual, &kept));
    }
    tracing::info!("stopped");
    Ok(())
}

/// Polls the sources once a second; on a change, asks for a graceful stop and a restart.
async fn watch_sources(
    roots: Vec<PathBuf>,
    restart: Arc<AtomicBool>,
    stop: tokio::sync::watch::Sender<bool>,
) {
    let Ok(mut watch) = tokio::task::spawn_blocking(move || reload::SourceWatch::new(roots)).await
    else {
        return;
    };
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Ok((again, changed)) = tokio::task::spawn_blocking(move || {
            let changed = watch.changed();
            (watch, changed)
        })
        .await
        else {
            return;
        };
        watch = again;
        if let Some(path) = changed {
            tracing::info!("{} changed: restarting", path.display());
            restart.store(true, Ordering::Release);
            let _ = stop.send(true);
            return;
        }
    }
}

/// Replaces this process with the same command (keeping a port picked with `--port 0`),
/// handing it the listening sockets. Returns only if `exec` failed.
fn restart_self(
    args: &ServeArgs,
    listening: &[SocketAddr],
    sockets: &[std::net::TcpListener],
) -> ServeError {
    use std::os::unix::process::CommandExt as _;
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return ServeError::Restart(e),
    };
    let mut command = std::process::Command::new(exe);
    command.args(std::env::args_os().skip(1));
    if let (Some(0), Some(addr)) = (args.port, listening.first()) {
        command.args(["--port", &addr.port().to_string()]);
    }
    if let Err(e) = inherit::pass_on(&mut command, sockets) {
        tracing::warn!("cannot keep the listening sockets open through the restart: {e}");
    }
    tracing::info!("restarting in place (same process id)");
    ServeError::Restart(command.exec())
}

/// Stops a replaced set of daemon groups once the requests that took it have their response
/// heads (at most `graceful`), then lets its pools finish streaming (the rest of `graceful`),
/// then stops its processes. Until then it stays in `front.retired`, so a server stop waits
/// for it too.
fn retire(front: Arc<Front>, old: Arc<DaemonSet>, graceful: Duration) {
    front.retired.lock().push(old.clone());
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + graceful;
        // This task and the retired list hold two references; requests hold the others.
        while Arc::strong_count(&old) > 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        old.stop(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_secs(1)),
        );
        front.retired.lock().retain(|d| !Arc::ptr_eq(d, &old));
        tracing::info!("the replaced daemon process groups have stopped");
    });
}

/// The server's signal streams, installed before the banner is printed.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Installs the handlers (inside the runtime); None when the system refuses.
    fn install() -> Option<StopSignals> {
        use tokio::signal::unix::{SignalKind, signal};
        Some(StopSignals {
            term: signal(SignalKind::terminate()).ok()?,
            int: signal(SignalKind::interrupt()).ok()?,
            hup: signal(SignalKind::hangup()).ok()?,
        })
    }
}

/// SIGTERM/SIGINT: stop. SIGHUP: reload the site (configuration, mounts, static folders,
/// and the daemon process groups when their sections changed).
async fn signal_loop(
    signals: Option<StopSignals>,
    front: Arc<Front>,
    args: ServeArgs,
    aliases: Vec<UrlAlias>,
    stop: tokio::sync::watch::Sender<bool>,
    graceful: Duration,
    restart: Arc<AtomicBool>,
) {
    let Some(StopSignals {
        mut term,
        mut int,
        mut hup,
    }) = signals
    else {
        tracing::error!("cannot install signal handlers: stop the server with SIGKILL");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: finishing in-flight requests, then stopping"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: finishing in-flight requests, then stopping"); break; }
            _ = hup.recv() => {
                let (source, aliases_now) = (args.source(), aliases.clone());
                let loaded = tokio::task::spawn_blocking(move || Site::load(source, aliases_now)).await;
                match loaded {
                    Ok(Ok(site)) if front.pool.is_some() || site.needs_embedded() || site.config.listen != front.site.read().config.listen => {
                        // Python cannot be restarted inside a process, nor listening sockets
                        // changed under tokio: reload the apps (and everything else) by a
                        // restart in place.
                        drop(site);
                        tracing::info!("SIGHUP: the configuration is valid; restarting in place to reload it and the applications (in-flight requests finish first, new connections wait in the listen queue)");
                        restart.store(true, Ordering::Release);
                        let _ = stop.send(true);
                        break;
                    }
                    Ok(Ok(site)) => {
                        // Daemon mode only: a new set of daemon groups (fresh processes, so
                        // the apps are loaded anew) takes the requests, the old set drains.
                        for w in &site.warnings {
                            tracing::warn!("{w}");
                        }
                        let (queue_size, queue_timeout) = (args.queue_size, seconds(args.queue_timeout));
                        let started = tokio::task::spawn_blocking(move || {
                            let set = DaemonSet::start(&site, queue_size, queue_timeout)?;
                            if let Some(d) = &set {
                                d.wait_ready(DAEMON_READY_WAIT);
                            }
                            Ok::<_, ServeError>((site, set))
                        })
                        .await;
                        match started {
                            Ok(Ok((site, set))) => {
                                if let Some(d) = &set {
                                    tracing::info!("SIGHUP: new daemon process groups:\n{}", d.banner().trim_end());
                                }
                                let set = set.map(Arc::new);
                                let previous = std::mem::replace(&mut *front.daemons.write(), set);
                                *front.site.write() = Arc::new(site);
                                if let Some(previous) = previous {
                                    retire(front.clone(), previous, graceful);
                                }
                                tracing::info!("SIGHUP: configuration reloaded; the daemon process groups were restarted with it");
                            }
                            Ok(Err(e)) => tracing::error!("SIGHUP: reload refused, still serving the previous configuration: {e}"),
                            Err(e) => tracing::error!("SIGHUP: reload failed: {e}"),
                        }
                    }
                    Ok(Err(e)) => tracing::error!("SIGHUP: reload refused, still serving the previous configuration: {e}"),
                    Err(e) => tracing::error!("SIGHUP: reload failed: {e}"),
                }
            }
        }
    }
    let _ = stop.send(true);
}
