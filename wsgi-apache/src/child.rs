//! The Apache child's life: its embedded Python started (and `WSGIImportScript`s preloaded) in
//! `child_init`, ended in `child_exit`; and the `Server` banner's component.

use std::ffi::{CString, c_char};
use std::sync::OnceLock;
use std::time::Duration;

use wsgi_config::Config;
use wsgi_config::model::GroupSpec;
use wsgi_interp::{Runtime, ScriptSpec};

use crate::directive_callbacks::current_config;
use crate::ffi::{APLOG_ERR, APLOG_INFO, APLOG_WARNING, ffi_fn, log_server};
use crate::runtime::{running, start_runtime};

ffi_fn! {
    /// `mod_wsgi_rs/VERSION Python/X.Y` for Apache's `Server` banner and `SERVER_SOFTWARE`
    /// (NULL after a panic: the shim then adds nothing).
    fn wsgi_rs_version_component() -> *const c_char {
        static COMPONENT: OnceLock<CString> = OnceLock::new();
        COMPONENT
            .get_or_init(|| {
                CString::new(format!(
                    "mod_wsgi_rs/{} Python/{}",
                    env!("CARGO_PKG_VERSION"),
                    wsgi_interp::embedded::BUILD_PYTHON_VERSION
                ))
                .expect("no NUL in versions")
            })
            .as_ptr()
    } ?= "the version component", |message| {
        log_server(APLOG_ERR, &message);
        std::ptr::null()
    }
}

ffi_fn! {
    /// Starts the embedded Python of this child, when the configuration can route requests to
    /// embedded mode.
    fn wsgi_rs_child_init() {
        let Some(config) = current_config() else {
            return;
        };
        // Python's output (application threads, preloading) goes to the error log.
        crate::applog::install();
        let embedded_imports = config
            .import_scripts
            .iter()
            .any(|i| i.process_group == GroupSpec::Global);
        let embedded = !config.server.restrict_embedded
            && (has_embedded_mounts(&config) || embedded_imports);
        // Access, auth and dispatch scripts always run here, even when every application
        // runs in a daemon process (or embedded mode is restricted), as in mod_wsgi.
        if !(embedded || crate::script_hooks::configured(&config)) {
            return;
        }
        if let Ok(runtime) = start_runtime(&config) {
            crate::applog::for_request(None, || preload(&config, runtime));
        }
    } ?= "child_init", |m| log_server(APLOG_ERR, &m)
}

ffi_fn! {
    /// Ends the embedded Python when the child exits: interpreters ended, atexit run, promptly.
    fn wsgi_rs_child_exit() {
        if let Some(runtime) = running() {
            let report = runtime.shutdown(Duration::from_secs(2), Duration::from_millis(300));
            if !report.left_running.is_empty() {
                log_server(
                    APLOG_WARNING,
                    &format!("threads still running at exit: {:?}", report.left_running),
                );
            }
        }
    } ?= "child_exit", |m| log_server(APLOG_ERR, &m)
}

/// `WSGIImportScript path process-group=%{GLOBAL} application-group=NAME`: loaded in every
/// Apache child when it starts, before it serves a request (mod_wsgi's embedded preloading).
fn preload(config: &Config, runtime: &Runtime) {
    for import in &config.import_scripts {
        if import.process_group != GroupSpec::Global {
            continue;
        }
        let group = match &import.application_group {
            GroupSpec::Global => String::new(),
            GroupSpec::Named(name) => name.clone(),
            other => {
                log_server(
                    APLOG_WARNING,
                    &format!(
                        "{}: WSGIImportScript application-group={other} depends on the request and cannot be preloaded: use a literal name or %{{GLOBAL}}",
                        import.span
                    ),
                );
                continue;
            }
        };
        let spec = ScriptSpec::new(&import.path);
        let loaded = runtime
            .interpreter(&group)
            .map_err(|e| e.to_string())
            .and_then(|handle| match handle.load_script(&spec) {
                // An import script need not define an application.
                Ok(_) | Err(wsgi_interp::ScriptError::MissingCallable { .. }) => Ok(()),
                Err(e) => Err(e.to_string()),
            });
        match loaded {
            Ok(()) => log_server(
                APLOG_INFO,
                &format!(
                    "preloaded {} into application group {group:?}",
                    import.path.display()
                ),
            ),
            Err(e) => log_server(
                APLOG_ERR,
                &format!(
                    "{}: WSGIImportScript {}: {e}",
                    import.span,
                    import.path.display()
                ),
            ),
        }
    }
}

/// Whether a mount can run in embedded mode (else Python never starts in the children).
fn has_embedded_mounts(config: &Config) -> bool {
    wsgi_config::report::routing_table(config)
        .iter()
        .any(|m| m.process_group == "embedded")
}
