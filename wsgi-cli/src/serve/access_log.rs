//! Access logs: `--access-log` (Apache's combined format) and a configuration's `CustomLog`
//! and `TransferLog` lines (mod_log_config's formats, [`wsgi_config::logformat`]), each request
//! logged to its virtual host's logs (the main server's when it has none). The files are
//! opened by the master process (as root, as Apache opens them) and handed over; one thread
//! writes every line, so no I/O thread waits on a disk. A line is written when the response
//! body is finished or dropped, so byte counts are what was handed to the connection.

use std::fs::File;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Buf;
use chrono::{DateTime, Local};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use wsgi_config::Config;
use wsgi_config::logformat::{DurationUnit, LogItem};

use super::error::ServeError;

/// Apache's combined format.
pub const COMBINED: &str = "%h %l %u %t \"%r\" %>s %b \"%{Referer}i\" \"%{User-agent}i\"";

/// What `--access-log` writes unless `--access-log-format` says otherwise: the combined
/// format, then the request's duration in microseconds (`%D`).
pub const DEFAULT_FORMAT: &str = "%h %l %u %t \"%r\" %>s %b \"%{Referer}i\" \"%{User-agent}i\" %D";

/// How an access log's lines are written.
#[derive(Debug, Clone)]
pub enum LineFormat {
    /// mod_log_config's `%` format.
    Apache(Arc<Vec<LogItem>>),
    /// One JSON object per request (`--access-log-format json`).
    Json,
}

impl LineFormat {
    /// `--access-log-format`'s value: `json`, or an Apache format string.
    pub fn parse(text: &str) -> Result<LineFormat, ServeError> {
        if text == "json" {
            return Ok(LineFormat::Json);
        }
        wsgi_config::logformat::parse(text)
            .map(|items| LineFormat::Apache(Arc::new(items)))
            .map_err(|why| ServeError::BadAccessLogFormat {
                format: text.to_string(),
                why,
            })
    }
}

/// Where a log line goes: a file of the list the writer thread holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sink(usize);

/// The thread that writes every log line to its file.
#[derive(Clone)]
pub struct LogWriter {
    lines: crossbeam_channel::Sender<(Sink, String)>,
}

impl LogWriter {
    /// Starts the thread over `outputs` (sink `i` writes to `outputs[i]`).
    pub fn start(
        outputs: Vec<Box<dyn Write + Send>>,
    ) -> io::Result<(LogWriter, std::thread::JoinHandle<()>)> {
        let (tx, rx) = crossbeam_channel::unbounded::<(Sink, String)>();
        let thread = std::thread::Builder::new()
            .name("wsgi-access-log".into())
            .spawn(move || {
                let mut outs: Vec<io::BufWriter<Box<dyn Write + Send>>> =
                    outputs.into_iter().map(io::BufWriter::new).collect();
                let mut dirty = vec![false; outs.len()];
                while let Ok((sink, line)) = rx.recv() {
                    let mut write = |sink: Sink, line: String| {
                        if let Some(out) = outs.get_mut(sink.0) {
                            let _ = out.write_all(line.as_bytes());
                            dirty[sink.0] = true;
                        }
                    };
                    write(sink, line);
                    while let Ok((sink, line)) = rx.try_recv() {
                        write(sink, line);
                    }
                    for (out, dirty) in outs.iter_mut().zip(dirty.iter_mut()) {
                        if std::mem::take(dirty) {
                            if let Err(e) = out.flush() {
                                tracing::error!("cannot write an access log: {e}");
                            }
                        }
                    }
                }
            })?;
        Ok((LogWriter { lines: tx }, thread))
    }

    /// Queues one line (with its newline) for `sink`.
    pub fn write_line(&self, sink: Sink, line: String) {
        let _ = self.lines.send((sink, line));
    }
}

/// One access log: where it goes, its format and its condition.
#[derive(Debug, Clone)]
pub struct AccessLog {
    /// The file.
    pub sink: Sink,
    /// The format.
    pub format: LineFormat,
    /// `env=VAR` / `env=!VAR`: (negated, VAR).
    pub condition: Option<(bool, String)>,
}

impl AccessLog {
    /// A log to file `index` of the writer's list.
    pub fn new(index: usize, format: LineFormat, condition: Option<(bool, String)>) -> Self {
        AccessLog {
            sink: Sink(index),
            format,
            condition,
        }
    }
}

/// Every access log of a front process, by host: `hosts[0]` the main server's, `hosts[i + 1]`
/// virtual host `i`'s own (empty: the main server's apply); `everywhere` (`--access-log`) for
/// every request.
#[derive(Clone)]
pub struct AccessLogs {
    /// The writer thread.
    pub writer: LogWriter,
    /// The logs of each host.
    pub hosts: Vec<Vec<AccessLog>>,
    /// `--access-log`.
    pub everywhere: Option<AccessLog>,
}

impl AccessLogs {
    /// The logs a request to host `host` (None: the main server) goes to.
    pub fn for_host(&self, host: Option<usize>) -> Vec<AccessLog> {
        let own = host
            .and_then(|i| self.hosts.get(i + 1))
            .filter(|logs| !logs.is_empty())
            .or_else(|| self.hosts.first());
        own.into_iter()
            .flatten()
            .chain(self.everywhere.iter())
            .cloned()
            .collect()
    }

    /// Whether any request is logged at all.
    pub fn any(&self) -> bool {
        self.everywhere.is_some() || self.hosts.iter().any(|h| !h.is_empty())
    }
}

/// Every log file a front process writes, in the order the master opens them and the front
/// takes them over: `--access-log`, then each host's `CustomLog`/`TransferLog` files and a
/// virtual host's own `ErrorLog` (the main server's is the master's stderr), each once.
pub fn log_files(access_log: Option<&Path>, config: &Config) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = Vec::new();
    let mut add = |path: &Path| {
        if !paths.iter().any(|p| p == path) {
            paths.push(path.to_path_buf());
        }
    };
    if let Some(path) = access_log.filter(|p| p.as_os_str() != "-") {
        add(path);
    }
    for host in std::iter::once(&config.main).chain(&config.virtual_hosts) {
        for log in &host.custom_logs {
            add(&log.path);
        }
        if let Some(path) = &host.error_log {
            add(path);
        }
    }
    paths
}

/// A front process's logs, built from the files the master opened ([`log_files`] order).
pub struct FrontLogs {
    /// The access logs (None: no request is logged).
    pub access: Option<AccessLogs>,
    /// Each virtual host's own `ErrorLog`.
    pub host_errors: Vec<Option<File>>,
    /// The writer thread, joined once every [`AccessLogs`] is dropped.
    pub thread: Option<std::thread::JoinHandle<()>>,
}

impl FrontLogs {
    /// Sorts `files` (opened by the master for `paths`, in [`log_files`] order) into the
    /// access logs of each host and the virtual hosts' error logs.
    pub fn new(
        access_log: Option<&Path>,
        access_format: &LineFormat,
        config: &Config,
        files: Vec<File>,
    ) -> Result<FrontLogs, ServeError> {
        let paths = log_files(access_log, config);
        if paths.len() != files.len() {
            return Err(ServeError::Front(format!(
                "the master opened {} log file(s), this configuration names {}: it changed while the front process started; reload again",
                files.len(),
                paths.len()
            )));
        }
        let sink_of = |path: &Path| paths.iter().position(|p| p == path).unwrap_or(0);
        let host_errors = config
            .virtual_hosts
            .iter()
            .map(|host| {
                let file = &files[sink_of(host.error_log.as_ref()?)];
                file.try_clone().ok()
            })
            .collect();
        let hosts: Vec<Vec<AccessLog>> = std::iter::once(&config.main)
            .chain(&config.virtual_hosts)
            .map(|host| {
                host.custom_logs
                    .iter()
                    .map(|log| {
                        AccessLog::new(
                            sink_of(&log.path),
                            LineFormat::Apache(Arc::new(log.format.clone())),
                            log.condition.clone(),
                        )
                    })
                    .collect()
            })
            .collect();
        let mut outputs: Vec<Box<dyn Write + Send>> = files
            .into_iter()
            .map(|f| Box::new(f) as Box<dyn Write + Send>)
            .collect();
        let everywhere = match access_log {
            Some(path) if path.as_os_str() == "-" => {
                outputs.push(Box::new(io::stdout()));
                Some(AccessLog::new(
                    outputs.len() - 1,
                    access_format.clone(),
                    None,
                ))
            }
            Some(path) => Some(AccessLog::new(sink_of(path), access_format.clone(), None)),
            None => None,
        };
        if everywhere.is_none() && hosts.iter().all(Vec::is_empty) {
            return Ok(FrontLogs {
                access: None,
                host_errors,
                thread: None,
            });
        }
        let (writer, thread) = LogWriter::start(outputs).map_err(ServeError::Threads)?;
        Ok(FrontLogs {
            access: Some(AccessLogs {
                writer,
                hosts,
                everywhere,
            }),
            host_errors,
            thread: Some(thread),
        })
    }
}

/// What is known about a request for its log lines; the response's part is filled in as it
/// goes.
#[derive(Debug, Clone)]
pub struct LogRecord {
    /// When the request's head was read.
    pub start: Instant,
    /// The same, on the wall clock.
    pub time: DateTime<Local>,
    /// The client.
    pub peer: SocketAddr,
    /// The connection's own peer, when a PROXY header named another client (`%{c}a`).
    pub via: Option<SocketAddr>,
    /// The address it came in on.
    pub local: SocketAddr,
    /// The request line, as received.
    pub request_line: Vec<u8>,
    /// The method.
    pub method: String,
    /// The protocol (`HTTP/1.1`).
    pub protocol: &'static str,
    /// The URL path, as received, without the query.
    pub path: Vec<u8>,
    /// The query string, if any.
    pub query: Option<Vec<u8>>,
    /// The request headers.
    pub request_headers: HeaderMap,
    /// The server's canonical name (`%v`).
    pub server_name: String,
    /// The host the request asked for (`%V`).
    pub host: String,
    /// The head's size as received.
    pub head_len: usize,
    /// Requests served on the connection before this one.
    pub keepalives: u64,
    /// The status.
    pub status: u16,
    /// The response headers.
    pub response_headers: HeaderMap,
    /// The script (`%f`).
    pub filename: Option<std::path::PathBuf>,
    /// The request's environment variables (`%{VAR}e`).
    pub env: Vec<(String, String)>,
    /// Whether the connection is closed after the response.
    pub closes: bool,
    /// The authenticated user (`%u`).
    pub user: Option<String>,
    /// `%L`: the id the application saw as `mod_wsgi.request_id` (0: no application ran; `-`,
    /// as Apache shows a request that made no log id).
    pub request_id: u64,
}

/// What the routing of a request adds to its log record, carried back to the logging layer
/// in the response's extensions.
#[derive(Debug, Clone, Default)]
pub struct LogExtras {
    /// The script run.
    pub filename: Option<std::path::PathBuf>,
    /// The environment variables of the request.
    pub env: Vec<(String, String)>,
    /// The authenticated user (`%u`).
    pub user: Option<String>,
    /// The application's `mod_wsgi.request_id` (0: no application ran).
    pub request_id: u64,
}

/// Apache's escaping of logged strings: `"` and `\` backslashed, control and non-ASCII bytes as
/// `\xhh`.
fn escape_into(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
}

impl LogRecord {
    /// A record of a request as its head arrived (`target` is the raw request target); the
    /// response's part is filled in later.
    pub fn new(
        peer: SocketAddr,
        local: SocketAddr,
        request_line: &[u8],
        method: &str,
        protocol: &'static str,
        target: &[u8],
    ) -> Self {
        let (path, query) = match target.iter().position(|&b| b == b'?') {
            Some(at) => (&target[..at], Some(target[at + 1..].to_vec())),
            None => (target, None),
        };
        LogRecord {
            start: Instant::now(),
            time: Local::now(),
            peer,
            via: None,
            local,
            request_line: request_line.to_vec(),
            method: method.to_string(),
            protocol,
            path: path.to_vec(),
            query,
            request_headers: HeaderMap::new(),
            server_name: String::new(),
            host: String::new(),
            head_len: request_line.len() + 2,
            keepalives: 0,
            status: 0,
            response_headers: HeaderMap::new(),
            filename: None,
            env: Vec::new(),
            closes: false,
            user: None,
            request_id: 0,
        }
    }

    /// The record of a request head refused before it was parsed (`line`: the request line
    /// as far as it came).
    pub fn refused(peer: SocketAddr, local: SocketAddr, line: &[u8], status: u16) -> Self {
        let mut words = line.split(|&b| b == b' ');
        let method = String::from_utf8_lossy(words.next().unwrap_or_default()).into_owned();
        let target = words.next().unwrap_or_default();
        LogRecord {
            status,
            closes: true,
            ..LogRecord::new(peer, local, line, &method, "HTTP/1.1", target)
        }
    }

    fn header_value(headers: &HeaderMap, name: &str) -> Option<Vec<u8>> {
        let mut values = headers.get_all(name).iter();
        let first = values.next()?;
        let mut out = first.as_bytes().to_vec();
        for more in values {
            out.extend_from_slice(b", ");
            out.extend_from_slice(more.as_bytes());
        }
        Some(out)
    }

    /// The line `format` gives for this request, `bytes` body bytes sent.
    pub fn line(&self, format: &[LogItem], bytes: u64) -> String {
        let mut out = String::with_capacity(160);
        let elapsed = self.start.elapsed();
        let dash_or = |out: &mut String, value: Option<Vec<u8>>| match value {
            Some(v) if !v.is_empty() => escape_into(out, &v),
            _ => out.push('-'),
        };
        for item in format {
            match item {
                LogItem::Text(t) => out.push_str(t),
                LogItem::RemoteAddr => out.push_str(&self.peer.ip().to_string()),
                LogItem::ConnAddr => {
                    out.push_str(&self.via.unwrap_or(self.peer).ip().to_string());
                }
                LogItem::LocalAddr => out.push_str(&self.local.ip().to_string()),
                LogItem::BytesClf if bytes == 0 => out.push('-'),
                LogItem::BytesClf | LogItem::Bytes => out.push_str(&bytes.to_string()),
                LogItem::Micros => out.push_str(&elapsed.as_micros().to_string()),
                LogItem::Env(var) => dash_or(
                    &mut out,
                    self.env
                        .iter()
                        .find(|(k, _)| k == var)
                        .map(|(_, v)| v.as_bytes().to_vec()),
                ),
                LogItem::Filename => dash_or(
                    &mut out,
                    self.filename
                        .as_ref()
                        .map(|f| f.as_os_str().as_encoded_bytes().to_vec()),
                ),
                LogItem::Protocol => out.push_str(self.protocol),
                LogItem::RequestHeader(name) => {
                    dash_or(&mut out, Self::header_value(&self.request_headers, name))
                }
                LogItem::KeepAlives => out.push_str(&self.keepalives.to_string()),
                LogItem::User => {
                    dash_or(&mut out, self.user.as_ref().map(|u| u.as_bytes().to_vec()))
                }
                LogItem::Dash => out.push('-'),
                LogItem::LogId if self.request_id != 0 => {
                    let mut id = [0u8; 11];
                    out.push_str(wsgi_interp::format_request_id(self.request_id, &mut id));
                }
                LogItem::LogId => out.push('-'),
                LogItem::Method => escape_into(&mut out, self.method.as_bytes()),
                LogItem::ResponseHeader(name) => {
                    dash_or(&mut out, Self::header_value(&self.response_headers, name))
                }
                LogItem::Port { remote: true } => out.push_str(&self.peer.port().to_string()),
                LogItem::Port { remote: false } => out.push_str(&self.local.port().to_string()),
                LogItem::Pid => out.push_str(&std::process::id().to_string()),
                LogItem::Query => {
                    if let Some(q) = &self.query {
                        out.push('?');
                        escape_into(&mut out, q);
                    }
                }
                LogItem::RequestLine => escape_into(&mut out, &self.request_line),
                LogItem::Status => out.push_str(&self.status.to_string()),
                LogItem::Time(None) => {
                    out.push_str(&self.time.format("[%d/%b/%Y:%H:%M:%S %z]").to_string())
                }
                LogItem::Time(Some(f)) => {
                    let since = self
                        .time
                        .signed_duration_since(DateTime::UNIX_EPOCH)
                        .to_std()
                        .unwrap_or_default();
                    match f.as_str() {
                        "sec" => out.push_str(&since.as_secs().to_string()),
                        "msec" => out.push_str(&since.as_millis().to_string()),
                        "usec" => out.push_str(&since.as_micros().to_string()),
                        "msec_frac" => out.push_str(&format!("{:03}", since.subsec_millis())),
                        "usec_frac" => out.push_str(&format!("{:06}", since.subsec_micros())),
                        f => out.push_str(&self.time.format(f).to_string()),
                    }
                }
                LogItem::Duration(DurationUnit::Seconds) => {
                    out.push_str(&elapsed.as_secs().to_string())
                }
                LogItem::Duration(DurationUnit::Millis) => {
                    out.push_str(&elapsed.as_millis().to_string())
                }
                LogItem::Duration(DurationUnit::Micros) => {
                    out.push_str(&elapsed.as_micros().to_string())
                }
                LogItem::UrlPath => escape_into(&mut out, &self.path),
                LogItem::ServerName => out.push_str(&self.server_name),
                LogItem::Host => escape_into(&mut out, self.host.as_bytes()),
                LogItem::ConnStatus => out.push(if self.closes { '-' } else { '+' }),
                LogItem::BytesIn => {
                    let body: u64 = Self::header_value(&self.request_headers, "content-length")
                        .and_then(|v| String::from_utf8(v).ok()?.trim().parse().ok())
                        .unwrap_or(0);
                    out.push_str(&(self.head_len as u64 + body).to_string())
                }
                LogItem::BytesOut => {
                    // The head as hyper writes it: the status line, Date, the headers, CRLF.
                    let reason = http::StatusCode::from_u16(self.status)
                        .ok()
                        .and_then(|s| s.canonical_reason())
                        .unwrap_or("");
                    let status_line = "HTTP/1.1 200 ".len() + reason.len() + 2;
                    let date = "date: Sat, 05 Dec 2026 01:49:57 GMT\r\n".len();
                    let headers: usize = self
                        .response_headers
                        .iter()
                        .map(|(n, v)| n.as_str().len() + 2 + v.len() + 2)
                        .sum();
                    let head = status_line + date + headers + 2;
                    out.push_str(&(head as u64 + bytes).to_string())
                }
            }
        }
        out.push('\n');
        out
    }
}

impl LogRecord {
    /// The request as one JSON object (with its newline): `--access-log-format json`.
    pub fn json(&self, bytes: u64) -> String {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let header = |name: &str| Self::header_value(&self.request_headers, name).map(|v| text(&v));
        let record = serde_json::json!({
            "time": self.time.to_rfc3339_opts(chrono::SecondsFormat::Millis, false),
            "remote_addr": self.peer.ip().to_string(),
            "remote_port": self.peer.port(),
            "user": self.user,
            "method": self.method,
            "path": text(&self.path),
            "query": self.query.as_deref().map(text),
            "protocol": self.protocol,
            "host": self.host,
            "server_name": self.server_name,
            "status": self.status,
            "bytes": bytes,
            "duration_us": u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX),
            "referer": header("referer"),
            "user_agent": header("user-agent"),
            "filename": self.filename.as_ref().map(|f| f.to_string_lossy().into_owned()),
        });
        format!("{record}\n")
    }
}

/// The logs a finished response is written to, with its record.
pub struct LogJob {
    /// The writer.
    pub writer: LogWriter,
    /// The logs.
    pub logs: Vec<AccessLog>,
    /// The record.
    pub record: LogRecord,
}

impl LogJob {
    /// Writes the request's line to each log whose condition holds; `bytes` body bytes were
    /// sent.
    pub fn write(self, bytes: u64) {
        for log in &self.logs {
            if let Some((negated, var)) = &log.condition {
                let set = self.record.env.iter().any(|(k, _)| k == var);
                if set == *negated {
                    continue;
                }
            }
            let line = match &log.format {
                LineFormat::Apache(items) => self.record.line(items, bytes),
                LineFormat::Json => self.record.json(bytes),
            };
            self.writer.write_line(log.sink, line);
        }
    }
}

/// A response body that counts what it yields and logs the request when it is dropped (and
/// counts it in the metrics, when they are kept).
pub struct LoggedBody<B> {
    inner: B,
    log: Option<Box<LogJob>>,
    metric: Option<Box<super::metrics::RequestMetric>>,
    bytes: u64,
}

impl<B> LoggedBody<B> {
    /// Wraps `inner`; with no log and no metric it only passes through.
    pub fn new(
        inner: B,
        log: Option<Box<LogJob>>,
        metric: Option<Box<super::metrics::RequestMetric>>,
    ) -> Self {
        LoggedBody {
            inner,
            log,
            metric,
            bytes: 0,
        }
    }
}

impl<B> Drop for LoggedBody<B> {
    fn drop(&mut self) {
        if let Some(job) = self.log.take() {
            job.write(self.bytes);
        }
        // Counted as answered now (the RequestMetric's drop).
        self.metric.take();
    }
}

impl<B> Body for LoggedBody<B>
where
    B: Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.bytes += data.remaining() as u64;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn record() -> LogRecord {
        let mut request_headers = HeaderMap::new();
        request_headers.insert(
            "referer",
            "http://www.example.com/start.html".parse().unwrap(),
        );
        request_headers.insert(
            "user-agent",
            http::HeaderValue::from_bytes(b"Mozilla/4.08 \"x\"").unwrap(),
        );
        let mut response_headers = HeaderMap::new();
        response_headers.insert("x-id", "abc".parse().unwrap());
        LogRecord {
            start: Instant::now(),
            time: Local.with_ymd_and_hms(2000, 10, 10, 13, 55, 36).unwrap(),
            peer: "127.0.0.1:50000".parse().unwrap(),
            via: None,
            local: "127.0.0.1:8080".parse().unwrap(),
            request_line: b"GET /apache_pb.gif?x=1 HTTP/1.0".to_vec(),
            method: "GET".into(),
            protocol: "HTTP/1.0",
            path: b"/apache_pb.gif".to_vec(),
            query: Some(b"x=1".to_vec()),
            request_headers,
            server_name: "example.com".into(),
            host: "www.example.com".into(),
            head_len: 100,
            keepalives: 2,
            status: 200,
            response_headers,
            filename: None,
            env: vec![("APP".into(), "one".into())],
            closes: false,
            user: None,
            request_id: 0,
        }
    }

    #[test]
    fn log_id_is_the_request_id() {
        let format = wsgi_config::logformat::parse("%L %s").unwrap();
        assert_eq!(record().line(&format, 0), "- 200\n");
        let record = LogRecord {
            request_id: 0x0001_0203_0405_0607,
            ..record()
        };
        assert_eq!(record.line(&format, 0), "AAECAwQFBgc 200\n");
    }

    #[test]
    fn the_connection_peer_is_the_balancer_of_a_proxy_header() {
        let format = wsgi_config::logformat::parse("%h %a %{c}a %{remote}p").unwrap();
        assert_eq!(
            record().line(&format, 0),
            "127.0.0.1 127.0.0.1 127.0.0.1 50000\n"
        );
        let proxied = LogRecord {
            peer: "192.0.2.7:4000".parse().unwrap(),
            via: Some("10.0.0.1:50000".parse().unwrap()),
            ..record()
        };
        assert_eq!(
            proxied.line(&format, 0),
            "192.0.2.7 192.0.2.7 10.0.0.1 4000\n"
        );
    }

    #[test]
    fn combined_format() {
        let format = wsgi_config::logformat::parse(COMBINED).unwrap();
        let line = record().line(&format, 2326);
        assert!(
            line.starts_with("127.0.0.1 - - [10/Oct/2000:13:55:36 "),
            "{line}"
        );
        assert!(
            line.ends_with(
                "] \"GET /apache_pb.gif?x=1 HTTP/1.0\" 200 2326 \"http://www.example.com/start.html\" \"Mozilla/4.08 \\\"x\\\"\"\n"
            ),
            "{line}"
        );
        let empty = LogRecord {
            request_headers: HeaderMap::new(),
            status: 304,
            ..record()
        };
        assert!(empty.line(&format, 0).ends_with("304 - \"-\" \"-\"\n"));
    }

    #[test]
    fn other_directives() {
        let format = wsgi_config::logformat::parse(
            "%v:%p %A %m %U%q %H %{x-id}o %{APP}e %{NONE}e %k %X %f %B",
        )
        .unwrap();
        assert_eq!(
            record().line(&format, 0),
            "example.com:8080 127.0.0.1 GET /apache_pb.gif?x=1 HTTP/1.0 abc one - 2 + - 0\n"
        );
    }
}
