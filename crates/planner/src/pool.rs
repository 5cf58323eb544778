//! `podip pool`: one node on the simulated VPC; pods arrive one at a time and the pool settles
//! between arrivals; the settled pool is the answer.

use crate::node::{NodeSim, NodeSimError};
use cloud::sim::{SimParams, SimVpc};
use ipam::Time;
use ipam::addr::PodKey;
use ipam::catalog::{Catalog, UnknownInstanceType};
use ipam::config::{EniTemplate, NodeConfig, NodeSettings, SettingsError};
use ipam::datastore::CidrMode;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;
use thiserror::Error;

/// How long a pod waits for the pool to grow before it counts as not placed.
pub const POD_PATIENCE: Duration = Duration::from_secs(600);

/// The `podip pool` experiment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolRequest {
    /// Instance type name.
    pub instance_type: String,
    /// Pods needing an address.
    pub pods: u32,
    /// Node settings; custom networking's template is filled in by the experiment.
    pub settings: NodeSettings,
    /// Custom networking on.
    pub custom_networking: bool,
    /// Seed of the simulated VPC and the engine.
    pub seed: u64,
}

/// One ENI of the settled pool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EniReport {
    /// ENI id.
    pub id: String,
    /// Whether it is the primary ENI.
    pub primary: bool,
    /// Attachment device index.
    pub device_index: u32,
    /// Subnet id.
    pub subnet: String,
    /// Number of secondary addresses.
    pub secondary_ips: u32,
    /// Number of /28 prefixes.
    pub prefixes: u32,
    /// Pods on this ENI.
    pub pods: u32,
    /// The secondary addresses.
    pub secondary_ip_list: Vec<String>,
    /// The prefixes.
    pub prefix_list: Vec<String>,
}

/// The settled pool (the `podip pool --json` schema).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PoolReport {
    /// Instance type.
    pub instance_type: String,
    /// `secondary-ip` or `prefix`.
    pub mode: &'static str,
    /// Max pods in effect (the cap on pool growth).
    pub max_pods: u32,
    /// Pods asked for.
    pub pods: u32,
    /// ENIs, primary first.
    pub enis: Vec<EniReport>,
    /// Addresses usable by pods.
    pub total_ips: u64,
    /// Addresses held by pods.
    pub assigned: u64,
    /// Addresses free for new pods.
    pub available: u64,
    /// EC2 calls made by the pool, per action.
    pub ec2_calls: BTreeMap<String, u64>,
    /// Calls throttled, per action (only actions that were).
    pub throttled: BTreeMap<String, u64>,
    /// Whether the pool settled after the last pod.
    pub settled: bool,
    /// Pods that got no address.
    pub unplaced: u32,
    /// Notes (e.g. a setting that fell back).
    pub notes: Vec<String>,
}

/// Why the experiment could not run.
#[derive(Debug, Error)]
pub enum PoolError {
    /// Unknown instance type.
    #[error(transparent)]
    UnknownType(#[from] UnknownInstanceType),
    /// Bad settings.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// More pods than the node may run.
    #[error("--pods {pods} is more than the node's max pods {max_pods} for {instance_type}")]
    TooManyPods {
        /// Pods asked for.
        pods: u32,
        /// The limit.
        max_pods: u32,
        /// Instance type.
        instance_type: String,
    },
    /// The simulation failed.
    #[error(transparent)]
    Sim(#[from] NodeSimError),
}

impl PoolError {
    /// Whether the error is the user's input (exit code 2).
    pub fn is_input(&self) -> bool {
        !matches!(self, PoolError::Sim(_))
    }
}

/// Runs the experiment.
///
/// # Errors
/// Bad input, or a simulation failure.
pub fn run_pool(req: &PoolRequest) -> Result<PoolReport, PoolError> {
    let t = Catalog::embedded().get(&req.instance_type)?;
    let mut vpc = SimVpc::new(SimParams { seed: req.seed, ..SimParams::default() });
    // Layout constants are valid by construction.
    vpc.add_vpc_cidr("10.0.0.0/16".parse().expect("cidr")).expect("fresh VPC");
    vpc.add_vpc_cidr("100.64.0.0/16".parse().expect("cidr")).expect("fresh VPC");
    let node_subnet = vpc.add_subnet("us-east-1a", "10.0.0.0/18".parse().expect("cidr")).expect("fresh VPC");
    let pod_subnet = vpc.add_subnet("us-east-1a", "100.64.0.0/18".parse().expect("cidr")).expect("fresh VPC");
    let mut settings = req.settings.clone();
    if req.custom_networking {
        settings.custom_networking = Some(EniTemplate { subnet: pod_subnet, security_groups: vec![] });
    }
    let cfg = NodeConfig::resolve(t, node_subnet, &settings)?;
    if req.pods > cfg.limits.max_pods {
        return Err(PoolError::TooManyPods {
            pods: req.pods,
            max_pods: cfg.limits.max_pods,
            instance_type: t.name.clone(),
        });
    }
    let notes = cfg.notes.clone();
    let mode = match cfg.mode {
        CidrMode::Prefix => "prefix",
        CidrMode::Secondary => "secondary-ip",
        CidrMode::Ipv6 => "ipv6",
    };
    let max_pods = cfg.limits.max_pods;
    let mut node = NodeSim::launch(&mut vpc, t, cfg, req.seed, Time::from_secs(0))?;
    let mut settled = node.settle(&mut vpc)?;
    let mut unplaced = 0;
    for i in 0..req.pods {
        let key = PodKey::new(format!("pod-{i}"));
        if node.add_pod(&mut vpc, &key, POD_PATIENCE)?.is_none() {
            unplaced += 1;
        }
        settled = node.settle(&mut vpc)?;
    }
    Ok(report(&node, &vpc, t.name.clone(), mode, max_pods, req.pods, settled, unplaced, notes))
}

#[allow(clippy::too_many_arguments)]
fn report(
    node: &NodeSim,
    vpc: &SimVpc,
    instance_type: String,
    mode: &'static str,
    max_pods: u32,
    pods: u32,
    settled: bool,
    unplaced: u32,
    notes: Vec<String>,
) -> PoolReport {
    let ds = node.engine().datastore();
    let now = node.now();
    let enis = ds
        .enis()
        .iter()
        .map(|e| EniReport {
            id: e.id.to_string(),
            primary: e.primary,
            device_index: e.device_index,
            subnet: e.subnet.to_string(),
            secondary_ips: e.secondary_ips().count() as u32,
            prefixes: e.prefixes().count() as u32,
            pods: e.assigned(),
            secondary_ip_list: e.secondary_ips().map(|ip| ip.to_string()).collect(),
            prefix_list: e.prefixes().map(|p| p.to_string()).collect(),
        })
        .collect();
    let s = ds.stats(now);
    let skip = |a: &cloud::Action| matches!(a, cloud::Action::RunInstances | cloud::Action::TerminateInstances);
    let ec2_calls =
        vpc.action_stats().iter().filter(|(a, _)| !skip(a)).map(|(a, st)| (a.name().to_string(), st.calls)).collect();
    let throttled = vpc
        .action_stats()
        .iter()
        .filter(|(a, st)| !skip(a) && st.throttled > 0)
        .map(|(a, st)| (a.name().to_string(), st.throttled))
        .collect();
    PoolReport {
        instance_type,
        mode,
        max_pods,
        pods,
        enis,
        total_ips: s.total,
        assigned: s.assigned,
        available: s.total - s.assigned,
        ec2_calls,
        throttled,
        settled,
        unplaced,
        notes,
    }
}

#[cfg(test)]
mod tests;
