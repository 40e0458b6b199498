//! `wsgi serve`: the standalone HTTP server, in embedded and daemon mode.
//!
//! Processes, as Apache's: the **master** ([`master`]) is the one started (root, to bind port
//! 80, when started as root); it reads and checks the configuration, binds the sockets, runs
//! the daemon process groups and starts a **front process** ([`front_process`]) that becomes
//! the unprivileged user ([`privileges`]) and serves the clients. SIGHUP starts a new front
//! beside the old one, which finishes its requests and stops: nothing is refused or lost.
//!
//! In the front process:
//!
//! * [`front`]: hyper 1 HTTP/1.1 and HTTP/2 ([`http2`]: `--http`, `Protocols`) connections
//!   on a small tokio runtime, behind [`head`] (raw request targets Apache accepts) and
//!   [`conn`] (the response write timeout). Each request
//!   is checked as Apache checks it ([`strict`]), routed by `wsgi_config::Config::route` (one
//!   code path for `--config site.conf` and for `wsgi serve app.wsgi`, whose flags are turned
//!   into mod_wsgi directives by [`site`]) or served from a static `--url-alias` folder.
//!   Where a PROXY protocol header is required (`--proxy-protocol`, `RemoteIPProxyProtocol`),
//!   [`proxy_protocol`] reads it first and its client becomes the connection's peer.
//! * [`pool`]: N Python worker threads fed through a bounded `wsgi_daemon::job_queue`; a request
//!   waits for one at most the queue timeout, then 503. tokio threads never touch Python.
//! * [`bridge`]: request bodies up to `--request-buffer-size` are read whole before a worker
//!   takes the request; larger ones, and responses, stream between the two sides through
//!   bounded channels, with body and write timeouts so no client holds a worker.
//! * [`daemon_groups`]: daemon mode. Routes that name a `WSGIDaemonProcess` group go to a front pool
//!   of that group, whose tokio tasks run them in the group's daemon processes through
//!   `wsgi_daemon::AsyncDaemonClient`. The front starts its own Python only when some mount
//!   runs embedded.
//! * [`status`]: the opt-in `--status-addr` endpoint `wsgi status` reads (the state comes
//!   from the master over [`control`]).
//! * [`access_log`]: `--access-log` (Apache's combined format) and `CustomLog`, from a thread
//!   of its own; [`error_log`]: `ErrorLog`, the main one as the master's stderr, a virtual
//!   host's for the lines about its requests.

pub mod access_log;
pub mod auth;
pub mod bridge;
pub mod conn;
pub mod control;
pub mod daemon_groups;
pub mod error;
pub mod error_log;
pub mod front;
pub mod front_hooks;
#[allow(unsafe_code)]
pub mod front_process;
pub mod head;
pub mod http1;
pub mod http2;
#[allow(unsafe_code)]
pub mod inherit;
pub mod listen;
pub mod master;
pub mod memory;
pub mod metrics;
pub mod peer_window;
pub mod pool;
pub mod privileges;
pub mod proxy_protocol;
pub mod reload;
#[allow(unsafe_code)]
pub mod sendfile;
pub mod site;
mod spares;
pub mod status;
pub mod strict;
pub mod target;
pub mod tls;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use wsgi_config::reader::ReadOptions;

pub use error::ServeError;
use front::Limits;
use listen::ListenAddr;
use site::{AppFlags, DaemonFlags, Site, SiteSource, UrlAlias};

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Lines for people.
    Text,
    /// One JSON object per line.
    Json,
}

/// `--log-level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    /// Failures only.
    Error,
    /// Failures and things worth a look (503s, slow shutdowns).
    Warn,
    /// Start-up, reloads and every refused request.
    Info,
    /// Per-connection detail.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    fn filter(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// The flags of `wsgi serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// What to serve at `/`: a WSGI script (a .wsgi or .py file defining `application`, or
    /// `app.wsgi:NAME`), or a module and its callable as gunicorn takes them
    /// (`mysite.wsgi:application`, `pkg.app:create_app()`), imported with the working
    /// directory first on sys.path. A script's own folder is on sys.path too.
    #[arg(env = "WSGI_RS_APP", value_name = "TARGET")]
    pub app: Option<PathBuf>,
    /// Change to this folder before anything else (module targets import from it; relative
    /// paths resolve against it), as gunicorn's --chdir and mod_wsgi-express's
    /// --working-directory.
    #[arg(
        env = "WSGI_RS_CHDIR",
        long,
        visible_alias = "working-directory",
        value_name = "DIR"
    )]
    pub chdir: Option<PathBuf>,
    /// Load the applications at their first request instead of at start (a broken one then
    /// answers 500 instead of stopping the start).
    #[arg(env = "WSGI_RS_LAZY_APPS", long)]
    pub lazy_apps: bool,
    /// Serve an Apache mod_wsgi configuration instead: its `Listen` ports, virtual hosts,
    /// `WSGIScriptAlias` mounts, application groups and `WSGIDaemonProcess` groups.
    #[arg(env = "WSGI_RS_CONFIG", long, conflicts_with_all = ["app", "mount", "python_home", "python_path", "application_group", "callable_object", "processes", "user", "group", "trust_proxy_header", "trust_proxy", "setenv", "maximum_requests", "request_timeout"])]
    pub config: Option<PathBuf>,
    /// With --config: the ServerRoot relative paths resolve against (default: the file's folder).
    #[arg(env = "WSGI_RS_SERVER_ROOT", long, requires = "config")]
    pub server_root: Option<PathBuf>,
    /// With --config: define a name for `<IfDefine>`, as `httpd -D NAME`.
    #[arg(
        env = "WSGI_RS_DEFINE",
        value_delimiter = ',',
        short = 'D',
        value_name = "NAME",
        requires = "config"
    )]
    pub define: Vec<String>,
    /// Listen on this address (repeatable): `HOST:PORT`, `[IPv6]:PORT`, a host name (each of
    /// its addresses), or `unix:/path` (a unix socket, for a proxy on this machine), as
    /// gunicorn's --bind; with --config, instead of its `Listen` addresses (requests are
    /// routed as if they came in on the first `Listen` port). Not with --host or --port.
    /// Under systemd socket activation (`LISTEN_FDS`), the sockets systemd passes are served
    /// instead.
    #[arg(env = "WSGI_RS_BIND", long, value_name = "ADDRESS", conflicts_with_all = ["host", "port"])]
    pub bind: Vec<String>,
    /// The permission bits of `--bind unix:` socket files (octal): who may connect is who may
    /// write the file.
    #[arg(
        env = "WSGI_RS_UNIX_SOCKET_MODE",
        long,
        value_name = "MODE",
        default_value = "0660",
        value_parser = listen::parse_mode
    )]
    pub unix_socket_mode: u32,
    /// The owner of `--bind unix:` socket files: `USER`, `USER:GROUP` or `:GROUP`. Default:
    /// the user who started the server, and, when started as root, the group of the user
    /// who serves (--user, default www-data), so a proxy running as that user connects.
    #[arg(env = "WSGI_RS_UNIX_SOCKET_OWNER", long, value_name = "USER[:GROUP]")]
    pub unix_socket_owner: Option<String>,
    /// The listen backlog: connections the kernel queues before the server accepts them
    /// (capped by net.core.somaxconn).
    #[arg(
        env = "WSGI_RS_BACKLOG",
        long,
        default_value_t = 1024,
        value_name = "N"
    )]
    pub backlog: u32,
    /// Set SO_REUSEPORT on the listening sockets, so other servers (another `wsgi serve`)
    /// may listen on the same port and share its connections.
    #[arg(env = "WSGI_RS_REUSE_PORT", long)]
    pub reuse_port: bool,
    /// Write the master process's pid to this file (removed when it stops).
    #[arg(env = "WSGI_RS_PID_FILE", long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// The address to listen on (default 127.0.0.1; with --config, the `Listen` addresses).
    #[arg(env = "WSGI_RS_HOST", long)]
    pub host: Option<String>,
    /// The port to listen on (default 8000; 0 picks a free one, shown in the banner). With
    /// --config it replaces the `Listen` ports, and requests are routed as if they came in on
    /// the configuration's first `Listen` port.
    #[arg(env = "WSGI_RS_PORT", long, overrides_with = "port")]
    pub port: Option<u16>,
    /// Python worker threads (requests running at once); with --processes, the threads of
    /// each daemon process.
    #[arg(env = "WSGI_RS_THREADS", long, default_value_t = 5)]
    pub threads: usize,
    /// Daemon mode: run the applications in this many daemon processes (a generated
    /// `WSGIDaemonProcess` group with --threads threads each and the --python-home and
    /// --python-path), as mod_wsgi-express does. Without it, they run in this process.
    #[arg(env = "WSGI_RS_PROCESSES", long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub processes: Option<u32>,
    /// When started as root: the user that serves the clients and runs the applications
    /// (the front process, and the daemon processes of --processes). Default: www-data where
    /// it exists, else nobody. With --config, the configuration's `User` says it.
    #[arg(env = "WSGI_RS_USER", long)]
    pub user: Option<String>,
    /// When started as root: the group to run with (default: the user's own). With
    /// --config, the configuration's `Group` says it.
    #[arg(env = "WSGI_RS_GROUP", long)]
    pub group: Option<String>,
    /// When started as root, serve clients and run the applications as root if no user is
    /// named (or the one named is root). Never do this on a network.
    #[arg(env = "WSGI_RS_ALLOW_ROOT", long)]
    pub allow_root: bool,
    /// Serve the daemon groups' status on this loopback address (`/status`, `/status.json`,
    /// Prometheus `/metrics`), for `wsgi status --status-addr ADDR`. Off by default.
    #[arg(env = "WSGI_RS_STATUS_ADDR", long, value_name = "IP:PORT")]
    pub status_addr: Option<SocketAddr>,
    /// Requests that may wait for a worker thread beyond those running.
    #[arg(env = "WSGI_RS_QUEUE_SIZE", long, default_value_t = 100)]
    pub queue_size: usize,
    /// Seconds a request may wait for a worker thread before it gets 503.
    #[arg(env = "WSGI_RS_QUEUE_TIMEOUT", long, default_value_t = 45.0)]
    pub queue_timeout: f64,
    /// Seconds a client may take to send its request headers, in all, however it trickles
    /// them (also how long a keep-alive connection may stay idle between requests).
    #[arg(env = "WSGI_RS_HEADER_TIMEOUT", long, default_value_t = 15.0)]
    pub header_timeout: f64,
    /// Request bodies up to this many bytes are read whole by the server before a worker
    /// thread takes the request, so a client sending slowly holds no thread; larger ones
    /// stream to the application as it reads them.
    #[arg(env = "WSGI_RS_REQUEST_BUFFER_SIZE", long, default_value_t = 256 * 1024, value_name = "BYTES")]
    pub request_buffer_size: usize,
    /// Seconds a client may make the server wait for request body bytes, plus one second
    /// per --body-min-rate bytes it sent (Apache's `RequestReadTimeout body=15,MinRate=500`).
    /// Past it: 408, or `OSError` in the application's `wsgi.input.read()`. 0: no limit.
    #[arg(env = "WSGI_RS_BODY_TIMEOUT", long, default_value_t = 15.0)]
    pub body_timeout: f64,
    /// Bytes per second a request body must arrive at to earn more time (see --body-timeout);
    /// 0: the body timeout is a total.
    #[arg(
        env = "WSGI_RS_BODY_MIN_RATE",
        long,
        default_value_t = 500,
        value_name = "BYTES"
    )]
    pub body_min_rate: u64,
    /// The largest request body accepted (413 beyond); 0: no limit. Apache's
    /// `LimitRequestBody` default.
    #[arg(env = "WSGI_RS_LIMIT_REQUEST_BODY", long, default_value_t = 1 << 30, value_name = "BYTES")]
    pub limit_request_body: u64,
    /// Seconds a client may leave a response unread (its socket full), plus one second per
    /// --response-min-rate bytes it read; past it the connection is dropped and the worker
    /// writing the response is released. 0: no limit.
    #[arg(env = "WSGI_RS_SOCKET_TIMEOUT", long, default_value_t = 60.0)]
    pub socket_timeout: f64,
    /// What --socket-timeout is while requests wait for a worker of the pool a response came
    /// from (its worker threads, or its daemon process group's): a client that does not read
    /// a streamed response keeps that worker from them, so it gets only these seconds (plus 1 s
    /// per --response-min-rate bytes it read) before it is dropped. 0: --socket-timeout always.
    #[arg(env = "WSGI_RS_BUSY_SOCKET_TIMEOUT", long, default_value_t = 5.0)]
    pub busy_socket_timeout: f64,
    /// Bytes per second a client must read a response at to earn more time (see
    /// --socket-timeout); 0: only the timeout.
    #[arg(
        env = "WSGI_RS_RESPONSE_MIN_RATE",
        long,
        default_value_t = 500,
        value_name = "BYTES"
    )]
    pub response_min_rate: u64,
    /// At most this many bytes of a response wait unsent in the kernel per TCP connection
    /// (`TCP_NOTSENT_LOWAT`): the server writes more as the client takes it, so a large
    /// response does not sit in socket buffers (nor is it sent from the client's side of a
    /// loopback connection, as its acknowledgements open the window); 0: the system's setting
    /// (`net.ipv4.tcp_notsent_lowat`, unlimited by default). With 128 KiB a loopback client
    /// (a proxy, a benchmark) often kept a small receive window for a file sent with
    /// `sendfile`, and took it at half the speed.
    #[arg(
        env = "WSGI_RS_TCP_NOTSENT_LOWAT",
        long,
        default_value_t = 32768,
        value_name = "BYTES"
    )]
    pub tcp_notsent_lowat: u32,
    /// The most client connections open at once; beyond it new connections wait in the
    /// listen backlog while the open ones are served. Default: half the open-file limit
    /// (raised to its hard limit at start) less a reserve.
    #[arg(env = "WSGI_RS_MAX_CONNECTIONS", long)]
    pub max_connections: Option<usize>,
    /// Which HTTP versions to speak: `auto` serves HTTP/1.1 and HTTP/2 with prior knowledge
    /// (h2c) on cleartext ports and offers `h2` and `http/1.1` through TLS ALPN (a `--config`
    /// site's `Protocols` decide per host, Apache's default being HTTP/1.1 only); `1` only
    /// HTTP/1.1; `2` only HTTP/2.
    #[arg(env = "WSGI_RS_HTTP", long, value_enum, default_value_t = http2::HttpMode::Auto)]
    pub http: http2::HttpMode,
    /// The most streams open at once on an HTTP/2 connection (more are refused with
    /// REFUSED_STREAM), as Apache's `H2MaxSessionStreams`.
    #[arg(
        env = "WSGI_RS_HTTP2_MAX_CONCURRENT_STREAMS",
        long,
        default_value_t = 100,
        value_name = "STREAMS"
    )]
    pub http2_max_concurrent_streams: u32,
    /// The longest request line accepted, in bytes (414 beyond), as Apache's
    /// `LimitRequestLine`.
    #[arg(
        env = "WSGI_RS_LIMIT_REQUEST_LINE",
        long,
        default_value_t = 8190,
        value_name = "BYTES"
    )]
    pub limit_request_line: usize,
    /// The longest request header field (`Name: value`) accepted, in bytes (400 beyond), as
    /// Apache's `LimitRequestFieldSize`.
    #[arg(
        env = "WSGI_RS_LIMIT_REQUEST_FIELD_SIZE",
        long,
        default_value_t = 8190,
        value_name = "BYTES"
    )]
    pub limit_request_field_size: usize,
    /// Seconds in-flight requests get to finish on SIGTERM/SIGINT.
    #[arg(env = "WSGI_RS_GRACEFUL_TIMEOUT", long, default_value_t = 15.0)]
    pub graceful_timeout: f64,
    /// The most bytes of request line and headers a request may have, in all (431 beyond).
    #[arg(env = "WSGI_RS_MAX_HEADER_SIZE", long, default_value_t = 65536)]
    pub max_header_size: usize,
    /// The most header fields a request may have (431 beyond).
    #[arg(env = "WSGI_RS_MAX_HEADERS", long, default_value_t = 100)]
    pub max_headers: usize,
    /// The virtual environment to run (its root: what `sys.prefix` prints in it).
    #[arg(env = "WSGI_RS_PYTHON_HOME", long)]
    pub python_home: Option<PathBuf>,
    /// A folder to put at the front of `sys.path` (repeatable).
    #[arg(env = "WSGI_RS_PYTHON_PATH", long)]
    pub python_path: Vec<PathBuf>,
    /// The application group (sub-interpreter) to run the apps in; default `%{GLOBAL}`, the
    /// main interpreter.
    #[arg(env = "WSGI_RS_APPLICATION_GROUP", long)]
    pub application_group: Option<String>,
    /// The name of the WSGI callable in the scripts (default `application`).
    #[arg(env = "WSGI_RS_CALLABLE_OBJECT", long)]
    pub callable_object: Option<String>,
    /// A proxy header to trust, as mod_wsgi-express's flag and `WSGITrustedProxyHeaders`
    /// (repeatable): `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host`, ... Its value
    /// then sets REMOTE_ADDR, wsgi.url_scheme, HTTP_HOST ...; untrusted synonyms are removed.
    #[arg(
        env = "WSGI_RS_TRUST_PROXY_HEADER",
        value_delimiter = ',',
        long,
        value_name = "HEADER"
    )]
    pub trust_proxy_header: Vec<String>,
    /// With --trust-proxy-header: only requests from these addresses (IP or CIDR,
    /// repeatable) may use them, as `WSGITrustedProxies` (default: any peer).
    #[arg(
        env = "WSGI_RS_TRUST_PROXY",
        value_delimiter = ',',
        long,
        value_name = "IP[/BITS]",
        requires = "trust_proxy_header"
    )]
    pub trust_proxy: Vec<String>,
    /// Every connection, on every listener (TLS ones included: the header comes before the
    /// handshake), must start with a PROXY protocol header, v1 or v2 (HAProxy's `send-proxy`,
    /// `send-proxy-v2`; AWS NLB), whose client becomes REMOTE_ADDR/REMOTE_PORT, the access
    /// log's and `Require`'s address; a connection without one is closed. With --config, the
    /// site's `RemoteIPProxyProtocol On` does this for its hosts' addresses instead.
    #[arg(env = "WSGI_RS_PROXY_PROTOCOL", long)]
    pub proxy_protocol: bool,
    /// The peers PROXY protocol headers are taken from (IP or CIDR, comma-separated or
    /// repeated; `*` for any): a connection that needs a header from any other is refused.
    #[arg(
        env = "WSGI_RS_PROXY_ALLOW_FROM",
        long,
        value_delimiter = ',',
        default_value = "127.0.0.1,::1",
        value_name = "IP[/BITS]",
        value_parser = proxy_protocol::parse_allow_from
    )]
    pub proxy_allow_from: Vec<proxy_protocol::AllowFrom>,
    /// Serve another script under a URL prefix: `/api=api.wsgi` (repeatable).
    #[arg(
        env = "WSGI_RS_MOUNT",
        value_delimiter = ',',
        long,
        value_name = "URL=SCRIPT"
    )]
    pub mount: Vec<String>,
    /// Serve a folder of static files under a URL prefix (repeatable): `--url-alias /static ./static`.
    #[arg(long, num_args = 2, value_names = ["URL", "DIR"])]
    pub url_alias: Vec<String>,
    /// Daemon mode: replace each daemon process after it served this many requests
    /// (`maximum-requests=`, as mod_wsgi-express's flag).
    #[arg(
        env = "WSGI_RS_MAXIMUM_REQUESTS",
        long,
        value_name = "N",
        requires = "processes"
    )]
    pub maximum_requests: Option<u64>,
    /// Daemon mode: a request running longer than this many seconds gets its process replaced
    /// (`request-timeout=`, as mod_wsgi-express's flag).
    #[arg(
        env = "WSGI_RS_REQUEST_TIMEOUT",
        long,
        value_name = "SECONDS",
        requires = "processes"
    )]
    pub request_timeout: Option<f64>,
    /// Add a variable to every request's WSGI environ (repeatable), as mod_wsgi-express's
    /// --setenv and Apache's `SetEnv`.
    #[arg(long, num_args = 2, value_names = ["NAME", "VALUE"])]
    pub setenv: Vec<String>,
    /// Write the access log (Apache combined format) to this file, or `-` for standard output.
    #[arg(env = "WSGI_RS_ACCESS_LOG", long, value_name = "FILE|-")]
    pub access_log: Option<PathBuf>,
    /// The format of --access-log: an Apache `LogFormat` string (`%h`, `%t`, `%r`, `%>s`,
    /// `%D`...), or `json` (one object per request: time, remote_addr, method, path, query,
    /// status, bytes, duration_us, referer, user_agent...). Default: Apache's combined
    /// format followed by the duration in microseconds.
    #[arg(env = "WSGI_RS_ACCESS_LOG_FORMAT", long, value_name = "FORMAT|json", default_value = access_log::DEFAULT_FORMAT, requires = "access_log")]
    pub access_log_format: String,
    /// Serve HTTPS with this certificate (PEM, optionally followed by its chain), as
    /// mod_wsgi-express names it; with a configuration, its SSL directives decide instead.
    #[arg(
        env = "WSGI_RS_SSL_CERTIFICATE_FILE",
        long,
        value_name = "FILE",
        requires = "ssl_certificate_key_file",
        conflicts_with = "config"
    )]
    pub ssl_certificate_file: Option<PathBuf>,
    /// The private key (PEM, unencrypted) of `--ssl-certificate-file`.
    #[arg(
        env = "WSGI_RS_SSL_CERTIFICATE_KEY_FILE",
        long,
        value_name = "FILE",
        requires = "ssl_certificate_file"
    )]
    pub ssl_certificate_key_file: Option<PathBuf>,
    /// Intermediate certificates (PEM) sent after `--ssl-certificate-file`.
    #[arg(
        env = "WSGI_RS_SSL_CERTIFICATE_CHAIN_FILE",
        long,
        value_name = "FILE",
        requires = "ssl_certificate_file"
    )]
    pub ssl_certificate_chain_file: Option<PathBuf>,
    /// How much the server logs (to standard error). `RUST_LOG`, when set, says it instead
    /// (tracing's syntax: `info,wsgi_cli=debug`).
    #[arg(env = "WSGI_RS_LOG_LEVEL", long, value_enum, default_value = "info")]
    pub log_level: LogLevel,
    /// How the error log is written: `text` (for people) or `json` (one object per line, for
    /// log collectors: `timestamp`, `level`, `fields.message` and the event's fields), the
    /// start-up banner and the daemon processes' lines included.
    #[arg(env = "WSGI_RS_LOG_FORMAT", long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Restart the server (gracefully) when a .py or .wsgi file below the applications'
    /// folders or python-path changes; for development.
    #[arg(env = "WSGI_RS_RELOAD_ON_CHANGES", long)]
    pub reload_on_changes: bool,
}

impl ServeArgs {
    fn source(&self) -> SiteSource {
        match &self.config {
            Some(path) => SiteSource::ConfigFile {
                path: path.clone(),
                options: ReadOptions {
                    server_root: self.server_root.clone(),
                    defines: self.define.iter().map(|d| (d.clone(), None)).collect(),
                    ..ReadOptions::default()
                },
            },
            None => SiteSource::CommandLine(Box::new(AppFlags {
                app: self.app.clone(),
                mounts: self.mount.clone(),
                python_home: self.python_home.clone(),
                python_path: self.python_path.clone(),
                application_group: self.application_group.clone(),
                callable_object: self.callable_object.clone(),
                trusted_proxy_headers: self.trust_proxy_header.clone(),
                trusted_proxies: self.trust_proxy.clone(),
                lazy: self.lazy_apps,
                setenv: self
                    .setenv
                    .chunks(2)
                    .map(|pair| (pair[0].clone(), pair[1].clone()))
                    .collect(),
                daemon: self.processes.map(|processes| DaemonFlags {
                    processes,
                    threads: u32::try_from(self.threads.max(1)).unwrap_or(u32::MAX),
                    user: self.user.clone(),
                    group: self.group.clone(),
                    maximum_requests: self.maximum_requests,
                    request_timeout: self.request_timeout,
                }),
            })),
        }
    }

    fn aliases(&self) -> Result<Vec<UrlAlias>, ServeError> {
        self.url_alias
            .chunks(2)
            .map(|pair| UrlAlias::new(&pair[0], std::path::Path::new(&pair[1])))
            .collect()
    }
}

/// How long the start waits for the daemon processes to report ready before the banner.
const DAEMON_READY_WAIT: Duration = Duration::from_secs(20);

fn seconds(value: f64) -> Duration {
    Duration::try_from_secs_f64(value.max(0.0)).unwrap_or(Duration::MAX)
}

/// Descriptors kept back from `--max-connections`' default (Python, log files, daemon
/// sockets, files being sent).
const RESERVED_FDS: u64 = 256;

/// Raises the open-file limit to its hard limit, and derives `--max-connections`' default
/// from it: half of what is left after [`RESERVED_FDS`] (each connection may also hold a file
/// being sent, or a daemon socket), at least 16.
fn default_max_connections() -> usize {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 512;
    };
    let limit = if hard > soft && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    let connections = limit.saturating_sub(RESERVED_FDS) / 2;
    usize::try_from(connections.clamp(16, 1 << 20)).unwrap_or(1 << 20)
}

impl ServeArgs {
    /// The protocol limits the flags describe.
    fn limits(&self) -> Limits {
        Limits {
            header_timeout: seconds(self.header_timeout),
            max_header_size: self.max_header_size,
            max_headers: self.max_headers,
            head: strict::HeadLimits {
                max_request_line: self.limit_request_line,
                max_field_size: self.limit_request_field_size,
            },
            body: bridge::BodyLimits {
                buffer_size: self.request_buffer_size,
                timeout: seconds(self.body_timeout),
                min_rate: self.body_min_rate,
                max_size: self.limit_request_body,
            },
            write: conn::WriteLimits {
                timeout: seconds(self.socket_timeout),
                min_rate: self.response_min_rate,
                busy_timeout: seconds(self.busy_socket_timeout),
            },
            max_connections: self
                .max_connections
                .unwrap_or_else(default_max_connections)
                .max(1),
            tcp_notsent_lowat: self.tcp_notsent_lowat,
            http: self.http,
            http2_max_streams: self.http2_max_concurrent_streams.max(1),
        }
    }
}

/// The addresses to listen on, each with the port requests on it are routed as.
fn listen_addresses(
    args: &ServeArgs,
    site: &Site,
) -> Result<Vec<(ListenAddr, Option<u16>)>, ServeError> {
    let host: Option<IpAddr> = args
        .host
        .as_deref()
        .map(|h| h.parse().map_err(|_| ServeError::BadHost(h.to_string())))
        .transpose()?;
    let from_config = config_ports(&site.config);
    let any = IpAddr::from([0, 0, 0, 0]);
    let local = IpAddr::from([127, 0, 0, 1]);
    // A command line's addresses are routed as the configuration's first port.
    let route_as = |given: bool| {
        (args.config.is_some() && given)
            .then(|| from_config.first().map(|(_, p)| *p))
            .flatten()
    };
    if !args.bind.is_empty() {
        let mut addrs = Vec::new();
        for text in &args.bind {
            for addr in bind_address(text)? {
                if !addrs.iter().any(|(a, _)| *a == addr) {
                    // A unix socket has no port of its own.
                    let route = match addr {
                        ListenAddr::Ip(_) => route_as(true),
                        ListenAddr::Unix(_) => route_as(true).or(Some(listen::UNIX_ROUTE_PORT)),
                    };
                    addrs.push((addr, route));
                }
            }
        }
        return Ok(addrs);
    }
    if args.config.is_none() || from_config.is_empty() || args.port.is_some() {
        let port = args.port.unwrap_or(8000);
        return Ok(vec![(
            ListenAddr::Ip(SocketAddr::new(host.unwrap_or(local), port)),
            route_as(args.port.is_some()),
        )]);
    }
    Ok(from_config
        .into_iter()
        .map(|(ip, port)| {
            (
                ListenAddr::Ip(SocketAddr::new(host.or(ip).unwrap_or(any), port)),
                None,
            )
        })
        .collect())
}

/// The configuration's `Listen` addresses, else its virtual hosts' ports.
fn config_ports(config: &wsgi_config::Config) -> Vec<(Option<IpAddr>, u16)> {
    if !config.listen.is_empty() {
        return config.listen.iter().map(|l| (l.ip, l.port)).collect();
    }
    let mut ports: Vec<(Option<IpAddr>, u16)> = config
        .virtual_hosts
        .iter()
        .flat_map(|h| h.addresses.iter().filter_map(|a| a.port.map(|p| (a.ip, p))))
        .collect();
    ports.sort();
    ports.dedup();
    ports
}

/// The port requests on an inherited socket (`addr`) are routed as: its own when the
/// configuration listens there (or there is no configuration), else the first one the
/// configuration listens on; for a unix socket, that one or [`listen::UNIX_ROUTE_PORT`].
fn inherited_route(args: &ServeArgs, site: &Site, addr: &ListenAddr) -> Option<u16> {
    let ports = config_ports(&site.config);
    let first = ports.first().map(|(_, p)| *p);
    match addr {
        ListenAddr::Unix(_) => Some(first.unwrap_or(listen::UNIX_ROUTE_PORT)),
        ListenAddr::Ip(addr) => {
            if args.config.is_none() || ports.iter().any(|(_, p)| *p == addr.port()) {
                return None;
            }
            first
        }
    }
}

/// The addresses of one `--bind` value (a relative unix socket path is made absolute).
fn bind_address(text: &str) -> Result<Vec<ListenAddr>, ServeError> {
    let bad = |why: &str| ServeError::BadBind {
        value: text.to_string(),
        why: why.to_string(),
    };
    if let Some(path) = text.strip_prefix("unix:") {
        if path.is_empty() {
            return Err(bad(
                "give the socket's path, for example unix:/run/mysite/wsgi.sock",
            ));
        }
        let path = std::path::absolute(path).map_err(|e| bad(&e.to_string()))?;
        return Ok(vec![ListenAddr::Unix(path)]);
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(vec![ListenAddr::Ip(addr)]);
    }
    let Some((_, port)) = text.rsplit_once(':') else {
        return Err(bad(
            "give HOST:PORT, for example 127.0.0.1:8000 or [::1]:8000, or unix:/path",
        ));
    };
    if port.parse::<u16>().is_err() {
        return Err(bad("the port must be a number from 0 to 65535"));
    }
    let addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(text)
        .map_err(|e| bad(&format!("the host name does not resolve: {e}")))?
        .collect();
    if addrs.is_empty() {
        return Err(bad("the host name has no address"));
    }
    Ok(addrs.into_iter().map(ListenAddr::Ip).collect())
}

/// A listening TCP socket for `addr`, non-blocking, with `--backlog`, `--reuse-port`, and
/// IPv6 sockets for IPv6 only (so `[::]:80` and `0.0.0.0:80` can both be bound).
fn bind(addr: SocketAddr, args: &ServeArgs) -> Result<std::net::TcpListener, ServeError> {
    use socket2::{Domain, Socket, Type};
    let failed = |source| ServeError::Bind { addr, source };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).map_err(failed)?;
    socket.set_reuse_address(true).map_err(failed)?;
    if args.reuse_port {
        socket.set_reuse_port(true).map_err(failed)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(true).map_err(failed)?;
    }
    socket.bind(&addr.into()).map_err(failed)?;
    socket.listen(backlog(args)).map_err(failed)?;
    socket.set_nonblocking(true).map_err(failed)?;
    Ok(socket.into())
}

/// `--backlog`, as `listen(2)` takes it.
fn backlog(args: &ServeArgs) -> i32 {
    i32::try_from(args.backlog.max(1)).unwrap_or(i32::MAX)
}

/// A listening socket for `addr`: TCP ([`bind`]), or a unix socket with `--unix-socket-mode`
/// and `--unix-socket-owner` (`default_group`, the serving user's group when started as root,
/// when no owner is named), with the file to remove when it is no longer served.
fn bind_listen(
    addr: &ListenAddr,
    args: &ServeArgs,
    default_group: Option<u32>,
) -> Result<(listen::Listening, Option<Arc<listen::SocketFile>>), ServeError> {
    match addr {
        ListenAddr::Ip(ip) => Ok((listen::Listening::Tcp(bind(*ip, args)?), None)),
        ListenAddr::Unix(path) => {
            let owner = match &args.unix_socket_owner {
                Some(value) => listen::SocketOwner::parse(value)?,
                None => listen::SocketOwner {
                    uid: None,
                    gid: default_group,
                },
            };
            let options = listen::UnixOptions {
                backlog: backlog(args),
                mode: args.unix_socket_mode,
                owner,
            };
            let (socket, file) = listen::bind_unix(path, options)?;
            Ok((listen::Listening::Unix(socket), Some(file)))
        }
    }
}

/// The TLS of a listener routed as `route_port`: `--ssl-certificate-file`'s, else the
/// configuration's `SSLEngine on` hosts of that port's (each with its own ALPN answer, for
/// `--http` and its `Protocols` and `ProtocolsHonorOrder`).
fn listener_tls(
    args: &ServeArgs,
    site: &Site,
    route_port: u16,
) -> Result<Option<tls::PortTls>, ServeError> {
    if let Some(certificate) = &args.ssl_certificate_file {
        return Ok(Some(tls::acceptor_for_files(
            certificate,
            args.ssl_certificate_key_file.as_deref(),
            args.ssl_certificate_chain_file.as_deref(),
            args.http,
        )?));
    }
    Ok(tls::acceptor_for(
        &site.config,
        &site.tls,
        route_port,
        args.http,
    )?)
}

/// Starts logging to stderr, or to a virtual host's `ErrorLog` for the lines about its
/// requests ([`error_log::Writer`]). Called once the main `ErrorLog` is the process's stderr
/// and the virtual hosts' logs are known (colours only for a terminal).
fn init_tracing(level: LogLevel, format: LogFormat) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.is_empty())
        .and_then(|v| tracing_subscriber::EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| {
            tracing_subscriber::EnvFilter::new(format!(
                "{level},hyper=warn,hyper_util=warn",
                level = level.filter()
            ))
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(error_log::Writer)
        .with_target(false);
    let _ = match format {
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
        LogFormat::Text => builder
            .with_ansi(
                std::io::IsTerminal::is_terminal(&std::io::stderr()) && !error_log::any_host_logs(),
            )
            .try_init(),
    };
}

/// Says why `wsgi serve` (`who`) stopped, on standard error: `who: error: ...`, or with
/// `--log-format json` an ERROR record like every other line.
pub fn report_error(format: LogFormat, who: &str, error: &ServeError) {
    match format {
        LogFormat::Text => eprintln!("{who}: error: {error}"),
        LogFormat::Json => {
            let record = serde_json::json!({
                "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                "level": "ERROR",
                "fields": { "message": format!("{who}: {error}") },
            });
            eprintln!("{record}");
        }
    }
}

/// A process's signal streams (SIGTERM, SIGINT, SIGHUP, SIGUSR1), installed before anyone
/// who could send them learns the pid.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers (inside a tokio runtime).
    fn install() -> Result<Signals, ServeError> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).map_err(ServeError::Threads)?,
            int: signal(SignalKind::interrupt()).map_err(ServeError::Threads)?,
            hup: signal(SignalKind::hangup()).map_err(ServeError::Threads)?,
            usr1: signal(SignalKind::user_defined1()).map_err(ServeError::Threads)?,
        })
    }
}

/// Runs `wsgi serve` until SIGTERM/SIGINT (the master process). Start-up problems are
/// returned before anything is served; after that the server only stops on a signal.
pub fn run(args: ServeArgs) -> Result<(), ServeError> {
    // The front and daemon processes inherit the folder (and do not change it again).
    if let Some(dir) = &args.chdir {
        std::env::set_current_dir(dir).map_err(|source| ServeError::Chdir {
            dir: dir.clone(),
            source,
        })?;
    }
    master::run(args)
}

/// Runs a front process (`wsgi front-process`, started by the master only).
pub fn run_front(args: ServeArgs) -> Result<(), ServeError> {
    front_process::run(args)
}
