//! Embedded CPython for WSGI hosting, as Apache mod_wsgi does it: one CPython per process
//! ([`Runtime`]), a main interpreter plus one sub-interpreter per application group
//! ([`InterpreterHandle`]), venv-aware start-up ([`StartConfig`]), WSGI script loading and
//! reloading, and the whole PEP 3333 call streamed between a [`RequestBody`] and a
//! [`ResponseSink`]. [`hook_scripts`] calls the other scripts mod_wsgi runs (access, auth, dispatch)
//! through [`InterpreterHandle::call_hook`]. Every interpreter has mod_wsgi's `mod_wsgi`
//! module (`import mod_wsgi`): the process facts of [`StartConfig`], the shutdown and request
//! events ([`Runtime::process_stopping`]), `request_data()`, and the process's request counters.
//!
//! Threads: any thread may call into any interpreter; each (thread, interpreter) pair gets
//! its own CPython thread state, and the GIL is held only while Python runs. Everything that
//! touches CPython is in the private `ffi` module, by raw `pyo3::ffi` (pyo3's safe API is not
//! sound inside sub-interpreters).
//!
//! Limitations to know: C extensions built with PyO3 or Cython (numpy, rpds, msgpack) load
//! only into the first interpreter that imports them; run such apps in the main interpreter
//! (`%{GLOBAL}`, group `""`). On Python 3.11/3.12 the shared GIL is not handed over between
//! interpreters at the switch interval, so a CPU-bound call in one group used to hold off
//! every other group until it returned; attaching here waits as a thread of the interpreter
//! holding the GIL, then switches, so another group waits about one switch interval (5 ms).
//!
//! Own GIL (`WSGIPerInterpreterGIL On`, [`InterpreterOptions`], Python 3.12+): groups run
//! Python in parallel. Extension modules that refuse such interpreters fail the import with
//! an error naming the module and the remedy (`WSGIApplicationGroup %{GLOBAL}`, or turn it
//! off). On 3.12.1 importing some standard modules (`datetime`, `decimal`, `ctypes`, `hashlib`,
//! `pyexpat`, ...) first in an own-GIL group corrupts the heap at the next import elsewhere or
//! at finalisation (CPython runs a single-phase module's init before refusing it); the
//! runtime therefore imports those into the main interpreter at start when the option is on.
//! A third-party single-phase C extension can do the same: run apps that need one in
//! `%{GLOBAL}`.
#![deny(missing_docs)]

pub mod embedded;
mod environ;
mod ffi;
mod forks;
pub mod hook_scripts;
mod metrics;
mod path_map;
mod response;
pub use response::{parse_content_length, usual_reason};
mod runtime;
mod script_mtime;
mod start_config;
mod wsgi;

pub use environ::{MOD_WSGI_VERSION, SERVE_APACHE_VERSION, format_request_id, set_apache_version};
pub use ffi::shared::SharedChunk;
pub use forks::process_id;
pub use runtime::{
    Attached, DEFAULT_DRAIN, DEFAULT_THREAD_JOIN, InterpreterHandle, Runtime, ShutdownReport,
};
pub use start_config::{InterpreterOptions, StartConfig, StartError};
pub use wsgi::{
    AppCall, AppError, CallOptions, HeadSource, InterpError, LoadStatus, Outcome, PairRefill,
    PyErrorInfo, ReloadMode, RequestBody, RequestHead, ResponseSink, Scheme, ScriptError,
    ScriptSpec, Stamps, callables_found, copy_to_uninit, method_text, next_request_id, now_us,
    protocol_text, read_body_into,
};
