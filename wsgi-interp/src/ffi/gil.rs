//! Taking the GIL fairly: [`acquire`] attaches the calling thread with its thread state
//! (`PyEval_RestoreThread`), [`reacquire`] does it again after `without_gil`, and
//! [`before_release`] runs before the thread lets the GIL go.
//!
//! The CPython behaviour it works around: on 3.11 and 3.12 the shared GIL is not handed over
//! between interpreters at the switch interval (a thread of interpreter B waits until a
//! CPU-bound call in A ends, not 5 ms). So a waiter for a shared-GIL interpreter waits as a
//! thread of the interpreter that holds the GIL (`HOLDER`), then switches to its own thread
//! state with `PyThreadState_Swap` while holding it, the documented way to change
//! interpreters under one GIL. On 3.13, and for interpreters with their own GIL, it is plain
//! `PyEval_RestoreThread`.

#[cfg(not(Py_3_13))]
use std::cell::RefCell;
use std::sync::Arc;

#[cfg(not(Py_3_13))]
use parking_lot::Mutex;
use pyo3::ffi;

use super::interp::{Interp, TsPtr};
use super::tstate::STATES;
#[cfg(not(Py_3_13))]
use super::tstate::tstate_for;

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
    // 3.13 hands the GIL over fairly itself: nothing here looks at the interpreter.
    #[cfg(Py_3_13)]
    let _ = interp;
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
