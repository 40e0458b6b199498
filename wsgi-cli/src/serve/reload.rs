//! `--reload-on-changes`: watch the applications' Python source and restart the server when
//! any of it changes, as mod_wsgi-express does. CPython cannot be started twice in one
//! process, so a restart is a graceful stop followed by `exec` of the same command line (with
//! the port it listened on, so `--port 0` keeps its port).
//!
//! What is watched: `.py` and `.wsgi` files below each mounted script's folder and each
//! python-path folder, skipping hidden folders, `__pycache__`, `site-packages` and virtual
//! environments (a folder holding `pyvenv.cfg`), at most [`MAX_FILES`] files. Polled once a
//! second: no inotify, so it works the same on every file system.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::site::Site;

/// The most files watched; beyond this the rest is ignored (and logged once).
pub const MAX_FILES: usize = 20_000;

/// A snapshot of the watched files' modification times.
#[derive(Debug)]
pub struct SourceWatch {
    roots: Vec<PathBuf>,
    files: HashMap<PathBuf, Option<SystemTime>>,
}

impl SourceWatch {
    /// The folders to watch for a site.
    pub fn roots(site: &Site) -> Vec<PathBuf> {
        let mut roots: Vec<PathBuf> = Vec::new();
        let hosts = std::iter::once(&site.config.main).chain(&site.config.virtual_hosts);
        for host in hosts {
            for alias in &host.script_aliases {
                let target = Path::new(&alias.target);
                let folder = if alias.is_directory() {
                    target
                } else {
                    target.parent().unwrap_or(target)
                };
                roots.push(folder.to_path_buf());
            }
        }
        roots.extend(site.python_path.iter().cloned());
        roots.sort();
        roots.dedup();
        roots
    }

    /// Takes the first snapshot.
    pub fn new(roots: Vec<PathBuf>) -> SourceWatch {
        let files = scan(&roots);
        if files.len() >= MAX_FILES {
            tracing::warn!(
                "--reload-on-changes watches only the first {MAX_FILES} source files below {:?}",
                roots
            );
        }
        tracing::info!(
            files = files.len(),
            "--reload-on-changes: watching the applications' source"
        );
        SourceWatch { roots, files }
    }

    /// Scans again; the first file that changed, appeared or disappeared since the last scan.
    pub fn changed(&mut self) -> Option<PathBuf> {
        let now = scan(&self.roots);
        let changed = now
            .iter()
            .find(|(path, mtime)| self.files.get(*path) != Some(mtime))
            .map(|(path, _)| path.clone())
            .or_else(|| self.files.keys().find(|p| !now.contains_key(*p)).cloned());
        self.files = now;
        changed
    }
}

fn skip_folder(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.starts_with('.')
        || name == "__pycache__"
        || name == "site-packages"
        || name == "node_modules"
        || path.join("pyvenv.cfg").exists()
}

fn scan(roots: &[PathBuf]) -> HashMap<PathBuf, Option<SystemTime>> {
    let mut files = HashMap::new();
    let mut stack: Vec<(PathBuf, usize)> = roots.iter().map(|r| (r.clone(), 0)).collect();
    while let Some((folder, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            if files.len() >= MAX_FILES {
                return files;
            }
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                if depth < 16 && !skip_folder(&path) {
                    stack.push((path, depth + 1));
                }
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("py" | "wsgi")
            ) {
                let mtime = entry.metadata().ok().and_then(|m| m.modified().ok());
                files.insert(path, mtime);
            }
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_changes_additions_and_removals_but_not_venvs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        std::fs::write(root.join("app.wsgi"), "a").unwrap();
        std::fs::create_dir_all(root.join("pkg/__pycache__")).unwrap();
        std::fs::write(root.join("pkg/mod.py"), "a").unwrap();
        std::fs::create_dir_all(root.join("venv/lib")).unwrap();
        std::fs::write(root.join("venv/pyvenv.cfg"), "").unwrap();
        std::fs::write(root.join("venv/lib/x.py"), "").unwrap();
        let mut watch = SourceWatch::new(vec![root.clone()]);
        assert_eq!(watch.files.len(), 2);
        assert_eq!(watch.changed(), None);

        std::fs::write(root.join("venv/lib/x.py"), "changed").unwrap();
        std::fs::write(root.join("pkg/__pycache__/mod.py"), "").unwrap();
        assert_eq!(watch.changed(), None);

        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        let f = std::fs::File::options()
            .write(true)
            .open(root.join("pkg/mod.py"))
            .unwrap();
        f.set_modified(later).unwrap();
        assert_eq!(watch.changed(), Some(root.join("pkg/mod.py")));
        assert_eq!(watch.changed(), None);

        std::fs::write(root.join("new.py"), "").unwrap();
        assert_eq!(watch.changed(), Some(root.join("new.py")));
        std::fs::remove_file(root.join("new.py")).unwrap();
        assert_eq!(watch.changed(), Some(root.join("new.py")));
    }
}
