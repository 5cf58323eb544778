//! One operation at a time per pod: the plugin holds an exclusive lock for its whole ADD or DEL,
//! keyed by the pod (its `namespace/name` when the runtime gives it, else the container id), so
//! a retried ADD never races the first one's rollback, a DEL never races an ADD of the same
//! attachment, and two sandboxes of one pod (whose `eth0` veths share the VPC CNI's name) never
//! build or remove that veth at once. A DEL whose key is not the pod identity podipd recorded
//! (the veth's name) holds both keys' locks, taken in one fixed order (by file), so it waits for
//! the container's other operations and the pod's other sandboxes alike, and two such DELs never
//! wait for each other in a circle. Locks live beside podipd's socket, in 256 files chosen by
//! a hash of the key (a bounded set; unrelated pods rarely share one, and then only wait).

use cni::error::{CniError, ErrorCode};
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::path::Path;

/// Held attachment locks; released when dropped or when the plugin exits.
pub struct AttachmentLock {
    _files: Vec<Flock<File>>,
}

/// The lock key of a pod (or, without its identity, of a container).
pub fn key(pod: Option<(&str, &str)>, container_id: &str) -> String {
    pod.map_or_else(|| container_id.to_string(), |(ns, name)| format!("{ns}/{name}"))
}

/// Takes the lock of a pod (or, without its identity, of a container), waiting for a holder.
///
/// # Errors
/// Code 5 when the lock file cannot be made or locked.
pub fn lock(socket: &str, pod: Option<(&str, &str)>, container_id: &str) -> Result<AttachmentLock, CniError> {
    lock_keys(socket, &[key(pod, container_id)])
}

/// Takes the locks of every key in `keys`, each file once, in the files' order.
///
/// # Errors
/// Code 5 when a lock file cannot be made or locked.
pub fn lock_keys(socket: &str, keys: &[String]) -> Result<AttachmentLock, CniError> {
    let mut buckets: Vec<String> = keys.iter().map(|k| datapath::host_veth_name("", k)[..2].to_string()).collect();
    buckets.sort();
    buckets.dedup();
    let mut files = Vec::with_capacity(buckets.len());
    for b in &buckets {
        files.push(lock_bucket(socket, b)?);
    }
    Ok(AttachmentLock { _files: files })
}

fn lock_bucket(socket: &str, bucket: &str) -> Result<Flock<File>, CniError> {
    let parent = Path::new(socket).parent().unwrap_or(Path::new("/run/podip"));
    let dir = parent.join("locks");
    let path = dir.join(format!("{bucket}.lock"));
    let io =
        |e: &dyn std::fmt::Display| CniError::new(ErrorCode::Io, format!("attachment lock {}: {e}", path.display()));
    // The lock file is there after the node's first ADD; only before it is the directory made.
    let f = match protocol::lockfile::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !parent.is_dir() {
                // Nothing is made on the host for a path that leads nowhere.
                return Err(CniError::new(
                    ErrorCode::TryAgainLater,
                    format!("podipd at {socket}: its directory does not exist (is podipd running?)"),
                ));
            }
            match std::fs::create_dir(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(io(&e)),
                _ => {}
            }
            protocol::lockfile::open(&path).map_err(|e| io(&e))?
        }
        Err(e) => return Err(io(&e)),
    };
    Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| io(&e))
}
