//! The front's side on a tokio runtime: [`AsyncDaemonClient::dispatch`] runs one request in a
//! daemon process group as [`DaemonClient::dispatch`](crate::DaemonClient::dispatch) does, with
//! the same protocol, retries, timeouts and outcomes, but as a future: the request waits on
//! the daemon's socket without holding a thread, and the daemon's answer wakes the runtime's
//! I/O thread directly instead of a thread of its own that then hands each part over.
//!
//! What each frame means is decided by the same code as the blocking client's
//! (`client::Exchange`), and frames are parsed out of the same read-ahead (`frames::Frames`,
//! which keeps the file descriptors a FILE frame brings); only the waiting differs.

use std::collections::HashMap;
use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use tokio::io::Interest;
use tokio::net::UnixStream;
use wsgi_interp::{Outcome, RequestBody};

use crate::client::{
    Attempt, DispatchError, Endpoint, Exchange, Idle, Retries, Step, body_frame, inline_request,
    top_up,
};
use crate::frames::{Frames, Parsed, retrying_interrupts};
use crate::protocol::{self, CHUNK, ProtocolError, RequestRef};
use crate::shared_buffer::{BufferChunk, FrontBuffer};

/// A request body the async client can read. Its [`RequestBody::read`] is called only while
/// [`RequestBody::held`] says bytes are held, so that it never blocks; the wait for more is
/// [`AsyncRequestBody::read_async`].
pub trait AsyncRequestBody: RequestBody + Send {
    /// Reads into `buf`, waiting for the body's next bytes when none are held; 0 at its end.
    fn read_async(&mut self, buf: &mut [u8]) -> impl Future<Output = io::Result<usize>> + Send;
}

/// Where the async client sends the response: the counterpart of
/// [`ResponseSink`](wsgi_interp::ResponseSink) whose writes wait without blocking a thread.
pub trait AsyncResponseSink: Send {
    /// The response starts (it must not block).
    fn begin(
        &mut self,
        status: u16,
        reason: &str,
        headers: Vec<(String, Vec<u8>)>,
    ) -> io::Result<()>;

    /// A chunk of the body, owned; waits while the client is behind. `Err`: the client left.
    fn send_chunk(&mut self, chunk: Vec<u8>) -> impl Future<Output = io::Result<()>> + Send;

    /// `len` bytes of `file` from `offset`, which the daemon process handed over.
    fn send_file(
        &mut self,
        file: std::fs::File,
        offset: u64,
        len: u64,
    ) -> impl Future<Output = io::Result<()>> + Send;

    /// A chunk of the body in the daemon connection's response buffer; waits while the
    /// client is behind. Its slot is free again once the chunk is dropped, so a sink that
    /// keeps it only until its bytes are written lets the daemon use the slot again soon.
    /// By default copied out and sent as [`AsyncResponseSink::send_chunk`] sends a chunk.
    fn send_shared(&mut self, chunk: BufferChunk) -> impl Future<Output = io::Result<()>> + Send {
        async move {
            let bytes = chunk.as_ref().to_vec();
            drop(chunk);
            self.send_chunk(bytes).await
        }
    }
}

/// A connection to a daemon process, with its read-ahead and the response buffer the daemon
/// handed over on it, if any (kept with it in the pool).
struct Conn {
    stream: UnixStream,
    frames: Frames,
    shared: Option<FrontBuffer>,
}

struct AsyncGroup {
    endpoint: Endpoint,
    idle: Idle<Conn>,
}

/// Sends requests to daemon process groups from tasks of a tokio runtime (whose reactor the
/// connections are registered with). Cheap to share between tasks.
pub struct AsyncDaemonClient {
    groups: HashMap<String, AsyncGroup>,
}

impl AsyncDaemonClient {
    /// A client for these groups.
    pub fn new(endpoints: Vec<Endpoint>) -> Self {
        AsyncDaemonClient {
            groups: endpoints
                .into_iter()
                .map(|endpoint| {
                    let group = AsyncGroup {
                        endpoint,
                        idle: Idle::default(),
                    };
                    (group.endpoint.group.clone(), group)
                })
                .collect(),
        }
    }

    /// The groups this client knows.
    pub fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.groups.values().map(|g| &g.endpoint)
    }

    /// Runs `request` in daemon process group `group`: sends `body` to it as the app reads
    /// it and the response to `sink`. As [`DaemonClient::dispatch`](crate::DaemonClient::dispatch):
    /// `Ok` outcomes are handled as in embedded mode, and a daemon that dies before the
    /// response headers gives [`DispatchError::DaemonGone`] (502).
    pub async fn dispatch<B: AsyncRequestBody, S: AsyncResponseSink>(
        &self,
        group: &str,
        request: RequestRef<'_>,
        body: &mut B,
        sink: &mut S,
    ) -> Result<Outcome, DispatchError> {
        let g = self
            .groups
            .get(group)
            .ok_or_else(|| DispatchError::UnknownGroup(group.to_string()))?;
        // Large response chunks may come in the connection's response buffer.
        let request = RequestRef {
            shared_buffers: true,
            ..request
        };
        if let Some((head, slices)) = inline_request(request, body) {
            let frame = [&head[..]].into_iter().chain(slices).collect::<Vec<_>>();
            return g.run(&frame, None::<&mut B>, sink).await;
        }
        let frame = protocol::encode_request(request, None, Vec::with_capacity(1024))
            .expect("only reading a body fails");
        g.run(&[&frame], Some(body), sink).await
    }
}

impl AsyncGroup {
    /// Runs the request whose REQUEST frame is `frame` (its parts, in order) on a pooled or new
    /// connection, again on fresh ones while the daemon took nothing. `body` None: the frame
    /// holds it.
    async fn run<B: AsyncRequestBody, S: AsyncResponseSink>(
        &self,
        frame: &[&[u8]],
        mut body: Option<&mut B>,
        sink: &mut S,
    ) -> Result<Outcome, DispatchError> {
        let mut retries = Retries::new(&self.endpoint);
        loop {
            let conn = match self.idle.take(&retries) {
                Some(conn) => conn,
                None => self.connect().await?,
            };
            match self.attempt(conn, frame, body.as_deref_mut(), sink).await {
                Attempt::Done(r) => return r,
                Attempt::Retry { rejected } => retries.another(rejected)?,
            }
        }
    }

    /// Connects, retrying refusals ([`Endpoint::connect_pause`]).
    async fn connect(&self) -> Result<Conn, DispatchError> {
        let start = Instant::now();
        loop {
            match UnixStream::connect(&self.endpoint.socket).await {
                Ok(stream) => {
                    self.endpoint.prepare(&stream);
                    return Ok(Conn {
                        stream,
                        frames: Frames::new(),
                        shared: None,
                    });
                }
                Err(e) => {
                    tokio::time::sleep(self.endpoint.connect_pause(start.elapsed(), e)?).await
                }
            }
        }
    }

    /// Runs the request on `conn`.
    async fn attempt<B: AsyncRequestBody, S: AsyncResponseSink>(
        &self,
        mut conn: Conn,
        frame: &[&[u8]],
        mut body: Option<&mut B>,
        sink: &mut S,
    ) -> Attempt {
        // A pooled connection has nothing to read until the daemon answers this request, but
        // the runtime may still take it for readable from the last answer's bytes (it learns
        // otherwise from a read that finds nothing: a system call). Forgetting that before the
        // request goes out loses nothing: the answer's arrival comes after it, and tells the
        // runtime again. The first read then waits for the runtime to see the answer, which
        // it does after the other tasks ready to run: answers that come together are sent on
        // together, not each as it comes while the daemon and the front take turns.
        let _ = conn.stream.try_io(Interest::READABLE, || {
            Err::<(), _>(io::ErrorKind::WouldBlock.into())
        });
        let mut parts: Vec<IoSlice<'_>> = frame.iter().map(|part| IoSlice::new(part)).collect();
        if write_all(&conn.stream, &mut parts).await.is_err() {
            // Nothing of the request was taken: another connection may carry it (see the
            // blocking client).
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
            let frame = conn
                .frames
                .next(&conn.stream, read.timeout())
                .await
                .map(|kind| kind.map(|kind| (kind, conn.frames.payload())));
            match exchange.on_frame(frame, read) {
                Step::SendBody(want) => {
                    if chunk.is_empty() {
                        chunk = vec![0u8; CHUNK];
                    }
                    let got = match body.as_deref_mut() {
                        Some(body) => read_available(body, &mut chunk[..want]).await,
                        None => Ok(0),
                    };
                    let (kind, payload) = body_frame(got, &chunk);
                    let header = protocol::frame_header(kind, payload.len());
                    let mut parts = [IoSlice::new(&header), IoSlice::new(&payload)];
                    if let Err(e) = write_all(&conn.stream, &mut parts).await {
                        return exchange.broken(format!("sending the body failed: {e}"));
                    }
                }
                Step::Start(s) => {
                    if let Err(error) = sink.begin(s.status, &s.reason, s.headers) {
                        return Attempt::Done(Ok(Outcome::ClientGone { error }));
                    }
                }
                Step::Data(_) => {
                    // A chunk the read-ahead did not hold whole came in a buffer of its own,
                    // handed over as read; a smaller one is copied out.
                    if let Err(error) = sink.send_chunk(conn.frames.take_payload()).await {
                        return Attempt::Done(Ok(Outcome::ClientGone { error }));
                    }
                }
                Step::SharedBuffer => {
                    let Some(fd) = conn.frames.fds.pop_front() else {
                        return exchange.bad_shared(
                            0,
                            "a SHARED_BUFFER frame came without its descriptor".to_string(),
                        );
                    };
                    match FrontBuffer::open(fd) {
                        Ok(buffer) => conn.shared = Some(buffer),
                        Err(e) => return exchange.bad_shared(0, e.to_string()),
                    }
                }
                Step::SharedData { slot, len } => {
                    let chunk = match &conn.shared {
                        Some(buffer) => buffer.take(slot, len).map_err(|e| e.to_string()),
                        None => Err("a SHARED_DATA frame came before any SHARED_BUFFER".into()),
                    };
                    let chunk = match chunk {
                        Ok(chunk) => chunk,
                        Err(why) => return exchange.bad_shared(len, why),
                    };
                    if let Err(error) = sink.send_shared(chunk).await {
                        return Attempt::Done(Ok(Outcome::ClientGone { error }));
                    }
                }
                Step::File { offset, len } => {
                    let Some(fd) = conn.frames.fds.pop_front() else {
                        return exchange.missing_fd(len);
                    };
                    let file = std::fs::File::from(fd);
                    if let Err(error) = sink.send_file(file, offset, len).await {
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

/// Reads into `buf` what the first read gives (waiting for it), then whatever more `body`
/// holds without waiting (as the blocking client does).
async fn read_available<B: AsyncRequestBody>(body: &mut B, buf: &mut [u8]) -> io::Result<usize> {
    let n = body.read_async(buf).await?;
    top_up(body, buf, n)
}

/// Writes all of `parts` on `conn`.
async fn write_all(conn: &UnixStream, mut parts: &mut [IoSlice<'_>]) -> io::Result<()> {
    while !parts.is_empty() {
        let n = conn
            .async_io(Interest::WRITABLE, || {
                retrying_interrupts(|| conn.try_write_vectored(parts))
            })
            .await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut parts, n);
    }
    Ok(())
}

/// Waits until `conn` is readable and reads with `read` (a non-blocking system call on it),
/// for at most `limit`: then `TimedOut`.
async fn read_with<T>(
    conn: &UnixStream,
    limit: Option<Duration>,
    mut read: impl FnMut() -> io::Result<T>,
) -> io::Result<T> {
    let io = conn.async_io(Interest::READABLE, || retrying_interrupts(&mut read));
    match limit {
        None => io.await,
        Some(limit) => tokio::time::timeout(limit, io)
            .await
            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into())),
    }
}

impl Frames {
    /// The next frame of `conn`, each receive waiting at most `limit` for its bytes; `None`
    /// when the stream ends cleanly between frames.
    async fn next(
        &mut self,
        conn: &UnixStream,
        limit: Option<Duration>,
    ) -> Result<Option<u8>, ProtocolError> {
        let fd = conn.as_raw_fd();
        loop {
            match self.parse()? {
                Parsed::Frame(kind) => return Ok(Some(kind)),
                Parsed::End => return Ok(None),
                Parsed::More => {
                    read_with(conn, limit, || self.receive(fd)).await?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{
        End, FrameReader, READ_AHEAD, encode_end, encode_start, kind, write_raw,
    };
    use std::io::{BufReader, Write};
    use std::os::unix::net::{UnixListener, UnixStream as StdStream};
    use wsgi_interp::{AppCall, RequestHead, ScriptSpec};

    /// A body held whole (or none).
    struct Held(io::Cursor<Vec<u8>>);

    impl RequestBody for Held {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            io::Read::read(&mut self.0, buf)
        }

        fn held(&self) -> usize {
            self.0.get_ref().len() - self.0.position() as usize
        }
    }

    impl AsyncRequestBody for Held {
        async fn read_async(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.read(buf)
        }
    }

    /// A sink that keeps what it is given.
    #[derive(Default)]
    struct Kept {
        status: Option<u16>,
        body: Vec<u8>,
    }

    impl AsyncResponseSink for Kept {
        fn begin(&mut self, status: u16, _: &str, _: Vec<(String, Vec<u8>)>) -> io::Result<()> {
            self.status = Some(status);
            Ok(())
        }

        async fn send_chunk(&mut self, chunk: Vec<u8>) -> io::Result<()> {
            self.body.extend_from_slice(&chunk);
            Ok(())
        }

        async fn send_file(
            &mut self,
            file: std::fs::File,
            offset: u64,
            len: u64,
        ) -> io::Result<()> {
            let mut bytes = vec![0u8; len as usize];
            std::os::unix::fs::FileExt::read_exact_at(&file, &mut bytes, offset)?;
            self.body.extend_from_slice(&bytes);
            Ok(())
        }
    }

    /// A group `g` played by the test, and a client of it whose reads wait at most 5 s.
    fn fake_group() -> (tempfile::TempDir, UnixListener, AsyncDaemonClient) {
        let (dir, listener, endpoint) = crate::client::tests::fake_endpoint();
        (dir, listener, AsyncDaemonClient::new(vec![endpoint]))
    }

    /// Sends a GET through `client`: the outcome (or the error's status), and the sink.
    async fn get(client: &AsyncDaemonClient) -> (Result<Outcome, u16>, Kept) {
        let app = AppCall {
            script: ScriptSpec::new("/srv/app.wsgi"),
            application_group: String::new(),
            pass_authorization: false,
        };
        let head = RequestHead::default();
        let mut sink = Kept::default();
        let mut body = Held(io::Cursor::new(Vec::new()));
        let request = RequestRef::new(&app, &head);
        let outcome = client.dispatch("g", request, &mut body, &mut sink).await;
        (outcome.map_err(|e| e.status()), sink)
    }

    /// Sends a POST of `body` through `client`: the status (or the error's) and the body.
    async fn post(client: &AsyncDaemonClient, body: Vec<u8>) -> (u16, Vec<u8>) {
        let app = AppCall {
            script: ScriptSpec::new("/srv/app.wsgi"),
            application_group: String::new(),
            pass_authorization: false,
        };
        let head = RequestHead {
            method: "POST".into(),
            ..Default::default()
        };
        let mut sink = Kept::default();
        let request = RequestRef::new(&app, &head);
        let mut body = Held(io::Cursor::new(body));
        match client.dispatch("g", request, &mut body, &mut sink).await {
            Ok(_) => (sink.status.expect("a status"), sink.body),
            Err(e) => (e.status(), sink.body),
        }
    }

    /// Reads the next frame of `conn` (as a daemon does): its kind and payload.
    fn frame(conn: &StdStream) -> (u8, Vec<u8>) {
        let mut frames = FrameReader::new(BufReader::with_capacity(1, conn));
        let (kind, payload) = frames.next_frame().unwrap().expect("a frame");
        (kind, payload.to_vec())
    }

    fn complete(body_bytes: u64) -> Vec<u8> {
        encode_end(&End::Ran(Outcome::Complete {
            status: 200,
            body_bytes,
        }))
    }

    /// A body too large to ride in the request is asked for and sent; a response in small
    /// frames, a payload larger than the read-ahead and a file handed over with its
    /// descriptor all arrive whole and in order; the connection is pooled at the end.
    #[tokio::test]
    async fn a_request_body_and_every_kind_of_response_part_cross() {
        let (_dir, listener, client) = fake_group();
        let body: Vec<u8> = (0..protocol::INLINE_BODY as u32 + 10)
            .map(|i| (i % 253) as u8)
            .collect();
        let expected_body = body.clone();
        let big: Vec<u8> = (0..3 * READ_AHEAD as u32)
            .map(|i| (i % 241) as u8)
            .collect();
        let daemon_big = big.clone();
        let daemon = std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            assert_eq!(frame(&conn).0, kind::REQUEST);
            let mut received = Vec::new();
            loop {
                (&conn)
                    .write_all(&protocol::encode_body_wanted(CHUNK as u32))
                    .unwrap();
                match frame(&conn) {
                    (kind::BODY, part) => received.extend(part),
                    (kind::BODY_END, _) => break,
                    other => panic!("unexpected frame {other:?}"),
                }
            }
            let mut out = &conn;
            out.write_all(&encode_start(200, "OK", &[])).unwrap();
            write_raw(&mut out, kind::DATA, b"small ").unwrap();
            write_raw(&mut out, kind::DATA, &daemon_big).unwrap();
            let mut file = tempfile::tempfile().unwrap();
            file.write_all(b"..file..").unwrap();
            let frame = protocol::encode_file(2, 4);
            crate::fd_passing::send_with_fd(&conn, &frame, file.as_raw_fd()).unwrap();
            out.write_all(&complete(0)).unwrap();
            (received, conn)
        });
        let (status, got) = post(&client, body).await;
        let (received, _conn) = daemon.join().unwrap();
        assert_eq!(status, 200);
        assert!(received == expected_body, "the request body changed");
        let mut want = b"small ".to_vec();
        want.extend(&big);
        want.extend(b"file");
        assert!(got == want, "the response body changed");
        assert_eq!(client.groups["g"].idle.lock().len(), 1, "pooled");
    }

    /// Plays a daemon that hands its response buffer over: reads the request (which says the
    /// front takes buffers), then sends START, the buffer, and `parts` (slot chunks and DATA
    /// frames, in order; a slot chunk goes as DATA while every slot is held), then END. The
    /// buffer, for a look at its slots afterwards.
    fn answer_in_slots(
        listener: UnixListener,
        parts: Vec<Result<Vec<u8>, Vec<u8>>>,
    ) -> std::thread::JoinHandle<(crate::shared_buffer::ResponseBuffer, StdStream)> {
        std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            let (k, payload) = frame(&conn);
            assert_eq!(k, kind::REQUEST);
            let (request, _) = protocol::decode_request(&payload).unwrap();
            assert!(request.shared_buffers, "the async client takes buffers");
            let mut buffer = crate::shared_buffer::ResponseBuffer::create().unwrap();
            let mut out = &conn;
            out.write_all(&encode_start(200, "OK", &[])).unwrap();
            let handed = protocol::frame_header(kind::SHARED_BUFFER, 0);
            crate::fd_passing::send_with_fd(&conn, &handed, buffer.fd().as_raw_fd()).unwrap();
            for part in parts {
                match part {
                    // As a daemon does: through the socket while the front holds every slot.
                    Ok(slotted) => match buffer.fill(&slotted) {
                        Some(slot) => out
                            .write_all(&protocol::encode_shared_data(slot, slotted.len() as u32))
                            .unwrap(),
                        None => write_raw(&mut out, kind::DATA, &slotted).unwrap(),
                    },
                    Err(data) => write_raw(&mut out, kind::DATA, &data).unwrap(),
                }
            }
            out.write_all(&complete(0)).unwrap();
            (buffer, conn)
        })
    }

    /// Chunks the daemon put in its response buffer arrive in order with those it sent
    /// through the socket, and their slots are free again once sent.
    #[tokio::test]
    async fn chunks_in_the_response_buffer_cross_in_order_with_the_others() {
        let (_dir, listener, client) = fake_group();
        let part = |i: u8| vec![i; 20_000 + usize::from(i)];
        let parts = (0..20u8)
            .map(|i| {
                if i % 3 == 2 {
                    Err(part(i))
                } else {
                    Ok(part(i))
                }
            })
            .collect();
        let daemon = answer_in_slots(listener, parts);
        let (outcome, sink) = get(&client).await;
        let (mut buffer, _conn) = daemon.join().unwrap();
        assert!(outcome.is_ok());
        assert_eq!(sink.status, Some(200));
        let want: Vec<u8> = (0..20u8).flat_map(part).collect();
        assert!(sink.body == want, "the response body changed");
        for _ in 0..crate::shared_buffer::SLOTS {
            assert!(buffer.fill(b"again").is_some(), "every slot was given back");
        }
        let conn = client.groups["g"].idle.lock().pop().expect("pooled");
        assert!(
            conn.shared.is_some(),
            "the buffer stays with its connection"
        );
    }

    /// A daemon's SHARED_DATA naming bytes outside its buffer, or coming before any buffer,
    /// and a buffer that is not a sealed memfd: 502, nothing sent, the connection dropped.
    #[tokio::test]
    async fn a_response_buffer_the_front_cannot_trust_is_a_bad_gateway() {
        let cases: [fn(&StdStream); 3] = [
            |conn| {
                let buffer = crate::shared_buffer::ResponseBuffer::create().unwrap();
                let handed = protocol::frame_header(kind::SHARED_BUFFER, 0);
                crate::fd_passing::send_with_fd(conn, &handed, buffer.fd().as_raw_fd()).unwrap();
                let slots = crate::shared_buffer::SLOTS as u32;
                (&mut &*conn)
                    .write_all(&protocol::encode_shared_data(slots, 1))
                    .unwrap();
            },
            |conn| {
                (&mut &*conn)
                    .write_all(&protocol::encode_shared_data(0, 1))
                    .unwrap();
            },
            |conn| {
                let file = tempfile::tempfile().unwrap();
                file.set_len(crate::shared_buffer::BUFFER_LEN as u64)
                    .unwrap();
                let handed = protocol::frame_header(kind::SHARED_BUFFER, 0);
                crate::fd_passing::send_with_fd(conn, &handed, file.as_raw_fd()).unwrap();
                (&mut &*conn)
                    .write_all(&protocol::encode_shared_data(0, 1))
                    .unwrap();
            },
        ];
        for (i, case) in cases.into_iter().enumerate() {
            let (_dir, listener, client) = fake_group();
            let daemon = std::thread::spawn(move || {
                let (conn, _) = listener.accept().unwrap();
                assert_eq!(frame(&conn).0, kind::REQUEST);
                case(&conn);
                conn
            });
            let (outcome, sink) = get(&client).await;
            let _conn = daemon.join().unwrap();
            assert_eq!(outcome.map(|_| 200), Err(502), "case {i}");
            assert!(sink.body.is_empty(), "case {i}");
            assert!(client.groups["g"].idle.lock().is_empty(), "case {i}");
        }
    }

    /// As the blocking client: a pooled connection its daemon closes with the next request
    /// unread is retried on a fresh one; a request the daemon read before going away is not.
    #[tokio::test]
    async fn only_a_request_the_daemon_left_unread_is_retried() {
        let (_dir, listener, client) = fake_group();
        let answer = |conn: &StdStream| {
            assert_eq!(frame(conn).0, kind::REQUEST);
            let mut out = conn;
            out.write_all(&encode_start(200, "OK", &[])).unwrap();
            out.write_all(&complete(0)).unwrap();
        };
        let daemon = std::thread::spawn(move || {
            let (first, _) = listener.accept().unwrap();
            answer(&first);
            let mut fds = [nix::poll::PollFd::new(
                std::os::fd::AsFd::as_fd(&first),
                nix::poll::PollFlags::POLLIN,
            )];
            let ready = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(5000u16));
            assert!(matches!(ready, Ok(1)), "no second request came");
            drop(first); // unread: the front's end is reset
            let (second, _) = listener.accept().unwrap();
            answer(&second);
            assert_eq!(frame(&second).0, kind::REQUEST);
            drop(second); // read, then gone
            listener.set_nonblocking(true).unwrap();
            listener
        });
        assert_eq!(post(&client, Vec::new()).await.0, 200, "the first request");
        assert_eq!(
            post(&client, Vec::new()).await.0,
            200,
            "retried on a fresh connection"
        );
        assert_eq!(
            post(&client, Vec::new()).await.0,
            502,
            "read, then the daemon went away"
        );
        let listener = tokio::task::spawn_blocking(move || daemon.join().unwrap())
            .await
            .unwrap();
        assert!(
            listener.accept().is_err(),
            "a request the daemon read was sent again"
        );
    }

    /// Frames that arrive in pieces, cut anywhere, with descriptors beside two of them, come
    /// out whole and in order through the async reads too (`frames.rs`' test reads them
    /// blocking), then a clean end.
    #[tokio::test]
    async fn frames_cut_anywhere_come_out_whole() {
        let (a, b) = StdStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        let b = UnixStream::from_std(b).unwrap();
        let (expected, writer) = crate::frames::tests::write_cut_frames(a);
        let mut frames = Frames::new();
        for (i, (want_kind, want)) in expected.iter().enumerate() {
            let limit = Some(Duration::from_secs(5));
            let next = frames.next(&b, limit).await.unwrap();
            let Some(kind) = next else {
                panic!("frame {i}: not a frame");
            };
            let payload = frames.payload();
            assert_eq!(kind, *want_kind, "frame {i}");
            assert!(
                payload == &want[..],
                "frame {i}: a payload of {} bytes changed",
                want.len()
            );
        }
        drop(tokio::task::spawn_blocking(move || writer.join().unwrap()).await);
        crate::frames::tests::check_descriptors(&mut frames.fds);
        assert!(
            matches!(frames.next(&b, None).await, Ok(None)),
            "a clean end"
        );
    }

    /// No response headers within request-timeout: 504, without waiting for the daemon.
    #[tokio::test]
    async fn a_silent_daemon_times_out_at_the_request_timeout() {
        let (_dir, listener, mut client) = fake_group();
        let g = client.groups.get_mut("g").unwrap();
        g.endpoint.options.request_timeout = Duration::from_millis(200);
        let daemon = std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            assert_eq!(frame(&conn).0, kind::REQUEST);
            std::thread::sleep(Duration::from_secs(1));
        });
        let started = Instant::now();
        assert_eq!(post(&client, Vec::new()).await.0, 504);
        assert!(started.elapsed() < Duration::from_millis(900));
        tokio::task::spawn_blocking(move || daemon.join().unwrap())
            .await
            .unwrap();
    }

    /// A payload size well past the read-ahead's.
    const LARGE: usize = 64 * 1024;

    /// Bytes `0..n`, each `i % 251`, from `from`.
    fn pattern(from: usize, n: usize) -> Vec<u8> {
        (from..from + n).map(|i| (i % 251) as u8).collect()
    }

    /// DATA payloads larger than the read-ahead (one of several hundred KiB), sent by the
    /// daemon in pieces with pauses between, arrive whole and in order with the small ones, a
    /// file and the frames around them, and the connection is pooled after.
    #[tokio::test]
    async fn large_payloads_arrive_whole_between_the_other_parts() {
        let (_dir, listener, client) = fake_group();
        let sizes = [3 * LARGE + 100, 10, LARGE / 2 + 1, 1000, LARGE];
        let daemon = std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            assert_eq!(frame(&conn).0, kind::REQUEST);
            let mut wire = encode_start(200, "OK", &[]);
            let mut at = 0;
            for (i, size) in sizes.into_iter().enumerate() {
                wire.extend(protocol::frame_header(kind::DATA, size));
                wire.extend(pattern(at, size));
                at += size;
                if i == 2 {
                    // A FILE frame between large payloads.
                    (&conn).write_all(&wire).unwrap();
                    wire.clear();
                    let mut file = tempfile::tempfile().unwrap();
                    file.write_all(b"..file..").unwrap();
                    let frame = protocol::encode_file(2, 4);
                    crate::fd_passing::send_with_fd(&conn, &frame, file.as_raw_fd()).unwrap();
                }
            }
            wire.extend(complete(at as u64));
            // In pieces that cut headers and payloads anywhere, with pauses.
            for piece in wire.chunks(40_000) {
                (&conn).write_all(piece).unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
            conn
        });
        let (outcome, sink) = get(&client).await;
        let _conn = tokio::task::spawn_blocking(move || daemon.join().unwrap())
            .await
            .unwrap();
        assert!(
            matches!(outcome, Ok(Outcome::Complete { .. })),
            "{outcome:?}"
        );
        let mut want = pattern(0, sizes[..3].iter().sum());
        want.extend(b"file");
        want.extend(pattern(sizes[..3].iter().sum(), sizes[3..].iter().sum()));
        assert_eq!(sink.body.len(), want.len());
        assert!(sink.body == want, "the response body changed");
        assert_eq!(client.groups["g"].idle.lock().len(), 1, "pooled");
    }

    /// A daemon that goes away, or goes silent past socket-timeout, in the middle of a large
    /// payload: the response is aborted (its start was sent on), not pooled.
    #[tokio::test]
    async fn a_payload_cut_short_aborts_the_response() {
        for silent in [false, true] {
            let (_dir, listener, mut client) = fake_group();
            let g = client.groups.get_mut("g").unwrap();
            g.endpoint.options.socket_timeout = Duration::from_millis(300);
            let daemon = std::thread::spawn(move || {
                let (conn, _) = listener.accept().unwrap();
                assert_eq!(frame(&conn).0, kind::REQUEST);
                let mut wire = encode_start(200, "OK", &[]);
                wire.extend(protocol::frame_header(kind::DATA, 2 * LARGE));
                wire.extend(pattern(0, LARGE + 7));
                (&conn).write_all(&wire).unwrap();
                if silent {
                    std::thread::sleep(Duration::from_secs(2));
                }
            });
            let started = Instant::now();
            let (outcome, sink) = get(&client).await;
            assert!(
                matches!(outcome, Ok(Outcome::Aborted { status: 200, .. })),
                "silent {silent}: {outcome:?}"
            );
            assert!(
                started.elapsed() < Duration::from_millis(1500),
                "silent {silent}"
            );
            assert!(
                sink.body == pattern(0, sink.body.len()),
                "what came is right"
            );
            assert!(client.groups["g"].idle.lock().is_empty(), "not pooled");
            tokio::task::spawn_blocking(move || daemon.join().unwrap())
                .await
                .unwrap();
        }
    }
}
