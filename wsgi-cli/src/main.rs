//! The `wsgi` command: thin glue over the wsgi-rs libraries.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use wsgi_cli::{check, serve};

/// wsgi-rs: Apache mod_wsgi, rebuilt in Rust.
#[derive(Debug, Parser)]
#[command(name = "wsgi", version = check::version_text(), about)]
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
        /// Also check that this user (the one Apache or the daemons run as) can read the
        /// virtual environments.
        #[arg(long)]
        user: Option<String>,
        /// The ServerRoot relative paths resolve against (default: the file's folder).
        #[arg(long)]
        server_root: Option<PathBuf>,
        /// Define a name for <IfDefine>, as `httpd -D NAME`.
        #[arg(short = 'D', value_name = "NAME")]
        define: Vec<String>,
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
    /// finish; SIGHUP reloads the configuration.
    Serve(Box<serve::ServeArgs>),
    /// One daemon process of a `WSGIDaemonProcess` group, exec'd by the wsgi-rs supervisor
    /// (`wsgi_daemon::Supervisor`), never run by hand: its stdin is the control socket.
    #[command(hide = true)]
    DaemonProcess,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::DaemonProcess => {
            return ExitCode::from(wsgi_daemon::process::main().clamp(0, 255) as u8);
        }
        Command::Check {
            config,
            user,
            server_root,
            define,
            format,
        } => check::run_check(
            &config,
            user.as_deref(),
            server_root,
            define,
            format == Format::Json,
        ),
        Command::Venv { path, user, format } => {
            check::run_venv(&path, user.as_deref(), format == Format::Json)
        }
        Command::Serve(args) => match serve::run(*args) {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(e) => {
                eprintln!("wsgi serve: error: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wsgi: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
