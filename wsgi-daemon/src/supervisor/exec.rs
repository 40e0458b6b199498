//! The supervisor's production [`Launcher`]: each daemon process is an exec of the daemon
//! program with the control socket as its stdin, over which it gets its [`ProcessSpec`] and
//! the group's listening socket and sends back its [`Report`]s.

use std::ffi::OsString;
use std::io::{self, Read};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};

use nix::sys::signal::Signal;

use super::machine::{ChildProcess, Launcher};
use crate::spec::{ProcessSpec, Report, send_spec};

/// Settings for the memory allocator of the program a daemon process runs, passed in its
/// environment because the allocator reads them before `main` (the process removes them
/// again before Python starts, [`ProcessSpec::unset_env`]). The `wsgi` program allocates
/// through mimalloc, which otherwise reserves its memory 1 GiB at a time and commits it at
/// once: a daemon process would start with over 1 GB of data and address space, more than
/// a `memory-limit=` or `virtual-memory-limit=` of a few hundred MB allows. With these it
/// reserves 64 MiB (its smallest block) at a time and commits what it uses. Ignored by
/// programs without mimalloc (`wsgi-daemon`); a variable already in the supervisor's
/// environment is left as the operator set it.
pub const ALLOCATOR_ENV: &[(&str, &str)] = &[
    ("MIMALLOC_ARENA_RESERVE", "64MiB"),
    ("MIMALLOC_ARENA_EAGER_COMMIT", "0"),
];

pub(super) struct ExecPlan {
    pub(super) spec: ProcessSpec,
    /// The program of a group on another Python (its venv's `wsgi`); None: the launcher's.
    pub(super) program: Option<PathBuf>,
    pub(super) listener: UnixListener,
    pub(super) env: Vec<(String, OsString)>,
    /// The processes' stderr: the `ErrorLog` of the virtual host the group is defined in, as
    /// mod_wsgi connects it (None: the supervisor's own stderr).
    pub(super) stderr: Option<std::fs::File>,
}

pub(super) struct ExecLauncher {
    program: PathBuf,
    args: Vec<OsString>,
    plans: Vec<ExecPlan>,
    /// The (group, slot)s started once: [`ProcessSpec::preload_must_succeed`] holds for a
    /// slot's first process only (the start); its replacements log a failure, as mod_wsgi.
    started: std::collections::HashSet<(usize, u32)>,
}

impl ExecLauncher {
    /// Execs `program args...` for the groups of `plans` (in the plan's order), or a group's
    /// own program.
    pub(super) fn new(program: PathBuf, args: Vec<OsString>, plans: Vec<ExecPlan>) -> Self {
        ExecLauncher {
            program,
            args,
            plans,
            started: Default::default(),
        }
    }
}

impl Launcher for ExecLauncher {
    fn launch(&mut self, group: usize, slot: u32) -> io::Result<Box<dyn ChildProcess>> {
        let plan = &self.plans[group];
        let (ours, theirs) = UnixStream::pair()?;
        let program = plan.program.as_ref().unwrap_or(&self.program);
        let mut cmd = Command::new(program);
        match &plan.program {
            Some(_) => cmd.arg(crate::program::PROCESS_COMMAND),
            None => cmd.args(&self.args),
        }
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
        .envs(plan.env.iter().map(|(k, v)| (k, v)));
        if let Some(log) = &plan.stderr {
            cmd.stderr(log.try_clone()?);
        }
        if let Some(title) = &plan.spec.display_name {
            cmd.arg0(title);
        }
        let mut child = cmd.spawn().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot exec `{}`: {e}", program.display()),
            )
        })?;
        let mut spec = plan.spec.clone();
        spec.slot = slot;
        spec.preload_must_succeed &= self.started.insert((group, slot));
        if let Err(e) = send_spec(&ours, &spec, &plan.listener) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other(e.to_string()));
        }
        ours.set_nonblocking(true)?;
        Ok(Box::new(ExecChild {
            child,
            control: ours,
            buf: Vec::new(),
            reaped: false,
        }))
    }
}

struct ExecChild {
    child: std::process::Child,
    control: UnixStream,
    buf: Vec<u8>,
    reaped: bool,
}

impl ChildProcess for ExecChild {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        let r = self.child.try_wait()?;
        if r.is_some() {
            self.reaped = true;
        }
        Ok(r)
    }

    fn signal(&mut self, signal: Signal) {
        if !self.reaped {
            let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
            let _ = nix::sys::signal::kill(pid, signal);
        }
    }

    fn reports(&mut self) -> Vec<Report> {
        let mut chunk = [0u8; 4096];
        loop {
            match self.control.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => break,
            }
        }
        let mut out = Vec::new();
        while let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=end).collect();
            if let Some(r) = Report::parse(String::from_utf8_lossy(&line[..end]).as_ref()) {
                out.push(r);
            }
        }
        out
    }
}
