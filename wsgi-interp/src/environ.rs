//! The CGI part of the WSGI environ, computed without Python (so it is unit-tested here); the
//! ffi layer turns it into a dict with per-interpreter interned keys.

use smallvec::SmallVec;
use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::wsgi::{CallOptions, RequestHead, Scheme};

/// Environ keys interned once per interpreter. The index is the key's identity.
pub(crate) const KEYS: &[&str] = &[
    "REQUEST_METHOD",
    "SCRIPT_NAME",
    "PATH_INFO",
    "QUERY_STRING",
    "REQUEST_URI",
    "SERVER_PROTOCOL",
    "SERVER_NAME",
    "SERVER_PORT",
    "REMOTE_ADDR",
    "REMOTE_PORT",
    "REQUEST_SCHEME",
    "SERVER_SOFTWARE",
    "CONTENT_TYPE",
    "CONTENT_LENGTH",
    "SCRIPT_FILENAME",
    "mod_wsgi.script_name",
    "mod_wsgi.path_info",
    "mod_wsgi.process_group",
    "mod_wsgi.application_group",
    "mod_wsgi.callable_object",
    "apache.version",
    "mod_wsgi.version",
    "wsgi.version",
    "wsgi.url_scheme",
    "wsgi.input",
    "wsgi.errors",
    "wsgi.multithread",
    "wsgi.multiprocess",
    "wsgi.run_once",
    "wsgi.input_terminated",
    "wsgi.file_wrapper",
    "mod_wsgi.request_id",
    "mod_wsgi.request_start",
    "mod_wsgi.queue_start",
    "mod_wsgi.daemon_start",
    "mod_wsgi.application_start",
    "mod_wsgi.server_pid",
    "mod_wsgi.thread_id",
    // Variables fronts add as extras (interned too, so no request makes their keys).
    "SERVER_ADDR",
    "REMOTE_USER",
    "AUTH_TYPE",
    "SSL_TLS_SNI",
    "DOCUMENT_ROOT",
    "SERVER_ADMIN",
    "CONTEXT_PREFIX",
    "CONTEXT_DOCUMENT_ROOT",
    "mod_wsgi.listener_host",
    "mod_wsgi.listener_port",
    "mod_wsgi.request_handler",
    "mod_wsgi.handler_script",
    "HTTP_HOST",
    "HTTP_USER_AGENT",
    "HTTP_ACCEPT",
    "HTTP_ACCEPT_ENCODING",
    "HTTP_ACCEPT_LANGUAGE",
    "HTTP_CONNECTION",
    "HTTP_COOKIE",
    "HTTP_REFERER",
    "HTTP_CACHE_CONTROL",
    "HTTP_X_FORWARDED_FOR",
    "HTTP_AUTHORIZATION",
    "HTTP_UPGRADE_INSECURE_REQUESTS",
    "HTTP_SEC_FETCH_DEST",
    "HTTP_SEC_FETCH_MODE",
    "HTTP_SEC_FETCH_SITE",
    "HTTP_SEC_FETCH_USER",
    "HTTP_SEC_CH_UA",
    "HTTP_SEC_CH_UA_MOBILE",
    "HTTP_SEC_CH_UA_PLATFORM",
    "HTTP_ORIGIN",
    "HTTP_PRAGMA",
    "HTTP_DNT",
    "HTTP_IF_NONE_MATCH",
    "HTTP_IF_MODIFIED_SINCE",
    "HTTP_X_FORWARDED_PROTO",
    "HTTP_X_FORWARDED_HOST",
    "HTTP_X_REAL_IP",
    "HTTP_X_REQUESTED_WITH",
];

/// The variables whose value is the request's own (its URI, query, body length, cookies,
/// credentials, validators): their `str` is made for each request. Every other [`KEYS`] value
/// (the site's, the listener's, the client's on a keep-alive connection, the headers browsers
/// repeat) is kept per interpreter for the next request ([`cacheable`]), so a request that
/// repeats it makes none; what must not linger (credentials) is never kept.
const NOT_CACHED: &[&str] = &[
    "PATH_INFO",
    "QUERY_STRING",
    "REQUEST_URI",
    "REMOTE_PORT",
    "CONTENT_LENGTH",
    "mod_wsgi.path_info",
    "REMOTE_USER",
    "HTTP_COOKIE",
    "HTTP_REFERER",
    "HTTP_AUTHORIZATION",
    "HTTP_X_FORWARDED_FOR",
    "HTTP_X_REAL_IP",
    "HTTP_IF_NONE_MATCH",
    "HTTP_IF_MODIFIED_SINCE",
];

/// The [`KEYS`] not in [`NOT_CACHED`], as a mask of their indices.
static CACHEABLE_MASK: std::sync::LazyLock<u128> = std::sync::LazyLock::new(|| {
    let not_cached = NOT_CACHED.iter().fold(0u128, |mask, name| {
        let i = KEYS
            .iter()
            .position(|k| k == name)
            .expect("NOT_CACHED names known keys");
        mask | 1 << i
    });
    !not_cached & (u128::MAX >> (128 - KEYS.len()))
});

/// Whether the `str` made for the value of [`KEYS`]`[i]` is kept for the next request.
pub(crate) fn cacheable(mask: u128, i: usize) -> bool {
    mask & (1 << i) != 0
}

/// The mask [`cacheable`] reads, loaded once per environ.
pub(crate) fn cacheable_mask() -> u128 {
    *CACHEABLE_MASK
}

/// Indices into [`KEYS`] for the keys the ffi layer sets itself.
pub(crate) mod k {
    pub const PROCESS_GROUP: usize = 17;
    pub const APPLICATION_GROUP: usize = 18;
    pub const CALLABLE_OBJECT: usize = 19;
    pub const APACHE_VERSION: usize = 20;
    pub const MOD_WSGI_VERSION: usize = 21;
    pub const WSGI_VERSION: usize = 22;
    pub const URL_SCHEME: usize = 23;
    pub const INPUT: usize = 24;
    pub const ERRORS: usize = 25;
    pub const MULTITHREAD: usize = 26;
    pub const MULTIPROCESS: usize = 27;
    pub const RUN_ONCE: usize = 28;
    pub const INPUT_TERMINATED: usize = 29;
    pub const FILE_WRAPPER: usize = 30;
    pub const REQUEST_ID: usize = 31;
    pub const REQUEST_START: usize = 32;
    pub const QUEUE_START: usize = 33;
    pub const DAEMON_START: usize = 34;
    pub const APPLICATION_START: usize = 35;
    pub const SERVER_PID: usize = 36;
    pub const THREAD_ID: usize = 37;
}

/// `mod_wsgi.version`: the mod_wsgi behaviour this host reproduces.
pub const MOD_WSGI_VERSION: (u8, u8, u8) = (6, 0, 0);

/// `apache.version` under `wsgi serve`, which is no Apache: the httpd release line (2.4) whose
/// configuration and request handling it reproduces, with no patch level claimed.
pub const SERVE_APACHE_VERSION: (u16, u16, u16) = (2, 4, 0);

/// `apache.version` of the interpreters made from now on, packed (see [`set_apache_version`]).
static APACHE_VERSION: AtomicU64 = AtomicU64::new(pack_version(SERVE_APACHE_VERSION));

const fn pack_version((a, b, c): (u16, u16, u16)) -> u64 {
    ((a as u64) << 32) | ((b as u64) << 16) | c as u64
}

/// Sets `apache.version` (mod_wsgi: the httpd headers it was built with) for the interpreters
/// made after this call: the Apache module gives its httpd's; `wsgi serve` keeps
/// [`SERVE_APACHE_VERSION`].
pub fn set_apache_version(version: (u16, u16, u16)) {
    APACHE_VERSION.store(pack_version(version), Ordering::Relaxed);
}

/// The `apache.version` an interpreter made now gives.
pub(crate) fn apache_version() -> (u16, u16, u16) {
    let v = APACHE_VERSION.load(Ordering::Relaxed);
    ((v >> 32) as u16, (v >> 16) as u16, v as u16)
}

/// Writes `id` as Apache writes a request's log id (`%L`, `mod_wsgi.request_id`): its 8 bytes
/// in base64 without the padding, 11 characters.
pub fn format_request_id(id: u64, buf: &mut [u8; 11]) -> &str {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    // 64 bits as eleven 6-bit digits, the last padded with two zero bits.
    let bits = u128::from(id) << 2;
    for (i, out) in buf.iter_mut().enumerate() {
        *out = ALPHABET[((bits >> (6 * (10 - i))) & 63) as usize];
    }
    std::str::from_utf8(buf).expect("base64 is ASCII")
}

/// `SERVER_SOFTWARE`.
const SERVER_SOFTWARE: &str = concat!("wsgi-rs/", env!("CARGO_PKG_VERSION"));

/// Constant values the ffi layer keeps as one `str` per interpreter (all ASCII, so decoding
/// them as latin-1 or UTF-8 gives the same text). The index is the value's identity.
pub(crate) const VALUES: &[&str] = &[
    "http",
    "https",
    SERVER_SOFTWARE,
    "application",
    "",
    "GET",
    "POST",
    "HEAD",
    "HTTP/1.1",
    "HTTP/1.0",
];

/// Indices into [`VALUES`].
pub(crate) mod v {
    pub const HTTP: usize = 0;
    pub const HTTPS: usize = 1;
    pub const SERVER_SOFTWARE: usize = 2;
    pub const APPLICATION: usize = 3;
    pub const EMPTY: usize = 4;
    pub const GET: usize = 5;
    pub const POST: usize = 6;
    pub const HEAD: usize = 7;
    pub const HTTP_1_1: usize = 8;
    pub const HTTP_1_0: usize = 9;
}

/// Where the `HTTP_*` keys start in [`KEYS`] (they are last).
#[cfg(test)]
const HTTP_KEYS: usize = 50;

/// [`KEYS`] by name (FxHash: these keys are ours, not a client's to collide).
static KEY_INDEX: std::sync::LazyLock<rustc_hash::FxHashMap<&'static str, usize>> =
    std::sync::LazyLock::new(|| KEYS.iter().enumerate().map(|(i, k)| (*k, i)).collect());

/// An environ key: one of [`KEYS`] or a computed name (an uncommon `HTTP_*`, an extra).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Key<'a> {
    Known(usize),
    Other(&'a str),
}

impl Key<'_> {
    fn named(name: &str) -> Key<'_> {
        match KEY_INDEX.get(name) {
            Some(&i) => Key::Known(i),
            None => Key::Other(name),
        }
    }

    #[cfg(test)]
    fn name(&self) -> &str {
        match self {
            Key::Known(i) => KEYS[*i],
            Key::Other(s) => s,
        }
    }
}

/// An environ value: one of [`VALUES`] or bytes to decode as latin-1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    Known(usize),
    Bytes(&'a [u8]),
}

impl Value<'_> {
    #[cfg(test)]
    fn bytes(&self) -> &[u8] {
        match self {
            Value::Known(i) => VALUES[*i].as_bytes(),
            Value::Bytes(b) => b,
        }
    }
}

/// The cached value for a method, when it is a common one.
fn method_value(method: &str) -> Value<'_> {
    match method {
        "GET" => Value::Known(v::GET),
        "POST" => Value::Known(v::POST),
        "HEAD" => Value::Known(v::HEAD),
        m => Value::Bytes(m.as_bytes()),
    }
}

/// The cached value for a protocol, when it is a common one.
fn protocol_value(protocol: &str) -> Value<'_> {
    match protocol {
        "HTTP/1.1" => Value::Known(v::HTTP_1_1),
        "HTTP/1.0" => Value::Known(v::HTTP_1_0),
        p => Value::Bytes(p.as_bytes()),
    }
}

/// Whether `a` and `b` hold the same bytes: for up to 16 of them with a few plain loads,
/// without calling `memcmp`. Every request compares a dozen short values this way (a host, a
/// port, a method, the callable's name); glibc's `memcmp` reads a short slice with a masked
/// vector load, and `perf` put those calls at 3-5 % of a hello request's CPU.
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    // Two loads that overlap where the length is not a multiple: every byte is in one.
    fn ends<const N: usize>(s: &[u8]) -> ([u8; N], [u8; N]) {
        let first = s[..N].try_into().expect("N bytes");
        let last = s[s.len() - N..].try_into().expect("N bytes");
        (first, last)
    }
    match a.len() {
        0 => true,
        1..=3 => {
            a[0] == b[0] && a[a.len() / 2] == b[b.len() / 2] && a[a.len() - 1] == b[b.len() - 1]
        }
        4..=7 => ends::<4>(a) == ends::<4>(b),
        8..=16 => ends::<8>(a) == ends::<8>(b),
        _ => a == b,
    }
}

/// Writes `n` in decimal into `buf`, returning the digits.
pub(crate) fn decimal(n: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut n = n;
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Collapses runs of `/` into one, as mod_wsgi does for SCRIPT_NAME and PATH_INFO.
fn collapse_slashes(p: &[u8]) -> Cow<'_, [u8]> {
    if !p.windows(2).any(|w| w == b"//") {
        return Cow::Borrowed(p);
    }
    let mut out = Vec::with_capacity(p.len());
    for &b in p {
        if b == b'/' && out.last() == Some(&b'/') {
            continue;
        }
        out.push(b);
    }
    Cow::Owned(out)
}

/// Whether a request header may reach the app: names with anything but ASCII alphanumerics
/// and `-` are dropped (Apache does, anti-spoofing), and so are `Proxy` (httpoxy) and
/// `Authorization` unless passed on purpose. Names equal but for case get the same answer.
fn header_passes(name: &str, pass_authorization: bool) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.eq_ignore_ascii_case("proxy")
        && (pass_authorization || !name.eq_ignore_ascii_case("authorization"))
}

/// Calls `f` with the `HTTP_*` key of a passing header name (the `Content-*` pair become
/// `CONTENT_TYPE` / `CONTENT_LENGTH`), built on the stack when short.
fn with_header_key<R>(name: &str, f: impl FnOnce(Key<'_>) -> R) -> R {
    if name.eq_ignore_ascii_case("content-type") {
        return f(Key::Known(12));
    }
    if name.eq_ignore_ascii_case("content-length") {
        return f(Key::Known(13));
    }
    let mut stack = [0u8; 64];
    let mut heap = Vec::new();
    let buf: &mut [u8] = if 5 + name.len() <= stack.len() {
        &mut stack[..5 + name.len()]
    } else {
        heap.resize(5 + name.len(), 0);
        &mut heap
    };
    buf[..5].copy_from_slice(b"HTTP_");
    for (d, &c) in buf[5..].iter_mut().zip(name.as_bytes()) {
        *d = if c == b'-' {
            b'_'
        } else {
            c.to_ascii_uppercase()
        };
    }
    // The name passed `header_passes`: ASCII alphanumerics, `-` and `_` only.
    let key = std::str::from_utf8(buf).expect("header keys are ASCII");
    match KEY_INDEX.get(key) {
        Some(&i) => f(Key::Known(i)),
        None => f(Key::Other(key)),
    }
}

/// The known keys (bits of their indices) `req`'s extras name.
pub(crate) fn known_keys_named(req: &RequestHead) -> u128 {
    req.extra
        .iter()
        .filter_map(|(name, _)| match Key::named(name) {
            Key::Known(i) => Some(1u128 << i),
            Key::Other(_) => None,
        })
        .fold(0, |bits, bit| bits | bit)
}

/// Feeds the CGI variables of the environ to `f`, in a stable order, without collecting them.
/// Values are bytes (the ffi layer decodes them as latin-1) or known constants. Repeated
/// headers are joined with `", "`, except `Cookie`, joined with `"; "` so cookie parsers can
/// split it; a repeated header takes the place of its first occurrence. Extras come last and
/// override (remove) any earlier variable of the same name; of repeated extras the last wins.
pub(crate) fn for_each_cgi<E>(
    req: &RequestHead,
    opts: &CallOptions,
    mut f: impl FnMut(Key<'_>, Value<'_>) -> Result<(), E>,
) -> Result<(), E> {
    // The extras' keys, looked up once; which keys they override: known ones as bits, others
    // by name (rare).
    let extra_keys = extra_keys(&req.extra);
    let mut known_extras: u128 = 0;
    let mut other_extras = false;
    for key in &extra_keys {
        match key {
            Key::Known(i) => known_extras |= 1 << i,
            Key::Other(_) => other_extras = true,
        }
    }
    let shadowed = |key: Key<'_>| match key {
        Key::Known(i) => known_extras & (1 << i) != 0,
        Key::Other(name) => other_extras && req.extra.iter().any(|(n, _)| n == name),
    };
    let mut emit = |key: Key<'_>, value: Value<'_>| {
        if shadowed(key) { Ok(()) } else { f(key, value) }
    };
    let script_name = collapse_slashes(&req.script_name);
    let path_info = collapse_slashes(&req.path_info);
    let mut server_port = [0u8; 10];
    let mut remote_port = [0u8; 10];
    let fixed: [(usize, Value<'_>); 14] = [
        (0, method_value(&req.method)),
        (1, Value::Bytes(&script_name)),
        (2, Value::Bytes(&path_info)),
        (3, Value::Bytes(&req.query_string)),
        (4, Value::Bytes(&req.request_uri)),
        (5, protocol_value(&req.protocol)),
        (6, Value::Bytes(req.server_name.as_bytes())),
        (
            7,
            Value::Bytes(decimal(req.server_port.into(), &mut server_port)),
        ),
        (8, Value::Bytes(req.remote_addr.as_bytes())),
        (
            9,
            Value::Bytes(decimal(req.remote_port.into(), &mut remote_port)),
        ),
        (
            10,
            Value::Known(match req.scheme {
                Scheme::Http => v::HTTP,
                Scheme::Https => v::HTTPS,
            }),
        ),
        (11, Value::Known(v::SERVER_SOFTWARE)),
        (15, Value::Bytes(&script_name)),
        (16, Value::Bytes(&path_info)),
    ];
    for (i, value) in fixed {
        emit(Key::Known(i), value)?;
    }
    let pass_auth = opts.pass_authorization;
    for (i, (name, value)) in req.headers.iter().enumerate() {
        if !header_passes(name, pass_auth)
            || req.headers[..i]
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            continue;
        }
        let mut repeats = req.headers[i + 1..]
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .peekable();
        if repeats.peek().is_none() {
            with_header_key(name, |key| emit(key, Value::Bytes(value)))?;
            continue;
        }
        let sep: &[u8] = if name.eq_ignore_ascii_case("cookie") {
            b"; "
        } else {
            b", "
        };
        let mut joined = value.clone();
        for (_, more) in repeats {
            joined.extend_from_slice(sep);
            joined.extend_from_slice(more);
        }
        with_header_key(name, |key| emit(key, Value::Bytes(&joined)))?;
    }
    // Of repeated extras the last wins: walked from the end, each key once.
    let mut emitted: u128 = 0;
    for (i, (name, value)) in req.extra.iter().enumerate().rev() {
        let key = extra_keys[i];
        let repeated = match key {
            Key::Known(k) => {
                let seen = emitted & (1 << k) != 0;
                emitted |= 1 << k;
                seen
            }
            Key::Other(_) => req.extra[i + 1..].iter().any(|(n, _)| n == name),
        };
        if !repeated {
            f(key, Value::Bytes(value))?;
        }
    }
    Ok(())
}

thread_local! {
    /// The keys of the extra variables of the last request this thread built an environ
    /// for, by place: each name a static string's address and length, and its key's index
    /// (`usize::MAX`: not one of [`KEYS`]). A front sends the same names in the same order
    /// with every request of a route.
    static LAST_EXTRA_KEYS: std::cell::RefCell<SmallVec<[(usize, usize, usize); 24]>> =
        std::cell::RefCell::new(SmallVec::new());
}

/// The keys of `extra`'s names. A static name (the front's own) at the place the last
/// request on this thread had it is not looked up again: static text at one address never
/// changes, so the same address and length are the same name.
fn extra_keys<'a>(extra: &'a [(Cow<'static, str>, Vec<u8>)]) -> SmallVec<[Key<'a>; 24]> {
    LAST_EXTRA_KEYS.with_borrow_mut(|last| {
        last.resize(extra.len(), (0, 0, 0));
        extra
            .iter()
            .zip(last.iter_mut())
            .map(|((name, _), seen)| match name {
                Cow::Borrowed(name) => {
                    let id = (name.as_ptr() as usize, name.len());
                    if (seen.0, seen.1) != id {
                        let index = match Key::named(name) {
                            Key::Known(i) => i,
                            Key::Other(_) => usize::MAX,
                        };
                        *seen = (id.0, id.1, index);
                    }
                    match seen.2 {
                        usize::MAX => Key::Other(name),
                        i => Key::Known(i),
                    }
                }
                Cow::Owned(name) => Key::named(name),
            })
            .collect()
    })
}

/// The CGI variables collected (for tests).
#[cfg(test)]
pub(crate) fn cgi_variables(req: &RequestHead, opts: &CallOptions) -> Vec<(String, Vec<u8>)> {
    let mut vars = Vec::new();
    for_each_cgi::<()>(req, opts, |k, v| {
        vars.push((k.name().to_string(), v.bytes().to_vec()));
        Ok(())
    })
    .unwrap();
    vars
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(vars: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
        vars.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }

    fn head(headers: &[(&str, &str)]) -> RequestHead {
        RequestHead {
            method: "GET".into(),
            script_name: b"/app".to_vec(),
            path_info: b"//x//y".to_vec(),
            protocol: "HTTP/1.1".into(),
            server_name: "example.org".into(),
            server_port: 8080,
            remote_addr: "10.0.0.1".into(),
            remote_port: 5555,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn same_bytes_agrees_with_slice_equality() {
        let base: Vec<u8> = (0..40u8).map(|i| b'a' + i % 26).collect();
        for len in 0..=40 {
            let a = &base[..len];
            // The same bytes elsewhere in memory.
            let copy = a.to_vec();
            assert!(same_bytes(a, &copy), "{len}");
            // One byte changed anywhere, and a length one off.
            for at in 0..len {
                let mut b = a.to_vec();
                b[at] ^= 0x20;
                assert!(!same_bytes(a, &b), "{len} bytes, byte {at} differs");
            }
            if len < 40 {
                assert!(
                    !same_bytes(a, &base[..len + 1]),
                    "{len} against {}",
                    len + 1
                );
            }
        }
    }

    #[test]
    fn indices_match_names() {
        assert_eq!(KEYS[k::PROCESS_GROUP], "mod_wsgi.process_group");
        assert_eq!(KEYS[k::APPLICATION_GROUP], "mod_wsgi.application_group");
        assert_eq!(KEYS[k::CALLABLE_OBJECT], "mod_wsgi.callable_object");
        assert_eq!(KEYS[k::APACHE_VERSION], "apache.version");
        assert_eq!(KEYS[k::MOD_WSGI_VERSION], "mod_wsgi.version");
        assert_eq!(KEYS[k::WSGI_VERSION], "wsgi.version");
        assert_eq!(KEYS[k::URL_SCHEME], "wsgi.url_scheme");
        assert_eq!(KEYS[k::INPUT], "wsgi.input");
        assert_eq!(KEYS[k::ERRORS], "wsgi.errors");
        assert_eq!(KEYS[k::MULTITHREAD], "wsgi.multithread");
        assert_eq!(KEYS[k::MULTIPROCESS], "wsgi.multiprocess");
        assert_eq!(KEYS[k::RUN_ONCE], "wsgi.run_once");
        assert_eq!(KEYS[k::INPUT_TERMINATED], "wsgi.input_terminated");
        assert_eq!(KEYS[k::FILE_WRAPPER], "wsgi.file_wrapper");
        assert_eq!(KEYS[k::REQUEST_ID], "mod_wsgi.request_id");
        assert_eq!(KEYS[k::REQUEST_START], "mod_wsgi.request_start");
        assert_eq!(KEYS[k::QUEUE_START], "mod_wsgi.queue_start");
        assert_eq!(KEYS[k::DAEMON_START], "mod_wsgi.daemon_start");
        assert_eq!(KEYS[k::APPLICATION_START], "mod_wsgi.application_start");
        assert_eq!(KEYS[k::SERVER_PID], "mod_wsgi.server_pid");
        assert_eq!(KEYS[k::THREAD_ID], "mod_wsgi.thread_id");
        assert_eq!(KEYS[12], "CONTENT_TYPE");
        assert_eq!(KEYS[13], "CONTENT_LENGTH");
        assert_eq!(KEYS[14], "SCRIPT_FILENAME");
        assert_eq!(KEYS[HTTP_KEYS], "HTTP_HOST");
        assert!(
            KEYS.len() <= 128,
            "for_each_cgi keeps the shadowed keys in a u128"
        );
        assert_eq!(KEY_INDEX.len(), KEYS.len(), "no key twice");
        assert!(KEYS[HTTP_KEYS..].iter().all(|k| k.starts_with("HTTP_")));
        assert!(KEYS[..HTTP_KEYS].iter().all(|k| !k.starts_with("HTTP_")));
        assert_eq!(VALUES[v::HTTP], "http");
        assert_eq!(VALUES[v::HTTPS], "https");
        assert_eq!(VALUES[v::SERVER_SOFTWARE], SERVER_SOFTWARE);
        assert_eq!(VALUES[v::APPLICATION], "application");
        assert_eq!(VALUES[v::EMPTY], "");
        assert_eq!(VALUES[v::GET], "GET");
        assert_eq!(VALUES[v::POST], "POST");
        assert_eq!(VALUES[v::HEAD], "HEAD");
        assert_eq!(VALUES[v::HTTP_1_1], "HTTP/1.1");
        assert_eq!(VALUES[v::HTTP_1_0], "HTTP/1.0");
        assert!(VALUES.iter().all(|v| v.is_ascii()));
        let mut id = [0u8; 11];
        // Apache's log id of the bytes 00 01 02 03 04 05 06 07 (apr_base64_encode, `=` cut).
        assert_eq!(
            format_request_id(0x0001_0203_0405_0607, &mut id),
            "AAECAwQFBgc"
        );
        assert_eq!(format_request_id(u64::MAX, &mut id), "//////////8");
        let mut buf = [0u8; 10];
        for n in [0u32, 7, 10, 443, 8080, 65535, u32::MAX] {
            assert_eq!(decimal(n, &mut buf), n.to_string().as_bytes());
        }
    }

    #[test]
    fn headers_fold_as_apache_does() {
        let req = head(&[
            ("Host", "a"),
            ("X-Thing", "1"),
            ("x-thing", "2"),
            ("Cookie", "a=1"),
            ("Cookie", "b=2"),
            ("X_Spoof", "no"),
            ("Proxy", "http://evil"),
            ("Authorization", "Basic x"),
            ("Content-Type", "text/plain"),
            ("Content-Length", "3"),
        ]);
        let vars = cgi_variables(&req, &CallOptions::default());
        assert_eq!(get(&vars, "HTTP_HOST"), Some(b"a".as_slice()));
        assert_eq!(get(&vars, "HTTP_X_THING"), Some(b"1, 2".as_slice()));
        assert_eq!(get(&vars, "HTTP_COOKIE"), Some(b"a=1; b=2".as_slice()));
        assert_eq!(get(&vars, "CONTENT_TYPE"), Some(b"text/plain".as_slice()));
        assert_eq!(get(&vars, "CONTENT_LENGTH"), Some(b"3".as_slice()));
        assert!(get(&vars, "HTTP_CONTENT_TYPE").is_none());
        assert!(get(&vars, "HTTP_X_SPOOF").is_none());
        assert!(get(&vars, "HTTP_PROXY").is_none());
        assert!(get(&vars, "HTTP_AUTHORIZATION").is_none());
        assert_eq!(get(&vars, "QUERY_STRING"), Some(b"".as_slice()));
        assert_eq!(get(&vars, "PATH_INFO"), Some(b"/x/y".as_slice()));
        assert_eq!(get(&vars, "mod_wsgi.path_info"), Some(b"/x/y".as_slice()));
        assert_eq!(get(&vars, "SERVER_PORT"), Some(b"8080".as_slice()));
        assert!(get(&vars, "HTTPS").is_none());
        let with_auth = cgi_variables(
            &req,
            &CallOptions {
                pass_authorization: true,
                ..Default::default()
            },
        );
        assert_eq!(
            get(&with_auth, "HTTP_AUTHORIZATION"),
            Some(b"Basic x".as_slice())
        );
    }

    #[test]
    fn extras_override() {
        let mut req = head(&[]);
        req.extra = vec![
            ("SERVER_NAME".into(), b"other".to_vec()),
            ("REMOTE_USER".into(), b"bob".to_vec()),
        ];
        let vars = cgi_variables(&req, &CallOptions::default());
        assert_eq!(get(&vars, "SERVER_NAME"), Some(b"other".as_slice()));
        assert_eq!(vars.iter().filter(|(k, _)| k == "SERVER_NAME").count(), 1);
        assert_eq!(get(&vars, "REMOTE_USER"), Some(b"bob".as_slice()));
    }

    /// The extras' keys are each request's own, whatever the request before on the thread
    /// had at the same places: other static names, the same, or names of its own.
    #[test]
    fn extras_keys_are_each_requests_own() {
        let requests: Vec<Vec<(Cow<'static, str>, Vec<u8>)>> = vec![
            vec![
                ("SCRIPT_FILENAME".into(), b"/a.wsgi".to_vec()),
                ("MY_VAR".into(), b"1".to_vec()),
            ],
            vec![
                ("DOCUMENT_ROOT".into(), b"/srv".to_vec()),
                ("SCRIPT_FILENAME".into(), b"/b.wsgi".to_vec()),
                ("REMOTE_USER".into(), b"bob".to_vec()),
            ],
            vec![
                (Cow::Owned("DOCUMENT_ROOT".to_string()), b"/own".to_vec()),
                (Cow::Owned("MINE".to_string()), b"2".to_vec()),
            ],
            vec![("SCRIPT_FILENAME".into(), b"/c.wsgi".to_vec())],
        ];
        for _ in 0..2 {
            for extra in &requests {
                let mut req = head(&[]);
                req.extra = extra.clone();
                let vars = cgi_variables(&req, &CallOptions::default());
                let got: Vec<_> = vars
                    .iter()
                    .filter(|(k, _)| extra.iter().any(|(name, _)| name == k))
                    .cloned()
                    .collect();
                let mut want: Vec<_> = extra
                    .iter()
                    .rev()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect();
                want.sort();
                let mut got_sorted = got.clone();
                got_sorted.sort();
                assert_eq!(got_sorted, want, "{extra:?}");
            }
        }
    }
}
