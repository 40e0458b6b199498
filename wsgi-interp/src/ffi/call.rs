//! Loading WSGI scripts and the PEP 3333 call itself.

use std::os::unix::ffi::OsStrExt;
use std::ptr;
use std::sync::Arc;

use pyo3::ffi;

use super::attach::{Attached, lock_attached, without_gil};
use super::host::{CallState, EmitError, InRequest, call_functions};
use super::interp::{Objects, ScriptEntry};
use super::shared::SharedChunk;
use super::template::{self, TemplateCall};
use super::{
    Obj, Stored, bytes_of, call, fs_str, latin1_str, new_dict, new_str, str_text, take_error,
};
use crate::environ::{Key, Value, for_each_cgi, k, v};
use crate::wsgi::{
    AppError, CallOptions, LoadStatus, Outcome, PyErrorInfo, ReloadMode, RequestHead, ScriptError,
    ScriptSpec,
};

/// A loaded script's callable and its `wsgi.errors` log, referenced for one call.
pub(crate) struct App {
    pub app: Obj,
    pub errors: Obj,
}

/// Runs `emit` (a [`CallState`] emission of `len` bytes, `last` or not) attached when the
/// sink cannot wait ([`CallState::sink_may_wait`]: a whole response handed to the front, a
/// first chunk, a short last one held in a buffer), else with the GIL let go around it, as any
/// wait on the client must be.
///
/// # Safety
/// Attached, as for [`without_gil`].
unsafe fn unless_waiting<R>(
    state: &CallState,
    (len, last): (usize, bool),
    emit: impl FnOnce() -> R,
) -> R {
    if state.sink_may_wait(len, last) {
        // SAFETY: attached (caller's contract).
        unsafe { without_gil(emit) }
    } else {
        emit()
    }
}

/// The public callables a script's module defines (not classes, not modules), sorted: what
/// a missing-callable error lists.
///
/// # Safety
/// Attached to the interpreter owning `module`.
unsafe fn callables_of(module: *mut ffi::PyObject) -> Vec<String> {
    // SAFETY: attached (caller's contract); the dict and its items are borrowed while the
    // module holds them, and nothing runs Python code between.
    unsafe {
        let dict = ffi::PyModule_GetDict(module);
        if dict.is_null() {
            ffi::PyErr_Clear();
            return Vec::new();
        }
        let mut names = Vec::new();
        let mut pos: ffi::Py_ssize_t = 0;
        let (mut key, mut value) = (ptr::null_mut(), ptr::null_mut());
        while ffi::PyDict_Next(dict, &mut pos, &mut key, &mut value) != 0 {
            let plain = ffi::PyCallable_Check(value) != 0
                && ffi::PyType_Check(value) == 0
                && ffi::PyModule_Check(value) == 0;
            if let Some(name) = str_text(key).filter(|n| plain && !n.starts_with('_')) {
                names.push(name);
            }
        }
        names.sort();
        names
    }
}

/// Loads (or reloads, or just checks) a script in the attached interpreter, for a request
/// this process `received` then (None: no request, or not known).
pub(crate) fn load_script(
    py: &Attached<'_>,
    spec: &ScriptSpec,
    received: Option<std::time::Instant>,
) -> Result<(LoadStatus, App), ScriptError> {
    let interp = py.interp();
    if !spec.path.is_absolute() {
        return Err(ScriptError::NotAbsolute(spec.path.clone()));
    }
    let mtime =
        crate::script_mtime::modified(&spec.path, received).map_err(|e| ScriptError::NotFound {
            path: spec.path.clone(),
            reason: e.to_string(),
        })?;
    let objects = interp.objects().ok_or(crate::InterpError::ShuttingDown)?;
    let mut table = lock_attached(py, &interp.scripts);
    // SAFETY: attached (`py`); every object touched belongs to this interpreter.
    unsafe {
        let mut status = LoadStatus::Loaded;
        if let Some(entry) = table.get(&spec.path) {
            let unchanged = entry.mtime == Some(mtime);
            if unchanged || spec.reload != ReloadMode::Reexecute {
                let callable = if entry.callable == spec.callable {
                    Obj::borrowed(entry.app.ptr())
                } else {
                    // Another callable of the same module (another WSGICallableObject, or a
                    // dispatch script's choice): looked up by name, as mod_wsgi does.
                    let found = new_str(&spec.callable).and_then(|name| {
                        Obj::own(ffi::PyObject_GetAttr(entry.module.ptr(), name.as_ptr()))
                    });
                    match found {
                        Some(app) if app.as_ptr() != ffi::Py_None() => app,
                        _ => {
                            ffi::PyErr_Clear();
                            let e = ScriptError::MissingCallable {
                                path: spec.path.clone(),
                                callable: spec.callable.clone(),
                                found: callables_of(entry.module.ptr()),
                            };
                            tracing::error!(group = %interp.name, "{e}");
                            return Err(e);
                        }
                    }
                };
                let app = App {
                    app: callable,
                    errors: Obj::borrowed(entry.errors.ptr()),
                };
                let status = match (unchanged, spec.reload) {
                    (false, ReloadMode::Report) => LoadStatus::Changed,
                    _ => LoadStatus::Unchanged,
                };
                return Ok((status, app));
            }
            status = LoadStatus::Reloaded;
            if let Some(old) = table.remove(&spec.path) {
                old.release();
            }
        }
        let raised = |objects: &Objects| ScriptError::Raised {
            path: spec.path.clone(),
            error: interp.explain(take_error(objects.format_exc.ptr())),
        };
        let path = fs_str(spec.path.as_os_str().as_bytes()).ok_or_else(|| raised(&objects))?;
        let name = new_str(&spec.callable).ok_or_else(|| raised(&objects))?;
        let pair =
            call(objects.load_script.ptr(), &[path.as_ptr(), name.as_ptr()]).ok_or_else(|| {
                let e = raised(&objects);
                tracing::error!(group = %interp.name, script = %spec.path.display(), "{e}");
                e
            })?;
        let module = Obj::borrowed(ffi::PyTuple_GetItem(pair.as_ptr(), 0));
        let app = ffi::PyTuple_GetItem(pair.as_ptr(), 1);
        if app == ffi::Py_None() {
            let e = ScriptError::MissingCallable {
                path: spec.path.clone(),
                callable: spec.callable.clone(),
                found: callables_of(module.as_ptr()),
            };
            tracing::error!(group = %interp.name, "{e}");
            return Err(e);
        }
        let app = Obj::borrowed(app);
        let tag = new_str(&format!("{} {}", interp.display(), spec.path.display()))
            .ok_or_else(|| raised(&objects))?;
        let level = Obj::own(ffi::PyLong_FromLong(1)).ok_or_else(|| raised(&objects))?;
        let errors = call(objects.log_writer.ptr(), &[tag.as_ptr(), level.as_ptr()])
            .ok_or_else(|| raised(&objects))?;
        table.insert(
            spec.path.clone(),
            ScriptEntry {
                module: Stored::new(module),
                callable: spec.callable.clone(),
                app: Stored::new(Obj::borrowed(app.as_ptr())),
                errors: Stored::new(Obj::borrowed(errors.as_ptr())),
                mtime: Some(mtime),
            },
        );
        tracing::debug!(group = %interp.name, script = %spec.path.display(), ?status, "WSGI script loaded");
        Ok((status, App { app, errors }))
    }
}

/// Builds the environ dict: mod_wsgi 6.1's keys, in its forms. A hook's environ (`input`
/// None) has no `wsgi.input`, `wsgi.input_terminated` or `wsgi.file_wrapper`, none of the
/// per-request `mod_wsgi.*` numbers (as mod_wsgi's access and auth scripts), and no
/// `mod_wsgi.callable_object` when `callable` is None.
///
/// # Safety
/// Attached to the interpreter owning `objects`.
pub(crate) unsafe fn build_environ(
    objects: &Objects,
    head: &RequestHead,
    opts: &CallOptions,
    callable: Option<&str>,
    input: Option<&Obj>,
    errors: &Obj,
) -> Option<Obj> {
    // SAFETY: attached (caller's contract); keys and cached values are this interpreter's
    // own objects (`objects`), and PyDict_SetItem takes its own references.
    unsafe {
        // An application call starts from a copy of its constant keys (`template`), unless
        // its extras name one of them (they must then override it, as below).
        let template = match (input, callable) {
            (Some(_), Some(callable)) if !template::extras_shadow_template(head) => {
                let call = TemplateCall {
                    opts,
                    callable,
                    errors: errors.as_ptr(),
                    local_stamps: template::local_stamps(objects, head),
                };
                template::copy_for(objects, &call)
                    .ok()?
                    .map(|(env, generation, fixed)| (env, call.local_stamps, generation, fixed))
            }
            _ => None,
        };
        let (env, templated, held) = match template {
            Some((env, local_stamps, generation, held)) => {
                (env, Some(local_stamps), Some((generation, held)))
            }
            // The fixed CGI variables, HTTPS, the headers, the extras and the 21 set below.
            None => (
                new_dict(15 + head.headers.len() + head.extra.len() + 21)?,
                None,
                None,
            ),
        };
        let set = |key: *mut ffi::PyObject, value: *mut ffi::PyObject| {
            ffi::PyDict_SetItem(env.as_ptr(), key, value) == 0
        };
        // A key the copy holds with this very value already (the template's) is left as it is.
        let holding = held.as_ref().map(|(_, held)| &**held);
        // The known keys the request has (a held one it has not goes, below).
        let mut emitted: u128 = 0;
        let key = |i: usize| objects.keys[i].ptr();
        let value = |i: usize| objects.values[i].ptr();
        let cacheable = crate::environ::cacheable_mask();
        // Nothing below runs Python code (str and dict operations only), so holding the
        // lock cannot wait on the GIL; try_lock keeps that true even if it changed.
        let mut last_values = objects.last_values.try_lock();
        for_each_cgi(head, opts, |name, val| {
            let owned;
            let val = match (val, name, last_values.as_deref_mut()) {
                (Value::Known(i), _, _) => value(i),
                (Value::Bytes(b), Key::Known(i), Some(last))
                    if crate::environ::cacheable(cacheable, i) =>
                {
                    match &mut last[i] {
                        Some((seen, str)) if crate::environ::same_bytes(seen, b) => str.ptr(),
                        slot => {
                            let made = Stored::new(latin1_str(b).ok_or(())?);
                            let ptr = made.ptr();
                            let seen = smallvec::SmallVec::from_slice(b);
                            if let Some((_, old)) = slot.replace((seen, made)) {
                                old.release();
                            }
                            ptr
                        }
                    }
                }
                (Value::Bytes(b), _, _) => {
                    owned = latin1_str(b).ok_or(())?;
                    owned.as_ptr()
                }
            };
            if let Key::Known(i) = name {
                emitted |= 1 << i;
            }
            let ok = match name {
                Key::Known(i) if holding.is_some_and(|held| held.holds(i, val)) => true,
                Key::Known(i) => set(key(i), val),
                Key::Other(s) => set(new_str(s).ok_or(())?.as_ptr(), val),
            };
            if ok { Ok(()) } else { Err(()) }
        })
        .ok()?;
        drop(last_values);
        // Held variables of the template's first request that this one has not (a header it
        // did not send, an extra of another route).
        let mut stale = holding.map_or(0, |held| held.optional) & !emitted;
        let lost = stale != 0;
        while stale != 0 {
            let i = stale.trailing_zeros() as usize;
            stale &= stale - 1;
            if ffi::PyDict_DelItem(env.as_ptr(), key(i)) != 0 {
                return None;
            }
        }
        if let Some((generation, held)) = held {
            if !held.adopted {
                template::adopt(objects, generation, &env, head, opts);
            } else {
                template::note_loss(objects, generation, &held, lost);
            }
        }
        let scheme = value(match head.scheme {
            crate::Scheme::Http => v::HTTP,
            crate::Scheme::Https => v::HTTPS,
        });
        let input = input.map_or(ptr::null_mut(), Obj::as_ptr);
        // A NULL value leaves the key out.
        let per_request = [(k::URL_SCHEME, scheme), (k::INPUT, input)];
        let (process_group_owned, callable_owned);
        let constants = match templated {
            Some(_) => None,
            None => {
                let process_group = if opts.process_group.is_empty() {
                    value(v::EMPTY)
                } else {
                    process_group_owned = new_str(&opts.process_group)?;
                    process_group_owned.as_ptr()
                };
                let callable = match callable {
                    None => ptr::null_mut(),
                    Some("application") => value(v::APPLICATION),
                    Some(name) => {
                        callable_owned = new_str(name)?;
                        callable_owned.as_ptr()
                    }
                };
                let mut pairs = template::constant_pairs(
                    objects,
                    opts,
                    callable,
                    process_group,
                    errors.as_ptr(),
                );
                // A hook's environ has no input, so nothing to read to its end or to wrap.
                if input.is_null() {
                    for (i, v) in &mut pairs {
                        if *i == k::INPUT_TERMINATED || *i == k::FILE_WRAPPER {
                            *v = ptr::null_mut();
                        }
                    }
                }
                Some(pairs)
            }
        };
        for (i, v) in per_request
            .into_iter()
            .chain(constants.into_iter().flatten())
        {
            if !v.is_null() && !set(key(i), v) {
                return None;
            }
        }
        let stamps_in_template = templated == Some(true);
        if !input.is_null() && !set_stamps(objects, &head.stamps, &set, stamps_in_template) {
            return None;
        }
        Some(env)
    }
}

/// Sets mod_wsgi 6.1's per-request numbers with `set`: `request_start`, `queue_start`,
/// `daemon_start` and `application_start` (now) as floats of seconds since the epoch,
/// `server_pid` a str, `thread_id` an int, and `request_id` when `wsgi serve` made one. The
/// embedded-mode values (`0.0`, this process's pid) are the interpreter's cached objects;
/// `constants_set`: the environ has them already (copied from its template).
///
/// # Safety
/// Attached to the interpreter owning `objects`.
unsafe fn set_stamps(
    objects: &Objects,
    stamps: &crate::Stamps,
    set: &dyn Fn(*mut ffi::PyObject, *mut ffi::PyObject) -> bool,
    constants_set: bool,
) -> bool {
    // SAFETY: attached (caller's contract); every object made here is owned by an Obj that
    // outlives its use, and `set` takes its own reference.
    unsafe {
        let seconds = |us: u64| -> Option<Obj> {
            if us == 0 {
                Some(Obj::borrowed(objects.zero_seconds.ptr()))
            } else {
                Obj::own(ffi::PyFloat_FromDouble(us as f64 / 1e6))
            }
        };
        let per_request = [
            (k::REQUEST_START, seconds(stamps.request_start_us)),
            (k::APPLICATION_START, seconds(crate::wsgi::now_us())),
            (
                k::THREAD_ID,
                Obj::own(ffi::PyLong_FromUnsignedLong(
                    crate::metrics::thread_id().into(),
                )),
            ),
        ];
        let constants = (!constants_set).then(|| {
            let pid = if stamps.server_pid == 0 || stamps.server_pid == objects.own_pid_number {
                Some(Obj::borrowed(objects.own_pid.ptr()))
            } else {
                let mut buf = [0u8; 10];
                latin1_str(crate::environ::decimal(stamps.server_pid, &mut buf))
            };
            [
                (k::QUEUE_START, seconds(stamps.queue_start_us)),
                (k::DAEMON_START, seconds(stamps.daemon_start_us)),
                (k::SERVER_PID, pid),
            ]
        });
        for (i, v) in per_request
            .into_iter()
            .chain(constants.into_iter().flatten())
        {
            let Some(v) = v else { return false };
            if !set(objects.keys[i].ptr(), v.as_ptr()) {
                return false;
            }
        }
        if stamps.request_id != 0 {
            let mut buf = [0u8; 11];
            let id = crate::environ::format_request_id(stamps.request_id, &mut buf);
            let Some(id) = latin1_str(id.as_bytes()) else {
                return false;
            };
            if !set(objects.keys[k::REQUEST_ID].ptr(), id.as_ptr()) {
                return false;
            }
        }
        true
    }
}

/// Builds (and drops) one request's environ, as a call does, with `None` for `wsgi.input` and
/// `wsgi.errors`; returns its size. For benchmarks.
pub(crate) fn environ_size(py: &Attached<'_>, head: &RequestHead, opts: &CallOptions) -> usize {
    let Some(objects) = py.interp().objects() else {
        return 0;
    };
    // SAFETY: attached (`py`); the objects belong to this interpreter.
    unsafe {
        let none = Obj::borrowed(ffi::Py_None());
        match build_environ(
            &objects,
            head,
            opts,
            Some("application"),
            Some(&none),
            &none,
        ) {
            Some(env) => ffi::PyDict_Size(env.as_ptr()).max(0) as usize,
            None => {
                ffi::PyErr_Clear();
                0
            }
        }
    }
}

fn app_error(e: PyErrorInfo) -> AppError {
    let e = super::tstate::explain_attached(e);
    AppError {
        message: e.to_string(),
        traceback: e.traceback,
    }
}

/// Runs one PEP 3333 call: environ, app, streaming iteration, `close()`; with `mod_wsgi`'s
/// request tracking around it once something asked for it (`_wsgi_rs.tracking`).
pub(crate) fn call_app(
    py: &Attached<'_>,
    app: &App,
    spec: &ScriptSpec,
    head: &RequestHead,
    opts: &CallOptions,
    state: &Arc<CallState>,
) -> Outcome {
    let Some(objects) = py.interp().objects() else {
        return Outcome::Unavailable(crate::InterpError::ShuttingDown);
    };
    let _in_request = InRequest::enter();
    let mut token = None;
    let outcome = call_tracked(py, &objects, app, spec, head, opts, state, &mut token);
    // SAFETY: attached (`py`); no exception is pending (every failure above took its own).
    unsafe {
        end_tracking(&objects, token, state);
        flush_streams(&objects);
        // The chunks of earlier responses (this one's too, once sent) the front is done with.
        objects.release_queue.release_parked();
    }
    outcome
}

/// Writes out the partial lines the request left in `wsgi.errors`, `sys.stderr` or
/// `sys.stdout` (as mod_wsgi flushes at the end of a request): one list-length check when
/// there are none.
///
/// # Safety
/// Attached to the interpreter owning `objects`, with no exception pending.
unsafe fn flush_streams(objects: &Objects) {
    // SAFETY: attached (caller's contract); `unflushed` is a list of this interpreter.
    unsafe {
        if ffi::PyList_GET_SIZE(objects.unflushed.ptr()) == 0 {
            return;
        }
        if call(objects.flush_streams.ptr(), &[]).is_none() {
            let e = take_error(objects.format_exc.ptr());
            tracing::error!(
                "flushing wsgi.errors after a request failed: {}",
                e.traceback
            );
        }
    }
}

/// The `_wsgi_rs.publish_stopping(reason)` of the attached interpreter (errors logged).
pub(crate) fn publish_stopping(py: &Attached<'_>, reason: &str) {
    let Some(objects) = py.interp().objects() else {
        return;
    };
    // SAFETY: attached (`py`); the objects belong to this interpreter.
    unsafe {
        let called =
            new_str(reason).and_then(|r| call(objects.publish_stopping.ptr(), &[r.as_ptr()]));
        if called.is_none() {
            let e = take_error(objects.format_exc.ptr());
            tracing::error!(group = %py.group(), "mod_wsgi process_stopping event failed: {}", e.traceback);
        }
    }
}

/// Tells `mod_wsgi` a tracked request ended: `_wsgi_rs.end_request(token, output_length)`,
/// also for a request that began untracked (`token` None) if tracking started during it.
///
/// # Safety
/// Attached to the interpreter owning `objects`, with no exception pending.
unsafe fn end_tracking(objects: &Objects, token: Option<Obj>, state: &CallState) {
    // SAFETY: attached (caller's contract); `tracking` is a list of this interpreter.
    unsafe {
        if token.is_none() && ffi::PyList_GET_SIZE(objects.tracking.ptr()) == 0 {
            return;
        }
        let sent = state.resp.lock().sent;
        let token = token.unwrap_or_else(|| Obj::borrowed(ffi::Py_None()));
        let ended = Obj::own(ffi::PyLong_FromUnsignedLongLong(sent))
            .and_then(|n| call(objects.end_request.ptr(), &[token.as_ptr(), n.as_ptr()]));
        if ended.is_none() {
            let e = take_error(objects.format_exc.ptr());
            tracing::error!("mod_wsgi request_finished event failed: {}", e.traceback);
        }
    }
}

/// Gives the pending exception (raised by the application) to the `request_exception`
/// event of the tracked request `token`, and leaves it pending.
///
/// # Safety
/// Attached to the interpreter owning `objects` and `token`, with an exception pending.
#[allow(deprecated)] // PyErr_Fetch/Restore: the form every supported Python has.
unsafe fn notify_exception(objects: &Objects, token: &Obj) {
    // SAFETY: attached (caller's contract); the fetched references are handed back to
    // PyErr_Restore, which steals them.
    unsafe {
        let (mut t, mut v, mut tb) = (ptr::null_mut(), ptr::null_mut(), ptr::null_mut());
        ffi::PyErr_Fetch(&mut t, &mut v, &mut tb);
        if t.is_null() {
            return;
        }
        ffi::PyErr_NormalizeException(&mut t, &mut v, &mut tb);
        if !v.is_null() {
            if !tb.is_null() {
                ffi::PyException_SetTraceback(v, tb);
            }
            if call(objects.request_exception.ptr(), &[token.as_ptr(), v]).is_none() {
                let e = take_error(objects.format_exc.ptr());
                tracing::error!("mod_wsgi request_exception event failed: {}", e.traceback);
            }
        }
        ffi::PyErr_Restore(t, v, tb);
    }
}

/// [`call_app`] itself; `token` receives the tracked request's state when tracking is on.
#[allow(clippy::too_many_arguments)]
fn call_tracked(
    py: &Attached<'_>,
    objects: &Objects,
    app: &App,
    spec: &ScriptSpec,
    head: &RequestHead,
    opts: &CallOptions,
    state: &Arc<CallState>,
    token: &mut Option<Obj>,
) -> Outcome {
    let interp = py.interp();
    let fmt = objects.format_exc.ptr();
    let log_failure = |error: &AppError, after_start: bool| {
        tracing::error!(
            group = %interp.name,
            script = %spec.path.display(),
            "{} {}: {}\n{}",
            if after_start { "response aborted after its body started:" } else { "request failed:" },
            spec.path.display(),
            error.message,
            error.traceback
        );
    };
    // The outcome for a failure now: 500 before the headers, a reset after, or a gone client.
    let failure = |error: AppError| {
        let r = state.resp.lock();
        if let Some((kind, msg)) = &r.failed {
            return Outcome::ClientGone {
                error: std::io::Error::new(*kind, msg.clone()),
            };
        }
        let (sent_headers, status, sent) = (r.headers_sent, r.status, r.sent);
        drop(r);
        log_failure(&error, sent_headers);
        if sent_headers {
            Outcome::Aborted {
                status,
                sent,
                error,
            }
        } else {
            Outcome::Error(error)
        }
    };
    // SAFETY: attached (`py`); all objects belong to this interpreter and are owned by Obj.
    unsafe {
        let Some((start_response, raw_read)) = call_functions(state) else {
            return failure(app_error(take_error(fmt)));
        };
        let Some(input) = call(objects.input_type.ptr(), &[raw_read.as_ptr()]) else {
            return failure(app_error(take_error(fmt)));
        };
        let Some(environ) = build_environ(
            objects,
            head,
            opts,
            Some(&spec.callable),
            Some(&input),
            &app.errors,
        ) else {
            return failure(app_error(take_error(fmt)));
        };
        // mod_wsgi's request tracking: one list length read while nothing asked for it.
        let (mut callable, mut start) = (app.app.as_ptr(), start_response.as_ptr());
        // `begin_request`'s answer, which holds `callable` and `start` when it replaced them.
        let mut _began = None;
        if ffi::PyList_GET_SIZE(objects.tracking.ptr()) != 0 {
            let began = Obj::own(ffi::PyLong_FromUnsignedLong(
                crate::metrics::thread_id().into(),
            ))
            .and_then(|thread| {
                call(
                    objects.begin_request.ptr(),
                    &[environ.as_ptr(), callable, start, thread.as_ptr()],
                )
            });
            let Some(began) = began else {
                return failure(app_error(take_error(fmt)));
            };
            *token = Some(Obj::borrowed(ffi::PyTuple_GetItem(began.as_ptr(), 0)));
            callable = ffi::PyTuple_GetItem(began.as_ptr(), 1);
            start = ffi::PyTuple_GetItem(began.as_ptr(), 2);
            _began = Some(began);
        }
        // An exception the application raised: to `request_exception`, then the failure.
        let raised = || {
            if let Some(token) = token.as_ref() {
                notify_exception(objects, token);
            }
            failure(app_error(take_error(fmt)))
        };
        let Some(result) = call(callable, &[environ.as_ptr(), start]) else {
            return raised();
        };
        drop(environ);
        let outcome = iterate(objects, &result, state, &failure, &raised);
        // close() is always called, whatever happened above.
        // A plain list or tuple (the usual hello-world answer) has no `close`, and builtin
        // types cannot gain one: skip the lookup, which raises and clears an AttributeError.
        let r = result.as_ptr();
        let has_close =
            !is_plain_sequence(r) && ffi::PyObject_HasAttrString(r, c"close".as_ptr()) == 1;
        if has_close {
            let closed =
                super::getattr(result.as_ptr(), c"close").and_then(|c| call(c.as_ptr(), &[]));
            if closed.is_none() {
                if let Some(token) = token.as_ref() {
                    notify_exception(objects, token);
                }
                let e = app_error(take_error(fmt));
                tracing::error!(group = %interp.name, script = %spec.path.display(), "close() of the response iterable raised: {}\n{}", e.message, e.traceback);
                if let Outcome::Complete { status, body_bytes } = outcome {
                    return Outcome::Aborted {
                        status,
                        sent: body_bytes,
                        error: e,
                    };
                }
            }
        }
        outcome
    }
}

/// Whether `r` is exactly a list or a tuple: iterating it runs no application code, and it
/// has no `close` (builtin types cannot gain one).
///
/// # Safety
/// Attached; `r` valid.
unsafe fn is_plain_sequence(r: *mut ffi::PyObject) -> bool {
    // SAFETY: attached, `r` valid (caller's contract); type checks only.
    unsafe { ffi::PyList_CheckExact(r) != 0 || ffi::PyTuple_CheckExact(r) != 0 }
}

/// Streams the response iterable to the sink; `raised` turns the pending exception into the
/// outcome.
///
/// # Safety
/// Attached to the interpreter owning `objects` and `result`.
unsafe fn iterate(
    objects: &Objects,
    result: &Obj,
    state: &Arc<CallState>,
    failure: &dyn Fn(AppError) -> Outcome,
    raised: &dyn Fn() -> Outcome,
) -> Outcome {
    let emit_failed = |e: EmitError| match e {
        EmitError::Sink(error) => Outcome::ClientGone { error },
        EmitError::NotStarted => failure(AppError {
            message: "the application returned body data before calling start_response()".into(),
            traceback: String::new(),
        }),
        EmitError::Finished => failure(AppError {
            message: "the response ended while the application was still sending".into(),
            traceback: String::new(),
        }),
    };
    // SAFETY: attached (caller's contract).
    unsafe {
        let mut done = false;
        if ffi::Py_TYPE(result.as_ptr()).cast() == objects.file_wrapper.ptr() {
            let Some(range) = call(objects.file_range.ptr(), &[result.as_ptr()]) else {
                return raised();
            };
            if range.as_ptr() != ffi::Py_None() {
                let fd = ffi::PyLong_AsLong(ffi::PyTuple_GetItem(range.as_ptr(), 0));
                let offset =
                    ffi::PyLong_AsUnsignedLongLong(ffi::PyTuple_GetItem(range.as_ptr(), 1));
                let size = ffi::PyLong_AsUnsignedLongLong(ffi::PyTuple_GetItem(range.as_ptr(), 2));
                if !ffi::PyErr_Occurred().is_null() {
                    return raised();
                }
                // The wrapper (held by `result`) keeps the file, hence the fd, open.
                match without_gil(|| state.send_file(fd as i32, offset, size)) {
                    Ok(true) => done = true,
                    Ok(false) => {}
                    Err(e) => return emit_failed(e),
                }
            }
        }
        if !done {
            let Some(iter) = Obj::own(ffi::PyObject_GetIter(result.as_ptr())) else {
                return raised();
            };
            // A plain list or tuple runs no code of the application's while it is iterated
            // or after (it has no `close`): its last item ends the body.
            let r = result.as_ptr();
            let mut left = if is_plain_sequence(r) {
                ffi::PyObject_Size(r)
            } else {
                -1
            };
            loop {
                let Some(item) = Obj::own(ffi::PyIter_Next(iter.as_ptr())) else {
                    if !ffi::PyErr_Occurred().is_null() {
                        return raised();
                    }
                    break;
                };
                left -= 1;
                // A large bytes object goes out as it is, without a copy.
                let item = match SharedChunk::of(item, &objects.release_queue) {
                    Ok(shared) => {
                        if let Err(e) = unless_waiting(state, (shared.len(), false), || {
                            state.emit_shared(shared)
                        }) {
                            return emit_failed(e);
                        }
                        if state.length_reached() {
                            break;
                        }
                        continue;
                    }
                    Err(item) => item,
                };
                let Some(chunk) = bytes_of(item.as_ptr()) else {
                    let name = std::ffi::CStr::from_ptr((*ffi::Py_TYPE(item.as_ptr())).tp_name)
                        .to_string_lossy()
                        .into_owned();
                    return failure(AppError {
                        message: format!(
                            "TypeError: the response iterable yielded {name}, but PEP 3333 needs bytes"
                        ),
                        traceback: String::new(),
                    });
                };
                if chunk.is_empty() {
                    continue;
                }
                // Nor does publishing the request's end when no one tracks requests.
                let last = left == 0 && ffi::PyList_GET_SIZE(objects.tracking.ptr()) == 0;
                // `item` keeps the bytes alive while the GIL is released.
                let emitted = if last {
                    unless_waiting(state, (chunk.len(), true), || state.emit_last(chunk))
                } else {
                    unless_waiting(state, (chunk.len(), false), || state.emit(chunk))
                };
                if let Err(e) = emitted {
                    return emit_failed(e);
                }
                if state.length_reached() {
                    break;
                }
            }
        }
        if let Err(e) = unless_waiting(state, (0, false), || state.emit(&[])) {
            return match e {
                EmitError::NotStarted => failure(AppError {
                    message: "the application returned without calling start_response()".into(),
                    traceback: String::new(),
                }),
                e => emit_failed(e),
            };
        }
        let r = state.resp.lock();
        match r.content_length {
            Some(cl) if r.sent < cl => {
                tracing::warn!(
                    status = r.status,
                    declared = cl,
                    sent = r.sent,
                    "response body shorter than its Content-Length ({} of {cl} bytes): the connection must be closed",
                    r.sent
                );
                Outcome::Incomplete {
                    status: r.status,
                    declared: cl,
                    sent: r.sent,
                }
            }
            _ => {
                if r.truncated {
                    tracing::warn!(
                        status = r.status,
                        declared = r.content_length,
                        "response body longer than its Content-Length: the surplus was dropped"
                    );
                }
                Outcome::Complete {
                    status: r.status,
                    body_bytes: r.sent,
                }
            }
        }
    }
}

impl Attached<'_> {
    /// Builds and drops the environ of a request; returns its number of keys. A benchmark
    /// hook, not an API.
    #[doc(hidden)]
    pub fn bench_environ(&self, head: &crate::RequestHead, opts: &crate::CallOptions) -> usize {
        environ_size(self, head, opts)
    }
}
