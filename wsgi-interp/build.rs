//! Links libpython with a run path, so the binary loads the CPython it was built against
//! and not another libpython with the same soname, and bakes that CPython's facts in.
//!
//! When the build Python is a virtual environment's (`pip install` runs the build with the
//! venv's interpreter), the facts baked in are those of its base installation: the venv is
//! where the program is installed, not part of the Python it embeds.

use std::process::Command;

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
        let base = base_executable(executable).unwrap_or_else(|| executable.to_string());
        println!("cargo:rustc-env=WSGI_BUILD_PYTHON_EXECUTABLE={base}");
    }
    if let Some(lib_dir) = config.lib_dir() {
        println!("cargo:rustc-env=WSGI_BUILD_PYTHON_LIB_DIR={lib_dir}");
    }
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
}

/// The interpreter of the installation `executable` belongs to: itself, or for a virtual
/// environment's interpreter the base one (`sys._base_executable`, Python 3.11+; before that
/// `sys.base_prefix`'s `bin/pythonX.Y`).
fn base_executable(executable: &str) -> Option<String> {
    let script = "import os, sys\n\
                  if sys.prefix == sys.base_prefix:\n    print(sys.executable)\n\
                  else:\n    b = getattr(sys, '_base_executable', '')\n    \
                  c = os.path.join(sys.base_prefix, 'bin', 'python%d.%d' % sys.version_info[:2])\n    \
                  print(b if b and os.path.dirname(os.path.dirname(b)) == sys.base_prefix else c)";
    let out = Command::new(executable)
        .args(["-c", script])
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let line = text.trim();
    (out.status.success() && !line.is_empty()).then(|| line.to_string())
}
