//! mod_ssl's directives as `wsgi serve` reads them: `SSLEngine`, `SSLCertificateFile`,
//! `SSLCertificateKeyFile`, `SSLCertificateChainFile` and `SSLProtocol`, per server or
//! virtual host (a virtual host inherits what it does not set from the main server, as in
//! Apache). Loading the keys and speaking TLS is the front's business.

use std::path::PathBuf;

use serde::Serialize;

use crate::reader::Span;

/// A host's mod_ssl settings (None fields: inherited, or unset).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TlsSettings {
    /// `SSLEngine on|off`, with where it was set.
    #[serde(skip)]
    pub engine: Option<(bool, Span)>,
    /// `SSLCertificateFile`: the certificate (PEM), possibly followed by its chain.
    pub certificate_file: Option<PathBuf>,
    /// `SSLCertificateKeyFile`: the private key (PEM; the certificate file when unset).
    pub key_file: Option<PathBuf>,
    /// `SSLCertificateChainFile`: intermediate certificates (PEM).
    pub chain_file: Option<PathBuf>,
    /// `SSLProtocol`, resolved.
    pub protocols: Option<Protocols>,
}

impl TlsSettings {
    /// `self` over `base` (a virtual host over the main server).
    pub fn over(&self, base: &TlsSettings) -> TlsSettings {
        TlsSettings {
            engine: self.engine.clone().or_else(|| base.engine.clone()),
            certificate_file: self
                .certificate_file
                .clone()
                .or_else(|| base.certificate_file.clone()),
            key_file: self.key_file.clone().or_else(|| base.key_file.clone()),
            chain_file: self.chain_file.clone().or_else(|| base.chain_file.clone()),
            protocols: self.protocols.or(base.protocols),
        }
    }

    /// Whether `SSLEngine on` applies.
    pub fn enabled(&self) -> bool {
        matches!(self.engine, Some((true, _)))
    }
}

/// The TLS versions `SSLProtocol` allows, of those rustls speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Protocols {
    /// TLS 1.2.
    pub tls12: bool,
    /// TLS 1.3.
    pub tls13: bool,
}

/// Reads `SSLProtocol` arguments (`all -SSLv3 -TLSv1 -TLSv1.1`, `-all +TLSv1.2 +TLSv1.3`,
/// `TLSv1.2`...) as mod_ssl does: a bare name sets the list, `+`/`-` add and remove, `all`
/// is every version. Err when the result allows neither TLS 1.2 nor 1.3 (rustls speaks no
/// older version), or a name is unknown.
pub fn parse_protocols(args: &[String]) -> Result<Protocols, String> {
    // SSLv3, TLSv1, TLSv1.1, TLSv1.2, TLSv1.3
    let names = ["sslv3", "tlsv1", "tlsv1.1", "tlsv1.2", "tlsv1.3"];
    let mut on = [false; 5];
    for arg in args {
        let (sign, name) = match arg.as_bytes().first() {
            Some(b'+') => (Some(true), &arg[1..]),
            Some(b'-') => (Some(false), &arg[1..]),
            _ => (None, arg.as_str()),
        };
        let name = name.to_ascii_lowercase();
        let which: Vec<usize> = if name == "all" {
            // mod_ssl's `all` (OpenSSL 3): TLSv1 and up, not SSLv3.
            vec![1, 2, 3, 4]
        } else if let Some(i) = names.iter().position(|n| *n == name) {
            vec![i]
        } else {
            return Err(format!(
                "`{arg}` is not a protocol of SSLProtocol (all, SSLv3, TLSv1, TLSv1.1, TLSv1.2, TLSv1.3)"
            ));
        };
        match sign {
            None => {
                on = [false; 5];
                which.iter().for_each(|&i| on[i] = true);
            }
            Some(value) => which.iter().for_each(|&i| on[i] = value),
        }
    }
    let protocols = Protocols {
        tls12: on[3],
        tls13: on[4],
    };
    if !protocols.tls12 && !protocols.tls13 {
        return Err(
            "SSLProtocol allows neither TLSv1.2 nor TLSv1.3, the versions wsgi serve speaks (older ones are insecure)".into(),
        );
    }
    Ok(protocols)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Protocols, String> {
        let args: Vec<String> = text.split_whitespace().map(String::from).collect();
        parse_protocols(&args)
    }

    #[test]
    fn protocol_lists_as_mod_ssl_reads_them() {
        let both = Protocols {
            tls12: true,
            tls13: true,
        };
        assert_eq!(p("all -SSLv3 -TLSv1 -TLSv1.1").unwrap(), both);
        assert_eq!(p("-all +TLSv1.2 +TLSv1.3").unwrap(), both);
        assert_eq!(
            p("TLSv1.3").unwrap(),
            Protocols {
                tls12: false,
                tls13: true
            }
        );
        assert_eq!(
            p("all -TLSv1.3").unwrap(),
            Protocols {
                tls12: true,
                tls13: false
            }
        );
        assert!(
            p("TLSv1.1")
                .unwrap_err()
                .contains("neither TLSv1.2 nor TLSv1.3")
        );
        assert!(p("all -QUIC").unwrap_err().contains("`-QUIC`"));
    }
}
