//! The calling thread's CPython state: its thread states, one per interpreter it has used
//! (`STATES`, the thread-state cache), and the interpreter it is attached to through
//! `Interp::run` (`ATTACHED`; our own mark, since `PyGILState_Check` answers 1 on every thread
//! once sub-interpreters exist).
//!
//! CPython rules it keeps: a thread state is per (thread, interpreter), made on its thread and
//! only ever attached by it; a thread deletes its own (`Interp::delete_tstate`) before it
//! exits (`release_current_thread`, else the thread-local destructor), through the gate, so
//! never while shutdown ends interpreters. A thread's first state is a main-interpreter one:
//! on 3.11 `PyGILState_Ensure` (what C extensions call) takes the first thread state ever made
//! on the thread, whatever its interpreter.

use std::cell::{Cell, RefCell};
use std::ptr;
use std::sync::Arc;

use super::interp::{Interp, TsPtr};
use crate::wsgi::{InterpError, PyErrorInfo};

thread_local! {
    /// The interpreter this thread is attached to through `Interp::run`, or null.
    pub(super) static ATTACHED: Cell<*const Interp> = const { Cell::new(ptr::null()) };
    /// This thread's thread states, one per interpreter it has used.
    pub(super) static STATES: RefCell<ThreadStates> = const { RefCell::new(ThreadStates(Vec::new())) };
}

pub(super) struct ThreadStates(pub(super) Vec<(Arc<Interp>, TsPtr)>);

impl Drop for ThreadStates {
    fn drop(&mut self) {
        release_states(std::mem::take(&mut self.0));
    }
}

pub(super) fn tstate_for(interp: &Arc<Interp>) -> Result<TsPtr, InterpError> {
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
        // SAFETY: every state in STATES was made on this thread for its interpreter, and the
        // callers run detached (the destructor of a thread, or ATTACHED checked null).
        unsafe { interp.delete_tstate(ts) };
    }
}
