//! The identity a daemon group's processes take when the supervisor runs as root: its
//! user, primary group and supplementary groups, looked up by name or `#id`.

use nix::unistd::{Group, Uid, User};
use wsgi_config::{Config, DaemonGroup};

use super::SupervisorError;
use crate::spec::Identity;

pub(super) fn lookup_user(group: &str, spec: &str) -> Result<(u32, u32, String), SupervisorError> {
    let missing = || SupervisorError::NoSuchId {
        group: group.to_string(),
        what: "user",
        name: spec.to_string(),
    };
    if let Some(id) = spec.strip_prefix('#') {
        let uid: u32 = id.parse().map_err(|_| missing())?;
        let user = User::from_uid(Uid::from_raw(uid)).ok().flatten();
        return Ok(match user {
            Some(u) => (uid, u.gid.as_raw(), u.name),
            None => (uid, uid, spec.to_string()),
        });
    }
    let user = User::from_name(spec).ok().flatten().ok_or_else(missing)?;
    Ok((user.uid.as_raw(), user.gid.as_raw(), user.name))
}

fn lookup_group(group: &str, what: &'static str, spec: &str) -> Result<u32, SupervisorError> {
    let missing = || SupervisorError::NoSuchId {
        group: group.to_string(),
        what,
        name: spec.to_string(),
    };
    if let Some(id) = spec.strip_prefix('#') {
        return id.parse().map_err(|_| missing());
    }
    let g = Group::from_name(spec).ok().flatten().ok_or_else(missing)?;
    Ok(g.gid.as_raw())
}

pub(super) fn resolve_identity(
    group: &DaemonGroup,
    config: &Config,
) -> Result<Identity, SupervisorError> {
    let o = &group.options;
    let user = o
        .user
        .as_deref()
        .or(config.user.as_deref())
        .ok_or_else(|| SupervisorError::WouldRunAsRoot(group.name.clone()))?;
    let (uid, primary, user_name) = lookup_user(&group.name, user)?;
    if uid == 0 {
        return Err(SupervisorError::WouldRunAsRoot(group.name.clone()));
    }
    let gid = match o.group.as_deref().or(config.group.as_deref()) {
        Some(g) => lookup_group(&group.name, "group", g)?,
        None => primary,
    };
    let supplementary = if o.supplementary_groups.is_empty() {
        None
    } else {
        Some(
            o.supplementary_groups
                .iter()
                .map(|g| lookup_group(&group.name, "supplementary group", g))
                .collect::<Result<Vec<_>, _>>()?,
        )
    };
    Ok(Identity {
        user_name,
        uid,
        gid,
        supplementary,
    })
}
