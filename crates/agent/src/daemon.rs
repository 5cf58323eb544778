//! The daemon: one node engine in real time against the cloud, answering the plugin protocol on
//! a Unix socket, checkpointing every change before it is acknowledged.
//!
//! Threads: one per plugin connection, a pool-check loop (every 5 s), and one cloud worker that
//! carries out the engine's calls in order and feeds their results back. The engine sits behind
//! one mutex; the checkpoint is written under it, so what a reply acknowledges is on disk.
//!
//! Start-up: the node's identity (its instance) comes from the state directory, or a new
//! instance is launched on the simulated VPC; its ENIs come from the cloud (ground truth); the
//! checkpoint is restored on top, and a corrupt one is moved aside and reported.

use crate::checkpoint::{Checkpoint, restore};
use crate::config::DaemonConfig;
use crate::protocol::{Attach, ErrorKind, Lease, Op, Outcome, Readiness, Reply, Request, Response, parse_request};
use cloud::Ec2;
use cloud::exec::execute;
use cloud::remote::{Ec2Reply, Ec2Request, RemoteEc2};
use ipam::Time;
use ipam::addr::{InstanceId, PodKey};
use ipam::call::{Call, OpId};
use ipam::catalog::Catalog;
use ipam::config::{NodeConfig, NodeSettings};
use ipam::datastore::EniInfo;
use ipam::engine::{Effect, Engine, Event};
use ipam::policy::POOL_CHECK_INTERVAL;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, MutexGuard};
use thiserror::Error;

/// How long addresses of unknown holders are kept from new pods after a corrupt checkpoint.
pub const QUARANTINE: std::time::Duration = std::time::Duration::from_secs(600);

/// Why the daemon could not start.
#[derive(Debug, Error)]
pub enum DaemonError {
    /// The cloud could not be reached or refused.
    #[error("cloud: {0}")]
    Cloud(String),
    /// Settings the instance type cannot honour.
    #[error(transparent)]
    Settings(#[from] ipam::config::SettingsError),
    /// Local files.
    #[error("{path}: {message}")]
    Io {
        /// File.
        path: String,
        /// What failed.
        message: String,
    },
}

/// The node's identity, kept in the state directory (what IMDS tells a real node).
#[derive(Debug, Serialize, Deserialize)]
struct Identity {
    instance: InstanceId,
    instance_type: String,
}

/// The wall clock as engine time (milliseconds since the Unix epoch).
#[allow(clippy::disallowed_methods)] // The daemon's one clock read.
pub fn wall() -> Time {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    Time::from_millis(ms)
}

struct Inner {
    engine: Engine,
    meta: BTreeMap<PodKey, (String, String)>,
    /// Device indexes of the secondary ENIs whose links are programmed.
    links: Vec<u32>,
}

/// A booted daemon, the receiver of its cloud calls, and its cloud client.
pub type Booted = (Arc<Daemon>, Receiver<(OpId, Call)>, RemoteEc2);

/// A running daemon.
pub struct Daemon {
    cfg: DaemonConfig,
    /// Prometheus metrics.
    pub metrics: crate::metrics::Metrics,
    inner: Mutex<Inner>,
    calls: Mutex<Sender<(OpId, Call)>>,
    instance: InstanceId,
    /// What start-up reported (restored, dropped, recovered).
    pub startup_notes: Vec<String>,
}

fn identity_path(cfg: &DaemonConfig) -> PathBuf {
    cfg.checkpoint.parent().unwrap_or(Path::new(".")).join("node.json")
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
        ..NodeSettings::default()
    }
}

impl Daemon {
    /// Boots the node against the simulated-VPC service at `socket`: identity, ground truth,
    /// checkpoint. Returns the daemon and the receiver of cloud calls for [`Daemon::run_cloud`].
    ///
    /// # Errors
    /// The cloud is unreachable, the settings do not fit the instance type, files fail.
    pub fn boot(cfg: DaemonConfig, socket: &Path) -> Result<Booted, DaemonError> {
        let mut ec2 =
            RemoteEc2::connect(socket).map_err(|e| DaemonError::Cloud(format!("{}: {e}", socket.display())))?;
        let t = Catalog::embedded().get(&cfg.instance_type).map_err(|e| DaemonError::Cloud(e.to_string()))?;
        let dir = cfg.checkpoint.parent().unwrap_or(Path::new(".")).to_path_buf();
        std::fs::create_dir_all(&dir)
            .map_err(|e| DaemonError::Io { path: dir.display().to_string(), message: e.to_string() })?;
        let id_path = identity_path(&cfg);
        let mut notes = Vec::new();
        let identity: Option<Identity> = std::fs::read(&id_path).ok().and_then(|b| serde_json::from_slice(&b).ok());
        let subnets = match ec2.call(&Ec2Request::Subnets).map_err(|e| DaemonError::Cloud(e.to_string()))? {
            Ec2Reply::Subnets { subnets } => subnets,
            r => return Err(DaemonError::Cloud(format!("unexpected reply {r:?}"))),
        };
        let node_subnet = match &cfg.node_subnet {
            Some(want) => subnets.iter().find(|(id, _, cidr)| id.0 == *want || cidr.to_string() == *want),
            None => subnets.first(),
        }
        .cloned()
        .ok_or_else(|| DaemonError::Cloud(format!("no subnet {:?} in the VPC", cfg.node_subnet)))?;
        let instance = match identity {
            Some(i) => i.instance,
            None => {
                let r = ec2
                    .call(&Ec2Request::RunInstance { instance_type: t.name.clone(), subnet: node_subnet.0.clone() })
                    .map_err(|e| DaemonError::Cloud(e.to_string()))?;
                let Ec2Reply::Instance { instance, .. } = r else {
                    return Err(DaemonError::Cloud("unexpected reply to RunInstance".into()));
                };
                let id = Identity { instance: instance.clone(), instance_type: t.name.clone() };
                let bytes = serde_json::to_vec(&id).map_err(|e| DaemonError::Cloud(e.to_string()))?;
                write_atomic(&id_path, &bytes)?;
                notes.push(format!("launched instance {instance} in {}", node_subnet.2));
                instance
            }
        };
        let enis: Vec<EniInfo> = ec2
            .describe_network_interfaces(&instance)
            .map_err(|e| DaemonError::Cloud(e.to_string()))?
            .into_iter()
            .map(|d| {
                let dev = d.attachment.as_ref().map_or(0, |(_, dev)| *dev);
                d.into_info(dev)
            })
            .collect();
        if enis.is_empty() {
            return Err(DaemonError::Cloud(format!("instance {instance} has no ENIs (terminated?)")));
        }
        let pod_subnet = if cfg.custom_networking {
            subnets.iter().find(|(id, az, _)| *id != node_subnet.0 && *az == node_subnet.1).map(|(id, _, _)| id.clone())
        } else {
            None
        };
        let mut s = settings(&cfg);
        s.custom_networking = pod_subnet.map(|subnet| ipam::config::EniTemplate { subnet, security_groups: vec![] });
        let node_cfg = NodeConfig::resolve(t, node_subnet.0.clone(), &s)?;
        if cfg.program_node {
            let vpc_cidrs = match ec2.call(&Ec2Request::VpcCidrs).map_err(|e| DaemonError::Cloud(e.to_string()))? {
                Ec2Reply::Cidrs { cidrs } => cidrs,
                r => return Err(DaemonError::Cloud(format!("unexpected reply {r:?}"))),
            };
            let primary = enis.iter().find(|e| e.device_index == 0).map(|e| e.primary_ip);
            let plan = datapath::node::SnatPlan {
                egress_v4: cfg.ipv6,
                internal: cfg.snat == crate::config::Snat::Internal || cfg.ipv6,
                primary_ip: primary.ok_or_else(|| DaemonError::Cloud("no primary ENI".into()))?,
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
            notes.push(format!(
                "SNAT {} (primary {}, exempt {})",
                if plan.internal { "internal" } else { "external" },
                plan.primary_ip,
                plan.exempt.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            ));
        }
        let now = wall();
        let mut engine = Engine::new(node_cfg, &enis, now.as_millis(), now)
            .map_err(|e| DaemonError::Cloud(format!("ENIs do not fit the datastore: {e}")))?;
        let mut meta = BTreeMap::new();
        match Checkpoint::read(&cfg.checkpoint) {
            Ok(Some(cp)) => {
                // Ground truth for pods: their host veths (when this daemon owns the node's data
                // path). An entry whose veth is gone belonged to a pod that is gone.
                let links = if cfg.program_node { host_links(cfg.node_netns.as_deref()) } else { None };
                let prefix = cfg.veth_prefix.clone();
                let alive = |a: &crate::checkpoint::Allocation| match &links {
                    None => true,
                    Some(names) => {
                        let key = match (&a.pod_namespace, &a.pod_name) {
                            (Some(ns), Some(n)) => format!("{ns}.{n}"),
                            _ => a.container_id.clone(),
                        };
                        names.contains(&datapath::host_veth_name(&prefix, &key))
                    }
                };
                let r = restore(engine.datastore_mut(), &cp, alive, now);
                for a in &r.restored {
                    if let (Some(ns), Some(n)) = (&a.pod_namespace, &a.pod_name) {
                        meta.insert(a.key(), (ns.clone(), n.clone()));
                    }
                }
                notes.push(format!("restored {} assignments and {} cooldowns", r.restored.len(), r.cooling));
                for (a, why) in &r.dropped {
                    notes.push(format!("dropped {} {}: {why}", a.container_id, a.ip));
                }
            }
            Ok(None) => notes.push("no checkpoint: starting empty".into()),
            Err(e) => {
                let aside = cfg.checkpoint.with_extension(format!("corrupt-{}", now.as_millis()));
                let _ = std::fs::rename(&cfg.checkpoint, &aside);
                // Which pod holds which address is unknown: quarantine every address (as if
                // cooling) so none can go to a second pod while the old ones may still run.
                let until = now + QUARANTINE;
                let ds = engine.datastore_mut();
                let addrs: Vec<std::net::Ipv4Addr> = ds
                    .enis()
                    .iter()
                    .flat_map(|e| e.cidrs.iter())
                    .flat_map(|c| {
                        (0..(1u32 << (32 - u32::from(c.net.prefix_len())))).map(|i| ipam::addr::nth(&c.net, i))
                    })
                    .collect();
                let n = addrs.into_iter().filter(|ip| ds.restore_cooling(*ip, until)).count();
                notes.push(format!(
                    "{e}; kept as {}; {n} addresses quarantined for {} s, new pods get fresh addresses",
                    aside.display(),
                    QUARANTINE.as_secs()
                ));
            }
        }
        let cp = Checkpoint::capture(engine.datastore(), &meta, now);
        cp.write(&cfg.checkpoint)
            .map_err(|e| DaemonError::Io { path: cfg.checkpoint.display().to_string(), message: e.to_string() })?;
        let (tx, rx) = channel();
        let d = Arc::new(Daemon {
            cfg,
            metrics: crate::metrics::Metrics::default(),
            inner: Mutex::new(Inner { engine, meta, links: Vec::new() }),
            calls: Mutex::new(tx),
            instance,
            startup_notes: notes,
        });
        {
            let mut g = d.lock();
            d.program_enis(&mut g);
        }
        Ok((d, rx, ec2))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the engine in an unknown state: stop.
        self.inner.lock().expect("daemon state lock")
    }

    fn forward(&self, effects: Vec<Effect>) {
        let tx = self.calls.lock().expect("call channel lock");
        for e in effects {
            if let Effect::Call { op, call } = e {
                let _ = tx.send((op, call));
            }
        }
    }

    fn observe(&self, inner: &Inner, now: Time) {
        let e = &inner.engine;
        self.metrics.observe(&e.stats(now), e.datastore().enis().len(), e.in_backoff(now));
    }

    /// Makes the node's ENI links and tables match the datastore (secondary ENIs only).
    fn program_enis(&self, inner: &mut Inner) {
        if !self.cfg.program_node {
            return;
        }
        let enis: Vec<datapath::node::EniLink> = inner
            .engine
            .datastore()
            .enis()
            .iter()
            .filter(|e| !e.primary && !e.releasing)
            .map(|e| datapath::node::EniLink { device_index: e.device_index, primary_ip: e.primary_ip })
            .collect();
        let want: Vec<u32> = enis.iter().map(|e| e.device_index).collect();
        let gone: Vec<u32> = inner.links.iter().copied().filter(|d| !want.contains(d)).collect();
        let new: Vec<datapath::node::EniLink> =
            enis.into_iter().filter(|e| !inner.links.contains(&e.device_index)).collect();
        if new.is_empty() && gone.is_empty() {
            return;
        }
        match datapath::node::apply_enis(&new, &gone, &self.cfg.primary_if, self.cfg.node_netns.as_deref()) {
            Ok(()) => inner.links = want,
            Err(e) => eprintln!("podipd: {e}"),
        }
    }

    fn persist(&self, inner: &Inner, now: Time) -> Result<(), String> {
        self.observe(inner, now);
        Checkpoint::capture(inner.engine.datastore(), &inner.meta, now)
            .write(&self.cfg.checkpoint)
            .map_err(|e| e.to_string())
    }

    /// Runs the cloud worker: carries out calls in order and feeds results back. Returns when
    /// every sender is gone.
    pub fn run_cloud(self: &Arc<Self>, rx: Receiver<(OpId, Call)>, mut ec2: RemoteEc2) {
        for (op, call) in rx {
            let result = execute(&mut ec2, &self.instance, &call);
            let code = result.as_ref().map_or_else(|e| e.code.clone(), |_| "ok".to_string());
            self.metrics.calls.get_or_create(&crate::metrics::CallLabels { call: call.name().into(), code }).inc();
            let now = wall();
            let mut g = self.lock();
            let effects = g.engine.handle(now, Event::CallDone { op, result });
            self.program_enis(&mut g);
            for e in &effects {
                if let Effect::Inconsistent { op, error } = e {
                    eprintln!("podipd: {op} did not fit the datastore: {error}");
                }
            }
            let _ = self.persist(&g, now);
            drop(g);
            self.forward(effects);
        }
    }

    /// Runs the pool-check loop forever.
    pub fn run_ticks(self: &Arc<Self>) {
        loop {
            let effects = {
                let mut g = self.lock();
                let now = wall();
                let effects = g.engine.handle(now, Event::Tick);
                self.observe(&g, now);
                effects
            };
            self.forward(effects);
            std::thread::sleep(POOL_CHECK_INTERVAL);
        }
    }

    /// IPv6 pods' node-local egress IPv4: 169.254.172.1 is the gateway, pods follow by the
    /// offset of their address in the node's /80 (unique while they live).
    fn egress_v4(ds: &ipam::datastore::Datastore, addr: std::net::IpAddr) -> Option<std::net::Ipv4Addr> {
        let std::net::IpAddr::V6(v6) = addr else { return None };
        let offset = ds.v6_offset(v6)?;
        (1..=1021)
            .contains(&offset)
            .then(|| std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(169, 254, 172, 1)) + offset as u32))
    }

    fn lease(&self, p: ipam::datastore::Placement, egress_v4: Option<std::net::Ipv4Addr>) -> Lease {
        Lease {
            egress_v4,
            addr: p.addr,
            eni: p.eni.to_string(),
            device_index: p.device_index,
            route_table: if p.device_index == 0 { 254 } else { p.device_index + 1 },
            mtu: self.cfg.pod_mtu,
            veth_prefix: self.cfg.veth_prefix.clone(),
        }
    }

    fn key(a: &Attach) -> PodKey {
        PodKey { network: a.network.clone(), container_id: a.container_id.clone(), ifname: a.ifname.clone() }
    }

    /// Answers one request, timing ADD and DEL.
    #[allow(clippy::disallowed_methods)] // Latency histograms measure real elapsed time.
    pub fn handle(&self, req: Request) -> Response {
        let started = std::time::Instant::now();
        let kind = match req.op {
            Op::Add(_) => Some(&self.metrics.add_seconds),
            Op::Del(_) => Some(&self.metrics.del_seconds),
            _ => None,
        };
        let r = self.answer(req);
        if let Some(h) = kind {
            h.observe(started.elapsed().as_secs_f64());
        }
        r
    }

    fn answer(&self, req: Request) -> Response {
        let ok = |r| Response { v: req.v, outcome: Outcome::Ok { ok: r } };
        let err = |error, message: String| Response { v: req.v, outcome: Outcome::Err { error, message } };
        let now = wall();
        match &req.op {
            Op::Add(a) => {
                let key = Self::key(a);
                let mut g = self.lock();
                let effects = g.engine.handle(now, Event::PodAdd(key.clone()));
                let Some(Effect::PodAssigned { addr, eni, device_index, .. }) = effects.into_iter().next() else {
                    return err(ErrorKind::PoolExhausted, "no free address; the pool is refilling".into());
                };
                if let (Some(ns), Some(n)) = (&a.pod_namespace, &a.pod_name) {
                    g.meta.insert(key.clone(), (ns.clone(), n.clone()));
                }
                if let Err(e) = self.persist(&g, now) {
                    g.engine.handle(now, Event::PodDel(key.clone()));
                    g.meta.remove(&key);
                    return err(ErrorKind::Internal, format!("checkpoint not written, assignment undone: {e}"));
                }
                let egress = Self::egress_v4(g.engine.datastore(), addr);
                ok(Reply::Lease(self.lease(ipam::datastore::Placement { addr, eni, device_index }, egress)))
            }
            Op::Del(a) => {
                let key = Self::key(a);
                let mut g = self.lock();
                let route_table = g.engine.datastore().pod(&key).and_then(|addr| {
                    g.engine
                        .datastore()
                        .enis()
                        .iter()
                        .find(|e| {
                            e.cidrs.iter().any(|c| matches!(addr, std::net::IpAddr::V4(ip) if c.net.contains(&ip)))
                        })
                        .map(|e| if e.device_index == 0 { 254 } else { e.device_index + 1 })
                });
                let effects = g.engine.handle(now, Event::PodDel(key.clone()));
                g.meta.remove(&key);
                let addr = effects.into_iter().find_map(|e| match e {
                    Effect::PodReleased { addr, .. } => addr,
                    _ => None,
                });
                if let Err(e) = self.persist(&g, now) {
                    return err(ErrorKind::Internal, format!("checkpoint not written: {e}"));
                }
                ok(Reply::Released { addr, route_table })
            }
            Op::Check(a) => {
                let key = Self::key(a);
                let g = self.lock();
                match g.engine.datastore().pod(&key) {
                    Some(addr) => {
                        let p = g.engine.datastore().enis().iter().find(|e| {
                            e.cidrs.iter().any(|c| matches!(addr, std::net::IpAddr::V4(ip) if c.net.contains(&ip)))
                                || e.v6_prefix
                                    .is_some_and(|p| matches!(addr, std::net::IpAddr::V6(ip) if p.contains(&ip)))
                        });
                        let (eni, device_index) = p.map_or((String::new(), 0), |e| (e.id.to_string(), e.device_index));
                        let egress = Self::egress_v4(g.engine.datastore(), addr);
                        let placement = ipam::datastore::Placement { addr, eni: eni.as_str().into(), device_index };
                        ok(Reply::Lease(self.lease(placement, egress)))
                    }
                    None => err(ErrorKind::UnknownAttachment, format!("{key} holds no address")),
                }
            }
            Op::Gc { network, valid } => {
                let mut g = self.lock();
                let stale: Vec<PodKey> = g
                    .engine
                    .datastore()
                    .pods()
                    .map(|(k, _)| k.clone())
                    .filter(|k| {
                        &k.network == network && !valid.iter().any(|(c, i)| *c == k.container_id && *i == k.ifname)
                    })
                    .collect();
                for k in &stale {
                    g.engine.handle(now, Event::PodDel(k.clone()));
                    g.meta.remove(k);
                }
                if let Err(e) = self.persist(&g, now) {
                    return err(ErrorKind::Internal, format!("checkpoint not written: {e}"));
                }
                ok(Reply::Collected { released: stale.len() as u32 })
            }
            Op::Status => {
                let g = self.lock();
                let s = g.engine.stats(now);
                let available = s.total.saturating_sub(s.assigned + s.cooling);
                let readiness = if available > 0 {
                    Readiness::Ready
                } else if g.engine.in_backoff(now) || g.engine.steady(now) {
                    Readiness::Exhausted
                } else {
                    Readiness::Refilling
                };
                ok(Reply::Status { readiness, available })
            }
            Op::Introspect => {
                let g = self.lock();
                let ds = g.engine.datastore();
                let enis: Vec<serde_json::Value> = ds
                    .enis()
                    .iter()
                    .map(|e| {
                        serde_json::json!({
                            "id": e.id, "primary": e.primary, "device_index": e.device_index, "subnet": e.subnet,
                            "primary_ip": e.primary_ip, "releasing": e.releasing,
                            "secondary_ips": e.secondary_ips().collect::<Vec<_>>(),
                            "prefixes": e.prefixes().collect::<Vec<_>>(),
                            "pods": e.assigned(),
                        })
                    })
                    .collect();
                let pods: Vec<serde_json::Value> = ds
                    .pods()
                    .map(|(k, a)| serde_json::json!({"network": k.network, "container_id": k.container_id, "ifname": k.ifname, "ip": a}))
                    .collect();
                let s = g.engine.stats(now);
                ok(Reply::Introspect {
                    state: serde_json::json!({
                        "instance": self.instance, "enis": enis, "pods": pods,
                        "total": s.total, "assigned": s.assigned, "cooling": s.cooling, "in_flight": g.engine.in_flight(),
                    }),
                })
            }
        }
    }

    /// Serves the plugin protocol on the configured socket (owner-only), forever.
    ///
    /// # Errors
    /// The socket cannot be bound.
    pub fn serve(self: &Arc<Self>) -> Result<(), DaemonError> {
        let path = &self.cfg.socket;
        let io = |e: std::io::Error| DaemonError::Io { path: path.display().to_string(), message: e.to_string() };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).map_err(io)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let d = Arc::clone(self);
            std::thread::spawn(move || d.connection(conn));
        }
        Ok(())
    }

    /// Serves `/metrics` (Prometheus text) and `/v1/state` (introspection JSON) on the
    /// configured loopback address, forever.
    ///
    /// # Errors
    /// The address cannot be bound.
    pub fn serve_http(self: &Arc<Self>) -> Result<(), DaemonError> {
        let addr = self.cfg.metrics.clone();
        let listener = std::net::TcpListener::bind(&addr)
            .map_err(|e| DaemonError::Io { path: addr.clone(), message: e.to_string() })?;
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut line = String::new();
            let Ok(read) = conn.try_clone() else { continue };
            if BufReader::new(read).read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("/");
            let (status, ctype, body) = match path {
                "/metrics" => ("200 OK", "text/plain; version=0.0.4", self.metrics.render()),
                "/v1/state" => {
                    let r = self.answer(Request { v: crate::protocol::CURRENT, op: Op::Introspect });
                    let body = match r.outcome {
                        Outcome::Ok { ok: Reply::Introspect { state } } => state.to_string(),
                        _ => "{}".to_string(),
                    };
                    ("200 OK", "application/json", body)
                }
                "/" => ("200 OK", "text/plain", "/metrics\n/v1/state\n".to_string()),
                _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
        Ok(())
    }

    fn connection(&self, conn: UnixStream) {
        let Ok(read) = conn.try_clone() else { return };
        let mut write = conn;
        for line in BufReader::new(read).lines() {
            let Ok(line) = line else { return };
            let resp = match parse_request(&line) {
                Ok(req) => self.handle(req),
                Err(resp) => resp,
            };
            let Ok(mut text) = serde_json::to_string(&resp) else { return };
            text.push('\n');
            if write.write_all(text.as_bytes()).is_err() {
                return;
            }
        }
    }
}

/// The link names of the node's namespace, or `None` when they cannot be read.
fn host_links(netns: Option<&str>) -> Option<std::collections::HashSet<String>> {
    let out = match netns {
        Some(ns) => {
            std::process::Command::new("nsenter").arg(format!("--net={ns}")).args(["ip", "-o", "link", "show"]).output()
        }
        None => std::process::Command::new("ip").args(["-o", "link", "show"]).output(),
    }
    .ok()
    .filter(|o| o.status.success())?;
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect(),
    )
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DaemonError> {
    let io = |e: std::io::Error| DaemonError::Io { path: path.display().to_string(), message: e.to_string() };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}
