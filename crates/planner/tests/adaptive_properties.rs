//! Property tests of podip's adaptive pool policy (`ipam::demand`) on a node against the
//! simulated VPC: random instance types, modes, floors and ceilings, and random pod
//! add/delete sequences; checked after every step against the VPC's ground truth (no address
//! held twice, none handed out while cooling, every pod address on its ENI in EC2), never more
//! addresses than max pods allow, and, once demand stops, a pool that settles back to a steady
//! size no larger than a fresh node's (give or take the few addresses not worth a call).

mod common;

use cloud::sim::SimParams;
use common::check;
use ipam::addr::PodKey;
use ipam::config::{NodeSettings, PoolPolicyChoice};
use ipam::datastore::Packing;
use ipam::demand::{ENI_HOLD, SHRINK_HOLD_MAX, SHRINK_MIN};
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::time::Duration;

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn the_adaptive_pool_keeps_every_invariant_and_settles_when_demand_stops(
        t in prop::sample::select(vec!["t3.small", "m5.large", "m5.xlarge", "c5.large", "t3.medium"]),
        pd in any::<bool>(),
        (min, ceiling) in (0u32..8, 0u32..8),
        miss in prop::sample::select(vec![100u32, 10_000, 100_000]),
        cooldown in 0u64..40,
        seed in 0u64..10_000,
        ops in prop::collection::vec(common::op(60, 600), 1..80),
    ) {
        let settings = NodeSettings {
            warm_eni: 0,
            warm_ip: ceiling,
            minimum_ip: min,
            warm_prefix: pd.then_some(0),
            prefix_delegation: pd,
            cooldown: Duration::from_secs(cooldown),
            corrected: true,
            packing: Some(Packing::Dense),
            pool_policy: PoolPolicyChoice::Adaptive { misses_per_million: miss },
            ..NodeSettings::default()
        };
        let params = SimParams { seed, ..SimParams::default() };
        let Some(mut w) = common::world(t, &settings, false, params) else { return Ok(()) };
        w.node.settle(&mut w.vpc).unwrap();
        let fresh_total = w.node.engine().stats(w.node.now()).total;
        let mut live: BTreeSet<u32> = BTreeSet::new();
        for op in ops {
            common::apply(&mut w, op, &mut live)?;
            let s = w.node.engine().stats(w.node.now());
            // Never grown past what kubelet's max pods can use (a block may round it up).
            let block = if pd { 16 } else { 1 };
            let most = u64::from(w.max_pods) + block - 1 + u64::from(min);
            prop_assert!(s.total <= most, "{:?} over max pods {}", s, w.max_pods);
        }
        prop_assert_eq!(w.node.engine().datastore().pod_count(), live.len());
        for i in std::mem::take(&mut live) {
            let key = PodKey::new(format!("p{i}"));
            prop_assert!(w.node.del_pod(&key).is_some());
        }
        // Demand stops: past both holds the pool settles to a steady size.
        let until = w.node.now() + SHRINK_HOLD_MAX + ENI_HOLD + Duration::from_secs(600);
        while w.node.step(&mut w.vpc, until).unwrap() {
            check(&w)?;
        }
        let now = w.node.now();
        prop_assert!(w.node.engine().steady(now), "not steady: {:?}", w.node.engine().stats(now));
        let s = w.node.engine().stats(now);
        prop_assert_eq!(s.assigned, 0);
        prop_assert_eq!(s.cooling, 0);
        // A pool fewer than SHRINK_MIN addresses over its target keeps them (not worth a call).
        let slack = if pd { 0 } else { u64::from(SHRINK_MIN) - 1 };
        prop_assert!(
            s.total <= fresh_total.max(u64::from(min)) + slack,
            "{} left, a fresh node holds {}",
            s.total,
            fresh_total
        );
    }
}
