//! The scenario file (TOML): the user's VPC, subnets and their existing usage, node groups,
//! workload, the VPC CNI settings in use, traffic assumptions, the horizon and a seed.
//!
//! Raw serde types are read first; [`Scenario::parse`] then checks every field and reports every
//! bad one at once, each with its path and value.

use crate::import::AwsExports;
use cloud::sim::subnet::{Reservation, ReservationKind};
use ipam::catalog::{Catalog, InstanceType};
use ipam::maxpods::{MaxPodsOptions, max_pods};
use ipnet::Ipv4Net;
use serde::Deserialize;
use std::net::Ipv4Addr;
use thiserror::Error;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Option<String>,
    region: Option<String>,
    seed: Option<u64>,
    horizon_hours: Option<f64>,
    vpc: Option<RawVpc>,
    #[serde(default)]
    subnets: Vec<RawSubnet>,
    #[serde(default)]
    node_groups: Vec<RawNodeGroup>,
    workload: RawWorkload,
    #[serde(default)]
    cni: RawCni,
    #[serde(default)]
    traffic: RawTraffic,
    #[serde(default)]
    targets: RawTargets,
    #[serde(default)]
    podip: RawPodip,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPodip {
    ec2_calls_per_second: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVpc {
    id: Option<String>,
    cidrs: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubnet {
    id: Option<String>,
    name: Option<String>,
    az: String,
    cidr: String,
    #[serde(default)]
    used: u32,
    pattern: Option<String>,
    #[serde(default)]
    used_addresses: Vec<String>,
    #[serde(default)]
    reservations: Vec<RawReservation>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReservation {
    cidr: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNodeGroup {
    name: Option<String>,
    instance_type: String,
    nodes: Option<u32>,
    min: Option<u32>,
    max: Option<u32>,
    azs: Option<Vec<String>>,
    #[serde(default)]
    scale: Vec<RawScale>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScale {
    at_hour: f64,
    nodes: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkload {
    pods_per_node: Option<u32>,
    total_pods: Option<u32>,
    #[serde(default)]
    daemonset_pods: u32,
    #[serde(default = "two")]
    host_network_pods: u32,
    #[serde(default)]
    churn_per_hour: f64,
    #[serde(default)]
    rollouts: Vec<RawRollout>,
}

fn two() -> u32 {
    2
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRollout {
    at_hour: f64,
    pods: u32,
    #[serde(default = "fifteen")]
    minutes: u32,
}

fn fifteen() -> u32 {
    15
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCni {
    warm_eni_target: Option<u32>,
    warm_ip_target: Option<u32>,
    minimum_ip_target: Option<u32>,
    warm_prefix_target: Option<u32>,
    prefix_delegation: Option<bool>,
    ip_cooldown_period: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTraffic {
    egress_gb_per_hour: Option<f64>,
    connections_per_destination: Option<u32>,
    nat_price_per_hour: Option<f64>,
    nat_price_per_gb: Option<f64>,
    destinations: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTargets {
    headroom_nodes: Option<u32>,
    max_wait_p99_s: Option<f64>,
    max_throttled_share: Option<f64>,
    nau_quota: Option<u64>,
}

/// What a variant must meet to be recommended (besides starting every node and pod and the
/// headroom asked for).
#[derive(Clone, Debug, PartialEq)]
pub struct Judge {
    /// The longest pod-start wait, at the 99th percentile, in seconds (`max_wait_p99_s`, 30).
    pub max_wait_p99_s: f64,
    /// The largest share of EC2 calls throttled (`max_throttled_share`, 0.05): the account's
    /// buckets are shared with every other workload in it.
    pub max_throttled_share: f64,
    /// The VPC's Network Address Usage quota (`nau_quota`, 64,000; 128,000 with peering).
    pub nau_quota: u64,
}

/// How a subnet's existing usage is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// Uniformly at random (what EC2 does): the worst case for /28 blocks.
    Random,
    /// From the lowest address up.
    Packed,
    /// One address in every /28, then the next: the worst possible fragmentation.
    Striped,
}

/// A subnet and what already uses it.
#[derive(Clone, Debug, PartialEq)]
pub struct SubnetSpec {
    /// Its EC2 id (`subnet-...`), when known (from the scenario or an import).
    pub id: Option<String>,
    /// Name (or the CIDR).
    pub name: String,
    /// AZ.
    pub az: String,
    /// Block.
    pub cidr: Ipv4Net,
    /// Addresses used by others, placed by `pattern`.
    pub used: u32,
    /// Placement of `used`.
    pub pattern: Pattern,
    /// Exact addresses used by others.
    pub used_addresses: Vec<Ipv4Addr>,
    /// Reservations.
    pub reservations: Vec<Reservation>,
}

/// A node group.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeGroup {
    /// Name.
    pub name: String,
    /// Instance type.
    pub instance_type: &'static InstanceType,
    /// Nodes at the start.
    pub nodes: u32,
    /// Most nodes the group reaches.
    pub max: u32,
    /// AZs the nodes spread over.
    pub azs: Vec<String>,
    /// Scale events: (hour, nodes).
    pub scale: Vec<(f64, u32)>,
}

/// A rollout burst: extra pods for a while.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rollout {
    /// When.
    pub at_hour: f64,
    /// Extra pods.
    pub pods: u32,
    /// How long they stay.
    pub minutes: u32,
}

/// The workload.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    /// Pods needing an address per node (workload pods, without DaemonSets).
    pub pods_per_node: u32,
    /// DaemonSet pods per node that need an address.
    pub daemonset_pods: u32,
    /// Host-network pods per node (no address).
    pub host_network_pods: u32,
    /// Share of pods replaced per hour.
    pub churn_per_hour: f64,
    /// Bursts.
    pub rollouts: Vec<Rollout>,
}

/// VPC CNI settings in use today.
#[derive(Clone, Debug, PartialEq)]
pub struct CniInUse {
    /// `WARM_ENI_TARGET`.
    pub warm_eni: u32,
    /// `WARM_IP_TARGET`.
    pub warm_ip: u32,
    /// `MINIMUM_IP_TARGET`.
    pub minimum_ip: u32,
    /// `WARM_PREFIX_TARGET`.
    pub warm_prefix: Option<u32>,
    /// `ENABLE_PREFIX_DELEGATION`.
    pub prefix_delegation: bool,
    /// `IP_COOLDOWN_PERIOD` in seconds.
    pub cooldown_secs: u64,
}

/// Traffic assumptions for NAT sizing and cost.
#[derive(Clone, Debug, PartialEq)]
pub struct Traffic {
    /// GB per hour leaving the VPC from the whole cluster.
    pub egress_gb_per_hour: f64,
    /// Peak simultaneous connections to the busiest single destination.
    pub connections_per_destination: u32,
    /// NAT gateway price per hour (US East: 0.045).
    pub nat_price_per_hour: f64,
    /// NAT gateway price per GB processed (US East: 0.045).
    pub nat_price_per_gb: f64,
    /// The networks outside the VPC that pods reach (peered VPCs, on-premises), routed through
    /// the private NAT gateways (`destinations`; by default the RFC 1918 blocks that hold the
    /// VPC's CIDRs, or all three when none does, never one of the VPC's own blocks).
    pub destinations: Vec<Ipv4Net>,
    /// Whether the scenario named the destinations (then they are known networks: no new
    /// block may take their space).
    pub destinations_given: bool,
}

/// A validated scenario.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// Name.
    pub name: String,
    /// Region.
    pub region: String,
    /// Seed.
    pub seed: u64,
    /// Simulated hours.
    pub horizon_hours: f64,
    /// The VPC's EC2 id (`vpc-...`), when known (from `[vpc] id` or an import).
    pub vpc_id: Option<String>,
    /// VPC CIDRs, primary first.
    pub vpc_cidrs: Vec<Ipv4Net>,
    /// Subnets.
    pub subnets: Vec<SubnetSpec>,
    /// Node groups.
    pub node_groups: Vec<NodeGroup>,
    /// Workload.
    pub workload: Workload,
    /// VPC CNI settings in use.
    pub cni: CniInUse,
    /// Traffic.
    pub traffic: Traffic,
    /// Headroom asked for, in nodes.
    pub headroom_nodes: u32,
    /// What an import from AWS exports recognised and left out.
    pub import_notes: Vec<String>,
    /// What a recommended variant must meet.
    pub judge: Judge,
    /// `[podip] ec2_calls_per_second`: the cluster's budget of mutating EC2 calls that the
    /// podip variants keep to (`PODIP_CLUSTER_EC2_CALLS_PER_SECOND`); none: unbounded.
    pub podip_calls_per_second: Option<f64>,
}

/// Every problem in a scenario file, at once.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid scenario:\n  {}", .0.join("\n  "))]
pub struct ScenarioError(pub Vec<String>);

/// The exported subnets (of the first exported VPC, when there is one) with their ENI addresses
/// and prefixes as exact existing usage.
fn imported_subnets(x: &AwsExports, vpc_id: &str) -> Vec<RawSubnet> {
    let usage = x.usage();
    x.subnets
        .iter()
        .filter(|s| s.vpc_id == vpc_id)
        .map(|sub| {
            let u = usage.get(&sub.subnet_id);
            let mut used: Vec<Ipv4Addr> = u.map(|u| u.addresses.clone()).unwrap_or_default();
            for p in u.map(|u| u.prefixes.clone()).unwrap_or_default() {
                used.extend((0..16).map(|i| ipam::addr::nth(&p, i)));
            }
            // EC2 never hands out its own five; an export that shows one (as moto's can) adds
            // nothing the subnet does not already keep.
            used.retain(|ip| !aws_reserved(&sub.cidr_block, *ip));
            let used: Vec<String> = used.iter().map(ToString::to_string).collect();
            let name = sub.tags.iter().find(|t| t.key == "Name").map_or(sub.subnet_id.clone(), |t| t.value.clone());
            let reservations = u
                .map(|u| {
                    u.reservations
                        .iter()
                        .map(|r| RawReservation {
                            cidr: r.cidr.to_string(),
                            kind: match r.kind {
                                ReservationKind::Prefix => "prefix".into(),
                                ReservationKind::Explicit => "explicit".into(),
                            },
                        })
                        .collect()
                })
                .unwrap_or_default();
            RawSubnet {
                id: Some(sub.subnet_id.clone()),
                name: Some(name),
                az: sub.availability_zone.clone(),
                cidr: sub.cidr_block.to_string(),
                used: 0,
                pattern: None,
                used_addresses: used,
                reservations,
            }
        })
        .collect()
}

/// The RFC 1918 blocks that hold the VPC's CIDRs (the private networks around it), or all
/// three when none does.
/// A block that is one of the VPC's own is never a destination: its local route reaches it.
fn default_destinations(vpc: &[Ipv4Net]) -> Vec<Ipv4Net> {
    let all: Vec<Ipv4Net> = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
        .iter()
        .filter_map(|r| r.parse().ok())
        .filter(|r: &Ipv4Net| !vpc.iter().any(|v| v.contains(r)))
        .collect();
    let around: Vec<Ipv4Net> = all.iter().copied().filter(|r| vpc.iter().any(|v| r.contains(v))).collect();
    if around.is_empty() { all } else { around }
}

/// Whether `c` is private address space (RFC 1918).
pub fn is_rfc1918(c: &Ipv4Net) -> bool {
    ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
        .iter()
        .any(|r| r.parse::<Ipv4Net>().is_ok_and(|r: Ipv4Net| r.contains(c) || c.contains(&r)))
}

/// Why EC2 would refuse `secondary` as an extra block next to `primary` (VPC guide, "IPv4 CIDR
/// block association restrictions"); `None` when it is allowed.
pub fn secondary_cidr_refusal(primary: &Ipv4Net, secondary: &Ipv4Net) -> Option<String> {
    let cgnat: Ipv4Net = "100.64.0.0/10".parse().expect("literal");
    let b198: Ipv4Net = "198.19.0.0/16".parse().expect("literal");
    let same_rfc1918_block = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
        .iter()
        .filter_map(|r| r.parse::<Ipv4Net>().ok())
        .any(|r| r.contains(primary) && r.contains(secondary));
    if primary.contains(secondary) || secondary.contains(primary) {
        return Some(format!("{secondary} overlaps {primary}"));
    }
    if is_rfc1918(primary) {
        if cgnat.contains(secondary) || (!is_rfc1918(secondary) && !b198.contains(secondary)) {
            return None;
        }
        if b198.contains(secondary) {
            // Name the reserved range only when the block is not the range itself.
            let within = if *secondary == b198 { String::new() } else { format!(" (in {b198})") };
            return Some(format!("{secondary}{within} cannot join a VPC whose primary block {primary} is RFC 1918"));
        }
        if !same_rfc1918_block {
            return Some(format!("{secondary} is in another RFC 1918 block than the primary {primary}"));
        }
        return None;
    }
    if is_rfc1918(secondary) || b198.contains(secondary) {
        return Some(format!("{secondary} cannot join a VPC whose primary block {primary} is not RFC 1918"));
    }
    None
}

/// The most nodes a group may have, and the most pods one rollout may start: beyond a real
/// cluster, and a bound on what the simulation allocates.
pub const MAX_NODES: u32 = 20_000;
/// See [`MAX_NODES`].
pub const MAX_PODS: u32 = 1_000_000;
/// The most pod starts a run may hold (every node's pods, each replacement, every rollout pod).
pub const MAX_POD_STARTS: u64 = 5_000_000;

/// Whether `id` is an EC2 resource id of this kind (`subnet-` and 8 or 17 lowercase hex
/// digits): it is written into shell scripts, so nothing else may pass.
pub fn is_ec2_id(kind: &str, id: &str) -> bool {
    id.strip_prefix(kind).and_then(|r| r.strip_prefix('-')).is_some_and(|hex| {
        (hex.len() == 8 || hex.len() == 17) && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Whether `name` is shaped as an AWS region or AZ name (`us-east-1a`, `us-west-2-lax-1a`):
/// lowercase letters, digits and dashes. It is written into shell scripts.
fn is_zone_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Whether AWS reserves `ip` in `subnet` (its first four and its last address).
fn aws_reserved(subnet: &Ipv4Net, ip: Ipv4Addr) -> bool {
    let off = u32::from(ip) - u32::from(subnet.network());
    off < 4 || ip == subnet.broadcast()
}

impl Scenario {
    /// Parses and validates scenario TOML.
    ///
    /// # Errors
    /// Every bad field, with its path and value.
    pub fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        Scenario::parse_with(text, None)
    }

    /// Parses scenario TOML whose VPC and subnets come from AWS CLI exports (the scenario then
    /// has no `[vpc]` or `[[subnets]]` of its own).
    ///
    /// # Errors
    /// Every bad field, with its path and value.
    pub fn parse_with(text: &str, import: Option<&AwsExports>) -> Result<Scenario, ScenarioError> {
        let mut import_notes = Vec::new();
        let mut raw: RawScenario =
            toml::from_str(text).map_err(|e| ScenarioError(vec![e.to_string().trim().replace('\n', " ")]))?;
        if let Some(x) = import {
            if raw.vpc.is_some() || !raw.subnets.is_empty() {
                return Err(ScenarioError(vec![
                    "vpc/subnets: given both in the scenario and by AWS exports; keep one".into(),
                ]));
            }
            // One VPC: the one the exported subnets are in, which the VPC export must hold.
            let mut ids: Vec<&str> = x.subnets.iter().map(|s| s.vpc_id.as_str()).collect();
            ids.sort_unstable();
            ids.dedup();
            let id = match ids.as_slice() {
                [one] => (*one).to_string(),
                [] => return Err(ScenarioError(vec!["--subnets: the export holds no subnet".into()])),
                many => {
                    return Err(ScenarioError(vec![format!(
                        "--subnets: subnets of {} VPCs ({}): export one VPC's (aws ec2 describe-subnets --filters Name=vpc-id,Values=VPC_ID)",
                        many.len(),
                        many.join(", ")
                    )]));
                }
            };
            let Some(vpc) = x.vpcs.iter().find(|v| v.vpc_id == id) else {
                return Err(ScenarioError(vec![if x.vpcs.is_empty() {
                    format!("--vpcs: needed for the VPC's CIDR blocks (aws ec2 describe-vpcs --vpc-ids {id})")
                } else {
                    format!("--vpcs: the subnets' VPC {id} is not in the export (aws ec2 describe-vpcs --vpc-ids {id})")
                }]));
            };
            raw.subnets = imported_subnets(x, &id);
            let (enis, addrs) = x.nodes_own();
            if enis > 0 {
                let clusters = x.clusters();
                let of = if clusters.len() > 1 {
                    format!(
                        " (tagged for {} clusters: {}; every one's is left out, so another cluster's nodes here are not counted)",
                        clusters.len(),
                        clusters.join(", ")
                    )
                } else {
                    String::new()
                };
                import_notes.push(format!(
                    "left out {enis} ENIs of the cluster's nodes ({addrs} addresses: those a node agent made, by their tags or description, and the primary ENIs of their instances){of}: the plan simulates the cluster's nodes itself"
                ));
            }
            let cidrs: Vec<String> = vpc.cidrs().iter().map(ToString::to_string).collect();
            let id = Some(id);
            raw.vpc = Some(RawVpc { id, cidrs });
        }
        let Some(raw_vpc) = raw.vpc.take() else {
            return Err(ScenarioError(vec![
                "vpc: missing; give [vpc] cidrs, or AWS exports (--vpcs, --subnets)".into(),
            ]));
        };
        let mut bad = Vec::new();
        if let Some(id) = raw_vpc.id.as_deref().filter(|id| !is_ec2_id("vpc", id)) {
            bad.push(format!("vpc.id = {id:?}: not a VPC id (vpc- and 8 or 17 hex digits)"));
        }
        let region = raw.region.clone().unwrap_or_else(|| "us-east-1".into());
        if !is_zone_name(&region) {
            bad.push(format!("region = {region:?}: not a region name (e.g. us-east-1)"));
        }
        if let Some(n) = raw.name.as_deref().filter(|n| n.len() > 255 || n.chars().any(char::is_control)) {
            bad.push(format!("name = {n:?}: at most 255 characters, none of them control characters"));
        }
        let horizon_hours = raw.horizon_hours.unwrap_or(24.0);
        if !(horizon_hours > 0.0 && horizon_hours <= 24.0 * 7.0) {
            bad.push(format!("horizon_hours = {horizon_hours}: must be above 0 and at most 168"));
        }
        let mut vpc_cidrs = Vec::new();
        for (i, c) in raw_vpc.cidrs.iter().enumerate() {
            match c.parse::<Ipv4Net>() {
                Ok(n) if n.trunc() != n => {
                    bad.push(format!("vpc.cidrs[{i}] = {c:?}: host bits set (did you mean {}?)", n.trunc()))
                }
                Ok(n) if !(16..=28).contains(&n.prefix_len()) => {
                    bad.push(format!("vpc.cidrs[{i}] = {c:?}: a VPC block is /16 to /28"))
                }
                Ok(n) if vpc_cidrs.iter().any(|o: &Ipv4Net| o.contains(&n) || n.contains(o)) => {
                    bad.push(format!("vpc.cidrs[{i}] = {c:?}: overlaps another vpc.cidrs block"))
                }
                Ok(n) => {
                    if let Some(why) = vpc_cidrs.first().and_then(|p| secondary_cidr_refusal(p, &n)) {
                        bad.push(format!("vpc.cidrs[{i}] = {c:?}: {why}"));
                    }
                    vpc_cidrs.push(n);
                }
                Err(_) => bad.push(format!("vpc.cidrs[{i}] = {c:?}: not an IPv4 CIDR")),
            }
        }
        if raw_vpc.cidrs.is_empty() {
            bad.push("vpc.cidrs: at least one CIDR".into());
        }
        let mut subnets: Vec<SubnetSpec> = Vec::new();
        for (i, s) in raw.subnets.iter().enumerate() {
            let at = format!("subnets[{i}]");
            if let Some(id) = s.id.as_deref().filter(|id| !is_ec2_id("subnet", id)) {
                bad.push(format!("{at}.id = {id:?}: not a subnet id (subnet- and 8 or 17 hex digits)"));
            }
            if let Some(o) =
                s.id.as_deref().and_then(|id| subnets.iter().find(|o: &&SubnetSpec| o.id.as_deref() == Some(id)))
            {
                bad.push(format!("{at}.id = {:?}: also subnet {}'s", o.id.as_deref().unwrap_or_default(), o.name));
            }
            if !is_zone_name(&s.az) {
                bad.push(format!("{at}.az = {:?}: not an availability zone name (e.g. us-east-1a)", s.az));
            } else if !s.az.starts_with(region.as_str()) {
                bad.push(format!("{at}.az = {:?}: not in region {region:?}", s.az));
            }
            if let Some(n) = s.name.as_deref().filter(|n| n.len() > 255 || n.chars().any(char::is_control)) {
                bad.push(format!("{at}.name = {n:?}: at most 255 characters, none of them control characters"));
            }
            let cidr = match s.cidr.parse::<Ipv4Net>() {
                Ok(n) if n.trunc() != n => {
                    bad.push(format!("{at}.cidr = {:?}: host bits set", s.cidr));
                    continue;
                }
                Ok(n) if !(16..=28).contains(&n.prefix_len()) => {
                    bad.push(format!("{at}.cidr = {:?}: a subnet is /16 to /28", s.cidr));
                    continue;
                }
                Ok(n) => n,
                Err(_) => {
                    bad.push(format!("{at}.cidr = {:?}: not an IPv4 CIDR", s.cidr));
                    continue;
                }
            };
            if !vpc_cidrs.iter().any(|v| v.contains(&cidr)) {
                bad.push(format!("{at}.cidr = \"{cidr}\": not inside any vpc.cidrs block"));
            }
            if let Some(o) = subnets.iter().find(|o| o.cidr.contains(&cidr) || cidr.contains(&o.cidr)) {
                bad.push(format!("{at}.cidr = \"{cidr}\": overlaps subnet {}", o.name));
            }
            let capacity = (1u32 << (32 - u32::from(cidr.prefix_len()))) - 5;
            if s.used > capacity {
                bad.push(format!("{at}.used = {}: the subnet has only {capacity} usable addresses", s.used));
            }
            let pattern = match s.pattern.as_deref() {
                None | Some("random") => Pattern::Random,
                Some("packed") => Pattern::Packed,
                Some("striped") => Pattern::Striped,
                Some(p) => {
                    bad.push(format!("{at}.pattern = {p:?}: one of random, packed, striped"));
                    Pattern::Random
                }
            };
            let mut used_addresses = Vec::new();
            for (j, a) in s.used_addresses.iter().enumerate() {
                match a.parse::<Ipv4Addr>() {
                    Ok(ip) if cidr.contains(&ip) && aws_reserved(&cidr, ip) => bad.push(format!(
                        "{at}.used_addresses[{j}] = {a:?}: AWS reserves it (the first four and the last address of {cidr})"
                    )),
                    Ok(ip) if cidr.contains(&ip) => used_addresses.push(ip),
                    Ok(_) => bad.push(format!("{at}.used_addresses[{j}] = {a:?}: not inside {cidr}")),
                    Err(_) => bad.push(format!("{at}.used_addresses[{j}] = {a:?}: not an IPv4 address")),
                }
            }
            let mut reservations: Vec<Reservation> = Vec::new();
            for (j, r) in s.reservations.iter().enumerate() {
                let kind = match r.kind.as_str() {
                    "prefix" => ReservationKind::Prefix,
                    "explicit" => ReservationKind::Explicit,
                    k => {
                        bad.push(format!("{at}.reservations[{j}].type = {k:?}: prefix or explicit"));
                        continue;
                    }
                };
                match r.cidr.parse::<Ipv4Net>() {
                    Ok(n) if n.trunc() != n => bad.push(format!(
                        "{at}.reservations[{j}].cidr = {:?}: host bits set (did you mean {}?)",
                        r.cidr,
                        n.trunc()
                    )),
                    Ok(n) if !cidr.contains(&n) => {
                        bad.push(format!("{at}.reservations[{j}].cidr = {:?}: not inside {cidr}", r.cidr))
                    }
                    Ok(n) if reservations.iter().any(|o| o.cidr.contains(&n) || n.contains(&o.cidr)) => {
                        bad.push(format!("{at}.reservations[{j}].cidr = {:?}: overlaps another reservation", r.cidr))
                    }
                    Ok(n) => reservations.push(Reservation { cidr: n.trunc(), kind }),
                    Err(_) => bad.push(format!("{at}.reservations[{j}].cidr = {:?}: not an IPv4 CIDR", r.cidr)),
                }
            }
            subnets.push(SubnetSpec {
                id: s.id.clone(),
                name: s.name.clone().unwrap_or_else(|| cidr.to_string()),
                az: s.az.clone(),
                cidr,
                used: s.used,
                pattern,
                used_addresses,
                reservations,
            });
        }
        if raw.subnets.is_empty() {
            bad.push("subnets: at least one subnet".into());
        }
        let azs: Vec<String> = {
            let mut a: Vec<String> = subnets.iter().map(|s| s.az.clone()).collect();
            a.sort();
            a.dedup();
            a
        };
        let w = &raw.workload;
        let total_nodes: u32 = raw.node_groups.iter().map(|g| g.nodes.or(g.min).unwrap_or(0)).sum();
        let pods_per_node = match (w.pods_per_node, w.total_pods) {
            (Some(p), None) => p,
            (None, Some(t)) if total_nodes > 0 => t.div_ceil(total_nodes),
            (None, Some(_)) => 0,
            (Some(_), Some(_)) => {
                bad.push("workload: give pods_per_node or total_pods, not both".into());
                0
            }
            (None, None) => {
                bad.push("workload: give pods_per_node or total_pods".into());
                0
            }
        };
        if !(0.0..=60.0).contains(&w.churn_per_hour) {
            bad.push(format!(
                "workload.churn_per_hour = {}: a share of pods replaced per hour, 0 to 60",
                w.churn_per_hour
            ));
        }
        for (i, r) in w.rollouts.iter().enumerate() {
            if r.pods > MAX_PODS {
                bad.push(format!("workload.rollouts[{i}].pods = {}: at most {MAX_PODS}", r.pods));
            }
            if !(0.0..horizon_hours).contains(&r.at_hour) {
                bad.push(format!(
                    "workload.rollouts[{i}].at_hour = {}: outside the horizon of {horizon_hours} h",
                    r.at_hour
                ));
            }
        }
        let mut node_groups = Vec::new();
        for (i, g) in raw.node_groups.iter().enumerate() {
            let at = format!("node_groups[{i}]");
            let t = match Catalog::embedded().get(&g.instance_type) {
                Ok(t) => t,
                Err(e) => {
                    bad.push(format!("{at}.instance_type = {:?}: {e}", g.instance_type));
                    continue;
                }
            };
            let nodes = g.nodes.or(g.min).unwrap_or(0);
            if nodes == 0 && g.scale.is_empty() {
                bad.push(format!("{at}: give nodes (or min) above 0, or scale events"));
            }
            if let Some(m) = g.max.filter(|m| *m < nodes) {
                bad.push(format!("{at}.max = {m}: below nodes = {nodes}"));
            }
            if nodes > MAX_NODES || g.max.is_some_and(|m| m > MAX_NODES) {
                bad.push(format!("{at}: at most {MAX_NODES} nodes per group"));
            }
            let mut max = g.max.unwrap_or(nodes).max(nodes);
            for (j, s) in g.scale.iter().enumerate() {
                if !(0.0..horizon_hours).contains(&s.at_hour) {
                    bad.push(format!(
                        "{at}.scale[{j}].at_hour = {}: outside the horizon of {horizon_hours} h",
                        s.at_hour
                    ));
                }
                if let Some(m) = g.max.filter(|m| s.nodes > *m) {
                    bad.push(format!("{at}.scale[{j}].nodes = {}: above max = {m}", s.nodes));
                }
                if s.nodes > MAX_NODES {
                    bad.push(format!("{at}.scale[{j}].nodes = {}: at most {MAX_NODES}", s.nodes));
                }
                max = max.max(s.nodes.min(MAX_NODES));
            }
            let group_azs = g.azs.clone().unwrap_or_else(|| azs.clone());
            for (j, a) in group_azs.iter().enumerate() {
                if !azs.contains(a) {
                    bad.push(format!("{at}.azs[{j}] = {a:?}: no subnet in that AZ"));
                }
            }
            let mp = max_pods(t, &MaxPodsOptions::default());
            // kubelet's max pods counts host-network pods too (aws-node, kube-proxy).
            let need = pods_per_node.saturating_add(w.daemonset_pods).saturating_add(w.host_network_pods);
            if need > mp.max_pods {
                bad.push(format!(
                    "workload.pods_per_node = {pods_per_node} (+{} DaemonSet pods, +{} host-network pods): above {}'s max pods {}",
                    w.daemonset_pods, w.host_network_pods, t.name, mp.max_pods
                ));
            }
            node_groups.push(NodeGroup {
                name: g.name.clone().unwrap_or_else(|| format!("group-{i}")),
                instance_type: t,
                nodes,
                max,
                azs: group_azs,
                scale: g.scale.iter().map(|s| (s.at_hour, s.nodes)).collect(),
            });
        }
        if raw.node_groups.is_empty() {
            bad.push("node_groups: at least one node group".into());
        }
        // Bounds on the whole run, so nothing allocates without bound: the nodes of all groups,
        // and every pod start (each a record the simulation keeps).
        let all_nodes: u64 = node_groups.iter().map(|g| u64::from(g.max)).sum();
        if all_nodes > u64::from(MAX_NODES) {
            bad.push(format!("node_groups: their max adds up to {all_nodes} nodes; at most {MAX_NODES} in all"));
        }
        let per_node = u64::from(pods_per_node) + u64::from(w.daemonset_pods);
        let rollout_pods: u64 = w.rollouts.iter().map(|r| u64::from(r.pods)).sum();
        let starts = (all_nodes * per_node) as f64 * (1.0 + w.churn_per_hour.max(0.0) * horizon_hours.max(0.0))
            + rollout_pods as f64;
        if starts > MAX_POD_STARTS as f64 {
            bad.push(format!(
                "workload: about {:.0} pod starts ({all_nodes} nodes × {per_node} pods, churn {}/h over {horizon_hours} h, {rollout_pods} rollout pods); at most {MAX_POD_STARTS}: lower the churn, the horizon or the nodes",
                starts, w.churn_per_hour
            ));
        }
        let c = &raw.cni;
        // As aws-node's validateEnvVars: with prefix delegation, some warm target must ask for
        // addresses, or aws-node refuses to start (`vpc-cni-behaviour.md` §2.1).
        let (wp, wi, mi) =
            (c.warm_prefix_target.unwrap_or(1), c.warm_ip_target.unwrap_or(0), c.minimum_ip_target.unwrap_or(0));
        if c.prefix_delegation == Some(true) && wp == 0 && wi == 0 && mi == 0 {
            bad.push(
                "cni.warm_prefix_target = 0: with prefix_delegation, warm_prefix_target, warm_ip_target or \
                 minimum_ip_target must be above 0 (aws-node refuses to start otherwise)"
                    .into(),
            );
        }
        let t = &raw.traffic;
        for (name, v) in [
            ("traffic.egress_gb_per_hour", t.egress_gb_per_hour),
            ("traffic.nat_price_per_hour", t.nat_price_per_hour),
            ("traffic.nat_price_per_gb", t.nat_price_per_gb),
        ] {
            if let Some(v) = v.filter(|v| !(*v >= 0.0 && v.is_finite())) {
                bad.push(format!("{name} = {v}: must be 0 or more"));
            }
        }
        let destinations = match &t.destinations {
            Some(list) => {
                let mut out: Vec<Ipv4Net> = Vec::new();
                for (i, d) in list.iter().enumerate() {
                    match d.parse::<Ipv4Net>() {
                        Ok(n) if n.trunc() != n => bad.push(format!(
                            "traffic.destinations[{i}] = {d:?}: host bits set (did you mean {}?)",
                            n.trunc()
                        )),
                        Ok(n) if vpc_cidrs.iter().any(|v: &Ipv4Net| v.contains(&n)) => bad.push(format!(
                            "traffic.destinations[{i}] = {d:?}: inside the VPC, which its local route reaches"
                        )),
                        Ok(n) if out.contains(&n) => {
                            bad.push(format!("traffic.destinations[{i}] = {d:?}: given twice"))
                        }
                        Ok(n) => out.push(n),
                        Err(_) => bad.push(format!("traffic.destinations[{i}] = {d:?}: not an IPv4 CIDR")),
                    }
                }
                if list.is_empty() {
                    bad.push("traffic.destinations = []: at least one network, or leave it out".into());
                }
                out
            }
            None => default_destinations(&vpc_cidrs),
        };
        if !bad.is_empty() {
            return Err(ScenarioError(bad));
        }
        let tg = &raw.targets;
        let judge = Judge {
            max_wait_p99_s: tg.max_wait_p99_s.unwrap_or(30.0),
            max_throttled_share: tg.max_throttled_share.unwrap_or(0.05),
            nau_quota: tg.nau_quota.unwrap_or(64_000),
        };
        if !(judge.max_wait_p99_s > 0.0 && judge.max_wait_p99_s <= 3600.0) {
            bad.push(format!("targets.max_wait_p99_s = {}: seconds, above 0 and at most 3600", judge.max_wait_p99_s));
        }
        if !(0.0..=1.0).contains(&judge.max_throttled_share) {
            bad.push(format!("targets.max_throttled_share = {}: a share from 0 to 1", judge.max_throttled_share));
        }
        if !(1..=1_000_000).contains(&judge.nau_quota) {
            bad.push(format!("targets.nau_quota = {}: from 1 to 1000000", judge.nau_quota));
        }
        let podip_calls_per_second = raw.podip.ec2_calls_per_second;
        let most_nodes: u64 = node_groups.iter().map(|g| u64::from(g.max)).sum();
        if let Some(v) = podip_calls_per_second.filter(|v| !(v.is_finite() && (0.01..=1000.0).contains(v))) {
            bad.push(format!("podip.ec2_calls_per_second = {v}: calls a second, 0.01 to 1000"));
        } else if let Some(v) = podip_calls_per_second.filter(|v| v * 3600.0 < most_nodes as f64) {
            bad.push(format!(
                "podip.ec2_calls_per_second = {v}: less than one call an hour for each of the {most_nodes} nodes"
            ));
        }
        if !bad.is_empty() {
            return Err(ScenarioError(bad));
        }
        Ok(Scenario {
            import_notes,
            name: raw.name.unwrap_or_else(|| "scenario".into()),
            region,
            vpc_id: raw_vpc.id.clone(),
            seed: raw.seed.unwrap_or(1),
            horizon_hours,
            vpc_cidrs,
            subnets,
            node_groups,
            workload: Workload {
                pods_per_node,
                daemonset_pods: w.daemonset_pods,
                host_network_pods: w.host_network_pods,
                churn_per_hour: w.churn_per_hour,
                rollouts: w
                    .rollouts
                    .iter()
                    .map(|r| Rollout { at_hour: r.at_hour, pods: r.pods, minutes: r.minutes })
                    .collect(),
            },
            cni: CniInUse {
                warm_eni: c.warm_eni_target.unwrap_or(1),
                warm_ip: c.warm_ip_target.unwrap_or(0),
                minimum_ip: c.minimum_ip_target.unwrap_or(0),
                warm_prefix: c.warm_prefix_target,
                prefix_delegation: c.prefix_delegation.unwrap_or(false),
                cooldown_secs: c.ip_cooldown_period.unwrap_or(30),
            },
            traffic: Traffic {
                egress_gb_per_hour: t.egress_gb_per_hour.unwrap_or(0.0),
                connections_per_destination: t.connections_per_destination.unwrap_or(1000),
                nat_price_per_hour: t.nat_price_per_hour.unwrap_or(0.045),
                nat_price_per_gb: t.nat_price_per_gb.unwrap_or(0.045),
                destinations_given: t.destinations.is_some(),
                destinations,
            },
            headroom_nodes: raw.targets.headroom_nodes.unwrap_or(0),
            judge,
            podip_calls_per_second,
        })
    }

    /// The AZs with subnets, sorted.
    pub fn azs(&self) -> Vec<String> {
        let mut a: Vec<String> = self.subnets.iter().map(|s| s.az.clone()).collect();
        a.sort();
        a.dedup();
        a
    }

    /// Most nodes the cluster reaches.
    pub fn peak_nodes(&self) -> u32 {
        self.node_groups.iter().map(|g| g.max).sum()
    }
}

#[cfg(test)]
mod tests;
