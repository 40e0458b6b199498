//! A raw HTTP/1.1 client for the tests: requests written byte for byte over real sockets,
//! responses read until the server closes, and the tests' own minimal readings of a response
//! (the head, `Content-Length` and chunked bodies; lenient or strict, as the test needs).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// A TCP port on 127.0.0.1 that was free a moment ago (the kernel picked it; nothing holds it
/// now, so a server started next can usually bind it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where `needle` first occurs in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `GET TARGET HTTP/1.1` with `Host: HOST` and `Connection: close`.
pub fn get_request(target: &str, host: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes()
}

/// A whole request: `METHOD TARGET HTTP/1.1`, `Connection: close`, `Host: HOST` unless
/// `headers` has a Host, `headers`, a `Content-Length` of the body when `content_length`, and
/// the body.
pub fn request_bytes(
    method: &str,
    target: &str,
    host: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    content_length: bool,
) -> Vec<u8> {
    let mut head = format!("{method} {target} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {host}\r\n"));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if content_length {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body);
    raw
}

/// A connection to `addr` whose reads time out after `read_timeout`.
pub fn connect(addr: SocketAddr, read_timeout: Duration) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(read_timeout)).unwrap();
    s
}

/// Sends `request` on a new connection to `addr` and returns everything read until the
/// server closes; a read error (a reset, the read timeout) ends the read with what came
/// before it.
pub fn exchange(addr: SocketAddr, request: &[u8], read_timeout: Duration) -> Vec<u8> {
    let mut s = connect(addr, read_timeout);
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// Reads until the server closes; a reset ends the read too, any other error (the read
/// timeout) fails the test.
pub fn read_to_close(s: &mut impl Read) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading the response: {e}"),
        }
    }
    out
}

/// How a chunked body ended, as [`dechunk_prefix`] read it.
enum ChunksEnd<'a> {
    /// The last chunk's size line (`0`) was read; what follows it is in `rest`.
    Last,
    /// A chunk's size line has no end.
    NoSizeLine,
    /// A chunk's size is not hexadecimal (the line as given).
    BadSize(String),
    /// A chunk of `size` bytes is cut short (or lacks its CRLF): its bytes that came.
    CutShort { size: usize, partial: &'a [u8] },
}

/// A chunked body's decoding as far as it goes.
struct Chunks<'a> {
    /// The data of the whole chunks read.
    body: Vec<u8>,
    end: ChunksEnd<'a>,
    /// What follows: after the last chunk's size line, or from the line that could not be
    /// read (nothing after a cut-short chunk).
    rest: &'a [u8],
}

/// Decodes the chunked body at the start of `data`, as far as it goes.
fn dechunk_prefix(mut data: &[u8]) -> Chunks<'_> {
    let mut body = Vec::new();
    let end = loop {
        let Some(line_end) = find(data, b"\r\n") else {
            break ChunksEnd::NoSizeLine;
        };
        let size_text = String::from_utf8_lossy(&data[..line_end]).to_string();
        let Ok(size) = usize::from_str_radix(size_text.trim(), 16) else {
            break ChunksEnd::BadSize(size_text);
        };
        let after = &data[line_end + 2..];
        if size == 0 {
            data = after;
            break ChunksEnd::Last;
        }
        if after.len() < size + 2 {
            data = &[];
            break ChunksEnd::CutShort {
                size,
                partial: &after[..size.min(after.len())],
            };
        }
        body.extend_from_slice(&after[..size]);
        data = &after[size + 2..];
    };
    Chunks {
        body,
        end,
        rest: data,
    }
}

/// Removes chunked framing; None when the body does not end with the final `0` chunk.
pub fn dechunk(data: &[u8]) -> Option<Vec<u8>> {
    let chunks = dechunk_prefix(data);
    matches!(chunks.end, ChunksEnd::Last).then_some(chunks.body)
}

/// The head's lines after the status line as (lowercased name, value) pairs.
fn header_fields(head: &str) -> Vec<(String, String)> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect()
}

/// Splits a raw response: (status, head, body with chunked encoding removed when complete:
/// a cut-short chunked body stays as it came). Everything after the head is the body.
pub fn split_response(raw: &[u8]) -> (u16, String, Vec<u8>) {
    let split = find(raw, b"\r\n\r\n").expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body).unwrap_or(body);
    }
    (status, head, body)
}

/// The value of the response header `name` (case-insensitive) in a head from
/// [`split_response`] (its status line skipped).
pub fn head_header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    header_value(head.split_once('\n').map_or("", |(_, fields)| fields), name)
}

/// The value of the first header `name` (case-insensitive) among the `Name: value` lines of
/// `lines` (every line read as one: a head with its status line, or the fields alone).
pub fn header_value<'a>(lines: &'a str, name: &str) -> Option<&'a str> {
    lines.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// One parsed response (the test's own minimal reading of HTTP/1.1, chunked included).
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The header fields in order, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body, chunked framing removed.
    pub body: Vec<u8>,
    /// Bytes after this response (pipelined ones).
    pub rest: Vec<u8>,
    /// A chunked body ended with its terminating chunk (or a framed body came whole).
    pub complete: bool,
}

impl Response {
    /// Lenient: a cut-short body is kept and marked incomplete.
    pub fn parse(raw: &[u8]) -> Response {
        Self::parse_for(raw, false)
    }

    /// [`Response::parse`] of the answer to a HEAD request (when `head_request`: no body,
    /// whatever its Content-Length says).
    pub fn parse_for(raw: &[u8], head_request: bool) -> Response {
        let end = find(raw, b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no end of headers in {:?}", String::from_utf8_lossy(raw)));
        let head = String::from_utf8_lossy(&raw[..end]).to_string();
        let status = head
            .split("\r\n")
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers = header_fields(&head);
        let mut rest = &raw[end + 4..];
        let header = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let mut body = Vec::new();
        let mut complete = true;
        if head_request || status == 304 || status == 100 {
        } else if header("transfer-encoding").as_deref() == Some("chunked") {
            let chunks = dechunk_prefix(rest);
            body = chunks.body;
            rest = chunks.rest;
            complete = false;
            match chunks.end {
                ChunksEnd::Last => {
                    if rest.starts_with(b"\r\n") {
                        rest = &rest[2..];
                        complete = true;
                    }
                }
                ChunksEnd::CutShort { partial, .. } => body.extend_from_slice(partial),
                ChunksEnd::NoSizeLine | ChunksEnd::BadSize(_) => {}
            }
        } else if let Some(len) = header("content-length") {
            let len: usize = len.parse().unwrap();
            let take = len.min(rest.len());
            body = rest[..take].to_vec();
            complete = take == len;
            rest = &rest[take..];
        } else {
            body = rest.to_vec();
            rest = &[];
        }
        Response {
            status,
            headers,
            body,
            rest: rest.to_vec(),
            complete,
        }
    }

    /// Strict: a bad status line, chunk or Content-Length, or a cut-short body, is an error.
    pub fn try_parse(raw: &[u8]) -> Result<Response, String> {
        let end = find(raw, b"\r\n\r\n").ok_or_else(|| {
            format!(
                "no end of headers in {:?}",
                String::from_utf8_lossy(&raw[..raw.len().min(2000)])
            )
        })?;
        let head = String::from_utf8_lossy(&raw[..end]).to_string();
        let status = head
            .split("\r\n")
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line in {head:?}"))?;
        let headers = header_fields(&head);
        let mut rest = &raw[end + 4..];
        let chunked = headers
            .iter()
            .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
        let body;
        if chunked {
            let chunks = dechunk_prefix(rest);
            match chunks.end {
                ChunksEnd::Last => {}
                ChunksEnd::NoSizeLine => return Err("a chunk size line is cut short".into()),
                ChunksEnd::BadSize(text) => return Err(format!("bad chunk size {text:?}")),
                ChunksEnd::CutShort { .. } => return Err("a chunk is cut short".into()),
            }
            body = chunks.body;
            rest = chunks.rest;
        } else if let Some((_, len)) = headers.iter().find(|(n, _)| n == "content-length") {
            let len: usize = len
                .parse()
                .map_err(|_| format!("bad Content-Length {len}"))?;
            if rest.len() < len {
                return Err(format!("body cut short: {} of {len} bytes", rest.len()));
            }
            body = rest[..len].to_vec();
            rest = &rest[len..];
        } else {
            body = rest.to_vec();
            rest = &[];
        }
        Ok(Response {
            status,
            headers,
            body,
            rest: rest.to_vec(),
            complete: true,
        })
    }

    /// The parts [`split_response`] gives, as a [`Response`] (nothing after it, complete).
    pub fn from_parts(status: u16, head: &str, body: Vec<u8>) -> Response {
        Response {
            status,
            headers: header_fields(head),
            body,
            rest: Vec::new(),
            complete: true,
        }
    }

    /// The value of the header `name` (lowercase), the first when it repeats.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
}

/// A response read as text: the status and the body (unchunked), everything after the head.
#[derive(Debug)]
pub struct TextResponse {
    /// The status code.
    pub status: u16,
    /// The body, chunked framing removed (a cut-short chunk left out).
    pub body: String,
}

/// One GET on a new connection to `addr` (`Host: localhost`, `Connection: close`, 30 s read
/// timeout); the body is read to the close, read errors ending the read (a daemon that dies
/// mid-response).
pub fn get_text(addr: SocketAddr, path: &str) -> TextResponse {
    let raw = exchange(
        addr,
        &get_request(path, "localhost"),
        Duration::from_secs(30),
    );
    let end = find(&raw, b"\r\n\r\n").unwrap_or_else(|| {
        panic!(
            "no response head in {:?}",
            String::from_utf8_lossy(&raw).to_string()
        )
    });
    let head = String::from_utf8_lossy(&raw[..end]);
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let rest = &raw[end + 4..];
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        let chunks = dechunk_prefix(rest);
        let mut body = chunks.body;
        // A chunk whose bytes all came counts, even without its CRLF.
        if let ChunksEnd::CutShort { size, partial } = chunks.end
            && partial.len() == size
        {
            body.extend_from_slice(partial);
        }
        body
    } else {
        rest.to_vec()
    };
    TextResponse {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// The `Authorization` value of HTTP Basic authentication for `user` and `password`.
pub fn basic_auth(user: &str, password: &str) -> String {
    format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
}

/// Standard base64 (RFC 4648, with padding).
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}
