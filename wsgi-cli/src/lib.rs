//! The `wsgi` command's library: `wsgi check` / `wsgi venv` reporting ([`check`]) and the
//! standalone server `wsgi serve` ([`serve`]). The binary only parses arguments and calls in.
#![forbid(unsafe_code)]

pub mod apache_config;
pub mod check;
pub mod serve;
