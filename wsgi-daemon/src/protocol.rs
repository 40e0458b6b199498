//! The wire protocol between a front (the `wsgi serve` process, an Apache child) and a daemon
//! process, over a unix stream socket.
//!
//! Every message is a frame: a one-byte kind, a little-endian `u32` payload length, then the
//! payload (at most [`MAX_PAYLOAD`] bytes). Strings are `u32` length + UTF-8, byte strings
//! `u32` length + bytes, lists `u32` count + items.
//!
//! One exchange, with the body *pulled* by the daemon so that neither side can deadlock on a
//! full socket buffer and no unread body is ever left on the connection:
//!
//! ```text
//! front                                   daemon
//! REQUEST (head, script, app group)  -->
//!                                    <--  BODY_WANTED max     (the app reads wsgi.input)
//! BODY chunk | BODY_END | BODY_ERROR -->
//!                                    <--  START status, reason, headers (repeats kept apart)
//!                                    <--  DATA chunk | SHARED_DATA slot ...
//!                                    <--  END outcome          (complete, aborted, error, ...)
//! ```
//!
//! Where the REQUEST says the front takes them (`wsgi serve`'s async client), a DATA chunk
//! may come as SHARED_DATA instead: the bytes are in a slot of the connection's response
//! buffer, a memfd both processes map, handed over once with a SHARED_BUFFER frame
//! ([`crate::shared_buffer`]).
//!
//! A body the front already holds whole, of at most [`INLINE_BODY`] bytes, rides in the
//! REQUEST frame instead (its last field): the daemon then asks for nothing, which saves a
//! round trip between the processes for most POSTs, and there is still nothing to leave unread.
//!
//! After END both sides are at a frame boundary and the connection carries the next request.
//! A daemon may answer REQUEST with END `Rejected` (script changed, draining) or
//! `QueueTimeout` before running it: nothing ran, and the front may retry elsewhere.
//!
//! Whether a daemon took a request needs no frame of its own: the kernel tells. A daemon
//! reads the whole REQUEST frame before it runs anything, and the front sends nothing more
//! until asked. So a connection that the daemon closed with the request still unread (a
//! stopping process closing its idle connections) makes the front's read fail with
//! `ECONNRESET` (Linux resets a unix stream socket closed with bytes queued for it), and the
//! front retries the request elsewhere; a connection that ends any other way (end of stream:
//! the process died running it) is never retried.

use std::borrow::Cow;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use wsgi_interp::{
    AppCall, AppError, InterpError, Outcome, PyErrorInfo, ReloadMode, RequestBody, RequestHead,
    Scheme, ScriptError, ScriptSpec, Stamps,
};

/// The largest payload a frame may carry (16 MiB); anything larger is a protocol error.
pub const MAX_PAYLOAD: usize = 16 << 20;

/// The size of a frame header (kind + length).
pub const HEADER_LEN: usize = 5;

/// The largest body chunk either side sends in one frame.
pub const CHUNK: usize = 64 * 1024;

/// The largest request body sent inside its REQUEST frame (when the front holds it whole).
pub const INLINE_BODY: usize = CHUNK;

/// Frame kinds.
pub mod kind {
    /// Front → daemon: the request ([`super::DaemonRequest`]).
    pub const REQUEST: u8 = 0x01;
    /// Front → daemon: one request body chunk.
    pub const BODY: u8 = 0x02;
    /// Front → daemon: the request body ended.
    pub const BODY_END: u8 = 0x03;
    /// Front → daemon: reading the request body from the client failed (message).
    pub const BODY_ERROR: u8 = 0x04;
    /// Daemon → front: send at most this many body bytes (`u32`).
    pub const BODY_WANTED: u8 = 0x11;
    /// Daemon → front: status line and headers.
    pub const START: u8 = 0x12;
    /// Daemon → front: one response body chunk.
    pub const DATA: u8 = 0x13;
    /// Daemon → front: how the request ended ([`super::End`]).
    pub const END: u8 = 0x14;
    /// Daemon → front: the body is `len` bytes of a file from `offset` (two `u64`), whose
    /// descriptor is attached to this frame (`SCM_RIGHTS`, [`crate::fd_passing`]).
    pub const FILE: u8 = 0x15;
    /// Daemon → front: the connection's response buffer (a memfd, attached as for FILE;
    /// [`crate::shared_buffer`]), sent before the first SHARED_DATA; no payload. Only to a
    /// front whose REQUEST said it takes them.
    pub const SHARED_BUFFER: u8 = 0x16;
    /// Daemon → front: one response body chunk, in slot `slot` of the connection's response
    /// buffer: `slot` and `len` (two `u32`).
    pub const SHARED_DATA: u8 = 0x17;
}

/// Why bytes could not be read as protocol frames.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The socket failed.
    #[error("daemon socket I/O failed: {0}")]
    Io(#[from] io::Error),
    /// The peer closed the connection in the middle of a frame.
    #[error("the peer closed the daemon connection in the middle of a frame")]
    Truncated,
    /// A frame announced more than [`MAX_PAYLOAD`] bytes.
    #[error(
        "a frame announced {0} bytes, more than the 16 MiB limit: the peer is not speaking the wsgi-rs daemon protocol"
    )]
    TooLarge(usize),
    /// An unknown frame kind.
    #[error(
        "unknown frame kind {0:#04x}: the front and the daemon come from different wsgi-rs builds; restart both"
    )]
    UnknownKind(u8),
    /// A frame arrived where the protocol does not allow it.
    #[error("unexpected frame kind {got:#04x} while waiting for {expected}")]
    Unexpected {
        /// The kind that arrived.
        got: u8,
        /// What was allowed.
        expected: &'static str,
    },
    /// A payload does not decode.
    #[error("malformed {frame} frame: {what}")]
    Malformed {
        /// The frame.
        frame: &'static str,
        /// What is wrong.
        what: &'static str,
    },
}

/// What a front sends to have one request run.
#[derive(Debug, Clone)]
pub struct DaemonRequest {
    /// When the front received the request, microseconds since the Unix epoch (the daemon's
    /// queue-timeout counts from here).
    pub queued_at_us: u64,
    /// What to run, as the front routed it.
    pub app: AppCall,
    /// The request itself.
    pub head: RequestHead,
    /// Whether the front takes response chunks in a shared buffer (SHARED_BUFFER and
    /// SHARED_DATA frames, [`crate::shared_buffer`]); `wsgi serve`'s async client does.
    pub shared_buffers: bool,
}

impl DaemonRequest {
    /// A request with every field empty, to decode one into ([`decode_request_into`]).
    pub fn blank() -> DaemonRequest {
        DaemonRequest {
            queued_at_us: 0,
            app: AppCall {
                script: ScriptSpec {
                    path: PathBuf::new(),
                    callable: String::new(),
                    reload: ReloadMode::Off,
                },
                application_group: String::new(),
                pass_authorization: false,
            },
            head: RequestHead::default(),
            shared_buffers: false,
        }
    }
}

/// A request to send, borrowed from wherever the front keeps it: what [`encode_request`] and
/// [`crate::DaemonClient::dispatch`] read. A `&DaemonRequest` converts into one.
#[derive(Debug, Clone, Copy)]
pub struct RequestRef<'a> {
    /// As [`DaemonRequest::queued_at_us`].
    pub queued_at_us: u64,
    /// What to run.
    pub app: &'a AppCall,
    /// The request itself.
    pub head: &'a RequestHead,
    /// As [`DaemonRequest::shared_buffers`].
    pub shared_buffers: bool,
}

impl<'a> From<&'a DaemonRequest> for RequestRef<'a> {
    fn from(request: &'a DaemonRequest) -> Self {
        RequestRef {
            queued_at_us: request.queued_at_us,
            app: &request.app,
            head: &request.head,
            shared_buffers: request.shared_buffers,
        }
    }
}

impl Default for DaemonRequest {
    fn default() -> Self {
        DaemonRequest {
            queued_at_us: 0,
            app: AppCall {
                script: ScriptSpec::new(PathBuf::new()),
                application_group: String::new(),
                pass_authorization: false,
            },
            head: RequestHead::default(),
            shared_buffers: false,
        }
    }
}

/// How a request ended, as the daemon reports it in the END frame.
#[derive(Debug)]
pub enum End {
    /// The app ran; here is its [`Outcome`] (never `ClientGone`, which the daemon cannot
    /// report, nor `ScriptChanged`, which is [`End::Rejected`]).
    Ran(Outcome),
    /// Nothing ran; the front should retry on another connection.
    Rejected(RejectReason),
    /// The request waited longer than queue-timeout before a worker took it.
    QueueTimeout,
    /// Nothing ran: the process that took the request could not start, for this reason
    /// (a memory limit too small for its threads, a user it cannot become...).
    StartFailed(String),
}

/// Why a daemon turned a request away without running it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// The WSGI script changed: this process restarts.
    ScriptChanged,
    /// The process is stopping.
    Draining,
}

// ---------------------------------------------------------------------------------------------
// Encoding

/// Appends little-endian scalars, byte strings and strings to a payload.
#[derive(Debug, Default)]
pub struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    /// Starts a frame of `kind` in `buf` (cleared): the length is filled in by
    /// [`Encoder::finish`].
    pub fn frame(kind: u8, mut buf: Vec<u8>) -> Encoder {
        buf.clear();
        buf.push(kind);
        buf.extend_from_slice(&[0; 4]);
        Encoder { buf }
    }

    /// The finished frame, header and payload.
    pub fn finish(mut self) -> Vec<u8> {
        let len = (self.buf.len() - HEADER_LEN) as u32;
        self.buf[1..HEADER_LEN].copy_from_slice(&len.to_le_bytes());
        self.buf
    }

    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.u32(v.len() as u32);
        self.buf.extend_from_slice(v);
    }
    fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }
    fn pairs<N: AsRef<str>, V: AsRef<[u8]>>(&mut self, v: &[(N, V)]) {
        self.u32(v.len() as u32);
        for (name, value) in v {
            self.str(name.as_ref());
            self.bytes(value.as_ref());
        }
    }
}

/// Writes all of `slices` to `out` (`write_vectored` until done).
pub(crate) fn write_all_vectored(
    mut out: &std::os::unix::net::UnixStream,
    mut slices: &mut [io::IoSlice<'_>],
) -> io::Result<()> {
    while !slices.is_empty() {
        match out.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => io::IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes a frame with a raw payload (BODY, DATA, BODY_END...).
pub fn write_raw(w: &mut impl Write, kind: u8, payload: &[u8]) -> io::Result<()> {
    w.write_all(&frame_header(kind, payload.len()))?;
    w.write_all(payload)
}

/// The header of a frame of `kind` with `len` bytes of payload.
pub fn frame_header(kind: u8, len: usize) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[0] = kind;
    header[1..].copy_from_slice(&(len as u32).to_le_bytes());
    header
}

/// A FILE frame: `len` bytes of the attached file from `offset`.
pub fn encode_file(offset: u64, len: u64) -> [u8; HEADER_LEN + 16] {
    let mut frame = [0u8; HEADER_LEN + 16];
    frame[..HEADER_LEN].copy_from_slice(&frame_header(kind::FILE, 16));
    frame[HEADER_LEN..HEADER_LEN + 8].copy_from_slice(&offset.to_le_bytes());
    frame[HEADER_LEN + 8..].copy_from_slice(&len.to_le_bytes());
    frame
}

/// A FILE frame's payload: (offset, len).
pub fn decode_file(payload: &[u8]) -> Result<(u64, u64), ProtocolError> {
    let mut d = Decoder::new("FILE", payload);
    let range = (d.u64()?, d.u64()?);
    d.done()?;
    Ok(range)
}

/// A SHARED_DATA frame: `len` bytes in slot `slot` of the connection's response buffer.
pub fn encode_shared_data(slot: u32, len: u32) -> [u8; HEADER_LEN + 8] {
    let mut frame = [0u8; HEADER_LEN + 8];
    frame[..HEADER_LEN].copy_from_slice(&frame_header(kind::SHARED_DATA, 8));
    frame[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&slot.to_le_bytes());
    frame[HEADER_LEN + 4..].copy_from_slice(&len.to_le_bytes());
    frame
}

/// A SHARED_DATA frame's payload: (slot, len).
pub fn decode_shared_data(payload: &[u8]) -> Result<(u32, u32), ProtocolError> {
    let mut d = Decoder::new("SHARED_DATA", payload);
    let named = (d.u32()?, d.u32()?);
    d.done()?;
    Ok(named)
}

/// Encodes a REQUEST frame, with the request body in it if given: what `body` gives up to its
/// end or [`INLINE_BODY`] bytes, so only a body it holds whole belongs here (`None`: the
/// daemon asks for the body as the app reads it). Fails only if reading `body` fails.
pub fn encode_request<'a>(
    req: impl Into<RequestRef<'a>>,
    body: Option<&mut dyn RequestBody>,
    buf: Vec<u8>,
) -> io::Result<Vec<u8>> {
    let req = req.into();
    let mut e = Encoder::frame(kind::REQUEST, buf);
    request_fields(&mut e, req);
    match body {
        None => e.u8(request_flags(req, false)),
        Some(body) => {
            e.u8(request_flags(req, true));
            // The length, then the bytes read straight into the frame.
            let at = e.buf.len();
            e.u32(0);
            let n = wsgi_interp::read_body_into(body, &mut e.buf, INLINE_BODY)?;
            e.buf[at..at + 4].copy_from_slice(&(n as u32).to_le_bytes());
        }
    }
    Ok(e.finish())
}

/// Encodes a REQUEST frame whose inline body of `body_len` bytes (at most [`INLINE_BODY`]) the
/// caller writes right after it, from where it is held: the frame's length counts them.
pub fn encode_request_before_body<'a>(
    req: impl Into<RequestRef<'a>>,
    body_len: usize,
    buf: Vec<u8>,
) -> Vec<u8> {
    assert!(
        body_len <= INLINE_BODY,
        "an inline body is at most INLINE_BODY bytes"
    );
    let req = req.into();
    let mut e = Encoder::frame(kind::REQUEST, buf);
    request_fields(&mut e, req);
    e.u8(request_flags(req, true));
    e.u32(body_len as u32);
    let mut frame = e.finish();
    let len = (frame.len() - HEADER_LEN + body_len) as u32;
    frame[1..HEADER_LEN].copy_from_slice(&len.to_le_bytes());
    frame
}

/// A REQUEST frame's flags byte, before its inline body: which of [`INLINE`] and
/// [`SHARED_BUFFERS`] it has.
fn request_flags(req: RequestRef<'_>, inline: bool) -> u8 {
    (if inline { INLINE } else { 0 })
        | (if req.shared_buffers {
            SHARED_BUFFERS
        } else {
            0
        })
}

/// REQUEST flag: the body follows, inline.
const INLINE: u8 = 1;
/// REQUEST flag: the front takes response chunks in a shared buffer.
const SHARED_BUFFERS: u8 = 2;

/// A REQUEST frame's fields before its inline body.
fn request_fields(e: &mut Encoder, req: RequestRef<'_>) {
    e.u64(req.queued_at_us);
    let app = req.app;
    e.bytes(app.script.path.as_os_str().as_bytes());
    e.str(&app.script.callable);
    e.u8(match app.script.reload {
        ReloadMode::Off => 0,
        ReloadMode::Report => 1,
        // A daemon process never re-executes a script in place: it restarts.
        ReloadMode::Reexecute => 1,
    });
    e.str(&app.application_group);
    e.u8(u8::from(app.pass_authorization));
    let h = req.head;
    e.str(&h.method);
    e.bytes(&h.script_name);
    e.bytes(&h.path_info);
    e.bytes(&h.query_string);
    e.bytes(&h.request_uri);
    e.str(&h.protocol);
    e.u8(match h.scheme {
        Scheme::Http => 0,
        Scheme::Https => 1,
    });
    e.str(&h.server_name);
    e.u16(h.server_port);
    e.str(&h.remote_addr);
    e.u16(h.remote_port);
    e.pairs(&h.headers);
    e.pairs(&h.extra);
    // queue_start and daemon_start are the daemon side's to set.
    e.u64(h.stamps.request_start_us);
    e.u32(h.stamps.server_pid);
    e.u64(h.stamps.request_id);
    e.u64(h.stamps.received.map_or(0, monotonic_us));
}

/// Microseconds of the machine's monotonic clock (`CLOCK_MONOTONIC`, the clock an `Instant`
/// reads on Linux) now; 0 where it cannot be read.
fn monotonic_now_us() -> u64 {
    use nix::time::{ClockId, clock_gettime};
    clock_gettime(ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        let us = i128::from(t.tv_sec()) * 1_000_000 + i128::from(t.tv_nsec()) / 1_000;
        u64::try_from(us).unwrap_or(0)
    })
}

/// This process's `Instant` and the monotonic clock's microseconds read together, once: an
/// `Instant` *is* a reading of `CLOCK_MONOTONIC` on Linux, so the pair converts any other
/// without reading a clock again (a request's conversions cost four clock reads before).
fn clock_anchor() -> (Instant, u64) {
    static ANCHOR: std::sync::OnceLock<(Instant, u64)> = std::sync::OnceLock::new();
    *ANCHOR.get_or_init(|| {
        // The clock read between two `Instant`s, the pair taken at their middle: of a few
        // tries the closest, so that a thread preempted between two reads does not skew every
        // conversion of the process.
        (0..5)
            .map(|_| {
                let before = Instant::now();
                let us = monotonic_now_us();
                let after = Instant::now();
                (after - before, before + (after - before) / 2, us)
            })
            .min_by_key(|(gap, _, _)| *gap)
            .map(|(_, at, us)| (at, us))
            .expect("five tries")
    })
}

/// `at` as microseconds of the machine's monotonic clock: one clock for every process of the
/// machine (of one time namespace, as a front and the daemon processes it talks to, forked
/// from one master, are), so another process can tell what `at` was ([`instant_at`]).
fn monotonic_us(at: Instant) -> u64 {
    let (anchor, anchor_us) = clock_anchor();
    if anchor_us == 0 {
        // The clock could not be read: not known.
        return 0;
    }
    let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    match at.checked_duration_since(anchor) {
        Some(after) => anchor_us.saturating_add(micros(after)),
        None => anchor_us.saturating_sub(micros(anchor - at)),
    }
}

/// The `Instant` of this process at `us` of the monotonic clock ([`monotonic_us`] in the
/// front); None for 0 (not known) or a time not before now.
pub(crate) fn instant_at(us: u64) -> Option<Instant> {
    let (anchor, anchor_us) = clock_anchor();
    if us == 0 || anchor_us == 0 {
        return None;
    }
    let at = match us.checked_sub(anchor_us) {
        Some(after) => anchor.checked_add(Duration::from_micros(after)),
        None => anchor.checked_sub(Duration::from_micros(anchor_us - us)),
    }?;
    (at < Instant::now()).then_some(at)
}

/// Encodes a START frame: the headers stay separate entries, in the app's order.
pub fn encode_start(status: u16, reason: &str, headers: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut e = Encoder::frame(kind::START, Vec::with_capacity(256));
    e.u16(status);
    e.str(reason);
    e.pairs(headers);
    e.finish()
}

/// Encodes a BODY_WANTED frame.
pub fn encode_body_wanted(max: u32) -> [u8; HEADER_LEN + 4] {
    let mut out = [0u8; HEADER_LEN + 4];
    out[0] = kind::BODY_WANTED;
    out[1..5].copy_from_slice(&4u32.to_le_bytes());
    out[5..].copy_from_slice(&max.to_le_bytes());
    out
}

const END_COMPLETE: u8 = 0;
const END_INCOMPLETE: u8 = 1;
const END_ERROR: u8 = 2;
const END_ABORTED: u8 = 3;
const END_CLIENT_GONE: u8 = 4;
const END_SCRIPT: u8 = 5;
const END_UNAVAILABLE: u8 = 6;
const END_REJECTED: u8 = 7;
const END_QUEUE_TIMEOUT: u8 = 8;
const END_START_FAILED: u8 = 9;

/// Encodes an END frame.
pub fn encode_end(end: &End) -> Vec<u8> {
    let mut e = Encoder::frame(kind::END, Vec::with_capacity(64));
    match end {
        End::Ran(Outcome::Complete { status, body_bytes }) => {
            e.u8(END_COMPLETE);
            e.u16(*status);
            e.u64(*body_bytes);
        }
        End::Ran(Outcome::Incomplete {
            status,
            declared,
            sent,
        }) => {
            e.u8(END_INCOMPLETE);
            e.u16(*status);
            e.u64(*declared);
            e.u64(*sent);
        }
        End::Ran(Outcome::Error(err)) => {
            e.u8(END_ERROR);
            app_error(&mut e, err);
        }
        End::Ran(Outcome::Aborted {
            status,
            sent,
            error,
        }) => {
            e.u8(END_ABORTED);
            e.u16(*status);
            e.u64(*sent);
            app_error(&mut e, error);
        }
        End::Ran(Outcome::ClientGone { error }) => {
            e.u8(END_CLIENT_GONE);
            e.str(&error.to_string());
        }
        End::Ran(Outcome::Script(err)) => {
            e.u8(END_SCRIPT);
            script_error(&mut e, err);
        }
        End::Ran(Outcome::Unavailable(err)) => {
            e.u8(END_UNAVAILABLE);
            interp_error(&mut e, err);
        }
        End::Ran(Outcome::ScriptChanged) | End::Rejected(RejectReason::ScriptChanged) => {
            e.u8(END_REJECTED);
            e.u8(0);
        }
        End::Rejected(RejectReason::Draining) => {
            e.u8(END_REJECTED);
            e.u8(1);
        }
        End::QueueTimeout => e.u8(END_QUEUE_TIMEOUT),
        End::StartFailed(why) => {
            e.u8(END_START_FAILED);
            e.str(why);
        }
    }
    e.finish()
}

fn app_error(e: &mut Encoder, err: &AppError) {
    e.str(&err.message);
    e.str(&err.traceback);
}

fn script_error(e: &mut Encoder, err: &ScriptError) {
    match err {
        ScriptError::NotAbsolute(path) => {
            e.u8(0);
            e.bytes(path.as_os_str().as_bytes());
        }
        ScriptError::NotFound { path, reason } => {
            e.u8(1);
            e.bytes(path.as_os_str().as_bytes());
            e.str(reason);
        }
        ScriptError::Raised { path, error } => {
            e.u8(2);
            e.bytes(path.as_os_str().as_bytes());
            e.str(&error.type_name);
            e.str(&error.message);
            e.str(&error.traceback);
        }
        ScriptError::MissingCallable {
            path,
            callable,
            found,
        } => {
            e.u8(3);
            e.bytes(path.as_os_str().as_bytes());
            e.str(callable);
            e.str(&found.join("\n"));
        }
        ScriptError::Interp(err) => {
            e.u8(4);
            interp_error(e, err);
        }
    }
}

fn interp_error(e: &mut Encoder, err: &InterpError) {
    match err {
        InterpError::ShuttingDown => e.u8(0),
        InterpError::NestedAttach(group) => {
            e.u8(1);
            e.str(group);
        }
        InterpError::Create { group, reason } => {
            e.u8(2);
            e.str(group);
            e.str(reason);
        }
        InterpError::ThreadState(group) => {
            e.u8(3);
            e.str(group);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// Reads scalars and strings out of a payload; every read is bounds-checked.
#[derive(Debug)]
pub struct Decoder<'a> {
    buf: &'a [u8],
    frame: &'static str,
}

impl<'a> Decoder<'a> {
    /// A decoder over the payload of a `frame` frame (the name is for error messages).
    pub fn new(frame: &'static str, buf: &'a [u8]) -> Self {
        Decoder { buf, frame }
    }

    fn bad(&self, what: &'static str) -> ProtocolError {
        ProtocolError::Malformed {
            frame: self.frame,
            what,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        if self.buf.len() < n {
            return Err(self.bad("payload ends early"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, ProtocolError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, ProtocolError> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self) -> Result<u32, ProtocolError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, ProtocolError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn bool(&mut self) -> Result<bool, ProtocolError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(self.bad("a flag is neither 0 nor 1")),
        }
    }
    fn bytes(&mut self) -> Result<&'a [u8], ProtocolError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn str(&mut self) -> Result<String, ProtocolError> {
        self.str_ref().map(str::to_string)
    }
    fn str_into(&mut self, out: &mut String) -> Result<(), ProtocolError> {
        let text = self.str_ref()?;
        out.clear();
        out.push_str(text);
        Ok(())
    }
    fn bytes_into(&mut self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        let bytes = self.bytes()?;
        out.clear();
        out.extend_from_slice(bytes);
        Ok(())
    }
    fn str_ref(&mut self) -> Result<&'a str, ProtocolError> {
        let b = self.bytes()?;
        self.utf8(b)
    }
    fn utf8(&self, b: &'a [u8]) -> Result<&'a str, ProtocolError> {
        std::str::from_utf8(b).map_err(|_| self.bad("a string is not UTF-8"))
    }
    fn path(&mut self) -> Result<PathBuf, ProtocolError> {
        Ok(PathBuf::from(std::ffi::OsStr::from_bytes(self.bytes()?)))
    }
    fn path_into(&mut self, out: &mut PathBuf) -> Result<(), ProtocolError> {
        let bytes = self.bytes()?;
        let text = out.as_mut_os_string();
        text.clear();
        text.push(std::ffi::OsStr::from_bytes(bytes));
        Ok(())
    }
    fn pairs(&mut self) -> Result<Vec<(String, Vec<u8>)>, ProtocolError> {
        let mut out = Vec::new();
        self.pairs_into(&mut out)?;
        Ok(out)
    }
    /// A list of (name, value) pairs in `list`, each in the buffers of the pair at its place.
    fn pairs_into(&mut self, list: &mut Vec<(String, Vec<u8>)>) -> Result<(), ProtocolError> {
        self.pairs_named_into(list, |d, name, slot| {
            let name = d.utf8(name)?;
            slot.clear();
            slot.push_str(name);
            Ok(())
        })
    }
    /// The extra variables: the names the front sends with every request
    /// ([`COMMON_EXTRA_NAMES`]) as the static strings they are, without an allocation and a
    /// UTF-8 check each.
    fn extra_pairs_into(&mut self, list: &mut Vec<ExtraVar>) -> Result<(), ProtocolError> {
        self.pairs_named_into(list, |d, name, slot| {
            *slot = match COMMON_EXTRA_NAMES
                .iter()
                .find(|known| known.as_bytes() == name)
            {
                Some(known) => Cow::Borrowed(*known),
                None => Cow::Owned(d.utf8(name)?.to_string()),
            };
            Ok(())
        })
    }
    /// A list of (name, value) pairs in `list` (each in the buffers of the pair at its
    /// place), each name written by `name`.
    fn pairs_named_into<N: Default>(
        &mut self,
        list: &mut Vec<(N, Vec<u8>)>,
        name: impl Fn(&Self, &'a [u8], &mut N) -> Result<(), ProtocolError>,
    ) -> Result<(), ProtocolError> {
        let n = self.u32()? as usize;
        // Each pair takes at least 8 bytes: never allocate for more than could be there.
        if n > self.buf.len() / 8 {
            return Err(self.bad("a list is longer than its frame"));
        }
        let mut list = wsgi_interp::PairRefill::new(list, n);
        for _ in 0..n {
            let raw = self.bytes()?;
            let value = self.bytes()?;
            let (slot_name, slot_value) = list.next_pair();
            name(self, raw, slot_name)?;
            slot_value.extend_from_slice(value);
        }
        list.finish();
        Ok(())
    }
    fn done(&self) -> Result<(), ProtocolError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(self.bad("bytes left over after the last field"))
        }
    }
}

/// An extra variable of a request: its name and value ([`RequestHead::extra`]).
type ExtraVar = (Cow<'static, str>, Vec<u8>);

/// The names of the extra variables `wsgi serve`'s front sends with every request
/// (`wsgi_interp::RequestHead::build`'s, and the two of mod_wsgi's handler the front adds):
/// decoded as these static strings.
const COMMON_EXTRA_NAMES: &[&str] = &[
    "REQUEST_SCHEME",
    "SCRIPT_FILENAME",
    "SERVER_ADDR",
    "mod_wsgi.listener_host",
    "mod_wsgi.listener_port",
    "DOCUMENT_ROOT",
    "SERVER_ADMIN",
    "CONTEXT_PREFIX",
    "CONTEXT_DOCUMENT_ROOT",
    "mod_wsgi.request_handler",
    "mod_wsgi.handler_script",
];

/// Decodes the payload of a REQUEST frame: the request, and where its body is in `payload`
/// when it came inline (the last field: the range ends at the payload's end).
pub fn decode_request(
    payload: &[u8],
) -> Result<(DaemonRequest, Option<std::ops::Range<usize>>), ProtocolError> {
    let mut request = DaemonRequest::blank();
    decode_request_into(payload, &mut request).map(|body| (request, body))
}

/// [`decode_request`] into `request`, reusing its buffers (a request kept from an earlier
/// frame): every field is the frame's after; on an error, `request` holds part of it.
pub fn decode_request_into(
    payload: &[u8],
    request: &mut DaemonRequest,
) -> Result<Option<std::ops::Range<usize>>, ProtocolError> {
    let mut d = Decoder::new("REQUEST", payload);
    let DaemonRequest {
        queued_at_us,
        app,
        head,
        shared_buffers,
    } = request;
    *queued_at_us = d.u64()?;
    d.path_into(&mut app.script.path)?;
    d.str_into(&mut app.script.callable)?;
    app.script.reload = match d.u8()? {
        0 => ReloadMode::Off,
        1 => ReloadMode::Report,
        _ => return Err(d.bad("unknown script reloading mode")),
    };
    d.str_into(&mut app.application_group)?;
    app.pass_authorization = d.bool()?;
    head.method = wsgi_interp::method_text(d.str_ref()?);
    d.bytes_into(&mut head.script_name)?;
    d.bytes_into(&mut head.path_info)?;
    d.bytes_into(&mut head.query_string)?;
    d.bytes_into(&mut head.request_uri)?;
    head.protocol = wsgi_interp::protocol_text(d.str_ref()?);
    head.scheme = match d.u8()? {
        0 => Scheme::Http,
        1 => Scheme::Https,
        _ => return Err(d.bad("unknown URL scheme")),
    };
    d.str_into(&mut head.server_name)?;
    head.server_port = d.u16()?;
    d.str_into(&mut head.remote_addr)?;
    head.remote_port = d.u16()?;
    d.pairs_into(&mut head.headers)?;
    d.extra_pairs_into(&mut head.extra)?;
    head.stamps = Stamps {
        request_start_us: d.u64()?,
        server_pid: d.u32()?,
        request_id: d.u64()?,
        queue_start_us: *queued_at_us,
        daemon_start_us: 0,
        received: instant_at(d.u64()?),
    };
    let flags = d.u8()?;
    if flags & !(INLINE | SHARED_BUFFERS) != 0 {
        return Err(d.bad("unknown request flags"));
    }
    *shared_buffers = flags & SHARED_BUFFERS != 0;
    let body = if flags & INLINE != 0 {
        let body = d.bytes()?;
        if body.len() > INLINE_BODY {
            return Err(d.bad("an inline body larger than INLINE_BODY"));
        }
        let end = payload.len() - d.buf.len();
        Some(end - body.len()..end)
    } else {
        None
    };
    d.done()?;
    Ok(body)
}

/// A decoded START frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// The status code.
    pub status: u16,
    /// The reason phrase.
    pub reason: String,
    /// The headers, repeated names as separate entries in the app's order.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Decodes the payload of a START frame.
pub fn decode_start(payload: &[u8]) -> Result<Start, ProtocolError> {
    let mut d = Decoder::new("START", payload);
    let status = d.u16()?;
    if !(100..=999).contains(&status) {
        return Err(d.bad("the status code is not 3 digits"));
    }
    let reason = d.str()?;
    let headers = d.pairs()?;
    d.done()?;
    Ok(Start {
        status,
        reason,
        headers,
    })
}

/// Decodes the payload of a BODY_WANTED frame.
pub fn decode_body_wanted(payload: &[u8]) -> Result<u32, ProtocolError> {
    let mut d = Decoder::new("BODY_WANTED", payload);
    let max = d.u32()?;
    d.done()?;
    if max == 0 {
        return Err(d.bad("asks for 0 bytes"));
    }
    Ok(max)
}

/// Decodes the payload of an END frame.
pub fn decode_end(payload: &[u8]) -> Result<End, ProtocolError> {
    let mut d = Decoder::new("END", payload);
    let end = match d.u8()? {
        END_COMPLETE => End::Ran(Outcome::Complete {
            status: d.u16()?,
            body_bytes: d.u64()?,
        }),
        END_INCOMPLETE => End::Ran(Outcome::Incomplete {
            status: d.u16()?,
            declared: d.u64()?,
            sent: d.u64()?,
        }),
        END_ERROR => End::Ran(Outcome::Error(decode_app_error(&mut d)?)),
        END_ABORTED => End::Ran(Outcome::Aborted {
            status: d.u16()?,
            sent: d.u64()?,
            error: decode_app_error(&mut d)?,
        }),
        END_CLIENT_GONE => End::Ran(Outcome::ClientGone {
            error: io::Error::new(io::ErrorKind::BrokenPipe, d.str()?),
        }),
        END_SCRIPT => End::Ran(Outcome::Script(decode_script_error(&mut d)?)),
        END_UNAVAILABLE => End::Ran(Outcome::Unavailable(decode_interp_error(&mut d)?)),
        END_REJECTED => End::Rejected(match d.u8()? {
            0 => RejectReason::ScriptChanged,
            1 => RejectReason::Draining,
            _ => return Err(d.bad("unknown reject reason")),
        }),
        END_QUEUE_TIMEOUT => End::QueueTimeout,
        END_START_FAILED => End::StartFailed(d.str()?),
        _ => return Err(d.bad("unknown outcome")),
    };
    d.done()?;
    Ok(end)
}

fn decode_app_error(d: &mut Decoder<'_>) -> Result<AppError, ProtocolError> {
    Ok(AppError {
        message: d.str()?,
        traceback: d.str()?,
    })
}

fn decode_script_error(d: &mut Decoder<'_>) -> Result<ScriptError, ProtocolError> {
    Ok(match d.u8()? {
        0 => ScriptError::NotAbsolute(d.path()?),
        1 => ScriptError::NotFound {
            path: d.path()?,
            reason: d.str()?,
        },
        2 => ScriptError::Raised {
            path: d.path()?,
            error: PyErrorInfo {
                type_name: d.str()?,
                message: d.str()?,
                traceback: d.str()?,
            },
        },
        3 => ScriptError::MissingCallable {
            path: d.path()?,
            callable: d.str()?,
            found: d
                .str()?
                .split('\n')
                .filter(|n| !n.is_empty())
                .map(str::to_string)
                .collect(),
        },
        4 => ScriptError::Interp(decode_interp_error(d)?),
        _ => return Err(d.bad("unknown script error")),
    })
}

fn decode_interp_error(d: &mut Decoder<'_>) -> Result<InterpError, ProtocolError> {
    Ok(match d.u8()? {
        0 => InterpError::ShuttingDown,
        1 => InterpError::NestedAttach(d.str()?),
        2 => InterpError::Create {
            group: d.str()?,
            reason: d.str()?,
        },
        3 => InterpError::ThreadState(d.str()?),
        _ => return Err(d.bad("unknown interpreter error")),
    })
}

// ---------------------------------------------------------------------------------------------
// Frame reading

/// How many bytes a [`FrameReader`]'s `BufReader` asks the socket for at once: a frame's
/// header and a small payload (and the frames sent with them) come in one read.
pub const READ_AHEAD: usize = 8 * 1024;

/// A frame header's kind and payload length, checked: a known kind, at most [`MAX_PAYLOAD`].
pub fn parse_header(header: &[u8; HEADER_LEN]) -> Result<(u8, usize), ProtocolError> {
    let kind = header[0];
    if !matches!(
        kind,
        kind::REQUEST
            | kind::BODY
            | kind::BODY_END
            | kind::BODY_ERROR
            | kind::BODY_WANTED
            | kind::START
            | kind::DATA
            | kind::END
            | kind::FILE
            | kind::SHARED_BUFFER
            | kind::SHARED_DATA
    ) {
        return Err(ProtocolError::UnknownKind(kind));
    }
    let len = u32::from_le_bytes(header[1..].try_into().expect("4 bytes")) as usize;
    if len > MAX_PAYLOAD {
        return Err(ProtocolError::TooLarge(len));
    }
    Ok((kind, len))
}

/// Reads frames from a byte stream into one reused buffer.
///
/// Over a socket it reads through a `BufReader` of [`READ_AHEAD`] bytes, which may read past
/// the frame returned. That loses nothing when a reader is dropped where the protocol has the
/// peer wait for its turn: the front's after END, the daemon's after a REQUEST (the front
/// sends a body only when asked) and after each BODY, BODY_END or BODY_ERROR.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    buf: Vec<u8>,
}

impl<R: Read> FrameReader<R> {
    /// Wraps a (preferably buffered) reader.
    pub fn new(inner: R) -> Self {
        FrameReader {
            inner,
            buf: Vec::new(),
        }
    }

    /// The wrapped reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The wrapped reader, mutably.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The next frame's kind and payload; `Ok(None)` when the stream ends cleanly between
    /// frames.
    pub fn next_frame(&mut self) -> Result<Option<(u8, &[u8])>, ProtocolError> {
        let mut header = [0u8; HEADER_LEN];
        let mut got = 0;
        while got < HEADER_LEN {
            match self.inner.read(&mut header[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => return Err(ProtocolError::Truncated),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        let (kind, len) = parse_header(&header)?;
        self.buf.clear();
        // The payload's room, reserved once.
        self.buf.reserve(len);
        loop {
            let left = len - self.buf.len();
            if left == 0 {
                return Ok(Some((kind, &self.buf)));
            }
            match self
                .inner
                .by_ref()
                .take(left as u64)
                .read_to_end(&mut self.buf)
            {
                Ok(0) => return Err(ProtocolError::Truncated),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The payload of the frame just read, to keep: the reader starts a new buffer.
    pub fn take_payload(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_request() -> DaemonRequest {
        DaemonRequest {
            queued_at_us: 1_700_000_000_123_456,
            app: AppCall {
                script: ScriptSpec {
                    path: PathBuf::from("/srv/app/app.wsgi"),
                    callable: "application".into(),
                    reload: ReloadMode::Report,
                },
                application_group: "example.com|/app".into(),
                pass_authorization: true,
            },
            head: RequestHead {
                method: "POST".into(),
                script_name: b"/app".to_vec(),
                path_info: b"/x\xe9".to_vec(),
                query_string: b"a=1&b=%20".to_vec(),
                request_uri: b"/app/x%E9?a=1&b=%20".to_vec(),
                protocol: "HTTP/1.1".into(),
                scheme: Scheme::Https,
                server_name: "example.com".into(),
                server_port: 8443,
                remote_addr: "10.0.0.7".into(),
                remote_port: 51234,
                headers: vec![
                    ("Host".into(), b"example.com".to_vec()),
                    ("Cookie".into(), b"a=1".to_vec()),
                    ("Cookie".into(), b"b=2".to_vec()),
                ],
                extra: vec![("SCRIPT_FILENAME".into(), b"/srv/app/app.wsgi".to_vec())],
                stamps: Stamps {
                    request_start_us: 1_700_000_000_100_000,
                    server_pid: 4321,
                    request_id: 0x0001_0203_0405_0607,
                    ..Stamps::default()
                },
            },
            shared_buffers: false,
        }
    }

    fn read_one(bytes: &[u8]) -> Result<Option<(u8, Vec<u8>)>, ProtocolError> {
        let mut r = FrameReader::new(bytes);
        r.next_frame().map(|f| f.map(|(k, p)| (k, p.to_vec())))
    }

    #[test]
    fn request_round_trips() {
        let req = sample_request();
        let frame = encode_request(&req, None, Vec::new()).unwrap();
        let (k, payload) = read_one(&frame).unwrap().unwrap();
        assert_eq!(k, kind::REQUEST);
        let (back, body) = decode_request(&payload).unwrap();
        assert_eq!(body, None, "no inline body: the daemon asks for it");
        for inline in [&b""[..], b"a=1&b=2", &[7u8; INLINE_BODY]] {
            let frame = encode_request(&req, Some(&mut &inline[..]), Vec::new()).unwrap();
            // The same frame when the body is written after its head, from where it is held.
            let mut head = encode_request_before_body(&req, inline.len(), Vec::new());
            head.extend_from_slice(inline);
            assert_eq!(
                head,
                frame,
                "{} bytes written beside the head",
                inline.len()
            );
            let (_, payload) = read_one(&frame).unwrap().unwrap();
            let (again, body) = decode_request(&payload).unwrap();
            assert_eq!(body.map(|range| &payload[range]), Some(inline));
            assert_eq!(again.head.extra, req.head.extra);
        }
        // At most INLINE_BODY bytes are taken from the body.
        let long = [7u8; INLINE_BODY + 1];
        let mut rest = &long[..];
        let frame = encode_request(&req, Some(&mut rest), Vec::new()).unwrap();
        assert_eq!(rest.len(), 1);
        let (_, payload) = read_one(&frame).unwrap().unwrap();
        assert_eq!(
            decode_request(&payload).unwrap().1.unwrap().len(),
            INLINE_BODY
        );
        // More than INLINE_BODY inline is a protocol error, not a body.
        let mut too_long = payload.clone();
        too_long.push(7);
        let at = too_long.len() - INLINE_BODY - 5;
        too_long[at..at + 4].copy_from_slice(&(INLINE_BODY as u32 + 1).to_le_bytes());
        assert!(decode_request(&too_long).is_err());
        assert_eq!(back.queued_at_us, req.queued_at_us);
        assert_eq!(back.app.script, req.app.script);
        assert_eq!(back.app.application_group, req.app.application_group);
        assert!(back.app.pass_authorization);
        assert_eq!(back.head.path_info, req.head.path_info);
        assert_eq!(back.head.headers, req.head.headers);
        assert_eq!(back.head.extra, req.head.extra);
        assert_eq!(
            back.head.stamps,
            Stamps {
                queue_start_us: req.queued_at_us,
                ..req.head.stamps
            },
            "the queue time is when the front queued it"
        );
        assert_eq!(back.head.scheme, Scheme::Https);
        assert_eq!(
            (back.head.server_port, back.head.remote_port),
            (8443, 51234)
        );
    }

    #[test]
    fn whether_the_front_takes_shared_buffers_crosses_beside_the_inline_body() {
        let mut req = sample_request();
        for shared_buffers in [false, true] {
            req.shared_buffers = shared_buffers;
            let decoded = |frame: Vec<u8>| {
                let (_, payload) = read_one(&frame).unwrap().unwrap();
                let (back, body) = decode_request(&payload).unwrap();
                (
                    back.shared_buffers,
                    body.map(|range| payload[range].to_vec()),
                )
            };
            let frame = encode_request(&req, None, Vec::new()).unwrap();
            assert_eq!(decoded(frame), (shared_buffers, None));
            let frame = encode_request(&req, Some(&mut &b"a=1"[..]), Vec::new()).unwrap();
            assert_eq!(decoded(frame), (shared_buffers, Some(b"a=1".to_vec())));
            let mut frame = encode_request_before_body(&req, 3, Vec::new());
            frame.extend_from_slice(b"a=1");
            assert_eq!(decoded(frame), (shared_buffers, Some(b"a=1".to_vec())));
        }
        // A flag this build does not know is refused, not ignored.
        let frame = encode_request(&req, None, Vec::new()).unwrap();
        let (_, mut payload) = read_one(&frame).unwrap().unwrap();
        *payload.last_mut().unwrap() |= 4;
        let err = decode_request(&payload).unwrap_err();
        assert!(err.to_string().contains("unknown request flags"), "{err}");
    }

    #[test]
    fn shared_data_names_a_slot_and_a_length() {
        let frame = encode_shared_data(7, 65536);
        let (k, payload) = read_one(&frame).unwrap().unwrap();
        assert_eq!(k, kind::SHARED_DATA);
        assert_eq!(decode_shared_data(&payload).unwrap(), (7, 65536));
        assert!(decode_shared_data(&payload[..7]).is_err());
        let (k, payload) = read_one(&frame_header(kind::SHARED_BUFFER, 0))
            .unwrap()
            .unwrap();
        assert_eq!((k, payload.len()), (kind::SHARED_BUFFER, 0));
    }

    #[test]
    fn when_the_front_read_the_request_crosses_as_the_monotonic_clock() {
        let mut req = sample_request();
        let decoded = |req: &DaemonRequest| {
            let frame = encode_request(req, None, Vec::new()).unwrap();
            let (_, payload) = read_one(&frame).unwrap().unwrap();
            decode_request(&payload).unwrap().0.head.stamps.received
        };
        assert_eq!(decoded(&req), None, "not known: not made up");
        let read = Instant::now()
            .checked_sub(Duration::from_millis(250))
            .unwrap();
        req.head.stamps.received = Some(read);
        let back = decoded(&req).expect("a time the front knew");
        // The same moment, to the microseconds the frame carries and those the two reads of
        // each clock take apart.
        let apart = back.max(read) - back.min(read);
        assert!(apart < Duration::from_millis(5), "{apart:?}");
        assert!(back < Instant::now());
        // Nothing not yet come, nor the clock's own zero.
        assert_eq!(instant_at(0), None);
        assert_eq!(instant_at(monotonic_now_us() + 1_000_000), None);
    }

    #[test]
    fn instants_convert_to_the_monotonic_clock_without_reading_it() {
        let (anchor, anchor_us) = clock_anchor();
        // Either side of the anchor (both past), to the microsecond.
        std::thread::sleep(Duration::from_millis(10));
        for at in [
            anchor - Duration::from_millis(7),
            anchor + Duration::from_millis(7),
        ] {
            let us = monotonic_us(at);
            assert_eq!(us.abs_diff(anchor_us), 7_000, "{at:?}");
            assert_eq!(instant_at(us), Some(at));
        }
        // And what the clock itself reads now.
        let (now, read) = (Instant::now(), monotonic_now_us());
        assert!(monotonic_us(now).abs_diff(read) < 5_000);
        // A time still to come is refused as before.
        assert_eq!(instant_at(monotonic_us(now + Duration::from_secs(1))), None);
    }

    #[test]
    fn repeated_response_headers_stay_separate() {
        let headers = vec![
            ("Set-Cookie".to_string(), b"a=1".to_vec()),
            ("X-Many".to_string(), b"one".to_vec()),
            ("X-Many".to_string(), b"two".to_vec()),
            ("Set-Cookie".to_string(), b"b=2".to_vec()),
        ];
        let frame = encode_start(200, "OK", &headers);
        let (k, payload) = read_one(&frame).unwrap().unwrap();
        assert_eq!(k, kind::START);
        let start = decode_start(&payload).unwrap();
        assert_eq!(start.status, 200);
        assert_eq!(start.reason, "OK");
        assert_eq!(start.headers, headers);
    }

    #[test]
    fn every_end_round_trips() {
        let ends = vec![
            End::Ran(Outcome::Complete {
                status: 200,
                body_bytes: 12,
            }),
            End::Ran(Outcome::Incomplete {
                status: 200,
                declared: 10,
                sent: 3,
            }),
            End::Ran(Outcome::Error(AppError {
                message: "boom".into(),
                traceback: "Traceback...".into(),
            })),
            End::Ran(Outcome::Aborted {
                status: 200,
                sent: 5,
                error: AppError {
                    message: "mid-body".into(),
                    traceback: String::new(),
                },
            }),
            End::Ran(Outcome::Script(ScriptError::NotFound {
                path: "/x.wsgi".into(),
                reason: "No such file".into(),
            })),
            End::Ran(Outcome::Script(ScriptError::Raised {
                path: "/x.wsgi".into(),
                error: PyErrorInfo {
                    type_name: "ImportError".into(),
                    message: "no".into(),
                    traceback: "tb".into(),
                },
            })),
            End::Ran(Outcome::Script(ScriptError::MissingCallable {
                path: "/x.wsgi".into(),
                callable: "app".into(),
                found: vec!["make_app".into(), "other".into()],
            })),
            End::Ran(Outcome::Script(ScriptError::Interp(InterpError::Create {
                group: "g".into(),
                reason: "r".into(),
            }))),
            End::Ran(Outcome::Unavailable(InterpError::ShuttingDown)),
            End::Rejected(RejectReason::ScriptChanged),
            End::Rejected(RejectReason::Draining),
            End::QueueTimeout,
            End::StartFailed("cannot start its wsgi-worker-3 thread".into()),
        ];
        for end in ends {
            let frame = encode_end(&end);
            let (k, payload) = read_one(&frame).unwrap().unwrap();
            assert_eq!(k, kind::END);
            let back = decode_end(&payload).unwrap();
            assert_eq!(format!("{back:?}"), format!("{end:?}"));
        }
    }

    #[test]
    fn raw_frames_and_clean_eof() {
        let mut out = Vec::new();
        write_raw(&mut out, kind::DATA, b"hello").unwrap();
        write_raw(&mut out, kind::BODY_END, b"").unwrap();
        out.extend_from_slice(&encode_body_wanted(65536));
        let mut r = FrameReader::new(&out[..]);
        assert_eq!(
            r.next_frame().unwrap().unwrap(),
            (kind::DATA, &b"hello"[..])
        );
        assert_eq!(r.next_frame().unwrap().unwrap(), (kind::BODY_END, &b""[..]));
        let (k, p) = r.next_frame().unwrap().unwrap();
        assert_eq!(
            (k, decode_body_wanted(p).unwrap()),
            (kind::BODY_WANTED, 65536)
        );
        assert!(r.next_frame().unwrap().is_none());
    }

    /// A reader that hands out at most a few bytes per read.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.0.len()).min(7);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn frames_arriving_in_pieces_are_whole_and_a_payload_can_be_kept() {
        let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut bytes = Vec::new();
        write_raw(&mut bytes, kind::DATA, &big).unwrap();
        write_raw(&mut bytes, kind::DATA, b"small").unwrap();
        bytes.extend_from_slice(&encode_file(7, 1 << 40));
        let mut r = FrameReader::new(Trickle(&bytes));
        assert!(matches!(r.next_frame(), Ok(Some((kind::DATA, p))) if p == big.as_slice()));
        assert_eq!(r.take_payload(), big);
        assert!(matches!(r.next_frame(), Ok(Some((kind::DATA, b"small")))));
        match r.next_frame() {
            Ok(Some((kind::FILE, p))) => assert_eq!(decode_file(p).unwrap(), (7, 1 << 40)),
            other => panic!("expected FILE, got {other:?}"),
        }
        assert!(matches!(r.next_frame(), Ok(None)));
        assert!(decode_file(&[0; 15]).is_err());
    }

    #[test]
    fn frames_read_ahead_through_a_buf_reader_come_out_whole_and_in_order() {
        // As the front reads a daemon's answer: several frames in one read, a payload larger
        // than the read-ahead (kept), small ones after it; through pieces as well.
        let big: Vec<u8> = (0..3 * READ_AHEAD as u32)
            .map(|i| (i % 253) as u8)
            .collect();
        let mut bytes = Vec::new();
        write_raw(&mut bytes, kind::BODY_WANTED, &65536u32.to_le_bytes()).unwrap();
        bytes.extend_from_slice(&encode_start(200, "OK", &[("A".into(), b"b".to_vec())]));
        write_raw(&mut bytes, kind::DATA, b"first").unwrap();
        write_raw(&mut bytes, kind::DATA, &big).unwrap();
        write_raw(&mut bytes, kind::DATA, b"last").unwrap();
        bytes.extend_from_slice(&encode_end(&End::QueueTimeout));
        let sources: [Box<dyn Read + '_>; 2] = [Box::new(&bytes[..]), Box::new(Trickle(&bytes))];
        for source in sources {
            let mut r = FrameReader::new(std::io::BufReader::with_capacity(READ_AHEAD, source));
            assert!(
                matches!(r.next_frame(), Ok(Some((kind::BODY_WANTED, p))) if decode_body_wanted(p).unwrap() == 65536)
            );
            match r.next_frame() {
                Ok(Some((kind::START, p))) => assert_eq!(decode_start(p).unwrap().status, 200),
                other => panic!("expected START, got {other:?}"),
            }
            assert!(matches!(r.next_frame(), Ok(Some((kind::DATA, b"first")))));
            assert!(matches!(r.next_frame(), Ok(Some((kind::DATA, p))) if p == big.as_slice()));
            assert_eq!(r.take_payload(), big);
            assert!(matches!(r.next_frame(), Ok(Some((kind::DATA, b"last")))));
            match r.next_frame() {
                Ok(Some((kind::END, p))) => {
                    assert!(matches!(decode_end(p).unwrap(), End::QueueTimeout))
                }
                other => panic!("expected END, got {other:?}"),
            }
            assert!(matches!(r.next_frame(), Ok(None)));
        }
    }

    #[test]
    fn truncated_frames_are_errors_not_eof() {
        let frame = encode_request(&sample_request(), None, Vec::new()).unwrap();
        for cut in 1..frame.len() {
            let err = read_one(&frame[..cut]).unwrap_err();
            assert!(matches!(err, ProtocolError::Truncated), "cut {cut}: {err}");
        }
    }

    /// A request decoded in the buffers of another is the frame's alone, whatever the other
    /// had more or less of.
    #[test]
    fn a_request_decoded_into_another_is_the_frames_alone() {
        let large = sample_request();
        let mut small = sample_request();
        small.app.script.path = PathBuf::from("/a.wsgi");
        small.app.script.callable = "app".into();
        small.app.script.reload = ReloadMode::Off;
        small.app.application_group = String::new();
        small.app.pass_authorization = false;
        small.head.method = "MKCOL".into();
        small.head.query_string.clear();
        small.head.protocol = "HTTP/1.0".into();
        small.head.scheme = Scheme::Http;
        small.head.headers = vec![("Host".into(), b"x".to_vec())];
        small.head.extra = vec![
            ("MY_VAR".into(), b"1".to_vec()),
            ("DOCUMENT_ROOT".into(), b"/srv".to_vec()),
        ];
        small.shared_buffers = true;
        let payload_of = |request: &DaemonRequest, body: Option<&[u8]>| {
            let mut body = body;
            let body = body.as_mut().map(|b| b as &mut dyn RequestBody);
            let frame = encode_request(request, body, Vec::new()).unwrap();
            read_one(&frame).unwrap().unwrap().1
        };
        for (before, after) in [(&large, &small), (&small, &large), (&large, &large)] {
            for body in [None, Some(&b"hi"[..])] {
                let mut into = decode_request(&payload_of(before, None)).unwrap().0;
                let payload = payload_of(after, body);
                let range = decode_request_into(&payload, &mut into).unwrap();
                let (fresh, fresh_range) = decode_request(&payload).unwrap();
                assert_eq!(format!("{into:?}"), format!("{fresh:?}"));
                assert_eq!(range, fresh_range);
            }
        }
    }

    /// The extra variables' common names come back as static strings, others as their own;
    /// a name that is not UTF-8 is refused.
    #[test]
    fn extra_names_come_back_static_when_common() {
        let mut req = sample_request();
        req.head.extra = vec![
            ("SCRIPT_FILENAME".into(), b"/srv/app/app.wsgi".to_vec()),
            ("MY_SETENV".into(), b"1".to_vec()),
            ("CONTEXT_DOCUMENT_ROOT".into(), b"/srv".to_vec()),
            ("mod_wsgi.request_handler".into(), b"wsgi-script".to_vec()),
            ("mod_wsgi.handler_script".into(), Vec::new()),
        ];
        let frame = encode_request(&req, None, Vec::new()).unwrap();
        let (_, payload) = read_one(&frame).unwrap().unwrap();
        let (back, _) = decode_request(&payload).unwrap();
        assert_eq!(back.head.extra, req.head.extra);
        let borrowed: Vec<bool> = back
            .head
            .extra
            .iter()
            .map(|(name, _)| matches!(name, Cow::Borrowed(_)))
            .collect();
        assert_eq!(borrowed, [true, false, true, true, true]);
        req.head.extra = vec![("MY_\u{e9}".into(), b"1".to_vec())];
        let mut frame = encode_request(&req, None, Vec::new()).unwrap();
        let name = "MY_\u{e9}".as_bytes();
        let at = frame.windows(name.len()).position(|w| w == name).unwrap();
        frame[at + 3] = 0xff;
        let (_, payload) = read_one(&frame).unwrap().unwrap();
        assert!(matches!(
            decode_request(&payload),
            Err(ProtocolError::Malformed { .. })
        ));
    }

    #[test]
    fn malformed_frames_are_refused() {
        assert!(matches!(
            read_one(&[0x7f, 0, 0, 0, 0]),
            Err(ProtocolError::UnknownKind(0x7f))
        ));
        assert!(matches!(
            read_one(&[kind::DATA, 0xff, 0xff, 0xff, 0xff]),
            Err(ProtocolError::TooLarge(_))
        ));
        // A payload with a byte too many, or a truncated field inside the payload.
        let frame = encode_start(200, "OK", &[]);
        let mut longer = frame[HEADER_LEN..].to_vec();
        longer.push(0);
        assert!(decode_start(&longer).is_err());
        assert!(decode_start(&frame[HEADER_LEN..frame.len() - 1]).is_err());
        assert!(decode_start(&[0x63, 0x00, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        // A header count far beyond the payload does not allocate or panic.
        let mut huge = vec![200, 0, 0, 0, 0, 0];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_start(&huge).is_err());
        assert!(decode_body_wanted(&0u32.to_le_bytes()).is_err());
        assert!(decode_end(&[99]).is_err());
        // Non-UTF-8 where a string is required.
        let mut bad = vec![200, 0, 2, 0, 0, 0, 0xff, 0xfe];
        bad.extend_from_slice(&0u32.to_le_bytes());
        assert!(decode_start(&bad).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let mut r = FrameReader::new(&bytes[..]);
            while let Ok(Some((k, payload))) = r.next_frame() {
                let _ = match k {
                    kind::REQUEST => decode_request(payload).map(|_| ()),
                    kind::START => decode_start(payload).map(|_| ()),
                    kind::END => decode_end(payload).map(|_| ()),
                    kind::BODY_WANTED => decode_body_wanted(payload).map(|_| ()),
                    _ => Ok(()),
                };
            }
            let _ = decode_request(&bytes);
            let _ = decode_start(&bytes);
            let _ = decode_end(&bytes);
        }

        #[test]
        fn headers_round_trip(headers in proptest::collection::vec(("[A-Za-z-]{1,12}", proptest::collection::vec(proptest::prelude::any::<u8>(), 0..24)), 0..12), status in 100u16..600) {
            let frame = encode_start(status, "Reason", &headers);
            let start = decode_start(&frame[HEADER_LEN..]).unwrap();
            proptest::prop_assert_eq!(start.status, status);
            proptest::prop_assert_eq!(start.headers, headers);
        }
    }
}
