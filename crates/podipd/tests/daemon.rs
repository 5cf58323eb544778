//! podipd end to end on the simulated-VPC service (no privileges needed): crash safety under
//! SIGKILL, concurrent ADDs, cooldowns across restarts, and bad configuration.
#![allow(clippy::disallowed_methods)] // A harness against real processes: it waits in wall time.

mod common;

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
    let instance = ipam::addr::InstanceId(st["instance"].as_str().unwrap().to_string());
    assert_eq!(instance, w.instance);
    let truth: HashSet<String> =
        w.ep.vpc()
            .describe_enis_where(|e| e.attachment.as_ref().is_some_and(|(i, _)| *i == instance))
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

/// `n` pods added at once, each retrying while the pool refills: every one gets its own address.
fn adds_at_once(sock: &std::path::Path, n: usize) {
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let sock = sock.to_path_buf();
            std::thread::spawn(move || add(&sock, &format!("p{i}")))
        })
        .collect();
    let addrs: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let distinct: HashSet<&String> = addrs.iter().collect();
    assert_eq!(distinct.len(), n, "{addrs:?}");
}

/// podipd's default pool policy (adaptive): no warm targets, a burst of pods that all start
/// (each refused one wakes the pool-check loop at once), and a pool that ends at what its pods
/// hold plus a young node's burst reserve (half an ENI), not a whole spare ENI over it.
#[test]
fn the_adaptive_default_starts_a_burst_of_pods_and_holds_no_spare_eni() {
    // c5.4xlarge: 8 ENIs x 29 secondary addresses.
    let mut w = World::of_type("adaptive", "c5.4xlarge", cloud::sim::SimParams { seed: 3, ..Default::default() });
    w.start(&[("PODIP_POOL_POLICY", ""), ("WARM_ENI_TARGET", "")]);
    let sock = w.sock();
    adds_at_once(&sock, 20);
    // The VPC CNI's default keeps a whole ENI's 29 spare; the young adaptive pool its burst
    // reserve, half an ENI's (14), and a refill's margin.
    std::thread::sleep(std::time::Duration::from_secs(6));
    let st = introspect(&sock);
    let (total, assigned) = (st["total"].as_u64().unwrap(), st["assigned"].as_u64().unwrap());
    assert_eq!(assigned, 20, "{st}");
    assert!(total - assigned < 20, "{} spare addresses: {st}", total - assigned);
}

#[test]
fn sixty_four_concurrent_adds_get_sixty_four_addresses() {
    // c5.4xlarge: 8 ENIs x 30 addresses, max pods 234.
    let mut w = World::of_type("concurrent", "c5.4xlarge", cloud::sim::SimParams { seed: 3, ..Default::default() });
    w.start(&[("WARM_IP_TARGET", "64")]);
    let sock = w.sock();
    adds_at_once(&sock, 64);
}

#[test]
fn bad_configuration_exits_2_naming_every_value() {
    let out = Command::new(env!("CARGO_BIN_EXE_podipd"))
        .env("WARM_IP_TARGET", "lots")
        .env("ENABLE_IPv6", "perhaps")
        .env("PODIP_CLOUD", "sim:/run/podip/vpc.sock")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for n in [
        "WARM_IP_TARGET=\"lots\"",
        "ENABLE_IPv6=\"perhaps\"",
        "PODIP_CLOUD=\"sim:/run/podip/vpc.sock\": not supported: removed",
    ] {
        assert!(err.contains(n), "{err}");
    }
}

#[test]
fn aws_node_settings_podipd_cannot_honour_are_refused_by_name() {
    // Before, ENABLE_POD_ENI=true from an aws-node manifest was silently ignored.
    let out = Command::new(env!("CARGO_BIN_EXE_podipd"))
        .env("ENABLE_POD_ENI", "true")
        .env("ENABLE_MULTI_NIC", "false")
        .env("WARM_IP_TARGETS", "3")
        .env("AWS_VPC_K8S_CNI_LOGLEVEL", "DEBUG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ENABLE_POD_ENI=\"true\": not supported: security groups for pods"), "{err}");
    assert!(err.contains("WARM_IP_TARGETS=\"3\": not an aws-node setting"), "{err}");
    assert!(!err.contains("ENABLE_MULTI_NIC") && !err.contains("LOGLEVEL"), "{err}");
}

/// Sorted ADD latencies of `n` concurrent ADDs.
fn concurrent_adds(sock: &std::path::Path, tag: &str, n: usize) -> Vec<Duration> {
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let sock = sock.to_path_buf();
            let cid = format!("{tag}{i}");
            std::thread::spawn(move || {
                let t0 = Instant::now();
                let r = request(&sock, &attach("add", &cid)).unwrap();
                assert!(r["ok"]["addr"].is_string(), "{r}");
                t0.elapsed()
            })
        })
        .collect();
    let mut d: Vec<Duration> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    d.sort();
    d
}

#[test]
fn adds_do_not_wait_for_a_slow_or_hung_cloud_while_the_pool_has_addresses() {
    // c5.9xlarge: 8 ENIs x 30 addresses, max pods 234.
    let mut w = World::of_type("slowcloud", "c5.9xlarge", cloud::sim::SimParams { seed: 3, ..Default::default() });
    w.start(&[("WARM_IP_TARGET", "200")]);
    let t0 = Instant::now();
    while introspect(&w.sock())["total"].as_u64().unwrap_or(0) < 200 {
        assert!(t0.elapsed() < Duration::from_secs(180), "the pool never filled: {}", introspect(&w.sock()));
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("pool of 200 in {:?}", t0.elapsed());
    let fast = concurrent_adds(&w.sock(), "fast", 64);
    // EC2-like latencies (assign 0.2-1 s, ENI 2-10 s), then a cloud that does not answer
    // (every call runs into podipd's 10 s timeout): the pool refills in the background.
    w.set_cloud_latency(1.0);
    std::thread::sleep(Duration::from_millis(5200));
    let slow = concurrent_adds(&w.sock(), "slow", 64);
    w.set_cloud_latency(1e5);
    std::thread::sleep(Duration::from_millis(5200));
    let hung = concurrent_adds(&w.sock(), "hung", 64);
    let p99 = |d: &[Duration]| d[d.len() * 99 / 100 - 1];
    eprintln!("ADD p99: cloud at once {:?}, EC2-like {:?}, hung {:?}", p99(&fast), p99(&slow), p99(&hung));
    for d in [&slow, &hung] {
        assert!(p99(d) < Duration::from_millis(500), "an ADD waited for the cloud: {d:?}");
    }
    let status = request(&w.sock(), &serde_json::json!({"v": 1, "op": "status"})).unwrap();
    assert_eq!(status["ok"]["readiness"], "ready", "{status}");
    w.set_cloud_latency(0.0);
}

#[test]
fn podipd_waits_for_a_cloud_that_is_not_there_yet() {
    let mut w = World::new("latecloud");
    // Neither EC2 nor the metadata service answers yet.
    w.ep.stop();
    let mut c = w.command(&[]);
    c.stderr(std::process::Stdio::piped());
    w.daemon = Some(c.spawn().unwrap());
    std::thread::sleep(Duration::from_millis(1500));
    assert!(w.daemon.as_mut().unwrap().try_wait().unwrap().is_none(), "podipd gave up on the cloud");
    w.ep.restart().unwrap();
    add(&w.sock(), "first");
}

/// The secondary addresses of every ENI in an introspection.
fn pool_of(st: &Value) -> Vec<String> {
    st["enis"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["secondary_ips"].as_array().unwrap().clone())
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_restart_while_the_metadata_is_stale_never_brings_back_a_released_address() {
    // The VPC CNI's #3887: ipamd released an address, restarted within the metadata service's
    // lag, read the address back from the stale metadata and gave it to a pod while EC2 had
    // given it to another node. podipd reads the node's ENIs from EC2.
    let params = cloud::sim::SimParams { seed: 3, imds_lag: Duration::from_secs(15), ..Default::default() };
    let mut w = World::with("imdslag", params);
    let cfg = [("WARM_IP_TARGET", "2"), ("WARM_ENI_TARGET", "0"), ("IP_COOLDOWN_PERIOD", "0")];
    w.start(&cfg);
    let sock = w.sock();
    let pods: Vec<String> = (0..6).map(|i| add(&sock, &format!("burst{i}"))).collect();
    // Older than the lag: the metadata shows them.
    std::thread::sleep(Duration::from_secs(16));
    for i in 0..6 {
        request(&sock, &attach("del", &format!("burst{i}"))).unwrap();
    }
    // The pool shrinks back to its warm target: addresses go back to EC2.
    let t0 = Instant::now();
    let released: Vec<String> = loop {
        let st = introspect(&sock);
        let held: HashSet<String> = pool_of(&st).into_iter().collect();
        let gone: Vec<String> = pods.iter().filter(|p| !held.contains(*p)).cloned().collect();
        if !gone.is_empty() && st["in_flight"] == 0 {
            break gone;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "the pool never shrank: {st}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let instance = introspect(&sock)["instance"].as_str().unwrap().to_string();
    let stale = w.ep.vpc().metadata_enis(&instance.as_str().into());
    let shown: Vec<String> = stale.iter().flat_map(|e| e.secondary_ips.iter().map(ToString::to_string)).collect();
    assert!(released.iter().all(|r| shown.contains(r)), "the metadata still shows {released:?}: {shown:?}");
    // Restart within the lag.
    w.kill();
    w.start(&cfg);
    let st = introspect(&sock);
    let pool = pool_of(&st);
    for r in &released {
        assert!(!pool.contains(r), "{r}, released to EC2, is back in the pool: {st}");
    }
    for i in 0..6 {
        let a = add(&sock, &format!("after{i}"));
        assert!(!released.contains(&a), "{a} was handed out after EC2 took it back");
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

#[test]
fn status_fails_while_the_cloud_will_not_grow_an_empty_pool_and_does_not_flap() {
    // Before, any call that worked (the periodic describe) reset the count, and STATUS went
    // between ready and failed while no pod could ever get an address.
    let mut w = World::new("refused");
    w.refuse_growth.store(true, std::sync::atomic::Ordering::Relaxed);
    w.start(&[("PODIP_RECONCILE_SECONDS", "10")]);
    let status = |w: &World| request(&w.sock(), &serde_json::json!({"v": 1, "op": "status"})).unwrap()["ok"].clone();
    let t0 = Instant::now();
    while status(&w)["readiness"] != "cloud_down" {
        assert!(t0.elapsed() < Duration::from_secs(60), "STATUS never failed: {}", status(&w));
        std::thread::sleep(Duration::from_millis(200));
    }
    // Two periodic reconciles (describes that work) later, it still fails.
    let t1 = Instant::now();
    while t1.elapsed() < Duration::from_secs(25) {
        let s = status(&w);
        assert_eq!(s["readiness"], "cloud_down", "{s}");
        std::thread::sleep(Duration::from_millis(500));
    }
    // The permission comes back: the pool grows and STATUS is ready again.
    w.refuse_growth.store(false, std::sync::atomic::Ordering::Relaxed);
    let t2 = Instant::now();
    while status(&w)["readiness"] != "ready" || status(&w)["available"] == 0 {
        assert!(t2.elapsed() < Duration::from_secs(240), "never ready again: {}", status(&w));
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn an_unreadable_aws_node_checkpoint_hands_none_of_its_addresses_out() {
    let mut w = World::new("badimport");
    w.start(&[]);
    let t0 = Instant::now();
    let old = loop {
        let st = introspect(&w.sock());
        if st["total"].as_u64().unwrap_or(0) >= 6 {
            break pool_of(&st);
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "the pool never filled: {st}");
        std::thread::sleep(Duration::from_millis(100));
    };
    w.kill();
    std::fs::remove_file(w.dir.join("state/ipam.json")).unwrap();
    // aws-node's pods hold some of these addresses, but its file was cut short.
    let aws_node = w.dir.join("aws-node.json");
    let full = format!(
        r#"{{"version":"vpc-cni-ipam/1","allocations":[{{"networkName":"podip","containerID":"old0","ifName":"eth0","ipv4":"{}"}}]}}"#,
        old[0]
    );
    std::fs::write(&aws_node, &full[..full.len() / 2]).unwrap();
    w.start(&[("PODIP_IMPORT_CHECKPOINT", aws_node.to_str().unwrap())]);
    for n in 0..4 {
        let a = add(&w.sock(), &format!("new{n}"));
        assert!(!old.contains(&a), "{a} may be held by one of aws-node's pods");
    }
}

#[test]
fn the_daemonset_helpers_install_the_plugin_probe_health_and_the_conflist_appears_once_serving() {
    let mut w = World::new("helpers");
    // The runtime's configuration directory does not exist yet: podipd keeps trying.
    let conf = w.dir.join("net.d/10-podip.conflist");
    let sock = w.sock();
    let health = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_podipd"))
            .arg("health")
            .args(extra)
            .env("PODIP_SOCKET", &sock)
            .output()
            .unwrap()
    };
    // Nothing serves yet: both probes fail, and there is no network configuration.
    assert_eq!(health(&[]).status.code(), Some(1));
    assert_eq!(health(&["--live"]).status.code(), Some(1));
    w.start(&[("PODIP_CNI_CONFLIST", conf.to_str().unwrap())]);
    let conf_arg = ["--conflist", conf.to_str().unwrap()];
    assert_eq!(health(&conf_arg).status.code(), Some(1), "not ready while the conflist is not written");
    std::fs::create_dir_all(conf.parent().unwrap()).unwrap();
    let t0 = Instant::now();
    while !conf.exists() {
        assert!(t0.elapsed() < Duration::from_secs(10), "no conflist");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(health(&conf_arg).status.code(), Some(0));
    // A second podipd for the same instance, with a state directory of its own, is refused.
    let other = w.dir.join("other");
    let out = w
        .command(&[
            ("PODIP_SOCKET", other.join("podipd.sock").to_str().unwrap()),
            ("PODIP_CHECKPOINT", other.join("state/ipam.json").to_str().unwrap()),
        ])
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("@podipd-{}", w.instance.0)), "{err}");
    let list: Value = serde_json::from_str(&std::fs::read_to_string(&conf).unwrap()).unwrap();
    assert_eq!(list["plugins"][0]["socket"], w.sock().to_str().unwrap());
    let out = health(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(health(&["--live"]).status.code(), Some(0));
    w.kill();
    assert_eq!(health(&["--live"]).status.code(), Some(1), "a dead daemon is not alive");

    // The init container's step: the plugin lands whole, executable, under its name.
    let bin = w.dir.join("opt-cni-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let plugin = w.dir.join("podip-cni-source");
    std::fs::write(&plugin, b"\x7fELF not really").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_podipd"))
        .args(["install-cni", "--to", bin.to_str().unwrap(), "--from", plugin.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let installed = bin.join("podip-cni");
    assert_eq!(std::fs::read(&installed).unwrap(), b"\x7fELF not really");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&installed).unwrap().permissions().mode() & 0o777, 0o755);
    assert_eq!(std::fs::read_dir(&bin).unwrap().count(), 1, "no temporary file left");
    let out = Command::new(env!("CARGO_BIN_EXE_podipd"))
        .args(["install-cni", "--to", "/nonexistent/dir", "--from", plugin.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/dir"));
}

/// A DEL that names the address its teardown found releases only that one: the attachment's
/// address, if it holds another (an ADD that came after that teardown), stays held. A DEL that
/// names none (an older plugin) releases whatever the attachment holds.
#[test]
fn a_del_releases_only_the_address_it_names() {
    let mut w = World::new("relonly");
    w.start(&[]);
    let sock = w.sock();
    let (a, b) = (add(&sock, "c1"), add(&sock, "c2"));
    let mut del = attach("del", "c1");
    del["release_only"] = Value::from(b.clone());
    let r = request(&sock, &del).unwrap();
    assert_eq!((r["ok"]["kind"].as_str(), r["ok"]["addr"].as_str()), (Some("released"), None), "{r}");
    let r = request(&sock, &attach("check", "c1")).unwrap();
    assert_eq!(r["ok"]["addr"].as_str(), Some(a.as_str()), "c1 keeps {a}: {r}");
    // The unspecified address (a teardown that found none) releases nothing.
    del["release_only"] = Value::from("0.0.0.0");
    let r = request(&sock, &del).unwrap();
    assert_eq!(r["ok"]["addr"], Value::Null, "{r}");
    assert_eq!(request(&sock, &attach("check", "c1")).unwrap()["ok"]["addr"].as_str(), Some(a.as_str()));
    del["release_only"] = Value::from(a.clone());
    let r = request(&sock, &del).unwrap();
    assert_eq!(r["ok"]["addr"].as_str(), Some(a.as_str()), "{r}");
    let r = request(&sock, &attach("del", "c2")).unwrap();
    assert_eq!(r["ok"]["addr"].as_str(), Some(b.as_str()), "{r}");
    let st = introspect(&sock);
    assert_eq!((st["assigned"].as_u64(), st["cooling"].as_u64()), (Some(0), Some(2)), "{st}");
}

/// On an IPv6 node, STATUS counts the pods that can still start: each needs one of the node's
/// 1,021 egress IPv4 addresses too, however many IPv6 addresses the /80 has.
#[test]
fn status_on_an_ipv6_node_counts_the_egress_addresses_left() {
    let mut w = World::ipv6("v6status");
    w.start(&[("ENABLE_IPv6", "true"), ("ENABLE_IPv4", "false")]);
    let sock = w.sock();
    let available = || {
        let r = request(&sock, &serde_json::json!({"v": 1, "op": "status"})).unwrap();
        r["ok"]["available"].as_u64().unwrap_or_else(|| panic!("{r}"))
    };
    let t0 = Instant::now();
    while available() == 0 {
        assert!(t0.elapsed() < Duration::from_secs(20), "no prefix came");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(available(), 1021);
    for i in 0..21 {
        assert!(add(&sock, &format!("v{i}")).contains(':'));
    }
    assert_eq!(available(), 1000);
}

/// A restarted podipd goes on with what its adaptive policy learned of the node (kept in its
/// checkpoint), instead of taking the node for a new one: the node's age carries over, the time
/// it was down included.
#[test]
fn a_restarted_podipd_is_not_a_new_node_to_its_adaptive_policy() {
    let mut w = World::new("memory");
    let adaptive = [("PODIP_POOL_POLICY", "adaptive"), ("WARM_ENI_TARGET", "")];
    w.start(&adaptive);
    let sock = w.sock();
    add(&sock, "c1");
    let pool = |w: &World| {
        let text = std::fs::read_to_string(w.dir.join("state/ipam.json")).unwrap();
        let cp: Value = serde_json::from_str(&text).unwrap();
        cp["pool"].clone()
    };
    let before = pool(&w);
    assert!(before["ageMs"].is_u64() && before["firstStartAgoMs"].is_u64(), "{before}");
    std::thread::sleep(Duration::from_millis(1500));
    w.kill();
    w.start(&adaptive);
    add(&sock, "c2");
    let after = pool(&w);
    let age = |p: &Value| p["ageMs"].as_u64().unwrap();
    assert!(age(&after) >= age(&before) + 1500, "the node's age went on: {before} then {after}");
    assert!(after["firstStartAgoMs"].as_u64() >= Some(1500), "its first pod is not the restart's: {after}");
}
