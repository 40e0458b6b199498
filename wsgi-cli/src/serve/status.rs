//! The status view of a running `wsgi serve`: an opt-in HTTP endpoint on a loopback address
//! (`wsgi serve --status-addr 127.0.0.1:9090`), read by `wsgi status --status-addr ...` or a
//! Prometheus scraper.
//!
//! Why HTTP on loopback rather than a unix socket: Prometheus scrapes HTTP, `curl` reads it,
//! and it needs no file to clean up. It is unauthenticated, so it only binds loopback
//! addresses. Paths:
//!
//! * `/metrics`: OpenMetrics text ([`super::metrics`]): the front's requests by process
//!   group, application group and status class, their durations, requests in flight, the
//!   embedded workers' load, and per daemon group its processes, requests served, in flight,
//!   restarts and recycles;
//! * `/healthz`: `ready` (200), or `draining` (503) once the front stops taking requests;
//! * `/status`: a text table, one block per group with its processes (pid, slot, state,
//!   requests served, in flight, uptime);
//! * `/status.json`: the same snapshot as JSON.
//!
//! The snapshot is the supervisor's, in the master process: each daemon process reports its
//! counters to it whenever they change (checked every 25 ms); the front process that serves
//! the endpoint asks the master for it over their control channel.

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

use super::error::ServeError;
use super::front::Front;

/// `wsgi status --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusFormat {
    /// A table for people (`/status`).
    Text,
    /// JSON (`/status.json`).
    Json,
    /// Prometheus text format (`/metrics`).
    Prometheus,
}

impl StatusFormat {
    fn path(self) -> &'static str {
        match self {
            StatusFormat::Text => "/status",
            StatusFormat::Json => "/status.json",
            StatusFormat::Prometheus => "/metrics",
        }
    }
}

/// Why `wsgi status` could not read the status.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// Nothing answers at the address.
    #[error(
        "cannot reach the status endpoint at {addr}: {source}; start the server with `wsgi serve --status-addr {addr} ...` (it is off by default)"
    )]
    Connect {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The answer was not a successful HTTP response.
    #[error(
        "the status endpoint at {addr} answered unexpectedly ({what}): is it a `wsgi serve --status-addr` endpoint?"
    )]
    BadAnswer {
        /// The address.
        addr: SocketAddr,
        /// What was wrong.
        what: String,
    },
}

/// Checks and binds `--status-addr` (loopback only).
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, ServeError> {
    if !addr.ip().is_loopback() {
        return Err(ServeError::StatusNotLoopback(addr));
    }
    let listener =
        std::net::TcpListener::bind(addr).map_err(|source| ServeError::Bind { addr, source })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| ServeError::Bind { addr, source })?;
    Ok(listener)
}

/// Serves the status endpoint until `stop` turns true.
pub async fn serve(
    front: Arc<Front>,
    listener: tokio::net::TcpListener,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let front = front.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(front.clone(), req));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    front: Arc<Front>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let ask = |format: &'static str| {
        let control = front.control.clone();
        async move {
            match control {
                Some(control) => control.status(format).await.map_err(|e| e.to_string()),
                None => Err("no master process".to_string()),
            }
        }
    };
    let answer = |kind: &'static str, body: Result<String, String>| match body {
        Ok(body) => (StatusCode::OK, kind, body),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain; charset=utf-8",
            format!("the status is not available: {e}\n"),
        ),
    };
    let (status, kind, body) = match req.uri().path() {
        "/metrics" => {
            // The daemon groups' snapshot from the master, with this front's own counters.
            let daemons = match &front.daemons {
                Some(_) => ask("json")
                    .await
                    .map(|json| serde_json::from_str(&json).unwrap_or_default()),
                None => Ok(serde_json::Value::Null),
            };
            let pool = front.pool.as_ref().map(|p| p.load());
            let text = daemons.map(|daemons| {
                front
                    .metrics
                    .as_ref()
                    .map(|m| m.render(pool, &daemons))
                    .unwrap_or_default()
            });
            answer(
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                text,
            )
        }
        "/healthz" => {
            if front.draining.load(std::sync::atomic::Ordering::Relaxed) {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain; charset=utf-8",
                    "draining\n".to_string(),
                )
            } else {
                (
                    StatusCode::OK,
                    "text/plain; charset=utf-8",
                    "ready\n".to_string(),
                )
            }
        }
        "/status" | "/" => answer("text/plain; charset=utf-8", ask("text").await),
        "/status.json" => answer("application/json", ask("json").await),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: try /status, /status.json, /metrics or /healthz\n".to_string(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(kind) {
        response.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    Ok(response)
}

/// `wsgi status`: reads the status of the server listening at `addr` in `format`.
pub fn fetch(addr: SocketAddr, format: StatusFormat) -> Result<String, StatusError> {
    let connect = |source| StatusError::Connect { addr, source };
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(connect)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(connect)?;
    write!(
        s,
        "GET {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n",
        format.path()
    )
    .map_err(connect)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(connect)?;
    let bad = |what: &str| StatusError::BadAnswer {
        addr,
        what: what.to_string(),
    };
    let text = String::from_utf8(raw).map_err(|_| bad("not UTF-8"))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let status_line = head.lines().next().unwrap_or("");
    if status_line.split(' ').nth(1) != Some("200") {
        return Err(bad(status_line));
    }
    if head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    }) {
        return Err(bad("a chunked body"));
    }
    Ok(body.to_string())
}
