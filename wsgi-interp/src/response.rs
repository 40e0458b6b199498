//! Validation of what the app hands to `start_response` (latin-1 bytes, already encoded).

use std::borrow::Cow;

/// Checks a status line: three digits, a space, then a reason without control characters.
/// Returns the code and the reason.
pub(crate) fn parse_status(status: &[u8]) -> Result<(u16, Cow<'static, str>), String> {
    let shown = || String::from_utf8_lossy(status);
    if status.len() < 4
        || !status[..3].iter().all(u8::is_ascii_digit)
        || status[3] != b' '
        || status[0] == b'0'
    {
        return Err(format!(
            "status {:?} must be a 3-digit code, a space and a reason phrase, like '200 OK'",
            shown()
        ));
    }
    if status.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(format!("status {:?} contains a control character", shown()));
    }
    let code = (status[0] - b'0') as u16 * 100
        + (status[1] - b'0') as u16 * 10
        + (status[2] - b'0') as u16;
    let reason = &status[4..];
    // The usual phrase of a code (`200 OK`) as static text: no copy for nearly every response.
    let canonical = usual_reason(code).filter(|canonical| canonical.as_bytes() == reason);
    Ok(match canonical {
        Some(canonical) => (code, Cow::Borrowed(canonical)),
        None => (
            code,
            Cow::Owned(reason.iter().map(|&b| b as char).collect()),
        ),
    })
}

/// The reason phrase HTTP gives `status` (`OK` for 200), which hyper and Apache write when
/// they are given none; None for a code without one.
pub fn usual_reason(status: u16) -> Option<&'static str> {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|status| status.canonical_reason())
}

/// Checks a header: the name an RFC 9110 token, the value free of CR, LF and other control
/// characters except tab.
pub(crate) fn check_header(name: &[u8], value: &[u8]) -> Result<(), String> {
    const TOKEN_EXTRA: &[u8] = b"!#$%&'*+-.^_`|~";
    if name.is_empty()
        || !name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || TOKEN_EXTRA.contains(b))
    {
        return Err(format!(
            "header name {:?} is not a valid HTTP token",
            String::from_utf8_lossy(name)
        ));
    }
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(format!(
            "value of header {:?} contains a control character (CR/LF are not allowed)",
            String::from_utf8_lossy(name)
        ));
    }
    Ok(())
}

/// Parses a Content-Length value: decimal digits, with spaces or tabs around them (what
/// `start_response` accepts from an application, and so what a sink's `start` is given).
pub fn parse_content_length(value: &[u8]) -> Result<u64, String> {
    let digits = value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(format!(
            "Content-Length {:?} is not a number",
            String::from_utf8_lossy(value)
        ));
    }
    digits
        .iter()
        .try_fold(0u64, |n, &d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .ok_or_else(|| {
            format!(
                "Content-Length {:?} is too large",
                String::from_utf8_lossy(digits)
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_rules() {
        assert_eq!(parse_status(b"200 OK").unwrap(), (200, "OK".into()));
        assert!(matches!(
            parse_status(b"404 Not Found").unwrap(),
            (404, Cow::Borrowed("Not Found"))
        ));
        // Another phrase, or another case of the usual one, is kept as the app wrote it.
        assert_eq!(
            parse_status(b"404 Not \xe9").unwrap(),
            (404, "Not \u{e9}".into())
        );
        assert!(matches!(parse_status(b"200 ok").unwrap(), (200, Cow::Owned(r)) if r == "ok"));
        assert!(matches!(parse_status(b"299 OK").unwrap(), (299, Cow::Owned(r)) if r == "OK"));
        assert!(matches!(parse_status(b"200 ").unwrap(), (200, Cow::Owned(r)) if r.is_empty()));
        assert!(parse_status(b"200").is_err());
        assert!(parse_status(b"20 OK").is_err());
        assert!(parse_status(b"2000 OK").is_err());
        assert!(parse_status(b"200 OK\r\nX: y").is_err());
        assert!(parse_status(b"abc OK").is_err());
    }

    #[test]
    fn header_rules() {
        assert!(check_header(b"Content-Type", b"text/plain; a=\tb").is_ok());
        assert!(check_header(b"Bad Name", b"x").is_err());
        assert!(check_header(b"", b"x").is_err());
        assert!(check_header(b"X", b"a\r\nSet-Cookie: evil").is_err());
        assert!(check_header(b"X", b"a\nb").is_err());
    }

    #[test]
    fn content_length_rules() {
        assert_eq!(parse_content_length(b"12").unwrap(), 12);
        assert_eq!(parse_content_length(b" 7 ").unwrap(), 7);
        assert!(parse_content_length(b"-1").is_err());
        assert!(parse_content_length(b"1e3").is_err());
        assert!(parse_content_length(b"").is_err());
        assert!(parse_content_length(b"  ").is_err());
        assert!(parse_content_length(b"+5").is_err());
        assert!(parse_content_length(b"1 2").is_err());
        assert!(parse_content_length("\u{663}".as_bytes()).is_err());
        assert_eq!(parse_content_length(b"\t5\t").unwrap(), 5);
        assert_eq!(parse_content_length(b"007").unwrap(), 7);
        assert_eq!(
            parse_content_length(b"18446744073709551615").unwrap(),
            u64::MAX
        );
        let too_large = parse_content_length(b"18446744073709551616").unwrap_err();
        assert!(too_large.contains("too large"), "{too_large}");
    }
}
