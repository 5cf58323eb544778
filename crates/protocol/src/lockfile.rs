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

/// The attachment lock bucket of `key` (a container id, or a pod's `namespace/name`): the first
/// two hex digits of its SHA-1, one of 256 files. podip-cni holds the buckets of an attachment's
/// keys for a whole ADD or DEL; podipd's sweep takes a container's before it releases an
/// address the host never wired, so never while an ADD of it may still wire it.
pub fn bucket(key: &str) -> String {
    sha1_smol::Sha1::from(key).digest().to_string()[..2].to_string()
}

/// The lock file of `bucket`, in `locks/` beside podipd's socket at `socket`.
pub fn bucket_path(socket: &Path, bucket: &str) -> std::path::PathBuf {
    socket.parent().unwrap_or(Path::new("/run/podip")).join("locks").join(format!("{bucket}.lock"))
}
