//! Embedded CPython for WSGI hosting.
pub mod embedded;
