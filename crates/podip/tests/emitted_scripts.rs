//! Every shell script `podip plan --emit` writes, run as emitted: `sh -n` for all of them, and
//! the AWS CLI ones (PyPI `awscli`) to completion against a moto EC2 server (PyPI `moto`,
//! started here on loopback) holding the scenario's VPC, so the CLI's own parameter checks and
//! the EC2 wire format judge them. What they made is then read back from moto and checked; one
//! scenario runs each script twice, as an operator re-running after a failure would.
//!
//! Scenarios: the small example; three AZs in a 172.16 VPC with enough connections for two NAT
//! gateways per AZ, destinations given and room for reservations; the same in a 192.168.0.0/16
//! VPC, whose own block is never a destination; and one imported from the AWS CLI's own exports
//! of a VPC with other workloads' and a node agent's ENIs. Skipped without moto and the CLI
//! unless REQUIRE_PRIVILEGED=1 (CI).
//!
//! The kubectl scripts (aws-node's `apply.sh`, podipd's `podip-settings.sh`) run with the real
//! kubectl against the in-process API server (`kubernetes::apiserver`) holding the DaemonSet
//! they change, and the DaemonSet is read back.

use planner::scenario::Scenario;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A directory of this test's own, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let d = std::env::temp_dir().join(format!("podip-emitted-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn venv() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    let dir = std::env::var_os("MOTO_VENV").map_or_else(|| home.join(".cache/podip/motovenv"), PathBuf::from);
    let found = dir.join("bin/moto_server").exists() && dir.join("bin/aws").exists();
    let required = std::env::var("REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1");
    assert!(
        found || !required,
        "REQUIRE_PRIVILEGED=1 but no moto_server and aws in {} (scripts/test installs them)",
        dir.display()
    );
    if !found {
        eprintln!("skipping: no moto_server and aws in {} (scripts/test installs them)", dir.display());
    }
    found.then_some(dir)
}

/// A moto server on a free loopback port, stopped (by its PID) when dropped, and the AWS CLI
/// pointed at it.
struct Moto {
    child: Child,
    venv: PathBuf,
    url: String,
    home: TempDir,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    #[allow(clippy::disallowed_methods)] // Waits for a real process to listen.
    fn start(venv: &Path) -> Moto {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(venv.join("bin/moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t0 = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(30), "moto_server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto { child, venv: venv.into(), url: format!("http://127.0.0.1:{port}"), home: TempDir::new() }
    }

    /// The environment a script runs in: the CLI on PATH, pointed at moto, and nothing of the
    /// user's own AWS configuration.
    fn env(&self, c: &mut Command) {
        let path = format!("{}:{}", self.venv.join("bin").display(), std::env::var("PATH").unwrap_or_default());
        c.env_clear()
            .env("PATH", path)
            .env("HOME", self.home.path())
            .env("AWS_ENDPOINT_URL", &self.url)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_CONFIG_FILE", self.home.path().join("none"))
            .env("AWS_SHARED_CREDENTIALS_FILE", self.home.path().join("none"));
    }

    /// One `aws ec2` call, its JSON answer.
    fn ec2(&self, region: &str, args: &[&str]) -> Value {
        let mut c = Command::new(self.venv.join("bin/aws"));
        self.env(&mut c);
        let out = c.args(["--region", region, "--output", "json", "ec2"]).args(args).output().unwrap();
        assert!(out.status.success(), "aws ec2 {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        if out.stdout.iter().all(u8::is_ascii_whitespace) {
            return Value::Null;
        }
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// The test's own reads and setup, through boto3 in one process each (the scripts under test
/// use the CLI): the VPC's state as JSON, or a VPC built from a JSON spec.
const BOTO: &str = r#"
import boto3, json, sys
ec2 = boto3.client("ec2", region_name=sys.argv[1])
if sys.argv[2] == "build":
    spec = json.loads(sys.argv[3])
    vpc = ec2.create_vpc(CidrBlock=spec["cidrs"][0])["Vpc"]["VpcId"]
    for c in spec["cidrs"][1:]:
        ec2.associate_vpc_cidr_block(VpcId=vpc, CidrBlock=c)
    ids = []
    for s in spec["subnets"]:
        ids.append(ec2.create_subnet(VpcId=vpc, CidrBlock=s["cidr"], AvailabilityZone=s["az"],
            TagSpecifications=[{"ResourceType": "subnet", "Tags": [{"Key": "Name", "Value": s["name"]}]}])["Subnet"]["SubnetId"])
    # The node subnets have a route table of their own, as most EKS VPCs give them.
    rt = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    for i in ids:
        ec2.associate_route_table(RouteTableId=rt, SubnetId=i)
    print(json.dumps({"vpc": vpc, "subnets": ids}))
else:
    vpc = sys.argv[3]
    f = [{"Name": "vpc-id", "Values": [vpc]}]
    out = {"vpc": ec2.describe_vpcs(VpcIds=[vpc])["Vpcs"][0], "subnets": ec2.describe_subnets(Filters=f)["Subnets"]}
    out["reservations"] = {s["SubnetId"]: ec2.get_subnet_cidr_reservations(SubnetId=s["SubnetId"]).get("SubnetIpv4CidrReservations", []) for s in out["subnets"]}
    out["nat"] = ec2.describe_nat_gateways(Filters=f)["NatGateways"]
    out["tables"] = ec2.describe_route_tables(Filters=f)["RouteTables"]
    print(json.dumps(out, default=str))
"#;

impl Moto {
    fn boto(&self, region: &str, args: &[&str]) -> Value {
        let mut c = Command::new(self.venv.join("bin/python"));
        self.env(&mut c);
        let out = c.args(["-c", BOTO, region]).args(args).output().unwrap();
        assert!(out.status.success(), "boto3 {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// The scenario's VPC and subnets, made in moto: the VPC id and each subnet's id, in order.
fn build_vpc(m: &Moto, sc: &Scenario) -> (String, Vec<String>) {
    let spec = serde_json::json!({
        "cidrs": sc.vpc_cidrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "subnets": sc.subnets.iter().map(|s| serde_json::json!({"cidr": s.cidr.to_string(), "az": s.az, "name": s.name})).collect::<Vec<_>>(),
    });
    let v = m.boto(&sc.region, &["build", &spec.to_string()]);
    let ids = v["subnets"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
    (v["vpc"].as_str().unwrap().to_string(), ids)
}

/// `podip plan --emit` into `dir`: the JSON report.
fn plan(scenario: &Path, dir: &Path, extra: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_podip"))
        .args(["plan", scenario.to_str().unwrap(), "--quiet", "--json", "--emit", dir.to_str().unwrap()])
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "podip plan: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every script under `dir` passes `sh -n`; returns them by variant.
fn scripts(dir: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    let mut out: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for v in std::fs::read_dir(dir).unwrap() {
        let v = v.unwrap().path();
        if !v.is_dir() {
            // The mark `--emit` leaves beside the variants.
            continue;
        }
        for f in std::fs::read_dir(&v).unwrap() {
            let f = f.unwrap().path();
            if f.extension().is_some_and(|e| e == "sh") {
                let n = Command::new("sh").arg("-n").arg(&f).output().unwrap();
                assert!(n.status.success(), "sh -n {}: {}", f.display(), String::from_utf8_lossy(&n.stderr));
                out.entry(v.file_name().unwrap().to_string_lossy().into()).or_default().push(f);
            }
        }
    }
    out
}

/// Runs one script to completion in `cwd`.
fn run(m: &Moto, script: &Path, cwd: &Path, env: &[(&str, &str)]) {
    let mut c = Command::new("sh");
    m.env(&mut c);
    let out = c.arg(script).current_dir(cwd).envs(env.iter().copied()).output().unwrap();
    assert!(
        out.status.success(),
        "{} failed:\n{}\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What a VPC holds, for checking what a script made and that a second run makes nothing new.
#[derive(Debug, PartialEq)]
struct State {
    cidrs: BTreeSet<String>,
    subnets: BTreeMap<String, (String, String)>,
    /// Subnets tagged `kubernetes.io/role/cni=1` (subnet discovery).
    cni_tagged: BTreeSet<String>,
    reservations: BTreeSet<(String, String)>,
    nat: BTreeMap<String, (String, String, String)>,
    /// Route table -> (its subnets, destination -> NAT gateway).
    tables: BTreeMap<String, (BTreeSet<String>, BTreeMap<String, String>)>,
}

fn state(m: &Moto, region: &str, vpc: &str) -> State {
    let v = m.boto(region, &["state", vpc]);
    let str_of = |x: &Value| x.as_str().unwrap_or_default().to_string();
    let cidrs = v["vpc"]["CidrBlockAssociationSet"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["CidrBlockState"]["State"] == "associated")
        .map(|a| str_of(&a["CidrBlock"]))
        .collect();
    let subnets = v["subnets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (str_of(&x["SubnetId"]), (str_of(&x["CidrBlock"]), str_of(&x["AvailabilityZone"]))))
        .collect();
    let cni_tagged = v["subnets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| {
            x["Tags"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|t| t["Key"] == "kubernetes.io/role/cni" && t["Value"] == "1")
        })
        .map(|x| str_of(&x["SubnetId"]))
        .collect();
    let reservations = v["reservations"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(id, list)| {
            list.as_array()
                .unwrap()
                .iter()
                .filter(|x| x["ReservationType"] == "prefix")
                .map(|x| (id.clone(), str_of(&x["Cidr"])))
                .collect::<Vec<_>>()
        })
        .collect();
    let nat = v["nat"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (str_of(&g["NatGatewayId"]), (str_of(&g["SubnetId"]), str_of(&g["ConnectivityType"]), str_of(&g["State"])))
        })
        .collect();
    let tables = v["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|rt| {
            let subs = rt["Associations"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a["SubnetId"].as_str().map(String::from))
                .collect();
            let routes = rt["Routes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| {
                    Some((r["DestinationCidrBlock"].as_str()?.to_string(), r["NatGatewayId"].as_str()?.to_string()))
                })
                .collect();
            (str_of(&rt["RouteTableId"]), (subs, routes))
        })
        .collect();
    State { cidrs, subnets, cni_tagged, reservations, nat, tables }
}

fn contains(outer: &str, inner: &str) -> bool {
    let o: ipnet::Ipv4Net = outer.parse().unwrap();
    let i: ipnet::Ipv4Net = inner.parse().unwrap();
    o.contains(&i)
}

/// One scenario: a fresh moto per AWS script (each variant is an alternative for the same VPC),
/// every script run and what it made checked against the plan.
struct Case<'a> {
    name: &'a str,
    toml: String,
    /// Whether the plan reads the VPC from the AWS CLI's exports of it instead of the scenario.
    import: bool,
    destinations: Vec<&'a str>,
    twice: bool,
    /// Addresses in use by other workloads (import only): no reservation may hold one.
    used: Vec<std::net::Ipv4Addr>,
}

/// For an import: the VPC holds other workloads' ENIs and one a node agent made, and one
/// explicit reservation; the exports are the AWS CLI's own output.
fn export(
    m: &Moto,
    sc: &Scenario,
    vpc: &str,
    subnets: &[String],
    dir: &Path,
) -> (Vec<String>, Vec<std::net::Ipv4Addr>) {
    let r = &sc.region;
    for (i, s) in subnets.iter().enumerate() {
        m.ec2(
            r,
            &[
                "create-network-interface",
                "--subnet-id",
                s,
                "--secondary-private-ip-address-count",
                &(20 + 10 * i).to_string(),
                "--description",
                "other workload",
            ],
        );
    }
    m.ec2(
        r,
        &[
            "create-network-interface",
            "--subnet-id",
            &subnets[0],
            "--secondary-private-ip-address-count",
            "9",
            "--description",
            "aws-K8S-i-0123456789abcdef0",
            "--tag-specifications",
            "ResourceType=network-interface,Tags=[{Key=node.k8s.amazonaws.com/instance_id,Value=i-0123456789abcdef0}]",
        ],
    );
    let last = sc.subnets[0].cidr.hosts().last().unwrap();
    let explicit = format!("{}/28", std::net::Ipv4Addr::from(u32::from(last) & !15));
    m.ec2(
        r,
        &[
            "create-subnet-cidr-reservation",
            "--subnet-id",
            &subnets[0],
            "--cidr",
            &explicit,
            "--reservation-type",
            "explicit",
        ],
    );
    let filter = format!("Name=vpc-id,Values={vpc}");
    let files = [
        ("vpcs.json", m.ec2(r, &["describe-vpcs", "--vpc-ids", vpc])),
        ("subnets.json", m.ec2(r, &["describe-subnets", "--filters", &filter])),
        ("enis.json", m.ec2(r, &["describe-network-interfaces", "--filters", &filter])),
        ("reservations.json", m.ec2(r, &["get-subnet-cidr-reservations", "--subnet-id", &subnets[0]])),
    ];
    let mut used = Vec::new();
    for e in files[2].1["NetworkInterfaces"].as_array().unwrap() {
        if e["Description"] == "other workload" {
            for a in e["PrivateIpAddresses"].as_array().unwrap() {
                used.push(a["PrivateIpAddress"].as_str().unwrap().parse().unwrap());
            }
        }
    }
    for (f, v) in &files {
        std::fs::write(dir.join(f), v.to_string()).unwrap();
    }
    let arg = |flag: &str, f: &str| [flag.to_string(), dir.join(f).display().to_string()];
    let mut args = Vec::new();
    args.extend(arg("--vpcs", "vpcs.json"));
    args.extend(arg("--subnets", "subnets.json"));
    args.extend(arg("--network-interfaces", "enis.json"));
    args.extend(arg("--reservations", "reservations.json"));
    (args, used)
}

fn check(case: &Case, venv: &Path) {
    let work = TempDir::new();
    let toml_path = work.path().join("scenario.toml");
    let base = if case.import {
        // The scenario file leaves the VPC to the exports; parse it with a stand-in VPC to read
        // the subnets to build.
        Scenario::parse(&case.toml).unwrap()
    } else {
        Scenario::parse(&case.toml).unwrap_or_else(|e| panic!("{}: {e}", case.name))
    };
    // Each AWS script of each variant gets its own moto and VPC: the variants are alternatives.
    let probe = work.path().join("probe");
    std::fs::write(&toml_path, &case.toml).unwrap();
    let report = plan(&toml_path, &probe, &[]);
    let all = scripts(&probe);
    assert!(!all.is_empty(), "{}: no scripts emitted", case.name);
    // One moto per scenario, a VPC of its own per script.
    let m = Moto::start(venv);
    let mut ran = 0;
    for (variant, files) in &all {
        for f in files {
            let name = f.file_name().unwrap().to_string_lossy().to_string();
            let body = std::fs::read_to_string(f).unwrap();
            if !body.contains("ec2()") {
                assert!(body.contains("kubectl"), "{}: {variant}/{name}: neither AWS CLI nor kubectl", case.name);
                continue;
            }
            let (vpc, subnets) = build_vpc(&m, &base);
            let cwd = TempDir::new();
            let mut used = case.used.clone();
            let (dir, env_vpc) = if case.import {
                let (args, u) = export(&m, &base, &vpc, &subnets, cwd.path());
                used = u;
                let text = strip_vpc(&case.toml);
                std::fs::write(cwd.path().join("scenario.toml"), text).unwrap();
                let a: Vec<&str> = args.iter().map(String::as_str).collect();
                let d = cwd.path().join("emit");
                let r = plan(&cwd.path().join("scenario.toml"), &d, &a);
                let notes = r["import_notes"].as_array().unwrap();
                assert!(
                    notes.iter().any(|n| n.as_str().unwrap().contains("left out 1 ENIs of the cluster")),
                    "{}: the node agent's ENI is not recognised: {notes:?}",
                    case.name
                );
                (d, None)
            } else {
                (probe.clone(), Some(vpc.clone()))
            };
            let script = dir.join(variant).join(&name);
            let body = std::fs::read_to_string(&script).unwrap();
            if case.import {
                // Real ids, no lookups: the exports named them.
                assert!(body.contains(&format!("VPC_ID=\"${{VPC_ID:-{vpc}}}\"")), "{variant}/{name}: {body}");
                assert!(!body.contains("$(subnet_id "), "{variant}/{name} looks a subnet up: {body}");
            }
            let mut env: Vec<(&str, &str)> = Vec::new();
            if let Some(v) = &env_vpc {
                env.push(("VPC_ID", v));
            }
            let before = state(&m, &base.region, &vpc);
            run(&m, &script, cwd.path(), &env);
            let after = state(&m, &base.region, &vpc);
            judge(case, variant, &name, &report, &base, &subnets, &used, &before, &after, cwd.path(), &body);
            if case.twice {
                run(&m, &script, cwd.path(), &env);
                assert_eq!(
                    state(&m, &base.region, &vpc),
                    after,
                    "{}: {variant}/{name} made more when run again",
                    case.name
                );
            }
            ran += 1;
        }
    }
    assert!(ran >= 2, "{}: only {ran} AWS scripts ran", case.name);
}

/// The scenario without its `[vpc]` and `[[subnets]]`, for an import.
fn strip_vpc(toml: &str) -> String {
    let mut out = String::new();
    let mut skip = false;
    for l in toml.lines() {
        if l.starts_with('[') {
            skip = l == "[vpc]" || l == "[[subnets]]";
        }
        if !skip {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn judge(
    case: &Case,
    variant: &str,
    name: &str,
    report: &Value,
    sc: &Scenario,
    subnets: &[String],
    used: &[std::net::Ipv4Addr],
    before: &State,
    after: &State,
    cwd: &Path,
    body: &str,
) {
    let at = format!("{}: {variant}/{name}", case.name);
    let new_subnets: BTreeMap<&String, &(String, String)> =
        after.subnets.iter().filter(|(id, _)| !before.subnets.contains_key(*id)).collect();
    match name {
        "reservations.sh" => {
            // As many as the script asks for (none where the subnets have no whole free range).
            let asked = body.lines().filter(|l| l.starts_with("reserve ")).count();
            assert_eq!(after.reservations.len() - before.reservations.len(), asked, "{at}");
            if case.name != "small-cluster" {
                assert!(asked > 0, "{at}: no reservation asked for");
            }
            for (id, cidr) in &after.reservations {
                let i = subnets.iter().position(|s| s == id).expect("a scenario subnet");
                let net: ipnet::Ipv4Net = cidr.parse().unwrap();
                assert!(sc.subnets[i].cidr.contains(&net), "{at}: {cidr} outside its subnet");
                assert!(net.prefix_len() <= 28 && u32::from(net.network()) % 16 == 0, "{at}: {cidr} not /28-aligned");
                for ip in used {
                    assert!(!net.contains(ip), "{at}: {cidr} holds {ip}, in use");
                }
                let off = u32::from(net.network()) - u32::from(sc.subnets[i].cidr.network());
                assert!(off >= 4, "{at}: {cidr} holds AWS-reserved addresses");
                assert!(!net.contains(&sc.subnets[i].cidr.broadcast()), "{at}: {cidr} holds the broadcast address");
            }
        }
        "subnets.sh" => {
            let text = std::fs::read_to_string(cwd.join("eniconfig.yaml")).expect("eniconfig.yaml written");
            let azs = sc.azs();
            let mut seen = BTreeSet::new();
            for doc in yaml_serde::Deserializer::from_str(&text) {
                let v: Value = serde::Deserialize::deserialize(doc).unwrap();
                assert_eq!(v["apiVersion"], "crd.k8s.amazonaws.com/v1alpha1", "{at}");
                assert_eq!(v["kind"], "ENIConfig", "{at}");
                let az = v["metadata"]["name"].as_str().unwrap();
                assert!(azs.iter().any(|a| a == az), "{at}: ENIConfig {az} names no AZ of the cluster");
                let id = v["spec"]["subnet"].as_str().unwrap();
                let (cidr, sub_az) = after.subnets.get(id).unwrap_or_else(|| panic!("{at}: {id} is not in the VPC"));
                assert_eq!(sub_az, az, "{at}: ENIConfig {az} names a subnet in {sub_az}");
                assert!(contains("100.64.0.0/10", cidr), "{at}: pod subnet {cidr} not CG-NAT");
                assert!(after.cidrs.iter().any(|c| contains(c, cidr)), "{at}: {cidr} outside the VPC's blocks");
                assert!(v["spec"].get("securityGroups").is_none(), "{at}: security groups without POD_SECURITY_GROUPS");
                seen.insert(az.to_string());
            }
            assert_eq!(seen.len(), azs.len(), "{at}: one ENIConfig per AZ");
            assert_eq!(new_subnets.len(), azs.len(), "{at}: one pod subnet per AZ");
        }
        "nat.sh" => {
            let nat_plan = report["variants"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["id"] == "private-nat-gateway")
                .map(|v| v["nat"].clone())
                .unwrap();
            let per_az = nat_plan["gateways_per_az"].as_u64().unwrap() as usize;
            let azs = sc.azs();
            assert!(!new_subnets.is_empty(), "{at}: no node subnet made");
            for (id, (cidr, az)) in &new_subnets {
                assert!(contains("100.64.0.0/10", cidr), "{at}: node subnet {cidr} not non-routable");
                // Its route table sends every destination to a private NAT gateway of its AZ.
                let (_, (_, routes)) = after
                    .tables
                    .iter()
                    .find(|(_, (subs, _))| subs.contains(*id))
                    .unwrap_or_else(|| panic!("{at}: node subnet {cidr} has no route table of its own"));
                for d in &case.destinations {
                    let gw = routes.get(*d).unwrap_or_else(|| panic!("{at}: {cidr}'s table has no route to {d}"));
                    let (gw_subnet, kind, gw_state) = &after.nat[gw];
                    assert_eq!((kind.as_str(), gw_state.as_str()), ("private", "available"), "{at}: {gw}");
                    let gw_az = &after.subnets[gw_subnet].1;
                    assert_eq!(gw_az, az, "{at}: {cidr} in {az} routes through a gateway in {gw_az}");
                    assert!(subnets.contains(gw_subnet), "{at}: gateway {gw} not in a routable subnet");
                }
                assert_eq!(routes.len(), case.destinations.len(), "{at}: routes {routes:?}");
            }
            // Every gateway the plan counts (and prices) is made, each with node subnets of its own.
            assert_eq!(
                after.nat.len() as u64,
                nat_plan["gateways"].as_u64().unwrap(),
                "{at}: gateways {:?}",
                after.nat
            );
            assert_eq!(after.nat.len(), azs.len() * per_az, "{at}");
            let served: BTreeSet<&String> = after
                .tables
                .values()
                .filter(|(subs, _)| subs.iter().any(|s| new_subnets.contains_key(s)))
                .flat_map(|(_, routes)| routes.values())
                .collect();
            assert_eq!(served.len(), after.nat.len(), "{at}: a gateway that no node subnet routes through");
        }
        "new-subnets.sh" => {
            let azs = sc.azs();
            assert_eq!(new_subnets.len(), azs.len(), "{at}: one new subnet per AZ: {new_subnets:?}");
            let mut seen = BTreeSet::new();
            for (id, (cidr, az)) in &new_subnets {
                assert!(after.cni_tagged.contains(*id), "{at}: {cidr} not tagged kubernetes.io/role/cni=1");
                assert!(!contains("100.64.0.0/10", cidr), "{at}: {cidr} is not routable");
                assert!(after.cidrs.iter().any(|c| contains(c, cidr)), "{at}: {cidr} outside the VPC's blocks");
                for s in &sc.subnets {
                    let s = s.cidr.to_string();
                    assert!(!contains(&s, cidr) && !contains(cidr, &s), "{at}: {cidr} overlaps {s}");
                }
                seen.insert(az.clone());
                // Its pods leave as the nodes do: through the node subnet's route table.
                let table_of =
                    |id: &str| after.tables.iter().find(|(_, (subs, _))| subs.contains(id)).map(|(t, _)| t.clone());
                let node = sc.subnets.iter().position(|s| s.az == *az).map(|i| subnets[i].clone()).unwrap();
                assert_eq!(table_of(id), table_of(&node), "{at}: {cidr} does not use its AZ's node route table");
                assert!(table_of(id).is_some(), "{at}: {cidr} has no route table of the nodes'");
            }
            assert_eq!(seen.len(), azs.len(), "{at}: {seen:?}");
        }
        other => panic!("{at}: no check for {other}"),
    }
}

const THREE_AZ: &str = r#"
name = "three-az"
region = "us-west-2"
seed = 7
horizon_hours = 2
[vpc]
cidrs = ["172.16.0.0/16"]
[[subnets]]
name = "nodes-a"
az = "us-west-2a"
cidr = "172.16.0.0/20"
used = 300
pattern = "packed"
[[subnets]]
name = "nodes-b"
az = "us-west-2b"
cidr = "172.16.16.0/20"
used = 300
pattern = "packed"
[[subnets]]
name = "nodes-c"
az = "us-west-2c"
cidr = "172.16.32.0/20"
used = 300
pattern = "packed"
[[node_groups]]
instance_type = "m5.large"
nodes = 6
max = 9
[workload]
pods_per_node = 20
daemonset_pods = 2
[traffic]
connections_per_destination = 1500000
"#;

const IMPORTED: &str = r#"
name = "imported"
region = "eu-west-1"
seed = 3
horizon_hours = 2
[vpc]
cidrs = ["10.40.0.0/16"]
[[subnets]]
name = "eks-a"
az = "eu-west-1a"
cidr = "10.40.0.0/21"
[[subnets]]
name = "eks-b"
az = "eu-west-1b"
cidr = "10.40.8.0/21"
[[node_groups]]
instance_type = "m5.xlarge"
nodes = 4
max = 6
[workload]
pods_per_node = 30
daemonset_pods = 2
"#;

#[test]
fn every_emitted_script_runs_with_the_aws_cli_against_moto() {
    let Some(venv) = venv() else { return };
    let small =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/small-cluster.toml")).unwrap();
    let cases = [
        Case {
            name: "small-cluster",
            toml: small,
            import: false,
            destinations: vec!["10.0.0.0/8"],
            twice: true,
            used: vec![],
        },
        Case {
            name: "three-az",
            toml: format!("{THREE_AZ}destinations = [\"192.168.0.0/16\", \"10.100.0.0/16\"]\n"),
            import: false,
            destinations: vec!["192.168.0.0/16", "10.100.0.0/16"],
            twice: false,
            used: vec![],
        },
        Case {
            name: "vpc-192-168",
            toml: THREE_AZ
                .replace("three-az", "vpc-192-168")
                .replace("172.16.0.0/16", "192.168.0.0/16")
                .replace("172.16.", "192.168."),
            import: false,
            // Never the VPC's own block, which its local route reaches.
            destinations: vec!["10.0.0.0/8", "172.16.0.0/12"],
            twice: false,
            used: vec![],
        },
        Case {
            name: "imported",
            toml: IMPORTED.into(),
            import: true,
            destinations: vec!["10.0.0.0/8"],
            twice: false,
            used: vec![],
        },
    ];
    // Two at a time: the CLI is CPU-bound, and the machine has two cores.
    std::thread::scope(|s| {
        for pair in cases.chunks(2) {
            let handles: Vec<_> = pair.iter().map(|c| s.spawn(|| check(c, &venv))).collect();
            for h in handles {
                if let Err(e) = h.join() {
                    std::panic::resume_unwind(e);
                }
            }
        }
    });
}

/// kubectl on PATH; required when REQUIRE_PRIVILEGED=1 (scripts/test installs it).
fn kubectl() -> Option<PathBuf> {
    let found = std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| Path::new(d).join("kubectl"))
        .find(|p| p.is_file());
    let required = std::env::var("REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1");
    assert!(found.is_some() || !required, "REQUIRE_PRIVILEGED=1 but no kubectl on PATH (scripts/test installs it)");
    if found.is_none() {
        eprintln!("skipping: no kubectl on PATH");
    }
    found
}

/// The aws-node DaemonSet as the VPC CNI's manifest has it (the parts `set env` touches).
fn aws_node() -> Value {
    serde_json::json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "aws-node", "namespace": "kube-system"},
        "spec": {"selector": {"matchLabels": {"k8s-app": "aws-node"}}, "template": {
            "metadata": {"labels": {"k8s-app": "aws-node"}},
            "spec": {"containers": [
                {"name": "aws-node", "image": "amazon-k8s-cni:v1.19.0",
                 "env": [{"name": "AWS_VPC_K8S_CNI_LOGLEVEL", "value": "DEBUG"}, {"name": "WARM_ENI_TARGET", "value": "1"}]},
                {"name": "aws-eks-nodeagent", "image": "aws-network-policy-agent:v1.1.0"}
            ]}
        }}
    })
}

/// podipd's DaemonSet as `deploy/daemonset.yaml` has it (the parts `set env` touches).
fn podip_daemonset() -> Value {
    serde_json::json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "podip", "namespace": "kube-system"},
        "spec": {"selector": {"matchLabels": {"app.kubernetes.io/name": "podip"}}, "template": {
            "metadata": {"labels": {"app.kubernetes.io/name": "podip"}},
            "spec": {"containers": [
                {"name": "podipd", "image": "podip:0.1.0",
                 "env": [{"name": "AWS_VPC_K8S_CNI_LOGLEVEL", "value": "DEBUG"}, {"name": "WARM_ENI_TARGET", "value": "1"}]}
            ]}
        }}
    })
}

#[test]
fn every_kubectl_script_sets_aws_nodes_environment_through_an_api_server() {
    let Some(kubectl) = kubectl() else { return };
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/small-cluster.toml");
    let dir = TempDir::new();
    plan(Path::new(example), &dir.path().join("emit"), &[]);
    let mut ran = 0;
    for (variant, files) in scripts(&dir.path().join("emit")) {
        for f in files.iter().filter(|f| f.ends_with("apply.sh") || f.ends_with("podip-settings.sh")) {
            let podipd = f.ends_with("podip-settings.sh");
            let body = std::fs::read_to_string(f).unwrap();
            // The settings the script sets: its `  NAME=value` lines.
            let want: Vec<(String, String)> = body
                .lines()
                .filter_map(|l| l.trim().trim_end_matches('\\').trim().split_once('='))
                .filter(|(k, _)| k.chars().all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit()))
                .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
                .collect();
            assert!(!want.is_empty(), "{variant}: sets nothing: {body}");
            let api = kubernetes::apiserver::ApiServer::start().unwrap();
            api.apply("daemonsets", if podipd { podip_daemonset() } else { aws_node() });
            let home = TempDir::new();
            let config = home.path().join("kubeconfig");
            std::fs::write(&config, api.kubeconfig()).unwrap();
            let bin = kubectl.parent().unwrap().display().to_string();
            let out = Command::new("sh")
                .arg(f)
                .env_clear()
                .env("PATH", format!("{bin}:/usr/bin:/bin"))
                .env("HOME", home.path())
                .env("KUBECONFIG", &config)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}{}",
                f.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let ds = api.objects("daemonsets").pop().unwrap();
            let containers = ds["spec"]["template"]["spec"]["containers"].as_array().unwrap();
            if podipd {
                assert_eq!(ds["metadata"]["name"], "podip", "{variant}: {ds}");
                assert_eq!(containers.len(), 1, "{variant}: {ds}");
                assert_eq!(containers[0]["image"], "podip:0.1.0");
            } else {
                assert_eq!(containers.len(), 2, "{variant}: {ds}");
                assert_eq!(containers[0]["image"], "amazon-k8s-cni:v1.19.0");
            }
            let env: BTreeMap<String, String> = containers[0]["env"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| (e["name"].as_str().unwrap().into(), e["value"].as_str().unwrap_or_default().into()))
                .collect();
            for (k, v) in &want {
                assert_eq!(env.get(k), Some(v), "{variant}: {k} in {env:?}");
            }
            assert_eq!(env["AWS_VPC_K8S_CNI_LOGLEVEL"], "DEBUG", "{variant}: the other settings stay");
            let verbs: BTreeSet<String> = api.accesses().into_iter().map(|a| a.verb).collect();
            assert!(verbs.contains("patch"), "{variant}: kubectl never patched: {verbs:?}");
            ran += 1;
        }
    }
    // aws-node's: the tuned warm pool and the two prefix variants; podipd's: its two variants.
    assert!(ran >= 5, "only {ran} kubectl scripts");
}
