//! Starting CPython and making interpreters, on the lifecycle thread: `initialize`
//! (`Py_InitializeFromConfig` with mod_wsgi's settings, from [`StartParams`]), `create_sub`
//! (`Py_NewInterpreter` on 3.11, `Py_NewInterpreterFromConfig` with a shared or its own GIL on
//! 3.12+), and `bootstrap`, which runs `bootstrap.py` (`_wsgi_rs`) and `mod_wsgi.py` in each
//! new interpreter and collects its `Objects`.
//!
//! CPython rules it keeps: initialise once per process, on the thread that will finalise,
//! ignoring the server's `PYTHON*` variables and always setting `program_name` (ARCHITECTURE.md,
//! "Venvs: what python-home means"); creating an interpreter needs the main thread state
//! current, and failing leaves it current again; a sub-interpreter whose bootstrap fails is
//! ended at once. With own-GIL groups, the standard modules such interpreters refuse are first
//! imported into the main interpreter (`preload_for_own_gil`; ARCHITECTURE.md, "Own-GIL
//! interpreters").

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::ptr;
use std::sync::Arc;
use std::time::Instant;

use pyo3::ffi;

use super::finalize::end_interpreter;
use super::gate::Gate;
use super::interp::{Interp, Objects, RawInterp, TsPtr, display_name};
use super::{
    Obj, Stored, call, cstring, fs_str, getattr, new_bytes, new_str, str_list, take_error,
};
use crate::environ::{KEYS, MOD_WSGI_VERSION, VALUES};
use crate::start_config::StartError;
use crate::wsgi::{InterpError, PyErrorInfo};

/// The `_wsgi_rs` helper module's source, run in every interpreter.
const BOOTSTRAP: &str = concat!(include_str!("bootstrap.py"), "\0");
/// The `mod_wsgi` module's source, executed by `_wsgi_rs.install_mod_wsgi`.
const MOD_WSGI: &str = include_str!("mod_wsgi.py");

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

/// `Py_InitializeFromConfig` with mod_wsgi's settings; returns the detached main tstate.
///
/// # Safety
/// Called once per process, on the thread that will finalise.
pub(super) unsafe fn initialize(p: &StartParams) -> Result<TsPtr, StartError> {
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
pub(super) unsafe fn create_sub(
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
            Ok(Interp::new(
                name,
                raw,
                own_gil,
                Some(main.clone()),
                gate.clone(),
                Some(Arc::new(objects)),
                ts,
            ))
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

/// Runs `_wsgi_rs` in the current interpreter (application group `name`) and collects its
/// objects: `sys.path` gets the process's python-path, then the `<WSGIInterpreterOptions>`
/// layers for this interpreter, and `sys.stdin`/`sys.stdout` are restricted as they say.
///
/// # Safety
/// Attached to the interpreter being set up.
pub(super) unsafe fn bootstrap(
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
        let own_pid_number = std::process::id();
        let own_pid = new_str(&own_pid_number.to_string()).ok_or_else(err)?;
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
            own_pid_number,
            release_queue: super::shared::ReleaseQueue::new(),
            last_values: parking_lot::Mutex::new(
                (0..crate::environ::KEYS.len()).map(|_| None).collect(),
            ),
            environ_template: parking_lot::Mutex::new(Vec::new()),
        })
    }
}

/// Imports, in the main interpreter, the standard library's extension modules that own-GIL
/// interpreters refuse (see `OWN_GIL_PRELOAD` in bootstrap.py for why).
///
/// # Safety
/// Attached to the main interpreter, which owns `objects`.
pub(super) unsafe fn preload_for_own_gil(objects: &Objects) {
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
