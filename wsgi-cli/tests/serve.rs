//! `wsgi serve`, run as the real binary on 127.0.0.1 with a port it picks (reported in its
//! banner), spoken to over real TCP sockets, with raw bytes where the request is malformed.
//! Every wait is bounded; only the child this test started is signalled or killed.

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use util::Server;
use wsgi_testkit::fs::{self, write};
use wsgi_testkit::http::{Response, find, read_to_close};
use wsgi_testkit::{venvs, wait};

/// The test app: one script, behaviours chosen by PATH_INFO.
const APP: &str = r#"
import json, os, time

def application(environ, start_response):
    path = environ['PATH_INFO']
    query = environ['QUERY_STRING']
    method = [('X-Request-Method', environ['REQUEST_METHOD'])]
    if path == '/hello':
        body = b'Hello, world!\n'
        start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))] + method)
        return [body]
    if path == '/status':
        from urllib.parse import unquote
        start_response(unquote(query, 'latin-1'), [('Content-Type', 'text/plain'), ('Content-Length', '2')])
        return [b'ok']
    if path == '/environ':
        keys = ['REQUEST_METHOD', 'SCRIPT_NAME', 'PATH_INFO', 'QUERY_STRING', 'SERVER_PORT',
                'SERVER_NAME', 'HTTP_HOST', 'CONTENT_LENGTH', 'wsgi.input_terminated',
                'mod_wsgi.application_group', 'REQUEST_URI']
        body = json.dumps({k: environ.get(k) for k in keys}).encode()
        start_response('200 OK', [('Content-Type', 'application/json'), ('Content-Length', str(len(body)))] + method)
        return [body]
    if path == '/echo':
        data = environ['wsgi.input'].read()
        body = b'%d:' % len(data) + data[:16] + b':' + data[-16:]
        start_response('200 OK', [('Content-Type', 'text/plain')] + method)
        return [body]
    if path == '/stream':
        n = int(query or '4')
        start_response('200 OK', [('Content-Type', 'application/octet-stream')] + method)
        return (bytes([65 + i % 26]) * 65536 for i in range(n))
    if path == '/sleep':
        time.sleep(float(query or '1'))
        start_response('200 OK', [('Content-Type', 'text/plain')] + method)
        return [b'slept']
    if path == '/fail-mid':
        def gen():
            yield b'part one '
            raise RuntimeError('failed in the middle of the body')
        start_response('200 OK', [('Content-Type', 'text/plain')] + method)
        return gen()
    if path == '/file':
        start_response('200 OK', [('Content-Type', 'text/plain')] + method)
        return environ['wsgi.file_wrapper'](open(__file__, 'rb'))
    if path == '/file-from':
        f = open(query, 'rb')
        f.seek(1000)
        start_response('200 OK', [('Content-Type', 'application/octet-stream')] + method)
        return environ['wsgi.file_wrapper'](f)
    if path == '/file-unlinked':
        f = open(query, 'rb')
        os.unlink(query)
        start_response('200 OK', [('Content-Type', 'application/octet-stream')] + method)
        return environ['wsgi.file_wrapper'](f)
    if path == '/endless':
        marker = query
        class Endless:
            def __iter__(self):
                while True:
                    time.sleep(0.01)
                    yield b'x' * 65536
            def close(self):
                with open(marker, 'w') as f:
                    f.write('closed')
        start_response('200 OK', [('Content-Type', 'application/octet-stream')] + method)
        return Endless()
    start_response('404 Not Found', [('Content-Type', 'text/plain')])
    return [b'no such test path']
"#;

/// A scratch folder the server (running as us) can read.
fn scratch() -> tempfile::TempDir {
    fs::scratch("wsgi-serve-test-")
}

/// The app written to a scratch folder, served with extra flags.
fn serve_app(dir: &Path, extra: &[&str]) -> Server {
    let app = write(&dir.join("app.wsgi"), APP);
    let app = app.to_str().unwrap().to_string();
    let mut args = vec![app.as_str(), "--port", "0", "--log-level", "warn"];
    args.extend_from_slice(extra);
    Server::start(&args)
}

#[test]
fn hello_keep_alive_and_pipelining() {
    let dir = scratch();
    let server = serve_app(dir.path(), &[]);
    let r = server.get("/hello");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "Hello, world!\n");
    assert_eq!(r.header("content-type"), Some("text/plain"));

    // Keep-alive: two requests, one after the other, on one connection.
    let mut s = server.connect();
    for _ in 0..2 {
        s.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(20);
        while find(&got, b"Hello, world!\n").is_none() {
            assert!(Instant::now() < deadline);
            let n = s.read(&mut buf).unwrap();
            assert!(
                n > 0,
                "the connection was closed between keep-alive requests"
            );
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(Response::parse(&got).status, 200);
    }

    // Pipelining: three requests in one write, three answers in order.
    let raw = server.raw(
        b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\nGET /environ?second HTTP/1.1\r\nHost: x\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let first = Response::parse(&raw);
    assert_eq!(first.text(), "Hello, world!\n");
    let second = Response::parse(&first.rest);
    assert!(
        second.text().contains("\"QUERY_STRING\": \"second\""),
        "{}",
        second.text()
    );
    let third = Response::parse(&second.rest);
    assert_eq!(third.text(), "Hello, world!\n");
    assert!(third.rest.is_empty());
}

/// The status line carries the application's reason phrase as it wrote it (latin-1 and all),
/// its code's usual one or not, in embedded and daemon mode.
#[test]
fn status_lines_keep_the_apps_reason_phrase() {
    let dir = scratch();
    let mut daemon = vec!["--processes", "1", "--threads", "2"];
    if wsgi_testkit::process::is_root() {
        daemon.extend(["--user", "nobody"]);
    }
    for extra in [&[][..], &daemon[..]] {
        let server = serve_app(dir.path(), extra);
        for (status, line) in [
            ("200%20OK", &b"HTTP/1.1 200 OK\r\n"[..]),
            ("404%20Not%20Found", b"HTTP/1.1 404 Not Found\r\n"),
            ("200%20Fine%20Thanks", b"HTTP/1.1 200 Fine Thanks\r\n"),
            ("200%20ok", b"HTTP/1.1 200 ok\r\n"),
            ("299%20Odd%20One", b"HTTP/1.1 299 Odd One\r\n"),
            ("200%20Caf%E9", b"HTTP/1.1 200 Caf\xe9\r\n"),
        ] {
            let raw = server.raw(
                format!("GET /status?{status} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            );
            assert!(
                raw.starts_with(line),
                "{status} {extra:?}: {}",
                String::from_utf8_lossy(&raw)
            );
        }
    }
}

#[test]
fn malformed_requests_get_4xx_and_the_server_keeps_serving() {
    let dir = scratch();
    let server = serve_app(dir.path(), &["--max-header-size", "8192"]);
    let cases: [(&str, Vec<u8>, u16); 5] = [
        ("bad request line", b"GARBAGE\r\n\r\n".to_vec(), 400),
        (
            "oversize headers",
            format!("GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(20000)).into_bytes(),
            431,
        ),
        (
            "too many headers",
            format!(
                "GET /hello HTTP/1.1\r\nHost: x\r\n{}\r\n",
                (0..150).map(|i| format!("X-H{i}: v\r\n")).collect::<String>()
            )
            .into_bytes(),
            431,
        ),
        (
            "bad Content-Length",
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\nhello".to_vec(),
            400,
        ),
        (
            "bad chunk encoding",
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n".to_vec(),
            400,
        ),
    ];
    for (what, request, status) in cases {
        let raw = server.raw(&request);
        let r = Response::parse(&raw);
        assert_eq!(
            r.status,
            status,
            "{what}: {}",
            String::from_utf8_lossy(&raw)
        );
        // The server still answers.
        assert_eq!(server.get("/hello").status, 200, "after {what}");
    }
}

#[test]
fn slow_clients_are_timed_out() {
    let dir = scratch();
    let server = serve_app(dir.path(), &["--header-timeout", "1"]);
    let mut s = server.connect();
    s.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n").unwrap();
    let started = Instant::now();
    let raw = read_to_close(&mut s);
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    assert!(
        raw.is_empty() || raw.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    assert_eq!(server.get("/hello").status, 200);
}

/// `WSGIMapHEADToGET`: Auto (the default) leaves HEAD alone in `wsgi serve` (no output
/// filter could need the body), On maps it to GET, Off never does; the body is never sent.
#[test]
fn head_follows_map_head_to_get_and_sends_no_body() {
    let dir = scratch();
    let server = serve_app(dir.path(), &[]);
    let head = b"HEAD /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let r = Response::parse_for(&server.raw(head), true);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-request-method"), Some("HEAD"));
    assert_eq!(r.header("content-length"), Some("14"));
    assert!(
        r.rest.is_empty(),
        "HEAD got a body: {:?}",
        String::from_utf8_lossy(&r.rest)
    );
    for (setting, seen) in [("On", "GET"), ("Off", "HEAD"), ("Auto", "HEAD")] {
        let conf = write(
            &dir.path().join("head.conf"),
            &format!(
                "WSGIMapHEADToGET {setting}\nWSGIScriptAlias / {}\n",
                dir.path().join("app.wsgi").display()
            ),
        );
        let server = Server::start(&[
            "--config",
            conf.to_str().unwrap(),
            "--port",
            "0",
            "--log-level",
            "warn",
        ]);
        let r = Response::parse_for(&server.raw(head), true);
        assert_eq!(r.header("x-request-method"), Some(seen), "{setting}");
        assert_eq!(r.header("content-length"), Some("14"), "{setting}");
        assert!(r.rest.is_empty(), "{setting}");
    }
}

#[test]
fn streaming_upload_download_and_100_continue() {
    let dir = scratch();
    let server = serve_app(dir.path(), &[]);

    // A chunked upload of 2 MiB, sent in pieces.
    let mut s = server.connect();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        .unwrap();
    let piece = vec![b'u'; 65536];
    for _ in 0..32 {
        s.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
            .unwrap();
        s.write_all(&piece).unwrap();
        s.write_all(b"\r\n").unwrap();
    }
    s.write_all(b"0\r\n\r\n").unwrap();
    let r = Response::parse(&read_to_close(&mut s));
    assert_eq!(r.status, 200);
    assert!(r.text().starts_with("2097152:uuuu"), "{}", r.text());

    // Expect: 100-continue: the interim answer comes first, then the body is read.
    let mut s = server.connect();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 100 Continue\r\n"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    s.write_all(b"hello").unwrap();
    let mut rest = buf[..n].to_vec();
    rest.extend(read_to_close(&mut s));
    let after = &rest[find(&rest, b"\r\n\r\n").unwrap() + 4..];
    let r = Response::parse(after);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "5:hello:hello");

    // A streamed download of 8 MiB in 128 chunks.
    let r = server.get("/stream?128");
    assert_eq!(r.status, 200);
    assert!(r.complete);
    assert_eq!(r.body.len(), 128 * 65536);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));

    // wsgi.file_wrapper: the whole script comes back.
    let r = server.get("/file");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), APP);
}

#[test]
fn failure_mid_body_aborts_the_connection() {
    let dir = scratch();
    let server = serve_app(dir.path(), &[]);
    // Every time: the head and the part of the body the app sent reach the client, then the
    // connection closes without the final chunk (never a clean end, never nothing at all).
    for _ in 0..20 {
        let raw = server.raw(b"GET /fail-mid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let r = Response::parse(&raw);
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "part one ");
        assert!(
            !r.complete,
            "a failed body was ended cleanly: {}",
            String::from_utf8_lossy(&raw)
        );
    }
    assert_eq!(server.get("/hello").status, 200);
}

#[test]
fn client_leaving_runs_close() {
    let dir = scratch();
    let server = serve_app(dir.path(), &[]);
    let marker = dir.path().join("closed.txt");
    let mut s = server.connect();
    s.write_all(
        format!(
            "GET /endless?{} HTTP/1.1\r\nHost: x\r\n\r\n",
            marker.display()
        )
        .as_bytes(),
    )
    .unwrap();
    let mut buf = [0u8; 65536];
    let mut got = 0;
    while got < 200_000 {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0);
        got += n;
    }
    drop(s);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !marker.exists() {
        assert!(
            Instant::now() < deadline,
            "close() did not run after the client left"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "closed");
    assert_eq!(server.get("/hello").status, 200);
}

#[test]
fn full_queue_answers_503() {
    let dir = scratch();
    let server = serve_app(
        dir.path(),
        &[
            "--threads",
            "1",
            "--queue-size",
            "0",
            "--queue-timeout",
            "0.5",
        ],
    );
    let addr = server.addr;
    let busy = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(b"GET /sleep?3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        Response::parse(&read_to_close(&mut s)).status
    });
    std::thread::sleep(Duration::from_millis(700));
    let started = Instant::now();
    let r = server.get("/hello");
    assert_eq!(r.status, 503);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(busy.join().unwrap(), 200);
    assert_eq!(server.get("/hello").status, 200);
}

#[test]
fn sigterm_finishes_accepted_requests_then_exits_0() {
    let dir = scratch();
    // Two workers for four requests: two run, two wait in the queue when SIGTERM comes.
    let mut server = serve_app(dir.path(), &["--threads", "2"]);
    let addr = server.addr;
    let clients: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                s.write_all(b"GET /sleep?1.5 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    .unwrap();
                let r = Response::parse(&read_to_close(&mut s));
                (r.status, r.text())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    server.sigterm();
    for c in clients {
        assert_eq!(c.join().unwrap(), (200, "slept".to_string()));
    }
    let status = server.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status}; stderr:\n{}", server.stderr());
    // Nothing listens any more.
    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn static_files_with_types_ranges_and_conditionals() {
    let dir = scratch();
    let assets = dir.path().join("assets");
    std::fs::create_dir_all(assets.join("css")).unwrap();
    write(&assets.join("css/site.css"), "body { color: black; }\n");
    let assets_arg = assets.to_str().unwrap().to_string();
    let server = serve_app(dir.path(), &["--url-alias", "/static", &assets_arg]);

    let r = server.get("/static/css/site.css");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "body { color: black; }\n");
    assert!(r.header("content-type").unwrap().starts_with("text/css"));
    let modified = r.header("last-modified").unwrap().to_string();

    let raw = server.raw(
        format!("GET /static/css/site.css HTTP/1.1\r\nHost: x\r\nIf-Modified-Since: {modified}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(Response::parse(&raw).status, 304);

    let raw = server.raw(b"GET /static/css/site.css HTTP/1.1\r\nHost: x\r\nRange: bytes=0-3\r\nConnection: close\r\n\r\n");
    let r = Response::parse(&raw);
    assert_eq!(r.status, 206);
    assert_eq!(r.text(), "body");

    let r = server.get("/static/css");
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/static/css/"));
    assert_eq!(server.get("/static/missing.js").status, 404);
    let raw = server.raw(b"POST /static/css/site.css HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    assert_eq!(Response::parse(&raw).status, 405);
    // Outside the alias, the app answers.
    assert_eq!(server.get("/hello").status, 200);
}

/// `wsgi.file_wrapper` responses and static files leave through `sendfile(2)`: the debug log
/// counts the bytes each mapped range sent that way.
#[test]
fn file_wrapper_and_static_files_go_out_with_sendfile() {
    let dir = scratch();
    let assets = dir.path().join("assets");
    std::fs::create_dir_all(&assets).unwrap();
    let content: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    let big = assets.join("big.bin");
    std::fs::write(&big, &content).unwrap();
    let assets_arg = assets.to_str().unwrap().to_string();
    let app = write(&dir.path().join("app.wsgi"), APP);
    let server = Server::start(&[
        app.to_str().unwrap(),
        "--port",
        "0",
        "--log-level",
        "debug",
        "--url-alias",
        "/static",
        &assets_arg,
    ]);

    // From where the app left the file's offset, to the end.
    let r = server.get(&format!("/file-from?{}", big.display()));
    assert_eq!(r.status, 200);
    assert!(r.complete);
    assert_eq!(r.header("content-length"), Some("3144728"));
    assert!(r.body == content[1000..], "file_wrapper body differs");

    let r = server.get("/static/big.bin");
    assert_eq!(r.status, 200);
    assert!(r.body == content, "static body differs");

    let raw = server.raw(b"GET /static/big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=100000-1099999\r\nConnection: close\r\n\r\n");
    let r = Response::parse(&raw);
    assert_eq!(r.status, 206);
    assert!(r.body == content[100_000..1_100_000], "range body differs");

    // HEAD sends no body, hence nothing through sendfile.
    let raw = server.raw(b"HEAD /static/big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let r = Response::parse_for(&raw, true);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("3145728"));

    let wanted = [
        "sendfile: sent 3144728 of 3144728 bytes from offset 1000",
        "sendfile: sent 3145728 of 3145728 bytes from offset 0",
        "sendfile: sent 1000000 of 1000000 bytes from offset 100000",
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = server.stderr();
        let missing: Vec<_> = wanted.iter().filter(|w| !log.contains(*w)).collect();
        if missing.is_empty() {
            assert_eq!(log.matches("sendfile: sent").count(), 3, "{log}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "missing {missing:?} in the log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// In daemon mode a `wsgi.file_wrapper` file crosses to the front as its descriptor, not its
/// bytes: the front sends it with `sendfile(2)` as in embedded mode, even once the app has
/// removed the file's name, and a HEAD response sends nothing. Streamed bodies arrive whole.
#[test]
fn daemon_file_wrapper_goes_to_the_front_as_a_descriptor() {
    let dir = scratch();
    let content: Vec<u8> = (0..2 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let big = dir.path().join("big.bin");
    std::fs::write(&big, &content).unwrap();
    let app = write(&dir.path().join("app.wsgi"), APP);
    let mut args = vec![app.to_str().unwrap(), "--port", "0", "--log-level", "debug"];
    args.extend(["--processes", "1", "--threads", "2"]);
    if wsgi_testkit::process::is_root() {
        // The daemon process opens the file as another user than the front runs as.
        args.extend(["--user", "nobody"]);
    }
    let server = Server::start(&args);
    let r = server.get(&format!("/file-from?{}", big.display()));
    assert_eq!(r.status, 200);
    assert!(r.complete);
    assert_eq!(r.header("content-length"), Some("2096152"));
    assert!(r.body == content[1000..], "file_wrapper body differs");

    // HEAD: the headers only, nothing sent from the file.
    let head = format!(
        "HEAD /file-from?{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        big.display()
    );
    let r = Response::parse_for(&server.raw(head.as_bytes()), true);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("2096152"));

    // The name is gone before the front sends a byte; the descriptor still reads the file.
    let writable = dir.path().join("writable");
    std::fs::create_dir(&writable).unwrap();
    let anyone = std::os::unix::fs::PermissionsExt::from_mode(0o777);
    std::fs::set_permissions(&writable, anyone).unwrap();
    let gone = writable.join("gone.bin");
    std::fs::write(&gone, &content[..300_000]).unwrap();
    let r = server.get(&format!("/file-unlinked?{}", gone.display()));
    assert_eq!(r.status, 200);
    assert!(r.body == content[..300_000], "unlinked file body differs");
    assert!(!gone.exists());

    // Both bodies left the front through sendfile, the HEAD response's not at all.
    let wanted = [
        "sendfile: sent 2096152 of 2096152 bytes from offset 1000",
        "sendfile: sent 300000 of 300000 bytes from offset 0",
    ];
    let sent = wait::eventually(Duration::from_secs(10), || {
        let log = server.stderr();
        wanted.iter().all(|w| log.contains(w))
    });
    let log = server.stderr();
    assert!(sent, "missing {wanted:?} in the log:\n{log}");
    assert_eq!(log.matches("sendfile: sent").count(), 2, "{log}");
    // A streamed body: its large chunks reach hyper as the front read them.
    let r = server.get("/stream?64");
    assert_eq!(r.status, 200);
    assert!(r.complete);
    assert_eq!(r.body.len(), 64 * 65536);
    assert!(
        r.body
            .chunks(65536)
            .enumerate()
            .all(|(i, chunk)| chunk.iter().all(|&b| b == 65 + (i % 26) as u8)),
        "streamed body differs"
    );
    // The connection to the daemon process goes on serving.
    assert_eq!(server.get("/hello").text(), "Hello, world!\n");
}

#[test]
fn mounts_route_and_unrouted_paths_are_404() {
    let dir = scratch();
    let app = write(&dir.path().join("app.wsgi"), APP);
    let mount = format!("/api={}", app.display());
    let server = Server::start(&["--mount", &mount, "--port", "0", "--log-level", "warn"]);
    let r = server.get("/api/environ?x=1");
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(text.contains("\"SCRIPT_NAME\": \"/api\""), "{text}");
    assert!(text.contains("\"PATH_INFO\": \"/environ\""), "{text}");
    assert!(
        text.contains("\"REQUEST_URI\": \"/api/environ?x=1\""),
        "{text}"
    );
    assert!(text.contains("\"wsgi.input_terminated\": true"), "{text}");
    assert!(
        text.contains("\"mod_wsgi.application_group\": \"\""),
        "{text}"
    );
    assert_eq!(server.get("/elsewhere").status, 404);
    // A path that climbs above / is refused by the router.
    let raw =
        server.raw(b"GET /api/../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(Response::parse(&raw).status, 400);
}

#[test]
fn apache_config_virtual_hosts_and_listen_port() {
    let dir = scratch();
    let app = write(&dir.path().join("app.wsgi"), APP);
    let conf = write(
        &dir.path().join("site.conf"),
        &format!(
            "Listen 8123\n\
             <VirtualHost *:8123>\n  ServerName one.example\n  WSGIScriptAlias /one {app}\n</VirtualHost>\n\
             <VirtualHost *:8123>\n  ServerName two.example\n  WSGIScriptAlias /two {app} application-group=two\n</VirtualHost>\n",
            app = app.display()
        ),
    );
    let server = Server::start(&[
        "--config",
        conf.to_str().unwrap(),
        "--port",
        "0",
        "--log-level",
        "warn",
    ]);
    let ask = |host: &str, path: &str| {
        Response::parse(&server.raw(
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        ))
    };
    let r = ask("one.example", "/one/environ");
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(text.contains("\"SERVER_PORT\": \"8123\""), "{text}");
    assert!(text.contains("\"SERVER_NAME\": \"one.example\""), "{text}");
    assert!(
        text.contains("\"mod_wsgi.application_group\": \"one.example:8123|/one\""),
        "{text}"
    );
    let r = ask("two.example", "/two/environ");
    assert!(
        r.text().contains("\"mod_wsgi.application_group\": \"two\""),
        "{}",
        r.text()
    );
    // /two is not configured for one.example.
    assert_eq!(ask("one.example", "/two/environ").status, 404);
}

#[test]
fn config_errors_stop_the_start_with_the_check_messages() {
    let dir = scratch();
    let conf = write(&dir.path().join("bad.conf"), "WSGIScriptAlias /app\n");
    let serve = Command::new(env!("CARGO_BIN_EXE_wsgi"))
        .args(["serve", "--config", conf.to_str().unwrap(), "--port", "0"])
        .output()
        .unwrap();
    assert_eq!(serve.status.code(), Some(1));
    let check = Command::new(env!("CARGO_BIN_EXE_wsgi"))
        .args(["check", conf.to_str().unwrap()])
        .output()
        .unwrap();
    let check_text = String::from_utf8_lossy(&check.stdout);
    let error_line = check_text
        .lines()
        .find(|l| l.starts_with("error: "))
        .expect("wsgi check reports an error");
    let serve_text = String::from_utf8_lossy(&serve.stderr);
    assert!(
        serve_text.contains(error_line),
        "{serve_text}\nvs\n{check_text}"
    );
    assert!(serve.stdout.is_empty(), "nothing is served");

    let missing = Command::new(env!("CARGO_BIN_EXE_wsgi"))
        .args(["serve", "/no/such/app.wsgi", "--port", "0"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("`/no/such/app.wsgi` cannot be read")
    );
}

#[test]
fn access_log_in_combined_format() {
    let dir = scratch();
    let server = serve_app(dir.path(), &["--access-log", "-"]);
    let raw = server.raw(
        b"GET /hello?x=1 HTTP/1.1\r\nHost: x\r\nReferer: http://ref.example/\r\nUser-Agent: test-agent/1.0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(Response::parse(&raw).status, 200);
    assert_eq!(server.get("/missing").status, 404);
    let lines = access_lines(&server, 2, "127.0.0.1 ");
    assert!(lines[0].starts_with("127.0.0.1 - - ["), "{}", lines[0]);
    // Combined, then the duration in microseconds.
    let (combined, micros) = lines[0].rsplit_once(' ').unwrap();
    assert!(
        combined.ends_with(
            "] \"GET /hello?x=1 HTTP/1.1\" 200 14 \"http://ref.example/\" \"test-agent/1.0\""
        ),
        "{}",
        lines[0]
    );
    assert!(micros.parse::<u64>().is_ok_and(|us| us > 0), "{}", lines[0]);
    assert!(
        lines[1].contains("\"GET /missing HTTP/1.1\" 404 "),
        "{}",
        lines[1]
    );
}

/// The next `count` lines the server printed that start with `prefix` (the banner's rest
/// comes first), waiting at most 10 s.
fn access_lines(server: &Server, count: usize, prefix: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    (0..count)
        .map(|_| {
            let left = deadline.saturating_duration_since(Instant::now());
            wait::next_line(&server.stdout, left, |l| l.starts_with(prefix))
                .expect("an access log line")
        })
        .collect()
}

#[test]
fn access_log_in_a_format_of_ones_own_or_json() {
    let dir = scratch();
    let server = serve_app(
        dir.path(),
        &["--access-log", "-", "--access-log-format", "%>s %m %U%q"],
    );
    assert_eq!(server.get("/hello?x=1").status, 200);
    assert_eq!(
        access_lines(&server, 1, "200 "),
        vec!["200 GET /hello?x=1".to_string()]
    );
    drop(server);

    let server = serve_app(
        dir.path(),
        &["--access-log", "-", "--access-log-format", "json"],
    );
    let raw = server.raw(
        b"GET /hello?x=1 HTTP/1.1\r\nHost: x\r\nUser-Agent: test-agent/1.0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(Response::parse(&raw).status, 200);
    let line = access_lines(&server, 1, "{").remove(0);
    let record: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(record["method"], "GET");
    assert_eq!(record["path"], "/hello");
    assert_eq!(record["query"], "x=1");
    assert_eq!(record["status"], 200);
    assert_eq!(record["bytes"], 14);
    assert_eq!(record["remote_addr"], "127.0.0.1");
    assert_eq!(record["user_agent"], "test-agent/1.0");
    assert_eq!(record["referer"], serde_json::Value::Null);
    assert!(record["duration_us"].as_u64().is_some(), "{line}");
    assert!(
        record["time"].as_str().is_some_and(|t| t.contains('T')),
        "{line}"
    );
}

/// GET over a fresh connection; None while nothing listens (a restart in progress).
fn try_get(addr: SocketAddr, path: &str, host: &str) -> Option<Response> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    (!raw.is_empty()).then(|| Response::parse(&raw))
}

/// Polls (every 100 ms) until `check` holds for the response, at most 30 s.
fn eventually_answers(
    addr: SocketAddr,
    path: &str,
    host: &str,
    what: &str,
    check: impl Fn(&Response) -> bool,
) {
    let answered =
        wait::eventually_every(Duration::from_secs(30), Duration::from_millis(100), || {
            try_get(addr, path, host).is_some_and(|r| check(&r))
        });
    assert!(answered, "never happened: {what}");
}

fn touch_later(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(2))
        .unwrap();
}

#[test]
fn sighup_reloads_the_configuration_and_keeps_it_when_broken() {
    let dir = scratch();
    let app = write(&dir.path().join("app.wsgi"), APP);
    let conf_path = dir.path().join("site.conf");
    let one = format!("WSGIScriptAlias /one {}\n", app.display());
    write(&conf_path, &one);
    let server = Server::start(&[
        "--config",
        conf_path.to_str().unwrap(),
        "--port",
        "0",
        "--log-level",
        "info",
    ]);
    assert_eq!(server.get("/one/hello").status, 200);
    assert_eq!(server.get("/two/hello").status, 404);
    let hup = || server.sighup();
    write(
        &conf_path,
        &format!("{one}WSGIScriptAlias /two {}\n", app.display()),
    );
    hup();
    eventually_answers(
        server.addr,
        "/two/hello",
        "x",
        "/two served after SIGHUP",
        |r| r.status == 200,
    );

    write(&conf_path, "WSGIScriptAlias /broken\n");
    hup();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !server
        .stderr()
        .contains("still serving the previous configuration")
    {
        assert!(
            Instant::now() < deadline,
            "no refusal logged: {}",
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(server.get("/one/hello").status, 200);
    assert_eq!(server.get("/two/hello").status, 200);
}

/// Serves an app answering `MESSAGE PID` from `lib/helper.py` (`MESSAGE = b'one'`), with
/// `lib` on the python-path and `extra` flags; returns the server and `lib`.
fn serve_app_importing_helper(dir: &Path, extra: &[&str]) -> (Server, std::path::PathBuf) {
    let lib = dir.join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    write(&lib.join("helper.py"), "MESSAGE = b'one'\n");
    let app = write(
        &dir.join("app.wsgi"),
        "import helper, os\n\ndef application(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [helper.MESSAGE, b' ', str(os.getpid()).encode()]\n",
    );
    let mut args = vec![
        app.to_str().unwrap(),
        "--python-path",
        lib.to_str().unwrap(),
        "--port",
        "0",
        "--log-level",
        "info",
    ];
    args.extend_from_slice(extra);
    (Server::start(&args), lib)
}

/// The pid in an answer of the app from `serve_app_importing_helper` (`one 1234`).
fn answering_pid(text: &str) -> u32 {
    text.split(' ').nth(1).unwrap().parse().unwrap()
}

/// SIGHUP reloads the applications (a module they import changed: fresh Python) in a new
/// front process started beside the old one, the master staying; clients sending requests
/// all along, each on a new connection, see every one answered.
#[test]
fn sighup_reloads_the_apps_without_dropping_a_request() {
    let dir = scratch();
    let (server, lib) = serve_app_importing_helper(dir.path(), &["--threads", "4"]);
    let first = server.get("/").text();
    assert!(first.starts_with("one "), "{first}");
    let old_front = answering_pid(&first);
    assert_ne!(old_front, server.child.id(), "the master serves no request");
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (addr, stop) = (server.addr, stop.clone());
            std::thread::spawn(move || {
                let mut answers = Vec::new();
                while !stop.load(Ordering::Acquire) {
                    let mut s = TcpStream::connect(addr).expect("connect");
                    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                        .unwrap();
                    let raw = read_to_close(&mut s);
                    answers.push(Response::try_parse(&raw).map(|r| (r.status, r.text())));
                }
                answers
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // (a later mtime: the same size in the same second would leave the .pyc looking fresh)
    touch_later(&lib.join("helper.py"), "MESSAGE = b'two'\n");
    server.sighup();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !try_get(server.addr, "/", "x").is_some_and(|r| r.text().starts_with("two")) {
        assert!(
            Instant::now() < deadline,
            "never reloaded: {}",
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Release);
    let answers: Vec<_> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    let failed: Vec<_> = answers
        .iter()
        .filter(|a| !matches!(a, Ok((200, text)) if text.starts_with("one ") || text.starts_with("two ")))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {failed:?}\n{}",
        failed.len(),
        answers.len(),
        server
            .stderr()
            .lines()
            .filter(|l| !l.contains("sendfile"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let after = answers
        .iter()
        .filter(|a| matches!(a, Ok((_, t)) if t.starts_with("two")))
        .count();
    assert!(
        after > 0 && after < answers.len(),
        "{after} of {}",
        answers.len()
    );
    let new_front = answering_pid(&server.get("/").text());
    assert_ne!(new_front, old_front);
    assert!(
        !std::path::Path::new(&format!("/proc/{old_front}")).exists() || {
            // The old front may still be finishing; it must be gone soon.
            std::thread::sleep(Duration::from_secs(5));
            !std::path::Path::new(&format!("/proc/{old_front}")).exists()
        }
    );
    assert!(
        server
            .stderr()
            .contains("starting a new front process beside the running one"),
        "{}",
        server.stderr()
    );
}

#[test]
fn reload_on_changes_restarts_on_the_same_port() {
    let dir = scratch();
    let (server, lib) = serve_app_importing_helper(dir.path(), &["--reload-on-changes"]);
    assert!(server.get("/").text().starts_with("one "));
    // Let the watcher take its first snapshot.
    std::thread::sleep(Duration::from_millis(1500));
    touch_later(&lib.join("helper.py"), "MESSAGE = b'two'\n");
    eventually_answers(
        server.addr,
        "/",
        "x",
        "the changed module served after the restart",
        |r| r.text().starts_with("two "),
    );
    assert!(
        server
            .stderr()
            .contains("helper.py changed: the configuration is valid"),
        "{}",
        server.stderr()
    );
}

#[test]
fn python_home_and_python_path() {
    let dir = scratch();
    // The Python that venvs must be made with, as `wsgi --version` names it.
    let venv = venvs::make_venv(util::venv_python(), &dir.path().join("venv"));
    let lib = dir.path().join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    write(&lib.join("helper.py"), "WHERE = 'lib'\n");
    let app = write(
        &dir.path().join("app.wsgi"),
        "import sys, helper\n\ndef application(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [('%s|%s|%s' % (sys.prefix, helper.WHERE, sys.path[0])).encode()]\n",
    );
    let server = Server::start(&[
        app.to_str().unwrap(),
        "--python-home",
        venv.to_str().unwrap(),
        "--python-path",
        lib.to_str().unwrap(),
        "--port",
        "0",
        "--log-level",
        "warn",
    ]);
    let r = server.get("/");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.text(),
        format!("{}|lib|{}", venv.display(), lib.display())
    );

    // A venv root given as its python binary is refused before anything is served.
    let bad = Command::new(env!("CARGO_BIN_EXE_wsgi"))
        .args([
            "serve",
            app.to_str().unwrap(),
            "--port",
            "0",
            "--python-home",
        ])
        .arg(venv.join("bin/python"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(bad.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("error:"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

/// `wsgi serve --config` serves a site only when it implements every line: a line it does not
/// (here access control) stops the start with its file, line and what to do, instead of
/// serving the protected path to anyone.
/// Files run by their handler, with no `WSGIScriptAlias` at all: a `wsgi-script` file runs
/// embedded (the front starts its Python for it), a `WSGIHandlerScript` in the daemon process
/// group its `process-group=` names, with the file asked for as `SCRIPT_FILENAME`.
#[test]
fn handlers_run_files_embedded_and_in_a_daemon_process_group() {
    // Readable by all: as root, the server and its daemon process run as www-data.
    let dir = fs::scratch_world_readable("wsgi-serve-test-");
    let d = dir.path();
    let www = d.join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::set_permissions(&www, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let write = fs::write_world_readable;
    let show = "'pid=%d group=%s file=%s handler=%s script=%s' % (os.getpid(), environ['mod_wsgi.process_group'], environ['SCRIPT_FILENAME'], environ['mod_wsgi.request_handler'], environ['mod_wsgi.handler_script'])";
    write(
        &www.join("app.wsgi"),
        &format!(
            "import os\n\ndef application(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [({show}).encode()]\n"
        ),
    );
    write(
        &d.join("handler.wsgi"),
        &format!(
            "import os\n\ndef handle_request(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [({show}).encode()]\n"
        ),
    );
    write(&www.join("doc.page"), "a page\n");
    let conf = write(
        &d.join("site.conf"),
        &format!(
            "WSGIDaemonProcess pages threads=2\n\
             WSGIHandlerScript page-handler {d}/handler.wsgi process-group=pages\n\
             DocumentRoot {w}\n\
             <Directory {w}>\n\
             \x20   Options ExecCGI\n\
             \x20   AddHandler wsgi-script .wsgi\n\
             \x20   AddHandler page-handler .page\n\
             </Directory>\n",
            d = d.display(),
            w = www.display()
        ),
    );
    let launch = util::Launch {
        allow_root: false,
        ..util::PLAIN
    };
    let server = Server::start_with(
        &launch,
        &[
            "--config",
            conf.to_str().unwrap(),
            "--port",
            "0",
            "--log-level",
            "warn",
        ],
    );
    let field = |text: &str, name: &str| {
        text.split(' ')
            .find_map(|f| f.strip_prefix(&format!("{name}=")))
            .unwrap_or_default()
            .to_string()
    };
    let app = server.get("/app.wsgi");
    assert_eq!(app.status, 200, "{}", server.stderr());
    let app = app.text();
    assert_eq!(field(&app, "group"), "", "{app}");
    assert_eq!(
        field(&app, "file"),
        www.join("app.wsgi").display().to_string()
    );
    let page = server.get("/doc.page");
    assert_eq!(page.status, 200, "{}", server.stderr());
    let page = page.text();
    assert_eq!(field(&page, "group"), "pages", "{page}");
    assert_eq!(field(&page, "handler"), "page-handler", "{page}");
    assert_eq!(
        field(&page, "script"),
        d.join("handler.wsgi").display().to_string()
    );
    assert_eq!(field(&app, "handler"), "wsgi-script", "{app}");
    assert_eq!(
        field(&page, "file"),
        www.join("doc.page").display().to_string()
    );
    assert_ne!(field(&page, "pid"), field(&app, "pid"), "{page} {app}");
}

#[test]
fn config_lines_wsgi_serve_does_not_implement_stop_the_start() {
    let dir = scratch();
    let app = write(&dir.path().join("app.wsgi"), APP);
    let conf = write(
        &dir.path().join("site.conf"),
        &format!(
            "ServerSignature On\nWSGIScriptAlias / {}\n<Location /private>\n    AuthType Digest\n    Require expr true\n</Location>\n",
            app.display()
        ),
    );
    let err = Server::try_start_with(
        &util::PLAIN,
        &["--config", conf.to_str().unwrap(), "--port", "0"],
    )
    .err()
    .expect("refused");
    let shown = conf.display().to_string();
    assert!(
        err.contains("2 line(s) of the configuration are not implemented by wsgi serve"),
        "{err}"
    );
    assert!(
        err.contains(&format!("error: {shown}:4: `AuthType Digest`: only AuthType Basic with the file and wsgi providers is implemented by wsgi serve")),
        "{err}"
    );
    assert!(
        err.contains(&format!("error: {shown}:5: `Require expr true`")),
        "{err}"
    );
    assert!(err.contains("or remove the line"), "{err}");
    // Without those lines it serves, and says what it accepted without effect.
    let conf = write(
        &dir.path().join("site.conf"),
        &format!("ServerSignature On\nWSGIScriptAlias / {}\n", app.display()),
    );
    let server = Server::start(&["--config", conf.to_str().unwrap(), "--port", "0"]);
    assert_eq!(server.get("/hello").status, 200);
    assert!(
        server
            .stderr()
            .contains("ServerSignature has no effect under wsgi serve"),
        "{}",
        server.stderr()
    );
}

/// The embedded Python runs the `WSGIImportScript`s of `process-group=%{GLOBAL}` before it
/// serves (as mod_wsgi's children do), in their application group, and applies
/// `WSGISwitchInterval` to each interpreter.
#[test]
fn embedded_import_scripts_and_switch_interval() {
    let dir = scratch();
    let marker = dir.path().join("preloaded.txt");
    let preload = write(
        &dir.path().join("preload.py"),
        &format!(
            "import sys\nsys.preloaded_marker = True\nopen({:?}, 'w').write('yes')\n",
            marker.display().to_string()
        ),
    );
    let app = write(
        &dir.path().join("app.wsgi"),
        "import sys\ndef application(environ, start_response):\n    body = ('%s %s' % (getattr(sys, 'preloaded_marker', False), sys.getswitchinterval())).encode()\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [body]\n",
    );
    let conf = write(
        &dir.path().join("site.conf"),
        &format!(
            "WSGISwitchInterval 0.002\nWSGIImportScript {} process-group=%{{GLOBAL}} application-group=%{{GLOBAL}}\nWSGIApplicationGroup %{{GLOBAL}}\nWSGIScriptAlias / {}\n",
            preload.display(),
            app.display()
        ),
    );
    let server = Server::start(&["--config", conf.to_str().unwrap(), "--port", "0"]);
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "yes");
    assert_eq!(server.get("/").text(), "True 0.002");
}

/// `--trust-proxy-header`/`--trust-proxy` (and their directives): a trusted peer's
/// X-Forwarded-For/-Proto set REMOTE_ADDR and wsgi.url_scheme; an untrusted peer's are
/// removed, as mod_wsgi does.
#[test]
fn trusted_proxy_headers() {
    let dir = scratch();
    let app = write(
        &dir.path().join("proxy.wsgi"),
        "import json\ndef application(environ, start_response):\n    keys = ['REMOTE_ADDR', 'wsgi.url_scheme', 'HTTP_X_FORWARDED_FOR', 'HTTP_X_REAL_IP']\n    body = json.dumps({k: environ.get(k) for k in keys}).encode()\n    start_response('200 OK', [('Content-Type', 'application/json')])\n    return [body]\n",
    );
    let ask = |server: &Server| {
        server
            .request(
                "GET",
                "/",
                &[
                    ("X-Forwarded-For", "203.0.113.9"),
                    ("X-Forwarded-Proto", "https"),
                    ("X-Real-IP", "198.51.100.1"),
                ],
                b"",
            )
            .text()
    };
    let trusted = Server::start(&[
        app.to_str().unwrap(),
        "--port",
        "0",
        "--trust-proxy-header",
        "X-Forwarded-For",
        "--trust-proxy-header",
        "X-Forwarded-Proto",
        "--trust-proxy",
        "127.0.0.1",
    ]);
    assert_eq!(
        ask(&trusted),
        r#"{"REMOTE_ADDR": "203.0.113.9", "wsgi.url_scheme": "https", "HTTP_X_FORWARDED_FOR": "203.0.113.9", "HTTP_X_REAL_IP": null}"#
    );
    let conf = write(
        &dir.path().join("site.conf"),
        &format!(
            "WSGITrustedProxyHeaders X-Forwarded-For X-Forwarded-Proto\nWSGITrustedProxies 10.0.0.1\nWSGIScriptAlias / {}\n",
            app.display()
        ),
    );
    let untrusted = Server::start(&["--config", conf.to_str().unwrap(), "--port", "0"]);
    assert_eq!(
        ask(&untrusted),
        r#"{"REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http", "HTTP_X_FORWARDED_FOR": null, "HTTP_X_REAL_IP": null}"#
    );
}

#[test]
fn import_mod_wsgi_in_embedded_mode() {
    let dir = scratch();
    let app = write(&dir.path().join("mod_wsgi_app.wsgi"), util::MOD_WSGI_APP);
    let mut server = Server::start(&[
        app.to_str().unwrap(),
        "--port",
        "0",
        "--threads",
        "3",
        "--log-level",
        "warn",
    ]);
    // Embedded: process group '', one process, --threads threads.
    util::check_mod_wsgi_module(&server, "", 3);
    // The shutdown callbacks run when the front process stops (reason '' in embedded mode,
    // as mod_wsgi gives it in an Apache child).
    server.sigterm();
    assert!(server.wait_exit(Duration::from_secs(20)).success());
    let log = std::fs::read_to_string(dir.path().join("stopping.log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].ends_with(" process_stopping ''"), "{log}");
}

/// Large `bytes` an app yields go to the connection without a copy (the object itself), and
/// come out whole and in order; a Content-Length shorter than what is yielded cuts the chunk
/// it falls in; HEAD sends none of it; and once the front is done with the chunks, their
/// references are released (the next calls in the interpreter release them): the shared
/// object's reference count comes back to where it was.
#[test]
fn large_chunks_go_out_uncopied_and_are_released() {
    const SHARED: &str = r#"
import sys

CHUNK = bytes(range(256)) * 256  # 64 KiB, the same object every time

def application(environ, start_response):
    path = environ['PATH_INFO']
    if path == '/refs':
        body = b'%d' % sys.getrefcount(CHUNK)
        start_response('200 OK', [('Content-Length', str(len(body)))])
        return [body]
    if path == '/cut':
        start_response('200 OK', [('Content-Length', '100000')])
        return iter([CHUNK, CHUNK, CHUNK])
    start_response('200 OK', [('Content-Type', 'application/octet-stream')])
    return iter([CHUNK, b'small', CHUNK, CHUNK])
"#;
    let dir = scratch();
    let app = write(&dir.path().join("shared.wsgi"), SHARED);
    let server = Server::start(&[
        app.to_str().unwrap(),
        "--port",
        "0",
        "--threads",
        "1",
        "--log-level",
        "warn",
    ]);
    let chunk: Vec<u8> = (0..=255u8).cycle().take(65536).collect();
    let refs = |server: &Server| server.get("/refs").text();
    let before = refs(&server);
    let mut whole = chunk.clone();
    whole.extend_from_slice(b"small");
    whole.extend_from_slice(&chunk);
    whole.extend_from_slice(&chunk);
    for _ in 0..5 {
        let r = server.get("/big");
        assert_eq!(r.status, 200);
        assert!(
            r.body == whole,
            "{} bytes, not the chunks in order",
            r.body.len()
        );
        let cut = server.get("/cut");
        assert_eq!(cut.body.len(), 100_000);
        assert!(cut.body[..65536] == chunk[..] && cut.body[65536..] == chunk[..100_000 - 65536]);
    }
    let head = server.raw(b"HEAD /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let head = Response::parse_for(&head, true);
    assert_eq!((head.status, head.body.len()), (200, 0));
    // The first call after the responses releases what they left; the second sees the count.
    refs(&server);
    assert_eq!(refs(&server), before);
}

/// A script served at `current/app.wsgi`, as a deployment lays it out: `current` links to the
/// release being served. Each change is seen by the very next request, as mod_wsgi's `stat`
/// per request sees it (here the modification time is kept between changes, watched by
/// inotify): a switched link, an edit in place, a removed script (404) and a restored one.
#[test]
fn the_request_after_a_change_to_the_script_runs_the_changed_script() {
    let dir = scratch();
    let root = dir.path();
    let release = |name: &str, secs: u64| {
        let folder = fs::create_dir_world_readable(&root.join("releases").join(name));
        let script = fs::write_world_readable(
            &folder.join("app.wsgi"),
            &format!(
                "def application(environ, start_response):\n    \
                 start_response('200 OK', [('Content-Type', 'text/plain')])\n    \
                 return [b'release {name}']\n"
            ),
        );
        let f = std::fs::File::options().write(true).open(&script).unwrap();
        f.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(secs))
            .unwrap();
        script
    };
    release("1", 1_000);
    let two = release("2", 2_000);
    std::os::unix::fs::symlink("releases/1", root.join("current")).unwrap();
    let script = root.join("current/app.wsgi");
    let server = Server::start(&[
        script.to_str().unwrap(),
        "--port",
        "0",
        "--log-level",
        "warn",
    ]);
    let body = |server: &Server| {
        let r = server.get("/");
        (r.status, r.text())
    };
    assert_eq!(body(&server), (200, "release 1".to_string()));
    assert_eq!(body(&server), (200, "release 1".to_string()));

    std::os::unix::fs::symlink("releases/2", root.join("current.next")).unwrap();
    std::fs::rename(root.join("current.next"), root.join("current")).unwrap();
    assert_eq!(body(&server), (200, "release 2".to_string()));

    touch_later(
        &two,
        "def application(environ, start_response):\n    \
         start_response('200 OK', [('Content-Type', 'text/plain')])\n    \
         return [b'release 2, edited']\n",
    );
    assert_eq!(body(&server), (200, "release 2, edited".to_string()));

    std::fs::rename(&two, root.join("app.wsgi.away")).unwrap();
    assert_eq!(body(&server).0, 404);
    std::fs::rename(root.join("app.wsgi.away"), &two).unwrap();
    assert_eq!(body(&server), (200, "release 2, edited".to_string()));
}
