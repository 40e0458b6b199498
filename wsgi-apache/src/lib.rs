//! mod_wsgi_rs: a thin Apache httpd 2.4 module that runs mod_wsgi configurations on wsgi-rs.
//!
//! Load it with `LoadModule wsgi_rs_module /path/to/mod_wsgi_rs.so` (the built
//! `libwsgi_apache.so`, renamed or not). The C side (`src/shim.c`, compiled against Debian's
//! `apache2-dev` headers) declares every mod_wsgi directive to Apache from wsgi-config's
//! directive table and forwards each one to the same builder `wsgi check` uses, so Apache refuses
//! a bad configuration with the same messages. All logic lives in the other crates.
//!
//! Every function Apache calls into Rust is declared with `ffi::ffi_fn!`, which catches panics
//! (since Rust 1.81 a panic escaping an `extern "C"` function aborts the process, which in an
//! Apache child would kill every request in flight), and every request it receives becomes an
//! `ffi::Request` there: `src/ffi.rs` is the module's whole C boundary.

mod applog;
mod child;
mod daemon_mode;
mod directive_callbacks;
mod environ;
mod ffi;
mod handlers;
mod htaccess;
mod module;
mod request;
mod runtime;
mod script_hooks;

pub use module::wsgi_rs_module;
