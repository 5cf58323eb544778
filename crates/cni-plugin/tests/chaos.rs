//! Chaos on one node (root, in namespaces this test makes): workers run ADD and DEL through the
//! real plugin for their pods, as a runtime does (a new container id per sandbox, DEL until it
//! succeeds, a failed ADD cleaned up by DEL), while podipd is killed with SIGKILL every 0.2 to
//! 2 s and restarted, a second podipd is started now and then, and the checkpoint is corrupted
//! once. At the end it prints kills, ADDs, DELs, duplicates, lost acknowledged assignments,
//! leaked rules, routes and veths, and whether the daemon's view equals the simulated VPC's;
//! duplicates, losses and leaks must be 0 and the views equal.
#![allow(clippy::disallowed_methods)] // Drives real processes: waits in wall time.

mod common;

use common::{Node, env_of, introspect, privileged, sh, wait_for};
use ipam::rng::SeededRng;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PODS: usize = 12;
const WORKERS: usize = 3;
const RUN: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Tally {
    adds: AtomicU64,
    adds_failed: AtomicU64,
    dels: AtomicU64,
    duplicates: AtomicU64,
    kills: AtomicU64,
    second_refused: AtomicU64,
}

/// A pod that is up: its container id and the address its ADD acknowledged.
type Up = BTreeMap<usize, (String, String)>;

fn del_until_done(node: &Node, cid: &str, netns: &str, tally: &Tally) {
    let t0 = Instant::now();
    loop {
        let (code, v) = node.cni(&env_of("DEL", cid, netns), &node.conf("1.0.0"));
        if code == 0 {
            tally.dels.fetch_add(1, Ordering::Relaxed);
            return;
        }
        assert_eq!(v["code"], 11, "DEL {cid}: only try-again is expected: {v}");
        assert!(t0.elapsed() < Duration::from_secs(60), "DEL {cid} never succeeded: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn worker(node: &Node, pods: &[(usize, String)], seed: u64, up: &Mutex<Up>, tally: &Tally, stop: &AtomicBool) {
    let mut rng = SeededRng::new(seed);
    let mut sandbox = 0;
    while !stop.load(Ordering::Relaxed) {
        let (i, ns) = &pods[rng.below(pods.len() as u64) as usize];
        let netns = format!("/var/run/netns/{ns}");
        let current = up.lock().unwrap().get(i).cloned();
        match current {
            None => {
                sandbox += 1;
                let cid = format!("k{i}s{sandbox}");
                let (code, v) = node.cni(&env_of("ADD", &cid, &netns), &node.conf("1.0.0"));
                if code == 0 {
                    tally.adds.fetch_add(1, Ordering::Relaxed);
                    let addr = common::addr_of(&v);
                    let mut u = up.lock().unwrap();
                    if u.values().any(|(_, a)| *a == addr) {
                        eprintln!("DUPLICATE {addr} for {cid}: {u:?}");
                        tally.duplicates.fetch_add(1, Ordering::Relaxed);
                    }
                    u.insert(*i, (cid, addr));
                } else {
                    tally.adds_failed.fetch_add(1, Ordering::Relaxed);
                    // The runtime cleans up a failed sandbox before it tries again.
                    del_until_done(node, &cid, &netns, tally);
                }
            }
            Some((cid, _)) => {
                del_until_done(node, &cid, &netns, tally);
                up.lock().unwrap().remove(i);
            }
        }
    }
}

fn leaks(node: &Node, held: &BTreeSet<String>) -> (usize, usize, usize) {
    let rules = sh(&["ip", "-n", &node.name, "rule", "show"]);
    let rules = rules
        .lines()
        .filter(|l| l.starts_with("512:") || l.starts_with("1536:"))
        .filter(|l| !held.iter().any(|a| l.split_whitespace().any(|w| w == a)))
        .count();
    let routes = sh(&["ip", "-n", &node.name, "route", "show"]);
    let routes = routes
        .lines()
        .filter(|l| l.contains(" dev eni"))
        .filter(|l| !held.contains(l.split_whitespace().next().unwrap_or("")))
        .count();
    // A veth DEL took down (no route over it; it goes with its pod's namespace) carries nothing.
    let links = sh(&["ip", "-n", &node.name, "-o", "link", "show"]);
    let veths = links
        .lines()
        .filter_map(|l| l.split(": ").nth(1).and_then(|n| n.split('@').next()))
        .filter(|n| n.starts_with("eni") && !common::veth_released(&node.name, n))
        .count();
    (rules, routes, veths.saturating_sub(held.len()))
}

#[test]
fn chaos_loses_nothing_doubles_nothing_and_leaves_nothing() {
    if !privileged() {
        return;
    }
    let mut node = Node::with("chaos", &[("PODIP_WIRING_GRACE", "3"), ("IP_COOLDOWN_PERIOD", "1")]);
    let pods: Vec<(usize, String)> = (0..PODS).map(|i| (i, node.pod(i))).collect();
    let node = Arc::new(node);
    let up = Arc::new(Mutex::new(Up::new()));
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (node, up, tally, stop) = (Arc::clone(&node), Arc::clone(&up), Arc::clone(&tally), Arc::clone(&stop));
            let mine: Vec<(usize, String)> = pods.iter().filter(|(i, _)| i % WORKERS == w).cloned().collect();
            std::thread::spawn(move || worker(&node, &mine, 100 + w as u64, &up, &tally, &stop))
        })
        .collect();
    // The killer.
    let mut rng = SeededRng::new(7);
    let t0 = Instant::now();
    let mut corrupted = false;
    while t0.elapsed() < RUN {
        std::thread::sleep(Duration::from_millis(200 + rng.below(1800)));
        node.kill_daemon();
        tally.kills.fetch_add(1, Ordering::Relaxed);
        if !corrupted && tally.kills.load(Ordering::Relaxed) == 4 {
            std::fs::write(node.dir.join("state/ipam.json"), b"{\"version\":\"podip-ipam/2\",\"allo").unwrap();
            corrupted = true;
        }
        node.start_daemon();
        if rng.below(3) == 0 {
            // An overlapping rolling update: a second daemon for the same node.
            let before = node.log().len();
            let out = node.daemon_command().output().unwrap();
            assert_ne!(out.status.code(), Some(0));
            let said = node.log()[before..].to_string();
            assert!(said.contains("another podipd"), "the second daemon did not say who holds the node: {said}");
            tally.second_refused.fetch_add(1, Ordering::Relaxed);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    // Every acknowledged pod still holds its address, in the daemon and in its namespace.
    let up = up.lock().unwrap().clone();
    let st = introspect(&node.socket);
    let held: Vec<String> =
        st["pods"].as_array().unwrap().iter().map(|p| p["ip"].as_str().unwrap().to_string()).collect();
    let distinct: BTreeSet<String> = held.iter().cloned().collect();
    assert_eq!(distinct.len(), held.len(), "an address held twice: {st}");
    let mut lost = 0;
    for (i, (cid, a)) in &up {
        let inside = sh(&["ip", "-n", &pods[*i].1, "-o", "addr", "show", "dev", "eth0"]);
        if !distinct.contains(a) || !inside.contains(&format!("{a}/32")) {
            eprintln!("LOST {cid} {a}: inside {inside:?}");
            lost += 1;
        }
    }
    let (rules_live, routes_live, veths_live) = leaks(&node, &distinct);
    // Everything goes; once cooldowns pass, nothing is held and nothing is left on the host.
    for (i, (cid, _)) in &up {
        del_until_done(&node, cid, &format!("/var/run/netns/{}", pods[*i].1), &tally);
    }
    let st = wait_for(&node.socket, |st| st["assigned"] == 0 && st["in_flight"] == 0, 30);
    let (rules, routes, veths) = leaks(&node, &BTreeSet::new());
    // The daemon's view equals the simulated VPC's.
    let instance = ipam::addr::InstanceId(st["instance"].as_str().unwrap().to_string());
    assert_eq!(instance, node.instance);
    let truth: BTreeSet<String> = node
        .ep
        .vpc()
        .describe_enis_where(|e| e.attachment.as_ref().is_some_and(|(i, _)| *i == instance))
        .unwrap()
        .iter()
        .flat_map(|e| e.secondary_ips.iter().map(|ip| ip.to_string()))
        .collect();
    let mine: BTreeSet<String> = st["enis"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["secondary_ips"].as_array().unwrap().iter().map(|ip| ip.as_str().unwrap().to_string()))
        .collect();
    let t = &tally;
    println!(
        "chaos: {} s, kills {}, second daemons refused {}, checkpoint corrupted {}, ADDs {} (and {} refused: podipd down or the pool empty), DELs {}, duplicates {}, \
         lost acknowledged {}, leaked during the run: rules {rules_live} routes {routes_live} veths {veths_live}, \
         leaked at the end: rules {rules} routes {routes} veths {veths}, daemon view = VPC view: {}",
        RUN.as_secs(),
        t.kills.load(Ordering::Relaxed),
        t.second_refused.load(Ordering::Relaxed),
        u8::from(corrupted),
        t.adds.load(Ordering::Relaxed),
        t.adds_failed.load(Ordering::Relaxed),
        t.dels.load(Ordering::Relaxed),
        t.duplicates.load(Ordering::Relaxed),
        lost,
        truth == mine
    );
    assert_eq!(t.duplicates.load(Ordering::Relaxed), 0, "duplicates");
    assert_eq!(lost, 0, "lost acknowledged assignments");
    assert_eq!((rules_live, routes_live, veths_live), (0, 0, 0), "host objects no live pod holds");
    assert_eq!((rules, routes, veths), (0, 0, 0), "leaks at the end:\n{}", common::host_state(&node.name));
    assert_eq!(truth, mine, "the daemon's view differs from the VPC's");
    assert!(t.kills.load(Ordering::Relaxed) >= 10 && t.adds.load(Ordering::Relaxed) >= 100, "too little chaos");
}
