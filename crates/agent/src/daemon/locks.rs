//! The plugin's attachment locks as podipd's sweep uses them: each lock file's identity across
//! sweeps, the assignments a lock file's removal or replacement left without a lock the sweep
//! can see (pinned: never released by the sweep), and taking one lock file without waiting.
//!
//! podip-cni holds its container's lock from before it asks for an address until the pod is
//! wired, and for a whole DEL (teardown, then release), in a file of the lock directory. A plugin
//! that took its lock in a file that is then removed (the file alone, or the whole directory,
//! made again or not) holds a lock nobody else sees, and a file made again under that path is
//! free. So podipd makes all 256 files at its first sweep, and every sweep notes each file's
//! identity (device, inode, birth time: ext4 gives a file made again at once the inode number of
//! the one removed, never the same birth time). When a file is not the one the last sweep saw,
//! every assignment of that bucket may belong to such a plugin (an ADD about to wire it, or a DEL
//! of it), wired or not, and only its DEL releases it (one recovered from the host has no ADD,
//! and is never pinned). An assignment whose
//! lock file cannot be taken is kept the same way. The sweep releases an address only holding
//! the file the last look saw, still named by its path when the address goes (see
//! [`LockDir::still`]). An ADD that asks podipd after a change finds out itself: it checks that
//! its lock files are still the ones their paths name before it wires (`podip-cni`'s `serial`),
//! and gives its address back otherwise.

use ipam::addr::PodKey;
use nix::fcntl::{Flock, FlockArg};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// How many lock files there are: every two-hex-digit bucket of `protocol::lockfile::bucket`.
const BUCKETS: u16 = 256;

/// What the sweeps know of the lock files.
#[derive(Debug, Default)]
pub(crate) struct LockDir {
    /// Each bucket's file identity at the last sweep (`None` inside: not there); `None` before
    /// the first sweep.
    files: Option<BTreeMap<String, Option<Identity>>>,
    /// The directory's identity at the last sweep, to name what happened.
    dir: Option<Identity>,
    /// Assignments whose lock file was found removed or replaced, or could not be taken.
    pinned: BTreeSet<PodKey>,
}

impl LockDir {
    /// Notes the lock files in `dir` as a sweep finds them, then makes the directory and any
    /// file not there (podipd owns them; nothing can hold a lock in a file no sweep saw before
    /// podipd started). Every key of `assigned` whose bucket's file is not the one the last
    /// sweep saw is pinned, and the note says so.
    pub(crate) fn observe<'a>(&mut self, dir: &Path, assigned: impl Iterator<Item = &'a PodKey>) -> Option<String> {
        let dir_now = identity_at(dir).filter(|_| dir.is_dir());
        let first = self.files.is_none();
        let seen = self.files.take().unwrap_or_default();
        let mut changed = BTreeSet::new();
        let mut now = BTreeMap::new();
        if first || dir_now.is_none() {
            let _ = std::fs::create_dir_all(dir);
        }
        for b in (0..BUCKETS).map(|i| format!("{i:02x}")) {
            let path = protocol::lockfile::bucket_path(dir, &b);
            let found = identity_at(&path);
            if !first && seen.get(&b).copied().flatten() != found {
                changed.insert(b.clone());
            }
            // A file not there is made, so that one made later by a plugin is seen as new.
            let found = found
                .or_else(|| protocol::lockfile::open(&path).ok().and_then(|f| f.metadata().ok()).map(|m| identity(&m)));
            now.insert(b, found);
        }
        self.files = Some(now);
        let dir_before = std::mem::replace(&mut self.dir, identity_at(dir));
        if changed.is_empty() {
            return None;
        }
        let n = self.pinned.len();
        // An assignment recovered from the host has no ADD, and its DEL removes the rules
        // before the route goes (`datapath::apply::teardown`): the sweep need not wait for it,
        // and a pin would keep it forever when its DEL leaves it to the sweep.
        let pinnable = |k: &&PodKey| {
            !k.container_id.starts_with(super::RECOVERED)
                && changed.contains(&protocol::lockfile::bucket(&k.container_id))
        };
        self.pinned.extend(assigned.filter(pinnable).cloned());
        let what = match dir_now {
            None => format!("the attachment lock directory {} was removed", dir.display()),
            Some(d) if dir_before != Some(d) => format!("the attachment lock directory {} was replaced", dir.display()),
            Some(_) => format!(
                "{} attachment lock files in {} were removed or replaced ({})",
                changed.len(),
                dir.display(),
                changed.iter().take(8).map(String::as_str).collect::<Vec<_>>().join(", ")
            ),
        };
        Some(format!(
            "{what}: {} assignments of those buckets stay held until their DEL (an ADD or DEL of theirs may hold a lock in a file no longer there)",
            self.pinned.len() - n
        ))
    }

    /// Whether `lock`, taken in `bucket` of `dir`, is the file the last sweep saw there and
    /// the one the path still names: only then does holding it say that no plugin of the
    /// bucket runs, nor starts before it is let go.
    pub(crate) fn still(&self, dir: &Path, bucket: &str, lock: &Flock<File>) -> bool {
        let held = lock.metadata().ok().map(|m| identity(&m));
        let seen = self.files.as_ref().and_then(|f| f.get(bucket).copied().flatten());
        held.is_some() && held == seen && identity_at(&protocol::lockfile::bucket_path(dir, bucket)) == held
    }

    /// Whether the sweep must leave `key` held.
    pub(crate) fn pinned(&self, key: &PodKey) -> bool {
        self.pinned.contains(key)
    }

    /// Pins `key`: nothing the sweep can see says that no ADD or DEL of it runs.
    pub(crate) fn pin(&mut self, key: PodKey) {
        self.pinned.insert(key);
    }

    /// Forgets the pinned keys no longer assigned.
    pub(crate) fn retain(&mut self, assigned: impl Fn(&PodKey) -> bool) {
        self.pinned.retain(assigned);
    }
}

/// A file's device, inode and birth time (see the module's documentation).
type Identity = (u64, u64, Option<std::time::SystemTime>);

fn identity(m: &std::fs::Metadata) -> Identity {
    (m.dev(), m.ino(), m.created().ok())
}

/// The identity of what `path` names (not following a symlink); `None` when nothing.
fn identity_at(path: &Path) -> Option<Identity> {
    std::fs::symlink_metadata(path).ok().map(|m| identity(&m))
}

/// How a lock file was found.
pub(crate) enum Taken {
    /// Taken (whether it is the file the sweep saw is [`LockDir::still`]'s to say).
    Free(Flock<File>),
    /// Another holds it.
    Held,
}

/// The lock file of `bucket` in `dir`, taken without waiting; made when it is not there.
///
/// # Errors
/// The file cannot be made, opened or locked.
pub(crate) fn take(dir: &Path, bucket: &str) -> std::io::Result<Taken> {
    let f = protocol::lockfile::open(&protocol::lockfile::bucket_path(dir, bucket))?;
    match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(Taken::Free(l)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(Taken::Held),
        Err((_, e)) => Err(std::io::Error::from(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(c: &str) -> PodKey {
        PodKey::new(c)
    }

    /// A container id other than `not` whose bucket is `not`'s, and one whose bucket is not.
    fn same_and_other(not: &str) -> (String, String) {
        let b = protocol::lockfile::bucket(not);
        let same = (0..).map(|i| format!("x{i}")).find(|k| protocol::lockfile::bucket(k) == b).unwrap();
        let other = (0..).map(|i| format!("y{i}")).find(|k| protocol::lockfile::bucket(k) != b).unwrap();
        (same, other)
    }

    #[test]
    fn a_removed_or_replaced_lock_file_pins_every_assignment_of_its_bucket() {
        let root = std::env::temp_dir().join(format!("podip-locks-{}", std::process::id()));
        let dir = root.join("locks");
        let _ = std::fs::remove_dir_all(&root);
        let mut l = LockDir::default();
        let (same, other) = same_and_other("a");
        let all = [key("a"), key(&same), key(&other)];
        // The first sweep makes the directory and every file, and pins nothing.
        assert_eq!(l.observe(&dir, all.iter()), None);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 256);
        assert_eq!(l.observe(&dir, all.iter()), None);
        assert!(all.iter().all(|k| !l.pinned(k)));
        // One file made again: the assignments of its bucket, and only those, are pinned.
        let file = protocol::lockfile::bucket_path(&dir, &protocol::lockfile::bucket("a"));
        std::fs::remove_file(&file).unwrap();
        std::fs::write(&file, b"").unwrap();
        let note = l.observe(&dir, all.iter()).unwrap();
        assert!(note.contains("1 attachment lock files") && note.contains(" 2 assignments"), "{note}");
        assert!(l.pinned(&key("a")) && l.pinned(&key(&same)) && !l.pinned(&key(&other)));
        assert_eq!(l.observe(&dir, all.iter()), None, "seen once");
        l.retain(|k| *k != key("a"));
        assert!(!l.pinned(&key("a")) && l.pinned(&key(&same)));
        // A file removed and not made again: the same (and the sweep makes it).
        let file = protocol::lockfile::bucket_path(&dir, &protocol::lockfile::bucket(&other));
        std::fs::remove_file(&file).unwrap();
        assert!(l.observe(&dir, all.iter()).is_some());
        assert!(l.pinned(&key(&other)) && file.exists());
        // The directory made again, or removed: every assignment.
        let mut l = LockDir::default();
        l.observe(&dir, all.iter());
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::create_dir(&dir).unwrap();
        let recovered = PodKey { container_id: format!("{}eni0", super::super::RECOVERED), ..key("r") };
        let note = l.observe(&dir, all.iter().chain([&recovered])).unwrap();
        assert!(note.contains("was replaced") && note.contains(" 3 assignments"), "{note}");
        assert!(!l.pinned(&recovered));
        std::fs::remove_dir_all(&dir).unwrap();
        let note = l.observe(&dir, [key("c")].iter()).unwrap();
        assert!(note.contains("was removed") && l.pinned(&key("c")), "{note}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_lock_counts_only_on_the_file_the_sweep_saw_and_the_path_still_names() {
        let root = std::env::temp_dir().join(format!("podip-still-{}", std::process::id()));
        let dir = root.join("locks");
        let _ = std::fs::remove_dir_all(&root);
        let mut l = LockDir::default();
        l.observe(&dir, std::iter::empty());
        let Taken::Free(held) = take(&dir, "ab").unwrap() else { panic!("held") };
        assert!(matches!(take(&dir, "ab").unwrap(), Taken::Held));
        assert!(l.still(&dir, "ab", &held));
        // Made again after the sweep looked: the file taken is not the one seen.
        let path = protocol::lockfile::bucket_path(&dir, "ab");
        std::fs::remove_file(&path).unwrap();
        assert!(!l.still(&dir, "ab", &held), "the path no longer names it");
        let Taken::Free(new) = take(&dir, "ab").unwrap() else { panic!("held") };
        assert!(!l.still(&dir, "ab", &new), "not the file the sweep saw");
        drop((held, new));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
