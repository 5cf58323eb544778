//! podip-cni end to end in network namespaces this test makes (root): a node namespace with the
//! daemon behind it, two pods that get addresses from the simulated subnet and reach each other,
//! CHECK, idempotent DEL (also without a netns) that leaves nothing behind, and the bad-input
//! table. Without root the test skips, unless REQUIRE_PRIVILEGED=1, where it fails.
#![allow(clippy::disallowed_methods)] // Drives real processes: waits in wall time.

use agent::config::DaemonConfig;
use agent::daemon::{Daemon, wall};
use cloud::remote::serve;
use cloud::sim::{SimParams, SimVpc};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

/// Skips (or fails under REQUIRE_PRIVILEGED=1) without root and iproute2.
fn privileged() -> bool {
    let required = std::env::var("REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1");
    let ok = is_root() && (Path::new("/usr/sbin/ip").exists() || Path::new("/sbin/ip").exists());
    assert!(ok || !required, "REQUIRE_PRIVILEGED=1 but not root or no iproute2");
    if !ok {
        eprintln!("skipping: needs root and iproute2");
    }
    ok
}

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Node {
    name: String,
    pods: Vec<String>,
    dir: PathBuf,
    socket: PathBuf,
}

impl Node {
    fn new(tag: &str) -> Node {
        let id = std::process::id();
        let name = format!("podip-n{tag}{id}");
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        sh(&["ip", "netns", "add", &name]);
        sh(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        sh(&["ip", "netns", "exec", &name, "sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        let dir = std::env::temp_dir().join(format!("podip-cni-{tag}-{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // The cloud: the simulated-VPC service.
        let vpc_sock = dir.join("vpc.sock");
        let mut vpc = SimVpc::new(SimParams { seed: 9, ..SimParams::default() });
        vpc.add_vpc_cidr("10.0.0.0/16".parse().unwrap()).unwrap();
        vpc.add_subnet("us-east-1a", "10.0.0.0/24".parse().unwrap()).unwrap();
        let listener = std::os::unix::net::UnixListener::bind(&vpc_sock).unwrap();
        std::thread::spawn(move || serve(listener, vpc, wall, 0.0));
        // The daemon, in this process.
        let socket = dir.join("podipd.sock");
        let vars = [
            ("PODIP_CLOUD", format!("sim:{}", vpc_sock.display())),
            ("PODIP_SOCKET", socket.display().to_string()),
            ("PODIP_CHECKPOINT", dir.join("state/ipam.json").display().to_string()),
            ("PODIP_METRICS_ADDRESS", "127.0.0.1:1".to_string()),
        ];
        let cfg = DaemonConfig::load(None, |k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())).unwrap();
        let (d, rx, ec2) = Daemon::boot(cfg, &vpc_sock).unwrap();
        let d2 = Arc::clone(&d);
        std::thread::spawn(move || d2.run_cloud(rx, ec2));
        let d3 = Arc::clone(&d);
        std::thread::spawn(move || d3.run_ticks());
        std::thread::spawn(move || d.serve());
        let t0 = Instant::now();
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(20));
        }
        Node { name, pods: Vec::new(), dir, socket }
    }

    fn pod(&mut self, n: usize) -> String {
        let name = format!("{}-p{n}", self.name);
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        sh(&["ip", "netns", "add", &name]);
        sh(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        self.pods.push(name.clone());
        name
    }

    fn conf(&self, version: &str) -> String {
        format!(
            r#"{{"cniVersion":"{version}","name":"podip","type":"podip-cni","socket":"{}"}}"#,
            self.socket.display()
        )
    }

    /// Runs the plugin inside the node namespace.
    fn cni(&self, env: &[(&str, &str)], stdin: &str) -> (i32, Value) {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/var/run/netns/{}", self.name)).arg(env!("CARGO_BIN_EXE_podip-cni"));
        c.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").env("CNI_PATH", "/opt/cni/bin");
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let v = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("stdout is not JSON: {text}"))
        };
        (out.status.code().unwrap_or(-1), v)
    }

    fn add(&self, cid: &str, pod: &str) -> Value {
        let netns = format!("/var/run/netns/{pod}");
        let env =
            [("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", cid), ("CNI_NETNS", netns.as_str()), ("CNI_IFNAME", "eth0")];
        let t0 = Instant::now();
        loop {
            let (code, v) = self.cni(&env, &self.conf("1.0.0"));
            if code == 0 {
                return v;
            }
            assert_eq!(v["code"], 11, "only try-again is expected while the pool fills: {v}");
            assert!(t0.elapsed() < Duration::from_secs(30), "no address: {v}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        for p in &self.pods {
            let _ = Command::new("ip").args(["netns", "del", p]).output();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn addr_of(result: &Value) -> String {
    result["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string()
}

#[test]
fn pods_get_addresses_reach_each_other_and_del_leaves_nothing() {
    if !privileged() {
        return;
    }
    let mut node = Node::new("a");
    let (p1, p2) = (node.pod(1), node.pod(2));
    let r1 = node.add("ctr1", &p1);
    let r2 = node.add("ctr2", &p2);
    let (a1, a2) = (addr_of(&r1), addr_of(&r2));
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
    // DEL removes the veth, the route and the rules; again, and without a netns, it still succeeds.
    assert_eq!(node.cni(&with("DEL"), &node.conf("1.0.0")).0, 0);
    let links = sh(&["ip", "-n", &node.name, "link", "show"]);
    assert!(!links.contains(&host_veth), "{links}");
    assert!(!sh(&["ip", "-n", &node.name, "rule", "show"]).contains(&a1));
    assert!(!sh(&["ip", "-n", &node.name, "route", "show"]).contains(&a1));
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
