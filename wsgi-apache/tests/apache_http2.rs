//! HTTP/2 under Apache: mod_http2 (`Protocols h2c http/1.1`) in front of mod_wsgi_rs, in
//! embedded and daemon mode, and Debian's mod_wsgi with the same httpd.conf (but for the
//! `LoadModule` line): the same environ, uploads read whole (64 KiB, 10 MiB) and a streamed
//! 1 MiB response, with curl speaking h2c with prior knowledge. mod_http2 runs each request on
//! a secondary connection of its own, so nothing may assume one request per connection or the
//! HTTP/1 connection's filters.

use std::path::Path;

use wsgi_testkit::apache::{Apache, require_debian_mod_wsgi};
use wsgi_testkit::apps::{PROTOCOL_APP, fields};
use wsgi_testkit::curl::{check_bodies, curl};
use wsgi_testkit::fs::scratch_world_readable;

/// mod_http2 with h2c, the app in embedded mode under `/embedded` and in a daemon group under
/// `/daemon`.
fn site(dir: &Path) -> String {
    std::fs::write(dir.join("app.wsgi"), PROTOCOL_APP).unwrap();
    format!(
        "LoadModule http2_module /usr/lib/apache2/modules/mod_http2.so
Protocols h2c http/1.1
WSGIDaemonProcess h2 threads=4
WSGIScriptAlias /embedded {d}/app.wsgi
WSGIScriptAlias /daemon {d}/app.wsgi process-group=h2 application-group=%{{GLOBAL}}
<Directory {d}>
    Require all granted
</Directory>
",
        d = dir.display()
    )
}

/// The environ `/env` answers over h2c, the port replaced by `PORT` (the two servers listen on
/// different ports).
fn environ(apache: &Apache, prefix: &str) -> String {
    let target = format!(
        "http://127.0.0.1:{}{prefix}/env/caf%C3%A9?x=1&y=%20",
        apache.port
    );
    let got = curl(&["--http2-prior-knowledge", "-H", "X-Test: yes", &target]);
    assert!(got.ok, "{}\n{}", got.stderr, apache.error_log());
    assert_eq!(got.version, "2");
    got.text().replace(&apache.port.to_string(), "PORT")
}

#[test]
fn h2c_through_mod_http2_in_embedded_and_daemon_mode_as_mod_wsgi() {
    let dir = scratch_world_readable("wsgi-apache-http2-");
    let site = site(dir.path());
    let root = dir.path().join("ours");
    std::fs::create_dir(&root).unwrap();
    let ours = Apache::start(&root, &site);
    for prefix in ["/embedded", "/daemon"] {
        let env = environ(&ours, prefix);
        let values = fields(env.as_bytes());
        assert_eq!(values["SERVER_PROTOCOL"], "HTTP/2.0", "{env}");
        assert_eq!(values["HTTP_HOST"], "127.0.0.1:PORT", "{env}");
        assert_eq!(
            values["REQUEST_URI"],
            format!("{prefix}/env/caf%C3%A9?x=1&y=%20")
        );
        assert_eq!(values["SCRIPT_NAME"], prefix);
        assert_eq!(values["HTTP_X_TEST"], "yes");
        let base = format!("http://127.0.0.1:{}{prefix}", ours.port);
        check_bodies(dir.path(), &base, &["--http2-prior-knowledge"], "2");
        // HTTP/1.1 beside it.
        let one = curl(&["--http1.1", &format!("{base}/env")]);
        assert!(one.ok && one.version == "1.1", "{}", one.stderr);
    }
    require_debian_mod_wsgi();
    let theirs_root = dir.path().join("theirs");
    std::fs::create_dir(&theirs_root).unwrap();
    let load = format!(
        "LoadModule wsgi_module {}",
        wsgi_testkit::apache::DEBIAN_MOD_WSGI
    );
    let theirs = Apache::start_with_module(&theirs_root, &load, &site);
    for prefix in ["/embedded", "/daemon"] {
        assert_eq!(environ(&ours, prefix), environ(&theirs, prefix), "{prefix}");
        let base = format!("http://127.0.0.1:{}{prefix}", theirs.port);
        check_bodies(dir.path(), &base, &["--http2-prior-knowledge"], "2");
    }
}
