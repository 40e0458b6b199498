//! Who may see what, for `wsgi serve --config`: a section's `Require` tree
//! ([`wsgi_config::authz`]) evaluated for the request, and, when it asks for a user,
//! mod_auth_basic over mod_authn_file (`AuthType Basic`, `AuthName`, `AuthUserFile` in
//! htpasswd's formats: bcrypt, apr1 MD5, SHA1, crypt) and mod_authz_groupfile
//! (`AuthGroupFile`), answering as Apache does: 403 when denied without a user, 401 with
//! `WWW-Authenticate` when credentials are missing, wrong, or not granted.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use http::HeaderMap;
use sha1::Digest as _;
use wsgi_config::WsgiSettings;
use wsgi_config::authz::{AuthzNode, AuthzRequest, Outcome};
use wsgi_config::model::AuxScript;
use wsgi_interp::hook_scripts::{AccessDecision, PasswordDecision};

/// Why a request is not let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 403: the rules deny it.
    Forbidden(String),
    /// 401: credentials are needed (or were not good enough); the realm to ask for.
    Unauthorized {
        /// `AuthName`.
        realm: String,
        /// What went wrong, for the log.
        why: String,
        /// The user the credentials named, if any (Apache logs it as `%u` even then).
        user: Option<String>,
    },
    /// 500: the configuration cannot decide (no `AuthType`, an unreadable password file).
    Misconfigured(String),
}

/// What a granted request carries on: the authenticated user and how, if any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Granted {
    /// `REMOTE_USER`.
    pub user: Option<String>,
    /// `AUTH_TYPE` (`Basic`).
    pub auth_type: Option<String>,
}

/// What the rules may look at of a request.
pub struct RequestFacts<'a> {
    /// The client.
    pub client: IpAddr,
    /// The server address it came in on.
    pub server: IpAddr,
    /// The method.
    pub method: &'a str,
    /// The request's headers (`Authorization`).
    pub headers: &'a HeaderMap,
    /// The request's environment variables (`SetEnv`, `SetEnvIf`), for `Require env`.
    pub env: &'a [(String, String)],
}

/// The client's host name as mod_authz_host accepts it: a reverse lookup whose name maps
/// back to the address (a blocking DNS query).
fn double_reverse(client: IpAddr) -> Option<String> {
    let name = dns_lookup::lookup_addr(&client).ok()?;
    let back = dns_lookup::lookup_host(&name).ok()?;
    back.into_iter().any(|ip| ip == client).then_some(name)
}

/// `user:password` of a `Basic` `Authorization` header.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Whether `password` matches `user`'s line of the htpasswd file `file` (bcrypt `$2y$`,
/// `$apr1$` MD5, `{SHA}`, crypt): None when the file has no such user; Err when it cannot be
/// read.
pub fn check_password(file: &Path, user: &str, password: &str) -> std::io::Result<Option<bool>> {
    let text = std::fs::read_to_string(file)?;
    let Some(hash) = text.lines().find_map(|line| {
        let (name, hash) = line.split_once(':')?;
        (name == user).then(|| hash.trim_end())
    }) else {
        return Ok(None);
    };
    Ok(Some(match hash.strip_prefix("{SHA}") {
        Some(expected) => {
            let digest = sha1::Sha1::digest(password.as_bytes());
            base64::engine::general_purpose::STANDARD.encode(digest) == expected
        }
        None => crypt3_rs::unix::verify(password, hash),
    }))
}

/// The mod_wsgi scripts a decision may call, in the front's embedded Python (as mod_wsgi
/// runs them in the Apache child, never in a daemon process). Errors are the message to log
/// (the request gets 500).
pub trait ScriptHooks {
    /// `allow_access(environ, host)` of a `WSGIAccessScript`.
    fn allow_access(&self, script: &AuxScript, host: &str) -> Result<AccessDecision, String>;
    /// `check_password(environ, user, password)` of a `WSGIAuthUserScript`.
    fn check_password(
        &self,
        script: &AuxScript,
        user: &str,
        password: &str,
    ) -> Result<PasswordDecision, String>;
    /// `groups_for_user(environ, user)` of a `WSGIAuthGroupScript`.
    fn groups_for_user(&self, script: &AuxScript, user: &str) -> Result<Vec<String>, String>;
}

/// The groups `user` belongs to in the `AuthGroupFile` `file` (`group: user user ...`).
pub fn groups_of(file: &Path, user: &str) -> std::io::Result<Vec<String>> {
    let text = std::fs::read_to_string(file)?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let (group, members) = line.split_once(':')?;
            members
                .split_whitespace()
                .any(|m| m == user)
                .then(|| group.trim().to_string())
        })
        .collect())
}

/// Decides whether `facts` may see what `settings` covers: the `WSGIAccessScript`, then the
/// `Require` tree, asking for Basic credentials when it needs a user (checked by the
/// `AuthBasicProvider`s in order: `file`, `wsgi`). `hooks` runs the mod_wsgi scripts (None
/// when the configuration names none). Blocking (password hashing, file reads, DNS, Python):
/// call it off the async threads unless the tree needs none of them.
pub fn authorize(
    settings: &WsgiSettings,
    facts: &RequestFacts<'_>,
    hooks: Option<&dyn ScriptHooks>,
) -> Result<Granted, Refusal> {
    let need_hooks = |directive: &str| {
        hooks.ok_or_else(|| {
            Refusal::Misconfigured(format!(
                "{directive} applies, but this front process started no embedded Python: restart wsgi serve"
            ))
        })
    };
    if let Some(script) = &settings.access_script {
        let decision = need_hooks("WSGIAccessScript")?
            .allow_access(script, &facts.client.to_string())
            .map_err(Refusal::Misconfigured)?;
        if decision == AccessDecision::Deny {
            return Err(Refusal::Forbidden(format!(
                "allow_access() of the WSGIAccessScript {} returned False",
                script.path.display()
            )));
        }
    }
    let Some(authz) = settings.authz.clone() else {
        return Ok(Granted::default());
    };
    let authz: Arc<AuthzNode> = authz;
    let host_name = std::cell::OnceCell::new();
    let host_name = || {
        host_name
            .get_or_init(|| double_reverse(facts.client))
            .clone()
    };
    let env_set = |var: &str| facts.env.iter().any(|(k, _)| k == var);
    let failure = std::cell::RefCell::new(None);
    let fail = |why: String| {
        failure.borrow_mut().get_or_insert(why);
        Vec::new()
    };
    let groups = |user: &str| match &settings.auth_group_file {
        Some(file) => groups_of(file, user).unwrap_or_else(|e| {
            fail(format!(
                "cannot read the AuthGroupFile {}: {e}",
                file.display()
            ))
        }),
        None => Vec::new(),
    };
    let wsgi_groups = |user: &str| {
        match (&settings.auth_group_script, hooks) {
        (Some(script), Some(hooks)) => hooks.groups_for_user(script, user).unwrap_or_else(fail),
        (Some(_), None) => fail("a WSGIAuthGroupScript applies, but this front process started no embedded Python: restart wsgi serve".into()),
        (None, _) => fail("`Require wsgi-group` applies, but no WSGIAuthGroupScript does: add `WSGIAuthGroupScript /path/to/groups.wsgi` to the same section".into()),
    }
    };
    let decide = |user: Option<&str>| {
        authz.evaluate(&AuthzRequest {
            client: facts.client,
            server: facts.server,
            method: facts.method,
            env_set: &env_set,
            user,
            groups: &groups,
            host_name: &host_name,
            wsgi_groups: &wsgi_groups,
        })
    };
    match decide(None) {
        Outcome::Granted => return Ok(Granted::default()),
        Outcome::Denied | Outcome::Neutral => {
            return Err(Refusal::Forbidden(
                "the Require rules deny the request".into(),
            ));
        }
        Outcome::DeniedNoUser => {}
    }
    // A user is needed: mod_auth_basic.
    let basic = settings
        .auth_type
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case("basic"));
    if !basic {
        return Err(Refusal::Misconfigured(
            "a Require line needs a user, but no `AuthType Basic` covers the request".into(),
        ));
    }
    let Some(realm) = settings.auth_name.clone() else {
        return Err(Refusal::Misconfigured(
            "`AuthType Basic` needs an `AuthName`".into(),
        ));
    };
    let unauthorized = |why: String, user: Option<&str>| Refusal::Unauthorized {
        realm: realm.clone(),
        why,
        user: user.map(str::to_string),
    };
    let Some((given, password)) = basic_credentials(facts.headers) else {
        return Err(unauthorized("no Basic credentials".into(), None));
    };
    let user = authenticate(settings, hooks, &given, &password)?.ok_or_else(|| {
        unauthorized(
            format!("user `{given}`: unknown, or a wrong password"),
            Some(&given),
        )
    })?;
    let outcome = decide(Some(&user));
    if let Some(why) = failure.into_inner() {
        return Err(Refusal::Misconfigured(why));
    }
    match outcome {
        Outcome::Granted => Ok(Granted {
            user: Some(user),
            auth_type: Some("Basic".into()),
        }),
        _ => Err(unauthorized(
            format!("user `{user}` is not granted by the Require rules"),
            Some(&user),
        )),
    }
}

/// mod_auth_basic's provider chain: each `AuthBasicProvider` in turn (default `file`) until
/// one knows the user. `Ok(Some(name))`: the password is right (the name may be the one a
/// `WSGIAuthUserScript` gave); `Ok(None)`: unknown user or wrong password.
fn authenticate(
    settings: &WsgiSettings,
    hooks: Option<&dyn ScriptHooks>,
    user: &str,
    password: &str,
) -> Result<Option<String>, Refusal> {
    let default = ["file".to_string()];
    let providers = settings.auth_basic_provider.as_deref().unwrap_or(&default);
    for provider in providers {
        if provider.eq_ignore_ascii_case("file") {
            let Some(file) = &settings.auth_user_file else {
                return Err(Refusal::Misconfigured(
                    "`AuthBasicProvider file` needs an `AuthUserFile`".into(),
                ));
            };
            match check_password(file, user, password) {
                Ok(Some(true)) => return Ok(Some(user.to_string())),
                Ok(Some(false)) => return Ok(None),
                Ok(None) => continue,
                Err(e) => {
                    return Err(Refusal::Misconfigured(format!(
                        "cannot read the AuthUserFile {}: {e}",
                        file.display()
                    )));
                }
            }
        } else if provider.eq_ignore_ascii_case("wsgi") {
            let Some(script) = &settings.auth_user_script else {
                return Err(Refusal::Misconfigured(
                    "`AuthBasicProvider wsgi` applies, but no WSGIAuthUserScript does: add `WSGIAuthUserScript /path/to/auth.wsgi` to the same section".into(),
                ));
            };
            let Some(hooks) = hooks else {
                return Err(Refusal::Misconfigured(
                    "a WSGIAuthUserScript applies, but this front process started no embedded Python: restart wsgi serve".into(),
                ));
            };
            match hooks
                .check_password(script, user, password)
                .map_err(Refusal::Misconfigured)?
            {
                PasswordDecision::Granted => return Ok(Some(user.to_string())),
                PasswordDecision::GrantedAs(name) => return Ok(Some(name)),
                PasswordDecision::Denied => return Ok(None),
                PasswordDecision::UnknownUser => continue,
            }
        } else {
            return Err(Refusal::Misconfigured(format!(
                "the AuthBasicProvider `{provider}` is not implemented by wsgi serve"
            )));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hashes made by Apache's `htpasswd` (`-B`, `-m`, `-s`, `-d`) for `secret`.
    const HTPASSWD: &str = "\
bcrypt:$2y$05$TU/i0YTu3rgIG3BLKE1FUOcjE3jAM4EV1/8FQLjtOYEyH6vIJJO2W
md5:$apr1$H2lL4er4$z5qe7dQ2TReiv3RBhHRHa/
sha:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=
crypt:8lV5Ev.ZdBdUk
";

    #[test]
    fn htpasswd_formats() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("htpasswd");
        std::fs::write(&file, HTPASSWD).unwrap();
        for user in ["bcrypt", "md5", "sha", "crypt"] {
            assert_eq!(
                check_password(&file, user, "secret").unwrap(),
                Some(true),
                "{user}"
            );
            assert_eq!(
                check_password(&file, user, "Secret").unwrap(),
                Some(false),
                "{user}"
            );
        }
        assert_eq!(check_password(&file, "nobody", "secret").unwrap(), None);
        assert!(check_password(&dir.path().join("missing"), "md5", "secret").is_err());
    }

    #[test]
    fn group_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("groups");
        std::fs::write(&file, "admins: alice bob\nstaff:carol alice\n").unwrap();
        assert_eq!(groups_of(&file, "alice").unwrap(), ["admins", "staff"]);
        assert!(groups_of(&file, "dave").unwrap().is_empty());
    }

    #[test]
    fn basic_headers() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Basic YWxpY2U6b3Blbjpz".parse().unwrap());
        assert_eq!(
            basic_credentials(&headers),
            Some(("alice".into(), "open:s".into()))
        );
        headers.insert("authorization", "Bearer x".parse().unwrap());
        assert_eq!(basic_credentials(&headers), None);
    }
}
