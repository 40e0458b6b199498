//! Which CPython this build embeds, known without starting it: the version of the libpython
//! actually loaded (`Py_GetVersion`, safe before initialisation), the file it was loaded from,
//! and the installation it was built against.

use std::ffi::{CStr, c_void};
use std::path::{Path, PathBuf};

use pyo3::ffi;
use wsgi_config::venv::{EmbeddedPython, PythonVersion};

/// The Python executable of the installation this crate was built against (`PYO3_PYTHON`).
pub const BUILD_PYTHON_EXECUTABLE: &str = env!("WSGI_BUILD_PYTHON_EXECUTABLE");

/// Whether the CPython built against is a free-threaded build (`python3.13t`: no GIL), what
/// mod_wsgi 6's `WSGIFreeThreading On` asks for.
pub const FREE_THREADED_BUILD: bool = cfg!(Py_GIL_DISABLED);

/// The `X.Y` version this crate was built against.
pub const BUILD_PYTHON_VERSION: &str = env!("WSGI_BUILD_PYTHON_VERSION");

/// The version string of the loaded libpython, such as `3.11.2 (main, ...) [GCC 12.2.0]`.
pub fn runtime_version() -> String {
    // SAFETY: Py_GetVersion may be called before Py_Initialize; it returns a pointer to a
    // static NUL-terminated string owned by libpython, valid for the life of the process.
    let version = unsafe { CStr::from_ptr(ffi::Py_GetVersion()) };
    version.to_string_lossy().into_owned()
}

/// The file the dynamic loader took libpython from, if it can tell.
pub fn loaded_libpython() -> Option<PathBuf> {
    let mut info = std::mem::MaybeUninit::<libc::Dl_info>::zeroed();
    let symbol = ffi::Py_GetVersion as *const c_void;
    // SAFETY: dladdr only reads the loader's tables for an address in this process; `info`
    // is a valid, writable Dl_info.
    let found = unsafe { libc::dladdr(symbol, info.as_mut_ptr()) };
    if found == 0 {
        return None;
    }
    // SAFETY: dladdr returned non-zero, so it filled `info`.
    let info = unsafe { info.assume_init() };
    if info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dli_fname is a NUL-terminated path owned by the loader, valid while the object
    // stays loaded (libpython is never unloaded).
    let name = unsafe { CStr::from_ptr(info.dli_fname) };
    let path = PathBuf::from(name.to_string_lossy().into_owned());
    Some(path.canonicalize().unwrap_or(path))
}

/// The virtual environment this program is installed in, if any: `pip install wsgi-rs` puts
/// the `wsgi` program in `<venv>/bin/`, and that venv is then the default python-home (the
/// program runs applications on the Python of the venv it is installed into). A program run
/// through a symbolic link counts where the link points.
pub fn installed_venv() -> Option<PathBuf> {
    venv_of_program(&std::env::current_exe().ok()?)
}

/// `<root>` when `program` is `<root>/bin/NAME` and `<root>/pyvenv.cfg` exists.
fn venv_of_program(program: &Path) -> Option<PathBuf> {
    let bin = program.parent()?;
    let root = bin.parent()?;
    (bin.file_name()? == "bin" && root.join("pyvenv.cfg").is_file()).then(|| root.to_path_buf())
}

/// The embedded Python, as venv inspection needs it.
pub fn embedded_python() -> EmbeddedPython {
    let executable = PathBuf::from(BUILD_PYTHON_EXECUTABLE);
    let prefix = executable
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/usr"));
    let version = PythonVersion::parse(&runtime_version())
        .or_else(|| PythonVersion::parse(BUILD_PYTHON_VERSION))
        .unwrap_or(PythonVersion::new(3, 0, 0));
    EmbeddedPython {
        version,
        prefix,
        executable,
        libpython: loaded_libpython(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_in_a_venv_bin_folder_is_installed_there() {
        let dir = tempfile::tempdir().unwrap();
        let venv = dir.path().join("v");
        std::fs::create_dir_all(venv.join("bin")).unwrap();
        let program = venv.join("bin/wsgi");
        assert_eq!(venv_of_program(&program), None, "no pyvenv.cfg yet");
        std::fs::write(venv.join("pyvenv.cfg"), "home = /usr/bin\n").unwrap();
        assert_eq!(venv_of_program(&program), Some(venv.clone()));
        assert_eq!(venv_of_program(&venv.join("sbin/wsgi")), None);
        // The test binary itself is not in a venv.
        assert_eq!(installed_venv(), None);
    }

    #[test]
    fn the_build_python_is_an_installation_not_a_venv() {
        let prefix = Path::new(BUILD_PYTHON_EXECUTABLE)
            .parent()
            .and_then(Path::parent)
            .unwrap();
        assert!(!prefix.join("pyvenv.cfg").exists(), "{}", prefix.display());
    }

    #[test]
    fn knows_the_loaded_python_without_starting_it() {
        let py = embedded_python();
        assert_eq!(py.version.short(), BUILD_PYTHON_VERSION);
        let lib = py.libpython.expect("libpython is found");
        assert!(
            lib.to_string_lossy().contains("libpython"),
            "{}",
            lib.display()
        );
        // The rpath makes the loader take the build installation's libpython.
        let lib_dir = Path::new(env!("WSGI_BUILD_PYTHON_LIB_DIR"))
            .canonicalize()
            .unwrap();
        assert!(
            lib.starts_with(&lib_dir),
            "{} not in {}",
            lib.display(),
            lib_dir.display()
        );
    }
}
