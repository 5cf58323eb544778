//! The narrow windows of the node agent, each forced (root, in namespaces this test makes): a
//! retried ADD, a crash between the acknowledgement and the wiring, a corrupt checkpoint under
//! running pods (IPv4 and IPv6), a DEL while podipd is down, rules that pile up or go stale,
//! strays on the host, hostile namespaces and veth prefixes. Without root the tests skip,
//! unless REQUIRE_PRIVILEGED=1, where they fail.
#![allow(clippy::disallowed_methods)] // Drives real processes: waits in wall time.

mod common;

use common::{Node, addr_of, env_of, held, host_state, introspect, privileged, request, sh, veth_released, wait_for};
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
fn a_del_while_podipd_is_down_changes_nothing_and_the_retry_leaves_nothing() {
    if !privileged() {
        return;
    }
    let node = Node::new("r4");
    let mut node = node;
    let p1 = node.pod(1);
    let netns = format!("/var/run/netns/{p1}");
    let r = node.add("c1", &p1);
    let a = addr_of(&r);
    let before = host_state(&node.name);
    node.kill_daemon();
    let (code, v) = node.cni(&env_of("DEL", "c1", &netns), &node.conf("1.0.0"));
    assert_eq!((code, v["code"].as_u64()), (1, Some(11)), "the runtime must retry: {v}");
    assert_eq!(host_state(&node.name), before, "nothing changed while podipd was down");
    node.start_daemon();
    assert_eq!(held(&node.socket).get("c1"), Some(&a));
    assert_eq!(node.cni(&env_of("DEL", "c1", &netns), &node.conf("1.0.0")).0, 0);
    assert!(held(&node.socket).is_empty());
    assert!(rules_of(&node, &a).is_empty());
    assert!(veth_released(&node.name, &veth(&r)));
}

#[test]
fn del_tears_down_before_the_address_can_go_to_another_pod() {
    if !privileged() {
        return;
    }
    // No cooldown: a released address can go to the next pod at once.
    let mut node = Node::with("r8", &[("IP_COOLDOWN_PERIOD", "0"), ("MAX_ENI", "1")]);
    let p1 = node.pod(1);
    let netns1 = format!("/var/run/netns/{p1}");
    let a = addr_of(&node.add("c1", &p1));
    // DEL with every netlink request of its teardown held back 1.5 s (strace delays them).
    let mut del = std::process::Command::new("nsenter");
    del.arg(format!("--net=/var/run/netns/{}", node.name))
        .args([
            "strace",
            "-f",
            "-qq",
            "-o",
            "/dev/null",
            "-e",
            "trace=sendto",
            "-e",
            "inject=sendto:delay_enter=1500000",
        ])
        .arg(common::plugin_bin())
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    for (k, v) in env_of("DEL", "c1", &netns1) {
        del.env(k, v);
    }
    let mut child = del.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), node.conf("1.0.0").as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(700));
    // Mid-teardown: the address is still held, so no new pod can get it.
    assert_eq!(held(&node.socket).get("c1"), Some(&a), "released before its teardown ended");
    let p2 = node.pod(2);
    let netns2 = format!("/var/run/netns/{p2}");
    let (code, v) = node.cni(&env_of("ADD", "c2", &netns2), &node.conf("1.0.0"));
    if code == 0 {
        assert_ne!(addr_of(&v), a, "a second pod got an address still wired to the first");
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(!held(&node.socket).contains_key("c1"));
    if code == 0 {
        let b = addr_of(&v);
        assert!(!rules_of(&node, &b).is_empty(), "the first pod's DEL took the second pod's rules");
    }
}

#[test]
fn two_sandboxes_of_one_pod_and_two_interfaces_of_one_container_keep_their_own_veths() {
    if !privileged() {
        return;
    }
    let mut node = Node::new("r9");
    let (p1, p2) = (node.pod(1), node.pod(2));
    let (n1, n2) = (format!("/var/run/netns/{p1}"), format!("/var/run/netns/{p2}"));
    let args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web";
    let with_args = |cmd: &'static str, cid: &'static str, netns: &str, ifname: &'static str| {
        let mut e = vec![("CNI_COMMAND", cmd), ("CNI_CONTAINERID", cid), ("CNI_IFNAME", ifname), ("CNI_ARGS", args)];
        e.push(("CNI_NETNS", Box::leak(netns.to_string().into_boxed_str())));
        e
    };
    let conf = node.conf("1.0.0");
    let t0 = Instant::now();
    let s1 = loop {
        let (code, v) = node.cni(&with_args("ADD", "s1", &n1, "eth0"), &conf);
        if code == 0 {
            break v;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "{v}");
        std::thread::sleep(Duration::from_millis(200));
    };
    // A second sandbox of the same pod while the first one's veth lives: refused, first intact.
    let (code, v) = node.cni(&with_args("ADD", "s2", &n2, "eth0"), &conf);
    assert_eq!((code, v["code"].as_u64()), (1, Some(11)), "{v}");
    assert_eq!(node.cni(&with_args("CHECK", "s1", &n1, "eth0"), &node.conf("1.1.0")).0, 0, "s1 intact");
    // The first sandbox goes; the second comes; a late retry of the first's DEL leaves it alone.
    assert_eq!(node.cni(&with_args("DEL", "s1", &n1, "eth0"), &conf).0, 0);
    let (code, s2) = node.cni(&with_args("ADD", "s2", &n2, "eth0"), &conf);
    assert_eq!(code, 0, "{s2}");
    assert_eq!(node.cni(&with_args("DEL", "s1", &n1, "eth0"), &conf).0, 0);
    assert_eq!(node.cni(&with_args("CHECK", "s2", &n2, "eth0"), &node.conf("1.1.0")).0, 0, "s2 intact");
    assert!(!rules_of(&node, &addr_of(&s2)).is_empty());
    assert_eq!(veth(&s1), veth(&s2), "the VPC CNI's name for a pod's eth0");
    // A second interface of one container gets a veth of its own.
    let (code, net1) = node.cni(&with_args("ADD", "s2", &n2, "net1"), &conf);
    assert_eq!(code, 0, "{net1}");
    assert_ne!(veth(&net1), veth(&s2));
    assert_eq!(node.cni(&with_args("CHECK", "s2", &n2, "eth0"), &node.conf("1.1.0")).0, 0, "eth0 intact");
}

#[test]
fn a_second_daemon_in_the_same_node_namespace_is_refused_whatever_its_state_directory() {
    if !privileged() {
        return;
    }
    let mut node =
        Node::with("ra", &[("AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS", "10.0.0.0/8,192.168.0.0/16,192.168.1.0/24")]);
    let p1 = node.pod(1);
    let r = node.add("c1", &p1);
    let before = host_state(&node.name);
    let other = node.dir.join("other");
    let out = node
        .daemon_command()
        .env("PODIP_CHECKPOINT", other.join("ipam.json"))
        .env("PODIP_SOCKET", other.join("podipd.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(node.log().contains("another podipd (pid"), "{}", node.log());
    assert_eq!(host_state(&node.name), before, "the second daemon changed the node");
    assert_eq!(held(&node.socket)["c1"], addr_of(&r));
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
    sh(&["ip", "-n", &node.name, "link", "add", "eni0123456789a", "type", "veth", "peer", "name", "strayp0"]);
    // Links that are not podip's veths, whatever their names: never touched.
    for name in ["eni0", "eniabcdefabcde", "v4abcdefabcde"] {
        sh(&["ip", "-n", &node.name, "link", "add", name, "type", "bridge"]);
    }
    let t0 = Instant::now();
    while !rules_of(&node, stray).is_empty() || sh(&["ip", "-n", &node.name, "link", "show"]).contains("eni0123456789a")
    {
        assert!(t0.elapsed() < Duration::from_secs(15), "strays were not swept:\n{}", host_state(&node.name));
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));
    let links = sh(&["ip", "-n", &node.name, "link", "show"]);
    for name in ["eni0", "eniabcdefabcde", "v4abcdefabcde", "vpc0"] {
        assert!(links.contains(name) || name == "vpc0", "{name} was removed:\n{links}");
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
    let this_host = format!("/proc/{}/ns/net", std::process::id());
    let cases: Vec<(&str, u64, &str)> = vec![
        // The host's (pid 1's): refused as the host's, or as unopenable where pid 1 is shielded.
        ("/proc/1/ns/net", 4, "CNI_NETNS=\"/proc/1/ns/net\""),
        // The host's by another path (this test runs in it): refused even where pid 1 is shielded.
        (this_host.as_str(), 4, "host's"),
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
    // An interface name with `%d`, which the kernel would replace with a number of its own.
    let mut e = env_of("ADD", "h1", &pod_netns);
    e[3] = ("CNI_IFNAME", "eth%d");
    let (code, v) = node.cni(&e, &node.conf("1.0.0"));
    assert_eq!((code, v["code"].as_u64()), (1, Some(4)), "{v}");
    assert!(v["msg"].as_str().unwrap().contains("CNI_IFNAME=\"eth%d\""), "{v}");
    assert_eq!(host_state(&node.name), before, "nothing changed on the host");
    assert!(held(&node.socket).is_empty(), "no address was kept");
    assert!(sh(&["ip", "-n", &p, "-o", "link", "show"]).lines().count() == 1, "nothing in the pod");
    // A DEL whose configuration names another prefix still removes the pod's veth (podipd's
    // prefix wins): ADD with the default, DEL with "abc".
    let r = node.add("h2", &p);
    assert_eq!(node.cni(&env_of("DEL", "h2", &pod_netns), &conf("abc")).0, 0);
    assert!(veth_released(&node.name, &veth(&r)));
    assert!(rules_of(&node, &addr_of(&r)).is_empty());
    let st = introspect(&node.socket);
    assert_eq!(st["assigned"], 0, "{st}");
    // A socket path that leads nowhere: try again, and nothing is made on the host.
    let nowhere = node.dir.join("nowhere/deep/podipd.sock");
    let conf =
        format!(r#"{{"cniVersion":"1.0.0","name":"podip","type":"podip-cni","socket":"{}"}}"#, nowhere.display());
    let (code, v) = node.cni(&env_of("DEL", "h3", &pod_netns), &conf);
    assert_eq!((code, v["code"].as_u64()), (1, Some(11)), "{v}");
    assert!(!node.dir.join("nowhere").exists(), "the plugin made directories");
}

/// An ADD into a namespace whose `CNI_IFNAME` is taken says so, naming the interface, gives its
/// address back, and leaves the host and the pod's interface as they were.
fn an_add_whose_interface_name_is_taken_in_the_pod_names_it(tag: &str, extra: &[(&str, &str)]) {
    let mut node = Node::with(tag, extra);
    let p = node.pod(1);
    let pod_netns = format!("/var/run/netns/{p}");
    wait_for(&node.socket, |st| st["total"].as_u64().unwrap_or(0) > 0, 30);
    sh(&["ip", "-n", &p, "link", "add", "eth0", "type", "veth", "peer", "name", "other0"]);
    let before = (host_state(&node.name), sh(&["ip", "-n", &p, "-o", "link", "show"]));
    let (code, v) = node.cni(&env_of("ADD", "t1", &pod_netns), &node.conf("1.0.0"));
    assert_eq!((code, v["code"].as_u64()), (1, Some(100)), "{v}");
    let msg = v["msg"].as_str().unwrap();
    assert!(msg.contains(r#"interface named "eth0" (CNI_IFNAME)"#) && msg.contains(&pod_netns), "{msg}");
    assert!(held(&node.socket).is_empty(), "the address was given back");
    assert_eq!((host_state(&node.name), sh(&["ip", "-n", &p, "-o", "link", "show"])), before);
}

#[test]
fn an_add_whose_interface_name_is_taken_in_the_pod_names_it_ipv4() {
    if privileged() {
        an_add_whose_interface_name_is_taken_in_the_pod_names_it("rl", &[]);
    }
}

#[test]
fn an_add_whose_interface_name_is_taken_in_the_pod_names_it_ipv6() {
    if privileged() {
        an_add_whose_interface_name_is_taken_in_the_pod_names_it(
            "rm",
            &[("ENABLE_IPv6", "true"), ("ENABLE_IPv4", "false")],
        );
    }
}

/// CHECK finds an IPv6 pod's data path whole (it once looked for the pod's host route and rule
/// among the IPv4 ones, so it always failed, and a retried ADD rebuilt a complete data path).
#[test]
fn check_finds_an_ipv6_pods_data_path_whole() {
    if !privileged() {
        return;
    }
    let mut node = Node::with("rg", &[("ENABLE_IPv6", "true"), ("ENABLE_IPv4", "false")]);
    let p = node.pod(1);
    let r = node.add("v1", &p);
    let a = addr_of(&r);
    assert!(a.contains(':'), "an IPv6 pod: {r}");
    let netns = format!("/var/run/netns/{p}");
    let (code, v) = node.cni(&env_of("CHECK", "v1", &netns), &node.conf("1.1.0"));
    assert_eq!(code, 0, "{v}");
    // A retried ADD answers the complete data path as it is: the pod end is not made again.
    let index = sh(&["ip", "-n", &p, "-o", "link", "show", "dev", "eth0"]);
    assert_eq!(addr_of(&node.add("v1", &p)), a);
    assert_eq!(sh(&["ip", "-n", &p, "-o", "link", "show", "dev", "eth0"]).split(':').next(), index.split(':').next());
    assert_eq!(node.cni(&env_of("DEL", "v1", &netns), &node.conf("1.0.0")).0, 0);
    assert!(held(&node.socket).is_empty());
}

#[test]
fn gc_tears_down_what_the_runtime_no_longer_lists_and_nothing_else() {
    if !privileged() {
        return;
    }
    let mut node = Node::new("rb");
    let (p1, p2) = (node.pod(1), node.pod(2));
    let keep = node.add("keep", &p1);
    let gone = node.add("gone", &p2);
    let conf = format!(
        r#"{{"cniVersion":"1.1.0","name":"podip","type":"podip-cni","socket":"{}","cni.dev/valid-attachments":[{{"containerID":"keep","ifname":"eth0"}}]}}"#,
        node.socket.display()
    );
    let (code, v) = node.cni(&[("CNI_COMMAND", "GC"), ("CNI_PATH", "/usr/lib/cni")], &conf);
    assert_eq!(code, 0, "{v}");
    let h = held(&node.socket);
    assert_eq!(h.keys().collect::<Vec<_>>(), vec!["keep"], "{h:?}");
    let links = sh(&["ip", "-n", &node.name, "link", "show"]);
    assert!(!links.contains(&veth(&gone)) && links.contains(&veth(&keep)), "{links}");
    assert!(rules_of(&node, &addr_of(&gone)).is_empty());
    assert!(!rules_of(&node, &addr_of(&keep)).is_empty());
    let netns1 = format!("/var/run/netns/{p1}");
    assert_eq!(node.cni(&env_of("CHECK", "keep", &netns1), &node.conf("1.1.0")).0, 0);
}

/// The plugin under strace, `syscall` delayed as `inject` says (strace's `inject=` syntax).
fn straced_plugin(node: &Node, env: &[(&str, &str)], syscall: &str, inject: &str) -> std::process::Child {
    straced_with(node, &node.conf("1.0.0"), env, syscall, inject)
}

/// [`straced_plugin`] with the network configuration `conf`.
fn straced_with(node: &Node, conf: &str, env: &[(&str, &str)], syscall: &str, inject: &str) -> std::process::Child {
    straced_injecting(node, conf, env, &[(syscall, inject)])
}

/// The plugin under strace with the network configuration `conf`, each `(syscall, inject)`
/// tampered with as strace's `inject=` says (one per syscall).
fn straced_injecting(node: &Node, conf: &str, env: &[(&str, &str)], injects: &[(&str, &str)]) -> std::process::Child {
    let mut c = std::process::Command::new("nsenter");
    let traced: Vec<&str> = injects.iter().map(|(s, _)| *s).collect();
    c.arg(format!("--net=/var/run/netns/{}", node.name)).args([
        "strace",
        "-f",
        "-qq",
        "-o",
        "/dev/null",
        "-e",
        &format!("trace={}", traced.join(",")),
    ]);
    for (syscall, inject) in injects {
        c.arg("-e").arg(format!("inject={syscall}:{inject}"));
    }
    c.arg(common::plugin_bin()).env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), conf.as_bytes()).unwrap();
    child
}

/// The plugin under strace, each netlink request from the `from`-th on held back `delay_us`.
fn slowed_plugin(node: &Node, env: &[(&str, &str)], delay_us: u32, from: u32) -> std::process::Child {
    straced_plugin(node, env, "sendto", &format!("delay_exit={delay_us}:when={from}+"))
}

/// The plugin under strace, its `when`-th call of `syscall` held back `us` on entry.
fn held_plugin(node: &Node, env: &[(&str, &str)], syscall: &str, us: u32, when: u32) -> std::process::Child {
    straced_plugin(node, env, syscall, &format!("delay_enter={us}:when={when}"))
}

const WEB: (&str, &str) = ("CNI_ARGS", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web");

/// The CNI environment of a call for the pod `WEB`.
fn with_web<'a>(cmd: &'a str, cid: &'a str, netns: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut e = env_of(cmd, cid, netns);
    e.push(WEB);
    e
}

/// The pod `WEB`'s sandbox s1 is wired, then its veth goes (with s1's namespace when
/// `namespace_gone`, else alone); s2, the pod's next sandbox, is started and held 2 s right after
/// making the veth of the same name (its 3rd send: the pod side's, right after the create; the
/// 1st is to podipd, the 2nd the create). Returns s1's and
/// s2's namespaces, the veth's name and s2's process.
fn the_next_sandbox_mid_add(node: &mut Node, namespace_gone: bool) -> (String, String, String, std::process::Child) {
    let (p1, p2) = (node.pod(1), node.pod(2));
    let (n1, n2) = (format!("/var/run/netns/{p1}"), format!("/var/run/netns/{p2}"));
    wait_for(&node.socket, |st| st["total"].as_u64().unwrap_or(0) > 2, 30);
    let mut e1 = env_of("ADD", "s1", &n1);
    e1.push(WEB);
    let (code, r1) = node.cni(&e1, &node.conf("1.0.0"));
    assert_eq!(code, 0, "{r1}");
    let name = veth(&r1);
    let links = |node: &Node| sh(&["ip", "-n", &node.name, "-o", "link", "show"]);
    if namespace_gone {
        sh(&["ip", "netns", "del", &p1]);
    } else {
        sh(&["ip", "-n", &node.name, "link", "del", &name]);
    }
    let t0 = Instant::now();
    while links(node).contains(&name) {
        assert!(t0.elapsed() < Duration::from_secs(10), "s1's veth stayed");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut e2 = env_of("ADD", "s2", &n2);
    e2.push(WEB);
    let s2 = held_plugin(node, &e2, "sendto", 2_000_000, 3);
    let t0 = Instant::now();
    while !links(node).contains(&name) {
        assert!(t0.elapsed() < Duration::from_secs(10), "s2 never made its veth");
        std::thread::sleep(Duration::from_millis(5));
    }
    (n1, n2, name, s2)
}

/// s2's ADD succeeded and its data path is whole; its result.
fn the_next_sandbox_finishes_whole(node: &Node, n2: &str, s2: std::process::Child) -> serde_json::Value {
    let out = s2.wait_with_output().unwrap();
    let r2: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "s2's ADD failed: {r2}");
    let mut check = env_of("CHECK", "s2", n2);
    check.push(WEB);
    assert_eq!(node.cni(&check, &node.conf("1.1.0")).0, 0, "s2 intact");
    r2
}

/// A late DEL of a pod's sandbox whose namespace is gone, with `del_args` for `CNI_ARGS` (none,
/// or another identity than podipd recorded), comes while the pod's next sandbox has made its
/// veth (which bears the pod's name) and not yet given it an address. The DEL holds the lock
/// of the pod podipd recorded too, so it waits for that ADD and then leaves its veth alone;
/// before, it took the address-less veth for its own and removed it.
fn a_late_del_waits_for_the_pods_next_sandbox(tag: &str, del_args: Option<(&str, &str)>) {
    let mut node = Node::new(tag);
    // The runtime removed s1's namespace before its DEL came (its veth went with it).
    let (n1, n2, name, s2) = the_next_sandbox_mid_add(&mut node, true);
    // s1's late DEL comes now.
    let mut del = env_of("DEL", "s1", &n1);
    del.extend(del_args);
    let (code, v) = node.cni(&del, &node.conf("1.0.0"));
    assert_eq!(code, 0, "{v}");
    let r2 = the_next_sandbox_finishes_whole(&node, &n2, s2);
    assert_eq!(veth(&r2), name);
    let h = held(&node.socket);
    assert_eq!(h.keys().collect::<Vec<_>>(), vec!["s2"], "{h:?}");
}

#[test]
fn a_del_without_the_pods_identity_waits_for_the_pods_next_sandbox() {
    if privileged() {
        a_late_del_waits_for_the_pods_next_sandbox("rh", None);
    }
}

#[test]
fn a_del_naming_another_identity_waits_for_the_pods_next_sandbox() {
    if privileged() {
        a_late_del_waits_for_the_pods_next_sandbox(
            "ri",
            Some(("CNI_ARGS", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-stale")),
        );
    }
}

/// A runtime sends a container's DEL, without the pod's identity, while that container's first
/// ADD, with it, is on its way. The ADD waits for the DEL (both hold the container's lock), and
/// the DEL, whose teardown found nothing, releases nothing: the pod keeps its address. Before,
/// each held only its own lock (the container's, the pod's), and the DEL's release freed whatever
/// the container held by then: a wired pod's address, handed out again after the cooldown.
#[test]
fn a_del_during_its_containers_first_add_releases_nothing_the_add_got() {
    if !privileged() {
        return;
    }
    let mut node = Node::new("rk");
    let p1 = node.pod(1);
    let n1 = format!("/var/run/netns/{p1}");
    let bucket = |k: &str| protocol::lockfile::bucket(k);
    assert_ne!(bucket("s1"), bucket("default/web"), "the two locks must be distinct for this window");
    wait_for(&node.socket, |st| st["total"].as_u64().unwrap_or(0) > 2, 30);
    // The DEL: every connect after its first (the teardown's question to podipd) held 1.5 s.
    let del = straced_plugin(&node, &env_of("DEL", "s1", &n1), "connect", "delay_enter=1500000:when=2+");
    std::thread::sleep(Duration::from_millis(500));
    assert!(held(&node.socket).is_empty());
    let mut add = env_of("ADD", "s1", &n1);
    add.push(WEB);
    let (code, r) = node.cni(&add, &node.conf("1.0.0"));
    assert_eq!(code, 0, "{r}");
    let a = addr_of(&r);
    let out = del.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let h = held(&node.socket);
    assert_eq!(h.get("s1"), Some(&a), "the ADD answered {a}, which podipd must still hold: {h:?}");
    let mut check = env_of("CHECK", "s1", &n1);
    check.push(WEB);
    assert_eq!(node.cni(&check, &node.conf("1.1.0")).0, 0, "the pod intact");
}

/// Every route of the node, IPv4 and IPv6.
fn all_routes(node: &Node) -> String {
    sh(&["ip", "-n", &node.name, "route", "show"]) + &sh(&["ip", "-n", &node.name, "-6", "route", "show"])
}

/// podipd and the host agree on `cid`'s address: held and routed to the pod, or neither.
fn held_iff_wired(node: &Node, cid: &str, a: &str) {
    let h = held(&node.socket);
    let wired = all_routes(node).contains(&format!("{a} dev"));
    assert_eq!(h.get(cid) == Some(&a.to_string()), wired, "{a} wired: {wired}; podipd holds {h:?}");
}

/// A container's first ADD, without the pod's identity, is held right after podipd answered it
/// (before its first netlink request), and its DEL comes with the identity. The DEL waits for
/// the ADD (both hold the container's lock) and then takes the pod down whole. Before, the DEL
/// held only the pod's lock: it released the address, and the ADD wired it anyway.
#[test]
fn a_del_naming_the_pod_waits_for_its_containers_first_add_without_it() {
    if !privileged() {
        return;
    }
    let mut node = Node::with("rn", &[("IP_COOLDOWN_PERIOD", "0")]);
    let p1 = node.pod(1);
    let n1 = format!("/var/run/netns/{p1}");
    wait_for(&node.socket, |st| st["total"].as_u64().unwrap_or(0) > 2, 30);
    let add = held_plugin(&node, &env_of("ADD", "s1", &n1), "sendto", 2_000_000, 2);
    let t0 = Instant::now();
    let a = loop {
        if let Some(a) = held(&node.socket).get("s1") {
            break a.clone();
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "the ADD never reached podipd");
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut del = env_of("DEL", "s1", &n1);
    del.push(WEB);
    let (code, v) = node.cni(&del, &node.conf("1.0.0"));
    assert_eq!(code, 0, "{v}");
    let out = add.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    held_iff_wired(&node, "s1", &a);
    assert!(held(&node.socket).is_empty(), "the DEL came last: nothing is held");
}

/// A pod's ADD (with the pod's identity or without it), then its DEL (with it or without), held
/// after its teardown; meanwhile the runtime retries the container's ADD without the identity.
/// The ADD waits for the DEL (both hold the container's lock), so the address the DEL releases
/// is never one the ADD answered. Before, a DEL with the identity held only the pod's lock (and
/// one without it, moved to the pod's lock, once did too): the ADD took the old address back and
/// wired it, and the DEL then released it under a live pod.
fn a_retried_add_without_the_identity_waits_for_the_del(
    tag: &str,
    first_with_identity: bool,
    del_with_identity: bool,
    extra: &[(&str, &str)],
) {
    let mut node = Node::with(tag, extra);
    let p1 = node.pod(1);
    let n1 = format!("/var/run/netns/{p1}");
    wait_for(&node.socket, |st| st["total"].as_u64().unwrap_or(0) > 2, 30);
    let mut first = env_of("ADD", "s1", &n1);
    if first_with_identity {
        first.push(WEB);
    }
    let (code, r) = node.cni(&first, &node.conf("1.0.0"));
    assert_eq!(code, 0, "{r}");
    let a = addr_of(&r);
    let mut del = env_of("DEL", "s1", &n1);
    if del_with_identity {
        del.push(WEB);
    }
    // Every connect of the DEL after its first (the teardown's question) held 0.7 s: its
    // teardown's netlink sockets, then its release.
    let del = straced_plugin(&node, &del, "connect", "delay_enter=700000:when=2+");
    let t0 = Instant::now();
    while all_routes(&node).contains(&format!("{a} dev")) {
        assert!(t0.elapsed() < Duration::from_secs(10), "the DEL never tore down");
        std::thread::sleep(Duration::from_millis(10));
    }
    let (code, r2) = node.cni(&env_of("ADD", "s1", &n1), &node.conf("1.0.0"));
    let out = del.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(code, 0, "{r2}");
    let b = addr_of(&r2);
    assert!(all_routes(&node).contains(&format!("{b} dev")), "the retried ADD wired {b}");
    held_iff_wired(&node, "s1", &b);
}

#[test]
fn a_retried_add_without_the_identity_waits_for_a_del_with_it_after_an_add_without() {
    if privileged() {
        a_retried_add_without_the_identity_waits_for_the_del("ro", false, true, &[]);
    }
}

#[test]
fn a_retried_add_without_the_identity_waits_for_a_del_with_it_after_an_add_with() {
    if privileged() {
        a_retried_add_without_the_identity_waits_for_the_del("rp", true, true, &[]);
    }
}

#[test]
fn a_retried_add_without_the_identity_waits_for_a_del_with_it_ipv6() {
    if privileged() {
        a_retried_add_without_the_identity_waits_for_the_del(
            "rq",
            true,
            true,
            &[("ENABLE_IPv6", "true"), ("ENABLE_IPv4", "false")],
        );
    }
}

#[test]
fn a_retried_add_waits_for_a_del_of_its_container_that_moved_to_the_pods_lock() {
    if privileged() {
        a_retried_add_without_the_identity_waits_for_the_del("rj", true, false, &[]);
    }
}

#[test]
fn two_sandboxes_of_one_pod_added_at_once_never_share_or_take_a_veth() {
    if !privileged() {
        return;
    }
    let mut node = Node::new("rc");
    let (p1, p2) = (node.pod(1), node.pod(2));
    let (n1, n2) = (format!("/var/run/netns/{p1}"), format!("/var/run/netns/{p2}"));
    wait_for(&node.socket, |st| st["total"].as_u64().unwrap_or(0) > 2, 30);
    let args = "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web";
    let env1 = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "s1"),
        ("CNI_NETNS", n1.as_str()),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", args),
    ];
    let env2 = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "s2"),
        ("CNI_NETNS", n2.as_str()),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", args),
    ];
    // s1 builds its veth slowly (every netlink request after the create held back 0.3 s) ...
    let s1 = slowed_plugin(&node, &env1, 300_000, 3);
    std::thread::sleep(Duration::from_millis(500));
    // ... while s2, the same pod's next sandbox, comes: it waits for s1, then finds s1's veth.
    let (code2, v2) = node.cni(&env2, &node.conf("1.0.0"));
    let out1 = s1.wait_with_output().unwrap();
    let v1: serde_json::Value = serde_json::from_slice(&out1.stdout).unwrap();
    assert!(out1.status.success(), "{v1}");
    assert_eq!((code2, v2["code"].as_u64()), (1, Some(11)), "{v2}");
    let mut check = env1.to_vec();
    check[0] = ("CNI_COMMAND", "CHECK");
    assert_eq!(node.cni(&check, &node.conf("1.1.0")).0, 0, "s1 intact");
    assert_eq!(held(&node.socket).len(), 1, "s2's address was given back");
}

#[test]
fn a_del_without_the_pods_identity_still_removes_its_veth_before_releasing() {
    if !privileged() {
        return;
    }
    let mut node = Node::with("rd", &[("IP_COOLDOWN_PERIOD", "0")]);
    let p1 = node.pod(1);
    let n1 = format!("/var/run/netns/{p1}");
    let add = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "a1"),
        ("CNI_NETNS", n1.as_str()),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=api"),
    ];
    let t0 = Instant::now();
    let r = loop {
        let (code, v) = node.cni(&add, &node.conf("1.0.0"));
        if code == 0 {
            break v;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "{v}");
        std::thread::sleep(Duration::from_millis(200));
    };
    // The runtime's DEL without CNI_ARGS.
    assert_eq!(node.cni(&env_of("DEL", "a1", &n1), &node.conf("1.0.0")).0, 0);
    assert!(veth_released(&node.name, &veth(&r)), "the veth stayed");
    let pod_links = sh(&["ip", "-n", &p1, "-o", "link", "show"]);
    assert!(!pod_links.contains(" eth0"), "the pod kept its eth0: {pod_links}");
    assert!(rules_of(&node, &addr_of(&r)).is_empty());
    assert!(held(&node.socket).is_empty());
}

#[test]
fn del_finds_the_pods_veth_whatever_covers_or_renamed_it() {
    if !privileged() {
        return;
    }
    let mut node = Node::with("re", &[("PODIP_WIRING_GRACE", "600")]);
    let (p1, p2) = (node.pod(1), node.pod(2));
    let (n1, n2) = (format!("/var/run/netns/{p1}"), format!("/var/run/netns/{p2}"));
    let r1 = node.add("c1", &p1);
    let r2 = node.add("c2", &p2);
    // A blackhole route covers the pod addresses, and the first pod's namespace is gone.
    sh(&["ip", "-n", &node.name, "route", "add", "blackhole", "10.0.0.0/8"]);
    sh(&["ip", "netns", "del", &p1]);
    // The kernel takes the namespace's veth down a moment later; a DEL in between may fail and
    // is retried, as runtimes do.
    let mut tries = 0;
    let (code, v) = loop {
        let (code, v) = node.cni(&env_of("DEL", "c1", &n1), &node.conf("1.0.0"));
        tries += 1;
        if code == 0 || tries == 5 {
            break (code, v);
        }
        eprintln!("DEL retried after: {v}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(code, 0, "{v}");
    assert!(rules_of(&node, &addr_of(&r1)).is_empty());
    assert!(!held(&node.socket).contains_key("c1"));
    // The veth prefix changes across a restart: the live pod is still wired, and its DEL still
    // finds its veth (named with the old prefix) before its address is released.
    node.kill_daemon();
    let before = node.log().len();
    node.start_daemon_with(&[("AWS_VPC_K8S_CNI_VETHPREFIX", "abc")]);
    let notes = node.log()[before..].to_string();
    assert!(!notes.lines().any(|l| l.contains("c2") && l.contains("not wired")), "{notes}");
    assert_eq!(node.cni(&env_of("DEL", "c2", &n2), &node.conf("1.0.0")).0, 0);
    assert!(veth_released(&node.name, &veth(&r2)), "the old-prefix veth stayed");
    assert!(held(&node.socket).is_empty());
}

#[test]
fn a_recovered_pod_is_torn_down_only_by_its_own_sandbox_and_gc_needs_its_list() {
    if !privileged() {
        return;
    }
    let mut node = Node::new("rf");
    let p1 = node.pod(1);
    let n1 = format!("/var/run/netns/{p1}");
    let args = "K8S_POD_NAMESPACE=default;K8S_POD_NAME=p2";
    let env = |cmd: &'static str, cid: &'static str| {
        vec![
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", cid),
            ("CNI_NETNS", n1.as_str()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", args),
        ]
    };
    wait_for(&node.socket, |st| st["total"].as_u64().unwrap_or(0) > 0, 30);
    let (code, live) = node.cni(&env("ADD", "live"), &node.conf("1.0.0"));
    assert_eq!(code, 0, "{live}");
    // The checkpoint is lost; the live pod is recovered from the host.
    node.kill_daemon();
    std::fs::remove_file(node.dir.join("state/ipam.json")).unwrap();
    node.start_daemon();
    assert!(held(&node.socket).keys().any(|k| k.starts_with("host:")));
    // A DEL of an old sandbox of the same pod (another container id, no namespace) leaves it.
    let no_ns = [("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "old"), ("CNI_IFNAME", "eth0"), ("CNI_ARGS", args)];
    assert_eq!(node.cni(&no_ns, &node.conf("1.0.0")).0, 0);
    assert!(sh(&["ip", "-n", &node.name, "link", "show"]).contains(&veth(&live)), "the live pod lost its veth");
    assert_eq!(held(&node.socket).len(), 1);
    // GC without its list refuses, and releases nothing.
    let (code, v) = node.cni(&[("CNI_COMMAND", "GC"), ("CNI_PATH", "/usr/lib/cni")], &node.conf("1.1.0"));
    assert_eq!((code, v["code"].as_u64()), (1, Some(7)), "{v}");
    assert_eq!(held(&node.socket).len(), 1);
    // Its own sandbox's DEL (its namespace holds the address) tears it down.
    assert_eq!(node.cni(&env("DEL", "live"), &node.conf("1.0.0")).0, 0);
    assert!(veth_released(&node.name, &veth(&live)));
    assert!(held(&node.socket).is_empty());
}

/// A container's ADD is retried with another pod identity than podipd recorded at its first ADD
/// (or none), while the pod's next sandbox is between making the veth (named after the recorded
/// pod) and giving it an address. The retry takes the recorded pod's lock too, so it waits for
/// that sandbox and then finds the veth carrying another address: it answers try-again, and the
/// sandbox stays whole. Before, the retry took the half-made veth for its own unfinished one,
/// removed it and built its own, and the sandbox's failure then removed that one.
fn a_retried_add_under_another_identity_waits_for_the_pods_next_sandbox(tag: &str, retry_args: Option<(&str, &str)>) {
    let mut node = Node::new(tag);
    let (n1, n2, _, s2) = the_next_sandbox_mid_add(&mut node, false);
    let mut retry = env_of("ADD", "s1", &n1);
    retry.extend(retry_args);
    let (code, v) = node.cni(&retry, &node.conf("1.0.0"));
    the_next_sandbox_finishes_whole(&node, &n2, s2);
    assert_eq!((code, v["code"].as_u64()), (1, Some(11)), "the retry waits for the veth's DEL: {v}");
}

#[test]
fn a_retried_add_without_the_identity_waits_for_the_pods_next_sandbox() {
    if privileged() {
        a_retried_add_under_another_identity_waits_for_the_pods_next_sandbox("rs", None);
    }
}

#[test]
fn a_retried_add_naming_another_identity_waits_for_the_pods_next_sandbox() {
    if privileged() {
        a_retried_add_under_another_identity_waits_for_the_pods_next_sandbox(
            "rt",
            Some(("CNI_ARGS", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-stale")),
        );
    }
}

/// A retried ADD without the pod's identity finds the recorded pod's lock taken, so it lets its
/// own go and takes both in their fixed order; its container's DEL runs in that gap (forced:
/// the ADD is held 2 s at its next lock). The ADD then finds the attachment changed (its address
/// released, a fresh one offered): it gives the fresh one back and answers try-again. Before, it
/// wired the fresh address for a container the runtime had already deleted.
#[test]
fn a_retried_add_whose_container_was_deleted_while_it_waited_for_the_pods_lock_wires_nothing() {
    if !privileged() {
        return;
    }
    let mut node = Node::with("ru", &[("IP_COOLDOWN_PERIOD", "0")]);
    let p1 = node.pod(1);
    let n1 = format!("/var/run/netns/{p1}");
    wait_for(&node.socket, |st| st["total"].as_u64().unwrap_or(0) > 2, 30);
    let mut e = env_of("ADD", "s1", &n1);
    e.push(WEB);
    let (code, r) = node.cni(&e, &node.conf("1.0.0"));
    assert_eq!(code, 0, "{r}");
    // A retry without the identity while the pod's lock is free takes it at once: the same pod.
    let (code, again) = node.cni(&env_of("ADD", "s1", &n1), &node.conf("1.0.0"));
    assert_eq!((code, addr_of(&again)), (0, addr_of(&r)), "{again}");
    // The pod's lock (its file: the first two hex digits of the key's SHA-1) held for 1 s.
    let bucket = |k: &str| protocol::lockfile::bucket(k);
    let pod_lock = node.socket.parent().unwrap().join(format!("locks/{}.lock", bucket("default/web")));
    let mut holder = std::process::Command::new("flock").arg("-x").arg(&pod_lock).args(["sleep", "1"]).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    // The retry: flock 1 takes s1's lock, 2 tries the pod's (taken), 3 lets s1's go, 4 waits.
    let retry = straced_plugin(&node, &env_of("ADD", "s1", &n1), "flock", "delay_enter=2000000:when=4");
    holder.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (code, v) = node.cni(&env_of("DEL", "s1", &n1), &node.conf("1.0.0"));
    assert_eq!(code, 0, "{v}");
    let out = retry.wait_with_output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["code"].as_u64(), Some(11), "the retry must not wire a deleted container: {v}");
    assert!(held(&node.socket).is_empty(), "{:?}", held(&node.socket));
    assert!(!all_routes(&node).contains(" dev eni"), "nothing wired: {}", all_routes(&node));
}

/// An earlier try of the pod's ADD made the veth pair and died before anything else (no
/// address, no route): the next ADD of the pod, which creates its pair without looking first,
/// finds the name taken, removes the unfinished pair (it carries no address) and wires the pod.
#[test]
fn an_add_removes_the_unfinished_veth_an_earlier_try_left_and_wires_the_pod() {
    if !privileged() {
        return;
    }
    let mut node = Node::new("rr");
    let (p1, p2) = (node.pod(1), node.pod(2));
    let (n1, n2) = (format!("/var/run/netns/{p1}"), format!("/var/run/netns/{p2}"));
    wait_for(&node.socket, |st| st["total"].as_u64().unwrap_or(0) > 1, 30);
    let (n1, n2): (&'static str, &'static str) = (Box::leak(n1.into_boxed_str()), Box::leak(n2.into_boxed_str()));
    // The pod's veth name, from a first sandbox that comes and goes with its namespace.
    let (code, first) = node.cni(&with_web("ADD", "s1", n1), &node.conf("1.0.0"));
    assert_eq!(code, 0, "{first}");
    assert_eq!(node.cni(&with_web("DEL", "s1", n1), &node.conf("1.0.0")).0, 0);
    sh(&["ip", "netns", "del", &p1]);
    let name = veth(&first);
    let t0 = Instant::now();
    while std::process::Command::new("ip")
        .args(["-n", &node.name, "link", "show", &name])
        .output()
        .unwrap()
        .status
        .success()
    {
        assert!(t0.elapsed() < Duration::from_secs(10), "{name} outlived its namespace");
        std::thread::sleep(Duration::from_millis(50));
    }
    // What a try killed right after "create veth" leaves: the pair, up, with nothing on it.
    sh(&["ip", "-n", &node.name, "link", "add", &name, "up", "type", "veth", "peer", "name", "eth0", "netns", &p2]);
    let (code, v) = node.cni(&with_web("ADD", "s2", n2), &node.conf("1.0.0"));
    assert_eq!(code, 0, "{v}");
    assert_eq!(veth(&v), name);
    assert_eq!(node.cni(&with_web("CHECK", "s2", n2), &node.conf("1.1.0")).0, 0, "wired whole");
    let inside = sh(&["ip", "-n", &p2, "-o", "addr", "show", "dev", "eth0"]);
    assert!(inside.contains(&format!("{}/32", addr_of(&v))), "{inside}");
}

/// The pod's sandbox s1 is wired and alive; the pod's next sandbox s2 fails when s2's namespace
/// goes away while s2 waits for podipd (the runtime gave up on it): with `want` and `needle` (an
/// IPv6 ADD looks at the veth of its name first, and is refused while it carries s1's address;
/// an IPv4 ADD finds its namespace gone). Before, an IPv6 ADD whose batch failed that way took
/// the veth of its name for its own and deleted it: s1 lost its network.
fn a_failed_add_leaves_the_pods_live_sandbox_alone(tag: &str, extra: &[(&str, &str)], want: u64, needle: &str) {
    let mut node = Node::with(tag, extra);
    let (p1, p2) = (node.pod(1), node.pod(2));
    let (n1, n2) = (format!("/var/run/netns/{p1}"), format!("/var/run/netns/{p2}"));
    wait_for(&node.socket, |st| st["total"].as_u64().unwrap_or(0) > 1, 30);
    let (code, first) = node.cni(&with_web("ADD", "s1", &n1), &node.conf("1.0.0"));
    assert_eq!(code, 0, "{first}");
    // s2 held 1 s as it connects to podipd; its namespace goes meanwhile.
    let add = held_plugin(&node, &with_web("ADD", "s2", &n2), "connect", 1_000_000, 1);
    std::thread::sleep(Duration::from_millis(300));
    sh(&["ip", "netns", "del", &p2]);
    let out = add.wait_with_output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["code"].as_u64(), Some(want), "{v}");
    assert!(v["msg"].as_str().unwrap().contains(needle), "{v}");
    let (code, c) = node.cni(&with_web("CHECK", "s1", &n1), &node.conf("1.1.0"));
    assert_eq!(code, 0, "s1 was broken by s2's failed ADD: {c}");
    assert_eq!(held(&node.socket).len(), 1, "s2's address was given back");
}

#[test]
fn a_failed_add_leaves_the_pods_live_sandbox_alone_ipv4() {
    if privileged() {
        a_failed_add_leaves_the_pods_live_sandbox_alone("rv", &[], 100, "pod netns");
    }
}

#[test]
fn a_failed_add_leaves_the_pods_live_sandbox_alone_ipv6() {
    if privileged() {
        let v6 = [("ENABLE_IPv6", "true"), ("ENABLE_IPv4", "false")];
        a_failed_add_leaves_the_pods_live_sandbox_alone("rw", &v6, 11, "another attachment's");
    }
}

/// An IPv6 pod whose namespace has an IPv6 default route already (a chained plugin, a leftover):
/// its ADD fails at the batch's default route. The error names that line, not `CNI_IFNAME`
/// (the `eth0` there is the ADD's own), and the ADD removes the pair it made before giving the
/// address back: nothing of it is left on the host or in the pod, without waiting for a DEL.
#[test]
fn a_failed_ipv6_add_names_the_line_that_failed_and_removes_what_it_made() {
    if !privileged() {
        return;
    }
    let mut node = Node::with("rx", &[("ENABLE_IPv6", "true"), ("ENABLE_IPv4", "false")]);
    let p1 = node.pod(1);
    let n1 = format!("/var/run/netns/{p1}");
    wait_for(&node.socket, |st| st["total"].as_u64().unwrap_or(0) > 1, 30);
    sh(&["ip", "-n", &p1, "link", "add", "d0", "up", "type", "veth", "peer", "name", "d1"]);
    sh(&["ip", "-n", &p1, "link", "set", "d1", "up"]);
    sh(&["ip", "-n", &p1, "-6", "addr", "add", "2001:db8::5/64", "dev", "d0", "nodad"]);
    sh(&["ip", "-n", &p1, "-6", "route", "add", "default", "via", "2001:db8::1", "dev", "d0"]);
    let before = (host_state(&node.name), sh(&["ip", "-n", &p1, "-o", "link", "show"]));
    let (code, v) = node.cni(&env_of("ADD", "c1", &n1), &node.conf("1.0.0"));
    assert_eq!((code, v["code"].as_u64()), (1, Some(100)), "{v}");
    let msg = v["msg"].as_str().unwrap();
    assert!(msg.contains("route add default via fe80::1") && !msg.contains("CNI_IFNAME"), "{msg}");
    assert!(held(&node.socket).is_empty(), "the address was given back");
    assert_eq!((host_state(&node.name), sh(&["ip", "-n", &p1, "-o", "link", "show"])), before);
}

/// A link on the host bears the name of an IPv6 pod's IPv4 egress veth, and is not the pod's:
/// the pod's ADD fails at that pair, removes only the pair it made, and leaves that link be.
/// Before, the ADD deleted it and made its own.
#[test]
fn an_ipv6_add_never_removes_a_link_it_did_not_make() {
    if !privileged() {
        return;
    }
    let mut node = Node::with("ry", &[("ENABLE_IPv6", "true"), ("ENABLE_IPv4", "false")]);
    let (p1, p2) = (node.pod(1), node.pod(2));
    let (n1, n2) = (format!("/var/run/netns/{p1}"), format!("/var/run/netns/{p2}"));
    wait_for(&node.socket, |st| st["total"].as_u64().unwrap_or(0) > 1, 30);
    let (code, first) = node.cni(&with_web("ADD", "s1", &n1), &node.conf("1.0.0"));
    assert_eq!(code, 0, "{first}");
    let name = veth(&first);
    let egress = datapath::egress_veth_name(&name);
    assert_eq!(node.cni(&with_web("DEL", "s1", &n1), &node.conf("1.0.0")).0, 0);
    sh(&["ip", "netns", "del", &p1]);
    let t0 = Instant::now();
    while !veth_released(&node.name, &name) || !veth_released(&node.name, &egress) {
        assert!(t0.elapsed() < Duration::from_secs(10), "s1's pairs outlived its namespace");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::process::Command::new("ip").args(["-n", &node.name, "link", "del", &egress]).output();
    sh(&["ip", "-n", &node.name, "link", "add", &egress, "type", "veth", "peer", "name", "other0"]);
    let before = (host_state(&node.name), sh(&["ip", "-n", &p2, "-o", "link", "show"]));
    let (code, v) = node.cni(&with_web("ADD", "s2", &n2), &node.conf("1.0.0"));
    assert_eq!((code, v["code"].as_u64()), (1, Some(100)), "{v}");
    assert!(v["msg"].as_str().unwrap().contains("link add name v4if0"), "{v}");
    let links = sh(&["ip", "-n", &node.name, "-o", "link", "show"]);
    assert!(links.contains(&format!("{egress}@other0")), "the ADD removed {egress}, which it did not make: {links}");
    assert_eq!((host_state(&node.name), sh(&["ip", "-n", &p2, "-o", "link", "show"])), before);
}

/// An IPv6 pod's batch fails at a line after the pair (its gateway neighbour, EEXIST injected
/// into `ip`'s 7th netlink send), and iproute2 exits without naming the line, as it does for a
/// failed `neigh add`. The ADD cannot tell what it made, so it keeps the address held: no other
/// pod gets it while this pod's interface carries it, and the sandbox's DEL removes the rest and
/// releases it. Before, the ADD gave the address back and left the pair, and the next pod got
/// the same address.
#[test]
fn an_ipv6_add_whose_batch_fails_without_naming_the_line_keeps_its_address_until_the_del() {
    if !privileged() {
        return;
    }
    let mut node = Node::with("q1", &[("ENABLE_IPv6", "true"), ("ENABLE_IPv4", "false"), ("IP_COOLDOWN_PERIOD", "0")]);
    let (p1, p2) = (node.pod(1), node.pod(2));
    let n1 = format!("/var/run/netns/{p1}");
    wait_for(&node.socket, |st| st["total"].as_u64().unwrap_or(0) > 1, 30);
    let before = host_state(&node.name);
    let add = straced_plugin(&node, &env_of("ADD", "c1", &n1), "sendmsg", "error=EEXIST:when=7");
    let out = add.wait_with_output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["code"].as_u64(), Some(100), "{v}");
    assert!(v["msg"].as_str().unwrap().contains("stays held until this sandbox's DEL"), "{v}");
    let a = held(&node.socket).get("c1").cloned().expect("the address stays held");
    let r2 = node.add("c2", &p2);
    assert_ne!(addr_of(&r2), a, "another pod got the failed ADD's address");
    assert_eq!(node.cni(&env_of("DEL", "c1", &n1), &node.conf("1.0.0")).0, 0);
    assert!(!held(&node.socket).contains_key("c1"));
    let inside = sh(&["ip", "-n", &p1, "-o", "addr", "show"]);
    assert!(!inside.contains(&a), "the DEL left the address in the pod: {inside}");
    let n2 = format!("/var/run/netns/{p2}");
    assert_eq!(node.cni(&env_of("DEL", "c2", &n2), &node.conf("1.0.0")).0, 0);
    sh(&["ip", "netns", "del", &p1]);
    sh(&["ip", "netns", "del", &p2]);
    host_back_to(&node, &before);
}

/// The pod's sandbox s1 is live; its next sandbox s2 finds the veth of the pod's name, and its
/// read of the host (to see whose the veth is) fails (ENOBUFS injected at its `k`-th netlink
/// send). s2 answers try-again and s1 keeps its veth. Before, a failed read counted as "the veth
/// carries no address", and s2 removed s1's veth.
fn a_failed_read_of_the_host_never_removes_a_veth(tag: &str, extra: &[(&str, &str)], k: u32) {
    let mut node = Node::with(tag, extra);
    let (p1, p2) = (node.pod(1), node.pod(2));
    let (n1, n2) = (format!("/var/run/netns/{p1}"), format!("/var/run/netns/{p2}"));
    wait_for(&node.socket, |st| st["total"].as_u64().unwrap_or(0) > 1, 30);
    let (code, first) = node.cni(&with_web("ADD", "s1", &n1), &node.conf("1.0.0"));
    assert_eq!(code, 0, "{first}");
    let add = straced_plugin(&node, &with_web("ADD", "s2", &n2), "sendto", &format!("error=ENOBUFS:when={k}"));
    let out = add.wait_with_output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["code"].as_u64(), Some(11), "{v}");
    let (code, c) = node.cni(&with_web("CHECK", "s1", &n1), &node.conf("1.1.0"));
    assert_eq!(code, 0, "s1 was broken by s2's failed ADD: {c}");
    assert_eq!(held(&node.socket).len(), 1, "s2's address was given back");
}

#[test]
fn a_failed_read_of_the_host_never_removes_a_veth_ipv4() {
    if privileged() {
        // 1 podipd, 2 the create (the name is taken), 3 the lookup of the name, 4 the host's links.
        a_failed_read_of_the_host_never_removes_a_veth("q2", &[], 4);
    }
}

#[test]
fn a_failed_read_of_the_host_never_removes_a_veth_ipv6() {
    if privileged() {
        // 1 podipd, 2 the lookup of the name, 3 the host's links, 4 its routes.
        a_failed_read_of_the_host_never_removes_a_veth("q3", &[("ENABLE_IPv6", "true"), ("ENABLE_IPv4", "false")], 4);
    }
}

/// A link of the pod's host veth name that is not a veth (a bridge with an address of its own)
/// is never removed: the ADD says so and gives its address back, and the DEL that follows leaves
/// it. Before, the ADD replaced it, and later the DEL removed it.
fn a_link_of_the_veths_name_that_is_not_a_veth_is_left(tag: &str, extra: &[(&str, &str)]) {
    let mut node = Node::with(tag, extra);
    let p1 = node.pod(1);
    let n1 = format!("/var/run/netns/{p1}");
    wait_for(&node.socket, |st| st["total"].as_u64().unwrap_or(0) > 1, 30);
    let name = datapath::host_veth_name("eni", "default.web");
    sh(&["ip", "-n", &node.name, "link", "add", &name, "up", "type", "bridge"]);
    sh(&["ip", "-n", &node.name, "addr", "add", "192.168.77.1/24", "dev", &name]);
    let mut e = env_of("ADD", "c1", &n1);
    e.push(WEB);
    let (code, v) = node.cni(&e, &node.conf("1.0.0"));
    assert_eq!((code, v["code"].as_u64()), (1, Some(100)), "{v}");
    assert!(v["msg"].as_str().unwrap().contains("is not a veth"), "{v}");
    let after = sh(&["ip", "-n", &node.name, "-d", "-o", "link", "show", "dev", &name]);
    assert!(after.contains("bridge"), "the ADD removed the bridge {name}: {after}");
    assert!(held(&node.socket).is_empty(), "the address was given back");
    // The runtime's DEL of the failed sandbox leaves it too.
    assert_eq!(node.cni(&with_web("DEL", "c1", &n1), &node.conf("1.0.0")).0, 0);
    let after = sh(&["ip", "-n", &node.name, "-d", "-o", "link", "show", "dev", &name]);
    assert!(after.contains("bridge"), "the DEL removed the bridge {name}: {after}");
}

#[test]
fn a_link_of_the_veths_name_that_is_not_a_veth_is_left_ipv4() {
    if privileged() {
        a_link_of_the_veths_name_that_is_not_a_veth_is_left("q4", &[]);
    }
}

#[test]
fn a_link_of_the_veths_name_that_is_not_a_veth_is_left_ipv6() {
    if privileged() {
        a_link_of_the_veths_name_that_is_not_a_veth_is_left("q5", &[("ENABLE_IPv6", "true"), ("ENABLE_IPv4", "false")]);
    }
}

/// podipd's sweep has found the pod's stale veth (no address, nobody's) a stray twice and is
/// removing strays (200 before it, about 20 ms each); meanwhile the pod's next sandbox removes
/// the stale veth and makes its own under the same name. The sweep removes the link it found,
/// by its index, and the new veth stays. Before, the sweep removed the name, and with it the
/// new pod's veth.
#[test]
fn the_sweep_never_removes_a_veth_made_again_under_a_strays_name() {
    if !privileged() {
        return;
    }
    let mut node = Node::with("q6", &[("PODIP_WIRING_GRACE", "3")]);
    let (p1, p9) = (node.pod(1), node.pod(9));
    let n1 = format!("/var/run/netns/{p1}");
    wait_for(&node.socket, |st| st["total"].as_u64().unwrap_or(0) > 1, 30);
    // A pod whose veth sorts after every stray, so the sweep comes to it last.
    let pod = (0..)
        .map(|i| format!("w{i}"))
        .find(|n| datapath::host_veth_name("eni", &format!("default.{n}")).starts_with("enif"))
        .unwrap();
    let name = datapath::host_veth_name("eni", &format!("default.{pod}"));
    let mut batch: String =
        (0..200).map(|i| format!("link add eni0{i:010x} type veth peer name s{i} netns {p9}\n")).collect();
    batch.push_str(&format!("link add {name} type veth peer name sx netns {p9}\n"));
    let file = node.dir.join("strays.batch");
    std::fs::write(&file, batch).unwrap();
    sh(&["ip", "-n", &node.name, "-batch", file.to_str().unwrap()]);
    let count = || sh(&["ip", "-n", &node.name, "-o", "link", "show"]).lines().count();
    let full = count();
    let t0 = Instant::now();
    while count() >= full {
        assert!(t0.elapsed() < Duration::from_secs(20), "the sweep never removed the strays");
        std::thread::sleep(Duration::from_millis(10));
    }
    let args = format!("K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod}");
    let mut e = env_of("ADD", "s2", &n1);
    e.push(("CNI_ARGS", &args));
    let (code, v) = node.cni(&e, &node.conf("1.0.0"));
    assert_eq!(code, 0, "{v}");
    assert!(count() > 100, "the sweep was done before the ADD: the window was missed");
    let t0 = Instant::now();
    while sh(&["ip", "-n", &node.name, "-o", "link", "show"]).contains("eni0") {
        assert!(t0.elapsed() < Duration::from_secs(30), "the strays outlived the sweep");
        std::thread::sleep(Duration::from_millis(100));
    }
    e[0] = ("CNI_COMMAND", "CHECK");
    let (code, c) = node.cni(&e, &node.conf("1.1.0"));
    assert_eq!(code, 0, "the sweep removed the new sandbox's veth {name}: {c}");
}

/// An IPv4 ADD fails after its pair was made (the host route), and so does its undo (ENOBUFS
/// at the plugin's 4th to 8th netlink sends: the route, the removal of the pair, the rules).
/// The pod's interface still carries the address, so the address stays held: the next pod gets
/// another one, and the sandbox's DEL removes the pair and releases it. Before, the ADD gave the
/// address back and another pod got it.
#[test]
fn an_ipv4_add_whose_undo_fails_keeps_its_address_until_the_del() {
    if !privileged() {
        return;
    }
    let mut node = Node::with("q7", &[("IP_COOLDOWN_PERIOD", "0")]);
    let (p1, p2) = (node.pod(1), node.pod(2));
    let (n1, n2) = (format!("/var/run/netns/{p1}"), format!("/var/run/netns/{p2}"));
    wait_for(&node.socket, |st| st["total"].as_u64().unwrap_or(0) > 2, 30);
    let before = host_state(&node.name);
    let add = straced_plugin(&node, &env_of("ADD", "c1", &n1), "sendto", "error=ENOBUFS:when=4..8");
    let out = add.wait_with_output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["code"].as_u64(), Some(100), "{v}");
    let msg = v["msg"].as_str().unwrap();
    assert!(msg.contains("host route to the pod") && msg.contains("stays held until this sandbox's DEL"), "{v}");
    let a = held(&node.socket).get("c1").cloned().expect("the address stays held");
    assert!(sh(&["ip", "-n", &p1, "-o", "addr", "show"]).contains(&format!("{a}/32")), "the window was missed");
    let r2 = node.add("c2", &p2);
    assert_ne!(addr_of(&r2), a, "another pod got the address the first pod carries");
    assert_eq!(node.cni(&env_of("DEL", "c1", &n1), &node.conf("1.0.0")).0, 0);
    assert!(!held(&node.socket).contains_key("c1"));
    assert_eq!(node.cni(&env_of("DEL", "c2", &n2), &node.conf("1.0.0")).0, 0);
    sh(&["ip", "netns", "del", &p1]);
    sh(&["ip", "netns", "del", &p2]);
    host_back_to(&node, &before);
}

/// A container run without the pod's identity whose id reads as `namespace.name` of a pod
/// (`default.web`), whose veth name is therefore that pod's, is added while that pod's sandbox
/// is between making its veth and wiring it. It waits for the pod's lock, finds the veth
/// carrying the pod's address and answers try-again; the pod is wired whole. Before, the two
/// took no common lock: the container's ADD removed the pod's unfinished veth and succeeded, and
/// the pod's undo then removed the container's.
#[test]
fn a_container_whose_id_reads_as_a_pods_name_waits_for_that_pods_veth() {
    if !privileged() {
        return;
    }
    let mut node = Node::new("q8");
    let (p1, p2) = (node.pod(1), node.pod(2));
    let (n1, n2) = (format!("/var/run/netns/{p1}"), format!("/var/run/netns/{p2}"));
    wait_for(&node.socket, |st| st["total"].as_u64().unwrap_or(0) > 2, 30);
    // s1 waits 2 s after its create (its 3rd netlink send: the pod's side).
    let mut s1 = straced_plugin(&node, &with_web("ADD", "s1", &n1), "sendto", "delay_enter=2000000:when=3");
    let name = datapath::host_veth_name("eni", "default.web");
    let t0 = Instant::now();
    while !sh(&["ip", "-n", &node.name, "-o", "link", "show"]).contains(&name) {
        assert!(t0.elapsed() < Duration::from_secs(10), "s1 never made its veth");
        std::thread::sleep(Duration::from_millis(5));
    }
    let (code, other) = node.cni(&env_of("ADD", "default.web", &n2), &node.conf("1.0.0"));
    assert!(s1.try_wait().unwrap().is_some(), "the container's ADD did not wait for the pod's");
    assert_eq!((code, other["code"].as_u64()), (1, Some(11)), "{other}");
    assert!(other["msg"].as_str().unwrap().contains("another attachment's"), "{other}");
    let out = s1.wait_with_output().unwrap();
    let first: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "{first}");
    assert_eq!(node.cni(&with_web("CHECK", "s1", &n1), &node.conf("1.1.0")).0, 0, "the pod is wired whole");
    assert_eq!(held(&node.socket).len(), 1, "the container's address was given back");
}

/// An IPv6 pod's interface named as iproute2 spells a keyword or its abbreviation (`up`, `n`,
/// `a`) is made under that name, checked and deleted. Before, iproute2 read the name as the
/// keyword: the pod's end was named by the kernel, and the ADD failed naming no field.
#[test]
fn an_ipv6_pods_interface_may_bear_a_name_iproute2_reads_as_a_keyword() {
    if !privileged() {
        return;
    }
    let mut node = Node::with("q9", &[("ENABLE_IPv6", "true"), ("ENABLE_IPv4", "false")]);
    let p1 = node.pod(1);
    let n1 = format!("/var/run/netns/{p1}");
    wait_for(&node.socket, |st| st["total"].as_u64().unwrap_or(0) > 1, 30);
    for (cid, ifname) in [("k1", "up"), ("k2", "n"), ("k3", "a")] {
        let mut e = env_of("ADD", cid, &n1);
        e[3] = ("CNI_IFNAME", ifname);
        let (code, v) = node.cni(&e, &node.conf("1.0.0"));
        assert_eq!(code, 0, "{ifname}: {v}");
        assert_eq!(v["interfaces"][1]["name"], ifname, "{v}");
        let inside = sh(&["ip", "-n", &p1, "-o", "addr", "show", "dev", ifname]);
        assert!(inside.contains(&addr_of(&v)), "{ifname}: {inside}");
        e[0] = ("CNI_COMMAND", "CHECK");
        assert_eq!(node.cni(&e, &node.conf("1.1.0")).0, 0, "{ifname}");
        e[0] = ("CNI_COMMAND", "DEL");
        assert_eq!(node.cni(&e, &node.conf("1.1.0")).0, 0, "{ifname}");
    }
    assert!(held(&node.socket).is_empty());
}

/// podipd's sweep has found rules of addresses no attachment holds strays twice and is removing
/// them (300 before those of the pool's addresses); meanwhile an ADD gets one of those addresses
/// and sets its rules. The
/// sweep looks again under the pool's lock before it removes an address's rules, and the pod's
/// stay. Before, the sweep removed them under the new pod.
#[test]
fn the_sweep_never_removes_the_rules_of_an_address_an_add_got_since_its_scan() {
    if !privileged() {
        return;
    }
    let mut node = Node::with("qa", &[("PODIP_WIRING_GRACE", "3"), ("IP_COOLDOWN_PERIOD", "0")]);
    let p1 = node.pod(1);
    wait_for(&node.socket, |st| st["total"].as_u64().unwrap_or(0) > 1, 30);
    // Rules of every address of the node's subnet (the next ADD gets one of them), nobody's, and
    // 300 stray rules that sort before them.
    let mut batch: String =
        (0..300).map(|i| format!("rule add to 9.0.{}.{} lookup main priority 512\n", i / 250, i % 250)).collect();
    batch.extend((0..256).map(|i| format!("rule add to 10.0.0.{i} lookup main priority 512\n")));
    let file = node.dir.join("rules.batch");
    std::fs::write(&file, batch).unwrap();
    sh(&["ip", "-n", &node.name, "-batch", file.to_str().unwrap()]);
    let strays = || sh(&["ip", "-n", &node.name, "rule", "show"]).matches("to 9.0.").count();
    let t0 = Instant::now();
    while strays() == 300 {
        assert!(t0.elapsed() < Duration::from_secs(20), "the sweep never removed the strays");
        std::thread::sleep(Duration::from_millis(5));
    }
    let a = addr_of(&node.add("c2", &p1));
    assert!(a.starts_with("10.0.0."), "{a} is outside the node's subnet");
    assert!(!rules_of(&node, &a).is_empty(), "the ADD set no rule");
    assert!(strays() > 0, "the sweep was done before the ADD: the window was missed");
    let t0 = Instant::now();
    while strays() > 0 {
        assert!(t0.elapsed() < Duration::from_secs(30), "the strays outlived the sweep");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(1));
    assert!(!rules_of(&node, &a).is_empty(), "the sweep removed the rules of {a}, c2's");
}

/// An IPv4 ADD's create fails for a passing reason and so does its lookup of the name (ENOBUFS
/// at its 2nd and 3rd netlink sends): no link of the name is there, so the ADD looks at the host
/// once more and wires the pod. Before, it said a link of the name "exists and is not a veth".
#[test]
fn a_passing_failure_of_the_create_never_reads_as_a_link_that_is_not_a_veth() {
    if !privileged() {
        return;
    }
    let mut node = Node::new("qb");
    let p1 = node.pod(1);
    let n1 = format!("/var/run/netns/{p1}");
    wait_for(&node.socket, |st| st["total"].as_u64().unwrap_or(0) > 1, 30);
    let add = straced_plugin(&node, &with_web("ADD", "c1", &n1), "sendto", "error=ENOBUFS:when=2..3");
    let out = add.wait_with_output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "{v}");
    assert_eq!(node.cni(&with_web("CHECK", "c1", &n1), &node.conf("1.1.0")).0, 0);
}

/// CHECK reads the host's rules exactly: with a pod's to-rule gone, another pod's rule whose
/// address starts with the same digits (10.0.0.2 and 10.0.0.23) does not pass for it, and the
/// retried ADD sets the rule again. Before, CHECK matched the text and passed.
#[test]
fn check_reads_the_pods_rules_exactly() {
    if !privileged() {
        return;
    }
    let mut node = Node::new("qc");
    let p1 = node.pod(1);
    let n1 = format!("/var/run/netns/{p1}");
    wait_for(&node.socket, |st| st["total"].as_u64().unwrap_or(0) > 1, 60);
    // Interfaces of one pod until two addresses read alike.
    let mut got: Vec<(String, String)> = Vec::new();
    let env = |cmd: &'static str, i: usize| -> Vec<(&'static str, String)> {
        vec![
            ("CNI_COMMAND", cmd.to_string()),
            ("CNI_CONTAINERID", format!("c{i}")),
            ("CNI_NETNS", n1.clone()),
            ("CNI_IFNAME", format!("e{i}")),
        ]
    };
    let call = |node: &Node, e: &[(&'static str, String)], v: &str| {
        let e: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
        node.cni(&e, &node.conf(v))
    };
    let pair = (0..40).find_map(|i| {
        let t0 = Instant::now();
        let r = loop {
            let (code, r) = call(&node, &env("ADD", i), "1.0.0");
            if code == 0 {
                break r;
            }
            assert!(r["code"] == 11 && t0.elapsed() < Duration::from_secs(30), "{r}");
            std::thread::sleep(Duration::from_millis(200));
        };
        got.push((format!("{i}"), addr_of(&r)));
        got.iter().find_map(|(xi, x)| {
            got.iter()
                .find(|(_, y)| y != x && y.starts_with(x.as_str()))
                .map(|(_, y)| (xi.clone(), x.clone(), y.clone()))
        })
    });
    let (xi, x, y) = pair.unwrap_or_else(|| panic!("no two addresses read alike: {got:?}"));
    let xi: usize = xi.parse().unwrap();
    sh(&["ip", "-n", &node.name, "rule", "del", "to", &x, "priority", "512"]);
    let (code, c) = call(&node, &env("CHECK", xi), "1.1.0");
    assert_eq!(code, 1, "CHECK passed with {x}'s to-rule gone ({y}'s is there)");
    assert!(c["msg"].as_str().unwrap().contains(&format!("the rules of {x} are")), "{c}");
    assert_eq!(call(&node, &env("ADD", xi), "1.0.0").0, 0);
    assert_eq!(call(&node, &env("CHECK", xi), "1.1.0").0, 0, "the retried ADD set the rule again");
    assert!(!rules_of(&node, &x).is_empty());
}

/// An ADD fails (the pod's namespace has its `CNI_IFNAME` already) while podipd is down, so it
/// cannot give its address back: its error says the address stays held until the sandbox's DEL,
/// and that DEL releases it. Before, the error said nothing of the address.
#[test]
fn a_failed_add_that_cannot_give_its_address_back_says_so() {
    if !privileged() {
        return;
    }
    let mut node = Node::new("qd");
    let p1 = node.pod(1);
    let n1 = format!("/var/run/netns/{p1}");
    wait_for(&node.socket, |st| st["total"].as_u64().unwrap_or(0) > 1, 30);
    sh(&["ip", "-n", &p1, "link", "add", "name", "eth0", "type", "veth", "peer", "name", "x0"]);
    // Held 2 s at its create (after podipd's answer); podipd goes meanwhile.
    let add = straced_plugin(&node, &with_web("ADD", "c1", &n1), "sendto", "delay_enter=2000000:when=2");
    std::thread::sleep(Duration::from_millis(800));
    node.kill_daemon();
    let out = add.wait_with_output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let msg = v["msg"].as_str().unwrap();
    assert!(msg.contains("CNI_IFNAME") && msg.contains("stays held until this sandbox's DEL"), "{v}");
    node.start_daemon();
    let a = held(&node.socket).get("c1").cloned().expect("held, as the error says");
    assert!(msg.contains(&a), "{v}");
    assert_eq!(node.cni(&with_web("DEL", "c1", &n1), &node.conf("1.0.0")).0, 0);
    assert!(held(&node.socket).is_empty());
}

/// An ADD stalls between podipd's answer and its wiring for longer than the wiring grace (held
/// 6 s at its create; the grace is 2 s). The sweep never releases the address while the ADD
/// holds its container's attachment lock: no other pod gets it, and the stalled ADD wires its
/// pod with the address it still holds. Before, the sweep released it, the next pod got it, and
/// the stalled ADD then wired the same address into its own pod.
#[test]
fn the_sweep_never_releases_the_address_of_an_add_that_is_still_running() {
    if !privileged() {
        return;
    }
    let (mut node, n1, mut add, a) = a_stalled_add("qe");
    // Past the grace, with sweeps every second.
    std::thread::sleep(Duration::from_secs(4));
    assert!(add.try_wait().unwrap().is_none(), "the ADD finished early: the window was missed");
    assert_eq!(held(&node.socket).get("c1"), Some(&a), "the sweep released a running ADD's address");
    let p2 = node.pod(2);
    assert_ne!(addr_of(&node.add("c2", &p2)), a, "another pod got the stalled ADD's address");
    let out = add.wait_with_output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "{v}");
    assert_eq!(addr_of(&v), a);
    assert_eq!(node.cni(&env_of("CHECK", "c1", &n1), &node.conf("1.1.0")).0, 0);
    // Once the ADD is over, an assignment the host does not wire is released as before: here
    // one whose plugin was killed between podipd's answer and the wiring.
    let p3 = node.pod(3);
    let c3 =
        straced_plugin(&node, &env_of("ADD", "c3", &format!("/var/run/netns/{p3}")), "sendto", "signal=KILL:when=2");
    assert!(!c3.wait_with_output().unwrap().status.success());
    assert!(held(&node.socket).contains_key("c3"), "c3's ADD was killed before it got an address");
    let t0 = Instant::now();
    while held(&node.socket).contains_key("c3") {
        assert!(t0.elapsed() < Duration::from_secs(10), "an unwired assignment was never released");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// CHECK fails whenever a part of the pod's data path is gone or wrong, and names it; the
/// runtime's retried ADD then makes it whole again. Before, CHECK passed without the gateway's
/// neighbour, with it at another MAC, with the default route through another gateway, with an
/// extra rule of the address, and without an IPv6 pod's IPv4 egress; and then with the host veth
/// at another MAC than the pod's neighbour names, the host route through a gateway, the pod's
/// default route on an interface not wired to the host, and an IPv6 pod's host neighbour at
/// another MAC.
#[test]
fn check_fails_for_every_part_of_the_data_path_gone_or_wrong() {
    if !privileged() {
        return;
    }
    let mut v4 = Node::new("qf");
    let mut v6 = Node::with("qg", &[("ENABLE_IPv6", "true"), ("ENABLE_IPv4", "false")]);
    // (IPv6 node, what CHECK names, how to break it: `{node}`, `{pod}`, `{addr}` filled in).
    let cases = [
        (false, "the permanent neighbour 169.254.1.1", "ip -n {pod} neigh del 169.254.1.1 dev eth0"),
        (
            false,
            "the permanent neighbour 169.254.1.1",
            "ip -n {pod} neigh replace 169.254.1.1 dev eth0 lladdr 02:00:00:00:00:01 nud permanent",
        ),
        (false, "default route via 169.254.1.1", "ip -n {pod} route replace default via 10.99.0.9 dev eth0 onlink"),
        (false, "the rules of", "ip -n {node} rule add from {addr} lookup 77 priority 1536"),
        (true, "on v4if0", "ip -n {pod} link del v4if0"),
        // Found by a sixth review: each passed CHECK, and the pod could not reach the node.
        (false, "has MAC 02:00:00:aa:bb:cc", "ip -n {node} link set dev {veth} address 02:00:00:aa:bb:cc"),
        (true, "has MAC 02:00:00:aa:bb:cc", "ip -n {node} link set dev {veth} address 02:00:00:aa:bb:cc"),
        (false, "via 10.250.0.1", "ip -n {node} route replace {addr}/32 via 10.250.0.1 dev {veth} onlink"),
        (
            false,
            "(x0 is not)",
            "ip -n {pod} link add x0 type veth peer name x1 && ip -n {pod} link set x0 up && ip -n {pod} link set x1 up && ip -n {pod} route replace default via 169.254.1.1 dev x0 onlink",
        ),
        (
            true,
            "the host's neighbour",
            "ip -n {node} -6 neigh replace {addr} lladdr 02:00:00:aa:bb:cc dev {veth} nud permanent",
        ),
    ];
    for (i, (ipv6, needle, how)) in cases.into_iter().enumerate() {
        let node = if ipv6 { &mut v6 } else { &mut v4 };
        let p = node.pod(10 + i);
        let netns = format!("/var/run/netns/{p}");
        let cid = format!("k{i}");
        let r = node.add(&cid, &p);
        let a = addr_of(&r);
        let cmd =
            how.replace("{node}", &node.name).replace("{pod}", &p).replace("{addr}", &a).replace("{veth}", &veth(&r));
        sh(&["sh", "-ec", &cmd]);
        let (code, c) = node.cni(&env_of("CHECK", &cid, &netns), &node.conf("1.1.0"));
        assert_eq!(code, 1, "{cmd}: CHECK passed: {c}");
        assert!(c["msg"].as_str().unwrap().contains(needle), "{cmd}: {c}");
        let (code, r) = node.cni(&env_of("ADD", &cid, &netns), &node.conf("1.0.0"));
        assert_eq!((code, addr_of(&r)), (0, a.clone()), "{cmd}: {r}");
        assert_eq!(node.cni(&env_of("CHECK", &cid, &netns), &node.conf("1.1.0")).0, 0, "{cmd}: not whole again");
    }
}

/// Waits (at most 10 s) for the node's host state to be `before` again: what the pods' DELs left
/// goes with their namespaces.
fn host_back_to(node: &Node, before: &str) {
    let t0 = Instant::now();
    while host_state(&node.name) != before {
        assert!(t0.elapsed() < Duration::from_secs(10), "left on the host:\n{}", host_state(&node.name));
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A node (wiring grace 2 s, no cooldown) whose ADD of container `c1` is held 6 s at its create
/// (its 2nd send; the 1st is to podipd), once podipd has given it an address: (node, the pod's
/// namespace path, the running ADD, its address).
fn a_stalled_add(tag: &str) -> (Node, String, std::process::Child, String) {
    let mut node = Node::with(tag, &[("PODIP_WIRING_GRACE", "2"), ("IP_COOLDOWN_PERIOD", "0")]);
    wait_for(&node.socket, |st| st["total"].as_u64().unwrap_or(0) > 1, 30);
    let p1 = node.pod(1);
    let n1 = format!("/var/run/netns/{p1}");
    let add = held_plugin(&node, &env_of("ADD", "c1", &n1), "sendto", 6_000_000, 2);
    let t0 = Instant::now();
    let a = loop {
        if let Some(a) = held(&node.socket).get("c1") {
            break a.clone();
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "c1's ADD never got an address");
        std::thread::sleep(Duration::from_millis(50));
    };
    (node, n1, add, a)
}

/// An ADD stalled between podipd's answer and its wiring (6 s at its create; the grace is 2 s)
/// while `meddle` does something to the lock files: the address stays the stalled ADD's, the
/// next pod gets another, and the ADD wires its pod. Returns podipd's log.
fn a_stalled_add_keeps_its_address_while(tag: &str, meddle: impl FnOnce(&mut Node)) -> String {
    let (mut node, _, mut add, a) = a_stalled_add(tag);
    meddle(&mut node);
    std::thread::sleep(Duration::from_secs(3));
    assert!(add.try_wait().unwrap().is_none(), "the ADD finished early: the window was missed");
    assert_eq!(held(&node.socket).get("c1"), Some(&a), "the sweep released a running ADD's address: {}", node.log());
    let p2 = node.pod(2);
    assert_ne!(addr_of(&node.add("c2", &p2)), a, "another pod got the stalled ADD's address");
    let out = add.wait_with_output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "{v}");
    assert_eq!(addr_of(&v), a);
    node.log()
}

/// Removes the lock directory `locks` at once (a rename, then the removal of what it names
/// now), so podipd's sweep, which makes a missing lock file, never makes one in it meanwhile.
fn remove_lock_dir(locks: &std::path::Path) {
    let gone = locks.with_extension("gone");
    std::fs::rename(locks, &gone).unwrap();
    std::fs::remove_dir_all(&gone).unwrap();
}

/// A container id other than `not` whose lock file is `not`'s.
fn same_bucket_as(not: &str) -> String {
    let b = protocol::lockfile::bucket(not);
    (0..).map(|i| format!("x{i}")).find(|k| protocol::lockfile::bucket(k) == b).unwrap()
}

/// The lock directory removed, or removed and made again (and even its lock file made again by
/// another ADD of the same bucket), under an ADD that holds its lock in it: the sweep cannot
/// see that lock, so it keeps every assignment unwired at that moment until its DEL. Before, it
/// took the lock as free (no directory, or a new file) and released the address, and the next
/// pod got it while the stalled ADD wired it too.
#[test]
fn the_sweep_keeps_what_an_add_may_hold_when_the_lock_directory_is_removed_or_made_again() {
    if !privileged() {
        return;
    }
    let locks = |node: &Node| node.socket.parent().unwrap().join("locks");
    let log = a_stalled_add_keeps_its_address_while("t1", |node| remove_lock_dir(&locks(node)));
    assert!(log.contains("was removed"), "{log}");
    let log = a_stalled_add_keeps_its_address_while("t2", |node| {
        remove_lock_dir(&locks(node));
        std::fs::create_dir_all(locks(node)).unwrap();
    });
    assert!(log.contains("was replaced"), "{log}");
    a_stalled_add_keeps_its_address_while("t3", |node| {
        remove_lock_dir(&locks(node));
        let (other, p) = (same_bucket_as("c1"), node.pod(3));
        node.add(&other, &p);
        assert!(locks(node).join(format!("{}.lock", protocol::lockfile::bucket("c1"))).exists());
    });
}

/// A plugin configuration that names podipd's socket through a symlink in another directory
/// locks in podipd's own lock directory, so the sweep sees an ADD stalled past the grace. Before,
/// its locks were in `locks/` beside the symlink, and the sweep released its address.
#[test]
fn a_plugin_that_names_the_socket_through_a_symlink_locks_where_the_sweep_looks() {
    if !privileged() {
        return;
    }
    let mut node = Node::with("t4", &[("PODIP_WIRING_GRACE", "2"), ("IP_COOLDOWN_PERIOD", "0")]);
    wait_for(&node.socket, |st| st["total"].as_u64().unwrap_or(0) > 1, 30);
    let other = node.socket.parent().unwrap().join("elsewhere");
    std::fs::create_dir(&other).unwrap();
    let link = other.join("podipd.sock");
    std::os::unix::fs::symlink(&node.socket, &link).unwrap();
    let conf = format!(r#"{{"cniVersion":"1.0.0","name":"podip","type":"podip-cni","socket":"{}"}}"#, link.display());
    let p1 = node.pod(1);
    let n1 = format!("/var/run/netns/{p1}");
    let add = straced_with(&node, &conf, &env_of("ADD", "c1", &n1), "sendto", "delay_enter=6000000:when=2");
    let t0 = Instant::now();
    let a = loop {
        if let Some(a) = held(&node.socket).get("c1") {
            break a.clone();
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "c1's ADD never got an address");
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(held(&node.socket).get("c1"), Some(&a), "the sweep released a running ADD's address: {}", node.log());
    let p2 = node.pod(2);
    assert_ne!(addr_of(&node.add("c2", &p2)), a, "another pod got the stalled ADD's address");
    let out = add.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let bucket = format!("{}.lock", protocol::lockfile::bucket("c1"));
    assert!(node.socket.parent().unwrap().join("locks").join(bucket).exists());
    assert!(!other.join("locks").exists(), "locks beside the symlink");
}

/// The lock directory made again while an ADD holds its lock and has not asked podipd yet:
/// the ADD finds its lock file no longer the one the path names, gives the address back, and
/// fails with code 11; the runtime's retry wires the pod. Before, it wired the pod holding a
/// lock the sweep could not see.
#[test]
fn an_add_whose_lock_files_were_made_again_gives_its_address_back() {
    if !privileged() {
        return;
    }
    let mut node = Node::new("t5");
    let p1 = node.pod(1);
    let n1 = format!("/var/run/netns/{p1}");
    // Held 3 s as it connects to podipd, its lock taken.
    let add = held_plugin(&node, &env_of("ADD", "c1", &n1), "connect", 3_000_000, 1);
    let locks = node.socket.parent().unwrap().join("locks");
    let bucket = locks.join(format!("{}.lock", protocol::lockfile::bucket("c1")));
    // podipd made the file at its first sweep: the ADD holds it once it cannot be taken.
    let t0 = Instant::now();
    while std::process::Command::new("flock").args(["-n"]).arg(&bucket).arg("true").status().unwrap().success() {
        assert!(t0.elapsed() < Duration::from_secs(3), "the ADD never took its lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    remove_lock_dir(&locks);
    std::fs::create_dir_all(&locks).unwrap();
    let out = add.wait_with_output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["code"], 11, "{v}");
    assert!(v["msg"].as_str().unwrap().contains("removed or replaced"), "{v}");
    assert!(!held(&node.socket).contains_key("c1"), "the address was not given back");
    let r = node.add("c1", &p1);
    assert_eq!(node.cni(&env_of("CHECK", "c1", &n1), &node.conf("1.1.0")).0, 0, "{r}");
}

/// Rules and addresses podip did not make, which CHECK must still see: a rule of the pod's
/// address at another priority (to it or from it), podip's to-pod rule inverted, and another
/// pod's address on the pod's interface. CHECK fails and names each; a retried ADD does not
/// remove what is not podip's. Before, CHECK passed them all (it read only podip's two
/// priorities, without their flags, and only looked for the pod's own address).
#[test]
fn check_fails_for_rules_and_addresses_of_the_pod_that_are_not_podips() {
    if !privileged() {
        return;
    }
    let mut node = Node::new("t6");
    let p9 = node.pod(9);
    let other = addr_of(&node.add("k-other", &p9));
    let cases = [
        ("the rules of", "ip -n {node} rule add to {addr} priority 100 blackhole"),
        ("the rules of", "ip -n {node} rule add from {addr} priority 1000 blackhole"),
        (
            "not to",
            "ip -n {node} rule del to {addr} priority 512 && ip -n {node} rule add not to {addr} lookup main priority 512",
        ),
        ("the rules of", "ip -n {node} rule add to {addr} iif lo lookup main priority 700"),
        ("eth0 carries", "ip -n {pod} addr add {other}/32 dev eth0"),
    ];
    for (i, (needle, how)) in cases.into_iter().enumerate() {
        let p = node.pod(10 + i);
        let netns = format!("/var/run/netns/{p}");
        let cid = format!("k{i}");
        let a = addr_of(&node.add(&cid, &p));
        assert_eq!(node.cni(&env_of("CHECK", &cid, &netns), &node.conf("1.1.0")).0, 0, "healthy fails");
        let cmd =
            how.replace("{node}", &node.name).replace("{pod}", &p).replace("{addr}", &a).replace("{other}", &other);
        sh(&["sh", "-ec", &cmd]);
        let (code, c) = node.cni(&env_of("CHECK", &cid, &netns), &node.conf("1.1.0"));
        assert_eq!(code, 1, "{cmd}: CHECK passed: {c}");
        assert!(c["msg"].as_str().unwrap().contains(needle), "{cmd}: {c}");
        assert_eq!(node.cni(&env_of("DEL", &cid, &netns), &node.conf("1.0.0")).0, 0);
    }
}

/// Whatever podipd's state says, the kernel refuses a second route to one address on a node: an
/// ADD given an address the host already routes over another link (here every free address of
/// the pool, routed over a veth podip did not make, each with its to-pod rule) fails and names
/// that link, gives the address back, leaves nothing of its own, and leaves that owner's route
/// and rules as they were. Before, the ADD replaced the route and the address went to two pods.
#[test]
fn an_add_never_routes_an_address_the_host_routes_over_another_link() {
    if !privileged() {
        return;
    }
    let mut node = Node::with("t7", &[("IP_COOLDOWN_PERIOD", "0")]);
    let st = wait_for(&node.socket, |st| st["total"].as_u64().unwrap_or(0) > 1, 30);
    let n = node.name.clone();
    let free: Vec<String> = st["enis"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["secondary_ips"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()))
        .collect();
    assert!(!free.is_empty(), "{st}");
    for a in &free {
        route_over_rogue(&n, a);
        sh(&["ip", "-n", &n, "rule", "add", "to", a, "lookup", "main", "priority", "512"]);
    }
    let before = host_state(&n);
    let p = node.pod(1);
    let netns = format!("/var/run/netns/{p}");
    let (code, r) = node.cni(&env_of("ADD", "c1", &netns), &node.conf("1.0.0"));
    let msg = r["msg"].as_str().unwrap_or_default().to_string();
    assert_eq!((code, r["code"].as_u64()), (1, Some(100)), "{r}");
    assert!(msg.contains("is routed on this host already (dev rogue0)"), "{r}");
    let a = free.iter().find(|a| msg.contains(&format!("{a} is routed"))).expect("the message names the address");
    assert!(!held(&node.socket).contains_key("c1"), "the address was not given back");
    assert_eq!(host_state(&n), before, "the ADD left something, or took the owner's route or rules");
    assert_eq!(rules_of(&node, a).len(), 1, "the owner's rule of {a}");
    assert!(sh(&["ip", "-n", &p, "-o", "link", "show"]).lines().count() <= 1, "a pod interface is left");
}

/// The same for an IPv6 pod (its host side made by iproute2): the pool hands the address of a
/// pod just deleted to the next one (no cooldown here), which the host now routes over a veth
/// podip did not make.
#[test]
fn an_ipv6_add_never_routes_an_address_the_host_routes_over_another_link() {
    if !privileged() {
        return;
    }
    let mut node = Node::with("t8", &[("IP_COOLDOWN_PERIOD", "0"), ("ENABLE_IPv6", "true"), ("ENABLE_IPv4", "false")]);
    let n = node.name.clone();
    let p1 = node.pod(1);
    let n1 = format!("/var/run/netns/{p1}");
    let a = addr_of(&node.add("c1", &p1));
    assert_eq!(node.cni(&env_of("DEL", "c1", &n1), &node.conf("1.0.0")).0, 0);
    route_over_rogue(&n, &a);
    sh(&["ip", "-n", &n, "-6", "rule", "add", "to", &a, "lookup", "main", "priority", "512"]);
    the_next_add_is_refused_as_routed(&mut node, &a);
}

/// Routes `addr` (/32 or /128) in namespace `n` over `rogue0`, a veth podip did not make (made
/// on the first call).
fn route_over_rogue(n: &str, addr: &str) {
    if !sh(&["ip", "-n", n, "-o", "link", "show"]).contains(" rogue0@") {
        sh(&["ip", "-n", n, "link", "add", "rogue0", "type", "veth", "peer", "name", "rogue1"]);
        sh(&["ip", "-n", n, "link", "set", "rogue0", "up"]);
        sh(&["ip", "-n", n, "link", "set", "rogue1", "up"]);
    }
    let (fam, len) = if addr.contains(':') { ("-6", 128) } else { ("-4", 32) };
    sh(&["ip", "-n", n, fam, "route", "add", &format!("{addr}/{len}"), "dev", "rogue0"]);
}

/// The next ADD (container `c2`) is refused with code 100 naming `routed` and `rogue0`, gives
/// its address back, and leaves the host as it was.
fn the_next_add_is_refused_as_routed(node: &mut Node, routed: &str) {
    let before = host_state(&node.name);
    let p2 = node.pod(2);
    let (code, r) = node.cni(&env_of("ADD", "c2", &format!("/var/run/netns/{p2}")), &node.conf("1.0.0"));
    assert_eq!((code, r["code"].as_u64()), (1, Some(100)), "the pool did not hand out {routed} again, or: {r}");
    let msg = r["msg"].as_str().unwrap();
    assert!(msg.contains(&format!("{routed} is routed on this host already (dev rogue0)")), "{r}");
    assert!(!held(&node.socket).contains_key("c2"), "the address was not given back");
    assert_eq!(host_state(&node.name), before, "the ADD left something, or took the owner's route or rules");
}

/// An assignment whose lock file cannot be opened (a directory in its place) is never released
/// by the sweep, and the log says so once, not at every sweep. One whose bucket never had a lock
/// file (asked for without the plugin) has no plugin holding it, and is released after the grace.
#[test]
fn the_sweep_keeps_what_it_cannot_see_the_lock_of_and_says_so_once() {
    if !privileged() {
        return;
    }
    let node = Node::with("t9", &[("PODIP_WIRING_GRACE", "2"), ("IP_COOLDOWN_PERIOD", "0")]);
    wait_for(&node.socket, |st| st["total"].as_u64().unwrap_or(0) > 1, 30);
    let locks = node.socket.parent().unwrap().join("locks");
    let c4 = (0..)
        .map(|i| format!("c4-{i}"))
        .find(|k| protocol::lockfile::bucket(k) != protocol::lockfile::bucket("c3"))
        .unwrap();
    // podipd made every lock file at its first sweep: c4's is made a directory, and a sweep
    // sees that before c4 is asked for (which would pin it at once).
    let file = locks.join(format!("{}.lock", protocol::lockfile::bucket(&c4)));
    std::fs::remove_file(&file).unwrap();
    std::fs::create_dir(&file).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    for cid in ["c3", c4.as_str()] {
        let r = common::request(
            &node.socket,
            &json!({"v": 1, "op": "add", "network": "podip", "container_id": cid, "ifname": "eth0", "netns": "/var/run/netns/x"}),
        );
        assert!(r["ok"].is_object(), "{r}");
    }
    // Past the grace, several sweeps (one a second).
    std::thread::sleep(Duration::from_secs(6));
    let held = held(&node.socket);
    let log = node.log();
    assert!(!held.contains_key("c3") && held.contains_key(&c4), "{held:?}\n{log}");
    assert_eq!(
        log.matches(&format!("of podip/{c4}/eth0 is unwired, and its attachment lock file")).count(),
        1,
        "{log}"
    );
    assert!(log.contains("cannot be taken"), "{log}");
}

/// A node (wiring grace `grace` s, no cooldown) with pod `live` wired, whose podipd then lost
/// its checkpoint and recovered the pod from the host: (node, the pod's namespace, its veth, its
/// address, podipd's key for it).
fn a_recovered_pod(tag: &str, grace: &str) -> (Node, String, String, String, String) {
    let mut node = Node::with(tag, &[("PODIP_WIRING_GRACE", grace), ("IP_COOLDOWN_PERIOD", "0")]);
    let p1 = node.pod(1);
    let live = node.add("live", &p1);
    let (v, a) = (veth(&live), addr_of(&live));
    node.kill_daemon();
    std::fs::remove_file(node.dir.join("state/ipam.json")).unwrap();
    node.start_daemon();
    let key = protocol::lockfile::recovered_key(&v);
    assert_eq!(held(&node.socket).get(&key), Some(&a));
    (node, p1, v, a, key)
}

/// Waits (at most 10 s) for podipd to release `a` of `key`.
fn the_sweep_releases(node: &Node, key: &str, a: &str) {
    let t0 = Instant::now();
    while held(&node.socket).contains_key(key) {
        assert!(t0.elapsed() < Duration::from_secs(10), "{a} of {key} was never released: {}", node.log());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A pod recovered from the host (its checkpoint lost) whose runtime DEL came without a
/// namespace (which leaves it to the sweep), and whose namespace then went: the sweep releases
/// its address after the grace. A recovered assignment has no ADD, and no lock file of its key
/// until a DEL takes one; before, the sweep found no lock file and kept the address forever.
#[test]
fn the_sweep_releases_a_recovered_pod_that_is_gone() {
    if !privileged() {
        return;
    }
    let (node, p1, _, a, key) = a_recovered_pod("ta", "2");
    let del = [("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "live"), ("CNI_IFNAME", "eth0")];
    assert_eq!(node.cni(&del, &node.conf("1.0.0")).0, 0);
    sh(&["ip", "netns", "del", &p1]);
    the_sweep_releases(&node, &key, &a);
}

/// An IPv6 pod whose IPv4 egress address the host already routes over another link: the ADD
/// names that address, not the pod's IPv6 one (which nothing routes).
#[test]
fn an_ipv6_add_whose_egress_address_is_routed_elsewhere_names_it() {
    if !privileged() {
        return;
    }
    let mut node = Node::with("tb", &[("IP_COOLDOWN_PERIOD", "0"), ("ENABLE_IPv6", "true"), ("ENABLE_IPv4", "false")]);
    let n = node.name.clone();
    let p1 = node.pod(1);
    let n1 = format!("/var/run/netns/{p1}");
    let r1 = node.add("c1", &p1);
    let e = r1["ips"][1]["address"].as_str().unwrap().split('/').next().unwrap().to_string();
    assert!(e.starts_with("169.254.172."), "{r1}");
    assert_eq!(node.cni(&env_of("DEL", "c1", &n1), &node.conf("1.0.0")).0, 0);
    route_over_rogue(&n, &e);
    the_next_add_is_refused_as_routed(&mut node, &e);
}

/// A pod recovered from the host (its checkpoint lost): its DEL holds the lock of podipd's key
/// for it (`host:<veth>`), and the sweep never releases the address while that lock is held,
/// only after. Before, the sweep released a recovered address without any lock, so a DEL that
/// stalled between removing the veth and removing the rules removed the rules of the next pod
/// given the address.
#[test]
fn a_recovered_pods_address_is_never_released_while_its_del_runs() {
    if !privileged() {
        return;
    }
    let (node, p1, _, a, key) = a_recovered_pod("tc", "3");
    let lock = node.socket.parent().unwrap().join("locks").join(format!("{}.lock", protocol::lockfile::bucket(&key)));
    assert_ne!(
        protocol::lockfile::bucket(&key),
        protocol::lockfile::bucket("live"),
        "a collision: rename the container"
    );
    // A DEL without a namespace (which leaves a recovered pod to the sweep) opens and locks that
    // key's file (strace names the files it opens).
    let trace = node.dir.join("del.strace");
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{}", node.name))
        .args(["strace", "-f", "-qq", "-e", "trace=openat,flock", "-o"])
        .arg(&trace)
        .arg(common::plugin_bin())
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs([("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "live"), ("CNI_IFNAME", "eth0")])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            std::io::Write::write_all(&mut c.stdin.take().unwrap(), node.conf("1.0.0").as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let trace = std::fs::read_to_string(&trace).unwrap();
    assert!(trace.contains(&lock.display().to_string()), "the DEL never took {}:\n{trace}", lock.display());
    // The namespace goes, and nothing of the pod is on the host. While something holds the
    // key's lock (as a stalled DEL does), the address stays held past the grace (3 s).
    let mut holder = std::process::Command::new("flock").arg(&lock).args(["sleep", "6"]).spawn().unwrap();
    sh(&["ip", "netns", "del", &p1]);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(held(&node.socket).get(&key), Some(&a), "released while its lock was held: {}", node.log());
    holder.wait().unwrap();
    the_sweep_releases(&node, &key, &a);
}

/// A wired pod's DEL (no namespace: its veth is deleted) held 3 s once its locks are taken and
/// podipd has answered (at its first netlink connect), then 8 s between removing the veth and
/// releasing the address (as its 8th send, the veth's removal after the route lookup and the
/// three rule removals, returns), with `meddle` done to the lock files during the first hold: the
/// sweep sees the change while the pod is still wired, and the address stays the DEL's past
/// the grace (2 s) until the DEL itself releases it; the next pod gets another. Returns podipd's
/// log.
fn a_del_keeps_its_address_while(tag: &str, meddle: impl FnOnce(&Node)) -> String {
    let mut node = Node::with(tag, &[("PODIP_WIRING_GRACE", "2"), ("IP_COOLDOWN_PERIOD", "0")]);
    wait_for(&node.socket, |st| st["total"].as_u64().unwrap_or(0) > 1, 30);
    let p1 = node.pod(1);
    let r1 = node.add("c1", &p1);
    let (v, a) = (veth(&r1), addr_of(&r1));
    let env = [("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth0")];
    let injects = [("connect", "delay_enter=3000000:when=2"), ("sendto", "delay_exit=8000000:when=8")];
    let del = straced_injecting(&node, &node.conf("1.0.0"), &env, &injects);
    std::thread::sleep(Duration::from_secs(1));
    meddle(&node);
    // The hold ends at 3 s, the veth goes, and the grace passes while the rules stay.
    std::thread::sleep(Duration::from_millis(6500));
    let mut del = del;
    assert!(del.try_wait().unwrap().is_none(), "the DEL finished early: the window was missed");
    assert!(!sh(&["ip", "-n", &node.name, "link", "show"]).contains(&v), "the DEL never removed the veth");
    assert_eq!(held(&node.socket).get("c1"), Some(&a), "the sweep released a running DEL's address: {}", node.log());
    // A pod whose locks are not the DEL's.
    let busy = [protocol::lockfile::bucket("c1"), protocol::lockfile::bucket(&protocol::lockfile::recovered_key(&v))];
    let c2 = (0..).map(|i| format!("c2-{i}")).find(|c| !busy.contains(&protocol::lockfile::bucket(c))).unwrap();
    let p2 = node.pod(2);
    assert_ne!(addr_of(&node.add(&c2, &p2)), a, "another pod got the address of a DEL still to remove its rules");
    let out = del.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(!held(&node.socket).contains_key("c1"));
    assert!(rules_of(&node, &a).is_empty());
    node.log()
}

/// A DEL whose lock file was made again (the file alone, or the whole lock directory) while the
/// pod was still wired, and that stalls between removing the veth and releasing the address:
/// the sweep keeps the address until the DEL releases it. Before, the sweep pinned only what was
/// unwired when the directory changed (and saw nothing of a file made again alone), took the new
/// file as free, and released the address under the running DEL.
#[test]
fn a_del_whose_lock_file_was_made_again_keeps_its_address_until_it_releases_it() {
    if !privileged() {
        return;
    }
    let locks = |node: &Node| node.socket.parent().unwrap().join("locks");
    let log = a_del_keeps_its_address_while("td", |node| {
        let file = locks(node).join(format!("{}.lock", protocol::lockfile::bucket("c1")));
        std::fs::remove_file(&file).unwrap();
        std::fs::write(&file, b"").unwrap();
    });
    assert!(log.contains("attachment lock files in") && log.contains(" 1 assignments"), "{log}");
    let log = a_del_keeps_its_address_while("te", |node| {
        remove_lock_dir(&locks(node));
        std::fs::create_dir_all(locks(node)).unwrap();
    });
    assert!(log.contains("was replaced"), "{log}");
}

/// A stalled ADD whose lock file alone is removed (the directory stays): the sweep keeps its
/// address. Before, the sweep noted only the directory, made the file again, and took it free.
#[test]
fn the_sweep_keeps_what_an_add_may_hold_when_its_lock_file_alone_is_removed() {
    if !privileged() {
        return;
    }
    let log = a_stalled_add_keeps_its_address_while("th", |node| {
        let locks = node.socket.parent().unwrap().join("locks");
        std::fs::remove_file(locks.join(format!("{}.lock", protocol::lockfile::bucket("c1")))).unwrap();
    });
    assert!(log.contains("attachment lock files in"), "{log}");
}

/// podipd restarted without its checkpoint while a wired pod's DEL runs (after podipd's answer,
/// before the veth goes) recovers the pod from the host under `host:<veth>`; the DEL holds that
/// key's lock too, so the sweep never releases the address while the DEL runs, only after.
/// Before, the DEL held only its container's lock, and the sweep released the recovered address
/// as soon as the veth had been gone for the grace.
#[test]
fn a_del_across_a_restart_that_lost_the_checkpoint_keeps_the_address_until_it_is_done() {
    if !privileged() {
        return;
    }
    let mut node = Node::with("tf", &[("PODIP_WIRING_GRACE", "2"), ("IP_COOLDOWN_PERIOD", "0")]);
    let p1 = node.pod(1);
    let live = node.add("c1", &p1);
    let (v, a) = (veth(&live), addr_of(&live));
    let key = protocol::lockfile::recovered_key(&v);
    assert_ne!(protocol::lockfile::bucket(&key), protocol::lockfile::bucket("c1"), "a collision: rename the container");
    let env = [("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth0")];
    // Held 6 s at its first netlink connect, then 8 s once the veth is gone (its 8th send).
    let injects = [("connect", "delay_enter=6000000:when=2"), ("sendto", "delay_exit=8000000:when=8")];
    let mut del = straced_injecting(&node, &node.conf("1.0.0"), &env, &injects);
    std::thread::sleep(Duration::from_millis(500));
    node.kill_daemon();
    std::fs::remove_file(node.dir.join("state/ipam.json")).unwrap();
    node.start_daemon();
    assert_eq!(held(&node.socket).get(&key), Some(&a), "{}", node.log());
    assert!(del.try_wait().unwrap().is_none(), "the DEL finished early: the window was missed");
    let t0 = Instant::now();
    while sh(&["ip", "-n", &node.name, "link", "show"]).contains(&v) {
        assert!(t0.elapsed() < Duration::from_secs(8), "the DEL never removed the veth");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Past the grace with the veth gone and the rules still there.
    std::thread::sleep(Duration::from_millis(4500));
    assert!(del.try_wait().unwrap().is_none(), "the DEL finished early: the window was missed");
    assert_eq!(held(&node.socket).get(&key), Some(&a), "the sweep released a running DEL's address: {}", node.log());
    let out = del.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(rules_of(&node, &a).is_empty());
    // Then the sweep releases it: nothing holds the lock, nothing is on the host.
    the_sweep_releases(&node, &key, &a);
}

/// A recovered pod's DEL that fails removing its rules leaves its veth as it was (the rules go
/// first, while the pod's route holds the address); the runtime then removes the namespace, and
/// the retried DEL, whose namespace no longer holds the address, leaves the pod to the sweep,
/// which releases the address and then removes its rules. Before, the veth went first, and a
/// DEL that stalled after it could remove the rules of the address's next holder.
#[test]
fn a_recovered_pods_del_that_fails_on_its_rules_leaves_the_veth_and_the_sweep_the_rest() {
    if !privileged() {
        return;
    }
    let (node, p1, v, a, key) = a_recovered_pod("tg", "2");
    let n1 = format!("/var/run/netns/{p1}");
    let env = [("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "live"), ("CNI_IFNAME", "eth0"), ("CNI_NETNS", n1.as_str())];
    // Its 6th send is its first rule removal (after podipd's two answers, the pod's addresses,
    // and the route and link lookups).
    let first = straced_injecting(&node, &node.conf("1.0.0"), &env, &[("sendto", "error=EPERM:when=6")])
        .wait_with_output()
        .unwrap();
    let r: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(r["code"].as_u64(), Some(100), "{r}");
    assert!(r["msg"].as_str().unwrap_or_default().contains("teardown"), "{r}");
    assert!(!rules_of(&node, &a).is_empty(), "the first DEL failed before the rules");
    let routes = sh(&["ip", "-n", &node.name, "route", "show", &a]);
    assert!(routes.contains(&format!("dev {v}")), "the failed DEL touched the veth: {routes}");
    assert_eq!(held(&node.socket).get(&key), Some(&a));
    sh(&["ip", "netns", "del", &p1]);
    let (code, r) = node.cni(&env, &node.conf("1.0.0"));
    assert_eq!(code, 0, "{r}");
    the_sweep_releases(&node, &key, &a);
    let t0 = Instant::now();
    while !rules_of(&node, &a).is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(10), "the rules of {a} stayed: {}", node.log());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A pod's DEL (no namespace) slowed 2 s after each request from its 5th send on, and 6 s before
/// it connects to podipd to release the address; podipd restarts without its checkpoint the
/// moment the veth is gone, and the next pod is given the address and wired with it before the
/// DEL goes on: the DEL leaves that pod's rules alone. The DEL removes the rules first, while its
/// own route holds the address; after the veth, it only tells podipd. Before, the veth went
/// first (its 5th send), and the DEL removed the next pod's rules 2 s later (podipd restarts, and
/// the next pod is wired, in about 0.1 s).
#[test]
fn a_del_never_removes_the_rules_of_the_addresss_next_holder() {
    if !privileged() {
        return;
    }
    let mut node = Node::with("ti", &[("PODIP_WIRING_GRACE", "2"), ("IP_COOLDOWN_PERIOD", "0")]);
    wait_for(&node.socket, |st| st["total"].as_u64().unwrap_or(0) > 1, 30);
    let p1 = node.pod(1);
    let r1 = node.add("c1", &p1);
    let (v, a) = (veth(&r1), addr_of(&r1));
    let env = [("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth0")];
    let injects = [("sendto", "delay_exit=2000000:when=5+"), ("connect", "delay_enter=6000000:when=5")];
    let del = straced_injecting(&node, &node.conf("1.0.0"), &env, &injects);
    let t0 = Instant::now();
    while sh(&["ip", "-n", &node.name, "link", "show"]).contains(&v) {
        assert!(t0.elapsed() < Duration::from_secs(30), "the DEL never removed the veth");
        std::thread::sleep(Duration::from_millis(50));
    }
    the_next_pod_outlives_the_del(&mut node, del, &a);
}

/// An ADD stalled past the grace after podipd's answer while podipd restarts and the lock
/// directory is removed (so the new podipd cannot see the ADD's lock, and releases the address
/// as unwired); the ADD then wires its pod. The host routes the address to that pod, so the
/// sweep adopts it (`host:<veth>`) and the next pod gets another; the pod keeps its veth and
/// rules. Before, the sweep removed the veth and the rules as held by nobody, and gave the
/// address to the next pod.
#[test]
fn a_pod_wired_with_an_address_podipd_released_is_adopted_not_torn_down() {
    if !privileged() {
        return;
    }
    let (mut node, n1, add, a) = a_stalled_add("tj");
    node.kill_daemon();
    remove_lock_dir(&node.socket.parent().unwrap().join("locks"));
    node.start_daemon();
    let out = add.wait_with_output().unwrap();
    let r1: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "{r1}");
    assert_eq!(addr_of(&r1), a);
    let key = protocol::lockfile::recovered_key(&veth(&r1));
    let t0 = Instant::now();
    while held(&node.socket).get(&key) != Some(&a) {
        assert!(t0.elapsed() < Duration::from_secs(10), "{a} never adopted: {:?}\n{}", held(&node.socket), node.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(node.log().contains(&format!("recovered {a} of veth {}", veth(&r1))), "{}", node.log());
    let p2 = node.pod(2);
    assert_ne!(addr_of(&node.add("c2", &p2)), a);
    assert!(!rules_of(&node, &a).is_empty(), "the pod lost its rules");
    let routes = sh(&["ip", "-n", &node.name, "route", "show", &a]);
    assert!(routes.contains(&format!("dev {}", veth(&r1))), "the pod lost its route: {routes}");
    // Its DEL (its namespace holds the address) tears it down and releases it.
    assert_eq!(node.cni(&env_of("DEL", "c1", &n1), &node.conf("1.0.0")).0, 0);
    assert!(!held(&node.socket).contains_key(&key));
    assert!(rules_of(&node, &a).is_empty());
}

/// A DEL that comes after the pod's namespace (and so its veth and route) went: podipd removes
/// the address's rules as it releases it, under its pool lock and only while the attachment
/// still holds it. A second pod's DEL of that kind, held 6 s after podipd's answer while podipd
/// restarts without its checkpoint and the next pod is given the address and wired, leaves that
/// pod's veth and rules alone: the host routes the address over a veth its namespace does not
/// hold the address behind. Before, the DEL took that veth for its own under another name and
/// removed it with the rules.
#[test]
fn a_del_after_the_route_went_leaves_the_rules_to_podipd() {
    if !privileged() {
        return;
    }
    let mut node = Node::with("tk", &[("PODIP_WIRING_GRACE", "30"), ("IP_COOLDOWN_PERIOD", "0")]);
    wait_for(&node.socket, |st| st["total"].as_u64().unwrap_or(0) > 2, 30);
    let del_of = |cid: &'static str| [("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", cid), ("CNI_IFNAME", "eth0")];
    let (p0, p1) = (node.pod(0), node.pod(1));
    let a0 = addr_of(&node.add("c0", &p0));
    sh(&["ip", "netns", "del", &p0]);
    assert!(!rules_of(&node, &a0).is_empty());
    assert_eq!(node.cni(&del_of("c0"), &node.conf("1.0.0")).0, 0);
    assert!(rules_of(&node, &a0).is_empty(), "podipd left the rules");
    assert!(!held(&node.socket).contains_key("c0"));
    let a = addr_of(&node.add("c1", &p1));
    sh(&["ip", "netns", "del", &p1]);
    let del =
        straced_injecting(&node, &node.conf("1.0.0"), &del_of("c1"), &[("connect", "delay_enter=6000000:when=2")]);
    std::thread::sleep(Duration::from_millis(500));
    the_next_pod_outlives_the_del(&mut node, del, &a);
}

/// podipd restarts without its checkpoint while c1's DEL (`del`, of address `a`) is held, and
/// the next pod, c2, is given an address and wired: once the DEL is done, c2's rules are as
/// they were and CHECK passes.
fn the_next_pod_outlives_the_del(node: &mut Node, mut del: std::process::Child, a: &str) {
    node.kill_daemon();
    std::fs::remove_file(node.dir.join("state/ipam.json")).unwrap();
    node.start_daemon();
    let p2 = node.pod(2);
    let r2 = node.add("c2", &p2);
    assert!(del.try_wait().unwrap().is_none(), "the DEL finished early: the window was missed");
    let rules = rules_of(node, &addr_of(&r2));
    assert!(!rules.is_empty());
    let out = del.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(rules_of(node, &addr_of(&r2)), rules, "c1's DEL removed the rules of {} (c1 had {a})", addr_of(&r2));
    let n2 = format!("/var/run/netns/{p2}");
    assert_eq!(node.cni(&env_of("CHECK", "c2", &n2), &node.conf("1.1.0")).0, 0);
}

/// An IPv6 pod wired with an address podipd released (its ADD stalled past the grace while
/// podipd restarted and the lock directory went): the sweep adopts it whole, its IPv4 egress
/// veth too. Before, the sweep adopted its veth and removed its egress veth in the same pass.
#[test]
fn an_adopted_ipv6_pod_keeps_its_egress_veth() {
    if !privileged() {
        return;
    }
    let mut node = Node::with(
        "tl",
        &[("PODIP_WIRING_GRACE", "2"), ("IP_COOLDOWN_PERIOD", "0"), ("ENABLE_IPv6", "true"), ("ENABLE_IPv4", "false")],
    );
    wait_for(&node.socket, |st| st["total"].as_u64().unwrap_or(0) > 1, 30);
    let n1 = format!("/var/run/netns/{}", node.pod(1));
    // Held 6 s before it changes anything on the host (its first netlink connect, after
    // podipd's answer).
    let add = held_plugin(&node, &env_of("ADD", "c1", &n1), "connect", 6_000_000, 2);
    let t0 = Instant::now();
    let a = loop {
        if let Some(a) = held(&node.socket).get("c1") {
            break a.clone();
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "c1's ADD never got an address");
        std::thread::sleep(Duration::from_millis(50));
    };
    node.kill_daemon();
    remove_lock_dir(&node.socket.parent().unwrap().join("locks"));
    node.start_daemon();
    let out = add.wait_with_output().unwrap();
    let r1: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "{r1}");
    let key = protocol::lockfile::recovered_key(&veth(&r1));
    let t0 = Instant::now();
    while held(&node.socket).get(&key) != Some(&a) {
        assert!(t0.elapsed() < Duration::from_secs(10), "{a} never adopted: {:?}\n{}", held(&node.socket), node.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    // Two more sweeps.
    std::thread::sleep(Duration::from_secs(3));
    let egress = r1["interfaces"][0]["name"].as_str().map(datapath::egress_veth_name).unwrap();
    let links = sh(&["ip", "-n", &node.name, "link", "show"]);
    assert!(links.contains(&egress), "the adopted pod lost its egress veth {egress}: {}", node.log());
    let inside = sh(&["ip", "-n", &n1.replace("/var/run/netns/", ""), "-4", "addr", "show"]);
    assert!(inside.contains("169.254.172."), "the pod lost its IPv4 egress address: {inside}");
}

/// GC of an attachment whose veth was named with an earlier prefix (podipd restarted with
/// another): no namespace proves the veth the host routes its address over to be the
/// attachment's, but podipd, asked again once the route is seen, still holds the address for
/// it, so GC tears that veth and its rules down before the address goes. Before, GC took the
/// route for another pod's, left the pod wired and released its address, and every ADD given
/// it failed.
#[test]
fn gc_tears_down_an_attachments_veth_named_with_an_earlier_prefix() {
    if !privileged() {
        return;
    }
    let mut node = Node::with("tm", &[("IP_COOLDOWN_PERIOD", "0")]);
    let p1 = node.pod(1);
    let r1 = node.add("gone", &p1);
    let (a, v) = (addr_of(&r1), veth(&r1));
    node.kill_daemon();
    node.start_daemon_with(&[("AWS_VPC_K8S_CNI_VETHPREFIX", "abc")]);
    let conf = format!(
        r#"{{"cniVersion":"1.1.0","name":"podip","type":"podip-cni","socket":"{}","cni.dev/valid-attachments":[]}}"#,
        node.socket.display()
    );
    let (code, out) = node.cni(&[("CNI_COMMAND", "GC"), ("CNI_PATH", "/usr/lib/cni")], &conf);
    assert_eq!(code, 0, "{out}");
    assert!(veth_released(&node.name, &v), "GC left {a} routed over {v}: {}", all_routes(&node));
    assert!(rules_of(&node, &a).is_empty());
    assert!(held(&node.socket).is_empty());
}
