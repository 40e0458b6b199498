//! `ErrorLog`: where a process's log lines go. The main server's `ErrorLog` becomes the
//! master's stderr (so the front and the daemon processes, which inherit it, write there
//! too); a `<VirtualHost>`'s own `ErrorLog` receives the lines about that host's requests in
//! the front (its refusals and errors, and the output of its embedded applications), and the
//! stderr of the daemon process groups defined in it (see `wsgi_daemon`), as in mod_wsgi.
//!
//! A line's host is a thread-local set while the request's task is polled ([`InHost`]) or its
//! application runs ([`in_host`]); the tracing writer ([`Writer`]) reads it.

use std::cell::Cell;
use std::fs::File;
use std::future::Future;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::pin::Pin;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use super::error::ServeError;

/// The virtual hosts' own error logs, by host index (None: the host has none).
static HOST_LOGS: OnceLock<Vec<Option<File>>> = OnceLock::new();

thread_local! {
    /// The virtual host whose request this thread is working on.
    static CURRENT: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Whether any virtual host has an error log of its own.
static ANY_HOST_LOGS: AtomicBool = AtomicBool::new(false);

/// Sets the virtual hosts' own error logs (once, at the start of a front process).
pub fn set_host_logs(logs: Vec<Option<File>>) {
    let any = logs.iter().any(Option::is_some);
    if HOST_LOGS.set(logs).is_ok() {
        ANY_HOST_LOGS.store(any, Ordering::Relaxed);
    }
}

/// Whether any virtual host has an error log of its own (else no request needs its host
/// looked up for logging).
pub fn any_host_logs() -> bool {
    ANY_HOST_LOGS.load(Ordering::Relaxed)
}

/// The file of the current thread's host, if it has one.
fn current_file() -> Option<&'static File> {
    let host = CURRENT.with(Cell::get)?;
    HOST_LOGS.get()?.get(host)?.as_ref()
}

/// Runs `f` with log lines going to `host`'s error log.
pub fn in_host<R>(host: Option<usize>, f: impl FnOnce() -> R) -> R {
    let before = CURRENT.with(|c| c.replace(host));
    let result = f();
    CURRENT.with(|c| c.set(before));
    result
}

/// A future whose log lines go to a virtual host's error log.
pub struct InHost<F> {
    host: Option<usize>,
    inner: F,
}

impl<F> InHost<F> {
    /// Wraps `inner` for `host`.
    pub fn new(host: Option<usize>, inner: F) -> Self {
        InHost { host, inner }
    }
}

impl<F: Future + Unpin> Future for InHost<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let host = self.host;
        in_host(host, || Pin::new(&mut self.inner).poll(cx))
    }
}

/// The tracing writer: the current host's error log, else stderr.
#[derive(Clone, Copy, Default)]
pub struct Writer;

/// One log line's destination.
pub enum LineWriter {
    /// A virtual host's file.
    Host(&'static File),
    /// The process's stderr (the main `ErrorLog`, or the terminal).
    Stderr(io::Stderr),
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            LineWriter::Host(file) => file.write(buf),
            LineWriter::Stderr(err) => err.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            LineWriter::Host(file) => file.flush(),
            LineWriter::Stderr(err) => err.flush(),
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Writer {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        match current_file() {
            Some(file) => LineWriter::Host(file),
            None => LineWriter::Stderr(io::stderr()),
        }
    }
}

/// Opens a log file for appending (creating it), as root when the master runs as root.
pub fn open_log(path: &Path) -> Result<File, ServeError> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| ServeError::LogFile {
            path: path.to_path_buf(),
            source,
        })
}

/// Makes `path` this process's stderr (the main server's `ErrorLog`): what the master, and
/// every process it starts afterwards, write their log lines to. Returns the stderr it
/// replaced (the terminal, for a start-up failure to be shown there too).
pub fn redirect_stderr(path: &Path) -> Result<File, ServeError> {
    let failed = |e: io::Error| ServeError::LogFile {
        path: path.to_path_buf(),
        source: e,
    };
    let file = open_log(path)?;
    let before = io::stderr().as_fd().try_clone_to_owned().map_err(failed)?;
    nix::unistd::dup2_stderr(&file).map_err(|e| failed(e.into()))?;
    Ok(File::from(before))
}
