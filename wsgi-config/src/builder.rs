//! Stage 2: the builder, fed one directive at a time with its context.
//!
//! The file loader ([`crate::load`]) walks the reader's tree and calls
//! [`ConfigBuilder::directive`] for each directive with the sections around it; the Apache module
//! calls the same method from its directive callbacks. Both therefore accept and refuse the same
//! configurations, with the same messages.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use regex::Regex;

use crate::directives::{self, Arity, DirectiveDef, Scope};
use crate::env::{EnvOp, SetEnvIf};
use crate::error::{ConfigError, ConfigWarning, ErrorKind, closest};
use crate::model::*;
use crate::options::{parse_flag, parse_option_flag, split_option};
use crate::reader::{Directive, Span};

/// The `<VirtualHost>` a directive is in.
#[derive(Debug, Clone, PartialEq)]
pub struct VirtualHostDecl {
    /// The addresses, as written (`*:8080`).
    pub addresses: Vec<String>,
    /// Where the section opens: it identifies the virtual host.
    pub span: Span,
}

/// A per-directory section a directive is in.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerDecl {
    /// The section name as written (`Directory`, `LocationMatch`, `IfVersion`, ...).
    pub kind: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Where it opens: it identifies the section.
    pub span: Span,
}

/// Where a directive sits.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Context {
    /// The enclosing `<VirtualHost>`, if any.
    pub virtual_host: Option<VirtualHostDecl>,
    /// The enclosing per-directory sections, outermost first.
    pub containers: Vec<ContainerDecl>,
    /// Whether the directive comes from an `.htaccess` file.
    pub htaccess: bool,
}

/// A reference to a literal process group, checked when the configuration is complete (groups
/// may be defined after they are named).
#[derive(Debug, Clone)]
struct GroupRef {
    name: String,
    host: Option<usize>,
    span: Span,
    subject: String,
}

/// Every problem of one directive line: most lines have one, a line of `name=value` options
/// one per bad option.
#[derive(Debug)]
pub(crate) struct Refusals(pub(crate) Vec<ErrorKind>);

impl From<ErrorKind> for Refusals {
    fn from(kind: ErrorKind) -> Self {
        Refusals(vec![kind])
    }
}

impl Refusals {
    /// `Ok` when nothing is refused.
    pub(crate) fn check(refused: Vec<ErrorKind>) -> Result<(), Refusals> {
        if refused.is_empty() {
            Ok(())
        } else {
            Err(Refusals(refused))
        }
    }
}

/// One mod_wsgi directive line, as its [`DirectiveDef::apply`] receives it: the definition,
/// where the line sits and what it says (its scope and arity already checked).
pub(crate) struct Line<'a> {
    pub(crate) def: &'static DirectiveDef,
    pub(crate) ctx: &'a Context,
    /// The virtual host it is in (an index of [`Config::virtual_hosts`]).
    pub(crate) host: Option<usize>,
    pub(crate) d: &'a Directive,
}

impl Line<'_> {
    /// The arguments.
    pub(crate) fn args(&self) -> &[String] {
        &self.d.args
    }

    /// The first argument (`""` when there is none).
    pub(crate) fn one(&self) -> &str {
        self.d.args.first().map(String::as_str).unwrap_or("")
    }

    /// The first argument as `On` or `Off`.
    pub(crate) fn flag(&self) -> Result<bool, ErrorKind> {
        parse_flag(self.one())
    }
}

/// Builds a [`Config`] from directives.
#[derive(Debug)]
pub struct ConfigBuilder {
    pub(crate) config: Config,
    hosts: HashMap<Span, usize>,
    sections: HashMap<(Option<usize>, Span), usize>,
    group_refs: Vec<GroupRef>,
    /// `LogFormat` without a nickname: `TransferLog`'s format.
    default_log_format: Option<String>,
    /// `CustomLog` lines, their nicknames resolved once every `LogFormat` is in.
    pending_logs: Vec<PendingLog>,
}

/// A `CustomLog` waiting for its format's nickname to be resolved.
#[derive(Debug)]
struct PendingLog {
    span: Span,
    host: Option<usize>,
    path: PathBuf,
    format: String,
    condition: Option<String>,
}

impl ConfigBuilder {
    /// A builder for a server whose `ServerRoot` is `server_root`.
    pub fn new(server_root: impl Into<PathBuf>) -> Self {
        ConfigBuilder {
            config: Config {
                server_root: server_root.into(),
                ..Config::default()
            },
            hosts: HashMap::new(),
            sections: HashMap::new(),
            group_refs: Vec::new(),
            default_log_format: None,
            pending_logs: Vec::new(),
        }
    }

    /// Applies one directive, or refuses it with every problem it has (each bad option of a
    /// line of options, not only the first); what can be kept of a refused line is kept (a
    /// `WSGIDaemonProcess` with a bad option still defines its group, with the options that
    /// parse, so that lines naming the group are not refused too). Directives that are not
    /// mod_wsgi's are kept where they matter (`ServerName`, `ServerAlias`, `Listen`,
    /// `ServerRoot`, `User`, `Group`, `SetEnv`, `Require all ...`) and never refused.
    pub fn directive(&mut self, ctx: &Context, d: &Directive) -> Result<(), Vec<ConfigError>> {
        if let Some(at) = ctx.containers.iter().position(is_interpreter_options) {
            return self.interpreter_option(ctx, at, d);
        }
        let host = self.host_index(ctx).map_err(|e| vec![e])?;
        match directives::lookup(&d.name) {
            Some(def) => {
                let subject = match def.name {
                    "WSGIDaemonProcess" => match d.args.first() {
                        Some(name) => format!("WSGIDaemonProcess {name}"),
                        None => def.name.to_string(),
                    },
                    _ => def.name.to_string(),
                };
                let err = |kind| vec![ConfigError::new(Some(&d.span), subject.clone(), kind)];
                check_scope(def, ctx).map_err(err)?;
                check_arity(def, &d.args).map_err(err)?;
                let line = Line { def, ctx, host, d };
                (def.apply)(self, &line).map_err(|refused| {
                    refused
                        .0
                        .into_iter()
                        .map(|kind| ConfigError::new(Some(&d.span), subject.clone(), kind))
                        .collect()
                })
            }
            None if directives::is_wsgi_name(&d.name) => Err(vec![ConfigError::new(
                Some(&d.span),
                d.name.clone(),
                ErrorKind::UnknownDirective {
                    suggestion: closest(&d.name, directives::DIRECTIVES.iter().map(|d| d.name)),
                },
            )]),
            None => self.context_directive(ctx, host, d).map_err(|e| vec![e]),
        }
    }

    /// Opens a `<WSGIInterpreterOptions process-group=NAME application-group=NAME>` section
    /// (mod_wsgi 6; `args` its words, `span` its line): it must be at the server level, and
    /// its selectors `name=value` words, each at most once (`%{GLOBAL}` naming embedded mode or
    /// the main interpreter; none: every interpreter). The directives inside come next, with
    /// the section in their context ([`ConfigBuilder::directive`]).
    pub fn interpreter_options(
        &mut self,
        ctx: &Context,
        args: &[String],
        span: &Span,
    ) -> Result<(), Vec<ConfigError>> {
        const SUBJECT: &str = "<WSGIInterpreterOptions>";
        let err = |kind| vec![ConfigError::new(Some(span), SUBJECT, kind)];
        if let Some(inside) = ctx
            .containers
            .last()
            .map(|c| format!("<{}> section", c.kind))
            .or(ctx
                .virtual_host
                .as_ref()
                .map(|_| "<VirtualHost> section".to_string()))
        {
            return Err(err(ErrorKind::WrongContext {
                inside,
                fix: "<WSGIInterpreterOptions> applies to the whole server: move it to the server-config level, outside any section".into(),
            }));
        }
        let mut rule = InterpreterRule::default();
        let mut errors = Vec::new();
        for word in args {
            let Some((key, value)) = word.split_once('=') else {
                errors.push(ErrorKind::NotAnOption { word: word.clone() });
                continue;
            };
            let group = if value == "%{GLOBAL}" { "" } else { value };
            let (slot, option) = match key.to_ascii_lowercase().as_str() {
                "process-group" => (&mut rule.process_group, "process-group"),
                "application-group" => (&mut rule.application_group, "application-group"),
                _ => {
                    errors.push(ErrorKind::UnknownOption {
                        option: key.to_string(),
                        suggestion: closest(key, ["process-group", "application-group"]),
                        valid: vec!["process-group", "application-group"],
                    });
                    continue;
                }
            };
            if group.contains("%{") {
                errors.push(ErrorKind::BadValue {
                    option: option.into(),
                    value: value.to_string(),
                    expected: "mod_wsgi 6 matches the name as written: give a literal group name, or %{GLOBAL}".into(),
                });
                continue;
            }
            match slot {
                Some(first) => errors.push(ErrorKind::DuplicateOption {
                    option,
                    first: if first.is_empty() {
                        "%{GLOBAL}".to_string()
                    } else {
                        first.clone()
                    },
                    second: value.to_string(),
                    fix: "a section selects one group of each kind: write one section per group",
                }),
                None => *slot = Some(group.to_string()),
            }
        }
        if !errors.is_empty() {
            return Err(errors
                .into_iter()
                .map(|kind| ConfigError::new(Some(span), SUBJECT, kind))
                .collect());
        }
        self.config
            .python
            .interpreter_options
            .push(InterpreterOptionsBlock {
                span: span.clone(),
                rule,
            });
        Ok(())
    }

    /// A directive inside the `<WSGIInterpreterOptions>` section `ctx.containers[at]`: one of
    /// the settings mod_wsgi 6 scopes to the interpreters the section selects, each with a
    /// meaning here; anything else is refused (mod_wsgi 6 would apply it to the whole server).
    fn interpreter_option(
        &mut self,
        ctx: &Context,
        at: usize,
        d: &Directive,
    ) -> Result<(), Vec<ConfigError>> {
        let refuse = |why: String| {
            Err(vec![ConfigError::new(
                Some(&d.span),
                d.name.clone(),
                ErrorKind::NotPerInterpreter { why },
            )])
        };
        let scoped = || {
            directives::DIRECTIVES
                .iter()
                .filter(|def| def.per_interpreter.is_some())
                .map(|def| def.name)
        };
        if directives::lookup(&d.name).is_none() && directives::is_wsgi_name(&d.name) {
            return Err(vec![ConfigError::new(
                Some(&d.span),
                d.name.clone(),
                ErrorKind::UnknownDirective {
                    suggestion: closest(&d.name, scoped()),
                },
            )]);
        }
        let def = directives::lookup(&d.name);
        let found = def.and_then(|def| Some((def, def.per_interpreter?)));
        let Some((def, apply)) = found.filter(|_| at + 1 == ctx.containers.len()) else {
            return refuse(format!(
                "mod_wsgi 6 applies only {} there (anything else, to the whole server); move {} out of the section",
                scoped().collect::<Vec<_>>().join(", "),
                d.name
            ));
        };
        let section = &ctx.containers[at];
        let Some(block) = self
            .config
            .python
            .interpreter_options
            .iter_mut()
            .rev()
            .find(|b| b.span == section.span)
        else {
            // The section itself was refused (and said so).
            return Ok(());
        };
        let err = |kind| vec![ConfigError::new(Some(&d.span), def.name, kind)];
        check_arity(def, &d.args).map_err(err)?;
        let per_application = block.rule.application_group.is_some();
        apply(&mut block.rule, &d.args[0], per_application).map_err(|kind| match kind {
            // Refused here, as the line is written.
            ErrorKind::NotPerInterpreter { .. } => {
                vec![ConfigError::new(Some(&d.span), d.name.clone(), kind)]
            }
            kind => err(kind),
        })?;
        Ok(())
    }

    /// The WSGI settings an `.htaccess` line sets (`AllowOverride FileInfo` directives such as
    /// `WSGICallableObject` or `WSGIPassAuthorization`), laid over `base` (what the earlier
    /// lines of the file set). Apache reads `.htaccess` files per request, so their settings
    /// never enter a [`Config`]: the Apache module keeps them per directory and lays them over
    /// the routed settings. Errors are the ones the file reader gives, every one of the line.
    pub fn htaccess_settings(
        server_root: &Path,
        base: &WsgiSettings,
        d: &Directive,
    ) -> Result<WsgiSettings, Vec<ConfigError>> {
        let mut builder = ConfigBuilder::new(server_root);
        let ctx = Context {
            htaccess: true,
            ..Context::default()
        };
        builder.directive(&ctx, d)?;
        let mut settings = base.clone();
        settings.merge(&builder.config.main.settings);
        Ok(settings)
    }

    /// Checks what can only be checked once every directive is in (process groups named before
    /// they are defined, and their visibility) and returns the configuration.
    pub fn finish(self) -> Result<Config, Vec<ConfigError>> {
        let (config, errors) = self.finish_with_errors();
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(errors)
        }
    }

    /// [`ConfigBuilder::finish`], returning the configuration even when it has errors, with
    /// what could be kept of it (`wsgi check` checks the rest of it too, in the same pass).
    pub fn finish_with_errors(self) -> (Config, Vec<ConfigError>) {
        let mut errors = Vec::new();
        let mut config = self.config;
        for log in self.pending_logs {
            // A nickname names the last LogFormat that defined it; anything else is a format.
            let format = config
                .log_formats
                .iter()
                .rev()
                .find(|(nickname, _)| *nickname == log.format)
                .map_or(log.format.clone(), |(_, format)| format.clone());
            let condition = match log.condition.as_deref() {
                None => None,
                Some(c) => match c.strip_prefix("env=") {
                    Some(var) => Some(match var.strip_prefix('!') {
                        Some(var) => (true, var.to_string()),
                        None => (false, var.to_string()),
                    }),
                    None => {
                        config.unserved_forms.push((
                            log.span.clone(),
                            format!("the log condition `{c}` is not implemented by wsgi serve (only env=VAR and env=!VAR)"),
                        ));
                        continue;
                    }
                },
            };
            match crate::logformat::parse(&format) {
                Ok(format) => {
                    let host = match log.host {
                        None => &mut config.main,
                        Some(i) => &mut config.virtual_hosts[i],
                    };
                    host.custom_logs.push(CustomLog {
                        span: log.span,
                        path: log.path,
                        format,
                        condition,
                    });
                }
                Err(why) => config.unserved_forms.push((log.span, why)),
            }
        }
        for host in std::iter::once(None).chain((0..config.virtual_hosts.len()).map(Some)) {
            let tls = config.tls_for(host);
            if let (Some((true, span)), None) = (&tls.engine, &tls.certificate_file) {
                errors.push(ConfigError::new(
                    Some(span),
                    "SSLEngine",
                    ErrorKind::NoCertificate,
                ));
            }
        }
        // The groups a name may refer to, for the messages.
        let defined = || {
            config
                .daemons
                .iter()
                .map(|d| format!("{} at {}", d.name, d.span))
                .collect()
        };
        // A section selects processes by name, whatever virtual host defines the group.
        for block in &config.python.interpreter_options {
            match block.rule.process_group.as_deref() {
                Some(name) if !name.is_empty() && config.daemon(name).is_none() => {
                    errors.push(ConfigError::new(
                        Some(&block.span),
                        "<WSGIInterpreterOptions>",
                        ErrorKind::UndefinedProcessGroup {
                            name: name.to_string(),
                            defined: defined(),
                        },
                    ))
                }
                _ => {}
            }
        }
        for r in &self.group_refs {
            let Some(group) = config.daemon(&r.name) else {
                errors.push(ConfigError::new(
                    Some(&r.span),
                    r.subject.clone(),
                    ErrorKind::UndefinedProcessGroup {
                        name: r.name.clone(),
                        defined: defined(),
                    },
                ));
                continue;
            };
            if let Some(group_host) = group.host {
                let same_host = r.host == Some(group_host);
                let group_server = config.server_name(Some(group_host));
                let here_server = config.server_name(r.host);
                let same_name =
                    r.host.is_some() && group_server.is_some() && group_server == here_server;
                if !same_host && !same_name {
                    errors.push(ConfigError::new(
                        Some(&r.span),
                        r.subject.clone(),
                        ErrorKind::InaccessibleProcessGroup {
                            name: r.name.clone(),
                            defined_at: group.span.clone(),
                            group_server: group_server.unwrap_or("(none)").to_string(),
                            here_server: match r.host {
                                None => "the main server".to_string(),
                                Some(_) => here_server.unwrap_or("(none)").to_string(),
                            },
                        },
                    ));
                }
            }
        }
        (config, errors)
    }

    /// Adds a warning.
    pub(crate) fn warn(&mut self, span: &Span, subject: &str, message: String) {
        self.config.warnings.push(ConfigWarning {
            span: Some(span.clone()),
            subject: subject.to_string(),
            message,
        });
    }

    fn host_index(&mut self, ctx: &Context) -> Result<Option<usize>, ConfigError> {
        let Some(vhost) = &ctx.virtual_host else {
            return Ok(None);
        };
        if let Some(&i) = self.hosts.get(&vhost.span) {
            return Ok(Some(i));
        }
        let mut addresses = Vec::new();
        for a in &vhost.addresses {
            addresses.push(parse_host_address(a).ok_or_else(|| {
                ConfigError::new(
                    Some(&vhost.span),
                    "<VirtualHost>",
                    ErrorKind::BadValue {
                        option: "address".into(),
                        value: a.clone(),
                        expected: "use `*:PORT`, `IP:PORT`, `[IPv6]:PORT`, `_default_:PORT` or `*`"
                            .into(),
                    },
                )
            })?);
        }
        let i = self.config.virtual_hosts.len();
        self.config.virtual_hosts.push(Host {
            span: Some(vhost.span.clone()),
            addresses,
            ..Host::default()
        });
        self.hosts.insert(vhost.span.clone(), i);
        Ok(Some(i))
    }

    pub(crate) fn host_mut(&mut self, host: Option<usize>) -> &mut Host {
        match host {
            None => &mut self.config.main,
            Some(i) => &mut self.config.virtual_hosts[i],
        }
    }

    /// The section the directive is in, created on first use; None at host level. Unknown
    /// sections (`<IfVersion>`, `<Limit>` ...) are transparent.
    fn section_index(
        &mut self,
        ctx: &Context,
        host: Option<usize>,
    ) -> Result<Option<usize>, ErrorKind> {
        let mut current = None;
        for c in &ctx.containers {
            let Some((kind, regex_form)) = section_kind(&c.kind) else {
                continue;
            };
            if let Some(&i) = self.sections.get(&(host, c.span.clone())) {
                current = Some(i);
                continue;
            }
            let (pattern, regex) = section_pattern(c, regex_form)?;
            let sections = &mut self.host_mut(host).sections;
            sections.push(DirSection {
                span: c.span.clone(),
                kind,
                pattern,
                regex,
                parent: current,
                settings: WsgiSettings::default(),
                env: Vec::new(),
            });
            let i = sections.len() - 1;
            self.sections.insert((host, c.span.clone()), i);
            current = Some(i);
        }
        Ok(current)
    }

    /// The WSGI settings of the level `l` is at (its section, or its host).
    pub(crate) fn settings(&mut self, l: &Line<'_>) -> Result<&mut WsgiSettings, ErrorKind> {
        self.settings_mut(l.ctx, l.host)
    }

    fn settings_mut(
        &mut self,
        ctx: &Context,
        host: Option<usize>,
    ) -> Result<&mut WsgiSettings, ErrorKind> {
        let section = self.section_index(ctx, host)?;
        let h = self.host_mut(host);
        Ok(match section {
            Some(i) => &mut h.sections[i].settings,
            None => std::sync::Arc::make_mut(&mut h.settings),
        })
    }

    pub(crate) fn resolve(&self, path: &str) -> PathBuf {
        let p = Path::new(path);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.config.server_root.join(p)
        }
    }

    pub(crate) fn refer(
        &mut self,
        spec: &GroupSpec,
        host: Option<usize>,
        span: &Span,
        subject: &str,
    ) {
        if let Some(name) = spec.literal() {
            self.group_refs.push(GroupRef {
                name: name.to_string(),
                host,
                span: span.clone(),
                subject: subject.to_string(),
            });
        }
    }

    /// A log file target, absolute; None for piped and syslog targets (which
    /// [`crate::serve_support`] refuses).
    fn log_target(&mut self, target: &str) -> Option<PathBuf> {
        if target.starts_with('|') || target.starts_with("syslog") {
            return None;
        }
        Some(self.resolve(target))
    }

    /// Adds an environment line at the level it is at.
    fn env_op(&mut self, ctx: &Context, host: Option<usize>, op: EnvOp) {
        match self.section_index(ctx, host) {
            Ok(Some(i)) => self.host_mut(host).sections[i].env.push(op),
            Ok(None) => self.host_mut(host).env.push(op),
            Err(_) => {}
        }
    }

    fn context_directive(
        &mut self,
        ctx: &Context,
        host: Option<usize>,
        d: &Directive,
    ) -> Result<(), ConfigError> {
        let name = d.name.to_ascii_lowercase();
        let first = d.args.first().map(String::as_str).unwrap_or("");
        match name.as_str() {
            "servername" if ctx.containers.is_empty() && !first.is_empty() => {
                let (name, port) = parse_server_name(first);
                let h = self.host_mut(host);
                h.server_name = Some(name);
                h.server_name_port = port;
            }
            "serveralias" if ctx.containers.is_empty() => {
                self.host_mut(host)
                    .server_aliases
                    .extend(d.args.iter().cloned());
            }
            "listen" if host.is_none() => match parse_listen(first) {
                Some(l) => self.config.listen.push(l),
                None => self.warn(
                    &d.span,
                    "Listen",
                    format!("`{first}` is not an address and port: ignored"),
                ),
            },
            "serverroot" if host.is_none() && !first.is_empty() => {
                self.config.server_root = PathBuf::from(first);
            }
            "user" if host.is_none() && !first.is_empty() => {
                self.config.user = Some(first.to_string())
            }
            "group" if host.is_none() && !first.is_empty() => {
                self.config.group = Some(first.to_string())
            }
            "setenv" if !first.is_empty() => {
                let value = d.args.get(1).cloned().unwrap_or_default();
                self.env_op(ctx, host, EnvOp::Set(first.to_string(), value));
            }
            "unsetenv" if !first.is_empty() => {
                self.env_op(ctx, host, EnvOp::Unset(d.args.clone()));
            }
            "passenv" if !first.is_empty() => {
                self.env_op(ctx, host, EnvOp::Pass(d.args.clone()));
            }
            "setenvif" | "setenvifnocase" | "browsermatch" | "browsermatchnocase" => {
                let nocase = name.ends_with("nocase");
                let browser = name.starts_with("browsermatch");
                match SetEnvIf::parse(&d.args, nocase, browser) {
                    Ok(rule) => self.env_op(ctx, host, EnvOp::SetIf(rule)),
                    Err(e) => {
                        return Err(ConfigError::new(
                            Some(&d.span),
                            d.name.clone(),
                            ErrorKind::BadValue {
                                option: "arguments".into(),
                                value: d.args.join(" "),
                                expected: format!(
                                    "{e}: `{} attribute regex [!]env[=value] ...`",
                                    d.name
                                ),
                            },
                        ));
                    }
                }
            }
            "alias" | "aliasmatch" | "redirect" | "redirectmatch" | "redirectpermanent"
            | "redirecttemp"
                if !ctx.containers.is_empty() =>
            {
                self.config.unserved_forms.push((
                    d.span.clone(),
                    "mod_alias's one-argument form inside a section is not implemented by wsgi serve".into(),
                ));
            }
            "alias" | "aliasmatch" => {
                let regex_form = name == "aliasmatch";
                let [url, target] = d.args.as_slice() else {
                    return Err(bad_alias(
                        d,
                        "a URL path and a file path",
                        "Alias URL-path file-path",
                    ));
                };
                let regex = regex_form.then(|| compile_match(d, url)).transpose()?;
                let target = if regex_form {
                    target.clone()
                } else {
                    self.resolve(target).to_string_lossy().into_owned()
                };
                self.host_mut(host).path_aliases.push(PathAlias {
                    span: d.span.clone(),
                    url: url.clone(),
                    regex,
                    target,
                });
            }
            "redirect" | "redirectmatch" | "redirectpermanent" | "redirecttemp" => {
                let usage = "Redirect [status] URL-path URL";
                let mut args = d.args.as_slice();
                let status = match name.as_str() {
                    "redirectpermanent" => 301,
                    "redirecttemp" => 302,
                    _ => match args.first().map(|a| a.to_ascii_lowercase()) {
                        Some(s) if s == "permanent" => {
                            args = &args[1..];
                            301
                        }
                        Some(s) if s == "temp" => {
                            args = &args[1..];
                            302
                        }
                        Some(s) if s == "seeother" => {
                            args = &args[1..];
                            303
                        }
                        Some(s) if s == "gone" => {
                            args = &args[1..];
                            410
                        }
                        Some(s) if s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit()) => {
                            args = &args[1..];
                            s.parse().unwrap_or(302)
                        }
                        _ => 302,
                    },
                };
                let (url, target) = match (args, (300..400).contains(&status)) {
                    ([url, target], true) => (url.clone(), Some(target.clone())),
                    ([url], false) => (url.clone(), None),
                    _ => {
                        return Err(bad_alias(
                            d,
                            "a URL path, and a URL for a 3xx status (none for another)",
                            usage,
                        ));
                    }
                };
                let regex = (name == "redirectmatch")
                    .then(|| compile_match(d, &url))
                    .transpose()?;
                self.host_mut(host).redirects.push(Redirect {
                    span: d.span.clone(),
                    status,
                    url,
                    regex,
                    target,
                });
            }
            "customlog" | "transferlog" | "errorlog" | "logformat"
                if !ctx.containers.is_empty() =>
            {
                self.config.unserved_forms.push((
                    d.span.clone(),
                    format!("{} belongs in the server or a <VirtualHost>, not in a <Directory>, <Files> or <Location> (Apache refuses it there too)", d.name),
                ));
            }
            "logformat" => match d.args.as_slice() {
                [format, nickname] => {
                    self.config
                        .log_formats
                        .push((nickname.clone(), format.clone()));
                }
                [format] => self.default_log_format = Some(format.clone()),
                _ => {}
            },
            "customlog" | "transferlog" if ctx.containers.is_empty() => {
                let (target, format, condition) = match (name.as_str(), d.args.as_slice()) {
                    ("transferlog", [target]) => (target, None, None),
                    ("customlog", [target, format]) => (target, Some(format.clone()), None),
                    ("customlog", [target, format, condition]) => {
                        (target, Some(format.clone()), Some(condition.clone()))
                    }
                    _ => {
                        return Err(bad_alias(
                            d,
                            "a file and a format",
                            "CustomLog file format|nickname [env=[!]VAR]",
                        ));
                    }
                };
                let format = format.unwrap_or_else(|| {
                    self.default_log_format
                        .clone()
                        .unwrap_or_else(|| crate::logformat::DEFAULT_FORMAT.to_string())
                });
                if let Some(path) = self.log_target(target) {
                    self.pending_logs.push(PendingLog {
                        span: d.span.clone(),
                        host,
                        path,
                        format,
                        condition,
                    });
                }
            }
            "errorlog" if ctx.containers.is_empty() => {
                if let Some(path) = self.log_target(first) {
                    match host {
                        None => self.config.error_log = Some(path),
                        Some(_) => self.host_mut(host).error_log = Some(path),
                    }
                }
            }
            "documentroot" if ctx.containers.is_empty() && !first.is_empty() => {
                let root = self.resolve(first);
                self.host_mut(host).document_root = Some(root);
            }
            "serveradmin" if ctx.containers.is_empty() && !first.is_empty() => {
                self.host_mut(host).server_admin = Some(first.to_string());
            }
            "sslengine"
            | "sslcertificatefile"
            | "sslcertificatekeyfile"
            | "sslcertificatechainfile"
            | "sslprotocol"
                if !ctx.containers.is_empty() =>
            {
                self.config.unserved_forms.push((
                    d.span.clone(),
                    format!("{} is read by wsgi serve for the server or a <VirtualHost>, not inside a <Directory>, <Files> or <Location>", d.name),
                ));
            }
            "sslengine" => {
                // `optional` is refused by the support table.
                let on = match first.to_ascii_lowercase().as_str() {
                    "on" => Some(true),
                    "off" => Some(false),
                    _ => None,
                };
                if let Some(on) = on {
                    self.host_mut(host).tls.engine = Some((on, d.span.clone()));
                }
            }
            "sslcertificatefile" | "sslcertificatekeyfile" | "sslcertificatechainfile"
                if !first.is_empty() =>
            {
                let path = Some(self.resolve(first));
                let tls = &mut self.host_mut(host).tls;
                match name.as_str() {
                    "sslcertificatefile" => tls.certificate_file = path,
                    "sslcertificatekeyfile" => tls.key_file = path,
                    _ => tls.chain_file = path,
                }
            }
            "sslprotocol" => {
                // A list wsgi serve cannot speak is refused by the support table.
                if let Ok(protocols) = crate::tls::parse_protocols(&d.args) {
                    self.host_mut(host).tls.protocols = Some(protocols);
                }
            }
            "protocols" | "protocolshonororder" if !ctx.containers.is_empty() => {
                self.config.unserved_forms.push((
                    d.span.clone(),
                    format!("{} belongs in the server or a <VirtualHost>, not in a <Directory>, <Files> or <Location> (Apache refuses it there too)", d.name),
                ));
            }
            "protocols" => {
                if d.args.is_empty() {
                    return Err(bad_alias(
                        d,
                        "one protocol or more",
                        "Protocols h2 h2c http/1.1",
                    ));
                }
                self.host_mut(host).protocols =
                    Some(d.args.iter().map(|p| p.to_ascii_lowercase()).collect());
            }
            "protocolshonororder" => {
                let refuse = |kind| ConfigError::new(Some(&d.span), d.name.clone(), kind);
                let honor = match d.args.as_slice() {
                    [value] => crate::options::parse_flag(value).map_err(refuse)?,
                    _ => return Err(bad_alias(d, "one argument", "ProtocolsHonorOrder On|Off")),
                };
                self.host_mut(host).protocols_honor_order = Some(honor);
            }
            "remoteipproxyprotocol" | "remoteipproxyprotocolexceptions"
                if !ctx.containers.is_empty() =>
            {
                self.config.unserved_forms.push((
                    d.span.clone(),
                    format!("{} belongs in the server or a <VirtualHost>, not in a <Directory>, <Files> or <Location> (Apache refuses it there too)", d.name),
                ));
            }
            "remoteipproxyprotocol" => {
                let refuse = |kind| ConfigError::new(Some(&d.span), d.name.clone(), kind);
                let on = match d.args.as_slice() {
                    [value] => crate::options::parse_flag(value).map_err(refuse)?,
                    _ => return Err(bad_alias(d, "one argument", "RemoteIPProxyProtocol On|Off")),
                };
                let addresses: Vec<crate::remoteip::LocalAddr> = match host {
                    None => vec![crate::remoteip::LocalAddr::ANY],
                    Some(i) => self.config.virtual_hosts[i]
                        .addresses
                        .iter()
                        .map(crate::remoteip::LocalAddr::of)
                        .collect(),
                };
                self.config.proxy_protocol.set(&addresses, on);
            }
            "remoteipproxyprotocolexceptions" => {
                let usage = "RemoteIPProxyProtocolExceptions host|range [host|range] ...";
                let nets = match crate::remoteip::parse_exceptions(&d.args) {
                    Ok(nets) if !nets.is_empty() => nets,
                    Ok(_) => return Err(bad_alias(d, "an address or range", usage)),
                    Err(bad) => {
                        let expected = format!(
                            "`{bad}` is no IP address or range (`10.0.0.1`, `10.0.0.0/8`, `10.0.0.0/255.0.0.0`, `10.1`, `2001:db8::/32`)"
                        );
                        return Err(bad_alias(d, &expected, usage));
                    }
                };
                self.host_mut(host)
                    .proxy_protocol_exceptions
                    .get_or_insert_with(Vec::new)
                    .extend(nets);
            }
            "require" => match crate::authz::parse_require(&d.args) {
                Ok((negated, requirement)) => {
                    // The Require containers the line is in, inside its section.
                    let mut path = Vec::new();
                    for c in &ctx.containers {
                        let logic = match c.kind.to_ascii_lowercase().as_str() {
                            "requireall" => crate::authz::Logic::All,
                            "requireany" => crate::authz::Logic::Any,
                            "requirenone" => crate::authz::Logic::None,
                            _ => {
                                if section_kind(&c.kind).is_some() {
                                    path.clear();
                                }
                                continue;
                            }
                        };
                        path.push((c.span.clone(), logic));
                    }
                    if let Ok(settings) = self.settings_mut(ctx, host) {
                        let root = settings.authz.get_or_insert_with(|| {
                            std::sync::Arc::new(crate::authz::AuthzNode::section_root())
                        });
                        std::sync::Arc::make_mut(root).insert(
                            &path,
                            crate::authz::AuthzNode::Require {
                                negated,
                                requirement,
                                span: d.span.clone(),
                            },
                        );
                    }
                }
                Err(why) => self.config.unserved_forms.push((d.span.clone(), why)),
            },
            "options" => {
                let exec_cgi = options_exec_cgi(&d.args);
                if let (Some(on), Ok(settings)) = (exec_cgi, self.settings_mut(ctx, host)) {
                    settings.exec_cgi = Some(on);
                }
            }
            "addhandler" | "removehandler" | "sethandler" if !first.is_empty() => {
                let located = |value: &str| Located {
                    value: value.to_ascii_lowercase(),
                    span: Some(d.span.clone()),
                };
                // mod_mime's extension keys: lowercased, without the leading dot.
                let extension = |ext: &String| {
                    let ext = ext.to_ascii_lowercase();
                    ext.strip_prefix('.').map(str::to_string).unwrap_or(ext)
                };
                self.config.maps_handlers = true;
                let Ok(settings) = self.settings_mut(ctx, host) else {
                    return Ok(());
                };
                match name.as_str() {
                    "sethandler" => settings.set_handler = Some(located(first)),
                    "removehandler" => settings
                        .remove_handlers
                        .extend(d.args.iter().map(extension)),
                    _ => {
                        let handler = located(first);
                        for ext in d.args[1..].iter().map(extension) {
                            settings.add_handler(&ext, &handler);
                        }
                    }
                }
            }
            "authtype" | "authname" | "authuserfile" | "authgroupfile" | "authbasicprovider"
                if !first.is_empty() =>
            {
                let resolved = self.resolve(first);
                if let Ok(settings) = self.settings_mut(ctx, host) {
                    match name.as_str() {
                        "authtype" => settings.auth_type = Some(first.to_string()),
                        "authname" => settings.auth_name = Some(first.to_string()),
                        "authuserfile" => settings.auth_user_file = Some(resolved),
                        "authgroupfile" => settings.auth_group_file = Some(resolved),
                        _ => settings.auth_basic_provider = Some(d.args.clone()),
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

pub(crate) fn compile(pattern: &str) -> Result<Regex, ErrorKind> {
    Regex::new(pattern).map_err(|e| ErrorKind::BadRegex {
        regex: pattern.to_string(),
        error: e
            .to_string()
            .lines()
            .last()
            .unwrap_or("")
            .trim()
            .to_string(),
    })
}

pub(crate) fn check_callable(name: &str) -> Result<(), ErrorKind> {
    let is_env = name.starts_with("%{ENV:") && name.ends_with('}');
    let is_identifier = name
        .chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_alphanumeric() || c == '_');
    if is_env || is_identifier {
        Ok(())
    } else {
        Err(ErrorKind::BadValue {
            option: "callable-object".into(),
            value: name.to_string(),
            expected: "name a module-level callable of the script, such as application (not a dotted path)".into(),
        })
    }
}

/// The arguments of `WSGIDispatchScript`, `WSGIAccessScript`, `WSGIAuthUserScript` and
/// `WSGIAuthGroupScript` (`path [application-group=NAME]`), with a relative path resolved
/// against `server_root`, or every problem of the line. The Apache module also reads
/// `.htaccess` copies of the auth scripts with it, at request time.
pub fn parse_aux_script(args: &[String], server_root: &Path) -> Result<AuxScript, Vec<ErrorKind>> {
    let Some(path) = args.first() else {
        return Err(vec![ErrorKind::BadValue {
            option: "path".into(),
            value: String::new(),
            expected: "name the script file".into(),
        }]);
    };
    let (options, refused) = parse_alias_options(&args[1..], false);
    if !refused.is_empty() {
        return Err(refused);
    }
    let path = Path::new(path);
    Ok(AuxScript {
        path: if path.is_absolute() {
            path.to_path_buf()
        } else {
            server_root.join(path)
        },
        application_group: options.application_group,
    })
}

/// The options of `WSGIScriptAlias`, `WSGIImportScript`, `WSGIHandlerScript` and the auth
/// scripts: those that parse, and every word refused, in order. `full` allows
/// `callable-object=` and `pass-authorization=`.
pub(crate) fn parse_alias_options(words: &[String], full: bool) -> (AliasOptions, Vec<ErrorKind>) {
    let valid: &[&'static str] = if full {
        &[
            "process-group",
            "application-group",
            "callable-object",
            "pass-authorization",
        ]
    } else {
        &["process-group", "application-group"]
    };
    let mut o = AliasOptions::default();
    let mut refused = Vec::new();
    for word in words {
        if let Err(e) = parse_alias_option(&mut o, word, valid) {
            refused.push(e);
        }
    }
    (o, refused)
}

/// One option of [`parse_alias_options`], applied to `o`.
fn parse_alias_option(
    o: &mut AliasOptions,
    word: &str,
    valid: &[&'static str],
) -> Result<(), ErrorKind> {
    let (name, value) = split_option(word)?;
    let key = name.to_ascii_lowercase();
    if !valid.contains(&key.as_str()) {
        return Err(ErrorKind::UnknownOption {
            option: name.to_string(),
            suggestion: closest(name, valid.iter().copied()),
            valid: valid.to_vec(),
        });
    }
    let nonempty = |what: &str| {
        if value.is_empty() {
            Err(ErrorKind::BadValue {
                option: key.clone(),
                value: String::new(),
                expected: format!("give {what}"),
            })
        } else {
            Ok(())
        }
    };
    match key.as_str() {
        "process-group" => {
            nonempty("a daemon process group name, or %{GLOBAL} for embedded mode")?;
            o.process_group = Some(GroupSpec::parse(value));
        }
        "application-group" => {
            nonempty("an application group name, or %{GLOBAL} for the main interpreter")?;
            o.application_group = Some(GroupSpec::parse(value));
        }
        "callable-object" => {
            check_callable(value)?;
            o.callable_object = Some(value.to_string());
        }
        _ => o.pass_authorization = Some(parse_option_flag(&key, value)?),
    }
    Ok(())
}

/// What an `Options` line does to `ExecCGI`: a line without `+`/`-` sets every option
/// (`ExecCGI` on only when it is named, or with `All`); `+ExecCGI`/`-ExecCGI` turn it on or
/// off; a `+`/`-` line that does not name it leaves it as inherited (None).
fn options_exec_cgi(args: &[String]) -> Option<bool> {
    let mut exec_cgi = None;
    for word in args {
        let (sign, option) = match word.strip_prefix(['+', '-']) {
            Some(rest) => (word.chars().next(), rest),
            None => (None, word.as_str()),
        };
        let names_it = ["ExecCGI", "All", "RunScripts"]
            .iter()
            .any(|o| option.eq_ignore_ascii_case(o));
        exec_cgi = match (sign, names_it) {
            (Some('-'), true) => Some(false),
            (_, true) => Some(true),
            // A line without signs sets the options anew: ExecCGI is off unless named.
            (None, false) => Some(exec_cgi.unwrap_or(false)),
            (Some(_), false) => exec_cgi,
        };
    }
    exec_cgi
}

/// `WSGISwitchInterval`'s seconds.
pub(crate) fn parse_switch_interval(value: &str) -> Result<f64, ErrorKind> {
    value
        .parse()
        .ok()
        .filter(|s: &f64| *s > 0.0 && s.is_finite())
        .ok_or_else(|| ErrorKind::BadValue {
            option: "interval".into(),
            value: value.to_string(),
            expected: "use a positive number of seconds, such as 0.005".into(),
        })
}

/// Whether a section is `<WSGIInterpreterOptions>`.
fn is_interpreter_options(c: &ContainerDecl) -> bool {
    c.kind.eq_ignore_ascii_case("WSGIInterpreterOptions")
}

/// `Directory`, `DirectoryMatch`, ...: the kind and whether the pattern is a regex.
fn section_kind(name: &str) -> Option<(SectionKind, bool)> {
    Some(match name.to_ascii_lowercase().as_str() {
        "directory" => (SectionKind::Directory, false),
        "directorymatch" => (SectionKind::Directory, true),
        "location" => (SectionKind::Location, false),
        "locationmatch" => (SectionKind::Location, true),
        "files" => (SectionKind::Files, false),
        "filesmatch" => (SectionKind::Files, true),
        _ => return None,
    })
}

fn section_pattern(
    c: &ContainerDecl,
    regex_form: bool,
) -> Result<(String, Option<Regex>), ErrorKind> {
    let (pattern, is_regex) = match c.args.as_slice() {
        [tilde, pattern] if tilde == "~" => (pattern.clone(), true),
        [pattern] => (pattern.clone(), regex_form),
        _ => {
            return Err(ErrorKind::BadValue {
                option: format!("<{}>", c.kind),
                value: c.args.join(" "),
                expected: "the section takes one path or pattern".into(),
            });
        }
    };
    let regex = if is_regex {
        Some(compile(&pattern)?)
    } else {
        None
    };
    Ok((pattern, regex))
}

fn check_scope(def: &DirectiveDef, ctx: &Context) -> Result<(), ErrorKind> {
    let innermost = ctx
        .containers
        .iter()
        .rev()
        .find(|c| section_kind(&c.kind).is_some());
    let foreign = ctx
        .containers
        .iter()
        .rev()
        .find(|c| section_kind(&c.kind).is_none() && !c.kind.eq_ignore_ascii_case("IfVersion"));
    let name = def.name;
    if ctx.htaccess && !matches!(def.scope, Scope::FileInfo | Scope::AuthConfig) {
        return Err(ErrorKind::WrongContext {
            inside: ".htaccess files".into(),
            fix: format!("move {name} to the server configuration"),
        });
    }
    if let Some(c) = foreign {
        return Err(ErrorKind::WrongContext {
            inside: format!("<{}> section", c.kind),
            fix: format!(
                "wsgi-rs reads {name} only at the server level, in <VirtualHost>, or in <Directory>, <Location> and <Files> sections: move it there"
            ),
        });
    }
    match (def.scope, innermost, &ctx.virtual_host) {
        (Scope::ServerOnly, Some(c), _) => Err(ErrorKind::WrongContext {
            inside: format!("<{}> section", c.kind),
            fix: format!("{name} applies to the whole server: move it to the server-config level, outside any section"),
        }),
        (Scope::ServerOnly, None, Some(_)) => Err(ErrorKind::WrongContext {
            inside: "<VirtualHost> section".into(),
            fix: match name {
                "WSGIPythonHome" => "WSGIPythonHome applies to the whole server: move it to the server-config level, outside any <VirtualHost> block; to give this site its own virtual environment, use `WSGIDaemonProcess NAME python-home=/path/to/venv` with `WSGIProcessGroup NAME`".to_string(),
                "WSGIPythonPath" => "WSGIPythonPath applies to the whole server: move it to the server-config level, outside any <VirtualHost> block; for this site's daemon processes use `WSGIDaemonProcess NAME python-path=...`".to_string(),
                _ => format!("{name} applies to the whole server: move it to the server-config level, outside any <VirtualHost> block"),
            },
        }),
        (Scope::ServerOrVirtualHost, Some(c), _) => Err(ErrorKind::WrongContext {
            inside: format!("<{}> section", c.kind),
            fix: format!("move {name} out of the section, to the server level or into the <VirtualHost>"),
        }),
        (Scope::AuthConfig, None, _) => Err(ErrorKind::WrongContext {
            inside: if ctx.virtual_host.is_some() { "<VirtualHost> section, outside a <Directory>".into() } else { "the server config, outside a <Directory>".into() },
            fix: format!("put {name} inside the <Directory>, <Location> or <Files> section it protects"),
        }),
        _ => Ok(()),
    }
}

fn check_arity(def: &DirectiveDef, args: &[String]) -> Result<(), ErrorKind> {
    let problem = match def.arity {
        Arity::Flag | Arity::FlagOrAuto | Arity::One if args.len() != 1 => "takes one argument",
        Arity::OneOrMore if args.is_empty() => "takes at least one argument",
        Arity::AtLeast(1) if args.is_empty() => "takes at least one argument",
        Arity::AtLeast(n) if args.len() < n => "takes at least two arguments",
        _ => {
            if matches!(def.arity, Arity::Flag) {
                parse_flag(&args[0])?;
            }
            return Ok(());
        }
    };
    Err(ErrorKind::Arguments {
        problem: format!("{problem}, {} given", args.len()),
        usage: def.usage,
    })
}

/// `ServerName [scheme://]host[:port]`.
fn parse_server_name(value: &str) -> (String, Option<u16>) {
    let rest = value.split_once("://").map_or(value, |(_, r)| r);
    if let Some(stripped) = rest.strip_prefix('[') {
        if let Some((ip, tail)) = stripped.split_once(']') {
            let port = tail.strip_prefix(':').and_then(|p| p.parse().ok());
            return (format!("[{ip}]"), port);
        }
    }
    match rest.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => (host.to_string(), port.parse().ok()),
        _ => (rest.to_string(), None),
    }
}

/// `Listen [addr:]port [protocol]`.
fn parse_listen(value: &str) -> Option<Listen> {
    if let Ok(port) = value.parse::<u16>() {
        return Some(Listen { ip: None, port });
    }
    let (addr, port) = if let Some(stripped) = value.strip_prefix('[') {
        let (ip, tail) = stripped.split_once(']')?;
        (ip, tail.strip_prefix(':')?)
    } else {
        value.rsplit_once(':')?
    };
    Some(Listen {
        ip: Some(addr.parse().ok()?),
        port: port.parse().ok()?,
    })
}

/// One `<VirtualHost>` address.
fn parse_host_address(value: &str) -> Option<HostAddress> {
    let (host, port) = if let Some(stripped) = value.strip_prefix('[') {
        let (ip, tail) = stripped.split_once(']')?;
        (ip, tail.strip_prefix(':'))
    } else {
        match value.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (value, None),
        }
    };
    let port = match port {
        None | Some("*") => None,
        Some(p) => Some(p.parse::<u16>().ok()?),
    };
    if host.is_empty() {
        return None;
    }
    let (ip, name) = if host == "*" || host.eq_ignore_ascii_case("_default_") {
        (None, None)
    } else if let Ok(ip) = host.parse() {
        (Some(ip), None)
    } else {
        (None, Some(host.to_ascii_lowercase()))
    };
    Some(HostAddress { ip, name, port })
}

/// A mod_alias line with the wrong arguments.
fn bad_alias(d: &Directive, expected: &str, usage: &str) -> ConfigError {
    ConfigError::new(
        Some(&d.span),
        d.name.clone(),
        ErrorKind::BadValue {
            option: "arguments".into(),
            value: d.args.join(" "),
            expected: format!("{expected}: `{usage}`"),
        },
    )
}

/// The expression of a `...Match` line.
fn compile_match(d: &Directive, pattern: &str) -> Result<Regex, ConfigError> {
    compile(pattern).map_err(|kind| ConfigError::new(Some(&d.span), d.name.clone(), kind))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn span(line: u32) -> Span {
        Span {
            file: Arc::from(Path::new("site.conf")),
            line,
        }
    }

    fn directive(line: u32, text: &str) -> Directive {
        let mut words = text.split_whitespace().map(str::to_string);
        Directive {
            name: words.next().unwrap(),
            args: words.collect(),
            span: span(line),
        }
    }

    fn vhost(line: u32) -> Context {
        Context {
            virtual_host: Some(VirtualHostDecl {
                addresses: vec!["*:8080".into()],
                span: span(line),
            }),
            ..Context::default()
        }
    }

    fn in_directory(mut ctx: Context, line: u32, path: &str) -> Context {
        ctx.containers.push(ContainerDecl {
            kind: "Directory".into(),
            args: vec![path.into()],
            span: span(line),
        });
        ctx
    }

    /// Every error of one line, one a line.
    fn error(ctx: &Context, text: &str) -> String {
        let mut b = ConfigBuilder::new("/etc/apache2");
        let errors: Vec<String> = b
            .directive(ctx, &directive(12, text))
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        errors.join("\n")
    }

    #[test]
    fn htaccess_lines_build_settings_one_over_another() {
        let root = Path::new("/etc/apache2");
        let line = |base: &WsgiSettings, text: &str| {
            ConfigBuilder::htaccess_settings(root, base, &directive(3, text))
        };
        let one = line(&WsgiSettings::default(), "WSGICallableObject app2").unwrap();
        let two = line(&one, "WSGIPassAuthorization On").unwrap();
        assert_eq!(two.callable_object.as_deref(), Some("app2"));
        assert_eq!(two.pass_authorization, Some(true));
        let three = line(&two, "WSGITrustedProxyHeaders X-Forwarded-For").unwrap();
        let four = line(&three, "WSGITrustedProxyHeaders X-Real-IP").unwrap();
        assert_eq!(four.trusted_proxy_headers, ["X-Forwarded-For", "X-Real-IP"]);
        let refused = line(&four, "WSGIProcessGroup shop").unwrap_err()[0].to_string();
        assert!(refused.contains(".htaccess"), "{refused}");
        assert!(line(&four, "WSGIPassAuthorization Maybe").is_err());
    }

    #[test]
    fn python_home_in_a_virtual_host_is_refused_with_the_fix() {
        assert_eq!(
            error(&vhost(10), "WSGIPythonHome /usr/local/venvs/myapp"),
            "site.conf:12: WSGIPythonHome: cannot occur within <VirtualHost> section: WSGIPythonHome applies to the whole server: move it to the server-config level, outside any <VirtualHost> block; to give this site its own virtual environment, use `WSGIDaemonProcess NAME python-home=/path/to/venv` with `WSGIProcessGroup NAME`"
        );
    }

    #[test]
    fn script_alias_in_a_directory_is_refused() {
        assert_eq!(
            error(
                &in_directory(Context::default(), 3, "/srv"),
                "WSGIScriptAlias / /srv/app.wsgi"
            ),
            "site.conf:12: WSGIScriptAlias: cannot occur within <Directory> section: move WSGIScriptAlias out of the section, to the server level or into the <VirtualHost>"
        );
    }

    #[test]
    fn aux_scripts_resolve_against_the_server_root() {
        let words = |t: &str| t.split_whitespace().map(String::from).collect::<Vec<_>>();
        let root = Path::new("/etc/apache2");
        let s = parse_aux_script(&words("auth.wsgi application-group=auth"), root).unwrap();
        assert_eq!(s.path, Path::new("/etc/apache2/auth.wsgi"));
        assert_eq!(s.application_group, Some(GroupSpec::Named("auth".into())));
        let s = parse_aux_script(&words("/srv/access.wsgi"), root).unwrap();
        assert_eq!(s.path, Path::new("/srv/access.wsgi"));
        assert_eq!(s.application_group, None);
        assert_eq!(
            parse_aux_script(&words("/srv/a.wsgi colour=blue application-group="), root)
                .unwrap_err()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            [
                "unknown option `colour`: valid options are process-group, application-group",
                "application-group=`` is not valid: give an application group name, or %{GLOBAL} for the main interpreter",
            ]
        );
        assert!(parse_aux_script(&[], root).is_err());
    }

    #[test]
    fn auth_scripts_need_a_directory() {
        assert_eq!(
            error(&Context::default(), "WSGIAuthUserScript /srv/auth.wsgi"),
            "site.conf:12: WSGIAuthUserScript: cannot occur within the server config, outside a <Directory>: put WSGIAuthUserScript inside the <Directory>, <Location> or <Files> section it protects"
        );
    }

    #[test]
    fn the_bin_python_mistake_names_the_root() {
        assert_eq!(
            error(
                &Context::default(),
                "WSGIDaemonProcess myapp python-home=/usr/local/venvs/myapp/bin/python"
            ),
            "site.conf:12: WSGIDaemonProcess myapp: python-home=`/usr/local/venvs/myapp/bin/python` is the virtual environment's python executable, not its root (the folder holding bin/ and lib/, what `python -c 'import sys; print(sys.prefix)'` prints): use /usr/local/venvs/myapp"
        );
    }

    #[test]
    fn unknown_directive_suggests_the_closest() {
        assert_eq!(
            error(&Context::default(), "WSGIScriptAlis / /srv/app.wsgi"),
            "site.conf:12: WSGIScriptAlis: unknown mod_wsgi directive (did you mean `WSGIScriptAlias`?)"
        );
    }

    #[test]
    fn arguments_are_counted() {
        assert_eq!(
            error(&Context::default(), "WSGIScriptAlias /"),
            "site.conf:12: WSGIScriptAlias: takes at least two arguments, 1 given: the syntax is `WSGIScriptAlias URL-path file-or-directory [process-group=NAME] [application-group=NAME] [callable-object=NAME] [pass-authorization=On|Off]`"
        );
        assert_eq!(
            error(&Context::default(), "WSGIPassAuthorization Yes"),
            "site.conf:12: WSGIPassAuthorization: `Yes` is not a valid value: use On or Off"
        );
    }

    #[test]
    fn alias_options_are_checked() {
        assert_eq!(
            error(
                &Context::default(),
                "WSGIScriptAlias / /srv/app.wsgi proces-group=x"
            ),
            "site.conf:12: WSGIScriptAlias: unknown option `proces-group` (did you mean `process-group`?): valid options are process-group, application-group, callable-object, pass-authorization"
        );
        assert_eq!(
            error(
                &Context::default(),
                "WSGIImportScript /srv/app.wsgi process-group=x"
            ),
            "site.conf:12: WSGIImportScript: the `application-group=` option is required: write `application-group=NAME`, or `application-group=%{GLOBAL}` for the main interpreter"
        );
        // Every problem of the line, each once: a bad value is not also a missing option.
        assert_eq!(
            error(
                &Context::default(),
                "WSGIImportScript /srv/app.wsgi process-group= colour=blue"
            ),
            "site.conf:12: WSGIImportScript: process-group=`` is not valid: give a daemon process group name, or %{GLOBAL} for embedded mode\n\
             site.conf:12: WSGIImportScript: unknown option `colour`: valid options are process-group, application-group\n\
             site.conf:12: WSGIImportScript: the `application-group=` option is required: write `application-group=NAME`, or `application-group=%{GLOBAL}` for the main interpreter"
        );
        assert_eq!(
            error(
                &Context::default(),
                "WSGIScriptAlias app /srv/app.wsgi pass-authorization=yes callable-object=a.b"
            ),
            "site.conf:12: WSGIScriptAlias: URL-path=`app` is not valid: a URL path starts with / (for example /myapp)\n\
             site.conf:12: WSGIScriptAlias: pass-authorization=`yes` is not valid: use On or Off\n\
             site.conf:12: WSGIScriptAlias: callable-object=`a.b` is not valid: name a module-level callable of the script, such as application (not a dotted path)"
        );
    }

    #[test]
    fn duplicate_daemon_groups_name_the_first() {
        let mut b = ConfigBuilder::new("/");
        b.directive(&Context::default(), &directive(3, "WSGIDaemonProcess a"))
            .unwrap();
        let e = b
            .directive(&vhost(5), &directive(7, "WSGIDaemonProcess a threads=2"))
            .unwrap_err();
        assert_eq!(
            e[0].to_string(),
            "site.conf:7: WSGIDaemonProcess a: a daemon process group named `a` is already defined at site.conf:3: daemon group names are unique across the whole server; rename one of them"
        );
    }

    #[test]
    fn undefined_process_group_is_refused_at_finish() {
        let mut b = ConfigBuilder::new("/");
        b.directive(
            &Context::default(),
            &directive(1, "WSGIDaemonProcess myapp"),
        )
        .unwrap();
        b.directive(&Context::default(), &directive(2, "WSGIProcessGroup myap"))
            .unwrap();
        let errors = b.finish().unwrap_err();
        assert_eq!(
            errors[0].to_string(),
            "site.conf:2: WSGIProcessGroup: no daemon process group named `myap` is defined (defined: myapp at site.conf:1): add `WSGIDaemonProcess myap` at the server level or in this virtual host, or fix the name"
        );
    }

    #[test]
    fn groups_defined_after_use_and_in_a_named_host_are_fine() {
        let mut b = ConfigBuilder::new("/");
        let v = vhost(4);
        b.directive(&v, &directive(5, "ServerName example.com"))
            .unwrap();
        b.directive(&v, &directive(6, "WSGIProcessGroup site"))
            .unwrap();
        b.directive(&v, &directive(7, "WSGIDaemonProcess site"))
            .unwrap();
        // Another virtual host with the same ServerName (port 443) shares the group.
        let v2 = vhost(20);
        b.directive(&v2, &directive(21, "ServerName example.com"))
            .unwrap();
        b.directive(
            &v2,
            &directive(22, "WSGIScriptAlias / /srv/app.wsgi process-group=site"),
        )
        .unwrap();
        let config = b.finish().unwrap();
        assert_eq!(config.daemons[0].host, Some(0));
    }

    #[test]
    fn groups_in_another_virtual_host_are_inaccessible() {
        let mut b = ConfigBuilder::new("/");
        let v = vhost(4);
        b.directive(&v, &directive(5, "ServerName a.example.com"))
            .unwrap();
        b.directive(&v, &directive(7, "WSGIDaemonProcess site"))
            .unwrap();
        let v2 = vhost(20);
        b.directive(&v2, &directive(21, "ServerName b.example.com"))
            .unwrap();
        b.directive(&v2, &directive(22, "WSGIProcessGroup site"))
            .unwrap();
        let errors = b.finish().unwrap_err();
        assert_eq!(
            errors[0].to_string(),
            "site.conf:22: WSGIProcessGroup: daemon process group `site` is defined inside the <VirtualHost> at site.conf:7 (ServerName a.example.com), so only requests to that ServerName may use it, and this one is for b.example.com: define the group at the server level, outside any <VirtualHost>, to share it"
        );
    }

    #[test]
    fn directory_settings_land_in_their_section() {
        let mut b = ConfigBuilder::new("/");
        let d = in_directory(Context::default(), 3, "/srv/project");
        b.directive(&d, &directive(4, "WSGIApplicationGroup %{GLOBAL}"))
            .unwrap();
        b.directive(&d, &directive(5, "Require all granted"))
            .unwrap();
        b.directive(&d, &directive(6, "SetEnv APP one")).unwrap();
        let c = b.finish().unwrap();
        let s = &c.main.sections[0];
        assert_eq!(s.pattern, "/srv/project");
        assert_eq!(s.settings.application_group, Some(GroupSpec::Global));
        assert!(matches!(
            s.settings.authz.as_deref(),
            Some(crate::authz::AuthzNode::Container { children, .. })
                if matches!(&children[..], [crate::authz::AuthzNode::Require {
                    requirement: crate::authz::Requirement::All(true),
                    ..
                }])
        ));
        assert!(matches!(&s.env[..], [crate::env::EnvOp::Set(k, v)] if k == "APP" && v == "one"));
    }

    #[test]
    fn context_directives_are_kept() {
        let mut b = ConfigBuilder::new("/");
        let c = Context::default();
        for (i, line) in [
            "Listen 8080",
            "Listen 127.0.0.1:8081",
            "Listen [::1]:8082",
            "ServerName https://www.example.com:8443",
            "User www-data",
            "KeepAlive On",
        ]
        .iter()
        .enumerate()
        {
            b.directive(&c, &directive(i as u32 + 1, line)).unwrap();
        }
        let config = b.finish().unwrap();
        assert_eq!(config.listen.len(), 3);
        assert_eq!(config.listen[1].ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(config.main.server_name.as_deref(), Some("www.example.com"));
        assert_eq!(config.main.server_name_port, Some(8443));
        assert_eq!(config.user.as_deref(), Some("www-data"));
    }

    #[test]
    fn host_addresses() {
        assert_eq!(
            parse_host_address("*:8080").unwrap(),
            HostAddress {
                ip: None,
                name: None,
                port: Some(8080)
            }
        );
        assert_eq!(parse_host_address("*").unwrap().port, None);
        assert_eq!(
            parse_host_address("[::1]:80").unwrap().ip,
            Some("::1".parse().unwrap())
        );
        assert_eq!(
            parse_host_address("example.com:80")
                .unwrap()
                .name
                .as_deref(),
            Some("example.com")
        );
        assert!(parse_host_address("*:http").is_none());
    }
}
