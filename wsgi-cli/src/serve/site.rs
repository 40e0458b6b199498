//! What is served: the routing [`Config`] (read from an Apache file, or generated from the
//! command line so both ways share `Config::route`), the static `--url-alias` folders, and the
//! Python the process starts with.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use wsgi_config::Config;
use wsgi_config::reader::ReadOptions;
use wsgi_config::report::{Mount, routing_table};

use super::error::ServeError;
use super::target::{Target, module_script, write_script};

/// How the site is described: everything needed to build it again on SIGHUP.
#[derive(Debug, Clone)]
pub enum SiteSource {
    /// `wsgi serve --config FILE`.
    ConfigFile {
        /// The Apache configuration file.
        path: PathBuf,
        /// Its read options (`--server-root`, `-D`).
        options: ReadOptions,
    },
    /// `wsgi serve [APP] [--mount ...]`: a configuration generated from flags.
    CommandLine(Box<AppFlags>),
}

/// The flags that describe the applications when there is no configuration file.
#[derive(Debug, Clone, Default)]
pub struct AppFlags {
    /// The script served at `/`.
    pub app: Option<PathBuf>,
    /// `--mount /url=file`, as given.
    pub mounts: Vec<String>,
    /// `--python-home`.
    pub python_home: Option<PathBuf>,
    /// `--python-path`.
    pub python_path: Vec<PathBuf>,
    /// `--application-group` (default `%{GLOBAL}`, the main interpreter, as mod_wsgi-express).
    pub application_group: Option<String>,
    /// `--callable-object`.
    pub callable_object: Option<String>,
    /// `--trust-proxy-header` (mod_wsgi-express's name): `WSGITrustedProxyHeaders`.
    pub trusted_proxy_headers: Vec<String>,
    /// `--trust-proxy`: `WSGITrustedProxies`.
    pub trusted_proxies: Vec<String>,
    /// Daemon mode (`--processes N`): the apps run in one generated daemon process group
    /// instead of this process.
    pub daemon: Option<DaemonFlags>,
    /// `--lazy-apps`: load each application at its first request, not at start.
    pub lazy: bool,
    /// `--setenv NAME VALUE`: `SetEnv` lines.
    pub setenv: Vec<(String, String)>,
}

/// `--processes N --threads M [--user U] [--group G]`: the daemon process group generated
/// for `wsgi serve app.wsgi`, as mod_wsgi-express does.
#[derive(Debug, Clone, Default)]
pub struct DaemonFlags {
    /// `processes=`.
    pub processes: u32,
    /// `threads=`.
    pub threads: u32,
    /// `user=`: who the daemons run as (needed when the server starts as root).
    pub user: Option<String>,
    /// `group=`.
    pub group: Option<String>,
    /// `maximum-requests=` (`--maximum-requests`).
    pub maximum_requests: Option<u64>,
    /// `request-timeout=` in seconds (`--request-timeout`).
    pub request_timeout: Option<f64>,
}

/// The name of the daemon process group `wsgi serve --processes` generates.
pub const SERVE_GROUP: &str = "wsgi-serve";

/// A static folder served under a URL prefix (`--url-alias /static DIR`).
#[derive(Debug, Clone)]
pub struct UrlAlias {
    /// The URL prefix, without a trailing `/` (except for `/` itself).
    pub url: String,
    /// The folder, absolute.
    pub dir: PathBuf,
}

impl UrlAlias {
    /// Reads one `--url-alias URL DIR` pair.
    pub fn new(url: &str, dir: &Path) -> Result<UrlAlias, ServeError> {
        if !url.starts_with('/') {
            return Err(ServeError::BadAliasUrl(url.to_string()));
        }
        let absolute = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        if !absolute.is_dir() {
            return Err(ServeError::BadAliasDir {
                url: url.to_string(),
                dir: dir.to_path_buf(),
            });
        }
        let trimmed = url.trim_end_matches('/');
        Ok(UrlAlias {
            url: if trimmed.is_empty() { "/" } else { trimmed }.to_string(),
            dir: absolute,
        })
    }

    /// The rest of `path` below this alias (starting with `/`), if the alias covers it.
    pub fn strip<'p>(&self, path: &'p str) -> Option<&'p str> {
        if self.url == "/" {
            return Some(path);
        }
        let rest = path.strip_prefix(self.url.as_str())?;
        (rest.is_empty() || rest.starts_with('/')).then_some(rest)
    }
}

/// Everything a request is routed against.
#[derive(Debug)]
pub struct Site {
    /// Where it came from.
    pub source: SiteSource,
    /// The routing configuration.
    pub config: Config,
    /// Static folders, longest URL first.
    pub aliases: Vec<UrlAlias>,
    /// The python-home the process runs (one Python per process).
    pub python_home: Option<PathBuf>,
    /// Folders put at the front of `sys.path`.
    pub python_path: Vec<PathBuf>,
    /// Non-fatal findings (configuration warnings).
    pub warnings: Vec<String>,
    /// Directives accepted with no effect, each once, with what applies instead.
    pub notes: Vec<String>,
    /// Whether routing tests requests (`SetEnvIf`): else no request's facts are gathered.
    pub tests_requests: bool,
    /// The certificates of the hosts with `SSLEngine on` (`[main, vhost 0, ...]`), read with
    /// the configuration (so before root is given up).
    pub tls: Vec<Option<super::tls::HostTls>>,
}

impl Site {
    /// Reads or generates the configuration, checks it as `wsgi check` does (the same messages
    /// stop the start), and decides the Python the process starts with.
    pub fn load(source: SiteSource, aliases: Vec<UrlAlias>) -> Result<Site, ServeError> {
        let config = match &source {
            SiteSource::ConfigFile { path, options } => {
                let config = wsgi_config::load_file(path, options).map_err(config_errors)?;
                let refused = wsgi_config::serve_support::unserved(&config);
                if !refused.is_empty() {
                    return Err(ServeError::Unserved(
                        refused.iter().map(ToString::to_string).collect(),
                    ));
                }
                config
            }
            SiteSource::CommandLine(flags) => {
                let text = generate_config(flags)?;
                let opts = ReadOptions {
                    server_root: Some(std::env::current_dir().unwrap_or_else(|_| "/".into())),
                    ..ReadOptions::default()
                };
                wsgi_config::load_str(&text, Path::new("(command line)"), &opts)
                    .map_err(config_errors)?
            }
        };
        let mut config = config;
        crate::inspect::default_python_home(&mut config);
        let mut errors = Vec::new();
        let mut warnings: Vec<String> = config.warnings.iter().map(ToString::to_string).collect();
        let mut notes: Vec<String> = Vec::new();
        for a in wsgi_config::serve_support::accepted(&config) {
            let note = format!("{} has no effect under wsgi serve: {}", a.directive, a.note);
            if !notes.contains(&note) {
                notes.push(note);
            }
        }
        crate::inspect::check_python_homes(
            &config,
            None,
            config.user.as_deref(),
            &mut errors,
            &mut warnings,
        )
        .map_err(|e| ServeError::Config(vec![format!("{e:#}")]))?;
        crate::inspect::check_scripts(&config, &mut warnings);
        if !errors.is_empty() {
            return Err(ServeError::Config(errors));
        }
        let (python_home, python_path) = process_python(&config);
        let mut aliases = aliases;
        aliases.sort_by_key(|a| std::cmp::Reverse(a.url.len()));
        let tls = super::tls::load_site(&config)?;
        Ok(Site {
            source,
            tls,
            tests_requests: config.tests_requests(),
            config,
            aliases,
            python_home,
            python_path,
            warnings,
            notes,
        })
    }

    /// The mounts, for the banner.
    pub fn mounts(&self) -> Vec<Mount> {
        routing_table(&self.config)
    }

    /// Whether any mount may run in this process (embedded mode), so the server must start
    /// its own Python. False when every mount names a defined daemon process group, or
    /// `WSGIRestrictEmbedded On` forbids embedded mode.
    pub fn needs_embedded(&self) -> bool {
        if self.config.server.restrict_embedded {
            return false;
        }
        self.mounts()
            .iter()
            .any(|m| self.config.daemon(&m.process_group).is_none())
    }

    /// The static alias covering `path`, with the rest of the path.
    pub fn alias_for<'p>(&self, path: &'p str) -> Option<(&UrlAlias, &'p str)> {
        self.aliases
            .iter()
            .find_map(|a| a.strip(path).map(|rest| (a, rest)))
    }
}

fn config_errors(errors: Vec<wsgi_config::ConfigError>) -> ServeError {
    ServeError::Config(errors.iter().map(ToString::to_string).collect())
}

impl Site {
    /// A daemon group's start-up failure, with a module target named as typed.
    pub fn explain_daemon_failure(&self, failure: &str) -> String {
        let mut text = failure.to_string();
        for m in self.mounts() {
            if let Some((target, _)) = super::target::generated_target(Path::new(&m.script)) {
                text = text.replace(&m.script, &format!("`{target}` (through {})", m.script));
            }
        }
        format!("{text}\n{LAZY_HINT}")
    }

    /// Why an application that loads at start (`p`) did not, in the terms of what the user
    /// typed: flags and targets for a command line, the configuration line for a file.
    pub fn explain_load_failure(
        &self,
        p: &wsgi_config::model::Preload,
        error: &wsgi_interp::ScriptError,
    ) -> String {
        use wsgi_interp::ScriptError;
        if let SiteSource::ConfigFile { .. } = self.source {
            return format!(
                "{}: loading {} at start, as mod_wsgi preloads it, failed: {error}\n{LAZY_HINT}",
                p.span,
                p.script.display()
            );
        }
        if let Some((target, folder)) = super::target::generated_target(&p.script) {
            let detail = match error {
                ScriptError::Raised { error, .. } => format!("{error}\n{}", error.traceback),
                other => other.to_string(),
            };
            return format!(
                "`{target}` cannot be served: importing it failed: {detail}\nThe working directory ({folder}) comes first on sys.path: run wsgi serve from the folder that holds the package, or pass --chdir DIR or --python-path DIR {LAZY_HINT}"
            );
        }
        let script = p.script.display();
        match error {
            ScriptError::MissingCallable {
                callable, found, ..
            } => format!(
                "{script} has no callable `{callable}`: {}; name the callable as {script}:NAME (or with --callable-object NAME)",
                wsgi_interp::callables_found(found)
            ),
            ScriptError::Raised { error, .. } => format!(
                "{script} failed to load: {error}\n{}fix the script {LAZY_HINT}",
                error.traceback
            ),
            other => format!("{script} failed to load: {other} {LAZY_HINT}"),
        }
    }
}

/// What `--lazy-apps` changes, for the messages of applications that fail at start.
const LAZY_HINT: &str =
    "(or start with --lazy-apps to serve anyway: its requests answer 500 until it loads)";

/// The Python of this process (embedded mode), as mod_wsgi's: `WSGIPythonHome` and
/// `WSGIPythonPath`. Daemon process groups start their own Python with their own
/// python-home and python-path.
fn process_python(config: &Config) -> (Option<PathBuf>, Vec<PathBuf>) {
    (
        config.python.home.as_ref().map(|h| h.value.clone()),
        config.python.path.clone(),
    )
}

/// `"..."` with the reader's escapes, refusing what it would expand or split.
fn quote(path: &Path) -> Result<String, ServeError> {
    let text = path.to_string_lossy();
    if text.contains('\n') || text.contains('\r') || text.contains("${") {
        return Err(ServeError::UnquotablePath(path.to_path_buf()));
    }
    Ok(format!(
        "\"{}\"",
        text.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}

/// `"key=value"`, quoted as one word.
fn quote_option(key: &str, value: &Path) -> Result<String, ServeError> {
    quote(Path::new(&format!("{key}={}", value.to_string_lossy())))
}

/// The script and callable a command-line target stands for: the script itself, or the
/// generated script importing a module target (its callable `application`).
fn resolve_target(target: &Path) -> Result<(PathBuf, Option<String>), ServeError> {
    // An existing file is a script whatever its name (even one no string holds).
    if target.is_file() {
        return Ok((script_path(target)?, None));
    }
    match Target::parse(&target.to_string_lossy())? {
        Target::Script { path, callable } => Ok((script_path(&path)?, callable)),
        Target::Module {
            module,
            attribute,
            factory,
        } => {
            let folder = std::env::current_dir().map_err(|e| ServeError::GeneratedScripts {
                dir: PathBuf::from("."),
                why: format!("the working directory is unknown: {e}"),
            })?;
            let script = write_script(&module_script(&module, &attribute, factory, &folder))?;
            Ok((script, Some("application".to_string())))
        }
    }
}

/// Whether `script` is one [`resolve_target`] generated.
fn is_generated(script: &Path) -> bool {
    script
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("module-") && n.ends_with(".wsgi"))
        && script
            .parent()
            .and_then(|d| d.file_name())
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("wsgi-rs"))
}

/// A script given on the command line, made absolute and checked to be a readable file.
fn script_path(path: &Path) -> Result<PathBuf, ServeError> {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    match std::fs::File::open(&absolute) {
        Ok(f) if f.metadata().is_ok_and(|m| m.is_file()) => Ok(absolute),
        Ok(_) => Err(ServeError::ScriptUnreadable {
            path: path.to_path_buf(),
            reason: "it is not a regular file".into(),
        }),
        Err(e) => Err(ServeError::ScriptUnreadable {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

/// The mod_wsgi directives the flags stand for, as mod_wsgi-express generates them: every app
/// in the main interpreter unless `--application-group` says otherwise.
pub fn generate_config(flags: &AppFlags) -> Result<String, ServeError> {
    // (URL, script, callable of that mount)
    let mut mounts: Vec<(String, PathBuf, Option<String>)> = Vec::new();
    for m in &flags.mounts {
        let (url, target) = m
            .split_once('=')
            .filter(|(u, f)| u.starts_with('/') && !f.is_empty())
            .ok_or_else(|| ServeError::BadMount(m.clone()))?;
        let url = match url.trim_end_matches('/') {
            "" => "/".to_string(),
            u => u.to_string(),
        };
        let (script, callable) = resolve_target(Path::new(target))?;
        mounts.push((url, script, callable));
    }
    if let Some(app) = &flags.app {
        let (script, callable) = resolve_target(app)?;
        mounts.push(("/".to_string(), script, callable));
    }
    if mounts.is_empty() {
        return Err(ServeError::NothingToServe);
    }
    // Apache takes the first alias that matches: longest URL first, `/` last.
    mounts.sort_by_key(|(url, _, _)| std::cmp::Reverse(url.len()));
    let mut text = String::new();
    let home = flags
        .python_home
        .as_ref()
        .map(|h| std::path::absolute(h).unwrap_or_else(|_| h.clone()));
    let mut python_path: Vec<PathBuf> = flags
        .python_path
        .iter()
        .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
        .collect();
    // A script's own folder is on sys.path (after what --python-path names), so it imports
    // the modules beside it; generated scripts put the working directory first themselves.
    for (_, script, _) in &mounts {
        if let Some(folder) = script.parent()
            && !is_generated(script)
            && !python_path.iter().any(|p| p == folder)
        {
            python_path.push(folder.to_path_buf());
        }
    }
    match &flags.daemon {
        None => {
            if let Some(home) = &home {
                let _ = writeln!(text, "WSGIPythonHome {}", quote(home)?);
            }
            for p in &python_path {
                let _ = writeln!(text, "WSGIPythonPath {}", quote(p)?);
            }
        }
        Some(d) => {
            // One daemon process group with the app's Python, as mod_wsgi-express generates.
            let mut line = format!(
                "WSGIDaemonProcess {SERVE_GROUP} processes={} threads={} display-name=%{{GROUP}}",
                d.processes.max(1),
                d.threads.max(1)
            );
            if let Some(home) = &home {
                line.push(' ');
                line.push_str(&quote_option("python-home", home)?);
            }
            if !python_path.is_empty() {
                if let Some(bad) = python_path
                    .iter()
                    .find(|p| p.to_string_lossy().contains(':'))
                {
                    return Err(ServeError::PythonPathColon(bad.clone()));
                }
                let joined = std::env::join_paths(&python_path)
                    .map_err(|_| ServeError::PythonPathColon(python_path[0].clone()))?;
                line.push(' ');
                line.push_str(&quote_option("python-path", Path::new(&joined))?);
            }
            let limits = [
                (
                    "maximum-requests",
                    d.maximum_requests.map(|n| n.to_string()),
                ),
                ("request-timeout", d.request_timeout.map(|t| t.to_string())),
            ];
            for (key, value) in [("user", d.user.clone()), ("group", d.group.clone())]
                .into_iter()
                .chain(limits)
            {
                if let Some(v) = value {
                    line.push(' ');
                    line.push_str(&quote_option(key, Path::new(&v))?);
                }
            }
            let _ = writeln!(text, "{line}");
            let _ = writeln!(text, "WSGIProcessGroup {SERVE_GROUP}");
        }
    }
    let group = flags.application_group.as_deref().unwrap_or("%{GLOBAL}");
    let _ = writeln!(text, "WSGIApplicationGroup {}", quote(Path::new(group))?);
    if let Some(callable) = &flags.callable_object {
        let _ = writeln!(text, "WSGICallableObject {}", quote(Path::new(callable))?);
    }
    for (name, value) in &flags.setenv {
        let _ = writeln!(
            text,
            "SetEnv {} {}",
            quote(Path::new(name))?,
            quote(Path::new(value))?
        );
    }
    for (directive, values) in [
        ("WSGITrustedProxyHeaders", &flags.trusted_proxy_headers),
        ("WSGITrustedProxies", &flags.trusted_proxies),
    ] {
        if !values.is_empty() {
            let quoted = values
                .iter()
                .map(|v| quote(Path::new(v)))
                .collect::<Result<Vec<_>, _>>()?;
            let _ = writeln!(text, "{directive} {}", quoted.join(" "));
        }
    }
    for (url, script, callable) in &mounts {
        let mut line = format!(
            "WSGIScriptAlias {} {}",
            quote(Path::new(url))?,
            quote(script)?
        );
        if let Some(callable) = callable {
            line.push(' ');
            line.push_str(&quote_option("callable-object", Path::new(callable))?);
        }
        // Both groups named literally: loaded at start, as mod_wsgi preloads such aliases.
        let literal = group == "%{GLOBAL}" || !group.contains("%{");
        if literal && !flags.lazy {
            let process = match &flags.daemon {
                Some(_) => SERVE_GROUP,
                None => "%{GLOBAL}",
            };
            line.push(' ');
            line.push_str(&quote_option("process-group", Path::new(process))?);
            line.push(' ');
            line.push_str(&quote_option("application-group", Path::new(group))?);
        }
        let _ = writeln!(text, "{line}");
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wsgi_config::route::RouteRequest;

    fn route(config: &Config, path: &str) -> Option<wsgi_config::route::Route> {
        config
            .route(&RouteRequest {
                local_ip: None,
                local_port: 8000,
                host: Some("localhost:8000"),
                path,
                facts: None,
            })
            .unwrap()
    }

    #[test]
    fn generated_config_routes_mounts_longest_first() {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("app.wsgi");
        let api = dir.path().join("api.wsgi");
        std::fs::write(&app, "").unwrap();
        std::fs::write(&api, "").unwrap();
        let flags = AppFlags {
            app: Some(app.clone()),
            mounts: vec![format!("/api={}", api.display())],
            callable_object: Some("app".into()),
            ..AppFlags::default()
        };
        let site = Site::load(SiteSource::CommandLine(Box::new(flags)), Vec::new()).unwrap();
        let r = route(&site.config, "/api/users").unwrap();
        assert_eq!(r.script, api);
        assert_eq!(r.script_name, "/api");
        assert_eq!(r.path_info, "/users");
        assert_eq!(r.application_group, "");
        assert_eq!(r.callable_object, "app");
        let r = route(&site.config, "/other").unwrap();
        assert_eq!(r.script, app);
        assert_eq!(r.script_name, "");
        assert_eq!(r.path_info, "/other");
    }

    #[test]
    fn named_application_group_and_quoted_paths() {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("my \"app\".wsgi");
        std::fs::write(&app, "").unwrap();
        let flags = AppFlags {
            app: Some(app.clone()),
            application_group: Some("site one".into()),
            ..AppFlags::default()
        };
        let site = Site::load(SiteSource::CommandLine(Box::new(flags)), Vec::new()).unwrap();
        let r = route(&site.config, "/").unwrap();
        assert_eq!(r.script, app);
        assert_eq!(r.application_group, "site one");
    }

    #[test]
    fn bad_flags_say_what_to_do() {
        let err = generate_config(&AppFlags::default()).unwrap_err();
        assert!(err.to_string().contains("nothing to serve"), "{err}");
        let err = generate_config(&AppFlags {
            mounts: vec!["api=x.wsgi".into()],
            ..AppFlags::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("--mount `api=x.wsgi`"), "{err}");
        let err = generate_config(&AppFlags {
            app: Some("/no/such/app.wsgi".into()),
            ..AppFlags::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("cannot be read"), "{err}");
    }

    #[test]
    fn url_alias_prefixes_end_on_segments() {
        let dir = tempfile::tempdir().unwrap();
        let a = UrlAlias::new("/static/", dir.path()).unwrap();
        assert_eq!(a.url, "/static");
        assert_eq!(a.strip("/static/x.css"), Some("/x.css"));
        assert_eq!(a.strip("/static"), Some(""));
        assert_eq!(a.strip("/staticfiles/x"), None);
        assert!(UrlAlias::new("static", dir.path()).is_err());
        assert!(UrlAlias::new("/s", &dir.path().join("missing")).is_err());
    }

    #[test]
    fn daemon_homes_are_not_the_front_python() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("site.conf");
        std::fs::write(
            &conf,
            "WSGIPythonPath /srv/lib\nWSGIDaemonProcess a python-home=/opt/a python-path=/opt/pa\nWSGIDaemonProcess b python-home=/opt/b\n",
        )
        .unwrap();
        let config = wsgi_config::load_file(&conf, &ReadOptions::default()).unwrap();
        let (home, path) = process_python(&config);
        assert_eq!(home, None);
        assert_eq!(path, vec![PathBuf::from("/srv/lib")]);
    }

    #[test]
    fn processes_flag_generates_one_daemon_group_with_the_apps_python() {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("app.wsgi");
        std::fs::write(&app, "").unwrap();
        let flags = AppFlags {
            app: Some(app.clone()),
            python_home: Some(dir.path().join("venv")),
            python_path: vec![dir.path().join("lib one"), dir.path().join("lib2")],
            daemon: Some(DaemonFlags {
                processes: 3,
                threads: 7,
                user: Some("nobody".into()),
                group: None,
                maximum_requests: Some(500),
                request_timeout: Some(30.5),
            }),
            setenv: vec![("STAGE".into(), "prod, eu".into())],
            ..AppFlags::default()
        };
        let text = generate_config(&flags).unwrap();
        assert!(!text.contains("WSGIPythonHome"), "{text}");
        assert!(text.contains("SetEnv \"STAGE\" \"prod, eu\"\n"), "{text}");
        let opts = ReadOptions::default();
        let config = wsgi_config::load_str(&text, Path::new("(command line)"), &opts).unwrap();
        let d = config.daemon(SERVE_GROUP).expect("the generated group");
        assert_eq!((d.options.processes, d.options.threads), (3, 7));
        assert_eq!(d.options.python_home, Some(dir.path().join("venv")));
        // --python-path, then the script's own folder.
        assert_eq!(
            d.options.python_path,
            vec![
                dir.path().join("lib one"),
                dir.path().join("lib2"),
                dir.path().to_path_buf()
            ]
        );
        assert_eq!(d.options.user.as_deref(), Some("nobody"));
        assert_eq!(d.options.maximum_requests, 500);
        assert_eq!(
            d.options.request_timeout,
            std::time::Duration::from_secs_f64(30.5)
        );
        let r = route(&config, "/x").unwrap();
        assert_eq!(
            r.process_group,
            wsgi_config::route::ProcessGroup::Daemon(SERVE_GROUP.into())
        );
        assert_eq!(r.application_group, "");

        let bad = AppFlags {
            python_path: vec!["/a:b".into()],
            ..flags
        };
        let err = generate_config(&bad).unwrap_err();
        assert!(err.to_string().contains("holds a `:`"), "{err}");
    }
}
