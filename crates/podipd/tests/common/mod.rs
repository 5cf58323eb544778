//! The podipd test harness: the simulated VPC served as EC2 and its instance metadata in the
//! test process, one instance launched in it, and podipd processes on that instance reaching it
//! through the AWS SDK's endpoint settings, spoken to over the plugin protocol.
#![allow(dead_code, clippy::disallowed_methods)] // A harness against real processes: wall time.

use cloud::sim::{SimParams, SimVpc};
use ipam::Time;
use ipam::addr::InstanceId;
use serde_json::{Value, json};
use sim_endpoint::Endpoint;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

pub fn wall() -> Time {
    Time::from_millis(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64)
}

pub struct World {
    pub dir: PathBuf,
    /// EC2 and the metadata service.
    pub ep: Endpoint,
    /// The node's instance.
    pub instance: InstanceId,
    pub daemon: Option<Child>,
    /// While set, the cloud refuses every call that would grow a pool (`UnauthorizedOperation`).
    pub refuse_growth: Arc<std::sync::atomic::AtomicBool>,
}

/// The world's VPC: two subnets in one AZ.
pub fn vpc(params: SimParams) -> SimVpc {
    let mut vpc = SimVpc::new(params);
    vpc.add_vpc_cidr("10.0.0.0/16".parse().unwrap()).unwrap();
    vpc.add_subnet("us-east-1a", "10.0.0.0/22".parse().unwrap()).unwrap();
    vpc.add_vpc_cidr("100.64.0.0/16".parse().unwrap()).unwrap();
    vpc.add_subnet("us-east-1a", "100.64.0.0/22".parse().unwrap()).unwrap();
    vpc
}

impl World {
    pub fn new(name: &str) -> World {
        World::with(name, SimParams { seed: 3, ..SimParams::default() })
    }

    pub fn with(name: &str, params: SimParams) -> World {
        World::of_type(name, "m5.large", params)
    }

    /// A world whose node is an instance of type `instance_type`.
    pub fn of_type(name: &str, instance_type: &str, params: SimParams) -> World {
        World::in_vpc(name, instance_type, vpc(params))
    }

    /// A world whose node is an `m5.large` in an IPv6 subnet (a /64 beside its IPv4 /24).
    pub fn ipv6(name: &str) -> World {
        let mut vpc = SimVpc::new(SimParams { seed: 3, ..SimParams::default() });
        vpc.add_vpc_cidr("10.0.0.0/16".parse().unwrap()).unwrap();
        vpc.add_subnet_v6("us-east-1a", "10.0.0.0/24".parse().unwrap(), Some("2600:1f18:aaaa:1::/64".parse().unwrap()))
            .unwrap();
        World::in_vpc(name, "m5.large", vpc)
    }

    /// A world whose node is an instance of type `instance_type` in the first subnet of `vpc`.
    pub fn in_vpc(name: &str, instance_type: &str, mut vpc: SimVpc) -> World {
        let dir = std::env::temp_dir().join(format!("podipd-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        vpc.set_now(wall());
        let subnet = vpc.subnets()[0].id.clone();
        let t = ipam::catalog::Catalog::embedded().get(instance_type).unwrap();
        let (instance, _) = vpc.run_instance(t, &subnet).unwrap();
        let ep = Endpoint::start(vpc, wall).unwrap();
        let refuse_growth = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let r = Arc::clone(&refuse_growth);
        ep.set_refusal(move |action| {
            let growth = matches!(action, "CreateNetworkInterface" | "AssignPrivateIpAddresses");
            (growth && r.load(Ordering::Relaxed)).then(|| cloud::ec2_error("UnauthorizedOperation", "not allowed"))
        });
        World { dir, ep, instance, daemon: None, refuse_growth }
    }

    /// Scales the cloud's latencies from now on.
    pub fn set_cloud_latency(&self, scale: f64) {
        self.ep.set_latency_scale(scale);
    }

    /// The metadata service of the world's instance, for a daemon booted in the test process.
    pub fn metadata(&self) -> aws::metadata::Metadata {
        aws::metadata::Metadata::at(&self.ep.imds_url(&self.instance)).unwrap()
    }

    pub fn sock(&self) -> PathBuf {
        self.dir.join("podipd.sock")
    }

    pub fn metrics_addr(&self) -> String {
        // A port per test world: the process id and the world's name, hashed.
        let h = self
            .dir
            .to_string_lossy()
            .bytes()
            .fold(std::process::id(), |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
        format!("127.0.0.1:{}", 20000 + h % 40000)
    }

    /// podipd with the world's settings and `extra` on top, not yet started.
    pub fn command(&self, extra: &[(&str, &str)]) -> Command {
        self.command_via(&[], extra)
    }

    /// The same, started through `wrapper` (a command that execs its last argument).
    pub fn command_via(&self, wrapper: &[&str], extra: &[(&str, &str)]) -> Command {
        let mut c = match wrapper.split_first() {
            Some((w, rest)) => {
                let mut c = Command::new(w);
                c.args(rest).arg(env!("CARGO_BIN_EXE_podipd"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_podipd")),
        };
        c.env("AWS_ENDPOINT_URL_EC2", self.ep.url())
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", self.ep.imds_url(&self.instance))
            .env("PODIP_SOCKET", self.sock())
            .env("PODIP_CHECKPOINT", self.dir.join("state/ipam.json"))
            .env("IP_COOLDOWN_PERIOD", "1")
            .env("PODIP_PROGRAM_NODE", "false")
            // These tests drive the daemon's mechanics with aws-node's fixed targets.
            .env("PODIP_POOL_POLICY", "vpc-cni")
            .env("WARM_ENI_TARGET", "2")
            .env("PODIP_METRICS_ADDRESS", self.metrics_addr())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in extra {
            c.env(k, v);
        }
        c
    }

    pub fn start(&mut self, extra: &[(&str, &str)]) {
        let _ = std::fs::remove_file(self.sock());
        self.daemon = Some(self.command(extra).spawn().unwrap());
        let t0 = Instant::now();
        while UnixStream::connect(self.sock()).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(20), "podipd did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            c.kill().unwrap(); // SIGKILL
            c.wait().unwrap();
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn request(sock: &Path, req: &Value) -> Option<Value> {
    let mut s = UnixStream::connect(sock).ok()?;
    s.write_all(format!("{req}\n").as_bytes()).ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    serde_json::from_str(&line).ok()
}

pub fn attach(op: &str, cid: &str) -> Value {
    json!({"v": 1, "op": op, "network": "podip", "container_id": cid, "ifname": "eth0", "netns": "/proc/1/ns/net"})
}

/// ADD until an address comes (the pool refills every 5 s, like kubelet retrying a sandbox).
pub fn add(sock: &Path, cid: &str) -> String {
    let t0 = Instant::now();
    loop {
        if let Some(r) = request(sock, &attach("add", cid)) {
            if let Some(a) = r["ok"]["addr"].as_str() {
                return a.to_string();
            }
            assert_eq!(r["error"], "pool_exhausted", "{r}");
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "no address for {cid}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn introspect(sock: &Path) -> Value {
    request(sock, &json!({"v": 1, "op": "introspect"})).unwrap()["ok"]["state"].clone()
}
