//! What the `wsgi serve` integration tests share beyond `wsgi_testkit`: the real `wsgi` binary
//! started with a port it picks (read from its banner), the `import mod_wsgi` test app, and
//! systemd's socket activation. Every wait is bounded; only the child a test started is
//! signalled or killed.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use wsgi_testkit::apps;
use wsgi_testkit::frameworks::Front;
use wsgi_testkit::http::{self, Response, TextResponse};
use wsgi_testkit::process::{self, Captured};
use wsgi_testkit::wait;

/// `user=nobody ` when the tests run as root (daemon processes never run as root), else
/// nothing: for a `WSGIDaemonProcess` line.
pub fn daemon_user_option() -> &'static str {
    if process::is_root() {
        "user=nobody "
    } else {
        ""
    }
}

/// `wsgi check CONF` accepts the site, then `wsgi serve --config CONF --log-level info` on
/// the site's own `Listen` ports, started as `daemon.rs` does ([`DAEMON`]).
pub fn serve_checked_config(conf: &Path) -> Server {
    let check = Command::new(env!("CARGO_BIN_EXE_wsgi"))
        .args(["check", conf.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    Server::start_with(
        &DAEMON,
        &["--config", conf.to_str().unwrap(), "--log-level", "info"],
    )
}

/// `wsgi serve --config CONF --port 0 --log-level info EXTRA...` started as `daemon.rs`
/// does ([`DAEMON`]), or why it did not start (with what it printed).
pub fn try_serve_config(conf: &Path, extra: &[&str]) -> Result<Server, String> {
    let mut args = vec![
        "--config",
        conf.to_str().unwrap(),
        "--port",
        "0",
        "--log-level",
        "info",
    ];
    args.extend_from_slice(extra);
    Server::try_start_with(&DAEMON, &args)
}

/// `wsgi status --status-addr ADDR --format FORMAT`'s output (it must succeed).
pub fn wsgi_status(addr: &str, format: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_wsgi"))
        .args(["status", "--status-addr", addr, "--format", format])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "wsgi status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The Python that virtual environments must be made with, as `wsgi --version` names it.
pub fn venv_python() -> String {
    let version = Command::new(env!("CARGO_BIN_EXE_wsgi"))
        .arg("--version")
        .output()
        .unwrap();
    let version = String::from_utf8_lossy(&version.stdout).to_string();
    version
        .lines()
        .find_map(|l| l.strip_prefix("virtual environments must be made by this Python: "))
        .and_then(|l| l.split(' ').next())
        .expect("--version names the venv Python")
        .to_string()
}

/// How a test file starts its server.
pub struct Launch {
    /// Arguments added after the test's own.
    pub extra_args: &'static [&'static str],
    /// stdin from /dev/null instead of inherited.
    pub null_stdin: bool,
    /// How long to wait for the `listening on` banner line.
    pub banner_timeout: Duration,
    /// On drop, SIGTERM first (so the server removes its daemon sockets) and wait up to
    /// 20 s, then kill; otherwise kill straight away.
    pub term_on_drop: bool,
    /// When the tests run as root and name no `--user`: add `--allow-root`, so the server
    /// serves as root and reads the tests' private scratch folders (the privilege tests
    /// turn this off to see the switch to an unprivileged user).
    pub allow_root: bool,
}

/// `serve.rs`: 30 s for the banner, killed when dropped.
pub const PLAIN: Launch = Launch {
    extra_args: &[],
    null_stdin: false,
    banner_timeout: Duration::from_secs(30),
    term_on_drop: false,
    allow_root: true,
};

/// `daemon.rs`: 60 s for the banner, SIGTERM then kill when dropped.
pub const DAEMON: Launch = Launch {
    extra_args: &[],
    null_stdin: false,
    banner_timeout: Duration::from_secs(60),
    term_on_drop: true,
    allow_root: true,
};

/// `frameworks.rs`: port 0 and warn level added, stdin null, 60 s for the banner, killed
/// when dropped.
pub const FRAMEWORKS: Launch = Launch {
    extra_args: &["--port", "0", "--log-level", "warn"],
    null_stdin: true,
    banner_timeout: Duration::from_secs(60),
    term_on_drop: false,
    allow_root: true,
};

/// A running `wsgi serve`, stopped (by its own pid) when dropped.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// The banner lines before `listening on`.
    pub banner: Vec<String>,
    /// Lines the server printed after its banner (the access log with `--access-log -`).
    /// Read on a thread into this unbounded channel, so the server never blocks on a full pipe.
    pub stdout: mpsc::Receiver<String>,
    stderr: Captured,
    term_on_drop: bool,
}

impl Server {
    /// `wsgi serve ARGS` started as `serve.rs` does ([`PLAIN`]).
    pub fn start(args: &[&str]) -> Server {
        Self::start_with(&PLAIN, args)
    }

    pub fn start_with(launch: &Launch, args: &[&str]) -> Server {
        Self::try_start_with(launch, args).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_start_with(launch: &Launch, args: &[&str]) -> Result<Server, String> {
        Self::try_start_program(Path::new(env!("CARGO_BIN_EXE_wsgi")), launch, args)
    }

    /// `PROGRAM serve ARGS` (another build of `wsgi`, such as one pip installed in a venv),
    /// started as [`Server::try_start_with`] starts this one.
    pub fn try_start_program(
        program: &Path,
        launch: &Launch,
        args: &[&str],
    ) -> Result<Server, String> {
        let mut cmd = Command::new(program);
        cmd.arg("serve").args(args).args(launch.extra_args);
        if launch.allow_root && process::is_root() && !args.contains(&"--user") {
            cmd.arg("--allow-root");
        }
        if launch.null_stdin {
            cmd.stdin(Stdio::null());
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the wsgi binary starts");
        let rx = process::lines(child.stdout.take().unwrap());
        let stderr = Captured::spawn(child.stderr.take().unwrap());
        let deadline = Instant::now() + launch.banner_timeout;
        let mut banner = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let rest = line
                        .strip_prefix("listening on http://")
                        .or_else(|| line.strip_prefix("listening on https://"));
                    if let Some(rest) = rest {
                        let addr = rest.trim_end_matches('/').parse().unwrap();
                        return Ok(Server {
                            child,
                            addr,
                            banner,
                            stdout: rx,
                            stderr,
                            term_on_drop: launch.term_on_drop,
                        });
                    }
                    banner.push(line);
                }
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait().unwrap();
                    // Everything it wrote, unless a child of its keeps the pipe open (5 s).
                    stderr.settle(Duration::from_secs(5));
                    return Err(format!(
                        "no banner from wsgi serve {args:?} ({status}); stdout so far {banner:?}; stderr:\n{}",
                        stderr.text()
                    ));
                }
            }
        }
    }

    /// The pids the banner gave for group `group`.
    pub fn banner_pids(&self, group: &str) -> Vec<u32> {
        let prefix = format!("daemon process group {group}: ");
        let line = self
            .banner
            .iter()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no line for {group} in {:?}", self.banner));
        let pids = line.split("; pids: ").nth(1).unwrap();
        pids.split(' ')
            .map(|p| {
                p.parse()
                    .unwrap_or_else(|_| panic!("{p:?} is not a ready pid: {line}"))
            })
            .collect()
    }

    /// The `--status-addr` the banner's status line gave.
    pub fn status_addr(&self) -> String {
        let line = self
            .banner
            .iter()
            .find(|l| l.starts_with("status on http://"))
            .unwrap_or_else(|| panic!("no status line in {:?}", self.banner));
        line.split("--status-addr ").nth(1).unwrap().to_string()
    }

    /// A new connection whose reads time out after 20 s.
    pub fn connect(&self) -> TcpStream {
        http::connect(self.addr, Duration::from_secs(20))
    }

    /// Sends raw bytes on a new connection and reads until the server closes it.
    pub fn raw(&self, request: &[u8]) -> Vec<u8> {
        let mut s = self.connect();
        s.write_all(request).unwrap();
        http::read_to_close(&mut s)
    }

    /// GET on a new connection (`Connection: close`), read to the close, parsed leniently.
    pub fn get(&self, path: &str) -> Response {
        Response::parse(&self.raw(&http::get_request(path, "localhost")))
    }

    /// [`http::get_text`] to this server.
    pub fn get_text(&self, path: &str) -> TextResponse {
        http::get_text(self.addr, path)
    }

    /// One request on a new connection (`Connection: close`; a Content-Length for a body and
    /// for any POST), the whole response read and parsed strictly (a cut-short response
    /// fails, showing the server's stderr).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        let host = self.addr.to_string();
        let with_length = !body.is_empty() || method == "POST";
        let request = http::request_bytes(method, path, &host, headers, body, with_length);
        let mut s = http::connect(self.addr, Duration::from_secs(30));
        s.write_all(&request).unwrap();
        let mut raw = Vec::new();
        if let Err(e) = s.read_to_end(&mut raw) {
            panic!(
                "reading the response to {method} {path}: {e}; server stderr:\n{}",
                self.stderr()
            );
        }
        Response::try_parse(&raw)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}; server stderr:\n{}", self.stderr()))
    }

    /// [`Server::request`] with GET, no headers and no body.
    pub fn get_strict(&self, path: &str) -> Response {
        self.request("GET", path, &[], b"")
    }

    pub fn sigterm(&self) {
        process::signal(self.child.id(), "-TERM");
    }

    pub fn sighup(&self) {
        process::signal(self.child.id(), "-HUP");
    }

    pub fn sigusr1(&self) {
        process::signal(self.child.id(), "-USR1");
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        process::wait_exit(&mut self.child, limit)
            .unwrap_or_else(|| panic!("the server did not exit within {limit:?}"))
    }

    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    /// Waits (up to `limit`) until the server's log holds `needle` at least `count` times;
    /// returns the log.
    pub fn wait_for_log(&self, needle: &str, count: usize, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let log = self.stderr();
            if log.matches(needle).count() >= count {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "no {count} x `{needle}` in the log: {log}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The next line the server printed after its banner (its access log, with
    /// `--access-log -`) that holds `needle`, within 10 s; a failure shows the lines it
    /// skipped.
    pub fn access_line(&self, needle: &str) -> String {
        wait::next_line(&self.stdout, Duration::from_secs(10), |l| {
            l.contains(needle)
        })
        .unwrap_or_else(|seen| panic!("no access log line with {needle:?}; saw {seen:?}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.term_on_drop {
            process::stop(&mut self.child, Duration::from_secs(20));
        } else {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The pages of `wsgi serve`, for the checks of `wsgi_testkit::frameworks`: each request read
/// strictly ([`Server::request`]), and the server's stderr.
impl Front for Server {
    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        Server::request(self, method, path, headers, body)
    }

    fn log(&self) -> String {
        self.stderr()
    }
}

/// An app that answers what `import mod_wsgi` gives it, one `name=value` line each (values
/// are Python reprs), and whose `subscribe_shutdown` callback appends
/// `PID process_stopping 'REASON'` to `stopping.log` beside the script.
pub const MOD_WSGI_APP: &str = r#"
import os, mod_wsgi, _wsgi_rs

LOG = os.path.join(os.path.dirname(__file__), 'stopping.log')

def stopping(name, **event):
    with open(LOG, 'a') as f:
        f.write('%d %s %r\n' % (os.getpid(), name, event.get('shutdown_reason')))

mod_wsgi.subscribe_shutdown(stopping)

def application(environ, start_response):
    data = mod_wsgi.request_data()
    data['path'] = environ['PATH_INFO']
    m = mod_wsgi.process_metrics()
    lines = [
        'names=%r' % sorted(n for n in dir(mod_wsgi) if not n.startswith('_')),
        'process_group=%r' % mod_wsgi.process_group,
        'environ_process_group=%r' % environ['mod_wsgi.process_group'],
        'application_group=%r' % mod_wsgi.application_group,
        'environ_application_group=%r' % environ['mod_wsgi.application_group'],
        'maximum_processes=%r' % mod_wsgi.maximum_processes,
        'threads_per_process=%r' % mod_wsgi.threads_per_process,
        'version=%r' % (mod_wsgi.version,),
        'environ_version=%r' % (environ['mod_wsgi.version'],),
        'request_timeout=%r' % (mod_wsgi.RequestTimeout is _wsgi_rs.RequestTimeout),
        'file_wrapper=%r' % (environ['wsgi.file_wrapper'] is mod_wsgi.FileWrapper),
        'server_metrics=%r' % (mod_wsgi.server_metrics(),),
        'pid=%r' % (m['pid'] == os.getpid()),
        'request_count=%d' % m['request_count'],
        'request_data=%r' % (mod_wsgi.request_data() is data),
        'active=%r' % [v['path'] for v in mod_wsgi.active_requests.values()],
    ]
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [('\n'.join(lines) + '\n').encode()]
"#;

/// GETs `path` (200 expected) and returns [`MOD_WSGI_APP`]'s lines as a map.
pub fn mod_wsgi_values(server: &Server, path: &str) -> BTreeMap<String, String> {
    let r = server.get_text(path);
    assert_eq!(r.status, 200, "{}\n{}", r.body, server.stderr());
    apps::fields(r.body.as_bytes())
}

/// Checks what [`MOD_WSGI_APP`] answers at `/a` then `/b` in one process whose
/// `mod_wsgi.process_group` is `process_group`, with `threads` threads; the first request
/// is the process's first.
pub fn check_mod_wsgi_module(server: &Server, process_group: &str, threads: u32) {
    let a = mod_wsgi_values(server, "/a");
    assert_eq!(a["names"], apps::MOD_WSGI_NAMES);
    assert_eq!(a["process_group"], format!("'{process_group}'"));
    assert_eq!(a["process_group"], a["environ_process_group"]);
    assert_eq!(a["application_group"], a["environ_application_group"]);
    assert_eq!(a["maximum_processes"], "1");
    assert_eq!(a["threads_per_process"], threads.to_string());
    assert_eq!(a["version"], a["environ_version"]);
    for key in ["request_timeout", "file_wrapper", "pid", "request_data"] {
        assert_eq!(a[key], "True", "{key}");
    }
    assert_eq!(a["server_metrics"], "None");
    // The first request asked for request_data() before anything tracked requests: it is
    // not listed; the next one is.
    assert_eq!(a["request_count"], "0");
    assert_eq!(a["active"], "[]");
    let b = mod_wsgi_values(server, "/b");
    assert_eq!(b["request_count"], "1");
    assert_eq!(b["active"], "['/b']");
}

/// A TCP connection to `addr` from the local IPv4 address `from` (another loopback address,
/// or one of the test's own veth links), connected within 10 s: or what went wrong.
pub fn connect_from(from: Ipv4Addr, addr: SocketAddr) -> Result<TcpStream, String> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .map_err(|e| e.to_string())?;
    s.bind(&SocketAddr::from((from, 0)).into())
        .map_err(|e| e.to_string())?;
    s.connect_timeout(&addr.into(), Duration::from_secs(10))
        .map_err(|e| format!("connect: {e}"))?;
    Ok(TcpStream::from(s))
}

/// A process a test started (a `wsgi serve` with extra environment, or its launcher), killed
/// by its pid when dropped.
pub struct Started(pub Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What systemd does for a socket unit, as a Python launcher: `python -c ACTIVATE LIST
/// PROGRAM ARGS...` binds and listens on each of `LIST` (comma-separated: a port on
/// 127.0.0.1, as `ListenStream=127.0.0.1:PORT`, or a path, as `ListenStream=/path`), puts the
/// sockets on descriptors 3, 4 ..., sets `LISTEN_FDS` to their count and `LISTEN_PID` to its
/// own pid, and execs PROGRAM.
pub const ACTIVATE: &str = r#"
import fcntl, os, socket, sys
sockets = []
for item in sys.argv[1].split(','):
    if item.startswith('/'):
        s = socket.socket(socket.AF_UNIX)
        s.bind(item)
    else:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(('127.0.0.1', int(item)))
    s.listen(16)
    sockets.append(s)
# Out of the way first (a socket may already sit on 3 or 4), then onto 3, 4 ...
high = [fcntl.fcntl(s.fileno(), fcntl.F_DUPFD, 100) for s in sockets]
for s in sockets:
    s.close()
for i, fd in enumerate(high):
    os.dup2(fd, 3 + i)
    os.close(fd)
os.environ['LISTEN_FDS'] = str(len(sockets))
os.environ['LISTEN_PID'] = str(os.getpid())
os.execv(sys.argv[2], sys.argv[2:])
"#;

/// `wsgi serve APP` started by [`ACTIVATE`] with the sockets of `sockets` (its comma-separated
/// list: ports on 127.0.0.1, socket paths), `--allow-root` when the tests run as root; its
/// stdout piped, its stderr to /dev/null.
pub fn serve_activated(sockets: &str, app: &Path) -> Started {
    let mut command = Command::new("/usr/bin/python3.11");
    command
        .args(["-c", ACTIVATE, sockets, env!("CARGO_BIN_EXE_wsgi")])
        .args(["serve", app.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if process::is_root() {
        command.arg("--allow-root");
    }
    Started(command.spawn().unwrap())
}
