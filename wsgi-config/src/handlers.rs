//! Apache's handlers for the files `Alias`, `AliasMatch` and `DocumentRoot` map requests to,
//! as mod_mime (`AddHandler`, `RemoveHandler`) and core (`SetHandler`) give them and mod_wsgi
//! runs them:
//!
//! * a file whose handler is `wsgi-script` runs as a WSGI script, where `Options ExecCGI`
//!   allows it (403 elsewhere, as mod_wsgi answers), with `SCRIPT_NAME` the URL up to the file
//!   and `PATH_INFO` the rest, in the process and application groups of where it is;
//! * a handler name that a `WSGIHandlerScript` registers where the file is runs that script's
//!   `handle_request`, with `SCRIPT_FILENAME` the file asked for (the script decides what a
//!   missing file means);
//! * anything else is served as a file, as Apache's default handler does (handler names no
//!   `WSGIHandlerScript` registers anywhere are refused by [`crate::serve_support`]).
//!
//! The Apache module applies `AddHandler` and `SetHandler` through Apache itself, and routes
//! what Apache's directory walk found with the same rules: [`Config::wsgi_script_route`] for
//! `wsgi-script` files (and `WSGIScriptAlias` requests), [`Config::handler_script_route`] for
//! `WSGIHandlerScript` names.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::model::{AliasOptions, Config, HandlerScript, WsgiSettings};
use crate::route::{
    AliasTarget, Found, Placement, Requester, Route, RouteError, RouteHandler, RouteRequest,
    ScriptVia, alias_folder, confined_script, latin1,
};

/// mod_wsgi's handler name: the file is a WSGI script.
pub const WSGI_SCRIPT: &str = "wsgi-script";

/// The handler Apache gives a file named `file_name` under `settings`: `SetHandler` (unless
/// `None`), else the handler `AddHandler` maps the last of the file's extensions to that has
/// one. As mod_mime: the name's first part is never an extension (nor are leading dots, so
/// `.wsgi` has none), every later part is one in any position (`app.wsgi.bak` is a `.wsgi`
/// file), matched case-insensitively. A folder (`folder` true) takes only `SetHandler`.
pub fn handler_of<'s>(
    settings: &'s WsgiSettings,
    file_name: &[u8],
    folder: bool,
) -> Option<&'s str> {
    if let Some(set) = &settings.set_handler {
        if set.value != "none" {
            return Some(&set.value);
        }
    }
    if folder || settings.add_handlers.is_empty() {
        return None;
    }
    let start = file_name
        .iter()
        .position(|&b| b != b'.')
        .unwrap_or(file_name.len());
    let name = &file_name[start..];
    let dot = name.iter().position(|&b| b == b'.')?;
    let mut handler = None;
    for ext in name[dot + 1..]
        .split(|&b| b == b'.')
        .filter(|e| !e.is_empty())
    {
        let found = settings
            .add_handlers
            .iter()
            .find(|(e, _)| e.as_bytes().eq_ignore_ascii_case(ext));
        if let Some((_, h)) = found {
            handler = Some(h.value.as_str());
        }
    }
    handler
}

/// What serves a file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FileHandler<'s> {
    /// Apache's default handler: the file as it is.
    Default,
    /// mod_wsgi's `wsgi-script`: the file is a WSGI script.
    WsgiScript,
    /// A `WSGIHandlerScript` (the innermost that registers the name where the file is).
    Script(&'s HandlerScript),
}

/// What serves the file `file_name` (a folder when `folder`) under `settings`: a handler name
/// that no `WSGIHandlerScript` registers here is Apache's default handler's, as in mod_wsgi,
/// which declines it. Names are compared as Apache stores them: lowercased on the
/// `AddHandler`/`SetHandler` side, as written on the `WSGIHandlerScript` side.
pub fn file_handler<'s>(
    settings: &'s WsgiSettings,
    file_name: &[u8],
    folder: bool,
) -> FileHandler<'s> {
    match handler_of(settings, file_name, folder) {
        None => FileHandler::Default,
        Some(WSGI_SCRIPT) => FileHandler::WsgiScript,
        Some(name) => settings
            .handler_scripts
            .iter()
            .rev()
            .find(|h| h.handler == name)
            .map_or(FileHandler::Default, FileHandler::Script),
    }
}

/// Apache's directory walk of a mapped path: the first component that is not a folder (a
/// file, or nothing) ends the file, and the rest of the path is `PATH_INFO`. A path that
/// exists is the file whole.
pub fn split_file(path: &Path) -> (PathBuf, Vec<u8>) {
    if std::fs::metadata(path).is_ok() {
        return (path.to_path_buf(), Vec::new());
    }
    let bytes = path.as_os_str().as_bytes();
    let mut end = 0;
    while end < bytes.len() {
        let next = bytes[end + 1..]
            .iter()
            .position(|&b| b == b'/')
            .map_or(bytes.len(), |i| end + 1 + i);
        let prefix = &bytes[..next];
        if prefix != b"/" {
            let is_folder = std::fs::metadata(OsStr::from_bytes(prefix)).is_ok_and(|m| m.is_dir());
            if !is_folder {
                return (
                    PathBuf::from(OsStr::from_bytes(prefix)),
                    bytes[next..].to_vec(),
                );
            }
        }
        end = next;
    }
    (path.to_path_buf(), Vec::new())
}

/// Where `PATH_INFO` starts in the request's URI, as mod_wsgi (and Apache's
/// `ap_find_path_info`) finds it: the longest tail of `uri` that matches `path_info`
/// (runs of `/` in the URI matching one), extended to the next `/`.
pub fn find_path_info(uri: &[u8], path_info: &[u8]) -> usize {
    let (mut lu, mut lp) = (uri.len(), path_info.len());
    while lu > 0 && lp > 0 && uri[lu - 1] == path_info[lp - 1] {
        lu -= 1;
        lp -= 1;
        if path_info[lp] == b'/' {
            while lu > 0 && uri[lu - 1] == b'/' {
                lu -= 1;
            }
        }
    }
    // The C loop's last test steps back once more, unless it ran out of URI.
    lu = lu.saturating_sub(1);
    while lu < uri.len() && uri[lu] != b'/' {
        lu += 1;
    }
    lu
}

/// `SCRIPT_NAME` and `PATH_INFO` (native strings) of a request whose URI is `uri` (decoded)
/// and whose file left `path_info` over, as mod_wsgi gives them: `SCRIPT_NAME` the URI up to
/// where `PATH_INFO` starts ([`find_path_info`]), `PATH_INFO` as the walk left it.
pub fn split_path_info(uri: &[u8], path_info: &[u8]) -> (String, String) {
    if path_info.is_empty() {
        return (latin1(uri), String::new());
    }
    (
        latin1(&uri[..find_path_info(uri, path_info)]),
        latin1(path_info),
    )
}

/// The file name of `path`, as bytes.
fn file_name(path: &Path) -> &[u8] {
    path.file_name().map_or(&[][..], OsStr::as_bytes)
}

impl Config {
    /// The route of a request for `file` (the URI `uri`, decoded; `path_info` what Apache's
    /// walk left over) whose handler is `name`, when a `WSGIHandlerScript` registers that name
    /// where the file is: its `handle_request` runs with `SCRIPT_FILENAME` the file, in the
    /// groups its options (else the file's `WSGIProcessGroup`/`WSGIApplicationGroup`) name.
    /// None when no script registers the name there (Apache's default handler serves it).
    /// `env` is what the route carries as the request's variables (the Apache module passes
    /// none: Apache gives them itself).
    pub fn handler_script_route(
        &self,
        who: &Requester<'_>,
        name: &str,
        file: &Path,
        (uri, path_info): (&[u8], &[u8]),
        env: Vec<(String, String)>,
    ) -> Option<Result<Route, RouteError>> {
        let (settings, _) = self.settings_for(who.host, file, uri);
        let script = settings
            .handler_scripts
            .iter()
            .rev()
            .find(|h| h.handler == name)?
            .clone();
        Some(self.run_handler_script(who, &script, file, (uri, path_info), settings, env))
    }

    /// The route of a `WSGIHandlerScript` serving `file`.
    fn run_handler_script(
        &self,
        who: &Requester<'_>,
        script: &HandlerScript,
        file: &Path,
        (uri, path_info): (&[u8], &[u8]),
        settings: Arc<WsgiSettings>,
        env: Vec<(String, String)>,
    ) -> Result<Route, RouteError> {
        let (script_name, path_info) = split_path_info(uri, path_info);
        self.place(
            who,
            Placement {
                script: script.path.clone(),
                script_name,
                path_info,
                settings,
                env,
                options: &script.options,
                handler: Some(RouteHandler {
                    name: script.handler.clone(),
                    file: file.to_path_buf(),
                }),
            },
        )
    }

    /// What a request mod_alias or `DocumentRoot` maps to `path` gets (`uri` the decoded,
    /// normalized URI): the file served as it is, or, when its handler runs it, the route
    /// ([`AliasTarget::Script`]). Without any `AddHandler`/`SetHandler` in the configuration,
    /// always the file (and no walk of its folders).
    pub(crate) fn file_target(
        &self,
        req: &RouteRequest<'_>,
        host: Option<usize>,
        uri: &[u8],
        path: PathBuf,
    ) -> AliasTarget {
        let file_only = |path: PathBuf, file: &Path| {
            let (settings, levels) = self.settings_for(host, file, uri);
            AliasTarget::File {
                path,
                settings,
                env: crate::env::evaluate(&levels, req.facts),
            }
        };
        if !self.maps_handlers {
            return file_only(path.clone(), &path);
        }
        let (file, rest) = split_file(&path);
        let folder = rest.is_empty() && file.is_dir();
        let (settings, levels) = self.settings_for(host, &file, uri);
        let handler = match file_handler(&settings, file_name(&file), folder) {
            FileHandler::Default => None,
            FileHandler::WsgiScript => Some(None),
            FileHandler::Script(script) => Some(Some(script.clone())),
        };
        let Some(script) = handler else {
            return file_only(path, &file);
        };
        if folder {
            // mod_dir first: a folder without its `/` is redirected to it; with it, its
            // index.html is asked for instead, under that file's own handler.
            let index = file.join("index.html");
            if !uri.ends_with(b"/") {
                return file_only(path, &file);
            }
            if index.is_file() {
                let mut index_uri = uri.to_vec();
                index_uri.extend_from_slice(b"index.html");
                return self.file_target(req, host, &index_uri, index);
            }
        }
        let env = crate::env::evaluate(&levels, req.facts);
        let route = self.with_requester(req, host, &env, |who| match &script {
            Some(script) => self.run_handler_script(
                who,
                script,
                &file,
                (uri, &rest),
                settings.clone(),
                env.clone(),
            ),
            None => {
                let via = ScriptVia::Handler {
                    exec_cgi: settings.exec_cgi == Some(true),
                };
                self.wsgi_script_route(who, via, (&file, Found::Unknown), (uri, &rest), env.clone())
            }
        });
        AliasTarget::Script {
            file,
            settings,
            env,
            route: route.map(Box::new),
        }
    }

    /// The route of a WSGI script found for a request (`file`, Apache's `r->filename`, after
    /// its directory walk left `path_info` over from the URI `uri`, `r->uri`), or why mod_wsgi
    /// refuses it, as mod_wsgi's handler runs it: mapped there by a `WSGIScriptAlias` (which
    /// [`Config::match_script_alias`] found for the request), or a file whose handler is
    /// `wsgi-script` ([`ScriptVia::Handler`], with whether `Options ExecCGI` is on there: 403
    /// before anything else when it is off, even for a missing file). `who` names the
    /// groups, with the request's variables for `%{ENV:NAME}`; `env` is what the route
    /// carries as the request's variables (the Apache module passes none: Apache gives them
    /// itself).
    pub fn wsgi_script_route(
        &self,
        who: &Requester<'_>,
        via: ScriptVia<'_>,
        (file, found): (&Path, Found),
        (uri, path_info): (&[u8], &[u8]),
        env: Vec<(String, String)>,
    ) -> Result<Route, RouteError> {
        let (settings, _) = self.settings_for(who.host, file, uri);
        let default_options = AliasOptions::default();
        let options = match via {
            ScriptVia::Handler { exec_cgi: false } => return Err(exec_cgi_off(file)),
            ScriptVia::Handler { exec_cgi: true } => {
                stat_script(file, found)?;
                &default_options
            }
            ScriptVia::Alias(alias) => {
                stat_script(file, found)?;
                if let Some(base) = alias_folder(alias) {
                    confined_script(&base, file)?;
                }
                &alias.options
            }
        };
        self.run_script_file(who, file, (uri, path_info), settings, env, options)
    }

    /// The route of the WSGI script `file`, found runnable ([`stat_script`]). `SCRIPT_NAME`
    /// is the URI up to where `PATH_INFO` starts; the groups are those `options`, else
    /// `settings`, name.
    fn run_script_file(
        &self,
        who: &Requester<'_>,
        file: &Path,
        (uri, path_info): (&[u8], &[u8]),
        settings: Arc<WsgiSettings>,
        env: Vec<(String, String)>,
        options: &AliasOptions,
    ) -> Result<Route, RouteError> {
        let (script_name, path_info) = split_path_info(uri, path_info);
        self.place(
            who,
            Placement {
                script: file.to_path_buf(),
                script_name,
                path_info,
                settings,
                env,
                options,
                handler: None,
            },
        )
    }
}

/// Whether the WSGI script `file` can run, as mod_wsgi's handler checks it: 404 for a missing
/// file, 403 for a folder or one that cannot be read. What a directory walk `found` there is
/// taken as it is; [`Found::Unknown`] `stat`s the path.
fn stat_script(file: &Path, found: Found) -> Result<(), RouteError> {
    let is_dir = match found {
        Found::File => false,
        Found::Folder => true,
        Found::Unknown => match std::fs::metadata(file) {
            Ok(meta) => meta.is_dir(),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(RouteError::Forbidden(format!(
                    "{} cannot be read: {e}",
                    file.display()
                )));
            }
            Err(_) => {
                return Err(RouteError::NotFound(format!(
                    "target WSGI script not found or unable to stat: {}",
                    file.display()
                )));
            }
        },
    };
    if is_dir {
        return Err(RouteError::Forbidden(format!(
            "attempt to invoke directory as WSGI application: {}",
            file.display()
        )));
    }
    Ok(())
}

/// mod_wsgi's refusal of a `wsgi-script` file where `Options ExecCGI` is off.
fn exec_cgi_off(file: &Path) -> RouteError {
    RouteError::Forbidden(format!(
        "Options ExecCGI is off in this directory: {} (its handler is wsgi-script: add `Options +ExecCGI` where it is)",
        file.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Located;

    fn settings(add: &[(&str, &str)], set: Option<&str>) -> WsgiSettings {
        let located = |v: &str| Located {
            value: v.to_string(),
            span: None,
        };
        WsgiSettings {
            add_handlers: add
                .iter()
                .map(|(e, h)| (e.to_string(), located(h)))
                .collect(),
            set_handler: set.map(located),
            ..WsgiSettings::default()
        }
    }

    /// The configuration `text` (`{d}` standing for the folder) over a scratch folder holding
    /// `files`, empty (folders where the name ends in `/`).
    fn site(files: &[&str], text: &str) -> (tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().unwrap();
        for file in files {
            let path = dir.path().join(file);
            std::fs::create_dir_all(if file.ends_with('/') {
                &path
            } else {
                path.parent().unwrap()
            })
            .unwrap();
            if !file.ends_with('/') {
                std::fs::write(path, "").unwrap();
            }
        }
        let text = text.replace("{d}", &dir.path().display().to_string());
        let config = crate::load_str(
            &text,
            Path::new("t.conf"),
            &crate::reader::ReadOptions::default(),
        )
        .unwrap();
        (dir, config)
    }

    #[test]
    fn extensions_map_handlers_as_mod_mime() {
        let s = settings(&[("wsgi", "wsgi-script"), ("page", "pages")], None);
        let h = |name: &str| handler_of(&s, name.as_bytes(), false);
        assert_eq!(h("app.wsgi"), Some("wsgi-script"));
        // Case-insensitive, in any position; the last extension with a handler wins.
        assert_eq!(h("APP.WSGI"), Some("wsgi-script"));
        assert_eq!(h("app.wsgi.bak"), Some("wsgi-script"));
        assert_eq!(h("app.page.wsgi"), Some("wsgi-script"));
        assert_eq!(h("app.wsgi.page"), Some("pages"));
        assert_eq!(h("app..wsgi"), Some("wsgi-script"));
        // The first part is the name, never an extension; leading dots belong to it.
        assert_eq!(h("wsgi"), None);
        assert_eq!(h(".wsgi"), None);
        assert_eq!(h("..wsgi"), None);
        assert_eq!(h("wsgi.txt"), None);
        assert_eq!(h("app.wsgix"), None);
        // A folder takes no extension's handler.
        assert_eq!(handler_of(&s, b"dir.wsgi", true), None);
    }

    #[test]
    fn set_handler_wins_over_add_handler_unless_none() {
        let s = settings(&[("wsgi", "wsgi-script")], Some("pages"));
        assert_eq!(handler_of(&s, b"app.wsgi", false), Some("pages"));
        assert_eq!(handler_of(&s, b"folder", true), Some("pages"));
        let s = settings(&[("wsgi", "wsgi-script")], Some("none"));
        assert_eq!(handler_of(&s, b"app.wsgi", false), Some("wsgi-script"));
        assert_eq!(handler_of(&s, b"app.txt", false), None);
    }

    #[test]
    fn inner_levels_replace_and_remove_outer_mappings() {
        let mut outer = settings(&[("wsgi", "wsgi-script"), ("py", "wsgi-script")], None);
        let mut inner = settings(&[("py", "pages")], None);
        inner.remove_handlers = vec!["wsgi".to_string()];
        outer.merge(&inner);
        assert_eq!(handler_of(&outer, b"a.py", false), Some("pages"));
        assert_eq!(handler_of(&outer, b"a.wsgi", false), None);
        // An inner SetHandler None undoes an outer SetHandler, leaving AddHandler's.
        let mut outer = settings(&[("wsgi", "wsgi-script")], Some("pages"));
        outer.merge(&settings(&[], Some("none")));
        assert_eq!(handler_of(&outer, b"a.wsgi", false), Some("wsgi-script"));
    }

    #[test]
    fn handler_scripts_claim_only_their_exact_name() {
        let mut s = settings(&[("page", "pages")], None);
        let script = |name: &str, path: &str| HandlerScript {
            span: crate::reader::Span {
                file: std::sync::Arc::from(Path::new("t.conf")),
                line: 1,
            },
            handler: name.to_string(),
            path: PathBuf::from(path),
            options: AliasOptions::default(),
        };
        s.handler_scripts = vec![
            script("pages", "/outer.wsgi"),
            script("pages", "/inner.wsgi"),
        ];
        match file_handler(&s, b"a.page", false) {
            FileHandler::Script(h) => assert_eq!(h.path, Path::new("/inner.wsgi")),
            other => panic!("{other:?}"),
        }
        // Apache lowercases the handler name; a capitalised WSGIHandlerScript never matches.
        s.handler_scripts = vec![script("Pages", "/x.wsgi")];
        assert_eq!(file_handler(&s, b"a.page", false), FileHandler::Default);
        assert_eq!(file_handler(&s, b"a.txt", false), FileHandler::Default);
    }

    #[test]
    fn path_info_starts_where_apache_finds_it() {
        let split = |uri: &str, pi: &str| split_path_info(uri.as_bytes(), pi.as_bytes());
        assert_eq!(
            split("/s/app.wsgi/a/b", "/a/b"),
            ("/s/app.wsgi".into(), "/a/b".into())
        );
        assert_eq!(split("/s/app.wsgi", ""), ("/s/app.wsgi".into(), "".into()));
        assert_eq!(
            split("/s/app.wsgi/", "/"),
            ("/s/app.wsgi".into(), "/".into())
        );
        // Runs of `/` in the URI match one in PATH_INFO.
        assert_eq!(
            split("/s/app.wsgi//a", "/a"),
            ("/s/app.wsgi".into(), "/a".into())
        );
        // A PATH_INFO the URI does not end with: SCRIPT_NAME runs to the next `/` (here, the
        // end).
        assert_eq!(
            split("/s/app.wsgi/x", "/other"),
            ("/s/app.wsgi/x".into(), "/other".into())
        );
        assert_eq!(split("/a/b", "/x/b"), ("/a".into(), "/x/b".into()));
    }

    /// Files mod_alias maps, as mod_wsgi runs them: `wsgi-script` files where ExecCGI is on
    /// (403 elsewhere, even for a missing file; 404 for a missing one), a `WSGIHandlerScript`
    /// for its name (missing files included), other files as files.
    #[test]
    fn files_run_by_their_handler_route_as_mod_wsgi() {
        let (dir, config) = site(
            &[
                "scripts/app.wsgi",
                "scripts/notes.txt",
                "noexec/app.wsgi",
                "pages/a.page",
            ],
            "ServerName example.com\n\
             WSGIDaemonProcess paging\n\
             WSGIHandlerScript pages {d}/handler.wsgi process-group=paging\n\
             Alias /s/ {d}/scripts/\n\
             Alias /n/ {d}/noexec/\n\
             Alias /p/ {d}/pages/\n\
             <Directory {d}/scripts>\n\
             \x20   Options FollowSymLinks ExecCGI\n\
             \x20   AddHandler wsgi-script .wsgi\n\
             </Directory>\n\
             <Directory {d}/noexec>\n\
             \x20   Options +ExecCGI\n\
             \x20   Options FollowSymLinks\n\
             \x20   AddHandler wsgi-script .wsgi\n\
             </Directory>\n\
             <Directory {d}/pages>\n\
             \x20   AddHandler Pages .page\n\
             </Directory>\n",
        );
        let root = dir.path();
        let map = |path: &str| {
            let request = RouteRequest {
                local_ip: None,
                local_port: 8080,
                host: None,
                path,
                facts: None,
            };
            config.map_alias(&request, None).unwrap().unwrap()
        };
        let route = |path: &str| match map(path) {
            AliasTarget::Script { route, .. } => route.map(|r| *r),
            other => panic!("{path}: {other:?}"),
        };
        let app = route("/s/app.wsgi/x/y").unwrap();
        assert_eq!(app.script, root.join("scripts/app.wsgi"));
        assert_eq!(
            (app.script_name.as_str(), app.path_info.as_str()),
            ("/s/app.wsgi", "/x/y")
        );
        assert_eq!(app.application_group, "example.com:8080|/s/app.wsgi");
        assert_eq!(app.callable_object, "application");
        assert_eq!(app.process_group, crate::route::ProcessGroup::Embedded);
        assert_eq!(app.script_filename(), app.script);
        assert!(matches!(map("/s/notes.txt"), AliasTarget::File { .. }));
        assert!(matches!(
            route("/s/missing.wsgi"),
            Err(RouteError::NotFound(_))
        ));
        // The later `Options` line without +/- turned ExecCGI off again.
        assert!(matches!(
            route("/n/app.wsgi"),
            Err(RouteError::Forbidden(_))
        ));
        assert!(matches!(
            route("/n/missing.wsgi"),
            Err(RouteError::Forbidden(_))
        ));
        let page = route("/p/a.page").unwrap();
        assert_eq!(page.script, root.join("handler.wsgi"));
        assert_eq!(page.callable_object, "handle_request");
        assert_eq!(page.script_filename(), root.join("pages/a.page"));
        assert_eq!(
            page.process_group,
            crate::route::ProcessGroup::Daemon("paging".into())
        );
        let [(_, handler), (_, script)] = page.handler_environ();
        assert_eq!(
            (handler.as_slice(), script),
            (
                &b"pages"[..],
                root.join("handler.wsgi").as_os_str().as_bytes().to_vec()
            )
        );
        let missing = route("/p/missing.page/extra").unwrap();
        assert_eq!(missing.script_filename(), root.join("pages/missing.page"));
        assert_eq!(
            (missing.script_name.as_str(), missing.path_info.as_str()),
            ("/p/missing.page", "/extra")
        );
    }

    /// The Apache module's path: mod_wsgi's translate step maps the URI without looking at
    /// files, then the file Apache's walk found is routed with the alias's options (no
    /// ExecCGI needed, a directory alias confined to its `.wsgi`/`.py` files) or, for a file
    /// whose handler is `wsgi-script`, only where ExecCGI is on.
    #[test]
    fn script_aliases_map_then_route_what_apache_found() {
        let (dir, config) = site(
            &[
                "scripts/app1.wsgi",
                "scripts/notes.txt",
                "scripts/sub/",
                "one.wsgi",
                "other.py",
            ],
            "ServerName example.com\n\
             WSGIDaemonProcess d\n\
             WSGIScriptAlias /dir/ {d}/scripts/ process-group=d application-group=%{GLOBAL}\n\
             WSGIScriptAliasMatch ^/m/([^/]+) {d}/scripts/$1.wsgi\n\
             WSGIScriptAlias /one {d}/one.wsgi\n\
             WSGIScriptAlias / {d}/one.wsgi\n",
        );
        let root = dir.path();
        let map = |uri: &str| {
            let found = config.match_script_alias(None, uri.as_bytes()).unwrap();
            (found.alias.url.clone(), found.path)
        };
        assert_eq!(
            map("/dir/app1/x"),
            ("/dir/".into(), root.join("scripts/app1/x"))
        );
        assert_eq!(
            map("/m/app1/x"),
            ("^/m/([^/]+)".into(), root.join("scripts/app1.wsgi/x"))
        );
        assert_eq!(map("/one/x"), ("/one".into(), root.join("one.wsgi/x")));
        // An alias of `/` keeps the whole URI.
        let (url, path) = map("/other/x");
        assert_eq!(url, "/");
        assert_eq!(
            path.as_os_str().as_bytes(),
            format!("{}/other/x", root.join("one.wsgi").display()).as_bytes()
        );
        // An alias of a script file knows its split; a folder or a regular expression leaves
        // it to the directory walk.
        let split = |uri: &str| {
            let found = config.match_script_alias(None, uri.as_bytes()).unwrap();
            found
                .script_and_path_info()
                .map(|(file, path_info)| (file.to_path_buf(), path_info.to_vec()))
        };
        let one = root.join("one.wsgi");
        assert_eq!(split("/one/x/y"), Some((one.clone(), b"/x/y".to_vec())));
        assert_eq!(split("/one"), Some((one.clone(), Vec::new())));
        assert_eq!(split("/"), Some((one.clone(), b"/".to_vec())));
        assert_eq!(split("/other/x"), Some((one, b"/other/x".to_vec())));
        assert_eq!(split("/dir/app1/x"), None);
        assert_eq!(split("/m/app1/x"), None);
        let no_env = |_: &str| None;
        let who = Requester {
            host: None,
            server_name: "example.com",
            port: 8080,
            host_header: None,
            env: &no_env,
        };
        let dir_alias = config.match_script_alias(None, b"/dir/x").unwrap().alias;
        let route = |via: ScriptVia<'_>, file: &str, uri: &str, path_info: &str| {
            config.wsgi_script_route(
                &who,
                via,
                (&root.join(file), Found::Unknown),
                (uri.as_bytes(), path_info.as_bytes()),
                Vec::new(),
            )
        };
        // What MultiViews found for /dir/app1/x: the URI names the file.
        let r = route(
            ScriptVia::Alias(dir_alias),
            "scripts/app1.wsgi",
            "/dir/app1.wsgi/x",
            "/x",
        )
        .unwrap();
        assert_eq!(
            (r.script_name.as_str(), r.path_info.as_str()),
            ("/dir/app1.wsgi", "/x")
        );
        assert_eq!(
            r.process_group,
            crate::route::ProcessGroup::Daemon("d".into())
        );
        assert_eq!(r.application_group, "");
        let status = |r: Result<Route, RouteError>| r.map(|_| 200).unwrap_or_else(|e| e.status());
        let alias = ScriptVia::Alias(dir_alias);
        assert_eq!(
            status(route(alias, "scripts/notes.txt", "/dir/notes.txt", "")),
            404
        );
        assert_eq!(
            status(route(alias, "scripts/gone.wsgi", "/dir/gone.wsgi", "")),
            404
        );
        assert_eq!(status(route(alias, "scripts/sub", "/dir/sub", "")), 403);
        assert_eq!(
            status(route(alias, "other.py", "/dir/../other.py", "")),
            404
        );
        // A wsgi-script file: ExecCGI decides first, even for a missing file.
        let off = ScriptVia::Handler { exec_cgi: false };
        let on = ScriptVia::Handler { exec_cgi: true };
        assert_eq!(status(route(off, "other.py", "/other.py", "")), 403);
        assert_eq!(status(route(off, "missing.py", "/missing.py", "")), 403);
        assert_eq!(status(route(on, "missing.py", "/missing.py", "")), 404);
        let r = route(on, "other.py", "/x/other.py/a", "/a").unwrap();
        assert_eq!(
            (r.script_name.as_str(), r.path_info.as_str()),
            ("/x/other.py", "/a")
        );
        assert_eq!(r.application_group, "example.com:8080|/x/other.py");
        assert_eq!(r.process_group, crate::route::ProcessGroup::Embedded);
        // What Apache's directory walk found is taken as it is, as mod_wsgi's handler takes
        // `r->finfo`: no second look at the path.
        let found = |via: ScriptVia<'_>, file: &str, found: Found| {
            status(config.wsgi_script_route(
                &who,
                via,
                (&root.join(file), found),
                (b"/x", b""),
                Vec::new(),
            ))
        };
        assert_eq!(found(on, "other.py", Found::Folder), 403);
        assert_eq!(found(on, "vanished.py", Found::File), 200);
        assert_eq!(found(alias, "scripts/app1.wsgi", Found::Folder), 403);
        assert_eq!(found(off, "other.py", Found::File), 403, "ExecCGI first");
        assert_eq!(found(on, "missing.py", Found::Unknown), 404);
    }

    #[test]
    fn the_walk_stops_at_the_first_file_or_missing_component() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/app.wsgi"), "").unwrap();
        let walk = |rel: &str| {
            let (file, rest) = split_file(&root.join(rel));
            (
                file.strip_prefix(root).unwrap().display().to_string(),
                String::from_utf8(rest).unwrap(),
            )
        };
        assert_eq!(walk("sub/app.wsgi"), ("sub/app.wsgi".into(), "".into()));
        assert_eq!(
            walk("sub/app.wsgi/a/b"),
            ("sub/app.wsgi".into(), "/a/b".into())
        );
        assert_eq!(
            walk("sub/missing.wsgi/a"),
            ("sub/missing.wsgi".into(), "/a".into())
        );
        assert_eq!(walk("sub/missing/"), ("sub/missing".into(), "/".into()));
        assert_eq!(walk("sub"), ("sub".into(), "".into()));
    }
}
