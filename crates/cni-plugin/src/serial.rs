//! One operation at a time per pod: the plugin holds an exclusive lock for its whole ADD or DEL,
//! keyed by the pod (its `namespace/name` when the runtime gives it, else the container id; a
//! DEL without it moves to the pod's lock once podipd names the pod it recorded), so
//! a retried ADD never races the first one's rollback, a DEL never races an ADD of the same
//! attachment, and two sandboxes of one pod (whose `eth0` veths share the VPC CNI's name) never
//! build or remove that veth at once. Locks live beside podipd's socket, in 256 files chosen by
//! a hash of the key (a bounded set; unrelated pods rarely share one, and then only wait).

use cni::error::{CniError, ErrorCode};
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::path::Path;

/// A held attachment lock; released when dropped or when the plugin exits.
pub struct AttachmentLock {
    _file: Flock<File>,
}

/// Takes the lock of a pod (or, without its identity, of a container), waiting for a holder.
///
/// # Errors
/// Code 5 when the lock file cannot be made or locked.
pub fn lock(socket: &str, pod: Option<(&str, &str)>, container_id: &str) -> Result<AttachmentLock, CniError> {
    let parent = Path::new(socket).parent().unwrap_or(Path::new("/run/podip"));
    let dir = parent.join("locks");
    let key = pod.map_or_else(|| container_id.to_string(), |(ns, name)| format!("{ns}/{name}"));
    let bucket = &datapath::host_veth_name("", &key)[..2];
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
    Flock::lock(f, FlockArg::LockExclusive).map(|f| AttachmentLock { _file: f }).map_err(|(_, e)| io(&e))
}
