//! The Flask and Django examples of this repository (`examples/flask`, `examples/django`),
//! and the checks of their pages, the same through any front that serves them (`wsgi serve`,
//! Apache with the module): a [`Front`].

use std::path::{Path, PathBuf};

use crate::http::Response;

/// A server the page checks talk to.
pub trait Front {
    /// One request on a new connection (`Connection: close`) and its response, read as this
    /// front's tests read it.
    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response;

    /// GET `path` with no headers of its own.
    fn get(&self, path: &str) -> Response {
        self.request("GET", path, &[], b"")
    }

    /// What the server logged so far, shown when a check fails.
    fn log(&self) -> String;

    /// A word the server's own error pages carry, which an application's pages must not: the
    /// checks then make sure the application, not the server, answered. None: no such check.
    fn own_pages_word(&self) -> Option<&'static str> {
        None
    }
}

/// `examples/<name>` of this repository, as an absolute path.
pub fn example_dir(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name);
    path.canonicalize()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `examples/<name>/app.wsgi` of this repository, as an absolute path.
pub fn example_script(name: &str) -> PathBuf {
    let path = example_dir(name).join("app.wsgi");
    path.canonicalize()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Asserts that `text` contains every one of `parts`, showing the text when it does not.
#[track_caller]
pub fn assert_contains(what: &str, text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "{what}: no {part:?} in:\n{text}");
    }
}

/// `text` without its white space (JSON compared whatever its formatting).
pub fn compact(text: &str) -> String {
    text.chars().filter(|c| !c.is_whitespace()).collect()
}

/// Checks that the application, not the server, answered `r` (see [`Front::own_pages_word`]).
fn not_the_servers_page(front: &impl Front, r: &Response) {
    if let Some(word) = front.own_pages_word() {
        assert!(!r.text().contains(word), "{}", r.text());
    }
}

/// The Flask example's pages, with `prefix` its mount ("" at the root), `home` the venv it
/// runs in and `group` its application group.
pub fn check_flask(front: &impl Front, prefix: &str, home: &Path, group: &str) {
    let r = front.get(&format!("{prefix}/"));
    assert_eq!(r.status, 200, "{}\n{}", r.text(), front.log());
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

    let r = front.get(&format!("{prefix}/hello/wsgi-rs"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.text(), "Hello, wsgi-rs!\n");

    // The form POST: urlencoded, the name HTML-escaped by Jinja.
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let r = front.request(
        "POST",
        &format!("{prefix}/greet"),
        &form,
        b"name=Ada+%3Cb%3ELovelace",
    );
    assert_eq!(r.status, 200, "{}\n{}", r.text(), front.log());
    assert_contains(
        "Flask greet",
        &r.text(),
        &[
            "<p>Hello, Ada &lt;b&gt;Lovelace!</p>",
            &format!("href=\"{prefix}/\""),
        ],
    );
    // The same form with no name is refused by the view, and GET by Flask's routing.
    let r = front.request("POST", &format!("{prefix}/greet"), &form, b"name=");
    assert_eq!(r.status, 400);
    assert_contains("Flask 400", &r.text(), &["the form needs a name"]);
    let r = front.get(&format!("{prefix}/greet"));
    assert_eq!(r.status, 405);
    // Flask lists the methods from a set: their order changes from run to run.
    let mut allow: Vec<&str> = r.header("allow").unwrap_or("").split(", ").collect();
    allow.sort_unstable();
    assert_eq!(allow, ["OPTIONS", "POST"]);

    // JSON out: what Python, venv, mount and application group the app runs in.
    let r = front.get(&format!("{prefix}/api/info"));
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
    let r = front.request(
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
    let r = front.request(
        "POST",
        &format!("{prefix}/api/echo"),
        &[("Content-Type", "text/plain")],
        b"not json",
    );
    assert_eq!(r.status, 415);

    // A path the app does not route: Flask's own 404 page (not the server's).
    let r = front.get(&format!("{prefix}/no/such/page"));
    assert_eq!(r.status, 404);
    assert_contains("Flask 404", &r.text(), &["<h1>Not Found</h1>"]);
    not_the_servers_page(front, &r);
}

/// The Django example's pages, with `prefix` its mount ("" at the root) and `group` its
/// application group.
pub fn check_django(front: &impl Front, prefix: &str, group: &str) {
    let r = front.get(&format!("{prefix}/"));
    assert_eq!(r.status, 200, "{}\n{}", r.text(), front.log());
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

    // Django's production 404 page (DEBUG is off), not the server's.
    let r = front.get(&format!("{prefix}/no/such/page/"));
    assert_eq!(r.status, 404);
    assert_contains(
        "Django 404",
        &r.text(),
        &["<h1>Not Found</h1><p>The requested resource was not found on this server.</p>"],
    );
    not_the_servers_page(front, &r);

    // ALLOWED_HOSTS: a Host outside it is refused by Django with 400.
    let r = front.request(
        "GET",
        &format!("{prefix}/"),
        &[("Host", "evil.example")],
        b"",
    );
    assert_eq!(r.status, 400);
    assert_contains("Django DisallowedHost", &r.text(), &["Bad Request (400)"]);
}
