//! Engine cases: `vpc-cni-behaviour.md` §8 table F (which calls a scale-up makes), table C #25–26
//! through a real decrease, back-off and release undo.

use super::*;
use crate::catalog::Catalog;
use crate::config::{EniTemplate, NodeSettings};
use std::net::Ipv4Addr;

fn cfg(s: NodeSettings) -> NodeConfig {
    let t = Catalog::embedded().get("m5.xlarge").unwrap(); // 4 ENIs, 15 IPv4 each: maxIPsPerENI 14
    NodeConfig::resolve(t, "subnet-node".into(), &s).unwrap()
}

fn primary(ips: &[&str]) -> EniInfo {
    EniInfo {
        id: "eni-primary".into(),
        device_index: 0,
        subnet: "subnet-node".into(),
        primary_ip: Ipv4Addr::new(10, 0, 0, 10),
        secondary_ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
        prefixes: vec![],
        v6_prefix: None,
    }
}

fn calls(effects: &[Effect]) -> Vec<(OpId, Call)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Call { op, call } => Some((*op, call.clone())),
            _ => None,
        })
        .collect()
}

fn err(code: &str) -> CallError {
    let kind = match code {
        "InsufficientFreeAddressesInSubnet" => ErrorKind::Capacity(Capacity::InsufficientFreeAddresses),
        "InsufficientCidrBlocks" => ErrorKind::Capacity(Capacity::InsufficientCidrBlocks),
        "InvalidNetworkInterfaceID.NotFound" => ErrorKind::NotFound,
        _ => ErrorKind::Transient,
    };
    CallError::new(kind, code, "")
}

fn create(subnet: &str, sgs: &[&str], ips: u32, prefixes: u32) -> Call {
    Call::CreateEni {
        subnet: subnet.into(),
        security_groups: sgs.iter().map(|s| s.to_string()).collect(),
        device_index: 1,
        secondary_ips: ips,
        prefixes,
    }
}

const T0: Time = Time::from_secs(100);

#[test]
fn f37_empty_datastore_creates_an_eni_with_a_full_set() {
    let mut e = Engine::new(cfg(NodeSettings::default()), &[], 1, T0).unwrap();
    let c = calls(&e.handle(T0, Event::Tick));
    let mut want = create("subnet-node", &[], 14, 0);
    if let Call::CreateEni { device_index, .. } = &mut want {
        *device_index = 0;
    }
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].1, want);
}

#[test]
fn f38_insufficient_on_primary_retries_with_one_then_new_eni() {
    let s = NodeSettings { subnet_discovery: true, ..NodeSettings::default() };
    let mut e = Engine::new(cfg(s), &[primary(&[])], 1, T0).unwrap();
    let c = calls(&e.handle(T0, Event::Tick));
    assert_eq!(c[0].1, Call::AssignIps { eni: "eni-primary".into(), count: 14 });
    let c = calls(&e.handle(T0, Event::CallDone { op: c[0].0, result: Err(err("InsufficientFreeAddressesInSubnet")) }));
    assert_eq!(c[0].1, Call::AssignIps { eni: "eni-primary".into(), count: 1 });
    let c = calls(&e.handle(T0, Event::CallDone { op: c[0].0, result: Err(err("InsufficientFreeAddressesInSubnet")) }));
    assert_eq!(c[0].1, create("subnet-node", &[], 14, 0));
}

#[test]
fn without_subnet_discovery_insufficient_starts_a_120s_backoff() {
    let mut e = Engine::new(cfg(NodeSettings::default()), &[primary(&[])], 1, T0).unwrap();
    let c = calls(&e.handle(T0, Event::Tick));
    let c = calls(&e.handle(T0, Event::CallDone { op: c[0].0, result: Err(err("InsufficientFreeAddressesInSubnet")) }));
    let done = e.handle(T0, Event::CallDone { op: c[0].0, result: Err(err("InsufficientFreeAddressesInSubnet")) });
    assert!(calls(&done).is_empty());
    assert!(e.in_backoff(T0 + std::time::Duration::from_secs(119)));
    assert!(calls(&e.handle(T0 + std::time::Duration::from_secs(119), Event::Tick)).is_empty());
    let later = calls(&e.handle(T0 + std::time::Duration::from_secs(120), Event::Tick));
    assert_eq!(later[0].1, Call::AssignIps { eni: "eni-primary".into(), count: 14 });
}

fn custom() -> NodeSettings {
    NodeSettings {
        custom_networking: Some(EniTemplate {
            subnet: "subnet1".into(),
            security_groups: vec!["sg1-id".into(), "sg2-id".into()],
        }),
        ..NodeSettings::default()
    }
}

#[test]
fn f39_custom_networking_creates_in_the_eniconfig_subnet_and_skips_primary() {
    let mut e = Engine::new(cfg(custom()), &[primary(&[])], 1, T0).unwrap();
    let c = calls(&e.handle(T0, Event::Tick));
    assert_eq!(c[0].1, create("subnet1", &["sg1-id", "sg2-id"], 14, 0));
}

#[test]
fn f40_unschedulable_node_allocates_nothing_unless_told_to() {
    let mut e = Engine::new(cfg(custom()), &[primary(&[])], 1, T0).unwrap();
    e.handle(T0, Event::Schedulable(false));
    assert!(calls(&e.handle(T0, Event::Tick)).is_empty());
    let mut s = custom();
    s.manage_enis_non_schedulable = true;
    let mut e = Engine::new(cfg(s), &[primary(&[])], 1, T0).unwrap();
    e.handle(T0, Event::Schedulable(false));
    assert_eq!(calls(&e.handle(T0, Event::Tick)).len(), 1);
}

#[test]
fn f41_prefix_mode_empty_datastore_creates_eni_with_one_prefix() {
    let s = NodeSettings { prefix_delegation: true, ..NodeSettings::default() };
    let mut e = Engine::new(cfg(s), &[], 1, T0).unwrap();
    let c = calls(&e.handle(T0, Event::Tick));
    let Call::CreateEni { secondary_ips, prefixes, .. } = &c[0].1 else { panic!("{c:?}") };
    assert_eq!((*secondary_ips, *prefixes), (0, 1));
}

#[test]
fn f42_warm_ip_target_sizes_the_new_eni() {
    let s = NodeSettings { warm_ip: 3, ..NodeSettings::default() };
    let mut e = Engine::new(cfg(s), &[], 1, T0).unwrap();
    let c = calls(&e.handle(T0, Event::Tick));
    let Call::CreateEni { secondary_ips, .. } = &c[0].1 else { panic!("{c:?}") };
    assert_eq!(*secondary_ips, 3);
}

/// Table C #25–26 (`TestDecreaseIPPool`): 2 ENIs x 2 IPs, one pod on each, WARM_IP 1.
#[test]
fn c25_decrease_frees_exactly_one_ip_then_nothing() {
    let s = NodeSettings { warm_ip: 1, corrected: false, ..NodeSettings::default() };
    let mut second = primary(&["10.0.1.5", "10.0.1.6"]);
    second.id = "eni-2".into();
    second.device_index = 1;
    let mut e = Engine::new(cfg(s), &[primary(&["10.0.0.5", "10.0.0.6"]), second], 1, T0).unwrap();
    // Put one pod on each ENI by filling and releasing.
    for i in 0..4 {
        e.handle(T0, Event::PodAdd(PodKey::new(format!("p{i}"))));
    }
    let addrs: Vec<_> = e.datastore().pods().map(|(k, a)| (k.clone(), *a)).collect();
    let mut kept_on = std::collections::HashSet::new();
    for (k, a) in addrs {
        let on = if a.to_string().starts_with("10.0.0.") { "p" } else { "s" };
        if !kept_on.insert(on) {
            e.handle(T0, Event::PodDel(k));
        }
    }
    let now = T0 + std::time::Duration::from_secs(60); // past cooldown
    assert_eq!(e.stats(now).total, 4);
    let c = calls(&e.handle(now, Event::Tick));
    let unassigns: Vec<_> = c.iter().filter(|(_, c)| matches!(c, Call::UnassignIps { .. })).collect();
    assert_eq!(unassigns.len(), 1);
    let Call::UnassignIps { ips, .. } = &unassigns[0].1 else { unreachable!() };
    assert_eq!(ips.len(), 1);
    for (op, _) in &c {
        e.handle(now, Event::CallDone { op: *op, result: Ok(CallOutput::Done) });
    }
    let s = e.stats(now);
    assert_eq!((s.total, s.assigned), (3, 2));
    let later = now + std::time::Duration::from_secs(31);
    assert!(calls(&e.handle(later, Event::Tick)).iter().all(|(_, c)| !matches!(c, Call::UnassignIps { .. })));
}

#[test]
fn failed_release_is_undone() {
    let s = NodeSettings { warm_ip: 1, ..NodeSettings::default() };
    let mut e = Engine::new(cfg(s), &[primary(&["10.0.0.5", "10.0.0.6", "10.0.0.7"])], 1, T0).unwrap();
    let c = calls(&e.handle(T0, Event::Tick));
    assert!(matches!(&c[0].1, Call::UnassignIps { ips, .. } if ips.len() == 2), "{c:?}");
    assert_eq!(e.stats(T0).total, 1, "releasing blocks are not counted");
    e.handle(T0, Event::CallDone { op: c[0].0, result: Err(err("RequestLimitExceeded")) });
    assert_eq!(e.stats(T0).total, 3, "a failed release puts the blocks back");
}

#[test]
fn cooling_addresses_are_never_released_when_corrected() {
    let s = NodeSettings { warm_ip: 1, ..NodeSettings::default() };
    let mut e = Engine::new(cfg(s), &[primary(&["10.0.0.5", "10.0.0.6", "10.0.0.7"])], 1, T0).unwrap();
    let k = PodKey::new("a");
    e.handle(T0, Event::PodAdd(k.clone()));
    e.handle(T0, Event::PodDel(k));
    let c = calls(&e.handle(T0, Event::Tick));
    // Two addresses are free and one cooling: WARM_IP 1 wants one released, never the cooling one.
    let Call::UnassignIps { ips, .. } = &c[0].1 else { panic!("{c:?}") };
    assert_eq!(ips.len(), 1);
    let cooling = e.datastore().enis()[0].cidrs.iter().find(|c| c.cooling(T0) > 0).unwrap().net.addr();
    assert!(!ips.contains(&cooling));
}

#[test]
fn pod_add_is_idempotent_and_del_of_unknown_pod_is_ok() {
    let mut e = Engine::new(cfg(NodeSettings::default()), &[primary(&["10.0.0.5"])], 1, T0).unwrap();
    let k = PodKey::new("a");
    let a = e.handle(T0, Event::PodAdd(k.clone()));
    let b = e.handle(T0, Event::PodAdd(k.clone()));
    assert_eq!(a, b);
    let r = e.handle(T0, Event::PodDel(PodKey::new("nobody")));
    assert_eq!(r, vec![Effect::PodReleased { key: PodKey::new("nobody"), addr: None }]);
    let full = e.handle(T0, Event::PodAdd(PodKey::new("b")));
    assert_eq!(full, vec![Effect::PodRejected { key: PodKey::new("b"), reason: Reject::PoolExhausted }]);
}

#[test]
fn no_cycle_starts_while_a_call_is_in_flight() {
    let mut e = Engine::new(cfg(NodeSettings::default()), &[primary(&[])], 1, T0).unwrap();
    assert_eq!(calls(&e.handle(T0, Event::Tick)).len(), 1);
    assert!(calls(&e.handle(T0 + std::time::Duration::from_secs(5), Event::Tick)).is_empty());
    assert_eq!(e.in_flight(), 1);
}
