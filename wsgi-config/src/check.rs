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

/// The routing table: every `WSGIScriptAlias`/`WSGIScriptAliasMatch`, with the process group,
/// application group and venv a request to it gets (for `%{ENV:...}` and the like, the spec).
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
        for alias in &host.script_aliases {
            let directory = alias.is_directory();
            let settings = alias_settings(config, index, alias);
            let process_group = process_group_of(alias, &settings);
            let app_spec = alias.options.application_spec(&settings);
            let script_name = if alias.regex.is_some() {
                "<matched path>".to_string()
            } else {
                alias.url.trim_end_matches('/').to_string()
            };
            let application_group = match &app_spec {
                GroupSpec::Global => "%{GLOBAL} (main interpreter)".to_string(),
                GroupSpec::Resource if directory => format!("{server_id}|{script_name}/<script>"),
                GroupSpec::Resource => format!("{server_id}|{script_name}"),
                GroupSpec::Server => server_id.clone(),
                GroupSpec::Named(n) => n.clone(),
                other => other.to_string(),
            };
            let python_home = match &process_group {
                ProcessGroup::Embedded => config.python.home.as_ref().map(|h| h.value.clone()),
                ProcessGroup::Daemon(name) => config
                    .daemon(name)
                    .and_then(|d| d.python_home(&config.python).cloned()),
            };
            rows.push(Mount {
                host: host_label(config, index),
                mount: alias.url.clone(),
                script: if directory {
                    format!("{}/*.wsgi|*.py", alias.target.trim_end_matches('/'))
                } else {
                    alias.target.clone()
                },
                process_group: match process_group {
                    ProcessGroup::Embedded => "embedded".to_string(),
                    ProcessGroup::Daemon(n) => n,
                },
                application_group,
                python_home,
                at: alias.span.to_string(),
            });
        }
    }
    rows
}

/// The settings a request to `alias` (of host `index`) runs with; for a folder mount, those of
/// a script in the folder.
fn alias_settings(config: &Config, index: Option<usize>, alias: &ScriptAlias) -> WsgiSettings {
    let script_path = if alias.is_directory() {
        Path::new(&alias.target).join("_.wsgi")
    } else {
        PathBuf::from(&alias.target)
    };
    config
        .settings_for(index, &script_path, alias.url.as_bytes())
        .0
}

/// The process group of `alias` with `settings`: a group named at request time (such as
/// `%{ENV:...}`) is shown as its spec.
fn process_group_of(alias: &ScriptAlias, settings: &WsgiSettings) -> ProcessGroup {
    match alias.options.process_spec(settings) {
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
    match process_group_of(alias, &alias_settings(config, index, alias)) {
        ProcessGroup::Embedded => None,
        ProcessGroup::Daemon(name) => config.daemon(&name),
    }
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

/// `WSGIPerInterpreterGIL On` needs an embedded Python 3.12 or newer: the error to refuse the
/// configuration with, if the embedded one is older.
pub fn per_interpreter_gil_error(
    config: &Config,
    embedded: &crate::venv::EmbeddedPython,
) -> Option<String> {
    let v = &embedded.version;
    if !config.python.per_interpreter_gil || (v.major, v.minor) >= (3, 12) {
        return None;
    }
    Some(format!(
        "WSGIPerInterpreterGIL On needs Python 3.12 or newer, and this build embeds Python {v} ({}): set it Off, or rebuild wsgi-rs against a newer Python with PYO3_PYTHON=/path/to/python3.12",
        embedded.executable.display()
    ))
}
