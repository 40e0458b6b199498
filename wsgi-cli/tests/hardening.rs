//! `wsgi serve` on an open network: slow and hostile clients, strict request heads, responses
//! that do not match their Content-Length. The real binary on 127.0.0.1 over real sockets;
//! every wait is bounded, and only the server a test started is signalled or killed.

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use util::Server;
use wsgi_testkit::fs::{self, write};
use wsgi_testkit::http::{Response, read_to_close};
use wsgi_testkit::process;

/// The test app: behaviours chosen by PATH_INFO.
const APP: &str = r#"
import json, time

def application(environ, start_response):
    path = environ['PATH_INFO']
    if path == '/hello':
        body = b'Hello, world!\n'
        start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])
        return [body]
    if path == '/short':
        start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', '10')])
        return [b'abcd']
    if path == '/long':
        start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', '4')])
        return [b'abcdefghij']
    if path == '/echo':
        try:
            data = environ['wsgi.input'].read()
        except OSError as e:
            with open(environ['QUERY_STRING'] or '/dev/null', 'w') as f:
                f.write('OSError: %s' % e)
            raise
        body = b'%d' % len(data)
        start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])
        return [body]
    if path == '/big':
        # N x 64 KiB: with N = 1024, more than the sockets and the front's buffer hold.
        n = int(environ['QUERY_STRING'] or '64')
        start_response('200 OK', [('Content-Type', 'application/octet-stream')])
        return (b'x' * 65536 for _ in range(n))
    if path.startswith('/environ'):
        keys = ['REQUEST_METHOD', 'PATH_INFO', 'REQUEST_URI', 'QUERY_STRING', 'HTTP_HOST']
        body = json.dumps({k: environ.get(k) for k in keys}).encode('latin-1')
        start_response('200 OK', [('Content-Type', 'application/json'), ('Content-Length', str(len(body)))])
        return [body]
    if path == '/sleep':
        seconds, _, marker = environ['QUERY_STRING'].partition('&')
        if marker:
            open(marker, 'w').close()
        time.sleep(float(seconds or '1'))
        start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', '5')])
        return [b'slept']
    start_response('404 Not Found', [('Content-Type', 'text/plain')])
    return [b'no such test path']
"#;

fn serve_app(dir: &Path, extra: &[&str]) -> Server {
    let app = write(&dir.join("app.wsgi"), APP);
    let app = app.to_str().unwrap().to_string();
    let mut args = vec![app.as_str(), "--port", "0"];
    if !extra.contains(&"--log-level") {
        args.extend_from_slice(&["--log-level", "info"]);
    }
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// A GET on a fresh connection: the status, or None when the server did not answer within
/// `limit`.
fn timed_get(addr: SocketAddr, path: &str, limit: Duration) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, limit).ok()?;
    s.set_read_timeout(Some(limit)).ok()?;
    s.set_write_timeout(Some(limit)).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .ok()?;
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    Response::try_parse(&raw).ok().map(|r| r.status)
}

/// A response shorter than its Content-Length: the status, headers and the bytes the app
/// sent reach the client every time, then the connection closes; the mismatch is logged at
/// warn. A longer one: the surplus is dropped (and logged), the response is clean.
#[test]
fn content_length_mismatches_are_deterministic() {
    let dir = fs::scratch("wsgi-hardening-");
    let server = serve_app(dir.path(), &[]);
    for _ in 0..40 {
        let raw = server.raw(b"GET /short HTTP/1.1\r\nHost: x\r\n\r\n");
        let r = Response::parse(&raw);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&raw));
        assert_eq!(r.header("content-length"), Some("10"));
        assert_eq!(r.body, b"abcd");
        assert!(!r.complete);
    }
    for _ in 0..10 {
        let mut s = server.connect();
        s.write_all(b"GET /long HTTP/1.1\r\nHost: x\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let raw = read_to_close(&mut s);
        let r = Response::parse(&raw);
        assert_eq!((r.status, r.body.as_slice()), (200, &b"abcd"[..]));
        // The connection stays usable: the pipelined request is answered.
        let next = Response::parse(&r.rest);
        assert_eq!(next.body, b"Hello, world!\n");
    }
    let log = server.stderr();
    assert!(
        log.contains("WARN") && log.contains("shorter than its Content-Length"),
        "{log}"
    );
    assert!(log.contains("longer than its Content-Length"), "{log}");
}

/// Runs `attackers` threads of `attack` (given the server's address, the stop flag and a
/// counter of its rounds) against the server at `addr` while an ordinary client sends a GET
/// every 200 ms for `lasting`, each on a new connection: each GET's status (None: no answer in
/// 15 s) and latency, and the attackers' rounds.
fn under_attack(
    addr: SocketAddr,
    attackers: usize,
    lasting: Duration,
    attack: impl Fn(SocketAddr, Arc<AtomicBool>, Arc<AtomicUsize>) + Clone + Send + 'static,
) -> (Vec<(Option<u16>, Duration)>, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..attackers)
        .map(|_| {
            let (stop, rounds, attack) = (stop.clone(), rounds.clone(), attack.clone());
            std::thread::spawn(move || attack(addr, stop, rounds))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let mut latencies = Vec::new();
    let began = Instant::now();
    while began.elapsed() < lasting {
        let sent = Instant::now();
        let status = timed_get(addr, "/hello", Duration::from_secs(15));
        latencies.push((status, sent.elapsed()));
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    (latencies, rounds.load(Ordering::Relaxed))
}

/// What one attacker does to hold the server.
#[derive(Clone, Copy, Debug)]
enum SlowClient {
    /// A POST within the request buffer, its body sent a byte at a time.
    SmallBody,
    /// A POST larger than the request buffer (so it streams to a worker), sent slowly.
    LargeBody,
    /// A GET of a large response, read a byte at a time.
    Reader,
}

/// Runs `attack` over and over on fresh connections until `stop`.
fn attacker(addr: SocketAddr, attack: SlowClient, stop: Arc<AtomicBool>, rounds: Arc<AtomicUsize>) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = TcpStream::connect(addr) else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
        let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
        let head = match attack {
            SlowClient::SmallBody => {
                "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n".to_string()
            }
            SlowClient::LargeBody => {
                "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n".to_string()
            }
            SlowClient::Reader => "GET /big?1024 HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
        };
        if s.write_all(head.as_bytes()).is_err() {
            continue;
        }
        // Each round lasts until the server drops the connection or 3 s, whichever is
        // first, then the attacker comes back on a new connection.
        let round = Instant::now();
        let mut byte = [0u8; 1];
        while !stop.load(Ordering::Relaxed) && round.elapsed() < Duration::from_secs(3) {
            std::thread::sleep(Duration::from_millis(300));
            let alive = match attack {
                SlowClient::SmallBody | SlowClient::LargeBody => {
                    s.write_all(b"x").is_ok()
                        && matches!(s.read(&mut byte), Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock)
                }
                SlowClient::Reader => match s.read(&mut byte) {
                    Ok(0) => false,
                    Ok(_) => true,
                    Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
                },
            };
            if !alive {
                break;
            }
        }
        rounds.fetch_add(1, Ordering::Relaxed);
    }
}

/// Six attackers against four worker threads, each attack in turn: ordinary requests keep
/// being answered, each within a bound, because no attacker holds a worker for longer than
/// the body or write timeouts (2 s here), and small bodies are read without one.
#[test]
fn slow_clients_never_starve_the_workers() {
    let dir = fs::scratch_world_readable("wsgi-hardening-");
    let marker = dir.path().join("oserror.txt");
    let server = serve_app(
        dir.path(),
        &[
            "--threads",
            "4",
            "--request-buffer-size",
            "65536",
            "--body-timeout",
            "2",
            "--socket-timeout",
            "2",
            "--queue-timeout",
            "30",
        ],
    );
    for attack in [
        SlowClient::SmallBody,
        SlowClient::LargeBody,
        SlowClient::Reader,
    ] {
        let (latencies, rounds) =
            under_attack(server.addr, 6, Duration::from_secs(8), move |a, s, r| {
                attacker(a, attack, s, r)
            });
        let answered = latencies.iter().filter(|(s, _)| *s == Some(200)).count();
        let worst = latencies.iter().map(|(_, d)| *d).max().unwrap();
        eprintln!(
            "{attack:?}: {answered}/{} ordinary requests answered, worst {worst:?}, {} attack rounds",
            latencies.len(),
            rounds
        );
        assert_eq!(answered, latencies.len(), "{attack:?}: {latencies:?}");
        assert!(worst < Duration::from_secs(6), "{attack:?}: {latencies:?}");
    }
    let _ = marker;
    let log = server.stderr();
    assert!(log.contains("too slowly"), "{log}");
}

/// A client that asks for a large streamed response and never reads it (a byte now and then):
/// on a fresh connection each time the server drops it, until `stop` (or a minute). Counts
/// the drops in `dropped`: it also sends a byte now and then, which the server does not read,
/// so its close resets the connection, and the client sees the drop at once (not after what
/// its socket holds).
fn unread_response(addr: SocketAddr, stop: Arc<AtomicBool>, dropped: Arc<AtomicUsize>) {
    let began = Instant::now();
    while !stop.load(Ordering::Relaxed) && began.elapsed() < Duration::from_secs(60) {
        let Ok(mut s) = TcpStream::connect(addr) else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
        if s.write_all(b"GET /big?1024 HTTP/1.1\r\nHost: x\r\n\r\n")
            .is_err()
        {
            continue;
        }
        let mut byte = [0u8; 1];
        while !stop.load(Ordering::Relaxed) && began.elapsed() < Duration::from_secs(60) {
            let alive = s.write_all(b"\r\n").is_ok()
                && match s.read(&mut byte) {
                    Ok(n) => n == 1,
                    Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
                };
            if !alive {
                dropped.fetch_add(1, Ordering::Relaxed);
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

/// More clients that do not read a streamed response than there are workers, with the
/// default --socket-timeout (60 s): each holds a worker while ordinary requests wait for one,
/// so each is dropped after --busy-socket-timeout (1 s here), and the ordinary requests are
/// answered, each within a bound.
#[test]
fn slow_readers_are_dropped_first_while_requests_wait() {
    slow_readers_are_dropped_first(&[]);
}

/// The same under a small cap on unsent bytes: the socket reports full before the client's
/// receive buffer is, which then fills without the client reading a byte; the bytes the
/// socket takes meanwhile must not count as read (as they did, for a minute's allowance,
/// until the clock looked at the client's window).
#[test]
fn slow_readers_are_dropped_first_under_a_small_unsent_cap() {
    slow_readers_are_dropped_first(&["--tcp-notsent-lowat", "16384"]);
}

fn slow_readers_are_dropped_first(extra: &[&str]) {
    let dir = fs::scratch_world_readable("wsgi-hardening-");
    let mut args = vec!["--threads", "2", "--busy-socket-timeout", "1"];
    args.extend_from_slice(extra);
    let server = serve_app(dir.path(), &args);
    let (latencies, dropped) =
        under_attack(server.addr, 4, Duration::from_secs(6), unread_response);
    let answered = latencies.iter().filter(|(s, _)| *s == Some(200)).count();
    assert_eq!(answered, latencies.len(), "{latencies:?}");
    // 1 s of stall, and up to a second more before a stall that began unloaded looks again.
    let worst = latencies.iter().map(|(_, d)| *d).max().unwrap();
    assert!(worst < Duration::from_secs(5), "{latencies:?}");
    assert!(dropped >= 4, "{dropped}");
    let log = server.stderr();
    assert!(
        log.contains("too slowly") && log.contains("--busy-socket-timeout 1s"),
        "{log}"
    );
}

/// A GET of `path` (the connection closed after it) from a client whose receive buffer is
/// 16 KiB: a large response fills the server's socket at once.
fn ask_with_small_buffer(addr: SocketAddr, path: &str) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut s: TcpStream = socket.into();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    s
}

/// A client that does not read while a worker is free (no request waits) keeps its
/// connection past --busy-socket-timeout: the shorter limit is for load only. Read later, the
/// whole response comes.
#[test]
fn a_slow_reader_keeps_its_connection_while_no_request_waits() {
    let dir = fs::scratch_world_readable("wsgi-hardening-");
    let server = serve_app(
        dir.path(),
        &["--threads", "2", "--busy-socket-timeout", "1"],
    );
    // A small receive buffer: the 16 MiB response fills the socket at once.
    let mut s = ask_with_small_buffer(server.addr, "/big?256");
    std::thread::sleep(Duration::from_millis(3500));
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let r = Response::parse(&read_to_close(&mut s));
    assert_eq!(r.status, 200);
    assert!(r.complete, "the response was cut short");
    assert_eq!(r.body.len(), 256 * 65536);
    assert!(!server.stderr().contains("too slowly"));
}

/// A client that reads slowly but steadily, above --response-min-rate, keeps its connection
/// while requests wait for a worker: once its window closes, what it reads (its window's
/// edge moving) earns it time, and it gets the whole response.
#[test]
fn a_steady_slow_reader_keeps_its_connection_under_load() {
    let dir = fs::scratch_world_readable("wsgi-hardening-");
    let server = serve_app(
        dir.path(),
        &[
            "--threads",
            "1",
            "--busy-socket-timeout",
            "1",
            "--response-min-rate",
            "1000",
        ],
    );
    let mut s = ask_with_small_buffer(server.addr, "/big?16");
    // Requests wait for the one worker the whole time (each gets its answer once the
    // response is done).
    let addr = server.addr;
    let waiting = std::thread::spawn(move || timed_get(addr, "/hello", Duration::from_secs(60)));
    // 8 KiB every 50 ms: about 160 KB/s, above the minimum rate, below what the server sends.
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let began = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("read failed after {} bytes: {e}", got.len()),
        }
        std::thread::sleep(Duration::from_millis(50));
        assert!(began.elapsed() < Duration::from_secs(60), "bounded");
    }
    let r = Response::parse(&got);
    assert_eq!(r.status, 200);
    assert!(
        r.complete,
        "the response was cut short after {} bytes",
        got.len()
    );
    assert_eq!(r.body.len(), 16 * 65536);
    assert!(
        began.elapsed() > Duration::from_secs(3),
        "it did stall the worker"
    );
    assert_eq!(waiting.join().unwrap(), Some(200));
    assert!(
        !server.stderr().contains("too slowly"),
        "{}",
        server.stderr()
    );
}

/// A streamed request body sent too slowly: the application's read raises OSError, and the
/// client gets 408.
#[test]
fn a_slow_streamed_body_raises_oserror_in_the_app_and_answers_408() {
    let dir = fs::scratch_world_readable("wsgi-hardening-");
    let marker = dir.path().join("oserror.txt");
    let server = serve_app(
        dir.path(),
        &[
            "--request-buffer-size",
            "1024",
            "--body-timeout",
            "1",
            "--body-min-rate",
            "100000",
        ],
    );
    let mut s = server.connect();
    s.write_all(
        format!(
            "POST /echo?{} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n",
            marker.display()
        )
        .as_bytes(),
    )
    .unwrap();
    s.write_all(&[b'y'; 2000]).unwrap();
    let began = Instant::now();
    let raw = read_to_close(&mut s);
    let r = Response::parse(&raw);
    assert_eq!(r.status, 408, "{}", String::from_utf8_lossy(&raw));
    assert!(began.elapsed() < Duration::from_secs(10));
    let text = std::fs::read_to_string(&marker).unwrap();
    assert!(text.starts_with("OSError"), "{text}");
    assert!(text.contains("too slowly"), "{text}");
    // A small body sent too slowly never reaches the app: 408 from the front.
    let mut s = server.connect();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        .unwrap();
    let r = Response::parse(&read_to_close(&mut s));
    assert_eq!(r.status, 408);
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(server.get("/hello").status, 200);
}

/// A request that waits for a worker is answered 503 at the queue timeout, while the worker
/// is still busy (not when it frees up).
#[test]
fn queue_timeout_fires_while_waiting() {
    let dir = fs::scratch("wsgi-hardening-");
    let server = serve_app(dir.path(), &["--threads", "1", "--queue-timeout", "1"]);
    let addr = server.addr;
    let marker = dir.path().join("sleeping");
    let busy = {
        let path = format!("/sleep?6&{}", marker.display());
        std::thread::spawn(move || timed_get(addr, &path, Duration::from_secs(20)))
    };
    // The only worker is busy once the app has started sleeping.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "the app never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let began = Instant::now();
    let status = timed_get(addr, "/hello", Duration::from_secs(20));
    let waited = began.elapsed();
    assert_eq!(status, Some(503));
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    assert_eq!(busy.join().unwrap(), Some(200));
    assert_eq!(server.get("/hello").status, 200);
}

/// A head sent a byte at a time ends at --header-timeout, however long the trickle goes on.
#[test]
fn header_timeout_is_a_total_for_the_head() {
    let dir = fs::scratch("wsgi-hardening-");
    let server = serve_app(dir.path(), &["--header-timeout", "2"]);
    let mut s = server.connect();
    let trickle = b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let closed_after = trickle_until_closed(&mut s, trickle, Duration::from_millis(100));
    let closed_after = closed_after.expect("the trickle went on to the end of the head");
    // An idle keep-alive connection reaching the same timeout is no refusal: not logged.
    let mut idle = server.connect();
    idle.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 512];
    assert!(idle.read(&mut buf).unwrap() > 0);
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        closed_after >= Duration::from_millis(1900) && closed_after < Duration::from_secs(4),
        "{closed_after:?}"
    );
    assert_eq!(server.get("/hello").status, 200);
    let log = server.stderr();
    assert_eq!(log.matches("408: ").count(), 1, "{log}");
    assert!(
        log.contains("408: read header from client timeout")
            && log.contains("request=GET /hello HTTP/1.1"),
        "the refused head is named: {log}"
    );
    drop(idle);
}

/// One whole response (Content-Length framed) read from a keep-alive connection.
fn read_response(s: &mut TcpStream) -> Result<Response, String> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Err(format!("closed after {} bytes", raw.len())),
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("read: {e} after {} bytes", raw.len())),
        }
        if let Ok(r) = Response::try_parse(&raw) {
            return Ok(r);
        }
    }
}

/// An idle keep-alive connection is parked (hyper's buffers let go) and serves the client's
/// next request as if nothing happened; so does one parked while the client was in the
/// middle of a head, which is served whole once the rest comes. A parked connection does
/// not hold up a graceful stop.
#[test]
fn idle_keep_alive_connections_are_parked_and_serve_on() {
    let dir = fs::scratch("wsgi-hardening-");
    let mut server = serve_app(
        dir.path(),
        &["--header-timeout", "30", "--log-level", "debug"],
    );
    let mut s = server.connect();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut s).unwrap().status, 200);
    server.wait_for_log("idle connection parked", 1, Duration::from_secs(10));
    s.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let r = read_response(&mut s).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "Hello, world!\n"));

    // Half a head, then quiet until the connection is parked, then the rest.
    s.write_all(b"GET /environ/a?b=c HTTP/1.1\r\nHo").unwrap();
    server.wait_for_log(mid_head_line(), 1, Duration::from_secs(10));
    s.write_all(b"st: parked.example\r\n\r\n").unwrap();
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let environ: serde_json::Value = serde_json::from_str(&r.text()).unwrap();
    assert_eq!(environ["REQUEST_URI"], "/environ/a?b=c");
    assert_eq!(environ["HTTP_HOST"], "parked.example");
    assert_eq!(environ["QUERY_STRING"], "b=c");

    // Parked again; a graceful stop closes it at once.
    server.wait_for_log("idle connection parked", 2, Duration::from_secs(10));
    server.sigterm();
    let status = server.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status}");
    let mut buf = [0u8; 64];
    assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)));
}

/// The header timeout holds across parking: a connection left idle after a response is
/// closed once it passes (not logged as a refusal), and a head trickled a byte at a time,
/// slower than the connection is looked at for idleness, is refused at its deadline (408 in
/// the log) however often the connection was parked meanwhile.
#[test]
fn header_timeout_holds_across_parking() {
    let dir = fs::scratch("wsgi-hardening-");
    let server = serve_app(
        dir.path(),
        &["--header-timeout", "3", "--log-level", "debug"],
    );
    let mut idle = server.connect();
    idle.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    idle.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut idle).unwrap().status, 200);
    let answered = Instant::now();

    let mut slow = server.connect();
    slow.write_all(b"GET /hello HTTP/1.1\r\n").unwrap();
    let trickle = b"X-Slow: aaaaaaaaaaaaaaaaaaaa";
    let closed_after = trickle_until_closed(&mut slow, trickle, Duration::from_millis(1500));
    let closed_after = closed_after.expect("the trickle went on past the header timeout");
    // Noticed by the next byte after the close: 1.5 s late at most.
    assert!(
        closed_after >= Duration::from_millis(2900) && closed_after < Duration::from_secs(7),
        "{closed_after:?}"
    );
    let mut buf = [0u8; 64];
    assert_eq!(
        idle.read(&mut buf).unwrap(),
        0,
        "the idle connection was closed"
    );
    let idle_for = answered.elapsed();
    assert!(idle_for < Duration::from_secs(10), "{idle_for:?}");

    let log = server.stderr();
    assert!(log.contains(mid_head_line()), "{log}");
    assert!(log.contains("idle connection parked"), "{log}");
    assert_eq!(log.matches("408: ").count(), 1, "{log}");
    assert!(
        log.contains("408: read header from client timeout")
            && log.contains("request=GET /hello HTTP/1.1"),
        "{log}"
    );
}

/// The log line of a connection parked in the middle of a head.
fn mid_head_line() -> &'static str {
    "connection parked in the middle of a head"
}

/// Sends `bytes` one at a time, `pause` after each, until the server closes the connection:
/// how long after the first byte it did (None: it never did).
fn trickle_until_closed(s: &mut TcpStream, bytes: &[u8], pause: Duration) -> Option<Duration> {
    let began = Instant::now();
    for &b in bytes {
        if s.write_all(&[b]).is_err() {
            return Some(began.elapsed());
        }
        std::thread::sleep(pause);
        s.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        let gone = matches!(s.read(&mut buf), Ok(0))
            || matches!(s.read(&mut buf), Err(ref e) if e.kind() != std::io::ErrorKind::WouldBlock);
        s.set_nonblocking(false).unwrap();
        if gone {
            return Some(began.elapsed());
        }
    }
    None
}

/// Beyond --max-connections, new connections wait in the backlog (not refused, not
/// answered) until an open one closes.
#[test]
fn max_connections_holds_new_ones_in_the_backlog() {
    let dir = fs::scratch("wsgi-hardening-");
    let server = serve_app(dir.path(), &["--max-connections", "3"]);
    let open: Vec<TcpStream> = (0..3).map(|_| server.connect()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut waiting = server.connect();
    waiting
        .write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    waiting
        .set_read_timeout(Some(Duration::from_millis(800)))
        .unwrap();
    let mut buf = [0u8; 256];
    let early = waiting.read(&mut buf);
    assert!(
        matches!(&early, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "answered beyond the limit: {early:?}"
    );
    drop(open);
    waiting
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let r = Response::parse(&read_to_close(&mut waiting));
    assert_eq!(r.status, 200);
    let log = Mutex::new(server.stderr());
    assert!(log.lock().unwrap().contains("--max-connections reached"));
}

/// The request's status and, for a 200 from `/environ`, what the app saw.
fn probe(server: &Server, request: &[u8]) -> (u16, Option<serde_json::Value>, Vec<u8>) {
    let raw = server.raw(request);
    let r = Response::parse(&raw);
    let seen =
        (r.status == 200 && r.header("content-type") == Some("application/json")).then(|| {
            let text: String = r.body.iter().map(|&b| char::from(b)).collect();
            serde_json::from_str(&text).unwrap()
        });
    (r.status, seen, raw)
}

/// Request heads as Apache 2.4 (with Debian's mod_wsgi 4.9.4, probed on this machine) takes
/// them: refused where it refuses them, accepted (with the raw bytes in REQUEST_URI and their
/// latin-1 decoding in PATH_INFO) where it accepts them.
#[test]
fn request_heads_are_checked_as_apache_does() {
    let dir = fs::scratch("wsgi-hardening-");
    let log = dir.path().join("access.log");
    let server = serve_app(dir.path(), &["--access-log", log.to_str().unwrap()]);
    let get = |target: &[u8], headers: &[u8]| {
        let mut r = b"GET ".to_vec();
        r.extend_from_slice(target);
        r.extend_from_slice(b" HTTP/1.1\r\n");
        r.extend_from_slice(headers);
        r.extend_from_slice(b"Connection: close\r\n\r\n");
        r
    };
    let host = b"Host: localhost\r\n";
    // Refused, with Apache's status.
    let refused: Vec<(Vec<u8>, u16)> = vec![
        (b"GET /environ HTTP/1.1\r\nConnection: close\r\n\r\n".to_vec(), 400),
        (get(b"/environ", b"Host: \r\n"), 400),
        (get(b"/environ", b"Host: a\r\nHost: a\r\n"), 400),
        (get(b"/environ", b"Host: x\r\nHost: evil.example\r\n"), 400),
        (get(b"/environ", b"Host: a b\r\n"), 400),
        (get(b"/environ", b"Host: ex/ample\r\n"), 400),
        (get(b"/environ", b"Host: a..b\r\n"), 400),
        (get(b"/environ", b"Host: example.com:80x\r\n"), 400),
        (get(b"/environ", b"Host: example.com:99999\r\n"), 400),
        (get(b"/environ", b"Host: caf\xc3\xa9\r\n"), 400),
        (get(b"/a%zz", host), 400),
        (get(b"/a%2", host), 400),
        (get(b"/../x", host), 400),
        (get(b"/a%2Fb", host), 404),
        (get(b"/a%00b", host), 404),
        (get(b"/a#frag", host), 400),
        (get(b"/a\x01b", host), 400),
        (b"GET * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(), 400),
        (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec(),
            400,
        ),
        (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec(),
            400,
        ),
        (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec(),
            501,
        ),
        (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec(),
            400,
        ),
        (get(&[b"/?".as_slice(), &[b'a'; 8200]].concat(), host), 414),
        (
            get(
                b"/environ",
                &[host.as_slice(), b"X-Big: ", &[b'a'; 8185], b"\r\n"].concat(),
            ),
            400,
        ),
    ];
    for (request, status) in &refused {
        let (got, _, raw) = probe(&server, request);
        assert_eq!(
            got,
            *status,
            "{:?} -> {}",
            String::from_utf8_lossy(request),
            String::from_utf8_lossy(&raw)
        );
    }
    // Accepted: raw bytes reach the app as Apache hands them over.
    let accepted: Vec<(&[u8], &str, &str)> = vec![
        (
            b"/environ/caf\xc3\xa9/x",
            "/environ/caf\u{c3}\u{a9}/x",
            "/environ/caf\u{c3}\u{a9}/x",
        ),
        (
            b"/environ/caf\xe9/x",
            "/environ/caf\u{e9}/x",
            "/environ/caf\u{e9}/x",
        ),
        (b"/environ/a\"b", "/environ/a\"b", "/environ/a\"b"),
        (
            b"/environ/a<b>{c}|^`",
            "/environ/a<b>{c}|^`",
            "/environ/a<b>{c}|^`",
        ),
        (b"/environ/a%41b", "/environ/aAb", "/environ/a%41b"),
        (
            b"/environ?q=\xe9&r=\"y\"",
            "/environ",
            "/environ?q=\u{e9}&r=\"y\"",
        ),
        (b"/environ?q=%zz", "/environ", "/environ?q=%zz"),
    ];
    for (target, path_info, request_uri) in accepted {
        let (status, seen, raw) = probe(&server, &get(target, host));
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&raw));
        let seen = seen.unwrap();
        assert_eq!(seen["PATH_INFO"], path_info, "{seen}");
        assert_eq!(seen["REQUEST_URI"], request_uri, "{seen}");
    }
    // HTTP/1.0 needs no Host; a line of 8,191 bytes is within LimitRequestLine.
    let (status, _, _) = probe(&server, b"GET /environ HTTP/1.0\r\n\r\n");
    assert_eq!(status, 200);
    let line = [b"/environ?".as_slice(), &[b'a'; 8191 - 13 - 9]].concat();
    let (status, _, raw) = probe(&server, &get(&line, host));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&raw[..200]));
    // OPTIONS * is answered by the server.
    let raw = server.raw(b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let r = Response::parse(&raw);
    assert_eq!(r.status, 200);
    assert!(r.header("allow").unwrap().contains("GET"));
    assert_eq!(r.header("content-length"), Some("0"));
    // Absolute form: the authority is the host the app sees.
    let (status, seen, _) = probe(
        &server,
        b"GET http://other.example/environ?y=1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
    let seen = seen.unwrap();
    assert_eq!(seen["HTTP_HOST"], "other.example");
    assert_eq!(seen["PATH_INFO"], "/environ");
    // Refusals are logged at info with the reason, and in the access log with their status.
    std::thread::sleep(Duration::from_millis(300));
    let access = std::fs::read_to_string(&log).unwrap();
    assert!(access.contains("\"GET /a%zz HTTP/1.1\" 400"), "{access}");
    assert!(
        access.contains("\"GET /environ/caf\\xc3\\xa9/x HTTP/1.1\" 200"),
        "{access}"
    );
    assert!(access.contains(" 414 "), "{access}");
    // Refused by hyper itself (a control byte in the target): logged just the same.
    assert!(access.contains("\"GET /a\\x01b HTTP/1.1\" 400"), "{access}");
    let errors = server.stderr();
    assert!(errors.contains("more than one Host header"), "{errors}");
    assert!(
        errors.contains("chunked may be applied only once"),
        "{errors}"
    );
}

/// The processes of the server tree rooted at `pid` (it and all its descendants).
fn process_tree(pid: u32) -> Vec<u32> {
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        for child in process::children(tree[i]) {
            if !tree.contains(&child) {
                tree.push(child);
            }
        }
        i += 1;
    }
    tree
}

/// `Uid`, `Gid` (real, effective, saved, fs) and `Groups` of a process, and its command.
fn credentials(pid: u32) -> (Vec<u32>, Vec<u32>, Vec<u32>, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> Vec<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or("")
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect()
    };
    (
        field("Uid:"),
        field("Gid:"),
        field("Groups:"),
        process::cmdline(pid),
    )
}

fn uid_of(name: &str) -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let line = passwd
        .lines()
        .find(|l| l.starts_with(&format!("{name}:")))
        .unwrap();
    let fields: Vec<&str> = line.split(':').collect();
    (fields[2].parse().unwrap(), fields[3].parse().unwrap())
}

/// Started as root, every process that reads client bytes or runs Python runs as the
/// unprivileged user (its real, effective, saved and file-system ids, no supplementary
/// groups); only the master keeps root. Checked from /proc for every process of the tree, in
/// embedded mode (default user, --user, a configuration's User) and daemon mode.
#[test]
fn started_as_root_nothing_that_serves_clients_stays_root() {
    if !process::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let dir = fs::scratch_world_readable("wsgi-hardening-");
    let app = fs::write_world_readable(
        &dir.path().join("app.wsgi"),
        "import os\ndef application(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [b'%d %d %d' % (os.getuid(), os.geteuid(), os.getpid())]\n",
    );
    let app = app.to_str().unwrap();
    let conf = fs::write_world_readable(
        &dir.path().join("site.conf"),
        &format!("User nobody\nWSGIScriptAlias / {app}\n"),
    );
    let conf = conf.to_str().unwrap();
    let no_allow = util::Launch {
        allow_root: false,
        ..util::PLAIN
    };
    let cases: Vec<(Vec<&str>, &str, usize)> = vec![
        (vec![app], "www-data", 2),
        (vec![app, "--user", "nobody"], "nobody", 2),
        (vec!["--config", conf], "nobody", 2),
        (
            vec![
                app,
                "--processes",
                "2",
                "--threads",
                "2",
                "--user",
                "nobody",
            ],
            "nobody",
            4,
        ),
    ];
    for (args, user, processes) in cases {
        let mut all = args.clone();
        all.extend(["--port", "0"]);
        let server = Server::start_with(&no_allow, &all);
        let (uid, gid) = uid_of(user);
        let answer = server.get("/").text();
        let ids: Vec<u32> = answer.split(' ').map(|n| n.parse().unwrap()).collect();
        assert_eq!(
            (ids[0], ids[1]),
            (uid, uid),
            "{args:?}: the app runs as {answer}"
        );
        assert!(
            server
                .banner
                .iter()
                .any(|l| l.contains(&format!("serving as user {user}")))
        );
        let tree = process_tree(server.child.id());
        assert_eq!(tree.len(), processes, "{args:?}: {tree:?}");
        for pid in tree {
            let (uids, gids, groups, cmd) = credentials(pid);
            if pid == server.child.id() {
                assert_eq!(uids, vec![0, 0, 0, 0], "the master: {cmd}");
                continue;
            }
            assert_eq!(uids, vec![uid; 4], "{args:?}: {pid} {cmd}");
            assert_eq!(gids, vec![gid; 4], "{args:?}: {pid} {cmd}");
            let allowed_groups: &[u32] = if cmd.contains("daemon-process") {
                &[gid]
            } else {
                &[]
            };
            assert!(
                groups.iter().all(|g| allowed_groups.contains(g)),
                "{args:?}: {pid} {cmd} keeps groups {groups:?}"
            );
        }
    }
}

/// Started as root: refused (before serving) when the user would be root without
/// --allow-root, or cannot read the application, with what to do.
#[test]
fn started_as_root_refuses_what_would_run_as_root_or_cannot_be_read() {
    if !process::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let private = fs::scratch("wsgi-hardening-");
    std::fs::set_permissions(
        private.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let app = write(&private.path().join("app.wsgi"), APP);
    let no_allow = util::Launch {
        allow_root: false,
        ..util::PLAIN
    };
    let err = Server::try_start_with(&no_allow, &[app.to_str().unwrap(), "--port", "0"])
        .err()
        .expect("refused");
    assert!(err.contains("www-data cannot read"), "{err}");
    assert!(err.contains("chmod"), "{err}");
    assert!(err.contains("--allow-root"), "{err}");
    let open = fs::scratch_world_readable("wsgi-hardening-");
    let app = fs::write_world_readable(&open.path().join("app.wsgi"), APP);
    let conf = fs::write_world_readable(
        &open.path().join("site.conf"),
        &format!("User root\nWSGIScriptAlias / {}\n", app.display()),
    );
    let err = Server::try_start_with(
        &no_allow,
        &["--config", conf.to_str().unwrap(), "--port", "0"],
    )
    .err()
    .expect("refused");
    assert!(
        err.contains("User `root` would run the applications as root"),
        "{err}"
    );
    // With --allow-root, as asked.
    let server = Server::start_with(
        &no_allow,
        &[
            "--config",
            conf.to_str().unwrap(),
            "--port",
            "0",
            "--allow-root",
        ],
    );
    assert_eq!(server.get("/hello").status, 200);
    assert!(server.stderr().contains("--allow-root"));
}

/// A keep-alive client that reconnects when the server closes between requests; every
/// request that does not get a whole 200 is a failure.
fn keep_alive_client(
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    failures: Arc<Mutex<Vec<String>>>,
    answered: Arc<AtomicUsize>,
) {
    let mut conn: Option<TcpStream> = None;
    while !stop.load(Ordering::Relaxed) {
        let mut s = match conn.take() {
            Some(s) => s,
            None => match TcpStream::connect(addr) {
                Ok(s) => {
                    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                    s
                }
                Err(e) => {
                    failures.lock().unwrap().push(format!("connect: {e}"));
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            },
        };
        if let Err(e) = s.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n") {
            failures.lock().unwrap().push(format!("write: {e}"));
            continue;
        }
        match read_response(&mut s) {
            Ok(r) if r.status == 200 => {
                answered.fetch_add(1, Ordering::Relaxed);
                if r.header("connection") != Some("close") {
                    conn = Some(s);
                }
            }
            Ok(r) => failures
                .lock()
                .unwrap()
                .push(format!("status {}", r.status)),
            Err(e) => failures.lock().unwrap().push(e),
        }
    }
}

/// SIGHUP under keep-alive load: three reloads while 16 keep-alive clients send requests
/// without pause; not one request fails (the old front closes each connection between
/// requests with `Connection: close`, the clients reconnect to the new one), and a long
/// request in flight at the reload finishes in the old front while new ones are answered
/// at once by the new one.
#[test]
fn sighup_under_keep_alive_load_loses_nothing() {
    let dir = fs::scratch("wsgi-hardening-");
    let server = serve_app(dir.path(), &["--threads", "8"]);
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let answered = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let (addr, stop, failures, answered) = (
                server.addr,
                stop.clone(),
                failures.clone(),
                answered.clone(),
            );
            std::thread::spawn(move || keep_alive_client(addr, stop, failures, answered))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    for round in 0..3 {
        let addr = server.addr;
        let long = std::thread::spawn(move || timed_get(addr, "/sleep?3", Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(300));
        server.sighup();
        // New requests are answered while the old front still runs the long one: most of
        // them quickly (none waits for the long request).
        let reloaded = Instant::now();
        let (mut sent, mut fast) = (0, 0);
        while reloaded.elapsed() < Duration::from_millis(2500) {
            let began = Instant::now();
            assert_eq!(
                timed_get(server.addr, "/hello", Duration::from_secs(10)),
                Some(200)
            );
            sent += 1;
            if began.elapsed() < Duration::from_millis(700) {
                fast += 1;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            sent >= 5 && fast * 10 >= sent * 7,
            "round {round}: {fast} of {sent} answers quick during the reload"
        );
        assert_eq!(long.join().unwrap(), Some(200), "round {round}");
        std::thread::sleep(Duration::from_millis(500));
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    let answered = answered.load(Ordering::Relaxed);
    eprintln!(
        "{answered} keep-alive requests answered across 3 reloads, {} failed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} failed of {}: {:?}",
        failures.len(),
        answered,
        &failures[..failures.len().min(20)]
    );
    assert!(answered > 1000, "{answered}");
    let log = server.stderr();
    assert_eq!(
        log.matches("reloaded; the previous front process").count(),
        3,
        "{log}"
    );
}

/// SIGTERM: the listening sockets close first (a new connection is refused at once, so a
/// load balancer fails over) while the request in flight finishes, then the server exits 0.
#[test]
fn sigterm_refuses_new_connections_and_finishes_in_flight_ones() {
    let dir = fs::scratch("wsgi-hardening-");
    let mut server = serve_app(dir.path(), &[]);
    let addr = server.addr;
    let long = std::thread::spawn(move || timed_get(addr, "/sleep?2", Duration::from_secs(20)));
    std::thread::sleep(Duration::from_millis(300));
    server.sigterm();
    std::thread::sleep(Duration::from_millis(300));
    let refused = TcpStream::connect_timeout(&addr, Duration::from_secs(2));
    assert!(
        matches!(&refused, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
        "{refused:?}"
    );
    assert_eq!(long.join().unwrap(), Some(200));
    let status = server.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status}");
}

/// Daemon mode: HEAD reaches the app as HEAD (WSGIMapHEADToGET's default), and a response
/// shorter than its Content-Length reaches the client as sent, then the connection closes,
/// every time.
#[test]
fn daemon_mode_passes_head_and_short_responses_through() {
    let dir = fs::scratch_world_readable("wsgi-hardening-");
    let app = fs::write_world_readable(
        &dir.path().join("app.wsgi"),
        &APP.replace(
            "def application(environ, start_response):\n    path = environ['PATH_INFO']\n",
            "def application(environ, start_response):\n    path = environ['PATH_INFO']\n    if path == '/method':\n        start_response('200 OK', [('X-Method', environ['REQUEST_METHOD']), ('Content-Length', '5')])\n        return [b'hello']\n",
        ),
    );
    let mut args = vec![
        app.to_str().unwrap(),
        "--port",
        "0",
        "--processes",
        "1",
        "--threads",
        "2",
    ];
    if process::is_root() {
        args.extend(["--user", "nobody"]);
    }
    let server = Server::start_with(&util::DAEMON, &args);
    let raw = server.raw(b"HEAD /method HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let r = Response::parse_for(&raw, true);
    assert_eq!(r.header("x-method"), Some("HEAD"));
    assert_eq!(r.header("content-length"), Some("5"));
    assert!(r.rest.is_empty(), "{}", String::from_utf8_lossy(&raw));
    for _ in 0..20 {
        let raw = server.raw(b"GET /short HTTP/1.1\r\nHost: x\r\n\r\n");
        let r = Response::parse(&raw);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&raw));
        assert_eq!(r.body, b"abcd");
        assert!(!r.complete);
    }
}
