//! `scripts/pgo_train.py`, the training run of a profile-guided build (`scripts/pgo.sh`),
//! against this build's `wsgi`: every phase must start its server, get every answer it checks
//! and see the server exit by itself on SIGTERM (an instrumented program writes its profile
//! at exit), or the script fails. With `--quick` it sends a twentieth of its requests.

#[path = "util/tls.rs"]
mod tls_util;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use wsgi_testkit::{fs, process};

/// The phases the script reports, each `NAME: done in ...`.
const PHASES: &[&str] = &[
    "embedded hello, keep-alive",
    "embedded hello, a connection each",
    "embedded 64 KiB POST, with Content-Length and chunked",
    "embedded 1 MiB streamed",
    "embedded 1 MiB file_wrapper",
    "HTTP/2 (h2c) GET and POST",
    "a --config site: two mounts, static files, an access log",
    "daemon 1x16 hello",
    "daemon 1x16 64 KiB POST",
    "daemon 2x8 hello",
    "daemon 2x8 64 KiB POST",
    "TLS GET and POST",
];

#[test]
fn the_training_run_drives_every_phase_and_checks_every_answer() {
    let dir = fs::scratch_world_readable("wsgi-pgo-train-");
    let issued = tls_util::issue(dir.path(), "train", &["127.0.0.1"], false);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/pgo_train.py");
    let mut child = Command::new("python3")
        .arg(&script)
        .arg("--quick")
        .arg("--tls-cert")
        .arg(&issued.cert)
        .arg("--tls-key")
        .arg(&issued.key)
        .arg(env!("CARGO_BIN_EXE_wsgi"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs scripts/pgo_train.py");
    let stdout = process::Captured::spawn(child.stdout.take().unwrap());
    let stderr = process::Captured::spawn(child.stderr.take().unwrap());
    let status = process::wait_exit(&mut child, Duration::from_secs(600));
    if status.is_none() {
        process::stop(&mut child, Duration::from_secs(60));
    }
    stdout.settle(Duration::from_secs(10));
    stderr.settle(Duration::from_secs(10));
    let printed = format!("{}{}", stdout.text(), stderr.text());
    let status =
        status.unwrap_or_else(|| panic!("the training run took over 10 minutes:\n{printed}"));
    assert!(
        status.success(),
        "the training run failed ({status}):\n{printed}"
    );
    for phase in PHASES {
        assert!(
            printed.contains(&format!("{phase}: done in ")),
            "phase `{phase}` did not run:\n{printed}"
        );
    }
    // h2load is among what the tests install (scripts/setup-test-env.sh).
    assert!(
        printed.contains("(h2load)"),
        "HTTP/2 went without h2load:\n{printed}"
    );
}
