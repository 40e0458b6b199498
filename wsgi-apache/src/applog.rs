//! Python's output in an Apache child: what an application writes to `wsgi.errors`,
//! `sys.stderr` or `sys.stdout` reaches wsgi-interp's host log as `tracing` events, as do
//! wsgi-interp's own messages. Here they become lines of Apache's error log at once, as
//! mod_wsgi writes them: for the request this thread is serving ([`for_request`]: with its
//! client, through `ap_log_rerror`), else for the server (threads the application started,
//! once [`install`] made this the process's logger).

use std::cell::Cell;
use std::ffi::{CString, c_char, c_int};
use std::fmt::Write as _;
use std::sync::OnceLock;

use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{Dispatch, Event, Level, Metadata, Subscriber, span};

use crate::ffi::{Request, RequestRec, log_lines};

// The shim's log calls (`src/shim.c`), for the request of [`CURRENT`]. The request is kept as a
// raw pointer here because a thread-local cannot carry the `Request`'s lifetime: [`for_request`]
// sets it for exactly the time it borrows the `Request`.
unsafe extern "C" {
    fn wsgi_rs_log_text(r: *mut RequestRec, level: c_int, text: *const c_char);
    fn wsgi_rs_log_enabled(r: *mut RequestRec, level: c_int) -> c_int;
}

/// The target of the lines Python code writes (wsgi-interp's `_native_log`).
const PYTHON_TARGET: &str = "wsgi_interp::python";

thread_local! {
    /// The request this thread serves while [`for_request`] runs (NULL: none).
    static CURRENT: Cell<*mut RequestRec> = const { Cell::new(std::ptr::null_mut()) };
}

/// Apache's level (`APLOG_*`) for an event: what Python code writes is logged at `error`,
/// `sys.stdout` too, as mod_wsgi logs it (so `print()` shows at the default `LogLevel warn`);
/// wsgi-interp's own messages at their level.
fn apache_level(metadata: &Metadata<'_>) -> c_int {
    if metadata.target() == PYTHON_TARGET {
        return 3;
    }
    match *metadata.level() {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG => 7,
        Level::TRACE => 8,
    }
}

/// The subscriber writing events to Apache's error log.
struct ApacheLog;

/// An event's message, then its other fields as ` name=value`.
#[derive(Default)]
struct Line {
    message: String,
    fields: String,
}

impl Visit for Line {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

impl Subscriber for ApacheLog {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        // Whether a line is logged depends on the request's LogLevel: ask each time.
        Interest::sometimes()
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        let r = CURRENT.with(Cell::get);
        // SAFETY: `r` is NULL or the live request this thread serves (set by `for_request`
        // for exactly that time).
        unsafe { wsgi_rs_log_enabled(r, apache_level(metadata)) != 0 }
    }

    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        // Spans are not logged; every one shares an id.
        span::Id::from_u64(1)
    }

    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}

    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut line = Line::default();
        event.record(&mut line);
        let metadata = event.metadata();
        let r = CURRENT.with(Cell::get);
        let level = apache_level(metadata);
        if metadata.target() == PYTHON_TARGET {
            // What the application wrote, as it wrote it (its tag is wsgi-interp's).
            let text = CString::new(line.message.replace('\0', " ")).expect("NULs were replaced");
            // SAFETY: `r` is NULL or the live request this thread serves; the text is a valid
            // C string for the call.
            unsafe { wsgi_rs_log_text(r, level, text.as_ptr()) };
        } else {
            // SAFETY: `r` is NULL or the live request this thread serves.
            unsafe { log_lines(r, level, &format!("{}{}", line.message, line.fields)) };
        }
    }

    fn enter(&self, _: &span::Id) {}

    fn exit(&self, _: &span::Id) {}
}

/// The one dispatcher (tracing re-examines every call site each time a dispatcher is made, so
/// it is made once).
fn dispatch() -> &'static Dispatch {
    static DISPATCH: OnceLock<Dispatch> = OnceLock::new();
    DISPATCH.get_or_init(|| Dispatch::new(ApacheLog))
}

/// Makes the error log this process's logger for threads serving no request, unless the
/// process already has one (the daemon supervisor's, inherited from the Apache parent, which
/// writes to the same file).
pub(crate) fn install() {
    let _ = tracing::dispatcher::set_global_default(dispatch().clone());
}

/// Runs `f` with this thread's log lines going to Apache's error log for the request `r`
/// (None: the server).
pub(crate) fn for_request<R>(r: Option<&Request<'_>>, f: impl FnOnce() -> R) -> R {
    let r = r.map_or(std::ptr::null_mut(), Request::as_ptr);
    struct Restore(*mut RequestRec);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(CURRENT.with(|c| c.replace(r)));
    tracing::dispatcher::with_default(dispatch(), f)
}
