//! Group commit of the checkpoint: handlers publish an encoded snapshot under the pool lock (no
//! I/O there), then wait, without the lock, until a snapshot at least as new is on disk; one
//! writer thread writes the newest snapshot it has (temporary file, fsync, rename, fsync of the
//! directory), so concurrent ADDs share fsyncs and one slow disk never holds the pool lock.
//! A reply that acknowledges a change is sent only once the change is durable.

use crate::checkpoint::write_bytes;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard};

#[derive(Default)]
struct State {
    /// The newest snapshot not yet written (the checkpoint's bytes), with its generation.
    pending: Option<(u64, Vec<u8>)>,
    /// Every generation up to this one is on disk.
    durable: u64,
    /// The newest generation whose write failed, and why.
    failed: Option<(u64, String)>,
}

/// The checkpoint's writer and the waiters on it.
pub(crate) struct Committer {
    path: PathBuf,
    state: Mutex<State>,
    changed: Condvar,
}

impl Committer {
    /// A committer for `path`, whose content is already durable up to generation `durable`.
    pub(crate) fn new(path: PathBuf, durable: u64) -> Committer {
        Committer { path, state: Mutex::new(State { durable, ..State::default() }), changed: Condvar::new() }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("commit state lock")
    }

    /// Hands over the snapshot of generation `generation` (called under the pool lock, in
    /// generation order, so a newer snapshot holds everything an older one did).
    pub(crate) fn publish(&self, generation: u64, cp: Vec<u8>) {
        let mut s = self.lock();
        if s.pending.as_ref().is_none_or(|(g, _)| *g < generation) {
            s.pending = Some((generation, cp));
        }
        self.changed.notify_all();
    }

    /// Waits until generation `generation` is on disk.
    ///
    /// # Errors
    /// Its write (and no later one) failed: why.
    pub(crate) fn wait(&self, generation: u64) -> Result<(), String> {
        let mut s = self.lock();
        loop {
            if s.durable >= generation {
                return Ok(());
            }
            if let Some((g, e)) = &s.failed
                && *g >= generation
            {
                return Err(e.clone());
            }
            s = self.changed.wait(s).expect("commit state lock");
        }
    }

    /// Writes snapshots as they come, forever.
    pub(crate) fn run(&self) {
        loop {
            let (generation, cp) = {
                let mut s = self.lock();
                loop {
                    if let Some(p) = s.pending.take() {
                        break p;
                    }
                    s = self.changed.wait(s).expect("commit state lock");
                }
            };
            let result = write_bytes(&self.path, &cp);
            let mut s = self.lock();
            match result {
                Ok(()) => s.durable = s.durable.max(generation),
                Err(e) => s.failed = Some((generation, e.to_string())),
            }
            self.changed.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn cp(n: usize) -> Vec<u8> {
        crate::checkpoint::Checkpoint {
            version: crate::checkpoint::VERSION.into(),
            boot_id: String::new(),
            written_ms: n as u64,
            allocations: vec![],
            cooling: vec![],
            v6_next: 0,
            pool: None,
        }
        .encode()
    }

    #[test]
    fn waiters_return_once_their_generation_is_on_disk_and_fail_with_its_write() {
        let dir = std::env::temp_dir().join(format!("podip-commit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let c = Arc::new(Committer::new(dir.join("ipam.json"), 0));
        let w = Arc::clone(&c);
        std::thread::spawn(move || w.run());
        for g in 1..=20 {
            c.publish(g, cp(g as usize));
        }
        c.wait(20).unwrap();
        let on_disk =
            crate::checkpoint::Checkpoint::read(&dir.join("ipam.json"), &crate::clock::clocks("")).unwrap().unwrap();
        assert_eq!(on_disk.written_ms, 20, "the newest snapshot won");
        // A directory that vanished: the write fails and its waiter hears why.
        std::fs::remove_dir_all(&dir).unwrap();
        c.publish(21, cp(21));
        let e = c.wait(21).unwrap_err();
        assert!(e.contains("ipam.json"), "{e}");
    }
}
