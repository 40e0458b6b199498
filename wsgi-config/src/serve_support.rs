//! What `wsgi serve --config` does with each directive of an Apache configuration: it is
//! **implemented** with Apache's semantics, **accepted** because it does not change what is
//! served or to whom (with a note of what applies instead), or **refused**, with the file and
//! line, because serving the site without it would answer differently than Apache, perhaps
//! to people Apache would turn away. One table, read by `wsgi serve --config`, by `wsgi check`
//! and by the README's test.
//!
//! A directive that is not in the table is refused: a configuration is served only when every
//! line of it is understood.

use crate::directives::{self, Status};
use crate::model::{Config, DirectiveUse};
use crate::reader::Span;

/// How `wsgi serve` treats a directive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// Implemented with Apache's (and mod_wsgi's) semantics.
    Implemented,
    /// Accepted with no effect: it does not change what is served or to whom. The note says
    /// what applies instead.
    NoEffect(&'static str),
    /// Refused: serving without it would answer differently than Apache. The text says what
    /// it does that `wsgi serve` does not.
    Refused(&'static str),
}

/// One row of the table.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// The directive (or section) name as Apache spells it.
    pub name: &'static str,
    /// Whether it is a section (`<Location>`).
    pub section: bool,
    /// How it is treated, when that depends on nothing else.
    pub support: Support,
    /// When the treatment depends on the arguments: decides from them (the row's `support` is
    /// then what the README shows for the common case, and `detail` says the rest).
    pub by_args: Option<fn(&[String]) -> Support>,
    /// For rows decided by their arguments: which arguments are refused.
    pub detail: &'static str,
}

const fn fixed(name: &'static str, support: Support) -> Rule {
    Rule {
        name,
        section: false,
        support,
        by_args: None,
        detail: "",
    }
}

const fn section(name: &'static str, support: Support) -> Rule {
    Rule {
        name,
        section: true,
        support,
        by_args: None,
        detail: "",
    }
}

const IMPLEMENTED: Support = Support::Implemented;
const SIZING: Support = Support::NoEffect(
    "Apache's process and thread sizing: wsgi serve sizes itself with --threads and --max-connections",
);
const KEEPALIVE: Support =
    Support::NoEffect("keep-alive is always on; an idle connection closes after --header-timeout");
const ACCESS: Support = Support::Refused(
    "this access control form is not implemented by wsgi serve (Require all, ip, local, host, env, method, valid-user, user, group and wsgi-group are)",
);
const COMPAT: Support = Support::Refused(
    "mod_access_compat's Order/Allow/Deny/Satisfy are not implemented by wsgi serve: write them as Require lines",
);
const LIMIT: Support = Support::Refused(
    "per-method sections are not implemented by wsgi serve: use `Require method` inside <RequireAll>",
);
const AUTH: Support = Support::Refused(
    "only AuthType Basic with the file and wsgi providers is implemented by wsgi serve",
);
const PIPED_LOG: Support = Support::Refused(
    "piped and syslog logs are not implemented by wsgi serve: log to a file (and rotate it with SIGUSR1)",
);
const CIPHERS: Support = Support::NoEffect(
    "rustls negotiates among its own modern cipher suites (ECDHE with AES-GCM or ChaCha20-Poly1305), never the weak ones a cipher list might allow",
);
const REWRITE: Support = Support::Refused("mod_rewrite is not implemented by wsgi serve");
const PROXY: Support = Support::Refused("mod_proxy is not implemented by wsgi serve");
const HEADERS: Support = Support::Refused(
    "changing request or response headers (mod_headers) is not implemented by wsgi serve",
);
const HANDLERS: Support = Support::Refused(
    "Apache handlers (CGI, other modules' handlers) are not implemented by wsgi serve",
);
const ERRORS: Support = Support::Refused("custom error pages are not implemented by wsgi serve");
const EXPIRES: Support =
    Support::Refused("response caching headers (mod_expires) are not implemented by wsgi serve");

/// `Require` with the providers [`crate::authz`] evaluates is implemented; another provider
/// (`expr`, `ldap-*`, `dbd-*` ...) is refused.
fn require(args: &[String]) -> Support {
    match crate::authz::parse_require(args) {
        Ok(_) => Support::Implemented,
        Err(_) => ACCESS,
    }
}

/// `AuthType Basic` (or `None`) is implemented; Digest and Form are refused.
fn auth_type(args: &[String]) -> Support {
    match args {
        [t] if t.eq_ignore_ascii_case("basic") || t.eq_ignore_ascii_case("none") => {
            Support::Implemented
        }
        _ => AUTH,
    }
}

/// `AuthBasicProvider file` and `wsgi` (a `WSGIAuthUserScript`) are implemented; other
/// providers (`ldap`, `dbm` ...) are refused.
fn auth_basic_provider(args: &[String]) -> Support {
    if args
        .iter()
        .all(|p| p.eq_ignore_ascii_case("file") || p.eq_ignore_ascii_case("wsgi"))
    {
        Support::Implemented
    } else {
        AUTH
    }
}

/// `CustomLog`, `TransferLog`, `ErrorLog` to a file are implemented; to a program (`|...`)
/// or syslog they are refused.
fn log_target(args: &[String]) -> Support {
    match args.first() {
        Some(target) if target.starts_with('|') || target.starts_with("syslog") => PIPED_LOG,
        _ => Support::Implemented,
    }
}

/// `SSLEngine on|off` is implemented; `optional` (TLS upgrade) is refused.
fn ssl_engine(args: &[String]) -> Support {
    match args {
        [v] if v.eq_ignore_ascii_case("on") || v.eq_ignore_ascii_case("off") => {
            Support::Implemented
        }
        _ => Support::Refused(
            "`SSLEngine optional` (RFC 2817 upgrade) is not implemented by wsgi serve",
        ),
    }
}

/// `SSLProtocol` lists that allow TLSv1.2 or TLSv1.3 are implemented.
fn ssl_protocol(args: &[String]) -> Support {
    match crate::tls::parse_protocols(args) {
        Ok(_) => Support::Implemented,
        Err(_) => Support::Refused(
            "this SSLProtocol list allows neither TLSv1.2 nor TLSv1.3, the versions wsgi serve speaks",
        ),
    }
}

/// `AllowOverride None`: no `.htaccess` file is read, as in wsgi serve. Anything else would
/// have Apache read `.htaccess` files that wsgi serve does not.
fn allow_override(args: &[String]) -> Support {
    match args {
        [none] if none.eq_ignore_ascii_case("none") => {
            Support::NoEffect("wsgi serve reads no .htaccess files, as with AllowOverride None")
        }
        _ => Support::Refused(
            "wsgi serve reads no .htaccess files, which Apache would read here: move their directives into the configuration",
        ),
    }
}

/// `Options`: `ExecCGI` decides where files whose handler is `wsgi-script` may run (a line
/// without `+`/`-` sets it too: off unless named); turning on `Indexes` (directory listings)
/// or `MultiViews` (content negotiation) would change what is served; the rest does not
/// apply.
fn options(args: &[String]) -> Support {
    let enables = |option: &str| {
        args.iter()
            .any(|a| !a.starts_with('-') && a.trim_start_matches('+').eq_ignore_ascii_case(option))
    };
    if ["Indexes", "MultiViews", "All", "RunScripts"]
        .iter()
        .any(|o| enables(o))
    {
        return Support::Refused(
            "directory listings (Indexes) and content negotiation (MultiViews) are not implemented by wsgi serve",
        );
    }
    let sets_exec_cgi = args
        .iter()
        .any(|a| !a.starts_with(['+', '-']) || a[1..].eq_ignore_ascii_case("ExecCGI"));
    if sets_exec_cgi {
        Support::Implemented
    } else {
        Support::NoEffect("symbolic links are followed; includes do not apply")
    }
}

/// `AddHandler NAME .ext...` and `SetHandler NAME`: mod_wsgi's `wsgi-script` handler (and
/// `SetHandler None`) are implemented; any other name is refused here, unless a
/// `WSGIHandlerScript` registers it, which [`unserved`] checks with the whole configuration.
fn handler(args: &[String]) -> Support {
    match args.first().map(|a| a.to_ascii_lowercase()) {
        Some(name) if name == crate::handlers::WSGI_SCRIPT || name == "none" => {
            Support::Implemented
        }
        _ => HANDLERS,
    }
}

/// Whether `u` is an `AddHandler`/`SetHandler` line whose handler name a `WSGIHandlerScript`
/// of `config` registers (exactly: Apache lowercases the line's name, mod_wsgi compares it
/// with the script's as written).
fn registered_handler(config: &Config, u: &DirectiveUse) -> Result<bool, String> {
    let is_handler_line =
        u.name.eq_ignore_ascii_case("AddHandler") || u.name.eq_ignore_ascii_case("SetHandler");
    let Some(name) = u.args.first().filter(|_| is_handler_line && !u.section) else {
        return Ok(false);
    };
    let name = name.to_ascii_lowercase();
    let scripts = || config.all_settings().flat_map(|s| &s.handler_scripts);
    if scripts().any(|h| h.handler == name) {
        return Ok(true);
    }
    match scripts().find(|h| h.handler.eq_ignore_ascii_case(&name)) {
        Some(h) => Err(format!(
            "Apache lowercases handler names, so this is the handler `{name}`, and the WSGIHandlerScript `{}` ({}) is never reached by it: write the WSGIHandlerScript's name in lower case",
            h.handler, h.span
        )),
        None => Ok(false),
    }
}

/// `AddDefaultCharset Off` is Apache's default; a charset would be added to responses.
fn add_default_charset(args: &[String]) -> Support {
    match args {
        [off] if off.eq_ignore_ascii_case("off") => Support::NoEffect("Apache's default"),
        _ => {
            Support::Refused("adding a charset to text responses is not implemented by wsgi serve")
        }
    }
}

/// `DirectoryIndex index.html` (Apache's default) is what wsgi serve does.
fn directory_index(args: &[String]) -> Support {
    match args {
        [index] if index == "index.html" => Support::NoEffect("a folder serves its index.html"),
        _ => Support::Refused(
            "folder index files other than index.html are not implemented by wsgi serve",
        ),
    }
}

/// `HostnameLookups Off` is Apache's default.
fn hostname_lookups(args: &[String]) -> Support {
    match args {
        [off] if off.eq_ignore_ascii_case("off") => Support::NoEffect("Apache's default"),
        _ => Support::Refused("REMOTE_HOST from DNS lookups is not implemented by wsgi serve"),
    }
}

/// The table. Every name Apache matches case-insensitively, and so does this.
pub static RULES: &[Rule] = &[
    // Core: the server, its addresses and names.
    fixed("ServerName", IMPLEMENTED),
    fixed("ServerAlias", IMPLEMENTED),
    fixed("Listen", IMPLEMENTED),
    fixed("ServerRoot", IMPLEMENTED),
    fixed("User", IMPLEMENTED),
    fixed("Group", IMPLEMENTED),
    fixed("Define", IMPLEMENTED),
    fixed("UnDefine", IMPLEMENTED),
    section("VirtualHost", IMPLEMENTED),
    section("Directory", IMPLEMENTED),
    Rule {
        name: "WSGIInterpreterOptions",
        section: true,
        support: IMPLEMENTED,
        by_args: None,
        detail: "inside: `WSGIPythonPath`, `WSGIPerInterpreterGIL`, `WSGIRestrictStdin`, `WSGIRestrictStdout` for the interpreters it selects, `WSGISwitchInterval` and `WSGIFreeThreading` for the processes (refused with `application-group=`), `WSGIRestrictSignal Off`; anything else refused",
    },
    section("DirectoryMatch", IMPLEMENTED),
    section("Location", IMPLEMENTED),
    section("LocationMatch", IMPLEMENTED),
    section("Files", IMPLEMENTED),
    section("FilesMatch", IMPLEMENTED),
    Rule {
        name: "Require",
        section: false,
        support: IMPLEMENTED,
        by_args: Some(require),
        detail: "`all`, `ip`, `local`, `host`, `env`, `method`, `valid-user`, `user`, `group` (with `not`); other providers refused",
    },
    // Handlers: mod_wsgi's, for the files Alias and DocumentRoot map requests to.
    Rule {
        name: "AddHandler",
        section: false,
        support: IMPLEMENTED,
        by_args: Some(handler),
        detail: "`wsgi-script` (with `Options ExecCGI`) and the names of `WSGIHandlerScript`s; other handlers (`cgi-script`, ...) refused",
    },
    Rule {
        name: "SetHandler",
        section: false,
        support: IMPLEMENTED,
        by_args: Some(handler),
        detail: "`wsgi-script` (with `Options ExecCGI`), `None` and the names of `WSGIHandlerScript`s; other handlers (`cgi-script`, `server-status`, `proxy:...`, ...) refused",
    },
    fixed("RemoveHandler", IMPLEMENTED),
    Rule {
        name: "Options",
        section: false,
        support: IMPLEMENTED,
        by_args: Some(options),
        detail: "`ExecCGI` (where `wsgi-script` files run; a line without `+`/`-` sets it too); `Indexes`, `MultiViews`, `All` refused; the others have no effect (symbolic links are followed)",
    },
    // Accepted: they do not change what is served or to whom.
    fixed(
        "LoadModule",
        Support::NoEffect(
            "wsgi serve has what it implements built in; each module's directives are checked one by one",
        ),
    ),
    fixed("LoadFile", Support::NoEffect("no modules are loaded")),
    fixed(
        "ServerTokens",
        Support::NoEffect("no Server header is sent"),
    ),
    fixed(
        "ServerSignature",
        Support::NoEffect("error pages carry no server signature"),
    ),
    fixed("LogLevel", Support::NoEffect("use --log-level")),
    fixed(
        "PidFile",
        Support::NoEffect("the master's pid is the one started"),
    ),
    fixed("Mutex", Support::NoEffect("no Apache mutexes")),
    fixed(
        "DefaultRuntimeDir",
        Support::NoEffect("daemon sockets follow WSGISocketPrefix"),
    ),
    fixed(
        "TypesConfig",
        Support::NoEffect("static files get wsgi serve's own MIME types"),
    ),
    fixed(
        "Timeout",
        Support::NoEffect("use --socket-timeout and --body-timeout"),
    ),
    fixed("KeepAlive", KEEPALIVE),
    fixed("KeepAliveTimeout", KEEPALIVE),
    fixed("MaxKeepAliveRequests", KEEPALIVE),
    fixed("StartServers", SIZING),
    fixed("MinSpareServers", SIZING),
    fixed("MaxSpareServers", SIZING),
    fixed("MinSpareThreads", SIZING),
    fixed("MaxSpareThreads", SIZING),
    fixed("ThreadsPerChild", SIZING),
    fixed("ThreadLimit", SIZING),
    fixed("ServerLimit", SIZING),
    fixed("MaxRequestWorkers", SIZING),
    fixed("MaxClients", SIZING),
    fixed("MaxConnectionsPerChild", SIZING),
    fixed("MaxRequestsPerChild", SIZING),
    fixed("AsyncRequestWorkerFactor", SIZING),
    fixed("ListenBacklog", SIZING),
    fixed(
        "EnableSendfile",
        Support::NoEffect("files always go out with sendfile(2)"),
    ),
    fixed("EnableMMAP", Support::NoEffect("no effect on what is sent")),
    fixed(
        "AccessFileName",
        Support::NoEffect("wsgi serve reads no .htaccess files"),
    ),
    Rule {
        name: "AllowOverride",
        section: false,
        support: Support::NoEffect("wsgi serve reads no .htaccess files"),
        by_args: Some(allow_override),
        detail: "`None` accepted; anything else refused (Apache would read .htaccess files)",
    },
    Rule {
        name: "AddDefaultCharset",
        section: false,
        support: Support::NoEffect("Apache's default"),
        by_args: Some(add_default_charset),
        detail: "`Off` accepted, a charset refused",
    },
    Rule {
        name: "HostnameLookups",
        section: false,
        support: Support::NoEffect("Apache's default"),
        by_args: Some(hostname_lookups),
        detail: "`Off` accepted, `On`/`Double` refused",
    },
    // Refused, until implemented.
    fixed("Alias", IMPLEMENTED),
    fixed("AliasMatch", IMPLEMENTED),
    fixed("DocumentRoot", IMPLEMENTED),
    fixed("ServerAdmin", IMPLEMENTED),
    Rule {
        name: "Protocols",
        section: false,
        support: IMPLEMENTED,
        by_args: None,
        detail: "per `<VirtualHost>`, as mod_http2: `h2c` lets cleartext connections speak HTTP/2 with prior knowledge, `h2` offers HTTP/2 through TLS ALPN (the host the client's SNI name selects decides the offer); no `Upgrade: h2c`",
    },
    Rule {
        name: "ProtocolsHonorOrder",
        section: false,
        support: IMPLEMENTED,
        by_args: None,
        detail: "per `<VirtualHost>`, for TLS ALPN: `On` (the default), the first of the host's `Protocols` the client offers; `Off`, the first the client offers that the host lists",
    },
    Rule {
        name: "DirectoryIndex",
        section: false,
        support: Support::NoEffect("a folder serves its index.html"),
        by_args: Some(directory_index),
        detail: "`index.html` accepted; other names refused",
    },
    fixed("Redirect", IMPLEMENTED),
    fixed("RedirectMatch", IMPLEMENTED),
    fixed("RedirectPermanent", IMPLEMENTED),
    fixed("RedirectTemp", IMPLEMENTED),
    fixed("SetEnv", IMPLEMENTED),
    fixed("UnsetEnv", IMPLEMENTED),
    fixed("PassEnv", IMPLEMENTED),
    fixed("SetEnvIf", IMPLEMENTED),
    fixed("SetEnvIfNoCase", IMPLEMENTED),
    fixed("BrowserMatch", IMPLEMENTED),
    fixed("BrowserMatchNoCase", IMPLEMENTED),
    section("RequireAll", IMPLEMENTED),
    section("RequireAny", IMPLEMENTED),
    section("RequireNone", IMPLEMENTED),
    section("Limit", LIMIT),
    section("LimitExcept", LIMIT),
    fixed("Order", COMPAT),
    fixed("Allow", COMPAT),
    fixed("Deny", COMPAT),
    fixed("Satisfy", COMPAT),
    Rule {
        name: "AuthType",
        section: false,
        support: IMPLEMENTED,
        by_args: Some(auth_type),
        detail: "`Basic` (and `None`); Digest and Form refused",
    },
    fixed("AuthName", IMPLEMENTED),
    fixed("AuthUserFile", IMPLEMENTED),
    fixed("AuthGroupFile", IMPLEMENTED),
    Rule {
        name: "AuthBasicProvider",
        section: false,
        support: IMPLEMENTED,
        by_args: Some(auth_basic_provider),
        detail: "`file`, `wsgi` (WSGIAuthUserScript); others refused",
    },
    fixed("AuthDigestProvider", AUTH),
    Rule {
        name: "CustomLog",
        section: false,
        support: IMPLEMENTED,
        by_args: Some(log_target),
        detail: "to a file, with `env=[!]VAR`; piped, syslog and `expr=` refused",
    },
    Rule {
        name: "TransferLog",
        section: false,
        support: IMPLEMENTED,
        by_args: Some(log_target),
        detail: "to a file; piped and syslog refused",
    },
    fixed("LogFormat", IMPLEMENTED),
    Rule {
        name: "ErrorLog",
        section: false,
        support: IMPLEMENTED,
        by_args: Some(log_target),
        detail: "to a file; piped and syslog refused",
    },
    Rule {
        name: "SSLEngine",
        section: false,
        support: IMPLEMENTED,
        by_args: Some(ssl_engine),
        detail: "`on`, `off`; `optional` refused",
    },
    fixed("SSLCertificateFile", IMPLEMENTED),
    fixed("SSLCertificateKeyFile", IMPLEMENTED),
    fixed("SSLCertificateChainFile", IMPLEMENTED),
    Rule {
        name: "SSLProtocol",
        section: false,
        support: IMPLEMENTED,
        by_args: Some(ssl_protocol),
        detail: "lists allowing TLSv1.2 and/or TLSv1.3; older-only lists refused",
    },
    fixed("SSLCipherSuite", CIPHERS),
    fixed("SSLHonorCipherOrder", CIPHERS),
    fixed(
        "SSLCompression",
        Support::NoEffect("TLS compression is never used (as with SSLCompression off)"),
    ),
    fixed(
        "SSLSessionTickets",
        Support::NoEffect("rustls's session resumption applies"),
    ),
    fixed(
        "SSLSessionCache",
        Support::NoEffect("rustls's in-memory session cache applies"),
    ),
    fixed(
        "SSLSessionCacheTimeout",
        Support::NoEffect("rustls's in-memory session cache applies"),
    ),
    fixed(
        "SSLRandomSeed",
        Support::NoEffect("the operating system's random source is used"),
    ),
    Rule {
        name: "RemoteIPProxyProtocol",
        section: false,
        support: IMPLEMENTED,
        by_args: None,
        detail: "for the addresses of its server or `<VirtualHost>`, as mod_remoteip; headers are taken only from `--proxy-allow-from` (default 127.0.0.1, ::1)",
    },
    fixed("RemoteIPProxyProtocolExceptions", IMPLEMENTED),
    fixed("RewriteEngine", REWRITE),
    fixed("RewriteRule", REWRITE),
    fixed("RewriteCond", REWRITE),
    fixed("RewriteBase", REWRITE),
    fixed("ProxyPass", PROXY),
    fixed("ProxyPassReverse", PROXY),
    fixed("ProxyPreserveHost", PROXY),
    section("Proxy", PROXY),
    fixed("Header", HEADERS),
    fixed("RequestHeader", HEADERS),
    fixed("ScriptAlias", HANDLERS),
    fixed("ScriptAliasMatch", HANDLERS),
    fixed("Action", HANDLERS),
    fixed("ErrorDocument", ERRORS),
    fixed(
        "AddType",
        Support::Refused("MIME types of static files follow wsgi serve's own table"),
    ),
    fixed("ExpiresActive", EXPIRES),
    fixed("ExpiresByType", EXPIRES),
    fixed("ExpiresDefault", EXPIRES),
    section(
        "If",
        Support::Refused("<If> expressions are not implemented by wsgi serve"),
    ),
    section(
        "ElseIf",
        Support::Refused("<ElseIf> expressions are not implemented by wsgi serve"),
    ),
    section(
        "Else",
        Support::Refused("<Else> expressions are not implemented by wsgi serve"),
    ),
];

/// How `wsgi serve` treats the directive (or section) `name` with `args`.
pub fn support(name: &str, section: bool, args: &[String]) -> Support {
    if let Some(def) = directives::lookup(name) {
        if section {
            return Support::Refused("not a section");
        }
        return match def.status {
            Status::Ignored(why) => Support::NoEffect(why),
            Status::Current => (def.serve.decide)(args),
        };
    }
    match RULES
        .iter()
        .find(|r| r.section == section && r.name.eq_ignore_ascii_case(name))
    {
        Some(rule) => match rule.by_args {
            Some(decide) => decide(args),
            None => rule.support,
        },
        None => Support::Refused("this directive is not implemented by wsgi serve"),
    }
}

/// A line `wsgi serve` will not serve, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unserved {
    /// Where it is.
    pub span: Span,
    /// The directive as written, with its arguments (`Require ip 192.0.2.1`).
    pub directive: String,
    /// What it does that `wsgi serve` does not.
    pub why: String,
}

impl std::fmt::Display for Unserved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: `{}`: {}: serve this site with Apache and mod_wsgi_rs (`wsgi apache-config` prints the LoadModule line), or remove the line",
            self.span, self.directive, self.why
        )
    }
}

/// A line accepted with no effect, with the note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Where it is.
    pub span: Span,
    /// The directive name.
    pub directive: String,
    /// What applies instead.
    pub note: &'static str,
}

fn written(u: &DirectiveUse) -> String {
    let mut text = if u.section {
        format!("<{}", u.name)
    } else {
        u.name.clone()
    };
    for a in &u.args {
        text.push(' ');
        if a.contains(char::is_whitespace) || a.is_empty() {
            text.push('"');
            text.push_str(a);
            text.push('"');
        } else {
            text.push_str(a);
        }
    }
    if u.section {
        text.push('>');
    }
    text
}

/// The lines of `config` that `wsgi serve` refuses to serve.
pub fn unserved(config: &Config) -> Vec<Unserved> {
    config
        .uses
        .iter()
        .filter_map(|u| {
            let why = match support(&u.name, u.section, &u.args) {
                Support::Refused(why) => match registered_handler(config, u) {
                    Ok(true) => return None,
                    Ok(false) => why.to_string(),
                    Err(why) => why,
                },
                _ => config
                    .unserved_forms
                    .iter()
                    .find(|(span, _)| *span == u.span)
                    .map(|(_, why)| why.clone())?,
            };
            Some(Unserved {
                span: u.span.clone(),
                directive: written(u),
                why,
            })
        })
        .collect()
}

/// The lines of `config` accepted with no effect, each with its note.
pub fn accepted(config: &Config) -> Vec<Accepted> {
    config
        .uses
        .iter()
        .filter_map(|u| match support(&u.name, u.section, &u.args) {
            Support::NoEffect(note) => Some(Accepted {
                span: u.span.clone(),
                directive: u.name.clone(),
                note,
            }),
            _ => None,
        })
        .collect()
}

/// The README's table of every directive and section named here and every mod_wsgi
/// directive: Markdown, one row each, grouped implemented / accepted / refused.
pub fn markdown_table() -> String {
    let mut rows: Vec<(u8, String, String)> = Vec::new();
    let cell = |s: Support| match s {
        Support::Implemented => (0, "implemented".to_string(), String::new()),
        Support::NoEffect(note) => (1, "accepted, no effect".to_string(), note.to_string()),
        Support::Refused(why) => (2, "refused".to_string(), why.to_string()),
    };
    for d in directives::DIRECTIVES {
        let detail = d.serve.detail;
        let s = match d.status {
            Status::Ignored(why) => Support::NoEffect(why),
            // The common case: no argument, or `Off`.
            Status::Current => (d.serve.decide)(&[]),
        };
        let (order, what, note) = cell(s);
        let note = match (detail, note.is_empty()) {
            ("", _) => note,
            (detail, true) => detail.to_string(),
            (detail, false) => format!("{detail}; {note}"),
        };
        rows.push((order, format!("`{}`", d.name), format!("{what} | {note}")));
    }
    for r in RULES {
        let (order, what, mut note) = cell(r.support);
        if !r.detail.is_empty() {
            note = if note.is_empty() {
                r.detail.to_string()
            } else {
                format!("{}; {note}", r.detail)
            };
        }
        let name = if r.section {
            format!("`<{}>`", r.name)
        } else {
            format!("`{}`", r.name)
        };
        rows.push((order, name, format!("{what} | {note}")));
    }
    rows.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let mut out = String::from("| directive | `wsgi serve --config` | note |\n|---|---|---|\n");
    for (_, name, rest) in rows {
        out.push_str(&format!("| {name} | {rest} |\n"));
    }
    out.push_str("| any other | refused | not implemented by wsgi serve |\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::ReadOptions;

    fn load(text: &str) -> Config {
        crate::load_str(
            text,
            std::path::Path::new("site.conf"),
            &ReadOptions::default(),
        )
        .unwrap()
    }

    /// The refused lines of `config`, checked to start as `expected` say, one each.
    fn refused_lines(config: &Config, expected: &[&str]) -> Vec<String> {
        let refused: Vec<String> = unserved(config).iter().map(ToString::to_string).collect();
        assert_eq!(refused.len(), expected.len(), "{refused:#?}");
        for (line, start) in refused.iter().zip(expected) {
            assert!(
                line.starts_with(start),
                "{line}\ndoes not start with\n{start}"
            );
        }
        refused
    }

    #[test]
    fn every_line_is_classified_and_unknown_ones_are_refused() {
        let config = load(
            "ServerName example.com\n\
             LoadModule wsgi_module modules/mod_wsgi.so\n\
             KeepAliveTimeout 5\n\
             WSGIScriptAlias / /srv/app.wsgi\n\
             <Location /private>\n\
             \x20   Require expr %{REMOTE_ADDR} == '192.0.2.1'\n\
             </Location>\n\
             <Directory /srv>\n\
             \x20   Require all granted\n\
             \x20   AllowOverride None\n\
             \x20   Options FollowSymLinks\n\
             </Directory>\n\
             FrobnicateEverything On\n\
             <Location /x>\n\
             \x20   SetHandler server-status\n\
             </Location>\n",
        );
        let refused = refused_lines(
            &config,
            &[
                "site.conf:6: `Require expr %{REMOTE_ADDR} == 192.0.2.1`: this access control form is not implemented",
                "site.conf:13: `FrobnicateEverything On`: this directive is not implemented",
                "site.conf:15: `SetHandler server-status`: Apache handlers",
            ],
        );
        assert!(refused[0].ends_with("or remove the line"));
        let accepted: Vec<String> = accepted(&config)
            .iter()
            .map(|a| a.directive.clone())
            .collect();
        // `Options FollowSymLinks` turns ExecCGI off: it has an effect.
        assert_eq!(
            accepted,
            ["LoadModule", "KeepAliveTimeout", "AllowOverride"]
        );
    }

    /// `wsgi-script` and the names of `WSGIHandlerScript`s are served; other handlers (CGI,
    /// other modules') are refused line by line, and a handler script whose name Apache's
    /// lowercasing never reaches is named.
    #[test]
    fn only_mod_wsgis_handlers_are_served() {
        let config = load(
            "WSGIHandlerScript pages /srv/pages.wsgi\n\
             WSGIHandlerScript Reports /srv/reports.wsgi\n\
             AddHandler wsgi-script .wsgi .py\n\
             <Directory /srv/www>\n\
             \x20   Options -Indexes +ExecCGI\n\
             \x20   AddHandler cgi-script .cgi\n\
             \x20   AddHandler pages .page\n\
             \x20   RemoveHandler .py\n\
             </Directory>\n\
             <Location /x>\n\
             \x20   SetHandler PAGES\n\
             </Location>\n\
             <Files *.txt>\n\
             \x20   SetHandler None\n\
             \x20   SetHandler WSGI-Script\n\
             \x20   AddHandler reports .rep\n\
             \x20   SetHandler default-handler\n\
             </Files>\n",
        );
        refused_lines(
            &config,
            &[
                "site.conf:6: `AddHandler cgi-script .cgi`: Apache handlers (CGI, other modules' handlers) are not implemented by wsgi serve",
                "site.conf:16: `AddHandler reports .rep`: Apache lowercases handler names, so this is the handler `reports`, and the WSGIHandlerScript `Reports` (site.conf:2) is never reached by it",
                "site.conf:17: `SetHandler default-handler`: Apache handlers",
            ],
        );
        assert!(accepted(&config).is_empty());
    }

    #[test]
    fn arguments_decide_some_rows() {
        let s = |name: &str, args: &[&str]| {
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            support(name, false, &args)
        };
        assert_eq!(s("require", &["all", "denied"]), Support::Implemented);
        assert_eq!(s("Require", &["valid-user"]), Support::Implemented);
        assert_eq!(
            s("Require", &["not", "ip", "1.2.3.4"]),
            Support::Implemented
        );
        assert!(matches!(
            s("Require", &["ldap-group", "x"]),
            Support::Refused(_)
        ));
        assert!(matches!(s("AuthType", &["Digest"]), Support::Refused(_)));
        assert_eq!(s("AuthBasicProvider", &["file"]), Support::Implemented);
        assert_eq!(
            s("AuthBasicProvider", &["file", "wsgi"]),
            Support::Implemented
        );
        assert!(matches!(
            s("AuthBasicProvider", &["ldap"]),
            Support::Refused(_)
        ));
        assert!(matches!(s("AllowOverride", &["All"]), Support::Refused(_)));
        assert!(matches!(s("Options", &["+Indexes"]), Support::Refused(_)));
        assert!(matches!(
            s("Options", &["-Indexes", "-MultiViews"]),
            Support::NoEffect(_)
        ));
        assert_eq!(
            s("Options", &["-Indexes", "+ExecCGI"]),
            Support::Implemented
        );
        assert_eq!(s("Options", &["None"]), Support::Implemented);
        assert!(matches!(s("Options", &["RunScripts"]), Support::Refused(_)));
        assert_eq!(
            s("AddHandler", &["WSGI-Script", ".wsgi"]),
            Support::Implemented
        );
        assert_eq!(s("SetHandler", &["none"]), Support::Implemented);
        assert!(matches!(
            s(
                "SetHandler",
                &["proxy:unix:/run/app.sock|http://localhost/"]
            ),
            Support::Refused(_)
        ));
        assert_eq!(
            s("WSGIHandlerScript", &["x", "/x.wsgi"]),
            Support::Implemented
        );
        assert!(matches!(
            s("Options", &["FollowSymLinks", "MultiViews"]),
            Support::Refused(_)
        ));
        assert!(matches!(s("WSGIPythonHome", &["/x"]), Support::Implemented));
        assert!(matches!(s("Alias", &["/s", "/x"]), Support::Implemented));
        assert!(matches!(
            s("DirectoryIndex", &["index.php"]),
            Support::Refused(_)
        ));
        assert!(matches!(
            support("Directory", true, &[]),
            Support::Implemented
        ));
        assert!(matches!(support("Limit", true, &[]), Support::Refused(_)));
    }

    #[test]
    fn the_table_names_every_mod_wsgi_directive_once() {
        let table = markdown_table();
        for d in directives::DIRECTIVES {
            assert_eq!(
                table.matches(&format!("| `{}` |", d.name)).count(),
                1,
                "{}",
                d.name
            );
        }
        assert!(table.ends_with("| any other | refused | not implemented by wsgi serve |\n"));
    }
}
