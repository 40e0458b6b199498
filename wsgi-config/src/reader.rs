//! Reader for Apache httpd 2.4 configuration syntax: text to a tree of
//! directives and sections, each with the file and line it came from.
//!
//! The reader handles everything httpd resolves while *reading* a
//! configuration, before any directive is interpreted:
//!
//! * logical lines: `\` at the end of a line joins the next one; blank lines
//!   and lines whose first non-blank character is `#` are skipped;
//! * words: whitespace separated, `"..."` / `'...'` quoting with `\"`,
//!   `\'` and `\\` escapes, as `ap_getword_conf` does;
//! * `Define` / `UnDefine` and `${NAME}` expansion (falling back to the
//!   process environment; an undefined name is left as written and reported
//!   as a [`ReadWarning`]);
//! * `ServerRoot`, `Include` and `IncludeOptional` (wildcards, directories,
//!   loop and depth guard);
//! * the conditional sections `<IfDefine>`, `<IfModule>`, `<IfVersion>`,
//!   `<IfFile>`, `<IfDirective>` and `<IfSection>`, whose contents are
//!   spliced in place or dropped.
//!
//! Every other directive or section is kept as written for the typed model
//! to judge. Where this reader deliberately differs from httpd:
//!
//! * a quoted word without its closing quote is an error
//!   ([`ReadError::UnterminatedQuote`]); httpd silently runs it to the end
//!   of the line;
//! * bytes that are not UTF-8 are decoded lossily (as U+FFFD) and reported
//!   as a warning at the line where they first occur;
//! * a relative `ServerRoot` is resolved against the current server root,
//!   not the process's working directory;
//! * an include loop is reported as such instead of running into the depth
//!   limit, which is 64 here (httpd: 128);
//! * sections may nest at most [`MAX_SECTION_DEPTH`] deep (httpd: no limit);
//! * `</Name >` (space before `>`) closes `<Name>`, and text after a tag's
//!   `>` is ignored with a warning.
//!
//! Sections must be balanced within each file, as in httpd: an included
//! file cannot close a section opened by the file that includes it.

mod condition;
mod include;
mod lexer;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use include::IncludeProblem;
use lexer::LogicalLine;

/// Deepest chain of nested `Include`s accepted (the top-level file is 0).
pub const MAX_INCLUDE_DEPTH: usize = 64;

/// Deepest nesting of sections accepted, counted across included files
/// (keeps the tree shallow enough for recursive consumers).
pub const MAX_SECTION_DEPTH: usize = 128;

/// Where a directive or section came from: the file as it was named (joined
/// to ServerRoot when relative) and the 1-based line where it starts.
///
/// Line 0 stands for the file as a whole (used when the top-level file
/// cannot be read at all).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Span {
    /// The file, as named by the caller or by the `Include` that read it.
    pub file: Arc<Path>,
    /// 1-based line number where the directive or section starts.
    pub line: u32,
}

impl Span {
    /// A span for `line` of `file`.
    pub fn new(file: impl AsRef<Path>, line: u32) -> Self {
        Span {
            file: Arc::from(file.as_ref()),
            line,
        }
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// One configuration directive: its name as written and its arguments with
/// quotes removed and `${NAME}` references expanded.
#[derive(Clone, Debug, PartialEq)]
pub struct Directive {
    /// The directive name as written (consumers compare case-insensitively).
    pub name: String,
    /// The arguments, unquoted and expanded.
    pub args: Vec<String>,
    /// Where the directive starts.
    pub span: Span,
}

/// A `<Kind args...>` ... `</Kind>` block other than a conditional.
#[derive(Clone, Debug, PartialEq)]
pub struct Section {
    /// The section name as written, without `<` and `>` (`VirtualHost`,
    /// `Directory`, `LocationMatch`, ...).
    pub kind: String,
    /// The arguments of the opening tag, unquoted and expanded.
    pub args: Vec<String>,
    /// Where the opening tag is.
    pub span: Span,
    /// The directives and sections inside, in order.
    pub children: Vec<Item>,
}

/// An entry of the configuration tree.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    /// A plain directive.
    Directive(Directive),
    /// A section with children.
    Section(Section),
}

impl Item {
    /// Where the item starts.
    pub fn span(&self) -> &Span {
        match self {
            Item::Directive(directive) => &directive.span,
            Item::Section(section) => &section.span,
        }
    }
}

/// Settings for a read, mirroring httpd's command line.
#[derive(Clone, Debug, Default)]
pub struct ReadOptions {
    /// The initial ServerRoot (httpd `-d`); default: the directory of the
    /// top-level file.
    pub server_root: Option<PathBuf>,
    /// Names defined before reading (httpd `-D NAME`), optionally with a
    /// value usable as `${NAME}`.
    pub defines: Vec<(String, Option<String>)>,
    /// Extra module names (`mod_foo.c` or `foo_module`) that `<IfModule>`
    /// considers loaded.
    pub loaded_modules: Vec<String>,
}

/// The result of a successful read.
#[derive(Clone, Debug)]
pub struct ConfigTree {
    /// The top-level directives and sections, with includes and
    /// conditionals resolved.
    pub items: Vec<Item>,
    /// The ServerRoot in force at the end of the read.
    pub server_root: PathBuf,
    /// Soft problems found while reading.
    pub warnings: Vec<ReadWarning>,
}

/// A soft problem: httpd would carry on (possibly logging a warning).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadWarning {
    /// Where the problem is.
    pub span: Span,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ReadWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.span, self.message)
    }
}

/// A configuration that cannot be read. Every message has the form
/// `file:line: what is wrong: how to fix it`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// A word starting with a quote has no closing quote.
    #[error("{span}: unterminated {quote} quote: add the closing {quote}")]
    UnterminatedQuote {
        /// The line.
        span: Span,
        /// `"` or `'`.
        quote: char,
    },
    /// End of file reached with a section still open.
    #[error("{span}: <{kind}> section opened here was never closed: add </{kind}>")]
    UnclosedSection {
        /// Where the section was opened.
        span: Span,
        /// The section name as written.
        kind: String,
    },
    /// A closing tag that does not match the innermost open section.
    #[error(
        "{span}: </{found}> does not match the open <{open}> section (opened at {open_span}): \
         close <{open}> with </{open}> first"
    )]
    MismatchedClose {
        /// The closing tag.
        span: Span,
        /// The name in the closing tag.
        found: String,
        /// The name of the open section.
        open: String,
        /// Where the open section starts.
        open_span: Span,
    },
    /// A closing tag with no section open in this file.
    #[error(
        "{span}: </{found}> closes no open section: remove it or add the matching <{found}> before it"
    )]
    StrayClose {
        /// The closing tag.
        span: Span,
        /// The name in the closing tag.
        found: String,
    },
    /// A section tag without its closing `>`.
    #[error("{span}: {tag} has no closing '>': end the tag with '>'")]
    MissingCloseBracket {
        /// The line.
        span: Span,
        /// The tag as far as it goes, e.g. `<Directory` or `</Directory`.
        tag: String,
    },
    /// A `<` without a section name.
    #[error(
        "{span}: '<' is not followed by a section name: write <Name arguments> or remove the line"
    )]
    EmptySectionName {
        /// The line.
        span: Span,
    },
    /// A conditional section without its condition.
    #[error("{span}: <{kind}> needs an argument: write <{kind} NAME>, or <{kind} !NAME> to negate")]
    MissingConditionArgument {
        /// The tag.
        span: Span,
        /// The section name as written.
        kind: String,
    },
    /// A directive the reader executes has the wrong number of arguments.
    #[error("{span}: {directive} takes {expected}, got {got}: write `{usage}`")]
    BadArguments {
        /// The directive.
        span: Span,
        /// The directive name as written.
        directive: String,
        /// What it takes, e.g. `exactly one path`.
        expected: &'static str,
        /// How many arguments it had.
        got: usize,
        /// A correct form.
        usage: &'static str,
    },
    /// `Define` / `UnDefine` of a name containing `:`.
    #[error("{span}: variable name `{name}` contains ':': choose a name without ':'")]
    InvalidVariableName {
        /// The directive.
        span: Span,
        /// The offending name.
        name: String,
    },
    /// `Include` of a path without wildcards that does not exist.
    #[error(
        "{span}: included file {} does not exist: fix the path, or use IncludeOptional if it may be missing",
        path.display()
    )]
    IncludeMissing {
        /// The `Include` directive.
        span: Span,
        /// The path, joined to ServerRoot.
        path: PathBuf,
    },
    /// `Include` of a wildcard that matches nothing.
    #[error(
        "{span}: no matches for the wildcard {}: fix the pattern, or use IncludeOptional if nothing may match",
        pattern.display()
    )]
    IncludeNoMatch {
        /// The `Include` directive.
        span: Span,
        /// The pattern, joined to ServerRoot.
        pattern: PathBuf,
    },
    /// A wildcard component that is not a valid pattern.
    #[error("{span}: invalid wildcard `{pattern}` ({reason}): fix the pattern")]
    IncludeBadPattern {
        /// The include directive.
        span: Span,
        /// The offending path component.
        pattern: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A file (or directory) that includes itself, directly or not.
    #[error(
        "{span}: include loop: {} is already being read: remove the Include that leads back to it",
        path.display()
    )]
    IncludeLoop {
        /// The include directive that closes the loop.
        span: Span,
        /// The file or directory read twice.
        path: PathBuf,
    },
    /// Includes (or included directories) nested too deeply.
    #[error(
        "{span}: includes nested deeper than {MAX_INCLUDE_DEPTH} levels at {}: flatten the Include chain",
        path.display()
    )]
    IncludeTooDeep {
        /// The include directive that goes too deep.
        span: Span,
        /// The file or directory that would be read.
        path: PathBuf,
    },
    /// A file or directory that cannot be read.
    #[error(
        "{span}: cannot read {}: {source}: check that it exists and is readable",
        path.display()
    )]
    Unreadable {
        /// The include directive (or the file itself, line 0, for the
        /// top-level file).
        span: Span,
        /// The path that failed.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// Sections nested more than [`MAX_SECTION_DEPTH`] levels deep.
    #[error(
        "{span}: <{kind}> is nested deeper than {MAX_SECTION_DEPTH} sections: flatten the configuration"
    )]
    NestedTooDeep {
        /// The opening tag that goes too deep.
        span: Span,
        /// Its section name.
        kind: String,
    },
    /// A line that grows beyond 16 MiB through `${NAME}` expansion.
    #[error(
        "{span}: line is {len} bytes after ${{NAME}} expansion, over the 16 MiB limit: shorten the line or the variables it uses"
    )]
    LineTooLong {
        /// The line.
        span: Span,
        /// Its length after expansion (at the point the limit was hit).
        len: usize,
    },
}

impl ReadError {
    /// Where the problem is.
    pub fn span(&self) -> &Span {
        match self {
            ReadError::UnterminatedQuote { span, .. }
            | ReadError::UnclosedSection { span, .. }
            | ReadError::MismatchedClose { span, .. }
            | ReadError::StrayClose { span, .. }
            | ReadError::MissingCloseBracket { span, .. }
            | ReadError::EmptySectionName { span }
            | ReadError::MissingConditionArgument { span, .. }
            | ReadError::BadArguments { span, .. }
            | ReadError::InvalidVariableName { span, .. }
            | ReadError::IncludeMissing { span, .. }
            | ReadError::IncludeNoMatch { span, .. }
            | ReadError::IncludeBadPattern { span, .. }
            | ReadError::IncludeLoop { span, .. }
            | ReadError::IncludeTooDeep { span, .. }
            | ReadError::Unreadable { span, .. }
            | ReadError::NestedTooDeep { span, .. }
            | ReadError::LineTooLong { span, .. } => span,
        }
    }
}

/// Reads the configuration file at `path` and everything it includes.
///
/// Spans name `path` as given. Without `opts.server_root`, relative
/// includes resolve against the directory of `path`.
pub fn read_file(path: &Path, opts: &ReadOptions) -> Result<ConfigTree, ReadError> {
    let bytes = fs::read(path).map_err(|source| ReadError::Unreadable {
        span: Span::new(path, 0),
        path: path.to_path_buf(),
        source,
    })?;
    let mut reader = Reader::new(opts, default_server_root(path, opts));
    reader.open_files.push(canonical(path));
    let items = reader.read_bytes(&bytes, Arc::from(path), Depth::TOP)?;
    Ok(reader.finish(items))
}

/// Reads configuration `text` as if it were the contents of `file` (used
/// for spans and, without `opts.server_root`, as the base of relative
/// includes: its parent directory, or the working directory).
pub fn read_str(text: &str, file: &Path, opts: &ReadOptions) -> Result<ConfigTree, ReadError> {
    let mut reader = Reader::new(opts, default_server_root(file, opts));
    reader.open_files.push(canonical(file));
    let items = reader.read_text(text, Arc::from(file), Depth::TOP)?;
    Ok(reader.finish(items))
}

fn default_server_root(file: &Path, opts: &ReadOptions) -> PathBuf {
    if let Some(root) = &opts.server_root {
        return root.clone();
    }
    match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
    }
}

/// The identity of a file for loop detection.
fn canonical(path: &Path) -> PathBuf {
    fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// How deep the reader is when it starts on a file.
#[derive(Debug, Clone, Copy)]
struct Depth {
    /// Number of `Include`s leading to the file.
    includes: usize,
    /// Number of sections open around the `Include` of the file.
    sections: usize,
}

impl Depth {
    const TOP: Depth = Depth {
        includes: 0,
        sections: 0,
    };
}

/// What an open frame on the section stack is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// A kept section: its children become a [`Section`].
    Section,
    /// A conditional that holds: its children are spliced into the parent.
    Taken,
    /// A conditional that does not hold, or anything nested in one: its
    /// contents are only checked for balanced tags, then dropped.
    Skipped,
}

/// An open `<Kind ...>` not yet closed.
struct Frame {
    kind: String,
    args: Vec<String>,
    span: Span,
    role: Role,
    children: Vec<Item>,
}

/// The state that lives across files during one read.
struct Reader<'o> {
    opts: &'o ReadOptions,
    /// Names for `<IfDefine>`.
    defined: HashSet<String>,
    /// Values for `${NAME}`.
    variables: HashMap<String, String>,
    server_root: PathBuf,
    /// Names made visible by `LoadModule`.
    loaded_modules: HashSet<String>,
    warnings: Vec<ReadWarning>,
    /// Canonical paths of the files being read, outermost first.
    open_files: Vec<PathBuf>,
}

impl<'o> Reader<'o> {
    fn new(opts: &'o ReadOptions, server_root: PathBuf) -> Self {
        let mut defined = HashSet::new();
        let mut variables = HashMap::new();
        for (name, value) in &opts.defines {
            defined.insert(name.clone());
            if let Some(value) = value {
                variables.insert(name.clone(), value.clone());
            }
        }
        Reader {
            opts,
            defined,
            variables,
            server_root,
            loaded_modules: HashSet::new(),
            warnings: Vec::new(),
            open_files: Vec::new(),
        }
    }

    fn finish(self, items: Vec<Item>) -> ConfigTree {
        ConfigTree {
            items,
            server_root: self.server_root,
            warnings: self.warnings,
        }
    }

    fn warn(&mut self, span: &Span, message: String) {
        self.warnings.push(ReadWarning {
            span: span.clone(),
            message,
        });
    }

    /// Decodes a file's bytes (lossily, with a warning) and reads them.
    fn read_bytes(
        &mut self,
        bytes: &[u8],
        file: Arc<Path>,
        depth: Depth,
    ) -> Result<Vec<Item>, ReadError> {
        match std::str::from_utf8(bytes) {
            Ok(text) => self.read_text(text, file, depth),
            Err(error) => {
                let before = &bytes[..error.valid_up_to()];
                let newlines = before.iter().filter(|&&b| b == b'\n').count();
                let line = u32::try_from(newlines + 1).unwrap_or(u32::MAX);
                let span = Span {
                    file: file.clone(),
                    line,
                };
                self.warn(&span, "invalid UTF-8 replaced with U+FFFD".to_owned());
                self.read_text(&String::from_utf8_lossy(bytes), file, depth)
            }
        }
    }

    /// Reads one file's text. Sections must be balanced within the file.
    fn read_text(
        &mut self,
        text: &str,
        file: Arc<Path>,
        depth: Depth,
    ) -> Result<Vec<Item>, ReadError> {
        let mut top = Vec::new();
        let mut stack: Vec<Frame> = Vec::new();
        // Index in `stack` of the outermost skipped frame, if any.
        let mut skip_from: Option<usize> = None;
        for LogicalLine { number, text } in lexer::logical_lines(text) {
            let span = Span {
                file: file.clone(),
                line: number,
            };
            let line = if skip_from.is_some() {
                text
            } else {
                self.expand(&text, &span)?
            };
            let line = lexer::trim(&line);
            if let Some(rest) = line.strip_prefix("</") {
                let found = self.closing_name(rest, &span, skip_from.is_some())?;
                let frame = stack.pop().ok_or_else(|| ReadError::StrayClose {
                    span: span.clone(),
                    found: found.clone(),
                })?;
                if !frame.kind.eq_ignore_ascii_case(&found) {
                    return Err(ReadError::MismatchedClose {
                        span,
                        found,
                        open: frame.kind,
                        open_span: frame.span,
                    });
                }
                if skip_from == Some(stack.len()) {
                    skip_from = None;
                }
                let sink = sink(&mut stack, &mut top);
                match frame.role {
                    Role::Section => sink.push(Item::Section(Section {
                        kind: frame.kind,
                        args: frame.args,
                        span: frame.span,
                        children: frame.children,
                    })),
                    Role::Taken => sink.extend(frame.children),
                    Role::Skipped => {}
                }
            } else if let Some(rest) = line.strip_prefix('<') {
                let frame = if skip_from.is_some() {
                    skipped_frame(rest, span)
                } else {
                    self.open_frame(rest, span)?
                };
                if depth.sections + stack.len() >= MAX_SECTION_DEPTH {
                    return Err(ReadError::NestedTooDeep {
                        span: frame.span,
                        kind: frame.kind,
                    });
                }
                if frame.role == Role::Skipped && skip_from.is_none() {
                    skip_from = Some(stack.len());
                }
                stack.push(frame);
            } else if skip_from.is_none() {
                let words =
                    lexer::split_words(line).map_err(|quote| ReadError::UnterminatedQuote {
                        span: span.clone(),
                        quote,
                    })?;
                let mut words = words.into_iter();
                let Some(name) = words.next() else {
                    continue;
                };
                let directive = Directive {
                    name,
                    args: words.collect(),
                    span,
                };
                let here = Depth {
                    includes: depth.includes,
                    sections: depth.sections + stack.len(),
                };
                let items = self.execute(directive, here)?;
                sink(&mut stack, &mut top).extend(items);
            }
        }
        match stack.pop() {
            Some(frame) => Err(ReadError::UnclosedSection {
                span: frame.span,
                kind: frame.kind,
            }),
            None => Ok(top),
        }
    }

    /// Expands `${NAME}` in one line, warning about undefined names.
    fn expand(&mut self, line: &str, span: &Span) -> Result<String, ReadError> {
        let expansion = lexer::expand_vars(line, |name| {
            self.variables.get(name).cloned().or_else(|| {
                std::env::var_os(name).map(|value| value.to_string_lossy().into_owned())
            })
        })
        .map_err(|len| ReadError::LineTooLong {
            span: span.clone(),
            len,
        })?;
        for name in expansion.undefined {
            self.warn(span, format!("${{{name}}} is not defined: left as written"));
        }
        Ok(expansion.text)
    }

    /// The name in a closing tag (`rest` follows `</`).
    fn closing_name(
        &mut self,
        rest: &str,
        span: &Span,
        skipping: bool,
    ) -> Result<String, ReadError> {
        let Some((name, trailing)) = rest.split_once('>') else {
            if skipping {
                return Ok(lexer::trim(rest).to_owned());
            }
            return Err(ReadError::MissingCloseBracket {
                span: span.clone(),
                tag: format!("</{rest}"),
            });
        };
        let trailing = lexer::trim(trailing);
        if !trailing.is_empty() && !skipping {
            self.warn(span, format!("text after '>' ignored: `{trailing}`"));
        }
        Ok(lexer::trim(name).to_owned())
    }

    /// Parses an opening tag (`rest` follows `<`) in live context and
    /// decides what the new frame is.
    fn open_frame(&mut self, rest: &str, span: Span) -> Result<Frame, ReadError> {
        let (word, after_word) = rest.split_once(lexer::is_space).unwrap_or((rest, ""));
        if word.is_empty() || word == ">" {
            return Err(ReadError::EmptySectionName { span });
        }
        let (kind, args_text, trailing) = match word.strip_suffix('>') {
            Some(kind) => (kind, "", after_word),
            None => {
                let Some(close) = after_word.rfind('>') else {
                    return Err(ReadError::MissingCloseBracket {
                        span,
                        tag: format!("<{word}"),
                    });
                };
                (word, &after_word[..close], &after_word[close + 1..])
            }
        };
        let trailing = lexer::trim(trailing);
        if !trailing.is_empty() {
            self.warn(&span, format!("text after '>' ignored: `{trailing}`"));
        }
        let args = lexer::split_words(args_text).map_err(|quote| ReadError::UnterminatedQuote {
            span: span.clone(),
            quote,
        })?;
        let role = match self.condition(kind, &args, &span)? {
            None => Role::Section,
            Some(true) => Role::Taken,
            Some(false) => Role::Skipped,
        };
        Ok(Frame {
            kind: kind.to_owned(),
            args,
            span,
            role,
            children: Vec::new(),
        })
    }

    /// Evaluates a conditional section; `None` if `kind` is not one.
    fn condition(
        &mut self,
        kind: &str,
        args: &[String],
        span: &Span,
    ) -> Result<Option<bool>, ReadError> {
        let lower = kind.to_ascii_lowercase();
        if !matches!(
            lower.as_str(),
            "ifdefine" | "ifmodule" | "iffile" | "ifdirective" | "ifsection" | "ifversion"
        ) {
            return Ok(None);
        }
        let missing = || ReadError::MissingConditionArgument {
            span: span.clone(),
            kind: kind.to_owned(),
        };
        if lower == "ifversion" {
            if args.is_empty() {
                return Err(missing());
            }
            return Ok(Some(condition::if_version(args).unwrap_or_else(|why| {
                self.warn(
                    span,
                    format!("<{kind}> condition not understood ({why}): treated as true"),
                );
                true
            })));
        }
        let first = args.first().ok_or_else(missing)?;
        let (negate, name) = match first.strip_prefix('!') {
            Some(name) => (true, name),
            None => (false, first.as_str()),
        };
        if name.is_empty() {
            return Err(missing());
        }
        if args.len() > 1 {
            self.warn(
                span,
                format!(
                    "<{kind}> uses only its first argument: ignored `{}`",
                    args[1..].join(" ")
                ),
            );
        }
        let holds = match lower.as_str() {
            "ifdefine" => self.defined.contains(name),
            "ifmodule" => self.module_loaded(name),
            "iffile" => self.server_root.join(name).exists(),
            "ifdirective" => condition::is_known_directive(name),
            _ => condition::is_known_section(name, |module| self.module_loaded(module)),
        };
        Ok(Some(holds != negate))
    }

    fn module_loaded(&self, name: &str) -> bool {
        condition::is_always_loaded(name)
            || self.loaded_modules.contains(name)
            || self.opts.loaded_modules.iter().any(|loaded| loaded == name)
    }

    /// Carries out what the reader itself executes and returns the items
    /// that take the directive's place in the tree.
    fn execute(&mut self, directive: Directive, depth: Depth) -> Result<Vec<Item>, ReadError> {
        let lower = directive.name.to_ascii_lowercase();
        match lower.as_str() {
            "include" | "includeoptional" => {
                let optional = lower == "includeoptional";
                let usage = if optional {
                    "IncludeOptional path"
                } else {
                    "Include path"
                };
                let [pattern] = directive.args.as_slice() else {
                    return Err(bad_arguments(&directive, "exactly one path", usage));
                };
                return self.include(pattern, optional, &directive.span, depth);
            }
            "define" => {
                let (name, value) = match directive.args.as_slice() {
                    [name] => (name, None),
                    [name, value] => (name, Some(value)),
                    _ => {
                        return Err(bad_arguments(
                            &directive,
                            "one or two arguments",
                            "Define NAME [value]",
                        ));
                    }
                };
                check_variable_name(name, &directive.span)?;
                self.defined.insert(name.clone());
                if let Some(value) = value {
                    self.variables.insert(name.clone(), value.clone());
                }
            }
            "undefine" => {
                let [name] = directive.args.as_slice() else {
                    return Err(bad_arguments(
                        &directive,
                        "exactly one name",
                        "UnDefine NAME",
                    ));
                };
                check_variable_name(name, &directive.span)?;
                self.defined.remove(name);
                self.variables.remove(name);
            }
            "serverroot" => {
                let [root] = directive.args.as_slice() else {
                    return Err(bad_arguments(
                        &directive,
                        "exactly one path",
                        "ServerRoot /path",
                    ));
                };
                self.server_root = self.server_root.join(root);
            }
            "loadmodule" => {
                if let [symbol, file] = directive.args.as_slice() {
                    self.loaded_modules
                        .extend(condition::load_module_names(symbol, file));
                }
            }
            _ => {}
        }
        Ok(vec![Item::Directive(directive)])
    }

    /// Reads every file an `Include` names, in order.
    fn include(
        &mut self,
        pattern: &str,
        optional: bool,
        span: &Span,
        depth: Depth,
    ) -> Result<Vec<Item>, ReadError> {
        let path = self.server_root.join(pattern);
        let files = include::expand(&path, optional).map_err(|problem| match problem {
            IncludeProblem::Missing(path) => ReadError::IncludeMissing {
                span: span.clone(),
                path,
            },
            IncludeProblem::NoMatch(pattern) => ReadError::IncludeNoMatch {
                span: span.clone(),
                pattern,
            },
            IncludeProblem::BadPattern { pattern, reason } => ReadError::IncludeBadPattern {
                span: span.clone(),
                pattern,
                reason,
            },
            IncludeProblem::Io { path, error } => ReadError::Unreadable {
                span: span.clone(),
                path,
                source: error,
            },
            IncludeProblem::Loop(path) => ReadError::IncludeLoop {
                span: span.clone(),
                path,
            },
            IncludeProblem::TooDeep(path) => ReadError::IncludeTooDeep {
                span: span.clone(),
                path,
            },
        })?;
        let mut items = Vec::new();
        for file in files {
            let deeper = Depth {
                includes: depth.includes + 1,
                ..depth
            };
            items.extend(self.read_included(&file, span, deeper)?);
        }
        Ok(items)
    }

    fn read_included(
        &mut self,
        path: &Path,
        span: &Span,
        depth: Depth,
    ) -> Result<Vec<Item>, ReadError> {
        let identity = canonical(path);
        if self.open_files.contains(&identity) {
            return Err(ReadError::IncludeLoop {
                span: span.clone(),
                path: path.to_path_buf(),
            });
        }
        if depth.includes > MAX_INCLUDE_DEPTH {
            return Err(ReadError::IncludeTooDeep {
                span: span.clone(),
                path: path.to_path_buf(),
            });
        }
        let bytes = fs::read(path).map_err(|source| ReadError::Unreadable {
            span: span.clone(),
            path: path.to_path_buf(),
            source,
        })?;
        self.open_files.push(identity);
        let items = self.read_bytes(&bytes, Arc::from(path), depth);
        self.open_files.pop();
        items
    }
}

/// Where items read now go: the innermost open frame, or the top level.
fn sink<'a>(stack: &'a mut [Frame], top: &'a mut Vec<Item>) -> &'a mut Vec<Item> {
    match stack.last_mut() {
        Some(frame) => &mut frame.children,
        None => top,
    }
}

/// A frame for any tag opened inside a skipped conditional: only its name
/// matters (to match the closing tag), nothing is evaluated.
fn skipped_frame(rest: &str, span: Span) -> Frame {
    let word = rest.split(lexer::is_space).next().unwrap_or_default();
    let kind = word.split('>').next().unwrap_or_default();
    Frame {
        kind: kind.to_owned(),
        args: Vec::new(),
        span,
        role: Role::Skipped,
        children: Vec::new(),
    }
}

fn bad_arguments(directive: &Directive, expected: &'static str, usage: &'static str) -> ReadError {
    ReadError::BadArguments {
        span: directive.span.clone(),
        directive: directive.name.clone(),
        expected,
        got: directive.args.len(),
        usage,
    }
}

fn check_variable_name(name: &str, span: &Span) -> Result<(), ReadError> {
    if name.contains(':') {
        return Err(ReadError::InvalidVariableName {
            span: span.clone(),
            name: name.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::fmt::Write as _;

    const FILE: &str = "site.conf";

    /// Options whose ServerRoot does not exist, so that nothing outside a
    /// test's own temp dir is ever read.
    fn opts() -> ReadOptions {
        ReadOptions {
            server_root: Some(PathBuf::from("/nonexistent-wsgi-rs-root")),
            ..ReadOptions::default()
        }
    }

    fn read_with(text: &str, opts: &ReadOptions) -> ConfigTree {
        match read_str(text, Path::new(FILE), opts) {
            Ok(tree) => tree,
            Err(error) => panic!("unexpected error: {error}"),
        }
    }

    fn read(text: &str) -> ConfigTree {
        read_with(text, &opts())
    }

    fn items(text: &str) -> Vec<Item> {
        let tree = read(text);
        assert_eq!(tree.warnings, vec![], "unexpected warnings");
        tree.items
    }

    fn error(text: &str) -> String {
        error_with(text, &opts())
    }

    fn error_with(text: &str, opts: &ReadOptions) -> String {
        match read_str(text, Path::new(FILE), opts) {
            Ok(tree) => panic!("expected an error, got {:?}", tree.items),
            Err(error) => error.to_string(),
        }
    }

    fn warnings(tree: &ConfigTree) -> Vec<String> {
        tree.warnings.iter().map(ToString::to_string).collect()
    }

    fn dir_in(file: &Path, name: &str, args: &[&str], line: u32) -> Item {
        Item::Directive(Directive {
            name: name.to_owned(),
            args: args.iter().map(|arg| (*arg).to_owned()).collect(),
            span: Span::new(file, line),
        })
    }

    fn sec_in(file: &Path, kind: &str, args: &[&str], line: u32, children: Vec<Item>) -> Item {
        Item::Section(Section {
            kind: kind.to_owned(),
            args: args.iter().map(|arg| (*arg).to_owned()).collect(),
            span: Span::new(file, line),
            children,
        })
    }

    fn dir(name: &str, args: &[&str], line: u32) -> Item {
        dir_in(Path::new(FILE), name, args, line)
    }

    fn sec(kind: &str, args: &[&str], line: u32, children: Vec<Item>) -> Item {
        sec_in(Path::new(FILE), kind, args, line, children)
    }

    /// Names of the top-level directives, in order.
    fn names(items: &[Item]) -> Vec<String> {
        items
            .iter()
            .map(|item| match item {
                Item::Directive(directive) => directive.name.clone(),
                Item::Section(section) => format!("<{}>", section.kind),
            })
            .collect()
    }

    fn write(path: &Path, text: &str) {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(path, text).unwrap();
    }

    // ----- the mod_wsgi example ------------------------------------------

    #[test]
    fn mod_wsgi_site_block() {
        let text = "\
WSGIDaemonProcess myapps python-home=/usr/local/venvs/myapps python-path=/a:/b
<VirtualHost *:8080>
    ServerName example.com
    WSGIProcessGroup myapps
    WSGIScriptAlias /myapp3 /some/path/project/myapp3.wsgi
    <Directory /some/path/project>
        Require all granted
    </Directory>
</VirtualHost>
";
        let expected = vec![
            dir(
                "WSGIDaemonProcess",
                &[
                    "myapps",
                    "python-home=/usr/local/venvs/myapps",
                    "python-path=/a:/b",
                ],
                1,
            ),
            sec(
                "VirtualHost",
                &["*:8080"],
                2,
                vec![
                    dir("ServerName", &["example.com"], 3),
                    dir("WSGIProcessGroup", &["myapps"], 4),
                    dir(
                        "WSGIScriptAlias",
                        &["/myapp3", "/some/path/project/myapp3.wsgi"],
                        5,
                    ),
                    sec(
                        "Directory",
                        &["/some/path/project"],
                        6,
                        vec![dir("Require", &["all", "granted"], 7)],
                    ),
                ],
            ),
        ];
        let tree = read(text);
        assert_eq!(tree.items, expected);
        assert_eq!(tree.warnings, vec![]);
        assert_eq!(tree.server_root, PathBuf::from("/nonexistent-wsgi-rs-root"));
    }

    // ----- lines ------------------------------------------------------------

    #[test]
    fn blank_lines_comments_and_whitespace() {
        let text = "\n   \t\n# a comment\n   # indented comment\n  ServerName   a#b  # not a comment  \n\t\n";
        assert_eq!(
            items(text),
            vec![dir("ServerName", &["a#b", "#", "not", "a", "comment"], 5)]
        );
    }

    #[test]
    fn continuation_lines_join_and_keep_the_first_line_number() {
        let text = "Alias /a \\\n    /b\nUser \\\nwww\\\n-data\nGroup x";
        assert_eq!(
            items(text),
            vec![
                dir("Alias", &["/a", "/b"], 1),
                dir("User", &["www-data"], 3),
                dir("Group", &["x"], 6),
            ]
        );
    }

    #[test]
    fn double_backslash_at_end_of_line_is_not_a_continuation() {
        assert_eq!(
            items("Foo a\\\\\nBar"),
            vec![dir("Foo", &["a\\"], 1), dir("Bar", &[], 2)]
        );
    }

    #[test]
    fn continuation_at_end_of_file_is_accepted() {
        assert_eq!(items("Foo a \\"), vec![dir("Foo", &["a"], 1)]);
        assert_eq!(items("Foo a \\\n"), vec![dir("Foo", &["a"], 1)]);
    }

    #[test]
    fn comment_with_continuation_swallows_the_next_line() {
        assert_eq!(
            items("# comment \\\nHidden yes\nShown"),
            vec![dir("Shown", &[], 3)]
        );
    }

    #[test]
    fn crlf_line_endings_and_byte_order_mark() {
        assert_eq!(
            items("\u{feff}ServerName a\r\nListen 80\r\n"),
            vec![dir("ServerName", &["a"], 1), dir("Listen", &["80"], 2)]
        );
    }

    // ----- words ------------------------------------------------------------

    #[test]
    fn quoting_and_escapes_follow_ap_getword_conf() {
        let text = r#"Foo "a b" 'c d' "e \"f\"" 'g\'h' "x\\y" "p\q" a"b c" "" un\\quoted "j"k"#;
        assert_eq!(
            items(text),
            vec![dir(
                "Foo",
                &[
                    "a b",
                    "c d",
                    "e \"f\"",
                    "g'h",
                    "x\\y",
                    "p\\q",
                    "a\"b",
                    "c\"",
                    "",
                    "un\\quoted",
                    "j",
                    "k",
                ],
                1
            )]
        );
    }

    #[test]
    fn quoted_directive_name_and_name_case_is_kept() {
        assert_eq!(
            items("\"Server Name\" x\nservername y"),
            vec![dir("Server Name", &["x"], 1), dir("servername", &["y"], 2)]
        );
    }

    #[test]
    fn unterminated_quote_is_an_error() {
        assert_eq!(
            error("ServerName ok\nSetEnv A \"b c"),
            "site.conf:2: unterminated \" quote: add the closing \""
        );
        assert_eq!(
            error("<Directory '/x>"),
            "site.conf:1: unterminated ' quote: add the closing '"
        );
    }

    // ----- sections -----------------------------------------------------------

    #[test]
    fn sections_nest_and_close_case_insensitively() {
        let text = "\
<directory \"/x y\">
  <FilesMatch \"\\.wsgi$\">
    SetHandler wsgi-script
  </filesmatch>
</DIRECTORY>
<Location>
</Location >
<LocationMatch ^/app>
</LocationMatch>
<If \"%{HTTP_HOST} > 'a'\">
</If>
<Frobnicate a b>
  <Proxy *>
  </Proxy>
</Frobnicate>
";
        assert_eq!(
            items(text),
            vec![
                sec(
                    "directory",
                    &["/x y"],
                    1,
                    vec![sec(
                        "FilesMatch",
                        &["\\.wsgi$"],
                        2,
                        vec![dir("SetHandler", &["wsgi-script"], 3)]
                    )]
                ),
                sec("Location", &[], 6, vec![]),
                sec("LocationMatch", &["^/app"], 8, vec![]),
                sec("If", &["%{HTTP_HOST} > 'a'"], 10, vec![]),
                sec(
                    "Frobnicate",
                    &["a", "b"],
                    12,
                    vec![sec("Proxy", &["*"], 13, vec![])]
                ),
            ]
        );
    }

    #[test]
    fn text_after_closing_bracket_is_ignored_with_a_warning() {
        let tree = read("<Directory /x> junk\n</Directory> more");
        assert_eq!(tree.items, vec![sec("Directory", &["/x"], 1, vec![])]);
        assert_eq!(
            warnings(&tree),
            vec![
                "site.conf:1: text after '>' ignored: `junk`",
                "site.conf:2: text after '>' ignored: `more`",
            ]
        );
    }

    #[test]
    fn unclosed_section_is_an_error() {
        assert_eq!(
            error("Listen 80\n\n<VirtualHost *:80>\nServerName a\n"),
            "site.conf:3: <VirtualHost> section opened here was never closed: add </VirtualHost>"
        );
    }

    #[test]
    fn innermost_unclosed_section_is_reported() {
        assert_eq!(
            error("<VirtualHost *>\n<Directory /x>\n</VirtualHost>"),
            "site.conf:3: </VirtualHost> does not match the open <Directory> section (opened at site.conf:2): close <Directory> with </Directory> first"
        );
        assert_eq!(
            error("<VirtualHost *>\n<Directory /x>\n"),
            "site.conf:2: <Directory> section opened here was never closed: add </Directory>"
        );
    }

    #[test]
    fn stray_closing_tag_is_an_error() {
        assert_eq!(
            error("ServerName a\n</Directory>"),
            "site.conf:2: </Directory> closes no open section: remove it or add the matching <Directory> before it"
        );
    }

    #[test]
    fn tags_without_closing_bracket_are_errors() {
        assert_eq!(
            error("<VirtualHost *:80\n</VirtualHost>"),
            "site.conf:1: <VirtualHost has no closing '>': end the tag with '>'"
        );
        assert_eq!(
            error("<VirtualHost *:80>\n</VirtualHost"),
            "site.conf:2: </VirtualHost has no closing '>': end the tag with '>'"
        );
    }

    #[test]
    fn empty_section_name_is_an_error() {
        assert_eq!(
            error("< Directory /x>"),
            "site.conf:1: '<' is not followed by a section name: write <Name arguments> or remove the line"
        );
        assert_eq!(
            error("ServerName a\n<>"),
            "site.conf:2: '<' is not followed by a section name: write <Name arguments> or remove the line"
        );
    }

    #[test]
    fn lone_angle_bracket_is_an_empty_section_name() {
        assert_eq!(
            error("<"),
            "site.conf:1: '<' is not followed by a section name: write <Name arguments> or remove the line"
        );
    }

    #[test]
    fn section_nesting_is_limited() {
        let nested = |levels: usize| {
            let mut text = String::new();
            for _ in 0..levels {
                text.push_str("<Location />\n");
            }
            for _ in 0..levels {
                text.push_str("</Location>\n");
            }
            text
        };
        assert_eq!(read(&nested(MAX_SECTION_DEPTH)).items.len(), 1);
        assert_eq!(
            error(&nested(MAX_SECTION_DEPTH + 1)),
            "site.conf:129: <Location> is nested deeper than 128 sections: flatten the configuration"
        );

        // The limit counts the sections around an Include as well.
        let temp = tempfile::tempdir().unwrap();
        write(
            &temp.path().join("inner.conf"),
            "<Directory /x>\n</Directory>\n",
        );
        let opts = ReadOptions {
            server_root: Some(temp.path().to_path_buf()),
            ..ReadOptions::default()
        };
        let mut text = "<Location />\n".repeat(MAX_SECTION_DEPTH);
        text.push_str("Include inner.conf\n");
        text.push_str(&"</Location>\n".repeat(MAX_SECTION_DEPTH));
        assert_eq!(
            error_with(&text, &opts),
            format!(
                "{}:1: <Directory> is nested deeper than 128 sections: flatten the configuration",
                temp.path().join("inner.conf").display()
            )
        );
    }

    // ----- Define and ${NAME} ---------------------------------------------

    #[test]
    fn define_expands_in_names_args_and_section_args() {
        let text = "\
Define PORT 8080
Define DIR \"/srv/my app\"
Define VERB ServerName
<VirtualHost *:${PORT}>
  ${VERB} x${PORT}y
  <Directory \"${DIR}\">
  </Directory>
</VirtualHost>
";
        assert_eq!(
            items(text),
            vec![
                dir("Define", &["PORT", "8080"], 1),
                dir("Define", &["DIR", "/srv/my app"], 2),
                dir("Define", &["VERB", "ServerName"], 3),
                sec(
                    "VirtualHost",
                    &["*:8080"],
                    4,
                    vec![
                        dir("ServerName", &["x8080y"], 5),
                        sec("Directory", &["/srv/my app"], 6, vec![]),
                    ]
                ),
            ]
        );
    }

    #[test]
    fn expansion_happens_before_splitting_words() {
        assert_eq!(
            items("Define ARGS \"a b\"\nFoo ${ARGS}"),
            vec![
                dir("Define", &["ARGS", "a b"], 1),
                dir("Foo", &["a", "b"], 2)
            ]
        );
    }

    #[test]
    fn expansion_uses_options_then_defines_then_environment() {
        let path = std::env::var("PATH").expect("PATH is set when tests run");
        let opts = ReadOptions {
            defines: vec![
                ("FROM_CLI".to_owned(), Some("cli".to_owned())),
                ("PATH".to_owned(), Some("overridden".to_owned())),
            ],
            ..opts()
        };
        let tree = read_with("A ${FROM_CLI} ${PATH}\nUnDefine PATH\nB ${PATH}", &opts);
        assert_eq!(
            tree.items,
            vec![
                dir("A", &["cli", "overridden"], 1),
                dir("UnDefine", &["PATH"], 2),
                dir("B", &[path.as_str()], 3),
            ]
        );
    }

    #[test]
    fn undefined_variable_is_left_as_written_with_a_warning() {
        let tree = read("Define NOVALUE\nFoo ${NOVALUE} ${WSGI_RS_SURELY_UNDEFINED_X} ${unclosed");
        assert_eq!(
            tree.items,
            vec![
                dir("Define", &["NOVALUE"], 1),
                dir(
                    "Foo",
                    &["${NOVALUE}", "${WSGI_RS_SURELY_UNDEFINED_X}", "${unclosed"],
                    2
                ),
            ]
        );
        assert_eq!(
            warnings(&tree),
            vec![
                "site.conf:2: ${NOVALUE} is not defined: left as written",
                "site.conf:2: ${WSGI_RS_SURELY_UNDEFINED_X} is not defined: left as written",
            ]
        );
    }

    #[test]
    fn undefined_reference_resumes_scanning_after_its_dollar() {
        let tree = read("Define B b\nFoo ${A${B}");
        assert_eq!(tree.items[1], dir("Foo", &["${Ab"], 2));
        assert_eq!(
            warnings(&tree),
            vec!["site.conf:2: ${A${B} is not defined: left as written"]
        );
    }

    #[test]
    fn define_and_undefine_argument_errors() {
        assert_eq!(
            error("Define A b c"),
            "site.conf:1: Define takes one or two arguments, got 3: write `Define NAME [value]`"
        );
        assert_eq!(
            error("\ndefine"),
            "site.conf:2: define takes one or two arguments, got 0: write `Define NAME [value]`"
        );
        assert_eq!(
            error("UnDefine"),
            "site.conf:1: UnDefine takes exactly one name, got 0: write `UnDefine NAME`"
        );
        assert_eq!(
            error("Define a:b 1"),
            "site.conf:1: variable name `a:b` contains ':': choose a name without ':'"
        );
        assert_eq!(
            error("UnDefine x:"),
            "site.conf:1: variable name `x:` contains ':': choose a name without ':'"
        );
    }

    #[test]
    fn overlong_expansion_is_an_error() {
        let big = "x".repeat(9 * 1024 * 1024);
        let opts = ReadOptions {
            defines: vec![("BIG".to_owned(), Some(big))],
            ..opts()
        };
        let message = error_with("Foo ok\nFoo ${BIG}${BIG}", &opts);
        assert_eq!(
            message,
            "site.conf:2: line is 18874372 bytes after ${NAME} expansion, over the 16 MiB limit: shorten the line or the variables it uses"
        );
    }

    // ----- conditionals -----------------------------------------------------

    #[test]
    fn ifdefine_from_options_define_and_negation() {
        let opts = ReadOptions {
            defines: vec![("CLI".to_owned(), None)],
            ..opts()
        };
        let text = "\
<IfDefine CLI>
  A
</IfDefine>
<IfDefine !CLI>
  B
</IfDefine>
<IfDefine LATER>
  C
</IfDefine>
Define LATER
<ifdefine LATER>
  D
  <IfDefine !NOPE>
    E
  </IfDefine>
</IFDEFINE>
UnDefine LATER
<IfDefine !LATER>
  F
</IfDefine>
<IfDefine cli>
  G
</IfDefine>
";
        let tree = read_with(text, &opts);
        assert_eq!(
            names(&tree.items),
            vec!["A", "Define", "D", "E", "UnDefine", "F"]
        );
        assert_eq!(tree.items[2], dir("D", &[], 12));
    }

    #[test]
    fn skipped_conditional_contents_are_not_evaluated() {
        let text = "\
<IfDefine NOPE>
  Include /definitely/missing.conf
  Define SHOULD_NOT_EXIST 1
  Bad \"quote
  ${UNDEFINED_IN_SKIPPED}
  <VirtualHost *
    <Directory /x>
    </Directory>
  </VirtualHost>
  <IfDefine !NOPE>
    Inner
  </IfDefine>
</IfDefine>
<IfDefine SHOULD_NOT_EXIST>
  Hidden
</IfDefine>
Shown
";
        assert_eq!(items(text), vec![dir("Shown", &[], 17)]);
    }

    #[test]
    fn skipped_conditional_still_needs_balanced_tags() {
        assert_eq!(
            error("<IfDefine NOPE>\n<Directory /x>\n</Location>\n</IfDefine>"),
            "site.conf:3: </Location> does not match the open <Directory> section (opened at site.conf:2): close <Directory> with </Directory> first"
        );
        assert_eq!(
            error("Listen 80\n<IfDefine NOPE>\n<Directory /x>\n"),
            "site.conf:3: <Directory> section opened here was never closed: add </Directory>"
        );
    }

    #[test]
    fn conditional_inside_section_splices_into_it() {
        let text = "\
<VirtualHost *:80>
  <IfModule mod_wsgi.c>
    WSGIProcessGroup g
  </IfModule>
  <IfModule !mod_wsgi.c>
    Alias / /fallback
  </IfModule>
</VirtualHost>
";
        assert_eq!(
            items(text),
            vec![sec(
                "VirtualHost",
                &["*:80"],
                1,
                vec![dir("WSGIProcessGroup", &["g"], 3)]
            )]
        );
    }

    #[test]
    fn ifmodule_builtins_loadmodule_options_and_wsgi() {
        let opts = ReadOptions {
            loaded_modules: vec!["headers_module".to_owned()],
            ..opts()
        };
        let text = "\
<IfModule mod_proxy.c>
  P1
</IfModule>
LoadModule proxy_module modules/mod_proxy.so
<IfModule mod_proxy.c>
  P2
</IfModule>
<IfModule proxy_module>
  P3
</IfModule>
<IfModule core.c>
  Core
</IfModule>
<IfModule log_config_module>
  Log
</IfModule>
<IfModule headers_module>
  Headers
</IfModule>
<IfModule wsgi_module>
  W1
</IfModule>
<IfModule mod_wsgi_rs.c>
  W2
</IfModule>
<IfModule !mod_ssl.c>
  NoSsl
</IfModule>
<IfModule mod_ssl.c>
  Ssl
</IfModule>
<IfModule MOD_PROXY.C>
  CaseMatters
</IfModule>
";
        assert_eq!(
            names(&read_with(text, &opts).items),
            vec![
                "LoadModule",
                "P2",
                "P3",
                "Core",
                "Log",
                "Headers",
                "W1",
                "W2",
                "NoSsl"
            ]
        );
    }

    #[test]
    fn loadmodule_also_registers_the_shared_object_name() {
        assert_eq!(
            names(&items(
                "LoadModule php7_module modules/libphp7.so\n<IfModule libphp7.c>\nPhp\n</IfModule>\n<IfModule mod_php7.c>\nPhp2\n</IfModule>"
            )),
            vec!["LoadModule", "Php", "Php2"]
        );
    }

    #[test]
    fn ifversion_compares_against_2_4() {
        let text = "\
<IfVersion >= 2.4>
  Ge24
</IfVersion>
<IfVersion < 2.4>
  Lt24
</IfVersion>
<IfVersion > 2.2.31>
  Gt22
</IfVersion>
<IfVersion = 2.4>
  Eq240
</IfVersion>
<IfVersion 2.4.62>
  Exact
</IfVersion>
<IfVersion != 2.2>
  Ne22
</IfVersion>
<IfVersion ~ ^2\\.4\\.>
  Regex
</IfVersion>
<IfVersion = /^3/>
  Three
</IfVersion>
<IfVersion !~ ^2>
  NotTwo
</IfVersion>
<IfVersion <= 2.4.62>
  Le
</IfVersion>
";
        assert_eq!(
            names(&items(text)),
            vec!["Ge24", "Gt22", "Exact", "Ne22", "Regex", "Le"]
        );
    }

    #[test]
    fn ifversion_that_cannot_be_parsed_is_true_with_a_warning() {
        let tree = read(
            "<IfVersion >= two>\nA\n</IfVersion>\n<IfVersion <> 2>\nB\n</IfVersion>\n<IfVersion ~ (>\nC\n</IfVersion>",
        );
        assert_eq!(names(&tree.items), vec!["A", "B", "C"]);
        let messages = warnings(&tree);
        assert_eq!(
            messages[..2],
            [
                "site.conf:1: <IfVersion> condition not understood (version `two` is not major[.minor[.patch]]): treated as true",
                "site.conf:4: <IfVersion> condition not understood (unknown operator `<>`): treated as true",
            ]
        );
        assert!(
            messages[2].starts_with(
                "site.conf:7: <IfVersion> condition not understood (invalid regex `(`: "
            ),
            "{}",
            messages[2]
        );
        assert_eq!(messages.len(), 3);
    }

    #[test]
    fn iffile_is_relative_to_server_root() {
        let temp = tempfile::tempdir().unwrap();
        write(&temp.path().join("present.txt"), "");
        let opts = ReadOptions {
            server_root: Some(temp.path().to_path_buf()),
            ..ReadOptions::default()
        };
        let absolute = temp.path().join("present.txt");
        let text = format!(
            "<IfFile present.txt>\nA\n</IfFile>\n<IfFile missing.txt>\nB\n</IfFile>\n<IfFile !missing.txt>\nC\n</IfFile>\n<IfFile \"{}\">\nD\n</IfFile>",
            absolute.display()
        );
        assert_eq!(names(&read_with(&text, &opts).items), vec!["A", "C", "D"]);
    }

    #[test]
    fn ifdirective_and_ifsection() {
        let text = "\
<IfDirective ServerName>
  A
</IfDirective>
<IfDirective wsgiScriptAlias>
  B
</IfDirective>
<IfDirective Frobnicate>
  C
</IfDirective>
<IfDirective !Frobnicate>
  D
</IfDirective>
<IfSection VirtualHost>
  E
</IfSection>
<IfSection Proxy>
  F
</IfSection>
LoadModule proxy_module modules/mod_proxy.so
<IfSection proxy>
  G
</IfSection>
";
        assert_eq!(
            names(&items(text)),
            vec!["A", "B", "D", "E", "LoadModule", "G"]
        );
    }

    #[test]
    fn conditional_without_argument_is_an_error() {
        assert_eq!(
            error("<IfDefine>\n</IfDefine>"),
            "site.conf:1: <IfDefine> needs an argument: write <IfDefine NAME>, or <IfDefine !NAME> to negate"
        );
        assert_eq!(
            error("\n<ifmodule !>\n</ifmodule>"),
            "site.conf:2: <ifmodule> needs an argument: write <ifmodule NAME>, or <ifmodule !NAME> to negate"
        );
        assert_eq!(
            error("<IfVersion >\n</IfVersion>"),
            "site.conf:1: <IfVersion> needs an argument: write <IfVersion NAME>, or <IfVersion !NAME> to negate"
        );
    }

    #[test]
    fn extra_condition_arguments_are_ignored_with_a_warning() {
        let tree = read("Define A\n<IfDefine A B C>\nX\n</IfDefine>");
        assert_eq!(names(&tree.items), vec!["Define", "X"]);
        assert_eq!(
            warnings(&tree),
            vec!["site.conf:2: <IfDefine> uses only its first argument: ignored `B C`"]
        );
    }

    // ----- ServerRoot and Include ------------------------------------------

    #[test]
    fn include_globs_nested_includes_sections_and_server_root() {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path();
        let main = root.join("httpd.conf");
        write(
            &main,
            "\
ServerName main
Include conf.d/*.conf
<VirtualHost *:8080>
    Include vhost/app.conf
</VirtualHost>
IncludeOptional optional.d/*.conf
IncludeOptional nothing-here.conf
ServerRoot other
Include sub.conf
",
        );
        write(&root.join("conf.d/20-second.conf"), "Listen 81\n");
        write(
            &root.join("conf.d/10-first.conf"),
            "Listen 80\n\nInclude nested/inner.conf\n",
        );
        write(&root.join("conf.d/.hidden.conf"), "Hidden yes\n");
        write(&root.join("conf.d/readme.txt"), "NotConf yes\n");
        write(&root.join("nested/inner.conf"), "# inner\nUser www\n");
        write(
            &root.join("vhost/app.conf"),
            "WSGIScriptAlias / /app.wsgi\n<Directory /app>\nRequire all granted\n</Directory>\n",
        );
        write(&root.join("other/sub.conf"), "Group www\n");

        let tree = read_file(&main, &ReadOptions::default()).unwrap();
        let first = root.join("conf.d/10-first.conf");
        let second = root.join("conf.d/20-second.conf");
        let inner = root.join("nested/inner.conf");
        let app = root.join("vhost/app.conf");
        let sub = root.join("other/sub.conf");
        assert_eq!(
            tree.items,
            vec![
                dir_in(&main, "ServerName", &["main"], 1),
                dir_in(&first, "Listen", &["80"], 1),
                dir_in(&inner, "User", &["www"], 2),
                dir_in(&second, "Listen", &["81"], 1),
                sec_in(
                    &main,
                    "VirtualHost",
                    &["*:8080"],
                    3,
                    vec![
                        dir_in(&app, "WSGIScriptAlias", &["/", "/app.wsgi"], 1),
                        sec_in(
                            &app,
                            "Directory",
                            &["/app"],
                            2,
                            vec![dir_in(&app, "Require", &["all", "granted"], 3)]
                        ),
                    ]
                ),
                dir_in(&main, "ServerRoot", &["other"], 8),
                dir_in(&sub, "Group", &["www"], 1),
            ]
        );
        assert_eq!(tree.server_root, root.join("other"));
        assert_eq!(tree.warnings, vec![]);
    }

    #[test]
    fn include_wildcards_in_directory_parts_and_whole_directories() {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path();
        write(&root.join("sites/b/app.conf"), "B\n");
        write(&root.join("sites/a/app.conf"), "A\n");
        write(&root.join("sites/c/other.conf"), "C\n");
        write(&root.join("sites/.d/app.conf"), "Dot\n");
        write(&root.join("whole/z.conf"), "Z\n");
        write(&root.join("whole/a.conf"), "WA\n");
        write(&root.join("whole/.dot"), "WDot\n");
        write(&root.join("whole/sub/m.conf"), "WM\n");
        let opts = ReadOptions {
            server_root: Some(root.to_path_buf()),
            ..ReadOptions::default()
        };
        let absolute = format!("Include {}/sites/*/app.conf\n", root.display());
        let text =
            format!("Include sites/*/app.conf\n{absolute}Include whole\nInclude sites/[ab]\n");
        let tree = read_with(&text, &opts);
        assert_eq!(
            names(&tree.items),
            vec!["A", "B", "A", "B", "WDot", "WA", "WM", "Z", "A", "B"]
        );
        assert_eq!(
            tree.items[6].span(),
            &Span::new(root.join("whole/sub/m.conf"), 1)
        );
    }

    #[test]
    fn include_errors() {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path();
        write(&root.join("a.conf"), "A\n");
        let opts = ReadOptions {
            server_root: Some(root.to_path_buf()),
            ..ReadOptions::default()
        };
        let shown = root.display();
        assert_eq!(
            error_with("Listen 80\nInclude missing.conf", &opts),
            format!(
                "site.conf:2: included file {shown}/missing.conf does not exist: fix the path, or use IncludeOptional if it may be missing"
            )
        );
        assert_eq!(
            error_with("Include conf.d/*.conf", &opts),
            format!(
                "site.conf:1: no matches for the wildcard {shown}/conf.d/*.conf: fix the pattern, or use IncludeOptional if nothing may match"
            )
        );
        assert_eq!(
            error_with("Include *.none", &opts),
            format!(
                "site.conf:1: no matches for the wildcard {shown}/*.none: fix the pattern, or use IncludeOptional if nothing may match"
            )
        );
        assert_eq!(
            error_with("Include x[]y.conf", &opts),
            "site.conf:1: invalid wildcard `x[]y.conf` (invalid range pattern): fix the pattern"
        );
        assert_eq!(
            error_with("Include", &opts),
            "site.conf:1: Include takes exactly one path, got 0: write `Include path`"
        );
        assert_eq!(
            error_with("IncludeOptional a b", &opts),
            "site.conf:1: IncludeOptional takes exactly one path, got 2: write `IncludeOptional path`"
        );
        assert_eq!(
            error_with("ServerRoot", &opts),
            "site.conf:1: ServerRoot takes exactly one path, got 0: write `ServerRoot /path`"
        );
        assert_eq!(
            error_with("Include a.conf/x", &opts),
            format!(
                "site.conf:1: cannot read {shown}/a.conf/x: Not a directory (os error 20): check that it exists and is readable"
            )
        );
    }

    #[test]
    fn sections_do_not_span_included_files() {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path();
        write(&root.join("open.conf"), "\n<VirtualHost *>\n");
        write(&root.join("close.conf"), "</VirtualHost>\n");
        let opts = ReadOptions {
            server_root: Some(root.to_path_buf()),
            ..ReadOptions::default()
        };
        let shown = root.display();
        assert_eq!(
            error_with("Include open.conf\n</VirtualHost>", &opts),
            format!(
                "{shown}/open.conf:2: <VirtualHost> section opened here was never closed: add </VirtualHost>"
            )
        );
        assert_eq!(
            error_with("<VirtualHost *>\nInclude close.conf\n</VirtualHost>", &opts),
            format!(
                "{shown}/close.conf:1: </VirtualHost> closes no open section: remove it or add the matching <VirtualHost> before it"
            )
        );
    }

    #[test]
    fn include_loops_are_errors() {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path();
        write(&root.join("a.conf"), "A\nInclude b.conf\n");
        write(&root.join("b.conf"), "B\nInclude a.conf\n");
        write(&root.join("self.conf"), "Include *.conf\n");
        let shown = root.display();
        let error = read_file(&root.join("a.conf"), &ReadOptions::default()).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "{shown}/b.conf:2: include loop: {shown}/a.conf is already being read: remove the Include that leads back to it"
            )
        );
        assert_eq!(error.span(), &Span::new(root.join("b.conf"), 2));
        assert_eq!(
            read_file(&root.join("self.conf"), &ReadOptions::default())
                .unwrap_err()
                .to_string(),
            format!(
                "{shown}/b.conf:2: include loop: {shown}/a.conf is already being read: remove the Include that leads back to it"
            )
        );
        let opts = ReadOptions {
            server_root: Some(root.to_path_buf()),
            ..ReadOptions::default()
        };
        let via_str = read_str("Include self.conf", &root.join("top.conf"), &opts).unwrap_err();
        assert_eq!(
            via_str.to_string(),
            format!(
                "{shown}/b.conf:2: include loop: {shown}/a.conf is already being read: remove the Include that leads back to it"
            )
        );
    }

    #[cfg(unix)]
    #[test]
    fn directory_include_loops_through_symlinks_are_errors() {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path();
        write(&root.join("conf/a.conf"), "A\n");
        std::os::unix::fs::symlink(root.join("conf"), root.join("conf/self")).unwrap();
        let opts = ReadOptions {
            server_root: Some(root.to_path_buf()),
            ..ReadOptions::default()
        };
        assert_eq!(
            error_with("Include conf", &opts),
            format!(
                "site.conf:1: include loop: {}/conf/self is already being read: remove the Include that leads back to it",
                root.display()
            )
        );
    }

    #[test]
    fn include_depth_is_limited_to_64() {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path();
        let file = |i: usize| root.join(format!("f{i}.conf"));
        for i in 0..=MAX_INCLUDE_DEPTH + 1 {
            write(&file(i), &format!("Level{i}\nInclude f{}.conf\n", i + 1));
        }
        // f65 includes f66, which does not exist; cut the chain at 64 first.
        write(&file(MAX_INCLUDE_DEPTH), "Level64\n");
        let tree = read_file(&file(0), &ReadOptions::default()).unwrap();
        assert_eq!(tree.items.len(), MAX_INCLUDE_DEPTH + 1);
        assert_eq!(tree.items[64], dir_in(&file(64), "Level64", &[], 1));

        write(&file(MAX_INCLUDE_DEPTH), "Level64\nInclude f65.conf\n");
        write(&file(MAX_INCLUDE_DEPTH + 1), "Level65\n");
        assert_eq!(
            read_file(&file(0), &ReadOptions::default())
                .unwrap_err()
                .to_string(),
            format!(
                "{}:2: includes nested deeper than 64 levels at {}: flatten the Include chain",
                file(64).display(),
                file(65).display()
            )
        );
    }

    #[test]
    fn unreadable_top_level_file_is_an_error() {
        let temp = tempfile::tempdir().unwrap();
        let missing = temp.path().join("missing.conf");
        let error = read_file(&missing, &ReadOptions::default()).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "{0}:0: cannot read {0}: No such file or directory (os error 2): check that it exists and is readable",
                missing.display()
            )
        );
        assert!(matches!(error, ReadError::Unreadable { .. }));
    }

    #[test]
    fn read_file_defaults_server_root_to_its_directory() {
        let temp = tempfile::tempdir().unwrap();
        let main = temp.path().join("etc/httpd.conf");
        write(&main, "Include extra.conf\n");
        write(&temp.path().join("etc/extra.conf"), "Extra\n");
        let tree = read_file(&main, &ReadOptions::default()).unwrap();
        assert_eq!(tree.server_root, temp.path().join("etc"));
        assert_eq!(
            tree.items,
            vec![dir_in(&temp.path().join("etc/extra.conf"), "Extra", &[], 1)]
        );
    }

    #[test]
    fn read_str_defaults_server_root_to_the_parent_of_file() {
        let tree = read_str(
            "A",
            Path::new("/etc/apache2/apache2.conf"),
            &ReadOptions::default(),
        )
        .unwrap();
        assert_eq!(tree.server_root, PathBuf::from("/etc/apache2"));
        let tree = read_str("A", Path::new("bare.conf"), &ReadOptions::default()).unwrap();
        assert_eq!(tree.server_root, std::env::current_dir().unwrap());
    }

    #[test]
    fn invalid_utf8_is_decoded_lossily_with_a_warning() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("latin1.conf");
        fs::write(&path, b"ServerName ok\nServerAlias caf\xe9\n").unwrap();
        let tree = read_file(&path, &ReadOptions::default()).unwrap();
        assert_eq!(
            tree.items,
            vec![
                dir_in(&path, "ServerName", &["ok"], 1),
                dir_in(&path, "ServerAlias", &["caf\u{fffd}"], 2),
            ]
        );
        assert_eq!(
            warnings(&tree),
            vec![format!(
                "{}:2: invalid UTF-8 replaced with U+FFFD",
                path.display()
            )]
        );
    }

    #[test]
    fn span_and_warning_display() {
        assert_eq!(Span::new("/etc/x.conf", 7).to_string(), "/etc/x.conf:7");
        let warning = ReadWarning {
            span: Span::new("a.conf", 2),
            message: "m".to_owned(),
        };
        assert_eq!(warning.to_string(), "a.conf:2: m");
    }

    // ----- robustness ---------------------------------------------------------

    const TOKENS: &[&str] = &[
        "<VirtualHost",
        "<VirtualHost *:80>",
        "</VirtualHost>",
        "<Directory",
        "</Directory>",
        "<IfDefine",
        "<IfDefine !X>",
        "</IfDefine>",
        "<IfModule",
        "</IfModule>",
        "<IfVersion",
        "<IfFile",
        "<IfSection",
        "<IfDirective",
        "</IfVersion>",
        "<",
        "</",
        ">",
        "!",
        "\"",
        "'",
        "\\",
        "\\\n",
        "\\\\",
        "\n",
        "\r\n",
        " ",
        "\t",
        "#",
        "${X}",
        "${",
        "}",
        "$",
        "Define",
        "UnDefine",
        "X",
        "Include",
        "IncludeOptional",
        "nothere.conf",
        "*.none",
        "[a]",
        "ServerRoot",
        "sub",
        "LoadModule",
        "x_module",
        "mod_x.so",
        "~",
        ">=",
        "2.4",
        "/^2/",
        "é",
        "\u{feff}",
    ];

    fn token_soup() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(TOKENS), 0..40).prop_map(|tokens| {
            let mut text = String::new();
            for token in tokens {
                let _ = write!(text, "{token}");
            }
            text
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn never_panics_on_arbitrary_text(text in any::<String>()) {
            let _ = read_str(&text, Path::new("/nonexistent-wsgi-rs-root/p.conf"), &opts());
        }

        #[test]
        fn never_panics_on_config_like_tokens(text in token_soup()) {
            let result = read_str(&text, Path::new("/nonexistent-wsgi-rs-root/p.conf"), &opts());
            if let Err(error) = result {
                // Every error names the file and a line inside the text.
                let lines = u32::try_from(text.split('\n').count()).unwrap_or(u32::MAX);
                prop_assert!(error.span().line >= 1 && error.span().line <= lines);
                prop_assert!(error.to_string().starts_with("/nonexistent-wsgi-rs-root/p.conf:"));
            }
        }
    }
}

/// Splits a directive's argument text into words as Apache's `ap_getword_conf` does (quotes
/// group words, `\"` escapes inside them), for callers that receive raw argument text (Apache's
/// own directive callbacks). An unterminated quote is an error naming the quote character.
pub fn split_arguments(text: &str) -> Result<Vec<String>, String> {
    lexer::split_words(text)
        .map_err(|quote| format!("unterminated {quote} quote: add the closing {quote}"))
}

#[cfg(test)]
mod split_arguments_tests {
    use super::split_arguments;

    #[test]
    fn words_and_quotes() {
        assert_eq!(
            split_arguments(r#"/app "/srv/my app.wsgi" process-group=x"#).unwrap(),
            vec!["/app", "/srv/my app.wsgi", "process-group=x"]
        );
        assert_eq!(
            split_arguments(r#""open"#).unwrap_err(),
            r#"unterminated " quote: add the closing ""#
        );
    }
}
