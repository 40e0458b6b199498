//! Embedded mode in a real Apache (Debian's apache2, mpm_event, children as www-data): the
//! user's spec scenarios and PEP 3333 behaviour over real HTTP.

use std::path::Path;

use wsgi_testkit::apache::{self, Apache};
use wsgi_testkit::apps::{self, field};
use wsgi_testkit::fs::scratch_world_readable;
use wsgi_testkit::http::{dechunk, split_response};
use wsgi_testkit::venvs::make_venv;

/// An app that answers with facts about its interpreter and request.
const INFO_APP: &str = r#"
import sys
COUNT = 0

def application(environ, start_response):
    global COUNT
    COUNT += 1
    if environ['PATH_INFO'] == '/fail':
        raise ValueError('failing on purpose')
    if environ['PATH_INFO'] == '/midway':
        start_response('200 OK', [('Content-Type', 'text/plain')])
        def body():
            yield b'first part\n'
            raise RuntimeError('failing in the middle of the body')
        return body()
    if environ['REQUEST_METHOD'] == 'POST':
        data = environ['wsgi.input'].read()
        body = b'%d %d' % (len(data), sum(data) % 65521)
    else:
        body = '\n'.join([
            'prefix=' + sys.prefix,
            'group=' + environ['mod_wsgi.application_group'],
            'script_name=' + environ['SCRIPT_NAME'],
            'path_info=' + environ['PATH_INFO'],
            'count=%d' % COUNT,
            'multithread=%s' % environ['wsgi.multithread'],
        ]).encode()
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])
    return [body]
"#;

fn write_app(dir: &Path, name: &str) {
    std::fs::write(dir.join(name), INFO_APP).unwrap();
}

#[test]
fn single_application_in_the_main_interpreter_with_python_home() {
    let dir = scratch_world_readable("wsgi-apache-embedded-");
    let project = dir.path().join("project");
    std::fs::create_dir(&project).unwrap();
    write_app(&project, "myapp.wsgi");
    let venv = dir.path().join("venv");
    make_venv("/usr/bin/python3.11", &venv);
    let site = format!(
        "WSGIPythonHome {venv}
WSGIScriptAlias / {project}/myapp.wsgi
WSGIApplicationGroup %{{GLOBAL}}
<Directory {project}>
    Require all granted
</Directory>
",
        venv = venv.display(),
        project = project.display()
    );
    let mut apache = Apache::start(dir.path(), &site);
    let (status, _, body) = apache.get("/some/page");
    assert_eq!(status, 200, "{}", apache.error_log());
    assert_eq!(field(&body, "prefix"), venv.display().to_string());
    assert_eq!(field(&body, "group"), "");
    assert_eq!(field(&body, "script_name"), "");
    assert_eq!(field(&body, "path_info"), "/some/page");
    assert_eq!(field(&body, "multithread"), "True");
    let took = apache.stop();
    assert!(took.as_secs() < 5, "stopping took {took:?}");
}

#[test]
fn many_applications_each_in_its_own_sub_interpreter() {
    let dir = scratch_world_readable("wsgi-apache-embedded-");
    let project = dir.path().join("project");
    std::fs::create_dir(&project).unwrap();
    for app in ["myapp1.wsgi", "myapp2.wsgi", "myapp3.wsgi"] {
        write_app(&project, app);
    }
    let site = format!(
        "WSGIScriptAlias /myapp3 {p}/myapp3.wsgi
WSGIScriptAlias /myapp2 {p}/myapp2.wsgi
WSGIScriptAlias / {p}/myapp1.wsgi
<Directory {p}>
    Require all granted
</Directory>
",
        p = project.display()
    );
    let mut apache = Apache::start(dir.path(), &site);
    let port = apache.port;
    let (status, _, body) = apache.get("/myapp3/x");
    assert_eq!(status, 200, "{}", apache.error_log());
    assert_eq!(field(&body, "group"), format!("localhost:{port}|/myapp3"));
    assert_eq!(field(&body, "script_name"), "/myapp3");
    assert_eq!(field(&body, "path_info"), "/x");
    let (_, _, body) = apache.get("/myapp2");
    assert_eq!(field(&body, "group"), format!("localhost:{port}|/myapp2"));
    let (_, _, body) = apache.get("/other");
    assert_eq!(field(&body, "group"), format!("localhost:{port}|"));
    // Module state is per interpreter (one child process, see `wsgi_testkit::apache::preamble`): the three apps
    // run the same code, and each counts only its own requests.
    let count = |path: &str| -> u32 { field(&apache.get(path).2, "count").parse().unwrap() };
    let first = count("/myapp2");
    assert_eq!(count("/myapp2"), first + 1);
    assert_eq!(count("/myapp2"), first + 2);
    assert_eq!(
        count("/myapp3"),
        2,
        "/myapp3 saw one request before this one"
    );
    assert_eq!(count("/"), 2, "/ saw one request (/other) before this one");
    let took = apache.stop();
    assert!(
        took.as_secs() < 5,
        "stopping after using sub-interpreters took {took:?}"
    );
}

#[test]
fn directory_mounts_run_only_wsgi_scripts() {
    let dir = scratch_world_readable("wsgi-apache-embedded-");
    let project = dir.path().join("project");
    std::fs::create_dir(&project).unwrap();
    write_app(&project, "app1.wsgi");
    std::fs::write(project.join("notes.txt"), "print('not python')\n").unwrap();
    let site = format!(
        "WSGIScriptAlias / {p}/
<Directory {p}>
    Require all granted
</Directory>
",
        p = project.display()
    );
    let apache = Apache::start(dir.path(), &site);
    let (status, _, body) = apache.get("/app1.wsgi/rest/of/path");
    assert_eq!(status, 200, "{}", apache.error_log());
    assert_eq!(field(&body, "script_name"), "/app1.wsgi");
    assert_eq!(field(&body, "path_info"), "/rest/of/path");
    assert_eq!(apache.get("/notes.txt").0, 404);
    assert_eq!(apache.get("/missing.wsgi").0, 404);
}

#[test]
fn request_bodies_errors_and_access() {
    let dir = scratch_world_readable("wsgi-apache-embedded-");
    let open = dir.path().join("open");
    let closed = dir.path().join("closed");
    std::fs::create_dir(&open).unwrap();
    std::fs::create_dir(&closed).unwrap();
    write_app(&open, "app.wsgi");
    write_app(&closed, "app.wsgi");
    let site = format!(
        "WSGIScriptAlias /app {o}/app.wsgi
WSGIScriptAlias /closed {c}/app.wsgi
<Directory {o}>
    Require all granted
</Directory>
<Directory {c}>
    Require all denied
</Directory>
",
        o = open.display(),
        c = closed.display()
    );
    let apache = Apache::start(dir.path(), &site);

    // A 64 KiB body with Content-Length, and a chunked one.
    let data: Vec<u8> = (0..65536u32).map(|i| (i * 7 % 251) as u8).collect();
    let checksum = data.iter().map(|&b| u32::from(b)).sum::<u32>() % 65521;
    let mut request = format!(
        "POST /app HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        data.len()
    )
    .into_bytes();
    request.extend_from_slice(&data);
    let (status, _, body) = split_response(&apache.raw(&request));
    assert_eq!(status, 200, "{}", apache.error_log());
    assert_eq!(String::from_utf8_lossy(&body), format!("65536 {checksum}"));
    let mut chunked = b"POST /app HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for part in data.chunks(10_000) {
        chunked.extend(format!("{:x}\r\n", part.len()).bytes());
        chunked.extend_from_slice(part);
        chunked.extend(b"\r\n");
    }
    chunked.extend(b"0\r\n\r\n");
    let (status, _, body) = split_response(&apache.raw(&chunked));
    assert_eq!(status, 200);
    assert_eq!(String::from_utf8_lossy(&body), format!("65536 {checksum}"));

    // An exception before the response: 500, and the traceback in the error log.
    assert_eq!(apache.get("/app/fail").0, 500);
    let log = apache.error_log();
    assert!(log.contains("ValueError: failing on purpose"), "{log}");
    assert!(log.contains("Traceback (most recent call last):"), "{log}");

    // An exception in the middle of the body: the client can tell (no final chunk).
    let raw = apache.raw(b"GET /app/midway HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    assert!(String::from_utf8_lossy(&raw[split..]).contains("first part"));
    assert!(
        dechunk(&raw[split + 4..]).is_none(),
        "the body ended cleanly: {:?}",
        String::from_utf8_lossy(&raw)
    );

    // Apache's own access control runs first.
    assert_eq!(apache.get("/closed").0, 403);
}

#[test]
fn a_venv_from_another_python_refuses_the_start() {
    let dir = scratch_world_readable("wsgi-apache-embedded-");
    let venv = dir.path().join("v312");
    make_venv("/root/.pyenv/versions/3.12.1/bin/python3.12", &venv);
    let conf = dir.path().join("httpd.conf");
    std::fs::write(
        &conf,
        format!(
            "{}WSGIPythonHome {}\n",
            apache::preamble(dir.path(), "127.0.0.1:18082"),
            venv.display()
        ),
    )
    .unwrap();
    let out = apache::config_test(&conf);
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "WSGIPythonHome: python-home {v}: {v} was created by Python 3.12.1",
            v = venv.display()
        )),
        "{text}"
    );
}

/// Dumps the environ: one `key=type repr` line per key.
const ENVIRON_APP: &str = r#"
def application(environ, start_response):
    lines = []
    for k in sorted(environ):
        v = environ[k]
        shown = v if isinstance(v, (str, bool, int, tuple, float)) else ''
        lines.append('%s=%s %r' % (k, type(v).__name__, shown))
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return ['\n'.join(lines).encode()]
"#;

/// Keys that differ from Debian's mod_wsgi 4.9.4, with the reason: where 4.9 and 6.1 differ
/// (wsgi-rs gives 6.1's environ: [`the_environ_keys_and_types_are_mod_wsgi_61s`]), by server
/// or client identity, or by design.
const EXPECTED_DIFFERENCES: &[(&str, &str)] = &[
    ("GATEWAY_INTERFACE", "dropped by mod_wsgi 6.1"),
    ("PATH_TRANSLATED", "dropped by mod_wsgi 6.1"),
    ("SERVER_SIGNATURE", "dropped by mod_wsgi 6.1"),
    ("LD_LIBRARY_PATH", "library paths dropped by mod_wsgi 6.1"),
    ("PATH", "dropped by mod_wsgi 6.1"),
    (
        "mod_wsgi.enable_sendfile",
        "6.1 passes it between processes only (x-), not in the environ",
    ),
    (
        "mod_wsgi.ignore_activity",
        "6.1 passes it between processes only (x-), not in the environ",
    ),
    (
        "mod_wsgi.script_reloading",
        "6.1 passes it between processes only (x-), not in the environ",
    ),
    ("mod_wsgi.thread_requests", "dropped by mod_wsgi 6.1"),
    ("mod_wsgi.total_requests", "dropped by mod_wsgi 6.1"),
    (
        "mod_wsgi.script_start",
        "6.1 has mod_wsgi.application_start instead",
    ),
    (
        "mod_wsgi.application_start",
        "added by 6.1 (float seconds since the epoch)",
    ),
    (
        "mod_wsgi.queue_start",
        "6.1 gives it in embedded mode too (0.0)",
    ),
    (
        "mod_wsgi.daemon_start",
        "6.1 gives it in embedded mode too (0.0)",
    ),
    ("mod_wsgi.server_pid", "added by 6.1 (the pid as a str)"),
    (
        "mod_wsgi.request_start",
        "6.1: float seconds (4.9: a str of microseconds); per request",
    ),
    ("mod_wsgi.version", "6.x's (4.9.4 there)"),
    ("mod_wsgi.request_id", "per request"),
    (
        "apache.version",
        "the httpd headers each module was built with (Debian's: 2.4.55)",
    ),
    ("HTTP_HOST", "server identity (port)"),
    ("SERVER_PORT", "server identity"),
    ("REMOTE_PORT", "client identity"),
    ("SERVER_SOFTWARE", "names the module"),
    ("mod_wsgi.application_group", "server identity (port)"),
    ("mod_wsgi.listener_port", "server identity"),
    ("HTTP_COOKIE", "joined with \"; \" (mod_wsgi: \", \")"),
    ("wsgi.errors", "a log writer of another class"),
];

#[test]
fn the_environ_matches_debians_mod_wsgi() {
    let dir = scratch_world_readable("wsgi-apache-environ-");
    std::fs::write(dir.path().join("env.wsgi"), ENVIRON_APP).unwrap();
    let site = format!(
        "WSGIScriptAlias /app {d}/env.wsgi
<Directory {d}>
    Require all granted
</Directory>
",
        d = dir.path().display()
    );
    let (ours, theirs) = Apache::ours_and_debians(dir.path(), &site);
    let request = "GET /app/p%20x/y?q=1&r=%20 HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: a=1\r\nCookie: b=2\r\nX-Dup: 1\r\nX-Dup: 2\r\nX_Under: dropped\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n";
    let parse_env = |apache: &Apache| -> Vec<(String, String)> {
        let (status, _, body) = split_response(&apache.raw(request.as_bytes()));
        assert_eq!(status, 200, "{}", apache.error_log());
        String::from_utf8(body)
            .unwrap()
            .lines()
            .map(|l| {
                let (k, v) = l.split_once('=').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect()
    };
    let ours_env = parse_env(&ours);
    let theirs_env = parse_env(&theirs);
    let expected = |k: &str| EXPECTED_DIFFERENCES.iter().any(|(key, _)| *key == k);
    let lookup = |env: &[(String, String)], k: &str| {
        env.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone())
    };
    let mut differences = Vec::new();
    for (k, v) in &theirs_env {
        if !expected(k) && lookup(&ours_env, k).as_ref() != Some(v) {
            differences.push(format!(
                "{k}: mod_wsgi {v} / ours {:?}",
                lookup(&ours_env, k)
            ));
        }
    }
    for (k, v) in &ours_env {
        if !expected(k) && lookup(&theirs_env, k).is_none() {
            differences.push(format!("{k}: only ours ({v})"));
        }
    }
    assert!(differences.is_empty(), "{differences:#?}");
    assert_eq!(
        lookup(&ours_env, "HTTP_COOKIE").as_deref(),
        Some("str 'a=1; b=2'")
    );
    assert_eq!(
        lookup(&theirs_env, "HTTP_X_DUP").as_deref(),
        Some("str '1, 2'")
    );
    assert!(lookup(&ours_env, "HTTP_X_UNDER").is_none());
}

/// The environ's keys and their values' types are mod_wsgi 6.1.1's, in embedded and daemon
/// mode: the same site served by both modules in the same Apache, the same request.
#[test]
fn the_environ_keys_and_types_are_mod_wsgi_61s() {
    let dir = scratch_world_readable("wsgi-apache-environ61-");
    std::fs::write(dir.path().join("env.wsgi"), apps::ENVIRON_TYPES_APP).unwrap();
    std::fs::write(dir.path().join("values.wsgi"), apps::ENVIRON_VALUES_APP).unwrap();
    let site = format!(
        "WSGIDaemonProcess d processes=2 threads=3
WSGIScriptAlias /emb {d}/env.wsgi
WSGIScriptAlias /dae {d}/env.wsgi process-group=d
WSGIScriptAlias /emb-values {d}/values.wsgi
WSGIScriptAlias /dae-values {d}/values.wsgi process-group=d
<Directory {d}>
    Require all granted
</Directory>
",
        d = dir.path().display()
    );
    let (ours, theirs) = Apache::ours_and_mod_wsgi_61(dir.path(), &site);
    let headers = [("User-Agent", "probe/1"), ("Accept", "*/*")];
    for path in ["/emb/x?a=1", "/dae/x?a=1"] {
        let (status, _, body) = theirs.request("GET", path, &headers, b"");
        assert_eq!(status, 200, "mod_wsgi 6.1: {}", theirs.error_log());
        let expected = apps::environ_types(&body);
        let (status, _, body) = ours.request("GET", path, &headers, b"");
        assert_eq!(status, 200, "ours: {}", ours.error_log());
        let got = apps::environ_types(&body);
        let differences = apps::environ_type_differences(&got, &expected);
        assert!(differences.is_empty(), "GET {path}: {differences:#?}");
        // What the 6.1 forms are, so the comparison cannot pass on two empty answers.
        for (key, kind) in [
            ("apache.version", "tuple"),
            ("mod_wsgi.request_start", "float"),
            ("mod_wsgi.queue_start", "float"),
            ("mod_wsgi.daemon_start", "float"),
            ("mod_wsgi.application_start", "float"),
            ("mod_wsgi.server_pid", "str"),
            ("mod_wsgi.thread_id", "int"),
            ("mod_wsgi.request_id", "str"),
        ] {
            assert_eq!(
                got.get(key).map(String::as_str),
                Some(kind),
                "{key} in {got:#?}"
            );
        }
    }
    // The values: the server's the same, the times and the pid meaning what 6.1's do.
    for path in ["/emb-values", "/dae-values"] {
        let (status, _, expected) = theirs.request("GET", path, &headers, b"");
        assert_eq!(status, 200, "mod_wsgi 6.1: {}", theirs.error_log());
        let (status, _, got) = ours.request("GET", path, &headers, b"");
        assert_eq!(status, 200, "ours: {}", ours.error_log());
        let (expected, got) = (
            String::from_utf8_lossy(&expected),
            String::from_utf8_lossy(&got),
        );
        assert_eq!(got, expected, "GET {path}");
        assert!(got.contains("ordered=True"), "{got}");
    }
}

const PROXY_APP: &str = r#"
def application(environ, start_response):
    keys = ['REMOTE_ADDR', 'wsgi.url_scheme', 'HTTP_HOST', 'HTTP_X_FORWARDED_FOR', 'HTTP_X_REAL_IP']
    body = '\n'.join('%s=%s' % (k, environ.get(k, '-')) for k in keys).encode()
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [body]
"#;

#[test]
fn trusted_proxy_headers_as_mod_wsgi() {
    let dir = scratch_world_readable("wsgi-apache-proxy-");
    std::fs::write(dir.path().join("proxy.wsgi"), PROXY_APP).unwrap();
    let site = |proxies: &str| {
        format!(
            "WSGIScriptAlias /app {d}/proxy.wsgi
WSGITrustedProxyHeaders X-Forwarded-For X-Forwarded-Proto X-Forwarded-Host
WSGITrustedProxies {proxies}
<Directory {d}>
    Require all granted
</Directory>
",
            d = dir.path().display()
        )
    };
    let request = b"GET /app HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-For: 203.0.113.9, 127.0.0.1\r\nX-Real-IP: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: www.example.com\r\nConnection: close\r\n\r\n";
    // From a trusted proxy (the test runs on loopback).
    let trusted_root = dir.path().join("trusted");
    std::fs::create_dir(&trusted_root).unwrap();
    let apache = Apache::start(&trusted_root, &site("127.0.0.1"));
    let (_, _, body) = split_response(&apache.raw(request));
    assert_eq!(field(&body, "REMOTE_ADDR"), "203.0.113.9");
    assert_eq!(field(&body, "wsgi.url_scheme"), "https");
    assert_eq!(field(&body, "HTTP_HOST"), "www.example.com");
    assert_eq!(
        field(&body, "HTTP_X_REAL_IP"),
        "-",
        "a synonym of a trusted header is removed"
    );
    drop(apache);
    // From a peer outside WSGITrustedProxies: nothing is believed, the spoofable headers go.
    let untrusted_root = dir.path().join("untrusted");
    std::fs::create_dir(&untrusted_root).unwrap();
    let apache = Apache::start(&untrusted_root, &site("10.0.0.0/8"));
    let (_, _, body) = split_response(&apache.raw(request));
    assert_eq!(field(&body, "REMOTE_ADDR"), "127.0.0.1");
    assert_eq!(field(&body, "wsgi.url_scheme"), "http");
    assert_eq!(field(&body, "HTTP_HOST"), "localhost");
    assert_eq!(field(&body, "HTTP_X_FORWARDED_FOR"), "-");
    assert_eq!(field(&body, "HTTP_X_REAL_IP"), "-");
}

const METHOD_APP: &str = r#"
def application(environ, start_response):
    body = ('method=' + environ['REQUEST_METHOD']).encode()
    start_response('200 OK', [('Content-Type', 'text/plain'), ('X-Seen-Method', environ['REQUEST_METHOD'])])
    return [body]
"#;

#[test]
fn head_requests_follow_wsgi_map_head_to_get() {
    let dir = scratch_world_readable("wsgi-apache-head-");
    std::fs::write(dir.path().join("m.wsgi"), METHOD_APP).unwrap();
    let site = |mode: &str| {
        format!(
            "WSGIScriptAlias /m {d}/m.wsgi
WSGIMapHEADToGET {mode}
<Directory {d}>
    Require all granted
</Directory>
",
            d = dir.path().display()
        )
    };
    for (mode, seen) in [("Auto", "HEAD"), ("On", "GET"), ("Off", "HEAD")] {
        let root = dir.path().join(mode);
        std::fs::create_dir(&root).unwrap();
        let apache = Apache::start(&root, &site(mode));
        let raw = apache.raw(b"HEAD /m HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        let text = String::from_utf8_lossy(&raw);
        assert!(text.starts_with("HTTP/1.1 200"), "{mode}: {text}");
        assert!(
            text.contains(&format!("X-Seen-Method: {seen}")),
            "{mode}: {text}"
        );
        assert!(
            !text.contains("method="),
            "{mode}: a HEAD response has no body: {text}"
        );
    }
}

#[test]
fn import_scripts_are_preloaded_before_any_request() {
    let dir = scratch_world_readable("wsgi-apache-import-");
    let marks = dir.path().join("marks");
    std::fs::create_dir(&marks).unwrap();
    // The children run as www-data: they must be able to write the marker.
    std::fs::set_permissions(&marks, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let marker = marks.join("preloaded");
    std::fs::write(
        dir.path().join("preload.py"),
        format!(
            "import builtins, os\nbuiltins.PRELOADED_BY = os.getpid()\nwith open({:?}, 'a') as f:\n    f.write('%d\\n' % os.getpid())\n",
            marker.display().to_string()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("app.wsgi"),
        "import builtins\n\ndef application(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [str(getattr(builtins, 'PRELOADED_BY', 'not preloaded')).encode()]\n",
    )
    .unwrap();
    let site = format!(
        "WSGIImportScript {d}/preload.py process-group=%{{GLOBAL}} application-group=shared
WSGIScriptAlias /app {d}/app.wsgi application-group=shared
<Directory {d}>
    Require all granted
</Directory>
",
        d = dir.path().display()
    );
    let root = dir.path().join("server");
    std::fs::create_dir(&root).unwrap();
    let apache = Apache::start(&root, &site);
    // Loaded at child start, before any request.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !marker.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let preloaded_by = std::fs::read_to_string(&marker)
        .unwrap_or_else(|_| panic!("no child preloaded the script\n{}", apache.error_log()));
    let (status, _, body) = apache.get("/app");
    assert_eq!(status, 200, "{}", apache.error_log());
    let pid = String::from_utf8_lossy(&body).to_string();
    assert!(
        preloaded_by.lines().any(|l| l == pid),
        "the app's interpreter was not the preloaded one: {pid} not in {preloaded_by:?}"
    );
}

/// An app with two callables, each saying which it is and whether it saw the credentials.
const TWO_CALLABLES_APP: &str = r#"
def answer(name, environ, start_response):
    body = ('callable=%s\nauthorization=%s' % (name, environ.get('HTTP_AUTHORIZATION', 'none'))).encode()
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])
    return [body]

def application(environ, start_response):
    return answer('application', environ, start_response)

def other(environ, start_response):
    return answer('other', environ, start_response)
"#;

/// `.htaccess` files (`AllowOverride FileInfo`) set WSGI settings for their directory, read
/// per request, as with mod_wsgi: a file that names another callable and passes the
/// credentials changes that directory only; a directive `.htaccess` may not hold is a 500.
/// Debian's mod_wsgi, serving the same tree, answers the same.
#[test]
fn htaccess_files_set_wsgi_settings_per_directory() {
    let dir = scratch_world_readable("wsgi-apache-htaccess-");
    let tree = dir.path().join("tree");
    for sub in ["open", "private", "wrong"] {
        std::fs::create_dir_all(tree.join(sub)).unwrap();
        std::fs::write(tree.join(sub).join("app.wsgi"), TWO_CALLABLES_APP).unwrap();
    }
    std::fs::write(
        tree.join("private/.htaccess"),
        "WSGICallableObject other\nWSGIPassAuthorization On\n",
    )
    .unwrap();
    std::fs::write(tree.join("wrong/.htaccess"), "WSGIProcessGroup shop\n").unwrap();
    let site = format!(
        "WSGIScriptAlias / {t}/
<Directory {t}>
    AllowOverride FileInfo
    Require all granted
</Directory>
",
        t = tree.display()
    );
    let credentials = [("Authorization", "Basic dXNlcjpwYXNz")];
    let probe = |apache: &Apache| {
        let get = |path: &str| {
            let (status, _, body) = apache.request("GET", path, &credentials, b"");
            (status, String::from_utf8_lossy(&body).into_owned())
        };
        (
            get("/open/app.wsgi"),
            get("/private/app.wsgi"),
            get("/wrong/app.wsgi").0,
        )
    };
    let alone = dir.path().join("alone");
    std::fs::create_dir(&alone).unwrap();
    let ours = Apache::start(&alone, &site);
    let (open, private, wrong) = probe(&ours);
    assert_eq!(
        open,
        (200, "callable=application\nauthorization=none".into()),
        "{}",
        ours.error_log()
    );
    assert_eq!(
        private,
        (
            200,
            "callable=other\nauthorization=Basic dXNlcjpwYXNz".into()
        )
    );
    assert_eq!(wrong, 500);
    assert!(
        ours.error_log().contains("WSGIProcessGroup"),
        "{}",
        ours.error_log()
    );
    drop(ours);
    apache::require_debian_mod_wsgi();
    let (ours, theirs) = Apache::ours_and_debians(dir.path(), &site);
    assert_eq!(probe(&ours), probe(&theirs));
}

/// `WSGIFreeThreading On` (mod_wsgi 6) with a Python that has a GIL: served, and a warning
/// says the line has no effect.
#[test]
fn free_threading_without_a_free_threaded_python_is_explained() {
    let dir = scratch_world_readable("wsgi-apache-embedded-");
    let project = dir.path().join("project");
    std::fs::create_dir(&project).unwrap();
    write_app(&project, "myapp.wsgi");
    let site = format!(
        "WSGIFreeThreading On
WSGIScriptAlias / {project}/myapp.wsgi
<Directory {project}>
    Require all granted
</Directory>
",
        project = project.display()
    );
    let mut apache = Apache::start(dir.path(), &site);
    let (status, _, _) = apache.get("/");
    assert_eq!(status, 200, "{}", apache.error_log());
    apache.stop();
    let log = apache.error_log();
    assert!(
        log.contains(
            "WSGIFreeThreading On has no effect: mod_wsgi_rs is built against Python 3.11, which is not a free-threaded build"
        ),
        "{log}"
    );
}
