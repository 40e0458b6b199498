//! `wsgi serve --bind unix:/path`: served beside TCP, through the master and front processes,
//! with the file's mode and owner, the environ a proxy in front expects (and its
//! `X-Forwarded-For` trusted), the same slow-client limits as TCP, a stale file replaced, a
//! live socket and a file that is not a socket refused, the file removed at stop, and unix
//! sockets passed by systemd's socket activation. Every client is a real `UnixStream` with a
//! read timeout; only the servers these tests start are signalled.

#[path = "util/tls.rs"]
mod tls_util;
mod util;

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use util::Server;
use wsgi_testkit::{fs, process, wait};

/// Shows what a proxy in front cares about.
const APP: &str = r#"
def application(environ, start_response):
    keys = ['REMOTE_ADDR', 'REMOTE_PORT', 'SERVER_NAME', 'SERVER_PORT', 'SERVER_ADDR',
            'HTTP_HOST', 'wsgi.url_scheme', 'mod_wsgi.listener_port']
    if environ['REQUEST_METHOD'] == 'POST':
        keys.append('body')
        environ['body'] = environ['wsgi.input'].read().decode()
    body = ''.join('%s=%s\n' % (k, environ.get(k)) for k in keys).encode()
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])
    return [body]
"#;

/// A test's scratch folder (world-readable) with the application, and a socket path in it.
struct Site {
    dir: tempfile::TempDir,
    app: String,
    sock: std::path::PathBuf,
    /// `unix:PATH`, as `--bind` takes it.
    bind: String,
}

fn site() -> Site {
    let dir = fs::scratch_world_readable("wsgi-unix-");
    let app = fs::write_world_readable(&dir.path().join("app.wsgi"), APP);
    let sock = dir.path().join("app.sock");
    Site {
        bind: format!("unix:{}", sock.display()),
        app: app.to_str().unwrap().to_string(),
        sock,
        dir,
    }
}

/// `wsgi serve` of `site` on its unix socket and a TCP port (whose banner line
/// `util::Server` waits for), with `extra` flags.
fn serve(site: &Site, launch: &util::Launch, extra: &[&str]) -> Server {
    let mut args = vec![
        site.app.as_str(),
        "--bind",
        &site.bind,
        "--bind",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    Server::start_with(launch, &args)
}

/// Sends `request` over the unix socket at `path` and reads the answer to its end (the
/// request asks for `Connection: close`), within 10 s.
fn exchange(path: &Path, request: &[u8]) -> String {
    let mut s = UnixStream::connect(path)
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", path.display()));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("the answer within 10 s");
    String::from_utf8_lossy(&out).into_owned()
}

fn get(path: &Path, target: &str, extra: &str) -> String {
    exchange(
        path,
        format!("GET {target} HTTP/1.1\r\nHost: example.org\r\n{extra}Connection: close\r\n\r\n")
            .as_bytes(),
    )
}

/// The body of a whole response.
fn body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

/// `wsgi serve ARGS` run to its end: exit code and standard error.
fn refused(args: &[&str]) -> (Option<i32>, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wsgi"));
    command.arg("serve").args(args).stdin(Stdio::null());
    if process::is_root() {
        command.arg("--allow-root");
    }
    let out = command.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An owner to give the socket (`--unix-socket-owner`), with the uid and gid it means: as
/// root, `nobody:nogroup`; else only a group, this user's own.
fn other_owner() -> (String, u32, u32) {
    let uid = nix::unistd::Uid::effective().as_raw();
    if process::is_root() {
        let group = nix::unistd::Group::from_name("nogroup").unwrap();
        let user = nix::unistd::User::from_name("nobody").unwrap();
        let (group, user) = (
            group.expect("Debian has nogroup"),
            user.expect("and nobody"),
        );
        (
            "nobody:nogroup".to_string(),
            user.uid.as_raw(),
            group.gid.as_raw(),
        )
    } else {
        let gid = nix::unistd::Gid::effective().as_raw();
        (format!(":{gid}"), uid, gid)
    }
}

#[test]
fn unix_socket_beside_tcp_with_mode_owner_environ_and_trusted_proxy() {
    let site = site();
    let (sock, bind) = (&site.sock, &site.bind);
    let (owner, uid, gid) = other_owner();
    let server = serve(
        &site,
        &util::PLAIN,
        &[
            "--unix-socket-mode",
            "0620",
            "--unix-socket-owner",
            &owner,
            "--trust-proxy-header",
            "X-Forwarded-For",
            "--trust-proxy",
            "127.0.0.1",
            "--access-log",
            "-",
        ],
    );
    assert!(
        server.banner.contains(&format!("listening on {bind}")),
        "{:?}",
        server.banner
    );
    let meta = std::fs::metadata(sock).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()));
    assert_eq!(meta.permissions().mode() & 0o777, 0o620);
    assert_eq!((meta.uid(), meta.gid()), (uid, gid));

    // A unix-socket peer is local: REMOTE_ADDR 127.0.0.1, and SERVER_PORT 80 (gunicorn's).
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let r = get(sock, "/", "");
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    let expected = format!(
        "REMOTE_ADDR=127.0.0.1\nREMOTE_PORT=0\nSERVER_NAME={}\nSERVER_PORT=80\nSERVER_ADDR=127.0.0.1\nHTTP_HOST=example.org\nwsgi.url_scheme=http\nmod_wsgi.listener_port=80\n",
        hostname.trim()
    );
    assert_eq!(body(&r), expected);
    let line = server.access_line("\"GET / HTTP/1.1\"");
    assert!(
        line.starts_with("127.0.0.1 - - [") && line.contains("\" 200 "),
        "{line}"
    );

    // A proxy on the unix socket is trusted as 127.0.0.1: its X-Forwarded-For is the client.
    let r = get(sock, "/fwd", "X-Forwarded-For: 203.0.113.9\r\n");
    assert!(body(&r).starts_with("REMOTE_ADDR=203.0.113.9\n"), "{r}");
    let line = server.access_line("\"GET /fwd HTTP/1.1\"");
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");

    // A body, and keep-alive: two requests on one connection.
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /q HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 2, "{out}");
    assert!(out.contains("body=hello\n"), "{out}");

    // TCP is served beside it.
    assert_eq!(server.get_text("/").status, 200);

    // A clean stop removes the file.
    let mut server = server;
    server.sigterm();
    assert!(server.wait_exit(Duration::from_secs(30)).success());
    assert!(!sock.exists(), "the socket file is left after the stop");
}

/// Started as root without `--allow-root`: the socket is root's, in the group of the user
/// who serves (www-data), mode 0660, so a proxy running as www-data connects; the front
/// process, running as www-data, serves it.
#[test]
fn as_root_the_socket_is_for_the_serving_users_group() {
    let site = site();
    let sock = &site.sock;
    if !process::is_root() {
        // Not root: the socket is this user's (checked by the test above); nothing to change.
        let server = serve(&site, &util::PLAIN, &[]);
        let meta = std::fs::metadata(sock).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o660);
        assert_eq!(meta.uid(), nix::unistd::Uid::effective().as_raw());
        assert!(get(sock, "/", "").starts_with("HTTP/1.1 200 OK"));
        drop(server);
        return;
    }
    let www = nix::unistd::User::from_name("www-data")
        .unwrap()
        .expect("Debian has www-data");
    let launch = util::Launch {
        allow_root: false,
        ..util::PLAIN
    };
    let server = serve(&site, &launch, &[]);
    let meta = std::fs::metadata(sock).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!((meta.uid(), meta.gid()), (0, www.gid.as_raw()));
    // A client running as www-data connects (a child process that drops to it).
    let out = Command::new("setpriv")
        .args([
            &format!("--reuid={}", www.uid),
            &format!("--regid={}", www.gid),
            "--clear-groups",
            "/usr/bin/python3.11",
            "-c",
            "import socket, sys\ns = socket.socket(socket.AF_UNIX)\ns.settimeout(10)\ns.connect(sys.argv[1])\ns.sendall(b'GET / HTTP/1.1\\r\\nHost: a\\r\\nConnection: close\\r\\n\\r\\n')\nprint(s.recv(100).split(b'\\r\\n')[0].decode())",
            sock.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "HTTP/1.1 200 OK",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // nobody (not in the group) cannot.
    let out = Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "/usr/bin/python3.11",
            "-c",
            "import socket, sys\ns = socket.socket(socket.AF_UNIX)\ntry:\n    s.connect(sys.argv[1])\nexcept PermissionError:\n    print('denied')",
            sock.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "denied");
    drop(server);
}

#[test]
fn stale_socket_replaced_live_one_and_other_files_refused() {
    let site = site();
    let (dir, sock, bind) = (&site.dir, &site.sock, &site.bind);
    let app = Path::new(&site.app);

    // A file that is not a socket is never deleted.
    std::fs::write(sock, "precious").unwrap();
    let (code, err) = refused(&[app.to_str().unwrap(), "--bind", bind]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "--bind {bind}: the path exists and is not a socket (left as it is)"
        )),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(sock).unwrap(), "precious");
    std::fs::remove_file(sock).unwrap();

    // A socket file nothing accepts on (a server that died) is replaced.
    drop(UnixListener::bind(sock).unwrap());
    assert!(sock.exists());
    let server = serve(&site, &util::PLAIN, &[]);
    assert!(get(sock, "/", "").starts_with("HTTP/1.1 200 OK"));

    // A live one is refused, and left to the server that owns it.
    let (code, err) = refused(&[app.to_str().unwrap(), "--bind", bind]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "--bind {bind}: another server is listening on this socket: stop it first, or bind another path"
        )),
        "{err}"
    );
    assert!(get(sock, "/", "").starts_with("HTTP/1.1 200 OK"));

    // A missing folder, and TLS, are refused with what to do.
    let nowhere = format!("unix:{}/no/such/dir/app.sock", dir.path().display());
    let (code, err) = refused(&[app.to_str().unwrap(), "--bind", &nowhere]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("--bind {nowhere}: the folder does not exist")),
        "{err}"
    );
    let other = format!("unix:{}", dir.path().join("tls.sock").display());
    let issued = tls_util::issue(dir.path(), "server", &["localhost"], false);
    let (code, err) = refused(&[
        app.to_str().unwrap(),
        "--bind",
        &other,
        "--ssl-certificate-file",
        issued.cert.to_str().unwrap(),
        "--ssl-certificate-key-file",
        issued.key.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "--bind {other}: TLS is not served on unix sockets"
        )),
        "{err}"
    );
    assert!(!dir.path().join("tls.sock").exists());
    drop(server);
}

/// The header and body timeouts hold over a unix socket as over TCP: a head that trickles
/// is cut at `--header-timeout` (408 in the access log), a body that stalls gets 408 at
/// `--body-timeout`.
#[test]
fn slow_clients_are_cut_off_as_on_tcp() {
    let site = site();
    let sock = &site.sock;
    let server = serve(
        &site,
        &util::PLAIN,
        &[
            "--header-timeout",
            "1",
            "--body-timeout",
            "1",
            "--body-min-rate",
            "0",
            "--access-log",
            "-",
        ],
    );
    // A head that never ends: closed within the header timeout (with a margin).
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let began = Instant::now();
    s.write_all(b"GET /slow-head HTTP/1.1\r\nHost: a\r\n")
        .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let took = began.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let line = server.access_line("408");
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");

    // A body that stops coming: 408 at the body timeout.
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let began = Instant::now();
    s.write_all(b"POST /slow-body HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nonly this")
        .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let took = began.elapsed();
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 408 "), "{out}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    let line = server.access_line("\"POST /slow-body HTTP/1.1\" 408");
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
}

/// A unix socket passed by socket activation is served (by the front process the master
/// starts, and again after a reload), and its file is left to systemd at the stop.
#[test]
fn socket_activation_passes_a_unix_socket() {
    let dir = fs::scratch_world_readable("wsgi-unix-");
    let app = fs::write_world_readable(&dir.path().join("app.wsgi"), APP);
    let sock = dir.path().join("activated.sock");
    let mut child = util::serve_activated(sock.to_str().unwrap(), &app);
    let lines = process::lines(child.0.stdout.take().unwrap());
    let expected = format!("listening on unix:{}", sock.display());
    wait::next_line(&lines, Duration::from_secs(30), |l| l == expected)
        .expect("the banner within 30 s");
    let r = get(&sock, "/", "");
    assert!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
    assert!(r.contains("\nSERVER_PORT=80\n"), "{r}");
    // SIGHUP: a new front serves the same socket.
    let ino = std::fs::metadata(&sock).unwrap().ino();
    process::signal(child.0.id(), "-HUP");
    std::thread::sleep(Duration::from_millis(500));
    assert!(get(&sock, "/", "").starts_with("HTTP/1.1 200 OK"));
    assert_eq!(std::fs::metadata(&sock).unwrap().ino(), ino);
    process::signal(child.0.id(), "-TERM");
    assert!(
        process::wait_exit(&mut child.0, Duration::from_secs(30)).is_some(),
        "it did not stop"
    );
    // systemd's file: left for systemd to remove.
    assert!(sock.exists());
}

/// Reloads (SIGHUP) keep serving the same socket file, without a refused request; a clean
/// stop removes it.
#[test]
fn reload_keeps_the_socket_and_a_clean_stop_removes_it() {
    let site = site();
    let sock = &site.sock;
    let mut server = serve(&site, &util::PLAIN, &[]);
    let ino = std::fs::metadata(sock).unwrap().ino();
    // Requests go on through the reload.
    for _ in 0..3 {
        server.sighup();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            assert!(get(sock, "/", "").starts_with("HTTP/1.1 200 OK"));
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert_eq!(std::fs::metadata(sock).unwrap().ino(), ino);
    server.sigterm();
    assert!(server.wait_exit(Duration::from_secs(30)).success());
    assert!(!sock.exists());
}

/// Streams one body, in pieces of every size (two beyond the daemon protocol's 64 KiB frame),
/// with a `Content-Length` at `/length` and without one (chunked) elsewhere.
const STREAM_APP: &str = r#"
SIZES = [7, 40000, 200000, 65536, 1, 100000, 30000]
BODY = bytes(i % 251 for i in range(sum(SIZES)))

def application(environ, start_response):
    headers = [('Content-Type', 'application/octet-stream')]
    if environ['PATH_INFO'] == '/length':
        headers.append(('Content-Length', str(len(BODY))))
    start_response('200 OK', headers)
    at = 0
    for size in SIZES:
        yield BODY[at:at + size]
        at += size
"#;

/// A daemon process's large streamed responses reach a unix-socket client whole, with and
/// without a `Content-Length`, several on one connection and a HEAD between them (there the
/// front sends them on from pipes, never copying them), and a TCP client too.
#[test]
fn a_daemons_streamed_responses_arrive_whole() {
    let dir = fs::scratch_world_readable("wsgi-unix-");
    let app = fs::write_world_readable(&dir.path().join("stream.wsgi"), STREAM_APP);
    let sock = dir.path().join("app.sock");
    let bind = format!("unix:{}", sock.display());
    let mut args = vec![
        app.to_str().unwrap(),
        "--bind",
        &bind,
        "--bind",
        "127.0.0.1:0",
    ];
    args.extend(["--processes", "1", "--threads", "2"]);
    if process::is_root() {
        args.extend(["--user", "nobody"]);
    }
    let server = Server::start_with(&util::DAEMON, &args);
    let want: Vec<u8> = (0..435_544u32).map(|i| (i % 251) as u8).collect();
    let request = |method: &str, target: &str, last: bool| {
        let close = if last { "Connection: close\r\n" } else { "" };
        format!("{method} {target} HTTP/1.1\r\nHost: example.org\r\n{close}\r\n")
    };
    let pipelined = [
        request("GET", "/length", false),
        request("GET", "/chunked", false),
        request("HEAD", "/length", false),
        request("GET", "/length", true),
    ]
    .concat();
    let mut s = UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(pipelined.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("the answers within 20 s");
    for (i, (head, chunked)) in [(false, false), (false, true), (true, false), (false, false)]
        .into_iter()
        .enumerate()
    {
        let response = wsgi_testkit::http::Response::parse_for(&raw, head);
        assert_eq!(response.status, 200, "response {i}");
        assert!(response.complete, "response {i} was cut short");
        assert_eq!(
            response.header("transfer-encoding") == Some("chunked"),
            chunked,
            "response {i}"
        );
        if head {
            assert_eq!(response.header("content-length"), Some("435544"));
            assert!(response.body.is_empty());
        } else {
            assert_eq!(response.body.len(), want.len(), "response {i}");
            assert!(response.body == want, "response {i}: the body changed");
        }
        raw = response.rest;
    }
    assert!(raw.is_empty(), "nothing after the last answer");
    // HTTP/1.0: no chunks, the body ends with the connection.
    let mut s = UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"GET /chunked HTTP/1.0\r\nHost: example.org\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("the answer within 20 s");
    let response = wsgi_testkit::http::Response::parse(&raw);
    assert_eq!(response.header("transfer-encoding"), None, "HTTP/1.0");
    assert!(response.body == want, "HTTP/1.0: the body changed");
    for target in ["/length", "/chunked"] {
        let response = server.get(target);
        assert!(response.complete && response.body == want, "TCP {target}");
    }
}
