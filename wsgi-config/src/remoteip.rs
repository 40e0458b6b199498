//! mod_remoteip's PROXY protocol directives as `wsgi serve` reads them:
//! `RemoteIPProxyProtocol On|Off` and `RemoteIPProxyProtocolExceptions host|range ...`, in the
//! server config or a `<VirtualHost>`. Reading the header off a connection is the front's
//! business; this says which connections must start with one.
//!
//! As in mod_remoteip (Apache 2.4.31+), the PROXY protocol is a property of the addresses a
//! connection comes in on, not of a virtual host: `RemoteIPProxyProtocol On` in a
//! `<VirtualHost 10.0.0.1:80>` turns it on for every connection to 10.0.0.1 port 80, whatever
//! name-based host it then serves; in the server config, for every address. A later line for
//! the same address replaces an earlier one (`On` then `Off` is off), and an `Off` for a more
//! specific address wins over an `On` for a wider one. The exceptions are the clients that may
//! connect without a header; they are the host's own, else the server config's.

use std::net::IpAddr;

use serde::Serialize;

use crate::model::{HostAddress, IpNet};

/// An address connections come in on, as a `RemoteIPProxyProtocol` line names it: None
/// matches any IP, or any port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LocalAddr {
    /// The local IP, None for any (`*`, `_default_`, the server config, a host name).
    pub ip: Option<IpAddr>,
    /// The local port, None for any.
    pub port: Option<u16>,
}

impl LocalAddr {
    /// Every address: what the server config's line applies to (Apache's main server has the
    /// wildcard address and port 0).
    pub const ANY: LocalAddr = LocalAddr {
        ip: None,
        port: None,
    };

    /// The address of a `<VirtualHost>` address (a host name counts as any IP, as routing
    /// treats it).
    pub fn of(address: &HostAddress) -> LocalAddr {
        LocalAddr {
            ip: address.ip,
            port: address.port,
        }
    }

    /// Whether a connection to `ip` port `port` comes in on this address (mod_remoteip's
    /// `remoteip_sockaddr_compat`: equal, or a wildcard address or port on either side).
    pub fn covers(&self, ip: IpAddr, port: u16) -> bool {
        self.ip.is_none_or(|own| own == ip) && self.port.is_none_or(|own| own == port)
    }
}

/// Where `RemoteIPProxyProtocol` turned the PROXY protocol on and off, in the order the lines
/// came (mod_remoteip's two server-wide lists).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProxyProtocol {
    /// Addresses with `On`.
    pub enabled: Vec<LocalAddr>,
    /// Addresses with `Off`.
    pub disabled: Vec<LocalAddr>,
}

impl ProxyProtocol {
    /// Applies `RemoteIPProxyProtocol On` (`on`) or `Off` for `addresses` as mod_remoteip
    /// does: each address leaves the other list, and joins this one unless an address there
    /// already covers it.
    pub fn set(&mut self, addresses: &[LocalAddr], on: bool) {
        let (add, remove) = if on {
            (&mut self.enabled, &mut self.disabled)
        } else {
            (&mut self.disabled, &mut self.enabled)
        };
        for address in addresses {
            remove.retain(|a| a != address);
            let covered = add.iter().any(|a| {
                a.ip.is_none_or(|ip| Some(ip) == address.ip)
                    && a.port.is_none_or(|port| Some(port) == address.port)
            });
            if !covered {
                add.push(*address);
            }
        }
    }

    /// Whether some line turned the PROXY protocol on anywhere.
    pub fn any(&self) -> bool {
        !self.enabled.is_empty()
    }

    /// Whether connections to `ip` port `port` must start with a PROXY header: an `On` covers
    /// the address and no `Off` does.
    pub fn required(&self, ip: IpAddr, port: u16) -> bool {
        self.enabled.iter().any(|a| a.covers(ip, port))
            && !self.disabled.iter().any(|a| a.covers(ip, port))
    }
}

/// Reads `RemoteIPProxyProtocolExceptions` arguments: addresses and ranges as Apache's
/// `apr_ipsubnet_create` takes them (`10.1.2.3`, `10.1.0.0/16`, `10.1.0.0/255.255.0.0`,
/// `10.1`, `2001:db8::/32`). Err names the first argument that is none of these.
pub fn parse_exceptions(args: &[String]) -> Result<Vec<IpNet>, String> {
    args.iter()
        .map(|a| crate::authz::ip_spec(a).ok_or_else(|| a.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(ip: Option<&str>, port: Option<u16>) -> LocalAddr {
        LocalAddr {
            ip: ip.map(|i| i.parse().unwrap()),
            port,
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_server_config_line_covers_every_address() {
        let mut p = ProxyProtocol::default();
        assert!(!p.any());
        assert!(!p.required(ip("127.0.0.1"), 80));
        p.set(&[LocalAddr::ANY], true);
        assert!(p.any());
        assert!(p.required(ip("127.0.0.1"), 80));
        assert!(p.required(ip("::1"), 8443));
    }

    #[test]
    fn a_virtual_host_line_covers_its_addresses_only() {
        let mut p = ProxyProtocol::default();
        p.set(
            &[addr(None, Some(8080)), addr(Some("10.0.0.1"), None)],
            true,
        );
        assert!(p.required(ip("127.0.0.1"), 8080));
        assert!(!p.required(ip("127.0.0.1"), 80));
        assert!(p.required(ip("10.0.0.1"), 80));
        assert!(!p.required(ip("10.0.0.2"), 80));
    }

    #[test]
    fn off_for_a_narrower_address_wins_and_the_last_line_for_an_address_wins() {
        let mut p = ProxyProtocol::default();
        p.set(&[LocalAddr::ANY], true);
        p.set(&[addr(None, Some(80))], false);
        assert!(!p.required(ip("127.0.0.1"), 80));
        assert!(p.required(ip("127.0.0.1"), 443));
        // The same address again: the last line wins.
        p.set(&[addr(None, Some(80))], true);
        assert!(p.required(ip("127.0.0.1"), 80));
        p.set(&[addr(None, Some(80))], false);
        assert!(!p.required(ip("127.0.0.1"), 80));
        // An On already covered by a wider one adds nothing.
        let mut q = ProxyProtocol::default();
        q.set(&[LocalAddr::ANY], true);
        q.set(&[addr(Some("10.0.0.1"), Some(80))], true);
        assert_eq!(q.enabled, vec![LocalAddr::ANY]);
    }

    fn load(text: &str) -> Result<crate::Config, Vec<crate::ConfigError>> {
        crate::load_str(
            text,
            std::path::Path::new("/srv/site.conf"),
            &crate::reader::ReadOptions::default(),
        )
    }

    #[test]
    fn a_site_turns_it_on_per_virtual_host_address_with_exceptions_per_host() {
        let config = load(
            "Listen 8080\nListen 8081\nRemoteIPProxyProtocolExceptions 10.9.0.0/16\n\
             <VirtualHost *:8080>\n  RemoteIPProxyProtocol On\n  RemoteIPProxyProtocolExceptions 127.0.0.4 127.0.0.5\n</VirtualHost>\n\
             <VirtualHost 127.0.0.1:8081>\n  RemoteIPProxyProtocol On\n</VirtualHost>\n\
             <VirtualHost *:8081>\n  ServerName plain\n</VirtualHost>\n",
        )
        .unwrap();
        let p = &config.proxy_protocol;
        assert!(p.required(ip("127.0.0.1"), 8080));
        assert!(p.required(ip("127.0.0.1"), 8081));
        assert!(!p.required(ip("127.0.0.2"), 8081));
        assert!(!p.required(ip("127.0.0.1"), 80));
        // The first host's own exceptions; the others inherit the server config's.
        let first = config.proxy_protocol_exceptions(Some(0));
        assert_eq!(first.len(), 2);
        assert!(first[1].contains(ip("127.0.0.5")));
        assert!(config.proxy_protocol_exceptions(Some(2))[0].contains(ip("10.9.1.1")));
        assert!(config.proxy_protocol_exceptions(None)[0].contains(ip("10.9.1.1")));
        assert!(crate::serve_support::unserved(&config).is_empty());
    }

    #[test]
    fn bad_lines_are_refused_with_the_line() {
        let errors = load("<VirtualHost *:80>\n  RemoteIPProxyProtocol Maybe\n</VirtualHost>\n")
            .unwrap_err();
        assert!(
            errors[0].to_string().contains("site.conf:2"),
            "{}",
            errors[0]
        );
        assert!(
            errors[0].to_string().contains("use On or Off"),
            "{}",
            errors[0]
        );
        let errors = load("RemoteIPProxyProtocolExceptions 10.0.0.1 lb.example\n").unwrap_err();
        assert!(
            errors[0].to_string().contains("lb.example"),
            "{}",
            errors[0]
        );
        // Inside a section it is not served (Apache refuses it there).
        let config = load("<Location /x>\n  RemoteIPProxyProtocol On\n</Location>\n").unwrap();
        let unserved = crate::serve_support::unserved(&config);
        assert_eq!(unserved.len(), 1, "{unserved:?}");
        assert!(!config.proxy_protocol.any());
    }

    #[test]
    fn exceptions_read_as_apache_reads_ranges() {
        let args = |text: &str| -> Vec<String> { text.split(' ').map(String::from).collect() };
        let nets = parse_exceptions(&args("10.1.2.3 10.1 192.0.2.0/255.255.255.0 ::1")).unwrap();
        assert!(nets[0].contains(ip("10.1.2.3")));
        assert!(!nets[0].contains(ip("10.1.2.4")));
        assert!(nets[1].contains(ip("10.1.200.9")));
        assert!(nets[2].contains(ip("192.0.2.77")));
        assert!(nets[3].contains(ip("::1")));
        assert_eq!(
            parse_exceptions(&args("10.0.0.1 proxy.example")),
            Err("proxy.example".to_string())
        );
    }
}
