//! Serving a request in the Apache child (embedded mode): `translate_name` maps a
//! `WSGIScriptAlias` URL to its script (so Apache's own `<Directory>` access checks and auth run
//! on the script's folder), and the handler runs the PEP 3333 call through wsgi-interp,
//! streaming the body from Apache's input filters and the response into its output filters.

use std::ffi::{CString, OsStr, c_int};
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use wsgi_config::Config;
use wsgi_config::route::{ProcessGroup, Route, ScriptVia};
use wsgi_daemon::DaemonRequest;
use wsgi_interp::{AppCall, Outcome, RequestBody, ResponseSink, ScriptSpec};

use crate::directive_callbacks::current_config;
use crate::environ::{call_options, env_var, host_index, request_head, requester};
use crate::ffi::{APLOG_DEBUG, APLOG_ERR, DECLINED, OK, Request, RequestInfo, ffi_fn};
use crate::runtime::start_runtime;

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
            let (file, path_info) = match found.script_and_path_info() {
                Some((file, path_info)) => (file.as_os_str().as_bytes(), path_info),
                None => (found.path.as_os_str().as_bytes(), &b""[..]),
            };
            if r.set_target(file, path_info) { OK } else { 404 }
        })
    } ?= "translate_name", 500
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
        self.0.read_body(buf).ok_or_else(body_failed)
    }

    /// Straight into `wsgi.input`'s new `bytes` (or the read-ahead buffer), not zeroed first.
    fn read_uninit(&mut self, buf: &mut [std::mem::MaybeUninit<u8>]) -> io::Result<usize> {
        self.0.read_body_uninit(buf).ok_or_else(body_failed)
    }
}

fn body_failed() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "reading the request body failed (client gone or timed out)",
    )
}

/// The `Content-Length` of a request body that may be read ahead: at most
/// [`INLINE_BODY`](wsgi_daemon::protocol::INLINE_BODY) bytes, not chunked, no `Expect`.
fn small_body_length(headers: &[(String, Vec<u8>)]) -> Option<usize> {
    let named = |name: &'static str| {
        headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
    };
    if named("Transfer-Encoding").next().is_some() || named("Expect").next().is_some() {
        return None;
    }
    let mut lengths = named("Content-Length");
    let (_, value) = lengths.next()?;
    if lengths.next().is_some() {
        return None;
    }
    let len: usize = std::str::from_utf8(value).ok()?.trim().parse().ok()?;
    (len <= wsgi_daemon::protocol::INLINE_BODY).then_some(len)
}

/// A request body read before the call: its bytes, then the error that stopped the reading,
/// if one did, or a short body's end (the app meets it where it would have, after the bytes
/// that came).
struct ReadAhead {
    bytes: Vec<u8>,
    pos: usize,
    failed: Option<io::Error>,
}

impl ReadAhead {
    /// Reads up to `len` bytes of `r`'s body.
    fn read(r: &Request<'_>, len: usize) -> ReadAhead {
        let mut bytes = Vec::with_capacity(len);
        // On failure `bytes` keeps what came before it.
        let mut failed = wsgi_interp::read_body_into(&mut ApacheBody(*r), &mut bytes, len).err();
        if bytes.len() < len && failed.is_none() {
            failed = Some(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the request body ended before its Content-Length",
            ));
        }
        ReadAhead {
            bytes,
            pos: 0,
            failed,
        }
    }
}

impl RequestBody for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let rest = &self.bytes[self.pos..];
        if rest.is_empty() && !buf.is_empty() {
            return self.failed.take().map_or(Ok(0), Err);
        }
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.pos += n;
        Ok(n)
    }

    fn held(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn held_whole(&self) -> Option<usize> {
        self.failed.is_none().then(|| self.held())
    }

    fn held_slices(&self) -> Option<Vec<&[u8]>> {
        self.failed.is_none().then(|| vec![&self.bytes[self.pos..]])
    }
}

/// A last chunk shorter than this is held in the request's output buffer (Apache's is 8,000
/// bytes: one this short, written after a flush, stays there without I/O) until the response
/// ends.
const HELD_LAST: usize = 4096;

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
        // Latin-1, as the app wrote it (mod_wsgi hands Apache those bytes).
        let reason = CString::new(wsgi_config::route::latin1_bytes(reason))
            .map_err(|_| io::Error::other("NUL in reason"))?;
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

    /// What needs no I/O never waits: the head (Apache keeps it until the first flush), a
    /// body taken over by `WSGIErrorOverride`, and a last chunk shorter than [`HELD_LAST`],
    /// held in the request's buffer (`write_last`).
    fn may_wait(&self, len: usize, last: bool) -> bool {
        len > 0 && self.overridden.is_none() && !(last && len < HELD_LAST)
    }

    /// A short last chunk is left in the request's buffer, and goes out with the response's
    /// end, right after (no application code runs in between): one write to the client, not
    /// a flush of its own. A longer one is written and flushed as any chunk.
    fn write_last(&mut self, chunk: &[u8]) -> io::Result<()> {
        if self.overridden.is_some() || chunk.len() >= HELD_LAST {
            return self.write(chunk);
        }
        if self.r.write_held(chunk) {
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
    let env = |var: &str| env_var(&env_pairs, var);
    let who = requester(config, info, host, &env);
    let file = Path::new(OsStr::from_bytes(&info.filename));
    // Apache gives the request its environment itself.
    let uri = (&info.uri[..], &info.path_info[..]);
    match config.wsgi_script_route(&who, via, (file, info.found), uri, Vec::new()) {
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
        if let Err(status) = crate::script_hooks::dispatch(r, info, config, host, &mut route) {
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

/// Runs a request in its daemon process group, over the group's socket.
fn in_daemon(r: &Request<'_>, info: &RequestInfo, route: &Route, group: &str) -> c_int {
    let head = request_head(r, info, route);
    // A small body with a Content-Length is read before the request goes, and crosses with
    // it (no round trip between the processes, and no daemon thread waits on the client).
    // Not with `Expect: 100-continue`: that is sent only if the app reads the body.
    let mut read_ahead = small_body_length(&head.headers).map(|len| ReadAhead::read(r, len));
    let mut streamed = ApacheBody(*r);
    let body: &mut dyn RequestBody = match &mut read_ahead {
        Some(read) => read,
        None => &mut streamed,
    };
    // Daemon mode: a changed script restarts the daemon process (mod_wsgi's rule).
    let request = DaemonRequest::new(AppCall::for_route(route, true), head);
    let mut sink = ApacheSink::new(*r);
    sink.override_errors = route.settings.error_override == Some(true);
    match crate::daemon_mode::client().dispatch(group, &request, body, &mut sink) {
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
