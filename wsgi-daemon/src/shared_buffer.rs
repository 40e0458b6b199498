//! Response bytes a daemon process hands the front in memory both map, instead of through
//! the socket: a [`ResponseBuffer`] per front connection, of [`SLOTS`] slots of
//! [`SLOT_LEN`] bytes.
//!
//! Through the socket, every byte of a streamed response is copied three times before the
//! client's socket has it (the app's buffer into the unix socket, the socket into the front,
//! the front into its TCP socket), and the kernel allocates, charges and frees the unix
//! socket's pages for each chunk. Through a slot it is copied twice (into the slot, and from
//! the slot into the TCP socket), and a 13-byte frame names the slot.
//!
//! The daemon makes the buffer (a sealed `memfd`) the first time a request whose front said
//! it takes them ([`crate::protocol::DaemonRequest::shared_buffers`]) has a large chunk to
//! send, and hands it over with a SHARED_BUFFER frame (the descriptor attached). Each slot has
//! a flag in the buffer's first page: *free*, the daemon may fill it; *taken*, the front holds
//! its bytes. The daemon fills a free slot, marks it taken and sends SHARED_DATA (slot,
//! length); the front sends the bytes on and marks the slot free when they are gone
//! ([`BufferChunk`]'s drop). When every slot is taken (the client is behind) the daemon sends
//! the chunk through the socket as before, so nothing ever waits on a slot.
//!
//! What the daemon can do wrong only concerns its own response: the front checks that the
//! buffer is a memfd sealed against shrinking (its pages cannot vanish under the front's
//! mapping) and of the agreed size, and that each SHARED_DATA names a slot and length inside
//! it; a daemon that writes a slot the front still holds garbles its own bytes, which the
//! front sends on without reading them.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};

use crate::protocol::CHUNK;

/// Slots in a buffer: the chunks that can be on their way to one client at once.
pub const SLOTS: usize = 8;

/// The bytes of one slot: a DATA frame's largest payload.
pub const SLOT_LEN: usize = CHUNK;

/// The flags' page, before the slots.
const FLAGS_LEN: usize = 4096;

/// The size of a buffer (its memfd and its mapping): touched pages only cost memory.
pub const BUFFER_LEN: usize = FLAGS_LEN + SLOTS * SLOT_LEN;

/// A slot the daemon may fill.
const FREE: u32 = 0;
/// A slot whose bytes the front holds.
const TAKEN: u32 = 1;

/// A shared mapping of a buffer's memfd, unmapped when dropped.
struct Mapping {
    at: NonNull<u8>,
}

// SAFETY: the mapping is plain memory shared by address; its flags are only touched through
// atomics and its slots under the flag protocol (module documentation), so sharing the
// pointer between threads adds nothing the other process could not do.
unsafe impl Send for Mapping {}
// SAFETY: as for Send.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps the first [`BUFFER_LEN`] bytes of `fd` shared, readable and writable.
    fn new(fd: &OwnedFd) -> io::Result<Mapping> {
        // SAFETY: a fresh mapping at an address the kernel picks aliases no Rust object; the
        // result is checked before it is used.
        let at = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                BUFFER_LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if at == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            at: NonNull::new(at.cast()).expect("mmap never maps page 0"),
        })
    }

    /// Slot `slot`'s flag.
    fn flag(&self, slot: usize) -> &AtomicU32 {
        assert!(slot < SLOTS);
        // SAFETY: the flags' page is mapped while `self` lives, page-aligned (so every u32 in
        // it is aligned), and only ever accessed as atomics, by both processes.
        unsafe { AtomicU32::from_ptr(self.at.as_ptr().cast::<u32>().add(slot)) }
    }

    /// Where slot `slot` starts.
    fn slot(&self, slot: usize) -> *mut u8 {
        assert!(slot < SLOTS);
        // SAFETY: FLAGS_LEN + slot * SLOT_LEN is inside the mapping for every slot < SLOTS.
        unsafe { self.at.as_ptr().add(FLAGS_LEN + slot * SLOT_LEN) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, which nothing uses after this (every slice of it
        // borrows `self` or holds the Arc that owns it).
        unsafe { libc::munmap(self.at.as_ptr().cast(), BUFFER_LEN) };
    }
}

/// The daemon's side of a front connection's buffer: fills free slots.
pub struct ResponseBuffer {
    map: Mapping,
    fd: OwnedFd,
    /// The slot to look at first: the one after the last filled.
    next: usize,
}

impl ResponseBuffer {
    /// A new buffer: a memfd of [`BUFFER_LEN`] bytes, sealed so that it can neither shrink
    /// nor grow, mapped here; every slot free.
    pub fn create() -> io::Result<ResponseBuffer> {
        let fd = memfd_create(
            c"wsgi-rs-response",
            MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        )?;
        nix::unistd::ftruncate(&fd, BUFFER_LEN as libc::off_t)?;
        fcntl(
            &fd,
            FcntlArg::F_ADD_SEALS(
                SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL,
            ),
        )?;
        let map = Mapping::new(&fd)?;
        Ok(ResponseBuffer { map, fd, next: 0 })
    }

    /// The memfd, to hand to the front.
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Copies `bytes` (at most [`SLOT_LEN`]) into a free slot and marks it taken: the slot,
    /// or None when the front holds every slot.
    pub fn fill(&mut self, bytes: &[u8]) -> Option<u32> {
        assert!(bytes.len() <= SLOT_LEN, "a chunk larger than a slot");
        let slot = (0..SLOTS)
            .map(|i| (self.next + i) % SLOTS)
            .find(|&slot| self.map.flag(slot).load(Ordering::Acquire) == FREE)?;
        // SAFETY: the slot is SLOT_LEN bytes of the mapping and free: the front read the last
        // bytes it held (Acquire above pairs with the front's Release when it let them go)
        // and reads none until told with the frame that follows.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.map.slot(slot), bytes.len()) };
        self.map.flag(slot).store(TAKEN, Ordering::Release);
        self.next = (slot + 1) % SLOTS;
        Some(slot as u32)
    }
}

/// Why a front refuses a buffer or a chunk of one.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    /// The descriptor is not a memfd sealed against shrinking.
    #[error("the response buffer is not a memfd sealed against shrinking")]
    NotSealed,
    /// The memfd has the wrong size.
    #[error("the response buffer has {0} bytes, not {BUFFER_LEN}")]
    WrongSize(u64),
    /// Mapping it failed.
    #[error("mapping the response buffer failed: {0}")]
    Map(io::Error),
    /// A SHARED_DATA frame named a slot or length outside the buffer.
    #[error("a SHARED_DATA frame names slot {slot} with {len} bytes, outside the buffer")]
    OutOfRange {
        /// The slot named.
        slot: u32,
        /// The length named.
        len: u32,
    },
}

/// The front's side of a daemon connection's buffer: hands out the chunks the daemon names.
#[derive(Clone)]
pub struct FrontBuffer {
    map: Arc<Mapping>,
}

impl FrontBuffer {
    /// The buffer the daemon handed over as `fd`, checked: a memfd sealed against shrinking,
    /// of [`BUFFER_LEN`] bytes.
    pub fn open(fd: OwnedFd) -> Result<FrontBuffer, BufferError> {
        let seals = fcntl(fd.as_fd(), FcntlArg::F_GET_SEALS).map_err(|_| BufferError::NotSealed)?;
        if seals & libc::F_SEAL_SHRINK == 0 {
            return Err(BufferError::NotSealed);
        }
        let size = nix::sys::stat::fstat(fd.as_fd())
            .map_err(|e| BufferError::Map(e.into()))?
            .st_size as u64;
        if size != BUFFER_LEN as u64 {
            return Err(BufferError::WrongSize(size));
        }
        let map = Mapping::new(&fd).map_err(BufferError::Map)?;
        Ok(FrontBuffer { map: Arc::new(map) })
    }

    /// The first `len` bytes of slot `slot`, which the daemon filled: held until the chunk is
    /// dropped, which frees the slot.
    pub fn take(&self, slot: u32, len: u32) -> Result<BufferChunk, BufferError> {
        if slot as usize >= SLOTS || len as usize > SLOT_LEN {
            return Err(BufferError::OutOfRange { slot, len });
        }
        Ok(BufferChunk {
            map: self.map.clone(),
            slot: slot as usize,
            len: len as usize,
        })
    }
}

/// Bytes of a response in a slot of a [`FrontBuffer`]; dropping it frees the slot.
pub struct BufferChunk {
    map: Arc<Mapping>,
    slot: usize,
    len: usize,
}

impl BufferChunk {
    /// The chunk's length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl AsRef<[u8]> for BufferChunk {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `len` <= SLOT_LEN bytes of the slot, mapped while `self.map` lives; the
        // sealed memfd cannot shrink, so the pages stay. The daemon writes the slot only
        // while its flag says free, which it does not until this chunk is dropped; one that
        // broke that would change only the bytes of its own response, which are sent on
        // unread.
        unsafe { std::slice::from_raw_parts(self.map.slot(self.slot), self.len) }
    }
}

impl Drop for BufferChunk {
    fn drop(&mut self) {
        self.map.flag(self.slot).store(FREE, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A front's view of `buffer`, through a descriptor of its own as after a hand-over.
    fn front_of(buffer: &ResponseBuffer) -> FrontBuffer {
        FrontBuffer::open(buffer.fd().try_clone().unwrap()).unwrap()
    }

    #[test]
    fn chunks_go_across_and_their_slots_come_back_when_dropped() {
        let mut daemon = ResponseBuffer::create().unwrap();
        let front = front_of(&daemon);
        let mut held = Vec::new();
        for i in 0..SLOTS {
            let bytes = vec![i as u8 + 1; SLOT_LEN - i];
            let slot = daemon.fill(&bytes).expect("a free slot");
            let chunk = front.take(slot, bytes.len() as u32).unwrap();
            assert_eq!(chunk.as_ref(), &bytes[..]);
            held.push(chunk);
        }
        // Every slot held: the daemon sends through the socket instead.
        assert_eq!(daemon.fill(b"more"), None);
        let second = held.remove(1);
        let freed = second.slot as u32;
        drop(second);
        assert_eq!(daemon.fill(b"more"), Some(freed));
        let chunk = front.take(freed, 4).unwrap();
        assert_eq!(chunk.as_ref(), b"more");
        // The others kept their bytes.
        for (chunk, i) in held.iter().zip((0..SLOTS).filter(|&i| i != 1)) {
            assert_eq!(chunk.as_ref(), &vec![i as u8 + 1; SLOT_LEN - i][..]);
        }
    }

    #[test]
    fn a_chunk_outlives_its_buffer_handle() {
        let mut daemon = ResponseBuffer::create().unwrap();
        let front = front_of(&daemon);
        let slot = daemon.fill(b"still here").unwrap();
        let chunk = front.take(slot, 10).unwrap();
        drop(front);
        drop(daemon);
        assert_eq!(chunk.as_ref(), b"still here");
    }

    #[test]
    fn frames_naming_bytes_outside_the_buffer_are_refused() {
        let daemon = ResponseBuffer::create().unwrap();
        let front = front_of(&daemon);
        assert!(matches!(
            front.take(SLOTS as u32, 1),
            Err(BufferError::OutOfRange { .. })
        ));
        assert!(matches!(
            front.take(0, SLOT_LEN as u32 + 1),
            Err(BufferError::OutOfRange { .. })
        ));
        assert!(front.take(SLOTS as u32 - 1, SLOT_LEN as u32).is_ok());
    }

    #[test]
    fn only_a_sealed_memfd_of_the_agreed_size_is_mapped() {
        // A regular file: no seals at all.
        let file = tempfile::tempfile().unwrap();
        file.set_len(BUFFER_LEN as u64).unwrap();
        assert!(matches!(
            FrontBuffer::open(file.into()),
            Err(BufferError::NotSealed)
        ));
        // A memfd that could shrink under the front's mapping.
        let open = memfd_create(c"open", MFdFlags::MFD_ALLOW_SEALING).unwrap();
        nix::unistd::ftruncate(&open, BUFFER_LEN as libc::off_t).unwrap();
        assert!(matches!(
            FrontBuffer::open(open),
            Err(BufferError::NotSealed)
        ));
        // Sealed, but too small.
        let small = memfd_create(c"small", MFdFlags::MFD_ALLOW_SEALING).unwrap();
        nix::unistd::ftruncate(&small, 4096).unwrap();
        fcntl(&small, FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_SHRINK)).unwrap();
        assert!(matches!(
            FrontBuffer::open(small),
            Err(BufferError::WrongSize(4096))
        ));
        // And the sealed buffer cannot be made smaller by its maker.
        let daemon = ResponseBuffer::create().unwrap();
        assert!(nix::unistd::ftruncate(daemon.fd(), 0).is_err());
    }
}
