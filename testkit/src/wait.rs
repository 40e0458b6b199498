//! Bounded waits: every one gives up at its limit, and says so, rather than hang a test.

use std::path::Path;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// Whether `f` holds within `limit` (asked every 50 ms).
pub fn eventually(limit: Duration, f: impl FnMut() -> bool) -> bool {
    eventually_every(limit, Duration::from_millis(50), f)
}

/// Whether `f` holds within `limit`, asked every `every`.
pub fn eventually_every(limit: Duration, every: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(every);
    }
    false
}

/// The next line from `lines` (a child's output, as [`crate::process::lines`] reads it) for
/// which `wanted` holds, skipping the others; when none came within `limit` (or the output
/// ended), the lines it skipped, for the failure to show.
pub fn next_line(
    lines: &Receiver<String>,
    limit: Duration,
    mut wanted: impl FnMut(&str) -> bool,
) -> Result<String, Vec<String>> {
    let deadline = Instant::now() + limit;
    let mut skipped = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if wanted(&line) => return Ok(line),
            Ok(line) => skipped.push(line),
            Err(_) => return Err(skipped),
        }
    }
}

/// The text of the file at `path` once `ready` holds for it, read every 50 ms for at most
/// `limit`; what it holds then otherwise (empty while it does not exist).
pub fn file_text_when(path: &Path, limit: Duration, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if ready(&text) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
