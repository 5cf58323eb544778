//! The warm-target search: the smallest `WARM_IP_TARGET` (with `MINIMUM_IP_TARGET` at a node's
//! pods) whose simulated run qualifies as the plan judges every variant, found by doubling and
//! then bisecting, each probe a whole simulation of the cluster.
//!
//! A bigger warm pool waits and calls EC2 less and holds more idle addresses, so the targets that
//! qualify start somewhere and the smallest of them holds the fewest. When none does, the probe
//! that comes closest is kept (fewest pods without an address, then fewest shortfalls, then the
//! shortest wait) and the report says so.

use crate::plan::VariantReport;
use std::collections::BTreeMap;

/// What the search tried and chose (in the report's JSON as the variant's `search`).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SearchResult {
    /// The chosen target.
    pub chosen: u32,
    /// Whether it qualifies.
    pub qualifies: bool,
    /// Every target tried, with its shortfalls (empty: it qualifies).
    pub tried: BTreeMap<u32, Vec<String>>,
}

fn closeness(r: &VariantReport) -> (u64, usize, u64, u64) {
    (r.pods_failed + r.nodes_failed, r.shortfalls.len(), (r.wait_p99_s * 10.0) as u64, r.idle_avg as u64)
}

/// Searches targets 1 to `max` with `probe` (which returns the run's report, its shortfalls
/// filled in); returns the chosen report and what was tried.
pub fn smallest_qualifying(max: u32, mut probe: impl FnMut(u32) -> VariantReport) -> (VariantReport, SearchResult) {
    let max = max.max(1);
    let mut runs: BTreeMap<u32, VariantReport> = BTreeMap::new();
    let mut run = |w: u32, runs: &mut BTreeMap<u32, VariantReport>| -> bool {
        let r = probe(w);
        let ok = r.shortfalls.is_empty();
        runs.insert(w, r);
        ok
    };
    // Double until one qualifies.
    let (mut lo, mut hi) = (0u32, None);
    let mut w = 1;
    loop {
        if run(w, &mut runs) {
            hi = Some(w);
            break;
        }
        lo = w;
        if w >= max {
            break;
        }
        w = (w * 2).min(max);
    }
    // Then bisect between the last that fell short and the first that qualified.
    if let Some(mut h) = hi {
        while h - lo > 1 {
            let mid = lo + (h - lo) / 2;
            if run(mid, &mut runs) {
                h = mid;
            } else {
                lo = mid;
            }
        }
        hi = Some(h);
    }
    let tried = runs.iter().map(|(w, r)| (*w, r.shortfalls.clone())).collect();
    // Of those that qualify, the fewest idle addresses; else the closest.
    let chosen = runs
        .iter()
        .filter(|(_, r)| r.shortfalls.is_empty())
        .min_by_key(|(w, r)| ((r.idle_avg * 10.0) as u64, **w))
        .map(|(w, _)| *w)
        .or(hi)
        .unwrap_or_else(|| runs.iter().min_by_key(|(w, r)| (closeness(r), **w)).map(|(w, _)| *w).unwrap_or(1));
    let report = runs.remove(&chosen).expect("chosen among the runs");
    let qualifies = report.shortfalls.is_empty();
    (report, SearchResult { chosen, qualifies, tried })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::{Disruption, Strategy};

    fn report(shortfalls: Vec<String>, idle: f64, failed: u64) -> VariantReport {
        VariantReport {
            id: "warm-pool-tuned".into(),
            strategy: Strategy::WarmPool,
            title: String::new(),
            disruption: Disruption::Setting,
            disruption_text: String::new(),
            routable_peak: 0,
            routable_share: 0.0,
            nonroutable_peak: 0,
            idle_peak: 0,
            idle_avg: idle,
            headroom_nodes: 0,
            headroom_pods: 0,
            meets_headroom: true,
            shortfalls,
            pods_asked: 0,
            pods_started: 0,
            pods_failed: failed,
            pods_unschedulable: 0,
            pods_waited: 0,
            wait_p50_s: 0.0,
            wait_p99_s: 0.0,
            nodes_failed: 0,
            ec2_calls: BTreeMap::new(),
            ec2_throttled: BTreeMap::new(),
            throttled_share: 0.0,
            max_pods: BTreeMap::new(),
            nau_peak: 0,
            monthly_cost_usd: 0.0,
            nat: None,
            caveats: Vec::new(),
            limits: Vec::new(),
            pods_waiting_at_end: 0,
            series: Vec::new(),
            subnet_maps: Vec::new(),
            search: None,
            config: BTreeMap::new(),
        }
    }

    /// A cluster where targets from `from` on qualify, idle growing with the target.
    fn threshold(from: u32) -> impl FnMut(u32) -> VariantReport {
        move |w| {
            let short = if w >= from { vec![] } else { vec![format!("wait at {w}")] };
            report(short, f64::from(w) * 10.0, 0)
        }
    }

    #[test]
    fn finds_the_smallest_target_that_qualifies_in_few_runs() {
        for from in 1..=64 {
            let mut runs = 0;
            let mut t = threshold(from);
            let (r, res) = smallest_qualifying(64, |w| {
                runs += 1;
                t(w)
            });
            assert_eq!(res.chosen, from, "threshold {from}: {res:?}");
            assert!(res.qualifies && r.shortfalls.is_empty());
            assert!(runs <= 13, "threshold {from}: {runs} runs");
        }
    }

    #[test]
    fn when_none_qualifies_the_closest_is_kept_and_said() {
        let (r, res) = smallest_qualifying(8, |w| {
            // Fewer failed pods with a bigger pool, never none.
            report(vec!["pods never got an address".into()], f64::from(w), 100 / u64::from(w))
        });
        assert!(!res.qualifies);
        assert_eq!(res.chosen, 8);
        assert_eq!(r.pods_failed, 12);
        assert_eq!(res.tried.keys().copied().collect::<Vec<_>>(), vec![1, 2, 4, 8]);
    }
}
