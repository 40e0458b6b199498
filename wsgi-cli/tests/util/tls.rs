//! TLS for the `wsgi serve` tests: certificates from a test CA made by rcgen, and HTTP/1.1
//! exchanges over rustls as the client, bounded by a read timeout; the protocol openssl
//! negotiates through ALPN.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};

use wsgi_testkit::fs;

/// A certificate made by [`issue`], and its files.
pub struct Issued {
    /// The test CA's certificate, which the client trusts.
    pub root: CertificateDer<'static>,
    /// The server's certificate.
    pub leaf: CertificateDer<'static>,
    /// `<stem>.crt`: the server's certificate (PEM).
    pub cert: PathBuf,
    /// `<stem>.key`: its private key (PEM, mode 0600).
    pub key: PathBuf,
    /// `<stem>.chain`: the intermediate CA (PEM), when chained.
    pub chain: Option<PathBuf>,
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params
}

/// A certificate for `names` signed by a new test CA (through an intermediate when `chained`),
/// written as `<stem>.crt`, `<stem>.key` and (chained) `<stem>.chain` in `dir`.
pub fn issue(dir: &Path, stem: &str, names: &[&str], chained: bool) -> Issued {
    let root =
        CertifiedIssuer::self_signed(ca_params("test root"), KeyPair::generate().unwrap()).unwrap();
    let intermediate = CertifiedIssuer::signed_by(
        ca_params("test intermediate"),
        KeyPair::generate().unwrap(),
        &root,
    )
    .unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let params = CertificateParams::new(names).unwrap();
    let leaf = if chained {
        params.signed_by(&leaf_key, &intermediate).unwrap()
    } else {
        params.signed_by(&leaf_key, &root).unwrap()
    };
    let cert = fs::write_world_readable(&dir.join(format!("{stem}.crt")), &leaf.pem());
    // The key stays private to root: the server reads it before it gives up root.
    let key = fs::write(&dir.join(format!("{stem}.key")), &leaf_key.serialize_pem());
    fs::chmod(&key, 0o600);
    let chain = chained
        .then(|| fs::write_world_readable(&dir.join(format!("{stem}.chain")), &intermediate.pem()));
    Issued {
        root: root.der().clone(),
        leaf: leaf.der().clone(),
        cert,
        key,
        chain,
    }
}

/// What one TLS exchange gave: the raw response and the certificate the server presented.
pub struct Exchange {
    /// Everything read until the server closed.
    pub raw: Vec<u8>,
    /// The first certificate the server presented.
    pub presented: CertificateDer<'static>,
    /// The TLS version negotiated.
    pub version: Option<rustls::ProtocolVersion>,
}

/// A TLS connection to `addr`, asking for `sni`, trusting `roots`, offering `versions`
/// (the handshake is done as the first bytes are written), its reads bounded by 20 s.
pub fn connect(
    addr: SocketAddr,
    sni: &str,
    roots: &[&CertificateDer<'static>],
    versions: &[&'static SupportedProtocolVersion],
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, String> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add((*root).clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    Ok(rustls::StreamOwned::new(conn, tcp))
}

/// Sends `request` over TLS to `addr`, asking for `sni`, trusting `roots`, offering `versions`.
pub fn exchange(
    addr: SocketAddr,
    sni: &str,
    roots: &[&CertificateDer<'static>],
    versions: &[&'static SupportedProtocolVersion],
    request: &[u8],
) -> Result<Exchange, String> {
    let mut tls = connect(addr, sni, roots, versions)?;
    tls.write_all(request).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            // A close without close_notify after the whole response is an end, not an error.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => break,
            Err(e) => return Err(e.to_string()),
        }
    }
    let presented = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .cloned()
        .ok_or("no certificate presented")?;
    Ok(Exchange {
        raw,
        presented,
        version: tls.conn.protocol_version(),
    })
}

/// TLS 1.3 and 1.2.
pub const BOTH: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// What `openssl s_client` says connecting to 127.0.0.1:`port` with SNI `name` and the
/// further arguments `more` (its input closed, within 30 s).
pub fn openssl_s_client(name: &str, port: u16, more: &[&str]) -> String {
    let connect = format!("127.0.0.1:{port}");
    let out = std::process::Command::new("timeout")
        .args([
            "30",
            "openssl",
            "s_client",
            "-connect",
            &connect,
            "-servername",
            name,
        ])
        .args(more)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    wsgi_testkit::process::output_text(&out)
}

/// The protocol `openssl s_client` negotiates with SNI `name` at 127.0.0.1:`port`, offering
/// `alpn` (comma-separated, in its order of preference), or what it said when none was (a
/// server that accepts none of the client's protocols refuses the handshake, RFC 7301).
pub fn openssl_alpn(name: &str, port: u16, alpn: &str) -> Result<String, String> {
    let said = openssl_s_client(name, port, &["-alpn", alpn]);
    said.lines()
        .find_map(|l| l.strip_prefix("ALPN protocol: "))
        .map(str::to_string)
        .ok_or(said)
}

/// The TLS version (`TLSv1.3`...) `openssl s_client` negotiates with SNI `name` at
/// 127.0.0.1:`port` when it offers only the one `version` names (`-tls1_2`, `-tls1_3`), or
/// what it said when the handshake failed.
pub fn openssl_version(name: &str, port: u16, version: &str) -> Result<String, String> {
    let said = openssl_s_client(name, port, &[version]);
    // `New, TLSv1.3, Cipher is ...`, or `New, (NONE), Cipher is (NONE)` after a failure.
    said.lines()
        .find_map(|l| l.strip_prefix("New, ")?.split_once(", Cipher is "))
        .map(|(version, _)| version)
        .filter(|v| *v != "(NONE)")
        .map(str::to_string)
        .ok_or(said)
}

/// A virtual host of a [`tls_site`] and what a test expects of it: its `ServerName`, its
/// further lines, and the TLS versions it allows (as [`openssl_versions`] says them).
pub type VersionsHost<'a> = (&'a str, &'a str, &'a str);

/// The TLS versions `openssl s_client` negotiates with SNI `name` at 127.0.0.1:`port`
/// offering one at a time: `TLSv1.2 TLSv1.3`, `TLSv1.2`, `TLSv1.3` or nothing.
pub fn openssl_versions(name: &str, port: u16) -> String {
    ["-tls1_2", "-tls1_3"]
        .into_iter()
        .filter_map(|version| openssl_version(name, port, version).ok())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A site of name-based TLS virtual hosts (`<VirtualHost *>`) sharing one new certificate for
/// their names (written in `dir`): mod_ssl's `LoadModule` line and the server's `main` lines,
/// then for each of `hosts` (its `ServerName` and further lines) `SSLEngine on` with that
/// certificate, serving `app` at `/`.
pub fn tls_site(dir: &Path, app: &Path, main: &str, hosts: &[(&str, &str)]) -> String {
    let names: Vec<&str> = hosts.iter().map(|(name, _)| *name).collect();
    let issued = issue(dir, "hosts", &names, false);
    let mut site = format!("LoadModule ssl_module /usr/lib/apache2/modules/mod_ssl.so\n{main}");
    for (name, lines) in hosts {
        site += &format!(
            "<VirtualHost *>\nServerName {name}\n{lines}SSLEngine on\nSSLCertificateFile {cert}\nSSLCertificateKeyFile {key}\nWSGIScriptAlias / {app}\n</VirtualHost>\n",
            cert = issued.cert.display(),
            key = issued.key.display(),
            app = app.display(),
        );
    }
    site
}
