//! Helpers shared by the integration tests of the wsgi-rs crates, so that each job has one
//! implementation: a crate's own `tests/util` keeps only what its tests alone use.
//!
//! Modules by job:
//!
//! * [`fs`]: scratch folders under /var/tmp and files the servers' users can read.
//! * [`wait`]: bounded polling (`eventually`), lines from a child's output, files that fill up.
//! * [`process`]: children the tests start (output readers, signals, stop, exit), and /proc.
//! * [`http`]: a raw HTTP/1.1 client over real sockets and its response parsers.
//! * [`apache`]: Debian's Apache httpd with the built module (or mod_wsgi) on 127.0.0.1.
//! * [`apps`]: WSGI test applications shared by several crates, and readers of their answers.
//! * [`curl`]: curl as the HTTP/2 tests' client, and their checks of uploads and streams.
//! * [`frameworks`]: the Flask and Django examples' pages, checked through any front.
//! * [`venvs`]: where `scripts/setup-test-env.sh` puts the test environment, and venvs.
//!
//! Nothing here depends on a crate of the workspace: using it never links CPython or the
//! server into a test. Every wait is bounded; only processes a test started are signalled.
#![warn(missing_docs)]

pub mod apache;
pub mod apps;
pub mod curl;
pub mod frameworks;
pub mod fs;
pub mod http;
pub mod process;
pub mod venvs;
pub mod wait;
