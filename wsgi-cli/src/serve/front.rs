//! The HTTP/1.1 front: hyper connections on tokio, each request routed by `Config::route` and
//! handed to the worker pool, or served from a static `--url-alias` folder.
//!
//! hyper does the protocol: keep-alive, pipelining, chunked bodies both ways,
//! `Expect: 100-continue` (answered when the app first reads `wsgi.input`), the header size
//! and count limits (431), malformed requests (400) and the header read timeout.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
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
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use parking_lot::RwLock;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use wsgi_config::MapHeadToGet;
use wsgi_config::route::{ProcessGroup, Route, RouteRequest};
use wsgi_interp::{CallOptions, RequestHead, Scheme, ScriptSpec};

use super::access_log::{AccessLog, LoggedBody, RequestRecord};
use super::bridge::{
    BodyFailure, ChannelBody, ResponseReceiver, ResponseStart, request_body, response_channel,
};
use super::daemons::DaemonSet;
use super::pool::{AppCall, Job, JobResult, Refused, WorkerPool, error_status};
use super::sendfile::{SendfileStream, file_bytes};
use super::site::{Site, UrlAlias};

/// At a stop, how long connections accepted just before get to start their first request.
const FIRST_REQUEST_GRACE: Duration = Duration::from_millis(100);

/// The response body type every handler produces.
pub type ResponseBody = UnsyncBoxBody<Bytes, io::Error>;

/// Protocol limits and timeouts.
#[derive(Debug, Clone)]
pub struct Limits {
    /// How long a client may take to send a request's headers (also the keep-alive idle time).
    pub header_timeout: Duration,
    /// The most header bytes (request line included) a request may have.
    pub max_header_size: usize,
    /// The most header fields a request may have.
    pub max_headers: usize,
}

/// Shared by every connection.
pub struct Front {
    /// What is served; replaced whole on reload.
    pub site: RwLock<Arc<Site>>,
    /// The embedded Python's workers (None when every mount runs in a daemon process group,
    /// so this process starts no Python).
    pub pool: Option<WorkerPool>,
    /// The daemon process groups and their front pools; replaced whole on a reload that
    /// changes them.
    pub daemons: RwLock<Option<Arc<DaemonSet>>>,
    /// Daemon group sets replaced by a reload and not stopped yet.
    pub retired: parking_lot::Mutex<Vec<Arc<DaemonSet>>>,
    /// The access log, if any.
    pub access_log: Option<AccessLog>,
    /// `wsgi.multithread`.
    pub multithread: bool,
    /// Protocol limits.
    pub limits: Limits,
}

/// A listening socket and the port requests on it are routed as.
pub struct Listener {
    /// The socket.
    pub socket: TcpListener,
    /// The port `Config::route` sees (the socket's own, unless the configuration's `Listen`
    /// port is served on another one with `--port`).
    pub route_port: u16,
}

/// A connection from an acceptor: the stream, peer and local addresses, and the route port.
type Accepted = (tokio::net::TcpStream, SocketAddr, SocketAddr, u16);

/// What a connection knows about itself.
struct ConnInfo {
    peer: SocketAddr,
    local: SocketAddr,
    route_port: u16,
}

/// hyper's HTTP/1.1 settings for every connection.
fn http1_builder(limits: &Limits) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(limits.max_header_size)
        .max_buf_size(limits.max_header_size.max(8192) + 64 * 1024)
        .max_headers(limits.max_headers)
        // Body buffers are queued as they are, never copied: what `SendfileStream` needs to
        // recognise a mapped file range.
        .writev(true)
        .keep_alive(true);
    builder
}

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
    let info = Arc::new(ConnInfo {
        peer,
        local,
        route_port,
    });
    let service = service_fn(move |req| handle(front.clone(), info.clone(), req));
    builder
        .serve_connection(TokioIo::new(stream), service)
        .await
}

/// Accepts on every listener until `stop` turns true, then stops accepting and lets open
/// connections finish their in-flight request for up to `graceful` (idle ones close at once).
/// Returns whether every connection finished in time.
pub async fn serve(
    front: Arc<Front>,
    listeners: Vec<Listener>,
    mut stop: watch::Receiver<bool>,
    graceful: Duration,
) -> bool {
    let shutdown = GracefulShutdown::new();
    let builder = http1_builder(&front.limits);
    // Every acceptor hands its connections to this one loop, which owns the builder and the
    // graceful-shutdown tracker.
    let (conn_tx, mut conn_rx) = tokio::sync::mpsc::channel::<Accepted>(64);
    let mut acceptors = Vec::new();
    for listener in listeners {
        let tx = conn_tx.clone();
        let mut stop = stop.clone();
        acceptors.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    // Once stopped, accept nothing more (the backlog stays for whoever
                    // listens next: a restart in place hands the socket on).
                    biased;
                    () = stopped(&mut stop) => return,
                    accepted = listener.socket.accept() => match accepted {
                        Ok((stream, peer)) => {
                            let Ok(local) = stream.local_addr() else { continue };
                            if tx.send((stream, peer, local, listener.route_port)).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            // EMFILE and friends: wait a little rather than spin.
                            tracing::warn!("accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    },
                }
            }
        }));
    }
    drop(conn_tx);
    let start = |(stream, peer, local, route_port): Accepted| {
        let _ = stream.set_nodelay(true);
        let info = Arc::new(ConnInfo {
            peer,
            local,
            route_port,
        });
        let front = front.clone();
        let service = service_fn(move |req| handle(front.clone(), info.clone(), req));
        let conn = builder.serve_connection(TokioIo::new(SendfileStream::new(stream)), service);
        let conn = shutdown.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
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
    // the channel closes when the last one has), and its first request gets a moment to
    // arrive: a graceful shutdown closes a connection that has not started a request.
    while let Some(accepted) = conn_rx.recv().await {
        start(accepted);
    }
    for a in acceptors {
        let _ = a.await;
    }
    if shutdown.count() > 0 {
        tokio::time::sleep(FIRST_REQUEST_GRACE).await;
    }
    let open = shutdown.count();
    if open > 0 {
        tracing::info!("waiting up to {graceful:?} for {open} open connection(s) to finish");
    }
    match tokio::time::timeout(graceful, shutdown.shutdown()).await {
        Ok(()) => true,
        Err(_) => {
            tracing::warn!(
                "graceful timeout ({graceful:?}) reached with requests still running: closing their connections"
            );
            false
        }
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}

/// Serves one request: never fails (errors are HTTP responses).
async fn handle(
    front: Arc<Front>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<LoggedBody<ResponseBody>>, Infallible> {
    let record = front.access_log.as_ref().map(|log| {
        let header =
            |name: header::HeaderName| req.headers().get(name).map(|v| v.as_bytes().to_vec());
        (
            log.clone(),
            RequestRecord {
                remote: conn.peer.ip(),
                time: chrono::Local::now(),
                request_line: format!("{} {} {}", req.method(), req.uri(), protocol(req.version())),
                referer: header(header::REFERER),
                user_agent: header(header::USER_AGENT),
            },
        )
    });
    let response = dispatch(&front, &conn, req).await;
    let status = response.status().as_u16();
    Ok(response.map(|body| LoggedBody::new(body, record, status)))
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

async fn dispatch(
    front: &Front,
    conn: &ConnInfo,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    let site = front.site.read().clone();
    let path = req.uri().path().to_string();
    if let Some((alias, rest)) = site.alias_for(&path) {
        return serve_static(alias, rest, &req).await;
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    let routed = site.config.route(&RouteRequest {
        local_ip: Some(conn.local.ip()),
        local_port: conn.route_port,
        host: host.as_deref(),
        path: &path,
    });
    match routed {
        Ok(Some(route)) => run_app(front, conn, route, req).await,
        Ok(None) => {
            tracing::info!(method = %req.method(), path, "404: no WSGIScriptAlias or --url-alias covers the path");
            error_response(StatusCode::NOT_FOUND)
        }
        Err(e) => {
            tracing::info!(method = %req.method(), path, "{}: {e}", e.status());
            error_response(
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            )
        }
    }
}

/// A PEP 3333 native string (one char per byte) back to its bytes.
fn latin1_bytes(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
        .collect()
}

async fn run_app(
    front: &Front,
    conn: &ConnInfo,
    route: Route,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    let arrived = Instant::now();
    let (parts, body) = req.into_parts();
    let is_head = parts.method == Method::HEAD;
    // mod_wsgi 6: Auto maps HEAD to GET when an output filter needs the body; `wsgi serve`
    // has no filters that could see a difference, so Auto behaves as On, as the model says.
    let method = if is_head && route.settings.map_head_to_get != Some(MapHeadToGet::Off) {
        "GET".to_string()
    } else {
        parts.method.as_str().to_string()
    };
    let request_uri = parts.uri.path_and_query().map_or_else(
        || parts.uri.path().to_string(),
        |pq| pq.as_str().to_string(),
    );
    // The pool that runs the request: the embedded workers, or the daemon group's front pool
    // (the set is held until the request ends, so a reload stops it only after).
    let daemons = front.daemons.read().clone();
    let pool = match &route.process_group {
        ProcessGroup::Embedded => match &front.pool {
            Some(pool) => pool,
            None => {
                tracing::error!(script = %route.script.display(), "500: this request runs embedded, but the server started without embedded Python (every mount was in a daemon process group when it started): restart `wsgi serve` to serve it");
                return error_response(StatusCode::INTERNAL_SERVER_ERROR);
            }
        },
        ProcessGroup::Daemon(group) => match daemons.as_ref().and_then(|d| d.pool(group)) {
            Some(pool) => pool,
            None => {
                tracing::error!(script = %route.script.display(), "503: daemon process group `{group}` is not running: define it with WSGIDaemonProcess (a reload that adds one starts it)");
                return error_response(StatusCode::SERVICE_UNAVAILABLE);
            }
        },
    };
    let group_label = match &route.process_group {
        ProcessGroup::Embedded => "embedded".to_string(),
        ProcessGroup::Daemon(g) => format!("daemon process group `{g}`"),
    };
    let head = RequestHead {
        method,
        script_name: latin1_bytes(&route.script_name),
        path_info: latin1_bytes(&route.path_info),
        query_string: parts.uri.query().unwrap_or("").as_bytes().to_vec(),
        request_uri: request_uri.into_bytes(),
        protocol: protocol(parts.version).to_string(),
        scheme: Scheme::Http,
        server_name: route.server_name.clone(),
        server_port: route.port,
        remote_addr: conn.peer.ip().to_string(),
        remote_port: conn.peer.port(),
        headers: parts
            .headers
            .iter()
            .map(|(name, value)| (name.as_str().to_string(), value.as_bytes().to_vec()))
            .collect(),
        extra: vec![(
            "SCRIPT_FILENAME".to_string(),
            route.script.as_os_str().as_encoded_bytes().to_vec(),
        )],
    };
    let app = AppCall {
        script: ScriptSpec::for_route(&route, false),
        application_group: route.application_group.clone(),
        options: CallOptions {
            process_group: String::new(),
            multithread: front.multithread,
            multiprocess: false,
            run_once: false,
            pass_authorization: route.settings.pass_authorization == Some(true),
        },
    };
    let failure = BodyFailure::default();
    let reader = if body.is_end_stream() {
        ChannelBody::empty()
    } else {
        let (reader, pump) = request_body(body, failure.clone());
        tokio::spawn(pump);
        reader
    };
    let (sink, ResponseReceiver { start }) = response_channel(is_head);
    let (done, done_rx) = oneshot::channel();
    let job = Job {
        app,
        head,
        body: reader,
        sink,
        arrived,
        done,
    };
    if let Err((refused, _job)) = pool.submit(job).await {
        return match refused {
            Refused::Busy => {
                tracing::warn!(script = %route.script.display(), "503: every worker thread ({group_label}) stayed busy for the whole queue timeout");
                error_response(StatusCode::SERVICE_UNAVAILABLE)
            }
            Refused::Stopping => error_response(StatusCode::SERVICE_UNAVAILABLE),
        };
    }
    match start.await {
        Ok(start) => {
            let (head, body) = match start {
                ResponseStart::Whole(head, body) => (head, full(body)),
                ResponseStart::Streamed(head, stream) => (head, UnsyncBoxBody::new(stream)),
            };
            let mut response = Response::new(body);
            *response.status_mut() =
                StatusCode::from_u16(head.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            if response.status().canonical_reason() != Some(head.reason.as_str()) {
                if let Ok(reason) = hyper::ext::ReasonPhrase::try_from(head.reason.into_bytes()) {
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
                match (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_bytes(&value),
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
            let status = if failure.failed() {
                400
            } else {
                error_status(&result)
            };
            match &result {
                JobResult::Expired => {
                    tracing::warn!(script = %route.script.display(), "503: the request waited longer than the queue timeout for a worker thread ({group_label})");
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

async fn serve_static(
    alias: &UrlAlias,
    rest: &str,
    req: &Request<Incoming>,
) -> Response<ResponseBody> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut response = error_response(StatusCode::METHOD_NOT_ALLOWED);
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let resolver = hyper_staticfile::Resolver::new(&alias.dir);
    let rest = if rest.is_empty() { "" } else { rest };
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
        403 => "You don't have permission to access this resource.",
        404 => "The requested URL was not found on this server.",
        405 => "The requested method is not allowed for this URL.",
        503 => "The server is temporarily unable to service your request. Please try again later.",
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
