//! The client connection under hyper: [`ConnIo`] wraps the socket to enforce the response
//! write timeout, and shares a [`ConnShared`] with the requests on the connection.
//!
//! * **Write timeout with a minimum rate** (the response side of Apache's `RequestReadTimeout
//!   body=...,MinRate=...`): while a response is written, the time the socket stays full
//!   (writes pending) is counted, and a client may keep it full for at most
//!   `socket-timeout + bytes it read / min-rate`, where the bytes it read are those the socket
//!   took after it first filled up (what the kernel buffered at once earns nothing: a client
//!   that reads nothing must not be paid for the size of the socket buffers). Over TCP a
//!   stall of a tenth of a second asks the kernel where the client's receive window stands: the
//!   first look that finds it closed starts the response's clock again, and from then on
//!   only its window's edge moving (its application reading) earns time, since a client's
//!   buffer takes bytes without its reading them while its window grows into it. A client that
//!   reads slower than the minimum rate is dropped once it is past that allowance: the write
//!   fails, hyper closes the connection, the response body is dropped, and the worker thread
//!   writing it gets an error at its next write, so it is released instead of being held by
//!   the client. The allowance starts again with each response.
//! * **Slow readers go first under load**: while requests wait for a worker of the pool the
//!   response came from ([`ConnShared::serving_from`]), the allowance is
//!   `busy-timeout + bytes it read / min-rate` instead, a few seconds: a thread-per-request
//!   server cannot buffer a streamed response away, so a client that does not read it keeps a
//!   worker from the requests waiting, and is dropped before it starves them. A stalled
//!   response looks at its pool at least once a second, so load that comes during a stall
//!   is seen.
//! * **Flush before an abort**: a response that must end with an error (shorter than its
//!   `Content-Length`, or the app failed mid-body) first lets hyper write out everything it
//!   holds (status line, headers, the bytes the app did send), then fails: the body asks
//!   [`ConnShared::wait_flush`] and hyper's next flush of the socket wakes it.

use std::future::Future as _;
use std::io::{self, IoSlice};
use std::os::fd::RawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::pool::Waiting;

/// How slowly a client may read a response.
#[derive(Debug, Clone, Copy)]
pub struct WriteLimits {
    /// The time the socket may stay full before the client must have read anything
    /// (`--socket-timeout`; zero: no limit at all).
    pub timeout: Duration,
    /// Bytes per second: each `min_rate` bytes the client reads earns it one more second
    /// (`--response-min-rate`; 0: no rate, the timeout applies to each stall alone).
    pub min_rate: u64,
    /// What replaces `timeout` while requests wait for a worker of the response's pool
    /// (`--busy-socket-timeout`; zero: `timeout` always).
    pub busy_timeout: Duration,
}

impl WriteLimits {
    /// The stall allowed before anything is read, under load (`busy`) or not; None: no limit.
    pub(super) fn base(&self, busy: bool) -> Option<Duration> {
        let busy = (busy && !self.busy_timeout.is_zero()).then_some(self.busy_timeout);
        match (self.timeout.is_zero(), busy) {
            (true, busy) => busy,
            (false, Some(busy)) => Some(busy.min(self.timeout)),
            (false, None) => Some(self.timeout),
        }
    }

    /// Whether load can shorten the allowance: then a stall looks at the pool again.
    pub(super) fn watches_load(&self) -> bool {
        !self.busy_timeout.is_zero() && (self.timeout.is_zero() || self.busy_timeout < self.timeout)
    }

    /// How long a stall that has lasted `stalled`, of `allowance` in all (None: no limit),
    /// waits before it is looked at again: until its end, or less while load (not there now,
    /// `busy` false) could come and shorten it. None: nothing to look at again.
    pub(super) fn next_look(
        &self,
        allowance: Option<Duration>,
        stalled: Duration,
        busy: bool,
    ) -> Option<Duration> {
        let left = allowance.map(|a| a.saturating_sub(stalled));
        if self.watches_load() && !busy {
            Some(left.map_or(PRESSURE_CHECK, |left| left.min(PRESSURE_CHECK)))
        } else {
            left
        }
    }
}

/// How often a stalled response looks at its pool for requests waiting (see the module docs).
const PRESSURE_CHECK: Duration = Duration::from_secs(1);

/// How long a response must have stalled before the clock asks where the peer's window
/// stands (a system call; a fast client's stalls never last this long).
const WINDOW_LOOK: Duration = Duration::from_millis(100);

/// A deadline that never comes, for a stall without a limit.
const NEVER: Duration = Duration::from_secs(365 * 24 * 3600);

const FLUSH_IDLE: u8 = 0;
const FLUSH_WAITING: u8 = 1;
const FLUSH_DONE: u8 = 2;

/// What a connection's requests share with its socket wrapper.
#[derive(Debug, Default)]
pub struct ConnShared {
    /// Bumped when a response starts: the write allowance starts again.
    response_epoch: AtomicU64,
    /// [`FLUSH_IDLE`], [`FLUSH_WAITING`] (a body waits for the next flush), [`FLUSH_DONE`].
    flush_state: AtomicU8,
    flush_waker: Mutex<Option<Waker>>,
    /// Requests handed to the service, and those whose response body hyper let go of (sent,
    /// or dropped with the connection): equal when none is in flight.
    requests_begun: AtomicU64,
    requests_ended: AtomicU64,
    /// Whether the socket's last write found it full (hyper still holds bytes to send).
    write_waiting: AtomicBool,
    /// The pool of the request answered last, asked whether requests wait for a worker.
    pool: Mutex<Option<Waiting>>,
}

impl ConnShared {
    /// How many responses were started on the connection.
    pub fn responses(&self) -> u64 {
        self.response_epoch.load(Ordering::Relaxed)
    }

    /// Marks the start of a response (its write allowance starts from zero).
    pub fn response_started(&self) {
        self.response_epoch.fetch_add(1, Ordering::Relaxed);
    }

    /// Ready once hyper has flushed everything it held to the socket after this was first
    /// called (the first call registers the wait and returns pending).
    pub fn wait_flush(&self, cx: &mut Context<'_>) -> Poll<()> {
        match self.flush_state.load(Ordering::Acquire) {
            FLUSH_DONE => {
                self.flush_state.store(FLUSH_IDLE, Ordering::Release);
                Poll::Ready(())
            }
            _ => {
                *self.flush_waker.lock() = Some(cx.waker().clone());
                self.flush_state.store(FLUSH_WAITING, Ordering::Release);
                Poll::Pending
            }
        }
    }

    /// Marks a request handed to the service; its [`RequestGuard`], dropped with the
    /// response body, marks its end.
    pub fn request_begun(self: &std::sync::Arc<Self>) -> RequestGuard {
        self.requests_begun.fetch_add(1, Ordering::Relaxed);
        RequestGuard {
            shared: self.clone(),
        }
    }

    /// Requests begun and ended so far, summed: changes whenever a request begins or ends.
    pub fn request_events(&self) -> u64 {
        self.requests_begun.load(Ordering::Relaxed) + self.requests_ended.load(Ordering::Relaxed)
    }

    /// Whether nothing is under way on the connection: no request in flight, and no response
    /// bytes waiting for the client to make room.
    pub fn is_quiet(&self) -> bool {
        self.requests_begun.load(Ordering::Relaxed) == self.requests_ended.load(Ordering::Relaxed)
            && !self.write_waiting.load(Ordering::Relaxed)
    }

    /// Marks the pool whose worker produces the response being sent: while requests wait
    /// for one of its workers, a client that stalls the response gets less time.
    pub fn serving_from(&self, pool: Waiting) {
        *self.pool.lock() = Some(pool);
    }

    /// Whether requests wait for a worker of the pool the response came from.
    fn pool_busy(&self) -> bool {
        self.pool.lock().as_ref().is_some_and(Waiting::now)
    }

    /// Called by the socket wrapper when a flush completed.
    fn flushed(&self) {
        if self.flush_state.load(Ordering::Acquire) == FLUSH_WAITING {
            self.flush_state.store(FLUSH_DONE, Ordering::Release);
            if let Some(waker) = self.flush_waker.lock().take() {
                waker.wake();
            }
        }
    }
}

/// A request in flight on its connection (see [`ConnShared::request_begun`]); dropping it
/// marks the request's end.
#[derive(Debug)]
pub struct RequestGuard {
    shared: std::sync::Arc<ConnShared>,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.shared.requests_ended.fetch_add(1, Ordering::Relaxed);
    }
}

/// The write clock of the response being written.
#[derive(Debug, Default)]
struct WriteClock {
    epoch: u64,
    /// Whether the socket filled up during this response.
    filled: bool,
    /// Bytes the socket took during this response since it first filled up.
    accepted: u64,
    /// The right edge of the TCP peer's receive window when a look first found the window
    /// closed during this response (see [`ConnIo::look_at_window`]).
    closed_edge: Option<u64>,
    /// How far that edge has moved on since, at the last look: what the peer's application
    /// read.
    read_since_closed: u64,
    /// Time the socket stayed full during this response, stalls that ended.
    stalled: Duration,
    /// When the current stall began.
    stall_began: Option<Instant>,
}

/// A client connection's socket, with the response write timeout (see the module docs).
pub struct ConnIo<S> {
    inner: S,
    /// The TCP socket under `inner`, whose peer's receive window the clock looks at.
    peer: Option<RawFd>,
    shared: std::sync::Arc<ConnShared>,
    limits: WriteLimits,
    clock: WriteClock,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> ConnIo<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, shared: std::sync::Arc<ConnShared>, limits: WriteLimits) -> Self {
        ConnIo {
            inner,
            peer: None,
            shared,
            limits,
            clock: WriteClock::default(),
            timer: None,
        }
    }

    /// Has the clock look at the receive window of the TCP peer on `socket`, the descriptor
    /// under the wrapped stream (which keeps it open as long as this lives).
    pub fn with_peer_window(mut self, socket: RawFd) -> Self {
        self.peer = Some(socket);
        self
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The stall the client is allowed in all, given what it accepted, under load (`busy`)
    /// or not; None: no limit.
    fn allowance(&self, busy: bool) -> Option<Duration> {
        let earned = match self.limits.min_rate {
            0 => Duration::ZERO,
            rate => Duration::from_secs_f64(self.credited() as f64 / rate as f64),
        };
        Some(self.limits.base(busy)?.saturating_add(earned))
    }

    /// The bytes the client is credited with having read: those the socket took since it
    /// first filled up, until a look found the peer's window closed; from then on, how far
    /// the window's edge moved.
    fn credited(&self) -> u64 {
        match self.clock.closed_edge {
            Some(_) => self.clock.read_since_closed,
            None => self.clock.accepted,
        }
    }

    /// On a stall of [`WINDOW_LOOK`] or more: asks the kernel where the TCP peer's receive
    /// window stands. A peer whose buffer grows as bytes arrive (up to what it set with
    /// `SO_RCVBUF`) takes bytes without reading any, and the socket's taking them looked like
    /// reading: so the first look that finds the window closed (its buffer full) starts the
    /// response's clock again, stall and credit at zero (the time before went to bytes the
    /// network carried), and from then on only the window's edge moving, which it does as
    /// the peer's application reads, earns time. Returns whether the clock started again (at
    /// `now`).
    fn look_at_window(&mut self, now: Instant, stalled: Duration) -> bool {
        let Some(socket) = self.peer else {
            return false;
        };
        if stalled < WINDOW_LOOK {
            return false;
        }
        let Some(window) = super::peer_window::peer_window(socket) else {
            return false;
        };
        match self.clock.closed_edge {
            Some(edge) => {
                self.clock.read_since_closed = window.edge.saturating_sub(edge);
                false
            }
            None if window.is_closed() => {
                tracing::debug!(
                    ?window,
                    "a stalled response found the client's window closed: its clock starts again, and only what it reads earns time"
                );
                self.clock.closed_edge = Some(window.edge);
                self.clock.read_since_closed = 0;
                self.clock.stalled = Duration::ZERO;
                self.clock.stall_began = Some(now);
                true
            }
            None => false,
        }
    }

    /// Before a write: a new response resets the clock.
    fn begin_write(&mut self) {
        let epoch = self.shared.response_epoch.load(Ordering::Relaxed);
        if epoch != self.clock.epoch {
            self.clock = WriteClock {
                epoch,
                ..WriteClock::default()
            };
        }
    }

    /// After a write: counts what was accepted, or checks the stall against the allowance.
    fn after_write(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        self.shared
            .write_waiting
            .store(result.is_pending(), Ordering::Relaxed);
        match result {
            Poll::Ready(Ok(n)) => {
                if let Some(began) = self.clock.stall_began.take() {
                    self.clock.stalled += began.elapsed();
                }
                if self.limits.min_rate == 0 {
                    // No rate: the timeout applies to each stall alone.
                    self.clock.stalled = Duration::ZERO;
                }
                if self.clock.filled {
                    self.clock.accepted += n as u64;
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending
                if self.limits.timeout.is_zero() && self.limits.busy_timeout.is_zero() =>
            {
                Poll::Pending
            }
            Poll::Pending => {
                self.clock.filled = true;
                let now = Instant::now();
                let began = *self.clock.stall_began.get_or_insert(now);
                let mut stalled = self.clock.stalled + now.saturating_duration_since(began);
                if self.look_at_window(now, stalled) {
                    stalled = Duration::ZERO;
                }
                let watch = self.limits.watches_load();
                let busy = watch && self.shared.pool_busy();
                let allowance = self.allowance(busy);
                if let Some(allowance) = allowance.filter(|a| stalled >= *a) {
                    self.clock.stall_began = None;
                    let limit = match busy {
                        true => format!(
                            "while requests wait for a worker, the limit is --busy-socket-timeout {}s",
                            self.limits.busy_timeout.as_secs_f64()
                        ),
                        false => format!(
                            "the limit is --socket-timeout {}s",
                            self.limits.timeout.as_secs_f64()
                        ),
                    };
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "the client read the response too slowly ({} bytes in {:.1}s of waiting, {:.1}s allowed; {limit} plus 1s per {} bytes): connection dropped",
                            self.credited(),
                            stalled.as_secs_f64(),
                            allowance.as_secs_f64(),
                            self.limits.min_rate
                        ),
                    )));
                }
                // Not past it yet: come back at its end, or sooner to look at the pool again.
                let mut left = self
                    .limits
                    .next_look(allowance, stalled, busy)
                    .unwrap_or(NEVER);
                if self.peer.is_some() && self.clock.closed_edge.is_none() {
                    // Until the peer's window is seen closed, look at it each second.
                    left = left.min(PRESSURE_CHECK);
                }
                let deadline = now.checked_add(left).unwrap_or_else(|| now + NEVER);
                let deadline = tokio::time::Instant::from_std(deadline);
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                timer.as_mut().reset(deadline);
                if timer.as_mut().poll(cx).is_ready() {
                    // Already due: come back at once to fail the write.
                    cx.waker().wake_by_ref();
                }
                Poll::Pending
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ConnIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ConnIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.begin_write();
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.after_write(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.begin_write();
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.after_write(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.shared
            .write_waiting
            .store(result.is_pending(), Ordering::Relaxed);
        if let Poll::Ready(Ok(())) = result {
            self.shared.flushed();
        }
        result
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn limits(timeout_ms: u64, min_rate: u64) -> WriteLimits {
        WriteLimits {
            timeout: Duration::from_millis(timeout_ms),
            min_rate,
            busy_timeout: Duration::ZERO,
        }
    }

    /// Reads `total` bytes of `client`, at most `chunk` every 100 ms; how many it read.
    fn read_slowly(
        mut client: tokio::io::DuplexStream,
        chunk: usize,
        total: usize,
    ) -> tokio::task::JoinHandle<usize> {
        tokio::spawn(async move {
            let (mut read, mut buf) = (0, vec![0u8; chunk]);
            while read < total {
                tokio::time::sleep(Duration::from_millis(100)).await;
                read += client.read(&mut buf).await.unwrap();
            }
            read
        })
    }

    /// A pool of one worker and a queue of one, and its slots (take one: the worker runs a
    /// request; take both: a request waits).
    fn pool() -> (Waiting, Arc<tokio::sync::Semaphore>) {
        let slots = Arc::new(tokio::sync::Semaphore::new(2));
        (Waiting::new(slots.clone(), 1), slots)
    }

    /// A connection under `limits` with a 200 ms busy timeout, whose response comes from
    /// `pool`, and the client's end of it (a 1 KiB pipe).
    fn busy_connection(
        limits: WriteLimits,
        pool: Waiting,
    ) -> (ConnIo<tokio::io::DuplexStream>, tokio::io::DuplexStream) {
        let (server, client) = tokio::io::duplex(1024);
        let shared = Arc::new(ConnShared::default());
        shared.serving_from(pool);
        shared.response_started();
        let limits = WriteLimits {
            busy_timeout: Duration::from_millis(200),
            ..limits
        };
        (ConnIo::new(server, shared, limits), client)
    }

    /// Writes until the write fails: the error and how long it took.
    async fn write_until_dropped<S: AsyncWrite + Unpin>(
        io: &mut ConnIo<S>,
    ) -> (io::Error, Duration) {
        let began = Instant::now();
        loop {
            if let Err(e) = io.write(&[b'x'; 512]).await {
                return (e, began.elapsed());
            }
        }
    }

    #[tokio::test]
    async fn while_requests_wait_a_client_that_never_reads_is_dropped_after_the_busy_timeout() {
        let (waiting, slots) = pool();
        let _taken = slots.try_acquire_many(2).unwrap();
        let (mut io, _client) = busy_connection(limits(60_000, 500), waiting);
        let (err, waited) = write_until_dropped(&mut io).await;
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(
            err.to_string().contains("--busy-socket-timeout 0.2s"),
            "{err}"
        );
        assert!(
            waited >= Duration::from_millis(200) && waited < Duration::from_secs(3),
            "{waited:?}"
        );
    }

    #[tokio::test]
    async fn a_stall_gets_the_busy_timeout_only_once_requests_wait() {
        let (waiting, slots) = pool();
        // The one worker runs this response's request; nobody waits.
        let running = slots.try_acquire().unwrap();
        let (mut io, _client) = busy_connection(limits(60_000, 500), waiting);
        let unloaded =
            tokio::time::timeout(Duration::from_millis(1500), write_until_dropped(&mut io));
        assert!(unloaded.await.is_err(), "dropped while no request waited");
        // A request comes and waits: the stall, already past 200 ms, ends at the next look.
        let _waiter = slots.try_acquire().unwrap();
        let (err, waited) = write_until_dropped(&mut io).await;
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(
            waited < PRESSURE_CHECK + Duration::from_secs(2),
            "{waited:?}"
        );
        drop(running);
    }

    #[tokio::test]
    async fn while_requests_wait_a_client_reading_at_the_minimum_rate_keeps_its_connection() {
        let (waiting, slots) = pool();
        let _taken = slots.try_acquire_many(2).unwrap();
        let (mut io, client) = busy_connection(limits(60_000, 1_000), waiting);
        // 512 bytes every 100 ms: 5,120 B/s, above the 1,000 B/s minimum, from the start.
        let reader = read_slowly(client, 512, 16 * 1024);
        io.write_all(&[b'y'; 16 * 1024]).await.unwrap();
        assert_eq!(reader.await.unwrap(), 16 * 1024);
    }

    #[tokio::test]
    async fn a_client_that_never_reads_is_dropped_after_the_timeout() {
        let (server, _client) = tokio::io::duplex(1024);
        let shared = Arc::new(ConnShared::default());
        let mut io = ConnIo::new(server, shared.clone(), limits(200, 500));
        shared.response_started();
        let began = Instant::now();
        let mut sent = 0usize;
        let err = loop {
            match io.write(&[b'x'; 512]).await {
                Ok(n) => sent += n,
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(sent <= 1024, "{sent}");
        let waited = began.elapsed();
        // 200 ms: the bytes the pipe took before it filled earn nothing.
        assert!(
            waited >= Duration::from_millis(200) && waited < Duration::from_secs(2),
            "{waited:?}"
        );
    }

    #[tokio::test]
    async fn a_client_reading_at_the_minimum_rate_keeps_its_connection() {
        let (server, client) = tokio::io::duplex(256);
        let shared = Arc::new(ConnShared::default());
        let mut io = ConnIo::new(server, shared.clone(), limits(300, 1_000));
        shared.response_started();
        // The client reads 256 bytes every 100 ms: 2,560 B/s, above the 1,000 B/s minimum.
        let reader = read_slowly(client, 256, 8 * 1024);
        io.write_all(&[b'y'; 8 * 1024]).await.unwrap();
        assert_eq!(reader.await.unwrap(), 8 * 1024);
    }

    #[tokio::test]
    async fn a_new_response_starts_a_new_allowance() {
        let (server, mut client) = tokio::io::duplex(64);
        let shared = Arc::new(ConnShared::default());
        let mut io = ConnIo::new(server, shared.clone(), limits(150, 0));
        // Response 1: the pipe fills, the client drains it within the timeout.
        shared.response_started();
        io.write_all(&[1u8; 64]).await.unwrap();
        let write = tokio::spawn(async move { io.write_all(&[2u8; 64]).await.map(|()| io) });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut buf = [0u8; 128];
        client.read_exact(&mut buf[..64]).await.unwrap();
        let mut io = write.await.unwrap().unwrap();
        client.read_exact(&mut buf[..64]).await.unwrap();
        // Response 2: 100 ms of stall again is fine, because the clock started over.
        shared.response_started();
        io.write_all(&[3u8; 64]).await.unwrap();
        let write = tokio::spawn(async move { io.write_all(&[4u8; 64]).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        client.read_exact(&mut buf[..64]).await.unwrap();
        write.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn wait_flush_is_woken_by_the_next_flush() {
        let (server, _client) = tokio::io::duplex(64);
        let shared = Arc::new(ConnShared::default());
        let mut io = ConnIo::new(server, shared.clone(), limits(1_000, 0));
        let waiter = {
            let shared = shared.clone();
            tokio::spawn(std::future::poll_fn(move |cx| shared.wait_flush(cx)))
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        io.flush().await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn without_a_rate_the_timeout_applies_to_each_stall_alone() {
        let (server, mut client) = tokio::io::duplex(64);
        let shared = Arc::new(ConnShared::default());
        let mut io = ConnIo::new(server, shared.clone(), limits(200, 0));
        shared.response_started();
        // Five stalls of 120 ms each: 600 ms in all, each under the 200 ms timeout.
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            for _ in 0..6 {
                tokio::time::sleep(Duration::from_millis(120)).await;
                client.read_exact(&mut buf).await.unwrap();
            }
        });
        io.write_all(&[7u8; 6 * 64]).await.unwrap();
        reader.await.unwrap();
    }
}
