//! Warm-pool policies: how many addresses, prefixes and ENIs a node keeps ahead of its pods.
//!
//! [`VpcCni`] reproduces the AWS VPC CNI's decisions (`vpc-cni-behaviour.md` §2.4–§2.8). With
//! `corrected` set it applies podip's fixes: addresses in cooldown are not counted as available,
//! and prefixes with cooling addresses are not counted as free (so never handed back to EC2).

use crate::datastore::Stats;
use crate::maxpods::IPS_PER_PREFIX;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Interval of the pool check (`ipPoolMonitorInterval`).
pub const POOL_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// Minimum time between two scale-downs (`decreaseIPPoolInterval`).
pub const DECREASE_INTERVAL: Duration = Duration::from_secs(30);
/// No growth at all this long after an insufficient-address error (`insufficientCidrErrorCooldown`).
pub const INSUFFICIENT_CIDR_BACKOFF: Duration = Duration::from_secs(120);
/// An ENI younger than this is never freed (`minENILifeTime`).
pub const MIN_ENI_LIFETIME: Duration = Duration::from_secs(60);
/// Default `IP_COOLDOWN_PERIOD`.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(30);

/// The aws-node warm-pool settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarmTargets {
    /// `WARM_ENI_TARGET` (default 1).
    pub warm_eni: u32,
    /// `WARM_IP_TARGET` (0 = unset).
    pub warm_ip: u32,
    /// `MINIMUM_IP_TARGET` (0 = unset).
    pub minimum_ip: u32,
    /// `WARM_PREFIX_TARGET` (the shipped manifest sets 1).
    pub warm_prefix: u32,
}

impl Default for WarmTargets {
    fn default() -> Self {
        WarmTargets { warm_eni: 1, warm_ip: 0, minimum_ip: 0, warm_prefix: 0 }
    }
}

impl WarmTargets {
    /// Whether `WARM_IP_TARGET` or `MINIMUM_IP_TARGET` is set (they override the others).
    pub fn warm_ip_enabled(&self) -> bool {
        self.warm_ip > 0 || self.minimum_ip > 0
    }
}

/// The node's pool limits, derived from the instance type and settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolLimits {
    /// ENIs the node may hold (`MAX_ENI` applied).
    pub max_enis: u32,
    /// Address blocks per ENI: secondary IPs, or prefixes in PD mode (`IPv4Limit − 1`).
    pub blocks_per_eni: u32,
    /// Kubelet max pods: growth stops once the pool holds this many addresses.
    pub max_pods: u32,
}

/// Everything a policy decides from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyConfig {
    /// Warm targets.
    pub targets: WarmTargets,
    /// Prefix delegation in effect.
    pub prefix_delegation: bool,
    /// Limits.
    pub limits: PoolLimits,
    /// podip's corrections on (cooling addresses are not available).
    pub corrected: bool,
}

impl PolicyConfig {
    /// Addresses per ENI (`maxIPsPerENI`): blocks, times 16 in PD mode.
    pub fn max_ips_per_eni(&self) -> u64 {
        let per = u64::from(self.limits.blocks_per_eni);
        if self.prefix_delegation { per * u64::from(IPS_PER_PREFIX) } else { per }
    }
}

/// The `datastoreTargetState` result: shortfall and surplus, in IPs (or prefixes in PD mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetState {
    /// Blocks missing.
    pub short: u64,
    /// Blocks in excess.
    pub over: u64,
    /// Whether warm-IP targets are in use at all.
    pub enabled: bool,
}

/// What a policy sees of one ENI when deciding whether to free it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EniView {
    /// The primary ENI is never freed.
    pub primary: bool,
    /// Trunk or EFA: never freed.
    pub pinned: bool,
    /// Time since the ENI joined.
    pub age: Duration,
    /// Its totals.
    pub stats: Stats,
}

/// A warm-pool policy: the decisions of one pool-check cycle.
pub trait PoolPolicy {
    /// Shortfall and surplus.
    fn target_state(&self, s: &Stats) -> TargetState;
    /// Whether the pool must grow (`isDatastorePoolTooLow`).
    fn is_low(&self, s: &Stats) -> bool;
    /// Whether the pool may shrink (`isDatastorePoolTooHigh`).
    fn is_high(&self, s: &Stats) -> bool;
    /// Blocks to ask for on an existing ENI (before capping by the ENI's room).
    fn blocks_to_assign(&self, s: &Stats) -> u64;
    /// Blocks a new ENI is created with.
    fn blocks_for_new_eni(&self, s: &Stats) -> u64;
    /// Blocks to hand back to EC2 in a scale-down.
    fn blocks_to_release(&self, s: &Stats) -> u64;
    /// Whether to look for an ENI to free (`shouldRemoveExtraENIs`).
    fn should_remove_extra_enis(&self, s: &Stats, freeable_eni_exists: bool) -> bool;
    /// Whether `eni` may be freed given the other ENIs (`RemoveUnusedENIFromStore` rules).
    fn eni_deletable(&self, eni: &EniView, others: &[EniView]) -> bool;
}

/// The VPC CNI's warm-pool policy.
#[derive(Clone, Copy, Debug)]
pub struct VpcCni {
    /// Its configuration.
    pub cfg: PolicyConfig,
}

impl VpcCni {
    /// Available addresses: `total − assigned`, and minus cooling ones when corrected.
    pub fn available(&self, s: &Stats) -> u64 {
        let avail = s.total.saturating_sub(s.assigned);
        if self.cfg.corrected { avail.saturating_sub(s.cooling) } else { avail }
    }

    fn free_prefixes(&self, s: &Stats) -> u64 {
        if self.cfg.corrected { s.idle_prefixes } else { s.free_prefixes }
    }

    fn free_ips(&self, s: &Stats) -> u64 {
        self.available(s)
    }
}

fn div_ceil(a: u64, b: u64) -> u64 {
    a.div_ceil(b)
}

impl PoolPolicy for VpcCni {
    fn target_state(&self, s: &Stats) -> TargetState {
        let t = &self.cfg.targets;
        if !t.warm_ip_enabled() {
            return TargetState { short: 0, over: 0, enabled: false };
        }
        let (warm, min) = (u64::from(t.warm_ip), u64::from(t.minimum_ip));
        let avail = self.available(s);
        let short = warm.saturating_sub(avail).max(min.saturating_sub(s.total));
        let over = avail.saturating_sub(warm).min(s.total.saturating_sub(min));
        if self.cfg.prefix_delegation {
            let p = u64::from(IPS_PER_PREFIX);
            let short_p = div_ceil(short, p);
            let need_w = div_ceil(s.assigned + warm, p);
            let need_m = div_ceil(min, p);
            let over_p = self
                .free_prefixes(s)
                .min(s.total_prefixes.saturating_sub(need_w))
                .min(s.total_prefixes.saturating_sub(need_m));
            return TargetState { short: short_p, over: over_p, enabled: true };
        }
        TargetState { short, over, enabled: true }
    }

    fn is_low(&self, s: &Stats) -> bool {
        if s.total >= u64::from(self.cfg.limits.max_pods) {
            return false;
        }
        let ts = self.target_state(s);
        if ts.enabled {
            return ts.short > 0;
        }
        let avail = self.available(s);
        let (w, per) = if self.cfg.prefix_delegation {
            (u64::from(self.cfg.targets.warm_prefix), u64::from(IPS_PER_PREFIX))
        } else {
            (u64::from(self.cfg.targets.warm_eni), self.cfg.max_ips_per_eni())
        };
        avail < per * w || (w == 0 && avail == 0)
    }

    fn is_high(&self, s: &Stats) -> bool {
        let ts = self.target_state(s);
        if ts.enabled {
            return ts.over > 0;
        }
        if self.cfg.prefix_delegation {
            return self.free_prefixes(s) > u64::from(self.cfg.targets.warm_prefix);
        }
        false
    }

    fn blocks_to_assign(&self, s: &Stats) -> u64 {
        let ts = self.target_state(s);
        if self.cfg.prefix_delegation {
            if ts.enabled {
                ts.short.max(1)
            } else {
                u64::from(self.cfg.targets.warm_prefix).saturating_sub(self.free_prefixes(s)).max(1)
            }
        } else if ts.enabled {
            ts.short
        } else {
            u64::from(self.cfg.limits.blocks_per_eni)
        }
    }

    fn blocks_for_new_eni(&self, s: &Stats) -> u64 {
        let per = u64::from(self.cfg.limits.blocks_per_eni);
        let ts = self.target_state(s);
        if self.cfg.prefix_delegation || ts.enabled { self.blocks_to_assign(s).min(per) } else { per }
    }

    fn blocks_to_release(&self, s: &Stats) -> u64 {
        let ts = self.target_state(s);
        if ts.enabled {
            ts.over
        } else if self.cfg.prefix_delegation {
            self.free_prefixes(s).saturating_sub(u64::from(self.cfg.targets.warm_prefix))
        } else {
            0
        }
    }

    fn should_remove_extra_enis(&self, s: &Stats, freeable_eni_exists: bool) -> bool {
        if self.cfg.targets.warm_ip_enabled() {
            return true;
        }
        let w = if self.cfg.prefix_delegation { self.cfg.targets.warm_prefix } else { self.cfg.targets.warm_eni };
        if self.available(s) >= (u64::from(w) + 1) * self.cfg.max_ips_per_eni() {
            return true;
        }
        self.cfg.prefix_delegation && freeable_eni_exists
    }

    fn eni_deletable(&self, eni: &EniView, others: &[EniView]) -> bool {
        if eni.primary || eni.pinned || eni.age < MIN_ENI_LIFETIME {
            return false;
        }
        if eni.stats.cooling > 0 || eni.stats.assigned > 0 {
            return false;
        }
        let t = &self.cfg.targets;
        let round = |v: u64| {
            if self.cfg.prefix_delegation {
                div_ceil(v, u64::from(IPS_PER_PREFIX)) * u64::from(IPS_PER_PREFIX)
            } else {
                v
            }
        };
        let (warm, min) = (round(u64::from(t.warm_ip)), round(u64::from(t.minimum_ip)));
        let others_free: u64 = others.iter().map(|o| self.free_ips(&o.stats)).sum();
        let others_total: u64 = others.iter().map(|o| o.stats.total).sum();
        if others_free < warm || others_total < min {
            return false;
        }
        if self.cfg.prefix_delegation && t.warm_prefix != 0 {
            let others_free_prefixes: u64 = others.iter().map(|o| self.free_prefixes(&o.stats)).sum();
            if others_free_prefixes < u64::from(t.warm_prefix) {
                return false;
            }
        }
        // podip: never free an ENI the next cycle would have to create again. Upstream does,
        // e.g. WARM_ENI_TARGET=0 under custom networking frees and re-creates an ENI every minute.
        if self.cfg.corrected {
            let rest = others.iter().fold(Stats::default(), |mut acc, o| {
                acc.total += o.stats.total;
                acc.assigned += o.stats.assigned;
                acc.cooling += o.stats.cooling;
                acc.total_prefixes += o.stats.total_prefixes;
                acc.free_prefixes += o.stats.free_prefixes;
                acc.idle_prefixes += o.stats.idle_prefixes;
                acc
            });
            if self.is_low(&rest) {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests;

/// The first ENI `policy` lets go of, by index into `views` (at most one per cycle).
pub fn first_deletable(policy: &dyn PoolPolicy, views: &[EniView]) -> Option<usize> {
    let mut others: Vec<EniView> = Vec::with_capacity(views.len());
    (0..views.len()).find(|&i| {
        others.clear();
        others.extend(views.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, v)| *v));
        policy.eni_deletable(&views[i], &others)
    })
}
