//! Links libpython with a run path, so the binary loads the CPython it was built against
//! and not another libpython with the same soname, and bakes that CPython's facts in.

fn main() {
    pyo3_build_config::add_libpython_rpath_link_args();
    pyo3_build_config::use_pyo3_cfgs();
    let config = pyo3_build_config::get();
    let version = config.version();
    println!(
        "cargo:rustc-env=WSGI_BUILD_PYTHON_VERSION={}.{}",
        version.major, version.minor
    );
    if let Some(executable) = config.executable() {
        println!("cargo:rustc-env=WSGI_BUILD_PYTHON_EXECUTABLE={executable}");
    }
    if let Some(lib_dir) = config.lib_dir() {
        println!("cargo:rustc-env=WSGI_BUILD_PYTHON_LIB_DIR={lib_dir}");
    }
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
}
