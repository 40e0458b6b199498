//! A request's body and response over the front connection's frames: [`WireBody`] asks for
//! the body one BODY_WANTED at a time, [`WireSink`] writes START and DATA (and FILE, with the
//! file's descriptor, for a `wsgi.file_wrapper` response).

use std::io::{self, BufReader, BufWriter, IoSlice, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;

use wsgi_interp::{RequestBody, ResponseSink, copy_to_uninit};

use super::BufferState;
use crate::fd_passing::send_with_fd;
use crate::protocol::{
    CHUNK, FrameReader, ProtocolError, READ_AHEAD, encode_body_wanted, encode_file,
    encode_shared_data, encode_start, frame_header, kind, write_all_vectored, write_raw,
};
use crate::shared_buffer::ResponseBuffer;

/// The request body, pulled from the front one BODY_WANTED at a time.
pub(super) struct WireBody<'a> {
    conn: &'a UnixStream,
    /// Made at the first BODY_WANTED (an inline body needs none).
    reader: Option<FrameReader<BufReader<&'a UnixStream>>>,
    pending: Vec<u8>,
    pos: usize,
    ended: bool,
    pub(super) broken: bool,
}

impl<'a> WireBody<'a> {
    /// The body of the request just read from `conn`: when it came whole in the REQUEST
    /// frame, `inline` is that frame's payload and where the body starts in it (it runs to
    /// the end); else it is asked for from the front as the app reads it.
    pub(super) fn new(conn: &'a UnixStream, inline: Option<(Vec<u8>, usize)>) -> Self {
        let ended = inline.is_some();
        let (pending, pos) = inline.unwrap_or_default();
        WireBody {
            conn,
            reader: None,
            pending,
            pos,
            ended,
            broken: false,
        }
    }
}

impl WireBody<'_> {
    /// Makes sure bytes are pending, asking the front for up to `want` more if none are:
    /// `Ok(false)` at the body's end.
    fn fill(&mut self, want: usize) -> io::Result<bool> {
        if self.pos < self.pending.len() {
            return Ok(true);
        }
        if self.ended {
            return Ok(false);
        }
        if self.broken {
            return Err(io::Error::other("the front connection failed"));
        }
        let want = want.min(CHUNK) as u32;
        let conn = self.conn;
        let reader = self
            .reader
            .get_or_insert_with(|| FrameReader::new(BufReader::with_capacity(READ_AHEAD, conn)));
        let result = (|| {
            let mut conn = conn;
            conn.write_all(&encode_body_wanted(want))?;
            match reader.next_frame() {
                Ok(Some((kind::BODY, chunk))) if !chunk.is_empty() => {
                    // The chunk's buffer becomes the pending bytes, as it is.
                    self.pending = reader.take_payload();
                    self.pos = 0;
                    Ok(true)
                }
                Ok(Some((kind::BODY_END, _))) => {
                    self.ended = true;
                    Ok(false)
                }
                Ok(Some((kind::BODY_ERROR, msg))) => {
                    self.ended = true;
                    Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        format!(
                            "reading the request body failed: {}",
                            String::from_utf8_lossy(msg)
                        ),
                    ))
                }
                Ok(Some((other, _))) => Err(io::Error::other(ProtocolError::Unexpected {
                    got: other,
                    expected: "BODY, BODY_END or BODY_ERROR",
                })),
                Ok(None) => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the front closed the connection during the request body",
                )),
                Err(ProtocolError::Io(e)) => Err(e),
                Err(e) => Err(io::Error::other(e)),
            }
        })();
        if let Err(e) = &result {
            if e.kind() != io::ErrorKind::ConnectionAborted {
                self.broken = true;
            }
        }
        result
    }
}

impl RequestBody for WireBody<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || !self.fill(buf.len())? {
            return Ok(0);
        }
        let n = buf.len().min(self.pending.len() - self.pos);
        buf[..n].copy_from_slice(&self.pending[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }

    fn read_uninit(&mut self, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        if buf.is_empty() || !self.fill(buf.len())? {
            return Ok(0);
        }
        let n = copy_to_uninit(&mut &self.pending[self.pos..], buf);
        self.pos += n;
        Ok(n)
    }

    fn held(&self) -> usize {
        self.pending.len() - self.pos
    }

    fn held_whole(&self) -> Option<usize> {
        self.ended.then(|| self.held())
    }
}

/// Response chunks of at least this size are written without going through the buffer.
const DIRECT: usize = 16 * 1024;

/// The response, as START/DATA frames (START is sent with the first DATA or the END); large
/// chunks in SHARED_DATA frames where the front takes them.
pub(super) struct WireSink<'a> {
    pub(super) out: BufWriter<&'a UnixStream>,
    /// The connection's response buffer, when the front takes one.
    buffer: Option<&'a mut BufferState>,
}

impl<'a> WireSink<'a> {
    /// The response to the request just read from `conn`; `buffer`: the connection's
    /// response buffer, when the request says the front takes one.
    pub(super) fn new(conn: &'a UnixStream, buffer: Option<&'a mut BufferState>) -> Self {
        WireSink {
            // Chunks of DIRECT bytes and more bypass the buffer.
            out: BufWriter::with_capacity(DIRECT + 1024, conn),
            buffer,
        }
    }

    /// Puts `part` (at most a slot) in a free slot of the connection's response buffer,
    /// making the buffer and handing it to the front first if there is none yet: the slot,
    /// or None when the front takes no buffer, none could be made, or every slot is held.
    fn fill_slot(&mut self, part: &[u8]) -> io::Result<Option<u32>> {
        let Some(state) = self.buffer.as_deref_mut() else {
            return Ok(None);
        };
        if let BufferState::None = state {
            *state = match ResponseBuffer::create() {
                Ok(buffer) => {
                    self.out.flush()?;
                    send_with_fd(
                        self.out.get_ref(),
                        &frame_header(kind::SHARED_BUFFER, 0),
                        buffer.fd().as_raw_fd(),
                    )?;
                    BufferState::Made(buffer)
                }
                Err(e) => {
                    tracing::debug!("no response buffer ({e}): chunks go through the socket");
                    BufferState::Failed
                }
            };
        }
        Ok(match state {
            BufferState::Made(buffer) => buffer.fill(part),
            _ => None,
        })
    }

    /// Sends a chunk of at least [`DIRECT`] bytes: each part in a slot of the response
    /// buffer when one is free (the frame naming it buffered), else from where it is, its
    /// frame's header beside it in one vectored write; `last`: the END frame follows at once,
    /// so the buffered frames wait for it.
    fn write_large(&mut self, chunk: &[u8], last: bool) -> io::Result<()> {
        for part in chunk.chunks(CHUNK) {
            if let Some(slot) = self.fill_slot(part)? {
                self.out
                    .write_all(&encode_shared_data(slot, part.len() as u32))?;
                continue;
            }
            // Not copied into the buffer first.
            self.out.flush()?;
            let header = frame_header(kind::DATA, part.len());
            write_all_vectored(
                self.out.get_ref(),
                &mut [IoSlice::new(&header), IoSlice::new(part)],
            )?;
        }
        if last { Ok(()) } else { self.out.flush() }
    }
}

impl ResponseSink for WireSink<'_> {
    fn start(
        &mut self,
        status: u16,
        reason: &str,
        headers: Vec<(String, Vec<u8>)>,
    ) -> io::Result<()> {
        self.out.write_all(&encode_start(status, reason, &headers))
    }

    fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        if chunk.len() < DIRECT {
            write_raw(&mut self.out, kind::DATA, chunk)?;
            return self.out.flush();
        }
        self.write_large(chunk, false)
    }

    /// What goes into the buffer only, never waits: the head (`start`, which comes first on a
    /// connection the front has read to its last END, so its socket has room even when the
    /// head fills the buffer), and a last chunk below [`DIRECT`] (`write_last`).
    fn may_wait(&self, len: usize, last: bool) -> bool {
        len > 0 && !(last && len < DIRECT)
    }

    /// Held in the buffer: the END frame follows at once, and both go out in one write.
    fn write_last(&mut self, chunk: &[u8]) -> io::Result<()> {
        if chunk.len() < DIRECT {
            return write_raw(&mut self.out, kind::DATA, chunk);
        }
        self.write_large(chunk, true)
    }

    /// The file's descriptor goes to the front with a FILE frame, and the front sends it
    /// from the file: its bytes never cross the socket.
    fn file(&mut self, fd: RawFd, offset: u64, len: u64) -> io::Result<bool> {
        self.out.flush()?;
        send_with_fd(self.out.get_ref(), &encode_file(offset, len), fd)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// What `peer` has to read now, without waiting.
    fn available(peer: &mut UnixStream) -> Vec<u8> {
        peer.set_nonblocking(true).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match peer.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        got
    }

    /// What `may_wait` says never waits goes into the buffer, not the socket: with no one
    /// reading, a head and a last chunk below DIRECT are held; a chunk sent at once, or a
    /// large last one, may wait.
    #[test]
    fn only_what_stays_in_the_buffer_never_waits() {
        let (ours, mut peer) = UnixStream::pair().unwrap();
        let mut sink = WireSink::new(&ours, None);
        assert!(!sink.may_wait(0, false));
        assert!(!sink.may_wait(DIRECT - 1, true));
        assert!(sink.may_wait(1, false));
        assert!(sink.may_wait(DIRECT, true));
        sink.start(200, "OK", Vec::new()).unwrap();
        sink.write_last(&[b'x'; DIRECT - 1]).unwrap();
        assert_eq!(available(&mut peer), b"", "held in the buffer");
        sink.out.flush().unwrap();
        assert_eq!(
            available(&mut peer).len(),
            encode_start(200, "OK", &[]).len() + frame_header(kind::DATA, 0).len() + DIRECT - 1
        );
    }

    #[test]
    fn chunks_go_out_at_once_and_the_last_waits_for_the_end() {
        let (ours, mut peer) = UnixStream::pair().unwrap();
        let mut sink = WireSink::new(&ours, None);
        sink.start(200, "OK", vec![("X".into(), b"1".to_vec())])
            .unwrap();
        sink.write(b"first").unwrap();
        let mut expected = encode_start(200, "OK", &[("X".into(), b"1".to_vec())]);
        expected.extend_from_slice(&frame_header(kind::DATA, 5));
        expected.extend_from_slice(b"first");
        assert_eq!(
            available(&mut peer),
            expected,
            "a chunk is sent as it comes"
        );

        sink.write_last(b"last").unwrap();
        assert_eq!(
            available(&mut peer),
            b"",
            "the last chunk waits for the end"
        );
        sink.out.write_all(b"END").unwrap();
        sink.out.flush().unwrap();
        let mut expected = frame_header(kind::DATA, 4).to_vec();
        expected.extend_from_slice(b"last");
        expected.extend_from_slice(b"END");
        assert_eq!(available(&mut peer), expected, "then both go out together");

        // A large last chunk is not held: it goes from where it is.
        let big = vec![7u8; DIRECT];
        sink.write_last(&big).unwrap();
        let got = available(&mut peer);
        assert_eq!(got.len(), big.len() + frame_header(kind::DATA, 0).len());
    }

    /// Reads `peer`'s frames available now, with the descriptors that came with them.
    fn frames_of(peer: &UnixStream) -> (Vec<(u8, Vec<u8>)>, Vec<std::os::fd::OwnedFd>) {
        use std::os::fd::AsRawFd;
        peer.set_nonblocking(true).unwrap();
        let mut bytes = Vec::new();
        let mut fds = std::collections::VecDeque::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match crate::fd_passing::recv_keeping_fds(peer.as_raw_fd(), &mut buf, &mut fds) {
                Ok(0) => break,
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        let mut reader = FrameReader::new(&bytes[..]);
        let mut frames = Vec::new();
        while let Some((kind, payload)) = reader.next_frame().unwrap() {
            frames.push((kind, payload.to_vec()));
        }
        (frames, fds.into())
    }

    #[test]
    fn large_chunks_go_in_slots_while_the_front_holds_few_and_through_the_socket_after() {
        use crate::protocol::decode_shared_data;
        use crate::shared_buffer::{FrontBuffer, SLOTS};

        let (ours, peer) = UnixStream::pair().unwrap();
        let mut state = BufferState::None;
        let mut sink = WireSink::new(&ours, Some(&mut state));
        sink.start(200, "OK", vec![]).unwrap();
        // A small chunk stays a DATA frame, and makes no buffer.
        sink.write(b"small").unwrap();
        let (frames, fds) = frames_of(&peer);
        let kinds: Vec<u8> = frames.iter().map(|f| f.0).collect();
        assert_eq!(kinds, [kind::START, kind::DATA]);
        assert!(fds.is_empty());

        // The first large chunk brings the buffer, then names its slot.
        let chunk = |i: usize| vec![i as u8; DIRECT + i];
        sink.write(&chunk(0)).unwrap();
        let (frames, mut fds) = frames_of(&peer);
        let kinds: Vec<u8> = frames.iter().map(|f| f.0).collect();
        assert_eq!(kinds, [kind::SHARED_BUFFER, kind::SHARED_DATA]);
        assert_eq!(fds.len(), 1, "the buffer's descriptor came with its frame");
        let front = FrontBuffer::open(fds.remove(0)).unwrap();
        let (slot, len) = decode_shared_data(&frames[1].1).unwrap();
        let mut held = vec![front.take(slot, len).unwrap()];
        assert_eq!(held[0].as_ref(), &chunk(0)[..]);

        // While the front holds every slot, chunks go through the socket, whole.
        for i in 1..SLOTS + 2 {
            sink.write(&chunk(i)).unwrap();
            let (frames, fds) = frames_of(&peer);
            assert!(fds.is_empty(), "one buffer per connection");
            assert_eq!(frames.len(), 1);
            let (kind, payload) = &frames[0];
            if i < SLOTS {
                assert_eq!(*kind, kind::SHARED_DATA, "chunk {i}");
                let (slot, len) = decode_shared_data(payload).unwrap();
                held.push(front.take(slot, len).unwrap());
                assert_eq!(held[i].as_ref(), &chunk(i)[..]);
            } else {
                assert_eq!(*kind, kind::DATA, "chunk {i}");
                assert_eq!(payload, &chunk(i));
            }
        }
        // One let go, and the next chunk has a slot again.
        held.remove(3);
        sink.write(&chunk(20)).unwrap();
        let (frames, _) = frames_of(&peer);
        assert_eq!(frames[0].0, kind::SHARED_DATA);
        let (slot, len) = decode_shared_data(&frames[0].1).unwrap();
        assert_eq!(front.take(slot, len).unwrap().as_ref(), &chunk(20)[..]);

        // A large last chunk in a slot: its frame waits for the END.
        drop(held);
        sink.write_last(&chunk(21)).unwrap();
        assert!(frames_of(&peer).0.is_empty());
        sink.out.flush().unwrap();
        let (frames, _) = frames_of(&peer);
        assert_eq!(frames[0].0, kind::SHARED_DATA);
        // More than a slot is split into slot-sized parts.
        sink.write(&vec![9u8; 2 * CHUNK + 1]).unwrap();
        let (frames, _) = frames_of(&peer);
        let lens: Vec<u32> = frames
            .iter()
            .map(|(k, p)| {
                assert_eq!(*k, kind::SHARED_DATA);
                decode_shared_data(p).unwrap().1
            })
            .collect();
        assert_eq!(lens, [CHUNK as u32, CHUNK as u32, 1]);
    }

    #[test]
    fn a_front_that_takes_no_buffer_gets_data_frames() {
        let (ours, peer) = UnixStream::pair().unwrap();
        let mut sink = WireSink::new(&ours, None);
        sink.write(&vec![1u8; CHUNK]).unwrap();
        let (frames, fds) = frames_of(&peer);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].0, kind::DATA);
        assert!(fds.is_empty());
    }
}
