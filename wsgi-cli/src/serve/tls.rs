//! TLS for `wsgi serve`, through rustls (with aws-lc-rs): mod_ssl's `SSLEngine on` virtual hosts
//! of a configuration, and mod_wsgi-express's `--ssl-certificate-file` /
//! `--ssl-certificate-key-file`. The keys are read when the configuration is (by the master
//! and by the front, both before they give up root, as Apache reads them). Each listening
//! port that serves TLS gets a [`PortTls`]: rustls configurations built at start for each of
//! its virtual hosts, one of which finishes a handshake once the client's ClientHello is read,
//! as mod_ssl switches to the virtual host the name the client asks for (SNI) selects (the
//! port's first by default): that host's certificate, its `SSLProtocol` for the TLS versions
//! (the port's first host's when neither it nor the server sets one), and its `Protocols` and
//! `ProtocolsHonorOrder` for ALPN ([`Alpn`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ServerSessionMemoryCache, StoresServerSessions};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use wsgi_config::Config;
use wsgi_config::tls::{Protocols, TlsSettings};

use super::http2::{Alpn, HttpMode};

/// Why TLS cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file cannot be read or holds nothing usable.
    #[error("{what} `{}`: {why}", .path.display())]
    File {
        /// What the file is (`SSLCertificateFile`, ...).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The key does not fit the certificate, or rustls refuses it.
    #[error("the key `{}` cannot sign for the certificate `{}`: {why}", .key.display(), .certificate.display())]
    Key {
        /// The certificate file.
        certificate: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason.
        why: String,
    },
    /// A host's certificate cannot be loaded: where its `SSLEngine on` is, and why.
    #[error("{at}: SSLEngine on: {source}")]
    Host {
        /// The `SSLEngine on` line.
        at: String,
        /// What is wrong.
        source: Box<TlsError>,
    },
    /// Virtual hosts of one port disagree about TLS.
    #[error(
        "{}: {tls} has SSLEngine on but {plain} does not; Apache would answer both in one protocol: give every <VirtualHost> of a port the same SSLEngine",
        port_name(*.port)
    )]
    Mixed {
        /// The port.
        port: u16,
        /// A TLS host.
        tls: String,
        /// A plain host.
        plain: String,
    },
}

fn port_name(port: u16) -> String {
    match port {
        0 => "every port".to_string(),
        port => format!("port {port}"),
    }
}

/// A host's loaded certificate, and what it allows.
#[derive(Debug, Clone)]
pub struct HostTls {
    /// The chain and key.
    pub key: Arc<CertifiedKey>,
    /// The host's `SSLProtocol`, inherited from the server when it sets none; None when
    /// neither sets one (the host then speaks what the port's first host does, as mod_ssl).
    pub protocols: Option<Protocols>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn file_error(what: &'static str, path: &Path, why: impl ToString) -> TlsError {
    TlsError::File {
        what,
        path: path.to_path_buf(),
        why: why.to_string(),
    }
}

/// The certificates of a PEM file, in order.
fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(what, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(what, path, e))?;
    if certs.is_empty() {
        return Err(file_error(what, path, "no PEM certificate in it"));
    }
    Ok(certs)
}

/// Loads a certificate (with its chain) and key.
pub fn load_key(
    certificate: &Path,
    key: Option<&Path>,
    chain: Option<&Path>,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let mut certs = certificates("SSLCertificateFile", certificate)?;
    if let Some(chain) = chain {
        certs.extend(certificates("SSLCertificateChainFile", chain)?);
    }
    let key_path = key.unwrap_or(certificate);
    let der = PrivateKeyDer::from_pem_file(key_path).map_err(|e| {
        file_error(
            "SSLCertificateKeyFile",
            key_path,
            format!(
                "{e} (an unencrypted PEM private key is needed: wsgi serve asks no pass phrase)"
            ),
        )
    })?;
    let certified = CertifiedKey::from_der(certs, der, &provider()).map_err(|e| TlsError::Key {
        certificate: certificate.to_path_buf(),
        key: key_path.to_path_buf(),
        why: match e {
            rustls::Error::InconsistentKeys(_) => "it is not this certificate's private key: name the key the certificate was issued for in SSLCertificateKeyFile".to_string(),
            e => e.to_string(),
        },
    })?;
    Ok(Arc::new(certified))
}

/// Loads the certificate of every host with `SSLEngine on`: `[main, vhost 0, vhost 1, ...]`.
pub fn load_site(config: &Config) -> Result<Vec<Option<HostTls>>, TlsError> {
    std::iter::once(None)
        .chain((0..config.virtual_hosts.len()).map(Some))
        .map(|host| {
            let settings: TlsSettings = config.tls_for(host);
            if !settings.enabled() {
                return Ok(None);
            }
            // The configuration check makes sure a certificate is named.
            let Some(certificate) = settings.certificate_file.as_deref() else {
                return Ok(None);
            };
            let key = load_key(
                certificate,
                settings.key_file.as_deref(),
                settings.chain_file.as_deref(),
            )
            .map_err(|e| match &settings.engine {
                Some((_, span)) => TlsError::Host {
                    at: span.to_string(),
                    source: Box::new(e),
                },
                None => e,
            })?;
            Ok(Some(HostTls {
                key,
                protocols: settings.protocols,
            }))
        })
        .collect()
}

/// Every TLS problem `wsgi serve` would refuse `config` for: certificates that do not load,
/// and ports whose virtual hosts disagree about `SSLEngine` (each explicit port of a
/// `<VirtualHost>` or `Listen`, and any other port for the hosts without one).
pub fn check_site(config: &Config) -> Vec<TlsError> {
    let loaded = match load_site(config) {
        Ok(loaded) => loaded,
        Err(e) => return vec![e],
    };
    let mut ports: Vec<u16> = config
        .virtual_hosts
        .iter()
        .flat_map(|h| h.addresses.iter().filter_map(|a| a.port))
        .chain(config.listen.iter().map(|l| l.port))
        .collect();
    // No real port is 0: it stands for a port no host names.
    ports.push(0);
    ports.sort_unstable();
    ports.dedup();
    ports
        .into_iter()
        .filter_map(|port| acceptor_for(config, &loaded, port, HttpMode::Auto).err())
        .collect()
}

/// One virtual host of a TLS port: the names the client's SNI name is matched against, its
/// ALPN answer, and its rustls configurations (its certificate and `SSLProtocol` versions),
/// one for each of [`Alpn::orders`].
#[derive(Debug)]
struct PortHost {
    /// `ServerName` and `ServerAlias` (lowercase; may hold wildcards).
    names: Vec<String>,
    /// How it answers the client's ALPN offer.
    alpn: Alpn,
    /// Its certificate and `alpn.orders()[i]`, for each `i`.
    configs: Vec<Arc<ServerConfig>>,
}

/// The TLS of a listening port: its virtual hosts' rustls configurations, built at start, one
/// of which is chosen for each connection once its ClientHello is read
/// ([`PortTls::config_for`]).
#[derive(Debug, Clone)]
pub struct PortTls {
    /// The port's TLS hosts in configuration order (never empty: the first is the default).
    hosts: Arc<[PortHost]>,
}

impl PortTls {
    /// The configuration to finish the handshake of `hello` with: the certificate and TLS
    /// versions of the host its SNI name selects (`PortTls::host`), and that host's ALPN list
    /// in the order that makes rustls choose what Apache would for the client's offer
    /// ([`Alpn::order_for`]). A client that offers none of that host's versions gets a
    /// `protocol_version` alert from rustls when the handshake goes on with it.
    pub fn config_for(&self, hello: &ClientHello<'_>) -> Arc<ServerConfig> {
        let host = self.host(hello.server_name());
        let order = host.alpn.order_for(hello.alpn().into_iter().flatten());
        host.configs[order].clone()
    }

    /// The host a client's SNI name selects, as mod_ssl: the first of the port whose
    /// `ServerName` or `ServerAlias` matches, else (no name, or no match) the port's first.
    fn host(&self, sni: Option<&str>) -> &PortHost {
        let wanted = sni.map(str::to_ascii_lowercase);
        let found = wanted.and_then(|name| {
            self.hosts.iter().find(|host| {
                host.names
                    .iter()
                    .any(|pattern| wsgi_config::route::wildcard_match(pattern, &name))
            })
        });
        found.unwrap_or(&self.hosts[0])
    }
}

/// A host's rustls configurations, one for each of `alpn`'s orders: its certificate, the TLS
/// `versions`, and the port's session cache (rustls resumes a session only for its SNI name).
fn port_host(
    names: Vec<String>,
    key: &Arc<CertifiedKey>,
    versions: &[&'static SupportedProtocolVersion],
    alpn: Alpn,
    sessions: &Arc<dyn StoresServerSessions>,
) -> Result<PortHost, TlsError> {
    let configs = alpn
        .orders()
        .into_iter()
        .map(|order| {
            let mut server = ServerConfig::builder_with_provider(provider())
                .with_protocol_versions(versions)
                .map_err(|e| TlsError::Key {
                    certificate: PathBuf::new(),
                    key: PathBuf::new(),
                    why: e.to_string(),
                })?
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(SingleCertAndKey::from(key.clone())));
            server.alpn_protocols = order;
            server.session_storage = sessions.clone();
            Ok(Arc::new(server))
        })
        .collect::<Result<_, TlsError>>()?;
    Ok(PortHost {
        names,
        alpn,
        configs,
    })
}

/// The rustls versions `protocols` allows, TLS 1.3 first.
fn versions(protocols: Protocols) -> Vec<&'static SupportedProtocolVersion> {
    let mut versions: Vec<&'static SupportedProtocolVersion> = Vec::new();
    if protocols.tls13 {
        versions.push(&rustls::version::TLS13);
    }
    if protocols.tls12 {
        versions.push(&rustls::version::TLS12);
    }
    versions
}

/// The session cache of a port's configurations (rustls's default size).
fn session_cache() -> Arc<dyn StoresServerSessions> {
    ServerSessionMemoryCache::new(256)
}

/// The TLS of connections routed as port `route_port`, None when the port serves plain HTTP.
/// `loaded` is [`load_site`]'s answer; `mode` is `--http`, which with each host's `Protocols`
/// and `ProtocolsHonorOrder` decides its ALPN answer ([`Alpn::new`]).
pub fn acceptor_for(
    config: &Config,
    loaded: &[Option<HostTls>],
    route_port: u16,
    mode: HttpMode,
) -> Result<Option<PortTls>, TlsError> {
    let on_port: Vec<usize> = config
        .virtual_hosts
        .iter()
        .enumerate()
        .filter(|(_, h)| {
            h.addresses
                .iter()
                .any(|a| a.port.is_none_or(|p| p == route_port))
        })
        .map(|(i, _)| i)
        .collect();
    let describe = |i: usize| {
        let host = &config.virtual_hosts[i];
        match &host.span {
            Some(span) => format!("the <VirtualHost> at {span}"),
            None => "a <VirtualHost>".to_string(),
        }
    };
    // (host, names, loaded) of each TLS host of the port, in configuration order (the main
    // server's, None, when no <VirtualHost> is on the port).
    let mut hosts = Vec::new();
    if on_port.is_empty() {
        if let Some(Some(main)) = loaded.first() {
            hosts.push((None, Vec::new(), main));
        }
    } else {
        let tls: Vec<usize> = on_port
            .iter()
            .copied()
            .filter(|&i| loaded.get(i + 1).is_some_and(Option::is_some))
            .collect();
        if let (Some(&t), Some(&p)) = (tls.first(), on_port.iter().find(|i| !tls.contains(i))) {
            return Err(TlsError::Mixed {
                port: route_port,
                tls: describe(t),
                plain: describe(p),
            });
        }
        for i in tls {
            let host = &config.virtual_hosts[i];
            let names: Vec<String> = host
                .server_name
                .iter()
                .chain(&host.server_aliases)
                .map(|n| n.to_ascii_lowercase())
                .collect();
            if let Some(Some(loaded)) = loaded.get(i + 1) {
                hosts.push((Some(i), names, loaded));
            }
        }
    }
    let Some((_, _, first)) = hosts.first() else {
        return Ok(None);
    };
    // As mod_ssl, which switches to the host the SNI name selects: that host's SSLProtocol,
    // its own or the server's, and when neither sets one, the port's first (default) host's,
    // with which the handshake began.
    let default = first.protocols.unwrap_or(Protocols {
        tls12: true,
        tls13: true,
    });
    let sessions = session_cache();
    let hosts = hosts
        .into_iter()
        .map(|(host, names, loaded)| {
            let alpn = Alpn::new(
                mode,
                Some(config.protocols(host)),
                config.protocols_honor_order(host),
            );
            let versions = versions(loaded.protocols.unwrap_or(default));
            port_host(names, &loaded.key, &versions, alpn, &sessions)
        })
        .collect::<Result<_, _>>()?;
    Ok(Some(PortTls { hosts }))
}

/// The TLS of `--ssl-certificate-file` and `--ssl-certificate-key-file`: one certificate,
/// ALPN as `--http` allows (`h2` first), TLS 1.2 and 1.3.
pub fn acceptor_for_files(
    certificate: &Path,
    key: Option<&Path>,
    chain: Option<&Path>,
    mode: HttpMode,
) -> Result<PortTls, TlsError> {
    let key = load_key(certificate, key, chain)?;
    let alpn = Alpn::new(mode, None, true);
    let host = port_host(
        Vec::new(),
        &key,
        rustls::DEFAULT_VERSIONS,
        alpn,
        &session_cache(),
    )?;
    Ok(PortTls {
        hosts: Arc::new([host]),
    })
}
