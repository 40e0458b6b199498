//! Listening sockets kept open across a restart in place (`exec` of this program, for SIGHUP
//! and `--reload-on-changes`): the kernel goes on queueing connections on them while the
//! new program starts Python and loads the apps, so a client arriving then waits instead of
//! being refused. The sockets are named, by descriptor, in one environment variable.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::socket::{getsockopt, sockopt};
use nix::sys::stat::{SFlag, fstat};

/// The variable naming the inherited descriptors: `3,4`.
const VARIABLE: &str = "WSGI_RS_LISTEN_FDS";

/// Takes the listening sockets a restarting predecessor left open, each with its address.
/// Descriptors that are not listening TCP sockets are left alone. Call it once, at start,
/// before any thread is started (it removes the variable from the environment).
pub fn take() -> Vec<(SocketAddr, TcpListener)> {
    let Some(named) = std::env::var_os(VARIABLE) else {
        return Vec::new();
    };
    // SAFETY: called at the start of `wsgi serve`, before it starts any thread, so no other
    // thread reads the environment meanwhile.
    unsafe { std::env::remove_var(VARIABLE) };
    let mut taken = Vec::new();
    for fd in named.to_string_lossy().split(',') {
        let Ok(fd) = fd.trim().parse::<i32>() else {
            continue;
        };
        if fd <= 2 || !is_listening_socket(fd) {
            tracing::warn!("{VARIABLE}: descriptor {fd} is not a listening socket: ignored");
            continue;
        }
        // SAFETY: the descriptor is open (fstat succeeded), is a listening socket, and was
        // passed to this program for it to own: nothing else in this process uses it.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        // Not to be inherited again by the daemon processes this server starts.
        if fcntl(&owned, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).is_err() {
            continue;
        }
        let listener = TcpListener::from(owned);
        if let Ok(addr) = listener.local_addr() {
            taken.push((addr, listener));
        }
    }
    taken
}

/// Whether `fd` is an open socket that listens.
fn is_listening_socket(fd: i32) -> bool {
    // SAFETY: the borrow lives only for the two queries below; fstat fails (EBADF) on a
    // descriptor that is not open, and nothing closes descriptors concurrently at start-up.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    fstat(borrowed)
        .is_ok_and(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFSOCK)
        && getsockopt(&borrowed, sockopt::AcceptConn).unwrap_or(false)
}

/// Hands `sockets` to the program `command` will exec: they stay open across the exec and
/// are named in its environment.
pub fn pass_on(command: &mut Command, sockets: &[TcpListener]) -> std::io::Result<()> {
    let mut fds = Vec::new();
    for socket in sockets {
        fcntl(socket.as_fd(), FcntlArg::F_SETFD(FdFlag::empty()))?;
        fds.push(socket.as_raw_fd().to_string());
    }
    if !fds.is_empty() {
        command.env(VARIABLE, fds.join(","));
    }
    Ok(())
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

    #[test]
    fn only_listening_sockets_qualify() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(is_listening_socket(listener.as_raw_fd()));
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        assert!(!is_listening_socket(client.as_raw_fd()));
        let file = tempfile::tempfile().unwrap();
        assert!(!is_listening_socket(file.as_raw_fd()));
        assert!(!is_listening_socket(1_000_000));
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
}
