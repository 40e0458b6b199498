//! The CGI part of the WSGI environ, computed without Python (so it is unit-tested here); the
//! ffi layer turns it into a dict with per-interpreter interned keys.

use std::borrow::Cow;

use crate::wsgi::{CallOptions, RequestHead, Scheme};

/// Environ keys interned once per interpreter. The index is the key's identity.
pub(crate) const KEYS: &[&str] = &[
    "REQUEST_METHOD",
    "SCRIPT_NAME",
    "PATH_INFO",
    "QUERY_STRING",
    "REQUEST_URI",
    "SERVER_PROTOCOL",
    "SERVER_NAME",
    "SERVER_PORT",
    "REMOTE_ADDR",
    "REMOTE_PORT",
    "REQUEST_SCHEME",
    "SERVER_SOFTWARE",
    "CONTENT_TYPE",
    "CONTENT_LENGTH",
    "HTTPS",
    "mod_wsgi.script_name",
    "mod_wsgi.path_info",
    "mod_wsgi.process_group",
    "mod_wsgi.application_group",
    "mod_wsgi.callable_object",
    "mod_wsgi.script_reloading",
    "mod_wsgi.version",
    "wsgi.version",
    "wsgi.url_scheme",
    "wsgi.input",
    "wsgi.errors",
    "wsgi.multithread",
    "wsgi.multiprocess",
    "wsgi.run_once",
    "wsgi.input_terminated",
    "wsgi.file_wrapper",
    "HTTP_HOST",
    "HTTP_USER_AGENT",
    "HTTP_ACCEPT",
    "HTTP_ACCEPT_ENCODING",
    "HTTP_ACCEPT_LANGUAGE",
    "HTTP_CONNECTION",
    "HTTP_COOKIE",
    "HTTP_REFERER",
    "HTTP_CACHE_CONTROL",
    "HTTP_X_FORWARDED_FOR",
    "HTTP_AUTHORIZATION",
];

/// Indices into [`KEYS`] for the keys the ffi layer sets itself.
pub(crate) mod k {
    pub const PROCESS_GROUP: usize = 17;
    pub const APPLICATION_GROUP: usize = 18;
    pub const CALLABLE_OBJECT: usize = 19;
    pub const SCRIPT_RELOADING: usize = 20;
    pub const MOD_WSGI_VERSION: usize = 21;
    pub const WSGI_VERSION: usize = 22;
    pub const URL_SCHEME: usize = 23;
    pub const INPUT: usize = 24;
    pub const ERRORS: usize = 25;
    pub const MULTITHREAD: usize = 26;
    pub const MULTIPROCESS: usize = 27;
    pub const RUN_ONCE: usize = 28;
    pub const INPUT_TERMINATED: usize = 29;
    pub const FILE_WRAPPER: usize = 30;
}

/// `mod_wsgi.version`: the mod_wsgi behaviour this host reproduces.
pub const MOD_WSGI_VERSION: (u8, u8, u8) = (6, 0, 0);

/// `SERVER_SOFTWARE`.
const SERVER_SOFTWARE: &str = concat!("wsgi-rs/", env!("CARGO_PKG_VERSION"));

/// An environ key: one of [`KEYS`] or a computed name (an uncommon `HTTP_*`, an extra).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Key {
    Known(usize),
    Other(String),
}

impl Key {
    fn named(name: &str) -> Key {
        match KEYS.iter().position(|k| *k == name) {
            Some(i) => Key::Known(i),
            None => Key::Other(name.to_string()),
        }
    }

    #[cfg(test)]
    fn name(&self) -> &str {
        match self {
            Key::Known(i) => KEYS[*i],
            Key::Other(s) => s,
        }
    }
}

/// Collapses runs of `/` into one, as mod_wsgi does for SCRIPT_NAME and PATH_INFO.
fn collapse_slashes(p: &[u8]) -> Cow<'_, [u8]> {
    if !p.windows(2).any(|w| w == b"//") {
        return Cow::Borrowed(p);
    }
    let mut out = Vec::with_capacity(p.len());
    for &b in p {
        if b == b'/' && out.last() == Some(&b'/') {
            continue;
        }
        out.push(b);
    }
    Cow::Owned(out)
}

/// The `HTTP_*` name of a request header, or `None` when the header must not reach the app:
/// names with anything but ASCII alphanumerics and `-` (Apache drops them, anti-spoofing),
/// `Proxy` (httpoxy), `Authorization` unless passed on purpose, and the `Content-*` pair
/// (which become `CONTENT_TYPE` / `CONTENT_LENGTH`).
fn header_key(name: &str, pass_authorization: bool) -> Option<String> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return None;
    }
    if name.eq_ignore_ascii_case("proxy")
        || (!pass_authorization && name.eq_ignore_ascii_case("authorization"))
    {
        return None;
    }
    if name.eq_ignore_ascii_case("content-type") {
        return Some("CONTENT_TYPE".to_string());
    }
    if name.eq_ignore_ascii_case("content-length") {
        return Some("CONTENT_LENGTH".to_string());
    }
    let mut key = String::with_capacity(5 + name.len());
    key.push_str("HTTP_");
    for c in name.chars() {
        key.push(if c == '-' {
            '_'
        } else {
            c.to_ascii_uppercase()
        });
    }
    Some(key)
}

/// The CGI variables of the environ, in a stable order, with values as bytes (the ffi layer
/// decodes them as latin-1). Repeated headers are joined with `", "`, except `Cookie`, joined
/// with `"; "` so cookie parsers can split it.
pub(crate) fn cgi_variables<'a>(
    req: &'a RequestHead,
    opts: &CallOptions,
) -> Vec<(Key, Cow<'a, [u8]>)> {
    let script_name = collapse_slashes(&req.script_name);
    let path_info = collapse_slashes(&req.path_info);
    let mut vars: Vec<(Key, Cow<'a, [u8]>)> = vec![
        (Key::Known(0), Cow::Borrowed(req.method.as_bytes())),
        (Key::Known(1), script_name.clone()),
        (Key::Known(2), path_info.clone()),
        (Key::Known(3), Cow::Borrowed(&req.query_string)),
        (Key::Known(4), Cow::Borrowed(&req.request_uri)),
        (Key::Known(5), Cow::Borrowed(req.protocol.as_bytes())),
        (Key::Known(6), Cow::Borrowed(req.server_name.as_bytes())),
        (
            Key::Known(7),
            Cow::Owned(req.server_port.to_string().into_bytes()),
        ),
        (Key::Known(8), Cow::Borrowed(req.remote_addr.as_bytes())),
        (
            Key::Known(9),
            Cow::Owned(req.remote_port.to_string().into_bytes()),
        ),
        (
            Key::Known(10),
            Cow::Borrowed(match req.scheme {
                Scheme::Http => b"http".as_slice(),
                Scheme::Https => b"https".as_slice(),
            }),
        ),
        (Key::Known(11), Cow::Borrowed(SERVER_SOFTWARE.as_bytes())),
        (Key::Known(15), script_name),
        (Key::Known(16), path_info),
    ];
    if req.scheme == Scheme::Https {
        vars.push((Key::Known(14), Cow::Borrowed(b"on")));
    }
    let mut headers: Vec<(String, Vec<u8>)> = Vec::new();
    for (name, value) in &req.headers {
        let Some(key) = header_key(name, opts.pass_authorization) else {
            continue;
        };
        match headers.iter_mut().find(|(k, _)| *k == key) {
            Some((_, joined)) => {
                joined.extend_from_slice(if key == "HTTP_COOKIE" { b"; " } else { b", " });
                joined.extend_from_slice(value);
            }
            None => headers.push((key, value.clone())),
        }
    }
    for (key, value) in headers {
        vars.push((Key::named(&key), Cow::Owned(value)));
    }
    for (name, value) in &req.extra {
        let key = Key::named(name);
        vars.retain(|(k, _)| *k != key);
        vars.push((key, Cow::Borrowed(value)));
    }
    vars
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(vars: &'a [(Key, Cow<'_, [u8]>)], name: &str) -> Option<&'a [u8]> {
        vars.iter()
            .find(|(k, _)| k.name() == name)
            .map(|(_, v)| v.as_ref())
    }

    fn head(headers: &[(&str, &str)]) -> RequestHead {
        RequestHead {
            method: "GET".into(),
            script_name: b"/app".to_vec(),
            path_info: b"//x//y".to_vec(),
            protocol: "HTTP/1.1".into(),
            server_name: "example.org".into(),
            server_port: 8080,
            remote_addr: "10.0.0.1".into(),
            remote_port: 5555,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn indices_match_names() {
        assert_eq!(KEYS[k::PROCESS_GROUP], "mod_wsgi.process_group");
        assert_eq!(KEYS[k::APPLICATION_GROUP], "mod_wsgi.application_group");
        assert_eq!(KEYS[k::CALLABLE_OBJECT], "mod_wsgi.callable_object");
        assert_eq!(KEYS[k::SCRIPT_RELOADING], "mod_wsgi.script_reloading");
        assert_eq!(KEYS[k::MOD_WSGI_VERSION], "mod_wsgi.version");
        assert_eq!(KEYS[k::WSGI_VERSION], "wsgi.version");
        assert_eq!(KEYS[k::URL_SCHEME], "wsgi.url_scheme");
        assert_eq!(KEYS[k::INPUT], "wsgi.input");
        assert_eq!(KEYS[k::ERRORS], "wsgi.errors");
        assert_eq!(KEYS[k::MULTITHREAD], "wsgi.multithread");
        assert_eq!(KEYS[k::MULTIPROCESS], "wsgi.multiprocess");
        assert_eq!(KEYS[k::RUN_ONCE], "wsgi.run_once");
        assert_eq!(KEYS[k::INPUT_TERMINATED], "wsgi.input_terminated");
        assert_eq!(KEYS[k::FILE_WRAPPER], "wsgi.file_wrapper");
    }

    #[test]
    fn headers_fold_as_apache_does() {
        let req = head(&[
            ("Host", "a"),
            ("X-Thing", "1"),
            ("x-thing", "2"),
            ("Cookie", "a=1"),
            ("Cookie", "b=2"),
            ("X_Spoof", "no"),
            ("Proxy", "http://evil"),
            ("Authorization", "Basic x"),
            ("Content-Type", "text/plain"),
            ("Content-Length", "3"),
        ]);
        let vars = cgi_variables(&req, &CallOptions::default());
        assert_eq!(get(&vars, "HTTP_HOST"), Some(b"a".as_slice()));
        assert_eq!(get(&vars, "HTTP_X_THING"), Some(b"1, 2".as_slice()));
        assert_eq!(get(&vars, "HTTP_COOKIE"), Some(b"a=1; b=2".as_slice()));
        assert_eq!(get(&vars, "CONTENT_TYPE"), Some(b"text/plain".as_slice()));
        assert_eq!(get(&vars, "CONTENT_LENGTH"), Some(b"3".as_slice()));
        assert!(get(&vars, "HTTP_CONTENT_TYPE").is_none());
        assert!(get(&vars, "HTTP_X_SPOOF").is_none());
        assert!(get(&vars, "HTTP_PROXY").is_none());
        assert!(get(&vars, "HTTP_AUTHORIZATION").is_none());
        assert_eq!(get(&vars, "QUERY_STRING"), Some(b"".as_slice()));
        assert_eq!(get(&vars, "PATH_INFO"), Some(b"/x/y".as_slice()));
        assert_eq!(get(&vars, "mod_wsgi.path_info"), Some(b"/x/y".as_slice()));
        assert_eq!(get(&vars, "SERVER_PORT"), Some(b"8080".as_slice()));
        assert!(get(&vars, "HTTPS").is_none());
        let with_auth = cgi_variables(
            &req,
            &CallOptions {
                pass_authorization: true,
                ..Default::default()
            },
        );
        assert_eq!(
            get(&with_auth, "HTTP_AUTHORIZATION"),
            Some(b"Basic x".as_slice())
        );
    }

    #[test]
    fn extras_override() {
        let mut req = head(&[]);
        req.extra = vec![
            ("SERVER_NAME".into(), b"other".to_vec()),
            ("REMOTE_USER".into(), b"bob".to_vec()),
        ];
        let vars = cgi_variables(&req, &CallOptions::default());
        assert_eq!(get(&vars, "SERVER_NAME"), Some(b"other".as_slice()));
        assert_eq!(
            vars.iter()
                .filter(|(k, _)| k.name() == "SERVER_NAME")
                .count(),
            1
        );
        assert_eq!(get(&vars, "REMOTE_USER"), Some(b"bob".as_slice()));
    }
}
