//! The `wsgi` command: thin glue over the wsgi-rs libraries.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use wsgi_cli::{inspect, serve};

/// mimalloc for the server's own allocations (many small, short-lived, across threads: the
/// request and response of every call); Python keeps its own allocators. Built without
/// transparent huge pages (`no_thp`): with them, each thread's heap would hold 2 MiB pages and
/// a 16-thread server's resident memory would grow by half.
#[global_allocator]
static ALLOCATOR: wsgi_cli::allocator::Mimalloc = wsgi_cli::allocator::Mimalloc;

/// wsgi-rs: Apache mod_wsgi, rebuilt in Rust.
#[derive(Debug, Parser)]
#[command(name = "wsgi", version = inspect::version_text(), about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// For people.
    Text,
    /// For tools.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Read and validate an Apache mod_wsgi configuration, inspect every virtual environment it
    /// names, and print the routing table and every problem (exit status 1 on any error).
    Check {
        /// The configuration file (Apache httpd syntax, with its Includes).
        config: PathBuf,
        /// The user Apache or the daemons run the applications as: the virtual environments and
        /// the WSGI scripts are checked to be readable by it. Default: a daemon group's `user=`,
        /// else the configuration's `User`, else (run as root) www-data or nobody, as
        /// `wsgi serve` picks, else you.
        #[arg(long)]
        user: Option<String>,
        /// The ServerRoot relative paths resolve against (default: the file's folder).
        #[arg(long)]
        server_root: Option<PathBuf>,
        /// Define a name for `<IfDefine>`, as `httpd -D NAME`.
        #[arg(short = 'D', value_name = "NAME")]
        define: Vec<String>,
        /// Check the configuration for Apache with mod_wsgi_rs only: Apache's own directives
        /// (Require, SSL, logs...) are Apache's business. Without it, every line
        /// `wsgi serve --config` would refuse is an error too.
        #[arg(long)]
        apache: bool,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Inspect a virtual environment: what made it, its Python, whether this build of wsgi-rs
    /// can use it, and the python-home line to use.
    Venv {
        /// The virtual environment's root (what `python -c 'import sys; print(sys.prefix)'`
        /// prints).
        path: PathBuf,
        /// Also check that this user can read it.
        #[arg(long)]
        user: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Serve WSGI applications over HTTP/1.1: one script (`wsgi serve app.wsgi`), several
    /// (`--mount /api=api.wsgi`), or everything an Apache mod_wsgi configuration describes
    /// (`wsgi serve --config site.conf`). Stops on SIGTERM/SIGINT after in-flight requests
    /// finish; SIGHUP reloads the configuration and the applications.
    Serve(Box<serve::ServeArgs>),
    /// Show the daemon process groups of a running `wsgi serve` (processes, pids, requests
    /// served, in flight, restarts), read from its `--status-addr` endpoint.
    Status {
        /// The address the server was started with (`wsgi serve --status-addr IP:PORT`).
        #[arg(long, value_name = "IP:PORT")]
        status_addr: std::net::SocketAddr,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: serve::status::StatusFormat,
    },
    /// Print the lines that load mod_wsgi_rs into Apache httpd (`LoadModule ...`), or with
    /// `--site app.wsgi` a whole working site for one application in a daemon process group.
    ApacheConfig {
        /// The module file (default: `libwsgi_apache.so` next to this program).
        #[arg(long)]
        module: Option<PathBuf>,
        /// Make a whole site serving this WSGI script.
        #[arg(long, value_name = "SCRIPT")]
        site: Option<PathBuf>,
        /// The virtual environment's root (what `sys.prefix` prints in it).
        #[arg(long)]
        python_home: Option<PathBuf>,
        /// A folder for the front of `sys.path` (repeatable).
        #[arg(long)]
        python_path: Vec<PathBuf>,
        /// Daemon processes (default 1).
        #[arg(long)]
        processes: Option<u32>,
        /// Threads per daemon process (default 15).
        #[arg(long)]
        threads: Option<u32>,
        /// The virtual host's port.
        #[arg(long, default_value_t = 80)]
        port: u16,
        /// The virtual host's ServerName (default localhost).
        #[arg(long)]
        server_name: Option<String>,
        /// The URL path to mount the application at.
        #[arg(long, default_value = "/")]
        mount: String,
    },
    /// One daemon process of a `WSGIDaemonProcess` group, exec'd by the wsgi-rs supervisor
    /// (`wsgi_daemon::Supervisor`), never run by hand: its stdin is the control socket.
    #[command(hide = true)]
    DaemonProcess,
    /// Prints, as JSON, this build's daemon protocol identity and the Python it embeds: what
    /// a supervisor of another build asks before it runs a daemon process group on this
    /// program (a group whose venv is of this program's Python).
    #[command(hide = true)]
    DaemonInfo,
    /// The process of `wsgi serve` that serves the clients, started by its master process
    /// with the listening sockets, never run by hand.
    #[command(hide = true)]
    FrontProcess(Box<serve::ServeArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::DaemonProcess => {
            return ExitCode::from(wsgi_daemon::process::main().clamp(0, 255) as u8);
        }
        Command::DaemonInfo => {
            let info = wsgi_daemon::program::RuntimeInfo::this();
            println!("{}", serde_json::to_string(&info).unwrap_or_default());
            return ExitCode::SUCCESS;
        }
        Command::Check {
            config,
            user,
            server_root,
            define,
            apache,
            format,
        } => inspect::run_check(
            &config,
            user.as_deref(),
            server_root,
            define,
            apache,
            format == Format::Json,
        ),
        Command::Venv { path, user, format } => {
            inspect::run_venv(&path, user.as_deref(), format == Format::Json)
        }
        Command::Status {
            status_addr,
            format,
        } => match serve::status::fetch(status_addr, format) {
            Ok(text) => {
                print!("{text}");
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("wsgi status: error: {e}");
                return ExitCode::FAILURE;
            }
        },
        Command::ApacheConfig {
            module,
            site,
            python_home,
            python_path,
            processes,
            threads,
            port,
            server_name,
            mount,
        } => {
            let request = wsgi_cli::apache_config::ApacheConfigRequest {
                module,
                site,
                python_home,
                python_path,
                processes,
                threads,
                port,
                server_name,
                mount,
            };
            match wsgi_cli::apache_config::apache_config(&request) {
                Ok(text) => {
                    print!("{text}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("wsgi apache-config: error: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        Command::Serve(args) => {
            let format = args.log_format;
            match serve::run(*args) {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(e) => {
                    serve::report_error(format, "wsgi serve", &e);
                    return ExitCode::FAILURE;
                }
            }
        }
        Command::FrontProcess(args) => {
            let format = args.log_format;
            match serve::run_front(*args) {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(e) => {
                    serve::report_error(format, "wsgi serve: front process", &e);
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wsgi: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
