//! The typed configuration: what a set of Apache/mod_wsgi directives means.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use regex::Regex;
use serde::Serialize;

use crate::daemon_options::DaemonOptions;
use crate::error::ConfigWarning;
use crate::reader::Span;

/// `DocumentRoot` when none is configured: Apache httpd's compiled-in default as Debian (the
/// Apache these tests and most deployments use) builds it.
pub const DEFAULT_DOCUMENT_ROOT: &str = "/var/www/html";

/// `ServerAdmin` when none is configured: Apache httpd's placeholder.
pub const DEFAULT_SERVER_ADMIN: &str = "[no address given]";

/// A whole server's configuration.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// `ServerRoot`: relative paths resolve against it.
    pub server_root: PathBuf,
    /// The Python settings that apply to the whole server (`WSGIPythonHome` and friends).
    pub python: PythonSettings,
    /// Server-wide mod_wsgi settings that are not about Python.
    pub server: ServerSettings,
    /// The main server: directives outside any `<VirtualHost>`.
    pub main: Host,
    /// Every `<VirtualHost>`, in configuration order.
    pub virtual_hosts: Vec<Host>,
    /// Every `WSGIDaemonProcess`, in configuration order (mod_wsgi's group ids are 1-based
    /// positions in this list).
    pub daemons: Vec<DaemonGroup>,
    /// Every `WSGIImportScript`, in configuration order.
    pub import_scripts: Vec<ImportScript>,
    /// `Listen` directives.
    pub listen: Vec<Listen>,
    /// mod_remoteip's `RemoteIPProxyProtocol` lines: the addresses whose connections start
    /// with a PROXY header.
    pub proxy_protocol: crate::remoteip::ProxyProtocol,
    /// Apache's `User`, the default user of daemon processes.
    pub user: Option<String>,
    /// Apache's `Group`.
    pub group: Option<String>,
    /// Accepted things worth a look.
    pub warnings: Vec<ConfigWarning>,
    /// Every directive and section the file held (after `Include`s and conditionals), in
    /// order: what `wsgi serve` checks it implements. Empty when Apache built the
    /// configuration.
    pub uses: Vec<DirectiveUse>,
    /// Lines whose form `wsgi serve` does not implement although it implements the
    /// directive (an `Alias` inside `<Location>`), with why: refused like the directives of
    /// [`crate::serve_support`].
    pub unserved_forms: Vec<(Span, String)>,
    /// `LogFormat format nickname` definitions, in order (a later one wins).
    pub log_formats: Vec<(String, String)>,
    /// The main server's `ErrorLog` file.
    pub error_log: Option<PathBuf>,
    /// Whether some `AddHandler` or `SetHandler` line gives files a handler: only then does
    /// a request for a file look for one ([`crate::handlers`]).
    pub maps_handlers: bool,
}

/// A directive or section as it appears in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectiveUse {
    /// Its name as written (`Require`, `Location` for a `<Location>` section).
    pub name: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Whether it opens a section.
    pub section: bool,
    /// Where it is.
    pub span: Span,
}

impl Config {
    /// What the processes of `group` (`%{GLOBAL}`: embedded mode) load at start, as mod_wsgi
    /// 5.3/5.4 does: every `WSGIImportScript` with that `process-group=`, and every
    /// `WSGIScriptAlias` whose options name both that process group and a literal application
    /// group (`%{GLOBAL}` or a name), with a single-file target. Configuration order when they
    /// are all in one file; across included files, import scripts first.
    pub fn preloads(&self, group: &GroupSpec) -> Vec<Preload> {
        let literal = |g: &GroupSpec| match g {
            GroupSpec::Global => Some(String::new()),
            GroupSpec::Named(n) => Some(n.clone()),
            _ => None,
        };
        let mut found = Vec::new();
        for s in &self.import_scripts {
            if let (true, Some(app)) = (s.process_group == *group, literal(&s.application_group)) {
                found.push(Preload {
                    span: s.span.clone(),
                    script: s.path.clone(),
                    application_group: app,
                    callable: None,
                });
            }
        }
        let hosts = std::iter::once(&self.main).chain(self.virtual_hosts.iter());
        for alias in hosts.flat_map(|h| h.script_aliases.iter()) {
            let o = &alias.options;
            let (Some(process), Some(app)) = (&o.process_group, &o.application_group) else {
                continue;
            };
            let single_file = alias.regex.is_none() && !alias.is_directory();
            if let (true, true, Some(app)) = (process == group, single_file, literal(app)) {
                found.push(Preload {
                    span: alias.span.clone(),
                    script: PathBuf::from(&alias.target),
                    application_group: app,
                    callable: Some(
                        o.callable_object
                            .clone()
                            .unwrap_or_else(|| "application".into()),
                    ),
                });
            }
        }
        if found.iter().all(|p| p.span.file == found[0].span.file) {
            found.sort_by_key(|p| p.span.line);
        }
        found
    }

    /// The host at `index`: `None` is the main server.
    pub fn host(&self, index: Option<usize>) -> &Host {
        match index {
            None => &self.main,
            Some(i) => &self.virtual_hosts[i],
        }
    }

    /// `DOCUMENT_ROOT` and `SERVER_ADMIN` of a request to virtual host `host` (None: the main
    /// server), as Apache gives them to CGI: the host's `DocumentRoot`/`ServerAdmin`, else the
    /// main server's, else Apache's defaults ([`DEFAULT_DOCUMENT_ROOT`],
    /// [`DEFAULT_SERVER_ADMIN`]).
    pub fn server_identity(&self, host: Option<usize>) -> (&std::ffi::OsStr, &str) {
        let own = self.host(host);
        let root = own
            .document_root
            .as_ref()
            .or(self.main.document_root.as_ref())
            .map_or(std::ffi::OsStr::new(DEFAULT_DOCUMENT_ROOT), |p| {
                p.as_os_str()
            });
        let admin = own
            .server_admin
            .as_deref()
            .or(self.main.server_admin.as_deref())
            .unwrap_or(DEFAULT_SERVER_ADMIN);
        (root, admin)
    }

    /// The protocols a host speaks, in its order of preference: its own `Protocols`, else the
    /// main server's, else Apache's default, `http/1.1` alone (so HTTP/2 only where `h2`, for
    /// TLS, or `h2c`, for cleartext, is listed, as with mod_http2).
    pub fn protocols(&self, host: Option<usize>) -> &[String] {
        static DEFAULT: std::sync::LazyLock<Vec<String>> =
            std::sync::LazyLock::new(|| vec!["http/1.1".to_string()]);
        self.host(host)
            .protocols
            .as_deref()
            .or(self.main.protocols.as_deref())
            .unwrap_or(&DEFAULT)
    }

    /// Whether a host's own order of [`Config::protocols`] wins over the client's when they
    /// negotiate one (TLS ALPN): its own `ProtocolsHonorOrder`, else the main server's, else
    /// Apache's default, `On`. `Off`: the client's order of preference wins.
    pub fn protocols_honor_order(&self, host: Option<usize>) -> bool {
        self.host(host)
            .protocols_honor_order
            .or(self.main.protocols_honor_order)
            .unwrap_or(true)
    }

    /// The daemon group named `name` (names are unique).
    pub fn daemon(&self, name: &str) -> Option<&DaemonGroup> {
        self.daemons.iter().find(|d| d.name == name)
    }

    /// The mod_ssl settings that apply to a host: its own over the main server's.
    pub fn tls_for(&self, host: Option<usize>) -> crate::tls::TlsSettings {
        match host {
            None => self.main.tls.clone(),
            Some(_) => self.host(host).tls.over(&self.main.tls),
        }
    }

    /// The clients that may connect without a PROXY header to a connection whose default
    /// host is `host` (None: the main server): the host's `RemoteIPProxyProtocolExceptions`,
    /// else the main server's, as mod_remoteip merges them.
    pub fn proxy_protocol_exceptions(&self, host: Option<usize>) -> &[IpNet] {
        let own = host.and_then(|i| {
            self.virtual_hosts
                .get(i)?
                .proxy_protocol_exceptions
                .as_deref()
        });
        own.or(self.main.proxy_protocol_exceptions.as_deref())
            .unwrap_or_default()
    }

    /// The settings of every level of the configuration: the main server, the virtual hosts,
    /// and their sections.
    pub fn all_settings(&self) -> impl Iterator<Item = &WsgiSettings> {
        std::iter::once(&self.main)
            .chain(&self.virtual_hosts)
            .flat_map(|h| {
                std::iter::once(&*h.settings).chain(h.sections.iter().map(|s| &s.settings))
            })
    }

    /// A host's `ServerName`, else the main server's.
    pub fn server_name(&self, host: Option<usize>) -> Option<&str> {
        self.host(host)
            .server_name
            .as_deref()
            .or(self.main.server_name.as_deref())
    }
}

/// A value with the directive it came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Located<T> {
    /// The value.
    pub value: T,
    /// Where it was set (None when it came from outside a file, such as a command-line flag).
    #[serde(serialize_with = "serialize_span")]
    pub span: Option<Span>,
}

fn serialize_span<S: serde::Serializer>(span: &Option<Span>, s: S) -> Result<S::Ok, S::Error> {
    match span {
        Some(span) => s.serialize_str(&span.to_string()),
        None => s.serialize_none(),
    }
}

/// Python start-up settings for the whole server.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PythonSettings {
    /// `WSGIPythonHome`: the venv root for embedded mode and for daemon groups without
    /// `python-home`.
    pub home: Option<Located<PathBuf>>,
    /// `WSGIPythonPath`: folders put at the front of `sys.path` in embedded mode.
    pub path: Vec<PathBuf>,
    /// `WSGIPythonOptimize`.
    pub optimize: u8,
    /// `WSGIPythonHashSeed`: `None` is `random`.
    pub hash_seed: Option<u32>,
    /// `WSGIPythonWarnings`, in order.
    pub warnings: Vec<String>,
    /// `WSGIPythonEggs`.
    pub eggs: Option<PathBuf>,
    /// `WSGIDontWriteBytecode`.
    pub dont_write_bytecode: bool,
    /// `WSGIDestroyInterpreter`.
    pub destroy_interpreter: bool,
    /// `WSGISwitchInterval`, seconds.
    pub switch_interval: Option<f64>,
    /// `WSGIPerInterpreterGIL`.
    pub per_interpreter_gil: bool,
    /// `WSGIFreeThreading`.
    pub free_threading: bool,
    /// `WSGIRestrictStdin`.
    pub restrict_stdin: bool,
    /// `WSGIRestrictStdout`.
    pub restrict_stdout: bool,
    /// `WSGIRestrictSignal`.
    pub restrict_signal: bool,
    /// `<WSGIInterpreterOptions>` sections (mod_wsgi 6), in configuration order.
    pub interpreter_options: Vec<InterpreterOptionsBlock>,
}

/// `<WSGIInterpreterOptions process-group=NAME application-group=NAME>` (mod_wsgi 6): settings
/// for the interpreters it selects.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InterpreterOptionsBlock {
    /// Where the section opens.
    #[serde(serialize_with = "serialize_span_value")]
    pub span: Span,
    /// What it selects and what it sets.
    pub rule: InterpreterRule,
}

fn serialize_span_value<S: serde::Serializer>(span: &Span, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&span.to_string())
}

/// A `<WSGIInterpreterOptions>` section's selectors and settings, as a daemon process is sent
/// them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct InterpreterRule {
    /// `process-group=`: the daemon process group whose interpreters it selects (`""`, from
    /// `%{GLOBAL}`: the serving processes, embedded mode); None: every process.
    pub process_group: Option<String>,
    /// `application-group=`: the application group (`""`, from `%{GLOBAL}`: the main
    /// interpreter), matched exactly, no pattern; None: every interpreter.
    pub application_group: Option<String>,
    /// `WSGIPythonPath` folders (with `site.addsitedir`, in front of `sys.path`).
    pub python_path: Vec<PathBuf>,
    /// `WSGISwitchInterval` (only in sections without `application-group=`: it is
    /// process-wide).
    pub switch_interval: Option<f64>,
    /// `WSGIPerInterpreterGIL`.
    pub per_interpreter_gil: Option<bool>,
    /// `WSGIFreeThreading` (only in sections without `application-group=`).
    pub free_threading: Option<bool>,
    /// `WSGIRestrictStdin`.
    pub restrict_stdin: Option<bool>,
    /// `WSGIRestrictStdout`.
    pub restrict_stdout: Option<bool>,
    /// `WSGIRestrictSignal` (`Off` only: see the builder).
    pub restrict_signal: Option<bool>,
}

impl InterpreterRule {
    /// How many selectors it has if it selects the interpreter `application_group` of process
    /// group `process_group` (`""`: embedded mode), else None; with `application_group` None,
    /// whether it selects the process whatever the interpreter (no `application-group=`).
    fn specificity(&self, process_group: &str, application_group: Option<&str>) -> Option<u8> {
        let mut n = 0;
        if let Some(pg) = &self.process_group {
            if pg != process_group {
                return None;
            }
            n += 1;
        }
        if let Some(ag) = &self.application_group {
            if Some(ag.as_str()) != application_group {
                return None;
            }
            n += 1;
        }
        Some(n)
    }
}

/// What mod_wsgi 6 gives the interpreters of one process from the top-level directives and
/// the `<WSGIInterpreterOptions>` sections: [`InterpreterRules::resolve`] per interpreter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct InterpreterRules {
    /// `WSGIPerInterpreterGIL` at the top level.
    pub per_interpreter_gil: bool,
    /// `WSGIRestrictStdin` at the top level.
    pub restrict_stdin: bool,
    /// `WSGIRestrictStdout` at the top level.
    pub restrict_stdout: bool,
    /// The sections, in configuration order.
    pub rules: Vec<InterpreterRule>,
}

/// One interpreter's settings ([`InterpreterRules::resolve`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InterpreterChoices {
    /// The sections' `WSGIPythonPath`s in the order mod_wsgi adds them, each in front of the
    /// ones before: least specific first, then configuration order (the most specific ends up
    /// first in `sys.path`).
    pub python_path_layers: Vec<Vec<PathBuf>>,
    /// Its own GIL.
    pub per_interpreter_gil: bool,
    /// `sys.stdin` raises on use.
    pub restrict_stdin: bool,
    /// `sys.stdout` raises on use.
    pub restrict_stdout: bool,
}

impl InterpreterRules {
    /// The settings of the interpreter `application_group` (`""`: the main one) in a process
    /// of `process_group` (`""`: embedded mode), as mod_wsgi 6 resolves them: of the sections
    /// selecting it, for each setting the most specific one that sets it wins (a section naming
    /// both groups over one naming either, over one naming neither), the later of equally
    /// specific ones; without any, the top-level directive's.
    pub fn resolve(&self, process_group: &str, application_group: &str) -> InterpreterChoices {
        let mut choices = InterpreterChoices {
            python_path_layers: Vec::new(),
            per_interpreter_gil: self.per_interpreter_gil,
            restrict_stdin: self.restrict_stdin,
            restrict_stdout: self.restrict_stdout,
        };
        let selected: Vec<(u8, &InterpreterRule)> = self
            .rules
            .iter()
            .filter_map(|r| Some((r.specificity(process_group, Some(application_group))?, r)))
            .collect();
        let pick = |get: fn(&InterpreterRule) -> Option<bool>, base: bool| {
            selected
                .iter()
                .filter_map(|(n, r)| Some((*n, get(r)?)))
                .fold((None, base), |(best, value), (n, v)| match best {
                    Some(b) if n < b => (best, value),
                    _ => (Some(n), v),
                })
                .1
        };
        choices.per_interpreter_gil = pick(|r| r.per_interpreter_gil, choices.per_interpreter_gil);
        choices.restrict_stdin = pick(|r| r.restrict_stdin, choices.restrict_stdin);
        choices.restrict_stdout = pick(|r| r.restrict_stdout, choices.restrict_stdout);
        let mut layers: Vec<(u8, &Vec<PathBuf>)> = selected
            .iter()
            .filter(|(_, r)| !r.python_path.is_empty())
            .map(|(n, r)| (*n, &r.python_path))
            .collect();
        // Stable: equally specific sections keep their configuration order.
        layers.sort_by_key(|(n, _)| *n);
        choices.python_path_layers = layers.into_iter().map(|(_, p)| p.clone()).collect();
        choices
    }

    /// The switch interval the sections give every interpreter of a process of
    /// `process_group` (those without `application-group=`), the most specific (the later of
    /// equals) winning; None: none does.
    pub fn switch_interval(&self, process_group: &str) -> Option<f64> {
        self.for_process(process_group, |r| r.switch_interval)
    }

    /// Whether a section selecting the process of `process_group` asks for `WSGIFreeThreading
    /// On` (the most specific, the later of equals, deciding).
    pub fn free_threading(&self, process_group: &str) -> Option<bool> {
        self.for_process(process_group, |r| r.free_threading)
    }

    /// The setting `get` of the most specific section (the later of equals) that selects the
    /// processes of `process_group` whatever the interpreter and sets it.
    fn for_process<T: Copy>(
        &self,
        process_group: &str,
        get: fn(&InterpreterRule) -> Option<T>,
    ) -> Option<T> {
        self.rules
            .iter()
            .filter_map(|r| Some((r.specificity(process_group, None)?, get(r)?)))
            .fold(None, |best: Option<(u8, T)>, (n, v)| match best {
                Some((b, _)) if n < b => best,
                _ => Some((n, v)),
            })
            .map(|(_, v)| v)
    }

    /// Whether some interpreter may get its own GIL (the process then prepares for it).
    pub fn any_own_gil(&self) -> bool {
        self.per_interpreter_gil
            || self
                .rules
                .iter()
                .any(|r| r.per_interpreter_gil == Some(true))
    }
}

impl PythonSettings {
    /// The rules for the interpreters ([`InterpreterRules`]) these settings make.
    pub fn interpreter_rules(&self) -> InterpreterRules {
        InterpreterRules {
            per_interpreter_gil: self.per_interpreter_gil,
            restrict_stdin: self.restrict_stdin,
            restrict_stdout: self.restrict_stdout,
            rules: self
                .interpreter_options
                .iter()
                .map(|b| b.rule.clone())
                .collect(),
        }
    }

    /// The switch interval of the processes of `process_group` (`""`: embedded mode) but for a
    /// `WSGIDaemonProcess switch-interval=`: a `<WSGIInterpreterOptions>` section's, else
    /// `WSGISwitchInterval`.
    pub fn switch_interval_for(&self, process_group: &str) -> Option<f64> {
        self.interpreter_rules()
            .switch_interval(process_group)
            .or(self.switch_interval)
    }
}

impl Default for PythonSettings {
    fn default() -> Self {
        PythonSettings {
            home: None,
            path: Vec::new(),
            optimize: 0,
            hash_seed: None,
            warnings: Vec::new(),
            eggs: None,
            dont_write_bytecode: false,
            destroy_interpreter: true,
            switch_interval: None,
            per_interpreter_gil: false,
            free_threading: false,
            restrict_stdin: false,
            restrict_stdout: false,
            restrict_signal: true,
            interpreter_options: Vec::new(),
        }
    }
}

/// Server-wide settings that are not about Python start-up.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerSettings {
    /// `WSGIRestrictEmbedded`.
    pub restrict_embedded: bool,
    /// `WSGISocketPrefix` (relative to ServerRoot when relative).
    pub socket_prefix: Option<PathBuf>,
    /// `WSGISocketRotation`.
    pub socket_rotation: bool,
    /// `WSGIAcceptMutex`.
    pub accept_mutex: Option<String>,
    /// `WSGICaseSensitivity`.
    pub case_sensitive: bool,
    /// `WSGIServerMetrics`.
    pub server_metrics: bool,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            restrict_embedded: false,
            socket_prefix: None,
            socket_rotation: true,
            accept_mutex: None,
            case_sensitive: true,
            server_metrics: false,
        }
    }
}

/// The main server or one `<VirtualHost>`.
#[derive(Debug, Clone, Default)]
pub struct Host {
    /// The `<VirtualHost>` line (None for the main server).
    pub span: Option<Span>,
    /// The addresses of `<VirtualHost addr ...>` (empty for the main server).
    pub addresses: Vec<HostAddress>,
    /// `ServerName` (host part).
    pub server_name: Option<String>,
    /// The port of `ServerName host:port`, if given.
    pub server_name_port: Option<u16>,
    /// `ServerAlias` names (may hold `*` and `?` wildcards).
    pub server_aliases: Vec<String>,
    /// `WSGIScriptAlias` and `WSGIScriptAliasMatch`, in configuration order.
    pub script_aliases: Vec<ScriptAlias>,
    /// WSGI settings at this host's level (outside any `<Directory>`/`<Location>`); shared
    /// with the routes of requests that no other level's settings touch.
    pub settings: std::sync::Arc<WsgiSettings>,
    /// `<Directory>`, `<Location>` and `<Files>` sections with WSGI settings or access rules.
    pub sections: Vec<DirSection>,
    /// `SetEnv`, `UnsetEnv`, `PassEnv`, `SetEnvIf`... at this host's level, in order.
    pub env: Vec<crate::env::EnvOp>,
    /// mod_alias's `Alias` and `AliasMatch`, in configuration order.
    pub path_aliases: Vec<PathAlias>,
    /// mod_log_config's `CustomLog` and `TransferLog` lines of this host.
    pub custom_logs: Vec<CustomLog>,
    /// A `<VirtualHost>`'s own `ErrorLog` file.
    pub error_log: Option<PathBuf>,
    /// mod_ssl's settings set at this level (see [`Config::tls_for`]).
    pub tls: crate::tls::TlsSettings,
    /// `DocumentRoot`: where URLs nothing else maps are served from.
    pub document_root: Option<PathBuf>,
    /// `ServerAdmin` (the environ's `SERVER_ADMIN`).
    pub server_admin: Option<String>,
    /// Apache's `Protocols` set at this level, lowercase, in the order written (see
    /// [`Config::protocols`]).
    pub protocols: Option<Vec<String>>,
    /// Apache's `ProtocolsHonorOrder` set at this level (see [`Config::protocols_honor_order`]).
    pub protocols_honor_order: Option<bool>,
    /// mod_remoteip's `RemoteIPProxyProtocolExceptions` set at this level: clients that may
    /// connect without a PROXY header (see [`Config::proxy_protocol_exceptions`]).
    pub proxy_protocol_exceptions: Option<Vec<IpNet>>,
    /// mod_alias's `Redirect`, `RedirectMatch`, `RedirectPermanent`, `RedirectTemp`, in
    /// configuration order.
    pub redirects: Vec<Redirect>,
    /// `script_aliases` by the first segment of their URL, built on the first request routed
    /// (a configuration with thousands of mounts is not scanned whole per request).
    pub(crate) alias_index: crate::route::AliasIndex,
}

/// `Alias URL-path file-path` or `AliasMatch regex file-path`: URLs served from the file
/// system (as static files by `wsgi serve`).
#[derive(Debug, Clone)]
pub struct PathAlias {
    /// Where it is.
    pub span: Span,
    /// The URL path (`Alias`) or the expression as written (`AliasMatch`).
    pub url: String,
    /// The compiled expression of `AliasMatch`.
    pub regex: Option<Regex>,
    /// The file or folder (with `$N` for `AliasMatch`).
    pub target: String,
}

/// `CustomLog file format [env=[!]VAR]` (or `TransferLog file`).
#[derive(Debug, Clone)]
pub struct CustomLog {
    /// Where it is.
    pub span: Span,
    /// The file, absolute.
    pub path: PathBuf,
    /// The format, parsed (a nickname already resolved).
    pub format: Vec<crate::logformat::LogItem>,
    /// `env=VAR` (log only when set) or `env=!VAR` (only when not): (negated, VAR).
    pub condition: Option<(bool, String)>,
}

/// `Redirect [status] URL-path [URL]` and its forms.
#[derive(Debug, Clone)]
pub struct Redirect {
    /// Where it is.
    pub span: Span,
    /// The status: 301, 302, 303, 410 or another 3xx.
    pub status: u16,
    /// The URL path (`Redirect`) or the expression as written (`RedirectMatch`).
    pub url: String,
    /// The compiled expression of `RedirectMatch`.
    pub regex: Option<Regex>,
    /// Where to (none for 410 and other non-3xx statuses).
    pub target: Option<String>,
}

/// One address of `<VirtualHost ...>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostAddress {
    /// The IP address, or None for `*`, `_default_` or a host name.
    pub ip: Option<IpAddr>,
    /// The host name when one was written instead of an address.
    pub name: Option<String>,
    /// The port, or None for any port.
    pub port: Option<u16>,
}

/// `Listen [address:]port`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listen {
    /// The address, None for every address.
    pub ip: Option<IpAddr>,
    /// The port.
    pub port: u16,
}

/// How a group name (process or application) is chosen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum GroupSpec {
    /// `%{GLOBAL}`: the main interpreter, or embedded mode for a process group.
    Global,
    /// `%{SERVER}`: `servername[:port]`.
    Server,
    /// `%{RESOURCE}`: `servername[:port]|script-name`.
    Resource,
    /// `%{HOST}`: the request's host name.
    Host,
    /// `%{ENV:NAME}`: an environment variable, or the literal text when it is unset.
    Env(String),
    /// A literal name.
    Named(String),
}

impl GroupSpec {
    /// Reads a `WSGIProcessGroup`/`WSGIApplicationGroup` value.
    pub fn parse(value: &str) -> GroupSpec {
        match value {
            "%{GLOBAL}" => GroupSpec::Global,
            "%{SERVER}" => GroupSpec::Server,
            "%{RESOURCE}" => GroupSpec::Resource,
            "%{HOST}" => GroupSpec::Host,
            _ => match value
                .strip_prefix("%{ENV:")
                .and_then(|v| v.strip_suffix('}'))
            {
                Some(var) => GroupSpec::Env(var.to_string()),
                None => GroupSpec::Named(value.to_string()),
            },
        }
    }

    /// The literal name, if this is one.
    pub fn literal(&self) -> Option<&str> {
        match self {
            GroupSpec::Named(n) => Some(n),
            _ => None,
        }
    }
}

impl std::fmt::Display for GroupSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GroupSpec::Global => f.write_str("%{GLOBAL}"),
            GroupSpec::Server => f.write_str("%{SERVER}"),
            GroupSpec::Resource => f.write_str("%{RESOURCE}"),
            GroupSpec::Host => f.write_str("%{HOST}"),
            GroupSpec::Env(v) => write!(f, "%{{ENV:{v}}}"),
            GroupSpec::Named(n) => f.write_str(n),
        }
    }
}

/// `WSGIMapHEADToGET`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum MapHeadToGet {
    /// Never.
    Off,
    /// Always.
    On,
    /// When an output filter needs the body (always, for `wsgi serve`, which has none).
    Auto,
}

/// WSGI settings that `<Directory>`, `<Location>`, `<Files>`, a virtual host or the server
/// may set. `None` means "inherit".
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WsgiSettings {
    /// `WSGIProcessGroup`.
    pub process_group: Option<Located<GroupSpec>>,
    /// `WSGIApplicationGroup`.
    pub application_group: Option<GroupSpec>,
    /// `WSGICallableObject`.
    pub callable_object: Option<String>,
    /// `WSGIPassAuthorization`.
    pub pass_authorization: Option<bool>,
    /// `WSGIScriptReloading`.
    pub script_reloading: Option<bool>,
    /// `WSGIErrorOverride`.
    pub error_override: Option<bool>,
    /// `WSGIChunkedRequest`.
    pub chunked_request: Option<bool>,
    /// `WSGIMapHEADToGET`.
    pub map_head_to_get: Option<MapHeadToGet>,
    /// `WSGIIgnoreActivity`.
    pub ignore_activity: Option<bool>,
    /// `WSGITrustedProxyHeaders` (additive).
    pub trusted_proxy_headers: Vec<String>,
    /// `WSGITrustedProxies` (additive).
    pub trusted_proxies: Vec<IpNet>,
    /// `WSGIEnableSendfile`.
    pub enable_sendfile: Option<bool>,
    /// `WSGIPassApacheRequest`.
    pub pass_apache_request: Option<bool>,
    /// `WSGIRestrictProcess`.
    pub restrict_process: Option<Vec<String>>,
    /// `WSGIDispatchScript`.
    pub dispatch_script: Option<AuxScript>,
    /// `WSGIAccessScript`.
    pub access_script: Option<AuxScript>,
    /// `WSGIAuthUserScript`.
    pub auth_user_script: Option<AuxScript>,
    /// `WSGIAuthGroupScript`.
    pub auth_group_script: Option<AuxScript>,
    /// `WSGIHandlerScript` handlers.
    pub handler_scripts: Vec<HandlerScript>,
    /// The section's `Require` lines, as a tree (AuthMerging Off: the innermost section
    /// with any wins whole).
    pub authz: Option<std::sync::Arc<crate::authz::AuthzNode>>,
    /// `AuthType` (`Basic`, or `None`).
    pub auth_type: Option<String>,
    /// `AuthName`: the realm.
    pub auth_name: Option<String>,
    /// `AuthUserFile`: the htpasswd file.
    pub auth_user_file: Option<PathBuf>,
    /// `AuthGroupFile`: `group: user user...` lines.
    pub auth_group_file: Option<PathBuf>,
    /// `AuthBasicProvider`, in order.
    pub auth_basic_provider: Option<Vec<String>>,
    /// Whether `Options` allows `ExecCGI` (what a `wsgi-script` file needs): set by an
    /// `Options` line that names it, or by one without `+`/`-` (which resets every option).
    pub exec_cgi: Option<bool>,
    /// core's `SetHandler`, lowercased as Apache stores it (`none` leaves the handler
    /// `AddHandler` gives).
    pub set_handler: Option<Located<String>>,
    /// mod_mime's `AddHandler name .ext`: (extension, handler), both lowercased and the
    /// extension without its dot; an inner level's entry replaces an outer one's.
    pub add_handlers: Vec<(String, Located<String>)>,
    /// mod_mime's `RemoveHandler .ext` of this level (lowercased, without the dot): removes
    /// the outer levels' mappings, and this one's, when the level is merged over another.
    pub remove_handlers: Vec<String>,
}

impl WsgiSettings {
    /// mod_mime's `AddHandler` for one extension (lowercased, without its dot): it replaces
    /// the extension's mapping, if any.
    pub fn add_handler(&mut self, ext: &str, handler: &Located<String>) {
        match self.add_handlers.iter_mut().find(|(e, _)| e == ext) {
            Some(entry) => entry.1 = handler.clone(),
            None => self.add_handlers.push((ext.to_string(), handler.clone())),
        }
    }

    /// Lays `inner` over `self`: what `inner` sets wins, lists add up.
    pub fn merge(&mut self, inner: &WsgiSettings) {
        macro_rules! over {
            ($($field:ident),*) => { $( if inner.$field.is_some() { self.$field = inner.$field.clone(); } )* };
        }
        over!(
            exec_cgi,
            set_handler,
            process_group,
            application_group,
            callable_object,
            pass_authorization,
            script_reloading,
            error_override,
            chunked_request,
            map_head_to_get,
            ignore_activity,
            enable_sendfile,
            pass_apache_request,
            restrict_process,
            dispatch_script,
            access_script,
            auth_user_script,
            auth_group_script,
            authz,
            auth_type,
            auth_name,
            auth_user_file,
            auth_group_file,
            auth_basic_provider
        );
        self.trusted_proxy_headers
            .extend(inner.trusted_proxy_headers.iter().cloned());
        self.trusted_proxies
            .extend(inner.trusted_proxies.iter().cloned());
        self.handler_scripts
            .extend(inner.handler_scripts.iter().cloned());
        // mod_mime's merge: the inner mappings over the outer ones, then the inner
        // RemoveHandler extensions taken out (the level's own included).
        for (ext, handler) in &inner.add_handlers {
            self.add_handler(ext, handler);
        }
        self.add_handlers
            .retain(|(ext, _)| !inner.remove_handlers.contains(ext));
    }
}

/// An address or a network (`WSGITrustedProxies`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IpNet {
    /// The network address.
    pub addr: IpAddr,
    /// The prefix length.
    pub prefix: u8,
}

impl IpNet {
    /// Reads `1.2.3.4`, `10.0.0.0/8` or `::1/128`.
    pub fn parse(text: &str) -> Option<IpNet> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max)?,
            None => max,
        };
        Some(IpNet { addr, prefix })
    }

    /// Whether `ip` is in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// A script named by `WSGIDispatchScript`, `WSGIAccessScript` and the auth script directives.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuxScript {
    /// The script.
    pub path: PathBuf,
    /// Its `application-group=` (default `%{GLOBAL}` for the auth scripts).
    pub application_group: Option<GroupSpec>,
}

/// `WSGIHandlerScript name path ...`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HandlerScript {
    /// Where it is.
    #[serde(serialize_with = "serialize_required_span")]
    pub span: Span,
    /// The Apache handler name, as written (mod_wsgi compares it with the request's handler,
    /// which Apache lowercases, so only a lowercase name is ever reached).
    pub handler: String,
    /// The script.
    pub path: PathBuf,
    /// Its options.
    pub options: AliasOptions,
}

/// A `<Directory>`, `<DirectoryMatch>`, `<Location>`, `<LocationMatch>`, `<Files>` or
/// `<FilesMatch>` section.
#[derive(Debug, Clone)]
pub struct DirSection {
    /// Where it opens.
    pub span: Span,
    /// Which kind of section.
    pub kind: SectionKind,
    /// The path, URL or file pattern as written.
    pub pattern: String,
    /// The compiled pattern of a `...Match` section (or `<Directory ~ ...>`).
    pub regex: Option<Regex>,
    /// The enclosing section (a `<Files>` inside a `<Directory>`), as an index into the host's
    /// sections.
    pub parent: Option<usize>,
    /// Its settings.
    pub settings: WsgiSettings,
    /// `SetEnv`, `UnsetEnv`, `PassEnv`, `SetEnvIf`... inside it, in order.
    pub env: Vec<crate::env::EnvOp>,
}

/// The kind of a per-directory section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SectionKind {
    /// `<Directory>` / `<DirectoryMatch>`.
    Directory,
    /// `<Location>` / `<LocationMatch>`.
    Location,
    /// `<Files>` / `<FilesMatch>`.
    Files,
}

/// `WSGIScriptAlias` or `WSGIScriptAliasMatch`.
#[derive(Debug, Clone)]
pub struct ScriptAlias {
    /// Where it is.
    pub span: Span,
    /// The URL path (or the regular expression, for `WSGIScriptAliasMatch`).
    pub url: String,
    /// The compiled regular expression of `WSGIScriptAliasMatch`.
    pub regex: Option<Regex>,
    /// The script file or directory (for `WSGIScriptAliasMatch`, may hold `$N`).
    pub target: String,
    /// Its options.
    pub options: AliasOptions,
    /// Whether the target is a directory of scripts (it ends in `/`, or was a directory when
    /// the configuration was read), decided once so routing does not stat it per request.
    pub directory: bool,
}

impl ScriptAlias {
    /// Whether the target is a directory of scripts.
    pub fn is_directory(&self) -> bool {
        self.directory
    }
}

/// The options of `WSGIScriptAlias` and friends, which override the directory settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AliasOptions {
    /// `process-group=`.
    pub process_group: Option<GroupSpec>,
    /// `application-group=`.
    pub application_group: Option<GroupSpec>,
    /// `callable-object=`.
    pub callable_object: Option<String>,
    /// `pass-authorization=`.
    pub pass_authorization: Option<bool>,
}

impl AliasOptions {
    /// The process group in force under these options: `process-group=`, else
    /// `WSGIProcessGroup`, else `%{GLOBAL}` (embedded mode).
    pub fn process_spec(&self, settings: &WsgiSettings) -> GroupSpec {
        self.process_group
            .clone()
            .or_else(|| settings.process_group.as_ref().map(|l| l.value.clone()))
            .unwrap_or(GroupSpec::Global)
    }

    /// The application group in force under these options: `application-group=`, else
    /// `WSGIApplicationGroup`, else `%{RESOURCE}` (mod_wsgi's default).
    pub fn application_spec(&self, settings: &WsgiSettings) -> GroupSpec {
        self.application_group
            .clone()
            .or_else(|| settings.application_group.clone())
            .unwrap_or(GroupSpec::Resource)
    }
}

/// One `WSGIDaemonProcess`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DaemonGroup {
    /// The group name.
    pub name: String,
    /// Where it is defined.
    #[serde(serialize_with = "serialize_required_span")]
    pub span: Span,
    /// The virtual host it is defined in (None: server level, visible everywhere).
    pub host: Option<usize>,
    /// Its options.
    pub options: DaemonOptions,
}

fn serialize_required_span<S: serde::Serializer>(span: &Span, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&span.to_string())
}

impl DaemonGroup {
    /// The venv root this group's processes start with: `python-home=`, else
    /// `WSGIPythonHome`.
    pub fn python_home<'a>(&'a self, python: &'a PythonSettings) -> Option<&'a PathBuf> {
        self.options
            .python_home
            .as_ref()
            .or(python.home.as_ref().map(|h| &h.value))
    }
}

/// `WSGIImportScript path process-group=X application-group=Y`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImportScript {
    /// Where it is.
    #[serde(serialize_with = "serialize_required_span")]
    pub span: Span,
    /// The host it is in.
    pub host: Option<usize>,
    /// The script.
    pub path: PathBuf,
    /// The process group (`%{GLOBAL}`: embedded).
    pub process_group: GroupSpec,
    /// The application group.
    pub application_group: GroupSpec,
}

/// A script a process loads at start, before it serves ([`Config::preloads`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preload {
    /// The line that asks for it.
    pub span: Span,
    /// The script file.
    pub script: PathBuf,
    /// The application group (`""`: the main interpreter).
    pub application_group: String,
    /// The WSGI callable it must define (a script alias's), or `None` for an import script,
    /// which needs none.
    pub callable: Option<String>,
}

/// How long a duration reads in `wsgi check` output.
pub fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{}", s as u64)
    } else {
        format!("{s}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `text` read as `/srv/site.conf`.
    fn load(text: &str) -> Result<Config, Vec<crate::ConfigError>> {
        crate::load_str(
            text,
            std::path::Path::new("/srv/site.conf"),
            &crate::reader::ReadOptions::default(),
        )
    }

    #[test]
    fn protocols_per_host_fall_back_to_the_server_then_apache_default() {
        let config = load(
            "Listen 80\nProtocols H2C http/1.1\n\
             <VirtualHost *:80>\n  Protocols h2 http/1.1\n  ProtocolsHonorOrder On\n</VirtualHost>\n\
             <VirtualHost *:80>\n  ServerName other\n</VirtualHost>\n",
        )
        .unwrap();
        assert_eq!(config.protocols(Some(0)), ["h2", "http/1.1"]);
        assert_eq!(config.protocols(Some(1)), ["h2c", "http/1.1"]);
        assert_eq!(config.protocols(None), ["h2c", "http/1.1"]);
        assert!(crate::serve_support::unserved(&config).is_empty());
        let plain = load("Listen 80\n").unwrap();
        assert_eq!(plain.protocols(None), ["http/1.1"]);
        assert!(plain.protocols_honor_order(None));
        // Not in a section.
        let inside = load("Listen 80\n<Location />\n  Protocols h2c\n</Location>\n").unwrap();
        assert_eq!(crate::serve_support::unserved(&inside).len(), 1);
        let inside = load("Listen 80\n<Directory />\n  ProtocolsHonorOrder Off\n</Directory>\n");
        assert_eq!(crate::serve_support::unserved(&inside.unwrap()).len(), 1);
        assert!(load("Listen 80\nProtocols\n").is_err());
    }

    #[test]
    fn protocols_honor_order_per_host_falls_back_to_the_server_then_on() {
        let config = load(
            "Listen 80\nProtocolsHonorOrder off\n\
             <VirtualHost *:80>\n  ProtocolsHonorOrder On\n</VirtualHost>\n\
             <VirtualHost *:80>\n  ServerName other\n</VirtualHost>\n",
        )
        .unwrap();
        assert!(crate::serve_support::unserved(&config).is_empty());
        assert!(config.protocols_honor_order(Some(0)));
        assert!(!config.protocols_honor_order(Some(1)));
        assert!(!config.protocols_honor_order(None));
        let host_off =
            load("Listen 80\n<VirtualHost *:80>\n  ProtocolsHonorOrder Off\n</VirtualHost>\n")
                .unwrap();
        assert!(!host_off.protocols_honor_order(Some(0)));
        assert!(host_off.protocols_honor_order(None));
        for bad in ["ProtocolsHonorOrder maybe", "ProtocolsHonorOrder On Off"] {
            let errors = load(&format!("Listen 80\n{bad}\n")).unwrap_err();
            let said: Vec<String> = errors.iter().map(ToString::to_string).collect();
            assert!(said.iter().any(|e| e.contains("site.conf:2")), "{said:?}");
        }
    }

    #[test]
    fn group_specs() {
        assert_eq!(GroupSpec::parse("%{GLOBAL}"), GroupSpec::Global);
        assert_eq!(GroupSpec::parse("%{ENV:APP}"), GroupSpec::Env("APP".into()));
        assert_eq!(GroupSpec::parse("myapp"), GroupSpec::Named("myapp".into()));
        assert_eq!(GroupSpec::parse("%{ENV:APP}").to_string(), "%{ENV:APP}");
    }

    #[test]
    fn networks() {
        let net = IpNet::parse("10.0.0.0/8").unwrap();
        assert!(net.contains("10.2.3.4".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(
            IpNet::parse("::1")
                .unwrap()
                .contains("::1".parse().unwrap())
        );
        assert!(
            IpNet::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(IpNet::parse("example.com").is_none());
        assert!(IpNet::parse("10.0.0.0/33").is_none());
    }

    #[test]
    fn settings_merge_inner_wins() {
        let mut outer = WsgiSettings {
            callable_object: Some("app".into()),
            script_reloading: Some(true),
            ..Default::default()
        };
        let inner = WsgiSettings {
            callable_object: Some("application2".into()),
            ..Default::default()
        };
        outer.merge(&inner);
        assert_eq!(outer.callable_object.as_deref(), Some("application2"));
        assert_eq!(outer.script_reloading, Some(true));
    }
}
