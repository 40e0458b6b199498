//! Ending interpreters and finalising CPython, on the lifecycle thread: `finish` (for
//! `Command::Shutdown`) and `end_interpreter` (also for a sub-interpreter whose set-up failed).
//!
//! CPython rules it keeps: the order is every sub-interpreter ended, newest first, then the
//! main thread state restored on the initialising thread and `Py_FinalizeEx` (with a live
//! sub-interpreter it aborts on 3.11 and 3.12, "remaining subinterpreters").
//! `Py_EndInterpreter` aborts while another thread state of the interpreter exists, so the
//! workers' are deleted first (the gate is closed and drained: their threads never use them
//! again); on 3.11 it returns still holding the shared GIL, which must be let go. An
//! interpreter whose threads outlive the wait is left running, and CPython is then not
//! finalised.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pyo3::ffi;

use super::interp::{Interp, Objects, TsPtr};
use super::{Obj, Stored, call, str_list, take_error};

/// `Py_EndInterpreter`, then leaves the thread detached.
///
/// # Safety
/// Attached with `ts`, the interpreter's only remaining tstate; `main_ts` this thread's
/// detached main tstate.
pub(super) unsafe fn end_interpreter(ts: TsPtr, main_ts: TsPtr) {
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
pub(super) unsafe fn finish(
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
            sub.release_tables(objects);
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
            main.release_tables(objects);
        }
        let rc = ffi::Py_FinalizeEx();
        report.finalized = true;
        if rc != 0 {
            tracing::warn!("Py_FinalizeEx reported an error flushing buffered data ({rc})");
        }
    }
    report
}
