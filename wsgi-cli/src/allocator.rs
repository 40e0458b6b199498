//! mimalloc as the process's allocator, called directly.
//!
//! The `mimalloc` crate's allocator passes every request to `mi_malloc_aligned`, whose quick
//! path only serves blocks up to 1 KiB: a request's buffers and boxed futures (a few KiB
//! each) went through mimalloc's generic aligned path, some 250 instructions instead of a few
//! dozen, about eight times a request (callgrind, `bench/callgrind.sh hello`). Here the usual
//! alignments (at most 16 bytes, which every mimalloc block of 16 bytes or more has) take
//! `mi_malloc`; only larger ones go to the aligned calls.
//!
//! Also here: [`collect`], which returns a thread's freed memory to the system.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment every mimalloc block of at least this size has (`MI_MAX_ALIGN_SIZE`).
const PLAIN_ALIGN: usize = 16;

/// mimalloc, for `#[global_allocator]`. Python keeps its own allocators.
pub struct Mimalloc;

/// Whether `mi_malloc` alone meets `layout`'s alignment.
fn plain(align: usize, size: usize) -> bool {
    align <= PLAIN_ALIGN && align <= size
}

// SAFETY: every method forwards to mimalloc, which returns blocks of at least the size asked
// with the alignment asked (the plain calls only where their blocks are aligned so, see
// `plain`), frees what it allocated whichever call made it, and keeps a block's contents on
// realloc: the contract of `GlobalAlloc`.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        // SAFETY: plain C calls with sizes; they return null on failure, as GlobalAlloc allows.
        unsafe {
            if plain(align, size) {
                mi::mi_malloc(size).cast()
            } else {
                mi::mi_malloc_aligned(size, align).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        // SAFETY: as for `alloc`.
        unsafe {
            if plain(align, size) {
                mi::mi_zalloc(size).cast()
            } else {
                mi::mi_zalloc_aligned(size, align).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (the caller's contract), so from mimalloc.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let align = layout.align();
        // SAFETY: `ptr` came from this allocator with `layout` (the caller's contract); the
        // new block keeps the alignment the old one was asked for.
        unsafe {
            if plain(align, new_size) {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, align).cast()
            }
        }
    }
}

/// Asks mimalloc to free the calling thread's empty pages and return unused memory to the
/// system.
pub fn collect() {
    // SAFETY: `mi_collect` takes no pointers and may be called from any thread at any time:
    // it only walks the calling thread's own heap (with `force = false`, without waiting on
    // other threads).
    #[allow(unsafe_code)]
    unsafe {
        mi::mi_collect(false)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_have_the_alignment_asked() {
        let a = Mimalloc;
        for (size, align) in [
            (1, 1),
            (8, 8),
            (24, 8),
            (4096, 16),
            (3, 4),
            (64, 64),
            (100, 128),
            (8192, 4096),
        ] {
            let layout = Layout::from_size_align(size, align).unwrap();
            #[allow(unsafe_code)]
            // SAFETY: a non-zero layout, freed with the same allocator and layout; realloc
            // keeps the layout's alignment.
            unsafe {
                let p = a.alloc(layout);
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0, "{size} bytes aligned {align}");
                p.write_bytes(0xab, size);
                let q = a.realloc(p, layout, size * 3);
                assert_eq!(
                    q as usize % align,
                    0,
                    "realloc of {size} bytes aligned {align}"
                );
                assert_eq!(*q.add(size - 1), 0xab, "realloc keeps the contents");
                a.dealloc(q, Layout::from_size_align(size * 3, align).unwrap());
                let z = a.alloc_zeroed(layout);
                assert_eq!(z as usize % align, 0);
                assert!((0..size).all(|i| *z.add(i) == 0));
                a.dealloc(z, layout);
            }
        }
    }
}
