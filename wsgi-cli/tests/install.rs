//! `pip install` from this source tree into venvs of two Pythons: Debian's 3.11 and a 3.12
//! (pyenv's, copied where every user can read it by `scripts/setup-test-env.sh`). Each venv's
//! `wsgi` runs applications on its own Python, a stock Django project included; and a daemon
//! process group whose python-home is the venv of the other Python runs on that Python, under
//! `wsgi serve` and under the Apache module, both built against Debian's 3.11.

mod util;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use util::{Launch, Server};
use wsgi_testkit::{apache, fs, process, venvs};

/// Debian's Python, the one this workspace's own builds embed.
const PY311: &str = "/usr/bin/python3.11";

/// The world-readable copy of pyenv's 3.12 the setup script makes.
fn py312() -> PathBuf {
    venvs::test_root().join("python3.12/bin/python3.12")
}

/// The workspace root: what `pip install` is given.
fn source_tree() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Runs `cmd` to its end, at most `limit`; panics with its output when it fails.
fn run(cmd: &mut Command, limit: Duration) -> String {
    let what = format!("{cmd:?}");
    let out_file = tempfile::tempfile().unwrap();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out_file.try_clone().unwrap())
        .stderr(out_file.try_clone().unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} took more than {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut out = String::new();
    use std::io::{Read, Seek};
    let mut f = out_file;
    f.rewind().unwrap();
    f.read_to_string(&mut out).unwrap();
    assert!(status.success(), "{what}: {status}\n{out}");
    out
}

/// The venvs of this test run, below one folder removed when the run ends... or, since
/// statics are never dropped, by the next run (folders of runs whose process is gone).
fn venvs_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let base = venvs::test_root().join("pip-venvs");
        std::fs::create_dir_all(&base).unwrap();
        for entry in std::fs::read_dir(&base).unwrap().flatten() {
            let pid = entry.file_name().to_string_lossy().parse::<u32>().ok();
            if pid.is_some_and(|pid| !process::alive(pid)) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let root = base.join(std::process::id().to_string());
        std::fs::create_dir_all(&root).unwrap();
        root
    })
}

/// A venv of `python` named `name`, with wsgi-rs pip-installed from this source tree (and
/// `extra` packages from PyPI), made once per test run. The builds share a cargo target
/// folder ([`pip_target`]) and use the dev profile (pip's build of a user's install is a
/// release build; this one only has to be the same code).
fn installed(python: &Path, name: &str, extra: &[&str]) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _one_at_a_time = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let venv = venvs_root().join(name);
    if venv.join("bin/wsgi").exists() {
        return venv;
    }
    run(
        Command::new(python).args(["-m", "venv"]).arg(&venv),
        Duration::from_secs(120),
    );
    run(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--disable-pip-version-check", "-q"])
            .arg(source_tree())
            .args(extra)
            .env("CARGO_TARGET_DIR", pip_target())
            .env("MATURIN_PEP517_ARGS", "--profile dev")
            .env_remove("PYO3_PYTHON"),
        Duration::from_secs(40 * 60),
    );
    run(
        Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(venvs::test_root().join("pip-venvs")),
        Duration::from_secs(60),
    );
    venv
}

/// The cargo target folder of pip's builds: inside this build's own target folder (cargo's
/// `CARGO_TARGET_TMPDIR`), so the builds of two source trees never share one. Cargo names a
/// workspace member's artifacts by the member, not by its folder: two trees building into
/// one folder would take each other's.
fn pip_target() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("pip-target")
}

/// The venv of Debian's 3.11 with wsgi-rs.
fn venv311() -> PathBuf {
    installed(Path::new(PY311), "v311", &[])
}

/// The venv of the 3.12 with wsgi-rs and Django.
fn venv312() -> PathBuf {
    installed(&py312(), "v312", &["django>=5.2,<6"])
}

/// An app answering a GET with its Python's version and `sys.prefix`, and a POST with the
/// length and SHA-1 of the body it read (`wsgi.input` is made by each Python's own C-API).
const WHICH_PYTHON: &str = r#"import hashlib, sys

def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    if environ['REQUEST_METHOD'] == 'POST':
        data = environ['wsgi.input'].read(int(environ['CONTENT_LENGTH']))
        return [('len=%d sha1=%s\n' % (len(data), hashlib.sha1(data).hexdigest())).encode()]
    return [('python=%d.%d\nprefix=%s\n' % (sys.version_info[0], sys.version_info[1], sys.prefix)).encode()]
"#;

/// A POST of 300 KiB (more than the front reads before it hands the request over) and the
/// answer [`WHICH_PYTHON`] must give.
fn upload() -> (Vec<u8>, String) {
    use sha1::{Digest, Sha1};
    let body: Vec<u8> = (0..300 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    let hex: String = Sha1::digest(&body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let expected = format!("len={} sha1={hex}\n", body.len());
    (body, expected)
}

/// GET and POST to `server`: its Python is `version` in the venv `prefix`.
fn assert_runs_on(server: &Server, version: &str, prefix: &Path) {
    let body = server.get_text("/").body;
    assert_eq!(
        body,
        format!("python={version}\nprefix={}\n", prefix.display()),
        "{}",
        server.stderr()
    );
    let (upload, expected) = upload();
    let answer = server.request("POST", "/", &[], &upload);
    assert_eq!(answer.text(), expected, "{}", server.stderr());
}

/// As root: served as the unprivileged user `wsgi serve` switches to, which reads the venvs
/// only because the setup made them world-readable.
const AS_NOBODY: Launch = Launch {
    allow_root: false,
    banner_timeout: Duration::from_secs(60),
    ..util::PLAIN
};

#[test]
fn each_venvs_wsgi_runs_applications_on_its_own_python() {
    let dir = fs::scratch_world_readable("wsgi-install-");
    let app = fs::write_world_readable(&dir.path().join("which.py"), WHICH_PYTHON);
    for (venv, version) in [(venv311(), "3.11"), (venv312(), "3.12")] {
        let program = venv.join("bin/wsgi");
        let text = run(
            Command::new(&program).arg("--version"),
            Duration::from_secs(30),
        );
        assert!(
            text.contains(&format!("embeds CPython {version}.")),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "installed in: {} (the default python-home)",
                venv.display()
            )),
            "{text}"
        );
        let server = Server::try_start_program(
            &program,
            &AS_NOBODY,
            &[app.to_str().unwrap(), "--port", "0"],
        )
        .unwrap();
        assert_runs_on(&server, version, &venv);
    }
}

/// pyenv's oldest and newest CPython 3 the project supports (3.9 and 3.13): under /root, so
/// served as root.
#[test]
fn the_oldest_and_the_newest_python_install_and_serve() {
    let dir = fs::scratch_world_readable("wsgi-install-range-");
    let app = fs::write_world_readable(&dir.path().join("which.py"), WHICH_PYTHON);
    for (version, patch) in [("3.9", "3.9.18"), ("3.13", "3.13.0")] {
        let python = PathBuf::from(format!("/root/.pyenv/versions/{patch}/bin/python{version}"));
        assert!(
            python.exists(),
            "{} is missing: install it with `PYTHON_CONFIGURE_OPTS=--enable-shared pyenv install {patch}`",
            python.display()
        );
        let venv = installed(&python, &format!("v{version}"), &[]);
        let server = Server::try_start_program(
            &venv.join("bin/wsgi"),
            &util::PLAIN,
            &[app.to_str().unwrap(), "--port", "0"],
        )
        .unwrap();
        assert_runs_on(&server, version, &venv);
    }
}

#[test]
fn a_stock_django_project_runs_by_module_and_callable() {
    let venv = venv312();
    let dir = fs::scratch_world_readable("wsgi-install-django-");
    run(
        Command::new(venv.join("bin/django-admin"))
            .args(["startproject", "mysite"])
            .current_dir(dir.path()),
        Duration::from_secs(60),
    );
    let project = dir.path().join("mysite");
    run(
        Command::new("chmod").args(["-R", "a+rX"]).arg(&project),
        Duration::from_secs(10),
    );
    let server = Server::try_start_program(
        &venv.join("bin/wsgi"),
        &AS_NOBODY,
        &[
            "mysite.wsgi:application",
            "--chdir",
            project.to_str().unwrap(),
            "--port",
            "0",
        ],
    )
    .unwrap();
    let page = server.get_text("/");
    assert_eq!(page.status, 200, "{}", server.stderr());
    assert!(
        page.body.contains("The install worked successfully!"),
        "{}",
        page.body
    );
}

/// `wsgi check CONF` (this build's): whether it passed, and what it printed.
fn check(conf: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wsgi"))
        .arg("check")
        .arg(conf)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// A site with one mount in embedded mode and one in a daemon group on the 3.12 venv.
fn two_python_site(dir: &Path, app: &Path, user: &str) -> String {
    format!(
        "WSGIDaemonProcess py312 {user}python-home={venv} processes=1 threads=2
WSGIScriptAlias /embedded {app}
WSGIScriptAlias /py312 {app} process-group=py312 application-group=%{{GLOBAL}}
<Directory {dir}>
    Require all granted
</Directory>
",
        venv = venv312().display(),
        app = app.display(),
        dir = dir.display()
    )
}

#[test]
fn a_daemon_group_runs_on_the_python_of_its_venv_under_wsgi_serve() {
    let dir = fs::scratch_world_readable("wsgi-install-serve-");
    let app = fs::write_world_readable(&dir.path().join("which.wsgi"), WHICH_PYTHON);
    let conf = fs::write_world_readable(
        &dir.path().join("site.conf"),
        &two_python_site(dir.path(), &app, util::daemon_user_option()),
    );
    let (ok, text) = check(&conf);
    assert!(ok, "{text}");
    let server = util::try_serve_config(&conf, &[]).unwrap();
    let embedded = server.get_text("/embedded").body;
    assert!(embedded.starts_with("python=3.11\n"), "{embedded}");
    let daemon = server.get_text("/py312").body;
    assert_eq!(
        daemon,
        format!("python=3.12\nprefix={}\n", venv312().display()),
        "{}",
        server.stderr()
    );
    let (upload, expected) = upload();
    let answer = server.request("POST", "/py312", &[], &upload);
    assert_eq!(answer.text(), expected, "{}", server.stderr());
}

#[test]
fn a_venv_of_another_python_without_wsgi_rs_is_refused_with_the_fix() {
    let dir = fs::scratch_world_readable("wsgi-install-bare-");
    let bare = dir.path().join("bare312");
    run(
        Command::new(py312())
            .args(["-m", "venv", "--without-pip"])
            .arg(&bare),
        Duration::from_secs(60),
    );
    let app = fs::write_world_readable(&dir.path().join("which.wsgi"), WHICH_PYTHON);
    let conf = fs::write_world_readable(
        &dir.path().join("site.conf"),
        &format!(
            "WSGIDaemonProcess bare {}python-home={}\nWSGIScriptAlias / {} process-group=bare\n",
            util::daemon_user_option(),
            bare.display(),
            app.display()
        ),
    );
    let (ok, text) = check(&conf);
    assert!(!ok, "{text}");
    assert!(
        text.contains(&format!(
            "site.conf:1: WSGIDaemonProcess bare: python-home=`{b}`: {b} is a virtual environment of Python 3.12.1, and this wsgi-rs embeds Python 3.11",
            b = bare.display()
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("`{}/bin/pip install wsgi-rs`", bare.display())),
        "{text}"
    );
    // Embedded mode cannot change Python: the venv's own wsgi is the way.
    let venv = venv312();
    let conf = fs::write_world_readable(
        &dir.path().join("embedded.conf"),
        &format!(
            "WSGIPythonHome {}\nWSGIScriptAlias / {}\n",
            venv.display(),
            app.display()
        ),
    );
    let (ok, text) = check(&conf);
    assert!(!ok, "{text}");
    assert!(
        text.contains(&format!(
            "; or run the wsgi installed in it ({}/bin/wsgi), which embeds its Python",
            venv.display()
        )),
        "{text}"
    );
}

#[test]
fn a_daemon_group_runs_on_the_python_of_its_venv_under_apache() {
    let dir = fs::scratch_world_readable("wsgi-install-apache-");
    let app = fs::write_world_readable(&dir.path().join("which.wsgi"), WHICH_PYTHON);
    let root = dir.path().join("apache");
    std::fs::create_dir(&root).unwrap();
    std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let apache = apache::Apache::start(&root, &two_python_site(dir.path(), &app, ""));
    let (status, _, embedded) = apache.get("/embedded");
    assert_eq!(status, 200, "{}", apache.error_log());
    assert!(
        String::from_utf8_lossy(&embedded).starts_with("python=3.11\n"),
        "{}",
        String::from_utf8_lossy(&embedded)
    );
    let (status, _, daemon) = apache.get("/py312");
    assert_eq!(status, 200, "{}", apache.error_log());
    assert_eq!(
        String::from_utf8_lossy(&daemon),
        format!("python=3.12\nprefix={}\n", venv312().display()),
        "{}",
        apache.error_log()
    );
}

/// The section names of an ELF file, as `readelf -S` lists them.
fn sections(file: &Path) -> String {
    run(
        Command::new("readelf").arg("-S").arg("-W").arg(file),
        Duration::from_secs(30),
    )
}

/// The size of section `name` in `readelf -S -W` output.
fn section_size(table: &str, name: &str) -> Option<u64> {
    table.lines().find_map(|line| {
        let rest = line.split_once(&format!(" {name} "))?.1;
        u64::from_str_radix(rest.split_whitespace().nth(3)?, 16).ok()
    })
}

#[test]
fn release_artifacts_split_off_their_debug_information() {
    let dir = fs::scratch("wsgi-split-");
    let program = dir.path().join("wsgi");
    std::fs::copy(env!("CARGO_BIN_EXE_wsgi"), &program).unwrap();
    let before = std::fs::metadata(&program).unwrap().len();
    assert!(sections(&program).contains(".debug_info"));
    run(
        Command::new(source_tree().join("scripts/split-debuginfo.sh")).arg(&program),
        Duration::from_secs(300),
    );
    let stripped = sections(&program);
    assert!(!stripped.contains(".debug_info"), "{stripped}");
    assert!(stripped.contains(".gnu_debuglink"), "{stripped}");
    assert!(sections(&dir.path().join("wsgi.debug")).contains(".debug_info"));
    let after = std::fs::metadata(&program).unwrap().len();
    assert!(after * 3 < before, "{before} bytes, {after} stripped");
    // No block of zeroes in the program's file (a large immutable static array lands in the
    // read-only data, zeroes and all: a 32 MiB one once did).
    let rodata = section_size(&stripped, ".rodata").expect("the program has .rodata");
    assert!(rodata < 16 << 20, "{rodata} bytes of .rodata:\n{stripped}");
    let text = run(
        Command::new(&program).arg("--version"),
        Duration::from_secs(30),
    );
    assert!(text.starts_with("wsgi "), "{text}");
}
