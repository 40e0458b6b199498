//! Configuration errors and warnings: each carries `file:line`, the directive it is about,
//! what is wrong and how to fix it.

use std::fmt;
use std::path::PathBuf;

use crate::reader::{ReadError, Span};

/// A configuration error: the configuration is refused.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// Where the offending directive is, when it came from a file.
    pub span: Option<Span>,
    /// The directive, with the daemon group name for `WSGIDaemonProcess`
    /// (`WSGIDaemonProcess myapp`).
    pub subject: String,
    /// What is wrong, with the fix.
    pub kind: ErrorKind,
}

impl ConfigError {
    /// An error about `subject` at `span`.
    pub fn new(span: Option<&Span>, subject: impl Into<String>, kind: ErrorKind) -> Self {
        ConfigError {
            span: span.cloned(),
            subject: subject.into(),
            kind,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(span) = &self.span {
            write!(f, "{span}: ")?;
        }
        if self.subject.is_empty() {
            write!(f, "{}", self.kind)
        } else {
            write!(f, "{}: {}", self.subject, self.kind)
        }
    }
}

impl std::error::Error for ConfigError {}

impl From<ReadError> for ConfigError {
    fn from(error: ReadError) -> Self {
        let span = error.span().clone();
        ConfigError {
            span: None,
            subject: String::new(),
            kind: ErrorKind::Read {
                span,
                message: error.to_string(),
            },
        }
    }
}

/// What is wrong with a directive. Every message ends with how to fix it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The configuration text could not be read (syntax, includes).
    #[error("{message}")]
    Read {
        /// Where the reader stopped.
        span: Span,
        /// The reader's message, with its own `file:line`.
        message: String,
    },
    /// A `WSGI*` directive that mod_wsgi does not have.
    #[error("unknown mod_wsgi directive{}", suggestion_text(.suggestion))]
    UnknownDirective {
        /// The closest known directive name.
        suggestion: Option<&'static str>,
    },
    /// A directive inside `<WSGIInterpreterOptions>` that cannot apply to just the
    /// interpreters the section selects.
    #[error("cannot be set per interpreter inside <WSGIInterpreterOptions>: {why}")]
    NotPerInterpreter {
        /// Why, and what to do instead.
        why: String,
    },
    /// A directive used where Apache does not allow it.
    #[error("cannot occur within {inside}: {fix}")]
    WrongContext {
        /// The enclosing section, such as `<VirtualHost> section`.
        inside: String,
        /// Where it may go instead, and why.
        fix: String,
    },
    /// Too few or too many arguments.
    #[error("{problem}: the syntax is `{usage}`")]
    Arguments {
        /// "takes one argument" and the like.
        problem: String,
        /// The directive's syntax.
        usage: &'static str,
    },
    /// A flag that is not `On` or `Off`.
    #[error("`{value}` is not a valid value: use {allowed}")]
    BadFlag {
        /// The value given.
        value: String,
        /// `On or Off`, or `On, Off or Auto`.
        allowed: &'static str,
    },
    /// A `name=value` option that the directive does not have.
    #[error(
        "unknown option `{option}`{}: valid options are {}",
        suggestion_text(.suggestion),
        .valid.join(", ")
    )]
    UnknownOption {
        /// The option name as written.
        option: String,
        /// The closest valid option.
        suggestion: Option<&'static str>,
        /// Every valid option.
        valid: Vec<&'static str>,
    },
    /// A word where a `name=value` option was expected.
    #[error(
        "`{word}` is not an option: options are written `name=value`, with no spaces around `=`"
    )]
    NotAnOption {
        /// The word as written.
        word: String,
    },
    /// An option or argument with a value out of range or of the wrong form.
    #[error("{option}=`{value}` is not valid: {expected}")]
    BadValue {
        /// The option or argument name.
        option: String,
        /// The value as written.
        value: String,
        /// What is accepted.
        expected: String,
    },
    /// `SSLEngine on` for a host with no certificate.
    #[error(
        "`SSLEngine on` needs a certificate for this host (Apache refuses to start without one): add `SSLCertificateFile /path/to/cert.pem` and `SSLCertificateKeyFile /path/to/key.pem` beside it, or in the main server for every host"
    )]
    NoCertificate,
    /// A mandatory option is missing.
    #[error("the `{option}=` option is required: {fix}")]
    MissingOption {
        /// The option.
        option: &'static str,
        /// How to write it.
        fix: &'static str,
    },
    /// Two daemon process groups with one name.
    #[error(
        "a daemon process group named `{name}` is already defined at {first}: daemon group names are unique across the whole server; rename one of them"
    )]
    DuplicateDaemonGroup {
        /// The name.
        name: String,
        /// The first definition.
        first: Span,
    },
    /// An option given twice where only one is allowed.
    #[error("{option} is given more than once (`{first}` and `{second}`): {fix}")]
    DuplicateOption {
        /// The option.
        option: &'static str,
        /// The first value.
        first: String,
        /// The second value.
        second: String,
        /// Why only one is allowed and what to do instead.
        fix: &'static str,
    },
    /// `python-home` names the venv's python executable or another folder inside it.
    #[error(
        "python-home=`{value}` is {what}, not its root (the folder holding bin/ and lib/, what `python -c 'import sys; print(sys.prefix)'` prints): use {}",
        .root.display()
    )]
    PythonHomeNotRoot {
        /// The value as written.
        value: String,
        /// "the virtual environment's python executable", "... site-packages folder".
        what: &'static str,
        /// The venv root to use instead.
        root: PathBuf,
    },
    /// A path that must be absolute is not.
    #[error("{what}=`{value}` must be an absolute path (starting with /): {fix}")]
    RelativePath {
        /// What the path is for.
        what: &'static str,
        /// The value.
        value: String,
        /// What to write.
        fix: &'static str,
    },
    /// A process group that no `WSGIDaemonProcess` defines.
    #[error(
        "no daemon process group named `{name}` is defined{}: add `WSGIDaemonProcess {name}` at the server level or in this virtual host, or fix the name",
        defined_text(.defined)
    )]
    UndefinedProcessGroup {
        /// The name used.
        name: String,
        /// The groups that are defined, with where.
        defined: Vec<String>,
    },
    /// A process group defined in a virtual host with another `ServerName`.
    #[error(
        "daemon process group `{name}` is defined inside the <VirtualHost> at {defined_at} (ServerName {group_server}), so only requests to that ServerName may use it, and this one is for {here_server}: define the group at the server level, outside any <VirtualHost>, to share it"
    )]
    InaccessibleProcessGroup {
        /// The name used.
        name: String,
        /// Where the group is defined.
        defined_at: Span,
        /// The ServerName of the group's virtual host.
        group_server: String,
        /// The ServerName where it is used.
        here_server: String,
    },
    /// A regular expression that does not compile.
    #[error("the regular expression `{regex}` does not compile ({error}): fix the pattern")]
    BadRegex {
        /// The pattern.
        regex: String,
        /// The compiler's complaint.
        error: String,
    },
    /// A directive that mod_wsgi removed and that has no safe meaning here.
    #[error("was removed from mod_wsgi: {fix}")]
    Removed {
        /// What to do instead.
        fix: &'static str,
    },
    /// Something wrong with a virtual environment or Python installation a directive names.
    #[error("{problem}")]
    PythonHome {
        /// The inspection's finding, with its fix.
        problem: String,
    },
}

fn suggestion_text(suggestion: &Option<&'static str>) -> String {
    match suggestion {
        Some(s) => format!(" (did you mean `{s}`?)"),
        None => String::new(),
    }
}

fn defined_text(defined: &[String]) -> String {
    if defined.is_empty() {
        " (this configuration defines no daemon process groups)".to_string()
    } else {
        format!(" (defined: {})", defined.join(", "))
    }
}

/// Something accepted but worth the operator's attention.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigWarning {
    /// Where, when it came from a file.
    pub span: Option<Span>,
    /// The directive.
    pub subject: String,
    /// What it means.
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(span) = &self.span {
            write!(f, "{span}: ")?;
        }
        if self.subject.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.subject, self.message)
        }
    }
}

/// The name among `candidates` closest to `word` (case-insensitive), if it is close enough to
/// be a likely typo.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    let mut best: Option<(usize, &'a str)> = None;
    for candidate in candidates {
        let distance = edit_distance(&word, &candidate.to_ascii_lowercase());
        if best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    let limit = (word.len() / 3).max(2);
    best.filter(|(d, _)| *d <= limit).map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        current[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_finds_typos_and_ignores_strangers() {
        let names = ["processes", "threads", "python-home"];
        assert_eq!(closest("proceses", names), Some("processes"));
        assert_eq!(closest("python_home", names), Some("python-home"));
        assert_eq!(closest("banana", names), None);
    }
}
