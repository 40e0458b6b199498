//! Response bytes moved out of a daemon's socket into a pipe with `splice(2)`, never copied
//! into the front's memory: a [`PipeChunk`]. The front sends them on to the client's socket
//! with `splice` again. Each move hands the kernel's pages on by reference, where a read and
//! a write would copy every byte twice (the async client, with the `tokio` feature, takes
//! this path for a large DATA frame when its sink says `AsyncResponseSink::takes_pipes`).
//!
//! Pipes are reused once emptied (an idle few are kept), and at most [`MAX_LIVE`] exist at
//! a time: past that, or where the kernel refuses one, the client reads the bytes as before.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};

use nix::fcntl::{OFlag, SpliceFFlags, splice};
use parking_lot::Mutex;

/// The most pipes holding chunks at once (each is two descriptors and up to 16 pages).
pub const MAX_LIVE: usize = 512;

/// How many emptied pipes are kept for the next chunks.
const MAX_IDLE: usize = 64;

/// The most bytes one chunk holds: a pipe's default capacity is 16 buffers, each a page or a
/// larger piece of a socket's buffer, so 64 KiB always fits.
pub const MAX_CHUNK: usize = 64 * 1024;

/// A pipe's two ends, both non-blocking.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

static IDLE: Mutex<Vec<Pipe>> = Mutex::new(Vec::new());
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// Bytes of a response held in a pipe, in order: what was moved in ([`PipeChunk::fill_from`])
/// goes out from the front ([`PipeChunk::send_to`]), or, where it cannot, is read back
/// ([`PipeChunk::into_vec`]). An emptied chunk's pipe is reused; one dropped with bytes in it
/// is closed.
pub struct PipeChunk {
    /// Always some until dropped.
    pipe: Option<Pipe>,
    /// Bytes moved in.
    len: usize,
    /// Bytes sent on (or read back) so far.
    taken: usize,
}

impl PipeChunk {
    /// An empty chunk, or None when [`MAX_LIVE`] are in use or the kernel gives no pipe.
    pub fn new() -> Option<PipeChunk> {
        if LIVE.fetch_add(1, Ordering::Relaxed) >= MAX_LIVE {
            LIVE.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        let idle = IDLE.lock().pop();
        let pipe = match idle {
            Some(pipe) => pipe,
            None => match nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC) {
                Ok((read, write)) => Pipe { read, write },
                Err(e) => {
                    LIVE.fetch_sub(1, Ordering::Relaxed);
                    tracing::debug!("no pipe for a response chunk ({e}): reading it instead");
                    return None;
                }
            },
        };
        Some(PipeChunk {
            pipe: Some(pipe),
            len: 0,
            taken: 0,
        })
    }

    fn pipe(&self) -> &Pipe {
        self.pipe
            .as_ref()
            .expect("a chunk's pipe is there until it is dropped")
    }

    /// Bytes moved in.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was moved in.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes sent on so far: where the next [`PipeChunk::send_to`] starts.
    pub fn taken(&self) -> usize {
        self.taken
    }

    /// Moves up to `max` bytes from socket `from` into the pipe, without waiting: the bytes
    /// moved, 0 when the socket's peer closed it; `WouldBlock` when the socket has nothing
    /// or the pipe is full.
    pub fn fill_from(&mut self, from: BorrowedFd<'_>, max: usize) -> io::Result<usize> {
        let max = max.min(MAX_CHUNK - self.len);
        if max == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = splice(
            from,
            None,
            self.pipe().write.as_fd(),
            None,
            max,
            SpliceFFlags::SPLICE_F_NONBLOCK | SpliceFFlags::SPLICE_F_MOVE,
        )?;
        self.len += n;
        Ok(n)
    }

    /// Moves up to `max` of the bytes not yet sent to socket `to`, without waiting (a
    /// non-blocking socket gives `WouldBlock` when full); `more`: more bytes follow at once
    /// (the kernel may wait for them before sending a packet).
    pub fn send_to(&mut self, to: BorrowedFd<'_>, max: usize, more: bool) -> io::Result<usize> {
        let max = max.min(self.len - self.taken);
        if max == 0 {
            return Ok(0);
        }
        let mut flags = SpliceFFlags::SPLICE_F_NONBLOCK | SpliceFFlags::SPLICE_F_MOVE;
        if more {
            flags |= SpliceFFlags::SPLICE_F_MORE;
        }
        let n = splice(self.pipe().read.as_fd(), None, to, None, max, flags)?;
        self.taken += n;
        Ok(n)
    }

    /// The bytes not yet sent, read out of the pipe (for where they cannot be spliced).
    pub fn into_vec(mut self) -> io::Result<Vec<u8>> {
        let mut bytes = vec![0u8; self.len - self.taken];
        let mut at = 0;
        while at < bytes.len() {
            match nix::unistd::read(self.pipe().read.as_fd(), &mut bytes[at..]) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => at += n,
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.taken = self.len;
        Ok(bytes)
    }
}

impl Drop for PipeChunk {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::Relaxed);
        // A pipe with bytes left in it would hand them to the next chunk: closed instead.
        if let Some(pipe) = self.pipe.take().filter(|_| self.taken == self.len) {
            let mut idle = IDLE.lock();
            if idle.len() < MAX_IDLE {
                idle.push(pipe);
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    /// Read by the tests that need pipes, written by those that take them all away
    /// ([`AllInUse`]).
    pub(crate) static PIPES: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

    /// Every pipe counted as in use while it lives: [`PipeChunk::new`] gives none.
    pub(crate) struct AllInUse;

    impl AllInUse {
        pub(crate) fn new() -> AllInUse {
            LIVE.fetch_add(MAX_LIVE, Ordering::Relaxed);
            AllInUse
        }
    }

    impl Drop for AllInUse {
        fn drop(&mut self) {
            LIVE.fetch_sub(MAX_LIVE, Ordering::Relaxed);
        }
    }

    /// A chunk holding `bytes`, moved in from a socket.
    pub(crate) fn chunk_of(bytes: &[u8]) -> PipeChunk {
        let (mut a, b) = UnixStream::pair().unwrap();
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

    #[test]
    fn bytes_moved_in_go_out_in_order_to_a_socket() {
        let _pipes = PIPES.blocking_read();
        let bytes: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        let mut chunk = chunk_of(&bytes);
        assert_eq!(chunk.len(), bytes.len());
        let (out, mut peer) = UnixStream::pair().unwrap();
        assert_eq!(chunk.send_to(out.as_fd(), 1000, true).unwrap(), 1000);
        assert_eq!(chunk.taken(), 1000);
        while chunk.taken() < chunk.len() {
            chunk.send_to(out.as_fd(), usize::MAX, false).unwrap();
        }
        assert_eq!(
            chunk.send_to(out.as_fd(), 10, false).unwrap(),
            0,
            "all sent"
        );
        drop(out);
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap();
        assert!(got == bytes);
    }

    #[test]
    fn what_was_not_sent_reads_back() {
        let _pipes = PIPES.blocking_read();
        let mut chunk = chunk_of(b"0123456789");
        let (out, mut peer) = UnixStream::pair().unwrap();
        assert_eq!(chunk.send_to(out.as_fd(), 4, false).unwrap(), 4);
        assert_eq!(chunk.into_vec().unwrap(), b"456789");
        let mut sent = [0u8; 4];
        peer.read_exact(&mut sent).unwrap();
        assert_eq!(&sent, b"0123");
    }

    #[test]
    fn a_chunk_takes_at_most_max_chunk_and_says_when_nothing_is_there() {
        let _pipes = PIPES.blocking_read();
        let (mut a, b) = UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        let mut chunk = PipeChunk::new().expect("a pipe");
        let nothing = chunk.fill_from(b.as_fd(), 100).unwrap_err();
        assert_eq!(nothing.kind(), io::ErrorKind::WouldBlock);
        let writer = std::thread::spawn(move || {
            a.write_all(&vec![7u8; 3 * MAX_CHUNK]).unwrap();
            a
        });
        while chunk.len() < MAX_CHUNK {
            match chunk.fill_from(b.as_fd(), usize::MAX) {
                Ok(n) => assert!(n > 0),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(chunk.len(), MAX_CHUNK);
        let full = chunk.fill_from(b.as_fd(), 1).unwrap_err();
        assert_eq!(
            full.kind(),
            io::ErrorKind::WouldBlock,
            "a chunk is full at MAX_CHUNK"
        );
        assert!(chunk.into_vec().unwrap().iter().all(|&b| b == 7));
        drop(b);
        drop(writer.join());
    }

    #[test]
    fn a_closed_socket_moves_nothing() {
        let _pipes = PIPES.blocking_read();
        let (a, b) = UnixStream::pair().unwrap();
        drop(a);
        let mut chunk = PipeChunk::new().expect("a pipe");
        assert_eq!(chunk.fill_from(b.as_fd(), 100).unwrap(), 0);
        assert!(chunk.is_empty());
    }

    /// A chunk dropped with bytes left closes its pipe: the next chunk starts empty.
    #[test]
    fn bytes_left_in_a_dropped_chunk_never_reach_another() {
        let _pipes = PIPES.blocking_read();
        for _ in 0..MAX_IDLE + 2 {
            drop(chunk_of(b"left behind"));
            let mut fresh = chunk_of(b"mine");
            assert_eq!(fresh.len(), 4);
            let (out, mut peer) = UnixStream::pair().unwrap();
            fresh.send_to(out.as_fd(), usize::MAX, false).unwrap();
            drop((fresh, out));
            let mut got = Vec::new();
            peer.read_to_end(&mut got).unwrap();
            assert_eq!(got, b"mine");
        }
    }

    #[test]
    fn no_chunk_while_all_are_in_use() {
        let _all = PIPES.blocking_write();
        let in_use = AllInUse::new();
        assert!(PipeChunk::new().is_none());
        drop(in_use);
        assert!(PipeChunk::new().is_some());
    }
}
