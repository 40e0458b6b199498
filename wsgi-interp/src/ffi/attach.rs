//! The way into an interpreter and out again: `Interp::run` (the only way in: the gate, this
//! thread's thread state, `acquire`, the `ATTACHED` mark; detached again when `f` returns or
//! panics), `without_gil` (the GIL let go around blocking work and taken back), and
//! `lock_attached`; and [`Attached`], the proof of attachment that code touching Python objects
//! takes, with the public operations on it (`exec`, `eval`, `interrupt_thread`).
//!
//! Rules it keeps: attached means the thread restored *its own* thread state for the
//! interpreter owning the objects and holds the GIL; [`Attached`] is neither `Send` nor `Sync`,
//! so it cannot reach a thread that holds no GIL; entering a second interpreter from inside
//! `run` is refused (`NestedAttach`). Lock order, everywhere: a Rust mutex may be held while
//! waiting for the GIL, never the reverse; code that holds the GIL and needs a contended mutex
//! releases the GIL first (`lock_attached`).

use std::cell::Cell;
use std::marker::PhantomData;
use std::ptr;
use std::sync::Arc;

use pyo3::ffi;

use super::gil::{acquire, before_release, reacquire};
use super::interp::Interp;
use super::tstate::{ATTACHED, set_attached, tstate_for};
use super::{Obj, cstring, take_error};
use crate::wsgi::{InterpError, PyErrorInfo};

impl Interp {
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

/// Locks a mutex of the attached interpreter's (its script tables) without ever waiting for it
/// while holding the GIL: the holder may itself be waiting for the GIL.
pub(crate) fn lock_attached<'m, T>(
    _py: &Attached<'_>,
    m: &'m parking_lot::Mutex<T>,
) -> parking_lot::MutexGuard<'m, T> {
    match m.try_lock() {
        Some(guard) => guard,
        // SAFETY: `_py` proves the calling thread is attached.
        None => unsafe { without_gil(|| m.lock()) },
    }
}

/// Runs `f` with the GIL released (and this thread marked detached), re-attaching after, also
/// when `f` panics.
///
/// # Safety
/// The calling thread is attached (holds the GIL through its current tstate).
pub(crate) unsafe fn without_gil<R>(f: impl FnOnce() -> R) -> R {
    struct Reattach(*mut ffi::PyThreadState, *const Interp);
    impl Drop for Reattach {
        fn drop(&mut self) {
            if self.1.is_null() {
                // SAFETY: self.0 is the tstate this thread saved below.
                unsafe { ffi::PyEval_RestoreThread(self.0) };
            } else {
                // SAFETY: self.1 is the interpreter of the enclosing `run` frame, which keeps
                // it alive; self.0 is this thread's tstate for it, saved below.
                unsafe {
                    let interp = &*self.1;
                    reacquire(interp, self.0);
                }
            }
            set_attached(self.1);
        }
    }
    let prev = set_attached(ptr::null());
    before_release(prev);
    // SAFETY: attached (caller's contract).
    let ts = unsafe { ffi::PyEval_SaveThread() };
    let _reattach = Reattach(ts, prev);
    f()
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
