//! Process and application group names, and callable object names, as mod_wsgi expands them
//! for a request: `%{GLOBAL}`, `%{SERVER}`, `%{RESOURCE}`, `%{HOST}`, `%{ENV:NAME}` and
//! literal names ([`GroupNames::expand`], used by [`crate::route`]).
//!
//! The scripts that run beside the WSGI application (`WSGIAccessScript`,
//! `WSGIAuthUserScript`, `WSGIAuthGroupScript` and `WSGIDispatchScript`) always run in the serving process (never in a daemon), in the interpreter
//! their `application-group=` option names; mod_wsgi expands that option with a narrower rule
//! than `WSGIApplicationGroup` ([`GroupNames::script_group`]). A dispatch script may return a
//! process group, application group or callable object for the request, expanded like the
//! directives they override ([`GroupNames::expand`]).
//!
//! As in [`crate::route`], the port in `%{SERVER}` names is the port the connection arrived
//! on and `%{HOST}` only takes a `Host` header naming this host, so a client cannot make the
//! server create interpreters at will.

use crate::model::{GroupSpec, Host};

/// What group names of one request are made of.
pub struct GroupNames<'a> {
    /// The host's `ServerName` (or the machine's name when it has none).
    pub server_name: &'a str,
    /// The port the request arrived on.
    pub port: u16,
    /// `SCRIPT_NAME` (lowercased when `WSGICaseSensitivity Off`), for `%{RESOURCE}`.
    pub script_name: &'a str,
    /// The host name of the `Host` header (without port), if any.
    pub host_header: Option<&'a str>,
    /// The host (main server or virtual host) serving the request.
    pub host: &'a Host,
    /// Looks up an environment variable of the request (`SetEnv`, `SetEnvIf`, ...), then of
    /// the process, for `%{ENV:NAME}`.
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

impl GroupNames<'_> {
    fn with_port(&self, name: &str) -> String {
        if self.port == 80 || self.port == 443 {
            name.to_string()
        } else {
            format!("{name}:{}", self.port)
        }
    }

    fn host_name(&self) -> String {
        let answers_to = |h: &str| {
            self.host
                .server_name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(h))
                || self
                    .host
                    .server_aliases
                    .iter()
                    .any(|a| crate::route::wildcard_match(&a.to_ascii_lowercase(), h))
        };
        let name = self
            .host_header
            .filter(|h| answers_to(h))
            .unwrap_or(self.server_name);
        self.with_port(name)
    }

    /// The interpreter an access, auth or dispatch script runs in: `application-group=` as
    /// mod_wsgi reads it for these scripts. Unset and `%{GLOBAL}` are the main interpreter
    /// (`""`); `%{SERVER}` and `%{HOST}` expand; any other value (`%{RESOURCE}` and
    /// `%{ENV:...}` included) is a literal name.
    pub fn script_group(&self, spec: Option<&GroupSpec>) -> String {
        match spec {
            None | Some(GroupSpec::Global) => String::new(),
            Some(GroupSpec::Server) => self.with_port(self.server_name),
            Some(GroupSpec::Host) => self.host_name(),
            Some(other) => other.to_string(),
        }
    }

    /// A group name as `WSGIProcessGroup`/`WSGIApplicationGroup` expand it (`""` is
    /// `%{GLOBAL}`): what a dispatch script's `process_group()` or `application_group()`
    /// returns goes through this. An unset `%{ENV:NAME}` stays as the literal text.
    pub fn expand(&self, spec: &GroupSpec) -> String {
        self.expand_depth(spec, 0)
    }

    fn expand_depth(&self, spec: &GroupSpec, depth: u8) -> String {
        match spec {
            GroupSpec::Global => String::new(),
            GroupSpec::Server => self.with_port(self.server_name),
            GroupSpec::Resource => {
                format!("{}|{}", self.with_port(self.server_name), self.script_name)
            }
            GroupSpec::Host => self.host_name(),
            GroupSpec::Env(var) => match (self.env)(var) {
                Some(value)
                    if value.starts_with('%') && !value.starts_with("%{ENV:") && depth < 4 =>
                {
                    self.expand_depth(&GroupSpec::parse(&value), depth + 1)
                }
                Some(value) => value,
                None => format!("%{{ENV:{var}}}"),
            },
            GroupSpec::Named(n) => n.clone(),
        }
    }

    /// A callable object name as `WSGICallableObject` expands it: `%{ENV:NAME}` takes the
    /// variable, `application` when it is unset.
    pub fn callable(&self, value: &str) -> String {
        match value
            .strip_prefix("%{ENV:")
            .and_then(|v| v.strip_suffix('}'))
        {
            Some(var) => (self.env)(var).unwrap_or_else(|| "application".to_string()),
            None => value.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Host {
        Host {
            server_name: Some("www.example.org".into()),
            server_aliases: vec!["*.example.org".into()],
            ..Host::default()
        }
    }

    fn env(name: &str) -> Option<String> {
        match name {
            "APP" => Some("shop".into()),
            "INDIRECT" => Some("%{SERVER}".into()),
            _ => None,
        }
    }

    fn names<'a>(host: &'a Host, header: Option<&'a str>, port: u16) -> GroupNames<'a> {
        GroupNames {
            server_name: "www.example.org",
            port,
            script_name: "/app",
            host_header: header,
            host,
            env: &env,
        }
    }

    #[test]
    fn scripts_run_in_the_main_interpreter_unless_told_otherwise() {
        let h = host();
        let n = names(&h, Some("api.example.org"), 8080);
        assert_eq!(n.script_group(None), "");
        assert_eq!(n.script_group(Some(&GroupSpec::Global)), "");
        assert_eq!(
            n.script_group(Some(&GroupSpec::Server)),
            "www.example.org:8080"
        );
        assert_eq!(
            n.script_group(Some(&GroupSpec::Host)),
            "api.example.org:8080"
        );
        assert_eq!(
            n.script_group(Some(&GroupSpec::Named("auth".into()))),
            "auth"
        );
        // mod_wsgi expands nothing else for these scripts.
        assert_eq!(n.script_group(Some(&GroupSpec::Resource)), "%{RESOURCE}");
        assert_eq!(
            n.script_group(Some(&GroupSpec::Env("APP".into()))),
            "%{ENV:APP}"
        );
    }

    #[test]
    fn a_host_header_for_another_host_does_not_name_a_group() {
        let h = host();
        let n = names(&h, Some("evil.test"), 80);
        assert_eq!(n.script_group(Some(&GroupSpec::Host)), "www.example.org");
        let n = names(&h, None, 443);
        assert_eq!(n.expand(&GroupSpec::Host), "www.example.org");
    }

    #[test]
    fn dispatch_results_expand_like_the_directives() {
        let h = host();
        let n = names(&h, None, 8080);
        assert_eq!(n.expand(&GroupSpec::parse("%{GLOBAL}")), "");
        assert_eq!(
            n.expand(&GroupSpec::parse("%{RESOURCE}")),
            "www.example.org:8080|/app"
        );
        assert_eq!(n.expand(&GroupSpec::parse("%{ENV:APP}")), "shop");
        assert_eq!(
            n.expand(&GroupSpec::parse("%{ENV:INDIRECT}")),
            "www.example.org:8080"
        );
        assert_eq!(n.expand(&GroupSpec::parse("%{ENV:UNSET}")), "%{ENV:UNSET}");
        assert_eq!(n.expand(&GroupSpec::parse("admin")), "admin");
        assert_eq!(n.callable("%{ENV:APP}"), "shop");
        assert_eq!(n.callable("%{ENV:UNSET}"), "application");
        assert_eq!(n.callable("app"), "app");
    }
}
