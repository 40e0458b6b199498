//! The master process of `wsgi serve`: the one the operator started (and signals), as Apache's
//! parent. It reads and checks the configuration, binds the listening sockets and opens the
//! access log (as root, when started as root), starts the daemon process groups, and starts a
//! **front process** that serves the clients: exec'd from this program, handed the sockets,
//! it becomes the unprivileged user before it reads a byte from a client or starts Python
//! (see [`super::privileges`]). The master never reads client bytes and never runs Python.
//!
//! * SIGHUP (and `--reload-on-changes`): the configuration is read and checked again; if it
//!   is valid, a new generation starts *beside* the running one (new daemon groups, then a new
//!   front process on the same listening sockets) and, once the new front accepts, the old
//!   front is told to stop (SIGUSR2: it leaves the status endpoint to the new one at once): it
//!   stops accepting, finishes its in-flight requests and closes its keep-alive connections
//!   between requests (`Connection: close` on their last response), then its daemon groups
//!   are stopped. No connection is refused and no request is lost, as
//!   in nginx's and gunicorn's binary upgrade. A configuration that fails the check, or a new
//!   generation that cannot start, is logged and the running one goes on.
//! * SIGTERM/SIGINT: the master closes its copies of the listening sockets and stops the front
//!   processes, which close theirs at once (new connections are refused, so a load balancer
//!   fails over) and finish their in-flight requests within `--graceful-timeout` (`/healthz`
//!   answering `draining` meanwhile); then the daemon groups are stopped, the unix socket
//!   files it made are removed, and the master exits 0.
//! * A front process that dies is started again (with back-off), as Apache replaces a child.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::BufReader;
use tokio::process::Child;
use tokio::sync::oneshot;

use sd_notify::NotifyState;

use super::access_log::log_files;
use super::control::{self, ToFront, ToMaster};
use super::daemon_groups::{DaemonGroups, status_table};
use super::error::ServeError;
use super::error_log;
use super::listen::{ListenAddr, Listening, SocketFile, UnixSocketError};
use super::privileges::{self, Account, Identity};
use super::site::{Site, UrlAlias};
use super::{
    DAEMON_READY_WAIT, ServeArgs, Signals, bind_listen, inherit, listen_addresses, seconds,
};

/// The variable naming the daemon groups' sockets for a front process (JSON object).
pub const DAEMON_SOCKETS: &str = "WSGI_RS_DAEMON_SOCKETS";
/// The variable saying who a front process becomes: `name:uid:gid`, or `root`.
pub const FRONT_IDENTITY: &str = "WSGI_RS_FRONT_IDENTITY";

/// How long a new front process may take to accept connections.
const FRONT_READY_WAIT: Duration = Duration::from_secs(60);
/// Beyond `--graceful-timeout`, how long a stopping front process has before SIGKILL.
const FRONT_KILL_MARGIN: Duration = Duration::from_secs(5);

/// Who the front process runs as, decided once per configuration, and checked against what
/// it must read.
fn front_identity(args: &ServeArgs, site: &Site) -> Result<Identity, ServeError> {
    let identity = decide_identity(args, site)?;
    match &identity {
        Identity::Account(account) => {
            let why =
                privileges::UserSource::of(args.user.as_deref(), site.config.user.as_deref()).why();
            privileges::check_readable(account, &why, &front_paths(site))?;
            tracing::info!(
                "started as root: the front process serves as {} (uid {}, gid {}); the master process keeps root only to start and replace the processes that serve",
                account.name,
                account.uid,
                account.gid
            );
        }
        Identity::Root => tracing::warn!(
            "--allow-root: the front process reads client bytes and runs the applications as root"
        ),
        Identity::Unchanged => {}
    }
    Ok(identity)
}

/// Who the front process runs as, from the flags and the configuration.
fn decide_identity(args: &ServeArgs, site: &Site) -> Result<Identity, ServeError> {
    let config = &site.config;
    Ok(privileges::decide(
        args.user.as_deref(),
        args.group.as_deref(),
        config.user.as_deref(),
        config.group.as_deref(),
        args.allow_root,
    )?)
}

/// What the front process must read: the embedded applications' scripts and their folders,
/// the embedded Python's python-home and python-path, the static folders.
fn front_paths(site: &Site) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    for mount in site.mounts() {
        if mount.process_group != "embedded" && site.config.daemon(&mount.process_group).is_some() {
            continue;
        }
        // A script; a folder of scripts (`DIR/*.wsgi|*.py`, or the files a handler runs in a
        // `<Directory>`: `DIR/*`), checked when it is there; files a handler runs anywhere
        // (`*.wsgi`): no path to check.
        let script = &mount.script;
        match (script.strip_suffix("/*.wsgi|*.py"), script.split_once("/*")) {
            (Some(dir), _) => paths.push(PathBuf::from(dir)),
            (None, Some((dir, _))) if Path::new(dir).is_dir() => paths.push(PathBuf::from(dir)),
            (None, None) if Path::new(script).is_absolute() => paths.push(PathBuf::from(script)),
            _ => {}
        }
    }
    paths.extend(site.python_home.iter().cloned());
    paths.extend(site.python_path.iter().cloned());
    paths.extend(site.aliases.iter().map(|a| a.dir.clone()));
    paths.sort();
    paths.dedup();
    paths
}

/// A listening socket the master holds, for the address asked for.
struct Bound {
    addr: ListenAddr,
    socket: Listening,
    /// The unix socket file this master made (removed once no generation serves it).
    file: Option<Arc<SocketFile>>,
}

/// The listening sockets, bound by the master (or passed by systemd) and kept across reloads.
struct Sockets {
    /// Each address asked for, with its socket.
    bound: Vec<Bound>,
    /// The port each of `bound` is routed as, when not its own.
    routes: Vec<Option<u16>>,
    /// Whether each of `bound` speaks TLS.
    https: Vec<bool>,
    /// `bound` came from systemd's socket activation: kept whatever the configuration says.
    activated: bool,
    status: Option<TcpListener>,
}

/// The group a unix socket file gets when `--unix-socket-owner` names none: started as root,
/// the group of the user who serves (so a proxy running as that user connects); else none
/// (the file is this user's).
fn default_socket_group(args: &ServeArgs, site: &Site) -> Result<Option<u32>, ServeError> {
    if args.unix_socket_owner.is_some() || !privileges::is_root() {
        return Ok(None);
    }
    Ok(match decide_identity(args, site)? {
        Identity::Account(account) => Some(account.gid),
        Identity::Root | Identity::Unchanged => None,
    })
}

impl Sockets {
    /// Binds what `site` needs, reusing what is already bound for the same address. At the
    /// first start, the sockets of systemd's socket activation (`LISTEN_FDS`), if any, are
    /// served instead of any address.
    fn bind(
        args: &ServeArgs,
        site: &Site,
        previous: Option<&Sockets>,
    ) -> Result<Sockets, ServeError> {
        let mut bound = Vec::new();
        let mut routes = Vec::new();
        let activated = match previous {
            Some(p) => p.activated,
            None => {
                let passed = activated_sockets()?;
                let any = !passed.is_empty();
                bound = passed;
                any
            }
        };
        if activated {
            if let Some(p) = previous {
                for b in &p.bound {
                    bound.push(Bound {
                        addr: b.addr.clone(),
                        socket: b.socket.try_clone().map_err(ServeError::Threads)?,
                        file: None,
                    });
                }
            }
            routes = bound
                .iter()
                .map(|b| super::inherited_route(args, site, &b.addr))
                .collect();
        } else {
            let mut default_group = None;
            for (addr, route_as) in listen_addresses(args, site)? {
                let reused = previous.and_then(|p| {
                    let b = p.bound.iter().find(|b| b.addr == addr)?;
                    Some((b.socket.try_clone().ok()?, b.file.clone()))
                });
                let (socket, file) = match reused {
                    Some(reused) => reused,
                    None => {
                        if matches!(addr, ListenAddr::Unix(_)) && default_group.is_none() {
                            default_group = Some(default_socket_group(args, site)?);
                        }
                        bind_listen(&addr, args, default_group.flatten())?
                    }
                };
                bound.push(Bound { addr, socket, file });
                routes.push(route_as);
            }
        }
        // The certificates and their ports are checked here, where errors reach the operator,
        // before a front process is started with them.
        let mut https = Vec::new();
        for (b, route_as) in bound.iter().zip(&routes) {
            let port = match (&b.addr, route_as) {
                (_, Some(port)) => *port,
                (ListenAddr::Ip(addr), None) => addr.port(),
                (ListenAddr::Unix(_), None) => super::listen::UNIX_ROUTE_PORT,
            };
            let tls = super::listener_tls(args, site, port)?.is_some();
            if let (true, ListenAddr::Unix(path)) = (tls, &b.addr) {
                return Err(UnixSocketError::Tls(path.clone()).into());
            }
            https.push(tls);
        }
        let status = match previous.and_then(|p| p.status.as_ref()) {
            Some(s) => Some(s.try_clone().map_err(ServeError::Threads)?),
            None => args.status_addr.map(super::status::bind).transpose()?,
        };
        Ok(Sockets {
            bound,
            routes,
            https,
            activated,
            status,
        })
    }

    /// What the front process serves on each socket: its address and route port, for
    /// [`inherit::ROUTES`].
    fn routes(&self) -> Vec<(ListenAddr, Option<u16>)> {
        self.bound
            .iter()
            .zip(&self.routes)
            .filter_map(|(b, route)| Some((b.socket.local_addr()?, *route)))
            .collect()
    }

    fn fds(&self) -> Vec<RawFd> {
        self.bound
            .iter()
            .map(|b| b.socket.as_raw_fd())
            .chain(self.status.iter().map(AsRawFd::as_raw_fd))
            .collect()
    }

    /// The bound addresses, as the banner shows them: `http://127.0.0.1:8000/`,
    /// `https://[::1]:8443/`, `unix:/run/mysite.sock`.
    fn addresses(&self) -> Vec<String> {
        self.bound
            .iter()
            .zip(&self.https)
            .filter_map(|(b, &tls)| match b.socket.local_addr()? {
                ListenAddr::Ip(a) => {
                    let scheme = if tls { "https" } else { "http" };
                    Some(format!("{scheme}://{a}/"))
                }
                unix => Some(unix.to_string()),
            })
            .collect()
    }
}

/// One configuration being served: its site, daemon groups, and the front process serving it.
struct Generation {
    site: Arc<Site>,
    identity: Identity,
    daemons: Option<Arc<DaemonGroups>>,
    front: Child,
    /// What the front reported when ready.
    python: String,
    threads: Option<usize>,
    /// When its front last started (for the back-off of restarts).
    started: Instant,
    restarts: u32,
}

/// Answers a front's status requests from its daemon groups, and hands over its ready
/// message; ends when the front's end closes.
async fn serve_control(
    stream: tokio::net::UnixStream,
    daemons: Option<Arc<DaemonGroups>>,
    ready: oneshot::Sender<(String, Option<usize>)>,
) {
    let (input, mut out) = stream.into_split();
    let mut input = BufReader::new(input);
    let mut ready = Some(ready);
    loop {
        match control::receive::<ToMaster>(&mut input).await {
            Ok(Some(ToMaster::Ready { python, threads })) => {
                if let Some(tx) = ready.take() {
                    let _ = tx.send((python, threads));
                }
            }
            Ok(Some(ToMaster::Status { format })) => {
                let daemons = daemons.clone();
                let body = tokio::task::spawn_blocking(move || {
                    let groups = daemons.map(|d| d.status()).unwrap_or_default();
                    match format.as_str() {
                        "json" => serde_json::to_string_pretty(&groups)
                            .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}")),
                        "prometheus" => wsgi_daemon::supervisor::prometheus_text(&groups),
                        _ => status_table(&groups),
                    }
                })
                .await
                .unwrap_or_default();
                if control::send(&mut out, &ToFront::Status { body })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Ok(None) => return,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                tracing::warn!("ignored a malformed message from the front process: {e}");
            }
            Err(_) => return,
        }
    }
}

/// Starts a front process for `site` on `sockets`, and waits until it accepts connections.
async fn start_front(
    sockets: &Sockets,
    log_files: &[std::fs::File],
    identity: &Identity,
    daemons: Option<&Arc<DaemonGroups>>,
) -> Result<(Child, String, Option<usize>), ServeError> {
    let (mine, theirs) = std::os::unix::net::UnixStream::pair().map_err(ServeError::Threads)?;
    mine.set_nonblocking(true).map_err(ServeError::Threads)?;
    // This very program: its path, or, when its file was replaced since (a package
    // upgrade), the program still running, so the master and the front speak the same
    // control protocol.
    let exe = std::env::current_exe()
        .ok()
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("/proc/self/exe"));
    let mut command = tokio::process::Command::new(exe);
    if let Some(name) = std::env::args_os().next() {
        command.arg0(name);
    }
    command.arg("front-process");
    command.args(std::env::args_os().skip(2));
    let mut keep = sockets.fds();
    command.env(inherit::LISTEN_FDS, inherit::list(&keep));
    command.env(inherit::ROUTES, inherit::routes_text(&sockets.routes()));
    // systemd hears from the master only.
    command.env_remove("NOTIFY_SOCKET");
    command.env(inherit::CONTROL_FD, theirs.as_raw_fd().to_string());
    keep.push(theirs.as_raw_fd());
    if !log_files.is_empty() {
        let fds: Vec<_> = log_files.iter().map(AsRawFd::as_raw_fd).collect();
        command.env(inherit::LOG_FDS, inherit::list(&fds));
        keep.extend(fds);
    }
    let sockets_map: HashMap<&String, &PathBuf> = daemons
        .map(|d| d.sockets().iter().collect())
        .unwrap_or_default();
    command.env(
        DAEMON_SOCKETS,
        serde_json::to_string(&sockets_map).unwrap_or_default(),
    );
    match identity {
        Identity::Account(account) => {
            command.env(FRONT_IDENTITY, account.encode());
        }
        Identity::Root => {
            command.env(FRONT_IDENTITY, "root");
        }
        Identity::Unchanged => {
            command.env_remove(FRONT_IDENTITY);
        }
    }
    inherit::keep_in_child(&mut command, keep);
    command.kill_on_drop(false);
    let mut child = command.spawn().map_err(ServeError::Threads)?;
    drop(theirs);
    let stream = tokio::net::UnixStream::from_std(mine).map_err(ServeError::Threads)?;
    let (ready_tx, ready_rx) = oneshot::channel();
    tokio::spawn(serve_control(stream, daemons.cloned(), ready_tx));
    let pid = child.id().unwrap_or(0);
    tokio::select! {
        ready = ready_rx => match ready {
            Ok((python, threads)) => {
                tracing::debug!(pid, "front process ready");
                Ok((child, python, threads))
            }
            Err(_) => {
                let status = child.wait().await.map_err(ServeError::Threads)?;
                Err(ServeError::Front(format!("it exited ({status}) before accepting connections; its error is above")))
            }
        },
        status = child.wait() => {
            let status = status.map_err(ServeError::Threads)?;
            Err(ServeError::Front(format!("it exited ({status}) before accepting connections; its error is above")))
        }
        () = tokio::time::sleep(FRONT_READY_WAIT) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            Err(ServeError::Front(format!("it did not accept connections within {FRONT_READY_WAIT:?}")))
        }
    }
}

/// How a front process is asked to stop.
#[derive(Debug, Clone, Copy)]
enum FrontStop {
    /// The server stops (SIGTERM): its `/healthz` answers `draining` until it is done.
    Server,
    /// A newer front serves in its place (SIGUSR2): it leaves the status endpoint to that one
    /// at once.
    Replaced,
}

/// Asks a front process to stop, waits for it for `graceful` plus a margin, then kills it.
async fn stop_front(mut child: Child, graceful: Duration, how: FrontStop) {
    let Some(pid) = child.id() else { return };
    let signal = match how {
        FrontStop::Server => nix::sys::signal::Signal::SIGTERM,
        FrontStop::Replaced => nix::sys::signal::Signal::SIGUSR2,
    };
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
    match tokio::time::timeout(graceful + FRONT_KILL_MARGIN, child.wait()).await {
        Ok(Ok(status)) if !status.success() => {
            tracing::warn!(pid, "the front process ended with {status}")
        }
        Ok(_) => {}
        Err(_) => {
            tracing::warn!(pid, "the front process did not stop in time: killed");
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
}

/// Starts a whole generation: daemon groups, then the front process.
async fn start_generation(
    args: &ServeArgs,
    site: Site,
    sockets: &Sockets,
) -> Result<Generation, ServeError> {
    let mut site = site;
    // Opened as root, for this front only: a reload opens them again (log rotation).
    let log_files = log_files(args.access_log.as_deref(), &site.config)
        .iter()
        .map(|path| error_log::open_log(path))
        .collect::<Result<Vec<_>, _>>()?;
    let identity = front_identity(args, &site)?;
    // Daemon groups run as the front's user unless they (or the configuration) name theirs.
    if let (Identity::Account(account), None) = (&identity, &site.config.user) {
        site.config.user = Some(account.name.clone());
    }
    let front_user = match &identity {
        Identity::Account(Account { name, .. }) => Some(name.clone()),
        _ => None,
    };
    let site = Arc::new(site);
    let lazy = args.lazy_apps;
    let json = args.log_format == super::LogFormat::Json;
    let daemons = {
        let site = site.clone();
        tokio::task::spawn_blocking(move || {
            let daemons = DaemonGroups::start(&site, front_user.as_deref(), !lazy, json)?;
            if let Some(d) = &daemons {
                match d.wait_ready(DAEMON_READY_WAIT) {
                    Ok(true) => {}
                    Ok(false) => tracing::warn!(
                        "some daemon processes were not ready within {DAEMON_READY_WAIT:?}: serving anyway (their requests wait for them up to connect-timeout)"
                    ),
                    Err(failure) => {
                        d.stop();
                        return Err(ServeError::AppLoad(site.explain_daemon_failure(&failure)));
                    }
                }
            }
            Ok::<_, ServeError>(daemons.map(Arc::new))
        })
        .await
        .map_err(|e| ServeError::Front(e.to_string()))??
    };
    match start_front(sockets, &log_files, &identity, daemons.as_ref()).await {
        Ok((front, python, threads)) => Ok(Generation {
            site,
            identity,
            daemons,
            front,
            python,
            threads,
            started: Instant::now(),
            restarts: 0,
        }),
        Err(e) => {
            if let Some(d) = daemons {
                let _ = tokio::task::spawn_blocking(move || d.stop()).await;
            }
            Err(e)
        }
    }
}

/// The listening sockets systemd passed (socket activation: `LISTEN_FDS` for this process:
/// its children see another `LISTEN_PID` and ignore them), each with its address: TCP, or
/// unix sockets with a path (systemd removes their files itself).
fn activated_sockets() -> Result<Vec<Bound>, ServeError> {
    let fds = sd_notify::listen_fds()
        .map_err(|e| ServeError::Activation(format!("LISTEN_FDS/LISTEN_PID: {e}")))?;
    let mut sockets = Vec::new();
    for fd in fds {
        let socket = inherit::take_activated(fd).ok_or_else(|| {
            ServeError::Activation(format!(
                "descriptor {fd} is not a listening stream socket: give the unit's ListenStream= TCP addresses or socket paths only"
            ))
        })?;
        let addr = socket.local_addr().ok_or(UnixSocketError::Unnamed(fd))?;
        socket.set_nonblocking(true).map_err(ServeError::Threads)?;
        sockets.push(Bound {
            addr,
            socket,
            file: None,
        });
    }
    Ok(sockets)
}

/// Stops a replaced generation: its front first (it finishes its requests), then its daemon
/// groups.
fn retire(generation: Generation, graceful: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Generation { front, daemons, .. } = generation;
        stop_front(front, graceful, FrontStop::Replaced).await;
        if let Some(d) = daemons {
            let _ = tokio::task::spawn_blocking(move || d.stop()).await;
            tracing::info!("the replaced daemon process groups have stopped");
        }
    })
}

/// `--pid-file`: the master's pid, written once its sockets are bound, removed when it stops
/// (if it still names this process).
struct PidFile(PathBuf);

impl PidFile {
    fn write(path: &Path) -> Result<PidFile, ServeError> {
        let failed = |source| ServeError::PidFile {
            path: path.to_path_buf(),
            source,
        };
        // Beside it, then renamed over it: a reader never sees an empty file.
        let partial = path.with_extension(format!("tmp-{}", std::process::id()));
        std::fs::write(&partial, format!("{}\n", std::process::id())).map_err(failed)?;
        std::fs::rename(&partial, path).map_err(failed)?;
        Ok(PidFile(path.to_path_buf()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let ours = std::fs::read_to_string(&self.0)
            .is_ok_and(|text| text.trim() == std::process::id().to_string());
        if ours {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// The start-up banner: on standard output, or with `--log-format json`, one JSON record per
/// line in the error log (`"banner": true`), as every other line there.
fn show_banner(args: &ServeArgs, text: &str) {
    match args.log_format {
        super::LogFormat::Text => print!("{text}"),
        super::LogFormat::Json => {
            for line in text.lines() {
                tracing::info!(banner = true, "{}", line.trim_start());
            }
        }
    }
}

/// What woke the master.
enum Event {
    Stop(&'static str),
    Reload(String),
    FrontExited(std::io::Result<std::process::ExitStatus>),
}

/// Runs `wsgi serve`'s master process until SIGTERM/SIGINT.
pub fn run(args: ServeArgs) -> Result<(), ServeError> {
    let aliases = args.aliases()?;
    super::access_log::LineFormat::parse(&args.access_log_format)?;
    let site = Site::load(args.source(), aliases.clone())?;
    // The main ErrorLog, opened as Apache opens it (before privileges go): this process's
    // stderr from now on, and its children's.
    let terminal = match &site.config.error_log {
        Some(path) => Some(error_log::redirect_stderr(path)?),
        None => None,
    };
    super::init_tracing(args.log_level, args.log_format);
    let started = (|| {
        for w in &site.warnings {
            tracing::warn!("{w}");
        }
        for n in &site.notes {
            tracing::info!("{n}");
        }
        let sockets = Sockets::bind(&args, &site, None)?;
        let _pid_file = args.pid_file.as_deref().map(PidFile::write).transpose()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ServeError::Threads)?;
        runtime.block_on(serve(args, aliases, site, sockets))
    })();
    if let (Err(e), Some(mut terminal)) = (&started, terminal) {
        // Shown where `wsgi serve` was started too, not only in the ErrorLog.
        let _ = writeln!(terminal, "wsgi serve: error: {e}");
    }
    started
}

async fn serve(
    args: ServeArgs,
    aliases: Vec<UrlAlias>,
    site: Site,
    mut sockets: Sockets,
) -> Result<(), ServeError> {
    let graceful = seconds(args.graceful_timeout);
    // Before the banner: whoever reads it may signal at once.
    let mut signals = Signals::install()?;
    let mut current = start_generation(&args, site, &sockets).await?;
    show_banner(&args, &banner(&args, &current, &sockets));
    notify_systemd(&[NotifyState::Ready, NotifyState::Status("serving")]);
    let mut watch = args
        .reload_on_changes
        .then(|| super::reload::SourceWatch::new(super::reload::SourceWatch::roots(&current.site)));
    let mut retiring: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    loop {
        let event = tokio::select! {
            _ = signals.term.recv() => Event::Stop("SIGTERM"),
            _ = signals.int.recv() => Event::Stop("SIGINT"),
            _ = signals.hup.recv() => Event::Reload("SIGHUP".into()),
            _ = signals.usr1.recv() => Event::Reload("SIGUSR1".into()),
            status = current.front.wait() => Event::FrontExited(status),
            changed = poll_sources(&mut watch) => Event::Reload(format!("{} changed", changed.display())),
        };
        retiring.retain(|r| !r.is_finished());
        match event {
            Event::Stop(signal) => {
                tracing::info!("{signal}: stopping (in-flight requests finish first)");
                notify_systemd(&[NotifyState::Stopping]);
                break;
            }
            Event::Reload(why) => match reload(&args, &aliases, &sockets, &why).await {
                Ok((next, new_sockets)) => {
                    let old = std::mem::replace(&mut current, next);
                    sockets = new_sockets;
                    if let Some(w) = watch.as_mut() {
                        *w = super::reload::SourceWatch::new(super::reload::SourceWatch::roots(
                            &current.site,
                        ));
                    }
                    tracing::info!(
                        pid = current.front.id().unwrap_or(0),
                        "{why}: reloaded; the previous front process finishes its requests and stops"
                    );
                    retiring.push(retire(old, graceful));
                }
                Err(e) => {
                    tracing::error!("{why}: {e}; still serving the previous configuration")
                }
            },
            Event::FrontExited(status) => {
                let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                // Back-off: at once after a long run, then up to 30 s between attempts.
                if current.started.elapsed() > Duration::from_secs(60) {
                    current.restarts = 0;
                }
                let backoff = match current.restarts {
                    0 => Duration::ZERO,
                    n => Duration::from_secs(1 << n.min(5)).min(Duration::from_secs(30)),
                };
                tracing::error!(
                    "the front process ended unexpectedly ({status}): starting another in {backoff:?}"
                );
                tokio::select! {
                    _ = signals.term.recv() => break,
                    _ = signals.int.recv() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                // The configuration is read and checked again, as for a reload: a front process
                // never serves what the master did not check.
                let why = "restarting the front process".to_string();
                match next_generation(&args, &aliases, &sockets, &why).await {
                    Ok((next, new_sockets)) => {
                        let old = std::mem::replace(&mut current, next);
                        current.restarts = old.restarts + 1;
                        sockets = new_sockets;
                        tracing::info!(
                            pid = current.front.id().unwrap_or(0),
                            "a new front process serves"
                        );
                        retiring.push(retire(old, graceful));
                    }
                    Err(e) => {
                        current.restarts += 1;
                        current.started = Instant::now();
                        tracing::error!("{why}: {e}");
                        // The exited front's `wait` returns at once: the loop tries again
                        // after a longer back-off.
                    }
                }
            }
        }
    }
    // Stop: the master's copies of the listening sockets close first, then each front closes
    // its own at once and finishes its requests; then the daemon groups stop.
    drop(sockets);
    let Generation { front, daemons, .. } = current;
    stop_front(front, graceful, FrontStop::Server).await;
    for r in retiring {
        let _ = r.await;
    }
    if let Some(d) = daemons {
        let _ = tokio::task::spawn_blocking(move || d.stop()).await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// [`next_generation`], told to systemd (`RELOADING=1`, then `READY=1` whatever the outcome:
/// the previous generation serves on when the new one fails).
async fn reload(
    args: &ServeArgs,
    aliases: &[UrlAlias],
    sockets: &Sockets,
    why: &str,
) -> Result<(Generation, Sockets), String> {
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        notify_systemd(&[NotifyState::Reloading, now]);
    }
    let next = next_generation(args, aliases, sockets, why).await;
    let status = match &next {
        Ok(_) => "serving",
        Err(_) => "serving the previous configuration: the reload failed",
    };
    notify_systemd(&[NotifyState::Ready, NotifyState::Status(status)]);
    next
}

/// Tells systemd (`NOTIFY_SOCKET`, when it is set) how the service is; a failure is logged.
fn notify_systemd(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot notify systemd (NOTIFY_SOCKET): {e}");
    }
}

/// Reads and checks the configuration again and starts a generation for it beside the
/// running one (on the same sockets where the addresses did not change). `Err` says why not.
async fn next_generation(
    args: &ServeArgs,
    aliases: &[UrlAlias],
    sockets: &Sockets,
    why: &str,
) -> Result<(Generation, Sockets), String> {
    let loaded = {
        let (source, aliases) = (args.source(), aliases.to_vec());
        tokio::task::spawn_blocking(move || Site::load(source, aliases)).await
    };
    let site = match loaded {
        Ok(Ok(site)) => site,
        Ok(Err(e)) => return Err(format!("the configuration was refused: {e}")),
        Err(e) => return Err(format!("reading the configuration failed: {e}")),
    };
    for w in &site.warnings {
        tracing::warn!("{w}");
    }
    let new_sockets = Sockets::bind(args, &site, Some(sockets)).map_err(|e| e.to_string())?;
    tracing::info!(
        "{why}: the configuration is valid; starting a new front process beside the running one"
    );
    if let Some(path) = &site.config.error_log {
        // Opened again, as the access logs are: what rotates the main error log.
        error_log::redirect_stderr(path).map_err(|e| e.to_string())?;
    }
    let next = start_generation(args, site, &new_sockets)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(d) = &next.daemons {
        tracing::info!("new daemon process groups:\n{}", d.banner().trim_end());
    }
    Ok((next, new_sockets))
}

/// With `--reload-on-changes`, resolves when a watched source changes (polled once a
/// second); never otherwise.
async fn poll_sources(watch: &mut Option<super::reload::SourceWatch>) -> PathBuf {
    let Some(watch) = watch.as_mut() else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Some(path) = watch.changed() {
            return path;
        }
    }
}

/// The start-up banner: the mode, the daemon process groups with their pids, the addresses,
/// then each mount with its script, process group, application group and python-home, and
/// the static folders.
fn banner(args: &ServeArgs, generation: &Generation, sockets: &Sockets) -> String {
    let site = &generation.site;
    let mode = match (generation.threads, &generation.daemons) {
        (Some(t), None) => format!("embedded mode with {t} worker thread(s)"),
        (Some(t), Some(_)) => {
            format!("daemon mode, and embedded mode with {t} worker thread(s),")
        }
        (None, _) => "daemon mode".to_string(),
    };
    let mut out = format!(
        "wsgi-rs {} serving in {mode} with Python {}\n",
        env!("CARGO_PKG_VERSION"),
        generation.python
    );
    match &generation.identity {
        Identity::Account(a) => out.push_str(&format!(
            "serving as user {} (the master process {} keeps root, to start and replace the processes that serve)\n",
            a.name,
            std::process::id()
        )),
        Identity::Root => out.push_str("serving as root (--allow-root)\n"),
        Identity::Unchanged => {}
    }
    if let Some(d) = &generation.daemons {
        out.push_str(&d.banner());
    }
    if let Some(a) = sockets.status.as_ref().and_then(|s| s.local_addr().ok()) {
        out.push_str(&format!(
            "status on http://{a}/status (and /status.json, /metrics): wsgi status --status-addr {a}\n"
        ));
    }
    if let Some(proxy) = super::proxy_protocol::ProxyPolicy::new(
        args.proxy_protocol,
        args.proxy_allow_from.clone(),
        &site.config,
    ) {
        out.push_str(&format!("{}\n", proxy.describe()));
    }
    for a in sockets.addresses() {
        out.push_str(&format!("listening on {a}\n"));
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
        // A module target shows as typed, not as the script generated for it.
        let script = match super::target::generated_target(Path::new(&m.script)) {
            Some((target, folder)) => format!("{target} (imported from {folder})"),
            None => m.script.to_string(),
        };
        out.push_str(&format!(
            "  {} -> {script}\n      process group: {}   application group: {}   python-home: {}\n",
            m.mount, m.process_group, m.application_group, home
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
