//! `podip sim-vpc`: serves the simulated VPC on a Unix socket, as the cloud of `podipd` on a
//! laptop or in tests. Its state outlives the daemons that use it, as EC2's does.

use crate::fail::Failure;
use cloud::remote::serve;
use cloud::sim::{SimParams, SimVpc};
use ipam::Time;
use ipnet::Ipv4Net;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

/// Arguments of `podip sim-vpc`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Socket to serve on (owner-only permissions).
    #[arg(long, value_name = "PATH")]
    pub socket: PathBuf,
    /// VPC CIDR blocks (repeatable; default 10.0.0.0/16 and 100.64.0.0/16).
    #[arg(long = "vpc-cidr", value_name = "CIDR")]
    pub vpc_cidrs: Vec<Ipv4Net>,
    /// Subnets as AZ=CIDR (repeatable; default us-east-1a=10.0.0.0/20 and us-east-1a=100.64.0.0/20).
    #[arg(long = "subnet", value_name = "AZ=CIDR")]
    pub subnets: Vec<String>,
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
    for s in &subnets {
        let (az, cidr) = s.split_once('=').ok_or_else(|| Failure::input(format!("--subnet {s}: expected AZ=CIDR")))?;
        let cidr: Ipv4Net =
            cidr.parse().map_err(|_| Failure::input(format!("--subnet {s}: {cidr:?} is not a CIDR")))?;
        let id = vpc.add_subnet(az, cidr).map_err(|e| Failure::input(format!("--subnet {s}: {e}")))?;
        eprintln!("podip sim-vpc: subnet {id} {az} {cidr}");
    }
    let _ = std::fs::remove_file(&a.socket);
    let listener = std::os::unix::net::UnixListener::bind(&a.socket)
        .map_err(|e| Failure::Other(anyhow::anyhow!("{}: {e}", a.socket.display())))?;
    std::fs::set_permissions(&a.socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Failure::Other(anyhow::anyhow!("{}: {e}", a.socket.display())))?;
    eprintln!("podip sim-vpc: serving on {}", a.socket.display());
    let scale = a.latency_scale;
    serve(listener, vpc, wall, move || scale);
    Ok(())
}
