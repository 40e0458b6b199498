//! Giving memory back to the system after connections let go of theirs.
//!
//! The allocator (mimalloc) keeps freed memory for reuse and returns it to the system only
//! when it next does some bookkeeping, which an idle thread never does: after a burst of
//! connections is parked ([`super::http1`]), the process would keep the peak of their hyper
//! buffers resident while they wait. So parking a connection is noted here, and each I/O
//! thread, as it goes idle (tokio's `on_thread_park`), asks the allocator to collect its
//! freed memory when connections were parked since it last did.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

/// Connections parked so far, in the whole process.
static PARKED: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// [`PARKED`] when this thread last collected.
    static COLLECTED_AT: Cell<u64> = const { Cell::new(0) };
}

/// Notes that a connection let go of its buffers (its memory is worth collecting).
pub fn freed_in_bulk() {
    PARKED.fetch_add(1, Ordering::Relaxed);
}

/// For tokio's `on_thread_park`: collects this thread's freed memory if connections were
/// parked since it last did (cheap otherwise: one load).
pub fn on_thread_idle() {
    let parked = PARKED.load(Ordering::Relaxed);
    if COLLECTED_AT.get() == parked {
        return;
    }
    COLLECTED_AT.set(parked);
    crate::allocator::collect();
}
