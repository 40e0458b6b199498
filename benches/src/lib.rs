//! Shared set-up for the wsgi-rs benchmarks.
