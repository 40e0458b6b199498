//! Maps keyed by file paths that hash a path from its bytes ([`PathMap`]).
//!
//! std hashes a `Path` component by component, as its `==` compares it (`/a//b` and `/a/b`
//! are one path): 381 instructions for a 30-byte script path, and every request looks its
//! script up twice (the loaded scripts, the modification times). Here a path written plainly
//! (no repeated `/`, no `.` component but a leading one, no trailing `/`: [`is_plain`]) is
//! hashed as its bytes, about a tenth of that; any other as the bytes of the plain path its
//! components make, which are the bytes of every plain path equal to it. So paths equal as
//! `Path`s hash alike, and a lookup finds an entry however either was written.

use std::hash::{Hash, Hasher};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A map from file paths, looked up by `&Path` ([`PathMap::get`]...).
pub(crate) struct PathMap<V> {
    map: hashbrown::HashMap<PathKey, V, rustc_hash::FxBuildHasher>,
}

impl<V> Default for PathMap<V> {
    fn default() -> Self {
        PathMap {
            map: hashbrown::HashMap::with_hasher(rustc_hash::FxBuildHasher),
        }
    }
}

impl<V> PathMap<V> {
    /// The value of `path`.
    pub(crate) fn get(&self, path: &Path) -> Option<&V> {
        self.map.get(&PathQuery(path))
    }

    /// Sets the value of `path`, giving back the one it replaced.
    pub(crate) fn insert(&mut self, path: PathBuf, value: V) -> Option<V> {
        self.map.insert(PathKey(path), value)
    }

    /// Takes `path` out, with its value.
    pub(crate) fn remove(&mut self, path: &Path) -> Option<V> {
        self.map.remove(&PathQuery(path))
    }

    /// Empties the map.
    pub(crate) fn clear(&mut self) {
        self.map.clear();
    }

    /// Empties the map, giving each path and value.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = (PathBuf, V)> + '_ {
        self.map.drain().map(|(PathKey(path), value)| (path, value))
    }

    /// The hash `path` has in this map (what an equal path's is).
    #[cfg(test)]
    fn hash_of(&self, path: &Path) -> u64 {
        use std::hash::BuildHasher;
        self.map.hasher().hash_one(PathQuery(path))
    }
}

/// A path as a key: equal as `Path`s, hashed as [`hash_path`].
#[derive(PartialEq, Eq)]
struct PathKey(PathBuf);

impl Hash for PathKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_path(&self.0, state);
    }
}

/// A borrowed path to look a [`PathKey`] up with.
struct PathQuery<'a>(&'a Path);

impl Hash for PathQuery<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_path(self.0, state);
    }
}

impl hashbrown::Equivalent<PathKey> for PathQuery<'_> {
    fn equivalent(&self, key: &PathKey) -> bool {
        // The same bytes, else `Path`'s own comparison (component by component).
        self.0.as_os_str().as_bytes() == key.0.as_os_str().as_bytes() || self.0 == key.0
    }
}

/// Feeds `state` the bytes of `path` written plainly: its own when it is ([`is_plain`]).
fn hash_path<H: Hasher>(path: &Path, state: &mut H) {
    let bytes = path.as_os_str().as_bytes();
    if is_plain(bytes) {
        state.write(bytes);
    } else {
        let plain: PathBuf = path.components().collect();
        state.write(plain.as_os_str().as_bytes());
    }
}

/// Whether `path` is written as its components make it (`Path::components`, collected
/// again): no empty component (`a//b`), no `.` but a leading one (`a/./b`, `a/.`), and no
/// trailing `/` but the root's.
fn is_plain(path: &[u8]) -> bool {
    // A byte loop: a path has a few separators, and `memchr` per separator costs more.
    (0..path.len()).all(|at| {
        path[at] != b'/'
            || match path.get(at + 1) {
                None => at == 0,
                Some(b'/') => false,
                Some(b'.') => !matches!(path.get(at + 2), None | Some(b'/')),
                Some(_) => true,
            }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every path of up to four parts from `parts`, with and without a leading and a
    /// trailing `/`.
    fn spellings() -> Vec<String> {
        let parts = ["a", "", ".", "..", "b.wsgi", ".x"];
        let mut paths = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..4 {
            let mut next = Vec::new();
            for p in &last {
                for part in parts {
                    next.push(if p.is_empty() {
                        part.to_string()
                    } else {
                        format!("{p}/{part}")
                    });
                }
            }
            paths.extend(next.iter().cloned());
            last = next;
        }
        let mut all = Vec::new();
        for p in paths {
            all.push(format!("/{p}"));
            all.push(format!("{p}/"));
            all.push(p);
        }
        all.sort();
        all.dedup();
        all
    }

    #[test]
    fn a_plain_path_is_what_its_components_make() {
        for p in spellings() {
            let path = Path::new(&p);
            let plain: PathBuf = path.components().collect();
            assert_eq!(
                is_plain(p.as_bytes()),
                plain.as_os_str().as_bytes() == p.as_bytes(),
                "{p:?} (its components make {plain:?})"
            );
        }
    }

    #[test]
    fn equal_paths_hash_alike_and_find_each_other() {
        let all = spellings();
        let map = PathMap::<()>::default();
        for p in &all {
            for q in &all {
                let (p, q) = (Path::new(p), Path::new(q));
                if p == q {
                    assert_eq!(map.hash_of(p), map.hash_of(q), "{p:?} and {q:?}");
                }
            }
        }
        let mut map = PathMap::default();
        map.insert(PathBuf::from("/srv/app//site/./app.wsgi/"), 1);
        map.insert(PathBuf::from("/srv/app/site/other.wsgi"), 2);
        assert_eq!(map.get(Path::new("/srv/app/site/app.wsgi")), Some(&1));
        assert_eq!(map.get(Path::new("/srv/app/site/other.wsgi/.")), Some(&2));
        assert_eq!(map.get(Path::new("/srv/app/site/../site/app.wsgi")), None);
        assert_eq!(map.remove(Path::new("/srv//app/site/app.wsgi")), Some(1));
        assert_eq!(map.get(Path::new("/srv/app/site/app.wsgi")), None);
        let drained: Vec<_> = map.drain().collect();
        assert_eq!(drained, [(PathBuf::from("/srv/app/site/other.wsgi"), 2)]);
    }
}
