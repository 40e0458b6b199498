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
use wsgi_config::daemon_options::DaemonOptions;
use wsgi_daemon::{DaemonClient, DaemonRequest, DispatchError, Endpoint};
use wsgi_interp::{AppCall, Outcome, RequestHead, ResponseSink, ScriptSpec};
use wsgi_testkit::apps::DAEMON_APP as APP;
use wsgi_testkit::{fs, process, wait};

/// A supervisor process running one group `site`, and a client for it.
struct Server {
    child: Child,
    socket: PathBuf,
    client: DaemonClient,
    app: tempfile::TempDir,
}

impl Server {
    fn start(options: &str, request_timeout: Duration) -> Server {
        Server::start_with("", options, request_timeout)
    }

    /// Like [`Server::start`], with server-wide directives (`prelude`) before the group.
    fn start_with(prelude: &str, options: &str, request_timeout: Duration) -> Server {
        Server::start_full(prelude, options, "", &[], request_timeout)
    }

    /// Like [`Server::start_with`], with directives after the group (`{APP}` is the app
    /// folder) and more files in the app folder (a name ending in `/`: a folder anyone may
    /// write to).
    fn start_full(
        prelude: &str,
        options: &str,
        after: &str,
        files: &[(&str, &str)],
        request_timeout: Duration,
    ) -> Server {
        let app = fs::scratch_world_readable("wsgi-daemon-test.");
        for (name, text) in [("app.wsgi", APP)].iter().chain(files) {
            if let Some(dir) = name.strip_suffix('/') {
                // A folder the daemon user may write to.
                let dir = app.path().join(dir);
                std::fs::create_dir(&dir).unwrap();
                fs::chmod(&dir, 0o777);
                continue;
            }
            fs::write_world_readable(&app.path().join(name), text);
        }
        let user = if Uid::effective().is_root() {
            "user=nobody "
        } else {
            ""
        };
        let conf = app.path().join("site.conf");
        std::fs::write(
            &conf,
            format!(
                "{prelude}WSGIDaemonProcess site {user}home={} display-name=%{{GROUP}} {options}\n{}\n",
                app.path().display(),
                after.replace("{APP}", &app.path().display().to_string()),
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
            options: DaemonOptions {
                processes,
                connect_timeout: Duration::from_secs(15),
                request_timeout,
                socket_timeout: Duration::from_secs(30),
                ..DaemonOptions::default()
            },
            default_socket_timeout: Duration::from_secs(30),
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
        self.send_to("", path, query, body)
    }

    /// A request for application group `app_group` (`""`: the main interpreter).
    fn send_to(
        &self,
        app_group: &str,
        path: &str,
        query: &str,
        body: &[u8],
    ) -> Result<Response, DispatchError> {
        self.send_script("app.wsgi", app_group, path, query, body)
    }

    /// A request for `script` (a file of the app folder) in application group `app_group`.
    fn send_script(
        &self,
        script: &str,
        app_group: &str,
        path: &str,
        query: &str,
        body: &[u8],
    ) -> Result<Response, DispatchError> {
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
        let app = AppCall {
            script: ScriptSpec::new(self.app.path().join(script)),
            application_group: app_group.to_string(),
            pass_authorization: false,
        };
        let request = DaemonRequest::new(app, head);
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
        process::children(self.child.id())
            .into_iter()
            .map(|pid| pid as i32)
            .collect()
    }

    /// Checks that `first` stops 1 s (startup-timeout=1) after `asked`, give or take, and
    /// that another process takes its place.
    fn replaced_by_startup_timeout(&self, first: i32, asked: Instant) {
        assert!(wait_until(Duration::from_secs(4), || !alive(first)));
        let took = asked.elapsed();
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_millis(3000),
            "replaced {took:?} after the request"
        );
        assert!(wait_until(Duration::from_secs(5), || self
            .daemon_pids()
            .iter()
            .any(|p| *p != first)));
    }

    /// The one daemon process of a `processes=1` group, once it has started (5 s at most).
    fn only_pid(&self) -> i32 {
        assert!(
            wait_until(Duration::from_secs(5), || self.daemon_pids().len() == 1),
            "{:?}",
            self.daemon_pids()
        );
        self.daemon_pids()[0]
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

/// Whether `pid` is running (not gone, not a zombie waiting for the supervisor): the i32 pids
/// nix's `kill` takes, given to [`process::alive`].
fn alive(pid: i32) -> bool {
    process::alive(pid as u32)
}

/// The nice value of a process or thread, from its `stat` file.
fn nice_of(stat_path: &str) -> i32 {
    let stat = std::fs::read_to_string(stat_path).unwrap();
    // Fields after the command: state is field 3, nice is field 19.
    stat[stat.rfind(')').unwrap() + 2..]
        .split(' ')
        .nth(16)
        .unwrap()
        .parse()
        .unwrap()
}

/// A line of `/proc/<pid>/limits`, e.g. `Max cpu time`, as its soft and hard values.
fn limit_of(pid: i32, name: &str) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name:?} in {limits}"));
    let mut values = line[name.len()..].split_whitespace();
    (
        values.next().unwrap().to_string(),
        values.next().unwrap().to_string(),
    )
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

/// Whether `f` holds within `limit`, asked every 20 ms.
fn wait_until(limit: Duration, f: impl FnMut() -> bool) -> bool {
    wait::eventually_every(limit, Duration::from_millis(20), f)
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

/// A `wsgi.file_wrapper` file reaches the front as a descriptor (FILE frame); a sink that
/// cannot send from a file gets its bytes, read by the client from that descriptor.
#[test]
fn a_file_wrapper_file_is_read_from_its_descriptor_when_the_sink_wants_bytes() {
    let server = Server::start("processes=1 threads=2", Duration::ZERO);
    let dir = wsgi_testkit::fs::scratch_world_readable("wsgi-daemon-file-");
    let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let file = dir.path().join("data.bin");
    std::fs::write(&file, &content).unwrap();
    let r = server.get("/file", file.to_str().unwrap()).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body == content[10..], "body differs");
    match &r.outcome {
        Some(Outcome::Complete { body_bytes, .. }) => assert_eq!(*body_bytes, 199_990),
        other => panic!("expected Complete, got {other:?}"),
    }
    // The connection serves the next request.
    assert!(server.get("/", "").unwrap().complete());
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
    // A process counts a request when it ends (as mod_wsgi does) and stops taking new ones at
    // the tenth: the other thread's request, begun before that, ends there too. So a process
    // serves 10 or 11 requests (more only if the limit did nothing), and 160 take 15 or more.
    let mut served = std::collections::HashMap::<String, usize>::new();
    for pid in &pids {
        *served.entry(pid.clone()).or_default() += 1;
    }
    let most = served.values().max().copied().unwrap_or(0);
    assert!(most <= 11, "a process served {most} requests: {served:?}");
    assert!(served.len() >= 15, "only {} distinct pids", served.len());
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

#[test]
fn resource_limits_priority_and_stack_size_are_applied_before_python_starts() {
    let server = Server::start(
        "processes=1 threads=2 cpu-time-limit=30 memory-limit=3000000000 \
         virtual-memory-limit=1500000000 cpu-priority=5 stack-size=524288",
        Duration::ZERO,
    );
    let pid: i32 = server.get("/", "").unwrap().text().parse().unwrap();
    // Soft limit as set; the CPU hard limit leaves graceful-timeout (15) + shutdown-timeout
    // (5) + 1 s for the graceful restart SIGXCPU starts.
    assert_eq!(limit_of(pid, "Max cpu time"), ("30".into(), "51".into()));
    assert_eq!(
        limit_of(pid, "Max data size"),
        ("3000000000".into(), "3000000000".into())
    );
    assert_eq!(
        limit_of(pid, "Max address space"),
        ("1500000000".into(), "1500000000".into())
    );
    // The nice value is set before any thread exists, so every thread has it.
    assert_eq!(nice_of(&format!("/proc/{pid}/stat")), 5);
    let tasks: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .collect();
    assert!(tasks.len() > 3, "{} threads", tasks.len());
    for t in tasks {
        let stat = t.path().join("stat");
        assert_eq!(nice_of(stat.to_str().unwrap()), 5, "{}", stat.display());
    }
    // The worker threads run on stacks of stack-size (glibc may add its guard page).
    let r = server.get("/stack", "").unwrap();
    assert!(r.complete(), "{:?}", r.outcome);
    let stack: u64 = r.text().parse().unwrap();
    assert!((524_288..=524_288 + 65_536).contains(&stack), "{stack}");
    // Allocating past virtual-memory-limit is a MemoryError (500), and the process lives on.
    let r = server.get("/alloc", "2000000000").unwrap();
    match &r.outcome {
        Some(Outcome::Error(e)) => assert!(e.message.contains("MemoryError"), "{e}"),
        other => panic!("expected a MemoryError, got {other:?}"),
    }
    let r = server.get("/alloc", "1000000").unwrap();
    assert_eq!(r.text(), "1000000");
    assert_eq!(server.get("/", "").unwrap().text(), pid.to_string());
}

#[test]
fn cpu_time_limit_restarts_the_process_gracefully() {
    let server = Server::start("processes=1 threads=2 cpu-time-limit=1", Duration::ZERO);
    let before: i32 = server.get("/", "").unwrap().text().parse().unwrap();
    // 1.5 s of CPU: SIGXCPU arrives at 1 s; the request still finishes (graceful drain).
    let r = server.get("/spin", "1.5").unwrap();
    assert!(r.complete(), "{:?}", r.outcome);
    assert_eq!(r.text(), before.to_string());
    assert!(
        wait_until(Duration::from_secs(3), || !alive(before)),
        "the process that reached cpu-time-limit still runs"
    );
    let after = server.get("/", "").unwrap();
    assert!(after.complete());
    assert_ne!(after.text(), before.to_string());
}

#[test]
fn switch_interval_is_set_in_every_interpreter() {
    // WSGISwitchInterval is the default for groups without switch-interval=.
    let server = Server::start_with("WSGISwitchInterval 0.02\n", "threads=2", Duration::ZERO);
    for app_group in ["", "other"] {
        let r = server.send_to(app_group, "/switch", "", b"").unwrap();
        assert!(r.complete(), "{:?}", r.outcome);
        assert_eq!(r.text(), "0.02", "application group {app_group:?}");
    }
    drop(server);
    let server = Server::start_with(
        "WSGISwitchInterval 0.02\n",
        "threads=2 switch-interval=0.0123",
        Duration::ZERO,
    );
    for app_group in ["", "other"] {
        let r = server.send_to(app_group, "/switch", "", b"").unwrap();
        assert_eq!(r.text(), "0.0123", "application group {app_group:?}");
    }
}

#[test]
fn sigusr1_drains_for_eviction_timeout_not_graceful_timeout() {
    // graceful-timeout is 15 s by default: eviction-timeout=1 governs SIGUSR1.
    let server = Arc::new(Server::start(
        "processes=1 threads=2 eviction-timeout=1",
        Duration::ZERO,
    ));
    let pid: i32 = server.get("/", "").unwrap().text().parse().unwrap();
    let s = server.clone();
    let slow = std::thread::spawn(move || s.get("/sleep", "6"));
    std::thread::sleep(Duration::from_millis(300));
    let signalled = Instant::now();
    kill(Pid::from_raw(pid), Signal::SIGUSR1).unwrap();
    // A replacement takes requests (the signal is seen within the monitor's tick).
    assert!(wait_until(Duration::from_millis(800), || {
        server
            .get("/", "")
            .map(|r| r.complete() && r.text() != pid.to_string())
            .unwrap_or(false)
    }));
    assert!(wait_until(Duration::from_secs(4), || !alive(pid)));
    let gone = signalled.elapsed();
    assert!(
        gone >= Duration::from_millis(900) && gone < Duration::from_millis(2500),
        "the old process exited {gone:?} after SIGUSR1"
    );
    // The request still running at the eviction deadline is lost.
    let err = slow.join().unwrap().err().expect("the slow request fails");
    assert_eq!(err.status(), 502, "{err}");
}

#[test]
fn inactivity_timeout_replaces_a_process_idle_after_serving_but_not_one_that_never_served() {
    let server = Server::start("processes=1 threads=2 inactivity-timeout=1", Duration::ZERO);
    let idle = server.only_pid();
    // Never served: no activity, so no inactivity, however long it waits (mod_wsgi).
    std::thread::sleep(Duration::from_millis(2500));
    assert!(alive(idle));
    assert_eq!(server.daemon_pids(), vec![idle]);
    let before: i32 = server.get("/", "").unwrap().text().parse().unwrap();
    assert_eq!(before, idle);
    // A request longer than the timeout is activity, not idleness.
    let r = server.get("/sleep", "1.3").unwrap();
    assert_eq!(r.text(), before.to_string());
    assert!(alive(before));
    let idle = Instant::now();
    assert!(wait_until(Duration::from_secs(4), || !alive(before)));
    assert!(
        idle.elapsed() >= Duration::from_millis(900),
        "{:?}",
        idle.elapsed()
    );
    assert!(wait_until(Duration::from_secs(3), || {
        let pids = server.daemon_pids();
        pids.len() == 1 && pids[0] != before
    }));
    // The replacement has not served: it stays.
    let replacement = server.daemon_pids()[0];
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(server.daemon_pids(), vec![replacement]);
    let after = server.get("/", "").unwrap();
    assert!(after.complete());
    assert_eq!(after.text(), replacement.to_string());
}

#[test]
fn restart_interval_replaces_processes_with_zero_failed_requests() {
    let server = Arc::new(Server::start(
        "processes=1 threads=2 restart-interval=1",
        Duration::ZERO,
    ));
    let start = Instant::now();
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let s = server.clone();
            std::thread::spawn(move || {
                let mut results = Vec::new();
                while start.elapsed() < Duration::from_millis(2800) {
                    results.push(match s.get("/sleep", "0.05") {
                        Ok(r) if r.complete() => Ok(r.text()),
                        Ok(r) => Err(format!("{:?}", r.outcome)),
                        Err(e) => Err(e.to_string()),
                    });
                }
                results
            })
        })
        .collect();
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
    let mut pids: Vec<String> = results.into_iter().flatten().collect();
    pids.dedup();
    // Python starts in well under a second, so ~2.8 s see at least two replacements.
    assert!(pids.len() >= 3, "pids in order: {pids:?}");
}

#[test]
fn supplementary_groups_are_set_when_started_as_root() {
    let server = Server::start(
        "processes=1 threads=1 supplementary-groups=daemon,adm",
        Duration::ZERO,
    );
    let pid: i32 = server.get("/", "").unwrap().text().parse().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let groups_of = |status: &str| -> Vec<u32> {
        let line = status.lines().find(|l| l.starts_with("Groups:")).unwrap();
        let mut g: Vec<u32> = line["Groups:".len()..]
            .split_whitespace()
            .map(|g| g.parse().unwrap())
            .collect();
        g.sort();
        g
    };
    if Uid::effective().is_root() {
        // daemon (1) and adm (4) replace the user's own groups.
        assert_eq!(groups_of(&status), vec![1, 4], "{status}");
    } else {
        // Without root the groups cannot change: the daemon has the server's.
        let own = std::fs::read_to_string("/proc/self/status").unwrap();
        assert_eq!(groups_of(&status), groups_of(&own));
    }
}

#[test]
fn import_scripts_and_script_aliases_with_both_groups_are_preloaded() {
    let server = Server::start_full(
        "",
        "processes=1 threads=2 startup-timeout=1",
        "WSGIImportScript {APP}/preload.py process-group=site application-group=%{GLOBAL}\n\
         WSGIScriptAlias /app {APP}/app.wsgi process-group=site application-group=%{GLOBAL}\n\
         WSGIScriptAlias /slow {APP}/slow.wsgi process-group=site",
        &[
            (
                "preload.py",
                "import sys, time\nsys.preloaded_at = time.time()\n",
            ),
            // Without a literal application group it is loaded on first request only: were
            // it preloaded, the process would not take requests for 3 s.
            (
                "slow.wsgi",
                "import time\ntime.sleep(3)\napplication = None\n",
            ),
        ],
        Duration::ZERO,
    );
    assert!(wait_until(Duration::from_secs(3), || !server
        .daemon_pids()
        .is_empty()));
    let pid = server.daemon_pids()[0];
    // Past startup-timeout: the process has loaded its script, so it is not restarted.
    std::thread::sleep(Duration::from_millis(1500));
    let asked = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let r = server.get("/loaded", "").unwrap();
    assert!(r.complete(), "{:?}", r.outcome);
    let took = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        - asked;
    assert!(took < 0.5, "the first request took {took}s");
    let text = r.text();
    let (app, import) = text.split_once(' ').unwrap();
    let app: f64 = app.parse().unwrap();
    let import: f64 = import
        .parse()
        .unwrap_or_else(|_| panic!("the import script did not run: {text}"));
    // Both ran at start (import script first, in configuration order), not on this request.
    assert!(import <= app, "{text}");
    assert!(
        app < asked - 1.0,
        "app.wsgi loaded at {app}, asked at {asked}"
    );
    assert_eq!(server.daemon_pids(), vec![pid]);
    assert!(alive(pid));
}

#[test]
fn startup_timeout_runs_from_the_first_request_until_a_script_loads() {
    // The import script fails, so no script has loaded; but no request waits for the
    // process, so startup-timeout never starts (mod_wsgi starts it at the first request).
    let server = Server::start_full(
        "",
        "processes=1 threads=2 startup-timeout=1",
        "WSGIImportScript {APP}/broken.py process-group=site application-group=%{GLOBAL}",
        &[
            ("broken.py", "raise RuntimeError('not today')\n"),
            ("broken.wsgi", "raise RuntimeError('not loading')\n"),
        ],
        Duration::ZERO,
    );
    let first = server.only_pid();
    std::thread::sleep(Duration::from_millis(2500));
    assert!(alive(first), "an idle process was restarted");
    assert_eq!(server.daemon_pids(), vec![first]);
    // A request for a script that does not load starts it: replaced about 1 s later.
    let asked = Instant::now();
    let r = server.send_script("broken.wsgi", "", "/", "", b"").unwrap();
    assert!(
        matches!(r.outcome, Some(Outcome::Script(_))),
        "{:?}",
        r.outcome
    );
    server.replaced_by_startup_timeout(first, asked);
    // The replacement loads a script at its first request: the timer stops for good.
    let second: i32 = server.get("/", "").unwrap().text().parse().unwrap();
    assert_ne!(second, first);
    let r = server.send_script("broken.wsgi", "", "/", "", b"").unwrap();
    assert!(matches!(r.outcome, Some(Outcome::Script(_))));
    std::thread::sleep(Duration::from_millis(2000));
    assert!(alive(second));
    assert_eq!(server.daemon_pids(), vec![second]);
}

#[test]
fn startup_timeout_replaces_a_process_stuck_preloading_once_a_request_waits() {
    // An import script that hangs: the process never serves. Idle, it is left alone...
    let server = Arc::new(Server::start_full(
        "",
        "processes=1 threads=2 startup-timeout=1",
        "WSGIImportScript {APP}/hang.py process-group=site application-group=%{GLOBAL}",
        &[("hang.py", "import time\ntime.sleep(3600)\n")],
        Duration::from_secs(6),
    ));
    let first = server.only_pid();
    std::thread::sleep(Duration::from_millis(2500));
    assert!(alive(first), "an idle process was restarted");
    // ...until a request waits for it: replaced about 1 s later (the request itself times
    // out at the client's 6 s, as every replacement hangs too).
    let s = server.clone();
    let waiting = std::thread::spawn(move || s.get("/", "").map(|r| r.text()));
    let asked = Instant::now();
    server.replaced_by_startup_timeout(first, asked);
    let Err(err) = waiting.join().unwrap() else {
        panic!("a process answered");
    };
    assert_eq!(err.status(), 504, "{err}");
}

/// A process that cannot start its threads (its import script takes most of memory-limit=
/// in every process after the first, until the file `state/stop` exists) tells the
/// supervisor why and answers the requests waiting for it with that reason (503), instead of
/// leaving them to wait for a process that never comes; once the cause is gone, a
/// replacement serves.
#[test]
fn a_process_that_cannot_start_its_threads_answers_waiting_requests_with_why() {
    const HOG: &str = "import os, sys\n\
        with open('state/starts', 'a') as f:\n    f.write('x')\n\
        if os.path.getsize('state/starts') > 1 and not os.path.exists('state/stop'):\n    \
            sys.hog = bytearray(175000000)\n";
    let server = Server::start_full(
        "",
        "processes=1 threads=15 maximum-requests=1 memory-limit=200000000",
        "WSGIImportScript {APP}/hog.py process-group=site application-group=%{GLOBAL}",
        &[("state/", ""), ("hog.py", HOG)],
        Duration::from_secs(20),
    );
    // maximum-requests=1: the first process is replaced after this request, and the
    // replacements take the memory.
    let first: i32 = server.get("/", "").unwrap().text().parse().unwrap();
    assert!(wait_until(Duration::from_secs(5), || !alive(first)));
    let asked = Instant::now();
    let Err(err) = server.get("/", "") else {
        panic!("a process answered");
    };
    assert!(
        asked.elapsed() < Duration::from_secs(8),
        "answered after {:?}",
        asked.elapsed()
    );
    assert_eq!(err.status(), 503, "{err}");
    let text = err.to_string();
    for part in [
        "daemon process group `site` cannot start its processes",
        "cannot start its wsgi-worker-",
        "memory-limit=200000000 (RLIMIT_DATA; the process held ",
        "the application and its preloaded scripts hold the rest: raise it by at least",
    ] {
        assert!(text.contains(part), "{part:?} not in {text}");
    }
    std::fs::write(server.app.path().join("state/stop"), "").unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || server
            .get("/", "")
            .is_ok_and(|r| r.complete())),
        "no process served once the memory was back"
    );
}

/// `send-buffer-size=`/`receive-buffer-size=` as small as mod_wsgi allows: a 1 MiB body goes
/// both ways through the daemon's small socket buffers intact.
#[test]
fn small_socket_buffers_still_carry_large_bodies() {
    let server = Server::start(
        "threads=2 send-buffer-size=512 receive-buffer-size=512",
        Duration::ZERO,
    );
    let big: Vec<u8> = (0..1_048_576u32).map(|i| (i % 251) as u8).collect();
    let r = server.send("/echo", "", &big).unwrap();
    assert!(r.complete());
    assert!(r.body == big, "the echoed body differs");
}

/// `interrupt-timeout=` (mod_wsgi 6): a request past request-timeout gets `RequestTimeout`
/// raised in it; it unwinds, the call ends as that error (504 at the front), and the same
/// process goes on serving.
#[test]
fn interrupt_timeout_unwinds_a_runaway_request_and_keeps_the_process() {
    let server = Server::start(
        "threads=2 request-timeout=1 interrupt-timeout=5",
        Duration::ZERO,
    );
    let pid = server.get("/", "").unwrap().text();
    let start = Instant::now();
    // A pure-Python busy loop of 60 s: interruptible between bytecodes.
    let r = server.get("/spin", "60").unwrap();
    let took = start.elapsed();
    match &r.outcome {
        Some(Outcome::Error(e)) => assert!(e.is_request_timeout(), "{e:?}"),
        other => panic!("not a RequestTimeout: {other:?}"),
    }
    assert!(took < Duration::from_secs(5), "{took:?}");
    // Not replaced: the same process answers.
    assert_eq!(server.get("/", "").unwrap().text(), pid);
}
