//! A file descriptor beside the frames of a daemon connection (`SCM_RIGHTS`): how a daemon
//! process hands the front the file of a `wsgi.file_wrapper` response (a FILE frame), so that
//! the front sends it from the file (`sendfile`) instead of its bytes crossing the socket.
//! Descriptors arrive attached to the bytes they were sent with; [`FdReader`] keeps them, in
//! order, until the frame that names one is read.

use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

/// Writes `bytes` on `conn` with `fd` attached to the first of them (the receiver gets its
/// own descriptor of the same open file).
pub fn send_with_fd(conn: &UnixStream, bytes: &[u8], fd: RawFd) -> io::Result<()> {
    let fds = [fd];
    let mut sent = 0;
    while sent < bytes.len() {
        let iov = [IoSlice::new(&bytes[sent..])];
        // The descriptor goes with the first part only.
        let rights = [ControlMessage::ScmRights(&fds)];
        let cmsgs: &[ControlMessage<'_>] = if sent == 0 { &rights } else { &[] };
        match sendmsg::<()>(conn.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Reads a daemon connection, keeping the descriptors that arrive with its bytes.
#[derive(Debug)]
pub struct FdReader<'a> {
    conn: &'a UnixStream,
    fds: VecDeque<OwnedFd>,
}

impl<'a> FdReader<'a> {
    /// Reads `conn`.
    pub fn new(conn: &'a UnixStream) -> Self {
        FdReader {
            conn,
            fds: VecDeque::new(),
        }
    }

    /// The oldest descriptor received and not taken yet.
    pub fn take_fd(&mut self) -> Option<OwnedFd> {
        self.fds.pop_front()
    }
}

impl Read for FdReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut iov = [IoSliceMut::new(buf)];
        let mut space = nix::cmsg_space!([RawFd; 4]);
        let msg = recvmsg::<()>(
            self.conn.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        let n = msg.bytes;
        for cmsg in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                for fd in fds {
                    // SAFETY: the kernel just installed `fd` in this process for this message;
                    // nothing else knows it, so this is its only owner.
                    self.fds.push_back(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, Write};
    use std::os::unix::fs::FileExt;

    #[test]
    fn a_descriptor_travels_with_its_bytes_and_waits_to_be_taken() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"hello from the daemon").unwrap();
        file.rewind().unwrap();
        (&a).write_all(b"before ").unwrap();
        send_with_fd(&a, b"with-fd", file.as_raw_fd()).unwrap();
        (&a).write_all(b" after").unwrap();
        drop(file);
        drop(a);
        let mut reader = FdReader::new(&b);
        let mut all = Vec::new();
        reader.read_to_end(&mut all).unwrap();
        assert_eq!(all, b"before with-fd after");
        let fd = reader.take_fd().expect("the descriptor arrived");
        assert!(reader.take_fd().is_none());
        // The sender's descriptor is closed; the received one still reads the file.
        let received = std::fs::File::from(fd);
        let mut text = [0u8; 10];
        received.read_exact_at(&mut text, 6).unwrap();
        assert_eq!(&text, b"from the d");
    }
}
