//! A file descriptor beside the frames of a daemon connection (`SCM_RIGHTS`): how a daemon
//! process hands the front the file of a `wsgi.file_wrapper` response (a FILE frame), so that
//! the front sends it from the file (`sendfile`) instead of its bytes crossing the socket.
//! Descriptors arrive attached to the bytes they were sent with; [`FdReader`] keeps them, in
//! order, until the frame that names one is read.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, IoSlice, IoSliceMut, Read};
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

impl FdReader<'_> {
    /// Appends up to `max` bytes to `buf`, received straight into its spare room (not zeroed
    /// first, as std's `read_to_end` does for a reader it does not know). For a frame's
    /// payload only: a plain `recv` drops a descriptor sent with the bytes it reads, and only
    /// a FILE frame's first bytes carry one, which go through [`Read::read`].
    pub fn append(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        recv_appending(self.conn.as_raw_fd(), buf, max)
    }
}

/// Appends up to `max` bytes received on socket `fd` to `buf`, straight into its spare room
/// (not zeroed first). A descriptor sent with these bytes is dropped: for a frame's payload
/// only ([`FdReader::append`]).
pub(crate) fn recv_appending(fd: RawFd, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    buf.reserve(max);
    let spare = &mut buf.spare_capacity_mut()[..max];
    // SAFETY: `spare` is `max` writable bytes of `buf`'s allocation; `recv` only writes
    // into them and returns how many it wrote (at most `max`), or -1.
    let got = unsafe { libc::recv(fd, spare.as_mut_ptr().cast(), max, 0) };
    let got = usize::try_from(got).map_err(|_| io::Error::last_os_error())?;
    let len = buf.len() + got.min(max);
    // SAFETY: `recv` initialised the first `got` bytes of the spare room, within the
    // capacity reserved above.
    unsafe { buf.set_len(len) };
    Ok(got)
}

/// Room for the control message of up to four descriptors (`cmsg_space!([RawFd; 4])`, 32
/// bytes on Linux, with room to spare), aligned as the kernel's `cmsghdr`: on the stack, not
/// allocated for every receive.
const CONTROL_SPACE: usize = 64;

#[repr(C, align(8))]
struct ControlSpace([u8; CONTROL_SPACE]);

/// Receives into `buf` from socket `fd`, keeping the descriptors that arrive with the bytes
/// (in order, at the back of `fds`).
pub(crate) fn recv_keeping_fds(
    fd: RawFd,
    buf: &mut [u8],
    fds: &mut VecDeque<OwnedFd>,
) -> io::Result<usize> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = ControlSpace([0; CONTROL_SPACE]);
    let msg = recvmsg::<()>(fd, &mut iov, Some(&mut space.0), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(io::Error::from)?;
    let n = msg.bytes;
    for cmsg in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(received) = cmsg {
            for fd in received {
                // SAFETY: the kernel just installed `fd` in this process for this message;
                // nothing else knows it, so this is its only owner.
                fds.push_back(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Ok(n)
}

/// [`FrameReader::next_frame_with`]'s payload reader for a daemon connection: what the
/// read-ahead holds, else a payload of the read-ahead's size or more straight into the
/// frame's buffer ([`FdReader::append`]).
///
/// [`FrameReader::next_frame_with`]: crate::protocol::FrameReader::next_frame_with
pub fn append_payload(
    reader: &mut BufReader<FdReader<'_>>,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<usize> {
    if reader.buffer().is_empty() && max >= reader.capacity() {
        return reader.get_mut().append(buf, max);
    }
    let held = reader.fill_buf()?;
    let n = held.len().min(max);
    buf.extend_from_slice(&held[..n]);
    reader.consume(n);
    Ok(n)
}

impl Read for FdReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        recv_keeping_fds(self.conn.as_raw_fd(), buf, &mut self.fds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_control_space_holds_four_descriptors() {
        assert!(nix::cmsg_space!([RawFd; 4]).len() <= CONTROL_SPACE);
    }
    use std::io::{Seek, Write};
    use std::os::unix::fs::FileExt;

    #[test]
    fn large_payloads_are_received_into_the_frame_and_descriptors_still_arrive() {
        use crate::protocol::{FrameReader, READ_AHEAD, encode_file, kind, write_raw};
        let (a, b) = UnixStream::pair().unwrap();
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"the file").unwrap();
        let writer = std::thread::spawn(move || {
            let mut out = &a;
            write_raw(&mut out, kind::DATA, &big[..READ_AHEAD]).unwrap();
            write_raw(&mut out, kind::DATA, b"small").unwrap();
            send_with_fd(&a, &encode_file(4, 4), file.as_raw_fd()).unwrap();
            write_raw(&mut out, kind::DATA, &big).unwrap();
            send_with_fd(&a, &encode_file(0, 3), file.as_raw_fd()).unwrap();
            write_raw(&mut out, kind::END, b"").unwrap();
            big
        });
        let mut r = FrameReader::new(std::io::BufReader::with_capacity(
            READ_AHEAD,
            FdReader::new(&b),
        ));
        let mut next = || {
            r.next_frame_with(append_payload)
                .unwrap()
                .map(|(k, p)| (k, p.to_vec()))
                .unwrap()
        };
        let (k1, p1) = next();
        let (k2, p2) = next();
        let (k3, _) = next();
        let (k4, p4) = next();
        let (k5, _) = next();
        let (k6, _) = next();
        let big = writer.join().unwrap();
        assert_eq!((k1, &p1[..]), (kind::DATA, &big[..READ_AHEAD]));
        assert_eq!((k2, &p2[..]), (kind::DATA, &b"small"[..]));
        assert_eq!((k4, p4), (kind::DATA, big));
        assert_eq!((k3, k5, k6), (kind::FILE, kind::FILE, kind::END));
        let fds = &mut r.get_mut().get_mut();
        for expected in [&b"file"[..], b"the"] {
            let fd = fds.take_fd().expect("each FILE frame's descriptor arrived");
            let mut text = vec![0u8; expected.len()];
            let at = if expected == b"file" { 4 } else { 0 };
            std::fs::File::from(fd)
                .read_exact_at(&mut text, at)
                .unwrap();
            assert_eq!(text, expected);
        }
        assert!(fds.take_fd().is_none());
    }

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
