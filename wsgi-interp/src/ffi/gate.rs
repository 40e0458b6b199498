//! Admission into Python, for shutdown: every way into an interpreter (`Interp::run`, and a
//! thread deleting its thread states) enters the [`Gate`] first, and `Core::shutdown` closes
//! it and waits for the calls inside to leave before anything is ended.
//!
//! The CPython rule it keeps: a thread that enters Python while or after `Py_FinalizeEx` runs
//! never returns, and `Py_EndInterpreter` aborts while a thread state of the interpreter other
//! than the caller's exists. So once ending starts nothing may be inside Python or get in, and
//! a thread state may be deleted by another thread only while its owner is kept out by the
//! closed gate.

use std::time::Instant;

use parking_lot::{Condvar, Mutex};

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
    pub(super) fn new() -> Gate {
        Gate {
            state: Mutex::new(GateState {
                closing: false,
                active: 0,
            }),
            idle: Condvar::new(),
        }
    }

    pub(super) fn enter(&self) -> Option<GateGuard<'_>> {
        let mut s = self.state.lock();
        if s.closing {
            return None;
        }
        s.active += 1;
        Some(GateGuard(self))
    }

    /// Refuses new work and waits until `deadline` for running work; returns how many calls
    /// are still inside.
    pub(super) fn close(&self, deadline: Instant) -> usize {
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
