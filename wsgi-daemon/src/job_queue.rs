//! A queue of jobs for Python worker threads ([`JobQueue`]): bounded, first in first out,
//! whose idle workers sleep without spinning and are woken last-idle-first.
//!
//! A channel such as crossbeam's spins (`pause` loops, then `sched_yield`) before a receiver
//! sleeps, which pays on a machine with cores to spare. The workers here call into Python,
//! which runs one thread at a time, and a busy server is often given one core: there a spin
//! only delays the thread that would hand over the next job. And a channel wakes the receiver
//! that has slept longest, whose stack and allocator caches are the coldest; here the worker
//! woken is the one that went idle last.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::Thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How many times at most a worker that finds no job lets other threads run, looking again
/// after each, before it goes to sleep. On a core the front shares, a job often comes within
/// those turns (the I/O thread runs in them), and the worker takes it without being woken: a
/// wake-up costs a system call and a switch of threads, a turn given up costs neither when no
/// other thread waits for the core. (A spin, by contrast, only keeps that thread from
/// running.) Measured with the server on one core (`bench/kernel_costs.py`, 1 MiB streamed
/// embedded, 16 threads): with 4 turns, runs came out at 7,500-20,000 requests in 5 s, the
/// slow ones with 7.7 context switches and 5.6 `futex` calls a request; with 16,
/// 18,800-20,400 every time (4.1-4.3 and 3.2-3.3).
const MAX_TURNS: u32 = 16;

/// How many of those turns may come back at once (nothing else wanted the core: the worker
/// only burned it) before the worker sleeps. With cores to spare every turn is one of those,
/// and 16 of them cost hello a sixth of its throughput with the server unpinned on 2 cores.
const IDLE_TURNS: u32 = 4;

/// A turn shorter than this gave the core to no other thread (a `sched_yield` that returns at
/// once takes a fraction of a microsecond; a switch to another thread and back, several).
const IDLE_TURN: Duration = Duration::from_micros(2);

/// Why [`JobQueue::push`] gave its item back.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The queue holds its capacity.
    Full,
    /// The queue was closed.
    Closed,
}

/// A bounded queue to worker threads (from `wsgi serve`'s I/O threads, from a daemon
/// process's reactor).
pub struct JobQueue<T> {
    state: Mutex<State<T>>,
    capacity: usize,
}

struct State<T> {
    items: VecDeque<T>,
    /// The workers asleep for want of a job, the last to go idle on top.
    idle: Vec<Arc<Sleeper>>,
    closed: bool,
}

/// A worker asleep in [`Taker::next`]: woken once it is taken off the idle stack.
struct Sleeper {
    thread: Thread,
    woken: AtomicBool,
}

impl<T> JobQueue<T> {
    /// An open queue holding at most `capacity` items.
    pub fn new(capacity: usize) -> Arc<JobQueue<T>> {
        Arc::new(JobQueue {
            state: Mutex::new(State {
                items: VecDeque::with_capacity(capacity.min(64)),
                idle: Vec::new(),
                closed: false,
            }),
            capacity,
        })
    }

    /// Queues `item` and wakes the worker that went idle last, if one is asleep; gives the
    /// item back when the queue is full or closed.
    pub fn push(&self, item: T) -> Result<(), (Refusal, T)> {
        let mut state = self.state.lock();
        if state.closed {
            return Err((Refusal::Closed, item));
        }
        if state.items.len() >= self.capacity {
            return Err((Refusal::Full, item));
        }
        state.items.push_back(item);
        let sleeper = state.idle.pop();
        drop(state);
        if let Some(sleeper) = sleeper {
            sleeper.woken.store(true, Ordering::Release);
            sleeper.thread.unpark();
        }
        Ok(())
    }

    /// How many items wait.
    pub fn len(&self) -> usize {
        self.state.lock().items.len()
    }

    /// Whether no item waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes no more items and wakes every sleeping worker; those queued are still taken.
    pub fn close(&self) {
        let sleepers = {
            let mut state = self.state.lock();
            state.closed = true;
            std::mem::take(&mut state.idle)
        };
        for sleeper in sleepers {
            sleeper.woken.store(true, Ordering::Release);
            sleeper.thread.unpark();
        }
    }

    /// The handle a worker thread takes items with (made on that thread).
    pub fn taker(self: &Arc<Self>) -> Taker<T> {
        Taker {
            queue: Arc::clone(self),
            me: Arc::new(Sleeper {
                thread: std::thread::current(),
                woken: AtomicBool::new(false),
            }),
        }
    }
}

/// A worker thread's end of a [`JobQueue`].
pub struct Taker<T> {
    queue: Arc<JobQueue<T>>,
    me: Arc<Sleeper>,
}

impl<T> Taker<T> {
    /// Whether no item waits in the queue.
    pub fn queue_is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The next item, oldest first, sleeping until there is one; None once the queue is
    /// closed and empty.
    pub fn next(&self) -> Option<T> {
        let (mut turns, mut idle_turns) = (0, 0);
        // When the last turn ended (the next one's start: one clock read a turn).
        let mut turn_ended = None;
        loop {
            let mut state = self.queue.state.lock();
            if let Some(item) = state.items.pop_front() {
                return Some(item);
            }
            if state.closed {
                return None;
            }
            if turns < MAX_TURNS && idle_turns < IDLE_TURNS {
                drop(state);
                let before = turn_ended.unwrap_or_else(Instant::now);
                std::thread::yield_now();
                turns += 1;
                let now = Instant::now();
                if now.duration_since(before) < IDLE_TURN {
                    idle_turns += 1;
                }
                turn_ended = Some(now);
                continue;
            }
            (turns, idle_turns, turn_ended) = (0, 0, None);
            // On the stack under the lock that [`JobQueue::push`] takes: an item pushed after
            // this look finds this worker there and wakes it.
            self.me.woken.store(false, Ordering::Relaxed);
            state.idle.push(Arc::clone(&self.me));
            drop(state);
            // `park` may return without an `unpark`; only a push or the close sets `woken`.
            while !self.me.woken.load(Ordering::Acquire) {
                std::thread::park();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn items_come_out_in_order_up_to_the_capacity() {
        let queue = JobQueue::new(3);
        for i in 0..3 {
            queue.push(i).unwrap();
        }
        assert_eq!(queue.push(9), Err((Refusal::Full, 9)));
        assert_eq!(queue.len(), 3);
        assert!(!queue.is_empty());
        let taker = queue.taker();
        assert_eq!(taker.next(), Some(0));
        queue.push(3).unwrap();
        queue.close();
        assert_eq!(queue.push(4), Err((Refusal::Closed, 4)));
        // Closed: what was queued is still taken, then None.
        assert_eq!(
            std::iter::from_fn(|| taker.next()).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(taker.next(), None);
    }

    /// Starts `n` workers, one after the other so each is asleep before the next starts; each
    /// calls `on_item(its index, the item)` for every item it takes.
    fn spawn_sleeping(
        queue: &Arc<JobQueue<u32>>,
        n: usize,
        on_item: impl Fn(usize, u32) + Clone + Send + 'static,
    ) -> Vec<std::thread::JoinHandle<()>> {
        let mut handles = Vec::new();
        for i in 0..n {
            let (shared, on_item) = (queue.clone(), on_item.clone());
            handles.push(std::thread::spawn(move || {
                let taker = shared.taker();
                while let Some(item) = taker.next() {
                    on_item(i, item);
                }
            }));
            wait_for(|| queue.state.lock().idle.len() == i + 1);
        }
        handles
    }

    /// [`spawn_sleeping`] workers that send (their index, the item) for every item taken.
    fn sleeping_workers(
        queue: &Arc<JobQueue<u32>>,
        n: usize,
    ) -> (
        mpsc::Receiver<(usize, u32)>,
        Vec<std::thread::JoinHandle<()>>,
    ) {
        let (tx, rx) = mpsc::channel();
        let handles = spawn_sleeping(queue, n, move |i, item| tx.send((i, item)).unwrap());
        (rx, handles)
    }

    fn wait_for(done: impl Fn() -> bool) {
        for _ in 0..1000 {
            if done() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("not within 5 s");
    }

    #[test]
    fn the_worker_idle_last_is_woken_first() {
        let queue = JobQueue::new(8);
        let (taken, handles) = sleeping_workers(&queue, 3);
        for item in 0..3 {
            queue.push(item).unwrap();
            let (worker, got) = taken.recv_timeout(Duration::from_secs(5)).unwrap();
            assert_eq!(got, item);
            // Worker 2 went to sleep last; it is back on top of the stack before the next
            // item (it is asleep again once the stack is whole).
            assert_eq!(worker, 2, "item {item}");
            wait_for(|| queue.state.lock().idle.len() == 3);
        }
        queue.close();
        for h in handles {
            h.join().unwrap();
        }
    }

    #[test]
    fn items_reach_sleeping_workers_while_others_are_held() {
        use std::sync::atomic::AtomicUsize;
        // Each item holds its worker until released (a request blocked in the application):
        // the items after it must still be taken, each by another worker, at once.
        let queue = JobQueue::new(8);
        let holding = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(AtomicBool::new(false));
        let handles = {
            let (holding, release) = (holding.clone(), release.clone());
            spawn_sleeping(&queue, 3, move |_, _| {
                holding.fetch_add(1, Ordering::SeqCst);
                wait_for(|| release.load(Ordering::SeqCst));
            })
        };
        for item in 0..3 {
            queue.push(item).unwrap();
        }
        wait_for(|| holding.load(Ordering::SeqCst) == 3);
        assert_eq!(queue.len(), 0);
        release.store(true, Ordering::SeqCst);
        queue.close();
        for h in handles {
            h.join().unwrap();
        }
    }

    #[test]
    fn every_item_reaches_a_worker_and_close_ends_them_all() {
        let queue = JobQueue::new(10_000);
        let (taken, handles) = sleeping_workers(&queue, 4);
        // From several pushing threads at once, while workers go to sleep and wake.
        let pushers: Vec<_> = (0..4u32)
            .map(|p| {
                let queue = queue.clone();
                std::thread::spawn(move || {
                    for i in 0..2_000 {
                        queue.push(p * 10_000 + i).unwrap();
                        if i % 100 == 0 {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                })
            })
            .collect();
        for p in pushers {
            p.join().unwrap();
        }
        let mut got: Vec<u32> = (0..8_000)
            .map(|_| taken.recv_timeout(Duration::from_secs(5)).unwrap().1)
            .collect();
        got.sort_unstable();
        let want: Vec<u32> = (0..4u32)
            .flat_map(|p| (0..2_000).map(move |i| p * 10_000 + i))
            .collect();
        assert_eq!(got, want);
        queue.close();
        for h in handles {
            h.join().unwrap();
        }
        assert!(taken.try_recv().is_err());
    }
}
