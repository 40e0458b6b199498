//! Resolving a path as the kernel does, one directory entry at a time, for the checks that need
//! to see each step: whether a user may reach a file ([`crate::venv::check_readable`]), and which
//! directories decide what `stat` of a script returns (`wsgi-interp`'s script watch).

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

/// The most symbolic links followed in one path, as Linux's `MAXSYMLINKS`.
pub const MAX_SYMLINKS: u32 = 40;

/// One entry looked up while resolving a path.
#[derive(Debug)]
pub struct Lookup<'a> {
    /// The directory looked in: itself resolved, with no symbolic link in it.
    pub dir: &'a Path,
    /// The entry looked up in it.
    pub name: &'a OsStr,
    /// The entry's own metadata (`lstat`: a symbolic link's, not its target's).
    pub meta: &'a fs::Metadata,
    /// Whether components follow it (false for the final object's lookup, or for a final
    /// symbolic link, whose target's lookups come next).
    pub more: bool,
}

impl Lookup<'_> {
    /// `dir/name`.
    pub fn path(&self) -> PathBuf {
        self.dir.join(self.name)
    }
}

/// Why a walk stopped.
#[derive(Debug)]
pub enum WalkError<E> {
    /// Resolving failed at `path`: it is missing, not a directory, unreadable, or a link
    /// too many.
    Io {
        /// Where.
        path: PathBuf,
        /// The system's error.
        error: io::Error,
    },
    /// The visitor stopped the walk.
    Visit(E),
}

/// Resolves the absolute `path` from `/` as the kernel does: each component looked up in the
/// directory reached so far, symbolic links followed (the last component's too, as `stat` and
/// `open` follow it) up to [`MAX_SYMLINKS`], `..` going to the real parent. `visit` sees every
/// lookup, symbolic links included, in order; returns the final object's resolved path.
pub fn walk<E>(
    path: &Path,
    mut visit: impl FnMut(&Lookup<'_>) -> Result<(), E>,
) -> Result<PathBuf, WalkError<E>> {
    if !path.is_absolute() {
        return Err(WalkError::Io {
            path: path.to_path_buf(),
            error: io::Error::new(io::ErrorKind::InvalidInput, "not an absolute path"),
        });
    }
    let failed = |path: &Path, error: io::Error| WalkError::Io {
        path: path.to_path_buf(),
        error,
    };
    let mut pending = components(path);
    let mut dir = PathBuf::from("/");
    let mut links = 0;
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            // `dir` holds no symbolic link, so its parent is the real one.
            dir.pop();
            continue;
        }
        let next = dir.join(&name);
        let meta = fs::symlink_metadata(&next).map_err(|e| failed(&next, e))?;
        let more = !pending.is_empty();
        visit(&Lookup {
            dir: &dir,
            name: &name,
            meta: &meta,
            more,
        })
        .map_err(WalkError::Visit)?;
        if meta.file_type().is_symlink() {
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(failed(
                    &next,
                    io::Error::from_raw_os_error(nix::libc::ELOOP),
                ));
            }
            let target = fs::read_link(&next).map_err(|e| failed(&next, e))?;
            if target.is_absolute() {
                dir = PathBuf::from("/");
            }
            let mut expanded = components(&target);
            expanded.extend(pending);
            pending = expanded;
            continue;
        }
        if more && !meta.is_dir() {
            return Err(failed(
                &next,
                io::Error::from_raw_os_error(nix::libc::ENOTDIR),
            ));
        }
        dir = next;
    }
    Ok(dir)
}

/// `path`'s names and `..`s, in order.
fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name.to_owned()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::os::unix::fs::symlink;

    /// A lookup as the tests compare it: the directory, the name, whether more follow.
    type Step = (PathBuf, String, bool);

    fn lookups(path: &Path) -> Result<(Vec<Step>, PathBuf), String> {
        let mut seen = Vec::new();
        let resolved = walk(path, |l| {
            seen.push((
                l.dir.to_path_buf(),
                l.name.to_str().unwrap().to_string(),
                l.more,
            ));
            Ok::<(), Infallible>(())
        })
        .map_err(|e| match e {
            WalkError::Io { path, error } => format!("{}: {error}", path.display()),
            WalkError::Visit(never) => match never {},
        })?;
        Ok((seen, resolved))
    }

    #[test]
    fn lookups_follow_links_as_the_kernel_does() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::write(root.join("a/b/f"), "").unwrap();
        symlink("a/b", root.join("l")).unwrap();
        symlink("../b/f", root.join("a/b/rel")).unwrap();
        symlink(root.join("a"), root.join("abs")).unwrap();
        let skip = root.components().count() - 1;
        let (seen, resolved) = lookups(&root.join("l/rel")).unwrap();
        let mine: Vec<_> = seen.into_iter().skip(skip).collect();
        let step = |d: &Path, n: &str, more| (d.to_path_buf(), n.to_string(), more);
        assert_eq!(
            mine,
            [
                step(&root, "l", true),
                step(&root, "a", true),
                step(&root.join("a"), "b", true),
                step(&root.join("a/b"), "rel", false),
                step(&root.join("a"), "b", true),
                step(&root.join("a/b"), "f", false),
            ]
        );
        assert_eq!(resolved, root.join("a/b/f"));
        // An absolute link starts again from `/`; `..` after a link goes to the real parent.
        let (_, resolved) = lookups(&root.join("abs/b/../b/f")).unwrap();
        assert_eq!(resolved, root.join("a/b/f"));
        let (_, resolved) = lookups(&root.join("l/..")).unwrap();
        assert_eq!(resolved, root.join("a"));
    }

    #[test]
    fn what_stops_a_walk_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        fs::write(root.join("file"), "").unwrap();
        symlink("loop", root.join("loop")).unwrap();
        let err = lookups(&root.join("missing/x")).unwrap_err();
        assert!(
            err.starts_with(&format!("{}:", root.join("missing").display())),
            "{err}"
        );
        let err = lookups(&root.join("file/x")).unwrap_err();
        assert!(err.contains("Not a directory"), "{err}");
        let err = lookups(&root.join("loop")).unwrap_err();
        assert!(err.contains("symbolic links"), "{err}");
        assert!(lookups(Path::new("relative/path")).is_err());
        // The visitor's own stop comes back as it was given.
        let stopped = walk(&root.join("file"), |l| {
            if l.name == "file" {
                Err("stop")
            } else {
                Ok(())
            }
        });
        assert!(matches!(stopped, Err(WalkError::Visit("stop"))));
    }
}
