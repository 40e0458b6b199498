//! Child processes the tests start, and what /proc says about processes. Signals go by the pid
//! of a process the test started (or one its server reported), never by name.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Output};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Whether the tests run as root.
pub fn is_root() -> bool {
    // The owner of /proc/self is this process's effective user.
    std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0
}

/// The fields of `/proc/PID/stat` after the command (the state first), or None when the
/// process is gone.
fn stat_after_command(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.trim_start().to_string())
}

/// Whether process `pid` runs (a zombie, still in /proc until reaped, does not).
pub fn alive(pid: u32) -> bool {
    stat_after_command(pid).is_some_and(|rest| !rest.starts_with('Z'))
}

/// The processes whose parent is `parent`, in /proc's order.
pub fn children(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let ppid = stat_after_command(pid)
            .and_then(|rest| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid == Some(parent) {
            out.push(pid);
        }
    }
    out
}

/// The command line of process `pid`, its NUL separators as spaces (empty when it is gone).
pub fn cmdline(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&raw).replace('\0', " ")
}

/// Sends the signal `name` (`-HUP`, `-TERM`, `-KILL`) to process `pid` with kill(1), which must
/// succeed.
pub fn signal(pid: u32, name: &str) {
    assert!(try_signal(pid, name), "kill {name} {pid}");
}

/// [`signal`], saying only whether kill(1) succeeded (the process may be gone already).
pub fn try_signal(pid: u32, name: &str) -> bool {
    Command::new("kill")
        .args([name, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

/// Waits at most `limit` for `child` to exit (asked every 20 ms): its status, or None.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops a child the test started: SIGTERM (by its pid) while it runs, at most `limit` to
/// exit, then SIGKILL; reaped either way.
pub fn stop(child: &mut Child, limit: Duration) {
    if let Ok(None) = child.try_wait() {
        let _ = try_signal(child.id(), "-TERM");
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The lines of `output` (a child's piped stdout or stderr), read on a thread into an
/// unbounded channel until it ends: the child never blocks on a full pipe, even once the
/// receiver is gone.
pub fn lines(output: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

/// Everything a child writes to one of its pipes (its stderr, usually), gathered on a thread.
pub struct Captured {
    text: Arc<Mutex<String>>,
    reader: JoinHandle<()>,
}

impl Captured {
    /// Starts reading `output` line by line until it ends.
    pub fn spawn(output: impl Read + Send + 'static) -> Captured {
        let text = Arc::new(Mutex::new(String::new()));
        let sink = text.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(output).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Captured { text, reader }
    }

    /// What was read so far, each line ending with a newline.
    pub fn text(&self) -> String {
        self.text.lock().unwrap().clone()
    }

    /// Waits until the pipe is closed (every process holding it has exited or closed it),
    /// at most `limit`: afterwards [`Captured::text`] has everything they wrote.
    pub fn settle(&self, limit: Duration) {
        let until = Instant::now() + limit;
        while !self.reader.is_finished() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Runs `cmd` to its end, which must succeed: its standard output. A failure shows the
/// command, its status and everything it printed.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What a finished command printed: its standard output, then its standard error.
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
