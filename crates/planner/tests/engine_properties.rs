//! Property tests of the node engine against the simulated VPC: random configurations and
//! random pod add/delete sequences, checked after every step against the VPC's ground truth.

mod common;

use cloud::sim::SimParams;
use common::check;
use ipam::addr::PodKey;
use ipam::config::NodeSettings;
use ipam::datastore::Packing;
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::time::Duration;

#[derive(Clone, Debug)]
struct Setup {
    instance_type: &'static str,
    settings: NodeSettings,
    custom: bool,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        prop::sample::select(vec!["t3.small", "m5.large", "m5.xlarge", "c5.large", "t2.micro", "t3.medium"]),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        (0u32..3, 0u32..6, 0u32..12, 0u32..3),
        0u64..40,
        any::<bool>(),
    )
        .prop_map(|(t, pd, custom, corrected, (we, wi, mi, wp), cooldown, dense)| Setup {
            instance_type: t,
            settings: NodeSettings {
                warm_eni: we,
                warm_ip: wi,
                minimum_ip: mi,
                warm_prefix: Some(wp),
                prefix_delegation: pd,
                cooldown: Duration::from_secs(cooldown),
                corrected,
                packing: Some(if dense { Packing::Dense } else { Packing::Random }),
                ..NodeSettings::default()
            },
            custom,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn engine_keeps_its_invariants_and_settles_back(s in setup(), seed in 0u64..10_000, ops in prop::collection::vec(common::op(40, 120), 1..60)) {
        let params = SimParams { seed, ..SimParams::default() };
        let Some(mut w) = common::world(s.instance_type, &s.settings, s.custom, params) else { return Ok(()) };
        w.node.settle(&mut w.vpc).unwrap();
        let fresh_total = w.node.engine().stats(w.node.now()).total;
        let mut live: BTreeSet<u32> = BTreeSet::new();
        for op in ops {
            common::apply(&mut w, op, &mut live)?;
        }
        prop_assert_eq!(w.node.engine().datastore().pod_count(), live.len());
        for i in std::mem::take(&mut live) {
            let key = PodKey::new(format!("p{i}"));
            prop_assert!(w.node.del_pod(&key).is_some());
        }
        let settled = w.node.settle(&mut w.vpc).unwrap();
        check(&w)?;
        if !s.settings.corrected {
            // The VPC CNI's own policy need not settle: WARM_ENI_TARGET=0 under custom networking
            // frees and re-creates an ENI every minute (see policy::tests).
            return Ok(());
        }
        prop_assert!(settled, "pool did not settle");
        let now = w.node.now();
        prop_assert!(w.node.engine().steady(now), "pool not at its target: {:?}", w.node.engine().stats(now));
        let s = w.node.engine().stats(now);
        prop_assert_eq!(s.assigned, 0);
        prop_assert_eq!(s.cooling, 0);
        prop_assert_eq!(s.total, fresh_total, "back at the warm target of a fresh node");
    }
}
