//! Real frameworks through the real server: the `wsgi` binary serves `examples/flask` and
//! `examples/django` (Flask 3 and Django 5 from the frameworks venv that
//! `scripts/setup-test-env.sh` makes) on 127.0.0.1 with a port it picks, and the tests read the
//! pages over real HTTP/1.1. Every wait is bounded; only the children these tests start are
//! killed (by their own pid).

mod util;

use std::path::{Path, PathBuf};
use std::process::Command;

use util::{FRAMEWORKS, Server};

/// Where `scripts/setup-test-env.sh` puts the venv with Flask and Django.
const FRAMEWORKS_VENV: &str = "/var/tmp/wsgi-rs-test/frameworks";

/// The frameworks venv, or a failure that says how to make it (never a skip).
fn frameworks_home() -> PathBuf {
    let home = std::env::var_os("WSGI_RS_FRAMEWORKS_VENV")
        .map_or_else(|| PathBuf::from(FRAMEWORKS_VENV), PathBuf::from);
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

/// `examples/<name>/app.wsgi` of this repository, as an absolute path.
fn example(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
        .join("app.wsgi");
    path.canonicalize()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Asserts that `text` contains every one of `parts`, showing the text when it does not.
#[track_caller]
fn assert_contains(what: &str, text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "{what}: no {part:?} in:\n{text}");
    }
}

/// The Flask example's pages, with `prefix` its mount ("" at the root).
fn check_flask(server: &Server, prefix: &str, home: &Path, group: &str) {
    let r = server.get_strict(&format!("{prefix}/"));
    assert_eq!(r.status, 200, "{}\n{}", r.text(), server.stderr());
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_contains(
        "Flask index",
        &r.text(),
        &[
            "<h1>Flask on wsgi-rs</h1>",
            "Python 3.11.",
            &format!("<form method=\"post\" action=\"{prefix}/greet\">"),
            &format!("href=\"{prefix}/hello/world\""),
        ],
    );

    let r = server.get_strict(&format!("{prefix}/hello/wsgi-rs"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.text(), "Hello, wsgi-rs!\n");

    // The form POST: urlencoded, the name HTML-escaped by Jinja.
    let r = server.request(
        "POST",
        &format!("{prefix}/greet"),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"name=Ada+%3Cb%3ELovelace",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_contains(
        "Flask greet",
        &r.text(),
        &[
            "<p>Hello, Ada &lt;b&gt;Lovelace!</p>",
            &format!("href=\"{prefix}/\""),
        ],
    );
    // The same form with no name is refused by the view, and GET by Flask's routing.
    let r = server.request(
        "POST",
        &format!("{prefix}/greet"),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"name=",
    );
    assert_eq!(r.status, 400);
    assert_contains("Flask 400", &r.text(), &["the form needs a name"]);
    let r = server.get_strict(&format!("{prefix}/greet"));
    assert_eq!(r.status, 405);
    // Flask lists the methods from a set: their order changes from run to run.
    let mut allow: Vec<&str> = r.header("allow").unwrap_or("").split(", ").collect();
    allow.sort_unstable();
    assert_eq!(allow, ["OPTIONS", "POST"]);

    // JSON out: what Python, venv, mount and application group the app runs in.
    let r = server.get_strict(&format!("{prefix}/api/info"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let text = r.text();
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    assert_contains(
        "Flask /api/info",
        &compact,
        &[
            "\"framework\":\"flask\"",
            "\"python\":\"3.11.",
            &format!("\"sys_prefix\":\"{}\"", home.display()),
            &format!("\"script_name\":\"{prefix}\""),
            &format!("\"application_group\":\"{group}\""),
        ],
    );

    // JSON in and out.
    let json = br#"{"numbers": [1, 2, 3], "text": "h\u00e9"}"#;
    let r = server.request(
        "POST",
        &format!("{prefix}/api/echo"),
        &[("Content-Type", "application/json")],
        json,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let compact: String = r.text().chars().filter(|c| !c.is_whitespace()).collect();
    assert_contains(
        "Flask /api/echo",
        &compact,
        &[
            "\"numbers\":[1,2,3]",
            "\"text\":\"h\\u00e9\"",
            &format!("\"length\":{}", json.len()),
        ],
    );
    let r = server.request(
        "POST",
        &format!("{prefix}/api/echo"),
        &[("Content-Type", "text/plain")],
        b"not json",
    );
    assert_eq!(r.status, 415);

    // A path the app does not route: Flask's own 404 page (not the server's).
    let r = server.get_strict(&format!("{prefix}/no/such/page"));
    assert_eq!(r.status, 404);
    assert_contains("Flask 404", &r.text(), &["<h1>Not Found</h1>"]);
}

/// The Django example's pages, with `prefix` its mount ("" at the root).
fn check_django(server: &Server, prefix: &str, group: &str) {
    let r = server.get_strict(&format!("{prefix}/"));
    assert_eq!(r.status, 200, "{}\n{}", r.text(), server.stderr());
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    // Middleware ran (clickjacking protection) and reverse() knows the mount (SCRIPT_NAME).
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_contains(
        "Django index",
        &r.text(),
        &[
            "<h1>Django 5.",
            " on wsgi-rs</h1>",
            "Python 3.11.",
            &format!("application group: {group}</p>"),
            &format!("<a href=\"{prefix}/\">{prefix}/</a>"),
            &format!("you asked for {prefix}/."),
        ],
    );

    // Django's production 404 page (DEBUG is off).
    let r = server.get_strict(&format!("{prefix}/no/such/page/"));
    assert_eq!(r.status, 404);
    assert_contains(
        "Django 404",
        &r.text(),
        &["<h1>Not Found</h1><p>The requested resource was not found on this server.</p>"],
    );

    // ALLOWED_HOSTS: a Host outside it is refused by Django with 400.
    let r = server.request(
        "GET",
        &format!("{prefix}/"),
        &[("Host", "evil.example")],
        b"",
    );
    assert_eq!(r.status, 400);
    assert_contains("Django DisallowedHost", &r.text(), &["Bad Request (400)"]);
}

#[test]
fn flask_example_serves_its_pages() {
    let home = frameworks_home();
    let app = example("flask");
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
    let app = example("django");
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
    let dir = util::scratch_world_readable("wsgi-django-");
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
            flask = example("flask").display(),
            django = example("django").display(),
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
