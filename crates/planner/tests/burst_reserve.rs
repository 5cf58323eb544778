//! The adaptive policy's burst reserve on the simulated VPC: a young node keeps half an ENI's
//! addresses spare for the first burst it has not seen (a rollout starts with no EC2 call and no
//! wait), hands nothing back meanwhile, and lets the reserve go once a burst has used it or its
//! hold window has passed; with prefixes it keeps none.

mod common;

use cloud::Action;
use cloud::sim::SimParams;
use ipam::addr::PodKey;
use ipam::config::{NodeSettings, PoolPolicyChoice};
use ipam::demand::{RATE_WINDOW, SHRINK_HOLD_MAX};
use std::time::Duration;

fn adaptive(prefixes: bool) -> NodeSettings {
    NodeSettings {
        warm_eni: 0,
        prefix_delegation: prefixes,
        warm_prefix: prefixes.then_some(0),
        pool_policy: PoolPolicyChoice::Adaptive { misses_per_million: 10_000 },
        ..NodeSettings::default()
    }
}

fn assigns(w: &common::World) -> u64 {
    w.vpc.action_stats().get(&Action::AssignPrivateIpAddresses).map_or(0, |s| s.calls)
}

fn unassigns(w: &common::World) -> u64 {
    w.vpc.action_stats().get(&Action::UnassignPrivateIpAddresses).map_or(0, |s| s.calls)
}

/// Starts pods `from..to`, each without waiting.
fn start(w: &mut common::World, from: u32, to: u32) {
    for i in from..to {
        let (_, waited) = w
            .node
            .add_pod(&mut w.vpc, &PodKey::new(format!("p{i}")), Duration::from_secs(60))
            .unwrap()
            .expect("an address");
        assert_eq!(waited, Duration::ZERO, "pod {i} waited");
    }
}

/// Runs the node for `d`.
fn run(w: &mut common::World, d: Duration) {
    let until = w.node.now() + d;
    while w.node.step(&mut w.vpc, until).unwrap() {
        common::check(w).unwrap();
    }
}

fn spare(w: &common::World) -> u64 {
    let s = w.node.engine().stats(w.node.now());
    s.total - s.assigned - s.cooling
}

/// A node of `pods` steady pods, booted and quiet for `quiet`.
fn booted(prefixes: bool, pods: u32, quiet: Duration) -> common::World {
    // m5.xlarge: 4 ENIs x 14 secondary addresses; the reserve is 7.
    let mut w = common::world("m5.xlarge", &adaptive(prefixes), false, SimParams { seed: 5, ..SimParams::default() })
        .expect("a node");
    w.node.settle(&mut w.vpc).unwrap();
    for i in 0..pods {
        w.node
            .add_pod(&mut w.vpc, &PodKey::new(format!("p{i}")), Duration::from_secs(60))
            .unwrap()
            .expect("an address");
    }
    run(&mut w, RATE_WINDOW + quiet);
    w
}

#[test]
fn a_young_node_starts_its_first_burst_from_its_reserve_without_a_call() {
    let mut w = booted(false, 20, Duration::from_secs(3600));
    assert!(spare(&w) >= 7, "a reserve of half an ENI: {} spare", spare(&w));
    let before = assigns(&w);
    // A rollout's share: five pods at once, all from the reserve, and no call meanwhile.
    start(&mut w, 20, 25);
    assert_eq!(assigns(&w), before, "no EC2 call for the burst");
    // The burst used the reserve up: the pool does not make a new reserve over the burst (the
    // hold keeps the burst's size instead), though the node is still young.
    run(&mut w, Duration::from_secs(600));
    let s = w.node.engine().stats(w.node.now());
    assert!(s.total < 25 + 7, "a new reserve over the burst: {s:?}");
    // Once its pods are gone and the hold window has passed, the pool goes back to its pods
    // plus a refill's margin.
    for i in 20..25 {
        w.node.del_pod(&PodKey::new(format!("p{i}")));
    }
    run(&mut w, SHRINK_HOLD_MAX + Duration::from_secs(600));
    assert!(spare(&w) < 7, "the reserve is not kept after a burst used it: {} spare", spare(&w));
}

#[test]
fn a_young_node_hands_nothing_back_and_lets_an_unused_reserve_go_after_its_hold_window() {
    let mut w = booted(false, 20, Duration::from_secs(600));
    // Half its pods leave: a young node keeps their addresses (the day's peak is not known yet).
    for i in 0..10 {
        w.node.del_pod(&PodKey::new(format!("p{i}")));
    }
    run(&mut w, Duration::from_secs(3 * 3600));
    assert_eq!(unassigns(&w), 0, "nothing handed back while young");
    assert!(spare(&w) >= 17, "{} spare", spare(&w));
    // Past its hold window, with no burst seen, the reserve and the leavers' addresses go.
    run(&mut w, SHRINK_HOLD_MAX);
    assert!(unassigns(&w) > 0);
    assert!(spare(&w) < 7, "{} spare", spare(&w));
}

#[test]
fn with_prefixes_there_is_no_reserve_beyond_the_prefix() {
    let w = booted(true, 25, Duration::from_secs(3600));
    // 25 pods on /28s: two prefixes (32 addresses), the growth unit's own spare; a reserve of
    // half a prefix would take a third.
    let s = w.node.engine().stats(w.node.now());
    assert!(s.total <= 32, "{s:?}");
}

#[test]
fn warm_ip_target_caps_a_young_nodes_reserve_and_what_it_keeps() {
    let settings = NodeSettings { warm_ip: 3, ..adaptive(false) };
    let mut w =
        common::world("m5.xlarge", &settings, false, SimParams { seed: 5, ..SimParams::default() }).expect("a node");
    w.node.settle(&mut w.vpc).unwrap();
    for i in 0..20 {
        w.node
            .add_pod(&mut w.vpc, &PodKey::new(format!("p{i}")), Duration::from_secs(60))
            .unwrap()
            .expect("an address");
    }
    run(&mut w, RATE_WINDOW + Duration::from_secs(600));
    assert!(spare(&w) <= 3 + 2, "the reserve is capped at WARM_IP_TARGET: {} spare", spare(&w));
    // Half the pods leave: a young node under a ceiling hands back what is over it.
    for i in 0..10 {
        w.node.del_pod(&PodKey::new(format!("p{i}")));
    }
    run(&mut w, Duration::from_secs(1800));
    assert!(unassigns(&w) > 0, "nothing handed back under WARM_IP_TARGET=3");
    assert!(spare(&w) <= 3 + 2, "{} spare", spare(&w));
}
