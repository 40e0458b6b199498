//! Real frameworks through our module in a real Apache: the Flask and Django examples of this
//! repository (examples/{flask,django}/app.wsgi), with Flask 3 and Django 5 from the frameworks
//! venv that scripts/setup-test-env.sh makes, in embedded mode (two mounts, two
//! sub-interpreters in the Apache child) and in daemon mode (`WSGIDaemonProcess python-home=`).

mod util;

use std::path::{Path, PathBuf};
use std::process::Command;

use util::{Apache, Mpm, header, scratch};

const FRAMEWORKS_VENV: &str = "/var/tmp/wsgi-rs-test/frameworks";

/// The frameworks venv, or a failure that says how to make it (never a skip).
fn frameworks_home() -> PathBuf {
    let home = PathBuf::from(FRAMEWORKS_VENV);
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

/// `examples/<name>` of this repository. Apache's children run as www-data: the tests need
/// them readable by that user, which holds for /work/main (checked here, with a clear message).
fn example(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
        .canonicalize()
        .unwrap();
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

struct Response {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Response {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }

    fn header(&self, name: &str) -> Option<&str> {
        header(&self.head, name)
    }
}

fn request(
    apache: &Apache,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let (status, head, body) = apache.request(method, path, headers, body);
    Response { status, head, body }
}

fn get(apache: &Apache, path: &str) -> Response {
    request(apache, "GET", path, &[], b"")
}

fn assert_contains(what: &str, text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "{what}: no {part:?} in:\n{text}");
    }
}

fn compact(text: &str) -> String {
    text.chars().filter(|c| !c.is_whitespace()).collect()
}

/// The Flask example's pages, mounted at `prefix`.
fn check_flask(apache: &Apache, prefix: &str, home: &Path, group: &str) {
    let r = get(apache, &format!("{prefix}/"));
    assert_eq!(r.status, 200, "{}\n{}", r.text(), apache.error_log());
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

    let r = get(apache, &format!("{prefix}/hello/wsgi-rs"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.text(), "Hello, wsgi-rs!\n");

    // The form POST: urlencoded, the name HTML-escaped by Jinja.
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let r = request(
        apache,
        "POST",
        &format!("{prefix}/greet"),
        &form,
        b"name=Ada+%3Cb%3ELovelace",
    );
    assert_eq!(r.status, 200, "{}\n{}", r.text(), apache.error_log());
    assert_contains(
        "Flask greet",
        &r.text(),
        &[
            "<p>Hello, Ada &lt;b&gt;Lovelace!</p>",
            &format!("href=\"{prefix}/\""),
        ],
    );
    let r = request(apache, "POST", &format!("{prefix}/greet"), &form, b"name=");
    assert_eq!(r.status, 400);
    assert_contains("Flask 400", &r.text(), &["the form needs a name"]);
    let r = get(apache, &format!("{prefix}/greet"));
    assert_eq!(r.status, 405);
    let mut allow: Vec<&str> = r.header("allow").unwrap_or("").split(", ").collect();
    allow.sort_unstable();
    assert_eq!(allow, ["OPTIONS", "POST"]);

    // JSON out: the Python, venv, mount and application group the app runs in.
    let r = get(apache, &format!("{prefix}/api/info"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_contains(
        "Flask /api/info",
        &compact(&r.text()),
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
    let r = request(
        apache,
        "POST",
        &format!("{prefix}/api/echo"),
        &[("Content-Type", "application/json")],
        json,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_contains(
        "Flask /api/echo",
        &compact(&r.text()),
        &[
            "\"numbers\":[1,2,3]",
            "\"text\":\"h\\u00e9\"",
            &format!("\"length\":{}", json.len()),
        ],
    );
    let r = request(
        apache,
        "POST",
        &format!("{prefix}/api/echo"),
        &[("Content-Type", "text/plain")],
        b"not json",
    );
    assert_eq!(r.status, 415);

    // A path the app does not route: Flask's own 404 page (not Apache's).
    let r = get(apache, &format!("{prefix}/no/such/page"));
    assert_eq!(r.status, 404);
    assert_contains("Flask 404", &r.text(), &["<h1>Not Found</h1>"]);
    assert!(!r.text().contains("Apache"), "{}", r.text());
}

/// The Django example's pages, mounted at `prefix`.
fn check_django(apache: &Apache, prefix: &str, group: &str) {
    let r = get(apache, &format!("{prefix}/"));
    assert_eq!(r.status, 200, "{}\n{}", r.text(), apache.error_log());
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

    // Django's production 404 page (DEBUG is off), not Apache's.
    let r = get(apache, &format!("{prefix}/no/such/page/"));
    assert_eq!(r.status, 404);
    assert_contains(
        "Django 404",
        &r.text(),
        &["<h1>Not Found</h1><p>The requested resource was not found on this server.</p>"],
    );
    assert!(!r.text().contains("Apache"), "{}", r.text());

    // ALLOWED_HOSTS: a Host outside it is refused by Django with 400.
    let r = request(
        apache,
        "GET",
        &format!("{prefix}/"),
        &[("Host", "evil.example")],
        b"",
    );
    assert_eq!(r.status, 400);
    assert_contains("Django DisallowedHost", &r.text(), &["Bad Request (400)"]);
}

/// The processes whose parent is `parent`: (pid, command line with NULs as spaces).
fn children(parent: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) {
            let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .unwrap_or_default()
                .replace('\0', " ");
            out.push((pid, cmdline));
        }
    }
    out
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
    let dir = scratch("wsgi-apache-frameworks-");
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
        let dir = scratch("wsgi-apache-frameworks-mpm-");
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
    let dir = scratch("wsgi-apache-frameworks-");
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
