//! Scenario parsing and validation.

use super::*;

const GOOD: &str = r#"
name = "t"
seed = 7
horizon_hours = 2
[vpc]
cidrs = ["10.0.0.0/16"]
[[subnets]]
az = "us-east-1a"
cidr = "10.0.0.0/20"
used = 100
reservations = [{ cidr = "10.0.8.0/24", type = "prefix" }]
[[node_groups]]
instance_type = "m5.large"
nodes = 3
[workload]
pods_per_node = 10
"#;

#[test]
fn a_good_scenario_parses_with_defaults() {
    let s = Scenario::parse(GOOD).unwrap();
    assert_eq!((s.seed, s.horizon_hours, s.workload.pods_per_node, s.cni.warm_eni), (7, 2.0, 10, 1));
    assert_eq!(s.node_groups[0].azs, vec!["us-east-1a".to_string()]);
    assert_eq!(s.subnets[0].reservations[0].kind, ReservationKind::Prefix);
}

#[test]
fn every_bad_field_is_named_at_once() {
    let text = r#"
horizon_hours = 0
[vpc]
cidrs = ["10.0.0.0/16", "198.19.0.0/16", "10.0.0.0/33"]
[[subnets]]
az = "us-east-1a"
cidr = "10.1.0.0/20"
used = 999999
pattern = "zigzag"
[[node_groups]]
instance_type = "m5.lrage"
nodes = 3
azs = ["us-east-1z"]
[workload]
pods_per_node = 10
churn_per_hour = -1
"#;
    let err = Scenario::parse(text).unwrap_err();
    let all = err.to_string();
    for needle in [
        "horizon_hours = 0",
        "vpc.cidrs[1] = \"198.19.0.0/16\"",
        "vpc.cidrs[2] = \"10.0.0.0/33\"",
        "subnets[0].cidr = \"10.1.0.0/20\": not inside",
        "subnets[0].used = 999999",
        "subnets[0].pattern = \"zigzag\"",
        "node_groups[0].instance_type = \"m5.lrage\"",
        "workload.churn_per_hour = -1",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
}

#[test]
fn unknown_fields_and_syntax_errors_are_reported() {
    let err = Scenario::parse(&GOOD.replace("seed = 7", "sede = 7")).unwrap_err();
    assert!(err.to_string().contains("sede"), "{err}");
    let err = Scenario::parse("[vpc\ncidrs=").unwrap_err();
    assert!(err.to_string().contains("line"), "{err}");
}

#[test]
fn too_many_pods_per_node_is_refused() {
    let err = Scenario::parse(&GOOD.replace("pods_per_node = 10", "pods_per_node = 40")).unwrap_err();
    assert!(err.to_string().contains("max pods 29"), "{err}");
}

#[test]
fn prefix_delegation_with_no_warm_target_is_refused_as_aws_node_does() {
    let pd = format!("{GOOD}[cni]\nprefix_delegation = true\nwarm_prefix_target = 0\n");
    let err = Scenario::parse(&pd).unwrap_err();
    assert!(err.to_string().contains("cni.warm_prefix_target = 0"), "{err}");
    assert!(Scenario::parse(&format!("{pd}minimum_ip_target = 10\n")).is_ok());
}

#[test]
fn inputs_once_accepted_silently_are_refused_by_name() {
    let cases = [
        (GOOD.replace(r#"cidrs = ["10.0.0.0/16"]"#, r#"cidrs = ["10.0.0.0/16", "10.0.0.0/16"]"#), "vpc.cidrs[1]"),
        (GOOD.replace("used = 100", "used = 100\nused_addresses = [\"10.0.0.2\"]"), "AWS reserves it"),
        (GOOD.replace("10.0.8.0/24", "10.0.8.7/24"), "host bits set (did you mean 10.0.8.0/24?)"),
        (GOOD.replace("nodes = 3", "nodes = 3\nmax = 2"), "node_groups[0].max = 2: below nodes = 3"),
        (format!("{GOOD}[[workload.rollouts]]\nat_hour = 1\npods = 1000000000\nminutes = 5\n"), "at most 1000000"),
        (GOOD.replace("nodes = 3", "nodes = 1000000000"), "at most 20000 nodes"),
        // m5.large: max pods 29, of which 2 host-network pods by default.
        (GOOD.replace("pods_per_node = 10", "pods_per_node = 28"), "+2 host-network pods"),
    ];
    for (text, want) in cases {
        let err = Scenario::parse(&text).unwrap_err().to_string();
        assert!(err.contains(want), "{want}: {err}");
    }
}

#[test]
fn secondary_cidr_rules() {
    let p: Ipv4Net = "10.0.0.0/16".parse().unwrap();
    assert!(secondary_cidr_refusal(&p, &"100.64.0.0/16".parse().unwrap()).is_none());
    let why = secondary_cidr_refusal(&p, &"198.19.0.0/16".parse().unwrap()).unwrap();
    assert!(why.starts_with("198.19.0.0/16 cannot join"), "the block named once: {why}");
    let why = secondary_cidr_refusal(&p, &"198.19.4.0/24".parse().unwrap()).unwrap();
    assert!(why.starts_with("198.19.4.0/24 (in 198.19.0.0/16) cannot join"), "{why}");
    assert!(secondary_cidr_refusal(&p, &"192.168.0.0/16".parse().unwrap()).is_some());
    assert!(secondary_cidr_refusal(&p, &"10.1.0.0/16".parse().unwrap()).is_none());
    let public: Ipv4Net = "100.64.0.0/16".parse().unwrap();
    assert!(secondary_cidr_refusal(&public, &"10.0.0.0/16".parse().unwrap()).is_some());
}

#[test]
fn ids_and_names_that_go_into_scripts_are_checked() {
    let ok = GOOD
        .replace("[vpc]\n", "[vpc]\nid = \"vpc-0a1b2c3d4e5f60718\"\n")
        .replace("[[subnets]]\n", "[[subnets]]\nid = \"subnet-0a1b2c3d\"\nname = \"eks private-a\"\n");
    let s = Scenario::parse(&ok).unwrap();
    assert_eq!(s.vpc_id.as_deref(), Some("vpc-0a1b2c3d4e5f60718"));
    assert_eq!(s.subnets[0].id.as_deref(), Some("subnet-0a1b2c3d"));
    let bad = GOOD
        .replace("[vpc]\n", "[vpc]\nid = \"vpc-1; rm -rf /\"\n")
        .replace("[[subnets]]\n", "[[subnets]]\nid = \"eks private-a\"\nname = \"a\\nb\"\n")
        .replace("az = \"us-east-1a\"", "az = \"us-east-1a $(x)\"")
        .replace("name = \"t\"", "name = \"t\"\nregion = \"US East\"");
    let e = Scenario::parse(&bad).unwrap_err().0.join("\n");
    for needle in [
        "vpc.id = \"vpc-1; rm -rf /\": not a VPC id",
        "subnets[0].id = \"eks private-a\": not a subnet id",
        "subnets[0].name = \"a\\nb\": at most 255 characters, none of them control characters",
        "subnets[0].az = \"us-east-1a $(x)\": not an availability zone name",
        "region = \"US East\": not a region name",
    ] {
        assert!(e.contains(needle), "{needle:?} not in:\n{e}");
    }
}

#[test]
fn nat_destinations_default_to_the_private_blocks_around_the_vpc() {
    let s = Scenario::parse(GOOD).unwrap();
    assert_eq!(s.traffic.destinations, vec!["10.0.0.0/8".parse::<Ipv4Net>().unwrap()]);
    let s = Scenario::parse(&GOOD.replace("10.0.", "172.20.")).unwrap();
    assert_eq!(s.traffic.destinations, vec!["172.16.0.0/12".parse::<Ipv4Net>().unwrap()]);
    let given = format!("{GOOD}[traffic]\ndestinations = [\"192.168.0.0/16\", \"10.200.0.0/16\"]\n");
    let s = Scenario::parse(&given).unwrap();
    assert_eq!(s.traffic.destinations.len(), 2);
    let bad = format!(
        "{GOOD}[traffic]\ndestinations = [\"10.0.4.0/24\", \"10.9.0.1/16\", \"x\", \"10.8.0.0/16\", \"10.8.0.0/16\"]\n"
    );
    let e = Scenario::parse(&bad).unwrap_err().0.join("\n");
    for needle in [
        "traffic.destinations[0] = \"10.0.4.0/24\": inside the VPC",
        "traffic.destinations[1] = \"10.9.0.1/16\": host bits set (did you mean 10.9.0.0/16?)",
        "traffic.destinations[2] = \"x\": not an IPv4 CIDR",
        "traffic.destinations[4] = \"10.8.0.0/16\": given twice",
    ] {
        assert!(e.contains(needle), "{needle:?} not in:\n{e}");
    }
}

#[test]
fn an_export_showing_an_aws_reserved_address_imports_without_it() {
    let mut x = AwsExports::default();
    x.add_subnets(
        "s.json",
        r#"{"Subnets":[{"SubnetId":"subnet-0a1b2c3d","VpcId":"vpc-0a1b2c3d","AvailabilityZone":"us-east-1a","CidrBlock":"10.9.0.0/24"}]}"#,
    )
    .unwrap();
    x.add_network_interfaces(
        "e.json",
        r#"{"NetworkInterfaces":[{"NetworkInterfaceId":"eni-1","SubnetId":"subnet-0a1b2c3d",
            "PrivateIpAddresses":[{"PrivateIpAddress":"10.9.0.2","Primary":true},{"PrivateIpAddress":"10.9.0.20"}]}]}"#,
    )
    .unwrap();
    let text = "[[node_groups]]\ninstance_type = \"m5.large\"\nnodes = 1\n[workload]\npods_per_node = 5\n";
    let e = Scenario::parse_with(text, Some(&x)).unwrap_err().0.join("\n");
    assert!(
        e.contains("--vpcs: needed for the VPC's CIDR blocks (aws ec2 describe-vpcs --vpc-ids vpc-0a1b2c3d)"),
        "{e}"
    );
    x.add_vpcs("v.json", r#"{"Vpcs":[{"VpcId":"vpc-0f0f0f0f","CidrBlock":"172.31.0.0/16"}]}"#).unwrap();
    let e = Scenario::parse_with(text, Some(&x)).unwrap_err().0.join("\n");
    assert!(e.contains("--vpcs: the subnets' VPC vpc-0a1b2c3d is not in the export"), "{e}");
    x.add_vpcs("v.json", r#"{"Vpcs":[{"VpcId":"vpc-0a1b2c3d","CidrBlock":"10.9.0.0/16"}]}"#).unwrap();
    let s = Scenario::parse_with(text, Some(&x)).unwrap();
    assert_eq!(
        s.vpc_cidrs,
        vec!["10.9.0.0/16".parse::<Ipv4Net>().unwrap()],
        "the subnets' VPC, not the first exported"
    );
    assert_eq!(s.subnets[0].used_addresses, vec!["10.9.0.20".parse::<Ipv4Addr>().unwrap()]);
    assert_eq!(s.vpc_id.as_deref(), Some("vpc-0a1b2c3d"));
    assert_eq!(s.subnets[0].id.as_deref(), Some("subnet-0a1b2c3d"));
}

#[test]
fn a_run_that_would_grow_without_bound_is_refused_by_its_totals() {
    let many_groups: String =
        (0..3).map(|_| "[[node_groups]]\ninstance_type = \"m5.large\"\nnodes = 9000\n").collect::<Vec<_>>().join("");
    let text = GOOD.replace("[[node_groups]]\ninstance_type = \"m5.large\"\nnodes = 3\n", &many_groups);
    let e = Scenario::parse(&text).unwrap_err().0.join("\n");
    assert!(e.contains("node_groups: their max adds up to 27000 nodes; at most 20000 in all"), "{e}");
    let churn = GOOD
        .replace("nodes = 3", "nodes = 5000")
        .replace("pods_per_node = 10", "pods_per_node = 20\nchurn_per_hour = 60")
        .replace("horizon_hours = 2", "horizon_hours = 168");
    let e = Scenario::parse(&churn).unwrap_err().0.join("\n");
    assert!(
        e.contains("pod starts (5000 nodes × 20 pods, churn 60/h over 168 h, 0 rollout pods); at most 5000000"),
        "{e}"
    );
    let rollouts: String =
        (0..6).map(|_| "[[workload.rollouts]]\nat_hour = 1\npods = 1000000\n").collect::<Vec<_>>().join("");
    let e = Scenario::parse(&format!("{GOOD}{rollouts}")).unwrap_err().0.join("\n");
    assert!(e.contains("6000000 rollout pods"), "{e}");
}

#[test]
fn a_vpc_block_is_never_a_default_destination() {
    let s = Scenario::parse(&GOOD.replace("10.0.0.0/16", "192.168.0.0/16").replace("10.0.", "192.168.")).unwrap();
    let want: Vec<Ipv4Net> = ["10.0.0.0/8", "172.16.0.0/12"].iter().map(|c| c.parse().unwrap()).collect();
    assert_eq!(s.traffic.destinations, want);
    assert!(!s.traffic.destinations_given);
}

#[test]
fn an_import_of_several_vpcs_subnets_is_refused_and_nodes_primary_enis_are_left_out() {
    let mut x = AwsExports::default();
    x.add_vpcs("v.json", r#"{"Vpcs":[{"VpcId":"vpc-0a1b2c3d","CidrBlock":"10.9.0.0/16"}]}"#).unwrap();
    x.add_subnets(
        "s.json",
        r#"{"Subnets":[{"SubnetId":"subnet-0a1b2c3d","VpcId":"vpc-0a1b2c3d","AvailabilityZone":"us-east-1a","CidrBlock":"10.9.0.0/24"},
                       {"SubnetId":"subnet-0e0e0e0e","VpcId":"vpc-0b0b0b0b","AvailabilityZone":"us-east-1a","CidrBlock":"10.8.0.0/24"}]}"#,
    )
    .unwrap();
    let text = "[[node_groups]]\ninstance_type = \"m5.large\"\nnodes = 1\n[workload]\npods_per_node = 5\n";
    let e = Scenario::parse_with(text, Some(&x)).unwrap_err().0.join("\n");
    assert!(e.contains("--subnets: subnets of 2 VPCs (vpc-0a1b2c3d, vpc-0b0b0b0b)"), "{e}");
    x.subnets.pop();
    // A node: its primary ENI (EC2's, with aws-node's pod addresses on it) and an ENI aws-node
    // made; and another workload's ENI.
    x.add_network_interfaces(
        "e.json",
        r#"{"NetworkInterfaces":[
            {"NetworkInterfaceId":"eni-1","SubnetId":"subnet-0a1b2c3d","Attachment":{"InstanceId":"i-0123456789abcdef0","DeviceIndex":0},
             "PrivateIpAddresses":[{"PrivateIpAddress":"10.9.0.10","Primary":true},{"PrivateIpAddress":"10.9.0.11"}]},
            {"NetworkInterfaceId":"eni-2","SubnetId":"subnet-0a1b2c3d","Attachment":{"InstanceId":"i-0123456789abcdef0","DeviceIndex":1},
             "Description":"aws-K8S-i-0123456789abcdef0",
             "PrivateIpAddresses":[{"PrivateIpAddress":"10.9.0.12","Primary":true}]},
            {"NetworkInterfaceId":"eni-3","SubnetId":"subnet-0a1b2c3d","Attachment":{"InstanceId":"i-0fedcba987654321f","DeviceIndex":0},
             "PrivateIpAddresses":[{"PrivateIpAddress":"10.9.0.20","Primary":true}]}]}"#,
    )
    .unwrap();
    let s = Scenario::parse_with(text, Some(&x)).unwrap();
    assert_eq!(s.subnets[0].used_addresses, vec!["10.9.0.20".parse::<Ipv4Addr>().unwrap()]);
    assert!(
        s.import_notes[0].starts_with("left out 2 ENIs of the cluster's nodes (3 addresses"),
        "{:?}",
        s.import_notes
    );
}

#[test]
fn an_az_outside_the_region_and_a_name_with_control_characters_are_refused() {
    let bad = GOOD.replace("name = \"t\"", "name = \"t\\u001b[2J\"\nregion = \"eu-west-1\"");
    let e = Scenario::parse(&bad).unwrap_err().0.join("\n");
    assert!(e.contains("subnets[0].az = \"us-east-1a\": not in region \"eu-west-1\""), "{e}");
    assert!(e.contains("name = \"t\\u{1b}[2J\": at most 255 characters, none of them control characters"), "{e}");
}

#[test]
fn an_import_says_when_several_clusters_nodes_were_left_out() {
    let mut x = AwsExports::default();
    x.add_vpcs("v.json", r#"{"Vpcs":[{"VpcId":"vpc-0a1b2c3d","CidrBlock":"10.9.0.0/16"}]}"#).unwrap();
    x.add_subnets(
        "s.json",
        r#"{"Subnets":[{"SubnetId":"subnet-0a1b2c3d","VpcId":"vpc-0a1b2c3d","AvailabilityZone":"us-east-1a","CidrBlock":"10.9.0.0/24"}]}"#,
    )
    .unwrap();
    x.add_network_interfaces(
        "e.json",
        r#"{"NetworkInterfaces":[
            {"NetworkInterfaceId":"eni-1","SubnetId":"subnet-0a1b2c3d","TagSet":[{"Key":"cluster.k8s.amazonaws.com/name","Value":"blue"}],
             "PrivateIpAddresses":[{"PrivateIpAddress":"10.9.0.10","Primary":true}]},
            {"NetworkInterfaceId":"eni-2","SubnetId":"subnet-0a1b2c3d","TagSet":[{"Key":"cluster.k8s.amazonaws.com/name","Value":"green"}],
             "PrivateIpAddresses":[{"PrivateIpAddress":"10.9.0.11","Primary":true}]}]}"#,
    )
    .unwrap();
    let text = "[[node_groups]]\ninstance_type = \"m5.large\"\nnodes = 1\n[workload]\npods_per_node = 5\n";
    let s = Scenario::parse_with(text, Some(&x)).unwrap();
    assert!(s.import_notes[0].contains("tagged for 2 clusters: blue, green"), "{:?}", s.import_notes);
}
