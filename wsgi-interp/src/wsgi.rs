//! The boundary between the WSGI call and whatever carries HTTP (the hyper front, the daemon
//! wire protocol): a request description, a streaming body, a streaming sink and the outcome.

use std::borrow::Cow;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::time::Instant;

/// Everything the environ is built from, as the front parsed it.
///
/// Path-like fields are raw bytes: PEP 3333 hands them to the app decoded as latin-1.
#[derive(Debug, Clone, Default)]
pub struct RequestHead {
    /// `REQUEST_METHOD` (the usual ones without an allocation: [`method_text`]).
    pub method: Cow<'static, str>,
    /// `SCRIPT_NAME` (the mount point; `""` at `/`).
    pub script_name: Vec<u8>,
    /// `PATH_INFO` (the rest of the path, percent-decoded).
    pub path_info: Vec<u8>,
    /// `QUERY_STRING`, raw; empty when the URL had none.
    pub query_string: Vec<u8>,
    /// `REQUEST_URI`, raw as on the request line.
    pub request_uri: Vec<u8>,
    /// `SERVER_PROTOCOL`, e.g. `HTTP/1.1` ([`protocol_text`]).
    pub protocol: Cow<'static, str>,
    /// `wsgi.url_scheme`.
    pub scheme: Scheme,
    /// `SERVER_NAME` (from configuration, not the Host header).
    pub server_name: String,
    /// `SERVER_PORT`.
    pub server_port: u16,
    /// `REMOTE_ADDR`.
    pub remote_addr: String,
    /// `REMOTE_PORT`.
    pub remote_port: u16,
    /// Request headers in arrival order; names as sent, values as raw bytes.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Extra CGI variables (e.g. `SCRIPT_FILENAME`, `DOCUMENT_ROOT`, `REMOTE_USER`); they
    /// override computed ones of the same name.
    pub extra: Vec<(Cow<'static, str>, Vec<u8>)>,
    /// The request's `mod_wsgi.*` numbers.
    pub stamps: Stamps,
}

/// What mod_wsgi 6.1 gives an application of its request beside the CGI variables, in the
/// forms it gives them: times become floats of seconds since the epoch (`mod_wsgi.*_start`),
/// the pid a str (`mod_wsgi.server_pid`); and when this process received the request. Plain
/// numbers, so no request allocates for them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stamps {
    /// `mod_wsgi.request_start`: when the front read the request, µs since the epoch.
    pub request_start_us: u64,
    /// `mod_wsgi.queue_start`: when the front began handing the request to a daemon process
    /// (0: embedded mode, shown as `0.0` as mod_wsgi 6.1 does).
    pub queue_start_us: u64,
    /// `mod_wsgi.daemon_start`: when the daemon process took it (0: embedded mode).
    pub daemon_start_us: u64,
    /// `mod_wsgi.server_pid`: the process that accepted the connection (0: this one).
    pub server_pid: u32,
    /// `mod_wsgi.request_id` made by `wsgi serve` ([`next_request_id`]), shown as Apache shows
    /// its log ids; 0: none (the Apache module passes Apache's own log id as that variable).
    pub request_id: u64,
    /// When this process had read the request (None: not known), never shown to the
    /// application: a look at the script's modification time that began later saw every
    /// change the client could have made or known of before sending it, so it answers for
    /// this request too, without looking again. The daemon protocol carries it as a time of
    /// the machine's monotonic clock, which a daemon process turns back into an `Instant` of
    /// its own.
    pub received: Option<Instant>,
}

impl Stamps {
    /// Stamps for a request read now by this process, with a new request id.
    pub fn now() -> Stamps {
        Stamps::now_in(crate::forks::process_id())
    }

    /// [`Stamps::now`] for a request read by the process `pid` (a front that knows its pid
    /// saves the system call).
    pub fn now_in(pid: u32) -> Stamps {
        Stamps {
            request_start_us: now_us(),
            server_pid: pid,
            request_id: next_request_id(),
            received: Some(Instant::now()),
            ..Stamps::default()
        }
    }
}

/// `method` as [`RequestHead::method`] keeps it: the methods of RFC 9110 and PATCH as static
/// text, any other copied.
pub fn method_text(method: &str) -> Cow<'static, str> {
    static_or_copied(
        &[
            "GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE",
        ],
        method,
    )
}

/// `protocol` as [`RequestHead::protocol`] keeps it: the versions HTTP has as static text,
/// any other copied.
pub fn protocol_text(protocol: &str) -> Cow<'static, str> {
    static_or_copied(
        &["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/0.9", "HTTP/3.0"],
        protocol,
    )
}

/// `text` as the `known` text equal to it, or copied.
fn static_or_copied(known: &[&'static str], text: &str) -> Cow<'static, str> {
    match known.iter().find(|known| **known == text) {
        Some(known) => Cow::Borrowed(known),
        None => Cow::Owned(text.to_string()),
    }
}

/// Microseconds since the epoch (0 if the clock is before it).
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A request id no other request of this process had (a bijection of a counter, seeded by the
/// process's pid and start time so that other processes' ids differ too); never 0.
pub fn next_request_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static COUNT: AtomicU64 = AtomicU64::new(1);
    let seed = *SEED.get_or_init(|| now_us() ^ (u64::from(std::process::id()) << 40));
    loop {
        // splitmix64's finalizer: a bijection, so distinct counts give distinct ids.
        let mut z = seed.wrapping_add(
            COUNT
                .fetch_add(1, Ordering::Relaxed)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        if z != 0 {
            return z;
        }
    }
}

/// What a front knows of a request routed to an application (or to its hook scripts), for
/// [`RequestHead::build`]: the one place the environ's source is put together, so `wsgi
/// serve`, its daemon processes and the Apache module give an application the same environ.
#[derive(Debug, Clone)]
pub struct HeadSource<'a> {
    /// `REQUEST_METHOD` (after `WSGIMapHEADToGET`).
    pub method: Cow<'static, str>,
    /// The request target as sent (`REQUEST_URI`).
    pub request_uri: &'a [u8],
    /// `QUERY_STRING`, raw.
    pub query_string: &'a [u8],
    /// `SERVER_PROTOCOL`.
    pub protocol: &'a str,
    /// Whether the connection speaks TLS.
    pub scheme: Scheme,
    /// `SCRIPT_NAME` and `PATH_INFO` as the route gives them (native strings).
    pub script_name: &'a str,
    /// See `script_name`.
    pub path_info: &'a str,
    /// `SERVER_NAME` and `SERVER_PORT`.
    pub server_name: &'a str,
    /// See `server_name`.
    pub server_port: u16,
    /// The client's address and port (`REMOTE_ADDR`, `REMOTE_PORT`).
    pub peer: (String, u16),
    /// The address and port the request came in on (`SERVER_ADDR`,
    /// `mod_wsgi.listener_host`, `mod_wsgi.listener_port`).
    pub local: (&'a str, u16),
    /// The request headers, in arrival order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The request's environment variables (`SetEnv`, `SetEnvIf`, `PassEnv`, mod_ssl's...):
    /// none may stand for a variable the request itself gives.
    pub env: Vec<(String, Vec<u8>)>,
    /// `SCRIPT_FILENAME`.
    pub script_filename: &'a [u8],
    /// `DOCUMENT_ROOT`.
    pub document_root: &'a [u8],
    /// `SERVER_ADMIN` (left out when empty, as Apache does).
    pub server_admin: &'a [u8],
    /// `CONTEXT_PREFIX` and `CONTEXT_DOCUMENT_ROOT`, which an application's environ has and a
    /// hook script's does not (None).
    pub context: Option<(&'a [u8], &'a [u8])>,
    /// The request's `mod_wsgi.*` numbers ([`Stamps::now`] when the front read it).
    pub stamps: Stamps,
}

/// Variables the request itself gives: a configured variable of one of these names is not
/// passed (Apache adds the CGI variables after mod_env and mod_setenvif ran).
const FROM_REQUEST: &[&str] = &[
    "REQUEST_METHOD",
    "SCRIPT_NAME",
    "PATH_INFO",
    "QUERY_STRING",
    "REQUEST_URI",
    "CONTENT_TYPE",
    "CONTENT_LENGTH",
    "SERVER_NAME",
    "SERVER_PORT",
    "SERVER_ADDR",
    "SERVER_PROTOCOL",
    "REQUEST_SCHEME",
    "REMOTE_ADDR",
    "REMOTE_PORT",
    "SCRIPT_FILENAME",
];

impl RequestHead {
    /// The environ's source for `source`, with `settings`' trusted proxies applied, as mod_wsgi
    /// builds it: the configured variables but for those the request gives (and its
    /// `HTTP_*` headers), `HTTPS` turned into `wsgi.url_scheme` (`on` or `1`, set by mod_ssl
    /// or by `SetEnv`/`SetEnvIf`) and then removed, `SCRIPT_FILENAME`, `SERVER_ADDR`,
    /// mod_wsgi's listener keys, the server's `DOCUMENT_ROOT`, `SERVER_ADMIN` and `CONTEXT_*`,
    /// and the request's [`Stamps`]. A front adds only what is its own after this.
    pub fn build(source: HeadSource<'_>, settings: &wsgi_config::WsgiSettings) -> RequestHead {
        let mut head = RequestHead::default();
        head.rebuild(source, settings);
        head
    }

    /// [`RequestHead::build`] in this head, reusing its buffers: a head kept from an earlier
    /// request takes the next one's without allocating (but for what outgrows them). Every
    /// field is `source`'s after, as `build` makes it; a front that gives `source` the
    /// `headers` and `peer` buffers it took from this head first (`std::mem::take`) reuses
    /// those too.
    pub fn rebuild(&mut self, source: HeadSource<'_>, settings: &wsgi_config::WsgiSettings) {
        let HeadSource {
            method,
            request_uri,
            query_string,
            protocol,
            mut scheme,
            script_name,
            path_info,
            server_name,
            server_port,
            peer,
            local,
            headers,
            env,
            script_filename,
            document_root,
            server_admin,
            context,
            stamps,
        } = source;
        let is_header = |name: &str| {
            name.strip_prefix("HTTP_").is_some_and(|header| {
                headers.iter().any(|(k, _)| {
                    k.len() == header.len()
                        && k.bytes()
                            .zip(header.bytes())
                            .all(|(a, b)| a.to_ascii_uppercase() == b || (a == b'-' && b == b'_'))
                })
            })
        };
        let request_scheme = scheme;
        // The configured variables, the nine below, and the two of mod_wsgi's handler that
        // a front adds after (`mod_wsgi.request_handler`, `mod_wsgi.handler_script`).
        let mut extra = PairRefill::new(&mut self.extra, env.len() + 11);
        for (name, value) in env {
            if name == "HTTPS" {
                if value.eq_ignore_ascii_case(b"on") || value == b"1" {
                    scheme = Scheme::Https;
                }
                continue;
            }
            let ours = FROM_REQUEST.contains(&name.as_str())
                || name.starts_with("wsgi.")
                || name.starts_with("mod_wsgi.")
                || is_header(&name);
            if !ours {
                extra.put_owned(Cow::Owned(name), value);
            }
        }
        // The connection's own scheme, whatever `wsgi.url_scheme` becomes.
        let request_scheme: &[u8] = match request_scheme {
            Scheme::Http => b"http",
            Scheme::Https => b"https",
        };
        extra.put("REQUEST_SCHEME", request_scheme);
        extra.put("SCRIPT_FILENAME", script_filename);
        extra.put("SERVER_ADDR", local.0.as_bytes());
        extra.put("mod_wsgi.listener_host", local.0.as_bytes());
        let mut port = [0; 10];
        extra.put(
            "mod_wsgi.listener_port",
            crate::environ::decimal(u32::from(local.1), &mut port),
        );
        extra.put("DOCUMENT_ROOT", document_root);
        if !server_admin.is_empty() {
            extra.put("SERVER_ADMIN", server_admin);
        }
        if let Some((prefix, root)) = context {
            extra.put("CONTEXT_PREFIX", prefix);
            extra.put("CONTEXT_DOCUMENT_ROOT", root);
        }
        extra.finish();
        self.method = method;
        latin1_into(&mut self.script_name, script_name);
        latin1_into(&mut self.path_info, path_info);
        refill(&mut self.query_string, query_string);
        refill(&mut self.request_uri, request_uri);
        self.protocol = protocol_text(protocol);
        self.scheme = scheme;
        self.server_name.clear();
        self.server_name.push_str(server_name);
        self.server_port = server_port;
        (self.remote_addr, self.remote_port) = peer;
        self.headers = headers;
        self.stamps = stamps;
        self.apply_trusted_proxies(settings);
    }

    /// Sets a variable of the front's own (`REMOTE_USER`, `DOCUMENT_ROOT`...), over any of
    /// the same name.
    pub fn set_extra(&mut self, name: impl Into<Cow<'static, str>>, value: Vec<u8>) {
        let name = name.into();
        self.extra.retain(|(k, _)| *k != name);
        self.extra.push((name, value));
    }

    /// `WSGITrustedProxyHeaders`/`WSGITrustedProxies` of `settings`: the environ rewrites a
    /// trusted proxy's headers call for (`REMOTE_ADDR`, `HTTP_HOST`, `SERVER_NAME`,
    /// `SERVER_PORT`, `SCRIPT_NAME`, `wsgi.url_scheme`), and the removal of the spoofable
    /// synonyms (mod_wsgi's rules, [`wsgi_config::proxy`]).
    fn apply_trusted_proxies(&mut self, settings: &wsgi_config::WsgiSettings) {
        if settings.trusted_proxy_headers.is_empty() {
            // Nothing to rewrite (the usual case): the peer's address is not even parsed.
            return;
        }
        let peer = self.remote_addr.parse().ok();
        let Some(rewrite) = wsgi_config::proxy::proxy_rewrite(settings, peer, &self.headers) else {
            return;
        };
        rewrite.filter_headers(&mut self.headers);
        if let Some(addr) = rewrite.remote_addr {
            self.remote_addr = addr;
        }
        if let Some(host) = rewrite.host {
            self.headers
                .retain(|(n, _)| !n.eq_ignore_ascii_case("host"));
            self.headers.push(("Host".into(), host.into_bytes()));
        }
        if let Some(name) = rewrite.server_name {
            self.server_name = name;
        }
        if let Some(port) = rewrite.server_port.and_then(|p| p.parse().ok()) {
            self.server_port = port;
        }
        if let Some(script_name) = rewrite.script_name {
            self.script_name = script_name.into_bytes();
        }
        if let Some(name) = rewrite.scheme {
            self.scheme = if name == "https" {
                Scheme::Https
            } else {
                Scheme::Http
            };
        }
    }
}

/// `bytes` in `buffer`, in the room it has.
fn refill(buffer: &mut Vec<u8>, bytes: &[u8]) {
    buffer.clear();
    buffer.extend_from_slice(bytes);
}

/// `text` (a native string) in `buffer` as [`wsgi_config::route::latin1_bytes`] makes it: in
/// the room it has when it is ASCII (the usual path), else made anew.
fn latin1_into(buffer: &mut Vec<u8>, text: &str) {
    if text.is_ascii() {
        refill(buffer, text.as_bytes());
    } else {
        *buffer = wsgi_config::route::latin1_bytes(text);
    }
}

/// A list of (name, value) pairs written anew from its start, each pair in the buffers of the
/// one at its place: a list kept from an earlier request (the extras of
/// [`RequestHead::rebuild`], a front's header list, a daemon's decode). [`PairRefill::finish`]
/// drops the pairs left past the last one written.
pub struct PairRefill<'a, N> {
    list: &'a mut Vec<(N, Vec<u8>)>,
    len: usize,
}

impl<'a, N: Default> PairRefill<'a, N> {
    /// Starts over on `list`, with room for `capacity` pairs.
    pub fn new(list: &'a mut Vec<(N, Vec<u8>)>, capacity: usize) -> Self {
        list.reserve(capacity.saturating_sub(list.len()));
        PairRefill { list, len: 0 }
    }

    /// The next pair: its name as the list had it at this place (`N::default()` past the
    /// end), to write over, and its value emptied, to write in.
    pub fn next_pair(&mut self) -> (&mut N, &mut Vec<u8>) {
        if self.len == self.list.len() {
            self.list.push((N::default(), Vec::new()));
        }
        let (name, value) = &mut self.list[self.len];
        self.len += 1;
        value.clear();
        (name, value)
    }

    /// Drops what is left of the earlier list.
    pub fn finish(self) {
        self.list.truncate(self.len);
    }
}

impl PairRefill<'_, Cow<'static, str>> {
    /// The next variable: `name` with a copy of `value`.
    fn put(&mut self, name: &'static str, value: &[u8]) {
        let (slot_name, slot_value) = self.next_pair();
        *slot_name = Cow::Borrowed(name);
        slot_value.extend_from_slice(value);
    }

    /// The next variable, given whole.
    fn put_owned(&mut self, name: Cow<'static, str>, value: Vec<u8>) {
        let (slot_name, slot_value) = self.next_pair();
        *slot_name = name;
        *slot_value = value;
    }
}

/// `wsgi.url_scheme`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP.
    #[default]
    Http,
    /// TLS.
    Https,
}

/// Per-call settings that come from configuration rather than from the request.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// `mod_wsgi.process_group` (`""` in embedded mode).
    pub process_group: String,
    /// `wsgi.multithread`.
    pub multithread: bool,
    /// `wsgi.multiprocess`.
    pub multiprocess: bool,
    /// `wsgi.run_once`.
    pub run_once: bool,
    /// Pass `Authorization` as `HTTP_AUTHORIZATION` (`WSGIPassAuthorization On`).
    pub pass_authorization: bool,
}

/// A blocking reader over the request body. It is called with the GIL released, in chunks of
/// at most 64 KiB, so the body is never held whole. `Ok(0)` means the body ended.
pub trait RequestBody: Send {
    /// Reads up to `buf.len()` bytes, like [`std::io::Read::read`].
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;

    /// Reads up to `buf.len()` bytes into `buf`, which need not be initialised, and returns
    /// how many it wrote at its start (all of them initialised). `wsgi.input` reads straight
    /// into the new Python `bytes` object this way. The default zeroes `buf` and calls
    /// [`RequestBody::read`]; a body that copies from memory overrides it to skip the zeroing.
    fn read_uninit(&mut self, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        buf.fill(MaybeUninit::new(0));
        // SAFETY: every element was initialised just above, and `MaybeUninit<u8>` has the
        // layout of `u8`.
        let buf = unsafe { &mut *(buf as *mut [MaybeUninit<u8>] as *mut [u8]) };
        let n = self.read(buf)?;
        Ok(n.min(buf.len()))
    }

    /// How many bytes the next read returns without waiting (held in memory); 0 when it may
    /// block. A read of held bytes keeps the GIL (releasing it would cost more than the copy).
    fn held(&self) -> usize {
        0
    }

    /// `Some(n)` when the rest of the body is `n` bytes all held in memory, which reads return
    /// without waiting or failing, with nothing more to come from the client (a daemon-mode
    /// front then sends them with the request); `None` when more may have to be waited for,
    /// or it cannot tell.
    fn held_whole(&self) -> Option<usize> {
        None
    }

    /// The rest of a body held whole ([`RequestBody::held_whole`]), as the slices it keeps
    /// it in, without reading it: a daemon-mode front writes them beside the request instead
    /// of copying them into it. `None`: read it instead (the default).
    fn held_slices(&self) -> Option<Vec<&[u8]>> {
        None
    }
}

impl RequestBody for io::Empty {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        io::Read::read(self, buf)
    }

    fn held_whole(&self) -> Option<usize> {
        Some(0)
    }

    fn held_slices(&self) -> Option<Vec<&[u8]>> {
        Some(Vec::new())
    }
}

impl RequestBody for &[u8] {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        io::Read::read(self, buf)
    }

    fn read_uninit(&mut self, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        Ok(copy_to_uninit(self, buf))
    }

    fn held(&self) -> usize {
        self.len()
    }

    fn held_whole(&self) -> Option<usize> {
        Some(self.len())
    }

    fn held_slices(&self) -> Option<Vec<&[u8]>> {
        Some(vec![self])
    }
}

/// Copies the start of `src` into `dst` (as much as fits), advances `src` past it, and
/// returns how many bytes it copied: the [`RequestBody::read_uninit`] of bodies in memory.
pub fn copy_to_uninit(src: &mut &[u8], dst: &mut [MaybeUninit<u8>]) -> usize {
    let n = src.len().min(dst.len());
    // SAFETY: both ranges are `n` bytes long and valid (`n` is at most either length), and a
    // shared source cannot overlap an exclusive destination; `MaybeUninit<u8>` has the layout
    // of `u8`, and writing initialises it.
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.as_mut_ptr().cast::<u8>(), n) };
    *src = &src[n..];
    n
}

/// Appends to `out` what `body` gives until its end or `max` bytes, read straight into
/// `out`'s spare room (not zeroed first); returns how many bytes it appended. When a read
/// fails, `out` keeps what the reads before it appended.
pub fn read_body_into(
    body: &mut dyn RequestBody,
    out: &mut Vec<u8>,
    max: usize,
) -> io::Result<usize> {
    let start = out.len();
    while out.len() - start < max {
        let want = max - (out.len() - start);
        out.reserve(want);
        let got = body.read_uninit(&mut out.spare_capacity_mut()[..want])?;
        if got == 0 {
            break;
        }
        let len = out.len() + got.min(want);
        // SAFETY: read_uninit initialised the first `got` bytes of the spare room it was
        // given (its contract), and `len` stays within the capacity reserved above.
        unsafe { out.set_len(len) };
    }
    Ok(out.len() - start)
}

/// Where the response goes. Every method is called with the GIL released; an error means the
/// client is gone, and the call stops, calls the iterable's `close()` and reports it.
pub trait ResponseSink: Send {
    /// Sends the status line and headers; called once, before the first body byte (or at the
    /// end for an empty body). Header values are latin-1 bytes, names validated tokens.
    fn start(
        &mut self,
        status: u16,
        reason: &str,
        headers: Vec<(String, Vec<u8>)>,
    ) -> io::Result<()>;
    /// Sends one body chunk (never empty).
    fn write(&mut self, chunk: &[u8]) -> io::Result<()>;
    /// Whether `start` (when the response has not started) and then a write of `len` bytes
    /// (none when 0; with `write_last` when `last`) could wait: for the client, the network,
    /// or room in a full buffer. The caller lets the GIL go around what could, so that other
    /// Python threads run meanwhile; around what cannot, letting it go and taking it back
    /// would only cost time. True by default.
    fn may_wait(&self, len: usize, last: bool) -> bool {
        let _ = (len, last);
        true
    }
    /// Sends one body chunk lent without copying: a large `bytes` object the application
    /// yielded, which the sink may keep (and drop on any thread) after it returns. By default
    /// it is written as any chunk.
    fn write_shared(&mut self, chunk: crate::SharedChunk) -> io::Result<()> {
        self.write(&chunk)
    }
    /// Sends the body's last chunk: the response ends right after it, and no application
    /// code runs in between (the last item of a plain list or tuple, with no request events
    /// to publish). A sink may hold it to send it with the end (one write, one wake-up of
    /// the reader, instead of two). By default it is written as any chunk.
    fn write_last(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.write(chunk)
    }
    /// Sends one body chunk the sink may keep (a daemon process's, read off its socket). By
    /// default it is written as any chunk.
    fn write_owned(&mut self, chunk: Vec<u8>) -> io::Result<()> {
        self.write(&chunk)
    }
    /// Sends `len` bytes of the regular file `fd` from `offset` (sendfile). Return `Ok(false)`
    /// to have the body iterated instead. `fd` stays open for the duration of the call.
    fn file(&mut self, fd: RawFd, offset: u64, len: u64) -> io::Result<bool> {
        let _ = (fd, offset, len);
        Ok(false)
    }
    /// Sends `len` bytes of `file` from `offset`, keeping the file as long as the sink needs
    /// it: a file another process opened (a daemon process's `wsgi.file_wrapper`). Give the
    /// file back (`Ok(Some)`) to have the caller read and write it instead. By default as
    /// [`ResponseSink::file`].
    fn owned_file(
        &mut self,
        file: std::fs::File,
        offset: u64,
        len: u64,
    ) -> io::Result<Option<std::fs::File>> {
        use std::os::fd::AsRawFd;
        let sent = self.file(file.as_raw_fd(), offset, len)?;
        Ok((!sent).then_some(file))
    }
}

/// A Python exception, rendered for logs and error pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PyErrorInfo {
    /// The exception's class name, e.g. `ValueError`.
    pub type_name: String,
    /// `str(exception)`.
    pub message: String,
    /// The formatted traceback (`traceback.format_exception`), ending in the exception line.
    pub traceback: String,
}

impl std::fmt::Display for PyErrorInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.type_name, self.message)
    }
}

/// A WSGI script file and the callable to take from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptSpec {
    /// Absolute path of the `.wsgi`/`.py` file.
    pub path: PathBuf,
    /// The callable's name (`WSGICallableObject`, default `application`).
    pub callable: String,
    /// What to do when the file changed since it was loaded.
    pub reload: ReloadMode,
}

impl ScriptSpec {
    /// A spec for `path` with callable `application` and embedded-mode reloading.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        ScriptSpec {
            path: path.into(),
            callable: "application".to_string(),
            reload: ReloadMode::Reexecute,
        }
    }

    /// The script a routed request runs, with mod_wsgi's `WSGIScriptReloading` rule: a changed
    /// script is re-executed in embedded mode and reported (to restart the process) in daemon
    /// mode, unless reloading is Off.
    pub fn for_route(route: &wsgi_config::route::Route, daemon: bool) -> Self {
        ScriptSpec {
            path: route.script.clone(),
            callable: route.callable_object.clone(),
            reload: Self::reload_for(route, daemon),
        }
    }

    /// [`ScriptSpec::for_route`] in this spec, reusing its buffers.
    pub fn refill_for_route(&mut self, route: &wsgi_config::route::Route, daemon: bool) {
        let path = self.path.as_mut_os_string();
        path.clear();
        path.push(route.script.as_os_str());
        self.callable.clear();
        self.callable.push_str(&route.callable_object);
        self.reload = Self::reload_for(route, daemon);
    }

    /// The `WSGIScriptReloading` rule ([`ScriptSpec::for_route`]).
    fn reload_for(route: &wsgi_config::route::Route, daemon: bool) -> ReloadMode {
        match (route.settings.script_reloading, daemon) {
            (Some(false), _) => ReloadMode::Off,
            (_, true) => ReloadMode::Report,
            (_, false) => ReloadMode::Reexecute,
        }
    }
}

/// What a routed request runs, decided once where it is routed: the script and its callable,
/// the application group, and `WSGIPassAuthorization`. Embedded mode runs it with the
/// front's [`CallOptions`]; daemon mode sends it as it is to the daemon process, which runs
/// it with its own.
#[derive(Debug, Clone)]
pub struct AppCall {
    /// The script and callable (and how a changed file is handled).
    pub script: ScriptSpec,
    /// The application group (`""`: the main interpreter).
    pub application_group: String,
    /// Pass `Authorization` as `HTTP_AUTHORIZATION` (`WSGIPassAuthorization On`).
    pub pass_authorization: bool,
}

impl AppCall {
    /// The call `route` names, run in a daemon process (`daemon`) or in the front's own
    /// Python; they differ in what a changed script does ([`ScriptSpec::for_route`]).
    pub fn for_route(route: &wsgi_config::route::Route, daemon: bool) -> Self {
        AppCall {
            script: ScriptSpec::for_route(route, daemon),
            application_group: route.application_group.clone(),
            pass_authorization: route.settings.pass_authorization == Some(true),
        }
    }

    /// [`AppCall::for_route`] in this call, reusing its buffers (a call kept from an earlier
    /// request).
    pub fn refill_for_route(&mut self, route: &wsgi_config::route::Route, daemon: bool) {
        self.script.refill_for_route(route, daemon);
        self.application_group.clear();
        self.application_group.push_str(&route.application_group);
        self.pass_authorization = route.settings.pass_authorization == Some(true);
    }

    /// The options to run it with in a process whose own settings are `process`.
    pub fn options(&self, process: &CallOptions) -> CallOptions {
        CallOptions {
            pass_authorization: self.pass_authorization,
            ..process.clone()
        }
    }
}

/// `WSGIScriptReloading` behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadMode {
    /// Never look at the file again once loaded.
    Off,
    /// Embedded mode: re-execute a changed file on the next request.
    Reexecute,
    /// Daemon mode: report the change ([`LoadStatus::Changed`], [`Outcome::ScriptChanged`])
    /// so the process can be restarted; the loaded code keeps running.
    Report,
}

/// What [`crate::InterpreterHandle::load_script`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadStatus {
    /// The script was executed for the first time (or after a failed attempt).
    Loaded,
    /// Already loaded and unchanged.
    Unchanged,
    /// The file changed and was executed again.
    Reloaded,
    /// The file changed and [`ReloadMode::Report`] is set: restart the process.
    Changed,
}

/// Why a WSGI script could not provide its callable. The next request tries again.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ScriptError {
    /// The path is not absolute.
    #[error("WSGI script path `{}` is not absolute", .0.display())]
    NotAbsolute(PathBuf),
    /// The file does not exist or cannot be read (the caller answers 404).
    #[error("WSGI script `{}` cannot be read: {reason}", .path.display())]
    NotFound {
        /// The script.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// Executing the file raised.
    #[error("WSGI script `{}` raised {error} while being loaded:\n{}", .path.display(), .error.traceback)]
    Raised {
        /// The script.
        path: PathBuf,
        /// The exception.
        error: PyErrorInfo,
    },
    /// The file ran but defines no callable of that name.
    #[error("WSGI script `{}` does not contain WSGI application `{callable}`: {}; define it or set WSGICallableObject", .path.display(), callables_found(.found))]
    MissingCallable {
        /// The script.
        path: PathBuf,
        /// The name looked for.
        callable: String,
        /// The callables the script defines (public names, not classes or modules).
        found: Vec<String>,
    },
    /// The interpreter could not be entered.
    #[error(transparent)]
    Interp(#[from] InterpError),
}

/// "it defines `a`, `b`" or "it defines no callable", for [`ScriptError::MissingCallable`].
pub fn callables_found(found: &[String]) -> String {
    if found.is_empty() {
        return "it defines no callable".to_string();
    }
    let names: Vec<String> = found.iter().map(|n| format!("`{n}`")).collect();
    format!("it defines {}", names.join(", "))
}

/// Why an interpreter could not be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InterpError {
    /// Shutdown has begun; no Python runs any more.
    #[error("the Python runtime is shutting down; no new requests are accepted")]
    ShuttingDown,
    /// The calling thread is already inside another interpreter's closure.
    #[error(
        "this thread is already running Python in application group `{0}`; leave it before entering another"
    )]
    NestedAttach(String),
    /// CPython refused to create the sub-interpreter, or its set-up failed.
    #[error("creating the sub-interpreter for application group `{group}` failed: {reason}")]
    Create {
        /// The application group.
        group: String,
        /// CPython's error.
        reason: String,
    },
    /// CPython could not allocate a thread state.
    #[error("CPython could not create a thread state for application group `{0}`")]
    ThreadState(String),
}

/// An app failure, with the traceback for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppError {
    /// What went wrong, one line.
    pub message: String,
    /// The Python traceback when a Python exception was the cause, else empty.
    pub traceback: String,
}

impl AppError {
    /// Whether the app was stopped by `RequestTimeout` (request-timeout with
    /// interrupt-timeout): answered 504, as mod_wsgi does.
    pub fn is_request_timeout(&self) -> bool {
        self.message.starts_with("RequestTimeout")
    }
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// How a WSGI call ended, which tells the front how to finish the HTTP exchange.
#[derive(Debug)]
pub enum Outcome {
    /// The whole response went to the sink.
    Complete {
        /// The status code sent.
        status: u16,
        /// Body bytes sent (after Content-Length truncation).
        body_bytes: u64,
    },
    /// The body ended before its declared Content-Length (logged): close the connection.
    Incomplete {
        /// The status code sent.
        status: u16,
        /// The declared length.
        declared: u64,
        /// Bytes sent.
        sent: u64,
    },
    /// The app failed before anything was sent (logged with its traceback): answer 500.
    Error(AppError),
    /// The app failed after the headers were sent (logged): reset the connection, never
    /// end the response cleanly.
    Aborted {
        /// The status code already sent.
        status: u16,
        /// Body bytes already sent.
        sent: u64,
        /// The failure.
        error: AppError,
    },
    /// The sink failed (the client went away); the iterable's `close()` was called.
    ClientGone {
        /// The sink's error.
        error: io::Error,
    },
    /// The script could not be loaded: 404 for [`ScriptError::NotFound`], else 500.
    Script(ScriptError),
    /// [`ReloadMode::Report`]: the script changed; restart the process and retry.
    ScriptChanged,
    /// The interpreter could not be entered (shutdown): answer 503.
    Unavailable(InterpError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(extra: &str) -> wsgi_config::route::Route {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("app.wsgi");
        std::fs::write(&script, "").unwrap();
        let text = format!(
            "WSGIScriptAlias / {} callable-object=app\n{extra}",
            script.display()
        );
        let config = wsgi_config::load_str(
            &text,
            std::path::Path::new("x.conf"),
            &wsgi_config::reader::ReadOptions::default(),
        )
        .unwrap();
        let request = wsgi_config::route::RouteRequest {
            local_ip: None,
            local_port: 80,
            host: None,
            path: "/",
            facts: None,
        };
        config.route(&request).unwrap().unwrap()
    }

    #[test]
    fn usual_methods_and_protocols_are_kept_without_a_copy() {
        for method in ["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"] {
            assert!(matches!(method_text(method), Cow::Borrowed(m) if m == method));
        }
        for protocol in ["HTTP/1.1", "HTTP/1.0", "HTTP/2.0"] {
            assert!(matches!(protocol_text(protocol), Cow::Borrowed(p) if p == protocol));
        }
        // Anything else is kept as it came, case and all.
        for method in ["PROPFIND", "get", "GETX", ""] {
            assert!(matches!(method_text(method), Cow::Owned(m) if m == method));
        }
        assert!(matches!(protocol_text("HTTP/1.2"), Cow::Owned(p) if p == "HTTP/1.2"));
    }

    #[test]
    fn scripts_follow_the_reloading_rule_of_their_mode() {
        let on = route("");
        let spec = ScriptSpec::for_route(&on, false);
        assert_eq!(spec.callable, "app");
        assert_eq!(spec.path, on.script);
        assert_eq!(spec.reload, ReloadMode::Reexecute);
        assert_eq!(ScriptSpec::for_route(&on, true).reload, ReloadMode::Report);
        let off = route("WSGIScriptReloading Off\n");
        assert_eq!(ScriptSpec::for_route(&off, false).reload, ReloadMode::Off);
        assert_eq!(ScriptSpec::for_route(&off, true).reload, ReloadMode::Off);
    }

    /// A call refilled for another route is what that route's own would be.
    #[test]
    fn a_refilled_call_is_the_new_routes_alone() {
        let plain = route("");
        let other = route(
            "WSGIScriptReloading Off\nWSGIPassAuthorization On\nWSGIApplicationGroup a-much-longer-group-name\n",
        );
        for (before, after) in [(&plain, &other), (&other, &plain), (&other, &other)] {
            for daemon in [false, true] {
                let mut call = AppCall::for_route(before, !daemon);
                call.refill_for_route(after, daemon);
                let fresh = AppCall::for_route(after, daemon);
                assert_eq!(format!("{call:?}"), format!("{fresh:?}"));
            }
        }
    }

    fn source<'a>(env: &[(&str, &str)], headers: &[(&str, &str)]) -> HeadSource<'a> {
        HeadSource {
            method: "GET".into(),
            request_uri: b"/app/x?q=1",
            query_string: b"q=1",
            protocol: "HTTP/1.1",
            scheme: Scheme::Http,
            script_name: "/app",
            path_info: "/x\u{e9}",
            server_name: "example.com",
            server_port: 80,
            peer: ("10.0.0.1".into(), 5555),
            local: ("10.0.0.2", 8080),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
            script_filename: b"/srv/app.wsgi",
            document_root: b"/var/www/html",
            server_admin: b"",
            context: Some((b"", b"/var/www/html")),
            stamps: Stamps::default(),
        }
    }

    fn extra<'h>(head: &'h RequestHead, name: &str) -> Option<&'h [u8]> {
        head.extra
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }

    #[test]
    fn one_head_from_the_request_and_its_configured_variables() {
        let settings = wsgi_config::WsgiSettings::default();
        let env = [
            ("SITE", "a"),
            ("REQUEST_METHOD", "POST"),
            ("HTTP_X_TOKEN", "from-config"),
            ("HTTP_X_ABSENT", "from-config"),
            ("mod_wsgi.process_group", "x"),
            ("SSL_TLS_SNI", "example.com"),
        ];
        let head = RequestHead::build(source(&env, &[("X-Token", "client")]), &settings);
        assert_eq!(head.path_info, b"/x\xe9");
        assert_eq!(head.scheme, Scheme::Http);
        assert_eq!(extra(&head, "SITE"), Some(&b"a"[..]));
        assert_eq!(extra(&head, "SSL_TLS_SNI"), Some(&b"example.com"[..]));
        // The request's own variables and headers win over configured ones.
        assert_eq!(extra(&head, "REQUEST_METHOD"), None);
        assert_eq!(extra(&head, "HTTP_X_TOKEN"), None);
        assert_eq!(extra(&head, "mod_wsgi.process_group"), None);
        assert_eq!(extra(&head, "HTTP_X_ABSENT"), Some(&b"from-config"[..]));
        assert_eq!(extra(&head, "SCRIPT_FILENAME"), Some(&b"/srv/app.wsgi"[..]));
        assert_eq!(extra(&head, "SERVER_ADDR"), Some(&b"10.0.0.2"[..]));
        assert_eq!(extra(&head, "REQUEST_SCHEME"), Some(&b"http"[..]));
        assert_eq!(
            extra(&head, "mod_wsgi.listener_host"),
            Some(&b"10.0.0.2"[..])
        );
        assert_eq!(extra(&head, "mod_wsgi.listener_port"), Some(&b"8080"[..]));
    }

    #[test]
    fn https_from_the_environment_sets_the_url_scheme_and_is_removed() {
        let settings = wsgi_config::WsgiSettings::default();
        for (value, scheme) in [
            ("1", Scheme::Https),
            ("On", Scheme::Https),
            ("off", Scheme::Http),
        ] {
            let head = RequestHead::build(source(&[("HTTPS", value)], &[]), &settings);
            assert_eq!(head.scheme, scheme, "HTTPS={value}");
            assert_eq!(extra(&head, "HTTPS"), None);
            // The connection's scheme stays REQUEST_SCHEME, as Apache's.
            assert_eq!(extra(&head, "REQUEST_SCHEME"), Some(&b"http"[..]));
        }
    }

    #[test]
    fn trusted_proxies_apply_once_built() {
        let trusted = route(
            "WSGITrustedProxyHeaders X-Forwarded-For X-Forwarded-Proto\nWSGITrustedProxies 10.0.0.1\n",
        );
        let headers = [
            ("X-Forwarded-For", "192.0.2.7"),
            ("X-Forwarded-Proto", "https"),
            ("X-Real-IP", "6.6.6.6"),
        ];
        let head = RequestHead::build(source(&[], &headers), &trusted.settings);
        assert_eq!(head.remote_addr, "192.0.2.7");
        assert_eq!(head.scheme, Scheme::Https);
        assert!(!head.headers.iter().any(|(k, _)| k == "X-Real-IP"));
        let untrusted =
            RequestHead::build(source(&[], &headers), &wsgi_config::WsgiSettings::default());
        assert_eq!(untrusted.remote_addr, "10.0.0.1");
        assert_eq!(untrusted.scheme, Scheme::Http);
    }

    /// A head rebuilt for another request is that request's as a new one would be, whatever
    /// the request it held before had more or less of.
    #[test]
    fn a_rebuilt_head_is_the_new_requests_alone() {
        let trusted =
            route("WSGITrustedProxyHeaders X-Forwarded-For\nWSGITrustedProxies 10.0.0.1\n");
        let plain = wsgi_config::WsgiSettings::default();
        let large = || {
            let mut s = source(
                &[
                    ("SITE", "a"),
                    ("HTTPS", "on"),
                    ("LONG", "x".repeat(300).as_str()),
                ],
                &[
                    ("X-Token", "client"),
                    ("X-Forwarded-For", "192.0.2.7"),
                    ("Accept", "*/*"),
                ],
            );
            s.method = "PROPFIND".into();
            s.protocol = "HTTP/1.0";
            s.server_admin = b"admin@example.com";
            s.stamps.request_id = 7;
            s
        };
        let small = || {
            let mut s = source(&[], &[("Host", "example.com")]);
            s.path_info = "/";
            s.request_uri = b"/app/";
            s.query_string = b"";
            s.context = None;
            s.peer = ("10.0.0.9".into(), 4);
            s.local = ("::1", 65535);
            s
        };
        let cases: [(&dyn Fn() -> HeadSource<'static>, &wsgi_config::WsgiSettings); 4] = [
            (&large, &trusted.settings),
            (&small, &plain),
            (&large, &plain),
            (&small, &trusted.settings),
        ];
        for (before, before_settings) in &cases {
            for (after, after_settings) in &cases {
                let mut head = RequestHead::build(before(), before_settings);
                head.rebuild(after(), after_settings);
                let fresh = RequestHead::build(after(), after_settings);
                assert_eq!(format!("{head:?}"), format!("{fresh:?}"));
            }
        }
        let small_head = RequestHead::build(small(), &plain);
        assert_eq!(
            extra(&small_head, "mod_wsgi.listener_port"),
            Some(&b"65535"[..])
        );
        assert_eq!(extra(&small_head, "SERVER_ADDR"), Some(&b"::1"[..]));
        assert_eq!(extra(&small_head, "CONTEXT_PREFIX"), None);
        let mut zero = small();
        zero.local.1 = 0;
        let zero_head = RequestHead::build(zero, &plain);
        assert_eq!(extra(&zero_head, "mod_wsgi.listener_port"), Some(&b"0"[..]));
    }
}
