//! Response chunks lent to the front without copying: a large `bytes` object an application
//! yields goes out as [`SharedChunk`], a view of the object's own buffer that keeps the object
//! alive, so the front can queue it on the connection (hyper writes it from there) while the
//! worker goes on.
//!
//! A `bytes` object's buffer is immutable and lives as long as one reference does. The chunk
//! holds such a reference, taken while attached. It is dropped wherever the front is done with
//! the bytes (a tokio thread, without the GIL), and a reference may only be released while
//! attached to the object's interpreter; so the drop parks the pointer in that interpreter's
//! [`ReleaseQueue`], and the next call there ([`ReleaseQueue::release_parked`], attached)
//! releases it. When the interpreter ends, its queue closes: what was parked is released then,
//! and a chunk dropped later leaks its one reference rather than touch a finished interpreter
//! (only `bytes` of at least [`SHARE_MIN`] bytes are shared: CPython gives objects that large
//! memory of their own from the raw allocator, which outlives the interpreter when a reference
//! is left).

use std::ptr::NonNull;
use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::ffi;

use super::Obj;

/// The smallest `bytes` shared rather than copied: below it, copying costs less than the
/// bookkeeping, and CPython may serve the object from its small-object arenas (at most 512
/// bytes), which end with the interpreter.
pub(crate) const SHARE_MIN: usize = 16 * 1024;

/// A reference to release, parked by a thread that was not attached.
struct Parked(NonNull<ffi::PyObject>);

// SAFETY: the pointer is only dereferenced (released) by `release_parked`, on a thread attached
// to the owning interpreter; carrying it between threads does not touch the object.
unsafe impl Send for Parked {}

/// An interpreter's references dropped by threads that were not attached to it.
#[derive(Default)]
pub(crate) struct ReleaseQueue {
    /// None once the interpreter ended.
    parked: Mutex<Option<Vec<Parked>>>,
}

impl ReleaseQueue {
    /// A queue for a new interpreter.
    pub(crate) fn new() -> Arc<ReleaseQueue> {
        Arc::new(ReleaseQueue {
            parked: Mutex::new(Some(Vec::new())),
        })
    }

    /// Releases every parked reference.
    ///
    /// # Safety
    /// Attached to the interpreter owning this queue.
    pub(crate) unsafe fn release_parked(&self) {
        let parked = match self.parked.lock().as_mut() {
            Some(parked) if !parked.is_empty() => std::mem::take(parked),
            _ => return,
        };
        for p in parked {
            // SAFETY: attached to the owner (caller's contract); each parked pointer is one
            // strong reference a SharedChunk owned and handed over.
            unsafe { ffi::Py_DecRef(p.0.as_ptr()) };
        }
    }

    /// Releases what is parked and refuses anything later (the interpreter is ending).
    ///
    /// # Safety
    /// Attached to the interpreter owning this queue, before it ends.
    pub(crate) unsafe fn close(&self) {
        let parked = self.parked.lock().take().unwrap_or_default();
        for p in parked {
            // SAFETY: as in `release_parked`.
            unsafe { ffi::Py_DecRef(p.0.as_ptr()) };
        }
    }

    fn park(&self, obj: NonNull<ffi::PyObject>) {
        if let Some(parked) = self.parked.lock().as_mut() {
            parked.push(Parked(obj));
        }
        // Else the interpreter ended: the reference leaks, and with it the object's memory
        // stays valid (it came from the raw allocator: SHARE_MIN).
    }
}

/// A response chunk that is an immutable Python `bytes` object's own buffer, lent without
/// copying. It may be sent to and dropped on any thread; see the module documentation for how
/// its reference is released.
pub struct SharedChunk {
    data: NonNull<u8>,
    len: usize,
    obj: NonNull<ffi::PyObject>,
    queue: Arc<ReleaseQueue>,
}

// SAFETY: the buffer is immutable (a `bytes` object's) and kept alive by the reference the
// chunk owns, which is released only through the queue, by an attached thread; reading it from
// any thread, concurrently too, is sound.
unsafe impl Send for SharedChunk {}
// SAFETY: as for Send: shared access only reads the immutable buffer.
unsafe impl Sync for SharedChunk {}

impl SharedChunk {
    /// The chunk of `item` when it is a `bytes` object (exactly) of at least [`SHARE_MIN`]
    /// bytes; else gives `item` back.
    ///
    /// # Safety
    /// Attached to the interpreter owning `item` and `queue`.
    pub(crate) unsafe fn of(item: Obj, queue: &Arc<ReleaseQueue>) -> Result<SharedChunk, Obj> {
        // SAFETY: attached (caller's contract); PyBytes_CheckExact guards the accessors.
        unsafe {
            let p = item.as_ptr();
            if ffi::PyBytes_CheckExact(p) == 0 {
                return Err(item);
            }
            let len = ffi::PyBytes_Size(p);
            if len < 0 || (len as usize) < SHARE_MIN {
                return Err(item);
            }
            let data = NonNull::new(ffi::PyBytes_AsString(p).cast::<u8>()).expect("bytes data");
            Ok(SharedChunk {
                data,
                len: len as usize,
                obj: NonNull::new(item.into_ptr()).expect("Obj is never NULL"),
                queue: queue.clone(),
            })
        }
    }
}

impl AsRef<[u8]> for SharedChunk {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `data` points at `len` bytes of an immutable bytes object kept alive by the
        // reference this chunk owns.
        unsafe { std::slice::from_raw_parts(self.data.as_ptr(), self.len) }
    }
}

impl std::ops::Deref for SharedChunk {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_ref()
    }
}

impl std::fmt::Debug for SharedChunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SharedChunk({} bytes)", self.len)
    }
}

impl Drop for SharedChunk {
    fn drop(&mut self) {
        self.queue.park(self.obj);
    }
}
