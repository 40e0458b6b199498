//! Reading a configuration file into a [`Config`]: the reader's tree walked through the
//! [`ConfigBuilder`], collecting every error rather than stopping at the first.

use std::path::Path;

use crate::builder::{ConfigBuilder, ContainerDecl, Context, VirtualHostDecl};
use crate::error::{ConfigError, ConfigWarning, ErrorKind};
use crate::model::{Config, DirectiveUse};
use crate::reader::{self, ConfigTree, Item, ReadOptions};

/// Reads and validates the configuration in `path` (with its includes).
/// Without a `server_root` in `opts`, relative paths resolve against the file's folder, made
/// absolute.
pub fn load_file(path: &Path, opts: &ReadOptions) -> Result<Config, Vec<ConfigError>> {
    match check_file(path, opts) {
        (Some(config), errors) if errors.is_empty() => Ok(config),
        (_, errors) => Err(errors),
    }
}

/// Reads and validates the configuration in `path` as [`load_file`] does, but keeps what can
/// be kept of a configuration with errors, beside them, so that the rest of it can be checked
/// in the same pass (`wsgi check`). The configuration is None when the text cannot be read.
pub fn check_file(path: &Path, opts: &ReadOptions) -> (Option<Config>, Vec<ConfigError>) {
    let mut opts = opts.clone();
    if opts.server_root.is_none() {
        let folder = path.parent().unwrap_or(Path::new("."));
        let folder = if folder.as_os_str().is_empty() {
            Path::new(".")
        } else {
            folder
        };
        opts.server_root = std::path::absolute(folder).ok();
    }
    match reader::read_file(path, &opts) {
        Ok(tree) => {
            let (config, errors) = build_with_errors(&tree);
            (Some(config), errors)
        }
        Err(e) => (None, vec![ConfigError::from(e)]),
    }
}

/// Reads and validates configuration text; `file` names it in messages.
pub fn load_str(text: &str, file: &Path, opts: &ReadOptions) -> Result<Config, Vec<ConfigError>> {
    let tree = reader::read_str(text, file, opts).map_err(|e| vec![ConfigError::from(e)])?;
    build(&tree)
}

/// Builds the configuration a reader's tree describes.
pub fn build(tree: &ConfigTree) -> Result<Config, Vec<ConfigError>> {
    match build_with_errors(tree) {
        (config, errors) if errors.is_empty() => Ok(config),
        (_, errors) => Err(errors),
    }
}

/// Builds what can be built of the configuration a reader's tree describes, with every error
/// (in file and line order).
fn build_with_errors(tree: &ConfigTree) -> (Config, Vec<ConfigError>) {
    let mut builder = ConfigBuilder::new(tree.server_root.clone());
    let mut errors = Vec::new();
    walk(&mut builder, &Context::default(), &tree.items, &mut errors);
    let (mut config, more) = builder.finish_with_errors();
    if !more.is_empty() {
        errors.extend(more);
        errors.sort_by(|a, b| {
            let key = |e: &ConfigError| e.span.as_ref().map(|s| (s.file.to_path_buf(), s.line));
            key(a).cmp(&key(b))
        });
    }
    record_uses(&tree.items, &mut config.uses);
    let read_warnings = tree.warnings.iter().map(|w| ConfigWarning {
        span: Some(w.span.clone()),
        subject: String::new(),
        message: w.message.clone(),
    });
    config.warnings.splice(0..0, read_warnings);
    (config, errors)
}

/// Every directive and section of `items`, depth first, in order.
fn record_uses(items: &[Item], uses: &mut Vec<DirectiveUse>) {
    for item in items {
        match item {
            Item::Directive(d) => uses.push(DirectiveUse {
                name: d.name.clone(),
                args: d.args.clone(),
                section: false,
                span: d.span.clone(),
            }),
            Item::Section(s) => {
                uses.push(DirectiveUse {
                    name: s.kind.clone(),
                    args: s.args.clone(),
                    section: true,
                    span: s.span.clone(),
                });
                record_uses(&s.children, uses);
            }
        }
    }
}

fn walk(builder: &mut ConfigBuilder, ctx: &Context, items: &[Item], errors: &mut Vec<ConfigError>) {
    for item in items {
        match item {
            Item::Directive(d) => {
                if let Err(e) = builder.directive(ctx, d) {
                    errors.extend(e);
                }
            }
            Item::Section(s) if s.kind.eq_ignore_ascii_case("VirtualHost") => {
                if ctx.virtual_host.is_some() || !ctx.containers.is_empty() {
                    errors.push(ConfigError::new(
                        Some(&s.span),
                        "<VirtualHost>",
                        ErrorKind::WrongContext {
                            inside: "another section".into(),
                            fix: "<VirtualHost> sections go at the server level: close the enclosing section first".into(),
                        },
                    ));
                    continue;
                }
                let inner = Context {
                    virtual_host: Some(VirtualHostDecl {
                        addresses: s.args.clone(),
                        span: s.span.clone(),
                    }),
                    ..ctx.clone()
                };
                walk(builder, &inner, &s.children, errors);
            }
            Item::Section(s) => {
                if s.kind.eq_ignore_ascii_case("WSGIInterpreterOptions") {
                    if let Err(e) = builder.interpreter_options(ctx, &s.args, &s.span) {
                        // The lines inside belong to no section that exists.
                        errors.extend(e);
                        continue;
                    }
                }
                let mut inner = ctx.clone();
                inner.containers.push(ContainerDecl {
                    kind: s.kind.clone(),
                    args: s.args.clone(),
                    span: s.span.clone(),
                });
                walk(builder, &inner, &s.children, errors);
            }
        }
    }
}
