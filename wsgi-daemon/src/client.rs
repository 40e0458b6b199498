//! The front's side: [`DaemonClient::dispatch`] runs one request in a daemon process group
//! with the same [`RequestBody`] / [`ResponseSink`] / [`Outcome`] as an embedded call, so a
//! front treats both modes alike; what only daemon mode can produce is a [`DispatchError`]
//! with its HTTP status.
//!
//! Connections are pooled per group and reused. A request the daemon closed its connection
//! on without reading it (the daemon closes idle connections when it stops; the front's read
//! then fails with `ECONNRESET`: see [`crate::protocol`]) is retried on a fresh connection,
//! and so is one whose head could not even be written (a process stopping for replacement
//! may accept a connection and close it); a
//! request a daemon rejected (script changed, draining) is retried up to `2 × processes + 1`
//! times, as mod_wsgi does.

use std::collections::HashMap;
use std::io::{self, BufReader, BufWriter, IoSlice, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use wsgi_config::daemon_options::DaemonOptions;
use wsgi_interp::{AppCall, AppError, Outcome, RequestBody, RequestHead, ResponseSink};

use crate::fd_passing::FdReader;
use crate::protocol::{
    self, CHUNK, DaemonRequest, End, FrameReader, ProtocolError, RejectReason, RequestRef, kind,
    write_raw,
};

/// Idle connections kept per group.
const MAX_IDLE: usize = 64;

/// Response chunks of at least this size go to the sink as read ([`ResponseSink::write_owned`]).
const OWNED_CHUNK: usize = 16 * 1024;

/// Sets a connection's socket buffer sizes (`send-buffer-size=`, `receive-buffer-size=`); 0
/// leaves the system's. The kernel may round (Linux doubles the value for its bookkeeping); a
/// refusal is logged, never fatal.
pub(crate) fn set_buffer_sizes(conn: &impl AsFd, send: u64, receive: u64) {
    use nix::sys::socket::{setsockopt, sockopt};
    let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    if send > 0 {
        if let Err(e) = setsockopt(conn, sockopt::SndBuf, &size(send)) {
            tracing::warn!("send-buffer-size={send}: {e}");
        }
    }
    if receive > 0 {
        if let Err(e) = setsockopt(conn, sockopt::RcvBuf, &size(receive)) {
            tracing::warn!("receive-buffer-size={receive}: {e}");
        }
    }
}

/// Where a group listens and how to talk to it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The group's name.
    pub group: String,
    /// Its socket.
    pub socket: PathBuf,
    /// The group's `WSGIDaemonProcess` options: `processes=` (the reject retry cap is
    /// `2 × processes + 1`), `connect-timeout=`, `request-timeout=` (the response headers
    /// must come within it), `socket-timeout=`, and the socket buffer sizes.
    pub options: DaemonOptions,
    /// The per-read limit on the group's socket when `socket-timeout=` is 0: the server's
    /// `Timeout`.
    pub default_socket_timeout: Duration,
}

impl Endpoint {
    /// The limit on each read from the group's socket.
    fn socket_timeout(&self) -> Duration {
        match self.options.socket_timeout {
            t if t.is_zero() => self.default_socket_timeout,
            t => t,
        }
    }

    /// The most bytes of response headers taken from the group (`header-buffer-size=`; 0:
    /// 32 KiB, mod_wsgi's effective default).
    fn header_limit(&self) -> usize {
        match self.options.header_buffer_size {
            0 => 32 * 1024,
            n => usize::try_from(n).unwrap_or(usize::MAX),
        }
    }
}

/// Why a request could not be run in its daemon process group. [`DispatchError::status`] is
/// the HTTP status to answer; the message names the group, for the error log.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// No such group.
    #[error("no daemon process group `{0}` is running: define it with WSGIDaemonProcess")]
    UnknownGroup(String),
    /// The socket could not be reached (503).
    #[error("cannot connect to daemon process group `{group}` at `{}` (waited {:.1}s): {source}; is the group running, and may this user connect to the socket?", .socket.display(), .waited.as_secs_f64())]
    Connect {
        /// The group.
        group: String,
        /// Its socket.
        socket: PathBuf,
        /// How long connecting was retried.
        waited: Duration,
        /// The last OS error.
        source: io::Error,
    },
    /// Every attempt was turned away by restarting processes (503).
    #[error(
        "daemon process group `{group}` kept rejecting the request while restarting ({attempts} attempts)"
    )]
    Restarting {
        /// The group.
        group: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The daemon process that took the request could not start (503).
    #[error("daemon process group `{group}` cannot start its processes: {why}")]
    StartFailed {
        /// The group.
        group: String,
        /// Why, as the process reported it.
        why: String,
    },
    /// The request waited longer than queue-timeout (503).
    #[error(
        "the request waited longer than queue-timeout for a worker in daemon process group `{0}`"
    )]
    QueueTimeout(String),
    /// The daemon process ended or broke the protocol before the response headers (502).
    #[error(
        "daemon process group `{group}` closed the connection before sending response headers ({detail}); the process probably crashed: see its exit status in the log"
    )]
    DaemonGone {
        /// The group.
        group: String,
        /// What happened.
        detail: String,
    },
    /// No response headers within request-timeout, or a socket read timed out (504).
    #[error("daemon process group `{group}` sent no response headers within {:.1}s (request-timeout/socket-timeout)", .after.as_secs_f64())]
    Timeout {
        /// The group.
        group: String,
        /// The limit that ran out.
        after: Duration,
    },
    /// The response headers were larger than `header-buffer-size=` (500, as mod_wsgi).
    #[error(
        "daemon process group `{group}` sent {size} bytes of response headers, more than its header-buffer-size of {limit}: raise header-buffer-size= or send fewer or shorter headers"
    )]
    HeadersTooLarge {
        /// The group.
        group: String,
        /// The size of the headers (status line included).
        size: usize,
        /// `header-buffer-size=` (32 KiB when 0).
        limit: usize,
    },
}

impl DispatchError {
    /// The HTTP status the front answers with.
    pub fn status(&self) -> u16 {
        match self {
            DispatchError::UnknownGroup(_) | DispatchError::HeadersTooLarge { .. } => 500,
            DispatchError::Connect { .. }
            | DispatchError::Restarting { .. }
            | DispatchError::StartFailed { .. }
            | DispatchError::QueueTimeout(_) => 503,
            DispatchError::DaemonGone { .. } => 502,
            DispatchError::Timeout { .. } => 504,
        }
    }
}

impl DaemonRequest {
    /// A request for `app`, arrived now.
    pub fn new(app: AppCall, head: RequestHead) -> Self {
        DaemonRequest {
            queued_at_us: wsgi_interp::now_us(),
            app,
            head,
        }
    }
}

impl<'a> RequestRef<'a> {
    /// A request for `app`, arrived now, borrowed from where the caller keeps it.
    pub fn new(app: &'a AppCall, head: &'a RequestHead) -> Self {
        RequestRef {
            queued_at_us: wsgi_interp::now_us(),
            app,
            head,
        }
    }
}

struct GroupClient {
    endpoint: Endpoint,
    /// Idle connections, each with the read timeout set on it when known (set again only
    /// when it changes: a system call).
    idle: Mutex<Vec<(UnixStream, Option<Option<Duration>>)>>,
}

/// Sends requests to daemon process groups. Cheap to share between threads.
pub struct DaemonClient {
    groups: HashMap<String, GroupClient>,
}

enum Attempt {
    Done(Result<Outcome, DispatchError>),
    /// Nothing ran: try again on a fresh connection.
    Retry {
        rejected: bool,
    },
}

impl DaemonClient {
    /// A client for these groups.
    pub fn new(endpoints: Vec<Endpoint>) -> Self {
        DaemonClient {
            groups: endpoints
                .into_iter()
                .map(|e| {
                    (
                        e.group.clone(),
                        GroupClient {
                            endpoint: e,
                            idle: Mutex::new(Vec::new()),
                        },
                    )
                })
                .collect(),
        }
    }

    /// Runs `request` in daemon process group `group`: streams `body` to it as the app reads
    /// it and the response to `sink`. Blocking; call it from a worker thread.
    ///
    /// `Ok` outcomes are handled as in embedded mode (`Aborted`: reset the client
    /// connection). A daemon that dies after the headers gives `Ok(Outcome::Aborted)`; before
    /// them, [`DispatchError::DaemonGone`] (502).
    pub fn dispatch<'r>(
        &self,
        group: &str,
        request: impl Into<RequestRef<'r>>,
        body: &mut dyn RequestBody,
        sink: &mut dyn ResponseSink,
    ) -> Result<Outcome, DispatchError> {
        self.dispatch_ref(group, request.into(), body, sink)
    }

    fn dispatch_ref(
        &self,
        group: &str,
        request: RequestRef<'_>,
        body: &mut dyn RequestBody,
        sink: &mut dyn ResponseSink,
    ) -> Result<Outcome, DispatchError> {
        let g = self
            .groups
            .get(group)
            .ok_or_else(|| DispatchError::UnknownGroup(group.to_string()))?;
        // A small body the front holds whole rides in the REQUEST frame: the daemon then asks
        // for nothing (one round trip between the processes less). Held in slices, it is
        // written beside the frame's head instead of copied into it, and nothing of it is
        // left to ask for.
        let inline = matches!(body.held_whole(), Some(n) if n <= protocol::INLINE_BODY);
        if let Some(slices) = inline.then(|| body.held_slices()).flatten() {
            let len: usize = slices.iter().map(|s| s.len()).sum();
            if len <= protocol::INLINE_BODY {
                let head =
                    protocol::encode_request_before_body(request, len, Vec::with_capacity(1024));
                let frame = [&head[..]].into_iter().chain(slices).collect::<Vec<_>>();
                return self.run(g, group, &frame, &mut io::empty(), sink);
            }
        }
        let encoded = protocol::encode_request(
            request,
            inline.then_some(&mut *body),
            Vec::with_capacity(1024),
        );
        let mut failed = FailedBody(None);
        let (frame, body): (Vec<u8>, &mut dyn RequestBody) = match encoded {
            Ok(frame) => (frame, body),
            Err(e) => {
                // Not expected of bytes in memory; the app hears of it at its first read.
                failed.0 = Some(e);
                let frame = protocol::encode_request(request, None, Vec::with_capacity(1024));
                (frame.expect("only reading a body fails"), &mut failed)
            }
        };
        self.run(g, group, &[&frame], body, sink)
    }

    /// Runs the request whose REQUEST frame is `frame` (its parts, in order) on a pooled or new
    /// connection to `g`, again on fresh ones while the daemon took nothing.
    fn run(
        &self,
        g: &GroupClient,
        group: &str,
        frame: &[&[u8]],
        body: &mut dyn RequestBody,
        sink: &mut dyn ResponseSink,
    ) -> Result<Outcome, DispatchError> {
        let max_rejects = 2 * g.endpoint.options.processes + 1;
        let mut rejects = 0;
        let mut fresh_retries = 0;
        loop {
            // After a failed attempt only fresh connections: pooled ones may all lead to the
            // process that is going away.
            let pooled = if fresh_retries == 0 && rejects == 0 {
                g.idle.lock().pop()
            } else {
                None
            };
            let conn = match pooled {
                Some(pooled) => pooled,
                None => (g.connect()?, None),
            };
            match g.attempt(conn, frame, body, sink) {
                Attempt::Done(r) => return r,
                Attempt::Retry { rejected: true } => {
                    rejects += 1;
                    if rejects >= max_rejects {
                        return Err(DispatchError::Restarting {
                            group: group.to_string(),
                            attempts: rejects,
                        });
                    }
                }
                Attempt::Retry { rejected: false } => {
                    fresh_retries += 1;
                    if fresh_retries > 2 {
                        return Err(DispatchError::DaemonGone {
                            group: group.to_string(),
                            detail: "fresh connections were closed before the request was taken"
                                .into(),
                        });
                    }
                }
            }
        }
    }

    /// The groups this client knows.
    pub fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.groups.values().map(|g| &g.endpoint)
    }
}

impl GroupClient {
    /// Connects, retrying refusals (backlog full) every 0.125 s for 2 s, then every second,
    /// until connect-timeout; other errors fail at once.
    fn connect(&self) -> Result<UnixStream, DispatchError> {
        let start = Instant::now();
        let limit = self.endpoint.options.connect_timeout;
        loop {
            match UnixStream::connect(&self.endpoint.socket) {
                Ok(c) => {
                    let o = &self.endpoint.options;
                    set_buffer_sizes(&c, o.send_buffer_size, o.receive_buffer_size);
                    return Ok(c);
                }
                Err(e) => {
                    let waited = start.elapsed();
                    let retryable = matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionRefused | io::ErrorKind::WouldBlock
                    );
                    if !retryable || waited >= limit {
                        return Err(DispatchError::Connect {
                            group: self.endpoint.group.clone(),
                            socket: self.endpoint.socket.clone(),
                            waited,
                            source: e,
                        });
                    }
                    let pause = if waited < Duration::from_secs(2) {
                        Duration::from_millis(125)
                    } else {
                        Duration::from_secs(1)
                    };
                    std::thread::sleep(pause.min(limit - waited));
                }
            }
        }
    }

    /// Keeps `conn`, whose read timeout is `timeout` when known, for the next request.
    fn give_back(&self, conn: UnixStream, timeout: Option<Option<Duration>>) {
        let mut idle = self.idle.lock();
        if idle.len() < MAX_IDLE {
            idle.push((conn, timeout));
        }
    }

    /// Runs the request on `conn`, whose read timeout is `read_timeout` when known.
    fn attempt(
        &self,
        (conn, mut read_timeout): (UnixStream, Option<Option<Duration>>),
        frame: &[&[u8]],
        body: &mut dyn RequestBody,
        sink: &mut dyn ResponseSink,
    ) -> Attempt {
        let group = &self.endpoint.group;
        let o = &self.endpoint.options;
        let sent_at = Instant::now();
        let header_deadline = (!o.request_timeout.is_zero()).then(|| sent_at + o.request_timeout);
        let mut parts: Vec<IoSlice<'_>> = frame.iter().map(|part| IoSlice::new(part)).collect();
        if protocol::write_all_vectored(&conn, &mut parts).is_err() {
            // Nothing of the request was taken (its body is not read yet), so another
            // connection may carry it: a pooled one to a process that has since gone, or a
            // fresh one that a process stopping for replacement accepted and closed.
            return Attempt::Retry { rejected: false };
        }
        let mut reader = FrameReader::new(BufReader::with_capacity(
            protocol::READ_AHEAD,
            FdReader::new(&conn),
        ));
        // The request body's buffers, made at the first BODY_WANTED (most requests have none).
        let mut out = None;
        let mut chunk = Vec::new();
        // Whether the daemon asked for the body: it runs the request.
        let mut asked = false;
        let mut started: Option<u16> = None;
        let mut sent: u64 = 0;
        loop {
            // Before the headers, reads are bounded by what is left of request-timeout.
            let mut limit = self.endpoint.socket_timeout();
            let mut by_deadline = false;
            if let (None, Some(deadline)) = (started, header_deadline) {
                let left = deadline.saturating_duration_since(Instant::now());
                if left <= limit || limit.is_zero() {
                    limit = left;
                    by_deadline = true;
                }
            }
            if limit.is_zero() && by_deadline {
                return Attempt::Done(Err(DispatchError::Timeout {
                    group: group.clone(),
                    after: o.request_timeout,
                }));
            }
            let timeout = (!limit.is_zero()).then_some(limit);
            if read_timeout != Some(timeout) {
                let _ = conn.set_read_timeout(timeout);
                read_timeout = Some(timeout);
            }
            let frame = reader.next_frame_with(crate::fd_passing::append_payload);
            // The daemon closed the connection with the request unread: nothing ran.
            let unread = match &frame {
                Err(ProtocolError::Io(e)) => e.kind() == io::ErrorKind::ConnectionReset,
                _ => false,
            };
            let failure = match frame {
                Ok(Some((kind::BODY_WANTED, p))) => {
                    asked = true;
                    let want = match protocol::decode_body_wanted(p) {
                        Ok(n) => (n as usize).min(CHUNK),
                        Err(e) => return self.broken(started, sent, e.to_string()),
                    };
                    if chunk.is_empty() {
                        chunk = vec![0u8; CHUNK];
                    }
                    let out =
                        out.get_or_insert_with(|| BufWriter::with_capacity(CHUNK + 16, &conn));
                    let sent_ok = match read_available(body, &mut chunk[..want]) {
                        Ok(0) => write_raw(out, kind::BODY_END, &[]),
                        Ok(n) => write_raw(out, kind::BODY, &chunk[..n]),
                        Err(e) => write_raw(out, kind::BODY_ERROR, e.to_string().as_bytes()),
                    }
                    .and_then(|()| out.flush());
                    if let Err(e) = sent_ok {
                        return self.broken(started, sent, format!("sending the body failed: {e}"));
                    }
                    continue;
                }
                Ok(Some((kind::START, p))) => {
                    let limit = self.endpoint.header_limit();
                    if p.len() > limit {
                        // Not given back: the daemon is still sending this response.
                        return Attempt::Done(Err(DispatchError::HeadersTooLarge {
                            group: group.clone(),
                            size: p.len(),
                            limit,
                        }));
                    }
                    let s = match protocol::decode_start(p) {
                        Ok(s) => s,
                        Err(e) => return self.broken(started, sent, e.to_string()),
                    };
                    started = Some(s.status);
                    if let Err(error) = sink.start(s.status, &s.reason, s.headers) {
                        return Attempt::Done(Ok(Outcome::ClientGone { error }));
                    }
                    continue;
                }
                Ok(Some((kind::DATA, p))) => {
                    sent += p.len() as u64;
                    // A large chunk is handed over as read; a small one is copied, so the
                    // reader keeps its buffer.
                    let written = if p.len() >= OWNED_CHUNK {
                        sink.write_owned(reader.take_payload())
                    } else {
                        sink.write(p)
                    };
                    if let Err(error) = written {
                        return Attempt::Done(Ok(Outcome::ClientGone { error }));
                    }
                    continue;
                }
                Ok(Some((kind::FILE, p))) => {
                    let (offset, len) = match protocol::decode_file(p) {
                        Ok(range) => range,
                        Err(e) => return self.broken(started, sent, e.to_string()),
                    };
                    let Some(fd) = reader.get_mut().get_mut().take_fd() else {
                        let why = "a FILE frame came without its file descriptor";
                        return self.broken(started, sent, why.to_string());
                    };
                    sent += len;
                    if let Err(error) = send_file(sink, std::fs::File::from(fd), offset, len) {
                        return Attempt::Done(Ok(Outcome::ClientGone { error }));
                    }
                    continue;
                }
                Ok(Some((kind::END, p))) => {
                    let end = match protocol::decode_end(p) {
                        Ok(e) => e,
                        Err(e) => return self.broken(started, sent, e.to_string()),
                    };
                    drop(out);
                    return match end {
                        End::Ran(outcome) => {
                            self.give_back(conn, read_timeout);
                            Attempt::Done(Ok(outcome))
                        }
                        End::QueueTimeout => {
                            self.give_back(conn, read_timeout);
                            Attempt::Done(Err(DispatchError::QueueTimeout(group.clone())))
                        }
                        End::Rejected(RejectReason::ScriptChanged | RejectReason::Draining) => {
                            Attempt::Retry { rejected: true }
                        }
                        End::StartFailed(why) => Attempt::Done(Err(DispatchError::StartFailed {
                            group: group.clone(),
                            why,
                        })),
                    };
                }
                Ok(Some((other, _))) => ProtocolError::Unexpected {
                    got: other,
                    expected: "a daemon frame",
                }
                .to_string(),
                Ok(None) => "end of stream".to_string(),
                Err(ProtocolError::Io(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if started.is_none() {
                        return Attempt::Done(Err(DispatchError::Timeout {
                            group: group.clone(),
                            after: if by_deadline {
                                o.request_timeout
                            } else {
                                limit
                            },
                        }));
                    }
                    format!("no data for {:.1}s (socket-timeout)", limit.as_secs_f64())
                }
                Err(e) => e.to_string(),
            };
            if unread && !asked && started.is_none() {
                return Attempt::Retry { rejected: false };
            }
            if started.is_none()
                && header_deadline.is_some_and(|d| Instant::now() + Duration::from_millis(50) >= d)
            {
                return Attempt::Done(Err(DispatchError::Timeout {
                    group: group.clone(),
                    after: o.request_timeout,
                }));
            }
            return self.broken(started, sent, failure);
        }
    }

    fn broken(&self, started: Option<u16>, sent: u64, detail: String) -> Attempt {
        let group = self.endpoint.group.clone();
        Attempt::Done(match started {
            None => Err(DispatchError::DaemonGone { group, detail }),
            Some(status) => Ok(Outcome::Aborted {
                status,
                sent,
                error: AppError {
                    message: format!(
                        "daemon process group `{group}` ended the response early ({detail}): the process probably crashed"
                    ),
                    traceback: String::new(),
                },
            }),
        })
    }
}

/// A request body whose reading failed before the request went out: its first read says so.
struct FailedBody(Option<io::Error>);

impl RequestBody for FailedBody {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        self.0.take().map_or(Ok(0), Err)
    }
}

/// Reads into `buf` what the first read gives (waiting for it), then whatever more `body`
/// holds without waiting: a BODY frame as full as the body allows at once, so a body the
/// front holds whole crosses in as few round trips as its size allows.
fn read_available(body: &mut dyn RequestBody, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = body.read(buf)?;
    while n > 0 && n < buf.len() && body.held() > 0 {
        match body.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Sends `len` bytes of `file` from `offset` to `sink`: from the file where the sink can
/// (`sendfile`), else read and written in chunks. A file shorter than said ends the body
/// early with an error, as the front cannot send what the headers promised.
fn send_file(
    sink: &mut dyn ResponseSink,
    file: std::fs::File,
    offset: u64,
    len: u64,
) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let Some(file) = sink.owned_file(file, offset, len)? else {
        return Ok(());
    };
    let mut chunk = vec![0u8; CHUNK.min(usize::try_from(len).unwrap_or(CHUNK))];
    let mut done = 0;
    while done < len {
        let want = chunk
            .len()
            .min(usize::try_from(len - done).unwrap_or(usize::MAX));
        let n = file.read_at(&mut chunk[..want], offset + done)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file the daemon process sent is shorter than its response says",
            ));
        }
        sink.write(&chunk[..n])?;
        done += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;
    use wsgi_interp::ScriptSpec;

    /// A response sink that keeps the status.
    #[derive(Default)]
    struct Status(Option<u16>);

    impl ResponseSink for Status {
        fn start(&mut self, status: u16, _: &str, _: Vec<(String, Vec<u8>)>) -> io::Result<()> {
            self.0 = Some(status);
            Ok(())
        }

        fn write(&mut self, _: &[u8]) -> io::Result<()> {
            Ok(())
        }
    }

    /// A group `g` played by the test: its socket (in a folder kept while the test runs) and
    /// a client of it, whose reads wait at most 5 s.
    fn fake_group() -> (tempfile::TempDir, UnixListener, DaemonClient) {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("g.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let client = DaemonClient::new(vec![Endpoint {
            group: "g".into(),
            socket,
            options: DaemonOptions::default(),
            default_socket_timeout: Duration::from_secs(5),
        }]);
        (dir, listener, client)
    }

    /// Sends one GET through `client`: the status, or the error's.
    fn get(client: &DaemonClient) -> u16 {
        let app = AppCall {
            script: ScriptSpec::new("/srv/app.wsgi"),
            application_group: String::new(),
            pass_authorization: false,
        };
        let head = RequestHead {
            method: "GET".into(),
            ..Default::default()
        };
        let mut sink = Status::default();
        match client.dispatch(
            "g",
            RequestRef::new(&app, &head),
            &mut io::empty(),
            &mut sink,
        ) {
            Ok(_) => sink.0.expect("a status"),
            Err(e) => e.status(),
        }
    }

    /// Plays the daemon on `conn` for one request: reads it, answers 200.
    fn answer(conn: &UnixStream) {
        let mut frames = FrameReader::new(BufReader::new(conn));
        assert!(matches!(frames.next_frame(), Ok(Some((kind::REQUEST, _)))));
        let mut out = conn;
        out.write_all(&protocol::encode_start(200, "OK", &[]))
            .unwrap();
        let done = Outcome::Complete {
            status: 200,
            body_bytes: 0,
        };
        out.write_all(&protocol::encode_end(&End::Ran(done)))
            .unwrap();
    }

    /// Waits until the front has written its next request on `conn` (not reading it).
    fn request_waits(conn: &UnixStream) {
        let mut fds = [nix::poll::PollFd::new(
            conn.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let ready = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(5000u16));
        assert!(matches!(ready, Ok(1)), "no request came");
    }

    /// A pooled connection keeps the read timeout set on it, as it is on the socket, so the
    /// next request on it need not set it again.
    #[test]
    fn a_pooled_connection_remembers_its_read_timeout() {
        let (_dir, listener, client) = fake_group();
        let daemon = std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            answer(&conn);
            answer(&conn);
        });
        for _ in 0..2 {
            assert_eq!(get(&client), 200);
            let idle = client.groups["g"].idle.lock();
            let [(conn, recorded)] = idle.as_slice() else {
                panic!("one pooled connection");
            };
            assert_eq!(*recorded, Some(Some(Duration::from_secs(5))));
            assert_eq!(conn.read_timeout().unwrap(), Some(Duration::from_secs(5)));
        }
        daemon.join().unwrap();
    }

    /// A pooled connection that its daemon closes with the next request unread (as a stopping
    /// process closes its idle ones) has the request retried on a fresh connection; one whose
    /// daemon read the request and then went away (it died running it) is not retried: the
    /// app must not run twice.
    #[test]
    fn only_a_request_the_daemon_left_unread_is_retried() {
        let (_dir, listener, client) = fake_group();
        let daemon = std::thread::spawn(move || {
            let (first, _) = listener.accept().unwrap();
            answer(&first);
            request_waits(&first);
            drop(first); // unread: the front's end is reset
            let (second, _) = listener.accept().unwrap();
            answer(&second);
            // The next request is read, then the connection ends without an answer.
            let mut frames = FrameReader::new(BufReader::new(&second));
            assert!(matches!(frames.next_frame(), Ok(Some((kind::REQUEST, _)))));
            drop(frames);
            drop(second);
            listener.set_nonblocking(true).unwrap();
            listener
        });
        assert_eq!(get(&client), 200, "the first request");
        assert_eq!(get(&client), 200, "retried on a fresh connection");
        assert_eq!(get(&client), 502, "read, then the daemon went away");
        let listener = daemon.join().unwrap();
        assert!(
            listener.accept().is_err(),
            "a request the daemon read was sent again"
        );
    }

    #[test]
    fn buffer_sizes_are_set_when_given() {
        use nix::sys::socket::{getsockopt, sockopt};
        let (a, _b) = UnixStream::pair().unwrap();
        let (send0, recv0) = (
            getsockopt(&a, sockopt::SndBuf).unwrap(),
            getsockopt(&a, sockopt::RcvBuf).unwrap(),
        );
        set_buffer_sizes(&a, 0, 0);
        assert_eq!(getsockopt(&a, sockopt::SndBuf).unwrap(), send0);
        assert_eq!(getsockopt(&a, sockopt::RcvBuf).unwrap(), recv0);
        set_buffer_sizes(&a, 4096, 8192);
        // Linux keeps twice the value asked for (its bookkeeping share).
        assert_eq!(getsockopt(&a, sockopt::SndBuf).unwrap(), 2 * 4096);
        assert_eq!(getsockopt(&a, sockopt::RcvBuf).unwrap(), 2 * 8192);
    }
}
