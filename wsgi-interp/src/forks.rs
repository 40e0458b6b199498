//! Forks of this process so far, for what a forked child must not take over from its parent
//! (an inotify queue, a cached process id).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Forks of this process so far (counted in the child by a `pthread_atfork` handler).
static FORKS: AtomicU64 = AtomicU64::new(0);

extern "C" fn forked() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// The forks of this process counted so far: from the first call on, each child counts the
/// fork that made it. `None` where the handler that counts them could not be set: then no
/// answer may be kept across a fork.
pub(crate) fn forks() -> Option<u64> {
    static HANDLER: OnceLock<bool> = OnceLock::new();
    let counting = *HANDLER.get_or_init(|| {
        // SAFETY: `forked` only increments an atomic, which is safe in a child between `fork`
        // and `exec`; pthread_atfork merely records the function.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(forked)) };
        if rc != 0 {
            tracing::warn!("pthread_atfork failed ({rc}): scripts are stat'ed per request");
        }
        rc == 0
    });
    counting.then(|| FORKS.load(Ordering::Relaxed))
}

/// This process's id, asked of the system once per process (`getpid` is a system call each
/// time) and again in a forked child.
pub fn process_id() -> u32 {
    /// The id (never 0) and, above it, the fork count it was asked at (0: none yet).
    static KNOWN: AtomicU64 = AtomicU64::new(0);
    let Some(forks) = forks() else {
        return std::process::id();
    };
    let known = KNOWN.load(Ordering::Relaxed);
    if known != 0 && (known >> 32) as u32 == forks as u32 {
        return known as u32;
    }
    let pid = std::process::id();
    KNOWN.store(
        u64::from(forks as u32) << 32 | u64::from(pid),
        Ordering::Relaxed,
    );
    pid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forked_child_knows_its_own_id() {
        let parent = process_id();
        assert_eq!(parent, std::process::id());
        assert_eq!(process_id(), parent, "kept");
        let (read, write) = nix::unistd::pipe().unwrap();
        // SAFETY: the child only calls `process_id` (atomics and getpid), writes to a pipe
        // and exits without unwinding.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let ok = process_id() == std::process::id() && process_id() != parent;
                let _ = nix::unistd::write(&write, &[u8::from(ok)]);
                // SAFETY: `_exit` ends the child at once, as a forked test child must.
                unsafe { libc::_exit(0) };
            }
            nix::unistd::ForkResult::Parent { child } => {
                drop(write);
                let mut answer = [0u8; 1];
                assert_eq!(nix::unistd::read(&read, &mut answer).unwrap(), 1);
                nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(answer, [1], "the child's id is its own, not its parent's");
            }
        }
        assert_eq!(process_id(), parent);
    }
}
