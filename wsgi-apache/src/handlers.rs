//! `WSGIHandlerScript name path [process-group=] [application-group=] [pass-authorization=]`:
//! an Apache handler name (for `AddHandler name .ext` or `SetHandler name`) whose requests
//! run the script's `handle_request` as a WSGI application, with `SCRIPT_FILENAME` the
//! requested file, in embedded mode or in a daemon process group.

use std::ffi::{c_char, c_int};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::directive_callbacks::current_config;
use crate::environ::{env_var, host_index, requester};
use crate::ffi::{APLOG_ERR, DECLINED, ffi_fn, text};
use crate::request::{request_hook, serve};

ffi_fn! {
    /// Whether some `WSGIHandlerScript` registers the handler `name` (asked for every request
    /// that has a handler, so it only scans the configuration).
    ///
    /// # Safety
    /// `name` is NULL or a NUL-terminated string.
    unsafe fn wsgi_rs_is_script_handler(name: *const c_char) -> c_int {
        // SAFETY: the export's contract.
        let name = unsafe { text(name) };
        let Some(config) = current_config() else {
            return 0;
        };
        c_int::from(
            config
                .all_settings()
                .any(|s| s.handler_scripts.iter().any(|h| h.handler == name)),
        )
    } ?= "handler lookup", |_| 0
}

ffi_fn! {
    /// The handler for a `WSGIHandlerScript` name: runs the script's `handle_request` for the
    /// requested file. DECLINED when no such script applies where the file is.
    ///
    /// # Safety
    /// `r` is the live request Apache is serving on this thread; `name` is NULL or a
    /// NUL-terminated string.
    request fn wsgi_rs_handle_script_handler(r: &Request, name: *const c_char) -> c_int {
        // SAFETY: the export's contract.
        let name = unsafe { text(name) };
        request_hook(r, |config, info| {
            let host = host_index(config, info);
            let filename = Path::new(std::ffi::OsStr::from_bytes(&info.filename));
            let env_pairs = r.env();
            let env = |var: &str| env_var(&env_pairs, var);
            let who = requester(config, info, host, &env);
            // As mod_wsgi: the script decides what a missing file means (it may serve content
            // that no file holds). Apache gives the request its environment itself.
            let uri = (&info.uri[..], &info.path_info[..]);
            match config.handler_script_route(&who, &name, filename, uri, Vec::new()) {
                None => DECLINED,
                Some(Err(why)) => {
                    r.log(APLOG_ERR, &format!("WSGIHandlerScript {name}: {why}"));
                    c_int::from(why.status())
                }
                Some(Ok(route)) => serve(r, info, config, route),
            }
        })
    } ?= "WSGIHandlerScript", 500
}
