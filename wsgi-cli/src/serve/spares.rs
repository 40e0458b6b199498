//! Request heads and calls kept for the next requests ([`take_head`], [`call_for`],
//! [`give_back`]).
//!
//! A request's head is some twenty buffers (its path, its headers, the front's extra
//! variables...) and its call three more (the script's path, the callable, the application
//! group), made on an I/O thread and let go on the worker thread that ran it: as many
//! allocations a request, and as many frees from another thread, which the allocator takes
//! back later. Kept instead, a worker gives them back when its request is done, and the next
//! request's are written into their buffers ([`RequestHead::rebuild`],
//! [`AppCall::refill_for_route`]).

use parking_lot::Mutex;
use wsgi_config::route::Route;
use wsgi_interp::{AppCall, RequestHead};

/// How many of each are kept at most (a worker gives one back as an I/O thread takes one,
/// so a few are enough; beyond them, they are let go).
const KEPT: usize = 64;

/// The most buffer room a head kept may hold (a request with a large header lets its head
/// go, rather than hold the room for another).
const KEPT_BYTES: usize = 16 * 1024;

/// The heads and calls kept.
struct Spares {
    heads: Vec<RequestHead>,
    calls: Vec<AppCall>,
}

static SPARES: Mutex<Spares> = Mutex::new(Spares {
    heads: Vec::new(),
    calls: Vec::new(),
});

/// A head to build a request's in: a kept one, else a new one.
pub(super) fn take_head() -> RequestHead {
    SPARES.lock().heads.pop().unwrap_or_default()
}

/// The call `route` names ([`AppCall::for_route`]), in a kept one's buffers if there is one.
pub(super) fn call_for(route: &Route, daemon: bool) -> AppCall {
    let kept = SPARES.lock().calls.pop();
    match kept {
        Some(mut call) => {
            call.refill_for_route(route, daemon);
            call
        }
        None => AppCall::for_route(route, daemon),
    }
}

/// Keeps `head` and `call`, done with, for a later request (unless enough are kept, or the
/// head holds more room than [`KEPT_BYTES`]).
pub(super) fn give_back(head: RequestHead, call: AppCall) {
    let mut head = (room(&head) <= KEPT_BYTES).then_some(head);
    let mut call = Some(call);
    let mut spares = SPARES.lock();
    if spares.heads.len() < KEPT {
        spares.heads.extend(head.take());
    }
    if spares.calls.len() < KEPT {
        spares.calls.extend(call.take());
    }
    drop(spares);
    // What is not kept is let go here, with the lock let go first.
    drop((head, call));
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
