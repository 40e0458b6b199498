//! The PROXY protocol (HAProxy's; v1 text and v2 binary, told apart by their first bytes) on
//! `wsgi serve`'s listeners: a load balancer that passes connections on at layer 4 (HAProxy's
//! `send-proxy`/`send-proxy-v2`, AWS NLB, ...) starts each one with a header naming the
//! client, and that client becomes the connection's peer: `REMOTE_ADDR`/`REMOTE_PORT`, the
//! access log's `%h`/`%a`, `Require ip`/`local`, and the peer `--trust-proxy`
//! (`WSGITrustedProxies`) judges, as mod_remoteip makes it the request's client address
//! under Apache.
//!
//! Where it applies: every listener with `--proxy-protocol`, else the addresses a `--config`
//! site's `RemoteIPProxyProtocol On` covers ([`wsgi_config::remoteip`]). There, a client in
//! the host's `RemoteIPProxyProtocolExceptions` is served without a header (and a header from
//! it is not read: it is then a bad request, as in mod_remoteip); a client not in
//! `--proxy-allow-from` is refused (closed at once), so that no one else may claim to be
//! anyone; from an allowed one, a connection without a valid header is closed. Nothing of a
//! closed connection reaches the application; each is logged at info.
//!
//! The header is parsed by the `ppp` crate. Reading it is ours: bytes are peeked, never taken,
//! until a whole header is there (at most [`MAX_HEADER`] bytes), then exactly the header is
//! read off the socket, so what follows (the request, or the TLS handshake) is left for hyper
//! or rustls as if the connection had begun there. The caller bounds the wait by the header
//! timeout (with the TLS handshake, one deadline for both).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use nix::sys::socket::{MsgFlags, recv};
use tokio::io::{AsyncRead, AsyncReadExt, Interest, Ready};
use tokio::net::{TcpStream, UnixStream};
use wsgi_config::{Config, IpNet};

/// The largest header read: a v1 header is at most 107 bytes; a v2 one may carry TLVs up to
/// 64 KiB, but HAProxy's own buffer (`tune.bufsize`) is 16 KiB, and no balancer sends more.
pub const MAX_HEADER: usize = 16 * 1024;

/// The bytes first peeked: every v1 header, and v2 headers with the addresses of any family
/// and a few TLVs.
const FIRST_PEEK: usize = 256;

/// One `--proxy-allow-from` entry: `*` (any address), or an address or CIDR network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowFrom {
    /// Any address (`*`).
    Any,
    /// An address or a network.
    Net(IpNet),
}

impl std::fmt::Display for AllowFrom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AllowFrom::Any => f.write_str("*"),
            AllowFrom::Net(net) => {
                let full = if net.addr.is_ipv4() { 32 } else { 128 };
                if net.prefix == full {
                    write!(f, "{}", net.addr)
                } else {
                    write!(f, "{}/{}", net.addr, net.prefix)
                }
            }
        }
    }
}

/// Reads one `--proxy-allow-from` entry (`--trust-proxy`'s syntax, and `*`).
pub fn parse_allow_from(text: &str) -> Result<AllowFrom, String> {
    let text = text.trim();
    if text == "*" {
        return Ok(AllowFrom::Any);
    }
    IpNet::parse(text).map(AllowFrom::Net).ok_or_else(|| {
        format!("`{text}` is not an address or network: give IP or IP/BITS (127.0.0.1, 10.0.0.0/8, ::1), or * for any")
    })
}

/// Whether `ip` is in the allow list (an IPv4 address mapped into IPv6 counts as itself).
pub fn allowed(list: &[AllowFrom], ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    list.iter().any(|entry| match entry {
        AllowFrom::Any => true,
        AllowFrom::Net(net) => net.contains(ip),
    })
}

/// Who must start their connections with a PROXY header, and whose header is believed.
#[derive(Debug, Clone)]
pub struct ProxyPolicy {
    /// `--proxy-protocol`: every listener (else only where the site's
    /// `RemoteIPProxyProtocol` says).
    every_listener: bool,
    /// `--proxy-allow-from`.
    allow: Vec<AllowFrom>,
}

/// What to do with a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Serve it as it is: no PROXY protocol on its address, or a client of the exceptions.
    Plain,
    /// Read its PROXY header first.
    Header,
    /// Close it: a header is required and this peer may not send one.
    Refuse,
}

impl ProxyPolicy {
    /// The policy of `--proxy-protocol` (`every_listener`) with `--proxy-allow-from`
    /// (`allow`) for `config`; None when no connection needs a header (the front then pays
    /// nothing per connection).
    pub fn new(every_listener: bool, allow: Vec<AllowFrom>, config: &Config) -> Option<Self> {
        (every_listener || config.proxy_protocol.any()).then_some(ProxyPolicy {
            every_listener,
            allow,
        })
    }

    /// Decides for a connection from `peer` to `local` (routed as `route_port`).
    pub fn decide(
        &self,
        config: &Config,
        peer: SocketAddr,
        local: SocketAddr,
        route_port: u16,
    ) -> Decision {
        if !self.every_listener && !config.proxy_protocol.required(local.ip(), route_port) {
            return Decision::Plain;
        }
        let exceptions = if config.virtual_hosts.is_empty() {
            config.proxy_protocol_exceptions(None)
        } else {
            let host = config.select_host(Some(local.ip()), route_port, None);
            config.proxy_protocol_exceptions(host)
        };
        let client = peer.ip().to_canonical();
        if exceptions.iter().any(|net| net.contains(client)) {
            Decision::Plain
        } else if allowed(&self.allow, client) {
            Decision::Header
        } else {
            Decision::Refuse
        }
    }

    /// For the banner: where headers are required and from whom.
    pub fn describe(&self) -> String {
        let from = self
            .allow
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let which = if self.every_listener {
            "on every listener"
        } else {
            "where RemoteIPProxyProtocol is On"
        };
        format!("PROXY protocol (v1, v2) required {which}, from {from}")
    }
}

/// A whole PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Its length in bytes (what is read off the socket).
    pub len: usize,
    /// Its version, 1 or 2.
    pub version: u8,
    /// The client it names: None for a v2 `LOCAL` (the balancer's own connection, such as a
    /// health check), a v1 `UNKNOWN`, or a v2 address family other than IPv4 and IPv6; the
    /// connection then keeps the socket's own peer.
    pub source: Option<SocketAddr>,
}

/// What the bytes seen so far make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// The start of a header: more bytes are needed, in all `need` when the header says
    /// (a v2 header's length field), else 0.
    Incomplete {
        /// The header's whole length, when known.
        need: usize,
    },
    /// Not a PROXY header, or a malformed one.
    Invalid(String),
    /// A header.
    Complete(Header),
}

/// Parses the start of a connection's bytes (which may go on past the header).
pub fn parse(bytes: &[u8]) -> Parsed {
    use ppp::v2::{Addresses, Command, ParseError};
    use ppp::{HeaderResult, PartialResult};
    // A v2 signature with a bad rest is a malformed v2 header (ppp would try v1 next).
    let result = if bytes.starts_with(ppp::v2::PROTOCOL_PREFIX) {
        HeaderResult::from(ppp::v2::Header::try_from(bytes))
    } else {
        HeaderResult::parse(bytes)
    };
    if result.is_incomplete() {
        let need = match &result {
            HeaderResult::V2(Err(ParseError::Partial(_, length))) => {
                ppp::v2::PROTOCOL_PREFIX.len() + 4 + length
            }
            _ => 0,
        };
        return Parsed::Incomplete { need };
    }
    let canonical = |ip: IpAddr, port: u16| SocketAddr::new(ip.to_canonical(), port);
    match result {
        HeaderResult::V1(Ok(header)) => Parsed::Complete(Header {
            len: header.header.len(),
            version: 1,
            source: match header.addresses {
                ppp::v1::Addresses::Tcp4(a) => {
                    Some(canonical(a.source_address.into(), a.source_port))
                }
                ppp::v1::Addresses::Tcp6(a) => {
                    Some(canonical(a.source_address.into(), a.source_port))
                }
                ppp::v1::Addresses::Unknown => None,
            },
        }),
        HeaderResult::V2(Ok(header)) => Parsed::Complete(Header {
            len: header.len(),
            version: 2,
            source: match (header.command, header.addresses) {
                (Command::Local, _) => None,
                (Command::Proxy, Addresses::IPv4(a)) => {
                    Some(canonical(a.source_address.into(), a.source_port))
                }
                (Command::Proxy, Addresses::IPv6(a)) => {
                    Some(canonical(a.source_address.into(), a.source_port))
                }
                (Command::Proxy, Addresses::Unspecified | Addresses::Unix(_)) => None,
            },
        }),
        HeaderResult::V1(Err(e)) => Parsed::Invalid(match bytes.first() {
            Some(b'P') => format!("a malformed v1 header: {e}"),
            _ => "no PROXY header (the connection starts with something else)".to_string(),
        }),
        HeaderResult::V2(Err(e)) => Parsed::Invalid(format!("a malformed v2 header: {e}")),
    }
}

/// Why no header came.
#[derive(Debug)]
pub enum HeaderError {
    /// The client closed the connection first, having sent this many bytes.
    Closed(usize),
    /// What it sent is no PROXY header, or a malformed one.
    Invalid(String),
    /// The socket failed.
    Io(io::Error),
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::Closed(0) => f.write_str("closed by the client before sending anything"),
            HeaderError::Closed(n) => write!(
                f,
                "closed by the client after {n} byte(s), before a whole PROXY header"
            ),
            HeaderError::Invalid(why) => f.write_str(why),
            HeaderError::Io(e) => write!(f, "reading the PROXY header: {e}"),
        }
    }
}

/// A socket a PROXY header can be peeked from: TCP, or a unix socket (HAProxy's `server s1
/// /run/site.sock send-proxy`).
pub trait PeekSocket: AsyncRead + AsRawFd + Unpin + Send {
    /// Waits until the socket is readable, or its peer closed it (tokio's `ready`, which
    /// keeps saying so once the peer closed).
    fn read_ready(&self) -> impl Future<Output = io::Result<Ready>> + Send;
    /// Runs `f`, a read of the socket's descriptor, clearing readiness on `WouldBlock`
    /// (tokio's `try_io`).
    fn try_read_io<R>(&self, f: impl FnOnce() -> io::Result<R>) -> io::Result<R>;
}

impl PeekSocket for TcpStream {
    fn read_ready(&self) -> impl Future<Output = io::Result<Ready>> + Send {
        self.ready(Interest::READABLE)
    }

    fn try_read_io<R>(&self, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        self.try_io(Interest::READABLE, f)
    }
}

impl PeekSocket for UnixStream {
    fn read_ready(&self) -> impl Future<Output = io::Result<Ready>> + Send {
        self.ready(Interest::READABLE)
    }

    fn try_read_io<R>(&self, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        self.try_io(Interest::READABLE, f)
    }
}

/// One look at the socket's waiting bytes.
enum Peek {
    /// The client closed the connection, having sent this many bytes.
    Closed(usize),
    /// Not (the start of) a header.
    Invalid(String),
    /// A v2 header longer than the buffer: its length.
    Grow(usize),
    /// A whole header.
    Done(Header),
}

/// Reads a connection's PROXY header: peeks at its bytes until they make a whole header (or
/// show that none comes), then takes exactly the header off the socket. Waits as long as the
/// client takes: the caller bounds it.
pub async fn read_header<S: PeekSocket>(stream: &mut S) -> Result<Header, HeaderError> {
    let fd = stream.as_raw_fd();
    let mut buf = vec![0u8; FIRST_PEEK];
    let header = loop {
        // Once the client has closed its side, what is there is all there will be.
        let closed = stream
            .read_ready()
            .await
            .map_err(HeaderError::Io)?
            .is_read_closed();
        let peeked = stream.try_read_io(|| {
            let n = recv(fd, &mut buf, MsgFlags::MSG_PEEK).map_err(io::Error::from)?;
            if n == 0 {
                return Ok(Peek::Closed(0));
            }
            match parse(&buf[..n]) {
                Parsed::Complete(header) => Ok(Peek::Done(header)),
                Parsed::Invalid(why) => Ok(Peek::Invalid(why)),
                // More bytes may wait beyond the buffer, closed or not.
                Parsed::Incomplete { need } if need > buf.len() => Ok(Peek::Grow(need)),
                Parsed::Incomplete { .. } if closed => Ok(Peek::Closed(n)),
                // A v1 header longer than the buffer is refused by the parser (107 bytes at
                // most), so a full buffer is never left waiting here.
                Parsed::Incomplete { .. } if n == buf.len() => {
                    Ok(Peek::Invalid("a PROXY header too long".to_string()))
                }
                // The start of a header: wait for more bytes (WouldBlock clears the
                // readiness this look saw, so the wait is for new ones).
                Parsed::Incomplete { .. } => Err(io::ErrorKind::WouldBlock.into()),
            }
        });
        match peeked {
            Ok(Peek::Done(header)) => break header,
            Ok(Peek::Grow(need)) if need > MAX_HEADER => {
                return Err(HeaderError::Invalid(format!(
                    "a v2 header of {need} bytes, more than the {MAX_HEADER} accepted"
                )));
            }
            Ok(Peek::Grow(need)) => buf.resize(need, 0),
            Ok(Peek::Closed(seen)) => return Err(HeaderError::Closed(seen)),
            Ok(Peek::Invalid(why)) => return Err(HeaderError::Invalid(why)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(HeaderError::Io(e)),
        }
    };
    stream
        .read_exact(&mut buf[..header.len])
        .await
        .map_err(HeaderError::Io)?;
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

    fn v2(command: u8, family: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut h = ppp::v2::PROTOCOL_PREFIX.to_vec();
        h.push(0x20 | command);
        h.push(family);
        let len = u16::try_from(addresses.len() + tlvs.len()).unwrap();
        h.extend_from_slice(&len.to_be_bytes());
        h.extend_from_slice(addresses);
        h.extend_from_slice(tlvs);
        h
    }

    /// A v2 PROXY header for TCP over IPv4 from `src` to 127.0.0.1:443.
    fn v2_tcp4(src: [u8; 4], port: u16, tlvs: &[u8]) -> Vec<u8> {
        let mut a = src.to_vec();
        a.extend_from_slice(&[127, 0, 0, 1]);
        a.extend_from_slice(&port.to_be_bytes());
        a.extend_from_slice(&443u16.to_be_bytes());
        v2(0x1, 0x11, &a, tlvs)
    }

    fn complete(bytes: &[u8]) -> Header {
        match parse(bytes) {
            Parsed::Complete(h) => h,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bytes)),
        }
    }

    #[test]
    fn allow_list_entries_and_matching() {
        let list: Vec<AllowFrom> = "127.0.0.1, ::1,10.0.0.0/8"
            .split(',')
            .map(|e| parse_allow_from(e).unwrap())
            .collect();
        assert!(allowed(&list, "127.0.0.1".parse().unwrap()));
        assert!(!allowed(&list, "127.0.0.2".parse().unwrap()));
        assert!(allowed(&list, "::1".parse().unwrap()));
        assert!(allowed(&list, "10.200.0.9".parse().unwrap()));
        // An IPv4 address mapped into IPv6 is that IPv4 address.
        assert!(allowed(&list, "::ffff:10.1.2.3".parse().unwrap()));
        assert!(!allowed(&list, "::ffff:192.0.2.1".parse().unwrap()));
        assert!(allowed(&[AllowFrom::Any], "192.0.2.1".parse().unwrap()));
        assert!(!allowed(&[], "127.0.0.1".parse().unwrap()));
        let shown: Vec<String> = list.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["127.0.0.1", "::1", "10.0.0.0/8"]);
        assert!(
            parse_allow_from("lb.example")
                .unwrap_err()
                .contains("`lb.example`")
        );
        assert!(parse_allow_from("10.0.0.0/33").is_err());
        assert_eq!(parse_allow_from("*"), Ok(AllowFrom::Any));
    }

    #[test]
    fn the_flag_covers_every_listener_and_a_site_its_addresses() {
        let allow = vec![parse_allow_from("127.0.0.1").unwrap()];
        let plain = wsgi_config::Config::default();
        assert!(ProxyPolicy::new(false, allow.clone(), &plain).is_none());
        let policy = ProxyPolicy::new(true, allow.clone(), &plain).unwrap();
        let local: SocketAddr = "127.0.0.1:8000".parse().unwrap();
        let at = |peer: &str| policy.decide(&plain, peer.parse().unwrap(), local, 8000);
        assert_eq!(at("127.0.0.1:5000"), Decision::Header);
        assert_eq!(at("127.0.0.3:5000"), Decision::Refuse);
        let site = wsgi_config::load_str(
            "RemoteIPProxyProtocolExceptions 127.0.0.4\n<VirtualHost *:8080>\nRemoteIPProxyProtocol On\n</VirtualHost>\n<VirtualHost *:8081>\n</VirtualHost>\n",
            std::path::Path::new("/site.conf"),
            &Default::default(),
        )
        .unwrap();
        let policy = ProxyPolicy::new(false, allow, &site).unwrap();
        let on = "127.0.0.1:8080".parse().unwrap();
        let off = "127.0.0.1:8081".parse().unwrap();
        let at = |peer: &str, local: SocketAddr| {
            policy.decide(&site, peer.parse().unwrap(), local, local.port())
        };
        assert_eq!(at("127.0.0.1:5000", on), Decision::Header);
        assert_eq!(at("127.0.0.1:5000", off), Decision::Plain);
        assert_eq!(at("127.0.0.4:5000", on), Decision::Plain);
        assert_eq!(at("127.0.0.5:5000", on), Decision::Refuse);
        assert!(policy.describe().contains("RemoteIPProxyProtocol"));
    }

    #[test]
    fn v1_headers() {
        let h = complete(b"PROXY TCP4 192.0.2.7 127.0.0.1 51234 8000\r\nGET / HTTP/1.1\r\n");
        assert_eq!(h.version, 1);
        assert_eq!(h.len, "PROXY TCP4 192.0.2.7 127.0.0.1 51234 8000\r\n".len());
        assert_eq!(h.source, Some("192.0.2.7:51234".parse().unwrap()));
        let h = complete(b"PROXY TCP6 2001:db8::1 ::1 443 8000\r\n");
        assert_eq!(h.source, Some("[2001:db8::1]:443".parse().unwrap()));
        // A mapped IPv4 client is that IPv4 client.
        let h = complete(b"PROXY TCP6 ::ffff:192.0.2.7 ::1 443 8000\r\n");
        assert_eq!(h.source, Some("192.0.2.7:443".parse().unwrap()));
        let h = complete(b"PROXY UNKNOWN\r\n");
        assert_eq!((h.len, h.source), (15, None));
        let h = complete(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\nGET");
        assert_eq!((h.len, h.source), (35, None));
    }

    #[test]
    fn v1_starts_wait_and_bad_ones_do_not() {
        for part in [
            &b""[..],
            b"P",
            b"PROXY",
            b"PROXY TC",
            b"PROXY TCP4 192.0.2.7 127.0.0.1 51",
            b"PROXY TCP4 192.0.2.7 127.0.0.1 51234 8000\r",
        ] {
            assert_eq!(
                parse(part),
                Parsed::Incomplete { need: 0 },
                "{:?}",
                String::from_utf8_lossy(part)
            );
        }
        for bad in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"G",
            b"\x16\x03\x01",
            b"PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n",
            b"PROXY TCP4 1.2.3 127.0.0.1 1 2\r\n",
            b"PROXY TCP4 192.0.2.7 127.0.0.1 65536 80\r\n",
            b"PROXY TCP4 192.0.2.7 127.0.0.1 080 80\r\n",
            b"PROXY TCP4 192.0.2.7 127.0.0.1 80 80\n",
            b"PROXY TCP4 192.0.2.7 127.0.0.1 80 80\r\r",
            b"PROXY TCP4 ::1 127.0.0.1 80 80\r\n",
        ] {
            assert!(
                matches!(parse(bad), Parsed::Invalid(_)),
                "{:?}: {:?}",
                String::from_utf8_lossy(bad),
                parse(bad)
            );
        }
        // Longer than any v1 header, with no end: refused, not waited for.
        let long = format!("PROXY TCP4 {}", "1".repeat(120));
        assert!(matches!(parse(long.as_bytes()), Parsed::Invalid(_)));
    }

    #[test]
    fn v2_headers() {
        let h = complete(&v2_tcp4([192, 0, 2, 7], 51234, &[]));
        assert_eq!((h.version, h.len), (2, 28));
        assert_eq!(h.source, Some("192.0.2.7:51234".parse().unwrap()));
        // TLVs are part of the header, and skipped.
        let mut bytes = v2_tcp4([192, 0, 2, 7], 51234, &[0x04, 0, 3, b'a', b'b', b'c']);
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(complete(&bytes).len, 34);
        // IPv6.
        let mut a = vec![0x20, 0x01, 0x0d, 0xb8];
        a.extend_from_slice(&[0; 11]);
        a.push(1);
        a.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
        a.extend_from_slice(&[0x1f, 0x90, 0x01, 0xbb]);
        let h = complete(&v2(0x1, 0x21, &a, &[]));
        assert_eq!(h.source, Some("[2001:db8::1]:8080".parse().unwrap()));
        // LOCAL (a health check) and UNSPEC keep the socket's own addresses.
        let h = complete(&v2(0x0, 0x00, &[], &[]));
        assert_eq!((h.len, h.source), (16, None));
        let local_with_addresses = {
            let mut b = v2_tcp4([192, 0, 2, 7], 1, &[]);
            b[12] = 0x20;
            b
        };
        assert_eq!(complete(&local_with_addresses).source, None);
        assert_eq!(complete(&v2(0x1, 0x00, &[], &[])).source, None);
    }

    #[test]
    fn v2_starts_wait_with_their_length_and_bad_ones_do_not() {
        let whole = v2_tcp4([192, 0, 2, 7], 51234, &[0x04, 0, 3, b'a', b'b', b'c']);
        assert_eq!(parse(&whole[..5]), Parsed::Incomplete { need: 0 });
        assert_eq!(parse(&whole[..15]), Parsed::Incomplete { need: 0 });
        assert_eq!(parse(&whole[..20]), Parsed::Incomplete { need: 34 });
        assert_eq!(parse(&whole[..33]), Parsed::Incomplete { need: 34 });
        let mut bad_version = whole.clone();
        bad_version[12] = 0x11;
        let mut bad_command = whole.clone();
        bad_command[12] = 0x2f;
        let mut bad_family = whole.clone();
        bad_family[13] = 0x41;
        let short_addresses = v2(0x1, 0x11, &[1, 2, 3], &[]);
        for bad in [bad_version, bad_command, bad_family, short_addresses] {
            assert!(
                matches!(parse(&bad), Parsed::Invalid(_)),
                "{:?}",
                parse(&bad)
            );
        }
    }

    /// A connected pair of loopback TCP sockets: (client, server).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    #[tokio::test]
    async fn a_header_in_pieces_is_read_exactly_and_what_follows_is_left() {
        let (mut client, mut server) = pair().await;
        let reader = tokio::spawn(async move {
            let header = read_header(&mut server).await.unwrap();
            let mut rest = vec![0u8; 16];
            server.read_exact(&mut rest).await.unwrap();
            (header, rest)
        });
        for piece in [
            &b"PRO"[..],
            b"XY TCP4 192.0.2.7 127.0",
            b".0.1 51234 8000\r",
        ] {
            client.write_all(piece).await.unwrap();
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        client.write_all(b"\nGET / HTTP/1.1\r\n").await.unwrap();
        let (header, rest) = reader.await.unwrap();
        assert_eq!(header.source, Some("192.0.2.7:51234".parse().unwrap()));
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn a_v2_header_larger_than_the_first_look_is_read_whole() {
        let (mut client, mut server) = pair().await;
        // A 1000-byte TLV (type 0xE0, custom), sent in two parts.
        let mut tlv = vec![0xE0, 0x03, 0xE8];
        tlv.extend_from_slice(&[7; 1000]);
        let mut bytes = v2_tcp4([192, 0, 2, 9], 4000, &tlv);
        bytes.extend_from_slice(b"after");
        let reader = tokio::spawn(async move {
            let header = read_header(&mut server).await.unwrap();
            let mut rest = [0u8; 5];
            server.read_exact(&mut rest).await.unwrap();
            (header, rest)
        });
        client.write_all(&bytes[..300]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        client.write_all(&bytes[300..]).await.unwrap();
        let (header, rest) = reader.await.unwrap();
        assert_eq!(header.len, 28 + 1003);
        assert_eq!(header.source, Some("192.0.2.9:4000".parse().unwrap()));
        assert_eq!(&rest, b"after");
    }

    #[tokio::test]
    async fn a_large_v2_header_sent_whole_before_a_close_is_read() {
        let (mut client, mut server) = pair().await;
        let mut tlv = vec![0xE0, 0x03, 0xE8];
        tlv.extend_from_slice(&[7; 1000]);
        let mut bytes = v2_tcp4([192, 0, 2, 9], 4000, &tlv);
        bytes.extend_from_slice(b"GET / HTTP/1.0\r\n\r\n");
        client.write_all(&bytes).await.unwrap();
        client.shutdown().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let header = tokio::time::timeout(Duration::from_secs(5), read_header(&mut server))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(header.len, 28 + 1003);
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"GET / HTTP/1.0\r\n\r\n");
    }

    #[tokio::test]
    async fn no_header_a_bad_one_a_huge_one_and_a_close_are_errors() {
        async fn outcome(bytes: Vec<u8>, close: bool) -> HeaderError {
            let (mut client, mut server) = pair().await;
            client.write_all(&bytes).await.unwrap();
            if close {
                client.shutdown().await.unwrap();
            }
            tokio::time::timeout(Duration::from_secs(5), read_header(&mut server))
                .await
                .expect("decided without waiting")
                .unwrap_err()
        }
        let e = outcome(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), false).await;
        assert!(e.to_string().contains("no PROXY header"), "{e}");
        let e = outcome(b"PROXY TCP4 1.2.3.4.5 127.0.0.1 1 2\r\n".to_vec(), false).await;
        assert!(e.to_string().contains("malformed v1"), "{e}");
        let mut huge = v2_tcp4([192, 0, 2, 9], 4000, &[]);
        huge[14..16].copy_from_slice(&40000u16.to_be_bytes());
        let e = outcome(huge, false).await;
        assert!(e.to_string().contains("more than the 16384"), "{e}");
        let e = outcome(b"PROXY TCP4 192.0".to_vec(), true).await;
        assert!(matches!(e, HeaderError::Closed(16)), "{e}");
        let e = outcome(Vec::new(), true).await;
        assert!(matches!(e, HeaderError::Closed(0)), "{e}");
    }

    #[tokio::test]
    async fn a_close_after_part_of_a_header_ends_the_wait() {
        let (mut client, mut server) = pair().await;
        client.write_all(b"PROXY TCP4 192.0.2.7").await.unwrap();
        let reader = tokio::spawn(async move { read_header(&mut server).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        client.shutdown().await.unwrap();
        let outcome = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .expect("the close ends the wait")
            .unwrap();
        assert!(
            matches!(outcome, Err(HeaderError::Closed(20))),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn an_unfinished_header_waits_without_spinning() {
        let (mut client, mut server) = pair().await;
        client.write_all(b"PROXY TCP4 192.0.2.7").await.unwrap();
        let started = std::time::Instant::now();
        // This thread's CPU time (the test's runtime runs on it).
        let cpu = || {
            use nix::sys::resource::{UsageWho, getrusage};
            use nix::sys::time::TimeValLike;
            let usage = getrusage(UsageWho::RUSAGE_THREAD).unwrap();
            Duration::from_micros(
                u64::try_from(
                    usage.user_time().num_microseconds() + usage.system_time().num_microseconds(),
                )
                .unwrap(),
            )
        };
        let before = cpu();
        let waited =
            tokio::time::timeout(Duration::from_millis(300), read_header(&mut server)).await;
        assert!(waited.is_err(), "still waiting at the timeout");
        let used = cpu() - before;
        assert!(started.elapsed() >= Duration::from_millis(300));
        // Asleep, not peeking in a loop: a spinning reader would use the whole 300 ms.
        assert!(used < Duration::from_millis(100), "{used:?} of CPU");
    }
}
