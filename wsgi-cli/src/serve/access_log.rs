//! The access log in Apache's combined format
//! (`%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-agent}i"`), written by a thread of its own
//! so no I/O thread waits on the disk. A line is written when the response body is finished or
//! dropped, so `%b` counts the body bytes actually handed to the connection.

use std::io::{self, Write};
use std::net::IpAddr;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Buf;
use chrono::{DateTime, Local};
use http_body::{Body, Frame, SizeHint};

/// Where access log lines go.
#[derive(Clone)]
pub struct AccessLog {
    lines: crossbeam_channel::Sender<String>,
}

impl AccessLog {
    /// Opens `target`: `-` is standard output, anything else a file opened for appending.
    pub fn open(target: &Path) -> io::Result<(AccessLog, std::thread::JoinHandle<()>)> {
        if target == Path::new("-") {
            return Self::writing_to(Box::new(io::stdout()));
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(target)?;
        Self::from_file(file)
    }

    /// Writes to `file`, already open for appending (the master opens it, as root).
    pub fn from_file(file: std::fs::File) -> io::Result<(AccessLog, std::thread::JoinHandle<()>)> {
        Self::writing_to(Box::new(file))
    }

    fn writing_to(
        out: Box<dyn Write + Send>,
    ) -> io::Result<(AccessLog, std::thread::JoinHandle<()>)> {
        let (tx, rx) = crossbeam_channel::unbounded::<String>();
        let thread = std::thread::Builder::new()
            .name("wsgi-access-log".into())
            .spawn(move || {
                let mut out = io::BufWriter::new(out);
                while let Ok(line) = rx.recv() {
                    let _ = out.write_all(line.as_bytes());
                    while let Ok(more) = rx.try_recv() {
                        let _ = out.write_all(more.as_bytes());
                    }
                    if let Err(e) = out.flush() {
                        tracing::error!("cannot write the access log: {e}");
                    }
                }
            })?;
        Ok((AccessLog { lines: tx }, thread))
    }

    /// Queues one line (with its newline) for the log.
    pub fn write_line(&self, line: String) {
        let _ = self.lines.send(line);
    }
}

/// What is known about a request when it arrives.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// `%h`.
    pub remote: IpAddr,
    /// `%t`: when the request was received.
    pub time: DateTime<Local>,
    /// `%r`: method, target and protocol, as received.
    pub request_line: Vec<u8>,
    /// `%{Referer}i`.
    pub referer: Option<Vec<u8>>,
    /// `%{User-agent}i`.
    pub user_agent: Option<Vec<u8>>,
}

/// Apache's escaping of logged strings: `"` and `\` backslashed, control and non-ASCII bytes as
/// `\xhh`.
fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

impl RequestRecord {
    /// The combined-format line for this request.
    pub fn line(&self, status: u16, bytes: u64) -> String {
        let header = |v: &Option<Vec<u8>>| v.as_deref().map_or("-".to_string(), escape);
        format!(
            "{} - - [{}] \"{}\" {} {} \"{}\" \"{}\"\n",
            self.remote,
            self.time.format("%d/%b/%Y:%H:%M:%S %z"),
            escape(&self.request_line),
            status,
            if bytes == 0 {
                "-".to_string()
            } else {
                bytes.to_string()
            },
            header(&self.referer),
            header(&self.user_agent),
        )
    }
}

/// A response body that counts what it yields and logs the request when it is dropped.
pub struct LoggedBody<B> {
    inner: B,
    log: Option<(AccessLog, RequestRecord)>,
    status: u16,
    bytes: u64,
}

impl<B> LoggedBody<B> {
    /// Wraps `inner`; with no log it only passes through.
    pub fn new(inner: B, log: Option<(AccessLog, RequestRecord)>, status: u16) -> Self {
        LoggedBody {
            inner,
            log,
            status,
            bytes: 0,
        }
    }
}

impl<B> Drop for LoggedBody<B> {
    fn drop(&mut self) {
        if let Some((log, record)) = self.log.take() {
            log.write_line(record.line(self.status, self.bytes));
        }
    }
}

impl<B> Body for LoggedBody<B>
where
    B: Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.bytes += data.remaining() as u64;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn combined_format() {
        let record = RequestRecord {
            remote: "127.0.0.1".parse().unwrap(),
            time: Local.with_ymd_and_hms(2000, 10, 10, 13, 55, 36).unwrap(),
            request_line: b"GET /apache_pb.gif HTTP/1.0".to_vec(),
            referer: Some(b"http://www.example.com/start.html".to_vec()),
            user_agent: Some(b"Mozilla/4.08 \"x\"\x01".to_vec()),
        };
        let line = record.line(200, 2326);
        assert!(
            line.starts_with("127.0.0.1 - - [10/Oct/2000:13:55:36 "),
            "{line}"
        );
        assert!(
            line.ends_with(
                "] \"GET /apache_pb.gif HTTP/1.0\" 200 2326 \"http://www.example.com/start.html\" \"Mozilla/4.08 \\\"x\\\"\\x01\"\n"
            ),
            "{line}"
        );
        let empty = RequestRecord {
            referer: None,
            user_agent: None,
            ..record
        };
        assert!(empty.line(304, 0).ends_with("304 - \"-\" \"-\"\n"));
    }
}
