//! Virtual environment inspection, in pure Rust (no Python is started).
//!
//! wsgi-rs embeds one CPython, fixed when it is built. A `python-home` (`WSGIPythonHome`) must
//! be the root of a virtual environment created by *that* installation, or that installation's
//! own prefix. [`inspect`] reads the folder (its `pyvenv.cfg`, `lib/pythonX.Y`) and says what it
//! is and what is wrong with it; [`check_readable`] checks, from permission bits, that the user
//! the application runs as can read it. `wsgi check` and `wsgi venv` print the reports, and the
//! server refuses to start the interpreter when [`VenvReport::is_usable`] is false.

#![forbid(unsafe_code)]

mod access;
mod cfg;
mod problem;

use std::fmt;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use serde::Serialize;

pub use access::{UserIdentity, UserLookupError, check_path_readable, check_readable};
pub use cfg::{PyvenvCfg, VersionKey};
pub use problem::{Access, AccessFix, Problem, ProblemKind, Severity};

/// A Python version as `major.minor[.patch]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct PythonVersion {
    /// Major version, e.g. 3.
    pub major: u32,
    /// Minor version, e.g. 11.
    pub minor: u32,
    /// Patch level, e.g. 2; `None` when only `X.Y` is known.
    pub patch: Option<u32>,
}

impl PythonVersion {
    /// A version with a known patch level.
    pub fn new(major: u32, minor: u32, patch: u32) -> Self {
        PythonVersion {
            major,
            minor,
            patch: Some(patch),
        }
    }

    /// Parses the forms Python tools print: `3.11.2`, `3.11`, `Python 3.11.2` (`python
    /// --version`), `3.11.2.final.0` (virtualenv's `version_info`), `3.13.0rc1`, and
    /// `3.11.7 (main, ...)` (`Py_GetVersion()`). `None` when it does not start with `X.Y`.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let text = text.strip_prefix("Python ").unwrap_or(text).trim_start();
        let token = text.split_whitespace().next()?;
        let mut parts = token.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor_text = parts.next()?;
        let minor_digits: &str = &minor_text[..leading_digits(minor_text)];
        if minor_digits.is_empty() {
            return None;
        }
        let minor = minor_digits.parse().ok()?;
        // Anything after the minor digits (`3.13t`, `3.14a1`) leaves the patch unknown.
        let patch = if minor_digits.len() == minor_text.len() {
            parts
                .next()
                .and_then(|p| p[..leading_digits(p)].parse().ok())
        } else {
            None
        };
        Some(PythonVersion {
            major,
            minor,
            patch,
        })
    }

    /// `X.Y`, as in `lib/pythonX.Y`.
    pub fn short(&self) -> String {
        format!("{}.{}", self.major, self.minor)
    }

    /// Whether both have the same `X.Y` (the ABI-relevant part).
    pub fn same_minor(&self, other: &PythonVersion) -> bool {
        self.major == other.major && self.minor == other.minor
    }
}

fn leading_digits(s: &str) -> usize {
    s.bytes().take_while(u8::is_ascii_digit).count()
}

impl fmt::Display for PythonVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.patch {
            Some(patch) => write!(f, "{}.{}.{patch}", self.major, self.minor),
            None => write!(f, "{}.{}", self.major, self.minor),
        }
    }
}

/// The CPython a build of wsgi-rs embeds (known without starting it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EmbeddedPython {
    /// The version of the embedded libpython.
    pub version: PythonVersion,
    /// `sys.base_prefix` of the installation, e.g. `/usr`.
    pub prefix: PathBuf,
    /// The installation's interpreter, e.g. `/usr/bin/python3.11`.
    pub executable: PathBuf,
    /// The libpython actually loaded, if known (it can differ from the build-time one).
    pub libpython: Option<PathBuf>,
}

/// What a folder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VenvKind {
    /// Created by `python -m venv` (a `pyvenv.cfg` without a tool marker).
    Venv,
    /// Created by `virtualenv` (`virtualenv = x.y` in `pyvenv.cfg`).
    Virtualenv,
    /// Created by `uv venv` (`uv = x.y.z` in `pyvenv.cfg`).
    Uv,
    /// A plain installation prefix: no `pyvenv.cfg`, has `lib/pythonX.Y/os.py`.
    Installation,
    /// Not recognised (missing, not a directory, or unreadable).
    Unknown,
}

/// The lines to put in the configuration for a `python-home`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigLines {
    /// The absolute root (symbolic links of the environment itself are kept).
    pub root: PathBuf,
    /// `python-home=/abs/root` for `WSGIDaemonProcess`.
    pub python_home: String,
    /// `WSGIPythonHome /abs/root` for embedded mode.
    pub wsgi_python_home: String,
}

/// What [`inspect`] found out about a folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VenvReport {
    /// The path as given.
    pub path: PathBuf,
    /// The path made absolute (relative to the current directory, `..` resolved), as used in
    /// messages and configuration lines.
    pub absolute_path: PathBuf,
    /// What the folder is.
    pub kind: VenvKind,
    /// The Python version that created it (`version` or `version_info` of `pyvenv.cfg`; for an
    /// installation, `X.Y` from `lib/pythonX.Y` and the patch level from `patchlevel.h`).
    pub version: Option<PythonVersion>,
    /// The version of the tool that created it (`virtualenv = ...`, `uv = ...`).
    pub creator_version: Option<String>,
    /// `home` of `pyvenv.cfg`: the bin folder of the base interpreter.
    pub home: Option<PathBuf>,
    /// The base installation's prefix: the parent of `home`, canonical when it exists.
    pub base_prefix: Option<PathBuf>,
    /// The base interpreter (`base-executable`/`executable` of `pyvenv.cfg`, else
    /// `home/pythonX.Y`).
    pub base_executable: Option<PathBuf>,
    /// Whether the base installation's site-packages is used (as `site.py` reads
    /// `include-system-site-packages`); `None` when not a virtual environment.
    pub include_system_site_packages: Option<bool>,
    /// Whether `bin/activate_this.py` exists (virtualenv and uv write it, venv does not).
    pub has_activate_this: bool,
    /// The environment's `lib/pythonX.Y/site-packages`, when it exists.
    pub site_packages: Option<PathBuf>,
    /// Everything wrong with it; no errors means usable.
    pub problems: Vec<Problem>,
    /// The configuration lines to use, present when the folder is usable.
    pub config: Option<ConfigLines>,
}

impl VenvReport {
    /// Whether the folder can be used as `python-home` (no [`Severity::Error`] problem).
    pub fn is_usable(&self) -> bool {
        !self.problems.iter().any(Problem::is_error)
    }

    /// The problems of severity [`Severity::Error`].
    pub fn errors(&self) -> impl Iterator<Item = &Problem> {
        self.problems.iter().filter(|p| p.is_error())
    }

    /// The problems of severity [`Severity::Warning`].
    pub fn warnings(&self) -> impl Iterator<Item = &Problem> {
        self.problems.iter().filter(|p| !p.is_error())
    }

    fn push(&mut self, kind: ProblemKind) {
        self.problems.push(Problem::new(kind));
    }
}

/// The configuration lines for `path`: made absolute against the current directory, with `..`
/// resolved, but the environment's own symbolic links kept (a `current -> v2` link stays
/// `current`). Paths with spaces or quotes are quoted as Apache's configuration parser expects.
pub fn config_lines(path: &Path) -> ConfigLines {
    let root = absolute_path(path);
    let text = root.display().to_string();
    let needs_quotes = text.chars().any(|c| c.is_whitespace() || c == '"');
    let (python_home, wsgi_python_home) = if needs_quotes {
        let escaped = text.replace('"', "\\\"");
        (
            format!("\"python-home={escaped}\""),
            format!("WSGIPythonHome \"{escaped}\""),
        )
    } else {
        (
            format!("python-home={text}"),
            format!("WSGIPythonHome {text}"),
        )
    };
    ConfigLines {
        root,
        python_home,
        wsgi_python_home,
    }
}

/// `path` made absolute without resolving its symbolic links, except where a `..` follows one
/// (there the kernel goes to the parent of the link's target, so that part is resolved).
fn absolute_path(path: &Path) -> PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out = PathBuf::new();
    for comp in abs.components() {
        match comp {
            Component::ParentDir => {
                if let Ok(real) = fs::canonicalize(&out) {
                    out = real;
                }
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// `path` canonicalized, or made absolute when it cannot be (it does not exist).
fn canonical(path: &Path) -> PathBuf {
    fs::canonicalize(path).unwrap_or_else(|_| absolute_path(path))
}

/// Inspects `path` as a `python-home` for the `embedded` Python: what it is, which Python made
/// it, and every problem that would stop (or should worry) the embedded interpreter.
pub fn inspect(path: &Path, embedded: &EmbeddedPython) -> VenvReport {
    let root = absolute_path(path);
    let mut report = VenvReport {
        path: path.to_path_buf(),
        absolute_path: root.clone(),
        kind: VenvKind::Unknown,
        version: None,
        creator_version: None,
        home: None,
        base_prefix: None,
        base_executable: None,
        include_system_site_packages: None,
        has_activate_this: false,
        site_packages: None,
        problems: Vec::new(),
        config: None,
    };
    match fs::metadata(&root) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            let link_target = fs::read_link(&root).ok();
            match executable_root(&root).filter(|_| link_target.is_some()) {
                // A dangling `bin/python` link is still the executable of an environment.
                Some(venv_root) => report.push(ProblemKind::ExecutableNotRoot {
                    path: root.clone(),
                    root: venv_root,
                }),
                None => report.push(ProblemKind::NotFound {
                    path: root.clone(),
                    link_target,
                    create_with: embedded.executable.clone(),
                }),
            }
        }
        Err(error) => report.push(ProblemKind::Inaccessible {
            path: root.clone(),
            error: error.to_string(),
        }),
        Ok(meta) if !meta.is_dir() => {
            if let Some(venv_root) = executable_root(&root) {
                report.push(ProblemKind::ExecutableNotRoot {
                    path: root.clone(),
                    root: venv_root,
                });
            } else if let Some(venv_root) = enclosing_environment(&root) {
                report.push(ProblemKind::InsideEnvironment {
                    path: root.clone(),
                    root: venv_root,
                });
            } else {
                report.push(ProblemKind::NotADirectory { path: root.clone() });
            }
        }
        Ok(_) => {
            let cfg_path = root.join("pyvenv.cfg");
            match fs::metadata(&cfg_path) {
                Ok(_) => inspect_venv(&mut report, &cfg_path, embedded),
                Err(error) if error.kind() == io::ErrorKind::NotFound => {
                    inspect_installation(&mut report, embedded)
                }
                Err(error) => report.push(ProblemKind::CfgUnreadable {
                    cfg: cfg_path,
                    error: error.to_string(),
                    root: root.clone(),
                    create_with: embedded.executable.clone(),
                }),
            }
        }
    }
    if report.is_usable() {
        report.config = Some(config_lines(&root));
    }
    report
}

/// For `<x>/bin/python*`, `<x>` (through `bin` when `bin` itself is a link, as `/bin -> usr/bin`).
fn executable_root(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    let bin = path.parent()?;
    if !name.starts_with("python") || bin.file_name()? != "bin" {
        return None;
    }
    let is_link = fs::symlink_metadata(bin).is_ok_and(|m| m.file_type().is_symlink());
    let bin = if is_link {
        fs::canonicalize(bin).unwrap_or_else(|_| bin.to_path_buf())
    } else {
        bin.to_path_buf()
    };
    bin.parent().map(Path::to_path_buf)
}

/// Whether a file name is `pythonX.Y` (or `pythonX`).
fn is_python_lib_name(name: &str) -> bool {
    name.strip_prefix("python").is_some_and(|v| {
        !v.is_empty()
            && v.split('.').count() <= 2
            && v.split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// The environment `path` lies inside: `<x>` for `<x>/lib/pythonX.Y[/site-packages]`, else the
/// nearest of its (up to four) ancestors holding a `pyvenv.cfg`.
fn enclosing_environment(path: &Path) -> Option<PathBuf> {
    let names: Vec<&str> = path
        .components()
        .rev()
        .take(3)
        .map(|c| c.as_os_str().to_str().unwrap_or(""))
        .collect();
    let is_lib = |n: &str| n == "lib" || n == "lib64";
    let pattern_root = match names.as_slice() {
        [py, lib, ..] if is_python_lib_name(py) && is_lib(lib) => path.parent()?.parent(),
        [site, py, lib] if is_site_dir(site) && is_python_lib_name(py) && is_lib(lib) => {
            path.parent()?.parent()?.parent()
        }
        _ => None,
    };
    if let Some(root) = pattern_root {
        return Some(root.to_path_buf());
    }
    path.ancestors()
        .skip(1)
        .take(4)
        .find(|a| a.join("pyvenv.cfg").is_file())
        .map(Path::to_path_buf)
}

fn is_site_dir(name: &str) -> bool {
    name == "site-packages" || name == "dist-packages"
}

/// The `lib/python*/site-packages` folders of `root`, sorted.
fn site_packages_dirs(root: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(root.join("lib"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| is_python_lib_name(&e.file_name().to_string_lossy()))
                .map(|e| e.path().join("site-packages"))
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// The canonical libpython when it is known and lies outside `prefix` (canonical).
fn libpython_outside(embedded: &EmbeddedPython, prefix: &Path) -> Option<PathBuf> {
    let lib = canonical(embedded.libpython.as_deref()?);
    (!lib.starts_with(prefix)).then_some(lib)
}

fn lib_python_dir(root: &Path, version: &PythonVersion) -> PathBuf {
    root.join("lib").join(format!("python{}", version.short()))
}

fn inspect_venv(report: &mut VenvReport, cfg_path: &Path, embedded: &EmbeddedPython) {
    let root = report.absolute_path.clone();
    let text = match fs::read_to_string(cfg_path) {
        Ok(text) => text,
        Err(error) => {
            report.push(ProblemKind::CfgUnreadable {
                cfg: cfg_path.to_path_buf(),
                error: error.to_string(),
                root,
                create_with: embedded.executable.clone(),
            });
            return;
        }
    };
    let cfg = PyvenvCfg::parse(&text);
    let (kind, creator_version) = cfg.creator();
    report.kind = kind;
    report.creator_version = creator_version.map(str::to_owned);
    let version = cfg.version();
    report.version = version.map(|(v, _)| v);
    report.include_system_site_packages = Some(cfg.include_system_site_packages());
    report.has_activate_this = root.join("bin").join("activate_this.py").is_file();
    report.home = cfg.home().map(Path::to_path_buf);
    report.base_prefix = report
        .home
        .as_deref()
        .and_then(|home| match fs::canonicalize(home) {
            Ok(real) => real.parent().map(Path::to_path_buf),
            Err(_) => absolute_path(home).parent().map(Path::to_path_buf),
        });
    report.base_executable = cfg.base_executable().map(Path::to_path_buf).or_else(|| {
        let (v, _) = version?;
        Some(report.home.as_ref()?.join(format!("python{}", v.short())))
    });

    let expected = lib_python_dir(&root, &embedded.version).join("site-packages");
    let all_sites = site_packages_dirs(&root);
    report.site_packages = version
        .map(|(v, _)| lib_python_dir(&root, &v).join("site-packages"))
        .filter(|p| p.is_dir())
        .or_else(|| all_sites.iter().find(|p| **p == expected).cloned())
        .or_else(|| all_sites.first().cloned());

    if report.home.is_none() {
        report.push(ProblemKind::CfgWithoutHome {
            cfg: cfg_path.to_path_buf(),
            root: root.clone(),
            create_with: embedded.executable.clone(),
        });
    }
    if let Some((venv_version, _)) = version {
        if !venv_version.same_minor(&embedded.version) {
            let venv_python = report.base_executable.clone();
            report.push(ProblemKind::VersionMismatch {
                root,
                venv_version,
                venv_python,
                embedded_version: embedded.version,
                embedded_executable: embedded.executable.clone(),
            });
            // Everything else follows from this; one clear message is better than four.
            return;
        }
    }
    if let Some(base_prefix) = report.base_prefix.clone() {
        let embedded_prefix = canonical(&embedded.prefix);
        if base_prefix != embedded_prefix {
            let venv_python = report.base_executable.clone();
            report.push(ProblemKind::OtherInstallation {
                root: root.clone(),
                venv_version: report.version,
                venv_prefix: base_prefix,
                venv_python,
                embedded_prefix,
                embedded_version: embedded.version,
                embedded_executable: embedded.executable.clone(),
            });
        } else if let Some(libpython) = libpython_outside(embedded, &base_prefix) {
            report.push(ProblemKind::LibpythonOutsidePrefix {
                path: root.clone(),
                prefix: base_prefix,
                libpython,
            });
        } else if let Some((venv_version, key)) = version {
            if venv_version.patch != embedded.version.patch {
                report.push(ProblemKind::PatchDifference {
                    root: root.clone(),
                    venv_version,
                    key: key.as_str(),
                    embedded_version: embedded.version,
                    embedded_prefix,
                });
            }
        }
    }
    if !expected.is_dir() {
        report.push(ProblemKind::SitePackagesMissing {
            root,
            found: all_sites.into_iter().filter(|p| *p != expected).collect(),
            expected,
            create_with: embedded.executable.clone(),
        });
    }
}

/// The version in `<prefix>/include/pythonX.Y/patchlevel.h` (`#define PY_VERSION "3.11.2"`).
fn patchlevel_version(prefix: &Path, short: &str) -> Option<PythonVersion> {
    let header = prefix
        .join("include")
        .join(format!("python{short}"))
        .join("patchlevel.h");
    let text = fs::read_to_string(header).ok()?;
    text.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("#define")?.trim_start();
        let value = rest.strip_prefix("PY_VERSION")?.trim();
        PythonVersion::parse(value.trim_matches('"'))
    })
}

/// A folder without `pyvenv.cfg`: an installation prefix, something inside an environment, or
/// nothing Python.
fn inspect_installation(report: &mut VenvReport, embedded: &EmbeddedPython) {
    let root = report.absolute_path.clone();
    let marker = lib_python_dir(&root, &embedded.version).join("os.py");
    let short = if marker.is_file() {
        Some(embedded.version.short())
    } else {
        // Another version's installation: `lib/pythonX.Y/os.py` for some X.Y.
        let mut names: Vec<String> = fs::read_dir(root.join("lib"))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| is_python_lib_name(n) && n.contains('.'))
                    .filter(|n| root.join("lib").join(n).join("os.py").is_file())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
            .pop()
            .map(|n| n.trim_start_matches("python").to_owned())
    };
    let Some(short) = short else {
        match enclosing_environment(&root) {
            Some(env_root) => report.push(ProblemKind::InsideEnvironment {
                path: root,
                root: env_root,
            }),
            None => report.push(ProblemKind::NotAnEnvironment {
                path: root,
                stdlib_marker: marker,
                create_with: embedded.executable.clone(),
            }),
        }
        return;
    };
    let Some(xy) = PythonVersion::parse(&short) else {
        return;
    };
    let version = patchlevel_version(&root, &short)
        .filter(|v| v.same_minor(&xy))
        .unwrap_or(xy);
    report.kind = VenvKind::Installation;
    report.version = Some(version);
    report.has_activate_this = root.join("bin").join("activate_this.py").is_file();
    report.site_packages =
        Some(lib_python_dir(&root, &version).join("site-packages")).filter(|p| p.is_dir());
    let prefix = canonical(&root);
    let embedded_prefix = canonical(&embedded.prefix);
    if !version.same_minor(&embedded.version) || prefix != embedded_prefix {
        report.push(ProblemKind::ForeignInstallation {
            path: root,
            version,
            embedded_prefix,
            embedded_version: embedded.version,
            embedded_executable: embedded.executable.clone(),
        });
    } else if let Some(libpython) = libpython_outside(embedded, &prefix) {
        report.push(ProblemKind::LibpythonOutsidePrefix {
            path: root,
            prefix,
            libpython,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_parsing() {
        let v = |s| PythonVersion::parse(s);
        assert_eq!(v("3.11.2"), Some(PythonVersion::new(3, 11, 2)));
        assert_eq!(v("Python 3.11.2\n"), Some(PythonVersion::new(3, 11, 2)));
        assert_eq!(v("3.11.2.final.0"), Some(PythonVersion::new(3, 11, 2)));
        assert_eq!(
            v("3.11.7 (main, Jan  1 2024, 00:00:00) [GCC 12.2.0]"),
            Some(PythonVersion::new(3, 11, 7))
        );
        assert_eq!(v("3.13.0rc1"), Some(PythonVersion::new(3, 13, 0)));
        let short = v("3.12").expect("3.12 parses");
        assert_eq!((short.major, short.minor, short.patch), (3, 12, None));
        assert_eq!(short.to_string(), "3.12");
        assert_eq!(v("3.13t").map(|v| (v.minor, v.patch)), Some((13, None)));
        assert_eq!(v("three"), None);
        assert_eq!(v("3"), None);
        assert_eq!(v("3.x"), None);
        assert_eq!(v(""), None);
    }

    #[test]
    fn python_lib_names() {
        assert!(is_python_lib_name("python3.11"));
        assert!(is_python_lib_name("python3"));
        assert!(!is_python_lib_name("python"));
        assert!(!is_python_lib_name("python3.11t"));
        assert!(!is_python_lib_name("python3..1"));
        assert!(!is_python_lib_name("pythonista"));
    }

    #[test]
    fn absolute_path_keeps_links_but_resolves_dotdot() {
        assert_eq!(absolute_path(Path::new("/a/./b/")), PathBuf::from("/a/b"));
        // A missing path's `..` is removed lexically.
        assert_eq!(
            absolute_path(Path::new("/nonexistent-wsgi-rs/x/../y")),
            PathBuf::from("/nonexistent-wsgi-rs/y")
        );
        let cwd = std::env::current_dir().expect("cwd");
        assert_eq!(absolute_path(Path::new("v")), cwd.join("v"));
    }

    #[test]
    fn config_lines_quote_spaces_and_quotes() {
        let lines = config_lines(Path::new("/srv/my venv"));
        assert_eq!(lines.python_home, "\"python-home=/srv/my venv\"");
        assert_eq!(lines.wsgi_python_home, "WSGIPythonHome \"/srv/my venv\"");
        let lines = config_lines(Path::new("/srv/a\"b"));
        assert_eq!(lines.wsgi_python_home, "WSGIPythonHome \"/srv/a\\\"b\"");
        let lines = config_lines(Path::new("/usr/local/venvs/example"));
        assert_eq!(lines.python_home, "python-home=/usr/local/venvs/example");
        assert_eq!(
            lines.wsgi_python_home,
            "WSGIPythonHome /usr/local/venvs/example"
        );
    }
}
