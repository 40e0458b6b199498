//! Parsing of `pyvenv.cfg`, following what CPython itself does with the file.
//!
//! CPython (`getpath.py` and `site.py`) splits each line at its first `=`, strips both sides and
//! compares keys case-insensitively; lines without `=` are ignored. `getpath.py` takes the first
//! `home` line, `site.py` the last `include-system-site-packages` line. This parser does the same.

use std::path::Path;

use super::{PythonVersion, VenvKind};

/// The key/value lines of a `pyvenv.cfg` file, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PyvenvCfg {
    entries: Vec<(String, String)>,
}

/// Which key of `pyvenv.cfg` gave the Python version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionKey {
    /// `version = 3.11.2` (written by `python -m venv` and `virtualenv`).
    Version,
    /// `version_info = 3.11.2` (uv) or `version_info = 3.11.2.final.0` (virtualenv).
    VersionInfo,
}

impl VersionKey {
    /// The key as written in `pyvenv.cfg`.
    pub fn as_str(self) -> &'static str {
        match self {
            VersionKey::Version => "version",
            VersionKey::VersionInfo => "version_info",
        }
    }
}

impl PyvenvCfg {
    /// Parses the text of a `pyvenv.cfg` file. Never fails: lines CPython would ignore are ignored.
    pub fn parse(text: &str) -> Self {
        let entries = text
            .lines()
            .filter_map(|line| {
                let (key, value) = line.split_once('=')?;
                Some((key.trim().to_ascii_lowercase(), value.trim().to_owned()))
            })
            .collect();
        PyvenvCfg { entries }
    }

    /// The value of the first line with this key (keys compare case-insensitively).
    pub fn get(&self, key: &str) -> Option<&str> {
        let key = key.to_ascii_lowercase();
        self.entries
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of the last line with this key (keys compare case-insensitively).
    pub fn get_last(&self, key: &str) -> Option<&str> {
        let key = key.to_ascii_lowercase();
        self.entries
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `home`: the bin folder of the Python the environment was created from. `None` when absent
    /// or empty.
    pub fn home(&self) -> Option<&Path> {
        self.get("home").filter(|v| !v.is_empty()).map(Path::new)
    }

    /// The Python version the environment was created by: `version`, else `version_info` (uv
    /// writes only `version_info`). `None` when neither is present or parses.
    pub fn version(&self) -> Option<(PythonVersion, VersionKey)> {
        if let Some(v) = self.get("version").and_then(PythonVersion::parse) {
            return Some((v, VersionKey::Version));
        }
        self.get("version_info")
            .and_then(PythonVersion::parse)
            .map(|v| (v, VersionKey::VersionInfo))
    }

    /// Whether the base installation's site-packages is on `sys.path`, as `site.py` decides it:
    /// the last `include-system-site-packages` line, `true` (any case) meaning yes; when the key
    /// is absent, `site.py` includes them.
    pub fn include_system_site_packages(&self) -> bool {
        self.get_last("include-system-site-packages")
            .is_none_or(|v| v.eq_ignore_ascii_case("true"))
    }

    /// The tool that wrote the file, from its marker key (`uv = x.y.z`, `virtualenv = x.y`), and
    /// that tool's version. `python -m venv` writes no marker.
    pub fn creator(&self) -> (VenvKind, Option<&str>) {
        if let Some(v) = self.get("uv") {
            (VenvKind::Uv, Some(v))
        } else if let Some(v) = self.get("virtualenv") {
            (VenvKind::Virtualenv, Some(v))
        } else {
            (VenvKind::Venv, None)
        }
    }

    /// The base interpreter named by the file: `base-executable` (virtualenv), else `executable`
    /// (venv, virtualenv). uv writes neither.
    pub fn base_executable(&self) -> Option<&Path> {
        self.get("base-executable")
            .or_else(|| self.get("executable"))
            .filter(|v| !v.is_empty())
            .map(Path::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(major: u32, minor: u32, patch: Option<u32>) -> PythonVersion {
        PythonVersion {
            major,
            minor,
            patch,
        }
    }

    #[test]
    fn venv_module_file() {
        let cfg = PyvenvCfg::parse(
            "home = /usr/bin\ninclude-system-site-packages = false\nversion = 3.11.2\n\
             executable = /usr/bin/python3.11\ncommand = /usr/bin/python3.11 -m venv /x\n",
        );
        assert_eq!(cfg.home(), Some(Path::new("/usr/bin")));
        assert_eq!(
            cfg.version(),
            Some((v(3, 11, Some(2)), VersionKey::Version))
        );
        assert!(!cfg.include_system_site_packages());
        assert_eq!(cfg.creator(), (VenvKind::Venv, None));
        assert_eq!(
            cfg.base_executable(),
            Some(Path::new("/usr/bin/python3.11"))
        );
        assert_eq!(cfg.get("command"), Some("/usr/bin/python3.11 -m venv /x"));
    }

    #[test]
    fn spaces_around_equals_and_key_case() {
        let cfg = PyvenvCfg::parse(
            "  HOME=/opt/py/bin  \nVersion   =3.12.1\ninclude-system-site-packages= TRUE\n",
        );
        assert_eq!(cfg.home(), Some(Path::new("/opt/py/bin")));
        assert_eq!(
            cfg.version(),
            Some((v(3, 12, Some(1)), VersionKey::Version))
        );
        assert!(cfg.include_system_site_packages());
    }

    #[test]
    fn value_keeps_inner_equals_and_spaces() {
        let cfg = PyvenvCfg::parse("command = /usr/bin/python3 -m venv --prompt=a b /v\n");
        assert_eq!(
            cfg.get("command"),
            Some("/usr/bin/python3 -m venv --prompt=a b /v")
        );
    }

    #[test]
    fn unknown_keys_and_junk_lines_are_ignored() {
        let cfg = PyvenvCfg::parse(
            "# a comment without equals sign\n\nprompt = 'mine'\nhome = /usr/bin\nfuture-key = 1\n\
             just some words\nversion = 3.11.2\n",
        );
        assert_eq!(cfg.home(), Some(Path::new("/usr/bin")));
        assert_eq!(cfg.get("prompt"), Some("'mine'"));
        assert_eq!(cfg.get("future-key"), Some("1"));
        assert_eq!(cfg.get("just some words"), None);
        assert_eq!(
            cfg.version(),
            Some((v(3, 11, Some(2)), VersionKey::Version))
        );
    }

    #[test]
    fn missing_version_and_include_key() {
        let cfg = PyvenvCfg::parse("home = /usr/bin\n");
        assert_eq!(cfg.version(), None);
        // site.py includes the system site-packages when the key is absent.
        assert!(cfg.include_system_site_packages());
        assert_eq!(cfg.base_executable(), None);
    }

    #[test]
    fn uv_version_info_only() {
        let cfg = PyvenvCfg::parse(
            "home = /usr/bin\nimplementation = CPython\nuv = 0.13.9\nversion_info = 3.11.2\n\
             include-system-site-packages = false\n",
        );
        assert_eq!(
            cfg.version(),
            Some((v(3, 11, Some(2)), VersionKey::VersionInfo))
        );
        assert_eq!(cfg.creator(), (VenvKind::Uv, Some("0.13.9")));
        assert!(!cfg.include_system_site_packages());
    }

    #[test]
    fn virtualenv_writes_both_versions_and_its_own() {
        let cfg = PyvenvCfg::parse(
            "home = /usr/bin\nimplementation = CPython\npython-version = 3.11\n\
             version_info = 3.11.2.final.0\nversion = 3.11.2\nvirtualenv = 21.15.11\n\
             base-executable = /usr/bin/python3.11\n",
        );
        assert_eq!(
            cfg.version(),
            Some((v(3, 11, Some(2)), VersionKey::Version))
        );
        assert_eq!(cfg.creator(), (VenvKind::Virtualenv, Some("21.15.11")));
        let only_info = PyvenvCfg::parse("version_info = 3.11.2.final.0\n");
        assert_eq!(
            only_info.version(),
            Some((v(3, 11, Some(2)), VersionKey::VersionInfo))
        );
    }

    #[test]
    fn unparsable_version_falls_back_to_version_info() {
        let cfg = PyvenvCfg::parse("version = unknown\nversion_info = 3.13.0\n");
        assert_eq!(
            cfg.version(),
            Some((v(3, 13, Some(0)), VersionKey::VersionInfo))
        );
        assert_eq!(PyvenvCfg::parse("version = three\n").version(), None);
    }

    #[test]
    fn empty_home_is_no_home_and_first_home_wins() {
        assert_eq!(PyvenvCfg::parse("home =\n").home(), None);
        let cfg = PyvenvCfg::parse("home = /a/bin\nhome = /b/bin\n");
        assert_eq!(cfg.home(), Some(Path::new("/a/bin")));
    }

    #[test]
    fn last_include_system_site_packages_wins() {
        let cfg = PyvenvCfg::parse(
            "include-system-site-packages = true\ninclude-system-site-packages = false\n",
        );
        assert!(!cfg.include_system_site_packages());
        let cfg = PyvenvCfg::parse("include-system-site-packages = yes\n");
        assert!(
            !cfg.include_system_site_packages(),
            "only `true` means true"
        );
    }

    #[test]
    fn crlf_line_endings() {
        let cfg = PyvenvCfg::parse("home = C:/x/bin\r\nversion = 3.11.2\r\n");
        assert_eq!(cfg.home(), Some(Path::new("C:/x/bin")));
        assert_eq!(
            cfg.version(),
            Some((v(3, 11, Some(2)), VersionKey::Version))
        );
    }
}
