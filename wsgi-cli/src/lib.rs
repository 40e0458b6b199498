//! The `wsgi` command's library: `wsgi check` / `wsgi venv` reporting ([`check`]) and the
//! standalone server `wsgi serve` ([`serve`]). The binary only parses arguments and calls in.
//!
//! No unsafe code, but for the one mapping of a file to send in [`serve::sendfile`].
#![deny(unsafe_code)]

pub mod apache_config;
pub mod check;
pub mod serve;
