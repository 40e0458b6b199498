//! Real frameworks through the real server: the `wsgi` binary serves `examples/flask` and
//! `examples/django` (Flask 3 and Django 5 from the frameworks venv that
//! `scripts/setup-test-env.sh` makes) on 127.0.0.1 with a port it picks, and the tests read the
//! pages over real HTTP/1.1. Every wait is bounded; only the children these tests start are
//! killed (by their own pid).

mod util;

use std::path::{Path, PathBuf};
use std::process::Command;

use util::{FRAMEWORKS, Server};
use wsgi_testkit::frameworks::{assert_contains, check_django, check_flask, example_script};
use wsgi_testkit::fs;
use wsgi_testkit::venvs::frameworks_home;

#[test]
fn flask_example_serves_its_pages() {
    let home = frameworks_home();
    let app = example_script("flask");
    let server = Server::start_with(
        &FRAMEWORKS,
        &[
            app.to_str().unwrap(),
            "--python-home",
            home.to_str().unwrap(),
        ],
    );
    // `wsgi serve app.wsgi` runs in the main interpreter (%{GLOBAL}: the group name is "").
    check_flask(&server, "", &home, "");
}

#[test]
fn django_example_serves_its_pages() {
    let home = frameworks_home();
    let app = example_script("django");
    let server = Server::start_with(
        &FRAMEWORKS,
        &[
            app.to_str().unwrap(),
            "--python-home",
            home.to_str().unwrap(),
        ],
    );
    check_django(&server, "", "(none)");
}

/// A stock `django-admin startproject` folder served as gunicorn users serve it:
/// `wsgi serve mysite.wsgi:application` from the project folder, nothing written by hand.
#[test]
fn a_startproject_folder_is_served_by_its_module_name() {
    let home = frameworks_home();
    let dir = fs::scratch_world_readable("wsgi-django-");
    let made = Command::new(home.join("bin/python"))
        .args(["-m", "django", "startproject", "mysite"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    for entry in walk(dir.path()) {
        let mode = if entry.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(&entry, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .unwrap();
    }
    let server = Server::start_with(
        &FRAMEWORKS,
        &[
            "mysite.wsgi:application",
            "--chdir",
            dir.path().to_str().unwrap(),
            "--python-home",
            home.to_str().unwrap(),
        ],
    );
    // DEBUG is on in a new project: its welcome page, and its technical 404 for the rest.
    let r = server.request("GET", "/", &[("Host", "localhost")], b"");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), server.stderr());
    assert_contains(
        "Django welcome",
        &r.text(),
        &["The install worked successfully!"],
    );
    let r = server.request("GET", "/admin/login/", &[("Host", "localhost")], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_contains("Django admin", &r.text(), &["Django administration"]);
}

/// Every file and folder under `root`.
fn walk(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path.clone());
            }
            found.push(path);
        }
    }
    found
}

/// Reports its application group and whether Flask and Django are loaded in its interpreter.
const PROBE: &str = r#"
import sys

def application(environ, start_response):
    body = ('group=%s flask=%s django=%s' % (
        environ.get('mod_wsgi.application_group'),
        'flask' in sys.modules,
        'django' in sys.modules,
    )).encode()
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])
    return [body]
"#;

/// Both apps in one server from one Apache-style site file, each mounted with its own
/// application group, so each runs in a sub-interpreter of its own.
#[test]
fn flask_and_django_side_by_side_in_two_sub_interpreters() {
    let home = frameworks_home();
    let dir = tempfile::Builder::new()
        .prefix("wsgi-frameworks-test-")
        .tempdir_in("/var/tmp")
        .unwrap();
    // A probe mounted into each group: it reports which frameworks its interpreter has loaded.
    let probe = dir.path().join("probe.wsgi");
    std::fs::write(&probe, PROBE).unwrap();
    let conf = dir.path().join("site.conf");
    std::fs::write(
        &conf,
        format!(
            "WSGIPythonHome {home}\n\
             WSGIScriptAlias /flask {flask} application-group=flask-group\n\
             WSGIScriptAlias /django {django} application-group=django-group\n\
             WSGIScriptAlias /probe-flask {probe} application-group=flask-group\n\
             WSGIScriptAlias /probe-django {probe} application-group=django-group\n",
            home = home.display(),
            flask = example_script("flask").display(),
            django = example_script("django").display(),
            probe = probe.display(),
        ),
    )
    .unwrap();
    let server = Server::start_with(&FRAMEWORKS, &["--config", conf.to_str().unwrap()]);
    check_flask(&server, "/flask", &home, "flask-group");
    check_django(&server, "/django", "django-group");
    // Interleaved again after both are loaded: each keeps answering from its own interpreter.
    for _ in 0..3 {
        assert_eq!(
            server.get_strict("/flask/hello/again").text(),
            "Hello, again!\n"
        );
        let r = server.get_strict("/django/");
        assert_eq!(r.status, 200);
        assert_contains(
            "Django again",
            &r.text(),
            &["application group: django-group</p>"],
        );
    }
    // Two interpreters: each has loaded its own framework and not the other one.
    assert_eq!(
        server.get_strict("/probe-flask").text(),
        "group=flask-group flask=True django=False"
    );
    assert_eq!(
        server.get_strict("/probe-django").text(),
        "group=django-group flask=False django=True"
    );
    // Outside both mounts: the server's own 404.
    assert_eq!(server.get_strict("/elsewhere").status, 404);
}

/// numpy (in the frameworks venv) loads into only one interpreter per process: the second
/// application group that imports it gets a 500, and the log says why and points to
/// `%{GLOBAL}`.
#[test]
fn a_single_interpreter_extension_in_a_second_group_is_explained() {
    let home = frameworks_home();
    let dir = tempfile::Builder::new()
        .prefix("wsgi-frameworks-test-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let app = dir.path().join("numpy_app.wsgi");
    std::fs::write(
        &app,
        "import warnings\nwarnings.simplefilter('ignore')\nimport numpy\n\ndef application(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [str(numpy.arange(3).sum()).encode()]\n",
    )
    .unwrap();
    let conf = dir.path().join("site.conf");
    std::fs::write(
        &conf,
        format!(
            "WSGIPythonHome {home}\n\
             WSGIScriptAlias /first {app} application-group=first\n\
             WSGIScriptAlias /second {app} application-group=second\n",
            home = home.display(),
            app = app.display(),
        ),
    )
    .unwrap();
    let server = Server::start_with(&FRAMEWORKS, &["--config", conf.to_str().unwrap()]);
    let first = server.get_strict("/first");
    assert_eq!(first.status, 200, "{}", server.stderr());
    assert_eq!(first.text(), "3");
    let second = server.get_strict("/second");
    assert_eq!(second.status, 500);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !server.stderr().contains("WSGIApplicationGroup %{GLOBAL}")
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let log = server.stderr();
    assert_contains(
        "the error log",
        &log,
        &[
            "loads into only one Python interpreter per process",
            "WSGIApplicationGroup %{GLOBAL}",
        ],
    );
}
