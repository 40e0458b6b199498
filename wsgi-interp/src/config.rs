//! Start-up configuration of the embedded CPython and the checks made before starting it.

use std::path::{Path, PathBuf};

/// What the process-wide CPython is started with (`WSGIPythonHome` / `python-home`,
/// `WSGIPythonPath` / `python-path`, `WSGIPythonOptimize`).
///
/// This is deliberately small and independent of `wsgi-config`: the daemon turns its
/// resolved configuration into one of these.
#[derive(Debug, Clone, Default)]
pub struct StartConfig {
    /// The Python home: a venv root (the directory holding `pyvenv.cfg`) or an installation
    /// prefix. `None` runs the Python this crate was built against.
    pub python_home: Option<PathBuf>,
    /// Folders put at the front of `sys.path` in every interpreter, with `site.addsitedir`
    /// semantics (`.pth` files are processed), as mod_wsgi does.
    pub python_path: Vec<PathBuf>,
    /// `sys.flags.optimize`: 0, 1 (`-O`) or 2 (`-OO`).
    pub optimize: u8,
    /// Do not write `.pyc` files (`PYTHONDONTWRITEBYTECODE`; the server environment's
    /// `PYTHON*` variables are ignored, so this is the way to ask for it).
    pub dont_write_bytecode: bool,
    /// The process group name, shown in `mod_wsgi.process_group` and in log lines.
    pub process_group: String,
}

/// Why CPython could not be started. Nothing was started when this is returned, except for
/// [`StartError::Init`], after which this process cannot start CPython again.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A runtime already exists in this process.
    #[error(
        "CPython was already started in this process; start one `Runtime` per process and share it"
    )]
    AlreadyStarted,
    /// The python-home does not exist.
    #[error("python-home `{}` does not exist: give the venv root (what `sys.prefix` prints in the venv)", .0.display())]
    HomeMissing(PathBuf),
    /// The python-home is a file, typically `<venv>/bin/python`.
    #[error("python-home `{}` is a file, not a directory: python-home must be the venv root, the directory holding `pyvenv.cfg`{}", .path.display(), .suggestion.as_ref().map(|s| format!("; did you mean `{}`?", s.display())).unwrap_or_default())]
    HomeNotDirectory {
        /// The configured path.
        path: PathBuf,
        /// `<x>` when the path looks like `<x>/bin/<file>`.
        suggestion: Option<PathBuf>,
    },
    /// The venv was made by another Python X.Y.
    #[error("venv `{}` was created by Python {venv_version} but this server embeds Python {runtime_version}: recreate the venv with the Python this server was built against", .home.display())]
    VersionMismatch {
        /// The venv root.
        home: PathBuf,
        /// X.Y from `pyvenv.cfg`.
        venv_version: String,
        /// X.Y of the loaded libpython.
        runtime_version: String,
    },
    /// The venv or installation has no `lib/pythonX.Y` for the embedded version.
    #[error("python-home `{}` has no `{}`: it is not a venv or installation of Python {version}", .home.display(), .missing.display())]
    NotForThisPython {
        /// The configured home.
        home: PathBuf,
        /// The path that should exist.
        missing: PathBuf,
        /// X.Y of the loaded libpython.
        version: String,
    },
    /// A path holds a NUL byte and cannot be given to CPython.
    #[error("path `{}` contains a NUL byte", .0.display())]
    NulInPath(PathBuf),
    /// `Py_InitializeFromConfig` failed.
    #[error("CPython failed to start in {func}: {message}; check python-home")]
    Init {
        /// The CPython function that failed.
        func: String,
        /// CPython's message.
        message: String,
    },
    /// Setting up the main interpreter after start-up failed (python-path, bootstrap).
    #[error("setting up the main interpreter failed: {0}")]
    Setup(crate::PyErrorInfo),
    /// The OS refused to start the Python main thread.
    #[error("cannot start the Python main thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// The `program_name` / `home` pair given to `PyConfig`, decided from the python-home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HomeChoice {
    /// Always set: a venv's `bin/python`, or the build Python's executable.
    pub program_name: PathBuf,
    /// Set only for a non-venv installation prefix.
    pub home: Option<PathBuf>,
}

/// The build-time Python's executable, used as `program_name` when no home is configured so
/// CPython never looks `python3` up on `$PATH`.
pub(crate) const BUILD_PYTHON_EXECUTABLE: &str = env!("WSGI_BUILD_PYTHON_EXECUTABLE");

/// Checks the python-home against the running libpython's `major.minor` and decides what to
/// put in `PyConfig` (interp.md 1.2 and 6.2: a venv root goes into `program_name`, never `home`).
pub(crate) fn choose_home(
    home: Option<&Path>,
    runtime_version: (u8, u8),
) -> Result<HomeChoice, StartError> {
    let xy = format!("{}.{}", runtime_version.0, runtime_version.1);
    let Some(home) = home else {
        return Ok(HomeChoice {
            program_name: PathBuf::from(BUILD_PYTHON_EXECUTABLE),
            home: None,
        });
    };
    let meta = std::fs::metadata(home).map_err(|_| StartError::HomeMissing(home.to_path_buf()))?;
    if !meta.is_dir() {
        let suggestion = home
            .parent()
            .filter(|p| p.file_name().is_some_and(|n| n == "bin"))
            .and_then(Path::parent)
            .map(Path::to_path_buf);
        return Err(StartError::HomeNotDirectory {
            path: home.to_path_buf(),
            suggestion,
        });
    }
    let lib = home.join("lib").join(format!("python{xy}"));
    let cfg_path = home.join("pyvenv.cfg");
    if let Ok(text) = std::fs::read_to_string(&cfg_path) {
        if let Some(v) = pyvenv_version(&text) {
            let venv_xy: Vec<&str> = v.split('.').take(2).collect();
            if venv_xy.join(".") != xy {
                return Err(StartError::VersionMismatch {
                    home: home.to_path_buf(),
                    venv_version: v,
                    runtime_version: xy,
                });
            }
        }
        let site = lib.join("site-packages");
        if !site.is_dir() {
            return Err(StartError::NotForThisPython {
                home: home.to_path_buf(),
                missing: site,
                version: xy,
            });
        }
        return Ok(HomeChoice {
            program_name: home.join("bin").join("python"),
            home: None,
        });
    }
    let os_py = lib.join("os.py");
    if !os_py.is_file() {
        return Err(StartError::NotForThisPython {
            home: home.to_path_buf(),
            missing: os_py,
            version: xy,
        });
    }
    Ok(HomeChoice {
        program_name: PathBuf::from(BUILD_PYTHON_EXECUTABLE),
        home: Some(home.to_path_buf()),
    })
}

/// The Python version recorded in a `pyvenv.cfg` (`version`, or `version_info` for uv).
fn pyvenv_version(text: &str) -> Option<String> {
    let mut info = None;
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match key.trim() {
            "version" => return Some(value.trim().to_string()),
            "version_info" => info = Some(value.trim().to_string()),
            _ => {}
        }
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pyvenv_version_prefers_version_and_accepts_uv() {
        assert_eq!(
            pyvenv_version("home = /usr/bin\nversion = 3.11.2\n").as_deref(),
            Some("3.11.2")
        );
        assert_eq!(
            pyvenv_version("home = /usr/bin\nversion_info = 3.12.1\n").as_deref(),
            Some("3.12.1")
        );
        assert_eq!(pyvenv_version("home = /usr/bin\n"), None);
    }

    #[test]
    fn home_errors_name_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        assert!(matches!(
            choose_home(Some(&missing), (3, 11)),
            Err(StartError::HomeMissing(_))
        ));
        std::fs::create_dir_all(dir.path().join("venv/bin")).unwrap();
        std::fs::write(dir.path().join("venv/bin/python"), "").unwrap();
        let err = choose_home(Some(&dir.path().join("venv/bin/python")), (3, 11)).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("did you mean"), "{msg}");
        assert!(
            msg.contains(&dir.path().join("venv").display().to_string()),
            "{msg}"
        );
        std::fs::write(
            dir.path().join("venv/pyvenv.cfg"),
            "home = /x/bin\nversion_info = 3.12.1\n",
        )
        .unwrap();
        let err = choose_home(Some(&dir.path().join("venv")), (3, 11)).unwrap_err();
        assert!(
            err.to_string()
                .contains("created by Python 3.12.1 but this server embeds Python 3.11"),
            "{err}"
        );
        std::fs::write(
            dir.path().join("venv/pyvenv.cfg"),
            "home = /x/bin\nversion = 3.11.9\n",
        )
        .unwrap();
        assert!(matches!(
            choose_home(Some(&dir.path().join("venv")), (3, 11)),
            Err(StartError::NotForThisPython { .. })
        ));
        std::fs::create_dir_all(dir.path().join("venv/lib/python3.11/site-packages")).unwrap();
        let choice = choose_home(Some(&dir.path().join("venv")), (3, 11)).unwrap();
        assert_eq!(choice.program_name, dir.path().join("venv/bin/python"));
        assert_eq!(choice.home, None);
    }

    #[test]
    fn no_home_always_sets_program_name() {
        let choice = choose_home(None, (3, 11)).unwrap();
        assert_eq!(choice.program_name, PathBuf::from(BUILD_PYTHON_EXECUTABLE));
        assert!(choice.home.is_none());
    }
}
