//! `podip pool`: one node's settled warm pool on the simulated VPC.

use super::table;
use crate::fail::Failure;
use ipam::config::NodeSettings;
use ipam::policy::DEFAULT_COOLDOWN;
use planner::pool::{PoolError, PoolReport, PoolRequest, run_pool};

/// Arguments of `podip pool`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// EC2 instance type, e.g. m5.large.
    #[arg(long, value_name = "TYPE")]
    pub instance_type: String,
    /// Pods that need an address (host-network pods excluded).
    #[arg(long, value_name = "N")]
    pub pods: u32,
    /// WARM_ENI_TARGET (default 1).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub warm_eni_target: u32,
    /// WARM_IP_TARGET (default 0 = unset).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub warm_ip_target: u32,
    /// MINIMUM_IP_TARGET (default 0 = unset).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub minimum_ip_target: u32,
    /// WARM_PREFIX_TARGET (default 1 with prefix delegation).
    #[arg(long, value_name = "N")]
    pub warm_prefix_target: Option<u32>,
    /// ENABLE_PREFIX_DELEGATION.
    #[arg(long)]
    pub prefix_delegation: bool,
    /// Custom networking: pod ENIs in a separate pod subnet, none on the primary ENI.
    #[arg(long)]
    pub custom_networking: bool,
    /// MAX_ENI.
    #[arg(long, value_name = "N")]
    pub max_eni: Option<u32>,
    /// Kubelet max pods (default: what `podip maxpods` recommends).
    #[arg(long, value_name = "N")]
    pub max_pods: Option<u32>,
    /// Seed of the simulated VPC's random choices.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// The flag behind an aws-node setting name, for error messages.
fn flag_of(setting: &str) -> &str {
    match setting {
        "WARM_ENI_TARGET" => "--warm-eni-target",
        "WARM_IP_TARGET" => "--warm-ip-target",
        "MINIMUM_IP_TARGET" => "--minimum-ip-target",
        "WARM_PREFIX_TARGET" => "--warm-prefix-target",
        "MAX_ENI" => "--max-eni",
        "max_pods" => "--max-pods",
        "AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG" => "--custom-networking",
        other => other,
    }
}

/// Runs `podip pool`.
pub fn run(a: &Args) -> Result<(), Failure> {
    let settings = NodeSettings {
        warm_eni: a.warm_eni_target,
        warm_ip: a.warm_ip_target,
        minimum_ip: a.minimum_ip_target,
        warm_prefix: a.warm_prefix_target,
        prefix_delegation: a.prefix_delegation,
        max_eni: a.max_eni,
        max_pods: a.max_pods,
        cooldown: DEFAULT_COOLDOWN,
        ..NodeSettings::default()
    };
    let req = PoolRequest {
        instance_type: a.instance_type.clone(),
        pods: a.pods,
        settings,
        custom_networking: a.custom_networking,
        seed: a.seed,
    };
    let report = run_pool(&req).map_err(|e| match e {
        PoolError::Settings(s) => Failure::input(
            s.0.iter()
                .map(|b| format!("{} {} ({}): {}", flag_of(b.field), b.value, b.field, b.reason))
                .collect::<Vec<_>>()
                .join("; "),
        ),
        e if e.is_input() => Failure::input(e),
        e => Failure::Other(e.into()),
    })?;
    for n in &report.notes {
        eprintln!("podip: note: {n}");
    }
    if report.unplaced > 0 {
        eprintln!("podip: warning: {} pods got no address", report.unplaced);
    }
    if a.json {
        return table::print_json(&report);
    }
    print_table(&report);
    Ok(())
}

fn print_table(r: &PoolReport) {
    outln!(
        "{}, {} mode, {} pods (max pods {}), simulated VPC{}",
        r.instance_type,
        r.mode,
        r.pods,
        r.max_pods,
        if r.settled { "" } else { " (pool did not settle)" }
    );
    let mut t = table::new(&["ENI", "primary", "device", "subnet", "secondary IPs", "prefixes", "pods"]);
    for e in &r.enis {
        t.add_row(vec![
            e.id.clone(),
            if e.primary { "yes".into() } else { "".into() },
            e.device_index.to_string(),
            e.subnet.clone(),
            e.secondary_ips.to_string(),
            e.prefixes.to_string(),
            e.pods.to_string(),
        ]);
    }
    outln!("{t}");
    outln!("pod addresses: {} total, {} assigned, {} available (idle)", r.total_ips, r.assigned, r.available);
    let calls: Vec<String> = r.ec2_calls.iter().map(|(a, n)| format!("{a} {n}")).collect();
    outln!("EC2 calls: {}", if calls.is_empty() { "none".to_string() } else { calls.join(", ") });
    if !r.throttled.is_empty() {
        let th: Vec<String> = r.throttled.iter().map(|(a, n)| format!("{a} {n}")).collect();
        outln!("throttled: {}", th.join(", "));
    }
}
