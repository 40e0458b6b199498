//! Who may see what: mod_authz_core's `Require` lines and their `<RequireAll>`,
//! `<RequireAny>` and `<RequireNone>` containers, as a tree per configuration section, and
//! their evaluation for a request with Apache's rules (a negated line can deny, never grant;
//! a user-based line that meets no user asks for one). mod_auth_basic's settings
//! (`AuthType`, `AuthName`, `AuthUserFile`, `AuthGroupFile`, `AuthBasicProvider`) sit beside
//! the tree in [`crate::WsgiSettings`]; checking a password is the front's business.

use std::net::IpAddr;

use serde::Serialize;

use crate::model::IpNet;
use crate::reader::Span;

/// What one `Require` line tests.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Requirement {
    /// `Require all granted` (true) or `Require all denied` (false).
    All(bool),
    /// `Require ip`: the client's address is in one of the networks.
    Ip(Vec<IpNet>),
    /// `Require local`: the client is the host itself (loopback, or the server's address).
    Local,
    /// `Require host`: the client's name (by a double DNS lookup) is one of these, or in one
    /// of these domains.
    Host(Vec<String>),
    /// `Require env`: one of these environment variables is set for the request.
    Env(Vec<String>),
    /// `Require method`: the request's method is one of these.
    Method(Vec<String>),
    /// `Require valid-user`: any authenticated user.
    ValidUser,
    /// `Require user`: one of these users.
    User(Vec<String>),
    /// `Require group` (mod_authz_groupfile): a user of one of these `AuthGroupFile` groups.
    Group(Vec<String>),
    /// `Require wsgi-group` (mod_wsgi): a user `groups_for_user()` of the
    /// `WSGIAuthGroupScript` puts in one of these groups.
    WsgiGroup(Vec<String>),
}

impl Requirement {
    /// Whether the test needs an authenticated user.
    pub fn needs_user(&self) -> bool {
        matches!(
            self,
            Requirement::ValidUser
                | Requirement::User(_)
                | Requirement::Group(_)
                | Requirement::WsgiGroup(_)
        )
    }
}

/// How a container combines its children.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Logic {
    /// `<RequireAll>`: every child grants (neutral children aside).
    All,
    /// `<RequireAny>` (and the lines of a section, which are an implicit one): one grants.
    Any,
    /// `<RequireNone>`: none grants (a negated `<RequireAny>`: it can deny, never grant).
    None,
}

/// A node of a section's authorization tree.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum AuthzNode {
    /// A `Require [not] ...` line.
    Require {
        /// `Require not`.
        negated: bool,
        /// What it tests.
        requirement: Requirement,
        /// Where it is.
        #[serde(skip)]
        span: Span,
    },
    /// A container (or the section's implicit `<RequireAny>`, without a span).
    Container {
        /// How it combines its children.
        logic: Logic,
        /// Where it opens (None: the section's implicit container).
        #[serde(skip)]
        span: Option<Span>,
        /// Its lines and containers, in order.
        children: Vec<AuthzNode>,
    },
}

/// What an authorization test answers (mod_authz_core's `authz_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Access granted.
    Granted,
    /// Access denied.
    Denied,
    /// Denied because no user is authenticated: ask for credentials.
    DeniedNoUser,
    /// The test has no opinion.
    Neutral,
}

/// What a request offers the tests.
pub struct AuthzRequest<'a> {
    /// The client's address.
    pub client: IpAddr,
    /// The address the request came in on.
    pub server: IpAddr,
    /// The method.
    pub method: &'a str,
    /// Whether an environment variable is set for the request.
    pub env_set: &'a dyn Fn(&str) -> bool,
    /// The authenticated user, if any.
    pub user: Option<&'a str>,
    /// The `AuthGroupFile` groups of the user.
    pub groups: &'a dyn Fn(&str) -> Vec<String>,
    /// The `WSGIAuthGroupScript` groups of the user.
    pub wsgi_groups: &'a dyn Fn(&str) -> Vec<String>,
    /// The client's host name, verified forward and back (None: it has none).
    pub host_name: &'a dyn Fn() -> Option<String>,
}

/// An IPv4 address mapped into IPv6 (`::ffff:a.b.c.d`), as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl Requirement {
    /// The test's answer, before any `not`.
    fn test(&self, req: &AuthzRequest<'_>) -> Outcome {
        let yes = |granted: bool| {
            if granted {
                Outcome::Granted
            } else {
                Outcome::Denied
            }
        };
        match self {
            Requirement::All(granted) => yes(*granted),
            Requirement::Ip(nets) => {
                let client = canonical(req.client);
                yes(nets.iter().any(|n| n.contains(client)))
            }
            Requirement::Local => {
                let client = canonical(req.client);
                yes(client.is_loopback() || client == canonical(req.server))
            }
            Requirement::Host(names) => {
                let Some(name) = (req.host_name)() else {
                    return Outcome::Denied;
                };
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                yes(names.iter().any(|n| {
                    let n = n.trim_start_matches('.').to_ascii_lowercase();
                    name == n || name.ends_with(&format!(".{n}"))
                }))
            }
            Requirement::Env(vars) => yes(vars.iter().any(|v| (req.env_set)(v))),
            Requirement::Method(methods) => {
                yes(methods.iter().any(|m| m.eq_ignore_ascii_case(req.method)))
            }
            Requirement::ValidUser
            | Requirement::User(_)
            | Requirement::Group(_)
            | Requirement::WsgiGroup(_) => {
                let Some(user) = req.user else {
                    return Outcome::DeniedNoUser;
                };
                match self {
                    Requirement::User(users) => yes(users.iter().any(|u| u == user)),
                    Requirement::Group(groups) => {
                        let of_user = (req.groups)(user);
                        yes(groups.iter().any(|g| of_user.contains(g)))
                    }
                    Requirement::WsgiGroup(groups) => {
                        let of_user = (req.wsgi_groups)(user);
                        yes(groups.iter().any(|g| of_user.contains(g)))
                    }
                    _ => Outcome::Granted,
                }
            }
        }
    }
}

/// `not`, as mod_authz_core applies it: a grant becomes a denial, a denial becomes no opinion
/// (not being denied is no reason to grant).
fn negate(outcome: Outcome) -> Outcome {
    match outcome {
        Outcome::Granted => Outcome::Denied,
        Outcome::Denied => Outcome::Neutral,
        other => other,
    }
}

impl AuthzNode {
    /// The node's answer for `req`.
    pub fn evaluate(&self, req: &AuthzRequest<'_>) -> Outcome {
        match self {
            AuthzNode::Require {
                negated,
                requirement,
                ..
            } => {
                let outcome = requirement.test(req);
                if *negated { negate(outcome) } else { outcome }
            }
            AuthzNode::Container {
                logic, children, ..
            } => {
                let mut result = Outcome::Neutral;
                for child in children {
                    let outcome = child.evaluate(req);
                    match logic {
                        Logic::All => match outcome {
                            Outcome::Granted => result = Outcome::Granted,
                            Outcome::Neutral => {}
                            denied => {
                                result = denied;
                                break;
                            }
                        },
                        Logic::Any | Logic::None => match outcome {
                            Outcome::Granted => {
                                result = Outcome::Granted;
                                break;
                            }
                            // Asking for a user beats a plain denial: the user may be granted.
                            Outcome::DeniedNoUser => result = Outcome::DeniedNoUser,
                            Outcome::Denied if result != Outcome::DeniedNoUser => {
                                result = Outcome::Denied
                            }
                            _ => {}
                        },
                    }
                }
                if *logic == Logic::None {
                    negate(result)
                } else {
                    result
                }
            }
        }
    }

    /// Whether a test of the tree needs the client's host name (a DNS lookup).
    pub fn needs_host_name(&self) -> bool {
        match self {
            AuthzNode::Require { requirement, .. } => matches!(requirement, Requirement::Host(_)),
            AuthzNode::Container { children, .. } => children.iter().any(Self::needs_host_name),
        }
    }

    /// Whether a test of the tree needs an authenticated user.
    pub fn needs_user(&self) -> bool {
        match self {
            AuthzNode::Require { requirement, .. } => requirement.needs_user(),
            AuthzNode::Container { children, .. } => children.iter().any(Self::needs_user),
        }
    }

    /// Adds `line` to the tree, inside the containers `path` names (outermost first, each
    /// by where it opens, created on first use).
    pub fn insert(&mut self, path: &[(Span, Logic)], line: AuthzNode) {
        let AuthzNode::Container { children, .. } = self else {
            return;
        };
        match path.split_first() {
            None => children.push(line),
            Some(((span, logic), rest)) => {
                let found = children.iter().position(
                    |c| matches!(c, AuthzNode::Container { span: Some(s), .. } if s == span),
                );
                let i = match found {
                    Some(i) => i,
                    None => {
                        children.push(AuthzNode::Container {
                            logic: *logic,
                            span: Some(span.clone()),
                            children: Vec::new(),
                        });
                        children.len() - 1
                    }
                };
                children[i].insert(rest, line);
            }
        }
    }

    /// A section's tree before its first line: the implicit `<RequireAny>`.
    pub fn section_root() -> AuthzNode {
        AuthzNode::Container {
            logic: Logic::Any,
            span: None,
            children: Vec::new(),
        }
    }
}

/// Reads a `Require ip` argument: an address, a CIDR network, `a.b.c.d/m.m.m.m`, or a
/// partial IPv4 address (`10.1` is `10.1.0.0/16`).
pub(crate) fn ip_spec(text: &str) -> Option<IpNet> {
    if let Some((addr, mask)) = text.split_once('/') {
        if let (Ok(IpAddr::V4(addr)), Ok(mask)) =
            (addr.parse::<IpAddr>(), mask.parse::<std::net::Ipv4Addr>())
        {
            let bits = u32::from(mask);
            if bits.leading_ones() + bits.trailing_zeros() != 32 {
                return None;
            }
            return Some(IpNet {
                addr: IpAddr::V4(addr),
                prefix: bits.leading_ones() as u8,
            });
        }
        return IpNet::parse(text);
    }
    if let Some(net) = IpNet::parse(text) {
        return Some(net);
    }
    let parts: Vec<&str> = text.trim_end_matches('.').split('.').collect();
    if parts.is_empty() || parts.len() > 3 {
        return None;
    }
    let mut octets = [0u8; 4];
    for (o, p) in octets.iter_mut().zip(&parts) {
        *o = p.parse().ok()?;
    }
    Some(IpNet {
        addr: IpAddr::V4(octets.into()),
        prefix: 8 * parts.len() as u8,
    })
}

/// Reads a `Require` line's arguments: `(negated, requirement)`, or why `wsgi serve` does not
/// implement it.
pub fn parse_require(args: &[String]) -> Result<(bool, Requirement), String> {
    let (negated, args) = match args.split_first() {
        Some((not, rest)) if not.eq_ignore_ascii_case("not") => (true, rest),
        _ => (false, args),
    };
    let Some((provider, values)) = args.split_first() else {
        return Err("`Require` names no provider".into());
    };
    let values: Vec<String> = values.to_vec();
    let needs_values = |what: &str| -> Result<(), String> {
        if values.is_empty() {
            Err(format!("`Require {provider}` names no {what}"))
        } else {
            Ok(())
        }
    };
    let requirement = match provider.to_ascii_lowercase().as_str() {
        "all" => match values.as_slice() {
            [g] if g.eq_ignore_ascii_case("granted") => Requirement::All(true),
            [d] if d.eq_ignore_ascii_case("denied") => Requirement::All(false),
            _ => return Err("`Require all` takes `granted` or `denied`".into()),
        },
        "ip" => {
            needs_values("address")?;
            let mut nets = Vec::new();
            for v in &values {
                nets.push(ip_spec(v).ok_or_else(|| {
                    format!("`{v}` is not an address or network of `Require ip`")
                })?);
            }
            Requirement::Ip(nets)
        }
        "local" => Requirement::Local,
        "host" => {
            needs_values("host name")?;
            Requirement::Host(values)
        }
        "env" => {
            needs_values("variable")?;
            Requirement::Env(values)
        }
        "method" => {
            needs_values("method")?;
            Requirement::Method(values)
        }
        "valid-user" => Requirement::ValidUser,
        "user" => {
            needs_values("user")?;
            Requirement::User(values)
        }
        "group" => {
            needs_values("group")?;
            Requirement::Group(values)
        }
        "wsgi-group" => {
            needs_values("group")?;
            Requirement::WsgiGroup(values)
        }
        other => {
            return Err(format!(
                "the authorization provider `{other}` is not implemented by wsgi serve (all, ip, local, host, env, method, valid-user, user, group and wsgi-group are)"
            ));
        }
    };
    Ok((negated, requirement))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn span(line: u32) -> Span {
        Span {
            file: Arc::from(std::path::Path::new("site.conf")),
            line,
        }
    }

    fn line(text: &str) -> AuthzNode {
        let words: Vec<String> = text.split_whitespace().map(String::from).collect();
        let (negated, requirement) = parse_require(&words).unwrap();
        AuthzNode::Require {
            negated,
            requirement,
            span: span(1),
        }
    }

    fn tree(logic: Logic, lines: &[&str]) -> AuthzNode {
        AuthzNode::Container {
            logic,
            span: None,
            children: lines.iter().map(|l| line(l)).collect(),
        }
    }

    fn request<'a>(client: &str, user: Option<&'a str>) -> AuthzRequest<'a> {
        AuthzRequest {
            client: client.parse().unwrap(),
            server: "192.0.2.10".parse().unwrap(),
            method: "GET",
            env_set: &|v| v == "TRUSTED",
            user,
            groups: &|u| {
                if u == "alice" {
                    vec!["admins".into()]
                } else {
                    Vec::new()
                }
            },
            host_name: &|| Some("client.example.com".into()),
            wsgi_groups: &|_| Vec::new(),
        }
    }

    #[test]
    fn ip_specs_as_apache_reads_them() {
        let nets = |t: &str| match parse_require(&["ip".into(), t.into()]).unwrap().1 {
            Requirement::Ip(n) => n[0].clone(),
            _ => unreachable!(),
        };
        assert_eq!(nets("10.1").prefix, 16);
        assert!(nets("10.1").contains("10.1.200.3".parse().unwrap()));
        assert_eq!(nets("10.1.0.0/255.255.0.0"), nets("10.1.0.0/16"));
        assert!(nets("2001:db8::/32").contains("2001:db8::1".parse().unwrap()));
        assert!(parse_require(&["ip".into(), "10.0.0.0/255.0.255.0".into()]).is_err());
        assert!(parse_require(&["ip".into(), "example.com".into()]).is_err());
        assert!(parse_require(&["expr".into(), "true".into()]).is_err());
    }

    #[test]
    fn a_section_grants_when_one_line_does() {
        let t = tree(Logic::Any, &["ip 192.0.2.1", "env TRUSTED"]);
        assert_eq!(t.evaluate(&request("127.0.0.1", None)), Outcome::Granted);
        let t = tree(Logic::Any, &["ip 192.0.2.1", "host example.org"]);
        assert_eq!(t.evaluate(&request("127.0.0.1", None)), Outcome::Denied);
        let t = tree(Logic::Any, &["host .example.com"]);
        assert_eq!(t.evaluate(&request("127.0.0.1", None)), Outcome::Granted);
    }

    #[test]
    fn a_user_line_asks_for_a_user_before_it_denies() {
        let t = tree(Logic::Any, &["ip 192.0.2.1", "valid-user"]);
        assert_eq!(
            t.evaluate(&request("127.0.0.1", None)),
            Outcome::DeniedNoUser
        );
        assert_eq!(
            t.evaluate(&request("127.0.0.1", Some("bob"))),
            Outcome::Granted
        );
        let t = tree(Logic::Any, &["group admins"]);
        assert_eq!(t.evaluate(&request("::1", Some("bob"))), Outcome::Denied);
        assert_eq!(t.evaluate(&request("::1", Some("alice"))), Outcome::Granted);
    }

    #[test]
    fn not_denies_but_never_grants() {
        let all = tree(Logic::All, &["all granted", "not ip 127.0.0.0/8"]);
        assert_eq!(all.evaluate(&request("127.0.0.1", None)), Outcome::Denied);
        assert_eq!(all.evaluate(&request("192.0.2.5", None)), Outcome::Granted);
        let alone = tree(Logic::All, &["not ip 127.0.0.0/8"]);
        assert_eq!(
            alone.evaluate(&request("192.0.2.5", None)),
            Outcome::Neutral
        );
        let none = tree(Logic::None, &["ip 127.0.0.1", "method POST"]);
        assert_eq!(none.evaluate(&request("127.0.0.1", None)), Outcome::Denied);
        assert_eq!(none.evaluate(&request("192.0.2.5", None)), Outcome::Neutral);
    }

    #[test]
    fn local_is_loopback_or_the_server_itself() {
        let t = tree(Logic::Any, &["local"]);
        assert_eq!(
            t.evaluate(&request("::ffff:127.0.0.1", None)),
            Outcome::Granted
        );
        assert_eq!(t.evaluate(&request("192.0.2.10", None)), Outcome::Granted);
        assert_eq!(t.evaluate(&request("192.0.2.11", None)), Outcome::Denied);
    }

    #[test]
    fn lines_go_into_their_containers() {
        let mut root = AuthzNode::section_root();
        let all = (span(2), Logic::All);
        let none = (span(4), Logic::None);
        root.insert(std::slice::from_ref(&all), line("valid-user"));
        root.insert(&[all.clone(), none.clone()], line("ip 192.0.2.1"));
        root.insert(&[all], line("method GET"));
        let AuthzNode::Container { children, .. } = &root else {
            unreachable!()
        };
        assert_eq!(children.len(), 1);
        let AuthzNode::Container {
            children, logic, ..
        } = &children[0]
        else {
            unreachable!()
        };
        assert_eq!(*logic, Logic::All);
        assert_eq!(children.len(), 3);
        assert!(root.needs_user() && !root.needs_host_name());
    }
}
