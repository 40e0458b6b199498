//! HTTPS in `wsgi serve`: mod_wsgi-express's `--ssl-certificate-file` flags and mod_ssl's
//! `SSLEngine on` virtual hosts of a `--config` site, over real TLS with rustls as the client
//! (certificates made by rcgen for each test).

#[path = "util/tls.rs"]
mod tls_util;
mod util;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tls_util::{BOTH, connect, exchange, issue, openssl_version, openssl_versions};
use util::Server;
use wsgi_testkit::fs;
use wsgi_testkit::http::{self, Response};

/// An app answering with the environ's values for `keys`, one `NAME=value` line each, then
/// `site=<tag>`.
fn environ_app(dir: &Path, name: &str, tag: &str) -> PathBuf {
    fs::write_world_readable(
        &dir.join(name),
        &format!(
            "KEYS = ['wsgi.url_scheme', 'HTTPS', 'REQUEST_SCHEME', 'SERVER_NAME', 'SERVER_PORT', 'HTTP_HOST', 'SSL_TLS_SNI']\n\ndef application(environ, start_response):\n    body = ''.join('%s=%s\\n' % (k, environ.get(k, '<unset>')) for k in KEYS) + 'site={tag}\\n'\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [body.encode()]\n"
        ),
    )
}

/// `wsgi serve app` with the certificate flags for `issued`, and `more` arguments.
fn serve_https(app: &Path, issued: &tls_util::Issued, more: &[&str]) -> Server {
    serve_https_as(&util::PLAIN, app, issued, more)
}

/// [`serve_https`], started as `launch` says.
fn serve_https_as(
    launch: &util::Launch,
    app: &Path,
    issued: &tls_util::Issued,
    more: &[&str],
) -> Server {
    let mut args = vec![
        app.to_str().unwrap(),
        "--port",
        "0",
        "--ssl-certificate-file",
        issued.cert.to_str().unwrap(),
        "--ssl-certificate-key-file",
        issued.key.to_str().unwrap(),
    ];
    args.extend_from_slice(more);
    Server::start_with(launch, &args)
}

/// `GET /` from `server` for `localhost`, over TLS 1.2 or 1.3, trusting `issued`'s root.
fn get_localhost(server: &Server, issued: &tls_util::Issued) -> tls_util::Exchange {
    exchange(
        server.addr,
        "localhost",
        &[&issued.root],
        BOTH,
        &http::get_request("/", "localhost"),
    )
    .unwrap()
}

/// Started as root without `--allow-root`, the server serves as www-data, but reads its key
/// first, as Apache does: a key only root may read (mode 0600, as `issue` writes it) serves.
#[test]
fn a_key_only_root_reads_serves_once_the_server_gives_up_root() {
    if !wsgi_testkit::process::is_root() {
        eprintln!("skipped: a key only root may read, and a server that gives up root, need root");
        return;
    }
    let dir = fs::scratch_world_readable("wsgi-tls-");
    let app = fs::write_world_readable(
        &dir.path().join("uid.wsgi"),
        "import os\ndef application(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [b'uid=%d' % os.getuid()]\n",
    );
    let issued = issue(dir.path(), "site", &["localhost"], false);
    let as_www_data = util::Launch {
        allow_root: false,
        ..util::PLAIN
    };
    let server = serve_https_as(&as_www_data, &app, &issued, &[]);
    let answer = get_localhost(&server, &issued);
    assert_eq!(answer.presented, issued.leaf);
    let response = Response::parse(&answer.raw);
    assert_eq!(response.status, 200, "{}", response.text());
    let uid = response.text();
    assert!(
        uid.starts_with("uid=") && uid != "uid=0",
        "served as root: {uid}"
    );
}

#[test]
fn certificate_flags_serve_https_and_the_app_sees_it() {
    let dir = fs::scratch_world_readable("wsgi-tls-");
    let app = environ_app(dir.path(), "env.wsgi", "flags");
    let issued = issue(dir.path(), "site", &["localhost"], true);
    let chain = issued.chain.as_ref().unwrap();
    let server = serve_https(
        &app,
        &issued,
        &["--ssl-certificate-chain-file", chain.to_str().unwrap()],
    );
    // Trusting only the root: the intermediate comes from the chain file.
    let answer = get_localhost(&server, &issued);
    assert_eq!(answer.presented, issued.leaf);
    assert_eq!(answer.version, Some(rustls::ProtocolVersion::TLSv1_3));
    let response = Response::parse(&answer.raw);
    assert_eq!(response.status, 200, "{}", response.text());
    let port = server.addr.port();
    let text = response.text();
    for line in [
        "wsgi.url_scheme=https\n".to_string(),
        // mod_wsgi removes mod_ssl's HTTPS once wsgi.url_scheme says it.
        "HTTPS=<unset>\n".to_string(),
        "SSL_TLS_SNI=localhost\n".to_string(),
        "REQUEST_SCHEME=https\n".to_string(),
        format!("SERVER_PORT={port}\n"),
        "site=flags\n".to_string(),
    ] {
        assert!(text.contains(&line), "{line:?} in {text}");
    }
    // TLS 1.2 too.
    let answer = exchange(
        server.addr,
        "localhost",
        &[&issued.root],
        &[&rustls::version::TLS12],
        &http::get_request("/", "localhost"),
    )
    .unwrap();
    assert_eq!(answer.version, Some(rustls::ProtocolVersion::TLSv1_2));
    assert_eq!(Response::parse(&answer.raw).status, 200);

    // Plain HTTP to the TLS port reaches no application: mod_ssl's 400, saying why.
    let raw = server.raw(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let refused = Response::parse(&raw);
    assert_eq!(refused.status, 400);
    assert!(
        refused
            .text()
            .contains("speaking plain HTTP to an SSL-enabled server port"),
        "{}",
        refused.text()
    );
    // Still serving.
    let answer = get_localhost(&server, &issued);
    assert_eq!(Response::parse(&answer.raw).status, 200);
}

/// A TLS keep-alive connection left idle is parked like a plain one (hyper's buffers let
/// go, the TLS session kept) and serves the next request on the same session.
#[test]
fn an_idle_tls_connection_is_parked_and_serves_on() {
    let dir = fs::scratch_world_readable("wsgi-tls-");
    let app = environ_app(dir.path(), "env.wsgi", "parked");
    let issued = issue(dir.path(), "site", &["localhost"], false);
    let server = serve_https(&app, &issued, &["--log-level", "debug"]);
    let mut tls = connect(server.addr, "localhost", &[&issued.root], BOTH).unwrap();
    let request = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let answer = |tls: &mut rustls::StreamOwned<_, _>| {
        tls.write_all(request).unwrap();
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = tls.read(&mut buf).unwrap();
            assert!(n > 0, "closed after {} bytes", raw.len());
            raw.extend_from_slice(&buf[..n]);
            if let Ok(r) = Response::try_parse(&raw) {
                return r;
            }
        }
    };
    assert_eq!(answer(&mut tls).status, 200);
    server.wait_for_log("idle connection parked", 1, Duration::from_secs(10));
    let again = answer(&mut tls);
    assert_eq!(again.status, 200);
    assert!(again.text().contains("site=parked\n"), "{}", again.text());
}

#[test]
fn a_stalled_handshake_is_closed_at_the_header_timeout_and_holds_up_no_one() {
    let dir = fs::scratch_world_readable("wsgi-tls-");
    let app = environ_app(dir.path(), "env.wsgi", "slow");
    let issued = issue(dir.path(), "site", &["localhost"], false);
    let server = serve_https(&app, &issued, &["--header-timeout", "1"]);
    // Half a ClientHello record header, then nothing.
    let mut stalled = server.connect();
    stalled.write_all(&[0x16, 0x03, 0x01]).unwrap();
    let answer = get_localhost(&server, &issued);
    assert_eq!(Response::parse(&answer.raw).status, 200);
    stalled
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let closed = matches!(stalled.read(&mut buf), Ok(0) | Err(_));
    assert!(closed, "the stalled handshake was answered");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the stalled handshake was not closed by the 1 s header timeout"
    );
}

/// Two name-based virtual hosts on one port, each with its own certificate: the client's SNI
/// name picks the certificate (the first host's when it names neither), the Host header the
/// application; the server's `SSLProtocol`, which both inherit, decides the versions.
#[test]
fn sni_picks_the_virtual_host_certificate_and_ssl_protocol_applies() {
    let dir = fs::scratch_world_readable("wsgi-tls-");
    let app_a = environ_app(dir.path(), "a.wsgi", "a");
    let app_b = environ_app(dir.path(), "b.wsgi", "b");
    let a = issue(dir.path(), "a", &["a.test", "www.a.test"], false);
    let b = issue(dir.path(), "b", &["b.test"], true);
    let site = format!(
        r#"LoadModule ssl_module /usr/lib/apache2/modules/mod_ssl.so
SSLProtocol -all +TLSv1.3
<VirtualHost *>
    ServerName a.test
    ServerAlias *.a.test
    SSLEngine on
    SSLCertificateFile {a_cert}
    SSLCertificateKeyFile {a_key}
    WSGIScriptAlias / {app_a}
</VirtualHost>
<VirtualHost *>
    ServerName b.test
    SSLEngine on
    SSLCertificateFile {b_cert}
    SSLCertificateKeyFile {b_key}
    SSLCertificateChainFile {b_chain}
    WSGIScriptAlias / {app_b}
</VirtualHost>
"#,
        a_cert = a.cert.display(),
        a_key = a.key.display(),
        b_cert = b.cert.display(),
        b_key = b.key.display(),
        b_chain = b.chain.as_ref().unwrap().display(),
        app_a = app_a.display(),
        app_b = app_b.display(),
    );
    let conf = fs::write_world_readable(&dir.path().join("site.conf"), &site);
    let server = Server::start(&["--config", conf.to_str().unwrap(), "--port", "0"]);
    let roots = [&a.root, &b.root];
    let port = server.addr.port();
    for (sni, host, leaf, tag) in [
        ("a.test", "a.test", &a.leaf, "a"),
        ("www.a.test", "www.a.test", &a.leaf, "a"),
        ("b.test", "b.test", &b.leaf, "b"),
    ] {
        let answer = exchange(
            server.addr,
            sni,
            &roots,
            BOTH,
            &http::get_request("/", host),
        )
        .unwrap();
        assert_eq!(&answer.presented, leaf, "SNI {sni}");
        let text = Response::parse(&answer.raw).text();
        assert!(
            text.contains(&format!("site={tag}\n"))
                && text.contains("wsgi.url_scheme=https\n")
                && text.contains(&format!("SERVER_PORT={port}\n")),
            "SNI {sni}: {text}"
        );
    }
    // A name neither host has: the first host's certificate (which the client then refuses).
    let refused = exchange(
        server.addr,
        "c.test",
        &roots,
        BOTH,
        &http::get_request("/", "c.test"),
    );
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("certificate")),
        "{:?}",
        refused.map(|a| a.raw)
    );
    // TLS 1.2 only: refused by `SSLProtocol -all +TLSv1.3`.
    let old = exchange(
        server.addr,
        "a.test",
        &roots,
        &[&rustls::version::TLS12],
        &http::get_request("/", "a.test"),
    );
    assert!(old.is_err(), "TLS 1.2 was accepted");
}

/// Each virtual host of a port speaks the TLS versions of its own `SSLProtocol`, as mod_ssl:
/// the host the client's SNI name selects decides (the first for a name no host has), whether
/// it is the port's first or not; a host with no `SSLProtocol` (nor the server) speaks what the
/// port's first host does. openssl offering only TLS 1.2 to a host that allows only TLS 1.3
/// gets a `protocol_version` alert at once, and the port goes on serving.
#[test]
fn each_sni_host_speaks_the_tls_versions_of_its_own_ssl_protocol() {
    let dir = fs::scratch_world_readable("wsgi-tls-");
    let app = environ_app(dir.path(), "env.wsgi", "x");
    let all = "SSLProtocol all\n";
    let only13 = "SSLProtocol -all +TLSv1.3\n";
    let both = "TLSv1.2 TLSv1.3";
    // [(host, its lines, the versions it allows)].
    let cases: [&[tls_util::VersionsHost]; 2] = [
        &[("first.test", "", both), ("second.test", only13, "TLSv1.3")],
        &[
            ("first.test", only13, "TLSv1.3"),
            ("second.test", all, both),
            ("third.test", "", "TLSv1.3"),
        ],
    ];
    for hosts in cases {
        let lines: Vec<(&str, &str)> = hosts
            .iter()
            .map(|&(name, lines, _)| (name, lines))
            .collect();
        let site = tls_util::tls_site(dir.path(), &app, "", &lines);
        let conf = fs::write_world_readable(&dir.path().join("site.conf"), &site);
        let server = Server::start(&["--config", conf.to_str().unwrap(), "--port", "0"]);
        let port = server.addr.port();
        let (strict, _, _) = hosts.iter().find(|(_, lines, _)| *lines == only13).unwrap();
        let started = Instant::now();
        let refused = openssl_version(strict, port, "-tls1_2");
        assert!(
            refused
                .as_ref()
                .is_err_and(|said| said.contains("alert protocol version")),
            "{lines:?}: SNI {strict} offering TLS 1.2: {refused:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(10), "{lines:?}");
        let other = ("other.test", "", hosts[0].2);
        for &(name, _, allowed) in hosts.iter().chain([&other]) {
            assert_eq!(
                openssl_versions(name, port),
                allowed,
                "{lines:?}: SNI {name}"
            );
        }
    }
}

/// What cannot work is refused before anything is served, naming the line or the file.
#[test]
fn bad_tls_configurations_are_refused_at_start() {
    let dir = fs::scratch_world_readable("wsgi-tls-");
    let app = environ_app(dir.path(), "env.wsgi", "x");
    let a = issue(dir.path(), "a", &["a.test"], false);
    let b = issue(dir.path(), "b", &["b.test"], false);
    let wsgi = env!("CARGO_BIN_EXE_wsgi");
    let check = |name: &str, site: String| {
        let conf = fs::write_world_readable(&dir.path().join(name), &site);
        let out = std::process::Command::new(wsgi)
            .arg("check")
            .arg(&conf)
            .output()
            .unwrap();
        let served = Server::try_start_with(
            &util::PLAIN,
            &["--config", conf.to_str().unwrap(), "--port", "0"],
        );
        let served = match served {
            Ok(_) => panic!("{name} was served"),
            Err(e) => e,
        };
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
            served,
        )
    };
    let head = "LoadModule ssl_module /usr/lib/apache2/modules/mod_ssl.so\n";

    // SSLEngine on without a certificate.
    let (code, checked, served) = check(
        "nocert.conf",
        format!("{head}SSLEngine on\nWSGIScriptAlias / {}\n", app.display()),
    );
    assert_eq!(code, Some(1), "{checked}");
    assert!(
        checked.contains("nocert.conf:2") && checked.contains("SSLCertificateFile"),
        "{checked}"
    );
    assert!(served.contains("SSLCertificateFile"), "{served}");

    // A key that is not the certificate's.
    let (_, _, served) = check(
        "wrongkey.conf",
        format!(
            "{head}SSLEngine on\nSSLCertificateFile {}\nSSLCertificateKeyFile {}\nWSGIScriptAlias / {}\n",
            a.cert.display(),
            b.key.display(),
            app.display()
        ),
    );
    assert!(
        served.contains(&a.cert.display().to_string())
            && served.contains(&b.key.display().to_string()),
        "{served}"
    );

    // A certificate file that holds no certificate.
    let (_, _, served) = check(
        "nopem.conf",
        format!(
            "{head}SSLEngine on\nSSLCertificateFile {}\nSSLCertificateKeyFile {}\nWSGIScriptAlias / {}\n",
            app.display(),
            a.key.display(),
            app.display()
        ),
    );
    assert!(
        served.contains("SSLCertificateFile") && served.contains("no PEM certificate"),
        "{served}"
    );

    // One port, one host on TLS and one not.
    let (_, _, served) = check(
        "mixed.conf",
        format!(
            "{head}<VirtualHost *>\nServerName a.test\nSSLEngine on\nSSLCertificateFile {}\nSSLCertificateKeyFile {}\nWSGIScriptAlias / {app}\n</VirtualHost>\n<VirtualHost *>\nServerName b.test\nWSGIScriptAlias / {app}\n</VirtualHost>\n",
            a.cert.display(),
            a.key.display(),
            app = app.display()
        ),
    );
    assert!(
        served.contains("mixed.conf:2") && served.contains("mixed.conf:9"),
        "{served}"
    );

    // SSLEngine optional and an SSLProtocol wsgi serve cannot speak.
    let (code, checked, _) = check(
        "optional.conf",
        format!(
            "{head}SSLEngine optional\nSSLProtocol TLSv1.1\nWSGIScriptAlias / {}\n",
            app.display()
        ),
    );
    assert_eq!(code, Some(1), "{checked}");
    assert!(
        checked.contains("optional.conf:2") && checked.contains("optional.conf:3"),
        "{checked}"
    );

    // A second host's own SSLProtocol that wsgi serve cannot speak (the first's can).
    let site = tls_util::tls_site(
        dir.path(),
        &app,
        "",
        &[("a.test", ""), ("b.test", "SSLProtocol -all +TLSv1.1\n")],
    );
    let (code, checked, served) = check("hostproto.conf", site);
    assert_eq!(code, Some(1), "{checked}");
    let line = "hostproto.conf:11";
    assert!(
        checked.contains(line) && checked.contains("SSLProtocol"),
        "{checked}"
    );
    assert!(served.contains(line), "{served}");
}
