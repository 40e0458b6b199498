//! HTTP/2 in `wsgi serve`: curl with prior knowledge (h2c) and over TLS (ALPN), in embedded
//! and daemon mode; `--http 1|2`; a `--config` site's `Protocols` per virtual host; a PROXY
//! header before h2c; and abuse (streams beyond the limit with h2load, rapid reset and a
//! stream nobody reads with the `h2` crate as the client; SETTINGS, PING and CONTINUATION
//! floods as raw frames, the front's memory watched). Every server is the real `wsgi` binary
//! on loopback, started and stopped by its test.

#[path = "util/tls.rs"]
mod tls_util;
mod util;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use util::Server;
use wsgi_testkit::apps::PROTOCOL_APP;
use wsgi_testkit::curl::{assert_holds, check_bodies, curl};
use wsgi_testkit::{fs, http as kit_http, process};

/// A scratch folder with the app (and, once written, the upload bodies).
struct Site {
    dir: tempfile::TempDir,
    app: PathBuf,
}

impl Site {
    fn new() -> Site {
        let dir = fs::scratch_world_readable("wsgi-http2-");
        let app = fs::write_world_readable(&dir.path().join("app.wsgi"), PROTOCOL_APP);
        Site { dir, app }
    }
}

/// curl with `args` succeeds over HTTP `version`, its body holding each of `lines`.
fn answered(args: &[&str], version: &str, lines: &[&str]) {
    let got = curl(args);
    assert!(got.ok, "{}", got.stderr);
    assert_eq!(got.version, version);
    assert_holds(&got.text(), lines);
}

fn url(addr: SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}

/// The requests every HTTP/2 test makes on `base` (`http://...` or `https://...`) with
/// curl's `how` flags: the environ, both uploads, the streamed response.
fn check_http2(site: &Site, base: &str, how: &[&str], host: &str) {
    let mut args: Vec<&str> = how.to_vec();
    let target = format!("{base}/env/caf%C3%A9?x=1&y=%20");
    args.extend_from_slice(&["-H", "X-Test: yes", &target]);
    let env = curl(&args);
    assert!(env.ok, "{}", env.stderr);
    assert_eq!(env.version, "2");
    let host = format!("HTTP_HOST={host}\n");
    assert_holds(
        &env.text(),
        &[
            "SERVER_PROTOCOL=HTTP/2.0\n",
            "REQUEST_METHOD=GET\n",
            &host,
            "REQUEST_URI=/env/caf%C3%A9?x=1&y=%20\n",
            "SCRIPT_NAME=\n",
            "PATH_INFO=/env/caf\u{c3}\u{a9}\n",
            "QUERY_STRING=x=1&y=%20\n",
            "HTTP_X_TEST=yes\n",
        ],
    );
    check_bodies(site.dir.path(), base, how, "2");
}

fn serve(site: &Site, more: &[&str]) -> Server {
    let mut args = vec![
        site.app.to_str().unwrap(),
        "--port",
        "0",
        "--access-log",
        "-",
    ];
    args.extend_from_slice(more);
    if more.contains(&"--processes") && process::is_root() {
        // Daemon processes never run as root.
        args.extend_from_slice(&["--user", "nobody"]);
    }
    Server::start_with(&util::DAEMON, &args)
}

#[test]
fn h2c_beside_http1_in_embedded_and_daemon_mode() {
    let site = Site::new();
    for mode in [
        &["--threads", "4"][..],
        &["--processes", "1", "--threads", "4"],
    ] {
        let server = serve(&site, mode);
        let base = format!("http://{}", server.addr);
        let host = server.addr.to_string();
        check_http2(&site, &base, &["--http2-prior-knowledge"], &host);
        let line = server.access_line("GET /env/caf%C3%A9?x=1&y=%20 HTTP/2.0\" 200");
        assert!(line.contains("\"curl/"), "{line}");
        server.access_line("POST /upload HTTP/2.0\" 200");
        // HTTP/1.1 on the same port.
        let one = curl(&["--http1.1", &url(server.addr, "/env")]);
        assert!(one.ok, "{}", one.stderr);
        assert_eq!(one.version, "1.1");
        assert_holds(&one.text(), &["SERVER_PROTOCOL=HTTP/1.1\n"]);
        // h2load: many streams on a few connections, every one answered.
        let h2load = h2load(
            &["-n", "400", "-c", "4", "-m", "10"],
            &url(server.addr, "/env"),
        );
        assert!(h2load.contains("400 succeeded"), "{h2load}");
    }
}

/// `wsgi serve` with a certificate for `localhost`, and curl's flags to reach it.
fn serve_tls(site: &Site, more: &[&str]) -> (Server, Vec<String>) {
    let issued = tls_util::issue(site.dir.path(), "site", &["localhost"], false);
    if more.contains(&"--processes") {
        // The front reads the key as the user it serves as (`--user nobody`, as root).
        fs::chmod(&issued.key, 0o644);
    }
    let mut args = vec![
        "--ssl-certificate-file",
        issued.cert.to_str().unwrap(),
        "--ssl-certificate-key-file",
        issued.key.to_str().unwrap(),
    ];
    args.extend_from_slice(more);
    let server = serve(site, &args);
    let resolve = format!("localhost:{}:127.0.0.1", server.addr.port());
    (
        server,
        vec!["-k".to_string(), "--resolve".to_string(), resolve],
    )
}

#[test]
fn tls_alpn_offers_h2_and_http1_in_embedded_and_daemon_mode() {
    let site = Site::new();
    for mode in [
        &["--threads", "4"][..],
        &["--processes", "1", "--threads", "4"],
    ] {
        let (server, flags) = serve_tls(&site, mode);
        let base = format!("https://localhost:{}", server.addr.port());
        let mut how: Vec<&str> = flags.iter().map(String::as_str).collect();
        how.push("--http2");
        check_http2(
            &site,
            &base,
            &how,
            &format!("localhost:{}", server.addr.port()),
        );
        let env = format!("{base}/env");
        let lines = ["wsgi.url_scheme=https\n", "SERVER_PROTOCOL=HTTP/1.1\n"];
        let how = [&flags[0], &flags[1], &flags[2], "--http1.1", &env];
        answered(&how, "1.1", &lines);
    }
}

#[test]
fn http_1_never_speaks_http2_and_http_2_only_http2() {
    let site = Site::new();
    let one = serve(&site, &["--http", "1"]);
    let h2c = curl(&["--http2-prior-knowledge", &url(one.addr, "/env")]);
    assert!(!(h2c.ok && h2c.version == "2"), "h2c served with --http 1");
    let plain = curl(&[&url(one.addr, "/env")]);
    assert!(plain.ok && plain.version == "1.1", "{}", plain.stderr);
    let (tls_one, flags) = serve_tls(&site, &["--http", "1"]);
    let base = format!("https://localhost:{}/env", tls_one.addr.port());
    let alpn = curl(&[&flags[0], &flags[1], &flags[2], "--http2", &base]);
    assert!(alpn.ok, "{}", alpn.stderr);
    assert_eq!(alpn.version, "1.1", "ALPN chose h2 with --http 1");

    let two = serve(&site, &["--http", "2"]);
    let h2c = curl(&["--http2-prior-knowledge", &url(two.addr, "/env")]);
    assert!(h2c.ok && h2c.version == "2", "{}", h2c.stderr);
    let plain = curl(&["--http1.1", &url(two.addr, "/env")]);
    assert!(
        !plain.ok,
        "HTTP/1.1 answered with --http 2: {}",
        plain.text()
    );
    let (tls_two, flags) = serve_tls(&site, &["--http", "2"]);
    let base = format!("https://localhost:{}/env", tls_two.addr.port());
    let h2 = curl(&[&flags[0], &flags[1], &flags[2], "--http2", &base]);
    assert!(h2.ok && h2.version == "2", "{}", h2.stderr);
    let h1 = curl(&[&flags[0], &flags[1], &flags[2], "--http1.1", &base]);
    assert!(
        !(h1.ok && h1.version == "1.1"),
        "HTTP/1.1 over TLS with --http 2"
    );
}

#[test]
fn protocols_decide_per_virtual_host() {
    let site = Site::new();
    let (h2c, plain) = (kit_http::free_port(), kit_http::free_port());
    let conf = fs::write_world_readable(
        &site.dir.path().join("site.conf"),
        &format!(
            "Listen 127.0.0.1:{h2c}\nListen 127.0.0.1:{plain}\n\
             <VirtualHost *:{h2c}>\n    ServerName h2c.example\n    Protocols h2c http/1.1\n    ProtocolsHonorOrder On\n    WSGIScriptAlias / {app}\n</VirtualHost>\n\
             <VirtualHost *:{h2c}>\n    ServerName old.example\n    Protocols http/1.1\n    WSGIScriptAlias / {app}\n</VirtualHost>\n\
             <VirtualHost *:{plain}>\n    ServerName plain.example\n    WSGIScriptAlias / {app}\n</VirtualHost>\n",
            app = site.app.display()
        ),
    );
    let _server = util::serve_checked_config(&conf);
    let at = |port: u16, path: &str| format!("http://127.0.0.1:{port}{path}");
    // The host that lists h2c speaks HTTP/2 with prior knowledge.
    let env = curl(&[
        "--http2-prior-knowledge",
        "-H",
        "Host: h2c.example",
        &at(h2c, "/env"),
    ]);
    assert!(env.ok && env.version == "2", "{}", env.stderr);
    assert!(
        env.text()
            .contains("SERVER_PROTOCOL=HTTP/2.0\nREQUEST_METHOD=GET\nHTTP_HOST=h2c.example\n"),
        "{}",
        env.text()
    );
    // A host of the same port without it: 421 over HTTP/2, served over HTTP/1.1.
    let old = curl(&[
        "--http2-prior-knowledge",
        "-i",
        "-H",
        "Host: old.example",
        &at(h2c, "/env"),
    ]);
    assert!(old.text().starts_with("HTTP/2 421"), "{}", old.text());
    let old = curl(&["-H", "Host: old.example", &at(h2c, "/env")]);
    assert!(old.ok && old.version == "1.1", "{}", old.stderr);
    // A port whose host has Apache's default (`Protocols http/1.1`): no HTTP/2.
    let none = curl(&["--http2-prior-knowledge", &at(plain, "/env")]);
    assert!(
        !(none.ok && none.version == "2"),
        "h2c without Protocols h2c"
    );
    let none = curl(&[&at(plain, "/env")]);
    assert!(none.ok && none.version == "1.1", "{}", none.stderr);
}

/// A `--config` site of TLS virtual hosts on one port ([`tls_util::tls_site`]): `hosts` are
/// each host's `ServerName` and its further lines, after the server's `main` lines. Served
/// (once `wsgi check` accepts it) on the port returned.
fn serve_tls_hosts(site: &Site, main: &str, hosts: &[(&str, &str)]) -> (Server, u16) {
    let port = kit_http::free_port();
    let main = format!("Listen 127.0.0.1:{port}\n{main}");
    let conf = tls_util::tls_site(site.dir.path(), &site.app, &main, hosts);
    let conf = fs::write_world_readable(&site.dir.path().join("site.conf"), &conf);
    (util::serve_checked_config(&conf), port)
}

/// curl offering `h2` then `http/1.1` (`--http2`) to `name` (its SNI name and Host) at
/// 127.0.0.1:`port`: the version it spoke, which the application's `SERVER_PROTOCOL` says too.
fn curl_h2_version(name: &str, port: u16) -> String {
    let resolve = format!("{name}:{port}:127.0.0.1");
    let got = curl(&[
        "-k",
        "--resolve",
        &resolve,
        "--http2",
        &format!("https://{name}:{port}/env"),
    ]);
    assert!(got.ok, "{name}: {}", got.stderr);
    let protocol = match got.version.as_str() {
        "2" => "HTTP/2.0",
        _ => "HTTP/1.1",
    };
    assert_holds(
        &got.text(),
        &[
            &format!("SERVER_PROTOCOL={protocol}\n"),
            &format!("HTTP_HOST={name}:{port}\n"),
        ],
    );
    got.version
}

/// Two TLS virtual hosts on one port: ALPN answers with the `Protocols` of the host the
/// client's SNI name selects, whichever of them comes first in the file.
#[test]
fn alpn_follows_the_virtual_host_sni_selects() {
    let site = Site::new();
    for h2_first in [true, false] {
        let mut hosts = vec![
            ("h2.example", "Protocols h2 http/1.1\n"),
            ("old.example", "Protocols http/1.1\n"),
        ];
        if !h2_first {
            hosts.reverse();
        }
        let (_server, port) = serve_tls_hosts(&site, "", &hosts);
        assert_eq!(
            curl_h2_version("h2.example", port),
            "2",
            "h2 host first: {h2_first}"
        );
        assert_eq!(
            curl_h2_version("old.example", port),
            "1.1",
            "h2 host first: {h2_first}"
        );
        // openssl: the other order of preference; only `h2`, which the HTTP/1.1 host refuses;
        // a name no host has (the port's first host answers).
        assert_eq!(
            tls_util::openssl_alpn("h2.example", port, "http/1.1,h2").as_deref(),
            Ok("h2")
        );
        let refused = tls_util::openssl_alpn("old.example", port, "h2").unwrap_err();
        assert!(refused.contains("no application protocol"), "{refused}");
        let default = tls_util::openssl_alpn("unknown.example", port, "h2,http/1.1");
        let expected = if h2_first { "h2" } else { "http/1.1" };
        assert_eq!(
            default.as_deref(),
            Ok(expected),
            "h2 host first: {h2_first}"
        );
    }
}

/// `ProtocolsHonorOrder` per virtual host, inherited from the server: On, the host's order of
/// `Protocols` wins; Off, the client's.
#[test]
fn protocols_honor_order_decides_whose_order_wins() {
    let site = Site::new();
    let (_server, port) = serve_tls_hosts(
        &site,
        "Protocols http/1.1 h2\nProtocolsHonorOrder Off\n",
        &[
            ("on.example", "ProtocolsHonorOrder On\n"),
            ("off.example", ""),
            (
                "h2-on.example",
                "Protocols h2 http/1.1\nProtocolsHonorOrder on\n",
            ),
            ("h2-off.example", "Protocols h2 http/1.1\n"),
        ],
    );
    // curl offers h2 first.
    assert_eq!(curl_h2_version("on.example", port), "1.1");
    assert_eq!(curl_h2_version("off.example", port), "2");
    assert_eq!(curl_h2_version("h2-on.example", port), "2");
    assert_eq!(curl_h2_version("h2-off.example", port), "2");
    // openssl offering http/1.1 first.
    for (name, chosen) in [
        ("on.example", "http/1.1"),
        ("off.example", "http/1.1"),
        ("h2-on.example", "h2"),
        ("h2-off.example", "http/1.1"),
    ] {
        assert_eq!(
            tls_util::openssl_alpn(name, port, "http/1.1,h2").as_deref(),
            Ok(chosen),
            "{name}"
        );
    }
    assert_eq!(
        tls_util::openssl_alpn("on.example", port, "h2,http/1.1").as_deref(),
        Ok("http/1.1")
    );
}

#[test]
fn proxy_header_then_h2c_or_tls_h2() {
    let site = Site::new();
    let server = serve(&site, &["--proxy-protocol"]);
    let (tls, flags) = serve_tls(&site, &["--proxy-protocol"]);
    let https = format!("https://localhost:{}/env", tls.addr.port());
    let h2c = ["--http2-prior-knowledge", &url(server.addr, "/env")];
    let h2 = [&flags[0], &flags[1], &flags[2], "--http2", &https];
    for how in [&h2c[..], &h2[..]] {
        let mut args = vec!["--haproxy-protocol"];
        args.extend_from_slice(how);
        let lines = ["SERVER_PROTOCOL=HTTP/2.0\n", "REMOTE_ADDR=127.0.0.1\n"];
        answered(&args, "2", &lines);
    }
}

#[test]
fn a_header_list_over_max_header_size_is_refused_and_the_server_goes_on() {
    let site = Site::new();
    let server = serve(&site, &["--max-header-size", "8192"]);
    let big = format!("X-Big: {}", "a".repeat(20000));
    let refused = curl(&[
        "--http2-prior-knowledge",
        "-i",
        "-H",
        &big,
        &url(server.addr, "/env"),
    ]);
    assert!(
        refused.text().starts_with("HTTP/2 431"),
        "{} {}",
        refused.text(),
        refused.stderr
    );
    let fine = curl(&["--http2-prior-knowledge", &url(server.addr, "/env")]);
    assert!(fine.ok && fine.version == "2", "{}", fine.stderr);
}

/// Runs h2load with `args` against `target` (at most 120 s): its output.
fn h2load(args: &[&str], target: &str) -> String {
    let out = Command::new("h2load")
        .args(args)
        .arg(target)
        .output()
        .expect("h2load runs (Debian's nghttp2-client)");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// An HTTP/2 connection (the `h2` crate as the client) to `addr` that has had one `GET /env`
/// answered 200: its request handle, and the connection to drive.
async fn h2_after_one_get(
    addr: SocketAddr,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    h2::client::Connection<tokio::net::TcpStream>,
) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut client, mut conn) = h2::client::handshake(tcp).await.unwrap();
    let request = http::Request::get(format!("http://{addr}/env"))
        .body(())
        .unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    let response = tokio::select! {
        r = response => r.unwrap(),
        _ = &mut conn => panic!("the connection ended"),
    };
    assert_eq!(response.status(), 200);
    (client, conn)
}

/// How long one HTTP/1.1 request takes to be answered 200.
fn answered_within(addr: SocketAddr, path: &str) -> Duration {
    let began = Instant::now();
    let got = curl(&["--http1.1", &url(addr, path)]);
    assert!(got.ok, "{}", got.stderr);
    began.elapsed()
}

#[test]
fn streams_beyond_the_limit_wait_and_others_are_served() {
    let site = Site::new();
    let server = serve(
        &site,
        &["--threads", "8", "--http2-max-concurrent-streams", "10"],
    );
    // The limit is what the server announces.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let announced = runtime.block_on(async {
        // After a request, the server's SETTINGS have arrived.
        let (_client, conn) = h2_after_one_get(server.addr).await;
        conn.max_concurrent_send_streams()
    });
    assert_eq!(announced, 10);
    // 200 streams at once on one connection, each 200 ms of work: h2load opens them before
    // the server's SETTINGS arrive, the server refuses those beyond the limit
    // (REFUSED_STREAM, which h2load counts as failed) and answers the others, and another
    // client is answered meanwhile.
    let target = url(server.addr, "/slow?ms=200");
    let load = std::thread::spawn(move || h2load(&["-n", "200", "-c", "1", "-m", "200"], &target));
    std::thread::sleep(Duration::from_millis(500));
    let waited = answered_within(server.addr, "/env");
    assert!(
        waited < Duration::from_secs(5),
        "another client waited {waited:?}"
    );
    let out = load.join().unwrap();
    assert!(out.contains("200 done"), "{out}");
    assert!(out.contains(" 0 5xx"), "{out}");
    let succeeded: u32 = out
        .split(" succeeded")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!((10..200).contains(&succeeded), "{out}");
}

#[test]
fn rapid_reset_closes_that_connection_and_others_are_served() {
    let site = Site::new();
    let server = serve(&site, &["--threads", "4"]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (opened, ended) = runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let (client, conn) = h2::client::handshake(tcp).await.unwrap();
        let driver = tokio::spawn(conn);
        let mut opened = 0;
        let mut client = client;
        for _ in 0..5000 {
            let ready = tokio::time::timeout(Duration::from_secs(5), client.ready()).await;
            let Ok(Ok(ready)) = ready else { break };
            client = ready;
            let request = http::Request::post(format!("http://{}/slow?ms=1000", server.addr))
                .body(())
                .unwrap();
            let Ok((_, mut stream)) = client.send_request(request, false) else {
                break;
            };
            stream.send_reset(h2::Reason::CANCEL);
            opened += 1;
        }
        let ended = tokio::time::timeout(Duration::from_secs(10), driver).await;
        (opened, ended)
    });
    // The server ends the connection: its GOAWAY (ENHANCE_YOUR_CALM) reaches the client, or
    // the close finds the client still writing its resets.
    let ended = format!("{ended:?}");
    assert!(
        ["ENHANCE_YOUR_CALM", "BrokenPipe", "ConnectionReset"]
            .iter()
            .any(|e| ended.contains(e)),
        "{opened} streams opened and reset: {ended}"
    );
    // Other clients are served.
    let waited = answered_within(server.addr, "/env");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    let h2c = curl(&["--http2-prior-knowledge", &url(server.addr, "/env")]);
    assert!(h2c.ok && h2c.version == "2", "{}", h2c.stderr);
}

/// In embedded mode the one worker thread, in daemon mode the group's one turn (the front's
/// task writing the daemon's answer on): an unread stream holds it only until the write
/// timeout ends that response.
#[test]
fn a_stream_nobody_reads_holds_no_worker_for_long() {
    let limits = ["--socket-timeout", "2", "--busy-socket-timeout", "0"];
    unread_stream_is_ended(&["--threads", "1"], &limits);
    unread_stream_is_ended(&["--processes", "1", "--threads", "1"], &limits);
}

/// The same with the default --socket-timeout (60 s): the other client's request waits for
/// the worker, so the unread stream gets only --busy-socket-timeout (2 s here).
#[test]
fn while_requests_wait_a_stream_nobody_reads_is_ended_after_the_busy_timeout() {
    let limits = ["--busy-socket-timeout", "2"];
    unread_stream_is_ended(&["--threads", "1"], &limits);
    unread_stream_is_ended(&["--processes", "1", "--threads", "1"], &limits);
}

fn unread_stream_is_ended(workers: &[&str], limits: &[&str]) {
    let site = Site::new();
    let mut args = workers.to_vec();
    args.extend(limits);
    args.extend(["--response-min-rate", "0"]);
    let server = serve(&site, &args);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let addr = server.addr;
    runtime.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (client, conn) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(conn);
        let mut client = client.ready().await.unwrap();
        let request = http::Request::get(format!("http://{addr}/stream"))
            .body(())
            .unwrap();
        let (response, _) = client.send_request(request, true).unwrap();
        // The head arrives; the body is never read, so its window never opens again.
        let response = response.await.unwrap();
        assert_eq!(response.status(), 200);
        let _unread = response.into_body();
        // Another client is answered once the stalled response is ended (the write timeout,
        // or the busy one, 2 s, plus a little), though the only worker was writing it.
        let waited = tokio::task::spawn_blocking(move || answered_within(addr, "/env"))
            .await
            .unwrap();
        assert!(
            waited < Duration::from_secs(8),
            "{workers:?}: waited {waited:?}"
        );
        // And a second stream on the same connection is answered too.
        let mut client = client.ready().await.unwrap();
        let request = http::Request::get(format!("http://{addr}/env"))
            .body(())
            .unwrap();
        let (response, _) = client.send_request(request, true).unwrap();
        let response = tokio::time::timeout(Duration::from_secs(10), response)
            .await
            .expect("answered in time")
            .unwrap();
        assert_eq!(response.status(), 200);
    });
    let _ = server.stderr();
}

#[test]
fn an_idle_http2_connection_is_closed_after_the_header_timeout() {
    let site = Site::new();
    let server = serve(&site, &["--header-timeout", "1"]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr = server.addr;
    let lasted = runtime.block_on(async move {
        let (_client, conn) = h2_after_one_get(addr).await;
        // Nothing more is asked: the server says GOAWAY and closes, within a few ticks.
        let began = Instant::now();
        let ended = tokio::time::timeout(Duration::from_secs(10), conn).await;
        assert!(matches!(ended, Ok(Ok(()))), "{ended:?}");
        began.elapsed()
    });
    assert!(lasted < Duration::from_secs(5), "{lasted:?}");
}

/// The client's side of an HTTP/2 connection: the preface and an empty SETTINGS frame.
const CLIENT_PREFACE: &[u8] =
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// An HTTP/2 frame of `kind` with `flags` on `stream`, carrying `payload`.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut frame = vec![len[1], len[2], len[3], kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// The resident memory of process `pid`, in bytes (`VmRSS`).
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

/// The front process of `server` (`wsgi front-process`, the child of `wsgi serve` that holds
/// the connections).
fn front_pid(server: &Server) -> u32 {
    let fronts: Vec<u32> = process::children(server.child.id())
        .into_iter()
        .filter(|pid| process::cmdline(*pid).contains(" front-process "))
        .collect();
    assert_eq!(fronts.len(), 1, "front processes: {fronts:?}");
    fronts[0]
}

/// How a flood ([`flood`]) ended.
#[derive(Debug, PartialEq)]
enum Flooded {
    /// A write waited 2 s: the server stopped reading (its answers are not read, so it
    /// cannot write them: backpressure).
    Blocked,
    /// The server closed the connection (the write failed).
    Closed,
    /// Every byte was taken: the server kept reading without bound.
    AllTaken,
}

/// What a flood did: how it ended, the bytes written, and the front's largest `VmRSS`
/// seen meanwhile.
#[derive(Debug)]
struct Flood {
    ended: Flooded,
    sent: usize,
    peak_rss: u64,
}

/// Opens an HTTP/2 connection to `addr`, writes `start`, then `unit` again and again (up to
/// `max` bytes, in 64 KiB writes, for at most 30 s) without ever reading; `pid`'s `VmRSS` is
/// looked at after each write.
fn flood(addr: SocketAddr, pid: u32, start: &[u8], unit: &[u8], max: usize) -> Flood {
    use std::io::Write;
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    tcp.write_all(CLIENT_PREFACE).unwrap();
    tcp.write_all(start).unwrap();
    let batch = unit.repeat((64 * 1024 / unit.len()).max(1));
    let (mut sent, mut peak_rss) = (0, rss(pid));
    let began = Instant::now();
    let ended = loop {
        if sent >= max || began.elapsed() > Duration::from_secs(30) {
            break Flooded::AllTaken;
        }
        match tcp.write_all(&batch) {
            Ok(()) => sent += batch.len(),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break Flooded::Blocked;
            }
            Err(_) => break Flooded::Closed,
        }
        peak_rss = peak_rss.max(rss(pid));
    };
    peak_rss = peak_rss.max(rss(pid));
    Flood {
        ended,
        sent,
        peak_rss,
    }
}

/// The front's memory may grow by this much during a flood, at most.
const FLOOD_RSS_BOUND: u64 = 50 * 1024 * 1024;

/// Runs [`flood`] against a new server (embedded mode, `more` flags) while another client
/// asks for `/env` over HTTP/1.1 and h2c: both are answered within 5 s, and the front's
/// memory stays within [`FLOOD_RSS_BOUND`]. The flood's outcome.
fn flood_while_others_are_served(more: &[&str], start: &[u8], unit: &[u8], max: usize) -> Flood {
    let site = Site::new();
    let mut args = vec!["--threads", "4"];
    args.extend_from_slice(more);
    let server = serve(&site, &args);
    let pid = front_pid(&server);
    // The front has served once (its buffers and the app are in place).
    answered_within(server.addr, "/env");
    let before = rss(pid);
    let addr = server.addr;
    let (start, unit) = (start.to_vec(), unit.to_vec());
    let flooding = std::thread::spawn(move || flood(addr, pid, &start, &unit, max));
    std::thread::sleep(Duration::from_millis(300));
    let waited = answered_within(server.addr, "/env");
    assert!(
        waited < Duration::from_secs(5),
        "another client waited {waited:?}"
    );
    let began = Instant::now();
    let h2c = curl(&["--http2-prior-knowledge", &url(server.addr, "/env")]);
    assert!(h2c.ok && h2c.version == "2", "{}", h2c.stderr);
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "{:?}",
        began.elapsed()
    );
    let flood = flooding.join().unwrap();
    let grown = flood.peak_rss.saturating_sub(before);
    assert!(
        grown < FLOOD_RSS_BOUND,
        "the front grew by {} MiB: {flood:?}",
        grown >> 20
    );
    // Still served after the flood.
    let waited = answered_within(server.addr, "/env");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    flood
}

#[test]
fn a_settings_flood_is_not_buffered_and_others_are_served() {
    // Empty SETTINGS frames, each asking for an ACK nobody reads: the server stops reading
    // once its ACKs cannot be written (or closes). 64 MiB of frames (7 million) is far more
    // than the sockets' buffers hold, so taking them all would mean buffering without bound.
    let settings = frame(0x4, 0, 0, &[]);
    let flood = flood_while_others_are_served(&[], &[], &settings, 64 << 20);
    assert_ne!(flood.ended, Flooded::AllTaken, "{flood:?}");
}

#[test]
fn a_ping_flood_is_not_buffered_and_others_are_served() {
    let ping = frame(0x6, 0, 0, b"flooding");
    let flood = flood_while_others_are_served(&[], &[], &ping, 64 << 20);
    assert_ne!(flood.ended, Flooded::AllTaken, "{flood:?}");
}

#[test]
fn a_continuation_flood_is_closed_at_the_header_limit_and_others_are_served() {
    // HEADERS on stream 1 without END_HEADERS (GET / over http, indexed), then CONTINUATION
    // frames of literal headers (`x-flood`, 1000 bytes each, 16 a frame) forever: the header
    // list passes --max-header-size within a frame, and the server closes the connection.
    let headers = frame(0x1, 0x1, 1, &[0x82, 0x86, 0x84]);
    let mut field = vec![0x00, 0x07];
    field.extend_from_slice(b"x-flood");
    // 1000 as an HPACK integer with a 7-bit prefix.
    field.extend_from_slice(&[0x7f, 0xe9, 0x06]);
    field.extend_from_slice(&[b'a'; 1000]);
    let continuation = frame(0x9, 0, 1, &field.repeat(16));
    let flood = flood_while_others_are_served(
        &["--max-header-size", "8192"],
        &headers,
        &continuation,
        256 << 20,
    );
    assert_eq!(flood.ended, Flooded::Closed, "{flood:?}");
    // Closed long before the 256 MiB: what the sockets' buffers held, at most.
    assert!(flood.sent < 64 << 20, "{flood:?}");
}
