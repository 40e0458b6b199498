//! curl as the client of the HTTP/2 tests (h2c with prior knowledge, TLS with ALPN), and the
//! checks both fronts' HTTP/2 tests make with [`crate::apps::PROTOCOL_APP`].

use std::path::{Path, PathBuf};
use std::process::Command;

/// What curl got: whether it succeeded, the body, and the HTTP version it spoke.
pub struct Curl {
    /// curl's exit status was 0.
    pub ok: bool,
    /// The response body.
    pub body: Vec<u8>,
    /// The HTTP version (`%{http_version}`: `1.1`, `2`).
    pub version: String,
    /// What curl printed on stderr.
    pub stderr: String,
}

impl Curl {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Runs curl with `args` (at most 60 s); the HTTP version it spoke comes from the last line
/// of its output (`-w`: a caller's own `-w` would replace it).
pub fn curl(args: &[&str]) -> Curl {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "60", "-w", "\n%{http_version}"])
        .args(args)
        .output()
        .expect("curl runs");
    let mut body = out.stdout;
    let at = body.iter().rposition(|&b| b == b'\n').unwrap_or(0);
    let version = String::from_utf8_lossy(&body[at..]).trim().to_string();
    body.truncate(at);
    Curl {
        ok: out.status.success(),
        body,
        version,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The SHA-1 of a file, in hex (coreutils' `sha1sum`).
pub fn sha1_file(path: &Path) -> String {
    let out = Command::new("sha1sum")
        .arg(path)
        .output()
        .expect("sha1sum runs");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// A file of `len` bytes in `dir` (a pattern that is not all one byte), and its SHA-1.
pub fn upload_body(dir: &Path, name: &str, len: usize) -> (PathBuf, String) {
    let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
    let path = dir.join(name);
    std::fs::write(&path, &data).unwrap();
    let digest = sha1_file(&path);
    (path, digest)
}

/// Fails unless `text` holds each of `lines`.
pub fn assert_holds(text: &str, lines: &[&str]) {
    for line in lines {
        assert!(text.contains(line), "{line:?} in {text}");
    }
}

/// Against [`crate::apps::PROTOCOL_APP`] at `base` (`http://host:port/prefix`), with curl's
/// `how` flags, each answered over HTTP version `version`: a 64 KiB and a 10 MiB upload (the
/// SHA-1 the app computed of what it read), and the 1 MiB streamed response. The bodies are
/// written in `dir`.
pub fn check_bodies(dir: &Path, base: &str, how: &[&str], version: &str) {
    let get = |path: &str, more: &[&str]| {
        let target = format!("{base}{path}");
        let mut args: Vec<&str> = how.to_vec();
        args.extend_from_slice(more);
        args.push(&target);
        curl(&args)
    };
    for (name, len) in [("64k", 64 * 1024), ("10m", 10 * 1024 * 1024)] {
        let (file, digest) = upload_body(dir, name, len);
        let data = format!("@{}", file.display());
        let up = get("/upload", &["--data-binary", &data]);
        assert!(up.ok, "{}", up.stderr);
        assert_eq!(up.version, version);
        assert_eq!(up.text(), format!("{len} {digest}"));
    }
    let stream = get("/stream", &[]);
    assert!(stream.ok, "{}", stream.stderr);
    assert_eq!(stream.version, version);
    let expected: Vec<u8> = (0..16u8).flat_map(|i| vec![i; 65536]).collect();
    assert_eq!(stream.body.len(), expected.len());
    assert!(stream.body == expected, "the streamed body differs");
}
