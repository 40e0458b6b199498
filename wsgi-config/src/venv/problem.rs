//! What can be wrong with a `python-home` value, each with a message that says what is wrong and
//! how to fix it.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

use super::PythonVersion;

/// How bad a [`Problem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The environment must not be used; the server refuses to start with it.
    Error,
    /// The environment is used, but something deserves attention.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// The permission a user lacks on a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Search (`x`) permission on a directory, needed to go through it.
    Search,
    /// Read (`r`) permission, needed to list a directory or read a file.
    Read,
}

/// How to lift an [`ProblemKind::AccessDenied`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessFix {
    /// The blocking folder is a home directory: move the environment out of it.
    MoveOutOfHome {
        /// The home directory that blocks.
        home: PathBuf,
        /// Where to move the environment instead.
        suggestion: PathBuf,
    },
    /// Change the permission bits with this command.
    Chmod {
        /// The full `chmod` command line.
        command: String,
    },
}

impl fmt::Display for AccessFix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccessFix::MoveOutOfHome { home, suggestion } => write!(
                f,
                "move it outside {} (e.g. {}) rather than relaxing the home directory's permissions",
                home.display(),
                suggestion.display()
            ),
            AccessFix::Chmod { command } => write!(f, "allow it with `{command}`"),
        }
    }
}

/// What is wrong, with the paths and versions involved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProblemKind {
    /// The path does not exist (or is a symbolic link to nothing).
    NotFound {
        /// The path, made absolute.
        path: PathBuf,
        /// The target when `path` is a dangling symbolic link.
        link_target: Option<PathBuf>,
        /// The embedded Python, to create the environment with.
        create_with: PathBuf,
    },
    /// The path could not be examined (`stat` failed other than "not found").
    Inaccessible {
        /// The path, made absolute.
        path: PathBuf,
        /// The operating system's error.
        error: String,
    },
    /// The path is `<root>/bin/python*`: the executable, not the environment.
    ExecutableNotRoot {
        /// The path, made absolute.
        path: PathBuf,
        /// The environment root to use instead.
        root: PathBuf,
    },
    /// The path is inside an environment or installation (`lib/pythonX.Y`, its `site-packages`,
    /// `bin`, `pyvenv.cfg`...), not its root.
    InsideEnvironment {
        /// The path, made absolute.
        path: PathBuf,
        /// The environment root to use instead.
        root: PathBuf,
    },
    /// The path is a file (or other non-directory) that is not part of an environment.
    NotADirectory {
        /// The path, made absolute.
        path: PathBuf,
    },
    /// A directory with neither `pyvenv.cfg` nor `lib/pythonX.Y/os.py`.
    NotAnEnvironment {
        /// The path, made absolute.
        path: PathBuf,
        /// The `lib/pythonX.Y/os.py` an installation for the embedded version would have.
        stdlib_marker: PathBuf,
        /// The embedded Python, to create an environment with.
        create_with: PathBuf,
    },
    /// `pyvenv.cfg` exists but cannot be read.
    CfgUnreadable {
        /// The `pyvenv.cfg` path.
        cfg: PathBuf,
        /// The operating system's error.
        error: String,
        /// The environment root.
        root: PathBuf,
        /// The embedded Python, to recreate the environment with.
        create_with: PathBuf,
    },
    /// `pyvenv.cfg` has no `home` line, so the Python it belongs to is unknown.
    CfgWithoutHome {
        /// The `pyvenv.cfg` path.
        cfg: PathBuf,
        /// The environment root.
        root: PathBuf,
        /// The embedded Python, to recreate the environment with.
        create_with: PathBuf,
    },
    /// The environment was created by another Python X.Y than the embedded one.
    VersionMismatch {
        /// The environment root.
        root: PathBuf,
        /// The version recorded in `pyvenv.cfg`.
        venv_version: PythonVersion,
        /// The interpreter that created the environment, when `pyvenv.cfg` tells.
        venv_python: Option<PathBuf>,
        /// The embedded Python's version.
        embedded_version: PythonVersion,
        /// The embedded Python's executable.
        embedded_executable: PathBuf,
    },
    /// The environment was created by another installation of the embedded X.Y.
    OtherInstallation {
        /// The environment root.
        root: PathBuf,
        /// The version recorded in `pyvenv.cfg`, if any.
        venv_version: Option<PythonVersion>,
        /// The installation that created the environment (parent of `home`, canonical).
        venv_prefix: PathBuf,
        /// The interpreter that created the environment, when known.
        venv_python: Option<PathBuf>,
        /// The embedded installation's prefix (canonical).
        embedded_prefix: PathBuf,
        /// The embedded Python's version.
        embedded_version: PythonVersion,
        /// The embedded Python's executable.
        embedded_executable: PathBuf,
    },
    /// Same installation and X.Y, another patch level (an in-place upgrade): a warning.
    PatchDifference {
        /// The environment root.
        root: PathBuf,
        /// The version recorded in `pyvenv.cfg`.
        venv_version: PythonVersion,
        /// The `pyvenv.cfg` key the version was read from.
        key: &'static str,
        /// The embedded Python's version.
        embedded_version: PythonVersion,
        /// The embedded installation's prefix.
        embedded_prefix: PathBuf,
    },
    /// `lib/pythonX.Y/site-packages` for the embedded X.Y is missing from the environment.
    SitePackagesMissing {
        /// The environment root.
        root: PathBuf,
        /// The folder the embedded Python would use.
        expected: PathBuf,
        /// The site-packages folders the environment has instead.
        found: Vec<PathBuf>,
        /// The embedded Python's executable.
        create_with: PathBuf,
    },
    /// A plain installation prefix that is not the embedded installation.
    ForeignInstallation {
        /// The path, made absolute.
        path: PathBuf,
        /// The installation's version (X.Y from `lib/pythonX.Y`, patch from `patchlevel.h`).
        version: PythonVersion,
        /// The embedded installation's prefix.
        embedded_prefix: PathBuf,
        /// The embedded Python's version.
        embedded_version: PythonVersion,
        /// The embedded Python's executable.
        embedded_executable: PathBuf,
    },
    /// The loaded libpython is not part of the installation the path uses.
    LibpythonOutsidePrefix {
        /// The path, made absolute.
        path: PathBuf,
        /// The installation prefix the path uses (canonical).
        prefix: PathBuf,
        /// The libpython the server loaded (canonical).
        libpython: PathBuf,
    },
    /// A user cannot reach or read part of the environment.
    AccessDenied {
        /// The first path component that blocks.
        path: PathBuf,
        /// The user's name.
        user: String,
        /// The permission the user lacks.
        denied: Access,
        /// The component's permission bits.
        mode: u32,
        /// The component's owner (name, or uid when it has none).
        owner: String,
        /// The component's group (name, or gid when it has none).
        group: String,
        /// How to lift the block.
        fix: AccessFix,
    },
    /// Whether a user can read a path could not be determined.
    CannotCheckAccess {
        /// The path component that could not be examined.
        path: PathBuf,
        /// The user's name.
        user: String,
        /// The operating system's error.
        error: String,
    },
}

/// The part of every message that explains what `python-home` must be.
const ROOT_HINT: &str = "the folder holding bin/ and lib/, which \
    `python -c 'import sys; print(sys.prefix)'` prints inside the activated environment";

fn d(p: &Path) -> std::path::Display<'_> {
    p.display()
}

impl ProblemKind {
    /// The severity of this kind: everything is an error except a patch-level difference.
    pub fn severity(&self) -> Severity {
        match self {
            ProblemKind::PatchDifference { .. } => Severity::Warning,
            _ => Severity::Error,
        }
    }

    /// A stable snake_case name for the kind, for `--format json`.
    pub fn code(&self) -> &'static str {
        match self {
            ProblemKind::NotFound { .. } => "not_found",
            ProblemKind::Inaccessible { .. } => "inaccessible",
            ProblemKind::ExecutableNotRoot { .. } => "executable_not_root",
            ProblemKind::InsideEnvironment { .. } => "inside_environment",
            ProblemKind::NotADirectory { .. } => "not_a_directory",
            ProblemKind::NotAnEnvironment { .. } => "not_an_environment",
            ProblemKind::CfgUnreadable { .. } => "cfg_unreadable",
            ProblemKind::CfgWithoutHome { .. } => "cfg_without_home",
            ProblemKind::VersionMismatch { .. } => "version_mismatch",
            ProblemKind::OtherInstallation { .. } => "other_installation",
            ProblemKind::PatchDifference { .. } => "patch_difference",
            ProblemKind::SitePackagesMissing { .. } => "site_packages_missing",
            ProblemKind::ForeignInstallation { .. } => "foreign_installation",
            ProblemKind::LibpythonOutsidePrefix { .. } => "libpython_outside_prefix",
            ProblemKind::AccessDenied { .. } => "access_denied",
            ProblemKind::CannotCheckAccess { .. } => "cannot_check_access",
        }
    }
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProblemKind::NotFound {
                path,
                link_target,
                create_with,
            } => {
                match link_target {
                    Some(target) => write!(
                        f,
                        "{} is a symbolic link to {}, which does not exist",
                        d(path),
                        d(target)
                    )?,
                    None => write!(f, "{} does not exist", d(path))?,
                }
                write!(
                    f,
                    ": python-home must be the root folder of an existing virtual environment \
                     ({ROOT_HINT}); correct the path, or create the environment with \
                     `{} -m venv {}`",
                    d(create_with),
                    d(path)
                )
            }
            ProblemKind::Inaccessible { path, error } => write!(
                f,
                "{} cannot be examined ({error}): python-home must be the root folder of a \
                 virtual environment ({ROOT_HINT}); correct the path",
                d(path)
            ),
            ProblemKind::ExecutableNotRoot { path, root } => write!(
                f,
                "{} is a Python executable, not a virtual environment: python-home must be the \
                 virtual environment's root ({ROOT_HINT}), not its python executable; use {}",
                d(path),
                d(root)
            ),
            ProblemKind::InsideEnvironment { path, root } => write!(
                f,
                "{} is inside {}, not the root of the environment: python-home must be the \
                 virtual environment's root ({ROOT_HINT}); use {}",
                d(path),
                d(root),
                d(root)
            ),
            ProblemKind::NotADirectory { path } => write!(
                f,
                "{} is not a directory: python-home must be the root folder of a virtual \
                 environment ({ROOT_HINT}); correct the path",
                d(path)
            ),
            ProblemKind::NotAnEnvironment {
                path,
                stdlib_marker,
                create_with,
            } => write!(
                f,
                "{} is neither a virtual environment (it has no pyvenv.cfg) nor a Python \
                 installation (it has no {}): python-home must be the root folder of a virtual \
                 environment ({ROOT_HINT}); correct the path, or create an environment there \
                 with `{} -m venv {}`",
                d(path),
                d(stdlib_marker),
                d(create_with),
                d(path)
            ),
            ProblemKind::CfgUnreadable {
                cfg,
                error,
                root,
                create_with,
            } => write!(
                f,
                "{} cannot be read ({error}), so the Python that created {} is unknown: make it \
                 a readable file, or recreate the environment with `{} -m venv --clear {}` and \
                 reinstall its packages",
                d(cfg),
                d(root),
                d(create_with),
                d(root)
            ),
            ProblemKind::CfgWithoutHome {
                cfg,
                root,
                create_with,
            } => write!(
                f,
                "{} has no `home = ...` line (python -m venv, virtualenv and uv all write one, \
                 naming the bin folder of the Python that created the environment), so the \
                 Python that created {} is unknown: recreate the environment with \
                 `{} -m venv --clear {}` and reinstall its packages",
                d(cfg),
                d(root),
                d(create_with),
                d(root)
            ),
            ProblemKind::VersionMismatch {
                root,
                venv_version,
                venv_python,
                embedded_version,
                embedded_executable,
            } => {
                write!(f, "{} was created by Python {venv_version}", d(root))?;
                if let Some(python) = venv_python {
                    write!(f, " ({})", d(python))?;
                }
                write!(
                    f,
                    " but this wsgi-rs embeds Python {embedded_version} ({}): the Python library \
                     is fixed when wsgi-rs is built (it embeds Python, it does not run a python \
                     program), so a virtual environment cannot switch it to another Python \
                     version; recreate the environment with `{} -m venv --clear {}` and \
                     reinstall its packages, or rebuild wsgi-rs against Python {} with ",
                    d(embedded_executable),
                    d(embedded_executable),
                    d(root),
                    venv_version.short(),
                )?;
                match venv_python {
                    Some(python) => write!(f, "PYO3_PYTHON={}", d(python)),
                    None => write!(f, "PYO3_PYTHON=<its python{}>", venv_version.short()),
                }
            }
            ProblemKind::OtherInstallation {
                root,
                venv_version,
                venv_prefix,
                venv_python,
                embedded_prefix,
                embedded_version,
                embedded_executable,
            } => {
                write!(f, "{} was created by the Python ", d(root))?;
                if let Some(v) = venv_version {
                    write!(f, "{v} ")?;
                }
                write!(
                    f,
                    "installation in {} but this wsgi-rs embeds the one in {} (Python \
                     {embedded_version}, {}): two installations of the same Python version may \
                     have been compiled with different options and their ABIs can differ in \
                     subtle ways, so mixing them is not safe; recreate the environment with \
                     `{} -m venv --clear {}` and reinstall its packages, or rebuild wsgi-rs \
                     against that installation with ",
                    d(venv_prefix),
                    d(embedded_prefix),
                    d(embedded_executable),
                    d(embedded_executable),
                    d(root),
                )?;
                match venv_python {
                    Some(python) => write!(f, "PYO3_PYTHON={}", d(python)),
                    None => write!(f, "PYO3_PYTHON=<its python executable>"),
                }
            }
            ProblemKind::PatchDifference {
                root,
                venv_version,
                key,
                embedded_version,
                embedded_prefix,
            } => write!(
                f,
                "{} records Python {venv_version} but this wsgi-rs embeds {embedded_version} of \
                 the same installation ({}): a patch-level upgrade in place keeps the \
                 environment compatible, so it is used; set `{key} = {embedded_version}` in {} \
                 to silence this warning",
                d(root),
                d(embedded_prefix),
                d(&root.join("pyvenv.cfg")),
            ),
            ProblemKind::SitePackagesMissing {
                root,
                expected,
                found,
                create_with,
            } => {
                write!(
                    f,
                    "{} does not exist, so the embedded Python would find none of the packages \
                     of {}",
                    d(expected),
                    d(root)
                )?;
                if !found.is_empty() {
                    let list: Vec<String> = found.iter().map(|p| p.display().to_string()).collect();
                    write!(
                        f,
                        " (it has {} instead, for another Python version)",
                        list.join(", ")
                    )?;
                }
                write!(
                    f,
                    ": recreate the environment with `{} -m venv --clear {}` and reinstall its \
                     packages",
                    d(create_with),
                    d(root)
                )
            }
            ProblemKind::ForeignInstallation {
                path,
                version,
                embedded_prefix,
                embedded_version,
                embedded_executable,
            } => write!(
                f,
                "{} is a Python {version} installation, but not the one this wsgi-rs embeds \
                 ({}, Python {embedded_version}): the Python library is fixed when wsgi-rs is \
                 built and the standard library must come from that same installation; point \
                 python-home at a virtual environment created with `{} -m venv DIR`, or rebuild \
                 wsgi-rs against this installation with PYO3_PYTHON={}",
                d(path),
                d(embedded_prefix),
                d(embedded_executable),
                d(&path.join("bin").join(format!("python{}", version.short()))),
            ),
            ProblemKind::LibpythonOutsidePrefix {
                path,
                prefix,
                libpython,
            } => write!(
                f,
                "this wsgi-rs loaded {}, which is not part of the installation in {} that {} \
                 uses: the Python library and its standard library would come from different \
                 installations; make wsgi-rs load the libpython of {} (link it with an rpath to \
                 {}, e.g. pyo3_build_config::add_libpython_rpath_link_args() in build.rs), or \
                 use an environment created by the installation that holds {}",
                d(libpython),
                d(prefix),
                d(path),
                d(prefix),
                d(&prefix.join("lib")),
                d(libpython),
            ),
            ProblemKind::AccessDenied {
                path,
                user,
                denied,
                mode,
                owner,
                group,
                fix,
            } => write!(
                f,
                "{} is not {} by user {user} (mode {:04o}, owner {owner}, group {group}): the \
                 user Apache runs your code as must be able to read the virtual environment; \
                 {fix}",
                d(path),
                match denied {
                    Access::Search => "searchable",
                    Access::Read => "readable",
                },
                mode & 0o7777,
            ),
            ProblemKind::CannotCheckAccess { path, user, error } => write!(
                f,
                "cannot check whether user {user} can read {} ({error}): correct the path",
                d(path)
            ),
        }
    }
}

/// One thing wrong with a virtual environment: its severity and what it is. `Display` gives the
/// full message (what is wrong and how to fix it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct Problem {
    /// Error (refuse) or warning (use, but tell).
    pub severity: Severity,
    /// What is wrong.
    pub kind: ProblemKind,
}

impl Problem {
    /// A problem of this kind with the kind's severity.
    pub fn new(kind: ProblemKind) -> Self {
        Problem {
            severity: kind.severity(),
            kind,
        }
    }

    /// Whether this problem must stop the environment from being used.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl From<ProblemKind> for Problem {
    fn from(kind: ProblemKind) -> Self {
        Problem::new(kind)
    }
}

/// Serialized as `{"severity": "error", "kind": "version_mismatch", "message": "..."}`.
impl Serialize for Problem {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Problem", 3)?;
        s.serialize_field("severity", &self.severity)?;
        s.serialize_field("kind", self.kind.code())?;
        s.serialize_field("message", &self.kind.to_string())?;
        s.end()
    }
}
