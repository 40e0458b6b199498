//! `wsgi serve` as operators deploy it: `--bind` (several addresses, IPv6), `--backlog`,
//! `--reuse-port`, `--pid-file`, and systemd's protocols — readiness, reload and stop
//! notifications over a real `NOTIFY_SOCKET` datagram socket, and socket activation with
//! `LISTEN_FDS`/`LISTEN_PID` (set up by a Python launcher exactly as systemd does). Every wait
//! is bounded; only the processes these tests start are signalled.

mod util;

use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use util::{Server, Started};
use wsgi_testkit::{fs, http, process, wait};

const APP: &str = "def application(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [('on %s:%s' % (environ['SERVER_ADDR'], environ['mod_wsgi.listener_port'])).encode()]\n";

/// The listen backlog `ss` reports for a listening socket on `addr`.
fn backlog_of(addr: SocketAddr) -> Option<u32> {
    let out = Command::new("ss")
        .args(["-Hltn", &format!("sport = :{}", addr.port())])
        .output()
        .expect("ss (iproute2) runs: scripts/setup-test-env.sh installs it");
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let fields: Vec<&str> = l.split_whitespace().collect();
        // State Recv-Q Send-Q Local Peer: Send-Q is the backlog of a listening socket.
        let local: SocketAddr = fields.get(3)?.parse().ok()?;
        (local == addr).then(|| fields.get(2)?.parse().ok())?
    })
}

#[test]
fn bind_backlog_reuse_port_and_pid_file() {
    let dir = fs::scratch_world_readable("wsgi-deploy-");
    let app = fs::write_world_readable(&dir.path().join("app.wsgi"), APP);
    let pid_file = dir.path().join("wsgi.pid");
    let port = http::free_port();
    let v4 = format!("127.0.0.1:{port}");
    let v6 = format!("[::1]:{port}");
    let mut server = Server::start(&[
        app.to_str().unwrap(),
        "--bind",
        &v4,
        "--bind",
        &v6,
        "--backlog",
        "77",
        "--reuse-port",
        "--pid-file",
        pid_file.to_str().unwrap(),
    ]);
    // The banner names both; the second line comes after the one Server read.
    let second = server.stdout.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(second, format!("listening on http://{v6}/"));
    for addr in [&v4, &v6] {
        let addr: SocketAddr = addr.parse().unwrap();
        let r = http::get_text(addr, "/");
        assert_eq!(r.status, 200);
        assert_eq!(r.body, format!("on {}:{port}", addr.ip()));
        assert_eq!(backlog_of(addr), Some(77), "{addr}");
    }
    // SO_REUSEPORT: another socket that asks for it may bind the same port.
    let other = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    other.set_reuse_port(true).unwrap();
    let addr: SocketAddr = v4.parse().unwrap();
    other.bind(&addr.into()).unwrap();
    drop(other);
    // The pid file names the master, and goes when it stops.
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    assert_eq!(pid.trim(), server.child.id().to_string());
    server.sigterm();
    assert!(server.wait_exit(Duration::from_secs(30)).success());
    assert!(!pid_file.exists());
}

#[test]
fn bad_bind_values_are_refused() {
    let dir = fs::scratch_world_readable("wsgi-deploy-");
    let app = fs::write_world_readable(&dir.path().join("app.wsgi"), APP);
    for (value, says) in [
        ("127.0.0.1", "give HOST:PORT"),
        ("127.0.0.1:http", "the port must be a number"),
        ("unix:", "give the socket's path"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_wsgi"))
            .args(["serve", app.to_str().unwrap(), "--bind", value])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("--bind `{value}`: {says}")),
            "{value}: {err}"
        );
    }
}

/// Waits (bounded: 30 s each) for the child to print `listening on` lines: the addresses.
fn listening(child: &mut Child, count: usize) -> Vec<String> {
    let lines = process::lines(child.stdout.take().unwrap());
    let prefix = "listening on http://";
    (0..count)
        .map(|_| {
            let line = wait::next_line(&lines, Duration::from_secs(30), |l| l.starts_with(prefix))
                .unwrap();
            line[prefix.len()..].trim_end_matches('/').to_string()
        })
        .collect()
}

/// The next notification, as text.
fn next_notification(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("a notification within 30 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn systemd_hears_ready_reloading_and_stopping() {
    let dir = fs::scratch_world_readable("wsgi-deploy-");
    let app = fs::write_world_readable(&dir.path().join("app.wsgi"), APP);
    let path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_wsgi"));
    command
        .args(["serve", app.to_str().unwrap(), "--port", "0"])
        .env("NOTIFY_SOCKET", &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if process::is_root() {
        command.arg("--allow-root");
    }
    let mut child = Started(command.spawn().unwrap());
    assert_eq!(next_notification(&notify), "READY=1\nSTATUS=serving\n");
    let addr: SocketAddr = listening(&mut child.0, 1)[0].parse().unwrap();
    process::signal(child.0.id(), "-HUP");
    let reloading = next_notification(&notify);
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    assert_eq!(next_notification(&notify), "READY=1\nSTATUS=serving\n");
    assert_eq!(http::get_text(addr, "/").status, 200);
    process::signal(child.0.id(), "-TERM");
    assert_eq!(next_notification(&notify), "STOPPING=1\n");
    assert!(
        process::wait_exit(&mut child.0, Duration::from_secs(30)).is_some(),
        "it did not stop"
    );
}

#[test]
fn socket_activation_serves_the_sockets_systemd_passes() {
    let dir = fs::scratch_world_readable("wsgi-deploy-");
    let app = fs::write_world_readable(&dir.path().join("app.wsgi"), APP);
    let (a, b) = (http::free_port(), http::free_port());
    let mut child = util::serve_activated(&format!("{a},{b}"), &app);
    let mut addrs = listening(&mut child.0, 2);
    addrs.sort();
    let mut expected = vec![format!("127.0.0.1:{a}"), format!("127.0.0.1:{b}")];
    expected.sort();
    assert_eq!(addrs, expected);
    for port in [a, b] {
        let r = http::get_text(SocketAddr::from(([127, 0, 0, 1], port)), "/");
        assert_eq!(r.body, format!("on 127.0.0.1:{port}"));
    }
    // A reload keeps serving them (they are systemd's, not the configuration's).
    process::signal(child.0.id(), "-HUP");
    std::thread::sleep(Duration::from_millis(500));
    let r = http::get_text(SocketAddr::from(([127, 0, 0, 1], a)), "/");
    assert_eq!(r.status, 200);
}

/// Every flag can come from the environment (`WSGI_RS_<FLAG>`), and mod_wsgi-express's
/// knobs work as there: `--setenv`, and in daemon mode `--maximum-requests`.
#[test]
fn flags_from_the_environment_and_mod_wsgi_express_knobs() {
    let dir = fs::scratch_world_readable("wsgi-deploy-");
    let app = fs::write_world_readable(
        &dir.path().join("pid.wsgi"),
        "import os\n\ndef application(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [('%s %s' % (os.getpid(), environ.get('STAGE'))).encode()]\n",
    );
    let mut command = Command::new(env!("CARGO_BIN_EXE_wsgi"));
    command
        .args(["serve", "--setenv", "STAGE", "prod, eu"])
        .env("WSGI_RS_APP", &app)
        .env("WSGI_RS_PORT", "0")
        .env("WSGI_RS_PROCESSES", "1")
        .env("WSGI_RS_THREADS", "1")
        .env("WSGI_RS_MAXIMUM_REQUESTS", "2")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if process::is_root() {
        command.env("WSGI_RS_USER", "nobody");
    }
    let mut child = Started(command.spawn().unwrap());
    let addr: SocketAddr = listening(&mut child.0, 1)[0].parse().unwrap();
    let answer = |_| http::get_text(addr, "/").body;
    let first: Vec<String> = (0..2).map(answer).collect();
    let (pid, stage) = first[0].split_once(' ').unwrap();
    assert_eq!(stage, "prod, eu");
    assert!(first.iter().all(|b| b.starts_with(pid)), "{first:?}");
    // After two requests, maximum-requests replaced the process.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = http::get_text(addr, "/").body;
        if !body.starts_with(pid) {
            break;
        }
        assert!(Instant::now() < deadline, "never replaced: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `--log-format json`: every line of the error log is a JSON record — the start-up, the
/// banner, the daemon processes' lines, and the error that stops a start.
#[test]
fn json_error_log_from_start_to_stop() {
    let dir = fs::scratch_world_readable("wsgi-deploy-");
    let app = fs::write_world_readable(&dir.path().join("app.wsgi"), APP);
    let mut command = Command::new(env!("CARGO_BIN_EXE_wsgi"));
    command
        .args(["serve", app.to_str().unwrap(), "--port", "0"])
        .args(["--log-format", "json", "--processes", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if process::is_root() {
        command.args(["--user", "nobody"]);
    }
    let mut child = Started(command.spawn().unwrap());
    let log = JsonLog::of(&mut child.0);
    let mut records = Vec::new();
    let addr = loop {
        let record = log.next();
        assert!(
            record["level"].is_string() && record["timestamp"].is_string(),
            "{record}"
        );
        let listening = JsonLog::message(&record)
            .strip_prefix("listening on http://")
            .map(|a| a.trim_end_matches('/').parse::<SocketAddr>().unwrap());
        records.push(record);
        if let Some(addr) = listening {
            break addr;
        }
    };
    let said = |text: &str| {
        records.iter().any(|r| {
            r["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(text))
        })
    };
    assert!(said("daemon process ready"), "{records:?}");
    assert!(said("serving in daemon mode"), "{records:?}");
    assert_eq!(http::get_text(addr, "/").status, 200);
    process::signal(child.0.id(), "-TERM");
    // The rest of the banner, then the stop.
    while !JsonLog::message(&log.next()).starts_with("SIGTERM: stopping") {}

    // A start that fails says so in JSON too.
    let out = Command::new(env!("CARGO_BIN_EXE_wsgi"))
        .args(["serve", "missing.wsgi", "--log-format", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let line = String::from_utf8_lossy(&out.stderr);
    let record: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(record["level"], "ERROR");
    assert!(
        record["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("wsgi serve: WSGI script `missing.wsgi` cannot be read")),
        "{line}"
    );
}

/// `--status-addr` in embedded mode: the front's request metrics (by group and status class,
/// durations, in flight, the workers' load) in OpenMetrics text, and `/healthz`.
#[test]
fn embedded_metrics_and_health() {
    let dir = fs::scratch_world_readable("wsgi-deploy-");
    let app = fs::write_world_readable(&dir.path().join("app.wsgi"), APP);
    let status_port = http::free_port();
    let status = format!("127.0.0.1:{status_port}");
    let server = Server::start(&[
        app.to_str().unwrap(),
        "--port",
        "0",
        "--status-addr",
        &status,
    ]);
    for _ in 0..3 {
        assert_eq!(server.get_strict("/").status, 200);
    }
    // A request no application answers: a bad request refused by the front.
    let refused = server.raw(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert!(
        refused.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&refused)
    );
    let status_addr: SocketAddr = status.parse().unwrap();
    let expected = [
        "wsgi_requests_total{process_group=\"embedded\",application_group=\"%{GLOBAL}\",status=\"2xx\"} 3\n",
        "wsgi_request_duration_seconds_count{process_group=\"embedded\",application_group=\"%{GLOBAL}\"} 3\n",
        "wsgi_requests_total{process_group=\"\",application_group=\"\",status=\"4xx\"} 1\n",
        // This scrape itself is not a request of the site.
        "wsgi_requests_in_flight 0\n",
        "wsgi_embedded_busy_threads 0\n",
        "wsgi_embedded_queued_requests 0\n",
        "# EOF\n",
    ];
    // A worker gives its slot back just after its response went out: read until it did.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = http::get_text(status_addr, "/metrics");
        assert_eq!(metrics.status, 200);
        let missing = expected.iter().find(|line| !metrics.body.contains(**line));
        match missing {
            None => break,
            Some(line) if Instant::now() >= deadline => {
                panic!("{line:?} in\n{}", metrics.body)
            }
            Some(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    let health = http::get_text(status_addr, "/healthz");
    assert_eq!((health.status, health.body.as_str()), (200, "ready\n"));
}

/// `/healthz` for a load balancer's or an orchestrator's checks: `ready` while serving and
/// across a reload (the replaced front leaves the endpoint to the new one), `draining` (503)
/// from SIGTERM until the in-flight requests are done, while new connections are refused.
#[test]
fn healthz_is_ready_across_reloads_and_draining_at_stop() {
    let dir = fs::scratch_world_readable("wsgi-deploy-");
    let app = fs::write_world_readable(
        &dir.path().join("slow.wsgi"),
        "import time\n\ndef application(environ, start_response):\n    time.sleep(float(environ.get('QUERY_STRING') or 0))\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [b'done']\n",
    );
    let status: SocketAddr = format!("127.0.0.1:{}", http::free_port()).parse().unwrap();
    let mut server = Server::start(&[
        app.to_str().unwrap(),
        "--port",
        "0",
        "--status-addr",
        &status.to_string(),
    ]);
    let health = || http::get_text(status, "/healthz");
    assert_eq!(
        (health().status, health().body),
        (200, "ready\n".to_string())
    );
    // A reload: once the new front serves, the endpoint is its own, and ready.
    server.sighup();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server
        .stderr()
        .contains("reloaded; the previous front process")
    {
        assert!(Instant::now() < deadline, "no reload: {}", server.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..10 {
        assert_eq!(health().body, "ready\n");
    }
    // A stop with a request running: draining until it is done, new connections refused.
    let addr = server.addr;
    let running = std::thread::spawn(move || http::get_text(addr, "/?2"));
    std::thread::sleep(Duration::from_millis(300));
    server.sigterm();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let h = health();
        if (h.status, h.body.as_str()) == (503, "draining\n") {
            break;
        }
        assert_eq!(h.status, 200, "{}", h.body);
        assert!(Instant::now() < deadline, "never draining");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(std::net::TcpStream::connect(addr).is_err());
    let r = running.join().unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "done"));
    assert!(server.wait_exit(Duration::from_secs(30)).success());
    assert!(std::net::TcpStream::connect(status).is_err());
}

/// An application's `logging` records reach the error log at their own level (an app's
/// `logging.info` is not an error); what it prints to stderr stays an error; a partial line
/// left in `wsgi.errors` is written out when the request ends.
#[test]
fn application_log_records_keep_their_level() {
    let dir = fs::scratch_world_readable("wsgi-deploy-");
    let app = fs::write_world_readable(
        &dir.path().join("logs.wsgi"),
        "import logging, sys\nlogging.basicConfig(level=logging.DEBUG, format='%(levelname)s %(message)s')\nlog = logging.getLogger('app')\n\ndef application(environ, start_response):\n    log.debug('dbg-line')\n    log.info('info-line')\n    log.warning('warn-line')\n    log.error('error-line')\n    print('stderr-line', file=sys.stderr)\n    environ['wsgi.errors'].write('partial-line')\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [b'ok']\n",
    );
    let mut command = Command::new(env!("CARGO_BIN_EXE_wsgi"));
    command
        .args(["serve", app.to_str().unwrap(), "--port", "0"])
        .args(["--log-format", "json", "--log-level", "debug"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if process::is_root() {
        command.arg("--allow-root");
    }
    let mut child = Started(command.spawn().unwrap());
    let log = JsonLog::of(&mut child.0);
    let addr = log.listening();
    assert_eq!(http::get_text(addr, "/").status, 200);
    let mut seen = std::collections::HashMap::new();
    while seen.len() < 6 {
        let record = log.next();
        let text = JsonLog::message(&record);
        for want in [
            "dbg-line",
            "info-line",
            "warn-line",
            "error-line",
            "stderr-line",
            "partial-line",
        ] {
            if text.contains(want) {
                seen.insert(want, record["level"].as_str().unwrap_or("").to_string());
            }
        }
    }
    assert_eq!(seen["dbg-line"], "DEBUG");
    assert_eq!(seen["info-line"], "INFO");
    assert_eq!(seen["warn-line"], "WARN");
    assert_eq!(seen["error-line"], "ERROR");
    assert_eq!(seen["stderr-line"], "ERROR");
    // A line without its newline is written out by the end of the request, as mod_wsgi.
    assert_eq!(seen["partial-line"], "ERROR");
}

/// The JSON records a child writes to its stderr (`--log-format json`), read on a thread.
struct JsonLog(std::sync::mpsc::Receiver<String>);

impl JsonLog {
    fn of(child: &mut Child) -> JsonLog {
        JsonLog(process::lines(child.stderr.take().unwrap()))
    }

    /// The next record (within 30 s), which must be JSON.
    fn next(&self) -> serde_json::Value {
        let line = self
            .0
            .recv_timeout(Duration::from_secs(30))
            .expect("a log line");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// A record's message.
    fn message(record: &serde_json::Value) -> String {
        record["fields"]["message"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Reads records up to the banner's `listening on` one: its address.
    fn listening(&self) -> SocketAddr {
        loop {
            let message = Self::message(&self.next());
            if let Some(addr) = message.strip_prefix("listening on http://") {
                return addr.trim_end_matches('/').parse().unwrap();
            }
        }
    }
}
