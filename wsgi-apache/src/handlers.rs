//! `WSGIHandlerScript name path [process-group=] [application-group=] [pass-authorization=]`:
//! an Apache handler name (for `AddHandler name .ext` or `SetHandler name`) whose requests
//! run the script's `handle_request` as a WSGI application, with `SCRIPT_FILENAME` the
//! requested file, in embedded mode or in a daemon process group.

use std::ffi::{c_char, c_int};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use wsgi_config::Config;
use wsgi_config::route::{ProcessGroup, Route};

use crate::config::{current_config, text};
use crate::guard::guard;
use crate::hooks::{all_settings, check_daemon, env_var, group_names, resource_name};
use crate::request::{
    APLOG_ERR, DECLINED, HandlerTarget, RequestInfo, RequestRec, host_index, log, request_env,
    request_hook, serve, split_path_info,
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
                all_settings(&config).any(|s| s.handler_scripts.iter().any(|h| h.handler == name)),
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
        let (settings, _) = config.settings_for(host, filename, &info.uri);
        let Some(script) = settings
            .handler_scripts
            .iter()
            .rev()
            .find(|h| h.handler == name)
            .cloned()
        else {
            return DECLINED;
        };
        // As mod_wsgi: the script decides what a missing file means (it may serve
        // content that no file holds).
        let (script_name, path_info) = split_path_info(&info.uri, &info.path_info);
        let (script_name, path_info) = (
            wsgi_config::route::latin1(&script_name),
            wsgi_config::route::latin1(&path_info),
        );
        // SAFETY: forwarded from the caller's contract.
        let env_pairs = unsafe { request_env(r) };
        let env = |var: &str| env_var(&env_pairs, var);
        let resource = resource_name(config, &script_name);
        let names = group_names(config, info, host, &resource, &env);
        let process_spec = script.options.process_spec(&settings);
        let app_spec = script.options.application_spec(&settings);
        let mut route_settings = settings.clone();
        if script.options.pass_authorization.is_some() {
            route_settings.pass_authorization = script.options.pass_authorization;
        }
        let mut route = Route {
            host,
            server_name: names.server_name.to_string(),
            port: info.local_port,
            script: script.path.clone(),
            script_name,
            path_info,
            process_group: ProcessGroup::Embedded,
            application_group: names.expand(&app_spec),
            callable_object: "handle_request".to_string(),
            settings: route_settings,
            // Apache gives the request its environment itself.
            env: Vec::new(),
        };
        let process_group = names.expand(&process_spec);
        if !process_group.is_empty() {
            if let Err(why) = check_daemon(config, &route, &process_group) {
                log(
                    r,
                    APLOG_ERR,
                    &format!(
                        "WSGIHandlerScript {name} {}: process group {process_group:?}: {why}",
                        script.path.display()
                    ),
                );
                return 500;
            }
            route.process_group = ProcessGroup::Daemon(process_group);
        }
        let target = HandlerTarget {
            name: name.clone(),
            filename: info.filename.clone(),
        };
        // SAFETY: forwarded from the caller's contract.
        unsafe { serve(r, info, config, route, Some(&target)) }
    };
    // SAFETY: the caller's contract.
    unsafe { request_hook(r, "WSGIHandlerScript", handle) }
}
