//! Node settings as a user gives them (aws-node's names and defaults) and the validated node
//! configuration the engine runs on.

use crate::addr::SubnetId;
use crate::catalog::InstanceType;
use crate::datastore::{CidrMode, Packing};
use crate::maxpods::{MaxPodsOptions, eni_limit, max_pods};
use crate::policy::{DEFAULT_COOLDOWN, PolicyConfig, PoolLimits, WarmTargets};
use std::fmt;
use std::time::Duration;
use thiserror::Error;

/// Where custom networking puts pod ENIs (an `ENIConfig`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EniTemplate {
    /// Pod subnet, in the node's AZ.
    pub subnet: SubnetId,
    /// Security groups (empty: the primary ENI's).
    pub security_groups: Vec<String>,
}

/// The node's settings, with the VPC CNI's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSettings {
    /// `WARM_ENI_TARGET` (default 1).
    pub warm_eni: u32,
    /// `WARM_IP_TARGET` (default 0 = unset).
    pub warm_ip: u32,
    /// `MINIMUM_IP_TARGET` (default 0 = unset).
    pub minimum_ip: u32,
    /// `WARM_PREFIX_TARGET` (default: 1 with prefix delegation, as the shipped manifest sets).
    pub warm_prefix: Option<u32>,
    /// `ENABLE_PREFIX_DELEGATION`.
    pub prefix_delegation: bool,
    /// `ENABLE_IPv6`: pods get addresses from the node's /80.
    pub ipv6: bool,
    /// Custom networking's ENIConfig, when on.
    pub custom_networking: Option<EniTemplate>,
    /// `MAX_ENI`.
    pub max_eni: Option<u32>,
    /// Kubelet max pods (default: what `podip maxpods` recommends).
    pub max_pods: Option<u32>,
    /// `IP_COOLDOWN_PERIOD`.
    pub cooldown: Duration,
    /// podip's corrections (cooldown not available, never returned while cooling).
    pub corrected: bool,
    /// Address choice (default: dense when corrected, random otherwise).
    pub packing: Option<Packing>,
    /// `ENABLE_SUBNET_DISCOVERY` (default on, as in the VPC CNI since 1.18; not used under
    /// custom networking).
    pub subnet_discovery: bool,
    /// `AWS_MANAGE_ENIS_NON_SCHEDULABLE`.
    pub manage_enis_non_schedulable: bool,
    /// The node's periodic work against EC2 (off by default: the planner's VPC CNI reconciles
    /// against the free instance metadata, not EC2).
    pub housekeeping: Housekeeping,
    /// Which warm-pool policy decides.
    pub pool_policy: PoolPolicyChoice,
    /// The node's share of the account's mutating EC2 calls (none: unbounded, as the VPC CNI).
    pub call_budget: Option<CallBudget>,
    /// With prefix delegation, when EC2 has no free /28 (`InsufficientCidrBlocks`), go on with
    /// secondary addresses on the same ENIs and back to prefixes once they can be had (podip's);
    /// off, growth waits out the 120 s back-off as the VPC CNI's does.
    pub prefix_fallback: bool,
}

/// A node's client-side token bucket for mutating EC2 calls: its share of a budget for the
/// whole cluster, so that a rollout stays under the account's API buckets (which every other
/// workload in the account and region shares).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CallBudget {
    /// Tokens added per hour (fine enough for a thousand nodes' shares of a few calls a second).
    pub per_hour: u32,
    /// Tokens the bucket holds at most (at least 1).
    pub burst: u32,
    /// Paced: the cluster's burst cannot give every node a whole call, so a node calls only in
    /// its own slot (every `burst` calls' worth of its rate, at a phase of its own) and an unused
    /// slot is lost. Nodes that all need a call at once (a rollout) then call one after another
    /// instead of all in the same second.
    #[serde(default)]
    pub paced: bool,
}

impl CallBudget {
    /// A node's share of `cluster_per_second` calls per second and `cluster_burst`, spread over
    /// `nodes` nodes (at least one call per node an hour, and a burst of at least 1); paced when
    /// the cluster's burst is smaller than the nodes.
    pub fn share(cluster_per_second: f64, cluster_burst: u32, nodes: u32) -> CallBudget {
        let nodes = nodes.max(1);
        let per_hour = (cluster_per_second.max(0.0) * 3600.0 / f64::from(nodes)).floor();
        CallBudget {
            per_hour: (per_hour.min(f64::from(u32::MAX)) as u32).max(1),
            burst: (cluster_burst / nodes).max(1),
            paced: cluster_burst < nodes,
        }
    }
}

/// The adaptive policy's target when none is given: one pod start in a hundred may find no
/// warm address and wait for a refill (an assign, a fraction of a second; an ENI, seconds).
pub const DEFAULT_MISSES_PER_MILLION: u32 = 10_000;

/// Which warm-pool policy a node runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PoolPolicyChoice {
    /// The VPC CNI's fixed warm targets.
    #[default]
    VpcCni,
    /// podip's: the warm pool follows the node's demand ([`crate::demand`]), aiming at this
    /// many pod starts in a million finding no warm address. `MINIMUM_IP_TARGET`, when set, is a
    /// floor and `WARM_IP_TARGET` a ceiling.
    Adaptive {
        /// Target misses per million pod starts.
        misses_per_million: u32,
    },
}

/// The node's periodic work against EC2, beside the pool cycle.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Housekeeping {
    /// Read the node's ENIs from EC2 this often and correct the datastore (the VPC CNI's 60 s
    /// `nodeIPPoolReconcileInterval`). Errors that show the datastore wrong reconcile at once
    /// whatever this is.
    pub reconcile_every: Option<Duration>,
    /// List the node's unattached ENIs this often and delete those seen unattached for
    /// [`crate::engine::LEAK_GRACE`].
    pub leak_sweep_every: Option<Duration>,
}

impl Housekeeping {
    /// What the daemon runs: a reconcile every 60 s and a leak sweep every 5 minutes.
    pub fn daemon() -> Housekeeping {
        Housekeeping {
            reconcile_every: Some(Duration::from_secs(60)),
            leak_sweep_every: Some(Duration::from_secs(300)),
        }
    }
}

impl Default for NodeSettings {
    fn default() -> Self {
        NodeSettings {
            warm_eni: 1,
            warm_ip: 0,
            minimum_ip: 0,
            warm_prefix: None,
            prefix_delegation: false,
            ipv6: false,
            custom_networking: None,
            max_eni: None,
            max_pods: None,
            cooldown: DEFAULT_COOLDOWN,
            corrected: true,
            packing: None,
            subnet_discovery: true,
            manage_enis_non_schedulable: false,
            housekeeping: Housekeeping::default(),
            pool_policy: PoolPolicyChoice::VpcCni,
            call_budget: None,
            prefix_fallback: false,
        }
    }
}

/// One bad setting: its name, value and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadSetting {
    /// aws-node name of the setting.
    pub field: &'static str,
    /// The value given.
    pub value: String,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for BadSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}: {}", self.field, self.value, self.reason)
    }
}

/// Every bad setting found, at once.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("invalid node settings: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct SettingsError(pub Vec<BadSetting>);

/// A validated node configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// The instance type's name.
    pub instance_type: String,
    /// The node's (primary ENI's) subnet.
    pub node_subnet: SubnetId,
    /// The node's availability zone, when known (subnet discovery needs it).
    pub az: Option<String>,
    /// Custom networking's pod ENI template.
    pub pod_eni: Option<EniTemplate>,
    /// Which blocks give pods addresses.
    pub mode: CidrMode,
    /// Warm targets in effect.
    pub targets: WarmTargets,
    /// Pool limits.
    pub limits: PoolLimits,
    /// Cooldown after release.
    pub cooldown: Duration,
    /// podip's corrections on.
    pub corrected: bool,
    /// Address choice.
    pub packing: Packing,
    /// Subnet discovery on.
    pub subnet_discovery: bool,
    /// Manage ENIs while unschedulable.
    pub manage_enis_non_schedulable: bool,
    /// Periodic reconcile and leak sweep.
    pub housekeeping: Housekeeping,
    /// Which warm-pool policy decides.
    pub pool_policy: PoolPolicyChoice,
    /// The node's share of the account's mutating EC2 calls.
    pub call_budget: Option<CallBudget>,
    /// Secondary addresses when no /28 is free (see [`NodeSettings::prefix_fallback`]).
    pub prefix_fallback: bool,
    /// Notes for the user (e.g. prefix delegation fell back).
    pub notes: Vec<String>,
}

impl NodeConfig {
    /// Validates `s` for instance type `t` in `node_subnet`.
    ///
    /// # Errors
    /// Every bad setting at once, each naming its field and value.
    pub fn resolve(t: &InstanceType, node_subnet: SubnetId, s: &NodeSettings) -> Result<NodeConfig, SettingsError> {
        let mut bad = Vec::new();
        let mut notes = Vec::new();
        let mut push = |field: &'static str, value: String, reason: &str| {
            bad.push(BadSetting { field, value, reason: reason.to_string() })
        };
        let mut pd = s.prefix_delegation;
        if pd && !t.supports_prefix_delegation() && !s.ipv6 {
            notes.push(format!(
                "{} is not a Nitro or bare-metal type: prefix delegation is not possible, secondary IPs are used (as the VPC CNI does)",
                t.name
            ));
            pd = false;
        }
        let warm_prefix = s.warm_prefix.unwrap_or(u32::from(pd));
        // The adaptive policy sets its own warm targets: none is needed.
        let fixed = s.pool_policy == PoolPolicyChoice::VpcCni;
        if fixed && pd && s.warm_ip == 0 && s.minimum_ip == 0 && warm_prefix == 0 {
            push(
                "WARM_PREFIX_TARGET",
                "0".into(),
                "with prefix delegation, WARM_PREFIX_TARGET or WARM_IP_TARGET/MINIMUM_IP_TARGET must be above 0",
            );
        }
        if s.ipv6 && s.custom_networking.is_some() {
            push("AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG", "true".into(), "custom networking does not support IPv6");
        }
        if s.ipv6 && t.ipv6_per_eni == Some(0) {
            push("ENABLE_IPv6", "true".into(), &format!("{} does not support IPv6", t.name));
        }
        if s.ipv6 && !t.supports_prefix_delegation() {
            push("ENABLE_IPv6", "true".into(), &format!("{} is not Nitro: IPv6 prefixes need Nitro", t.name));
        }
        if let Some(0) = s.max_pods {
            push("max_pods", "0".into(), "must be at least 1");
        }
        if s.max_eni == Some(0) {
            push("MAX_ENI", "0".into(), "must be at least 1");
        }
        let cn = s.custom_networking.is_some();
        let mp = max_pods(t, &MaxPodsOptions { prefix_delegation: pd, custom_networking: cn, max_eni: s.max_eni });
        if cn && mp.enis == 0 {
            push(
                "AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG",
                "true".into(),
                &format!("{} has a single usable ENI: custom networking leaves none for pods", t.name),
            );
        }
        if !bad.is_empty() {
            return Err(SettingsError(bad));
        }
        let mode = if s.ipv6 {
            CidrMode::Ipv6
        } else if pd {
            CidrMode::Prefix
        } else {
            CidrMode::Secondary
        };
        let limits = PoolLimits {
            max_enis: eni_limit(t, s.max_eni),
            blocks_per_eni: t.ipv4_per_eni - 1,
            max_pods: s.max_pods.unwrap_or(mp.max_pods),
        };
        Ok(NodeConfig {
            instance_type: t.name.clone(),
            node_subnet,
            az: None,
            pod_eni: s.custom_networking.clone(),
            mode,
            targets: WarmTargets { warm_eni: s.warm_eni, warm_ip: s.warm_ip, minimum_ip: s.minimum_ip, warm_prefix },
            limits,
            cooldown: s.cooldown,
            corrected: s.corrected,
            packing: s.packing.unwrap_or(if s.corrected { Packing::Dense } else { Packing::Random }),
            subnet_discovery: s.subnet_discovery && !cn,
            manage_enis_non_schedulable: s.manage_enis_non_schedulable,
            housekeeping: s.housekeeping,
            pool_policy: s.pool_policy,
            call_budget: s.call_budget.map(|b| CallBudget { burst: b.burst.max(1), ..b }),
            prefix_fallback: s.prefix_fallback,
            notes,
        })
    }

    /// The policy's view of this configuration.
    pub fn policy_config(&self) -> PolicyConfig {
        PolicyConfig {
            targets: self.targets,
            prefix_delegation: self.mode == CidrMode::Prefix,
            limits: self.limits,
            corrected: self.corrected,
        }
    }

    /// Whether custom networking is on (the primary ENI carries no pods).
    pub fn custom_networking(&self) -> bool {
        self.pod_eni.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;

    fn t(name: &str) -> &'static InstanceType {
        Catalog::embedded().get(name).unwrap()
    }

    #[test]
    fn defaults_are_the_vpc_cnis() {
        let c = NodeConfig::resolve(t("m5.large"), "subnet-1".into(), &NodeSettings::default()).unwrap();
        assert_eq!(c.targets, WarmTargets { warm_eni: 1, warm_ip: 0, minimum_ip: 0, warm_prefix: 0 });
        assert_eq!(c.limits, PoolLimits { max_enis: 3, blocks_per_eni: 9, max_pods: 29 });
        let pd = NodeSettings { prefix_delegation: true, ..NodeSettings::default() };
        let c = NodeConfig::resolve(t("m5.large"), "subnet-1".into(), &pd).unwrap();
        assert_eq!((c.mode, c.targets.warm_prefix, c.limits.max_pods), (CidrMode::Prefix, 1, 110));
    }

    #[test]
    fn prefix_delegation_on_xen_falls_back_with_a_note() {
        let pd = NodeSettings { prefix_delegation: true, ..NodeSettings::default() };
        let c = NodeConfig::resolve(t("t2.micro"), "subnet-1".into(), &pd).unwrap();
        assert_eq!(c.mode, CidrMode::Secondary);
        assert!(c.notes[0].contains("t2.micro"));
    }

    #[test]
    fn every_bad_setting_is_named_at_once() {
        let s = NodeSettings {
            prefix_delegation: true,
            warm_prefix: Some(0),
            max_pods: Some(0),
            ipv6: true,
            custom_networking: Some(EniTemplate { subnet: "subnet-2".into(), security_groups: vec![] }),
            ..NodeSettings::default()
        };
        let err = NodeConfig::resolve(t("m5.large"), "subnet-1".into(), &s).unwrap_err();
        let fields: Vec<_> = err.0.iter().map(|b| b.field).collect();
        assert!(fields.contains(&"max_pods"), "{err}");
        assert!(fields.contains(&"AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG"), "{err}");
        let pd_only = NodeSettings { prefix_delegation: true, warm_prefix: Some(0), ..NodeSettings::default() };
        let err = NodeConfig::resolve(t("m5.large"), "subnet-1".into(), &pd_only).unwrap_err();
        assert!(err.to_string().contains("WARM_PREFIX_TARGET=0"), "{err}");
    }

    #[test]
    fn a_cluster_budget_is_shared_over_its_nodes() {
        // Half of a 5/s mutating bucket over 1,000 nodes: 9 calls an hour each; the burst is at
        // least one.
        assert_eq!(CallBudget::share(2.5, 50, 1000), CallBudget { per_hour: 9, burst: 1, paced: true });
        assert_eq!(CallBudget::share(2.5, 50, 10), CallBudget { per_hour: 900, burst: 5, paced: false });
        assert_eq!(CallBudget::share(f64::NAN, 0, 0), CallBudget { per_hour: 1, burst: 1, paced: true });
    }
}
