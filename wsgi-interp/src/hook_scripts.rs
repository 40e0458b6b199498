//! Hook scripts: the Python files mod_wsgi calls beside the WSGI application
//! (`WSGIAccessScript`, `WSGIAuthUserScript`, `WSGIAuthGroupScript`, `WSGIDispatchScript`).
//!
//! [`crate::InterpreterHandle::call_hook`] loads such a script (once, and again when the file
//! changes, if reloading is on), calls one of its module-level functions with a WSGI environ
//! (without `wsgi.input`: these run before the request body is read) and returns what the
//! function returned as a [`HookValue`]. The conversions here give that value mod_wsgi's
//! meaning for each function, or a [`HookError`] that says what the function should return.

use std::path::PathBuf;

use crate::wsgi::{InterpError, PyErrorInfo};

/// A hook script file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookScript {
    /// Absolute path of the script.
    pub path: PathBuf,
    /// The directive that named it (`WSGIAccessScript`, ...), for messages.
    pub directive: &'static str,
    /// Execute the file again when it changed since it was loaded (`WSGIScriptReloading On`,
    /// the default).
    pub reload: bool,
}

/// A module-level function of a hook script, with the parameters mod_wsgi passes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HookFunction {
    /// Its name.
    pub name: &'static str,
    /// Its parameters as documented, for messages (`environ, host`).
    pub params: &'static str,
}

impl HookFunction {
    /// `allow_access(environ, host)` of a `WSGIAccessScript`.
    pub const ALLOW_ACCESS: HookFunction = HookFunction {
        name: "allow_access",
        params: "environ, host",
    };
    /// `check_password(environ, user, password)` of a `WSGIAuthUserScript` (Basic).
    pub const CHECK_PASSWORD: HookFunction = HookFunction {
        name: "check_password",
        params: "environ, user, password",
    };
    /// `get_realm_hash(environ, user, realm)` of a `WSGIAuthUserScript` (Digest).
    pub const GET_REALM_HASH: HookFunction = HookFunction {
        name: "get_realm_hash",
        params: "environ, user, realm",
    };
    /// `groups_for_user(environ, user)` of a `WSGIAuthGroupScript`.
    pub const GROUPS_FOR_USER: HookFunction = HookFunction {
        name: "groups_for_user",
        params: "environ, user",
    };
    /// `process_group(environ)` of a `WSGIDispatchScript`.
    pub const PROCESS_GROUP: HookFunction = HookFunction {
        name: "process_group",
        params: "environ",
    };
    /// `application_group(environ)` of a `WSGIDispatchScript`.
    pub const APPLICATION_GROUP: HookFunction = HookFunction {
        name: "application_group",
        params: "environ",
    };
    /// `callable_object(environ)` of a `WSGIDispatchScript`.
    pub const CALLABLE_OBJECT: HookFunction = HookFunction {
        name: "callable_object",
        params: "environ",
    };
}

/// An argument passed after the environ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookArg {
    /// A `str` from text.
    Str(String),
    /// A `str` decoded from bytes as latin-1 (user names and passwords, as mod_wsgi passes
    /// them).
    Latin1(Vec<u8>),
}

/// What a hook function returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookValue {
    /// `None`.
    None,
    /// `True` or `False`.
    Bool(bool),
    /// A `str` (as UTF-8; lone surrogates escaped).
    Str(String),
    /// A `bytes`.
    Bytes(Vec<u8>),
    /// The items of any other iterable (list, tuple, set, generator, ...), each converted the
    /// same way one level deep (a nested iterable becomes [`HookValue::Other`]).
    Items(Vec<HookValue>),
    /// Anything else, by its type name (`int`, ...).
    Other(String),
}

impl HookValue {
    /// How the value is described in messages.
    pub fn describe(&self) -> String {
        match self {
            HookValue::None => "None".into(),
            HookValue::Bool(b) => if *b { "True" } else { "False" }.into(),
            HookValue::Str(s) => format!("the str {s:?}"),
            HookValue::Bytes(_) => "a bytes object".into(),
            HookValue::Items(items) => format!("an iterable of {} items", items.len()),
            HookValue::Other(t) => format!("a value of type {t}"),
        }
    }

    /// A name given as `str`, or as `bytes` (decoded as latin-1).
    fn name(&self) -> Option<String> {
        match self {
            HookValue::Str(s) => Some(s.clone()),
            HookValue::Bytes(b) => Some(b.iter().map(|&c| char::from(c)).collect()),
            _ => None,
        }
    }
}

/// Why a hook could not give an answer. Every message names the script and the fix.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HookError {
    /// The path is not absolute.
    #[error("the {directive} path `{}` is not absolute: give the full path of the script", .path.display())]
    NotAbsolute {
        /// The directive.
        directive: &'static str,
        /// The script.
        path: PathBuf,
    },
    /// The file cannot be read.
    #[error("the {directive} {} cannot be read ({reason}): check the path, and that Apache's user can read the file", .path.display())]
    NotFound {
        /// The directive.
        directive: &'static str,
        /// The script.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// Executing the file raised.
    #[error("the {directive} {} raised {error} while being loaded:\n{}", .path.display(), .error.traceback)]
    Load {
        /// The directive.
        directive: &'static str,
        /// The script.
        path: PathBuf,
        /// The exception (boxed: errors stay small on the hot path).
        error: Box<PyErrorInfo>,
    },
    /// The script has no such module-level function.
    #[error("the {directive} {} has no {}({}) function: define it at module level in the script", .path.display(), .function.name, .function.params)]
    MissingFunction {
        /// The directive.
        directive: &'static str,
        /// The script.
        path: PathBuf,
        /// The function looked for.
        function: HookFunction,
    },
    /// The function raised.
    #[error("{}() of the {directive} {} raised {error}:\n{}", .function.name, .path.display(), .error.traceback)]
    Raised {
        /// The directive.
        directive: &'static str,
        /// The script.
        path: PathBuf,
        /// The function.
        function: HookFunction,
        /// The exception (boxed: errors stay small on the hot path).
        error: Box<PyErrorInfo>,
    },
    /// The function returned something it may not.
    #[error("{}() of the {directive} {} returned {returned}: it must return {expected}", .function.name, .path.display())]
    BadReturn {
        /// The directive.
        directive: &'static str,
        /// The script.
        path: PathBuf,
        /// The function.
        function: HookFunction,
        /// What it returned, described.
        returned: String,
        /// What it may return.
        expected: &'static str,
    },
    /// The interpreter could not be entered.
    #[error(transparent)]
    Interp(#[from] InterpError),
}

impl HookError {
    /// Whether the script simply does not define the function (optional for
    /// `WSGIDispatchScript`).
    pub fn is_missing_function(&self) -> bool {
        matches!(self, HookError::MissingFunction { .. })
    }
}

fn bad_return(
    script: &HookScript,
    function: HookFunction,
    value: &HookValue,
    expected: &'static str,
) -> HookError {
    HookError::BadReturn {
        directive: script.directive,
        path: script.path.clone(),
        function,
        returned: value.describe(),
        expected,
    }
}

/// What `allow_access(environ, host)` decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessDecision {
    /// `True`: let the request through (other access rules still apply).
    Allow,
    /// `False`: refuse it (403).
    Deny,
    /// `None`: no opinion; the other access rules decide.
    Decline,
}

impl AccessDecision {
    /// mod_wsgi's reading of the value: `True`, `False` or `None`, nothing else.
    pub fn from_hook(script: &HookScript, value: HookValue) -> Result<Self, HookError> {
        match value {
            HookValue::Bool(true) => Ok(AccessDecision::Allow),
            HookValue::Bool(false) => Ok(AccessDecision::Deny),
            HookValue::None => Ok(AccessDecision::Decline),
            other => Err(bad_return(
                script,
                HookFunction::ALLOW_ACCESS,
                &other,
                "True (allow), False (deny) or None (let other rules decide)",
            )),
        }
    }
}

/// What `check_password(environ, user, password)` decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordDecision {
    /// `True`: the password is right.
    Granted,
    /// A non-empty `str`: the password is right, and this is the user's name from now on
    /// (`REMOTE_USER`, the access log, group checks).
    GrantedAs(String),
    /// `False`: the user exists and the password is wrong.
    Denied,
    /// `None`: no such user (the next provider is asked, if any).
    UnknownUser,
}

impl PasswordDecision {
    /// mod_wsgi's reading of the value.
    pub fn from_hook(script: &HookScript, value: HookValue) -> Result<Self, HookError> {
        match value {
            HookValue::Bool(true) => Ok(PasswordDecision::Granted),
            HookValue::Bool(false) => Ok(PasswordDecision::Denied),
            HookValue::None => Ok(PasswordDecision::UnknownUser),
            HookValue::Str(name) if !name.is_empty() && !name.contains('\0') => {
                Ok(PasswordDecision::GrantedAs(name))
            }
            other => Err(bad_return(
                script,
                HookFunction::CHECK_PASSWORD,
                &other,
                "True (right password), False (wrong password), None (no such user) or the user's name as a non-empty str",
            )),
        }
    }
}

/// What `get_realm_hash(environ, user, realm)` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RealmHash {
    /// The user's `md5("user:realm:password")` as hexadecimal text.
    Found(String),
    /// `None`: no such user.
    UnknownUser,
}

impl RealmHash {
    /// mod_wsgi's reading of the value: `None`, or the hash as `str` or `bytes`.
    pub fn from_hook(script: &HookScript, value: HookValue) -> Result<Self, HookError> {
        if value == HookValue::None {
            return Ok(RealmHash::UnknownUser);
        }
        match value.name() {
            Some(hash) if !hash.is_empty() && hash.is_ascii() && !hash.contains('\0') => {
                Ok(RealmHash::Found(hash))
            }
            _ => Err(bad_return(
                script,
                HookFunction::GET_REALM_HASH,
                &value,
                "None (no such user) or the hexadecimal md5 of \"user:realm:password\"",
            )),
        }
    }
}

/// The group names `groups_for_user(environ, user)` returned: an iterable of `str` or
/// `bytes` (a single `str` is refused rather than read letter by letter).
pub fn groups_from_hook(script: &HookScript, value: HookValue) -> Result<Vec<String>, HookError> {
    const EXPECTED: &str =
        "an iterable of group names (str or bytes), such as ['admin', 'staff'], or [] for none";
    match value {
        HookValue::Items(items) => items
            .iter()
            .map(|item| {
                item.name().ok_or_else(|| {
                    bad_return(script, HookFunction::GROUPS_FOR_USER, item, EXPECTED)
                })
            })
            .collect(),
        other => Err(bad_return(
            script,
            HookFunction::GROUPS_FOR_USER,
            &other,
            EXPECTED,
        )),
    }
}

/// What a dispatch function (`process_group`, `application_group`, `callable_object`)
/// returned: `None` keeps the routed value, a `str` or `bytes` replaces it.
pub fn override_from_hook(
    script: &HookScript,
    function: HookFunction,
    value: HookValue,
) -> Result<Option<String>, HookError> {
    match value {
        HookValue::None => Ok(None),
        ref v @ (HookValue::Str(_) | HookValue::Bytes(_)) => Ok(v.name()),
        other => Err(bad_return(
            script,
            function,
            &other,
            "None (keep the configured value) or a name as str",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script() -> HookScript {
        HookScript {
            path: "/srv/auth.wsgi".into(),
            directive: "WSGIAuthUserScript",
            reload: true,
        }
    }

    #[test]
    fn access_answers() {
        let s = script();
        assert_eq!(
            AccessDecision::from_hook(&s, HookValue::Bool(true)).unwrap(),
            AccessDecision::Allow
        );
        assert_eq!(
            AccessDecision::from_hook(&s, HookValue::Bool(false)).unwrap(),
            AccessDecision::Deny
        );
        assert_eq!(
            AccessDecision::from_hook(&s, HookValue::None).unwrap(),
            AccessDecision::Decline
        );
        let e = AccessDecision::from_hook(&s, HookValue::Other("int".into())).unwrap_err();
        assert_eq!(
            e.to_string(),
            "allow_access() of the WSGIAuthUserScript /srv/auth.wsgi returned a value of type int: it must return True (allow), False (deny) or None (let other rules decide)"
        );
    }

    #[test]
    fn password_answers() {
        let s = script();
        let read = |v| PasswordDecision::from_hook(&s, v);
        assert_eq!(
            read(HookValue::Bool(true)).unwrap(),
            PasswordDecision::Granted
        );
        assert_eq!(
            read(HookValue::Bool(false)).unwrap(),
            PasswordDecision::Denied
        );
        assert_eq!(
            read(HookValue::None).unwrap(),
            PasswordDecision::UnknownUser
        );
        assert_eq!(
            read(HookValue::Str("alice".into())).unwrap(),
            PasswordDecision::GrantedAs("alice".into())
        );
        assert!(read(HookValue::Str(String::new())).is_err());
        assert!(read(HookValue::Bytes(b"alice".to_vec())).is_err());
        assert!(read(HookValue::Items(vec![])).is_err());
    }

    #[test]
    fn realm_hash_answers() {
        let s = script();
        let read = |v| RealmHash::from_hook(&s, v);
        assert_eq!(read(HookValue::None).unwrap(), RealmHash::UnknownUser);
        assert_eq!(
            read(HookValue::Str("abc123".into())).unwrap(),
            RealmHash::Found("abc123".into())
        );
        assert_eq!(
            read(HookValue::Bytes(b"abc123".to_vec())).unwrap(),
            RealmHash::Found("abc123".into())
        );
        assert!(read(HookValue::Bool(true)).is_err());
        assert!(read(HookValue::Str(String::new())).is_err());
    }

    #[test]
    fn group_answers() {
        let s = script();
        assert_eq!(
            groups_from_hook(
                &s,
                HookValue::Items(vec![
                    HookValue::Str("admin".into()),
                    HookValue::Bytes(b"staff".to_vec())
                ])
            )
            .unwrap(),
            vec!["admin".to_string(), "staff".to_string()]
        );
        assert!(
            groups_from_hook(&s, HookValue::Items(vec![]))
                .unwrap()
                .is_empty()
        );
        let e = groups_from_hook(&s, HookValue::Str("admin".into())).unwrap_err();
        assert!(
            e.to_string()
                .contains("groups_for_user() of the WSGIAuthUserScript"),
            "{e}"
        );
        assert!(e.to_string().contains("or [] for none"), "{e}");
        assert!(groups_from_hook(&s, HookValue::None).is_err());
        assert!(
            groups_from_hook(&s, HookValue::Items(vec![HookValue::Other("int".into())])).is_err()
        );
    }

    #[test]
    fn dispatch_answers() {
        let s = script();
        let f = HookFunction::PROCESS_GROUP;
        assert_eq!(override_from_hook(&s, f, HookValue::None).unwrap(), None);
        assert_eq!(
            override_from_hook(&s, f, HookValue::Str("daemon".into())).unwrap(),
            Some("daemon".into())
        );
        assert_eq!(
            override_from_hook(&s, f, HookValue::Bytes(b"d\xe9".to_vec())).unwrap(),
            Some("d\u{e9}".into())
        );
        assert!(override_from_hook(&s, f, HookValue::Bool(true)).is_err());
    }

    #[test]
    fn missing_functions_say_what_to_define() {
        let e = HookError::MissingFunction {
            directive: "WSGIAccessScript",
            path: "/x/access.wsgi".into(),
            function: HookFunction::ALLOW_ACCESS,
        };
        assert_eq!(
            e.to_string(),
            "the WSGIAccessScript /x/access.wsgi has no allow_access(environ, host) function: define it at module level in the script"
        );
        assert!(e.is_missing_function());
    }
}
