//! Serving a request in the Apache child (embedded mode): `translate_name` maps a
//! `WSGIScriptAlias` URL to its script (so Apache's own `<Directory>` access checks and auth run
//! on the script's folder), and the handler runs the PEP 3333 call through wsgi-interp,
//! streaming the body from Apache's input filters and the response into its output filters.

use std::ffi::{CString, OsStr, c_char, c_int};
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
use crate::ffi::{
    APLOG_DEBUG, APLOG_ERR, APLOG_INFO, APLOG_WARNING, DECLINED, OK, Request, RequestInfo, ffi_fn,
    log_server,
};

/// The embedded Python of this Apache child, started in `child_init`.
static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

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

ffi_fn! {
    /// The `translate_name` hook: claims the URLs a `WSGIScriptAlias` covers, as mod_wsgi's
    /// hook does (after mod_alias's: an `Alias` or `Redirect` of the URL wins), mapping each to
    /// the alias's target and the rest of the URI, which Apache's directory walk then splits.
    ///
    /// # Safety
    /// `r` is the live request Apache is serving on this thread.
    request fn wsgi_rs_translate(r: &Request) -> c_int {
        request_hook(r, |config, info| {
            if info.uri.first() != Some(&b'/') {
                return DECLINED;
            }
            let Some(found) = config.match_script_alias(host_index(config, info), &info.uri)
            else {
                return DECLINED;
            };
            match CString::new(found.path.into_os_string().into_vec()) {
                Ok(f) => r.set_target(&f),
                Err(_) => return 404,
            }
            OK
        })
    } ?= "translate_name", 500
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

/// The body of a request hook (a panic in it is logged and answered by the export, see
/// [`ffi_fn!`]): runs `f` with the configuration and the request's fields, its log lines going
/// to the request's error log. DECLINED when there is no configuration.
pub(crate) fn request_hook(
    r: &Request<'_>,
    f: impl FnOnce(&Config, &RequestInfo) -> c_int,
) -> c_int {
    let Some(config) = current_config() else {
        return DECLINED;
    };
    let info = r.info();
    crate::applog::for_request(Some(r), || f(&config, &info))
}

/// The request body, read through Apache's input filters (de-chunked).
struct ApacheBody<'r>(Request<'r>);

// SAFETY: wsgi-interp calls the body only on the thread that called `InterpreterHandle::call`
// (or `DaemonClient::dispatch`), the Apache thread serving the request, within the hook call
// the `Request` borrows: it never reaches another thread while the request lives.
unsafe impl Send for ApacheBody<'_> {}

impl RequestBody for ApacheBody<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read_body(buf).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "reading the request body failed (client gone or timed out)",
            )
        })
    }
}

/// The response, written into Apache's output filters.
struct ApacheSink<'r> {
    r: Request<'r>,
    started: bool,
    /// `WSGIErrorOverride On` (daemon mode): an error status from the app is answered by
    /// Apache itself (its `ErrorDocument`), and the app's body is dropped.
    override_errors: bool,
    /// The error status taken over from the app.
    overridden: Option<u16>,
}

impl<'r> ApacheSink<'r> {
    fn new(r: Request<'r>) -> Self {
        ApacheSink {
            r,
            started: false,
            override_errors: false,
            overridden: None,
        }
    }
}

// SAFETY: as for ApacheBody: used only on the request's own Apache thread, within the hook call.
unsafe impl Send for ApacheSink<'_> {}

fn gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the client closed the connection",
    )
}

impl ResponseSink for ApacheSink<'_> {
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
        let headers: Vec<(CString, &[u8])> = headers
            .iter()
            .map(|(n, v)| {
                CString::new(n.as_str())
                    .map(|n| (n, &v[..]))
                    .map_err(|_| io::Error::other("NUL in header name"))
            })
            .collect::<io::Result<_>>()?;
        self.r.send_head(status, &reason, &headers);
        self.started = true;
        Ok(())
    }

    fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        if self.overridden.is_some() {
            return Ok(());
        }
        if self.r.write(chunk) {
            Ok(())
        } else {
            Err(gone())
        }
    }

    fn file(&mut self, fd: RawFd, offset: u64, len: u64) -> io::Result<bool> {
        if self.overridden.is_some() {
            return Ok(true);
        }
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), usize::try_from(len)) else {
            return Ok(false);
        };
        if self.r.sendfile(fd, offset, len) {
            Ok(true)
        } else {
            Err(gone())
        }
    }
}

ffi_fn! {
    /// `mod_wsgi_rs/VERSION Python/X.Y` for Apache's `Server` banner and `SERVER_SOFTWARE`
    /// (NULL after a panic: the shim then adds nothing).
    fn wsgi_rs_version_component() -> *const c_char {
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
    } ?= "the version component", |message| {
        log_server(APLOG_ERR, &message);
        std::ptr::null()
    }
}

ffi_fn! {
    /// Starts the embedded Python of this child, when the configuration can route requests to
    /// embedded mode.
    fn wsgi_rs_child_init() {
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
            crate::applog::for_request(None, || preload(&config, runtime));
        }
    } ?= "child_init", |m| log_server(APLOG_ERR, &m)
}

/// The embedded Python of this child, started on first need: in `child_init` when the
/// configuration can use it, else by the first hook script of an `.htaccess` file.
pub(crate) fn start_runtime(config: &Config) -> Result<&'static Runtime, String> {
    RUNTIME
        .get_or_init(|| {
            let (processes, threads) = crate::ffi::mpm_limits();
            wsgi_interp::set_apache_version(crate::ffi::apache_version());
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
                log_server(
                    APLOG_WARNING,
                    &format!(
                        "WSGIFreeThreading On has no effect: mod_wsgi_rs is built against Python {}, which is not a free-threaded build (python3.13t and later), so the GIL stays on; remove the line, or build mod_wsgi_rs against a free-threaded Python",
                        wsgi_interp::embedded::BUILD_PYTHON_VERSION
                    ),
                );
            }
            let runtime = Runtime::start_with(&start, &options).map_err(|e| {
                let message = format!("Python did not start in this Apache child: {e}");
                log_server(APLOG_ERR, &message);
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
        log_server(
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
                log_server(
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
            Ok(()) => log_server(
                APLOG_INFO,
                &format!(
                    "preloaded {} into application group {group:?}",
                    import.path.display()
                ),
            ),
            Err(e) => log_server(
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
fn in_daemon(r: &Request<'_>, info: &RequestInfo, route: &Route, group: &str) -> c_int {
    let head = request_head(r, info, route);
    // Daemon mode: a changed script restarts the daemon process (mod_wsgi's rule).
    let spec = ScriptSpec::for_route(route, true);
    let mut request = DaemonRequest::new(head, &spec, &route.application_group);
    request.pass_authorization = route.settings.pass_authorization == Some(true);
    let mut body = ApacheBody(*r);
    let mut sink = ApacheSink::new(*r);
    sink.override_errors = route.settings.error_override == Some(true);
    match crate::daemons::client().dispatch(group, &request, &mut body, &mut sink) {
        Ok(outcome) => match sink.overridden {
            Some(status) => c_int::from(status),
            None => finish(r, route, outcome, sink.started),
        },
        Err(e) => {
            r.log(APLOG_ERR, &format!("{}: {e}", info.path));
            if sink.started {
                r.abort();
                OK
            } else {
                c_int::from(e.status())
            }
        }
    }
}

ffi_fn! {
    /// Ends the embedded Python when the child exits: interpreters ended, atexit run, promptly.
    fn wsgi_rs_child_exit() {
        if let Some(Ok(runtime)) = RUNTIME.get() {
            let report = runtime.shutdown(Duration::from_secs(2), Duration::from_millis(300));
            if !report.left_running.is_empty() {
                log_server(
                    APLOG_WARNING,
                    &format!("threads still running at exit: {:?}", report.left_running),
                );
            }
        }
    } ?= "child_exit", |m| log_server(APLOG_ERR, &m)
}

/// The handler of `wsgi-script` requests, as mod_wsgi's: a request a `WSGIScriptAlias`
/// mapped runs the script Apache's directory walk (and MultiViews) found; any other file
/// whose handler is `wsgi-script` (`AddHandler`, `SetHandler`) runs where `Options ExecCGI`
/// is on, and gets 403 elsewhere (never its source as a static file). 404 for a missing
/// script, 403 for a folder.
fn handle(r: &Request<'_>, config: &Config, info: &RequestInfo) -> c_int {
    let host = host_index(config, info);
    let via = match &info.alias_uri {
        Some(uri) => match config.match_script_alias(host, uri) {
            Some(found) => ScriptVia::Alias(found.alias),
            None => {
                r.log(APLOG_ERR,
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
    let env_pairs = r.env();
    let env = |var: &str| crate::hooks::env_var(&env_pairs, var);
    let who = requester(config, info, host, &env);
    let file = Path::new(OsStr::from_bytes(&info.filename));
    // Apache gives the request its environment itself.
    let uri = (&info.uri[..], &info.path_info[..]);
    match config.wsgi_script_route(&who, via, file, uri, Vec::new()) {
        Ok(route) => serve(r, info, config, route),
        Err(why) => {
            r.log(APLOG_ERR, &why.to_string());
            c_int::from(why.status())
        }
    }
}

ffi_fn! {
    /// The `wsgi-script` handler ([`handle`]).
    ///
    /// # Safety
    /// `r` is the live request Apache is serving on this thread.
    request fn wsgi_rs_handle(r: &Request) -> c_int {
        request_hook(r, |config, info| handle(r, config, info))
    } ?= "handler", 500
}

/// Runs a routed request: the `WSGIDispatchScript` first, if any, then the application in a
/// daemon process or here.
pub(crate) fn serve(
    r: &Request<'_>,
    info: &RequestInfo,
    config: &Config,
    mut route: Route,
) -> c_int {
    crate::htaccess::apply(r, &mut route);
    if route.settings.dispatch_script.is_some() {
        let host = host_index(config, info);
        if let Err(status) = crate::hooks::dispatch(r, info, config, host, &mut route) {
            return status;
        }
    }
    if let ProcessGroup::Daemon(name) = &route.process_group {
        return in_daemon(r, info, &route, name);
    }
    if config.server.restrict_embedded {
        r.log(
            APLOG_ERR,
            "embedded mode is off in this process (WSGIRestrictEmbedded On)",
        );
        return 500;
    }
    let runtime = match start_runtime(config) {
        Ok(runtime) => runtime,
        Err(message) => {
            r.log(APLOG_ERR, &message);
            return 500;
        }
    };
    let head = request_head(r, info, &route);
    let spec = ScriptSpec::for_route(&route, false);
    let options = call_options(info, route.settings.pass_authorization == Some(true));
    let interpreter = match runtime.interpreter(&route.application_group) {
        Ok(i) => i,
        Err(e) => {
            r.log(
                APLOG_ERR,
                &format!("application group {:?}: {e}", route.application_group),
            );
            return 503;
        }
    };
    let mut body = ApacheBody(*r);
    let mut sink = ApacheSink::new(*r);
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

fn finish(r: &Request<'_>, route: &Route, outcome: Outcome, started: bool) -> c_int {
    let script = route.script.display();
    let abort = || {
        r.abort();
        OK
    };
    match outcome {
        Outcome::Complete { .. } => OK,
        Outcome::Incomplete { declared, sent, .. } => {
            r.log(APLOG_ERR,
                &format!(
                    "{script}: the response declared Content-Length {declared} but the application sent {sent} bytes: the connection is closed so the client can tell"
                ),
            );
            abort()
        }
        Outcome::Error(e) => {
            r.log(
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
            r.log(
                APLOG_ERR,
                &format!(
                    "{script}: failed after {sent} body bytes: {}\n{}",
                    error.message, error.traceback
                ),
            );
            abort()
        }
        Outcome::ClientGone { error } => {
            r.log(APLOG_DEBUG, &format!("{script}: client gone: {error}"));
            OK
        }
        Outcome::Script(e) => {
            r.log(APLOG_ERR, &format!("{e}"));
            if matches!(e, wsgi_interp::ScriptError::NotFound { .. }) {
                404
            } else {
                500
            }
        }
        Outcome::ScriptChanged => {
            r.log(
                APLOG_ERR,
                &format!(
                    "{script} changed and script reloading reports changes only in daemon mode"
                ),
            );
            500
        }
        Outcome::Unavailable(e) => {
            r.log(APLOG_ERR, &format!("{script}: {e}"));
            503
        }
    }
}

/// The environ's source, from the request and its route.
pub(crate) fn request_head(r: &Request<'_>, info: &RequestInfo, route: &Route) -> RequestHead {
    let (mut headers, env) = (r.headers(), r.env());
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
        Some(MapHeadToGet::Auto) | None => r.has_content_filters(),
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
pub(crate) fn hook_head(r: &Request<'_>, info: &RequestInfo) -> RequestHead {
    let headers = r.headers();
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
