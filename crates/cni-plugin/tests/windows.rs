//! The narrow windows of the node agent, each forced (root, in namespaces this test makes): a
//! retried ADD, a crash between the acknowledgement and the wiring, a corrupt checkpoint under
//! running pods (IPv4 and IPv6), a DEL while podipd is down, rules that pile up or go stale,
//! strays on the host, hostile namespaces and veth prefixes. Without root the tests skip,
//! unless REQUIRE_PRIVILEGED=1, where they fail.
#![allow(clippy::disallowed_methods)] // Drives real processes: waits in wall time.

mod common;

use common::{Node, addr_of, env_of, held, host_state, introspect, privileged, request, sh, wait_for};
use serde_json::json;
use std::time::{Duration, Instant};

fn veth(result: &serde_json::Value) -> String {
    result["interfaces"][0]["name"].as_str().unwrap().to_string()
}

fn rules_of(node: &Node, addr: &str) -> Vec<String> {
    let mut all = sh(&["ip", "-n", &node.name, "rule", "show"]);
    all.push_str(&sh(&["ip", "-n", &node.name, "-6", "rule", "show"]));
    all.lines().filter(|l| l.split_whitespace().any(|w| w == addr)).map(String::from).collect()
}

#[test]
fn a_retried_add_never_frees_a_live_pods_address() {
    if !privileged() {
        return;
    }
    let mut node = Node::new("r1");
    let p1 = node.pod(1);
    let netns = format!("/var/run/netns/{p1}");
    let first = node.add("c1", &p1);
    let a = addr_of(&first);
    // The runtime retries the ADD of a pod that is up: the same answer, nothing torn down.
    let (code, again) = node.cni(&env_of("ADD", "c1", &netns), &node.conf("1.0.0"));
    assert_eq!(code, 0, "{again}");
    assert_eq!(addr_of(&again), a);
    assert_eq!(held(&node.socket)["c1"], a);
    assert_eq!(node.cni(&env_of("CHECK", "c1", &netns), &node.conf("1.1.0")).0, 0, "the data path is intact");
    // A retry whose data path cannot be built (the veth vanished, something else took eth0 in
    // the pod): it fails, and the attachment keeps its address.
    sh(&["ip", "-n", &node.name, "link", "del", &veth(&first)]);
    sh(&["ip", "-n", &p1, "link", "add", "eth0", "type", "veth", "peer", "name", "other0"]);
    let (code, v) = node.cni(&env_of("ADD", "c1", &netns), &node.conf("1.0.0"));
    assert_eq!((code, v["code"].as_u64()), (1, Some(100)), "{v}");
    assert_eq!(held(&node.socket).get("c1"), Some(&a), "a failed retry gave the address back");
    // Once the pod is whole again, a retry rebuilds it, with its rules set exclusively: a
    // second to-pod rule and a stale from-pod rule towards other tables go.
    sh(&["ip", "-n", &p1, "link", "del", "eth0"]);
    sh(&["ip", "-n", &node.name, "rule", "add", "to", &a, "lookup", "78", "priority", "512"]);
    sh(&["ip", "-n", &node.name, "rule", "add", "from", &a, "lookup", "77", "priority", "1536"]);
    let (code, v) = node.cni(&env_of("ADD", "c1", &netns), &node.conf("1.0.0"));
    assert_eq!(code, 0, "{v}");
    assert_eq!(addr_of(&v), a);
    let rules = rules_of(&node, &a);
    assert_eq!(rules.len(), 1, "exactly the to-pod rule: {rules:?}");
    assert!(rules[0].starts_with("512:"), "{rules:?}");
}

#[test]
fn an_acknowledged_add_survives_a_crash_before_the_wiring() {
    if !privileged() {
        return;
    }
    let mut node = Node::with("r2", &[("PODIP_WIRING_GRACE", "30")]);
    let p1 = node.pod(1);
    let netns = format!("/var/run/netns/{p1}");
    // podipd acknowledges the plugin's ADD ...
    let req = json!({"v": 1, "op": "add", "network": "podip", "container_id": "c1", "ifname": "eth0", "netns": netns});
    let t0 = Instant::now();
    let a = loop {
        let r = request(&node.socket, &req);
        if let Some(a) = r["ok"]["addr"].as_str() {
            break a.to_string();
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "{r}");
        std::thread::sleep(Duration::from_millis(200));
    };
    // ... and dies before the plugin has built anything.
    let notes = node.restart_daemon();
    assert!(notes.iter().any(|n| n.contains("c1") && n.contains("not wired")), "{notes:?}");
    assert_eq!(held(&node.socket).get("c1"), Some(&a), "the acknowledged assignment survived");
    // New pods never get that address.
    for i in 2..7 {
        let p = node.pod(i);
        let b = addr_of(&node.add(&format!("n{i}"), &p));
        assert_ne!(b, a, "pod n{i} got the address of an acknowledged ADD");
    }
    // The plugin finishes (the runtime's retry): the same address, now wired, and kept.
    let r = node.add("c1", &p1);
    assert_eq!(addr_of(&r), a);
    let inside = sh(&["ip", "-n", &p1, "-o", "addr", "show", "dev", "eth0"]);
    assert!(inside.contains(&format!("{a}/32")), "{inside}");
}

fn corrupt_checkpoint_rebuilt_from_the_host(tag: &str, extra: &[(&str, &str)]) {
    let mut node = Node::with(tag, extra);
    let mut before = Vec::new();
    for i in 0..5 {
        let p = node.pod(i);
        let r = node.add(&format!("c{i}"), &p);
        before.push((p, addr_of(&r)));
    }
    node.kill_daemon();
    std::fs::write(node.dir.join("state/ipam.json"), b"{\"version\":\"podip-ipam/2\",\"allocations\":[{").unwrap();
    let notes = node.restart_daemon();
    assert!(notes.iter().any(|n| n.contains("corrupt")), "{notes:?}");
    let h = held(&node.socket);
    for (_, a) in &before {
        assert!(h.values().any(|v| v == a), "{a} was not recovered from the host: {h:?}");
    }
    assert!(h.keys().all(|k| k.starts_with("host:")), "{h:?}");
    // New pods get other addresses, now and after the grace period and several sweeps.
    let mut fresh = Vec::new();
    for i in 5..8 {
        let p = node.pod(i);
        fresh.push(addr_of(&node.add(&format!("c{i}"), &p)));
    }
    std::thread::sleep(Duration::from_secs(4));
    for i in 8..10 {
        let p = node.pod(i);
        fresh.push(addr_of(&node.add(&format!("c{i}"), &p)));
    }
    for (_, a) in &before {
        assert!(!fresh.contains(a), "{a} of a running pod went to a new pod");
        assert!(held(&node.socket).values().any(|v| v == a), "{a} was released while its pod runs");
    }
    // The runtime's DEL of a recovered pod (its real key) releases it and leaves nothing.
    let netns0 = format!("/var/run/netns/{}", before[0].0);
    assert_eq!(node.cni(&env_of("DEL", "c0", &netns0), &node.conf("1.0.0")).0, 0);
    assert!(!held(&node.socket).values().any(|v| *v == before[0].1));
    assert!(rules_of(&node, &before[0].1).is_empty());
}

#[test]
fn a_corrupt_checkpoint_is_rebuilt_from_the_host_before_anything_is_handed_out() {
    if !privileged() {
        return;
    }
    corrupt_checkpoint_rebuilt_from_the_host("r3", &[("PODIP_WIRING_GRACE", "2")]);
}

#[test]
fn a_corrupt_checkpoint_is_rebuilt_from_the_host_ipv6() {
    if !privileged() {
        return;
    }
    corrupt_checkpoint_rebuilt_from_the_host(
        "r6",
        &[("PODIP_WIRING_GRACE", "2"), ("ENABLE_IPv6", "true"), ("ENABLE_IPv4", "false")],
    );
}

#[test]
fn a_del_while_podipd_is_down_leaves_no_rule_and_the_retry_releases() {
    if !privileged() {
        return;
    }
    let mut node = Node::new("r4");
    let p1 = node.pod(1);
    let netns = format!("/var/run/netns/{p1}");
    let r = node.add("c1", &p1);
    let a = addr_of(&r);
    assert!(!rules_of(&node, &a).is_empty());
    node.kill_daemon();
    let (code, v) = node.cni(&env_of("DEL", "c1", &netns), &node.conf("1.0.0"));
    assert_eq!((code, v["code"].as_u64()), (1, Some(11)), "the runtime must retry: {v}");
    assert!(rules_of(&node, &a).is_empty(), "rules left behind: {:?}", rules_of(&node, &a));
    assert!(!sh(&["ip", "-n", &node.name, "link", "show"]).contains(&veth(&r)));
    node.start_daemon();
    assert_eq!(held(&node.socket).get("c1"), Some(&a), "kept until its DEL comes (or the grace ends)");
    assert_eq!(node.cni(&env_of("DEL", "c1", &netns), &node.conf("1.0.0")).0, 0);
    assert!(held(&node.socket).is_empty());
    assert!(rules_of(&node, &a).is_empty());
}

#[test]
fn strays_on_the_host_are_swept_and_live_pods_are_not() {
    if !privileged() {
        return;
    }
    let mut node = Node::with("r5", &[("PODIP_WIRING_GRACE", "2")]);
    let p1 = node.pod(1);
    let live = node.add("c1", &p1);
    let a = addr_of(&live);
    // Rules of an address no attachment holds, and a veth of podip's prefix nobody owns.
    let stray = "10.0.0.200";
    sh(&["ip", "-n", &node.name, "rule", "add", "to", stray, "lookup", "main", "priority", "512"]);
    sh(&["ip", "-n", &node.name, "rule", "add", "from", stray, "lookup", "3", "priority", "1536"]);
    sh(&["ip", "-n", &node.name, "link", "add", "enistray0", "type", "veth", "peer", "name", "strayp0"]);
    let t0 = Instant::now();
    while !rules_of(&node, stray).is_empty() || sh(&["ip", "-n", &node.name, "link", "show"]).contains("enistray0") {
        assert!(t0.elapsed() < Duration::from_secs(15), "strays were not swept:\n{}", host_state(&node.name));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!rules_of(&node, &a).is_empty(), "the live pod's rules stay");
    assert!(sh(&["ip", "-n", &node.name, "link", "show"]).contains(&veth(&live)), "the live pod's veth stays");
    assert_eq!(held(&node.socket)["c1"], a);
}

#[test]
fn hostile_namespaces_and_prefixes_are_refused_before_any_address_is_taken() {
    if !privileged() {
        return;
    }
    let mut node = Node::new("r7");
    let p = node.pod(1);
    let pod_netns = format!("/var/run/netns/{p}");
    let fifo = node.dir.join("fifo");
    sh(&["mkfifo", fifo.to_str().unwrap()]);
    // Let the pool fill first, so a refusal is not an empty pool.
    wait_for(&node.socket, |st| st["total"].as_u64().unwrap_or(0) > 0, 30);
    let before = host_state(&node.name);
    let node_netns = format!("/var/run/netns/{}", node.name);
    let mnt = format!("/proc/{}/ns/mnt", std::process::id());
    let cases: Vec<(&str, u64, &str)> = vec![
        // The host's (pid 1's): refused as the host's, or as unopenable where pid 1 is shielded.
        ("/proc/1/ns/net", 4, "CNI_NETNS=\"/proc/1/ns/net\""),
        // The node's own namespace, by its name and as the plugin's own.
        (node_netns.as_str(), 4, "plugin's own"),
        ("/proc/self/ns/net", 4, "plugin's own"),
        (fifo.to_str().unwrap(), 4, "not a namespace file"),
        ("/dev/null", 4, "not a namespace file"),
        (mnt.as_str(), 4, "not a network namespace"),
        ("/tmp", 4, "not a namespace file"),
        ("/nonexistent/netns", 4, "cannot be opened"),
    ];
    for (netns, want, needle) in cases {
        let t0 = Instant::now();
        let (code, v) = node.cni(&env_of("ADD", "h1", netns), &node.conf("1.0.0"));
        assert!(t0.elapsed() < Duration::from_secs(5), "{netns}: the plugin hung");
        assert_eq!((code, v["code"].as_u64()), (1, Some(want)), "{netns}: {v}");
        let msg = v["msg"].as_str().unwrap();
        assert!(msg.contains("CNI_NETNS") && msg.contains(needle), "{netns}: {msg}");
    }
    // Veth prefixes: another than podipd's, or with a control character.
    let conf = |prefix: &str| {
        format!(
            r#"{{"cniVersion":"1.0.0","name":"podip","type":"podip-cni","socket":"{}","vethPrefix":"{prefix}"}}"#,
            node.socket.display()
        )
    };
    let (code, v) = node.cni(&env_of("ADD", "h1", &pod_netns), &conf("abc"));
    assert_eq!((code, v["code"].as_u64()), (1, Some(7)), "{v}");
    assert!(v["msg"].as_str().unwrap().contains("\"abc\""), "{v}");
    let (code, v) = node.cni(&env_of("ADD", "h1", &pod_netns), &conf("e\\u0007"));
    assert_eq!((code, v["code"].as_u64()), (1, Some(7)), "{v}");
    assert_eq!(host_state(&node.name), before, "nothing changed on the host");
    assert!(held(&node.socket).is_empty(), "no address was kept");
    assert!(sh(&["ip", "-n", &p, "-o", "link", "show"]).lines().count() == 1, "nothing in the pod");
    // A DEL whose configuration names another prefix still removes the pod's veth (podipd's
    // prefix wins): ADD with the default, DEL with "abc".
    let r = node.add("h2", &p);
    assert_eq!(node.cni(&env_of("DEL", "h2", &pod_netns), &conf("abc")).0, 0);
    assert!(!sh(&["ip", "-n", &node.name, "link", "show"]).contains(&veth(&r)));
    assert!(rules_of(&node, &addr_of(&r)).is_empty());
    let st = introspect(&node.socket);
    assert_eq!(st["assigned"], 0, "{st}");
}
