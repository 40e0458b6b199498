//! Who may see what, for `wsgi serve --config`: a section's `Require` tree
//! ([`wsgi_config::authz`]) evaluated for the request, and, when it asks for a user,
//! mod_auth_basic over mod_authn_file (`AuthType Basic`, `AuthName`, `AuthUserFile` in
//! htpasswd's formats: bcrypt, apr1 MD5, SHA1, crypt) and mod_authz_groupfile
//! (`AuthGroupFile`), answering as Apache does: 403 when denied without a user, 401 with
//! `WWW-Authenticate` when credentials are missing, wrong, or not granted.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use http::HeaderMap;
use sha1::Digest as _;
use wsgi_config::WsgiSettings;
use wsgi_config::authz::{AuthzNode, AuthzRequest, Outcome};

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
/// `$apr1$` MD5, `{SHA}`, crypt); Err when the file cannot be read.
pub fn check_password(file: &Path, user: &str, password: &str) -> std::io::Result<bool> {
    let text = std::fs::read_to_string(file)?;
    let Some(hash) = text.lines().find_map(|line| {
        let (name, hash) = line.split_once(':')?;
        (name == user).then(|| hash.trim_end())
    }) else {
        return Ok(false);
    };
    Ok(match hash.strip_prefix("{SHA}") {
        Some(expected) => {
            let digest = sha1::Sha1::digest(password.as_bytes());
            base64::engine::general_purpose::STANDARD.encode(digest) == expected
        }
        None => crypt3_rs::unix::verify(password, hash),
    })
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

/// The password and group files a decision reads, and the tree.
struct Rules {
    authz: Arc<AuthzNode>,
    auth_type: Option<String>,
    realm: Option<String>,
    user_file: Option<PathBuf>,
    group_file: Option<PathBuf>,
}

/// Decides whether `facts` may see what `settings` covers. Blocking (password hashing, file
/// reads, DNS): call it off the async threads.
pub fn authorize(settings: &WsgiSettings, facts: &RequestFacts<'_>) -> Result<Granted, Refusal> {
    let Some(authz) = settings.authz.clone() else {
        return Ok(Granted::default());
    };
    let rules = Rules {
        authz,
        auth_type: settings.auth_type.clone(),
        realm: settings.auth_name.clone(),
        user_file: settings.auth_user_file.clone(),
        group_file: settings.auth_group_file.clone(),
    };
    let host_name = std::cell::OnceCell::new();
    let host_name = || {
        host_name
            .get_or_init(|| double_reverse(facts.client))
            .clone()
    };
    let env_set = |var: &str| facts.env.iter().any(|(k, _)| k == var);
    let group_error = std::cell::RefCell::new(None);
    let groups = |user: &str| match &rules.group_file {
        Some(file) => groups_of(file, user).unwrap_or_else(|e| {
            *group_error.borrow_mut() = Some(format!(
                "cannot read the AuthGroupFile {}: {e}",
                file.display()
            ));
            Vec::new()
        }),
        None => Vec::new(),
    };
    let decide = |user: Option<&str>| {
        rules.authz.evaluate(&AuthzRequest {
            client: facts.client,
            server: facts.server,
            method: facts.method,
            env_set: &env_set,
            user,
            groups: &groups,
            host_name: &host_name,
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
    let basic = rules
        .auth_type
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case("basic"));
    if !basic {
        return Err(Refusal::Misconfigured(
            "a Require line needs a user, but no `AuthType Basic` covers the request".into(),
        ));
    }
    let Some(realm) = rules.realm.clone() else {
        return Err(Refusal::Misconfigured(
            "`AuthType Basic` needs an `AuthName`".into(),
        ));
    };
    let unauthorized = |why: String, user: Option<&str>| Refusal::Unauthorized {
        realm: realm.clone(),
        why,
        user: user.map(str::to_string),
    };
    let Some((user, password)) = basic_credentials(facts.headers) else {
        return Err(unauthorized("no Basic credentials".into(), None));
    };
    let Some(file) = &rules.user_file else {
        return Err(Refusal::Misconfigured(
            "`AuthType Basic` needs an `AuthUserFile`".into(),
        ));
    };
    match check_password(file, &user, &password) {
        Ok(true) => {}
        Ok(false) => {
            return Err(unauthorized(
                format!("user `{user}`: unknown, or a wrong password"),
                Some(&user),
            ));
        }
        Err(e) => {
            return Err(Refusal::Misconfigured(format!(
                "cannot read the AuthUserFile {}: {e}",
                file.display()
            )));
        }
    }
    let outcome = decide(Some(&user));
    if let Some(e) = group_error.into_inner() {
        return Err(Refusal::Misconfigured(e));
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
            assert!(check_password(&file, user, "secret").unwrap(), "{user}");
            assert!(!check_password(&file, user, "Secret").unwrap(), "{user}");
        }
        assert!(!check_password(&file, "nobody", "secret").unwrap());
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
