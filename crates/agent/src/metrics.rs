//! The daemon's Prometheus metrics and its localhost HTTP endpoint (`/metrics`, `/v1/state`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of an EC2 call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// Engine call (`create_eni`, `assign_ips`, ...).
    pub call: String,
    /// `ok` or the EC2 error code.
    pub code: String,
}

/// Every metric the daemon exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Addresses in the pool.
    pub total: Gauge,
    /// Held by pods.
    pub assigned: Gauge,
    /// Cooling after release.
    pub cooling: Gauge,
    /// Free for new pods.
    pub available: Gauge,
    /// /28 prefixes in the pool.
    pub prefixes: Gauge,
    /// Prefixes with no pod and no cooling address (returnable).
    pub prefixes_free: Gauge,
    /// Prefixes pinned by at least one pod.
    pub prefixes_pinned: Gauge,
    /// ENIs attached.
    pub enis: Gauge,
    /// 1 while growth is paused after an insufficient-address error.
    pub backoff: Gauge,
    /// EC2 calls by call and result.
    pub calls: Family<CallLabels, Counter>,
    /// ADD handling time.
    pub add_seconds: Histogram,
    /// DEL handling time.
    pub del_seconds: Histogram,
    /// Host objects no attachment holds, removed by the sweep, by kind (rule, link).
    pub strays_removed: Family<KindLabel, Counter>,
    /// Assignments released because the host never wired them within the grace period.
    pub unwired_released: Counter,
    /// Attachments recovered from the host's wiring (checkpoint lost or behind).
    pub recovered: Counter,
    /// What the engine did about EC2 and its pool, by kind (see [`Metrics::observe_engine`]).
    pub engine: Family<KindLabel, Counter>,
    /// Unattached ENIs of the node waiting to be deleted.
    pub orphan_enis: Gauge,
    /// 1 while the cloud cannot be reached or refuses every call.
    pub cloud_down: Gauge,
    /// Secondary ENIs whose interface on the node is not set up yet (their addresses held back).
    pub enis_waiting: Gauge,
    last_engine: std::sync::Mutex<ipam::engine::EngineCounters>,
}

/// A kind label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// Kind.
    pub kind: String,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("podip");
        let m = Metrics {
            total: Gauge::default(),
            assigned: Gauge::default(),
            cooling: Gauge::default(),
            available: Gauge::default(),
            prefixes: Gauge::default(),
            prefixes_free: Gauge::default(),
            prefixes_pinned: Gauge::default(),
            enis: Gauge::default(),
            backoff: Gauge::default(),
            calls: Family::default(),
            add_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            del_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            strays_removed: Family::default(),
            unwired_released: Counter::default(),
            recovered: Counter::default(),
            engine: Family::default(),
            orphan_enis: Gauge::default(),
            cloud_down: Gauge::default(),
            enis_waiting: Gauge::default(),
            last_engine: std::sync::Mutex::default(),
            registry: Registry::default(),
        };
        registry.register("addresses", "Pod addresses in the warm pool", m.total.clone());
        registry.register("addresses_assigned", "Pod addresses held by pods", m.assigned.clone());
        registry.register("addresses_cooling", "Released addresses still cooling down", m.cooling.clone());
        registry.register("addresses_available", "Addresses a new pod can get now", m.available.clone());
        registry.register("prefixes", "Delegated /28 prefixes", m.prefixes.clone());
        registry.register("prefixes_free", "Prefixes with no pod and no cooling address", m.prefixes_free.clone());
        registry.register("prefixes_pinned", "Prefixes held by at least one pod", m.prefixes_pinned.clone());
        registry.register("enis", "ENIs attached", m.enis.clone());
        registry.register("backoff", "1 while growth waits after an insufficient-address error", m.backoff.clone());
        registry.register("ec2_calls", "EC2 calls by call and result code", m.calls.clone());
        registry.register("cni_add_seconds", "Time to answer an ADD", m.add_seconds.clone());
        registry.register("cni_del_seconds", "Time to answer a DEL", m.del_seconds.clone());
        registry.register("host_strays_removed", "Host rules and links no attachment held", m.strays_removed.clone());
        registry.register("unwired_released", "Assignments the host never wired, released", m.unwired_released.clone());
        registry.register("recovered", "Attachments recovered from the host's wiring", m.recovered.clone());
        registry.register(
            "engine_events",
            "Pool and EC2 events by kind: pool_exhausted (ADDs refused, no free address), backoff, \
             error_backoff, inconsistent, reconcile, reconcile_change, eni_deleted, cleanup_failure, leaked_eni",
            m.engine.clone(),
        );
        registry.register("orphan_enis", "Unattached ENIs of this node waiting to be deleted", m.orphan_enis.clone());
        registry.register(
            "enis_waiting_for_interface",
            "Secondary ENIs whose interface on the node is not set up yet (their addresses are held back)",
            m.enis_waiting.clone(),
        );
        registry.register(
            "cloud_down",
            "1 while the cloud cannot be reached or refuses every call",
            m.cloud_down.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// Updates the pool gauges.
    pub fn observe(&self, s: &ipam::datastore::Stats, enis: usize, backoff: bool) {
        let g = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.total.set(g(s.total));
        self.assigned.set(g(s.assigned));
        self.cooling.set(g(s.cooling));
        self.available.set(g(s.total.saturating_sub(s.assigned + s.cooling)));
        self.prefixes.set(g(s.total_prefixes));
        self.prefixes_free.set(g(s.idle_prefixes));
        self.prefixes_pinned.set(g(s.total_prefixes - s.free_prefixes));
        self.enis.set(g(enis as u64));
        self.backoff.set(i64::from(backoff));
    }

    /// Brings the engine's event counters up to `c`.
    pub fn observe_engine(&self, c: &ipam::engine::EngineCounters) {
        let mut last = self.last_engine.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let pairs = [
            ("pool_exhausted", c.rejected, last.rejected),
            ("backoff", c.backoffs, last.backoffs),
            ("error_backoff", c.error_backoffs, last.error_backoffs),
            ("inconsistent", c.inconsistent, last.inconsistent),
            ("reconcile", c.reconciles, last.reconciles),
            ("reconcile_change", c.reconcile_changes, last.reconcile_changes),
            ("eni_deleted", c.enis_deleted, last.enis_deleted),
            ("cleanup_failure", c.cleanup_failures, last.cleanup_failures),
            ("leaked_eni", c.leaked, last.leaked),
        ];
        for (kind, now, before) in pairs {
            if now > before {
                self.engine.get_or_create(&KindLabel { kind: kind.into() }).inc_by(now - before);
            }
        }
        *last = *c;
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        encode(&mut out, &self.registry).expect("metrics encode");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_pool_and_calls() {
        let m = Metrics::default();
        let s = ipam::datastore::Stats { total: 27, assigned: 20, cooling: 2, ..Default::default() };
        m.observe(&s, 3, false);
        m.calls.get_or_create(&CallLabels { call: "assign_ips".into(), code: "ok".into() }).inc();
        m.add_seconds.observe(0.002);
        let text = m.render();
        for line in [
            "podip_addresses 27",
            "podip_addresses_available 5",
            "podip_enis 3",
            "podip_ec2_calls_total{call=\"assign_ips\",code=\"ok\"} 1",
            "podip_cni_add_seconds_count 1",
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
    }
}
