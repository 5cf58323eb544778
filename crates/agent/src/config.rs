//! The daemon's configuration: aws-node's environment names (so an existing aws-node manifest
//! carries over) and an optional TOML file, validated all at once before anything is touched.
//! Unlike aws-node, a bad value is an error naming the variable and value, never a silent default.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use thiserror::Error;

/// How pod traffic leaving the VPC is source-NATed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Snat {
    /// To the node's primary address (the VPC CNI default).
    Internal,
    /// Not at all (a NAT gateway, TGW or DX handles egress).
    External,
}

/// Port randomisation of the SNAT rule (`AWS_VPC_K8S_CNI_RANDOMIZESNAT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RandomizeSnat {
    /// `fully-random` (default, `prng`).
    Prng,
    /// `random` (`hashrandom`).
    HashRandom,
    /// None.
    None,
}

/// The validated daemon configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct DaemonConfig {
    /// `WARM_ENI_TARGET`.
    pub warm_eni: u32,
    /// `WARM_IP_TARGET`.
    pub warm_ip: u32,
    /// `MINIMUM_IP_TARGET`.
    pub minimum_ip: u32,
    /// `WARM_PREFIX_TARGET`.
    pub warm_prefix: Option<u32>,
    /// `ENABLE_PREFIX_DELEGATION`.
    pub prefix_delegation: bool,
    /// `MAX_ENI`.
    pub max_eni: Option<u32>,
    /// `PODIP_POOL_POLICY` (`adaptive`, the default, or `vpc-cni`) and, for the adaptive one,
    /// `PODIP_POD_START_MISSES_PER_MILLION`.
    pub pool_policy: ipam::config::PoolPolicyChoice,
    /// `PODIP_PREFIX_FALLBACK`: secondary addresses when EC2 has no free /28.
    pub prefix_fallback: bool,
    /// `PODIP_CLUSTER_EC2_CALLS_PER_SECOND` over `PODIP_CLUSTER_NODES`: this node's share of the
    /// cluster's mutating EC2 calls (none: unbounded). As a pod without `PODIP_CLUSTER_NODES`,
    /// the node count Kubernetes gives; until it is read, the least share (one call an hour,
    /// beside the boot's first).
    pub call_budget: Option<ipam::config::CallBudget>,
    /// `PODIP_CLUSTER_EC2_CALLS_PER_SECOND`, when the nodes that share it are to be counted in
    /// Kubernetes (`PODIP_CLUSTER_NODES` unset).
    pub cluster_calls_per_second: Option<f64>,
    /// `IP_COOLDOWN_PERIOD`.
    pub cooldown: Duration,
    /// `AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG`.
    pub custom_networking: bool,
    /// `AWS_VPC_K8S_CNI_EXTERNALSNAT`.
    pub snat: Snat,
    /// `AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS`.
    pub exclude_snat: Vec<ipnet::Ipv4Net>,
    /// `AWS_VPC_K8S_CNI_RANDOMIZESNAT`.
    pub randomize_snat: RandomizeSnat,
    /// `AWS_VPC_ENI_MTU`.
    pub eni_mtu: u32,
    /// `POD_MTU` (default: the ENI MTU).
    pub pod_mtu: u32,
    /// `ENABLE_IPv6` (`ENABLE_IPv4` is its opposite: exactly one family).
    pub ipv6: bool,
    /// `AWS_VPC_K8S_CNI_VETHPREFIX`.
    pub veth_prefix: String,
    /// Plugin socket.
    pub socket: PathBuf,
    /// Checkpoint file.
    pub checkpoint: PathBuf,
    /// Metrics and introspection listen address (localhost only).
    pub metrics: String,
    /// EC2's endpoint from aws-node's `AWS_EC2_ENDPOINT` (the SDK's `AWS_ENDPOINT_URL_EC2`
    /// wins when both are set); `None` for the SDK's own resolution.
    pub ec2_endpoint: Option<String>,
    /// Where to write the node's CNI configuration list once serving (`PODIP_CNI_CONFLIST`);
    /// `None` writes nothing.
    pub cni_conflist: Option<PathBuf>,
    /// The node's name in Kubernetes (`MY_NODE_NAME`, from the downward API): set, podipd
    /// follows its Node object and the ENIConfigs.
    pub node_name: Option<String>,
    /// The daemon's pod (`MY_POD_NAMESPACE`, `MY_POD_NAME`), where events are recorded.
    pub pod: Option<(String, String)>,
    /// Where a node names its ENIConfig (`ENI_CONFIG_ANNOTATION_DEF`, `ENI_CONFIG_LABEL_DEF`).
    pub eniconfig_sources: kubernetes::eniconfig::NameSources,
    /// Program the node's data path (SNAT, connmark rule); off for IPAM-only runs.
    pub program_node: bool,
    /// The network namespace to program (default: the daemon's own).
    pub node_netns: Option<String>,
    /// The primary interface's name.
    pub primary_if: String,
    /// How long an assignment may stay without wiring on the host (no veth, no route) before
    /// it is released: the plugin may be between the daemon's answer and the kernel.
    pub wiring_grace: Duration,
    /// `ENABLE_SUBNET_DISCOVERY`.
    pub subnet_discovery: bool,
    /// `CLUSTER_NAME`: tags the ENIs podip creates.
    pub cluster_name: Option<String>,
    /// aws-node's checkpoint, imported when podipd has none of its own (empty: never).
    pub import_checkpoint: Option<PathBuf>,
    /// `AWS_MANAGE_ENIS_NON_SCHEDULABLE`.
    pub manage_enis_non_schedulable: bool,
    /// `DISABLE_LEAKED_ENI_CLEANUP`: no leak sweep.
    pub no_leak_sweep: bool,
    /// How often the node's ENIs are read from EC2 (each read is one `DescribeNetworkInterfaces`
    /// from the account's budget).
    pub reconcile_every: Duration,
    /// How often the VPC's blocks are re-read from the instance metadata.
    pub metadata_every: Duration,
}

/// Every bad setting, at once.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid configuration: {}", .0.join("; "))]
pub struct ConfigError(pub Vec<String>);

/// The calls a cluster may make at once under its budget: the smallest mutating bucket's
/// capacity (50, `aws-and-peers.md`), shared over the nodes.
pub const CLUSTER_CALL_BURST: u32 = 50;

/// The environment names read, with their defaults.
pub const VARIABLES: [(&str, &str); 42] = [
    ("WARM_ENI_TARGET", "1"),
    ("WARM_IP_TARGET", "0"),
    ("MINIMUM_IP_TARGET", "0"),
    ("WARM_PREFIX_TARGET", ""),
    ("ENABLE_PREFIX_DELEGATION", "false"),
    ("MAX_ENI", ""),
    ("IP_COOLDOWN_PERIOD", "30"),
    ("AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG", "false"),
    ("AWS_VPC_K8S_CNI_EXTERNALSNAT", "false"),
    ("AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS", ""),
    ("AWS_VPC_K8S_CNI_RANDOMIZESNAT", "prng"),
    ("AWS_VPC_ENI_MTU", "9001"),
    ("POD_MTU", ""),
    ("ENABLE_IPv4", "true"),
    ("ENABLE_IPv6", "false"),
    ("AWS_VPC_K8S_CNI_VETHPREFIX", "eni"),
    ("PODIP_SOCKET", "/run/podip/podipd.sock"),
    ("PODIP_CHECKPOINT", "/run/podip/ipam.json"),
    ("PODIP_METRICS_ADDRESS", "127.0.0.1:61678"),
    ("AWS_EC2_ENDPOINT", ""),
    ("PODIP_CNI_CONFLIST", ""),
    ("MY_NODE_NAME", ""),
    ("MY_POD_NAME", ""),
    ("MY_POD_NAMESPACE", "kube-system"),
    ("ENI_CONFIG_LABEL_DEF", "k8s.amazonaws.com/eniConfig"),
    ("ENI_CONFIG_ANNOTATION_DEF", "k8s.amazonaws.com/eniConfig"),
    ("PODIP_PROGRAM_NODE", "true"),
    ("PODIP_NODE_NETNS", ""),
    ("PODIP_PRIMARY_IF", ""),
    ("PODIP_WIRING_GRACE", "180"),
    ("ENABLE_SUBNET_DISCOVERY", "true"),
    ("CLUSTER_NAME", ""),
    ("PODIP_IMPORT_CHECKPOINT", "/var/run/aws-node/ipam.json"),
    ("AWS_MANAGE_ENIS_NON_SCHEDULABLE", "false"),
    ("DISABLE_LEAKED_ENI_CLEANUP", "false"),
    ("PODIP_RECONCILE_SECONDS", "60"),
    ("PODIP_METADATA_SECONDS", "30"),
    ("PODIP_POOL_POLICY", "adaptive"),
    // Empty: 10000 (ipam::config::DEFAULT_MISSES_PER_MILLION), under the adaptive policy only.
    ("PODIP_POD_START_MISSES_PER_MILLION", ""),
    ("PODIP_PREFIX_FALLBACK", "true"),
    ("PODIP_CLUSTER_EC2_CALLS_PER_SECOND", ""),
    ("PODIP_CLUSTER_NODES", ""),
];

/// Bounds of the numeric settings: (name, lowest, highest).
pub const BOUNDS: [(&str, u32, u32); 13] = [
    ("WARM_ENI_TARGET", 0, 100),
    ("WARM_IP_TARGET", 0, 10_000),
    ("MINIMUM_IP_TARGET", 0, 10_000),
    ("WARM_PREFIX_TARGET", 0, 1_000),
    ("MAX_ENI", 1, 100),
    ("IP_COOLDOWN_PERIOD", 0, 3_600),
    ("AWS_VPC_ENI_MTU", 576, 9_001),
    ("POD_MTU", 576, 9_001),
    ("PODIP_WIRING_GRACE", 1, 3_600),
    ("PODIP_RECONCILE_SECONDS", 10, 3_600),
    ("PODIP_METADATA_SECONDS", 1, 3_600),
    ("PODIP_POD_START_MISSES_PER_MILLION", 1, 500_000),
    ("PODIP_CLUSTER_NODES", 1, 100_000),
];

fn boolean_of(v: &str, name: &str, bad: &mut Vec<String>) -> bool {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => true,
        "false" | "0" | "no" | "" => false,
        _ => {
            bad.push(format!("{name}={v:?}: true or false"));
            false
        }
    }
}

fn absolute_path(name: &str, v: &str, max: usize, bad: &mut Vec<String>) {
    if !v.starts_with('/') || v.len() > max || v.contains('\0') {
        bad.push(format!("{name}={v:?}: an absolute path of at most {max} bytes"));
    }
}

impl DaemonConfig {
    /// Checks the settings that name things on the host, before anything is touched: the
    /// checkpoint is a regular file (or absent) in a directory of its own, the socket path holds
    /// a socket or nothing, the node's namespace is a network namespace.
    ///
    /// # Errors
    /// Every bad value, naming its variable and value.
    pub fn check_host(&self) -> Result<(), ConfigError> {
        use std::os::unix::fs::FileTypeExt;
        let mut bad = Vec::new();
        let cp = &self.checkpoint;
        let shown = cp.display();
        match (cp.file_name(), cp.parent()) {
            (Some(_), Some(dir)) if dir != std::path::Path::new("/") => {}
            _ => bad.push(format!("PODIP_CHECKPOINT={shown:?}: a file in a directory of its own (not /)")),
        }
        match std::fs::symlink_metadata(cp) {
            Ok(m) if !m.file_type().is_file() => {
                bad.push(format!("PODIP_CHECKPOINT={shown:?}: exists and is not a regular file"));
            }
            _ => {}
        }
        match std::fs::symlink_metadata(&self.socket) {
            Ok(m) if !m.file_type().is_socket() => {
                bad.push(format!("PODIP_SOCKET={:?}: exists and is not a socket", self.socket.display()));
            }
            _ => {}
        }
        if let Some(ns) = &self.node_netns
            && let Err(e) = datapath::netns::check_network_namespace(ns)
        {
            bad.push(format!("PODIP_NODE_NETNS={ns:?}: {}", e.reason));
        }
        if bad.is_empty() { Ok(()) } else { Err(ConfigError(bad)) }
    }

    /// Checks the whole environment for aws-node variables podipd does not honour: each is an
    /// error naming it and why, unless it asks for nothing; returns notes for the ignored ones.
    ///
    /// # Errors
    /// Every variable refused.
    pub fn check_environment(vars: &[(String, String)]) -> Result<Vec<String>, ConfigError> {
        let known: Vec<&str> = VARIABLES.iter().map(|(n, _)| *n).collect();
        let (bad, notes) = crate::awsnode::check(vars, &known);
        if bad.is_empty() { Ok(notes) } else { Err(ConfigError(bad)) }
    }

    /// Reads the configuration: the TOML file's keys (the same names, lower or upper case) first,
    /// then the environment through `env`, which wins.
    ///
    /// # Errors
    /// Every bad value, naming its variable and value; an unknown key in the file.
    pub fn load(file: Option<&str>, env: impl Fn(&str) -> Option<String>) -> Result<DaemonConfig, ConfigError> {
        let mut bad = Vec::new();
        let mut values: BTreeMap<String, String> = BTreeMap::new();
        if let Some(text) = file {
            match toml::from_str::<BTreeMap<String, toml::Value>>(text) {
                Ok(f) => {
                    for (k, v) in f {
                        let key = k.to_ascii_uppercase();
                        if !VARIABLES.iter().any(|(n, _)| n.eq_ignore_ascii_case(&key)) {
                            bad.push(format!("config file: unknown key {k:?}"));
                            continue;
                        }
                        let name =
                            VARIABLES.iter().find(|(n, _)| n.eq_ignore_ascii_case(&key)).map(|(n, _)| *n).unwrap_or("");
                        let text = match v {
                            toml::Value::String(s) => s,
                            toml::Value::Array(a) => a
                                .iter()
                                .map(|x| x.as_str().map_or_else(|| x.to_string(), String::from))
                                .collect::<Vec<_>>()
                                .join(","),
                            other => other.to_string(),
                        };
                        values.insert(name.to_string(), text);
                    }
                }
                Err(e) => bad.push(format!("config file: {}", e.to_string().trim().replace('\n', " "))),
            }
        }
        for (name, _) in VARIABLES {
            if let Some(v) = env(name) {
                values.insert(name.to_string(), v);
            }
        }
        let get = |name: &str| -> String {
            values
                .get(name)
                .cloned()
                .unwrap_or_else(|| VARIABLES.iter().find(|(n, _)| *n == name).map_or("", |(_, d)| d).to_string())
        };
        let uint = |name: &str, bad: &mut Vec<String>| -> Option<u32> {
            let v = get(name);
            if v.is_empty() {
                return None;
            }
            let (lo, hi) = BOUNDS.iter().find(|(n, _, _)| *n == name).map_or((0, u32::MAX), |(_, l, h)| (*l, *h));
            match v.trim().parse::<u32>() {
                Ok(n) if (lo..=hi).contains(&n) => Some(n),
                _ => {
                    bad.push(format!("{name}={v:?}: a whole number from {lo} to {hi}"));
                    None
                }
            }
        };
        let warm_eni = uint("WARM_ENI_TARGET", &mut bad).unwrap_or(1);
        let warm_ip = uint("WARM_IP_TARGET", &mut bad).unwrap_or(0);
        let minimum_ip = uint("MINIMUM_IP_TARGET", &mut bad).unwrap_or(0);
        let warm_prefix = uint("WARM_PREFIX_TARGET", &mut bad);
        let max_eni = uint("MAX_ENI", &mut bad);
        let cooldown = Duration::from_secs(u64::from(uint("IP_COOLDOWN_PERIOD", &mut bad).unwrap_or(30)));
        let eni_mtu = uint("AWS_VPC_ENI_MTU", &mut bad).unwrap_or(9001);
        let pod_mtu = uint("POD_MTU", &mut bad).unwrap_or(eni_mtu);
        let wiring_grace = Duration::from_secs(u64::from(uint("PODIP_WIRING_GRACE", &mut bad).unwrap_or(180)));
        let mut boolean = |name: &str| -> bool { boolean_of(&get(name), name, &mut bad) };
        let prefix_delegation = boolean("ENABLE_PREFIX_DELEGATION");
        let custom_networking = boolean("AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG");
        let external = boolean("AWS_VPC_K8S_CNI_EXTERNALSNAT");
        let program_node = boolean("PODIP_PROGRAM_NODE");
        let v4 = boolean("ENABLE_IPv4");
        let ipv6 = boolean("ENABLE_IPv6");
        if v4 == ipv6 {
            bad.push(format!("ENABLE_IPv4={v4}, ENABLE_IPv6={ipv6}: exactly one must be true"));
        }
        if ipv6 && custom_networking {
            bad.push("AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG=true: not supported with ENABLE_IPv6=true".into());
        }
        let fixed_targets = get("PODIP_POOL_POLICY") == "vpc-cni";
        if fixed_targets && prefix_delegation && warm_ip == 0 && minimum_ip == 0 && warm_prefix == Some(0) {
            bad.push("WARM_PREFIX_TARGET=\"0\": with prefix delegation, it or WARM_IP_TARGET/MINIMUM_IP_TARGET must be above 0".into());
        }
        let mut exclude_snat = Vec::new();
        for c in get("AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS").split(',').map(str::trim).filter(|c| !c.is_empty()) {
            match c.parse::<ipnet::Ipv4Net>() {
                Ok(n) => exclude_snat.push(n),
                Err(_) => bad.push(format!("AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS has {c:?}: not an IPv4 CIDR")),
            }
        }
        let randomize_snat = match get("AWS_VPC_K8S_CNI_RANDOMIZESNAT").as_str() {
            "prng" | "" => RandomizeSnat::Prng,
            "hashrandom" => RandomizeSnat::HashRandom,
            "none" => RandomizeSnat::None,
            other => {
                bad.push(format!("AWS_VPC_K8S_CNI_RANDOMIZESNAT={other:?}: prng, hashrandom or none"));
                RandomizeSnat::Prng
            }
        };
        let veth_prefix = get("AWS_VPC_K8S_CNI_VETHPREFIX");
        if let Some(p) = cni::env::veth_prefix_problem(&veth_prefix) {
            bad.push(format!("AWS_VPC_K8S_CNI_VETHPREFIX={veth_prefix:?}: {p}"));
        }
        let metrics = get("PODIP_METRICS_ADDRESS");
        match metrics.parse::<std::net::SocketAddr>() {
            Ok(a) if a.ip().is_loopback() => {}
            _ => bad.push(format!("PODIP_METRICS_ADDRESS={metrics:?}: a loopback address:port")),
        }
        let k8s_name = |n: &str, bad: &mut Vec<String>| -> Option<String> {
            let v = get(n);
            if v.is_empty() {
                return None;
            }
            // A DNS subdomain (RFC 1123), as Kubernetes names nodes and pods.
            let ok = v.len() <= 253
                && v.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
                && !v.starts_with(['-', '.'])
                && !v.ends_with(['-', '.']);
            if !ok {
                bad.push(format!("{n}={v:?}: a Kubernetes name (lower-case letters, digits, '-' and '.')"));
            }
            Some(v)
        };
        let node_name = k8s_name("MY_NODE_NAME", &mut bad);
        let pod = match (k8s_name("MY_POD_NAMESPACE", &mut bad), k8s_name("MY_POD_NAME", &mut bad)) {
            (Some(ns), Some(name)) => Some((ns, name)),
            _ => None,
        };
        let key = |n: &str, bad: &mut Vec<String>| -> String {
            let v = get(n);
            let ok =
                !v.is_empty() && v.len() <= 316 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._/".contains(&b));
            if !ok {
                bad.push(format!("{n}={v:?}: a label or annotation key"));
            }
            v
        };
        let eniconfig_sources = kubernetes::eniconfig::NameSources {
            label: key("ENI_CONFIG_LABEL_DEF", &mut bad),
            annotation: key("ENI_CONFIG_ANNOTATION_DEF", &mut bad),
        };
        let cni_conflist = Some(get("PODIP_CNI_CONFLIST")).filter(|s| !s.is_empty());
        if let Some(p) = &cni_conflist {
            absolute_path("PODIP_CNI_CONFLIST", p, crate::limits::MAX_PATH, &mut bad);
            let file = std::path::Path::new(p);
            if p.ends_with('/') || file.file_name().is_none() || file.parent().is_none_or(|d| d.as_os_str().is_empty())
            {
                bad.push(format!(
                    "PODIP_CNI_CONFLIST={p:?}: a file in a directory (the runtime's CNI configuration directory)"
                ));
            }
        }
        let cni_conflist = cni_conflist.map(PathBuf::from);
        let ec2_endpoint = Some(get("AWS_EC2_ENDPOINT")).filter(|s| !s.is_empty());
        if let Some(e) = &ec2_endpoint {
            let ok = e.parse::<hyper::Uri>().is_ok_and(|u| {
                matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some_and(|h| !h.is_empty())
            });
            if !ok {
                bad.push(format!("AWS_EC2_ENDPOINT={e:?}: an http:// or https:// URL with a host"));
            }
        }
        let node_netns = Some(get("PODIP_NODE_NETNS")).filter(|s| !s.is_empty());
        if let Some(n) = &node_netns {
            absolute_path("PODIP_NODE_NETNS", n, crate::limits::MAX_PATH, &mut bad);
        }
        // A Unix socket path holds at most 107 bytes.
        absolute_path("PODIP_SOCKET", &get("PODIP_SOCKET"), 107, &mut bad);
        absolute_path("PODIP_CHECKPOINT", &get("PODIP_CHECKPOINT"), crate::limits::MAX_PATH, &mut bad);
        let subnet_discovery = boolean_of(&get("ENABLE_SUBNET_DISCOVERY"), "ENABLE_SUBNET_DISCOVERY", &mut bad);
        let cluster_name = Some(get("CLUSTER_NAME")).filter(|s| !s.is_empty());
        if let Some(c) = &cluster_name
            && (c.len() > 100 || !c.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_')))
        {
            bad.push(format!("CLUSTER_NAME={c:?}: 1-100 letters, digits, '-' or '_' (an EKS cluster name)"));
        }
        let import_checkpoint = Some(get("PODIP_IMPORT_CHECKPOINT")).filter(|s| !s.is_empty());
        if let Some(p) = &import_checkpoint {
            absolute_path("PODIP_IMPORT_CHECKPOINT", p, crate::limits::MAX_PATH, &mut bad);
        }
        let import_checkpoint = import_checkpoint.map(PathBuf::from);
        let manage_enis_non_schedulable =
            boolean_of(&get("AWS_MANAGE_ENIS_NON_SCHEDULABLE"), "AWS_MANAGE_ENIS_NON_SCHEDULABLE", &mut bad);
        let no_leak_sweep = boolean_of(&get("DISABLE_LEAKED_ENI_CLEANUP"), "DISABLE_LEAKED_ENI_CLEANUP", &mut bad);
        let reconcile_every = Duration::from_secs(u64::from(uint("PODIP_RECONCILE_SECONDS", &mut bad).unwrap_or(60)));
        let metadata_every = Duration::from_secs(u64::from(uint("PODIP_METADATA_SECONDS", &mut bad).unwrap_or(30)));
        let misses = uint("PODIP_POD_START_MISSES_PER_MILLION", &mut bad);
        let pool_policy = match get("PODIP_POOL_POLICY").as_str() {
            "adaptive" | "" => ipam::config::PoolPolicyChoice::Adaptive {
                misses_per_million: misses.unwrap_or(ipam::config::DEFAULT_MISSES_PER_MILLION),
            },
            "vpc-cni" => {
                if let Some(m) = misses {
                    bad.push(format!(
                        "PODIP_POD_START_MISSES_PER_MILLION=\"{m}\": the adaptive policy's target, not used with PODIP_POOL_POLICY=vpc-cni"
                    ));
                }
                ipam::config::PoolPolicyChoice::VpcCni
            }
            other => {
                bad.push(format!("PODIP_POOL_POLICY={other:?}: adaptive or vpc-cni"));
                ipam::config::PoolPolicyChoice::VpcCni
            }
        };
        let prefix_fallback = boolean_of(&get("PODIP_PREFIX_FALLBACK"), "PODIP_PREFIX_FALLBACK", &mut bad);
        let cluster_nodes = uint("PODIP_CLUSTER_NODES", &mut bad);
        let rate = get("PODIP_CLUSTER_EC2_CALLS_PER_SECOND");
        let cluster_calls_per_second = rate.trim().parse::<f64>().ok().filter(|v| v.is_finite() && *v > 0.0);
        let call_budget = match (rate.trim(), cluster_nodes) {
            ("", None) => None,
            ("", Some(n)) => {
                bad.push(format!("PODIP_CLUSTER_NODES=\"{n}\": set only with PODIP_CLUSTER_EC2_CALLS_PER_SECOND"));
                None
            }
            (r, nodes) => match r.parse::<f64>() {
                Ok(v) if v.is_finite() && (0.01..=1000.0).contains(&v) => match nodes {
                    Some(n) if v * 3600.0 < f64::from(n) => {
                        bad.push(format!(
                            "PODIP_CLUSTER_EC2_CALLS_PER_SECOND={r:?} over PODIP_CLUSTER_NODES=\"{n}\": less than one call an hour per node"
                        ));
                        None
                    }
                    // The burst: a node's share of the smallest mutating bucket (50, `aws-and-peers.md`).
                    Some(n) => Some(ipam::config::CallBudget::share(v, CLUSTER_CALL_BURST, n)),
                    // Kubernetes counts the nodes; until it has, the least share.
                    None if node_name.is_some() => {
                        Some(ipam::config::CallBudget::share(v, CLUSTER_CALL_BURST, u32::MAX))
                    }
                    None => {
                        bad.push(format!(
                            "PODIP_CLUSTER_EC2_CALLS_PER_SECOND={r:?}: needs PODIP_CLUSTER_NODES, the nodes that share it (or MY_NODE_NAME, to count them in Kubernetes)"
                        ));
                        None
                    }
                },
                _ => {
                    bad.push(format!("PODIP_CLUSTER_EC2_CALLS_PER_SECOND={r:?}: calls a second, 0.01 to 1000"));
                    None
                }
            },
        };
        let primary_if = get("PODIP_PRIMARY_IF");
        if let Some(p) = Some(&primary_if).filter(|i| !i.is_empty()).and_then(|i| crate::limits::interface_problem(i)) {
            bad.push(format!("PODIP_PRIMARY_IF={primary_if:?}: {p}"));
        }
        if !bad.is_empty() {
            return Err(ConfigError(bad));
        }
        Ok(DaemonConfig {
            ec2_endpoint,
            cni_conflist,
            node_name,
            pod,
            eniconfig_sources,
            program_node,
            node_netns,
            primary_if,
            wiring_grace,
            subnet_discovery,
            cluster_name,
            import_checkpoint,
            manage_enis_non_schedulable,
            no_leak_sweep,
            reconcile_every,
            metadata_every,
            warm_eni,
            warm_ip,
            minimum_ip,
            warm_prefix,
            prefix_delegation,
            max_eni,
            pool_policy,
            prefix_fallback,
            call_budget,
            // Kubernetes counts the nodes only when their number is not given.
            cluster_calls_per_second: call_budget.and(cluster_calls_per_second).filter(|_| cluster_nodes.is_none()),
            cooldown,
            custom_networking,
            snat: if external { Snat::External } else { Snat::Internal },
            exclude_snat,
            randomize_snat,
            eni_mtu,
            pod_mtu,
            ipv6,
            veth_prefix,
            socket: PathBuf::from(get("PODIP_SOCKET")),
            checkpoint: PathBuf::from(get("PODIP_CHECKPOINT")),
            metrics,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(file: Option<&str>, vars: &[(&str, &str)]) -> Result<DaemonConfig, ConfigError> {
        DaemonConfig::load(file, |k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string()))
    }

    #[test]
    fn defaults_are_aws_nodes() {
        let c = load(None, &[]).unwrap();
        assert_eq!(
            (c.warm_eni, c.warm_ip, c.cooldown, c.eni_mtu, c.pod_mtu),
            (1, 0, Duration::from_secs(30), 9001, 9001)
        );
        assert_eq!((c.snat, c.randomize_snat, c.ipv6), (Snat::Internal, RandomizeSnat::Prng, false));
    }

    #[test]
    fn the_pool_policy_settings_are_checked_together() {
        use ipam::config::{CallBudget, PoolPolicyChoice};
        let c = load(None, &[]).unwrap();
        assert_eq!(c.pool_policy, PoolPolicyChoice::Adaptive { misses_per_million: 10_000 });
        assert!(c.prefix_fallback);
        assert_eq!(c.call_budget, None);
        let c = load(
            None,
            &[
                ("PODIP_POD_START_MISSES_PER_MILLION", "100"),
                ("PODIP_CLUSTER_EC2_CALLS_PER_SECOND", "2.5"),
                ("PODIP_CLUSTER_NODES", "1000"),
            ],
        )
        .unwrap();
        assert_eq!(c.pool_policy, PoolPolicyChoice::Adaptive { misses_per_million: 100 });
        assert_eq!(c.call_budget, Some(CallBudget { per_hour: 9, burst: 1, paced: true }));
        let err = load(
            None,
            &[
                ("PODIP_POOL_POLICY", "vpc-cni"),
                ("PODIP_POD_START_MISSES_PER_MILLION", "100"),
                ("PODIP_CLUSTER_EC2_CALLS_PER_SECOND", "0.1"),
                ("PODIP_CLUSTER_NODES", "1000"),
            ],
        )
        .unwrap_err()
        .to_string();
        for want in [
            "PODIP_POD_START_MISSES_PER_MILLION=\"100\": the adaptive policy's target",
            "PODIP_CLUSTER_EC2_CALLS_PER_SECOND=\"0.1\" over PODIP_CLUSTER_NODES=\"1000\"",
        ] {
            assert!(err.contains(want), "{want} in {err}");
        }
        let err = load(None, &[("PODIP_POOL_POLICY", "fixed"), ("PODIP_CLUSTER_EC2_CALLS_PER_SECOND", "2")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("PODIP_POOL_POLICY=\"fixed\": adaptive or vpc-cni"), "{err}");
        assert!(err.contains("needs PODIP_CLUSTER_NODES"), "{err}");
        // As a pod, Kubernetes counts the nodes; until then the least share.
        let c = load(None, &[("PODIP_CLUSTER_EC2_CALLS_PER_SECOND", "2.5"), ("MY_NODE_NAME", "ip-10-0-0-9")]).unwrap();
        assert_eq!(c.call_budget, Some(CallBudget { per_hour: 1, burst: 1, paced: true }));
        assert_eq!(c.cluster_calls_per_second, Some(2.5));
        // A node count given is kept: Kubernetes does not replace it.
        let c = load(
            None,
            &[
                ("PODIP_CLUSTER_EC2_CALLS_PER_SECOND", "2.5"),
                ("PODIP_CLUSTER_NODES", "1000"),
                ("MY_NODE_NAME", "ip-10-0-0-9"),
            ],
        )
        .unwrap();
        assert_eq!((c.call_budget.map(|b| b.per_hour), c.cluster_calls_per_second), (Some(9), None));
        let err = load(None, &[("PODIP_CLUSTER_NODES", "10")]).unwrap_err().to_string();
        assert!(err.contains("PODIP_CLUSTER_NODES=\"10\": set only with"), "{err}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let c = load(Some("warm_ip_target = 3\nMINIMUM_IP_TARGET = \"10\"\n"), &[("WARM_IP_TARGET", "5")]).unwrap();
        assert_eq!((c.warm_ip, c.minimum_ip), (5, 10));
    }

    #[test]
    fn every_bad_value_is_named() {
        let e = load(
            Some("frobnicate = 1\n"),
            &[
                ("WARM_IP_TARGET", "-1"),
                ("ENABLE_IPv6", "maybe"),
                ("AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS", "10.0.0.0/8, nope"),
                ("AWS_VPC_K8S_CNI_VETHPREFIX", "toolong"),
                ("POD_MTU", "70000"),
                ("PODIP_METRICS_ADDRESS", "0.0.0.0:61678"),
            ],
        )
        .unwrap_err();
        let all = e.to_string();
        for n in [
            "unknown key \"frobnicate\"",
            "WARM_IP_TARGET=\"-1\"",
            "ENABLE_IPv6=\"maybe\"",
            "\"nope\"",
            "AWS_VPC_K8S_CNI_VETHPREFIX=\"toolong\"",
            "POD_MTU=\"70000\"",
            "PODIP_METRICS_ADDRESS",
        ] {
            assert!(all.contains(n), "missing {n}: {all}");
        }
        let e = load(None, &[("ENABLE_IPv6", "true"), ("ENABLE_IPv4", "true")]).unwrap_err();
        assert!(e.to_string().contains("exactly one"));
    }

    #[test]
    fn an_endpoint_without_a_host_is_refused_at_start() {
        for bad in ["http://", "http://a b", "https://:443", "ftp://ec2.local"] {
            let e = load(None, &[("AWS_EC2_ENDPOINT", bad)]).unwrap_err().to_string();
            assert!(e.contains(&format!("AWS_EC2_ENDPOINT={bad:?}")), "{bad}: {e}");
        }
        assert!(load(None, &[("AWS_EC2_ENDPOINT", "https://ec2.us-east-1.amazonaws.com")]).is_ok());
    }

    #[test]
    fn hostile_settings_never_reach_a_command_or_a_path() {
        let e = load(
            None,
            &[
                ("PODIP_PRIMARY_IF", "eth0\" accept; iifname \"x"),
                ("AWS_VPC_K8S_CNI_VETHPREFIX", "e\""),
                ("IP_COOLDOWN_PERIOD", "4294967295"),
                ("PODIP_SOCKET", "relative.sock"),
                ("PODIP_CHECKPOINT", "state.json"),
                ("WARM_IP_TARGET", "99999999"),
                ("AWS_EC2_ENDPOINT", "ec2.local; rm -rf /"),
                ("PODIP_CNI_CONFLIST", "/"),
            ],
        )
        .unwrap_err()
        .to_string();
        for n in [
            "PODIP_PRIMARY_IF=",
            "AWS_VPC_K8S_CNI_VETHPREFIX=\"e\\\"\"",
            "IP_COOLDOWN_PERIOD=\"4294967295\": a whole number from 0 to 3600",
            "PODIP_SOCKET=\"relative.sock\"",
            "PODIP_CHECKPOINT=\"state.json\"",
            "WARM_IP_TARGET=\"99999999\"",
            "AWS_EC2_ENDPOINT=\"ec2.local; rm -rf /\": an http:// or https:// URL",
            "PODIP_CNI_CONFLIST=\"/\": a file in a directory",
        ] {
            assert!(e.contains(n), "missing {n}: {e}");
        }
    }
}
