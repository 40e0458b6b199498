//! `sendfile(2)` under hyper, which owns the socket and writes only bytes it is given.
//!
//! A file to send becomes [`file_bytes`]: `Bytes` whose memory is a read-only mapping of the
//! file's range, registered here while it lives. hyper queues body buffers as they are (the
//! connection is built with `writev(true)`, so it never copies them) and hands them to the
//! connection's [`SendfileStream`] as `IoSlice`s; the stream recognises a slice that lies in a
//! registered mapping and sends that part with `sendfile` from the file instead. The mapping's
//! pages are never read by this process on that path: the kernel copies from the page cache,
//! exactly as with Apache's `EnableSendfile`. Were anything to read the bytes instead, they are
//! still the file's (the mapping makes the fallback correct, not just the fast path).
//!
//! A daemon process's large response chunks come the same way, held in pipes
//! ([`PipeChunk`], moved there from the daemon's socket without a copy): [`pipe_bytes`]
//! gives each a slot of a static, never-written room of zeroes, and the stream that finds a
//! slice of a slot sends the bytes of its pipe instead, with `splice`. Here nothing can make
//! the fallback correct (a pipe's bytes can be read only once), so a sink makes pipe chunks
//! only for a connection whose bytes this stream writes (plain HTTP/1.x, where hyper passes
//! body buffers on unread).

use std::fs::File;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use wsgi_daemon::PipeChunk;
use wsgi_daemon::splice::{MAX_CHUNK, MAX_LIVE};

/// A live mapping: the address range of its bytes, and where they come from.
struct Region {
    id: u64,
    start: usize,
    end: usize,
    file: Arc<File>,
    offset: u64,
    /// Bytes sent from it with `sendfile` so far.
    sent: u64,
}

/// Every live mapping, and how many there are (read without the lock on the hot path: a
/// server sending no file pays one atomic load per write).
static REGIONS: Mutex<Vec<Region>> = Mutex::new(Vec::new());
static LIVE: AtomicUsize = AtomicUsize::new(0);
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// The owner of a mapping: unregisters it before it is unmapped.
struct Mapping {
    id: u64,
    map: memmap2::Mmap,
}

impl AsRef<[u8]> for Mapping {
    fn as_ref(&self) -> &[u8] {
        &self.map
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        let mut regions = REGIONS.lock();
        if let Some(i) = regions.iter().position(|r| r.id == self.id) {
            let region = regions.swap_remove(i);
            LIVE.fetch_sub(1, Ordering::Release);
            drop(regions);
            tracing::debug!(
                "sendfile: sent {} of {} bytes from offset {}",
                region.sent,
                region.end - region.start,
                region.offset
            );
        }
    }
}

/// `len` bytes of the regular file `file` from `offset`, as `Bytes` a [`SendfileStream`] sends
/// with `sendfile`. `len` is not checked against the file's size: when the file is shorter
/// (or shrinks before it is sent) the write fails and hyper closes the connection, since the
/// response can no longer be what its headers said.
pub fn file_bytes(file: File, offset: u64, len: u64) -> io::Result<Bytes> {
    if len == 0 {
        return Ok(Bytes::new());
    }
    let len = usize::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file range too large"))?;
    // SAFETY: the mapping is read-only and private to this process; its bytes are handed only
    // to hyper, which (with writev on) passes them to `SendfileStream` without reading them,
    // and the stream sends them from the file. Nothing here reads the mapped pages, so a file
    // truncated meanwhile (memmap2's caveat: reading past the new end raises SIGBUS) makes
    // `sendfile` return short instead, which ends the connection with an error.
    let map = unsafe {
        memmap2::MmapOptions::new()
            .offset(offset)
            .len(len)
            .map(&file)?
    };
    let start = map.as_ptr() as usize;
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    {
        let mut regions = REGIONS.lock();
        regions.push(Region {
            id,
            start,
            end: start + len,
            file: Arc::new(file),
            offset,
            sent: 0,
        });
        LIVE.fetch_add(1, Ordering::Release);
    }
    Ok(Bytes::from_owner(Mapping { id, map }))
}

/// A part of a live mapping to send: its region's id, the file, and the offset in it.
struct FileRange {
    id: u64,
    file: Arc<File>,
    offset: u64,
}

/// The file range behind `slice`, if it lies in a live mapping.
fn region_of(slice: &[u8]) -> Option<FileRange> {
    let start = slice.as_ptr() as usize;
    let end = start + slice.len();
    let regions = REGIONS.lock();
    regions
        .iter()
        .find(|r| r.start <= start && end <= r.end)
        .map(|r| FileRange {
            id: r.id,
            file: r.file.clone(),
            offset: r.offset + (start - r.start) as u64,
        })
}

/// Counts `n` bytes sent from region `id`.
fn count_sent(id: u64, n: usize) {
    if let Some(r) = REGIONS.lock().iter_mut().find(|r| r.id == id) {
        r.sent += n as u64;
    }
}

/// The room of every pipe chunk's `Bytes`: slot `i` is `MAX_CHUNK` bytes from
/// `i * MAX_CHUNK`, mapped when the first chunk needs it ([`pipe_room`]). Anonymous memory,
/// read-only and never read: its pages are never touched, so it costs address space, not
/// memory. (A `static` array of zeroes would be in the program's file, 32 MiB of it: the
/// compiler puts immutable statics in the read-only data, zeroes and all.)
static PIPE_ROOM: OnceLock<&'static [u8]> = OnceLock::new();

/// [`PIPE_ROOM`], mapped on the first call.
fn pipe_room() -> io::Result<&'static [u8]> {
    if let Some(room) = PIPE_ROOM.get() {
        return Ok(room);
    }
    let map = memmap2::MmapOptions::new()
        .len(MAX_LIVE * MAX_CHUNK)
        .map_anon()?
        .make_read_only()?;
    // A thread that mapped it too drops its own mapping (unmapped) and takes the first one.
    Ok(PIPE_ROOM.get_or_init(move || &**Box::leak(Box::new(map))))
}

/// The chunk whose bytes slot `i` stands for, while its `Bytes` live.
static PIPE_SLOTS: [Mutex<Option<PipeChunk>>; MAX_LIVE] = [const { Mutex::new(None) }; MAX_LIVE];

/// Slots given back, and the first never used.
static FREE_SLOTS: Mutex<(Vec<usize>, usize)> = Mutex::new((Vec::new(), 0));

/// How many slots hold a chunk (read on every write: a server sending no pipe chunk and no
/// file pays two atomic loads, not a look at each buffer).
static PIPES_LIVE: AtomicUsize = AtomicUsize::new(0);

/// The owner of a slot: gives it back (and drops its chunk) when its `Bytes` go.
struct PipeSlot {
    slot: usize,
    /// The slot's room, as long as its chunk.
    room: &'static [u8],
}

impl AsRef<[u8]> for PipeSlot {
    fn as_ref(&self) -> &[u8] {
        self.room
    }
}

impl Drop for PipeSlot {
    fn drop(&mut self) {
        let chunk = PIPE_SLOTS[self.slot].lock().take();
        drop(chunk);
        FREE_SLOTS.lock().0.push(self.slot);
        PIPES_LIVE.fetch_sub(1, Ordering::Release);
    }
}

/// The bytes of `chunk` as `Bytes` a [`SendfileStream`] sends from the pipe with `splice`:
/// they must go nowhere else (read, they are zeroes). Read into memory instead when no slot
/// is free.
pub fn pipe_bytes(chunk: PipeChunk) -> io::Result<Bytes> {
    let len = chunk.len();
    if len == 0 {
        return Ok(Bytes::new());
    }
    if chunk.taken() > 0 || len > MAX_CHUNK {
        return chunk.into_vec().map(Bytes::from);
    }
    let room = match pipe_room() {
        Ok(room) => room,
        Err(e) => {
            static SAID: AtomicBool = AtomicBool::new(false);
            if !SAID.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "mapping the room of pipe chunks failed ({e}): their bytes are read into memory instead"
                );
            }
            return chunk.into_vec().map(Bytes::from);
        }
    };
    let slot = {
        let mut free = FREE_SLOTS.lock();
        let (given_back, unused) = &mut *free;
        match given_back.pop() {
            Some(slot) => Some(slot),
            None if *unused < MAX_LIVE => {
                *unused += 1;
                Some(*unused - 1)
            }
            None => None,
        }
    };
    let Some(slot) = slot else {
        return chunk.into_vec().map(Bytes::from);
    };
    let room = &room[slot * MAX_CHUNK..][..len];
    *PIPE_SLOTS[slot].lock() = Some(chunk);
    PIPES_LIVE.fetch_add(1, Ordering::Release);
    Ok(Bytes::from_owner(PipeSlot { slot, room }))
}

/// Where a slice of a pipe chunk's `Bytes` stands: its slot, and how far into the chunk it
/// starts.
#[derive(Debug, Clone, Copy)]
struct PipeRange {
    slot: usize,
    offset: usize,
}

fn pipe_range_of(slice: &[u8]) -> Option<PipeRange> {
    let room = PIPE_ROOM.get()?;
    let at = (slice.as_ptr() as usize).checked_sub(room.as_ptr() as usize)?;
    (at < room.len()).then_some(PipeRange {
        slot: at / MAX_CHUNK,
        offset: at % MAX_CHUNK,
    })
}

/// A slice to send from elsewhere than memory.
enum Source {
    File(FileRange),
    Pipe(PipeRange),
}

fn source_of(slice: &[u8]) -> Option<Source> {
    if let Some(range) = pipe_range_of(slice) {
        return Some(Source::Pipe(range));
    }
    if LIVE.load(Ordering::Acquire) > 0 {
        return region_of(slice).map(Source::File);
    }
    None
}

/// A connected socket `sendfile` can write to: TCP, or a unix stream socket.
pub trait SendfileSocket: AsyncRead + AsyncWrite + AsFd + Unpin + Send + 'static {
    /// Waits until the socket can take bytes (tokio's `poll_write_ready`).
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Runs `f`, a write on the socket's descriptor, clearing readiness on `WouldBlock`
    /// (tokio's `try_io`).
    fn try_write_io<R>(&self, f: impl FnOnce() -> io::Result<R>) -> io::Result<R>;
    /// Whether the kernel may pace what is sent, with a timer each time the sender runs
    /// ahead: TCP under BBR (which paces by itself unless an `fq` queue does it for it, which
    /// a socket cannot tell). Bytes spliced from pipes leave faster than copied ones, and
    /// each pause costs a timer: in a virtual machine, where programming one is dear, more
    /// than the copies saved. Measured on 2 vCPUs (1 MiB streamed from a daemon process,
    /// pinned): under CUBIC, pipes made it 23-40 % faster; under BBR, up to 31 % slower, with
    /// 14 pacing timers a response against 5.
    fn paces_itself(&self) -> bool;
}

impl SendfileSocket for TcpStream {
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_write_ready(self, cx)
    }

    fn try_write_io<R>(&self, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        self.try_io(Interest::WRITABLE, f)
    }

    fn paces_itself(&self) -> bool {
        socket2::SockRef::from(self)
            .tcp_congestion()
            .is_ok_and(|name| name.starts_with(b"bbr"))
    }
}

impl SendfileSocket for UnixStream {
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        UnixStream::poll_write_ready(self, cx)
    }

    fn try_write_io<R>(&self, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        self.try_io(Interest::WRITABLE, f)
    }

    fn paces_itself(&self) -> bool {
        false
    }
}

/// A connection that writes mapped file bytes with `sendfile`, and pipe chunks' bytes with
/// `splice`.
pub struct SendfileStream<S = TcpStream> {
    tcp: S,
    /// Where pipe chunks queued back to back are moved together, to go out in one `splice`
    /// (made at the first such run).
    gather: Option<Gather>,
}

/// A pipe for a run of pipe chunks: each send to the socket costs far more than moving a
/// chunk's pages from pipe to pipe, so a run of them costs one send, as a `writev` of buffers
/// would. A connection holds one only while it has bytes in it (then it goes back to
/// [`IDLE_GATHERS`]): thousands of idle connections hold no descriptors for it.
struct Gather {
    read: OwnedFd,
    write: OwnedFd,
    /// How many bytes it takes at most.
    capacity: usize,
    /// Bytes in it: the next ones the caller writes (it was told of none of them yet).
    held: usize,
}

/// The capacity asked for a gather pipe: a run as long as hyper queues
/// (`front::WRITE_QUEUE`, 384 KiB) and then some.
const GATHER_CAPACITY: usize = 512 * 1024;

/// Emptied gather pipes, for the next run on any connection.
static IDLE_GATHERS: Mutex<Vec<Gather>> = Mutex::new(Vec::new());

/// How many emptied gather pipes are kept.
const MAX_IDLE_GATHERS: usize = 64;

/// Runs gathered so far (for tests).
#[cfg(test)]
static GATHERED: AtomicUsize = AtomicUsize::new(0);

impl Gather {
    /// An emptied one, or a new one (None if the kernel gives no pipe).
    fn take() -> Option<Gather> {
        IDLE_GATHERS.lock().pop().or_else(Gather::new)
    }

    /// Keeps this emptied one for the next run (or closes it, with enough kept).
    fn give_back(self) {
        debug_assert_eq!(self.held, 0);
        let mut idle = IDLE_GATHERS.lock();
        if idle.len() < MAX_IDLE_GATHERS {
            idle.push(self);
        }
    }

    fn new() -> Option<Gather> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).ok()?;
        // A user past its share of pipe pages keeps the default capacity.
        let _ = fcntl(
            &write,
            FcntlArg::F_SETPIPE_SZ(GATHER_CAPACITY as libc::c_int),
        );
        let capacity = usize::try_from(fcntl(&write, FcntlArg::F_GETPIPE_SZ).ok()?).ok()?;
        Some(Gather {
            read,
            write,
            capacity,
            held: 0,
        })
    }
}

impl<S: SendfileSocket> SendfileStream<S> {
    /// Wraps an accepted connection.
    pub fn new(tcp: S) -> SendfileStream<S> {
        SendfileStream { tcp, gather: None }
    }

    /// The connection.
    pub fn get_ref(&self) -> &S {
        &self.tcp
    }

    /// Runs `send` (a non-blocking write of the socket's descriptor, the bytes written)
    /// once the socket can take bytes, and again while it finds the socket full. Nothing
    /// written is `on_zero`'s error.
    fn poll_write_with(
        &self,
        cx: &mut Context<'_>,
        on_zero: fn() -> io::Error,
        mut send: impl FnMut(BorrowedFd<'_>) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.tcp.poll_write_ready(cx))?;
            match self.tcp.try_write_io(|| send(self.tcp.as_fd())) {
                Ok(0) => return Poll::Ready(Err(on_zero())),
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// One `sendfile` of up to `len` bytes of `file` from `offset`, once the socket can take
    /// them.
    fn poll_sendfile(
        &self,
        cx: &mut Context<'_>,
        range: FileRange,
        len: usize,
    ) -> Poll<io::Result<usize>> {
        let FileRange { id, file, offset } = range;
        let shorter = || {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file being sent got shorter than the response says",
            )
        };
        let sent = ready!(self.poll_write_with(cx, shorter, |socket| {
            let mut at = i64::try_from(offset)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
            nix::sys::sendfile::sendfile64(socket, file.as_fd(), Some(&mut at), len)
                .map_err(io::Error::from)
        }))?;
        count_sent(id, sent);
        Poll::Ready(Ok(sent))
    }

    /// Sends `len` bytes from `source`; `more`: other bytes follow at once.
    fn poll_send(
        &self,
        cx: &mut Context<'_>,
        source: Source,
        len: usize,
        more: bool,
    ) -> Poll<io::Result<usize>> {
        match source {
            Source::File(range) => self.poll_sendfile(cx, range, len),
            Source::Pipe(range) => self.poll_splice(cx, range, len, more),
        }
    }

    /// Sends `len` bytes of the pipe chunk in `range`'s slot with `splice`, which must be
    /// the next ones it holds.
    fn poll_splice(
        &self,
        cx: &mut Context<'_>,
        range: PipeRange,
        len: usize,
        more: bool,
    ) -> Poll<io::Result<usize>> {
        self.poll_write_with(cx, write_zero, |socket| {
            let mut slot = PIPE_SLOTS[range.slot].lock();
            let chunk = slot.as_mut().ok_or_else(|| {
                io::Error::other("a response chunk's pipe is gone before its bytes were sent")
            })?;
            if chunk.taken() != range.offset {
                return Err(io::Error::other(
                    "a response chunk's bytes would go out of order from its pipe",
                ));
            }
            chunk.send_to(socket, len, more)
        })
    }

    /// Moves the first bytes of `bufs` (the next ones to write), up to the first mapped file
    /// range, into the gather pipe, as many as it takes: pipe chunks' from their pipes, the
    /// others written. The bytes moved (0 if there is no gather pipe to be had).
    fn gather_run(&mut self, bufs: &[IoSlice<'_>]) -> usize {
        if self.gather.is_none() {
            self.gather = Gather::take();
        }
        let Some(gather) = self.gather.as_mut() else {
            return 0;
        };
        for slice in bufs.iter().filter(|b| !b.is_empty()) {
            let room = gather.capacity - gather.held;
            let want = slice.len().min(room);
            // A full pipe (by its buffers, which may fill before its bytes do) takes none.
            let moved = match source_of(slice) {
                None => nix::unistd::write(&gather.write, &slice[..want]).unwrap_or(0),
                Some(Source::Pipe(range)) => {
                    let mut slot = PIPE_SLOTS[range.slot].lock();
                    match slot.as_mut().filter(|c| c.taken() == range.offset) {
                        Some(chunk) => chunk
                            .send_to(gather.write.as_fd(), want, false)
                            .unwrap_or(0),
                        None => 0,
                    }
                }
                Some(Source::File(_)) => 0,
            };
            gather.held += moved;
            if moved < slice.len() {
                break;
            }
        }
        let held = gather.held;
        if held == 0 {
            self.give_back_gather();
        }
        #[cfg(test)]
        GATHERED.fetch_add(usize::from(held > 0), Ordering::Relaxed);
        held
    }

    /// Gives the connection's gather pipe back, once empty.
    fn give_back_gather(&mut self) {
        if let Some(gather) = self.gather.take() {
            gather.give_back();
        }
    }

    /// Sends what the gather pipe holds: the first bytes of `bufs`.
    fn poll_gathered(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let gather = self.gather.as_ref().expect("a gather pipe holds bytes");
        let queued = bufs.iter().map(|b| b.len()).sum::<usize>();
        if queued < gather.held {
            return Poll::Ready(Err(io::Error::other(
                "the bytes to write are fewer than those gathered for them",
            )));
        }
        let more = queued > gather.held;
        let mut flags = SpliceFFlags::SPLICE_F_NONBLOCK | SpliceFFlags::SPLICE_F_MOVE;
        if more {
            flags |= SpliceFFlags::SPLICE_F_MORE;
        }
        let (read, held) = (gather.read.as_fd(), gather.held);
        let sent = ready!(self.poll_write_with(cx, write_zero, |socket| {
            splice(read, None, socket, None, held, flags).map_err(io::Error::from)
        }))?;
        let gather = self.gather.as_mut().expect("a gather pipe");
        gather.held -= sent;
        if gather.held == 0 {
            self.give_back_gather();
        }
        Poll::Ready(Ok(sent))
    }
}

/// The error of a write that took nothing.
fn write_zero() -> io::Error {
    io::ErrorKind::WriteZero.into()
}

impl<S: SendfileSocket> AsyncRead for SendfileStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl<S: SendfileSocket> AsyncWrite for SendfileStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.gather.as_ref().is_some_and(|g| g.held > 0) {
            return self.poll_gathered(cx, bufs);
        }
        if PIPES_LIVE.load(Ordering::Acquire) == 0 && LIVE.load(Ordering::Acquire) == 0 {
            return Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        }
        // Plain slices before the first one sent from elsewhere go out with writev, that one
        // (when it is first) with sendfile or splice; the caller comes back for the rest. When
        // that one is a pipe chunk's, with more bytes around it, they all go out together
        // from the gather pipe instead.
        for (i, slice) in bufs.iter().enumerate() {
            if slice.is_empty() {
                continue;
            }
            let Some(source) = source_of(slice) else {
                continue;
            };
            let more = bufs[i + 1..].iter().any(|b| !b.is_empty());
            let first = bufs[..i].iter().all(|b| b.is_empty());
            if let Source::Pipe(_) = source {
                if (more || !first) && self.gather_run(bufs) > 0 {
                    return self.poll_gathered(cx, bufs);
                }
            }
            if !first {
                return Pin::new(&mut self.tcp).poll_write_vectored(cx, &bufs[..i]);
            }
            return self.poll_send(cx, source, slice.len(), more);
        }
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use tokio::io::AsyncWriteExt;

    fn temp_file(content: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(content).unwrap();
        f
    }

    fn registered(id: u64) -> bool {
        REGIONS.lock().iter().any(|r| r.id == id)
    }

    #[test]
    fn mapped_bytes_are_the_files_and_unregister_when_dropped() {
        let id = NEXT_ID.load(Ordering::Relaxed);
        let bytes = file_bytes(temp_file(b"0123456789"), 3, 4).unwrap();
        assert_eq!(&bytes[..], b"3456");
        let range = region_of(&bytes[1..3]).unwrap();
        assert_eq!(range.offset, 4);
        assert_eq!(range.file.metadata().unwrap().len(), 10);
        assert!(region_of(b"elsewhere").is_none());
        // Other tests map files concurrently: find ours by its range.
        let id = (id..NEXT_ID.load(Ordering::Relaxed))
            .find(|&id| {
                REGIONS
                    .lock()
                    .iter()
                    .any(|r| r.id == id && r.start == bytes.as_ptr() as usize)
            })
            .unwrap();
        let clone = bytes.slice(1..);
        drop(bytes);
        assert!(registered(id), "a clone keeps the mapping alive");
        drop(clone);
        assert!(!registered(id));
        assert!(file_bytes(temp_file(b""), 0, 0).unwrap().is_empty());
    }

    /// Plain and mapped slices written together arrive in order, the mapped part through
    /// `sendfile` (the file's content reaches the peer even where its pages were never read).
    #[tokio::test]
    async fn writes_mix_plain_bytes_and_file_ranges() {
        let content: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = std::thread::spawn(move || {
            let mut peer = std::net::TcpStream::connect(addr).unwrap();
            let mut got = Vec::new();
            peer.read_to_end(&mut got).unwrap();
            got
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let mut stream = SendfileStream::new(tcp);
        let mapped = file_bytes(temp_file(&content), 1000, 200_000).unwrap();
        let head = b"HTTP/1.1 200 OK\r\n\r\n";
        let parts = [
            Bytes::from_static(head),
            mapped.clone(),
            Bytes::from_static(b"tail"),
        ];
        write_all_parts(&mut stream, &parts).await;
        drop(parts);
        let sent = REGIONS
            .lock()
            .iter()
            .find(|r| r.start == mapped.as_ptr() as usize)
            .map(|r| r.sent);
        assert_eq!(sent, Some(200_000), "the file range went out with sendfile");
        stream.shutdown().await.unwrap();
        drop(stream);
        let got = reader.join().unwrap();
        let mut want = head.to_vec();
        want.extend_from_slice(&content[1000..201_000]);
        want.extend_from_slice(b"tail");
        assert_eq!(got.len(), want.len());
        assert!(got == want);
    }

    #[tokio::test]
    async fn a_file_shorter_than_promised_fails_the_write() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let peer = std::net::TcpStream::connect(addr).unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        let mut stream = SendfileStream::new(tcp);
        let file = temp_file(b"short");
        let promised = file_bytes(file.try_clone().unwrap(), 0, 5).unwrap();
        file.set_len(2).unwrap();
        let mut sent = 0;
        let err = loop {
            match stream.write(&promised[sent..]).await {
                Ok(n) => sent += n,
                Err(e) => break e,
            }
        };
        assert_eq!(sent, 2);
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        drop(peer);
    }

    /// Held by the tests that look at pipe slots, which another test would reuse.
    static PIPE_TESTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    /// A pipe chunk holding `bytes`, moved in from a socket as the daemon client does.
    fn pipe_chunk(bytes: &[u8]) -> PipeChunk {
        let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        a.write_all(bytes).unwrap();
        let mut chunk = PipeChunk::new().expect("a pipe");
        while chunk.len() < bytes.len() {
            chunk
                .fill_from(b.as_fd(), bytes.len() - chunk.len())
                .unwrap();
        }
        chunk
    }

    /// Writes `parts` through `stream` as hyper does (vectored, coming back for what is left).
    async fn write_all_parts<S: SendfileSocket>(stream: &mut SendfileStream<S>, parts: &[Bytes]) {
        let mut parts: Vec<&[u8]> = parts.iter().map(|p| &p[..]).collect();
        while !parts.is_empty() {
            let slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
            let mut n = stream.write_vectored(&slices).await.unwrap();
            assert!(n > 0);
            while n > 0 {
                let first = parts[0].len().min(n);
                parts[0] = &parts[0][first..];
                n -= first;
                if parts[0].is_empty() {
                    parts.remove(0);
                }
            }
        }
    }

    /// Bytes `from..from + n` of a pattern.
    fn pattern(from: usize, n: usize) -> Vec<u8> {
        (from..from + n).map(|i| (i % 251) as u8).collect()
    }

    /// Plain bytes and pipe chunks (alone, and back to back, gathered) arrive in order, over
    /// TCP with a small send buffer (so that sends are partial) and over a unix socket.
    #[tokio::test]
    async fn writes_mix_plain_bytes_and_pipe_chunks() {
        let _serial = PIPE_TESTS.lock().await;
        let sizes = [19, 60_000, MAX_CHUNK, 2, 10_000, 5];
        let piped = |i: usize| i % 2 == 1;
        let parts = || {
            let mut at = 0;
            let mut parts = Vec::new();
            for (i, size) in sizes.into_iter().enumerate() {
                let bytes = pattern(at, size);
                at += size;
                parts.push(if piped(i) {
                    pipe_bytes(pipe_chunk(&bytes)).unwrap()
                } else {
                    Bytes::from(bytes)
                });
            }
            parts
        };
        let want = pattern(0, sizes.iter().sum());
        let read_all = |mut peer: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut got = Vec::new();
                loop {
                    let mut buf = [0u8; 4096];
                    match peer.read(&mut buf).unwrap() {
                        0 => return got,
                        n => got.extend_from_slice(&buf[..n]),
                    }
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
            })
        };
        // Over TCP: a single pipe chunk first, then the mix.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let reader = read_all(Box::new(peer));
        let (tcp, _) = listener.accept().await.unwrap();
        socket2::SockRef::from(&tcp)
            .set_send_buffer_size(8192)
            .unwrap();
        let mut stream = SendfileStream::new(tcp);
        let alone = pipe_bytes(pipe_chunk(b"alone:")).unwrap();
        let gathered = || GATHERED.load(Ordering::Relaxed);
        let before = gathered();
        write_all_parts(&mut stream, &[alone]).await;
        assert_eq!(gathered(), before, "a chunk alone is spliced straight");
        write_all_parts(&mut stream, &parts()).await;
        assert!(gathered() > before, "a run went through a gather pipe");
        assert!(
            stream.gather.is_none(),
            "an emptied gather pipe is given back"
        );
        assert!(!IDLE_GATHERS.lock().is_empty(), "and kept");
        stream.shutdown().await.unwrap();
        drop(stream);
        let got = reader.join().unwrap();
        assert_eq!(got.len(), want.len() + 6);
        assert!(
            got[..6] == b"alone:"[..] && got[6..] == want[..],
            "TCP: the bytes changed"
        );
        // Over a unix socket.
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let reader = read_all(Box::new(theirs));
        let mut stream = SendfileStream::new(UnixStream::from_std(ours).unwrap());
        write_all_parts(&mut stream, &parts()).await;
        stream.shutdown().await.unwrap();
        drop(stream);
        assert!(reader.join().unwrap() == want, "unix: the bytes changed");
    }

    /// A chunk whose bytes went partly elsewhere is read into memory; a pipe chunk's slot is
    /// given back when the last of its `Bytes` goes.
    #[test]
    fn pipe_bytes_hold_a_slot_while_they_live() {
        let _serial = PIPE_TESTS.blocking_lock();
        let mut chunk = pipe_chunk(b"0123456789");
        let (out, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
        chunk.send_to(out.as_fd(), 3, false).unwrap();
        let read = pipe_bytes(chunk).unwrap();
        assert_eq!(&read[..], b"3456789");
        assert!(pipe_range_of(&read).is_none(), "in memory");
        let bytes = pipe_bytes(pipe_chunk(b"abc")).unwrap();
        let range = pipe_range_of(&bytes[1..]).expect("a pipe chunk's slice");
        assert_eq!(range.offset, 1);
        assert!(PIPE_SLOTS[range.slot].lock().is_some());
        let clone = bytes.slice(2..);
        drop(bytes);
        assert!(
            PIPE_SLOTS[range.slot].lock().is_some(),
            "a clone keeps the slot"
        );
        drop(clone);
        assert!(PIPE_SLOTS[range.slot].lock().is_none());
        assert!(pipe_range_of(b"elsewhere").is_none());
    }

    /// A TCP socket under BBR paces itself (pipes are not worth it there); under CUBIC, or a
    /// unix socket, not.
    #[tokio::test]
    async fn only_bbr_paces_itself() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        let socket = socket2::SockRef::from(&tcp);
        socket.set_tcp_congestion(b"cubic").unwrap();
        assert!(!tcp.paces_itself());
        // Where BBR is available to this user (the default on some machines).
        if socket.set_tcp_congestion(b"bbr").is_ok() {
            assert!(tcp.paces_itself());
        }
        let (a, _b) = UnixStream::pair().unwrap();
        assert!(!a.paces_itself());
    }
}
