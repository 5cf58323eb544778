//! The checkpoint: every assignment and every cooling address, written atomically on every
//! change (temporary file, fsync, rename, fsync of the directory) and versioned. On start it is
//! reconciled with ground truth (the ENIs the cloud reports and the pods' host interfaces): an
//! entry whose address is no longer on the node, or whose pod is gone, is dropped and reported;
//! an address is never restored to two pods.

use ipam::Time;
use ipam::addr::PodKey;
use ipam::datastore::Datastore;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use thiserror::Error;

/// The format version.
pub const VERSION: &str = "podip-ipam/1";

/// One assignment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    /// CNI network.
    pub network: String,
    /// Container id.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// Interface.
    #[serde(rename = "ifName")]
    pub ifname: String,
    /// Address.
    pub ip: IpAddr,
    /// Kubernetes namespace.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "podNamespace")]
    pub pod_namespace: Option<String>,
    /// Kubernetes pod name.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "podName")]
    pub pod_name: Option<String>,
}

impl Allocation {
    /// The IPAM key.
    pub fn key(&self) -> PodKey {
        PodKey { network: self.network.clone(), container_id: self.container_id.clone(), ifname: self.ifname.clone() }
    }
}

/// A released address still cooling down (podip keeps cooldowns across restarts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cooling {
    /// Address.
    pub ip: Ipv4Addr,
    /// Usable again at this instant (milliseconds since the Unix epoch).
    #[serde(rename = "untilMs")]
    pub until_ms: u64,
}

/// The file's content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// `podip-ipam/1`.
    pub version: String,
    /// Assignments.
    pub allocations: Vec<Allocation>,
    /// Cooldowns.
    #[serde(default)]
    pub cooling: Vec<Cooling>,
}

/// Why a checkpoint could not be used.
#[derive(Debug, Error)]
pub enum CheckpointError {
    /// Unreadable content (the daemon recovers from ground truth and reports it).
    #[error("checkpoint {path} is corrupt: {reason}")]
    Corrupt {
        /// File.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// Another format version.
    #[error("checkpoint {path} has version {found:?}; this build reads {VERSION:?}")]
    Version {
        /// File.
        path: String,
        /// Version found.
        found: String,
    },
    /// I/O.
    #[error("checkpoint {path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

impl Checkpoint {
    /// The datastore's assignments and cooldowns at `now`, with pod names from `meta`.
    pub fn capture(ds: &Datastore, meta: &BTreeMap<PodKey, (String, String)>, now: Time) -> Checkpoint {
        let mut allocations: Vec<Allocation> = ds
            .pods()
            .map(|(k, ip)| {
                let m = meta.get(k);
                Allocation {
                    network: k.network.clone(),
                    container_id: k.container_id.clone(),
                    ifname: k.ifname.clone(),
                    ip: *ip,
                    pod_namespace: m.map(|m| m.0.clone()),
                    pod_name: m.map(|m| m.1.clone()),
                }
            })
            .collect();
        allocations.sort_by(|a, b| (a.ip, &a.container_id).cmp(&(b.ip, &b.container_id)));
        let cooling =
            ds.cooling(now).into_iter().map(|(ip, until)| Cooling { ip, until_ms: until.as_millis() }).collect();
        Checkpoint { version: VERSION.into(), allocations, cooling }
    }

    /// Serialized form.
    pub fn encode(&self) -> Vec<u8> {
        // Strings, addresses and integers always serialize.
        serde_json::to_vec_pretty(self).expect("checkpoint serializes")
    }

    /// Parses a checkpoint.
    ///
    /// # Errors
    /// Corrupt content, or another version.
    pub fn decode(path: &str, bytes: &[u8]) -> Result<Checkpoint, CheckpointError> {
        #[derive(Deserialize)]
        struct Head {
            version: String,
        }
        let head: Head = serde_json::from_slice(bytes)
            .map_err(|e| CheckpointError::Corrupt { path: path.into(), reason: e.to_string() })?;
        if head.version != VERSION {
            return Err(CheckpointError::Version { path: path.into(), found: head.version });
        }
        serde_json::from_slice(bytes).map_err(|e| CheckpointError::Corrupt { path: path.into(), reason: e.to_string() })
    }

    /// Reads `path`; `None` when it does not exist.
    ///
    /// # Errors
    /// Unreadable, corrupt or another version.
    pub fn read(path: &Path) -> Result<Option<Checkpoint>, CheckpointError> {
        let name = path.display().to_string();
        match std::fs::read(path) {
            Ok(b) => Checkpoint::decode(&name, &b).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(CheckpointError::Io { path: name, source }),
        }
    }

    /// Writes `path` atomically: a temporary file in the same directory, fsync, rename, fsync of
    /// the directory. A crash leaves either the old or the new checkpoint, never a mix.
    ///
    /// # Errors
    /// Any I/O failure; the old checkpoint is then untouched.
    pub fn write(&self, path: &Path) -> Result<(), CheckpointError> {
        let name = path.display().to_string();
        let io = |source| CheckpointError::Io { path: name.clone(), source };
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let tmp = dir.join(format!(".{}.tmp", path.file_name().and_then(|f| f.to_str()).unwrap_or("checkpoint")));
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&self.encode()).map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(io)?;
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        Ok(())
    }
}

/// What a restore kept and dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Assignments restored.
    pub restored: Vec<Allocation>,
    /// Assignments dropped, with why.
    pub dropped: Vec<(Allocation, String)>,
    /// Cooldowns restored.
    pub cooling: usize,
}

/// Restores `cp` into `ds`, which already holds the ENIs and blocks the cloud reports (ground
/// truth). `pod_alive` says whether an allocation's pod still exists on the host (its veth);
/// it is consulted for every entry.
pub fn restore(
    ds: &mut Datastore,
    cp: &Checkpoint,
    pod_alive: impl Fn(&Allocation) -> bool,
    now: Time,
) -> RestoreReport {
    let mut report = RestoreReport::default();
    let mut seen: HashSet<IpAddr> = HashSet::new();
    for a in &cp.allocations {
        let reason = if !seen.insert(a.ip) {
            Some("address listed twice in the checkpoint".to_string())
        } else if !pod_alive(a) {
            Some("the pod's host interface is gone".to_string())
        } else {
            match a.ip {
                IpAddr::V4(ip) => ds.restore(&a.key(), ip).err().map(|e| format!("not restorable: {e}")),
                IpAddr::V6(ip) => ds.restore_v6(&a.key(), ip).err().map(|e| format!("not restorable: {e}")),
            }
        };
        match reason {
            None => report.restored.push(a.clone()),
            Some(r) => report.dropped.push((a.clone(), r)),
        }
    }
    for c in &cp.cooling {
        let until = Time::from_millis(c.until_ms);
        if until > now && ds.restore_cooling(c.ip, until) {
            report.cooling += 1;
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipam::datastore::{CidrMode, EniInfo, Packing};
    use std::time::Duration;

    fn ds() -> Datastore {
        let mut ds = Datastore::new(CidrMode::Secondary, Duration::from_secs(30), Packing::Dense, 1);
        let info = EniInfo {
            id: "eni-1".into(),
            device_index: 0,
            subnet: "subnet-1".into(),
            primary_ip: Ipv4Addr::new(10, 0, 0, 4),
            secondary_ips: (5..10).map(|i| Ipv4Addr::new(10, 0, 0, i)).collect(),
            prefixes: vec![],
            v6_prefix: None,
        };
        ds.add_eni(&info, true, Time::ZERO).unwrap();
        ds
    }

    #[test]
    fn capture_write_read_restore_round_trip() {
        let mut a = ds();
        let t = Time::from_secs(1_000);
        a.assign(&PodKey::new("c1"), t).unwrap();
        a.assign(&PodKey::new("c2"), t).unwrap();
        a.unassign(&PodKey::new("c2"), t);
        let cp = Checkpoint::capture(&a, &BTreeMap::new(), t);
        assert_eq!((cp.allocations.len(), cp.cooling.len()), (1, 1));
        let dir = std::env::temp_dir().join(format!("podip-cp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ipam.json");
        cp.write(&path).unwrap();
        let back = Checkpoint::read(&path).unwrap().unwrap();
        assert_eq!(back, cp);
        let mut b = ds();
        let r = restore(&mut b, &back, |_| true, t);
        assert_eq!((r.restored.len(), r.dropped.len(), r.cooling), (1, 0, 1));
        assert_eq!(b.pod(&PodKey::new("c1")), a.pod(&PodKey::new("c1")));
        // The cooldown survived the restart: the released address is not handed out early.
        let cooled = cp.cooling[0].ip;
        for i in 0..3 {
            let p = b.assign(&PodKey::new(format!("n{i}")), t).unwrap();
            assert_ne!(p.addr, IpAddr::V4(cooled));
        }
        assert!(b.assign(&PodKey::new("n9"), t).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ground_truth_wins() {
        let mut b = ds();
        let alloc = |c: &str, ip: [u8; 4]| Allocation {
            network: "podip".into(),
            container_id: c.into(),
            ifname: "eth0".into(),
            ip: IpAddr::V4(Ipv4Addr::from(ip)),
            pod_namespace: None,
            pod_name: None,
        };
        let cp = Checkpoint {
            version: VERSION.into(),
            allocations: vec![
                alloc("ok", [10, 0, 0, 5]),
                alloc("twice", [10, 0, 0, 5]),
                alloc("gone-eni", [10, 9, 9, 9]),
                alloc("dead-pod", [10, 0, 0, 6]),
            ],
            cooling: vec![],
        };
        let r = restore(&mut b, &cp, |a| a.container_id != "dead-pod", Time::ZERO);
        assert_eq!(r.restored.iter().map(|a| a.container_id.as_str()).collect::<Vec<_>>(), vec!["ok"]);
        let why: BTreeMap<&str, &str> = r.dropped.iter().map(|(a, w)| (a.container_id.as_str(), w.as_str())).collect();
        assert!(why["twice"].contains("twice"));
        assert!(why["gone-eni"].contains("not restorable"));
        assert!(why["dead-pod"].contains("gone"));
        assert_eq!(b.pod_count(), 1, "no address handed to two pods");
    }

    #[test]
    fn corrupt_and_foreign_checkpoints_are_named() {
        let e = Checkpoint::decode("/x/ipam.json", b"{\"version\":\"podip-ipam/1\",\"allocations\":[{]}").unwrap_err();
        assert!(matches!(e, CheckpointError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("/x/ipam.json"));
        let e = Checkpoint::decode("f", br#"{"version":"vpc-cni-ipam/1","allocations":[]}"#).unwrap_err();
        assert!(e.to_string().contains("vpc-cni-ipam/1"));
        let e = Checkpoint::decode("f", b"\x00\x01garbage").unwrap_err();
        assert!(matches!(e, CheckpointError::Corrupt { .. }));
        assert!(Checkpoint::read(Path::new("/nonexistent/podip/ipam.json")).unwrap().is_none());
    }
}
