//! CPython start-up and finalisation on a dedicated "python main" thread, sub-interpreters,
//! per-(thread, interpreter) thread states and attaching. The CPython behaviour this follows
//! (call sequences, what aborts or deadlocks on which version) is in ARCHITECTURE.md,
//! "Sub-interpreters and the GIL: what CPython does".
//!
//! Lock order, everywhere: a Rust mutex may be held while waiting for the GIL, never the
//! reverse; code that holds the GIL and needs a contended mutex releases the GIL first.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::CString;
use std::marker::PhantomData;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::ptr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex};
use pyo3::ffi;

use super::{
    Obj, Stored, call, cstring, fs_str, getattr, new_bytes, new_str, str_list, take_error,
};
use crate::config::StartError;
use crate::environ::{KEYS, MOD_WSGI_VERSION, VALUES};
use crate::wsgi::{InterpError, PyErrorInfo};

/// The `_wsgi_rs` helper module's source, run in every interpreter.
const BOOTSTRAP: &str = concat!(include_str!("bootstrap.py"), "\0");
/// The `mod_wsgi` module's source, executed by `_wsgi_rs.install_mod_wsgi`.
const MOD_WSGI: &str = include_str!("mod_wsgi.py");

/// A thread state pointer. CPython owns the memory; the protocol in this module decides
/// which thread may use it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct TsPtr(*mut ffi::PyThreadState);
// SAFETY: only the thread that created a tstate attaches with it; other threads only compare
// the pointer or delete it while that thread provably cannot use it (gate closed, see shutdown).
unsafe impl Send for TsPtr {}
// SAFETY: as for Send.
unsafe impl Sync for TsPtr {}

#[derive(Clone, Copy)]
struct RawInterp(*mut ffi::PyInterpreterState);
// SAFETY: the pointer is only handed to CPython functions documented as callable from any
// thread (PyThreadState_New) or used while attached to that interpreter.
unsafe impl Send for RawInterp {}
// SAFETY: as for Send.
unsafe impl Sync for RawInterp {}

/// Admission of work into Python: shutdown closes it and waits for the calls inside to leave.
pub(crate) struct Gate {
    state: Mutex<GateState>,
    idle: Condvar,
}

struct GateState {
    closing: bool,
    active: usize,
}

/// One admitted unit of work; leaving decrements the count.
pub(crate) struct GateGuard<'a>(&'a Gate);

impl Drop for GateGuard<'_> {
    fn drop(&mut self) {
        let mut s = self.0.state.lock();
        s.active -= 1;
        if s.active == 0 {
            self.0.idle.notify_all();
        }
    }
}

impl Gate {
    fn new() -> Gate {
        Gate {
            state: Mutex::new(GateState {
                closing: false,
                active: 0,
            }),
            idle: Condvar::new(),
        }
    }

    fn enter(&self) -> Option<GateGuard<'_>> {
        let mut s = self.state.lock();
        if s.closing {
            return None;
        }
        s.active += 1;
        Some(GateGuard(self))
    }

    /// Refuses new work and waits until `deadline` for running work; returns how many calls
    /// are still inside.
    fn close(&self, deadline: Instant) -> usize {
        let mut s = self.state.lock();
        s.closing = true;
        while s.active > 0 {
            if self.idle.wait_until(&mut s, deadline).timed_out() {
                break;
            }
        }
        s.active
    }
}

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
}

impl Objects {
    /// # Safety
    /// Attached to the owning interpreter.
    unsafe fn release(self) {
        // SAFETY: attached to the owner (caller's contract).
        unsafe {
            for k in self.keys.into_iter().chain(self.values) {
                k.release();
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

struct Registry {
    ended: bool,
    worker_tstates: Vec<TsPtr>,
}

/// One interpreter: the main one (`""`) or a sub-interpreter for an application group.
pub(crate) struct Interp {
    pub name: String,
    raw: RawInterp,
    pub is_main: bool,
    /// A sub-interpreter with its own GIL (`WSGIPerInterpreterGIL On`, Python 3.12+).
    pub own_gil: bool,
    main: Option<Arc<Interp>>,
    gate: Arc<Gate>,
    registry: Mutex<Registry>,
    objects: Mutex<Option<Arc<Objects>>>,
    pub scripts: Mutex<HashMap<PathBuf, ScriptEntry>>,
    /// Hook scripts, apart from WSGI scripts: one file may be both, with other functions.
    pub hooks: Mutex<HashMap<PathBuf, HookEntry>>,
    creation_ts: TsPtr,
}

impl Interp {
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

    fn new_tstate(&self) -> Result<TsPtr, InterpError> {
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

    /// Runs `f` attached to this interpreter on the calling thread.
    pub(crate) fn run<R>(
        self: &Arc<Self>,
        f: impl FnOnce(&Attached<'_>) -> R,
    ) -> Result<R, InterpError> {
        let me = Arc::as_ptr(self);
        let current = ATTACHED.with(Cell::get);
        if current == me {
            return Ok(f(&Attached::new(self)));
        }
        if !current.is_null() {
            // SAFETY: the interpreter we are attached to is kept alive by the outer run frame.
            let other = unsafe { &*current };
            return Err(InterpError::NestedAttach(other.name.clone()));
        }
        let _admitted = self.gate.enter().ok_or(InterpError::ShuttingDown)?;
        let ts = tstate_for(self)?;
        // SAFETY: ts was created on this thread for this interpreter, which cannot end while we
        // are admitted by the gate; this thread holds no GIL (ATTACHED is null).
        unsafe { acquire(self, ts) };
        ATTACHED.with(|a| a.set(me));
        let _detach = DetachOnDrop;
        Ok(f(&Attached::new(self)))
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

/// The shared-GIL interpreter that last took the shared GIL (a hint, see [`acquire`]).
#[cfg(not(Py_3_13))]
static HOLDER: Mutex<Option<std::sync::Weak<Interp>>> = Mutex::new(None);

#[cfg(not(Py_3_13))]
thread_local! {
    /// The shared-GIL interpreter this thread last waited through in [`acquire`]. When this
    /// thread lets the GIL go again (blocking I/O, end of the call), the thread it took the GIL
    /// from most likely takes it back inside CPython, which [`acquire`] never sees: the hint
    /// must point at that interpreter again, or the next waiter would queue behind it unfairly.
    static WAITED_VIA: RefCell<Option<std::sync::Weak<Interp>>> = const { RefCell::new(None) };
}

/// Keeps [`HOLDER`] right when the calling thread is about to release the shared GIL it holds
/// for `interp` (null: not attached through `run`).
pub(crate) fn before_release(interp: *const Interp) {
    #[cfg(not(Py_3_13))]
    {
        if interp.is_null() {
            return;
        }
        let via = WAITED_VIA
            .try_with(|v| v.borrow().as_ref().and_then(std::sync::Weak::upgrade))
            .ok()
            .flatten();
        if let Some(via) = via {
            let mut holder = HOLDER.lock();
            if holder
                .as_ref()
                .is_some_and(|h| std::ptr::eq(h.as_ptr(), interp))
            {
                *holder = Some(Arc::downgrade(&via));
            }
        }
    }
    #[cfg(Py_3_13)]
    let _ = interp;
}

/// Attaches the calling thread with `ts`, its thread state for `interp`: `PyEval_RestoreThread`,
/// but on Python 3.11/3.12 fair between interpreters that share the GIL.
///
/// There, a thread running CPU-bound code in one interpreter keeps the GIL until it blocks or
/// returns when the waiter is a thread of another interpreter (measured: the waiter got it
/// after 79 ms on 3.11 and 129 ms on 3.12, when the call ended, against 5 ms, the switch
/// interval, when it waited for the same interpreter; 3.13 hands over at the switch interval
/// either way). The likely cause, not checked in CPython's source: the waiter posts its "drop
/// the GIL" request to *its own* interpreter, which the running thread never looks at. So
/// when another shared-GIL interpreter holds it, we wait as a thread of *that* interpreter
/// (our own thread state for it), which makes its running thread hand over after
/// the switch interval as between threads of one interpreter, then switch to `ts` with
/// `PyThreadState_Swap` while holding the shared GIL (the documented way to change
/// interpreters under one GIL).
///
/// # Safety
/// `ts` was created on this thread for `interp`, which is alive and admitted by the gate; the
/// thread holds no GIL.
pub(crate) unsafe fn acquire(interp: &Arc<Interp>, ts: TsPtr) {
    #[cfg(not(Py_3_13))]
    if !interp.own_gil {
        let holder = HOLDER.lock().as_ref().and_then(std::sync::Weak::upgrade);
        let other = holder.filter(|h| !Arc::ptr_eq(h, interp) && !h.own_gil);
        // Only while the gate admits us: every interpreter is then alive, and `tstate_for`
        // refuses one whose registry ended.
        if let Some((holder, via)) = other.and_then(|h| tstate_for(&h).ok().map(|t| (h, t))) {
            // SAFETY: `via` is this thread's tstate for the holder interpreter, alive (gate);
            // once it returns we hold the shared GIL, under which switching to our tstate for
            // another shared-GIL interpreter is allowed; `via` is left detached.
            unsafe {
                ffi::PyEval_RestoreThread(via.0);
                ffi::PyThreadState_Swap(ts.0);
            }
            *HOLDER.lock() = Some(Arc::downgrade(interp));
            let _ = WAITED_VIA.try_with(|v| *v.borrow_mut() = Some(Arc::downgrade(&holder)));
            return;
        }
        let _ = WAITED_VIA.try_with(|v| *v.borrow_mut() = None);
    }
    // SAFETY: the caller's contract.
    unsafe { ffi::PyEval_RestoreThread(ts.0) };
    #[cfg(not(Py_3_13))]
    if !interp.own_gil {
        *HOLDER.lock() = Some(Arc::downgrade(interp));
    }
}

/// [`acquire`] for re-attaching after `without_gil`, from the interpreter pointer the enclosing
/// `run` frame marked.
///
/// # Safety
/// `interp` is the interpreter of an enclosing `run` frame on this thread and `ts` this
/// thread's tstate for it, detached; the thread holds no GIL.
pub(crate) unsafe fn reacquire(interp: *const Interp, ts: *mut ffi::PyThreadState) {
    let found = STATES
        .try_with(|s| {
            s.borrow()
                .0
                .iter()
                .find(|(i, t)| Arc::as_ptr(i) == interp && t.0 == ts)
                .map(|(i, _)| i.clone())
        })
        .ok()
        .flatten();
    match found {
        // SAFETY: the caller's contract; the Arc is the one `run` attached with.
        Some(arc) => unsafe { acquire(&arc, TsPtr(ts)) },
        // SAFETY: the caller's contract.
        None => unsafe {
            ffi::PyEval_RestoreThread(ts);
        },
    }
}

fn display_name(name: &str) -> String {
    if name.is_empty() {
        "main interpreter".to_string()
    } else {
        format!("application group '{name}'")
    }
}

struct DetachOnDrop;

impl Drop for DetachOnDrop {
    fn drop(&mut self) {
        before_release(ATTACHED.with(Cell::get));
        ATTACHED.with(|a| a.set(ptr::null()));
        // SAFETY: created right after PyEval_RestoreThread in `run`, so this thread is attached.
        unsafe {
            if std::thread::panicking() {
                ffi::PyErr_Clear();
            }
            ffi::PyEval_SaveThread();
        }
    }
}

thread_local! {
    /// The interpreter this thread is attached to through `Interp::run`, or null.
    static ATTACHED: Cell<*const Interp> = const { Cell::new(ptr::null()) };
    /// This thread's thread states, one per interpreter it has used.
    static STATES: RefCell<ThreadStates> = const { RefCell::new(ThreadStates(Vec::new())) };
}

struct ThreadStates(Vec<(Arc<Interp>, TsPtr)>);

impl Drop for ThreadStates {
    fn drop(&mut self) {
        release_states(std::mem::take(&mut self.0));
    }
}

fn tstate_for(interp: &Arc<Interp>) -> Result<TsPtr, InterpError> {
    STATES
        .try_with(|states| {
            let mut states = states.borrow_mut();
            if let Some((_, ts)) = states.0.iter().find(|(i, _)| Arc::ptr_eq(i, interp)) {
                return Ok(*ts);
            }
            // The thread's first tstate is a main-interpreter one, so that on 3.11
            // PyGILState_Ensure (C extensions) finds the main interpreter: there it picks the
            // first tstate ever created on the thread, whatever its interpreter (3.12+ picks
            // the one most recently attached).
            if let Some(main) = &interp.main {
                if !states.0.iter().any(|(i, _)| i.is_main) {
                    let ts = main.new_tstate()?;
                    states.0.push((main.clone(), ts));
                }
            }
            let ts = interp.new_tstate()?;
            states.0.push((interp.clone(), ts));
            Ok(ts)
        })
        .unwrap_or_else(|_| Err(InterpError::ThreadState(interp.name.clone())))
}

/// The group the calling thread is attached to through `Interp::run`, if any.
pub(crate) fn attached_group() -> Option<String> {
    let current = ATTACHED.with(Cell::get);
    // SAFETY: a non-null mark points at the interpreter of an enclosing `run` frame on this
    // thread, which keeps it alive.
    (!current.is_null()).then(|| unsafe { &*current }.name.clone())
}

/// [`Interp::explain`] for the interpreter the calling thread is attached to (unchanged when
/// not attached).
pub(crate) fn explain_attached(e: PyErrorInfo) -> PyErrorInfo {
    let current = ATTACHED.with(Cell::get);
    if current.is_null() {
        return e;
    }
    // SAFETY: a non-null mark points at the interpreter of an enclosing `run` frame on this
    // thread, which keeps it alive.
    unsafe { &*current }.explain(e)
}

/// Marks the calling thread attached to `p` (or detached for null); returns the previous mark.
pub(crate) fn set_attached(p: *const Interp) -> *const Interp {
    ATTACHED.with(|a| a.replace(p))
}

/// Deletes the calling thread's thread states (worker pools call this before a thread
/// exits; the thread-local destructor does it otherwise).
pub(crate) fn release_current_thread() {
    if ATTACHED.with(Cell::get).is_null() {
        let taken = STATES
            .try_with(|s| std::mem::take(&mut s.borrow_mut().0))
            .unwrap_or_default();
        release_states(taken);
    }
}

fn release_states(states: Vec<(Arc<Interp>, TsPtr)>) {
    for (interp, ts) in states.into_iter().rev() {
        let Some(_admitted) = interp.gate.enter() else {
            continue;
        };
        let mut reg = interp.registry.lock();
        if reg.ended {
            continue;
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

/// Proof that the calling thread is attached to an interpreter (holds its GIL through its own
/// thread state). It cannot leave the thread: it is neither `Send` nor `Sync`, so neither it
/// nor a reference to it can reach another thread, which holds no GIL.
///
/// ```compile_fail
/// fn send<T: Send>() {}
/// send::<wsgi_interp::Attached<'static>>();
/// ```
///
/// ```compile_fail
/// fn share<T: Sync>() {}
/// share::<wsgi_interp::Attached<'static>>();
/// ```
///
/// ```compile_fail
/// // Smuggling it out of `run` into a thread does not compile either.
/// fn leak(h: &wsgi_interp::InterpreterHandle) {
///     h.run(|py| std::thread::scope(|s| { s.spawn(|| py.eval("1")); })).unwrap();
/// }
/// ```
///
/// The handle itself is what crosses threads (this compiles):
///
/// ```no_run
/// fn send<T: Send + Sync>() {}
/// send::<wsgi_interp::InterpreterHandle>();
/// fn ok(h: &wsgi_interp::InterpreterHandle) {
///     std::thread::scope(|s| {
///         s.spawn(|| h.run(|py| py.eval("1")));
///     });
/// }
/// ```
pub struct Attached<'a> {
    interp: &'a Arc<Interp>,
    _not_send: PhantomData<*const ()>,
}

impl<'a> Attached<'a> {
    fn new(interp: &'a Arc<Interp>) -> Self {
        Attached {
            interp,
            _not_send: PhantomData,
        }
    }

    pub(crate) fn interp(&self) -> &'a Arc<Interp> {
        self.interp
    }

    /// The application group name (`""` for the main interpreter).
    pub fn group(&self) -> &str {
        &self.interp.name
    }

    /// Builds and drops the environ of a request; returns its number of keys. A benchmark
    /// hook, not an API.
    #[doc(hidden)]
    pub fn bench_environ(&self, head: &crate::RequestHead, opts: &crate::CallOptions) -> usize {
        call::environ_size(self, head, opts)
    }

    /// Raises `RequestTimeout` (a `BaseException`) in this interpreter's thread `thread` (its
    /// `threading.get_ident()`, the thread's pthread id) the next time that thread runs Python
    /// code; a thread blocked in C (a `sleep`, a socket read) sees it only when it returns to
    /// Python. Returns whether such a thread runs in this interpreter.
    pub fn interrupt_thread(&self, thread: u64) -> bool {
        let Some(objects) = self.interp.objects() else {
            return false;
        };
        // SAFETY: `self` proves we are attached to this interpreter, which owns the exception
        // type; CPython only looks the thread up and stores a new reference for it.
        unsafe {
            ffi::PyThreadState_SetAsyncExc(
                thread as std::ffi::c_long,
                objects.request_timeout.ptr(),
            ) == 1
        }
    }

    /// Executes statements in this interpreter's `__main__` module.
    pub fn exec(&self, code: &str) -> Result<(), PyErrorInfo> {
        self.run_main(code, ffi::Py_file_input).map(|_| ())
    }

    /// Evaluates an expression in `__main__` and returns its `str()`.
    pub fn eval(&self, expr: &str) -> Result<String, PyErrorInfo> {
        self.run_main(expr, ffi::Py_eval_input)
    }

    fn format_exc(&self) -> *mut ffi::PyObject {
        self.interp
            .objects()
            .map_or(ptr::null_mut(), |o| o.format_exc.ptr())
    }

    fn run_main(&self, code: &str, mode: std::ffi::c_int) -> Result<String, PyErrorInfo> {
        let code = cstring(code);
        // SAFETY: `self` proves we are attached to this interpreter; the module and dict are
        // borrowed references owned by sys.modules; results are owned via Obj.
        unsafe {
            let module = ffi::PyImport_AddModule(c"__main__".as_ptr());
            if module.is_null() {
                return Err(take_error(self.format_exc()));
            }
            let dict = ffi::PyModule_GetDict(module);
            match Obj::own(ffi::PyRun_StringFlags(
                code.as_ptr(),
                mode,
                dict,
                dict,
                ptr::null_mut(),
            )) {
                Some(r) => Ok(super::display(r.as_ptr())),
                None => Err(self.interp.explain(take_error(self.format_exc()))),
            }
        }
    }
}

/// What the Python main thread is asked to do.
enum Command {
    Create {
        name: String,
        reply: Sender<Result<Arc<Interp>, InterpError>>,
    },
    Shutdown {
        join_timeout: Duration,
        reply: Sender<crate::ShutdownReport>,
    },
}

/// What CPython is started with, prepared by `Runtime::start`.
pub(crate) struct StartParams {
    pub program_name: CString,
    pub home: Option<CString>,
    pub optimize: i32,
    pub write_bytecode: bool,
    pub python_path: Vec<PathBuf>,
    pub environ: Vec<(Vec<u8>, Vec<u8>)>,
    /// Some sub-interpreter may get its own GIL (checked: only on Python 3.12+); which do,
    /// `rules` say.
    pub own_gil: bool,
    /// Each interpreter's settings, by its application group.
    pub rules: wsgi_config::InterpreterRules,
    /// What `mod_wsgi` says of the process in every interpreter.
    pub process: ProcessFacts,
}

/// `mod_wsgi.process_group`, `maximum_processes` and `threads_per_process`.
pub(crate) struct ProcessFacts {
    pub group: String,
    pub processes: u32,
    pub threads: u32,
}

/// The running CPython: its main interpreter and the thread that owns start and finalisation.
pub(crate) struct Core {
    pub main: Arc<Interp>,
    gate: Arc<Gate>,
    commands: Sender<Command>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Core {
    /// Starts CPython on a new "wsgi-python-main" thread and waits until it is ready.
    pub(crate) fn start(params: StartParams) -> Result<Core, StartError> {
        let gate = Arc::new(Gate::new());
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
        let (cmd_tx, cmd_rx) = crossbeam_channel::unbounded();
        let thread_gate = gate.clone();
        let thread = std::thread::Builder::new()
            .name("wsgi-python-main".into())
            .spawn(move || python_main(params, thread_gate, ready_tx, cmd_rx))
            .map_err(StartError::Thread)?;
        match ready_rx.recv() {
            Ok(Ok(main)) => Ok(Core {
                main,
                gate,
                commands: cmd_tx,
                thread: Mutex::new(Some(thread)),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err(StartError::Init {
                func: "wsgi-python-main".into(),
                message: "the Python main thread exited during start-up".into(),
            }),
        }
    }

    /// Creates a sub-interpreter on the Python main thread.
    pub(crate) fn create(&self, name: &str) -> Result<Arc<Interp>, InterpError> {
        if let Some(current) = attached_group() {
            return Err(InterpError::NestedAttach(current));
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.commands
            .send(Command::Create {
                name: name.to_string(),
                reply: tx,
            })
            .map_err(|_| InterpError::ShuttingDown)?;
        rx.recv().map_err(|_| InterpError::ShuttingDown)?
    }

    /// Bounded shutdown (see `Runtime::shutdown`).
    pub(crate) fn shutdown(
        &self,
        drain: Duration,
        join_timeout: Duration,
    ) -> crate::ShutdownReport {
        let start = Instant::now();
        let busy = self.gate.close(start + drain);
        if busy > 0 {
            tracing::error!(
                calls = busy,
                "Python shutdown skipped: {busy} call(s) still running after {drain:?}; the process can still exit"
            );
            return crate::ShutdownReport {
                busy_calls: busy,
                elapsed: start.elapsed(),
                ..Default::default()
            };
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        let mut report = if self
            .commands
            .send(Command::Shutdown {
                join_timeout,
                reply: tx,
            })
            .is_ok()
        {
            rx.recv().unwrap_or_default()
        } else {
            crate::ShutdownReport::default()
        };
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
        report.elapsed = start.elapsed();
        report
    }
}

fn python_main(
    params: StartParams,
    gate: Arc<Gate>,
    ready: Sender<Result<Arc<Interp>, StartError>>,
    commands: Receiver<Command>,
) {
    // SAFETY: Runtime::start lets this happen once per process, and this thread is the one
    // that will finalise (on 3.11, Py_FinalizeEx called from another thread hung, waiting for
    // this thread's `threading` state).
    let main_ts = match unsafe { initialize(&params) } {
        Ok(ts) => ts,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let main = Arc::new(Interp {
        name: String::new(),
        // SAFETY: CPython is initialised.
        raw: RawInterp(unsafe { ffi::PyInterpreterState_Main() }),
        is_main: true,
        own_gil: false,
        main: None,
        gate: gate.clone(),
        registry: Mutex::new(Registry {
            ended: false,
            worker_tstates: Vec::new(),
        }),
        objects: Mutex::new(None),
        scripts: Mutex::new(HashMap::new()),
        hooks: Mutex::new(HashMap::new()),
        creation_ts: main_ts,
    });
    // SAFETY: attach the initialising tstate (detached by `initialize`) on its own thread.
    unsafe { ffi::PyEval_RestoreThread(main_ts.0) };
    // SAFETY: attached to the main interpreter.
    let objects = unsafe { bootstrap("", None, &params) };
    if let (Ok(o), true) = (&objects, params.own_gil) {
        // SAFETY: attached to the main interpreter, which owns `o`.
        unsafe { preload_for_own_gil(o) };
    }
    // SAFETY: attached; release the GIL for the workers.
    unsafe { ffi::PyEval_SaveThread() };
    match objects {
        Ok(o) => *main.objects.lock() = Some(Arc::new(o)),
        Err(e) => {
            let _ = ready.send(Err(StartError::Setup(e)));
            return;
        }
    }
    if ready.send(Ok(main.clone())).is_err() {
        return;
    }
    let mut subs: Vec<Arc<Interp>> = Vec::new();
    for command in commands.iter() {
        match command {
            Command::Create { name, reply } => {
                // SAFETY: main_ts is this thread's detached main tstate.
                let created = unsafe { create_sub(main_ts, &name, &params, &gate, &main) };
                if let Ok(i) = &created {
                    subs.push(i.clone());
                }
                let _ = reply.send(created);
            }
            Command::Shutdown {
                join_timeout,
                reply,
            } => {
                // SAFETY: on the initialising thread, with the gate closed and drained.
                let report = unsafe { finish(main_ts, &main, &subs, join_timeout) };
                let _ = reply.send(report);
                return;
            }
        }
    }
}

/// `Py_InitializeFromConfig` with mod_wsgi's settings; returns the detached main tstate.
///
/// # Safety
/// Called once per process, on the thread that will finalise.
unsafe fn initialize(p: &StartParams) -> Result<TsPtr, StartError> {
    let status_err = |st: ffi::PyStatus| {
        let text = |c: *const std::ffi::c_char| {
            if c.is_null() {
                String::new()
            } else {
                // SAFETY: CPython status strings are static NUL-terminated strings.
                unsafe { std::ffi::CStr::from_ptr(c) }
                    .to_string_lossy()
                    .into_owned()
            }
        };
        StartError::Init {
            func: text(st.func),
            message: text(st.err_msg),
        }
    };
    let mut cfg = std::mem::MaybeUninit::<ffi::PyConfig>::uninit();
    // SAFETY: PyConfig_InitPythonConfig fully initialises the struct; every later call gets a
    // valid config pointer and NUL-terminated strings that outlive the call; the config is
    // cleared on every path.
    unsafe {
        ffi::PyConfig_InitPythonConfig(cfg.as_mut_ptr());
        let cfg = cfg.assume_init_mut();
        cfg.install_signal_handlers = 0;
        // PYTHONHOME/PYTHONPATH (and every PYTHON*) of the server environment are ignored on
        // purpose: python-home and python-path are the configuration.
        cfg.use_environment = 0;
        cfg.user_site_directory = 0;
        cfg.parse_argv = 0;
        cfg.optimization_level = p.optimize;
        cfg.write_bytecode = i32::from(p.write_bytecode);
        let mut result = Ok(());
        let st = ffi::PyConfig_SetBytesString(cfg, &mut cfg.program_name, p.program_name.as_ptr());
        if ffi::PyStatus_Exception(st) != 0 {
            result = Err(status_err(st));
        }
        if let (Ok(()), Some(home)) = (&result, &p.home) {
            let st = ffi::PyConfig_SetBytesString(cfg, &mut cfg.home, home.as_ptr());
            if ffi::PyStatus_Exception(st) != 0 {
                result = Err(status_err(st));
            }
        }
        if result.is_ok() {
            let mut argv = [c"mod_wsgi".as_ptr()];
            let st = ffi::PyConfig_SetBytesArgv(cfg, 1, argv.as_mut_ptr());
            if ffi::PyStatus_Exception(st) != 0 {
                result = Err(status_err(st));
            }
        }
        if result.is_ok() {
            let st = ffi::Py_InitializeFromConfig(cfg);
            if ffi::PyStatus_Exception(st) != 0 {
                result = Err(status_err(st));
            }
        }
        ffi::PyConfig_Clear(cfg);
        result?;
        Ok(TsPtr(ffi::PyEval_SaveThread()))
    }
}

/// Creates and sets up a sub-interpreter.
///
/// # Safety
/// On the Python main thread, detached; `main_ts` its main tstate.
unsafe fn create_sub(
    main_ts: TsPtr,
    name: &str,
    params: &StartParams,
    gate: &Arc<Gate>,
    main: &Arc<Interp>,
) -> Result<Arc<Interp>, InterpError> {
    let started = Instant::now();
    let fail = |reason: String| InterpError::Create {
        group: name.to_string(),
        reason,
    };
    // SAFETY: main_ts belongs to this thread and is detached (caller's contract).
    unsafe { ffi::PyEval_RestoreThread(main_ts.0) };
    let own_gil = params.own_gil
        && params
            .rules
            .resolve(&params.process.group, name)
            .per_interpreter_gil;
    // SAFETY: attached to main, as Py_NewInterpreter* requires.
    let ts = match unsafe { new_interpreter(own_gil) } {
        Ok(ts) => ts,
        Err(reason) => {
            // SAFETY: on failure, Py_NewInterpreter(FromConfig) leaves the caller's (main)
            // tstate current again, with the GIL.
            unsafe { ffi::PyEval_SaveThread() };
            return Err(fail(reason));
        }
    };
    // SAFETY: ts is the new interpreter's current tstate.
    let raw = RawInterp(unsafe { ffi::PyThreadState_GetInterpreter(ts.0) });
    // SAFETY: attached to the new interpreter.
    match unsafe { bootstrap(name, Some(&params.environ), params) } {
        Ok(objects) => {
            // SAFETY: attached; release the (shared) GIL.
            unsafe { ffi::PyEval_SaveThread() };
            tracing::debug!(group = name, own_gil, elapsed = ?started.elapsed(), "sub-interpreter created");
            Ok(Arc::new(Interp {
                name: name.to_string(),
                raw,
                is_main: false,
                own_gil,
                main: Some(main.clone()),
                gate: gate.clone(),
                registry: Mutex::new(Registry {
                    ended: false,
                    worker_tstates: Vec::new(),
                }),
                objects: Mutex::new(Some(Arc::new(objects))),
                scripts: Mutex::new(HashMap::new()),
                hooks: Mutex::new(HashMap::new()),
                creation_ts: ts,
            }))
        }
        Err(e) => {
            // SAFETY: attached with ts, the only tstate of the new interpreter.
            unsafe { end_interpreter(ts, main_ts) };
            Err(fail(e.traceback))
        }
    }
}

/// # Safety
/// Attached to the main interpreter.
#[cfg(not(Py_3_12))]
unsafe fn new_interpreter(own_gil: bool) -> Result<TsPtr, String> {
    // Runtime::start_with refuses own-GIL options before 3.12.
    debug_assert!(!own_gil, "own GIL needs Python 3.12");
    // SAFETY: attached to main (caller's contract).
    let ts = unsafe { ffi::Py_NewInterpreter() };
    if ts.is_null() {
        // SAFETY: the main tstate is current again and holds the error.
        return Err(unsafe { take_error(ptr::null_mut()) }.to_string());
    }
    Ok(TsPtr(ts))
}

/// # Safety
/// Attached to the main interpreter.
#[cfg(Py_3_12)]
unsafe fn new_interpreter(own_gil: bool) -> Result<TsPtr, String> {
    let mut ts = ptr::null_mut();
    // Own GIL: its own allocator, multi-phase-init extensions that declare support only, no
    // fork/exec/daemon threads (ARCHITECTURE.md, "Own-GIL interpreters"). Legacy: shares the
    // main GIL, as Py_NewInterpreter.
    let config = if own_gil {
        ffi::_PyInterpreterConfig_INIT
    } else {
        ffi::_PyInterpreterConfig_LEGACY_INIT
    };
    // SAFETY: attached to main (caller's contract); config is one of CPython's two presets.
    let st = unsafe { ffi::Py_NewInterpreterFromConfig(&mut ts, &config) };
    // SAFETY: reading a status returned by CPython.
    if unsafe { ffi::PyStatus_Exception(st) } != 0 || ts.is_null() {
        let msg = if st.err_msg.is_null() {
            "Py_NewInterpreterFromConfig failed".to_string()
        } else {
            // SAFETY: CPython status strings are static NUL-terminated strings.
            unsafe { std::ffi::CStr::from_ptr(st.err_msg) }
                .to_string_lossy()
                .into_owned()
        };
        return Err(msg);
    }
    Ok(TsPtr(ts))
}

/// `Py_EndInterpreter`, then leaves the thread detached.
///
/// # Safety
/// Attached with `ts`, the interpreter's only remaining tstate; `main_ts` this thread's
/// detached main tstate.
unsafe fn end_interpreter(ts: TsPtr, main_ts: TsPtr) {
    // SAFETY: caller's contract.
    unsafe { ffi::Py_EndInterpreter(ts.0) };
    // 3.11: the shared GIL is still held after Py_EndInterpreter, and leaving it held
    // deadlocks the next PyEval_RestoreThread (3.12+ returns with no GIL held).
    #[cfg(not(Py_3_12))]
    // SAFETY: make our main tstate current (it is ours and detached), then release the GIL.
    unsafe {
        ffi::PyThreadState_Swap(main_ts.0);
        ffi::PyEval_SaveThread();
    }
    #[cfg(Py_3_12)]
    let _ = main_ts;
}

/// Runs `_wsgi_rs` in the current interpreter (application group `name`) and collects its
/// objects: `sys.path` gets the process's python-path, then the `<WSGIInterpreterOptions>`
/// layers for this interpreter, and `sys.stdin`/`sys.stdout` are restricted as they say.
///
/// # Safety
/// Attached to the interpreter being set up.
unsafe fn bootstrap(
    name: &str,
    environ: Option<&[(Vec<u8>, Vec<u8>)]>,
    params: &StartParams,
) -> Result<Objects, PyErrorInfo> {
    let process = &params.process;
    let choices = params.rules.resolve(&process.group, name);
    let layers = std::iter::once(&params.python_path).chain(&choices.python_path_layers);
    // SAFETY: attached (caller's contract). Every new reference is owned by an Obj; borrowed
    // ones (module dict, sys.modules, builtins) are only used while their owner lives.
    unsafe {
        let err = || take_error(ptr::null_mut());
        let module = Obj::own(ffi::PyModule_New(c"_wsgi_rs".as_ptr())).ok_or_else(err)?;
        let dict = ffi::PyModule_GetDict(module.as_ptr());
        if ffi::PyDict_SetItemString(dict, c"__builtins__".as_ptr(), ffi::PyEval_GetBuiltins()) != 0
        {
            return Err(err());
        }
        for (name, f) in super::host::native_functions().ok_or_else(err)? {
            if ffi::PyDict_SetItemString(dict, name.as_ptr(), f.as_ptr()) != 0 {
                return Err(err());
            }
        }
        let src = std::ffi::CStr::from_bytes_with_nul(BOOTSTRAP.as_bytes())
            .expect("bootstrap source has exactly one NUL, at the end");
        Obj::own(ffi::PyRun_StringFlags(
            src.as_ptr(),
            ffi::Py_file_input,
            dict,
            dict,
            ptr::null_mut(),
        ))
        .ok_or_else(err)?;
        if ffi::PyDict_SetItemString(
            ffi::PyImport_GetModuleDict(),
            c"_wsgi_rs".as_ptr(),
            module.as_ptr(),
        ) != 0
        {
            return Err(err());
        }
        let format_exc = getattr(module.as_ptr(), c"format_exc").ok_or_else(err)?;
        let err = || take_error(format_exc.as_ptr());
        let env_obj = match environ {
            None => Obj::borrowed(ffi::Py_None()),
            Some(vars) => {
                let d = Obj::own(ffi::PyDict_New()).ok_or_else(err)?;
                for (k, v) in vars {
                    let k = new_bytes(k).ok_or_else(err)?;
                    let v = new_bytes(v).ok_or_else(err)?;
                    if ffi::PyDict_SetItem(d.as_ptr(), k.as_ptr(), v.as_ptr()) != 0 {
                        return Err(err());
                    }
                }
                d
            }
        };
        let paths = Obj::own(ffi::PyList_New(0)).ok_or_else(err)?;
        for layer in layers {
            let folders = Obj::own(ffi::PyList_New(0)).ok_or_else(err)?;
            for p in layer {
                let s = fs_str(p.as_os_str().as_bytes()).ok_or_else(err)?;
                if ffi::PyList_Append(folders.as_ptr(), s.as_ptr()) != 0 {
                    return Err(err());
                }
            }
            if ffi::PyList_Append(paths.as_ptr(), folders.as_ptr()) != 0 {
                return Err(err());
            }
        }
        let tag = new_str(&display_name(name)).ok_or_else(err)?;
        let setup = getattr(module.as_ptr(), c"setup").ok_or_else(err)?;
        let flag = |b: bool| Obj::borrowed(if b { ffi::Py_True() } else { ffi::Py_False() });
        call(
            setup.as_ptr(),
            &[
                tag.as_ptr(),
                env_obj.as_ptr(),
                paths.as_ptr(),
                flag(choices.restrict_stdin).as_ptr(),
                flag(choices.restrict_stdout).as_ptr(),
            ],
        )
        .ok_or_else(err)?;
        let attr =
            |n: &std::ffi::CStr| getattr(module.as_ptr(), n).map(Stored::new).ok_or_else(err);
        let mut keys = Vec::with_capacity(KEYS.len());
        for k in KEYS {
            let c = cstring(k);
            keys.push(Stored::new(
                Obj::own(ffi::PyUnicode_InternFromString(c.as_ptr())).ok_or_else(err)?,
            ));
        }
        let mut values = Vec::with_capacity(VALUES.len());
        for v in VALUES {
            // Not interned: values are never hashed, and a fresh object is surely this
            // interpreter's own.
            values.push(Stored::new(new_str(v).ok_or_else(err)?));
        }
        let one = Obj::own(ffi::PyLong_FromLong(1)).ok_or_else(err)?;
        let zero = Obj::own(ffi::PyLong_FromLong(0)).ok_or_else(err)?;
        let wsgi_version =
            Obj::own(ffi::PyTuple_Pack(2, one.as_ptr(), zero.as_ptr())).ok_or_else(err)?;
        // A tuple of three ints (`mod_wsgi.version`, `apache.version`).
        let version_tuple = |(a, b, c): (u16, u16, u16)| {
            let items = [a, b, c].map(|n| Obj::own(ffi::PyLong_FromLong(n.into())));
            let [Some(a), Some(b), Some(c)] = items else {
                return None;
            };
            Obj::own(ffi::PyTuple_Pack(3, a.as_ptr(), b.as_ptr(), c.as_ptr()))
        };
        let (a, b, c) = MOD_WSGI_VERSION;
        let mod_wsgi_version = version_tuple((a.into(), b.into(), c.into())).ok_or_else(err)?;
        let apache_version = version_tuple(crate::environ::apache_version()).ok_or_else(err)?;
        let zero_seconds = Obj::own(ffi::PyFloat_FromDouble(0.0)).ok_or_else(err)?;
        let own_pid = new_str(&std::process::id().to_string()).ok_or_else(err)?;
        let group_name = new_str(name).ok_or_else(err)?;
        let request_timeout = attr(c"RequestTimeout")?;
        let tracking = attr(c"tracking")?;
        let begin_request = attr(c"begin_request")?;
        let end_request = attr(c"end_request")?;
        let request_exception = attr(c"request_exception")?;
        let publish_stopping = attr(c"publish_stopping")?;
        let unflushed = attr(c"unflushed")?;
        let flush_streams = attr(c"flush_streams")?;
        let source = new_str(MOD_WSGI).ok_or_else(err)?;
        let process_group = new_str(&process.group).ok_or_else(err)?;
        let processes =
            Obj::own(ffi::PyLong_FromLong(process.processes.max(1).into())).ok_or_else(err)?;
        let threads =
            Obj::own(ffi::PyLong_FromLong(process.threads.max(1).into())).ok_or_else(err)?;
        let install = getattr(module.as_ptr(), c"install_mod_wsgi").ok_or_else(err)?;
        call(
            install.as_ptr(),
            &[
                source.as_ptr(),
                mod_wsgi_version.as_ptr(),
                process_group.as_ptr(),
                group_name.as_ptr(),
                processes.as_ptr(),
                threads.as_ptr(),
            ],
        )
        .ok_or_else(err)?;
        Ok(Objects {
            keys,
            values,
            input_type: attr(c"Input")?,
            file_wrapper: attr(c"FileWrapper")?,
            file_range: attr(c"file_range")?,
            log_writer: attr(c"LogWriter")?,
            load_script: attr(c"load_script")?,
            load_module: attr(c"load_module")?,
            join_threads: attr(c"join_threads")?,
            guard_shutdown: attr(c"guard_shutdown")?,
            run_atexit: attr(c"run_atexit")?,
            wsgi_version: Stored::new(wsgi_version),
            mod_wsgi_version: Stored::new(mod_wsgi_version),
            apache_version: Stored::new(apache_version),
            zero_seconds: Stored::new(zero_seconds),
            own_pid: Stored::new(own_pid),
            group_name: Stored::new(group_name),
            format_exc: Stored::new(format_exc),
            request_timeout,
            tracking,
            begin_request,
            end_request,
            request_exception,
            publish_stopping,
            unflushed,
            flush_streams,
        })
    }
}

/// Imports, in the main interpreter, the standard library's extension modules that own-GIL
/// interpreters refuse (see `OWN_GIL_PRELOAD` in bootstrap.py for why).
///
/// # Safety
/// Attached to the main interpreter, which owns `objects`.
unsafe fn preload_for_own_gil(objects: &Objects) {
    // SAFETY: attached (caller's contract); the module and its helper belong to main.
    unsafe {
        let Some(module) = Obj::own(ffi::PyImport_ImportModule(c"_wsgi_rs".as_ptr())) else {
            let e = take_error(objects.format_exc.ptr());
            tracing::warn!("preloading extension modules failed: {}", e.traceback);
            return;
        };
        let loaded = getattr(module.as_ptr(), c"preload_for_own_gil")
            .and_then(|f| call(f.as_ptr(), &[]))
            .map(|list| str_list(list.as_ptr()));
        match loaded {
            Some(names) => tracing::debug!(
                modules = ?names,
                "extension modules own-GIL interpreters refuse were imported into the main interpreter first"
            ),
            None => {
                let e = take_error(objects.format_exc.ptr());
                tracing::warn!("preloading extension modules failed: {}", e.traceback);
            }
        }
    }
}

/// Joins the current interpreter's threads within `timeout`; returns the names still alive.
///
/// # Safety
/// Attached to the interpreter owning `objects`.
unsafe fn join_threads(objects: &Objects, timeout: Duration, include_daemon: bool) -> Vec<String> {
    // SAFETY: attached (caller's contract).
    unsafe {
        let secs = Obj::own(ffi::PyFloat_FromDouble(timeout.as_secs_f64()));
        let flag = Obj::borrowed(if include_daemon {
            ffi::Py_True()
        } else {
            ffi::Py_False()
        });
        let Some(secs) = secs else {
            ffi::PyErr_Clear();
            return Vec::new();
        };
        match call(objects.join_threads.ptr(), &[secs.as_ptr(), flag.as_ptr()]) {
            Some(list) => str_list(list.as_ptr()),
            None => {
                let e = take_error(objects.format_exc.ptr());
                tracing::warn!("joining Python threads at shutdown failed: {}", e.traceback);
                Vec::new()
            }
        }
    }
}

/// Calls a no-argument helper, logging a failure.
///
/// # Safety
/// Attached to the interpreter owning `objects` and `f`.
unsafe fn call_helper(objects: &Objects, f: &Stored, what: &str) {
    // SAFETY: attached (caller's contract).
    unsafe {
        if call(f.ptr(), &[]).is_none() {
            let e = take_error(objects.format_exc.ptr());
            tracing::warn!("{what} failed: {}", e.traceback);
        }
    }
}

/// Ends every sub-interpreter and finalises CPython, within `join_timeout` for app threads.
///
/// # Safety
/// On the Python main thread, detached, with the gate closed and no call inside Python.
unsafe fn finish(
    main_ts: TsPtr,
    main: &Arc<Interp>,
    subs: &[Arc<Interp>],
    join_timeout: Duration,
) -> crate::ShutdownReport {
    let deadline = Instant::now() + join_timeout;
    let remaining = || deadline.saturating_duration_since(Instant::now());
    let mut report = crate::ShutdownReport::default();
    for sub in subs.iter().rev() {
        let ts = sub.creation_ts;
        // SAFETY: ts is this thread's tstate for sub, detached.
        unsafe { ffi::PyEval_RestoreThread(ts.0) };
        {
            let mut reg = sub.registry.lock();
            reg.ended = true;
            for t in reg.worker_tstates.drain(..) {
                // SAFETY: the gate is closed and drained, so the owning worker threads are not
                // in Python and never will be again; we hold the GIL. (Py_EndInterpreter aborts
                // the process, "not the last thread", while any other tstate of it is left.)
                unsafe {
                    ffi::PyThreadState_Clear(t.0);
                    ffi::PyThreadState_Delete(t.0);
                }
            }
        }
        let Some(objects) = sub.objects.lock().take() else {
            // SAFETY: attached above.
            unsafe { ffi::PyEval_SaveThread() };
            continue;
        };
        // SAFETY: attached to sub, which owns objects.
        let alive = unsafe { join_threads(&objects, remaining(), true) };
        // SAFETY: attached; reading the interpreter's thread list under its GIL.
        let only_us = unsafe {
            ffi::PyInterpreterState_ThreadHead(sub.raw.0) == ts.0
                && ffi::PyThreadState_Next(ts.0).is_null()
        };
        if !alive.is_empty() || !only_us {
            tracing::warn!(
                group = %sub.name,
                threads = ?alive,
                "{}: thread(s) {:?} still running after the {:?} shutdown wait; the interpreter is left running and Python is not finalised (the process exits without waiting for them)",
                sub.display(),
                alive,
                join_timeout
            );
            // SAFETY: attached to sub.
            unsafe { call_helper(&objects, &objects.run_atexit, "running atexit handlers") };
            report.left_running.push((sub.name.clone(), alive));
            *sub.objects.lock() = Some(objects);
            // SAFETY: attached; detach.
            unsafe { ffi::PyEval_SaveThread() };
            continue;
        }
        // SAFETY: attached to sub; every object below belongs to it.
        unsafe {
            call_helper(
                &objects,
                &objects.guard_shutdown,
                "guarding threading._shutdown",
            );
            for (_, entry) in sub.scripts.lock().drain() {
                entry.release();
            }
            for (_, entry) in sub.hooks.lock().drain() {
                entry.release();
            }
            match Arc::try_unwrap(objects) {
                Ok(o) => o.release(),
                Err(shared) => std::mem::forget(shared),
            }
            let t0 = Instant::now();
            end_interpreter(ts, main_ts);
            tracing::debug!(group = %sub.name, elapsed = ?t0.elapsed(), "sub-interpreter ended");
        }
        report.ended.push(sub.name.clone());
    }
    // SAFETY: main_ts is this thread's main tstate, detached.
    unsafe { ffi::PyEval_RestoreThread(main_ts.0) };
    main.registry.lock().ended = true;
    let objects = main.objects.lock().take();
    if let Some(objects) = &objects {
        // SAFETY: attached to main, which owns objects.
        let alive = unsafe { join_threads(objects, remaining(), false) };
        if !alive.is_empty() {
            tracing::warn!(
                threads = ?alive,
                "main interpreter: non-daemon thread(s) {alive:?} still running after the {join_timeout:?} shutdown wait; finalising without them"
            );
        }
    }
    if !report.left_running.is_empty() {
        if let Some(objects) = &objects {
            // SAFETY: attached to main.
            unsafe { call_helper(objects, &objects.run_atexit, "running atexit handlers") };
        }
        // SAFETY: attached; detach and leave CPython running until the process exits.
        unsafe { ffi::PyEval_SaveThread() };
        return report;
    }
    // SAFETY: attached to main; the objects are main's; then finalise on the initialising
    // thread with every sub-interpreter ended (Py_FinalizeEx with a live sub-interpreter
    // aborts on 3.11 and 3.12: "remaining subinterpreters").
    unsafe {
        if let Some(objects) = objects {
            call_helper(
                &objects,
                &objects.guard_shutdown,
                "guarding threading._shutdown",
            );
            for (_, entry) in main.scripts.lock().drain() {
                entry.release();
            }
            for (_, entry) in main.hooks.lock().drain() {
                entry.release();
            }
            match Arc::try_unwrap(objects) {
                Ok(o) => o.release(),
                Err(shared) => std::mem::forget(shared),
            }
        }
        let rc = ffi::Py_FinalizeEx();
        report.finalized = true;
        if rc != 0 {
            tracing::warn!("Py_FinalizeEx reported an error flushing buffered data ({rc})");
        }
    }
    report
}
