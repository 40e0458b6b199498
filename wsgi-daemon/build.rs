//! Links libpython with a run path, as the `wsgi` program does, so the `wsgi-daemon` program
//! (what the Apache module execs for daemon processes) loads the CPython it was built
//! against and not another libpython with the same soname; and bakes in the identity of
//! this daemon protocol: the crate version and a digest of this crate's sources (the
//! supervisor ↔ daemon process messages are defined here). A supervisor execs another
//! build's `wsgi` (a daemon group on another Python) only when the two agree.

use sha2::{Digest, Sha256};

fn main() {
    pyo3_build_config::add_libpython_rpath_link_args();
    let mut files = Vec::new();
    rust_files(std::path::Path::new("src"), &mut files);
    files.sort();
    let mut digest = Sha256::new();
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
        // The path below src/, so a module's files in a folder of their own count too.
        let name = file.strip_prefix("src").unwrap_or(file).to_string_lossy();
        digest.update(name.as_bytes());
        digest.update([0]);
        digest.update(std::fs::read(file).expect("a source file"));
    }
    let hex: String = digest.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    println!(
        "cargo:rustc-env=WSGI_DAEMON_BUILD_ID={}+{hex}",
        std::env::var("CARGO_PKG_VERSION").unwrap_or_default()
    );
    println!("cargo:rerun-if-changed=src");
}

/// Every `.rs` file under `dir`, its sub-folders included.
fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    let entries = std::fs::read_dir(dir).expect("the crate's src folder");
    for path in entries.filter_map(Result::ok).map(|e| e.path()) {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}
