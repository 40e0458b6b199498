//! `ErrorLog` and `CustomLog` under `wsgi serve --config`: the main server's error log, a
//! virtual host's own (for its embedded applications and for the daemon process groups
//! defined in it), and SIGUSR1 reopening every log file (log rotation).

mod util;

use std::path::Path;
use std::time::{Duration, Instant};

use util::Server;
use wsgi_testkit::{fs, wait};

/// The text of `path` once it contains `needle` (waiting at most 15 s); what it holds
/// otherwise.
fn wait_for(path: &Path, needle: &str) -> String {
    wait::file_text_when(path, Duration::from_secs(15), |text| text.contains(needle))
}

#[test]
fn error_logs_per_virtual_host_and_reopened_on_sigusr1() {
    let dir = fs::scratch_world_readable("wsgi-logs-");
    let d = dir.path().display().to_string();
    let app = fs::write_world_readable(
        &dir.path().join("app.wsgi"),
        "import sys\n\
         def application(environ, start_response):\n    \
             where = '%s %s' % (environ['SERVER_NAME'], environ['SCRIPT_NAME'])\n    \
             print('wsgi.errors from', where, file=environ['wsgi.errors'])\n    \
             print('sys.stderr from', where, file=sys.stderr)\n    \
             start_response('200 OK', [('Content-Type', 'text/plain')])\n    \
             return [b'ok']\n",
    );
    let conf = fs::write_world_readable(
        &dir.path().join("site.conf"),
        &format!(
            "ErrorLog {d}/main-error.log\n\
             CustomLog {d}/access.log \"%v %U %>s\"\n\
             <VirtualHost *>\n    ServerName main.test\n    WSGIScriptAlias /app {app}\n</VirtualHost>\n\
             <VirtualHost *>\n    ServerName vhost.test\n    ErrorLog {d}/vhost-error.log\n    \
             WSGIDaemonProcess vd threads=2\n    \
             WSGIScriptAlias /app {app}\n    \
             WSGIScriptAlias /d {app} process-group=vd application-group=%{{GLOBAL}}\n\
             </VirtualHost>\n",
            app = app.display()
        ),
    );
    // As root it serves as www-data (the daemon group would refuse to run as root).
    let launch = util::Launch {
        allow_root: false,
        ..util::PLAIN
    };
    let server = Server::start_with(
        &launch,
        &["--config", conf.to_str().unwrap(), "--port", "0"],
    );
    let get = |host: &str, path: &str| {
        let r = server.request("GET", path, &[("Host", host)], b"");
        assert_eq!(r.status, 200, "{host} {path}");
    };
    get("main.test", "/app");
    get("vhost.test", "/app");
    get("vhost.test", "/d");
    let main_log = dir.path().join("main-error.log");
    let vhost_log = dir.path().join("vhost-error.log");
    let access_log = dir.path().join("access.log");
    let main = wait_for(&main_log, "sys.stderr from main.test /app");
    assert!(main.contains("wsgi.errors from main.test /app"), "{main}");
    let vhost = wait_for(&vhost_log, "sys.stderr from vhost.test /d");
    for line in [
        "wsgi.errors from vhost.test /app",
        "sys.stderr from vhost.test /app",
        "wsgi.errors from vhost.test /d",
    ] {
        assert!(vhost.contains(line), "{line} in\n{vhost}");
    }
    assert!(!vhost.contains("main.test"), "{vhost}");
    assert!(!main.contains("vhost.test"), "{main}");
    // The main ErrorLog is the server's stderr: nothing reaches the terminal's.
    assert!(!server.stderr().contains("from"), "{}", server.stderr());
    let access = wait_for(&access_log, "vhost.test /d 200");
    assert!(
        access.starts_with("main.test /app 200\nvhost.test /app 200\n"),
        "{access}"
    );

    // Rotation: the files are moved away, SIGUSR1 has the server open them again.
    for log in [&main_log, &vhost_log, &access_log] {
        std::fs::rename(log, log.with_extension("log.1")).unwrap();
    }
    server.sigusr1();
    let deadline = Instant::now() + Duration::from_secs(30);
    // The master opens the new files before the new front serves: wait for a request the
    // new front answered (the old one writes to the renamed files until it stops).
    while !std::fs::read_to_string(&access_log).is_ok_and(|t| !t.is_empty()) {
        assert!(
            Instant::now() < deadline,
            "no new access log line after SIGUSR1"
        );
        std::thread::sleep(Duration::from_millis(100));
        get("main.test", "/app");
    }
    // Until the old front has stopped, a request may still reach it (and its renamed files).
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let wanted = [
        (&main_log, "wsgi.errors from main.test /app"),
        (&vhost_log, "wsgi.errors from vhost.test /app"),
        (&vhost_log, "wsgi.errors from vhost.test /d"),
        (&access_log, "vhost.test /app 200"),
        (&access_log, "vhost.test /d 200"),
    ];
    loop {
        get("main.test", "/app");
        get("vhost.test", "/app");
        get("vhost.test", "/d");
        std::thread::sleep(Duration::from_millis(100));
        if wanted.iter().all(|(p, line)| read(p).contains(line)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after SIGUSR1:\nmain:\n{}\nvhost:\n{}\naccess:\n{}",
            read(&main_log),
            read(&vhost_log),
            read(&access_log)
        );
    }
    assert!(read(&main_log).contains("SIGUSR1"), "{}", read(&main_log));
}
