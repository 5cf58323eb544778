//! The upstream VPC CNI cases of `vpc-cni-behaviour.md` §8, tables A–D.

use super::*;

fn sip(max_ips: u32, warm_eni: u32, warm_ip: u32, max_pods: u32) -> VpcCni {
    VpcCni {
        cfg: PolicyConfig {
            targets: WarmTargets { warm_eni, warm_ip, minimum_ip: 0, warm_prefix: 0 },
            prefix_delegation: false,
            limits: PoolLimits { max_enis: 4, blocks_per_eni: max_ips, max_pods },
            corrected: false,
        },
    }
}

fn pd(warm_prefix: u32, warm_ip: u32, max_pods: u32) -> VpcCni {
    VpcCni {
        cfg: PolicyConfig {
            targets: WarmTargets { warm_eni: 1, warm_ip, minimum_ip: 0, warm_prefix },
            prefix_delegation: true,
            limits: PoolLimits { max_enis: 4, blocks_per_eni: 16, max_pods },
            corrected: false,
        },
    }
}

fn stats(total: u64, assigned: u64) -> Stats {
    Stats { total, assigned, ..Stats::default() }
}

/// Prefix-mode stats: `prefixes` /28s with `assigned` pods packed into the first ones.
fn pstats(prefixes: u64, assigned: u64) -> Stats {
    let used = assigned.div_ceil(16);
    Stats {
        total: prefixes * 16,
        assigned,
        total_prefixes: prefixes,
        free_prefixes: prefixes - used,
        idle_prefixes: prefixes - used,
        cooling: 0,
    }
}

#[test]
fn table_a_pool_too_low_secondary_ip() {
    // (#, maxIPsPerENI, WARM_ENI, WARM_IP, total, assigned, maxPods, expected)
    let cases = [
        (1, 14, 1, 0, 0, 0, 500, true),
        (2, 14, 0, 0, 0, 0, 500, true),
        (3, 14, 0, 3, 0, 0, 500, true),
        (4, 3, 1, 1, 3, 0, 500, false),
        (5, 3, 1, 0, 3, 1, 500, true),
        (6, 3, 0, 0, 3, 1, 500, false),
        (7, 3, 1, 0, 3, 3, 500, true),
        (8, 3, 0, 0, 3, 3, 500, true),
        (9, 3, 0, 5, 3, 3, 3, false),
    ];
    for (n, max_ips, we, wi, tot, asg, mp, want) in cases {
        assert_eq!(sip(max_ips, we, wi, mp).is_low(&stats(tot, asg)), want, "case #{n}");
    }
}

#[test]
fn table_b_pool_too_low_prefix_mode() {
    // (#, WARM_PREFIX, prefixes, assigned, maxPods, expected)
    let cases = [
        (10, 1, 0, 0, 500, true),
        (11, 0, 0, 0, 500, true),
        (12, 1, 1, 0, 500, false),
        (13, 1, 1, 1, 500, true),
        (14, 0, 1, 1, 500, false),
        (15, 1, 1, 3, 500, true),
        (16, 0, 1, 3, 500, false),
        (17, 1, 1, 3, 4, false),
    ];
    for (n, wp, prefixes, asg, mp, want) in cases {
        assert_eq!(pd(wp, 0, mp).is_low(&pstats(prefixes, asg)), want, "case #{n}");
    }
}

#[test]
fn table_c_target_state() {
    let ts = |p: &VpcCni, s: Stats| {
        let t = p.target_state(&s);
        (t.short, t.over, t.enabled)
    };
    assert!(!sip(14, 1, 0, 500).target_state(&stats(0, 0)).enabled); // #18
    assert_eq!(ts(&sip(14, 0, 5, 500), stats(0, 0)), (5, 0, true)); // #19
    assert_eq!(ts(&sip(14, 0, 5, 500), stats(2, 0)), (3, 0, true)); // #20
    assert_eq!(ts(&sip(14, 0, 5, 500), stats(5, 0)), (0, 0, true)); // #21
    assert_eq!(ts(&pd(0, 5, 500), pstats(0, 0)), (1, 0, true)); // #22
    assert_eq!(ts(&pd(0, 5, 500), pstats(2, 0)), (0, 1, true)); // #23
    assert_eq!(ts(&pd(0, 5, 500), pstats(1, 0)), (0, 0, true)); // #24
    // #25: 2 ENIs x 2 IPs, one pod each, WARM_IP 1 -> over 1; #26 after freeing one -> (0, 0).
    assert_eq!(ts(&sip(14, 0, 1, 500), stats(4, 2)), (0, 1, true));
    assert_eq!(ts(&sip(14, 0, 1, 500), stats(3, 2)), (0, 0, true));
}

fn view(primary: bool, total: u64, assigned: u64) -> EniView {
    EniView { primary, pinned: false, age: Duration::from_secs(3600), stats: stats(total, assigned) }
}

fn policy(warm_ip: u32, min_ip: u32) -> VpcCni {
    let mut p = sip(2, 0, warm_ip, 500);
    p.cfg.targets.minimum_ip = min_ip;
    p
}

#[test]
fn table_d_which_eni_is_freed() {
    // eni-1 primary 2 IPs 2 pods; eni-2 2 free IPs; eni-3 1 free IP.
    let mut enis = vec![("eni-1", view(true, 2, 2)), ("eni-2", view(false, 2, 0)), ("eni-3", view(false, 1, 0))];
    let pick = |enis: &[(&'static str, EniView)], w, m| {
        let views: Vec<EniView> = enis.iter().map(|(_, v)| *v).collect();
        first_deletable(&policy(w, m), &views).map(|i| enis[i].0)
    };
    assert_eq!(pick(&enis, 3, 1), None); // #27
    assert_eq!(pick(&enis, 1, 5), None); // #28
    assert_eq!(pick(&enis, 2, 4), Some("eni-3")); // #29
    enis.retain(|(n, _)| *n != "eni-3");
    assert_eq!(pick(&enis, 0, 3), None); // #30
    assert_eq!(pick(&enis, 0, 2), Some("eni-2")); // #31
    enis.retain(|(n, _)| *n != "eni-2");
    // #32: a trunk and an EFA ENI with one IP each are never freed.
    let mut trunk = view(false, 1, 0);
    trunk.pinned = true;
    enis.push(("eni-4", trunk));
    enis.push(("eni-5", trunk));
    assert_eq!(pick(&enis, 0, 2), None);
    assert_eq!(enis.len(), 3);
    // #33: an ENI with no IPs is freed.
    enis.push(("eni-6", view(false, 0, 0)));
    assert_eq!(pick(&enis, 0, 2), Some("eni-6"));
}

#[test]
fn young_or_cooling_enis_are_kept() {
    let mut young = view(false, 2, 0);
    young.age = Duration::from_secs(59);
    let p = policy(0, 0);
    assert!(!p.eni_deletable(&young, &[view(true, 2, 2)]));
    let mut cooling = view(false, 2, 0);
    cooling.stats.cooling = 1;
    assert!(!p.eni_deletable(&cooling, &[view(true, 2, 2)]), "TestPodIPv4Address: cooling IP pins the ENI");
}

#[test]
fn upstream_counts_cooling_as_available_podip_does_not() {
    // Issue #2896: 5 addresses all cooling, WARM_IP 5 -> upstream sees no shortfall.
    let mut p = sip(14, 0, 5, 500);
    let s = Stats { total: 5, assigned: 0, cooling: 5, ..Stats::default() };
    assert_eq!(p.target_state(&s).short, 0);
    p.cfg.corrected = true;
    assert_eq!(p.target_state(&s).short, 5);
    assert!(p.is_low(&s));
}

#[test]
fn pd_warm_prefix_counts_available_ips_not_whole_prefixes() {
    // §2.6: 2 prefixes with 1 pod each (avail 30) is not low for WARM_PREFIX 1.
    let p = pd(1, 0, 500);
    let s = Stats { total: 32, assigned: 2, total_prefixes: 2, free_prefixes: 0, idle_prefixes: 0, cooling: 0 };
    assert!(!p.is_low(&s));
}

#[test]
fn scattered_pods_pin_prefixes() {
    // §2.11: 3 prefixes with 1 pod each and WARM_IP 15 gives over = 0.
    let p = pd(0, 15, 500);
    let s = Stats { total: 48, assigned: 3, total_prefixes: 3, free_prefixes: 0, idle_prefixes: 0, cooling: 0 };
    assert_eq!(p.target_state(&s).over, 0);
}

#[test]
fn podip_keeps_an_eni_the_pool_would_recreate() {
    // WARM_ENI_TARGET=0 under custom networking: the primary holds nothing, one idle pod ENI.
    let mut p = sip(3, 0, 0, 500);
    let primary = view(true, 0, 0);
    let pod_eni = view(false, 3, 0);
    assert!(p.eni_deletable(&pod_eni, &[primary]), "upstream frees it (and re-creates it next cycle)");
    p.cfg.corrected = true;
    assert!(!p.eni_deletable(&pod_eni, &[primary]));
}
