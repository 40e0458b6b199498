//! Resource limits and scheduling priority of a daemon process (`cpu-time-limit`,
//! `memory-limit`, `virtual-memory-limit`, `cpu-priority`), applied in the child before
//! Python starts, in mod_wsgi's order (priority first, rlimits after the identity switch).
//!
//! As in mod_wsgi, a limit that cannot be set is logged and the process goes on.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

use crate::spec::ProcessSpec;

/// `cpu-priority=`: `setpriority(PRIO_PROCESS, 0, n)`. Called while the process has one
/// thread, so every thread created later inherits it (Linux nice values are per thread).
pub fn apply_priority(group: &str, priority: i32) {
    if priority == 0 {
        return;
    }
    // SAFETY: setpriority takes plain integers and touches no memory of ours; `0` means the
    // calling process (thread on Linux). Errors are reported through errno, read just below.
    let rc =
        unsafe { nix::libc::setpriority(nix::libc::PRIO_PROCESS, 0, priority as nix::libc::c_int) };
    if rc == -1 {
        tracing::error!(
            %group,
            "cannot set the CPU priority of the daemon process to {priority}: {} (only root may lower the nice value below 0)",
            std::io::Error::last_os_error()
        );
    }
}

/// The variable that, set to `0`, keeps worker threads on the default scheduling policy.
pub const SCHED_BATCH_VAR: &str = "WSGI_RS_SCHED_BATCH";

/// Makes the calling thread (a worker that runs the application) `SCHED_BATCH`: the kernel
/// no longer lets it preempt the running thread when it wakes up for a request, and gives it
/// its fair share as before (its nice value, `cpu-priority=`, is kept). On a CPU it shares
/// with the front, the front then finishes what it is doing (reading the other requests
/// that came in, sending the answers that are ready) before the worker runs, instead of the
/// two taking turns at every request; on a CPU with nothing else to run nothing changes.
/// Between workers too: one woken for the GIL waits for the running one's time slice instead
/// of preempting it (busy workers otherwise convoy, each release of the GIL a switch).
///
/// `pool` names the workers in the warning when the policy cannot be set: a daemon group's
/// name, or `embedded` for `wsgi serve`'s own workers. `WSGI_RS_SCHED_BATCH=0` in the
/// server's (or Apache's) environment leaves the default policy.
pub fn batch_scheduling(pool: &str) {
    static WANTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let wanted = *WANTED.get_or_init(|| {
        batch_wanted(std::env::var_os(SCHED_BATCH_VAR).as_deref()).unwrap_or_else(|value| {
            tracing::warn!(
                "{SCHED_BATCH_VAR}={value:?} is neither 0 nor 1 (nor off/on, no/yes, \
                 false/true): worker threads are SCHED_BATCH, as by default"
            );
            true
        })
    });
    if !wanted {
        return;
    }
    let param = nix::libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler reads the `sched_param` passed by reference, which lives
    // until it returns, and touches no other memory of ours; `0` is the calling thread.
    let rc = unsafe { nix::libc::sched_setscheduler(0, nix::libc::SCHED_BATCH, &param) };
    if rc == -1 {
        tracing::warn!(
            %pool,
            "cannot make a worker thread SCHED_BATCH: {}; it keeps the default policy",
            std::io::Error::last_os_error()
        );
    }
}

/// Whether [`SCHED_BATCH_VAR`]'s value asks for batch workers: unset or empty, `1`, `on`,
/// `yes`, `true` do, `0`, `off`, `no`, `false` do not (any case); anything else is returned.
fn batch_wanted(value: Option<&std::ffi::OsStr>) -> Result<bool, String> {
    let Some(value) = value else {
        return Ok(true);
    };
    let text = value.to_string_lossy();
    match text.trim().to_ascii_lowercase().as_str() {
        "" | "1" | "on" | "yes" | "true" => Ok(true),
        "0" | "off" | "no" | "false" => Ok(false),
        _ => Err(text.into_owned()),
    }
}

/// `cpu-time-limit=` (`RLIMIT_CPU`), `memory-limit=` (`RLIMIT_DATA`) and
/// `virtual-memory-limit=` (`RLIMIT_AS`).
///
/// The CPU limit's soft value sends SIGXCPU (a graceful restart); its hard value, where the
/// kernel kills the process, leaves room for that restart: graceful-timeout plus
/// shutdown-timeout plus a second of CPU time.
pub fn apply_rlimits(spec: &ProcessSpec) {
    if spec.options.cpu_time_limit > 0 {
        let hard = spec.options.cpu_time_limit
            + spec.options.graceful_timeout.as_secs()
            + spec.options.shutdown_timeout.as_secs()
            + 1;
        set(
            &spec.group,
            Resource::RLIMIT_CPU,
            "cpu-time-limit",
            spec.options.cpu_time_limit,
            hard,
        );
    }
    if spec.options.memory_limit > 0 {
        set(
            &spec.group,
            Resource::RLIMIT_DATA,
            "memory-limit",
            spec.options.memory_limit,
            spec.options.memory_limit,
        );
    }
    if spec.options.virtual_memory_limit > 0 {
        set(
            &spec.group,
            Resource::RLIMIT_AS,
            "virtual-memory-limit",
            spec.options.virtual_memory_limit,
            spec.options.virtual_memory_limit,
        );
    }
}

fn set(group: &str, resource: Resource, option: &str, soft: u64, hard: u64) {
    // An unprivileged process cannot raise its hard limit: stay within the current one.
    let (soft, hard) = match getrlimit(resource) {
        Ok((_, current_hard)) => (soft.min(current_hard), hard.min(current_hard)),
        Err(_) => (soft, hard),
    };
    if let Err(e) = setrlimit(resource, soft, hard) {
        tracing::error!(%group, "cannot set {option}={soft} on the daemon process: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scheduling policy of the calling thread, as `/proc` shows it (field 41).
    fn policy() -> u32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        after_name.split(' ').nth(38).unwrap().parse().unwrap()
    }

    #[test]
    fn a_worker_thread_becomes_batch_and_others_do_not() {
        let before = policy();
        let worker = std::thread::spawn(|| {
            batch_scheduling("g");
            policy()
        });
        assert_eq!(worker.join().unwrap(), nix::libc::SCHED_BATCH as u32);
        assert_eq!(policy(), before, "only the calling thread");
    }

    #[test]
    fn the_batch_switch_reads_the_usual_spellings_and_names_others() {
        use std::ffi::OsStr;
        let wanted = |v: &str| batch_wanted(Some(OsStr::new(v)));
        assert_eq!(batch_wanted(None), Ok(true));
        for on in ["", "1", "on", "Yes", "TRUE"] {
            assert_eq!(wanted(on), Ok(true), "{on:?}");
        }
        for off in ["0", "off", "No", "false", " 0 "] {
            assert_eq!(wanted(off), Ok(false), "{off:?}");
        }
        assert_eq!(wanted("maybe"), Err("maybe".to_owned()));
    }
}
