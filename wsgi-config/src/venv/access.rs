//! Whether a given user can read a virtual environment, judged from permission bits.
//!
//! The walk follows what the kernel does on `open()`: every directory on the way needs search
//! (`x`) permission, symbolic links are followed (their targets' folders need search permission
//! too), and the owner, group or other bits apply in that order (the first class that matches
//! decides, even if a later class would allow more). uid 0 may read everything. POSIX ACLs and
//! capabilities other than root's are not taken into account.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use nix::unistd::{Gid, Group, Uid, User};
use serde::Serialize;

use super::absolute_path;
use super::problem::{Access, AccessFix, Problem, ProblemKind};
use crate::path_walk::{self, WalkError};

/// A user as the kernel sees it for permission checks: uid, primary gid and every group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserIdentity {
    /// The user name (or `uid N` for a uid without a passwd entry).
    pub name: String,
    /// The user id.
    pub uid: u32,
    /// The primary group id.
    pub gid: u32,
    /// All group ids of the user, the primary one included.
    pub groups: Vec<u32>,
}

/// Why a user could not be looked up.
#[derive(Debug, thiserror::Error)]
pub enum UserLookupError {
    /// No passwd entry has this name.
    #[error(
        "user {name} does not exist on this system: give the user your application runs as \
         (e.g. www-data on Debian), or create it with `useradd --system --no-create-home {name}`"
    )]
    NoSuchUser {
        /// The name looked up.
        name: String,
    },
    /// The passwd database could not be read.
    #[error(
        "looking up user {name} in the passwd database failed: {source}; check /etc/passwd and /etc/nsswitch.conf"
    )]
    Passwd {
        /// The name (or `#uid`) looked up.
        name: String,
        /// The error from `getpwnam_r`/`getpwuid_r`.
        source: nix::Error,
    },
    /// The user's groups could not be listed.
    #[error(
        "listing the groups of user {name} failed: {source}; check /etc/group and /etc/nsswitch.conf"
    )]
    Groups {
        /// The user name.
        name: String,
        /// The error from `getgrouplist`/`getgroups`.
        source: nix::Error,
    },
}

impl UserIdentity {
    /// Looks a user up by name in the passwd database, with all its groups (`getgrouplist`).
    /// `#N` looks up uid N, as Apache's `User` directive allows.
    pub fn lookup(name: &str) -> Result<UserIdentity, UserLookupError> {
        let passwd_err = |source| UserLookupError::Passwd {
            name: name.to_owned(),
            source,
        };
        let user = match name.strip_prefix('#').map(str::parse::<u32>) {
            Some(Ok(uid)) => User::from_uid(Uid::from_raw(uid)).map_err(passwd_err)?,
            _ => User::from_name(name).map_err(passwd_err)?,
        };
        let user = user.ok_or_else(|| UserLookupError::NoSuchUser {
            name: name.to_owned(),
        })?;
        // A name from the passwd database never holds a NUL byte.
        let cname =
            CString::new(user.name.as_bytes()).map_err(|_| UserLookupError::NoSuchUser {
                name: name.to_owned(),
            })?;
        let groups = nix::unistd::getgrouplist(&cname, user.gid).map_err(|source| {
            UserLookupError::Groups {
                name: user.name.clone(),
                source,
            }
        })?;
        Ok(UserIdentity::assemble(
            user.name,
            user.uid.as_raw(),
            user.gid.as_raw(),
            groups,
        ))
    }

    /// The identity this process checks permissions with: effective uid and gid and the
    /// process's supplementary groups.
    pub fn current() -> Result<UserIdentity, UserLookupError> {
        let uid = nix::unistd::geteuid();
        let gid = nix::unistd::getegid();
        let name = match User::from_uid(uid) {
            Ok(Some(user)) => user.name,
            Ok(None) => format!("uid {uid}"),
            Err(source) => {
                return Err(UserLookupError::Passwd {
                    name: format!("#{uid}"),
                    source,
                });
            }
        };
        let groups = nix::unistd::getgroups().map_err(|source| UserLookupError::Groups {
            name: name.clone(),
            source,
        })?;
        Ok(UserIdentity::assemble(
            name,
            uid.as_raw(),
            gid.as_raw(),
            groups,
        ))
    }

    fn assemble(name: String, uid: u32, gid: u32, groups: Vec<Gid>) -> UserIdentity {
        let mut all: Vec<u32> = groups.into_iter().map(Gid::as_raw).collect();
        all.push(gid);
        all.sort_unstable();
        all.dedup();
        UserIdentity {
            name,
            uid,
            gid,
            groups: all,
        }
    }

    /// The permission bits (`rwx` as 0..=7) that apply to this user for a file's metadata.
    fn bits_for(&self, meta: &fs::Metadata) -> u32 {
        let mode = meta.mode();
        if meta.uid() == self.uid {
            (mode >> 6) & 7
        } else if self.groups.contains(&meta.gid()) {
            (mode >> 3) & 7
        } else {
            mode & 7
        }
    }

    /// The permission this user lacks among those wanted, read first; `None` when allowed.
    fn lacks(&self, meta: &fs::Metadata, want: Want) -> Option<Access> {
        if self.uid == 0 {
            return None;
        }
        let bits = self.bits_for(meta);
        if want.read && bits & 4 == 0 {
            Some(Access::Read)
        } else if want.search && bits & 1 == 0 {
            Some(Access::Search)
        } else {
            None
        }
    }
}

/// Permissions wanted on a path.
#[derive(Debug, Clone, Copy)]
struct Want {
    read: bool,
    search: bool,
}

const SEARCH: Want = Want {
    read: false,
    search: true,
};
const READ: Want = Want {
    read: true,
    search: false,
};
const READ_SEARCH: Want = Want {
    read: true,
    search: true,
};

/// The owner and permission bits of a path.
#[derive(Debug, Clone, Copy)]
struct Owner {
    uid: u32,
    gid: u32,
    mode: u32,
}

impl Owner {
    fn of(meta: &fs::Metadata) -> Self {
        Owner {
            uid: meta.uid(),
            gid: meta.gid(),
            mode: meta.mode(),
        }
    }
}

/// Where a walk stopped.
enum Blocked {
    Denied {
        path: PathBuf,
        owner: Owner,
        want: Want,
        denied: Access,
    },
    Failed {
        path: PathBuf,
        error: io::Error,
    },
}

/// Walks `path` (absolute) from `/` as the kernel would for `user`: search permission on every
/// directory on the way (through symbolic links), `last` on the final object.
fn walk(user: &UserIdentity, path: &Path, last: Want) -> Result<(), Blocked> {
    let check = |path: &Path, meta: &fs::Metadata, want: Want| match user.lacks(meta, want) {
        Some(denied) => Err(Blocked::Denied {
            path: path.to_path_buf(),
            owner: Owner::of(meta),
            want,
            denied,
        }),
        None => Ok(()),
    };
    let root = Path::new("/");
    let root_meta = fs::metadata(root).map_err(|error| Blocked::Failed {
        path: root.to_path_buf(),
        error,
    })?;
    let is_root = path.components().all(|c| matches!(c, Component::RootDir));
    check(root, &root_meta, if is_root { last } else { SEARCH })?;
    // Symbolic links have no permissions of their own: only what they lead to is checked.
    let mut final_checked = is_root;
    let resolved = path_walk::walk(path, |step| {
        if step.meta.file_type().is_symlink() || (step.more && !step.meta.is_dir()) {
            // (Going on through a file: the walk stops with ENOTDIR, as the kernel would.)
            return Ok(());
        }
        final_checked = !step.more;
        check(
            &step.path(),
            step.meta,
            if step.more { SEARCH } else { last },
        )
    })
    .map_err(|e| match e {
        WalkError::Io { path, error } => Blocked::Failed { path, error },
        WalkError::Visit(blocked) => blocked,
    })?;
    if !final_checked {
        // The final object was reached without a lookup of its own (a link to `/`, or a path
        // ending in `..`): it needs `last` too.
        let meta = fs::metadata(&resolved).map_err(|error| Blocked::Failed {
            path: resolved.clone(),
            error,
        })?;
        check(&resolved, &meta, last)?;
    }
    Ok(())
}

fn owner_name(uid: u32) -> String {
    match User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(user)) => user.name,
        _ => uid.to_string(),
    }
}

fn group_name(gid: u32) -> String {
    match Group::from_gid(Gid::from_raw(gid)) {
        Ok(Some(group)) => group.name,
        _ => gid.to_string(),
    }
}

/// Whether `path` is a home directory: `/root`, a folder directly under `/home`, or the passwd
/// home directory of its owner.
fn is_home_directory(path: &Path, owner: u32) -> bool {
    if path == Path::new("/root") || path.parent() == Some(Path::new("/home")) {
        return true;
    }
    match User::from_uid(Uid::from_raw(owner)) {
        Ok(Some(user)) => user.dir != Path::new("/") && user.dir == path,
        _ => false,
    }
}

/// Checks that `user` can read the virtual environment (or installation) at `path`, the way
/// the server will need: search permission on every folder from `/` down to `path`; read and
/// search on the root, `bin`, `lib`, every `lib/pythonX.Y` and its `site-packages`; read on
/// `pyvenv.cfg`. Parts that do not exist are not required here ([`inspect`](super::inspect)
/// reports them). Returns the first component that blocks, or nothing when all is readable.
pub fn check_readable(path: &Path, user: &UserIdentity) -> Vec<Problem> {
    let root = absolute_path(path);
    let canonical_root = fs::canonicalize(&root).unwrap_or_else(|_| root.clone());

    let mut items: Vec<(PathBuf, Want)> = vec![(root.clone(), READ_SEARCH)];
    let cfg = root.join("pyvenv.cfg");
    if cfg.exists() {
        items.push((cfg, READ));
    }
    for sub in ["bin", "lib"] {
        let dir = root.join(sub);
        if dir.is_dir() {
            items.push((dir, READ_SEARCH));
        }
    }
    let mut lib_dirs: Vec<PathBuf> = fs::read_dir(root.join("lib"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("python"))
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    lib_dirs.sort();
    for dir in lib_dirs {
        let site = dir.join("site-packages");
        items.push((dir, READ_SEARCH));
        if site.is_dir() {
            items.push((site, READ_SEARCH));
        }
    }

    for (item, item_want) in items {
        if let Err(blocked) = walk(user, &item, item_want) {
            return vec![blocked_problem(blocked, user, &root, &canonical_root)];
        }
    }
    Vec::new()
}

/// Checks that `user` can open `path` for reading (a file) or list it (a folder, read and
/// search), as the kernel would: search permission on every folder on the way. Returns the
/// component that blocks with the fix, or nothing when all is readable.
pub fn check_path_readable(path: &Path, user: &UserIdentity) -> Vec<Problem> {
    let path = absolute_path(path);
    let want = if path.is_dir() { READ_SEARCH } else { READ };
    match walk(user, &path, want) {
        Ok(()) => Vec::new(),
        Err(blocked) => {
            let canonical = fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            vec![blocked_problem(blocked, user, &path, &canonical)]
        }
    }
}

/// The problem a blocked walk is, with its fix: `chmod -R a+rX ROOT` inside `root`, moving
/// `root` out of a home folder, or the one `chmod` the blocking folder needs.
fn blocked_problem(
    blocked: Blocked,
    user: &UserIdentity,
    root: &Path,
    canonical_root: &Path,
) -> Problem {
    match blocked {
        Blocked::Failed { path, error } => Problem::new(ProblemKind::CannotCheckAccess {
            path,
            user: user.name.clone(),
            error: error.to_string(),
        }),
        Blocked::Denied {
            path,
            owner: stat,
            want,
            denied,
        } => {
            let fix = if path.starts_with(canonical_root) || path.starts_with(root) {
                AccessFix::Chmod {
                    command: format!("chmod -R a+rX {}", root.display()),
                }
            } else if is_home_directory(&path, stat.uid) {
                let name = root
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "NAME".to_owned());
                AccessFix::MoveOutOfHome {
                    home: path.clone(),
                    suggestion: Path::new("/usr/local/venvs").join(name),
                }
            } else {
                let who = if stat.uid == user.uid {
                    "u"
                } else if user.groups.contains(&stat.gid) {
                    "g"
                } else {
                    "o"
                };
                let perms = match (want.read, want.search) {
                    (true, true) => "rx",
                    (true, false) => "r",
                    _ => "x",
                };
                AccessFix::Chmod {
                    command: format!("chmod {who}+{perms} {}", path.display()),
                }
            };
            Problem::new(ProblemKind::AccessDenied {
                user: user.name.clone(),
                denied,
                mode: stat.mode,
                owner: owner_name(stat.uid),
                group: group_name(stat.gid),
                path,
                fix,
            })
        }
    }
}
