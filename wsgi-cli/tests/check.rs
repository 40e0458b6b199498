//! `wsgi check`, `wsgi venv` and `wsgi --version`, run as the real binary against real
//! configuration files and real virtual environments.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

// Files written world-readable (0644, whatever the umask): the scripts are checked to be
// readable by the user who serves.
use wsgi_testkit::fs::{scratch_world_readable, write_world_readable as write};
use wsgi_testkit::process::{is_root, output_text as text};
use wsgi_testkit::venvs::{make_venv, tools_dir};

fn wsgi(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wsgi"))
        .args(args)
        .output()
        .expect("the wsgi binary runs")
}

/// A world-readable scratch folder under /var/tmp (Apache's user must be able to read it).
fn scratch() -> tempfile::TempDir {
    scratch_world_readable("wsgi-cli-test-")
}

/// The `error: ` lines of a `wsgi check` text output, without the prefix.
fn error_lines(t: &str) -> Vec<String> {
    t.lines()
        .filter_map(|l| l.strip_prefix("error: "))
        .map(str::to_string)
        .collect()
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

#[test]
fn version_names_the_embedded_python() {
    let out = wsgi(&["--version"]);
    assert!(out.status.success());
    let t = text(&out);
    assert!(
        t.starts_with(&format!(
            "wsgi {}\nembeds CPython 3.11.",
            env!("CARGO_PKG_VERSION")
        )),
        "{t}"
    );
    assert!(
        t.contains("installation: /usr (/usr/bin/python3.11)"),
        "{t}"
    );
    assert!(
        t.contains("libpython: /usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0"),
        "{t}"
    );
}

#[test]
fn check_prints_the_routing_table_of_the_example() {
    let conf = examples().join("hello/site.conf");
    let out = wsgi(&["check", conf.to_str().unwrap()]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("main server (localhost)"), "{t}");
    assert!(t.contains("/ -> "), "{t}");
    assert!(t.contains("examples/hello/hello.wsgi"), "{t}");
    assert!(
        t.contains("process group: embedded   application group: %{GLOBAL} (main interpreter)"),
        "{t}"
    );
    assert!(t.ends_with("configuration OK\n"), "{t}");
}

#[test]
fn check_reports_every_error_with_file_and_line_and_exits_1() {
    let dir = scratch();
    let conf = write(
        &dir.path().join("site.conf"),
        "<VirtualHost *:80>\n  WSGIPythonHome /usr/local/venvs/myapp\n  WSGIProcessGroup nothere\n</VirtualHost>\nWSGIDaemonProcess x proceses=2\n",
    );
    let out = wsgi(&["check", conf.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out);
    let shown = conf.display().to_string();
    assert!(
        t.contains(&format!(
            "error: {shown}:2: WSGIPythonHome: cannot occur within <VirtualHost> section"
        )),
        "{t}"
    );
    assert!(t.contains(&format!("error: {shown}:5: WSGIDaemonProcess x: unknown option `proceses` (did you mean `processes`?)")), "{t}");
    assert!(
        t.contains(&format!(
            "error: {shown}:3: WSGIProcessGroup: no daemon process group named `nothere`"
        )),
        "{t}"
    );
    assert!(t.contains("3 error(s)"), "{t}");
}

#[test]
fn check_json_is_for_tools() {
    let dir = scratch();
    let script = write(
        &dir.path().join("app.wsgi"),
        "def application(e, s): pass\n",
    );
    let conf = write(
        &dir.path().join("site.conf"),
        &format!(
            "WSGIDaemonProcess site processes=2 threads=4\nWSGIScriptAlias /app {} process-group=site\n",
            script.display()
        ),
    );
    let out = wsgi(&["check", conf.to_str().unwrap(), "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["mounts"][0]["mount"], "/app");
    assert_eq!(v["mounts"][0]["process_group"], "site");
    assert_eq!(v["errors"].as_array().unwrap().len(), 0);
}

#[test]
fn check_refuses_a_venv_from_another_python() {
    let dir = scratch();
    let venv = dir.path().join("v312");
    make_venv("/root/.pyenv/versions/3.12.1/bin/python3.12", &venv);
    let conf = write(
        &dir.path().join("site.conf"),
        &format!("WSGIDaemonProcess app python-home={}\n", venv.display()),
    );
    let out = wsgi(&["check", conf.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out);
    assert!(
        t.contains(&format!(
            "site.conf:1: WSGIDaemonProcess app: python-home=`{v}`: {v} is a virtual environment of Python 3.12.1, and this wsgi-rs embeds Python 3.11.",
            v = venv.display()
        )),
        "{t}"
    );
    // A daemon group may run on another Python, with the wsgi-rs installed in its venv.
    assert!(
        t.contains(&format!("and {}/bin/wsgi does not exist", venv.display())),
        "{t}"
    );
}

#[test]
fn check_accepts_a_venv_of_the_embedded_python_and_checks_the_user() {
    let dir = scratch();
    let venv = dir.path().join("ok");
    make_venv("/usr/bin/python3.11", &venv);
    let conf = write(
        &dir.path().join("site.conf"),
        &format!("User www-data\nWSGIPythonHome {}\n", venv.display()),
    );
    let out = wsgi(&["check", conf.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));

    // The same venv under /root, which www-data cannot enter.
    let hidden = tempfile::Builder::new()
        .prefix("wsgi-cli-test-")
        .tempdir_in("/root")
        .unwrap();
    let venv = hidden.path().join("app");
    make_venv("/usr/bin/python3.11", &venv);
    let conf = write(
        &dir.path().join("root.conf"),
        &format!("WSGIPythonHome {}\n", venv.display()),
    );
    let out = wsgi(&["check", conf.to_str().unwrap(), "--user", "www-data"]);
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out);
    assert!(
        t.contains("/root is not searchable by user www-data (mode 0700"),
        "{t}"
    );
    assert!(t.contains("move it outside /root"), "{t}");
}

#[test]
fn venv_reports_and_gives_the_line_to_use() {
    let dir = scratch();
    let venv = dir.path().join("myapp");
    make_venv("/usr/bin/python3.11", &venv);
    let out = wsgi(&["venv", venv.to_str().unwrap(), "--user", "www-data"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("a virtual environment made by `python -m venv`"),
        "{t}"
    );
    assert!(t.contains("activate_this.py: no"), "{t}");
    assert!(
        t.contains(&format!(
            "WSGIDaemonProcess NAME python-home={}",
            venv.display()
        )),
        "{t}"
    );
    assert!(
        t.contains(&format!("WSGIPythonHome {}", venv.display())),
        "{t}"
    );

    let out = wsgi(&["venv", venv.join("bin/python").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out);
    assert!(
        t.contains(&format!(
            "not its python executable; use {}",
            venv.display()
        )),
        "{t}"
    );

    let out = wsgi(&["venv", venv.to_str().unwrap(), "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["report"]["kind"], "venv");
    assert_eq!(v["embedded"]["executable"], "/usr/bin/python3.11");
}

#[test]
fn venv_knows_uv_and_virtualenv() {
    let tools = tools_dir();
    let dir = scratch();
    let uv = dir.path().join("uv");
    let status = Command::new(tools.join("uv"))
        .args(["venv", "-q", "--python", "/usr/bin/python3.11"])
        .arg(&uv)
        .env("UV_PYTHON_DOWNLOADS", "never")
        .status()
        .unwrap();
    assert!(status.success());
    let t = text(&wsgi(&["venv", uv.to_str().unwrap()]));
    assert!(t.contains("a virtual environment made by uv "), "{t}");
    assert!(t.contains("activate_this.py: yes"), "{t}");

    let ve = dir.path().join("ve");
    let status = Command::new(tools.join("virtualenv"))
        .args([
            "-q",
            "--no-pip",
            "--no-setuptools",
            "--no-wheel",
            "-p",
            "/usr/bin/python3.11",
        ])
        .arg(&ve)
        .status()
        .unwrap();
    assert!(status.success());
    let t = text(&wsgi(&["venv", ve.to_str().unwrap()]));
    assert!(
        t.contains("a virtual environment made by virtualenv "),
        "{t}"
    );
    assert!(t.contains("usable: yes"), "{t}");
}

#[test]
fn per_interpreter_gil_needs_python_3_12() {
    let dir = scratch();
    let conf = write(&dir.path().join("site.conf"), "WSGIPerInterpreterGIL On\n");
    let out = wsgi(&["check", conf.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out);
    assert!(
        t.contains("error: WSGIPerInterpreterGIL On needs Python 3.12 or newer, and this build embeds Python 3.11."),
        "{t}"
    );
    // In a <WSGIInterpreterOptions> section too, naming it.
    let conf = write(
        &dir.path().join("section.conf"),
        "<WSGIInterpreterOptions application-group=a>\n    WSGIPerInterpreterGIL On\n</WSGIInterpreterOptions>\n",
    );
    let out = wsgi(&["check", conf.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out);
    assert!(
        t.contains(&format!("error: WSGIPerInterpreterGIL On (in the <WSGIInterpreterOptions> section at {}:1) needs Python 3.12 or newer, and this build embeds Python 3.11.", conf.display())),
        "{t}"
    );
}

#[test]
fn apache_config_prints_a_site_that_passes_check() {
    let dir = scratch();
    let module = write(&dir.path().join("libwsgi_apache.so"), "");
    let script = write(
        &dir.path().join("app.wsgi"),
        "def application(e, s): pass\n",
    );
    let venv = dir.path().join("venv");
    make_venv("/usr/bin/python3.11", &venv);
    let out = wsgi(&[
        "apache-config",
        "--module",
        module.to_str().unwrap(),
        "--site",
        script.to_str().unwrap(),
        "--python-home",
        venv.to_str().unwrap(),
        "--port",
        "8080",
    ]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains(&format!("LoadModule wsgi_rs_module {}", module.display())),
        "{t}"
    );
    assert!(
        t.contains(&format!("python-home={}", venv.display())),
        "{t}"
    );
    let conf = write(
        &dir.path().join("generated.conf"),
        &String::from_utf8_lossy(&out.stdout),
    );
    let check = wsgi(&["check", conf.to_str().unwrap()]);
    assert!(check.status.success(), "{}", text(&check));

    let bad = wsgi(&[
        "apache-config",
        "--module",
        module.to_str().unwrap(),
        "--site",
        script.to_str().unwrap(),
        "--python-home",
        venv.join("bin/python").to_str().unwrap(),
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad).contains("not its python executable"),
        "{}",
        text(&bad)
    );
}

/// Lines `wsgi serve --config` does not implement are errors of `wsgi check`, each with its
/// file and line, what it does and what to do; `--apache` checks for Apache, where they are
/// Apache's business.
#[test]
fn check_reports_what_wsgi_serve_would_refuse_unless_for_apache() {
    let dir = scratch();
    let app = write(
        &dir.path().join("app.wsgi"),
        "def application(e, s):\n    s('200 OK', [])\n    return [b'']\n",
    );
    let conf = write(
        &dir.path().join("site.conf"),
        &format!(
            "WSGIScriptAlias / {}\nKeepAliveTimeout 5\n<Location /private>\n    Require ldap-group cn=admins\n</Location>\nRewriteEngine On\nAddHandler cgi-script .cgi\nAddHandler wsgi-script .wsgi\n",
            app.display()
        ),
    );
    let shown = conf.display().to_string();
    let out = wsgi(&["check", conf.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains(&format!(
            "error: wsgi serve --config refuses {shown}:4: `Require ldap-group cn=admins`: this access control form is not implemented by wsgi serve (Require all, ip, local, host, env, method, valid-user, user, group and wsgi-group are): serve this site with Apache and mod_wsgi_rs (`wsgi apache-config` prints the LoadModule line), or remove the line"
        )),
        "{t}"
    );
    assert!(
        t.contains(&format!(
            "{shown}:6: `RewriteEngine On`: mod_rewrite is not implemented by wsgi serve"
        )),
        "{t}"
    );
    assert!(
        t.contains(&format!(
            "{shown}:7: `AddHandler cgi-script .cgi`: Apache handlers (CGI, other modules' handlers) are not implemented by wsgi serve"
        )),
        "{t}"
    );
    assert!(!t.contains("KeepAliveTimeout"), "{t}");
    assert!(t.contains("3 error(s)"), "{t}");
    let out = wsgi(&["check", "--apache", conf.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
}

/// Logs `wsgi serve` does not write as Apache would are refused line by line: to a program or
/// syslog, a condition other than `env=`, a format item it does not implement, a log inside a
/// `<Location>`.
#[test]
fn check_refuses_the_log_forms_wsgi_serve_does_not_write() {
    let dir = scratch();
    let app = write(
        &dir.path().join("app.wsgi"),
        "def application(e, s):\n    s('200 OK', [])\n    return [b'']\n",
    );
    let d = dir.path().display();
    let conf = write(
        &dir.path().join("site.conf"),
        &format!(
            "WSGIScriptAlias / {app}\n\
             LogFormat \"%h %t %{{cookie}}C\" withcookie\n\
             CustomLog \"|/usr/bin/rotatelogs {d}/a.%Y 86400\" combined\n\
             ErrorLog syslog:local1\n\
             CustomLog {d}/ok.log combined\n\
             CustomLog {d}/expr.log combined \"expr=%{{REQUEST_STATUS}} >= 400\"\n\
             CustomLog {d}/cookie.log withcookie\n\
             <Location /x>\n    CustomLog {d}/x.log combined\n</Location>\n",
            app = app.display()
        ),
    );
    let shown = conf.display().to_string();
    let out = wsgi(&["check", conf.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    for (line, what) in [
        (
            3,
            "piped and syslog logs are not implemented by wsgi serve: log to a file (and rotate it with SIGUSR1)",
        ),
        (
            4,
            "piped and syslog logs are not implemented by wsgi serve: log to a file (and rotate it with SIGUSR1)",
        ),
        (
            6,
            "the log condition `expr=%{REQUEST_STATUS} >= 400` is not implemented by wsgi serve (only env=VAR and env=!VAR)",
        ),
        (7, "`%{cookie}C` is not implemented by wsgi serve"),
        (
            9,
            "CustomLog belongs in the server or a <VirtualHost>, not in a <Directory>, <Files> or <Location> (Apache refuses it there too)",
        ),
    ] {
        assert!(
            t.contains(&format!("{shown}:{line}: `")) && t.contains(what),
            "line {line}: {what}\n{t}"
        );
    }
    assert!(!t.contains(&format!("{shown}:5:")), "{t}");
    assert!(t.contains("5 error(s)"), "{t}");
}

/// A `WSGIDaemonProcess` line with bad options reports each of them, and still defines its
/// group: the lines naming the group are not refused too.
#[test]
fn check_reports_every_bad_option_and_no_cascade() {
    let dir = scratch();
    let conf = write(
        &dir.path().join("site.conf"),
        "WSGIDaemonProcess app processes=abc threads=x python-home=/srv/venv/bin/python\n\
         WSGIProcessGroup app\n\
         WSGIScriptAlias /app /srv/app.wsgi process-group=app application-group= pass-authorization=yes\n",
    );
    let out = wsgi(&["check", conf.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out);
    let c = conf.display();
    assert_eq!(
        error_lines(&t),
        [
            format!(
                "{c}:1: WSGIDaemonProcess app: processes=`abc` is not valid: use a whole number from 1 to 1024"
            ),
            format!(
                "{c}:1: WSGIDaemonProcess app: threads=`x` is not valid: use a whole number from 0 to 65533"
            ),
            format!(
                "{c}:1: WSGIDaemonProcess app: python-home=`/srv/venv/bin/python` is the virtual environment's python executable, not its root (the folder holding bin/ and lib/, what `python -c 'import sys; print(sys.prefix)'` prints): use /srv/venv"
            ),
            format!(
                "{c}:3: WSGIScriptAlias: application-group=`` is not valid: give an application group name, or %{{GLOBAL}} for the main interpreter"
            ),
            format!("{c}:3: WSGIScriptAlias: pass-authorization=`yes` is not valid: use On or Off"),
        ],
        "{t}"
    );
    assert!(t.ends_with(&format!("{c}: 5 error(s)\n")), "{t}");
}

/// A WSGI script the user who runs it cannot read is an error naming the script and the user:
/// the configuration's `User`, else (as root) www-data as `wsgi serve` picks, else the daemon
/// group's `user=`; in a script folder, each file it cannot read.
#[test]
fn check_reports_scripts_the_serving_user_cannot_read() {
    if !is_root() {
        eprintln!(
            "skipped: making a script only root can read, and checking it for www-data, needs root"
        );
        return;
    }
    let dir = scratch();
    let secret = write(
        &dir.path().join("secret.wsgi"),
        "def application(e, s): pass\n",
    );
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let open = write(
        &dir.path().join("open.wsgi"),
        "def application(e, s): pass\n",
    );
    let apps = dir.path().join("apps");
    std::fs::create_dir(&apps).unwrap();
    std::fs::set_permissions(&apps, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    write(&apps.join("ok.wsgi"), "def application(e, s): pass\n");
    let hidden = write(&apps.join("hidden.wsgi"), "def application(e, s): pass\n");
    std::fs::set_permissions(&hidden, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let (s, o, a, h) = (
        secret.display(),
        open.display(),
        apps.display(),
        hidden.display(),
    );
    let unreadable = |user: &str, why: &str, path: &dyn std::fmt::Display| {
        format!(
            "the WSGI script {path} cannot be read by {user}, who runs it ({why}): {path} is not readable by {user} (mode 0600, owner root, group root): allow it with `chmod -R a+rX {path}`"
        )
    };

    // The configuration's User.
    let conf = write(
        &dir.path().join("user.conf"),
        &format!(
            "User www-data\nWSGIScriptAlias /secret {s}\nWSGIScriptAlias /open {o}\nWSGIScriptAlias /apps/ {a}/\n"
        ),
    );
    let out = wsgi(&["check", conf.to_str().unwrap()]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    let c = conf.display();
    assert_eq!(
        error_lines(&t),
        [
            format!(
                "{c}:2: WSGIScriptAlias /secret: {}",
                unreadable("www-data", "the configuration's User", &s)
            ),
            format!(
                "{c}:4: WSGIScriptAlias /apps/: {}",
                unreadable("www-data", "the configuration's User", &h)
            ),
        ],
        "{t}"
    );

    // No User: www-data, as `wsgi serve` started as root picks; --user names another.
    let conf = write(
        &dir.path().join("default.conf"),
        &format!("WSGIScriptAlias / {s}\n"),
    );
    let c = conf.display();
    let out = wsgi(&["check", conf.to_str().unwrap()]);
    assert_eq!(
        error_lines(&text(&out)),
        [format!(
            "{c}:1: WSGIScriptAlias /: {}",
            unreadable(
                "www-data",
                "the default when started as root: www-data where it exists, else nobody",
                &s
            )
        )],
        "{}",
        text(&out)
    );
    let out = wsgi(&["check", conf.to_str().unwrap(), "--user", "nobody"]);
    assert_eq!(
        error_lines(&text(&out)),
        [format!(
            "{c}:1: WSGIScriptAlias /: {}",
            unreadable("nobody", "--user", &s)
        )],
        "{}",
        text(&out)
    );
    let out = wsgi(&["check", conf.to_str().unwrap(), "--user", "root"]);
    assert!(out.status.success(), "{}", text(&out));

    // A daemon group's user= runs its scripts.
    let conf = write(
        &dir.path().join("daemon.conf"),
        &format!(
            "User www-data\nWSGIDaemonProcess app user=nobody\nWSGIScriptAlias / {s} process-group=app\n"
        ),
    );
    let c = conf.display();
    let out = wsgi(&["check", conf.to_str().unwrap()]);
    assert_eq!(
        error_lines(&text(&out)),
        [format!(
            "{c}:3: WSGIScriptAlias /: {}",
            unreadable("nobody", "the user= of WSGIDaemonProcess app", &s)
        )],
        "{}",
        text(&out)
    );

    // A handler script, as the user who runs it.
    let conf = write(
        &dir.path().join("handler.conf"),
        &format!("User www-data\nWSGIHandlerScript pages {s}\nAddHandler pages .page\n"),
    );
    let c = conf.display();
    let out = wsgi(&["check", conf.to_str().unwrap()]);
    assert_eq!(
        error_lines(&text(&out)),
        [format!(
            "{c}:2: WSGIHandlerScript pages: {}",
            unreadable("www-data", "the configuration's User", &s)
        )],
        "{}",
        text(&out)
    );

    // A bad option elsewhere hides neither the script nor the group's user.
    let conf = write(
        &dir.path().join("both.conf"),
        &format!(
            "User www-data\nWSGIDaemonProcess app user=nobody threads=x\nWSGIScriptAlias / {s} process-group=app\n"
        ),
    );
    let c = conf.display();
    let out = wsgi(&["check", conf.to_str().unwrap()]);
    assert_eq!(
        error_lines(&text(&out)),
        [
            format!(
                "{c}:2: WSGIDaemonProcess app: threads=`x` is not valid: use a whole number from 0 to 65533"
            ),
            format!(
                "{c}:3: WSGIScriptAlias /: {}",
                unreadable("nobody", "the user= of WSGIDaemonProcess app", &s)
            )
        ],
        "{}",
        text(&out)
    );
}
