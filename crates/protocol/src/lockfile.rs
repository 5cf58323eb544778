//! The lock files podipd and podip-cni take: opened owner-only, never through a symlink (a
//! planted link cannot make either truncate or lock another file).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Opens (creating, owner-only) the lock file at `path`, refusing a symlink.
///
/// # Errors
/// The file cannot be made.
pub fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)
}
