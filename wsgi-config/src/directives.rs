//! One definition per mod_wsgi directive: its name, where Apache allows it, its arguments and
//! its default. The builder, `wsgi check` and the Apache module's command table all read this
//! table, so they cannot disagree about a directive.

/// Where a directive may appear, as mod_wsgi's command table declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Scope {
    /// Server config only, never inside `<VirtualHost>` (`RSRC_CONF` + `GLOBAL_ONLY`).
    ServerOnly,
    /// Server config or `<VirtualHost>` (`RSRC_CONF`).
    ServerOrVirtualHost,
    /// Server config, `<VirtualHost>`, `<Directory>`, `<Location>`, `<Files>`
    /// (`ACCESS_CONF|RSRC_CONF`), not `.htaccess`.
    AnyButHtaccess,
    /// Anywhere, and `.htaccess` with `AllowOverride FileInfo` (`OR_FILEINFO`).
    FileInfo,
    /// `<Directory>`, `<Location>`, `<Files>` only, and `.htaccess` with
    /// `AllowOverride AuthConfig` (`OR_AUTHCFG`).
    AuthConfig,
}

/// How many arguments a directive takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Arity {
    /// `On` or `Off`.
    Flag,
    /// `On`, `Off` or `Auto`.
    FlagOrAuto,
    /// Exactly one argument.
    One,
    /// One argument or more.
    OneOrMore,
    /// At least `min` arguments (the rest are `name=value` options).
    AtLeast(usize),
    /// No argument is checked: the directive is removed or a no-op.
    Any,
}

/// Whether mod_wsgi still has the directive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Status {
    /// A current directive.
    Current,
    /// Accepted for old configurations, and ignored: the message says why.
    Ignored(&'static str),
}

/// One mod_wsgi directive.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct DirectiveDef {
    /// The name as mod_wsgi spells it (matched case-insensitively, as Apache does).
    pub name: &'static str,
    /// Where it may appear.
    pub scope: Scope,
    /// Its arguments.
    pub arity: Arity,
    /// Its syntax.
    pub usage: &'static str,
    /// What applies when it is absent.
    pub default: &'static str,
    /// What it does, in one line.
    pub doc: &'static str,
    /// Whether it is current.
    pub status: Status,
}

macro_rules! directive {
    ($name:literal, $scope:ident, $arity:expr, $usage:literal, $default:literal, $doc:literal) => {
        DirectiveDef {
            name: $name,
            scope: Scope::$scope,
            arity: $arity,
            usage: $usage,
            default: $default,
            doc: $doc,
            status: Status::Current,
        }
    };
    ($name:literal, $scope:ident, $arity:expr, $usage:literal, $default:literal, $doc:literal, ignored: $why:literal) => {
        DirectiveDef {
            name: $name,
            scope: Scope::$scope,
            arity: $arity,
            usage: $usage,
            default: $default,
            doc: $doc,
            status: Status::Ignored($why),
        }
    };
}

use Arity::*;

/// Every mod_wsgi directive (mod_wsgi 6.0, plus those 4.x/5.x configurations still carry).
pub static DIRECTIVES: &[DirectiveDef] = &[
    directive!(
        "WSGIScriptAlias",
        ServerOrVirtualHost,
        AtLeast(2),
        "WSGIScriptAlias URL-path file-or-directory [process-group=NAME] [application-group=NAME] [callable-object=NAME] [pass-authorization=On|Off]",
        "",
        "Mounts a WSGI script file, or a directory of them, at a URL path"
    ),
    directive!(
        "WSGIScriptAliasMatch",
        ServerOrVirtualHost,
        AtLeast(2),
        "WSGIScriptAliasMatch regex file-path-with-$N [process-group=NAME] [application-group=NAME] [callable-object=NAME] [pass-authorization=On|Off]",
        "",
        "Mounts WSGI scripts at URLs matching a regular expression"
    ),
    directive!(
        "WSGIDaemonProcess",
        ServerOrVirtualHost,
        AtLeast(1),
        "WSGIDaemonProcess NAME [option=value ...]",
        "",
        "Defines a daemon process group"
    ),
    directive!(
        "WSGIProcessGroup",
        AnyButHtaccess,
        One,
        "WSGIProcessGroup NAME|%{GLOBAL}|%{ENV:variable}|%{RESOURCE}|%{SERVER}|%{HOST}",
        "%{GLOBAL} (embedded mode)",
        "Selects the daemon process group applications run in"
    ),
    directive!(
        "WSGIApplicationGroup",
        AnyButHtaccess,
        One,
        "WSGIApplicationGroup NAME|%{GLOBAL}|%{SERVER}|%{RESOURCE}|%{HOST}|%{ENV:variable}",
        "%{RESOURCE}",
        "Selects the Python (sub-)interpreter applications run in"
    ),
    directive!(
        "WSGICallableObject",
        FileInfo,
        One,
        "WSGICallableObject NAME|%{ENV:variable}",
        "application",
        "Names the WSGI callable in the script"
    ),
    directive!(
        "WSGIPassAuthorization",
        FileInfo,
        Flag,
        "WSGIPassAuthorization On|Off",
        "Off",
        "Passes the Authorization header to the application as HTTP_AUTHORIZATION"
    ),
    directive!(
        "WSGIScriptReloading",
        FileInfo,
        Flag,
        "WSGIScriptReloading On|Off",
        "On",
        "Reloads a changed script (embedded) or restarts its daemon process (daemon mode)"
    ),
    directive!(
        "WSGIErrorOverride",
        FileInfo,
        Flag,
        "WSGIErrorOverride On|Off",
        "Off",
        "Lets Apache ErrorDocument replace error responses from daemon mode applications"
    ),
    directive!(
        "WSGIChunkedRequest",
        FileInfo,
        Flag,
        "WSGIChunkedRequest On|Off",
        "On (mod_wsgi: Off)",
        "Accepts chunked request bodies (wsgi-rs accepts them whatever the value)"
    ),
    directive!(
        "WSGIMapHEADToGET",
        FileInfo,
        FlagOrAuto,
        "WSGIMapHEADToGET On|Off|Auto",
        "Auto",
        "Turns HEAD requests into GET for the application"
    ),
    directive!(
        "WSGIIgnoreActivity",
        FileInfo,
        Flag,
        "WSGIIgnoreActivity On|Off",
        "Off",
        "Requests here do not reset the daemon inactivity-timeout"
    ),
    directive!(
        "WSGITrustedProxyHeaders",
        FileInfo,
        OneOrMore,
        "WSGITrustedProxyHeaders header ...",
        "none",
        "Request headers from trusted proxies that rewrite the environ"
    ),
    directive!(
        "WSGITrustedProxies",
        FileInfo,
        OneOrMore,
        "WSGITrustedProxies address|cidr ...",
        "every peer",
        "The proxies whose trusted headers are believed"
    ),
    directive!(
        "WSGIEnableSendfile",
        FileInfo,
        Flag,
        "WSGIEnableSendfile On|Off",
        "Off",
        "Sends wsgi.file_wrapper responses with sendfile"
    ),
    directive!(
        "WSGIPassApacheRequest",
        AnyButHtaccess,
        Flag,
        "WSGIPassApacheRequest On|Off",
        "Off",
        "Adds apache.request_rec to the environ (embedded mode in Apache only)"
    ),
    directive!(
        "WSGIDispatchScript",
        AnyButHtaccess,
        AtLeast(1),
        "WSGIDispatchScript path [application-group=NAME]",
        "",
        "A script whose process_group/application_group/callable_object functions override routing"
    ),
    directive!(
        "WSGIHandlerScript",
        AnyButHtaccess,
        AtLeast(2),
        "WSGIHandlerScript handler-name path [process-group=NAME] [application-group=NAME] [pass-authorization=On|Off]",
        "",
        "Registers an Apache handler name served by a script's handle_request"
    ),
    directive!(
        "WSGIImportScript",
        ServerOrVirtualHost,
        AtLeast(1),
        "WSGIImportScript path process-group=NAME application-group=NAME",
        "",
        "Preloads a script when the process starts"
    ),
    directive!(
        "WSGIAccessScript",
        AuthConfig,
        AtLeast(1),
        "WSGIAccessScript path [application-group=NAME]",
        "",
        "Host access control through a script's allow_access(environ, host)"
    ),
    directive!(
        "WSGIAuthUserScript",
        AuthConfig,
        AtLeast(1),
        "WSGIAuthUserScript path [application-group=NAME]",
        "",
        "Basic/digest authentication through a script's check_password/get_realm_hash"
    ),
    directive!(
        "WSGIAuthGroupScript",
        AuthConfig,
        AtLeast(1),
        "WSGIAuthGroupScript path [application-group=NAME]",
        "",
        "Group authorisation through a script's groups_for_user"
    ),
    directive!("WSGIGroupAuthoritative", AuthConfig, Flag, "WSGIGroupAuthoritative On|Off", "On",
        "Legacy: parsed, no longer consulted", ignored: "mod_wsgi 6 no longer consults it"),
    directive!(
        "WSGIRestrictProcess",
        AnyButHtaccess,
        OneOrMore,
        "WSGIRestrictProcess group ...",
        "none",
        "Limits which daemon process groups may be selected here"
    ),
    directive!(
        "WSGIRestrictEmbedded",
        ServerOnly,
        Flag,
        "WSGIRestrictEmbedded On|Off",
        "Off",
        "Refuses requests that would run in embedded mode"
    ),
    directive!(
        "WSGIRestrictStdin",
        ServerOnly,
        Flag,
        "WSGIRestrictStdin On|Off",
        "Off",
        "Makes sys.stdin raise on use"
    ),
    directive!(
        "WSGIRestrictStdout",
        ServerOnly,
        Flag,
        "WSGIRestrictStdout On|Off",
        "Off",
        "Makes sys.stdout raise on use (Off: it goes to the error log)"
    ),
    directive!(
        "WSGIRestrictSignal",
        ServerOnly,
        Flag,
        "WSGIRestrictSignal On|Off",
        "On",
        "Stops applications from installing signal handlers"
    ),
    directive!(
        "WSGISocketPrefix",
        ServerOnly,
        One,
        "WSGISocketPrefix prefix",
        "run/wsgi (under ServerRoot)",
        "Where daemon process sockets are created"
    ),
    directive!(
        "WSGISocketRotation",
        ServerOnly,
        Flag,
        "WSGISocketRotation On|Off",
        "On",
        "Whether daemon socket names change on each graceful restart"
    ),
    directive!(
        "WSGIAcceptMutex",
        ServerOnly,
        One,
        "WSGIAcceptMutex default|flock|fcntl|sysvsem|posixsem|pthread",
        "default",
        "The cross-process accept lock of daemon processes"
    ),
    directive!(
        "WSGIPythonHome",
        ServerOnly,
        One,
        "WSGIPythonHome /path/to/venv",
        "unset",
        "The virtual environment (its root, sys.prefix) of embedded mode and of daemon groups without python-home"
    ),
    directive!(
        "WSGIPythonPath",
        ServerOnly,
        One,
        "WSGIPythonPath dir[:dir...]",
        "unset",
        "Folders put at the front of sys.path in embedded mode"
    ),
    directive!(
        "WSGIPythonOptimize",
        ServerOnly,
        One,
        "WSGIPythonOptimize 0|1|2",
        "0",
        "Python's optimisation level (-O)"
    ),
    directive!(
        "WSGIPythonHashSeed",
        ServerOnly,
        One,
        "WSGIPythonHashSeed random|0..4294967295",
        "random",
        "Python's hash seed"
    ),
    directive!(
        "WSGIPythonWarnings",
        ServerOnly,
        One,
        "WSGIPythonWarnings action:message:category:module:lineno",
        "none",
        "A Python warnings filter (-W); repeatable"
    ),
    directive!(
        "WSGIPythonEggs",
        ServerOnly,
        One,
        "WSGIPythonEggs dir",
        "unset",
        "Sets PYTHON_EGG_CACHE"
    ),
    directive!(
        "WSGIDontWriteBytecode",
        ServerOnly,
        Flag,
        "WSGIDontWriteBytecode On|Off",
        "Off",
        "Stops Python writing .pyc files"
    ),
    directive!(
        "WSGIDestroyInterpreter",
        ServerOnly,
        Flag,
        "WSGIDestroyInterpreter On|Off",
        "On",
        "Whether interpreters are ended and Python finalised at process exit"
    ),
    directive!(
        "WSGICaseSensitivity",
        ServerOnly,
        Flag,
        "WSGICaseSensitivity On|Off",
        "On",
        "Off: script module names and %{RESOURCE} names are lowercased"
    ),
    directive!(
        "WSGIServerMetrics",
        ServerOnly,
        Flag,
        "WSGIServerMetrics On|Off",
        "Off",
        "Lets applications read server metrics"
    ),
    directive!(
        "WSGISwitchInterval",
        ServerOnly,
        One,
        "WSGISwitchInterval seconds",
        "Python's default (0.005)",
        "Python's thread switch interval"
    ),
    directive!(
        "WSGIPerInterpreterGIL",
        ServerOnly,
        Flag,
        "WSGIPerInterpreterGIL On|Off",
        "Off",
        "Python 3.12+: each sub-interpreter gets its own GIL"
    ),
    directive!(
        "WSGIFreeThreading",
        ServerOnly,
        Flag,
        "WSGIFreeThreading On|Off",
        "Off",
        "Free-threaded Python 3.13+ builds: run without the GIL"
    ),
    directive!("WSGITelemetryService", ServerOnly, Any, "WSGITelemetryService ...", "off",
        "Experimental telemetry reporter", ignored: "wsgi-rs reports metrics through `wsgi status` instead"),
    directive!("WSGISlowRequests", ServerOnly, Any, "WSGISlowRequests ...", "off",
        "Experimental telemetry reporter", ignored: "wsgi-rs reports metrics through `wsgi status` instead"),
    directive!("WSGITelemetryOptions", ServerOnly, Any, "WSGITelemetryOptions ...", "off",
        "Experimental telemetry reporter", ignored: "wsgi-rs reports metrics through `wsgi status` instead"),
    directive!("WSGIVerboseDebugging", ServerOnly, Flag, "WSGIVerboseDebugging On|Off", "Off",
        "Deprecated no-op", ignored: "use `LogLevel wsgi:debug` or `wsgi serve --log-level debug`"),
    directive!("WSGILazyInitialization", ServerOnly, Flag, "WSGILazyInitialization On|Off", "On",
        "Removed in mod_wsgi 6.0", ignored: "Python is never started in the root-owned parent process"),
    directive!("WSGIPy3kWarningFlag", ServerOnly, Flag, "WSGIPy3kWarningFlag On|Off", "Off",
        "Removed (Python 2 only)", ignored: "it only applied to Python 2"),
    directive!("WSGIUserAuthoritative", AuthConfig, Flag, "WSGIUserAuthoritative On|Off", "On",
        "Removed", ignored: "Apache 2.4's AuthBasicAuthoritative does this job"),
    directive!("WSGINewRelicConfigFile", ServerOnly, Any, "WSGINewRelicConfigFile path", "unset",
        "Removed", ignored: "load the New Relic agent from the WSGI script instead"),
    directive!("WSGINewRelicEnvironment", ServerOnly, Any, "WSGINewRelicEnvironment name", "unset",
        "Removed", ignored: "load the New Relic agent from the WSGI script instead"),
];

/// The definition of `name`, matched case-insensitively as Apache matches directive names.
pub fn lookup(name: &str) -> Option<&'static DirectiveDef> {
    DIRECTIVES
        .iter()
        .find(|d| d.name.eq_ignore_ascii_case(name))
}

/// Whether `name` looks like a mod_wsgi directive (Apache's `WSGI` prefix).
pub fn is_wsgi_name(name: &str) -> bool {
    name.len() > 4 && name[..4].eq_ignore_ascii_case("WSGI")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_found_case_insensitively() {
        for (i, a) in DIRECTIVES.iter().enumerate() {
            for b in &DIRECTIVES[i + 1..] {
                assert!(!a.name.eq_ignore_ascii_case(b.name), "{} twice", a.name);
            }
            assert_eq!(lookup(&a.name.to_lowercase()).map(|d| d.name), Some(a.name));
            assert!(a.usage.starts_with(a.name), "{} usage", a.name);
        }
        assert!(lookup("WSGIScriptAlis").is_none());
    }

    #[test]
    fn python_home_is_server_only() {
        assert_eq!(lookup("WSGIPythonHome").unwrap().scope, Scope::ServerOnly);
        assert_eq!(
            lookup("wsgiscriptalias").unwrap().scope,
            Scope::ServerOrVirtualHost
        );
    }
}
