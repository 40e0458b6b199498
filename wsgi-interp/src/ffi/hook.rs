//! Hook scripts: loading them (and reloading a changed file) and calling one of their
//! module-level functions with an environ and plain arguments.

use std::os::unix::ffi::OsStrExt;

use pyo3::ffi;

use super::attach::{Attached, lock_attached};
use super::interp::HookEntry;
use super::{Obj, Stored, bytes_of, call, cstring, fs_str, latin1_str, new_str, str_text};
use super::{getattr, take_error};
use crate::hook_scripts::{HookArg, HookError, HookFunction, HookScript, HookValue};
use crate::wsgi::{CallOptions, RequestHead};

/// The module and `wsgi.errors` log of a hook script, loaded (or reloaded) as needed.
fn load(
    py: &Attached<'_>,
    script: &HookScript,
    received: Option<std::time::Instant>,
) -> Result<(Obj, Obj), HookError> {
    let interp = py.interp();
    if !script.path.is_absolute() {
        return Err(HookError::NotAbsolute {
            directive: script.directive,
            path: script.path.clone(),
        });
    }
    let mtime =
        crate::script_mtime::modified(&script.path, received).map_err(|e| HookError::NotFound {
            directive: script.directive,
            path: script.path.clone(),
            reason: e.to_string(),
        })?;
    let objects = interp.objects().ok_or(crate::InterpError::ShuttingDown)?;
    let mut table = lock_attached(py, &interp.hooks);
    // SAFETY: attached (`py`); every object touched belongs to this interpreter.
    unsafe {
        if let Some(entry) = table.get(&script.path) {
            if entry.mtime == Some(mtime) || !script.reload {
                return Ok((
                    Obj::borrowed(entry.module.ptr()),
                    Obj::borrowed(entry.errors.ptr()),
                ));
            }
            if let Some(old) = table.remove(&script.path) {
                old.release();
            }
        }
        let failed = || HookError::Load {
            directive: script.directive,
            path: script.path.clone(),
            error: Box::new(interp.explain(take_error(objects.format_exc.ptr()))),
        };
        let path = fs_str(script.path.as_os_str().as_bytes()).ok_or_else(failed)?;
        let module = call(objects.load_module.ptr(), &[path.as_ptr()]).ok_or_else(failed)?;
        let tag = new_str(&format!("{} {}", interp.display(), script.path.display()))
            .ok_or_else(failed)?;
        let level = Obj::own(ffi::PyLong_FromLong(1)).ok_or_else(failed)?;
        let errors =
            call(objects.log_writer.ptr(), &[tag.as_ptr(), level.as_ptr()]).ok_or_else(failed)?;
        table.insert(
            script.path.clone(),
            HookEntry {
                module: Stored::new(Obj::borrowed(module.as_ptr())),
                errors: Stored::new(Obj::borrowed(errors.as_ptr())),
                mtime: Some(mtime),
            },
        );
        tracing::debug!(group = %interp.name, script = %script.path.display(), directive = script.directive, "hook script loaded");
        Ok((module, errors))
    }
}

/// Converts a returned object.
///
/// # Safety
/// Attached; `o` valid. On `Err` a Python exception is set (raised while iterating).
unsafe fn to_value(o: *mut ffi::PyObject, nested: bool) -> Result<HookValue, ()> {
    // SAFETY: attached and `o` valid (caller's contract); every new reference is owned by Obj.
    unsafe {
        if o == ffi::Py_None() {
            return Ok(HookValue::None);
        }
        if o == ffi::Py_True() || o == ffi::Py_False() {
            return Ok(HookValue::Bool(o == ffi::Py_True()));
        }
        if let Some(text) = str_text(o) {
            return Ok(HookValue::Str(text));
        }
        if let Some(bytes) = bytes_of(o) {
            return Ok(HookValue::Bytes(bytes.to_vec()));
        }
        let type_name = || {
            std::ffi::CStr::from_ptr((*ffi::Py_TYPE(o)).tp_name)
                .to_string_lossy()
                .into_owned()
        };
        if nested {
            return Ok(HookValue::Other(type_name()));
        }
        let Some(iter) = Obj::own(ffi::PyObject_GetIter(o)) else {
            ffi::PyErr_Clear();
            return Ok(HookValue::Other(type_name()));
        };
        let mut items = Vec::new();
        loop {
            let Some(item) = Obj::own(ffi::PyIter_Next(iter.as_ptr())) else {
                if !ffi::PyErr_Occurred().is_null() {
                    return Err(());
                }
                break;
            };
            items.push(to_value(item.as_ptr(), true)?);
        }
        Ok(HookValue::Items(items))
    }
}

/// Calls `function(environ, *args)` of a hook script in the attached interpreter.
pub(crate) fn call_hook(
    py: &Attached<'_>,
    script: &HookScript,
    function: HookFunction,
    head: &RequestHead,
    opts: &CallOptions,
    args: &[HookArg],
) -> Result<HookValue, HookError> {
    let interp = py.interp();
    let (module, errors) = load(py, script, head.stamps.received)?;
    let objects = interp.objects().ok_or(crate::InterpError::ShuttingDown)?;
    let raised = || HookError::Raised {
        directive: script.directive,
        path: script.path.clone(),
        function,
        // SAFETY: called only while attached, right after a failed call set the exception.
        error: Box::new(interp.explain(unsafe { take_error(objects.format_exc.ptr()) })),
    };
    // SAFETY: attached (`py`); the module, its dict and every object made here belong to this
    // interpreter; new references are owned by Obj, the dict entry is borrowed and taken with
    // a new reference before any other Python code runs.
    unsafe {
        let dict = ffi::PyModule_GetDict(module.as_ptr());
        let name = cstring(function.name);
        let found = if dict.is_null() {
            ffi::PyErr_Clear();
            std::ptr::null_mut()
        } else {
            ffi::PyDict_GetItemString(dict, name.as_ptr())
        };
        if found.is_null() {
            return Err(HookError::MissingFunction {
                directive: script.directive,
                path: script.path.clone(),
                function,
            });
        }
        let f = Obj::borrowed(found);
        let environ = super::call::build_environ(&objects, head, opts, None, None, &errors)
            .ok_or_else(raised)?;
        let mut owned = Vec::with_capacity(args.len() + 1);
        owned.push(environ);
        for arg in args {
            let o = match arg {
                HookArg::Str(s) => new_str(s),
                HookArg::Latin1(b) => latin1_str(b),
            };
            owned.push(o.ok_or_else(raised)?);
        }
        let ptrs: Vec<*mut ffi::PyObject> = owned.iter().map(Obj::as_ptr).collect();
        let result = call(f.as_ptr(), &ptrs).ok_or_else(raised);
        drop(owned);
        // Lines the function wrote without a final newline reach the log now.
        match getattr(errors.as_ptr(), c"flush").and_then(|m| call(m.as_ptr(), &[])) {
            Some(_) => {}
            None => ffi::PyErr_Clear(),
        }
        let result = result?;
        to_value(result.as_ptr(), false).map_err(|()| raised())
    }
}
