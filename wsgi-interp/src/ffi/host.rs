//! The Rust functions Python calls: `start_response`, `write`, the raw reader behind
//! `wsgi.input`, and the log sink behind `wsgi.errors`/`sys.stdout`/`sys.stderr`.
//!
//! They are static `PyMethodDef`s (process-global but immutable, so safe to share between
//! interpreters: CPython makes a per-interpreter builtin-function object from them, of the
//! builtin `PyCFunction` type, so no heap type is shared) with a per-request `PyCapsule` as
//! `self`, whose destructor frees the call state: a `start_response` the application keeps
//! after its request cannot dangle. Each runs under [`trampoline`].

use std::borrow::Cow;
use std::io;
use std::os::fd::RawFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;
use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::ffi;

use super::attach::without_gil;
use super::shared::SharedChunk;
use super::{Obj, bytes_of, new_bytes, raise, str_text};
use crate::response::{check_header, parse_content_length, parse_status};
use crate::wsgi::{RequestBody, ResponseSink};

/// The largest chunk one `wsgi.input` raw read asks the body for.
pub(crate) const MAX_READ: usize = 64 * 1024;

#[repr(transparent)]
struct MethodDef(ffi::PyMethodDef);
// SAFETY: the definitions are never mutated; CPython only reads them.
unsafe impl Sync for MethodDef {}

static LOG_DEF: MethodDef = MethodDef(ffi::PyMethodDef {
    ml_name: c"_native_log".as_ptr(),
    ml_meth: ffi::PyMethodDefPointer {
        PyCFunctionFast: native_log,
    },
    ml_flags: ffi::METH_FASTCALL,
    ml_doc: c"_native_log(tag, level, text): one line to the host's log".as_ptr(),
});

static METRICS_DEF: MethodDef = MethodDef(ffi::PyMethodDef {
    ml_name: c"_native_metrics".as_ptr(),
    ml_meth: ffi::PyMethodDefPointer {
        PyCFunction: native_metrics,
    },
    ml_flags: ffi::METH_NOARGS,
    ml_doc: c"_native_metrics(): (requests, busy_seconds, active, [(thread_id, requests)], started, max_rss, rss)".as_ptr(),
});

static IN_REQUEST_DEF: MethodDef = MethodDef(ffi::PyMethodDef {
    ml_name: c"_native_in_request".as_ptr(),
    ml_meth: ffi::PyMethodDefPointer {
        PyCFunction: native_in_request,
    },
    ml_flags: ffi::METH_NOARGS,
    ml_doc: c"_native_in_request(): whether this thread is running a WSGI call".as_ptr(),
});

static START_RESPONSE_DEF: MethodDef = MethodDef(ffi::PyMethodDef {
    ml_name: c"start_response".as_ptr(),
    ml_meth: ffi::PyMethodDefPointer {
        PyCFunctionFastWithKeywords: start_response,
    },
    ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
    ml_doc: c"start_response(status, response_headers, exc_info=None) -> write".as_ptr(),
});

static WRITE_DEF: MethodDef = MethodDef(ffi::PyMethodDef {
    ml_name: c"write".as_ptr(),
    ml_meth: ffi::PyMethodDefPointer { PyCFunction: write },
    ml_flags: ffi::METH_O,
    ml_doc: c"write(data: bytes): send body data (PEP 3333 legacy write callable)".as_ptr(),
});

static READ_DEF: MethodDef = MethodDef(ffi::PyMethodDef {
    ml_name: c"_read".as_ptr(),
    ml_meth: ffi::PyMethodDefPointer {
        PyCFunction: raw_read,
    },
    ml_flags: ffi::METH_O,
    ml_doc: c"_read(n): at most n bytes of the request body; b'' at its end".as_ptr(),
});

const CAPSULE_NAME: &std::ffi::CStr = c"wsgi_rs.call";

/// Runs a Python-called function body; a panic becomes a `RuntimeError`, never unwinding into C.
fn trampoline(name: &str, body: impl FnOnce() -> *mut ffi::PyObject) -> *mut ffi::PyObject {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(r) => r,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            tracing::error!("panic in {name} (turned into a Python RuntimeError): {msg}");
            // SAFETY: CPython called us attached, and `without_gil` re-attaches while unwinding.
            unsafe {
                raise(
                    ffi::PyExc_RuntimeError,
                    &format!("wsgi-rs internal error in {name}: {msg}"),
                )
            };
            ptr::null_mut()
        }
    }
}

/// The builtin functions the host gives `_wsgi_rs`, by name: `_native_log`,
/// `_native_metrics`, `_native_in_request`.
///
/// # Safety
/// Attached.
pub(crate) unsafe fn native_functions() -> Option<Vec<(&'static std::ffi::CStr, Obj)>> {
    let mut made = Vec::new();
    for def in [&LOG_DEF, &METRICS_DEF, &IN_REQUEST_DEF] {
        // SAFETY: attached; the defs are static and outlive every function object.
        let f = unsafe {
            Obj::own(ffi::PyCFunction_NewEx(
                ptr::addr_of!(def.0).cast_mut(),
                ptr::null_mut(),
                ptr::null_mut(),
            ))
        }?;
        // SAFETY: ml_name is one of the static C strings above.
        made.push((unsafe { std::ffi::CStr::from_ptr(def.0.ml_name) }, f));
    }
    Some(made)
}

thread_local! {
    /// Whether this thread is inside a WSGI call (`call::call_app`).
    static IN_REQUEST: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the calling thread as running a WSGI call until dropped.
pub(crate) struct InRequest(bool);

impl InRequest {
    pub(crate) fn enter() -> InRequest {
        InRequest(IN_REQUEST.try_with(|c| c.replace(true)).unwrap_or(false))
    }
}

impl Drop for InRequest {
    fn drop(&mut self) {
        let _ = IN_REQUEST.try_with(|c| c.set(self.0));
    }
}

unsafe extern "C" fn native_in_request(
    _slf: *mut ffi::PyObject,
    _arg: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    trampoline("_native_in_request", || {
        let inside = IN_REQUEST.try_with(std::cell::Cell::get).unwrap_or(false);
        // SAFETY: CPython calls us attached; the booleans are immortal singletons.
        unsafe {
            Obj::borrowed(if inside {
                ffi::Py_True()
            } else {
                ffi::Py_False()
            })
            .into_ptr()
        }
    })
}

unsafe extern "C" fn native_metrics(
    _slf: *mut ffi::PyObject,
    _arg: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    trampoline("_native_metrics", || {
        let m = crate::metrics::snapshot();
        // SAFETY: CPython calls us attached; every new reference is owned by an Obj and the
        // tuple/list setters steal the references handed to them.
        unsafe {
            let int = |n: u64| Obj::own(ffi::PyLong_FromUnsignedLongLong(n));
            let float = |x: f64| Obj::own(ffi::PyFloat_FromDouble(x));
            let pack = |items: Vec<Obj>| -> Option<Obj> {
                let t = Obj::own(ffi::PyTuple_New(items.len() as ffi::Py_ssize_t))?;
                for (i, item) in items.into_iter().enumerate() {
                    ffi::PyTuple_SetItem(t.as_ptr(), i as ffi::Py_ssize_t, item.into_ptr());
                }
                Some(t)
            };
            let built = (|| {
                let threads = Obj::own(ffi::PyList_New(0))?;
                for (id, n) in &m.threads {
                    let pair = pack(vec![int(u64::from(*id))?, int(*n)?])?;
                    if ffi::PyList_Append(threads.as_ptr(), pair.as_ptr()) != 0 {
                        return None;
                    }
                }
                pack(vec![
                    int(m.requests)?,
                    float(m.busy_seconds)?,
                    int(m.active)?,
                    threads,
                    float(m.started)?,
                    int(m.max_rss)?,
                    int(m.rss)?,
                ])
            })();
            built.map_or(ptr::null_mut(), Obj::into_ptr)
        }
    })
}

unsafe extern "C" fn native_log(
    _slf: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    trampoline("_native_log", || {
        // SAFETY: CPython passes `nargs` valid borrowed arguments, and we are attached.
        unsafe {
            if nargs != 3 {
                raise(
                    ffi::PyExc_TypeError,
                    "_native_log() takes exactly 3 arguments",
                );
                return ptr::null_mut();
            }
            let tag = str_text(*args).unwrap_or_default();
            let level = ffi::PyLong_AsLong(*args.add(1));
            ffi::PyErr_Clear();
            let text = str_text(*args.add(2)).unwrap_or_default();
            // bootstrap.py's LEVEL_INFO, LEVEL_ERROR, LEVEL_DEBUG, LEVEL_WARNING.
            match level {
                0 => tracing::info!(target: "wsgi_interp::python", app = %tag, "{text}"),
                2 => tracing::debug!(target: "wsgi_interp::python", app = %tag, "{text}"),
                3 => tracing::warn!(target: "wsgi_interp::python", app = %tag, "{text}"),
                _ => tracing::error!(target: "wsgi_interp::python", app = %tag, "{text}"),
            }
            Obj::borrowed(ffi::Py_None()).into_ptr()
        }
    })
}

struct BodyPtr(*mut (dyn RequestBody + 'static));
// SAFETY: RequestBody is Send; the pointer is only dereferenced under `CallState::body`'s
// mutex while the lending call is running (`with_call_state` clears it before returning).
unsafe impl Send for BodyPtr {}

struct SinkPtr(*mut (dyn ResponseSink + 'static));
// SAFETY: as for BodyPtr, with `CallState::resp`'s mutex.
unsafe impl Send for SinkPtr {}

/// What `start_response` recorded.
struct Started {
    status: u16,
    reason: Cow<'static, str>,
    headers: Vec<(String, Vec<u8>)>,
    content_length: Option<u64>,
}

pub(crate) struct Resp {
    sink: Option<SinkPtr>,
    started: Option<Started>,
    pub headers_sent: bool,
    pub status: u16,
    pub content_length: Option<u64>,
    pub sent: u64,
    pub truncated: bool,
    pub failed: Option<(io::ErrorKind, String)>,
}

/// The state of one WSGI call, shared by the capsule (so host functions kept by the app
/// after the call cannot dangle) and the Rust call loop.
pub(crate) struct CallState {
    body: Mutex<Option<BodyPtr>>,
    pub resp: Mutex<Resp>,
}

/// Why body data could not be sent.
pub(crate) enum EmitError {
    NotStarted,
    Finished,
    Sink(io::Error),
}

/// Lends `body` and `sink` to a call for the duration of `f`; afterwards every host function
/// of the call (also ones the app kept) finds them gone.
pub(crate) fn with_call_state<R>(
    body: &mut dyn RequestBody,
    sink: &mut dyn ResponseSink,
    f: impl FnOnce(&Arc<CallState>) -> R,
) -> R {
    // SAFETY: only the trait-object lifetime is erased; the pointers are cleared by `Finish`
    // (below, also on unwind) before the borrows end, and only used under the mutexes.
    let (body, sink) = unsafe {
        (
            std::mem::transmute::<*mut dyn RequestBody, *mut (dyn RequestBody + 'static)>(body),
            std::mem::transmute::<*mut dyn ResponseSink, *mut (dyn ResponseSink + 'static)>(sink),
        )
    };
    let state = Arc::new(CallState {
        body: Mutex::new(Some(BodyPtr(body))),
        resp: Mutex::new(Resp {
            sink: Some(SinkPtr(sink)),
            started: None,
            headers_sent: false,
            status: 0,
            content_length: None,
            sent: 0,
            truncated: false,
            failed: None,
        }),
    });
    struct Finish<'s>(&'s CallState);
    impl Drop for Finish<'_> {
        fn drop(&mut self) {
            self.0.body.lock().take();
            self.0.resp.lock().sink.take();
        }
    }
    let _finish = Finish(&state);
    f(&state)
}

impl CallState {
    /// Sends the headers if not yet sent, then `chunk` cut to the declared Content-Length.
    /// Call without the GIL.
    pub(crate) fn emit(&self, chunk: &[u8]) -> Result<(), EmitError> {
        self.emit_with(chunk.len(), |sink, room| sink.write(&chunk[..room]))
    }

    /// [`CallState::emit`] for the body's last chunk ([`ResponseSink::write_last`]).
    pub(crate) fn emit_last(&self, chunk: &[u8]) -> Result<(), EmitError> {
        self.emit_with(chunk.len(), |sink, room| sink.write_last(&chunk[..room]))
    }

    /// [`CallState::emit`] for a chunk lent without copying: the sink takes it whole, or a
    /// copy of what fits the declared Content-Length. Call without the GIL.
    pub(crate) fn emit_shared(&self, chunk: SharedChunk) -> Result<(), EmitError> {
        let len = chunk.len();
        self.emit_with(len, move |sink, room| {
            if room == len {
                sink.write_shared(chunk)
            } else {
                sink.write(&chunk[..room])
            }
        })
    }

    /// Sends the headers if not yet sent, then has `write` send the first `room` bytes of a
    /// `len`-byte chunk, `room` being what the declared Content-Length leaves.
    fn emit_with(
        &self,
        len: usize,
        write: impl FnOnce(&mut dyn ResponseSink, usize) -> io::Result<()>,
    ) -> Result<(), EmitError> {
        let mut r = self.resp.lock();
        self.ensure_headers(&mut r, None)?;
        if len == 0 {
            return Ok(());
        }
        let room = match r.content_length {
            Some(cl) => cl.saturating_sub(r.sent).min(len as u64) as usize,
            None => len,
        };
        if room < len {
            r.truncated = true;
        }
        if room == 0 {
            return Ok(());
        }
        let sink = r.sink.as_ref().ok_or(EmitError::Finished)?.0;
        // SAFETY: the sink is lent for the running call (it is in the slot) and the resp
        // mutex, held, gives exclusive access.
        match write(unsafe { &mut *sink }, room) {
            Ok(()) => {
                r.sent += room as u64;
                Ok(())
            }
            Err(e) => {
                r.failed = Some((e.kind(), e.to_string()));
                Err(EmitError::Sink(e))
            }
        }
    }

    /// Sends a file range through the sink (adding Content-Length when the app set none).
    /// `Ok(false)`: the sink wants the body iterated. Call without the GIL.
    pub(crate) fn send_file(&self, fd: RawFd, offset: u64, size: u64) -> Result<bool, EmitError> {
        let mut r = self.resp.lock();
        let len = match r.started.as_ref().map(|s| s.content_length) {
            None if !r.headers_sent => return Err(EmitError::NotStarted),
            Some(Some(cl)) => size.min(cl),
            Some(None) => size,
            None => size.min(r.content_length.unwrap_or(size).saturating_sub(r.sent)),
        };
        self.ensure_headers(&mut r, Some(size))?;
        let sink = r.sink.as_ref().ok_or(EmitError::Finished)?.0;
        // SAFETY: as in `emit`.
        match unsafe { (*sink).file(fd, offset, len) } {
            Ok(true) => {
                r.sent += len;
                Ok(true)
            }
            Ok(false) => Ok(false),
            Err(e) => {
                r.failed = Some((e.kind(), e.to_string()));
                Err(EmitError::Sink(e))
            }
        }
    }

    fn ensure_headers(&self, r: &mut Resp, add_length: Option<u64>) -> Result<(), EmitError> {
        if let Some((kind, msg)) = &r.failed {
            return Err(EmitError::Sink(io::Error::new(*kind, msg.clone())));
        }
        if r.headers_sent {
            return Ok(());
        }
        let sink = r.sink.as_ref().ok_or(EmitError::Finished)?.0;
        let started = r.started.as_mut().ok_or(EmitError::NotStarted)?;
        if let (Some(len), None) = (add_length, started.content_length) {
            started
                .headers
                .push(("Content-Length".into(), len.to_string().into_bytes()));
            started.content_length = Some(len);
        }
        let headers = std::mem::take(&mut started.headers);
        let (status, reason, cl) = (
            started.status,
            std::mem::take(&mut started.reason),
            started.content_length,
        );
        r.headers_sent = true;
        r.status = status;
        r.content_length = cl;
        // SAFETY: as in `emit`.
        if let Err(e) = unsafe { (*sink).start(status, &reason, headers) } {
            r.failed = Some((e.kind(), e.to_string()));
            return Err(EmitError::Sink(e));
        }
        Ok(())
    }

    /// Whether emitting `len` bytes now (`last`: with [`CallState::emit_last`]) could wait on
    /// the sink ([`ResponseSink::may_wait`]): then call [`CallState::emit`] and its kin
    /// without the GIL; else with it, saving a release.
    pub(crate) fn sink_may_wait(&self, len: usize, last: bool) -> bool {
        let r = self.resp.lock();
        // SAFETY: as in `emit`: the sink is lent for the running call while it is in the
        // slot, and the resp mutex, held, gives exclusive access.
        r.sink
            .as_ref()
            .is_none_or(|sink| unsafe { (*sink.0).may_wait(len, last) })
    }

    /// True once the declared Content-Length has been sent in full.
    pub(crate) fn length_reached(&self) -> bool {
        let r = self.resp.lock();
        r.content_length.is_some_and(|cl| r.sent >= cl)
    }
}

/// The per-call host functions: `(start_response, raw_read)`.
///
/// # Safety
/// Attached.
pub(crate) unsafe fn call_functions(state: &Arc<CallState>) -> Option<(Obj, Obj)> {
    unsafe extern "C" fn free_state(capsule: *mut ffi::PyObject) {
        let _ = catch_unwind(|| {
            // SAFETY: CPython calls this once, when the capsule dies; the pointer is the Box
            // made in `call_functions`.
            unsafe {
                let p = ffi::PyCapsule_GetPointer(capsule, CAPSULE_NAME.as_ptr());
                if !p.is_null() {
                    drop(Box::from_raw(p.cast::<Arc<CallState>>()));
                }
            }
        });
    }
    let boxed = Box::into_raw(Box::new(state.clone()));
    // SAFETY: attached; the capsule owns the Box from here (freed by `free_state`); the defs
    // are static.
    unsafe {
        let Some(capsule) = Obj::own(ffi::PyCapsule_New(
            boxed.cast(),
            CAPSULE_NAME.as_ptr(),
            Some(free_state),
        )) else {
            drop(Box::from_raw(boxed));
            return None;
        };
        let sr = Obj::own(ffi::PyCFunction_NewEx(
            ptr::addr_of!(START_RESPONSE_DEF.0).cast_mut(),
            capsule.as_ptr(),
            ptr::null_mut(),
        ))?;
        let read = Obj::own(ffi::PyCFunction_NewEx(
            ptr::addr_of!(READ_DEF.0).cast_mut(),
            capsule.as_ptr(),
            ptr::null_mut(),
        ))?;
        Some((sr, read))
    }
}

/// The call state behind a host function's `self`.
///
/// # Safety
/// Attached; `slf` is the `self` CPython passed to one of our defs.
unsafe fn state_of<'a>(slf: *mut ffi::PyObject) -> Option<&'a Arc<CallState>> {
    // SAFETY: slf is our capsule (caller's contract); it outlives the call that uses it.
    unsafe {
        let p = ffi::PyCapsule_GetPointer(slf, CAPSULE_NAME.as_ptr());
        (!p.is_null()).then(|| &*p.cast::<Arc<CallState>>())
    }
}

/// The type name of `o`, for messages.
///
/// # Safety
/// Attached; `o` valid.
unsafe fn type_name(o: *mut ffi::PyObject) -> String {
    // SAFETY: every object has a type with a NUL-terminated tp_name.
    unsafe {
        std::ffi::CStr::from_ptr((*ffi::Py_TYPE(o)).tp_name)
            .to_string_lossy()
            .into_owned()
    }
}

/// The latin-1 bytes of a `str`, or a raised TypeError/ValueError naming `what`: ASCII text
/// (nearly every status and header) is its own latin-1 encoding, lent straight from the
/// object; other text is encoded into a copy.
///
/// # Safety
/// Attached; `o` valid, and alive and attached to for `'a` (a `str` never changes).
unsafe fn latin1_of<'a>(o: *mut ffi::PyObject, what: &str) -> Option<Cow<'a, [u8]>> {
    // SAFETY: attached (caller's contract).
    unsafe {
        if ffi::PyUnicode_Check(o) == 0 {
            raise(
                ffi::PyExc_TypeError,
                &format!("{what} must be of type str, not {}", type_name(o)),
            );
            return None;
        }
        #[cfg(not(Py_3_14))]
        if ffi::PyUnicode_IS_ASCII(o) != 0 {
            let len = ffi::PyUnicode_GET_LENGTH(o) as usize;
            return Some(Cow::Borrowed(std::slice::from_raw_parts(
                ffi::PyUnicode_DATA(o).cast::<u8>(),
                len,
            )));
        }
        let Some(b) = Obj::own(ffi::PyUnicode_AsLatin1String(o)) else {
            ffi::PyErr_Clear();
            raise(
                ffi::PyExc_ValueError,
                &format!("{what} must be latin-1 encodable text"),
            );
            return None;
        };
        bytes_of(b.as_ptr()).map(|b| Cow::Owned(b.to_vec()))
    }
}

unsafe extern "C" fn start_response(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls us attached, with `nargs` positional arguments followed by one per
    // name in `kwnames`.
    trampoline("start_response", || unsafe {
        start_response_impl(slf, args, nargs, kwnames)
    })
}

/// # Safety
/// As `start_response`.
unsafe fn start_response_impl(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: attached; argument pointers are borrowed from the caller for this call.
    unsafe {
        let Some(state) = state_of(slf) else {
            return ptr::null_mut();
        };
        let mut slots: [*mut ffi::PyObject; 3] = [ptr::null_mut(); 3];
        if nargs > 3 {
            raise(
                ffi::PyExc_TypeError,
                "start_response() takes at most 3 arguments (status, response_headers, exc_info)",
            );
            return ptr::null_mut();
        }
        for (i, slot) in slots.iter_mut().enumerate().take(nargs as usize) {
            *slot = *args.add(i);
        }
        if !kwnames.is_null() {
            for i in 0..ffi::PyTuple_Size(kwnames) {
                let name = str_text(ffi::PyTuple_GetItem(kwnames, i)).unwrap_or_default();
                let idx = match name.as_str() {
                    "status" => 0,
                    "headers" | "response_headers" => 1,
                    "exc_info" => 2,
                    other => {
                        raise(
                            ffi::PyExc_TypeError,
                            &format!(
                                "start_response() got an unexpected keyword argument '{other}'"
                            ),
                        );
                        return ptr::null_mut();
                    }
                };
                slots[idx] = *args.add(nargs as usize + i as usize);
            }
        }
        let [status, headers, exc_info] = slots;
        if status.is_null() || headers.is_null() {
            raise(
                ffi::PyExc_TypeError,
                "start_response() needs the status and response_headers arguments",
            );
            return ptr::null_mut();
        }
        let has_exc = !exc_info.is_null() && exc_info != ffi::Py_None();
        if has_exc {
            if state.resp.lock().headers_sent {
                // PEP 3333: headers already went out, so re-raise the app's exception.
                if ffi::PyTuple_Check(exc_info) != 0 && ffi::PyTuple_Size(exc_info) == 3 {
                    let t = ffi::PyTuple_GetItem(exc_info, 0);
                    let v = ffi::PyTuple_GetItem(exc_info, 1);
                    let tb = ffi::PyTuple_GetItem(exc_info, 2);
                    let tb = if tb == ffi::Py_None() {
                        ptr::null_mut()
                    } else {
                        tb
                    };
                    #[cfg(not(Py_3_12))]
                    {
                        ffi::Py_IncRef(t);
                        ffi::Py_IncRef(v);
                        ffi::Py_XINCREF(tb);
                        ffi::PyErr_Restore(t, v, tb);
                    }
                    // 3.12+: the exception object is the whole state (PyErr_Restore is
                    // deprecated); a non-exception value is raised as an instance of `t`.
                    #[cfg(Py_3_12)]
                    if ffi::PyExceptionInstance_Check(v) != 0 {
                        if !tb.is_null() {
                            ffi::PyException_SetTraceback(v, tb);
                        }
                        ffi::Py_IncRef(v);
                        ffi::PyErr_SetRaisedException(v);
                    } else {
                        ffi::PyErr_SetObject(t, v);
                    }
                } else {
                    raise(
                        ffi::PyExc_TypeError,
                        "exc_info must be the (type, value, traceback) tuple of sys.exc_info()",
                    );
                }
                return ptr::null_mut();
            }
        } else if state.resp.lock().started.is_some() {
            raise(
                ffi::PyExc_AssertionError,
                "start_response() was called a second time without exc_info (PEP 3333)",
            );
            return ptr::null_mut();
        }
        let Some(status) = latin1_of(status, "status") else {
            return ptr::null_mut();
        };
        let (code, reason) = match parse_status(&status) {
            Ok(v) => v,
            Err(e) => {
                raise(ffi::PyExc_ValueError, &e);
                return ptr::null_mut();
            }
        };
        if ffi::PyList_Check(headers) == 0 {
            raise(
                ffi::PyExc_TypeError,
                &format!(
                    "response headers must be a list, not {}",
                    type_name(headers)
                ),
            );
            return ptr::null_mut();
        }
        let count = ffi::PyList_Size(headers);
        let mut parsed = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        let mut content_length = None;
        for i in 0..count {
            let item = ffi::PyList_GetItem(headers, i);
            if ffi::PyTuple_Check(item) == 0 || ffi::PyTuple_Size(item) != 2 {
                raise(
                    ffi::PyExc_TypeError,
                    &format!(
                        "each response header must be a (name, value) tuple, not {}",
                        type_name(item)
                    ),
                );
                return ptr::null_mut();
            }
            // Each copied at once: nothing borrowed outlives the next call into CPython.
            let Some(name) = latin1_of(ffi::PyTuple_GetItem(item, 0), "header name") else {
                return ptr::null_mut();
            };
            let name = name.into_owned();
            let Some(value) = latin1_of(ffi::PyTuple_GetItem(item, 1), "header value") else {
                return ptr::null_mut();
            };
            let value = value.into_owned();
            if let Err(e) = check_header(&name, &value) {
                raise(ffi::PyExc_ValueError, &e);
                return ptr::null_mut();
            }
            if name.eq_ignore_ascii_case(b"content-length") {
                match parse_content_length(&value) {
                    Ok(n) if content_length.is_none_or(|c| c == n) => content_length = Some(n),
                    Ok(_) => {
                        raise(ffi::PyExc_ValueError, "conflicting Content-Length headers");
                        return ptr::null_mut();
                    }
                    Err(e) => {
                        raise(ffi::PyExc_ValueError, &e);
                        return ptr::null_mut();
                    }
                }
            }
            // Names are tokens (`check_header`), so ASCII: the bytes become the String.
            let name = String::from_utf8(name)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
            parsed.push((name, value));
        }
        state.resp.lock().started = Some(Started {
            status: code,
            reason,
            headers: parsed,
            content_length,
        });
        Obj::own(ffi::PyCFunction_NewEx(
            ptr::addr_of!(WRITE_DEF.0).cast_mut(),
            slf,
            ptr::null_mut(),
        ))
        .map_or(ptr::null_mut(), Obj::into_ptr)
    }
}

unsafe extern "C" fn write(
    slf: *mut ffi::PyObject,
    data: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls us attached with a borrowed argument that lives for the call (so
    // its bytes stay valid while the GIL is released).
    trampoline("write", || unsafe {
        let Some(state) = state_of(slf) else {
            return ptr::null_mut();
        };
        let Some(chunk) = bytes_of(data) else {
            raise(
                ffi::PyExc_TypeError,
                &format!("write() argument must be bytes, not {}", type_name(data)),
            );
            return ptr::null_mut();
        };
        let result = if chunk.is_empty() {
            Ok(())
        } else {
            without_gil(|| state.emit(chunk))
        };
        match result {
            Ok(()) => Obj::borrowed(ffi::Py_None()).into_ptr(),
            Err(EmitError::NotStarted) => {
                raise(
                    ffi::PyExc_AssertionError,
                    "write() called before start_response()",
                );
                ptr::null_mut()
            }
            Err(EmitError::Finished) => {
                raise(
                    ffi::PyExc_ValueError,
                    "write() called after the response ended",
                );
                ptr::null_mut()
            }
            Err(EmitError::Sink(e)) => {
                raise(
                    ffi::PyExc_OSError,
                    &format!("client connection closed: {e}"),
                );
                ptr::null_mut()
            }
        }
    })
}

unsafe extern "C" fn raw_read(
    slf: *mut ffi::PyObject,
    arg: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls us attached with a borrowed argument.
    trampoline("wsgi.input read", || unsafe {
        let Some(state) = state_of(slf) else {
            return ptr::null_mut();
        };
        let n = ffi::PyLong_AsSsize_t(arg);
        if n == -1 && !ffi::PyErr_Occurred().is_null() {
            return ptr::null_mut();
        }
        if n <= 0 {
            return new_bytes(b"").map_or(ptr::null_mut(), Obj::into_ptr);
        }
        // Bytes held in memory are copied with the GIL kept (cheaper than handing it over
        // and back), and only as many as there are; a read that may wait releases it.
        // SAFETY (deref): the body is lent for the running call and its mutex is held.
        let held = state
            .body
            .lock()
            .as_ref()
            .map_or(0, |body| (*body.0).held());
        let mut want = (n as usize).min(MAX_READ);
        if held > 0 {
            want = want.min(held);
        }
        // The bytes object is made first and read into: one copy from the body to Python.
        let writer = ffi::compat::PyBytesWriter_Create(want as ffi::Py_ssize_t);
        if writer.is_null() {
            return ptr::null_mut();
        }
        // SAFETY: the writer holds `want` bytes at this address, reachable by nothing else
        // until it is finished or discarded below (so writing them needs no GIL); as
        // `MaybeUninit` they make no claim about their content.
        let buf = std::slice::from_raw_parts_mut(
            ffi::compat::PyBytesWriter_GetData(writer).cast::<std::mem::MaybeUninit<u8>>(),
            want,
        );
        let mut read = || {
            let mut slot = state.body.lock();
            let Some(body) = slot.as_mut() else {
                return Err(None);
            };
            loop {
                // SAFETY: the body is lent for the running call and the mutex is held.
                match (*body.0).read_uninit(buf) {
                    Ok(k) => return Ok(k.min(want)),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(Some(e)),
                }
            }
        };
        let result: Result<usize, Option<io::Error>> =
            if held > 0 { read() } else { without_gil(read) };
        if result.is_err() {
            ffi::compat::PyBytesWriter_Discard(writer);
        }
        match result {
            Ok(k) => ffi::compat::PyBytesWriter_FinishWithSize(writer, k as ffi::Py_ssize_t),
            Err(None) => {
                raise(
                    ffi::PyExc_ValueError,
                    "wsgi.input read after the request finished",
                );
                ptr::null_mut()
            }
            Err(Some(e)) => {
                raise(
                    ffi::PyExc_OSError,
                    &format!("reading the request body failed: {e}"),
                );
                ptr::null_mut()
            }
        }
    })
}
