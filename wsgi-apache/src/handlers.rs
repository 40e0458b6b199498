//! `WSGIHandlerScript name path [process-group=] [application-group=] [pass-authorization=]`:
//! an Apache handler name (for `AddHandler name .ext` or `SetHandler name`) whose requests
//! run the script's `handle_request` as a WSGI application, with `SCRIPT_FILENAME` the
//! requested file, in embedded mode or in a daemon process group.

use std::ffi::{c_char, c_int};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use wsgi_config::Config;

use crate::config::{current_config, text};
use crate::guard::guard;
use crate::hooks::env_var;
use crate::request::{
    APLOG_ERR, DECLINED, RequestInfo, RequestRec, host_index, log, request_env, request_hook,
    requester, serve,
};

/// Whether some `WSGIHandlerScript` registers the handler `name` (asked for every request
/// that has a handler, so it only scans the configuration).
///
/// # Safety
/// `name` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wsgi_rs_is_script_handler(name: *const c_char) -> c_int {
    // SAFETY: the caller's contract.
    let name = unsafe { text(name) };
    guard(
        "handler lookup",
        |_| 0,
        || {
            let Some(config) = current_config() else {
                return 0;
            };
            c_int::from(
                config
                    .all_settings()
                    .any(|s| s.handler_scripts.iter().any(|h| h.handler == name)),
            )
        },
    )
}

/// The handler for a `WSGIHandlerScript` name: runs the script's `handle_request` for the
/// requested file. DECLINED when no such script applies where the file is.
///
/// # Safety
/// `r` is the live request Apache is serving on this thread; `name` is NULL or a
/// NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wsgi_rs_handle_script_handler(
    r: *mut RequestRec,
    name: *const c_char,
) -> c_int {
    // SAFETY: the caller's contract.
    let name = unsafe { text(name) };
    let handle = |config: &Config, info: &RequestInfo| {
        let host = host_index(config, info);
        let filename = Path::new(std::ffi::OsStr::from_bytes(&info.filename));
        // SAFETY: forwarded from the caller's contract.
        let env_pairs = unsafe { request_env(r) };
        let env = |var: &str| env_var(&env_pairs, var);
        let who = requester(config, info, host, &env);
        // As mod_wsgi: the script decides what a missing file means (it may serve content
        // that no file holds). Apache gives the request its environment itself.
        let uri = (&info.uri[..], &info.path_info[..]);
        match config.handler_script_route(&who, &name, filename, uri, Vec::new()) {
            None => DECLINED,
            Some(Err(why)) => {
                log(r, APLOG_ERR, &format!("WSGIHandlerScript {name}: {why}"));
                c_int::from(why.status())
            }
            // SAFETY: forwarded from the caller's contract.
            Some(Ok(route)) => unsafe { serve(r, info, config, route) },
        }
    };
    // SAFETY: the caller's contract.
    unsafe { request_hook(r, "WSGIHandlerScript", handle) }
}
