//! A file descriptor beside the frames of a daemon connection (`SCM_RIGHTS`): how a daemon
//! process hands the front the file of a `wsgi.file_wrapper` response (a FILE frame), so that
//! the front sends it from the file (`sendfile`) instead of its bytes crossing the socket.
//! Descriptors arrive attached to the bytes they were sent with; the clients' read-ahead
//! (`frames`) keeps them, in order, until the frame that names one is read.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};

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
    let mut iov = [libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    }];
    // SAFETY: the one iovec is `buf`, writable for its whole length.
    unsafe { recvmsg_keeping_fds(fd, &mut iov, fds) }
}

/// Receives from socket `fd` first up to `max` bytes appended to `buf` (straight into its
/// spare room, not zeroed first), then, once those are all there, into `then`: the rest of a
/// frame's payload and the next frames' first bytes in one system call. Descriptors that
/// arrive with the bytes are kept, in order, at the back of `fds`. Returns how many bytes
/// went to `buf` and how many to `then`.
pub(crate) fn recv_appending_then(
    fd: RawFd,
    buf: &mut Vec<u8>,
    max: usize,
    then: &mut [u8],
    fds: &mut VecDeque<OwnedFd>,
) -> io::Result<(usize, usize)> {
    buf.reserve(max);
    let spare = &mut buf.spare_capacity_mut()[..max];
    let mut iov = [
        libc::iovec {
            iov_base: spare.as_mut_ptr().cast(),
            iov_len: max,
        },
        libc::iovec {
            iov_base: then.as_mut_ptr().cast(),
            iov_len: then.len(),
        },
    ];
    // SAFETY: the first iovec is `max` bytes of `buf`'s spare room, the second is `then`,
    // both writable for their lengths and neither read before being written.
    let got = unsafe { recvmsg_keeping_fds(fd, &mut iov, fds)? };
    let appended = got.min(max);
    // SAFETY: the kernel fills the iovecs in order, so it initialised the first `appended`
    // bytes of the spare room, within the capacity reserved above.
    unsafe { buf.set_len(buf.len() + appended) };
    Ok((appended, got - appended))
}

/// `recvmsg` on socket `fd` into `iov`, keeping the descriptors that come with the bytes:
/// the bytes received (0 at the end of the stream).
///
/// # Safety
/// Each of `iov`'s entries must point to memory writable for its whole `iov_len`, that
/// nothing else reads or writes during the call.
unsafe fn recvmsg_keeping_fds(
    fd: RawFd,
    iov: &mut [libc::iovec],
    fds: &mut VecDeque<OwnedFd>,
) -> io::Result<usize> {
    let mut space = ControlSpace([0; CONTROL_SPACE]);
    // SAFETY: an all-zero `msghdr` is a valid value (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = iov.len() as _;
    msg.msg_control = space.0.as_mut_ptr().cast();
    msg.msg_controllen = CONTROL_SPACE as _;
    // SAFETY: `msg` points to `iov`, whose entries the caller vouches for, and to `space`,
    // writable for `CONTROL_SPACE` bytes; the kernel writes no further than those lengths.
    let got = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    let got = usize::try_from(got).map_err(|_| io::Error::last_os_error())?;
    // SAFETY: `msg` is the header the kernel just filled: `msg_control` points to `space`
    // and `msg_controllen` says how much of it holds control messages, which the CMSG
    // macros walk without leaving it. An `SCM_RIGHTS` message's data is its descriptors,
    // which the kernel just installed in this process: nothing else knows them, so each
    // gets its only owner here. They are read unaligned, as the data need not be aligned
    // for `c_int`.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let header = &*cmsg;
            if header.cmsg_level == libc::SOL_SOCKET && header.cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                let count = (header.cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                    / std::mem::size_of::<RawFd>();
                for i in 0..count {
                    fds.push_back(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::io::Write;
    use std::os::unix::fs::FileExt;

    #[test]
    fn the_control_space_holds_four_descriptors() {
        assert!(nix::cmsg_space!([RawFd; 4]).len() <= CONTROL_SPACE);
    }

    #[test]
    fn one_receive_ends_a_payload_and_reads_on_with_the_descriptor() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"the file").unwrap();
        (&a).write_all(&[1u8; 3000]).unwrap();
        send_with_fd(&a, b"next frame", file.as_raw_fd()).unwrap();
        let (mut payload, mut ahead, mut fds) = (vec![9u8; 5], [0u8; 64], VecDeque::new());
        let got = recv_appending_then(b.as_raw_fd(), &mut payload, 3000, &mut ahead, &mut fds);
        assert_eq!(got.unwrap(), (3000, 10));
        assert_eq!(payload.len(), 3005);
        assert!(payload[..5] == [9; 5] && payload[5..] == [1; 3000]);
        assert_eq!(&ahead[..10], b"next frame");
        let fd = fds.pop_front().expect("the descriptor came with its bytes");
        let mut text = [0u8; 4];
        std::fs::File::from(fd).read_exact_at(&mut text, 4).unwrap();
        assert_eq!(&text, b"file");
        // Less than the payload's rest: all of it goes to the payload, none beyond.
        (&a).write_all(&[2u8; 100]).unwrap();
        let got = recv_appending_then(b.as_raw_fd(), &mut payload, 500, &mut ahead, &mut fds);
        assert_eq!(got.unwrap(), (100, 0));
        assert_eq!(payload.len(), 3105);
        drop(a);
        let got = recv_appending_then(b.as_raw_fd(), &mut payload, 400, &mut ahead, &mut fds);
        assert_eq!(got.unwrap(), (0, 0), "the end of the stream");
    }
}
