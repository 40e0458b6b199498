//! `wsgi check` and `wsgi venv`: printing what the libraries find.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use serde::Serialize;
use wsgi_config::reader::ReadOptions;
use wsgi_config::report::{Mount, alias_daemon, handler_scripts, python_homes, routing_table};
use wsgi_config::venv::{self, UserIdentity, VenvKind, VenvReport};
use wsgi_config::{Config, ScriptAlias};
use wsgi_interp::embedded::{embedded_python, runtime_version};

use crate::serve::privileges;

/// The `--version` text: the product's version and the Python it embeds.
pub fn version_text() -> String {
    let py = embedded_python();
    let mut text = format!(
        "{}\nembeds CPython {} {}\ninstallation: {} ({})\nlibpython: {}\nvirtual environments must be made by this Python: {} -m venv DIR",
        env!("CARGO_PKG_VERSION"),
        py.version,
        runtime_version()
            .split_whitespace()
            .skip(1)
            .collect::<Vec<_>>()
            .join(" "),
        py.prefix.display(),
        py.executable.display(),
        py.libpython
            .as_ref()
            .map_or("(unknown)".to_string(), |p| p.display().to_string()),
        py.executable.display(),
    );
    if let Some(venv) = wsgi_interp::embedded::installed_venv() {
        text.push_str(&format!(
            "\ninstalled in: {} (the default python-home)",
            venv.display()
        ));
    }
    text
}

#[derive(Serialize)]
struct CheckOutput<'a> {
    config: &'a Path,
    ok: bool,
    mounts: Vec<Mount>,
    errors: Vec<String>,
    warnings: Vec<String>,
}

/// `wsgi check CONFIG`. Unless `for_apache`, the configuration is checked for
/// `wsgi serve --config` too: every line it would refuse is an error. What the applications
/// read (virtual environments, WSGI scripts) is checked to be readable by `user`, else by the
/// user who serves ([`serving_reader`]).
pub fn run_check(
    path: &Path,
    user: Option<&str>,
    server_root: Option<PathBuf>,
    defines: Vec<String>,
    for_apache: bool,
    json: bool,
) -> Result<ExitCode> {
    let opts = ReadOptions {
        server_root,
        defines: defines.into_iter().map(|d| (d, None)).collect(),
        ..ReadOptions::default()
    };
    // What can be kept of a configuration with errors is checked too: every problem in one
    // pass, not the next one after each fix.
    let (mut config, load_errors) = wsgi_config::load::check_file(path, &opts);
    if !for_apache && let Some(config) = &mut config {
        default_python_home(config);
    }
    let mut errors: Vec<String> = load_errors.iter().map(ToString::to_string).collect();
    let mut warnings = Vec::new();
    let mut mounts = Vec::new();
    if let Some(config) = &config {
        warnings.extend(config.warnings.iter().map(ToString::to_string));
        let serving = serving_reader(user, config);
        let fallback = serving.as_ref().ok().map(|r| r.name.as_str());
        check_python_homes(config, user, fallback, &mut errors, &mut warnings)?;
        check_scripts(config, &mut warnings);
        check_scripts_readable(config, user, &serving, &mut errors, &mut warnings);
        if !for_apache {
            // A line refused already is not refused again for wsgi serve.
            let refused: Vec<_> = load_errors.iter().filter_map(|e| e.span.as_ref()).collect();
            errors.extend(
                wsgi_config::serve_support::unserved(config)
                    .iter()
                    .filter(|u| !refused.contains(&&u.span))
                    .map(|u| {
                        format!(
                            "wsgi serve --config refuses {u} (or check it for Apache with --apache)"
                        )
                    }),
            );
            // Certificates are read, and ports checked, as wsgi serve would.
            errors.extend(
                crate::serve::tls::check_site(config)
                    .iter()
                    .map(ToString::to_string),
            );
        }
        // The routing table of a configuration that does not load would mislead.
        if load_errors.is_empty() {
            mounts = routing_table(config);
        }
    }
    let out = CheckOutput {
        config: path,
        ok: errors.is_empty(),
        mounts,
        errors,
        warnings,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_check(&out);
    }
    Ok(if out.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_check(out: &CheckOutput<'_>) {
    if !out.mounts.is_empty() {
        let mut host = "";
        for m in &out.mounts {
            if m.host != host {
                println!("{}", m.host);
                host = &m.host;
            }
            println!("  {} -> {}", m.mount, m.script);
            let home = m
                .python_home
                .as_ref()
                .map(|h| h.display().to_string())
                .unwrap_or_else(|| "(the embedded Python itself)".into());
            println!(
                "      process group: {}   application group: {}   python-home: {}   ({})",
                m.process_group, m.application_group, home, m.at
            );
        }
    } else if out.ok {
        println!("no WSGIScriptAlias: nothing is served");
    }
    for w in &out.warnings {
        println!("warning: {w}");
    }
    for e in &out.errors {
        println!("error: {e}");
    }
    if out.ok {
        println!("{}: configuration OK", out.config.display());
    } else {
        println!("{}: {} error(s)", out.config.display(), out.errors.len());
    }
}

/// Inspects every venv the configuration names, as the user each one is read by (`user`, else
/// the daemon group's `user=`, else `fallback_user`), adding each problem to `errors` or
/// `warnings` as `wsgi check` reports it.
pub fn check_python_homes(
    config: &Config,
    user: Option<&str>,
    fallback_user: Option<&str>,
    errors: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let embedded = embedded_python();
    errors.extend(wsgi_config::report::per_interpreter_gil_error(
        config, &embedded,
    ));
    for (home, at) in python_homes(config) {
        let daemon = config
            .daemons
            .iter()
            .find(|d| d.options.python_home.as_ref() == Some(&home));
        // A daemon group's venv of another Python runs on the wsgi installed in it.
        let report = match daemon {
            Some(_) => match wsgi_daemon::program::inspect_daemon_home(&home, &embedded) {
                Ok(found) => found.report,
                Err(e) => {
                    errors.push(format!("{at}: python-home=`{}`: {e}", home.display()));
                    continue;
                }
            },
            None => venv::inspect(&home, &embedded),
        };
        for problem in &report.problems {
            let mut line = format!("{at}: python-home=`{}`: {problem}", home.display());
            if daemon.is_none() {
                line.push_str(&own_wsgi_hint(&home, &problem.kind));
            }
            if problem.is_error() {
                errors.push(line)
            } else {
                warnings.push(line)
            }
        }
        // The user the code runs as: --user, else the daemon group's user=, else the fallback.
        let daemon_user = daemon.and_then(|d| d.options.user.clone());
        let reader = user
            .map(str::to_string)
            .or(daemon_user)
            .or(fallback_user.map(str::to_string));
        if let (Some(name), true) = (reader, report.is_usable()) {
            match UserIdentity::lookup(&name) {
                Ok(identity) => {
                    for problem in venv::check_readable(&home, &identity) {
                        errors.push(format!("{at}: python-home=`{}`: {problem}", home.display()));
                    }
                }
                Err(e) => warnings.push(format!("{at}: cannot check access for user {name}: {e}")),
            }
        }
    }
    Ok(())
}

/// For a server-wide python-home of another Python with wsgi-rs installed in it: the hint to
/// run that venv's own `wsgi` (empty otherwise).
fn own_wsgi_hint(home: &Path, problem: &venv::ProblemKind) -> String {
    let other_python = matches!(
        problem,
        venv::ProblemKind::VersionMismatch { .. } | venv::ProblemKind::OtherInstallation { .. }
    );
    let program = home.join("bin").join("wsgi");
    if other_python && program.is_file() {
        format!(
            "; or run the wsgi installed in it ({}), which embeds its Python",
            program.display()
        )
    } else {
        String::new()
    }
}

/// The virtual environment this `wsgi` is installed in (`pip install wsgi-rs`) becomes the
/// python-home of a configuration that names none, so the program runs applications on the
/// Python of its venv (with its packages). Returns that venv when it did.
pub fn default_python_home(config: &mut Config) -> Option<PathBuf> {
    if config.python.home.is_some() {
        return None;
    }
    let venv = wsgi_interp::embedded::installed_venv()?;
    config.python.home = Some(wsgi_config::Located {
        value: venv.clone(),
        span: None,
    });
    Some(venv)
}

/// Scripts that do not exist get 404 (a `WSGIHandlerScript`, 500) at request time: adds a
/// warning for each.
pub fn check_scripts(config: &Config, warnings: &mut Vec<String>) {
    let hosts = std::iter::once(&config.main).chain(&config.virtual_hosts);
    for host in hosts {
        for alias in &host.script_aliases {
            if alias.regex.is_some() && alias.target.contains('$') {
                continue;
            }
            if !Path::new(&alias.target).exists() {
                warnings.push(format!(
                    "{}: WSGIScriptAlias {}: {} does not exist: requests to {} will get 404 until it does",
                    alias.span, alias.url, alias.target, alias.url
                ));
            }
        }
    }
    for (_, h, _) in handler_scripts(config) {
        if !h.path.exists() {
            warnings.push(format!(
                "{}: WSGIHandlerScript {}: {} does not exist: requests for files with handler {} will get 500 until it does",
                h.span,
                h.handler,
                h.path.display(),
                h.handler
            ));
        }
    }
}

/// A user whose access `wsgi check` checks, and why that user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reader {
    /// The user name (or `#uid`).
    pub name: String,
    /// Why this user (`--user`, `the configuration's User`, ...).
    pub why: String,
}

/// The user who serves `config`'s applications where nothing more precise (a daemon group's
/// `user=`) names one, as `wsgi serve` decides it ([`privileges::serving_user`]): `--user`,
/// else the configuration's `User`, else, run as root, `www-data` (or `nobody`); not run as
/// root with no user named, the user running `wsgi check`.
pub fn serving_reader(cli_user: Option<&str>, config: &Config) -> Result<Reader, String> {
    if cli_user.is_none() && config.user.is_none() && !privileges::is_root() {
        let me = UserIdentity::current().map_err(|e| e.to_string())?;
        return Ok(Reader {
            name: me.name,
            why: "the user running wsgi check".to_string(),
        });
    }
    let (source, name) =
        privileges::serving_user(cli_user, config.user.as_deref()).map_err(|e| e.to_string())?;
    Ok(Reader {
        name,
        why: source.why(),
    })
}

/// The WSGI scripts of `alias` that exist: its file, or its folder and every file in it.
fn alias_scripts(alias: &ScriptAlias) -> Vec<PathBuf> {
    let target = PathBuf::from(&alias.target);
    if alias.is_directory() && target.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&target)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.is_file())
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files.insert(0, target);
        files
    } else if target.is_file() {
        vec![target]
    } else {
        Vec::new()
    }
}

/// A script (or folder of scripts) `wsgi check` checks the reading of.
struct Checked<'c> {
    /// Where it is configured.
    at: String,
    /// The directive and what it serves (`WSGIScriptAlias /app`, `WSGIHandlerScript pages`).
    directive: String,
    /// The files (a folder first, then the files in it).
    scripts: Vec<PathBuf>,
    /// The daemon process group that runs them, if any.
    daemon: Option<&'c wsgi_config::DaemonGroup>,
}

/// The WSGI scripts (a `WSGIScriptAlias` file; a `WSGIScriptAlias` folder and each file in it;
/// a `WSGIHandlerScript`) that the user who runs them cannot read: an error each, naming the
/// script and the user, with what blocks and the fix. The user is `cli_user` (`--user`), else
/// the `user=` of the daemon group that runs the script, else `serving`. Scripts that do not
/// exist are [`check_scripts`]' warnings.
pub fn check_scripts_readable(
    config: &Config,
    cli_user: Option<&str>,
    serving: &Result<Reader, String>,
    errors: &mut Vec<String>,
    warnings: &mut Vec<String>,
) {
    let mut checked = Vec::new();
    let indices = std::iter::once(None).chain((0..config.virtual_hosts.len()).map(Some));
    for index in indices {
        for alias in &config.host(index).script_aliases {
            if alias.regex.is_some() && alias.target.contains('$') {
                continue;
            }
            let directive = if alias.regex.is_some() {
                "WSGIScriptAliasMatch"
            } else {
                "WSGIScriptAlias"
            };
            checked.push(Checked {
                at: alias.span.to_string(),
                directive: format!("{directive} {}", alias.url),
                scripts: alias_scripts(alias),
                daemon: alias_daemon(config, index, alias),
            });
        }
    }
    for (_, h, daemon) in handler_scripts(config) {
        checked.push(Checked {
            at: h.span.to_string(),
            directive: format!("WSGIHandlerScript {}", h.handler),
            scripts: if h.path.is_file() {
                vec![h.path.clone()]
            } else {
                Vec::new()
            },
            daemon,
        });
    }
    let mut identities: HashMap<String, Option<UserIdentity>> = HashMap::new();
    let mut serving_warned = false;
    for c in checked {
        if c.scripts.is_empty() {
            continue;
        }
        let daemon_user = c.daemon.filter(|_| cli_user.is_none()).and_then(|d| {
            d.options.user.as_ref().map(|user| Reader {
                name: user.clone(),
                why: format!("the user= of WSGIDaemonProcess {}", d.name),
            })
        });
        let reader = match (daemon_user, serving) {
            (Some(reader), _) => reader,
            (None, Ok(reader)) => reader.clone(),
            (None, Err(e)) => {
                if !serving_warned {
                    serving_warned = true;
                    warnings.push(format!(
                        "cannot tell which user serves, so whether it can read the WSGI scripts is not checked: {e}"
                    ));
                }
                continue;
            }
        };
        let identity = identities.entry(reader.name.clone()).or_insert_with(|| {
            match UserIdentity::lookup(&reader.name) {
                Ok(identity) => Some(identity),
                Err(e) => {
                    warnings.push(format!(
                        "{}: cannot check whether user {} can read the WSGI scripts: {e}",
                        c.at, reader.name
                    ));
                    None
                }
            }
        });
        let Some(identity) = identity else {
            continue;
        };
        for script in &c.scripts {
            let folder = script.is_dir();
            let blocked = privileges::unreadable(script, identity);
            for line in &blocked {
                errors.push(format!(
                    "{}: {}: the WSGI script{} {} cannot be read by {}, who runs it ({}): {line}",
                    c.at,
                    c.directive,
                    if folder { " folder" } else { "" },
                    script.display(),
                    reader.name,
                    reader.why,
                ));
            }
            if folder && !blocked.is_empty() {
                // The folder blocks every file in it: one error says it.
                break;
            }
        }
    }
}

#[derive(Serialize)]
struct VenvOutput<'a> {
    embedded: &'a venv::EmbeddedPython,
    report: &'a VenvReport,
    access_problems: Vec<String>,
}

/// `wsgi venv PATH`.
pub fn run_venv(path: &Path, user: Option<&str>, json: bool) -> Result<ExitCode> {
    let embedded = embedded_python();
    let report = venv::inspect(path, &embedded);
    let mut access_problems = Vec::new();
    if let Some(name) = user {
        let identity =
            UserIdentity::lookup(name).with_context(|| format!("looking up user {name}"))?;
        access_problems = venv::check_readable(path, &identity)
            .iter()
            .map(ToString::to_string)
            .collect();
    }
    let usable = report.is_usable() && access_problems.is_empty();
    if json {
        let out = VenvOutput {
            embedded: &embedded,
            report: &report,
            access_problems,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(if usable {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let kind = match report.kind {
        VenvKind::Venv => "a virtual environment made by `python -m venv`".to_string(),
        VenvKind::Virtualenv => format!(
            "a virtual environment made by virtualenv {}",
            report.creator_version.as_deref().unwrap_or("")
        ),
        VenvKind::Uv => format!(
            "a virtual environment made by uv {}",
            report.creator_version.as_deref().unwrap_or("")
        ),
        VenvKind::Installation => {
            "a Python installation prefix (not a virtual environment)".to_string()
        }
        VenvKind::Unknown => "not a virtual environment".to_string(),
    };
    println!("{}: {}", report.absolute_path.display(), kind.trim_end());
    if let Some(v) = &report.version {
        println!("  python:          {v}");
    }
    if let Some(base) = &report.base_prefix {
        println!("  base install:    {}", base.display());
    }
    if let Some(sp) = &report.site_packages {
        println!("  site-packages:   {}", sp.display());
    }
    if report.kind != VenvKind::Unknown && report.kind != VenvKind::Installation {
        println!(
            "  activate_this.py: {}",
            if report.has_activate_this {
                "yes (in-script activation with exec(open(...).read()))"
            } else {
                "no (in-script activation with site.addsitedir)"
            }
        );
        if let Some(system) = report.include_system_site_packages {
            println!(
                "  system site-packages: {}",
                if system { "included" } else { "not included" }
            );
        }
    }
    println!(
        "  this wsgi-rs embeds Python {} from {}",
        embedded.version,
        embedded.prefix.display()
    );
    for p in report.warnings() {
        println!("warning: {p}");
    }
    for p in report.errors() {
        println!("error: {p}");
    }
    for p in &access_problems {
        println!("error: {p}");
    }
    if usable {
        if let Some(lines) = &report.config {
            println!("usable: yes. Use it with:");
            println!("  WSGIDaemonProcess NAME {}", lines.python_home);
            println!("  {}", lines.wsgi_python_home);
        }
        Ok(ExitCode::SUCCESS)
    } else {
        println!("usable: no");
        Ok(ExitCode::FAILURE)
    }
}
