//! A pod's network namespace as the runtime names it (`CNI_NETNS`), checked before anything is
//! asked or changed: opened without blocking (a FIFO or a device cannot hang the plugin), a
//! namespace file (nsfs), a network namespace, and neither the plugin's own nor the host's.

use nix::fcntl::OFlag;
use nix::sched::{CloneFlags, setns};
use nix::sys::stat::{SFlag, fstat};
use nix::sys::statfs::{NSFS_MAGIC, fstatfs};
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use thiserror::Error;

/// Why a path is not a pod's network namespace.
#[derive(Debug, Error)]
#[error("CNI_NETNS={path:?} {reason}")]
pub struct NetnsError {
    /// The path given.
    pub path: String,
    /// What it is instead.
    pub reason: String,
}

fn identity(f: &File) -> Option<(u64, u64)> {
    fstat(f).ok().map(|s| (s.st_dev, s.st_ino))
}

/// Opens and checks `path`; the open file is the namespace for later use.
///
/// # Errors
/// Not openable, not a namespace file, not a network namespace, or the plugin's own or the
/// host's network namespace.
pub fn open_pod_netns(path: &str) -> Result<File, NetnsError> {
    let bad = |reason: String| NetnsError { path: path.chars().take(256).collect(), reason };
    let (f, st) = open_ns_file(path)?;
    // The initial network namespace has a fixed inode (PROC_NET_INIT_INO): the host's, even
    // where pid 1's namespace cannot be opened to compare with.
    if st.st_ino == 0xEFFF_FFF9 {
        return Err(bad("is the host's (initial) network namespace, not a pod's".into()));
    }
    let me = identity(&f);
    let own = File::open("/proc/self/ns/net").map_err(|e| bad(format!("own namespace: {e}")))?;
    if identity(&own).is_some_and(|o| Some(o) == me) {
        return Err(bad("is the plugin's own network namespace, not a pod's".into()));
    }
    let host = File::open("/proc/1/ns/net").ok().and_then(|o| identity(&o));
    if host.is_some() && host == me {
        return Err(bad("is the host's network namespace, not a pod's".into()));
    }
    // Only a network namespace can be entered as one; enter and come straight back.
    setns(&f, CloneFlags::CLONE_NEWNET).map_err(|e| bad(format!("is not a network namespace ({e})")))?;
    setns(&own, CloneFlags::CLONE_NEWNET).map_err(|e| bad(format!("returning to the plugin's namespace: {e}")))?;
    Ok(f)
}

/// Checks that `path` is a network namespace (any, the caller's own included), entering it on a
/// short-lived thread of its own.
///
/// # Errors
/// Not openable, not a namespace file, not a network namespace.
pub fn check_network_namespace(path: &str) -> Result<(), NetnsError> {
    let bad = |reason: String| NetnsError { path: path.chars().take(256).collect(), reason };
    let (f, _) = open_ns_file(path)?;
    std::thread::scope(|s| {
        s.spawn(|| setns(&f, CloneFlags::CLONE_NEWNET).map_err(|e| bad(format!("is not a network namespace ({e})"))))
            .join()
            .unwrap_or_else(|_| Err(bad("the namespace thread panicked".into())))
    })
}

/// Opens `path` without blocking and checks it is a namespace file.
fn open_ns_file(path: &str) -> Result<(File, nix::sys::stat::FileStat), NetnsError> {
    let bad = |reason: String| NetnsError { path: path.chars().take(256).collect(), reason };
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC).bits())
        .open(path)
        .map_err(|e| bad(format!("cannot be opened: {e}")))?;
    let st = fstat(&f).map_err(|e| bad(format!("cannot be read: {e}")))?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(bad("is not a namespace file (a FIFO, device, directory or socket)".into()));
    }
    match fstatfs(&f) {
        Ok(s) if s.filesystem_type() == NSFS_MAGIC => {}
        Ok(_) => return Err(bad("is not a namespace file".into())),
        Err(e) => return Err(bad(format!("cannot be read: {e}"))),
    }
    Ok((f, st))
}
