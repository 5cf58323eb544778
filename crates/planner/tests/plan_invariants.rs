//! Invariants of `podip plan` on several scenarios.

use planner::plan::{PlanReport, VariantReport, run_plan};
use planner::scenario::Scenario;

fn plan(text: &str) -> PlanReport {
    run_plan(&Scenario::parse(text).unwrap(), 2, &|_, _| {})
}

fn variant<'a>(r: &'a PlanReport, id: &str) -> &'a VariantReport {
    r.variants.iter().find(|v| v.id == id).unwrap_or_else(|| panic!("no variant {id}"))
}

fn example() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/small-cluster.toml")).unwrap()
}

/// A /24 node subnet (251 usable) in two AZs, `used` addresses scattered, optional reservation.
fn tight(used: u32, reservation: &str) -> String {
    format!(
        r#"
seed = 5
horizon_hours = 2
[vpc]
cidrs = ["10.1.0.0/16"]
[[subnets]]
az = "us-east-1a"
cidr = "10.1.0.0/23"
used = {used}
pattern = "striped"
{reservation}
[[node_groups]]
instance_type = "m5.large"
nodes = 4
[workload]
pods_per_node = 10
churn_per_hour = 1
"#
    )
}

#[test]
fn non_routable_strategies_use_no_routable_addresses_for_pods() {
    for text in [example(), tight(0, "")] {
        let r = plan(&text);
        let nodes = u64::from(r.peak_nodes);
        let cn = variant(&r, "custom-networking");
        assert_eq!(cn.routable_peak, nodes, "custom networking: only node primaries are routable");
        assert!(cn.nonroutable_peak > 0);
        let nat = variant(&r, "private-nat-gateway");
        let nat_plan = nat.nat.as_ref().unwrap();
        assert_eq!(nat.routable_peak, u64::from(nat_plan.gateways * nat_plan.addresses_per_gateway));
        assert!(nat.monthly_cost_usd > 0.0);
        let v6 = variant(&r, "ipv6");
        assert_eq!(v6.routable_peak, nodes, "IPv6: exactly one routable IPv4 per node");
        assert_eq!(v6.pods_failed, 0);
    }
}

#[test]
fn prefix_delegation_needs_free_aligned_blocks_and_a_reservation_provides_them() {
    // Striped usage leaves no free /28 in the subnet: prefix delegation cannot start pods.
    let r = plan(&tight(32, ""));
    let pd = variant(&r, "prefix-delegation");
    assert!(pd.pods_failed > 0, "{pd:?}");
    assert_eq!(pd.headroom_nodes, 0);
    // The same subnet and usage, with a prefix reservation made before the usage landed.
    let r = plan(&tight(32, r#"reservations = [{ cidr = "10.1.1.0/25", type = "prefix" }]"#));
    let pd = variant(&r, "prefix-delegation");
    assert_eq!(pd.pods_failed, 0, "{pd:?}");
    assert!(pd.pods_started > 0);
}

#[test]
fn vpc_cni_defaults_hold_more_idle_addresses_than_tuned_targets() {
    for text in [example(), tight(0, "")] {
        let r = plan(&text);
        let today = variant(&r, "vpc-cni-today");
        let tuned = variant(&r, "warm-pool-tuned");
        assert!(today.idle_avg > tuned.idle_avg, "today {} vs tuned {}", today.idle_avg, tuned.idle_avg);
        assert!(today.routable_peak >= tuned.routable_peak);
    }
}

#[test]
fn the_same_seed_gives_the_same_report() {
    let a = serde_json::to_string(&plan(&example())).unwrap();
    let b = serde_json::to_string(&plan(&example())).unwrap();
    assert_eq!(a, b);
    let c = serde_json::to_string(&plan(&example().replace("seed = 42", "seed = 43"))).unwrap();
    assert_ne!(a, c);
}

#[test]
fn recommends_the_least_disruptive_variant_meeting_the_headroom() {
    let r = plan(&example());
    let pick = variant(&r, &r.recommendation.variant);
    assert!(pick.meets_headroom && pick.pods_failed == 0);
    for v in &r.variants {
        if v.meets_headroom && v.pods_failed == 0 && v.nodes_failed == 0 {
            assert!(v.disruption >= pick.disruption, "{} is less disruptive than {}", v.id, pick.id);
        }
    }
}

/// #8's first problem: a rollout that peaks mid-run and is gone by the end must count. The
/// headroom is what still fits at the busiest moment, not at the end.
#[test]
fn headroom_is_taken_at_the_peak_not_at_the_end() {
    // Four nodes, grown to twelve for a rollout at a quarter past and back to four at one hour.
    let base = tight(0, "");
    let with_rollout = base.replace(
        "nodes = 4\n",
        "nodes = 4\nmax = 12\n[[node_groups.scale]]\nat_hour = 0.25\nnodes = 12\n[[node_groups.scale]]\nat_hour = 1\nnodes = 4\n",
    );
    let quiet = plan(&base);
    let busy = plan(&with_rollout);
    let (q, b) = (variant(&quiet, "vpc-cni-today"), variant(&busy, "vpc-cni-today"));
    assert!(
        b.routable_peak > q.routable_peak,
        "the rollout raised the peak: {} vs {}",
        b.routable_peak,
        q.routable_peak
    );
    assert!(
        b.headroom_nodes < q.headroom_nodes,
        "room at the peak ({}) must be less than with no rollout ({})",
        b.headroom_nodes,
        q.headroom_nodes
    );
}

/// #8's second problem: a variant that starts every pod but after long waits, or throttles the
/// account's shared buckets, or runs over the NAU quota, is not recommended, and says why.
#[test]
fn a_variant_that_waits_throttles_or_overruns_nau_falls_short_by_its_numbers() {
    let sc = Scenario::parse(&example()).unwrap();
    let r = run_plan(&sc, 2, &|_, _| {});
    let rec = r.recommendation.variant.clone();
    let mut v = variant(&r, &rec).clone();
    assert!(v.shortfalls.is_empty(), "the recommended variant qualifies: {:?}", v.shortfalls);
    v.wait_p99_s = 557.0;
    v.throttled_share = 0.81;
    v.nau_peak = 70_000;
    v.pods_unschedulable = 40;
    let s = planner::plan::shortfalls(&sc, &v, 0).join("; ");
    assert!(s.contains("40 pods unschedulable at max pods 58 (today: 0): more nodes needed"), "{s}");
    assert!(!planner::plan::shortfalls(&sc, &v, 40).join("; ").contains("unschedulable"));
    assert!(s.contains("wait p99 557.0 s (bound 30 s)"), "{s}");
    assert!(s.contains("% of its EC2 calls throttled (at most 5.0%"), "{s}");
    assert!(s.contains("Network Address Usage 70000 over the VPC's quota of 64000"), "{s}");
    // Every variant that is not recommended says what it lacks.
    for other in r.variants.iter().filter(|o| o.id != rec) {
        let worse_or_equal = other.disruption >= variant(&r, &rec).disruption;
        assert!(!other.shortfalls.is_empty() || worse_or_equal, "{} qualifies and is less disruptive", other.id);
    }
}

#[test]
fn judging_settings_are_checked() {
    let bad =
        example().replace("headroom_nodes = 20", "headroom_nodes = 20\nmax_wait_p99_s = 0\nmax_throttled_share = 1.5");
    let e = Scenario::parse(&bad).unwrap_err().to_string();
    assert!(e.contains("targets.max_wait_p99_s = 0") && e.contains("targets.max_throttled_share = 1.5"), "{e}");
}

/// #8's eighth problem: NAT gateways are sized per AZ from the AZ's share of the connections,
/// more gateways per AZ when one gateway's 8 addresses run out, and over the limit only when
/// even 5 gateways per AZ would not carry them.
#[test]
fn nat_gateways_are_sized_per_az_from_the_traffic_split() {
    let nat = |conns: u32| {
        let text =
            example().replace("connections_per_destination = 3000", &format!("connections_per_destination = {conns}"));
        let r = plan(&text);
        variant(&r, "private-nat-gateway").nat.clone().unwrap()
    };
    let azs = Scenario::parse(&example()).unwrap().azs().len() as u32;
    // Few connections: one address on one gateway per AZ.
    let n = nat(1000);
    assert_eq!((n.gateways, n.gateways_per_az, n.addresses_per_gateway, n.over_limit), (azs, 1, 1, false));
    // Each AZ's share, not the whole: 1,000,000 over the AZs.
    let n = nat(1_000_000);
    let per_az_addresses = 1_000_000u32.div_ceil(azs).div_ceil(55_000);
    assert!(!n.over_limit, "{n:?}");
    assert!(n.gateways_per_az * n.addresses_per_gateway >= per_az_addresses, "{n:?}");
    assert!(n.addresses_per_gateway <= 8);
    // Truly over: more than 5 gateways × 8 addresses per AZ.
    let n = nat(azs * 5 * 8 * 55_000 + azs);
    assert!(n.over_limit, "{n:?}");
}

/// #8's eleventh problem: the non-routable space grows with the cluster. A cluster whose pods
/// can hold more addresses than one CG-NAT /16 gets a /16 per AZ (a secondary block is at most a
/// /16; an ENIConfig names one subnet per AZ); one that outgrows even that is told so.
#[test]
fn custom_networkings_pod_subnets_are_sized_to_the_cluster() {
    let text = |max: u32| {
        format!(
            r#"
seed = 1
horizon_hours = 1
[vpc]
cidrs = ["10.0.0.0/16"]
[[subnets]]
az = "us-east-1a"
cidr = "10.0.0.0/18"
[[subnets]]
az = "us-east-1b"
cidr = "10.0.64.0/18"
[[subnets]]
az = "us-east-1c"
cidr = "10.0.128.0/18"
[[node_groups]]
instance_type = "m5.xlarge"
nodes = 10
max = {max}
[workload]
pods_per_node = 10
"#
        )
    };
    let pod_space = |max: u32| {
        let sc = Scenario::parse(&text(max)).unwrap();
        let v = planner::strategy::variants(&sc).into_iter().find(|v| v.id == "custom-networking").unwrap();
        let subnets = v.spec.pod_subnets.clone().unwrap();
        let size: u64 = subnets.values().map(|id| u64::from(v.vpc.subnet(id).unwrap().size())).sum();
        (subnets.len(), size, v.caveats.clone())
    };
    // 200 nodes × 44 pods: one /16 split over the three AZs holds it.
    let (n, size, _) = pod_space(200);
    assert_eq!(n, 3);
    assert!(size <= 65_536, "{size}");
    // 2,000 nodes × 44 pods = 88,000: a /16 per AZ.
    let (n, size, caveats) = pod_space(2_000);
    assert_eq!((n, size), (3, 3 * 65_536), "{caveats:?}");
    // 10,000 nodes: more than three /16s hold; said, not hidden.
    let (_, _, caveats) = pod_space(10_000);
    assert!(caveats.iter().any(|c| c.contains("non-routable addresses; a /16 per AZ holds")), "{caveats:?}");
    // The private NAT gateway's non-routable node subnets grow too: 3,000 m5.xlarge nodes hold
    // up to 3,000 × (58 pods + 4 ENIs) = 186,000 addresses: three /16s.
    let nat_space = |max: u32| {
        let sc = Scenario::parse(&text(max)).unwrap();
        let v = planner::strategy::variants(&sc).into_iter().find(|v| v.id == "private-nat-gateway").unwrap();
        let size: u64 = v.cluster_subnets.iter().map(|id| u64::from(v.vpc.subnet(id).unwrap().size())).sum();
        (size, v.caveats.clone())
    };
    let (size, caveats) = nat_space(3_000);
    assert!(size >= 186_000 && !caveats.iter().any(|c| c.contains("non-routable addresses;")), "{size} {caveats:?}");
    let (_, caveats) = nat_space(20_000);
    assert!(caveats.iter().any(|c| c.contains("non-routable addresses;")), "{caveats:?}");
}

/// #8's second problem: the warm targets are searched, not three fixed candidates, and the
/// report names what it chose and why.
#[test]
fn the_warm_target_search_keeps_the_smallest_target_that_qualifies() {
    let r = plan(&example());
    let tuned = variant(&r, "warm-pool-tuned");
    let s = tuned.search.as_ref().expect("the searched variant says what it tried");
    assert!(s.qualifies, "{s:?}");
    assert!(tuned.shortfalls.is_empty(), "{:?}", tuned.shortfalls);
    assert!(tuned.title.starts_with(&format!("WARM_IP_TARGET={}, ", s.chosen)), "{}", tuned.title);
    for (w, short) in &s.tried {
        if *w < s.chosen {
            assert!(!short.is_empty(), "{w} qualifies and is smaller than {}", s.chosen);
        }
    }
    assert!(s.tried.len() >= 2, "{s:?}");
    assert!(
        tuned.caveats.iter().any(|c| c.contains(&format!("{} qualifies with the fewest idle addresses", s.chosen)))
    );
    let apply = &tuned.config["apply.sh"];
    assert!(apply.contains(&format!("WARM_IP_TARGET={}", s.chosen)), "{apply}");
}

/// #8's fourth problem: pods kubelet would refuse (the node at its max pods, host-network pods
/// counted) are unschedulable, not "waiting for an address"; every pod is accounted for.
#[test]
fn pods_over_max_pods_are_unschedulable_and_every_pod_is_accounted_for() {
    // m5.large: max pods 29, 20 under custom networking; 25 pods and 2 host-network pods fit
    // 29 but not 20.
    let text = tight(0, "").replace("pods_per_node = 10", "pods_per_node = 25");
    let r = plan(&text);
    for v in &r.variants {
        assert!(
            v.pods_started + v.pods_failed + v.pods_unschedulable <= v.pods_asked,
            "{}: {} + {} + {} of {}",
            v.id,
            v.pods_started,
            v.pods_failed,
            v.pods_unschedulable,
            v.pods_asked
        );
    }
    let today = variant(&r, "vpc-cni-today");
    assert_eq!(today.pods_unschedulable, 0);
    let cn = variant(&r, "custom-networking");
    assert!(cn.pods_unschedulable >= 4 * 7, "{cn:?}");
    assert_eq!(cn.pods_failed, 0, "refused by kubelet is not a pod without an address");
    assert!(cn.shortfalls.iter().any(|s| s.contains("pods unschedulable at max pods 20")), "{:?}", cn.shortfalls);
}

/// #8's seventh problem: a VPC whose CIDR is mostly unallocated gets new subnets as a way out
/// (sized to the need, inside the VPC, overlapping nothing), labelled as the change it is.
#[test]
fn a_vpc_with_room_gets_new_subnets_for_subnet_discovery() {
    // A nearly full /23 in a /16 that holds nothing else.
    let r = plan(&format!("{}[targets]\nheadroom_nodes = 8\n", tight(440, "")));
    let today = variant(&r, "vpc-cni-today");
    let new = variant(&r, "new-subnets");
    assert_eq!(new.disruption, planner::strategy::Disruption::DiscoverySubnets);
    assert!(new.disruption < planner::strategy::Disruption::NodeReplacement);
    assert!(new.headroom_nodes > today.headroom_nodes, "{} vs {}", new.headroom_nodes, today.headroom_nodes);
    assert!(new.headroom_nodes >= 8, "{}", new.headroom_nodes);
    assert_eq!(new.pods_failed, 0);
    let script = &new.config["new-subnets.sh"];
    assert!(script.contains("Key=kubernetes.io/role/cni,Value=1"), "{script}");
    let vpc: ipnet::Ipv4Net = "10.1.0.0/16".parse().unwrap();
    let node: ipnet::Ipv4Net = "10.1.0.0/23".parse().unwrap();
    for line in script.lines().filter(|l| l.contains("=$(subnet ")) {
        let cidr: ipnet::Ipv4Net = line.split_whitespace().nth(2).unwrap().parse().unwrap();
        assert!(vpc.contains(&cidr) && !cidr.contains(&node) && !node.contains(&cidr), "{line}");
    }
}

/// #8's third problem: settings aws-node refuses launch no node; that is a failed node launch
/// with its pods asked for, never a variant that "starts every pod" of none.
#[test]
fn settings_aws_node_refuses_fail_every_node_launch_and_count_their_pods() {
    let sc = Scenario::parse(&example()).unwrap();
    let mut v = planner::strategy::variants(&sc).remove(0);
    v.spec.settings.prefix_delegation = true;
    v.spec.settings.warm_prefix = Some(0);
    v.spec.settings.warm_ip = 0;
    v.spec.settings.minimum_ip = 0;
    let (out, _) = planner::cluster::Cluster::new(&v.spec, v.vpc.clone()).run(&mut |_| {});
    assert!(out.nodes_failed >= 12, "{}", out.nodes_failed);
    assert_eq!(out.started, 0);
    assert!(out.asked >= 12 * 22, "{}", out.asked);
    assert_eq!(out.errors.len(), 1, "said once: {:?}", out.errors);
}

/// A private NAT plan whose gateways cannot carry the connections, or whose addresses do not fit
/// the routable subnets, is not recommended; its gateways per AZ each get node subnets.
#[test]
fn a_nat_plan_that_cannot_work_falls_short() {
    let text = tight(0, "").replace("used = 0", "used = 490") + "[traffic]\nconnections_per_destination = 1000000000\n";
    let r = plan(&text);
    let nat = variant(&r, "private-nat-gateway");
    let s = nat.shortfalls.join("; ");
    assert!(s.contains("1000000000 connections to one destination need more than 5 NAT gateways"), "{s}");
    assert!(
        s.contains("us-east-1a needs 40 addresses for its NAT gateways; its routable subnet with the most room"),
        "{s}"
    );
    assert_ne!(r.recommendation.variant, "private-nat-gateway");
    let script = &nat.config["nat.sh"];
    let gateways = script.lines().filter(|l| l.contains("=$(nat_gateway ")).count();
    assert_eq!(gateways as u32, nat.nat.as_ref().unwrap().gateways, "{script}");
}

/// New subnets never go into the VPC's non-routable blocks, nor into networks the scenario names
/// as reached elsewhere.
#[test]
fn new_subnets_avoid_non_routable_blocks_and_known_networks() {
    let text = tight(0, "").replace("cidrs = [\"10.1.0.0/16\"]", "cidrs = [\"10.1.0.0/23\", \"100.64.0.0/16\"]")
        + "[traffic]\ndestinations = [\"10.2.0.0/16\"]\n";
    let r = plan(&text);
    let new = variant(&r, "new-subnets");
    let script = &new.config["new-subnets.sh"];
    let cgnat: ipnet::Ipv4Net = "100.64.0.0/10".parse().unwrap();
    let known: ipnet::Ipv4Net = "10.2.0.0/16".parse().unwrap();
    let mut made = 0;
    for line in script.lines().filter(|l| l.contains("=$(subnet ")) {
        let cidr: ipnet::Ipv4Net = line.split_whitespace().nth(2).unwrap().parse().unwrap();
        assert!(!cgnat.contains(&cidr) && !known.contains(&cidr) && !cidr.contains(&known), "{line}");
        made += 1;
    }
    assert!(made > 0, "{script}");
    assert!(script.contains("vpc_cidr 10.3.0.0/16"), "a routable secondary block past the known network: {script}");
}

/// Pods still waiting for an address when the run ends are counted, and keep a variant from
/// being recommended as starting every pod.
#[test]
fn pods_still_waiting_at_the_end_are_counted_and_fall_short() {
    let text = tight(0, "").replace("horizon_hours = 2", "horizon_hours = 0.0001");
    let r = plan(&text);
    for v in &r.variants {
        assert!(
            v.pods_started + v.pods_failed + v.pods_unschedulable + v.pods_waiting_at_end <= v.pods_asked,
            "{}",
            v.id
        );
    }
    let today = variant(&r, "vpc-cni-today");
    assert!(today.pods_waiting_at_end > 0, "{today:?}");
    assert!(today.shortfalls.iter().any(|s| s.contains("still waiting for an address when the run ended")));
    assert!(r.recommendation.variant.is_empty() || variant(&r, &r.recommendation.variant).pods_waiting_at_end == 0);
}

/// A variant that would take the VPC past its five CIDR blocks, or put CG-NAT space over a
/// network its pods reach, is not planned as if it could.
#[test]
fn cidr_block_quota_and_reached_networks_bound_the_non_routable_variants() {
    let five = r#"
seed = 5
horizon_hours = 1
[vpc]
cidrs = ["10.20.0.0/24", "10.21.0.0/24", "10.22.0.0/24", "10.23.0.0/24", "10.24.0.0/24"]
[[subnets]]
az = "us-east-1a"
cidr = "10.20.0.0/24"
[[node_groups]]
instance_type = "m5.large"
nodes = 2
[workload]
pods_per_node = 10
"#;
    let r = plan(five);
    for id in ["custom-networking", "private-nat-gateway"] {
        let v = variant(&r, id);
        assert!(
            v.shortfalls.iter().any(|s| s.contains("CIDR blocks") && s.contains("default quota is 5")),
            "{id}: {:?}",
            v.shortfalls
        );
        assert_ne!(r.recommendation.variant, id);
    }
    let reached = tight(0, "") + "[traffic]\ndestinations = [\"100.64.0.0/16\", \"100.65.0.0/16\"]\n";
    let r = plan(&reached);
    let cgnat_taken: ipnet::Ipv4Net = "100.64.0.0/15".parse().unwrap();
    for id in ["custom-networking", "private-nat-gateway"] {
        let script = variant(&r, id).config.values().cloned().collect::<Vec<_>>().join("\n");
        for line in script.lines().filter(|l| l.starts_with("vpc_cidr ")) {
            let block: ipnet::Ipv4Net = line[9..].trim().parse().unwrap();
            assert!(!cgnat_taken.contains(&block), "{id}: {line}");
        }
    }
}
