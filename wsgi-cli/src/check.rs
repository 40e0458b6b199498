//! `wsgi check` and `wsgi venv`: printing what the libraries find.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use serde::Serialize;
use wsgi_config::Config;
use wsgi_config::check::{Mount, python_homes, routing_table};
use wsgi_config::reader::ReadOptions;
use wsgi_config::venv::{self, UserIdentity, VenvKind, VenvReport};
use wsgi_interp::embedded::{embedded_python, runtime_version};

/// The `--version` text: the product's version and the Python it embeds.
pub fn version_text() -> String {
    let py = embedded_python();
    format!(
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
    )
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
/// `wsgi serve --config` too: every line it would refuse is an error.
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
    let (mounts, errors, warnings) = match wsgi_config::load_file(path, &opts) {
        Ok(config) => {
            let mut errors = Vec::new();
            let mut warnings: Vec<String> =
                config.warnings.iter().map(ToString::to_string).collect();
            check_python_homes(&config, user, &mut errors, &mut warnings)?;
            check_scripts(&config, &mut warnings);
            if !for_apache {
                errors.extend(
                    wsgi_config::serve_support::unserved(&config)
                        .iter()
                        .map(|u| format!("wsgi serve --config refuses {u} (or check it for Apache with --apache)")),
                );
            }
            (routing_table(&config), errors, warnings)
        }
        Err(errors) => (
            Vec::new(),
            errors.iter().map(ToString::to_string).collect(),
            Vec::new(),
        ),
    };
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

/// Inspects every venv the configuration names, as the user each one is read by, adding each
/// problem to `errors` or `warnings` as `wsgi check` reports it.
pub fn check_python_homes(
    config: &Config,
    user: Option<&str>,
    errors: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let embedded = embedded_python();
    errors.extend(wsgi_config::check::per_interpreter_gil_error(
        config, &embedded,
    ));
    for (home, at) in python_homes(config) {
        let report = venv::inspect(&home, &embedded);
        for problem in &report.problems {
            let line = format!("{at}: python-home {}: {problem}", home.display());
            if problem.is_error() {
                errors.push(line)
            } else {
                warnings.push(line)
            }
        }
        // The user the code runs as: --user, else the daemon group's user=, else Apache's User.
        let daemon_user = config
            .daemons
            .iter()
            .find(|d| d.options.python_home.as_ref() == Some(&home))
            .and_then(|d| d.options.user.clone());
        let reader = user
            .map(str::to_string)
            .or(daemon_user)
            .or(config.user.clone());
        if let (Some(name), true) = (reader, report.is_usable()) {
            match UserIdentity::lookup(&name) {
                Ok(identity) => {
                    for problem in venv::check_readable(&home, &identity) {
                        errors.push(format!("{at}: python-home {}: {problem}", home.display()));
                    }
                }
                Err(e) => warnings.push(format!("{at}: cannot check access for user {name}: {e}")),
            }
        }
    }
    Ok(())
}

/// Scripts that do not exist get 404 at request time: adds a warning for each.
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
