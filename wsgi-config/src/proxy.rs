//! `WSGITrustedProxyHeaders` / `WSGITrustedProxies`: what a request's proxy headers may rewrite
//! in the environ, as mod_wsgi 6 does it (including its CVE-2022-2255 fix: the synonyms of a
//! trusted header are removed, and for an untrusted peer every header of a trusted category is
//! removed, so middleware further down cannot be fooled by a spoofed one).

use std::net::IpAddr;

use crate::model::WsgiSettings;

/// What a header category rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Category {
    Client,
    Host,
    Server,
    Port,
    ScriptName,
    Scheme,
}

/// Every header mod_wsgi knows, lowercased, with its category.
const HEADERS: &[(&str, Category)] = &[
    ("x-forwarded-for", Category::Client),
    ("x-client-ip", Category::Client),
    ("x-real-ip", Category::Client),
    ("x-forwarded-host", Category::Host),
    ("x-host", Category::Host),
    ("x-forwarded-server", Category::Server),
    ("x-forwarded-port", Category::Port),
    ("x-script-name", Category::ScriptName),
    ("x-forwarded-script-name", Category::ScriptName),
    ("x-forwarded-proto", Category::Scheme),
    ("x-forwarded-scheme", Category::Scheme),
    ("x-scheme", Category::Scheme),
    ("x-forwarded-https", Category::Scheme),
    ("x-forwarded-ssl", Category::Scheme),
    ("x-https", Category::Scheme),
];

/// The environ rewrites a request's trusted proxy headers call for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyRewrite {
    /// New `REMOTE_ADDR`.
    pub remote_addr: Option<String>,
    /// New `HTTP_HOST`.
    pub host: Option<String>,
    /// New `SERVER_NAME`.
    pub server_name: Option<String>,
    /// New `SERVER_PORT`.
    pub server_port: Option<String>,
    /// New `SCRIPT_NAME`.
    pub script_name: Option<String>,
    /// New `wsgi.url_scheme` (`http` or `https`).
    pub scheme: Option<String>,
    /// Request headers (lowercased names) to remove before the environ is built.
    pub remove: Vec<String>,
}

impl ProxyRewrite {
    /// Applies the header removals to a header list (names compared case-insensitively).
    pub fn filter_headers(&self, headers: &mut Vec<(String, Vec<u8>)>) {
        headers.retain(|(name, _)| !self.remove.iter().any(|r| r.eq_ignore_ascii_case(name)));
    }
}

fn header<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<String> {
    let values: Vec<&'a [u8]> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
        .collect();
    if values.is_empty() {
        return None;
    }
    let joined: Vec<String> = values
        .iter()
        .map(|v| String::from_utf8_lossy(v).trim().to_string())
        .collect();
    Some(joined.join(", "))
}

/// What the trusted proxy headers of `settings` rewrite for a request from `peer`; `None` when
/// no `WSGITrustedProxyHeaders` applies (nothing changes).
pub fn proxy_rewrite(
    settings: &WsgiSettings,
    peer: Option<IpAddr>,
    headers: &[(String, Vec<u8>)],
) -> Option<ProxyRewrite> {
    if settings.trusted_proxy_headers.is_empty() {
        return None;
    }
    let listed: Vec<(String, Category)> = settings
        .trusted_proxy_headers
        .iter()
        .filter_map(|h| {
            let lower = h.to_ascii_lowercase();
            HEADERS
                .iter()
                .find(|(n, _)| *n == lower)
                .map(|(_, c)| (lower, *c))
        })
        .collect();
    let trusted_peer = |ip: IpAddr| {
        settings.trusted_proxies.is_empty()
            || settings.trusted_proxies.iter().any(|n| n.contains(ip))
    };
    let peer_trusted = peer.is_some_and(trusted_peer);
    let mut rewrite = ProxyRewrite::default();
    let categories = [
        Category::Client,
        Category::Host,
        Category::Server,
        Category::Port,
        Category::ScriptName,
        Category::Scheme,
    ];
    for category in categories {
        let in_category: Vec<&String> = listed
            .iter()
            .filter(|(_, c)| *c == category)
            .map(|(n, _)| n)
            .collect();
        if in_category.is_empty() {
            continue;
        }
        // The header used: the first listed one the request carries, from a trusted peer.
        let used = if peer_trusted {
            in_category
                .iter()
                .find_map(|name| header(headers, name).map(|v| ((*name).clone(), v)))
        } else {
            None
        };
        for (name, c) in HEADERS {
            if *c == category && used.as_ref().is_none_or(|(u, _)| u != name) {
                rewrite.remove.push(name.to_string());
            }
        }
        let Some((name, value)) = used else { continue };
        match category {
            Category::Client => {
                rewrite.remote_addr = if name == "x-forwarded-for" {
                    // Right to left, past the proxies we trust; empty elements are skipped.
                    let hops: Vec<&str> = value
                        .split(',')
                        .map(str::trim)
                        .filter(|h| !h.is_empty())
                        .collect();
                    let mut client = hops.first().map(|s| s.to_string());
                    if !settings.trusted_proxies.is_empty() {
                        for hop in hops.iter().rev() {
                            client = Some(hop.to_string());
                            match hop.parse::<IpAddr>() {
                                Ok(ip) if trusted_peer(ip) => continue,
                                _ => break,
                            }
                        }
                    }
                    client
                } else {
                    Some(value.trim().to_string())
                };
            }
            Category::Host => rewrite.host = Some(value),
            Category::Server => rewrite.server_name = Some(value),
            Category::Port => rewrite.server_port = Some(value),
            Category::ScriptName => {
                rewrite.script_name = Some(value.trim_end_matches('/').to_string())
            }
            Category::Scheme => {
                let v = value.to_ascii_lowercase();
                let https = match name.as_str() {
                    "x-forwarded-proto" | "x-forwarded-scheme" | "x-scheme" => v == "https",
                    _ => matches!(v.as_str(), "on" | "1" | "true" | "yes"),
                };
                rewrite.scheme = Some(if https { "https" } else { "http" }.to_string());
            }
        }
    }
    Some(rewrite)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::IpNet;

    fn settings(headers: &[&str], proxies: &[&str]) -> WsgiSettings {
        WsgiSettings {
            trusted_proxy_headers: headers.iter().map(|s| s.to_string()).collect(),
            trusted_proxies: proxies.iter().map(|p| IpNet::parse(p).unwrap()).collect(),
            ..Default::default()
        }
    }

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn nothing_configured_changes_nothing() {
        assert_eq!(
            proxy_rewrite(
                &WsgiSettings::default(),
                None,
                &h(&[("X-Forwarded-For", "1.2.3.4")])
            ),
            None
        );
    }

    #[test]
    fn a_trusted_proxy_rewrites_and_synonyms_are_dropped() {
        let s = settings(
            &["X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host"],
            &["10.0.0.0/8"],
        );
        let headers = h(&[
            ("X-Forwarded-For", "203.0.113.7, 10.0.0.2"),
            ("X-Real-IP", "6.6.6.6"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "www.example.com"),
        ]);
        let r = proxy_rewrite(&s, Some("10.0.0.1".parse().unwrap()), &headers).unwrap();
        assert_eq!(
            r.remote_addr.as_deref(),
            Some("203.0.113.7"),
            "past the trusted 10.0.0.2"
        );
        assert_eq!(r.scheme.as_deref(), Some("https"));
        assert_eq!(r.host.as_deref(), Some("www.example.com"));
        assert!(r.remove.contains(&"x-real-ip".to_string()));
        assert!(!r.remove.contains(&"x-forwarded-for".to_string()));
        let mut filtered = headers.clone();
        r.filter_headers(&mut filtered);
        assert!(!filtered.iter().any(|(n, _)| n == "X-Real-IP"));
    }

    #[test]
    fn an_untrusted_peer_rewrites_nothing_and_loses_the_spoofed_headers() {
        let s = settings(&["X-Client-IP"], &["10.0.0.0/8"]);
        let headers = h(&[("X-Client-IP", "1.1.1.1"), ("X-Forwarded-For", "2.2.2.2")]);
        let r = proxy_rewrite(&s, Some("192.0.2.9".parse().unwrap()), &headers).unwrap();
        assert_eq!(r.remote_addr, None);
        for name in ["x-client-ip", "x-forwarded-for", "x-real-ip"] {
            assert!(r.remove.contains(&name.to_string()), "{name}");
        }
    }

    #[test]
    fn without_a_proxy_list_every_peer_is_trusted() {
        let s = settings(
            &[
                "X-Forwarded-For",
                "X-Forwarded-HTTPS",
                "X-Forwarded-Port",
                "X-Script-Name",
            ],
            &[],
        );
        let headers = h(&[
            ("X-Forwarded-For", ", 198.51.100.1, 10.0.0.2"),
            ("X-Forwarded-HTTPS", "On"),
            ("X-Forwarded-Port", "8443"),
            ("X-Script-Name", "/app/"),
        ]);
        let r = proxy_rewrite(&s, Some("127.0.0.1".parse().unwrap()), &headers).unwrap();
        assert_eq!(
            r.remote_addr.as_deref(),
            Some("198.51.100.1"),
            "empty elements skipped"
        );
        assert_eq!(r.scheme.as_deref(), Some("https"));
        assert_eq!(r.server_port.as_deref(), Some("8443"));
        assert_eq!(r.script_name.as_deref(), Some("/app"));
    }
}
