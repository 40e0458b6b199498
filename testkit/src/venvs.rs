//! Where `scripts/setup-test-env.sh` puts what the tests share (the test root, the tools venv,
//! the frameworks venv), and virtual environments made for a test. A missing piece fails the
//! test with what to run; it never skips it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The folder the setup script fills: `WSGI_RS_TEST_ROOT`, by default /var/tmp/wsgi-rs-test.
pub fn test_root() -> PathBuf {
    std::env::var_os("WSGI_RS_TEST_ROOT")
        .map_or_else(|| PathBuf::from("/var/tmp/wsgi-rs-test"), PathBuf::from)
}

/// The folder holding `virtualenv` and `uv`: `WSGI_RS_TEST_TOOLS`, by default the tools venv's
/// `bin` in the [`test_root`]; fails when either is missing.
pub fn tools_dir() -> PathBuf {
    let dir = std::env::var_os("WSGI_RS_TEST_TOOLS")
        .map_or_else(|| test_root().join("tools/bin"), PathBuf::from);
    for tool in ["virtualenv", "uv"] {
        assert!(
            dir.join(tool).is_file(),
            "{} is missing: run scripts/setup-test-env.sh (it creates the tools venv with \
             virtualenv and uv in /var/tmp/wsgi-rs-test/tools), or set WSGI_RS_TEST_TOOLS to a \
             bin folder holding both",
            dir.join(tool).display()
        );
    }
    dir
}

/// The frameworks venv (Flask and Django): `WSGI_RS_FRAMEWORKS_VENV`, by default `frameworks`
/// in the [`test_root`]; fails, saying how to make it, when it is missing or cannot import
/// them.
pub fn frameworks_home() -> PathBuf {
    let home = std::env::var_os("WSGI_RS_FRAMEWORKS_VENV")
        .map_or_else(|| test_root().join("frameworks"), PathBuf::from);
    let python = home.join("bin/python");
    assert!(
        python.is_file(),
        "the frameworks venv {} is missing: run scripts/setup-test-env.sh (as root) first",
        home.display()
    );
    let import = Command::new(&python)
        .args(["-c", "import flask, django"])
        .output()
        .expect("the frameworks venv's python runs");
    assert!(
        import.status.success(),
        "the frameworks venv {} cannot import flask and django ({}): remove it and run \
         scripts/setup-test-env.sh again",
        home.display(),
        String::from_utf8_lossy(&import.stderr).trim()
    );
    home
}

/// `PYTHON -m venv --without-pip DEST`, which must succeed; returns `dest`.
pub fn make_venv(python: impl AsRef<Path>, dest: &Path) -> PathBuf {
    crate::process::run(
        Command::new(python.as_ref())
            .args(["-m", "venv", "--without-pip"])
            .arg(dest),
    );
    dest.to_path_buf()
}
