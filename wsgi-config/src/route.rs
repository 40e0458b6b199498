//! Request routing: (local address, port, Host header, URL path) to the script, `SCRIPT_NAME`,
//! `PATH_INFO`, process group, application group and callable object, as mod_wsgi maps them,
//! with these differences on purpose:
//!
//! * the port in `%{SERVER}`/`%{RESOURCE}` names (and so in the default application group) is
//!   the port the connection arrived on, never the client's `Host` header, so a client cannot
//!   make the server load an application again in a new sub-interpreter per port it names;
//! * a directory mount runs only `.wsgi` and `.py` files (404 for anything else), and never
//!   resolves outside its directory (`..`, `%2e%2e`, symlinks out).

use std::borrow::Cow;
use std::ffi::OsStr;
use std::net::IpAddr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::env::EnvOp;
use crate::groups::GroupNames;
use crate::model::*;

/// What the router needs to know about a request.
#[derive(Debug, Clone, Copy)]
pub struct RouteRequest<'a> {
    /// The local address the connection arrived on, if known.
    pub local_ip: Option<IpAddr>,
    /// The local port the connection arrived on.
    pub local_port: u16,
    /// The `Host` header (may hold a port), if any.
    pub host: Option<&'a str>,
    /// The URL path as sent, still percent-encoded, without the query string.
    pub path: &'a str,
    /// What `SetEnvIf` tests, when the front knows it (without it, only `SetEnv`,
    /// `PassEnv` and `UnsetEnv` give the request variables).
    pub facts: Option<&'a crate::env::RequestFacts<'a>>,
}

/// Where a request runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum ProcessGroup {
    /// In the serving process itself.
    Embedded,
    /// In the named daemon process group.
    Daemon(String),
}

/// The outcome of routing a request to a WSGI application.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Route {
    /// The virtual host (None: the main server).
    pub host: Option<usize>,
    /// The server name (`SERVER_NAME`).
    pub server_name: String,
    /// The port the request arrived on (`SERVER_PORT`).
    pub port: u16,
    /// The script file to run.
    pub script: PathBuf,
    /// `SCRIPT_NAME`, decoded, as a PEP 3333 native string (bytes as latin-1).
    pub script_name: String,
    /// `PATH_INFO`, decoded, as a PEP 3333 native string.
    pub path_info: String,
    /// Where it runs.
    pub process_group: ProcessGroup,
    /// The application group: `""` is the main interpreter.
    pub application_group: String,
    /// The name of the WSGI callable in the script.
    pub callable_object: String,
    /// The effective WSGI settings for the request (shared with the configuration where no
    /// section or virtual host changes them).
    pub settings: Arc<WsgiSettings>,
    /// The environment variables the configuration gives the request (`SetEnv`, `SetEnvIf`,
    /// `PassEnv`, `UnsetEnv`), in order: mod_wsgi puts them in the WSGI environ.
    pub env: Vec<(String, String)>,
    /// The `WSGIHandlerScript` serving the request, when one does (`script` is then the
    /// handler script, and `callable_object` its `handle_request`).
    pub handler: Option<RouteHandler>,
    /// `CONTEXT_PREFIX` and `CONTEXT_DOCUMENT_ROOT` when mod_alias's `Alias` mapped the URL to
    /// the script (its URL and folder, as Apache sets them); None: no prefix and the
    /// `DocumentRoot`, as for a `WSGIScriptAlias`.
    pub context: Option<(String, String)>,
}

/// A request a `WSGIHandlerScript` serves.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteHandler {
    /// The handler name (`AddHandler NAME .ext`, `SetHandler NAME`).
    pub name: String,
    /// The file asked for: the request's `SCRIPT_FILENAME`, which the script handles
    /// (whether or not it exists).
    pub file: PathBuf,
}

impl Route {
    /// `SCRIPT_FILENAME`: the file asked for when a handler script serves it, else the script.
    pub fn script_filename(&self) -> &Path {
        match &self.handler {
            Some(handler) => &handler.file,
            None => &self.script,
        }
    }

    /// `mod_wsgi.request_handler` and `mod_wsgi.handler_script` as mod_wsgi puts them in the
    /// environ: `wsgi-script` and `""` for a WSGI script, the handler name and the handler
    /// script for a `WSGIHandlerScript`.
    pub fn handler_environ(&self) -> [(&'static str, Vec<u8>); 2] {
        let (name, script) = match &self.handler {
            Some(handler) => (
                handler.name.clone().into_bytes(),
                self.script.as_os_str().as_encoded_bytes().to_vec(),
            ),
            None => (b"wsgi-script".to_vec(), Vec::new()),
        };
        [
            ("mod_wsgi.request_handler", name),
            ("mod_wsgi.handler_script", script),
        ]
    }
}

/// What names a request's groups beside the configuration: its virtual host, the server name
/// and the port it came in on, the `Host` header's name, and its variables. Each front fills
/// it from what it knows ([`Config::route`] from a [`RouteRequest`]; the Apache module from
/// Apache's request).
pub struct Requester<'a> {
    /// The virtual host (None: the main server).
    pub host: Option<usize>,
    /// `SERVER_NAME`.
    pub server_name: &'a str,
    /// The port the request arrived on.
    pub port: u16,
    /// The host name of the `Host` header (without port), if any.
    pub host_header: Option<&'a str>,
    /// Looks up a variable of the request (`SetEnv`, `SetEnvIf`, ...), then of the process,
    /// for `%{ENV:NAME}`.
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

/// What a route is made of before its groups are named ([`Config::place`]).
pub(crate) struct Placement<'o> {
    /// The script that runs.
    pub(crate) script: PathBuf,
    /// `SCRIPT_NAME`, a native string.
    pub(crate) script_name: String,
    /// `PATH_INFO`, a native string.
    pub(crate) path_info: String,
    /// The settings where the request's file is.
    pub(crate) settings: Arc<WsgiSettings>,
    /// The request's variables.
    pub(crate) env: Vec<(String, String)>,
    /// The options of the `WSGIScriptAlias` or `WSGIHandlerScript` (none for a file whose
    /// handler is `wsgi-script`).
    pub(crate) options: &'o AliasOptions,
    /// The `WSGIHandlerScript` serving the request, if one does: its callable is always
    /// `handle_request`.
    pub(crate) handler: Option<RouteHandler>,
}

/// What mod_alias makes of a request ([`Config::map_alias`]).
#[derive(Debug, Clone, PartialEq)]
pub enum AliasTarget {
    /// Answer with a redirect: the status, and the `Location` (none for 410 Gone and other
    /// statuses that are not redirects). A target starting with `/` is made absolute by the
    /// front, with the request's scheme and host.
    Redirect {
        /// The status.
        status: u16,
        /// Where to.
        location: Option<String>,
    },
    /// Run a file as WSGI: its handler is `wsgi-script` or a `WSGIHandlerScript`'s
    /// ([`crate::handlers`]). Apache checks access before the handler runs, so `route` (the
    /// route, or why the handler refuses the request: 403 without `Options ExecCGI`, 404 for a
    /// missing script...) is the answer once `settings`' access rules grant it.
    Script {
        /// The file asked for (Apache's `r->filename`).
        file: PathBuf,
        /// Its section's settings: who may see it.
        settings: Arc<WsgiSettings>,
        /// The request's environment variables.
        env: Vec<(String, String)>,
        /// The route, or the refusal.
        route: Result<Box<Route>, RouteError>,
    },
    /// Serve this file or folder (as Apache's default handler and mod_dir do).
    File {
        /// The path.
        path: PathBuf,
        /// Its section's settings: who may see it (`authz`, `auth_*`).
        settings: Arc<WsgiSettings>,
        /// The request's environment variables (`SetEnv`, and `SetEnvIf` when the request's
        /// facts were given), for the access log's `%{VAR}e` and `env=` conditions.
        env: Vec<(String, String)>,
    },
}

/// A `WSGIScriptAlias` or `WSGIScriptAliasMatch` covering a request, and where it maps it
/// ([`Config::match_script_alias`]).
#[derive(Debug, Clone)]
pub struct ScriptAliasMatch<'c> {
    /// The alias.
    pub alias: &'c ScriptAlias,
    /// The path the request's URI maps to: the script, or a folder of scripts, then the rest
    /// of the URI.
    pub path: PathBuf,
    /// Where the target ends in `path`.
    target_len: usize,
}

impl ScriptAliasMatch<'_> {
    /// For a `WSGIScriptAlias` of a script file, `path` split where the directory walk would
    /// split it (the file, then `PATH_INFO`: the rest of the URI, empty or from a `/`), so a
    /// front that hands over both spares the walk its look at each folder on the way. None
    /// for a folder of scripts or a `WSGIScriptAliasMatch`, which only the walk can split.
    pub fn script_and_path_info(&self) -> Option<(&Path, &[u8])> {
        if self.alias.regex.is_some() || self.alias.is_directory() {
            return None;
        }
        let bytes = self.path.as_os_str().as_bytes();
        let (file, rest) = bytes.split_at(self.target_len);
        if file.is_empty() || file.ends_with(b"/") || !(rest.is_empty() || rest[0] == b'/') {
            return None;
        }
        Some((Path::new(OsStr::from_bytes(file)), rest))
    }
}

/// How a file whose handler is `wsgi-script` came to run ([`Config::wsgi_script_route`]).
#[derive(Debug, Clone, Copy)]
pub enum ScriptVia<'c> {
    /// A `WSGIScriptAlias` mapped the request to it: no `Options ExecCGI` is needed (mod_wsgi's
    /// `alias-forced-type`), the alias's options name the groups, and a directory alias runs
    /// only `.wsgi`/`.py` files inside its folder.
    Alias(&'c ScriptAlias),
    /// Its handler is `wsgi-script` (`AddHandler`, `SetHandler`): it runs only where
    /// `Options ExecCGI` is on (`exec_cgi`), 403 elsewhere.
    Handler {
        /// Whether `Options ExecCGI` is on where the file is.
        exec_cgi: bool,
    },
}

/// What a directory walk already found at a WSGI script's path, so that routing does not
/// `stat` it again: the Apache module passes the type of Apache's `r->finfo`, as mod_wsgi's
/// handler reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// Not looked at yet, or nothing found: routing `stat`s the path (404 when there is
    /// nothing there).
    Unknown,
    /// A folder: 403.
    Folder,
    /// Something else there (a file): it may run.
    File,
}

/// Why a request cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// 400: the path is malformed.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// 403: access denied by configuration.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// 404: no such script.
    #[error("not found: {0}")]
    NotFound(String),
    /// 500: the configuration routes the request somewhere it cannot run.
    #[error("{0}")]
    Misconfigured(String),
}

impl RouteError {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            RouteError::BadRequest(_) => 400,
            RouteError::Forbidden(_) => 403,
            RouteError::NotFound(_) => 404,
            RouteError::Misconfigured(_) => 500,
        }
    }
}

/// The machine's host name, the server name when the configuration gives none (as Apache,
/// which also reads it once, at start).
fn default_server_name() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "localhost".to_string())
    })
}

/// A host's `WSGIScriptAlias`es by the first segment of their URL, so routing looks only at
/// those that can match a path (plus those that can match any: `/`, and the regex ones), still
/// in configuration order. Small configurations are scanned as they are.
#[derive(Debug, Clone, Default)]
pub struct AliasIndex(std::sync::OnceLock<AliasBuckets>);

#[derive(Debug, Clone)]
struct AliasBuckets {
    /// How many aliases it was built from (a host still being built is scanned instead).
    count: usize,
    by_segment: std::collections::HashMap<Vec<u8>, Vec<usize>>,
    anywhere: Vec<usize>,
}

/// Below this many aliases a scan is as fast as a lookup.
const INDEX_FROM: usize = 16;

/// The first segment of a path: `/app/x` and `//app` give `app`, `/` gives nothing.
fn first_segment(path: &[u8]) -> &[u8] {
    let start = path.iter().position(|&b| b != b'/').unwrap_or(path.len());
    let rest = &path[start..];
    &rest[..rest.iter().position(|&b| b == b'/').unwrap_or(rest.len())]
}

impl AliasIndex {
    /// The aliases that can match `uri`, in configuration order (no allocation: this runs on
    /// every request).
    fn candidates<'a>(
        &'a self,
        aliases: &'a [ScriptAlias],
        uri: &[u8],
    ) -> impl Iterator<Item = &'a ScriptAlias> + 'a {
        let buckets = (aliases.len() >= INDEX_FROM)
            .then(|| self.0.get_or_init(|| AliasBuckets::new(aliases)))
            .filter(|b| b.count == aliases.len());
        // Unindexed: every alias. Indexed: the two ordered lists merged back into order.
        let mut all = buckets.is_none().then(|| aliases.iter());
        let (named, anywhere) = match buckets {
            Some(b) => (
                b.by_segment
                    .get(first_segment(uri))
                    .map_or(&[][..], Vec::as_slice),
                b.anywhere.as_slice(),
            ),
            None => (&[][..], &[][..]),
        };
        let (mut a, mut b) = (named.iter().peekable(), anywhere.iter().peekable());
        std::iter::from_fn(move || {
            if let Some(all) = all.as_mut() {
                return all.next();
            }
            let next = match (a.peek(), b.peek()) {
                (Some(&&x), Some(&&y)) if x < y => a.next(),
                (Some(_), Some(_)) | (None, Some(_)) => b.next(),
                (Some(_), None) => a.next(),
                (None, None) => None,
            }?;
            Some(&aliases[*next])
        })
    }
}

impl AliasBuckets {
    fn new(aliases: &[ScriptAlias]) -> AliasBuckets {
        let mut by_segment: std::collections::HashMap<Vec<u8>, Vec<usize>> =
            std::collections::HashMap::new();
        let mut anywhere = Vec::new();
        for (i, alias) in aliases.iter().enumerate() {
            let segment = first_segment(alias.url.as_bytes());
            if alias.regex.is_some() || segment.is_empty() {
                anywhere.push(i);
            } else {
                by_segment.entry(segment.to_vec()).or_default().push(i);
            }
        }
        AliasBuckets {
            count: aliases.len(),
            by_segment,
            anywhere,
        }
    }
}

/// Bytes as a PEP 3333 native string: each byte the character of that code point (latin-1).
pub fn latin1(bytes: &[u8]) -> String {
    // ASCII (nearly every path) is its own UTF-8: copied whole, not char by char.
    if bytes.is_ascii() {
        if let Ok(text) = std::str::from_utf8(bytes) {
            return text.to_owned();
        }
    }
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// The bytes of a native string [`latin1`] made (a character beyond latin-1 becomes `?`).
pub fn latin1_bytes(text: &str) -> Vec<u8> {
    if text.is_ascii() {
        return text.as_bytes().to_vec();
    }
    text.chars()
        .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
        .collect()
}

/// Where `raw` holds a `%` not followed by two hex digits (Apache answers 400 to it).
fn bad_percent_escape(raw: &[u8]) -> Option<usize> {
    raw.iter().enumerate().find_map(|(i, &b)| {
        let ok = b != b'%'
            || (raw.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && raw.get(i + 2).is_some_and(u8::is_ascii_hexdigit));
        (!ok).then_some(i)
    })
}

/// Decodes `%XX` (refusing a bad escape), then resolves `.` and `..` segments and collapses runs of `/`.
pub fn normalize_path(raw: &str) -> Result<Vec<u8>, RouteError> {
    if !raw.starts_with('/') {
        return Err(RouteError::BadRequest(format!(
            "the path `{raw}` does not start with /"
        )));
    }
    if is_normal(raw.as_bytes()) {
        return Ok(raw.as_bytes().to_vec());
    }
    normalize_fully(raw)
}

/// [`normalize_path`] of a path starting with `/` that is not [`is_normal`].
fn normalize_fully(raw: &str) -> Result<Vec<u8>, RouteError> {
    if let Some(at) = bad_percent_escape(raw.as_bytes()) {
        return Err(RouteError::BadRequest(format!(
            "the path holds a bad percent-escape `{}`",
            String::from_utf8_lossy(&raw.as_bytes()[at..(at + 3).min(raw.len())])
        )));
    }
    let decoded: Vec<u8> = percent_encoding::percent_decode_str(raw).collect();
    if decoded.contains(&0) {
        // Apache answers 404 (AllowEncodedSlashes Off refuses %00 with %2F).
        return Err(RouteError::NotFound(
            "the path holds an encoded NUL (%00)".into(),
        ));
    }
    // Apache's AllowEncodedSlashes Off: an encoded slash is refused.
    let lower = raw.to_ascii_lowercase();
    if lower.contains("%2f") {
        return Err(RouteError::NotFound(
            "the path holds an encoded slash (%2F)".into(),
        ));
    }
    let mut segments: Vec<&[u8]> = Vec::new();
    for segment in decoded.split(|&b| b == b'/') {
        match segment {
            b"" | b"." => {}
            b".." => {
                if segments.pop().is_none() {
                    return Err(RouteError::BadRequest("the path climbs above /".into()));
                }
            }
            s => segments.push(s),
        }
    }
    let mut out = Vec::with_capacity(decoded.len());
    for s in &segments {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    let trailing = decoded.ends_with(b"/") || decoded.ends_with(b"/.") || decoded.ends_with(b"/..");
    if out.is_empty() || (trailing && !segments.is_empty()) {
        out.push(b'/');
    }
    Ok(out)
}

/// Whether `path` (starting with `/`) is what [`normalize_path`] would make of it: nothing
/// percent-encoded, no NUL, no empty, `.` or `..` segment (a trailing `/` is kept as it is).
/// Nearly every request's path is, and is then taken as it is.
fn is_normal(path: &[u8]) -> bool {
    let mut segments = path[1..].split(|&b| b == b'/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        let bad = match segment {
            b"" => !last,
            b"." | b".." => true,
            s => s.iter().any(|&b| b == b'%' || b == 0),
        };
        if bad {
            return false;
        }
    }
    true
}

/// The length of the URI prefix that `alias` matches, mod_alias style: runs of `/` in the alias
/// match runs of `/` in the URI, and the match ends on a segment boundary.
fn alias_match(alias: &[u8], uri: &[u8]) -> Option<usize> {
    let (mut a, mut u) = (0, 0);
    while a < alias.len() {
        if alias[a] == b'/' {
            if u >= uri.len() || uri[u] != b'/' {
                return None;
            }
            while a < alias.len() && alias[a] == b'/' {
                a += 1;
            }
            while u < uri.len() && uri[u] == b'/' {
                u += 1;
            }
        } else {
            if u >= uri.len() || uri[u] != alias[a] {
                return None;
            }
            a += 1;
            u += 1;
        }
    }
    // The match must end at a segment boundary.
    if alias.last() != Some(&b'/') && u < uri.len() && uri[u] != b'/' {
        return None;
    }
    Some(u)
}

/// Whether `alias` covers `uri`: the length of the URI it matches and its target (`$N`
/// substituted for `WSGIScriptAliasMatch`).
fn alias_covers(alias: &ScriptAlias, uri: &[u8]) -> Option<(usize, String)> {
    match &alias.regex {
        Some(regex) => {
            let text = latin1(uri);
            let caps = regex.captures(&text)?;
            let end = caps.get(0).map_or(0, |m| m.end());
            let mut expanded = String::new();
            caps.expand(&apache_template(&alias.target), &mut expanded);
            // Byte length of the matched prefix: `text` maps one char per byte.
            Some((text[..end].chars().count(), expanded))
        }
        None => alias_match(alias.url.as_bytes(), uri).map(|n| (n, alias.target.clone())),
    }
}

/// The folder whose scripts a directory alias runs (only `.wsgi`/`.py` files inside it); None
/// for an alias of one script.
pub(crate) fn alias_folder(alias: &ScriptAlias) -> Option<PathBuf> {
    let templated = alias.regex.is_some() && alias.target.contains('$');
    if templated {
        let fixed = &alias.target[..alias.target.find('$').unwrap_or(0)];
        return Some(PathBuf::from(
            &fixed[..fixed.rfind('/').map_or(0, |i| i + 1)],
        ));
    }
    (alias.is_directory() || (alias.regex.is_some() && Path::new(&alias.target).is_dir()))
        .then(|| PathBuf::from(&alias.target))
}

/// Whether a directory alias may run `script`: a `.wsgi` or `.py` file that exists and
/// resolves inside `base` (404 otherwise).
pub(crate) fn confined_script(base: &Path, script: &Path) -> Result<(), RouteError> {
    if !is_script_file(script) {
        return Err(RouteError::NotFound(format!(
            "{} is not a .wsgi or .py script",
            script.display()
        )));
    }
    let real = script
        .canonicalize()
        .map_err(|_| RouteError::NotFound(format!("{} does not exist", script.display())))?;
    let real_base = base.canonicalize().unwrap_or_else(|_| base.to_path_buf());
    if !real.starts_with(&real_base) {
        return Err(RouteError::NotFound(format!(
            "{} resolves outside {}",
            script.display(),
            base.display()
        )));
    }
    Ok(())
}

fn is_script_file(path: &Path) -> bool {
    matches!(
        path.extension().and_then(OsStr::to_str),
        Some("wsgi" | "py")
    )
}

impl Config {
    /// Whether any section names a mod_wsgi access, auth or dispatch script (which run in the
    /// serving process's embedded Python, never in a daemon process).
    pub fn names_hook_scripts(&self) -> bool {
        self.all_settings().any(|s| {
            s.access_script.is_some()
                || s.auth_user_script.is_some()
                || s.auth_group_script.is_some()
                || s.dispatch_script.is_some()
        })
    }

    /// Whether any `SetEnvIf`/`BrowserMatch` line tests requests: without one, routing needs
    /// no [`crate::env::RequestFacts`].
    pub fn tests_requests(&self) -> bool {
        std::iter::once(&self.main)
            .chain(&self.virtual_hosts)
            .flat_map(|h| std::iter::once(&h.env).chain(h.sections.iter().map(|s| &s.env)))
            .flatten()
            .any(|op| matches!(op, crate::env::EnvOp::SetIf(_)))
    }

    /// A host's canonical name (`SERVER_NAME`, `%v`): its `ServerName`, else the main
    /// server's, else the machine's host name, as Apache.
    pub fn canonical_name(&self, host: Option<usize>) -> &str {
        match self.server_name(host) {
            Some(name) => name,
            None => default_server_name(),
        }
    }

    /// The virtual host a request is for: among the `<VirtualHost>`s whose addresses match the
    /// connection (IP-specific ones before `*`), the first whose `ServerName`/`ServerAlias`
    /// matches the Host header, else the first of them; None (the main server) when none match.
    pub fn select_host(
        &self,
        local_ip: Option<IpAddr>,
        local_port: u16,
        host: Option<&str>,
    ) -> Option<usize> {
        // The common case, asked several times per request: no virtual hosts at all.
        if self.virtual_hosts.is_empty() {
            return None;
        }
        // Whether `h` serves the connection: by its address (`exact`) or by `*`.
        let serves = |h: &Host, exact: bool| {
            h.addresses.iter().any(|a| {
                let port_ok = a.port.is_none_or(|p| p == local_port);
                let ip_ok = match (a.ip, exact) {
                    (Some(ip), true) => local_ip == Some(ip),
                    (None, false) => true,
                    _ => false,
                };
                port_ok && ip_ok
            })
        };
        // Hosts naming the connection's address come before `*` ones, which then do not count.
        let exact = self.virtual_hosts.iter().any(|h| serves(h, true));
        let mut candidates = self
            .virtual_hosts
            .iter()
            .enumerate()
            .filter(move |(_, h)| serves(h, exact));
        let (first, _) = candidates.clone().next()?;
        let Some(name) = host.map(host_key) else {
            return Some(first);
        };
        let named = |h: &Host| {
            h.server_name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(&name))
                || h.server_aliases
                    .iter()
                    .any(|a| wildcard_match_ignoring_case(a, &name))
        };
        Some(candidates.find(|(_, h)| named(h)).map_or(first, |(i, _)| i))
    }

    /// Routes a request. `Ok(None)`: no `WSGIScriptAlias` covers the path (the caller serves it
    /// otherwise, or answers 404).
    pub fn route(&self, req: &RouteRequest<'_>) -> Result<Option<Route>, RouteError> {
        let host = self.select_host(req.local_ip, req.local_port, req.host);
        self.route_in(host, req)
    }

    /// What mod_alias does with a request, which it does before mod_wsgi looks at
    /// `WSGIScriptAlias` (mod_wsgi's translate hook runs after mod_alias's): a `Redirect` or
    /// `RedirectMatch` that matches answers with a redirect; else an `Alias` or `AliasMatch`
    /// maps the URL to a file or folder. The virtual host's lines come first, then the main
    /// server's, each in configuration order; redirects before aliases. `query` is the
    /// request's query string (appended to a redirect's target that has none).
    pub fn map_alias(
        &self,
        req: &RouteRequest<'_>,
        query: Option<&str>,
    ) -> Result<Option<AliasTarget>, RouteError> {
        let host = self.select_host(req.local_ip, req.local_port, req.host);
        let own = self.host(host);
        let inherited = host.is_some().then_some(&self.main);
        if own.redirects.is_empty()
            && own.path_aliases.is_empty()
            && inherited.is_none_or(|h| h.redirects.is_empty() && h.path_aliases.is_empty())
        {
            return Ok(None);
        }
        let uri = normalize_path(req.path)?;
        let text = latin1(&uri);
        for h in std::iter::once(own).chain(inherited) {
            for r in &h.redirects {
                let target = match &r.regex {
                    Some(regex) => regex.captures(&text).map(|caps| {
                        let mut out = String::new();
                        caps.expand(
                            &apache_template(r.target.as_deref().unwrap_or("")),
                            &mut out,
                        );
                        out
                    }),
                    None => alias_match(r.url.as_bytes(), req.path.as_bytes()).map(|l| {
                        format!("{}{}", r.target.as_deref().unwrap_or(""), &req.path[l..])
                    }),
                };
                let Some(target) = target else { continue };
                let location = r.target.as_ref().map(|_| match query {
                    Some(q) if !target.contains('?') => format!("{target}?{q}"),
                    _ => target.clone(),
                });
                return Ok(Some(AliasTarget::Redirect {
                    status: r.status,
                    location,
                }));
            }
        }
        for h in std::iter::once(own).chain(inherited) {
            for a in &h.path_aliases {
                let path = match &a.regex {
                    Some(regex) => regex.captures(&text).map(|caps| {
                        let mut out = String::new();
                        caps.expand(&apache_template(&a.target), &mut out);
                        out
                    }),
                    None => alias_match(a.url.as_bytes(), &uri)
                        .map(|l| format!("{}{}", a.target, latin1(&uri[l..]))),
                };
                if let Some(path) = path {
                    let mut target = self.file_target(req, host, &uri, PathBuf::from(path));
                    if let (
                        AliasTarget::Script {
                            route: Ok(route), ..
                        },
                        None,
                    ) = (&mut target, &a.regex)
                    {
                        route.context = Some((a.url.clone(), a.target.clone()));
                    }
                    return Ok(Some(target));
                }
            }
        }
        Ok(None)
    }

    /// The file or folder a request nothing else maps is served from: its virtual host's
    /// `DocumentRoot` (else the main server's) joined with the decoded path; None without one.
    pub fn document_file(&self, req: &RouteRequest<'_>) -> Result<Option<AliasTarget>, RouteError> {
        let host = self.select_host(req.local_ip, req.local_port, req.host);
        let Some(root) = self
            .host(host)
            .document_root
            .as_ref()
            .or(self.main.document_root.as_ref())
        else {
            return Ok(None);
        };
        let uri = normalize_path(req.path)?;
        let mut path = root.clone().into_os_string();
        path.push(OsStr::from_bytes(&uri));
        Ok(Some(self.file_target(req, host, &uri, PathBuf::from(path))))
    }

    /// Routes a request within a virtual host the caller has already chosen (Apache selects
    /// virtual hosts itself); `None` is the main server.
    pub fn route_in(
        &self,
        host: Option<usize>,
        req: &RouteRequest<'_>,
    ) -> Result<Option<Route>, RouteError> {
        let uri = normalize_path(req.path)?;
        let own = self.host(host);
        let inherited = host.is_some().then_some(&self.main);
        for h in std::iter::once(own).chain(inherited) {
            for alias in h.alias_index.candidates(&h.script_aliases, &uri) {
                if let Some(found) = self.resolve_alias(alias, &uri)? {
                    return self.finish_route(req, host, &uri, alias, found).map(Some);
                }
            }
        }
        Ok(None)
    }

    /// The `WSGIScriptAlias` or `WSGIScriptAliasMatch` that covers `uri` (decoded and
    /// normalized, as Apache's `r->uri`), the first in configuration order of `host`'s, then
    /// of the main server's, and the path it maps `uri` to, as mod_wsgi's translate hook maps
    /// it: the target (`$N` substituted), then the rest of the URI (the whole URI for an alias
    /// of `/`). Nothing here looks at the file system: Apache's directory walk then splits the
    /// path into the script and `PATH_INFO`, and [`Config::wsgi_script_route`] routes what it
    /// found.
    pub fn match_script_alias(
        &self,
        host: Option<usize>,
        uri: &[u8],
    ) -> Option<ScriptAliasMatch<'_>> {
        let own = self.host(host);
        let inherited = host.is_some().then_some(&self.main);
        for h in std::iter::once(own).chain(inherited) {
            for alias in h.alias_index.candidates(&h.script_aliases, uri) {
                let Some((matched, target)) = alias_covers(alias, uri) else {
                    continue;
                };
                let location_is_root = match &alias.regex {
                    Some(_) => &uri[..matched] == b"/",
                    None => alias.url == "/",
                };
                let mut path = target.into_bytes();
                let target_len = path.len();
                path.extend_from_slice(if location_is_root {
                    uri
                } else {
                    &uri[matched..]
                });
                return Some(ScriptAliasMatch {
                    alias,
                    path: PathBuf::from(OsStr::from_bytes(&path)),
                    target_len,
                });
            }
        }
        None
    }

    /// The script, SCRIPT_NAME length and PATH_INFO start for `uri` under `alias`, if it
    /// matches.
    fn resolve_alias(
        &self,
        alias: &ScriptAlias,
        uri: &[u8],
    ) -> Result<Option<(PathBuf, usize)>, RouteError> {
        let Some((matched, target)) = alias_covers(alias, uri) else {
            return Ok(None);
        };
        let rest = &uri[matched..];
        if let Some(base) = alias_folder(alias) {
            return self
                .walk_directory(&base, Path::new(&target), uri, matched, rest)
                .map(Some);
        }
        // A file target: the script is the target; PATH_INFO is the rest of the URI.
        let script_name_len = if alias.regex.is_none() && alias.url.trim_end_matches('/').is_empty()
        {
            0
        } else {
            matched
        };
        Ok(Some((PathBuf::from(target), script_name_len)))
    }

    /// Walks `rest` below `start` until the first file, which must be a `.wsgi`/`.py` script
    /// inside `base`.
    fn walk_directory(
        &self,
        base: &Path,
        start: &Path,
        uri: &[u8],
        matched: usize,
        rest: &[u8],
    ) -> Result<(PathBuf, usize), RouteError> {
        let mut path = start.to_path_buf();
        if !path.is_dir() {
            // A templated target that names a file directly.
            return self.checked_script(base, path, matched);
        }
        let mut offset = 0;
        for segment in rest.split(|&b| b == b'/') {
            offset += segment.len() + 1;
            if segment.is_empty() {
                continue;
            }
            path.push(OsStr::from_bytes(segment));
            let consumed = (matched + offset - 1).min(uri.len());
            match std::fs::metadata(&path) {
                Ok(m) if m.is_dir() => continue,
                Ok(_) => return self.checked_script(base, path, consumed),
                Err(_) => {
                    return Err(RouteError::NotFound(format!(
                        "{} does not exist",
                        path.display()
                    )));
                }
            }
        }
        Err(RouteError::Forbidden(format!(
            "{} is a directory, not a WSGI script",
            path.display()
        )))
    }

    fn checked_script(
        &self,
        base: &Path,
        script: PathBuf,
        consumed: usize,
    ) -> Result<(PathBuf, usize), RouteError> {
        confined_script(base, &script)?;
        Ok((script, consumed))
    }

    fn finish_route(
        &self,
        req: &RouteRequest<'_>,
        host: Option<usize>,
        uri: &[u8],
        alias: &ScriptAlias,
        (script, script_name_len): (PathBuf, usize),
    ) -> Result<Route, RouteError> {
        let mut script_name = latin1(&uri[..script_name_len]);
        while script_name.ends_with('/') {
            script_name.pop();
        }
        let path_info = latin1(&uri[script_name_len..]);
        // Who may see it (`settings.authz`) is the front's to check: Apache checks it before
        // mod_wsgi runs, `wsgi serve` before the request reaches a worker.
        let (settings, levels) = self.settings_for(host, &script, uri);
        let env = crate::env::evaluate(&levels, req.facts);
        self.with_requester(req, host, &env, |who| {
            self.place(
                who,
                Placement {
                    script,
                    script_name,
                    path_info,
                    settings,
                    env: env.clone(),
                    options: &alias.options,
                    handler: None,
                },
            )
        })
    }

    /// Calls `f` with the [`Requester`] of `req` in `host`, whose variables are `env` (then
    /// the process's).
    pub(crate) fn with_requester<R>(
        &self,
        req: &RouteRequest<'_>,
        host: Option<usize>,
        env: &[(String, String)],
        f: impl FnOnce(&Requester<'_>) -> R,
    ) -> R {
        let host_header = req.host.map(host_name);
        let lookup_env = |var: &str| {
            env.iter()
                .find(|(k, _)| k == var)
                .map(|(_, v)| v.clone())
                .or_else(|| std::env::var(var).ok())
        };
        f(&Requester {
            host,
            server_name: self.canonical_name(host),
            port: req.local_port,
            host_header: host_header.as_deref(),
            env: &lookup_env,
        })
    }

    /// The route of a request placed at `mount`, as mod_wsgi's handler sees it: the process
    /// group (`process-group=`, else `WSGIProcessGroup`; checked to exist, to be allowed by
    /// `WSGIRestrictProcess`, and embedded mode by `WSGIRestrictEmbedded`), the application
    /// group and the callable object, named for `who`. Shared by `WSGIScriptAlias` routes,
    /// `wsgi-script` files and `WSGIHandlerScript`s, in `wsgi serve` and the Apache module.
    pub(crate) fn place(
        &self,
        who: &Requester<'_>,
        mount: Placement<'_>,
    ) -> Result<Route, RouteError> {
        let Placement {
            script,
            script_name,
            path_info,
            mut settings,
            env,
            options,
            handler,
        } = mount;
        let group_script_name = if self.server.case_sensitive {
            Cow::Borrowed(script_name.as_str())
        } else {
            Cow::Owned(script_name.to_lowercase())
        };
        let names = GroupNames {
            server_name: who.server_name,
            port: who.port,
            script_name: &group_script_name,
            host_header: who.host_header,
            host: self.host(who.host),
            env: who.env,
        };
        let process_group = match names.expand(&options.process_spec(&settings)) {
            name if name.is_empty() => ProcessGroup::Embedded,
            name => ProcessGroup::Daemon(name),
        };
        match &process_group {
            ProcessGroup::Embedded if self.server.restrict_embedded => {
                return Err(RouteError::Misconfigured(
                    "embedded mode is disabled by WSGIRestrictEmbedded On, and this request selects no daemon process group".into(),
                ));
            }
            ProcessGroup::Daemon(name) => {
                if self.daemon(name).is_none() {
                    return Err(RouteError::Misconfigured(format!(
                        "no WSGI daemon process called `{name}` has been configured"
                    )));
                }
                if let Some(allowed) = &settings.restrict_process {
                    if !allowed.iter().any(|a| a == name) {
                        return Err(RouteError::Misconfigured(format!(
                            "daemon process `{name}` cannot be used here: WSGIRestrictProcess allows only {}",
                            allowed.join(", ")
                        )));
                    }
                }
            }
            ProcessGroup::Embedded => {}
        }
        let application_group = names.expand(&options.application_spec(&settings));
        let callable_object = match (
            &handler,
            options
                .callable_object
                .as_ref()
                .or(settings.callable_object.as_ref()),
        ) {
            // mod_wsgi: a handler script's callable is always handle_request.
            (Some(_), _) => "handle_request".to_string(),
            (None, Some(c)) => names.callable(c),
            (None, None) => "application".to_string(),
        };
        if options.pass_authorization.is_some()
            && settings.pass_authorization != options.pass_authorization
        {
            Arc::make_mut(&mut settings).pass_authorization = options.pass_authorization;
        }
        Ok(Route {
            host: who.host,
            server_name: who.server_name.to_string(),
            port: who.port,
            script,
            script_name,
            path_info,
            process_group,
            application_group,
            callable_object,
            settings,
            env,
            handler,
            context: None,
        })
    }

    /// The WSGI settings and `SetEnv` variables for a script: server level, then the virtual
    /// host, then `<Directory>` sections (shortest first), `<DirectoryMatch>`, `<Files>`, and
    /// `<Location>` last, as Apache merges them. Where only the main server's level applies,
    /// its settings are shared, not copied.
    pub fn settings_for(
        &self,
        host: Option<usize>,
        script: &Path,
        uri: &[u8],
    ) -> (Arc<WsgiSettings>, Vec<&[EnvOp]>) {
        let mut settings = Arc::clone(&self.main.settings);
        let mut env: Vec<&[EnvOp]> = Vec::with_capacity(4);
        env.push(&self.main.env);
        let vhost = host.map(|i| &self.virtual_hosts[i]);
        if let Some(vhost) = vhost {
            Arc::make_mut(&mut settings).merge(&vhost.settings);
            env.push(&vhost.env);
        }
        let hosts = std::iter::once(&self.main).chain(vhost);
        if hosts.clone().all(|h| h.sections.is_empty()) {
            return (settings, env);
        }
        let dir = script.parent().unwrap_or(Path::new("/"));
        let file_name = script
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let uri_text = latin1(uri);
        let mut matching: Vec<(u8, usize, &DirSection)> = Vec::new();
        for h in hosts {
            for s in &h.sections {
                let applies = match (s.kind, &s.regex) {
                    (SectionKind::Directory, None) => {
                        dir.starts_with(s.pattern.trim_end_matches('/'))
                            || glob_dir_match(&s.pattern, dir)
                    }
                    (SectionKind::Directory, Some(r)) => r.is_match(&dir.to_string_lossy()),
                    (SectionKind::Files, None) => wildcard_match(&s.pattern, &file_name),
                    (SectionKind::Files, Some(r)) => r.is_match(&file_name),
                    (SectionKind::Location, None) => {
                        alias_match(s.pattern.as_bytes(), uri).is_some()
                    }
                    (SectionKind::Location, Some(r)) => r.is_match(&uri_text),
                };
                let parent_ok = s.parent.is_none_or(|p| {
                    let parent = &h.sections[p];
                    parent.kind != SectionKind::Directory
                        || dir.starts_with(parent.pattern.trim_end_matches('/'))
                });
                if applies && parent_ok {
                    let order = match (s.kind, s.regex.is_some()) {
                        (SectionKind::Directory, false) => 0,
                        (SectionKind::Directory, true) => 1,
                        (SectionKind::Files, _) => 2,
                        (SectionKind::Location, _) => 3,
                    };
                    let depth = Path::new(&s.pattern).components().count();
                    matching.push((order, if order == 0 { depth } else { 0 }, s));
                }
            }
        }
        matching.sort_by_key(|(order, depth, _)| (*order, *depth));
        for (_, _, s) in matching {
            Arc::make_mut(&mut settings).merge(&s.settings);
            if !s.env.is_empty() {
                env.push(&s.env);
            }
        }
        (settings, env)
    }
}

/// Apache's `$N` substitutions in the regex crate's `${N}` form (so `$1_x` stays group 1).
fn apache_template(target: &str) -> String {
    let mut out = String::with_capacity(target.len() + 8);
    let mut chars = target.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('$', Some(d)) if d.is_ascii_digit() => {
                out.push_str(&format!("${{{d}}}"));
                chars.next();
            }
            ('$', _) => out.push_str("$$"),
            _ => out.push(c),
        }
    }
    out
}

/// `<Directory /srv/*/app>` wildcards.
fn glob_dir_match(pattern: &str, dir: &Path) -> bool {
    if !pattern.contains(['*', '?', '[']) {
        return false;
    }
    let depth = Path::new(pattern).components().count();
    let prefix: PathBuf = dir.components().take(depth).collect();
    glob::Pattern::new(pattern.trim_end_matches('/')).is_ok_and(|p| p.matches_path(&prefix))
}

/// Shell-style `*` and `?` matching (ServerAlias, `<Files>`). A pattern without `*`, `?`
/// or `[` (most `ServerAlias` names, asked on every request) is compared as it is, and `*`
/// then such a literal (`*.example.org`) as a suffix; any other is compiled once per thread
/// (patterns come from the configuration, never from a request, so the cache stays as small
/// as the configurations loaded).
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    glob_match(pattern, text, true)
}

/// [`wildcard_match`] ignoring ASCII case, as host names compare (`ServerAlias`).
pub fn wildcard_match_ignoring_case(pattern: &str, text: &str) -> bool {
    glob_match(pattern, text, false)
}

fn glob_match(pattern: &str, text: &str, case_sensitive: bool) -> bool {
    let literal_eq = |a: &[u8], b: &[u8]| {
        if case_sensitive {
            a == b
        } else {
            a.eq_ignore_ascii_case(b)
        }
    };
    if !pattern.contains(['*', '?', '[']) {
        return literal_eq(pattern.as_bytes(), text.as_bytes());
    }
    // `*` then a literal (`*.example.org`, `*.py`: the usual wildcard) is a suffix.
    if let Some(suffix) = pattern.strip_prefix('*') {
        if !suffix.contains(['*', '?', '[']) {
            let (text, suffix) = (text.as_bytes(), suffix.as_bytes());
            return text.len() >= suffix.len()
                && literal_eq(&text[text.len() - suffix.len()..], suffix);
        }
    }
    thread_local! {
        static COMPILED: std::cell::RefCell<std::collections::HashMap<String, Option<glob::Pattern>>> =
            std::cell::RefCell::new(std::collections::HashMap::new());
    }
    let options = glob::MatchOptions {
        case_sensitive,
        ..glob::MatchOptions::new()
    };
    COMPILED.with_borrow_mut(|compiled| {
        if !compiled.contains_key(pattern) {
            compiled.insert(pattern.to_string(), glob::Pattern::new(pattern).ok());
        }
        compiled[pattern]
            .as_ref()
            .is_some_and(|p| p.matches_with(text, options))
    })
}

/// The host name of a Host header (without port, lowercased).
pub fn host_name(header: &str) -> String {
    host_key(header).into_owned()
}

/// [`host_name`], borrowed from the header when it is lowercase already (as clients send it).
fn host_key(header: &str) -> Cow<'_, str> {
    let h = header.trim();
    let name = match h.strip_prefix('[') {
        Some(stripped) => {
            let ip = stripped.split(']').next().unwrap_or("");
            return Cow::Owned(format!("[{}]", ip.to_ascii_lowercase()));
        }
        None => h.split(':').next().unwrap_or(""),
    };
    let name = name.trim_end_matches('.');
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_and_plain_names_match_as_globs_do() {
        for (pattern, text) in [
            ("www.example.org", "www.example.org"),
            ("www.example.org", "www.example.org."),
            ("www.example.org", "wwwxexample.org"),
            ("*.example.org", "a.example.org"),
            ("*.example.org", "example.org"),
            ("a?c.py", "abc.py"),
            ("[ab].py", "b.py"),
            ("[ab].py", "c.py"),
            ("*.example.org", "a.example.com"),
            ("*.example.org", "b.a.example.org"),
            ("*.example.org", ".example.org"),
            ("*", ""),
            ("*.py", "app.PY"),
            ("*.py", "py"),
            ("*é", "café"),
            ("a*.py", "ab.py"),
            ("[", "["),
            ("index.wsgi", "Index.wsgi"),
            ("", ""),
            ("", "x"),
        ] {
            let by_glob = glob::Pattern::new(pattern).is_ok_and(|p| p.matches(text));
            // Twice: compiled, then from this thread's cache.
            assert_eq!(wildcard_match(pattern, text), by_glob, "{pattern} / {text}");
            assert_eq!(
                wildcard_match(pattern, text),
                by_glob,
                "{pattern} / {text} (cached)"
            );
            // Host names compare as the lowercased pattern against the lowercased name.
            let lower = glob::Pattern::new(&pattern.to_ascii_lowercase())
                .is_ok_and(|p| p.matches(&text.to_ascii_lowercase()));
            for (p, t) in [
                (pattern.to_string(), text.to_ascii_uppercase()),
                (pattern.to_ascii_uppercase(), text.to_string()),
            ] {
                assert_eq!(wildcard_match_ignoring_case(&p, &t), lower, "{p} / {t}");
            }
        }
    }

    #[test]
    fn paths_are_normalized() {
        let n = |p: &str| normalize_path(p).map(|b| String::from_utf8(b).unwrap());
        assert_eq!(n("/a//b/./c").unwrap(), "/a/b/c");
        assert_eq!(n("/a/b/../c/").unwrap(), "/a/c/");
        assert_eq!(n("/").unwrap(), "/");
        assert_eq!(n("/%61pp").unwrap(), "/app");
        assert_eq!(n("/x/%2e%2e/y").unwrap(), "/y");
        assert!(matches!(
            n("/../etc/passwd"),
            Err(RouteError::BadRequest(_))
        ));
        assert!(matches!(n("/%2e%2e/etc"), Err(RouteError::BadRequest(_))));
        assert!(matches!(n("/a%2fb"), Err(RouteError::NotFound(_))));
        assert!(matches!(n("/a%00b"), Err(RouteError::NotFound(_))));
        for bad in ["/a%zz", "/a%2", "/a%", "/%g1/x", "/a%%41"] {
            assert!(
                matches!(n(bad), Err(RouteError::BadRequest(ref m)) if m.contains("percent-escape")),
                "{bad}"
            );
        }
        assert_eq!(n("/a%41%62%2D").unwrap(), "/aAb-");
    }

    #[test]
    fn normal_paths_are_taken_as_they_are() {
        // Every path of up to three segments from these: those the quick look takes as they
        // are come out of the full normalization unchanged, and the others do not.
        let parts = ["", ".", "..", "a", "b.c", "%41", "d%2fe", "f\0", "..g"];
        let mut paths = vec!["/".to_string()];
        for a in parts {
            paths.push(format!("/{a}"));
            for b in parts {
                paths.push(format!("/{a}/{b}"));
                for c in parts {
                    paths.push(format!("/{a}/{b}/{c}"));
                }
            }
        }
        let mut quick = 0;
        for p in &paths {
            let full = normalize_fully(p);
            if is_normal(p.as_bytes()) {
                quick += 1;
                assert_eq!(full.as_deref().ok(), Some(p.as_bytes()), "{p:?}");
                assert_eq!(normalize_path(p).unwrap(), p.as_bytes(), "{p:?}");
            } else {
                assert_ne!(full.as_deref().ok(), Some(p.as_bytes()), "{p:?}");
            }
        }
        assert!(quick > 20, "{quick}");
        assert!(is_normal(b"/app/x.py/rest/"));
        assert!(!is_normal(b"/app//x"));
    }

    #[test]
    fn aliases_match_on_segment_boundaries() {
        assert_eq!(alias_match(b"/myapp", b"/myapp/x"), Some(6));
        assert_eq!(alias_match(b"/myapp", b"/myapp"), Some(6));
        assert_eq!(alias_match(b"/myapp", b"/myapp2"), None);
        assert_eq!(alias_match(b"/", b"/anything"), Some(1));
        assert_eq!(alias_match(b"/a//b", b"/a/b/c"), Some(4));
        assert_eq!(alias_match(b"/wsgi/", b"/wsgi/x"), Some(6));
    }

    #[test]
    fn templates_keep_group_numbers_apart() {
        assert_eq!(apache_template("/web/$1_x.wsgi"), "/web/${1}_x.wsgi");
        assert_eq!(apache_template("/a$"), "/a$$");
    }

    /// With enough aliases to be indexed, routing still takes the first match in
    /// configuration order, across same-segment, catch-all and regex aliases.
    #[test]
    fn indexed_aliases_keep_configuration_order() {
        let mut text = String::from("ServerName bench.example.com\n");
        for i in 0..40 {
            text.push_str(&format!("WSGIScriptAlias /app{i} /srv/app{i}.wsgi\n"));
        }
        text.push_str("WSGIScriptAlias /shop/admin /srv/admin.wsgi\n");
        text.push_str("WSGIScriptAlias /shop /srv/shop.wsgi\n");
        text.push_str("WSGIScriptAlias /shop/late /srv/never.wsgi\n");
        text.push_str("WSGIScriptAliasMatch ^/api/v(\\d+) /srv/api.wsgi\n");
        text.push_str("WSGIScriptAlias /api /srv/api-rest.wsgi\n");
        text.push_str("WSGIScriptAlias / /srv/root.wsgi\n");
        text.push_str("WSGIScriptAlias /after-root /srv/never.wsgi\n");
        let config = crate::load_str(
            &text,
            Path::new("t.conf"),
            &crate::reader::ReadOptions::default(),
        )
        .unwrap();
        assert!(config.main.script_aliases.len() >= INDEX_FROM);
        let script = |path: &str| {
            let request = RouteRequest {
                local_ip: None,
                local_port: 80,
                host: None,
                path,
                facts: None,
            };
            let route = config.route(&request).unwrap().unwrap();
            (route.script.display().to_string(), route.script_name)
        };
        for _ in 0..2 {
            assert_eq!(script("/app7/x"), ("/srv/app7.wsgi".into(), "/app7".into()));
            assert_eq!(
                script("//app39"),
                ("/srv/app39.wsgi".into(), "/app39".into())
            );
            assert_eq!(script("/app4x"), ("/srv/root.wsgi".into(), "".into()));
            assert_eq!(script("/shop/admin/users").0, "/srv/admin.wsgi");
            assert_eq!(script("/shop/late").0, "/srv/shop.wsgi");
            assert_eq!(script("/api/v2/items").0, "/srv/api.wsgi");
            assert_eq!(script("/api/other").0, "/srv/api-rest.wsgi");
            assert_eq!(script("/after-root").0, "/srv/root.wsgi");
        }
        assert_eq!(first_segment(b"//a/b"), b"a");
        assert_eq!(first_segment(b"/"), b"");
    }

    #[test]
    fn host_names() {
        assert_eq!(host_name("Example.COM:8080"), "example.com");
        assert_eq!(host_name("[::1]:80"), "[::1]");
        assert_eq!(host_name("[FE80::1]:80"), "[fe80::1]");
        assert_eq!(host_name(" www.example.org.:443 "), "www.example.org");
        // A lowercase name, as clients send it, is not copied.
        assert!(matches!(
            host_key("www.example.org:8080"),
            Cow::Borrowed("www.example.org")
        ));
        assert!(matches!(host_key("WWW.example.org"), Cow::Owned(_)));
    }

    #[test]
    fn native_strings_are_latin1() {
        assert_eq!(latin1(b"/app/x y"), "/app/x y");
        assert_eq!(latin1(b""), "");
        // Each byte past ASCII is the character of its code point, not UTF-8 decoded.
        assert_eq!(latin1(b"/caf\xc3\xa9"), "/caf\u{c3}\u{a9}");
        assert_eq!(latin1(b"\xff/a"), "\u{ff}/a");
        assert_eq!(latin1_bytes("/caf\u{c3}\u{a9}"), b"/caf\xc3\xa9");
        assert_eq!(latin1_bytes("/plain"), b"/plain");
        assert_eq!(latin1_bytes("\u{20ac}"), b"?");
    }
}
