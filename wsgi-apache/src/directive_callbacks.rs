//! Apache's directive callbacks, fed to wsgi-config's builder: the same code, and so the same
//! messages, as `wsgi check`.

use std::ffi::{CString, c_char, c_int};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use wsgi_config::builder::{ContainerDecl, Context, VirtualHostDecl};
use wsgi_config::reader::{Directive, Span, split_arguments};
use wsgi_config::{Config, ConfigBuilder};

use crate::ffi::{RawSection, ffi_fn, text, to_c};

/// The configuration being read (between `pre_config` and the end of the read).
static BUILDER: Mutex<Option<ConfigBuilder>> = Mutex::new(None);

/// The configuration of the last complete read.
static CONFIG: Mutex<Option<Arc<Config>>> = Mutex::new(None);

/// Apache's `ServerRoot` (relative script paths resolve against it, `.htaccess` ones too).
static SERVER_ROOT: Mutex<Option<PathBuf>> = Mutex::new(None);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) fn span(file: &str, line: c_int) -> Span {
    Span {
        file: Arc::from(Path::new(file)),
        line: u32::try_from(line).unwrap_or(0),
    }
}

ffi_fn! {
    /// Starts a new configuration read (Apache's `pre_config`).
    ///
    /// # Safety
    /// `server_root` is NULL or a NUL-terminated string.
    unsafe fn wsgi_rs_reset(server_root: *const c_char) {
        // SAFETY: the export's contract.
        let root = unsafe { text(server_root) };
        *lock(&SERVER_ROOT) = Some(PathBuf::from(&root));
        *lock(&BUILDER) = Some(ConfigBuilder::new(PathBuf::from(root)));
    } ?= "pre_config", |_| ()
}

ffi_fn! {
    /// One mod_wsgi directive. Returns NULL when accepted, else the message (without
    /// file:line, which Apache prints itself), to be freed with [`wsgi_rs_free`].
    ///
    /// # Safety
    /// Strings are NULL or NUL-terminated; `sections` points to `count` valid entries.
    unsafe fn wsgi_rs_directive(
        name: *const c_char,
        args: *const c_char,
        file: *const c_char,
        line: c_int,
        sections: *const RawSection,
        count: c_int,
        htaccess: c_int,
    ) -> *mut c_char {
        // SAFETY: the export's contract covers every pointer.
        let (name, args, file) = unsafe { (text(name), text(args), text(file)) };
        let raw: &[RawSection] = match usize::try_from(count) {
            Ok(count) if count > 0 && !sections.is_null() => {
                // SAFETY: `sections` points to `count` initialised entries for the call.
                unsafe { std::slice::from_raw_parts(sections, count) }
            }
            _ => &[],
        };
        let mut decls = Vec::with_capacity(raw.len());
        for s in raw {
            // SAFETY: each entry's strings are valid for the call (the export's contract).
            let (kind, args, file) = unsafe { (text(s.kind), text(s.args), text(s.file)) };
            decls.push((kind, args, span(&file, s.line)));
        }
        match apply(&name, &args, span(&file, line), decls, htaccess != 0) {
            Ok(()) => std::ptr::null_mut(),
            Err(message) => to_c(message),
        }
    } ?= "a directive", to_c
}

fn apply(
    name: &str,
    args: &str,
    at: Span,
    sections: Vec<(String, String, Span)>,
    htaccess: bool,
) -> Result<(), String> {
    let mut ctx = Context {
        htaccess,
        ..Context::default()
    };
    for (kind, args, span) in sections {
        let words = split_arguments(&args)?;
        if kind.eq_ignore_ascii_case("VirtualHost") {
            ctx.virtual_host = Some(VirtualHostDecl {
                addresses: words,
                span,
            });
        } else {
            ctx.containers.push(ContainerDecl {
                kind,
                args: words,
                span,
            });
        }
    }
    let directive = Directive {
        name: name.to_string(),
        args: split_arguments(args)?,
        span: at,
    };
    let mut builder = lock(&BUILDER);
    let builder = builder
        .as_mut()
        .ok_or("mod_wsgi_rs was not initialised before its directives were read")?;
    let done = if name.eq_ignore_ascii_case("<WSGIInterpreterOptions") {
        builder.interpreter_options(&ctx, &directive.args, &directive.span)
    } else {
        builder.directive(&ctx, &directive)
    };
    done.map_err(|errors| {
        // Every problem of the line, in one message (Apache shows a directive's message on one
        // line, with the line's number once).
        errors
            .iter()
            .map(|e| format!("{}: {}", e.subject, e.kind))
            .collect::<Vec<_>>()
            .join("; ")
    })
}

ffi_fn! {
    /// The `ServerName` and `ServerAlias` of a server (a virtual host when `vhost_file` is
    /// set), which Apache's core module reads and wsgi-rs needs for routing and group
    /// visibility.
    ///
    /// # Safety
    /// Strings are NULL or NUL-terminated; `aliases` points to `alias_count` such strings.
    unsafe fn wsgi_rs_server_name(
        vhost_file: *const c_char,
        vhost_line: c_int,
        name: *const c_char,
        aliases: *const *const c_char,
        alias_count: c_int,
    ) {
        // SAFETY: the export's contract covers every pointer.
        let (file, name) = unsafe { (text(vhost_file), text(name)) };
        let mut alias_names = Vec::new();
        if let Ok(count) = usize::try_from(alias_count) {
            if count > 0 && !aliases.is_null() {
                // SAFETY: `aliases` points to `alias_count` string pointers.
                for &a in unsafe { std::slice::from_raw_parts(aliases, count) } {
                    // SAFETY: each is NULL or a valid string.
                    alias_names.push(unsafe { text(a) });
                }
            }
        }
        server_name(&file, vhost_line, name, alias_names);
    } ?= "server names", |_| ()
}

/// Feeds a server's `ServerName` and `ServerAlias` to the builder.
fn server_name(file: &str, vhost_line: c_int, name: String, aliases: Vec<String>) {
    let ctx = Context {
        virtual_host: (!file.is_empty()).then(|| VirtualHostDecl {
            addresses: Vec::new(),
            span: span(file, vhost_line),
        }),
        ..Context::default()
    };
    let at = ctx
        .virtual_host
        .as_ref()
        .map_or_else(|| span("(server)", 0), |v| v.span.clone());
    let mut builder = lock(&BUILDER);
    let Some(builder) = builder.as_mut() else {
        return;
    };
    let mut feed = |directive: &str, args: Vec<String>| {
        let d = Directive {
            name: directive.to_string(),
            args,
            span: at.clone(),
        };
        // Non-mod_wsgi directives are never refused.
        let _ = builder.directive(&ctx, &d);
    };
    feed("ServerName", vec![name]);
    if !aliases.is_empty() {
        feed("ServerAlias", aliases);
    }
}

ffi_fn! {
    /// Apache's `User` and `Group` (read by its unixd module, not by us).
    ///
    /// # Safety
    /// Strings are NULL or NUL-terminated.
    unsafe fn wsgi_rs_server_user(user: *const c_char, group: *const c_char) {
        // SAFETY: the export's contract.
        let (user, group) = unsafe { (text(user), text(group)) };
        let mut builder = lock(&BUILDER);
        let Some(builder) = builder.as_mut() else {
            return;
        };
        for (name, value) in [("User", user), ("Group", group)] {
            if !value.is_empty() && !value.starts_with('#') {
                let d = Directive {
                    name: name.to_string(),
                    args: vec![value],
                    span: span("(server)", 0),
                };
                // Non-mod_wsgi directives are never refused.
                let _ = builder.directive(&Context::default(), &d);
            }
        }
    } ?= "server user", |_| ()
}

ffi_fn! {
    /// Ends the configuration read: the checks that need every directive. Returns NULL when
    /// the configuration is accepted, else every error (`file:line: ...`, one per line).
    fn wsgi_rs_finish() -> *mut c_char {
        let Some(builder) = lock(&BUILDER).take() else {
            return std::ptr::null_mut();
        };
        match builder.finish() {
            Ok(config) => {
                let errors = python_home_errors(&config);
                if !errors.is_empty() {
                    return to_c(errors.join("\n"));
                }
                *lock(&CONFIG) = Some(Arc::new(config));
                std::ptr::null_mut()
            }
            Err(errors) => to_c(
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
        }
    } ?= "configuration check", to_c
}

/// Apache's `ServerRoot`, as the configuration read began.
pub(crate) fn server_root() -> PathBuf {
    lock(&SERVER_ROOT)
        .clone()
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// The configuration of the last complete read, for request handling.
pub(crate) fn current_config() -> Option<Arc<Config>> {
    lock(&CONFIG).clone()
}

/// Every python-home the configuration names, inspected as `wsgi check` does: a venv made by
/// another Python, or `.../bin/python` given as the home, refuses the start, before any request.
fn python_home_errors(config: &Config) -> Vec<String> {
    let embedded = wsgi_interp::embedded::embedded_python();
    let mut errors: Vec<String> = wsgi_config::report::per_interpreter_gil_error(config, &embedded)
        .into_iter()
        .collect();
    for (home, at) in wsgi_config::report::python_homes(config) {
        let daemon_home = config
            .daemons
            .iter()
            .any(|d| d.options.python_home.as_ref() == Some(&home));
        // A daemon group's venv of another Python runs on the wsgi installed in it.
        let report = if daemon_home {
            match wsgi_daemon::program::inspect_daemon_home(&home, &embedded) {
                Ok(found) => found.report,
                Err(e) => {
                    errors.push(format!("{at}: python-home {}: {e}", home.display()));
                    continue;
                }
            }
        } else {
            wsgi_config::venv::inspect(&home, &embedded)
        };
        for problem in report.errors() {
            errors.push(format!("{at}: python-home {}: {problem}", home.display()));
        }
    }
    errors
}

ffi_fn! {
    /// Frees a string returned by this module.
    ///
    /// # Safety
    /// `text` is NULL or was returned by this module and not freed yet.
    unsafe fn wsgi_rs_free(text: *mut c_char) {
        if !text.is_null() {
            // SAFETY: it came from CString::into_raw in this module (the export's contract).
            drop(unsafe { CString::from_raw(text) });
        }
    } ?= "freeing a string", |_| ()
}
