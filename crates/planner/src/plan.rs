//! `podip plan`: every strategy's variants simulated on the user's cluster, measured side by
//! side, and the least disruptive one that meets the headroom asked for.

use crate::cluster::{Cluster, ClusterOutcome, Sample};
use crate::frag::block_map;
use crate::scenario::Scenario;
use crate::search::{SearchResult, smallest_qualifying};
use crate::strategy::{Disruption, NatPlan, Strategy, Variant, variants, warm_pool_variant};
use ipam::addr::SubnetId;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Version of the JSON schema (`docs/plan-json.md`).
pub const SCHEMA: &str = "podip.plan/1";

/// One subnet's /28 map at the end of a run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SubnetMap {
    /// Subnet name.
    pub name: String,
    /// Its EC2 id, when known (`subnet-...`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Block.
    pub cidr: String,
    /// Glyph rows, 16 blocks each (see `podip frag`).
    pub rows: Vec<String>,
    /// Free aligned /28 blocks.
    pub free_prefixes: u32,
    /// Free addresses.
    pub free_ips: u32,
}

/// One variant's measurements.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VariantReport {
    /// Id.
    pub id: String,
    /// Strategy.
    pub strategy: Strategy,
    /// What changes.
    pub title: String,
    /// How disruptive.
    pub disruption: Disruption,
    /// In words.
    pub disruption_text: String,
    /// Routable IPv4 addresses held at peak.
    pub routable_peak: u64,
    /// Share of the routable subnets' usable space.
    pub routable_share: f64,
    /// Non-routable addresses held at peak.
    pub nonroutable_peak: u64,
    /// Addresses held idle by warm pools, at peak.
    pub idle_peak: u64,
    /// ... and on average.
    pub idle_avg: f64,
    /// More nodes (with their pods) that fit before the cluster's subnets run out.
    pub headroom_nodes: u64,
    /// ... in pods.
    pub headroom_pods: u64,
    /// Whether the headroom asked for is met.
    pub meets_headroom: bool,
    /// What keeps it from being recommended, each with its numbers (empty: it qualifies).
    pub shortfalls: Vec<String>,
    /// Pods the workload asked for (those of nodes that failed to launch included).
    pub pods_asked: u64,
    /// Pods that got an address.
    pub pods_started: u64,
    /// Pods that never got an address (15 minutes without one, or gone while still waiting).
    pub pods_failed: u64,
    /// Pods kubelet would not admit: their node was at its max pods.
    pub pods_unschedulable: u64,
    /// Pods that waited for an address.
    pub pods_waited: u64,
    /// Median wait of those, seconds.
    pub wait_p50_s: f64,
    /// 99th percentile wait, seconds.
    pub wait_p99_s: f64,
    /// Nodes that could not launch.
    pub nodes_failed: u64,
    /// EC2 calls per action.
    pub ec2_calls: BTreeMap<String, u64>,
    /// Throttled calls per action.
    pub ec2_throttled: BTreeMap<String, u64>,
    /// The share of its EC2 calls that were throttled.
    pub throttled_share: f64,
    /// Kubelet max pods per instance type.
    pub max_pods: BTreeMap<String, u32>,
    /// Network Address Usage units at peak.
    pub nau_peak: u64,
    /// Monthly cost added, USD.
    pub monthly_cost_usd: f64,
    /// NAT gateways, for the private NAT strategy.
    pub nat: Option<NatPlan>,
    /// Caveats.
    pub caveats: Vec<String>,
    /// Quotas or limits the variant as planned runs into.
    pub limits: Vec<String>,
    /// Pods still waiting for an address when the run ended.
    pub pods_waiting_at_end: u64,
    /// Time series every 5 minutes.
    pub series: Vec<Sample>,
    /// The cluster's subnets at the end.
    pub subnet_maps: Vec<SubnetMap>,
    /// For a searched variant: the `WARM_IP_TARGET` values tried, each with its shortfalls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search: Option<SearchResult>,
    /// What to apply (file name -> contents).
    #[serde(skip)]
    pub config: BTreeMap<String, String>,
}

/// The recommendation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Recommendation {
    /// The variant id.
    pub variant: String,
    /// Why.
    pub reason: String,
}

/// The whole plan (the `podip plan --json` schema).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlanReport {
    /// `podip.plan/1`.
    pub schema: &'static str,
    /// Scenario name.
    pub scenario: String,
    /// Seed.
    pub seed: u64,
    /// Simulated hours.
    pub horizon_hours: f64,
    /// Most nodes the node groups may have (the sum of their `max`).
    pub peak_nodes: u32,
    /// Usable addresses in the scenario's (routable) subnets.
    pub routable_space: u64,
    /// Headroom asked for, in nodes.
    pub headroom_target_nodes: u32,
    /// What the import from AWS exports recognised (the cluster's own ENIs left out).
    pub import_notes: Vec<String>,
    /// Every variant.
    pub variants: Vec<VariantReport>,
    /// The pick.
    pub recommendation: Recommendation,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    (sorted[i.min(sorted.len() - 1)] * 10.0).round() / 10.0
}

fn measure(
    sc: &Scenario,
    v: &Variant,
    out: ClusterOutcome,
    vpc: &cloud::sim::SimVpc,
    baseline: &BTreeMap<SubnetId, u32>,
    routable_space: u64,
) -> VariantReport {
    let peak = |f: fn(&Sample) -> u64| out.samples.iter().map(f).max().unwrap_or(0);
    let nat_addresses = v.nat.as_ref().map_or(0, |n| u64::from(n.gateways * n.addresses_per_gateway));
    let routable_peak = peak(|s| s.routable) + nat_addresses;
    let idle_avg = if out.samples.is_empty() {
        0.0
    } else {
        out.samples.iter().map(|s| s.idle as f64).sum::<f64>() / out.samples.len() as f64
    };
    let mut waits = out.waits.clone();
    waits.sort_by(f64::total_cmp);
    // Headroom: per kind of subnet (routable, non-routable), the free space at the cluster's
    // busiest moment over what a node takes then. The subnets are read at the end of the run:
    // what the cluster held beyond that at its peak was not free then.
    let nodes = out.nodes_end.max(1) as f64;
    let mut headroom = u64::MAX;
    for routable in [true, false] {
        let subs: Vec<&SubnetId> =
            v.cluster_subnets.iter().filter(|s| v.spec.routable.contains(s) == routable).collect();
        let (mut used, mut free, mut free_blocks) = (0f64, 0f64, 0f64);
        for id in &subs {
            if let Some(s) = vpc.subnet(id) {
                used += f64::from(s.used_count().saturating_sub(baseline.get(*id).copied().unwrap_or(0)));
                free += f64::from(s.free_ips());
                free_blocks += f64::from(s.free_prefixes());
            }
        }
        if used <= 0.0 {
            continue;
        }
        let held = |s: &Sample| if routable { s.routable } else { s.nonroutable };
        let end_held = out.samples.last().map_or(0, held) as f64;
        let peak = out.samples.iter().max_by_key(|s| held(s));
        let beyond_end = peak.map_or(0.0, |p| (held(p) as f64 - end_held).max(0.0));
        let free_at_peak = (free - beyond_end).max(0.0);
        let blocks_at_peak = (free_blocks - (beyond_end / 16.0).ceil()).max(0.0);
        let per_node = match peak {
            Some(p) if p.nodes > 0 && held(p) > 0 => held(p) as f64 / p.nodes as f64,
            _ => used / nodes,
        }
        .max(used / nodes);
        let mut h = (free_at_peak / per_node).floor();
        if v.spec.settings.prefix_delegation && !v.spec.settings.ipv6 && !v.spec.settings.prefix_fallback {
            // Prefixes need whole free /28s: the addresses beyond a node's primary come in 16s
            // (podip's fallback takes single addresses where no /28 is free).
            let blocks_per_node = ((per_node - 1.0).max(0.0) / 16.0).max(0.0);
            if blocks_per_node > 0.0 {
                h = h.min((blocks_at_peak / blocks_per_node).floor());
            }
        }
        headroom = headroom.min(h as u64);
    }
    if headroom == u64::MAX || out.failed > 0 || out.nodes_failed > 0 {
        // Pods or nodes already go without addresses: there is no room left.
        headroom = 0;
    }
    let per_node_pods = u64::from(sc.workload.pods_per_node + sc.workload.daemonset_pods);
    let mut ec2_calls = BTreeMap::new();
    let mut ec2_throttled = BTreeMap::new();
    // Node provisioning (RunInstances, TerminateInstances) is the same in every variant.
    let pool_action = |a: &cloud::Action| !matches!(a, cloud::Action::RunInstances | cloud::Action::TerminateInstances);
    for (a, st) in out.calls.iter().filter(|(a, _)| pool_action(a)) {
        ec2_calls.insert(a.name().to_string(), st.calls);
        if st.throttled > 0 {
            ec2_throttled.insert(a.name().to_string(), st.throttled);
        }
    }
    let subnet_maps = v
        .cluster_subnets
        .iter()
        .filter_map(|id| vpc.subnet(id))
        .take(6)
        .map(|s| {
            let blocks = block_map(s);
            let known = sc.subnets.iter().find(|x| x.cidr == s.cidr);
            SubnetMap {
                name: known.map_or_else(|| s.cidr.to_string(), |x| x.name.clone()),
                id: known.and_then(|x| x.id.clone()),
                cidr: s.cidr.to_string(),
                rows: blocks.chunks(64).map(|r| r.iter().map(|b| b.state.glyph()).collect()).collect(),
                free_prefixes: s.free_prefixes(),
                free_ips: s.free_ips(),
            }
        })
        .collect();
    let mut caveats = v.caveats.clone();
    caveats.extend(out.errors.iter().take(3).cloned());
    VariantReport {
        id: v.id.clone(),
        strategy: v.strategy,
        title: v.title.clone(),
        disruption: v.disruption,
        disruption_text: v.disruption.describe().into(),
        routable_peak,
        routable_share: if routable_space == 0 {
            0.0
        } else {
            (routable_peak as f64 / routable_space as f64 * 10000.0).round() / 10000.0
        },
        nonroutable_peak: peak(|s| s.nonroutable),
        idle_peak: peak(|s| s.idle),
        idle_avg: (idle_avg * 10.0).round() / 10.0,
        headroom_nodes: headroom,
        headroom_pods: headroom * per_node_pods,
        meets_headroom: headroom >= u64::from(sc.headroom_nodes),
        shortfalls: Vec::new(),
        pods_asked: out.asked,
        pods_started: out.started,
        pods_failed: out.failed,
        pods_unschedulable: out.unschedulable,
        pods_waited: waits.len() as u64,
        wait_p50_s: percentile(&waits, 0.5),
        wait_p99_s: percentile(&waits, 0.99),
        nodes_failed: out.nodes_failed,
        throttled_share: {
            let (c, t): (u64, u64) = (ec2_calls.values().sum(), ec2_throttled.values().sum());
            if c == 0 { 0.0 } else { (t as f64 / c as f64 * 10000.0).round() / 10000.0 }
        },
        ec2_calls,
        ec2_throttled,
        max_pods: out.max_pods.clone(),
        nau_peak: peak(|s| s.nau) + v.nat.as_ref().map_or(0, |n| u64::from(n.gateways) * 6),
        monthly_cost_usd: v.nat.as_ref().map_or(0.0, |n| n.monthly_usd),
        nat: v.nat.clone(),
        caveats,
        limits: v.limits.clone(),
        pods_waiting_at_end: out.waiting_at_end,
        series: out.samples,
        subnet_maps,
        search: None,
        config: v.config.clone(),
    }
}

/// One variant simulated and measured.
fn simulate(sc: &Scenario, v: &Variant, routable_space: u64, progress: &mut dyn FnMut(f64)) -> VariantReport {
    let baseline: BTreeMap<SubnetId, u32> = v.vpc.subnets().iter().map(|s| (s.id.clone(), s.used_count())).collect();
    let cluster = Cluster::new(&v.spec, v.vpc.clone());
    let (out, vpc) = cluster.run(progress);
    measure(sc, v, out, &vpc, &baseline, routable_space)
}

/// The most the warm-target search tries: 64, or the most addresses a node can hold.
fn warm_search_max(sc: &Scenario) -> u32 {
    let most = sc
        .node_groups
        .iter()
        .map(|g| g.instance_type.max_enis * g.instance_type.ipv4_per_eni.saturating_sub(1))
        .max()
        .unwrap_or(1);
    most.clamp(1, 64)
}

/// Probes a warm-target search takes at most (doubling, then bisecting), for the progress bar.
fn search_probes(max: u32) -> u64 {
    let doublings = u64::from(32 - max.leading_zeros());
    doublings * 2
}

/// Runs every variant of `sc` on up to `threads` threads, the warm-target search among them;
/// `progress(done, total)` is called as simulated time advances (in thousandths of each run).
pub fn run_plan(sc: &Scenario, threads: usize, progress: &(dyn Fn(u64, u64) + Sync)) -> PlanReport {
    let vs = variants(sc);
    let routable_space: u64 = sc.subnets.iter().map(|s| (1u64 << (32 - u32::from(s.cidr.prefix_len()))) - 5).sum();
    let max_warm = warm_search_max(sc);
    // Job 0 is the search (it runs longest, so it starts first); job i + 1 is variant i.
    let weights: Vec<u64> = std::iter::once(search_probes(max_warm)).chain(vs.iter().map(|_| 1)).collect();
    let total: u64 = weights.iter().sum::<u64>() * 1000;
    let done: Vec<AtomicUsize> = weights.iter().map(|_| AtomicUsize::new(0)).collect();
    let report_progress = |job: usize, thousandths: usize| {
        done[job].store(thousandths, Ordering::Relaxed);
        progress(done.iter().map(|d| d.load(Ordering::Relaxed) as u64).sum::<u64>().min(total), total);
    };
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<VariantReport>>> = Mutex::new(vs.iter().map(|_| None).collect());
    let searched: Mutex<Option<(VariantReport, SearchResult)>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                loop {
                    let job = next.fetch_add(1, Ordering::SeqCst);
                    if job == 0 {
                        let mut probes = 0usize;
                        let found = smallest_qualifying(max_warm, |w| {
                            let v = warm_pool_variant(sc, w);
                            let mut p = |f: f64| report_progress(0, probes * 1000 + (f * 1000.0) as usize);
                            let mut r = simulate(sc, &v, routable_space, &mut p);
                            // The same max pods as today's: no pod is unschedulable for the change.
                            r.shortfalls = shortfalls(sc, &r, r.pods_unschedulable);
                            probes += 1;
                            r
                        });
                        report_progress(0, weights[0] as usize * 1000);
                        *searched.lock().expect("plan worker panicked") = Some(found);
                        continue;
                    }
                    let Some(v) = vs.get(job - 1) else { break };
                    let r = simulate(sc, v, routable_space, &mut |f| report_progress(job, (f * 1000.0) as usize));
                    // A poisoned lock means another worker panicked; the panic propagates anyway.
                    results.lock().expect("plan worker panicked")[job - 1] = Some(r);
                }
            });
        }
    });
    let mut reports: Vec<VariantReport> =
        results.into_inner().expect("plan worker panicked").into_iter().flatten().collect();
    if let Some((tuned, how)) = searched.into_inner().expect("plan worker panicked") {
        let at = reports.iter().position(|r| r.id == "vpc-cni-today").map_or(0, |p| p + 1);
        let today = reports.iter().find(|r| r.id == "vpc-cni-today");
        let tuned = describe_search(sc, tuned, &how, max_warm, today);
        reports.insert(at, tuned);
    }
    let recommendation = recommend(sc, &mut reports);
    PlanReport {
        schema: SCHEMA,
        scenario: sc.name.clone(),
        seed: sc.seed,
        horizon_hours: sc.horizon_hours,
        peak_nodes: sc.peak_nodes(),
        routable_space,
        headroom_target_nodes: sc.headroom_nodes,
        import_notes: sc.import_notes.clone(),
        variants: reports,
        recommendation,
    }
}

/// The searched warm pool's caveats: what was tried and why this one, and its EC2 calls against
/// today's, from the numbers.
fn describe_search(
    sc: &Scenario,
    mut keep: VariantReport,
    how: &SearchResult,
    max: u32,
    today: Option<&VariantReport>,
) -> VariantReport {
    let need = sc.workload.pods_per_node + sc.workload.daemonset_pods;
    let tried: Vec<String> = how
        .tried
        .iter()
        .map(|(w, short)| if short.is_empty() { format!("{w} qualifies") } else { format!("{w} falls short") })
        .collect();
    keep.search = Some(how.clone());
    keep.caveats.push(if how.qualifies {
        format!(
            "searched WARM_IP_TARGET (doubling from 1 up to {max}, then bisecting) with MINIMUM_IP_TARGET={need}: {} qualifies with the fewest idle addresses (tried {})",
            how.chosen,
            tried.join(", ")
        )
    } else {
        format!(
            "searched WARM_IP_TARGET (doubling from 1 up to {max}, then bisecting) with MINIMUM_IP_TARGET={need}: none qualifies; {} comes closest (tried {})",
            how.chosen,
            tried.join(", ")
        )
    });
    if let Some(t) = today {
        let (mine, theirs): (u64, u64) = (keep.ec2_calls.values().sum(), t.ec2_calls.values().sum());
        keep.caveats.push(match mine.cmp(&theirs) {
            std::cmp::Ordering::Greater => format!(
                "{mine} EC2 calls, {} more than today's settings: a small warm pool assigns and releases as pods come and go",
                mine - theirs
            ),
            std::cmp::Ordering::Less => format!("{mine} EC2 calls, {} fewer than today's settings", theirs - mine),
            std::cmp::Ordering::Equal => format!("{mine} EC2 calls, as many as today's settings"),
        });
    }
    keep
}

/// What keeps `r` from qualifying, each with its numbers: a failed node launch, a pod that never
/// got an address, pod starts waiting too long, throttling beyond the account's share, the NAU
/// quota, the headroom asked for at the peak.
/// `today_unschedulable`: pods kubelet refuses today; more than that is the change's doing.
pub fn shortfalls(sc: &Scenario, r: &VariantReport, today_unschedulable: u64) -> Vec<String> {
    let j = &sc.judge;
    let mut out = Vec::new();
    if r.nodes_failed > 0 {
        out.push(format!("{} node launches failed", r.nodes_failed));
    }
    if r.pods_failed > 0 {
        out.push(format!("{} pods never got an address", r.pods_failed));
    }
    if r.pods_waiting_at_end > 0 {
        out.push(format!("{} pods still waiting for an address when the run ended", r.pods_waiting_at_end));
    }
    out.extend(r.limits.iter().cloned());
    if r.pods_unschedulable > today_unschedulable {
        out.push(format!(
            "{} pods unschedulable at max pods {} (today: {today_unschedulable}): more nodes needed",
            r.pods_unschedulable,
            r.max_pods.values().min().copied().unwrap_or(0)
        ));
    }
    if r.pods_started > 0 && r.wait_p99_s > j.max_wait_p99_s {
        out.push(format!("pod-start wait p99 {:.1} s (bound {:.0} s)", r.wait_p99_s, j.max_wait_p99_s));
    }
    let share = r.throttled_share;
    if share > j.max_throttled_share {
        out.push(format!(
            "{:.1}% of its EC2 calls throttled (at most {:.1}%: the account's buckets are shared)",
            share * 100.0,
            j.max_throttled_share * 100.0
        ));
    }
    if let Some(nat) = &r.nat {
        if nat.over_limit {
            out.push(format!(
                "{} connections to one destination need more than 5 NAT gateways per AZ × 8 addresses × 55,000",
                sc.traffic.connections_per_destination
            ));
        }
        for s in &nat.room_short {
            out.push(s.clone());
        }
    }
    if r.nau_peak > j.nau_quota {
        out.push(format!("Network Address Usage {} over the VPC's quota of {}", r.nau_peak, j.nau_quota));
    }
    if !r.meets_headroom {
        out.push(format!("room for {} more nodes at the peak (asked: {})", r.headroom_nodes, sc.headroom_nodes));
    }
    out
}

fn recommend(sc: &Scenario, reports: &mut [VariantReport]) -> Recommendation {
    let today = reports.iter().find(|r| r.id == "vpc-cni-today").map_or(0, |r| r.pods_unschedulable);
    for r in reports.iter_mut() {
        r.shortfalls = shortfalls(sc, r, today);
    }
    let ok = reports.iter().filter(|r| r.shortfalls.is_empty());
    if let Some(best) = ok.min_by_key(|r| (r.disruption, r.routable_peak)) {
        return Recommendation {
            variant: best.id.clone(),
            reason: format!(
                "the least disruptive change ({}) that starts every pod (wait p99 {:.1} s, bound {:.0} s), keeps throttling at {:.1}% of its EC2 calls and leaves room for {} more nodes at the peak (asked: {})",
                best.disruption.describe(),
                best.wait_p99_s,
                sc.judge.max_wait_p99_s,
                best.throttled_share * 100.0,
                best.headroom_nodes,
                sc.headroom_nodes
            ),
        };
    }
    let most = reports.iter().min_by_key(|r| (r.shortfalls.len(), r.pods_failed, std::cmp::Reverse(r.headroom_nodes)));
    Recommendation {
        variant: String::new(),
        reason: format!(
            "no variant qualifies (every one falls short, see each); closest: {}",
            most.map(|r| format!("{} ({})", r.id, r.shortfalls.join("; "))).unwrap_or_default()
        ),
    }
}
