//! The PROXY protocol on `wsgi serve`'s listeners: `--proxy-protocol` with
//! `--proxy-allow-from`, and a `--config` site's `RemoteIPProxyProtocol` and
//! `RemoteIPProxyProtocolExceptions`. A real HAProxy (Debian's, as `scripts/setup-test-env.sh`
//! installs it) sends v1 and v2 headers to a server in embedded and daemon mode, over plain
//! TCP and TLS, for clients on other loopback addresses; raw sockets send what HAProxy never
//! would (no header, malformed ones, LOCAL, headers from a peer not allowed, a header that
//! never ends). Everything runs on 127.0.0.0/8; every process is the test's own.

#[path = "util/tls.rs"]
mod tls_util;
mod util;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use util::Server;
use wsgi_testkit::{fs, http, process, wait};

/// Answers `REMOTE_ADDR REMOTE_PORT PATH_INFO`, after appending the same line to the file
/// `environ['HITS']` names: what reached the application, whichever process ran it.
const APP: &str = "def application(environ, start_response):\n    line = '%s %s %s\\n' % (environ['REMOTE_ADDR'], environ['REMOTE_PORT'], environ.get('PATH_INFO', ''))\n    with open(environ['HITS'], 'a') as hits:\n        hits.write(line)\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [line.encode()]\n";

/// A folder with the app and its (world-writable) hits file.
struct Site {
    dir: tempfile::TempDir,
    app: PathBuf,
    hits: PathBuf,
}

impl Site {
    fn new() -> Site {
        let dir = fs::scratch_world_readable("wsgi-proxy-");
        let app = fs::write_world_readable(&dir.path().join("app.wsgi"), APP);
        let hits = dir.path().join("hits");
        fs::write(&hits, "");
        fs::chmod(&hits, 0o666);
        Site { dir, app, hits }
    }

    /// `wsgi serve app --port 0 --proxy-protocol --access-log - --setenv HITS ... MORE`, the
    /// access log giving the client, the connection's peer and the path.
    fn serve(&self, more: &[&str]) -> Server {
        let mut args = vec![
            self.app.to_str().unwrap(),
            "--port",
            "0",
            "--proxy-protocol",
            "--access-log",
            "-",
            "--access-log-format",
            "%h %{c}a %U",
            "--log-level",
            "info",
            "--setenv",
            "HITS",
            self.hits.to_str().unwrap(),
        ];
        args.extend_from_slice(more);
        Server::start_with(&util::DAEMON, &args)
    }

    /// The lines the application wrote.
    fn hits(&self) -> String {
        std::fs::read_to_string(&self.hits).unwrap()
    }
}

/// A TCP connection to `addr` from `from` (a loopback address), with 20 s read timeouts.
fn connect_from(from: Ipv4Addr, addr: SocketAddr) -> TcpStream {
    let s = util::connect_from(from, addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Sends `bytes` on `s` and reads until the server closes it (a reset counts as a close).
fn exchange(s: &mut TcpStream, bytes: &[u8]) -> String {
    // A refused connection may already be closed: the write then fails, and that is the answer.
    if s.write_all(bytes).is_err() {
        return String::new();
    }
    String::from_utf8_lossy(&http::read_to_close(s)).into_owned()
}

/// `GET path` (closing, with the `extra` header lines), sent after `header` on a new
/// connection from `from` to `addr`: the client's own port, and the whole answer as text
/// (empty when the server closed without one).
fn ask(from: Ipv4Addr, addr: SocketAddr, header: &[u8], path: &str, extra: &str) -> (u16, String) {
    let mut s = connect_from(from, addr);
    let port = s.local_addr().unwrap().port();
    let mut bytes = header.to_vec();
    bytes.extend_from_slice(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}Connection: close\r\n\r\n")
            .as_bytes(),
    );
    (port, exchange(&mut s, &bytes))
}

/// [`ask`] with no extra header lines: the answer.
fn send(from: Ipv4Addr, addr: SocketAddr, header: &[u8], path: &str) -> String {
    ask(from, addr, header, path, "").1
}

/// The body of an answer (chunks joined), or the whole text when it has no head.
fn body(answer: &str) -> String {
    if answer.contains("\r\n\r\n") {
        http::Response::parse(answer.as_bytes()).text()
    } else {
        answer.to_string()
    }
}

/// A v2 PROXY header: `command` 0 (LOCAL) or 1 (PROXY), address family byte `family`
/// (0x11: TCP over IPv4, 0x21: TCP over IPv6, 0x00: UNSPEC), then `addresses`.
fn v2(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x20 | command);
    h.push(family);
    h.extend_from_slice(&u16::try_from(addresses.len()).unwrap().to_be_bytes());
    h.extend_from_slice(addresses);
    h
}

/// A v2 PROXY header for a TCP client `src` over IPv4 (to 127.0.0.1:80).
fn v2_tcp4(src: SocketAddr) -> Vec<u8> {
    let SocketAddr::V4(src) = src else {
        panic!("{src} is no IPv4 address")
    };
    let mut a = src.ip().octets().to_vec();
    a.extend_from_slice(&[127, 0, 0, 1]);
    a.extend_from_slice(&src.port().to_be_bytes());
    a.extend_from_slice(&80u16.to_be_bytes());
    v2(1, 0x11, &a)
}

/// HAProxy started by the test in the foreground, in TCP mode (a layer 4 balancer, as PROXY
/// protocol users run it) on a free port of 127.0.0.1, with `server` as its one server line
/// and HTTP health checks of `/check` every 300 ms; killed and reaped when dropped.
struct Haproxy {
    _child: util::Started,
    addr: SocketAddr,
    log: PathBuf,
}

impl Haproxy {
    fn start(dir: &Path, server: &str) -> Haproxy {
        let addr = SocketAddr::from(([127, 0, 0, 1], http::free_port()));
        let d = dir.display();
        let conf = format!(
            "global\n    log stderr format raw local0 info\n    pidfile {d}/haproxy.pid\ndefaults\n    mode tcp\n    log global\n    option tcplog\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\nfrontend lb\n    bind {addr}\n    default_backend site\nbackend site\n    option httpchk\n    http-check send meth GET uri /check ver HTTP/1.1 hdr Host localhost\n    {server} check inter 300ms\n"
        );
        let conf_path = fs::write_world_readable(&dir.join("haproxy.cfg"), &conf);
        let log = dir.join("haproxy.log");
        let child = Command::new("/usr/sbin/haproxy")
            .args(["-db", "-f", conf_path.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("HAProxy runs: scripts/setup-test-env.sh installs Debian's haproxy");
        let haproxy = Haproxy {
            _child: util::Started(child),
            addr,
            log,
        };
        assert!(
            wait::eventually(Duration::from_secs(20), || TcpStream::connect(addr).is_ok()),
            "HAProxy does not accept on {addr}: {}",
            haproxy.log()
        );
        haproxy
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A client on 127.0.0.2 through HAProxy with `send-proxy` then `send-proxy-v2` (`tls`: to
/// the server's TLS listener): the application and the access log (`%h`) see 127.0.0.2 and
/// the client's own port, `%{c}a` HAProxy's address; HAProxy's health checks (v1 `UNKNOWN`, v2 `LOCAL`) are served with the
/// socket's own address.
fn through_haproxy(site: &Site, server: &Server, tls: bool) {
    for send in ["send-proxy", "send-proxy-v2"] {
        let ssl = if tls { " ssl verify none" } else { "" };
        let haproxy = Haproxy::start(
            site.dir.path(),
            &format!("server wsgi {}{ssl} {send}", server.addr),
        );
        let path = format!("/who-{send}");
        let (port, answer) = ask(Ipv4Addr::new(127, 0, 0, 2), haproxy.addr, b"", &path, "");
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "{send}: {answer:?}\nHAProxy: {}\nserver: {}",
            haproxy.log(),
            server.stderr()
        );
        assert_eq!(
            body(&answer),
            format!("127.0.0.2 {port} {path}\n"),
            "{send}"
        );
        // The client, and the connection's own peer: HAProxy.
        assert_eq!(
            server.access_line(&path),
            format!("127.0.0.2 127.0.0.1 {path}")
        );
        // The health checks, which carry no client, reached the app from the socket's peer.
        assert!(
            wait::eventually(Duration::from_secs(10), || site
                .hits()
                .lines()
                .any(|l| l.starts_with("127.0.0.1 ") && l.ends_with(" /check"))),
            "{send}: no health check served: {}\nHAProxy: {}\nserver: {}",
            site.hits(),
            haproxy.log(),
            server.stderr()
        );
        drop(haproxy);
        fs::write(&site.hits, "");
    }
}

#[test]
fn haproxy_send_proxy_v1_and_v2_give_the_app_the_client_address() {
    let site = Site::new();
    let server = site.serve(&[]);
    assert!(
        server
            .banner
            .iter()
            .any(|l| l == "PROXY protocol (v1, v2) required on every listener, from 127.0.0.1, ::1"),
        "{:?}",
        server.banner
    );
    through_haproxy(&site, &server, false);
}

#[test]
fn haproxy_send_proxy_in_daemon_mode() {
    let site = Site::new();
    // Daemon processes never run as root.
    let user: &[&str] = if process::is_root() {
        &["--user", "nobody"]
    } else {
        &[]
    };
    let server = site.serve(&[&["--processes", "1", "--threads", "2"], user].concat());
    through_haproxy(&site, &server, false);
}

#[test]
fn haproxy_send_proxy_to_a_tls_listener_sends_the_header_before_the_handshake() {
    let site = Site::new();
    let issued = tls_util::issue(site.dir.path(), "site", &["localhost"], false);
    let server = site.serve(&[
        "--ssl-certificate-file",
        issued.cert.to_str().unwrap(),
        "--ssl-certificate-key-file",
        issued.key.to_str().unwrap(),
    ]);
    through_haproxy(&site, &server, true);
}

/// No header, a malformed one, or one that is not a PROXY header at all: the connection is
/// closed without an answer, and the application never hears of it.
#[test]
fn connections_without_a_valid_header_are_closed_and_reach_nothing() {
    let site = Site::new();
    let server = site.serve(&[]);
    let local = Ipv4Addr::LOCALHOST;
    let cases: [(&str, &[u8]); 5] = [
        ("/none", b""),
        (
            "/v1-bad-address",
            b"PROXY TCP4 10.0.0.300 127.0.0.1 5000 80\r\n",
        ),
        (
            "/v1-bad-protocol",
            b"PROXY UDP4 10.0.0.3 127.0.0.1 5000 80\r\n",
        ),
        ("/v1-no-crlf", b"PROXY TCP4 10.0.0.3 127.0.0.1 5000 80\n"),
        (
            "/v2-bad-version",
            b"\r\n\r\n\0\r\nQUIT\n\x11\x11\x00\x0c\x0a\x00\x00\x03\x7f\x00\x00\x01\x13\x88\x00\x50",
        ),
    ];
    for (path, header) in cases {
        let answer = send(local, server.addr, header, path);
        assert_eq!(answer, "", "{path}: answered");
    }
    // A valid header still works on the same server.
    let answer = send(
        local,
        server.addr,
        b"PROXY TCP4 192.0.2.44 127.0.0.1 5000 80\r\n",
        "/good",
    );
    assert_eq!(body(&answer), "192.0.2.44 5000 /good\n", "{answer}");
    assert_eq!(site.hits(), "192.0.2.44 5000 /good\n");
    let stderr = server.stderr();
    assert!(
        stderr.contains("PROXY protocol: no PROXY header"),
        "{stderr}"
    );
    assert!(
        stderr.contains("PROXY protocol: a malformed v1 header"),
        "{stderr}"
    );
    assert!(
        stderr.contains("PROXY protocol: a malformed v2 header"),
        "{stderr}"
    );
}

/// With `--proxy-allow-from 127.0.0.3`, a header from 127.0.0.1 is refused (the connection is
/// closed before it is read); from 127.0.0.3 it is taken.
#[test]
fn a_header_from_a_peer_not_allowed_is_refused() {
    let site = Site::new();
    let server = site.serve(&["--proxy-allow-from", "127.0.0.3"]);
    let spoofed = b"PROXY TCP4 203.0.113.9 127.0.0.1 4000 80\r\n";
    assert_eq!(
        send(Ipv4Addr::LOCALHOST, server.addr, spoofed, "/spoofed"),
        ""
    );
    let answer = send(
        Ipv4Addr::new(127, 0, 0, 3),
        server.addr,
        spoofed,
        "/allowed",
    );
    assert_eq!(body(&answer), "203.0.113.9 4000 /allowed\n", "{answer}");
    assert_eq!(site.hits(), "203.0.113.9 4000 /allowed\n");
    assert!(
        server.stderr().contains("peer=127.0.0.1:")
            && server
                .stderr()
                .contains("not in --proxy-allow-from: refused"),
        "{}",
        server.stderr()
    );
}

/// A v2 `LOCAL` header (a balancer's own health check) and a v1 `UNKNOWN` one keep the
/// socket's addresses; a v2 header for an IPv6 client gives that client.
#[test]
fn local_and_unknown_headers_keep_the_socket_address() {
    let site = Site::new();
    let server = site.serve(&[]);
    for (header, path) in [
        (v2(0, 0x00, &[]), "/local"),
        (b"PROXY UNKNOWN\r\n".to_vec(), "/unknown"),
    ] {
        let (port, answer) = ask(Ipv4Addr::LOCALHOST, server.addr, &header, path, "");
        let expected = format!("127.0.0.1 {port} {path}\n");
        assert_eq!(body(&answer), expected, "{answer}");
    }
    let mut six = "2001:db8::7"
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .octets()
        .to_vec();
    six.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    six.extend_from_slice(&[0x1f, 0x90, 0x00, 0x50]);
    let answer = send(Ipv4Addr::LOCALHOST, server.addr, &v2(1, 0x21, &six), "/six");
    assert_eq!(body(&answer), "2001:db8::7 8080 /six\n", "{answer}");
    // Keep-alive: one header, then several requests, all from the header's client.
    let mut s = connect_from(Ipv4Addr::LOCALHOST, server.addr);
    let mut bytes = v2_tcp4("192.0.2.5:6000".parse().unwrap());
    bytes.extend_from_slice(b"GET /one HTTP/1.1\r\nHost: localhost\r\n\r\n");
    bytes.extend_from_slice(b"GET /two HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let answer = exchange(&mut s, &bytes);
    assert!(answer.contains("192.0.2.5 6000 /one\n"), "{answer}");
    assert!(answer.contains("192.0.2.5 6000 /two\n"), "{answer}");
}

/// A client that starts a header and never finishes it is closed at the header timeout,
/// while others are served meanwhile.
#[test]
fn a_header_that_never_ends_is_cut_off_at_the_header_timeout() {
    let site = Site::new();
    let server = site.serve(&["--header-timeout", "2"]);
    let mut stalled = connect_from(Ipv4Addr::LOCALHOST, server.addr);
    stalled.write_all(b"PROXY TCP4 192.0.2.1 127.0").unwrap();
    let began = Instant::now();
    for i in 0..5 {
        let path = format!("/meanwhile-{i}");
        let asked = Instant::now();
        let answer = send(
            Ipv4Addr::LOCALHOST,
            server.addr,
            b"PROXY TCP4 192.0.2.2 127.0.0.1 7000 80\r\n",
            &path,
        );
        assert_eq!(body(&answer), format!("192.0.2.2 7000 {path}\n"));
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "{:?}",
            asked.elapsed()
        );
    }
    let mut rest = Vec::new();
    let read = stalled.read_to_end(&mut rest);
    let waited = began.elapsed();
    assert!(
        matches!(read, Ok(0)) || read.is_err() && rest.is_empty(),
        "{read:?} {rest:?}"
    );
    assert!(
        waited > Duration::from_millis(1500) && waited < Duration::from_secs(6),
        "closed after {waited:?}"
    );
    assert!(!site.hits().contains("192.0.2.1"));
    // The log line is written as the connection closes; the reader of the server's output may
    // take it a moment later.
    assert!(
        wait::eventually(Duration::from_secs(10), || server.stderr().contains(
            "PROXY protocol: no whole PROXY header within the header timeout: closed"
        )),
        "{}",
        server.stderr()
    );
}

/// A `--config` site: `RemoteIPProxyProtocol On` in the `<VirtualHost>` of one `Listen`
/// port makes headers required there (but for `RemoteIPProxyProtocolExceptions`), and not on
/// the other port; `wsgi check` accepts the site.
#[test]
fn remoteip_proxy_protocol_in_a_config_site() {
    let site = Site::new();
    let (on, off) = (http::free_port(), http::free_port());
    let conf = fs::write_world_readable(
        &site.dir.path().join("site.conf"),
        &format!(
            "Listen 127.0.0.1:{on}\nListen 127.0.0.1:{off}\n\
             <VirtualHost *:{on}>\n    ServerName proxied.example\n    RemoteIPProxyProtocol On\n    RemoteIPProxyProtocolExceptions 127.0.0.4\n    SetEnv HITS {hits}\n    WSGIScriptAlias / {app}\n</VirtualHost>\n\
             <VirtualHost *:{off}>\n    ServerName direct.example\n    SetEnv HITS {hits}\n    WSGIScriptAlias / {app}\n</VirtualHost>\n",
            hits = site.hits.display(),
            app = site.app.display()
        ),
    );
    let server = util::serve_checked_config(&conf);
    let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let header = b"PROXY TCP4 198.51.100.8 127.0.0.1 9000 80\r\n";
    let local = Ipv4Addr::LOCALHOST;
    // On the proxied port: the header's client; no header, closed.
    let answer = send(local, at(on), header, "/proxied");
    assert_eq!(body(&answer), "198.51.100.8 9000 /proxied\n", "{answer}");
    assert_eq!(send(local, at(on), b"", "/no-header"), "");
    // An exception connects without one (its header would not be read).
    let (port, answer) = ask(Ipv4Addr::new(127, 0, 0, 4), at(on), b"", "/exception", "");
    let expected = format!("127.0.0.4 {port} /exception\n");
    assert_eq!(body(&answer), expected, "{answer}");
    // The other port speaks plain HTTP: a header there is no request line.
    let (port, answer) = ask(local, at(off), b"", "/direct", "");
    assert_eq!(
        body(&answer),
        format!("127.0.0.1 {port} /direct\n"),
        "{answer}"
    );
    let answer = send(local, at(off), header, "/header-on-plain");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let hits = site.hits();
    assert!(
        !hits.contains("/no-header") && !hits.contains("/header-on-plain"),
        "{hits}"
    );
    assert!(
        server.stderr().contains("PROXY protocol: no PROXY header"),
        "{}",
        server.stderr()
    );
}

/// The header's client is the peer everything else judges, as mod_remoteip makes it under
/// Apache: `Require ip` grants or refuses it, and `WSGITrustedProxies` decides from it whether
/// its `X-Forwarded-For` is believed. Here `RemoteIPProxyProtocol On` is in the server config
/// (every address).
#[test]
fn the_header_client_is_the_peer_require_and_trusted_proxies_judge() {
    let site = Site::new();
    let port = http::free_port();
    let conf = fs::write_world_readable(
        &site.dir.path().join("site.conf"),
        &format!(
            "Listen 127.0.0.1:{port}\nRemoteIPProxyProtocol On\nSetEnv HITS {hits}\n\
             WSGITrustedProxyHeaders X-Forwarded-For\nWSGITrustedProxies 192.0.2.0/24\n\
             WSGIScriptAlias / {app}\n<Location /private>\n    Require ip 192.0.2.0/24\n</Location>\n",
            hits = site.hits.display(),
            app = site.app.display()
        ),
    );
    let server = Server::start_with(
        &util::DAEMON,
        &["--config", conf.to_str().unwrap(), "--log-level", "info"],
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let ask = |client: &str, path: &str, extra: &str| {
        let header = v2_tcp4(client.parse().unwrap());
        ask(Ipv4Addr::LOCALHOST, addr, &header, path, extra).1
    };
    // Require ip: the header's client, not the socket's 127.0.0.1.
    let answer = ask("192.0.2.9:1000", "/private", "");
    assert_eq!(
        body(&answer),
        "192.0.2.9 1000 /private\n",
        "{answer}\n{}",
        server.stderr()
    );
    let answer = ask("198.51.100.1:1000", "/private", "");
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    // X-Forwarded-For: believed from a trusted header client only.
    let xff = "X-Forwarded-For: 203.0.113.5\r\n";
    let answer = ask("192.0.2.9:1000", "/forwarded", xff);
    assert!(body(&answer).starts_with("203.0.113.5 "), "{answer}");
    let answer = ask("198.51.100.1:1000", "/forwarded", xff);
    assert_eq!(body(&answer), "198.51.100.1 1000 /forwarded\n", "{answer}");
}
