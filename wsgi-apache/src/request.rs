//! Serving a request in the Apache child (embedded mode): `translate_name` maps a
//! `WSGIScriptAlias` URL to its script (so Apache's own `<Directory>` access checks and auth run
//! on the script's folder), and the handler runs the PEP 3333 call through wsgi-interp,
//! streaming the body from Apache's input filters and the response into its output filters.

use std::ffi::{CStr, CString, OsStr, c_char, c_int, c_long, c_void};
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use wsgi_config::Config;
use wsgi_config::model::{GroupSpec, MapHeadToGet};
use wsgi_config::route::{ProcessGroup, Requester, Route, ScriptVia};
use wsgi_daemon::DaemonRequest;
use wsgi_interp::{
    CallOptions, HeadSource, InterpreterOptions, Outcome, RequestBody, RequestHead, ResponseSink,
    Runtime, Scheme, ScriptSpec, Stamps, StartConfig,
};

use crate::config::current_config;
use crate::guard::guard;

/// Apache's `request_rec`, opaque here.
#[repr(C)]
pub struct RequestRec {
    _private: [u8; 0],
}

/// `struct wsgi_rs_request` of `src/shim.c`.
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
    alias_uri: *const c_char,
}

type PairCallback = unsafe extern "C" fn(*mut c_void, *const c_char, *const c_char);

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
    fn wsgi_rs_write(r: *mut RequestRec, buf: *const c_char, len: usize) -> c_int;
    fn wsgi_rs_sendfile(r: *mut RequestRec, fd: c_int, offset: i64, len: usize) -> c_int;
    fn wsgi_rs_abort(r: *mut RequestRec);
    fn wsgi_rs_log(r: *mut RequestRec, level: c_int, message: *const c_char);
    fn wsgi_rs_set_target(r: *mut RequestRec, filename: *const c_char);
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

/// The embedded Python of this Apache child, started in `child_init`.
static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

/// Writes to Apache's error log (for the request, or the server when `r` is NULL), one log
/// line per line of `message` (Apache would escape the newlines of a traceback).
pub(crate) fn log(r: *mut RequestRec, level: c_int, message: &str) {
    for line in message.lines().filter(|l| !l.trim().is_empty()) {
        let text = CString::new(line.replace('\0', " ")).expect("NULs were replaced");
        // SAFETY: `r` is NULL or the live request Apache is serving on this thread; the line
        // is a valid C string for the call.
        unsafe { wsgi_rs_log(r, level, text.as_ptr()) };
    }
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

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes)
        .unwrap_or_else(|e| e.into_bytes().iter().map(|&b| char::from(b)).collect())
}

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
    /// The URI (`r->uri` then) that `translate_name` mapped with a `WSGIScriptAlias`, when it
    /// did (MultiViews may have changed `r->uri` since).
    pub(crate) alias_uri: Option<Vec<u8>>,
}

/// Reads the request's fields.
///
/// # Safety
/// `r` is the live request Apache is serving on this thread.
pub(crate) unsafe fn request_info(r: *mut RequestRec) -> RequestInfo {
    let mut raw = std::mem::MaybeUninit::<RawRequest>::zeroed();
    // SAFETY: `r` is live; the shim fills every field of `raw` (pointers into the request's
    // pool, valid while the request lives, or NULL).
    let raw = unsafe {
        wsgi_rs_request_info(r, raw.as_mut_ptr());
        raw.assume_init()
    };
    // SAFETY: each pointer is NULL or a NUL-terminated string from the request's pool.
    unsafe {
        let vhost_file = text(bytes(raw.vhost_file));
        RequestInfo {
            method: text(bytes(raw.method)),
            path: text(bytes(raw.path)),
            unparsed_uri: bytes(raw.unparsed_uri),
            args: bytes(raw.args),
            protocol: text(bytes(raw.protocol)),
            hostname: (!raw.hostname.is_null()).then(|| text(bytes(raw.hostname))),
            vhost: (!vhost_file.is_empty())
                .then(|| (vhost_file, u32::try_from(raw.vhost_line).unwrap_or(0))),
            local_ip: text(bytes(raw.local_ip)),
            local_port: u16::try_from(raw.local_port).unwrap_or(0),
            remote_ip: text(bytes(raw.remote_ip)),
            remote_port: u16::try_from(raw.remote_port).unwrap_or(0),
            scheme: text(bytes(raw.scheme)),
            document_root: bytes(raw.document_root),
            server_software: bytes(raw.server_software),
            server_admin: bytes(raw.server_admin),
            user: bytes(raw.user),
            auth_type: bytes(raw.auth_type),
            multithread: raw.multithread != 0,
            multiprocess: raw.multiprocess != 0,
            server_name: text(bytes(raw.server_name)),
            server_port: u16::try_from(raw.server_port).unwrap_or(0),
            context_prefix: bytes(raw.context_prefix),
            context_document_root: bytes(raw.context_document_root),
            log_id: bytes(raw.log_id),
            request_time_us: raw.request_time_us,
            uri: bytes(raw.uri),
            path_info: bytes(raw.path_info),
            filename: bytes(raw.filename),
            exec_cgi: raw.exec_cgi != 0,
            alias_uri: (!raw.alias_uri.is_null()).then(|| bytes(raw.alias_uri)),
        }
    }
}

unsafe extern "C" fn collect_pair(ctx: *mut c_void, key: *const c_char, value: *const c_char) {
    // SAFETY: `ctx` is the `Vec` passed by `pairs` below, alive for the iteration; key and value
    // are strings from the request's tables.
    let (pairs, key, value) = unsafe {
        (
            &mut *(ctx as *mut Vec<(String, Vec<u8>)>),
            bytes(key),
            bytes(value),
        )
    };
    pairs.push((text(key), value));
}

/// A table of the request (headers or environment variables), in order.
///
/// # Safety
/// `r` is the live request Apache is serving on this thread.
unsafe fn pairs(
    r: *mut RequestRec,
    which: unsafe extern "C" fn(*mut RequestRec, PairCallback, *mut c_void),
) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    // SAFETY: `r` is live; the callback only touches `out`, which outlives the call; a panic
    // cannot happen in it (push and a UTF-8 check).
    unsafe {
        which(
            r,
            collect_pair,
            (&mut out as *mut Vec<(String, Vec<u8>)>).cast(),
        )
    };
    out
}

/// The index of the virtual host Apache chose for the request (None: the main server).
pub(crate) fn host_index(config: &Config, info: &RequestInfo) -> Option<usize> {
    info.vhost.as_ref().and_then(|(file, line)| {
        config.virtual_hosts.iter().position(|h| {
            h.span
                .as_ref()
                .is_some_and(|s| s.line == *line && s.file.as_ref() == Path::new(file))
        })
    })
}

/// The `translate_name` hook: claims the URLs a `WSGIScriptAlias` covers, as mod_wsgi's hook
/// does (after mod_alias's: an `Alias` or `Redirect` of the URL wins), mapping each to the
/// alias's target and the rest of the URI, which Apache's directory walk then splits.
///
/// # Safety
/// `r` is the live request Apache is serving on this thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wsgi_rs_translate(r: *mut RequestRec) -> c_int {
    let translate = |config: &Config, info: &RequestInfo| {
        if info.uri.first() != Some(&b'/') {
            return DECLINED;
        }
        let Some(found) = config.match_script_alias(host_index(config, info), &info.uri) else {
            return DECLINED;
        };
        match CString::new(found.path.into_os_string().into_vec()) {
            // SAFETY: `r` is live and the filename a valid C string for the call (the shim
            // copies it into the request pool).
            Ok(f) => unsafe { wsgi_rs_set_target(r, f.as_ptr()) },
            Err(_) => return 404,
        }
        OK
    };
    // SAFETY: the caller's contract.
    unsafe { request_hook(r, "translate_name", translate) }
}

/// Who a request is, for naming its groups: its virtual host, the server name, the port it
/// came in on, the `Host` header's name, and its variables (`env`).
pub(crate) fn requester<'a>(
    config: &'a Config,
    info: &'a RequestInfo,
    host: Option<usize>,
    env: &'a dyn Fn(&str) -> Option<String>,
) -> Requester<'a> {
    Requester {
        host,
        server_name: config.server_name(host).unwrap_or(&info.server_name),
        port: info.local_port,
        host_header: info
            .hostname
            .as_deref()
            .map(|h| h.split(':').next().unwrap_or(h)),
        env,
    }
}

/// Runs one of the request hooks under [`guard`] (a panic is logged and answered 500) with
/// the configuration and the request's fields. DECLINED when there is no configuration.
///
/// # Safety
/// `r` is the live request Apache is serving on this thread.
pub(crate) unsafe fn request_hook(
    r: *mut RequestRec,
    what: &str,
    f: impl FnOnce(&Config, &RequestInfo) -> c_int,
) -> c_int {
    guard(
        what,
        |message| {
            log(r, APLOG_ERR, &message);
            500
        },
        || {
            let Some(config) = current_config() else {
                return DECLINED;
            };
            // SAFETY: forwarded from the caller's contract.
            let info = unsafe { request_info(r) };
            crate::applog::for_request(r, || f(&config, &info))
        },
    )
}

/// The request body, read through Apache's input filters (de-chunked).
struct ApacheBody(*mut RequestRec);

// SAFETY: wsgi-interp calls the body only on the thread that called `InterpreterHandle::call`,
// the Apache thread serving the request, while the request lives.
unsafe impl Send for ApacheBody {}

impl RequestBody for ApacheBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: the request is live (see the Send impl) and `buf` is writable for its length.
        let n = unsafe { wsgi_rs_read_body(self.0, buf.as_mut_ptr().cast(), buf.len()) };
        usize::try_from(n).map_err(|_| {
            io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "reading the request body failed (client gone or timed out)",
            )
        })
    }
}

/// The response, written into Apache's output filters.
struct ApacheSink {
    r: *mut RequestRec,
    started: bool,
    /// `WSGIErrorOverride On` (daemon mode): an error status from the app is answered by
    /// Apache itself (its `ErrorDocument`), and the app's body is dropped.
    override_errors: bool,
    /// The error status taken over from the app.
    overridden: Option<u16>,
}

impl ApacheSink {
    fn new(r: *mut RequestRec) -> Self {
        ApacheSink {
            r,
            started: false,
            override_errors: false,
            overridden: None,
        }
    }
}

// SAFETY: as for ApacheBody: used only on the request's own Apache thread.
unsafe impl Send for ApacheSink {}

fn gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the client closed the connection",
    )
}

impl ResponseSink for ApacheSink {
    fn start(
        &mut self,
        status: u16,
        reason: &str,
        headers: Vec<(String, Vec<u8>)>,
    ) -> io::Result<()> {
        if self.override_errors && status >= 400 {
            self.overridden = Some(status);
            return Ok(());
        }
        let reason = CString::new(reason).map_err(|_| io::Error::other("NUL in reason"))?;
        let names: Vec<CString> = headers
            .iter()
            .map(|(n, _)| {
                CString::new(n.as_str()).map_err(|_| io::Error::other("NUL in header name"))
            })
            .collect::<io::Result<_>>()?;
        let name_ptrs: Vec<*const c_char> = names.iter().map(|n| n.as_ptr()).collect();
        let value_ptrs: Vec<*const c_char> =
            headers.iter().map(|(_, v)| v.as_ptr().cast()).collect();
        let lens: Vec<usize> = headers.iter().map(|(_, v)| v.len()).collect();
        // SAFETY: the request is live; the arrays hold `headers.len()` entries valid for the
        // call (the shim copies the values, with their lengths, into the request pool).
        unsafe {
            wsgi_rs_send_head(
                self.r,
                c_int::from(status),
                reason.as_ptr(),
                name_ptrs.as_ptr(),
                value_ptrs.as_ptr(),
                lens.as_ptr(),
                c_int::try_from(headers.len()).unwrap_or(0),
            )
        };
        self.started = true;
        Ok(())
    }

    fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        if self.overridden.is_some() {
            return Ok(());
        }
        // SAFETY: the request is live and `chunk` readable for its length.
        match unsafe { wsgi_rs_write(self.r, chunk.as_ptr().cast(), chunk.len()) } {
            0 => Ok(()),
            _ => Err(gone()),
        }
    }

    fn file(&mut self, fd: RawFd, offset: u64, len: u64) -> io::Result<bool> {
        if self.overridden.is_some() {
            return Ok(true);
        }
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), usize::try_from(len)) else {
            return Ok(false);
        };
        // SAFETY: the request is live and `fd` open for the call; the shim duplicates it.
        match unsafe { wsgi_rs_sendfile(self.r, fd, offset, len) } {
            0 => Ok(true),
            _ => Err(gone()),
        }
    }
}

/// `mod_wsgi_rs/VERSION Python/X.Y` for Apache's `Server` banner and `SERVER_SOFTWARE`.
#[unsafe(no_mangle)]
pub extern "C" fn wsgi_rs_version_component() -> *const c_char {
    static COMPONENT: OnceLock<CString> = OnceLock::new();
    COMPONENT
        .get_or_init(|| {
            CString::new(format!(
                "mod_wsgi_rs/{} Python/{}",
                env!("CARGO_PKG_VERSION"),
                wsgi_interp::embedded::BUILD_PYTHON_VERSION
            ))
            .expect("no NUL in versions")
        })
        .as_ptr()
}

/// Starts the embedded Python of this child, when the configuration can route requests to
/// embedded mode.
#[unsafe(no_mangle)]
pub extern "C" fn wsgi_rs_child_init() {
    guard(
        "child_init",
        |m| log(std::ptr::null_mut(), APLOG_ERR, &m),
        || {
            let Some(config) = current_config() else {
                return;
            };
            // Python's output (application threads, preloading) goes to the error log.
            crate::applog::install();
            let embedded_imports = config
                .import_scripts
                .iter()
                .any(|i| i.process_group == GroupSpec::Global);
            let embedded = !config.server.restrict_embedded
                && (has_embedded_mounts(&config) || embedded_imports);
            // Access, auth and dispatch scripts always run here, even when every application
            // runs in a daemon process (or embedded mode is restricted), as in mod_wsgi.
            if !(embedded || crate::hooks::configured(&config)) {
                return;
            }
            if let Ok(runtime) = start_runtime(&config) {
                crate::applog::for_request(std::ptr::null_mut(), || preload(&config, runtime));
            }
        },
    );
}

/// The httpd release the module is built for: `apache.version` (2.4.x), as mod_wsgi gives it.
pub(crate) fn apache_version() -> (u16, u16, u16) {
    let (mut major, mut minor, mut patch): (c_int, c_int, c_int) = (0, 0, 0);
    // SAFETY: the shim only writes the three integers.
    unsafe { wsgi_rs_apache_version(&mut major, &mut minor, &mut patch) };
    let part = |n: c_int| u16::try_from(n).unwrap_or(0);
    (part(major), part(minor), part(patch))
}

/// The embedded Python of this child, started on first need: in `child_init` when the
/// configuration can use it, else by the first hook script of an `.htaccess` file.
pub(crate) fn start_runtime(config: &Config) -> Result<&'static Runtime, String> {
    RUNTIME
        .get_or_init(|| {
            let (mut processes, mut threads): (c_int, c_int) = (1, 1);
            // SAFETY: the shim only asks the MPM (`ap_mpm_query`) and writes both integers.
            unsafe { wsgi_rs_mpm_limits(&mut processes, &mut threads) };
            wsgi_interp::set_apache_version(apache_version());
            let start = StartConfig {
                python_home: config.python.home.as_ref().map(|h| h.value.clone()),
                python_path: config.python.path.clone(),
                optimize: config.python.optimize,
                dont_write_bytecode: config.python.dont_write_bytecode,
                // `mod_wsgi` in embedded mode: the MPM's processes and threads per child.
                maximum_processes: u32::try_from(processes).unwrap_or(1),
                threads_per_process: u32::try_from(threads).unwrap_or(1),
                interpreter_rules: config.python.interpreter_rules(),
                ..StartConfig::default()
            };
            let options = InterpreterOptions {
                per_interpreter_gil: config.python.per_interpreter_gil,
            };
            let free_threading = config.python.free_threading
                || config
                    .python
                    .interpreter_options
                    .iter()
                    .any(|b| b.rule.free_threading == Some(true));
            if free_threading && !wsgi_interp::embedded::FREE_THREADED_BUILD {
                log(
                    std::ptr::null_mut(),
                    APLOG_WARNING,
                    &format!(
                        "WSGIFreeThreading On has no effect: mod_wsgi_rs is built against Python {}, which is not a free-threaded build (python3.13t and later), so the GIL stays on; remove the line, or build mod_wsgi_rs against a free-threaded Python",
                        wsgi_interp::embedded::BUILD_PYTHON_VERSION
                    ),
                );
            }
            let runtime = Runtime::start_with(&start, &options).map_err(|e| {
                let message = format!("Python did not start in this Apache child: {e}");
                log(std::ptr::null_mut(), APLOG_ERR, &message);
                message
            })?;
            if let Some(interval) = config.python.switch_interval_for("") {
                set_switch_interval(&runtime, interval);
            }
            Ok(runtime)
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// `WSGISwitchInterval` (or a `<WSGIInterpreterOptions process-group=%{GLOBAL}>` section's) in
/// this child: `sys.setswitchinterval` in the main interpreter, which sets it for every
/// interpreter sharing its GIL.
fn set_switch_interval(runtime: &Runtime, interval: f64) {
    let code = format!("__import__('sys').setswitchinterval({interval:?})");
    let outcome = runtime
        .interpreter("")
        .map_err(|e| e.to_string())
        .and_then(|main| match main.run(|py| py.exec(&code)) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        });
    if let Err(e) = outcome {
        log(
            std::ptr::null_mut(),
            APLOG_ERR,
            &format!("WSGISwitchInterval {interval} was not applied: {e}"),
        );
    }
}

/// `WSGIImportScript path process-group=%{GLOBAL} application-group=NAME`: loaded in every
/// Apache child when it starts, before it serves a request (mod_wsgi's embedded preloading).
fn preload(config: &Config, runtime: &Runtime) {
    for import in &config.import_scripts {
        if import.process_group != GroupSpec::Global {
            continue;
        }
        let group = match &import.application_group {
            GroupSpec::Global => String::new(),
            GroupSpec::Named(name) => name.clone(),
            other => {
                log(
                    std::ptr::null_mut(),
                    APLOG_WARNING,
                    &format!(
                        "{}: WSGIImportScript application-group={other} depends on the request and cannot be preloaded: use a literal name or %{{GLOBAL}}",
                        import.span
                    ),
                );
                continue;
            }
        };
        let spec = ScriptSpec::new(&import.path);
        let loaded = runtime
            .interpreter(&group)
            .map_err(|e| e.to_string())
            .and_then(|handle| match handle.load_script(&spec) {
                // An import script need not define an application.
                Ok(_) | Err(wsgi_interp::ScriptError::MissingCallable { .. }) => Ok(()),
                Err(e) => Err(e.to_string()),
            });
        match loaded {
            Ok(()) => log(
                std::ptr::null_mut(),
                APLOG_INFO,
                &format!(
                    "preloaded {} into application group {group:?}",
                    import.path.display()
                ),
            ),
            Err(e) => log(
                std::ptr::null_mut(),
                APLOG_ERR,
                &format!(
                    "{}: WSGIImportScript {}: {e}",
                    import.span,
                    import.path.display()
                ),
            ),
        }
    }
}

/// Whether a mount can run in embedded mode (else Python never starts in the children).
fn has_embedded_mounts(config: &Config) -> bool {
    wsgi_config::check::routing_table(config)
        .iter()
        .any(|m| m.process_group == "embedded")
}

/// Runs a request in its daemon process group, over the group's socket.
fn in_daemon(r: *mut RequestRec, info: &RequestInfo, route: &Route, group: &str) -> c_int {
    // SAFETY: `r` is the live request this handler runs for.
    let head = unsafe { request_head(r, info, route) };
    // Daemon mode: a changed script restarts the daemon process (mod_wsgi's rule).
    let spec = ScriptSpec::for_route(route, true);
    let mut request = DaemonRequest::new(head, &spec, &route.application_group);
    request.pass_authorization = route.settings.pass_authorization == Some(true);
    let mut body = ApacheBody(r);
    let mut sink = ApacheSink::new(r);
    sink.override_errors = route.settings.error_override == Some(true);
    match crate::daemons::client().dispatch(group, &request, &mut body, &mut sink) {
        Ok(outcome) => match sink.overridden {
            Some(status) => c_int::from(status),
            None => finish(r, route, outcome, sink.started),
        },
        Err(e) => {
            log(r, APLOG_ERR, &format!("{}: {e}", info.path));
            if sink.started {
                // SAFETY: the request is live on this thread.
                unsafe { wsgi_rs_abort(r) };
                OK
            } else {
                c_int::from(e.status())
            }
        }
    }
}

/// Ends the embedded Python when the child exits: interpreters ended, atexit run, promptly.
#[unsafe(no_mangle)]
pub extern "C" fn wsgi_rs_child_exit() {
    guard(
        "child_exit",
        |m| log(std::ptr::null_mut(), APLOG_ERR, &m),
        || {
            if let Some(Ok(runtime)) = RUNTIME.get() {
                let report = runtime.shutdown(Duration::from_secs(2), Duration::from_millis(300));
                if !report.left_running.is_empty() {
                    log(
                        std::ptr::null_mut(),
                        APLOG_WARNING,
                        &format!("threads still running at exit: {:?}", report.left_running),
                    );
                }
            }
        },
    );
}

/// The handler of `wsgi-script` requests, as mod_wsgi's: a request a `WSGIScriptAlias`
/// mapped runs the script Apache's directory walk (and MultiViews) found; any other file
/// whose handler is `wsgi-script` (`AddHandler`, `SetHandler`) runs where `Options ExecCGI`
/// is on, and gets 403 elsewhere (never its source as a static file). 404 for a missing
/// script, 403 for a folder.
///
/// # Safety
/// `r` is the live request Apache is serving on this thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wsgi_rs_handle(r: *mut RequestRec) -> c_int {
    let handle = |config: &Config, info: &RequestInfo| {
        let host = host_index(config, info);
        let via = match &info.alias_uri {
            Some(uri) => match config.match_script_alias(host, uri) {
                Some(found) => ScriptVia::Alias(found.alias),
                None => {
                    log(
                        r,
                        APLOG_ERR,
                        &format!(
                            "translate_name mapped {} with a WSGIScriptAlias the handler does not find: a mod_wsgi_rs bug, please report it with the configuration",
                            String::from_utf8_lossy(uri)
                        ),
                    );
                    return 500;
                }
            },
            None => ScriptVia::Handler {
                exec_cgi: info.exec_cgi,
            },
        };
        // SAFETY: forwarded from the caller's contract.
        let env_pairs = unsafe { request_env(r) };
        let env = |var: &str| crate::hooks::env_var(&env_pairs, var);
        let who = requester(config, info, host, &env);
        let file = Path::new(OsStr::from_bytes(&info.filename));
        // Apache gives the request its environment itself.
        let uri = (&info.uri[..], &info.path_info[..]);
        match config.wsgi_script_route(&who, via, file, uri, Vec::new()) {
            // SAFETY: forwarded from the caller's contract.
            Ok(route) => unsafe { serve(r, info, config, route) },
            Err(why) => {
                log(r, APLOG_ERR, &why.to_string());
                c_int::from(why.status())
            }
        }
    };
    // SAFETY: the caller's contract.
    unsafe { request_hook(r, "handler", handle) }
}

/// Runs a routed request: the `WSGIDispatchScript` first, if any, then the application in a
/// daemon process or here.
///
/// # Safety
/// `r` is the live request Apache is serving on this thread.
pub(crate) unsafe fn serve(
    r: *mut RequestRec,
    info: &RequestInfo,
    config: &Config,
    mut route: Route,
) -> c_int {
    // SAFETY: forwarded from the caller's contract.
    unsafe { crate::htaccess::apply(r, &mut route) };
    if route.settings.dispatch_script.is_some() {
        let host = host_index(config, info);
        // SAFETY: forwarded from the caller's contract.
        if let Err(status) = unsafe { crate::hooks::dispatch(r, info, config, host, &mut route) } {
            return status;
        }
    }
    if let ProcessGroup::Daemon(name) = &route.process_group {
        return in_daemon(r, info, &route, name);
    }
    if config.server.restrict_embedded {
        log(
            r,
            APLOG_ERR,
            "embedded mode is off in this process (WSGIRestrictEmbedded On)",
        );
        return 500;
    }
    let runtime = match start_runtime(config) {
        Ok(runtime) => runtime,
        Err(message) => {
            log(r, APLOG_ERR, &message);
            return 500;
        }
    };
    // SAFETY: forwarded from the caller's contract.
    let head = unsafe { request_head(r, info, &route) };
    let spec = ScriptSpec::for_route(&route, false);
    let options = call_options(info, route.settings.pass_authorization == Some(true));
    let interpreter = match runtime.interpreter(&route.application_group) {
        Ok(i) => i,
        Err(e) => {
            log(
                r,
                APLOG_ERR,
                &format!("application group {:?}: {e}", route.application_group),
            );
            return 503;
        }
    };
    let mut body = ApacheBody(r);
    let mut sink = ApacheSink::new(r);
    let outcome = interpreter.call(&spec, &head, &options, &mut body, &mut sink);
    finish(r, &route, outcome, sink.started)
}

/// The options of a call in this Apache child (embedded mode, or a hook script).
pub(crate) fn call_options(info: &RequestInfo, pass_authorization: bool) -> CallOptions {
    CallOptions {
        process_group: String::new(),
        multithread: info.multithread,
        multiprocess: info.multiprocess,
        run_once: false,
        pass_authorization,
    }
}

fn finish(r: *mut RequestRec, route: &Route, outcome: Outcome, started: bool) -> c_int {
    let script = route.script.display();
    let abort = || {
        // SAFETY: the request is live on this thread.
        unsafe { wsgi_rs_abort(r) };
        OK
    };
    match outcome {
        Outcome::Complete { .. } => OK,
        Outcome::Incomplete { declared, sent, .. } => {
            log(
                r,
                APLOG_ERR,
                &format!(
                    "{script}: the response declared Content-Length {declared} but the application sent {sent} bytes: the connection is closed so the client can tell"
                ),
            );
            abort()
        }
        Outcome::Error(e) => {
            log(
                r,
                APLOG_ERR,
                &format!("{script}: {}\n{}", e.message, e.traceback),
            );
            match (started, e.is_request_timeout()) {
                (true, _) => abort(),
                (false, true) => 504,
                (false, false) => 500,
            }
        }
        Outcome::Aborted { error, sent, .. } => {
            log(
                r,
                APLOG_ERR,
                &format!(
                    "{script}: failed after {sent} body bytes: {}\n{}",
                    error.message, error.traceback
                ),
            );
            abort()
        }
        Outcome::ClientGone { error } => {
            log(r, APLOG_DEBUG, &format!("{script}: client gone: {error}"));
            OK
        }
        Outcome::Script(e) => {
            log(r, APLOG_ERR, &format!("{e}"));
            if matches!(e, wsgi_interp::ScriptError::NotFound { .. }) {
                404
            } else {
                500
            }
        }
        Outcome::ScriptChanged => {
            log(
                r,
                APLOG_ERR,
                &format!(
                    "{script} changed and script reloading reports changes only in daemon mode"
                ),
            );
            500
        }
        Outcome::Unavailable(e) => {
            log(r, APLOG_ERR, &format!("{script}: {e}"));
            503
        }
    }
}

/// The environ's source, from the request and its route.
///
/// # Safety
/// `r` is the live request Apache is serving on this thread.
pub(crate) unsafe fn request_head(
    r: *mut RequestRec,
    info: &RequestInfo,
    route: &Route,
) -> RequestHead {
    // SAFETY: forwarded from the caller's contract.
    let (mut headers, env) = unsafe {
        (
            pairs(r, wsgi_rs_request_headers),
            pairs(r, wsgi_rs_request_env),
        )
    };
    // Apache has already merged repeated headers with ", ". For Cookie that is unsplittable, so
    // it becomes "; " as wsgi-rs gives it elsewhere (a valid cookie value holds no comma).
    for (name, value) in &mut headers {
        if name.eq_ignore_ascii_case("cookie") {
            *value = String::from_utf8_lossy(value)
                .replace(", ", "; ")
                .into_bytes();
        }
    }
    // WSGIMapHEADToGET: Auto (the default) shows HEAD as GET when an output filter that needs
    // the whole body (mod_deflate, mod_cache, ...) is in the chain, as mod_wsgi does.
    let map_head = match route.settings.map_head_to_get {
        Some(MapHeadToGet::On) => true,
        Some(MapHeadToGet::Off) => false,
        // SAFETY: forwarded from the caller's contract.
        Some(MapHeadToGet::Auto) | None => unsafe { wsgi_rs_has_content_filters(r) != 0 },
    };
    let method = if map_head && info.method == "HEAD" {
        "GET".to_string()
    } else {
        info.method.clone()
    };
    let source = source_of(
        info,
        method,
        (&route.script_name, &route.path_info),
        headers,
        env,
        // A handler script handles the requested file.
        route.script_filename().as_os_str().as_encoded_bytes(),
        Some((&info.context_prefix, &info.context_document_root)),
    );
    let mut head = RequestHead::build(source, &route.settings);
    add_server_vars(&mut head, info);
    // The mod_wsgi.* keys apps and middleware read (mod_wsgi 6 names and forms).
    for (name, value) in route.handler_environ() {
        head.set_extra(name, value);
    }
    if !info.log_id.is_empty() {
        head.set_extra("mod_wsgi.request_id", info.log_id.clone());
    }
    head
}

/// The environ's source for an access or auth script, as the request stands when Apache asks
/// (before any handler, whatever it will be): `SCRIPT_NAME`/`PATH_INFO` split from `r->uri` at
/// `r->path_info`, `SCRIPT_FILENAME` the mapped file, and, as mod_wsgi does, neither the
/// `SetEnv` variables (an `.htaccess` file must not be able to feed the script) nor the
/// `Authorization` header.
///
/// # Safety
/// `r` is the live request Apache is serving on this thread.
pub(crate) unsafe fn hook_head(r: *mut RequestRec, info: &RequestInfo) -> RequestHead {
    // SAFETY: forwarded from the caller's contract.
    let headers = unsafe { pairs(r, wsgi_rs_request_headers) };
    let (script_name, path_info) =
        wsgi_config::handlers::split_path_info(&info.uri, &info.path_info);
    let source = source_of(
        info,
        info.method.clone(),
        (&script_name, &path_info),
        headers,
        Vec::new(),
        &info.filename,
        None,
    );
    // No trusted proxy applies before a handler is chosen.
    let mut head = RequestHead::build(source, &wsgi_config::WsgiSettings::default());
    add_server_vars(&mut head, info);
    head
}

/// What [`RequestHead::build`] needs, from the request's fields, with the method, the
/// `SCRIPT_NAME` and `PATH_INFO`, the headers, the variables, the file and the `CONTEXT_*`
/// pair (an application's, not a hook's) the caller chose.
fn source_of<'a>(
    info: &'a RequestInfo,
    method: String,
    (script_name, path_info): (&'a str, &'a str),
    headers: Vec<(String, Vec<u8>)>,
    env: Vec<(String, Vec<u8>)>,
    script_filename: &'a [u8],
    context: Option<(&'a [u8], &'a [u8])>,
) -> HeadSource<'a> {
    HeadSource {
        method,
        request_uri: &info.unparsed_uri,
        query_string: &info.args,
        protocol: &info.protocol,
        scheme: scheme(&info.scheme),
        script_name,
        path_info,
        // As Apache gives them to CGI (UseCanonicalName): the application group name stays
        // derived from configuration.
        server_name: &info.server_name,
        server_port: info.server_port,
        peer: (info.remote_ip.clone(), info.remote_port),
        local: (info.local_ip.clone(), info.local_port),
        headers,
        env,
        script_filename,
        document_root: &info.document_root,
        server_admin: &info.server_admin,
        context,
        stamps: Stamps {
            request_start_us: u64::try_from(info.request_time_us).unwrap_or(0),
            server_pid: std::process::id(),
            ..Stamps::default()
        },
    }
}

/// The variables Apache gives CGI beside the headers that are its own, each when it is not
/// empty: the server's software and the authenticated user's.
fn add_server_vars(head: &mut RequestHead, info: &RequestInfo) {
    let vars: [(&str, &[u8]); 3] = [
        ("SERVER_SOFTWARE", &info.server_software),
        ("REMOTE_USER", &info.user),
        ("AUTH_TYPE", &info.auth_type),
    ];
    for (name, value) in vars {
        if !value.is_empty() {
            head.set_extra(name, value.to_vec());
        }
    }
}

/// `https`, or else `http`.
fn scheme(name: &str) -> Scheme {
    if name == "https" {
        Scheme::Https
    } else {
        Scheme::Http
    }
}

/// A request's environment variables (`SetEnv`, `SetEnvIf`, `RewriteRule [E=]`), in order.
///
/// # Safety
/// `r` is the live request Apache is serving on this thread.
pub(crate) unsafe fn request_env(r: *mut RequestRec) -> Vec<(String, Vec<u8>)> {
    // SAFETY: forwarded from the caller's contract.
    unsafe { pairs(r, wsgi_rs_request_env) }
}
