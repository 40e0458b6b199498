//! A daemon group's listening socket: a private directory under `WSGISocketPrefix` (or the
//! temporary directory) holding the socket, owned by the user the front connects as.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use nix::sys::socket::{AddressFamily, Backlog, SockFlag, SockType, UnixAddr};
use nix::unistd::{Gid, Uid};
use wsgi_config::{Config, DaemonGroup};

use super::{SupervisorError, SupervisorOptions};

/// Creates `<base>.<pid>.<id>.XXXXXX/` (mode 0700) holding `sock` (mode 0600), both owned by
/// `owner` when given, listening with the group's listen-backlog.
pub(super) fn create_socket(
    config: &Config,
    options: &SupervisorOptions,
    group: &DaemonGroup,
    id: usize,
    pid: u32,
    owner: Option<u32>,
) -> Result<(tempfile::TempDir, PathBuf, UnixListener), SupervisorError> {
    let (parent, base) = match &config.server.socket_prefix {
        Some(prefix) => {
            let prefix = if prefix.is_absolute() {
                prefix.clone()
            } else {
                config.server_root.join(prefix)
            };
            let parent = prefix
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| "/".into());
            let base = prefix
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "wsgi".into());
            (parent, base)
        }
        None => (
            options
                .socket_dir
                .clone()
                .unwrap_or_else(std::env::temp_dir),
            "wsgi-rs".to_string(),
        ),
    };
    let err = |path: &Path, source: io::Error| SupervisorError::Socket {
        group: group.name.clone(),
        path: path.to_path_buf(),
        source,
    };
    let dir = tempfile::Builder::new()
        .prefix(&format!("{base}.{pid}.{id}."))
        .tempdir_in(&parent)
        .map_err(|e| err(&parent, e))?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
        .map_err(|e| err(dir.path(), e))?;
    let path = dir.path().join("sock");
    let len = path.as_os_str().len();
    if len > 107 {
        return Err(SupervisorError::PathTooLong { path, len });
    }
    let fd = nix::sys::socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| err(&path, e.into()))?;
    let addr = UnixAddr::new(&path).map_err(|e| err(&path, e.into()))?;
    {
        use std::os::fd::AsRawFd;
        nix::sys::socket::bind(fd.as_raw_fd(), &addr).map_err(|e| err(&path, e.into()))?;
    }
    let backlog = Backlog::new(group.options.listen_backlog.min(i32::MAX as u32) as i32)
        .unwrap_or(Backlog::MAXCONN);
    nix::sys::socket::listen(&fd, backlog).map_err(|e| err(&path, e.into()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| err(&path, e))?;
    if let Some(uid) = owner {
        let uid = Some(Uid::from_raw(uid));
        nix::unistd::chown(dir.path(), uid, None::<Gid>).map_err(|e| err(dir.path(), e.into()))?;
        nix::unistd::chown(&path, uid, None::<Gid>).map_err(|e| err(&path, e.into()))?;
    }
    Ok((dir, path, UnixListener::from(fd)))
}
