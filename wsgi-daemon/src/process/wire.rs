//! A request's body and response over the front connection's frames: [`WireBody`] asks for
//! the body one BODY_WANTED at a time, [`WireSink`] writes START and DATA (and FILE, with the
//! file's descriptor, for a `wsgi.file_wrapper` response).

use std::io::{self, BufReader, BufWriter, IoSlice, Write};
use std::mem::MaybeUninit;
use std::os::fd::RawFd;
use std::os::unix::net::UnixStream;

use wsgi_interp::{RequestBody, ResponseSink, copy_to_uninit};

use crate::fd_passing::send_with_fd;
use crate::protocol::{
    CHUNK, FrameReader, ProtocolError, READ_AHEAD, encode_body_wanted, encode_file, encode_start,
    frame_header, kind, write_all_vectored, write_raw,
};

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

/// The response, as START/DATA frames (START is sent with the first DATA or the END).
pub(super) struct WireSink<'a> {
    pub(super) out: BufWriter<&'a UnixStream>,
}

impl<'a> WireSink<'a> {
    /// The response to the request just read from `conn`.
    pub(super) fn new(conn: &'a UnixStream) -> Self {
        WireSink {
            // Chunks of DIRECT bytes and more bypass the buffer.
            out: BufWriter::with_capacity(DIRECT + 1024, conn),
        }
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
        // Large chunks go from where they are, each frame's header beside its payload in one
        // vectored write: not copied into the buffer first.
        self.out.flush()?;
        for part in chunk.chunks(CHUNK) {
            let header = frame_header(kind::DATA, part.len());
            write_all_vectored(
                self.out.get_ref(),
                &mut [IoSlice::new(&header), IoSlice::new(part)],
            )?;
        }
        Ok(())
    }

    /// Held in the buffer: the END frame follows at once, and both go out in one write.
    fn write_last(&mut self, chunk: &[u8]) -> io::Result<()> {
        if chunk.len() < DIRECT {
            return write_raw(&mut self.out, kind::DATA, chunk);
        }
        self.write(chunk)
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

    #[test]
    fn chunks_go_out_at_once_and_the_last_waits_for_the_end() {
        let (ours, mut peer) = UnixStream::pair().unwrap();
        let mut sink = WireSink::new(&ours);
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
}
