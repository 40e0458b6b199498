//! The supervisor's state machine, [`Core`], advanced by [`Core::tick`].
//!
//! # Process lifecycle
//!
//! ```text
//! Starting --ready--> Ready --"recycling"--> Retiring --exit--> gone
//!     \                  \------- exit (crash) -------> gone, slot restarts after backoff
//!      \---- exit (crash, or "fatal" start-up error) --> gone, slot restarts after backoff
//! ```
//!
//! Invariants, kept by [`Core::tick`]:
//! * each slot has at most one *current* process (Starting or Ready); a process that reports
//!   it is recycling leaves the slot at once and a replacement is launched in the same tick,
//!   so the old one drains while the new one starts taking connections;
//! * a current process that exits without having announced a recycle is a crash: the exit
//!   status or signal is logged as it is, and the slot restarts immediately the first time,
//!   then with a doubling delay (100 ms up to 10 s) while it keeps crashing within 10 s of
//!   starting;
//! * a retiring process that outlives its drain allowance (graceful-timeout +
//!   shutdown-timeout + 1 s) is killed;
//! * once stopping, nothing is launched; every process gets SIGTERM, and SIGKILL after
//!   shutdown-timeout + 1 s; the socket files and their directories are removed when the
//!   [`Supervisor`](super::Supervisor) is shut down or dropped.
//!
//! Process spawning, waiting and signalling sit behind [`Launcher`] and [`ChildProcess`],
//! so this logic is unit-tested with mocks and no processes.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::snapshot::{GroupStatus, ProcessStatus};
use crate::spec::Report;

/// Starts processes. The production one execs a program; tests use mocks.
pub trait Launcher: Send + 'static {
    /// Starts a process for slot `slot` of group number `group` (position in the plan).
    fn launch(&mut self, group: usize, slot: u32) -> io::Result<Box<dyn ChildProcess>>;
}

/// A started process, as the supervisor sees it.
pub trait ChildProcess: Send {
    /// Its process id.
    fn pid(&self) -> u32;
    /// Reaps it if it has exited.
    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>>;
    /// Sends a signal (never after it was reaped).
    fn signal(&mut self, signal: Signal);
    /// Reports it sent since the last call.
    fn reports(&mut self) -> Vec<Report>;
}

/// What the supervisor keeps per group besides its processes.
#[derive(Debug, Clone)]
pub struct GroupPlan {
    /// The group's name.
    pub name: String,
    /// `processes=`.
    pub processes: u32,
    /// How long a retiring process may run before it is killed.
    pub retire_allowance: Duration,
    /// How long a stopping process may run before it is killed.
    pub stop_allowance: Duration,
    /// Its socket.
    pub socket: PathBuf,
}

struct Running {
    child: Box<dyn ChildProcess>,
    slot: u32,
    started: Instant,
    ready: bool,
    served: u64,
    in_flight: u64,
    kill_at: Option<Instant>,
    killed: bool,
    /// It reported that it could not start (`fatal`).
    start_failed: bool,
}

struct SlotRun {
    current: Option<Running>,
    crashes: u32,
    next_start: Instant,
}

struct GroupRun {
    plan: GroupPlan,
    slots: Vec<SlotRun>,
    retiring: Vec<Running>,
    served_before: u64,
    restarts: u64,
    recycles: u64,
    /// The last start-up failure a process reported.
    failure: Option<String>,
}

/// The supervisor's state machine, advanced by [`Core::tick`].
pub struct Core {
    groups: Vec<GroupRun>,
    launcher: Box<dyn Launcher>,
    stopping: bool,
}

/// A crashing slot's delay before its next start.
pub fn backoff(crashes: u32) -> Duration {
    match crashes {
        0 | 1 => Duration::ZERO,
        n => Duration::from_millis(100u64 << (n - 2).min(7)).min(Duration::from_secs(10)),
    }
}

/// How an exit reads in the log: the real status or signal.
pub fn describe_exit(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        format!("exited with status {code}")
    } else if let Some(sig) = status.signal() {
        let name = Signal::try_from(sig)
            .map(|s| s.as_str().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let core = if status.core_dumped() {
            ", core dumped"
        } else {
            ""
        };
        format!("was killed by signal {sig} ({name}{core})")
    } else {
        format!("ended ({status})")
    }
}

impl Core {
    /// A state machine over `plans`, starting processes with `launcher` from the first tick.
    pub fn new(plans: Vec<GroupPlan>, launcher: Box<dyn Launcher>, now: Instant) -> Core {
        let groups = plans
            .into_iter()
            .map(|plan| GroupRun {
                slots: (0..plan.processes)
                    .map(|_| SlotRun {
                        current: None,
                        crashes: 0,
                        next_start: now,
                    })
                    .collect(),
                plan,
                retiring: Vec::new(),
                served_before: 0,
                restarts: 0,
                recycles: 0,
                failure: None,
            })
            .collect();
        Core {
            groups,
            launcher,
            stopping: false,
        }
    }

    /// Advances every group: reads reports, reaps, restarts, retires and kills.
    pub fn tick(&mut self, now: Instant) {
        for (gi, g) in self.groups.iter_mut().enumerate() {
            let name = g.plan.name.clone();
            for (si, slot) in g.slots.iter_mut().enumerate() {
                let mut retire = None;
                if let Some(cur) = slot.current.as_mut() {
                    for r in cur.child.reports() {
                        match r {
                            Report::Ready => cur.ready = true,
                            Report::Stats { served, in_flight } => {
                                cur.served = served;
                                cur.in_flight = in_flight;
                            }
                            Report::Recycling(reason) => retire = Some(reason),
                            Report::Fatal(msg) => {
                                tracing::error!(
                                    group = %name,
                                    pid = cur.child.pid(),
                                    "daemon process failed to start: {msg}"
                                );
                                g.failure = Some(msg);
                                cur.start_failed = true;
                            }
                        }
                    }
                }
                if let Some(reason) = retire {
                    let mut old = slot.current.take().expect("checked above");
                    tracing::info!(group = %name, pid = old.child.pid(), %reason, "daemon process is being replaced");
                    old.kill_at = Some(now + g.plan.retire_allowance);
                    g.retiring.push(old);
                    g.recycles += 1;
                    slot.crashes = 0;
                    slot.next_start = now;
                }
                if let Some(cur) = slot.current.as_mut() {
                    match cur.child.try_wait() {
                        Ok(Some(status)) => {
                            let lived = now.saturating_duration_since(cur.started);
                            let pid = cur.child.pid();
                            let start_failed = cur.start_failed;
                            g.served_before += cur.served;
                            slot.current = None;
                            if self.stopping {
                                tracing::info!(group = %name, pid, "daemon process {}", describe_exit(status));
                            } else {
                                if lived >= Duration::from_secs(10) {
                                    slot.crashes = 0;
                                }
                                slot.crashes += 1;
                                g.restarts += 1;
                                let delay = backoff(slot.crashes);
                                slot.next_start = now + delay;
                                let when = if delay.is_zero() {
                                    String::new()
                                } else {
                                    format!(" in {:.1}s", delay.as_secs_f64())
                                };
                                if start_failed {
                                    // Its reason is logged above, and the requests waiting
                                    // for it were answered 503 with it.
                                    tracing::error!(group = %name, pid, "daemon process could not start and {}; trying again{when}", describe_exit(status));
                                } else {
                                    tracing::error!(group = %name, pid, "daemon process {}; its requests failed with 502; restarting{when}", describe_exit(status));
                                }
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(group = %name, "cannot wait for a daemon process: {e}")
                        }
                    }
                }
                if slot.current.is_none() && !self.stopping && now >= slot.next_start {
                    match self.launcher.launch(gi, si as u32) {
                        Ok(child) => {
                            tracing::debug!(group = %name, pid = child.pid(), slot = si, "daemon process started");
                            slot.current = Some(Running {
                                child,
                                slot: si as u32,
                                started: now,
                                ready: false,
                                served: 0,
                                in_flight: 0,
                                kill_at: None,
                                killed: false,
                                start_failed: false,
                            });
                        }
                        Err(e) => {
                            slot.crashes += 1;
                            let delay = backoff(slot.crashes).max(Duration::from_millis(100));
                            slot.next_start = now + delay;
                            tracing::error!(group = %name, "cannot start a daemon process: {e}; retrying in {:.1}s", delay.as_secs_f64());
                        }
                    }
                }
            }
            let mut i = 0;
            while i < g.retiring.len() {
                let r = &mut g.retiring[i];
                for rep in r.child.reports() {
                    if let Report::Stats { served, in_flight } = rep {
                        r.served = served;
                        r.in_flight = in_flight;
                    }
                }
                match r.child.try_wait() {
                    Ok(Some(status)) => {
                        tracing::info!(group = %name, pid = r.child.pid(), "replaced daemon process {}", describe_exit(status));
                        g.served_before += r.served;
                        g.retiring.swap_remove(i);
                        continue;
                    }
                    Ok(None) => {
                        if !r.killed && r.kill_at.is_some_and(|t| now >= t) {
                            tracing::warn!(group = %name, pid = r.child.pid(), "daemon process did not stop in time: killing it");
                            r.child.signal(Signal::SIGKILL);
                            r.killed = true;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(group = %name, "cannot wait for a daemon process: {e}")
                    }
                }
                i += 1;
            }
        }
    }

    /// Starts stopping: SIGTERM to every process; SIGKILL to those still there after their
    /// stop allowance (on later ticks).
    pub fn begin_stop(&mut self, now: Instant) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        for g in &mut self.groups {
            let allowance = g.plan.stop_allowance;
            let slots = g.slots.iter_mut().filter_map(|s| s.current.take());
            let all: Vec<Running> = slots.collect();
            g.retiring.extend(all);
            for r in &mut g.retiring {
                r.child.signal(Signal::SIGTERM);
                r.kill_at = Some(
                    r.kill_at
                        .map_or(now + allowance, |t| t.min(now + allowance)),
                );
            }
        }
    }

    /// True when stopping and every process has exited.
    pub fn stopped(&self) -> bool {
        self.stopping
            && self
                .groups
                .iter()
                .all(|g| g.retiring.is_empty() && g.slots.iter().all(|s| s.current.is_none()))
    }

    /// A snapshot of every group.
    pub fn status(&self, now: Instant) -> Vec<GroupStatus> {
        self.groups
            .iter()
            .map(|g| {
                let current = g.slots.iter().filter_map(|s| s.current.as_ref());
                let mut processes: Vec<ProcessStatus> = current
                    .map(|r| (r, if r.ready { "ready" } else { "starting" }))
                    .chain(g.retiring.iter().map(|r| (r, "retiring")))
                    .map(|(r, state)| ProcessStatus {
                        pid: r.child.pid(),
                        slot: r.slot,
                        state,
                        served: r.served,
                        in_flight: r.in_flight,
                        uptime_secs: now.saturating_duration_since(r.started).as_secs_f64(),
                    })
                    .collect();
                processes.sort_by_key(|p| (p.slot, p.pid));
                GroupStatus {
                    name: g.plan.name.clone(),
                    socket: g.plan.socket.clone(),
                    requests_served: g.served_before
                        + processes.iter().map(|p| p.served).sum::<u64>(),
                    in_flight: processes.iter().map(|p| p.in_flight).sum(),
                    processes,
                    restarts: g.restarts,
                    recycles: g.recycles,
                    failure: g.failure.clone(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::prometheus_text;
    use parking_lot::Mutex;
    use std::collections::VecDeque;
    use std::sync::Arc;

    /// What a mock process will do, shared with the test.
    #[derive(Default)]
    struct MockState {
        next_pid: u32,
        launched: Vec<u32>,
        exits: std::collections::HashMap<u32, ExitStatus>,
        reports: std::collections::HashMap<u32, VecDeque<Report>>,
        signals: Vec<(u32, Signal)>,
        fail_launch: bool,
    }

    struct MockLauncher(Arc<Mutex<MockState>>);
    struct MockChild(Arc<Mutex<MockState>>, u32);

    impl Launcher for MockLauncher {
        fn launch(&mut self, _: usize, _: u32) -> io::Result<Box<dyn ChildProcess>> {
            let mut s = self.0.lock();
            if s.fail_launch {
                return Err(io::Error::other("exec failed"));
            }
            s.next_pid += 1;
            let pid = 1000 + s.next_pid;
            s.launched.push(pid);
            Ok(Box::new(MockChild(self.0.clone(), pid)))
        }
    }

    impl ChildProcess for MockChild {
        fn pid(&self) -> u32 {
            self.1
        }
        fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
            Ok(self.0.lock().exits.get(&self.1).copied())
        }
        fn signal(&mut self, signal: Signal) {
            let mut s = self.0.lock();
            s.signals.push((self.1, signal));
            // A mock process obeys SIGTERM and SIGKILL at once.
            let status = if signal == Signal::SIGKILL { 9 } else { 0 };
            s.exits.insert(self.1, ExitStatus::from_raw(status));
        }
        fn reports(&mut self) -> Vec<Report> {
            self.0
                .lock()
                .reports
                .get_mut(&self.1)
                .map(|q| q.drain(..).collect())
                .unwrap_or_default()
        }
    }

    fn core(processes: u32) -> (Core, Arc<Mutex<MockState>>, Instant) {
        let state = Arc::new(Mutex::new(MockState::default()));
        let now = Instant::now();
        let plan = GroupPlan {
            name: "site".into(),
            processes,
            retire_allowance: Duration::from_secs(20),
            stop_allowance: Duration::from_secs(6),
            socket: "/tmp/x.sock".into(),
        };
        (
            Core::new(vec![plan], Box::new(MockLauncher(state.clone())), now),
            state,
            now,
        )
    }

    fn pids(c: &Core, now: Instant) -> Vec<(u32, &'static str)> {
        c.status(now)[0]
            .processes
            .iter()
            .map(|p| (p.pid, p.state))
            .collect()
    }

    #[test]
    fn starts_every_slot_and_marks_ready() {
        let (mut c, s, t) = core(2);
        c.tick(t);
        assert_eq!(s.lock().launched, vec![1001, 1002]);
        s.lock()
            .reports
            .insert(1001, VecDeque::from([Report::Ready]));
        c.tick(t);
        assert_eq!(pids(&c, t), vec![(1001, "ready"), (1002, "starting")]);
    }

    #[test]
    fn a_start_up_failure_is_kept_for_the_status() {
        let (mut c, s, t) = core(1);
        c.tick(t);
        assert_eq!(c.status(t)[0].failure, None);
        s.lock().reports.insert(
            1001,
            VecDeque::from([Report::Fatal("app.wsgi failed to load at start".into())]),
        );
        c.tick(t);
        assert_eq!(
            c.status(t)[0].failure.as_deref(),
            Some("app.wsgi failed to load at start")
        );
    }

    #[test]
    fn crash_restarts_at_once_then_backs_off() {
        let (mut c, s, t) = core(1);
        c.tick(t);
        // Exit status 1 is a crash (and is not "signal 1").
        s.lock().exits.insert(1001, ExitStatus::from_raw(1 << 8));
        c.tick(t + Duration::from_secs(1));
        assert_eq!(
            s.lock().launched,
            vec![1001, 1002],
            "first crash: immediate restart"
        );
        s.lock().exits.insert(1002, ExitStatus::from_raw(9));
        let t2 = t + Duration::from_secs(2);
        c.tick(t2);
        assert_eq!(s.lock().launched.len(), 2, "second quick crash waits");
        c.tick(t2 + Duration::from_millis(99));
        assert_eq!(s.lock().launched.len(), 2);
        c.tick(t2 + Duration::from_millis(100));
        assert_eq!(s.lock().launched.len(), 3);
        assert_eq!(c.status(t2)[0].restarts, 2);
    }

    #[test]
    fn exit_descriptions_are_the_real_status() {
        assert_eq!(
            describe_exit(ExitStatus::from_raw(1 << 8)),
            "exited with status 1"
        );
        assert_eq!(
            describe_exit(ExitStatus::from_raw(9)),
            "was killed by signal 9 (SIGKILL)"
        );
        assert_eq!(
            describe_exit(ExitStatus::from_raw(11 | 0x80)),
            "was killed by signal 11 (SIGSEGV, core dumped)"
        );
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::ZERO);
        assert_eq!(backoff(2), Duration::from_millis(100));
        assert_eq!(backoff(3), Duration::from_millis(200));
        assert_eq!(backoff(40), Duration::from_secs(10));
    }

    #[test]
    fn recycle_starts_the_replacement_before_the_old_one_exits() {
        let (mut c, s, t) = core(1);
        c.tick(t);
        s.lock().reports.insert(
            1001,
            VecDeque::from([Report::Ready, Report::Recycling("maximum-requests".into())]),
        );
        c.tick(t);
        assert_eq!(pids(&c, t), vec![(1001, "retiring"), (1002, "starting")]);
        // The old one exits cleanly later: not a crash, not restarted again.
        s.lock().exits.insert(1001, ExitStatus::from_raw(0));
        c.tick(t + Duration::from_secs(1));
        assert_eq!(pids(&c, t), vec![(1002, "starting")]);
        let st = &c.status(t)[0];
        assert_eq!((st.restarts, st.recycles), (0, 1));
        assert_eq!(s.lock().launched.len(), 2);
    }

    #[test]
    fn a_retiring_process_that_hangs_is_killed() {
        let (mut c, s, t) = core(1);
        c.tick(t);
        s.lock().reports.insert(
            1001,
            VecDeque::from([Report::Recycling("request-timeout".into())]),
        );
        c.tick(t);
        c.tick(t + Duration::from_secs(19));
        assert!(s.lock().signals.is_empty());
        c.tick(t + Duration::from_secs(20));
        assert_eq!(s.lock().signals, vec![(1001, Signal::SIGKILL)]);
    }

    #[test]
    fn stop_terminates_everything_and_launches_nothing() {
        let (mut c, s, t) = core(2);
        c.tick(t);
        c.begin_stop(t);
        c.tick(t);
        assert!(c.stopped());
        let sig = s.lock().signals.clone();
        assert_eq!(sig, vec![(1001, Signal::SIGTERM), (1002, Signal::SIGTERM)]);
        c.tick(t + Duration::from_secs(60));
        assert_eq!(s.lock().launched.len(), 2);
    }

    #[test]
    fn failed_launch_is_retried() {
        let (mut c, s, t) = core(1);
        s.lock().fail_launch = true;
        c.tick(t);
        s.lock().fail_launch = false;
        c.tick(t + Duration::from_millis(50));
        assert!(s.lock().launched.is_empty());
        c.tick(t + Duration::from_millis(100));
        assert_eq!(s.lock().launched, vec![1001]);
    }

    #[test]
    fn status_counts_served_requests_across_generations_and_renders_prometheus() {
        let (mut c, s, t) = core(1);
        c.tick(t);
        s.lock().reports.insert(
            1001,
            VecDeque::from([
                Report::Stats {
                    served: 7,
                    in_flight: 1,
                },
                Report::Recycling("maximum-requests".into()),
            ]),
        );
        c.tick(t);
        s.lock().exits.insert(1001, ExitStatus::from_raw(0));
        s.lock().reports.insert(
            1002,
            VecDeque::from([Report::Stats {
                served: 3,
                in_flight: 2,
            }]),
        );
        c.tick(t);
        let st = c.status(t);
        assert_eq!((st[0].requests_served, st[0].in_flight), (10, 2));
        let text = prometheus_text(&st);
        assert!(
            text.contains("wsgi_daemon_requests_total{group=\"site\"} 10\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE wsgi_daemon_recycles_total counter\n"),
            "{text}"
        );
    }
}
