//! Environment variables a configuration gives a request, as Apache's mod_env and
//! mod_setenvif do, for the WSGI environ (mod_wsgi passes them to the application) and for
//! `%{ENV:NAME}` group names.
//!
//! Apache applies them in two phases. First mod_setenvif: every `SetEnvIf`,
//! `SetEnvIfNoCase`, `BrowserMatch` and `BrowserMatchNoCase` that applies (server, then virtual
//! host, then the matching `<Directory>`/`<Files>`/`<Location>` sections), in order, tested
//! against the request. Then mod_env, in its fixup: the merged `SetEnv`, `PassEnv` and
//! `UnsetEnv` of those levels (at each level an `UnsetEnv` removes what outer levels set, and
//! within one level the later line wins), laid over the first phase's variables.

use std::net::IpAddr;

use regex::Regex;

/// One environment line of a configuration level.
#[derive(Debug, Clone)]
pub enum EnvOp {
    /// `SetEnv NAME [value]`.
    Set(String, String),
    /// `UnsetEnv NAME...`.
    Unset(Vec<String>),
    /// `PassEnv NAME...`: the variables of the server's own environment.
    Pass(Vec<String>),
    /// `SetEnvIf`, `SetEnvIfNoCase`, `BrowserMatch`, `BrowserMatchNoCase`.
    SetIf(SetEnvIf),
}

/// A conditional line of mod_setenvif.
#[derive(Debug, Clone)]
pub struct SetEnvIf {
    /// What is tested: `Remote_Addr`, `Request_URI`, ..., a request header, or a variable set
    /// by an earlier line.
    pub attribute: String,
    /// The expression (case-insensitive for the `NoCase` forms).
    pub regex: Regex,
    /// `!regex`: the line applies when it does not match.
    pub negated: bool,
    /// What it sets (`NAME`, `NAME=value` with `$1`..`$9`) or unsets (`!NAME`).
    pub sets: Vec<EnvSet>,
}

/// One effect of a [`SetEnvIf`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvSet {
    /// `NAME` (value `1`) or `NAME=value`.
    Set(String, String),
    /// `!NAME`.
    Unset(String),
}

impl SetEnvIf {
    /// Reads `SetEnvIf attribute regex [!]env[=value] ...` (`nocase` for the NoCase form,
    /// `browser` for `BrowserMatch`, whose attribute is `User-Agent`). `Err` is the message.
    pub fn parse(args: &[String], nocase: bool, browser: bool) -> Result<SetEnvIf, String> {
        let (attribute, rest) = if browser {
            ("User-Agent".to_string(), args)
        } else {
            match args.split_first() {
                Some((a, rest)) => (a.clone(), rest),
                None => return Err("an attribute, an expression and a variable".into()),
            }
        };
        let Some((pattern, sets)) = rest.split_first() else {
            return Err("an expression and a variable".into());
        };
        if sets.is_empty() {
            return Err("at least one variable to set".into());
        }
        let (negated, pattern) = match pattern.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, pattern.as_str()),
        };
        let regex = regex::RegexBuilder::new(pattern)
            .case_insensitive(nocase)
            .build()
            .map_err(|e| format!("the expression `{pattern}` does not compile: {e}"))?;
        let sets = sets
            .iter()
            .map(|s| match s.strip_prefix('!') {
                Some(name) => EnvSet::Unset(name.to_string()),
                None => match s.split_once('=') {
                    Some((name, value)) => EnvSet::Set(name.to_string(), value.to_string()),
                    None => EnvSet::Set(s.clone(), "1".to_string()),
                },
            })
            .collect();
        Ok(SetEnvIf {
            attribute,
            regex,
            negated,
            sets,
        })
    }
}

/// What mod_setenvif tests a request against.
#[derive(Clone, Copy)]
pub struct RequestFacts<'a> {
    /// `Request_Method`.
    pub method: &'a str,
    /// `Request_Protocol` (`HTTP/1.1`).
    pub protocol: &'a str,
    /// `Request_URI`: the path, decoded, without the query string (Apache's `r->uri`).
    pub uri: &'a str,
    /// `Remote_Addr` (and `Remote_Host`: without hostname lookups, the address).
    pub remote_addr: IpAddr,
    /// `Server_Addr`.
    pub server_addr: IpAddr,
    /// A request header's value (the values of a repeated one joined with `, `).
    pub header: &'a dyn Fn(&str) -> Option<String>,
}

impl std::fmt::Debug for RequestFacts<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestFacts")
            .field("method", &self.method)
            .field("protocol", &self.protocol)
            .field("uri", &self.uri)
            .field("remote_addr", &self.remote_addr)
            .field("server_addr", &self.server_addr)
            .finish_non_exhaustive()
    }
}

/// An ordered name → value table (Apache's `apr_table_t` semantics for `set`/`unset`).
#[derive(Debug, Default)]
struct Table(Vec<(String, String)>);

impl Table {
    fn set(&mut self, name: &str, value: String) {
        match self.0.iter_mut().find(|(k, _)| k == name) {
            Some(entry) => entry.1 = value,
            None => self.0.push((name.to_string(), value)),
        }
    }

    fn unset(&mut self, name: &str) {
        self.0.retain(|(k, _)| k != name);
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The value `attribute` has for a request, in mod_setenvif's order: its special names, else a
/// request header, else a variable an earlier line set.
fn attribute_value(attribute: &str, facts: &RequestFacts<'_>, env: &Table) -> Option<String> {
    let lower = attribute.to_ascii_lowercase();
    match lower.as_str() {
        "remote_host" | "remote_addr" => Some(facts.remote_addr.to_string()),
        "server_addr" => Some(facts.server_addr.to_string()),
        "request_method" => Some(facts.method.to_string()),
        "request_protocol" => Some(facts.protocol.to_string()),
        "request_uri" => Some(facts.uri.to_string()),
        _ => (facts.header)(attribute).or_else(|| env.get(attribute).map(str::to_string)),
    }
}

/// `$0`..`$9` of `template` from `captures`.
fn substitute(template: &str, captures: &regex::Captures<'_>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek().and_then(|d| d.to_digit(10))) {
            ('$', Some(n)) => {
                chars.next();
                if let Some(m) = captures.get(n as usize) {
                    out.push_str(m.as_str());
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// The variables the configuration levels `levels` (outermost first: server, virtual host,
/// then the sections that apply, in Apache's merge order) give a request: mod_setenvif's
/// phase when `facts` are known (else it is skipped), then mod_env's.
pub fn evaluate(levels: &[&[EnvOp]], facts: Option<&RequestFacts<'_>>) -> Vec<(String, String)> {
    let mut env = Table::default();
    if let Some(facts) = facts {
        for op in levels.iter().flat_map(|l| l.iter()) {
            let EnvOp::SetIf(rule) = op else { continue };
            let Some(value) = attribute_value(&rule.attribute, facts, &env) else {
                continue;
            };
            let captures = rule.regex.captures(&value);
            if captures.is_some() == rule.negated {
                continue;
            }
            for set in &rule.sets {
                match (set, &captures) {
                    (EnvSet::Set(name, template), Some(c)) => {
                        env.set(name, substitute(template, c))
                    }
                    (EnvSet::Set(name, template), None) => env.set(name, template.clone()),
                    (EnvSet::Unset(name), _) => env.unset(name),
                }
            }
        }
    }
    // mod_env: the levels merged (an UnsetEnv removes what the levels outside set), then laid
    // over the variables above.
    let mut vars = Table::default();
    for level in levels {
        let mut here = Table::default();
        let mut unset: Vec<&str> = Vec::new();
        for op in level.iter() {
            match op {
                EnvOp::Set(name, value) => {
                    here.set(name, value.clone());
                    unset.retain(|u| u != name);
                }
                EnvOp::Pass(names) => {
                    for name in names {
                        if let Ok(value) = std::env::var(name) {
                            here.set(name, value);
                            unset.retain(|u| u != name);
                        }
                    }
                }
                EnvOp::Unset(names) => {
                    for name in names {
                        here.unset(name);
                        unset.push(name);
                    }
                }
                EnvOp::SetIf(_) => {}
            }
        }
        for name in unset {
            vars.unset(name);
        }
        for (name, value) in here.0 {
            vars.set(&name, value);
        }
    }
    for (name, value) in vars.0 {
        env.set(&name, value);
    }
    env.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| a.to_string()).collect()
    }

    fn facts<'a>(header: &'a dyn Fn(&str) -> Option<String>) -> RequestFacts<'a> {
        RequestFacts {
            method: "POST",
            protocol: "HTTP/1.1",
            uri: "/api/users",
            remote_addr: "192.0.2.7".parse().unwrap(),
            server_addr: "127.0.0.1".parse().unwrap(),
            header,
        }
    }

    #[test]
    fn setenvif_tests_special_names_headers_and_earlier_variables() {
        let ua = |name: &str| {
            name.eq_ignore_ascii_case("user-agent")
                .then(|| "Mozilla/5.0 (X11) Firefox/120.0".to_string())
        };
        let f = facts(&ua);
        let rules = [
            EnvOp::SetIf(
                SetEnvIf::parse(
                    &strings(&["Request_URI", "^/api/(\\w+)", "API=$1"]),
                    false,
                    false,
                )
                .unwrap(),
            ),
            EnvOp::SetIf(
                SetEnvIf::parse(&strings(&["firefox/(\\d+)", "FF=$1", "modern"]), true, true)
                    .unwrap(),
            ),
            EnvOp::SetIf(
                SetEnvIf::parse(
                    &strings(&["Remote_Addr", "^192\\.0\\.2\\.", "TESTNET"]),
                    false,
                    false,
                )
                .unwrap(),
            ),
            EnvOp::SetIf(
                SetEnvIf::parse(
                    &strings(&["API", "users", "!modern", "USERS"]),
                    false,
                    false,
                )
                .unwrap(),
            ),
            EnvOp::SetIf(
                SetEnvIf::parse(
                    &strings(&["Request_Method", "!^GET$", "WRITE"]),
                    false,
                    false,
                )
                .unwrap(),
            ),
        ];
        let env = evaluate(&[&rules], Some(&f));
        assert_eq!(
            env,
            vec![
                ("API".into(), "users".into()),
                ("FF".into(), "120".into()),
                ("TESTNET".into(), "1".into()),
                ("USERS".into(), "1".into()),
                ("WRITE".into(), "1".into()),
            ]
        );
        // Case matters without NoCase.
        let strict = [EnvOp::SetIf(
            SetEnvIf::parse(&strings(&["firefox", "FF"]), false, true).unwrap(),
        )];
        assert!(evaluate(&[&strict], Some(&f)).is_empty());
        assert!(SetEnvIf::parse(&strings(&["Remote_Addr", "(", "X"]), false, false).is_err());
    }

    #[test]
    fn mod_env_merges_levels_over_setenvif() {
        let none = |_: &str| None;
        let f = facts(&none);
        let server = [
            EnvOp::Set("A".into(), "server".into()),
            EnvOp::Set("B".into(), "server".into()),
            EnvOp::SetIf(
                SetEnvIf::parse(
                    &strings(&["Request_Method", "POST", "C=setenvif", "D=setenvif"]),
                    false,
                    false,
                )
                .unwrap(),
            ),
        ];
        let dir = [
            EnvOp::Unset(vec!["B".into()]),
            EnvOp::Set("A".into(), "dir".into()),
            EnvOp::Set("C".into(), "dir".into()),
            EnvOp::Set("E".into(), "late".into()),
            EnvOp::Unset(vec!["E".into()]),
        ];
        let env = evaluate(&[&server, &dir], Some(&f));
        assert_eq!(
            env,
            vec![
                ("C".into(), "dir".into()),
                ("D".into(), "setenvif".into()),
                ("A".into(), "dir".into()),
            ]
        );
        // Without the request's facts (a group name chosen before them), only mod_env.
        let env = evaluate(&[&server, &dir], None);
        assert_eq!(
            env,
            vec![("A".into(), "dir".into()), ("C".into(), "dir".into())]
        );
    }

    #[test]
    fn passenv_takes_the_servers_environment() {
        let ops = [EnvOp::Pass(vec![
            "PATH".into(),
            "WSGI_RS_SURELY_UNSET".into(),
        ])];
        let env = evaluate(&[&ops], None);
        assert_eq!(env.len(), 1);
        assert_eq!(env[0].0, "PATH");
    }
}
