//! The streams between the tokio side and a Python worker thread, both ways bounded so a slow
//! peer holds back the other side, and neither side waits on a client forever:
//!
//! * request body: a body of up to `--request-buffer-size` bytes is read whole by the front
//!   ([`collect_body`]) before the request is given to a worker, so a client sending it slowly
//!   holds no thread; of a larger one that much is read first, and the rest streams: a tokio
//!   task (`pump_request_body`) polls hyper's body and feeds a bounded channel that
//!   [`ChannelBody`] reads from, blocking, on the worker thread. Both count the time spent
//!   waiting for the client against `--body-timeout` plus one second per `--body-min-rate`
//!   bytes received (Apache's `RequestReadTimeout body=15,MinRate=500`), no single wait longer
//!   than `--body-timeout`; past it the app's read raises `OSError` and the client gets 408.
//! * response: [`ChannelSink`] hands the status and headers over a oneshot and the body
//!   chunks over a bounded channel that [`ResponseStream`] (the hyper response body) drains.
//!   When hyper drops the body (the client left, or read too slowly: see [`super::conn`]),
//!   the next `write` fails, and the call ends with the iterable's `close()`. A response that
//!   must end with an error is flushed to the client first.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::{mpsc, oneshot};
use wsgi_interp::{RequestBody, ResponseSink};

use super::conn::ConnShared;
use super::pool::Waiting;

/// Request body chunks in flight between hyper and the app, per request.
const REQUEST_CHUNKS: usize = 4;
/// Response body chunks in flight between the app and hyper, per request.
const RESPONSE_CHUNKS: usize = 8;

/// The status line and headers the app started the response with.
#[derive(Debug)]
pub struct ResponseHead {
    /// The status code.
    pub status: u16,
    /// The reason phrase the app gave, if not its code's usual one (`OK` of `200`): hyper
    /// writes that one itself.
    pub reason: Option<String>,
    /// The headers, as the app gave them (validated by the WSGI layer).
    pub headers: Vec<(String, Vec<u8>)>,
}

/// The worker side of a request body: the bytes the front read already, then blocking reads
/// from the pump's channel.
pub struct ChannelBody {
    start: Option<oneshot::Sender<()>>,
    chunks: Option<mpsc::Receiver<io::Result<Bytes>>>,
    /// The piece being read.
    current: Bytes,
    /// The pieces after it read already (as hyper gave them: never joined into one copy).
    held: VecDeque<Bytes>,
}

impl ChannelBody {
    /// A body with nothing in it (no `Content-Length`, no chunked encoding).
    pub fn empty() -> ChannelBody {
        ChannelBody::buffered(Pieces::default())
    }

    /// A body read whole by the front.
    pub fn buffered(body: Pieces) -> ChannelBody {
        ChannelBody::new(None, None, body)
    }

    fn new(
        start: Option<oneshot::Sender<()>>,
        chunks: Option<mpsc::Receiver<io::Result<Bytes>>>,
        body: Pieces,
    ) -> ChannelBody {
        let mut held = body.0;
        ChannelBody {
            start,
            chunks,
            current: held.pop_front().unwrap_or_default(),
            held,
        }
    }

    /// Makes `current` the next piece with bytes in it, waiting for the pump when nothing is
    /// held; false at the end of the body.
    fn next_piece(&mut self) -> io::Result<bool> {
        loop {
            if let Some(settled) = self.next_held() {
                return settled;
            }
            let received = self.chunks.as_mut().and_then(|c| c.blocking_recv());
            if let Some(settled) = self.receive(received) {
                return settled;
            }
        }
    }

    /// [`ChannelBody::next_piece`], awaiting the pump (on the tokio side).
    async fn next_piece_async(&mut self) -> io::Result<bool> {
        loop {
            if let Some(settled) = self.next_held() {
                return settled;
            }
            let received = match self.chunks.as_mut() {
                Some(chunks) => chunks.recv().await,
                None => None,
            };
            if let Some(settled) = self.receive(received) {
                return settled;
            }
        }
    }

    /// [`ChannelBody::next_piece`] as far as it goes without waiting: None when the pump must
    /// be waited for.
    fn next_held(&mut self) -> Option<io::Result<bool>> {
        if let Some(start) = self.start.take() {
            // The pump may be gone already (the client left); the receive says so.
            let _ = start.send(());
        }
        while self.current.is_empty() {
            if let Some(next) = self.held.pop_front() {
                self.current = next;
                continue;
            }
            // Nothing held: the pump has more, or the body ended.
            return self.chunks.is_none().then_some(Ok(false));
        }
        Some(Ok(true))
    }

    /// Moves what fits of the current piece into `buf`.
    fn copy_current(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        n
    }

    /// Takes what the pump gave (None: it ended); what `next_piece` returns when that
    /// settles it.
    fn receive(&mut self, received: Option<io::Result<Bytes>>) -> Option<io::Result<bool>> {
        match received {
            Some(Ok(chunk)) => {
                self.current = chunk;
                None
            }
            Some(Err(e)) => {
                self.chunks = None;
                Some(Err(e))
            }
            None => {
                self.chunks = None;
                Some(Ok(false))
            }
        }
    }
}

impl RequestBody for ChannelBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.next_piece()? {
            return Ok(0);
        }
        Ok(self.copy_current(buf))
    }

    fn read_uninit(&mut self, buf: &mut [std::mem::MaybeUninit<u8>]) -> io::Result<usize> {
        if !self.next_piece()? {
            return Ok(0);
        }
        // As much as fits of the pieces held, without waiting for more.
        let mut n = 0;
        loop {
            let k = wsgi_interp::copy_to_uninit(&mut &self.current[..], &mut buf[n..]);
            self.current.advance(k);
            n += k;
            if n == buf.len() {
                return Ok(n);
            }
            match self.held.pop_front() {
                Some(next) => self.current = next,
                None => return Ok(n),
            }
        }
    }

    fn held(&self) -> usize {
        if self.start.is_some() {
            // The pump waits for the first read (`100-continue`).
            return 0;
        }
        self.current.len() + self.held.iter().map(Bytes::len).sum::<usize>()
    }

    fn held_whole(&self) -> Option<usize> {
        // A body the front read whole: no pump, nothing still to come.
        (self.start.is_none() && self.chunks.is_none()).then(|| self.held())
    }

    fn held_slices(&self) -> Option<Vec<&[u8]>> {
        self.held_whole()?;
        let pieces = std::iter::once(&self.current).chain(&self.held);
        Some(pieces.filter(|p| !p.is_empty()).map(|p| &p[..]).collect())
    }
}

impl wsgi_daemon::AsyncRequestBody for ChannelBody {
    async fn read_async(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.next_piece_async().await? {
            return Ok(0);
        }
        Ok(self.copy_current(buf))
    }
}

/// A request body's bytes read so far, in the pieces hyper gave them.
#[derive(Debug, Default)]
pub struct Pieces(VecDeque<Bytes>);

impl Pieces {
    fn push(&mut self, piece: Bytes) {
        if !piece.is_empty() {
            self.0.push_back(piece);
        }
    }

    /// The number of bytes.
    pub fn len(&self) -> usize {
        self.0.iter().map(Bytes::len).sum()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Bytes> for Pieces {
    fn from(piece: Bytes) -> Pieces {
        let mut pieces = Pieces::default();
        pieces.push(piece);
        pieces
    }
}

/// Shared by the pump and the front: reading the request body failed, so a response not yet
/// started answers this status (400 malformed, 408 too slow, 413 too large).
#[derive(Debug, Default, Clone)]
pub struct BodyFailure(Arc<AtomicU16>);

impl BodyFailure {
    /// The status reading the body failed with, if it did.
    pub fn status(&self) -> Option<u16> {
        match self.0.load(Ordering::Acquire) {
            0 => None,
            status => Some(status),
        }
    }

    fn set(&self, status: u16) {
        self.0.store(status, Ordering::Release)
    }
}

/// How request bodies are read (`--request-buffer-size`, `--body-timeout`,
/// `--body-min-rate`, `--limit-request-body`).
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Bodies up to this many bytes are read whole before a worker takes the request.
    pub buffer_size: usize,
    /// The time a client may make the server wait for body bytes, before the rate credit
    /// (zero: no limit).
    pub timeout: Duration,
    /// Each `min_rate` bytes received earn one more second of waiting (0: none).
    pub min_rate: u64,
    /// The largest body accepted (413 beyond; 0: no limit).
    pub max_size: u64,
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The client sent it too slowly: 408.
    #[error(
        "the client sent the request body too slowly ({received} bytes in {waited:.1}s of waiting; the limit is --body-timeout plus 1s per --body-min-rate bytes)"
    )]
    TooSlow {
        /// Bytes received.
        received: u64,
        /// Seconds spent waiting for the client.
        waited: f64,
    },
    /// The body is larger than `--limit-request-body`: 413.
    #[error("the request body is larger than --limit-request-body ({limit} bytes)")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// Bad chunked encoding, or shorter than its `Content-Length`: 400.
    #[error("the request body is malformed: {0}")]
    Malformed(hyper::Error),
}

impl BodyError {
    /// The status to answer when no response has started.
    pub fn status(&self) -> u16 {
        match self {
            BodyError::TooSlow { .. } => 408,
            BodyError::TooLarge { .. } => 413,
            BodyError::Malformed(_) => 400,
        }
    }

    fn into_io(self) -> io::Error {
        let kind = match &self {
            BodyError::TooSlow { .. } => io::ErrorKind::TimedOut,
            BodyError::TooLarge { .. } | BodyError::Malformed(_) => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, self.to_string())
    }
}

/// hyper's request body with the client's time counted (see the module docs).
pub struct BodyReader {
    body: Incoming,
    limits: BodyLimits,
    received: u64,
    waited: Duration,
}

impl BodyReader {
    /// Starts reading `body`.
    pub fn new(body: Incoming, limits: BodyLimits) -> BodyReader {
        BodyReader {
            body,
            limits,
            received: 0,
            waited: Duration::ZERO,
        }
    }

    /// The time the client may still make us wait.
    fn time_left(&self) -> Duration {
        let earned = match self.limits.min_rate {
            0 => Duration::ZERO,
            rate => Duration::from_secs_f64(self.received as f64 / rate as f64),
        };
        self.limits
            .timeout
            .saturating_add(earned)
            .saturating_sub(self.waited)
    }

    /// The next piece of the body (None at its end).
    pub async fn next(&mut self) -> Result<Option<Bytes>, BodyError> {
        loop {
            let began = Instant::now();
            // However much time the rate earned, no single wait for the client may be longer
            // than the timeout itself (Apache's per-read `Timeout`): a client that sent fast
            // and then stalls does not hold its request for long.
            let frame = if self.limits.timeout.is_zero() {
                Ok(self.body.frame().await)
            } else {
                let wait = self.time_left().min(self.limits.timeout);
                tokio::time::timeout(wait, self.body.frame()).await
            };
            self.waited += began.elapsed();
            match frame {
                Err(_) => {
                    return Err(BodyError::TooSlow {
                        received: self.received,
                        waited: self.waited.as_secs_f64(),
                    });
                }
                Ok(None) => return Ok(None),
                Ok(Some(Err(e))) => return Err(BodyError::Malformed(e)),
                Ok(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue; // trailers
                    };
                    self.received += data.len() as u64;
                    if self.limits.max_size > 0 && self.received > self.limits.max_size {
                        return Err(BodyError::TooLarge {
                            limit: self.limits.max_size,
                        });
                    }
                    if !data.is_empty() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }
}

/// What [`collect_body`] read.
pub enum Collected {
    /// The whole body.
    Whole(Pieces),
    /// More than `--request-buffer-size` (or a `Content-Length` above it, then nothing read
    /// yet): the rest streams to the worker.
    Streaming(BodyReader, Pieces),
}

/// Reads a request body whole when it fits `--request-buffer-size`; a larger one up to the
/// buffer size, the rest left to stream: a client must send that much (within the body
/// timeout) before its request takes a worker. Refuses a `Content-Length` above
/// `--limit-request-body` before reading any of it. With a buffer size of 0 nothing is read
/// here (the body streams, and `100-continue` waits for the application's first read).
pub async fn collect_body(body: Incoming, limits: BodyLimits) -> Result<Collected, BodyError> {
    let declared = body.size_hint().exact();
    if let Some(n) = declared {
        if limits.max_size > 0 && n > limits.max_size {
            return Err(BodyError::TooLarge {
                limit: limits.max_size,
            });
        }
    }
    let mut reader = BodyReader::new(body, limits);
    let mut all = Pieces::default();
    let mut len = 0;
    while len < limits.buffer_size {
        match reader.next().await? {
            Some(more) => {
                len += more.len();
                all.push(more);
            }
            None => return Ok(Collected::Whole(all)),
        }
    }
    Ok(Collected::Streaming(reader, all))
}

/// Makes the two ends of a streamed request body: the worker's [`ChannelBody`] (starting
/// with `prefix`, bytes already read) and the pump task to spawn on the tokio side. With
/// `wait_for_app`, the pump reads nothing until the app first reads (`100-continue`).
pub fn request_body(
    reader: BodyReader,
    prefix: Pieces,
    wait_for_app: bool,
    failure: BodyFailure,
) -> (ChannelBody, impl Future<Output = ()> + Send + 'static) {
    let (start_tx, start_rx) = oneshot::channel();
    let (tx, rx) = mpsc::channel(REQUEST_CHUNKS);
    let body = ChannelBody::new(Some(start_tx), Some(rx), prefix);
    let start = wait_for_app.then_some(start_rx);
    (body, pump_request_body(reader, start, tx, failure))
}

/// Polls hyper's request body into the channel (once the app starts reading it, if `start`).
async fn pump_request_body(
    mut reader: BodyReader,
    start: Option<oneshot::Receiver<()>>,
    tx: mpsc::Sender<io::Result<Bytes>>,
    failure: BodyFailure,
) {
    if let Some(start) = start {
        if start.await.is_err() {
            // The app never read its input: leave the body to hyper (it closes the connection
            // rather than reading an unread body).
            return;
        }
    }
    loop {
        let next = tokio::select! {
            next = reader.next() => next,
            () = tx.closed() => return,
        };
        match next {
            Ok(Some(data)) => {
                if tx.send(Ok(data)).await.is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(e) => {
                failure.set(e.status());
                tracing::info!("{e}");
                let _ = tx.send(Err(e.into_io())).await;
                return;
            }
        }
    }
}

/// How a response reaches the tokio side.
#[derive(Debug)]
pub enum ResponseStart {
    /// The whole response at once: the head and the complete body (the app's first body
    /// write completed its `Content-Length`, or the body is empty). One hand-off, and no
    /// stream to set up: the common case of an app returning `[body]`.
    Whole(ResponseHead, Bytes),
    /// The head; the body follows on the stream.
    Streamed(ResponseHead, ResponseStream),
}

/// The worker side of a response. The head is held until the first body write, so a body
/// that fits its `Content-Length` in one write goes over with it, in one message.
pub struct ChannelSink {
    conn: Arc<ConnShared>,
    start: Option<oneshot::Sender<ResponseStart>>,
    pending: Option<ResponseHead>,
    content_length: Option<u64>,
    chunks: Option<mpsc::Sender<io::Result<Bytes>>>,
    discard_body: bool,
    /// For an HTTP/2 stream: how long a chunk may wait for the stream to take it.
    stall: Option<Box<StallLimit>>,
}

/// A bound on how long an HTTP/2 response may stall. A stream whose client opens no flow-control
/// window stops taking chunks while its connection's socket stays writable, so the
/// connection's write timeout ([`super::conn`]) never sees it: a chunk that waits longer than
/// the write timeout, plus a second per `min_rate` bytes of the chunk before it, ends the
/// response (the worker is released, the stream reset). While requests wait for a worker of
/// the response's pool, the busy timeout replaces the write timeout, as for HTTP/1.1.
pub struct StallLimit {
    /// The runtime whose timer bounds the wait.
    pub runtime: tokio::runtime::Handle,
    /// The response write limits.
    pub limits: super::conn::WriteLimits,
    /// The pool the response comes from.
    pool: Waiting,
    /// The size of the chunk sent before.
    last: u64,
}

impl StallLimit {
    /// A bound for the responses of `runtime` under `limits`, produced by a worker of `pool`.
    pub fn new(
        runtime: tokio::runtime::Handle,
        limits: super::conn::WriteLimits,
        pool: Waiting,
    ) -> StallLimit {
        StallLimit {
            runtime,
            limits,
            pool,
            last: 0,
        }
    }

    /// Sends `chunk` on `chunks`, waiting at most the limit when the stream is full (from a
    /// worker thread).
    fn send(&mut self, chunks: &mpsc::Sender<io::Result<Bytes>>, chunk: Bytes) -> io::Result<()> {
        let len = chunk.len() as u64;
        match chunks.try_send(Ok(chunk)) {
            Ok(()) => {
                self.last = len;
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(client_gone()),
            Err(mpsc::error::TrySendError::Full(item)) => {
                // The timer is made inside the runtime's context (a worker thread has none).
                let runtime = self.runtime.clone();
                runtime.block_on(self.send_async(chunks, item))
            }
        }
    }

    /// [`StallLimit::send`] on the tokio side, of a chunk or of the error that ends the body.
    async fn send_async(
        &mut self,
        chunks: &mpsc::Sender<io::Result<Bytes>>,
        item: io::Result<Bytes>,
    ) -> io::Result<()> {
        let earned = match self.limits.min_rate {
            0 => Duration::ZERO,
            rate => Duration::from_secs(self.last / rate),
        };
        self.last = item.as_ref().map_or(0, |chunk| chunk.len() as u64);
        let watch = self.limits.watches_load();
        let send = chunks.send(item);
        tokio::pin!(send);
        let began = Instant::now();
        loop {
            let busy = watch && self.pool.now();
            let limit = self.limits.base(busy).map(|base| base + earned);
            let waited = began.elapsed();
            if let Some(limit) = limit.filter(|limit| waited >= *limit) {
                let why = if busy {
                    " while requests waited for a worker"
                } else {
                    ""
                };
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the client left its HTTP/2 stream unread for {limit:?}{why}: the response is ended"
                    ),
                ));
            }
            // Until the limit, or sooner to look at the pool again.
            let Some(wait) = self.limits.next_look(limit, waited, busy) else {
                return send.await.map_err(|_| client_gone());
            };
            if let Ok(sent) = tokio::time::timeout(wait, &mut send).await {
                return sent.map_err(|_| client_gone());
            }
        }
    }
}

/// The tokio side of a response: how it starts (dropped unsent when the call ends before
/// `start`).
pub struct ResponseReceiver {
    /// The head, with the whole body or its stream.
    pub start: oneshot::Receiver<ResponseStart>,
}

/// Makes both ends of a response on connection `conn`. With `discard_body` (a HEAD request)
/// the body the app produces is thrown away, as Apache does.
pub fn response_channel(
    discard_body: bool,
    conn: Arc<ConnShared>,
) -> (ChannelSink, ResponseReceiver) {
    let (start_tx, start_rx) = oneshot::channel();
    (
        ChannelSink {
            conn,
            start: Some(start_tx),
            pending: None,
            content_length: None,
            chunks: None,
            discard_body,
            stall: None,
        },
        ResponseReceiver { start: start_rx },
    )
}

fn client_gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the client closed the connection",
    )
}

impl ChannelSink {
    /// Bounds how long each chunk may wait for the client ([`StallLimit`]: HTTP/2 streams).
    pub fn with_stall_limit(mut self, stall: StallLimit) -> ChannelSink {
        self.stall = Some(Box::new(stall));
        self
    }

    /// Whether the client is already gone (the request was dropped while queued).
    pub fn client_gone(&self) -> bool {
        match (&self.start, &self.chunks) {
            (Some(start), _) => start.is_closed(),
            (None, Some(chunks)) => chunks.is_closed(),
            (None, None) => true,
        }
    }

    /// Ends the response body with an error, so hyper resets the connection instead of
    /// finishing the response cleanly (the app failed after the body started, or sent less
    /// than its `Content-Length`).
    pub fn abort(&mut self, why: String) {
        if self.open_stream().is_ok() {
            if let Some(chunks) = &self.chunks {
                let _ = chunks.blocking_send(Err(io::Error::new(io::ErrorKind::Interrupted, why)));
            }
        }
    }

    /// Sends the held head with `body` as the whole response.
    fn send_whole(&mut self, body: Bytes) -> io::Result<()> {
        let (Some(start), Some(head)) = (self.start.take(), self.pending.take()) else {
            return Err(client_gone());
        };
        start
            .send(ResponseStart::Whole(head, body))
            .map_err(|_| client_gone())
    }

    /// Sends the held head with a stream for the body, once.
    fn open_stream(&mut self) -> io::Result<()> {
        if self.chunks.is_some() {
            return Ok(());
        }
        let (Some(start), Some(head)) = (self.start.take(), self.pending.take()) else {
            return Err(client_gone());
        };
        let (tx, rx) = mpsc::channel(RESPONSE_CHUNKS);
        self.chunks = Some(tx);
        start
            .send(ResponseStart::Streamed(
                head,
                ResponseStream {
                    chunks: rx,
                    conn: self.conn.clone(),
                    failing: None,
                },
            ))
            .map_err(|_| client_gone())
    }

    /// Whether `chunk` completes the response with the head still held: it goes with it.
    fn completes(&self, chunk: &Bytes) -> bool {
        self.pending.is_some() && self.content_length == Some(chunk.len() as u64)
    }

    /// Sends a body chunk: with the head when it completes the response, else on the stream.
    fn send(&mut self, chunk: Bytes) -> io::Result<()> {
        if self.completes(&chunk) {
            return self.send_whole(chunk);
        }
        self.open_stream()?;
        match (&self.chunks, &mut self.stall) {
            (Some(chunks), Some(stall)) => stall.send(chunks, chunk),
            (Some(chunks), None) => chunks.blocking_send(Ok(chunk)).map_err(|_| client_gone()),
            (None, _) => Err(client_gone()),
        }
    }

    /// [`ChannelSink::send`] on the tokio side (a daemon process's response).
    async fn send_async(&mut self, chunk: Bytes) -> io::Result<()> {
        if self.completes(&chunk) {
            return self.send_whole(chunk);
        }
        self.open_stream()?;
        self.send_item_async(Ok(chunk)).await
    }

    /// [`ChannelSink::abort`] on the tokio side; an HTTP/2 stream gets as long as for a chunk
    /// ([`StallLimit`]) to take it (HTTP/1's write timeout bounds the wait there).
    pub async fn abort_async(&mut self, why: String) {
        if self.open_stream().is_ok() {
            let error = Err(io::Error::new(io::ErrorKind::Interrupted, why));
            let _ = self.send_item_async(error).await;
        }
    }

    /// Sends a chunk, or the error that ends the body, on the open stream, within the stall
    /// limit where there is one.
    async fn send_item_async(&mut self, item: io::Result<Bytes>) -> io::Result<()> {
        match (&self.chunks, &mut self.stall) {
            (Some(chunks), Some(stall)) => stall.send_async(chunks, item).await,
            (Some(chunks), None) => chunks.send(item).await.map_err(|_| client_gone()),
            (None, _) => Err(client_gone()),
        }
    }
}

/// A daemon process's response, sent on from the tokio side: as [`ResponseSink`] does from a
/// worker thread.
impl wsgi_daemon::AsyncResponseSink for ChannelSink {
    fn begin(
        &mut self,
        status: u16,
        reason: &str,
        headers: Vec<(String, Vec<u8>)>,
    ) -> io::Result<()> {
        self.start(status, reason, headers)
    }

    async fn send_chunk(&mut self, chunk: Vec<u8>) -> io::Result<()> {
        if self.discard_body {
            return self.write(&chunk);
        }
        self.send_async(Bytes::from(chunk)).await
    }

    async fn send_file(&mut self, file: std::fs::File, offset: u64, len: u64) -> io::Result<()> {
        if self.discard_body {
            return Ok(());
        }
        let bytes = super::sendfile::file_bytes(file, offset, len)?;
        if bytes.is_empty() {
            return Ok(());
        }
        self.send_async(bytes).await
    }

    /// The slot's bytes go on as they are, unread; the slot is free once hyper has written
    /// them (or dropped them) and lets the chunk go.
    async fn send_shared(&mut self, chunk: wsgi_daemon::BufferChunk) -> io::Result<()> {
        if self.discard_body {
            return self.write(chunk.as_ref());
        }
        self.send_async(Bytes::from_owner(chunk)).await
    }
}

impl Drop for ChannelSink {
    /// A head still held when the call ends: the response has no body (or, for HEAD, the body
    /// was thrown away).
    fn drop(&mut self) {
        if self.pending.is_some() {
            let _ = self.send_whole(Bytes::new());
        }
    }
}

impl ResponseSink for ChannelSink {
    fn start(
        &mut self,
        status: u16,
        reason: &str,
        headers: Vec<(String, Vec<u8>)>,
    ) -> io::Result<()> {
        if self.pending.is_some() || self.start.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the response was already started",
            ));
        }
        if self.client_gone() {
            return Err(client_gone());
        }
        self.content_length = headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, value)| wsgi_interp::parse_content_length(value).ok());
        self.pending = Some(ResponseHead {
            status,
            reason: (wsgi_interp::usual_reason(status) != Some(reason)).then(|| reason.to_string()),
            headers,
        });
        Ok(())
    }

    fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        if self.discard_body {
            return if self.client_gone() {
                Err(client_gone())
            } else {
                Ok(())
            };
        }
        self.send(Bytes::copy_from_slice(chunk))
    }

    /// Only a chunk sent on an open stream may wait (for room in it): `start` keeps the head,
    /// and the first chunk goes with it (the whole response) or opens the stream, whose buffer
    /// is empty then. A HEAD response's body is dropped.
    fn may_wait(&self, len: usize, _last: bool) -> bool {
        len > 0 && self.chunks.is_some() && !self.discard_body
    }

    /// A daemon process's chunk goes to hyper as it was read: no copy.
    fn write_owned(&mut self, chunk: Vec<u8>) -> io::Result<()> {
        if self.discard_body {
            return self.write(&chunk);
        }
        self.send(Bytes::from(chunk))
    }

    /// The app's `bytes` object itself goes to hyper, which writes it from there: no copy.
    fn write_shared(&mut self, chunk: wsgi_interp::SharedChunk) -> io::Result<()> {
        if self.discard_body {
            return self.write(&chunk);
        }
        self.send(Bytes::from_owner(chunk))
    }

    /// The file goes to hyper as one mapped range that the connection sends with
    /// `sendfile(2)` ([`super::sendfile`]), through a descriptor of its own (the app closes its
    /// file when the call ends, before the bytes are out) that leaves the app's offset alone.
    fn file(&mut self, fd: RawFd, offset: u64, len: u64) -> io::Result<bool> {
        if self.discard_body {
            return Ok(true);
        }
        // A duplicate of the app's descriptor (not a reopening through /proc: a system call
        // instead of a path walk and a new open file, and no /proc needed); on failure (out
        // of descriptors), the body is iterated instead.
        let Ok(file) = super::sendfile::own_descriptor(fd) else {
            return Ok(false);
        };
        self.owned_file(file, offset, len)
            .map(|declined| declined.is_none())
    }

    /// A file a daemon process handed over: sent from as it is.
    fn owned_file(
        &mut self,
        file: std::fs::File,
        offset: u64,
        len: u64,
    ) -> io::Result<Option<std::fs::File>> {
        if self.discard_body {
            return Ok(None);
        }
        let bytes = super::sendfile::file_bytes(file, offset, len)?;
        if !bytes.is_empty() {
            self.send(bytes)?;
        }
        Ok(None)
    }
}

/// The hyper response body: chunks from the worker. An error item aborts the connection,
/// once everything before it has been flushed to the client (status line, headers and the
/// bytes the app did send reach it before the close).
#[derive(Debug)]
pub struct ResponseStream {
    chunks: mpsc::Receiver<io::Result<Bytes>>,
    conn: Arc<ConnShared>,
    failing: Option<io::Error>,
}

impl Body for ResponseStream {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if self.failing.is_none() {
            match self.chunks.poll_recv(cx) {
                Poll::Ready(Some(Ok(chunk))) => return Poll::Ready(Some(Ok(Frame::data(chunk)))),
                Poll::Ready(Some(Err(e))) => self.failing = Some(e),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
        std::task::ready!(self.conn.wait_flush(cx));
        Poll::Ready(self.failing.take().map(Err))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_reports_a_departed_client() {
        let (mut sink, receiver) = response_channel(false, Arc::default());
        drop(receiver);
        assert!(sink.client_gone());
        let err = sink.start(200, "OK", Vec::new()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        let err = sink.write(b"x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn a_body_held_whole_lends_its_pieces_as_they_are_left() {
        let mut pieces = Pieces::default();
        for piece in [&b"abc"[..], b"", b"defg", b"h"] {
            pieces.push(Bytes::copy_from_slice(piece));
        }
        let mut body = ChannelBody::buffered(pieces);
        let joined = |body: &ChannelBody| body.held_slices().unwrap().concat();
        assert_eq!(joined(&body), b"abcdefgh");
        assert_eq!(body.held_whole(), Some(8));
        let mut two = [0u8; 2];
        assert_eq!(body.read(&mut two).unwrap(), 2);
        assert_eq!(joined(&body), b"cdefgh", "what was read is not lent again");
        assert!(body.held_slices().unwrap().iter().all(|s| !s.is_empty()));
        let mut rest = Vec::new();
        while let n @ 1.. = body.read(&mut two).unwrap() {
            rest.extend_from_slice(&two[..n]);
        }
        assert_eq!(rest, b"cdefgh");
        assert_eq!(body.held_slices(), Some(Vec::new()));
        // A body still arriving lends nothing: it is read instead.
        let (_tx, rx) = mpsc::channel(1);
        let streaming = ChannelBody::new(None, Some(rx), Pieces::default());
        assert_eq!(streaming.held_slices(), None);
    }

    fn cl(n: usize) -> Vec<(String, Vec<u8>)> {
        vec![("Content-Length".into(), n.to_string().into_bytes())]
    }

    fn whole(receiver: ResponseReceiver) -> (ResponseHead, Bytes) {
        match receiver.start.blocking_recv().unwrap() {
            ResponseStart::Whole(head, body) => (head, body),
            ResponseStart::Streamed(..) => panic!("streamed, not whole"),
        }
    }

    fn streamed(receiver: ResponseReceiver) -> (ResponseHead, ResponseStream) {
        match receiver.start.blocking_recv().unwrap() {
            ResponseStart::Streamed(head, body) => (head, body),
            ResponseStart::Whole(..) => panic!("whole, not streamed"),
        }
    }

    #[test]
    fn head_requests_run_the_body_but_send_none() {
        let (mut sink, receiver) = response_channel(true, Arc::default());
        sink.start(200, "OK", cl(5)).unwrap();
        sink.write(b"hello").unwrap();
        drop(sink);
        let (head, body) = whole(receiver);
        assert_eq!(head.status, 200);
        assert!(body.is_empty());
    }

    #[test]
    fn a_body_that_fills_its_content_length_goes_with_the_head() {
        let (mut sink, receiver) = response_channel(false, Arc::default());
        sink.start(200, "OK", cl(5)).unwrap();
        sink.write(b"hello").unwrap();
        let (head, body) = whole(receiver);
        assert_eq!((head.status, &body[..]), (200, &b"hello"[..]));
        // The response is complete: a further write finds no one to take it.
        assert!(sink.write(b"more").is_err());
    }

    /// The worker keeps the GIL around what cannot wait (`may_wait` false): the head, a whole
    /// body, a first chunk, a HEAD response's body. Those return with no one reading.
    #[test]
    fn a_sink_may_wait_only_once_its_stream_is_open() {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let worker = std::thread::spawn(move || {
            let (mut whole_sink, whole_rx) = response_channel(false, Arc::default());
            assert!(!whole_sink.may_wait(5, false));
            whole_sink.start(200, "OK", cl(5)).unwrap();
            assert!(!whole_sink.may_wait(5, false));
            whole_sink.write(b"hello").unwrap();
            let (mut sink, streamed_rx) = response_channel(false, Arc::default());
            sink.start(200, "OK", Vec::new()).unwrap();
            assert!(!sink.may_wait(5, false));
            sink.write(b"one").unwrap();
            // Open now: a later chunk waits when the stream is full (nothing to send, nothing
            // to wait for).
            assert!(sink.may_wait(5, false));
            assert!(!sink.may_wait(0, false));
            let (mut head_sink, head_rx) = response_channel(true, Arc::default());
            head_sink.start(200, "OK", Vec::new()).unwrap();
            for _ in 0..2 * RESPONSE_CHUNKS {
                head_sink.write(b"dropped").unwrap();
                assert!(!head_sink.may_wait(5, false));
            }
            done_tx
                .send((whole_rx, (sink, streamed_rx), head_rx))
                .unwrap();
        });
        let (whole_rx, (_sink, streamed_rx), head_rx) = done_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("nothing waited");
        worker.join().unwrap();
        assert_eq!(&whole(whole_rx).1[..], b"hello");
        let (_, mut body) = streamed(streamed_rx);
        assert_eq!(&body.chunks.blocking_recv().unwrap().unwrap()[..], b"one");
        drop(head_rx);
    }

    #[test]
    fn an_empty_body_is_sent_when_the_call_ends() {
        let (mut sink, receiver) = response_channel(false, Arc::default());
        sink.start(204, "No Content", Vec::new()).unwrap();
        drop(sink);
        let (head, body) = whole(receiver);
        assert_eq!(head.status, 204);
        assert!(body.is_empty());
    }

    #[test]
    fn other_bodies_stream_in_order_and_an_abort_ends_them_with_an_error() {
        let (mut sink, receiver) = response_channel(false, Arc::default());
        sink.start(200, "OK", Vec::new()).unwrap();
        let worker = std::thread::spawn(move || {
            sink.write(b"one").unwrap();
            sink.write(b"two").unwrap();
            sink.abort("failed".into());
        });
        let (_, mut body) = streamed(receiver);
        assert_eq!(&body.chunks.blocking_recv().unwrap().unwrap()[..], b"one");
        assert_eq!(&body.chunks.blocking_recv().unwrap().unwrap()[..], b"two");
        assert!(body.chunks.blocking_recv().unwrap().is_err());
        worker.join().unwrap();
        // Declared 10 bytes, sent none: the head goes out, then the error.
        let (mut sink, receiver) = response_channel(false, Arc::default());
        sink.start(200, "OK", cl(10)).unwrap();
        sink.abort("short".into());
        let (_, mut body) = streamed(receiver);
        assert!(body.chunks.blocking_recv().unwrap().is_err());
    }

    #[test]
    fn file_is_read_from_its_offset_without_moving_the_apps() {
        use std::io::{Read, Seek, SeekFrom, Write};
        use std::os::fd::AsRawFd;
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"0123456789").unwrap();
        f.seek(SeekFrom::Start(1)).unwrap();
        let (mut sink, receiver) = response_channel(false, Arc::default());
        sink.start(200, "OK", cl(5)).unwrap();
        let sent = sink.file(f.as_raw_fd(), 2, 5).unwrap();
        let mut rest = String::new();
        f.read_to_string(&mut rest).unwrap();
        assert!(sent);
        assert_eq!(rest, "123456789");
        let (_, body) = whole(receiver);
        assert_eq!(&body[..], b"23456");
    }

    #[test]
    fn body_reads_in_pieces_then_ends() {
        let (tx, rx) = mpsc::channel(4);
        let mut body = ChannelBody::new(None, Some(rx), Pieces::default());
        tx.blocking_send(Ok(Bytes::from_static(b"hello"))).unwrap();
        drop(tx);
        let mut buf = [0u8; 3];
        assert_eq!(body.read(&mut buf).unwrap(), 3);
        assert_eq!(&buf, b"hel");
        assert_eq!(body.read(&mut buf).unwrap(), 2);
        assert_eq!(&buf[..2], b"lo");
        assert_eq!(body.read(&mut buf).unwrap(), 0);
        assert_eq!(ChannelBody::empty().read(&mut buf).unwrap(), 0);
    }

    #[test]
    #[allow(unsafe_code)] // to look at what read_uninit wrote
    fn held_pieces_are_read_across_their_seams_without_waiting() {
        use std::mem::MaybeUninit;
        let (tx, rx) = mpsc::channel(4);
        let mut held = Pieces::from(Bytes::from_static(b"abc"));
        held.push(Bytes::from_static(b"defg"));
        let mut body = ChannelBody::new(None, Some(rx), held);
        assert_eq!(body.held(), 7);
        let mut buf = [MaybeUninit::<u8>::uninit(); 5];
        assert_eq!(body.read_uninit(&mut buf).unwrap(), 5);
        // SAFETY: read_uninit initialised the 5 bytes it returned.
        let got: Vec<u8> = buf.iter().map(|b| unsafe { b.assume_init() }).collect();
        assert_eq!(got, b"abcde");
        assert_eq!(body.held(), 2);
        // What is held is returned at once, however much room there is; then the channel.
        let mut big = [MaybeUninit::<u8>::uninit(); 64];
        assert_eq!(body.read_uninit(&mut big).unwrap(), 2);
        assert_eq!(body.held(), 0);
        tx.blocking_send(Ok(Bytes::from_static(b"hi"))).unwrap();
        drop(tx);
        assert_eq!(body.read_uninit(&mut big).unwrap(), 2);
        assert_eq!(body.read_uninit(&mut big).unwrap(), 0);
    }
}
