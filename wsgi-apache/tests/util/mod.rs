//! Shared by the Apache tests: the built module, Debian's apache2, and a server started on
//! 127.0.0.1 that the tests stop themselves (by the pid they started).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The module, built once per test run by cargo into its own target folder (a test cannot rely
/// on `cargo test` having built the cdylib, and the outer cargo holds the main target folder).
pub fn module() -> PathBuf {
    static MODULE: OnceLock<PathBuf> = OnceLock::new();
    MODULE
        .get_or_init(|| {
            let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
            let target = std::env::current_exe()
                .unwrap()
                .ancestors()
                .nth(3)
                .unwrap()
                .join("apache-module");
            let status = Command::new(env!("CARGO"))
                .args([
                    "build",
                    "-q",
                    "-p",
                    "wsgi-apache",
                    "-p",
                    "wsgi-daemon",
                    "--target-dir",
                ])
                .arg(&target)
                .current_dir(workspace)
                .status()
                .expect("cargo runs");
            assert!(status.success(), "building the Apache module failed");
            let module = target.join("debug/libwsgi_apache.so");
            assert!(module.exists(), "{} was not built", module.display());
            module
        })
        .clone()
}

/// Debian's Apache httpd.
pub fn apache2() -> &'static str {
    let apache = "/usr/sbin/apache2";
    assert!(
        Path::new(apache).exists(),
        "{apache} is missing: run scripts/setup-test-env.sh (it installs apache2 and apache2-dev)"
    );
    apache
}

/// A world-readable scratch folder (Apache's children run as www-data).
pub fn scratch(prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/var/tmp")
        .unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    dir
}

/// The lines that load the MPM, mod_authz_core and our module, with logs in `root`.
pub fn preamble(root: &Path, listen: &str) -> String {
    let load = format!("LoadModule wsgi_rs_module {}", module().display());
    preamble_with(root, listen, &load)
}

/// The preamble with another module line (Debian's mod_wsgi, to compare with).
pub fn preamble_with(root: &Path, listen: &str, load_module: &str) -> String {
    preamble_mpm(root, listen, load_module, Mpm::Event)
}

/// Apache's multi-processing modules, as Debian ships them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mpm {
    /// Threaded children with an event loop for idle connections (Debian's default).
    Event,
    /// Threaded children, one thread per connection.
    Worker,
    /// Single-threaded children, one process per concurrent request.
    Prefork,
}

impl Mpm {
    /// The `LoadModule` line and the process/thread settings of this MPM.
    fn config(self) -> &'static str {
        match self {
            // One child process, so per-process state (module globals, sub-interpreters) is
            // observable.
            Mpm::Event => {
                "LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so
StartServers 1
ServerLimit 1
ThreadsPerChild 16
MaxRequestWorkers 16
MinSpareThreads 1
MaxSpareThreads 16
"
            }
            Mpm::Worker => {
                "LoadModule mpm_worker_module /usr/lib/apache2/modules/mod_mpm_worker.so
StartServers 1
ServerLimit 1
ThreadsPerChild 16
MaxRequestWorkers 16
MinSpareThreads 1
MaxSpareThreads 16
"
            }
            // No threads: concurrency comes from processes, so allow a few.
            Mpm::Prefork => {
                "LoadModule mpm_prefork_module /usr/lib/apache2/modules/mod_mpm_prefork.so
StartServers 2
MinSpareServers 1
MaxSpareServers 4
ServerLimit 4
MaxRequestWorkers 4
"
            }
        }
    }
}

/// The preamble for a chosen MPM.
pub fn preamble_mpm(root: &Path, listen: &str, load_module: &str, mpm: Mpm) -> String {
    format!(
        "ServerRoot {root}
{mpm}LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so
{load_module}
PidFile {root}/httpd.pid
ErrorLog {root}/error.log
LogLevel info
User www-data
Group www-data
Listen {listen}
ServerName localhost
",
        root = root.display(),
        mpm = mpm.config(),
    )
}

/// Debian's mod_wsgi, which the comparison tests run beside ours.
pub const DEBIAN_MOD_WSGI: &str = "/usr/lib/apache2/modules/mod_wsgi.so";

/// pip's mod_wsgi 6.1.1 (the release wsgi-rs follows), built by scripts/setup-test-env.sh.
pub fn mod_wsgi_61() -> String {
    let root = std::env::var("WSGI_RS_TEST_ROOT").unwrap_or("/var/tmp/wsgi-rs-test".into());
    let module = Path::new(&root).join("mod_wsgi61/mod_wsgi.so");
    assert!(
        module.exists(),
        "{} is missing: run scripts/setup-test-env.sh (it builds mod_wsgi 6.1.1 with pip)",
        module.display()
    );
    format!("LoadModule wsgi_module {}", module.display())
}

/// Whether Debian's mod_wsgi is installed; says so when it is not (nothing to compare with).
pub fn have_debian_mod_wsgi() -> bool {
    let found = Path::new(DEBIAN_MOD_WSGI).exists();
    if !found {
        eprintln!("Debian's mod_wsgi is not installed: nothing to compare with");
    }
    found
}

/// A running Apache, stopped (SIGTERM to the parent we started) when dropped.
pub struct Apache {
    /// The server root with httpd.conf and the logs.
    pub root: PathBuf,
    /// The port it listens on.
    pub port: u16,
    child: Child,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Apache {
    /// Starts Apache in the foreground on a free loopback port with `site` after the preamble,
    /// and waits (bounded) until it answers.
    pub fn start(root: &Path, site: &str) -> Apache {
        let load = format!("LoadModule wsgi_rs_module {}", module().display());
        Apache::start_with_module(root, &load, site)
    }

    /// [`Apache::start`] with another module line.
    pub fn start_with_module(root: &Path, load_module: &str, site: &str) -> Apache {
        Apache::start_full(root, Mpm::Event, load_module, site)
    }

    /// [`Apache::start`] under another MPM.
    pub fn start_mpm(root: &Path, mpm: Mpm, site: &str) -> Apache {
        let load = format!("LoadModule wsgi_rs_module {}", module().display());
        Apache::start_full(root, mpm, &load, site)
    }

    /// [`Apache::start`] with every choice: the MPM and the module line.
    pub fn start_full(root: &Path, mpm: Mpm, load_module: &str, site: &str) -> Apache {
        for _attempt in 0..3 {
            let port = free_port();
            let conf = root.join("httpd.conf");
            std::fs::write(
                &conf,
                format!(
                    "{}{site}",
                    preamble_mpm(root, &format!("127.0.0.1:{port}"), load_module, mpm)
                ),
            )
            .unwrap();
            let _ = std::fs::remove_file(root.join("error.log"));
            // A process group of its own: mpm_prefork's parent stops its children with
            // killpg(getpgrp(), SIGTERM), which in ours would hit this test process too.
            let mut child = Command::new(apache2())
                .args(["-DFOREGROUND", "-f"])
                .arg(&conf)
                .process_group(0)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(status)) = child.try_wait() {
                    let mut err = String::new();
                    child
                        .stderr
                        .take()
                        .unwrap()
                        .read_to_string(&mut err)
                        .unwrap();
                    if err.contains("Address already in use") {
                        break;
                    }
                    panic!(
                        "apache2 exited with {status}: {err}\n{}",
                        std::fs::read_to_string(root.join("error.log")).unwrap_or_default()
                    );
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Apache {
                        root: root.to_path_buf(),
                        port,
                        child,
                    };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("apache2 did not start listening");
    }

    /// Ours and Debian's mod_wsgi serving the same `site`, with their server roots in the
    /// folders `ours` and `theirs` of `dir`.
    pub fn ours_and_debians(dir: &Path, site: &str) -> (Apache, Apache) {
        let debian = format!("LoadModule wsgi_module {DEBIAN_MOD_WSGI}");
        Apache::ours_and(dir, ("theirs", &debian), site)
    }

    /// Ours and mod_wsgi 6.1.1 ([`mod_wsgi_61`]) serving the same `site`, with their server
    /// roots in the folders `ours` and `theirs61` of `dir`.
    pub fn ours_and_mod_wsgi_61(dir: &Path, site: &str) -> (Apache, Apache) {
        Apache::ours_and(dir, ("theirs61", &mod_wsgi_61()), site)
    }

    /// Ours and the module of the `LoadModule` line `load` serving the same `site`, with their
    /// server roots in the folders `ours` and `folder` of `dir`.
    fn ours_and(dir: &Path, (folder, load): (&str, &str), site: &str) -> (Apache, Apache) {
        let ours_root = dir.join("ours");
        let theirs_root = dir.join(folder);
        std::fs::create_dir(&ours_root).unwrap();
        std::fs::create_dir(&theirs_root).unwrap();
        let ours = Apache::start(&ours_root, site);
        let theirs = Apache::start_with_module(&theirs_root, load, site);
        (ours, theirs)
    }

    /// The parent process's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The error log so far.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.root.join("error.log")).unwrap_or_default()
    }

    /// Stops the server and returns how long it took to be gone.
    pub fn stop(&mut self) -> Duration {
        let start = Instant::now();
        // SIGTERM to the one process this test started.
        let _ = nix_kill(self.child.id());
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return start.elapsed();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        start.elapsed()
    }

    /// A raw HTTP/1.1 exchange: sends `request`, returns everything read until the server
    /// closes (bounded by a 10 s read timeout).
    pub fn raw(&self, request: &[u8]) -> Vec<u8> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        out
    }

    /// A request with `Connection: close`, `Host: localhost` unless `headers` has a Host, and
    /// a Content-Length when there is a body: (status, headers text, body).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, String, Vec<u8>) {
        let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            head.push_str("Host: localhost\r\n");
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut raw = head.into_bytes();
        raw.extend_from_slice(body);
        parse(&self.raw(&raw))
    }

    /// GET `path` with `Connection: close`, for tests that count failures rather than stop at
    /// the first: the status, or what went wrong (refused, reset, timed out, no head) and after
    /// how long.
    pub fn try_get_status(&self, path: &str) -> Result<u16, String> {
        let started = std::time::Instant::now();
        let fail = |what: String| format!("{what} after {:?}", started.elapsed());
        let mut s = TcpStream::connect(("127.0.0.1", self.port))
            .map_err(|e| fail(format!("connect: {e}")))?;
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .map_err(|e| fail(format!("write: {e}")))?;
        let mut out = Vec::new();
        s.read_to_end(&mut out)
            .map_err(|e| fail(format!("read ({} bytes so far): {e}", out.len())))?;
        if !out.windows(4).any(|w| w == b"\r\n\r\n") {
            return Err(fail(format!("no response head in {} bytes", out.len())));
        }
        Ok(parse(&out).0)
    }

    /// GET `path` with `Connection: close`: (status, headers text, body).
    pub fn get(&self, path: &str) -> (u16, String, Vec<u8>) {
        let raw = self.raw(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        parse(&raw)
    }
}

impl Drop for Apache {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

fn nix_kill(pid: u32) -> std::io::Result<()> {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other("kill failed"))
    }
}

/// The value of the `name=value` line of a text body (what the test applications report);
/// panics, with the body, when there is none.
pub fn field(body: &[u8], name: &str) -> String {
    let text = String::from_utf8_lossy(body);
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")).map(str::to_string))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// Splits a raw response: (status, head, body with chunked encoding removed when complete).
pub fn parse(raw: &[u8]) -> (u16, String, Vec<u8>) {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body).unwrap_or(body);
    }
    (status, head, body)
}

/// Removes chunked framing; None when the body does not end with the final `0` chunk.
pub fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..line_end]).ok()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        if data.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// The value of the response header `name` (case-insensitive) in a head from [`parse`].
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// An application answering with each environ key and its value's type, one `key=type` line
/// each: the type's name for str, bool, int, float, tuple and type, `object` for the rest
/// (`wsgi.input` and `wsgi.errors` are each server's own classes).
pub const ENVIRON_TYPES_APP: &str = r#"
PLAIN = (str, bool, int, float, tuple, type)

def application(environ, start_response):
    lines = ['%s=%s' % (k, type(v).__name__ if type(v) in PLAIN else 'object') for k, v in sorted(environ.items())]
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return ['\n'.join(lines).encode()]
"#;

/// The `key=type` lines of an [`ENVIRON_TYPES_APP`] answer, by key.
pub fn environ_types(body: &[u8]) -> std::collections::BTreeMap<String, String> {
    String::from_utf8_lossy(body)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// How two [`environ_types`] maps differ: keys only one has, and keys whose types differ;
/// empty when they are the same.
pub fn environ_type_differences(
    ours: &std::collections::BTreeMap<String, String>,
    theirs: &std::collections::BTreeMap<String, String>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (k, t) in theirs {
        match ours.get(k) {
            None => out.push(format!("{k}: only mod_wsgi 6.1 ({t})")),
            Some(o) if o != t => out.push(format!("{k}: mod_wsgi 6.1 {t}, ours {o}")),
            Some(_) => {}
        }
    }
    for (k, t) in ours {
        if !theirs.contains_key(k) {
            out.push(format!("{k}: only ours ({t})"));
        }
    }
    out
}

/// An application answering with the environ values that are the server's (`apache.version`,
/// `DOCUMENT_ROOT`, `SERVER_ADMIN`, `CONTEXT_*`) and with what mod_wsgi 6.1's per-request
/// numbers mean: `queue_start`/`daemon_start` 0.0 in embedded mode; in daemon mode, the
/// request, queue, daemon and application times in that order; `server_pid` the process that
/// took the connection (in daemon mode, not the one running the application).
pub const ENVIRON_VALUES_APP: &str = r#"
import os, time

def application(environ, start_response):
    keys = ['apache.version', 'DOCUMENT_ROOT', 'SERVER_ADMIN', 'CONTEXT_PREFIX', 'CONTEXT_DOCUMENT_ROOT']
    lines = ['%s=%r' % (k, environ[k]) for k in keys]
    times = [environ['mod_wsgi.' + k] for k in ('request_start', 'queue_start', 'daemon_start', 'application_start')]
    daemon = environ['mod_wsgi.process_group'] != ''
    if daemon:
        ordered = times == sorted(times) and abs(time.time() - times[0]) < 60
    else:
        ordered = times[1] == times[2] == 0.0 and times[0] <= times[3] and abs(time.time() - times[0]) < 60
    lines.append('ordered=%s' % ordered)
    lines.append('server_pid_is_own=%s' % (environ['mod_wsgi.server_pid'] == str(os.getpid())))
    lines.append('thread_id_positive=%s' % (environ['mod_wsgi.thread_id'] >= 1))
    lines.append('request_id_length=%d' % len(environ['mod_wsgi.request_id']))
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return ['\n'.join(lines).encode()]
"#;

/// An application answering with what `<WSGIInterpreterOptions>` can change in its
/// interpreter: its groups, the `sys.path` folders under `root` (in order), the switch
/// interval, and whether `sys.stdout` and `sys.stdin` may be used.
pub fn interpreter_probe_app(root: &Path) -> String {
    format!(
        r#"
import sys

def usable(stream):
    try:
        stream.fileno
        return 'usable'
    except OSError as e:
        return 'restricted (%s)' % e
    except Exception:
        return 'usable'

def application(environ, start_response):
    lines = [
        'groups=%r %r' % (environ['mod_wsgi.process_group'], environ['mod_wsgi.application_group']),
        'path=%s' % ' '.join(p for p in sys.path if p.startswith({root:?})),
        'switch_interval=%s' % sys.getswitchinterval(),
        'stdout=%s' % usable(sys.stdout),
        'stdin=%s' % usable(sys.stdin),
    ]
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return ['\n'.join(lines).encode()]
"#,
        root = root.display().to_string()
    )
}

/// A site with `<WSGIInterpreterOptions>` sections selecting a process group, an application
/// group in it, and the main interpreter of embedded mode, with the probe at `/emb` (embedded,
/// its own sub-interpreter), `/embg` (embedded, main interpreter), `/dae` and `/daes` (daemon
/// group `d`, its own sub-interpreter and the group `special`); folders `p1`..`p3` and `pp`
/// of `root` for `sys.path`.
pub fn interpreter_options_site(root: &Path) -> String {
    for folder in ["p1", "p2", "p3", "pp"] {
        let path = root.join(folder);
        std::fs::create_dir_all(&path).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }
    let probe = root.join("probe.wsgi");
    std::fs::write(&probe, interpreter_probe_app(root)).unwrap();
    std::fs::set_permissions(&probe, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    format!(
        "WSGIPythonPath {r}/p1
<WSGIInterpreterOptions process-group=d>
    WSGIPythonPath {r}/p2
    WSGISwitchInterval 0.02
    WSGIRestrictStdin On
</WSGIInterpreterOptions>
<WSGIInterpreterOptions process-group=d application-group=special>
    WSGIPythonPath {r}/p3
    WSGIRestrictStdout On
    WSGIRestrictStdin Off
</WSGIInterpreterOptions>
<WSGIInterpreterOptions application-group=%{{GLOBAL}}>
    WSGIPythonPath {r}/p3
</WSGIInterpreterOptions>
WSGIDaemonProcess d threads=2 python-path={r}/pp
WSGIScriptAlias /emb {probe}
WSGIScriptAlias /embg {probe} application-group=%{{GLOBAL}}
WSGIScriptAlias /dae {probe} process-group=d
WSGIScriptAlias /daes {probe} process-group=d application-group=special
<Directory {r}>
    Require all granted
</Directory>
",
        r = root.display(),
        probe = probe.display()
    )
}

/// An [`interpreter_probe_app`] answer without its first line (the groups, whose default
/// names differ by design) and with `root` written `ROOT`.
pub fn interpreter_probe_answer(root: &Path, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body).replace(&root.display().to_string(), "ROOT");
    text.split_once('\n')
        .map_or(text.clone(), |(_, rest)| rest.to_string())
}

/// What [`interpreter_options_site`] answers under mod_wsgi 6.1.1, by path: the sections
/// apply to the interpreters they select and to no other.
pub const INTERPRETER_OPTIONS_EXPECTED: [(&str, &str); 4] = [
    (
        "/emb",
        "path=ROOT/p1\nswitch_interval=0.005\nstdout=usable\nstdin=usable",
    ),
    (
        "/embg",
        "path=ROOT/p3 ROOT/p1\nswitch_interval=0.005\nstdout=usable\nstdin=usable",
    ),
    (
        "/dae",
        "path=ROOT/p2 ROOT/pp\nswitch_interval=0.02\nstdout=usable\nstdin=restricted (sys.stdin access restricted by mod_wsgi)",
    ),
    (
        "/daes",
        "path=ROOT/p3 ROOT/p2 ROOT/pp\nswitch_interval=0.02\nstdout=restricted (sys.stdout access restricted by mod_wsgi)\nstdin=usable",
    ),
];
