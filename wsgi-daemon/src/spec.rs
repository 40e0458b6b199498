//! What a supervisor tells a daemon process when it starts it, and the control channel
//! between the two.
//!
//! The supervisor execs the daemon program with a unix socket pair end as stdin. Over it, it
//! sends one message: a 4-byte little-endian length carrying the group's listening socket as
//! `SCM_RIGHTS`, then that many bytes of JSON ([`ProcessSpec`]). The daemon then writes
//! one-line reports back ([`Report`]). Nothing else is inherited: no fork of a threaded
//! process, no file descriptor passed by number.

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use serde::{Deserialize, Serialize};

/// The user, group and supplementary groups a daemon process switches to (only when started
/// as root). Names are resolved by the supervisor, so a bad name fails before any spawn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The user's name (for `initgroups`), or `#uid`.
    pub user_name: String,
    /// The user id; never 0.
    pub uid: u32,
    /// The group id.
    pub gid: u32,
    /// `supplementary-groups=`, resolved; `None` means the user's groups (`initgroups`).
    pub supplementary: Option<Vec<u32>>,
}

/// A script a daemon process loads at start, before it takes requests: a `WSGIImportScript`
/// for its group, or a `WSGIScriptAlias` naming both its group and a literal application group
/// (mod_wsgi's preloading).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preload {
    /// The script file.
    pub script: PathBuf,
    /// The application group (`""`: the main interpreter).
    pub application_group: String,
    /// The WSGI callable it must define (a script alias's), or `None` for an import script,
    /// which needs none.
    pub callable: Option<String>,
}

/// Everything one daemon process needs, sent by the supervisor as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessSpec {
    /// The daemon process group's name.
    pub group: String,
    /// The process's slot in its group (0-based).
    pub slot: u32,
    /// The supervisor's pid: the process exits if its parent is not that process.
    pub supervisor_pid: i32,
    /// The group's `WSGIDaemonProcess` options as written (`processes=`, `threads=`, the
    /// timeouts and limits...); the fields below hold what the supervisor resolved from them
    /// and the rest of the configuration.
    pub options: wsgi_config::daemon_options::DaemonOptions,
    /// The venv root or installation prefix: `python-home=`, else `WSGIPythonHome`.
    pub python_home: Option<PathBuf>,
    /// `WSGIPythonOptimize`.
    pub optimize: u8,
    /// `WSGIDontWriteBytecode`.
    pub dont_write_bytecode: bool,
    /// `WSGIPerInterpreterGIL`: sub-interpreters with their own GIL (Python 3.12+).
    #[serde(default)]
    pub per_interpreter_gil: bool,
    /// What `<WSGIInterpreterOptions>` sections give this group's interpreters.
    #[serde(default)]
    pub interpreter_rules: wsgi_config::InterpreterRules,
    /// `apache.version` in the environs (None: `wsgi serve`'s).
    #[serde(default)]
    pub apache_version: Option<(u16, u16, u16)>,
    /// Who to become, when started as root.
    pub identity: Option<Identity>,
    /// The process name (`display-name=`, `%{GROUP}` expanded).
    pub display_name: Option<String>,
    /// `switch-interval=`, else a `<WSGIInterpreterOptions process-group=...>` section's
    /// `WSGISwitchInterval`, else the top-level one: `sys.setswitchinterval` in every
    /// interpreter (`None`: Python's default).
    #[serde(default)]
    pub switch_interval: Option<f64>,
    /// Scripts loaded at start, in configuration order.
    #[serde(default)]
    pub preload: Vec<Preload>,
    /// A preload failure is fatal (the process reports it and exits): `wsgi serve` without
    /// `--lazy-apps`. Otherwise it is logged, as mod_wsgi does.
    #[serde(default)]
    pub preload_must_succeed: bool,
    /// Environment variables the supervisor set only for the program's start-up (its
    /// allocator's settings, [`crate::supervisor::ALLOCATOR_ENV`]): the process removes them
    /// before Python starts, so applications do not see them.
    #[serde(default)]
    pub unset_env: Vec<String>,
    /// A worker that answered a request waits a moment on that connection for the next one
    /// (`wsgi serve`, whose one front process hands out its most recent idle connection
    /// first). Off for the Apache module, whose children each keep their own connections: a
    /// worker waiting there would mostly keep other requests waiting.
    #[serde(default)]
    pub linger: bool,
}

/// A one-line report from a daemon process to its supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// Python started and the workers are accepting.
    Ready,
    /// The process stopped accepting and will exit when its requests are done: start a
    /// replacement now.
    Recycling(String),
    /// Counters: requests served so far, requests running now.
    Stats {
        /// Requests finished.
        served: u64,
        /// Requests running.
        in_flight: u64,
    },
    /// Start-up failed; the message says why (the process exits next).
    Fatal(String),
}

impl Report {
    /// The line sent for this report (with its newline).
    pub fn to_line(&self) -> String {
        let one_line = |s: &str| s.replace(['\n', '\r'], " ");
        match self {
            Report::Ready => "ready\n".into(),
            Report::Recycling(reason) => format!("recycling {}\n", one_line(reason)),
            Report::Stats { served, in_flight } => format!("stats {served} {in_flight}\n"),
            Report::Fatal(msg) => format!("fatal {}\n", one_line(msg)),
        }
    }

    /// Parses one line (without its newline); unknown lines are `None`.
    pub fn parse(line: &str) -> Option<Report> {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "ready" => Some(Report::Ready),
            "recycling" => Some(Report::Recycling(rest.to_string())),
            "fatal" => Some(Report::Fatal(rest.to_string())),
            "stats" => {
                let (a, b) = rest.split_once(' ')?;
                Some(Report::Stats {
                    served: a.parse().ok()?,
                    in_flight: b.parse().ok()?,
                })
            }
            _ => None,
        }
    }
}

/// Why the start-up message could not be exchanged.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    /// The control socket failed.
    #[error(
        "the supervisor's control socket failed: {0} (this command is started by a wsgi-rs supervisor, not by hand)"
    )]
    Io(#[from] std::io::Error),
    /// The socket call failed.
    #[error(
        "passing the listening socket failed: {0} (this command is started by a wsgi-rs supervisor, not by hand)"
    )]
    Sys(#[from] nix::Error),
    /// No listening socket came with the message.
    #[error(
        "the supervisor sent no listening socket (this command is started by a wsgi-rs supervisor, not by hand)"
    )]
    NoListener,
    /// The JSON does not parse.
    #[error(
        "the process specification does not parse: {0}; the supervisor and daemon come from different wsgi-rs builds"
    )]
    Spec(#[from] serde_json::Error),
}

/// Supervisor side: sends the spec and the listener over the control socket.
pub fn send_spec(
    control: &UnixStream,
    spec: &ProcessSpec,
    listener: &impl AsRawFd,
) -> Result<(), HandoverError> {
    let json = serde_json::to_vec(spec)?;
    let len = (json.len() as u32).to_le_bytes();
    let fds = [listener.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let sent = sendmsg::<()>(
        control.as_raw_fd(),
        &[IoSlice::new(&len)],
        &cmsg,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    if sent != len.len() {
        (&*control).write_all(&len[sent..])?;
    }
    (&*control).write_all(&json)?;
    Ok(())
}

/// Daemon side: receives the spec and the listener.
pub fn receive_spec(control: &UnixStream) -> Result<(ProcessSpec, OwnedFd), HandoverError> {
    let mut len = [0u8; 4];
    let mut listener = None;
    let got = {
        let mut iov = [IoSliceMut::new(&mut len)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg = recvmsg::<()>(
            control.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for fd in fds {
                    // SAFETY: the kernel has just installed `fd` in this process for this
                    // message (SCM_RIGHTS); nothing else knows it, so we are its only owner.
                    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                    if listener.is_none() {
                        listener = Some(owned);
                    }
                }
            }
        }
        msg.bytes
    };
    if got < len.len() {
        (&*control).read_exact(&mut len[got..])?;
    }
    let listener = listener.ok_or(HandoverError::NoListener)?;
    let mut json = vec![0u8; u32::from_le_bytes(len) as usize];
    (&*control).read_exact(&mut json)?;
    Ok((serde_json::from_slice(&json)?, listener))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;
    use std::time::Duration;

    #[test]
    fn reports_round_trip_on_one_line() {
        for r in [
            Report::Ready,
            Report::Recycling("maximum-requests (3) reached".into()),
            Report::Stats {
                served: 10,
                in_flight: 2,
            },
            Report::Fatal("python-home `/x` does not exist\nsecond line".into()),
        ] {
            let line = r.to_line();
            assert_eq!(line.matches('\n').count(), 1, "{line:?}");
            let back = Report::parse(line.trim_end_matches('\n')).unwrap();
            if let Report::Fatal(m) = &back {
                assert!(!m.contains('\n'));
            } else {
                assert_eq!(back, r);
            }
        }
        assert_eq!(Report::parse("stats x 1"), None);
        assert_eq!(Report::parse("hello"), None);
    }

    #[test]
    fn spec_and_listener_pass_over_a_socket_pair() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        let spec = ProcessSpec {
            group: "site".into(),
            slot: 1,
            supervisor_pid: 42,
            options: wsgi_config::daemon_options::DaemonOptions {
                processes: 2,
                processes_given: true,
                threads: 4,
                python_path: vec!["/srv/lib".into()],
                umask: Some(0o007),
                maximum_requests: 5,
                request_timeout: Duration::from_millis(1500),
                deadlock_timeout: Duration::from_secs(300),
                startup_timeout: Duration::from_secs(15),
                ..Default::default()
            },
            python_home: None,
            optimize: 0,
            dont_write_bytecode: false,
            per_interpreter_gil: false,
            interpreter_rules: wsgi_config::InterpreterRules {
                restrict_stdout: true,
                rules: vec![wsgi_config::InterpreterRule {
                    process_group: Some("site".into()),
                    application_group: Some(String::new()),
                    python_path: vec!["/srv/main".into()],
                    ..Default::default()
                }],
                ..Default::default()
            },
            apache_version: Some((2, 4, 71)),
            identity: None,
            display_name: Some("(wsgi:site)".into()),
            switch_interval: Some(0.002),
            preload: vec![Preload {
                script: "/srv/app.wsgi".into(),
                application_group: String::new(),
                callable: Some("application".into()),
            }],
            preload_must_succeed: true,
            unset_env: vec!["MIMALLOC_ARENA_RESERVE".into()],
            linger: true,
        };
        send_spec(&a, &spec, &listener).unwrap();
        let (back, fd) = receive_spec(&b).unwrap();
        assert_eq!(back.group, "site");
        assert_eq!(back.options, spec.options);
        assert_eq!(back.switch_interval, Some(0.002));
        assert!(back.preload_must_succeed);
        assert_eq!(back.preload, spec.preload);
        assert_eq!(back.interpreter_rules, spec.interpreter_rules);
        assert_eq!(back.apache_version, Some((2, 4, 71)));
        assert!(back.linger);
        // The received descriptor is the same listening socket: a client connects through it.
        let received = UnixListener::from(fd);
        let _client = UnixStream::connect(&path).unwrap();
        received.accept().unwrap();
    }
}
