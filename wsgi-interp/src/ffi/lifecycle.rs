//! The interpreter lifecycle thread, `wsgi-python-main`: [`Core::start`] starts it and waits
//! until CPython is up; it then creates each sub-interpreter on request (`Command::Create`,
//! sent by [`Core::create`]) and, on `Command::Shutdown` (sent by [`Core::shutdown`] once the
//! gate is closed and drained), ends them and finalises. It never serves a request.
//!
//! CPython rules it keeps: finalisation runs on the thread that initialised (on 3.11,
//! finalising from another thread hung), and creating an interpreter needs a current thread
//! state to start from, this thread's main one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use pyo3::ffi;

use super::finalize::finish;
use super::gate::Gate;
use super::interp::{Interp, RawInterp};
use super::startup::{StartParams, bootstrap, create_sub, initialize, preload_for_own_gil};
use super::tstate::attached_group;
use crate::start_config::StartError;
use crate::wsgi::InterpError;

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
    let main = Interp::new(
        "",
        // SAFETY: CPython is initialised.
        RawInterp(unsafe { ffi::PyInterpreterState_Main() }),
        false,
        None,
        gate.clone(),
        None,
        main_ts,
    );
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
