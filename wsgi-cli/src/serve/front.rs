//! The HTTP front: hyper connections on tokio (HTTP/1.1, and HTTP/2 where [`super::http2`]
//! allows it), each request checked ([`super::strict`]),
//! routed by `Config::route` and handed to the worker pool, or served from a static
//! `--url-alias` folder.
//!
//! hyper does the protocol: keep-alive, pipelining, chunked bodies both ways,
//! `Expect: 100-continue`, the header size and count limits (431), malformed requests (400)
//! and the header read timeout (a total for the head, so a head sent slowly ends at the
//! deadline). Around it: at most `--max-connections` connections are open (beyond it new ones
//! wait in the listen backlog), request bodies are read by the front before a worker takes
//! them ([`super::bridge`]), a request waits for a worker at most the queue timeout, and a
//! client that reads its response too slowly is dropped ([`super::conn`]). Every refused
//! request is logged at info with the reason, and written to the access log with its status.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{Semaphore, oneshot, watch};
use tokio_rustls::LazyConfigAcceptor;
use wsgi_config::MapHeadToGet;
use wsgi_config::route::{AliasTarget, ProcessGroup, Route, RouteRequest};
use wsgi_interp::{CallOptions, HeadSource, RequestHead, Scheme, Stamps};

use super::access_log::{AccessLogs, LogExtras, LogJob, LogRecord, LoggedBody};
use super::auth::{self, Granted, Refusal};
use super::bridge::{
    BodyFailure, BodyLimits, ChannelBody, Collected, ResponseReceiver, ResponseStart, StallLimit,
    collect_body, request_body, response_channel,
};
use super::conn::{ConnIo, ConnShared, WriteLimits};
use super::control::FrontControl;
use super::daemon_groups::DaemonPools;
use super::error_log::{self, InHost};
use super::front_hooks::FrontHooks;
use super::head::{HeadTap, Heads};
use super::http1::ConnError;
use super::http2::{self, HttpMode, Versions};
use super::metrics::{AppLabels, FrontMetrics};
use super::pool::{Job, JobResult, Refused, WorkerPool, error_status};
use super::proxy_protocol::{self, Decision, HeaderError, PeekSocket, ProxyPolicy};
use super::sendfile::{SendfileSocket, SendfileStream, file_bytes};
use super::site::{Site, UrlAlias};
use super::strict::{self, HeadLimits, Verdict};
use super::tls::PortTls;

/// At a stop, how long open connections get to send their next request (answered with
/// `Connection: close`) before the idle ones are closed: a keep-alive client is then told to
/// go elsewhere between requests instead of finding its connection gone.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// The response body type every handler produces.
pub type ResponseBody = UnsyncBoxBody<Bytes, io::Error>;

/// Protocol limits and timeouts.
#[derive(Debug, Clone)]
pub struct Limits {
    /// How long a client may take to send a request's headers, in all (also the keep-alive
    /// idle time).
    pub header_timeout: Duration,
    /// The most header bytes (request line included) a request may have.
    pub max_header_size: usize,
    /// The most header fields a request may have.
    pub max_headers: usize,
    /// The request line and header field limits.
    pub head: HeadLimits,
    /// How request bodies are read.
    pub body: BodyLimits,
    /// How slowly a client may read a response.
    pub write: WriteLimits,
    /// The most connections open at once.
    pub max_connections: usize,
    /// The most unsent response bytes the kernel holds per TCP connection
    /// (`TCP_NOTSENT_LOWAT`); 0: the system's setting.
    pub tcp_notsent_lowat: u32,
    /// Which HTTP versions are spoken (`--http`).
    pub http: HttpMode,
    /// The most streams open at once on an HTTP/2 connection.
    pub http2_max_streams: u32,
}

impl Default for Limits {
    /// `wsgi serve`'s defaults (those of mod_wsgi-express and Apache where they have one).
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(15),
            max_header_size: 65536,
            max_headers: 100,
            head: HeadLimits {
                max_request_line: 8190,
                max_field_size: 8190,
            },
            body: BodyLimits {
                buffer_size: 256 * 1024,
                timeout: Duration::from_secs(15),
                min_rate: 500,
                max_size: 1 << 30,
            },
            write: WriteLimits {
                timeout: Duration::from_secs(60),
                min_rate: 500,
                busy_timeout: Duration::from_secs(5),
            },
            max_connections: 1024,
            tcp_notsent_lowat: 32 * 1024,
            http: HttpMode::Auto,
            http2_max_streams: 100,
        }
    }
}

/// Shared by every connection of a front process.
pub struct Front {
    /// What is served.
    pub site: Arc<Site>,
    /// The embedded Python's workers (None when every mount runs in a daemon process group,
    /// so this process starts no Python).
    pub pool: Option<WorkerPool>,
    /// The embedded Python, for mod_wsgi's access, auth and dispatch scripts (which always
    /// run here, never in a daemon process).
    pub python: Option<Arc<wsgi_interp::Runtime>>,
    /// The daemon process groups' front pools.
    pub daemons: Option<DaemonPools>,
    /// The access logs (`--access-log`, `CustomLog`), if any.
    pub logs: Option<AccessLogs>,
    /// `wsgi.multithread`.
    pub multithread: bool,
    /// Protocol limits.
    pub limits: Limits,
    /// The channel to the master process (None when there is none: benchmarks).
    pub control: Option<Arc<FrontControl>>,
    /// The front is stopping: every response closes its connection.
    pub draining: AtomicBool,
    /// The request metrics (kept when the status endpoint is on).
    pub metrics: Option<Arc<FrontMetrics>>,
    /// Who must start connections with a PROXY protocol header (None: no one).
    pub proxy: Option<ProxyPolicy>,
}

/// A listening socket of the front: TCP, or a unix socket (for a proxy on this machine).
pub enum ListenSocket {
    /// TCP.
    Tcp(TcpListener),
    /// A unix stream socket.
    Unix(UnixListener),
}

impl ListenSocket {
    /// The tokio socket for a non-blocking listening socket (inside a tokio runtime).
    pub fn from_std(socket: super::listen::Listening) -> io::Result<ListenSocket> {
        Ok(match socket {
            super::listen::Listening::Tcp(s) => ListenSocket::Tcp(TcpListener::from_std(s)?),
            super::listen::Listening::Unix(s) => ListenSocket::Unix(UnixListener::from_std(s)?),
        })
    }
}

/// An accepted connection.
enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// A listening socket and the port requests on it are routed as.
pub struct Listener {
    /// The socket.
    pub socket: ListenSocket,
    /// The port `Config::route` sees (the socket's own, unless the configuration's `Listen`
    /// port is served on another one with `--port`).
    pub route_port: u16,
    /// TLS for its connections (`SSLEngine on` for its hosts, or `--ssl-certificate-file`).
    pub tls: Option<PortTls>,
}

/// A connection from an acceptor: the stream, peer and local addresses, the route port, and
/// its place among `--max-connections`.
struct Accepted {
    stream: Conn,
    peer: SocketAddr,
    local: SocketAddr,
    route_port: u16,
    /// The TLS handshake to do first, for a TLS port.
    tls: Option<PortTls>,
    /// Its place among --max-connections.
    permit: tokio::sync::OwnedSemaphorePermit,
}

impl Accepted {
    /// An accepted connection with the address it came in on (None when the socket cannot
    /// say: the connection is dropped).
    fn new(
        stream: Conn,
        peer: SocketAddr,
        route_port: u16,
        tls: Option<PortTls>,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Option<Accepted> {
        let local = local_addr(&stream, route_port).ok()?;
        Some(Accepted {
            stream,
            peer,
            local,
            route_port,
            tls,
            permit,
        })
    }
}

/// What a TLS connection negotiated that the environ shows.
struct TlsInfo {
    /// The server name the client asked for (mod_ssl's `SSL_TLS_SNI`).
    sni: Option<String>,
}

/// This process's pid (`mod_wsgi.server_pid`), read once: a front never forks once it
/// serves, and getpid(2) is a system call per request otherwise.
static FRONT_PID: std::sync::LazyLock<u32> = std::sync::LazyLock::new(std::process::id);

/// A connection's addresses.
#[derive(Debug, Clone, Copy)]
struct Addrs {
    /// The client: the socket's peer, or the one its PROXY header names.
    peer: SocketAddr,
    /// The address it came in on.
    local: SocketAddr,
    /// The port its requests are routed as.
    route_port: u16,
    /// The socket's own peer when a PROXY header named another client (the balancer: the
    /// access log's `%{c}a`).
    via: Option<SocketAddr>,
}

/// What a connection knows about itself.
struct ConnInfo {
    peer: SocketAddr,
    local: SocketAddr,
    /// `peer`'s address as the environ shows it (`REMOTE_ADDR`), written once.
    peer_text: String,
    /// `local`'s (`SERVER_ADDR`, `mod_wsgi.listener_host`).
    local_text: String,
    route_port: u16,
    /// The balancer that sent a PROXY header naming `peer`.
    via: Option<SocketAddr>,
    /// What the connection negotiated, when it speaks TLS.
    tls: Option<TlsInfo>,
    shared: Arc<ConnShared>,
    /// The raw request heads, as the client sent them.
    heads: Heads,
}

/// The byte stream hyper serves: the socket with the response write timeout
/// ([`ConnIo`]), under the pre-parse that lets raw request targets through ([`HeadTap`]).
type ConnStream<S> = HeadTap<ConnIo<S>>;

/// Wraps a connection's byte stream for hyper, with what its requests share.
fn conn_stream<S>(
    stream: S,
    limits: &Limits,
    addrs: Addrs,
    tls: Option<TlsInfo>,
    socket: Option<RawFd>,
) -> (ConnStream<S>, Arc<ConnInfo>) {
    let shared = Arc::new(ConnShared::default());
    let mut io = ConnIo::new(stream, shared.clone(), limits.write);
    if let Some(socket) = socket {
        io = io.with_peer_window(socket);
    }
    let (tap, heads) = HeadTap::new(io, limits.max_header_size, limits.max_headers);
    let info = Arc::new(ConnInfo {
        peer: addrs.peer,
        local: addrs.local,
        peer_text: ip_text(addrs.peer.ip()),
        local_text: ip_text(addrs.local.ip()),
        route_port: addrs.route_port,
        via: addrs.via,
        tls,
        shared,
        heads,
    });
    (tap, info)
}

/// hyper's servers for every connection.
struct Servers {
    http1: http1::Builder,
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
    /// Turns true when the front's graceful shutdown begins (the HTTP/1 connections hear it
    /// through their `Watcher`).
    graceful: watch::Receiver<bool>,
}

impl Servers {
    fn new(limits: &Limits, graceful: watch::Receiver<bool>) -> Servers {
        let h2 = http2::Http2Limits {
            max_concurrent_streams: limits.http2_max_streams,
            max_header_list_size: u32::try_from(limits.max_header_size).unwrap_or(u32::MAX),
        };
        Servers {
            http1: http1_builder(limits),
            http2: http2::builder(h2),
            graceful,
        }
    }
}

/// The `Protocols` of the host `host` (None: the main server), when the site is a `--config`
/// one (else None: every protocol).
fn site_protocols(front: &Front, host: Option<usize>) -> Option<&[String]> {
    match front.site.source {
        super::site::SiteSource::ConfigFile { .. } => Some(front.site.config.protocols(host)),
        super::site::SiteSource::CommandLine(_) => None,
    }
}

/// The versions a cleartext connection on `addrs` may speak (its default host's `Protocols`
/// decide in a `--config` site).
fn cleartext_versions(front: &Front, addrs: &Addrs) -> Versions {
    let protocols = match front.limits.http {
        HttpMode::Auto => {
            let config = &front.site.config;
            site_protocols(
                front,
                config.select_host(Some(addrs.local.ip()), addrs.route_port, None),
            )
        }
        _ => None,
    };
    http2::cleartext(front.limits.http, protocols)
}

/// hyper's HTTP/1.1 settings for every connection.
fn http1_builder(limits: &Limits) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(limits.max_header_size)
        .max_buf_size(limits.max_header_size.max(8192) + WRITE_QUEUE)
        // Body buffers are queued as they are, never copied: what `SendfileStream` needs to
        // recognise a mapped file range.
        .writev(true)
        .keep_alive(true);
    // hyper's own limit is 100 headers, parsed into arrays on the stack; a limit set, even
    // to the same 100, makes it fill a new array of that size for every request.
    if limits.max_headers != HYPER_MAX_HEADERS {
        builder.max_headers(limits.max_headers);
    }
    builder
}

/// The number of request headers hyper accepts when not told otherwise.
const HYPER_MAX_HEADERS: usize = 100;

/// How many bytes of response body hyper may queue on an HTTP/1.1 connection (beyond room
/// for a head) before it stops taking more and writes them: the chunks are queued as they
/// are, not copied, and go out in one `writev`. 64 KiB made a write of one or two 64 KiB
/// chunks; 384 KiB takes up to six, which nearly doubled the 1 MiB streamed cell (pinned,
/// c16: 2.4 k -> 5.4 k req/s; 256 KiB 4.3 k, 512-768 KiB no better). hyper's own default
/// is about 400 KiB. It also caps how far hyper's read buffer grows for a request body.
const WRITE_QUEUE: usize = 384 * 1024;

/// Serves one connection over any byte stream (a socket, or an in-memory pipe for the
/// benchmarks of the whole dispatch path), until the client closes it. `peer` and `local`
/// are the addresses the app sees; `route_port` the port requests are routed as.
pub async fn serve_stream<S>(
    front: Arc<Front>,
    stream: S,
    peer: SocketAddr,
    local: SocketAddr,
    route_port: u16,
) -> Result<(), hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let builder = http1_builder(&front.limits);
    let addrs = Addrs {
        peer,
        local,
        route_port,
        via: None,
    };
    let (io, info) = conn_stream(stream, &front.limits, addrs, None, None);
    let service = service_fn(move |req| Box::pin(handle(front.clone(), info.clone(), req)));
    builder.serve_connection(TokioIo::new(io), service).await
}

/// Caps the response bytes the kernel holds unsent for `stream` at `lowat`
/// (`TCP_NOTSENT_LOWAT`; 0 leaves the system's setting): hyper writes more as the client takes
/// them. Without it a whole response (a file sent with `sendfile`) can wait in the socket,
/// and the client's acknowledgements send it: on loopback, on the client's CPU.
fn limit_unsent(stream: &tokio::net::TcpStream, lowat: u32) {
    if lowat == 0 {
        return;
    }
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_notsent_lowat(lowat) {
        tracing::debug!("TCP_NOTSENT_LOWAT not set: {e}");
    }
}

/// Accepts on every listener until `stop` turns true, then stops accepting and lets open
/// connections finish their in-flight request for up to `graceful` (idle ones close at once).
/// At most `--max-connections` are open: beyond it the acceptors wait, and new connections
/// queue in the listen backlog. Returns whether every connection finished in time.
pub async fn serve(
    front: Arc<Front>,
    listeners: Vec<Listener>,
    mut stop: watch::Receiver<bool>,
    graceful: Duration,
) -> bool {
    let shutdown = GracefulShutdown::new();
    let (graceful_tx, graceful_rx) = watch::channel(false);
    let servers = Arc::new(Servers::new(&front.limits, graceful_rx));
    let open = Arc::new(Semaphore::new(front.limits.max_connections.max(1)));
    // One acceptor over every listener hands its connections to this one loop, which owns
    // the builder and the graceful-shutdown tracker. It takes a place among
    // --max-connections first, then waits for a connection on any listener.
    let (conn_tx, mut conn_rx) = tokio::sync::mpsc::channel::<Accepted>(64);
    let acceptor = {
        let tx = conn_tx.clone();
        let mut stop = stop.clone();
        let open = open.clone();
        tokio::spawn(async move {
            let mut full_since: Option<Instant> = None;
            loop {
                let permit = match open.clone().try_acquire_owned() {
                    Ok(permit) => permit,
                    Err(_) => {
                        if full_since.is_none() {
                            full_since = Some(Instant::now());
                            tracing::warn!(
                                "--max-connections reached: new connections wait in the listen backlog until one closes"
                            );
                        }
                        tokio::select! {
                            biased;
                            () = stopped(&mut stop) => break,
                            permit = open.clone().acquire_owned() => match permit {
                                Ok(permit) => permit,
                                Err(_) => break,
                            },
                        }
                    }
                };
                if let Some(since) = full_since.take() {
                    tracing::info!(
                        "accepting connections again after {:.1}s at --max-connections",
                        since.elapsed().as_secs_f64()
                    );
                }
                let accepted = tokio::select! {
                    // Once stopped, accept nothing more.
                    biased;
                    () = stopped(&mut stop) => break,
                    accepted = accept_any(&listeners) => accepted,
                };
                match accepted {
                    Ok((stream, peer, route_port, tls)) => {
                        let Some(accepted) = Accepted::new(stream, peer, route_port, tls, permit)
                        else {
                            continue;
                        };
                        if tx.send(accepted).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        // EMFILE and friends: wait a little rather than spin.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            // Stopped: take what the backlogs hold while there is room, then close this
            // process's copies of the listening sockets (new connections go to another front
            // process, or are refused once the last copy is closed).
            for listener in listeners {
                drain_backlog(listener, &tx, &open).await;
            }
        })
    };
    drop(conn_tx);
    let start = |accepted: Accepted| {
        let Accepted {
            stream,
            peer,
            local,
            route_port,
            tls,
            permit,
        } = accepted;
        let front = front.clone();
        let addrs = Addrs {
            peer,
            local,
            route_port,
            via: None,
        };
        if let Conn::Tcp(stream) = &stream {
            let _ = stream.set_nodelay(true);
            limit_unsent(stream, front.limits.tcp_notsent_lowat);
        }
        let decision = match &front.proxy {
            None => Decision::Plain,
            Some(proxy) => proxy.decide(&front.site.config, peer, local, route_port),
        };
        if decision == Decision::Refuse {
            tracing::info!(
                peer = %peer,
                "PROXY protocol: a connection from an address not in --proxy-allow-from: refused"
            );
            return;
        }
        let header = decision == Decision::Header;
        match (stream, tls) {
            // The master refuses TLS on a unix socket.
            (Conn::Unix(stream), _) => {
                let conn = (front, stream, addrs, permit);
                spawn_plain(conn, header, (&servers, shutdown.watcher()));
            }
            (Conn::Tcp(stream), None) => {
                let conn = (front, stream, addrs, permit);
                spawn_plain(conn, header, (&servers, shutdown.watcher()));
            }
            (Conn::Tcp(mut stream), Some(tls)) => {
                // The PROXY header and the handshake, both within the header timeout.
                let deadline = tokio::time::Instant::now() + front.limits.header_timeout;
                let serving = (servers.clone(), shutdown.watcher());
                // Boxed, as in `spawn_plain`.
                tokio::spawn(Box::pin(async move {
                    let addrs = match header {
                        false => addrs,
                        true => match proxied(&mut stream, addrs, deadline).await {
                            Some(addrs) => addrs,
                            None => return,
                        },
                    };
                    let tls = (tls, deadline);
                    tls_connection(front, stream, addrs, tls, permit, serving).await;
                }));
            }
        }
    };
    loop {
        tokio::select! {
            next = conn_rx.recv() => {
                let Some(accepted) = next else { break };
                start(accepted);
            }
            () = stopped(&mut stop) => break,
        }
    }
    // Every connection already accepted is served too (the acceptors stop on their own, and
    // the channel closes when the last one has).
    while let Some(accepted) = conn_rx.recv().await {
        start(accepted);
    }
    let _ = acceptor.await;
    // Every response from now on closes its connection; connections get a moment to send
    // their next request (a keep-alive client is told to go elsewhere between requests),
    // then the idle ones are closed and the busy ones finish.
    front.draining.store(true, Ordering::Relaxed);
    let began = Instant::now();
    let grace = DRAIN_GRACE.min(graceful);
    while shutdown.count() > 0 && began.elapsed() < grace {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let open = shutdown.count();
    if open > 0 {
        tracing::info!("waiting up to {graceful:?} for {open} open connection(s) to finish");
    }
    let graceful_left = graceful.saturating_sub(began.elapsed());
    let _ = graceful_tx.send(true);
    match tokio::time::timeout(graceful_left, shutdown.shutdown()).await {
        Ok(()) => true,
        Err(_) => {
            tracing::warn!(
                "graceful timeout ({graceful_left:?}) reached with requests still running: closing their connections"
            );
            false
        }
    }
}

/// Serves a plain (not TLS) connection, watched by `watcher` (graceful shutdown), holding
/// its place among --max-connections (`permit`) until it ends. One that may speak either
/// version is first looked at for the HTTP/2 preface, within the header timeout.
async fn plain_connection<S: SendfileSocket + PeekSocket + Sync>(
    front: Arc<Front>,
    stream: S,
    addrs: Addrs,
    permit: tokio::sync::OwnedSemaphorePermit,
    (servers, watcher): (Arc<Servers>, Watcher),
) {
    let versions = match cleartext_versions(&front, &addrs) {
        Versions::Both => {
            let limit = front.limits.header_timeout;
            match tokio::time::timeout(limit, http2::starts_with_preface(&stream)).await {
                Ok(Ok(true)) => Versions::Http2,
                Ok(Ok(false)) => Versions::Http1,
                Ok(Err(e)) => {
                    tracing::debug!(peer = %addrs.peer, "connection ended: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(peer = %addrs.peer, "idle connection closed: nothing sent within the header timeout");
                    return;
                }
            }
        }
        versions => versions,
    };
    let socket = stream.as_fd().as_raw_fd();
    let conn = conn_stream(
        SendfileStream::new(stream),
        &front.limits,
        addrs,
        None,
        Some(socket),
    );
    serve_connection(front, conn, versions, (servers, watcher), permit).await;
}

/// Serves a connection's stream as hyper's HTTP/1 server (as before HTTP/2 was added), or its
/// HTTP/2 one (with the idle timeout of [`http2::until_idle`]), watched by `watcher`, holding
/// `permit` until it ends.
async fn serve_connection<S>(
    front: Arc<Front>,
    (io, info): (ConnStream<S>, Arc<ConnInfo>),
    versions: Versions,
    (servers, watcher): (Arc<Servers>, Watcher),
    permit: tokio::sync::OwnedSemaphorePermit,
) where
    S: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + super::http1::WaitReadable
        + Unpin
        + Send
        + 'static,
{
    let ended = match versions {
        Versions::Http1 | Versions::Both => {
            let (timeout, shared) = (front.limits.header_timeout, info.shared.clone());
            let (front, info) = (front.clone(), info.clone());
            // hyper allocates room for the request future when the connection starts and
            // keeps it to the end: boxed, an idle keep-alive connection holds a pointer, not
            // the future's kilobytes (the box lives only while a request is served).
            let service = service_fn(move |req| Box::pin(handle(front.clone(), info.clone(), req)));
            let stop = servers.graceful.clone();
            let ended =
                super::http1::serve(&servers.http1, io, shared, service, timeout, stop).await;
            // Held until here: the front's shutdown waits for this connection too.
            drop(watcher);
            ended
        }
        Versions::Http2 => {
            let io = TokioIo::new(io);
            // hyper runs each stream's request as a task of its own, and moves the request's
            // future as it spawns it: on the heap, a move is a pointer's, not the future's
            // kilobytes (HTTP/1.1 polls it in place, in the connection's task).
            let service = {
                let (front, info) = (front.clone(), info.clone());
                service_fn(move |req| Box::pin(handle(front.clone(), info.clone(), req)))
            };
            let conn = servers.http2.serve_connection(io, service);
            let idle = front.limits.header_timeout;
            let stop = servers.graceful.clone();
            // On the heap: the task of every connection is as large as its largest state, and
            // HTTP/1.1 connections (most, and the idle ones) need not carry HTTP/2's.
            let ended = Box::pin(http2::until_idle(conn, &info.shared, idle, stop)).await;
            // Held until here: the front's shutdown waits for this connection too.
            drop(watcher);
            ended.map_err(ConnError::Hyper)
        }
    };
    match ended {
        Ok(()) => {}
        Err(ConnError::Hyper(e)) => refused_by_hyper(&front, &info, &e),
        Err(ConnError::HeadTimeout) => {
            head_timed_out(&front, &info, &"read header from client timeout")
        }
    }
    drop(permit);
}

/// Starts serving a plain connection: at once, or, with `header`, once its PROXY header is
/// read (within the header timeout).
fn spawn_plain<S: SendfileSocket + PeekSocket + Sync>(
    (front, mut stream, addrs, permit): (Arc<Front>, S, Addrs, tokio::sync::OwnedSemaphorePermit),
    header: bool,
    (servers, watcher): (&Arc<Servers>, Watcher),
) {
    // Each task's future boxed: a connection's is large (hyper's state and the request
    // being served), and the spawn and each change of the task's stage would copy it whole.
    if !header {
        tokio::spawn(Box::pin(plain_connection(
            front,
            stream,
            addrs,
            permit,
            (servers.clone(), watcher),
        )));
        return;
    }
    let deadline = tokio::time::Instant::now() + front.limits.header_timeout;
    let servers = servers.clone();
    tokio::spawn(Box::pin(async move {
        if let Some(addrs) = proxied(&mut stream, addrs, deadline).await {
            plain_connection(front, stream, addrs, permit, (servers, watcher)).await;
        }
    }));
}

/// Serves a TLS connection: the handshake, done by `deadline` (a client that stalls it holds
/// no more than a slow request head would) with the configuration of the virtual host its
/// ClientHello selects ([`PortTls::config_for`]), then as [`plain_connection`]. Plain HTTP
/// gets mod_ssl's 400.
async fn tls_connection(
    front: Arc<Front>,
    stream: TcpStream,
    addrs: Addrs,
    (tls, deadline): (PortTls, tokio::time::Instant),
    permit: tokio::sync::OwnedSemaphorePermit,
    serving: (Arc<Servers>, Watcher),
) {
    let socket = stream.as_raw_fd();
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout_at(deadline, stream.peek(&mut first)).await;
    if matches!(peeked, Ok(Ok(1))) && first[0] != TLS_HANDSHAKE_RECORD {
        refuse_plain_http(stream, front.limits.header_timeout).await;
        return;
    }
    // The ClientHello first: its SNI name selects the virtual host, whose configuration (its
    // certificate, its SSLProtocol versions, its ALPN answer) finishes the handshake, as with
    // mod_ssl; a client offering none of its versions gets a protocol_version alert.
    let handshake = tokio::time::timeout_at(deadline, async {
        let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream).await?;
        let config = tls.config_for(&start.client_hello());
        start.into_stream(config).await
    })
    .await;
    let stream = match handshake {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::info!(peer = %addrs.peer, "TLS handshake failed: {e}");
            return;
        }
        Err(_) => {
            tracing::info!(peer = %addrs.peer, "TLS handshake not done within the header timeout: closed");
            return;
        }
    };
    let tls_state = stream.get_ref().1;
    let sni = tls_state.server_name().map(str::to_string);
    // ALPN decides; a client that negotiated nothing speaks HTTP/1.1 (or, with `--http 2`,
    // HTTP/2 with prior knowledge).
    let versions = match tls_state.alpn_protocol() {
        Some(b"h2") => Versions::Http2,
        _ if front.limits.http == HttpMode::Http2 => Versions::Http2,
        _ => Versions::Http1,
    };
    let conn = conn_stream(
        stream,
        &front.limits,
        addrs,
        Some(TlsInfo { sni }),
        Some(socket),
    );
    serve_connection(front, conn, versions, serving, permit).await;
}

impl Addrs {
    /// The addresses once a PROXY header named `client` (the socket's own peer, for a
    /// `LOCAL` or `UNKNOWN` header, changes nothing).
    fn proxied(self, client: SocketAddr) -> Addrs {
        if client == self.peer {
            return self;
        }
        Addrs {
            peer: client,
            via: Some(self.peer),
            ..self
        }
    }
}

/// Reads a connection's PROXY header by `deadline`: the connection's addresses with the
/// client it names (unchanged for a `LOCAL` or `UNKNOWN` header), or None when there is no
/// valid header in time (logged at info; the caller closes the connection).
async fn proxied<S: PeekSocket>(
    stream: &mut S,
    addrs: Addrs,
    deadline: tokio::time::Instant,
) -> Option<Addrs> {
    let peer = addrs.peer;
    match tokio::time::timeout_at(deadline, proxy_protocol::read_header(stream)).await {
        Ok(Ok(header)) => {
            let client = header.source.unwrap_or(peer);
            tracing::trace!(peer = %peer, client = %client, version = header.version, "PROXY header");
            Some(addrs.proxied(client))
        }
        Ok(Err(HeaderError::Closed(0))) => {
            // A balancer's TCP check, or a port scan: nothing was asked.
            tracing::debug!(peer = %peer, "PROXY protocol: closed before sending anything");
            None
        }
        Ok(Err(e)) => {
            tracing::info!(peer = %peer, "PROXY protocol: {e}: closed");
            None
        }
        Err(_) => {
            tracing::info!(
                peer = %peer,
                "PROXY protocol: no whole PROXY header within the header timeout: closed"
            );
            None
        }
    }
}

/// The address a connection came in on, as requests see it: a TCP socket's own; for a unix
/// socket, [`super::listen::UNIX_PEER`] and the port it is routed as.
fn local_addr(stream: &Conn, route_port: u16) -> io::Result<SocketAddr> {
    match stream {
        Conn::Tcp(s) => s.local_addr(),
        Conn::Unix(_) => Ok(SocketAddr::new(super::listen::UNIX_PEER, route_port)),
    }
}

/// A unix-socket peer's address as requests, `Require` and the logs see it:
/// [`super::listen::UNIX_PEER`], port 0 (a unix peer has no address of its own).
const UNIX_PEER_ADDR: SocketAddr = SocketAddr::new(super::listen::UNIX_PEER, 0);

/// The first byte of a TLS ClientHello (a handshake record).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// mod_ssl's answer to plain HTTP on a TLS port: 400, saying so, and the connection closed.
async fn refuse_plain_http(mut stream: tokio::net::TcpStream, limit: Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const BODY: &str = "<!DOCTYPE HTML PUBLIC \"-//IETF//DTD HTML 2.0//EN\">\n<html><head>\n<title>400 Bad Request</title>\n</head><body>\n<h1>Bad Request</h1>\n<p>Your browser sent a request that this server could not understand.<br />\nReason: You're speaking plain HTTP to an SSL-enabled server port.<br />\n Instead use the HTTPS scheme to access this URL, please.<br />\n</p>\n</body></html>\n";
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/html; charset=iso-8859-1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    // What the client sent so far is read (and dropped), so closing does not reset the
    // connection before it reads the answer.
    let mut sent = [0u8; 8192];
    let _ = stream.try_read(&mut sent);
    let _ = tokio::time::timeout(limit, async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await?;
        // Until the client closes too (bounded by the timeout).
        while stream.read(&mut sent).await? > 0 {}
        std::io::Result::Ok(())
    })
    .await;
}

/// The next connection on any of `listeners`, with its peer and the port its requests are
/// routed as.
async fn accept_any(
    listeners: &[Listener],
) -> io::Result<(Conn, SocketAddr, u16, Option<PortTls>)> {
    std::future::poll_fn(|cx| {
        for listener in listeners {
            let accepted = match &listener.socket {
                ListenSocket::Tcp(s) => s
                    .poll_accept(cx)
                    .map_ok(|(stream, peer)| (Conn::Tcp(stream), peer)),
                ListenSocket::Unix(s) => s
                    .poll_accept(cx)
                    .map_ok(|(stream, _)| (Conn::Unix(stream), UNIX_PEER_ADDR)),
            };
            if let std::task::Poll::Ready(accepted) = accepted {
                return std::task::Poll::Ready(accepted.map(|(stream, peer)| {
                    (stream, peer, listener.route_port, listener.tls.clone())
                }));
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// Accepts what a stopping listener's backlog holds, without waiting and while there is room
/// among --max-connections, then drops the listener: connections the kernel accepted for it
/// are served, not reset.
async fn drain_backlog(
    listener: Listener,
    tx: &tokio::sync::mpsc::Sender<Accepted>,
    open: &Arc<Semaphore>,
) {
    let route_port = listener.route_port;
    let tls = listener.tls;
    let accept: Box<dyn Fn() -> io::Result<(Conn, SocketAddr)> + Send> = match listener.socket {
        ListenSocket::Tcp(s) => {
            let Ok(socket) = s.into_std() else { return };
            Box::new(move || {
                let (stream, peer) = socket.accept()?;
                stream.set_nonblocking(true)?;
                Ok((Conn::Tcp(TcpStream::from_std(stream)?), peer))
            })
        }
        ListenSocket::Unix(s) => {
            let Ok(socket) = s.into_std() else { return };
            Box::new(move || {
                let (stream, _) = socket.accept()?;
                stream.set_nonblocking(true)?;
                Ok((Conn::Unix(UnixStream::from_std(stream)?), UNIX_PEER_ADDR))
            })
        }
    };
    while let Ok(permit) = open.clone().try_acquire_owned() {
        let Ok((stream, peer)) = accept() else {
            return;
        };
        let Some(accepted) = Accepted::new(stream, peer, route_port, tls.clone(), permit) else {
            continue;
        };
        if tx.send(accepted).await.is_err() {
            return;
        }
    }
}

/// A connection hyper ended with an error. When it refused a request head (hyper answered
/// it: 400 malformed, 414/431 too large; or closed it: a head that had begun to arrive when
/// the header timeout struck, logged as Apache logs it, 408), the refusal is logged at info
/// with the request line as far as it came, and written to the access log with its status.
/// A client dropped for reading its response too slowly is logged at info.
fn refused_by_hyper(front: &Front, conn: &ConnInfo, e: &hyper::Error) {
    if let Some(io) = std::error::Error::source(e).and_then(|s| s.downcast_ref::<std::io::Error>())
    {
        if io.kind() == std::io::ErrorKind::TimedOut {
            tracing::info!(peer = %conn.peer, "{io}");
            return;
        }
    }
    let status = if e.is_timeout() {
        return head_timed_out(front, conn, e);
    } else if e.is_parse_too_large() {
        if e.to_string().contains("URI") {
            414
        } else {
            431
        }
    } else if e.is_parse() || e.is_parse_status() {
        400
    } else {
        tracing::debug!(peer = %conn.peer, "connection ended: {e}");
        return;
    };
    let line = conn.heads.last_request_line().unwrap_or_default();
    log_refusal(front, conn, (&line, status), e);
}

/// A head not complete within the header timeout: 408 in the logs, as Apache's
/// mod_reqtimeout; on an idle keep-alive connection it is no refusal, only a head that had
/// begun to arrive is.
fn head_timed_out(front: &Front, conn: &ConnInfo, e: &dyn std::fmt::Display) {
    match conn.heads.last_request_line() {
        None => tracing::debug!(peer = %conn.peer, "idle connection closed: {e}"),
        Some(line) => log_refusal(front, conn, (&line, 408), e),
    }
}

/// Logs a refused head (`line`, its request line as far as it came) with its `status`, to
/// the error log and the host's access logs.
fn log_refusal(
    front: &Front,
    conn: &ConnInfo,
    (line, status): (&[u8], u16),
    e: &dyn std::fmt::Display,
) {
    tracing::info!(
        peer = %conn.peer,
        request = %String::from_utf8_lossy(line).escape_debug(),
        "{status}: {e}"
    );
    if let Some(logs) = &front.logs {
        let host = front
            .site
            .config
            .select_host(Some(conn.local.ip()), conn.route_port, None);
        let job = LogJob {
            writer: logs.writer.clone(),
            logs: logs.for_host(host),
            record: LogRecord {
                server_name: front.site.config.canonical_name(host).to_string(),
                via: conn.via,
                ..LogRecord::refused(conn.peer, conn.local, line, status)
            },
        };
        job.write(0);
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
pub(super) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}

/// Serves one request: never fails (errors are HTTP responses).
async fn handle(
    front: Arc<Front>,
    conn: Arc<ConnInfo>,
    mut req: Request<Incoming>,
) -> Result<Response<LoggedBody<ResponseBody>>, Infallible> {
    let metric = front
        .metrics
        .as_ref()
        .map(|m| Box::new(m.begin(Instant::now())));
    let h2 = req.version() == Version::HTTP_2;
    if h2 {
        // mod_http2 makes the Host header of `:authority`.
        if let Some(authority) = req.uri().authority() {
            if !req.headers().contains_key(header::HOST) {
                if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
                    req.headers_mut().insert(header::HOST, host);
                }
            }
        }
    }
    // The raw head as the client sent it (the pre-parse may have percent-encoded bytes of
    // the target that hyper refuses); hyper's own parse when the pre-parse stood aside. An
    // HTTP/2 request's target is its `:path`, as sent.
    let uri = req.uri();
    let absolute;
    let seen: &[u8] = match uri.path_and_query() {
        Some(pq) if uri.scheme().is_none() || h2 => pq.as_str().as_bytes(),
        _ => {
            absolute = uri.to_string();
            absolute.as_bytes()
        }
    };
    let raw = match h2 {
        false => conn.heads.next(req.method().as_str(), seen),
        true => None,
    };
    let (target, request_line, head_len) = match raw {
        Some(raw) => (raw.target(), raw.request_line(), Some(raw.len())),
        None => {
            let mut line = Vec::with_capacity(seen.len() + 20);
            line.extend_from_slice(req.method().as_str().as_bytes());
            line.push(b' ');
            line.extend_from_slice(seen);
            line.push(b' ');
            line.extend_from_slice(protocol(req.version()).as_bytes());
            (Bytes::copy_from_slice(seen), Bytes::from(line), None)
        }
    };
    // An absolute-form target's authority replaces the Host header, as in Apache (an HTTP/2
    // request's `:authority` is its Host).
    let host = req.uri().authority().map(|a| a.to_string()).or_else(|| {
        req.headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
    });
    let host_logs = error_log::any_host_logs();
    let vhost = if front.logs.is_some() || host_logs {
        front
            .site
            .config
            .select_host(Some(conn.local.ip()), conn.route_port, host.as_deref())
    } else {
        None
    };
    // The access log's entry, boxed at once (its future stays small; it is sent boxed).
    let record = front.logs.as_ref().map(|logs| {
        let server_name = front.site.config.canonical_name(vhost).to_string();
        let record = LogRecord {
            host: host
                .as_deref()
                .map(wsgi_config::route::host_name)
                .unwrap_or_else(|| server_name.clone()),
            server_name,
            head_len: head_len.unwrap_or(request_line.len() + 2),
            keepalives: conn.shared.responses(),
            closes: wants_close(&req),
            request_headers: req.headers().clone(),
            via: conn.via,
            ..LogRecord::new(
                conn.peer,
                conn.local,
                &request_line,
                req.method().as_str(),
                protocol(req.version()),
                &target,
            )
        };
        Box::new(LogJob {
            writer: logs.writer.clone(),
            logs: logs.for_host(vhost),
            record,
        })
    });
    let verdict = strict::check(
        &strict::Head {
            method: req.method(),
            target: &target,
            version: req.version(),
            headers: req.headers(),
            has_body: !req.body().is_end_stream(),
            request_line_len: request_line.len(),
            head_len,
        },
        &front.limits.head,
    );
    let misdirected = h2 && front.limits.http == HttpMode::Auto && {
        let tls = conn.tls.is_some();
        let host =
            front
                .site
                .config
                .select_host(Some(conn.local.ip()), conn.route_port, host.as_deref());
        !http2::host_speaks_h2(site_protocols(&front, host), tls)
    };
    let mut response = match verdict {
        Verdict::Pass if misdirected => {
            tracing::info!(
                peer = %conn.peer,
                host = host.as_deref().unwrap_or_default(),
                "421: an HTTP/2 request for a host whose Protocols do not list h2 (TLS) or h2c (cleartext)"
            );
            error_response(StatusCode::MISDIRECTED_REQUEST)
        }
        Verdict::Pass if host_logs => {
            InHost::new(vhost, Box::pin(dispatch(&front, &conn, req, target, host))).await
        }
        Verdict::Pass => dispatch(&front, &conn, req, target, host).await,
        Verdict::ServerOptions => server_options(),
        Verdict::Refuse(refusal) => {
            tracing::info!(
                peer = %conn.peer,
                method = %req.method(),
                "{}: {}",
                refusal.status,
                refusal.reason
            );
            refuse(refusal.status)
        }
    };
    if front.draining.load(Ordering::Relaxed) && !h2 {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    conn.shared.response_started();
    let job = record.map(|mut job| {
        let record = &mut job.record;
        record.status = response.status().as_u16();
        record.response_headers = response.headers().clone();
        record.closes = record.closes
            || response
                .headers()
                .get(header::CONNECTION)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        if let Some(extras) = response.extensions_mut().remove::<LogExtras>() {
            record.filename = extras.filename;
            record.env = extras.env;
            record.user = extras.user;
            record.request_id = extras.request_id;
        }
        job
    });
    let metric = metric.map(|mut metric| {
        metric.status = response.status().as_u16();
        if let Some(labels) = response.extensions_mut().remove::<AppLabels>() {
            metric.labels = labels;
        }
        metric
    });
    Ok(response.map(|body| LoggedBody::new(body, job, metric)))
}

/// Where a request's hook scripts see it: the `SCRIPT_NAME`/`PATH_INFO` split, the file, the
/// request's variables, and the server's name and port.
struct HookPlace {
    script_name: String,
    path_info: String,
    script: std::path::PathBuf,
    env: Vec<(String, String)>,
    server_name: String,
    port: u16,
}

/// The virtual host of a request (for names): None is the main server.
fn vhost_of(front: &Front, conn: &ConnInfo, host: Option<&str>) -> Option<usize> {
    front
        .site
        .config
        .select_host(Some(conn.local.ip()), conn.route_port, host)
}

/// What a request's mod_wsgi scripts are called with, when `settings` names any and the
/// front has its embedded Python (None otherwise: [`auth::authorize`] says what is missing).
fn front_hooks(
    front: &Front,
    conn: &ConnInfo,
    req: &Request<Incoming>,
    target: &[u8],
    host: Option<&str>,
    settings: &wsgi_config::WsgiSettings,
    place: impl FnOnce() -> HookPlace,
) -> Option<FrontHooks> {
    let scripts = settings.access_script.is_some()
        || settings.auth_user_script.is_some()
        || settings.auth_group_script.is_some()
        || settings.dispatch_script.is_some();
    if !scripts {
        return None;
    }
    let runtime = front.python.clone()?;
    let place = place();
    let head = request_head(
        conn,
        wsgi_interp::method_text(req.method().as_str()),
        (req.headers(), req.uri(), req.version()),
        target,
        Mount {
            script_name: &place.script_name,
            path_info: &place.path_info,
            script: &place.script,
            env: &place.env,
            server_name: &place.server_name,
            port: place.port,
            server: front
                .site
                .config
                .server_identity(vhost_of(front, conn, host)),
            context: None,
            stamps: Stamps::now_in(*FRONT_PID),
        },
        settings,
    );
    let config = &front.site.config;
    Some(FrontHooks {
        runtime,
        site: front.site.clone(),
        vhost: vhost_of(front, conn, host),
        server_name: place.server_name,
        port: place.port,
        host_header: host.map(wsgi_config::route::host_name),
        script_name: if config.server.case_sensitive {
            place.script_name
        } else {
            place.script_name.to_lowercase()
        },
        env: place.env,
        head,
        opts: CallOptions {
            process_group: String::new(),
            multithread: front.multithread,
            multiprocess: false,
            run_once: false,
            pass_authorization: settings.pass_authorization == Some(true),
        },
        reload: settings.script_reloading != Some(false),
    })
}

/// Whether the client asked for its connection to close after this request (HTTP/1.0
/// without keep-alive, or `Connection: close`).
fn wants_close<B>(req: &Request<B>) -> bool {
    let has = |token: &[u8]| {
        req.headers().get_all(header::CONNECTION).iter().any(|v| {
            v.as_bytes()
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
        })
    };
    if req.version() == Version::HTTP_10 {
        !has(b"keep-alive")
    } else {
        has(b"close")
    }
}

/// Adds what the access log's `%f`, `%{VAR}e`, `%u` and `%L` show to a response (when there
/// are logs).
fn with_log_extras(
    mut response: Response<ResponseBody>,
    front: &Front,
    filename: Option<std::path::PathBuf>,
    env: Vec<(String, String)>,
    (user, request_id): (Option<String>, u64),
) -> Response<ResponseBody> {
    if front.logs.is_some() {
        response.extensions_mut().insert(LogExtras {
            filename,
            env,
            user,
            request_id,
        });
    }
    response
}

/// Checks who may see what `settings` covers (its `Require` lines, and Basic
/// authentication when they ask for a user): `Err` is the answer instead (403, 401 with
/// `WWW-Authenticate`, or 500 for a configuration that cannot decide), with the user the
/// credentials named (the access log shows it, as Apache's). Rules that hash a password or
/// look up a name run on the blocking pool.
async fn check_access(
    conn: &ConnInfo,
    req: &Request<Incoming>,
    settings: &wsgi_config::WsgiSettings,
    env: &[(String, String)],
    what: &std::path::Path,
    hooks: Option<FrontHooks>,
) -> Result<Granted, (Response<ResponseBody>, Option<String>)> {
    if settings.authz.is_none() && settings.access_script.is_none() {
        return Ok(Granted::default());
    }
    let blocking = settings.access_script.is_some()
        || settings
            .authz
            .as_ref()
            .is_some_and(|a| a.needs_user() || a.needs_host_name());
    let decided = if blocking {
        let (settings, headers, env) = (settings.clone(), req.headers().clone(), env.to_vec());
        let (client, server, method) = (conn.peer.ip(), conn.local.ip(), req.method().clone());
        tokio::task::spawn_blocking(move || {
            auth::authorize(
                &settings,
                &auth::RequestFacts {
                    client,
                    server,
                    method: method.as_str(),
                    headers: &headers,
                    env: &env,
                },
                hooks.as_ref().map(|h| h as &dyn auth::ScriptHooks),
            )
        })
        .await
        .unwrap_or_else(|e| Err(Refusal::Misconfigured(format!("the check failed: {e}"))))
    } else {
        auth::authorize(
            settings,
            &auth::RequestFacts {
                client: conn.peer.ip(),
                server: conn.local.ip(),
                method: req.method().as_str(),
                headers: req.headers(),
                env,
            },
            None,
        )
    };
    decided.map_err(|refusal| {
        let path = req.uri().path();
        match refusal {
            Refusal::Forbidden(why) => {
                tracing::info!(peer = %conn.peer, path, "403: {why} ({})", what.display());
                (error_response(StatusCode::FORBIDDEN), None)
            }
            Refusal::Unauthorized { realm, why, user } => {
                tracing::info!(peer = %conn.peer, path, "401: {why} ({})", what.display());
                let mut response = error_response(StatusCode::UNAUTHORIZED);
                let challenge = format!("Basic realm=\"{}\"", realm.replace('"', "\\\""));
                if let Ok(value) = HeaderValue::from_str(&challenge) {
                    response
                        .headers_mut()
                        .insert(header::WWW_AUTHENTICATE, value);
                }
                (response, user)
            }
            Refusal::Misconfigured(why) => {
                tracing::error!(path, "500: {why} ({})", what.display());
                (error_response(StatusCode::INTERNAL_SERVER_ERROR), None)
            }
        }
    })
}

/// `OPTIONS *`: what the server allows, as Apache answers it.
fn server_options() -> Response<ResponseBody> {
    let mut response = Response::new(full(Bytes::new()));
    response.headers_mut().insert(
        header::ALLOW,
        HeaderValue::from_static("GET,POST,OPTIONS,HEAD"),
    );
    response
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        // As mod_http2 names it (`SERVER_PROTOCOL`, the access log's `%H` and `%r`).
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// Answers a request that passed the head checks: `host` is its Host (or absolute-form
/// authority).
async fn dispatch(
    front: &Front,
    conn: &ConnInfo,
    req: Request<Incoming>,
    target: Bytes,
    host: Option<String>,
) -> Response<ResponseBody> {
    let site = &front.site;
    let path = req.uri().path().to_string();
    if let Some((alias, rest)) = site.alias_for(&path) {
        // Boxed, as every path below but the application's: this future stays small.
        return Box::pin(serve_static(alias, rest, &req)).await;
    }
    /// Where a request goes, decided before anything is awaited.
    enum Decision {
        /// mod_alias's `Redirect`, `Alias` (or a refusal of the path).
        Alias(Result<AliasTarget, wsgi_config::route::RouteError>),
        /// A `WSGIScriptAlias` (boxed: the route goes on to [`serve_route`], whose future
        /// holds it across its awaits).
        App(Box<Route>),
        /// The `DocumentRoot`, if any.
        Document(Result<Option<AliasTarget>, wsgi_config::route::RouteError>),
    }
    let decision = {
        // What SetEnvIf tests: Request_URI is the decoded path (Apache's r->uri).
        let uri = if site.tests_requests {
            wsgi_config::route::normalize_path(&path)
                .map(|decoded| decoded.iter().map(|&b| char::from(b)).collect::<String>())
                .unwrap_or_else(|_| path.clone())
        } else {
            String::new()
        };
        let header = |name: &str| {
            let mut values = req.headers().get_all(name).iter();
            let first = values.next()?;
            let mut joined = String::from_utf8_lossy(first.as_bytes()).into_owned();
            for more in values {
                joined.push_str(", ");
                joined.push_str(&String::from_utf8_lossy(more.as_bytes()));
            }
            Some(joined)
        };
        let facts = wsgi_config::env::RequestFacts {
            method: req.method().as_str(),
            protocol: protocol(req.version()),
            uri: &uri,
            remote_addr: conn.peer.ip(),
            server_addr: conn.local.ip(),
            header: &header,
        };
        let request = RouteRequest {
            local_ip: Some(conn.local.ip()),
            local_port: conn.route_port,
            host: host.as_deref(),
            path: &path,
            facts: site.tests_requests.then_some(&facts),
        };
        // mod_alias first (mod_wsgi's WSGIScriptAlias yields to it): Redirect, then Alias.
        match site.config.map_alias(&request, req.uri().query()) {
            Ok(Some(target)) => Decision::Alias(Ok(target)),
            Err(e) => Decision::Alias(Err(e)),
            Ok(None) => match site.config.route(&request) {
                Ok(Some(route)) => Decision::App(Box::new(route)),
                Ok(None) => Decision::Document(site.config.document_file(&request)),
                Err(e) => Decision::Alias(Err(e)),
            },
        }
    };
    // A file: served as it is, or refused by its handler (`refusal`), once access is granted.
    let (file, settings, env, refusal) = match decision {
        Decision::Alias(Ok(AliasTarget::Redirect { status, location })) => {
            return redirect(status, location, host.as_deref(), conn);
        }
        Decision::Alias(Ok(AliasTarget::File {
            path: file,
            settings,
            env,
        }))
        | Decision::Document(Ok(Some(AliasTarget::File {
            path: file,
            settings,
            env,
        }))) => (file, settings, env, None),
        Decision::Alias(Ok(AliasTarget::Script {
            route: Ok(route), ..
        }))
        | Decision::Document(Ok(Some(AliasTarget::Script {
            route: Ok(route), ..
        }))) => return Box::pin(serve_route(front, conn, req, target, host, route)).await,
        Decision::Alias(Ok(AliasTarget::Script {
            file,
            settings,
            env,
            route: Err(e),
        }))
        | Decision::Document(Ok(Some(AliasTarget::Script {
            file,
            settings,
            env,
            route: Err(e),
        }))) => (file, settings, env, Some(e)),
        Decision::Alias(Err(e)) => {
            tracing::info!(method = %req.method(), path, "{}: {e}", e.status());
            return refuse(e.status());
        }
        // An application's route future is boxed (as above), and so are the file paths'
        // below: each future stays small, copied into its box and allocated fast (mimalloc's
        // size classes from about 8 KiB cost thousands of instructions more per request).
        Decision::App(route) => {
            return Box::pin(serve_route(front, conn, req, target, host, route)).await;
        }
        Decision::Document(_) => {
            tracing::info!(method = %req.method(), path, "404: no WSGIScriptAlias, Alias, DocumentRoot or --url-alias covers the path");
            return error_response(StatusCode::NOT_FOUND);
        }
    };
    let place = || HookPlace {
        script_name: String::new(),
        path_info: path.clone(),
        script: file.clone(),
        env: env.clone(),
        server_name: site
            .config
            .canonical_name(vhost_of(front, conn, host.as_deref()))
            .to_string(),
        port: conn.route_port,
    };
    let hooks = front_hooks(
        front,
        conn,
        &req,
        &target,
        host.as_deref(),
        &settings,
        place,
    );
    // Apache checks who may see the file before its handler runs (or refuses it).
    let checked = Box::pin(check_access(conn, &req, &settings, &env, &file, hooks)).await;
    let (response, user) = match checked {
        Ok(granted) => match refusal {
            None => (
                Box::pin(serve_file(&file, &req, host.as_deref(), conn)).await,
                granted.user,
            ),
            Some(e) => {
                if e.status() == 500 {
                    tracing::error!(method = %req.method(), path, "500: {e}");
                } else {
                    tracing::info!(method = %req.method(), path, "{}: {e}", e.status());
                }
                let status =
                    StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                (error_response(status), granted.user)
            }
        },
        Err((refused, user)) => (refused, user),
    };
    with_log_extras(response, front, Some(file), env, (user, 0))
}

/// Runs a routed request (a `WSGIScriptAlias` mount, or a file its handler runs): who may see
/// it is checked, the `WSGIDispatchScript` runs, then the application.
async fn serve_route(
    front: &Front,
    conn: &ConnInfo,
    req: Request<Incoming>,
    target: Bytes,
    host: Option<String>,
    mut route: Box<Route>,
) -> Response<ResponseBody> {
    let hooks_for = |route: &Route| {
        let place = || HookPlace {
            script_name: route.script_name.clone(),
            path_info: route.path_info.clone(),
            script: route.script_filename().to_path_buf(),
            env: route.env.clone(),
            server_name: route.server_name.clone(),
            port: route.port,
        };
        front_hooks(
            front,
            conn,
            &req,
            &target,
            host.as_deref(),
            &route.settings,
            place,
        )
    };
    let hooks = hooks_for(&route);
    let checked = check_access(
        conn,
        &req,
        &route.settings,
        &route.env,
        route.script_filename(),
        hooks,
    )
    .await;
    let granted = match checked {
        Ok(granted) => granted,
        Err((refused, user)) => {
            let (script, env) = (route.script_filename().to_path_buf(), route.env);
            return with_log_extras(refused, front, Some(script), env, (user, 0));
        }
    };
    if let Some(script) = route.settings.dispatch_script.clone() {
        let Some(mut hooks) = hooks_for(&route) else {
            tracing::error!(
                path = req.uri().path(),
                "500: a WSGIDispatchScript applies, but this front process started no embedded Python: restart wsgi serve"
            );
            return error_response(StatusCode::INTERNAL_SERVER_ERROR);
        };
        if let Some(user) = &granted.user {
            hooks
                .head
                .extra
                .push(("REMOTE_USER".into(), user.clone().into_bytes()));
        }
        let dispatched = tokio::task::spawn_blocking(move || {
            let result = hooks.dispatch(&script, &mut route);
            (result, route)
        })
        .await;
        route = match dispatched {
            Ok((Ok(()), route)) => route,
            Ok((Err(why), _)) => {
                tracing::error!(path = req.uri().path(), "500: {why}");
                return error_response(StatusCode::INTERNAL_SERVER_ERROR);
            }
            Err(e) => {
                tracing::error!(
                    path = req.uri().path(),
                    "500: the WSGIDispatchScript call failed: {e}"
                );
                return error_response(StatusCode::INTERNAL_SERVER_ERROR);
            }
        };
    }
    let labels = front.metrics.is_some().then(|| AppLabels {
        process_group: match &route.process_group {
            ProcessGroup::Embedded => "embedded".to_string(),
            ProcessGroup::Daemon(group) => group.clone(),
        },
        application_group: match route.application_group.as_str() {
            "" => "%{GLOBAL}".to_string(),
            group => group.to_string(),
        },
    });
    // `mod_wsgi.request_start` (before the body is read) and the request id, which the access
    // log's `%L` shows too.
    let stamps = Stamps::now_in(*FRONT_PID);
    let mut response = if front.logs.is_some() {
        let (script, env) = (route.script_filename().to_path_buf(), route.env.clone());
        let user = granted.user.clone();
        let request_id = stamps.request_id;
        let response = run_app(front, conn, route, req, (target, stamps), granted).await;
        with_log_extras(response, front, Some(script), env, (user, request_id))
    } else {
        run_app(front, conn, route, req, (target, stamps), granted).await
    };
    if let Some(labels) = labels {
        response.extensions_mut().insert(labels);
    }
    response
}

/// The query string of a raw target (after the first `?`, before any `#`).
fn query_of(target: &[u8]) -> &[u8] {
    match target.iter().position(|&b| b == b'?') {
        Some(at) => {
            let query = &target[at + 1..];
            let end = query.iter().position(|&b| b == b'#').unwrap_or(query.len());
            &query[..end]
        }
        None => b"",
    }
}

/// Reads the request body as the limits say: whole when it fits the buffer, else as a
/// stream for the worker. `Err` is the response to answer instead (the body was refused).
async fn read_body(
    front: &Front,
    body: Incoming,
    failure: &BodyFailure,
    script: &std::path::Path,
) -> Result<ChannelBody, Response<ResponseBody>> {
    if body.is_end_stream() {
        return Ok(ChannelBody::empty());
    }
    match collect_body(body, front.limits.body).await {
        Ok(Collected::Whole(pieces)) => Ok(ChannelBody::buffered(pieces)),
        Ok(Collected::Streaming(reader, prefix)) => {
            let wait_for_app = prefix.is_empty();
            let (body, pump) = request_body(reader, prefix, wait_for_app, failure.clone());
            tokio::spawn(pump);
            Ok(body)
        }
        Err(e) => {
            tracing::info!(script = %script.display(), "{}: {e}", e.status());
            Err(refuse(e.status()))
        }
    }
}

async fn run_app(
    front: &Front,
    conn: &ConnInfo,
    route: Box<Route>,
    req: Request<Incoming>,
    (target, stamps): (Bytes, Stamps),
    granted: Granted,
) -> Response<ResponseBody> {
    let (parts, body) = req.into_parts();
    let is_head = parts.method == Method::HEAD;
    // mod_wsgi's WSGIMapHEADToGET: Auto (the default) maps HEAD to GET only when an Apache
    // output filter needs the body; `wsgi serve` has none, so the app sees HEAD unless On.
    let method = if is_head && route.settings.map_head_to_get == Some(MapHeadToGet::On) {
        "GET".into()
    } else {
        wsgi_interp::method_text(parts.method.as_str())
    };
    // The pool that runs the request: the embedded workers, or the daemon group's front pool.
    let pool = match &route.process_group {
        ProcessGroup::Embedded => match &front.pool {
            Some(pool) => pool,
            None => {
                tracing::error!(script = %route.script.display(), "500: this request runs embedded, but the server started without embedded Python (every mount was in a daemon process group when it started): restart `wsgi serve` to serve it");
                return error_response(StatusCode::INTERNAL_SERVER_ERROR);
            }
        },
        ProcessGroup::Daemon(group) => match front.daemons.as_ref().and_then(|d| d.pool(group)) {
            Some(pool) => pool,
            None => {
                tracing::error!(script = %route.script.display(), "503: daemon process group `{group}` is not running: define it with WSGIDaemonProcess (a reload that adds one starts it)");
                return error_response(StatusCode::SERVICE_UNAVAILABLE);
            }
        },
    };
    // A client that stalls this response gets less time while the pool has requests waiting.
    conn.shared.serving_from(pool.waiting());
    // For the log lines of a refused request only.
    let group_label = || match &route.process_group {
        ProcessGroup::Embedded => "embedded".to_string(),
        ProcessGroup::Daemon(g) => format!("daemon process group `{g}`"),
    };
    let failure = BodyFailure::default();
    let body = match read_body(front, body, &failure, &route.script).await {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    let mut head = request_head(
        conn,
        method,
        (&parts.headers, &parts.uri, parts.version),
        &target,
        Mount {
            script_name: &route.script_name,
            path_info: &route.path_info,
            script: route.script_filename(),
            env: &route.env,
            server_name: &route.server_name,
            port: route.port,
            server: front.site.config.server_identity(route.host),
            context: Some(
                route
                    .context
                    .as_ref()
                    .map(|(p, r)| (p.as_str(), r.as_str())),
            ),
            stamps,
        },
        &route.settings,
    );
    // No configured variable has a `mod_wsgi.*` name (`RequestHead::build` leaves them out),
    // so these two are new: no need to look for them first, as `set_extra` does.
    for (name, value) in route.handler_environ() {
        head.extra.push((name.into(), value));
    }
    if let Some(user) = granted.user {
        // The authenticated user, as Apache sets it: over any SetEnv of the same names.
        head.set_extra("REMOTE_USER", user.into_bytes());
        if let Some(kind) = granted.auth_type {
            head.set_extra("AUTH_TYPE", kind.into_bytes());
        }
    }
    let daemon = matches!(route.process_group, ProcessGroup::Daemon(_));
    let app = super::spares::call_for(&route, daemon);
    let (mut sink, ResponseReceiver { mut start }) = response_channel(is_head, conn.shared.clone());
    if parts.version == Version::HTTP_2 {
        let runtime = tokio::runtime::Handle::current();
        sink = sink.with_stall_limit(StallLimit::new(runtime, front.limits.write, pool.waiting()));
    }
    let (done, done_rx) = oneshot::channel();
    let arrived = Instant::now();
    let ticket = Arc::default();
    let job = Box::new(Job {
        app,
        head,
        body,
        sink,
        arrived,
        ticket: Arc::clone(&ticket),
        done,
        host: route.host,
    });
    // A full pool's wait is boxed: this future stays small for the usual case.
    let submitted = match pool.try_submit(job) {
        Err((None, job)) => Box::pin(pool.submit(job)).await,
        Err((Some(refused), job)) => Err((refused, job)),
        Ok(may_wait) => Ok(may_wait),
    };
    let may_wait = match submitted {
        Ok(may_wait) => may_wait,
        Err((refused, _job)) => {
            return match refused {
                Refused::Busy => {
                    tracing::warn!(script = %route.script.display(), "503: every worker thread ({}) stayed busy for the whole queue timeout", group_label());
                    error_response(StatusCode::SERVICE_UNAVAILABLE)
                }
                Refused::Stopping => error_response(StatusCode::SERVICE_UNAVAILABLE),
            };
        }
    };
    // Wait for the response; at the queue timeout, a job no worker took yet is withdrawn
    // and answered at once. (When a worker was free for it, no timer is set: the worker
    // takes it at once, and still refuses it were it somehow older than the timeout.)
    let started = if may_wait {
        tokio::select! {
            biased;
            started = &mut start => started,
            () = tokio::time::sleep_until(deadline_after(arrived, pool.queue_timeout())) => {
                if ticket.withdraw() {
                    let status = pool.expired_status();
                    tracing::warn!(script = %route.script.display(), "{status}: the request waited longer than the queue timeout ({:?}) for a worker thread ({})", pool.queue_timeout(), group_label());
                    return error_response(StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE));
                }
                // A worker took it just in time.
                start.await
            }
        }
    } else {
        start.await
    };
    match started {
        Ok(start) => {
            let (head, body) = match start {
                ResponseStart::Whole(head, body) => (head, full(body)),
                ResponseStart::Streamed(head, stream) => (head, UnsyncBoxBody::new(stream)),
            };
            let mut response = Response::new(body);
            *response.status_mut() =
                StatusCode::from_u16(head.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            if let Some(reason) = head.reason {
                // Sent as the app wrote it: latin-1, as mod_wsgi gives Apache the status line.
                let reason = wsgi_config::route::latin1_bytes(&reason);
                if let Ok(reason) = hyper::ext::ReasonPhrase::try_from(reason) {
                    response.extensions_mut().insert(reason);
                }
            }
            let headers = response.headers_mut();
            for (name, value) in head.headers {
                // hyper frames the body itself; a Transfer-Encoding from the app would clash.
                if name.eq_ignore_ascii_case("transfer-encoding")
                    || name.eq_ignore_ascii_case("keep-alive")
                {
                    continue;
                }
                // The value's bytes become the header's, not a copy of them.
                match (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_maybe_shared(Bytes::from(value)),
                ) {
                    (Ok(n), Ok(v)) => {
                        headers.append(n, v);
                    }
                    _ => {
                        tracing::warn!(header = %name, "dropped a response header hyper cannot send")
                    }
                }
            }
            response
        }
        Err(_) => {
            let result = done_rx.await.unwrap_or(JobResult::Abandoned);
            if let Some(status) = failure.status() {
                return refuse(status);
            }
            let status = error_status(&result);
            match &result {
                JobResult::Expired => {
                    tracing::warn!(script = %route.script.display(), "{status}: the request waited longer than the queue timeout for a worker thread ({})", group_label());
                }
                JobResult::Daemon(e) if e.status() == 502 => {
                    tracing::error!(script = %route.script.display(), "{status}: {e}");
                }
                JobResult::Daemon(e) => {
                    tracing::warn!(script = %route.script.display(), "{status}: {e}");
                }
                _ => {}
            }
            error_response(
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            )
        }
    }
}

/// Where a request was routed, for [`request_head`]: an application's mount, or the place
/// of the file its hook scripts guard.
struct Mount<'a> {
    script_name: &'a str,
    path_info: &'a str,
    script: &'a std::path::Path,
    env: &'a [(String, String)],
    server_name: &'a str,
    port: u16,
    /// `DOCUMENT_ROOT` and `SERVER_ADMIN` ([`wsgi_config::Config::server_identity`]).
    server: (&'a std::ffi::OsStr, &'a str),
    /// An application's environ: its `CONTEXT_PREFIX` and `CONTEXT_DOCUMENT_ROOT` (None: the
    /// server's); None for a hook script's, which has neither.
    context: Option<Option<(&'a str, &'a str)>>,
    stamps: Stamps,
}

/// The environ's source for a request at `mount` ([`RequestHead::build`]), with what the
/// connection adds: the TLS scheme and mod_ssl's `SSL_TLS_SNI`.
fn request_head(
    conn: &ConnInfo,
    method: std::borrow::Cow<'static, str>,
    (headers, uri, version): (&http::HeaderMap, &http::Uri, http::Version),
    target: &[u8],
    mount: Mount<'_>,
    settings: &wsgi_config::WsgiSettings,
) -> RequestHead {
    let mut env: Vec<(String, Vec<u8>)> = mount
        .env
        .iter()
        .map(|(name, value)| (name.clone(), value.as_bytes().to_vec()))
        .collect();
    if let Some(sni) = conn.tls.as_ref().and_then(|t| t.sni.as_ref()) {
        env.push(("SSL_TLS_SNI".into(), sni.as_bytes().to_vec()));
    }
    // A head kept from an earlier request: its buffers take this one's.
    let mut head = super::spares::take_head();
    let mut app_headers = std::mem::take(&mut head.headers);
    fill_app_headers(&mut app_headers, headers, uri);
    let mut peer = std::mem::take(&mut head.remote_addr);
    peer.clear();
    peer.push_str(&conn.peer_text);
    let document_root = mount.server.0.as_encoded_bytes();
    let source = HeadSource {
        method,
        request_uri: target,
        query_string: query_of(target),
        protocol: protocol(version),
        scheme: if conn.tls.is_some() {
            Scheme::Https
        } else {
            Scheme::Http
        },
        script_name: mount.script_name,
        path_info: mount.path_info,
        server_name: mount.server_name,
        server_port: mount.port,
        peer: (peer, conn.peer.port()),
        local: (&conn.local_text, conn.local.port()),
        headers: app_headers,
        env,
        script_filename: mount.script.as_os_str().as_encoded_bytes(),
        document_root,
        server_admin: mount.server.1.as_bytes(),
        context: mount.context.map(|context| match context {
            Some((prefix, root)) => (prefix.as_bytes(), root.as_bytes()),
            None => (b"".as_slice(), document_root),
        }),
        stamps: mount.stamps,
    };
    head.rebuild(source, settings);
    head
}

/// An address as the environ shows it (`REMOTE_ADDR`, `SERVER_ADDR`). Formatting an address
/// costs more than copying its text, and an I/O thread sees the same few (its clients on
/// keep-alive connections, the listener's own): each thread keeps the last two it formatted.
fn ip_text(ip: std::net::IpAddr) -> String {
    thread_local! {
        static SEEN: std::cell::RefCell<[Option<(std::net::IpAddr, String)>; 2]> =
            const { std::cell::RefCell::new([None, None]) };
    }
    SEEN.with_borrow_mut(|seen| {
        if let Some((_, text)) = seen.iter().flatten().find(|(seen, _)| *seen == ip) {
            return text.clone();
        }
        let text = ip.to_string();
        seen.rotate_right(1);
        seen[0] = Some((ip, text.clone()));
        text
    })
}

/// `start + wait` as a timer deadline; a wait too long for the clock means a year.
fn deadline_after(start: Instant, wait: Duration) -> tokio::time::Instant {
    let at = start
        .checked_add(wait)
        .unwrap_or_else(|| start + Duration::from_secs(365 * 24 * 3600));
    tokio::time::Instant::from_std(at)
}

/// The request headers the application sees, in `list` (each in the buffers the one at its
/// place had): as sent, but for the Host of an absolute-form target (its authority, as
/// Apache). (hyper itself drops a Content-Length sent beside a Transfer-Encoding, and closes
/// the connection after such a request.)
fn fill_app_headers(list: &mut Vec<(String, Vec<u8>)>, headers: &http::HeaderMap, uri: &http::Uri) {
    let authority = uri.authority();
    let mut list = wsgi_interp::PairRefill::new(list, headers.len());
    for (name, value) in headers {
        let value = match authority {
            Some(authority) if name == header::HOST => authority.as_str().as_bytes(),
            _ => value.as_bytes(),
        };
        let (slot_name, slot_value) = list.next_pair();
        slot_name.clear();
        slot_name.push_str(name.as_str());
        slot_value.extend_from_slice(value);
    }
    list.finish();
}

/// The answer to a request refused for what the client sent: the error page, and the
/// connection closed after it (what follows on it cannot be trusted to be framed as the
/// server thinks).
fn refuse(status: u16) -> Response<ResponseBody> {
    let mut response =
        error_response(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST));
    if response.status().is_client_error() || response.status().is_server_error() {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// `target` made absolute as Apache's `ap_construct_url` does: a path gets the scheme and
/// the request's host (its `Host` header, else the address it came in on).
fn absolute_url(target: &str, host: Option<&str>, conn: &ConnInfo) -> String {
    if !target.starts_with('/') {
        return target.to_string();
    }
    let scheme = if conn.tls.is_some() { "https" } else { "http" };
    match host {
        Some(host) => format!("{scheme}://{host}{target}"),
        None => format!("{scheme}://{}{target}", conn.local),
    }
}

/// A mod_alias redirect: the status with its `Location` and Apache's little page (410 Gone
/// and other statuses without a target: the error page).
fn redirect(
    status: u16,
    location: Option<String>,
    host: Option<&str>,
    conn: &ConnInfo,
) -> Response<ResponseBody> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FOUND);
    let Some(location) = location else {
        return error_response(status);
    };
    let location = absolute_url(&location, host, conn);
    let reason = status.canonical_reason().unwrap_or("Redirect");
    let html = format!(
        "<!DOCTYPE html>\n<html><head><title>{code} {reason}</title></head>\n<body><h1>{reason}</h1>\n<p>The document has moved <a href=\"{href}\">here</a>.</p>\n</body></html>\n",
        code = status.as_u16(),
        href = location
            .replace('&', "&amp;")
            .replace('"', "&quot;")
            .replace('<', "&lt;")
    );
    let mut response = Response::new(full(Bytes::from(html)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    match HeaderValue::from_str(&location) {
        Ok(v) => {
            headers.insert(header::LOCATION, v);
        }
        Err(_) => {
            tracing::error!(
                location,
                "500: a redirect target that is not a valid header value"
            );
            return error_response(StatusCode::INTERNAL_SERVER_ERROR);
        }
    }
    response
}

/// A file or folder an `Alias` maps a request to, served as Apache's default handler and
/// mod_dir do: a folder without its trailing `/` is redirected to it (301), a folder with it
/// serves its `index.html` or is forbidden (no listings), a missing path is 404, an
/// unreadable one 403; files with types, ETag, conditionals and ranges (and sendfile).
async fn serve_file(
    file: &std::path::Path,
    req: &Request<Incoming>,
    host: Option<&str>,
    conn: &ConnInfo,
) -> Response<ResponseBody> {
    if let Some(refused) = get_or_head_only(req) {
        return refused;
    }
    let meta = match tokio::fs::metadata(file).await {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return error_response(StatusCode::FORBIDDEN);
        }
        Err(_) => return error_response(StatusCode::NOT_FOUND),
    };
    let (dir, name) = if meta.is_dir() {
        let path = req.uri().path();
        if !path.ends_with('/') {
            let mut target = format!("{path}/");
            if let Some(q) = req.uri().query() {
                target.push('?');
                target.push_str(q);
            }
            return redirect(301, Some(target), host, conn);
        }
        if !file.join("index.html").is_file() {
            return error_response(StatusCode::FORBIDDEN);
        }
        (file.to_path_buf(), "index.html".to_string())
    } else {
        match (file.parent(), file.file_name()) {
            (Some(dir), Some(name)) => (dir.to_path_buf(), name.to_string_lossy().into_owned()),
            _ => return error_response(StatusCode::NOT_FOUND),
        }
    };
    let alias = UrlAlias {
        url: "/".to_string(),
        dir,
    };
    // hyper-staticfile takes a URL path (it percent-decodes it).
    let mut encoded = String::from("/");
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-') {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    serve_static(&alias, &encoded, req).await
}

/// 405 with `Allow: GET, HEAD` for any other method (static files), else None.
fn get_or_head_only(req: &Request<Incoming>) -> Option<Response<ResponseBody>> {
    if req.method() == Method::GET || req.method() == Method::HEAD {
        return None;
    }
    let mut response = error_response(StatusCode::METHOD_NOT_ALLOWED);
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    Some(response)
}

async fn serve_static(
    alias: &UrlAlias,
    rest: &str,
    req: &Request<Incoming>,
) -> Response<ResponseBody> {
    if let Some(refused) = get_or_head_only(req) {
        return refused;
    }
    let resolver = hyper_staticfile::Resolver::new(&alias.dir);
    let resolved = resolver
        .resolve_path(
            if rest.is_empty() { "." } else { rest },
            hyper_staticfile::AcceptEncoding::none(),
        )
        .await;
    match resolved {
        Ok(hyper_staticfile::ResolveResult::IsDirectory { redirect_to }) => {
            let prefix = if alias.url == "/" {
                ""
            } else {
                alias.url.as_str()
            };
            let mut location = format!("{prefix}{redirect_to}");
            if let Some(q) = req.uri().query() {
                location.push('?');
                location.push_str(q);
            }
            let mut response = error_response(StatusCode::MOVED_PERMANENTLY);
            if let Ok(v) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, v);
            }
            response
        }
        Ok(hyper_staticfile::ResolveResult::NotFound) => error_response(StatusCode::NOT_FOUND),
        Ok(hyper_staticfile::ResolveResult::PermissionDenied) => {
            error_response(StatusCode::FORBIDDEN)
        }
        Ok(result) => {
            // A second handle on the file, for sendfile (hyper-staticfile would read it).
            let file = match &result {
                hyper_staticfile::ResolveResult::Found(found) => {
                    match found.handle.try_clone().await {
                        Ok(file) => Some(file.into_std().await),
                        Err(_) => None,
                    }
                }
                _ => None,
            };
            match hyper_staticfile::ResponseBuilder::new()
                .request_parts(req.method(), req.uri(), req.headers())
                .build(result)
            {
                Ok(response) => with_sendfile_body(response, file, req.method()),
                Err(e) => {
                    tracing::error!(dir = %alias.dir.display(), "building a static response failed: {e}");
                    error_response(StatusCode::INTERNAL_SERVER_ERROR)
                }
            }
        }
        Err(e) => {
            tracing::error!(dir = %alias.dir.display(), path = rest, "reading a static file failed: {e}");
            error_response(StatusCode::INTERNAL_SERVER_ERROR)
        }
    }
}

/// A static response whose body is the whole file (200) or one range of it (206) goes out
/// with sendfile; other bodies (a multipart range response, HEAD, 304) stay as built.
fn with_sendfile_body(
    response: Response<hyper_staticfile::Body>,
    file: Option<std::fs::File>,
    method: &Method,
) -> Response<ResponseBody> {
    let range = match (file.as_ref(), response.status(), method) {
        (Some(_), _, &Method::HEAD) | (None, _, _) => None,
        (Some(_), StatusCode::OK, _) => content_length(response.headers()).map(|len| (0, len)),
        (Some(_), StatusCode::PARTIAL_CONTENT, _) => single_range(response.headers())
            .filter(|&(_, len)| content_length(response.headers()) == Some(len)),
        _ => None,
    };
    let (Some(file), Some((offset, len))) = (file, range) else {
        return response.map(UnsyncBoxBody::new);
    };
    match file_bytes(file, offset, len) {
        Ok(bytes) => response.map(|_| full(bytes)),
        Err(e) => {
            tracing::error!("mapping a static file for sendfile failed: {e}");
            error_response(StatusCode::INTERNAL_SERVER_ERROR)
        }
    }
}

/// A body of one buffer.
fn full(bytes: Bytes) -> ResponseBody {
    UnsyncBoxBody::new(Full::new(bytes).map_err(|never: Infallible| match never {}))
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// `(offset, length)` of a `Content-Range: bytes FIRST-LAST/SIZE` header.
fn single_range(headers: &http::HeaderMap) -> Option<(u64, u64)> {
    let value = headers.get(header::CONTENT_RANGE)?.to_str().ok()?;
    let (first, last) = value
        .strip_prefix("bytes ")?
        .split_once('/')?
        .0
        .split_once('-')?;
    let (first, last): (u64, u64) = (first.parse().ok()?, last.parse().ok()?);
    (last >= first).then(|| (first, last - first + 1))
}

/// A small HTML error page, in the spirit of Apache's (no internal detail: that goes to the
/// log).
pub fn error_response(status: StatusCode) -> Response<ResponseBody> {
    let reason = status.canonical_reason().unwrap_or("Error");
    let sentence = match status.as_u16() {
        400 => "Your browser sent a request that this server could not understand.",
        401 => {
            "This server could not verify that you are authorized to access the document requested. Either you supplied the wrong credentials (e.g., bad password), or your browser doesn't understand how to supply the credentials required."
        }
        403 => "You don't have permission to access this resource.",
        404 => "The requested URL was not found on this server.",
        405 => "The requested method is not allowed for this URL.",
        408 => "Server timeout waiting for the HTTP request from the client.",
        413 => "The request body is larger than this server accepts.",
        414 => "The requested URL's length exceeds the capacity limit for this server.",
        431 => "The request's header fields are larger than this server accepts.",
        501 => "The server does not support the action requested by the browser.",
        502 => "The proxy server received an invalid response from an upstream server.",
        503 => "The server is temporarily unable to service your request. Please try again later.",
        504 => {
            "The gateway did not receive a timely response from the upstream server or application."
        }
        _ => "The server encountered an internal error and was unable to complete your request.",
    };
    let html = format!(
        "<!DOCTYPE html>\n<html><head><title>{code} {reason}</title></head>\n<body><h1>{reason}</h1>\n<p>{sentence}</p>\n</body></html>\n",
        code = status.as_u16()
    );
    let mut response = Response::new(full(Bytes::from(html)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--tcp-notsent-lowat` reaches the accepted socket; 0 leaves the system's setting.
    #[tokio::test]
    async fn unsent_bytes_are_capped_as_asked() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = std::net::TcpStream::connect(addr).unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let lowat = || {
            socket2::SockRef::from(&accepted)
                .tcp_notsent_lowat()
                .unwrap()
        };
        let system = lowat();
        limit_unsent(&accepted, 0);
        assert_eq!(lowat(), system);
        limit_unsent(&accepted, 131_072);
        assert_eq!(lowat(), 131_072);
        assert_eq!(Limits::default().tcp_notsent_lowat, 32_768);
    }

    /// The kept texts never stand for another address, whatever the order they come in.
    #[test]
    fn ip_text_is_each_addresss_own() {
        let addresses: [std::net::IpAddr; 4] = [
            "127.0.0.1".parse().unwrap(),
            "::1".parse().unwrap(),
            "192.0.2.7".parse().unwrap(),
            "2001:db8::1".parse().unwrap(),
        ];
        for round in 0..3 {
            for (i, ip) in addresses.iter().enumerate() {
                for _ in 0..=(round + i) % 3 {
                    assert_eq!(ip_text(*ip), ip.to_string());
                }
            }
        }
    }

    /// Headers written over a list kept from a request with more of them are the new
    /// request's alone, in order, the Host of an absolute-form target its authority.
    #[test]
    fn app_headers_fill_a_kept_list_with_the_requests_alone() {
        let mut first = http::HeaderMap::new();
        for (name, value) in [("accept", "*/*"), ("x-a", "1"), ("x-b", "2"), ("x-a", "3")] {
            first.append(
                http::HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let origin: http::Uri = "/app/x".parse().unwrap();
        let mut list = Vec::new();
        fill_app_headers(&mut list, &first, &origin);
        let named = |list: &[(String, Vec<u8>)]| {
            list.iter()
                .map(|(n, v)| format!("{n}={}", String::from_utf8_lossy(v)))
                .collect::<Vec<_>>()
        };
        assert_eq!(named(&list), ["accept=*/*", "x-a=1", "x-a=3", "x-b=2"]);
        let mut next = http::HeaderMap::new();
        next.insert(header::HOST, HeaderValue::from_static("spoofed.test"));
        let absolute: http::Uri = "http://example.com:8080/app/x".parse().unwrap();
        fill_app_headers(&mut list, &next, &absolute);
        assert_eq!(named(&list), ["host=example.com:8080"]);
        fill_app_headers(&mut list, &http::HeaderMap::new(), &origin);
        assert!(list.is_empty());
    }
}
