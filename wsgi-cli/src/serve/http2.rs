//! HTTP/2 in `wsgi serve`: which connections may speak it (`--http`, a `--config` site's
//! `Protocols`), how a cleartext one is told apart ([`starts_with_preface`]), hyper's HTTP/2
//! settings (the per-connection and per-stream protections), and the idle timeout of HTTP/2
//! connections ([`until_idle`]).
//!
//! hyper does the protocol (hyper's own HTTP/2 server on the `h2` crate). A cleartext
//! connection that may speak either is looked at, without taking a byte, until its first bytes
//! are the HTTP/2 preface or are not: then hyper's HTTP/2 server, or its HTTP/1 server with
//! every setting of HTTP/1.1 as before (hyper-util's auto builder does the same by reading and
//! replaying the bytes, but its HTTP/1 side cannot set hyper's `max_header_size`, the 431
//! limit). What is set here:
//!
//! * at most `--http2-max-concurrent-streams` streams at once on a connection (Apache's
//!   `H2MaxSessionStreams`, 100), more are refused with `REFUSED_STREAM`;
//! * a header list no larger than `--max-header-size` (hyper counts the decoded list, so a
//!   CONTINUATION flood ends there too: `GOAWAY` and the connection closed);
//! * SETTINGS and PING floods need no setting: the `h2` crate writes each ACK before it reads
//!   the next frame, so a client that does not read its ACKs is no longer read (nothing
//!   queues in the front);
//! * rapid reset (CVE-2023-44487): at most [`MAX_PENDING_RESETS`] streams reset by the client
//!   before the server took them, and [`MAX_LOCAL_RESETS`] streams reset by the server for the
//!   client's errors, after which the connection gets `GOAWAY` and is closed;
//! * request bodies: flow-control windows of [`STREAM_WINDOW`] per stream and
//!   [`CONNECTION_WINDOW`] per connection, opened only as the front reads the body (so a body
//!   nobody reads holds at most the window), and the body timeouts of HTTP/1.1;
//! * responses: at most [`SEND_BUFFER`] bytes queued per stream; the connection's writes have
//!   the response write timeout of HTTP/1.1 ([`super::conn`]);
//! * a connection with no new request for `--header-timeout` is closed gracefully (`GOAWAY`
//!   after its open streams end), as HTTP/1.1's keep-alive idle time.

use std::time::Duration;

use std::io;

use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use nix::sys::socket::{MsgFlags, recv};
use tokio::sync::watch;

use super::proxy_protocol::PeekSocket;

use super::conn::ConnShared;

/// Which HTTP versions `wsgi serve` speaks (`--http`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum HttpMode {
    /// HTTP/1.1 and HTTP/2: h2c (prior knowledge) beside HTTP/1.1 on cleartext ports, ALPN
    /// `h2` and `http/1.1` on TLS ports; a `--config` site's `Protocols` decide per host.
    #[default]
    Auto,
    /// HTTP/1.1 only.
    #[value(name = "1")]
    Http1,
    /// HTTP/2 only.
    #[value(name = "2")]
    Http2,
}

/// The versions a connection may speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Versions {
    /// HTTP/1.x only (hyper's HTTP/1 server, as before HTTP/2 was added).
    Http1,
    /// HTTP/2 only.
    Http2,
    /// Either, told apart by the HTTP/2 preface ([`starts_with_preface`]).
    Both,
}

/// Streams reset by the client before the server took them, at most, before `GOAWAY`
/// (hyper's default).
pub const MAX_PENDING_RESETS: usize = 20;
/// Streams the server reset for the client's protocol errors, at most, before `GOAWAY`.
pub const MAX_LOCAL_RESETS: usize = 256;
/// A stream's receive window (request body bytes the client may send ahead of the reader).
pub const STREAM_WINDOW: u32 = 256 * 1024;
/// A connection's receive window (over all its streams).
pub const CONNECTION_WINDOW: u32 = 1024 * 1024;
/// Response bytes queued per stream, at most.
pub const SEND_BUFFER: usize = 128 * 1024;

/// Whether `protocols` (a host's `Protocols`, None: not a `--config` site) lists `name`.
fn lists(protocols: Option<&[String]>, name: &str) -> bool {
    protocols.is_none_or(|p| p.iter().any(|p| p == name))
}

/// The versions a cleartext connection may speak, for `--http` and the `Protocols` of the
/// host its address selects (None: not a `--config` site, so both): HTTP/2 with prior
/// knowledge only where `h2c` is listed, as mod_http2's `H2Direct`.
pub fn cleartext(mode: HttpMode, protocols: Option<&[String]>) -> Versions {
    match mode {
        HttpMode::Http1 => Versions::Http1,
        HttpMode::Http2 => Versions::Http2,
        HttpMode::Auto if lists(protocols, "h2c") => Versions::Both,
        HttpMode::Auto => Versions::Http1,
    }
}

/// ALPN's name of HTTP/2 over TLS.
const H2: &[u8] = b"h2";
/// ALPN's name of HTTP/1.1.
const HTTP1: &[u8] = b"http/1.1";

/// How a TLS virtual host answers a client's ALPN offer, as mod_ssl with mod_http2: the
/// protocols its `Protocols` list (only `h2` and `http/1.1` are TLS's), as `--http` allows,
/// and whose order of preference wins (`ProtocolsHonorOrder`). `http/1.1` is always accepted
/// (a client that negotiates nothing speaks it): last, when the host does not list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alpn {
    /// `h2` and `http/1.1` as the host lists them, in its order, each once.
    listed: Vec<&'static [u8]>,
    /// Whether `http/1.1` is accepted after them though not listed.
    fallback: bool,
    /// `ProtocolsHonorOrder`: the host's order wins (else the client's).
    honor_order: bool,
}

impl Alpn {
    /// A host's answer for `--http`, its `Protocols` (None: not a `--config` site, so `h2` then
    /// `http/1.1`) and its `ProtocolsHonorOrder`. `--http 1` offers `http/1.1` only, `--http 2`
    /// `h2` only, whatever the host lists.
    pub fn new(mode: HttpMode, protocols: Option<&[String]>, honor_order: bool) -> Alpn {
        let listed = match (mode, protocols) {
            (HttpMode::Http1, _) => vec![HTTP1],
            (HttpMode::Http2, _) => vec![H2],
            (HttpMode::Auto, None) => vec![H2, HTTP1],
            (HttpMode::Auto, Some(protocols)) => {
                let mut listed = Vec::new();
                for name in protocols {
                    let known = [H2, HTTP1].into_iter().find(|k| name.as_bytes() == *k);
                    if let Some(known) = known.filter(|k| !listed.contains(k)) {
                        listed.push(known);
                    }
                }
                listed
            }
        };
        let fallback = mode == HttpMode::Auto && !listed.contains(&HTTP1);
        Alpn {
            listed,
            fallback,
            honor_order,
        }
    }

    /// Every ALPN list a handshake with this host may be given to rustls (which chooses the
    /// first of it the client offers), to be built once: the host's order; with
    /// `ProtocolsHonorOrder Off` and both protocols listed, also the reverse, for a client
    /// that prefers the host's second ([`Alpn::order_for`]).
    pub fn orders(&self) -> Vec<Vec<Vec<u8>>> {
        let list = |listed: &mut dyn Iterator<Item = &&'static [u8]>| -> Vec<Vec<u8>> {
            listed
                .map(|p| p.to_vec())
                .chain(self.fallback.then(|| HTTP1.to_vec()))
                .collect()
        };
        let mut orders = vec![list(&mut self.listed.iter())];
        if self.client_decides() {
            orders.push(list(&mut self.listed.iter().rev()));
        }
        orders
    }

    /// Which of [`Alpn::orders`] answers a client whose ALPN list is `offered` (in its order
    /// of preference): the host's own, unless `ProtocolsHonorOrder Off` and the client names
    /// the host's second listed protocol before its first.
    pub fn order_for<'a>(&self, offered: impl IntoIterator<Item = &'a [u8]>) -> usize {
        match self.listed[..] {
            [first, second] if self.client_decides() => {
                let preferred = offered.into_iter().find(|p| *p == first || *p == second);
                usize::from(preferred == Some(second))
            }
            _ => 0,
        }
    }

    /// Whether the client's order of preference may change the choice: `ProtocolsHonorOrder
    /// Off` and two protocols listed.
    fn client_decides(&self) -> bool {
        !self.honor_order && self.listed.len() == 2
    }
}

/// Whether a request that reached a host over HTTP/2 may be answered there: the host's
/// `Protocols` (None: not a `--config` site) list `h2` (TLS) or `h2c` (cleartext). Else
/// mod_http2 answers 421 (Misdirected Request).
pub fn host_speaks_h2(protocols: Option<&[String]>, tls: bool) -> bool {
    lists(protocols, if tls { "h2" } else { "h2c" })
}

/// What hyper's HTTP/2 server is given from [`super::front::Limits`].
#[derive(Debug, Clone, Copy)]
pub struct Http2Limits {
    /// Streams open at once per connection.
    pub max_concurrent_streams: u32,
    /// The largest decoded header list (`--max-header-size`).
    pub max_header_list_size: u32,
}

/// hyper's HTTP/2 server with `limits` and the settings above.
pub fn builder(limits: Http2Limits) -> http2::Builder<TokioExecutor> {
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(limits.max_header_list_size)
        .max_pending_accept_reset_streams(MAX_PENDING_RESETS)
        .max_local_error_reset_streams(MAX_LOCAL_RESETS)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_send_buf_size(SEND_BUFFER);
    builder
}

/// What an HTTP/2 client with prior knowledge sends first (RFC 9113, 3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether a cleartext connection starts with the HTTP/2 preface, looked at with `MSG_PEEK`
/// (nothing is taken: hyper's HTTP/1 or HTTP/2 server reads the bytes as they came): false as
/// soon as a byte differs or the client closes. The caller bounds the wait.
pub async fn starts_with_preface<S: PeekSocket>(stream: &S) -> io::Result<bool> {
    let fd = stream.as_raw_fd();
    let mut buf = [0u8; PREFACE.len()];
    loop {
        // Once the client has closed its side, what is there is all there will be.
        let closed = stream.read_ready().await?.is_read_closed();
        let peeked = stream.try_read_io(|| {
            let n = recv(fd, &mut buf, MsgFlags::MSG_PEEK).map_err(io::Error::from)?;
            match n {
                0 => Ok(false),
                n if buf[..n] != PREFACE[..n] => Ok(false),
                n if n == PREFACE.len() => Ok(true),
                _ if closed => Ok(false),
                // The start of the preface: wait for more bytes (WouldBlock clears the
                // readiness this look saw).
                _ => Err(io::ErrorKind::WouldBlock.into()),
            }
        });
        match peeked {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            done => return done,
        }
    }
}

/// Drives an HTTP/2 connection to its end, shutting it down gracefully (`GOAWAY`, then its
/// open streams finish) once no response started on it for `idle` (HTTP/1.1's keep-alive idle
/// time), or once `stop` turns true (the front's graceful shutdown).
pub async fn until_idle<C: GracefulConnection>(
    conn: C,
    shared: &ConnShared,
    idle: Duration,
    mut stop: watch::Receiver<bool>,
) -> Result<(), C::Error> {
    let mut conn = std::pin::pin!(conn);
    let tick = tokio::time::sleep(idle);
    let mut tick = std::pin::pin!(tick);
    let mut seen = shared.responses();
    loop {
        tokio::select! {
            done = conn.as_mut() => return done,
            () = tick.as_mut() => {
                let now = shared.responses();
                if now == seen {
                    break;
                }
                seen = now;
                tick.as_mut().reset(tokio::time::Instant::now() + idle);
            }
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    conn.as_mut().graceful_shutdown();
    conn.await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn cleartext_follows_mode_and_protocols() {
        assert_eq!(cleartext(HttpMode::Auto, None), Versions::Both);
        assert_eq!(cleartext(HttpMode::Http1, None), Versions::Http1);
        assert_eq!(cleartext(HttpMode::Http2, None), Versions::Http2);
        let apache_default = owned(&["http/1.1"]);
        assert_eq!(
            cleartext(HttpMode::Auto, Some(&apache_default)),
            Versions::Http1
        );
        let h2c = owned(&["h2c", "http/1.1"]);
        assert_eq!(cleartext(HttpMode::Auto, Some(&h2c)), Versions::Both);
        assert_eq!(cleartext(HttpMode::Http1, Some(&h2c)), Versions::Http1);
    }

    /// What a handshake negotiates with `alpn` for a client offering `offered`: the first of
    /// the list [`Alpn::order_for`] chooses that the client offers, as rustls picks.
    fn negotiated(alpn: &Alpn, offered: &[&str]) -> Option<String> {
        let offered: Vec<&[u8]> = offered.iter().map(|p| p.as_bytes()).collect();
        let list = &alpn.orders()[alpn.order_for(offered.iter().copied())];
        list.iter()
            .find(|p| offered.contains(&p.as_slice()))
            .map(|p| String::from_utf8(p.clone()).unwrap())
    }

    #[test]
    fn alpn_keeps_the_order_of_protocols() {
        let first = |mode, protocols: Option<&[&str]>| {
            let protocols = protocols.map(owned);
            Alpn::new(mode, protocols.as_deref(), true)
                .orders()
                .remove(0)
        };
        let both: Vec<Vec<u8>> = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        assert_eq!(first(HttpMode::Auto, None), both);
        assert_eq!(first(HttpMode::Auto, Some(&["h2", "http/1.1"])), both);
        assert_eq!(
            first(HttpMode::Auto, Some(&["http/1.1", "h2"])),
            vec![b"http/1.1".to_vec(), b"h2".to_vec()]
        );
        assert_eq!(
            first(HttpMode::Auto, Some(&["h2c", "http/1.1"])),
            vec![b"http/1.1".to_vec()]
        );
        assert_eq!(first(HttpMode::Auto, Some(&["h2"])), both);
        assert_eq!(first(HttpMode::Auto, Some(&["h2", "h2", "h2c"])), both);
        assert_eq!(first(HttpMode::Http2, None), vec![b"h2".to_vec()]);
        assert_eq!(first(HttpMode::Http1, None), vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn alpn_choice_follows_protocols_honor_order_and_http_mode() {
        use HttpMode::{Auto, Http1, Http2};
        const CURL: &[&str] = &["h2", "http/1.1"];
        const OPENSSL: &[&str] = &["http/1.1", "h2"];
        const H1_FIRST: &[&str] = &["http/1.1", "h2"];
        const H2_FIRST: &[&str] = &["h2", "http/1.1"];
        /// `--http`, `Protocols`, `ProtocolsHonorOrder`, the client's offer, what is negotiated.
        type Case<'a> = (
            HttpMode,
            Option<&'a [&'a str]>,
            bool,
            &'a [&'a str],
            Option<&'a str>,
        );
        let cases: &[Case] = &[
            // On: the host's order wins, whatever the client prefers.
            (Auto, Some(H1_FIRST), true, CURL, Some("http/1.1")),
            (Auto, Some(H2_FIRST), true, OPENSSL, Some("h2")),
            // Off: the client's order wins among what the host lists.
            (Auto, Some(H1_FIRST), false, CURL, Some("h2")),
            (Auto, Some(H1_FIRST), false, OPENSSL, Some("http/1.1")),
            (Auto, Some(H2_FIRST), false, OPENSSL, Some("http/1.1")),
            (Auto, Some(H2_FIRST), false, CURL, Some("h2")),
            (Auto, Some(H1_FIRST), false, &["h2"], Some("h2")),
            // Off, one protocol listed: `http/1.1` unlisted is taken only when nothing is.
            (Auto, Some(&["h2"]), false, OPENSSL, Some("h2")),
            (Auto, Some(&["h2"]), false, &["http/1.1"], Some("http/1.1")),
            // A host without `h2` (Apache's default, or only `h2c`) never negotiates it.
            (Auto, Some(&["http/1.1"]), false, CURL, Some("http/1.1")),
            (
                Auto,
                Some(&["h2c", "http/1.1"]),
                true,
                CURL,
                Some("http/1.1"),
            ),
            (Auto, Some(&["http/1.1"]), true, &["h2"], None),
            // `--http 1` and `--http 2` decide over `Protocols` and the order.
            (Http1, Some(H2_FIRST), false, CURL, Some("http/1.1")),
            (Http1, Some(H2_FIRST), true, &["h2"], None),
            (Http2, Some(&["http/1.1"]), false, OPENSSL, Some("h2")),
            (Http2, Some(H1_FIRST), false, &["http/1.1"], None),
            // Not a `--config` site: `h2` first.
            (Auto, None, true, OPENSSL, Some("h2")),
        ];
        for &(mode, protocols, honor, offered, chosen) in cases {
            let protocols = protocols.map(owned);
            let alpn = Alpn::new(mode, protocols.as_deref(), honor);
            let case = format!("{mode:?} {protocols:?} honor {honor}, offered {offered:?}");
            assert_eq!(negotiated(&alpn, offered).as_deref(), chosen, "{case}");
        }
        // Two orders are built only where the client's order can change the choice.
        let orders = |protocols: &[&str], honor| {
            Alpn::new(Auto, Some(&owned(protocols)), honor)
                .orders()
                .len()
        };
        assert_eq!(orders(H2_FIRST, false), 2);
        assert_eq!(orders(H2_FIRST, true), 1);
        assert_eq!(orders(&["h2"], false), 1);
        let off = Alpn::new(Auto, Some(&owned(H1_FIRST)), false);
        assert_eq!(off.order_for(std::iter::empty()), 0);
    }
}
