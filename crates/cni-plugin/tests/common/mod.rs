//! Test harness shared by the privileged tests: a node namespace with the simulated VPC and the
//! daemon behind it, pod namespaces, and the plugin run inside the node namespace.
#![allow(dead_code)]

use agent::daemon::wall;
use cloud::sim::{SimParams, SimVpc};
use serde_json::Value;
use sim_endpoint::Endpoint;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

/// Skips (or fails under REQUIRE_PRIVILEGED=1) without root and iproute2.
pub fn privileged() -> bool {
    let required = std::env::var("REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1");
    let ok = is_root() && (Path::new("/usr/sbin/ip").exists() || Path::new("/sbin/ip").exists());
    assert!(ok || !required, "REQUIRE_PRIVILEGED=1 but not root or no iproute2");
    if !ok {
        eprintln!("skipping: needs root and iproute2");
    }
    ok
}

pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether the node's host veth `name` carries nothing any more: gone, or down with no route
/// over it (DEL takes it down and leaves the link to the pod namespace's teardown).
pub fn veth_released(node: &str, name: &str) -> bool {
    let out = Command::new("ip").args(["-n", node, "-o", "link", "show", "dev", name]).output().unwrap();
    if !out.status.success() {
        return true;
    }
    let link = String::from_utf8_lossy(&out.stdout).into_owned();
    let flags = link.split('<').nth(1).and_then(|f| f.split('>').next()).unwrap_or("");
    let up = flags.split(',').any(|f| f == "UP");
    // A link that vanishes meanwhile (its namespace went) carries nothing either.
    let routes = |family: &str| {
        let out = Command::new("ip").args(["-n", node, family, "route", "show", "dev", name]).output().unwrap();
        if out.status.success() { String::from_utf8_lossy(&out.stdout).into_owned() } else { String::new() }
    };
    !up && routes("-4").trim().is_empty() && routes("-6").trim().is_empty()
}

pub struct Node {
    pub name: String,
    pub pods: Vec<String>,
    pub dir: PathBuf,
    pub socket: PathBuf,
    /// The node's cloud: EC2 and its instance metadata.
    pub ep: Endpoint,
    /// The node's instance.
    pub instance: ipam::addr::InstanceId,
    vars: Vec<(String, String)>,
    daemon: std::sync::Mutex<Option<Child>>,
}

/// The plugin binary.
pub fn plugin_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_podip-cni"))
}

/// The podipd binary cargo built beside this test (the workspace's tests build every binary).
pub fn podipd_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(Path::parent).unwrap().join("podipd");
    assert!(bin.exists(), "{} is missing: build it first (cargo build -p podipd)", bin.display());
    bin
}

impl Node {
    pub fn new(tag: &str) -> Node {
        Node::with(tag, &[])
    }

    /// A node whose daemon (a podipd process) also gets `extra` settings; it programs the node
    /// namespace.
    pub fn with(tag: &str, extra: &[(&str, &str)]) -> Node {
        Node::prepared(tag, extra, |_| {})
    }

    /// [`Node::with`], `prepare` run on the node before its daemon starts.
    pub fn prepared(tag: &str, extra: &[(&str, &str)], prepare: impl FnOnce(&Node)) -> Node {
        let id = std::process::id();
        let name = format!("podip-n{tag}{id}");
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        sh(&["ip", "netns", "add", &name]);
        sh(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        // The node's primary interface, as a real node has one: secondary ENIs' tables lead out
        // through it (a test that needs it to go somewhere replaces it).
        sh(&["ip", "-n", &name, "link", "add", "vpc0", "type", "veth", "peer", "name", "vpc0-end"]);
        sh(&["ip", "-n", &name, "link", "set", "vpc0", "up"]);
        sh(&["ip", "-n", &name, "link", "set", "vpc0-end", "up"]);
        sh(&["ip", "netns", "exec", &name, "sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        sh(&["ip", "netns", "exec", &name, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
        let dir = std::env::temp_dir().join(format!("podip-cni-{tag}-{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // The cloud: the simulated VPC served as EC2 and the node's instance metadata, in this
        // process (it outlives every daemon), reached through the AWS SDK's endpoint settings.
        let mut vpc = SimVpc::new(SimParams { seed: 9, ..SimParams::default() });
        vpc.add_vpc_cidr("10.0.0.0/16".parse().unwrap()).unwrap();
        let subnet = vpc
            .add_subnet_v6("us-east-1a", "10.0.0.0/24".parse().unwrap(), Some("2600:1f18:aaaa:1::/64".parse().unwrap()))
            .unwrap();
        vpc.set_now(wall());
        let (instance, _) =
            vpc.run_instance(ipam::catalog::Catalog::embedded().get("m5.large").unwrap(), &subnet).unwrap();
        let ep = Endpoint::start(vpc, wall).unwrap();
        let socket = dir.join("podipd.sock");
        let vars = [
            ("AWS_ENDPOINT_URL_EC2", ep.url()),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", ep.imds_url(&instance)),
            ("PODIP_SOCKET", socket.display().to_string()),
            ("PODIP_CHECKPOINT", dir.join("state/ipam.json").display().to_string()),
            ("PODIP_METRICS_ADDRESS", "127.0.0.1:1".to_string()),
            ("PODIP_NODE_NETNS", format!("/var/run/netns/{name}")),
            ("PODIP_PRIMARY_IF", "vpc0".to_string()),
            // These tests drive the data path with aws-node's fixed targets (a spare ENI).
            ("PODIP_POOL_POLICY", "vpc-cni".to_string()),
        ];
        // The test's own settings win over the node's.
        let mut all: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        all.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let node =
            Node { name, pods: Vec::new(), dir, socket, ep, instance, vars: all, daemon: std::sync::Mutex::new(None) };
        prepare(&node);
        node.start_daemon();
        node
    }

    /// Starts podipd (the node's daemon) and waits for its socket.
    pub fn start_daemon(&self) {
        self.start_daemon_with(&[]);
    }

    /// Starts podipd with `extra` settings on top of the node's.
    pub fn start_daemon_with(&self, extra: &[(&str, &str)]) {
        let mut c = self.daemon_command();
        for (k, v) in extra {
            c.env(k, v);
        }
        let child = c.spawn().unwrap();
        let t0 = Instant::now();
        while std::os::unix::net::UnixStream::connect(&self.socket).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(20), "podipd did not come up: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        *self.daemon.lock().unwrap() = Some(child);
    }

    /// podipd with this node's settings, its stderr appended to the node's log.
    pub fn daemon_command(&self) -> Command {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("podipd.log")).unwrap();
        let mut c = Command::new(podipd_bin());
        c.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        for (k, v) in &self.vars {
            c.env(k, v);
        }
        c.stdout(Stdio::null()).stderr(log);
        c
    }

    /// Kills podipd with SIGKILL (only the process this node started).
    pub fn kill_daemon(&self) {
        if let Some(mut c) = self.daemon.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// What podipd wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("podipd.log")).unwrap_or_default()
    }

    /// Kills podipd and starts it again; returns what the new one reported at start.
    pub fn restart_daemon(&self) -> Vec<String> {
        self.kill_daemon();
        let before = self.log().len();
        self.start_daemon();
        self.log()[before..].lines().map(String::from).collect()
    }

    pub fn pod(&mut self, n: usize) -> String {
        let name = format!("{}-p{n}", self.name);
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        sh(&["ip", "netns", "add", &name]);
        sh(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        self.pods.push(name.clone());
        name
    }

    pub fn conf(&self, version: &str) -> String {
        format!(
            r#"{{"cniVersion":"{version}","name":"podip","type":"podip-cni","socket":"{}"}}"#,
            self.socket.display()
        )
    }

    /// Runs the plugin inside the node namespace.
    pub fn cni(&self, env: &[(&str, &str)], stdin: &str) -> (i32, Value) {
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

    pub fn add(&self, cid: &str, pod: &str) -> Value {
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
            assert!(t0.elapsed() < Duration::from_secs(30), "no address: {v}\n{}", self.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill_daemon();
        for p in &self.pods {
            let _ = Command::new("ip").args(["netns", "del", p]).output();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn addr_of(result: &Value) -> String {
    result["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string()
}

/// The daemon's introspection.
pub fn introspect(socket: &Path) -> Value {
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.write_all(b"{\"v\":1,\"op\":\"introspect\"}\n").unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(s), &mut line).unwrap();
    serde_json::from_str::<Value>(&line).unwrap()["ok"]["state"].clone()
}

/// Polls the daemon's introspection until `ok` holds, for at most `secs` seconds.
pub fn wait_for(socket: &Path, ok: impl Fn(&Value) -> bool, secs: u64) -> Value {
    let t0 = Instant::now();
    loop {
        let st = introspect(socket);
        if ok(&st) {
            return st;
        }
        assert!(t0.elapsed() < Duration::from_secs(secs), "gave up waiting: {st}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Everything of the node namespace a pod operation may change: links, rules, routes (both
/// families) and the nftables ruleset.
pub fn host_state(node: &str) -> String {
    let mut s = String::new();
    for args in [
        vec!["ip", "-n", node, "-o", "link", "show"],
        vec!["ip", "-n", node, "rule", "show"],
        vec!["ip", "-n", node, "-6", "rule", "show"],
        vec!["ip", "-n", node, "route", "show", "table", "all"],
        vec!["ip", "-n", node, "-6", "route", "show", "table", "all"],
        vec!["ip", "netns", "exec", node, "nft", "list", "ruleset"],
    ] {
        s.push_str(&sh(&args));
    }
    // Link flags and statistics that change by themselves (carrier), and the order the kernel
    // lists routes in, are not what is compared.
    // Routes the kernel adds by itself as a link comes up (IPv6 link-local) are left out too.
    let mut lines: Vec<String> = s
        .lines()
        .filter(|l| !l.contains("proto kernel"))
        .map(|l| l.split(" qdisc").next().unwrap_or(l))
        .map(|l| match (l.find('<'), l.find('>')) {
            (Some(a), Some(b)) if a < b => format!("{}{}", &l[..a], &l[b + 1..]),
            _ => l.to_string(),
        })
        .collect();
    lines.sort();
    lines.join("\n")
}

/// The plugin environment of one attachment.
pub fn env_of<'a>(cmd: &'a str, cid: &'a str, netns: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![("CNI_COMMAND", cmd), ("CNI_CONTAINERID", cid), ("CNI_NETNS", netns), ("CNI_IFNAME", "eth0")]
}

/// One request to the daemon's socket, as the plugin sends it.
pub fn request(socket: &Path, req: &Value) -> Value {
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.write_all(format!("{req}\n").as_bytes()).unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(s), &mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

/// The addresses the daemon holds, by container id.
pub fn held(socket: &Path) -> std::collections::BTreeMap<String, String> {
    introspect(socket)["pods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["container_id"].as_str().unwrap().to_string(), p["ip"].as_str().unwrap().to_string()))
        .collect()
}

/// A containerd of the test's own (its root, state and socket under a test directory).
pub struct Containerd {
    child: Child,
    dir: PathBuf,
    /// Its socket.
    pub address: PathBuf,
}

impl Containerd {
    pub fn start(dir: &Path) -> Containerd {
        let dir = dir.join("ctrd");
        std::fs::create_dir_all(&dir).unwrap();
        let address = dir.join("containerd.sock");
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{1}\"\n",
                dir.display(),
                address.display()
            ),
        )
        .unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("containerd.log")).unwrap())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        while !address.exists() {
            assert!(t0.elapsed() < Duration::from_secs(20), "containerd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Containerd { child, dir, address }
    }

    /// `ctr` against this containerd, from node namespace `node`.
    pub fn ctr(&self, node: &str, args: &[&str]) -> std::process::Output {
        Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{node}"))
            .arg("ctr")
            .arg("--address")
            .arg(&self.address)
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Stop only the containerd this test started, by its PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("umount").arg("-R").arg(self.dir.join("state")).output();
    }
}

/// Whether containerd, ctr, runc and busybox are installed (fails under REQUIRE_PRIVILEGED=1).
pub fn tools_present() -> bool {
    let have = ["containerd", "ctr", "runc"].iter().all(|t| {
        Command::new("sh").args(["-c", &format!("command -v {t}")]).output().is_ok_and(|o| o.status.success())
    }) && Path::new("/bin/busybox").exists();
    let required = std::env::var("REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1");
    assert!(
        have || !required,
        "REQUIRE_PRIVILEGED=1 but containerd, runc or busybox-static is missing; run ./scripts/test"
    );
    if !have {
        eprintln!("skipping: containerd, runc or busybox-static missing");
    }
    have
}
