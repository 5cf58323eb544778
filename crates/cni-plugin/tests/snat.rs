//! Egress from pods, in namespaces this test makes (root): a "remote" namespace plays both a
//! destination outside the VPC and a peer inside it. With internal SNAT (the default), the
//! outside destination sees the node's primary address and the VPC peer the pod's; with
//! external SNAT, both see the pod's. nftables counters in the remote namespace tell.
#![allow(clippy::disallowed_methods)] // Drives real processes.

mod common;

use common::{Node, addr_of, introspect, privileged, sh};
use std::process::Command;

const OUTSIDE: &str = "198.51.100.1";
const VPC_PEER: &str = "10.0.200.1";

struct Remote {
    name: String,
}

impl Drop for Remote {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// Joins the node to a remote namespace through `vpc0` (the node's primary interface).
fn remote(node: &Node, primary: &str) -> Remote {
    let name = format!("{}-r", node.name);
    let _ = Command::new("ip").args(["netns", "del", &name]).output();
    sh(&["ip", "netns", "add", &name]);
    // The node's stand-in primary interface gives way to one that reaches the remote.
    sh(&["ip", "-n", &node.name, "link", "del", "vpc0"]);
    sh(&["ip", "-n", &node.name, "link", "add", "vpc0", "type", "veth", "peer", "name", "eth0", "netns", &name]);
    sh(&["ip", "-n", &node.name, "addr", "add", &format!("{primary}/32"), "dev", "vpc0"]);
    sh(&["ip", "-n", &node.name, "link", "set", "vpc0", "up"]);
    sh(&["ip", "-n", &node.name, "route", "add", "198.51.100.0/24", "dev", "vpc0"]);
    sh(&["ip", "-n", &node.name, "route", "add", &format!("{VPC_PEER}/32"), "dev", "vpc0"]);
    sh(&["ip", "-n", &name, "link", "set", "lo", "up"]);
    sh(&["ip", "-n", &name, "addr", "add", &format!("{OUTSIDE}/24"), "dev", "eth0"]);
    sh(&["ip", "-n", &name, "addr", "add", &format!("{VPC_PEER}/32"), "dev", "eth0"]);
    sh(&["ip", "-n", &name, "link", "set", "eth0", "up"]);
    sh(&["ip", "-n", &name, "route", "add", &format!("{primary}/32"), "dev", "eth0"]);
    sh(&["ip", "-n", &name, "route", "add", "10.0.0.0/16", "via", primary, "dev", "eth0"]);
    Remote { name }
}

/// Packets the remote namespace received from `src`, to `dst`.
fn seen(remote: &Remote, src: &str, dst: &str) -> u64 {
    let out = sh(&["ip", "netns", "exec", &remote.name, "nft", "list", "chain", "ip", "seen", "input"]);
    out.lines()
        .find(|l| l.contains(&format!("ip saddr {src} ip daddr {dst} ")))
        .and_then(|l| l.split("packets ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn run(external: bool) {
    let flag = if external { "true" } else { "false" };
    let mut node = Node::with(if external { "x" } else { "i" }, &[("AWS_VPC_K8S_CNI_EXTERNALSNAT", flag)]);
    let state = introspect(&node.socket);
    let primary = state["enis"][0]["primary_ip"].as_str().unwrap().to_string();
    let r = remote(&node, &primary);
    let pod = node.pod(1);
    let pod_ip = addr_of(&node.add("c1", &pod));
    let mut rules =
        String::from("table ip seen {\n chain input {\n  type filter hook input priority 0; policy accept;\n");
    for src in [&primary, &pod_ip] {
        for dst in [OUTSIDE, VPC_PEER] {
            rules.push_str(&format!("  ip saddr {src} ip daddr {dst} counter\n"));
        }
    }
    rules.push_str(" }\n}\n");
    let mut nft = Command::new("ip")
        .args(["netns", "exec", &r.name, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut nft.stdin.take().unwrap(), rules.as_bytes()).unwrap();
    assert!(nft.wait().unwrap().success());
    sh(&["ip", "netns", "exec", &pod, "ping", "-c", "1", "-W", "2", OUTSIDE]);
    sh(&["ip", "netns", "exec", &pod, "ping", "-c", "1", "-W", "2", VPC_PEER]);
    if external {
        assert_eq!(seen(&r, &pod_ip, OUTSIDE), 1, "external SNAT: the pod's own address leaves the node");
        assert_eq!(seen(&r, &primary, OUTSIDE), 0);
    } else {
        assert_eq!(seen(&r, &primary, OUTSIDE), 1, "internal SNAT: the node's primary address");
        assert_eq!(seen(&r, &pod_ip, OUTSIDE), 0);
    }
    assert_eq!(seen(&r, &pod_ip, VPC_PEER), 1, "inside the VPC, no translation");
    // DEL leaves the node's rules for other pods, and nothing of this one.
    let netns = format!("/var/run/netns/{pod}");
    let del =
        [("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c1"), ("CNI_NETNS", netns.as_str()), ("CNI_IFNAME", "eth0")];
    assert_eq!(node.cni(&del, &node.conf("1.0.0")).0, 0);
    assert!(!sh(&["ip", "-n", &node.name, "route"]).contains(&pod_ip));
    let table = sh(&["ip", "netns", "exec", &node.name, "nft", "list", "ruleset"]);
    assert_eq!(table.contains("snat to"), !external, "{table}");
}

#[test]
fn internal_snat_shows_the_node_address_outside_the_vpc() {
    if privileged() {
        run(false);
    }
}

#[test]
fn external_snat_shows_the_pod_address() {
    if privileged() {
        run(true);
    }
}

#[test]
fn pods_on_a_secondary_eni_leave_through_its_route_table() {
    if !privileged() {
        return;
    }
    let mut node = Node::with("e", &[]);
    let state = introspect(&node.socket);
    let primary = state["enis"][0]["primary_ip"].as_str().unwrap().to_string();
    let _r = remote(&node, &primary);
    // m5.large: 9 addresses on the primary ENI; the 10th pod lands on a secondary ENI.
    let mut pods = Vec::new();
    for i in 0..10 {
        let ns = node.pod(i);
        let ip = addr_of(&node.add(&format!("c{i}"), &ns));
        pods.push((ns, ip));
    }
    let state = introspect(&node.socket);
    let secondary =
        state["enis"].as_array().unwrap().iter().find(|e| !e["primary"].as_bool().unwrap()).expect("a secondary ENI");
    let table = secondary["device_index"].as_u64().unwrap() + 1;
    let on_secondary: Vec<&String> = secondary["secondary_ips"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| pods.iter().find(|(_, ip)| ip == a.as_str().unwrap()).map(|(ns, _)| ns))
        .collect();
    let ns = on_secondary.first().expect("a pod on the secondary ENI");
    let ip = pods.iter().find(|(n, _)| n == *ns).unwrap().1.clone();
    let rules = sh(&["ip", "-n", &node.name, "rule", "show"]);
    assert!(rules.contains(&format!("1536:\tfrom {ip} lookup {table}")), "{rules}");
    let routes =
        Command::new("ip").args(["-n", &node.name, "route", "show", "table", &table.to_string()]).output().unwrap();
    let routes = String::from_utf8_lossy(&routes.stdout);
    assert!(routes.contains("default dev vpc0"), "table {table}: {routes}\n{}", node.log());
    sh(&["ip", "netns", "exec", ns, "ping", "-c", "1", "-W", "2", OUTSIDE]);
}

#[test]
fn ipv6_pods_get_slash_128s_and_ipv4_egress_through_the_node() {
    if !privileged() {
        return;
    }
    let mut node = Node::with("6", &[("ENABLE_IPv6", "true"), ("ENABLE_IPv4", "false")]);
    let state = introspect(&node.socket);
    let primary = state["enis"][0]["primary_ip"].as_str().unwrap().to_string();
    let r = remote(&node, &primary);
    sh(&["ip", "netns", "exec", &r.name, "nft", "add", "table", "ip", "seen"]);
    sh(&[
        "ip",
        "netns",
        "exec",
        &r.name,
        "nft",
        "add",
        "chain",
        "ip",
        "seen",
        "input",
        "{ type filter hook input priority 0; policy accept; }",
    ]);
    sh(&[
        "ip", "netns", "exec", &r.name, "nft", "add", "rule", "ip", "seen", "input", "ip", "saddr", &primary, "ip",
        "daddr", OUTSIDE, "counter",
    ]);
    let (p1, p2) = (node.pod(1), node.pod(2));
    let r1 = node.add("v6a", &p1);
    let r2 = node.add("v6b", &p2);
    let a1 = r1["ips"][0]["address"].as_str().unwrap().to_string();
    assert!(a1.starts_with("2600:1f18:aaaa:1:") && a1.ends_with("/128"), "{r1}");
    assert!(r1["ips"][1]["address"].as_str().unwrap().starts_with("169.254.17"), "an IPv4 egress address: {r1}");
    let a2 = addr_of(&r2);
    // IPv6 pod to pod through the node.
    sh(&["ip", "netns", "exec", &p1, "ping", "-6", "-c", "1", "-W", "2", &a2]);
    // IPv4 egress: out through the egress interface, translated to the node's IPv4.
    sh(&["ip", "netns", "exec", &p1, "ping", "-4", "-c", "1", "-W", "2", OUTSIDE]);
    assert_eq!(seen(&r, &primary, OUTSIDE), 1, "the outside sees the node's IPv4");
    // DEL removes both veths.
    let netns = format!("/var/run/netns/{p1}");
    let del =
        [("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "v6a"), ("CNI_NETNS", netns.as_str()), ("CNI_IFNAME", "eth0")];
    assert_eq!(node.cni(&del, &node.conf("1.1.0")).0, 0);
    let links = sh(&["ip", "-n", &node.name, "-o", "link", "show"]);
    let host = r1["interfaces"][0]["name"].as_str().unwrap();
    assert!(!links.contains(host) && !links.contains(&datapath_egress(host)), "{links}");
}

fn datapath_egress(host: &str) -> String {
    // The egress veth's name is derived from the main one (see datapath::egress_veth_name).
    let out = Command::new("sh").arg("-c").arg(format!("printf %s {host} | sha1sum | cut -c1-11")).output().unwrap();
    format!("v4{}", String::from_utf8_lossy(&out.stdout).trim())
}

#[test]
fn a_cidr_block_the_vpc_gains_is_exempted_from_snat_without_a_restart() {
    if !privileged() {
        return;
    }
    let node = Node::with("v", &[("PODIP_METADATA_SECONDS", "1")]);
    let exempt = || sh(&["ip", "netns", "exec", &node.name, "nft", "list", "set", "ip", "podip", "exempt"]);
    assert!(exempt().contains("10.0.0.0/16"), "{}", exempt());
    assert!(!exempt().contains("10.99.0.0/16"));
    // The VPC gains a block: the metadata lists it, and podipd exempts it within seconds.
    node.ep.vpc().add_vpc_cidr("10.99.0.0/16".parse().unwrap()).unwrap();
    let t0 = std::time::Instant::now();
    while !exempt().contains("10.99.0.0/16") {
        assert!(t0.elapsed() < std::time::Duration::from_secs(15), "not exempted: {}", exempt());
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(exempt().contains("10.0.0.0/16"), "the old block stays: {}", exempt());
}

#[test]
fn a_real_enis_interface_is_found_by_its_mac_and_carries_its_route_table() {
    if !privileged() {
        return;
    }
    // A node whose interfaces are the ENIs' own, named as on newer AMIs: ens5 has the primary
    // ENI's MAC; ens6 onwards have the MACs of the ENIs the VPC will make next (the simulator's
    // ids, hence MACs, follow one counter).
    let node = Node::prepared("m", &[("PODIP_PRIMARY_IF", ""), ("WARM_IP_TARGET", "12")], |node| {
        let instance = node.instance.clone();
        let all = node.ep.vpc().describe_enis_where(|_| true).unwrap();
        let primary = all.iter().find(|e| e.attachment == Some((instance.clone(), 0))).unwrap().clone();
        let last = all.iter().map(|e| eni_number(&e.id)).max().unwrap();
        // veth pairs (the far ends unused): interfaces with a MAC of the test's choosing.
        let nic = |name: &str, mac: &str| {
            let peer = format!("{name}p");
            sh(&["ip", "-n", &node.name, "link", "add", name, "address", mac, "type", "veth", "peer", "name", &peer]);
        };
        nic("ens5", &primary.mac);
        for (i, n) in (last + 1..last + 40).enumerate() {
            let id = ipam::addr::EniId(format!("eni-{n:017x}"));
            nic(&format!("ens{}", i + 6), &cloud::sim::mac_of(&id));
        }
    });
    // The daemon's second ENI (WARM_IP_TARGET asks for more than the primary holds): its
    // interface is set up with its address, and table 2 leaves through it via the subnet's router.
    let t0 = std::time::Instant::now();
    let eni = loop {
        let st = introspect(&node.socket);
        if let Some(e) = st["enis"].as_array().unwrap().iter().find(|e| e["device_index"] == 1) {
            break e.clone();
        }
        assert!(t0.elapsed() < std::time::Duration::from_secs(20), "no secondary ENI: {st}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let id = ipam::addr::EniId(eni["id"].as_str().unwrap().to_string());
    let mac = node.ep.vpc().peek_eni(&id).unwrap().mac;
    let links = sh(&["ip", "-n", &node.name, "-o", "link", "show"]);
    let nic = links.lines().find(|l| l.contains(&mac)).and_then(|l| l.split(": ").nth(1)).unwrap();
    let nic = nic.split('@').next().unwrap().to_string();
    let t0 = std::time::Instant::now();
    loop {
        let table = sh(&["ip", "-n", &node.name, "route", "show", "table", "2"]);
        if table.contains(&format!("default via 10.0.0.1 dev {nic}")) {
            break;
        }
        assert!(t0.elapsed() < std::time::Duration::from_secs(20), "table 2: {table}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let addr = sh(&["ip", "-n", &node.name, "-o", "addr", "show", "dev", &nic]);
    assert!(addr.contains(&format!("{}/24", eni["primary_ip"].as_str().unwrap())), "{addr}");
    assert!(!links.contains("podip-eni1"), "no stand-in link on a node with real interfaces: {links}");
    // SNAT leaves through the interface with the primary ENI's MAC.
    let rules = sh(&["ip", "netns", "exec", &node.name, "nft", "list", "table", "ip", "podip"]);
    assert!(rules.contains("iifname \"ens5\""), "{rules}");
}

fn eni_number(id: &ipam::addr::EniId) -> u64 {
    u64::from_str_radix(id.0.trim_start_matches("eni-"), 16).unwrap()
}

/// An ADD through the daemon's own protocol (no wiring): the address, or the error kind.
fn add_direct(node: &Node, cid: &str) -> Result<String, String> {
    let r = common::request(
        &node.socket,
        &serde_json::json!({"v": 1, "op": "add", "network": "aws-cni", "container_id": cid, "ifname": "eth0",
                            "netns": "/proc/1/ns/net"}),
    );
    r["ok"]["addr"].as_str().map(str::to_string).ok_or_else(|| r["error"].as_str().unwrap_or("?").to_string())
}

#[test]
fn a_real_enis_addresses_wait_for_its_interface_and_its_table_is_repaired() {
    if !privileged() {
        return;
    }
    let extra = [("PODIP_PRIMARY_IF", ""), ("WARM_IP_TARGET", "12"), ("PODIP_METADATA_SECONDS", "1")];
    let node = Node::prepared("w", &extra, |node| {
        let instance = node.instance.clone();
        let all = node.ep.vpc().describe_enis_where(|e| e.attachment == Some((instance.clone(), 0))).unwrap();
        let name = "ens5";
        sh(&[
            "ip",
            "-n",
            &node.name,
            "link",
            "add",
            name,
            "address",
            &all[0].mac,
            "type",
            "veth",
            "peer",
            "name",
            "ens5p",
        ]);
    });
    // The second ENI is attached, but no interface has its MAC yet.
    let st =
        common::wait_for(&node.socket, |st| st["enis"].as_array().unwrap().iter().any(|e| e["device_index"] == 1), 20);
    let eni = st["enis"].as_array().unwrap().iter().find(|e| e["device_index"] == 1).unwrap().clone();
    let id = ipam::addr::EniId(eni["id"].as_str().unwrap().to_string());
    // The primary's nine addresses go to pods; the second ENI's are held back.
    for i in 0..9 {
        let a = add_direct(&node, &format!("c{i}")).unwrap();
        assert!(
            !eni["secondary_ips"].as_array().unwrap().iter().any(|s| s == &a),
            "{a} is on the ENI without an interface"
        );
    }
    assert_eq!(add_direct(&node, "c9"), Err("pool_exhausted".to_string()), "no address without a route");
    // Its interface appears: it is set up and its addresses are handed out.
    let mac = node.ep.vpc().peek_eni(&id).unwrap().mac;
    sh(&["ip", "-n", &node.name, "link", "add", "ens6", "address", &mac, "type", "veth", "peer", "name", "ens6p"]);
    let t0 = std::time::Instant::now();
    let a = loop {
        match add_direct(&node, "c9") {
            Ok(a) => break a,
            Err(_) if t0.elapsed() < std::time::Duration::from_secs(15) => {
                std::thread::sleep(std::time::Duration::from_millis(200))
            }
            Err(e) => panic!("still refused once the interface exists: {e}\n{}", node.log()),
        }
    };
    assert!(eni["secondary_ips"].as_array().unwrap().iter().any(|s| s == &a), "{a}");
    let table = || sh(&["ip", "-n", &node.name, "route", "show", "table", "2"]);
    assert!(table().contains("default via 10.0.0.1 dev ens6"), "{}", table());
    let main = sh(&["ip", "-n", &node.name, "route", "show", "table", "main"]);
    assert!(!main.contains("dev ens6"), "the ENI's subnet route left in main: {main}");
    // The interface goes down and comes back (a driver reset): the kernel emptied the table;
    // podipd puts it back.
    sh(&["ip", "-n", &node.name, "link", "set", "ens6", "down"]);
    sh(&["ip", "-n", &node.name, "link", "set", "ens6", "up"]);
    let t0 = std::time::Instant::now();
    while !table().contains("default via 10.0.0.1 dev ens6") {
        assert!(t0.elapsed() < std::time::Duration::from_secs(15), "table 2 not repaired: {}\n{}", table(), node.log());
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
