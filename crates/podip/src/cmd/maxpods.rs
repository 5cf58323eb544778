//! `podip maxpods`: the recommended kubelet max pods for an instance type.

use super::table;
use crate::fail::Failure;
use ipam::catalog::Catalog;
use ipam::maxpods::{MaxPodsOptions, max_pods};

/// Arguments of `podip maxpods`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// EC2 instance type, e.g. m5.large.
    pub instance_type: String,
    /// Prefix delegation (/28 prefixes; Nitro and bare-metal types only).
    #[arg(long)]
    pub prefix_delegation: bool,
    /// Custom networking: the primary ENI carries no pods.
    #[arg(long)]
    pub custom_networking: bool,
    /// MAX_ENI: use at most N ENIs (at least 1).
    #[arg(long, value_name = "N")]
    pub max_eni: Option<u32>,
    /// Print JSON: {"instance_type","max_pods","max_allowed","enis","ips_per_eni"}.
    #[arg(long)]
    pub json: bool,
}

/// Runs `podip maxpods`.
pub fn run(a: &Args) -> Result<(), Failure> {
    if a.max_eni == Some(0) {
        return Err(Failure::input("--max-eni 0: must be at least 1"));
    }
    let t = Catalog::embedded().get(&a.instance_type).map_err(Failure::input)?;
    let opts = MaxPodsOptions {
        prefix_delegation: a.prefix_delegation,
        custom_networking: a.custom_networking,
        max_eni: a.max_eni,
    };
    let mp = max_pods(t, &opts);
    if a.prefix_delegation && !mp.prefix_delegation {
        eprintln!(
            "podip: note: {} is not a Nitro or bare-metal type; prefix delegation is not possible, secondary IPs counted",
            t.name
        );
    }
    if a.custom_networking && mp.enis == 0 {
        return Err(Failure::input(format!(
            "--custom-networking: {} has a single usable ENI, none is left for pods",
            t.name
        )));
    }
    if a.json {
        return table::print_json(&mp);
    }
    let mode = if mp.prefix_delegation { "prefix delegation (/28)" } else { "secondary IPs" };
    let tb = table::kv(&[
        ("instance type", mp.instance_type.clone()),
        ("mode", mode.to_string()),
        ("ENIs for pods", mp.enis.to_string()),
        ("pod IPs per ENI", mp.ips_per_eni.to_string()),
        ("max allowed", format!("{} (ENIs x IPs per ENI + 2)", mp.max_allowed)),
        ("max pods", format!("{} (kubelet --max-pods; capped at 110 up to 30 vCPUs, else 250)", mp.max_pods)),
    ]);
    outln!("{tb}");
    Ok(())
}
