//! The plugin's attachment locks as podipd's sweep uses them: the lock directory's identity
//! across sweeps, the assignments that directory's replacement left without a lock the sweep can
//! see (pinned: never released by the sweep), and taking one lock file without waiting.
//!
//! podip-cni holds its container's lock from before it asks for an address until the pod is
//! wired, in a file of the lock directory. A plugin that took its lock in a file that is then
//! removed (the directory removed, or removed and made again) holds a lock nobody else sees, and
//! a lock file made again under that path is free. So every sweep notes the directory's identity
//! (device, inode, birth time): when it changes, every assignment unwired at that moment may
//! belong to such a plugin, and only its DEL releases it (an assignment recovered from the host
//! has no ADD, and is never pinned; a DEL of it holds its `host:<veth>` key's lock). An assignment whose lock file cannot be opened is kept
//! the same way. An ADD that asks after the change finds out itself:
//! it checks that its lock files are still the ones their paths name before it wires
//! (`podip-cni`'s `serial`), and gives its address back otherwise.

use ipam::addr::PodKey;
use nix::fcntl::{Flock, FlockArg};
use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// What the sweeps know of the lock directory.
#[derive(Debug, Default)]
pub(crate) struct LockDir {
    /// The directory's identity at the last sweep (`None` inside: not there); `None` before
    /// the first sweep.
    identity: Option<Option<Identity>>,
    /// Assignments unwired when the directory was found removed or replaced.
    pinned: BTreeSet<PodKey>,
}

impl LockDir {
    /// Notes the directory at `dir` as a sweep finds it. The first sweep makes it if it is not
    /// there (podipd owns it; nothing can hold a lock in a directory no sweep saw before podipd
    /// started). When it is not the one the last sweep saw, every key of `unwired` is pinned,
    /// and the note says so.
    pub(crate) fn observe<'a>(&mut self, dir: &Path, unwired: impl Iterator<Item = &'a PodKey>) -> Option<String> {
        if self.identity.is_none() {
            let _ = std::fs::create_dir_all(dir);
        }
        let now = std::fs::symlink_metadata(dir).ok().filter(std::fs::Metadata::is_dir).map(|m| identity(&m));
        let before = self.identity.replace(now);
        if before.is_none() || before == Some(now) {
            return None;
        }
        let n = self.pinned.len();
        // An assignment recovered from the host has no ADD that could hold a lock.
        self.pinned.extend(unwired.filter(|k| !k.container_id.starts_with(super::RECOVERED)).cloned());
        let what = if now.is_some() { "was replaced" } else { "was removed" };
        Some(format!(
            "the attachment lock directory {} {what}: {} unwired assignments stay held until their DEL (an ADD of theirs may hold a lock in a file no longer there)",
            dir.display(),
            self.pinned.len() - n
        ))
    }

    /// Whether the sweep must leave `key` held.
    pub(crate) fn pinned(&self, key: &PodKey) -> bool {
        self.pinned.contains(key)
    }

    /// Pins `key`: its lock file cannot be taken, so nothing the sweep can see says that no ADD
    /// of it runs.
    pub(crate) fn pin(&mut self, key: PodKey) {
        self.pinned.insert(key);
    }

    /// Forgets the pinned keys no longer assigned.
    pub(crate) fn retain(&mut self, assigned: impl Fn(&PodKey) -> bool) {
        self.pinned.retain(assigned);
    }
}

/// A directory's device, inode and birth time: a file system such as ext4 gives a directory
/// made again at once the inode number of the one removed, never the same birth time.
type Identity = (u64, u64, Option<std::time::SystemTime>);

fn identity(m: &std::fs::Metadata) -> Identity {
    (m.dev(), m.ino(), m.created().ok())
}

/// How a lock file was found.
pub(crate) enum Taken {
    /// Taken: no plugin of the bucket runs, and none starts before it is let go.
    Free(Flock<File>),
    /// Another holds it.
    Held,
}

/// The lock file of `bucket` in `dir`, taken without waiting; made when it is not there (a
/// bucket no plugin used since the directory was made), so that what the sweep then does for
/// the bucket is under the lock even when a plugin starts meanwhile.
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

    #[test]
    fn a_replaced_or_removed_directory_pins_what_is_unwired_then() {
        let root = std::env::temp_dir().join(format!("podip-locks-{}", std::process::id()));
        let dir = root.join("locks");
        let _ = std::fs::remove_dir_all(&root);
        let mut l = LockDir::default();
        // The first sweep makes it and pins nothing.
        assert_eq!(l.observe(&dir, [key("a")].iter()), None);
        assert!(dir.is_dir() && !l.pinned(&key("a")));
        assert_eq!(l.observe(&dir, [key("a")].iter()), None);
        // Made again: what is unwired now is pinned, and only that.
        std::fs::remove_dir(&dir).unwrap();
        std::fs::create_dir(&dir).unwrap();
        let recovered = PodKey { container_id: format!("{}eni0", super::super::RECOVERED), ..key("r") };
        let note = l.observe(&dir, [key("b"), recovered.clone()].iter()).unwrap();
        assert!(note.contains("was replaced") && note.contains(" 1 unwired"), "{note}");
        assert!(l.pinned(&key("b")) && !l.pinned(&key("a")) && !l.pinned(&recovered));
        assert_eq!(l.observe(&dir, [key("c")].iter()), None);
        // Removed: the same.
        std::fs::remove_dir(&dir).unwrap();
        assert!(l.observe(&dir, [key("c")].iter()).unwrap().contains("was removed"));
        assert!(l.pinned(&key("c")));
        l.retain(|k| *k != key("b"));
        assert!(!l.pinned(&key("b")) && l.pinned(&key("c")));
        std::fs::create_dir(&dir).unwrap();
        let held = take(&dir, "ab").unwrap();
        assert!(dir.join("ab.lock").exists(), "a missing lock file is made, and held");
        assert!(matches!(held, Taken::Free(_)));
        assert!(matches!(take(&dir, "ab").unwrap(), Taken::Held));
        drop(held);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
