//! The daemon: one node engine in real time against the cloud, answering the plugin protocol on
//! a Unix socket; every change durable before it is acknowledged.
//!
//! Threads: a bounded pool of plugin-connection workers ([`listen`]), a pool-check loop (every
//! 5 s), one cloud worker that carries out the engine's calls in order and feeds their results
//! back, the checkpoint writer ([`commit`]), the host sweep ([`sweep`]) and the metrics endpoint
//! ([`http`]). The engine sits behind one mutex that is never held across a file write, an
//! fsync or a subprocess.
//!
//! Ownership: an address is released only by a DEL or GC of its attachment, or by the sweep
//! when the host never wired it within the grace period; a repeated ADD returns the held lease
//! (`existing`), so the plugin never rolls back an address it did not take. Start-up
//! ([`boot`]) takes the state directory's lock, then rebuilds the pool from the cloud's ENIs,
//! the checkpoint and the host's wiring, before anything is handed out.

mod boot;
mod cluster;
mod commit;
mod http;
mod listen;
mod locks;
mod sweep;

pub use boot::Booted;
pub use listen::MAX_REQUEST;

use crate::checkpoint::Checkpoint;
use crate::config::DaemonConfig;
use crate::protocol::{Attach, ErrorKind, Lease, Op, Outcome, Readiness, Reply, Request, Response};
use cloud::exec::execute;
use commit::Committer;
use ipam::Time;
use ipam::addr::PodKey;
use ipam::call::{Call, OpId};
use ipam::engine::{Effect, Engine, Event};
use ipam::policy::POOL_CHECK_INTERVAL;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
pub use sweep::SweepReport;
use thiserror::Error;

/// How long addresses of unknown holders are kept from new pods after a corrupt checkpoint when
/// the host's wiring cannot be read (IPAM-only runs).
pub const QUARANTINE: std::time::Duration = std::time::Duration::from_secs(600);

/// After this many cloud calls in a row failed for want of the cloud, it counts as down.
const CLOUD_DOWN_AFTER: u32 = 3;

/// IPv6 pods a node gives an egress IPv4 address (169.254.172.2 to .254.175.254: the /22 the
/// VPC CNI's egress plugin uses, less the network, the gateway and the broadcast).
const EGRESS_V4_PODS: u64 = 1021;

/// The IPAM key prefix of attachments recovered from the host (their checkpoint entry was
/// lost): `host:<veth>`; a DEL that names the pod behind that veth releases them.
pub const RECOVERED: &str = protocol::lockfile::RECOVERED;

/// Why the daemon could not start.
#[derive(Debug, Error)]
pub enum DaemonError {
    /// The cloud refused.
    #[error("cloud: {0}")]
    Cloud(String),
    /// The cloud could not be reached (or timed out, or throttled): worth trying again.
    #[error("cloud unreachable: {0}")]
    Unreachable(String),
    /// Settings the instance type cannot honour.
    #[error(transparent)]
    Settings(#[from] ipam::config::SettingsError),
    /// Another daemon runs on this node.
    #[error(transparent)]
    Locked(#[from] crate::lock::LockError),
    /// The checkpoint cannot be used as it is (another version, or unreadable).
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    /// Kubernetes cannot be used (no configuration to reach the API server).
    #[error("kubernetes: {0}")]
    Kubernetes(String),
    /// Local files and the host.
    #[error("{path}: {message}")]
    Io {
        /// File.
        path: String,
        /// What failed.
        message: String,
    },
}

/// The engine time the daemon runs on: the boot clock.
pub fn now() -> Time {
    crate::clock::now()
}

/// The wall clock as engine time (milliseconds since the Unix epoch), for simulated clouds in
/// tests and the simulated-VPC service.
pub fn wall() -> Time {
    Time::from_millis(crate::clock::wall_ms())
}

/// The host veth of an attachment (see [`Daemon::veth_of`]).
fn veth_name(prefix: &str, key: &PodKey, meta: Option<&(String, String)>) -> String {
    if let Some(v) = key.container_id.strip_prefix(RECOVERED) {
        return v.to_string();
    }
    let pod = meta.map(|(ns, n)| (ns.as_str(), n.as_str()));
    datapath::host_veth_name(prefix, &datapath::veth_key(pod, &key.container_id, &key.ifname))
}

struct Inner {
    engine: Engine,
    meta: BTreeMap<PodKey, (String, String)>,
    /// Assignments the last sweep saw without wiring on the host, since when.
    unwired: BTreeMap<PodKey, Time>,
    /// Host objects no attachment held at the last sweep (removed if still so at the next).
    strays: BTreeSet<sweep::Stray>,
    /// The attachment lock directory as the sweeps saw it.
    locks: locks::LockDir,
    /// The newest generation of the pool's state.
    generation: u64,
    /// What the pool last took from Kubernetes.
    seen: cluster::Seen,
}

/// The node's metadata the daemon re-reads.
struct NodeMeta {
    /// The primary interface's MAC.
    mac: String,
    /// Each attached ENI's MAC and subnet block, as the metadata last listed them.
    interfaces: Mutex<BTreeMap<ipam::addr::EniId, (String, Option<ipnet::Ipv4Net>)>>,
    /// Whether the node's interfaces are the ENIs' own (a real node: the primary ENI's MAC is
    /// on one), rather than the simulated VPC's stand-ins.
    real_nics: bool,
    /// The metadata service, and a runtime to ask it from the cloud worker.
    metadata: aws::metadata::Metadata,
    rt: Mutex<tokio::runtime::Runtime>,
    /// Asks the metadata loop to read again soon (an ENI is waiting for its interface).
    poke: Mutex<std::sync::mpsc::Sender<()>>,
    /// The loop's end of `poke`, until it starts.
    poked: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    /// ENIs already reported as waiting for their interface.
    waiting: Mutex<std::collections::BTreeSet<ipam::addr::EniId>>,
    /// The VPC's IPv4 blocks (SNAT's exemptions), as last read.
    vpc_cidrs: Mutex<Vec<ipnet::Ipv4Net>>,
    /// The primary ENI (SNAT's address).
    primary: Vec<ipam::datastore::EniInfo>,
}

/// A running daemon.
pub struct Daemon {
    cfg: DaemonConfig,
    /// Prometheus metrics.
    pub metrics: crate::metrics::Metrics,
    inner: Mutex<Inner>,
    calls: Mutex<Sender<(OpId, Call)>>,
    owner: cloud::exec::Owner,
    /// Cloud calls in a row that could not reach the cloud (unreachable, timed out, an EC2
    /// server error); any other answer ends the streak.
    cloud_failures: std::sync::atomic::AtomicU32,
    /// Calls in a row that would grow the pool and were refused for want of permission; only a
    /// growth that works ends the streak (a describe that works does not: the pool still
    /// cannot grow).
    growth_refused: std::sync::atomic::AtomicU32,
    boot_id: String,
    commit: Committer,
    /// The secondary ENIs whose links are programmed: device index, ENI, on a real interface.
    links: Mutex<Vec<(u32, ipam::addr::EniId, bool)>>,
    /// Kubernetes, when the daemon runs as a pod.
    kube: Option<cluster::Kube>,
    /// When each (call, error code) was last logged.
    failures_logged: Mutex<BTreeMap<(String, String), Time>>,
    /// What the instance metadata said of the node, kept for the periodic re-read.
    node_meta: NodeMeta,
    _lock: (crate::lock::StateLock, Option<crate::lock::NodeLock>, crate::lock::NodeLock),
    /// What start-up reported (restored, recovered, dropped).
    pub startup_notes: Vec<String>,
    /// Set when a pod found no address and the policy refills at once: the pool-check loop
    /// runs its cycle now instead of at the end of its sleep.
    miss: (Mutex<bool>, std::sync::Condvar),
}

impl Daemon {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the engine in an unknown state: stop.
        self.inner.lock().expect("daemon state lock")
    }

    /// Sends the engine's calls to the cloud worker and reports what else it said.
    fn forward(&self, effects: Vec<Effect>) {
        let tx = self.calls.lock().expect("call channel lock");
        for e in effects {
            match e {
                Effect::Call { op, call } => {
                    let _ = tx.send((op, call));
                }
                Effect::Inconsistent { op, error } => {
                    eprintln!("podipd: {op} did not fit the datastore ({error}); reconciling with EC2");
                }
                Effect::Reconciled(r) => {
                    eprintln!("podipd: reconcile corrected the pool from EC2: {}", serde_json::json!(r));
                }
                _ => {}
            }
        }
    }

    fn observe(&self, inner: &Inner, now: Time) {
        let e = &inner.engine;
        self.metrics.observe(&e.stats(now), e.datastore().enis().len(), e.in_backoff(now));
        self.metrics.observe_engine(&e.counters());
        self.metrics.orphan_enis.set(e.orphans().count() as i64);
    }

    /// Whether the cloud is out of reach, or refuses to grow the pool: the last few calls all
    /// failed so.
    fn cloud_down(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        self.cloud_failures.load(Relaxed) >= CLOUD_DOWN_AFTER || self.growth_refused.load(Relaxed) >= CLOUD_DOWN_AFTER
    }

    /// Counts a call's result toward [`Daemon::cloud_down`].
    fn note_cloud(&self, call: &Call, result: &Result<ipam::call::CallOutput, ipam::call::CallError>) {
        use std::sync::atomic::Ordering::Relaxed;
        let code = result.as_ref().err().map(|e| e.code.as_str());
        // Unreachable, timed out, or EC2's own server errors (InternalError, ServiceUnavailable).
        if result.as_ref().err().is_some_and(|e| e.kind == ipam::call::ErrorKind::Transient) {
            self.cloud_failures.fetch_add(1, Relaxed);
        } else {
            self.cloud_failures.store(0, Relaxed);
        }
        let growth = matches!(
            call,
            Call::CreateEni { .. }
                | Call::AttachEni { .. }
                | Call::AssignIps { .. }
                | Call::AssignPrefixes { .. }
                | Call::AssignIpv6Prefix { .. }
        );
        if let Err(e) = result {
            // Every failure is logged, once a minute per call and code (the metrics count all).
            let key = (call.name().to_string(), e.code.clone());
            let t = now();
            let mut logged = self.failures_logged.lock().expect("failure log lock");
            if logged.get(&key).is_none_or(|at| t.since(*at) >= std::time::Duration::from_secs(60)) {
                logged.insert(key, t);
                eprintln!("podipd: {} failed: {e}", call.name());
            }
        }
        if let (Some(kube), Err(e)) = (&self.kube, result) {
            use kubernetes::events::Problem;
            let custom = self.cfg.custom_networking;
            match (call, e.code.as_str()) {
                (_, "UnauthorizedOperation" | "AuthFailure") => {
                    kube.problem(Problem::MissingIamPermissions(format!("{}: {e}", call.name())), now());
                }
                _ if e.is_insufficient_addresses() => kube.problem(Problem::SubnetExhausted(e.to_string()), now()),
                // Under custom networking the subnet is the ENIConfig's: unknown, or in another
                // AZ (EC2 refuses the attach).
                (Call::CreateEni { .. }, "InvalidSubnetID.NotFound")
                | (Call::AttachEni { .. }, "InvalidParameterCombination" | "InvalidParameterValue")
                    if custom =>
                {
                    kube.problem(Problem::EniConfigInvalid(e.to_string()), now());
                }
                _ => {}
            }
        }
        match code {
            Some("UnauthorizedOperation" | "AuthFailure" | "Blocked") if growth => {
                self.growth_refused.fetch_add(1, Relaxed);
            }
            None if growth => self.growth_refused.store(0, Relaxed),
            _ => {}
        }
        self.metrics.cloud_down.set(i64::from(self.cloud_down()));
    }

    /// Publishes the pool's state as a new generation (under the pool lock); the caller waits
    /// for it with [`Committer::wait`] after letting the lock go.
    fn publish(&self, inner: &mut Inner, now: Time) -> u64 {
        self.observe(inner, now);
        inner.generation += 1;
        let clocks = crate::checkpoint::Clocks { now, wall_ms: 0, boot_id: self.boot_id.clone() };
        let pool = inner.engine.pool_memory(now);
        self.commit.publish(
            inner.generation,
            Checkpoint::capture(inner.engine.datastore(), &inner.meta, &clocks).with_pool(pool).encode(),
        );
        inner.generation
    }

    /// Makes the node's ENI links and tables match the datastore (secondary ENIs only), outside
    /// the pool lock. A real ENI is set up on the node's interface with its MAC; on the
    /// simulated VPC (no interface has the node's MACs) a dummy link stands in for it. An ENI
    /// the metadata does not list yet, or whose interface has not appeared, waits for the next
    /// metadata read, which this asks for at once.
    fn program_enis(&self) {
        self.program_enis_now(true);
    }

    fn program_enis_now(&self, ask_metadata: bool) {
        if !self.cfg.program_node {
            return;
        }
        let enis: Vec<(ipam::addr::EniId, u32, std::net::Ipv4Addr)> = self
            .lock()
            .engine
            .datastore()
            .enis()
            .iter()
            // An ENI being released keeps its routing while pods still use it (one let go
            // after a no_manage tag, or dropped by EC2).
            .filter(|e| !e.primary && (!e.releasing || e.assigned() > 0))
            .map(|e| (e.id.clone(), e.device_index, e.primary_ip))
            .collect();
        let netns = self.cfg.node_netns.as_deref();
        let mut links = self.links.lock().expect("links lock");
        // A real ENI whose table the kernel emptied (its interface went down, or was renamed)
        // is set up again; so is one whose device index another ENI took.
        if !ask_metadata {
            links.retain(|(d, id, real)| {
                let same = enis.iter().any(|e| e.1 == *d && &e.0 == id);
                same && (!*real || datapath::node::table_has_routes(d + 1, netns))
            });
        }
        let programmed = |e: &(ipam::addr::EniId, u32, std::net::Ipv4Addr), l: &[(u32, ipam::addr::EniId, bool)]| {
            l.iter().any(|(d, id, _)| *d == e.1 && *id == e.0)
        };
        let gone: Vec<u32> =
            links.iter().filter(|(d, id, _)| !enis.iter().any(|e| e.1 == *d && &e.0 == id)).map(|l| l.0).collect();
        let mut known = self.node_meta.interfaces.lock().expect("interfaces lock").clone();
        if ask_metadata && enis.iter().any(|e| !programmed(e, &links) && !known.contains_key(&e.0)) {
            // A new ENI: the metadata lists it (with its MAC and subnet) soon after the attach.
            known = self.read_interfaces().unwrap_or(known);
        }
        let mut new = Vec::new();
        let mut waiting = Vec::new();
        for e in enis.iter().filter(|e| !programmed(e, &links)) {
            let (id, device_index, primary_ip) = e.clone();
            let Some((mac, subnet)) = known.get(&id) else {
                waiting.push((id, "the instance metadata does not list it yet".to_string()));
                continue;
            };
            let nic = match (datapath::node::link_by_mac(mac, netns), subnet) {
                (Ok(Some(name)), Some(subnet)) => Some((name, *subnet)),
                (Err(e), _) if self.node_meta.real_nics => {
                    waiting.push((id, e.to_string()));
                    continue;
                }
                (_, _) if self.node_meta.real_nics => {
                    waiting.push((id, format!("no interface has its MAC {mac} yet")));
                    continue;
                }
                _ => None,
            };
            new.push(datapath::node::EniLink { device_index, primary_ip, nic, mtu: self.cfg.eni_mtu });
        }
        if !waiting.is_empty() && ask_metadata {
            let _ = self.node_meta.poke.lock().expect("poke lock").send(());
        }
        let mut applied = Vec::new();
        if !new.is_empty() || !gone.is_empty() {
            let result = datapath::node::apply_enis(&new, &gone, &self.cfg.primary_if, netns);
            match &result {
                Ok(()) => links.retain(|(d, _, _)| !gone.contains(d)),
                Err(e) => eprintln!("podipd: {e}"),
            }
            // An ENI is set up when its table leads out, whatever else the batch said (the
            // simulated VPC's stand-in link may be a type this kernel lacks).
            for l in &new {
                if result.is_ok() || datapath::node::table_has_routes(l.device_index + 1, netns) {
                    let id = enis.iter().find(|e| e.1 == l.device_index).map(|e| e.0.clone()).unwrap_or_default();
                    links.push((l.device_index, id.clone(), l.nic.is_some()));
                    applied.push(id);
                }
            }
        }
        drop(links);
        {
            // Pods get an ENI's addresses only once its interface and route table are set up:
            // before, they would have no route (on a real node and on the simulated one alike).
            let mut g = self.lock();
            for id in &applied {
                g.engine.hold_eni(id, false);
            }
            let mut told = self.node_meta.waiting.lock().expect("waiting lock");
            for (id, why) in &waiting {
                g.engine.hold_eni(id, true);
                if told.insert(id.clone()) {
                    eprintln!("podipd: {id} waits for its interface ({why}); its addresses are held back");
                }
            }
            told.retain(|id| waiting.iter().any(|(w, _)| w == id));
            self.metrics.enis_waiting.set(waiting.len() as i64);
        }
    }

    /// Holds back the addresses of every secondary ENI whose interface and route table are not
    /// set up yet, under the pool lock, before any pod could be given one.
    fn hold_unprogrammed(&self, g: &mut Inner) {
        if !self.cfg.program_node {
            return;
        }
        let links = self.links.lock().expect("links lock").clone();
        let fresh: Vec<ipam::addr::EniId> = g
            .engine
            .datastore()
            .enis()
            .iter()
            .filter(|e| !e.primary && !links.iter().any(|(d, id, _)| *d == e.device_index && *id == e.id))
            .map(|e| e.id.clone())
            .collect();
        for id in fresh {
            g.engine.hold_eni(&id, true);
        }
    }

    /// Runs the checkpoint writer forever.
    pub fn run_commits(self: &Arc<Self>) {
        self.commit.run();
    }

    /// Runs the cloud worker: carries out calls in order and feeds results back. Returns when
    /// every sender is gone.
    pub fn run_cloud(self: &Arc<Self>, rx: Receiver<(OpId, Call)>, mut ec2: aws::AwsEc2) {
        for (op, call) in rx {
            // Never under the pool lock: a slow or absent cloud delays the pool, not the pods.
            let result = execute(&mut ec2, &self.owner, crate::clock::wall_ms() / 1000, &call);
            let code = result.as_ref().map_or_else(|e| e.code.clone(), |_| "ok".to_string());
            self.metrics.calls.get_or_create(&crate::metrics::CallLabels { call: call.name().into(), code }).inc();
            self.note_cloud(&call, &result);
            let now = now();
            let effects = {
                let mut g = self.lock();
                let effects = g.engine.handle(now, Event::CallDone { op, result });
                self.hold_unprogrammed(&mut g);
                self.publish(&mut g, now);
                effects
            };
            self.program_enis();
            self.forward(effects);
        }
    }

    /// Reads the attached interfaces from the metadata and keeps them.
    fn read_interfaces(&self) -> Option<BTreeMap<ipam::addr::EniId, (String, Option<ipnet::Ipv4Net>)>> {
        let read = {
            let rt = self.node_meta.rt.lock().expect("metadata runtime lock");
            rt.block_on(self.node_meta.metadata.interfaces(&self.node_meta.mac))
        };
        match read {
            Ok(list) => {
                let map: BTreeMap<_, _> = list.into_iter().map(|i| (i.eni, (i.mac, i.subnet))).collect();
                *self.node_meta.interfaces.lock().expect("interfaces lock") = map.clone();
                Some(map)
            }
            Err(e) => {
                eprintln!("podipd: {e}; keeping the interfaces as they were");
                None
            }
        }
    }

    /// Re-reads the instance metadata every `every` (or at once when an ENI waits for it),
    /// forever: the attached interfaces (a new ENI's MAC and subnet, to set its interface up),
    /// and the VPC's IPv4 blocks, reprogramming SNAT's exemptions when they change (a VPC can
    /// gain a CIDR block while nodes run: its addresses must not be SNATed). A failed read keeps
    /// what was known.
    pub fn run_metadata(self: &Arc<Self>, every: std::time::Duration) {
        let Some(poked) = self.node_meta.poked.lock().expect("poke lock").take() else { return };
        loop {
            match poked.recv_timeout(every) {
                Ok(()) => {
                    // Several ENIs may ask at once; a moment lets the metadata catch up.
                    std::thread::sleep(std::time::Duration::from_millis(250));
                    while poked.try_recv().is_ok() {}
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            }
            self.read_interfaces();
            self.program_enis_now(false);
            let read = {
                let rt = self.node_meta.rt.lock().expect("metadata runtime lock");
                rt.block_on(self.node_meta.metadata.vpc_cidrs(&self.node_meta.mac))
            };
            let cidrs = match read {
                Ok(c) if !c.is_empty() => c,
                Ok(_) => continue,
                Err(e) => {
                    eprintln!("podipd: {e}; keeping the VPC's blocks as they were");
                    continue;
                }
            };
            let mut known = self.node_meta.vpc_cidrs.lock().expect("vpc cidrs lock");
            if *known == cidrs {
                continue;
            }
            if self.cfg.program_node {
                match boot::program_snat(&self.cfg, &cidrs, &self.node_meta.primary) {
                    Ok(note) => eprintln!("podipd: the VPC's blocks changed: {note}"),
                    Err(e) => {
                        eprintln!("podipd: the VPC's blocks changed, SNAT not reprogrammed: {e}");
                        continue;
                    }
                }
            }
            *known = cidrs;
        }
    }

    /// Runs the pool-check loop forever.
    pub fn run_ticks(self: &Arc<Self>) {
        loop {
            let effects = {
                let mut g = self.lock();
                let now = now();
                let mut effects = self.take_cluster(&mut g, now);
                effects.extend(g.engine.handle(now, Event::Tick));
                self.observe(&g, now);
                effects
            };
            self.forward(effects);
            // Sleep until the next cycle, or until a pod finds no address.
            let missed = self.miss.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let (mut missed, _) = self
                .miss
                .1
                .wait_timeout_while(missed, POOL_CHECK_INTERVAL, |m| !*m)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *missed = false;
        }
    }

    /// A pod found no free address: under a policy that refills at once, the pool-check loop
    /// wakes now.
    fn missed(&self, ticks_on_miss: bool) {
        if ticks_on_miss {
            *self.miss.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = true;
            self.miss.1.notify_one();
        }
    }

    /// Takes what Kubernetes says now into the engine (max pods, schedulable, the node's
    /// ENIConfig), logging each change once.
    fn take_cluster(&self, g: &mut Inner, now: Time) -> Vec<Effect> {
        let Some(kube) = &self.kube else { return Vec::new() };
        kube.report_errors();
        if !kube.knows_node() {
            return Vec::new();
        }
        // The pods scheduled here and not yet started, less those already given an address
        // (kubelet reports a pod's IP a moment after its ADD).
        if let Some(wanting) = kube.pods_wanting_addresses() {
            let served: BTreeSet<&(String, String)> = g.meta.values().collect();
            let coming = wanting.iter().filter(|p| !served.contains(p)).count();
            g.engine.set_coming(u32::try_from(coming).unwrap_or(u32::MAX));
        }
        let seen = kube.seen();
        if seen == g.seen {
            return Vec::new();
        }
        let mut effects = Vec::new();
        if seen.cluster_nodes != g.seen.cluster_nodes
            && let (Some(n), Some(rate)) = (seen.cluster_nodes, self.cfg.cluster_calls_per_second)
        {
            let share = ipam::config::CallBudget::share(rate, crate::config::CLUSTER_CALL_BURST, n);
            eprintln!(
                "podipd: the cluster has {n} nodes: this node's share of {rate} EC2 calls a second is {} an hour{}",
                share.per_hour,
                if share.paced { ", in slots of its own" } else { "" }
            );
            if rate * 3600.0 < f64::from(n) {
                eprintln!(
                    "podipd: {rate} EC2 calls a second is less than one an hour for each of {n} nodes; one an hour it is"
                );
            }
            g.engine.set_call_budget(now, Some(share));
        }
        if seen.max_pods != g.seen.max_pods
            && let Some(n) = seen.max_pods
        {
            eprintln!("podipd: the node's max pods is {n}");
            g.engine.set_max_pods(n);
        }
        if seen.unschedulable != g.seen.unschedulable {
            eprintln!("podipd: the node is {}", if seen.unschedulable { "unschedulable" } else { "schedulable" });
            effects.extend(g.engine.handle(now, Event::Schedulable(!seen.unschedulable)));
        }
        if seen.eniconfig != g.seen.eniconfig && self.cfg.custom_networking {
            match &seen.eniconfig {
                Some(Ok(spec)) => {
                    eprintln!("podipd: new pod ENIs go to {} ({})", spec.subnet, spec.security_groups.join(", "));
                    g.engine.set_pod_eni(Some(template(spec)));
                }
                Some(Err(missing)) => {
                    eprintln!("podipd: {missing}");
                    g.engine.set_pod_eni(None);
                    kube.problem(kubernetes::events::Problem::EniConfigMissing(missing.0.clone()), now);
                }
                None => {}
            }
        }
        g.seen = seen;
        effects
    }

    /// IPv6 pods' node-local egress IPv4: 169.254.172.1 is the gateway, pods follow by the
    /// offset of their address in the node's /80 (unique while they live).
    fn egress_v4(ds: &ipam::datastore::Datastore, addr: std::net::IpAddr) -> Option<std::net::Ipv4Addr> {
        let std::net::IpAddr::V6(v6) = addr else { return None };
        let offset = ds.v6_offset(v6)?;
        (1..=EGRESS_V4_PODS)
            .contains(&offset)
            .then(|| std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(169, 254, 172, 1)) + offset as u32))
    }

    fn lease(&self, ds: &ipam::datastore::Datastore, addr: std::net::IpAddr, existing: bool, veth: String) -> Lease {
        let (eni, device_index) = ds
            .enis()
            .iter()
            .find(|e| match addr {
                std::net::IpAddr::V4(ip) => e.cidrs.iter().any(|c| c.net.contains(&ip)),
                std::net::IpAddr::V6(ip) => e.v6_prefix.is_some_and(|p| p.contains(&ip)),
            })
            .map_or((String::new(), 0), |e| (e.id.to_string(), e.device_index));
        Lease {
            egress_v4: Self::egress_v4(ds, addr),
            addr,
            eni,
            device_index,
            route_table: if device_index == 0 { 254 } else { device_index + 1 },
            mtu: self.cfg.pod_mtu,
            veth_prefix: self.cfg.veth_prefix.clone(),
            veth,
            existing,
            pod: None,
        }
    }

    fn key(a: &Attach) -> PodKey {
        PodKey { network: a.network.clone(), container_id: a.container_id.clone(), ifname: a.ifname.clone() }
    }

    /// The host veth of an attachment: the VPC CNI's `namespace.name` hash, or the container
    /// id's without them; for a recovered attachment, the veth it was recovered from.
    fn veth_of(&self, key: &PodKey, meta: Option<&(String, String)>) -> String {
        veth_name(&self.cfg.veth_prefix, key, meta)
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
        let v = req.v;
        let ok = |r| Response { v, outcome: Outcome::Ok { ok: r } };
        let err = |error, message: String| Response { v, outcome: Outcome::Err { error, message } };
        if let Op::Add(a) | Op::Del(a) | Op::Check(a) | Op::Teardown(a) = &req.op
            && let Err(e) = crate::limits::attach(a)
        {
            return err(ErrorKind::BadRequest, e);
        }
        let now = now();
        match &req.op {
            Op::Add(a) => self.add(a, now).map_or_else(|(k, m)| err(k, m), ok),
            Op::Del(a) => self.del(a, now).map_or_else(|(k, m)| err(k, m), ok),
            Op::Teardown(a) => ok(self.teardown_plan(a)),
            Op::Check(a) => {
                let g = self.lock();
                let (key, veth) = self.resolve(&g, a);
                match g.engine.datastore().pod(&key) {
                    Some(addr) => ok(Reply::Lease(Box::new(self.lease(g.engine.datastore(), addr, true, veth)))),
                    None => err(ErrorKind::UnknownAttachment, format!("{key} holds no address")),
                }
            }
            Op::Gc { network, valid } => {
                if valid.len() > crate::limits::MAX_VALID {
                    return err(
                        ErrorKind::BadRequest,
                        format!("more than {} valid attachments", crate::limits::MAX_VALID),
                    );
                }
                let valid: BTreeSet<(&str, &str)> = valid.iter().map(|(c, i)| (c.as_str(), i.as_str())).collect();
                let g = self.lock();
                let attachments = g
                    .engine
                    .datastore()
                    .pods()
                    .map(|(k, _)| k)
                    .filter(|k| &k.network == network && !valid.contains(&(k.container_id.as_str(), k.ifname.as_str())))
                    .map(|k| {
                        let m = g.meta.get(k);
                        Attach {
                            network: k.network.clone(),
                            container_id: k.container_id.clone(),
                            ifname: k.ifname.clone(),
                            netns: None,
                            pod_namespace: m.map(|m| m.0.clone()),
                            pod_name: m.map(|m| m.1.clone()),
                            release_only: None,
                            scrub_rules: false,
                        }
                    })
                    .collect();
                ok(Reply::Stale { attachments })
            }
            Op::Status => {
                // A full or refilling pool is normal: STATUS fails only when no pod could ever
                // get an address here, because the pool is empty and the cloud out of reach.
                let g = self.lock();
                let s = g.engine.stats(now);
                // What ADD can hand out now: not the addresses of an ENI whose interface the
                // node has not set up yet.
                let ds = g.engine.datastore();
                let mut available = ds.available(now);
                if self.cfg.ipv6 {
                    // An IPv6 pod needs one of the node's egress IPv4 addresses too.
                    available = available.min(ds.v6_available_up_to(EGRESS_V4_PODS, now));
                }
                let readiness = if s.total == 0 && self.cloud_down() { Readiness::CloudDown } else { Readiness::Ready };
                ok(Reply::Status { readiness, available })
            }
            Op::Introspect => ok(Reply::Introspect { state: self.state(true, now) }),
        }
    }

    fn add(&self, a: &Attach, now: Time) -> Result<Reply, (ErrorKind, String)> {
        let key = Self::key(a);
        let (lease, generation) = {
            let mut g = self.lock();
            let existing = g.engine.datastore().pod(&key).is_some();
            let effects = g.engine.handle(now, Event::PodAdd(key.clone()));
            let Some(Effect::PodAssigned { addr, .. }) = effects.into_iter().next() else {
                self.missed(g.engine.ticks_on_miss());
                return Err((ErrorKind::PoolExhausted, "no free address; the pool is refilling".into()));
            };
            if !existing && let (Some(ns), Some(n)) = (&a.pod_namespace, &a.pod_name) {
                g.meta.insert(key.clone(), (ns.clone(), n.clone()));
            }
            let veth = self.veth_of(&key, g.meta.get(&key));
            let mut lease = self.lease(g.engine.datastore(), addr, existing, veth);
            lease.pod = g.meta.get(&key).cloned();
            if addr.is_ipv6() && lease.egress_v4.is_none() && !existing {
                // No pod without its IPv4 egress: 1,021 node-local addresses per node.
                g.engine.handle(now, Event::PodDel(key.clone()));
                g.meta.remove(&key);
                return Err((
                    ErrorKind::PoolExhausted,
                    format!("no IPv4 egress address left for an IPv6 pod ({EGRESS_V4_PODS} per node)"),
                ));
            }
            (lease, self.publish(&mut g, now))
        };
        if let Err(e) = self.commit.wait(generation) {
            if !lease.existing {
                // Never acknowledged: take it back (it cools down like any release).
                let mut g = self.lock();
                if g.engine.datastore().pod(&key) == Some(lease.addr) {
                    g.engine.handle(now, Event::PodDel(key.clone()));
                    g.meta.remove(&key);
                    self.publish(&mut g, now);
                }
            }
            return Err((ErrorKind::Internal, format!("checkpoint not written, assignment not made: {e}")));
        }
        Ok(Reply::Lease(Box::new(lease)))
    }

    /// The key that holds `a`'s address: its own, or the `host:<veth>` key it was recovered
    /// under; and its host veth.
    fn resolve(&self, inner: &Inner, a: &Attach) -> (PodKey, String) {
        let key = Self::key(a);
        // The pod identity recorded at ADD names the veth, whatever this request carries.
        let meta = inner.meta.get(&key).cloned().or_else(|| match (&a.pod_namespace, &a.pod_name) {
            (Some(ns), Some(n)) => Some((ns.clone(), n.clone())),
            _ => None,
        });
        let veth = self.veth_of(&key, meta.as_ref());
        let recovered =
            PodKey { network: String::new(), container_id: format!("{RECOVERED}{veth}"), ifname: String::new() };
        let ds = inner.engine.datastore();
        if ds.pod(&key).is_none() && ds.pod(&recovered).is_some() { (recovered, veth) } else { (key, veth) }
    }

    fn teardown_plan(&self, a: &Attach) -> Reply {
        let g = self.lock();
        let (key, veth) = self.resolve(&g, a);
        let recovered = key.container_id.starts_with(RECOVERED);
        let pod = g.meta.get(&key).cloned();
        Reply::Teardown { addr: g.engine.datastore().pod(&key), veth, recovered, pod }
    }

    fn del(&self, a: &Attach, now: Time) -> Result<Reply, (ErrorKind, String)> {
        let (addr, generation) = {
            let mut g = self.lock();
            let (key, _) = self.resolve(&g, a);
            let held = g.engine.datastore().pod(&key);
            if let Some(only) = a.release_only
                && held != Some(only)
            {
                // The plugin tore down `only` (the unspecified address: nothing); what the
                // attachment holds now, if anything (an ADD that came after that teardown), is
                // wired or being wired, and stays. Holding nothing, it is no pod waiting for an
                // address either (a sandbox given up after a refused ADD).
                if held.is_none() {
                    g.engine.handle(now, Event::PodDel(key));
                }
                return Ok(Reply::Released { addr: None, veth_prefix: Some(self.cfg.veth_prefix.clone()) });
            }
            // The address is still this attachment's, and stays so under the lock: its rules
            // are its own, whatever the host routes.
            if let Some(only) = a.release_only.filter(|_| a.scrub_rules && self.cfg.program_node) {
                datapath::host::remove_pod_rules(self.cfg.node_netns.as_deref(), only)
                    .map_err(|e| (ErrorKind::Internal, format!("removing the rules of {only}: {e}")))?;
            }
            let effects = g.engine.handle(now, Event::PodDel(key.clone()));
            g.meta.remove(&key);
            g.unwired.remove(&key);
            let addr = effects.into_iter().find_map(|e| match e {
                Effect::PodReleased { addr, .. } => addr,
                _ => None,
            });
            (addr, self.publish(&mut g, now))
        };
        self.commit.wait(generation).map_err(|e| (ErrorKind::Internal, format!("checkpoint not written: {e}")))?;
        Ok(Reply::Released { addr, veth_prefix: Some(self.cfg.veth_prefix.clone()) })
    }

    /// The pool as JSON; pod identities only when `identities` (the owner-only socket).
    fn state(&self, identities: bool, now: Time) -> serde_json::Value {
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
        let mut pods: Vec<serde_json::Value> = ds
            .pods()
            .map(|(k, a)| {
                if identities {
                    let (namespace, name) = g.meta.get(k).cloned().unzip();
                    serde_json::json!({"network": k.network, "container_id": k.container_id, "ifname": k.ifname, "ip": a,
                                       "namespace": namespace, "name": name})
                } else {
                    serde_json::json!({"ip": a})
                }
            })
            .collect();
        pods.sort_by_key(|p| p["ip"].to_string());
        let s = g.engine.stats(now);
        serde_json::json!({
            "instance": self.owner.instance, "enis": enis, "pods": pods,
            "total": s.total, "assigned": s.assigned, "cooling": s.cooling, "in_flight": g.engine.in_flight(),
            "unwired": g.unwired.len(),
            "max_pods": g.engine.config().limits.max_pods,
            "pod_eni": g.engine.config().pod_eni.as_ref().map(|t| serde_json::json!({"subnet": t.subnet, "security_groups": t.security_groups})),
            "kubernetes": self.kube.as_ref().map(|k| k.knows_node()),
            "coming": g.engine.coming(),
            "call_budget": g.engine.config().call_budget,
        })
    }
}

/// An ENIConfig's spec as the engine's template of new pod ENIs.
fn template(spec: &kubernetes::eniconfig::EniConfigSpec) -> ipam::config::EniTemplate {
    ipam::config::EniTemplate {
        subnet: ipam::addr::SubnetId(spec.subnet.clone()),
        security_groups: spec.security_groups.clone(),
    }
}
