//! Real processes: the `wsgi-daemon supervise` binary runs the groups of a configuration
//! (exec'ing `wsgi-daemon process` for each daemon), and this test process is the front,
//! talking to the sockets through `DaemonClient`.

use std::io::{self, BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, Uid};
use wsgi_daemon::{ClientOptions, DaemonClient, DaemonRequest, DispatchError, Endpoint};
use wsgi_interp::{Outcome, RequestHead, ResponseSink, ScriptSpec};

const APP: &str = r#"
import os, time

def application(environ, start_response):
    path = environ['PATH_INFO']
    body = str(os.getpid()).encode()
    if path == '/sleep':
        time.sleep(float(environ['QUERY_STRING'] or '0.5'))
    elif path == '/exit':
        os._exit(1)
    elif path == '/hang':
        time.sleep(3600)
    elif path == '/echo':
        body = environ['wsgi.input'].read()
    elif path == '/whoami':
        body = ('%d %s %s' % (os.getuid(), os.getcwd(), environ['mod_wsgi.process_group'])).encode()
    elif path == '/headers':
        start_response('201 Created', [('X-Many', 'one'), ('Set-Cookie', 'a=1'),
                                       ('X-Many', 'two'), ('Set-Cookie', 'b=2')])
        return [b'ok']
    elif path == '/fail-mid':
        start_response('200 OK', [('Content-Type', 'text/plain')])
        def gen():
            yield b'partial'
            raise RuntimeError('failed mid-body')
        return gen()
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [body]
"#;

/// A supervisor process running one group `site`, and a client for it.
struct Server {
    child: Child,
    socket: PathBuf,
    client: DaemonClient,
    app: tempfile::TempDir,
}

impl Server {
    fn start(options: &str, request_timeout: Duration) -> Server {
        let app = tempfile::Builder::new()
            .prefix("wsgi-daemon-test.")
            .tempdir_in("/var/tmp")
            .unwrap();
        std::fs::set_permissions(app.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(app.path().join("app.wsgi"), APP).unwrap();
        std::fs::set_permissions(
            app.path().join("app.wsgi"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let user = if Uid::effective().is_root() {
            "user=nobody "
        } else {
            ""
        };
        let conf = app.path().join("site.conf");
        std::fs::write(
            &conf,
            format!(
                "WSGIDaemonProcess site {user}home={} display-name=%{{GROUP}} {options}\n",
                app.path().display()
            ),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_wsgi-daemon"))
            .arg("supervise")
            .arg(&conf)
            .arg("--socket-dir")
            .arg(app.path())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let socket = PathBuf::from(
            line.trim()
                .strip_prefix("group site ")
                .unwrap_or_else(|| panic!("unexpected line {line:?}")),
        );
        let processes = options
            .split_whitespace()
            .find_map(|o| o.strip_prefix("processes="))
            .map_or(1, |n| n.parse().unwrap());
        let client = DaemonClient::new(vec![Endpoint {
            group: "site".into(),
            socket: socket.clone(),
            options: ClientOptions {
                processes,
                connect_timeout: Duration::from_secs(15),
                request_timeout,
                socket_timeout: Duration::from_secs(30),
                max_idle: 16,
            },
        }]);
        Server {
            child,
            socket,
            client,
            app,
        }
    }

    fn get(&self, path: &str, query: &str) -> Result<Response, DispatchError> {
        self.send(path, query, b"")
    }

    fn send(&self, path: &str, query: &str, body: &[u8]) -> Result<Response, DispatchError> {
        let head = RequestHead {
            method: if body.is_empty() { "GET" } else { "POST" }.into(),
            path_info: path.as_bytes().to_vec(),
            query_string: query.as_bytes().to_vec(),
            request_uri: path.as_bytes().to_vec(),
            protocol: "HTTP/1.1".into(),
            server_name: "localhost".into(),
            server_port: 80,
            remote_addr: "127.0.0.1".into(),
            remote_port: 4000,
            ..Default::default()
        };
        let script = ScriptSpec::new(self.app.path().join("app.wsgi"));
        let request = DaemonRequest::new(head, &script, "");
        let mut sink = Response::default();
        let mut body = body;
        let outcome = self
            .client
            .dispatch("site", &request, &mut body, &mut sink)?;
        sink.outcome = Some(outcome);
        Ok(sink)
    }

    /// The daemon processes: children of the supervisor.
    fn daemon_pids(&self) -> Vec<i32> {
        children_of(self.child.id() as i32)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

fn children_of(parent: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let ppid: i32 = after.split(' ').nth(1).unwrap().parse().unwrap();
        if ppid == parent {
            out.push(pid);
        }
    }
    out
}

#[derive(Default)]
struct Response {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    outcome: Option<Outcome>,
}

impl Response {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn complete(&self) -> bool {
        matches!(self.outcome, Some(Outcome::Complete { .. }))
    }
}

impl ResponseSink for Response {
    fn start(&mut self, status: u16, _: &str, headers: Vec<(String, Vec<u8>)>) -> io::Result<()> {
        self.status = status;
        self.headers = headers;
        Ok(())
    }
    fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.body.extend_from_slice(chunk);
        Ok(())
    }
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn two_processes_four_threads_serve_concurrently_and_pass_responses_unchanged() {
    let server = Arc::new(Server::start("processes=2 threads=4", Duration::ZERO));
    // Warm both processes up (Python start), then 8 requests of 0.6 s at once.
    assert!(server.get("/", "").unwrap().complete());
    let start = Instant::now();
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let s = server.clone();
            std::thread::spawn(move || s.get("/sleep", "0.6").unwrap())
        })
        .collect();
    let mut pids: Vec<String> = handles
        .into_iter()
        .map(|h| {
            let r = h.join().unwrap();
            assert!(r.complete(), "{:?}", r.outcome);
            r.text()
        })
        .collect();
    let elapsed = start.elapsed();
    pids.sort();
    pids.dedup();
    assert_eq!(pids.len(), 2, "two processes answered: {pids:?}");
    assert!(
        elapsed < Duration::from_millis(2000),
        "8 × 0.6 s on 2×4 threads took {elapsed:?}"
    );

    // Repeated headers stay separate, in order.
    let r = server.get("/headers", "").unwrap();
    assert_eq!(r.status, 201);
    let names: Vec<(&str, &[u8])> = r
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("X-Many", &b"one"[..]),
            ("Set-Cookie", b"a=1"),
            ("X-Many", b"two"),
            ("Set-Cookie", b"b=2")
        ]
    );
    // A large body is pulled through in chunks.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let r = server.send("/echo", "", &big).unwrap();
    assert!(r.complete());
    assert_eq!(r.body, big);
    // An app failing mid-body is an abort, not a clean end.
    let r = server.get("/fail-mid", "").unwrap();
    assert_eq!(r.body, b"partial");
    match &r.outcome {
        Some(Outcome::Aborted {
            status: 200,
            sent: 7,
            error,
        }) => {
            assert!(error.message.contains("failed mid-body"), "{error}")
        }
        other => panic!("expected Aborted, got {other:?}"),
    }

    // Privileges, home, socket.
    let who = server.get("/whoami", "").unwrap().text();
    let expected_uid = if Uid::effective().is_root() {
        65534
    } else {
        Uid::effective().as_raw()
    };
    assert_eq!(
        who,
        format!("{expected_uid} {} site", server.app.path().display())
    );
    let meta = std::fs::metadata(&server.socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), expected_uid);
    let dir = std::fs::metadata(server.socket.parent().unwrap()).unwrap();
    assert_eq!(dir.permissions().mode() & 0o777, 0o700);
    assert_eq!(dir.uid(), expected_uid);
    // The process title carries the group (argv[0] set at exec).
    let pid = server.daemon_pids()[0];
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(
        cmdline.starts_with(b"(wsgi:site)\0"),
        "{:?}",
        String::from_utf8_lossy(&cmdline)
    );
}

#[test]
fn a_crash_fails_only_its_request_with_502_and_the_next_succeed_within_a_second() {
    let server = Arc::new(Server::start("processes=1 threads=2", Duration::ZERO));
    let first_pid = server.get("/", "").unwrap().text();

    let err = server
        .get("/exit", "")
        .err()
        .expect("os._exit gives an error");
    assert_eq!(err.status(), 502, "{err}");
    let crashed = Instant::now();
    let r = server.get("/", "").unwrap();
    assert!(r.complete());
    assert!(
        crashed.elapsed() < Duration::from_secs(1),
        "{:?}",
        crashed.elapsed()
    );
    let second_pid = r.text();
    assert_ne!(first_pid, second_pid);

    // SIGKILL in the middle of a request.
    let s = server.clone();
    let hanging = std::thread::spawn(move || s.get("/hang", ""));
    std::thread::sleep(Duration::from_millis(300));
    kill(Pid::from_raw(second_pid.parse().unwrap()), Signal::SIGKILL).unwrap();
    let err = hanging
        .join()
        .unwrap()
        .err()
        .expect("SIGKILL gives an error");
    assert_eq!(err.status(), 502, "{err}");
    let killed = Instant::now();
    let r = server.get("/", "").unwrap();
    assert!(r.complete());
    assert!(
        killed.elapsed() < Duration::from_secs(1),
        "{:?}",
        killed.elapsed()
    );
    assert_ne!(r.text(), second_pid);
}

#[test]
fn maximum_requests_recycles_with_zero_failed_requests() {
    let server = Arc::new(Server::start(
        "processes=2 threads=2 maximum-requests=10",
        Duration::ZERO,
    ));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let s = server.clone();
            std::thread::spawn(move || {
                (0..40)
                    .map(|_| match s.get("/", "") {
                        Ok(r) if r.complete() => Ok(r.text()),
                        Ok(r) => Err(format!("{:?}", r.outcome)),
                        Err(e) => Err(e.to_string()),
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut pids = Vec::new();
    let mut failures = Vec::new();
    for h in handles {
        for r in h.join().unwrap() {
            match r {
                Ok(pid) => pids.push(pid),
                Err(e) => failures.push(e),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(pids.len(), 160);
    pids.sort();
    pids.dedup();
    // 160 requests at 10 per process: at least 16 processes served.
    assert!(pids.len() >= 16, "only {} distinct pids", pids.len());
}

#[test]
fn request_timeout_answers_504_near_the_timeout_and_replaces_the_process() {
    let server = Server::start(
        "processes=1 threads=2 request-timeout=1",
        Duration::from_secs(1),
    );
    let before = server.get("/", "").unwrap().text();
    let start = Instant::now();
    let err = server
        .get("/hang", "")
        .err()
        .expect("a stuck request times out");
    let elapsed = start.elapsed();
    assert_eq!(err.status(), 504, "{err}");
    assert!(
        elapsed >= Duration::from_millis(950) && elapsed < Duration::from_millis(1500),
        "{elapsed:?}"
    );
    // The process is replaced promptly: a new pid answers.
    assert!(wait_until(Duration::from_secs(3), || {
        server
            .get("/", "")
            .map(|r| r.complete() && r.text() != before)
            .unwrap_or(false)
    }));
}

#[test]
fn sigterm_to_the_supervisor_leaves_no_process_and_no_socket() {
    let mut server = Server::start("processes=2 threads=2", Duration::ZERO);
    assert!(server.get("/", "").unwrap().complete());
    assert!(wait_until(Duration::from_secs(5), || server
        .daemon_pids()
        .len()
        == 2));
    let pids = server.daemon_pids();
    let socket = server.socket.clone();
    let dir: PathBuf = socket.parent().unwrap().to_path_buf();
    assert!(socket.exists());
    let stop = Instant::now();
    kill(Pid::from_raw(server.child.id() as i32), Signal::SIGTERM).unwrap();
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(
        stop.elapsed() < Duration::from_secs(3),
        "{:?}",
        stop.elapsed()
    );
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "daemon {pid} survived"
        );
    }
    assert!(!socket.exists(), "socket left behind");
    assert!(!dir.exists(), "socket directory left behind");
}

#[test]
fn touching_the_script_restarts_the_group_under_load_with_zero_failed_requests() {
    let server = Arc::new(Server::start("processes=2 threads=2", Duration::ZERO));
    let before = server.get("/", "").unwrap().text();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let (s, stop) = (server.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut results = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    results.push(match s.get("/", "") {
                        Ok(r) if r.complete() => Ok(r.text()),
                        Ok(r) => Err(format!("{:?}", r.outcome)),
                        Err(e) => Err(e.to_string()),
                    });
                }
                results
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // `touch app.wsgi`: a new mtime.
    let script = std::fs::File::options()
        .write(true)
        .open(server.app.path().join("app.wsgi"))
        .unwrap();
    script
        .set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let results: Vec<_> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let failures: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} failed: {:?}",
        failures.len(),
        results.len(),
        &failures[..failures.len().min(5)]
    );
    let after = server.get("/", "").unwrap().text();
    assert_ne!(before, after, "the process was replaced");
    let st: Vec<String> = results.into_iter().flatten().collect();
    assert!(st.iter().any(|p| *p != before));
}
