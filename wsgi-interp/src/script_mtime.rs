//! A script's modification time as `stat` would give it now, without a `stat` per request.
//!
//! mod_wsgi looks at a script's modification time on every request (Apache stats the file as
//! it maps the URL), to reload a changed script and to answer 404 for a missing one, and
//! `load_script` does the same. A `statx` costs about 1.2 µs here, a tenth of
//! what a small request costs `wsgi serve` in all. [`Watch`] keeps the answer instead and
//! watches, with inotify, every directory that resolving the script's path looks in (the
//! path's own and, through symbolic links, their targets'), and the file itself. A change to
//! anything that decides what `stat` would return (the file written, touched, replaced,
//! renamed or removed, a directory or symbolic link on the way swapped, as deployments that
//! switch a `current` link do) queues an event inside the system call that makes the change;
//! a question first reads the queue without blocking (one cheap system call), and a pertinent
//! event drops every kept answer. So the answer is always the one a `stat` would give at some
//! moment after the request arrived, as in mod_wsgi (where Apache's `stat` is made as it maps
//! the request). A read that began after a request arrived answers for it too: a change its
//! client made, or could have known of, before sending it was queued before then. Under load
//! one read serves the requests that came in together.
//!
//! Where inotify cannot see every change (a network or FUSE file system, whose files another
//! machine may change; an unreadable directory; no inotify watches left), the path is
//! `stat`ed on every question, as before. A forked child makes its own watch: it must not
//! share its parent's event queue.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use inotify::{EventMask, Inotify, WatchMask};
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use wsgi_config::path_walk::WalkError;

use crate::path_map::PathMap;

/// The modification time of `path` (following symbolic links), as `stat` gives it now, or gave
/// it at some moment after `received` (when this process had read the request asking).
///
/// Answers from the process's [`Watch`]; while another thread holds it, or where inotify is
/// unavailable, with a `stat`.
pub(crate) fn modified(path: &Path, received: Option<Instant>) -> io::Result<SystemTime> {
    /// The process's watch, or the fork count at which making one failed (no inotify
    /// instance left for this user, say): not tried again until the next fork.
    static WATCH: Mutex<Option<Result<Watch, u64>>> = Mutex::new(None);
    let Some(forks) = crate::forks::forks() else {
        return stat(path);
    };
    let Some(mut slot) = WATCH.try_lock() else {
        return stat(path);
    };
    if !tried_since_fork(slot.as_ref(), forks) {
        *slot = Some(Watch::new().map_err(|_| forks));
    }
    match slot.as_mut() {
        Some(Ok(watch)) => watch.modified(path, received),
        _ => stat(path),
    }
}

/// Whether `slot` holds this process's own attempt at a watch, `forks` being
/// [`crate::forks::forks`] now: a watch made before the last fork shares its queue with the
/// parent, and a failure before it may not happen again.
fn tried_since_fork(slot: Option<&Result<Watch, u64>>, forks: u64) -> bool {
    match slot {
        Some(Ok(watch)) => watch.forks == forks,
        Some(Err(failed_at)) => *failed_at == forks,
        None => false,
    }
}

/// What inotify reports on a watched directory or file: everything that can change what
/// `stat` of a path through it returns. A directory's events name the entry they concern.
const EVENTS: WatchMask = WatchMask::CREATE
    .union(WatchMask::DELETE)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::ATTRIB)
    .union(WatchMask::MODIFY)
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::MOVE_SELF);

/// File systems whose every change inotify reports (local ones); on others (NFS, SMB, FUSE,
/// 9p...) another machine or a user-space server may change a file unseen.
const LOCAL_FILE_SYSTEMS: &[libc::c_long] = &[
    0xEF53,      // ext2, ext3, ext4
    0x5846_5342, // xfs
    0x9123_683E, // btrfs
    0x0102_1994, // tmpfs
    0x8584_58F6, // ramfs
    0x794C_7630, // overlayfs
    0x2FC1_2FC1, // zfs
    0xF2F5_2010, // f2fs
    0xCA45_1A4E, // bcachefs
    0x5265_4973, // reiserfs
    0x3153_464A, // jfs
    0x7371_7368, // squashfs
    0x9660,      // iso9660
    0xE0F5_E1E2, // erofs
];

/// Whether the file system holding `path` is one of [`LOCAL_FILE_SYSTEMS`].
fn on_local_file_system(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|fs| LOCAL_FILE_SYSTEMS.contains(&(fs.filesystem_type().0 as libc::c_long)))
}

fn stat(path: &Path) -> io::Result<SystemTime> {
    std::fs::metadata(path).and_then(|meta| meta.modified())
}

/// What a [`Watch`] knows of a path until the next pertinent event.
#[derive(Debug, Clone, Copy)]
enum Known {
    /// Its modification time, every change to which inotify will report.
    Modified(SystemTime),
    /// Some change to it inotify would not report: `stat` it each time.
    Unwatched,
}

/// Kept modification times, and the inotify watches that say when one may be out of date.
pub(crate) struct Watch {
    inotify: Inotify,
    /// Per watched directory (by watch descriptor), the entries looked up in it on the way to
    /// a kept path: events about other entries change nothing kept. A watched file's own
    /// events name no entry and always count.
    entries: FxHashMap<i32, Vec<OsString>>,
    known: PathMap<Known>,
    /// Room for events read from the queue.
    buffer: Box<[u8]>,
    /// [`crate::forks::forks`] when this watch was made.
    forks: u64,
    /// When the last read of the queue began: it saw every event queued before then.
    read_at: Option<Instant>,
    /// `stat` calls made (for tests).
    stats: u64,
    /// Reads of the queue (for tests).
    reads: u64,
}

impl Watch {
    /// A watch with nothing kept yet.
    pub(crate) fn new() -> io::Result<Watch> {
        Ok(Watch {
            inotify: Inotify::init()?,
            entries: FxHashMap::default(),
            known: PathMap::default(),
            buffer: vec![0; 4096].into_boxed_slice(),
            forks: crate::forks::forks().unwrap_or(0),
            read_at: None,
            stats: 0,
            reads: 0,
        })
    }

    /// The modification time of `path`, as `stat` gives it now, or gave it at some moment
    /// after `received`: a read of the queue that began later saw every change made before.
    pub(crate) fn modified(
        &mut self,
        path: &Path,
        received: Option<Instant>,
    ) -> io::Result<SystemTime> {
        let covered = matches!((received, self.read_at), (Some(r), Some(read)) if read > r);
        if !covered {
            let began = Instant::now();
            self.read_events();
            self.read_at = Some(began);
        }
        match self.known.get(path) {
            Some(Known::Modified(mtime)) => return Ok(*mtime),
            Some(Known::Unwatched) => return self.stat(path),
            None => {}
        }
        // Watches first: a change after they are in place is reported, so one between them
        // and the `stat` drops the answer at the next question.
        let watched = self.add_watches(path);
        let mtime = self.stat(path)?;
        let known = if watched {
            Known::Modified(mtime)
        } else {
            Known::Unwatched
        };
        self.known.insert(path.to_path_buf(), known);
        Ok(mtime)
    }

    fn stat(&mut self, path: &Path) -> io::Result<SystemTime> {
        self.stats += 1;
        stat(path)
    }

    /// Reads every queued event; drops all kept answers and watches if one may concern them
    /// (a kept path's entry or file, a watched directory itself, a lost event or a removed
    /// watch).
    fn read_events(&mut self) {
        self.reads += 1;
        let mut pertinent = false;
        loop {
            let events = match self.inotify.read_events(&mut self.buffer) {
                Ok(events) => events,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    // Nothing can be trusted without the queue.
                    pertinent = true;
                    break;
                }
            };
            for event in events {
                let wd = event.wd.get_watch_descriptor_id();
                if event.mask.contains(EventMask::IGNORED) {
                    self.entries.remove(&wd);
                    pertinent = true;
                    continue;
                }
                pertinent |= match event.name {
                    None => true,
                    Some(name) => self
                        .entries
                        .get(&wd)
                        .is_none_or(|names| names.iter().any(|n| n == name)),
                };
            }
        }
        if pertinent {
            // Start afresh: a new queue drops the old watches too, of directories and files
            // that may no longer be on any kept path (the release a `current` link left).
            self.known.clear();
            self.entries.clear();
            if let Ok(fresh) = Inotify::init() {
                self.inotify = fresh;
            }
        }
    }

    /// Watches every directory resolving `path` looks in (with the entry it looks up) and the
    /// file; false if some change to them would go unreported.
    fn add_watches(&mut self, path: &Path) -> bool {
        let Ok(lookups) = lookups(path) else {
            return false;
        };
        if !on_local_file_system(path) {
            return false;
        }
        for (dir, name) in lookups {
            if !on_local_file_system(&dir) {
                return false;
            }
            let Ok(wd) = self
                .inotify
                .watches()
                .add(&dir, EVENTS | WatchMask::ONLYDIR)
            else {
                return false;
            };
            let names = self
                .entries
                .entry(wd.get_watch_descriptor_id())
                .or_default();
            if !names.contains(&name) {
                names.push(name);
            }
        }
        // The file itself too: a write through another hard link is reported only to it.
        self.inotify.watches().add(path, EVENTS).is_ok()
    }
}

/// The lookups resolving absolute `path` makes, in order: each directory (itself resolved,
/// with no symbolic link in it) with the entry looked up in it, through symbolic links as
/// `stat` follows them ([`wsgi_config::path_walk`]).
fn lookups(path: &Path) -> io::Result<Vec<(PathBuf, OsString)>> {
    let mut lookups = Vec::new();
    wsgi_config::path_walk::walk(path, |step| {
        lookups.push((step.dir.to_path_buf(), step.name.to_os_string()));
        Ok::<(), std::convert::Infallible>(())
    })
    .map_err(|e| match e {
        WalkError::Io { error, .. } => error,
        WalkError::Visit(never) => match never {},
    })?;
    Ok(lookups)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn write(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
    }

    /// Sets `path`'s modification time to `secs` after the epoch (a change a same-second
    /// rewrite might not make).
    fn set_mtime(path: &Path, secs: u64) {
        let file = std::fs::File::options().write(true).open(path).unwrap();
        file.set_modified(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs))
            .unwrap();
    }

    /// Asks `watch` about `path` and checks the answer against a fresh `stat`.
    fn agrees(watch: &mut Watch, path: &Path) -> io::Result<SystemTime> {
        let answer = watch.modified(path, None);
        match (&answer, stat(path)) {
            (Ok(a), Ok(b)) => assert_eq!(*a, b, "{}", path.display()),
            (Err(a), Err(b)) => assert_eq!(a.kind(), b.kind()),
            (a, b) => panic!("watch says {a:?}, stat says {b:?}"),
        }
        answer
    }

    /// `app.wsgi` in `dir`, modified at 1,000 s after the epoch.
    fn script_in(dir: &Path) -> PathBuf {
        let script = dir.join("app.wsgi");
        write(&script, "one");
        set_mtime(&script, 1_000);
        script
    }

    #[test]
    fn answers_are_kept_until_the_script_changes() {
        let dir = tempfile::tempdir().unwrap();
        let script = script_in(dir.path());
        let mut watch = Watch::new().unwrap();
        agrees(&mut watch, &script).unwrap();
        let stats = watch.stats;
        for _ in 0..5 {
            agrees(&mut watch, &script).unwrap();
        }
        assert_eq!(watch.stats, stats, "unchanged: no stat");

        // Written in place, touched, replaced by a rename, removed, created again.
        write(&script, "two");
        set_mtime(&script, 2_000);
        assert_eq!(
            agrees(&mut watch, &script).unwrap(),
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(2_000)
        );
        set_mtime(&script, 3_000);
        agrees(&mut watch, &script).unwrap();
        let new = dir.path().join("app.wsgi.new");
        write(&new, "three");
        set_mtime(&new, 4_000);
        std::fs::rename(&new, &script).unwrap();
        agrees(&mut watch, &script).unwrap();
        // The replacement is watched too.
        set_mtime(&script, 5_000);
        agrees(&mut watch, &script).unwrap();
        std::fs::remove_file(&script).unwrap();
        assert!(agrees(&mut watch, &script).is_err());
        assert!(agrees(&mut watch, &script).is_err());
        write(&script, "four");
        set_mtime(&script, 6_000);
        agrees(&mut watch, &script).unwrap();
        let stats = watch.stats;
        agrees(&mut watch, &script).unwrap();
        assert_eq!(watch.stats, stats);
    }

    #[test]
    fn other_entries_of_the_same_directories_change_nothing_kept() {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("app");
        std::fs::create_dir(&app).unwrap();
        let script = app.join("app.wsgi");
        write(&script, "one");
        let mut watch = Watch::new().unwrap();
        agrees(&mut watch, &script).unwrap();
        let stats = watch.stats;
        // What an application does beside its script: a log written, a database's journal
        // made and removed, `__pycache__` made; a sibling directory of an ancestor.
        write(&app.join("app.log"), "line");
        write(&app.join("db.sqlite-journal"), "x");
        std::fs::remove_file(app.join("db.sqlite-journal")).unwrap();
        std::fs::create_dir(app.join("__pycache__")).unwrap();
        std::fs::create_dir(dir.path().join("other")).unwrap();
        agrees(&mut watch, &script).unwrap();
        assert_eq!(watch.stats, stats, "no stat for other entries' events");
        // The script's directory renamed away and back: its entry in the parent changed.
        std::fs::rename(&app, dir.path().join("moved")).unwrap();
        assert!(agrees(&mut watch, &script).is_err());
        std::fs::rename(dir.path().join("moved"), &app).unwrap();
        agrees(&mut watch, &script).unwrap();
    }

    #[test]
    fn a_switched_release_link_is_seen() {
        // A deployment's layout: `current` links to the release being served, and switching
        // it (a new link renamed over the old) serves another file at the same path.
        let dir = tempfile::tempdir().unwrap();
        let (one, two) = (dir.path().join("releases/1"), dir.path().join("releases/2"));
        for (release, secs) in [(&one, 1_000), (&two, 2_000)] {
            std::fs::create_dir_all(release).unwrap();
            write(&release.join("app.wsgi"), "release");
            set_mtime(&release.join("app.wsgi"), secs);
        }
        symlink("releases/1", dir.path().join("current")).unwrap();
        let script = dir.path().join("current/app.wsgi");
        let mut watch = Watch::new().unwrap();
        let first = agrees(&mut watch, &script).unwrap();
        let next = dir.path().join("current.next");
        symlink(&two, &next).unwrap();
        std::fs::rename(&next, dir.path().join("current")).unwrap();
        let second = agrees(&mut watch, &script).unwrap();
        assert_ne!(first, second);
        // A change in the old release no longer matters; one in the new one does.
        let stats = watch.stats;
        set_mtime(&one.join("app.wsgi"), 7_000);
        agrees(&mut watch, &script).unwrap();
        assert_eq!(watch.stats, stats);
        set_mtime(&two.join("app.wsgi"), 8_000);
        agrees(&mut watch, &script).unwrap();
        // A link to the script itself, and `..` after a link.
        let direct = dir.path().join("direct.wsgi");
        symlink(two.join("app.wsgi"), &direct).unwrap();
        agrees(&mut watch, &direct).unwrap();
        let dotted = dir.path().join("current/../2/app.wsgi");
        agrees(&mut watch, &dotted).unwrap();
        set_mtime(&two.join("app.wsgi"), 9_000);
        agrees(&mut watch, &direct).unwrap();
        agrees(&mut watch, &dotted).unwrap();
    }

    #[test]
    fn a_watch_is_made_once_per_process_and_a_failure_is_not_retried_until_a_fork() {
        assert!(!tried_since_fork(None, 0));
        assert!(
            tried_since_fork(Some(&Err(2)), 2),
            "failed here: stat, no new try"
        );
        assert!(
            !tried_since_fork(Some(&Err(2)), 3),
            "failed in the parent: try again"
        );
        let watch = Watch::new().unwrap();
        let forks = watch.forks;
        let made = Ok(watch);
        assert!(tried_since_fork(Some(&made), forks));
        assert!(
            !tried_since_fork(Some(&made), forks + 1),
            "the parent's queue"
        );
    }

    #[test]
    fn a_read_after_a_request_arrived_answers_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let script = script_in(dir.path());
        let at = |secs| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        let mut watch = Watch::new().unwrap();
        let first = Instant::now();
        assert_eq!(watch.modified(&script, Some(first)).unwrap(), at(1_000));
        let reads = watch.reads;
        // Another request that arrived before that read: answered without one.
        assert_eq!(watch.modified(&script, Some(first)).unwrap(), at(1_000));
        assert_eq!(watch.reads, reads);

        // A request that arrives after a change reads the queue and sees it.
        set_mtime(&script, 2_000);
        let after_change = Instant::now();
        assert_eq!(
            watch.modified(&script, Some(after_change)).unwrap(),
            at(2_000)
        );
        assert_eq!(watch.reads, reads + 1);

        // A change after that read is not seen by requests that arrived before it: they get
        // the file as it was at a moment after they arrived, as a `stat` in mod_wsgi's
        // request mapping would have. A request arriving after it, and a question for no
        // request, read again.
        set_mtime(&script, 3_000);
        assert_eq!(
            watch.modified(&script, Some(after_change)).unwrap(),
            at(2_000)
        );
        assert_eq!(watch.reads, reads + 1);
        assert_eq!(
            watch.modified(&script, Some(Instant::now())).unwrap(),
            at(3_000)
        );
        assert_eq!(watch.reads, reads + 2);
        set_mtime(&script, 4_000);
        assert_eq!(watch.modified(&script, None).unwrap(), at(4_000));
        assert_eq!(watch.reads, reads + 3);
    }

    #[test]
    fn paths_inotify_cannot_follow_are_stat_ed_each_time() {
        // /proc is not a local file system in this sense: its files change unreported.
        let path = Path::new("/proc/self/stat");
        let mut watch = Watch::new().unwrap();
        watch.modified(path, None).unwrap();
        watch.modified(path, None).unwrap();
        assert_eq!(watch.stats, 2);
        assert!(matches!(watch.known.get(path), Some(Known::Unwatched)));
    }
}
