//! The lock files podipd and podip-cni take: opened owner-only, never through a symlink (a
//! planted link cannot make either truncate or lock another file).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Opens (creating, owner-only) the lock file at `path`, refusing a symlink.
///
/// # Errors
/// The file cannot be made.
pub fn open(path: &Path) -> std::io::Result<File> {
    options().create(true).open(path)
}

fn options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.read(true).write(true).truncate(false).mode(0o600).custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits());
    o
}

/// The attachment lock bucket of `key` (a container id, or a pod's `namespace/name`): the first
/// two hex digits of its SHA-1, one of 256 files. podip-cni holds the buckets of an attachment's
/// keys for a whole ADD or DEL; podipd's sweep takes a container's before it releases an
/// address the host never wired, so never while an ADD of it may still wire it.
pub fn bucket(key: &str) -> String {
    sha1_smol::Sha1::from(key).digest().to_string()[..2].to_string()
}

/// The lock key of an attachment recovered from the host (its checkpoint entry lost), known by
/// its host veth: podipd's key for it (`host:<veth>`). A DEL of such an attachment holds it, and
/// podipd's sweep takes it before it releases the attachment's address.
pub fn recovered_key(veth: &str) -> String {
    format!("{RECOVERED}{veth}")
}

/// The prefix of the keys of attachments recovered from the host.
pub const RECOVERED: &str = "host:";

/// The directory of the attachment lock files: `locks/` beside podipd's socket file itself, so a
/// plugin configuration that names the socket through a symlink in another directory locks in
/// the same files as podipd's sweep. Only the socket's own name is followed (one `readlink` when
/// it is not a link): a directory reached through a symlink is the same directory whatever path
/// leads to it.
pub fn lock_dir(socket: &Path) -> PathBuf {
    let mut p = socket.to_path_buf();
    // As the kernel does, at most 40 links in a row.
    for _ in 0..40 {
        match std::fs::read_link(&p) {
            Ok(target) => p = p.parent().unwrap_or(Path::new("/")).join(target),
            Err(_) => break,
        }
    }
    p.parent().unwrap_or(Path::new("/run/podip")).join("locks")
}

/// The lock file of `bucket` in the lock directory `dir` (see [`lock_dir`]).
pub fn bucket_path(dir: &Path, bucket: &str) -> PathBuf {
    dir.join(format!("{bucket}.lock"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symlinked_socket_locks_beside_the_socket_itself() {
        let root = std::env::temp_dir().join(format!("podip-lockdir-{}", std::process::id()));
        let (real, other) = (root.join("run"), root.join("elsewhere"));
        std::fs::create_dir_all(&real).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(real.join("podipd.sock"), b"").unwrap();
        std::os::unix::fs::symlink(real.join("podipd.sock"), other.join("link.sock")).unwrap();
        // A relative link to that link.
        std::os::unix::fs::symlink("link.sock", other.join("rel.sock")).unwrap();
        let want = real.join("locks");
        assert_eq!(lock_dir(&other.join("link.sock")), want);
        assert_eq!(lock_dir(&other.join("rel.sock")), want);
        assert_eq!(lock_dir(&real.join("podipd.sock")), want);
        // Not there: as given.
        assert_eq!(lock_dir(&other.join("none.sock")), other.join("locks"));
        assert_eq!(bucket_path(&want, "ab"), want.join("ab.lock"));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
