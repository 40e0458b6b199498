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

use std::fs::File;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

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

/// A descriptor of this process's own for the file open on `fd`: a duplicate (`fcntl`
/// `F_DUPFD_CLOEXEC`), so the same open file, whose offset nothing here reads or moves
/// ([`file_bytes`] maps a range and `sendfile` is given its offset); for a file opened with
/// `O_DIRECT`, which `sendfile` reads only in aligned blocks (any other length is `EINVAL`),
/// a new open of it without the flag (through `/proc/self/fd`). `fd` must stay open for the
/// call (an app's file, open while the server holds it): a closed one is `EBADF`.
pub fn own_descriptor(fd: RawFd) -> io::Result<File> {
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: `fd` is open for the duration of this call (the caller's contract: the app's
    // file object holds it and cannot close it meanwhile); it is only borrowed to duplicate
    // it, and the duplicate is a new descriptor that the returned `File` owns alone.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let owned = nix::fcntl::fcntl(borrowed, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(0))
        // SAFETY: a successful F_DUPFD_CLOEXEC returns a new descriptor nothing else owns.
        .map(|new| unsafe { OwnedFd::from_raw_fd(new) })
        .map_err(io::Error::from)?;
    let flags = nix::fcntl::fcntl(&owned, nix::fcntl::FcntlArg::F_GETFL)?;
    if nix::fcntl::OFlag::from_bits_retain(flags).contains(nix::fcntl::OFlag::O_DIRECT) {
        return File::open(format!("/proc/self/fd/{fd}"));
    }
    Ok(File::from(owned))
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

/// A connected socket `sendfile` can write to: TCP, or a unix stream socket.
pub trait SendfileSocket: AsyncRead + AsyncWrite + AsFd + Unpin + Send + 'static {
    /// Waits until the socket can take bytes (tokio's `poll_write_ready`).
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Runs `f`, a write on the socket's descriptor, clearing readiness on `WouldBlock`
    /// (tokio's `try_io`).
    fn try_write_io<R>(&self, f: impl FnOnce() -> io::Result<R>) -> io::Result<R>;
}

impl SendfileSocket for TcpStream {
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_write_ready(self, cx)
    }

    fn try_write_io<R>(&self, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        self.try_io(Interest::WRITABLE, f)
    }
}

impl SendfileSocket for UnixStream {
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        UnixStream::poll_write_ready(self, cx)
    }

    fn try_write_io<R>(&self, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        self.try_io(Interest::WRITABLE, f)
    }
}

/// A connection that writes mapped file bytes with `sendfile`.
pub struct SendfileStream<S = TcpStream> {
    tcp: S,
}

impl<S: SendfileSocket> SendfileStream<S> {
    /// Wraps an accepted connection.
    pub fn new(tcp: S) -> SendfileStream<S> {
        SendfileStream { tcp }
    }

    /// The connection.
    pub fn get_ref(&self) -> &S {
        &self.tcp
    }

    /// One `sendfile` of up to `len` bytes of `file` from `offset`, once the socket can take
    /// them (again while it finds the socket full).
    fn poll_sendfile(
        &self,
        cx: &mut Context<'_>,
        range: FileRange,
        len: usize,
    ) -> Poll<io::Result<usize>> {
        let FileRange { id, file, offset } = range;
        let mut at = i64::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
        loop {
            ready!(self.tcp.poll_write_ready(cx))?;
            let sent = self.tcp.try_write_io(|| {
                nix::sys::sendfile::sendfile64(self.tcp.as_fd(), file.as_fd(), Some(&mut at), len)
                    .map_err(io::Error::from)
            });
            match sent {
                Ok(0) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file being sent got shorter than the response says",
                    )));
                }
                Ok(n) => {
                    count_sent(id, n);
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
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
        if LIVE.load(Ordering::Acquire) == 0 {
            return Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        }
        // Plain slices before the first one in a mapped file go out with writev, that one
        // (when it is first) with sendfile; the caller comes back for the rest.
        for (i, slice) in bufs.iter().enumerate() {
            if slice.is_empty() {
                continue;
            }
            let Some(range) = region_of(slice) else {
                continue;
            };
            if bufs[..i].iter().any(|b| !b.is_empty()) {
                return Pin::new(&mut self.tcp).poll_write_vectored(cx, &bufs[..i]);
            }
            return self.poll_sendfile(cx, range, slice.len());
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

    /// The bytes sent with `sendfile` from the mapping `bytes` starts, while it lives.
    fn sent_from(bytes: &Bytes) -> Option<u64> {
        REGIONS
            .lock()
            .iter()
            .find(|r| r.start == bytes.as_ptr() as usize)
            .map(|r| r.sent)
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

    /// A duplicate of an app's descriptor sends the file from the range asked, whatever the
    /// app's offset, leaves that offset alone, and outlives the app's close.
    #[tokio::test]
    async fn an_own_descriptor_sends_the_range_and_leaves_the_apps_offset() {
        use std::io::{Seek, SeekFrom};
        use std::os::fd::AsRawFd;
        let content = pattern(0, 100_000);
        let mut app_file = temp_file(&content);
        app_file.seek(SeekFrom::Start(7)).unwrap();
        let own = own_descriptor(app_file.as_raw_fd()).unwrap();
        assert_ne!(own.as_raw_fd(), app_file.as_raw_fd());
        let bytes = file_bytes(own, 10, 90_000).unwrap();
        // The app closes its file before the bytes are out; a clone (the same open file)
        // keeps its offset to look at.
        let mut offset_of_app = app_file.try_clone().unwrap();
        drop(app_file);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            (&peer).read_to_end(&mut got).unwrap();
            got
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let mut stream = SendfileStream::new(tcp);
        write_all_parts(&mut stream, std::slice::from_ref(&bytes)).await;
        assert_eq!(sent_from(&bytes), Some(90_000), "sent with sendfile");
        assert_eq!(
            offset_of_app.stream_position().unwrap(),
            7,
            "the app's offset"
        );
        drop(bytes);
        stream.shutdown().await.unwrap();
        drop(stream);
        assert!(reader.join().unwrap() == content[10..90_010]);
        assert!(own_descriptor(-1).is_err());
    }

    /// A file the app opened with `O_DIRECT` is sent whole all the same (its own descriptor
    /// is a new open without the flag: `sendfile` would refuse the unaligned length).
    #[tokio::test]
    async fn a_file_opened_with_o_direct_is_sent_whole() {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        let content = pattern(0, 1027);
        // The temporary folder, or the source tree where that is a tmpfs (no O_DIRECT).
        let opened = [std::env::temp_dir(), env!("CARGO_MANIFEST_DIR").into()]
            .into_iter()
            .find_map(|dir| {
                let named = tempfile::NamedTempFile::new_in(dir).unwrap();
                std::fs::write(named.path(), &content).unwrap();
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_DIRECT)
                    .open(named.path())
                    .ok()?;
                Some((named, file))
            });
        let (_named, app_file) = opened.expect("a file system that takes O_DIRECT");
        let own = own_descriptor(app_file.as_raw_fd()).unwrap();
        let flags = nix::fcntl::fcntl(&own, nix::fcntl::FcntlArg::F_GETFL).unwrap();
        assert_eq!(flags & libc::O_DIRECT, 0);
        let bytes = file_bytes(own, 0, content.len() as u64).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        let mut stream = SendfileStream::new(tcp);
        write_all_parts(&mut stream, std::slice::from_ref(&bytes)).await;
        assert_eq!(sent_from(&bytes), Some(1027), "sent with sendfile");
        stream.shutdown().await.unwrap();
        drop(stream);
        let mut got = Vec::new();
        (&peer).read_to_end(&mut got).unwrap();
        assert!(got == content);
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
        assert_eq!(
            sent_from(&mapped),
            Some(200_000),
            "the file range went out with sendfile"
        );
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

    /// Plain bytes and file ranges, back to back, arrive in order over TCP with a small send
    /// buffer (so that sends are partial) and over a unix socket.
    #[tokio::test]
    async fn writes_mix_plain_bytes_and_file_ranges_in_partial_sends() {
        let sizes = [19, 60_000, 65_536, 2, 10_000, 5];
        let want = pattern(0, sizes.iter().sum());
        let file = temp_file(&want);
        let parts = || {
            let mut at = 0;
            let mut parts = Vec::new();
            for (i, size) in sizes.into_iter().enumerate() {
                parts.push(match i % 2 {
                    1 => file_bytes(file.try_clone().unwrap(), at as u64, size as u64).unwrap(),
                    _ => Bytes::from(pattern(at, size)),
                });
                at += size;
            }
            parts
        };
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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let reader = read_all(Box::new(peer));
        let (tcp, _) = listener.accept().await.unwrap();
        socket2::SockRef::from(&tcp)
            .set_send_buffer_size(8192)
            .unwrap();
        let mut stream = SendfileStream::new(tcp);
        write_all_parts(&mut stream, &parts()).await;
        stream.shutdown().await.unwrap();
        drop(stream);
        assert!(reader.join().unwrap() == want, "TCP: the bytes changed");
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let reader = read_all(Box::new(theirs));
        let mut stream = SendfileStream::new(UnixStream::from_std(ours).unwrap());
        write_all_parts(&mut stream, &parts()).await;
        stream.shutdown().await.unwrap();
        drop(stream);
        assert!(reader.join().unwrap() == want, "unix: the bytes changed");
    }
}
