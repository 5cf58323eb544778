//! The variants that replace aws-node with podipd: podip's adaptive warm pool on secondary
//! addresses (strategy 1) and with prefixes (strategy 2), judged by the same rules as every
//! other variant.

use crate::artifacts::{max_pods_files, podipd_env};
use crate::scenario::Scenario;
use crate::strategy::{Disruption, Strategy, Variant, base_settings, layout, spec};
use ipam::addr::SubnetId;
use ipam::config::{CallBudget, DEFAULT_MISSES_PER_MILLION, NodeSettings, PoolPolicyChoice};
use std::collections::BTreeMap;

/// The cluster's burst of mutating calls a budget allows at once: the smallest mutating bucket's
/// capacity (50, `aws-and-peers.md` §3.1), as podipd takes it.
pub const CLUSTER_BURST: u32 = 50;

/// podipd's settings for a variant, as its DaemonSet takes them.
fn settings_env(sc: &Scenario, prefixes: bool) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("PODIP_POOL_POLICY", "adaptive".to_string()),
        ("PODIP_POD_START_MISSES_PER_MILLION", DEFAULT_MISSES_PER_MILLION.to_string()),
        ("WARM_IP_TARGET", "0".into()),
        ("MINIMUM_IP_TARGET", "0".into()),
    ];
    env.push(("ENABLE_PREFIX_DELEGATION", prefixes.to_string()));
    // The cooldown the plan ran with: today's.
    env.push(("IP_COOLDOWN_PERIOD", sc.cni.cooldown_secs.to_string()));
    if let Some(rate) = sc.podip_calls_per_second {
        env.push(("PODIP_CLUSTER_EC2_CALLS_PER_SECOND", rate.to_string()));
        env.push(("PODIP_CLUSTER_NODES", sc.peak_nodes().to_string()));
    }
    env
}

/// podipd on every node with its adaptive pool, without and with prefix delegation.
pub fn variants(sc: &Scenario) -> Vec<Variant> {
    let nitro = sc.node_groups.iter().all(|g| g.instance_type.supports_prefix_delegation());
    let mut out = Vec::new();
    for prefixes in [false, true] {
        let l = layout(sc, &[], false);
        let s = NodeSettings {
            prefix_delegation: prefixes,
            warm_prefix: None,
            warm_ip: 0,
            minimum_ip: 0,
            // podip's own address handling: a cooling address is never handed out, and dense
            // packing hands whole prefixes and ENIs back first.
            corrected: true,
            packing: None,
            pool_policy: PoolPolicyChoice::Adaptive { misses_per_million: DEFAULT_MISSES_PER_MILLION },
            prefix_fallback: true,
            call_budget: sc.podip_calls_per_second.map(|r| CallBudget::share(r, CLUSTER_BURST, sc.peak_nodes())),
            ..base_settings(sc)
        };
        let mut config = BTreeMap::new();
        config.insert("podip-settings.sh".into(), podipd_env(&settings_env(sc, prefixes)));
        let mut caveats = vec![
            "podipd takes over from aws-node node by node: it imports aws-node's checkpoint, so running pods keep their addresses (docs/install.md)".to_string(),
        ];
        if let Some(rate) = sc.podip_calls_per_second {
            caveats.push(format!(
                "the cluster keeps to {rate} mutating EC2 calls a second, shared over {} nodes",
                sc.peak_nodes()
            ));
        }
        if prefixes {
            let (txt, karp) = max_pods_files(sc, true, false);
            config.insert("kubelet-max-pods.txt".into(), txt);
            config.insert("karpenter-ec2nodeclass.yaml".into(), karp);
            caveats.push("existing nodes must be replaced: kubelet max pods changes".into());
            if !nitro {
                caveats.push(
                    "some instance types are not Nitro: prefix delegation falls back to secondary IPs on them".into(),
                );
            }
        }
        let routable: Vec<SubnetId> = l.subnets.iter().map(|(_, s)| s.clone()).collect();
        out.push(Variant {
            id: if prefixes { "podip+prefixes".into() } else { "podip".into() },
            strategy: if prefixes { Strategy::PrefixDelegation } else { Strategy::WarmPool },
            title: if prefixes {
                "podipd's adaptive warm pool with prefix delegation (secondary addresses when no /28 is free)".into()
            } else {
                "podipd's adaptive warm pool: it follows each node's pod starts, no targets to guess".into()
            },
            disruption: if prefixes { Disruption::NodeAgentAndNodes } else { Disruption::NodeAgent },
            spec: spec(sc, &l.subnets, s, routable.clone()),
            cluster_subnets: routable,
            vpc: l.vpc,
            nat: None,
            caveats,
            limits: Vec::new(),
            config,
        });
    }
    out
}
