//! Turning an `Include` / `IncludeOptional` argument into the list of files
//! to read, like httpd 2.4's `ap_process_fnmatch_configs`.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use glob::{MatchOptions, Pattern};

/// Deepest directory tree an `Include` of a directory may descend into.
pub(super) const MAX_DIRECTORY_DEPTH: usize = 64;

/// Why an include path could not be expanded.
#[derive(Debug)]
pub(super) enum IncludeProblem {
    /// A path without wildcards does not exist (and the include is not optional).
    Missing(PathBuf),
    /// A wildcard path matched nothing (and the include is not optional).
    NoMatch(PathBuf),
    /// A wildcard component is not a valid pattern.
    BadPattern { pattern: String, reason: String },
    /// A directory could not be listed or a path could not be examined.
    Io { path: PathBuf, error: io::Error },
    /// A directory being included contains itself (through a symlink).
    Loop(PathBuf),
    /// Directory nesting beyond [`MAX_DIRECTORY_DEPTH`].
    TooDeep(PathBuf),
}

/// Whether `text` contains a wildcard as `apr_fnmatch_test` sees it: `*`,
/// `?`, or a `[` that is closed by a later `]`; a backslash escapes the next
/// character.
pub(super) fn has_wildcard(text: &str) -> bool {
    let mut chars = text.chars();
    let mut open_bracket = false;
    while let Some(c) = chars.next() {
        match c {
            '*' | '?' => return true,
            '\\' => {
                chars.next();
            }
            '[' => open_bracket = true,
            ']' if open_bracket => return true,
            _ => {}
        }
    }
    false
}

/// The files an include of `path` (already joined to ServerRoot) reads, in
/// order. Wildcards may appear in any component; each wildcard component is
/// matched against the directory's entries (a leading `.` must be matched
/// literally) and the matches are sorted byte-wise. Directories are
/// included recursively, their entries sorted byte-wise.
pub(super) fn expand(path: &Path, optional: bool) -> Result<Vec<PathBuf>, IncludeProblem> {
    if !has_wildcard(&path.to_string_lossy()) {
        return match fs::metadata(path) {
            Ok(_) => {
                let mut files = Vec::new();
                collect_files(path, &mut Vec::new(), &mut files)?;
                Ok(files)
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                if optional {
                    Ok(Vec::new())
                } else {
                    Err(IncludeProblem::Missing(path.to_path_buf()))
                }
            }
            Err(error) => Err(IncludeProblem::Io {
                path: path.to_path_buf(),
                error,
            }),
        };
    }
    let matches = match_components(path)?;
    if matches.is_empty() && !optional {
        return Err(IncludeProblem::NoMatch(path.to_path_buf()));
    }
    let mut files = Vec::new();
    for found in matches {
        collect_files(&found, &mut Vec::new(), &mut files)?;
    }
    Ok(files)
}

/// Existing paths matching `path`, one component at a time.
fn match_components(path: &Path) -> Result<Vec<PathBuf>, IncludeProblem> {
    let components: Vec<Component> = path.components().collect();
    let mut candidates = vec![PathBuf::new()];
    let options = MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: true,
    };
    for (index, component) in components.iter().enumerate() {
        let is_last = index + 1 == components.len();
        let text = component.as_os_str().to_string_lossy();
        if !matches!(component, Component::Normal(_)) || !has_wildcard(&text) {
            for candidate in &mut candidates {
                candidate.push(component);
            }
            continue;
        }
        let pattern = Pattern::new(&text).map_err(|e| IncludeProblem::BadPattern {
            pattern: text.to_string(),
            reason: e.msg.to_owned(),
        })?;
        let mut next = Vec::new();
        for dir in &candidates {
            let listing = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir.as_path()
            };
            let Ok(entries) = fs::read_dir(listing) else {
                continue;
            };
            let mut names: Vec<_> = entries
                .filter_map(Result::ok)
                .map(|entry| entry.file_name())
                .filter(|name| pattern.matches_with(&name.to_string_lossy(), options))
                .collect();
            names.sort();
            for name in names {
                let found = dir.join(name);
                if is_last || found.is_dir() {
                    next.push(found);
                }
            }
        }
        candidates = next;
    }
    candidates.retain(|candidate| candidate.exists());
    Ok(candidates)
}

/// Appends `path` to `files`, or, if it is a directory, every file below
/// it (entries sorted byte-wise, dot-files included, as httpd does).
fn collect_files(
    path: &Path,
    open_dirs: &mut Vec<PathBuf>,
    files: &mut Vec<PathBuf>,
) -> Result<(), IncludeProblem> {
    if !path.is_dir() {
        files.push(path.to_path_buf());
        return Ok(());
    }
    let io_problem = |error| IncludeProblem::Io {
        path: path.to_path_buf(),
        error,
    };
    let canonical = fs::canonicalize(path).map_err(io_problem)?;
    if open_dirs.contains(&canonical) {
        return Err(IncludeProblem::Loop(path.to_path_buf()));
    }
    if open_dirs.len() >= MAX_DIRECTORY_DEPTH {
        return Err(IncludeProblem::TooDeep(path.to_path_buf()));
    }
    let mut names = fs::read_dir(path)
        .and_then(|entries| {
            entries
                .map(|entry| entry.map(|entry| entry.file_name()))
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(io_problem)?;
    names.sort();
    open_dirs.push(canonical);
    for name in names {
        collect_files(&path.join(name), open_dirs, files)?;
    }
    open_dirs.pop();
    Ok(())
}
