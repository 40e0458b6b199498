//! Scratch folders and files. The servers under test often run as another user (`nobody`,
//! `www-data`) than the tests (root): what they must read is made world-readable here.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A scratch folder under /var/tmp named `PREFIX…`, private to this user (0700), removed when
/// dropped.
pub fn scratch(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/var/tmp")
        .unwrap()
}

/// A world-readable (0755) scratch folder under /var/tmp named `PREFIX…`, removed when
/// dropped.
pub fn scratch_world_readable(prefix: &str) -> tempfile::TempDir {
    scratch_world_readable_in("/var/tmp", prefix)
}

/// A world-readable (0755) scratch folder in `parent` named `PREFIX…`, removed when dropped.
pub fn scratch_world_readable_in(parent: impl AsRef<Path>, prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(parent)
        .expect("create a temporary folder");
    chmod(dir.path(), 0o755);
    dir
}

/// Sets the permission bits of `path` to `mode` (whatever the umask made them).
pub fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// Writes `text` to `path` (with the umask's permissions); returns the path.
pub fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

/// [`write()`], then the file made world-readable (0644, whatever the umask).
pub fn write_world_readable(path: &Path, text: &str) -> PathBuf {
    write(path, text);
    chmod(path, 0o644);
    path.to_path_buf()
}

/// Creates the folder `path` (and its missing parents) and makes it world-readable (0755);
/// returns the path.
pub fn create_dir_world_readable(path: &Path) -> PathBuf {
    std::fs::create_dir_all(path).unwrap();
    chmod(path, 0o755);
    path.to_path_buf()
}
