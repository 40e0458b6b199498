//! WSGI settings from `.htaccess` files (`AllowOverride FileInfo`: `WSGICallableObject`,
//! `WSGIPassAuthorization`, `WSGIScriptReloading`, `WSGIChunkedRequest`, `WSGIMapHEADToGET`,
//! `WSGITrustedProxyHeaders`, ...). Apache reads those files per request, after the
//! configuration is complete, so their lines never reach the configuration builder: each one
//! becomes a settings fragment here, its id goes into Apache's per-directory configuration
//! (`src/shim.c`), Apache merges those as it merges any directory configuration, and the
//! request's merged fragment is laid over the routed settings before the app runs.
//!
//! Fragments are interned: the same line over the same fragment, or the same two fragments
//! merged, give the same id again, so re-reading an `.htaccess` file on every request does not
//! grow the tables (they grow only with distinct file contents).

use std::collections::HashMap;
use std::ffi::{c_char, c_int};
use std::sync::{Arc, Mutex, MutexGuard};

use wsgi_config::ConfigBuilder;
use wsgi_config::model::WsgiSettings;
use wsgi_config::reader::{Directive, split_arguments};
use wsgi_config::route::Route;

use crate::directive_callbacks::{server_root, span};
use crate::ffi::{Request, ffi_fn, text, to_c, write_out};

#[derive(Default)]
struct Fragments {
    settings: Vec<Arc<WsgiSettings>>,
    by_line: HashMap<(c_int, String, String), c_int>,
    merged: HashMap<(c_int, c_int), c_int>,
}

static FRAGMENTS: Mutex<Option<Fragments>> = Mutex::new(None);

fn fragments() -> MutexGuard<'static, Option<Fragments>> {
    FRAGMENTS.lock().unwrap_or_else(|p| p.into_inner())
}

impl Fragments {
    fn get(&self, id: c_int) -> Option<Arc<WsgiSettings>> {
        usize::try_from(id)
            .ok()
            .and_then(|i| self.settings.get(i).cloned())
    }

    fn add(&mut self, settings: WsgiSettings) -> c_int {
        self.settings.push(Arc::new(settings));
        c_int::try_from(self.settings.len() - 1).unwrap_or(-1)
    }
}

/// One `.htaccess` line: the fragment `current` (-1: none yet) with the line laid over it.
fn line(name: &str, args: &str, file: &str, line: c_int, current: c_int) -> Result<c_int, String> {
    let key = (current, name.to_string(), args.to_string());
    if let Some(&id) = fragments()
        .get_or_insert_with(Fragments::default)
        .by_line
        .get(&key)
    {
        return Ok(id);
    }
    let base = fragments()
        .get_or_insert_with(Fragments::default)
        .get(current)
        .map(|s| (*s).clone())
        .unwrap_or_default();
    let directive = Directive {
        name: name.to_string(),
        args: split_arguments(args)?,
        span: span(file, line),
    };
    let settings =
        ConfigBuilder::htaccess_settings(&server_root(), &base, &directive).map_err(|errors| {
            errors
                .iter()
                .map(|e| format!("{}: {}", e.subject, e.kind))
                .collect::<Vec<_>>()
                .join("; ")
        })?;
    let mut table = fragments();
    let table = table.get_or_insert_with(Fragments::default);
    let id = table.add(settings);
    table.by_line.insert(key, id);
    Ok(id)
}

ffi_fn! {
    /// A mod_wsgi directive read from an `.htaccess` file: sets `*id` to the fragment of the
    /// directory (`current` with this line over it). Returns NULL when accepted, else the
    /// message (Apache adds file:line and answers 500, as for any bad `.htaccess` line), to be
    /// freed with `wsgi_rs_free`.
    ///
    /// # Safety
    /// Strings are NULL or NUL-terminated; `id` is NULL or points to a writable `int`.
    unsafe fn wsgi_rs_htaccess_directive(
        name: *const c_char,
        args: *const c_char,
        file: *const c_char,
        line_number: c_int,
        current: c_int,
        id: *mut c_int,
    ) -> *mut c_char {
        // SAFETY: the export's contract covers the strings.
        let (name, args, file) = unsafe { (text(name), text(args), text(file)) };
        match line(&name, &args, &file, line_number, current) {
            Ok(new) => {
                // SAFETY: the export's contract: `id` is NULL or writable.
                unsafe { write_out(id, new) };
                std::ptr::null_mut()
            }
            Err(message) => to_c(message),
        }
    } ?= "an .htaccess directive", to_c
}

ffi_fn! {
    /// Apache's merge of two directory configurations that both hold a fragment: `add` (the
    /// inner directory's) laid over `base`.
    fn wsgi_rs_merge_settings(base: c_int, add: c_int) -> c_int {
        let mut table = fragments();
        let table = table.get_or_insert_with(Fragments::default);
        if let Some(&id) = table.merged.get(&(base, add)) {
            return id;
        }
        let (Some(outer), Some(inner)) = (table.get(base), table.get(add)) else {
            return add;
        };
        let mut settings = (*outer).clone();
        settings.merge(&inner);
        let id = table.add(settings);
        table.merged.insert((base, add), id);
        id
    } ?= "merging .htaccess settings", |_| add
}

/// Lays the settings of the request's `.htaccess` files over its route.
pub(crate) fn apply(r: &Request<'_>, route: &mut Route) {
    let Some(id) = r.settings_id() else {
        return;
    };
    let Some(fragment) = fragments().as_ref().and_then(|t| t.get(id)) else {
        return;
    };
    std::sync::Arc::make_mut(&mut route.settings).merge(&fragment);
    if let Some(callable) = &fragment.callable_object {
        route.callable_object = match callable
            .strip_prefix("%{ENV:")
            .and_then(|v| v.strip_suffix('}'))
        {
            Some(var) => std::env::var(var).unwrap_or_else(|_| "application".to_string()),
            None => callable.clone(),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_merges_are_interned() {
        let a = line("WSGICallableObject", "app2", ".htaccess", 1, -1).unwrap();
        assert_eq!(
            line("WSGICallableObject", "app2", ".htaccess", 1, -1).unwrap(),
            a
        );
        let b = line("WSGIPassAuthorization", "On", ".htaccess", 2, a).unwrap();
        let merged = wsgi_rs_merge_settings(a, b);
        assert_eq!(wsgi_rs_merge_settings(a, b), merged);
        let table = fragments();
        let m = table.as_ref().unwrap().get(merged).unwrap();
        assert_eq!(m.callable_object.as_deref(), Some("app2"));
        assert_eq!(m.pass_authorization, Some(true));
        drop(table);
        let refused = line("WSGIProcessGroup", "shop", ".htaccess", 3, b).unwrap_err();
        assert!(refused.starts_with("WSGIProcessGroup: "), "{refused}");
    }
}
