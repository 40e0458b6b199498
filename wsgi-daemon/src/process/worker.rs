//! The worker threads (`threads=`): each takes a connection with a request waiting from the
//! reactor's [`JobQueue`](crate::job_queue::JobQueue), serves that one request through
//! `wsgi-interp` ([`Shared::serve_connection`]), serves the next one there too if it comes
//! within a moment ([`LINGER`], for `wsgi serve`'s groups on more than one CPU), and gives
//! the connection back to the reactor; a panic is caught and the process replaced.

use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use wsgi_interp::{Outcome, Runtime, now_us};

use super::wire::{WireBody, WireSink};
use super::{FrontConn, Running, Shared};
use crate::protocol::{
    self, DaemonRequest, End, FrameReader, ProtocolError, READ_AHEAD, RejectReason, encode_end,
    kind,
};

enum After {
    Keep(FrontConn),
    Close,
}

/// How long a worker waits on the connection it just answered for the next request there,
/// before it gives the connection back to the reactor. Not less than a scheduler tick (4 ms
/// at the usual 250 Hz): a shorter wait needs a timer that fires before the next tick, which
/// the kernel programs into the hardware on the way to sleep and again when woken early, and
/// in a virtual machine each of those leaves it for the hypervisor. Measured here, a 1 ms
/// wait added 4 µs to each request; from 4 ms on, nothing.
const LINGER: std::time::Duration = std::time::Duration::from_millis(5);

/// How many requests in a row a worker serves on the connection it lingers on while other
/// connections wait for a worker: a wait of a few requests, not of the whole time the front
/// keeps that connection busy.
const LINGER_STREAK: u32 = 4;

/// Whether this process may run on more than one CPU (its affinity and CPU quota). On one, a
/// worker waiting on its connection cannot overlap the front's work: it only keeps the next
/// request from the worker that just answered (whose caches are warm) and makes a different
/// thread take nearly every request (pinned to one CPU, daemon 1x16 hello: 28.0-29.1 k req/s
/// lingering, 32.6-34.4 k not). With more, the wait catches the next request without the
/// reactor's hand-over (unpinned on 2 CPUs: 36-42 k req/s lingering, 29-34 k not).
fn more_than_one_cpu() -> bool {
    std::thread::available_parallelism().is_ok_and(|n| n.get() > 1)
}

/// Whether `conn` has something to read (a request, or its end) within [`LINGER`].
fn request_soon(conn: &UnixStream) -> bool {
    use std::os::fd::AsFd;
    let mut fds = [nix::poll::PollFd::new(
        conn.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    let wait = nix::poll::PollTimeout::try_from(LINGER).unwrap_or(nix::poll::PollTimeout::ZERO);
    matches!(nix::poll::poll(&mut fds, wait), Ok(n) if n > 0)
}

impl Shared {
    pub(super) fn worker(
        self: Arc<Self>,
        index: usize,
        jobs: &crate::job_queue::Taker<(u64, FrontConn, bool)>,
    ) {
        crate::limits::batch_scheduling(&self.spec.group);
        let linger = self.spec.linger && more_than_one_cpu();
        // The last request served, kept to decode the next one in its buffers.
        let mut spare = None;
        while let Some((token, conn, reserved)) = jobs.next() {
            if !reserved {
                self.free.fetch_sub(1, Ordering::SeqCst);
            }
            let mut conn = conn;
            // Requests served here in a row while other connections waited for a worker.
            let mut streak = 0;
            loop {
                match crate::panics::catch(|| self.serve_connection(index, conn, &mut spare)) {
                    Ok(After::Keep(kept)) => {
                        // With more than one CPU, a busy front sends a connection's next
                        // request while this worker is still here: served here when it comes
                        // within a moment, it skips the reactor (a wake-up and a hand-over).
                        // While other connections wait for a worker, only a few times in a
                        // row: a connection the front keeps busy would otherwise hold this
                        // worker for as long as it does, and theirs would wait behind it.
                        let others_wait = !jobs.queue_is_empty();
                        if linger
                            && (!others_wait || streak < LINGER_STREAK)
                            && !self.draining.load(Ordering::SeqCst)
                            && request_soon(&kept.stream)
                        {
                            streak = if others_wait { streak + 1 } else { 0 };
                            conn = kept;
                            continue;
                        }
                        // Else back to the reactor at once: the next request goes to whichever
                        // worker is free then, most often this one (the queue wakes the worker
                        // idle last, and one still looking takes it without being woken).
                        self.register(token, kept, false);
                    }
                    Ok(After::Close) => {}
                    Err(panic) => self.worker_panicked(index, &panic),
                }
                break;
            }
            let free = self.free.fetch_add(1, Ordering::SeqCst) + 1;
            if free > 0 && !self.listener_armed.load(Ordering::SeqCst) {
                let guard = self.listener.lock();
                self.arm_listener(&guard);
            }
        }
        Runtime::release_thread();
    }

    /// Serves the one request waiting on `front`, decoded in the buffers of `spare` (the last
    /// request served, which this one then replaces there).
    fn serve_connection(
        &self,
        index: usize,
        front: FrontConn,
        spare: &mut Option<DaemonRequest>,
    ) -> After {
        let group = &self.spec.group;
        let FrontConn {
            stream: conn,
            mut buffer,
        } = front;
        let mut reader = FrameReader::new(BufReader::with_capacity(READ_AHEAD, &conn));
        let (request, inline_body) = match reader.next_frame() {
            Ok(None) => return After::Close,
            Ok(Some((kind::REQUEST, payload))) => {
                let mut r = spare.take().unwrap_or_else(DaemonRequest::blank);
                match protocol::decode_request_into(payload, &mut r) {
                    Ok(body) => {
                        // `mod_wsgi.daemon_start`: when this process took the request.
                        r.head.stamps.daemon_start_us = now_us();
                        // When the front read it, where the front says (a look at the script
                        // that began after that, in this process, answers for it); else now.
                        r.head.stamps.received =
                            r.head.stamps.received.or_else(|| Some(Instant::now()));
                        (r, body)
                    }
                    Err(e) => {
                        tracing::warn!(%group, "refusing a request from the front: {e}");
                        return After::Close;
                    }
                }
            }
            Ok(Some((other, _))) => {
                tracing::warn!(
                    %group,
                    "{}",
                    ProtocolError::Unexpected {
                        got: other,
                        expected: "REQUEST"
                    }
                );
                return After::Close;
            }
            Err(e) => {
                tracing::debug!(%group, "front connection ended: {e}");
                return After::Close;
            }
        };
        let send_end = |end: &End| (&conn).write_all(&encode_end(end)).is_ok();
        if self.draining.load(Ordering::SeqCst) {
            send_end(&End::Rejected(RejectReason::Draining));
            return After::Close;
        }
        if !self.spec.options.queue_timeout.is_zero() {
            let waited = now_us().saturating_sub(request.queued_at_us);
            if waited > self.spec.options.queue_timeout.as_micros() as u64 {
                tracing::warn!(
                    %group,
                    "request waited {:.3}s for a worker, more than queue-timeout: 503",
                    waited as f64 / 1e6
                );
                return if send_end(&End::QueueTimeout) {
                    After::Keep(FrontConn {
                        stream: conn,
                        buffer,
                    })
                } else {
                    After::Close
                };
            }
        }
        let started = Instant::now();
        self.request_waiting(started);
        *self.running[index].lock() = Some(Running {
            started,
            // SAFETY: pthread_self has no preconditions.
            thread: unsafe { libc::pthread_self() } as u64,
            group: request.app.application_group.clone(),
            interrupted: None,
        });
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.inactivity.lock().activity(started);

        let app = &request.app;
        let opts = app.options(&self.process_options);
        let keep = {
            // An inline body is read from the frame's own buffer, where it came.
            let inline_body = inline_body.map(|at| (reader.take_payload(), at.start));
            let mut body = WireBody::new(&conn, inline_body);
            // Large chunks go through the connection's response buffer where the front takes
            // them.
            let shared = request.shared_buffers.then_some(&mut buffer);
            let mut sink = WireSink::new(&conn, shared);
            let outcome = match self.runtime.interpreter(&app.application_group) {
                Ok(interp) => {
                    self.prepare(&interp);
                    let outcome =
                        interp.call(&app.script, &request.head, &opts, &mut body, &mut sink);
                    // A missing file (404) says nothing about whether the app can load.
                    if !matches!(outcome, Outcome::Script(_) | Outcome::Unavailable(_)) {
                        self.script_loaded();
                    }
                    outcome
                }
                Err(e) => Outcome::Unavailable(e),
            };
            let broken = body.broken;
            let mut out = sink.out;
            match outcome {
                Outcome::ClientGone { .. } => false,
                Outcome::ScriptChanged => {
                    tracing::info!(%group, script = %app.script.path.display(), "WSGI script changed: restarting this process");
                    self.request_drain("script changed", self.spec.options.graceful_timeout);
                    let _ = out.write_all(&encode_end(&End::Rejected(RejectReason::ScriptChanged)));
                    let _ = out.flush();
                    false
                }
                outcome => {
                    let end = End::Ran(outcome);
                    out.write_all(&encode_end(&end)).is_ok() && out.flush().is_ok() && !broken
                }
            }
        };
        *spare = Some(request);
        *self.running[index].lock() = None;
        self.inactivity.lock().activity(Instant::now());
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        let served = self.served.fetch_add(1, Ordering::SeqCst) + 1;
        let max = self.spec.options.maximum_requests;
        if max > 0 && served >= max {
            self.request_drain(
                &format!("maximum-requests ({max}) reached"),
                self.spec.options.graceful_timeout,
            );
        }
        if keep && !self.draining.load(Ordering::SeqCst) {
            After::Keep(FrontConn {
                stream: conn,
                buffer,
            })
        } else {
            After::Close
        }
    }

    /// After a panic in worker `index`: its request is lost (the front answers 502 for the
    /// closed connection), its bookkeeping is undone, and the process is replaced gracefully,
    /// since the panic may have left state shared with the other threads half-updated. The
    /// thread itself keeps serving until the replacement takes over.
    fn worker_panicked(&self, index: usize, panic: &str) {
        tracing::error!(
            group = %self.spec.group,
            "a worker thread panicked: {panic}; its request failed, restarting this process"
        );
        if self.running[index].lock().take().is_some() {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
        self.request_drain(
            "a worker thread panicked",
            self.spec.options.graceful_timeout,
        );
    }
}
