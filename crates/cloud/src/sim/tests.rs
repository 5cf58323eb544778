//! Simulated-VPC behaviour: the EC2 error codes, reservations, fragmentation, throttling, limits
//! and faults, plus a property test of the VPC's own invariants.

use super::params::{Faults, Placement, Window};
use super::subnet::{Reservation, ReservationKind};
use super::*;
use crate::{Call, CallOutput, EniStatus, ErrorKind};
use ipam::catalog::Catalog;
use proptest::prelude::*;

fn vpc(seed: u64) -> (SimVpc, SubnetId) {
    let mut v = SimVpc::new(SimParams { seed, ..SimParams::default() });
    v.add_vpc_cidr("10.0.0.0/16".parse().unwrap()).unwrap();
    let s = v.add_subnet("us-east-1a", "10.0.0.0/24".parse().unwrap()).unwrap();
    (v, s)
}

fn m5() -> &'static InstanceType {
    Catalog::embedded().get("m5.large").unwrap()
}

/// One used address in every /28: 235 addresses free, not one aligned block.
fn fragment(v: &mut SimVpc, s: &SubnetId) {
    let sub = v.subnet_mut(s).unwrap();
    for b in 0..16u32 {
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 0)) + b * 16 + 7);
        assert!(sub.occupy(ip));
    }
}

#[test]
fn fragmented_subnet_refuses_prefixes_but_not_addresses() {
    let (mut v, s) = vpc(1);
    fragment(&mut v, &s);
    let sub = v.subnet(&s).unwrap();
    assert_eq!((sub.free_ips(), sub.free_prefixes()), (251 - 16, 0));
    let (inst, primary) = v.run_instance(m5(), &s).unwrap();
    let err = v.assign_ipv4_prefixes(&primary.id, 1).unwrap_err();
    assert_eq!(err.code, "InsufficientCidrBlocks");
    assert_eq!(err.kind, ErrorKind::Capacity(crate::Capacity::InsufficientCidrBlocks));
    let ips = v.assign_private_ip_addresses(&primary.id, 9).unwrap();
    assert_eq!(ips.len(), 9);
    let err = v
        .create_network_interface(&CreateEni {
            subnet: s.clone(),
            security_groups: vec![],
            secondary_ips: 0,
            prefixes: 1,
            ..CreateEni::default()
        })
        .unwrap_err();
    assert_eq!(err.code, "InsufficientCidrBlocks");
    assert!(v.check_invariants().is_empty(), "{:?}", v.check_invariants());
    let _ = inst;
}

#[test]
fn a_prefix_reservation_keeps_prefixes_possible_on_a_busy_subnet() {
    // Same random churn on the same subnet, with and without a /26 prefix reservation made first.
    let busy = |reserve: bool| {
        let (mut v, s) = vpc(2);
        if reserve {
            let r = Reservation { cidr: "10.0.0.64/26".parse().unwrap(), kind: ReservationKind::Prefix };
            v.add_reservation(&s, r).unwrap();
        }
        let (_, primary) = v.run_instance(m5(), &s).unwrap();
        v.occupy_random(&s, 150).unwrap();
        let r = v.assign_ipv4_prefixes(&primary.id, 4);
        (r, v.subnet(&s).unwrap().free_ips())
    };
    let (without, free) = busy(false);
    assert!(free > 16, "plenty of free addresses ({free}) remain");
    assert_eq!(without.unwrap_err().code, "InsufficientCidrBlocks");
    let (with, _) = busy(true);
    let got = with.unwrap();
    assert_eq!(got.len(), 4);
    assert!(got.iter().all(|p| "10.0.0.64/26".parse::<Ipv4Net>().unwrap().contains(p)));
}

#[test]
fn an_exhausted_subnet_answers_insufficient_free_addresses() {
    let mut v = SimVpc::new(SimParams::default());
    v.add_vpc_cidr("10.0.0.0/16".parse().unwrap()).unwrap();
    let s = v.add_subnet("az1", "10.0.0.0/28".parse().unwrap()).unwrap();
    let (_, primary) = v.run_instance(m5(), &s).unwrap();
    // 16 - 5 reserved - 1 primary = 10 left; the ENI may hold 9 secondaries.
    assert_eq!(v.assign_private_ip_addresses(&primary.id, 9).unwrap().len(), 9);
    let create =
        CreateEni { subnet: s.clone(), security_groups: vec![], secondary_ips: 1, prefixes: 0, ..CreateEni::default() };
    let err = v.create_network_interface(&create).unwrap_err();
    assert_eq!(err.code, "InsufficientFreeAddressesInSubnet");
    assert_eq!(err.kind, ErrorKind::Capacity(crate::Capacity::InsufficientFreeAddresses));
}

#[test]
fn a_burst_past_the_bucket_is_throttled_then_succeeds_after_refill() {
    let (mut v, s) = vpc(3);
    v.add_subnet("us-east-1a", "10.0.16.0/20".parse().unwrap()).unwrap();
    let big = v.subnets()[1].id.clone();
    let (_, primary) = v.run_instance(m5(), &s).unwrap();
    let _ = primary;
    v.set_now(Time::from_secs(100));
    let create =
        CreateEni { subnet: big, security_groups: vec![], secondary_ips: 0, prefixes: 0, ..CreateEni::default() };
    for i in 0..100 {
        assert!(v.create_network_interface(&create).is_ok(), "call {i} within the burst of 100");
    }
    let err = v.create_network_interface(&create).unwrap_err();
    assert_eq!((err.code.as_str(), err.kind), ("RequestLimitExceeded", ErrorKind::Throttled));
    v.set_now(Time::from_millis(100_200)); // 5 tokens/s: one token after 200 ms
    assert!(v.create_network_interface(&create).is_ok());
    assert!(v.create_network_interface(&create).is_err());
    let st = &v.action_stats()[&Action::CreateNetworkInterface];
    assert_eq!((st.calls, st.ok, st.throttled), (103, 101, 2));
}

#[test]
fn instance_and_eni_limits_use_the_real_codes() {
    let (mut v, s) = vpc(4);
    let (inst, primary) = v.run_instance(m5(), &s).unwrap(); // 3 ENIs, 10 addresses each
    let err = v.assign_private_ip_addresses(&primary.id, 10).unwrap_err();
    assert_eq!(err.code, "PrivateIpAddressLimitExceeded");
    for dev in 1..3 {
        let e = v
            .create_network_interface(&CreateEni {
                subnet: s.clone(),
                security_groups: vec![],
                secondary_ips: 0,
                prefixes: 0,
                ..CreateEni::default()
            })
            .unwrap();
        v.attach_network_interface(&e.id, &inst, dev).unwrap();
    }
    let e = v
        .create_network_interface(&CreateEni {
            subnet: s.clone(),
            security_groups: vec![],
            secondary_ips: 0,
            prefixes: 0,
            ..CreateEni::default()
        })
        .unwrap();
    let err = v.attach_network_interface(&e.id, &inst, 3).unwrap_err();
    assert_eq!(err.code, "AttachmentLimitExceeded");
    let err = v.assign_private_ip_addresses(&"eni-nope".into(), 1).unwrap_err();
    assert_eq!((err.code.as_str(), err.kind), ("InvalidNetworkInterfaceID.NotFound", ErrorKind::NotFound));
    let err = v.delete_network_interface(&primary.id).unwrap_err();
    assert_eq!(err.code, "InvalidNetworkInterface.InUse");
}

#[test]
fn terminating_an_instance_frees_its_addresses() {
    let (mut v, s) = vpc(5);
    let before = v.subnet(&s).unwrap().free_ips();
    let (inst, primary) = v.run_instance(m5(), &s).unwrap();
    v.assign_private_ip_addresses(&primary.id, 5).unwrap();
    assert_eq!(v.subnet(&s).unwrap().free_ips(), before - 6);
    v.terminate_instance(&inst).unwrap();
    assert_eq!(v.subnet(&s).unwrap().free_ips(), before);
}

#[test]
fn the_same_seed_places_the_same_addresses() {
    let run = |seed| {
        let (mut v, s) = vpc(seed);
        let (_, p) = v.run_instance(m5(), &s).unwrap();
        v.assign_private_ip_addresses(&p.id, 9).unwrap()
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));
}

#[test]
fn lowest_placement_is_sequential() {
    let mut v = SimVpc::new(SimParams { placement: Placement::Lowest, ..SimParams::default() });
    v.add_vpc_cidr("10.0.0.0/16".parse().unwrap()).unwrap();
    let s = v.add_subnet("az1", "10.0.0.0/24".parse().unwrap()).unwrap();
    let (_, p) = v.run_instance(m5(), &s).unwrap();
    assert_eq!(p.primary_ip, Ipv4Addr::new(10, 0, 0, 4));
    let ips = v.assign_private_ip_addresses(&p.id, 2).unwrap();
    assert_eq!(ips, vec![Ipv4Addr::new(10, 0, 0, 5), Ipv4Addr::new(10, 0, 0, 6)]);
}

#[test]
fn faults_throttle_storms_errors_and_latency() {
    let (mut v, s) = vpc(6);
    let (_, p) = v.run_instance(m5(), &s).unwrap();
    v.take_elapsed();
    v.assign_private_ip_addresses(&p.id, 1).unwrap();
    let d = v.take_elapsed();
    assert!(d >= Duration::from_millis(200) && d <= Duration::from_millis(1000), "{d:?}");
    v.set_faults(Faults {
        throttle_storms: vec![Window { start: Time::from_secs(10), end: Time::from_secs(20) }],
        ..Faults::default()
    });
    v.set_now(Time::from_secs(15));
    assert_eq!(v.assign_private_ip_addresses(&p.id, 1).unwrap_err().code, "RequestLimitExceeded");
    v.set_now(Time::from_secs(20));
    assert!(v.assign_private_ip_addresses(&p.id, 1).is_ok());
    v.set_faults(Faults { error_rate: 1.0, ..Faults::default() });
    let e = v.assign_private_ip_addresses(&p.id, 1).unwrap_err();
    assert_eq!((e.code.as_str(), e.kind), ("InternalError", ErrorKind::Transient));
    v.set_faults(Faults { latency_spike_rate: 1.0, latency_spike_factor: 10.0, ..Faults::default() });
    v.take_elapsed();
    v.assign_private_ip_addresses(&p.id, 1).unwrap();
    assert!(v.take_elapsed() >= Duration::from_secs(2));
}

#[test]
fn layout_errors_name_the_block() {
    let (mut v, _) = vpc(1);
    assert_eq!(
        v.add_subnet("az", "10.1.0.0/24".parse().unwrap()).unwrap_err().to_string(),
        "subnet 10.1.0.0/24 is not inside any VPC CIDR"
    );
    assert!(matches!(v.add_subnet("az", "10.0.0.128/25".parse().unwrap()), Err(LayoutError::Overlap(..))));
    assert!(matches!(v.add_subnet("az", "10.0.1.0/29".parse().unwrap()), Err(LayoutError::BadSize(_))));
}

#[test]
fn attach_and_detach_take_time_and_an_eni_still_detaching_cannot_be_deleted() {
    let (mut v, s) = vpc(7);
    let (inst, _) = v.run_instance(m5(), &s).unwrap();
    v.set_now(Time::from_secs(10));
    let e = v.create_network_interface(&CreateEni { subnet: s.clone(), ..CreateEni::default() }).unwrap();
    assert_eq!(e.status, EniStatus::Available);
    v.attach_network_interface(&e.id, &inst, 1).unwrap();
    assert_eq!(v.peek_eni(&e.id).unwrap().status, EniStatus::Attaching);
    v.set_now(Time::from_secs(14)); // attach_settle is 1-3 s
    assert_eq!(v.peek_eni(&e.id).unwrap().status, EniStatus::InUse);
    v.detach_network_interface(&e.id).unwrap();
    assert_eq!(v.peek_eni(&e.id).unwrap().status, EniStatus::Detaching);
    assert_eq!(v.detach_network_interface(&e.id).unwrap_err().code, "IncorrectState");
    let err = v.delete_network_interface(&e.id).unwrap_err();
    assert_eq!((err.code.as_str(), err.kind), ("InvalidNetworkInterface.InUse", ErrorKind::Conflict));
    v.set_now(Time::from_secs(20)); // detach_settle is 1-5 s
    assert_eq!(v.peek_eni(&e.id).unwrap().status, EniStatus::Available);
    v.delete_network_interface(&e.id).unwrap();
    assert!(v.check_invariants().is_empty());
}

#[test]
fn an_eni_attaches_only_to_an_instance_of_its_az() {
    let (mut v, s) = vpc(8);
    let other = v.add_subnet("us-east-1b", "10.0.1.0/24".parse().unwrap()).unwrap();
    let (inst, _) = v.run_instance(m5(), &s).unwrap();
    let e = v.create_network_interface(&CreateEni { subnet: other, ..CreateEni::default() }).unwrap();
    let err = v.attach_network_interface(&e.id, &inst, 1).unwrap_err();
    assert_eq!(err.code, "InvalidParameterCombination");
    assert!(err.message.contains("us-east-1b") && err.message.contains("us-east-1a"), "{err}");
}

#[test]
fn a_throttled_call_takes_no_token() {
    let (mut v, s) = vpc(9);
    let create = CreateEni { subnet: s.clone(), ..CreateEni::default() };
    v.set_faults(Faults {
        throttle_storms: vec![Window { start: Time::from_secs(0), end: Time::from_secs(10) }],
        ..Faults::default()
    });
    v.set_now(Time::from_secs(5));
    for _ in 0..500 {
        assert_eq!(v.create_network_interface(&create).unwrap_err().code, "RequestLimitExceeded");
    }
    // The storm is over: the whole burst of 100 is still there.
    v.set_now(Time::from_secs(10));
    for i in 0..100 {
        let r = v.create_network_interface(&create);
        assert!(r.is_ok() || r.unwrap_err().code.starts_with("Insufficient"), "call {i}");
    }
}

#[test]
fn new_enis_carry_their_tags_and_the_unattached_ones_of_an_instance_can_be_listed() {
    let (mut v, s) = vpc(10);
    let (inst, _) = v.run_instance(m5(), &s).unwrap();
    let owner = crate::exec::Owner { instance: inst.clone(), cluster: Some("prod".into()), security_groups: vec![] };
    let out = crate::exec::execute(
        &mut v,
        &owner,
        1_800_000_000,
        &Call::CreateEni {
            subnet: s.clone(),
            discover_in: None,
            avoid: vec![],
            security_groups: vec![],
            secondary_ips: 1,
            prefixes: 0,
        },
    )
    .unwrap();
    let CallOutput::Eni(info) = out else { panic!("{out:?}") };
    let d = v.peek_eni(&info.id).unwrap();
    assert_eq!(d.description, format!("podip-{inst}"));
    assert_eq!(d.tags[crate::TAG_INSTANCE_ID], inst.0);
    assert_eq!(d.tags[crate::TAG_CREATED_AT], "2027-01-15T08:00:00Z");
    assert_eq!(d.tags[crate::TAG_CLUSTER], "prod");
    let listed = crate::exec::execute(&mut v, &owner, 0, &Call::ListUnattached).unwrap();
    assert_eq!(listed, CallOutput::Leaked(vec![(info.id.clone(), true)]));
    // The sweep collects for the whole cluster: any node of "prod" lists it, none of "staging".
    let same =
        crate::exec::Owner { instance: "i-another".into(), cluster: Some("prod".into()), security_groups: vec![] };
    assert_eq!(
        crate::exec::execute(&mut v, &same, 0, &Call::ListUnattached).unwrap(),
        CallOutput::Leaked(vec![(info.id.clone(), false)])
    );
    // An ENI tagged no_manage is never listed, leaked or not.
    let mut keep = CreateEni {
        subnet: s.clone(),
        description: format!("podip-{}", owner.instance),
        tags: owner.tags("2027-01-15T08:00:00Z".into()),
        ..CreateEni::default()
    };
    keep.tags.push((crate::TAG_NO_MANAGE.into(), "true".into()));
    v.create_network_interface(&keep).unwrap();
    assert_eq!(crate::exec::execute(&mut v, &owner, 0, &Call::ListUnattached).unwrap(), listed);
    let other =
        crate::exec::Owner { instance: "i-another".into(), cluster: Some("staging".into()), security_groups: vec![] };
    assert_eq!(crate::exec::execute(&mut v, &other, 0, &Call::ListUnattached).unwrap(), CallOutput::Leaked(vec![]));
}

#[test]
fn an_eni_attached_by_api_outlives_its_instance_unless_set_to_go_with_it() {
    let (mut v, s) = vpc(13);
    let (inst, _) = v.run_instance(m5(), &s).unwrap();
    let owner = crate::exec::Owner::new(inst.clone());
    let attach = |v: &mut SimVpc, dev: u32| {
        let c = Call::CreateEni {
            subnet: s.clone(),
            discover_in: None,
            avoid: vec![],
            security_groups: vec![],
            secondary_ips: 2,
            prefixes: 0,
        };
        let Ok(CallOutput::Eni(info)) = crate::exec::execute(v, &owner, 0, &c) else { panic!() };
        crate::exec::execute(v, &owner, 0, &Call::AttachEni { eni: info.id.clone(), device_index: dev }).unwrap();
        info.id
    };
    let kept = attach(&mut v, 1);
    let goes = attach(&mut v, 2);
    assert!(!v.peek_eni(&goes).unwrap().delete_on_termination);
    crate::exec::execute(&mut v, &owner, 0, &Call::ProtectEni { eni: goes.clone() }).unwrap();
    assert!(v.peek_eni(&goes).unwrap().delete_on_termination);
    v.terminate_instance(&inst).unwrap();
    assert!(v.peek_eni(&goes).is_none());
    let left = v.peek_eni(&kept).unwrap();
    assert_eq!((left.status, left.secondary_ips.len()), (EniStatus::Available, 2), "a leak: it keeps its addresses");
    assert!(v.check_invariants().is_empty(), "{:?}", v.check_invariants());
}

#[test]
fn the_metadata_view_lags_ec2() {
    let (mut v, s) = vpc(11);
    let (inst, p) = v.run_instance(m5(), &s).unwrap();
    v.set_now(Time::from_secs(100));
    let ips = v.assign_private_ip_addresses(&p.id, 2).unwrap();
    assert!(v.metadata_enis(&inst)[0].secondary_ips.is_empty(), "new addresses not visible yet");
    v.set_now(Time::from_secs(106));
    assert_eq!(v.metadata_enis(&inst)[0].secondary_ips.len(), 2);
    v.unassign_private_ip_addresses(&p.id, &ips[..1]).unwrap();
    assert_eq!(v.metadata_enis(&inst)[0].secondary_ips.len(), 2, "a released address still shows");
    assert_eq!(v.peek_eni(&p.id).unwrap().secondary_ips.len(), 1);
    v.set_now(Time::from_secs(112));
    assert_eq!(v.metadata_enis(&inst)[0].secondary_ips, ips[1..].to_vec());
}

#[test]
fn subnet_discovery_puts_an_eni_in_the_tagged_subnet_with_the_most_room() {
    let (mut v, node) = vpc(12); // /24
    let tagged_small = v.add_subnet("us-east-1a", "10.0.1.0/26".parse().unwrap()).unwrap();
    let tagged_big = v.add_subnet("us-east-1a", "10.0.4.0/22".parse().unwrap()).unwrap();
    let untagged = v.add_subnet("us-east-1a", "10.0.8.0/21".parse().unwrap()).unwrap();
    let other_az = v.add_subnet("us-east-1b", "10.0.16.0/20".parse().unwrap()).unwrap();
    v.tag_subnet(&tagged_small, crate::TAG_SUBNET_CNI, "1").unwrap();
    v.tag_subnet(&tagged_big, crate::TAG_SUBNET_CNI, "1").unwrap();
    v.tag_subnet(&other_az, crate::TAG_SUBNET_CNI, "1").unwrap();
    let (inst, _) = v.run_instance(m5(), &node).unwrap();
    let owner = crate::exec::Owner { instance: inst, cluster: Some("prod".into()), security_groups: vec![] };
    let create = |discover: bool| Call::CreateEni {
        subnet: node.clone(),
        discover_in: discover.then(|| "us-east-1a".to_string()),
        avoid: vec![],
        security_groups: vec![],
        secondary_ips: 1,
        prefixes: 0,
    };
    let subnet_of = |v: &mut SimVpc, c: &Call| match crate::exec::execute(v, &owner, 0, c) {
        Ok(CallOutput::Eni(info)) => Ok(info.subnet),
        Ok(other) => panic!("{other:?}"),
        Err(e) => Err(e),
    };
    assert_eq!(subnet_of(&mut v, &create(false)).unwrap(), node);
    // The /22 has the most free addresses; the untagged /21 and the other AZ are never used.
    assert_eq!(subnet_of(&mut v, &create(true)).unwrap(), tagged_big);
    // A subnet that names clusters serves only those.
    v.tag_subnet(&tagged_big, &format!("{}other", crate::TAG_SUBNET_CLUSTER_PREFIX), "shared").unwrap();
    assert_eq!(subnet_of(&mut v, &create(true)).unwrap(), node, "the node's /24 has more room than the /26");
    // The node's own subnet is left out when tagged 0; a full subnet is skipped.
    v.tag_subnet(&node, crate::TAG_SUBNET_CNI, "0").unwrap();
    assert_eq!(subnet_of(&mut v, &create(true)).unwrap(), tagged_small);
    // A subnet the engine saw run out is not tried again: no create call is made at all.
    let mut avoiding = create(true);
    if let Call::CreateEni { avoid, .. } = &mut avoiding {
        avoid.push(tagged_small.clone());
    }
    let creates = |v: &SimVpc| v.action_stats().get(&Action::CreateNetworkInterface).map_or(0, |s| s.calls);
    let before = creates(&v);
    assert!(subnet_of(&mut v, &avoiding).unwrap_err().is_insufficient_addresses());
    assert_eq!(creates(&v), before);
    v.occupy_random(&tagged_small, 1000).unwrap();
    let e = subnet_of(&mut v, &create(true)).unwrap_err();
    assert_eq!(e.code, "InsufficientFreeAddressesInSubnet", "{e}");
    let _ = untagged;
}

#[derive(Clone, Debug)]
enum Op {
    Create { ips: u32, prefixes: u32 },
    AssignIps(usize, u32),
    AssignPrefixes(usize, u32),
    UnassignSome(usize),
    Delete(usize),
    Occupy(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u32..5, 0u32..3).prop_map(|(ips, prefixes)| Op::Create { ips, prefixes }),
        (0usize..8, 1u32..6).prop_map(|(i, n)| Op::AssignIps(i, n)),
        (0usize..8, 1u32..4).prop_map(|(i, n)| Op::AssignPrefixes(i, n)),
        (0usize..8).prop_map(Op::UnassignSome),
        (0usize..8).prop_map(Op::Delete),
        (1u32..20).prop_map(Op::Occupy),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    /// Whatever the sequence of calls, no address is held twice, none is reserved or outside its
    /// subnet, prefixes are aligned, and ENI and address limits hold.
    #[test]
    fn the_vpc_keeps_its_invariants(seed in 0u64..1000, ops in proptest::collection::vec(op(), 1..60)) {
        let mut v = SimVpc::new(SimParams { seed, buckets: BTreeMap::new(), ..SimParams::default() });
        v.add_vpc_cidr("10.0.0.0/16".parse().unwrap()).unwrap();
        let s = v.add_subnet("az1", "10.0.0.0/25".parse().unwrap()).unwrap();
        let (inst, _) = v.run_instance(m5(), &s).unwrap();
        let mut enis: Vec<EniId> = Vec::new();
        for op in ops {
            match op {
                Op::Create { ips, prefixes } => {
                    let req = CreateEni { subnet: s.clone(), security_groups: vec![], secondary_ips: ips, prefixes, ..CreateEni::default() };
                    if let Ok(e) = v.create_network_interface(&req) {
                        let dev = enis.len() as u32 + 1;
                        if v.attach_network_interface(&e.id, &inst, dev).is_ok() {
                            enis.push(e.id);
                        } else {
                            v.delete_network_interface(&e.id).unwrap();
                        }
                    }
                }
                Op::AssignIps(i, n) if !enis.is_empty() => { let _ = v.assign_private_ip_addresses(&enis[i % enis.len()], n); }
                Op::AssignPrefixes(i, n) if !enis.is_empty() => { let _ = v.assign_ipv4_prefixes(&enis[i % enis.len()], n); }
                Op::UnassignSome(i) if !enis.is_empty() => {
                    let d = v.describe(&enis[i % enis.len()]).unwrap();
                    v.unassign_private_ip_addresses(&d.id, &d.secondary_ips[..d.secondary_ips.len() / 2]).unwrap();
                    v.unassign_ipv4_prefixes(&d.id, &d.prefixes[..d.prefixes.len() / 2]).unwrap();
                }
                Op::Delete(i) if !enis.is_empty() => {
                    let id = enis.remove(i % enis.len());
                    v.detach_network_interface(&id).unwrap();
                    // Detaching takes seconds: the ENI is in use until then.
                    prop_assert_eq!(v.delete_network_interface(&id).unwrap_err().code, "InvalidNetworkInterface.InUse");
                    let later = v.now() + Duration::from_secs(6);
                    v.set_now(later);
                    v.delete_network_interface(&id).unwrap();
                }
                Op::Occupy(n) => { v.occupy_random(&s, n).unwrap(); }
                _ => {}
            }
            let bad = v.check_invariants();
            prop_assert!(bad.is_empty(), "{:?}", bad);
        }
    }
}
