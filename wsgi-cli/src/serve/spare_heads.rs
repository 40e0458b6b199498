//! Request heads kept for the next requests ([`take`], [`give_back`]).
//!
//! A request's head is some twenty buffers (its path, its headers, the front's extra
//! variables...), made on an I/O thread and let go on the worker thread that ran it: twenty
//! allocations a request, and as many frees from another thread, which the allocator takes
//! back later. Kept instead, a worker gives the head back when its request is done, and the
//! next request's head is written into its buffers ([`RequestHead::rebuild`]).

use parking_lot::Mutex;
use wsgi_interp::RequestHead;

/// How many heads are kept at most (a worker gives one back as an I/O thread takes one, so
/// a few are enough; beyond them, heads are let go).
const KEPT: usize = 64;

/// The most buffer room a head kept may hold (a request with a large header lets its head
/// go, rather than hold the room for another).
const KEPT_BYTES: usize = 16 * 1024;

static SPARE: Mutex<Vec<RequestHead>> = Mutex::new(Vec::new());

/// A head to build a request's in: a kept one, else a new one.
pub(super) fn take() -> RequestHead {
    SPARE.lock().pop().unwrap_or_default()
}

/// Keeps `head`, done with, for a later request (unless enough are kept, or it holds more
/// room than [`KEPT_BYTES`]).
pub(super) fn give_back(head: RequestHead) {
    if room(&head) > KEPT_BYTES {
        return;
    }
    let mut spare = SPARE.lock();
    if spare.len() < KEPT {
        spare.push(head);
    }
    // Else dropped here, once the lock is let go.
}

/// The buffer room `head` holds.
fn room(head: &RequestHead) -> usize {
    let pairs = |list: &[(String, Vec<u8>)]| {
        list.iter()
            .map(|(name, value)| name.capacity() + value.capacity())
            .sum::<usize>()
    };
    head.script_name.capacity()
        + head.path_info.capacity()
        + head.query_string.capacity()
        + head.request_uri.capacity()
        + head.server_name.capacity()
        + head.remote_addr.capacity()
        + pairs(&head.headers)
        + head.headers.capacity() * size_of::<(String, Vec<u8>)>()
        + head
            .extra
            .iter()
            .map(|(_, value)| value.capacity())
            .sum::<usize>()
        + head.extra.capacity() * size_of::<(std::borrow::Cow<'static, str>, Vec<u8>)>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_holding_much_room_are_not_kept() {
        let small = RequestHead {
            request_uri: b"/app/x".to_vec(),
            ..RequestHead::default()
        };
        assert!(room(&small) < KEPT_BYTES);
        let mut large = RequestHead::default();
        large
            .headers
            .push(("cookie".into(), vec![b'x'; KEPT_BYTES + 1]));
        assert!(room(&large) > KEPT_BYTES);
    }
}
