//! Static knowledge used to resolve `<IfModule>`, `<IfVersion>`,
//! `<IfDirective>` and `<IfSection>`.

use std::cmp::Ordering;

/// The httpd version `<IfVersion>` compares against.
pub(super) const HTTPD_VERSION: (u64, u64, u64) = (2, 4, 62);

/// Modules every httpd 2.4 build has compiled in (as `httpd -l` lists them
/// on common distributions), plus mod_wsgi itself under both of its names.
/// Each is listed by source-file name and by module symbol.
const ALWAYS_LOADED: &[&str] = &[
    "core.c",
    "core_module",
    "http_core.c",
    "http_module",
    "mod_so.c",
    "so_module",
    "mod_log_config.c",
    "log_config_module",
    "mod_logio.c",
    "logio_module",
    "mod_version.c",
    "version_module",
    "mod_unixd.c",
    "unixd_module",
    "mod_watchdog.c",
    "watchdog_module",
    "mod_wsgi.c",
    "wsgi_module",
    "mod_wsgi_rs.c",
    "wsgi_rs_module",
];

/// Whether `name` (a `mod_foo.c` or `foo_module` name) is always loaded.
pub(super) fn is_always_loaded(name: &str) -> bool {
    ALWAYS_LOADED.contains(&name)
}

/// The names under which `LoadModule symbol file` makes a module visible to
/// `<IfModule>`: the symbol, `mod_<stem>.c` derived from a `<stem>_module`
/// symbol, and `<file stem>.c` derived from the shared object's name.
pub(super) fn load_module_names(symbol: &str, file: &str) -> Vec<String> {
    let mut names = vec![symbol.to_owned()];
    if let Some(stem) = symbol.strip_suffix("_module") {
        names.push(format!("mod_{stem}.c"));
    }
    if let Some(stem) = std::path::Path::new(file).file_stem() {
        names.push(format!("{}.c", stem.to_string_lossy()));
    }
    names
}

/// Directives provided by the always-loaded modules above (compared
/// case-insensitively). Every `WSGI*` directive is known as well.
const KNOWN_DIRECTIVES: &[&str] = &[
    // core.c / http_core.c
    "AcceptFilter",
    "AcceptPathInfo",
    "AccessFileName",
    "AddDefaultCharset",
    "AllowEncodedSlashes",
    "AllowOverride",
    "AllowOverrideList",
    "CGIMapExtension",
    "CGIPassAuth",
    "CGIVar",
    "ContentDigest",
    "DefaultRuntimeDir",
    "DefaultType",
    "Define",
    "DocumentRoot",
    "EnableMMAP",
    "EnableSendfile",
    "Error",
    "ErrorDocument",
    "ErrorLog",
    "ErrorLogFormat",
    "FileETag",
    "HostnameLookups",
    "HttpProtocolOptions",
    "Include",
    "IncludeOptional",
    "KeepAlive",
    "KeepAliveTimeout",
    "LimitInternalRecursion",
    "LimitRequestBody",
    "LimitRequestFields",
    "LimitRequestFieldSize",
    "LimitRequestLine",
    "LimitXMLRequestBody",
    "Listen",
    "ListenBackLog",
    "LogLevel",
    "MaxKeepAliveRequests",
    "MaxRangeOverlaps",
    "MaxRangeReversals",
    "MaxRanges",
    "MergeTrailers",
    "Mutex",
    "Options",
    "Protocol",
    "Protocols",
    "ProtocolsHonorOrder",
    "QualifyRedirectURL",
    "RegisterHttpMethod",
    "RLimitCPU",
    "RLimitMEM",
    "RLimitNPROC",
    "ServerAdmin",
    "ServerAlias",
    "ServerName",
    "ServerPath",
    "ServerRoot",
    "ServerSignature",
    "ServerTokens",
    "SetHandler",
    "SetInputFilter",
    "SetOutputFilter",
    "TimeOut",
    "TraceEnable",
    "UnDefine",
    "UseCanonicalName",
    "UseCanonicalPhysicalPort",
    // mod_so.c
    "LoadModule",
    "LoadFile",
    // mod_log_config.c
    "BufferedLogs",
    "CustomLog",
    "GlobalLog",
    "LogFormat",
    "TransferLog",
    // mod_logio.c
    "LogIOTrackTTFB",
    // mod_unixd.c
    "ChrootDir",
    "Group",
    "Suexec",
    "User",
    // mod_watchdog.c
    "WatchdogInterval",
];

/// Whether a directive named `name` exists in this reader's model of httpd:
/// the always-loaded modules' directives and every `WSGI*` directive.
pub(super) fn is_known_directive(name: &str) -> bool {
    let wsgi = name
        .get(..4)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case("WSGI"));
    wsgi || KNOWN_DIRECTIVES
        .iter()
        .any(|known| known.eq_ignore_ascii_case(name))
}

/// Sections by name (without `<`), with the module that provides them
/// (`None`: core or mod_version, always loaded).
const KNOWN_SECTIONS: &[(&str, Option<&str>)] = &[
    ("Directory", None),
    ("DirectoryMatch", None),
    ("Files", None),
    ("FilesMatch", None),
    ("Location", None),
    ("LocationMatch", None),
    ("VirtualHost", None),
    ("Limit", None),
    ("LimitExcept", None),
    ("If", None),
    ("ElseIf", None),
    ("Else", None),
    ("IfDefine", None),
    ("IfModule", None),
    ("IfFile", None),
    ("IfDirective", None),
    ("IfSection", None),
    ("IfVersion", None),
    ("Proxy", Some("proxy_module")),
    ("ProxyMatch", Some("proxy_module")),
    ("RequireAll", Some("authz_core_module")),
    ("RequireAny", Some("authz_core_module")),
    ("RequireNone", Some("authz_core_module")),
    ("AuthzProviderAlias", Some("authz_core_module")),
    ("AuthnProviderAlias", Some("authn_core_module")),
    ("Macro", Some("macro_module")),
];

/// Whether a section named `name` (without `<`) exists, given which modules
/// are loaded.
pub(super) fn is_known_section(name: &str, module_loaded: impl Fn(&str) -> bool) -> bool {
    KNOWN_SECTIONS.iter().any(|(section, module)| {
        section.eq_ignore_ascii_case(name) && module.is_none_or(&module_loaded)
    })
}

/// Evaluates `<IfVersion [[!]operator] version>` against [`HTTPD_VERSION`]
/// the way mod_version does: missing minor/patch numbers count as 0, `=`
/// and `==` with `/regex/` and `~` with a regex match the version string.
/// `Err` explains a condition that could not be understood.
pub(super) fn if_version(args: &[String]) -> Result<bool, String> {
    let (operator, operand) = match args {
        [version] => ("=", version.as_str()),
        [operator, version] => (operator.as_str(), version.as_str()),
        _ => return Err("expected `[[!]operator] version`".to_owned()),
    };
    let (negate, operator) = match operator.strip_prefix('!') {
        Some("") => (true, "="),
        Some(rest) => (true, rest),
        None => (false, operator),
    };
    let holds = match operator {
        "=" | "==" => match slash_regex(operand) {
            Some(pattern) => regex_matches(pattern)?,
            None => compare(operand)? == Ordering::Equal,
        },
        "~" => regex_matches(operand)?,
        ">" => compare(operand)? == Ordering::Greater,
        ">=" => compare(operand)? != Ordering::Less,
        "<" => compare(operand)? == Ordering::Less,
        "<=" => compare(operand)? != Ordering::Greater,
        other => return Err(format!("unknown operator `{other}`")),
    };
    Ok(holds != negate)
}

fn slash_regex(operand: &str) -> Option<&str> {
    operand.strip_prefix('/')?.strip_suffix('/')
}

fn version_string() -> String {
    let (major, minor, patch) = HTTPD_VERSION;
    format!("{major}.{minor}.{patch}")
}

fn regex_matches(pattern: &str) -> Result<bool, String> {
    let re = regex::Regex::new(pattern).map_err(|e| format!("invalid regex `{pattern}`: {e}"))?;
    Ok(re.is_match(&version_string()))
}

/// How [`HTTPD_VERSION`] compares to `version` (`major[.minor[.patch]]`).
fn compare(version: &str) -> Result<Ordering, String> {
    let invalid = || format!("version `{version}` is not major[.minor[.patch]]");
    let mut parts = [0u64; 3];
    for (index, part) in version.split('.').enumerate() {
        let slot = parts.get_mut(index).ok_or_else(invalid)?;
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        *slot = part.parse().map_err(|_| invalid())?;
    }
    let (major, minor, patch) = HTTPD_VERSION;
    Ok([major, minor, patch].cmp(&parts))
}
