//! podip's adaptive warm pool: what a node's pods ask of its pool (the recent pod-start rate and
//! the pods known to be coming) and how long a refill takes (learned from the node's own calls),
//! turned into the warm target that covers a refill at a chosen miss rate.
//!
//! Pod starts in a refill are taken as Poisson with mean `rate × refill`; the warm target is the
//! smallest count whose probability of being exceeded is under the miss rate. The pool holds the
//! most addresses the node's pods held over the last six hours (hysteresis) plus that target, so
//! pods that leave and come back, or the next burst of the same size, find their addresses still
//! there instead of costing a release and an assign each.

use crate::Time;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::time::Duration;

/// How far back pod starts count.
pub const RATE_WINDOW: Duration = Duration::from_secs(120);
/// The shortest span a rate is measured over: a burst (a new node's pods, a rollout's share)
/// counts as spread over at least this long, so one burst does not make the pool expect another
/// right away.
pub const RATE_MIN_SPAN: Duration = Duration::from_secs(60);
/// How long the most addresses the pods held keeps the pool from shrinking: a working day's
/// rollouts and scale-ups come back within it, and returning their addresses in between would
/// cost a release now, and an assign (a pod waiting, every node calling EC2 at once) at the next.
pub const SHRINK_HOLD: Duration = Duration::from_secs(6 * 3600);
/// The longest a node's hold lasts: each node holds for [`SHRINK_HOLD`] plus a share of a quarter
/// of it drawn from its seed, so that nodes that peaked together (a rollout) do not all hand
/// their addresses back in the same second, 6 hours later, and throttle the account.
pub const SHRINK_HOLD_MAX: Duration = Duration::from_secs(6 * 3600 * 5 / 4);
/// The fewest addresses over its target a pool hands back at once (fewer are not worth a call).
pub const SHRINK_MIN: u32 = 3;
/// How long an emptied ENI is kept after the pool last grew (see the engine's adaptive policy):
/// it holds one address (its primary), while freeing it costs two calls and needing it again
/// three more and an attach's wait.
pub const ENI_HOLD: Duration = Duration::from_secs(6 * 3600);
/// Starts remembered at most (a node starts at most a few hundred pods in the window).
const MAX_STARTS: usize = 4096;
/// A refill before any was measured: EC2's typical assign (`aws-and-peers.md`, latencies).
const DEFAULT_ASSIGN: Duration = Duration::from_millis(400);
/// An ENI create and attach before any was measured (about 6 s at EC2).
const DEFAULT_ATTACH: Duration = Duration::from_secs(6);

/// The longest refill time a [`PoolMemory`] brings back (EC2's calls take seconds; ten minutes
/// is a cloud that was down, not a refill time).
const MAX_REFILL_MS: u64 = 600_000;
/// The most peaks a [`PoolMemory`] carries (the tracker keeps decreasing sizes only: a few).
pub const MAX_PEAKS: usize = 1024;

/// What the adaptive policy has learned of a node's demand, kept across a restart of its daemon
/// so that a restarted node is not taken for a new one (which would ask EC2 for a young node's
/// reserve, and keep every address for a whole hold window). Spans are milliseconds before the
/// moment it was taken; pod starts are not kept (the rate is measured again within minutes).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolMemory {
    /// How long the node's demand had been watched.
    pub age_ms: u64,
    /// The young node's burst reserve was still kept.
    pub reserve: bool,
    /// The addresses the pods held when the node's boot was over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserve_base: Option<u32>,
    /// How long ago the node's first pod started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_start_ago_ms: Option<u64>,
    /// The hold window's sizes: how long ago, and the addresses the pods held (oldest first,
    /// decreasing).
    #[serde(default)]
    pub peaks: Vec<(u64, u32)>,
    /// The learned assign refill time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assign_ms: Option<u64>,
    /// The learned attach refill time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach_ms: Option<u64>,
}

impl PoolMemory {
    /// The same memory `by` later (a daemon down that long within one boot).
    pub fn aged(mut self, by: Duration) -> PoolMemory {
        let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.age_ms = self.age_ms.saturating_add(by);
        self.first_start_ago_ms = self.first_start_ago_ms.map(|a| a.saturating_add(by));
        for (ago, _) in &mut self.peaks {
            *ago = ago.saturating_add(by);
        }
        self
    }
}

/// What a refill is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refill {
    /// Addresses or a prefix assigned to an ENI the node has.
    Assign,
    /// A new ENI created and attached.
    Attach,
}

/// The demand a node's pool sees, and the warm target it asks for.
#[derive(Clone, Debug)]
pub struct Demand {
    /// Target chance that a refill's worth of pod starts exceeds the warm pool.
    pub miss_rate: f64,
    starts: VecDeque<Time>,
    assign: Option<Duration>,
    attach: Option<Duration>,
    /// Recent addresses held, for the shrink hold: (when, count), decreasing counts only.
    recent: VecDeque<(Time, u32)>,
    /// How long a size is held (between [`SHRINK_HOLD`] and [`SHRINK_HOLD_MAX`]).
    hold_for: Duration,
    first_start: Option<Time>,
}

impl Demand {
    /// A demand tracker aiming at `miss_rate` (e.g. 0.01), clamped to 1e-6..=0.5.
    pub fn new(miss_rate: f64) -> Demand {
        let miss_rate = if miss_rate.is_finite() { miss_rate.clamp(1e-6, 0.5) } else { 0.01 };
        Demand {
            miss_rate,
            starts: VecDeque::new(),
            assign: None,
            attach: None,
            recent: VecDeque::new(),
            hold_for: SHRINK_HOLD,
            first_start: None,
        }
    }

    /// The same, holding sizes for `hold` (clamped to [`SHRINK_HOLD`]..=[`SHRINK_HOLD_MAX`]).
    pub fn holding_for(mut self, hold: Duration) -> Demand {
        self.hold_for = hold.clamp(SHRINK_HOLD, SHRINK_HOLD_MAX);
        self
    }

    /// How long this node holds a size.
    pub fn hold_for(&self) -> Duration {
        self.hold_for
    }

    /// A pod asked for an address.
    pub fn pod_started(&mut self, now: Time) {
        self.forget(now);
        if self.starts.len() == MAX_STARTS {
            self.starts.pop_front();
        }
        self.starts.push_back(now);
        self.first_start.get_or_insert(now);
    }

    /// A refill call took `took` (an exponentially weighted mean, a quarter weight per call).
    pub fn refill_took(&mut self, kind: Refill, took: Duration) {
        let slot = match kind {
            Refill::Assign => &mut self.assign,
            Refill::Attach => &mut self.attach,
        };
        *slot = Some(match *slot {
            None => took,
            Some(m) => (m * 3 + took) / 4,
        });
    }

    /// How long a refill takes now: an assign, or an attach when the next one needs an ENI.
    pub fn refill_time(&self, needs_eni: bool) -> Duration {
        let assign = self.assign.unwrap_or(DEFAULT_ASSIGN);
        if needs_eni { assign + self.attach.unwrap_or(DEFAULT_ATTACH) } else { assign }
    }

    /// Pod starts per second: those of the window over the time since the first of them (at
    /// least [`RATE_MIN_SPAN`]), so a sustained burst counts at its own pace, not spread over the
    /// whole window.
    pub fn rate(&self, now: Time) -> f64 {
        // Starts are kept in time order: the window's are the last ones.
        let mut recent = self.starts.iter().filter(|t| now.since(**t) < RATE_WINDOW);
        let Some(first) = recent.next() else { return 0.0 };
        let span = now.since(*first).clamp(RATE_MIN_SPAN, RATE_WINDOW);
        (1 + recent.count()) as f64 / span.as_secs_f64()
    }

    fn forget(&mut self, now: Time) {
        while self.starts.front().is_some_and(|t| now.since(*t) >= RATE_WINDOW) {
            self.starts.pop_front();
        }
        while self.recent.front().is_some_and(|(t, _)| now.since(*t) >= self.hold_for) {
            self.recent.pop_front();
        }
    }

    /// The warm addresses a refill needs: the pods coming (`coming`, known to be scheduled and
    /// not yet started) and a refill's worth of starts at the miss rate, at least 1.
    pub fn warm_target(&mut self, now: Time, coming: u32, needs_eni: bool) -> u32 {
        self.forget(now);
        let mean = self.rate(now) * self.refill_time(needs_eni).as_secs_f64();
        poisson_quantile(mean, 1.0 - self.miss_rate).saturating_add(coming).max(1)
    }

    /// What this tracker keeps across a restart, at `now` (see [`PoolMemory`]; the engine adds
    /// its own part).
    pub fn memory(&mut self, now: Time) -> PoolMemory {
        self.forget(now);
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        PoolMemory {
            first_start_ago_ms: self.first_start.map(|t| ms(now.since(t))),
            peaks: self.recent.iter().map(|(t, n)| (ms(now.since(*t)), *n)).collect(),
            assign_ms: self.assign.map(ms),
            attach_ms: self.attach.map(ms),
            ..PoolMemory::default()
        }
    }

    /// Takes back what [`Demand::memory`] kept, as of `now`. Peaks past the hold window are
    /// dropped, and only sizes that decrease from the oldest on are kept (as the tracker keeps
    /// them), at most [`MAX_PEAKS`].
    pub fn remember(&mut self, now: Time, m: &PoolMemory) {
        let ago = |ms: u64| now.before(Duration::from_millis(ms));
        self.first_start = m.first_start_ago_ms.map(ago);
        // A refill time is learned again from the next calls; one kept is believed up to a limit.
        let refill = |ms: u64| Duration::from_millis(ms.min(MAX_REFILL_MS));
        self.assign = m.assign_ms.map(refill);
        self.attach = m.attach_ms.map(refill);
        self.recent.clear();
        let window = u64::try_from(self.hold_for.as_millis()).unwrap_or(u64::MAX);
        let mut peaks: Vec<(Time, u32)> =
            m.peaks.iter().take(MAX_PEAKS).filter(|(a, _)| *a < window).map(|(a, n)| (ago(*a), *n)).collect();
        peaks.sort_by_key(|(t, _)| *t);
        for (t, n) in peaks {
            while self.recent.back().is_some_and(|(_, b)| *b <= n) {
                self.recent.pop_back();
            }
            self.recent.push_back((t, n));
        }
        self.forget(now);
    }

    /// Whether any pod has started since the tracker began (before that it knows no demand).
    pub fn has_seen_starts(&self) -> bool {
        self.first_start.is_some()
    }

    /// When the first pod started.
    pub fn first_start(&self) -> Option<Time> {
        self.first_start
    }

    /// Records the addresses the pods hold now and returns the most they held over the hold
    /// window.
    pub fn hold(&mut self, now: Time, size: u32) -> u32 {
        self.forget(now);
        while self.recent.back().is_some_and(|(_, b)| *b <= size) {
            self.recent.pop_back();
        }
        self.recent.push_back((now, size));
        self.recent.front().map_or(size, |(_, b)| *b)
    }

    /// When the targets may next change with no new event, after `now`: the next remembered start
    /// or pool size to leave its window.
    pub fn next_change(&self, now: Time) -> Option<Time> {
        let a = self.starts.iter().map(|t| *t + RATE_WINDOW).find(|t| *t > now);
        let b = self.recent.iter().map(|(t, _)| *t + self.hold_for).find(|t| *t > now);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The smallest `k` with P(X ≤ k) ≥ `p` for X ~ Poisson(`mean`). Means above 500 are taken as
/// 500: no node holds more pods than that in one refill (kubelet's max pods is at most 737, and
/// the pool is capped by it anyway), and the terms would underflow.
pub fn poisson_quantile(mean: f64, p: f64) -> u32 {
    if mean.is_nan() || mean <= 0.0 {
        return 0;
    }
    let mean = mean.min(500.0);
    let mut term = (-mean).exp();
    let mut sum = term;
    let mut k = 0u32;
    while sum < p && k < 10_000 {
        k += 1;
        term *= mean / f64::from(k);
        sum += term;
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_poisson_quantile_is_exact_where_it_can_be_checked() {
        assert_eq!(poisson_quantile(0.0, 0.99), 0);
        // Poisson(1): P(X<=3) = 0.981, P(X<=4) = 0.996.
        assert_eq!(poisson_quantile(1.0, 0.99), 4);
        assert_eq!(poisson_quantile(1.0, 0.98), 3);
        // Poisson(10): P(X<=17) = 0.986, P(X<=18) = 0.9928.
        assert_eq!(poisson_quantile(10.0, 0.99), 18);
        let big = poisson_quantile(1000.0, 0.99);
        assert!((550..=555).contains(&big), "taken as 500: {big}");
    }

    #[test]
    fn the_target_follows_the_start_rate_and_the_pool_holds_before_shrinking() {
        let mut d = Demand::new(0.01);
        let t0 = Time::from_millis(0);
        assert_eq!(d.warm_target(t0, 0, false), 1, "no demand: one warm address");
        // 2 starts a second for a minute, refills of 6.4 s (an ENI): mean 12.8 per refill.
        for i in 0..120u64 {
            d.pod_started(Time::from_millis(i * 500));
        }
        let busy = Time::from_millis(60_000);
        let t = d.warm_target(busy, 0, true);
        assert!((18..=24).contains(&t), "{t}");
        assert_eq!(d.warm_target(busy, 5, true), t + 5, "pods known to be coming add up");
        assert_eq!(d.hold(busy, 120 + t), 120 + t);
        // Demand and pods gone: the target drops at once, the pool size is held.
        let later = busy + RATE_WINDOW + Duration::from_secs(1);
        assert_eq!(d.warm_target(later, 0, true), 1);
        assert_eq!(d.hold(later, 11), 120 + t);
        let much_later = busy + SHRINK_HOLD + Duration::from_secs(1);
        assert_eq!(d.hold(much_later, 11), 11);
    }

    #[test]
    fn refill_times_are_learned_from_the_nodes_calls() {
        let mut d = Demand::new(0.01);
        assert_eq!(d.refill_time(false), DEFAULT_ASSIGN);
        for _ in 0..20 {
            d.refill_took(Refill::Assign, Duration::from_millis(100));
            d.refill_took(Refill::Attach, Duration::from_secs(2));
        }
        assert!(d.refill_time(false) < Duration::from_millis(110));
        assert!(d.refill_time(true) < Duration::from_millis(2200));
    }

    #[test]
    fn the_memory_of_a_tracker_comes_back_whole_and_a_hostile_one_bounded() {
        let mut d = Demand::new(0.01);
        let t0 = Time::from_secs(1000);
        for i in 0..30u64 {
            d.pod_started(t0 + Duration::from_secs(i));
        }
        d.refill_took(Refill::Assign, Duration::from_millis(300));
        d.refill_took(Refill::Attach, Duration::from_secs(5));
        d.hold(t0, 40);
        d.hold(t0 + Duration::from_secs(600), 25);
        let now = t0 + Duration::from_secs(900);
        let m = d.memory(now);
        assert_eq!(m.peaks, vec![(900_000, 40), (300_000, 25)]);
        // Taken back ten minutes later (the daemon was down that long): the same tracker, aged.
        let later = now + Duration::from_secs(600);
        let mut back = Demand::new(0.01);
        back.remember(later, &m.clone().aged(Duration::from_secs(600)));
        assert_eq!(back.memory(later), d.memory(later));
        assert_eq!(back.hold(later, 10), 40, "the hold window's peak is kept");
        assert_eq!(back.refill_time(true), d.refill_time(true));
        // A memory written by hand: peaks out of order and rising, a refill of a year.
        let hostile = PoolMemory {
            peaks: vec![(10, 5), (1_000_000, 7), (20_000, 50), (u64::MAX, u32::MAX)],
            assign_ms: Some(365 * 86_400_000),
            ..PoolMemory::default()
        };
        let mut h = Demand::new(0.01);
        h.remember(later, &hostile);
        assert_eq!(h.memory(later).peaks, vec![(20_000, 50), (10, 5)], "ordered, decreasing, in the window");
        assert_eq!(h.refill_time(false), Duration::from_millis(MAX_REFILL_MS));
    }
}
