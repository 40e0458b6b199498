//! The embedded Python of this Apache child: started once, on first need (in `child_init`
//! when the configuration can use it, else by the first hook script of an `.htaccess` file).

use std::sync::OnceLock;

use wsgi_config::Config;
use wsgi_interp::{InterpreterOptions, Runtime, StartConfig};

use crate::ffi::{APLOG_ERR, APLOG_WARNING, log_server};

/// The embedded Python of this Apache child, started in `child_init`.
static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

/// The embedded Python of this child, started on first need: in `child_init` when the
/// configuration can use it, else by the first hook script of an `.htaccess` file.
pub(crate) fn start_runtime(config: &Config) -> Result<&'static Runtime, String> {
    RUNTIME
        .get_or_init(|| {
            let (processes, threads) = crate::ffi::mpm_limits();
            wsgi_interp::set_apache_version(crate::ffi::apache_version());
            let start = StartConfig {
                python_home: config.python.home.as_ref().map(|h| h.value.clone()),
                python_path: config.python.path.clone(),
                optimize: config.python.optimize,
                dont_write_bytecode: config.python.dont_write_bytecode,
                // `mod_wsgi` in embedded mode: the MPM's processes and threads per child.
                maximum_processes: u32::try_from(processes).unwrap_or(1),
                threads_per_process: u32::try_from(threads).unwrap_or(1),
                interpreter_rules: config.python.interpreter_rules(),
                ..StartConfig::default()
            };
            let options = InterpreterOptions {
                per_interpreter_gil: config.python.per_interpreter_gil,
            };
            let free_threading = config.python.free_threading
                || config
                    .python
                    .interpreter_options
                    .iter()
                    .any(|b| b.rule.free_threading == Some(true));
            if free_threading && !wsgi_interp::embedded::FREE_THREADED_BUILD {
                log_server(
                    APLOG_WARNING,
                    &format!(
                        "WSGIFreeThreading On has no effect: mod_wsgi_rs is built against Python {}, which is not a free-threaded build (python3.13t and later), so the GIL stays on; remove the line, or build mod_wsgi_rs against a free-threaded Python",
                        wsgi_interp::embedded::BUILD_PYTHON_VERSION
                    ),
                );
            }
            let runtime = Runtime::start_with(&start, &options).map_err(|e| {
                let message = format!("Python did not start in this Apache child: {e}");
                log_server(APLOG_ERR, &message);
                message
            })?;
            if let Some(interval) = config.python.switch_interval_for("") {
                set_switch_interval(&runtime, interval);
            }
            Ok(runtime)
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// `WSGISwitchInterval` (or a `<WSGIInterpreterOptions process-group=%{GLOBAL}>` section's) in
/// this child: `sys.setswitchinterval` in the main interpreter, which sets it for every
/// interpreter sharing its GIL.
fn set_switch_interval(runtime: &Runtime, interval: f64) {
    let code = format!("__import__('sys').setswitchinterval({interval:?})");
    let outcome = runtime
        .interpreter("")
        .map_err(|e| e.to_string())
        .and_then(|main| match main.run(|py| py.exec(&code)) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        });
    if let Err(e) = outcome {
        log_server(
            APLOG_ERR,
            &format!("WSGISwitchInterval {interval} was not applied: {e}"),
        );
    }
}

/// The embedded Python, if it started.
pub(crate) fn running() -> Option<&'static Runtime> {
    RUNTIME.get().and_then(|r| r.as_ref().ok())
}
