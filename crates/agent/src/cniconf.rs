//! The node's CNI network configuration, written by podipd once it serves, so kubelet sees the
//! node Ready only when pods can get addresses (an aws-node DaemonSet does the same with its
//! `10-aws.conflist`). The file is replaced atomically: the runtime never reads half of it.

use std::io::Write;
use std::path::Path;

/// The network's name: aws-node's, so that a node moved from aws-node keeps every pod under the
/// key it was added with (the runtime's cached results and aws-node's checkpoint both name it).
pub const NETWORK: &str = "aws-cni";

/// The configuration list: podip-cni alone, reaching podipd at `socket`. It declares CNI 1.0.0,
/// which every runtime EKS nodes run (containerd 1.6 and 1.7 with libcni 1.1) accepts; the
/// plugin answers 1.1's GC and STATUS to a runtime that asks.
pub fn conflist(socket: &Path) -> String {
    let list = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": NETWORK,
        "plugins": [{"type": "podip-cni", "socket": socket}],
    });
    format!("{list:#}\n")
}

/// Writes [`conflist`] to `path` (a temporary file beside it, synced, then renamed over it).
///
/// # Errors
/// The directory cannot be written.
pub fn write(path: &Path, socket: &Path) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let tmp = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("podip.conflist")));
    let r = create_fresh(&tmp).and_then(|mut f| {
        f.write_all(conflist(socket).as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    });
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// Whether `path` holds the configuration list of [`conflist`] for `socket` (what the readiness
/// probe checks: until it does, the runtime cannot start a pod here).
pub fn written(path: &Path, socket: &Path) -> bool {
    std::fs::read(path).ok().and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok()).is_some_and(|v| {
        v["plugins"][0]["type"] == "podip-cni" && v["plugins"][0]["socket"] == socket.to_string_lossy().as_ref()
    })
}

/// Creates `path` anew (whatever was there, a file or a symlink, removed first; never followed).
pub fn create_fresh(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o644).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_conflist_is_a_cni_configuration_list_the_plugin_reads() {
        let dir = std::env::temp_dir().join(format!("podip-cniconf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("10-podip.conflist");
        write(&path, Path::new("/run/podip/podipd.sock")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["name"], "aws-cni", "aws-node's network name: moved pods keep their keys");
        assert_eq!(v["plugins"][0]["type"], "podip-cni");
        assert_eq!(v["plugins"][0]["socket"], "/run/podip/podipd.sock");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no temporary file left");
        // A link planted where the temporary file goes is replaced, never written through.
        let victim = dir.join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join(".10-podip.conflist.tmp")).unwrap();
        write(&path, Path::new("/run/podip/podipd.sock")).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        std::fs::remove_file(&victim).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
