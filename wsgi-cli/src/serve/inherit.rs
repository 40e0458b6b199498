//! Descriptors the master process hands to a front process it starts: the listening sockets
//! (bound as root), the control socket, the log files (opened as root). Each is named, by
//! descriptor number, in an environment variable of the child, and kept open across its
//! `exec` only in that child: the master's copies stay close-on-exec, so the daemon processes
//! it starts never inherit them (a listening socket held by a daemon would keep accepting after
//! the server stopped).

use std::net::TcpListener;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::socket::{getsockopt, sockopt};
use nix::sys::stat::{SFlag, fstat};

use socket2::Domain;

use super::listen::{ListenAddr, Listening};

/// The variable naming the listening sockets: `3,4`.
pub const LISTEN_FDS: &str = "WSGI_RS_LISTEN_FDS";
/// The variable saying what each listening socket serves: a JSON list of `[ADDRESS, PORT]`
/// (`"127.0.0.1:8000"` or `"unix:/path"`, and the port it is routed as, or `null` for its own).
pub const ROUTES: &str = "WSGI_RS_ROUTES";
/// The variable naming the control socket.
pub const CONTROL_FD: &str = "WSGI_RS_CONTROL_FD";
/// The variable naming the log files (`access_log::log_files` order).
pub const LOG_FDS: &str = "WSGI_RS_LOG_FDS";

/// Makes `command`'s child keep `fds` open across its `exec` (they stay close-on-exec in this
/// process).
pub fn keep_in_child(command: &mut tokio::process::Command, fds: Vec<RawFd>) {
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe functions may be called: it calls fcntl(2) (F_GETFD/F_SETFD) on
    // descriptors the parent holds open for the whole spawn, allocates nothing and takes no
    // lock.
    unsafe {
        command.pre_exec(move || {
            for &fd in &fds {
                let flags = nix::libc::fcntl(fd, nix::libc::F_GETFD);
                if flags < 0
                    || nix::libc::fcntl(fd, nix::libc::F_SETFD, flags & !nix::libc::FD_CLOEXEC) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// The descriptors named in `variable` (comma-separated), removed from the environment. Call
/// at start, before any thread is started.
fn named(variable: &str) -> Vec<RawFd> {
    let Some(value) = std::env::var_os(variable) else {
        return Vec::new();
    };
    // SAFETY: called at the start of the front process, before it starts any thread, so no
    // other thread reads the environment meanwhile.
    unsafe { std::env::remove_var(variable) };
    value
        .to_string_lossy()
        .split(',')
        .filter_map(|fd| fd.trim().parse::<RawFd>().ok())
        .filter(|&fd| fd > 2)
        .collect()
}

/// Takes ownership of an inherited descriptor that `check` accepts (marked close-on-exec
/// again, so the front's own children never inherit it).
fn own(fd: RawFd, check: impl Fn(BorrowedFd<'_>) -> bool) -> Option<OwnedFd> {
    // SAFETY: the borrow lives only for the queries below; fstat fails (EBADF) on a
    // descriptor that is not open, and nothing closes descriptors concurrently at start-up.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    if fstat(borrowed).is_err() || !check(borrowed) {
        tracing::warn!("inherited descriptor {fd} is not what it was named as: ignored");
        return None;
    }
    // SAFETY: the descriptor is open (fstat succeeded), of the expected kind, and was passed
    // to this program for it to own: nothing else in this process uses it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    fcntl(&owned, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).ok()?;
    Some(owned)
}

/// Whether `fd` is a socket that listens.
fn is_listening_socket(fd: BorrowedFd<'_>) -> bool {
    is_kind(fd, SFlag::S_IFSOCK) && getsockopt(&fd, sockopt::AcceptConn).unwrap_or(false)
}

fn is_kind(fd: BorrowedFd<'_>, kind: SFlag) -> bool {
    fstat(fd).is_ok_and(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == kind)
}

/// The address family of a socket.
fn domain_of(fd: &impl std::os::fd::AsFd) -> std::io::Result<Domain> {
    socket2::SockRef::from(fd).domain()
}

/// A listening socket of either family, as [`Listening`] (a unix socket when it is not TCP).
fn listening(fd: OwnedFd) -> Listening {
    let is_tcp = domain_of(&fd).is_ok_and(|d| d == Domain::IPV4 || d == Domain::IPV6);
    if is_tcp {
        Listening::Tcp(TcpListener::from(fd))
    } else {
        Listening::Unix(UnixListener::from(fd))
    }
}

/// Takes the listening sockets the master handed over, each with its address.
pub fn take_listeners() -> Vec<(ListenAddr, Listening)> {
    named(LISTEN_FDS)
        .into_iter()
        .filter_map(|fd| own(fd, is_listening_socket))
        .filter_map(|fd| {
            let listener = listening(fd);
            Some((listener.local_addr()?, listener))
        })
        .collect()
}

/// Takes a socket systemd passed (socket activation), if it is a listening stream socket:
/// TCP (IPv4, IPv6) or unix.
pub fn take_activated(fd: RawFd) -> Option<Listening> {
    let fits = |fd: BorrowedFd<'_>| {
        let stream = getsockopt(&fd, sockopt::SockType)
            .is_ok_and(|t| t == nix::sys::socket::SockType::Stream);
        let family = domain_of(&fd)
            .is_ok_and(|d| d == Domain::IPV4 || d == Domain::IPV6 || d == Domain::UNIX);
        is_listening_socket(fd) && stream && family
    };
    Some(listening(own(fd, fits)?))
}

/// [`ROUTES`]'s value for `routes`.
pub fn routes_text(routes: &[(ListenAddr, Option<u16>)]) -> String {
    let list: Vec<(String, Option<u16>)> = routes
        .iter()
        .map(|(addr, route)| (addr.to_string(), *route))
        .collect();
    serde_json::to_string(&list).unwrap_or_default()
}

/// What each listening socket serves, as the master said ([`ROUTES`]); None when it did not.
pub fn take_routes() -> Option<Vec<(ListenAddr, Option<u16>)>> {
    let value = std::env::var(ROUTES).ok()?;
    // SAFETY: called at the start of the front process, before it starts any thread, so no
    // other thread reads the environment meanwhile.
    unsafe { std::env::remove_var(ROUTES) };
    let list: Vec<(String, Option<u16>)> = serde_json::from_str(&value).ok()?;
    list.into_iter()
        .map(|(addr, route)| Some((ListenAddr::parse(&addr)?, route)))
        .collect()
}

/// Takes the control socket the master handed over.
pub fn take_control() -> Option<std::os::unix::net::UnixStream> {
    let fd = named(CONTROL_FD).into_iter().next()?;
    own(fd, |fd| is_kind(fd, SFlag::S_IFSOCK)).map(std::os::unix::net::UnixStream::from)
}

/// Takes the log files the master opened, in its order (a descriptor that is not a file
/// ends the list short, which the front reports).
pub fn take_log_files() -> Vec<std::fs::File> {
    named(LOG_FDS)
        .into_iter()
        .map_while(|fd| own(fd, |fd| !is_kind(fd, SFlag::S_IFSOCK)).map(std::fs::File::from))
        .collect()
}

/// `fds` as the value of a variable naming them.
pub fn list(fds: &[RawFd]) -> String {
    fds.iter()
        .map(RawFd::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The inherited socket for `addr`, if there is one (taken out of `inherited`). A wildcard
/// port (`0`) matches any inherited socket on the same IP.
pub fn claim(inherited: &mut Vec<(ListenAddr, Listening)>, addr: &ListenAddr) -> Option<Listening> {
    let i = inherited.iter().position(|(a, _)| addr.matches(a))?;
    Some(inherited.swap_remove(i).1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsFd, AsRawFd};

    #[test]
    fn only_listening_sockets_qualify() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(is_listening_socket(listener.as_fd()));
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        assert!(!is_listening_socket(client.as_fd()));
        let file = tempfile::tempfile().unwrap();
        assert!(!is_listening_socket(file.as_fd()));
    }

    #[test]
    fn routes_round_trip() {
        let routes = vec![
            (ListenAddr::parse("127.0.0.1:8000").unwrap(), None),
            (ListenAddr::parse("[::1]:8443").unwrap(), Some(443)),
            (ListenAddr::parse("unix:/run/a=b,c.sock").unwrap(), Some(80)),
        ];
        let text = routes_text(&routes);
        assert_eq!(
            text,
            r#"[["127.0.0.1:8000",null],["[::1]:8443",443],["unix:/run/a=b,c.sock",80]]"#
        );
        // SAFETY: this test alone uses the variable.
        unsafe { std::env::set_var(ROUTES, &text) };
        assert_eq!(take_routes(), Some(routes));
        assert_eq!(take_routes(), None);
    }

    #[test]
    fn claims_by_address() {
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = ListenAddr::Ip(a.local_addr().unwrap());
        let mut inherited = vec![(addr.clone(), Listening::Tcp(a))];
        let other = ListenAddr::parse("127.0.0.2:80").unwrap();
        assert!(claim(&mut inherited, &other).is_none());
        assert!(claim(&mut inherited, &addr).is_some());
        assert!(inherited.is_empty());
    }

    #[test]
    fn unix_listeners_are_told_from_tcp_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let unix = UnixListener::bind(&path).unwrap();
        let listener = listening(OwnedFd::from(unix));
        assert!(matches!(listener, Listening::Unix(_)));
        assert_eq!(listener.local_addr(), Some(ListenAddr::Unix(path)));
        let tcp = listening(OwnedFd::from(TcpListener::bind("127.0.0.1:0").unwrap()));
        assert!(matches!(tcp, Listening::Tcp(_)));
    }

    #[tokio::test]
    async fn a_child_keeps_only_the_descriptors_it_is_given() {
        let given = tempfile::tempfile().unwrap();
        let not_given = tempfile::tempfile().unwrap();
        let (g, n) = (given.as_raw_fd(), not_given.as_raw_fd());
        let mut command = tokio::process::Command::new("sh");
        command.args([
            "-c",
            &format!("test -e /proc/self/fd/{g} && ! test -e /proc/self/fd/{n}"),
        ]);
        keep_in_child(&mut command, vec![g]);
        assert!(command.status().await.unwrap().success());
        // Still close-on-exec here.
        let flags = fcntl(given.as_fd(), FcntlArg::F_GETFD).unwrap();
        assert!(FdFlag::from_bits_truncate(flags).contains(FdFlag::FD_CLOEXEC));
    }
}
