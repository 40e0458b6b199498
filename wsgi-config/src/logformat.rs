//! mod_log_config's `LogFormat` strings, parsed into the items `wsgi serve` writes for each
//! request (`CustomLog`, `TransferLog`). A format using a directive `wsgi serve` does not
//! implement is refused when the configuration is read, never logged wrongly.

/// One piece of a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogItem {
    /// Text as written (`\n`, `\t`, `\"` and `\\` unescaped).
    Text(String),
    /// `%a`, `%h` (no hostname lookups: the address): the client's address (with the PROXY
    /// protocol, the one the header names).
    RemoteAddr,
    /// `%{c}a`: the connection's own peer (with the PROXY protocol, the balancer; else the
    /// client, as `%a`).
    ConnAddr,
    /// `%A`: the server's address the request came in on.
    LocalAddr,
    /// `%b`: body bytes sent, `-` for none.
    BytesClf,
    /// `%B`: body bytes sent.
    Bytes,
    /// `%D`: microseconds to serve the request.
    Micros,
    /// `%{VAR}e`: an environment variable of the request.
    Env(String),
    /// `%f`: the file the request was served from (the WSGI script).
    Filename,
    /// `%H`: the protocol.
    Protocol,
    /// `%{Name}i`: a request header.
    RequestHeader(String),
    /// `%k`: keep-alive requests handled on the connection before this one.
    KeepAlives,
    /// `%l`: identd (always `-`).
    Dash,
    /// `%m`: the method.
    Method,
    /// `%{Name}o`: a response header.
    ResponseHeader(String),
    /// `%p`, `%{canonical}p`, `%{local}p`: the server's port; `%{remote}p`: the client's.
    Port {
        /// `%{remote}p`.
        remote: bool,
    },
    /// `%P`: the process id.
    Pid,
    /// `%q`: the query string with its `?`, or nothing.
    Query,
    /// `%r`: the request line.
    RequestLine,
    /// `%s`, `%>s`: the status.
    Status,
    /// `%t` (`[10/Oct/2000:13:55:36 -0700]`) or `%{strftime format}t`.
    Time(Option<String>),
    /// `%T`, `%{s}T`: whole seconds; `%{ms}T`, `%{us}T`.
    Duration(DurationUnit),
    /// `%u`: the authenticated user, or `-`.
    User,
    /// `%U`: the URL path, without the query string.
    UrlPath,
    /// `%v`: the server's canonical name.
    ServerName,
    /// `%V`: the host name the request asked for.
    Host,
    /// `%X`: the connection's state after the response: `+` kept alive, `-` closed, `X`
    /// aborted.
    ConnStatus,
    /// `%I`: bytes received, head included.
    BytesIn,
    /// `%O`: bytes sent, head included.
    BytesOut,
    /// `%L`: the request's log id, the application's `mod_wsgi.request_id` (none: `-`).
    LogId,
}

/// The unit of `%{UNIT}T`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurationUnit {
    /// Seconds.
    Seconds,
    /// Milliseconds.
    Millis,
    /// Microseconds.
    Micros,
}

/// The format `TransferLog` uses when no `LogFormat` without a nickname came before it:
/// Apache's Common Log Format.
pub const DEFAULT_FORMAT: &str = "%h %l %u %t \"%r\" %>s %b";

/// Parses a `LogFormat` string. `Err` names the part `wsgi serve` does not implement.
pub fn parse(format: &str) -> Result<Vec<LogItem>, String> {
    let mut items = Vec::new();
    let mut text = String::new();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('n') => text.push('\n'),
                Some('t') => text.push('\t'),
                Some(other) => text.push(other),
                None => text.push('\\'),
            },
            '%' => {
                let mut arg: Option<String> = None;
                let mut final_status = false;
                loop {
                    match chars.peek() {
                        Some('{') => {
                            chars.next();
                            let mut a = String::new();
                            for c in chars.by_ref() {
                                if c == '}' {
                                    break;
                                }
                                a.push(c);
                            }
                            arg = Some(a);
                        }
                        Some('>') => {
                            chars.next();
                            final_status = true;
                        }
                        Some('<') => {
                            chars.next();
                        }
                        Some(c) if c.is_ascii_digit() || *c == '!' || *c == ',' => {
                            return Err(
                                "status conditions (`%400,501{...}`) are not implemented by wsgi serve"
                                    .into(),
                            );
                        }
                        _ => break,
                    }
                }
                let Some(directive) = chars.next() else {
                    return Err("the format ends with a lone %".into());
                };
                if directive == '%' {
                    text.push('%');
                    continue;
                }
                let _ = final_status;
                let item = match (directive, arg.as_deref()) {
                    ('a', None) | ('h', None) => LogItem::RemoteAddr,
                    ('a', Some("c")) => LogItem::ConnAddr,
                    ('A', None) => LogItem::LocalAddr,
                    ('b', None) => LogItem::BytesClf,
                    ('B', None) => LogItem::Bytes,
                    ('D', None) => LogItem::Micros,
                    ('e', Some(var)) => LogItem::Env(var.to_string()),
                    ('f', None) => LogItem::Filename,
                    ('H', None) => LogItem::Protocol,
                    ('i', Some(name)) => LogItem::RequestHeader(name.to_string()),
                    ('k', None) => LogItem::KeepAlives,
                    ('l', None) => LogItem::Dash,
                    ('m', None) => LogItem::Method,
                    ('o', Some(name)) => LogItem::ResponseHeader(name.to_string()),
                    ('p', None | Some("canonical" | "local")) => LogItem::Port { remote: false },
                    ('p', Some("remote")) => LogItem::Port { remote: true },
                    ('P', None | Some("pid")) => LogItem::Pid,
                    ('q', None) => LogItem::Query,
                    ('r', None) => LogItem::RequestLine,
                    ('s', None) => LogItem::Status,
                    ('t', None) => LogItem::Time(None),
                    ('t', Some(f)) if f.starts_with("begin:") || f.starts_with("end:") => {
                        let f = f.split_once(':').map(|(_, f)| f).unwrap_or("");
                        time_item(f)?
                    }
                    ('t', Some(f)) => time_item(f)?,
                    ('T', None | Some("s")) => LogItem::Duration(DurationUnit::Seconds),
                    ('T', Some("ms")) => LogItem::Duration(DurationUnit::Millis),
                    ('T', Some("us")) => LogItem::Duration(DurationUnit::Micros),
                    ('u', None) => LogItem::User,
                    ('U', None) => LogItem::UrlPath,
                    ('v', None) => LogItem::ServerName,
                    ('V', None) => LogItem::Host,
                    ('X', None) => LogItem::ConnStatus,
                    ('I', None) => LogItem::BytesIn,
                    ('O', None) => LogItem::BytesOut,
                    ('L', None) => LogItem::LogId,
                    (d, arg) => {
                        let written = match arg {
                            Some(a) => format!("%{{{a}}}{d}"),
                            None => format!("%{d}"),
                        };
                        return Err(format!(
                            "the log format directive `{written}` is not implemented by wsgi serve"
                        ));
                    }
                };
                if !text.is_empty() {
                    items.push(LogItem::Text(std::mem::take(&mut text)));
                }
                items.push(item);
            }
            c => text.push(c),
        }
    }
    if !text.is_empty() {
        items.push(LogItem::Text(text));
    }
    Ok(items)
}

/// `%{format}t`: a strftime format (chrono's, which covers the common ones), or the
/// `sec`/`msec`/`usec` forms.
fn time_item(format: &str) -> Result<LogItem, String> {
    match format {
        "sec" | "msec" | "usec" | "msec_frac" | "usec_frac" => {
            Ok(LogItem::Time(Some(format.into())))
        }
        f if chrono::format::StrftimeItems::new(f).parse().is_ok() => {
            Ok(LogItem::Time(Some(f.to_string())))
        }
        f => Err(format!(
            "the time format `%{{{f}}}t` is not implemented by wsgi serve"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_and_combined_formats() {
        let items =
            parse("%h %l %u %t \\\"%r\\\" %>s %b \\\"%{Referer}i\\\" \\\"%{User-agent}i\\\"")
                .unwrap();
        assert_eq!(items[0], LogItem::RemoteAddr);
        assert_eq!(items[1], LogItem::Text(" ".into()));
        assert!(items.contains(&LogItem::RequestLine));
        assert!(items.contains(&LogItem::Status));
        assert!(items.contains(&LogItem::RequestHeader("User-agent".into())));
        assert_eq!(items.last(), Some(&LogItem::Text("\"".into())));
        let vhost = parse("%v:%p %h %O %{ms}T %D %{X-Id}o %{APP}e %q%%").unwrap();
        assert!(vhost.contains(&LogItem::ServerName));
        assert!(vhost.contains(&LogItem::Duration(DurationUnit::Millis)));
        assert!(vhost.contains(&LogItem::ResponseHeader("X-Id".into())));
        assert_eq!(vhost.last(), Some(&LogItem::Text("%".into())));
        assert_eq!(
            parse("%{%Y-%m-%d}t").unwrap(),
            vec![LogItem::Time(Some("%Y-%m-%d".into()))]
        );
    }

    #[test]
    fn what_is_not_implemented_is_named() {
        let err = parse("%h %400,501{User-agent}i").unwrap_err();
        assert!(err.contains("status conditions"), "{err}");
        let err = parse("%h %{foo}C").unwrap_err();
        assert_eq!(
            err,
            "the log format directive `%{foo}C` is not implemented by wsgi serve"
        );
        assert!(parse("%").is_err());
    }
}
