//! `wsgi apache-config`: the lines that load mod_wsgi_rs into Apache httpd, and optionally a
//! whole working site for one application (what mod_wsgi-express `module-config` and
//! `setup-server` print). The site is checked with the same code as `wsgi check` before it is
//! printed.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use wsgi_config::reader::ReadOptions;
use wsgi_config::venv;

/// What to print.
#[derive(Debug, Clone, Default)]
pub struct ApacheConfigRequest {
    /// The module file; default: `libwsgi_apache.so` next to the `wsgi` program.
    pub module: Option<PathBuf>,
    /// A WSGI script to make a whole site for.
    pub site: Option<PathBuf>,
    /// The site's virtual environment root.
    pub python_home: Option<PathBuf>,
    /// Folders for the front of `sys.path`.
    pub python_path: Vec<PathBuf>,
    /// Daemon processes (default 1).
    pub processes: Option<u32>,
    /// Threads per daemon process (default 15, mod_wsgi's).
    pub threads: Option<u32>,
    /// The port of the `<VirtualHost>` (default 80).
    pub port: u16,
    /// The `ServerName` (default `localhost`).
    pub server_name: Option<String>,
    /// The URL the application is mounted at (default `/`).
    pub mount: String,
}

/// Why no configuration could be printed.
#[derive(Debug, thiserror::Error)]
pub enum ApacheConfigError {
    /// The module was not found.
    #[error("the Apache module {} does not exist: build it with `cargo build --release -p wsgi-apache` and give its path with --module", .0.display())]
    ModuleMissing(PathBuf),
    /// The script was not found.
    #[error("the WSGI script {} does not exist", .0.display())]
    ScriptMissing(PathBuf),
    /// The venv cannot be used.
    #[error("--python-home {}: {problems}", .home.display())]
    PythonHome {
        /// The venv given.
        home: PathBuf,
        /// What is wrong with it.
        problems: String,
    },
    /// The generated site did not pass `wsgi check` (a bug: please report it).
    #[error("the generated configuration does not pass wsgi check: {0}")]
    Invalid(String),
}

fn quote(path: &Path) -> String {
    let text = path.display().to_string();
    if text.contains([' ', '"', '\t']) {
        format!("\"{}\"", text.replace('"', "\\\""))
    } else {
        text
    }
}

/// The module path: the one asked for, else `libwsgi_apache.so` beside the running program.
fn module_path(asked: Option<&Path>) -> Result<PathBuf, ApacheConfigError> {
    let path = match asked {
        Some(p) => std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()),
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|d| d.join("libwsgi_apache.so")))
            .unwrap_or_else(|| PathBuf::from("libwsgi_apache.so")),
    };
    if path.exists() {
        Ok(path)
    } else {
        Err(ApacheConfigError::ModuleMissing(path))
    }
}

/// The configuration text.
pub fn apache_config(req: &ApacheConfigRequest) -> Result<String, ApacheConfigError> {
    let module = module_path(req.module.as_deref())?;
    let embedded = wsgi_interp::embedded::embedded_python();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# mod_wsgi_rs {} for Apache httpd 2.4, embedding CPython {} ({}).\n# Virtual environments must be made by that Python. Do not load mod_wsgi at the same time.\n# The daemon program `wsgi-daemon` must sit next to the module.",
        env!("CARGO_PKG_VERSION"),
        embedded.version,
        embedded.executable.display()
    );
    let _ = writeln!(out, "LoadModule wsgi_rs_module {}", quote(&module));
    let Some(script) = &req.site else {
        if let Some(home) = &req.python_home {
            let _ = writeln!(out, "WSGIPythonHome {}", quote(home));
        }
        return Ok(out);
    };
    let script = std::path::absolute(script).unwrap_or_else(|_| script.clone());
    if !script.is_file() {
        return Err(ApacheConfigError::ScriptMissing(script));
    }
    let mut daemon = String::from("WSGIDaemonProcess site");
    if let Some(p) = req.processes {
        let _ = write!(daemon, " processes={p}");
    }
    let _ = write!(daemon, " threads={}", req.threads.unwrap_or(15));
    if let Some(home) = &req.python_home {
        let home = std::path::absolute(home).unwrap_or_else(|_| home.clone());
        let report = venv::inspect(&home, &embedded);
        if !report.is_usable() {
            let problems: Vec<String> = report.errors().map(ToString::to_string).collect();
            return Err(ApacheConfigError::PythonHome {
                home,
                problems: problems.join("; "),
            });
        }
        let _ = write!(daemon, " python-home={}", quote(&home));
    }
    if !req.python_path.is_empty() {
        let joined: Vec<String> = req
            .python_path
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let _ = write!(daemon, " python-path={}", joined.join(":"));
    }
    daemon.push_str(" display-name=%{GROUP}");
    let folder = script.parent().unwrap_or(Path::new("/"));
    let file = script
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mount = if req.mount.is_empty() {
        "/"
    } else {
        req.mount.as_str()
    };
    let site = format!(
        "{daemon}
<VirtualHost *:{port}>
    ServerName {name}
    WSGIProcessGroup site
    WSGIApplicationGroup %{{GLOBAL}}
    WSGIScriptAlias {mount} {script}
    <Directory {folder}>
        <Files {file}>
            Require all granted
        </Files>
    </Directory>
</VirtualHost>
",
        port = req.port,
        name = req.server_name.as_deref().unwrap_or("localhost"),
        script = quote(&script),
        folder = quote(folder),
    );
    if req.port != 80 {
        let _ = writeln!(out, "Listen {}", req.port);
    }
    out.push_str(&site);
    wsgi_config::load_str(&out, Path::new("apache-config"), &ReadOptions::default()).map_err(
        |errors| {
            ApacheConfigError::Invalid(
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        },
    )?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_site_passes_wsgi_check_and_routes() {
        let dir = tempfile::tempdir().unwrap();
        let module = dir.path().join("libwsgi_apache.so");
        std::fs::write(&module, "").unwrap();
        let script = dir.path().join("my app.wsgi");
        std::fs::write(&script, "def application(e, s): pass\n").unwrap();
        let text = apache_config(&ApacheConfigRequest {
            module: Some(module.clone()),
            site: Some(script.clone()),
            processes: Some(2),
            threads: Some(4),
            port: 8080,
            mount: "/app".into(),
            ..Default::default()
        })
        .unwrap();
        assert!(
            text.contains(&format!("LoadModule wsgi_rs_module {}", module.display())),
            "{text}"
        );
        assert!(
            text.contains("WSGIDaemonProcess site processes=2 threads=4 display-name=%{GROUP}"),
            "{text}"
        );
        assert!(text.contains("Listen 8080"), "{text}");
        let config = wsgi_config::load_str(&text, Path::new("x"), &ReadOptions::default()).unwrap();
        let route = config
            .route(&wsgi_config::route::RouteRequest {
                local_ip: None,
                local_port: 8080,
                host: Some("localhost"),
                path: "/app/x",
                facts: None,
            })
            .unwrap()
            .unwrap();
        assert_eq!(route.script, script);
        assert_eq!(
            route.process_group,
            wsgi_config::route::ProcessGroup::Daemon("site".into())
        );
        assert_eq!(route.application_group, "");
    }

    #[test]
    fn a_missing_module_or_bad_home_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = apache_config(&ApacheConfigRequest {
            module: Some(dir.path().join("nope.so")),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("build it with `cargo build --release -p wsgi-apache`"),
            "{err}"
        );
        let module = dir.path().join("m.so");
        std::fs::write(&module, "").unwrap();
        let script = dir.path().join("a.wsgi");
        std::fs::write(&script, "").unwrap();
        let err = apache_config(&ApacheConfigRequest {
            module: Some(module),
            site: Some(script),
            python_home: Some(dir.path().join("venv/bin/python")),
            port: 80,
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("--python-home"), "{err}");
    }
}
