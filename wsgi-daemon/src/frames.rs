//! The frames of a daemon connection as the front's clients read them, the blocking one
//! ([`crate::client`]) and the async one: one read-ahead of [`READ_AHEAD`] bytes that keeps
//! the descriptors arriving with the bytes (a FILE frame's), in order, and parses frames out
//! of it; the I/O around it is the client's own ([`Frames::next_blocking`], or awaiting
//! readiness between [`Frames::parse`] and [`Frames::receive`]).
//!
//! A payload the read-ahead does not hold whole is received straight into a buffer of its
//! own (handed on without a copy: [`Frames::take_payload`]), each receive taking the rest of
//! it and then the next frames' first bytes into the read-ahead, so a large frame costs one
//! system call when the daemon is ahead.

use std::collections::VecDeque;
use std::io;
use std::ops::Range;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::fd_passing::{recv_appending_then, recv_keeping_fds};
use crate::protocol::{self, HEADER_LEN, ProtocolError, READ_AHEAD};

/// What [`Frames::parse`] found in what was received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// A whole frame of this kind: its payload is [`Frames::payload`].
    Frame(u8),
    /// The next frame needs more bytes: [`Frames::receive`] first.
    More,
    /// The stream ended cleanly between frames.
    End,
}

/// A daemon connection's read-ahead and the frames parsed out of it. Kept with a pooled
/// connection: between responses it holds nothing.
pub(crate) struct Frames {
    ahead: Box<[u8]>,
    /// The unparsed bytes of `ahead`: `at..end`.
    at: usize,
    end: usize,
    /// The kind and length of the frame whose payload `payload` is receiving.
    large: Option<(u8, usize)>,
    /// The payload of a frame the read-ahead did not hold whole.
    payload: Vec<u8>,
    /// Where the payload of the frame parsed last is: in `ahead`, or (None) in `payload`.
    last: Option<Range<usize>>,
    /// The stream ended (a receive got nothing).
    ended: bool,
    /// Descriptors received and not taken yet.
    pub(crate) fds: VecDeque<OwnedFd>,
}

impl Frames {
    /// An empty read-ahead.
    pub(crate) fn new() -> Frames {
        Frames {
            ahead: vec![0u8; READ_AHEAD].into_boxed_slice(),
            at: 0,
            end: 0,
            large: None,
            payload: Vec::new(),
            last: None,
            ended: false,
            fds: VecDeque::new(),
        }
    }

    /// The next frame, if what was received holds it whole.
    pub(crate) fn parse(&mut self) -> Result<Parsed, ProtocolError> {
        if let Some((kind, len)) = self.large {
            if self.payload.len() < len {
                return self.more();
            }
            self.large = None;
            self.last = None;
            return Ok(Parsed::Frame(kind));
        }
        if self.end - self.at < HEADER_LEN {
            if self.ended {
                return match self.end - self.at {
                    0 => Ok(Parsed::End),
                    _ => Err(ProtocolError::Truncated),
                };
            }
            self.ahead.copy_within(self.at..self.end, 0);
            (self.at, self.end) = (0, self.end - self.at);
            return Ok(Parsed::More);
        }
        let header = self.ahead[self.at..self.at + HEADER_LEN]
            .try_into()
            .expect("a header's length");
        let (kind, len) = protocol::parse_header(&header)?;
        self.at += HEADER_LEN;
        let held = self.end - self.at;
        if len <= held {
            self.last = Some(self.at..self.at + len);
            self.at += len;
            return Ok(Parsed::Frame(kind));
        }
        self.payload.clear();
        self.payload.reserve(len);
        self.payload
            .extend_from_slice(&self.ahead[self.at..self.end]);
        (self.at, self.end) = (0, 0);
        self.large = Some((kind, len));
        self.more()
    }

    fn more(&self) -> Result<Parsed, ProtocolError> {
        if self.ended {
            Err(ProtocolError::Truncated)
        } else {
            Ok(Parsed::More)
        }
    }

    /// One receive on socket `fd` (blocking or not, as the socket is) of what [`Frames::parse`]
    /// said was missing: the bytes received, 0 at the end of the stream (which the next
    /// `parse` reports).
    pub(crate) fn receive(&mut self, fd: RawFd) -> io::Result<usize> {
        let got = match self.large {
            Some((_, len)) => {
                let left = len - self.payload.len();
                let (into_payload, beyond) = recv_appending_then(
                    fd,
                    &mut self.payload,
                    left,
                    &mut self.ahead,
                    &mut self.fds,
                )?;
                self.end = beyond;
                into_payload + beyond
            }
            None => {
                let got = recv_keeping_fds(fd, &mut self.ahead[self.end..], &mut self.fds)?;
                self.end += got;
                got
            }
        };
        self.ended = got == 0;
        Ok(got)
    }

    /// The payload of the frame parsed last.
    pub(crate) fn payload(&self) -> &[u8] {
        match &self.last {
            Some(range) => &self.ahead[range.clone()],
            None => &self.payload,
        }
    }

    /// The payload of the frame parsed last, to keep: the buffer it came in when it had one of
    /// its own, else a copy.
    pub(crate) fn take_payload(&mut self) -> Vec<u8> {
        match &self.last {
            Some(range) => self.ahead[range.clone()].to_vec(),
            None => std::mem::take(&mut self.payload),
        }
    }

    /// The next frame of `conn`, waiting for its bytes as the socket's read timeout allows;
    /// `Ok(None)` when the stream ends cleanly between frames.
    pub(crate) fn next_blocking(
        &mut self,
        conn: &std::os::unix::net::UnixStream,
    ) -> Result<Option<(u8, &[u8])>, ProtocolError> {
        let fd = conn.as_raw_fd();
        loop {
            match self.parse()? {
                Parsed::Frame(kind) => return Ok(Some((kind, self.payload()))),
                Parsed::End => return Ok(None),
                Parsed::More => {
                    retrying_interrupts(|| self.receive(fd))?;
                }
            }
        }
    }
}

/// `op` again while it is interrupted by a signal.
pub(crate) fn retrying_interrupts<T>(mut op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match op() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::fd_passing::send_with_fd;
    use crate::protocol::{encode_file, kind, write_raw};
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    use std::os::unix::net::UnixStream;
    use std::thread::JoinHandle;
    use std::time::Duration;

    /// Writes frames of every size on `a` from a thread, cut anywhere on the wire, with
    /// descriptors beside two FILE frames, then closes it: the frames that must come out, in
    /// order, and the thread. Each descriptor is of a file that reads `file` at offset 4.
    pub(crate) fn write_cut_frames(a: UnixStream) -> (Vec<(u8, Vec<u8>)>, JoinHandle<()>) {
        let big: Vec<u8> = (0..READ_AHEAD as u32 * 25 + 77)
            .map(|i| (i % 239) as u8)
            .collect();
        let mut wire = Vec::new();
        write_raw(&mut wire, kind::DATA, b"first").unwrap();
        write_raw(&mut wire, kind::DATA, &[7u8; 300]).unwrap();
        write_raw(&mut wire, kind::DATA, &big).unwrap();
        write_raw(&mut wire, kind::DATA, b"").unwrap();
        write_raw(&mut wire, kind::DATA, &big[..READ_AHEAD - 3]).unwrap();
        let mut expected: Vec<(u8, Vec<u8>)> = vec![
            (kind::DATA, b"first".to_vec()),
            (kind::DATA, vec![7u8; 300]),
            (kind::DATA, big.clone()),
            (kind::DATA, Vec::new()),
            (kind::DATA, big[..READ_AHEAD - 3].to_vec()),
        ];
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"the file").unwrap();
        let (file_frame, after) = (encode_file(4, 4), big[..70_000].to_vec());
        expected.push((kind::FILE, file_frame[HEADER_LEN..].to_vec()));
        expected.push((kind::DATA, after.clone()));
        expected.push((kind::FILE, file_frame[HEADER_LEN..].to_vec()));
        let writer = std::thread::spawn(move || {
            // Cuts: inside the first header, inside the second payload, in the big payload's
            // header, deep inside it, then the rest; then a descriptor on its own, and one
            // right behind a large payload (one receive may take both).
            let cuts = [2, 11, 200, HEADER_LEN + 310 + 3, 5000, wire.len()];
            let mut from = 0;
            for to in cuts {
                (&a).write_all(&wire[from..to]).unwrap();
                from = to;
                std::thread::sleep(Duration::from_millis(20));
            }
            send_with_fd(&a, &file_frame, file.as_raw_fd()).unwrap();
            std::thread::sleep(Duration::from_millis(20));
            write_raw(&mut &a, kind::DATA, &after).unwrap();
            send_with_fd(&a, &file_frame, file.as_raw_fd()).unwrap();
        });
        (expected, writer)
    }

    /// The two descriptors [`write_cut_frames`] sends came, in order, and nothing else.
    pub(crate) fn check_descriptors(fds: &mut VecDeque<OwnedFd>) {
        for _ in 0..2 {
            let fd = fds.pop_front().expect("each FILE frame's descriptor");
            let mut text = [0u8; 4];
            std::fs::File::from(fd).read_exact_at(&mut text, 4).unwrap();
            assert_eq!(&text, b"file");
        }
        assert!(fds.is_empty());
    }

    /// Frames of every size, cut anywhere on the wire, with descriptors beside two of them:
    /// each comes out whole and in order, the descriptors with their frames, then a clean end.
    #[test]
    fn frames_cut_anywhere_come_out_whole_with_their_descriptors() {
        let (a, b) = UnixStream::pair().unwrap();
        let (expected, writer) = write_cut_frames(a);
        let mut frames = Frames::new();
        for (i, (want_kind, want)) in expected.iter().enumerate() {
            let (kind, payload) = frames.next_blocking(&b).unwrap().expect("a frame");
            assert_eq!(kind, *want_kind, "frame {i}");
            assert!(
                payload == &want[..],
                "frame {i}: a payload of {} bytes changed",
                want.len()
            );
        }
        writer.join().unwrap();
        check_descriptors(&mut frames.fds);
        assert!(matches!(frames.next_blocking(&b), Ok(None)), "a clean end");
    }

    /// A large payload is handed over in the buffer it was received into; a small one is
    /// copied out of the read-ahead, which stays.
    #[test]
    fn large_payloads_are_taken_without_a_copy() {
        let (a, b) = UnixStream::pair().unwrap();
        let big = vec![5u8; 3 * READ_AHEAD];
        let writer = std::thread::spawn(move || {
            write_raw(&mut &a, kind::DATA, &big).unwrap();
            write_raw(&mut &a, kind::DATA, b"small").unwrap();
        });
        let mut frames = Frames::new();
        let (_, payload) = frames.next_blocking(&b).unwrap().unwrap();
        let at = payload.as_ptr();
        let taken = frames.take_payload();
        assert_eq!((taken.as_ptr(), taken.len()), (at, 3 * READ_AHEAD));
        frames.next_blocking(&b).unwrap().unwrap();
        assert_eq!(frames.take_payload(), b"small");
        writer.join().unwrap();
    }

    /// A stream that ends inside a frame is truncated, whether in a header or in a payload.
    #[test]
    fn a_stream_ending_inside_a_frame_is_truncated() {
        for cut in [3, HEADER_LEN + 10, HEADER_LEN + 20_000] {
            let (a, b) = UnixStream::pair().unwrap();
            let mut wire = Vec::new();
            write_raw(&mut wire, kind::DATA, &[1u8; 30_000]).unwrap();
            (&a).write_all(&wire[..cut]).unwrap();
            drop(a);
            let got = Frames::new().next_blocking(&b).map(|f| f.map(|(k, _)| k));
            assert!(
                matches!(got, Err(ProtocolError::Truncated)),
                "cut at {cut}: {got:?}"
            );
        }
    }
}
