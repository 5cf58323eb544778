//! The five IPv4-scarcity strategies as variants of one scenario: each builds its simulated VPC
//! (subnets, existing usage, reservations, extra CIDRs), its node settings, and what it would
//! take to apply.

use crate::artifacts::{
    aws_node_env, custom_networking_script, discovery_subnets_script, max_pods_files, private_nat_script,
    reservations_script,
};
use crate::cluster::{ClusterSpec, GroupRun};
use crate::frag::{FragInput, analyse};
use crate::room::{place, prefix_for, routable_secondary};
use crate::scenario::{Pattern, Scenario, secondary_cidr_refusal};
use cloud::sim::subnet::{Reservation, ReservationKind};
use cloud::sim::{SimParams, SimVpc};
use ipam::Time;
use ipam::addr::SubnetId;
use ipam::config::NodeSettings;
use ipam::datastore::Packing;
use ipam::maxpods::{MaxPodsOptions, max_pods};
use ipnet::{Ipv4Net, Ipv6Net};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

/// The five strategies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Tune the VPC CNI's warm pool.
    WarmPool,
    /// Prefix delegation, with or without subnet CIDR reservations.
    PrefixDelegation,
    /// Custom networking: pods in CG-NAT subnets, internal SNAT.
    CustomNetworking,
    /// The whole data plane non-routable behind a private NAT gateway.
    PrivateNat,
    /// IPv6 pods, one IPv4 per node.
    Ipv6,
    /// More routable room: new subnets in the VPC that pods' ENIs reach through subnet
    /// discovery.
    NewSubnets,
}

/// How disruptive a change is, least first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Disruption {
    /// Nothing changes.
    None,
    /// An aws-node setting.
    Setting,
    /// New subnets tagged for the VPC CNI's subnet discovery: nothing running changes.
    DiscoverySubnets,
    /// aws-node replaced by podipd on every node, node by node without draining (it imports
    /// aws-node's checkpoint; docs/install.md).
    NodeAgent,
    /// A setting, and nodes replaced (new max pods).
    NodeReplacement,
    /// aws-node replaced by podipd, and nodes replaced (new max pods).
    NodeAgentAndNodes,
    /// A setting, subnet CIDR reservations on the existing subnets, and nodes replaced.
    Reservations,
    /// New subnets or CIDRs, and nodes replaced.
    NewSubnets,
    /// A new cluster.
    NewCluster,
}

impl Disruption {
    /// Words for the report.
    pub fn describe(self) -> &'static str {
        match self {
            Disruption::None => "none (today's settings)",
            Disruption::Setting => "an aws-node setting",
            Disruption::DiscoverySubnets => "new subnets tagged for subnet discovery, nothing replaced",
            Disruption::NodeAgent => "aws-node replaced by podipd, node by node, without draining",
            Disruption::NodeReplacement => "an aws-node setting and node replacement",
            Disruption::NodeAgentAndNodes => "aws-node replaced by podipd, and node replacement",
            Disruption::Reservations => {
                "an aws-node setting, CIDR reservations on the existing subnets, and node replacement"
            }
            Disruption::NewSubnets => "new subnets or VPC CIDRs, and node replacement",
            Disruption::NewCluster => "a new cluster",
        }
    }

    /// A few words, for the table.
    pub fn short(self) -> &'static str {
        match self {
            Disruption::None => "none",
            Disruption::Setting => "setting",
            Disruption::DiscoverySubnets => "new subnets",
            Disruption::NodeAgent => "podipd",
            Disruption::NodeReplacement => "setting, new nodes",
            Disruption::NodeAgentAndNodes => "podipd, new nodes",
            Disruption::Reservations => "setting, reservations, new nodes",
            Disruption::NewSubnets => "new subnets, new nodes",
            Disruption::NewCluster => "new cluster",
        }
    }
}

/// A NAT gateway layout.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NatPlan {
    /// Gateways in all.
    pub gateways: u32,
    /// Gateways in each AZ (more than one when an AZ's share of the connections needs more
    /// than one gateway's 8 addresses; each then serves its own route table).
    pub gateways_per_az: u32,
    /// Addresses per gateway (1 to 8), from the 55,000 connections per destination per address.
    pub addresses_per_gateway: u32,
    /// Whether the connection need exceeds what the gateways an AZ may have (5 by default) can
    /// carry.
    pub over_limit: bool,
    /// AZs whose routable subnets lack the free addresses the gateways take.
    pub room_short: Vec<String>,
    /// Monthly cost, USD.
    pub monthly_usd: f64,
}

/// One variant, ready to simulate.
pub struct Variant {
    /// Short id, e.g. `prefix-delegation+reservations`.
    pub id: String,
    /// Strategy.
    pub strategy: Strategy,
    /// One line on what changes.
    pub title: String,
    /// Disruption.
    pub disruption: Disruption,
    /// The simulation input.
    pub spec: ClusterSpec,
    /// Its VPC.
    pub vpc: SimVpc,
    /// Subnets nodes and pods draw from (for headroom).
    pub cluster_subnets: Vec<SubnetId>,
    /// NAT gateways, for the private NAT strategy.
    pub nat: Option<NatPlan>,
    /// Caveats.
    pub caveats: Vec<String>,
    /// Quotas or limits the variant as planned runs into (each keeps it from being recommended).
    pub limits: Vec<String>,
    /// What to apply: file name -> contents.
    pub config: BTreeMap<String, String>,
}

/// Hours to virtual time.
pub fn at_hour(h: f64) -> Time {
    Time::from_millis((h * 3_600_000.0) as u64)
}

pub(crate) struct Layout {
    pub(crate) vpc: SimVpc,
    /// Scenario subnets in order, with their ids.
    pub(crate) subnets: Vec<(String, SubnetId)>,
}

fn place_usage(vpc: &mut SimVpc, id: &SubnetId, cidr: Ipv4Net, n: u32, pattern: Pattern) {
    match pattern {
        Pattern::Random => {
            let _ = vpc.occupy_random(id, n);
        }
        Pattern::Packed | Pattern::Striped => {
            let size = 1u32 << (32 - u32::from(cidr.prefix_len()));
            let base = u32::from(cidr.network());
            let order: Vec<u32> = if pattern == Pattern::Packed {
                (0..size).collect()
            } else {
                (0..16).flat_map(|k| (0..size / 16).map(move |b| b * 16 + (k + 5) % 16)).collect()
            };
            let mut left = n;
            if let Some(s) = vpc.subnet_mut(id) {
                // EC2 never auto-assigns from a reservation, so neither did the existing users.
                let reserved: Vec<Ipv4Net> = s.reservations().iter().map(|r| r.cidr).collect();
                for o in order {
                    if left == 0 {
                        break;
                    }
                    let ip = Ipv4Addr::from(base + o);
                    if reserved.iter().any(|r| r.contains(&ip)) {
                        continue;
                    }
                    if s.occupy(ip) {
                        left -= 1;
                    }
                }
            }
        }
    }
}

pub(crate) fn layout(sc: &Scenario, extra: &[Ipv4Net], ipv6: bool) -> Layout {
    let mut vpc = SimVpc::new(SimParams { seed: sc.seed, ..SimParams::default() });
    for c in sc.vpc_cidrs.iter().chain(extra) {
        // Validated by the scenario and by the strategy that adds `extra`.
        let _ = vpc.add_vpc_cidr(*c);
    }
    let mut subnets = Vec::new();
    for (i, s) in sc.subnets.iter().enumerate() {
        let v6: Option<Ipv6Net> =
            ipv6.then(|| format!("2600:1f18:{:x}:{:x}::/64", sc.seed & 0xffff, i).parse().expect("valid /64"));
        // The scenario checked containment and overlaps.
        let Ok(id) = vpc.add_subnet_v6(&s.az, s.cidr, v6) else { continue };
        for r in &s.reservations {
            let _ = vpc.add_reservation(&id, *r);
        }
        if let Some(sub) = vpc.subnet_mut(&id) {
            for ip in &s.used_addresses {
                sub.occupy(*ip);
            }
        }
        place_usage(&mut vpc, &id, s.cidr, s.used, s.pattern);
        subnets.push((s.az.clone(), id));
    }
    Layout { vpc, subnets }
}

pub(crate) fn base_settings(sc: &Scenario) -> NodeSettings {
    NodeSettings {
        warm_eni: sc.cni.warm_eni,
        warm_ip: sc.cni.warm_ip,
        minimum_ip: sc.cni.minimum_ip,
        warm_prefix: sc.cni.warm_prefix,
        prefix_delegation: sc.cni.prefix_delegation,
        cooldown: Duration::from_secs(sc.cni.cooldown_secs),
        // The VPC CNI as it behaves today, bugs included.
        corrected: false,
        packing: Some(Packing::Random),
        ..NodeSettings::default()
    }
}

pub(crate) fn spec(
    sc: &Scenario,
    node_subnets: &[(String, SubnetId)],
    settings: NodeSettings,
    routable: Vec<SubnetId>,
) -> ClusterSpec {
    let groups = sc
        .node_groups
        .iter()
        .map(|g| {
            let mut subs: Vec<(String, SubnetId)> =
                node_subnets.iter().filter(|(az, _)| g.azs.contains(az)).cloned().collect();
            // Spread across AZs first: interleave the AZs' subnets.
            subs.sort_by_key(|(az, id)| {
                let k = node_subnets.iter().filter(|(a, _)| a == az).position(|(_, i)| i == id).unwrap_or(0);
                (k, az.clone())
            });
            GroupRun {
                instance_type: g.instance_type,
                node_subnets: subs,
                nodes: g.nodes,
                scale: g.scale.iter().map(|(h, n)| (at_hour(*h), *n)).collect(),
            }
        })
        .collect();
    ClusterSpec {
        groups,
        settings,
        pod_subnets: None,
        pods_per_node: sc.workload.pods_per_node,
        daemonset_pods: sc.workload.daemonset_pods,
        host_network_pods: sc.workload.host_network_pods,
        churn_per_hour: sc.workload.churn_per_hour,
        rollouts: sc
            .workload
            .rollouts
            .iter()
            .map(|r| (at_hour(r.at_hour), r.pods, Duration::from_secs(u64::from(r.minutes) * 60)))
            .collect(),
        horizon: Duration::from_secs_f64(sc.horizon_hours * 3600.0),
        routable,
        seed: sc.seed,
    }
}

/// The quota a variant adding `more` CIDR blocks to the VPC runs into (5 blocks by default).
fn block_quota(sc: &Scenario, more: usize) -> Vec<String> {
    let total = sc.vpc_cidrs.len() + more;
    if total > 5 {
        vec![format!(
            "the VPC would have {total} CIDR blocks ({} now, {more} added); the default quota is 5: raise it first",
            sc.vpc_cidrs.len()
        )]
    } else {
        Vec::new()
    }
}

/// A free /16 inside 100.64.0.0/10 that overlaps neither the VPC nor a destination its pods reach.
fn cgnat_block(sc: &Scenario, skip: usize) -> Option<Ipv4Net> {
    (64u8..128)
        .map(|b| Ipv4Net::new(Ipv4Addr::new(100, b, 0, 0), 16).expect("/16"))
        .filter(|c| !sc.vpc_cidrs.iter().chain(&sc.traffic.destinations).any(|v| v.contains(c) || c.contains(v)))
        .nth(skip)
}

/// Non-routable space for `need` addresses over `azs`: one CG-NAT /16 split over the AZs when
/// that holds the need, else one /16 per AZ (a secondary VPC CIDR block is at most a /16, and an
/// ENIConfig names one subnet per AZ), within the VPC's five CIDR blocks. Returns the blocks to
/// associate, each AZ's subnet, and what does not fit.
fn nonroutable_space(
    sc: &Scenario,
    need: u64,
    azs: &[String],
) -> (Vec<Ipv4Net>, Vec<(String, Ipv4Net)>, Option<String>) {
    let Some(first) = cgnat_block(sc, 0) else { return (Vec::new(), Vec::new(), None) };
    let one = split(first, azs);
    // Usable per subnet: all but EC2's five reserved addresses.
    let usable = |n: &Ipv4Net| (1u64 << (32 - n.prefix_len())).saturating_sub(5);
    if one.iter().map(|(_, n)| usable(n)).sum::<u64>() >= need || azs.len() <= 1 {
        let short = (one.iter().map(|(_, n)| usable(n)).sum::<u64>() < need)
            .then(|| format!("pods need up to {need} non-routable addresses; {first} holds {}", usable(&first)));
        return (vec![first], one, short);
    }
    let room = 5usize.saturating_sub(sc.vpc_cidrs.len()).max(1);
    let blocks: Vec<Ipv4Net> = (0..azs.len().min(room)).filter_map(|i| cgnat_block(sc, i)).collect();
    let per_az: Vec<(String, Ipv4Net)> = azs.iter().cloned().zip(blocks.iter().copied()).collect();
    let held: u64 = per_az.iter().map(|(_, n)| usable(n)).sum();
    let short = if per_az.len() < azs.len() {
        Some(format!(
            "a /16 per AZ is needed ({need} addresses), but the VPC has room for {} more CIDR blocks of the 5 allowed: raise the quota",
            room
        ))
    } else {
        (held < need).then(|| format!("pods need up to {need} non-routable addresses; a /16 per AZ holds {held}"))
    };
    (blocks, per_az, short)
}

/// Splits `block` into `per_az` subnets per AZ (the largest power of two that fits), AZs in turn.
fn split_per_az(block: Ipv4Net, azs: &[String], per_az: u32) -> Vec<(String, Ipv4Net)> {
    let n = (azs.len().max(1) as u32 * per_az.max(1)).next_power_of_two();
    let bits = n.trailing_zeros() as u8;
    block
        .subnets(block.prefix_len() + bits)
        .map(|it| {
            it.take((azs.len() as u32 * per_az.max(1)) as usize)
                .enumerate()
                .map(|(i, net)| (azs[i % azs.len()].clone(), net))
                .collect()
        })
        .unwrap_or_default()
}

/// Splits `block` into one subnet per AZ (the largest power of two that fits).
fn split(block: Ipv4Net, azs: &[String]) -> Vec<(String, Ipv4Net)> {
    let bits = (azs.len().max(1) as u32).next_power_of_two().trailing_zeros() as u8;
    block
        .subnets(block.prefix_len() + bits)
        .map(|it| it.zip(azs.iter().cloned()).map(|(n, a)| (a, n)).collect())
        .unwrap_or_default()
}

/// The warm-pool variant with `WARM_IP_TARGET=warm` and `MINIMUM_IP_TARGET` at a node's pods
/// (one probe of the warm-target search).
pub fn warm_pool_variant(sc: &Scenario, warm: u32) -> Variant {
    let need = sc.workload.pods_per_node + sc.workload.daemonset_pods;
    let l = layout(sc, &[], false);
    let s = NodeSettings { warm_ip: warm, minimum_ip: need, warm_eni: 0, ..base_settings(sc) };
    let mut config = BTreeMap::new();
    config.insert(
        "apply.sh".into(),
        aws_node_env(&[("WARM_IP_TARGET", warm.to_string()), ("MINIMUM_IP_TARGET", need.to_string())]),
    );
    let routable: Vec<SubnetId> = l.subnets.iter().map(|(_, s)| s.clone()).collect();
    Variant {
        id: "warm-pool-tuned".into(),
        strategy: Strategy::WarmPool,
        title: format!("WARM_IP_TARGET={warm}, MINIMUM_IP_TARGET={need}"),
        disruption: Disruption::Setting,
        spec: spec(sc, &l.subnets, s, routable.clone()),
        cluster_subnets: routable,
        vpc: l.vpc,
        nat: None,
        caveats: Vec::new(),
        limits: Vec::new(),
        config,
    }
}

/// New routable subnets, one per AZ, tagged `kubernetes.io/role/cni=1`: with today's settings,
/// the VPC CNI's subnet discovery (on by default since 1.18) puts new ENIs, and the pods on
/// them, wherever there is the most room. Sized for every node (headroom included) at its max
/// pods; placed in the VPC's free space, or in a routable secondary /16 when that is full.
/// `None` when there is no room at all.
fn discovery_subnets_variant(sc: &Scenario) -> Option<Variant> {
    let azs = sc.azs();
    let headroom_per_az = sc.headroom_nodes.div_ceil(azs.len().max(1) as u32);
    let wants: Vec<(String, u8)> = azs
        .iter()
        .map(|az| {
            let per_node_and_nodes: u64 = sc
                .node_groups
                .iter()
                .filter(|g| g.azs.contains(az))
                .map(|g| {
                    let mp = max_pods(g.instance_type, &MaxPodsOptions::default()).max_pods;
                    u64::from(g.max.div_ceil(g.azs.len().max(1) as u32) + headroom_per_az)
                        * u64::from(mp + g.instance_type.max_enis)
                })
                .sum();
            (az.clone(), prefix_for(per_node_and_nodes))
        })
        .collect();
    // Not in the VPC's non-routable blocks (CG-NAT, 198.19/16), nor in networks the scenario
    // names as reached elsewhere.
    let non_routable: Vec<Ipv4Net> = ["100.64.0.0/10", "198.19.0.0/16"].iter().filter_map(|c| c.parse().ok()).collect();
    let mut existing: Vec<Ipv4Net> = sc.subnets.iter().map(|s| s.cidr).collect();
    if sc.traffic.destinations_given {
        existing.extend(sc.traffic.destinations.iter().copied());
    }
    let mut blocks: Vec<Ipv4Net> =
        sc.vpc_cidrs.iter().copied().filter(|b| !non_routable.iter().any(|n| n.contains(b))).collect();
    let mut placed = place(&blocks, &existing, &wants);
    let mut extra = Vec::new();
    let short = |p: &[(String, Option<Ipv4Net>)]| {
        p.iter().zip(&wants).any(|((_, got), (_, want))| got.is_none_or(|g| g.prefix_len() > *want))
    };
    if short(&placed)
        && sc.vpc_cidrs.len() < 5
        && let Some(b) = routable_secondary(&sc.vpc_cidrs, &existing)
    {
        blocks.push(b);
        let with = place(&blocks, &existing, &wants);
        let held = |p: &[(String, Option<Ipv4Net>)]| {
            p.iter().filter_map(|(_, b)| *b).map(|b| 1u64 << (32 - b.prefix_len())).sum::<u64>()
        };
        if held(&with) > held(&placed) {
            placed = with;
            extra.push(b);
        }
    }
    if placed.iter().all(|(_, b)| b.is_none()) {
        return None;
    }
    let mut l = layout(sc, &extra, false);
    let mut caveats = vec![
        "pods on new ENIs draw from the new subnets through the VPC CNI's subnet discovery (1.18 and later, \
         ENABLE_SUBNET_DISCOVERY=true by default); pods on the primary ENI stay in the node subnets"
            .to_string(),
        "ENIs in the new subnets take the node's primary ENI security groups".into(),
    ];
    for b in &extra {
        caveats
            .push(format!("adds {b} to the VPC: it must not overlap your other networks (peered VPCs, on-premises)"));
    }
    let mut new_subnets = Vec::new();
    for ((az, got), (_, want)) in placed.iter().zip(&wants) {
        match got {
            Some(b) => {
                if b.prefix_len() > *want {
                    caveats.push(format!(
                        "{az}: room for a /{} ({b}), not the /{want} every node at its max pods could fill",
                        b.prefix_len()
                    ));
                }
                if let Ok(id) = l.vpc.add_subnet(az, *b) {
                    let _ = l.vpc.tag_subnet(&id, cloud::TAG_SUBNET_CNI, "1");
                    new_subnets.push((az.clone(), *b, id));
                }
            }
            None => caveats.push(format!("{az}: no room for a new subnet")),
        }
    }
    let mut config = BTreeMap::new();
    let nets: Vec<(String, Ipv4Net)> = new_subnets.iter().map(|(a, b, _)| (a.clone(), *b)).collect();
    config.insert("new-subnets.sh".into(), discovery_subnets_script(sc, &extra, &nets));
    let mut routable: Vec<SubnetId> = l.subnets.iter().map(|(_, s)| s.clone()).collect();
    routable.extend(new_subnets.iter().map(|(_, _, id)| id.clone()));
    Some(Variant {
        id: "new-subnets".into(),
        strategy: Strategy::NewSubnets,
        title: format!(
            "new routable subnets {} tagged for subnet discovery, today's settings",
            nets.iter().map(|(_, b)| b.to_string()).collect::<Vec<_>>().join(", ")
        ),
        disruption: Disruption::DiscoverySubnets,
        spec: spec(sc, &l.subnets, base_settings(sc), routable.clone()),
        cluster_subnets: routable,
        vpc: l.vpc,
        nat: None,
        caveats,
        limits: Vec::new(),
        config,
    })
}

/// Every variant of every strategy for `sc` but the searched warm pool ([`warm_pool_variant`]).
pub fn variants(sc: &Scenario) -> Vec<Variant> {
    let mut out = Vec::new();
    let need = sc.workload.pods_per_node + sc.workload.daemonset_pods;
    let routable_of = |l: &Layout| l.subnets.iter().map(|(_, s)| s.clone()).collect::<Vec<_>>();

    // 1. Warm pool: today, and tuned.
    let l = layout(sc, &[], false);
    let s = base_settings(sc);
    out.push(Variant {
        id: "vpc-cni-today".into(),
        strategy: Strategy::WarmPool,
        title: "the VPC CNI with today's settings".into(),
        disruption: Disruption::None,
        spec: spec(sc, &l.subnets, s, routable_of(&l)),
        cluster_subnets: routable_of(&l),
        vpc: l.vpc,
        nat: None,
        caveats: vec![],
        limits: Vec::new(),
        config: BTreeMap::new(),
    });

    if let Some(v) = discovery_subnets_variant(sc) {
        out.push(v);
    }
    out.extend(crate::podipd::variants(sc));

    // 2. Prefix delegation, without and with reservations.
    let nitro = sc.node_groups.iter().all(|g| g.instance_type.supports_prefix_delegation());
    for reserve in [false, true] {
        let mut l = layout(sc, &[], false);
        let s = NodeSettings {
            prefix_delegation: true,
            warm_prefix: Some(1),
            warm_ip: 0,
            minimum_ip: 0,
            ..base_settings(sc)
        };
        let mut caveats = vec!["existing nodes must be replaced: kubelet max pods changes".to_string()];
        if !nitro {
            caveats.push(
                "some instance types are not Nitro: prefix delegation falls back to secondary IPs on them".into(),
            );
        }
        let mut config = BTreeMap::new();
        config.insert(
            "apply.sh".into(),
            aws_node_env(&[("ENABLE_PREFIX_DELEGATION", "true".into()), ("WARM_PREFIX_TARGET", "1".into())]),
        );
        let (txt, karp) = max_pods_files(sc, true, false);
        config.insert("kubelet-max-pods.txt".into(), txt);
        config.insert("karpenter-ec2nodeclass.yaml".into(), karp);
        if reserve {
            let mut plan = Vec::new();
            let nodes_per_subnet = (sc.peak_nodes() as usize).div_ceil(l.subnets.len().max(1)) as u32;
            let prefixes_per_node = need.div_ceil(16) + 1;
            // Primary addresses per node: its own ENI's and each extra ENI's, at the most.
            let enis_per_node = sc.node_groups.iter().map(|g| g.instance_type.max_enis).max().unwrap_or(1);
            for (i, (_, id)) in l.subnets.iter().enumerate() {
                let Some(sub) = l.vpc.subnet(id) else { continue };
                let used: Vec<(Ipv4Addr, String)> = (0..sub.size())
                    .filter(|o| sub.is_used(*o) && !sub.is_reserved(*o))
                    .map(|o| (sub.addr(o), String::new()))
                    .collect();
                // Node and ENI primary addresses never come from a prefix reservation: leave the
                // node group's, at its largest, auto-assignable.
                let input = FragInput {
                    subnet_id: Some(sc.subnets[i].name.clone()),
                    subnet: Some(sub.cidr),
                    used,
                    reservations: sub.reservations().to_vec(),
                    want_prefixes: Some((nodes_per_subnet * prefixes_per_node).max(1)),
                    keep_free: nodes_per_subnet * enis_per_node,
                    ..FragInput::default()
                };
                let mut want = input.want_prefixes.unwrap_or(1);
                // Ask for less when the subnet cannot hold it all, down to what fits.
                let advice = loop {
                    let mut inp = input.clone();
                    inp.want_prefixes = Some(want);
                    let a = analyse(&inp).ok().and_then(|r| r.advice);
                    match a {
                        Some(a) if !a.cidrs.is_empty() => break Some(a),
                        _ if want > 1 => want /= 2,
                        _ => break None,
                    }
                };
                if let Some(a) = advice {
                    for cidr in &a.cidrs {
                        let _ = l.vpc.add_reservation(id, Reservation { cidr: *cidr, kind: ReservationKind::Prefix });
                    }
                    plan.push((i, a.cidrs.clone()));
                    if want < input.want_prefixes.unwrap_or(1) {
                        caveats.push(format!(
                            "subnet {}: room for only {want} reserved prefixes of {} wanted",
                            sc.subnets[i].name,
                            input.want_prefixes.unwrap_or(1)
                        ));
                    }
                } else {
                    caveats.push(format!("subnet {}: no aligned range left to reserve", sc.subnets[i].name));
                }
            }
            config.insert("reservations.sh".into(), reservations_script(sc, &plan));
        }
        out.push(Variant {
            id: if reserve { "prefix-delegation+reservations".into() } else { "prefix-delegation".into() },
            strategy: Strategy::PrefixDelegation,
            title: if reserve {
                "prefix delegation (/28 per call) with subnet CIDR reservations for prefixes".into()
            } else {
                "prefix delegation (/28 per call) on the subnets as they are".into()
            },
            disruption: if reserve { Disruption::Reservations } else { Disruption::NodeReplacement },
            spec: spec(sc, &l.subnets, s, routable_of(&l)),
            cluster_subnets: routable_of(&l),
            vpc: l.vpc,
            nat: None,
            caveats,
            limits: Vec::new(),
            config,
        });
    }

    // 3. Custom networking.
    let azs = sc.azs();
    // The most addresses pods can hold: every node at its max pods under custom networking.
    let cn_max_pods = sc
        .node_groups
        .iter()
        .map(|g| {
            u64::from(g.max)
                * u64::from(
                    max_pods(g.instance_type, &MaxPodsOptions { custom_networking: true, ..MaxPodsOptions::default() })
                        .max_pods,
                )
        })
        .sum::<u64>();
    let (cn_blocks, cn_subnets, cn_short) = nonroutable_space(sc, cn_max_pods, &azs);
    if let Some(&block) = cn_blocks.first() {
        let mut caveats = vec![
            "pods leave the VPC SNATed to the node's primary address (AWS_VPC_K8S_CNI_EXTERNALSNAT=false)".to_string(),
            "existing nodes must be replaced: the primary ENI no longer carries pods, max pods drops".to_string(),
        ];
        if let Some(why) = sc.vpc_cidrs.first().and_then(|p| secondary_cidr_refusal(p, &block)) {
            caveats.push(why);
        }
        if let Some(short) = cn_short {
            caveats.push(short);
        }
        let mut l = layout(sc, &cn_blocks, false);
        let mut pod_subnets = BTreeMap::new();
        for (az, net) in &cn_subnets {
            if let Ok(id) = l.vpc.add_subnet(az, *net) {
                pod_subnets.insert(az.clone(), id);
            }
        }
        let mut config = BTreeMap::new();
        config.insert("subnets.sh".into(), custom_networking_script(sc, &cn_blocks, &cn_subnets));
        config.insert(
            "apply.sh".into(),
            aws_node_env(&[
                ("AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG", "true".into()),
                ("ENI_CONFIG_LABEL_DEF", "topology.kubernetes.io/zone".into()),
            ]),
        );
        let (txt, karp) = max_pods_files(sc, false, true);
        config.insert("kubelet-max-pods.txt".into(), txt);
        config.insert("karpenter-ec2nodeclass.yaml".into(), karp);
        for g in &sc.node_groups {
            let mp =
                max_pods(g.instance_type, &MaxPodsOptions { custom_networking: true, ..MaxPodsOptions::default() });
            // kubelet's max pods counts host-network pods too.
            if mp.max_pods < need + sc.workload.host_network_pods {
                caveats.push(format!(
                    "{}: max pods {} under custom networking is below the {need} pods per node plus {} host-network pods",
                    g.instance_type.name, mp.max_pods, sc.workload.host_network_pods
                ));
            }
        }
        let routable = routable_of(&l);
        let mut cluster_subnets = routable.clone();
        cluster_subnets.extend(pod_subnets.values().cloned());
        let mut sp = spec(sc, &l.subnets, base_settings(sc), routable);
        sp.pod_subnets = Some(pod_subnets);
        out.push(Variant {
            id: "custom-networking".into(),
            strategy: Strategy::CustomNetworking,
            title: format!(
                "custom networking: pods in CG-NAT subnets of {}, internal SNAT",
                cn_blocks.iter().map(ToString::to_string).collect::<Vec<_>>().join(" + ")
            ),
            disruption: Disruption::NewSubnets,
            spec: sp,
            vpc: l.vpc,
            cluster_subnets,
            nat: None,
            caveats,
            limits: block_quota(sc, cn_blocks.len()),
            config,
        });
    }

    // 4. Private NAT gateway: the whole data plane non-routable, sized to what the nodes and
    // their pods can hold (every node at its max pods, plus its ENIs' own addresses), in /16s
    // (the largest secondary block) within the VPC's five blocks.
    let nat_need: u64 = sc
        .node_groups
        .iter()
        .map(|g| {
            let mp = max_pods(g.instance_type, &MaxPodsOptions::default());
            u64::from(g.max) * u64::from(mp.max_pods + g.instance_type.max_enis)
        })
        .sum();
    let room = 5usize.saturating_sub(sc.vpc_cidrs.len()).max(1);
    // What one /16 gives the nodes once split over the AZs (less EC2's reserved addresses).
    let per_block: u64 = cgnat_block(sc, 0)
        .map(|b| split(b, &azs).iter().map(|(_, n)| (1u64 << (32 - n.prefix_len())).saturating_sub(5)).sum())
        .unwrap_or(65_531)
        .max(1);
    let want = (nat_need.div_ceil(per_block) as usize).clamp(2.min(room), room);
    let blocks: Vec<Ipv4Net> = (0..want).filter_map(|i| cgnat_block(sc, i)).collect();
    let nat_short = (blocks.len() as u64 * per_block < nat_need).then(|| {
        format!(
            "nodes and pods need up to {nat_need} non-routable addresses; {} /16s (the VPC's room for CIDR blocks) hold {}",
            blocks.len(),
            blocks.len() as u64 * per_block
        )
    });
    if !blocks.is_empty() {
        // The connections split over the AZs, each AZ's over its gateways: a gateway takes up to
        // 8 addresses (the primary and 7 secondary, the default quota) of 55,000 connections per
        // destination each; an AZ takes up to 5 gateways (the default quota).
        let conns = sc.traffic.connections_per_destination;
        let az_count = azs.len().max(1) as u32;
        let per_az = conns.div_ceil(az_count);
        let addresses_per_az = per_az.div_ceil(55_000).max(1);
        let gws_per_az = addresses_per_az.div_ceil(8);
        let per_gw = addresses_per_az.div_ceil(gws_per_az).clamp(1, 8);
        let over_limit = gws_per_az > 5;
        let gws_per_az = gws_per_az.min(5);
        let gws = az_count * gws_per_az;
        let mut l = layout(sc, &blocks, false);
        // Each gateway serves its own route table, so each AZ has a node subnet per gateway in
        // every block.
        let mut node_subnets = Vec::new();
        let mut node_nets = Vec::new();
        for b in &blocks {
            for (az, net) in split_per_az(*b, &azs, gws_per_az) {
                if let Ok(id) = l.vpc.add_subnet(&az, net) {
                    node_subnets.push((az.clone(), id));
                    node_nets.push((az, net));
                }
            }
        }
        // A gateway takes all its addresses from one subnet: each AZ's gateways go in its
        // routable subnet with the most free addresses, which must hold them.
        let mut room_short = Vec::new();
        let mut gateway_subnets: Vec<(String, usize)> = Vec::new();
        for az in &azs {
            let best = sc
                .subnets
                .iter()
                .enumerate()
                .filter(|(_, x)| x.az == *az)
                .filter_map(|(i, _)| {
                    let id = &l.subnets.get(i)?.1;
                    Some((i, u64::from(l.vpc.subnet(id)?.free_ips())))
                })
                .max_by_key(|(i, free)| (*free, std::cmp::Reverse(*i)));
            let need = u64::from(gws_per_az * per_gw);
            match best {
                Some((i, free)) => {
                    if free < need {
                        room_short.push(format!(
                            "{az} needs {need} addresses for its NAT gateways; its routable subnet with the most room, {}, has {free} free",
                            sc.subnets[i].name
                        ));
                    }
                    gateway_subnets.push((az.clone(), i));
                }
                None => room_short.push(format!("{az} has no routable subnet for its NAT gateways")),
            }
        }
        let hours = 730.0;
        let monthly = f64::from(gws) * sc.traffic.nat_price_per_hour * hours
            + sc.traffic.egress_gb_per_hour * hours * sc.traffic.nat_price_per_gb;
        let mut caveats = vec![
            "the whole data plane moves to new non-routable subnets: a new cluster or a full node migration"
                .to_string(),
            format!(
                "NAT gateways cost ${:.0}/month here ({gws} × ${}/h plus ${}/GB)",
                monthly, sc.traffic.nat_price_per_hour, sc.traffic.nat_price_per_gb
            ),
            "inbound connections from other networks to pods need a load balancer in routable subnets".into(),
        ];
        if let Some(short) = nat_short {
            caveats.push(short);
        }
        if gws_per_az > 1 {
            caveats.push(format!("{gws_per_az} NAT gateways per AZ, each with its own route table and node subnets"));
        }
        if over_limit {
            caveats.push(format!(
                "{conns} connections to one destination need more than 5 NAT gateways per AZ × 8 addresses × 55,000: ErrorPortAllocation unless the quotas are raised"
            ));
        }
        caveats.push(
            "the node subnets' route tables carry only the destinations: set EGRESS_NAT_GATEWAY in nat.sh for a default \
             route, or serve the EKS API, ECR, S3 and STS through VPC endpoints"
                .into(),
        );
        let nat = NatPlan {
            gateways: gws,
            gateways_per_az: gws_per_az,
            addresses_per_gateway: per_gw,
            room_short,
            over_limit,
            monthly_usd: (monthly * 100.0).round() / 100.0,
        };
        let mut config = BTreeMap::new();
        config.insert("nat.sh".into(), private_nat_script(sc, &blocks, &node_nets, &gateway_subnets, &nat));
        let sp = spec(sc, &node_subnets, base_settings(sc), vec![]);
        let cluster_subnets = node_subnets.iter().map(|(_, s)| s.clone()).collect();
        out.push(Variant {
            id: "private-nat-gateway".into(),
            strategy: Strategy::PrivateNat,
            title: format!(
                "nodes and pods in non-routable {}, behind a private NAT gateway per AZ",
                blocks.iter().map(ToString::to_string).collect::<Vec<_>>().join(" + ")
            ),
            disruption: Disruption::NewCluster,
            spec: sp,
            vpc: l.vpc,
            cluster_subnets,
            nat: Some(nat),
            caveats,
            limits: block_quota(sc, blocks.len()),
            config,
        });
    }

    // 5. IPv6.
    let l = layout(sc, &[], true);
    let s = NodeSettings { ipv6: true, prefix_delegation: true, ..base_settings(sc) };
    let mut caveats = vec![
        "the IP family is fixed when a cluster is created: a new cluster".to_string(),
        "pods reach IPv4 destinations through the node (SNAT to its IPv4) via a 169.254.172.0/22 interface".into(),
        "every node still takes one IPv4 address; subnets must be dual-stack".into(),
    ];
    if !nitro {
        caveats.push("IPv6 needs Nitro instance types".into());
    }
    let mut config = BTreeMap::new();
    config.insert(
        "ipv6-notes.md".into(),
        "# IPv6 cluster\n\n- create the cluster with `--kubernetes-network-config ipFamily=ipv6`\n- associate an IPv6 /56 with the VPC and a /64 with every node subnet; turn on IPv6 auto-assign\n- VPC CNI: ENABLE_IPv6=true, ENABLE_PREFIX_DELEGATION=true (each node gets one /80)\n- add an egress-only internet gateway for IPv6 egress\n- IPv4 egress works through the node; DNS64/NAT64 is only needed for IPv6-only clients outside EKS\n".into(),
    );
    out.push(Variant {
        id: "ipv6".into(),
        strategy: Strategy::Ipv6,
        title: "IPv6 pods (one /80 per node), dual-stack subnets, one IPv4 per node".into(),
        disruption: Disruption::NewCluster,
        spec: spec(sc, &l.subnets, s, routable_of(&l)),
        cluster_subnets: routable_of(&l),
        vpc: l.vpc,
        nat: None,
        caveats,
        limits: Vec::new(),
        config,
    });
    out
}
