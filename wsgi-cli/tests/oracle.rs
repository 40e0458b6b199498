//! `wsgi serve --config` against the oracle: the same site served by Debian's Apache with
//! Debian's mod_wsgi 4.9.4 (started on 127.0.0.1 by the test, children as www-data), the same
//! requests, the same answers.

#[path = "util/tls.rs"]
mod tls_util;
mod util;

use std::path::Path;

use util::Server;
use wsgi_testkit::{apache, apps, fs, http, wait};

/// Debian's mod_wsgi, as a `LoadModule` line.
fn debian_mod_wsgi() -> String {
    format!("LoadModule wsgi_module {}", apache::DEBIAN_MOD_WSGI)
}

/// Serves `site` with `wsgi serve --config` (as root: as www-data, like Apache's children).
fn serve(dir: &Path, site: &str) -> Server {
    let conf = fs::write_world_readable(&dir.join("serve.conf"), site);
    let launch = util::Launch {
        allow_root: false,
        ..util::PLAIN
    };
    Server::start_with(
        &launch,
        &["--config", conf.to_str().unwrap(), "--port", "0"],
    )
}

/// Serves `site` with Debian's Apache and mod_wsgi, its server root the folder `apache` of `dir`.
fn start_apache(dir: &Path, site: &str) -> apache::Apache {
    start_apache_with(dir, &debian_mod_wsgi(), site)
}

/// [`start_apache`] with another module's `LoadModule` line (mod_wsgi 6.1.1's).
fn start_apache_with(dir: &Path, load_module: &str, site: &str) -> apache::Apache {
    let root = fs::create_dir_world_readable(&dir.join("apache"));
    apache::Apache::start_with_module(&root, load_module, site)
}

/// An app answering with the environ's values for `keys`, one `NAME=value` line each.
fn environ_app(dir: &Path, keys: &[&str]) -> std::path::PathBuf {
    let keys: Vec<String> = keys.iter().map(|k| format!("{k:?}")).collect();
    fs::write_world_readable(
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
    apache::require_debian_mod_wsgi();
    let dir = fs::scratch_world_readable("wsgi-oracle-");
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
        "wsgi.url_scheme",
        "HTTPS",
        "REQUEST_SCHEME",
        "SERVER_ADDR",
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
SetEnvIf X-Forwarded-Proto "^https$" HTTPS=1
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
    let theirs = start_apache(dir.path(), &site);
    let ours = serve(dir.path(), &site);
    let requests: [(&str, &[(&str, &str)]); 3] = [
        (
            "/app/inner/x",
            &[("User-Agent", "CURL/8.1"), ("X-Token", "from-client")],
        ),
        (
            "/app/other",
            &[
                ("User-Agent", "Mozilla/5.0"),
                ("X-Forwarded-Proto", "https"),
            ],
        ),
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

/// `wsgi serve --config` gives mod_wsgi 6.1.1's environ keys, with its value types, in embedded
/// and daemon mode, and the same `DOCUMENT_ROOT`, `SERVER_ADMIN` and `CONTEXT_*` (from the
/// site's `DocumentRoot`, `ServerAdmin` and `Alias`); `apache.version` is the `(2, 4, 0)` the
/// README documents, there being no Apache.
#[test]
fn environ_keys_and_types_as_mod_wsgi_61() {
    let dir = fs::scratch_world_readable("wsgi-oracle-environ61-");
    fs::write_world_readable(&dir.path().join("env.wsgi"), apps::ENVIRON_TYPES_APP);
    let folder = |name: &str| {
        let path = dir.path().join(name);
        std::fs::create_dir(&path).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        path
    };
    let scripts = folder("scripts");
    fs::write_world_readable(&scripts.join("values.wsgi"), apps::ENVIRON_VALUES_APP);
    let docroot = folder("docroot");
    let site = format!(
        r#"LoadModule alias_module /usr/lib/apache2/modules/mod_alias.so
DocumentRoot {docroot}
ServerAdmin webmaster@example.org
WSGIDaemonProcess d processes=2 threads=3
WSGIScriptAlias /emb {dir}/env.wsgi
WSGIScriptAlias /dae {dir}/env.wsgi process-group=d
WSGIScriptAlias /emb-values {scripts}/values.wsgi
WSGIScriptAlias /dae-values {scripts}/values.wsgi process-group=d
Alias /aliased {scripts}
<Directory {dir}>
    Require all granted
</Directory>
<Directory {scripts}>
    Options +ExecCGI
    SetHandler wsgi-script
</Directory>
"#,
        dir = dir.path().display(),
        scripts = scripts.display(),
        docroot = docroot.display(),
    );
    let theirs = start_apache_with(dir.path(), &apache::mod_wsgi_61(), &site);
    let ours = serve(dir.path(), &site);
    let headers = [("User-Agent", "probe/1"), ("Accept", "*/*")];
    for path in ["/emb/x?a=1", "/dae/x?a=1"] {
        let (status, _, body) = theirs.request("GET", path, &headers, b"");
        assert_eq!(status, 200, "mod_wsgi 6.1: {}", theirs.error_log());
        let expected = apps::environ_types(&body);
        let got = ours.request("GET", path, &headers, b"");
        assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
        let got = apps::environ_types(&got.body);
        let differences = apps::environ_type_differences(&got, &expected);
        assert!(differences.is_empty(), "GET {path}: {differences:#?}");
        assert_eq!(
            got.get("mod_wsgi.request_start").map(String::as_str),
            Some("float")
        );
    }
    for path in ["/emb-values", "/dae-values", "/aliased/values.wsgi"] {
        let (status, _, expected) = theirs.request("GET", path, &headers, b"");
        assert_eq!(status, 200, "mod_wsgi 6.1: {}", theirs.error_log());
        // Apache's own release there, wsgi serve's documented (2, 4, 0) here.
        let version = |text: &str| {
            text.lines()
                .map(|l| match l.strip_prefix("apache.version=") {
                    Some(_) => "apache.version=(2, 4, 0)",
                    None => l,
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        let expected = version(&String::from_utf8_lossy(&expected));
        let got = ours.request("GET", path, &headers, b"");
        let got = String::from_utf8_lossy(&got.body).to_string();
        assert!(got.contains("apache.version=(2, 4, 0)\n"), "{got}");
        assert_eq!(version(&got), expected, "GET {path}");
        assert!(expected.contains("ordered=True"), "{expected}");
        assert!(expected.contains("webmaster@example.org"), "{expected}");
    }
}

/// `<WSGIInterpreterOptions>` (mod_wsgi 6) under `wsgi serve --config` as under mod_wsgi
/// 6.1.1 in Apache, the same site: each section reaches the interpreters it selects (a daemon
/// group's, one application group in it, embedded mode's main interpreter) and no other.
#[test]
fn interpreter_options_as_mod_wsgi_61() {
    let dir = fs::scratch_world_readable("wsgi-oracle-interp-options-");
    let site = apps::interpreter_options_site(dir.path());
    let theirs = start_apache_with(dir.path(), &apache::mod_wsgi_61(), &site);
    let ours = serve(dir.path(), &site);
    for (path, expected) in apps::INTERPRETER_OPTIONS_EXPECTED {
        let (status, _, body) = theirs.get(path);
        assert_eq!(status, 200, "mod_wsgi 6.1: {}", theirs.error_log());
        let theirs_body = apps::interpreter_probe_answer(dir.path(), &body);
        let got = ours.request("GET", path, &[], b"");
        assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
        let ours_body = apps::interpreter_probe_answer(dir.path(), &got.body);
        assert_eq!(ours_body, theirs_body, "GET {path}");
        assert_eq!(ours_body, expected, "GET {path}");
    }
}

/// What the test compares of a response: the status, the Location (with the server's own
/// port written PORT), the Content-Type's type, and the body unless it is an error page.
fn summary(status: u16, head: &str, body: &[u8], port: u16) -> String {
    let header = |name: &str| http::header_value(head, name).map(str::to_string);
    let location = header("location")
        .map(|l| l.replace(&format!(":{port}"), ":PORT"))
        .unwrap_or_default();
    let kind = header("content-type")
        .map(|t| t.split(';').next().unwrap_or("").trim().to_string())
        .unwrap_or_default();
    let body = if status == 200 {
        String::from_utf8_lossy(body).into_owned()
    } else {
        String::new()
    };
    format!("{status} location={location} type={kind} body={body:?}")
}

/// mod_alias (`Alias`, `AliasMatch`, `Redirect` and its forms, in precedence over
/// `WSGIScriptAlias` whatever their order), `DocumentRoot`, and static files with mod_mime's
/// types and mod_dir's folder rules, as Apache serves them.
#[test]
fn aliases_redirects_and_static_files_as_apache() {
    apache::require_debian_mod_wsgi();
    let dir = fs::scratch_world_readable("wsgi-oracle-");
    let root = dir.path();
    let file = |rel: &str, text: &str| {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        for d in path.ancestors().skip(1).take_while(|d| d.starts_with(root)) {
            std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
        }
        fs::write_world_readable(&path, text);
    };
    file("static/site.css", "body { color: red }\n");
    file("static/index.html", "<p>static index</p>\n");
    file("static/sub/page.txt", "a page\n");
    file("static/secret/x.txt", "hidden\n");
    file("robots.txt", "User-agent: *\n");
    file("files/abc.txt", "abc file\n");
    file("docs/readme.txt", "from the document root\n");
    let app = fs::write_world_readable(
        &root.join("app.wsgi"),
        "def application(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [('app %s' % environ['PATH_INFO']).encode()]\n",
    );
    let d = root.display();
    let site = format!(
        r#"LoadModule alias_module /usr/lib/apache2/modules/mod_alias.so
LoadModule mime_module /usr/lib/apache2/modules/mod_mime.so
LoadModule dir_module /usr/lib/apache2/modules/mod_dir.so
TypesConfig /etc/mime.types
DirectoryIndex index.html
DocumentRoot {d}/docs
WSGIScriptAlias /app {app}
Alias /static/ {d}/static/
Alias /robots.txt {d}/robots.txt
Alias /assets {d}/static
AliasMatch ^/files/(\w+)\.txt$ {d}/files/$1.txt
Redirect /old /new
Redirect permanent /moved http://example.com/target
RedirectMatch 301 ^/r/(\d+)$ /app/item/$1
Redirect gone /gone
<Directory {d}>
    Require all granted
</Directory>
<Directory {d}/static/secret>
    Require all denied
</Directory>
"#,
        app = app.display()
    );
    let theirs = start_apache(root, &site);
    let ours = serve(root, &site);
    let paths = [
        "/static/site.css",
        "/static/",
        "/static",
        "/static/sub/page.txt",
        "/static/missing.css",
        "/static/secret/x.txt",
        "/robots.txt",
        "/assets",
        "/assets/sub",
        "/assets/sub/page.txt",
        "/files/abc.txt",
        "/files/nope.txt",
        "/old/x?q=1",
        "/moved/y",
        "/r/42",
        "/gone",
        "/app/hello",
        "/readme.txt",
        "/nothing-here",
    ];
    for path in paths {
        let host = [("Host", "localhost")];
        let (status, head, body) = theirs.request("GET", path, &host, b"");
        let expected = summary(status, &head, &body, theirs.port);
        let got = ours.request("GET", path, &host, b"");
        let head: String = got
            .headers
            .iter()
            .map(|(n, v)| format!("{n}: {v}\n"))
            .collect();
        let ours_summary = summary(got.status, &head, &got.body, ours.addr.port());
        assert_eq!(ours_summary, expected, "GET {path}");
    }
}

/// mod_wsgi's handlers for files mod_alias maps: `AddHandler wsgi-script .wsgi` where
/// `Options +ExecCGI` allows it (403 where it does not, even for a missing file; 404 for a
/// missing one; extensions in any position and any case), `SetHandler wsgi-script` in a
/// `<Location>`, and a `WSGIHandlerScript` named by `AddHandler` and by `SetHandler` in a
/// `<Files>`, for files that exist and files that do not: the same statuses, `SCRIPT_NAME`,
/// `PATH_INFO`, `SCRIPT_FILENAME`, application groups and handler keys as Debian's mod_wsgi.
#[test]
fn handlers_as_mod_wsgi() {
    apache::require_debian_mod_wsgi();
    let dir = fs::scratch_world_readable("wsgi-oracle-");
    let root = dir.path();
    for sub in ["scripts", "noexec", "located", "pages"] {
        let p = root.join(sub);
        std::fs::create_dir(&p).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let keys = [
        "SCRIPT_NAME",
        "PATH_INFO",
        "QUERY_STRING",
        "SCRIPT_FILENAME",
        "mod_wsgi.application_group",
        "mod_wsgi.callable_object",
        "mod_wsgi.request_handler",
        "mod_wsgi.handler_script",
    ];
    let env = std::fs::read_to_string(environ_app(root, &keys)).unwrap();
    for file in [
        "scripts/env.wsgi",
        "scripts/env.wsgi.bak",
        "noexec/env.wsgi",
        "located/env.txt",
    ] {
        fs::write_world_readable(&root.join(file), &env);
    }
    // mod_wsgi 4.9 lowercases the %{RESOURCE} name (6.x only with WSGICaseSensitivity Off):
    // this one shows only the split.
    fs::write_world_readable(
        &root.join("scripts/shout.WSGI"),
        "def application(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [('%s %s' % (environ['SCRIPT_NAME'], environ['PATH_INFO'])).encode()]\n",
    );
    fs::write_world_readable(&root.join("scripts/notes.txt"), "not a script\n");
    fs::write_world_readable(
        &root.join("handler.wsgi"),
        &format!(
            "import os\n\nKEYS = {keys:?}\n\ndef handle_request(environ, start_response):\n    name = environ['SCRIPT_FILENAME']\n    body = ''.join('%s=%s\\n' % (k, environ.get(k, '<unset>')) for k in KEYS)\n    if os.path.exists(name):\n        body += open(name).read()\n    else:\n        body += 'no such page\\n'\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [body.encode()]\n"
        ),
    );
    fs::write_world_readable(&root.join("pages/one.page"), "page one\n");
    fs::write_world_readable(&root.join("pages/special.txt"), "special\n");
    fs::write_world_readable(&root.join("pages/plain.txt"), "plain\n");
    let site = format!(
        r#"LoadModule alias_module /usr/lib/apache2/modules/mod_alias.so
LoadModule mime_module /usr/lib/apache2/modules/mod_mime.so
TypesConfig /etc/mime.types
ServerName localhost
Alias /scripts/ {d}/scripts/
Alias /noexec/ {d}/noexec/
Alias /located/ {d}/located/
Alias /pages/ {d}/pages/
WSGIHandlerScript page-handler {d}/handler.wsgi
<Directory {d}>
    Require all granted
</Directory>
<Directory {d}/scripts>
    Options -Indexes +ExecCGI
    AddHandler wsgi-script .wsgi
</Directory>
<Directory {d}/noexec>
    AddHandler wsgi-script .wsgi
</Directory>
<Location /located>
    Options +ExecCGI
    SetHandler wsgi-script
</Location>
<Directory {d}/pages>
    AddHandler Page-Handler .page
    <Files "special.txt">
        SetHandler page-handler
    </Files>
</Directory>
"#,
        d = root.display()
    );
    let theirs = start_apache(root, &site);
    let ours = serve(root, &site);
    let paths = [
        "/scripts/env.wsgi",
        "/scripts/env.wsgi/extra/x?q=1",
        "/scripts/env.wsgi.bak",
        "/scripts/shout.WSGI/more",
        "/scripts/notes.txt",
        "/scripts/missing.wsgi",
        "/scripts/missing.wsgi/x",
        "/noexec/env.wsgi",
        "/noexec/missing.wsgi",
        "/located/env.txt/p",
        "/located/",
        "/pages/one.page",
        "/pages/one.page/info",
        "/pages/missing.page",
        "/pages/special.txt",
        "/pages/plain.txt",
    ];
    for path in paths {
        let (status, head, body) = theirs.request(
            "GET",
            path,
            &[("Host", &format!("localhost:{}", theirs.port))],
            b"",
        );
        let expected = summary(status, &head, &body, theirs.port)
            .replace(&format!(":{}", theirs.port), ":PORT");
        let port = ours.addr.port();
        let got = ours.request("GET", path, &[("Host", &format!("localhost:{port}"))], b"");
        let head: String = got
            .headers
            .iter()
            .map(|(n, v)| format!("{n}: {v}\n"))
            .collect();
        let ours_summary =
            summary(got.status, &head, &got.body, port).replace(&format!(":{port}"), ":PORT");
        assert_eq!(ours_summary, expected, "GET {path}");
    }
}

/// What the access-control tests compare of a response: the status, the `WWW-Authenticate`
/// challenge, and the body of a 200.
fn auth_summary(status: u16, head: &str, body: &[u8]) -> String {
    let challenge = http::header_value(head, "www-authenticate")
        .unwrap_or_default()
        .to_string();
    let body = if status == 200 {
        String::from_utf8_lossy(body).into_owned()
    } else {
        String::new()
    };
    format!("{status} challenge={challenge:?} body={body:?}")
}

/// Reads the lines of a log file, waiting (bounded) until it has `count` of them.
fn log_lines(path: &Path, count: usize) -> Vec<String> {
    let ready = |text: &str| text.lines().count() >= count;
    wait::file_text_when(path, std::time::Duration::from_secs(10), ready)
        .lines()
        .map(str::to_string)
        .collect()
}

/// `LogFormat` (with and without a nickname), `CustomLog` with a nickname, an inline format
/// and an `env=!VAR` condition, and `TransferLog`: the same lines as Apache writes (times and
/// durations compared by their shape).
#[test]
fn access_logs_as_apache() {
    apache::require_debian_mod_wsgi();
    let dir = fs::scratch_world_readable("wsgi-oracle-");
    let root = dir.path();
    let static_dir = root.join("static");
    std::fs::create_dir(&static_dir).unwrap();
    std::fs::set_permissions(
        &static_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    fs::write_world_readable(&static_dir.join("site.css"), "body { color: red }\n");
    let app = fs::write_world_readable(
        &root.join("app.wsgi"),
        "def application(environ, start_response):\n    body = environ['wsgi.input'].read()\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [b'app ', environ['PATH_INFO'].encode(), body]\n",
    );
    let site = |logs: &Path| {
        let l = logs.display();
        format!(
            r#"LoadModule alias_module /usr/lib/apache2/modules/mod_alias.so
LoadModule mime_module /usr/lib/apache2/modules/mod_mime.so
LoadModule setenvif_module /usr/lib/apache2/modules/mod_setenvif.so
TypesConfig /etc/mime.types
LogFormat "%h %l %u \"%r\" %>s %b %B %m %U%q %H \"%{{User-Agent}}i\" \"%{{Referer}}i\" [%{{SECTION}}e] %f %k %X %{{Content-Type}}o %I" probe
LogFormat "%m %U %>s"
SetEnvIf Request_URI "\.css$" dontlog
SetEnvIf Request_URI "^/app/(\w+)" SECTION=$1
CustomLog {l}/pages.log probe env=!dontlog
CustomLog {l}/times.log "%>s %D %T %{{ms}}T %{{%Y-%m-%d}}t %t"
TransferLog {l}/transfer.log
WSGIScriptAlias /app {app}
Alias /static/ {d}/static/
<Directory {d}>
    Require all granted
</Directory>
"#,
            app = app.display(),
            d = root.display()
        )
    };
    let theirs_root = root.join("apache");
    let ours_logs = root.join("ours");
    for d in [&theirs_root, &ours_logs] {
        std::fs::create_dir(d).unwrap();
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let theirs =
        apache::Apache::start_with_module(&theirs_root, &debian_mod_wsgi(), &site(&theirs_root));
    let ours = serve(root, &site(&ours_logs));
    type Request<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a [u8]);
    let requests: [Request; 4] = [
        (
            "GET",
            "/app/inner/x?q=1&r=%41",
            &[
                ("User-Agent", "probe \"quoted\"/1"),
                ("Referer", "http://example.com/"),
            ],
            b"",
        ),
        ("GET", "/static/site.css", &[], b""),
        ("HEAD", "/app/head", &[], b""),
        (
            "POST",
            "/app/post",
            &[("Content-Type", "text/plain")],
            b"posted body",
        ),
    ];
    for (method, path, headers, body) in requests {
        let mut headers = headers.to_vec();
        headers.push(("Host", "localhost"));
        let (status, _, _) = theirs.request(method, path, &headers, body);
        let got = ours.request(method, path, &headers, body);
        assert_eq!(got.status, status, "{method} {path}");
    }
    // Times and durations by their shape: each run of digits as N.
    let shape = |line: &str| {
        let mut out = String::new();
        for c in line.chars() {
            if c.is_ascii_digit() {
                if !out.ends_with('N') {
                    out.push('N');
                }
            } else {
                out.push(c);
            }
        }
        out
    };
    for (log, count) in [("pages.log", 3), ("times.log", 4), ("transfer.log", 4)] {
        let expected = log_lines(&theirs_root.join(log), count);
        let got = log_lines(&ours_logs.join(log), count);
        assert_eq!(expected.len(), count, "Apache's {log}: {expected:#?}");
        let (expected, got): (Vec<String>, Vec<String>) = if log == "times.log" {
            (
                expected.iter().map(|l| shape(l)).collect(),
                got.iter().map(|l| shape(l)).collect(),
            )
        } else {
            (expected, got)
        };
        assert_eq!(got, expected, "{log}");
    }
}

/// The access log's `%L` is the id the application saw as `mod_wsgi.request_id`, as in Apache
/// with mod_wsgi; a request no application served (a static file) has none: `-`.
#[test]
fn request_ids_in_the_access_log_as_apache() {
    let dir = fs::scratch_world_readable("wsgi-oracle-ids-");
    let root = dir.path();
    let app = fs::write_world_readable(
        &root.join("id.wsgi"),
        "def application(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [environ['mod_wsgi.request_id'].encode()]\n",
    );
    fs::write_world_readable(&root.join("page.txt"), "static\n");
    let site = |logs: &Path| {
        format!(
            "LoadModule alias_module /usr/lib/apache2/modules/mod_alias.so\nCustomLog {l}/ids.log \"%L %U\"\nWSGIScriptAlias /app {app}\nAlias /static/ {d}/\n<Directory {d}>\n    Require all granted\n</Directory>\n",
            l = logs.display(),
            app = app.display(),
            d = root.display()
        )
    };
    let folder = |name: &str| {
        let path = root.join(name);
        std::fs::create_dir(&path).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        path
    };
    let (theirs_logs, ours_logs) = (folder("apache"), folder("ours"));
    let theirs = apache::Apache::start_with_module(
        &theirs_logs,
        &apache::mod_wsgi_61(),
        &site(&theirs_logs),
    );
    let ours = serve(root, &site(&ours_logs));
    let (_, _, theirs_id) = theirs.get("/app/x");
    theirs.get("/static/page.txt");
    let ours_id = ours.get("/app/x").body;
    ours.get("/static/page.txt");
    for (logs, id) in [(&theirs_logs, theirs_id), (&ours_logs, ours_id)] {
        let id = String::from_utf8(id).unwrap();
        let lines = log_lines(&logs.join("ids.log"), 2);
        assert_eq!(lines.first(), Some(&format!("{id} /app/x")), "{lines:?}");
        assert_eq!(id.len(), 11, "{id}");
        assert_eq!(lines[1], "- /static/page.txt");
    }
}

/// `Require` (all, ip, local, host, env, method, valid-user, user, group, with `not`),
/// `<RequireAll>`/`<RequireAny>`/`<RequireNone>`, `AuthType Basic` with an htpasswd file in
/// bcrypt, MD5 and SHA1 (made by Apache's own `htpasswd`) and `AuthGroupFile`: the same
/// statuses, challenges, `REMOTE_USER`/`AUTH_TYPE` and access log users as Apache.
#[test]
fn access_control_and_basic_authentication_as_apache() {
    apache::require_debian_mod_wsgi();
    let dir = fs::scratch_world_readable("wsgi-oracle-");
    let root = dir.path();
    let d = root.display().to_string();
    let htpasswd = root.join("htpasswd");
    for (i, (flag, user)) in [("-B", "alice"), ("-m", "bob"), ("-s", "carol")]
        .iter()
        .enumerate()
    {
        let create = if i == 0 { "-c" } else { "" };
        let mut cmd = std::process::Command::new("htpasswd");
        if !create.is_empty() {
            cmd.arg(create);
        }
        let ok = cmd
            .args([
                "-b",
                flag,
                htpasswd.to_str().unwrap(),
                user,
                &format!("{user}-pw"),
            ])
            .status()
            .expect("Apache's htpasswd (apache2-utils) runs")
            .success();
        assert!(ok);
    }
    std::fs::set_permissions(
        &htpasswd,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    fs::write_world_readable(&root.join("groups"), "admins: alice dave\nstaff: bob\n");
    for sub in ["files", "files/secret"] {
        let p = root.join(sub);
        std::fs::create_dir(&p).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    fs::write_world_readable(&root.join("files/open.txt"), "open file\n");
    fs::write_world_readable(&root.join("files/secret/x.txt"), "secret file\n");
    let app = fs::write_world_readable(
        &root.join("app.wsgi"),
        "def application(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [('%s user=%s type=%s' % (environ['PATH_INFO'], environ.get('REMOTE_USER'), environ.get('AUTH_TYPE'))).encode()]\n",
    );
    let basic = |realm: &str| {
        format!("    AuthType Basic\n    AuthName \"{realm}\"\n    AuthUserFile {d}/htpasswd\n")
    };
    let site = |logs: &Path| {
        format!(
            r#"LoadModule alias_module /usr/lib/apache2/modules/mod_alias.so
LoadModule setenvif_module /usr/lib/apache2/modules/mod_setenvif.so
LoadModule authz_host_module /usr/lib/apache2/modules/mod_authz_host.so
LoadModule authz_user_module /usr/lib/apache2/modules/mod_authz_user.so
LoadModule authz_groupfile_module /usr/lib/apache2/modules/mod_authz_groupfile.so
LoadModule authn_core_module /usr/lib/apache2/modules/mod_authn_core.so
LoadModule authn_file_module /usr/lib/apache2/modules/mod_authn_file.so
LoadModule auth_basic_module /usr/lib/apache2/modules/mod_auth_basic.so
CustomLog {logs}/access.log "%u %>s %U"
WSGIScriptAlias /app {app}
Alias /files/ {d}/files/
SetEnvIf X-Trusted "^yes$" TRUSTED
<Directory {d}>
    Require all granted
</Directory>
<Directory {d}/files/secret>
{secret}    Require valid-user
</Directory>
<Location /app/ip-other>
    Require ip 192.0.2.1 10.1
</Location>
<Location /app/ip-local>
    Require ip 127.0.0.0/255.0.0.0
</Location>
<Location /app/local>
    Require local
</Location>
<Location /app/not-local>
    <RequireAll>
        Require all granted
        Require not ip 127.0.0.1
    </RequireAll>
</Location>
<Location /app/env>
    Require env TRUSTED
</Location>
<Location /app/method>
    Require method GET HEAD
</Location>
<Location /app/host>
    Require host localhost
</Location>
<Location /app/user>
{members}    Require valid-user
</Location>
<Location /app/alice>
{alice}    Require user alice
</Location>
<Location /app/group>
{group}    AuthGroupFile {d}/groups
    Require group admins
</Location>
<Location /app/either>
{either}    <RequireAny>
        Require ip 192.0.2.1
        Require valid-user
    </RequireAny>
</Location>
<Location /app/none>
    <RequireAll>
        Require all granted
        <RequireNone>
            Require ip 127.0.0.1
            Require env TRUSTED
        </RequireNone>
    </RequireAll>
</Location>
<Location /app/no-auth-type>
    Require valid-user
</Location>
<Location /app/no-realm>
    AuthType Basic
    AuthUserFile {d}/htpasswd
    Require valid-user
</Location>
<Location /app/both>
{both}    <RequireAll>
        Require valid-user
        Require not user bob
    </RequireAll>
</Location>
"#,
            logs = logs.display(),
            app = app.display(),
            secret = basic("Secret files"),
            members = basic("Members only"),
            alice = basic("Alice"),
            group = basic("Admins"),
            either = basic("Either"),
            both = basic("Not bob"),
        )
    };
    let theirs_root = root.join("apache");
    let ours_logs = root.join("ours");
    for p in [&theirs_root, &ours_logs] {
        fs::create_dir_world_readable(p);
    }
    let theirs =
        apache::Apache::start_with_module(&theirs_root, &debian_mod_wsgi(), &site(&theirs_root));
    let ours = serve(root, &site(&ours_logs));
    let auth = http::basic_auth;
    /// A method, a path and extra headers.
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, String)>);
    let cases: Vec<Case> = vec![
        ("GET", "/app/ip-other", vec![]),
        ("GET", "/app/ip-local", vec![]),
        ("GET", "/app/local", vec![]),
        ("GET", "/app/not-local", vec![]),
        ("GET", "/app/env", vec![]),
        ("GET", "/app/env", vec![("X-Trusted", "yes".into())]),
        ("GET", "/app/method", vec![]),
        ("POST", "/app/method", vec![]),
        ("GET", "/app/host", vec![]),
        ("GET", "/app/user", vec![]),
        (
            "GET",
            "/app/user",
            vec![("Authorization", auth("alice", "wrong"))],
        ),
        (
            "GET",
            "/app/user",
            vec![("Authorization", auth("nobody", "x"))],
        ),
        (
            "GET",
            "/app/user",
            vec![("Authorization", auth("alice", "alice-pw"))],
        ),
        (
            "GET",
            "/app/user",
            vec![("Authorization", auth("bob", "bob-pw"))],
        ),
        (
            "GET",
            "/app/user",
            vec![("Authorization", auth("carol", "carol-pw"))],
        ),
        (
            "GET",
            "/app/user",
            vec![("Authorization", "Bearer abc".into())],
        ),
        (
            "GET",
            "/app/alice",
            vec![("Authorization", auth("bob", "bob-pw"))],
        ),
        (
            "GET",
            "/app/alice",
            vec![("Authorization", auth("alice", "alice-pw"))],
        ),
        (
            "GET",
            "/app/group",
            vec![("Authorization", auth("bob", "bob-pw"))],
        ),
        (
            "GET",
            "/app/group",
            vec![("Authorization", auth("alice", "alice-pw"))],
        ),
        ("GET", "/app/either", vec![]),
        (
            "GET",
            "/app/either",
            vec![("Authorization", auth("carol", "carol-pw"))],
        ),
        ("GET", "/app/none", vec![]),
        (
            "GET",
            "/app/both",
            vec![("Authorization", auth("bob", "bob-pw"))],
        ),
        (
            "GET",
            "/app/both",
            vec![("Authorization", auth("carol", "carol-pw"))],
        ),
        ("GET", "/app/no-auth-type", vec![]),
        (
            "GET",
            "/app/no-auth-type",
            vec![("Authorization", auth("bob", "bob-pw"))],
        ),
        (
            "GET",
            "/app/no-realm",
            vec![("Authorization", auth("bob", "bob-pw"))],
        ),
        ("GET", "/files/open.txt", vec![]),
        ("GET", "/files/secret/x.txt", vec![]),
        (
            "GET",
            "/files/secret/x.txt",
            vec![("Authorization", auth("bob", "bob-pw"))],
        ),
    ];
    for (method, path, headers) in &cases {
        let mut headers: Vec<(&str, &str)> =
            headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        headers.push(("Host", "localhost"));
        let (status, head, body) = theirs.request(method, path, &headers, b"");
        let expected = auth_summary(status, &head, &body);
        let got = ours.request(method, path, &headers, b"");
        let got_head: String = got
            .headers
            .iter()
            .map(|(n, v)| format!("{n}: {v}\n"))
            .collect();
        assert_eq!(
            auth_summary(got.status, &got_head, &got.body),
            expected,
            "{method} {path} {headers:?}"
        );
    }
    let expected = log_lines(&theirs_root.join("access.log"), cases.len());
    let got = log_lines(&ours_logs.join("access.log"), cases.len());
    assert_eq!(got, expected);
}

/// mod_wsgi's scripts beside the application, as Debian's mod_wsgi runs them:
/// `WSGIAccessScript` (True, False, None), `AuthBasicProvider wsgi` with a
/// `WSGIAuthUserScript` (right, wrong, unknown, and a renamed user), `Require wsgi-group` with
/// a `WSGIAuthGroupScript`, and a `WSGIDispatchScript` choosing the application group and
/// the callable object.
#[test]
fn mod_wsgi_hook_scripts_as_mod_wsgi() {
    apache::require_debian_mod_wsgi();
    let dir = fs::scratch_world_readable("wsgi-oracle-");
    let root = dir.path();
    let d = root.display().to_string();
    let script = |name: &str, text: &str| fs::write_world_readable(&root.join(name), text);
    let app = script(
        "app.wsgi",
        "def application(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    # The group only where the dispatch script chose it (the default names differ: the\n    # Apache preamble has a ServerName).\n    group = environ.get('mod_wsgi.application_group') if environ['PATH_INFO'].startswith('/dispatch') else '-'\n    return [('app %s user=%s type=%s group=%r' % (environ['PATH_INFO'], environ.get('REMOTE_USER'), environ.get('AUTH_TYPE'), group)).encode()]\n\ndef other(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [b'other callable']\n",
    );
    script(
        "access.wsgi",
        "def allow_access(environ, host):\n    if environ['PATH_INFO'].endswith('/neutral'):\n        return None\n    return environ.get('HTTP_X_LET_IN') == 'yes' and host == environ['REMOTE_ADDR']\n",
    );
    script(
        "auth.wsgi",
        "def check_password(environ, user, password):\n    if user == 'alice':\n        return password == 'alice-pw'\n    if user == 'renamed':\n        return 'bob' if password == 'x' else False\n    return None\n",
    );
    script(
        "groups.wsgi",
        "def groups_for_user(environ, user):\n    return ['admins'] if user == 'alice' else ['staff']\n",
    );
    script(
        "dispatch.wsgi",
        "def application_group(environ):\n    return 'dispatched'\n\ndef callable_object(environ):\n    return 'other' if environ.get('HTTP_X_OTHER') else None\n",
    );
    let site = format!(
        r#"LoadModule authn_core_module /usr/lib/apache2/modules/mod_authn_core.so
LoadModule authz_user_module /usr/lib/apache2/modules/mod_authz_user.so
LoadModule auth_basic_module /usr/lib/apache2/modules/mod_auth_basic.so
WSGIScriptAlias /app {app}
<Directory {d}>
    Require all granted
</Directory>
<Location /app/access>
    WSGIAccessScript {d}/access.wsgi
</Location>
<Location /app/login>
    AuthType Basic
    AuthName "Hooked"
    AuthBasicProvider wsgi
    WSGIAuthUserScript {d}/auth.wsgi
    Require valid-user
</Location>
<Location /app/admins>
    AuthType Basic
    AuthName "Hooked admins"
    AuthBasicProvider wsgi
    WSGIAuthUserScript {d}/auth.wsgi
    WSGIAuthGroupScript {d}/groups.wsgi
    Require wsgi-group admins
</Location>
<Location /app/dispatch>
    WSGIDispatchScript {d}/dispatch.wsgi
</Location>
"#,
        app = app.display()
    );
    let theirs = start_apache(root, &site);
    let ours = serve(root, &site);
    let auth = http::basic_auth;
    /// A method, a path and extra headers.
    type Case<'a> = (&'a str, Vec<(&'a str, String)>);
    let cases: Vec<Case> = vec![
        ("/app/access", vec![]),
        ("/app/access", vec![("X-Let-In", "yes".into())]),
        ("/app/access/neutral", vec![]),
        ("/app/login", vec![]),
        (
            "/app/login",
            vec![("Authorization", auth("alice", "alice-pw"))],
        ),
        ("/app/login", vec![("Authorization", auth("alice", "nope"))]),
        ("/app/login", vec![("Authorization", auth("stranger", "x"))]),
        ("/app/login", vec![("Authorization", auth("renamed", "x"))]),
        (
            "/app/admins",
            vec![("Authorization", auth("alice", "alice-pw"))],
        ),
        ("/app/admins", vec![("Authorization", auth("renamed", "x"))]),
        ("/app/dispatch", vec![]),
        ("/app/dispatch", vec![("X-Other", "1".into())]),
    ];
    for (path, headers) in &cases {
        let mut headers: Vec<(&str, &str)> =
            headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        headers.push(("Host", "localhost"));
        let (status, head, body) = theirs.request("GET", path, &headers, b"");
        let expected = auth_summary(status, &head, &body);
        let got = ours.request("GET", path, &headers, b"");
        let got_head: String = got
            .headers
            .iter()
            .map(|(n, v)| format!("{n}: {v}\n"))
            .collect();
        assert_eq!(
            auth_summary(got.status, &got_head, &got.body),
            expected,
            "GET {path} {headers:?}"
        );
    }
}

/// TLS ALPN as mod_ssl with mod_http2 answer it: per virtual host the client's SNI name
/// selects (the first for a name none has), with its `Protocols` and `ProtocolsHonorOrder`
/// inherited from the server; openssl offering each order of `h2` and `http/1.1`, to both.
#[test]
fn alpn_per_sni_host_as_apache_with_mod_http2() {
    apache::require_debian_mod_wsgi();
    let dir = fs::scratch_world_readable("wsgi-oracle-");
    let root = dir.path();
    let app = environ_app(root, &["SERVER_PROTOCOL"]);
    let hosts = [
        ("first.test", "Protocols http/1.1\n"),
        ("on.test", "ProtocolsHonorOrder On\n"),
        ("off.test", ""),
        ("h2only.test", "Protocols h2\n"),
        ("h2first.test", "Protocols h2 http/1.1\n"),
    ];
    let main = "LoadModule http2_module /usr/lib/apache2/modules/mod_http2.so\n\
                Protocols http/1.1 h2\nProtocolsHonorOrder Off\n";
    let site = tls_util::tls_site(root, &app, main, &hosts);
    let theirs = start_apache(root, &site);
    let ours = serve(root, &site);
    for name in hosts.iter().map(|(name, _)| *name).chain(["unknown.test"]) {
        for offer in ["h2,http/1.1", "http/1.1,h2", "http/1.1", "h2"] {
            let apache = tls_util::openssl_alpn(name, theirs.port, offer).ok();
            let wsgi = tls_util::openssl_alpn(name, ours.addr.port(), offer).ok();
            // Every host accepts `http/1.1`; `first.test` (and so a name no host has) cannot
            // speak `h2` and fails a client offering only that (Apache names `http/1.1`
            // anyway, which openssl refuses; rustls sends `no_application_protocol`).
            let refused = offer == "h2" && matches!(name, "first.test" | "unknown.test");
            assert_eq!(
                apache.is_none(),
                refused,
                "Apache: SNI {name}, offering {offer}"
            );
            assert_eq!(wsgi, apache, "SNI {name}, offering {offer}");
        }
    }
}

/// TLS versions as mod_ssl allows them: those of the `SSLProtocol` of the virtual host the
/// client's SNI name selects (the first for a name none has), its own or the server's, whether
/// it is the port's first host or not, and for a host with neither, the port's first host's;
/// openssl offering only TLS 1.2, then only TLS 1.3, to both.
#[test]
fn ssl_protocol_per_sni_host_as_apache_with_mod_ssl() {
    apache::require_debian_mod_wsgi();
    let all = "SSLProtocol all\n";
    let only12 = "SSLProtocol all -TLSv1.3\n";
    let only13 = "SSLProtocol -all +TLSv1.3\n";
    let both = "TLSv1.2 TLSv1.3";
    // (the server's lines, [(host, its lines, the versions it allows)]).
    let cases: [(&str, &[tls_util::VersionsHost]); 4] = [
        (
            "",
            &[("first.test", "", both), ("second.test", only13, "TLSv1.3")],
        ),
        (
            "",
            &[
                ("first.test", only13, "TLSv1.3"),
                ("second.test", "", "TLSv1.3"),
                ("third.test", all, both),
            ],
        ),
        (
            only13,
            &[
                ("first.test", "", "TLSv1.3"),
                ("second.test", only12, "TLSv1.2"),
            ],
        ),
        (
            all,
            &[("first.test", only13, "TLSv1.3"), ("second.test", "", both)],
        ),
    ];
    for (main, hosts) in cases {
        let dir = fs::scratch_world_readable("wsgi-oracle-");
        let root = dir.path();
        let app = environ_app(root, &["SSL_PROTOCOL"]);
        let lines: Vec<(&str, &str)> = hosts
            .iter()
            .map(|&(name, lines, _)| (name, lines))
            .collect();
        let site = tls_util::tls_site(root, &app, main, &lines);
        let theirs = start_apache(root, &site);
        let ours = serve(root, &site);
        let unknown = ("unknown.test", "", hosts[0].2);
        for &(name, _, allowed) in hosts.iter().chain([&unknown]) {
            let apache = tls_util::openssl_versions(name, theirs.port);
            assert_eq!(apache, allowed, "Apache: {main:?}{lines:?}: SNI {name}");
            let wsgi = tls_util::openssl_versions(name, ours.addr.port());
            assert_eq!(wsgi, apache, "{main:?}{lines:?}: SNI {name}");
        }
    }
}

/// mod_ssl's `SSLEngine on` site: the application sees HTTPS as under mod_wsgi, redirects and
/// folder redirects point to https, on the same requests to both servers (the key readable
/// by root only: both read it before their children give up root).
#[test]
fn https_as_apache_with_mod_ssl() {
    apache::require_debian_mod_wsgi();
    let dir = fs::scratch_world_readable("wsgi-oracle-");
    let root = dir.path();
    let issued = tls_util::issue(root, "site", &["localhost"], true);
    let app = environ_app(
        root,
        &[
            "wsgi.url_scheme",
            "HTTPS",
            "REQUEST_SCHEME",
            "HTTP_HOST",
            "SSL_PROTOCOL",
            "SSL_TLS_SNI",
            "PATH_INFO",
        ],
    );
    std::fs::create_dir(root.join("static")).unwrap();
    fs::write_world_readable(&root.join("static/a.txt"), "static a\n");
    let site = format!(
        r#"LoadModule ssl_module /usr/lib/apache2/modules/mod_ssl.so
LoadModule alias_module /usr/lib/apache2/modules/mod_alias.so
LoadModule dir_module /usr/lib/apache2/modules/mod_dir.so
LoadModule mime_module /usr/lib/apache2/modules/mod_mime.so
TypesConfig /etc/mime.types
SSLEngine on
SSLProtocol all -SSLv3 -TLSv1 -TLSv1.1
SSLCertificateFile {cert}
SSLCertificateKeyFile {key}
SSLCertificateChainFile {chain}
WSGIScriptAlias /app {app}
Alias /static {d}/static
Redirect /old /app/new
<Directory {d}>
    Require all granted
</Directory>
"#,
        cert = issued.cert.display(),
        key = issued.key.display(),
        chain = issued.chain.as_ref().unwrap().display(),
        app = app.display(),
        d = root.display(),
    );
    let theirs = start_apache(root, &site);
    let ours = serve(root, &site);
    let theirs_addr: std::net::SocketAddr = ([127, 0, 0, 1], theirs.port).into();
    for path in ["/app/x?y=1", "/app", "/old/z", "/static", "/static/a.txt"] {
        let mut answers = Vec::new();
        for addr in [theirs_addr, ours.addr] {
            let request = http::get_request(path, &format!("localhost:{}", addr.port()));
            let answer =
                tls_util::exchange(addr, "localhost", &[&issued.root], tls_util::BOTH, &request)
                    .unwrap();
            assert_eq!(answer.presented, issued.leaf);
            let (status, head, body) = http::split_response(&answer.raw);
            let text = summary(status, &head, &body, addr.port())
                .replace(&format!(":{}", addr.port()), ":PORT");
            answers.push(text);
        }
        assert_eq!(answers[1], answers[0], "GET {path}");
    }
    // Plain HTTP on the TLS port: 400 from both, saying why.
    let plain = b"GET /app/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let (status, _, body) = http::split_response(&theirs.raw(plain));
    let got = ours.raw(plain);
    let (ours_status, _, ours_body) = http::split_response(&got);
    assert_eq!((ours_status, status), (400, 400));
    let reason = "speaking plain HTTP to an SSL-enabled server port";
    assert!(http::find(&body, reason.as_bytes()).is_some());
    assert!(http::find(&ours_body, reason.as_bytes()).is_some());
}
