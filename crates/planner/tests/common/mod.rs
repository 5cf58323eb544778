//! What the engine property tests share: a node on a simulated VPC, and the invariants that
//! must hold at every instant.
#![allow(dead_code)]

use cloud::sim::{SimParams, SimVpc};
use ipam::Time;
use ipam::addr::host_net;
use ipam::catalog::Catalog;
use ipam::config::{EniTemplate, NodeConfig, NodeSettings};
use planner::node::NodeSim;
use proptest::prelude::*;
use std::collections::{BTreeSet, HashSet};
use std::net::IpAddr;

pub struct World {
    pub vpc: SimVpc,
    pub node: NodeSim,
    pub max_pods: u32,
    pub max_enis: u32,
    pub per_eni: u32,
}

/// A node of `instance_type` with `settings` (custom networking when `custom`) on a fresh VPC.
pub fn world(instance_type: &str, settings: &NodeSettings, custom: bool, params: SimParams) -> Option<World> {
    let t = Catalog::embedded().get(instance_type).unwrap();
    let seed = params.seed;
    let mut vpc = SimVpc::new(params);
    vpc.add_vpc_cidr("10.0.0.0/16".parse().unwrap()).unwrap();
    vpc.add_vpc_cidr("100.64.0.0/16".parse().unwrap()).unwrap();
    let node_subnet = vpc.add_subnet("az1", "10.0.0.0/22".parse().unwrap()).unwrap();
    let pod_subnet = vpc.add_subnet("az1", "100.64.0.0/22".parse().unwrap()).unwrap();
    let mut settings = settings.clone();
    if custom {
        settings.custom_networking = Some(EniTemplate { subnet: pod_subnet, security_groups: vec![] });
    }
    let cfg = NodeConfig::resolve(t, node_subnet, &settings).ok()?;
    let (max_pods, max_enis, per_eni) = (cfg.limits.max_pods, cfg.limits.max_enis, cfg.limits.blocks_per_eni);
    let node = NodeSim::launch(&mut vpc, t, cfg, seed, Time::ZERO).ok()?;
    Some(World { vpc, node, max_pods, max_enis, per_eni })
}

/// Every invariant that must hold at any instant.
pub fn check(w: &World) -> Result<(), TestCaseError> {
    let bad = w.vpc.check_invariants();
    prop_assert!(bad.is_empty(), "VPC invariants: {:?}", bad);
    check_node(&w.vpc, &w.node, w.max_enis, w.per_eni)
}

/// What must hold of one node on `vpc` at any instant: no address held by two of its pods, its
/// usable blocks on its own ENIs in EC2, every pod address on the pod's ENI in EC2.
pub fn check_node(vpc: &SimVpc, node: &NodeSim, max_enis: u32, per_eni: u32) -> Result<(), TestCaseError> {
    struct W<'a> {
        vpc: &'a SimVpc,
        max_enis: u32,
        per_eni: u32,
    }
    let w = W { vpc, max_enis, per_eni };
    let ds = node.engine().datastore();
    // No address held by two pods.
    let mut seen = HashSet::new();
    for (k, a) in ds.pods() {
        prop_assert!(seen.insert(*a), "{} held twice (second: {})", a, k);
    }
    prop_assert!(ds.enis().len() as u32 <= w.max_enis, "{} ENIs > {}", ds.enis().len(), w.max_enis);
    let subnets: Vec<_> = w.vpc.subnets().to_vec();
    for e in ds.enis() {
        prop_assert!(e.block_count() <= w.per_eni, "{}: {} blocks > {}", e.id, e.block_count(), w.per_eni);
        let truth = w.vpc.peek_eni(&e.id);
        prop_assert!(truth.is_some() || e.releasing, "{} unknown to EC2", e.id);
        let Some(truth) = truth else { continue };
        let here = truth.attachment.as_ref().is_some_and(|(i, _)| i == node.instance());
        prop_assert!(here || e.releasing, "{} is not attached to {} in EC2", e.id, node.instance());
        let real: BTreeSet<_> =
            truth.secondary_ips.iter().map(|ip| host_net(*ip)).chain(truth.prefixes.iter().copied()).collect();
        let subnet = subnets.iter().find(|s| s.id == e.subnet).unwrap();
        for c in e.cidrs.iter().filter(|c| !c.releasing) {
            prop_assert!(real.contains(&c.net), "{}: {} not on the ENI in EC2", e.id, c.net);
            prop_assert!(subnet.cidr.contains(&c.net), "{} outside {}", c.net, subnet.cidr);
            if c.is_prefix {
                prop_assert!(ipam::addr::is_aligned_prefix(&c.net));
            }
        }
    }
    // Every pod address lies in a block EC2 really gave this node.
    for (k, a) in ds.pods() {
        let IpAddr::V4(ip) = a else { continue };
        let owner = ds.enis().iter().find(|e| e.cidrs.iter().any(|c| c.net.contains(ip)));
        prop_assert!(owner.is_some(), "{}'s address {} is in no block", k, a);
        let truth = w.vpc.peek_eni(&owner.unwrap().id).unwrap();
        let real = truth.secondary_ips.contains(ip) || truth.prefixes.iter().any(|p| p.contains(ip));
        prop_assert!(real, "{}'s address {} is not on its ENI in EC2", k, a);
    }
    Ok(())
}

/// One step of a random pod sequence.
#[derive(Clone, Debug)]
pub enum Op {
    /// A pod of this number asks for an address (skipped if it has one, or the node is full).
    Add(u32),
    /// That pod goes.
    Del(u32),
    /// Time passes, in seconds.
    Wait(u64),
}

/// Random steps over `pods` pod numbers and waits of up to `max_wait` seconds.
pub fn op(pods: u32, max_wait: u64) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..pods).prop_map(Op::Add),
        3 => (0..pods).prop_map(Op::Del),
        1 => (0..max_wait).prop_map(Op::Wait),
    ]
}

/// Carries out `op` on the node (pods patient for 30 s), keeping `live` (the pods holding an
/// address) and checking every invariant at every step.
pub fn apply(w: &mut World, op: Op, live: &mut BTreeSet<u32>) -> Result<(), TestCaseError> {
    match op {
        Op::Add(i) => {
            if live.contains(&i) || live.len() as u32 >= w.max_pods {
                return Ok(());
            }
            let key = ipam::addr::PodKey::new(format!("p{i}"));
            if w.node.add_pod(&mut w.vpc, &key, std::time::Duration::from_secs(30)).unwrap().is_some() {
                live.insert(i);
            }
        }
        Op::Del(i) => {
            let released = w.node.del_pod(&ipam::addr::PodKey::new(format!("p{i}")));
            prop_assert_eq!(released.is_some(), live.remove(&i));
        }
        Op::Wait(secs) => {
            let until = w.node.now() + std::time::Duration::from_secs(secs);
            while w.node.step(&mut w.vpc, until).unwrap() {
                check(w)?;
            }
        }
    }
    check(w)
}
