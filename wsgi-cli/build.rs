//! Links libpython with a run path, so the binaries load the CPython they were built against
//! and not another libpython with the same soname: without one (no RPATH or RUNPATH), a
//! binary built against a pyenv 3.11.7 ran on Debian's 3.11.2 libpython from
//! `/lib/x86_64-linux-gnu`, which the loader found first. `LD_LIBRARY_PATH` still wins.

fn main() {
    pyo3_build_config::add_libpython_rpath_link_args();
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
}
