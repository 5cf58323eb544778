//! The node's CNI network configuration, written by podipd once it serves, so kubelet sees the
//! node Ready only when pods can get addresses (an aws-node DaemonSet does the same with its
//! `10-aws.conflist`). The file is replaced atomically: the runtime never reads half of it.

use std::io::Write;
use std::path::Path;

/// The configuration list: podip-cni alone, speaking CNI 1.1 (GC and STATUS included),
/// reaching podipd at `socket`.
pub fn conflist(socket: &Path) -> String {
    let list = serde_json::json!({
        "cniVersion": "1.1.0",
        "name": "podip",
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
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(conflist(socket).as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
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
        assert_eq!(v["cniVersion"], "1.1.0");
        assert_eq!(v["plugins"][0]["type"], "podip-cni");
        assert_eq!(v["plugins"][0]["socket"], "/run/podip/podipd.sock");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no temporary file left");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
