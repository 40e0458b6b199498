//! The one guard every entry point from C goes through.

use std::panic::{AssertUnwindSafe, catch_unwind};

/// Runs `f`, turning a panic into `fallback` (with the panic's message) so that no panic ever
/// unwinds into Apache.
pub(crate) fn guard<T>(what: &str, fallback: impl FnOnce(String) -> T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(value) => value,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            fallback(format!(
                "wsgi-rs internal error in {what}: {message} (please report it)"
            ))
        }
    }
}
