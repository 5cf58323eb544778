//! The VPC CNI's checkpoint (`vpc-cni-ipam/1`, `/var/run/aws-node/ipam.json`,
//! `vpc-cni-behaviour.md` §1.3) read as podip's own, so a node moves from aws-node to podipd
//! without draining: every running pod keeps its address. The file is only read, never changed.

use crate::checkpoint::{Allocation, Checkpoint, CheckpointError, Clocks, VERSION, read_state_file};
use serde::Deserialize;
use std::net::IpAddr;
use std::path::Path;

/// The VPC CNI checkpoint's version string.
pub const VPC_CNI_VERSION: &str = "vpc-cni-ipam/1";

#[derive(Deserialize)]
struct File {
    version: String,
    /// Go writes an empty list as `null`.
    #[serde(default)]
    allocations: Option<Vec<Entry>>,
}

/// What an import gives: podip's checkpoint, and the entries it could not take, each said.
#[derive(Debug)]
pub struct Imported {
    /// The assignments, as podip's checkpoint.
    pub checkpoint: Checkpoint<'static>,
    /// Entries skipped, and why.
    pub skipped: Vec<String>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(rename = "networkName")]
    network: String,
    #[serde(rename = "containerID")]
    container_id: String,
    #[serde(rename = "ifName")]
    ifname: String,
    #[serde(default)]
    ipv4: Option<std::net::Ipv4Addr>,
    #[serde(default)]
    ipv6: Option<std::net::Ipv6Addr>,
    #[serde(default)]
    metadata: Option<Metadata>,
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(rename = "k8sPodNamespace", default)]
    namespace: Option<String>,
    #[serde(rename = "k8sPodName", default)]
    name: Option<String>,
}

/// Reads aws-node's checkpoint at `path` as podip's (no cooldowns: aws-node keeps none);
/// `None` when there is no file.
///
/// # Errors
/// Unreadable (I/O), not JSON or not the VPC CNI's layout (corrupt), another version.
pub fn import(path: &Path, clocks: &Clocks) -> Result<Option<Imported>, CheckpointError> {
    let name = path.display().to_string();
    let Some(bytes) = read_state_file(path).map_err(|source| CheckpointError::Io { path: name.clone(), source })?
    else {
        return Ok(None);
    };
    let file: File = serde_json::from_slice(&bytes)
        .map_err(|e| CheckpointError::Corrupt { path: name.clone(), reason: e.to_string() })?;
    if file.version != VPC_CNI_VERSION {
        return Err(CheckpointError::Version { path: name, found: file.version });
    }
    let mut allocations = Vec::new();
    let mut skipped = Vec::new();
    for e in file.allocations.unwrap_or_default() {
        let shown: String = e.container_id.chars().take(80).collect();
        let ip: IpAddr = match (e.ipv4, e.ipv6) {
            (Some(v4), _) => v4.into(),
            (None, Some(v6)) => v6.into(),
            (None, None) => {
                skipped.push(format!("{shown}: no address"));
                continue;
            }
        };
        let (pod_namespace, pod_name) = e.metadata.map_or((None, None), |m| (m.namespace, m.name));
        let a = Allocation {
            network: e.network.into(),
            container_id: e.container_id.into(),
            ifname: e.ifname.into(),
            ip,
            pod_namespace: pod_namespace.map(Into::into),
            pod_name: pod_name.map(Into::into),
        };
        match crate::limits::allocation(&a) {
            Ok(()) => allocations.push(a),
            Err(why) => skipped.push(format!("{shown} {ip}: {why}")),
        }
    }
    let checkpoint = Checkpoint {
        version: VERSION.into(),
        boot_id: clocks.boot_id.clone(),
        written_ms: clocks.now.as_millis(),
        allocations,
        cooling: Vec::new(),
        v6_next: 0,
        pool: None,
    };
    Ok(Some(Imported { checkpoint, skipped }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipam::Time;

    #[test]
    fn reads_the_documented_layout() {
        let dir = std::env::temp_dir().join(format!("podip-vpccni-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("ipam.json");
        std::fs::write(
            &p,
            r#"{"version":"vpc-cni-ipam/1","allocations":[
              {"networkName":"aws-cni","containerID":"c1","ifName":"eth0","ipv4":"10.0.1.23",
               "allocationTimestamp":1712345678901234567,
               "metadata":{"k8sPodNamespace":"ns","k8sPodName":"pod","interfacesCount":1}},
              {"networkName":"aws-cni","containerID":"c2","ifName":"eth0","ipv6":"2001:db8::5","allocationTimestamp":1}]}"#,
        )
        .unwrap();
        let clocks = Clocks { now: Time::from_secs(5), wall_ms: 0, boot_id: "b".into() };
        let i = import(&p, &clocks).unwrap().unwrap();
        assert!(i.skipped.is_empty());
        let cp = i.checkpoint;
        assert_eq!(cp.allocations.len(), 2);
        assert_eq!(cp.allocations[0].ip.to_string(), "10.0.1.23");
        assert_eq!(cp.allocations[0].pod_name.as_deref(), Some("pod"));
        assert_eq!(cp.allocations[1].ip.to_string(), "2001:db8::5");
        std::fs::write(&p, r#"{"version":"vpc-cni-ipam/1","allocations":null}"#).unwrap();
        assert!(import(&p, &clocks).unwrap().unwrap().checkpoint.allocations.is_empty());
        std::fs::write(
            &p,
            r#"{"version":"vpc-cni-ipam/1","allocations":[{"networkName":"aws-cni","containerID":"c/../x","ifName":"eth0","ipv4":"10.0.1.9"}]}"#,
        )
        .unwrap();
        let i = import(&p, &clocks).unwrap().unwrap();
        assert!(i.checkpoint.allocations.is_empty() && i.skipped[0].contains("10.0.1.9"), "{i:?}");
        std::fs::write(&p, r#"{"version":"vpc-cni-ipam/2","allocations":[]}"#).unwrap();
        assert!(matches!(import(&p, &clocks), Err(CheckpointError::Version { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(import(&p, &clocks).unwrap().is_none());
    }
}
