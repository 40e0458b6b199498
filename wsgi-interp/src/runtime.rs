//! The safe face of the embedded CPython: [`Runtime`] and [`InterpreterHandle`].

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

use crate::ffi;
use crate::ffi::interp::Interp;
use crate::ffi::lifecycle::Core;
use crate::ffi::startup::{ProcessFacts, StartParams};
use crate::hook_scripts::{HookArg, HookError, HookFunction, HookScript, HookValue};
use crate::start_config::{InterpreterOptions, StartConfig, StartError, choose_home};
use crate::wsgi::{
    CallOptions, InterpError, LoadStatus, Outcome, RequestBody, RequestHead, ResponseSink,
    ScriptError, ScriptSpec,
};

pub use crate::ffi::attach::Attached;

static STARTED: AtomicBool = AtomicBool::new(false);

/// How long [`Runtime::shutdown`] waits, by default, for calls still running in Python.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(5);
/// How long [`Runtime::shutdown`] waits, by default and in total, for threads apps started.
pub const DEFAULT_THREAD_JOIN: Duration = Duration::from_millis(300);

/// The process's embedded CPython: the main interpreter plus one sub-interpreter per
/// application group, created on first use. One per process (CPython can start only once).
pub struct Runtime {
    core: Core,
    groups: RwLock<HashMap<String, Arc<Interp>>>,
    create: Mutex<()>,
    version: (u8, u8, u8),
    options: InterpreterOptions,
    shut_down: AtomicBool,
    stopping: AtomicBool,
}

/// What [`Runtime::shutdown`] did.
#[derive(Debug, Default, Clone)]
pub struct ShutdownReport {
    /// Sub-interpreters ended cleanly (their atexit handlers ran).
    pub ended: Vec<String>,
    /// Sub-interpreters left running because app threads outlived the wait, with those
    /// threads' names (their atexit handlers were run by hand; CPython was not finalised).
    pub left_running: Vec<(String, Vec<String>)>,
    /// `Py_FinalizeEx` ran (main interpreter atexit handlers included).
    pub finalized: bool,
    /// Calls still inside Python when the drain wait ended (then nothing else was done).
    pub busy_calls: usize,
    /// Wall time of the shutdown.
    pub elapsed: Duration,
}

impl Runtime {
    /// Starts CPython as mod_wsgi does (ARCHITECTURE.md, "Venvs: what python-home means"): a
    /// venv python-home becomes `program_name = <home>/bin/python` (CPython fails to start
    /// with a venv as `home`), an installation prefix becomes `home`, and with no home
    /// `program_name` is the build Python, so `$PATH` is never consulted;
    /// `sys.argv == ['mod_wsgi']`, no signal handlers, the server's `PYTHON*` variables are
    /// ignored, python-path folders go to the front of `sys.path`. The GIL is released on
    /// return. Sub-interpreters share the main interpreter's GIL (see [`Runtime::start_with`]).
    pub fn start(config: &StartConfig) -> Result<Runtime, StartError> {
        Runtime::start_with(config, &InterpreterOptions::default())
    }

    /// [`Runtime::start`] with process-wide interpreter options, such as
    /// [`InterpreterOptions::per_interpreter_gil`] (refused, before anything starts, when the
    /// embedded Python is older than 3.12).
    pub fn start_with(
        config: &StartConfig,
        options: &InterpreterOptions,
    ) -> Result<Runtime, StartError> {
        let version = ffi::runtime_version();
        // `InterpreterOptions::per_interpreter_gil` is the top-level default of the rules.
        let mut rules = config.interpreter_rules.clone();
        rules.per_interpreter_gil |= options.per_interpreter_gil;
        if rules.any_own_gil() && !(cfg!(Py_3_12) && version >= (3, 12, 0)) {
            return Err(StartError::PerInterpreterGilUnsupported {
                version: format!("{}.{}.{}", version.0, version.1, version.2),
            });
        }
        let choice = choose_home(config.python_home.as_deref())?;
        let cstr = |p: &std::path::Path| {
            std::ffi::CString::new(p.as_os_str().as_bytes())
                .map_err(|_| StartError::NulInPath(p.to_path_buf()))
        };
        let params = StartParams {
            program_name: cstr(&choice.program_name)?,
            home: choice.home.as_deref().map(cstr).transpose()?,
            optimize: i32::from(config.optimize.min(2)),
            write_bytecode: !config.dont_write_bytecode,
            python_path: config.python_path.clone(),
            environ: std::env::vars_os()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect(),
            own_gil: rules.any_own_gil(),
            rules,
            process: ProcessFacts {
                group: config.process_group.clone(),
                processes: config.maximum_processes,
                threads: config.threads_per_process,
            },
        };
        if STARTED.swap(true, Ordering::SeqCst) {
            return Err(StartError::AlreadyStarted);
        }
        crate::metrics::mark_started();
        let core = Core::start(params)?;
        tracing::info!(
            program_name = %choice.program_name.display(),
            home = ?choice.home,
            per_interpreter_gil = options.per_interpreter_gil,
            "Python {}.{}.{} started",
            version.0,
            version.1,
            version.2
        );
        Ok(Runtime {
            core,
            groups: RwLock::new(HashMap::new()),
            create: Mutex::new(()),
            version,
            options: *options,
            shut_down: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
        })
    }

    /// The interpreter options this runtime was started with.
    pub fn options(&self) -> InterpreterOptions {
        self.options
    }

    /// The embedded Python's version (major, minor, micro).
    pub fn python_version(&self) -> (u8, u8, u8) {
        self.version
    }

    /// The interpreter for an application group: `""` (`%{GLOBAL}`) is the main interpreter;
    /// any other name gets its own sub-interpreter, created on first use (serialised) and
    /// started from the process's original environment.
    pub fn interpreter(&self, group: &str) -> Result<InterpreterHandle, InterpError> {
        if group.is_empty() {
            return Ok(InterpreterHandle(self.core.main.clone()));
        }
        if let Some(i) = self.groups.read().get(group) {
            return Ok(InterpreterHandle(i.clone()));
        }
        // Creating needs the GIL on the Python main thread: never wait for it while attached.
        if let Some(current) = ffi::tstate::attached_group() {
            return Err(InterpError::NestedAttach(current));
        }
        let _one_at_a_time = self.create.lock();
        if let Some(i) = self.groups.read().get(group) {
            return Ok(InterpreterHandle(i.clone()));
        }
        let created = self.core.create(group)?;
        self.groups
            .write()
            .insert(group.to_string(), created.clone());
        Ok(InterpreterHandle(created))
    }

    /// Deletes the calling thread's thread states. Worker pools call this before a worker
    /// exits (a thread-local destructor does it otherwise).
    pub fn release_thread() {
        ffi::tstate::release_current_thread();
    }

    /// Publishes mod_wsgi's `process_stopping` event in every interpreter, once: the
    /// `mod_wsgi.subscribe_events` callbacks, then the `mod_wsgi.subscribe_shutdown` ones,
    /// each called as `callback('process_stopping', shutdown_reason=reason)` on the calling
    /// thread (a callback that raises is logged). `reason` is mod_wsgi's code for why
    /// (`maximum_requests`, `request_timeout`, `shutdown_signal`..., `""` for an embedded
    /// process). A daemon process calls this when it begins to drain, while requests may
    /// still run, as mod_wsgi does; [`Runtime::shutdown`] calls it with `""` if nobody did.
    pub fn process_stopping(&self, reason: &str) {
        if self.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        let mut interps = vec![InterpreterHandle(self.core.main.clone())];
        let mut groups: Vec<_> = self
            .groups
            .read()
            .iter()
            .map(|(name, i)| (name.clone(), i.clone()))
            .collect();
        groups.sort_by(|a, b| a.0.cmp(&b.0));
        interps.extend(groups.into_iter().map(|(_, i)| InterpreterHandle(i)));
        for interp in interps {
            if let Err(e) = interp.0.run(|py| ffi::call::publish_stopping(py, reason)) {
                tracing::warn!(group = %interp.group(), "process_stopping callbacks not run: {e}");
            }
        }
    }

    /// Stops running Python and finalises it, bounded in time: first the
    /// [`Runtime::process_stopping`] callbacks (unless already run), then it
    /// refuses new calls and waits up to `drain` for running ones; then, on the thread that
    /// started CPython, ends every sub-interpreter (its threads get a share of
    /// `thread_join`, and `threading._shutdown` is made unable to hang: CPython gh-122517) and
    /// runs `Py_FinalizeEx`. A sub-interpreter whose threads are still alive is left running
    /// (logged with their names) and CPython is then not finalised, so the process can exit.
    /// Calling it again returns an empty report.
    pub fn shutdown(&self, drain: Duration, thread_join: Duration) -> ShutdownReport {
        if self.shut_down.load(Ordering::SeqCst) {
            return ShutdownReport::default();
        }
        self.process_stopping("");
        if self.shut_down.swap(true, Ordering::SeqCst) {
            return ShutdownReport::default();
        }
        let report = self.core.shutdown(drain, thread_join);
        tracing::info!(
            ended = ?report.ended,
            left_running = ?report.left_running,
            finalized = report.finalized,
            elapsed = ?report.elapsed,
            "Python shut down"
        );
        report
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.shutdown(DEFAULT_DRAIN, DEFAULT_THREAD_JOIN);
    }
}

/// A cheap, cloneable, thread-safe handle on one interpreter.
#[derive(Clone)]
pub struct InterpreterHandle(Arc<Interp>);

impl std::fmt::Debug for InterpreterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("InterpreterHandle")
            .field(&self.0.name)
            .finish()
    }
}

impl InterpreterHandle {
    /// The application group name (`""` for the main interpreter).
    pub fn group(&self) -> &str {
        &self.0.name
    }

    /// Runs `f` with the calling thread attached to this interpreter (its own thread state,
    /// created on first use), then detaches. Re-entering the same interpreter from inside `f`
    /// runs directly; entering another one is refused.
    pub fn run<R>(&self, f: impl FnOnce(&Attached<'_>) -> R) -> Result<R, InterpError> {
        self.0.run(f)
    }

    /// Loads the script if needed; reloads it per [`ScriptSpec::reload`]. A failure is logged
    /// with the traceback and the next call tries again.
    pub fn load_script(&self, spec: &ScriptSpec) -> Result<LoadStatus, ScriptError> {
        self.0
            .run(|py| ffi::call::load_script(py, spec, None).map(|(status, _)| status))?
    }

    /// Calls `function(environ, *args)` of a hook script (access, auth or dispatch) in this
    /// interpreter: loads the script on first use and executes it again when the file changed
    /// (if [`HookScript::reload`]), builds the environ from `head` and `opts` without
    /// `wsgi.input` (the body is not read yet) and returns what the function returned. The
    /// `*_from_hook` conversions of [`crate::hook_scripts`] give the value mod_wsgi's meaning.
    pub fn call_hook(
        &self,
        script: &HookScript,
        function: HookFunction,
        head: &RequestHead,
        opts: &CallOptions,
        args: &[HookArg],
    ) -> Result<HookValue, HookError> {
        self.0
            .run(|py| ffi::hook::call_hook(py, script, function, head, opts, args))?
    }

    /// Serves one request: loads the script as needed, then runs the whole PEP 3333 call,
    /// streaming the body from `body` and the response to `sink` (the GIL is released whenever
    /// either blocks).
    pub fn call(
        &self,
        spec: &ScriptSpec,
        head: &RequestHead,
        opts: &CallOptions,
        body: &mut dyn RequestBody,
        sink: &mut dyn ResponseSink,
    ) -> Outcome {
        let _counted = crate::metrics::begin();
        ffi::host::with_call_state(body, sink, |state| {
            let ran = self.0.run(|py| {
                let loaded = ffi::call::load_script(py, spec, head.stamps.received);
                match loaded {
                    Err(e) => Outcome::Script(e),
                    Ok((LoadStatus::Changed, _)) => Outcome::ScriptChanged,
                    Ok((_, app)) => ffi::call::call_app(py, &app, spec, head, opts, state),
                }
            });
            ran.unwrap_or_else(Outcome::Unavailable)
        })
    }
}
