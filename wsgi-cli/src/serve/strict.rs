//! What the front refuses before routing, as Apache httpd 2.4 (`HttpProtocolOptions Strict`,
//! RFC 9112) does, once hyper has parsed a request head: a missing, repeated or malformed
//! `Host`, a request line or header field over Apache's limits, and request framing that
//! could be read two ways (`chunked` repeated or not last, an unknown transfer coding).
//! `OPTIONS *` is answered here, as Apache answers it.

use http::header::{self, HeaderMap};
use http::{Method, Version};

/// Apache's request line and field limits (`LimitRequestLine`, `LimitRequestFieldSize`).
/// As in Apache, a line may be one byte longer than the limit (Apache's buffer holds the
/// limit plus the line's end): with 8190, a request line or `Name: value` field of 8,191
/// bytes passes and 8,192 is refused.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// `LimitRequestLine`: the request line (method, target and protocol): 414 beyond.
    pub max_request_line: usize,
    /// `LimitRequestFieldSize`: a header field (`Name: value`): 400 beyond.
    pub max_field_size: usize,
}

/// A request refused before it reached an application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The status to answer.
    pub status: u16,
    /// Why, for the log.
    pub reason: String,
}

impl Refusal {
    fn new(status: u16, reason: impl Into<String>) -> Refusal {
        Refusal {
            status,
            reason: reason.into(),
        }
    }
}

/// What to do with a parsed request head.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Route it.
    Pass,
    /// `OPTIONS *`: answer 200 with `Allow`, in the server.
    ServerOptions,
    /// Refuse it.
    Refuse(Refusal),
}

/// What the checks look at in a request head hyper parsed.
#[derive(Debug, Clone, Copy)]
pub struct Head<'a> {
    /// The method.
    pub method: &'a Method,
    /// The target, as received.
    pub target: &'a [u8],
    /// The protocol version.
    pub version: Version,
    /// The header fields.
    pub headers: &'a HeaderMap,
    /// Whether hyper found a body (a Transfer-Encoding, or a Content-Length above 0): only
    /// then is there framing to check.
    pub has_body: bool,
    /// The length of the request line as received (method, target, protocol, two spaces).
    pub request_line_len: usize,
    /// The whole head's length, when known (no field can be longer, so a short head's fields
    /// are not measured one by one).
    pub head_len: Option<usize>,
}

/// Checks a request head.
pub fn check(head: &Head<'_>, limits: &HeadLimits) -> Verdict {
    let Head {
        method,
        target,
        version,
        headers,
        has_body,
        request_line_len,
        head_len,
    } = *head;
    if request_line_len > limits.max_request_line + 1 {
        return Verdict::Refuse(Refusal::new(
            414,
            format!(
                "the request line is {request_line_len} bytes long, over the limit of {}",
                limits.max_request_line
            ),
        ));
    }
    let fields = match head_len {
        Some(len) if len <= limits.max_field_size + 1 => None,
        _ => Some(headers),
    };
    for (name, value) in fields.into_iter().flatten() {
        let size = name.as_str().len() + 2 + value.len();
        if size > limits.max_field_size + 1 {
            return Verdict::Refuse(Refusal::new(
                400,
                format!(
                    "the request header field `{name}` is {size} bytes long, over the limit of {}",
                    limits.max_field_size
                ),
            ));
        }
    }
    if let Err(refusal) = check_host(version, headers) {
        return Verdict::Refuse(refusal);
    }
    if has_body {
        if let Err(refusal) = check_transfer_encoding(headers) {
            return Verdict::Refuse(refusal);
        }
    }
    if target.contains(&b'#') {
        return Verdict::Refuse(Refusal::new(
            400,
            "the request target holds a fragment (#): clients must not send one",
        ));
    }
    if target == b"*" {
        return if method == Method::OPTIONS {
            Verdict::ServerOptions
        } else {
            Verdict::Refuse(Refusal::new(
                400,
                format!("`{method} *`: only OPTIONS may have the target `*`"),
            ))
        };
    }
    Verdict::Pass
}

/// One `Host` on HTTP/1.1 (at most one on 1.0), and a valid one.
fn check_host(version: Version, headers: &HeaderMap) -> Result<(), Refusal> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => {
            return Err(Refusal::new(
                400,
                "the request has more than one Host header",
            ));
        }
        (Some(host), None) => host,
        (None, _) if version == Version::HTTP_10 || version == Version::HTTP_09 => return Ok(()),
        (None, _) => {
            return Err(Refusal::new(
                400,
                "an HTTP/1.1 request without a Host header",
            ));
        }
    };
    if host.is_empty() {
        if version == Version::HTTP_10 || version == Version::HTTP_09 {
            return Ok(());
        }
        return Err(Refusal::new(
            400,
            "an HTTP/1.1 request with an empty Host header",
        ));
    }
    if valid_host(host.as_bytes()) {
        Ok(())
    } else {
        Err(Refusal::new(
            400,
            format!(
                "the Host header `{}` is not a valid host name",
                String::from_utf8_lossy(host.as_bytes()).escape_debug()
            ),
        ))
    }
}

/// RFC 3986 `host [ ":" port ]` as Apache's strict check takes it: an IPv6 literal in
/// brackets, or a name of letters, digits, `-`, `.` and `_` (not starting with `.`, no `..`,
/// so no `/`, `\`, `%` or non-ASCII byte), then optionally `:` and a port of 1 to 5 digits up
/// to 65535.
pub fn valid_host(host: &[u8]) -> bool {
    if host.is_empty() {
        return false;
    }
    let (name, port) = if host[0] == b'[' {
        let Some(end) = host.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = &host[1..end];
        let ok = std::str::from_utf8(literal)
            .ok()
            .and_then(|s| s.parse::<std::net::Ipv6Addr>().ok())
            .is_some();
        if !ok {
            return false;
        }
        match &host[end + 1..] {
            [] => return true,
            [b':', port @ ..] => (&host[..=end], port),
            _ => return false,
        }
    } else {
        match host.iter().rposition(|&b| b == b':') {
            Some(at) => (&host[..at], &host[at + 1..]),
            None => (host, &b""[..]),
        }
    };
    let has_port = name.len() < host.len();
    if has_port
        && (port.is_empty()
            || !port.iter().all(u8::is_ascii_digit)
            || std::str::from_utf8(port)
                .ok()
                .and_then(|p| p.parse::<u16>().ok())
                .is_none())
    {
        return false;
    }
    if name.first() == Some(&b'[') {
        return true;
    }
    !name.is_empty()
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        && !name.windows(2).any(|w| w == b"..")
        && name[0] != b'.'
}

/// `Transfer-Encoding`, across all its lines, as Apache and mod_wsgi take it: the last
/// coding must be `chunked` (else 400: the body's end could not be known) and `chunked` may
/// be applied once (400); any other coding before it is one this server does not decode (501).
fn check_transfer_encoding(headers: &HeaderMap) -> Result<(), Refusal> {
    let mut codings = Vec::new();
    for value in headers.get_all(header::TRANSFER_ENCODING) {
        for coding in value.as_bytes().split(|&b| b == b',') {
            let coding = coding.trim_ascii();
            if !coding.is_empty() {
                codings.push(coding.to_ascii_lowercase());
            }
        }
    }
    if codings.is_empty() {
        return Ok(());
    }
    let text = || {
        codings
            .iter()
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if codings.last().map(Vec::as_slice) != Some(b"chunked") {
        return Err(Refusal::new(
            400,
            format!(
                "Transfer-Encoding: {}: the last transfer coding must be chunked",
                text()
            ),
        ));
    }
    if codings
        .iter()
        .filter(|c| c.as_slice() == b"chunked")
        .count()
        > 1
    {
        return Err(Refusal::new(
            400,
            format!(
                "Transfer-Encoding: {}: chunked may be applied only once",
                text()
            ),
        ));
    }
    if let Some(other) = codings.iter().find(|c| c.as_slice() != b"chunked") {
        return Err(Refusal::new(
            501,
            format!(
                "Transfer-Encoding: {}: the transfer coding `{}` is not supported, only chunked",
                text(),
                String::from_utf8_lossy(other)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const LIMITS: HeadLimits = HeadLimits {
        max_request_line: 8190,
        max_field_size: 8190,
    };

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        map
    }

    fn head<'a>(
        method: &'a Method,
        target: &'a [u8],
        headers: &'a HeaderMap,
        request_line_len: usize,
    ) -> Head<'a> {
        Head {
            method,
            target,
            version: Version::HTTP_11,
            headers,
            has_body: true,
            request_line_len,
            head_len: None,
        }
    }

    fn verdict(version: Version, pairs: &[(&str, &[u8])]) -> Verdict {
        let map = headers(pairs);
        let h = Head {
            version,
            ..head(&Method::GET, b"/", &map, 14)
        };
        check(&h, &LIMITS)
    }

    fn status(v: Verdict) -> u16 {
        match v {
            Verdict::Refuse(r) => r.status,
            Verdict::Pass => 0,
            Verdict::ServerOptions => 200,
        }
    }

    #[test]
    fn host_is_required_once_on_http_1_1() {
        assert_eq!(status(verdict(Version::HTTP_11, &[])), 400);
        assert_eq!(status(verdict(Version::HTTP_10, &[])), 0);
        assert_eq!(status(verdict(Version::HTTP_11, &[("host", b"a")])), 0);
        assert_eq!(status(verdict(Version::HTTP_11, &[("host", b"")])), 400);
        assert_eq!(status(verdict(Version::HTTP_10, &[("host", b"")])), 0);
        let two = [("host", &b"x"[..]), ("host", &b"evil.example"[..])];
        assert_eq!(status(verdict(Version::HTTP_11, &two)), 400);
        assert_eq!(status(verdict(Version::HTTP_10, &two)), 400);
    }

    #[test]
    fn host_syntax() {
        for good in [
            &b"example.com"[..],
            b"EXAMPLE.com:8080",
            b"under_score.example",
            b"-example.com",
            b"1.2.3.4:80",
            b"[::1]",
            b"[::1]:8080",
            b"example.com.",
            b"example.com:65535",
        ] {
            assert!(valid_host(good), "{}", String::from_utf8_lossy(good));
        }
        for bad in [
            &b"a b"[..],
            b"ex/ample",
            b"ex\\ample",
            b"a..b",
            b"[::1",
            b"[zz]:80",
            b"example.com:80x",
            b"example.com:123456",
            b"ex%41mple",
            b"caf\xc3\xa9",
            b".example",
            b":80",
            b"example.com:",
            b"example.com:99999",
            b"",
        ] {
            assert!(!valid_host(bad), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn chunked_once_and_last_and_nothing_else() {
        let te = |v: &[&[u8]]| {
            let mut pairs: Vec<(&str, &[u8])> = vec![("host", b"a")];
            pairs.extend(v.iter().map(|v| ("transfer-encoding", *v)));
            status(verdict(Version::HTTP_11, &pairs))
        };
        assert_eq!(te(&[b"chunked"]), 0);
        assert_eq!(te(&[b"Chunked"]), 0);
        assert_eq!(te(&[b"chunked, chunked"]), 400);
        assert_eq!(te(&[b"chunked", b"chunked"]), 400);
        assert_eq!(te(&[b"gzip, chunked"]), 501);
        assert_eq!(te(&[b"chunked, gzip"]), 400);
        assert_eq!(te(&[b"identity"]), 400);
        assert_eq!(te(&[b"xchunked"]), 400);
    }

    #[test]
    fn limits_and_options_star() {
        let get = Method::GET;
        // `X-Long: ` + value: 8,191 bytes pass, 8,192 do not (Apache's own boundary).
        let field = |n: usize| {
            let value = vec![b'a'; n - "x-long: ".len()];
            let map = headers(&[("host", b"a"), ("x-long", &value)]);
            status(check(&head(&get, b"/", &map, 14), &LIMITS))
        };
        assert_eq!(field(8191), 0);
        assert_eq!(field(8192), 400);
        // The fields of a head whose length is known are measured only when it could hold
        // one over the limit.
        let value = vec![b'a'; 9000];
        let map = headers(&[("host", b"a"), ("x-long", &value)]);
        let long = Head {
            head_len: Some(9100),
            ..head(&get, b"/", &map, 14)
        };
        assert_eq!(status(check(&long, &LIMITS)), 400);
        let map = headers(&[("host", b"a"), ("x-short", b"b")]);
        let short = Head {
            head_len: Some(40),
            ..head(&get, b"/", &map, 14)
        };
        assert_eq!(status(check(&short, &LIMITS)), 0);
        let h = headers(&[("host", b"a")]);
        assert_eq!(status(check(&head(&get, b"/", &h, 8192), &LIMITS)), 414);
        assert_eq!(status(check(&head(&get, b"/a", &h, 8191), &LIMITS)), 0);
        assert_eq!(status(check(&head(&get, b"/a#b", &h, 18), &LIMITS)), 400);
        assert_eq!(
            check(&head(&Method::OPTIONS, b"*", &h, 18), &LIMITS),
            Verdict::ServerOptions
        );
        assert_eq!(status(check(&head(&get, b"*", &h, 14), &LIMITS)), 400);
    }
}
