//! Start-up: the state directory's lock first (one daemon per node), the node's identity, its
//! ENIs from the cloud (ground truth for addresses), the node's SNAT, then the pool rebuilt from
//! the checkpoint and the host's wiring (ground truth for pods), both ways, before anything is
//! handed out:
//! - a checkpoint entry whose pod is wired is kept; one without wiring is kept for the grace
//!   period (its plugin may be between the daemon's answer and the kernel);
//! - a wired address with no entry (the checkpoint was lost or corrupt) is recovered under
//!   `host:<veth>`, so it is never handed to a second pod;
//! - a corrupt checkpoint is moved aside and the addresses not wired cool down once; another
//!   version or an I/O error stops the start with the reason, and the file is left alone.

use super::{Daemon, DaemonError, Inner, QUARANTINE, RECOVERED, veth_name};
use crate::checkpoint::{Checkpoint, CheckpointError, Clocks, restore};
use crate::config::DaemonConfig;
use cloud::Ec2;
use ipam::Time;
use ipam::addr::PodKey;
use ipam::call::{Call, OpId};
use ipam::catalog::Catalog;
use ipam::config::{NodeConfig, NodeSettings};
use ipam::datastore::{Datastore, EniInfo};
use ipam::engine::Engine;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};

/// A booted daemon, the receiver of its cloud calls, and its cloud client.
pub type Booted = (Arc<Daemon>, Receiver<(OpId, Call)>, aws::AwsEc2);

fn state_dir(cfg: &DaemonConfig) -> PathBuf {
    cfg.checkpoint.parent().unwrap_or(Path::new("/")).to_path_buf()
}

fn settings(cfg: &DaemonConfig) -> NodeSettings {
    NodeSettings {
        warm_eni: cfg.warm_eni,
        warm_ip: cfg.warm_ip,
        minimum_ip: cfg.minimum_ip,
        warm_prefix: cfg.warm_prefix,
        prefix_delegation: cfg.prefix_delegation,
        ipv6: cfg.ipv6,
        max_eni: cfg.max_eni,
        cooldown: cfg.cooldown,
        subnet_discovery: cfg.subnet_discovery,
        manage_enis_non_schedulable: cfg.manage_enis_non_schedulable,
        pool_policy: cfg.pool_policy,
        prefix_fallback: cfg.prefix_fallback,
        call_budget: cfg.call_budget,
        housekeeping: ipam::config::Housekeeping {
            reconcile_every: Some(cfg.reconcile_every),
            leak_sweep_every: (!cfg.no_leak_sweep).then_some(std::time::Duration::from_secs(300)),
        },
        ..NodeSettings::default()
    }
}

fn cloud_err(e: impl std::fmt::Display) -> DaemonError {
    DaemonError::Cloud(e.to_string())
}

/// A failed cloud call: out of reach (worth retrying the start) or refused.
fn call_err(e: ipam::call::CallError) -> DaemonError {
    use ipam::call::ErrorKind;
    match e.kind {
        ErrorKind::Transient | ErrorKind::Throttled => DaemonError::Unreachable(e.to_string()),
        _ => DaemonError::Cloud(e.to_string()),
    }
}

/// Reads the checkpoint: I/O errors are retried, then stop the start; a corrupt file is moved
/// aside (returned as lost); another version stops the start.
fn read_checkpoint(
    path: &Path,
    clocks: &Clocks,
    notes: &mut Vec<String>,
) -> Result<(Option<Checkpoint<'static>>, bool), DaemonError> {
    let mut attempt = 0;
    loop {
        match Checkpoint::read(path, clocks) {
            Ok(cp) => return Ok((cp, false)),
            Err(CheckpointError::Corrupt { path: p, reason }) => {
                let aside = path.with_extension(format!("corrupt-{}", crate::clock::wall_ms()));
                let _ = std::fs::rename(path, &aside);
                notes.push(format!("checkpoint {p} is corrupt ({reason}); kept as {}", aside.display()));
                return Ok((None, true));
            }
            Err(e @ CheckpointError::Io { .. }) if attempt < 3 => {
                notes.push(format!("{e}; retrying"));
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Holds every address of the pool that no pod holds until `until` (as if cooling).
fn quarantine(ds: &mut Datastore, until: Time) -> usize {
    let addrs: Vec<std::net::Ipv4Addr> = ds
        .enis()
        .iter()
        .flat_map(|e| e.cidrs.iter())
        .flat_map(|c| (0..(1u32 << (32 - u32::from(c.net.prefix_len())))).map(|i| ipam::addr::nth(&c.net, i)))
        .collect();
    addrs.into_iter().filter(|ip| ds.restore_cooling(*ip, until)).count()
}

impl Daemon {
    /// Boots the node: who it is from the instance metadata service `metadata`, its ENIs from
    /// EC2 (reached through the AWS SDK's settings, or aws-node's `AWS_EC2_ENDPOINT`). Returns the daemon, the receiver of cloud calls
    /// for [`Daemon::run_cloud`], and the EC2 client.
    ///
    /// # Errors
    /// Another daemon holds the node; the cloud is unreachable; the settings do not fit the
    /// instance type; the checkpoint is of another version or unreadable; the host cannot be
    /// read; files fail.
    pub fn boot(mut cfg: DaemonConfig, metadata: &aws::metadata::Metadata) -> Result<Booted, DaemonError> {
        let dir = state_dir(&cfg);
        let lock = crate::lock::acquire(&dir)?;
        let node_lock =
            if cfg.program_node { Some(crate::lock::acquire_node(cfg.node_netns.as_deref())?) } else { None };
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| DaemonError::Io { path: "a cloud client's runtime".into(), message: e.to_string() })
        };
        // The metadata client is used from one runtime only (its connections belong to it): a
        // client of this boot's own.
        let (rt, metadata_rt) = (runtime()?, runtime()?);
        let metadata = &metadata.fresh();
        // The node from the instance metadata; its addresses from EC2 only (below).
        let node = metadata_rt.block_on(metadata.node()).map_err(|e| match e {
            aws::metadata::MetadataError::Unreachable { .. } => DaemonError::Unreachable(e.to_string()),
            aws::metadata::MetadataError::Bad { .. } => DaemonError::Cloud(e.to_string()),
        })?;
        let conf = rt.block_on(aws::node_config(&node.region, metadata));
        // aws-node's AWS_EC2_ENDPOINT, unless the SDK's own AWS_ENDPOINT_URL_EC2 is set.
        let endpoint = cfg.ec2_endpoint.as_deref().filter(|_| std::env::var_os("AWS_ENDPOINT_URL_EC2").is_none());
        let mut ec2 = aws::AwsEc2::with_config(rt, &conf, Some(node.vpc_id.clone()), endpoint);
        let t = Catalog::embedded().get(&node.instance_type).map_err(cloud_err)?;
        let mut notes = vec![format!(
            "instance {} ({}) in {}, subnet {} {}",
            node.instance, t.name, node.az, node.subnet.0, node.subnet.1
        )];
        let instance = node.instance.clone();
        let instance_lock = crate::lock::acquire_instance(&instance.0, metadata.endpoint())?;
        let owner = cloud::exec::Owner {
            instance: instance.clone(),
            cluster: cfg.cluster_name.clone(),
            security_groups: node.security_groups.clone(),
        };
        // The ENIs from EC2, never from the instance metadata, which lags: an address EC2
        // already took back must not come back into the pool.
        let node_enis = match cloud::exec::execute(&mut ec2, &owner, 0, &Call::Describe).map_err(call_err)? {
            ipam::call::CallOutput::Enis(n) => n,
            other => return Err(cloud_err(format!("unexpected reply {other:?}"))),
        };
        let enis: Vec<EniInfo> = node_enis.managed;
        if enis.is_empty() {
            return Err(cloud_err(format!("instance {instance} has no ENIs (terminated?)")));
        }
        // Kubernetes, when running as a pod: the node's object and its ENIConfig.
        let kube = match &cfg.node_name {
            Some(node_name) => {
                let k = super::cluster::Kube::start(
                    node_name,
                    cfg.pod.clone(),
                    cfg.eniconfig_sources.clone(),
                    cfg.cluster_calls_per_second.is_some(),
                )?;
                if !k.wait_synced(std::time::Duration::from_secs(10)) {
                    let why = k.last_error().map(|e| format!(" ({e})")).unwrap_or_default();
                    notes.push(format!(
                        "Kubernetes has not shown node {node_name} yet{why}; its settings apply when it does"
                    ));
                }
                Some(k)
            }
            None => None,
        };
        let pod_eni = match (&kube, cfg.custom_networking) {
            (_, false) => None,
            // The node's ENIConfig; missing or not read yet, no pod ENI is made until it is.
            (Some(k), true) => Some(match k.seen().eniconfig {
                Some(Ok(spec)) => Ok(super::template(&spec)),
                Some(Err(missing)) => Err(missing.to_string()),
                None => Err("the node's ENIConfig is not known yet".to_string()),
            }),
            // Outside Kubernetes: the AZ's other subnet.
            (None, true) => Some(
                ec2.describe_subnets(&node.az)
                    .map_err(call_err)?
                    .into_iter()
                    .find(|s| s.id != node.subnet.0)
                    .map(|s| ipam::config::EniTemplate { subnet: s.id, security_groups: vec![] })
                    .ok_or_else(|| format!("no other subnet in {} for pod ENIs", node.az)),
            ),
        };
        let mut s = settings(&cfg);
        // The engine needs a template to know custom networking is on; a missing one holds new
        // ENIs (below).
        s.custom_networking = pod_eni.as_ref().map(|t| {
            t.clone().unwrap_or_else(|_| ipam::config::EniTemplate {
                subnet: node.subnet.0.clone(),
                security_groups: vec![],
            })
        });
        let node_cfg = NodeConfig { az: Some(node.az.clone()), ..NodeConfig::resolve(t, node.subnet.0.clone(), &s)? };
        // The node's primary interface: the one with the primary ENI's MAC (ens5 on newer AMIs,
        // eth0 on older ones), unless PODIP_PRIMARY_IF names it. No interface with that MAC
        // means the simulated VPC: its ENIs get stand-in links.
        let primary_link = if cfg.program_node {
            datapath::node::link_by_mac(&node.mac, cfg.node_netns.as_deref())
                .map_err(|e| DaemonError::Io { path: "the node's interfaces".into(), message: e.to_string() })?
        } else {
            None
        };
        let real_nics = primary_link.is_some();
        if cfg.primary_if.is_empty() {
            cfg.primary_if = match (&primary_link, cfg.program_node) {
                (Some(l), _) => l.clone(),
                (None, false) => "eth0".into(),
                (None, true) => {
                    return Err(DaemonError::Io {
                        path: "the node's interfaces".into(),
                        message: format!("no interface has the primary ENI's MAC {}: set PODIP_PRIMARY_IF", node.mac),
                    });
                }
            };
        }
        let (poke, poked) = std::sync::mpsc::channel();
        if cfg.program_node {
            notes.push(program_snat(&cfg, &node.vpc_cidrs, &enis)?);
        }
        let boot_id = crate::clock::boot_id();
        let clocks = crate::clock::clocks(&boot_id);
        let now = clocks.now;
        let mut engine = Engine::new(node_cfg, &enis, clocks.wall_ms, now)
            .map_err(|e| cloud_err(format!("ENIs do not fit the datastore: {e}")))?;
        if let Some(Err(why)) = &pod_eni {
            notes.push(format!("custom networking: {why}; no pod ENI is created until the node's ENIConfig exists"));
            engine.set_pod_eni(None);
        }
        if !node_enis.unmanaged.is_empty() {
            notes
                .push(format!("leaving alone the ENIs at devices {:?} (trunk, EFA or no_manage)", node_enis.unmanaged));
        }
        engine.set_unmanaged(node_enis.unmanaged);
        let host =
            if cfg.program_node {
                Some(datapath::host::scan(cfg.node_netns.as_deref()).map_err(|e| DaemonError::Io {
                    path: "the node's network namespace".into(),
                    message: e.to_string(),
                })?)
            } else {
                None
            };
        let (mut cp, mut lost) = read_checkpoint(&cfg.checkpoint, &clocks, &mut notes)?;
        let mut imported = false;
        if cp.is_none()
            && !lost
            && let Some(path) = &cfg.import_checkpoint
        {
            // A node moving from aws-node: its pods keep their addresses. Its file is only read.
            match crate::vpccni::import(path, &clocks) {
                Ok(Some(i)) => {
                    notes.push(format!(
                        "imported {} assignments from aws-node's checkpoint {}",
                        i.checkpoint.allocations.len(),
                        path.display()
                    ));
                    for why in &i.skipped {
                        notes.push(format!("aws-node's checkpoint: skipped {why}"));
                    }
                    // A skipped entry's address is held by a pod podipd cannot name: as with a
                    // lost checkpoint, the host (or a quarantine) keeps it from new pods.
                    lost = !i.skipped.is_empty();
                    cp = Some(i.checkpoint);
                    imported = true;
                }
                Ok(None) => {}
                Err(e) => {
                    // Pods hold addresses this file should have named: rebuild as for a lost
                    // checkpoint, so none of them is handed out again.
                    notes.push(format!("aws-node's checkpoint cannot be imported ({e}); treated as lost"));
                    lost = true;
                }
            }
        }
        // The adaptive policy goes on where it was (a restarted podipd is not a new node).
        if let Some(m) = cp.as_ref().and_then(|cp| cp.pool_memory(&clocks)) {
            engine.remember_pool(now, &m);
        }
        let mut meta = BTreeMap::new();
        let ds = engine.datastore_mut();
        if let Some(cp) = &cp {
            let r = restore(ds, cp, &clocks);
            for a in &r.restored {
                if let (Some(ns), Some(n)) = (&a.pod_namespace, &a.pod_name) {
                    meta.insert(a.key(), (ns.to_string(), n.to_string()));
                }
            }
            notes.push(format!("restored {} assignments and {} cooldowns", r.restored.len(), r.cooling));
            for (a, why) in &r.dropped {
                notes.push(format!("dropped {} {}: {why}", a.container_id.chars().take(80).collect::<String>(), a.ip));
            }
        }
        let mut unwired = BTreeMap::new();
        let mut recovered = 0;
        match &host {
            Some(view) => {
                let wired = view.wired();
                let pods: Vec<(PodKey, IpAddr)> = ds.pods().map(|(k, a)| (k.clone(), *a)).collect();
                let held: BTreeSet<IpAddr> = pods.iter().map(|(_, a)| *a).collect();
                for (k, a) in &pods {
                    if !view.has_link(&veth_name(&cfg.veth_prefix, k, meta.get(k))) && !wired.contains_key(a) {
                        unwired.insert(k.clone(), now);
                        notes.push(format!(
                            "{k} ({a}) is not wired on the host: kept for {} s",
                            cfg.wiring_grace.as_secs()
                        ));
                    }
                }
                // IPv6 pods' node-local egress addresses are theirs, not the pool's.
                for (a, link) in wired.iter().filter(|(a, _)| !held.contains(a) && super::sweep::pool_side(**a)) {
                    let key = PodKey {
                        network: String::new(),
                        container_id: format!("{RECOVERED}{link}"),
                        ifname: String::new(),
                    };
                    let r = match a {
                        IpAddr::V4(ip) => ds.restore(&key, *ip),
                        IpAddr::V6(ip) => ds.restore_v6(&key, *ip),
                    };
                    match r {
                        Ok(()) => {
                            recovered += 1;
                            notes.push(format!("recovered {a} of veth {link} from the host"));
                        }
                        Err(e) => {
                            notes.push(format!("{a} on veth {link} is not the node's ({e}); the sweep removes it"))
                        }
                    }
                }
                // No checkpoint of its own, yet pods wired: this node's state is gone (a
                // checkpoint deleted, or moved by an upgrade), as good as lost.
                let orphaned = cp.is_none() && !imported && recovered > 0;
                if lost || imported || orphaned {
                    // Which addresses were cooling is lost (aws-node keeps no cooldowns): every
                    // IPv4 address not wired cools once. (IPv6 offsets are tied to the pods' IPv4
                    // egress addresses: the host's wiring alone protects them.)
                    let n = quarantine(ds, now + cfg.cooldown);
                    notes.push(format!("rebuilt from the host; {n} unwired addresses cool down once"));
                }
            }
            None if imported && !lost => {
                let n = quarantine(ds, now + cfg.cooldown);
                notes.push(format!("{n} addresses aws-node may have just released cool down once"));
            }
            None if lost => {
                // No host to rebuild from: hold every address back, and move the IPv6 allocator
                // far past anything handed out before.
                let n = quarantine(ds, now + QUARANTINE);
                ds.quarantine_v6_below(ds.v6_next() + (1 << 32));
                notes.push(format!(
                    "{n} addresses quarantined for {} s; new pods get fresh addresses",
                    QUARANTINE.as_secs()
                ));
            }
            None => {}
        }
        let pool = engine.pool_memory(now);
        Checkpoint::capture(engine.datastore(), &meta, &clocks).with_pool(pool).write(&cfg.checkpoint)?;
        let (tx, rx) = channel();
        let metrics = crate::metrics::Metrics::default();
        metrics.recovered.inc_by(recovered);
        let commit = super::Committer::new(cfg.checkpoint.clone(), 0);
        let d = Arc::new(Daemon {
            cfg,
            metrics,
            inner: Mutex::new(Inner {
                engine,
                meta,
                unwired,
                strays: BTreeSet::new(),
                locks: super::locks::LockDir::default(),
                generation: 0,
                seen: super::cluster::Seen::default(),
            }),
            calls: Mutex::new(tx),
            owner,
            cloud_failures: std::sync::atomic::AtomicU32::new(0),
            growth_refused: std::sync::atomic::AtomicU32::new(0),
            boot_id,
            commit,
            links: Mutex::new(Vec::new()),
            kube,
            failures_logged: Mutex::new(BTreeMap::new()),
            node_meta: super::NodeMeta {
                mac: node.mac.clone(),
                interfaces: Mutex::new(
                    node.interfaces.iter().map(|i| (i.eni.clone(), (i.mac.clone(), i.subnet))).collect(),
                ),
                real_nics,
                metadata: metadata.clone(),
                rt: Mutex::new(metadata_rt),
                poke: Mutex::new(poke),
                poked: Mutex::new(Some(poked)),
                waiting: Mutex::new(std::collections::BTreeSet::new()),
                vpc_cidrs: Mutex::new(node.vpc_cidrs.clone()),
                primary: enis.iter().filter(|e| e.device_index == 0).cloned().collect(),
            },
            _lock: (lock, node_lock, instance_lock),
            startup_notes: notes,
            miss: (Mutex::new(false), std::sync::Condvar::new()),
        });
        d.program_enis();
        Ok((d, rx, ec2))
    }
}

/// Programs the node's SNAT: traffic to `vpc_cidrs` (and the excluded blocks) keeps the pod's
/// address; the rest leaves as the primary ENI's. Returns what it did.
pub(super) fn program_snat(
    cfg: &DaemonConfig,
    vpc_cidrs: &[ipnet::Ipv4Net],
    enis: &[EniInfo],
) -> Result<String, DaemonError> {
    let primary = enis.iter().find(|e| e.device_index == 0).map(|e| e.primary_ip);
    let plan = datapath::node::SnatPlan {
        egress_v4: cfg.ipv6,
        internal: cfg.snat == crate::config::Snat::Internal || cfg.ipv6,
        primary_ip: primary.ok_or_else(|| cloud_err("no primary ENI"))?,
        primary_if: cfg.primary_if.clone(),
        exempt: vpc_cidrs.iter().chain(cfg.exclude_snat.iter()).copied().collect(),
        veth_prefix: cfg.veth_prefix.clone(),
        port_flag: match cfg.randomize_snat {
            crate::config::RandomizeSnat::Prng => Some("fully-random"),
            crate::config::RandomizeSnat::HashRandom => Some("random"),
            crate::config::RandomizeSnat::None => None,
        },
    };
    datapath::node::apply_snat(&plan, cfg.node_netns.as_deref())
        .map_err(|e| DaemonError::Io { path: "node data path".into(), message: e.to_string() })?;
    Ok(format!(
        "SNAT {} (primary {}, exempt {})",
        if plan.internal { "internal" } else { "external" },
        plan.primary_ip,
        plan.exempt.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    ))
}
