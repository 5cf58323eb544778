//! The checkpoint: every assignment, every cooling address (IPv4 and IPv6) and the IPv6
//! allocator's mark, written atomically (temporary file, fsync, rename, fsync of the directory)
//! and versioned. Cooldowns are kept on the monotonic boot clock, as time remaining, so a step
//! of the wall clock neither shortens nor lengthens them.
//!
//! Versions: `podip-ipam/1` (wall-clock cooldowns, IPv4 only) is migrated on read; a newer or
//! unknown version is refused, never overwritten. Reconciling with ground truth (the cloud's
//! ENIs, the host's wiring) is the daemon's: [`restore`] only puts back what fits the pool, and
//! never gives an address to two pods.

use ipam::Time;
use ipam::addr::PodKey;
use ipam::datastore::Datastore;
use ipam::demand::PoolMemory;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use thiserror::Error;

/// The format version this build writes.
pub const VERSION: &str = "podip-ipam/2";
/// The first format (read and migrated).
pub const VERSION_1: &str = "podip-ipam/1";

/// One assignment. Its strings borrow the datastore's when captured for writing (a snapshot
/// is taken under the pool lock on every ADD and DEL: no copy of every pod's names there), and
/// are owned when read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation<'a> {
    /// CNI network.
    pub network: Cow<'a, str>,
    /// Container id.
    #[serde(rename = "containerID")]
    pub container_id: Cow<'a, str>,
    /// Interface.
    #[serde(rename = "ifName")]
    pub ifname: Cow<'a, str>,
    /// Address.
    pub ip: IpAddr,
    /// Kubernetes namespace.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "podNamespace")]
    pub pod_namespace: Option<Cow<'a, str>>,
    /// Kubernetes pod name.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "podName")]
    pub pod_name: Option<Cow<'a, str>>,
}

impl Allocation<'_> {
    /// The IPAM key.
    pub fn key(&self) -> PodKey {
        PodKey {
            network: self.network.to_string(),
            container_id: self.container_id.to_string(),
            ifname: self.ifname.to_string(),
        }
    }

    /// The same, owning its strings.
    pub fn into_owned(self) -> Allocation<'static> {
        let own = |c: Cow<'_, str>| Cow::Owned(c.into_owned());
        Allocation {
            network: own(self.network),
            container_id: own(self.container_id),
            ifname: own(self.ifname),
            ip: self.ip,
            pod_namespace: self.pod_namespace.map(own),
            pod_name: self.pod_name.map(own),
        }
    }
}

/// A released address still cooling down (podip keeps cooldowns across restarts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cooling {
    /// Address.
    pub ip: IpAddr,
    /// Cooling time left when the checkpoint was written.
    #[serde(rename = "remainingMs")]
    pub remaining_ms: u64,
}

/// The file's content (borrowing the datastore's strings when captured, owning them when read).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint<'a> {
    /// [`VERSION`].
    pub version: String,
    /// The kernel's boot id when written: within one boot, cooldowns end at the same instant
    /// of the boot clock; after a reboot they restart with their remaining time.
    #[serde(rename = "bootId", default)]
    pub boot_id: String,
    /// The boot clock when written (milliseconds since boot).
    #[serde(rename = "writtenMs", default)]
    pub written_ms: u64,
    /// Assignments.
    pub allocations: Vec<Allocation<'a>>,
    /// Cooldowns.
    #[serde(default)]
    pub cooling: Vec<Cooling>,
    /// The IPv6 allocator's next never-used offset.
    #[serde(rename = "v6Next", default)]
    pub v6_next: u64,
    /// What the adaptive pool policy has learned of the node's demand (absent under the VPC
    /// CNI's policy, and in older files): a restarted podipd is not a new node. It is advice:
    /// one this build cannot read is dropped, never the checkpoint with it.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "lenient_pool")]
    pub pool: Option<PoolMemory>,
}

/// The pool memory if it reads as this build's, else none (another version's shape, a hand
/// edit): the assignments beside it must not be lost over it.
fn lenient_pool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<PoolMemory>, D::Error> {
    let v = Option::<serde_json::Value>::deserialize(d)?;
    Ok(v.and_then(|v| serde_json::from_value(v).ok()))
}

/// The first format's cooldown: an instant of the wall clock.
#[derive(Deserialize)]
struct CoolingV1 {
    ip: Ipv4Addr,
    #[serde(rename = "untilMs")]
    until_ms: u64,
}

#[derive(Deserialize)]
struct CheckpointV1 {
    allocations: Vec<Allocation<'static>>,
    #[serde(default)]
    cooling: Vec<CoolingV1>,
}

/// Why a checkpoint could not be used.
#[derive(Debug, Error)]
pub enum CheckpointError {
    /// Unreadable content (the daemon rebuilds from ground truth and reports it).
    #[error("checkpoint {path} is corrupt: {reason}")]
    Corrupt {
        /// File.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A version this build does not read (newer, or not podip's): left untouched.
    #[error(
        "checkpoint {path} has version {found:?}; this build reads {VERSION:?} and {VERSION_1:?}: run a podipd that reads it, or move the file away to rebuild the state from the host"
    )]
    Version {
        /// File.
        path: String,
        /// Version found.
        found: String,
    },
    /// I/O (never mistaken for corruption).
    #[error("checkpoint {path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// The clocks a checkpoint is read and written against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clocks {
    /// The boot clock (the engine's time in the daemon).
    pub now: Time,
    /// The wall clock, milliseconds since the Unix epoch (only to migrate version 1).
    pub wall_ms: u64,
    /// The kernel's boot id.
    pub boot_id: String,
}

impl<'a> Checkpoint<'a> {
    /// The datastore's assignments, cooldowns and IPv6 mark at `clocks.now`, with pod names from
    /// `meta` (borrowed from both).
    pub fn capture(ds: &'a Datastore, meta: &'a BTreeMap<PodKey, (String, String)>, clocks: &Clocks) -> Checkpoint<'a> {
        let now = clocks.now;
        let mut allocations: Vec<Allocation> = ds
            .pods()
            .map(|(k, ip)| {
                let m = meta.get(k);
                Allocation {
                    network: Cow::Borrowed(&k.network),
                    container_id: Cow::Borrowed(&k.container_id),
                    ifname: Cow::Borrowed(&k.ifname),
                    ip: *ip,
                    pod_namespace: m.map(|m| Cow::Borrowed(m.0.as_str())),
                    pod_name: m.map(|m| Cow::Borrowed(m.1.as_str())),
                }
            })
            .collect();
        allocations.sort_by(|a, b| (a.ip, &a.container_id).cmp(&(b.ip, &b.container_id)));
        let left = |until: Time| until.since(now).as_millis() as u64;
        let mut cooling: Vec<Cooling> = ds
            .cooling(now)
            .into_iter()
            .map(|(ip, until)| Cooling { ip: IpAddr::V4(ip), remaining_ms: left(until) })
            .collect();
        cooling.extend(
            ds.cooling_v6(now).into_iter().map(|(ip, until)| Cooling { ip: IpAddr::V6(ip), remaining_ms: left(until) }),
        );
        Checkpoint {
            version: VERSION.into(),
            boot_id: clocks.boot_id.clone(),
            written_ms: now.as_millis(),
            allocations,
            cooling,
            v6_next: ds.v6_next(),
            pool: None,
        }
    }

    /// The same, with the adaptive policy's memory of the node's demand.
    pub fn with_pool(mut self, pool: Option<PoolMemory>) -> Checkpoint<'a> {
        self.pool = pool;
        self
    }

    /// The adaptive policy's memory as of `clocks.now`, the time the daemon was down counted
    /// (as for cooldowns). Within one boot only: after a reboot the node's pods start again too,
    /// and its spans would reach back before the boot clock began.
    pub fn pool_memory(&self, clocks: &Clocks) -> Option<PoolMemory> {
        if !self.same_boot(clocks) {
            return None;
        }
        let down = clocks.now.since(Time::from_millis(self.written_ms));
        self.pool.clone().map(|p| p.aged(down))
    }

    fn same_boot(&self, clocks: &Clocks) -> bool {
        !self.boot_id.is_empty() && self.boot_id == clocks.boot_id && self.written_ms <= clocks.now.as_millis()
    }

    /// Serialized form.
    pub fn encode(&self) -> Vec<u8> {
        // Strings, addresses and integers always serialize.
        // Compact: each acknowledged ADD waits for this write (`jq` shows it indented).
        serde_json::to_vec(self).expect("checkpoint serializes")
    }

    /// Parses a checkpoint, migrating version 1 (its wall-clock cooldowns become time
    /// remaining at `clocks.wall_ms`).
    ///
    /// # Errors
    /// Corrupt content, or a version this build does not read.
    pub fn decode(path: &str, bytes: &[u8], clocks: &Clocks) -> Result<Checkpoint<'static>, CheckpointError> {
        #[derive(Deserialize)]
        struct Head {
            version: String,
        }
        let corrupt = |e: serde_json::Error| CheckpointError::Corrupt { path: path.into(), reason: e.to_string() };
        let head: Head = serde_json::from_slice(bytes).map_err(corrupt)?;
        match head.version.as_str() {
            VERSION => serde_json::from_slice(bytes).map_err(corrupt),
            VERSION_1 => {
                let v1: CheckpointV1 = serde_json::from_slice(bytes).map_err(corrupt)?;
                Ok(Checkpoint {
                    version: VERSION.into(),
                    boot_id: String::new(),
                    written_ms: clocks.now.as_millis(),
                    allocations: v1.allocations,
                    cooling: v1
                        .cooling
                        .into_iter()
                        .map(|c| Cooling {
                            ip: IpAddr::V4(c.ip),
                            remaining_ms: c.until_ms.saturating_sub(clocks.wall_ms),
                        })
                        .collect(),
                    v6_next: 0,
                    pool: None,
                })
            }
            _ => Err(CheckpointError::Version { path: path.into(), found: head.version }),
        }
    }

    /// Reads `path`; `None` when it does not exist.
    ///
    /// # Errors
    /// Unreadable, corrupt or another version.
    pub fn read(path: &Path, clocks: &Clocks) -> Result<Option<Checkpoint<'static>>, CheckpointError> {
        let name = path.display().to_string();
        match read_state_file(path) {
            Ok(Some(b)) => Checkpoint::decode(&name, &b, clocks).map(Some),
            Ok(None) => Ok(None),
            Err(source) => Err(CheckpointError::Io { path: name, source }),
        }
    }

    /// Writes `path` atomically: a temporary file in the same directory, fsync, rename, fsync of
    /// the directory. A crash leaves either the old or the new checkpoint, never a mix.
    ///
    /// # Errors
    /// Any I/O failure; the old checkpoint is then untouched.
    pub fn write(&self, path: &Path) -> Result<(), CheckpointError> {
        write_bytes(path, &self.encode())
    }
}

/// The largest state file read (a checkpoint of thousands of pods is well under 1 MiB).
pub const MAX_STATE_FILE: u64 = 16 << 20;

/// Reads one of the daemon's state files: `None` when it does not exist; an error when it is not
/// a regular file (a symlink, FIFO or device is never followed, opened with blocking, or read
/// without end) or is larger than [`MAX_STATE_FILE`].
///
/// # Errors
/// I/O, or a file of another kind or size.
pub fn read_state_file(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let flags = nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NOCTTY;
    let f = match std::fs::OpenOptions::new().read(true).custom_flags(flags.bits()).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
            return Err(std::io::Error::other("is a symbolic link; state files must be regular files"));
        }
        Err(e) => return Err(e),
    };
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("is not a regular file"));
    }
    if meta.len() > MAX_STATE_FILE {
        return Err(std::io::Error::other(format!("is {} bytes, more than {MAX_STATE_FILE}", meta.len())));
    }
    let mut bytes = Vec::new();
    f.take(MAX_STATE_FILE + 1).read_to_end(&mut bytes)?;
    Ok(Some(bytes))
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, fsync, rename,
/// fsync of the directory. A crash leaves either the old or the new file, never a mix.
///
/// # Errors
/// Any I/O failure; the old file is then untouched.
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let name = path.display().to_string();
    let io = |source| CheckpointError::Io { path: name.clone(), source };
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{}.tmp", path.file_name().and_then(|f| f.to_str()).unwrap_or("checkpoint")));
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    Ok(())
}

/// What a restore kept and dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Assignments restored.
    pub restored: Vec<Allocation<'static>>,
    /// Assignments dropped, with why (their address is not on the node, or listed twice).
    pub dropped: Vec<(Allocation<'static>, String)>,
    /// Cooldowns restored.
    pub cooling: usize,
}

/// Restores `cp` into `ds`, which already holds the ENIs and blocks the cloud reports (ground
/// truth): every assignment whose address is on the node, each address to one pod only, the
/// cooldowns (to the same instant of the boot clock within one boot, with their remaining time
/// after a reboot) and the IPv6 mark. Whether a pod is still wired is the daemon's question.
pub fn restore(ds: &mut Datastore, cp: &Checkpoint<'_>, clocks: &Clocks) -> RestoreReport {
    let mut report = RestoreReport::default();
    let mut seen: HashSet<IpAddr> = HashSet::new();
    ds.advance_v6(cp.v6_next);
    for a in &cp.allocations {
        let reason = if !seen.insert(a.ip) {
            Some("address listed twice in the checkpoint".to_string())
        } else if let Err(e) = crate::limits::allocation(a) {
            Some(e)
        } else {
            match a.ip {
                IpAddr::V4(ip) => ds.restore(&a.key(), ip).err().map(|e| format!("not restorable: {e}")),
                IpAddr::V6(ip) => ds.restore_v6(&a.key(), ip).err().map(|e| format!("not restorable: {e}")),
            }
        };
        match reason {
            None => report.restored.push(a.clone().into_owned()),
            Some(r) => report.dropped.push((a.clone().into_owned(), r)),
        }
    }
    let base = if cp.same_boot(clocks) { Time::from_millis(cp.written_ms) } else { clocks.now };
    for c in &cp.cooling {
        let until = base + std::time::Duration::from_millis(c.remaining_ms);
        if until <= clocks.now {
            continue;
        }
        let ok = match c.ip {
            IpAddr::V4(ip) => ds.restore_cooling(ip, until),
            IpAddr::V6(ip) => ds.restore_cooling_v6(ip, until),
        };
        report.cooling += usize::from(ok);
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipam::datastore::{CidrMode, EniInfo, Packing};
    use std::time::Duration;

    static NO_META: BTreeMap<PodKey, (String, String)> = BTreeMap::new();

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

    fn clocks(now_s: u64, wall_s: u64, boot: &str) -> Clocks {
        Clocks { now: Time::from_secs(now_s), wall_ms: wall_s * 1000, boot_id: boot.into() }
    }

    #[test]
    fn capture_write_read_restore_round_trip() {
        let mut a = ds();
        let c = clocks(1_000, 1_700_000_000, "b1");
        let t = c.now;
        a.assign(&PodKey::new("c1"), t).unwrap();
        a.assign(&PodKey::new("c2"), t).unwrap();
        a.unassign(&PodKey::new("c2"), t);
        let cp = Checkpoint::capture(&a, &NO_META, &c);
        assert_eq!((cp.allocations.len(), cp.cooling.len()), (1, 1));
        assert_eq!(cp.cooling[0].remaining_ms, 30_000);
        let dir = std::env::temp_dir().join(format!("podip-cp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ipam.json");
        cp.write(&path).unwrap();
        let back = Checkpoint::read(&path, &c).unwrap().unwrap();
        assert_eq!(back, cp);
        let mut b = ds();
        let r = restore(&mut b, &back, &c);
        assert_eq!((r.restored.len(), r.dropped.len(), r.cooling), (1, 0, 1));
        assert_eq!(b.pod(&PodKey::new("c1")), a.pod(&PodKey::new("c1")));
        // The cooldown survived the restart: the released address is not handed out early.
        let cooled = cp.cooling[0].ip;
        for i in 0..3 {
            let p = b.assign(&PodKey::new(format!("n{i}")), t).unwrap();
            assert_ne!(p.addr, cooled);
        }
        assert!(b.assign(&PodKey::new("n9"), t).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cooldowns_follow_the_boot_clock_not_the_wall_clock() {
        let mut a = ds();
        let written = clocks(1_000, 1_700_000_000, "b1");
        a.assign(&PodKey::new("c1"), written.now).unwrap();
        a.unassign(&PodKey::new("c1"), written.now);
        let cp = Checkpoint::capture(&a, &NO_META, &written);
        // The wall clock jumps an hour forward, then an hour back: nothing changes. 10 s of boot
        // clock later, 20 s remain.
        for wall in [1_700_003_600, 1_699_996_400] {
            let mut b = ds();
            let later = clocks(1_010, wall, "b1");
            assert_eq!(restore(&mut b, &cp, &later).cooling, 1);
            assert_eq!(b.cooling(later.now)[0].1, Time::from_secs(1_030), "wall {wall}");
        }
        // After a reboot (another boot id) the whole remaining time applies again.
        let mut b = ds();
        let rebooted = clocks(5, 1_700_000_100, "b2");
        restore(&mut b, &cp, &rebooted);
        assert_eq!(b.cooling(rebooted.now)[0].1, Time::from_secs(35));
    }

    #[test]
    fn ipv6_cooldowns_and_the_allocator_mark_survive_a_restart() {
        let v6 = || {
            let mut ds = Datastore::new(CidrMode::Ipv6, Duration::from_secs(30), Packing::Dense, 1);
            let info = EniInfo {
                id: "eni-1".into(),
                device_index: 0,
                subnet: "subnet-1".into(),
                primary_ip: Ipv4Addr::new(10, 0, 0, 4),
                secondary_ips: vec![],
                prefixes: vec![],
                v6_prefix: Some("2600:1f18:aaaa:1:1::/80".parse().unwrap()),
            };
            ds.add_eni(&info, true, Time::ZERO).unwrap();
            ds
        };
        let c = clocks(100, 1_700_000_000, "b1");
        let mut a = v6();
        let held = a.assign(&PodKey::new("c1"), c.now).unwrap().addr;
        let cooled = a.assign(&PodKey::new("c2"), c.now).unwrap().addr;
        a.unassign(&PodKey::new("c2"), c.now);
        let cp = Checkpoint::capture(&a, &NO_META, &c);
        assert_eq!(cp.cooling, vec![Cooling { ip: cooled, remaining_ms: 30_000 }]);
        assert_eq!(cp.v6_next, 3);
        let mut b = v6();
        let r = restore(&mut b, &cp, &c);
        assert_eq!((r.restored.len(), r.cooling), (1, 1));
        // Neither the held nor the cooling address goes to a new pod; the next is a fresh one.
        let next = b.assign(&PodKey::new("n1"), c.now).unwrap().addr;
        assert!(next != held && next != cooled, "{next}");
    }

    #[test]
    fn the_pool_policys_memory_survives_a_restart_aged_by_the_downtime_of_the_same_boot() {
        let written = clocks(1_000, 1_700_000_000, "b1");
        let memory = PoolMemory {
            age_ms: 500_000,
            reserve: false,
            reserve_base: Some(12),
            first_start_ago_ms: Some(400_000),
            peaks: vec![(300_000, 20), (1_000, 14)],
            assign_ms: Some(350),
            attach_ms: None,
        };
        let d = ds();
        let cp = Checkpoint::capture(&d, &NO_META, &written).with_pool(Some(memory.clone()));
        let text = String::from_utf8(cp.encode()).unwrap();
        assert!(text.contains("\"ageMs\":500000") && text.contains("\"firstStartAgoMs\""), "{text}");
        let back = Checkpoint::decode("f", &cp.encode(), &written).unwrap();
        assert_eq!(back.pool.as_ref(), Some(&memory));
        // Read 60 s later in the same boot: every span is 60 s longer.
        let m = back.pool_memory(&clocks(1_060, 1_700_000_060, "b1")).unwrap();
        assert_eq!((m.age_ms, m.first_start_ago_ms, m.peaks[0].0), (560_000, Some(460_000), 360_000));
        // After a reboot, none: the node's pods start again too.
        assert_eq!(back.pool_memory(&clocks(5, 1_700_009_000, "b2")), None);
        // A file without it (an older podipd, or the VPC CNI's policy): none.
        let older = br#"{"version":"podip-ipam/2","allocations":[]}"#;
        assert_eq!(Checkpoint::decode("f", older, &written).unwrap().pool, None);
        // One this build cannot read (another version's shape, a hand edit) is dropped; the
        // assignments beside it are kept.
        for pool in [
            "{}",
            r#"{"ageMs":5,"reserve":false,"peaks":[{"agoMs":5,"held":3}]}"#,
            r#"{"ageMs":5,"reserve":false,"peaks":[[5,4294967296]]}"#,
            r#"{"ageMs":-1,"reserve":false}"#,
            r#""soon""#,
        ] {
            let text = format!(
                r#"{{"version":"podip-ipam/2","allocations":[{{"network":"podip","containerID":"c1","ifName":"eth0","ip":"10.0.0.5"}}],"pool":{pool}}}"#
            );
            let cp = Checkpoint::decode("f", text.as_bytes(), &written).unwrap_or_else(|e| panic!("{pool}: {e}"));
            assert_eq!((cp.allocations.len(), cp.pool), (1, None), "{pool}");
        }
    }

    #[test]
    fn version_1_migrates_its_wall_clock_cooldowns() {
        let v1 = br#"{"version":"podip-ipam/1","allocations":[{"network":"podip","containerID":"c1","ifName":"eth0","ip":"10.0.0.5"}],"cooling":[{"ip":"10.0.0.6","untilMs":1700000020000}]}"#;
        let c = clocks(50, 1_700_000_000, "b1");
        let cp = Checkpoint::decode("f", v1, &c).unwrap();
        assert_eq!(cp.version, VERSION);
        assert_eq!(cp.cooling, vec![Cooling { ip: "10.0.0.6".parse().unwrap(), remaining_ms: 20_000 }]);
        let mut b = ds();
        let r = restore(&mut b, &cp, &c);
        assert_eq!((r.restored.len(), r.cooling), (1, 1));
        assert_eq!(b.cooling(c.now)[0].1, Time::from_secs(70));
    }

    #[test]
    fn restore_never_gives_an_address_twice() {
        let mut b = ds();
        let alloc = |c: &str, ip: [u8; 4]| Allocation {
            network: "podip".into(),
            container_id: c.to_string().into(),
            ifname: "eth0".into(),
            ip: IpAddr::V4(Ipv4Addr::from(ip)),
            pod_namespace: None,
            pod_name: None,
        };
        let cp = Checkpoint {
            version: VERSION.into(),
            boot_id: String::new(),
            written_ms: 0,
            allocations: vec![
                alloc("ok", [10, 0, 0, 5]),
                alloc("twice", [10, 0, 0, 5]),
                alloc("gone-eni", [10, 9, 9, 9]),
                alloc(&"x".repeat(100_000), [10, 0, 0, 6]),
            ],
            cooling: vec![],
            v6_next: 0,
            pool: None,
        };
        let r = restore(&mut b, &cp, &clocks(0, 0, ""));
        assert_eq!(r.restored.iter().map(|a| a.container_id.as_ref()).collect::<Vec<_>>(), vec!["ok"]);
        let why: Vec<&str> = r.dropped.iter().map(|(_, w)| w.as_str()).collect();
        assert!(
            why[0].contains("twice") && why[1].contains("not restorable") && why[2].contains("container"),
            "{why:?}"
        );
        assert_eq!(b.pod_count(), 1, "no address handed to two pods");
    }

    #[test]
    fn corrupt_newer_and_foreign_checkpoints_are_told_apart() {
        let c = clocks(0, 0, "");
        let e =
            Checkpoint::decode("/x/ipam.json", b"{\"version\":\"podip-ipam/2\",\"allocations\":[{]}", &c).unwrap_err();
        assert!(matches!(e, CheckpointError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("/x/ipam.json"));
        for v in ["podip-ipam/3", "vpc-cni-ipam/1"] {
            let e =
                Checkpoint::decode("f", format!(r#"{{"version":"{v}","allocations":[]}}"#).as_bytes(), &c).unwrap_err();
            assert!(matches!(e, CheckpointError::Version { .. }) && e.to_string().contains(v), "{e}");
        }
        let e = Checkpoint::decode("f", b"\x00\x01garbage", &c).unwrap_err();
        assert!(matches!(e, CheckpointError::Corrupt { .. }));
        assert!(Checkpoint::read(Path::new("/nonexistent/podip/ipam.json"), &c).unwrap().is_none());
        // A directory where the file should be is an I/O error, not corruption.
        let e = Checkpoint::read(Path::new("/"), &c).unwrap_err();
        assert!(matches!(e, CheckpointError::Io { .. }), "{e}");
    }
}
