//! One operation at a time per container and per pod: the plugin holds exclusive locks for its
//! whole ADD or DEL, one keyed by the container id and, when the runtime names the pod
//! (`CNI_ARGS`), one keyed by its `namespace/name`. So an ADD and a DEL of one container never
//! overlap whatever `CNI_ARGS` each carries (a retried ADD never races the first one's rollback,
//! a DEL never releases what a concurrent ADD of its container got), and two sandboxes of one pod
//! (whose `eth0` veths share the VPC CNI's name) never build or remove that veth at once. An ADD
//! or DEL whose pod is not the one podipd recorded at the first ADD (the veth's name) holds that
//! pod's lock too, and a DEL holds that of `host:<veth>`, podipd's key for the pod were it
//! recovered from the host. A DEL need not check, as an ADD does, that its lock files are still
//! the ones their paths name: podipd's sweep keeps every assignment of a bucket whose file it
//! found removed or replaced (see podipd's `daemon::locks`).
//! Every set of locks is taken in one fixed order (by file), so no two operations wait for each
//! other in a circle. Locks live beside podipd's socket, in 256 files chosen by a hash of the key
//! (a bounded set; unrelated pods rarely share one, and then only wait).

use cni::error::{CniError, ErrorCode};
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Held attachment locks; released when dropped or when the plugin exits.
pub struct AttachmentLock {
    /// The lock directory ([`protocol::lockfile::lock_dir`] of the socket).
    dir: PathBuf,
    /// Each bucket's file, held, with the (device, inode) it had when taken.
    files: Vec<(String, Flock<File>, (u64, u64))>,
}

impl AttachmentLock {
    /// Adds the lock of `key` without letting any held one go: at once if its file is held
    /// already or free; `false` when another holds it (waiting for it while holding these
    /// could wait in a circle, as the fixed order is not kept).
    ///
    /// # Errors
    /// Code 5 when its lock file cannot be made or locked.
    pub fn try_add(&mut self, socket: &str, key: &str) -> Result<bool, CniError> {
        let b = bucket(key);
        if self.files.iter().any(|(held, ..)| *held == b) {
            return Ok(true);
        }
        match lock_bucket(socket, &self.dir, &b, FlockArg::LockExclusiveNonblock) {
            Ok((f, id)) => {
                self.files.push((b, f, id));
                Ok(true)
            }
            Err(e) if e.would_block => Ok(false),
            Err(e) => Err(e.error),
        }
    }

    /// Whether every held file is still the one its path names. A lock file removed or replaced
    /// since it was taken (its directory removed, or made again) is one podipd's sweep cannot
    /// see: an ADD that finds so before it wires gives its address back rather than wire an
    /// address the sweep may have released.
    pub fn still_named(&self) -> bool {
        self.files.iter().all(|(b, _, id)| {
            std::fs::symlink_metadata(protocol::lockfile::bucket_path(&self.dir, b))
                .is_ok_and(|m| (m.dev(), m.ino()) == *id)
        })
    }
}

/// The lock file a key maps to.
fn bucket(key: &str) -> String {
    protocol::lockfile::bucket(key)
}

/// Why a lock was not taken.
struct LockError {
    error: CniError,
    /// Another process holds it (a non-blocking attempt).
    would_block: bool,
}

/// The lock key of a pod.
pub fn pod_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// The lock keys of an attachment: its container's (a container id has no `/`, so it is never a
/// pod's key), and its pod's when known. Without the pod's identity, a container's `eth0` veth
/// is hashed from its id alone, and an id such as `default.web` is the `namespace.name` whose
/// hash names pod default/web's veth (a namespace holds no dot): such a container holds that
/// pod's lock too, so the two never build or remove that veth at once.
pub fn keys(pod: Option<(&str, &str)>, container_id: &str) -> Vec<String> {
    let mut keys = vec![container_id.to_string()];
    match pod {
        Some((ns, name)) => keys.push(pod_key(ns, name)),
        None => keys.extend(container_id.split_once('.').map(|(ns, name)| pod_key(ns, name))),
    }
    keys
}

/// Takes the locks of every key in `keys`, each file once, in the files' order.
///
/// # Errors
/// Code 5 when a lock file cannot be made or locked.
pub fn lock_keys(socket: &str, keys: &[String]) -> Result<AttachmentLock, CniError> {
    let dir = protocol::lockfile::lock_dir(Path::new(socket));
    let mut buckets: Vec<String> = keys.iter().map(|k| bucket(k)).collect();
    buckets.sort();
    buckets.dedup();
    let mut files = Vec::with_capacity(buckets.len());
    for b in buckets {
        let (f, id) = lock_bucket(socket, &dir, &b, FlockArg::LockExclusive).map_err(|e| e.error)?;
        files.push((b, f, id));
    }
    Ok(AttachmentLock { dir, files })
}

/// Takes the lock of `bucket` in `dir`. A lock is only worth holding on the file the path names:
/// one removed (or replaced) while this waited for it is one podipd's sweep and other plugins
/// no longer see, so the path is opened and locked again until the two agree.
fn lock_bucket(socket: &str, dir: &Path, bucket: &str, how: FlockArg) -> Result<(Flock<File>, (u64, u64)), LockError> {
    let path = protocol::lockfile::bucket_path(dir, bucket);
    let io = |e: &dyn std::fmt::Display| io_error(&path, e);
    for _ in 0..8 {
        let f = open_bucket(socket, dir, &path)?;
        let f = Flock::lock(f, how)
            .map_err(|(_, e)| LockError { would_block: e == nix::errno::Errno::EWOULDBLOCK, ..io(&e) })?;
        let held = f.metadata().map_err(|e| io(&e))?;
        match std::fs::symlink_metadata(&path) {
            Ok(now) if (now.dev(), now.ino()) == (held.dev(), held.ino()) => return Ok((f, (held.dev(), held.ino()))),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&e)),
        }
    }
    Err(LockError {
        error: CniError::new(
            ErrorCode::TryAgainLater,
            format!("attachment lock {}: the file kept being removed or replaced while it was taken", path.display()),
        ),
        would_block: false,
    })
}

fn io_error(path: &Path, e: &dyn std::fmt::Display) -> LockError {
    LockError {
        error: CniError::new(ErrorCode::Io, format!("attachment lock {}: {e}", path.display())),
        would_block: false,
    }
}

/// Opens the lock file at `path` in `dir`, making the directory on a node's first ADD.
fn open_bucket(socket: &str, dir: &Path, path: &Path) -> Result<File, LockError> {
    let parent = dir.parent().unwrap_or(Path::new("/run/podip"));
    let io = |e: &dyn std::fmt::Display| io_error(path, e);
    // The lock file is there after the node's first ADD; only before it is the directory made.
    match protocol::lockfile::open(path) {
        Ok(f) => Ok(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !parent.is_dir() {
                // Nothing is made on the host for a path that leads nowhere.
                return Err(LockError {
                    error: CniError::new(
                        ErrorCode::TryAgainLater,
                        format!("podipd at {socket}: its directory does not exist (is podipd running?)"),
                    ),
                    would_block: false,
                });
            }
            match std::fs::create_dir(dir) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(io(&e)),
                _ => {}
            }
            protocol::lockfile::open(path).map_err(|e| io(&e))
        }
        Err(e) => Err(io(&e)),
    }
}
