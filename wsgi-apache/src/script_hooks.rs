//! The scripts mod_wsgi runs beside the application, always in the Apache child (never in a
//! daemon process), through wsgi-interp's hook calls:
//!
//! * `WSGIAccessScript`: the access checker calls `allow_access(environ, host)`; True lets the
//!   request through, False answers 403, None leaves it to the other rules.
//! * `WSGIAuthUserScript`: the authn provider `wsgi` (`AuthBasicProvider wsgi`,
//!   `AuthDigestProvider wsgi`) calls `check_password(environ, user, password)` or
//!   `get_realm_hash(environ, user, realm)`.
//! * `WSGIAuthGroupScript`: the authz provider `wsgi-group` (`Require wsgi-group a b`) calls
//!   `groups_for_user(environ, user)`.
//! * `WSGIDispatchScript`: before a `WSGIScriptAlias` request runs (here or in a daemon), its
//!   `process_group`, `application_group` and `callable_object` functions may override the
//!   routed values.
//!
//! The first three live in Apache's per-directory configuration (`src/shim.c`), which holds
//! ids into [`SCRIPTS`], so Apache merges them for any request, `.htaccess` files included.
//! A failing script (an exception, a wrong return value, a missing function) is logged with
//! its traceback and the fix, and the request gets 500: never a silent allow, nor a deny that
//! hides the bug.

use std::ffi::{CString, c_char, c_int};
use std::sync::Mutex;

use wsgi_config::groups::GroupNames;
use wsgi_config::model::{AuxScript, GroupSpec};
use wsgi_config::route::{ProcessGroup, Route};
use wsgi_config::{Config, Host, WsgiSettings};
use wsgi_interp::hook_scripts::{
    AccessDecision, HookArg, HookError, HookFunction, HookScript, HookValue, PasswordDecision,
    RealmHash, groups_from_hook, override_from_hook,
};
use wsgi_interp::{CallOptions, InterpreterHandle, RequestHead};

use crate::directive_callbacks::current_config;
use crate::environ::{call_options, env_var, hook_head, host_index, request_head};
use crate::ffi::{
    APLOG_ERR, APLOG_INFO, DECLINED, OK, Request, RequestInfo, bytes, ffi_fn, text, to_c, write_out,
};
use crate::runtime::start_runtime;

/// `authn_status` of `mod_auth.h` (checked by `src/shim.c`).
const AUTH_DENIED: c_int = 0;
const AUTH_GRANTED: c_int = 1;
const AUTH_USER_FOUND: c_int = 2;
const AUTH_USER_NOT_FOUND: c_int = 3;
const AUTH_GENERAL_ERROR: c_int = 4;
/// `authz_status` of `mod_auth.h` (checked by `src/shim.c`).
const AUTHZ_DENIED: c_int = 0;
const AUTHZ_GRANTED: c_int = 1;
const AUTHZ_GENERAL_ERROR: c_int = 3;

const HTTP_FORBIDDEN: c_int = 403;
const HTTP_INTERNAL_SERVER_ERROR: c_int = 500;

/// Every access and auth script the configuration (and the `.htaccess` files read so far)
/// named; the per-directory configuration holds indices into it. Equal entries share one
/// index, so re-reading an `.htaccess` file on every request does not grow it.
static SCRIPTS: Mutex<Vec<AuxScript>> = Mutex::new(Vec::new());

fn scripts() -> std::sync::MutexGuard<'static, Vec<AuxScript>> {
    SCRIPTS.lock().unwrap_or_else(|p| p.into_inner())
}

/// The script with id `id`, if any.
fn script(id: c_int) -> Option<AuxScript> {
    usize::try_from(id)
        .ok()
        .and_then(|i| scripts().get(i).cloned())
}

/// Whether the child needs Python for these scripts: some access, auth, dispatch or handler
/// script is configured.
pub(crate) fn configured(config: &Config) -> bool {
    if !scripts().is_empty() {
        return true;
    }
    config
        .all_settings()
        .any(|s| s.dispatch_script.is_some() || !s.handler_scripts.is_empty())
}

ffi_fn! {
    /// `WSGIAccessScript`, `WSGIAuthUserScript` or `WSGIAuthGroupScript`: reads `path
    /// [application-group=NAME]` and stores it in [`SCRIPTS`]. Returns NULL and sets `*id`, or
    /// the error message (to free with `wsgi_rs_free`).
    ///
    /// # Safety
    /// `name` and `args` are NULL or NUL-terminated; `id` is NULL or writable.
    unsafe fn wsgi_rs_aux_script(
        name: *const c_char,
        args: *const c_char,
        id: *mut c_int,
    ) -> *mut c_char {
        // SAFETY: the export's contract.
        let (name, args) = unsafe { (text(name), text(args)) };
        match aux_script(&name, &args) {
            Ok(index) => {
                // SAFETY: `id` is NULL or writable (the export's contract).
                unsafe { write_out(id, index) };
                std::ptr::null_mut()
            }
            Err(message) => to_c(message),
        }
    } ?= "an access or auth script directive", to_c
}

/// The id of the script `args` of the directive `name` names, added to [`SCRIPTS`] unless an
/// equal one is there.
fn aux_script(name: &str, args: &str) -> Result<c_int, String> {
    let words = wsgi_config::reader::split_arguments(args)?;
    let parsed =
        wsgi_config::builder::parse_aux_script(&words, &crate::directive_callbacks::server_root())
            .map_err(|errors| {
                errors
                    .iter()
                    .map(|e| format!("{name}: {e}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            })?;
    let mut table = scripts();
    let index = match table.iter().position(|s| *s == parsed) {
        Some(i) => i,
        None => {
            table.push(parsed);
            table.len() - 1
        }
    };
    c_int::try_from(index).map_err(|_| format!("{name}: too many scripts"))
}

/// `SCRIPT_NAME` as `%{RESOURCE}` group names see it: lowercased under
/// `WSGICaseSensitivity Off`.
pub(crate) fn resource_name(config: &Config, script_name: &str) -> String {
    if config.server.case_sensitive {
        script_name.to_string()
    } else {
        script_name.to_lowercase()
    }
}

/// The group names of a request.
pub(crate) fn group_names<'a>(
    config: &'a Config,
    info: &'a RequestInfo,
    host: Option<usize>,
    script_name: &'a str,
    env: &'a dyn Fn(&str) -> Option<String>,
) -> GroupNames<'a> {
    let host_ref: &Host = config.host(host);
    GroupNames {
        server_name: config.server_name(host).unwrap_or(&info.server_name),
        port: info.local_port,
        script_name,
        host_header: info
            .hostname
            .as_deref()
            .map(|h| h.split(':').next().unwrap_or(h)),
        host: host_ref,
        env,
    }
}

/// A hook script ready to call for one request.
struct Prepared {
    interp: InterpreterHandle,
    script: HookScript,
    head: RequestHead,
    opts: CallOptions,
}

impl Prepared {
    /// `aux` run as `directive` in the interpreter of the application group `group` (Python
    /// starts here if it has not yet), reloaded when it changed unless `settings` say not, for
    /// the request `head`.
    fn new(
        config: &Config,
        aux: &AuxScript,
        directive: &'static str,
        group: &str,
        settings: &WsgiSettings,
        head: RequestHead,
        opts: CallOptions,
    ) -> Result<Prepared, String> {
        let interp = start_runtime(config)?
            .interpreter(group)
            .map_err(|e| format!("{directive} {}: {e}", aux.path.display()))?;
        let script = HookScript {
            path: aux.path.clone(),
            directive,
            reload: settings.script_reloading != Some(false),
        };
        Ok(Prepared {
            interp,
            script,
            head,
            opts,
        })
    }

    fn call(&self, function: HookFunction, args: &[HookArg]) -> Result<HookValue, HookError> {
        self.interp
            .call_hook(&self.script, function, &self.head, &self.opts, args)
    }
}

/// Everything an access or auth hook needs: the script, its interpreter (Python starts here if
/// it has not yet), and the environ's source.
fn prepare(r: &Request<'_>, aux: &AuxScript, directive: &'static str) -> Result<Prepared, String> {
    let config = current_config().ok_or("mod_wsgi_rs has no configuration")?;
    let info = r.info();
    let host = host_index(&config, &info);
    let no_env = |_: &str| -> Option<String> { None };
    let group =
        group_names(&config, &info, host, "", &no_env).script_group(aux.application_group.as_ref());
    let filename = std::path::PathBuf::from(String::from_utf8_lossy(&info.filename).as_ref());
    let (settings, _) = config.settings_for(host, &filename, &info.uri);
    let head = hook_head(r, &info);
    let opts = call_options(&info, false);
    Prepared::new(&config, aux, directive, &group, &settings, head, opts)
}

/// The request path, for messages.
fn uri(r: &Request<'_>) -> String {
    String::from_utf8_lossy(&r.info().uri).into_owned()
}

/// The body of an access or auth hook (a panic in it is logged and answered `error` by the
/// export, see [`ffi_fn!`]): prepares the script with id `id` and lets `decide` call it and
/// choose the status. A script that cannot be prepared and a [`HookError`] are logged and
/// answered with `error`. Where no script applies, the hook declines; or, when `required_by`
/// names what needs one here (`AuthBasicProvider wsgi`, ...), that is logged as a
/// configuration error and answered with `error`.
fn run_hook(
    r: &Request<'_>,
    id: c_int,
    directive: &'static str,
    required_by: Option<&str>,
    error: c_int,
    decide: impl FnOnce(&Prepared) -> Result<c_int, HookError>,
) -> c_int {
    let fail = |message: &str| {
        r.log(APLOG_ERR, message);
        error
    };
    let run = || {
        let Some(aux) = script(id) else {
            let Some(what) = required_by else {
                return DECLINED;
            };
            let path = uri(r);
            return fail(&format!(
                "{what} applies to {path} but no {directive} does: add `{directive} /path/to/auth.wsgi` to the same <Directory> or <Location> section"
            ));
        };
        match prepare(r, &aux, directive) {
            Ok(prepared) => decide(&prepared).unwrap_or_else(|e| fail(&e.to_string())),
            Err(message) => fail(&message),
        }
    };
    // The script's output goes to the error log, for this request.
    crate::applog::for_request(Some(r), run)
}

ffi_fn! {
    /// The access checker: `allow_access(environ, host)` of the `WSGIAccessScript` with id
    /// `script`. Returns OK, DECLINED, 403 or 500.
    ///
    /// # Safety
    /// `r` is the live request Apache is serving on this thread; `host` is NULL or a
    /// NUL-terminated string.
    request fn wsgi_rs_hook_access(r: &Request, script: c_int, host: *const c_char) -> c_int {
        // SAFETY: the export's contract.
        let host = unsafe { text(host) };
        let decide = |prepared: &Prepared| {
            let decision = prepared
                .call(HookFunction::ALLOW_ACCESS, &[HookArg::Str(host.clone())])
                .and_then(|v| AccessDecision::from_hook(&prepared.script, v))?;
            Ok(match decision {
                AccessDecision::Allow => OK,
                AccessDecision::Decline => DECLINED,
                AccessDecision::Deny => {
                    let path = uri(r);
                    r.log(
                        APLOG_ERR,
                        &format!(
                            "client {host} denied by the WSGIAccessScript {}: allow_access() returned False for {path}",
                            prepared.script.path.display(),
                        ),
                    );
                    HTTP_FORBIDDEN
                }
            })
        };
        run_hook(r, script, "WSGIAccessScript", None, HTTP_INTERNAL_SERVER_ERROR, decide)
    } ?= "WSGIAccessScript", HTTP_INTERNAL_SERVER_ERROR
}

ffi_fn! {
    /// The authn provider's Basic check: `check_password(environ, user, password)` of the
    /// `WSGIAuthUserScript` with id `script`. Returns an `authn_status`.
    ///
    /// # Safety
    /// `r` is the live request Apache is serving on this thread; `user` and `password` are
    /// NULL or NUL-terminated strings.
    request fn wsgi_rs_hook_password(
        r: &Request,
        script: c_int,
        user: *const c_char,
        password: *const c_char,
    ) -> c_int {
        // SAFETY: the export's contract.
        let (user, password) = unsafe { (bytes(user), bytes(password)) };
        let decide = |prepared: &Prepared| {
            let decision = prepared
                .call(
                    HookFunction::CHECK_PASSWORD,
                    &[HookArg::Latin1(user), HookArg::Latin1(password)],
                )
                .and_then(|v| PasswordDecision::from_hook(&prepared.script, v))?;
            Ok(match decision {
                PasswordDecision::Granted => AUTH_GRANTED,
                PasswordDecision::GrantedAs(name) => {
                    r.set_user(&CString::new(name).expect("names with NUL are refused"));
                    AUTH_GRANTED
                }
                PasswordDecision::Denied => AUTH_DENIED,
                PasswordDecision::UnknownUser => AUTH_USER_NOT_FOUND,
            })
        };
        run_hook(
            r,
            script,
            "WSGIAuthUserScript",
            Some("AuthBasicProvider wsgi"),
            AUTH_GENERAL_ERROR,
            decide,
        )
    } ?= "WSGIAuthUserScript", AUTH_GENERAL_ERROR
}

ffi_fn! {
    /// The authn provider's Digest lookup: `get_realm_hash(environ, user, realm)` of the
    /// `WSGIAuthUserScript` with id `script`. Returns an `authn_status`; on `AUTH_USER_FOUND`,
    /// `*hash` is the hash (to free with `wsgi_rs_free`).
    ///
    /// # Safety
    /// `r` is the live request Apache is serving on this thread; `user` and `realm` are NULL
    /// or NUL-terminated strings; `hash` is NULL or writable.
    request fn wsgi_rs_hook_realm_hash(
        r: &Request,
        script: c_int,
        user: *const c_char,
        realm: *const c_char,
        hash: *mut *mut c_char,
    ) -> c_int {
        // SAFETY: the export's contract.
        let (user, realm) = unsafe { (bytes(user), bytes(realm)) };
        let decide = |prepared: &Prepared| {
            let found = prepared
                .call(
                    HookFunction::GET_REALM_HASH,
                    &[HookArg::Latin1(user), HookArg::Latin1(realm)],
                )
                .and_then(|v| RealmHash::from_hook(&prepared.script, v))?;
            Ok(match found {
                RealmHash::Found(h) => {
                    if !hash.is_null() {
                        // SAFETY: `hash` is writable (the export's contract); the shim frees
                        // the string.
                        unsafe { hash.write(to_c(h)) };
                    }
                    AUTH_USER_FOUND
                }
                RealmHash::UnknownUser => AUTH_USER_NOT_FOUND,
            })
        };
        run_hook(
            r,
            script,
            "WSGIAuthUserScript",
            Some("AuthDigestProvider wsgi"),
            AUTH_GENERAL_ERROR,
            decide,
        )
    } ?= "WSGIAuthUserScript", AUTH_GENERAL_ERROR
}

/// Whether any of the groups a user is in is one `Require wsgi-group` names.
fn in_required_group(groups: &[String], require_args: &str) -> Result<bool, String> {
    let required = wsgi_config::reader::split_arguments(require_args)?;
    Ok(required.iter().any(|g| groups.contains(g)))
}

ffi_fn! {
    /// The authz provider `wsgi-group`: `groups_for_user(environ, user)` of the
    /// `WSGIAuthGroupScript` with id `script`, against the groups the `Require` line names.
    /// Returns an `authz_status`.
    ///
    /// # Safety
    /// `r` is the live request Apache is serving on this thread; `user` and `require_args` are
    /// NULL or NUL-terminated strings.
    request fn wsgi_rs_hook_groups(
        r: &Request,
        script: c_int,
        user: *const c_char,
        require_args: *const c_char,
    ) -> c_int {
        // SAFETY: the export's contract.
        let (user, require_args) = unsafe { (bytes(user), text(require_args)) };
        let decide = |prepared: &Prepared| {
            let groups = prepared
                .call(
                    HookFunction::GROUPS_FOR_USER,
                    &[HookArg::Latin1(user.clone())],
                )
                .and_then(|v| groups_from_hook(&prepared.script, v))?;
            Ok(match in_required_group(&groups, &require_args) {
                Ok(true) => AUTHZ_GRANTED,
                Ok(false) => {
                    let path = uri(r);
                    r.log(
                        APLOG_INFO,
                        &format!(
                            "user {:?} is in none of the groups `Require wsgi-group {require_args}` names for {path} (groups_for_user() gave {groups:?})",
                            String::from_utf8_lossy(&user),
                        ),
                    );
                    AUTHZ_DENIED
                }
                Err(e) => {
                    r.log(APLOG_ERR, &format!("Require wsgi-group {require_args}: {e}"));
                    AUTHZ_GENERAL_ERROR
                }
            })
        };
        run_hook(
            r,
            script,
            "WSGIAuthGroupScript",
            Some("Require wsgi-group"),
            AUTHZ_GENERAL_ERROR,
            decide,
        )
    } ?= "WSGIAuthGroupScript", AUTHZ_GENERAL_ERROR
}

/// `WSGIDispatchScript`: calls the script's `process_group(environ)`,
/// `application_group(environ)` and `callable_object(environ)` (each optional) and applies
/// what they return to the route, last of all the ways these are chosen. Runs here, before
/// the request goes to a daemon process. `Err` is the status to answer with (logged).
pub(crate) fn dispatch(
    r: &Request<'_>,
    info: &RequestInfo,
    config: &Config,
    host: Option<usize>,
    route: &mut Route,
) -> Result<(), c_int> {
    let Some(aux) = route.settings.dispatch_script.clone() else {
        return Ok(());
    };
    let fail = |message: String| {
        r.log(APLOG_ERR, &message);
        HTTP_INTERNAL_SERVER_ERROR
    };
    let env_pairs = r.env();
    let env = |name: &str| env_var(&env_pairs, name);
    let script_name = resource_name(config, &route.script_name);
    let names = group_names(config, info, host, &script_name, &env);
    let group = names.script_group(aux.application_group.as_ref());
    let head = request_head(r, info, route);
    let opts = call_options(info, route.settings.pass_authorization == Some(true));
    let prepared = Prepared::new(
        config,
        &aux,
        "WSGIDispatchScript",
        &group,
        &route.settings,
        head,
        opts,
    )
    .map_err(fail)?;
    let ask = |function: HookFunction| -> Result<Option<String>, c_int> {
        match prepared.call(function, &[]) {
            Ok(value) => override_from_hook(&prepared.script, function, value)
                .map_err(|e| fail(e.to_string())),
            Err(e) if e.is_missing_function() => Ok(None),
            Err(e) => Err(fail(e.to_string())),
        }
    };
    let process_group = ask(HookFunction::PROCESS_GROUP)?;
    let application_group = ask(HookFunction::APPLICATION_GROUP)?;
    let callable_object = ask(HookFunction::CALLABLE_OBJECT)?;
    if let Some(value) = process_group {
        let name = names.expand(&GroupSpec::parse(&value));
        route.process_group = if name.is_empty() {
            if config.server.restrict_embedded {
                return Err(fail(format!(
                    "process_group() of the WSGIDispatchScript {} chose embedded mode, which WSGIRestrictEmbedded On disables: return the name of a WSGIDaemonProcess group",
                    aux.path.display()
                )));
            }
            ProcessGroup::Embedded
        } else {
            check_daemon(config, route, &name).map_err(|why| {
                fail(format!(
                    "process_group() of the WSGIDispatchScript {} returned {value:?}: {why}",
                    aux.path.display()
                ))
            })?;
            ProcessGroup::Daemon(name)
        };
    }
    if let Some(value) = application_group {
        route.application_group = names.expand(&GroupSpec::parse(&value));
    }
    if let Some(value) = callable_object {
        route.callable_object = names.callable(&value);
    }
    Ok(())
}

/// Whether a request may go to the daemon group `name`.
pub(crate) fn check_daemon(config: &Config, route: &Route, name: &str) -> Result<(), String> {
    if config.daemon(name).is_none() {
        let defined: Vec<&str> = config.daemons.iter().map(|d| d.name.as_str()).collect();
        return Err(format!(
            "no WSGIDaemonProcess `{name}` is configured (defined: {})",
            if defined.is_empty() {
                "none".to_string()
            } else {
                defined.join(", ")
            }
        ));
    }
    if let Some(allowed) = &route.settings.restrict_process {
        if !allowed.iter().any(|a| a == name) {
            return Err(format!(
                "WSGIRestrictProcess allows only {} here",
                allowed.join(", ")
            ));
        }
    }
    Ok(())
}
