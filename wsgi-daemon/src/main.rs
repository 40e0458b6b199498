//! `wsgi-daemon`: the program a supervisor execs for each daemon process when it cannot exec
//! `wsgi` itself (the Apache module), and a stand-alone supervisor for a configuration's
//! daemon process groups.
//!
//! * `wsgi-daemon process`: one daemon process (started by a supervisor; its stdin is the
//!   control socket).
//! * `wsgi-daemon supervise CONFIG [--socket-dir DIR]`: starts every `WSGIDaemonProcess` of
//!   CONFIG, prints `group NAME SOCKET` per group on stdout, runs until SIGTERM or SIGINT,
//!   then stops every process and removes the sockets.

use std::path::PathBuf;
use std::process::ExitCode;

use nix::sys::signal::{SigSet, Signal};

const USAGE: &str = "usage: wsgi-daemon supervise CONFIG [--socket-dir DIR] | wsgi-daemon process";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("process") => ExitCode::from(wsgi_daemon::process::main().clamp(0, 255) as u8),
        Some("supervise") => match supervise(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("wsgi-daemon: error: {e}");
                ExitCode::from(2)
            }
        },
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn supervise(args: &[String]) -> Result<(), String> {
    wsgi_daemon::init_logging();
    let mut config_path = None;
    let mut socket_dir = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--socket-dir" => socket_dir = Some(PathBuf::from(it.next().ok_or(USAGE)?)),
            other if config_path.is_none() => config_path = Some(PathBuf::from(other)),
            _ => return Err(USAGE.into()),
        }
    }
    let config_path = config_path.ok_or(USAGE)?;
    // Block the stop signals before any thread starts, then wait for one.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals.thread_block().map_err(|e| e.to_string())?;
    let config = wsgi_config::load_file(&config_path, &Default::default()).map_err(|errors| {
        errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    let program = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let mut options = wsgi_daemon::SupervisorOptions::new(program, &["process"]);
    options.socket_dir = socket_dir;
    let supervisor =
        wsgi_daemon::Supervisor::start(&config, &options).map_err(|e| e.to_string())?;
    for e in supervisor.endpoints() {
        println!("group {} {}", e.group, e.socket.display());
    }
    let sig = signals.wait().map_err(|e| e.to_string())?;
    tracing::info!("{sig}: stopping the daemon processes");
    supervisor.shutdown();
    Ok(())
}
