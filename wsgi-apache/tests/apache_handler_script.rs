//! `WSGIHandlerScript` in a real Apache: a handler name (`SetHandler`) whose files are served
//! by a script's `handle_request`, embedded or in a daemon process group, compared with
//! Debian's mod_wsgi.

use std::path::Path;

use wsgi_testkit::apache::{Apache, require_debian_mod_wsgi};
use wsgi_testkit::apps::field;
use wsgi_testkit::fs::scratch_world_readable;

const HANDLER: &str = r#"
import os

def handle_request(environ, start_response):
    with open(environ['SCRIPT_FILENAME'], 'rb') as f:
        data = f.read()
    body = '\n'.join([
        'file=' + environ['SCRIPT_FILENAME'],
        'script_name=' + environ['SCRIPT_NAME'],
        'path_info=' + environ['PATH_INFO'],
        'handler=' + environ['mod_wsgi.request_handler'],
        'handler_script=' + environ['mod_wsgi.handler_script'],
        'group=' + environ['mod_wsgi.application_group'],
        'process_group=' + environ['mod_wsgi.process_group'],
        'callable=' + environ['mod_wsgi.callable_object'],
        'pid=%d' % os.getpid(),
        '',
    ]).encode() + data
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [body]
"#;

/// The handler script, and a folder of pages it serves (`.page` files) next to a plain file.
fn site(dir: &Path, options: &str) -> String {
    std::fs::write(dir.join("handler.wsgi"), HANDLER).unwrap();
    let pages = dir.join("pages");
    std::fs::create_dir_all(&pages).unwrap();
    std::fs::write(pages.join("hello.page"), "hello page\n").unwrap();
    std::fs::write(pages.join("plain.txt"), "plain file\n").unwrap();
    format!(
        "WSGIHandlerScript page-handler {d}/handler.wsgi {options}
DocumentRoot {d}/pages
<Directory {d}/pages>
    Require all granted
    <Files \"*.page\">
        SetHandler page-handler
    </Files>
</Directory>
",
        d = dir.display()
    )
}

#[test]
fn a_handler_script_serves_the_files_of_its_handler() {
    let dir = scratch_world_readable("wsgi-apache-handler-");
    let mut apache = Apache::start(dir.path(), &site(dir.path(), ""));
    let port = apache.port;
    let (status, _, body) = apache.get("/hello.page");
    assert_eq!(status, 200, "{}", apache.error_log());
    let pages = dir.path().join("pages");
    assert_eq!(
        field(&body, "file"),
        pages.join("hello.page").display().to_string()
    );
    assert_eq!(field(&body, "script_name"), "/hello.page");
    assert_eq!(field(&body, "path_info"), "");
    assert_eq!(field(&body, "handler"), "page-handler");
    assert_eq!(
        field(&body, "handler_script"),
        dir.path().join("handler.wsgi").display().to_string()
    );
    assert_eq!(field(&body, "callable"), "handle_request");
    assert_eq!(field(&body, "process_group"), "");
    assert_eq!(
        field(&body, "group"),
        format!("localhost:{port}|/hello.page")
    );
    assert!(String::from_utf8_lossy(&body).ends_with("hello page\n"));
    // A missing file is the script's to handle, as in mod_wsgi (this one fails to open it).
    assert_eq!(apache.get("/missing.page").0, 500);
    assert!(
        apache.error_log().contains("FileNotFoundError"),
        "{}",
        apache.error_log()
    );
    // Files without the handler are Apache's.
    let (status, _, body) = apache.get("/plain.txt");
    assert_eq!(status, 200);
    assert_eq!(body, b"plain file\n");
    apache.stop();
}

#[test]
fn a_handler_script_runs_in_its_daemon_process_group() {
    let dir = scratch_world_readable("wsgi-apache-handler-daemon-");
    let root = dir.path().join("server");
    std::fs::create_dir(&root).unwrap();
    let site = format!(
        "WSGIDaemonProcess pages threads=2\n{}",
        site(
            dir.path(),
            "process-group=pages application-group=%{GLOBAL}"
        )
    );
    let mut apache = Apache::start(&root, &site);
    let (status, _, body) = apache.get("/hello.page");
    assert_eq!(status, 200, "{}", apache.error_log());
    assert_eq!(field(&body, "process_group"), "pages");
    assert_eq!(field(&body, "group"), "");
    let pid: u32 = field(&body, "pid").parse().unwrap();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_ne!(
        comm.trim(),
        "apache2",
        "served by a daemon process, not a child"
    );
    apache.stop();
}

#[test]
fn handler_scripts_match_debians_mod_wsgi() {
    require_debian_mod_wsgi();
    let dir = scratch_world_readable("wsgi-apache-handler-compare-");
    let site = site(dir.path(), "");
    let (ours, theirs) = Apache::ours_and_debians(dir.path(), &site);
    for path in ["/hello.page", "/missing.page", "/plain.txt"] {
        let (o, _, ob) = ours.get(path);
        let (t, _, tb) = theirs.get(path);
        assert_eq!(o, t, "{path}\n{}\n{}", ours.error_log(), theirs.error_log());
        if path == "/hello.page" {
            for key in [
                "file",
                "script_name",
                "path_info",
                "handler",
                "handler_script",
                "callable",
                "process_group",
            ] {
                assert_eq!(field(&ob, key), field(&tb, key), "{key}");
            }
        }
    }
}
