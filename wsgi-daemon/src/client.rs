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
use std::io::{self, IoSlice};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use wsgi_config::daemon_options::DaemonOptions;
use wsgi_interp::{AppCall, AppError, Outcome, RequestBody, RequestHead, ResponseSink};

use crate::frames::Frames;
use crate::protocol::{
    self, CHUNK, DaemonRequest, End, ProtocolError, RejectReason, RequestRef, kind,
};

/// Idle connections kept per group.
const MAX_IDLE: usize = 64;

/// Response chunks of at least this size go to the sink as read ([`ResponseSink::write_owned`]).
pub(crate) const OWNED_CHUNK: usize = 16 * 1024;

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
            shared_buffers: false,
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
            shared_buffers: false,
        }
    }
}

/// A group's idle connections, most recently used on top; at most [`MAX_IDLE`] are kept.
pub(crate) struct Idle<C>(Mutex<Vec<C>>);

impl<C> Default for Idle<C> {
    fn default() -> Self {
        Idle(Mutex::new(Vec::new()))
    }
}

impl<C> Idle<C> {
    /// The connection used last, when `retries` lets the attempt take a pooled one.
    pub(crate) fn take(&self, retries: &Retries<'_>) -> Option<C> {
        if retries.may_reuse() {
            self.0.lock().pop()
        } else {
            None
        }
    }

    /// Keeps `conn` for the next request, unless the pool is full.
    pub(crate) fn give_back(&self, conn: C) {
        let mut idle = self.0.lock();
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }

    /// The idle connections, for tests.
    #[cfg(test)]
    pub(crate) fn lock(&self) -> parking_lot::MutexGuard<'_, Vec<C>> {
        self.0.lock()
    }
}

struct GroupClient {
    endpoint: Endpoint,
    idle: Idle<Conn>,
}

/// A connection to a daemon process, with its read-ahead and the read timeout set on it when
/// known (set again only when it changes: a system call); kept so in the pool.
struct Conn {
    stream: UnixStream,
    frames: Frames,
    read_timeout: Option<Option<Duration>>,
}

/// Sends requests to daemon process groups. Cheap to share between threads.
pub struct DaemonClient {
    groups: HashMap<String, GroupClient>,
}

pub(crate) enum Attempt {
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
                            idle: Idle::default(),
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
        if let Some((head, slices)) = inline_request(request, body) {
            let frame = [&head[..]].into_iter().chain(slices).collect::<Vec<_>>();
            return self.run(g, &frame, &mut io::empty(), sink);
        }
        let inline = matches!(body.held_whole(), Some(n) if n <= protocol::INLINE_BODY);
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
        self.run(g, &[&frame], body, sink)
    }

    /// Runs the request whose REQUEST frame is `frame` (its parts, in order) on a pooled or new
    /// connection to `g`, again on fresh ones while the daemon took nothing.
    fn run(
        &self,
        g: &GroupClient,
        frame: &[&[u8]],
        body: &mut dyn RequestBody,
        sink: &mut dyn ResponseSink,
    ) -> Result<Outcome, DispatchError> {
        let mut retries = Retries::new(&g.endpoint);
        loop {
            let conn = match g.idle.take(&retries) {
                Some(pooled) => pooled,
                None => g.connect()?,
            };
            match g.attempt(conn, frame, body, sink) {
                Attempt::Done(r) => return r,
                Attempt::Retry { rejected } => retries.another(rejected)?,
            }
        }
    }

    /// The groups this client knows.
    pub fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.groups.values().map(|g| &g.endpoint)
    }
}

/// A small body the front holds whole rides in the REQUEST frame: the daemon then asks for
/// nothing (one round trip between the processes less). Held in slices, it is written beside
/// the frame's head instead of copied into it: the frame's head and the slices, when that is
/// so.
pub(crate) fn inline_request<'b>(
    request: RequestRef<'_>,
    body: &'b (impl RequestBody + ?Sized),
) -> Option<(Vec<u8>, Vec<&'b [u8]>)> {
    if !matches!(body.held_whole(), Some(n) if n <= protocol::INLINE_BODY) {
        return None;
    }
    let slices = body.held_slices()?;
    let len: usize = slices.iter().map(|s| s.len()).sum();
    (len <= protocol::INLINE_BODY).then(|| {
        let head = protocol::encode_request_before_body(request, len, Vec::with_capacity(1024));
        (head, slices)
    })
}

/// How many more attempts a request gets: up to `2 × processes + 1` rejections (mod_wsgi's
/// cap), and two fresh connections closed before the request was taken.
pub(crate) struct Retries<'e> {
    endpoint: &'e Endpoint,
    rejects: u32,
    fresh: u32,
}

impl<'e> Retries<'e> {
    pub(crate) fn new(endpoint: &'e Endpoint) -> Self {
        Retries {
            endpoint,
            rejects: 0,
            fresh: 0,
        }
    }

    /// Whether the next attempt may take a pooled connection: only the first. After a
    /// failed attempt only fresh ones: pooled ones may all lead to the process that is going
    /// away.
    pub(crate) fn may_reuse(&self) -> bool {
        self.rejects == 0 && self.fresh == 0
    }

    /// Counts a failed attempt (`rejected`: a daemon turned it away); `Err` when no attempt
    /// is left.
    pub(crate) fn another(&mut self, rejected: bool) -> Result<(), DispatchError> {
        let group = || self.endpoint.group.clone();
        if rejected {
            self.rejects += 1;
            let cap = 2 * self.endpoint.options.processes + 1;
            if self.rejects >= cap {
                return Err(DispatchError::Restarting {
                    group: group(),
                    attempts: self.rejects,
                });
            }
        } else {
            self.fresh += 1;
            if self.fresh > 2 {
                return Err(DispatchError::DaemonGone {
                    group: group(),
                    detail: "fresh connections were closed before the request was taken".into(),
                });
            }
        }
        Ok(())
    }
}

impl Endpoint {
    /// How long to wait before connecting again after `error`, `waited` after the first
    /// try: refusals every 0.125 s for 2 s (a full backlog, which only a non-blocking connect
    /// reports, every 5 ms), then every second, until connect-timeout; `Err` for anything
    /// else, or when the time is up.
    pub(crate) fn connect_pause(
        &self,
        waited: Duration,
        error: io::Error,
    ) -> Result<Duration, DispatchError> {
        let limit = self.options.connect_timeout;
        let retryable = matches!(
            error.kind(),
            io::ErrorKind::ConnectionRefused | io::ErrorKind::WouldBlock
        );
        if !retryable || waited >= limit {
            return Err(DispatchError::Connect {
                group: self.group.clone(),
                socket: self.socket.clone(),
                waited,
                source: error,
            });
        }
        let pause = match error.kind() {
            // A full backlog (a non-blocking connect): the daemon is accepting, only behind.
            io::ErrorKind::WouldBlock if waited < Duration::from_secs(2) => {
                Duration::from_millis(5)
            }
            _ if waited < Duration::from_secs(2) => Duration::from_millis(125),
            _ => Duration::from_secs(1),
        };
        Ok(pause.min(limit - waited))
    }

    /// Sets a new connection's socket buffer sizes.
    pub(crate) fn prepare(&self, conn: &impl AsFd) {
        let o = &self.options;
        set_buffer_sizes(conn, o.send_buffer_size, o.receive_buffer_size);
    }
}

/// The limit on one read from a daemon connection ([`Exchange::read_limit`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadLimit {
    /// The time the read may wait (0: no limit).
    limit: Duration,
    /// Whether it is what is left of request-timeout (else socket-timeout).
    by_deadline: bool,
}

impl ReadLimit {
    /// The socket's read timeout for it (None: none).
    pub(crate) fn timeout(&self) -> Option<Duration> {
        (!self.limit.is_zero()).then_some(self.limit)
    }
}

/// One attempt's progress through the daemon's answer, whatever does the I/O (the blocking
/// [`DaemonClient`] or the front's async client): what each frame means, what ends the
/// attempt, and with which outcome.
pub(crate) struct Exchange<'e> {
    endpoint: &'e Endpoint,
    /// The response headers must come by then (request-timeout).
    header_deadline: Option<Instant>,
    /// Whether the daemon asked for the body: it runs the request.
    asked: bool,
    /// The response's status, once started.
    started: Option<u16>,
    /// The body bytes sent on.
    sent: u64,
}

/// What to do after a frame ([`Exchange::on_frame`]).
pub(crate) enum Step<'p> {
    /// Send the daemon up to this many bytes of the body (a BODY, BODY_END or BODY_ERROR).
    SendBody(usize),
    /// Start the response.
    Start(protocol::Start),
    /// Send this chunk of the body on.
    Data(&'p [u8]),
    /// Map the response buffer whose descriptor came with the frame (SHARED_BUFFER).
    SharedBuffer,
    /// Send `len` bytes of slot `slot` of the connection's response buffer (SHARED_DATA).
    SharedData {
        /// Which slot.
        slot: u32,
        /// How many of its bytes.
        len: u32,
    },
    /// Send `len` bytes from `offset` of the file that came with the frame.
    File {
        /// Where in the file.
        offset: u64,
        /// How much.
        len: u64,
    },
    /// The attempt is over; `reuse`: the connection may carry another request.
    Done {
        /// How it ended.
        attempt: Attempt,
        /// Whether to pool the connection.
        reuse: bool,
    },
}

impl<'e> Exchange<'e> {
    /// An attempt whose request was sent to `endpoint`'s group now.
    pub(crate) fn new(endpoint: &'e Endpoint) -> Self {
        let timeout = endpoint.options.request_timeout;
        Exchange {
            endpoint,
            header_deadline: (!timeout.is_zero()).then(|| Instant::now() + timeout),
            asked: false,
            started: None,
            sent: 0,
        }
    }

    /// The limit on the next read: socket-timeout, or before the headers what is left of
    /// request-timeout when that is sooner. `Err` when request-timeout has run out.
    pub(crate) fn read_limit(&self) -> Result<ReadLimit, Attempt> {
        let mut read = ReadLimit {
            limit: self.endpoint.socket_timeout(),
            by_deadline: false,
        };
        if let (None, Some(deadline)) = (self.started, self.header_deadline) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left <= read.limit || read.limit.is_zero() {
                read = ReadLimit {
                    limit: left,
                    by_deadline: true,
                };
            }
        }
        if read.limit.is_zero() && read.by_deadline {
            return Err(self.timed_out(self.endpoint.options.request_timeout));
        }
        Ok(read)
    }

    /// What the frame read under `read` (or the failure to read one) means.
    pub(crate) fn on_frame<'p>(
        &mut self,
        frame: Result<Option<(u8, &'p [u8])>, ProtocolError>,
        read: ReadLimit,
    ) -> Step<'p> {
        let failure = match frame {
            Ok(Some((kind::BODY_WANTED, p))) => {
                self.asked = true;
                return match protocol::decode_body_wanted(p) {
                    Ok(n) => Step::SendBody((n as usize).min(CHUNK)),
                    Err(e) => ending(self.broken(e.to_string())),
                };
            }
            Ok(Some((kind::START, p))) => {
                let limit = self.endpoint.header_limit();
                if p.len() > limit {
                    // Not reused: the daemon is still sending this response.
                    return ending(Attempt::Done(Err(DispatchError::HeadersTooLarge {
                        group: self.endpoint.group.clone(),
                        size: p.len(),
                        limit,
                    })));
                }
                return match protocol::decode_start(p) {
                    Ok(s) => {
                        self.started = Some(s.status);
                        Step::Start(s)
                    }
                    Err(e) => ending(self.broken(e.to_string())),
                };
            }
            Ok(Some((kind::DATA, p))) => {
                self.sent += p.len() as u64;
                return Step::Data(p);
            }
            Ok(Some((kind::SHARED_BUFFER, p))) => {
                return if p.is_empty() {
                    Step::SharedBuffer
                } else {
                    ending(self.broken("malformed SHARED_BUFFER frame: a payload".to_string()))
                };
            }
            Ok(Some((kind::SHARED_DATA, p))) => {
                return match protocol::decode_shared_data(p) {
                    Ok((slot, len)) => {
                        self.sent += u64::from(len);
                        Step::SharedData { slot, len }
                    }
                    Err(e) => ending(self.broken(e.to_string())),
                };
            }
            Ok(Some((kind::FILE, p))) => {
                return match protocol::decode_file(p) {
                    Ok((offset, len)) => {
                        self.sent += len;
                        Step::File { offset, len }
                    }
                    Err(e) => ending(self.broken(e.to_string())),
                };
            }
            Ok(Some((kind::END, p))) => {
                let end = match protocol::decode_end(p) {
                    Ok(e) => e,
                    Err(e) => return ending(self.broken(e.to_string())),
                };
                let group = || self.endpoint.group.clone();
                return match end {
                    End::Ran(outcome) => Step::Done {
                        attempt: Attempt::Done(Ok(outcome)),
                        reuse: true,
                    },
                    End::QueueTimeout => Step::Done {
                        attempt: Attempt::Done(Err(DispatchError::QueueTimeout(group()))),
                        reuse: true,
                    },
                    End::Rejected(RejectReason::ScriptChanged | RejectReason::Draining) => {
                        Step::Done {
                            attempt: Attempt::Retry { rejected: true },
                            reuse: false,
                        }
                    }
                    End::StartFailed(why) => {
                        ending(Attempt::Done(Err(DispatchError::StartFailed {
                            group: group(),
                            why,
                        })))
                    }
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
                if self.started.is_none() {
                    let after = if read.by_deadline {
                        self.endpoint.options.request_timeout
                    } else {
                        read.limit
                    };
                    return ending(self.timed_out(after));
                }
                format!(
                    "no data for {:.1}s (socket-timeout)",
                    read.limit.as_secs_f64()
                )
            }
            Err(ProtocolError::Io(e))
                if e.kind() == io::ErrorKind::ConnectionReset
                    && !self.asked
                    && self.started.is_none() =>
            {
                // The daemon closed the connection with the request unread: nothing ran.
                return ending(Attempt::Retry { rejected: false });
            }
            Err(e) => e.to_string(),
        };
        if self.started.is_none()
            && self
                .header_deadline
                .is_some_and(|d| Instant::now() + Duration::from_millis(50) >= d)
        {
            return ending(self.timed_out(self.endpoint.options.request_timeout));
        }
        ending(self.broken(failure))
    }

    /// The attempt ends because the daemon broke off: before the headers a 502, after them
    /// the response cut short.
    pub(crate) fn broken(&self, detail: String) -> Attempt {
        let group = self.endpoint.group.clone();
        Attempt::Done(match self.started {
            None => Err(DispatchError::DaemonGone { group, detail }),
            Some(status) => Ok(Outcome::Aborted {
                status,
                sent: self.sent,
                error: AppError {
                    message: format!(
                        "daemon process group `{group}` ended the response early ({detail}): the process probably crashed"
                    ),
                    traceback: String::new(),
                },
            }),
        })
    }

    /// The attempt ends because the response buffer is unusable (`why`), or a SHARED_DATA
    /// frame of `len` bytes named bytes outside it, or came before it (not sent).
    #[cfg(feature = "tokio")]
    pub(crate) fn bad_shared(&mut self, len: u32, why: String) -> Attempt {
        self.sent -= u64::from(len);
        self.broken(why)
    }

    /// The attempt ends because a FILE frame of `len` bytes came without its descriptor (its
    /// bytes were not sent).
    pub(crate) fn missing_fd(&mut self, len: u64) -> Attempt {
        self.sent -= len;
        self.broken("a FILE frame came without its file descriptor".to_string())
    }

    fn timed_out(&self, after: Duration) -> Attempt {
        Attempt::Done(Err(DispatchError::Timeout {
            group: self.endpoint.group.clone(),
            after,
        }))
    }
}

/// The attempt ends as `attempt` says; the connection is not reused.
fn ending(attempt: Attempt) -> Step<'static> {
    Step::Done {
        attempt,
        reuse: false,
    }
}

/// The frame that answers a BODY_WANTED, from what reading the body gave into `chunk`.
pub(crate) fn body_frame(
    read: io::Result<usize>,
    chunk: &[u8],
) -> (u8, std::borrow::Cow<'_, [u8]>) {
    match read {
        Ok(0) => (kind::BODY_END, (&[][..]).into()),
        Ok(n) => (kind::BODY, chunk[..n].into()),
        Err(e) => (kind::BODY_ERROR, e.to_string().into_bytes().into()),
    }
}

impl GroupClient {
    /// Connects, retrying refusals ([`Endpoint::connect_pause`]).
    fn connect(&self) -> Result<Conn, DispatchError> {
        let start = Instant::now();
        loop {
            match UnixStream::connect(&self.endpoint.socket) {
                Ok(stream) => {
                    self.endpoint.prepare(&stream);
                    return Ok(Conn {
                        stream,
                        frames: Frames::new(),
                        read_timeout: None,
                    });
                }
                Err(e) => std::thread::sleep(self.endpoint.connect_pause(start.elapsed(), e)?),
            }
        }
    }

    /// Runs the request on `conn`.
    fn attempt(
        &self,
        mut conn: Conn,
        frame: &[&[u8]],
        body: &mut dyn RequestBody,
        sink: &mut dyn ResponseSink,
    ) -> Attempt {
        let mut parts: Vec<IoSlice<'_>> = frame.iter().map(|part| IoSlice::new(part)).collect();
        if protocol::write_all_vectored(&conn.stream, &mut parts).is_err() {
            // Nothing of the request was taken (its body is not read yet), so another
            // connection may carry it: a pooled one to a process that has since gone, or a
            // fresh one that a process stopping for replacement accepted and closed.
            return Attempt::Retry { rejected: false };
        }
        let mut exchange = Exchange::new(&self.endpoint);
        // The request body's buffer, made at the first BODY_WANTED (most requests have none).
        let mut chunk = Vec::new();
        loop {
            let read = match exchange.read_limit() {
                Ok(read) => read,
                Err(attempt) => return attempt,
            };
            if conn.read_timeout != Some(read.timeout()) {
                let _ = conn.stream.set_read_timeout(read.timeout());
                conn.read_timeout = Some(read.timeout());
            }
            let frame = conn.frames.next_blocking(&conn.stream);
            match exchange.on_frame(frame, read) {
                Step::SendBody(want) => {
                    if chunk.is_empty() {
                        chunk = vec![0u8; CHUNK];
                    }
                    let got = read_available(body, &mut chunk[..want]);
                    let (kind, payload) = body_frame(got, &chunk);
                    let header = protocol::frame_header(kind, payload.len());
                    let mut parts = [IoSlice::new(&header), IoSlice::new(&payload)];
                    if let Err(e) = protocol::write_all_vectored(&conn.stream, &mut parts) {
                        return exchange.broken(format!("sending the body failed: {e}"));
                    }
                }
                Step::Start(s) => {
                    if let Err(error) = sink.start(s.status, &s.reason, s.headers) {
                        return Attempt::Done(Ok(Outcome::ClientGone { error }));
                    }
                }
                Step::Data(p) => {
                    // A large chunk is handed over as read; a small one is copied, so the
                    // reader keeps its buffer.
                    let written = if p.len() >= OWNED_CHUNK {
                        sink.write_owned(conn.frames.take_payload())
                    } else {
                        sink.write(p)
                    };
                    if let Err(error) = written {
                        return Attempt::Done(Ok(Outcome::ClientGone { error }));
                    }
                }
                // This client never offers response buffers (its requests say so).
                Step::SharedBuffer => {
                    return exchange.broken(
                        "the daemon sent a response buffer this front did not offer".to_string(),
                    );
                }
                Step::SharedData { slot, len } => {
                    return exchange.broken(format!(
                        "the daemon named {len} bytes in slot {slot} of a response buffer this \
                         front did not offer"
                    ));
                }
                Step::File { offset, len } => {
                    let Some(fd) = conn.frames.fds.pop_front() else {
                        return exchange.missing_fd(len);
                    };
                    if let Err(error) = send_file(sink, std::fs::File::from(fd), offset, len) {
                        return Attempt::Done(Ok(Outcome::ClientGone { error }));
                    }
                }
                Step::Done { attempt, reuse } => {
                    if reuse {
                        self.idle.give_back(conn);
                    }
                    return attempt;
                }
            }
        }
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
    let n = body.read(buf)?;
    top_up(body, buf, n)
}

/// Adds to the `n` bytes read into `buf` what more `body` holds, without waiting.
pub(crate) fn top_up(
    body: &mut dyn RequestBody,
    buf: &mut [u8],
    mut n: usize,
) -> io::Result<usize> {
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
pub(crate) mod tests {
    use super::*;
    use crate::protocol::FrameReader;
    use std::io::BufReader;
    use std::io::Write;
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

    /// A group `g` played by the test: its socket (in a folder kept while the test runs), and
    /// its endpoint, whose reads wait at most 5 s.
    pub(crate) fn fake_endpoint() -> (tempfile::TempDir, UnixListener, Endpoint) {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("g.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let endpoint = Endpoint {
            group: "g".into(),
            socket,
            options: DaemonOptions::default(),
            default_socket_timeout: Duration::from_secs(5),
        };
        (dir, listener, endpoint)
    }

    /// [`fake_endpoint`] with a client of it.
    fn fake_group() -> (tempfile::TempDir, UnixListener, DaemonClient) {
        let (dir, listener, endpoint) = fake_endpoint();
        (dir, listener, DaemonClient::new(vec![endpoint]))
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

    /// This client offers no response buffer: a daemon that names one anyway gets a 502,
    /// not a response built from bytes it did not send.
    #[test]
    fn a_response_buffer_the_blocking_client_did_not_offer_is_a_bad_gateway() {
        let (_dir, listener, client) = fake_group();
        let daemon = std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            let mut frames = FrameReader::new(BufReader::new(&conn));
            let Ok(Some((kind::REQUEST, payload))) = frames.next_frame() else {
                panic!("no request");
            };
            let (request, _) = protocol::decode_request(payload).unwrap();
            assert!(!request.shared_buffers);
            (&conn)
                .write_all(&protocol::encode_shared_data(0, 10))
                .unwrap();
            conn
        });
        assert_eq!(get(&client), 502);
        let _conn = daemon.join().unwrap();
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
            let [conn] = idle.as_slice() else {
                panic!("one pooled connection");
            };
            assert_eq!(conn.read_timeout, Some(Some(Duration::from_secs(5))));
            assert_eq!(
                conn.stream.read_timeout().unwrap(),
                Some(Duration::from_secs(5))
            );
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

    /// A refused connection is tried again every 0.125 s, a full backlog (which a
    /// non-blocking connect reports) every 5 ms; after 2 s every second, until
    /// connect-timeout; any other error fails at once.
    #[test]
    fn connecting_again_waits_as_the_error_says() {
        let (_dir, _listener, endpoint) = fake_endpoint();
        let pause = |waited: u64, kind: io::ErrorKind| {
            endpoint.connect_pause(Duration::from_millis(waited), kind.into())
        };
        let ms = Duration::from_millis;
        assert_eq!(pause(0, io::ErrorKind::ConnectionRefused).unwrap(), ms(125));
        assert_eq!(pause(0, io::ErrorKind::WouldBlock).unwrap(), ms(5));
        assert_eq!(pause(3000, io::ErrorKind::WouldBlock).unwrap(), ms(1000));
        let limit = endpoint.options.connect_timeout.as_millis() as u64;
        assert!(pause(limit, io::ErrorKind::WouldBlock).is_err());
        assert!(pause(0, io::ErrorKind::PermissionDenied).is_err());
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
