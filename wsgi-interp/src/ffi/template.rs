//! The part of an application call's environ that is the same on every call: built once per
//! interpreter as a dict, and copied for each request (`PyDict_Copy` of a dict copies its
//! table at once, where each `PyDict_SetItem` hashes and probes). About a third of the keys
//! of a plain GET are these.

use std::ptr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use pyo3::ffi;

use super::interp::Objects;
use super::{Obj, Stored, new_dict, new_str};
use crate::environ::{KEYS, Key, for_each_cgi, k, v};
use crate::wsgi::{CallOptions, RequestHead};

/// Room for the keys a request adds to the copy, so that adding them never grows its table.
const PRESIZE: usize = 64;

/// The `mod_wsgi.*` keys a template holds (without the prefix). A request whose extra
/// variables name one of them, or any `wsgi.*` or `apache.*` key, is built without the
/// template, so its extras keep the precedence they have over the computed keys.
const MOD_WSGI_KEYS: [&str; 7] = [
    "process_group",
    "application_group",
    "callable_object",
    "version",
    "queue_start",
    "daemon_start",
    "server_pid",
];

/// One interpreter's template: the dict and what it was built for.
pub(crate) struct EnvironTemplate {
    built_for: Signature,
    dict: Stored,
    /// Which dict this is ([`next_generation`]), for [`adopt`].
    generation: u64,
    /// The request variables the dict holds too ([`adopt`]).
    held: Arc<HeldValues>,
}

/// The CGI variables every request's environ has, in the order `for_each_cgi` gives them:
/// a template may hold them with one request's values ([`adopt`]), so that a copy for
/// another request with the same values needs no `PyDict_SetItem` for them (the same key
/// set again keeps its place, so the environ's order is the one it has without them).
pub(crate) const FIXED_KEYS: [usize; 14] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 15, 16];

/// The request variables a template holds ([`adopt`]), as the copy made of it holds them: the
/// [`FIXED_KEYS`], and the other known variables of the request it adopted (its headers, the
/// front's extras: `SCRIPT_FILENAME`, `DOCUMENT_ROOT`, `SERVER_ADDR`...), which a later
/// request may lack. Shared with the requests built from copies of the template (`Arc`: a
/// request takes a reference, not a copy of its 600-odd bytes).
pub(crate) struct HeldValues {
    /// Whether the template took a request's values yet.
    pub adopted: bool,
    /// How many requests in a row had to lose a held key ([`note_loss`]).
    pub losses: AtomicU32,
    /// The keys (bits of their indices) the template holds besides the [`FIXED_KEYS`]: a
    /// copy for a request that has not one of them must lose it.
    pub optional: u128,
    /// The addresses of its values by key index (0: not held). Only compared, never read: a
    /// copy of the template holds a reference to each, so while the copy lives no other
    /// object can have that address.
    pub values: [usize; KEYS.len()],
}

impl Default for HeldValues {
    fn default() -> Self {
        HeldValues {
            adopted: false,
            losses: AtomicU32::new(0),
            optional: 0,
            values: [0; KEYS.len()],
        }
    }
}

impl Clone for HeldValues {
    fn clone(&self) -> Self {
        HeldValues {
            adopted: self.adopted,
            losses: AtomicU32::new(self.losses.load(Ordering::Relaxed)),
            optional: self.optional,
            values: self.values,
        }
    }
}

impl HeldValues {
    /// Whether a copy holds exactly `value` for key `i` already.
    pub(crate) fn holds(&self, i: usize, value: *mut ffi::PyObject) -> bool {
        self.values
            .get(i)
            .is_some_and(|&held| held == value as usize)
    }
}

/// What a template's values depend on.
#[derive(PartialEq, Eq)]
struct Signature {
    callable: Box<str>,
    /// The application's `wsgi.errors` (the template holds a reference, so the address
    /// cannot be reused while it lives).
    errors: usize,
    multithread: bool,
    multiprocess: bool,
    run_once: bool,
    process_group: Box<str>,
    /// `mod_wsgi.queue_start`, `daemon_start` and `server_pid` are embedded mode's constant
    /// values, and in the template.
    local_stamps: bool,
}

impl Signature {
    fn matches(&self, call: &TemplateCall<'_>) -> bool {
        use crate::environ::same_bytes;
        same_bytes(self.callable.as_bytes(), call.callable.as_bytes())
            && self.errors == call.errors as usize
            && self.multithread == call.opts.multithread
            && self.multiprocess == call.opts.multiprocess
            && self.run_once == call.opts.run_once
            && same_bytes(
                self.process_group.as_bytes(),
                call.opts.process_group.as_bytes(),
            )
            && self.local_stamps == call.local_stamps
    }
}

/// An application call's inputs to its template.
pub(crate) struct TemplateCall<'a> {
    pub opts: &'a CallOptions,
    pub callable: &'a str,
    pub errors: *mut ffi::PyObject,
    /// Whether the request's stamps are embedded mode's constants ([`local_stamps`]).
    pub local_stamps: bool,
}

/// Whether `head`'s `mod_wsgi.queue_start`, `daemon_start` and `server_pid` are the constant
/// ones of a request this process accepted and runs itself.
pub(crate) fn local_stamps(objects: &Objects, head: &RequestHead) -> bool {
    let s = &head.stamps;
    s.queue_start_us == 0
        && s.daemon_start_us == 0
        && (s.server_pid == 0 || s.server_pid == objects.own_pid_number)
}

/// Whether an extra variable of `head` names a key a template would hold.
pub(crate) fn extras_shadow_template(head: &RequestHead) -> bool {
    head.extra.iter().any(|(name, _)| {
        // Most extras are CGI names in capitals: one byte tells (no `memcmp` for each).
        matches!(name.as_bytes().first(), Some(b'w' | b'a' | b'm'))
            && (name.starts_with("wsgi.")
                || name.starts_with("apache.")
                || name
                    .strip_prefix("mod_wsgi.")
                    .is_some_and(|rest| MOD_WSGI_KEYS.contains(&rest)))
    })
}

/// The constant keys of an application call and their values, in the environ's order.
///
/// # Safety
/// Attached to the interpreter owning `objects`.
pub(crate) unsafe fn constant_pairs(
    objects: &Objects,
    opts: &CallOptions,
    callable: *mut ffi::PyObject,
    process_group: *mut ffi::PyObject,
    errors: *mut ffi::PyObject,
) -> [(usize, *mut ffi::PyObject); 12] {
    // SAFETY: attached (caller's contract); only borrowed pointers of immortal or
    // interpreter-owned objects are read.
    unsafe {
        let boolean = |b: bool| if b { ffi::Py_True() } else { ffi::Py_False() };
        [
            (k::WSGI_VERSION, objects.wsgi_version.ptr()),
            (k::ERRORS, errors),
            (k::MULTITHREAD, boolean(opts.multithread)),
            (k::MULTIPROCESS, boolean(opts.multiprocess)),
            (k::RUN_ONCE, boolean(opts.run_once)),
            (k::INPUT_TERMINATED, ffi::Py_True()),
            (k::FILE_WRAPPER, objects.file_wrapper.ptr()),
            (k::PROCESS_GROUP, process_group),
            (k::APPLICATION_GROUP, objects.group_name.ptr()),
            (k::CALLABLE_OBJECT, callable),
            (k::MOD_WSGI_VERSION, objects.mod_wsgi_version.ptr()),
            (k::APACHE_VERSION, objects.apache_version.ptr()),
        ]
    }
}

/// A new environ holding `call`'s constant keys: a copy of the interpreter's template for
/// `call`, made first if it has none ([`TEMPLATES`]); with the template's generation and
/// what it holds of the request variables. `Ok(None)` when the templates are in use by
/// another thread at this moment (the caller builds the environ key by key); `Err` with a
/// Python error set when CPython failed.
///
/// # Safety
/// Attached to the interpreter owning `objects`.
pub(crate) unsafe fn copy_for(
    objects: &Objects,
    call: &TemplateCall<'_>,
) -> Result<Option<(Obj, u64, Arc<HeldValues>)>, ()> {
    // Nothing below runs Python code (dict and str operations on exact types only), so
    // holding the lock never waits on the GIL; try_lock keeps that true even if it changed.
    let Some(mut templates) = objects.environ_template.try_lock() else {
        return Ok(None);
    };
    // SAFETY: attached (caller's contract); the template's dict is this interpreter's.
    unsafe {
        let at = match templates.iter().position(|t| t.built_for.matches(call)) {
            Some(at) => at,
            None => {
                let dict = build(objects, call).ok_or(())?;
                if templates.len() == TEMPLATES {
                    templates.remove(0).release();
                }
                templates.push(EnvironTemplate {
                    built_for: Signature {
                        callable: call.callable.into(),
                        errors: call.errors as usize,
                        multithread: call.opts.multithread,
                        multiprocess: call.opts.multiprocess,
                        run_once: call.opts.run_once,
                        process_group: call.opts.process_group.as_str().into(),
                        local_stamps: call.local_stamps,
                    },
                    dict: Stored::new(dict),
                    generation: next_generation(),
                    held: Arc::default(),
                });
                templates.len() - 1
            }
        };
        let template = &templates[at];
        Obj::own(ffi::PyDict_Copy(template.dict.ptr()))
            .map(|copy| Some((copy, template.generation, Arc::clone(&template.held))))
            .ok_or(())
    }
}

/// How many templates an interpreter keeps: one for each application it serves (each has
/// its own `wsgi.errors`), up to this many, the oldest made going first beyond it. With one
/// alone, two applications taking turns in one interpreter (`wsgi serve --mount`'s default,
/// `%{GLOBAL}`) made a template again for every request.
const TEMPLATES: usize = 4;

/// A number no other template of the process had ([`adopt`] finds its template by it).
fn next_generation() -> u64 {
    static MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
}

/// Makes the template of generation `generation` hold the request variables of `environ`
/// (the environ of a request built from a copy of it, for `head` with `opts`), unless it
/// holds them already: first the [`FIXED_KEYS`], then the other known variables the request
/// had, in the environ's order, each with the value `environ` has. A fixed key `head`'s
/// extras name (an extra's value is not a request's own), or whose value is made anew for
/// each request (`PATH_INFO`, `REMOTE_PORT`...: never the same object again, and not to be
/// kept past its request), is held with an empty string that every request replaces: all
/// fourteen keep their place in every copy. Of the others, only those whose values are kept
/// from request to request ([`crate::environ::cacheable`]) are held, and a copy for a request
/// without one loses it ([`HeldValues::optional`]). Does nothing if the template is in use or
/// was let go meanwhile; a failure (no memory) leaves the template holding what it took so
/// far, and the request's environ, complete already, as it is.
///
/// # Safety
/// Attached to the interpreter owning `objects`; `environ` a dict of it.
pub(crate) unsafe fn adopt(
    objects: &Objects,
    generation: u64,
    environ: &Obj,
    head: &RequestHead,
    opts: &CallOptions,
) {
    let Some(mut templates) = objects.environ_template.try_lock() else {
        return;
    };
    let Some(template) = templates.iter_mut().find(|t| t.generation == generation) else {
        return;
    };
    if template.held.adopted {
        return;
    }
    // Requests built from the template before keep what they were given.
    let held = Arc::make_mut(&mut template.held);
    held.adopted = true;
    let named = crate::environ::known_keys_named(head);
    let cacheable = crate::environ::cacheable_mask();
    let fixed = FIXED_KEYS.iter().fold(0u128, |mask, &i| mask | 1 << i);
    // The other known keys, in the order the request gave them (each once).
    let mut others: smallvec::SmallVec<[usize; 32]> = smallvec::SmallVec::new();
    let mut seen = fixed;
    let _ = for_each_cgi::<()>(head, opts, |key, _| {
        if let Key::Known(i) = key {
            if seen & (1 << i) == 0 && crate::environ::cacheable(cacheable, i) {
                others.push(i);
            }
            seen |= 1 << i;
        }
        Ok(())
    });
    // SAFETY: attached (caller's contract); the values are borrowed from `environ`, which
    // lives across the loops, or interpreter-owned, and PyDict_SetItem takes its own
    // references.
    unsafe {
        let placeholder = objects.values[v::EMPTY].ptr();
        for i in FIXED_KEYS {
            let key = objects.keys[i].ptr();
            let own = named & (1 << i) == 0 && crate::environ::cacheable(cacheable, i);
            let found = match own {
                true => ffi::PyDict_GetItemWithError(environ.as_ptr(), key),
                false => ptr::null_mut(),
            };
            if own && found.is_null() {
                // Not there (it always is): held empty, replaced as any placeholder.
                ffi::PyErr_Clear();
            }
            let value = if found.is_null() { placeholder } else { found };
            if ffi::PyDict_SetItem(template.dict.ptr(), key, value) != 0 {
                ffi::PyErr_Clear();
                return;
            }
            if !found.is_null() {
                held.values[i] = found as usize;
            }
        }
        for i in others {
            let key = objects.keys[i].ptr();
            let found = ffi::PyDict_GetItemWithError(environ.as_ptr(), key);
            if found.is_null() {
                // Not there (it always is): not held.
                ffi::PyErr_Clear();
                continue;
            }
            if ffi::PyDict_SetItem(template.dict.ptr(), key, found) != 0 {
                ffi::PyErr_Clear();
                return;
            }
            held.optional |= 1 << i;
            held.values[i] = found as usize;
        }
    }
}

/// How many requests in a row may lose a key their template holds before the template is
/// made anew, to adopt the request after ([`note_loss`]).
const LOSSES_BEFORE_READOPTING: u32 = 16;

/// Counts a request built from a copy of the template of generation `generation` (holding
/// `held`) that had to lose `lost` of its held keys: the template adopted a request unlike
/// those that came after it (a health check's `User-Agent` and `Accept` that a load balancer's
/// requests never send, say), and each deletion costs what the template saves. After
/// [`LOSSES_BEFORE_READOPTING`] such requests in a row, the template is let go, and the next
/// request makes it anew and is adopted. A request that lost nothing ends the run.
///
/// # Safety
/// Attached to the interpreter owning `objects`.
pub(crate) unsafe fn note_loss(objects: &Objects, generation: u64, held: &HeldValues, lost: bool) {
    if !lost {
        // Written only when a run was under way: a template that fits writes nothing.
        if held.losses.load(Ordering::Relaxed) != 0 {
            held.losses.store(0, Ordering::Relaxed);
        }
        return;
    }
    if held.losses.fetch_add(1, Ordering::Relaxed) + 1 < LOSSES_BEFORE_READOPTING {
        return;
    }
    let Some(mut templates) = objects.environ_template.try_lock() else {
        return;
    };
    if let Some(at) = templates.iter().position(|t| t.generation == generation) {
        // SAFETY: attached (caller's contract); the template's dict is this interpreter's,
        // and the copies made of it hold their own references to its values.
        unsafe { templates.remove(at).release() };
    }
}

/// Makes the template dict for `call`.
///
/// # Safety
/// Attached to the interpreter owning `objects`.
unsafe fn build(objects: &Objects, call: &TemplateCall<'_>) -> Option<Obj> {
    // SAFETY: attached (caller's contract); PyDict_SetItem takes its own references.
    unsafe {
        let dict = new_dict(PRESIZE)?;
        let owned_group;
        let process_group = if call.opts.process_group.is_empty() {
            objects.values[v::EMPTY].ptr()
        } else {
            owned_group = new_str(&call.opts.process_group)?;
            owned_group.as_ptr()
        };
        let owned_callable;
        let callable = if call.callable == "application" {
            objects.values[v::APPLICATION].ptr()
        } else {
            owned_callable = new_str(call.callable)?;
            owned_callable.as_ptr()
        };
        let mut pairs =
            constant_pairs(objects, call.opts, callable, process_group, call.errors).to_vec();
        if call.local_stamps {
            pairs.extend([
                (k::QUEUE_START, objects.zero_seconds.ptr()),
                (k::DAEMON_START, objects.zero_seconds.ptr()),
                (k::SERVER_PID, objects.own_pid.ptr()),
            ]);
        }
        for (i, value) in pairs {
            if ffi::PyDict_SetItem(dict.as_ptr(), objects.keys[i].ptr(), value) != 0 {
                return None;
            }
        }
        Some(dict)
    }
}

impl EnvironTemplate {
    /// Drops the template's dict.
    ///
    /// # Safety
    /// Attached to the interpreter that owns it.
    pub(crate) unsafe fn release(self) {
        // SAFETY: attached to the owner (caller's contract).
        unsafe { self.dict.release() }
    }
}
