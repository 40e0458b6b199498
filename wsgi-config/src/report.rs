//! What `wsgi check` reports: the routing table of a configuration, and every problem with it.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::model::*;
use crate::route::ProcessGroup;

/// One mount of the routing table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mount {
    /// The virtual host (`*:8080 example.com`) or `main server`.
    pub host: String,
    /// The URL path or pattern.
    pub mount: String,
    /// The script, or `DIR/*.wsgi|*.py` for a directory mount.
    pub script: String,
    /// `embedded`, or the daemon process group's name.
    pub process_group: String,
    /// The application group: `%{GLOBAL}` (the main interpreter) or the sub-interpreter name.
    pub application_group: String,
    /// The venv the processes start with, if any.
    pub python_home: Option<PathBuf>,
    /// Where the mount is configured.
    pub at: String,
}

/// The port a host serves on, for the group names shown in the table.
fn display_port(config: &Config, host: &Host) -> u16 {
    host.addresses
        .iter()
        .find_map(|a| a.port)
        .or(host.server_name_port)
        .or(config.listen.first().map(|l| l.port))
        .unwrap_or(80)
}

fn host_label(config: &Config, index: Option<usize>) -> String {
    let host = config.host(index);
    let name = config.server_name(index).unwrap_or("(no ServerName)");
    match index {
        None => format!("main server ({name})"),
        Some(_) => {
            let addresses: Vec<String> = host
                .addresses
                .iter()
                .map(|a| {
                    let addr =
                        a.ip.map(|ip| ip.to_string())
                            .or(a.name.clone())
                            .unwrap_or_else(|| "*".into());
                    match a.port {
                        Some(p) => format!("{addr}:{p}"),
                        None => addr,
                    }
                })
                .collect();
            format!("<VirtualHost {}> {name}", addresses.join(" "))
        }
    }
}

/// The routing table: every `WSGIScriptAlias`/`WSGIScriptAliasMatch`, then every
/// `WSGIHandlerScript` and every `AddHandler`/`SetHandler wsgi-script` line (files run by
/// their handler), with the process group, application group and venv a request to it gets
/// (for `%{ENV:...}` and the like, the spec).
pub fn routing_table(config: &Config) -> Vec<Mount> {
    let mut rows = Vec::new();
    let indices = std::iter::once(None).chain((0..config.virtual_hosts.len()).map(Some));
    for index in indices {
        let host = config.host(index);
        let port = display_port(config, host);
        let server = config.server_name(index).unwrap_or("localhost");
        let server_id = if port == 80 || port == 443 {
            server.to_string()
        } else {
            format!("{server}:{port}")
        };
        let row = |mount: String,
                   script: String,
                   (options, settings): (&AliasOptions, &WsgiSettings),
                   script_name: &str,
                   at: String| {
            let process_group = process_group_of(options, settings);
            let application_group = match options.application_spec(settings) {
                GroupSpec::Global => "%{GLOBAL} (main interpreter)".to_string(),
                GroupSpec::Resource => format!("{server_id}|{script_name}"),
                GroupSpec::Server => server_id.clone(),
                GroupSpec::Named(n) => n,
                other => other.to_string(),
            };
            let python_home = match &process_group {
                ProcessGroup::Embedded => config.python.home.as_ref().map(|h| h.value.clone()),
                ProcessGroup::Daemon(name) => config
                    .daemon(name)
                    .and_then(|d| d.python_home(&config.python).cloned()),
            };
            Mount {
                host: host_label(config, index),
                mount,
                script,
                process_group: match process_group {
                    ProcessGroup::Embedded => "embedded".to_string(),
                    ProcessGroup::Daemon(n) => n,
                },
                application_group,
                python_home,
                at,
            }
        };
        for alias in &host.script_aliases {
            let directory = alias.is_directory();
            let settings = alias_settings(config, index, alias);
            let mut script_name = if alias.regex.is_some() {
                "<matched path>".to_string()
            } else {
                alias.url.trim_end_matches('/').to_string()
            };
            if directory {
                script_name.push_str("/<script>");
            }
            let script = if directory {
                format!("{}/*.wsgi|*.py", alias.target.trim_end_matches('/'))
            } else {
                alias.target.clone()
            };
            rows.push(row(
                alias.url.clone(),
                script,
                (&alias.options, &settings),
                &script_name,
                alias.span.to_string(),
            ));
        }
        for (section, own) in levels(host) {
            if own.handler_scripts.is_empty()
                && own.add_handlers.is_empty()
                && own.set_handler.is_none()
            {
                continue;
            }
            let settings = level_settings(config, index, section);
            let (label, folder) = match section.map(|i| &host.sections[i]) {
                Some(s) => (format!("{} ", section_label(s)), section_folder(s)),
                None => (String::new(), None),
            };
            let files = |patterns: &[String]| {
                let patterns = patterns.join("|");
                match &folder {
                    Some(dir) => format!("{}/{patterns}", dir.trim_end_matches('/')),
                    None => patterns,
                }
            };
            for h in &own.handler_scripts {
                rows.push(row(
                    format!("{label}files with handler {}", h.handler),
                    h.path.display().to_string(),
                    (&h.options, &settings),
                    "<file URL>",
                    h.span.to_string(),
                ));
            }
            let no_options = AliasOptions::default();
            let mut lines: Vec<(Option<&crate::reader::Span>, Vec<String>)> = Vec::new();
            if let Some(set) = &own.set_handler {
                if set.value == crate::handlers::WSGI_SCRIPT {
                    lines.push((set.span.as_ref(), vec!["*".to_string()]));
                }
            }
            for (ext, handler) in &own.add_handlers {
                if handler.value != crate::handlers::WSGI_SCRIPT {
                    continue;
                }
                match lines
                    .iter_mut()
                    .find(|(at, _)| *at == handler.span.as_ref())
                {
                    Some((_, patterns)) => patterns.push(format!("*.{ext}")),
                    None => lines.push((handler.span.as_ref(), vec![format!("*.{ext}")])),
                }
            }
            for (at, patterns) in lines {
                rows.push(row(
                    format!("{label}files with handler wsgi-script"),
                    files(&patterns),
                    (&no_options, &settings),
                    "<file URL>",
                    at.map(ToString::to_string).unwrap_or_default(),
                ));
            }
        }
    }
    rows
}

/// The levels of a host: its own settings (None), then each section's (its index).
fn levels(host: &Host) -> impl Iterator<Item = (Option<usize>, &WsgiSettings)> {
    std::iter::once((None, &*host.settings)).chain(
        host.sections
            .iter()
            .enumerate()
            .map(|(i, s)| (Some(i), &s.settings)),
    )
}

/// The settings of a level of host `index`: the main server's, the host's, then the section's
/// (inside its parents).
fn level_settings(config: &Config, index: Option<usize>, section: Option<usize>) -> WsgiSettings {
    let mut settings = WsgiSettings::clone(&config.main.settings);
    let host = config.host(index);
    if index.is_some() {
        settings.merge(&host.settings);
    }
    let mut chain = Vec::new();
    let mut next = section;
    while let Some(i) = next {
        chain.push(i);
        next = host.sections[i].parent;
    }
    for i in chain.into_iter().rev() {
        settings.merge(&host.sections[i].settings);
    }
    settings
}

/// `<Directory /srv/x>`, `<LocationMatch ^/x>`...: a section as written.
fn section_label(s: &DirSection) -> String {
    let kind = match s.kind {
        SectionKind::Directory => "Directory",
        SectionKind::Location => "Location",
        SectionKind::Files => "Files",
    };
    let regex = if s.regex.is_some() { "Match" } else { "" };
    format!("<{kind}{regex} {}>", s.pattern)
}

/// The folder a plain `<Directory>` section names.
fn section_folder(s: &DirSection) -> Option<String> {
    (s.kind == SectionKind::Directory && s.regex.is_none() && !s.pattern.contains(['*', '?', '[']))
        .then(|| s.pattern.clone())
}

/// The settings a request to `alias` (of host `index`) runs with; for a folder mount, those of
/// a script in the folder.
fn alias_settings(config: &Config, index: Option<usize>, alias: &ScriptAlias) -> WsgiSettings {
    let script_path = if alias.is_directory() {
        Path::new(&alias.target).join("_.wsgi")
    } else {
        PathBuf::from(&alias.target)
    };
    let (settings, _) = config.settings_for(index, &script_path, alias.url.as_bytes());
    std::sync::Arc::unwrap_or_clone(settings)
}

/// The process group under `options` and `settings`: a group named at request time (such as
/// `%{ENV:...}`) is shown as its spec.
fn process_group_of(options: &AliasOptions, settings: &WsgiSettings) -> ProcessGroup {
    match options.process_spec(settings) {
        GroupSpec::Global => ProcessGroup::Embedded,
        GroupSpec::Named(n) => ProcessGroup::Daemon(n),
        other => ProcessGroup::Daemon(other.to_string()),
    }
}

/// The daemon process group that runs the scripts of `alias` (of host `index`): None for
/// embedded mode, or a group only known at request time (`%{ENV:...}`).
pub fn alias_daemon<'c>(
    config: &'c Config,
    index: Option<usize>,
    alias: &ScriptAlias,
) -> Option<&'c DaemonGroup> {
    match process_group_of(&alias.options, &alias_settings(config, index, alias)) {
        ProcessGroup::Embedded => None,
        ProcessGroup::Daemon(name) => config.daemon(&name),
    }
}

/// Every `WSGIHandlerScript` of `config`, with its host and the daemon process group that
/// runs it where it is declared (None: embedded mode, or a group only known at request time).
pub fn handler_scripts(
    config: &Config,
) -> Vec<(Option<usize>, &HandlerScript, Option<&DaemonGroup>)> {
    let mut found = Vec::new();
    let indices = std::iter::once(None).chain((0..config.virtual_hosts.len()).map(Some));
    for index in indices {
        let host = config.host(index);
        for (section, own) in levels(host) {
            for h in &own.handler_scripts {
                let settings = level_settings(config, index, section);
                let daemon = match process_group_of(&h.options, &settings) {
                    ProcessGroup::Embedded => None,
                    ProcessGroup::Daemon(name) => config.daemon(&name),
                };
                found.push((index, h, daemon));
            }
        }
    }
    found
}

/// Every venv root the configuration names, with the directive that names it.
pub fn python_homes(config: &Config) -> Vec<(PathBuf, String)> {
    let mut homes = Vec::new();
    if let Some(h) = &config.python.home {
        let at = h
            .span
            .as_ref()
            .map(|s| format!("{s}: WSGIPythonHome"))
            .unwrap_or_default();
        homes.push((h.value.clone(), at));
    }
    for d in &config.daemons {
        if let Some(h) = &d.options.python_home {
            homes.push((
                h.clone(),
                format!("{}: WSGIDaemonProcess {}", d.span, d.name),
            ));
        }
    }
    homes
}

/// `WSGIPerInterpreterGIL On` (at the top level or in a `<WSGIInterpreterOptions>` section)
/// needs an embedded Python 3.12 or newer: the error to refuse the configuration with, if the
/// embedded one is older.
pub fn per_interpreter_gil_error(
    config: &Config,
    embedded: &crate::venv::EmbeddedPython,
) -> Option<String> {
    let v = &embedded.version;
    if !config.python.interpreter_rules().any_own_gil() || (v.major, v.minor) >= (3, 12) {
        return None;
    }
    let section = config
        .python
        .interpreter_options
        .iter()
        .find(|b| b.rule.per_interpreter_gil == Some(true))
        .filter(|_| !config.python.per_interpreter_gil)
        .map(|b| format!(" (in the <WSGIInterpreterOptions> section at {})", b.span))
        .unwrap_or_default();
    Some(format!(
        "WSGIPerInterpreterGIL On{section} needs Python 3.12 or newer, and this build embeds Python {v} ({}): set it Off, or rebuild wsgi-rs against a newer Python with PYO3_PYTHON=/path/to/python3.12",
        embedded.executable.display()
    ))
}
