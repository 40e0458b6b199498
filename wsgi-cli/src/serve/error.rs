//! Why `wsgi serve` cannot start, each message saying what to do.

use std::net::SocketAddr;
use std::path::PathBuf;

/// A reason `wsgi serve` refuses to start (nothing is served when one is returned).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Neither an app file nor `--config` was given.
    #[error(
        "nothing to serve: give a WSGI script (`wsgi serve app.wsgi`), `--mount /path=app.wsgi`, or an Apache configuration (`wsgi serve --config site.conf`)"
    )]
    NothingToServe,
    /// The app file does not exist or cannot be read.
    #[error("WSGI script `{}` cannot be read: {reason}: give the path of an existing .wsgi or .py file", .path.display())]
    ScriptUnreadable {
        /// The script as given.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// A target is neither a script file nor `MODULE:CALLABLE`.
    #[error(
        "`{target}` is not something wsgi serve can serve: {why}; give a WSGI script (app.wsgi, app.wsgi:callable) or a module and its callable as gunicorn takes them (mysite.wsgi:application, pkg.app:create_app())"
    )]
    BadTarget {
        /// The target as given.
        target: String,
        /// What is wrong with it.
        why: String,
    },
    /// The folder of generated scripts cannot be used.
    #[error("the folder of generated scripts `{}` cannot be used: {why}", .dir.display())]
    GeneratedScripts {
        /// The folder.
        dir: PathBuf,
        /// Why.
        why: String,
    },
    /// `--chdir` cannot be entered.
    #[error("--chdir `{}`: {source}: give an existing folder", .dir.display())]
    Chdir {
        /// The folder.
        dir: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// An application failed to load at start (not with --lazy-apps).
    #[error("{0}")]
    AppLoad(String),
    /// A `--mount` value is not `/url=file`.
    #[error(
        "--mount `{0}` is not of the form /url/path=TARGET: for example --mount /api=api.wsgi or --mount /api=api.main:app"
    )]
    BadMount(String),
    /// A `--url-alias` URL does not start with `/`.
    #[error(
        "--url-alias `{0}`: the URL must start with /, for example --url-alias /static ./static"
    )]
    BadAliasUrl(String),
    /// A `--url-alias` directory does not exist.
    #[error("--url-alias {url}: `{}` is not a directory: give an existing folder of static files", .dir.display())]
    BadAliasDir {
        /// The URL prefix.
        url: String,
        /// The folder given.
        dir: PathBuf,
    },
    /// A path cannot be written into the generated configuration.
    #[error("path `{}` holds a newline or `${{`, which wsgi serve cannot pass to the configuration reader: rename it", .0.display())]
    UnquotablePath(PathBuf),
    /// The configuration holds directives `wsgi serve` does not implement.
    #[error("{} line(s) of the configuration are not implemented by wsgi serve, and serving the site without them would answer differently than Apache:\n{}", .0.len(), .0.iter().map(|e| format!("error: {e}")).collect::<Vec<_>>().join("\n"))]
    Unserved(Vec<String>),
    /// The configuration has errors (the same messages `wsgi check` prints).
    #[error("{} error(s) in the configuration:\n{}", .0.len(), .0.iter().map(|e| format!("error: {e}")).collect::<Vec<_>>().join("\n"))]
    Config(Vec<String>),
    /// A `--python-path` folder holds `:`, which cannot go into a daemon group's
    /// `python-path=` list.
    #[error("--python-path `{}` holds a `:`, which separates python-path= folders in daemon mode: rename the folder or link it from a path without `:`", .0.display())]
    PythonPathColon(PathBuf),
    /// The daemon process groups could not be started.
    #[error("cannot start the daemon process groups: {source}{hint}")]
    Daemons {
        /// Why.
        #[source]
        source: wsgi_daemon::SupervisorError,
        /// What to do in this mode (empty, or `; ...`).
        hint: &'static str,
    },
    /// `--status-addr` is not a loopback address.
    #[error(
        "--status-addr {0}: the status endpoint serves only on loopback (127.0.0.1 or ::1), as it is unauthenticated: use for example --status-addr 127.0.0.1:9090"
    )]
    StatusNotLoopback(SocketAddr),
    /// `--host` is not an IP address.
    #[error("--host `{0}` is not an IP address: use for example 127.0.0.1, 0.0.0.0 or ::1")]
    BadHost(String),
    /// `--access-log-format` is no format.
    #[error(
        "--access-log-format `{format}`: {why}; give `json` or an Apache LogFormat string such as \"%h %l %u %t \\\"%r\\\" %>s %b %D\""
    )]
    BadAccessLogFormat {
        /// The format as given.
        format: String,
        /// Why.
        why: String,
    },
    /// `--pid-file` cannot be written.
    #[error("--pid-file `{}`: {source}: give a file in a folder this user can write", .path.display())]
    PidFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// systemd's socket activation passed something unusable.
    #[error("socket activation: {0}")]
    Activation(String),
    /// A `--bind` value cannot be used.
    #[error("--bind `{value}`: {why}")]
    BadBind {
        /// The value as given.
        value: String,
        /// Why.
        why: String,
    },
    /// A listening socket could not be opened.
    #[error("cannot listen on {addr}: {source}: {}", bind_hint(.source))]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A unix socket cannot be listened on (`--bind unix:...`).
    #[error(transparent)]
    Unix(#[from] super::listen::UnixSocketError),
    /// The privileges the server was started with do not fit (a user, root, what it can read).
    #[error(transparent)]
    Privileges(#[from] super::privileges::PrivilegeError),
    /// TLS cannot be set up (a certificate or key, or the hosts of a port).
    #[error("TLS: {0}")]
    Tls(#[from] super::tls::TlsError),
    /// The front process could not be started.
    #[error("the front process did not start: {0}")]
    Front(String),
    /// A log file (`--access-log`, `CustomLog`, `ErrorLog`) cannot be opened.
    #[error("cannot open the log file `{}`: {source}: check that its folder exists and is writable", .path.display())]
    LogFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// CPython could not be started.
    #[error("cannot start Python: {0}")]
    Python(#[from] wsgi_interp::StartError),
    /// A thread or the I/O runtime could not be started.
    #[error("cannot start the server's threads: {0}: the system is out of threads or memory")]
    Threads(#[source] std::io::Error),
}

fn bind_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            "another program is using that port: stop it or choose another --port"
        }
        std::io::ErrorKind::PermissionDenied => {
            "ports below 1024 need root or CAP_NET_BIND_SERVICE: choose a port of 1024 or more"
        }
        std::io::ErrorKind::AddrNotAvailable => {
            "that address is not on this machine: use 127.0.0.1, 0.0.0.0 or one of its addresses"
        }
        _ => "check the address and port",
    }
}
