//! One interpreter and its tables: [`Interp`] (the main interpreter, group `""`, or an
//! application group's sub-interpreter), the objects its bootstrap made ([`Objects`]), its
//! loaded WSGI and hook scripts ([`ScriptEntry`], [`HookEntry`]), the registry of the thread
//! states worker threads made for it, and the hints added to errors of extension modules that
//! refuse it.
//!
//! CPython rules it keeps: objects never cross interpreters, so every entry of these tables
//! belongs to its interpreter and is released only while attached to it, before it ends.
//! A worker's thread state is made (`Interp::new_tstate`, `PyThreadState_New`, which needs no
//! GIL) and deleted by its thread (`Interp::delete_tstate`) only while the registry says the
//! interpreter has not ended, under the registry lock that ending takes to delete the rest:
//! `Py_EndInterpreter` aborts ("not the last thread") while another thread state of the
//! interpreter is left.

use std::sync::Arc;

use crate::path_map::PathMap;

use parking_lot::Mutex;
use pyo3::ffi;

use super::Stored;
use super::gate::Gate;
use crate::wsgi::{InterpError, PyErrorInfo};

/// A thread state pointer. CPython owns the memory; the protocol in this module decides
/// which thread may use it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct TsPtr(pub(super) *mut ffi::PyThreadState);
// SAFETY: only the thread that created a tstate attaches with it; other threads only compare
// the pointer or delete it while that thread provably cannot use it (gate closed, see shutdown).
unsafe impl Send for TsPtr {}
// SAFETY: as for Send.
unsafe impl Sync for TsPtr {}

#[derive(Clone, Copy)]
pub(super) struct RawInterp(pub(super) *mut ffi::PyInterpreterState);
// SAFETY: the pointer is only handed to CPython functions documented as callable from any
// thread (PyThreadState_New) or used while attached to that interpreter.
unsafe impl Send for RawInterp {}
// SAFETY: as for Send.
unsafe impl Sync for RawInterp {}

/// A cacheable environ variable's last value, and the `str` made for it. The bytes are held
/// in the entry itself up to 30 of them (a host, a port, an address, a method, a path): every
/// request compares them, and bytes of their own allocation, scattered on the heap, were out
/// of the cache by the next request (`perf`: the comparisons' loads of them were 5 % of a
/// hello request's CPU).
pub(crate) type LastValue = Option<(smallvec::SmallVec<[u8; 30]>, Stored)>;

/// Objects made in one interpreter by the bootstrap, used on every request there.
pub(crate) struct Objects {
    pub keys: Vec<Stored>,
    /// Constant environ values (`environ::VALUES`), this interpreter's own.
    pub values: Vec<Stored>,
    pub input_type: Stored,
    pub file_wrapper: Stored,
    pub file_range: Stored,
    pub format_exc: Stored,
    pub load_script: Stored,
    pub load_module: Stored,
    pub log_writer: Stored,
    pub join_threads: Stored,
    pub guard_shutdown: Stored,
    pub run_atexit: Stored,
    pub wsgi_version: Stored,
    pub mod_wsgi_version: Stored,
    /// `apache.version`.
    pub apache_version: Stored,
    /// `0.0`: `mod_wsgi.queue_start` and `daemon_start` in embedded mode.
    pub zero_seconds: Stored,
    /// This process's pid as a str: `mod_wsgi.server_pid` in embedded mode.
    pub own_pid: Stored,
    pub group_name: Stored,
    pub request_timeout: Stored,
    /// `_wsgi_rs.tracking`: a list, non-empty once requests are tracked for `mod_wsgi`.
    pub tracking: Stored,
    pub begin_request: Stored,
    pub end_request: Stored,
    pub request_exception: Stored,
    pub publish_stopping: Stored,
    /// `_wsgi_rs.unflushed`: the streams holding a partial line (flushed after each request).
    pub unflushed: Stored,
    pub flush_streams: Stored,
    /// The last value of each cacheable environ variable (`environ::cacheable`), indexed as
    /// `environ::KEYS`, with the `str` made for it. Locked only while attached, never across
    /// a call that may run Python code; a thread that finds it taken decodes afresh.
    pub last_values: parking_lot::Mutex<Vec<LastValue>>,
    /// The constant keys of an application call's environ (`template`), one dict for each
    /// application recently served, locked as `last_values` is.
    pub environ_template: parking_lot::Mutex<Vec<super::template::EnvironTemplate>>,
    /// This process's pid, as `own_pid` shows it (the interpreter was made in this process).
    pub own_pid_number: u32,
    /// References that response chunks lent to the front dropped off this interpreter.
    pub release_queue: std::sync::Arc<super::shared::ReleaseQueue>,
}

impl Objects {
    /// # Safety
    /// Attached to the owning interpreter.
    unsafe fn release(self) {
        // SAFETY: attached to the owner (caller's contract).
        unsafe {
            self.release_queue.close();
            for k in self.keys.into_iter().chain(self.values) {
                k.release();
            }
            for (_, s) in self.last_values.into_inner().into_iter().flatten() {
                s.release();
            }
            for template in self.environ_template.into_inner() {
                template.release();
            }
            for s in [
                self.input_type,
                self.file_wrapper,
                self.file_range,
                self.format_exc,
                self.load_script,
                self.load_module,
                self.log_writer,
                self.join_threads,
                self.guard_shutdown,
                self.run_atexit,
                self.wsgi_version,
                self.mod_wsgi_version,
                self.apache_version,
                self.zero_seconds,
                self.own_pid,
                self.group_name,
                self.request_timeout,
                self.tracking,
                self.begin_request,
                self.end_request,
                self.request_exception,
                self.publish_stopping,
                self.unflushed,
                self.flush_streams,
            ] {
                s.release();
            }
        }
    }
}

/// A loaded WSGI script.
pub(crate) struct ScriptEntry {
    pub module: Stored,
    /// The callable `app` is (the module's attribute of that name when it was loaded).
    pub callable: String,
    pub app: Stored,
    pub errors: Stored,
    pub mtime: Option<std::time::SystemTime>,
}

impl ScriptEntry {
    /// # Safety
    /// Attached to the owning interpreter.
    pub(crate) unsafe fn release(self) {
        // SAFETY: attached to the owner (caller's contract).
        unsafe {
            self.module.release();
            self.app.release();
            self.errors.release();
        }
    }
}

/// A loaded hook script (access, auth, dispatch): its module and its `wsgi.errors` log.
pub(crate) struct HookEntry {
    pub module: Stored,
    pub errors: Stored,
    pub mtime: Option<std::time::SystemTime>,
}

impl HookEntry {
    /// # Safety
    /// Attached to the owning interpreter.
    pub(crate) unsafe fn release(self) {
        // SAFETY: attached to the owner (caller's contract).
        unsafe {
            self.module.release();
            self.errors.release();
        }
    }
}

pub(super) struct Registry {
    pub(super) ended: bool,
    pub(super) worker_tstates: Vec<TsPtr>,
}

/// One interpreter: the main one (`""`) or a sub-interpreter for an application group.
pub(crate) struct Interp {
    pub name: String,
    pub(super) raw: RawInterp,
    pub is_main: bool,
    /// A sub-interpreter with its own GIL (`WSGIPerInterpreterGIL On`, Python 3.12+).
    pub own_gil: bool,
    pub(super) main: Option<Arc<Interp>>,
    pub(super) gate: Arc<Gate>,
    pub(super) registry: Mutex<Registry>,
    pub(super) objects: Mutex<Option<Arc<Objects>>>,
    pub scripts: Mutex<PathMap<ScriptEntry>>,
    /// Hook scripts, apart from WSGI scripts: one file may be both, with other functions.
    pub hooks: Mutex<PathMap<HookEntry>>,
    pub(super) creation_ts: TsPtr,
}

impl Interp {
    /// A new interpreter's entry, its tables empty: the main interpreter when `main` is `None`,
    /// else a sub-interpreter of it. `creation_ts` is the lifecycle thread's thread state for
    /// it, which ends it.
    pub(super) fn new(
        name: &str,
        raw: RawInterp,
        own_gil: bool,
        main: Option<Arc<Interp>>,
        gate: Arc<Gate>,
        objects: Option<Arc<Objects>>,
        creation_ts: TsPtr,
    ) -> Arc<Interp> {
        Arc::new(Interp {
            name: name.to_string(),
            raw,
            is_main: main.is_none(),
            own_gil,
            main,
            gate,
            registry: Mutex::new(Registry {
                ended: false,
                worker_tstates: Vec::new(),
            }),
            objects: Mutex::new(objects),
            scripts: Mutex::new(PathMap::default()),
            hooks: Mutex::new(PathMap::default()),
            creation_ts,
        })
    }

    /// Releases what its tables hold: the loaded scripts, the hook scripts and the object
    /// table (unless a reference to it is still out, which is then leaked).
    ///
    /// # Safety
    /// Attached to this interpreter, which owns `objects`.
    pub(super) unsafe fn release_tables(&self, objects: Arc<Objects>) {
        // SAFETY: attached to this interpreter, which owns every entry (caller's contract).
        unsafe {
            for (_, entry) in self.scripts.lock().drain() {
                entry.release();
            }
            for (_, entry) in self.hooks.lock().drain() {
                entry.release();
            }
            match Arc::try_unwrap(objects) {
                Ok(o) => o.release(),
                Err(shared) => std::mem::forget(shared),
            }
        }
    }

    /// The log name: "main interpreter" or "application group 'x'".
    pub fn display(&self) -> String {
        display_name(&self.name)
    }

    /// Adds what to do to an error caused by an extension module that refuses interpreters
    /// with their own GIL (CPython's ImportError names the module, but not the remedy).
    pub(crate) fn explain(&self, mut e: PyErrorInfo) -> PyErrorInfo {
        let hint = self
            .own_gil
            .then(|| own_gil_hint(&e))
            .flatten()
            .or_else(|| one_interpreter_hint(&e));
        if let Some(hint) = hint {
            e.message = format!("{}; {hint}", e.message);
            if !e.traceback.ends_with('\n') && !e.traceback.is_empty() {
                e.traceback.push('\n');
            }
            e.traceback.push_str(&hint);
            e.traceback.push('\n');
        }
        e
    }

    /// This interpreter's object table (`None` once it ended).
    pub(crate) fn objects(&self) -> Option<Arc<Objects>> {
        self.objects.lock().clone()
    }

    pub(super) fn new_tstate(&self) -> Result<TsPtr, InterpError> {
        let mut reg = self.registry.lock();
        if reg.ended {
            return Err(InterpError::ShuttingDown);
        }
        // SAFETY: the interpreter is alive (not ended, and ending needs the registry lock we
        // hold); PyThreadState_New does not need the GIL (CPython documents that it need not
        // be held, and 3.11-3.13 were measured calling it without).
        let ts = unsafe { ffi::PyThreadState_New(self.raw.0) };
        if ts.is_null() {
            return Err(InterpError::ThreadState(self.name.clone()));
        }
        reg.worker_tstates.push(TsPtr(ts));
        Ok(TsPtr(ts))
    }

    /// Deletes `ts`, a thread state the calling thread made for this interpreter with
    /// `new_tstate`, unless shutdown is under way or done (then finalisation deletes it).
    ///
    /// # Safety
    /// `ts` was made on the calling thread for this interpreter, and the thread is not attached.
    pub(super) unsafe fn delete_tstate(&self, ts: TsPtr) {
        let Some(_admitted) = self.gate.enter() else {
            return;
        };
        let mut reg = self.registry.lock();
        if reg.ended {
            return;
        }
        reg.worker_tstates.retain(|t| *t != ts);
        // SAFETY: ts was made on this thread for this live interpreter (registry not ended,
        // and shutdown waits for the gate), and this thread is not attached.
        unsafe {
            ffi::PyEval_RestoreThread(ts.0);
            ffi::PyThreadState_Clear(ts.0);
            ffi::PyThreadState_DeleteCurrent();
        }
    }
}

/// CPython's refusal (3.12+: `_PyImport_CheckSubinterpIncompatibleExtensionAllowed`).
const REFUSED: &str = " does not support loading in subinterpreters";

/// The remedy for an extension refusing own-GIL interpreters, naming the module, if `e` (or
/// an exception chained in its traceback) is that refusal.
pub(crate) fn own_gil_hint(e: &PyErrorInfo) -> Option<String> {
    let text = if e.message.contains(REFUSED) {
        &e.message
    } else {
        &e.traceback
    };
    let end = text.find(REFUSED)?;
    let module = text[..end].rsplit("module ").next()?.trim();
    (!module.is_empty() && !module.contains(char::is_whitespace)).then(|| {
        format!(
            "the extension module `{module}` cannot be loaded into a sub-interpreter with its own GIL (WSGIPerInterpreterGIL On): run this application in the main interpreter with `WSGIApplicationGroup %{{GLOBAL}}`, or set `WSGIPerInterpreterGIL Off`"
        )
    })
}

/// What CPython and the extension frameworks say when a module that loads into only one
/// interpreter per process (PyO3 and Cython modules, numpy) is imported into a second one.
const ONE_INTERPRETER_ONLY: [&str; 4] = [
    "PyO3 modules do not yet support subinterpreters",
    "cannot load module more than once per process",
    "this module can only be loaded into one interpreter per process",
    "does not properly support sub-interpreters",
];

/// The remedy when `e` is an extension module refusing a second interpreter.
pub(crate) fn one_interpreter_hint(e: &PyErrorInfo) -> Option<String> {
    let refused = ONE_INTERPRETER_ONLY
        .iter()
        .any(|m| e.message.contains(m) || e.traceback.contains(m));
    refused.then(|| {
        "this extension module (built with PyO3 or Cython, or like numpy) loads into only one Python interpreter per process, and another application group loaded it first: run the applications that use it in the main interpreter with `WSGIApplicationGroup %{GLOBAL}` (each in its own daemon process group if several need it)".to_string()
    })
}

pub(super) fn display_name(name: &str) -> String {
    if name.is_empty() {
        "main interpreter".to_string()
    } else {
        format!("application group '{name}'")
    }
}
