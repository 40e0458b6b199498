//! The front process of `wsgi serve` (`wsgi front-process`, started only by the master, see
//! [`super::master`]): it takes the listening sockets, control socket and log files the
//! master hands over, reads the configuration, becomes the unprivileged user (before it
//! starts a thread, reads a client byte or starts Python), then serves HTTP: embedded
//! applications in its own Python, daemon-mode ones through the daemon groups' sockets.
//!
//! It stops on SIGTERM/SIGINT, or when the master goes away (the control socket closes):
//! the listening sockets close at once, in-flight requests finish (up to
//! `--graceful-timeout`), keep-alive connections close between requests, and the status
//! endpoint answers `/healthz` with `draining` until then. SIGUSR2, from the master when a
//! reload replaced this front, stops it the same way but leaves the status endpoint to the
//! new front at once.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use super::access_log::{FrontLogs, LineFormat};
use super::control::FrontControl;
use super::daemon_groups::DaemonPools;
use super::error::ServeError;
use super::front::{self, Front, Listener};
use super::listen::{ListenAddr, Listening};
use super::master::{DAEMON_SOCKETS, FRONT_IDENTITY};
use super::pool::{AppHost, PythonHost, WorkerPool};
use super::privileges::{self, Account};
use super::site::Site;
use super::{ServeArgs, Signals, inherit, listen_addresses, seconds};

/// Takes the environment variable `name` (removed from the environment). Call before any
/// thread starts.
fn take_env(name: &str) -> Option<String> {
    let value = std::env::var(name).ok();
    // SAFETY: called at the start of the front process, before it starts any thread, so no
    // other thread reads the environment meanwhile.
    unsafe { std::env::remove_var(name) };
    value
}

/// Runs the front process until it is told to stop.
pub fn run(args: ServeArgs) -> Result<(), ServeError> {
    let mut inherited = inherit::take_listeners();
    let control = inherit::take_control().ok_or_else(|| {
        ServeError::Front(
            "`wsgi front-process` is started by `wsgi serve` only: run `wsgi serve` instead".into(),
        )
    })?;
    let log_files = inherit::take_log_files();
    let sockets: HashMap<String, PathBuf> = take_env(DAEMON_SOCKETS)
        .and_then(|json| serde_json::from_str(&json).ok())
        .unwrap_or_default();
    let identity = take_env(FRONT_IDENTITY);
    let site = Site::load(args.source(), args.aliases()?)?;
    let FrontLogs {
        access: access_logs,
        host_errors,
        thread: log_thread,
    } = FrontLogs::new(
        args.access_log.as_deref(),
        &LineFormat::parse(&args.access_log_format)?,
        &site.config,
        log_files,
    )?;
    super::error_log::set_host_logs(host_errors);
    super::init_tracing(args.log_level, args.log_format);
    let mut listeners = Vec::new();
    // What the master bound (or systemd passed) and how to route it; computed again only from
    // a master that does not say.
    let routes = match inherit::take_routes() {
        Some(routes) => routes,
        None => listen_addresses(&args, &site)?,
    };
    for (addr, route_as) in routes {
        let socket = inherit::claim(&mut inherited, &addr).ok_or_else(|| {
            ServeError::Front(format!("the master handed over no socket for {addr}"))
        })?;
        socket.set_nonblocking(true).map_err(ServeError::Threads)?;
        let route_port = match (socket.local_addr(), route_as) {
            (_, Some(port)) => port,
            (Some(ListenAddr::Ip(a)), None) => a.port(),
            _ => super::listen::UNIX_ROUTE_PORT,
        };
        let tls = match &addr {
            ListenAddr::Ip(_) => super::listener_tls(&args, &site, route_port)?,
            // The master refuses TLS on a unix socket.
            ListenAddr::Unix(_) => None,
        };
        listeners.push((socket, route_port, tls));
    }
    // From here on, never root (unless --allow-root): the configuration and the TLS keys are
    // read (a key only root may read is usual, as Apache reads it before it gives up root),
    // nothing else needs the privileges.
    match identity.as_deref() {
        Some("root") | None => {}
        Some(encoded) => {
            let account = Account::decode(encoded).ok_or_else(|| {
                ServeError::Front(format!("{FRONT_IDENTITY} is not name:uid:gid: {encoded}"))
            })?;
            privileges::become_account(&account)?;
        }
    }
    // A front never outlives its master (set after the identity change, which clears it).
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM);
    let status_listener = args.status_addr.and_then(|addr| {
        match inherit::claim(&mut inherited, &ListenAddr::Ip(addr))? {
            Listening::Tcp(listener) => Some(listener),
            Listening::Unix(_) => None,
        }
    });
    let graceful = seconds(args.graceful_timeout);
    let daemons = DaemonPools::start(
        &site.config,
        &sockets,
        args.queue_size,
        seconds(args.queue_timeout),
    )?;
    if let Some(eggs) = &site.config.python.eggs {
        // SAFETY: the front process has started no thread yet (the runtime, the workers and
        // Python come below), so nothing reads the environment meanwhile.
        unsafe { std::env::set_var("PYTHON_EGG_CACHE", eggs) };
    }
    // Embedded applications, and mod_wsgi's access, auth and dispatch scripts, run in this
    // process's Python.
    let runtime = if site.needs_embedded() || site.config.names_hook_scripts() {
        Some(Arc::new(wsgi_interp::Runtime::start_with(
            &wsgi_interp::StartConfig {
                python_home: site.python_home.clone(),
                python_path: site.python_path.clone(),
                optimize: site.config.python.optimize,
                dont_write_bytecode: site.config.python.dont_write_bytecode,
                // `mod_wsgi` in embedded mode: this one front process and its workers.
                maximum_processes: 1,
                threads_per_process: u32::try_from(args.threads.max(1)).unwrap_or(u32::MAX),
                interpreter_rules: site.config.python.interpreter_rules(),
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
    if let Some(rt) = &runtime {
        preload(rt, &site, !args.lazy_apps)?;
    }
    let threads = args.threads.max(1);
    let pool = match &runtime {
        Some(rt) if site.needs_embedded() => {
            let host: Arc<dyn AppHost> = Arc::new(PythonHost::new(
                rt.clone(),
                site.config.python.switch_interval_for(""),
                threads > 1,
            ));
            Some(
                WorkerPool::start(
                    host,
                    threads,
                    args.queue_size,
                    seconds(args.queue_timeout),
                    503,
                )
                .map_err(ServeError::Threads)?,
            )
        }
        _ => None,
    };
    let io_threads = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 4));
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(io_threads)
        .thread_name("wsgi-io")
        .on_thread_park(super::memory::on_thread_idle)
        .enable_all()
        .build()
        .map_err(ServeError::Threads)?;
    let (control, control_input) = {
        let _entered = tokio.enter();
        control.set_nonblocking(true).map_err(ServeError::Threads)?;
        let stream = tokio::net::UnixStream::from_std(control).map_err(ServeError::Threads)?;
        let (control, input) = FrontControl::new(stream);
        (Arc::new(control), input)
    };
    let proxy = super::proxy_protocol::ProxyPolicy::new(
        args.proxy_protocol,
        args.proxy_allow_from.clone(),
        &site.config,
    );
    let front = Arc::new(Front {
        proxy,
        site: Arc::new(site),
        pool,
        python: runtime.clone(),
        daemons,
        logs: access_logs,
        multithread: threads > 1,
        limits: args.limits(),
        control: Some(control.clone()),
        draining: AtomicBool::new(false),
        metrics: status_listener.is_some().then(Default::default),
    });
    let embedded_threads = front.pool.as_ref().map(|_| threads);
    let finished = tokio.block_on(async {
        let signals = Signals::install()?;
        // SIGUSR2: the master replaced this front (a reload); installed before the master
        // hears it is ready, as the others.
        let replaced =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined2())
                .map_err(ServeError::Threads)?;
        let listeners = listeners
            .into_iter()
            .map(|(socket, route_port, tls)| {
                front::ListenSocket::from_std(socket).map(|socket| Listener {
                    socket,
                    route_port,
                    tls,
                })
            })
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(ServeError::Threads)?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        // The status endpoint outlives the listeners when the server stops (its /healthz
        // then answers `draining`), not when a newer front replaces this one.
        let (status_stop_tx, status_stop_rx) = tokio::sync::watch::channel(false);
        if let Some(listener) = status_listener {
            listener
                .set_nonblocking(true)
                .map_err(ServeError::Threads)?;
            let listener =
                tokio::net::TcpListener::from_std(listener).map_err(ServeError::Threads)?;
            tokio::spawn(super::status::serve(
                front.clone(),
                listener,
                status_stop_rx,
            ));
        }
        let serving = tokio::spawn(front::serve(front.clone(), listeners, stop_rx, graceful));
        control
            .ready(python, embedded_threads)
            .await
            .map_err(ServeError::Threads)?;
        let master_gone = {
            let control = control.clone();
            async move { control.read_until_closed(control_input).await }
        };
        let why = signals.wait(master_gone, replaced).await;
        tracing::debug!("front process: {why}: stopping");
        if why == REPLACED {
            let _ = status_stop_tx.send(true);
        }
        // `front::serve` marks the front draining once its listeners are closed: /healthz
        // never says `draining` while a new connection could still be taken.
        let _ = stop_tx.send(true);
        let finished = serving.await.unwrap_or(false);
        let _ = status_stop_tx.send(true);
        Ok::<_, ServeError>(finished)
    })?;
    let stop_began = Instant::now();
    // In-flight requests are done (or the graceful time is up): stop the workers, then Python.
    let left = if finished {
        graceful
            .saturating_sub(stop_began.elapsed())
            .max(Duration::from_millis(100))
    } else {
        Duration::from_millis(100)
    };
    let workers_done = front.pool.as_ref().is_none_or(|p| p.stop(left));
    if let Some(d) = &front.daemons {
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
    if let Some(thread) = log_thread {
        let _ = thread.join();
    }
    Ok(())
}

/// Loads what the embedded Python loads at start ([`Config::preloads`] of `%{GLOBAL}`: the
/// `WSGIImportScript`s, and the script aliases naming both groups literally, as the
/// command-line mounts do), in order, each in its application group. With `strict` (not
/// `--lazy-apps`), a failure stops the start, explained in the terms of `site`'s source.
///
/// [`Config::preloads`]: wsgi_config::Config::preloads
fn preload(runtime: &wsgi_interp::Runtime, site: &Site, strict: bool) -> Result<(), ServeError> {
    for p in site.config.preloads(&wsgi_config::GroupSpec::Global) {
        let mut script = wsgi_interp::ScriptSpec::new(p.script.clone());
        if let Some(callable) = &p.callable {
            script.callable = callable.clone();
        }
        let loaded = runtime
            .interpreter(&p.application_group)
            .map_err(wsgi_interp::ScriptError::from)
            .and_then(|interp| match interp.load_script(&script) {
                // An import script needs no WSGI callable: it ran.
                Err(wsgi_interp::ScriptError::MissingCallable { .. }) if p.callable.is_none() => {
                    Ok(())
                }
                other => other.map(|_| ()),
            });
        match loaded {
            Ok(()) => {
                tracing::info!(script = %p.script.display(), application_group = %p.application_group, "preloaded")
            }
            Err(e) if strict => return Err(ServeError::AppLoad(site.explain_load_failure(&p, &e))),
            Err(e) => {
                tracing::error!(script = %p.script.display(), "preloading at {} failed: {e}", p.span)
            }
        }
    }
    Ok(())
}

/// Why a front stops when a newer one replaced it (SIGUSR2 from the master).
const REPLACED: &str = "SIGUSR2 (replaced by a newer front process)";

impl Signals {
    /// The front's wait: SIGTERM and SIGINT stop it, SIGUSR2 (`replaced`) too, or
    /// `master_gone` resolving; SIGHUP and SIGUSR1 are the master's (a terminal hang-up, or a
    /// `kill` of the whole process group) and are ignored here.
    async fn wait(
        mut self,
        master_gone: impl Future<Output = ()>,
        mut replaced: tokio::signal::unix::Signal,
    ) -> &'static str {
        tokio::pin!(master_gone);
        loop {
            tokio::select! {
                _ = self.term.recv() => return "SIGTERM",
                _ = self.int.recv() => return "SIGINT",
                _ = replaced.recv() => return REPLACED,
                _ = self.hup.recv() => continue,
                _ = self.usr1.recv() => continue,
                () = &mut master_gone => return "the master process is gone",
            }
        }
    }
}
