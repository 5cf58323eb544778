//! Property tests of a node's EC2 call budget (`ipam::config::CallBudget`) against the
//! simulated VPC: under random pod sequences, paced or not, the node's mutating calls never
//! outrun its bucket (its burst plus its rate over the time elapsed; a created ENI's attach and
//! protect ride on the create's token), the engine's invariants hold at every step, and pods
//! still get addresses, later.

mod common;

use cloud::Action;
use cloud::sim::SimParams;
use common::check;
use ipam::addr::PodKey;
use ipam::config::{CallBudget, NodeSettings, PoolPolicyChoice};
use proptest::prelude::*;
use std::time::Duration;

fn calls(vpc: &cloud::sim::SimVpc, action: Action) -> u64 {
    vpc.action_stats().get(&action).map_or(0, |s| s.calls)
}

/// Mutating calls the budget pays for: all but a created ENI's attach and protect (which ride on
/// the create's token, each to an account bucket of its own).
fn charged(vpc: &cloud::sim::SimVpc) -> u64 {
    vpc.action_stats()
        .iter()
        .filter(|(a, _)| {
            !matches!(
                a,
                Action::DescribeNetworkInterfaces
                    | Action::DescribeSubnets
                    | Action::RunInstances
                    | Action::TerminateInstances
                    | Action::AttachNetworkInterface
                    | Action::ModifyNetworkInterfaceAttribute
            )
        })
        .map(|(_, s)| s.calls)
        .sum()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn a_node_never_outruns_its_call_budget(
        t in prop::sample::select(vec!["m5.large", "m5.xlarge", "t3.medium"]),
        pd in any::<bool>(),
        adaptive in any::<bool>(),
        (per_hour, burst, paced) in (1u32..360, 1u32..4, any::<bool>()),
        seed in 0u64..10_000,
        pods in prop::collection::vec((0u32..40, prop::bool::weighted(0.7), 0u64..10), 20..80),
    ) {
        // A small warm pool: nearly every pod start or stop asks EC2 for something.
        let settings = NodeSettings {
            warm_eni: 0,
            warm_ip: 1,
            prefix_delegation: pd,
            warm_prefix: pd.then_some(1),
            call_budget: Some(CallBudget { per_hour, burst, paced }),
            pool_policy: if adaptive {
                PoolPolicyChoice::Adaptive { misses_per_million: 10_000 }
            } else {
                PoolPolicyChoice::VpcCni
            },
            ..NodeSettings::default()
        };
        let params = SimParams { seed, ..SimParams::default() };
        let Some(mut w) = common::world(t, &settings, false, params) else { return Ok(()) };
        let start = w.node.now();
        let before = charged(&w.vpc);
        let creates_before = calls(&w.vpc, Action::CreateNetworkInterface);
        let chained_before =
            calls(&w.vpc, Action::AttachNetworkInterface) + calls(&w.vpc, Action::ModifyNetworkInterfaceAttribute);
        // Pods the node can hold: kubelet's max pods counts host-network pods too (a t3.medium's
        // 17 against its 15 secondary addresses).
        let room = w.max_pods.min(w.max_enis * w.per_eni * if pd { 16 } else { 1 });
        let mut live = std::collections::BTreeSet::new();
        for (i, add, wait) in pods {
            let key = PodKey::new(format!("p{i}"));
            if add && !live.contains(&i) && (live.len() as u32) < room {
                if w.node.add_pod(&mut w.vpc, &key, Duration::from_secs(1)).unwrap().is_some() {
                    live.insert(i);
                }
            } else if !add && live.remove(&i) {
                prop_assert!(w.node.del_pod(&key).is_some());
            }
            let until = w.node.now() + Duration::from_secs(wait);
            while w.node.step(&mut w.vpc, until).unwrap() {
                check(&w)?;
            }
            check(&w)?;
            let hours = w.node.now().since(start).as_secs_f64() / 3600.0;
            let allowed = f64::from(burst) + f64::from(per_hour) * hours + 1.0;
            let made = (charged(&w.vpc) - before) as f64;
            prop_assert!(made <= allowed, "{made} charged calls in {hours:.2} h, budget {per_hour}/h, burst {burst}");
            // Each create brings at most its attach and its protect.
            let creates = calls(&w.vpc, Action::CreateNetworkInterface) - creates_before;
            let chained = calls(&w.vpc, Action::AttachNetworkInterface)
                + calls(&w.vpc, Action::ModifyNetworkInterfaceAttribute)
                - chained_before;
            prop_assert!(chained <= 2 * creates, "{chained} attaches and protects for {creates} creates");
        }
        // Pods still get addresses, at the budget's pace.
        let key = PodKey::new("late".to_string());
        if (live.len() as u32) < room {
            // A pod may need an ENI (create, attach, protect: three calls' worth of the rate, or
            // of a paced node's slots), after a release that owes a call too.
            let period = 3600 * u64::from(burst) / u64::from(per_hour).max(1);
            let patience = Duration::from_secs((5 * period).max(600)).min(Duration::from_secs(24 * 3600));
            prop_assert!(w.node.add_pod(&mut w.vpc, &key, patience).unwrap().is_some(), "no address within {patience:?}");
        }
    }
}
