//! Daemon mode under a real Apache: `WSGIDaemonProcess` groups started by the Apache parent,
//! requests forwarded by the children over the groups' sockets.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use wsgi_testkit::apache::Apache;
use wsgi_testkit::apps::field;
use wsgi_testkit::fs::scratch_world_readable;
use wsgi_testkit::http::dechunk;
use wsgi_testkit::process;
use wsgi_testkit::venvs::make_venv;

const APP: &str = r#"
import os, sys, time

def application(environ, start_response):
    path = environ['PATH_INFO']
    if path == '/exit':
        os._exit(1)
    if path == '/slow':
        time.sleep(0.5)
    if path == '/file':
        f = open(environ['QUERY_STRING'], 'rb')
        f.seek(10)
        start_response('200 OK', [('Content-Type', 'application/octet-stream')])
        return environ['wsgi.file_wrapper'](f)
    if path == '/echo':
        data = environ['wsgi.input'].read()
        body = b'%d %d' % (len(data), sum(data) % 65521)
        start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])
        return [body]
    if path == '/midway':
        start_response('200 OK', [('Content-Type', 'text/plain')])
        def body():
            yield b'first part\n'
            raise RuntimeError('failing in the middle of the body')
        return body()
    body = ('pid=%d\nuid=%d\nprefix=%s\ngroup=%s\nprocess_group=%s\nmultiprocess=%s\n' % (
        os.getpid(), os.getuid(), sys.prefix, environ['mod_wsgi.application_group'],
        environ['mod_wsgi.process_group'], environ['wsgi.multiprocess'])).encode()
    start_response('200 OK', [('Content-Type', 'text/plain'),
                              ('Set-Cookie', 'a=1'), ('Set-Cookie', 'b=2')])
    return [body]
"#;

fn site(dir: &Path, daemon: &str) -> String {
    std::fs::write(dir.join("app.wsgi"), APP).unwrap();
    format!(
        "WSGIDaemonProcess site {daemon}
WSGIProcessGroup site
WSGIScriptAlias / {d}/app.wsgi
<Directory {d}>
    Require all granted
</Directory>
",
        d = dir.display()
    )
}

/// Apache serving [`APP`] in daemon process group `site` with `options`, in a fresh
/// world-readable scratch folder (returned: it must outlive the server).
fn start_site(options: &str) -> (tempfile::TempDir, Apache) {
    let dir = scratch_world_readable("wsgi-apache-daemon-");
    let root = dir.path().join("server");
    std::fs::create_dir(&root).unwrap();
    let apache = Apache::start(&root, &site(dir.path(), options));
    (dir, apache)
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn a_group_of_two_processes_serves_as_the_apache_user() {
    let (_dir, mut apache) = start_site("processes=2 threads=4 display-name=%{GROUP}");
    // Slow requests in parallel: both processes answer.
    let pids: BTreeSet<u32> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| field(&apache.get("/slow").2, "pid").parse::<u32>().unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(pids.len(), 2, "{pids:?}\n{}", apache.error_log());
    let (status, head, body) = apache.get("/x");
    assert_eq!(status, 200);
    assert_eq!(
        field(&body, "uid"),
        "33",
        "daemons run as Apache's User www-data"
    );
    assert_eq!(field(&body, "process_group"), "site");
    assert_eq!(field(&body, "multiprocess"), "True");
    assert_eq!(
        head.matches("Set-Cookie:").count(),
        2,
        "repeated headers stay separate: {head}"
    );
    for pid in &pids {
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
        assert!(cmdline.starts_with("(wsgi:site)"), "{cmdline:?}");
    }
    // An app failing mid-body: the client can tell, in daemon mode too.
    let raw = apache.raw(b"GET /midway HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    assert!(String::from_utf8_lossy(&raw[..split]).starts_with("HTTP/1.1 200"));
    assert!(
        dechunk(&raw[split + 4..]).is_none(),
        "{:?}",
        String::from_utf8_lossy(&raw)
    );

    let took = apache.stop();
    assert!(took < Duration::from_secs(5), "stopping took {took:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|p| alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !pids.iter().any(|p| alive(*p)),
        "daemon processes outlived Apache"
    );
}

#[test]
fn a_crashed_daemon_costs_its_request_only() {
    let (_dir, apache) = start_site("threads=2");
    let before = field(&apache.get("/x").2, "pid");
    assert_eq!(apache.get("/exit").0, 502);
    let deadline = Instant::now() + Duration::from_secs(1);
    let after = loop {
        let (status, _, body) = apache.get("/x");
        if status == 200 {
            break field(&body, "pid");
        }
        assert!(
            Instant::now() < deadline,
            "no recovery within a second: {status}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_ne!(before, after);
    let log = apache.error_log();
    assert!(log.contains("daemon process exited with status 1"), "{log}");
}

/// A `wsgi.file_wrapper` file reaches the Apache child as a descriptor from the daemon
/// process, and Apache sends it from the file as it sends a static file: from memory by
/// default, with sendfile under `EnableSendfile On`, read into buffers under `EnableMMAP Off`.
#[test]
fn a_file_wrapper_file_goes_out_through_the_apache_child() {
    let dir = scratch_world_readable("wsgi-apache-daemon-");
    let content: Vec<u8> = (0..500_000u32).map(|i| (i % 251) as u8).collect();
    let file = dir.path().join("data.bin");
    std::fs::write(&file, &content).unwrap();
    for (name, how) in [
        ("default", ""),
        ("sendfile", "EnableSendfile On\n"),
        ("no-mmap", "EnableMMAP Off\n"),
    ] {
        let root = dir.path().join(name);
        std::fs::create_dir(&root).unwrap();
        let apache = Apache::start(&root, &format!("{how}{}", site(dir.path(), "threads=2")));
        let (status, head, body) = apache.get(&format!("/file?{}", file.display()));
        assert_eq!(status, 200, "{name}: {head}");
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(&body).expect("a complete chunked body")
        } else {
            body
        };
        assert!(
            body == content[10..],
            "{name}: body differs ({} bytes)",
            body.len()
        );
        // The child's connection to the daemon process goes on serving.
        assert_eq!(apache.get("/x").0, 200, "{name}");
    }
}

/// What the app's `/echo` answers for a body: its length and its bytes' sum modulo 65521.
fn digest(data: &[u8]) -> String {
    format!(
        "{} {}",
        data.len(),
        data.iter().map(|&b| u32::from(b)).sum::<u32>() % 65521
    )
}

/// Request bodies reach the daemon whole and in order, however they arrive: a 1 MiB body
/// with Content-Length, a chunked one in odd-sized chunks, and one sent in pieces with
/// pauses between them (each read takes what has arrived, then waits for more).
#[test]
fn request_bodies_cross_to_the_daemon_whole() {
    use std::io::{Read, Write};
    let (_dir, apache) = start_site("threads=2");
    let data: Vec<u8> = (0..(1u32 << 20)).map(|i| (i * 7 % 251) as u8).collect();
    let expected = digest(&data);
    let head = |framing: &str| {
        format!("POST /echo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{framing}\r\n\r\n")
            .into_bytes()
    };
    let mut request = head(&format!("Content-Length: {}", data.len()));
    request.extend_from_slice(&data);
    let (status, _, body) = wsgi_testkit::http::split_response(&apache.raw(&request));
    assert_eq!(status, 200, "{}", apache.error_log());
    assert_eq!(String::from_utf8_lossy(&body), expected);

    let mut chunked = head("Transfer-Encoding: chunked");
    for part in data.chunks(12_345) {
        chunked.extend(format!("{:x}\r\n", part.len()).bytes());
        chunked.extend_from_slice(part);
        chunked.extend(b"\r\n");
    }
    chunked.extend(b"0\r\n\r\n");
    let (status, _, body) = wsgi_testkit::http::split_response(&apache.raw(&chunked));
    assert_eq!(status, 200, "{}", apache.error_log());
    assert_eq!(String::from_utf8_lossy(&body), expected);

    let mut s = std::net::TcpStream::connect(apache.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(&head(&format!("Content-Length: {}", data.len())))
        .unwrap();
    for piece in data.chunks(300_000) {
        s.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let (status, _, body) = wsgi_testkit::http::split_response(&raw);
    assert_eq!(status, 200, "{}", apache.error_log());
    assert_eq!(String::from_utf8_lossy(&body), expected);
}

/// Small bodies (read by the Apache child before the request goes, and sent with it) reach
/// the app whole; one the app ignores leaves nothing behind on the daemon connection; with
/// `Expect: 100-continue` the body is asked for only when the app reads it.
#[test]
fn small_request_bodies_cross_with_the_request() {
    use std::io::{Read, Write};
    // One daemon thread: each request takes the daemon connection the one before used.
    let (_dir, apache) = start_site("threads=1");
    let request = |path: &str, data: &[u8], more: &str| {
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n{more}\r\n",
            data.len()
        )
        .into_bytes();
        request.extend_from_slice(data);
        request
    };
    // A raw connection, and the (status, body) it answers until it closes.
    let connect = || {
        let s = std::net::TcpStream::connect(apache.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s
    };
    let answer = |s: &mut std::net::TcpStream| {
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let (status, _, body) = wsgi_testkit::http::split_response(&raw);
        (status, String::from_utf8_lossy(&body).into_owned())
    };
    for n in [1usize, 1000, 65_536, 65_537] {
        let data: Vec<u8> = (0..n).map(|i| (i * 13 % 251) as u8).collect();
        let (status, _, body) = apache.request("POST", "/echo", &[], &data);
        assert_eq!(status, 200, "{n} bytes: {}", apache.error_log());
        assert_eq!(String::from_utf8_lossy(&body), digest(&data), "{n} bytes");
        let (status, _, body) = apache.request("POST", "/x", &[], &data);
        assert_eq!(status, 200, "{n} bytes ignored: {}", apache.error_log());
        assert!(field(&body, "pid").parse::<u32>().is_ok());
    }
    // A body that arrives in two pieces, a pause between them, is waited for.
    let data = vec![b'z'; 40_000];
    let mut s = connect();
    let whole = request("/echo", &data, "");
    let (first, second) = whole.split_at(whole.len() - 20_000);
    s.write_all(first).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    s.write_all(second).unwrap();
    assert_eq!(answer(&mut s), (200, digest(&data)));
    // A body cut short (the client stops sending halfway): never a shorter body served as
    // whole.
    let data = vec![b'c'; 1000];
    let whole = request("/echo", &data, "");
    let mut s = connect();
    s.write_all(&whole[..whole.len() - 500]).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    if !raw.is_empty() {
        let (status, _, body) = wsgi_testkit::http::split_response(&raw);
        assert!(
            status != 200 || String::from_utf8_lossy(&body) != digest(&data[..500]),
            "a truncated body reached the app as whole: {}",
            apache.error_log()
        );
    }
    // Expect: 100-continue: the interim answer comes, then the body is read.
    let data = b"continued".to_vec();
    let whole = request("/echo", &data, "Expect: 100-continue\r\n");
    let (head, _) = whole.split_at(whole.len() - data.len());
    let mut s = connect();
    s.write_all(head).unwrap();
    let mut interim = [0u8; 25];
    s.read_exact(&mut interim).unwrap();
    assert!(
        interim.starts_with(b"HTTP/1.1 100 Continue"),
        "{}",
        String::from_utf8_lossy(&interim)
    );
    s.write_all(&data).unwrap();
    assert_eq!(answer(&mut s), (200, digest(&data)));
}

#[test]
fn the_daemon_starts_with_its_python_home() {
    let dir = scratch_world_readable("wsgi-apache-daemon-");
    let root = dir.path().join("server");
    std::fs::create_dir(&root).unwrap();
    let venv = make_venv("/usr/bin/python3.11", &dir.path().join("venv"));
    let apache = Apache::start(
        &root,
        &site(dir.path(), &format!("python-home={}", venv.display())),
    );
    let (status, _, body) = apache.get("/x");
    assert_eq!(status, 200, "{}", apache.error_log());
    assert_eq!(field(&body, "prefix"), venv.display().to_string());
}

#[test]
fn graceful_restarts_under_load_lose_no_request() {
    let (_dir, apache) = start_site("processes=2 threads=4");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (ok, failed) = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let (mut ok, mut failed) = (0u32, Vec::new());
                    let deadline = Instant::now() + Duration::from_secs(20);
                    while !stop.load(std::sync::atomic::Ordering::Relaxed)
                        && Instant::now() < deadline
                    {
                        match apache.try_get_status("/x") {
                            Ok(200) => ok += 1,
                            other => failed.push(other),
                        }
                    }
                    (ok, failed)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        for _ in 0..2 {
            // apachectl graceful: SIGUSR1 to the parent this test started.
            process::signal(apache.pid(), "-USR1");
            std::thread::sleep(Duration::from_millis(1500));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        workers.into_iter().map(|w| w.join().unwrap()).fold(
            (0, Vec::new()),
            |(a, mut f), (o, g)| {
                f.extend(g);
                (a + o, f)
            },
        )
    });
    assert!(ok > 50, "only {ok} requests went through");
    assert!(
        failed.is_empty(),
        "{} failed: {failed:?}\n{}",
        failed.len(),
        apache.error_log()
    );
}

const NOT_FOUND_APP: &str = r#"
def application(environ, start_response):
    body = b'the application says: no such page'
    start_response('404 Not Found', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])
    return [body]
"#;

#[test]
fn error_override_lets_apache_answer_errors() {
    let dir = scratch_world_readable("wsgi-apache-daemon-");
    std::fs::write(dir.path().join("nf.wsgi"), NOT_FOUND_APP).unwrap();
    let site = |override_flag: &str| {
        format!(
            "WSGIDaemonProcess site threads=2
WSGIProcessGroup site
WSGIErrorOverride {override_flag}
ErrorDocument 404 \"Apache's own page\"
WSGIScriptAlias / {d}/nf.wsgi
<Directory {d}>
    Require all granted
</Directory>
",
            d = dir.path().display()
        )
    };
    let on = dir.path().join("on");
    std::fs::create_dir(&on).unwrap();
    let apache = Apache::start(&on, &site("On"));
    let (status, _, body) = apache.get("/missing");
    assert_eq!(status, 404);
    assert_eq!(String::from_utf8_lossy(&body), "Apache's own page");
    drop(apache);
    let off = dir.path().join("off");
    std::fs::create_dir(&off).unwrap();
    let apache = Apache::start(&off, &site("Off"));
    let (status, _, body) = apache.get("/missing");
    assert_eq!(status, 404);
    assert_eq!(
        String::from_utf8_lossy(&body),
        "the application says: no such page"
    );
}
