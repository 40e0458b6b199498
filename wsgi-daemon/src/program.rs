//! Which program runs a daemon process group: this build's own, or, for a group on another
//! Python, that venv's `wsgi` of the same build (`BUILD_ID`, `wsgi daemon-info`).
//!
//! A process embeds one libpython, fixed when it is built, so mod_wsgi cannot run two Python
//! versions under one Apache. A wsgi-rs daemon process is a program of its own, exec'd by the
//! supervisor: a group whose `python-home` is a venv of another Python runs its processes with
//! the `wsgi` program installed in that venv (`pip install wsgi-rs` there builds it against
//! that venv's Python), when that program is the same wsgi-rs build as the supervisor's.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use wsgi_config::venv::{self, EmbeddedPython, ProblemKind, PythonVersion, VenvReport};

/// This build's daemon protocol identity: the crate version and a digest of its sources. A
/// daemon process of another build is exec'd only when its identity is the same.
pub const BUILD_ID: &str = env!("WSGI_DAEMON_BUILD_ID");

/// The hidden `wsgi` subcommand that prints a build's [`RuntimeInfo`] as JSON.
pub const INFO_COMMAND: &str = "daemon-info";

/// The subcommand of `wsgi` that runs one daemon process.
pub const PROCESS_COMMAND: &str = "daemon-process";

/// How long a `wsgi daemon-info` may take before it counts as broken.
const INFO_TIMEOUT: Duration = Duration::from_secs(10);

/// What a `wsgi` program tells a supervisor about itself: its protocol identity and the
/// Python it embeds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeInfo {
    /// [`BUILD_ID`] of the program.
    pub build_id: String,
    /// The embedded Python's version, `X.Y.Z`.
    pub python_version: String,
    /// The embedded installation's interpreter.
    pub python_executable: PathBuf,
    /// The embedded installation's prefix.
    pub python_prefix: PathBuf,
    /// The libpython the program loaded.
    pub libpython: Option<PathBuf>,
}

impl RuntimeInfo {
    /// This program's.
    pub fn this() -> RuntimeInfo {
        let py = wsgi_interp::embedded::embedded_python();
        RuntimeInfo {
            build_id: BUILD_ID.to_string(),
            python_version: py.version.to_string(),
            python_executable: py.executable,
            python_prefix: py.prefix,
            libpython: py.libpython,
        }
    }

    /// The embedded Python, as venv inspection takes it.
    pub fn embedded_python(&self) -> Option<EmbeddedPython> {
        Some(EmbeddedPython {
            version: PythonVersion::parse(&self.python_version)?,
            prefix: self.python_prefix.clone(),
            executable: self.python_executable.clone(),
            libpython: self.libpython.clone(),
        })
    }
}

/// A daemon group that runs on another Python: the program exec'd for its processes and the
/// Python that program embeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignRuntime {
    /// `<python-home>/bin/wsgi`.
    pub program: PathBuf,
    /// The Python it embeds.
    pub python: EmbeddedPython,
}

/// A daemon group's python-home, inspected for the Python that will run it.
#[derive(Debug, Clone)]
pub struct HomeInspection {
    /// The venv inspection, against the Python that runs the group (its errors refuse it).
    pub report: VenvReport,
    /// `Some` when that Python is not the embedded one.
    pub runtime: Option<ForeignRuntime>,
}

/// Why a daemon group's venv of another Python cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// The venv has no wsgi-rs of its own.
    #[error(
        "{home} is a virtual environment of Python {venv_version}, and this wsgi-rs embeds Python {embedded_version}: a daemon process group runs on another Python with the wsgi program installed in its venv, and {program} does not exist; install wsgi-rs there (`{home}/bin/pip install wsgi-rs`, or `{home}/bin/pip install /path/to/wsgi-rs` from its source tree, the same version as this one), or recreate the venv with `{embedded_executable} -m venv --clear {home}`",
        home = .home.display(),
        program = .program.display(),
        embedded_executable = .embedded_executable.display()
    )]
    NotInstalled {
        /// The python-home.
        home: PathBuf,
        /// The venv's Python version, when `pyvenv.cfg` tells.
        venv_version: String,
        /// The embedded Python's version.
        embedded_version: String,
        /// The embedded Python's interpreter.
        embedded_executable: PathBuf,
        /// The missing program.
        program: PathBuf,
    },
    /// The venv's wsgi program does not answer `daemon-info`.
    #[error(
        "{program} cannot tell which Python it runs ({why}): reinstall wsgi-rs in {home} (`{home}/bin/pip install --force-reinstall wsgi-rs`)",
        program = .program.display(),
        home = .home.display()
    )]
    Unusable {
        /// The python-home.
        home: PathBuf,
        /// The program.
        program: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// The venv's wsgi program is another build.
    #[error(
        "{program} is wsgi-rs {theirs} and this is wsgi-rs {ours}: a daemon process group on another Python runs the wsgi program of its venv, which must be the same build as the server's; install this version there (`{home}/bin/pip install /path/to/wsgi-rs` from the same source tree)",
        program = .program.display(),
        home = .home.display()
    )]
    OtherBuild {
        /// The python-home.
        home: PathBuf,
        /// The program.
        program: PathBuf,
        /// Its [`BUILD_ID`].
        theirs: String,
        /// Ours.
        ours: String,
    },
}

/// Inspects a daemon group's `python-home`: against the embedded Python, or, for a venv of
/// another Python, against the Python of the `wsgi` program installed in it (which then runs
/// the group's processes). Errors only when the venv is of another Python and has no usable
/// wsgi-rs; other problems are in the report, as [`venv::inspect`] gives them.
pub fn inspect_daemon_home(
    home: &Path,
    embedded: &EmbeddedPython,
) -> Result<HomeInspection, RuntimeError> {
    let report = venv::inspect(home, embedded);
    if !report.errors().any(|p| is_other_python(&p.kind)) {
        return Ok(HomeInspection {
            report,
            runtime: None,
        });
    }
    let program = home.join("bin").join("wsgi");
    if !program.is_file() {
        return Err(RuntimeError::NotInstalled {
            home: home.to_path_buf(),
            venv_version: report
                .version
                .as_ref()
                .map_or_else(|| "(unknown)".to_string(), ToString::to_string),
            embedded_version: embedded.version.to_string(),
            embedded_executable: embedded.executable.clone(),
            program,
        });
    }
    let unusable = |why: String| RuntimeError::Unusable {
        home: home.to_path_buf(),
        program: program.clone(),
        why,
    };
    let info = query(&program).map_err(unusable)?;
    if info.build_id != BUILD_ID {
        return Err(RuntimeError::OtherBuild {
            home: home.to_path_buf(),
            program,
            theirs: info.build_id,
            ours: BUILD_ID.to_string(),
        });
    }
    let python = info
        .embedded_python()
        .ok_or_else(|| unusable(format!("unknown version {}", info.python_version)))?;
    Ok(HomeInspection {
        report: venv::inspect(home, &python),
        runtime: Some(ForeignRuntime { program, python }),
    })
}

/// Whether a venv problem means "made by another Python" (what another build can fix).
fn is_other_python(kind: &ProblemKind) -> bool {
    matches!(
        kind,
        ProblemKind::VersionMismatch { .. } | ProblemKind::OtherInstallation { .. }
    )
}

/// Runs `PROGRAM daemon-info` (bounded by [`INFO_TIMEOUT`]) and reads its answer.
fn query(program: &Path) -> Result<RuntimeInfo, String> {
    let mut child = Command::new(program)
        .arg(INFO_COMMAND)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run it: {e}"))?;
    let deadline = Instant::now() + INFO_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer in {} s", INFO_TIMEOUT.as_secs()));
            }
            Err(e) => return Err(e.to_string()),
        }
    };
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    if !status.success() {
        let said = err.lines().last().unwrap_or("").trim();
        return Err(format!("`{INFO_COMMAND}` failed with {status}: {said}"));
    }
    serde_json::from_str(out.trim()).map_err(|e| format!("unexpected answer: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_venv(dir: &Path, version: &str) -> PathBuf {
        let root = dir.join(format!("venv{version}"));
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::write(
            root.join("pyvenv.cfg"),
            format!("home = /nonexistent/python{version}/bin\nversion_info = {version}\n"),
        )
        .unwrap();
        root
    }

    fn other_version() -> &'static str {
        if wsgi_interp::embedded::BUILD_PYTHON_VERSION == "3.12" {
            "3.13.0"
        } else {
            "3.12.1"
        }
    }

    #[test]
    fn this_builds_info_round_trips() {
        let info = RuntimeInfo::this();
        assert_eq!(info.build_id, BUILD_ID);
        assert!(BUILD_ID.starts_with(env!("CARGO_PKG_VERSION")));
        let text = serde_json::to_string(&info).unwrap();
        let back: RuntimeInfo = serde_json::from_str(&text).unwrap();
        let py = back.embedded_python().unwrap();
        assert_eq!(py, wsgi_interp::embedded::embedded_python());
    }

    #[test]
    fn a_venv_of_another_python_without_wsgi_says_how_to_install_it() {
        let dir = tempfile::tempdir().unwrap();
        let home = fake_venv(dir.path(), other_version());
        let embedded = wsgi_interp::embedded::embedded_python();
        let err = inspect_daemon_home(&home, &embedded).unwrap_err();
        assert!(matches!(err, RuntimeError::NotInstalled { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("{}/bin/pip install wsgi-rs", home.display())),
            "{text}"
        );
    }

    #[test]
    fn a_program_that_is_not_wsgi_rs_is_unusable() {
        let dir = tempfile::tempdir().unwrap();
        let home = fake_venv(dir.path(), other_version());
        let program = home.join("bin/wsgi");
        std::fs::write(&program, "#!/bin/sh\necho not json\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        let embedded = wsgi_interp::embedded::embedded_python();
        let err = inspect_daemon_home(&home, &embedded).unwrap_err();
        assert!(matches!(err, RuntimeError::Unusable { .. }), "{err}");
        assert!(err.to_string().contains("unexpected answer"), "{err}");
    }

    #[test]
    fn another_build_is_refused_with_both_identities() {
        let dir = tempfile::tempdir().unwrap();
        let home = fake_venv(dir.path(), other_version());
        let program = home.join("bin/wsgi");
        let mut info = RuntimeInfo::this();
        info.build_id = "0.0.1+0000".into();
        std::fs::write(
            &program,
            format!(
                "#!/bin/sh\ncat <<'JSON'\n{}\nJSON\n",
                serde_json::to_string(&info).unwrap()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        let embedded = wsgi_interp::embedded::embedded_python();
        let err = inspect_daemon_home(&home, &embedded).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("is wsgi-rs 0.0.1+0000") && text.contains(BUILD_ID),
            "{text}"
        );
    }

    #[test]
    fn a_venv_of_the_embedded_python_runs_here() {
        let dir = tempfile::tempdir().unwrap();
        let embedded = wsgi_interp::embedded::embedded_python();
        let home = dir.path().join("v");
        let ok = Command::new(&embedded.executable)
            .args(["-m", "venv", "--without-pip"])
            .arg(&home)
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let found = inspect_daemon_home(&home, &embedded).unwrap();
        assert!(found.runtime.is_none());
        assert!(found.report.is_usable(), "{:?}", found.report.problems);
    }
}
