//! Start-up configuration of the embedded CPython and the checks made before starting it.

use std::path::{Path, PathBuf};

use wsgi_config::venv::{self, VenvKind};

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
    /// The process group name, shown in `mod_wsgi.process_group` and in log lines (`""` in
    /// embedded mode).
    pub process_group: String,
    /// `mod_wsgi.maximum_processes`: how many processes serve this process's applications
    /// (a daemon group's `processes=`, the front's or Apache MPM's process count in embedded
    /// mode). 0 is taken as 1, as mod_wsgi takes a count it cannot know.
    pub maximum_processes: u32,
    /// `mod_wsgi.threads_per_process`: the request threads of this process (a daemon
    /// group's `threads=`, `--threads`, the MPM's threads per child). 0 is taken as 1.
    pub threads_per_process: u32,
    /// What `<WSGIInterpreterOptions>` sections and the top-level directives give each
    /// interpreter of this process (`process_group`): `sys.path` layers, own GIL, restricted
    /// `sys.stdin`/`sys.stdout` (`PythonSettings::interpreter_rules`).
    pub interpreter_rules: wsgi_config::InterpreterRules,
}

/// Process-wide choices about the sub-interpreters, given to [`crate::Runtime::start_with`].
///
/// Kept apart from [`StartConfig`] so that callers building a `StartConfig` literal do not
/// change when an option is added here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InterpreterOptions {
    /// `WSGIPerInterpreterGIL On` (mod_wsgi 6.0): every sub-interpreter gets its own GIL
    /// (`Py_NewInterpreterFromConfig` with `_PyInterpreterConfig_INIT`), so application groups
    /// run Python in parallel. Needs Python 3.12 or newer. Such interpreters are isolated:
    /// no fork, exec or daemon threads, and extension modules that do not declare support
    /// (numpy, Cython and PyO3 modules, `_ctypes` and `_decimal` on 3.12) refuse to import,
    /// with an error that names the module. The main interpreter (`%{GLOBAL}`) is unchanged.
    pub per_interpreter_gil: bool,
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
    /// The python-home cannot be used with the embedded Python (missing, not a venv root, made
    /// by another Python or installation, ...); the same inspection as `wsgi venv`.
    #[error("python-home `{}` cannot be used: {problems}", .home.display())]
    UnusableHome {
        /// The python-home as configured.
        home: PathBuf,
        /// What is wrong with it and how to fix it, one problem per line.
        problems: String,
    },
    /// A configured path holds a NUL byte, which CPython cannot take.
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
    /// `WSGIPerInterpreterGIL On` was asked of a build embedding Python older than 3.12.
    #[error(
        "WSGIPerInterpreterGIL On needs Python 3.12 or newer, but this build embeds Python {version}; rebuild wsgi-rs against a newer Python (PYO3_PYTHON=/path/to/python3.12 cargo build), or set WSGIPerInterpreterGIL Off"
    )]
    PerInterpreterGilUnsupported {
        /// The embedded Python's version, `X.Y.Z`.
        version: String,
    },
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

/// How CPython is told about `home`: mod_wsgi's rule (a venv root becomes the program name
/// `<home>/bin/python`; an installation prefix becomes `PyConfig.home`), after the same
/// inspection `wsgi venv` prints, so a venv made by another Python is refused before start.
pub(crate) fn choose_home(home: Option<&Path>) -> Result<HomeChoice, StartError> {
    let Some(home) = home else {
        return Ok(HomeChoice {
            program_name: PathBuf::from(BUILD_PYTHON_EXECUTABLE),
            home: None,
        });
    };
    let report = venv::inspect(home, &crate::embedded::embedded_python());
    if !report.is_usable() {
        return Err(StartError::UnusableHome {
            home: home.to_path_buf(),
            problems: report
                .errors()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
        });
    }
    Ok(match report.kind {
        VenvKind::Installation => HomeChoice {
            program_name: PathBuf::from(BUILD_PYTHON_EXECUTABLE),
            home: Some(home.to_path_buf()),
        },
        _ => HomeChoice {
            program_name: home.join("bin").join("python"),
            home: None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn homes_are_inspected_before_start() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = choose_home(Some(&missing)).unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");

        let venv = dir.path().join("venv");
        let status = std::process::Command::new(BUILD_PYTHON_EXECUTABLE)
            .args(["-m", "venv", "--without-pip"])
            .arg(&venv)
            .status()
            .unwrap();
        assert!(status.success());
        let err = choose_home(Some(&venv.join("bin/python")))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!(
                "not its python executable; use {}",
                venv.display()
            )),
            "{err}"
        );
        let choice = choose_home(Some(&venv)).unwrap();
        assert_eq!(choice.program_name, venv.join("bin/python"));
        assert_eq!(choice.home, None);

        // A version other than the embedded one.
        let other = if crate::embedded::BUILD_PYTHON_VERSION == "3.12" {
            "3.13.0"
        } else {
            "3.12.1"
        };
        std::fs::write(
            venv.join("pyvenv.cfg"),
            format!("home = /x/bin\nversion_info = {other}\n"),
        )
        .unwrap();
        let err = choose_home(Some(&venv)).unwrap_err().to_string();
        assert!(
            err.contains(&format!("was created by Python {other}")),
            "{err}"
        );
    }

    #[test]
    fn no_home_always_sets_program_name() {
        let choice = choose_home(None).unwrap();
        assert_eq!(choice.program_name, PathBuf::from(BUILD_PYTHON_EXECUTABLE));
        assert!(choice.home.is_none());
    }
}
