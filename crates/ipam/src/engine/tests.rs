//! Engine cases: `vpc-cni-behaviour.md` §8 table F (which calls a scale-up makes), table C #25–26
//! through a real decrease, back-off and release undo.

use super::*;
use crate::addr::EniId;
use crate::call::NodeEnis;
use crate::catalog::Catalog;
use crate::config::{EniTemplate, NodeSettings};
use std::net::{IpAddr, Ipv4Addr};

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

/// A describe's answer: these ENIs attached, nothing else.
fn ec2_shows(managed: Vec<EniInfo>) -> Result<CallOutput, CallError> {
    Ok(CallOutput::Enis(NodeEnis { managed, ..NodeEnis::default() }))
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
        "RequestLimitExceeded" => ErrorKind::Throttled,
        "PrivateIpAddressLimitExceeded" => ErrorKind::Capacity(Capacity::AddressLimit),
        "AttachmentLimitExceeded" => ErrorKind::Capacity(Capacity::AttachmentLimit),
        "InvalidNetworkInterface.InUse" => ErrorKind::Conflict,
        "UnauthorizedOperation" => ErrorKind::Permanent,
        _ => ErrorKind::Transient,
    };
    CallError::new(kind, code, "")
}

fn create(subnet: &str, sgs: &[&str], ips: u32, prefixes: u32) -> Call {
    Call::CreateEni {
        subnet: subnet.into(),
        discover_in: None,
        avoid: vec![],
        security_groups: sgs.iter().map(|s| s.to_string()).collect(),
        secondary_ips: ips,
        prefixes,
    }
}

const T0: Time = Time::from_secs(100);

#[test]
fn f37_empty_datastore_creates_an_eni_with_a_full_set() {
    let mut e = Engine::new(cfg(NodeSettings::default()), &[], 1, T0).unwrap();
    let c = calls(&e.handle(T0, Event::Tick));
    let want = create("subnet-node", &[], 14, 0);
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
    let s = NodeSettings { subnet_discovery: false, ..NodeSettings::default() };
    let mut e = Engine::new(cfg(s), &[primary(&[])], 1, T0).unwrap();
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

// ---- Recovery from EC2's errors (issue: no livelock, no leak) ----

fn housekeeping() -> NodeSettings {
    NodeSettings { housekeeping: crate::config::Housekeeping::daemon(), ..NodeSettings::default() }
}

/// Runs ticks every 5 s for `secs`, answering every call with `answer`; returns the calls made.
fn drive(e: &mut Engine, from: Time, secs: u64, answer: &dyn Fn(&Call) -> Result<CallOutput, CallError>) -> Vec<Call> {
    let mut made = Vec::new();
    let mut t = from;
    while t < from + std::time::Duration::from_secs(secs) {
        let mut queue = calls(&e.handle(t, Event::Tick));
        while let Some((op, call)) = queue.pop() {
            made.push(call.clone());
            queue.extend(calls(&e.handle(t, Event::CallDone { op, result: answer(&call) })));
        }
        t = t + std::time::Duration::from_secs(5);
    }
    made
}

fn mutating(c: &[Call]) -> usize {
    c.iter().filter(|c| !matches!(c, Call::Describe | Call::ListUnattached)).count()
}

#[test]
fn an_eni_ec2_calls_full_is_read_back_and_left_for_a_new_eni() {
    // Before: the same assign on the same ENI every 5 s forever, never a new ENI.
    let mut e = Engine::new(cfg(NodeSettings::default()), &[primary(&[])], 1, T0).unwrap();
    let made = drive(&mut e, T0, 300, &|c| match c {
        Call::AssignIps { eni, .. } if eni.0 == "eni-primary" => Err(err("PrivateIpAddressLimitExceeded")),
        Call::AssignIps { .. } => Err(err("UnauthorizedOperation")),
        Call::Describe => ec2_shows(vec![primary(&[])]),
        Call::CreateEni { .. } => Ok(CallOutput::Eni(EniInfo {
            id: "eni-new".into(),
            device_index: 0,
            subnet: "subnet-node".into(),
            primary_ip: Ipv4Addr::new(10, 0, 0, 20),
            secondary_ips: vec![],
            prefixes: vec![],
            v6_prefix: None,
        })),
        _ => Ok(CallOutput::Done),
    });
    let on_primary = made.iter().filter(|c| matches!(c, Call::AssignIps { eni, .. } if eni.0 == "eni-primary")).count();
    assert_eq!(on_primary, 1, "EC2's limit is believed: {made:?}");
    let i_describe = made.iter().position(|c| matches!(c, Call::Describe)).expect("a reconcile");
    let i_create = made.iter().position(|c| matches!(c, Call::CreateEni { .. })).expect("a new ENI");
    assert!(i_describe < i_create, "{made:?}");
    assert!(made.iter().any(|c| matches!(c, Call::AttachEni { device_index: 1, .. })), "{made:?}");
}

#[test]
fn an_instance_ec2_calls_full_gets_no_more_enis_and_each_failed_one_is_deleted() {
    // Before: create, fail to attach, delete, every 5 s.
    let mut e = Engine::new(cfg(NodeSettings::default()), &[primary(&["10.0.0.5"])], 1, T0).unwrap();
    e.handle(T0, Event::PodAdd(PodKey::new("a")));
    let mut n = 0;
    let made = drive(&mut e, T0, 590, &|c| match c {
        Call::AssignIps { .. } => Err(err("PrivateIpAddressLimitExceeded")),
        Call::CreateEni { .. } => Ok(CallOutput::Eni(EniInfo {
            id: "eni-x".into(),
            device_index: 0,
            subnet: "subnet-node".into(),
            primary_ip: Ipv4Addr::new(10, 0, 0, 21),
            secondary_ips: vec![],
            prefixes: vec![],
            v6_prefix: None,
        })),
        Call::AttachEni { .. } => Err(err("AttachmentLimitExceeded")),
        Call::Describe => ec2_shows(vec![primary(&["10.0.0.5"])]),
        _ => Ok(CallOutput::Done),
    });
    n += made.iter().filter(|c| matches!(c, Call::CreateEni { .. })).count();
    let deletes = made.iter().filter(|c| matches!(c, Call::DeleteEni { .. })).count();
    assert_eq!(n, 1, "one ENI created in 10 minutes: {made:?}");
    assert_eq!(deletes, 1, "and deleted once: {made:?}");
    assert!(e.orphans().next().is_none());
    let on_primary = made.iter().filter(|c| matches!(c, Call::AssignIps { .. })).count();
    assert!(on_primary <= 2, "{made:?}");
}

#[test]
fn a_permanent_error_is_retried_with_a_growing_back_off() {
    let mut e = Engine::new(cfg(NodeSettings::default()), &[primary(&[])], 1, T0).unwrap();
    let made = drive(&mut e, T0, 3600, &|_| Err(err("UnauthorizedOperation")));
    // 30 s doubling to 10 min, jittered: a handful of calls an hour, not 720.
    let n = mutating(&made);
    assert!((3..=40).contains(&n), "{n} calls in an hour: {made:?}");
}

#[test]
fn a_cloud_that_is_gone_is_not_hammered() {
    // Before: failed create_eni 122 times in 10 s, then every 5 s.
    let mut e = Engine::new(cfg(housekeeping()), &[primary(&[])], 1, T0).unwrap();
    let made = drive(&mut e, T0, 10, &|_| Err(err("Unavailable")));
    assert!(made.len() <= 3, "{made:?}");
    let made = drive(&mut e, T0 + std::time::Duration::from_secs(10), 600, &|_| Err(err("Unavailable")));
    assert!(made.len() <= 60, "{} calls in 10 minutes: {made:?}", made.len());
}

#[test]
fn a_release_whose_reply_is_lost_stays_out_of_use_until_ec2_says() {
    let s = NodeSettings { warm_ip: 1, ..NodeSettings::default() };
    let mut e = Engine::new(cfg(s), &[primary(&["10.0.0.5", "10.0.0.6", "10.0.0.7"])], 1, T0).unwrap();
    let c = calls(&e.handle(T0, Event::Tick));
    let Call::UnassignIps { ips, .. } = &c[0].1 else { panic!("{c:?}") };
    let gone = ips.clone();
    e.handle(T0, Event::CallDone { op: c[0].0, result: Err(err("RequestTimeout")) });
    // EC2 did release them: they must never be handed out again.
    assert_eq!(e.stats(T0).total, 1);
    for i in 0..3 {
        let r = e.handle(T0, Event::PodAdd(PodKey::new(format!("p{i}"))));
        if let [Effect::PodAssigned { addr, .. }] = r.as_slice() {
            assert!(!gone.iter().any(|g| IpAddr::V4(*g) == *addr), "{addr} was released");
        }
    }
    let c = calls(&e.handle(T0 + std::time::Duration::from_secs(5), Event::Tick));
    assert_eq!(c[0].1, Call::Describe);
    let truth = primary(&["10.0.0.5", "10.0.0.6", "10.0.0.7"]);
    let kept: Vec<Ipv4Addr> = truth.secondary_ips.iter().copied().filter(|ip| !gone.contains(ip)).collect();
    let mut now_truth = truth.clone();
    now_truth.secondary_ips = kept;
    let r = e.handle(
        T0 + std::time::Duration::from_secs(5),
        Event::CallDone { op: c[0].0, result: ec2_shows(vec![now_truth]) },
    );
    assert!(matches!(r.as_slice(), [Effect::Reconciled(rep)] if rep.dropped_blocks.len() == 2), "{r:?}");
    assert_eq!(e.datastore().enis()[0].cidrs.len(), 1);
}

#[test]
fn an_attach_whose_reply_is_lost_is_adopted_not_deleted() {
    let mut e = Engine::new(cfg(NodeSettings::default()), &[primary(&[])], 1, T0).unwrap();
    let new = EniInfo {
        id: "eni-new".into(),
        device_index: 1,
        subnet: "subnet-node".into(),
        primary_ip: Ipv4Addr::new(10, 0, 0, 30),
        secondary_ips: vec!["10.0.0.31".parse().unwrap()],
        prefixes: vec![],
        v6_prefix: None,
    };
    let c = calls(&e.handle(T0, Event::Tick));
    assert!(matches!(c[0].1, Call::AssignIps { .. }));
    let c = calls(&e.handle(T0, Event::CallDone { op: c[0].0, result: Err(err("PrivateIpAddressLimitExceeded")) }));
    assert!(c.is_empty());
    let c = calls(&e.handle(T0, Event::Tick));
    assert_eq!(c[0].1, Call::Describe);
    let full = NodeEnis { managed: vec![primary(&[])], unmanaged: vec![], unprotected: vec![], detaching: vec![] };
    e.handle(T0, Event::CallDone { op: c[0].0, result: Ok(CallOutput::Enis(full)) });
    let c = calls(&e.handle(T0 + std::time::Duration::from_secs(5), Event::Tick));
    assert!(matches!(c[0].1, Call::CreateEni { .. }), "{c:?}");
    let mut created = new.clone();
    created.device_index = 0;
    let c = calls(&e.handle(T0, Event::CallDone { op: c[0].0, result: Ok(CallOutput::Eni(created)) }));
    assert!(matches!(c[0].1, Call::AttachEni { .. }));
    e.handle(T0, Event::CallDone { op: c[0].0, result: Err(err("RequestTimeout")) });
    // The reconcile comes before the delete, sees the ENI attached, and adopts it.
    let c = calls(&e.handle(T0 + std::time::Duration::from_secs(10), Event::Tick));
    assert_eq!(c[0].1, Call::Describe, "{c:?}");
    let both = NodeEnis { managed: vec![primary(&[]), new], unmanaged: vec![], unprotected: vec![], detaching: vec![] };
    e.handle(T0, Event::CallDone { op: c[0].0, result: Ok(CallOutput::Enis(both)) });
    assert!(e.orphans().next().is_none());
    assert!(e.datastore().eni(&"eni-new".into()).is_some());
}

#[test]
fn a_failed_cleanup_is_retried_and_counted_never_dropped() {
    let mut e = Engine::new(cfg(NodeSettings::default()), &[primary(&[])], 1, T0).unwrap();
    e.orphans.insert("eni-left".into(), None);
    let made = drive(&mut e, T0, 300, &|c| match c {
        Call::DeleteEni { .. } => Err(err("InvalidNetworkInterface.InUse")),
        Call::Describe => ec2_shows(vec![primary(&[])]),
        _ => Err(err("UnauthorizedOperation")),
    });
    let tries = made.iter().filter(|c| matches!(c, Call::DeleteEni { .. })).count();
    assert!(tries >= 3, "{made:?}");
    assert_eq!(e.counters().cleanup_failures, tries as u64);
    assert!(e.orphans().any(|o| o.0 == "eni-left"));
    let made = drive(&mut e, T0 + std::time::Duration::from_secs(300), 300, &|c| match c {
        Call::DeleteEni { .. } => Ok(CallOutput::Done),
        Call::Describe => ec2_shows(vec![primary(&[])]),
        _ => Err(err("UnauthorizedOperation")),
    });
    assert!(made.iter().any(|c| matches!(c, Call::DeleteEni { .. })));
    assert!(e.orphans().next().is_none());
    assert_eq!(e.counters().enis_deleted, 1);
}

#[test]
fn the_leak_sweep_deletes_an_unattached_eni_only_after_the_grace() {
    let mut e = Engine::new(cfg(housekeeping()), &[primary(&["10.0.0.5"])], 1, T0).unwrap();
    let answer = |c: &Call| match c {
        Call::ListUnattached => Ok(CallOutput::Leaked(vec![("eni-leaked".into(), true)])),
        Call::Describe => ec2_shows(vec![primary(&["10.0.0.5"])]),
        Call::DeleteEni { .. } => Ok(CallOutput::Done),
        _ => Err(err("UnauthorizedOperation")),
    };
    // The first sweep comes 60-300 s after start (jittered across nodes): it only notes the ENI.
    let mut t = T0;
    while !drive(&mut e, t, 5, &answer).iter().any(|c| matches!(c, Call::ListUnattached)) {
        t = t + std::time::Duration::from_secs(5);
        assert!(t.since(T0) <= std::time::Duration::from_secs(305), "no sweep");
    }
    let made = drive(&mut e, t + std::time::Duration::from_secs(5), 290, &answer);
    assert!(!made.iter().any(|c| matches!(c, Call::DeleteEni { .. })), "{made:?}");
    let made = drive(&mut e, t + std::time::Duration::from_secs(295), 120, &answer);
    assert!(made.iter().any(|c| matches!(c, Call::DeleteEni { eni } if eni.0 == "eni-leaked")), "{made:?}");
    assert_eq!(e.counters().leaked, 1);
}

#[test]
fn a_result_that_does_not_fit_is_surfaced_and_reconciled() {
    let mut e = Engine::new(cfg(NodeSettings::default()), &[primary(&["10.0.0.5"])], 1, T0).unwrap();
    let c = calls(&e.handle(T0, Event::Tick));
    // EC2 answers with an address the datastore already has.
    let r =
        e.handle(T0, Event::CallDone { op: c[0].0, result: Ok(CallOutput::Ips(vec!["10.0.0.5".parse().unwrap()])) });
    assert!(matches!(r.as_slice(), [Effect::Inconsistent { .. }]), "{r:?}");
    assert_eq!(e.counters().inconsistent, 1);
    assert_eq!(calls(&e.handle(T0 + std::time::Duration::from_secs(5), Event::Tick))[0].1, Call::Describe);
}

#[test]
fn the_periodic_reconcile_adopts_and_drops_what_ec2_says() {
    // A pool at its target (one free address): nothing to grow, the reconcile comes at 60 s.
    let s = NodeSettings { warm_eni: 0, warm_ip: 1, ..housekeeping() };
    let mut e = Engine::new(cfg(s), &[primary(&["10.0.0.5", "10.0.0.6"])], 1, T0).unwrap();
    let k = PodKey::new("a");
    let r = e.handle(T0, Event::PodAdd(k.clone()));
    let [Effect::PodAssigned { addr, .. }] = r.as_slice() else { panic!() };
    let held = *addr;
    let other = if held.to_string() == "10.0.0.5" { "10.0.0.6" } else { "10.0.0.5" };
    // Someone else changed the ENI: the free address is gone, the held one too, a new one came.
    let truth = primary(&["10.0.0.9"]);
    let t = T0 + std::time::Duration::from_secs(60);
    let c = calls(&e.handle(t, Event::Tick));
    assert_eq!(c[0].1, Call::Describe);
    let r = e.handle(t, Event::CallDone { op: c[0].0, result: ec2_shows(vec![truth]) });
    let [Effect::Reconciled(rep)] = r.as_slice() else { panic!("{r:?}") };
    assert_eq!(rep.adopted_blocks, vec!["10.0.0.9/32".parse().unwrap()]);
    assert_eq!(rep.dropped_blocks.len(), 2);
    assert_eq!(rep.stranded_pods, 1);
    // The pod keeps its address (never given to another), the free one is gone.
    assert_eq!(e.datastore().pod(&k), Some(held));
    let r = e.handle(t, Event::PodAdd(PodKey::new("b")));
    let [Effect::PodAssigned { addr, .. }] = r.as_slice() else { panic!("{r:?}") };
    assert_eq!(addr.to_string(), "10.0.0.9");
    assert_ne!(addr.to_string(), other);
}

/// Answers a node's calls as EC2 would, with `full` subnets that have no room left: fresh
/// addresses or prefixes from elsewhere, new ENIs in another subnet.
struct FakeEc2 {
    next: std::cell::Cell<u32>,
    enis: std::cell::Cell<u32>,
    creates: std::cell::Cell<u32>,
}

impl FakeEc2 {
    fn new() -> FakeEc2 {
        FakeEc2 { next: 1.into(), enis: 0.into(), creates: 0.into() }
    }

    fn fresh(&self) -> u32 {
        let i = self.next.get();
        self.next.set(i + 1);
        i
    }

    fn answer(&self, c: &Call, code: &str) -> Result<CallOutput, CallError> {
        match c {
            Call::AssignIps { eni, .. } | Call::AssignPrefixes { eni, .. } if eni.0 == "eni-primary" => Err(err(code)),
            Call::AssignIps { count, .. } => {
                Ok(CallOutput::Ips((0..*count).map(|_| Ipv4Addr::from(0x0a01_0000 + self.fresh())).collect()))
            }
            Call::AssignPrefixes { count, .. } => Ok(CallOutput::Prefixes(
                (0..*count)
                    .map(|_| Ipv4Net::new(Ipv4Addr::from(0x0a10_0000 + self.fresh() * 16), 28).unwrap())
                    .collect(),
            )),
            Call::CreateEni { secondary_ips, prefixes, .. } => {
                self.enis.set(self.enis.get() + 1);
                self.creates.set(self.creates.get() + 1);
                Ok(CallOutput::Eni(EniInfo {
                    id: format!("eni-s{}", self.enis.get()).as_str().into(),
                    device_index: 0,
                    subnet: "subnet-other".into(),
                    primary_ip: Ipv4Addr::from(0x0a02_0000 + self.enis.get()),
                    secondary_ips: (0..*secondary_ips).map(|_| Ipv4Addr::from(0x0a01_0000 + self.fresh())).collect(),
                    prefixes: (0..*prefixes)
                        .map(|_| Ipv4Net::new(Ipv4Addr::from(0x0a10_0000 + self.fresh() * 16), 28).unwrap())
                        .collect(),
                    v6_prefix: None,
                }))
            }
            _ => Ok(CallOutput::Done),
        }
    }
}

/// One pod every 10 s for `pods` pods, the pool ticking between; the pods that got an address.
fn pods_every_10s(e: &mut Engine, pods: u32, answer: &dyn Fn(&Call) -> Result<CallOutput, CallError>) -> u32 {
    let mut t = T0;
    let mut ok = 0;
    for i in 0..pods {
        let mut queue = calls(&e.handle(t, Event::Tick));
        while let Some((op, call)) = queue.pop() {
            queue.extend(calls(&e.handle(t, Event::CallDone { op, result: answer(&call) })));
        }
        let r = e.handle(t, Event::PodAdd(PodKey::new(format!("p{i}"))));
        ok += u32::from(matches!(r.as_slice(), [Effect::PodAssigned { .. }]));
        t = t + std::time::Duration::from_secs(10);
    }
    ok
}

#[test]
fn with_subnet_discovery_a_full_subnet_is_left_for_the_enis_that_have_room() {
    let fake = FakeEc2::new();
    let s = NodeSettings { subnet_discovery: true, warm_ip: 2, ..NodeSettings::default() };
    let mut e = Engine::new(cfg(s), &[primary(&[])], 1, T0).unwrap();
    let ok = pods_every_10s(&mut e, 24, &|c| fake.answer(c, "InsufficientFreeAddressesInSubnet"));
    assert!(fake.creates.get() <= 2 && ok == 24, "{} ENIs created, {ok} of 24 pods", fake.creates.get());
    let fake = FakeEc2::new();
    let s = NodeSettings { subnet_discovery: true, prefix_delegation: true, ..NodeSettings::default() };
    let mut e = Engine::new(cfg(s), &[primary(&[])], 1, T0).unwrap();
    let ok = pods_every_10s(&mut e, 100, &|c| fake.answer(c, "InsufficientCidrBlocks"));
    assert!(ok >= 95, "{} ENIs created, {ok} of 100 pods", fake.creates.get());
}

#[test]
fn an_eni_tagged_no_manage_after_podip_used_it_is_let_go_never_deleted() {
    let user = EniInfo {
        id: "eni-user".into(),
        device_index: 1,
        subnet: "subnet-node".into(),
        primary_ip: Ipv4Addr::new(10, 0, 0, 40),
        secondary_ips: vec![],
        prefixes: vec![],
        v6_prefix: None,
    };
    let mut e = Engine::new(cfg(housekeeping()), &[primary(&["10.0.0.5"]), user], 1, T0).unwrap();
    let made = drive(&mut e, T0, 600, &|c| match c {
        Call::Describe => Ok(CallOutput::Enis(NodeEnis {
            managed: vec![primary(&["10.0.0.5"])],
            unmanaged: vec![("eni-user".into(), 1)],
            unprotected: vec![],
            detaching: vec![],
        })),
        Call::ListUnattached => Ok(CallOutput::Leaked(vec![])),
        _ => Err(err("UnauthorizedOperation")),
    });
    assert!(!made.iter().any(|c| matches!(c, Call::DeleteEni { .. } | Call::DetachEni { .. })), "{made:?}");
    assert!(e.datastore().eni(&"eni-user".into()).is_none());
    assert!(e.orphans().next().is_none());
}

#[test]
fn a_new_eni_never_takes_the_slot_of_one_still_detaching() {
    let mut e = Engine::new(cfg(NodeSettings::default()), &[primary(&[])], 1, T0).unwrap();
    e.orphans.insert("eni-detaching".into(), Some(1));
    e.gates.insert(
        Gate::Orphan("eni-detaching".into()),
        recover::Retry { failures: 1, until: T0 + std::time::Duration::from_secs(60) },
    );
    let c = calls(&e.handle(T0, Event::Tick));
    let c = calls(&e.handle(T0, Event::CallDone { op: c[0].0, result: Err(err("PrivateIpAddressLimitExceeded")) }));
    assert!(c.is_empty());
    let answer = FakeEc2::new();
    let made = drive(&mut e, T0 + std::time::Duration::from_secs(5), 30, &|c| match c {
        // EC2 still shows the old ENI detaching at device 1.
        Call::Describe => Ok(CallOutput::Enis(NodeEnis {
            managed: vec![primary(&[])],
            detaching: vec![("eni-detaching".into(), 1)],
            ..NodeEnis::default()
        })),
        Call::AttachEni { .. } => Ok(CallOutput::Done),
        Call::DeleteEni { .. } => Err(err("InvalidNetworkInterface.InUse")),
        other => answer.answer(other, "InsufficientFreeAddressesInSubnet"),
    });
    let attach = made.iter().find_map(|c| match c {
        Call::AttachEni { device_index, .. } => Some(*device_index),
        _ => None,
    });
    assert_eq!(attach, Some(2), "{made:?}");
}

#[test]
fn many_enis_to_delete_do_not_hold_back_an_empty_pool() {
    let mut e = Engine::new(cfg(housekeeping()), &[primary(&[])], 1, T0).unwrap();
    for i in 0..60 {
        e.orphans.insert(format!("eni-leak{i}").as_str().into(), None);
    }
    let fake = FakeEc2::new();
    let made = drive(&mut e, T0, 10, &|c| match c {
        Call::DeleteEni { .. } => Err(err("InvalidNetworkInterfaceID.NotFound")),
        c => fake.answer(c, "x"),
    });
    assert!(matches!(made.first(), Some(Call::AssignIps { .. })), "{made:?}");
}

#[test]
fn a_due_sweep_or_periodic_reconcile_waits_for_pods_that_need_addresses() {
    let mut e = Engine::new(cfg(housekeeping()), &[primary(&[])], 1, T0).unwrap();
    let t = T0 + std::time::Duration::from_secs(400); // reconcile and sweep both due
    let c = calls(&e.handle(t, Event::Tick));
    assert!(matches!(c[0].1, Call::AssignIps { .. }), "{c:?}");
}

#[test]
fn a_new_eni_avoids_the_subnet_that_just_ran_out() {
    let s = NodeSettings { subnet_discovery: true, ..NodeSettings::default() };
    let mut c = cfg(s);
    c.az = Some("az1".into());
    let mut e = Engine::new(c, &[primary(&[])], 1, T0).unwrap();
    let made = drive(&mut e, T0, 10, &|c| match c {
        Call::AssignIps { .. } => Err(err("InsufficientFreeAddressesInSubnet")),
        _ => Err(err("UnauthorizedOperation")),
    });
    let avoid = made.iter().find_map(|c| match c {
        Call::CreateEni { avoid, discover_in, .. } => Some((avoid.clone(), discover_in.clone())),
        _ => None,
    });
    assert_eq!(avoid, Some((vec!["subnet-node".into()], Some("az1".into()))), "{made:?}");
}

#[test]
fn a_release_of_unknown_outcome_is_made_again_even_if_a_describe_still_lists_it() {
    let s = NodeSettings { warm_ip: 1, ..NodeSettings::default() };
    let all = ["10.0.0.5", "10.0.0.6", "10.0.0.7"];
    let mut e = Engine::new(cfg(s), &[primary(&all)], 1, T0).unwrap();
    let c = calls(&e.handle(T0, Event::Tick));
    let Call::UnassignIps { ips, .. } = &c[0].1 else { panic!("{c:?}") };
    let gone = ips.clone();
    e.handle(T0, Event::CallDone { op: c[0].0, result: Err(err("RequestTimeout")) });
    // EC2 took them, but its describe lags and still lists them: they stay out of use.
    let t = T0 + std::time::Duration::from_secs(5);
    let c = calls(&e.handle(t, Event::Tick));
    assert_eq!(c[0].1, Call::Describe, "{c:?}");
    let lagging = NodeEnis { managed: vec![primary(&all)], ..NodeEnis::default() };
    e.handle(t, Event::CallDone { op: c[0].0, result: Ok(CallOutput::Enis(lagging)) });
    assert_eq!(e.stats(t).total, 1, "not put back in use");
    // The unassign is made again; EC2 answers it.
    let made = drive(&mut e, t + std::time::Duration::from_secs(5), 120, &|c| match c {
        Call::UnassignIps { .. } => Ok(CallOutput::Done),
        _ => Err(err("UnauthorizedOperation")),
    });
    assert!(made.iter().any(|c| matches!(c, Call::UnassignIps { ips, .. } if *ips == gone)), "{made:?}");
    assert_eq!(e.datastore().enis()[0].cidrs.len(), 1);
}

#[test]
fn another_nodes_leaked_eni_is_deleted_late_and_one_per_sweep() {
    let s = NodeSettings { warm_eni: 0, ..housekeeping() };
    let mut e = Engine::new(cfg(s), &[primary(&[])], 1, T0).unwrap();
    let foreign: Vec<(EniId, bool)> = (0..3).map(|i| (format!("eni-f{i}").as_str().into(), false)).collect();
    let answer = |c: &Call| match c {
        Call::ListUnattached => Ok(CallOutput::Leaked(foreign.clone())),
        Call::Describe => ec2_shows(vec![primary(&[])]),
        Call::DeleteEni { .. } => Err(err("UnauthorizedOperation")),
        _ => Err(err("UnauthorizedOperation")),
    };
    let made = drive(&mut e, T0, 1800, &answer);
    assert!(!made.iter().any(|c| matches!(c, Call::DeleteEni { .. })), "not within 30 minutes");
    drive(&mut e, T0 + std::time::Duration::from_secs(1800), 300, &answer);
    assert_eq!(e.orphans().count(), 1, "one per sweep");
}

// Third review: releases of unknown outcome, the node-wide back-off, swept ENIs attached again.

const ALL: [&str; 3] = ["10.0.0.5", "10.0.0.6", "10.0.0.7"];

/// An unassign whose reply is lost (EC2 did it), a describe that lags and still lists the
/// addresses, then the retry of the unassign: the engine, the addresses EC2 took, the time, and
/// the retry's op.
fn lost_release_then_retry() -> (Engine, Vec<Ipv4Addr>, Time, OpId) {
    let s = NodeSettings { warm_ip: 1, ..NodeSettings::default() };
    let mut e = Engine::new(cfg(s), &[primary(&ALL)], 1, T0).unwrap();
    let c = calls(&e.handle(T0, Event::Tick));
    let Call::UnassignIps { ips, .. } = &c[0].1 else { panic!("{c:?}") };
    let gone = ips.clone();
    e.handle(T0, Event::CallDone { op: c[0].0, result: Err(err("RequestTimeout")) });
    let mut t = T0 + std::time::Duration::from_secs(5);
    let c = calls(&e.handle(t, Event::Tick));
    assert_eq!(c[0].1, Call::Describe, "{c:?}");
    let lagging = NodeEnis { managed: vec![primary(&ALL)], ..NodeEnis::default() };
    e.handle(t, Event::CallDone { op: c[0].0, result: Ok(CallOutput::Enis(lagging)) });
    assert_eq!(e.stats(t).total, 1);
    for _ in 0..40 {
        t = t + std::time::Duration::from_secs(5);
        let c = calls(&e.handle(t, Event::Tick));
        if let Some((op, Call::UnassignIps { .. })) = c.first() {
            return (e, gone, t, *op);
        }
        assert!(c.is_empty(), "{c:?}");
    }
    panic!("the release was never made again");
}

fn assert_never_handed_out(e: &mut Engine, gone: &[Ipv4Addr], t: Time) {
    for i in 0..3 {
        let r = e.handle(t, Event::PodAdd(PodKey::new(format!("p{i}"))));
        if let [Effect::PodAssigned { addr, .. }] = r.as_slice() {
            assert!(!gone.iter().any(|g| IpAddr::V4(*g) == *addr), "{addr}, which EC2 took back, went to a pod");
        }
    }
}

#[test]
fn a_throttled_retry_of_a_release_of_unknown_outcome_keeps_it_out_of_use() {
    let (mut e, gone, t, op) = lost_release_then_retry();
    e.handle(t, Event::CallDone { op, result: Err(err("RequestLimitExceeded")) });
    assert_never_handed_out(&mut e, &gone, t);
}

#[test]
fn a_refused_retry_and_a_lagging_describe_keep_a_released_address_out_of_use() {
    let (mut e, gone, mut t, op) = lost_release_then_retry();
    // EC2 refuses the retry because it already took them (InvalidParameterValue: not assigned).
    e.handle(t, Event::CallDone { op, result: Err(CallError::new(ErrorKind::Permanent, "InvalidParameterValue", "")) });
    loop {
        t = t + std::time::Duration::from_secs(5);
        let c = calls(&e.handle(t, Event::Tick));
        if let Some((op, Call::Describe)) = c.first() {
            let lagging = NodeEnis { managed: vec![primary(&ALL)], ..NodeEnis::default() };
            e.handle(t, Event::CallDone { op: *op, result: Ok(CallOutput::Enis(lagging)) });
            break;
        }
    }
    assert_never_handed_out(&mut e, &gone, t);
}

#[test]
fn a_throttled_retry_of_a_detach_of_unknown_outcome_keeps_the_eni_out_of_use() {
    let s = NodeSettings { warm_ip: 1, ..NodeSettings::default() };
    let mut second = primary(&[]);
    second.id = "eni-2".into();
    second.device_index = 1;
    second.primary_ip = Ipv4Addr::new(10, 0, 1, 10);
    let p = primary(&["10.0.0.5", "10.0.0.6"]);
    let mut e = Engine::new(cfg(s), &[p.clone(), second.clone()], 1, T0).unwrap();
    let mut t = T0 + std::time::Duration::from_secs(120);
    // find the detach
    let mut det = None;
    for _ in 0..20 {
        let c = calls(&e.handle(t, Event::Tick));
        for (op, call) in c {
            match call {
                Call::DetachEni { .. } => det = Some(op),
                _ => {
                    e.handle(t, Event::CallDone { op, result: Err(err("UnauthorizedOperation")) });
                }
            }
        }
        if det.is_some() {
            break;
        }
        t = t + std::time::Duration::from_secs(5);
    }
    let op = det.expect("a detach");
    e.handle(t, Event::CallDone { op, result: Err(err("RequestTimeout")) });
    // describe still lists it attached (lag)
    let mut redo = None;
    for _ in 0..40 {
        t = t + std::time::Duration::from_secs(5);
        for (op, call) in calls(&e.handle(t, Event::Tick)) {
            match call {
                Call::Describe => {
                    e.handle(t, Event::CallDone { op, result: ec2_shows(vec![p.clone(), second.clone()]) });
                }
                Call::DetachEni { .. } => redo = Some(op),
                c => panic!("{c:?}"),
            }
        }
        if redo.is_some() {
            break;
        }
    }
    let op = redo.expect("redo");
    e.handle(t, Event::CallDone { op, result: Err(err("RequestLimitExceeded")) });
    let x = e.datastore().eni(&"eni-2".into()).unwrap();
    assert!(x.releasing, "an ENI whose first detach may have happened is back in use");
}

#[test]
fn the_node_wide_back_off_starts_over_once_the_cloud_answers() {
    let mut e = Engine::new(cfg(NodeSettings::default()), &[primary(&[])], 1, T0).unwrap();
    let mut t = T0;
    // 5 throttles in the first minutes
    let mut n = 0;
    while n < 5 {
        for (op, _) in calls(&e.handle(t, Event::Tick)) {
            e.handle(t, Event::CallDone { op, result: Err(err("RequestLimitExceeded")) });
            n += 1;
        }
        t = t + std::time::Duration::from_secs(5);
    }
    // a day of successes
    t = t + std::time::Duration::from_secs(86400);
    let c = calls(&e.handle(t, Event::Tick));
    let (op, _) = c[0].clone();
    let ips: Vec<Ipv4Addr> = (1..=14).map(|i| Ipv4Addr::new(10, 0, 0, 20 + i)).collect();
    e.handle(t, Event::CallDone { op, result: Ok(CallOutput::Ips(ips)) });
    for i in 0..14 {
        e.handle(t, Event::PodAdd(PodKey::new(format!("q{i}"))));
    }
    t = t + std::time::Duration::from_secs(5);
    let c = calls(&e.handle(t, Event::Tick));
    let (op, _) = c[0].clone();
    // One throttle: the back-off starts over (at most 5 s), not where the old streak left it.
    e.handle(t, Event::CallDone { op, result: Err(err("RequestLimitExceeded")) });
    let mut waited = 0;
    loop {
        waited += 5;
        let c = calls(&e.handle(t + std::time::Duration::from_secs(waited), Event::Tick));
        if !c.is_empty() {
            break;
        }
    }
    assert!(waited <= 10, "waited {waited}");
}

#[test]
fn a_leaked_eni_attached_again_is_no_longer_deleted() {
    let s = NodeSettings { warm_eni: 0, ..housekeeping() };
    let mut e = Engine::new(cfg(s), &[primary(&[])], 1, T0).unwrap();
    let foreign: Vec<(EniId, bool)> = vec![("eni-f0".into(), false)];
    let listed = std::cell::Cell::new(true);
    let answer = |c: &Call| match c {
        Call::ListUnattached => Ok(CallOutput::Leaked(if listed.get() { foreign.clone() } else { vec![] })),
        Call::Describe => ec2_shows(vec![primary(&[])]),
        // Its deletion is refused while it is unattached, and in use once attached again.
        Call::DeleteEni { .. } if listed.get() => Err(err("UnauthorizedOperation")),
        Call::DeleteEni { .. } => Err(err("InvalidNetworkInterface.InUse")),
        _ => Err(err("UnauthorizedOperation")),
    };
    drive(&mut e, T0, 2100, &answer);
    assert_eq!(e.orphans().count(), 1);
    // its owner attached it after all: no longer unattached
    listed.set(false);
    let made = drive(&mut e, T0 + std::time::Duration::from_secs(2100), 3600, &answer);
    let dels = made.iter().filter(|c| matches!(c, Call::DeleteEni { .. })).count();
    assert!(dels < 3, "{dels}");
    assert_eq!(e.orphans().count(), 0);
}

#[test]
fn a_release_of_unknown_outcome_is_never_undone_without_ec2_saying() {
    // No describe lag needed: the describe is refused, the retry throttled.
    let s = NodeSettings { warm_ip: 1, ..NodeSettings::default() };
    let mut e = Engine::new(cfg(s), &[primary(&ALL)], 1, T0).unwrap();
    let c = calls(&e.handle(T0, Event::Tick));
    let Call::UnassignIps { ips, .. } = &c[0].1 else { panic!("{c:?}") };
    let gone = ips.clone();
    e.handle(T0, Event::CallDone { op: c[0].0, result: Err(err("RequestTimeout")) }); // EC2 did it
    let mut t = T0;
    'l: for _ in 0..40 {
        t = t + std::time::Duration::from_secs(5);
        for (op, call) in calls(&e.handle(t, Event::Tick)) {
            match call {
                Call::Describe => {
                    e.handle(t, Event::CallDone { op, result: Err(err("UnauthorizedOperation")) });
                }
                Call::UnassignIps { .. } => {
                    e.handle(t, Event::CallDone { op, result: Err(err("RequestLimitExceeded")) });
                    break 'l;
                }
                c => panic!("{c:?}"),
            }
        }
    }
    assert_never_handed_out(&mut e, &gone, t);
}

#[test]
fn a_missing_eniconfig_holds_new_enis_and_a_named_one_places_them() {
    let mut e = Engine::new(cfg(custom()), &[primary(&[])], 1, T0).unwrap();
    e.set_pod_eni(None);
    assert!(calls(&e.handle(T0, Event::Tick)).is_empty(), "no ENI while the node's ENIConfig is missing");
    let az2 = EniTemplate { subnet: "subnet-az2".into(), security_groups: vec!["sg-pods".into()] };
    e.set_pod_eni(Some(az2));
    let c = calls(&e.handle(T0, Event::Tick));
    assert_eq!(c[0].1, create("subnet-az2", &["sg-pods"], 14, 0));
    // Without custom networking, the cluster's ENIConfig changes nothing.
    let mut plain = Engine::new(cfg(NodeSettings::default()), &[primary(&[])], 1, T0).unwrap();
    plain.set_pod_eni(None);
    assert_eq!(calls(&plain.handle(T0, Event::Tick)).len(), 1);
}

#[test]
fn max_pods_from_the_node_object_caps_the_pool() {
    // m5.xlarge: 4 ENIs of 14; with WARM_IP_TARGET=50 the pool would fill every slot.
    let s = NodeSettings { warm_ip: 50, warm_eni: 0, ..NodeSettings::default() };
    let mut e = Engine::new(cfg(s), &[primary(&[])], 1, T0).unwrap();
    e.set_max_pods(8);
    let fake = FakeEc2::new();
    let mut t = T0;
    for _ in 0..60 {
        let mut queue = calls(&e.handle(t, Event::Tick));
        while let Some((op, call)) = queue.pop() {
            queue.extend(calls(&e.handle(t, Event::CallDone { op, result: fake.answer(&call, "none") })));
        }
        t = t + std::time::Duration::from_secs(5);
    }
    let total: usize = e.datastore().enis().iter().map(|x| x.cidrs.len()).sum();
    assert!(total <= 8, "the pool holds {total} addresses for a node of 8 pods");
    e.set_max_pods(0);
    assert_eq!(e.config().limits.max_pods, 8, "0 is ignored");
}

#[test]
fn a_held_enis_addresses_go_to_no_pod_until_it_is_let_go() {
    let second = EniInfo {
        id: "eni-second".into(),
        device_index: 1,
        subnet: "subnet-node".into(),
        primary_ip: Ipv4Addr::new(10, 0, 0, 50),
        secondary_ips: vec![Ipv4Addr::new(10, 0, 0, 51)],
        prefixes: vec![],
        v6_prefix: None,
    };
    let mut e = Engine::new(cfg(NodeSettings::default()), &[primary(&[]), second], 1, T0).unwrap();
    e.hold_eni(&"eni-second".into(), true);
    // Counted in the pool, but not available to a pod.
    assert_eq!((e.stats(T0).total, e.datastore().available(T0)), (1, 0));
    let r = e.handle(T0, Event::PodAdd(PodKey::new("p1")));
    assert!(matches!(r.as_slice(), [Effect::PodRejected { .. }]), "{r:?}");
    e.hold_eni(&"eni-second".into(), false);
    assert_eq!(e.datastore().available(T0), 1);
    let r = e.handle(T0, Event::PodAdd(PodKey::new("p1")));
    assert!(matches!(r.as_slice(), [Effect::PodAssigned { .. }]), "{r:?}");
    assert_eq!(e.datastore().available(T0), 0);
}

/// Prefix fallback: a prefix and fallback addresses whose releases on one ENI both time out are
/// made again each with its own call (a /28 never in `UnassignIps`, a /32 never in
/// `UnassignPrefixes`), and both go back once EC2 answers.
#[test]
fn releases_of_unknown_outcome_of_prefixes_and_fallback_addresses_are_made_again_apart() {
    let s = NodeSettings {
        prefix_delegation: true,
        warm_prefix: Some(1),
        prefix_fallback: true,
        ..NodeSettings::default()
    };
    let mut eni = primary(&["10.0.2.5", "10.0.2.6", "10.0.2.7"]);
    eni.prefixes = vec!["10.0.1.0/28".parse().unwrap(), "10.0.1.16/28".parse().unwrap()];
    let mut e = Engine::new(cfg(s), &[eni.clone()], 1, T0).unwrap();
    let timeout_until = T0 + std::time::Duration::from_secs(60);
    let at = std::cell::Cell::new(T0);
    let answer = |c: &Call| match c {
        Call::UnassignIps { .. } | Call::UnassignPrefixes { .. } if at.get() < timeout_until => {
            Err(err("RequestTimeout"))
        }
        Call::UnassignIps { .. } | Call::UnassignPrefixes { .. } => Ok(CallOutput::Done),
        // The releases did not happen: EC2 still lists every block.
        Call::Describe => ec2_shows(vec![eni.clone()]),
        _ => Err(err("UnauthorizedOperation")),
    };
    let mut made = Vec::new();
    // Twenty minutes: the release back-off has grown during the minute of timeouts.
    for k in 0..240u64 {
        at.set(T0 + std::time::Duration::from_secs(5 * k));
        made.extend(drive(&mut e, at.get(), 5, &answer));
    }
    for c in &made {
        match c {
            Call::UnassignIps { ips, .. } => {
                assert!(ips.iter().all(|ip| ip.octets()[2] == 2), "a /28 in UnassignIps: {c:?}")
            }
            Call::UnassignPrefixes { prefixes, .. } => {
                assert!(prefixes.iter().all(|p| p.prefix_len() == 28), "a /32 in UnassignPrefixes: {c:?}")
            }
            _ => {}
        }
    }
    assert!(made.iter().any(|c| matches!(c, Call::UnassignIps { .. })), "{made:?}");
    assert!(made.iter().any(|c| matches!(c, Call::UnassignPrefixes { .. })), "{made:?}");
    let left = &e.datastore().enis()[0];
    assert!(left.secondary_ips().next().is_none(), "fallback addresses went back: {:?}", left.cidrs);
    assert_eq!(left.prefixes().count(), 1, "one prefix kept warm: {:?}", left.cidrs);
}

#[test]
fn a_new_share_of_the_call_budget_gives_no_call_the_old_one_had_not() {
    use crate::config::CallBudget;
    let open = CallBudget { per_hour: 3600, burst: 5, paced: false };
    let mut e =
        Engine::new(cfg(NodeSettings { call_budget: Some(open), ..NodeSettings::default() }), &[primary(&[])], 1, T0)
            .unwrap();
    for _ in 0..5 {
        e.budget.as_mut().unwrap().spend();
    }
    // More nodes left the cluster: a bigger share, but the calls in hand stay spent.
    e.set_call_budget(T0, Some(CallBudget { per_hour: 7200, burst: 10, paced: false }));
    let b = e.budget.as_ref().unwrap();
    assert_eq!((b.milli, b.burst, b.may_call(T0)), (0, 10, false));
    assert_eq!(b.ready_at(T0), T0 + std::time::Duration::from_millis(500), "the new rate refills it");

    // Paced: a slot's call spent, then a new share: the same phase, and the current slot does
    // not pay out again.
    let paced = CallBudget { per_hour: 9, burst: 1, paced: true };
    e.set_call_budget(T0, Some(paced));
    let (phase, period) = {
        let p = e.budget.as_ref().unwrap().pace.as_ref().unwrap();
        (p.phase_ms, p.period_ms)
    };
    let slot = Time::from_millis(phase + period);
    let b = e.budget.as_mut().unwrap();
    b.refill(slot);
    assert!(b.may_call(slot), "the node's slot opens");
    b.spend();
    e.set_call_budget(slot, Some(CallBudget { per_hour: 12, burst: 1, paced: true }));
    let b = e.budget.as_mut().unwrap();
    b.refill(slot);
    let p = b.pace.as_ref().unwrap();
    assert_eq!(p.phase_ms, phase, "the phase is kept");
    assert!(!b.may_call(slot) && b.milli == 0, "no second call in the same slot, nor a credit");
    let next = b.ready_at(slot);
    assert_eq!(next, Time::from_millis(phase + p.period_ms * 2), "the next slot, at the new period");
    b.refill(next);
    assert!(b.may_call(next));
    // The same share again changes nothing; none removes the bucket.
    e.set_call_budget(next, Some(CallBudget { per_hour: 12, burst: 1, paced: true }));
    assert!(e.budget.as_ref().unwrap().may_call(next));
    e.set_call_budget(next, None);
    assert!(e.budget.is_none());
}

// ---- The adaptive policy across a restart of the daemon ----

fn adaptive() -> NodeSettings {
    NodeSettings {
        warm_eni: 0,
        pool_policy: crate::config::PoolPolicyChoice::Adaptive { misses_per_million: 10_000 },
        ..NodeSettings::default()
    }
}

/// An adaptive engine on a primary ENI of 14 secondary addresses.
fn fourteen_addresses(seed: u64, now: Time) -> Engine {
    let ips: Vec<String> = (11..25).map(|i| format!("10.0.0.{i}")).collect();
    let ips: Vec<&str> = ips.iter().map(String::as_str).collect();
    Engine::new(cfg(adaptive()), &[primary(&ips)], seed, now).unwrap()
}

/// The same, 12 of them held by pods (restored, as a restarted daemon does).
fn twelve_pods(seed: u64, now: Time) -> Engine {
    let mut e = fourteen_addresses(seed, now);
    for i in 0..12u8 {
        e.datastore_mut().restore(&PodKey::new(format!("p{i}")), Ipv4Addr::new(10, 0, 0, 11 + i)).unwrap();
    }
    e
}

#[test]
fn a_restarted_engine_goes_on_with_its_memory_instead_of_asking_for_a_new_nodes_pool() {
    let hour = std::time::Duration::from_secs(3600);
    // A node whose 12 pods started in its first minute, eight hours ago: past its hold window,
    // no longer young, its pool sized to its pods.
    let mut old = fourteen_addresses(1, T0);
    for i in 0..12u64 {
        old.handle(T0 + std::time::Duration::from_secs(i), Event::PodAdd(PodKey::new(format!("p{i}"))));
    }
    let now = T0 + hour * 8;
    drive(&mut old, T0, 8 * 3600, &|_| Err(err("Unavailable")));
    let memory = old.pool_memory(now).expect("adaptive");
    assert!(!memory.reserve || memory.age_ms >= 8 * 3600 * 1000, "{memory:?}");
    assert_eq!(memory.peaks.last().map(|p| p.1), Some(12), "{memory:?}");
    // The daemon restarts with the node's 12 pods and 2 spare addresses. Without its memory it is
    // a new node: it knows no demand and asks EC2 for an ENI's worth of addresses.
    let mut fresh = twelve_pods(2, now);
    let made = drive(&mut fresh, now, 60, &|_| Err(err("Unavailable")));
    assert!(mutating(&made) > 0, "a new node's pool: {made:?}");
    // With it, it goes on as the node it was: two spare addresses are enough.
    let mut restarted = twelve_pods(2, now);
    restarted.remember_pool(now, &memory);
    let made = drive(&mut restarted, now, 60, &|_| Err(err("Unavailable")));
    assert_eq!(mutating(&made), 0, "{made:?}");
    let again = restarted.pool_memory(now + std::time::Duration::from_secs(60)).unwrap();
    assert_eq!(again.age_ms, memory.age_ms + 60_000);
    assert_eq!(
        (again.reserve, again.first_start_ago_ms.map(|a| a - 60_000)),
        (memory.reserve, memory.first_start_ago_ms)
    );
}
