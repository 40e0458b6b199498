//! `name=value` options, as mod_wsgi's `wsgi_parse_option()` reads them, and the value parsers
//! the directives share.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::ErrorKind;

/// Splits `word` into `(name, value)` at the first `=`.
pub(crate) fn split_option(word: &str) -> Result<(&str, &str), ErrorKind> {
    match word.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name, value)),
        _ => Err(ErrorKind::NotAnOption {
            word: word.to_string(),
        }),
    }
}

/// `On`/`Off`, case-insensitively.
pub(crate) fn parse_flag(value: &str) -> Result<bool, ErrorKind> {
    if value.eq_ignore_ascii_case("on") {
        Ok(true)
    } else if value.eq_ignore_ascii_case("off") {
        Ok(false)
    } else {
        Err(ErrorKind::BadFlag {
            value: value.to_string(),
            allowed: "On or Off",
        })
    }
}

/// `On`/`Off` as the value of a `name=value` option: refused with the option named.
pub(crate) fn parse_option_flag(option: &str, value: &str) -> Result<bool, ErrorKind> {
    parse_flag(value).map_err(|_| bad(option, value, "use On or Off"))
}

fn bad(option: &str, value: &str, expected: impl Into<String>) -> ErrorKind {
    ErrorKind::BadValue {
        option: option.to_string(),
        value: value.to_string(),
        expected: expected.into(),
    }
}

/// A whole number in `min..=max`.
pub(crate) fn parse_int(option: &str, value: &str, min: u64, max: u64) -> Result<u64, ErrorKind> {
    let expected = || {
        if max == u64::MAX {
            format!("use a whole number of at least {min}")
        } else {
            format!("use a whole number from {min} to {max}")
        }
    };
    let n: u64 = value
        .trim()
        .parse()
        .map_err(|_| bad(option, value, expected()))?;
    if n < min || n > max {
        return Err(bad(option, value, expected()));
    }
    Ok(n)
}

/// A signed whole number in `min..=max`.
pub(crate) fn parse_signed(
    option: &str,
    value: &str,
    min: i64,
    max: i64,
) -> Result<i64, ErrorKind> {
    let n: i64 = value.trim().parse().map_err(|_| {
        bad(
            option,
            value,
            format!("use a whole number from {min} to {max}"),
        )
    })?;
    if n < min || n > max {
        return Err(bad(
            option,
            value,
            format!("use a whole number from {min} to {max}"),
        ));
    }
    Ok(n)
}

/// A number of seconds, 0 or more (whole or decimal: mod_wsgi takes whole seconds; a decimal is
/// accepted here too). 0 means "off" where the option says so.
pub(crate) fn parse_seconds(option: &str, value: &str) -> Result<Duration, ErrorKind> {
    let expected = "use a number of seconds, 0 or more (for example 60)";
    let seconds: f64 = value
        .trim()
        .parse()
        .map_err(|_| bad(option, value, expected))?;
    if !seconds.is_finite() || !(0.0..=31_536_000.0).contains(&seconds) {
        return Err(bad(option, value, expected));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// A size in bytes that is 0 (the system's default) or at least `min`.
pub(crate) fn parse_buffer_size(option: &str, value: &str, min: u64) -> Result<u64, ErrorKind> {
    let expected = format!("use 0 for the default, or a number of bytes of at least {min}");
    let n: u64 = value
        .trim()
        .parse()
        .map_err(|_| bad(option, value, expected.clone()))?;
    if n != 0 && n < min {
        return Err(bad(option, value, expected));
    }
    Ok(n)
}

/// An absolute path.
pub(crate) fn parse_absolute(
    what: &'static str,
    value: &str,
    fix: &'static str,
) -> Result<PathBuf, ErrorKind> {
    if value.starts_with('/') {
        Ok(PathBuf::from(value))
    } else {
        Err(ErrorKind::RelativePath {
            what,
            value: value.to_string(),
            fix,
        })
    }
}

/// `python-home` / `WSGIPythonHome`: an absolute path that names a venv root, not the
/// executable or site-packages inside it. Only the text is checked here; the folder itself is
/// inspected by [`crate::venv`].
pub(crate) fn parse_python_home(value: &str) -> Result<PathBuf, ErrorKind> {
    // mod_wsgi accepts `prefix:exec_prefix`; a venv has one prefix, so only the first is used.
    let path = parse_absolute(
        "python-home",
        value,
        "use the virtual environment's root, what `python -c 'import sys; print(sys.prefix)'` prints",
    )?;
    if let Some((root, what)) = venv_root_of_inner_path(&path) {
        return Err(ErrorKind::PythonHomeNotRoot {
            value: value.to_string(),
            what,
            root,
        });
    }
    Ok(path)
}

/// If `path` is `ROOT/bin/python*` or `ROOT/lib/pythonX.Y[/site-packages]`, the venv root and
/// what the path names instead.
pub fn venv_root_of_inner_path(path: &Path) -> Option<(PathBuf, &'static str)> {
    let normalized: PathBuf = path.components().collect();
    let name = normalized.file_name()?.to_str()?;
    let parent = normalized.parent()?;
    let parent_name = parent.file_name().and_then(|n| n.to_str());
    if name.starts_with("python") && parent_name == Some("bin") {
        return Some((
            parent.parent()?.to_path_buf(),
            "the virtual environment's python executable",
        ));
    }
    if name == "bin" && parent.parent().is_some() && normalized.join("python").exists() {
        return Some((parent.to_path_buf(), "the virtual environment's bin folder"));
    }
    if name == "site-packages" {
        let lib = parent.parent()?;
        if lib.file_name().and_then(|n| n.to_str()) == Some("lib") {
            return Some((
                lib.parent()?.to_path_buf(),
                "the virtual environment's site-packages folder",
            ));
        }
    }
    if name.starts_with("python3") && parent_name == Some("lib") {
        return Some((
            parent.parent()?.to_path_buf(),
            "the virtual environment's lib/pythonX.Y folder",
        ));
    }
    None
}

/// A `:`-separated list of folders.
pub(crate) fn parse_path_list(value: &str) -> Vec<PathBuf> {
    value
        .split(':')
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_at_the_first_equals() {
        assert_eq!(split_option("a=b=c").unwrap(), ("a", "b=c"));
        assert_eq!(split_option("a=").unwrap(), ("a", ""));
        assert!(split_option("=b").is_err());
        assert!(split_option("word").is_err());
    }

    #[test]
    fn python_home_inside_paths_point_at_the_root() {
        let cases = [
            (
                "/usr/local/venvs/myapp/bin/python",
                "/usr/local/venvs/myapp",
            ),
            (
                "/usr/local/venvs/myapp/bin/python3.11",
                "/usr/local/venvs/myapp",
            ),
            ("/v/lib/python3.11/site-packages", "/v"),
            ("/v/lib/python3.11", "/v"),
            ("/v/lib/python3.11/site-packages/", "/v"),
        ];
        for (given, root) in cases {
            assert_eq!(
                venv_root_of_inner_path(Path::new(given)).map(|r| r.0),
                Some(PathBuf::from(root)),
                "{given}"
            );
        }
        assert!(venv_root_of_inner_path(Path::new("/usr/local/venvs/myapp")).is_none());
        assert!(venv_root_of_inner_path(Path::new("/usr/local/venvs/python")).is_none());
    }

    #[test]
    fn numbers_are_checked() {
        assert_eq!(parse_int("threads", "15", 0, 65533).unwrap(), 15);
        assert_eq!(
            parse_int("threads", "-1", 0, 65533)
                .unwrap_err()
                .to_string(),
            "threads=`-1` is not valid: use a whole number from 0 to 65533"
        );
        assert_eq!(
            parse_seconds("t", "2.5").unwrap(),
            Duration::from_millis(2500)
        );
        assert!(parse_seconds("t", "-1").is_err());
        assert!(parse_buffer_size("b", "100", 512).is_err());
        assert_eq!(parse_buffer_size("b", "0", 512).unwrap(), 0);
    }
}
