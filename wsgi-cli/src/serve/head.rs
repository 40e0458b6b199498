//! A pre-parse in front of hyper that lets request targets Apache accepts through.
//!
//! Apache takes a request target as the bytes the client sent: raw UTF-8
//! (`GET /caf\xc3\xa9/x HTTP/1.1`), raw latin-1 (`GET /caf\xe9/x`) and printable ASCII the
//! `http` crate's URI parser refuses (`<`, `>`, `` ` `` in the path; `"`, `<`, `>` in the query)
//! all reach the application, whose `REQUEST_URI` is the raw target and whose `PATH_INFO` is the
//! percent-decoded path. hyper refuses them with 400: httparse wants the target to be UTF-8, and
//! `http::uri::PathAndQuery` rejects some printable bytes.
//!
//! [`HeadTap`] wraps the connection's byte stream. It finds each request head, percent-encodes
//! (`%XX`, uppercase hex) just the bytes of the request target hyper would refuse, and records
//! the raw target in [`Heads`] so the server can give the application the raw `REQUEST_URI`.
//! Percent-decoding the rewritten path gives the same bytes as percent-decoding the raw one, so
//! `PATH_INFO` is unchanged by the rewrite.
//!
//! # Why a pre-parse, and not a fork of httparse or `http`
//!
//! Forking httparse, `http` and hyper to relax a few byte tables would mean carrying three forks
//! of security-sensitive parsers forever, and the relaxed `Uri` would then have to hold bytes
//! that are not UTF-8, which `http::Uri` promises never to do. The pre-parse keeps the stock
//! crates: it only ever turns bytes hyper refuses into `%XX`, which hyper accepts, so hyper
//! still does all the parsing and validation it does today.
//!
//! # Why passthrough on anything unusual
//!
//! The danger of a pre-parse is disagreement: if the tap and hyper ever disagreed about where a
//! request starts, the tap could rewrite bytes hyper treats as a request body (a smuggled
//! request in a body would be "fixed up", or a body corrupted). So the tap follows the message
//! framing exactly as hyper 1.12 does, and whenever anything is unusual it stops for good on
//! that connection: it switches to *passthrough*, forwards every byte unchanged and records
//! nothing more. hyper then sees exactly what it would have seen without the tap (it answers
//! 400/431 itself to what it refuses), and the server falls back to hyper's URI. Unusual means:
//! a head httparse cannot parse (after the target rewrite) or longer than the tap's maximum;
//! more header fields than the maximum; a `Transfer-Encoding` other than exactly one `chunked`
//! coding, or with HTTP/1.0, or together with `Content-Length`; more than one `Content-Length`,
//! or one that does not parse; chunk extensions (httparse's `parse_chunk_size` accepts bytes in
//! them, and a size line with no digit or leading blanks, that hyper's decoder refuses), chunk
//! trailers, a malformed chunk size line or a missing CRLF after chunk data; obs-fold (httparse
//! refuses it in requests); more than [`MAX_QUEUED`] records nobody took. Heads whose next bytes
//! are not an HTTP message hyper frames itself (`Expect`, which makes hyper send `100 Continue`
//! and maybe skip the body; `CONNECT`; `Upgrade`) are rewritten and recorded, and the tap goes
//! passthrough right after them.
//!
//! # The framing, as hyper 1.12 does it for requests
//!
//! * The head ends at the first empty line; leading empty lines (CRLF or bare LF) are skipped by
//!   httparse (`httparse::Request::parse` → `skip_empty_lines`), and bare LF line ends are
//!   accepted. hyper parses it with `ParserConfig::default()` (`src/proto/h1/role.rs:176`,
//!   `src/server/conn/http1.rs:245`); the tap parses the rewritten head with the same httparse
//!   and refuses (passthrough) unless httparse completes exactly at the empty line it found.
//! * `Transfer-Encoding` (`role.rs:275-294`): refused with HTTP/1.0 (`role.rs:280`); chunked
//!   when the last coding is `chunked` (`headers.rs:159`), else 400 (`role.rs:354`); it wins
//!   over `Content-Length` (`role.rs:285`, `role.rs:359`). The tap takes only one field whose
//!   value is exactly `chunked` (any case) and no `Content-Length`.
//! * `Content-Length` (`role.rs:295-314`): digits only (`headers.rs:101`), repeated equal
//!   values allowed, at most `u64::MAX - 2` (`body/length.rs:18`, `body/length.rs:56`); `0`
//!   means no body (`conn.rs:309`). The tap takes exactly one field.
//! * Neither: no body (`role.rs:242`, `DecodedLength::ZERO`).
//! * `Expect` (`role.rs:328`, `conn.rs:317`), `CONNECT` (`role.rs:248`) and `Upgrade`
//!   (`role.rs:334`): see above.
//! * A `Content-Length` body is exactly that many bytes (`decode.rs:151`).
//! * A chunked body (`decode.rs:345-637`): a size line starting with a hex digit
//!   (`read_start`, `decode.rs:345`), more hex digits, optional blanks, an optional extension
//!   (`decode.rs:426`), CRLF (`decode.rs:457`); then the data (`decode.rs:479`) and CRLF
//!   (`decode.rs:508`, `decode.rs:520`); the last chunk has size 0 and is followed by trailers
//!   or directly by CRLF (`read_end_cr`/`read_end_lf`, `decode.rs:588`, `decode.rs:619`). The
//!   tap parses the size line with `httparse::parse_chunk_size`, after checking it starts with
//!   a hex digit and has no extension, so that it agrees with the decoder byte for byte.
//!
//! Whenever the tap holds no bytes, it reads straight into the caller's (hyper's) buffer: body
//! bytes never past the end of the body; at the start of a head, whatever the socket has. Those
//! stay where they are when they are one whole head the tap records without a rewrite, followed
//! by no more than its body (the common case, which costs no copy); anything else (a partial
//! head, a target to rewrite, a head to refuse, a pipelined request, chunk framing) moves to the
//! tap's own buffer before hyper sees it. So every head hyper reads went through the tap.
//!
//! # Limits and assumptions
//!
//! * hyper must parse with httparse's default configuration (no
//!   `allow_multiple_spaces_in_request_line_delimiters`, no `ignore_invalid_headers`): a head
//!   the tap refuses is passed through, which is always safe, but a head hyper parses in a
//!   laxer way than the tap could be framed differently.
//! * A rewritten head is longer than the raw one (each rewritten byte becomes three), and hyper
//!   applies its header size limit (and its 65534-byte URI limit) to what it sees.
//! * The server calls [`Heads::next`] once for every request hyper hands it, in order.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most records [`Heads`] keeps that the server has not taken; the tap goes passthrough
/// rather than queue more (hyper serves requests one at a time, so a handful is the most a
/// server that takes its records ever leaves).
pub const MAX_QUEUED: usize = 64;

/// How many bytes the tap asks for when it reads into its own buffer.
const READ_SIZE: usize = 8 * 1024;
/// The least room a read into the tap's buffer is made with.
const MIN_READ: usize = 1024;
/// The most bytes of a connection's first read after a pause, read on the stack.
const FIRST_READ: usize = 4 * 1024;

/// Header slots on the stack; a larger `max_headers` takes a heap vector per head.
const STACK_HEADERS: usize = 128;

/// The longest chunk size line the tap waits for (hyper takes any number of blanks after the
/// size; the tap goes passthrough instead of buffering them).
const MAX_CHUNK_LINE: usize = 1024;

/// The most bytes of a partial request line kept for [`Heads::last_request_line`].
const MAX_NOTED_LINE: usize = 16 * 1024;

/// Uppercase hexadecimal digits for `%XX`.
const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Which bytes are rewritten, in the path and in the query: every byte >= 0x80, and the
/// printable ASCII bytes `http::uri::PathAndQuery` refuses there (never `%` nor `#`).
struct Tables {
    path: [bool; 256],
    query: [bool; 256],
}

/// Computed once from the `http` crate in use, so the rule follows its version.
static TABLES: LazyLock<Tables> = LazyLock::new(|| {
    let mut tables = Tables {
        path: [false; 256],
        query: [false; 256],
    };
    for b in 0..=255u8 {
        let i = usize::from(b);
        if b >= 0x80 {
            tables.path[i] = true;
            tables.query[i] = true;
        } else if (0x21..=0x7e).contains(&b) && b != b'%' && b != b'#' {
            tables.path[i] = http::uri::PathAndQuery::try_from(&[b'/', b][..]).is_err();
            tables.query[i] = http::uri::PathAndQuery::try_from(&[b'/', b'?', b][..]).is_err();
        }
    }
    tables
});

/// Where in the target a byte is, as `http::uri::PathAndQuery` sees it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    Path,
    Query,
    Fragment,
}

/// Whether `b` is rewritten, advancing `section` past `?` and `#`.
#[inline]
fn must_encode(tables: &Tables, section: &mut Section, b: u8) -> bool {
    match *section {
        Section::Path => match b {
            b'?' => {
                *section = Section::Query;
                false
            }
            b'#' => {
                *section = Section::Fragment;
                false
            }
            _ => tables.path[usize::from(b)],
        },
        Section::Query => {
            if b == b'#' {
                *section = Section::Fragment;
                false
            } else {
                tables.query[usize::from(b)]
            }
        }
        // `http` drops the fragment unchecked; httparse still wants UTF-8.
        Section::Fragment => b >= 0x80,
    }
}

/// Where the part of a target that may be rewritten begins: the whole of an origin-form target
/// (`/...`), the path and query of an absolute-form one (`scheme://authority/...`, the authority
/// left alone), nothing of the others (`*`, authority-form).
fn rewritable_start(target: &[u8]) -> Option<usize> {
    if target.first() == Some(&b'/') {
        return Some(0);
    }
    let colon = target.iter().position(|&b| b == b':')?;
    let scheme = &target[..colon];
    let scheme_ok = scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !scheme_ok || !target[colon..].starts_with(b"://") {
        return None;
    }
    let authority = colon + 3;
    let rest = &target[authority..];
    Some(
        authority
            + rest
                .iter()
                .position(|&b| matches!(b, b'/' | b'?' | b'#'))
                .unwrap_or(rest.len()),
    )
}

/// How many bytes of `part` (from [`rewritable_start`] on) are rewritten.
fn count_encoded(part: &[u8]) -> usize {
    let tables = &*TABLES;
    let mut section = Section::Path;
    part.iter()
        .filter(|&&b| must_encode(tables, &mut section, b))
        .count()
}

/// Appends `part` to `out`, the bytes [`must_encode`] picks as `%XX`.
fn encode_into<B: BufMut>(part: &[u8], out: &mut B) {
    let tables = &*TABLES;
    let mut section = Section::Path;
    let mut plain = 0;
    for (i, &b) in part.iter().enumerate() {
        if must_encode(tables, &mut section, b) {
            out.put_slice(&part[plain..i]);
            out.put_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
            plain = i + 1;
        }
    }
    out.put_slice(&part[plain..]);
}

/// The request target as hyper will see it: `raw` with the bytes hyper would refuse
/// percent-encoded (`%XX`, uppercase hex), or None when nothing needs encoding.
///
/// Rewritten: every byte >= 0x80, and the printable ASCII bytes `http::uri::PathAndQuery`
/// refuses in the path or (after the first `?`) in the query. Never control bytes, space, DEL,
/// `%` or `#`. Only origin-form targets and the path of absolute-form ones are rewritten.
pub fn encode_target(raw: &[u8]) -> Option<Vec<u8>> {
    let start = rewritable_start(raw)?;
    let count = count_encoded(&raw[start..]);
    if count == 0 {
        return None;
    }
    let mut out = Vec::with_capacity(raw.len() + 2 * count);
    out.extend_from_slice(&raw[..start]);
    encode_into(&raw[start..], &mut out);
    Some(out)
}

/// The target's range in a request line that is exactly `METHOD SP TARGET SP HTTP/d.d`.
fn split_request_line(line: &[u8]) -> Option<(usize, usize)> {
    let sp = line.iter().position(|&b| b == b' ')?;
    // METHOD SP at least one target byte SP HTTP/d.d
    if sp == 0 || line.len() < sp + 2 + 9 {
        return None;
    }
    let version_sp = line.len() - 9;
    let version = &line[version_sp + 1..];
    if line[version_sp] != b' '
        || !version.starts_with(b"HTTP/")
        || !version[5].is_ascii_digit()
        || version[6] != b'.'
        || !version[7].is_ascii_digit()
    {
        return None;
    }
    let target = &line[sp + 1..version_sp];
    if target.is_empty() || target.contains(&b' ') {
        return None;
    }
    Some((sp + 1, version_sp))
}

/// A request head the tap saw, as the client sent it and as hyper got it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawHead {
    /// The head as sent.
    head: Bytes,
    /// The request line in `head`, without its line end.
    line: std::ops::Range<usize>,
    /// The target in `head`.
    target: std::ops::Range<usize>,
    /// The head as hyper got it and the target in it, when the tap rewrote the target.
    rewritten: Option<(Bytes, std::ops::Range<usize>)>,
}

impl RawHead {
    /// The raw request line, without its line end.
    pub fn request_line(&self) -> Bytes {
        self.head.slice(self.line.clone())
    }

    /// The raw request target.
    pub fn target(&self) -> Bytes {
        self.head.slice(self.target.clone())
    }

    /// The target hyper parsed (the raw one unless [`RawHead::rewritten`]).
    pub fn rewritten_target(&self) -> &[u8] {
        match &self.rewritten {
            Some((head, range)) => &head[range.clone()],
            None => &self.head[self.target.clone()],
        }
    }

    /// The length of the head as sent (request line, fields and the empty line).
    pub fn len(&self) -> usize {
        self.head.len()
    }

    /// Whether the head is empty (never, for a head the tap recorded).
    pub fn is_empty(&self) -> bool {
        self.head.is_empty()
    }

    /// Whether the tap percent-encoded some bytes of the target.
    pub fn rewritten(&self) -> bool {
        self.rewritten.is_some()
    }

    /// The request method, as sent.
    pub fn method(&self) -> &[u8] {
        let line = &self.head[self.line.clone()];
        let end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
        &line[..end]
    }
}

/// Whether hyper's view of a target (`seen`) is the `rewritten` one the tap recorded: the same
/// bytes, or the same without the fragment (`http` drops it), or (absolute-form) its path and
/// query.
fn target_matches(rewritten: &[u8], seen: &[u8]) -> bool {
    if rewritten == seen {
        return true;
    }
    let no_fragment = match rewritten.iter().position(|&b| b == b'#') {
        Some(i) => &rewritten[..i],
        None => rewritten,
    };
    if no_fragment == seen {
        return true;
    }
    match rewritable_start(no_fragment) {
        Some(start) if start > 0 => &no_fragment[start..] == seen,
        _ => false,
    }
}

/// What [`HeadTap`] and the server share.
#[derive(Debug, Default)]
struct Shared {
    queue: VecDeque<RawHead>,
    /// The raw request line of the latest head (reused buffer).
    last_line: Vec<u8>,
    has_line: bool,
    passthrough: bool,
}

/// The records of a [`HeadTap`], for the server (cloneable; all clones see the same records).
#[derive(Debug, Clone)]
pub struct Heads {
    shared: Arc<Mutex<Shared>>,
}

impl Heads {
    /// Takes the oldest record, if it is the head of the request hyper parsed: its method is
    /// `method` and its rewritten target is `target_seen_by_hyper` (the target as hyper parsed
    /// it, e.g. `uri.path_and_query()`; a fragment, or the scheme and authority of an
    /// absolute-form target, may be missing). Otherwise the records are out of sync with hyper:
    /// they are all dropped and None is returned (the server then uses hyper's URI).
    pub fn next(&self, method: &str, target_seen_by_hyper: &[u8]) -> Option<RawHead> {
        let mut shared = self.shared.lock();
        let head = shared.queue.pop_front()?;
        if head.method() == method.as_bytes()
            && target_matches(head.rewritten_target(), target_seen_by_hyper)
        {
            Some(head)
        } else {
            // Out of sync: the tap records nothing more on this connection (a later record
            // could otherwise be taken for another request's).
            shared.queue.clear();
            shared.passthrough = true;
            None
        }
    }

    /// The raw request line (without line end) of the latest head the tap saw that has not
    /// reached the service, complete or not (a partial line holds what has arrived): for
    /// logging a request hyper refused. None when every head went through (an idle
    /// connection).
    pub fn last_request_line(&self) -> Option<Bytes> {
        let shared = self.shared.lock();
        if shared.has_line {
            return Some(Bytes::copy_from_slice(&shared.last_line));
        }
        shared.queue.back().map(RawHead::request_line)
    }

    /// Whether the tap has switched this connection to passthrough (it records nothing more).
    pub fn is_passthrough(&self) -> bool {
        self.shared.lock().passthrough
    }

    /// How many records wait to be taken.
    pub fn queued(&self) -> usize {
        self.shared.lock().queue.len()
    }

    /// Notes the request line (or what has arrived of it), cut to [`MAX_NOTED_LINE`].
    fn note_line(&self, line: &[u8]) {
        let line = &line[..line.len().min(MAX_NOTED_LINE)];
        let mut shared = self.shared.lock();
        shared.last_line.clear();
        shared.last_line.extend_from_slice(line);
        shared.has_line = true;
    }
}

/// Where the tap is in the byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Gathering a request head in the buffer.
    Head,
    /// In a `Content-Length` body: bytes left.
    Body(u64),
    /// Before a chunk size line.
    ChunkLine,
    /// In a chunk's data: bytes left.
    ChunkData(u64),
    /// Before the CRLF that ends a chunk's data.
    ChunkCrlf,
    /// After the last chunk's size line, before the final CRLF.
    LastCrlf,
    /// Forwarding everything unchanged, for good.
    Passthrough,
}

/// What [`find_head`] found in the buffer.
enum HeadScan {
    /// The head is not complete. `line`: where the request line starts, and where it ends
    /// (without line end) if its end arrived. `scan`: where to resume looking for the end.
    More {
        line: Option<(usize, Option<usize>)>,
        scan: usize,
    },
    /// A CR not followed by LF before the request line (httparse refuses it).
    Bad,
    /// A complete head: request line `start..line_end`, head `..end` (leading empty lines
    /// included).
    Found {
        start: usize,
        line_end: usize,
        end: usize,
    },
}

/// Finds the end of the head at the start of `buf`, resuming the search at `scan`.
fn find_head(buf: &[u8], scan: usize) -> HeadScan {
    // Leading empty lines, as httparse's skip_empty_lines.
    let mut p = 0;
    loop {
        match buf.get(p) {
            Some(b'\n') => p += 1,
            Some(b'\r') => match buf.get(p + 1) {
                Some(b'\n') => p += 2,
                Some(_) => return HeadScan::Bad,
                None => {
                    return HeadScan::More {
                        line: None,
                        scan: 0,
                    };
                }
            },
            Some(_) => break,
            None => {
                return HeadScan::More {
                    line: None,
                    scan: 0,
                };
            }
        }
    }
    let Some(q) = memchr::memchr(b'\n', &buf[p..]).map(|i| p + i) else {
        return HeadScan::More {
            line: Some((p, None)),
            scan: 0,
        };
    };
    let line_end = if buf[q - 1] == b'\r' { q - 1 } else { q };
    let line = Some((p, Some(line_end)));
    // The first empty line: LF LF or LF CR LF (the request line's LF included).
    let mut i = scan.max(q);
    loop {
        let Some(j) = memchr::memchr(b'\n', &buf[i..]).map(|k| i + k) else {
            return HeadScan::More {
                line,
                scan: buf.len(),
            };
        };
        match buf.get(j + 1) {
            None => return HeadScan::More { line, scan: j },
            Some(b'\n') => {
                return HeadScan::Found {
                    start: p,
                    line_end,
                    end: j + 2,
                };
            }
            Some(b'\r') => match buf.get(j + 2) {
                None => return HeadScan::More { line, scan: j },
                Some(b'\n') => {
                    return HeadScan::Found {
                        start: p,
                        line_end,
                        end: j + 3,
                    };
                }
                Some(_) => i = j + 1,
            },
            Some(_) => i = j + 1,
        }
    }
}

/// `Content-Length` digits, as hyper's `from_digits` (`headers.rs:101`).
fn from_digits(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() {
        return None;
    }
    bytes.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// Parses a complete head (as hyper will get it) and returns what follows it, or None when it
/// is unusual (passthrough from this head on, unchanged and unrecorded).
fn analyze(head: &[u8], max_headers: usize) -> Option<State> {
    let mut stack = [MaybeUninit::<httparse::Header<'_>>::uninit(); STACK_HEADERS];
    let mut heap = Vec::new();
    let slots: &mut [MaybeUninit<httparse::Header<'_>>] = if max_headers <= STACK_HEADERS {
        &mut stack[..max_headers]
    } else {
        heap.resize(max_headers, MaybeUninit::uninit());
        &mut heap[..]
    };
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(head, slots) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        _ => return None,
    }
    let http11 = req.version? == 1;
    let connect = req.method? == "CONNECT";
    let (mut te, mut chunked, mut cl, mut cl_value) = (0usize, false, 0usize, None);
    let (mut expect, mut upgrade) = (false, false);
    for header in req.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("transfer-encoding") {
            te += 1;
            chunked = header.value.trim_ascii().eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            cl += 1;
            cl_value = from_digits(header.value);
        } else if name.eq_ignore_ascii_case("expect") {
            expect = true;
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        }
    }
    let next = if te > 0 {
        if te > 1 || !chunked || !http11 || cl > 0 {
            return None;
        }
        State::ChunkLine
    } else {
        match (cl, cl_value) {
            (0, _) | (1, Some(0)) => State::Head,
            (1, Some(n)) if n <= u64::MAX - 2 => State::Body(n),
            _ => return None,
        }
    };
    if expect || upgrade || connect {
        return Some(State::Passthrough);
    }
    Some(next)
}

/// What a step of the state machine asks for.
enum Step {
    /// The state (or the bytes to hand out) changed: go on.
    Go,
    /// More bytes are needed in the buffer.
    More,
}

/// How a complete head is recorded (see [`HeadTap::plan_head`]).
struct HeadPlan {
    /// The request line, without its line end.
    line: std::ops::Range<usize>,
    /// The target.
    target: std::ops::Range<usize>,
    /// The head as hyper gets it and the target in it, when the target is rewritten.
    rewritten: Option<(Bytes, std::ops::Range<usize>)>,
    /// The state after the head.
    next: State,
}

/// A byte stream wrapper that rewrites request targets hyper would refuse and records them
/// (see the module documentation). Writes go through untouched.
pub struct HeadTap<S> {
    inner: S,
    /// Bytes read from `inner` and not handed out yet.
    buf: BytesMut,
    /// Bytes ready to hand out before anything else (a head, a chunk line, a CRLF).
    out: Bytes,
    state: State,
    max_head: usize,
    max_headers: usize,
    /// Where to resume looking for the end of the head.
    scan: usize,
    /// Whether the current head's complete request line has been noted.
    line_noted: bool,
    heads: Heads,
}

impl<S> HeadTap<S> {
    /// Wraps `inner`. `max_head`: the most bytes a head may have (hyper's max header size);
    /// `max_headers`: the most header fields (hyper's max headers). Returns the tap and the
    /// handle the server reads the records from.
    pub fn new(inner: S, max_head: usize, max_headers: usize) -> (HeadTap<S>, Heads) {
        let heads = Heads {
            shared: Arc::new(Mutex::new(Shared::default())),
        };
        let tap = HeadTap {
            inner,
            buf: BytesMut::new(),
            out: Bytes::new(),
            state: State::Head,
            max_head,
            max_headers,
            scan: 0,
            line_noted: false,
            heads: heads.clone(),
        };
        (tap, heads)
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Whether the tap has switched to passthrough.
    pub fn is_passthrough(&self) -> bool {
        self.state == State::Passthrough
    }

    /// Whether the tap holds nothing of a request: no part of a head (nor of a body) read and
    /// not handed out, and none expected.
    pub fn between_requests(&self) -> bool {
        matches!(self.state, State::Head | State::Passthrough)
            && self.buf.is_empty()
            && self.out.is_empty()
    }

    /// Puts back `bytes` that were handed out but not used (what hyper had read and not
    /// parsed when it let the stream go): they are handed out again, first.
    pub fn unread(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        self.out = if self.out.is_empty() {
            bytes
        } else {
            let mut both = BytesMut::with_capacity(bytes.len() + self.out.len());
            both.extend_from_slice(&bytes);
            both.extend_from_slice(&self.out);
            both.freeze()
        };
    }

    /// The wrapped stream, and the bytes read from it that were not handed out yet.
    pub fn into_parts(self) -> (S, Bytes) {
        let rest = if self.out.is_empty() {
            self.buf.freeze()
        } else {
            let mut rest = BytesMut::with_capacity(self.out.len() + self.buf.len());
            rest.extend_from_slice(&self.out);
            rest.extend_from_slice(&self.buf);
            rest.freeze()
        };
        (self.inner, rest)
    }

    /// Forwards everything unchanged from now on.
    fn go_passthrough(&mut self) -> Step {
        self.state = State::Passthrough;
        self.scan = 0;
        self.heads.shared.lock().passthrough = true;
        Step::Go
    }

    /// In [`State::Head`]: looks for a complete head in the buffer and releases it.
    fn head_step(&mut self) -> Step {
        match find_head(&self.buf, self.scan) {
            HeadScan::Bad => self.go_passthrough(),
            HeadScan::More { line, scan } => {
                self.scan = scan;
                match line {
                    Some((start, Some(end))) if !self.line_noted => {
                        self.heads.note_line(&self.buf[start..end]);
                        self.line_noted = true;
                    }
                    Some((start, None)) => {
                        let partial = &self.buf[start..];
                        let partial = partial.strip_suffix(b"\r").unwrap_or(partial);
                        self.heads.note_line(partial);
                    }
                    _ => {}
                }
                if self.buf.len() >= self.max_head {
                    self.go_passthrough()
                } else {
                    Step::More
                }
            }
            HeadScan::Found {
                start,
                line_end,
                end,
            } => self.take_head(start, line_end, end),
        }
    }

    /// Releases the complete head `..end` (request line `start..line_end`), rewritten if need
    /// be, records it and moves on to what follows it; or goes passthrough.
    fn take_head(&mut self, start: usize, line_end: usize, end: usize) -> Step {
        self.line_noted = false;
        self.scan = 0;
        let Some(plan) = self.plan_head(&self.buf, (start, line_end, end), true) else {
            return self.refuse_head(start, line_end);
        };
        let raw = self.buf.split_to(end).freeze();
        let out = match &plan.rewritten {
            Some((head, _)) => head.clone(),
            None => raw.clone(),
        };
        self.record_head(raw, plan);
        self.out = out;
        Step::Go
    }

    /// Whether the complete head `bytes[..end]` (request line `start..line_end`) can be
    /// recorded, and how: its target, its rewrite (when `rewrite` allows one and the target
    /// needs it) and the state after it. `None`: the tap must refuse it (or, for `rewrite`
    /// false, let its own buffer take it).
    fn plan_head(
        &self,
        bytes: &[u8],
        (start, line_end, end): (usize, usize, usize),
        rewrite: bool,
    ) -> Option<HeadPlan> {
        if end > self.max_head {
            return None;
        }
        // httparse takes the line only as METHOD SP TARGET SP VERSION; kept as a guard.
        let (target_start, target_end) =
            split_request_line(&bytes[start..line_end]).map(|(a, b)| (start + a, start + b))?;
        // The rewritten head and where its target ends, if the target needs rewriting.
        let mut rewritten = None;
        let target = &bytes[target_start..target_end];
        if let Some(from) = rewritable_start(target) {
            let count = count_encoded(&target[from..]);
            if count > 0 {
                if !rewrite {
                    return None;
                }
                let mut head = BytesMut::with_capacity(end + 2 * count);
                head.extend_from_slice(&bytes[..target_start + from]);
                encode_into(&target[from..], &mut head);
                let new_target_end = head.len();
                head.extend_from_slice(&bytes[target_end..end]);
                rewritten = Some((head.freeze(), target_start..new_target_end));
            }
        }
        let seen: &[u8] = match &rewritten {
            Some((head, _)) => head,
            None => &bytes[..end],
        };
        let next = analyze(seen, self.max_headers)?;
        let shared = self.heads.shared.lock();
        if shared.queue.len() >= MAX_QUEUED || shared.passthrough {
            return None;
        }
        Some(HeadPlan {
            line: start..line_end,
            target: target_start..target_end,
            rewritten,
            next,
        })
    }

    /// Records the head `raw` as `plan` says and moves on to the state after it.
    fn record_head(&mut self, raw: Bytes, plan: HeadPlan) {
        let mut shared = self.heads.shared.lock();
        // The record stands for this head from now on (a partial line noted is superseded).
        shared.has_line = false;
        shared.queue.push_back(RawHead {
            head: raw,
            line: plan.line,
            target: plan.target,
            rewritten: plan.rewritten,
        });
        if plan.next == State::Passthrough {
            shared.passthrough = true;
        }
        drop(shared);
        self.state = plan.next;
    }

    /// In [`State::Head`], with nothing held, for the `fresh` bytes just read into the
    /// caller's buffer: when they are one whole head that needs no rewrite, followed by no
    /// more than its body's bytes (or anything, before passthrough), records it and moves on
    /// past them, so they go to hyper as they are. Returns whether it did; if not, the tap's
    /// own steps must take the bytes.
    fn take_fresh(&mut self, fresh: &[u8]) -> bool {
        let HeadScan::Found {
            start,
            line_end,
            end,
        } = find_head(fresh, 0)
        else {
            return false;
        };
        let Some(mut plan) = self.plan_head(fresh, (start, line_end, end), false) else {
            return false;
        };
        let rest = (fresh.len() - end) as u64;
        plan.next = match plan.next {
            State::Body(n) if rest < n => State::Body(n - rest),
            State::Body(n) if rest == n => State::Head,
            State::Passthrough => State::Passthrough,
            next if rest == 0 => next,
            _ => return false,
        };
        self.line_noted = false;
        self.scan = 0;
        self.record_head(Bytes::copy_from_slice(&fresh[..end]), plan);
        true
    }

    /// A complete head the tap will not record: its line is noted (for the log, should hyper
    /// refuse it) and the connection goes passthrough.
    fn refuse_head(&mut self, start: usize, line_end: usize) -> Step {
        self.heads.note_line(&self.buf[start..line_end]);
        self.go_passthrough()
    }

    /// In [`State::ChunkLine`]: releases a chunk size line, or goes passthrough.
    fn chunk_line_step(&mut self) -> Step {
        let Some(&first) = self.buf.first() else {
            return Step::More;
        };
        // hyper's read_start wants a hex digit first; parse_chunk_size takes blanks or nothing.
        if !first.is_ascii_hexdigit() {
            return self.go_passthrough();
        }
        match httparse::parse_chunk_size(&self.buf) {
            Ok(httparse::Status::Complete((len, size))) => {
                if self.buf[..len].contains(&b';') {
                    return self.go_passthrough();
                }
                self.out = self.buf.split_to(len).freeze();
                self.state = if size == 0 {
                    State::LastCrlf
                } else {
                    State::ChunkData(size)
                };
                Step::Go
            }
            Ok(httparse::Status::Partial) => {
                if self.buf.contains(&b';') || self.buf.len() > MAX_CHUNK_LINE {
                    self.go_passthrough()
                } else {
                    Step::More
                }
            }
            Err(_) => self.go_passthrough(),
        }
    }

    /// In [`State::ChunkCrlf`] or [`State::LastCrlf`]: releases the CRLF and moves to `next`.
    fn crlf_step(&mut self, next: State) -> Step {
        match self.buf.get(..2) {
            Some(b"\r\n") => {
                self.out = self.buf.split_to(2).freeze();
                self.state = next;
                Step::Go
            }
            Some(_) => self.go_passthrough(),
            None => match self.buf.first() {
                Some(b'\r') | None => Step::More,
                Some(_) => self.go_passthrough(),
            },
        }
    }
}

impl<S: AsyncRead + Unpin> HeadTap<S> {
    /// Reads into the tap's buffer (its spare capacity, never zeroed first); `Ok(0)` at the
    /// end of the stream.
    fn fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.is_empty() {
            // Nothing held (a connection between requests): the first bytes are read on the
            // stack and memory is taken only once some came, so an idle keep-alive
            // connection holds no buffer of the tap's. Heads handed out keep their share of
            // the previous allocation.
            self.buf = BytesMut::new();
            let mut first = [MaybeUninit::<u8>::uninit(); FIRST_READ];
            let mut read = ReadBuf::uninit(&mut first);
            ready!(Pin::new(&mut self.inner).poll_read(cx, &mut read))?;
            let got = read.filled();
            if !got.is_empty() {
                self.buf.reserve(READ_SIZE.max(got.len()));
                self.buf.extend_from_slice(got);
            }
            return Poll::Ready(Ok(got.len()));
        }
        // Heads handed out keep sharing the buffer's allocation: a new one is made only when
        // little room is left.
        if self.buf.capacity() - self.buf.len() < MIN_READ {
            self.buf.reserve(READ_SIZE);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.inner), cx, &mut self.buf)
    }
}

/// Reads up to `max` bytes from `inner` straight into `dst`'s unfilled part, which is not
/// zeroed first (a read is up to a whole buffer); returns how many came (`Ok(0)`: the end of
/// the stream).
#[allow(unsafe_code)]
fn read_into<S: AsyncRead + Unpin>(
    inner: &mut S,
    cx: &mut Context<'_>,
    dst: &mut ReadBuf<'_>,
    max: usize,
) -> Poll<io::Result<usize>> {
    let got = {
        let mut sub = dst.take(max);
        let start = sub.filled().as_ptr();
        ready!(Pin::new(inner).poll_read(cx, &mut sub))?;
        // A reader may not swap the buffer it was given.
        assert_eq!(start, sub.filled().as_ptr());
        sub.filled().len()
    };
    // SAFETY: `sub` was the start of `dst`'s unfilled part, the same memory (checked above),
    // and the reader initialised its first `got` bytes (what it filled).
    unsafe { dst.assume_init(got) };
    dst.advance(got);
    Poll::Ready(Ok(got))
}

impl<S: AsyncRead + Unpin> AsyncRead for HeadTap<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        dst: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if dst.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if !this.out.is_empty() {
                let n = this.out.len().min(dst.remaining());
                dst.put_slice(&this.out[..n]);
                this.out.advance(n);
                if this.out.is_empty() {
                    // An empty `Bytes` still holds its allocation (the tap's buffer).
                    this.out = Bytes::new();
                }
                return Poll::Ready(Ok(()));
            }
            let step = match this.state {
                State::Passthrough => {
                    if this.buf.is_empty() {
                        return Pin::new(&mut this.inner).poll_read(cx, dst);
                    }
                    let n = this.buf.len().min(dst.remaining());
                    dst.put_slice(&this.buf[..n]);
                    this.buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                State::Body(left) | State::ChunkData(left) => {
                    let max = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(dst.remaining());
                    let n = if this.buf.is_empty() {
                        // Straight into the caller's buffer, never past the body's end.
                        ready!(read_into(&mut this.inner, cx, dst, max))?
                    } else {
                        let n = max.min(this.buf.len());
                        dst.put_slice(&this.buf[..n]);
                        this.buf.advance(n);
                        n
                    };
                    // n == 0: the end of the stream, which hyper sees as such.
                    let left = left - n as u64;
                    this.state = match (this.state, left) {
                        (State::Body(_), 0) => State::Head,
                        (State::Body(_), left) => State::Body(left),
                        (_, 0) => State::ChunkCrlf,
                        (_, left) => State::ChunkData(left),
                    };
                    return Poll::Ready(Ok(()));
                }
                State::Head if this.buf.is_empty() => {
                    // Nothing held: the bytes go straight into the caller's buffer, and stay
                    // there when they are a head the tap lets through as it is (with its
                    // body's first bytes); otherwise they move to the tap's buffer.
                    let before = dst.filled().len();
                    if ready!(read_into(&mut this.inner, cx, dst, usize::MAX))? == 0 {
                        return Poll::Ready(Ok(()));
                    }
                    if this.take_fresh(&dst.filled()[before..]) {
                        return Poll::Ready(Ok(()));
                    }
                    let fresh = &dst.filled()[before..];
                    this.buf = BytesMut::with_capacity(READ_SIZE.max(fresh.len()));
                    this.buf.extend_from_slice(fresh);
                    dst.set_filled(before);
                    Step::Go
                }
                State::Head => this.head_step(),
                State::ChunkLine => this.chunk_line_step(),
                State::ChunkCrlf => this.crlf_step(State::ChunkLine),
                State::LastCrlf => this.crlf_step(State::Head),
            };
            if let Step::More = step {
                if ready!(this.fill(cx))? == 0 {
                    if this.buf.is_empty() {
                        return Poll::Ready(Ok(()));
                    }
                    // A message cut short: hand hyper what there is, as it is.
                    this.go_passthrough();
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for HeadTap<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---- encode_target ----

    #[test]
    fn encodes_raw_utf8_and_latin1() {
        assert_eq!(
            encode_target(b"/caf\xc3\xa9/x").as_deref(),
            Some(&b"/caf%C3%A9/x"[..])
        );
        assert_eq!(
            encode_target(b"/caf\xe9/x").as_deref(),
            Some(&b"/caf%E9/x"[..])
        );
        assert_eq!(
            encode_target(b"/\x80\xff").as_deref(),
            Some(&b"/%80%FF"[..])
        );
    }

    #[test]
    fn encodes_what_the_http_crate_refuses() {
        // `"` in the query is refused by http 1.x; in the path it depends on the version.
        assert_eq!(
            encode_target(b"/a?b=\"c\"").as_deref(),
            Some(&b"/a?b=%22c%22"[..])
        );
        let quote_in_path = encode_target(b"/a\"b");
        if http::uri::PathAndQuery::try_from(&b"/a\"b"[..]).is_ok() {
            assert_eq!(quote_in_path, None);
        } else {
            assert_eq!(quote_in_path.as_deref(), Some(&b"/a%22b"[..]));
        }
        assert_eq!(encode_target(b"/<a>").as_deref(), Some(&b"/%3Ca%3E"[..]));
        // Every printable byte, in the path and in the query: what comes out is accepted.
        for b in 0x21..=0x7eu8 {
            for probe in [
                vec![b'/', b],
                vec![b'/', b'?', b],
                vec![b'/', b'?', b'x', b],
            ] {
                let seen = encode_target(&probe).unwrap_or_else(|| probe.clone());
                assert!(
                    http::uri::PathAndQuery::try_from(&seen[..]).is_ok(),
                    "{:?} -> {:?}",
                    probe.escape_ascii().to_string(),
                    seen.escape_ascii().to_string()
                );
                if b == b'%' || b == b'#' {
                    assert_eq!(seen, probe);
                }
            }
        }
    }

    #[test]
    fn encodes_bytes_in_the_query() {
        assert_eq!(
            encode_target(b"/p?q=\xe9&r=<&s=?").as_deref(),
            Some(&b"/p?q=%E9&r=%3C&s=?"[..])
        );
    }

    #[test]
    fn leaves_plain_targets_alone() {
        for target in [
            &b"/"[..],
            b"/plain/path?a=b&c=%20",
            b"/100%",
            b"/a#b<",
            b"*",
            b"example.com:443",
            b"http://h/p?q",
        ] {
            assert_eq!(encode_target(target), None, "{}", target.escape_ascii());
        }
    }

    #[test]
    fn leaves_controls_space_del_and_percent_alone() {
        assert_eq!(encode_target(b"/a\x01b\x7f c\t%"), None);
        assert_eq!(
            encode_target(b"/a\x01\xe9 %").as_deref(),
            Some(&b"/a\x01%E9 %"[..])
        );
        // In the fragment only what httparse refuses (non-ASCII) is encoded.
        assert_eq!(encode_target(b"/a#<\xe9").as_deref(), Some(&b"/a#<%E9"[..]));
    }

    #[test]
    fn absolute_form_rewrites_only_path_and_query() {
        assert_eq!(
            encode_target(b"http://h:80/p\xe9?q=<").as_deref(),
            Some(&b"http://h:80/p%E9?q=%3C"[..])
        );
        assert_eq!(encode_target(b"http://h\xe9/p"), None);
        assert_eq!(encode_target(b"h\xe9:80"), None);
    }

    // ---- the tap over an in-memory stream ----

    /// An in-memory stream handing out `data` in reads of the sizes in `sizes` (cycled),
    /// and Pending every other poll when `pending`.
    struct Feed {
        data: Vec<u8>,
        pos: usize,
        sizes: Vec<usize>,
        next: usize,
        pending: bool,
        flip: bool,
    }

    impl Feed {
        fn new(data: &[u8], sizes: &[usize], pending: bool) -> Feed {
            Feed {
                data: data.to_vec(),
                pos: 0,
                sizes: sizes.to_vec(),
                next: 0,
                pending,
                flip: false,
            }
        }
    }

    impl AsyncRead for Feed {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            dst: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            if this.pending {
                this.flip = !this.flip;
                if this.flip {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            }
            let size = this.sizes[this.next % this.sizes.len()];
            this.next += 1;
            let n = size.min(this.data.len() - this.pos).min(dst.remaining());
            dst.put_slice(&this.data[this.pos..this.pos + n]);
            this.pos += n;
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Feed {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A client that sent `0` and then waits (reads are pending once it is drained).
    struct Parked(Vec<u8>);

    impl AsyncRead for Parked {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            dst: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            if this.0.is_empty() {
                return Poll::Pending;
            }
            let n = this.0.len().min(dst.remaining());
            dst.put_slice(&this.0[..n]);
            this.0.drain(..n);
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn an_idle_connection_holds_no_buffer() {
        let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let (mut tap, heads) = HeadTap::new(Parked(Vec::new()), 8192, 100);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut storage = vec![MaybeUninit::<u8>::uninit(); 8192];
        // Before the client sends anything, and between its requests: nothing is held.
        for round in 0..2 {
            let mut dst = ReadBuf::uninit(&mut storage);
            assert!(Pin::new(&mut tap).poll_read(&mut cx, &mut dst).is_pending());
            assert_eq!(tap.buf.capacity(), 0, "round {round}");
            tap.inner.0.extend_from_slice(head);
            let mut dst = ReadBuf::uninit(&mut storage);
            assert!(matches!(
                Pin::new(&mut tap).poll_read(&mut cx, &mut dst),
                Poll::Ready(Ok(()))
            ));
            assert_eq!(dst.filled(), head);
            assert!(heads.next("GET", b"/").is_some());
        }
        let mut dst = ReadBuf::uninit(&mut storage);
        assert!(Pin::new(&mut tap).poll_read(&mut cx, &mut dst).is_pending());
        assert_eq!(tap.buf.capacity(), 0);
        assert!(tap.out.is_empty());
    }

    /// Reads the tap to its end, with caller buffers of the sizes in `out_sizes` (cycled).
    fn drain(tap: &mut HeadTap<Feed>, out_sizes: &[usize]) -> Vec<u8> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut out = Vec::new();
        let mut spins = 0;
        for i in 0.. {
            let mut storage = vec![MaybeUninit::<u8>::uninit(); out_sizes[i % out_sizes.len()]];
            let mut dst = ReadBuf::uninit(&mut storage);
            match Pin::new(&mut *tap).poll_read(&mut cx, &mut dst) {
                Poll::Ready(Ok(())) if dst.filled().is_empty() => break,
                Poll::Ready(Ok(())) => out.extend_from_slice(dst.filled()),
                Poll::Ready(Err(e)) => panic!("{e}"),
                Poll::Pending => {
                    spins += 1;
                    assert!(spins < 10_000_000, "stuck");
                }
            }
        }
        out
    }

    /// xorshift64*, for reproducible "random" sizes.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
        }
    }

    /// The ways a stream of `len` bytes is fed: (read sizes, caller buffer sizes, pending).
    fn feeds(len: usize) -> Vec<(Vec<usize>, Vec<usize>, bool)> {
        let mut feeds = vec![
            (vec![usize::MAX], vec![1 << 16], false),
            (vec![1], vec![1, 2, 3, 5, 8, 4096], false),
            (vec![1], vec![4096], true),
            (vec![usize::MAX], vec![1], false),
        ];
        for k in 1..len {
            feeds.push((vec![k, usize::MAX], vec![4096], false));
        }
        for seed in 1..=24u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let reads = (0..64).map(|_| 1 + rng.below(48)).collect();
            let mut dsts: Vec<usize> = (0..64).map(|_| 1 + rng.below(96)).collect();
            dsts.push(1 << 14);
            feeds.push((reads, dsts, seed % 2 == 1));
        }
        feeds
    }

    /// A piece of the stream: what the client sends, what hyper must get, and the record
    /// (method, raw target, rewritten target) it makes, if any.
    struct Msg {
        raw: Vec<u8>,
        out: Vec<u8>,
        record: Option<(String, Vec<u8>, Vec<u8>)>,
    }

    /// A head the tap rewrites and records: `METHOD SP target SP rest`.
    fn head(method: &str, target: &[u8], rest: &[u8]) -> Msg {
        let rewritten = encode_target(target).unwrap_or_else(|| target.to_vec());
        let line = |t: &[u8]| [method.as_bytes(), b" ", t, b" ", rest].concat();
        Msg {
            raw: line(target),
            out: line(&rewritten),
            record: Some((method.to_string(), target.to_vec(), rewritten)),
        }
    }

    /// Bytes that go through unchanged and unrecorded.
    fn raw(bytes: &[u8]) -> Msg {
        Msg {
            raw: bytes.to_vec(),
            out: bytes.to_vec(),
            record: None,
        }
    }

    /// Feeds `msgs` every way there is and checks what comes out and the records.
    fn check(msgs: &[Msg], max_head: usize, max_headers: usize, passthrough: bool) {
        let input: Vec<u8> = msgs.iter().flat_map(|m| m.raw.clone()).collect();
        let expected: Vec<u8> = msgs.iter().flat_map(|m| m.out.clone()).collect();
        let records: Vec<_> = msgs.iter().filter_map(|m| m.record.clone()).collect();
        for (reads, dsts, pending) in feeds(input.len()) {
            let (mut tap, heads) =
                HeadTap::new(Feed::new(&input, &reads, pending), max_head, max_headers);
            let out = drain(&mut tap, &dsts);
            assert!(
                out == expected,
                "reads {reads:?}, caller buffers {dsts:?}:\n got      {}\n expected {}",
                out.escape_ascii(),
                expected.escape_ascii()
            );
            assert_eq!(heads.queued(), records.len(), "reads {reads:?}");
            for (method, target, rewritten) in &records {
                let head = heads
                    .next(method, rewritten)
                    .unwrap_or_else(|| panic!("no record for {}", target.escape_ascii()));
                assert_eq!(head.target(), target[..]);
                assert_eq!(head.rewritten_target(), &rewritten[..]);
                assert_eq!(head.rewritten(), target != rewritten);
                assert_eq!(head.method(), method.as_bytes());
                assert!(head.request_line().starts_with(method.as_bytes()));
                assert!(!head.request_line().ends_with(b"\r"));
            }
            assert_eq!(heads.is_passthrough(), passthrough, "reads {reads:?}");
            assert_eq!(tap.is_passthrough(), passthrough);
        }
    }

    const H: &[u8] = b"HTTP/1.1\r\nHost: a\r\n\r\n";

    /// Chunked data framing for `data`.
    fn chunk(data: &[u8]) -> Vec<u8> {
        [format!("{:x}\r\n", data.len()).as_bytes(), data, b"\r\n"].concat()
    }

    #[test]
    fn pipelined_requests_every_way() {
        let body = b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: b\r\n\r\n";
        let sneaky = b"\r\n0\r\n\r\nGET /\xff HTTP/1.1\r\nHost: c\r\n\r\n";
        let post_head = format!(
            "HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let msgs = [
            head("GET", b"/caf\xc3\xa9/x", H),
            head("POST", b"/up?q=\xe9&r=\"x\"", post_head.as_bytes()),
            raw(body),
            raw(b"\r\n\r\n"),
            head("GET", b"/plain/path?x=1", H),
            head(
                "POST",
                b"/a\"b/<c>",
                b"HTTP/1.1\r\nHost: a\r\ntransfer-encoding:  Chunked \r\n\r\n",
            ),
            raw(&chunk(b"hello")),
            raw(&chunk(sneaky)),
            raw(b"3 \r\nabc\r\n"),
            raw(b"A\r\n0123456789\r\n"),
            raw(b"0\r\n\r\n"),
            head("GET", b"/x\xe9", b"HTTP/1.1\nHost: a\n\n"),
            head("DELETE", b"/d?\xe9#fr\xe9g", H),
            head(
                "POST",
                b"/zero\xe9",
                b"HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            ),
            head("GET", b"http://host/p\xe9?q=<", H),
            head("OPTIONS", b"*", H),
            head("GET", b"/last\xe9", b"HTTP/1.0\r\n\r\n"),
        ];
        check(&msgs, 8192, 100, false);
    }

    #[test]
    fn bodies_are_never_rewritten() {
        let looks_like_a_head = b"GET /caf\xc3\xa9/x HTTP/1.1\r\nHost: a\r\n\r\n";
        let cl = format!(
            "HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            looks_like_a_head.len()
        );
        let msgs = [
            head("POST", b"/p\xe9", cl.as_bytes()),
            raw(looks_like_a_head),
            head(
                "POST",
                b"/c\xe9",
                b"HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            ),
            raw(&chunk(looks_like_a_head)),
            raw(&chunk(&looks_like_a_head[..10])),
            raw(&chunk(&looks_like_a_head[10..])),
            raw(b"0\r\n\r\n"),
            head("GET", b"/after\xe9", H),
        ];
        check(&msgs, 8192, 100, false);
    }

    #[test]
    fn plain_heads_and_bodies_that_look_like_heads_every_way() {
        // Heads that need no rewrite stay in the caller's buffer when they arrive whole; the
        // bodies after them (here shaped like heads) must never be taken for one.
        let looks_like_a_head = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
        let cl = format!(
            "HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            looks_like_a_head.len()
        );
        let msgs = [
            head("POST", b"/p", cl.as_bytes()),
            raw(looks_like_a_head),
            head("GET", b"/next?x=1", H),
            head(
                "POST",
                b"/c",
                b"HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            ),
            raw(&chunk(looks_like_a_head)),
            raw(b"0\r\n\r\n"),
            head("POST", b"/p2", cl.as_bytes()),
            raw(looks_like_a_head),
            head("GET", b"/after\xe9", H),
            head("GET", b"/last", H),
        ];
        check(&msgs, 8192, 100, false);
        let expect = [
            head("GET", b"/first", H),
            head(
                "POST",
                b"/e",
                b"HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
            ),
            raw(b"helloGET /x HTTP/1.1\r\n\r\n"),
        ];
        check(&expect, 8192, 100, true);
    }

    #[test]
    fn a_whole_plain_head_is_handed_out_in_place() {
        let request = b"POST /p HTTP/1.1\r\nContent-Length: 5\r\n\r\nhel";
        let (mut tap, heads) = HeadTap::new(Parked(request.to_vec()), 8192, 100);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut storage = vec![MaybeUninit::<u8>::uninit(); 1 << 16];
        let mut dst = ReadBuf::uninit(&mut storage);
        assert!(matches!(
            Pin::new(&mut tap).poll_read(&mut cx, &mut dst),
            Poll::Ready(Ok(()))
        ));
        // One read, handed out as it came: nothing went through the tap's buffer.
        assert_eq!(dst.filled(), request);
        assert_eq!(tap.buf.capacity(), 0);
        assert_eq!(tap.state, State::Body(2));
        let record = heads.next("POST", b"/p").expect("the head is recorded");
        assert_eq!(&record.request_line()[..], b"POST /p HTTP/1.1");
        // The body's end, then the next head: the body is not scanned as a head.
        tap.inner
            .0
            .extend_from_slice(b"loGET /\xe9 HTTP/1.1\r\n\r\n");
        let mut dst = ReadBuf::uninit(&mut storage);
        assert!(Pin::new(&mut tap).poll_read(&mut cx, &mut dst).is_ready());
        assert_eq!(dst.filled(), b"lo");
        let mut dst = ReadBuf::uninit(&mut storage);
        assert!(Pin::new(&mut tap).poll_read(&mut cx, &mut dst).is_ready());
        // A target to rewrite goes through the tap's buffer.
        assert_eq!(dst.filled(), b"GET /%E9 HTTP/1.1\r\n\r\n");
        assert!(heads.next("GET", b"/%E9").is_some());
    }

    /// `unusual` after a good request, then a request that would need rewriting: from the
    /// unusual part on, the output is the input.
    fn check_unusual(unusual: Vec<Msg>) {
        let mut msgs = vec![head("GET", b"/ok\xe9", H)];
        msgs.extend(unusual);
        msgs.push(raw(b"GET /tail\xe9 HTTP/1.1\r\nHost: a\r\n\r\n"));
        check(&msgs, 8192, 100, true);
    }

    #[test]
    fn unusual_heads_switch_to_passthrough() {
        let chunked_body: &[u8] = b"5\r\nhello\r\n0\r\n\r\n";
        let cases: Vec<Vec<u8>> = vec![
            b"GET /a\x01b\xe9 HTTP/1.1\r\n\r\n".to_vec(),
            b"GET  /\xe9 HTTP/1.1\r\n\r\n".to_vec(),
            b"GET /\xe9  HTTP/1.1\r\n\r\n".to_vec(),
            b"GET /\xe9 HTTP/2.0\r\n\r\n".to_vec(),
            b"GET /\xe9 HTTP/1.1\r\nBad Name: x\r\n\r\n".to_vec(),
            b"GET /\xe9 HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n".to_vec(),
            b"GET /\xe9 HTTP/1.1\r\n Host: a\r\n\r\n".to_vec(),
            b"GET /\xe9 HTTP/1.1\r\nHost: a\r\r\n\r\n".to_vec(),
            b"\rGET /\xe9 HTTP/1.1\r\n\r\n".to_vec(),
            [&b"POST /\xe9 HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"[..], chunked_body].concat(),
            [&b"POST /\xe9 HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"[..], chunked_body].concat(),
            [&b"POST /\xe9 HTTP/1.1\r\nTransfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n\r\n"[..], chunked_body].concat(),
            [&b"POST /\xe9 HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"[..], chunked_body].concat(),
            [&b"POST /\xe9 HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"[..], chunked_body].concat(),
            [&b"POST /\xe9 HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"[..], chunked_body].concat(),
            [&b"POST /\xe9 HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"[..], chunked_body].concat(),
            b"POST /\xe9 HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello".to_vec(),
            b"POST /\xe9 HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello".to_vec(),
            b"POST /\xe9 HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\nhello".to_vec(),
            b"POST /\xe9 HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\nhello".to_vec(),
            b"POST /\xe9 HTTP/1.1\r\nContent-Length: 18446744073709551614\r\n\r\nhello".to_vec(),
        ];
        for case in cases {
            check_unusual(vec![raw(&case)]);
        }
    }

    #[test]
    fn expect_connect_and_upgrade_are_recorded_then_passthrough() {
        check_unusual(vec![
            head(
                "POST",
                b"/e\xe9",
                b"HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
            ),
            raw(b"hello"),
        ]);
        check_unusual(vec![head(
            "GET",
            b"/e\xe9",
            b"HTTP/1.1\r\nExpect: x\r\n\r\n",
        )]);
        check_unusual(vec![
            head("CONNECT", b"example.com:443", H),
            raw(b"\x16\x03\x01 tunnel bytes GET /\xe9 HTTP/1.1\r\n\r\n"),
        ]);
        check_unusual(vec![
            head(
                "GET",
                b"/ws\xe9",
                b"HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            ),
            raw(b"\x81\x05hello"),
        ]);
    }

    #[test]
    fn unusual_chunked_bodies_switch_to_passthrough() {
        let te = b"HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        for rest in [
            &b"5\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n"[..],
            b"5;ext=1\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\r\n0;ext\r\n\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"\r\nhello\r\n0\r\n\r\n",
            // parse_chunk_size reads an empty size line as size 0; hyper refuses it.
            b"\r\n\r\n",
            b";\r\nhello\r\n0\r\n\r\n",
            b"zz\r\nhello\r\n0\r\n\r\n",
            b"5 5\r\nhello\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\rhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhello\r\n0\r\n\n",
            b"00000000000000000005\r\nhello\r\n0\r\n\r\n",
        ] {
            // What precedes the first unusual byte goes through the tap's buffer too, but
            // unchanged: the whole body is passed as it is either way.
            check_unusual(vec![head("POST", b"/c\xe9", te), raw(rest)]);
        }
    }

    #[test]
    fn too_many_headers_switch_to_passthrough() {
        let three = b"HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
        let four = b"GET /\xe9 HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n";
        check(
            &[
                head("GET", b"/\xe9", three),
                raw(four),
                raw(b"GET /\xe9 HTTP/1.1\r\n\r\n"),
            ],
            8192,
            3,
            true,
        );
        // More slots than fit on the stack.
        let many: String = (0..150).map(|i| format!("X-{i}: {i}\r\n")).collect();
        let rest = format!("HTTP/1.1\r\n{many}\r\n");
        check(
            &[
                head("GET", b"/\xe9", rest.as_bytes()),
                head("GET", b"/b\xe9", H),
            ],
            1 << 16,
            200,
            false,
        );
    }

    #[test]
    fn a_head_longer_than_the_limit_switches_to_passthrough() {
        let fits = b"GET /\xe9 HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(fits.len(), 28);
        let long = b"GET /\xe9 HTTP/1.1\r\nHost: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        check(
            &[head("GET", b"/\xe9", &fits[7..]), raw(long), raw(fits)],
            28,
            100,
            true,
        );
        // A request line that never ends.
        let endless = vec![b'/'; 100];
        check(
            &[
                head("GET", b"/\xe9", &fits[7..]),
                raw(b"GET "),
                raw(&endless),
            ],
            64,
            100,
            true,
        );
    }

    #[test]
    fn queue_is_bounded() {
        let one = b"GET /q\xe9 HTTP/1.1\r\n\r\n";
        let mut msgs: Vec<Msg> = (0..MAX_QUEUED)
            .map(|_| head("GET", b"/q\xe9", b"HTTP/1.1\r\n\r\n"))
            .collect();
        msgs.push(raw(one));
        msgs.push(raw(one));
        check(&msgs, 8192, 100, true);
    }

    #[test]
    fn next_checks_method_and_target() {
        let input = b"GET /a\xe9 HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nPUT /c#f HTTP/1.1\r\n\r\nGET http://h/d?x HTTP/1.1\r\n\r\n";
        let (mut tap, heads) = HeadTap::new(Feed::new(input, &[usize::MAX], false), 8192, 100);
        drain(&mut tap, &[4096]);
        assert_eq!(heads.queued(), 4);
        let a = heads.next("GET", b"/a%E9").unwrap();
        assert_eq!(&a.request_line()[..], b"GET /a\xe9 HTTP/1.1");
        assert_eq!(&a.target()[..], b"/a\xe9");
        assert!(a.rewritten());
        // Out of sync: the record is not for this request, the queue is dropped and the tap
        // records nothing more.
        assert_eq!(heads.next("POST", b"/b"), None);
        assert_eq!(heads.queued(), 0);
        assert_eq!(heads.next("GET", b"/b"), None);
        assert!(heads.is_passthrough());

        let (mut tap, heads) = HeadTap::new(Feed::new(input, &[usize::MAX], false), 8192, 100);
        drain(&mut tap, &[4096]);
        heads.next("GET", b"/a%E9").unwrap();
        assert!(!heads.next("GET", b"/b").unwrap().rewritten());
        // hyper drops the fragment; an absolute-form target may be given by its path.
        assert_eq!(&heads.next("PUT", b"/c").unwrap().target()[..], b"/c#f");
        assert_eq!(
            &heads.next("GET", b"/d?x").unwrap().target()[..],
            b"http://h/d?x"
        );
        // Every head reached the service: none is left to log as refused.
        assert_eq!(heads.last_request_line(), None);
    }

    #[test]
    fn last_request_line_holds_partial_and_refused_lines() {
        let (tap, heads) = HeadTap::new(Feed::new(b"", &[1], false), 8192, 100);
        drop(tap);
        assert_eq!(heads.last_request_line(), None);

        // Cut short: what arrived of the line, and the bytes go through unchanged.
        let input = b"GET / HTTP/1.1\r\n\r\n\r\nGET /caf\xe9/very-lo";
        let (mut tap, heads) = HeadTap::new(Feed::new(input, &[3], false), 8192, 100);
        assert_eq!(drain(&mut tap, &[4096]), input);
        assert_eq!(
            heads.last_request_line().as_deref(),
            Some(&b"GET /caf\xe9/very-lo"[..])
        );

        // Refused by httparse: the whole line.
        let input = b"GET /\xe9 HTTP/1.1\r\nBad Name: 1\r\n\r\n";
        let (mut tap, heads) = HeadTap::new(Feed::new(input, &[1], false), 8192, 100);
        assert_eq!(drain(&mut tap, &[4096]), input);
        assert_eq!(
            heads.last_request_line().as_deref(),
            Some(&b"GET /\xe9 HTTP/1.1"[..])
        );
        assert_eq!(heads.queued(), 0);

        // Too long.
        let input = [&b"GET /\xe9 HTTP/1.1\r\nX: "[..], &[b'x'; 200], b"\r\n\r\n"].concat();
        let (mut tap, heads) = HeadTap::new(Feed::new(&input, &[7], false), 64, 100);
        assert_eq!(drain(&mut tap, &[4096]), input);
        assert_eq!(
            heads.last_request_line().as_deref(),
            Some(&b"GET /\xe9 HTTP/1.1"[..])
        );
    }

    #[test]
    fn writes_go_through() {
        let (mut tap, _) = HeadTap::new(Feed::new(b"", &[1], false), 8192, 100);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let written = Pin::new(&mut tap).poll_write(&mut cx, b"abc");
        assert!(matches!(written, Poll::Ready(Ok(3))));
        assert!(!tap.is_write_vectored());
        let (_, rest) = tap.into_parts();
        assert!(rest.is_empty());
    }

    // ---- hyper, end to end ----

    type Seen = Arc<Mutex<Vec<(String, Option<RawHead>)>>>;

    /// Serves `requests` with hyper over an in-memory pipe (through a tap if `tap`), with a
    /// service answering `<target as hyper parsed it> <body length>`; returns the responses
    /// (status, body) and what the service saw.
    async fn serve(requests: &[u8], tap: bool) -> (Vec<(u16, Vec<u8>)>, Seen) {
        let (client, server) = tokio::io::duplex(1 << 16);
        if tap {
            let (tap, heads) = HeadTap::new(server, 8192, 100);
            serve_over(client, tap, Some(heads), requests).await
        } else {
            serve_over(client, server, None, requests).await
        }
    }

    async fn serve_over<S>(
        mut client: tokio::io::DuplexStream,
        io: S,
        heads: Option<Heads>,
        requests: &[u8],
    ) -> (Vec<(u16, Vec<u8>)>, Seen)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        use http_body_util::{BodyExt, Full};
        use hyper::body::Incoming;
        use hyper_util::rt::TokioIo;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let seen: Seen = Arc::default();
        let service = {
            let seen = seen.clone();
            hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let (seen, heads) = (seen.clone(), heads.clone());
                async move {
                    let target = req.uri().path_and_query().map_or_else(
                        || req.uri().path().to_string(),
                        |pq| pq.as_str().to_string(),
                    );
                    let raw = heads.and_then(|h| h.next(req.method().as_str(), target.as_bytes()));
                    let body = req.into_body().collect().await?.to_bytes();
                    seen.lock().push((target.clone(), raw));
                    let answer = format!("{target} {}", body.len());
                    Ok::<_, hyper::Error>(hyper::Response::new(Full::new(Bytes::from(answer))))
                }
            })
        };
        let conn = tokio::spawn(
            hyper::server::conn::http1::Builder::new()
                .max_headers(100)
                .serve_connection(TokioIo::new(io), service),
        );
        client.write_all(requests).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            client.read_to_end(&mut out),
        )
        .await
        .expect("hyper answered and closed")
        .unwrap();
        let _ = conn.await.unwrap();

        let mut responses = Vec::new();
        let mut rest = &out[..];
        while !rest.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut response = httparse::Response::new(&mut headers);
            let httparse::Status::Complete(n) = response.parse(rest).unwrap() else {
                panic!("partial response: {}", rest.escape_ascii());
            };
            let len = response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map_or(0, |h| from_digits(h.value).unwrap() as usize);
            responses.push((response.code.unwrap(), rest[n..n + len].to_vec()));
            rest = &rest[n + len..];
        }
        (responses, seen)
    }

    #[tokio::test]
    async fn hyper_serves_raw_targets_through_the_tap() {
        let sneaky = b"GET /\xe9 HTTP/1.1\r\nHost: x\r\n\r\n";
        let requests = [
            &b"GET /caf\xc3\xa9/x HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"GET /caf\xe9/x HTTP/1.1\r\nHost: a\r\n\r\n",
            b"POST /up\xe9 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            &chunk(b"hello"),
            &chunk(sneaky),
            b"0\r\n\r\n",
            b"GET /l<t>?q=\"v\" HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /a\"b?q=\xe9 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        ]
        .concat();
        let (responses, seen) = serve(&requests, true).await;
        let expected: [(&[u8], &[u8], usize); 5] = [
            (b"/caf\xc3\xa9/x", b"/caf%C3%A9/x", 0),
            (b"/caf\xe9/x", b"/caf%E9/x", 0),
            (b"/up\xe9", b"/up%E9", 5 + sneaky.len()),
            (b"/l<t>?q=\"v\"", b"/l%3Ct%3E?q=%22v%22", 0),
            (b"/a\"b?q=\xe9", &encode_target(b"/a\"b?q=\xe9").unwrap(), 0),
        ];
        assert_eq!(responses.len(), expected.len(), "{responses:?}");
        let seen = seen.lock();
        for (i, (raw, rewritten, len)) in expected.iter().enumerate() {
            let (status, body) = &responses[i];
            assert_eq!(*status, 200);
            let answer = [*rewritten, format!(" {len}").as_bytes()].concat();
            assert_eq!(body, &answer, "{}", body.escape_ascii());
            let (target, head) = &seen[i];
            assert_eq!(target.as_bytes(), *rewritten);
            let head = head.as_ref().expect("a record for every request");
            assert_eq!(&head.target()[..], *raw);
            assert_eq!(head.rewritten(), raw != rewritten);
        }
    }

    #[tokio::test]
    async fn hyper_refuses_these_targets_without_the_tap() {
        for request in [
            &b"GET /caf\xe9/x HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"GET /l<t> HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /a?q=\"v\" HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            let (responses, seen) = serve(request, false).await;
            assert_eq!(responses.len(), 1);
            assert_eq!(responses[0].0, 400, "{}", request.escape_ascii());
            assert!(seen.lock().is_empty());
        }
    }
}
