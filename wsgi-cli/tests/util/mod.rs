//! Helpers shared by the `wsgi serve` integration tests (`serve.rs`, `daemon.rs`,
//! `frameworks.rs`): the real `wsgi` binary started with a port it picks (read from its
//! banner), requests over real TCP sockets, and a minimal HTTP/1.1 response reader.
//! Every wait is bounded; only the child a test started is signalled or killed.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// Whether the tests run as root.
pub fn is_root() -> bool {
    // The owner of /proc/self is this process's effective user.
    std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0
}

/// `user=nobody ` when the tests run as root (daemon processes never run as root), else
/// nothing: for a `WSGIDaemonProcess` line.
pub fn daemon_user_option() -> &'static str {
    if is_root() { "user=nobody " } else { "" }
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

/// Whether process `pid` runs (a zombie, still in /proc until reaped, does not).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat[stat.rfind(')').unwrap() + 2..].starts_with('Z'),
        Err(_) => false,
    }
}

/// Whether `f` holds within `limit` (asked every 50 ms).
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
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

/// A scratch folder under /var/tmp the server (running as us) can read.
pub fn scratch(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/var/tmp")
        .unwrap()
}

/// A world-readable (0755) scratch folder under /var/tmp.
pub fn scratch_world_readable(prefix: &str) -> tempfile::TempDir {
    let dir = scratch(prefix);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

pub fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

/// `write`, then the file made world-readable (0644).
pub fn write_world_readable(path: &Path, text: &str) -> PathBuf {
    write(path, text);
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
    path.to_path_buf()
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
    stderr: Arc<Mutex<String>>,
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
        if launch.allow_root && is_root() && !args.contains(&"--user") {
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
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        let stderr_reader = std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
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
                    let until = Instant::now() + Duration::from_secs(5);
                    while !stderr_reader.is_finished() && Instant::now() < until {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    return Err(format!(
                        "no banner from wsgi serve {args:?} ({status}); stdout so far {banner:?}; stderr:\n{}",
                        stderr.lock().unwrap()
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

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    }

    /// Sends raw bytes on a new connection and reads until the server closes it.
    pub fn raw(&self, request: &[u8]) -> Vec<u8> {
        let mut s = self.connect();
        s.write_all(request).unwrap();
        read_to_close(&mut s)
    }

    /// GET on a new connection (`Connection: close`), read to the close, parsed leniently.
    pub fn get(&self, path: &str) -> Response {
        let raw = self.raw(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        Response::parse(&raw)
    }

    /// [`get_text`] to this server.
    pub fn get_text(&self, path: &str) -> TextResponse {
        get_text(self.addr, path)
    }

    /// One request on a new connection (`Connection: close`), the whole response read and
    /// parsed strictly (a cut-short response fails, showing the server's stderr).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
        if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
            head.push_str(&format!("Host: {}\r\n", self.addr));
        }
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if !body.is_empty() || method == "POST" {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut raw = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                Err(e) => panic!(
                    "reading the response to {method} {path}: {e}; server stderr:\n{}",
                    self.stderr()
                ),
            }
        }
        Response::try_parse(&raw)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}; server stderr:\n{}", self.stderr()))
    }

    /// [`Server::request`] with GET, no headers and no body.
    pub fn get_strict(&self, path: &str) -> Response {
        self.request("GET", path, &[], b"")
    }

    fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    pub fn sigterm(&self) {
        self.signal("-TERM");
    }

    pub fn sighup(&self) {
        self.signal("-HUP");
    }

    pub fn sigusr1(&self) {
        self.signal("-USR1");
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.term_on_drop
            && let Ok(None) = self.child.try_wait()
        {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading the response: {e}"),
        }
    }
    out
}

/// One parsed response (the test's own minimal reading of HTTP/1.1, chunked included).
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Bytes after this response (pipelined ones).
    pub rest: Vec<u8>,
    /// A chunked body ended with its terminating chunk.
    pub complete: bool,
}

impl Response {
    /// Lenient: a cut-short body is kept and marked incomplete.
    pub fn parse(raw: &[u8]) -> Response {
        Self::parse_for(raw, false)
    }

    pub fn parse_for(raw: &[u8], head_request: bool) -> Response {
        let end = find(raw, b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no end of headers in {:?}", String::from_utf8_lossy(raw)));
        let head = String::from_utf8_lossy(&raw[..end]).to_string();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let mut rest = &raw[end + 4..];
        let header = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let mut body = Vec::new();
        let mut complete = true;
        if head_request || status == 304 || status == 100 {
        } else if header("transfer-encoding").as_deref() == Some("chunked") {
            complete = false;
            while let Some(line_end) = find(rest, b"\r\n") {
                let size_text = String::from_utf8_lossy(&rest[..line_end]).to_string();
                let Ok(size) = usize::from_str_radix(size_text.trim(), 16) else {
                    break;
                };
                rest = &rest[line_end + 2..];
                if size == 0 {
                    if rest.starts_with(b"\r\n") {
                        rest = &rest[2..];
                        complete = true;
                    }
                    break;
                }
                if rest.len() < size + 2 {
                    body.extend_from_slice(&rest[..size.min(rest.len())]);
                    rest = &[];
                    break;
                }
                body.extend_from_slice(&rest[..size]);
                rest = &rest[size + 2..];
            }
        } else if let Some(len) = header("content-length") {
            let len: usize = len.parse().unwrap();
            let take = len.min(rest.len());
            body = rest[..take].to_vec();
            complete = take == len;
            rest = &rest[take..];
        } else {
            body = rest.to_vec();
            rest = &[];
        }
        Response {
            status,
            headers,
            body,
            rest: rest.to_vec(),
            complete,
        }
    }

    /// Strict: a bad status line, chunk or Content-Length, or a cut-short body, is an error.
    pub fn try_parse(raw: &[u8]) -> Result<Response, String> {
        let end = find(raw, b"\r\n\r\n").ok_or_else(|| {
            format!(
                "no end of headers in {:?}",
                String::from_utf8_lossy(&raw[..raw.len().min(2000)])
            )
        })?;
        let head = String::from_utf8_lossy(&raw[..end]).to_string();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line in {head:?}"))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let mut rest = &raw[end + 4..];
        let chunked = headers
            .iter()
            .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
        let mut body = Vec::new();
        if chunked {
            loop {
                let line_end = find(rest, b"\r\n").ok_or("a chunk size line is cut short")?;
                let size_text = String::from_utf8_lossy(&rest[..line_end]).to_string();
                let size = usize::from_str_radix(size_text.trim(), 16)
                    .map_err(|_| format!("bad chunk size {size_text:?}"))?;
                rest = &rest[line_end + 2..];
                if size == 0 {
                    break;
                }
                if rest.len() < size + 2 {
                    return Err("a chunk is cut short".into());
                }
                body.extend_from_slice(&rest[..size]);
                rest = &rest[size + 2..];
            }
        } else if let Some((_, len)) = headers.iter().find(|(n, _)| n == "content-length") {
            let len: usize = len
                .parse()
                .map_err(|_| format!("bad Content-Length {len}"))?;
            if rest.len() < len {
                return Err(format!("body cut short: {} of {len} bytes", rest.len()));
            }
            body = rest[..len].to_vec();
            rest = &rest[len..];
        } else {
            body = rest.to_vec();
            rest = &[];
        }
        Ok(Response {
            status,
            headers,
            body,
            rest: rest.to_vec(),
            complete: true,
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A response read as text: the status and the body (unchunked), everything after the head.
#[derive(Debug)]
pub struct TextResponse {
    pub status: u16,
    pub body: String,
}

/// One GET on a new connection (`Connection: close`); the body is read to the close, read
/// errors ending the read (a daemon that dies mid-response).
pub fn get_text(addr: SocketAddr, path: &str) -> TextResponse {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {text:?}"));
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        unchunk(body)
    } else {
        body.to_string()
    };
    TextResponse { status, body }
}

fn unchunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
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

/// `MOD_WSGI_NAMES`: Debian's mod_wsgi 4.9.4's public names, plus 6.x's `RequestTimeout`.
pub const MOD_WSGI_NAMES: &str = "['FileWrapper', 'RequestTimeout', 'active_requests', 'application_group', 'event_callbacks', 'maximum_processes', 'process_group', 'process_metrics', 'request_data', 'request_metrics', 'server_metrics', 'shutdown_callbacks', 'subscribe_events', 'subscribe_shutdown', 'threads_per_process', 'version']";

/// GETs `path` (200 expected) and returns [`MOD_WSGI_APP`]'s lines as a map.
pub fn mod_wsgi_values(server: &Server, path: &str) -> std::collections::HashMap<String, String> {
    let r = server.get_text(path);
    assert_eq!(r.status, 200, "{}\n{}", r.body, server.stderr());
    r.body
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Checks what [`MOD_WSGI_APP`] answers at `/a` then `/b` in one process whose
/// `mod_wsgi.process_group` is `process_group`, with `threads` threads; the first request
/// is the process's first.
pub fn check_mod_wsgi_module(server: &Server, process_group: &str, threads: u32) {
    let a = mod_wsgi_values(server, "/a");
    assert_eq!(a["names"], MOD_WSGI_NAMES);
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

/// A process a test started (a `wsgi serve` with extra environment, or its launcher), killed
/// by its pid when dropped.
pub struct Started(pub Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends the signal `name` (`-HUP`, `-TERM`) to a child the test started, with kill(1).
pub fn signal(child: &Child, name: &str) {
    let ok = Command::new("kill")
        .args([name, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {name} {}", child.id());
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
