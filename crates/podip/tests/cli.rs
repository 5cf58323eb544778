//! The `podip` binary's contracts: output shapes, JSON schemas and exit codes.

use serde_json::Value;
use std::process::{Command, Output};

fn podip(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_podip")).args(args).output().unwrap()
}

fn json(args: &[&str]) -> Value {
    let out = podip(args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn fails_with(args: &[&str], code: i32, needles: &[&str]) {
    let out = podip(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    assert!(out.stdout.is_empty(), "nothing on stdout on error");
    for n in needles {
        assert!(err.contains(n), "{args:?}: stderr lacks {n:?}: {err}");
    }
}

#[test]
fn maxpods_json_contract() {
    let v = json(&["maxpods", "m5.large", "--json"]);
    assert_eq!(
        v,
        serde_json::json!({"instance_type":"m5.large","max_pods":29,"max_allowed":29,"enis":3,"ips_per_eni":9})
    );
    let v = json(&["maxpods", "m5.large", "--prefix-delegation", "--json"]);
    assert_eq!(
        (v["max_pods"].as_u64(), v["max_allowed"].as_u64(), v["ips_per_eni"].as_u64()),
        (Some(110), Some(434), Some(144))
    );
    let v = json(&["maxpods", "m5.large", "--custom-networking", "--json"]);
    assert_eq!((v["max_pods"].as_u64(), v["enis"].as_u64()), (Some(20), Some(2)));
    let v = json(&["maxpods", "c5.18xlarge", "--json"]);
    assert_eq!((v["max_pods"].as_u64(), v["max_allowed"].as_u64()), (Some(250), Some(737)));
    let v = json(&["maxpods", "m5.xlarge", "--max-eni", "2", "--json"]);
    assert_eq!(v["max_pods"].as_u64(), Some(30));
}

#[test]
fn maxpods_table_names_the_answer() {
    let out = podip(&["maxpods", "t3.medium"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("max pods") && text.contains("17"), "{text}");
}

#[test]
fn pool_json_contract() {
    let v = json(&["pool", "--instance-type", "t3.small", "--pods", "5", "--json"]);
    let enis = v["enis"].as_array().unwrap();
    assert_eq!(enis.len(), 3);
    for e in enis {
        for k in ["id", "primary", "secondary_ips", "prefixes"] {
            assert!(e.get(k).is_some(), "ENI lacks {k}: {e}");
        }
    }
    assert_eq!(enis[0]["primary"], Value::Bool(true));
    assert_eq!((v["total_ips"].as_u64(), v["assigned"].as_u64(), v["available"].as_u64()), (Some(9), Some(5), Some(4)));
    assert_eq!(v["ec2_calls"]["CreateNetworkInterface"].as_u64(), Some(2));
}

#[test]
fn pool_prefix_mode_defaults_warm_prefix_to_one() {
    let v = json(&["pool", "--instance-type", "t3.small", "--pods", "17", "--prefix-delegation", "--json"]);
    let prefixes: u64 = v["enis"].as_array().unwrap().iter().map(|e| e["prefixes"].as_u64().unwrap()).sum();
    assert_eq!(prefixes, 3);
    assert_eq!(v["total_ips"].as_u64(), Some(48));
}

#[test]
fn pool_table_is_readable() {
    let out = podip(&["pool", "--instance-type", "m5.large", "--pods", "3"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("18 total, 3 assigned, 15 available"), "{text}");
}

#[test]
fn bad_input_exits_2_naming_the_value() {
    fails_with(&["maxpods", "m5.lrage"], 2, &["\"m5.lrage\"", "m5.large"]);
    fails_with(&["pool", "--instance-type", "x9.huge", "--pods", "1"], 2, &["\"x9.huge\""]);
    fails_with(&["pool", "--instance-type", "t3.small", "--pods", "200"], 2, &["--pods 200", "11"]);
    fails_with(&["pool", "--instance-type", "t3.small", "--pods", "-1"], 2, &["-1"]);
    fails_with(&["pool", "--instance-type", "t3.small", "--pods", "many"], 2, &["many"]);
    fails_with(&["maxpods", "m5.large", "--max-eni", "0"], 2, &["--max-eni 0"]);
    fails_with(
        &[
            "pool",
            "--instance-type",
            "m5.large",
            "--pods",
            "1",
            "--prefix-delegation",
            "--warm-prefix-target",
            "0",
            "--max-pods",
            "0",
        ],
        2,
        &["--warm-prefix-target 0", "--max-pods 0"],
    );
    fails_with(&["maxpods", "hpc6id.32xlarge", "--custom-networking"], 2, &["hpc6id.32xlarge"]);
    fails_with(&["frobnicate"], 2, &["frobnicate"]);
}

#[test]
fn prefix_delegation_on_xen_notes_the_fallback() {
    let out = podip(&["maxpods", "t2.micro", "--prefix-delegation", "--json"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a Nitro"));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["max_pods"].as_u64(), Some(4));
}

#[test]
fn frag_json_contract_and_exports() {
    let dir = std::env::temp_dir().join(format!("podip-frag-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let used = dir.join("used.txt");
    std::fs::write(&used, "10.0.0.17\n# comment\n10.0.0.33\n").unwrap();
    let v = json(&["frag", "--subnet", "10.0.0.0/24", "--used", used.to_str().unwrap(), "--json"]);
    assert_eq!((v["free_ips"].as_u64(), v["free_prefixes"].as_u64()), (Some(249), Some(12)));
    assert_eq!(v["block_map"][0], "R++............R");
    let subnets = dir.join("subnets.json");
    std::fs::write(
        &subnets,
        r#"{"Subnets":[{"SubnetId":"subnet-0a1b2c3d","VpcId":"vpc-0a1b2c3d","AvailabilityZone":"us-east-1a","CidrBlock":"10.0.0.0/24"}]}"#,
    )
    .unwrap();
    let enis = dir.join("enis.json");
    std::fs::write(
        &enis,
        r#"{"NetworkInterfaces":[{"NetworkInterfaceId":"eni-1","SubnetId":"subnet-0a1b2c3d",
            "PrivateIpAddresses":[{"PrivateIpAddress":"10.0.0.17","Primary":true}],
            "Ipv4Prefixes":[{"Ipv4Prefix":"10.0.0.32/28"}]}]}"#,
    )
    .unwrap();
    let v = json(&[
        "frag",
        "--subnet-id",
        "subnet-0a1b2c3d",
        "--subnets",
        subnets.to_str().unwrap(),
        "--network-interfaces",
        enis.to_str().unwrap(),
        "--prefixes",
        "2",
        "--json",
    ]);
    assert_eq!((v["free_ips"].as_u64(), v["free_prefixes"].as_u64()), (Some(251 - 17), Some(12)));
    assert!(v["advice"]["commands"][0].as_str().unwrap().contains("--subnet-id subnet-0a1b2c3d"));
    assert_eq!(v["advice"]["cidrs"].as_array().unwrap().len(), 1, "{v}");
    std::fs::write(&enis, r#"{"NetworkInterfaces":[{"NetworkInterfaceId":"eni-1","SubnetId":7}]}"#).unwrap();
    fails_with(
        &[
            "frag",
            "--subnet-id",
            "subnet-0a1b2c3d",
            "--subnets",
            subnets.to_str().unwrap(),
            "--network-interfaces",
            enis.to_str().unwrap(),
        ],
        2,
        &["NetworkInterfaces[0].SubnetId"],
    );
    fails_with(&["frag", "--subnet", "10.0.0.0/24", "--reservation", "10.0.0.0/26:sometimes"], 2, &["sometimes"]);
    fails_with(
        &["frag", "--subnet", "10.0.0.0/24", "--reservation", "10.0.0.66/26:prefix"],
        2,
        &["--reservation 10.0.0.66/26:prefix: host bits set (did you mean 10.0.0.64/26?)"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn plan_json_schema_and_import() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/small-cluster.toml");
    let v = json(&["plan", example, "--quiet", "--json"]);
    assert_eq!(v["schema"], "podip.plan/1");
    let ids: Vec<&str> = v["variants"].as_array().unwrap().iter().map(|x| x["id"].as_str().unwrap()).collect();
    for want in [
        "vpc-cni-today",
        "warm-pool-tuned",
        "new-subnets",
        "prefix-delegation",
        "prefix-delegation+reservations",
        "custom-networking",
        "private-nat-gateway",
        "ipv6",
    ] {
        assert!(ids.contains(&want), "{want} missing from {ids:?}");
    }
    for k in [
        "routable_peak",
        "routable_share",
        "headroom_nodes",
        "pods_failed",
        "pods_asked",
        "pods_unschedulable",
        "throttled_share",
        "wait_p99_s",
        "ec2_calls",
        "max_pods",
        "nau_peak",
        "monthly_cost_usd",
        "disruption",
        "caveats",
    ] {
        assert!(v["variants"][0].get(k).is_some(), "variant lacks {k}");
    }
    assert!(ids.contains(&v["recommendation"]["variant"].as_str().unwrap()));

    // The VPC and subnets from AWS CLI exports instead of the scenario.
    let dir = std::env::temp_dir().join(format!("podip-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let scenario = dir.join("s.toml");
    std::fs::write(
        &scenario,
        "horizon_hours = 1\n[[node_groups]]\ninstance_type = \"m5.large\"\nnodes = 2\n[workload]\npods_per_node = 5\n",
    )
    .unwrap();
    let vpcs = dir.join("vpcs.json");
    std::fs::write(&vpcs, r#"{"Vpcs":[{"VpcId":"vpc-0a1b2c3d","CidrBlock":"10.9.0.0/16"}]}"#).unwrap();
    let subnets = dir.join("subnets.json");
    std::fs::write(
        &subnets,
        r#"{"Subnets":[{"SubnetId":"subnet-0a1b2c3d","VpcId":"vpc-0a1b2c3d","AvailabilityZone":"us-east-1a","CidrBlock":"10.9.0.0/24",
            "Tags":[{"Key":"Name","Value":"eks-a"}]}]}"#,
    )
    .unwrap();
    let enis = dir.join("enis.json");
    std::fs::write(
        &enis,
        r#"{"NetworkInterfaces":[{"NetworkInterfaceId":"eni-1","SubnetId":"subnet-0a1b2c3d",
            "PrivateIpAddresses":[{"PrivateIpAddress":"10.9.0.20","Primary":true}]}]}"#,
    )
    .unwrap();
    let s = scenario.to_str().unwrap();
    let v = json(&[
        "plan",
        s,
        "--quiet",
        "--json",
        "--vpcs",
        vpcs.to_str().unwrap(),
        "--subnets",
        subnets.to_str().unwrap(),
        "--network-interfaces",
        enis.to_str().unwrap(),
    ]);
    assert_eq!(v["routable_space"].as_u64(), Some(251));
    let today = &v["variants"][0];
    assert_eq!(today["subnet_maps"][0]["name"], "eks-a");
    assert_eq!(today["subnet_maps"][0]["id"], "subnet-0a1b2c3d");
    fails_with(&["plan", s, "--quiet"], 2, &["vpc: missing"]);
    std::fs::write(
        &subnets,
        r#"{"Subnets":[{"SubnetId":"subnet-0a1b2c3d","VpcId":"vpc-0a1b2c3d","AvailabilityZone":"a","CidrBlock":"nope"}]}"#,
    )
    .unwrap();
    fails_with(&["plan", s, "--quiet", "--subnets", subnets.to_str().unwrap()], 2, &["Subnets[0].CidrBlock"]);
    std::fs::write(&scenario, "[vpc]\ncidrs = [\"10.0.0.0/16\"]\n[[subnets]]\naz = \"a\"\ncidr = \"10.0.0.0/24\"\n[[node_groups]]\ninstance_type = \"m9.huge\"\nnodes = 1\n[workload]\npods_per_node = 5\n").unwrap();
    fails_with(&["plan", s, "--quiet"], 2, &["node_groups[0].instance_type = \"m9.huge\""]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_reader_that_goes_away_ends_the_output_quietly() {
    // `podip plan x | head -1`: once the pipe closes, podip stops with success, no panic.
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/small-cluster.toml");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_podip"))
        .args(["plan", example])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The reader is gone before the first line is written.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !err.contains("panicked"), "{:?}: {err}", out.status);
}

#[test]
fn the_emitted_nat_script_routes_the_networks_around_the_vpc_per_az() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/small-cluster.toml");
    let dir = std::env::temp_dir().join(format!("podip-emit-nat-{}", std::process::id()));
    let out = podip(&["plan", example, "--quiet", "--emit", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let nat = std::fs::read_to_string(dir.join("private-nat-gateway/nat.sh")).unwrap();
    // The API takes 1 to 7 secondary addresses: a count of 0 is never sent.
    assert!(!nat.contains("--secondary-private-ip-address-count 0"), "{nat}");
    // The VPC is 10.20.0.0/16: the networks around it are 10.0.0.0/8, an operator's setting.
    assert!(nat.contains("DESTINATIONS=\"${DESTINATIONS:-10.0.0.0/8}\""), "{nat}");
    // No placeholder in an id field: the VPC is asked for, the subnets found by their blocks.
    assert!(nat.contains("VPC_ID=\"${VPC_ID:?"), "{nat}");
    assert!(nat.contains("$(subnet_id 10.20.0.0/22)") && nat.contains("$(subnet_id 10.20.4.0/22)"), "{nat}");
    // Each AZ's gateway in that AZ's subnet, and its own route table.
    for (az, cidr) in [("us-east-1a", "10_20_0_0_22"), ("us-east-1b", "10_20_4_0_22")] {
        assert!(nat.contains(&format!("nat_gateway \"$SUBNET_{cidr}\" podip-nat-{az}-0")), "{nat}");
        assert!(nat.contains(&format!("route_table podip-nonroutable-{az}-0")), "{nat}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_plan_table_fits_120_columns_unless_asked_wide() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/small-cluster.toml");
    let out = |extra: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_podip"))
            .args(["plan", example, "--quiet"])
            .args(extra)
            .output()
            .unwrap();
        assert!(o.status.success());
        String::from_utf8(o.stdout).unwrap()
    };
    let widest =
        |s: &str| s.lines().filter(|l| l.starts_with(['│', '┌', '└'])).map(|l| l.chars().count()).max().unwrap();
    assert!(widest(&out(&[])) <= 120, "{}", out(&[]));
    assert!(widest(&out(&["--wide"])) > 120);
}

#[test]
fn emit_replaces_its_own_output_and_refuses_other_directories() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/small-cluster.toml");
    let dir = std::env::temp_dir().join(format!("podip-emit-again-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_str().unwrap();
    assert!(podip(&["plan", example, "--quiet", "--emit", d]).status.success());
    // A stale variant from an earlier plan goes; files of the user's are never touched.
    std::fs::create_dir_all(dir.join("old-variant")).unwrap();
    std::fs::write(dir.join("old-variant/nat.sh"), "stale").unwrap();
    let mark = std::fs::read_to_string(dir.join(".podip-emit")).unwrap();
    std::fs::write(dir.join(".podip-emit"), mark + "old-variant\n").unwrap();
    assert!(podip(&["plan", example, "--quiet", "--emit", d]).status.success());
    assert!(!dir.join("old-variant").exists());
    assert!(dir.join("private-nat-gateway/nat.sh").exists());
    let other = std::env::temp_dir().join(format!("podip-emit-other-{}", std::process::id()));
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("mine.txt"), "mine").unwrap();
    fails_with(
        &["plan", example, "--quiet", "--emit", other.to_str().unwrap()],
        2,
        &["not empty, and not written by podip plan --emit"],
    );
    assert!(other.join("mine.txt").exists());
    fails_with(
        &["plan", example, "--quiet", "--emit", other.join("mine.txt").to_str().unwrap()],
        2,
        &["not a directory"],
    );
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&other).unwrap();
}
