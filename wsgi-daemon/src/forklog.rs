//! Logging that stays usable in a process forked while another thread logs.
//!
//! The Apache parent runs the daemon [`Supervisor`](crate::Supervisor) on a thread of its own
//! and keeps forking children. A child gets a copy of the memory with only the forking thread
//! in it, so a lock another thread held at that instant stays held for good in the child. The
//! lock that matters is the one around writes to stderr: the supervisor logs daemon starts and
//! exits just as Apache forks its new children after a graceful restart, and a child whose
//! Python then logged would hang with the GIL held. Every log write therefore takes one pthread
//! mutex, and [`register_fork_handlers`] has `fork` take it too (POSIX `pthread_atfork`), so no
//! write is ever half done in a child's copy.

use std::cell::UnsafeCell;
use std::io::Write;
use std::sync::Once;

struct WriteLock(UnsafeCell<libc::pthread_mutex_t>);

// SAFETY: a pthread mutex exists to be shared between threads; it is only ever used through
// `pthread_mutex_lock`/`pthread_mutex_unlock` on its fixed address.
unsafe impl Sync for WriteLock {}

static LOCK: WriteLock = WriteLock(UnsafeCell::new(libc::PTHREAD_MUTEX_INITIALIZER));

fn lock() {
    // SAFETY: the mutex is statically initialised and never moved or destroyed.
    unsafe { libc::pthread_mutex_lock(LOCK.0.get()) };
}

fn unlock() {
    // SAFETY: as in `lock`; called only by the holder (a writer's drop, or the fork handlers
    // after `prepare` took it on the forking thread).
    unsafe { libc::pthread_mutex_unlock(LOCK.0.get()) };
}

extern "C" fn prepare() {
    lock();
}

extern "C" fn release() {
    unlock();
}

/// Has every `fork(2)` of this process wait for a log write in progress and keep others out
/// until it is done, in the parent and the child alike. Idempotent.
pub fn register_fork_handlers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: the handlers are plain functions that only lock and unlock a static mutex,
        // which is what POSIX intends `pthread_atfork` for.
        let rc = unsafe { libc::pthread_atfork(Some(prepare), Some(release), Some(release)) };
        if rc != 0 {
            tracing::warn!("pthread_atfork failed ({rc}): logging is not fork-safe");
        }
    });
}

/// stderr for `tracing_subscriber`, each event written under the write lock.
#[derive(Debug, Clone, Copy, Default)]
pub struct ForkSafeStderr;

/// One event's writer: holds the write lock until dropped.
#[derive(Debug)]
pub struct LockedStderr(());

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ForkSafeStderr {
    type Writer = LockedStderr;

    fn make_writer(&'a self) -> LockedStderr {
        lock();
        LockedStderr(())
    }
}

impl Write for LockedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::io::stderr().write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl Drop for LockedStderr {
    fn drop(&mut self) {
        unlock();
    }
}
