//! Who `wsgi serve`'s processes run as, as Apache does it: the server starts as root (to bind
//! port 80 and open its log files), and every process that reads client bytes or runs Python
//! runs as an unprivileged user. Only the master process, which never touches client bytes
//! and runs no Python, stays root, to start the daemon processes as their users and replace
//! them.
//!
//! The front process's user is `--user` (and `--group`), else the configuration's `User` (and
//! `Group`), else [`DEFAULT_USERS`]: `www-data` (what Debian's Apache runs as) where it exists,
//! `nobody` elsewhere. Running the applications as root needs `--allow-root`. Supplementary
//! groups are dropped; a failed `setgroups`/`setgid`/`setuid` ends the process.

use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Group, Uid, User};
use wsgi_config::venv::{Access, ProblemKind, UserIdentity, check_path_readable};

/// The users tried, in order, when the server starts as root and names none.
pub const DEFAULT_USERS: [&str; 2] = ["www-data", "nobody"];

/// Where the name of the user who serves clients comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserSource {
    /// `--user`.
    Flag,
    /// The configuration's `User`.
    Config,
    /// Nothing names one: the first of [`DEFAULT_USERS`] that exists.
    Default,
}

impl UserSource {
    /// Where the user comes from: `--user`, else the configuration's `User`, else the default.
    pub fn of(cli_user: Option<&str>, config_user: Option<&str>) -> UserSource {
        match (cli_user, config_user) {
            (Some(_), _) => UserSource::Flag,
            (None, Some(_)) => UserSource::Config,
            (None, None) => UserSource::Default,
        }
    }

    /// How messages name where the user was given: `--user`, `User`, `the default user`.
    pub fn label(self) -> &'static str {
        match self {
            UserSource::Flag => "--user",
            UserSource::Config => "User",
            UserSource::Default => "the default user",
        }
    }

    /// Why this user, for messages.
    pub fn why(self) -> String {
        match self {
            UserSource::Flag => "--user".to_string(),
            UserSource::Config => "the configuration's User".to_string(),
            UserSource::Default => format!(
                "the default when started as root: {} where it exists, else {}",
                DEFAULT_USERS[0], DEFAULT_USERS[1]
            ),
        }
    }
}

/// The name of the user who serves clients when the server starts as root: `--user`, else the
/// configuration's `User`, else the first of [`DEFAULT_USERS`] that exists. `wsgi check` checks
/// what this user can read.
pub fn serving_user(
    cli_user: Option<&str>,
    config_user: Option<&str>,
) -> Result<(UserSource, String), PrivilegeError> {
    let source = UserSource::of(cli_user, config_user);
    let name = match cli_user.or(config_user) {
        Some(name) => name.to_string(),
        None => DEFAULT_USERS
            .iter()
            .find(|u| User::from_name(u).ok().flatten().is_some())
            .ok_or(PrivilegeError::NoDefaultUser)?
            .to_string(),
    };
    Ok((source, name))
}

/// An unprivileged account to run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The user name.
    pub name: String,
    /// Its user id.
    pub uid: u32,
    /// The group id to run with.
    pub gid: u32,
}

impl Account {
    /// `name:uid:gid`, how the master passes it to the front process.
    pub fn encode(&self) -> String {
        format!("{}:{}:{}", self.name, self.uid, self.gid)
    }

    /// Reads [`Account::encode`]'s form.
    pub fn decode(text: &str) -> Option<Account> {
        let mut parts = text.rsplitn(3, ':');
        let gid = parts.next()?.parse().ok()?;
        let uid = parts.next()?.parse().ok()?;
        let name = parts.next()?.to_string();
        Some(Account { name, uid, gid })
    }
}

/// What the processes that serve clients run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// Not started as root: as whoever started the server (nothing can change).
    Unchanged,
    /// Started as root with `--allow-root` and no user named: stays root.
    Root,
    /// Started as root: becomes this account.
    Account(Account),
}

/// Why the server will not start with the privileges it was given.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// The user named does not exist.
    #[error(
        "{what} `{name}`: no such user on this system: name an existing unprivileged user (for example www-data or nobody)"
    )]
    NoSuchUser {
        /// Where it was named (`--user`, `User`).
        what: &'static str,
        /// The name.
        name: String,
    },
    /// The group named does not exist.
    #[error(
        "{what} `{name}`: no such group on this system: name an existing group, or leave it out to use the user's own"
    )]
    NoSuchGroup {
        /// Where it was named (`--group`, `Group`).
        what: &'static str,
        /// The name.
        name: String,
    },
    /// No default user exists.
    #[error(
        "started as root with no user named, and neither www-data nor nobody exists: name the user the applications run as with --user (or `User` in the configuration)"
    )]
    NoDefaultUser,
    /// The user named is root.
    #[error(
        "{what} `{name}` would run the applications as root: name an unprivileged user, or add --allow-root if you really mean it"
    )]
    WouldRunAsRoot {
        /// Where it was named.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// The user cannot read what it must serve.
    #[error("the applications would run as {user} ({why}), but {user} cannot read what they need:\n{}\nfix the permissions, name another user with --user, or add --allow-root to run them as root", .problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Unreadable {
        /// The user.
        user: String,
        /// Why this user (`--user`, the default, ...).
        why: String,
        /// What blocks, with the fix.
        problems: Vec<String>,
    },
    /// Dropping privileges failed: the process must not go on.
    #[error("cannot become {user} ({step} failed: {source}); refusing to serve as root")]
    Drop {
        /// The account.
        user: String,
        /// `setgroups`, `setgid` or `setuid`.
        step: &'static str,
        /// The error.
        source: nix::Error,
    },
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    Uid::effective().is_root()
}

/// Decides who serves clients: `user`/`group` from the command line, else the
/// configuration's `User`/`Group`, else the default. Not root: [`Identity::Unchanged`] (a
/// user named is then logged and ignored, as Apache does).
pub fn decide(
    cli_user: Option<&str>,
    cli_group: Option<&str>,
    config_user: Option<&str>,
    config_group: Option<&str>,
    allow_root: bool,
) -> Result<Identity, PrivilegeError> {
    if !is_root() {
        if let Some(name) = cli_user.or(config_user) {
            let me = User::from_uid(Uid::effective()).ok().flatten();
            if me.as_ref().is_none_or(|me| me.name != name) {
                tracing::warn!(
                    "not started as root: the user `{name}` is ignored, the applications run as this user"
                );
            }
        }
        return Ok(Identity::Unchanged);
    }
    if allow_root && cli_user.is_none() && config_user.is_none() {
        return Ok(Identity::Root);
    }
    let (source, name) = serving_user(cli_user, config_user)?;
    let what = source.label();
    let user = lookup_user(what, &name)?;
    if user.uid.is_root() {
        if allow_root {
            return Ok(Identity::Root);
        }
        return Err(PrivilegeError::WouldRunAsRoot { what, name });
    }
    let gid = match (cli_group, config_group) {
        (Some(g), _) => lookup_group("--group", g)?,
        (None, Some(g)) if cli_user.is_none() => lookup_group("Group", g)?,
        _ => user.gid,
    };
    Ok(Identity::Account(Account {
        name: user.name,
        uid: user.uid.as_raw(),
        gid: gid.as_raw(),
    }))
}

fn lookup_user(what: &'static str, name: &str) -> Result<User, PrivilegeError> {
    let found = match name.strip_prefix('#').map(str::parse::<u32>) {
        Some(Ok(uid)) => User::from_uid(Uid::from_raw(uid)),
        _ => User::from_name(name),
    };
    found
        .ok()
        .flatten()
        .ok_or_else(|| PrivilegeError::NoSuchUser {
            what,
            name: name.to_string(),
        })
}

fn lookup_group(what: &'static str, name: &str) -> Result<Gid, PrivilegeError> {
    let found = match name.strip_prefix('#').map(str::parse::<u32>) {
        Some(Ok(gid)) => return Ok(Gid::from_raw(gid)),
        _ => Group::from_name(name),
    };
    found
        .ok()
        .flatten()
        .map(|g| g.gid)
        .ok_or_else(|| PrivilegeError::NoSuchGroup {
            what,
            name: name.to_string(),
        })
}

/// Checks, from permission bits, that `account` can read every path in `paths` (scripts,
/// python-home, python-path folders, static folders). `why` says how the account was chosen.
pub fn check_readable(
    account: &Account,
    why: &str,
    paths: &[PathBuf],
) -> Result<(), PrivilegeError> {
    let identity = UserIdentity {
        name: account.name.clone(),
        uid: account.uid,
        gid: account.gid,
        // Supplementary groups are dropped: only the primary group counts.
        groups: vec![account.gid],
    };
    let mut problems = Vec::new();
    for path in paths {
        for line in unreadable(path, &identity) {
            if !problems.contains(&line) {
                problems.push(line);
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(PrivilegeError::Unreadable {
            user: account.name.clone(),
            why: why.to_string(),
            problems,
        })
    }
}

/// What keeps `user` from reading `path` (a file, or a folder to list), from permission bits:
/// the component that blocks, its mode and owner, and the fix; nothing when `path` is readable.
/// `wsgi serve` refuses to start with these, `wsgi check` reports them.
pub fn unreadable(path: &Path, user: &UserIdentity) -> Vec<String> {
    check_path_readable(path, user)
        .into_iter()
        .map(|problem| match &problem.kind {
            ProblemKind::AccessDenied {
                path: blocked,
                denied,
                mode,
                owner,
                group,
                fix,
                ..
            } => {
                let needed_for = if blocked == path {
                    String::new()
                } else {
                    format!(" (needed for {})", path.display())
                };
                format!(
                    "{}{needed_for} is not {} by {} (mode {:04o}, owner {owner}, group {group}): {fix}",
                    blocked.display(),
                    match denied {
                        Access::Search => "searchable",
                        Access::Read => "readable",
                    },
                    user.name,
                    mode & 0o7777,
                )
            }
            _ => problem.to_string(),
        })
        .collect()
}

/// Becomes `account` for good: supplementary groups dropped, then the group, then the user.
/// Any failure is an error the caller must stop on; success is verified (root cannot be
/// taken back).
pub fn become_account(account: &Account) -> Result<(), PrivilegeError> {
    let fail = |step, source| PrivilegeError::Drop {
        user: account.name.clone(),
        step,
        source,
    };
    nix::unistd::setgroups(&[]).map_err(|e| fail("setgroups", e))?;
    nix::unistd::setgid(Gid::from_raw(account.gid)).map_err(|e| fail("setgid", e))?;
    nix::unistd::setuid(Uid::from_raw(account.uid)).map_err(|e| fail("setuid", e))?;
    let uid = Uid::from_raw(account.uid);
    if Uid::current() != uid
        || Uid::effective() != uid
        || nix::unistd::setuid(Uid::from_raw(0)).is_ok()
    {
        return Err(fail("setuid", nix::Error::EPERM));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_round_trip() {
        let a = Account {
            name: "www-data".into(),
            uid: 33,
            gid: 33,
        };
        assert_eq!(Account::decode(&a.encode()), Some(a));
        assert_eq!(Account::decode("x"), None);
    }

    #[test]
    fn the_user_comes_from_the_flag_then_the_config_then_the_default() {
        if !is_root() {
            assert_eq!(
                decide(Some("nobody"), None, None, None, false).unwrap(),
                Identity::Unchanged
            );
            return;
        }
        let nobody = User::from_name("nobody").unwrap().unwrap();
        let Identity::Account(a) = decide(Some("nobody"), None, Some("root"), None, false).unwrap()
        else {
            panic!("not an account")
        };
        assert_eq!((a.name.as_str(), a.uid), ("nobody", nobody.uid.as_raw()));
        assert!(matches!(
            decide(None, None, Some("root"), None, false),
            Err(PrivilegeError::WouldRunAsRoot { what: "User", .. })
        ));
        assert_eq!(
            decide(None, None, Some("root"), None, true).unwrap(),
            Identity::Root
        );
        assert_eq!(
            decide(None, None, None, None, true).unwrap(),
            Identity::Root
        );
        let Identity::Account(d) = decide(None, None, None, None, false).unwrap() else {
            panic!("no default account")
        };
        assert!(DEFAULT_USERS.contains(&d.name.as_str()));
        assert!(matches!(
            decide(Some("no-such-user-here"), None, None, None, false),
            Err(PrivilegeError::NoSuchUser { what: "--user", .. })
        ));
        assert!(matches!(
            decide(
                Some("nobody"),
                Some("no-such-group-here"),
                None,
                None,
                false
            ),
            Err(PrivilegeError::NoSuchGroup { .. })
        ));
    }

    #[test]
    fn wsgi_check_and_wsgi_serve_name_the_same_user() {
        assert_eq!(
            serving_user(Some("alice"), Some("bob")).unwrap(),
            (UserSource::Flag, "alice".to_string())
        );
        assert_eq!(
            serving_user(None, Some("bob")).unwrap(),
            (UserSource::Config, "bob".to_string())
        );
        let (source, name) = serving_user(None, None).unwrap();
        assert_eq!(source, UserSource::Default);
        let first_existing = DEFAULT_USERS
            .iter()
            .find(|u| User::from_name(u).ok().flatten().is_some())
            .unwrap();
        assert_eq!(name, *first_existing);
        assert_eq!(
            UserSource::of(None, None).why(),
            "the default when started as root: www-data where it exists, else nobody"
        );
    }

    #[test]
    fn an_unreadable_file_is_named_once() {
        if !is_root() {
            eprintln!("skipped: making a file only root can read needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let script = dir.path().join("app.wsgi");
        std::fs::write(&script, "").unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let nobody = UserIdentity::lookup("nobody").unwrap();
        let s = script.display();
        assert_eq!(
            unreadable(&script, &nobody),
            [format!(
                "{s} is not readable by nobody (mode 0600, owner root, group root): allow it with `chmod -R a+rX {s}`"
            )]
        );
    }

    #[test]
    fn unreadable_paths_are_named_with_the_fix() {
        if !is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let script = dir.path().join("app.wsgi");
        std::fs::write(&script, "").unwrap();
        let nobody = User::from_name("nobody").unwrap().unwrap();
        let account = Account {
            name: "nobody".into(),
            uid: nobody.uid.as_raw(),
            gid: nobody.gid.as_raw(),
        };
        let err = check_readable(&account, "--user", &[script]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("nobody cannot read"), "{text}");
        assert!(text.contains("is not searchable by nobody"), "{text}");
        assert!(text.contains("chmod"), "{text}");
        assert!(text.contains("--allow-root"), "{text}");
    }
}
