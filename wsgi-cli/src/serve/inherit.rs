//! Descriptors the master process hands to a front process it starts: the listening sockets
//! (bound as root), the control socket, the log files (opened as root). Each is named, by
//! descriptor number, in an environment variable of the child, and kept open across its
//! `exec` only in that child: the master's copies stay close-on-exec, so the daemon processes
//! it starts never inherit them (a listening socket held by a daemon would keep accepting after
//! the server stopped).

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::socket::{getsockopt, sockopt};
use nix::sys::stat::{SFlag, fstat};

/// The variable naming the listening sockets: `3,4`.
pub const LISTEN_FDS: &str = "WSGI_RS_LISTEN_FDS";
/// The variable saying what each listening socket serves: `ADDR=PORT` (routed as PORT) or
/// `ADDR=-` (its own port), comma-separated.
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

/// Takes the listening sockets the master handed over, each with its address.
pub fn take_listeners() -> Vec<(SocketAddr, TcpListener)> {
    named(LISTEN_FDS)
        .into_iter()
        .filter_map(|fd| own(fd, is_listening_socket))
        .filter_map(|fd| {
            let listener = TcpListener::from(fd);
            Some((listener.local_addr().ok()?, listener))
        })
        .collect()
}

/// Takes a socket systemd passed (socket activation), if it is a listening TCP socket.
pub fn take_activated(fd: RawFd) -> Option<TcpListener> {
    let stream = |fd: BorrowedFd<'_>| {
        getsockopt(&fd, sockopt::SockType).is_ok_and(|t| t == nix::sys::socket::SockType::Stream)
    };
    let listener = TcpListener::from(own(fd, |fd| is_listening_socket(fd) && stream(fd))?);
    // Only an IPv4 or IPv6 socket has an address std reads (not a unix socket).
    listener.local_addr().is_ok().then_some(listener)
}

/// [`ROUTES`]'s value for `routes`.
pub fn routes_text(routes: &[(SocketAddr, Option<u16>)]) -> String {
    routes
        .iter()
        .map(|(addr, route)| match route {
            Some(port) => format!("{addr}={port}"),
            None => format!("{addr}=-"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// What each listening socket serves, as the master said ([`ROUTES`]); None when it did not.
pub fn take_routes() -> Option<Vec<(SocketAddr, Option<u16>)>> {
    let value = std::env::var(ROUTES).ok()?;
    // SAFETY: called at the start of the front process, before it starts any thread, so no
    // other thread reads the environment meanwhile.
    unsafe { std::env::remove_var(ROUTES) };
    value
        .split(',')
        .filter(|item| !item.is_empty())
        .map(|item| {
            let (addr, route) = item.rsplit_once('=')?;
            let route = match route {
                "-" => None,
                port => Some(port.parse().ok()?),
            };
            Some((addr.parse().ok()?, route))
        })
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

/// The raw descriptor of each listener.
pub fn raw_fds(listeners: &[TcpListener]) -> Vec<RawFd> {
    listeners.iter().map(AsRawFd::as_raw_fd).collect()
}

/// The inherited socket for `addr`, if there is one (taken out of `inherited`). A wildcard
/// port (`0`) matches any inherited socket on the same IP.
pub fn claim(
    inherited: &mut Vec<(SocketAddr, TcpListener)>,
    addr: SocketAddr,
) -> Option<TcpListener> {
    let i = inherited
        .iter()
        .position(|(a, _)| a.ip() == addr.ip() && (addr.port() == 0 || a.port() == addr.port()))?;
    Some(inherited.swap_remove(i).1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

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
            ("127.0.0.1:8000".parse().unwrap(), None),
            ("[::1]:8443".parse().unwrap(), Some(443)),
        ];
        let text = routes_text(&routes);
        assert_eq!(text, "127.0.0.1:8000=-,[::1]:8443=443");
        // SAFETY: this test alone uses the variable.
        unsafe { std::env::set_var(ROUTES, &text) };
        assert_eq!(take_routes(), Some(routes));
        assert_eq!(take_routes(), None);
    }

    #[test]
    fn claims_by_address() {
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = a.local_addr().unwrap();
        let mut inherited = vec![(addr, a)];
        let other: SocketAddr = "127.0.0.2:80".parse().unwrap();
        assert!(claim(&mut inherited, other).is_none());
        assert!(claim(&mut inherited, addr).is_some());
        assert!(inherited.is_empty());
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
