//! One daemon per node: an exclusive lock on the state directory, and, for a daemon that owns
//! the node's data path, an abstract socket in the node's network namespace; both held for the
//! life of the process (the kernel lets them go when the process dies, however it dies). A
//! second instance says which PID holds them.

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The lock file's name in the state directory.
pub const LOCK_FILE: &str = "podipd.lock";

/// Why the lock could not be taken.
#[derive(Debug, Error)]
pub enum LockError {
    /// Another daemon holds it.
    #[error("another podipd (pid {holder}) holds {path}; one daemon per node")]
    Held {
        /// Lock file.
        path: PathBuf,
        /// The holder's PID as it wrote it.
        holder: String,
    },
    /// The file could not be opened or locked.
    #[error("{path}: {message}")]
    Io {
        /// Lock file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}

/// The held lock; dropping it (or dying) releases it.
#[derive(Debug)]
pub struct StateLock {
    _file: Flock<File>,
}

/// The abstract Unix socket name podipd binds in the node's network namespace.
pub const NETNS_LOCK: &[u8] = b"podipd";

/// The node-wide lock: an abstract Unix socket bound in the node's network namespace (abstract
/// names are per network namespace), so two daemons that own one node's data path exclude each
/// other whatever their state directories. The kernel lets it go when the process dies.
#[derive(Debug)]
pub struct NodeLock {
    _listener: std::os::unix::net::UnixListener,
}

/// Takes the node-wide lock in the network namespace at `netns` (the caller's own when `None`).
///
/// # Errors
/// [`LockError::Held`] when another process holds it; I/O otherwise.
pub fn acquire_node(netns: Option<&str>) -> Result<NodeLock, LockError> {
    abstract_lock(NETNS_LOCK, netns)
}

/// Takes the lock of EC2 instance `instance` in the daemon's own network namespace: an abstract
/// socket `@podipd-<instance-id>`, with a hash of the metadata service's `endpoint` when one is
/// named (simulated VPCs each number their instances alike). Two daemons for one instance would
/// hand out one address twice even when neither programs a node (they then share the host's
/// namespace).
///
/// # Errors
/// [`LockError::Held`] when another process holds it; I/O otherwise.
pub fn acquire_instance(instance: &str, endpoint: Option<&str>) -> Result<NodeLock, LockError> {
    let name = match endpoint {
        // FNV-1a: a short, stable name, not a secret.
        Some(e) => {
            let h = e.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
            format!("podipd-{instance}-{h:016x}")
        }
        None => format!("podipd-{instance}"),
    };
    abstract_lock(name.as_bytes(), None)
}

fn abstract_lock(name: &[u8], netns: Option<&str>) -> Result<NodeLock, LockError> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
    let path = PathBuf::from(format!("@{} in {}", String::from_utf8_lossy(name), netns.unwrap_or("own netns")));
    let io = |e: &dyn std::fmt::Display| LockError::Io { path: path.clone(), message: e.to_string() };
    let addr = SocketAddr::from_abstract_name(name).map_err(|e| io(&e))?;
    // Sockets stay in the namespace they were made in: make them on a thread of their own.
    let made = std::thread::scope(|s| {
        s.spawn(|| -> Result<Result<UnixListener, Option<String>>, String> {
            if let Some(ns) = netns {
                let f = File::open(ns).map_err(|e| e.to_string())?;
                nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| e.to_string())?;
            }
            match UnixListener::bind_addr(&addr) {
                Ok(l) => Ok(Ok(l)),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                    let holder = UnixStream::connect_addr(&addr)
                        .ok()
                        .and_then(|c| nix::sys::socket::getsockopt(&c, nix::sys::socket::sockopt::PeerCredentials).ok())
                        .map(|c| c.pid().to_string());
                    Ok(Err(holder))
                }
                Err(e) => Err(e.to_string()),
            }
        })
        .join()
        .unwrap_or_else(|_| Err("the namespace thread panicked".into()))
    });
    match made {
        Ok(Ok(l)) => Ok(NodeLock { _listener: l }),
        Ok(Err(holder)) => Err(LockError::Held { path, holder: holder.unwrap_or_else(|| "unknown".into()) }),
        Err(e) => Err(io(&e)),
    }
}

/// Opens the lock file at `path` (owner-only, never through a symlink).
///
/// # Errors
/// The file cannot be made.
pub fn open_lock_file(path: &Path) -> std::io::Result<File> {
    protocol::lockfile::open(path)
}

/// Takes the lock of `dir`, creating the directory and the file.
///
/// # Errors
/// [`LockError::Held`] when another process holds it; I/O otherwise.
pub fn acquire(dir: &Path) -> Result<StateLock, LockError> {
    let path = dir.join(LOCK_FILE);
    let io = |e: &dyn std::fmt::Display| LockError::Io { path: path.clone(), message: e.to_string() };
    std::fs::create_dir_all(dir).map_err(|e| io(&e))?;
    let file = open_lock_file(&path).map_err(|e| io(&e))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut f) => {
            f.set_len(0).map_err(|e| io(&e))?;
            f.rewind().map_err(|e| io(&e))?;
            writeln!(f, "{}", std::process::id()).map_err(|e| io(&e))?;
            Ok(StateLock { _file: f })
        }
        Err((mut f, Errno::EWOULDBLOCK)) => {
            let mut holder = String::new();
            let _ = f.read_to_string(&mut holder);
            let holder = holder.trim().chars().take(20).collect::<String>();
            Err(LockError::Held { path, holder: if holder.is_empty() { "unknown".into() } else { holder } })
        }
        Err((_, e)) => Err(io(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_and_told_who_holds_it() {
        let dir = std::env::temp_dir().join(format!("podip-lock-{}", std::process::id()));
        let first = acquire(&dir).unwrap();
        let e = acquire(&dir).unwrap_err();
        assert!(e.to_string().contains(&format!("pid {}", std::process::id())), "{e}");
        drop(first);
        assert!(acquire(&dir).is_ok(), "released when the holder goes");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
