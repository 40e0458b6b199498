//! `wsgi serve --config` against the oracle: the same site served by Debian's Apache with
//! Debian's mod_wsgi 4.9.4 (started on 127.0.0.1 by the test, children as www-data), the same
//! requests, the same answers.

#[path = "../../wsgi-apache/tests/util/mod.rs"]
mod apache;
mod util;

use std::path::Path;

use util::Server;

/// Debian's mod_wsgi, as a `LoadModule` line.
fn debian_mod_wsgi() -> String {
    format!("LoadModule wsgi_module {}", apache::DEBIAN_MOD_WSGI)
}

/// Serves `site` with `wsgi serve --config` (as root: as www-data, like Apache's children).
fn serve(dir: &Path, site: &str) -> Server {
    let conf = util::write_world_readable(&dir.join("serve.conf"), site);
    let launch = util::Launch {
        allow_root: false,
        ..util::PLAIN
    };
    Server::start_with(
        &launch,
        &["--config", conf.to_str().unwrap(), "--port", "0"],
    )
}

/// An app answering with the environ's values for `keys`, one `NAME=value` line each.
fn environ_app(dir: &Path, keys: &[&str]) -> std::path::PathBuf {
    let keys: Vec<String> = keys.iter().map(|k| format!("{k:?}")).collect();
    util::write_world_readable(
        &dir.join("env.wsgi"),
        &format!(
            "KEYS = [{}]\n\ndef application(environ, start_response):\n    body = ''.join('%s=%s\\n' % (k, environ.get(k, '<unset>')) for k in KEYS).encode()\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [body]\n",
            keys.join(", ")
        ),
    )
}

/// `SetEnv`, `UnsetEnv`, `SetEnvIf`, `SetEnvIfNoCase`, `BrowserMatch` reach the environ as
/// mod_wsgi passes them, per location, and the request's own CGI variables win over them.
#[test]
fn environment_directives_as_mod_wsgi() {
    if !apache::have_debian_mod_wsgi() {
        return;
    }
    let dir = util::scratch_world_readable("wsgi-oracle-");
    let keys = [
        "SITE_NAME",
        "REMOVED",
        "SECTION",
        "CURL",
        "MOZILLA",
        "LOCAL",
        "NOT_LOCAL",
        "REQUEST_METHOD",
        "HTTP_X_TOKEN",
    ];
    let app = environ_app(dir.path(), &keys);
    let site = format!(
        r#"LoadModule env_module /usr/lib/apache2/modules/mod_env.so
LoadModule setenvif_module /usr/lib/apache2/modules/mod_setenvif.so
SetEnv SITE_NAME example
SetEnv REMOVED yes
SetEnvIf Request_URI "^/app/(\w+)" SECTION=$1
SetEnvIfNoCase User-Agent "curl/(\d+)" CURL=$1
BrowserMatch "^Mozilla" MOZILLA
SetEnvIf Remote_Addr "^127\." LOCAL
SetEnvIf Remote_Addr "!^127\." NOT_LOCAL
SetEnv REQUEST_METHOD spoofed
SetEnv HTTP_X_TOKEN from-config
WSGIScriptAlias /app {app}
<Location /app/inner>
    UnsetEnv REMOVED
    SetEnv SITE_NAME inner
</Location>
<Directory {dir}>
    Require all granted
</Directory>
"#,
        app = app.display(),
        dir = dir.path().display()
    );
    let theirs_root = dir.path().join("apache");
    std::fs::create_dir(&theirs_root).unwrap();
    std::fs::set_permissions(
        &theirs_root,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let theirs = apache::Apache::start_with_module(&theirs_root, &debian_mod_wsgi(), &site);
    let ours = serve(dir.path(), &site);
    let requests: [(&str, &[(&str, &str)]); 3] = [
        (
            "/app/inner/x",
            &[("User-Agent", "CURL/8.1"), ("X-Token", "from-client")],
        ),
        ("/app/other", &[("User-Agent", "Mozilla/5.0")]),
        ("/app", &[]),
    ];
    for (path, headers) in requests {
        let (status, _, expected) = theirs.request("GET", path, headers, b"");
        assert_eq!(
            status,
            200,
            "Apache: {}",
            String::from_utf8_lossy(&expected)
        );
        let got = ours.request("GET", path, headers, b"");
        assert_eq!(
            String::from_utf8_lossy(&got.body),
            String::from_utf8_lossy(&expected),
            "GET {path} {headers:?}"
        );
    }
}
