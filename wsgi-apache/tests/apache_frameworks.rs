//! Real frameworks through our module in a real Apache: the Flask and Django examples of this
//! repository (examples/{flask,django}/app.wsgi), with Flask 3 and Django 5 from the frameworks
//! venv that scripts/setup-test-env.sh makes, in embedded mode (two mounts, two
//! sub-interpreters in the Apache child) and in daemon mode (`WSGIDaemonProcess python-home=`).

use std::path::{Path, PathBuf};
use std::process::Command;

use wsgi_testkit::apache::{Apache, Mpm};
use wsgi_testkit::frameworks::{check_django, check_flask, example_dir};
use wsgi_testkit::fs::scratch_world_readable;
use wsgi_testkit::process;
use wsgi_testkit::venvs::frameworks_home;

/// `examples/<name>` of this repository. Apache's children run as www-data: the tests need
/// them readable by that user, which holds for /work/main (checked here, with a clear message).
fn example(name: &str) -> PathBuf {
    let path = example_dir(name);
    let script = path.join("app.wsgi");
    let readable = Command::new("su")
        .args(["-s", "/bin/sh", "www-data", "-c"])
        .arg(format!("cat {} > /dev/null", script.display()))
        .status()
        .unwrap();
    assert!(
        readable.success(),
        "www-data cannot read {}: Apache's children could not load it",
        script.display()
    );
    path
}

/// The processes whose parent is `parent`: (pid, command line with NULs as spaces).
fn children(parent: u32) -> Vec<(u32, String)> {
    process::children(parent)
        .into_iter()
        .map(|pid| (pid, process::cmdline(pid)))
        .collect()
}

/// Whether process `pid` has the Flask example's C extension (markupsafe's) loaded, from
/// the venv: it tells in which process Flask runs.
fn runs_flask(pid: u32, home: &Path) -> bool {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    maps.lines().any(|l| {
        l.contains(&format!("{}/lib/", home.display())) && l.contains("markupsafe/_speedups")
    })
}

/// Both examples mounted side by side, with `extra` (daemon directives) before the mounts.
fn site(flask: &Path, django: &Path, extra: &str) -> String {
    format!(
        "{extra}WSGIScriptAlias /flask {f}/app.wsgi
WSGIScriptAlias /django {d}/app.wsgi
<Directory {f}>
    Require all granted
</Directory>
<Directory {d}>
    Require all granted
</Directory>
",
        f = flask.display(),
        d = django.display()
    )
}

/// Both examples embedded, each in its own sub-interpreter, with the frameworks venv as home.
fn embedded_site(home: &Path) -> String {
    format!(
        "WSGIPythonHome {}\n{}",
        home.display(),
        site(&example("flask"), &example("django"), "")
    )
}

/// The Flask and Django pages of [`embedded_site`], each in its default application group.
fn check_both_embedded(apache: &Apache, home: &Path) {
    let port = apache.port;
    check_flask(apache, "/flask", home, &format!("localhost:{port}|/flask"));
    check_django(apache, "/django", &format!("localhost:{port}|/django"));
}

#[test]
fn flask_and_django_embedded_in_two_sub_interpreters() {
    let home = frameworks_home();
    let dir = scratch_world_readable("wsgi-apache-frameworks-");
    let mut apache = Apache::start(dir.path(), &embedded_site(&home));
    let port = apache.port;
    check_both_embedded(&apache, &home);
    // Interleaved once more: each interpreter still serves its own framework.
    check_flask(
        &apache,
        "/flask",
        &home,
        &format!("localhost:{port}|/flask"),
    );
    assert!(
        !apache.error_log().contains("Traceback"),
        "{}",
        apache.error_log()
    );
    // Embedded: Flask runs in the (one) Apache child itself.
    let kids = children(apache.pid());
    assert!(
        kids.iter().any(|(pid, _)| runs_flask(*pid, &home)),
        "no Apache child runs Flask: {kids:?}"
    );
    let took = apache.stop();
    assert!(took.as_secs() < 5, "stopping took {took:?}");
}

/// The same apps under the other MPMs Debian ships: mpm_prefork (single-threaded children, each
/// with its own pair of sub-interpreters) and mpm_worker (threaded children, no event loop).
#[test]
fn flask_and_django_embedded_under_prefork_and_worker() {
    let home = frameworks_home();
    for mpm in [Mpm::Prefork, Mpm::Worker] {
        let dir = scratch_world_readable("wsgi-apache-frameworks-mpm-");
        let mut apache = Apache::start_mpm(dir.path(), mpm, &embedded_site(&home));
        check_both_embedded(&apache, &home);
        assert!(
            !apache.error_log().contains("Traceback"),
            "{mpm:?}: {}",
            apache.error_log()
        );
        let took = apache.stop();
        assert!(took.as_secs() < 5, "{mpm:?}: stopping took {took:?}");
    }
}

#[test]
fn flask_and_django_in_a_daemon_process_group_with_python_home() {
    let home = frameworks_home();
    let (flask, django) = (example("flask"), example("django"));
    let dir = scratch_world_readable("wsgi-apache-frameworks-");
    let root = dir.path().join("server");
    std::fs::create_dir(&root).unwrap();
    let daemon = format!(
        "WSGIDaemonProcess frameworks processes=2 threads=4 display-name=%{{GROUP}} python-home={}
WSGIProcessGroup frameworks
",
        home.display()
    );
    let mut apache = Apache::start(&root, &site(&flask, &django, &daemon));
    let port = apache.port;
    // Twice: the second time with the apps loaded.
    for _ in 0..2 {
        check_flask(
            &apache,
            "/flask",
            &home,
            &format!("localhost:{port}|/flask"),
        );
        check_django(&apache, "/django", &format!("localhost:{port}|/django"));
    }
    // Daemon mode: Flask runs in a daemon process, never in an Apache child.
    let kids = children(apache.pid());
    let (daemons, others): (Vec<_>, Vec<_>) = kids
        .iter()
        .partition(|(_, cmdline)| cmdline.starts_with("(wsgi:frameworks)"));
    assert_eq!(daemons.len(), 2, "{kids:?}");
    assert!(
        daemons.iter().any(|(pid, _)| runs_flask(*pid, &home)),
        "no daemon process runs Flask: {kids:?}"
    );
    assert!(
        !others.iter().any(|(pid, _)| runs_flask(*pid, &home)),
        "an Apache child runs Flask: {kids:?}"
    );
    let took = apache.stop();
    assert!(took.as_secs() < 5, "stopping took {took:?}");
}
