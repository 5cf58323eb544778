//! `podip sim-vpc`: serves the simulated VPC the way AWS serves EC2 (the EC2 Query API on
//! loopback, and IMDSv2 per instance), as the cloud of `podipd` on a laptop or in tests. Its
//! state outlives the daemons that use it, as EC2's does. Once serving, it prints one JSON line
//! on stdout with the URLs to give the SDK (`AWS_ENDPOINT_URL_EC2`, and each launched instance's
//! `AWS_EC2_METADATA_SERVICE_ENDPOINT`).

use crate::fail::Failure;
use cloud::sim::{SimParams, SimVpc};
use ipam::Time;
use ipam::catalog::Catalog;
use ipnet::Ipv4Net;
use std::io::Write;
use std::net::SocketAddr;

/// Arguments of `podip sim-vpc`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Loopback address to serve on (port 0 picks a free one, printed when serving).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// VPC CIDR blocks (repeatable; default 10.0.0.0/16 and 100.64.0.0/16).
    #[arg(long = "vpc-cidr", value_name = "CIDR")]
    pub vpc_cidrs: Vec<Ipv4Net>,
    /// Subnets as AZ=CIDR (repeatable; default us-east-1a=10.0.0.0/20 and us-east-1a=100.64.0.0/20).
    #[arg(long = "subnet", value_name = "AZ=CIDR")]
    pub subnets: Vec<String>,
    /// Instances to launch at start, by type, in the first subnet (repeatable). More can be
    /// launched with EC2's RunInstances (e.g. `aws ec2 run-instances`).
    #[arg(long = "instance", value_name = "TYPE")]
    pub instances: Vec<String>,
    /// Seed of the VPC's random choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Scale of the simulated call latencies (1 = EC2-like seconds, 0 = instant).
    #[arg(long, default_value_t = 0.1)]
    pub latency_scale: f64,
}

#[allow(clippy::disallowed_methods)] // The service's one clock read: calls happen at wall time.
fn wall() -> Time {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    Time::from_millis(ms)
}

/// Runs `podip sim-vpc` until killed.
pub fn run(a: &Args) -> Result<(), Failure> {
    if !(0.0..=10.0).contains(&a.latency_scale) {
        return Err(Failure::input(format!("--latency-scale {}: 0 to 10", a.latency_scale)));
    }
    if !a.listen.ip().is_loopback() {
        return Err(Failure::input(format!(
            "--listen {}: a loopback address (the simulator has no authentication)",
            a.listen
        )));
    }
    let types = a
        .instances
        .iter()
        .map(|t| Catalog::embedded().get(t).map_err(|e| Failure::input(format!("--instance {t}: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let mut vpc = SimVpc::new(SimParams { seed: a.seed, ..SimParams::default() });
    let cidrs = if a.vpc_cidrs.is_empty() {
        vec!["10.0.0.0/16".parse().expect("literal"), "100.64.0.0/16".parse().expect("literal")]
    } else {
        a.vpc_cidrs.clone()
    };
    for c in cidrs {
        vpc.add_vpc_cidr(c).map_err(|e| Failure::input(format!("--vpc-cidr {c}: {e}")))?;
    }
    let subnets = if a.subnets.is_empty() {
        vec!["us-east-1a=10.0.0.0/20".to_string(), "us-east-1a=100.64.0.0/20".to_string()]
    } else {
        a.subnets.clone()
    };
    let mut first = None;
    for s in &subnets {
        let (az, cidr) = s.split_once('=').ok_or_else(|| Failure::input(format!("--subnet {s}: expected AZ=CIDR")))?;
        let cidr: Ipv4Net =
            cidr.parse().map_err(|_| Failure::input(format!("--subnet {s}: {cidr:?} is not a CIDR")))?;
        let id = vpc.add_subnet(az, cidr).map_err(|e| Failure::input(format!("--subnet {s}: {e}")))?;
        eprintln!("podip sim-vpc: subnet {id} {az} {cidr}");
        first.get_or_insert(id);
    }
    let first = first.expect("at least one subnet");
    vpc.set_now(wall());
    let mut launched = Vec::new();
    for t in types {
        let (id, primary) =
            vpc.run_instance(t, &first).map_err(|e| Failure::Other(anyhow::anyhow!("launching a {}: {e}", t.name)))?;
        eprintln!("podip sim-vpc: instance {id} {} at {}", t.name, primary.primary_ip);
        launched.push((id, t.name.clone()));
    }
    let ep = sim_endpoint::Endpoint::bind(a.listen, vpc, wall)
        .map_err(|e| Failure::Other(anyhow::anyhow!("--listen {}: {e}", a.listen)))?;
    ep.set_latency_scale(a.latency_scale);
    let instances: Vec<serde_json::Value> = launched
        .iter()
        .map(|(id, t)| serde_json::json!({"id": id.0, "type": t, "subnet": first.0, "imds": ep.imds_url(id)}))
        .collect();
    eprintln!("podip sim-vpc: EC2 at {} (set AWS_ENDPOINT_URL_EC2 to it)", ep.url());
    let ready = serde_json::json!({"ec2": ep.url(), "vpc": ep.vpc().vpc_id(), "instances": instances});
    // A reader that took the line and left does not stop the service.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{ready}").and_then(|()| out.flush());
    drop(out);
    ep.wait();
    Ok(())
}
