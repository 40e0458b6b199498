//! A TCP peer's receive window, as the kernel knows it (`TCP_INFO`): what tells a client
//! that reads a response slowly from one that only lets its kernel buffer it.
#![allow(unsafe_code)]

use std::os::fd::RawFd;

/// Where a TCP peer's receive window stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerWindow {
    /// The window's right edge, in bytes of everything sent on the connection: what the peer
    /// acknowledged plus the room it advertises. Once its buffer is full (`open` 0), it moves
    /// on only as the peer's application reads.
    pub edge: u64,
    /// The room left in the window beyond what was sent: 0 when the peer's buffer is full
    /// (or everything it has room for is on its way).
    pub open: u64,
    /// The connection's segment size: less room than this, and the kernel sends nothing more
    /// (it waits for the peer to open a segment's worth).
    pub segment: u32,
}

impl PeerWindow {
    /// Whether the peer's window is closed: it has no room for another segment, so nothing
    /// more goes out until its application reads.
    pub fn is_closed(&self) -> bool {
        self.open < u64::from(self.segment)
    }
}

/// The window of the TCP connection `fd`; None when `fd` is not a TCP socket, or the kernel
/// does not report the window (`tcpi_snd_wnd`, Linux 5.4 on).
pub fn peer_window(fd: RawFd) -> Option<PeerWindow> {
    let mut info = std::mem::MaybeUninit::<libc::tcp_info>::zeroed();
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is writable for `len` bytes and outlives the call; the kernel writes at
    // most `len` bytes into it and sets `len` to how many it wrote. A descriptor that is not
    // a TCP socket makes the call fail without writing.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    let needed = std::mem::offset_of!(libc::tcp_info, tcpi_snd_wnd) + std::mem::size_of::<u32>();
    if rc != 0 || (len as usize) < needed {
        return None;
    }
    // SAFETY: zeroed, then partly written by the kernel: every field is an integer, for
    // which any bits are a value.
    let info = unsafe { info.assume_init() };
    let edge = info.tcpi_bytes_acked + u64::from(info.tcpi_snd_wnd);
    // How far the stream was sent (each byte counted once, however often it was resent).
    let sent = info.tcpi_bytes_sent.saturating_sub(info.tcpi_bytes_retrans);
    Some(PeerWindow {
        edge,
        open: edge.saturating_sub(sent),
        segment: info.tcpi_snd_mss,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;

    /// A peer that reads nothing: its window closes, and its edge stays put until it reads;
    /// reading moves the edge on. A unix socket has no window.
    #[test]
    fn the_edge_moves_only_as_the_peer_reads() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let chunk = vec![7u8; 65536];
        // Fill the client's buffer: writes stop when its window and our buffer are full.
        let began = std::time::Instant::now();
        let mut sent = 0u64;
        while began.elapsed() < std::time::Duration::from_secs(5) {
            match server.write(&chunk) {
                Ok(n) => sent += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    if server.write(&chunk).is_err() {
                        break;
                    }
                }
                Err(e) => panic!("{e}"),
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        let full = peer_window(server.as_raw_fd()).expect("a TCP socket reports its window");
        assert!(full.is_closed(), "{full:?} after {sent} bytes");
        std::thread::sleep(std::time::Duration::from_millis(200));
        let still = peer_window(server.as_raw_fd()).unwrap();
        assert_eq!(still.edge, full.edge, "nothing read: {still:?}");
        assert!(still.is_closed(), "{still:?}");
        let mut buf = vec![0u8; 1 << 20];
        let mut read = 0;
        while read < 1 << 20 {
            read += client.read(&mut buf[read..]).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        let after = peer_window(server.as_raw_fd()).unwrap();
        assert!(
            after.edge > full.edge,
            "{after:?} after reading, {full:?} before"
        );
        let (unix, _other) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(peer_window(unix.as_raw_fd()), None);
    }
}
