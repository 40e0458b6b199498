//! The only module with `unsafe` code: every call into CPython goes through here, by raw
//! `pyo3::ffi` (pyo3's safe layer is wrong inside sub-interpreters: ARCHITECTURE.md, "Why raw
//! `pyo3::ffi`, not pyo3's safe layer").
//!
//! # Blanket contract
//!
//! * A function taking or returning `*mut ffi::PyObject`, an [`Obj`] or a [`Stored`] must run
//!   on a thread *attached* to the interpreter that owns those objects: the thread restored
//!   its own thread state for that interpreter (`PyEval_RestoreThread`) and holds the GIL.
//!   Attachment is tracked by our own thread-local (see `tstate::ATTACHED`), never by
//!   `PyGILState_Check`, which lies once sub-interpreters exist.
//! * Objects never cross interpreters: each interpreter has its own [`interp::Objects`] table.
//! * Every `extern "C"` function CPython calls runs its body under `catch_unwind` and turns a
//!   panic into a Python exception (`host::trampoline`).
//!
//! # Files
//!
//! Each file has one job; each uses only the ones listed before it (and this module's
//! object helpers), so there is no import circle:
//!
//! * `gate`: admission into Python, closed by shutdown.
//! * `interp`: one interpreter ([`interp::Interp`]) and its tables.
//! * `tstate`: the calling thread's thread states and attachment mark.
//! * `gil`: taking the GIL, fairly between interpreters that share it.
//! * `attach`: `Interp::run`, `without_gil`, and the [`attach::Attached`] proof.
//! * `shared`: large response `bytes` lent to the front without copying ([`shared::SharedChunk`]).
//! * `host`: the Rust functions Python calls (`start_response`, `write`, `wsgi.input`, logs).
//! * `finalize`, `startup`, `lifecycle`: ending interpreters and finalising; starting CPython
//!   and making interpreters; the `wsgi-python-main` thread that does both.
//! * `call`, `hook`: loading scripts and the WSGI call; access, auth and dispatch scripts.

pub(crate) mod attach;
pub(crate) mod call;
mod finalize;
mod gate;
mod gil;
pub(crate) mod hook;
pub(crate) mod host;
pub(crate) mod interp;
pub(crate) mod lifecycle;
pub(crate) mod shared;
pub(crate) mod startup;
pub(crate) mod template;
pub(crate) mod tstate;

use std::ffi::{CStr, CString, c_char};
use std::ptr::NonNull;

use pyo3::ffi;

use crate::wsgi::PyErrorInfo;

/// An owned strong reference to a Python object. It is `!Send` and only ever created while
/// attached; dropping it decrements the count in the interpreter the thread is attached to,
/// which is the owner by the module contract.
pub(crate) struct Obj(NonNull<ffi::PyObject>);

impl Obj {
    /// Takes ownership of a new reference; `None` for NULL (a Python error is then set).
    ///
    /// # Safety
    /// `p` is NULL or a new (owned) reference, and the thread is attached to its interpreter.
    pub(crate) unsafe fn own(p: *mut ffi::PyObject) -> Option<Obj> {
        NonNull::new(p).map(Obj)
    }

    /// Takes a new reference to a borrowed object.
    ///
    /// # Safety
    /// `p` is a valid object of the interpreter the thread is attached to.
    pub(crate) unsafe fn borrowed(p: *mut ffi::PyObject) -> Obj {
        // SAFETY: p is valid and we are attached (caller's contract).
        unsafe { ffi::Py_IncRef(p) };
        Obj(NonNull::new(p).expect("borrowed object pointer is not NULL"))
    }

    /// The raw pointer, borrowed for as long as `self` lives.
    pub(crate) fn as_ptr(&self) -> *mut ffi::PyObject {
        self.0.as_ptr()
    }

    /// Gives the reference away (to a function that steals it).
    pub(crate) fn into_ptr(self) -> *mut ffi::PyObject {
        let p = self.0.as_ptr();
        std::mem::forget(self);
        p
    }
}

impl Drop for Obj {
    fn drop(&mut self) {
        // SAFETY: an Obj is !Send and only exists while attached to its owner (module contract).
        unsafe { ffi::Py_DecRef(self.0.as_ptr()) }
    }
}

/// A strong reference kept across attachments in an interpreter's table. It is released
/// explicitly (with [`Stored::release`]) while attached to the owner, before the interpreter
/// ends; dropping it without releasing leaks one reference, never touching CPython.
pub(crate) struct Stored(NonNull<ffi::PyObject>);

// SAFETY: a Stored is only dereferenced while attached to its owning interpreter, which
// serialises access through that interpreter's GIL; moving the pointer between threads is fine.
unsafe impl Send for Stored {}
// SAFETY: as for Send: shared access only hands out the pointer, used under the owner's GIL.
unsafe impl Sync for Stored {}

impl Stored {
    /// Keeps `obj` beyond the current attachment.
    pub(crate) fn new(obj: Obj) -> Stored {
        Stored(NonNull::new(obj.into_ptr()).expect("Obj is never NULL"))
    }

    /// The object, borrowed.
    pub(crate) fn ptr(&self) -> *mut ffi::PyObject {
        self.0.as_ptr()
    }

    /// Drops the reference.
    ///
    /// # Safety
    /// The thread is attached to the interpreter that owns the object.
    pub(crate) unsafe fn release(self) {
        // SAFETY: attached to the owner (caller's contract); we own this reference.
        unsafe { ffi::Py_DecRef(self.0.as_ptr()) }
    }
}

/// A `CString` from text that may hold NUL bytes (they are replaced, never truncated silently).
pub(crate) fn cstring(text: &str) -> CString {
    CString::new(text.replace('\0', "\\0")).expect("NULs were replaced")
}

unsafe extern "C" {
    // Public in CPython's `cpython/dictobject.h` (3.11 to 3.13), though underscored; pyo3-ffi
    // leaves it out.
    fn _PyDict_NewPresized(minused: ffi::Py_ssize_t) -> *mut ffi::PyObject;
}

/// An empty `dict` with room for `n` items without resizing.
///
/// # Safety
/// Attached.
pub(crate) unsafe fn new_dict(n: usize) -> Option<Obj> {
    // SAFETY: attached (caller's contract); any size is valid (CPython caps it).
    unsafe { Obj::own(_PyDict_NewPresized(n as ffi::Py_ssize_t)) }
}

/// `str` from a UTF-8 Rust string.
///
/// # Safety
/// Attached.
pub(crate) unsafe fn new_str(text: &str) -> Option<Obj> {
    // SAFETY: valid pointer/length of UTF-8 bytes; attached (caller's contract).
    unsafe {
        Obj::own(ffi::PyUnicode_FromStringAndSize(
            text.as_ptr().cast::<c_char>(),
            text.len() as ffi::Py_ssize_t,
        ))
    }
}

/// `str` decoded from latin-1 bytes (PEP 3333 native strings).
///
/// # Safety
/// Attached.
pub(crate) unsafe fn latin1_str(bytes: &[u8]) -> Option<Obj> {
    // SAFETY: valid pointer/length; latin-1 decoding cannot fail; attached (caller's contract).
    unsafe {
        Obj::own(ffi::PyUnicode_DecodeLatin1(
            bytes.as_ptr().cast::<c_char>(),
            bytes.len() as ffi::Py_ssize_t,
            std::ptr::null(),
        ))
    }
}

/// `str` from file-system bytes (`os.fsdecode`).
///
/// # Safety
/// Attached.
pub(crate) unsafe fn fs_str(bytes: &[u8]) -> Option<Obj> {
    // SAFETY: valid pointer/length; attached (caller's contract).
    unsafe {
        Obj::own(ffi::PyUnicode_DecodeFSDefaultAndSize(
            bytes.as_ptr().cast::<c_char>(),
            bytes.len() as ffi::Py_ssize_t,
        ))
    }
}

/// `bytes` copied from a slice.
///
/// # Safety
/// Attached.
pub(crate) unsafe fn new_bytes(bytes: &[u8]) -> Option<Obj> {
    // SAFETY: valid pointer/length; attached (caller's contract).
    unsafe {
        Obj::own(ffi::PyBytes_FromStringAndSize(
            bytes.as_ptr().cast::<c_char>(),
            bytes.len() as ffi::Py_ssize_t,
        ))
    }
}

/// The `str` items of a list, as text (other items skipped; empty if `list` is no list).
///
/// # Safety
/// Attached; `list` valid.
pub(crate) unsafe fn str_list(list: *mut ffi::PyObject) -> Vec<String> {
    // SAFETY: attached and `list` valid (caller's contract); items are borrowed while the
    // list holds them.
    unsafe {
        if ffi::PyList_Check(list) == 0 {
            return Vec::new();
        }
        let n = ffi::PyList_Size(list).max(0);
        (0..n)
            .filter_map(|i| str_text(ffi::PyList_GetItem(list, i)))
            .collect()
    }
}

/// The UTF-8 text of a `str` (lossy for lone surrogates); `None` if `o` is not a `str`.
///
/// # Safety
/// Attached; `o` valid.
pub(crate) unsafe fn str_text(o: *mut ffi::PyObject) -> Option<String> {
    // SAFETY: o is valid and we are attached (caller's contract).
    unsafe {
        if ffi::PyUnicode_Check(o) == 0 {
            return None;
        }
        let mut len: ffi::Py_ssize_t = 0;
        let p = ffi::PyUnicode_AsUTF8AndSize(o, &mut len);
        if p.is_null() {
            ffi::PyErr_Clear();
            let b = Obj::own(ffi::PyUnicode_AsEncodedString(
                o,
                c"utf-8".as_ptr(),
                c"backslashreplace".as_ptr(),
            ))?;
            return bytes_of(b.as_ptr()).map(|b| String::from_utf8_lossy(b).into_owned());
        }
        let slice = std::slice::from_raw_parts(p.cast::<u8>(), len as usize);
        Some(String::from_utf8_lossy(slice).into_owned())
    }
}

/// The contents of a `bytes` object, borrowed from it.
///
/// # Safety
/// Attached; `o` valid and kept alive for as long as the slice is used (bytes are immutable,
/// so the slice may be read with the GIL released while a reference is held).
pub(crate) unsafe fn bytes_of<'a>(o: *mut ffi::PyObject) -> Option<&'a [u8]> {
    // SAFETY: o is valid, we are attached (caller's contract); PyBytes_Check guards the cast.
    unsafe {
        if ffi::PyBytes_Check(o) == 0 {
            return None;
        }
        let mut p: *mut c_char = std::ptr::null_mut();
        let mut len: ffi::Py_ssize_t = 0;
        if ffi::PyBytes_AsStringAndSize(o, &mut p, &mut len) != 0 {
            ffi::PyErr_Clear();
            return None;
        }
        Some(std::slice::from_raw_parts(p.cast::<u8>(), len as usize))
    }
}

/// `str(o)`, or a placeholder when that raises.
///
/// # Safety
/// Attached; `o` valid.
pub(crate) unsafe fn display(o: *mut ffi::PyObject) -> String {
    // SAFETY: attached, o valid (caller's contract).
    unsafe {
        match Obj::own(ffi::PyObject_Str(o)) {
            Some(s) => str_text(s.as_ptr()).unwrap_or_default(),
            None => {
                ffi::PyErr_Clear();
                "<str() failed>".to_string()
            }
        }
    }
}

/// Calls `f(*args)`.
///
/// # Safety
/// Attached; `f` and every arg valid objects of this interpreter.
pub(crate) unsafe fn call(f: *mut ffi::PyObject, args: &[*mut ffi::PyObject]) -> Option<Obj> {
    // SAFETY: attached, valid callable and args (caller's contract); args outlive the call.
    unsafe {
        Obj::own(ffi::PyObject_Vectorcall(
            f,
            args.as_ptr(),
            args.len(),
            std::ptr::null_mut(),
        ))
    }
}

/// `getattr(o, name)`.
///
/// # Safety
/// Attached; `o` valid.
pub(crate) unsafe fn getattr(o: *mut ffi::PyObject, name: &CStr) -> Option<Obj> {
    // SAFETY: attached, o valid (caller's contract), name NUL-terminated.
    unsafe { Obj::own(ffi::PyObject_GetAttrString(o, name.as_ptr())) }
}

/// Takes the pending Python exception and renders it; `format_exc` (from the interpreter's
/// `_wsgi_rs` module) formats the traceback when given.
///
/// # Safety
/// Attached; `format_exc` NULL or a valid callable of this interpreter.
pub(crate) unsafe fn take_error(format_exc: *mut ffi::PyObject) -> PyErrorInfo {
    // SAFETY: attached (caller's contract); every pointer below comes from CPython and is
    // checked for NULL before use; references we own are wrapped in Obj.
    unsafe {
        let mut t = std::ptr::null_mut();
        let mut v = std::ptr::null_mut();
        let mut tb = std::ptr::null_mut();
        #[allow(deprecated)]
        {
            ffi::PyErr_Fetch(&mut t, &mut v, &mut tb);
            if t.is_null() {
                return PyErrorInfo {
                    type_name: "SystemError".into(),
                    message: "an error was reported without a Python exception".into(),
                    traceback: String::new(),
                };
            }
            ffi::PyErr_NormalizeException(&mut t, &mut v, &mut tb);
        }
        let t = Obj::own(t);
        let v = Obj::own(v);
        let tb = Obj::own(tb);
        let type_name = t
            .as_ref()
            .and_then(|t| getattr(t.as_ptr(), c"__qualname__"))
            .and_then(|n| str_text(n.as_ptr()))
            .unwrap_or_else(|| "Exception".to_string());
        ffi::PyErr_Clear();
        let Some(v) = v else {
            return PyErrorInfo {
                traceback: format!("{type_name}\n"),
                type_name,
                message: String::new(),
            };
        };
        if let Some(tb) = &tb {
            ffi::PyException_SetTraceback(v.as_ptr(), tb.as_ptr());
        }
        let message = display(v.as_ptr());
        let traceback = if format_exc.is_null() {
            None
        } else {
            call(format_exc, &[v.as_ptr()]).and_then(|s| str_text(s.as_ptr()))
        };
        ffi::PyErr_Clear();
        let traceback = traceback.unwrap_or_else(|| format!("{type_name}: {message}\n"));
        PyErrorInfo {
            type_name,
            message,
            traceback,
        }
    }
}

/// Raises `exc(message)` in the current interpreter.
///
/// # Safety
/// Attached; `exc` an exception type.
pub(crate) unsafe fn raise(exc: *mut ffi::PyObject, message: &str) {
    let msg = cstring(message);
    // SAFETY: attached, exc is an exception class (caller's contract), msg NUL-terminated.
    unsafe { ffi::PyErr_SetString(exc, msg.as_ptr()) }
}

/// Major, minor and micro version of the libpython actually loaded (safe before start-up).
pub(crate) fn runtime_version() -> (u8, u8, u8) {
    // SAFETY: Py_GetVersion returns a static NUL-terminated string and may be called before
    // initialisation (CPython lists it among the functions safe to call before
    // Py_Initialize; it reports the libpython actually loaded).
    let text = unsafe { CStr::from_ptr(ffi::Py_GetVersion()) }.to_string_lossy();
    let number = text.split_whitespace().next().unwrap_or("");
    let mut parts = number.split('.').map(|p| {
        p.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse::<u8>()
            .unwrap_or(0)
    });
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}
