//! podip-cni end to end in network namespaces this test makes (root): a node namespace with the
//! daemon behind it, two pods that get addresses from the simulated subnet and reach each other,
//! CHECK, idempotent DEL (also without a netns) that leaves nothing behind, and the bad-input
//! table. Without root the test skips, unless REQUIRE_PRIVILEGED=1, where it fails.
#![allow(clippy::disallowed_methods)] // Drives real processes: waits in wall time.

mod common;

use common::{Node, privileged, sh};

#[test]
fn pods_get_addresses_reach_each_other_and_del_leaves_nothing() {
    if !privileged() {
        return;
    }
    let mut node = Node::new("a");
    let (p1, p2) = (node.pod(1), node.pod(2));
    let r1 = node.add("ctr1", &p1);
    let r2 = node.add("ctr2", &p2);
    let (a1, a2) = (common::addr_of(&r1), common::addr_of(&r2));
    assert!(a1.starts_with("10.0.0.") && a2.starts_with("10.0.0.") && a1 != a2, "{a1} {a2}");
    assert_eq!(r1["cniVersion"], "1.0.0");
    assert_eq!(r1["interfaces"][1]["sandbox"], format!("/var/run/netns/{p1}"));
    // The pod side as the VPC CNI builds it.
    let inside = sh(&["ip", "-n", &p1, "-o", "addr", "show", "dev", "eth0"]);
    assert!(inside.contains(&format!("{a1}/32")), "{inside}");
    let neigh = sh(&["ip", "-n", &p1, "neigh", "show", "169.254.1.1"]);
    assert!(neigh.contains("PERMANENT"), "{neigh}");
    let host_veth = r1["interfaces"][0]["name"].as_str().unwrap().to_string();
    let rules = sh(&["ip", "-n", &node.name, "rule", "show"]);
    assert!(rules.contains(&format!("512:\tfrom all to {a1} lookup main")), "{rules}");
    // Pod to pod, through the node.
    sh(&["ip", "netns", "exec", &p1, "ping", "-c", "1", "-W", "2", &a2]);
    // CHECK passes while everything is in place.
    let netns1 = format!("/var/run/netns/{p1}");
    let env1 = [("CNI_CONTAINERID", "ctr1"), ("CNI_NETNS", netns1.as_str()), ("CNI_IFNAME", "eth0")];
    let with = |cmd: &'static str| -> Vec<(&str, &str)> {
        let mut v = vec![("CNI_COMMAND", cmd)];
        v.extend_from_slice(&env1);
        v
    };
    assert_eq!(node.cni(&with("CHECK"), &node.conf("1.1.0")).0, 0);
    // DEL takes the veth down (its route goes with it) and removes the rules: nothing on the
    // node carries the address; the pod can no longer send. The link itself goes with the pod's
    // namespace, which the runtime deletes next.
    assert_eq!(node.cni(&with("DEL"), &node.conf("1.0.0")).0, 0);
    let link = sh(&["ip", "-n", &node.name, "-o", "link", "show", "dev", &host_veth]);
    assert!(link.contains("state DOWN") && !link.contains(",UP"), "{link}");
    assert!(!sh(&["ip", "-n", &node.name, "rule", "show"]).contains(&a1));
    assert!(!sh(&["ip", "-n", &node.name, "route", "show"]).contains(&a1));
    assert!(!sh(&["ip", "-n", &node.name, "-6", "route", "show"]).contains(&host_veth));
    let gone = std::process::Command::new("ip")
        .args(["netns", "exec", &p1, "ping", "-c", "1", "-W", "1", &a2])
        .output()
        .unwrap();
    assert!(!gone.status.success(), "the pod still reaches the node after DEL");
    // Again: still success.
    assert_eq!(node.cni(&with("DEL"), &node.conf("1.0.0")).0, 0);
    // The runtime deletes the namespace: the veth goes with it, and DEL still succeeds.
    sh(&["ip", "netns", "del", &p1]);
    let t0 = std::time::Instant::now();
    while sh(&["ip", "-n", &node.name, "-o", "link", "show"]).contains(&host_veth) {
        assert!(t0.elapsed() < std::time::Duration::from_secs(5), "the veth outlived its namespace");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(node.cni(&with("DEL"), &node.conf("1.0.0")).0, 0);
    let no_netns = [("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "ctr1"), ("CNI_NETNS", ""), ("CNI_IFNAME", "eth0")];
    assert_eq!(node.cni(&no_netns, &node.conf("1.0.0")).0, 0);
    let (code, v) = node.cni(&with("CHECK"), &node.conf("1.1.0"));
    assert_ne!(code, 0, "CHECK after DEL fails: {v}");
    // STATUS and VERSION.
    assert_eq!(node.cni(&[("CNI_COMMAND", "STATUS")], &node.conf("1.1.0")).0, 0);
    let (_, v) = node.cni(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"1.1.0"}"#);
    assert_eq!(v["supportedVersions"], serde_json::json!(["0.4.0", "1.0.0", "1.1.0"]));
}

/// (environment, stdin, expected CNI code, text the message names).
type BadCase<'a> = (Vec<(&'a str, &'a str)>, String, u64, &'a str);

#[test]
fn bad_input_gets_the_right_code_and_changes_nothing() {
    if !privileged() {
        return;
    }
    let mut node = Node::new("b");
    let p = node.pod(1);
    let netns = format!("/var/run/netns/{p}");
    let good =
        [("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c1"), ("CNI_NETNS", netns.as_str()), ("CNI_IFNAME", "eth0")];
    let before = sh(&["ip", "-n", &node.name, "link", "show"]);
    let cases: Vec<BadCase> = vec![
        (good.to_vec(), "{not json".into(), 6, "not valid JSON"),
        (good.to_vec(), r#"{"cniVersion":"0.1.0","name":"podip"}"#.into(), 1, "0.1.0"),
        (good.to_vec(), r#"{"cniVersion":"1.0.0","name":"podip","mtu":"big"}"#.into(), 7, "mtu"),
        (vec![("CNI_COMMAND", "ADD")], node.conf("1.0.0"), 4, "CNI_CONTAINERID"),
        (
            vec![
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "c1"),
                ("CNI_NETNS", netns.as_str()),
                ("CNI_IFNAME", "averyveryverylongname"),
            ],
            node.conf("1.0.0"),
            4,
            "longer than 15",
        ),
        (vec![("CNI_COMMAND", "FROB")], node.conf("1.0.0"), 4, "FROB"),
    ];
    for (env, stdin, want, needle) in cases {
        let (code, v) = node.cni(&env, &stdin);
        assert_eq!(code, 1, "{v}");
        assert_eq!(v["code"].as_u64(), Some(want), "{v}");
        assert!(v["msg"].as_str().unwrap().contains(needle), "{v}");
    }
    assert_eq!(sh(&["ip", "-n", &node.name, "link", "show"]), before, "nothing changed");
    assert!(sh(&["ip", "-n", &p, "link", "show"]).lines().count() <= 2, "no pod interface");
}

#[test]
fn on_restart_the_host_is_ground_truth_both_ways() {
    if !privileged() {
        return;
    }
    let mut node = Node::with("g", &[("PODIP_WIRING_GRACE", "2")]);
    let (p1, p2) = (node.pod(1), node.pod(2));
    let r1 = node.add("live", &p1);
    let r2 = node.add("gone", &p2);
    // The second pod's data path disappears while the daemon is down (the pod was deleted).
    let veth2 = r2["interfaces"][0]["name"].as_str().unwrap();
    sh(&["ip", "-n", &node.name, "link", "del", veth2]);
    let notes = node.restart_daemon();
    // Its entry is kept for the grace period (a plugin may be mid-flight), then released.
    let st = common::introspect(&node.socket);
    assert_eq!(st["pods"].as_array().unwrap().len(), 2, "{st}");
    assert!(notes.iter().any(|n| n.contains("gone") && n.contains("not wired")), "{notes:?}");
    let st = common::wait_for(&node.socket, |st| st["pods"].as_array().unwrap().len() == 1, 15);
    assert_eq!(st["pods"][0]["container_id"], "live", "{st}");
    assert_eq!(st["pods"][0]["ip"].as_str().unwrap(), common::addr_of(&r1));
}

#[test]
fn status_stays_ready_on_a_full_or_cooling_pool_while_add_says_11() {
    if !privileged() {
        return;
    }
    // One ENI only (MAX_ENI=1): 9 addresses, and the pool cannot grow. Before, STATUS failed
    // with 50 here, which makes containerd report NetworkReady=false and the node NotReady.
    let mut node = Node::with("s", &[("MAX_ENI", "1"), ("IP_COOLDOWN_PERIOD", "600")]);
    let status = |node: &Node| node.cni(&[("CNI_COMMAND", "STATUS")], &node.conf("1.1.0"));
    assert_eq!(status(&node).0, 0, "ready at first");
    let mut pods = Vec::new();
    for i in 0..9 {
        let ns = node.pod(i);
        node.add(&format!("s{i}"), &ns);
        pods.push(ns);
    }
    let refused_add = |node: &mut Node, cid: &str| {
        let ns = node.pod(100 + cid.len());
        let netns = format!("/var/run/netns/{ns}");
        let (code, v) = node.cni(&common::env_of("ADD", cid, &netns), &node.conf("1.1.0"));
        assert_eq!((code, v["code"].as_u64()), (1, Some(11)), "{v}");
        assert!(sh(&["ip", "-n", &ns, "-o", "link", "show"]).lines().count() == 1, "a refused ADD builds nothing");
    };
    // A node at max pods.
    let (code, v) = status(&node);
    assert_eq!(code, 0, "a full pool is ready: {v}");
    refused_add(&mut node, "full");
    // A node whose free addresses are all cooling.
    for (i, ns) in pods.iter().enumerate() {
        let netns = format!("/var/run/netns/{ns}");
        let (code, v) = node.cni(&common::env_of("DEL", &format!("s{i}"), &netns), &node.conf("1.1.0"));
        assert_eq!(code, 0, "{v}");
    }
    let st = common::introspect(&node.socket);
    assert_eq!(st["cooling"], 9, "{st}");
    let (code, v) = status(&node);
    assert_eq!(code, 0, "a cooling pool is ready: {v}");
    refused_add(&mut node, "cooling");
    // A daemon that is gone: STATUS fails.
    node.kill_daemon();
    let (code, v) = status(&node);
    assert_eq!((code, v["code"].as_u64()), (1, Some(50)), "{v}");
}

/// DEL leaves its veth pair to the pod namespace's teardown. A namespace the runtime keeps can
/// take an ADD again (DEL freed its interface name), and the daemon's sweep removes the old host
/// end, which no attachment holds.
#[test]
fn a_namespace_kept_after_del_takes_an_add_again_and_the_old_veth_is_swept() {
    if !privileged() {
        return;
    }
    let mut node = Node::with("k", &[("PODIP_WIRING_GRACE", "3")]);
    let p = node.pod(1);
    let netns = format!("/var/run/netns/{p}");
    let r1 = node.add("k1", &p);
    let v1 = r1["interfaces"][0]["name"].as_str().unwrap().to_string();
    let del =
        [("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "k1"), ("CNI_NETNS", netns.as_str()), ("CNI_IFNAME", "eth0")];
    assert_eq!(node.cni(&del, &node.conf("1.0.0")).0, 0);
    assert!(common::veth_released(&node.name, &v1));
    let inside = sh(&["ip", "-n", &p, "-o", "link", "show"]);
    assert!(!inside.contains(" eth0"), "DEL freed the pod's interface name: {inside}");
    // The same namespace, a new container: it gets eth0 and an address.
    let r2 = node.add("k2", &p);
    let a2 = common::addr_of(&r2);
    let v2 = r2["interfaces"][0]["name"].as_str().unwrap().to_string();
    assert!(sh(&["ip", "-n", &p, "-o", "addr", "show", "dev", "eth0"]).contains(&format!("{a2}/32")));
    assert!(sh(&["ip", "-n", &node.name, "route", "show"]).contains(&format!("{a2} dev {v2}")));
    if v1 != v2 {
        // The sweep (every second here) removes the old host end; the live one stays.
        let t0 = std::time::Instant::now();
        while sh(&["ip", "-n", &node.name, "-o", "link", "show"]).contains(&format!(" {v1}@")) {
            assert!(t0.elapsed() < std::time::Duration::from_secs(20), "the retired veth {v1} was never swept");
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    assert!(!common::veth_released(&node.name, &v2), "the live pod's veth went");
}

/// A DEL naming another pod's namespace, or the host's, never touches an interface there: only
/// the pod end of this attachment's own veth is renamed, and otherwise the veth is deleted as
/// without a namespace.
#[test]
fn a_del_naming_another_namespace_leaves_its_interfaces_alone() {
    if !privileged() {
        return;
    }
    let mut node = Node::new("w");
    let (p1, p2, p3) = (node.pod(1), node.pod(2), node.pod(3));
    let r1 = node.add("w1", &p1);
    let r2 = node.add("w2", &p2);
    let r3 = node.add("w3", &p3);
    let v1 = r1["interfaces"][0]["name"].as_str().unwrap().to_string();
    let v3 = r3["interfaces"][0]["name"].as_str().unwrap().to_string();
    let a2 = common::addr_of(&r2);
    let eth0_of = |p: &str| sh(&["ip", "-n", p, "-o", "link", "show", "dev", "eth0"]);
    let before = eth0_of(&p2);
    // w1's DEL with w2's namespace.
    let other = format!("/var/run/netns/{p2}");
    let del =
        [("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "w1"), ("CNI_NETNS", other.as_str()), ("CNI_IFNAME", "eth0")];
    assert_eq!(node.cni(&del, &node.conf("1.0.0")).0, 0);
    assert_eq!(eth0_of(&p2), before, "w2's eth0 was touched");
    assert!(sh(&["ip", "-n", &p2, "-o", "addr", "show", "dev", "eth0"]).contains(&format!("{a2}/32")));
    assert!(!sh(&["ip", "-n", &node.name, "-o", "link", "show"]).contains(&format!(" {v1}@")), "w1's veth stayed");
    // w3's DEL with the host's namespace: refused as a pod's, so the veth is simply deleted.
    let del =
        [("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "w3"), ("CNI_NETNS", "/proc/1/ns/net"), ("CNI_IFNAME", "eth0")];
    assert_eq!(node.cni(&del, &node.conf("1.0.0")).0, 0);
    assert!(!sh(&["ip", "-n", &node.name, "-o", "link", "show"]).contains(&format!(" {v3}@")), "w3's veth stayed");
    assert!(sh(&["ip", "-o", "link", "show"]).lines().all(|l| !l.contains("pdel")), "a host interface renamed");
}

/// The checkpoint gone while pods run (deleted, or left behind at another path by an upgrade):
/// the wired pods keep their addresses, and every other address cools down once, since which
/// of them a pod left a moment ago is not known any more.
#[test]
fn a_checkpoint_gone_while_pods_run_is_rebuilt_from_the_host_and_the_rest_cools_once() {
    if !privileged() {
        return;
    }
    let mut node = Node::with("lost", &[("IP_COOLDOWN_PERIOD", "30")]);
    let (p1, p2) = (node.pod(1), node.pod(2));
    let live = common::addr_of(&node.add("live", &p1));
    let left = common::addr_of(&node.add("left", &p2));
    let netns = format!("/var/run/netns/{p2}");
    let del =
        [("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "left"), ("CNI_NETNS", netns.as_str()), ("CNI_IFNAME", "eth0")];
    assert_eq!(node.cni(&del, &node.conf("1.0.0")).0, 0);
    node.kill_daemon();
    std::fs::remove_file(node.dir.join("state/ipam.json")).unwrap();
    let notes = node.restart_daemon();
    assert!(notes.iter().any(|n| n.contains("cool down once")), "{notes:?}");
    let st = common::introspect(&node.socket);
    let pods: Vec<String> =
        st["pods"].as_array().unwrap().iter().map(|p| p["ip"].as_str().unwrap().to_string()).collect();
    assert_eq!(pods, std::slice::from_ref(&live), "the wired pod is recovered: {st}");
    // The address the other pod left a moment ago is not handed out while it may still cool.
    let p3 = node.pod(3);
    for i in 0..4 {
        let a = common::addr_of(&node.add(&format!("new{i}"), &p3));
        assert!(a != left && a != live, "{a} handed out again: {st}");
        let netns = format!("/var/run/netns/{p3}");
        let cid = format!("new{i}");
        let del = [
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", cid.as_str()),
            ("CNI_NETNS", netns.as_str()),
            ("CNI_IFNAME", "eth0"),
        ];
        assert_eq!(node.cni(&del, &node.conf("1.0.0")).0, 0);
    }
}

/// Every end of a pod's veths (the pod's `eth0` and its host end, and an IPv6 pod's IPv4 egress
/// pair) has one transmit and one receive queue, not one per possible CPU, the kernel's default.
#[test]
fn every_end_of_a_pods_veths_has_one_queue_each_way() {
    if !privileged() {
        return;
    }
    for (tag, extra) in [("qq4", vec![]), ("qq6", vec![("ENABLE_IPv6", "true"), ("ENABLE_IPv4", "false")])] {
        let mut node = Node::with(tag, &extra);
        let p = node.pod(1);
        node.add("c1", &p);
        let links = |ns: &str| {
            sh(&["ip", "-n", ns, "-d", "-o", "link", "show", "type", "veth"])
                .lines()
                .map(String::from)
                .collect::<Vec<_>>()
        };
        let pod = links(&p);
        let host: Vec<String> =
            links(&node.name).into_iter().filter(|l| l.contains(&format!("link-netns {p} "))).collect();
        assert_eq!(pod.len(), if tag == "qq6" { 2 } else { 1 }, "{pod:?}");
        assert_eq!(host.len(), pod.len(), "{host:?}");
        for l in pod.iter().chain(&host) {
            assert!(l.contains("numtxqueues 1 numrxqueues 1 "), "{tag}: {l}");
        }
    }
}
