//! Prefix delegation on a fragmented subnet (every /28 holds some other workload's address, so
//! EC2 answers `InsufficientCidrBlocks`): with podip's fallback, pods keep starting on secondary
//! addresses of the same ENIs; once a /28 is freed, prefixes come back and the fallback addresses
//! go back to EC2 as their pods leave. Without it (the VPC CNI's behaviour) no pod starts.

mod common;

use cloud::sim::{SimParams, SimVpc};
use ipam::Time;
use ipam::addr::{PodKey, SubnetId};
use ipam::catalog::Catalog;
use ipam::config::{NodeConfig, NodeSettings, PoolPolicyChoice};
use ipam::datastore::Packing;
use ipnet::Ipv4Net;
use planner::node::NodeSim;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

const SUBNET: &str = "10.0.0.0/22";

/// A VPC whose node subnet has one foreign address in every /28.
fn fragmented() -> (SimVpc, SubnetId) {
    let mut vpc = SimVpc::new(SimParams { seed: 3, ..SimParams::default() });
    vpc.add_vpc_cidr("10.0.0.0/16".parse().unwrap()).unwrap();
    let id = vpc.add_subnet("az1", SUBNET.parse().unwrap()).unwrap();
    let s = vpc.subnet_mut(&id).unwrap();
    for block in 0..64u32 {
        // The fifth address of each block (the first four and the last of the subnet are EC2's).
        assert!(s.occupy(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 0)) + block * 16 + 5)));
    }
    assert_eq!(s.free_prefixes(), 0);
    (vpc, id)
}

fn node(vpc: &mut SimVpc, subnet: SubnetId, fallback: bool) -> (NodeSim, NodeConfig) {
    let t = Catalog::embedded().get("m5.large").unwrap();
    let settings = NodeSettings {
        prefix_delegation: true,
        warm_prefix: Some(0),
        warm_eni: 0,
        corrected: true,
        packing: Some(Packing::Dense),
        pool_policy: PoolPolicyChoice::Adaptive { misses_per_million: 10_000 },
        prefix_fallback: fallback,
        ..NodeSettings::default()
    };
    let cfg = NodeConfig::resolve(t, subnet, &settings).unwrap();
    (NodeSim::launch(vpc, t, cfg.clone(), 3, Time::ZERO).unwrap(), cfg)
}

fn key(i: u32) -> PodKey {
    PodKey::new(format!("p{i}"))
}

fn check(vpc: &SimVpc, n: &NodeSim, cfg: &NodeConfig) {
    assert!(vpc.check_invariants().is_empty(), "{:?}", vpc.check_invariants());
    common::check_node(vpc, n, cfg.limits.max_enis, cfg.limits.blocks_per_eni).unwrap();
}

/// Prefixes and single addresses the node holds, as EC2 has them.
fn held(vpc: &SimVpc, n: &NodeSim) -> (Vec<Ipv4Net>, Vec<Ipv4Addr>) {
    let mut prefixes = Vec::new();
    let mut ips = Vec::new();
    for e in n.engine().datastore().enis() {
        if let Some(truth) = vpc.peek_eni(&e.id) {
            prefixes.extend(truth.prefixes.iter().copied());
            ips.extend(truth.secondary_ips.iter().copied());
        }
    }
    (prefixes, ips)
}

#[test]
fn pods_keep_starting_on_secondary_addresses_and_prefixes_return_once_a_28_is_free() {
    let (mut vpc, subnet) = fragmented();
    let (mut n, cfg) = node(&mut vpc, subnet.clone(), true);
    n.settle(&mut vpc).unwrap();
    // 20 pods, each within seconds of an ENI attach (the VPC CNI's back-off alone is 120 s).
    let mut addrs = Vec::new();
    for i in 0..20 {
        let (addr, waited) = n.add_pod(&mut vpc, &key(i), Duration::from_secs(60)).unwrap().expect("pod started");
        assert!(waited < Duration::from_secs(30), "pod {i} waited {waited:?}");
        addrs.push(addr);
        check(&vpc, &n, &cfg);
    }
    assert!(n.engine().counters().prefix_fallbacks > 0);
    let (prefixes, ips) = held(&vpc, &n);
    assert!(prefixes.is_empty(), "no /28 was free: {prefixes:?}");
    assert!(ips.len() >= 20, "{} secondary addresses", ips.len());

    // The other workload leaves one aligned /28 (one the node took no address from).
    let sub = vpc.subnet(&subnet).unwrap();
    let b = (1..63u32)
        .find(|b| (0..16).filter(|o| *o != 5).all(|o| !sub.is_used(b * 16 + o)))
        .expect("a /28 holding only the foreign address");
    let (block, foreign) = (Ipv4Net::new(sub.addr(b * 16), 28).unwrap(), sub.addr(b * 16 + 5));
    assert!(vpc.subnet_mut(&subnet).unwrap().vacate(foreign));
    assert_eq!(vpc.subnet(&subnet).unwrap().free_prefixes(), 1);
    // Past the fallback window (it doubles with each refusal in a row, up to an hour), the next
    // growth asks for a prefix again and gets it.
    let later = n.now() + ipam::engine::NO_PREFIX_MAX + Duration::from_secs(10);
    while n.step(&mut vpc, later).unwrap() {}
    let mut i = 20;
    while held(&vpc, &n).0.is_empty() && i < 60 {
        let r = n.add_pod(&mut vpc, &key(i), Duration::from_secs(60)).unwrap();
        assert!(
            r.is_some(),
            "pod {i} did not start: {:?} {:?} {:?}",
            n.engine().stats(n.now()),
            held(&vpc, &n),
            n.engine().counters()
        );
        check(&vpc, &n, &cfg);
        i += 1;
    }
    let (prefixes, _) = held(&vpc, &n);
    assert_eq!(prefixes, vec![block], "the freed /28 came back as a prefix");

    // The fallback pods leave: once the pool's hold on its peak has passed, their addresses go
    // back to EC2; the prefix stays.
    for (j, a) in addrs.iter().enumerate() {
        assert_eq!(n.del_pod(&key(j as u32)), Some(*a));
    }
    let until = n.now() + ipam::demand::SHRINK_HOLD_MAX + Duration::from_secs(600);
    while n.step(&mut vpc, until).unwrap() {
        check(&vpc, &n, &cfg);
    }
    let (prefixes, ips) = held(&vpc, &n);
    assert_eq!(prefixes, vec![block]);
    let on_singles =
        n.engine().datastore().pods().filter(|(_, a)| matches!(a, IpAddr::V4(v) if !block.contains(v))).count();
    assert!(ips.len() <= on_singles + 2, "{} fallback addresses kept for {on_singles} pods on them", ips.len());
}

#[test]
fn without_the_fallback_no_pod_starts_on_a_fragmented_subnet() {
    let (mut vpc, subnet) = fragmented();
    let (mut n, _) = node(&mut vpc, subnet, false);
    n.settle(&mut vpc).unwrap();
    assert!(n.add_pod(&mut vpc, &key(0), Duration::from_secs(60)).unwrap().is_none());
    assert_eq!(n.engine().counters().prefix_fallbacks, 0);
}
