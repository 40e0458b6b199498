//! A daemon process's start-up, in mod_wsgi's order: process title, CPU priority, groups,
//! user, cwd, umask, resource limits, then Python, the preloads and the threads; and what
//! happens when it fails (a hint when a memory limit is the likely cause, the requests
//! already waiting answered with why).

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent};
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::{Gid, Uid};
use parking_lot::Mutex;
use wsgi_interp::{CallOptions, InterpreterHandle, Runtime, ScriptSpec, StartConfig};

use super::reactor::{FIRST_CONN, LISTENER, listener_flags};
use super::{ProcessError, Reporter, Shared};
use crate::protocol::{End, FrameReader, encode_end, kind};
use crate::spec::{Identity, ProcessSpec, Report};
use crate::timers::{InactivityTimer, StartupTimer};

/// glibc's malloc gives each thread that allocates under contention an arena of its own, up
/// to 8 per CPU, and reserves 64 MiB of address space for each: over 1 GB for a daemon of 15
/// threads, which `virtual-memory-limit=` counts. Python's allocations are serialised by
/// the GIL anyway, so a daemon process keeps two arenas (the main one and one more), and
/// only the main one under `virtual-memory-limit=`, unless `MALLOC_ARENA_MAX` in its
/// environment says otherwise (glibc reads that itself).
pub(super) fn limit_malloc_arenas(spec: &ProcessSpec) {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    let arenas: libc::c_int = if spec.options.virtual_memory_limit > 0 {
        1
    } else {
        2
    };
    // SAFETY: mallopt only sets a malloc parameter (under malloc's own lock); no memory of
    // ours is involved. It fails only for an unknown parameter, which M_ARENA_MAX is not.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, arenas) };
}

/// Removes the variables the supervisor set only for this program's start-up (its
/// allocator's settings, read before `main`), so the application's `os.environ` does not see
/// them. Done only while the process has a single thread, when nothing can read the
/// environment concurrently.
pub(super) fn unset_env(names: &[String]) {
    if names.is_empty() || threads_of_this_process() != Some(1) {
        return;
    }
    for name in names {
        // SAFETY: this process has one thread (checked just above, and no thread is started
        // by this loop), so no other thread reads or writes the environment meanwhile.
        unsafe { std::env::remove_var(name) };
    }
}

/// The number of threads of this process (`Threads:` of `/proc/self/status`).
fn threads_of_this_process() -> Option<u64> {
    proc_status_field("Threads:")
}

/// A numeric field of `/proc/self/status` (`VmSize:` and `VmData:` are in kB).
fn proc_status_field(name: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

/// After a failed start: answers the requests already waiting on the group's socket with
/// why (the front answers 503 with it), instead of leaving them to wait for a process that
/// cannot start. Bounded: what is queued now, for 2 s at most.
pub(super) fn refuse_waiting(listener: OwnedFd, why: &str) {
    let listener = UnixListener::from(listener);
    if listener.set_nonblocking(true).is_err() {
        return;
    }
    let end = encode_end(&End::StartFailed(why.to_string()));
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let Ok((conn, _)) = listener.accept() else {
            break;
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let wait = Some(left.clamp(Duration::from_millis(1), Duration::from_millis(500)));
        let _ = conn.set_nonblocking(false);
        let _ = conn.set_read_timeout(wait);
        let _ = conn.set_write_timeout(wait);
        // The request first, so the front never writes to a socket closed under it.
        if let Ok(Some((kind::REQUEST, _))) = FrameReader::new(&conn).next_frame() {
            let _ = (&conn).write_all(&end);
        }
    }
}

/// The stack of the process's own threads (reactor, signals, GIL probe, startup watch): they
/// run no application code, so they need far less than a worker.
const HELPER_STACK: usize = 256 * 1024;

/// What to change when `source` (a thread or Python that could not start) is likely a memory
/// limit's doing: ENOMEM or EAGAIN while `memory-limit=` or `virtual-memory-limit=` is set.
/// Empty otherwise.
fn limit_hint(spec: &ProcessSpec, source: &io::Error) -> String {
    let by_limit = matches!(
        source.raw_os_error(),
        Some(libc::EAGAIN) | Some(libc::ENOMEM)
    );
    if !by_limit || (spec.options.memory_limit == 0 && spec.options.virtual_memory_limit == 0) {
        return String::new();
    }
    // Enough for either program (wsgi serve's `wsgi` needs the more).
    let floor = wsgi_config::daemon_options::memory_floor(
        wsgi_config::daemon_options::DaemonProgram::Wsgi,
        spec.options.threads,
        spec.options.stack_size,
    );
    let stacks = u64::from(spec.options.threads.max(1))
        * spec
            .options
            .stack_size
            .unwrap_or(wsgi_config::daemon_options::WORKER_STACK as u64);
    let limits = [
        (
            "memory-limit",
            "RLIMIT_DATA",
            spec.options.memory_limit,
            floor.data,
            "VmData:",
            "data",
        ),
        (
            "virtual-memory-limit",
            "RLIMIT_AS",
            spec.options.virtual_memory_limit,
            floor.address_space,
            "VmSize:",
            "address space",
        ),
    ];
    let mut advice = Vec::new();
    for (option, rlimit, limit, least, field, what) in limits {
        if limit == 0 {
            continue;
        }
        // The kernel's kB are KiB.
        let had = proc_status_field(field)
            .map_or("?".to_string(), |kb| (kb * 1024 / 1_000_000).to_string());
        let fix = if limit < least {
            format!("set it to at least {least}, plus what the application needs")
        } else {
            format!(
                "the application and its preloaded scripts hold the rest: raise it by at least {stacks} bytes (the worker threads' stacks), or lower threads="
            )
        };
        advice.push(format!(
            "{option}={limit} ({rlimit}; the process held {had} MB of {what}, {} in /proc/PID/status, when this failed): {fix}",
            field.trim_end_matches(':')
        ));
    }
    format!(
        "; its memory limit is too small for it to start (Python and {} worker threads): {}; or remove the limit",
        spec.options.threads.max(1),
        advice.join("; ")
    )
}

/// [`limit_hint`] for Python's start-up errors.
fn python_hint(spec: &ProcessSpec, source: &wsgi_interp::StartError) -> String {
    match source {
        wsgi_interp::StartError::Thread(e) => limit_hint(spec, e),
        wsgi_interp::StartError::Init { message, .. } if message.contains("memory") => {
            limit_hint(spec, &io::Error::from_raw_os_error(libc::ENOMEM))
        }
        wsgi_interp::StartError::Setup(e) if e.type_name == "MemoryError" => {
            limit_hint(spec, &io::Error::from_raw_os_error(libc::ENOMEM))
        }
        _ => String::new(),
    }
}

fn thread_err(spec: &ProcessSpec, thread: &str, source: io::Error) -> ProcessError {
    ProcessError::Thread {
        group: spec.group.clone(),
        thread: thread.to_string(),
        hint: limit_hint(spec, &source),
        source,
    }
}

pub(super) fn setup_err(group: &str, source: io::Error) -> ProcessError {
    ProcessError::Setup {
        group: group.to_string(),
        source,
    }
}

/// Process-wide set-up in mod_wsgi's order: process title, CPU priority, groups, user, cwd,
/// umask, resource limits, then Python, the preloads and the threads.
pub(super) fn start(
    spec: &ProcessSpec,
    listener: OwnedFd,
    report: Reporter,
    signals: SigSet,
) -> Result<Arc<Shared>, ProcessError> {
    let group = spec.group.clone();
    if let Some(title) = &spec.display_name {
        // The kernel keeps 15 bytes; argv[0] already carries the full title (set by exec).
        let short: Vec<u8> = title.bytes().filter(|b| *b != 0).take(15).collect();
        if let Ok(name) = std::ffi::CString::new(short) {
            let _ = nix::sys::prctl::set_name(&name);
        }
    }
    // Before the identity switch: only root may raise the priority (a negative nice value).
    crate::limits::apply_priority(&group, spec.options.cpu_priority);
    if let Some(id) = &spec.identity {
        drop_privileges(&group, id)?;
    }
    if Uid::effective().is_root() {
        return Err(ProcessError::Root(group));
    }
    // After the credential change (which clears it): die with the supervisor.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
    if nix::unistd::getppid().as_raw() != spec.supervisor_pid {
        return Err(setup_err(
            &group,
            io::Error::other("the supervisor exited while this process started"),
        ));
    }
    if let Some(home) = &spec.options.home {
        std::env::set_current_dir(home).map_err(|source| ProcessError::Home {
            group: group.clone(),
            home: home.clone(),
            source,
        })?;
    }
    if let Some(mask) = spec.options.umask {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    crate::limits::apply_rlimits(spec);
    let mut python_path = Vec::new();
    if let Some(home) = &spec.options.home {
        python_path.push(home.clone());
    }
    python_path.extend(spec.options.python_path.iter().cloned());
    if let Some(version) = spec.apache_version {
        wsgi_interp::set_apache_version(version);
    }
    let runtime = Runtime::start_with(
        &StartConfig {
            python_home: spec.python_home.clone(),
            python_path,
            optimize: spec.optimize,
            dont_write_bytecode: spec.dont_write_bytecode,
            process_group: group.clone(),
            maximum_processes: spec.options.processes,
            threads_per_process: spec.options.threads,
            interpreter_rules: spec.interpreter_rules.clone(),
        },
        &wsgi_interp::InterpreterOptions {
            per_interpreter_gil: spec.per_interpreter_gil,
        },
    )
    .map_err(|source| ProcessError::Python {
        group: group.clone(),
        hint: python_hint(spec, &source),
        source,
    })?;

    let listener = UnixListener::from(listener);
    listener
        .set_nonblocking(true)
        .map_err(|e| setup_err(&group, e))?;
    let epoll =
        Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| setup_err(&group, e.into()))?;
    epoll
        .add(&listener, EpollEvent::new(listener_flags(), LISTENER))
        .map_err(|e| setup_err(&group, e.into()))?;
    let threads = spec.options.threads.max(1) as usize;
    let jobs = crate::job_queue::JobQueue::new(usize::MAX);
    let shared = Arc::new(Shared {
        spec: spec.clone(),
        runtime,
        epoll,
        listener: Mutex::new(Some(listener)),
        listener_armed: AtomicBool::new(true),
        idle: Mutex::new(HashMap::new()),
        next_token: AtomicU64::new(FIRST_CONN),
        jobs: jobs.clone(),
        free: AtomicIsize::new(threads as isize),
        report,
        draining: AtomicBool::new(false),
        served: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
        running: (0..threads).map(|_| Mutex::new(None)).collect(),
        process_options: CallOptions {
            process_group: spec.group.clone(),
            multithread: spec.options.threads != 1,
            multiprocess: spec.options.processes_given,
            run_once: spec.options.threads == 1 && spec.options.maximum_requests == 1,
            pass_authorization: false,
        },
        inactivity: Mutex::new(InactivityTimer::new(spec.options.inactivity_timeout)),
        startup: Mutex::new(StartupTimer::new(spec.options.startup_timeout)),
        gil_seen: Mutex::new(Instant::now()),
        recycle: Mutex::new(None),
        signal: Mutex::new(None),
        prepared: Mutex::new(HashSet::new()),
        serving: AtomicBool::new(false),
    });
    // The main interpreter exists already: set it up now (the GIL probe uses it).
    if let Ok(main) = shared.runtime.interpreter("") {
        shared.prepare(&main);
    }
    let spawn = |name: &str, stack: usize, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name.to_string())
            .stack_size(stack)
            .spawn(f)
            .map(drop)
            .map_err(|e| thread_err(spec, name, e))
    };
    let helper = |name: &str, run: fn(Arc<Shared>)| {
        let s = shared.clone();
        spawn(name, HELPER_STACK, Box::new(move || run(s)))
    };
    if !spec.options.startup_timeout.is_zero() && !spec.preload.is_empty() {
        helper("wsgi-startup-watch", Shared::startup_watch)?;
    }
    // mod_wsgi loads these on the main thread before any request is accepted.
    shared.preload()?;
    let worker_stack = spec
        .options
        .stack_size
        .map_or(wsgi_config::daemon_options::WORKER_STACK, |s| s as usize);
    for i in 0..threads {
        let s = shared.clone();
        let queue = jobs.clone();
        spawn(
            &format!("wsgi-worker-{i}"),
            worker_stack,
            Box::new(move || s.worker(i, &queue.taker())),
        )?;
    }
    helper("wsgi-reactor", Shared::reactor)?;
    if !spec.options.deadlock_timeout.is_zero() {
        helper("wsgi-gil-probe", Shared::gil_probe)?;
    }
    let s = shared.clone();
    spawn(
        "wsgi-signals",
        HELPER_STACK,
        Box::new(move || s.wait_signals(signals)),
    )?;
    shared.serving.store(true, Ordering::SeqCst);
    shared.report.send(&Report::Ready);
    tracing::info!(
        group = %spec.group,
        pid = std::process::id(),
        threads,
        "daemon process ready"
    );
    Ok(shared)
}

fn drop_privileges(group: &str, id: &Identity) -> Result<(), ProcessError> {
    let fail = |what: String, source: nix::Error| ProcessError::Privileges {
        group: group.to_string(),
        what,
        source,
    };
    if id.uid == 0 {
        return Err(ProcessError::Root(group.to_string()));
    }
    let gid = Gid::from_raw(id.gid);
    nix::unistd::setgid(gid).map_err(|e| fail(format!("group id {}", id.gid), e))?;
    match &id.supplementary {
        Some(gids) => {
            let gids: Vec<Gid> = gids.iter().map(|g| Gid::from_raw(*g)).collect();
            nix::unistd::setgroups(&gids)
                .map_err(|e| fail(format!("supplementary groups {gids:?}"), e))?
        }
        None => {
            let name =
                std::ffi::CString::new(id.user_name.trim_start_matches('#')).unwrap_or_default();
            if id.user_name.starts_with('#') {
                nix::unistd::setgroups(&[gid])
                    .map_err(|e| fail(format!("supplementary groups [{gid}]"), e))?
            } else {
                nix::unistd::initgroups(&name, gid)
                    .map_err(|e| fail(format!("the groups of user {}", id.user_name), e))?
            }
        }
    }
    nix::unistd::setuid(Uid::from_raw(id.uid))
        .map_err(|e| fail(format!("user {} (uid {})", id.user_name, id.uid), e))?;
    if Uid::effective().is_root() || Uid::current().is_root() {
        return Err(ProcessError::Root(group.to_string()));
    }
    Ok(())
}

impl Shared {
    /// Applies the per-interpreter settings (`switch-interval`) to an interpreter the first
    /// time it is used.
    pub(super) fn prepare(&self, interp: &InterpreterHandle) {
        let Some(interval) = self.spec.switch_interval else {
            return;
        };
        if self.prepared.lock().contains(interp.group()) {
            return;
        }
        let code = format!("__import__('sys').setswitchinterval({interval:?})");
        match interp.run(|py| py.exec(&code)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(
                group = %self.spec.group,
                application_group = %interp.group(),
                "switch-interval={interval} was not applied: {e}"
            ),
            // The interpreter is unusable: the request that follows reports it.
            Err(_) => return,
        }
        self.prepared.lock().insert(interp.group().to_string());
    }

    /// Loads the [`ProcessSpec::preload`] scripts, in order, stopping early if the process
    /// is told to stop. A failure is logged, or, with [`ProcessSpec::preload_must_succeed`],
    /// returned.
    fn preload(&self) -> Result<(), ProcessError> {
        let group = &self.spec.group;
        for p in &self.spec.preload {
            if self.draining.load(Ordering::SeqCst) {
                return Ok(());
            }
            let mut script = ScriptSpec::new(p.script.clone());
            if let Some(callable) = &p.callable {
                script.callable = callable.clone();
            }
            let loaded = self
                .runtime
                .interpreter(&p.application_group)
                .map_err(wsgi_interp::ScriptError::from)
                .and_then(|interp| {
                    self.prepare(&interp);
                    match interp.load_script(&script) {
                        // An import script needs no WSGI callable: it ran.
                        Err(wsgi_interp::ScriptError::MissingCallable { .. })
                            if p.callable.is_none() =>
                        {
                            Ok(())
                        }
                        other => other.map(drop),
                    }
                });
            match loaded {
                Ok(()) => {
                    self.script_loaded();
                    tracing::info!(%group, script = %p.script.display(), application_group = %p.application_group, "preloaded");
                }
                Err(e) if self.spec.preload_must_succeed => {
                    let why = match &e {
                        wsgi_interp::ScriptError::Raised { error, .. } => {
                            format!("{error} (the traceback is above)")
                        }
                        other => other.to_string(),
                    };
                    return Err(ProcessError::Preload {
                        group: group.clone(),
                        script: p.script.clone(),
                        why,
                    });
                }
                Err(e) => tracing::error!(
                    %group,
                    script = %p.script.display(),
                    application_group = %p.application_group,
                    "preloading failed: {e}"
                ),
            }
        }
        Ok(())
    }
}
