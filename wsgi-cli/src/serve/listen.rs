//! Where `wsgi serve` listens: TCP addresses (`--bind HOST:PORT`) and unix sockets
//! (`--bind unix:/path`), bound by the master process (as root, when started as root) and
//! handed to the front processes.
//!
//! A unix socket file is made as gunicorn and uvicorn make theirs, with more care for what is
//! already at the path: a socket file left by a server that died (nothing accepts on it) is
//! replaced, one something still accepts on is refused, and a file that is not a socket is
//! never deleted. The file gets `--unix-socket-mode` (default `0660`) and
//! `--unix-socket-owner` (default: the user who started the server, and, started as root, the
//! group of the user who serves, so a proxy running as that user or in its group connects),
//! both set before the socket listens. The master removes the file when it stops, if it is
//! still the one it made.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The route port of a unix socket when nothing else says one (`SERVER_PORT`, as gunicorn
/// gives it for an `http` unix socket).
pub const UNIX_ROUTE_PORT: u16 = 80;

/// What the application and the logs see as the address of a unix-socket peer, and of the
/// server's end: the socket is reachable from this machine only, as loopback is.
pub const UNIX_PEER: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// An address to listen on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// An IPv4 or IPv6 address and port.
    Ip(SocketAddr),
    /// A unix socket's path.
    Unix(PathBuf),
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Ip(addr) => write!(f, "{addr}"),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl ListenAddr {
    /// Reads [`ListenAddr`]'s display form (`127.0.0.1:8000`, `[::1]:80`, `unix:/path`).
    pub fn parse(text: &str) -> Option<ListenAddr> {
        match text.strip_prefix("unix:") {
            Some(path) if !path.is_empty() => Some(ListenAddr::Unix(PathBuf::from(path))),
            Some(_) => None,
            None => text.parse().ok().map(ListenAddr::Ip),
        }
    }

    /// Whether `self` (an address asked for) is `bound` (a socket's own address): the same,
    /// or, for a port of 0, any port on the same IP.
    pub fn matches(&self, bound: &ListenAddr) -> bool {
        match (self, bound) {
            (ListenAddr::Ip(a), ListenAddr::Ip(b)) => {
                a.ip() == b.ip() && (a.port() == 0 || a.port() == b.port())
            }
            (ListenAddr::Unix(a), ListenAddr::Unix(b)) => a == b,
            _ => false,
        }
    }
}

/// A listening socket (blocking or not, as set).
#[derive(Debug)]
pub enum Listening {
    /// TCP.
    Tcp(TcpListener),
    /// A unix stream socket.
    Unix(UnixListener),
}

impl Listening {
    /// Another descriptor for the same socket.
    pub fn try_clone(&self) -> io::Result<Listening> {
        Ok(match self {
            Listening::Tcp(s) => Listening::Tcp(s.try_clone()?),
            Listening::Unix(s) => Listening::Unix(s.try_clone()?),
        })
    }

    /// The socket's own address: its IP and port, or its path (None for an unnamed or
    /// abstract unix socket).
    pub fn local_addr(&self) -> Option<ListenAddr> {
        match self {
            Listening::Tcp(s) => s.local_addr().ok().map(ListenAddr::Ip),
            Listening::Unix(s) => s
                .local_addr()
                .ok()?
                .as_pathname()
                .map(|p| ListenAddr::Unix(p.to_path_buf())),
        }
    }

    /// Sets the socket non-blocking (or not).
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        match self {
            Listening::Tcp(s) => s.set_nonblocking(nonblocking),
            Listening::Unix(s) => s.set_nonblocking(nonblocking),
        }
    }
}

impl AsRawFd for Listening {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Listening::Tcp(s) => s.as_raw_fd(),
            Listening::Unix(s) => s.as_raw_fd(),
        }
    }
}

/// Why a unix socket cannot be listened on.
#[derive(Debug, thiserror::Error)]
pub enum UnixSocketError {
    /// Something accepts connections on the path: another server runs there.
    #[error(
        "--bind unix:{}: another server is listening on this socket: stop it first, or bind another path",
        .0.display()
    )]
    Live(PathBuf),
    /// The path holds something other than a socket.
    #[error(
        "--bind unix:{}: the path exists and is not a socket (left as it is): bind another path, or remove it yourself if it is not needed",
        .0.display()
    )]
    NotASocket(PathBuf),
    /// The path is longer than a unix socket address holds.
    #[error(
        "--bind unix:{}: the path is {len} bytes long, and a unix socket path holds at most {max}: bind a shorter path (for example in /run)",
        .path.display()
    )]
    TooLong {
        /// The path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
        /// The most a socket address holds.
        max: usize,
    },
    /// The socket's folder does not exist.
    #[error(
        "--bind unix:{}: the folder does not exist: create it first (under systemd, RuntimeDirectory= does)",
        .0.display()
    )]
    NoFolder(PathBuf),
    /// Binding, checking or removing the path failed.
    #[error(
        "--bind unix:{}: {source}: check that this user may create files in the socket's folder",
        .path.display()
    )]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `--unix-socket-owner` could not be applied.
    #[error(
        "--bind unix:{}: cannot give the socket to uid {uid}, gid {gid}: {source}: only root may give a file away; as another user, name only a group you are in (`--unix-socket-owner :GROUP`)",
        .path.display()
    )]
    Owner {
        /// The path.
        path: PathBuf,
        /// The owner asked for.
        uid: u32,
        /// The group asked for.
        gid: u32,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `--unix-socket-owner` names no user or group of this system.
    #[error(
        "--unix-socket-owner `{value}`: {why}: give USER, USER:GROUP or :GROUP of this system (names or numeric ids)"
    )]
    BadOwner {
        /// The value given.
        value: String,
        /// What is wrong.
        why: String,
    },
    /// TLS was asked for on a unix socket.
    #[error(
        "--bind unix:{}: TLS is not served on unix sockets (the proxy in front terminates TLS): bind a TCP address for HTTPS, or drop the certificate",
        .0.display()
    )]
    Tls(PathBuf),
    /// Socket activation passed a unix socket without a path.
    #[error(
        "socket activation: descriptor {0} is an abstract or unnamed unix socket: give the unit's ListenStream= a path (ListenStream=/run/NAME.sock)"
    )]
    Unnamed(RawFd),
}

/// `--unix-socket-mode`: an octal mode of at most `0777`.
pub fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => Err("give an octal mode from 0 to 0777, for example 0660".to_string()),
    }
}

/// Who owns a unix socket file, as `--unix-socket-owner` says (`None`: unchanged).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SocketOwner {
    /// The owning user.
    pub uid: Option<u32>,
    /// The owning group.
    pub gid: Option<u32>,
}

impl SocketOwner {
    /// Reads `USER`, `USER:GROUP` or `:GROUP` (names, or numeric ids); a user alone brings
    /// its own group.
    pub fn parse(value: &str) -> Result<SocketOwner, UnixSocketError> {
        use nix::unistd::{Group, Uid, User};
        let bad = |why: String| UnixSocketError::BadOwner {
            value: value.to_string(),
            why,
        };
        let (user, group) = match value.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (value, None),
        };
        let mut owner = SocketOwner::default();
        if !user.is_empty() {
            let found = match user.parse::<u32>() {
                Ok(uid) => User::from_uid(Uid::from_raw(uid)),
                Err(_) => User::from_name(user),
            };
            let found = found
                .ok()
                .flatten()
                .ok_or_else(|| bad(format!("no user `{user}`")))?;
            owner.uid = Some(found.uid.as_raw());
            owner.gid = Some(found.gid.as_raw());
        }
        if let Some(group) = group.filter(|g| !g.is_empty()) {
            let gid = match group.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => Group::from_name(group)
                    .ok()
                    .flatten()
                    .ok_or_else(|| bad(format!("no group `{group}`")))?
                    .gid
                    .as_raw(),
            };
            owner.gid = Some(gid);
        }
        if owner == SocketOwner::default() {
            return Err(bad("it names nobody".to_string()));
        }
        Ok(owner)
    }
}

/// How a unix socket file is made.
#[derive(Debug, Clone, Copy)]
pub struct UnixOptions {
    /// The listen backlog.
    pub backlog: i32,
    /// The file's permission bits.
    pub mode: u32,
    /// Its owner and group.
    pub owner: SocketOwner,
}

/// A unix socket file this process made: removed when the last holder drops it, if the path
/// still names the same file (another server may have replaced it since).
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.dev() == self.dev && m.ino() == self.ino);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The longest path a unix socket address holds (`sun_path` less its NUL).
const MAX_PATH: usize = 107;

/// Binds and listens on a unix socket at `path` (made absolute by the caller), after
/// replacing a stale socket file there; the file gets `options`' mode and owner before the
/// socket listens. Returns the socket, non-blocking, and the file to remove at the end.
pub fn bind_unix(
    path: &Path,
    options: UnixOptions,
) -> Result<(UnixListener, Arc<SocketFile>), UnixSocketError> {
    use socket2::{Domain, SockAddr, Socket, Type};
    let io_error = |source| UnixSocketError::Io {
        path: path.to_path_buf(),
        source,
    };
    let len = path.as_os_str().len();
    if len > MAX_PATH {
        return Err(UnixSocketError::TooLong {
            path: path.to_path_buf(),
            len,
            max: MAX_PATH,
        });
    }
    if path.parent().is_some_and(|dir| !dir.is_dir()) {
        return Err(UnixSocketError::NoFolder(path.to_path_buf()));
    }
    remove_stale(path)?;
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(io_error)?;
    let address = SockAddr::unix(path).map_err(io_error)?;
    socket.bind(&address).map_err(|e| match e.kind() {
        // Another server bound it since the check.
        io::ErrorKind::AddrInUse => UnixSocketError::Live(path.to_path_buf()),
        _ => io_error(e),
    })?;
    let meta = std::fs::symlink_metadata(path).map_err(io_error)?;
    let file = Arc::new(SocketFile {
        path: path.to_path_buf(),
        dev: meta.dev(),
        ino: meta.ino(),
    });
    // Nobody can connect before `listen`: the mode and owner are in place by then. Neither
    // follows a symbolic link put in the socket's place meanwhile (in a folder others may
    // write), so root never changes another file.
    nix::sys::stat::fchmodat(
        nix::fcntl::AT_FDCWD,
        path,
        nix::sys::stat::Mode::from_bits_truncate(options.mode),
        nix::sys::stat::FchmodatFlags::NoFollowSymlink,
    )
    .map_err(|e| io_error(e.into()))?;
    let SocketOwner { uid, gid } = options.owner;
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::lchown(path, uid, gid).map_err(|source| UnixSocketError::Owner {
            path: path.to_path_buf(),
            uid: uid.unwrap_or(meta.uid()),
            gid: gid.unwrap_or(meta.gid()),
            source,
        })?;
    }
    socket.listen(options.backlog.max(1)).map_err(io_error)?;
    socket.set_nonblocking(true).map_err(io_error)?;
    Ok((socket.into(), file))
}

/// Removes a socket file nothing accepts on (left by a server that died); refuses a live
/// socket and anything that is not a socket.
fn remove_stale(path: &Path) -> Result<(), UnixSocketError> {
    let io_error = |source| UnixSocketError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(UnixSocketError::NotASocket(path.to_path_buf()));
    }
    // Without waiting: a server whose backlog is full (it is alive) would block a connect.
    let probe = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)
        .and_then(|s| s.set_nonblocking(true).map(|()| s))
        .map_err(io_error)?;
    let address = socket2::SockAddr::unix(path).map_err(io_error)?;
    match probe.connect(&address) {
        Ok(()) => Err(UnixSocketError::Live(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            Err(UnixSocketError::Live(path.to_path_buf()))
        }
        // Removed meanwhile: nothing to replace.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(
                "--bind unix:{}: replacing the socket file a stopped server left",
                path.display()
            );
            std::fs::remove_file(path).map_err(io_error)
        }
        Err(e) => Err(io_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_read_back() {
        for text in ["127.0.0.1:8000", "[::1]:80", "unix:/run/app.sock"] {
            assert_eq!(ListenAddr::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(ListenAddr::parse("unix:"), None);
        let wild = ListenAddr::parse("127.0.0.1:0").unwrap();
        assert!(wild.matches(&ListenAddr::parse("127.0.0.1:8123").unwrap()));
        assert!(!wild.matches(&ListenAddr::parse("unix:/x").unwrap()));
    }

    #[test]
    fn what_is_at_the_path_decides() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        // Nothing there, then a socket nobody accepts on: fine (the latter removed).
        remove_stale(&path).unwrap();
        drop(UnixListener::bind(&path).unwrap());
        remove_stale(&path).unwrap();
        assert!(!path.exists());
        // A live one whose backlog is full: refused at once, not waited on.
        let live =
            socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
        live.bind(&socket2::SockAddr::unix(&path).unwrap()).unwrap();
        live.listen(0).unwrap();
        let mut clients = Vec::new();
        let mut full = false;
        for _ in 0..64 {
            let c =
                socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
            c.set_nonblocking(true).unwrap();
            full = c.connect(&socket2::SockAddr::unix(&path).unwrap()).is_err();
            clients.push(c);
            if full {
                break;
            }
        }
        assert!(full, "the backlog never filled");
        assert!(matches!(remove_stale(&path), Err(UnixSocketError::Live(_))));
        assert!(path.exists());
        // Not a socket: left alone.
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        assert!(matches!(
            remove_stale(&file),
            Err(UnixSocketError::NotASocket(_))
        ));
        assert!(file.exists());
    }

    #[test]
    fn the_socket_gets_its_mode_and_links_are_never_followed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let options = UnixOptions {
            backlog: 8,
            mode: 0o604,
            owner: SocketOwner::default(),
        };
        let (listener, file) = bind_unix(&path, options).unwrap();
        let mode = std::fs::symlink_metadata(&path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o604);
        drop(listener);
        drop(file);
        assert!(!path.exists());
        // What the mode is set with, given a link in the socket's place: refused, the file
        // it points to untouched.
        let target = dir.path().join("target");
        std::fs::write(&target, "x").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let changed = nix::sys::stat::fchmodat(
            nix::fcntl::AT_FDCWD,
            &path,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::FchmodatFlags::NoFollowSymlink,
        );
        assert!(changed.is_err());
        let mode = std::fs::metadata(&target).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn modes_and_owners() {
        assert_eq!(parse_mode("0660"), Ok(0o660));
        assert_eq!(parse_mode("666"), Ok(0o666));
        assert!(parse_mode("0999").is_err());
        assert!(parse_mode("01777").is_err());
        let root = SocketOwner::parse("root").unwrap();
        assert_eq!((root.uid, root.gid), (Some(0), Some(0)));
        assert_eq!(
            SocketOwner::parse(":0").unwrap(),
            SocketOwner {
                uid: None,
                gid: Some(0)
            }
        );
        assert!(SocketOwner::parse("no-such-user-here").is_err());
        assert!(SocketOwner::parse(":").is_err());
    }
}
