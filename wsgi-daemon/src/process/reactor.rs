//! The reactor thread: one epoll over the group's listening socket and every idle front
//! connection. A connection with a request waiting goes to the workers' job channel; the
//! listener is polled only while a worker is free, so a busy process leaves new connections
//! to its siblings.

use std::io;
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use nix::sys::epoll::{EpollEvent, EpollFlags, EpollTimeout};

use super::{FrontConn, Shared};

pub(super) const LISTENER: u64 = 0;
pub(super) const FIRST_CONN: u64 = 1;

pub(super) fn listener_flags() -> EpollFlags {
    EpollFlags::EPOLLIN | EpollFlags::EPOLLONESHOT
}

fn conn_flags() -> EpollFlags {
    EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLONESHOT
}

impl Shared {
    pub(super) fn reactor(self: Arc<Self>) {
        let mut events = vec![EpollEvent::empty(); 64];
        loop {
            let n = match self.epoll.wait(&mut events, EpollTimeout::from(100u16)) {
                Ok(n) => n,
                Err(nix::Error::EINTR) => continue,
                Err(e) => {
                    tracing::error!(group = %self.spec.group, "poller failed: {e}; stopping");
                    self.request_drain("poller failure", Duration::ZERO);
                    return;
                }
            };
            for ev in &events[..n] {
                if ev.data() == LISTENER {
                    self.accept_ready();
                } else if let Some((conn, reserved)) = self.idle.lock().remove(&ev.data()) {
                    // A worker picks it up (a closed connection reads as end of stream).
                    let _ = self.jobs.push((ev.data(), conn, reserved));
                }
            }
        }
    }

    /// Accepts as many connections as there are idle workers, then re-arms the listener
    /// only if a worker is still idle (a worker re-arms it when it becomes idle).
    fn accept_ready(&self) {
        let guard = self.listener.lock();
        let Some(listener) = guard.as_ref() else {
            return;
        };
        while self.free.load(Ordering::SeqCst) > 0 {
            match listener.accept() {
                Ok((conn, _)) => {
                    crate::client::set_buffer_sizes(
                        &conn,
                        self.spec.options.send_buffer_size,
                        self.spec.options.receive_buffer_size,
                    );
                    // Reads wait at most socket-timeout, on every request of the connection.
                    let timeout = self.spec.options.socket_timeout;
                    let _ = conn.set_read_timeout((!timeout.is_zero()).then_some(timeout));
                    // This connection's first request has a worker promised to it.
                    self.free.fetch_sub(1, Ordering::SeqCst);
                    let token = self.next_token.fetch_add(1, Ordering::Relaxed);
                    if !self.register(token, FrontConn::new(conn), true) {
                        self.free.fetch_add(1, Ordering::SeqCst);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!(group = %self.spec.group, "accept failed: {e}");
                    break;
                }
            }
        }
        self.listener_armed.store(false, Ordering::SeqCst);
        if self.free.load(Ordering::SeqCst) > 0 {
            self.arm_listener(&guard);
        }
    }

    pub(super) fn arm_listener(&self, guard: &Option<UnixListener>) {
        if self.draining.load(Ordering::SeqCst) {
            return;
        }
        if let Some(listener) = guard.as_ref() {
            if !self.listener_armed.swap(true, Ordering::SeqCst) {
                let mut ev = EpollEvent::new(listener_flags(), LISTENER);
                let _ = self.epoll.modify(listener, &mut ev);
            }
        }
    }

    /// Hands `conn` to the poller; false if it was dropped instead.
    pub(super) fn register(&self, token: u64, conn: FrontConn, new: bool) -> bool {
        if self.draining.load(Ordering::SeqCst) {
            return false;
        }
        let mut idle = self.idle.lock();
        let mut ev = EpollEvent::new(conn_flags(), token);
        let ok = if new {
            self.epoll.add(&conn.stream, ev).is_ok()
        } else {
            self.epoll.modify(&conn.stream, &mut ev).is_ok()
        };
        if ok {
            idle.insert(token, (conn, new));
        }
        ok
    }
}
