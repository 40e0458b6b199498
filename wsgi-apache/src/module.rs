//! The `module` structure Apache loads (`LoadModule wsgi_rs_module ...`), mirrored from
//! `http_config.h`. It is defined here rather than in C because a cdylib exports only the
//! symbols Rust defines; `src/shim.c` asserts the same offsets, so the two sides agree.

use std::ffi::{c_char, c_int, c_ulong, c_void};
use std::mem::offset_of;

include!(concat!(env!("OUT_DIR"), "/mmn.rs"));

/// An APR pool, opaque here.
#[repr(C)]
pub struct AprPool {
    _private: [u8; 0],
}

/// Apache's `command_rec` table, opaque here (built by `src/shim.c`).
#[repr(C)]
pub struct CommandTable {
    _private: [u8; 0],
}

/// `module` from `http_config.h` (Apache 2.4).
#[repr(C)]
pub struct Module {
    version: c_int,
    minor_version: c_int,
    module_index: c_int,
    name: *const c_char,
    dynamic_load_handle: *mut c_void,
    next: *mut Module,
    magic: c_ulong,
    rewrite_args: Option<unsafe extern "C" fn(*mut c_void)>,
    create_dir_config: Option<unsafe extern "C" fn(*mut AprPool, *mut c_char) -> *mut c_void>,
    merge_dir_config:
        Option<unsafe extern "C" fn(*mut AprPool, *mut c_void, *mut c_void) -> *mut c_void>,
    create_server_config: Option<unsafe extern "C" fn(*mut AprPool, *mut c_void) -> *mut c_void>,
    merge_server_config:
        Option<unsafe extern "C" fn(*mut AprPool, *mut c_void, *mut c_void) -> *mut c_void>,
    cmds: *const CommandTable,
    register_hooks: Option<unsafe extern "C" fn(*mut AprPool)>,
    flags: c_int,
}

const _: () = {
    assert!(offset_of!(Module, cmds) == 88);
    assert!(offset_of!(Module, register_hooks) == 96);
    assert!(size_of::<Module>() == 112);
};

unsafe extern "C" {
    /// The command table (`src/shim.c`, generated from wsgi-config's directive table).
    static wsgi_rs_cmds: CommandTable;
    /// Registers the configuration hooks (`src/shim.c`).
    fn wsgi_rs_register_hooks(pool: *mut AprPool);
    /// A directory configuration: which access and auth scripts apply (`src/shim.c`).
    fn wsgi_rs_create_dir_config(pool: *mut AprPool, dir: *mut c_char) -> *mut c_void;
    /// Merges two directory configurations, the inner one winning (`src/shim.c`).
    fn wsgi_rs_merge_dir_config(
        pool: *mut AprPool,
        base: *mut c_void,
        add: *mut c_void,
    ) -> *mut c_void;
}

/// The module Apache loads. Apache writes into it (`module_index`, `next`, the load handle) while
/// it loads and registers the module, so it is a `static mut`; Rust code never touches it.
#[unsafe(no_mangle)]
pub static mut wsgi_rs_module: Module = Module {
    version: MMN_MAJOR,
    minor_version: MMN_MINOR,
    module_index: -1,
    name: c"mod_wsgi_rs.c".as_ptr(),
    dynamic_load_handle: std::ptr::null_mut(),
    next: std::ptr::null_mut(),
    magic: MAGIC_COOKIE as c_ulong,
    rewrite_args: None,
    create_dir_config: Some(wsgi_rs_create_dir_config),
    merge_dir_config: Some(wsgi_rs_merge_dir_config),
    create_server_config: None,
    merge_server_config: None,
    cmds: &raw const wsgi_rs_cmds,
    register_hooks: Some(wsgi_rs_register_hooks),
    flags: 0,
};
