//! Virtual environment inspection against real environments made by `python -m venv`,
//! `virtualenv` and `uv venv`, real installations (Debian's /usr, pyenv's) and real users.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;
use wsgi_config::venv::{
    EmbeddedPython, Problem, ProblemKind, PythonVersion, Severity, UserIdentity, VenvKind,
    VenvReport, check_readable, inspect,
};
use wsgi_testkit::fs::{chmod, scratch_world_readable_in};
use wsgi_testkit::process::run;
use wsgi_testkit::venvs::{make_venv, tools_dir};

const DEBIAN_PYTHON: &str = "/usr/bin/python3.11";
const DEBIAN_LIBPYTHON: &str = "/usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0";
const PYENV_311: &str = "/root/.pyenv/versions/3.11.7";
const PYENV_312: &str = "/root/.pyenv/versions/3.12.1";

/// The part of the messages that says what python-home must be.
const ROOT_HINT: &str = "the folder holding bin/ and lib/, which \
    `python -c 'import sys; print(sys.prefix)'` prints inside the activated environment";

fn require_python(python: &str) {
    assert!(
        Path::new(python).is_file(),
        "{python} is missing: these tests need Debian's python3.11 (run \
         scripts/setup-test-env.sh) and pyenv's 3.11.7 and 3.12.1 (`pyenv install 3.11.7 3.12.1`)"
    );
}

/// The embedded Python of these tests: Debian's 3.11, its version asked from the interpreter.
fn debian() -> EmbeddedPython {
    require_python(DEBIAN_PYTHON);
    let printed = run(Command::new(DEBIAN_PYTHON).arg("--version"));
    let version = PythonVersion::parse(&printed)
        .unwrap_or_else(|| panic!("cannot parse `{DEBIAN_PYTHON} --version`: {printed:?}"));
    EmbeddedPython {
        version,
        prefix: PathBuf::from("/usr"),
        executable: PathBuf::from(DEBIAN_PYTHON),
        libpython: Some(PathBuf::from(DEBIAN_LIBPYTHON)),
    }
}

/// pyenv's 3.11.7 as the embedded Python.
fn pyenv_311() -> EmbeddedPython {
    let executable = PathBuf::from(format!("{PYENV_311}/bin/python3.11"));
    require_python(executable.to_str().expect("utf-8"));
    EmbeddedPython {
        version: PythonVersion::new(3, 11, 7),
        prefix: PathBuf::from(PYENV_311),
        executable,
        libpython: Some(PathBuf::from(format!(
            "{PYENV_311}/lib/libpython3.11.so.1.0"
        ))),
    }
}

/// A world-readable scratch folder under /var/tmp.
fn scratch() -> TempDir {
    scratch_in("/var/tmp")
}

fn scratch_in(parent: &str) -> TempDir {
    scratch_world_readable_in(parent, "wsgi-rs-venv-")
}

fn venv_with(python: &str, dest: &Path) -> PathBuf {
    require_python(python);
    make_venv(python, dest)
}

fn debian_venv(dest: &Path) -> PathBuf {
    venv_with(DEBIAN_PYTHON, dest)
}

fn virtualenv(dest: &Path) -> PathBuf {
    run(Command::new(tools_dir().join("virtualenv"))
        .args(["-q", "-p", DEBIAN_PYTHON])
        .arg(dest));
    dest.to_path_buf()
}

fn uv_venv(dest: &Path) -> PathBuf {
    run(Command::new(tools_dir().join("uv"))
        .args(["venv", "-q", "-p", DEBIAN_PYTHON])
        .arg(dest));
    dest.to_path_buf()
}

fn only_problem(report: &VenvReport) -> &Problem {
    assert_eq!(
        report.problems.len(),
        1,
        "expected exactly one problem: {:#?}",
        report.problems
    );
    &report.problems[0]
}

fn assert_refused(report: &VenvReport) {
    assert!(!report.is_usable(), "{report:#?}");
    assert_eq!(report.config, None);
}

fn user(name: &str) -> UserIdentity {
    UserIdentity::lookup(name).unwrap_or_else(|e| panic!("{e}"))
}

// ---------------------------------------------------------------- detection per tool

#[test]
fn python_m_venv_is_detected_and_usable() {
    let embedded = debian();
    let tmp = scratch();
    let root = debian_venv(&tmp.path().join("app"));
    let report = inspect(&root, &embedded);
    assert_eq!(report.problems, vec![], "{report:#?}");
    assert!(report.is_usable());
    assert_eq!(report.kind, VenvKind::Venv);
    assert_eq!(report.version, Some(embedded.version));
    assert_eq!(report.creator_version, None);
    assert_eq!(report.home.as_deref(), Some(Path::new("/usr/bin")));
    assert_eq!(report.base_prefix.as_deref(), Some(Path::new("/usr")));
    assert_eq!(
        report.base_executable.as_deref(),
        Some(Path::new(DEBIAN_PYTHON))
    );
    assert_eq!(report.include_system_site_packages, Some(false));
    assert!(
        !report.has_activate_this,
        "python -m venv writes no activate_this.py"
    );
    assert_eq!(
        report.site_packages,
        Some(root.join("lib/python3.11/site-packages"))
    );
    let config = report.config.expect("config lines for a usable venv");
    assert_eq!(
        config.python_home,
        format!("python-home={}", root.display())
    );
    assert_eq!(
        config.wsgi_python_home,
        format!("WSGIPythonHome {}", root.display())
    );
}

#[test]
fn virtualenv_is_detected() {
    let embedded = debian();
    let tmp = scratch();
    let root = virtualenv(&tmp.path().join("app"));
    let printed = run(Command::new(tools_dir().join("virtualenv")).arg("--version"));
    let tool_version = printed.split_whitespace().nth(1).expect("virtualenv X.Y");

    let report = inspect(&root, &embedded);
    assert_eq!(report.problems, vec![], "{report:#?}");
    assert_eq!(report.kind, VenvKind::Virtualenv);
    assert_eq!(report.creator_version.as_deref(), Some(tool_version));
    assert_eq!(report.version, Some(embedded.version));
    assert_eq!(report.base_prefix.as_deref(), Some(Path::new("/usr")));
    assert_eq!(
        report.base_executable.as_deref(),
        Some(Path::new(DEBIAN_PYTHON))
    );
    assert_eq!(report.include_system_site_packages, Some(false));
    assert!(report.has_activate_this);
    assert_eq!(
        report.site_packages,
        Some(root.join("lib/python3.11/site-packages"))
    );
    assert!(report.is_usable());
}

#[test]
fn uv_venv_is_detected() {
    let embedded = debian();
    let tmp = scratch();
    let root = uv_venv(&tmp.path().join("app"));
    let printed = run(Command::new(tools_dir().join("uv")).arg("--version"));
    let tool_version = printed.split_whitespace().nth(1).expect("uv X.Y.Z");
    let cfg = fs::read_to_string(root.join("pyvenv.cfg")).expect("pyvenv.cfg");
    assert!(
        !cfg.lines().any(|l| l.starts_with("version ")),
        "uv writes only version_info: {cfg}"
    );

    let report = inspect(&root, &embedded);
    assert_eq!(report.problems, vec![], "{report:#?}");
    assert_eq!(report.kind, VenvKind::Uv);
    assert_eq!(report.creator_version.as_deref(), Some(tool_version));
    assert_eq!(report.version, Some(embedded.version), "from version_info");
    // uv names no executable: the base interpreter is derived from `home`.
    assert_eq!(
        report.base_executable.as_deref(),
        Some(Path::new(DEBIAN_PYTHON))
    );
    assert_eq!(report.base_prefix.as_deref(), Some(Path::new("/usr")));
    assert!(report.has_activate_this);
    assert_eq!(
        report.site_packages,
        Some(root.join("lib/python3.11/site-packages"))
    );
    assert!(report.is_usable());
}

#[test]
fn report_serializes_for_format_json() {
    let embedded = debian();
    let tmp = scratch();
    let root = venv_with(
        &format!("{PYENV_312}/bin/python3.12"),
        &tmp.path().join("v"),
    );
    let report = inspect(&root, &embedded);
    let json = serde_json::to_value(&report).expect("serialize");
    assert_eq!(json["kind"], "venv");
    assert_eq!(json["version"]["major"], 3);
    assert_eq!(json["version"]["minor"], 12);
    assert_eq!(json["version"]["patch"], 1);
    assert_eq!(json["path"], root.display().to_string());
    assert_eq!(json["has_activate_this"], false);
    assert_eq!(json["config"], serde_json::Value::Null);
    assert_eq!(json["problems"][0]["severity"], "error");
    assert_eq!(json["problems"][0]["kind"], "version_mismatch");
    assert_eq!(
        json["problems"][0]["message"],
        report.problems[0].to_string()
    );

    let good = inspect(&debian_venv(&tmp.path().join("ok")), &embedded);
    let json = serde_json::to_value(&good).expect("serialize");
    assert_eq!(json["problems"], serde_json::json!([]));
    assert_eq!(
        json["config"]["python_home"],
        format!("python-home={}", tmp.path().join("ok").display())
    );
}

// ---------------------------------------------------------------- another Python

#[test]
fn venv_of_another_python_version_is_refused() {
    let embedded = debian();
    let tmp = scratch();
    let root = venv_with(
        &format!("{PYENV_312}/bin/python3.12"),
        &tmp.path().join("v312"),
    );
    let report = inspect(&root, &embedded);
    assert_refused(&report);
    assert_eq!(report.kind, VenvKind::Venv);
    assert_eq!(report.version, Some(PythonVersion::new(3, 12, 1)));
    assert_eq!(
        report.site_packages,
        Some(root.join("lib/python3.12/site-packages"))
    );
    let problem = only_problem(&report);
    assert_eq!(problem.severity, Severity::Error);
    assert!(matches!(problem.kind, ProblemKind::VersionMismatch { .. }));
    let r = root.display();
    assert_eq!(
        problem.to_string(),
        format!(
            "{r} was created by Python 3.12.1 ({PYENV_312}/bin/python3.12) but this wsgi-rs \
             embeds Python {v} (/usr/bin/python3.11): the Python library is fixed when wsgi-rs \
             is built (it embeds Python, it does not run a python program), so a virtual \
             environment cannot switch it to another Python version; recreate the environment \
             with `/usr/bin/python3.11 -m venv --clear {r}` and reinstall its packages, or \
             rebuild wsgi-rs against Python 3.12 with PYO3_PYTHON={PYENV_312}/bin/python3.12",
            v = embedded.version
        )
    );
}

#[test]
fn venv_of_another_installation_of_the_same_version_is_refused() {
    let embedded = debian();
    let tmp = scratch();
    let root = venv_with(
        &format!("{PYENV_311}/bin/python3.11"),
        &tmp.path().join("v3117"),
    );
    let report = inspect(&root, &embedded);
    assert_refused(&report);
    assert_eq!(report.version, Some(PythonVersion::new(3, 11, 7)));
    assert_eq!(report.base_prefix.as_deref(), Some(Path::new(PYENV_311)));
    let problem = only_problem(&report);
    assert!(matches!(
        problem.kind,
        ProblemKind::OtherInstallation { .. }
    ));
    let r = root.display();
    assert_eq!(
        problem.to_string(),
        format!(
            "{r} was created by the Python 3.11.7 installation in {PYENV_311} but this wsgi-rs \
             embeds the one in /usr (Python {v}, /usr/bin/python3.11): two installations of the \
             same Python version may have been compiled with different options and their ABIs \
             can differ in subtle ways, so mixing them is not safe; recreate the environment \
             with `/usr/bin/python3.11 -m venv --clear {r}` and reinstall its packages, or \
             rebuild wsgi-rs against that installation with \
             PYO3_PYTHON={PYENV_311}/bin/python3.11",
            v = embedded.version
        )
    );

    // The same venv is right for a wsgi-rs built against pyenv's 3.11.7...
    let report = inspect(&root, &pyenv_311());
    assert_eq!(report.problems, vec![], "{report:#?}");
    // ...and the Debian venv is wrong for it.
    let debian_root = debian_venv(&tmp.path().join("deb"));
    let report = inspect(&debian_root, &pyenv_311());
    assert!(matches!(
        only_problem(&report).kind,
        ProblemKind::OtherInstallation { .. }
    ));
}

#[test]
fn loaded_libpython_of_another_installation_is_refused() {
    // Built against pyenv's 3.11.7, but the loader picked Debian's libpython3.11.so.1.0 (same
    // soname, no rpath).
    let mut embedded = pyenv_311();
    embedded.libpython = Some(PathBuf::from(DEBIAN_LIBPYTHON));
    let tmp = scratch();
    let root = venv_with(
        &format!("{PYENV_311}/bin/python3.11"),
        &tmp.path().join("v"),
    );
    let report = inspect(&root, &embedded);
    assert_refused(&report);
    let problem = only_problem(&report);
    assert!(matches!(
        problem.kind,
        ProblemKind::LibpythonOutsidePrefix { .. }
    ));
    assert_eq!(
        problem.to_string(),
        format!(
            "this wsgi-rs loaded {DEBIAN_LIBPYTHON}, which is not part of the installation in \
             {PYENV_311} that {r} uses: the Python library and its standard library would come \
             from different installations; make wsgi-rs load the libpython of {PYENV_311} (link \
             it with an rpath to {PYENV_311}/lib, e.g. \
             pyo3_build_config::add_libpython_rpath_link_args() in build.rs), or use an \
             environment created by the installation that holds {DEBIAN_LIBPYTHON}",
            r = root.display()
        )
    );
}

#[test]
fn patch_level_difference_is_only_a_warning() {
    let embedded = debian();
    let tmp = scratch();
    // A venv created before an in-place upgrade records the older patch level.
    let root = debian_venv(&tmp.path().join("old"));
    let cfg_path = root.join("pyvenv.cfg");
    let cfg = fs::read_to_string(&cfg_path).expect("pyvenv.cfg");
    let current = format!("version = {}", embedded.version);
    assert!(cfg.contains(&current), "{cfg}");
    fs::write(&cfg_path, cfg.replace(&current, "version = 3.11.1")).expect("write");

    let report = inspect(&root, &embedded);
    assert!(report.is_usable(), "a patch difference is not an error");
    assert!(report.config.is_some());
    let problem = only_problem(&report);
    assert_eq!(problem.severity, Severity::Warning);
    assert_eq!(report.warnings().count(), 1);
    assert_eq!(report.errors().count(), 0);
    assert!(matches!(problem.kind, ProblemKind::PatchDifference { .. }));
    let r = root.display();
    assert_eq!(
        problem.to_string(),
        format!(
            "{r} records Python 3.11.1 but this wsgi-rs embeds {v} of the same installation \
             (/usr): a patch-level upgrade in place keeps the environment compatible, so it is \
             used; set `version = {v}` in {r}/pyvenv.cfg to silence this warning",
            v = embedded.version
        )
    );

    // uv records `version_info`, and the message names that key.
    let root = uv_venv(&tmp.path().join("uv"));
    let cfg_path = root.join("pyvenv.cfg");
    let cfg = fs::read_to_string(&cfg_path).expect("pyvenv.cfg");
    let current = format!("version_info = {}", embedded.version);
    assert!(cfg.contains(&current), "{cfg}");
    fs::write(&cfg_path, cfg.replace(&current, "version_info = 3.11.1")).expect("write");
    let report = inspect(&root, &embedded);
    assert!(report.is_usable());
    assert!(
        only_problem(&report).to_string().ends_with(&format!(
            "set `version_info = {}` in {}/pyvenv.cfg to silence this warning",
            embedded.version,
            root.display()
        )),
        "{}",
        only_problem(&report)
    );
}

// ---------------------------------------------------------------- wrong paths

#[test]
fn python_executable_instead_of_root_is_refused() {
    let embedded = debian();
    let tmp = scratch();
    let root = debian_venv(&tmp.path().join("app"));
    for exe in ["bin/python", "bin/python3.11"] {
        let path = root.join(exe);
        assert!(
            fs::symlink_metadata(&path)
                .expect("exists")
                .file_type()
                .is_symlink()
        );
        let report = inspect(&path, &embedded);
        assert_refused(&report);
        assert_eq!(report.kind, VenvKind::Unknown);
        let problem = only_problem(&report);
        assert!(matches!(
            problem.kind,
            ProblemKind::ExecutableNotRoot { .. }
        ));
        assert_eq!(
            problem.to_string(),
            format!(
                "{} is a Python executable, not a virtual environment: python-home must be the \
                 virtual environment's root ({ROOT_HINT}), not its python executable; use {}",
                path.display(),
                root.display()
            )
        );
    }

    // The base interpreter of an installation: the prefix is suggested.
    let report = inspect(Path::new(DEBIAN_PYTHON), &embedded);
    assert!(only_problem(&report).to_string().ends_with("; use /usr"));

    // A bin/python whose base interpreter is gone (a dangling link) is still recognised.
    let broken = tmp.path().join("broken");
    fs::create_dir_all(broken.join("bin")).expect("mkdir");
    symlink("/nonexistent/python3.11", broken.join("bin/python")).expect("symlink");
    let report = inspect(&broken.join("bin/python"), &embedded);
    assert_eq!(
        only_problem(&report).kind,
        ProblemKind::ExecutableNotRoot {
            path: broken.join("bin/python"),
            root: broken.clone()
        }
    );
}

#[test]
fn folder_inside_an_environment_is_refused() {
    let embedded = debian();
    let tmp = scratch();
    let root = debian_venv(&tmp.path().join("app"));
    for inner in [
        "lib/python3.11",
        "lib/python3.11/site-packages",
        "bin",
        "pyvenv.cfg",
    ] {
        let path = root.join(inner);
        let report = inspect(&path, &embedded);
        assert_refused(&report);
        let problem = only_problem(&report);
        assert!(
            matches!(problem.kind, ProblemKind::InsideEnvironment { .. }),
            "{inner}: {problem}"
        );
        assert_eq!(
            problem.to_string(),
            format!(
                "{p} is inside {r}, not the root of the environment: python-home must be the \
                 virtual environment's root ({ROOT_HINT}); use {r}",
                p = path.display(),
                r = root.display()
            )
        );
    }
    // Also for an installation's stdlib folder, by its name.
    let report = inspect(Path::new("/usr/lib/python3.11"), &embedded);
    assert_eq!(
        only_problem(&report).kind,
        ProblemKind::InsideEnvironment {
            path: PathBuf::from("/usr/lib/python3.11"),
            root: PathBuf::from("/usr")
        }
    );
}

#[test]
fn missing_path_is_refused() {
    let embedded = debian();
    let tmp = scratch();
    let path = tmp.path().join("nope");
    let report = inspect(&path, &embedded);
    assert_refused(&report);
    assert_eq!(report.kind, VenvKind::Unknown);
    let problem = only_problem(&report);
    assert!(matches!(problem.kind, ProblemKind::NotFound { .. }));
    let p = path.display();
    assert_eq!(
        problem.to_string(),
        format!(
            "{p} does not exist: python-home must be the root folder of an existing virtual \
             environment ({ROOT_HINT}); correct the path, or create the environment with \
             `/usr/bin/python3.11 -m venv {p}`"
        )
    );

    let link = tmp.path().join("current");
    symlink(tmp.path().join("v2"), &link).expect("symlink");
    let report = inspect(&link, &embedded);
    assert_eq!(
        only_problem(&report).to_string(),
        format!(
            "{l} is a symbolic link to {t}, which does not exist: python-home must be the root \
             folder of an existing virtual environment ({ROOT_HINT}); correct the path, or \
             create the environment with `/usr/bin/python3.11 -m venv {l}`",
            l = link.display(),
            t = tmp.path().join("v2").display()
        )
    );
}

#[test]
fn plain_directory_and_file_are_refused() {
    let embedded = debian();
    let tmp = scratch();
    let dir = tmp.path().join("project");
    fs::create_dir(&dir).expect("mkdir");
    fs::write(dir.join("app.wsgi"), "application = None\n").expect("write");
    let report = inspect(&dir, &embedded);
    assert_refused(&report);
    let problem = only_problem(&report);
    assert!(matches!(problem.kind, ProblemKind::NotAnEnvironment { .. }));
    let d = dir.display();
    assert_eq!(
        problem.to_string(),
        format!(
            "{d} is neither a virtual environment (it has no pyvenv.cfg) nor a Python \
             installation (it has no {d}/lib/python3.11/os.py): python-home must be the root \
             folder of a virtual environment ({ROOT_HINT}); correct the path, or create an \
             environment there with `/usr/bin/python3.11 -m venv {d}`"
        )
    );

    let file = dir.join("app.wsgi");
    let report = inspect(&file, &embedded);
    let problem = only_problem(&report);
    assert!(matches!(problem.kind, ProblemKind::NotADirectory { .. }));
    assert_eq!(
        problem.to_string(),
        format!(
            "{} is not a directory: python-home must be the root folder of a virtual \
             environment ({ROOT_HINT}); correct the path",
            file.display()
        )
    );

    // A path that goes through a file cannot even be examined.
    let through = file.join("venv");
    let report = inspect(&through, &embedded);
    let problem = only_problem(&report);
    assert!(matches!(problem.kind, ProblemKind::Inaccessible { .. }));
    assert_eq!(
        problem.to_string(),
        format!(
            "{} cannot be examined (Not a directory (os error 20)): python-home must be the \
             root folder of a virtual environment ({ROOT_HINT}); correct the path",
            through.display()
        )
    );
}

// ---------------------------------------------------------------- broken environments

#[test]
fn pyvenv_cfg_without_home_is_refused() {
    let embedded = debian();
    let tmp = scratch();
    let root = debian_venv(&tmp.path().join("app"));
    let cfg_path = root.join("pyvenv.cfg");
    let cfg = fs::read_to_string(&cfg_path).expect("pyvenv.cfg");
    let without: String = cfg
        .lines()
        .filter(|l| !l.starts_with("home"))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(&cfg_path, without).expect("write");
    let report = inspect(&root, &embedded);
    assert_refused(&report);
    assert_eq!(report.kind, VenvKind::Venv);
    assert_eq!(report.home, None);
    let problem = only_problem(&report);
    assert!(matches!(problem.kind, ProblemKind::CfgWithoutHome { .. }));
    let r = root.display();
    assert_eq!(
        problem.to_string(),
        format!(
            "{r}/pyvenv.cfg has no `home = ...` line (python -m venv, virtualenv and uv all \
             write one, naming the bin folder of the Python that created the environment), so \
             the Python that created {r} is unknown: recreate the environment with \
             `/usr/bin/python3.11 -m venv --clear {r}` and reinstall its packages"
        )
    );
}

#[test]
fn unreadable_pyvenv_cfg_is_refused() {
    let embedded = debian();
    let tmp = scratch();
    let root = debian_venv(&tmp.path().join("app"));
    let cfg_path = root.join("pyvenv.cfg");
    fs::remove_file(&cfg_path).expect("rm");
    fs::create_dir(&cfg_path).expect("mkdir");
    let report = inspect(&root, &embedded);
    assert_refused(&report);
    assert_eq!(report.kind, VenvKind::Unknown);
    let problem = only_problem(&report);
    assert!(matches!(problem.kind, ProblemKind::CfgUnreadable { .. }));
    let r = root.display();
    assert_eq!(
        problem.to_string(),
        format!(
            "{r}/pyvenv.cfg cannot be read (Is a directory (os error 21)), so the Python that \
             created {r} is unknown: make it a readable file, or recreate the environment with \
             `/usr/bin/python3.11 -m venv --clear {r}` and reinstall its packages"
        )
    );
}

#[test]
fn missing_site_packages_is_refused() {
    let embedded = debian();
    let tmp = scratch();
    let root = debian_venv(&tmp.path().join("app"));
    fs::remove_dir(root.join("lib/python3.11/site-packages")).expect("rmdir");
    let report = inspect(&root, &embedded);
    assert_refused(&report);
    assert_eq!(report.site_packages, None);
    let problem = only_problem(&report);
    assert!(matches!(
        problem.kind,
        ProblemKind::SitePackagesMissing { .. }
    ));
    let r = root.display();
    assert_eq!(
        problem.to_string(),
        format!(
            "{r}/lib/python3.11/site-packages does not exist, so the embedded Python would find \
             none of the packages of {r}: recreate the environment with \
             `/usr/bin/python3.11 -m venv --clear {r}` and reinstall its packages"
        )
    );

    // A 3.12 venv whose pyvenv.cfg lost its version line: only the folders tell.
    let root = venv_with(
        &format!("{PYENV_312}/bin/python3.12"),
        &tmp.path().join("v312"),
    );
    let cfg_path = root.join("pyvenv.cfg");
    let cfg = fs::read_to_string(&cfg_path).expect("pyvenv.cfg");
    // ...and that claims Debian's installation, so that only the folders differ.
    let edited: String = cfg
        .lines()
        .filter(|l| !l.starts_with("version"))
        .map(|l| format!("{}\n", l.replace(&format!("{PYENV_312}/bin"), "/usr/bin")))
        .collect();
    fs::write(&cfg_path, edited).expect("write");
    let report = inspect(&root, &embedded);
    assert_eq!(report.version, None);
    assert_eq!(
        report.site_packages,
        Some(root.join("lib/python3.12/site-packages"))
    );
    let r = root.display();
    assert_eq!(
        only_problem(&report).to_string(),
        format!(
            "{r}/lib/python3.11/site-packages does not exist, so the embedded Python would find \
             none of the packages of {r} (it has {r}/lib/python3.12/site-packages instead, for \
             another Python version): recreate the environment with \
             `/usr/bin/python3.11 -m venv --clear {r}` and reinstall its packages"
        )
    );
}

// ---------------------------------------------------------------- installations

#[test]
fn embedded_installation_prefix_is_usable() {
    let embedded = debian();
    let report = inspect(Path::new("/usr"), &embedded);
    assert_eq!(report.problems, vec![], "{report:#?}");
    assert_eq!(report.kind, VenvKind::Installation);
    // From /usr/include/python3.11/patchlevel.h (python3.11-dev).
    assert_eq!(report.version, Some(embedded.version));
    assert_eq!(report.include_system_site_packages, None);
    assert_eq!(report.home, None);
    assert_eq!(
        report.config.expect("usable").wsgi_python_home,
        "WSGIPythonHome /usr"
    );
}

#[test]
fn other_installation_prefix_is_refused() {
    let embedded = debian();
    let report = inspect(Path::new(PYENV_311), &embedded);
    assert_refused(&report);
    assert_eq!(report.kind, VenvKind::Installation);
    assert_eq!(report.version, Some(PythonVersion::new(3, 11, 7)));
    let problem = only_problem(&report);
    assert!(matches!(
        problem.kind,
        ProblemKind::ForeignInstallation { .. }
    ));
    let v = embedded.version;
    assert_eq!(
        problem.to_string(),
        format!(
            "{PYENV_311} is a Python 3.11.7 installation, but not the one this wsgi-rs embeds \
             (/usr, Python {v}): the Python library is fixed when wsgi-rs is built and the \
             standard library must come from that same installation; point python-home at a \
             virtual environment created with `/usr/bin/python3.11 -m venv DIR`, or rebuild \
             wsgi-rs against this installation with PYO3_PYTHON={PYENV_311}/bin/python3.11"
        )
    );

    let report = inspect(Path::new(PYENV_312), &embedded);
    assert_eq!(report.version, Some(PythonVersion::new(3, 12, 1)));
    assert!(
        only_problem(&report).to_string().starts_with(&format!(
            "{PYENV_312} is a Python 3.12.1 installation, but not the one this wsgi-rs embeds"
        )),
        "{}",
        only_problem(&report)
    );

    // Its own prefix is right for pyenv's 3.11.7, unless the loader took Debian's libpython.
    assert_eq!(inspect(Path::new(PYENV_311), &pyenv_311()).problems, vec![]);
    let mut mixed = pyenv_311();
    mixed.libpython = Some(PathBuf::from(DEBIAN_LIBPYTHON));
    let report = inspect(Path::new(PYENV_311), &mixed);
    assert_eq!(
        only_problem(&report).kind,
        ProblemKind::LibpythonOutsidePrefix {
            path: PathBuf::from(PYENV_311),
            prefix: PathBuf::from(PYENV_311),
            libpython: PathBuf::from(DEBIAN_LIBPYTHON),
        }
    );
}

// ---------------------------------------------------------------- configuration lines

#[test]
fn config_lines_keep_the_environment_link() {
    let embedded = debian();
    let tmp = scratch();
    let real = debian_venv(&tmp.path().join("v2"));
    let link = tmp.path().join("current");
    symlink(&real, &link).expect("symlink");
    let report = inspect(&link, &embedded);
    assert!(report.is_usable(), "{report:#?}");
    let config = report.config.expect("usable");
    assert_eq!(config.root, link);
    assert_eq!(
        config.python_home,
        format!("python-home={}", link.display())
    );
    // `..` is resolved.
    let dotted = tmp.path().join("v2/bin/../../current");
    let report = inspect(&dotted, &embedded);
    assert_eq!(report.absolute_path, link);
    assert_eq!(report.path, dotted);
}

// ---------------------------------------------------------------- readability

#[test]
fn users_are_looked_up_with_all_groups() {
    let www = user("www-data");
    assert_eq!((www.name.as_str(), www.uid, www.gid), ("www-data", 33, 33));
    assert!(www.groups.contains(&33));
    assert_eq!(user("#33"), www);
    let nobody = user("nobody");
    assert_eq!((nobody.uid, nobody.gid), (65534, 65534));
    let current = UserIdentity::current().expect("current user");
    assert_eq!(current.uid, nix::unistd::geteuid().as_raw());

    let err = UserIdentity::lookup("no-such-user-wsgi-rs").expect_err("no such user");
    assert_eq!(
        err.to_string(),
        "user no-such-user-wsgi-rs does not exist on this system: give the user your \
         application runs as (e.g. www-data on Debian), or create it with \
         `useradd --system --no-create-home no-such-user-wsgi-rs`"
    );
}

#[test]
fn readable_chain_passes() {
    let tmp = scratch();
    let venv = debian_venv(&tmp.path().join("app"));
    let uv = uv_venv(&tmp.path().join("uv"));
    for name in ["www-data", "nobody", "root"] {
        assert_eq!(check_readable(&venv, &user(name)), vec![], "{name}");
        assert_eq!(check_readable(&uv, &user(name)), vec![], "{name}");
    }
    assert_eq!(check_readable(Path::new("/usr"), &user("www-data")), vec![]);
}

#[test]
fn private_folder_in_the_chain_blocks() {
    let tmp = scratch();
    let private = tmp.path().join("private");
    fs::create_dir(&private).expect("mkdir");
    let venv = debian_venv(&private.join("app"));
    chmod(&private, 0o700);
    for name in ["www-data", "nobody"] {
        let problems = check_readable(&venv, &user(name));
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(matches!(problems[0].kind, ProblemKind::AccessDenied { .. }));
        assert_eq!(
            problems[0].to_string(),
            format!(
                "{p} is not searchable by user {name} (mode 0700, owner root, group root): the \
                 user Apache runs your code as must be able to read the virtual environment; \
                 allow it with `chmod o+x {p}`",
                p = private.display()
            )
        );
    }
    // root reads everything.
    assert_eq!(check_readable(&venv, &user("root")), vec![]);

    // Reached through a symbolic link: the link's target folders count.
    let link = tmp.path().join("link");
    symlink(&venv, &link).expect("symlink");
    let problems = check_readable(&link, &user("www-data"));
    assert!(
        problems[0].to_string().starts_with(&format!(
            "{} is not searchable by user www-data",
            private.display()
        )),
        "{problems:#?}"
    );
}

#[test]
fn group_and_owner_bits_apply_in_order() {
    let tmp = scratch();
    let shared = tmp.path().join("shared");
    fs::create_dir(&shared).expect("mkdir");
    let venv = debian_venv(&shared.join("app"));
    let www = user("www-data");

    // Group www-data may search, others may not.
    nix::unistd::chown(&shared, None, Some(nix::unistd::Gid::from_raw(33))).expect("chgrp");
    chmod(&shared, 0o750);
    assert_eq!(check_readable(&venv, &www), vec![]);
    let problems = check_readable(&venv, &user("nobody"));
    assert_eq!(
        problems[0].to_string(),
        format!(
            "{p} is not searchable by user nobody (mode 0750, owner root, group www-data): the \
             user Apache runs your code as must be able to read the virtual environment; allow \
             it with `chmod o+x {p}`",
            p = shared.display()
        )
    );

    // The owner's bits decide for the owner, even when the group's would allow.
    nix::unistd::chown(&shared, Some(nix::unistd::Uid::from_raw(33)), None).expect("chown");
    chmod(&shared, 0o070);
    let problems = check_readable(&venv, &www);
    assert_eq!(
        problems[0].to_string(),
        format!(
            "{p} is not searchable by user www-data (mode 0070, owner www-data, group \
             www-data): the user Apache runs your code as must be able to read the virtual \
             environment; allow it with `chmod u+x {p}`",
            p = shared.display()
        )
    );
}

#[test]
fn venv_in_a_home_directory_blocks() {
    let mode = fs::metadata("/root").expect("/root").permissions().mode() & 0o7777;
    assert_eq!(
        mode, 0o700,
        "this test expects /root as Debian installs it (mode 0700)"
    );
    let home = scratch_in("/root");
    let venv = debian_venv(&home.path().join("myvenv"));
    let problems = check_readable(&venv, &user("www-data"));
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(
        problems[0].to_string(),
        "/root is not searchable by user www-data (mode 0700, owner root, group root): the user \
         Apache runs your code as must be able to read the virtual environment; move it outside \
         /root (e.g. /usr/local/venvs/myvenv) rather than relaxing the home directory's \
         permissions"
    );
}

#[test]
fn unreadable_parts_of_the_environment_block() {
    let tmp = scratch();
    let venv = debian_venv(&tmp.path().join("app"));
    let v = venv.display();

    chmod(&venv.join("lib"), 0o700);
    let problems = check_readable(&venv, &user("nobody"));
    assert_eq!(
        problems,
        check_readable(&venv, &user("nobody")),
        "deterministic"
    );
    assert_eq!(problems.len(), 1);
    assert_eq!(
        problems[0].to_string(),
        format!(
            "{v}/lib is not readable by user nobody (mode 0700, owner root, group root): the \
             user Apache runs your code as must be able to read the virtual environment; allow \
             it with `chmod -R a+rX {v}`"
        )
    );
    chmod(&venv.join("lib"), 0o755);

    // A folder one may search but not list is not readable.
    chmod(&venv.join("lib/python3.11/site-packages"), 0o711);
    let problems = check_readable(&venv, &user("www-data"));
    assert!(
        problems[0].to_string().starts_with(&format!(
            "{v}/lib/python3.11/site-packages is not readable by user www-data (mode 0711,"
        )),
        "{problems:#?}"
    );
    chmod(&venv.join("lib/python3.11/site-packages"), 0o755);

    chmod(&venv.join("pyvenv.cfg"), 0o600);
    let problems = check_readable(&venv, &user("www-data"));
    assert_eq!(
        problems[0].to_string(),
        format!(
            "{v}/pyvenv.cfg is not readable by user www-data (mode 0600, owner root, group \
             root): the user Apache runs your code as must be able to read the virtual \
             environment; allow it with `chmod -R a+rX {v}`"
        )
    );
    chmod(&venv.join("pyvenv.cfg"), 0o644);
    assert_eq!(check_readable(&venv, &user("www-data")), vec![]);
}

#[test]
fn missing_environment_cannot_be_checked() {
    let tmp = scratch();
    let path = tmp.path().join("gone");
    let problems = check_readable(&path, &user("www-data"));
    assert_eq!(problems.len(), 1);
    assert!(matches!(
        problems[0].kind,
        ProblemKind::CannotCheckAccess { .. }
    ));
    assert_eq!(
        problems[0].to_string(),
        format!(
            "cannot check whether user www-data can read {} (No such file or directory (os \
             error 2)): correct the path",
            path.display()
        )
    );
}
