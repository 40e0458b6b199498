//! The C boundary of the module, in one place:
//!
//! * [`ffi_fn!`] declares every function Apache (through `src/shim.c`) calls into Rust. It exports
//!   the function under its own name and runs its whole body, converting the C arguments
//!   included, under [`guard`], with the fallback written beside it: since Rust 1.81 a panic
//!   leaving an `extern "C"` function aborts the process, which in an Apache child would kill
//!   every request in flight.
//! * [`Request`] is the `request_rec` Apache serves on this thread, borrowed for the hook call
//!   and built once, where an export receives the pointer; its methods are the shim's
//!   accessors. Past the exports, only [`Request::from_raw`] and [`log_lines`] (for
//!   `applog.rs`'s thread-local) take a `*mut RequestRec`, and both are `unsafe`.
//! * [`RawRequest`] mirrors `struct wsgi_rs_request` of `src/shim.c`, and [`RawSection`]
//!   `struct wsgi_rs_section`: both sides assert the same sizes and offsets, so a change on one
//!   side alone fails the build.
//! * C strings in and out: [`text`], [`bytes`], [`to_c`] (freed by `wsgi_rs_free`).

use std::ffi::{CStr, CString, c_char, c_int, c_long, c_void};
use std::marker::PhantomData;
use std::mem::{MaybeUninit, offset_of};
use std::os::fd::RawFd;
use std::ptr::NonNull;

use wsgi_config::route::Found;

/// Exports an `extern "C"` function whose body runs under [`guard`]:
///
/// ```text
/// ffi_fn! {
///     /// Docs (with `# Safety` for an `unsafe fn`).
///     unsafe fn wsgi_rs_name(arg: *const c_char) -> *mut c_char {
///         body: converts `arg`, does the work, gives the value
///     } ?= "what, for the panic message", |message| fallback_value
/// }
///
/// ffi_fn! {
///     /// A request hook: `r` arrives as `*mut RequestRec`, the body sees a `&Request<'_>`.
///     request fn wsgi_rs_hook(r: &Request, arg: c_int) -> c_int {
///         body
///     } ?= "what", status_on_panic
/// }
/// ```
///
/// A fallback closure is given the panic's message (`wsgi-rs internal error in <what>: ...`)
/// and returns the export's type: NULL, an error string, 0, `()`... Both closures see the C
/// arguments, which are all `Copy` (pointers and integers). A request hook's panic is logged
/// for the request and answered with the status given (500, `AUTH_GENERAL_ERROR`, ...), as is a
/// NULL request.
macro_rules! ffi_fn {
    (
        $(#[$attr:meta])*
        request fn $name:ident($r:ident: &Request $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty $body:block
        ?= $what:literal, $status:expr
    ) => {
        $(#[$attr])*
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name($r: *mut $crate::ffi::RequestRec $(, $arg: $ty)*) -> $ret {
            // SAFETY: the export's contract (its `# Safety`): Apache passes NULL or the request
            // it is serving on this thread, live for this call, and the `Request` does not
            // outlive the call (it is a local of this function).
            let request = unsafe { $crate::ffi::Request::from_raw($r) };
            $crate::ffi::guard(
                $what,
                |message| $crate::ffi::failed(request.as_ref(), &message, $status),
                || match &request {
                    Some($r) => $body,
                    None => $crate::ffi::failed(None, "Apache passed no request", $status),
                },
            )
        }
    };
    (
        $(#[$attr:meta])*
        unsafe fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block
        ?= $what:literal, $fallback:expr
    ) => {
        $(#[$attr])*
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name($($arg: $ty),*) $(-> $ret)? {
            $crate::ffi::guard($what, $fallback, || $body)
        }
    };
    (
        $(#[$attr:meta])*
        fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block
        ?= $what:literal, $fallback:expr
    ) => {
        $(#[$attr])*
        #[unsafe(no_mangle)]
        pub extern "C" fn $name($($arg: $ty),*) $(-> $ret)? {
            $crate::ffi::guard($what, $fallback, || $body)
        }
    };
}
pub(crate) use ffi_fn;

/// Runs `f`, turning a panic into `fallback` (with the panic's message) so that no panic ever
/// unwinds into Apache. Only [`ffi_fn!`] calls it.
pub(crate) fn guard<T>(what: &str, fallback: impl FnOnce(String) -> T, f: impl FnOnce() -> T) -> T {
    wsgi_daemon::panics::catch(f).unwrap_or_else(|message| {
        fallback(format!(
            "wsgi-rs internal error in {what}: {message} (please report it)"
        ))
    })
}

/// A request hook's failure: `message` logged for the request (else the server), answered
/// with `status`.
pub(crate) fn failed<T>(r: Option<&Request<'_>>, message: &str, status: T) -> T {
    match r {
        Some(r) => r.log(APLOG_ERR, message),
        None => log_server(APLOG_ERR, message),
    }
    status
}

// ---- C strings ----

/// A C string as text; NULL is empty (invalid UTF-8 replaced).
///
/// # Safety
/// `ptr` is NULL or a NUL-terminated string valid for the call.
pub(crate) unsafe fn text(ptr: *const c_char) -> String {
    if ptr.is_null() {
        return String::new();
    }
    // SAFETY: the caller guarantees a valid NUL-terminated string.
    unsafe { CStr::from_ptr(ptr) }
        .to_string_lossy()
        .into_owned()
}

/// A C string as bytes (NULL: empty).
///
/// # Safety
/// `ptr` is NULL or a NUL-terminated string valid for the call.
pub(crate) unsafe fn bytes(ptr: *const c_char) -> Vec<u8> {
    if ptr.is_null() {
        Vec::new()
    } else {
        // SAFETY: guaranteed by the caller.
        unsafe { CStr::from_ptr(ptr) }.to_bytes().to_vec()
    }
}

/// Bytes as text, each invalid UTF-8 sequence's bytes read as latin-1.
fn latin1_text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes)
        .unwrap_or_else(|e| e.into_bytes().iter().map(|&b| char::from(b)).collect())
}

/// A message as a C string for Apache (freed with `wsgi_rs_free`).
pub(crate) fn to_c(message: String) -> *mut c_char {
    CString::new(message.replace('\0', " "))
        .expect("NULs were replaced")
        .into_raw()
}

/// Writes through `out` when it is not NULL.
///
/// # Safety
/// `out` is NULL or valid for a write of `T`.
pub(crate) unsafe fn write_out<T>(out: *mut T, value: T) {
    if !out.is_null() {
        // SAFETY: the caller's contract.
        unsafe { out.write(value) };
    }
}

// ---- The shared structures ----

/// Apache's `request_rec`, opaque here.
#[repr(C)]
pub struct RequestRec {
    _private: [u8; 0],
}

/// `struct wsgi_rs_request` of `src/shim.c`: what the environ and the router need from a
/// request, filled by `wsgi_rs_request_info`.
#[repr(C)]
struct RawRequest {
    method: *const c_char,
    path: *const c_char,
    unparsed_uri: *const c_char,
    args: *const c_char,
    protocol: *const c_char,
    hostname: *const c_char,
    vhost_file: *const c_char,
    vhost_line: c_int,
    local_ip: *const c_char,
    local_port: c_int,
    remote_ip: *const c_char,
    remote_port: c_int,
    scheme: *const c_char,
    document_root: *const c_char,
    server_software: *const c_char,
    server_admin: *const c_char,
    user: *const c_char,
    auth_type: *const c_char,
    multithread: c_int,
    multiprocess: c_int,
    server_name: *const c_char,
    server_port: c_int,
    context_prefix: *const c_char,
    context_document_root: *const c_char,
    log_id: *const c_char,
    request_time_us: i64,
    uri: *const c_char,
    path_info: *const c_char,
    filename: *const c_char,
    exec_cgi: c_int,
    filetype: c_int,
    alias_uri: *const c_char,
}

/// `apr_filetype_e`'s `APR_NOFILE`: no file found at the path, or none looked for.
const APR_NOFILE: c_int = 0;
/// `apr_filetype_e`'s `APR_DIR`: a folder.
const APR_DIR: c_int = 2;

// The same numbers as `src/shim.c`'s `_Static_assert`s on `struct wsgi_rs_request` (LP64).
const _: () = {
    assert!(offset_of!(RawRequest, method) == 0);
    assert!(offset_of!(RawRequest, path) == 8);
    assert!(offset_of!(RawRequest, unparsed_uri) == 16);
    assert!(offset_of!(RawRequest, args) == 24);
    assert!(offset_of!(RawRequest, protocol) == 32);
    assert!(offset_of!(RawRequest, hostname) == 40);
    assert!(offset_of!(RawRequest, vhost_file) == 48);
    assert!(offset_of!(RawRequest, vhost_line) == 56);
    assert!(offset_of!(RawRequest, local_ip) == 64);
    assert!(offset_of!(RawRequest, local_port) == 72);
    assert!(offset_of!(RawRequest, remote_ip) == 80);
    assert!(offset_of!(RawRequest, remote_port) == 88);
    assert!(offset_of!(RawRequest, scheme) == 96);
    assert!(offset_of!(RawRequest, document_root) == 104);
    assert!(offset_of!(RawRequest, server_software) == 112);
    assert!(offset_of!(RawRequest, server_admin) == 120);
    assert!(offset_of!(RawRequest, user) == 128);
    assert!(offset_of!(RawRequest, auth_type) == 136);
    assert!(offset_of!(RawRequest, multithread) == 144);
    assert!(offset_of!(RawRequest, multiprocess) == 148);
    assert!(offset_of!(RawRequest, server_name) == 152);
    assert!(offset_of!(RawRequest, server_port) == 160);
    assert!(offset_of!(RawRequest, context_prefix) == 168);
    assert!(offset_of!(RawRequest, context_document_root) == 176);
    assert!(offset_of!(RawRequest, log_id) == 184);
    assert!(offset_of!(RawRequest, request_time_us) == 192);
    assert!(offset_of!(RawRequest, uri) == 200);
    assert!(offset_of!(RawRequest, path_info) == 208);
    assert!(offset_of!(RawRequest, filename) == 216);
    assert!(offset_of!(RawRequest, exec_cgi) == 224);
    assert!(offset_of!(RawRequest, filetype) == 228);
    assert!(offset_of!(RawRequest, alias_uri) == 232);
    assert!(size_of::<RawRequest>() == 240);
};

/// One enclosing section, as `src/shim.c` passes it (`struct wsgi_rs_section`).
#[repr(C)]
pub(crate) struct RawSection {
    pub(crate) kind: *const c_char,
    pub(crate) args: *const c_char,
    pub(crate) file: *const c_char,
    pub(crate) line: c_int,
}

// The same numbers as `src/shim.c`'s `_Static_assert`s on `struct wsgi_rs_section` (LP64).
const _: () = {
    assert!(offset_of!(RawSection, kind) == 0);
    assert!(offset_of!(RawSection, args) == 8);
    assert!(offset_of!(RawSection, file) == 16);
    assert!(offset_of!(RawSection, line) == 24);
    assert!(size_of::<RawSection>() == 32);
};

type PairCallback = unsafe extern "C" fn(*mut c_void, *const c_char, *const c_char);

// The shim's accessors (`src/shim.c`). Each takes a live request: only [`Request`] calls them.
unsafe extern "C" {
    fn wsgi_rs_request_info(r: *mut RequestRec, out: *mut RawRequest);
    fn wsgi_rs_request_headers(r: *mut RequestRec, cb: PairCallback, ctx: *mut c_void);
    fn wsgi_rs_request_env(r: *mut RequestRec, cb: PairCallback, ctx: *mut c_void);
    fn wsgi_rs_read_body(r: *mut RequestRec, buf: *mut c_char, len: usize) -> c_long;
    fn wsgi_rs_send_head(
        r: *mut RequestRec,
        status: c_int,
        reason: *const c_char,
        names: *const *const c_char,
        values: *const *const c_char,
        value_lens: *const usize,
        count: c_int,
    );
    fn wsgi_rs_write(r: *mut RequestRec, buf: *const c_char, len: usize, flush: c_int) -> c_int;
    fn wsgi_rs_sendfile(r: *mut RequestRec, fd: c_int, offset: i64, len: usize) -> c_int;
    fn wsgi_rs_abort(r: *mut RequestRec);
    fn wsgi_rs_log(r: *mut RequestRec, level: c_int, message: *const c_char);
    fn wsgi_rs_set_target(
        r: *mut RequestRec,
        filename: *const c_char,
        filename_len: usize,
        path_info: *const c_char,
        path_info_len: usize,
    );
    fn wsgi_rs_set_user(r: *mut RequestRec, user: *const c_char);
    fn wsgi_rs_request_settings(r: *mut RequestRec) -> c_int;
    fn wsgi_rs_has_content_filters(r: *mut RequestRec) -> c_int;
    fn wsgi_rs_mpm_limits(processes: *mut c_int, threads: *mut c_int);
    fn wsgi_rs_apache_version(major: *mut c_int, minor: *mut c_int, patch: *mut c_int);
}

pub(crate) const OK: c_int = 0;
pub(crate) const DECLINED: c_int = -1;
pub(crate) const APLOG_ERR: c_int = 3;
pub(crate) const APLOG_WARNING: c_int = 4;
pub(crate) const APLOG_INFO: c_int = 6;
pub(crate) const APLOG_DEBUG: c_int = 7;

// ---- The request ----

/// What Apache knows about a request, copied out of its structures.
pub(crate) struct RequestInfo {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) unparsed_uri: Vec<u8>,
    pub(crate) args: Vec<u8>,
    pub(crate) protocol: String,
    pub(crate) hostname: Option<String>,
    pub(crate) vhost: Option<(String, u32)>,
    pub(crate) local_ip: String,
    pub(crate) local_port: u16,
    pub(crate) remote_ip: String,
    pub(crate) remote_port: u16,
    pub(crate) scheme: String,
    pub(crate) document_root: Vec<u8>,
    pub(crate) server_software: Vec<u8>,
    pub(crate) server_admin: Vec<u8>,
    pub(crate) user: Vec<u8>,
    pub(crate) auth_type: Vec<u8>,
    pub(crate) multithread: bool,
    pub(crate) multiprocess: bool,
    pub(crate) server_name: String,
    pub(crate) server_port: u16,
    pub(crate) context_prefix: Vec<u8>,
    pub(crate) context_document_root: Vec<u8>,
    pub(crate) log_id: Vec<u8>,
    pub(crate) request_time_us: i64,
    /// `r->uri`: the decoded path Apache maps.
    pub(crate) uri: Vec<u8>,
    /// `r->path_info`, once Apache has walked the file system.
    pub(crate) path_info: Vec<u8>,
    /// `r->filename`.
    pub(crate) filename: Vec<u8>,
    /// Whether `Options ExecCGI` is on where `r->filename` is.
    pub(crate) exec_cgi: bool,
    /// What Apache's directory walk found at `r->filename` (`r->finfo.filetype`), which
    /// mod_wsgi's handler reads instead of looking again.
    pub(crate) found: Found,
    /// The URI (`r->uri` then) that `translate_name` mapped with a `WSGIScriptAlias`, when it
    /// did (MultiViews may have changed `r->uri` since).
    pub(crate) alias_uri: Option<Vec<u8>>,
}

/// The request Apache is serving on this thread, for as long as `'r`: the hook call that
/// received it. Not `Send`: it stays on that thread (`ApacheBody` and `ApacheSink`, which
/// wsgi-interp requires to be `Send`, state why they may hold one).
#[derive(Clone, Copy)]
pub(crate) struct Request<'r> {
    raw: NonNull<RequestRec>,
    _borrow: PhantomData<&'r mut RequestRec>,
}

impl Request<'_> {
    /// The request an export received.
    ///
    /// # Safety
    /// `r` is NULL or the live request Apache is serving on this thread, and stays so for the
    /// lifetime chosen (the export's call, never longer).
    pub(crate) unsafe fn from_raw(r: *mut RequestRec) -> Option<Self> {
        NonNull::new(r).map(|raw| Request {
            raw,
            _borrow: PhantomData,
        })
    }

    /// The pointer, for [`crate::applog::for_request`]'s thread-local.
    pub(crate) fn as_ptr(&self) -> *mut RequestRec {
        self.raw.as_ptr()
    }

    /// Reads the request's fields (making its log id when no log format has yet).
    pub(crate) fn info(&self) -> RequestInfo {
        let mut raw = std::mem::MaybeUninit::<RawRequest>::zeroed();
        // SAFETY: the request is live (type invariant); the shim fills every field of `raw`
        // (pointers into the request's pool, valid while the request lives, or NULL).
        let raw = unsafe {
            wsgi_rs_request_info(self.as_ptr(), raw.as_mut_ptr());
            raw.assume_init()
        };
        // SAFETY: each pointer is NULL or a NUL-terminated string from the request's pool,
        // which outlives this call.
        unsafe {
            let vhost_file = latin1_text(bytes(raw.vhost_file));
            RequestInfo {
                method: latin1_text(bytes(raw.method)),
                path: latin1_text(bytes(raw.path)),
                unparsed_uri: bytes(raw.unparsed_uri),
                args: bytes(raw.args),
                protocol: latin1_text(bytes(raw.protocol)),
                hostname: (!raw.hostname.is_null()).then(|| latin1_text(bytes(raw.hostname))),
                vhost: (!vhost_file.is_empty())
                    .then(|| (vhost_file, u32::try_from(raw.vhost_line).unwrap_or(0))),
                local_ip: latin1_text(bytes(raw.local_ip)),
                local_port: u16::try_from(raw.local_port).unwrap_or(0),
                remote_ip: latin1_text(bytes(raw.remote_ip)),
                remote_port: u16::try_from(raw.remote_port).unwrap_or(0),
                scheme: latin1_text(bytes(raw.scheme)),
                document_root: bytes(raw.document_root),
                server_software: bytes(raw.server_software),
                server_admin: bytes(raw.server_admin),
                user: bytes(raw.user),
                auth_type: bytes(raw.auth_type),
                multithread: raw.multithread != 0,
                multiprocess: raw.multiprocess != 0,
                server_name: latin1_text(bytes(raw.server_name)),
                server_port: u16::try_from(raw.server_port).unwrap_or(0),
                context_prefix: bytes(raw.context_prefix),
                context_document_root: bytes(raw.context_document_root),
                log_id: bytes(raw.log_id),
                request_time_us: raw.request_time_us,
                uri: bytes(raw.uri),
                path_info: bytes(raw.path_info),
                filename: bytes(raw.filename),
                exec_cgi: raw.exec_cgi != 0,
                found: match raw.filetype {
                    APR_NOFILE => Found::Unknown,
                    APR_DIR => Found::Folder,
                    _ => Found::File,
                },
                alias_uri: (!raw.alias_uri.is_null()).then(|| bytes(raw.alias_uri)),
            }
        }
    }

    /// The request headers, in arrival order.
    pub(crate) fn headers(&self) -> Vec<(String, Vec<u8>)> {
        self.pairs(wsgi_rs_request_headers)
    }

    /// The request's environment variables (`SetEnv`, `SetEnvIf`, `RewriteRule [E=]`), in
    /// order.
    pub(crate) fn env(&self) -> Vec<(String, Vec<u8>)> {
        self.pairs(wsgi_rs_request_env)
    }

    /// A table of the request, in order.
    fn pairs(
        &self,
        which: unsafe extern "C" fn(*mut RequestRec, PairCallback, *mut c_void),
    ) -> Vec<(String, Vec<u8>)> {
        unsafe extern "C" fn collect_pair(
            ctx: *mut c_void,
            key: *const c_char,
            value: *const c_char,
        ) {
            // SAFETY: `ctx` is the `Vec` passed by `pairs`, alive for the iteration; key and
            // value are strings from the request's tables.
            let (pairs, key, value) = unsafe {
                (
                    &mut *(ctx as *mut Vec<(String, Vec<u8>)>),
                    bytes(key),
                    bytes(value),
                )
            };
            pairs.push((latin1_text(key), value));
        }
        let mut out: Vec<(String, Vec<u8>)> = Vec::new();
        // SAFETY: the request is live; the callback only touches `out`, which outlives the
        // call; a panic cannot happen in it (push and a UTF-8 check).
        unsafe {
            which(
                self.as_ptr(),
                collect_pair,
                (&mut out as *mut Vec<(String, Vec<u8>)>).cast(),
            )
        };
        out
    }

    /// Up to `buf.len()` bytes of the de-chunked body (0 at its end); None on an error (client
    /// gone, timeout).
    pub(crate) fn read_body(&self, buf: &mut [u8]) -> Option<usize> {
        // SAFETY: the request is live and `buf` writable for its length.
        let n = unsafe { wsgi_rs_read_body(self.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        usize::try_from(n).ok()
    }

    /// Sets the response's status line and headers (sent with the first body write).
    pub(crate) fn send_head(&self, status: u16, reason: &CStr, headers: &[(CString, &[u8])]) {
        let names: Vec<*const c_char> = headers.iter().map(|(n, _)| n.as_ptr()).collect();
        let values: Vec<*const c_char> = headers.iter().map(|(_, v)| v.as_ptr().cast()).collect();
        let lens: Vec<usize> = headers.iter().map(|(_, v)| v.len()).collect();
        // SAFETY: the request is live; the arrays hold `headers.len()` entries valid for the
        // call (the shim copies the values, with their lengths, into the request pool).
        unsafe {
            wsgi_rs_send_head(
                self.as_ptr(),
                c_int::from(status),
                reason.as_ptr(),
                names.as_ptr(),
                values.as_ptr(),
                lens.as_ptr(),
                c_int::try_from(headers.len()).unwrap_or(0),
            )
        };
    }

    /// [`Request::read_body`] into memory that need not be initialised; the count it returns
    /// is of bytes written at its start.
    pub(crate) fn read_body_uninit(&self, buf: &mut [MaybeUninit<u8>]) -> Option<usize> {
        // SAFETY: the request is live and `buf` writable for its length; the shim's
        // `ap_get_client_block` only writes into it (flattening a brigade), never reads it,
        // and returns how many bytes it wrote, at most `buf.len()`.
        let n = unsafe { wsgi_rs_read_body(self.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        usize::try_from(n).ok().map(|n| n.min(buf.len()))
    }

    /// Writes and flushes a body chunk; false when the client is gone.
    pub(crate) fn write(&self, chunk: &[u8]) -> bool {
        // SAFETY: the request is live and `chunk` readable for its length.
        unsafe { wsgi_rs_write(self.as_ptr(), chunk.as_ptr().cast(), chunk.len(), 1) == 0 }
    }

    /// Writes a body chunk into the request's output buffer without flushing it: Apache sends
    /// it with the response's end (or the next flush). A chunk shorter than the buffer (8,000
    /// bytes) written after a flush stays there, with no I/O. False when the client is gone.
    pub(crate) fn write_held(&self, chunk: &[u8]) -> bool {
        // SAFETY: the request is live and `chunk` readable for its length.
        unsafe { wsgi_rs_write(self.as_ptr(), chunk.as_ptr().cast(), chunk.len(), 0) == 0 }
    }

    /// Sends `len` bytes of the file `fd` from `offset` (the shim duplicates the descriptor);
    /// false when the client is gone or the descriptor is unusable.
    pub(crate) fn sendfile(&self, fd: RawFd, offset: i64, len: usize) -> bool {
        // SAFETY: the request is live; the shim only `dup`s `fd` (failing cleanly when it is
        // not open) and sends the copy.
        unsafe { wsgi_rs_sendfile(self.as_ptr(), fd, offset, len) == 0 }
    }

    /// Ends a response whose body started without a clean end, so the client can tell.
    pub(crate) fn abort(&self) {
        // SAFETY: the request is live.
        unsafe { wsgi_rs_abort(self.as_ptr()) };
    }

    /// Writes to Apache's error log for the request, one log line per line of `message`.
    pub(crate) fn log(&self, level: c_int, message: &str) {
        // SAFETY: the request is live on this thread.
        unsafe { log_lines(self.as_ptr(), level, message) };
    }

    /// `translate_name` mapped the request with a `WSGIScriptAlias` to `filename`, with
    /// `path_info` after it when the split is known (an alias of a script file; empty: none).
    /// Neither may hold a NUL byte (C strings on Apache's side): false, and nothing is set.
    pub(crate) fn set_target(&self, filename: &[u8], path_info: &[u8]) -> bool {
        if filename.contains(&0) || path_info.contains(&0) {
            return false;
        }
        // SAFETY: the request is live; the shim copies both byte ranges, of the lengths
        // given, into its pool as C strings.
        unsafe {
            wsgi_rs_set_target(
                self.as_ptr(),
                filename.as_ptr().cast(),
                filename.len(),
                path_info.as_ptr().cast(),
                path_info.len(),
            )
        };
        true
    }

    /// The user is `user` from now on (`check_password` returned another name).
    pub(crate) fn set_user(&self, user: &CStr) {
        // SAFETY: the request is live; the shim copies the name into its pool.
        unsafe { wsgi_rs_set_user(self.as_ptr(), user.as_ptr()) };
    }

    /// The id of the request's merged `.htaccess` settings fragment (`src/htaccess.rs`), if
    /// any.
    pub(crate) fn settings_id(&self) -> Option<c_int> {
        // SAFETY: the request is live.
        let id = unsafe { wsgi_rs_request_settings(self.as_ptr()) };
        (id >= 0).then_some(id)
    }

    /// Whether an output filter that transforms content is in the chain.
    pub(crate) fn has_content_filters(&self) -> bool {
        // SAFETY: the request is live.
        unsafe { wsgi_rs_has_content_filters(self.as_ptr()) != 0 }
    }
}

// ---- The server ----

/// Writes to Apache's error log for the request `r` (the server when NULL), one log line per
/// line of `message` (Apache would escape the newlines of a traceback).
///
/// # Safety
/// `r` is NULL or the live request Apache is serving on this thread.
pub(crate) unsafe fn log_lines(r: *mut RequestRec, level: c_int, message: &str) {
    for line in message.lines().filter(|l| !l.trim().is_empty()) {
        let text = CString::new(line.replace('\0', " ")).expect("NULs were replaced");
        // SAFETY: `r` is NULL or live (the caller's contract); the line is a valid C string
        // for the call.
        unsafe { wsgi_rs_log(r, level, text.as_ptr()) };
    }
}

/// Writes to Apache's error log for the server, one log line per line of `message`.
pub(crate) fn log_server(level: c_int, message: &str) {
    // SAFETY: NULL is the server.
    unsafe { log_lines(std::ptr::null_mut(), level, message) };
}

/// The MPM's processes and threads per child, as mod_wsgi reads them.
pub(crate) fn mpm_limits() -> (c_int, c_int) {
    let (mut processes, mut threads): (c_int, c_int) = (1, 1);
    // SAFETY: the shim only asks the MPM (`ap_mpm_query`) and writes both integers.
    unsafe { wsgi_rs_mpm_limits(&mut processes, &mut threads) };
    (processes, threads)
}

/// The httpd release the module is built for: `apache.version` (2.4.x), as mod_wsgi gives it.
pub(crate) fn apache_version() -> (u16, u16, u16) {
    let (mut major, mut minor, mut patch): (c_int, c_int, c_int) = (0, 0, 0);
    // SAFETY: the shim only writes the three integers.
    unsafe { wsgi_rs_apache_version(&mut major, &mut minor, &mut patch) };
    let part = |n: c_int| u16::try_from(n).unwrap_or(0);
    (part(major), part(minor), part(patch))
}
