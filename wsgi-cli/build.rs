//! Links libpython with a run path, so the binaries load the CPython they were built against
//! and not another libpython with the same soname (interp.md §6.3).

fn main() {
    pyo3_build_config::add_libpython_rpath_link_args();
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
}
