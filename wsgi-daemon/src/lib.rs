//! Daemon process groups (`WSGIDaemonProcess`): supervision and dispatch.
//!
//! * [`supervisor`]: one listening unix socket per group (in a private directory, mode 0600)
//!   and `processes` daemon processes per group, started by **exec** of the `wsgi` (or
//!   `wsgi-daemon`) program, never by fork of the threaded server; restarted with backoff when
//!   they crash, replaced gracefully when they recycle, all stopped on shutdown.
//! * [`process`]: the daemon process itself: privileges dropped before Python starts, then
//!   `threads` workers running requests through `wsgi-interp`, and the recycling triggers
//!   (maximum-requests, restart-interval, inactivity-timeout, request-timeout, script changes,
//!   SIGUSR1, SIGXCPU from cpu-time-limit); resource limits, CPU priority and the switch
//!   interval are applied before any request runs. startup-timeout and inactivity-timeout
//!   start where mod_wsgi starts them (`timers`): an idle process keeps running.
//! * [`client`]: the front's side, [`DaemonClient::dispatch`], with the same body, sink and
//!   outcome types as an embedded call; with the `tokio` feature, `async_client` is the same
//!   as a future, for a front on a tokio runtime (`wsgi serve`'s).
//! * [`protocol`]: the framed wire protocol between the two.
//! * [`shared_buffer`]: response bytes a daemon hands the front in memory both map, for
//!   the front to send on without their crossing the socket.
//! * [`spec`]: the start-up hand-over from supervisor to daemon process.

#[cfg(feature = "tokio")]
pub mod async_client;
pub mod client;
pub mod fd_passing;
pub mod forklog;
mod frames;
pub mod job_queue;
mod limits;
pub mod panics;
pub mod process;
pub mod program;
pub mod protocol;
pub mod shared_buffer;
pub mod spec;
pub mod supervisor;
mod timers;

#[cfg(feature = "tokio")]
pub use async_client::{AsyncDaemonClient, AsyncRequestBody, AsyncResponseSink};
pub use client::{DaemonClient, DispatchError, Endpoint};
pub use limits::{SCHED_BATCH_VAR, batch_scheduling};
pub use protocol::{DaemonRequest, RequestRef};
pub use shared_buffer::BufferChunk;
pub use supervisor::{GroupStatus, ProcessStatus, Supervisor, SupervisorError, SupervisorOptions};

/// The variable that makes daemon processes log JSON lines (`json`), as `wsgi serve
/// --log-format json` sets it for them.
pub const LOG_FORMAT_VAR: &str = "WSGI_RS_LOG_FORMAT";

/// Logging for a daemon process or the stand-alone supervisor: `RUST_LOG` (default `info`),
/// to stderr, each event written under [`forklog`]'s lock; JSON lines when
/// [`LOG_FORMAT_VAR`] is `json`. Does nothing if a subscriber is already set.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(forklog::ForkSafeStderr);
    let _ = if std::env::var(LOG_FORMAT_VAR).is_ok_and(|v| v == "json") {
        builder.json().with_current_span(false).try_init()
    } else {
        // Colours only on a terminal: under Apache, stderr is the error log.
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init()
    };
}
