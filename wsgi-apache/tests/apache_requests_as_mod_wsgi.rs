//! How Apache with mod_wsgi_rs maps requests to WSGI scripts and logs what they write, side
//! by side with Debian's mod_wsgi 4.9.4 in the same Apache on the same site: files whose
//! handler is `wsgi-script` (`AddHandler`, `SetHandler`), `Alias` beside `WSGIScriptAlias`,
//! MultiViews in a script folder, `%{ENV:NAME}` application groups, raw non-ASCII bytes in the
//! request line, and `wsgi.errors` in embedded mode.

use std::path::Path;

use wsgi_testkit::apache::{Apache, require_debian_mod_wsgi};
use wsgi_testkit::fs::scratch_world_readable;
use wsgi_testkit::http::split_response;

/// Reports what mod_wsgi's environ says about the request, each value as Python's `ascii()`
/// shows it (so non-ASCII characters are compared exactly).
const REPORT: &str = r#"
KEYS = ['SCRIPT_NAME', 'PATH_INFO', 'REQUEST_URI', 'SCRIPT_FILENAME',
        'mod_wsgi.application_group', 'mod_wsgi.process_group', 'mod_wsgi.request_handler']

def application(environ, start_response):
    body = ''.join('%s=%s\n' % (k, ascii(environ.get(k))) for k in KEYS)
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [body.encode()]
"#;

/// The modules the sites below use besides mod_wsgi.
const MODULES: &str = "LoadModule alias_module /usr/lib/apache2/modules/mod_alias.so
LoadModule mime_module /usr/lib/apache2/modules/mod_mime.so
LoadModule negotiation_module /usr/lib/apache2/modules/mod_negotiation.so
LoadModule env_module /usr/lib/apache2/modules/mod_env.so
LoadModule setenvif_module /usr/lib/apache2/modules/mod_setenvif.so
TypesConfig /etc/mime.types
";

/// A scratch folder for a comparison with Debian's mod_wsgi, holding `files` (path, text),
/// world-readable as the whole tree (Apache's children run as www-data).
fn folder(prefix: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
    require_debian_mod_wsgi();
    let dir = scratch_world_readable(prefix);
    for (rel, text) in files {
        let path = dir.path().join(rel);
        let parent = path.parent().unwrap();
        std::fs::create_dir_all(parent).unwrap();
        for folder in parent.ancestors().take_while(|p| p.starts_with(dir.path())) {
            std::fs::set_permissions(folder, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
        }
        std::fs::write(&path, text).unwrap();
    }
    dir
}

/// A raw GET of `target` (bytes as they go on the wire) with `Host: localhost:PORT` and
/// `extra` header lines: the status and the body, with the server's port written `PORT` (the
/// application group names the port, which differs between the two servers).
fn get_raw(apache: &Apache, target: &[u8], extra: &str) -> (u16, String) {
    let mut request = b"GET ".to_vec();
    request.extend_from_slice(target);
    request.extend_from_slice(
        format!(
            " HTTP/1.1\r\nHost: localhost:{}\r\n{extra}Connection: close\r\n\r\n",
            apache.port
        )
        .as_bytes(),
    );
    let (status, _, body) = split_response(&apache.raw(&request));
    let body = String::from_utf8(body).expect("the bodies here are ASCII");
    (status, body.replace(&apache.port.to_string(), "PORT"))
}

fn get(apache: &Apache, path: &str) -> (u16, String) {
    get_raw(apache, path.as_bytes(), "")
}

/// The report `REPORT` gives for these values, in its order.
fn report(
    script_name: &str,
    path_info: &str,
    request_uri: &str,
    script: &Path,
    group: &str,
    process_group: &str,
) -> String {
    format!(
        "SCRIPT_NAME='{script_name}'\nPATH_INFO='{path_info}'\nREQUEST_URI='{request_uri}'\nSCRIPT_FILENAME='{}'\nmod_wsgi.application_group='{group}'\nmod_wsgi.process_group='{process_group}'\nmod_wsgi.request_handler='wsgi-script'\n",
        script.display()
    )
}

/// Both servers answer `path` with `status` and `body`, and ours says so in the same words as
/// mod_wsgi (the whole status and body).
fn both_answer(ours: &Apache, theirs: &Apache, path: &str, status: u16, body: &str) {
    let o = get(ours, path);
    let t = get(theirs, path);
    assert_eq!(
        t,
        o,
        "{path}: ours differs from mod_wsgi\n{}",
        ours.error_log()
    );
    assert_eq!(
        (o.0, o.1.as_str()),
        (status, body),
        "{path}\n{}",
        ours.error_log()
    );
}

/// Point 0: a file whose handler is `wsgi-script` runs as a WSGI application where `Options
/// ExecCGI` is on, and gets 403 where it is off, as mod_wsgi answers; its source is never
/// served as a static file.
#[test]
fn wsgi_script_handler_files_run_as_under_mod_wsgi() {
    let files = [
        "scripts/app.wsgi",
        "noexec/app.wsgi",
        "docs/loc/page.py",
        "docs/files/page.py",
        "docs/files/other.py",
    ]
    .map(|rel| (rel, REPORT));
    let dir = folder("wsgi-apache-handler-files-", &files);
    let d = dir.path();
    let site = format!(
        "{MODULES}Alias /s/ {d}/scripts/
Alias /n/ {d}/noexec/
DocumentRoot {d}/docs
<Directory {d}>
    Require all granted
</Directory>
<Directory {d}/scripts>
    Options +ExecCGI
    AddHandler wsgi-script .wsgi
</Directory>
<Directory {d}/noexec>
    AddHandler wsgi-script .wsgi
</Directory>
<Location /loc>
    Options +ExecCGI
    SetHandler wsgi-script
</Location>
<Directory {d}/docs/files>
    Options +ExecCGI
    <Files page.py>
        SetHandler wsgi-script
    </Files>
</Directory>
",
        d = d.display()
    );
    let (ours, theirs) = Apache::ours_and_debians(d, &site);
    let runs = |path: &str, script: &str, script_name: &str, path_info: &str| {
        let (status, body) = get(&ours, path);
        assert_ne!(
            body, REPORT,
            "{path}: ours served the script's source ({status})"
        );
        let expected = report(
            script_name,
            path_info,
            path,
            &d.join(script),
            &format!("localhost:PORT|{script_name}"),
            "",
        );
        both_answer(&ours, &theirs, path, 200, &expected);
    };
    runs("/s/app.wsgi", "scripts/app.wsgi", "/s/app.wsgi", "");
    runs("/s/app.wsgi/x/y", "scripts/app.wsgi", "/s/app.wsgi", "/x/y");
    runs("/loc/page.py", "docs/loc/page.py", "/loc/page.py", "");
    runs("/loc/page.py/x", "docs/loc/page.py", "/loc/page.py", "/x");
    runs(
        "/files/page.py/y",
        "docs/files/page.py",
        "/files/page.py",
        "/y",
    );
    // ExecCGI off: 403, even for a missing file; a missing script where it is on: 404; a
    // folder the handler is asked to run: 403 (what Apache's directory walk found there).
    for (path, status) in [
        ("/n/app.wsgi", 403),
        ("/n/missing.wsgi", 403),
        ("/s/missing.wsgi", 404),
        ("/loc/missing.py", 404),
        ("/loc/", 403),
    ] {
        let (o, ob) = get(&ours, path);
        let (t, _) = get(&theirs, path);
        assert_eq!((o, t), (status, status), "{path}\n{}", ours.error_log());
        assert!(!ob.contains("def application"), "{path} served the source");
    }
    assert!(
        ours.error_log()
            .contains("Options ExecCGI is off in this directory"),
        "{}",
        ours.error_log()
    );
    // Files without the handler stay Apache's: the source of a script SetHandler does not
    // name is served as it is, by both.
    let (o, ob) = get(&ours, "/files/other.py");
    assert_eq!((o, ob.as_str()), (200, REPORT));
    assert_eq!(get(&theirs, "/files/other.py"), (o, ob));
}

/// An alias of a script file hands Apache the script and `PATH_INFO` already split (the walk
/// then stats the script alone, not each folder on the way): what the application sees is
/// mod_wsgi's for every shape of URL, and a symbolic link on the way is still refused where
/// `Options -FollowSymLinks` forbids it, as the walk checks each folder there.
#[test]
fn script_file_aliases_split_as_mod_wsgi_and_still_check_links() {
    let files = [("real/app.wsgi", REPORT), ("locked/app.wsgi", REPORT)];
    let dir = folder("wsgi-apache-file-alias-", &files);
    let d = dir.path();
    std::os::unix::fs::symlink(d.join("real/app.wsgi"), d.join("linked.wsgi")).unwrap();
    std::os::unix::fs::symlink(d.join("locked/app.wsgi"), d.join("locked/link.wsgi")).unwrap();
    let site = format!(
        "{MODULES}WSGIScriptAlias /app {d}/real/app.wsgi
WSGIScriptAlias /linked {d}/linked.wsgi
WSGIScriptAlias /locked {d}/locked/link.wsgi
WSGIScriptAlias /missing {d}/real/missing.wsgi
WSGIScriptAlias / {d}/real/app.wsgi
<Directory {d}>
    Require all granted
</Directory>
<Directory {d}/locked>
    Options -FollowSymLinks
</Directory>
",
        d = d.display()
    );
    let (ours, theirs) = Apache::ours_and_debians(d, &site);
    let app = d.join("real/app.wsgi");
    let group = |script_name: &str| format!("localhost:PORT|{script_name}");
    for (path, script_name, path_info) in [
        ("/app", "/app", ""),
        ("/app/", "/app", "/"),
        ("/app/x/y", "/app", "/x/y"),
        ("/", "", "/"),
        ("/other/x", "", "/other/x"),
    ] {
        let expected = report(script_name, path_info, path, &app, &group(script_name), "");
        both_answer(&ours, &theirs, path, 200, &expected);
    }
    let expected = report(
        "/linked",
        "/x",
        "/linked/x",
        &d.join("linked.wsgi"),
        &group("/linked"),
        "",
    );
    both_answer(&ours, &theirs, "/linked/x", 200, &expected);
    for (path, status) in [("/locked/x", 403), ("/missing/x", 404)] {
        let (o, _) = get(&ours, path);
        let (t, _) = get(&theirs, path);
        assert_eq!((o, t), (status, status), "{path}\n{}", ours.error_log());
    }
}

/// Point 1: an `Alias` wins over a `WSGIScriptAlias` of `/`, whichever comes first, as
/// mod_wsgi yields to mod_alias.
#[test]
fn alias_beside_a_root_script_alias_serves_its_folder() {
    let files = [
        ("app.wsgi", REPORT),
        ("static/site.css", "body { color: black }\n"),
    ];
    let dir = folder("wsgi-apache-alias-order-", &files);
    let d = dir.path();
    let alias = format!("Alias /static/ {}/static/\n", d.display());
    let script_alias = format!("WSGIScriptAlias / {}/app.wsgi\n", d.display());
    let access = format!(
        "<Directory {}>\n    Require all granted\n</Directory>\n",
        d.display()
    );
    for (order, lines) in [
        ("Alias first", format!("{alias}{script_alias}")),
        ("WSGIScriptAlias first", format!("{script_alias}{alias}")),
    ] {
        let run = dir.path().join(order.replace(' ', "-"));
        std::fs::create_dir(&run).unwrap();
        let (ours, theirs) = Apache::ours_and_debians(&run, &format!("{MODULES}{lines}{access}"));
        both_answer(
            &ours,
            &theirs,
            "/static/site.css",
            200,
            "body { color: black }\n",
        );
        let (o, _) = get(&ours, "/static/missing.css");
        assert_eq!(
            (o, get(&theirs, "/static/missing.css").0),
            (404, 404),
            "{order}"
        );
        let expected = report(
            "",
            "/app/x",
            "/app/x",
            &d.join("app.wsgi"),
            "localhost:PORT|",
            "",
        );
        both_answer(&ours, &theirs, "/app/x", 200, &expected);
    }
}

/// Point 2: `Options +MultiViews` with `MultiviewsMatch Handlers` in a `WSGIScriptAlias`
/// folder runs `app1.wsgi` for `/app1/...`, with `SCRIPT_NAME` naming the file as mod_wsgi
/// gives it.
#[test]
fn multiviews_finds_scripts_without_their_extension() {
    let dir = folder("wsgi-apache-multiviews-", &[("scripts/app1.wsgi", REPORT)]);
    let d = dir.path();
    let site = format!(
        "{MODULES}WSGIScriptAlias / {d}/scripts/
<Directory {d}/scripts>
    Require all granted
    Options +MultiViews
    MultiviewsMatch Handlers
    AddHandler wsgi-script .wsgi
</Directory>
",
        d = d.display()
    );
    let (ours, theirs) = Apache::ours_and_debians(d, &site);
    let script = d.join("scripts/app1.wsgi");
    let group = "localhost:PORT|/app1.wsgi";
    for (path, path_info) in [
        ("/app1/x", "/x"),
        ("/app1", ""),
        ("/app1/", "/"),
        ("/app1/x/y?q=1", "/x/y"),
        ("/app1.wsgi/x", "/x"),
    ] {
        let expected = report("/app1.wsgi", path_info, path, &script, group, "");
        both_answer(&ours, &theirs, path, 200, &expected);
    }
    let (o, _) = get(&ours, "/missing/x");
    assert_eq!((o, get(&theirs, "/missing/x").0), (404, 404));
}

/// Point 3: `WSGIApplicationGroup %{ENV:NAME}` takes the variable `SetEnv` or `SetEnvIf`
/// gives the request, when the request is handled; an unset one is the literal name.
#[test]
fn env_application_groups_take_the_request_variables() {
    let dir = folder("wsgi-apache-env-group-", &[("app.wsgi", REPORT)]);
    let d = dir.path();
    let site = format!(
        "{MODULES}WSGIScriptAlias / {d}/app.wsgi
SetEnvIf X-Tenant ^(\\w+)$ TENANT=$1
WSGIApplicationGroup %{{ENV:TENANT}}
<Location /fixed>
    SetEnv TENANT from-setenv
</Location>
<Directory {d}>
    Require all granted
</Directory>
",
        d = d.display()
    );
    let (ours, theirs) = Apache::ours_and_debians(d, &site);
    let script = d.join("app.wsgi");
    for (path, header, group) in [
        ("/a", "X-Tenant: acme\r\n", "acme"),
        ("/fixed/b", "", "from-setenv"),
        ("/c", "", "%{ENV:TENANT}"),
    ] {
        let o = get_raw(&ours, path.as_bytes(), header);
        let t = get_raw(&theirs, path.as_bytes(), header);
        assert_eq!(t, o, "{path}\n{}", ours.error_log());
        assert_eq!(
            o,
            (200, report("", path, path, &script, group, "")),
            "{path}"
        );
    }
}

/// Point 4: raw UTF-8 and latin-1 bytes in the request line reach `PATH_INFO` and
/// `REQUEST_URI` as the latin-1 decoding of the bytes Apache hands over, as mod_wsgi gives
/// them (percent-escapes decoded in `PATH_INFO` only).
#[test]
fn raw_request_line_bytes_decode_as_latin1() {
    let files = [("app.wsgi", REPORT), ("scripts/app.wsgi", REPORT)];
    let dir = folder("wsgi-apache-raw-bytes-", &files);
    let d = dir.path();
    let site = format!(
        "{MODULES}WSGIScriptAlias /s/ {d}/scripts/
WSGIScriptAlias / {d}/app.wsgi
<Directory {d}>
    Require all granted
</Directory>
",
        d = d.display()
    );
    let (ours, theirs) = Apache::ours_and_debians(d, &site);
    for (target, script, script_name, path_info, request_uri) in [
        (
            &b"/raw/\xc3\xa9/\xe9?q=\xe9"[..],
            "app.wsgi",
            "",
            r"/raw/\xc3\xa9/\xe9",
            r"/raw/\xc3\xa9/\xe9?q=\xe9",
        ),
        (
            &b"/s/app.wsgi/\xc3\xa9/\xe9%C3%A9%e9"[..],
            "scripts/app.wsgi",
            "/s/app.wsgi",
            r"/\xc3\xa9/\xe9\xc3\xa9\xe9",
            r"/s/app.wsgi/\xc3\xa9/\xe9%C3%A9%e9",
        ),
    ] {
        let o = get_raw(&ours, target, "");
        let t = get_raw(&theirs, target, "");
        let shown = String::from_utf8_lossy(target);
        assert_eq!(t, o, "{shown}\n{}", ours.error_log());
        let group = format!("localhost:PORT|{script_name}");
        let expected = report(
            script_name,
            path_info,
            request_uri,
            &d.join(script),
            &group,
            "",
        );
        assert_eq!(o, (200, expected), "{shown}");
    }
}

/// Answers with the status line its query string spells (percent-decoded as latin-1).
const STATUS_APP: &str = r#"
from urllib.parse import unquote
def application(environ, start_response):
    start_response(unquote(environ['QUERY_STRING'], 'latin-1'), [('Content-Type', 'text/plain')])
    return [b'ok']
"#;

/// The status line carries the reason phrase the application wrote, byte for byte (a latin-1
/// one too), its code's usual phrase or not, as mod_wsgi's does.
#[test]
fn status_lines_keep_the_apps_reason_phrase_as_mod_wsgi() {
    let dir = folder("wsgi-apache-status-", &[("status.wsgi", STATUS_APP)]);
    let d = dir.path();
    let site = format!(
        "{MODULES}WSGIScriptAlias / {d}/status.wsgi
<Directory {d}>
    Require all granted
</Directory>
",
        d = d.display()
    );
    let (ours, theirs) = Apache::ours_and_debians(d, &site);
    for (status, line) in [
        ("200%20OK", &b"HTTP/1.1 200 OK\r\n"[..]),
        ("200%20Fine%20Thanks", b"HTTP/1.1 200 Fine Thanks\r\n"),
        ("200%20Caf%E9", b"HTTP/1.1 200 Caf\xe9\r\n"),
    ] {
        let request =
            format!("GET /?{status} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        let o = ours.raw(request.as_bytes());
        let t = theirs.raw(request.as_bytes());
        let first_line = |raw: &[u8]| {
            raw[..raw
                .iter()
                .position(|&b| b == b'\n')
                .map_or(raw.len(), |i| i + 1)]
                .to_vec()
        };
        assert_eq!(
            first_line(&o),
            first_line(&t),
            "{status}\n{}",
            ours.error_log()
        );
        assert_eq!(first_line(&o), line, "{status}");
    }
}

/// Writes a line to each of `wsgi.errors`, `sys.stderr` and `sys.stdout`, marked with the
/// query string.
const LOGGING_APP: &str = r#"
import sys
def application(environ, start_response):
    marker = environ['QUERY_STRING']
    environ['wsgi.errors'].write('errors-%s\n' % marker)
    print('stderr-%s' % marker, file=sys.stderr)
    print('stdout-%s' % marker)
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [marker.encode()]
"#;

/// Point 5: what an embedded application writes to `wsgi.errors`, `sys.stderr` and
/// `sys.stdout` is in Apache's error log when the response has arrived, as mod_wsgi writes
/// it (for the request, at level error, so the default `LogLevel warn` shows it), with a
/// daemon process group configured or not.
#[test]
fn embedded_output_reaches_the_error_log_at_once() {
    let dir = folder("wsgi-apache-errors-", &[("app.wsgi", LOGGING_APP)]);
    let d = dir.path();
    for (name, daemon) in [
        ("embedded-only", ""),
        ("with-daemon", "WSGIDaemonProcess unused threads=1\n"),
    ] {
        let run = d.join(name);
        std::fs::create_dir(&run).unwrap();
        let site = format!(
            "LogLevel warn
{daemon}WSGIScriptAlias / {d}/app.wsgi
<Directory {d}>
    Require all granted
</Directory>
",
            d = d.display()
        );
        let (ours, theirs) = Apache::ours_and_debians(&run, &site);
        for apache in [&ours, &theirs] {
            let marker = format!("{name}-{}", apache.port);
            let (status, _, body) = apache.get(&format!("/?{marker}"));
            assert_eq!((status, body), (200, marker.clone().into_bytes()));
            // No wait: the lines must be there by the end of the request.
            let log = apache.error_log();
            for stream in ["errors", "stderr", "stdout"] {
                let line = log
                    .lines()
                    .find(|l| l.ends_with(&format!("] {stream}-{marker}")))
                    .unwrap_or_else(|| panic!("no {stream} line for {marker} in\n{log}"));
                assert!(
                    line.contains(":error] ") && line.contains("[client 127.0.0.1:"),
                    "{line}"
                );
            }
        }
    }
}
