//! podipd end to end on the simulated-VPC service (no privileges needed): crash safety under
//! SIGKILL, concurrent ADDs, cooldowns across restarts, and bad configuration.
#![allow(clippy::disallowed_methods)] // A harness against real processes: it waits in wall time.

mod common;

use cloud::Ec2;
use cloud::remote::RemoteEc2;
use common::{World, add, attach, introspect, request};
use ipam::rng::SeededRng;
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn sigkill_at_random_moments_loses_nothing_and_doubles_nothing() {
    let mut w = World::new("crash");
    w.start(&[]);
    let sock = w.sock();
    let mut rng = SeededRng::new(11);
    let mut held: BTreeMap<String, String> = BTreeMap::new();
    let mut next = 0;
    for step in 0..200 {
        if rng.below(20) == 0 {
            // Kill with a request possibly in flight: its outcome is unknown until retried.
            if rng.below(2) == 0 {
                let cid = format!("c{next}");
                if let Ok(mut s) = UnixStream::connect(&sock) {
                    let _ = s.write_all(format!("{}\n", attach("add", &cid)).as_bytes());
                }
                w.kill();
                w.start(&[]);
                // The runtime retries the ADD; the same key gets the same address.
                let a = add(&sock, &cid);
                held.insert(cid, a);
                next += 1;
            } else {
                w.kill();
                w.start(&[]);
            }
        }
        if held.len() < 20 && (held.is_empty() || rng.below(3) > 0) {
            let cid = format!("c{next}");
            next += 1;
            let a = add(&sock, &cid);
            held.insert(cid, a);
        } else {
            let k = held.keys().nth(rng.below(held.len() as u64) as usize).unwrap().clone();
            let r = request(&sock, &attach("del", &k)).unwrap();
            assert_eq!(r["ok"]["kind"], "released", "step {step}: {r}");
            held.remove(&k);
        }
    }
    w.kill();
    w.start(&[]);
    // Every acknowledged assignment survived, with its address; no address has two pods.
    for (cid, a) in &held {
        let r = request(&sock, &attach("check", cid)).unwrap();
        assert_eq!(r["ok"]["addr"].as_str(), Some(a.as_str()), "{cid}: {r}");
    }
    let st = introspect(&sock);
    let pods = st["pods"].as_array().unwrap();
    assert_eq!(pods.len(), held.len(), "no unacknowledged assignment lingers: {st}");
    let addrs: HashSet<&str> = pods.iter().map(|p| p["ip"].as_str().unwrap()).collect();
    assert_eq!(addrs.len(), pods.len(), "an address held twice: {st}");
    // Release everything; once cooldowns pass, nothing is held and the daemon agrees with EC2.
    for cid in held.keys() {
        request(&sock, &attach("del", cid)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(1500));
    let st = introspect(&sock);
    assert_eq!((st["assigned"].as_u64(), st["cooling"].as_u64()), (Some(0), Some(0)), "{st}");
    let t0 = Instant::now();
    let st = loop {
        let st = introspect(&sock);
        if st["in_flight"].as_u64() == Some(0) || t0.elapsed() > Duration::from_secs(10) {
            break st;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut ec2 = RemoteEc2::connect(&w.vpc_sock).unwrap();
    let instance = ipam::addr::InstanceId(st["instance"].as_str().unwrap().to_string());
    let truth: HashSet<String> = ec2
        .describe_network_interfaces(&instance)
        .unwrap()
        .iter()
        .flat_map(|e| e.secondary_ips.iter().map(|ip| ip.to_string()))
        .collect();
    let mine: HashSet<String> = st["enis"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["secondary_ips"].as_array().unwrap().iter().map(|ip| ip.as_str().unwrap().to_string()))
        .collect();
    assert_eq!(truth, mine, "every address EC2 gave the node is known to the daemon");
}

#[test]
fn sixty_four_concurrent_adds_get_sixty_four_addresses() {
    let mut w = World::new("concurrent");
    // m5.xlarge: 4 ENIs x 14 addresses, max pods 58.
    w.start(&[("PODIP_INSTANCE_TYPE", "c5.4xlarge"), ("WARM_IP_TARGET", "64")]);
    let sock = w.sock();
    let threads: Vec<_> = (0..64)
        .map(|i| {
            let sock = sock.clone();
            std::thread::spawn(move || add(&sock, &format!("p{i}")))
        })
        .collect();
    let addrs: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let distinct: HashSet<&String> = addrs.iter().collect();
    assert_eq!(distinct.len(), 64, "{addrs:?}");
}

#[test]
fn bad_configuration_exits_2_naming_every_value() {
    let out = Command::new(env!("CARGO_BIN_EXE_podipd"))
        .env("WARM_IP_TARGET", "lots")
        .env("ENABLE_IPv6", "perhaps")
        .env("PODIP_INSTANCE_TYPE", "m5.lrage")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for n in ["WARM_IP_TARGET=\"lots\"", "ENABLE_IPv6=\"perhaps\"", "m5.lrage"] {
        assert!(err.contains(n), "{err}");
    }
}

#[test]
fn a_corrupt_checkpoint_is_reported_kept_and_recovered_from() {
    let mut w = World::new("corrupt");
    w.start(&[]);
    let a = add(&w.sock(), "x1");
    w.kill();
    let cp = w.dir.join("state/ipam.json");
    std::fs::write(&cp, b"{\"version\":\"podip-ipam/1\",\"allocations\":[{").unwrap();
    w.start(&[]);
    let kept = std::fs::read_dir(w.dir.join("state"))
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().contains("corrupt"));
    assert!(kept, "the corrupt file is kept aside");
    // Which pod held what is unknown: the old addresses are quarantined, never handed to a
    // second pod; a new pod gets a fresh one (the pool grows past the quarantine).
    let b = add(&w.sock(), "x2");
    assert_ne!(a, b);
    let st = introspect(&w.sock());
    assert!(st["cooling"].as_u64().unwrap() >= 1, "{st}");
}

fn http_get(addr: &str, path: &str) -> String {
    let t0 = Instant::now();
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(addr) {
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).unwrap();
            let mut body = String::new();
            std::io::Read::read_to_string(&mut s, &mut body).unwrap();
            return body;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "no metrics endpoint at {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn metrics_and_introspection_on_localhost() {
    let mut w = World::new("metrics");
    w.start(&[]);
    add(&w.sock(), "m1");
    let text = http_get(&w.metrics_addr(), "/metrics");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    for n in [
        "podip_addresses_assigned 1",
        "podip_cni_add_seconds_count",
        "podip_ec2_calls_total{call=\"assign_ips\",code=\"ok\"}",
        "podip_backoff 0",
    ] {
        assert!(text.contains(n), "{n} missing:\n{text}");
    }
    let state = http_get(&w.metrics_addr(), "/v1/state");
    let body = state.split("\r\n\r\n").nth(1).unwrap();
    let v: Value = serde_json::from_str(body).unwrap();
    assert!(v["pods"][0]["ip"].is_string(), "{v}");
    assert!(v["pods"][0].get("container_id").is_none(), "pod identities only on the owner-only socket: {v}");
    assert!(http_get(&w.metrics_addr(), "/nope").starts_with("HTTP/1.1 404"));
}

#[test]
fn custom_networking_puts_pods_in_the_pod_subnet() {
    let mut w = World::new("custom");
    w.start(&[("AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG", "true")]);
    let a = add(&w.sock(), "cn1");
    assert!(a.starts_with("100.64."), "{a}");
    let st = introspect(&w.sock());
    let enis = st["enis"].as_array().unwrap();
    assert!(
        enis[0]["primary"].as_bool().unwrap() && enis[0]["secondary_ips"].as_array().unwrap().is_empty(),
        "no pods on the primary ENI: {st}"
    );
}

#[test]
fn a_node_switched_from_aws_node_keeps_every_pods_address() {
    let mut w = World::new("import");
    w.start(&[]);
    let t0 = Instant::now();
    let st = loop {
        let st = introspect(&w.sock());
        if st["total"].as_u64().unwrap_or(0) >= 6 {
            break st;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "the pool never filled: {st}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let ips: Vec<String> =
        st["enis"][0]["secondary_ips"].as_array().unwrap().iter().take(3).map(|v| v.as_str().unwrap().into()).collect();
    // The node ran aws-node until now: its pods hold addresses aws-node recorded.
    w.kill();
    std::fs::remove_file(w.dir.join("state/ipam.json")).unwrap();
    let aws_node = w.dir.join("aws-node.json");
    let entries: Vec<Value> = ips
        .iter()
        .enumerate()
        .map(|(i, ip)| {
            serde_json::json!({"networkName": "podip", "containerID": format!("old{i}"), "ifName": "eth0",
                "ipv4": ip, "allocationTimestamp": 1_712_345_678_901_234_567u64,
                "metadata": {"k8sPodNamespace": "default", "k8sPodName": format!("web-{i}"), "interfacesCount": 1}})
        })
        .collect();
    let text = serde_json::json!({"version": "vpc-cni-ipam/1", "allocations": entries}).to_string();
    std::fs::write(&aws_node, &text).unwrap();
    w.start(&[("PODIP_IMPORT_CHECKPOINT", aws_node.to_str().unwrap())]);
    let st = introspect(&w.sock());
    let held: BTreeMap<String, String> = st["pods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["container_id"].as_str().unwrap().into(), p["ip"].as_str().unwrap().into()))
        .collect();
    for (i, ip) in ips.iter().enumerate() {
        assert_eq!(held.get(&format!("old{i}")), Some(ip), "{st}");
    }
    // New pods never get them; a repeated ADD of an old pod gets its own; DEL releases it.
    for n in 0..4 {
        let a = add(&w.sock(), &format!("new{n}"));
        assert!(!ips.contains(&a), "{a} handed out twice");
    }
    assert_eq!(add(&w.sock(), "old1"), ips[1]);
    let r = request(&w.sock(), &attach("del", "old0")).unwrap();
    assert_eq!(r["ok"]["addr"], ips[0].as_str(), "{r}");
    assert_eq!(std::fs::read_to_string(&aws_node).unwrap(), text, "aws-node's file is only read");
    // Once podipd has its own checkpoint, aws-node's is not read again.
    w.kill();
    std::fs::write(&aws_node, "not json").unwrap();
    w.start(&[("PODIP_IMPORT_CHECKPOINT", aws_node.to_str().unwrap())]);
    let st = introspect(&w.sock());
    assert_eq!(st["pods"].as_array().unwrap().len(), 2 + 4, "{st}");
}
