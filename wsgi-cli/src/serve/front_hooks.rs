//! mod_wsgi's access and auth scripts under `wsgi serve` (`WSGIAccessScript`,
//! `WSGIAuthUserScript` for `AuthBasicProvider wsgi`, `WSGIAuthGroupScript` for
//! `Require wsgi-group`), and the dispatch script's overrides (`WSGIDispatchScript`): run in
//! the front's embedded Python, each in the interpreter its `application-group=` names (the
//! main one by default), as mod_wsgi runs them in the Apache child and never in a daemon
//! process. A failing script is logged with its traceback and the request gets 500.

use std::sync::Arc;

use wsgi_config::groups::GroupNames;
use wsgi_config::model::{AuxScript, GroupSpec};
use wsgi_config::route::{ProcessGroup, Route};
use wsgi_interp::hook_scripts::{
    AccessDecision, HookArg, HookFunction, HookScript, HookValue, PasswordDecision,
    groups_from_hook, override_from_hook,
};
use wsgi_interp::{CallOptions, InterpreterHandle, RequestHead, Runtime};

use super::auth::ScriptHooks;
use super::site::Site;

/// What a request's hook calls share: the Python, the environ's source, and what the
/// interpreter names are made of.
pub struct FrontHooks {
    /// The front's embedded Python.
    pub runtime: Arc<Runtime>,
    /// The site (for the host's names).
    pub site: Arc<Site>,
    /// The virtual host of the request (None: the main server).
    pub vhost: Option<usize>,
    /// The host's canonical name.
    pub server_name: String,
    /// The port the request is routed as.
    pub port: u16,
    /// The host name of the request's `Host` header.
    pub host_header: Option<String>,
    /// `SCRIPT_NAME` as `%{RESOURCE}` names it (lowercased under `WSGICaseSensitivity Off`);
    /// empty outside a `WSGIScriptAlias`.
    pub script_name: String,
    /// The request's environment variables (for `%{ENV:...}` names).
    pub env: Vec<(String, String)>,
    /// The environ's source.
    pub head: RequestHead,
    /// The environ's options.
    pub opts: CallOptions,
    /// `WSGIScriptReloading` (on unless Off).
    pub reload: bool,
}

impl FrontHooks {
    /// What a group name is made of, for this request.
    fn with_names<R>(&self, f: impl FnOnce(&GroupNames<'_>) -> R) -> R {
        let env = |name: &str| {
            self.env
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .or_else(|| std::env::var(name).ok())
        };
        f(&GroupNames {
            server_name: &self.server_name,
            port: self.port,
            script_name: &self.script_name,
            host_header: self.host_header.as_deref(),
            host: self.site.config.host(self.vhost),
            env: &env,
        })
    }

    /// The interpreter `script` runs in, and the script as wsgi-interp names it.
    fn prepare(
        &self,
        script: &AuxScript,
        directive: &'static str,
    ) -> Result<(InterpreterHandle, HookScript), String> {
        let group = self.with_names(|n| n.script_group(script.application_group.as_ref()));
        let interp = self
            .runtime
            .interpreter(&group)
            .map_err(|e| format!("{directive} {}: {e}", script.path.display()))?;
        let hook = HookScript {
            path: script.path.clone(),
            directive,
            reload: self.reload,
        };
        Ok((interp, hook))
    }

    /// Calls `function(environ, *args)` of `script`.
    fn call(
        &self,
        script: &AuxScript,
        directive: &'static str,
        function: HookFunction,
        args: &[HookArg],
    ) -> Result<(HookScript, HookValue), String> {
        let (interp, hook) = self.prepare(script, directive)?;
        let value = interp
            .call_hook(&hook, function, &self.head, &self.opts, args)
            .map_err(|e| e.to_string())?;
        Ok((hook, value))
    }

    /// The `WSGIDispatchScript`'s overrides of `route`'s process group, application group
    /// and callable object (each function is optional). Err is the message to log (500).
    pub fn dispatch(&self, script: &AuxScript, route: &mut Route) -> Result<(), String> {
        let (interp, hook) = self.prepare(script, "WSGIDispatchScript")?;
        let ask = |function: HookFunction| -> Result<Option<String>, String> {
            match interp.call_hook(&hook, function, &self.head, &self.opts, &[]) {
                Ok(value) => override_from_hook(&hook, function, value).map_err(|e| e.to_string()),
                Err(e) if e.is_missing_function() => Ok(None),
                Err(e) => Err(e.to_string()),
            }
        };
        let process_group = ask(HookFunction::PROCESS_GROUP)?;
        let application_group = ask(HookFunction::APPLICATION_GROUP)?;
        let callable_object = ask(HookFunction::CALLABLE_OBJECT)?;
        let config = &self.site.config;
        if let Some(value) = process_group {
            let name = self.with_names(|n| n.expand(&GroupSpec::parse(&value)));
            route.process_group = if name.is_empty() {
                if config.server.restrict_embedded {
                    return Err(format!(
                        "process_group() of the WSGIDispatchScript {} chose embedded mode, which WSGIRestrictEmbedded On disables: return the name of a WSGIDaemonProcess group",
                        script.path.display()
                    ));
                }
                ProcessGroup::Embedded
            } else {
                if config.daemon(&name).is_none() {
                    let defined: Vec<&str> =
                        config.daemons.iter().map(|d| d.name.as_str()).collect();
                    return Err(format!(
                        "process_group() of the WSGIDispatchScript {} returned {value:?}: no WSGIDaemonProcess `{name}` is configured (defined: {})",
                        script.path.display(),
                        if defined.is_empty() {
                            "none".to_string()
                        } else {
                            defined.join(", ")
                        }
                    ));
                }
                ProcessGroup::Daemon(name)
            };
        }
        if let Some(value) = application_group {
            route.application_group = self.with_names(|n| n.expand(&GroupSpec::parse(&value)));
        }
        if let Some(value) = callable_object {
            route.callable_object = self.with_names(|n| n.callable(&value));
        }
        Ok(())
    }
}

impl ScriptHooks for FrontHooks {
    fn allow_access(&self, script: &AuxScript, host: &str) -> Result<AccessDecision, String> {
        let (hook, value) = self.call(
            script,
            "WSGIAccessScript",
            HookFunction::ALLOW_ACCESS,
            &[HookArg::Str(host.to_string())],
        )?;
        AccessDecision::from_hook(&hook, value).map_err(|e| e.to_string())
    }

    fn check_password(
        &self,
        script: &AuxScript,
        user: &str,
        password: &str,
    ) -> Result<PasswordDecision, String> {
        let (hook, value) = self.call(
            script,
            "WSGIAuthUserScript",
            HookFunction::CHECK_PASSWORD,
            &[
                HookArg::Latin1(user.as_bytes().to_vec()),
                HookArg::Latin1(password.as_bytes().to_vec()),
            ],
        )?;
        PasswordDecision::from_hook(&hook, value).map_err(|e| e.to_string())
    }

    fn groups_for_user(&self, script: &AuxScript, user: &str) -> Result<Vec<String>, String> {
        let (hook, value) = self.call(
            script,
            "WSGIAuthGroupScript",
            HookFunction::GROUPS_FOR_USER,
            &[HookArg::Latin1(user.as_bytes().to_vec())],
        )?;
        groups_from_hook(&hook, value).map_err(|e| e.to_string())
    }
}
