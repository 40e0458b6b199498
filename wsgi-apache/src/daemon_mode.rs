//! Daemon mode under Apache: the Apache parent starts every `WSGIDaemonProcess` group through
//! wsgi-daemon's supervisor (each process exec'd from the `wsgi-daemon` program installed next
//! to this module) and stops them when its configuration is cleared; the children forward
//! requests over the groups' unix sockets.

use std::ffi::{CStr, c_char, c_void};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, OnceLock};

use wsgi_daemon::client::{DaemonClient, Endpoint};
use wsgi_daemon::supervisor::{Supervisor, SupervisorOptions};

use crate::directive_callbacks::current_config;
use crate::ffi::{ffi_fn, to_c};

/// The supervisor, owned by the Apache parent (the pid that started it).
static SUPERVISOR: Mutex<Option<(u32, Supervisor)>> = Mutex::new(None);

/// Where each group listens: set in the parent, copied into the children when they fork.
static ENDPOINTS: Mutex<Vec<Endpoint>> = Mutex::new(Vec::new());

/// This child's client (built on first use from the endpoints it inherited).
static CLIENT: OnceLock<DaemonClient> = OnceLock::new();

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The program exec'd for each daemon process: `WSGI_RS_DAEMON_PROGRAM`, else `wsgi-daemon`
/// in the folder this module was loaded from.
fn daemon_program() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("WSGI_RS_DAEMON_PROGRAM") {
        return Ok(PathBuf::from(p));
    }
    let mut info = std::mem::MaybeUninit::<libc::Dl_info>::zeroed();
    let symbol = wsgi_rs_start_daemons as *const c_void;
    // SAFETY: dladdr reads the loader's tables for an address of this module; `info` is a
    // valid, writable Dl_info.
    let found = unsafe { libc::dladdr(symbol, info.as_mut_ptr()) };
    // SAFETY: non-zero means dladdr filled `info`.
    let info = (found != 0).then(|| unsafe { info.assume_init() });
    let module = info
        .filter(|i| !i.dli_fname.is_null())
        // SAFETY: dli_fname is the loader's NUL-terminated path of this module.
        .map(|i| PathBuf::from(unsafe { CStr::from_ptr(i.dli_fname) }.to_string_lossy().into_owned()))
        .ok_or("cannot tell where mod_wsgi_rs was loaded from: set WSGI_RS_DAEMON_PROGRAM to the wsgi-daemon program")?;
    let program = module.with_file_name("wsgi-daemon");
    if program.exists() {
        Ok(program)
    } else {
        Err(format!(
            "the daemon program {} is missing: install the `wsgi-daemon` program built with the module next to it (or set WSGI_RS_DAEMON_PROGRAM)",
            program.display()
        ))
    }
}

ffi_fn! {
    /// Starts the daemon process groups of the configuration just read (stopping any previous
    /// ones first). Returns NULL, or an error message to free with `wsgi_rs_free`.
    fn wsgi_rs_start_daemons() -> *mut c_char {
        // Under its own guard, as Apache calls it (a panic there does not stop the start).
        wsgi_rs_stop_daemons();
        let Some(config) = current_config() else {
            return std::ptr::null_mut();
        };
        if config.daemons.is_empty() {
            lock(&ENDPOINTS).clear();
            return std::ptr::null_mut();
        }
        // The supervisor logs crashes and restarts (with the real exit status or signal)
        // through tracing: to stderr, which is the Apache parent's error log.
        wsgi_daemon::init_logging();
        // Apache forks its children while the supervisor's thread may be logging.
        wsgi_daemon::forklog::register_fork_handlers();
        let program = match daemon_program() {
            Ok(p) => p,
            Err(e) => return to_c(e),
        };
        // The sockets belong to Apache's User (unless socket-user= says otherwise), so that
        // the children, which run as that user, can connect.
        let mut config = (*config).clone();
        if let Some(user) = config.user.clone() {
            for group in &mut config.daemons {
                group
                    .options
                    .socket_user
                    .get_or_insert_with(|| user.clone());
            }
        }
        let mut options = SupervisorOptions::new(program, &["process"]);
        // `apache.version` in the daemon processes: this httpd's, as in embedded mode.
        options.apache_version = Some(crate::ffi::apache_version());
        match Supervisor::start(&config, &options) {
            Ok(supervisor) => {
                *lock(&ENDPOINTS) = supervisor.endpoints().to_vec();
                *lock(&SUPERVISOR) = Some((std::process::id(), supervisor));
                std::ptr::null_mut()
            }
            Err(e) => to_c(format!("daemon processes did not start: {e}")),
        }
    } ?= "starting daemon processes", to_c
}

ffi_fn! {
    /// Stops the daemon processes (in the process that started them only: Apache's children
    /// inherit a copy of the parent's memory, never its duty).
    fn wsgi_rs_stop_daemons() {
        let mut slot = lock(&SUPERVISOR);
        if slot
            .as_ref()
            .is_some_and(|(pid, _)| *pid == std::process::id())
        {
            if let Some((_, supervisor)) = slot.take() {
                supervisor.shutdown();
            }
        }
    } ?= "stopping daemon processes", |_| ()
}

/// The client a child uses to reach the daemon groups.
pub(crate) fn client() -> &'static DaemonClient {
    CLIENT.get_or_init(|| DaemonClient::new(lock(&ENDPOINTS).clone()))
}
