//! Embedded CPython for WSGI hosting, as Apache mod_wsgi does it: one CPython per process
//! ([`Runtime`]), a main interpreter plus one sub-interpreter per application group
//! ([`InterpreterHandle`]), venv-aware start-up ([`StartConfig`]), WSGI script loading and
//! reloading, and the whole PEP 3333 call streamed between a [`RequestBody`] and a
//! [`ResponseSink`].
//!
//! Threads: any thread may call into any interpreter; each (thread, interpreter) pair gets
//! its own CPython thread state, and the GIL is held only while Python runs. Everything that
//! touches CPython is in the private `ffi` module, by raw `pyo3::ffi` (pyo3's safe API is not
//! sound inside sub-interpreters).
//!
//! Limitations to know: C extensions built with PyO3 or Cython (numpy, rpds, msgpack) load
//! only into the first interpreter that imports them; run such apps in the main interpreter
//! (`%{GLOBAL}`, group `""`). On Python 3.11/3.12 a CPU-bound call in one group can delay
//! other groups until it blocks (the shared GIL does not hand over between interpreters).
#![deny(missing_docs)]

mod config;
pub mod embedded;
mod environ;
mod ffi;
mod response;
mod runtime;
mod wsgi;

pub use config::{StartConfig, StartError};
pub use environ::MOD_WSGI_VERSION;
pub use runtime::{
    Attached, DEFAULT_DRAIN, DEFAULT_THREAD_JOIN, InterpreterHandle, Runtime, ShutdownReport,
};
pub use wsgi::{
    AppError, CallOptions, InterpError, LoadStatus, Outcome, PyErrorInfo, ReloadMode, RequestBody,
    RequestHead, ResponseSink, Scheme, ScriptError, ScriptSpec,
};
