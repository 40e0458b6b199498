//! The scripts mod_wsgi runs beside the application, in a real Apache (Debian's apache2,
//! mpm_event, children as www-data): `WSGIAccessScript`, `WSGIAuthUserScript` (through
//! `AuthBasicProvider wsgi`), `WSGIAuthGroupScript` (`Require wsgi-group`) and
//! `WSGIDispatchScript`, compared with Debian's mod_wsgi where both should agree.

use std::path::Path;

use wsgi_testkit::apache::{Apache, require_debian_mod_wsgi};
use wsgi_testkit::apps::field;
use wsgi_testkit::fs::scratch_world_readable;
use wsgi_testkit::http::{base64, basic_auth, head_header};

/// Apache's auth modules: `AuthType`, Basic auth, `Require valid-user`.
const AUTH_MODULES: &str = "LoadModule authn_core_module /usr/lib/apache2/modules/mod_authn_core.so
LoadModule auth_basic_module /usr/lib/apache2/modules/mod_auth_basic.so
LoadModule authz_user_module /usr/lib/apache2/modules/mod_authz_user.so
";

/// Reports what the application saw.
const APP: &str = r#"
import os

def application(environ, start_response):
    body = '\n'.join([
        'pid=%d' % os.getpid(),
        'user=%s' % environ.get('REMOTE_USER', ''),
        'auth_type=%s' % environ.get('AUTH_TYPE', ''),
        'group=' + environ['mod_wsgi.application_group'],
        'process_group=' + environ['mod_wsgi.process_group'],
        'callable=' + environ['mod_wsgi.callable_object'],
    ]).encode()
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [body]

def other(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'callable=other\ngroup=' + environ['mod_wsgi.application_group'].encode()]
"#;

/// Decides by the X-Access header, or by the client's address.
const ACCESS: &str = r#"
import os

def allow_access(environ, host):
    if 'wsgi.input' in environ:
        raise AssertionError('an access script gets no wsgi.input')
    state = os.path.join(os.path.dirname(__file__), 'state', 'access-pid')
    with open(state, 'w') as f:
        f.write(str(os.getpid()))
    mode = environ.get('HTTP_X_ACCESS', '')
    if mode == 'allow':
        return True
    if mode == 'deny':
        return False
    if mode == 'raise':
        raise RuntimeError('access check failed on purpose')
    if mode == 'odd':
        return 1
    if mode == 'local':
        return host == '127.0.0.1'
    if mode == 'elsewhere':
        return host == '192.0.2.1'
    if mode == 'environ':
        return environ['SCRIPT_NAME'] == '/app' and environ['PATH_INFO'] == '/x/y'
    return None
"#;

/// Users and groups.
const AUTH: &str = r#"
import hashlib

def check_password(environ, user, password):
    if 'wsgi.input' in environ or 'HTTP_AUTHORIZATION' in environ:
        raise AssertionError('an auth script gets neither wsgi.input nor the password header')
    if user == 'alice':
        return password == 'secret'
    if user == 'bob':
        return 'robert' if password == 'builder' else False
    if user in ('dave', 'grouperr'):
        return True
    if user == 'crash':
        raise RuntimeError('password check failed on purpose')
    if user == 'odd':
        return 42
    return None

def get_realm_hash(environ, user, realm):
    if user == 'alice':
        return hashlib.md5(('%s:%s:%s' % (user, realm, 'secret')).encode()).hexdigest()
    if user == 'crash':
        raise RuntimeError('realm hash failed on purpose')
    return None

def groups_for_user(environ, user):
    if user == 'grouperr':
        raise RuntimeError('group lookup failed on purpose')
    return {'alice': ['admin'], 'robert': [b'power users']}.get(user, [])
"#;

/// Picks the application group (and a callable) from the path.
const DISPATCH: &str = r#"
def process_group(environ):
    path = environ['PATH_INFO']
    if path.startswith('/green'):
        return 'green'
    if path.startswith('/embedded'):
        return '%{GLOBAL}'
    if path.startswith('/nowhere'):
        return 'nowhere'
    return None

def application_group(environ):
    if 'mod_wsgi.callable_object' in environ:
        raise AssertionError('a dispatch script gets no callable object')
    path = environ['PATH_INFO']
    if path.startswith('/shop') or path.endswith('-shop'):
        return 'shop'
    if path.startswith('/global'):
        return '%{GLOBAL}'
    if path.startswith('/crash'):
        raise RuntimeError('dispatch failed on purpose')
    return None

def callable_object(environ):
    return 'other' if environ['PATH_INFO'] == '/other' else None
"#;

/// The scripts in `dir`, the app in `dir/open` (access checks) and `dir/locked` (auth), and a
/// folder the scripts can write to.
fn write_scripts(dir: &Path) {
    for (name, text) in [
        ("app.wsgi", APP),
        ("access.wsgi", ACCESS),
        ("auth.wsgi", AUTH),
        ("dispatch.wsgi", DISPATCH),
    ] {
        std::fs::write(dir.join(name), text).unwrap();
    }
    for sub in ["open", "locked", "digest"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        std::fs::write(dir.join(sub).join("app.wsgi"), APP).unwrap();
    }
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::set_permissions(&state, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
}

fn access_site(dir: &Path) -> String {
    format!(
        "WSGIScriptAlias /app {d}/open/app.wsgi
<Directory {d}/open>
    Require all granted
    WSGIAccessScript {d}/access.wsgi
</Directory>
WSGIScriptAlias /closed {d}/open/app.wsgi
<Location /closed>
    Require all denied
</Location>
",
        d = dir.display()
    )
}

fn auth_site(dir: &Path) -> String {
    format!(
        "{AUTH_MODULES}WSGIScriptAlias /members {d}/locked/app.wsgi
WSGIScriptAlias /admins {d}/locked/app.wsgi
<Directory {d}/locked>
    AuthType Basic
    AuthName \"wsgi-rs test\"
    AuthBasicProvider wsgi
    WSGIAuthUserScript {d}/auth.wsgi
    WSGIAuthGroupScript {d}/auth.wsgi
    Require valid-user
</Directory>
<Location /admins>
    Require wsgi-group admin \"power users\"
</Location>
",
        d = dir.display()
    )
}

fn access(apache: &Apache, path: &str, mode: &str) -> u16 {
    apache.request("GET", path, &[("X-Access", mode)], b"").0
}

fn login(apache: &Apache, path: &str, user: &str, password: &str) -> (u16, String, Vec<u8>) {
    apache.request(
        "GET",
        path,
        &[("Authorization", &basic_auth(user, password))],
        b"",
    )
}

#[test]
fn base64_encodes_like_the_rfc() {
    assert_eq!(base64(b"alice:secret"), "YWxpY2U6c2VjcmV0");
    assert_eq!(base64(b"a"), "YQ==");
    assert_eq!(base64(b"ab"), "YWI=");
}

#[test]
fn an_access_script_allows_forbids_and_declines() {
    let dir = scratch_world_readable("wsgi-apache-access-");
    write_scripts(dir.path());
    let mut apache = Apache::start(dir.path(), &access_site(dir.path()));
    let (status, _, body) = apache.request("GET", "/app/x", &[("X-Access", "allow")], b"");
    assert_eq!(status, 200, "{}", apache.error_log());
    assert_eq!(field(&body, "callable"), "application");
    assert_eq!(access(&apache, "/app/x", "deny"), 403);
    assert!(
        apache
            .error_log()
            .contains("denied by the WSGIAccessScript"),
        "{}",
        apache.error_log()
    );
    // None: no opinion, so `Require all granted` decides.
    assert_eq!(access(&apache, "/app/x", ""), 200);
    // By the client's address, the `host` argument without HostnameLookups.
    assert_eq!(access(&apache, "/app/x", "local"), 200);
    assert_eq!(access(&apache, "/app/x", "elsewhere"), 403);
    // By the environ: SCRIPT_NAME and PATH_INFO as the application will see them.
    assert_eq!(access(&apache, "/app/x/y", "environ"), 200);
    assert_eq!(access(&apache, "/app/x/z", "environ"), 403);
    // The script is not consulted where it does not apply.
    assert_eq!(access(&apache, "/closed", "allow"), 403);
    // A failing script is a server error with the traceback in the error log, never a
    // silent decision.
    assert_eq!(access(&apache, "/app/x", "raise"), 500);
    assert_eq!(access(&apache, "/app/x", "odd"), 500);
    let log = apache.error_log();
    assert!(log.contains("access check failed on purpose"), "{log}");
    assert!(log.contains("Traceback"), "{log}");
    assert!(log.contains("access.wsgi"), "{log}");
    assert!(
        log.contains("allow_access() of the WSGIAccessScript")
            && log.contains("returned a value of type int"),
        "{log}"
    );
    apache.stop();
}

#[test]
fn an_access_script_in_htaccess_protects_static_files() {
    let dir = scratch_world_readable("wsgi-apache-htaccess-");
    write_scripts(dir.path());
    let docs = dir.path().join("docs");
    std::fs::create_dir(&docs).unwrap();
    std::fs::write(docs.join("page.txt"), "static page\n").unwrap();
    std::fs::write(
        docs.join(".htaccess"),
        format!("WSGIAccessScript {}/access.wsgi\n", dir.path().display()),
    )
    .unwrap();
    // No WSGI application at all: Python starts in the child for the script alone.
    let site = format!(
        "DocumentRoot {d}
<Directory {d}>
    AllowOverride AuthConfig
    Require all granted
</Directory>
",
        d = docs.display()
    );
    let mut apache = Apache::start(dir.path(), &site);
    let (status, _, body) = apache.request("GET", "/page.txt", &[("X-Access", "allow")], b"");
    assert_eq!(status, 200, "{}", apache.error_log());
    assert_eq!(body, b"static page\n");
    assert_eq!(access(&apache, "/page.txt", "deny"), 403);
    assert_eq!(access(&apache, "/page.txt", ""), 200);
    // A bad option in the file is refused as Apache refuses any bad .htaccess line.
    std::fs::write(
        docs.join(".htaccess"),
        format!(
            "WSGIAccessScript {}/access.wsgi colour=blue\n",
            dir.path().display()
        ),
    )
    .unwrap();
    assert_eq!(access(&apache, "/page.txt", "allow"), 500);
    assert!(
        apache.error_log().contains("colour"),
        "{}",
        apache.error_log()
    );
    apache.stop();
}

#[test]
fn an_access_script_runs_in_the_apache_child_for_a_daemon_application() {
    let dir = scratch_world_readable("wsgi-apache-access-daemon-");
    write_scripts(dir.path());
    let root = dir.path().join("server");
    std::fs::create_dir(&root).unwrap();
    let site = format!(
        "WSGIDaemonProcess site threads=2
WSGIProcessGroup site
{}",
        access_site(dir.path())
    );
    let mut apache = Apache::start(&root, &site);
    let (status, _, body) = apache.request("GET", "/app/x", &[("X-Access", "allow")], b"");
    assert_eq!(status, 200, "{}", apache.error_log());
    assert_eq!(field(&body, "process_group"), "site");
    let app_pid: u32 = field(&body, "pid").parse().unwrap();
    let access_pid: u32 = std::fs::read_to_string(dir.path().join("state/access-pid"))
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(access_pid, app_pid);
    let stat = std::fs::read_to_string(format!("/proc/{access_pid}/stat")).unwrap();
    let ppid: u32 = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        ppid,
        apache.pid(),
        "the access script ran in an Apache child"
    );
    assert_eq!(access(&apache, "/app/x", "deny"), 403);
    apache.stop();
}

#[test]
fn basic_auth_through_the_wsgi_provider() {
    let dir = scratch_world_readable("wsgi-apache-auth-");
    write_scripts(dir.path());
    let mut apache = Apache::start(dir.path(), &auth_site(dir.path()));
    let (status, head, _) = apache.get("/members");
    assert_eq!(status, 401, "{}", apache.error_log());
    assert_eq!(
        head_header(&head, "WWW-Authenticate"),
        Some("Basic realm=\"wsgi-rs test\"")
    );
    let (status, _, body) = login(&apache, "/members", "alice", "secret");
    assert_eq!(status, 200, "{}", apache.error_log());
    assert_eq!(field(&body, "user"), "alice");
    assert_eq!(field(&body, "auth_type"), "Basic");
    assert_eq!(login(&apache, "/members", "alice", "wrong").0, 401);
    assert_eq!(
        login(&apache, "/members", "carol", "x").0,
        401,
        "no such user"
    );
    // A name returned by check_password becomes the user.
    let (status, _, body) = login(&apache, "/members", "bob", "builder");
    assert_eq!(status, 200);
    assert_eq!(field(&body, "user"), "robert");
    assert_eq!(login(&apache, "/members", "bob", "wrong").0, 401);
    assert_eq!(login(&apache, "/members", "crash", "x").0, 500);
    assert_eq!(login(&apache, "/members", "odd", "x").0, 500);
    let log = apache.error_log();
    assert!(log.contains("password check failed on purpose"), "{log}");
    assert!(log.contains("Traceback"), "{log}");
    assert!(
        log.contains("check_password() of the WSGIAuthUserScript")
            && log.contains("returned a value of type int"),
        "{log}"
    );
    apache.stop();
}

#[test]
fn digest_auth_through_the_wsgi_provider() {
    if !Path::new("/usr/bin/curl").exists() {
        eprintln!("curl is missing: it computes the Digest answers");
        return;
    }
    let dir = scratch_world_readable("wsgi-apache-digest-");
    write_scripts(dir.path());
    let site = format!(
        "{AUTH_MODULES}LoadModule auth_digest_module /usr/lib/apache2/modules/mod_auth_digest.so
WSGIScriptAlias /digest {d}/digest/app.wsgi
<Directory {d}/digest>
    AuthType Digest
    AuthName \"wsgi-rs digest\"
    AuthDigestProvider wsgi
    WSGIAuthUserScript {d}/auth.wsgi
    Require valid-user
</Directory>
",
        d = dir.path().display()
    );
    let mut apache = Apache::start(dir.path(), &site);
    let curl = |credentials: &str| -> (u16, String) {
        let out = std::process::Command::new("/usr/bin/curl")
            .args(["-s", "--digest", "-u", credentials, "-w", "\n%{http_code}"])
            .arg(format!("http://127.0.0.1:{}/digest", apache.port))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.trim().parse().unwrap(), body.to_string())
    };
    let (status, body) = curl("alice:secret");
    assert_eq!(status, 200, "{body}\n{}", apache.error_log());
    assert_eq!(field(body.as_bytes(), "user"), "alice");
    assert_eq!(field(body.as_bytes(), "auth_type"), "Digest");
    assert_eq!(curl("alice:wrong").0, 401);
    assert_eq!(curl("carol:x").0, 401);
    assert_eq!(curl("crash:x").0, 500);
    assert!(
        apache.error_log().contains("realm hash failed on purpose"),
        "{}",
        apache.error_log()
    );
    apache.stop();
}

#[test]
fn require_wsgi_group() {
    let dir = scratch_world_readable("wsgi-apache-groups-");
    write_scripts(dir.path());
    let mut apache = Apache::start(dir.path(), &auth_site(dir.path()));
    assert_eq!(apache.get("/admins").0, 401, "{}", apache.error_log());
    let (status, _, body) = login(&apache, "/admins", "alice", "secret");
    assert_eq!(status, 200, "{}", apache.error_log());
    assert_eq!(field(&body, "user"), "alice");
    // A group given as bytes, with a space, named quoted on the Require line; the script
    // sees the name check_password gave.
    assert_eq!(login(&apache, "/admins", "bob", "builder").0, 200);
    // In no required group: Apache asks for other credentials.
    assert_eq!(login(&apache, "/admins", "dave", "x").0, 401);
    assert_eq!(login(&apache, "/members", "dave", "x").0, 200);
    assert_eq!(login(&apache, "/admins", "grouperr", "x").0, 500);
    let log = apache.error_log();
    assert!(log.contains("group lookup failed on purpose"), "{log}");
    assert!(log.contains("Traceback"), "{log}");
    apache.stop();
}

#[test]
fn status_codes_match_debians_mod_wsgi() {
    require_debian_mod_wsgi();
    let dir = scratch_world_readable("wsgi-apache-auth-compare-");
    write_scripts(dir.path());
    let site = format!("{}{}", auth_site(dir.path()), access_site(dir.path()));
    let (ours, theirs) = Apache::ours_and_debians(dir.path(), &site);
    /// A request both servers answer.
    #[derive(Clone, Copy)]
    enum Probe {
        /// GET without credentials.
        Get(&'static str),
        /// GET with Basic credentials: path, user, password.
        Login(&'static str, &'static str, &'static str),
        /// GET /app/x with this X-Access header.
        Access(&'static str),
    }
    let send = |apache: &Apache, probe: Probe| match probe {
        Probe::Get(path) => apache.get(path).0,
        Probe::Login(path, user, password) => login(apache, path, user, password).0,
        Probe::Access(mode) => access(apache, "/app/x", mode),
    };
    // (what, probe, mod_wsgi's status when ours differs on purpose)
    let probes: &[(&str, Probe, Option<u16>)] = &[
        ("no credentials", Probe::Get("/members"), None),
        (
            "right password",
            Probe::Login("/members", "alice", "secret"),
            None,
        ),
        (
            "wrong password",
            Probe::Login("/members", "alice", "no"),
            None,
        ),
        ("unknown user", Probe::Login("/members", "carol", "x"), None),
        (
            "renamed user",
            Probe::Login("/members", "bob", "builder"),
            None,
        ),
        (
            "check_password raises",
            Probe::Login("/members", "crash", "x"),
            None,
        ),
        (
            "check_password returns an int",
            Probe::Login("/members", "odd", "x"),
            None,
        ),
        (
            "in a required group",
            Probe::Login("/admins", "alice", "secret"),
            None,
        ),
        (
            "group given as bytes",
            Probe::Login("/admins", "bob", "builder"),
            None,
        ),
        (
            "in no required group",
            Probe::Login("/admins", "dave", "x"),
            None,
        ),
        // mod_wsgi treats a failing group script as "not a member" (401, asking for other
        // credentials); we answer 500 so the broken script shows.
        (
            "groups_for_user raises",
            Probe::Login("/admins", "grouperr", "x"),
            Some(401),
        ),
        ("access allowed", Probe::Access("allow"), None),
        ("access denied", Probe::Access("deny"), None),
        ("access declined", Probe::Access(""), None),
        ("access by host", Probe::Access("elsewhere"), None),
        // mod_wsgi denies (403) when allow_access raises or returns a non-bool; we answer 500
        // with the traceback or the fix in the log.
        ("allow_access raises", Probe::Access("raise"), Some(403)),
        (
            "allow_access returns an int",
            Probe::Access("odd"),
            Some(403),
        ),
    ];
    let mut differences = Vec::new();
    for (what, probe, theirs_differs) in probes {
        let (o, t) = (send(&ours, *probe), send(&theirs, *probe));
        eprintln!("{what}: ours {o}, mod_wsgi {t}");
        let expected = theirs_differs.unwrap_or(o);
        if t != expected || (theirs_differs.is_some() && o != 500) {
            differences.push(format!("{what}: ours {o}, mod_wsgi {t}"));
        }
    }
    assert!(
        differences.is_empty(),
        "{differences:#?}\nours:\n{}\ntheirs:\n{}",
        ours.error_log(),
        theirs.error_log()
    );
}

#[test]
fn a_dispatch_script_chooses_the_application_group_and_callable() {
    let dir = scratch_world_readable("wsgi-apache-dispatch-");
    write_scripts(dir.path());
    let site = format!(
        "WSGIScriptAlias /app {d}/app.wsgi
WSGIDispatchScript {d}/dispatch.wsgi
<Directory {d}>
    Require all granted
</Directory>
",
        d = dir.path().display()
    );
    let mut apache = Apache::start(dir.path(), &site);
    let port = apache.port;
    let (status, _, body) = apache.get("/app/plain");
    assert_eq!(status, 200, "{}", apache.error_log());
    assert_eq!(field(&body, "group"), format!("localhost:{port}|/app"));
    assert_eq!(field(&apache.get("/app/shop").2, "group"), "shop");
    assert_eq!(field(&apache.get("/app/global").2, "group"), "");
    let (_, _, body) = apache.get("/app/other");
    assert_eq!(field(&body, "callable"), "other");
    assert_eq!(apache.get("/app/crash").0, 500);
    let log = apache.error_log();
    assert!(log.contains("dispatch failed on purpose"), "{log}");
    assert!(log.contains("Traceback"), "{log}");
    // A process group that does not exist is refused with the groups that do.
    assert_eq!(apache.get("/app/nowhere").0, 500);
    assert!(
        apache
            .error_log()
            .contains("no WSGIDaemonProcess `nowhere` is configured"),
        "{}",
        apache.error_log()
    );
    apache.stop();
}

#[test]
fn a_dispatch_script_chooses_the_daemon_process_group() {
    let dir = scratch_world_readable("wsgi-apache-dispatch-daemon-");
    write_scripts(dir.path());
    let root = dir.path().join("server");
    std::fs::create_dir(&root).unwrap();
    let site = format!(
        "WSGIDaemonProcess blue threads=2
WSGIDaemonProcess green threads=2
WSGIProcessGroup blue
WSGIScriptAlias /app {d}/app.wsgi
WSGIDispatchScript {d}/dispatch.wsgi
<Directory {d}>
    Require all granted
</Directory>
",
        d = dir.path().display()
    );
    let mut apache = Apache::start(&root, &site);
    let (status, _, body) = apache.get("/app/x");
    assert_eq!(status, 200, "{}", apache.error_log());
    assert_eq!(field(&body, "process_group"), "blue");
    let blue: u32 = field(&body, "pid").parse().unwrap();
    let (status, _, body) = apache.get("/app/green");
    assert_eq!(status, 200, "{}", apache.error_log());
    assert_eq!(field(&body, "process_group"), "green");
    let green: u32 = field(&body, "pid").parse().unwrap();
    assert_ne!(blue, green);
    // Both overrides at once: another group, in another process.
    let (_, _, body) = apache.get("/app/green-shop");
    assert_eq!(field(&body, "process_group"), "green");
    assert_eq!(field(&body, "group"), "shop");
    // %{GLOBAL}: embedded mode, in the Apache child.
    let (status, _, body) = apache.get("/app/embedded");
    assert_eq!(status, 200, "{}", apache.error_log());
    assert_eq!(field(&body, "process_group"), "");
    let child: u32 = field(&body, "pid").parse().unwrap();
    assert!(child != blue && child != green);
    apache.stop();
}
