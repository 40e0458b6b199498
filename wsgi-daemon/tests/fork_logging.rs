//! A process that forks while another thread logs, as the Apache parent does while the daemon
//! supervisor's thread logs: with `forklog`'s fork handlers, every child can still log and exit.
//! (Its own test binary: it replaces stderr and forks.)

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork};

#[test]
fn children_forked_while_a_thread_logs_can_log() {
    // Thousands of lines: to /dev/null.
    let null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .unwrap();
    // SAFETY: descriptor 2 becomes a copy of an open descriptor; nothing writes to it yet.
    assert!(unsafe { libc::dup2(null.as_raw_fd(), 2) } == 2);
    wsgi_daemon::init_logging();
    wsgi_daemon::forklog::register_fork_handlers();
    let stop = Arc::new(AtomicBool::new(false));
    let logger = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                tracing::info!(
                    group = "site",
                    pid = 4242,
                    "daemon process started: a line about as long as the supervisor's own"
                );
            }
        })
    };
    let mut hung = 0;
    for _ in 0..300 {
        // SAFETY: the child only logs (glibc's malloc is fork-safe, and the log lock was
        // released in the child by the fork handler) and leaves with `_exit`.
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => {
                tracing::info!("child logging after the fork");
                // SAFETY: ends the child without running the parent's exit handlers.
                unsafe { libc::_exit(0) }
            }
            ForkResult::Parent { child } => {
                let deadline = Instant::now() + Duration::from_secs(5);
                loop {
                    match waitpid(child, Some(WaitPidFlag::WNOHANG)).expect("waitpid") {
                        WaitStatus::StillAlive if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        WaitStatus::StillAlive => {
                            let _ = kill(child, Signal::SIGKILL);
                            let _ = waitpid(child, None);
                            hung += 1;
                            break;
                        }
                        WaitStatus::Exited(_, 0) => break,
                        other => panic!("the child ended unexpectedly: {other:?}"),
                    }
                }
            }
        }
        if hung > 0 {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    logger.join().unwrap();
    assert_eq!(hung, 0, "a child forked mid-write could not log");
}
