//! Apache mod_wsgi configuration, read into a typed and validated model.
//!
//! Stage 1 ([`reader`]) turns Apache httpd configuration text into a tree of directives with
//! their file and line. Stage 2 ([`builder`]) is fed one directive at a time with its context
//! (server, virtual host, directory, location), so that the file reader here and Apache's own
//! directive callbacks build the same [`Config`] through the same code. [`route`] maps a
//! request to its script, process group and application group, and [`venv`] inspects
//! virtual environments without starting Python.
#![forbid(unsafe_code)]
// Configuration errors carry file:line, the directive and the fix; they are built once per bad
// directive, never on a request path, so their size does not matter.
#![allow(clippy::result_large_err)]

pub mod authz;
pub mod builder;
pub mod daemon_options;
pub mod directives;
pub mod env;
pub mod error;
pub mod groups;
pub mod handlers;
pub mod load;
pub mod logformat;
pub mod model;
pub mod options;
pub mod path_walk;
pub mod proxy;
pub mod reader;
pub mod remoteip;
pub mod report;
pub mod route;
pub mod serve_support;
pub mod tls;
pub mod venv;

pub use builder::{ConfigBuilder, Context};
pub use error::{ConfigError, ConfigWarning, ErrorKind};
pub use load::{load_file, load_str};
pub use model::*;
