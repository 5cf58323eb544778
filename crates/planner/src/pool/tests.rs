//! The VPC CNI documentation's worked examples (`docs/eni-and-ip-target.md` and
//! `docs/prefix-and-ip-target.md` in aws/amazon-vpc-cni-k8s), reproduced on the simulated VPC.

use super::*;

fn pool(t: &str, pods: u32, f: impl FnOnce(&mut NodeSettings)) -> PoolReport {
    let mut settings = NodeSettings::default();
    f(&mut settings);
    run_pool(&PoolRequest { instance_type: t.into(), pods, settings, custom_networking: false, seed: 1 }).unwrap()
}

fn per_eni_ips(r: &PoolReport) -> Vec<u32> {
    r.enis.iter().map(|e| e.secondary_ips).collect()
}

fn per_eni_prefixes(r: &PoolReport) -> Vec<u32> {
    r.enis.iter().map(|e| e.prefixes).collect()
}

/// `eni-and-ip-target.md`: (type, WARM_ENI, WARM_IP, MIN_IP, pods, IPs per ENI).
type SecondaryCase = (&'static str, u32, u32, u32, u32, &'static [u32]);

#[test]
fn secondary_ip_mode_matches_the_documented_examples() {
    let cases: &[SecondaryCase] = &[
        ("t3.small", 1, 0, 0, 0, &[3]),
        ("t3.small", 1, 0, 0, 5, &[3, 3, 3]),
        ("t3.small", 1, 0, 0, 9, &[3, 3, 3]),
        ("t3.small", 0, 1, 1, 0, &[1]),
        ("t3.small", 0, 1, 1, 5, &[3, 3]),
        ("t3.small", 0, 1, 1, 9, &[3, 3, 3]),
        ("t3.small", 0, 2, 5, 0, &[3, 2]),
        ("t3.small", 0, 2, 5, 5, &[3, 3, 1]),
        ("t3.small", 0, 2, 5, 9, &[3, 3, 3]),
        ("p3dn.24xlarge", 1, 0, 0, 0, &[49]),
        ("p3dn.24xlarge", 1, 0, 0, 3, &[49, 49]),
        ("p3dn.24xlarge", 1, 0, 0, 95, &[49, 49, 49]),
        ("p3dn.24xlarge", 0, 5, 10, 0, &[10]),
        ("p3dn.24xlarge", 0, 5, 10, 7, &[12]),
        ("p3dn.24xlarge", 0, 5, 10, 15, &[20]),
        ("p3dn.24xlarge", 0, 5, 10, 45, &[49, 1]),
    ];
    for &(t, we, wi, mi, pods, want) in cases {
        let r = pool(t, pods, |s| {
            s.warm_eni = we;
            s.warm_ip = wi;
            s.minimum_ip = mi;
        });
        assert_eq!(per_eni_ips(&r), want, "{t} WARM_ENI={we} WARM_IP={wi} MIN_IP={mi} pods={pods}");
        assert_eq!(r.total_ips, want.iter().map(|v| u64::from(*v)).sum::<u64>());
        assert_eq!(r.assigned, u64::from(pods));
        assert!(r.settled);
    }
}

/// `prefix-and-ip-target.md`, t3.small: (WARM_PREFIX, WARM_IP, MIN_IP, pods, prefixes per ENI).
/// The row "WARM_IP 7, MIN_IP 20, 0 pods" says 1 prefix in one column and 2 in another; the
/// VPC CNI's code (`datastoreTargetState`: ceil(20/16) = 2) gives 2, which is what is checked.
#[test]
fn prefix_mode_matches_the_documented_examples() {
    let cases: &[(u32, u32, u32, u32, &[u32])] = &[
        (1, 0, 0, 0, &[1]),
        (1, 0, 0, 5, &[2]),
        (1, 0, 0, 16, &[2]),
        (1, 0, 0, 17, &[3]),
        (1, 0, 0, 58, &[3, 2]),
        (0, 1, 1, 0, &[1]),
        (0, 1, 1, 5, &[1]),
        (0, 1, 1, 17, &[2]),
        (0, 1, 1, 58, &[3, 1]),
        (0, 7, 20, 0, &[2]),
        (0, 7, 20, 5, &[2]),
        (0, 7, 20, 17, &[2]),
        (0, 7, 20, 58, &[3, 2]),
    ];
    for &(wp, wi, mi, pods, want) in cases {
        let r = pool("t3.small", pods, |s| {
            s.prefix_delegation = true;
            s.warm_prefix = Some(wp);
            s.warm_ip = wi;
            s.minimum_ip = mi;
        });
        assert_eq!(per_eni_prefixes(&r), want, "WARM_PREFIX={wp} WARM_IP={wi} MIN_IP={mi} pods={pods}");
        assert_eq!(r.total_ips, 16 * want.iter().map(|v| u64::from(*v)).sum::<u64>());
    }
}

#[test]
fn custom_networking_keeps_pods_off_the_primary_eni() {
    let r = run_pool(&PoolRequest {
        instance_type: "m5.large".into(),
        pods: 12,
        settings: NodeSettings::default(),
        custom_networking: true,
        seed: 1,
    })
    .unwrap();
    assert_eq!(r.max_pods, 20);
    assert_eq!(per_eni_ips(&r), vec![0, 9, 9]);
    assert_eq!(r.enis[0].pods, 0);
    assert!(r.enis[1..].iter().all(|e| e.subnet != r.enis[0].subnet));
}

#[test]
fn pool_growth_stops_at_max_pods() {
    // m5.large: 29 max pods; WARM_ENI 1 would want a 4th ENI's worth but the pool stops at 27 IPs.
    let r = pool("m5.large", 20, |_| {});
    assert_eq!(per_eni_ips(&r), vec![9, 9, 9]);
    let r = pool("m5.large", 10, |s| s.max_pods = Some(12));
    assert_eq!(per_eni_ips(&r), vec![9, 9], "total 18 >= 12 stops growth");
}

#[test]
fn too_many_pods_is_an_input_error_naming_the_values() {
    let err = run_pool(&PoolRequest {
        instance_type: "t3.small".into(),
        pods: 12,
        settings: NodeSettings::default(),
        custom_networking: false,
        seed: 1,
    })
    .unwrap_err();
    assert!(err.is_input());
    assert_eq!(err.to_string(), "--pods 12 is more than the node's max pods 11 for t3.small");
}

#[test]
fn counts_the_ec2_calls_of_a_scale_up() {
    let r = pool("t3.small", 5, |_| {});
    assert_eq!(r.ec2_calls.get("CreateNetworkInterface"), Some(&2));
    assert_eq!(r.ec2_calls.get("AttachNetworkInterface"), Some(&2));
    assert_eq!(r.ec2_calls.get("AssignPrivateIpAddresses"), Some(&1));
}

#[test]
fn same_seed_same_pool() {
    let a = pool("m5.xlarge", 30, |s| s.warm_ip = 2);
    let b = pool("m5.xlarge", 30, |s| s.warm_ip = 2);
    assert_eq!(a, b);
}
