//! A whole cluster as one discrete-event simulation: every node's engine against one shared
//! simulated VPC (and so one set of account token buckets), in virtual time.
//!
//! Events: node launches (and retries when `RunInstances` is throttled), pod arrivals and
//! departures (churn replaces a pod on its node; rollouts add pods for a while), cloud-call
//! completions, pool-check ticks, scale events, and samples every 5 minutes. A node whose pool is
//! steady sleeps until [`Engine::next_wakeup`] or its next event, so idle nodes cost nothing.

use cloud::exec::execute;
use cloud::sim::{ActionStats, SimVpc};
use cloud::{Action, ErrorKind};
use ipam::Time;
use ipam::addr::{InstanceId, PodKey, SubnetId};
use ipam::call::{CallError, CallOutput, OpId};
use ipam::catalog::InstanceType;
use ipam::config::{EniTemplate, NodeConfig, NodeSettings};
use ipam::engine::{Effect, Engine, Event};
use ipam::policy::POOL_CHECK_INTERVAL;
use ipam::rng::SeededRng;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::time::Duration;

/// A pod that has not got an address after this long could not start.
pub const START_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Node bootstrap: pods are scheduled this long after the instance launches.
pub const NODE_READY: Duration = Duration::from_secs(60);
/// Sampling interval of the time series.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(300);

/// One node group as the simulation runs it.
#[derive(Clone, Debug)]
pub struct GroupRun {
    /// Instance type.
    pub instance_type: &'static InstanceType,
    /// Subnets for nodes, per AZ (round-robin across AZs, then subnets).
    pub node_subnets: Vec<(String, SubnetId)>,
    /// Nodes at the start.
    pub nodes: u32,
    /// Scale events.
    pub scale: Vec<(Time, u32)>,
}

/// Everything one simulated run needs.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// Node groups.
    pub groups: Vec<GroupRun>,
    /// Node settings (custom networking's template is per AZ, in `pod_subnets`).
    pub settings: NodeSettings,
    /// Custom networking: the pod subnet per AZ.
    pub pod_subnets: Option<BTreeMap<String, SubnetId>>,
    /// Workload pods per node.
    pub pods_per_node: u32,
    /// DaemonSet pods per node (need an address).
    pub daemonset_pods: u32,
    /// Host-network pods per node (no address, but kubelet's max pods counts them).
    pub host_network_pods: u32,
    /// Share of workload pods replaced per hour.
    pub churn_per_hour: f64,
    /// Bursts: (start, pods, duration).
    pub rollouts: Vec<(Time, u32, Duration)>,
    /// Simulated time.
    pub horizon: Duration,
    /// Subnets whose addresses are routable.
    pub routable: Vec<SubnetId>,
    /// Seed.
    pub seed: u64,
}

/// A point of the time series.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Sample {
    /// Hours since the start.
    pub hour: f64,
    /// Routable addresses the cluster holds (ENI addresses and prefixes in routable subnets).
    pub routable: u64,
    /// Non-routable addresses the cluster holds.
    pub nonroutable: u64,
    /// Addresses in warm pools not held by pods.
    pub idle: u64,
    /// Pods running.
    pub pods: u64,
    /// Nodes running.
    pub nodes: u64,
    /// Network Address Usage units (addresses + prefixes on the cluster's ENIs).
    pub nau: u64,
}

/// What a run measured.
#[derive(Clone, Debug, Default)]
pub struct ClusterOutcome {
    /// Samples every 5 minutes.
    pub samples: Vec<Sample>,
    /// Pods that got an address.
    pub started: u64,
    /// Pods that never got an address: 15 minutes without one, or gone (their rollout over)
    /// while still waiting.
    pub failed: u64,
    /// Pods kubelet would not admit: their node was at its max pods (host-network pods
    /// included).
    pub unschedulable: u64,
    /// Pods still waiting for an address (for less than 15 minutes) when the run ended.
    pub waiting_at_end: u64,
    /// Pods the workload asked for: every pod of every node that launched or failed to, every
    /// replacement and every rollout pod.
    pub asked: u64,
    /// Pods that had to wait, and how long (seconds).
    pub waits: Vec<f64>,
    /// Nodes that could not launch (no address for the node).
    pub nodes_failed: u64,
    /// EC2 calls per action.
    pub calls: BTreeMap<Action, ActionStats>,
    /// Max pods per instance type.
    pub max_pods: BTreeMap<String, u32>,
    /// Nodes at the end.
    pub nodes_end: u64,
    /// Routable addresses held per node at the end (average).
    pub routable_per_node: f64,
    /// Settings problems (a variant that cannot run), and call results that did not fit a
    /// node's datastore (each also reconciled by that node).
    pub errors: Vec<String>,
    /// Call results that did not fit a node's datastore.
    pub inconsistent: u64,
    /// Reconciles that corrected a node's datastore.
    pub reconcile_changes: u64,
}

/// A finished call waiting for its completion time: (node, op, result).
type CallResult = (u32, OpId, Result<CallOutput, CallError>);

#[derive(Debug)]
struct SimNode {
    engine: Engine,
    instance: InstanceId,
    alive: bool,
    pending: VecDeque<u32>,
    pods: u32,
    max_pods: u32,
    tick_gen: u64,
    tick_at: Option<Time>,
    phase: u64,
    /// When a refused pod last made the node tick off its grid (at most once a second).
    miss_tick: Option<Time>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PodKind {
    Workload,
    Daemon,
    Burst,
}

#[derive(Debug)]
struct SimPod {
    node: u32,
    arrived: Time,
    running: bool,
    gone: bool,
    kind: PodKind,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Tick(u32, u64),
    Done(u32, u32),
    Arrive(u32),
    Depart(u32),
    LaunchNext,
    Scale(u32, u32),
    Rollout(u32),
    Sample,
}

/// The simulation.
pub struct Cluster<'a> {
    spec: &'a ClusterSpec,
    vpc: SimVpc,
    rng: SeededRng,
    now: Time,
    seq: u64,
    queue: BinaryHeap<Reverse<(Time, u64, Ev)>>,
    nodes: Vec<SimNode>,
    node_group: Vec<u32>,
    pods: Vec<SimPod>,
    results: Vec<Option<CallResult>>,
    free_results: Vec<u32>,
    launched: Vec<u32>,
    launch_queue: VecDeque<u32>,
    launching: bool,
    baseline: BTreeMap<SubnetId, u32>,
    out: ClusterOutcome,
    effects: Vec<Effect>,
}

impl<'a> Cluster<'a> {
    /// A run of `spec` on `vpc` (already holding the subnets, existing usage and reservations).
    pub fn new(spec: &'a ClusterSpec, vpc: SimVpc) -> Cluster<'a> {
        let baseline = vpc.subnets().iter().map(|s| (s.id.clone(), s.used_count())).collect();
        Cluster {
            spec,
            vpc,
            rng: SeededRng::new(spec.seed ^ 0x5EED),
            now: Time::ZERO,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes: Vec::new(),
            node_group: Vec::new(),
            pods: Vec::new(),
            results: Vec::new(),
            free_results: Vec::new(),
            launched: vec![0; spec.groups.len()],
            launch_queue: VecDeque::new(),
            launching: false,
            baseline,
            out: ClusterOutcome::default(),
            effects: Vec::new(),
        }
    }

    fn push(&mut self, at: Time, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, ev)));
    }

    /// Runs to the horizon, calling `progress` with the share done now and then.
    pub fn run(mut self, progress: &mut dyn FnMut(f64)) -> (ClusterOutcome, SimVpc) {
        for (g, group) in self.spec.groups.iter().enumerate() {
            for _ in 0..group.nodes {
                self.launch_queue.push_back(g as u32);
            }
            for (at, n) in &group.scale {
                self.push(*at, Ev::Scale(g as u32, *n));
            }
        }
        for (i, (at, _, _)) in self.spec.rollouts.iter().enumerate() {
            self.push(*at, Ev::Rollout(i as u32));
        }
        self.kick_launches();
        self.push(Time::ZERO, Ev::Sample);
        let end = Time::ZERO + self.spec.horizon;
        let mut last_report = Time::ZERO;
        while let Some(Reverse((at, _, ev))) = self.queue.pop() {
            if at > end {
                break;
            }
            self.now = at;
            self.handle(ev);
            if at.since(last_report) >= Duration::from_secs(600) {
                last_report = at;
                progress(at.as_millis() as f64 / end.as_millis().max(1) as f64);
            }
        }
        self.now = end;
        self.sample();
        self.finish();
        progress(1.0);
        (self.out, self.vpc)
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::LaunchNext => {
                self.launching = false;
                if let Some(g) = self.launch_queue.pop_front().filter(|g| !self.launch(*g)) {
                    self.launch_queue.push_front(g);
                }
                self.kick_launches();
            }
            Ev::Tick(n, generation) => {
                let node = &self.nodes[n as usize];
                if node.alive && node.tick_gen == generation {
                    self.nodes[n as usize].tick_at = None;
                    let effects = self.engine_event(n, Event::Tick);
                    self.after(n, effects);
                }
            }
            Ev::Done(n, idx) => {
                if let Some((node, op, result)) = self.results[idx as usize].take() {
                    self.free_results.push(idx);
                    debug_assert_eq!(node, n);
                    if self.nodes[n as usize].alive {
                        let effects = self.engine_event(n, Event::CallDone { op, result });
                        self.after(n, effects);
                    }
                }
            }
            Ev::Arrive(p) => self.arrive(p),
            Ev::Depart(p) => self.depart(p, true),
            Ev::Scale(g, n) => self.scale(g, n),
            Ev::Rollout(i) => self.rollout(i),
            Ev::Sample => {
                self.sample();
                self.push(self.now + SAMPLE_EVERY, Ev::Sample);
            }
        }
    }

    fn engine_event(&mut self, n: u32, ev: Event) -> Vec<Effect> {
        let mut effects = std::mem::take(&mut self.effects);
        effects.clear();
        self.nodes[n as usize].engine.handle_into(self.now, ev, &mut effects);
        effects
    }

    /// Carries out effects, retries waiting pods, and schedules the node's next tick.
    fn after(&mut self, n: u32, mut effects: Vec<Effect>) {
        for e in effects.drain(..) {
            if let Effect::Inconsistent { op, error } = &e {
                self.out.inconsistent += 1;
                if self.out.errors.len() < 10 {
                    self.out.errors.push(format!("node {n}: {op} did not fit its datastore: {error}"));
                }
            }
            if let Effect::Reconciled(_) = &e {
                self.out.reconcile_changes += 1;
            }
            if let Effect::Call { op, call } = e {
                self.vpc.set_now(self.now);
                let owner = cloud::exec::Owner::new(self.nodes[n as usize].instance.clone());
                let result = execute(&mut self.vpc, &owner, self.now.as_millis() / 1000, &call);
                let done = self.now + self.vpc.take_elapsed();
                let entry = Some((n, op, result));
                let idx = match self.free_results.pop() {
                    Some(i) => {
                        self.results[i as usize] = entry;
                        i
                    }
                    None => {
                        self.results.push(entry);
                        self.results.len() as u32 - 1
                    }
                };
                self.push(done, Ev::Done(n, idx));
            }
        }
        self.effects = effects;
        self.retry_pending(n);
        self.reschedule(n);
    }

    /// A pod was refused: an engine that refills at once on a miss ticks now, off its grid (at
    /// most once a second, and only with no call in flight).
    fn tick_on_miss(&mut self, n: u32) {
        let now = self.now;
        let node = &mut self.nodes[n as usize];
        if !node.engine.ticks_on_miss()
            || node.engine.in_flight() > 0
            || node.miss_tick.is_some_and(|t| now.since(t) < Duration::from_secs(1))
            || node.tick_at == Some(now)
        {
            return;
        }
        node.miss_tick = Some(now);
        node.tick_gen += 1;
        node.tick_at = Some(now);
        let generation = node.tick_gen;
        self.push(now, Ev::Tick(n, generation));
    }

    fn reschedule(&mut self, n: u32) {
        let now = self.now;
        let node = &self.nodes[n as usize];
        let busy = node.engine.in_flight() > 0 || !node.pending.is_empty() || !node.engine.steady(now);
        let want = if busy { Some(now + POOL_CHECK_INTERVAL) } else { node.engine.next_wakeup(now) };
        let Some(want) = want else { return };
        // Ticks stay on the node's own 5 s grid.
        let step = POOL_CHECK_INTERVAL.as_millis() as u64;
        let phase = node.phase;
        let t = want.as_millis().max(now.as_millis() + 1);
        let k = (t.saturating_sub(phase)).div_ceil(step);
        let at = Time::from_millis(phase + k * step);
        if node.tick_at.is_some_and(|cur| cur <= at) {
            return;
        }
        let node = &mut self.nodes[n as usize];
        node.tick_gen += 1;
        node.tick_at = Some(at);
        let generation = node.tick_gen;
        self.push(at, Ev::Tick(n, generation));
    }

    /// The auto scaling group launches one instance at a time, as fast as `RunInstances`'s
    /// bucket allows.
    fn kick_launches(&mut self) {
        if !self.launching && !self.launch_queue.is_empty() {
            self.launching = true;
            self.push(self.now, Ev::LaunchNext);
        }
    }

    /// Launches one node of group `g`; false when throttled (try again later).
    fn launch(&mut self, g: u32) -> bool {
        let group = &self.spec.groups[g as usize];
        let i = self.launched[g as usize] as usize;
        let (az, subnet) = group.node_subnets[i % group.node_subnets.len()].clone();
        let mut settings = self.spec.settings.clone();
        if let Some(s) = self.spec.pod_subnets.as_ref().and_then(|p| p.get(&az)) {
            settings.custom_networking = Some(EniTemplate { subnet: s.clone(), security_groups: vec![] });
        }
        let cfg = match NodeConfig::resolve(group.instance_type, subnet.clone(), &settings) {
            Ok(c) => NodeConfig { az: Some(az.clone()), ..c },
            Err(e) => {
                // Settings aws-node would refuse: the node never comes up.
                if !self.out.errors.contains(&e.to_string()) {
                    self.out.errors.push(e.to_string());
                }
                self.launched[g as usize] += 1;
                self.node_failed();
                return true;
            }
        };
        self.vpc.set_now(self.now);
        let (instance, primary) = match self.vpc.run_instance(group.instance_type, &subnet) {
            Ok(r) => r,
            Err(e) if e.kind == ErrorKind::Throttled => {
                let _ = self.vpc.take_elapsed();
                // Wait for the bucket (2 tokens/s) before the next attempt.
                self.launching = true;
                self.push(self.now + Duration::from_millis(500), Ev::LaunchNext);
                return false;
            }
            Err(_) => {
                let _ = self.vpc.take_elapsed();
                self.node_failed();
                self.launched[g as usize] += 1;
                return true;
            }
        };
        let up = self.now + self.vpc.take_elapsed();
        self.launched[g as usize] += 1;
        let max_pods = cfg.limits.max_pods;
        self.out.max_pods.insert(group.instance_type.name.clone(), max_pods);
        // kubelet admits max pods in all, host-network ones (aws-node, kube-proxy) included.
        let max_pods = max_pods.saturating_sub(self.spec.host_network_pods);
        let info = primary.into_info(0);
        let seed = self.spec.seed.wrapping_add(self.nodes.len() as u64);
        let Ok(engine) = Engine::new(cfg, &[info], seed, up) else {
            self.node_failed();
            return true;
        };
        let n = self.nodes.len() as u32;
        self.nodes.push(SimNode {
            engine,
            instance,
            alive: true,
            pending: VecDeque::new(),
            pods: 0,
            max_pods,
            tick_gen: 0,
            tick_at: None,
            miss_tick: None,
            phase: up.as_millis() % POOL_CHECK_INTERVAL.as_millis() as u64,
        });
        self.node_group.push(g);
        let ready = up + NODE_READY;
        for _ in 0..self.spec.daemonset_pods {
            self.new_pod(n, PodKind::Daemon, ready);
        }
        for _ in 0..self.spec.pods_per_node {
            self.new_pod(n, PodKind::Workload, ready);
        }
        let now = self.now;
        self.now = up;
        self.reschedule(n);
        self.now = now;
        true
    }

    /// A node that could not launch: its pods were asked for and never placed.
    fn node_failed(&mut self) {
        self.out.nodes_failed += 1;
        self.out.asked += u64::from(self.spec.pods_per_node + self.spec.daemonset_pods);
    }

    fn new_pod(&mut self, node: u32, kind: PodKind, at: Time) -> u32 {
        self.out.asked += 1;
        let id = self.pods.len() as u32;
        self.pods.push(SimPod { node, arrived: at, running: false, gone: false, kind });
        self.push(at, Ev::Arrive(id));
        id
    }

    fn key(p: u32) -> PodKey {
        PodKey::new(format!("pod-{p}"))
    }

    fn arrive(&mut self, p: u32) {
        let n = self.pods[p as usize].node;
        let node = &mut self.nodes[n as usize];
        if !node.alive || self.pods[p as usize].gone {
            return;
        }
        if node.pods >= node.max_pods {
            self.out.unschedulable += 1;
            self.pods[p as usize].gone = true;
            return;
        }
        node.pods += 1;
        self.pods[p as usize].arrived = self.now;
        node.pending.push_back(p);
        self.retry_pending(n);
        self.reschedule(n);
    }

    fn retry_pending(&mut self, n: u32) {
        while let Some(&p) = self.nodes[n as usize].pending.front() {
            if self.pods[p as usize].gone {
                self.nodes[n as usize].pending.pop_front();
                continue;
            }
            let effects = self.engine_event(n, Event::PodAdd(Self::key(p)));
            let ok = effects.iter().any(|e| matches!(e, Effect::PodAssigned { .. }));
            self.effects = effects;
            let waited = self.now.since(self.pods[p as usize].arrived);
            if ok {
                self.nodes[n as usize].pending.pop_front();
                self.out.started += 1;
                if !waited.is_zero() {
                    self.out.waits.push(waited.as_secs_f64());
                }
                let pod = &mut self.pods[p as usize];
                pod.running = true;
                if pod.kind == PodKind::Workload && self.spec.churn_per_hour > 0.0 {
                    let mean = 3600.0 / self.spec.churn_per_hour;
                    let life = -mean * (1.0 - self.rng.unit()).ln();
                    self.push(self.now + Duration::from_secs_f64(life.min(1e9)), Ev::Depart(p));
                }
            } else if waited >= START_TIMEOUT {
                self.nodes[n as usize].pending.pop_front();
                self.nodes[n as usize].pods -= 1;
                self.pods[p as usize].gone = true;
                self.out.failed += 1;
            } else {
                if self.nodes[n as usize].engine.ticks_on_miss() {
                    // Each waiting pod's sandbox asks again on its own (kubelet retries each), so
                    // the engine sees every pod waiting, not only the first.
                    let behind: Vec<u32> = self.nodes[n as usize]
                        .pending
                        .iter()
                        .skip(1)
                        .copied()
                        .filter(|q| !self.pods[*q as usize].gone)
                        .collect();
                    for q in behind {
                        let effects = self.engine_event(n, Event::PodAdd(Self::key(q)));
                        debug_assert!(!effects.iter().any(|e| matches!(e, Effect::PodAssigned { .. })));
                        self.effects = effects;
                    }
                    self.tick_on_miss(n);
                }
                break;
            }
        }
    }

    fn depart(&mut self, p: u32, replace: bool) {
        let pod = &mut self.pods[p as usize];
        if pod.gone {
            return;
        }
        pod.gone = true;
        let (n, was_running, kind) = (pod.node, pod.running, pod.kind);
        if !self.nodes[n as usize].alive {
            return;
        }
        self.nodes[n as usize].pods -= 1;
        if !was_running {
            // It waited for an address until its rollout or its life was over: it never got one.
            self.out.failed += 1;
        }
        if was_running {
            let effects = self.engine_event(n, Event::PodDel(Self::key(p)));
            self.effects = effects;
        }
        if replace && kind == PodKind::Workload {
            self.new_pod(n, PodKind::Workload, self.now);
        }
        self.reschedule(n);
    }

    fn alive_in_group(&self, g: u32) -> Vec<u32> {
        (0..self.nodes.len() as u32)
            .filter(|n| self.nodes[*n as usize].alive && self.node_group[*n as usize] == g)
            .collect()
    }

    fn scale(&mut self, g: u32, target: u32) {
        let alive = self.alive_in_group(g);
        let have = alive.len() as u32;
        if target > have {
            for _ in have..target {
                self.launch_queue.push_back(g);
            }
            self.kick_launches();
            return;
        }
        for &n in alive.iter().rev().take((have - target) as usize) {
            self.nodes[n as usize].alive = false;
            for p in 0..self.pods.len() as u32 {
                if self.pods[p as usize].node == n {
                    self.pods[p as usize].gone = true;
                }
            }
            self.vpc.set_now(self.now);
            let instance = self.nodes[n as usize].instance.clone();
            let _ = self.vpc.terminate_instance(&instance);
            let _ = self.vpc.take_elapsed();
        }
    }

    fn rollout(&mut self, i: u32) {
        let (_, pods, dur) = self.spec.rollouts[i as usize];
        let alive: Vec<u32> = (0..self.nodes.len() as u32).filter(|n| self.nodes[*n as usize].alive).collect();
        if alive.is_empty() {
            return;
        }
        for k in 0..pods {
            let n = alive[k as usize % alive.len()];
            let p = self.new_pod(n, PodKind::Burst, self.now);
            self.push(self.now + dur, Ev::Depart(p));
        }
    }

    fn sample(&mut self) {
        let mut s = Sample { hour: self.now.as_millis() as f64 / 3_600_000.0, ..Sample::default() };
        for sub in self.vpc.subnets() {
            let used = u64::from(sub.used_count().saturating_sub(self.baseline.get(&sub.id).copied().unwrap_or(0)));
            if self.spec.routable.contains(&sub.id) {
                s.routable += used;
            } else {
                s.nonroutable += used;
            }
        }
        for node in self.nodes.iter().filter(|n| n.alive) {
            let st = node.engine.stats(self.now);
            if node.engine.config().mode != ipam::datastore::CidrMode::Ipv6 {
                s.idle += st.total.saturating_sub(st.assigned);
            }
            s.pods += st.assigned;
            s.nodes += 1;
            for e in node.engine.datastore().enis() {
                s.nau += 1 + u64::from(e.block_count()) + u64::from(e.v6_prefix.is_some());
            }
        }
        self.out.samples.push(s);
    }

    fn finish(&mut self) {
        for n in 0..self.nodes.len() {
            let pending: Vec<u32> = self.nodes[n].pending.drain(..).collect();
            for p in pending {
                if self.pods[p as usize].gone {
                    continue;
                }
                if self.now.since(self.pods[p as usize].arrived) >= START_TIMEOUT {
                    self.out.failed += 1;
                } else {
                    self.out.waiting_at_end += 1;
                }
                self.pods[p as usize].gone = true;
            }
        }
        // Pods of nodes not yet ready when the run ended wait too.
        self.out.waiting_at_end +=
            self.pods.iter().filter(|p| !p.gone && !p.running && self.nodes[p.node as usize].alive).count() as u64;
        self.out.calls = self.vpc.action_stats().clone();
        let last = self.out.samples.last().copied().unwrap_or_default();
        self.out.nodes_end = last.nodes;
        self.out.routable_per_node = if last.nodes == 0 { 0.0 } else { last.routable as f64 / last.nodes as f64 };
    }
}
