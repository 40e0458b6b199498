//! HTTP/1.1 connections: hyper's server, request after request, with idle keep-alive
//! connections parked.
//!
//! hyper keeps a connection's state for its whole life: an 8 KiB read buffer, a write buffer
//! for response heads, its parser state, the timer of the header timeout. A connection that
//! stays open between requests, as browsers and proxies keep them, would hold all of it
//! while it waits. So a connection on which nothing happened for one to two seconds (no
//! request began or ended, none is in flight, no response bytes wait for room in the socket)
//! is *parked*: hyper's side is taken down (a graceful shutdown of an idle connection, which
//! leaves the socket open) and the socket alone waits for the client's next bytes, which
//! bring up a new hyper connection on the same stream. What the connection shares with its
//! requests ([`ConnShared`]), the head tap and the write limits stay.
//!
//! The header timeout keeps its meaning. hyper counts it from the end of the last response
//! until the next head is complete; a parked connection waits for the client's bytes until
//! that same deadline, and a new head then has the whole timeout (Apache's `KeepAliveTimeout`
//! then `RequestReadTimeout header=`). A client that sent part of a head before the
//! connection was parked gets only what is left of its time.

use std::error::Error as StdError;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::conn::{ConnIo, ConnShared, RequestGuard};
use super::front::stopped;
use super::head::HeadTap;
use super::proxy_protocol::PeekSocket;
use super::sendfile::{SendfileSocket, SendfileStream};

/// How often a connection is looked at for being idle. One found with nothing under way and
/// nothing begun or ended since the last look is parked: after 1 to 2 seconds of quiet.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// A client connection's byte stream that can wait for the client's next bytes without
/// reading them (a parked connection's wait).
pub trait WaitReadable: Sync {
    /// Ready once the client sent something, or closed the connection.
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send;
}

impl<S: SendfileSocket + PeekSocket + Sync> WaitReadable for SendfileStream<S> {
    async fn readable(&self) -> io::Result<()> {
        self.get_ref().read_ready().await.map(drop)
    }
}

impl WaitReadable for tokio_rustls::server::TlsStream<TcpStream> {
    async fn readable(&self) -> io::Result<()> {
        // Between requests rustls holds no plaintext: hyper read until the socket had no
        // more, so new bytes can only come from the socket.
        self.get_ref().0.ready(Interest::READABLE).await.map(drop)
    }
}

/// The stream hyper serves: the head tap over the write limits over the socket.
type Stream<S> = HeadTap<ConnIo<S>>;

/// Why serving a connection ended in error.
#[derive(Debug)]
pub enum ConnError {
    /// hyper's error: the client's bytes were refused, its head took too long, or the
    /// connection failed.
    Hyper(hyper::Error),
    /// A head begun before the connection was parked was not complete within the header
    /// timeout (what hyper's own timeout reports otherwise).
    HeadTimeout,
}

/// How one hyper connection on the stream ended.
enum Ended<S, Svc> {
    /// The client closed, asked to close, or the front is stopping: nothing more to serve.
    Closed(TokioIo<Stream<S>>),
    /// Parked while idle: the stream, what hyper had read of it and not used, and the service
    /// to serve the next request with.
    Parked(TokioIo<Stream<S>>, bytes::Bytes, Svc),
    /// The head begun before the connection was parked took too long.
    HeadTimedOut(TokioIo<Stream<S>>),
}

/// Why a hyper connection was asked to finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Finish {
    Park,
    Stop,
    HeadTimeout,
}

/// Serves `stream` as HTTP/1.1 with `service` until the client closes it, parking it while
/// idle (see the module docs). `shared` is what the stream's requests share with it;
/// `header_timeout` is `builder`'s; `stop` turns true when the front's graceful shutdown
/// begins: the request in flight, if any, is finished, then the connection is closed (within
/// a second of it).
pub async fn serve<S, Svc>(
    builder: &http1::Builder,
    stream: Stream<S>,
    shared: Arc<ConnShared>,
    service: Svc,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ConnError>
where
    S: AsyncRead + AsyncWrite + WaitReadable + Unpin + Send + 'static,
    Svc: ConnService,
{
    let mut io = TokioIo::new(stream);
    let mut service = Tracked {
        service,
        shared: shared.clone(),
    };
    let shared = &*shared;
    // The time by which the client's next head must be complete.
    let mut deadline = Instant::now() + header_timeout;
    // Set when a head had begun as the connection was parked: it must still be complete by
    // `deadline`, whatever the new hyper connection's own timeout.
    let mut head_due = None;
    loop {
        let conn = builder.serve_connection(io, service);
        let clock = HeadClock {
            deadline: &mut deadline,
            timeout: header_timeout,
            due: head_due.take(),
        };
        let ended = run(conn, shared, clock, &stop)
            .await
            .map_err(ConnError::Hyper)?;
        let (mut tap, read_buf, svc) = match ended {
            Ended::Closed(io) => {
                close(io.into_inner(), header_timeout).await;
                return Ok(());
            }
            Ended::HeadTimedOut(io) => {
                close(io.into_inner(), header_timeout).await;
                return Err(ConnError::HeadTimeout);
            }
            Ended::Parked(io, read_buf, svc) => (io.into_inner(), read_buf, svc),
        };
        tap.unread(read_buf);
        service = svc;
        if !tap.between_requests() {
            // Part of a head came: serve it at once, by its deadline.
            tracing::debug!("connection parked in the middle of a head: served again at once");
            head_due = Some(deadline);
            io = TokioIo::new(tap);
            continue;
        }
        // Parked: nothing of hyper's is held while the client is silent.
        tracing::debug!("idle connection parked");
        super::memory::freed_in_bulk();
        let woke = {
            let readable = tap.get_ref().get_ref().readable();
            tokio::select! {
                woke = tokio::time::timeout_at(deadline, readable) => woke,
                () = stopped(&mut stop) => {
                    close(tap, header_timeout).await;
                    return Ok(());
                }
            }
        };
        match woke {
            Ok(Ok(())) => {
                deadline = Instant::now() + header_timeout;
                io = TokioIo::new(tap);
            }
            Ok(Err(e)) => {
                tracing::debug!("connection ended while idle: {e}");
                return Ok(());
            }
            Err(_) => {
                tracing::debug!("idle connection closed: no request within the header timeout");
                close(tap, header_timeout).await;
                return Ok(());
            }
        }
    }
}

/// Shuts the stream down (TLS: its close_notify), waiting at most `limit` for a client that
/// takes nothing; hyper leaves that to us when asked not to.
async fn close<S: AsyncWrite + Unpin>(mut stream: S, limit: Duration) {
    let _ = tokio::time::timeout(limit, stream.shutdown()).await;
}

/// The header timeout as [`run`] keeps it.
struct HeadClock<'a> {
    /// By when the next head must be complete: moved on whenever a request begins or ends.
    deadline: &'a mut Instant,
    timeout: Duration,
    /// Set when the connection starts in the middle of a head, which must be complete by
    /// then.
    due: Option<Instant>,
}

/// Runs one hyper connection until it ends, or until it has been idle long enough to park
/// (its stream given back), or until the head it started in the middle of is overdue.
///
/// `stop` is looked at with the rest once a second, not at every wake of the task (its watch
/// would cost some 470 instructions a request): while the front drains, every response
/// already closes its connection (`Connection: close`), and a parked connection hears the
/// stop at once.
async fn run<S, Svc>(
    conn: http1::Connection<TokioIo<Stream<S>>, Svc>,
    shared: &ConnShared,
    mut clock: HeadClock<'_>,
    stop: &watch::Receiver<bool>,
) -> Result<Ended<S, Svc>, hyper::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    Svc: ConnService,
{
    // On the heap, and only while it runs: a parked connection's task holds a pointer's room
    // for it, not hyper's whole connection state.
    let mut conn = Box::new(conn);
    let next_check = |due: Option<Instant>| {
        let check = Instant::now() + IDLE_CHECK;
        due.map_or(check, |due| due.min(check))
    };
    let mut check = pin!(tokio::time::sleep_until(next_check(clock.due)));
    let mut seen = shared.request_events();
    let mut finishing = None;
    let done = loop {
        tokio::select! {
            biased;
            done = poll_fn(|cx| conn.poll_without_shutdown(cx)) => break done,
            () = check.as_mut(), if finishing.is_none() => {
                let events = shared.request_events();
                if *stop.borrow() {
                    finishing = Some(Finish::Stop);
                } else if events != seen {
                    // A request began or ended: the head begun before is complete, and the
                    // next head's time starts about now.
                    clock.due = None;
                    *clock.deadline = Instant::now() + clock.timeout;
                } else if clock.due.is_some_and(|due| due <= Instant::now()) {
                    finishing = Some(Finish::HeadTimeout);
                } else if clock.due.is_none() && shared.is_quiet() {
                    finishing = Some(Finish::Park);
                }
                match finishing {
                    // Idle, hyper holds no part of a head (the tap hands it only whole
                    // heads), so it finishes at once and leaves the stream open; busy (a
                    // stop), it finishes the request in flight first.
                    Some(_) => Pin::new(&mut *conn).graceful_shutdown(),
                    None => {
                        seen = events;
                        check.as_mut().reset(next_check(clock.due));
                    }
                }
            }
        }
    };
    done?;
    let parts = (*conn).into_parts();
    Ok(match finishing {
        Some(Finish::Park) => Ended::Parked(parts.io, parts.read_buf, parts.service),
        Some(Finish::HeadTimeout) => Ended::HeadTimedOut(parts.io),
        Some(Finish::Stop) | None => Ended::Closed(parts.io),
    })
}

/// A service hyper's HTTP/1.1 server runs here: it answers with a body hyper can send, and
/// its futures are polled in place.
pub trait ConnService:
    Service<
        Request<Incoming>,
        Response = Response<Self::Body>,
        Error: Into<Box<dyn StdError + Send + Sync>>,
        Future: Unpin,
    > + Unpin
{
    /// The response body.
    type Body: Body<Error: Into<Box<dyn StdError + Send + Sync>>> + Unpin + 'static;
}

impl<T, B> ConnService for T
where
    T: Service<Request<Incoming>, Response = Response<B>> + Unpin,
    T::Error: Into<Box<dyn StdError + Send + Sync>>,
    T::Future: Unpin,
    B: Body<Error: Into<Box<dyn StdError + Send + Sync>>> + Unpin + 'static,
{
    type Body = B;
}

/// A service whose requests are marked in flight on their connection
/// ([`ConnShared::request_begun`]) from the call until hyper lets go of the response body.
pub struct Tracked<Svc> {
    service: Svc,
    shared: Arc<ConnShared>,
}

impl<Svc, B> Service<Request<Incoming>> for Tracked<Svc>
where
    Svc: Service<Request<Incoming>, Response = Response<B>>,
    Svc::Future: Unpin,
{
    type Response = Response<TrackedBody<B>>;
    type Error = Svc::Error;
    type Future = TrackedFuture<Svc::Future>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        TrackedFuture {
            guard: Some(self.shared.request_begun()),
            future: self.service.call(request),
        }
    }
}

/// A [`Tracked`] service's response future: hands its guard to the response body.
pub struct TrackedFuture<F> {
    future: F,
    guard: Option<RequestGuard>,
}

impl<F, B, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response<B>, E>> + Unpin,
{
    type Output = Result<Response<TrackedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let result = ready!(Pin::new(&mut this.future).poll(cx));
        let guard = this.guard.take();
        Poll::Ready(result.map(|response| {
            response.map(|body| TrackedBody {
                body,
                _guard: guard,
            })
        }))
    }
}

/// A response body that marks its request ended when hyper drops it.
pub struct TrackedBody<B> {
    body: B,
    _guard: Option<RequestGuard>,
}

impl<B: Body + Unpin> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
