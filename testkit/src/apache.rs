//! Debian's Apache httpd on 127.0.0.1 with the built module `mod_wsgi_rs` (or a mod_wsgi to
//! compare with): the module built once per test binary, a server started in the foreground
//! on a free port, and stopped (by the pid the test started) when dropped. The Apache tests use
//! it, and so do `wsgi serve`'s tests that compare with Apache.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::frameworks::Front;
use crate::http::{self, Response};
use crate::process;

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

/// `apache2 -t -f CONF`: Apache's check of the configuration file `conf` (with the modules it
/// loads), run to its end.
pub fn config_test(conf: &Path) -> std::process::Output {
    Command::new(apache2())
        .arg("-t")
        .arg("-f")
        .arg(conf)
        .output()
        .unwrap()
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
    fn config(self) -> String {
        // The threaded MPMs: one child process, so per-process state (module globals,
        // sub-interpreters) is observable.
        const ONE_THREADED_CHILD: &str = "StartServers 1
ServerLimit 1
ThreadsPerChild 16
MaxRequestWorkers 16
MinSpareThreads 1
MaxSpareThreads 16
";
        // No threads: concurrency comes from processes, so allow a few.
        const A_FEW_CHILDREN: &str = "StartServers 2
MinSpareServers 1
MaxSpareServers 4
ServerLimit 4
MaxRequestWorkers 4
";
        let (name, settings) = match self {
            Mpm::Event => ("event", ONE_THREADED_CHILD),
            Mpm::Worker => ("worker", ONE_THREADED_CHILD),
            Mpm::Prefork => ("prefork", A_FEW_CHILDREN),
        };
        format!(
            "LoadModule mpm_{name}_module /usr/lib/apache2/modules/mod_mpm_{name}.so\n{settings}"
        )
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
    let module = crate::venvs::test_root().join("mod_wsgi61/mod_wsgi.so");
    assert!(
        module.exists(),
        "{} is missing: run scripts/setup-test-env.sh (it builds mod_wsgi 6.1.1 with pip)",
        module.display()
    );
    format!("LoadModule wsgi_module {}", module.display())
}

/// Asserts that Debian's mod_wsgi, which the comparison tests run beside ours, is installed
/// (scripts/setup-test-env.sh installs it): a comparison with nothing to compare with fails
/// rather than passing unrun.
pub fn require_debian_mod_wsgi() {
    assert!(
        Path::new(DEBIAN_MOD_WSGI).exists(),
        "{DEBIAN_MOD_WSGI} is missing: run scripts/setup-test-env.sh (it installs libapache2-mod-wsgi-py3)"
    );
}

/// A running Apache, stopped (SIGTERM to the parent we started) when dropped.
pub struct Apache {
    /// The server root with httpd.conf and the logs.
    pub root: PathBuf,
    /// The port it listens on.
    pub port: u16,
    child: Child,
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
            let port = http::free_port();
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

    /// Stops the server (SIGTERM to the parent this test started, SIGKILL after 20 s) and
    /// returns how long it took to be gone.
    pub fn stop(&mut self) -> Duration {
        let start = Instant::now();
        process::stop(&mut self.child, Duration::from_secs(20));
        start.elapsed()
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// A raw HTTP/1.1 exchange: sends `request`, returns everything read until the server
    /// closes (bounded by a 10 s read timeout).
    pub fn raw(&self, request: &[u8]) -> Vec<u8> {
        http::exchange(self.addr(), request, Duration::from_secs(10))
    }

    /// A request with `Connection: close`, `Host: localhost` unless `headers` has a Host, and
    /// a Content-Length when there is a body: (status, headers text, body), as
    /// [`http::split_response`] reads the answer.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, String, Vec<u8>) {
        let raw = http::request_bytes(method, path, "localhost", headers, body, !body.is_empty());
        http::split_response(&self.raw(&raw))
    }

    /// GET `path` with `Connection: close`, for tests that count failures rather than stop at
    /// the first: the status, or what went wrong (refused, reset, timed out, no head) and after
    /// how long.
    pub fn try_get_status(&self, path: &str) -> Result<u16, String> {
        let started = Instant::now();
        let fail = |what: String| format!("{what} after {:?}", started.elapsed());
        let mut s = TcpStream::connect(self.addr()).map_err(|e| fail(format!("connect: {e}")))?;
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(&http::get_request(path, "localhost"))
            .map_err(|e| fail(format!("write: {e}")))?;
        let mut out = Vec::new();
        s.read_to_end(&mut out)
            .map_err(|e| fail(format!("read ({} bytes so far): {e}", out.len())))?;
        if http::find(&out, b"\r\n\r\n").is_none() {
            return Err(fail(format!("no response head in {} bytes", out.len())));
        }
        Ok(http::split_response(&out).0)
    }

    /// GET `path` with `Connection: close`: (status, headers text, body).
    pub fn get(&self, path: &str) -> (u16, String, Vec<u8>) {
        http::split_response(&self.raw(&http::get_request(path, "localhost")))
    }
}

/// Apache's pages, for the checks of [`crate::frameworks`]: the answers as
/// [`Apache::request`] reads them, and its error log.
impl Front for Apache {
    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        let (status, head, body) = Apache::request(self, method, path, headers, body);
        Response::from_parts(status, &head, body)
    }

    fn log(&self) -> String {
        self.error_log()
    }

    fn own_pages_word(&self) -> Option<&'static str> {
        Some("Apache")
    }
}

impl Drop for Apache {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}
