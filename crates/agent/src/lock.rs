//! One daemon per node: an exclusive lock on the state directory, held for the life of the
//! process (the kernel lets it go when the process dies, however it dies). The holder's PID is
//! written into the lock file so a second instance can say who holds it.

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
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

/// Opens (creating it and its directory, owner-only) a file that only serves as a lock.
///
/// # Errors
/// The directory or the file cannot be made.
pub fn open_lock_file(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(path)
}

/// Takes the lock of `dir`, creating the directory and the file.
///
/// # Errors
/// [`LockError::Held`] when another process holds it; I/O otherwise.
pub fn acquire(dir: &Path) -> Result<StateLock, LockError> {
    let path = dir.join(LOCK_FILE);
    let io = |e: &dyn std::fmt::Display| LockError::Io { path: path.clone(), message: e.to_string() };
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
