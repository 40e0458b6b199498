//! The `wsgi` command's library: `wsgi check` / `wsgi venv` reporting ([`inspect`]) and the
//! standalone server `wsgi serve` ([`serve`]). The binary only parses arguments and calls in.
//!
//! No unsafe code, but in five places, each allowed where it is: the mapping of a file to
//! send ([`serve::sendfile`]), the environment changed before threads start
//! ([`serve::front_process`]), descriptors inherited by number ([`serve::inherit`]), a
//! request body read into hyper's buffer without zeroing it first ([`serve::head`]), and a
//! TCP peer's window asked of the kernel ([`serve::peer_window`]).
#![deny(unsafe_code)]

pub mod allocator;
pub mod apache_config;
pub mod inspect;
pub mod serve;
