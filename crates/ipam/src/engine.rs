//! The node engine: a sans-IO state machine, `handle(now, event) -> effects`, that keeps one
//! node's warm pool and answers its pods.
//!
//! The caller delivers [`Event`]s (a [`Event::Tick`] every [`POOL_CHECK_INTERVAL`], pod adds and
//! deletes, and the result of each [`Call`] it was asked to make) and carries out the
//! [`Effect`]s. The engine never waits: a pod add is answered at once with an address or a
//! rejection, as the VPC CNI's ipamd does, and the runtime retries.
//!
//! The cycle follows the VPC CNI's `updateIPPoolIfRequired` (`vpc-cni-behaviour.md` §2.8): grow
//! when low, otherwise shrink when high (at most every 30 s), then maybe free one ENI. A cycle
//! starts only when no earlier call is still in flight, as upstream's pool loop blocks on its
//! calls. Blocks being handed back are marked and only dropped once EC2 confirms; a release
//! that surely failed is undone, one whose outcome is unknown stays out of use until a
//! reconcile says.
//!
//! What keeps the engine from looping on EC2's errors lives in [`recover`]: a back-off with
//! jitter per error kind and per ENI, the reconcile against EC2, the deletion of ENIs that
//! failed to attach or were detached, and the leak sweep.
//!
//! [`POOL_CHECK_INTERVAL`]: crate::policy::POOL_CHECK_INTERVAL

use crate::addr::{EniId, PodKey};
use crate::call::{Call, CallError, CallOutput, Capacity, ErrorKind, OpId};
use crate::config::{NodeConfig, PoolPolicyChoice};
use crate::datastore::{CidrMode, Datastore, DatastoreError, EniInfo, Stats};
use crate::demand::{Demand, Refill};
use crate::policy::{DECREASE_INTERVAL, EniView, INSUFFICIENT_CIDR_BACKOFF, PoolPolicy, VpcCni, first_deletable};
use crate::rng::SeededRng;
use crate::time::Time;
use ipnet::Ipv4Net;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// How long a limit EC2 reported (an ENI full, the instance full) is believed over the catalog.
pub const LEARNED_LIMIT_TTL: std::time::Duration = std::time::Duration::from_secs(600);

mod recover;
pub use recover::{FOREIGN_LEAK_GRACE, LEAK_GRACE, ReconcileReport, backoff_bounds};
use recover::{Gate, Retry};

/// Something that happened to the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The pool-check timer fired.
    Tick,
    /// A pod needs an address.
    PodAdd(PodKey),
    /// A pod is gone.
    PodDel(PodKey),
    /// A call finished.
    CallDone {
        /// Which call.
        op: OpId,
        /// Its result.
        result: Result<CallOutput, CallError>,
    },
    /// The node became schedulable (true) or was cordoned (false).
    Schedulable(bool),
}

/// Why a pod got no address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// Every address is held or cooling; try again once the pool grows.
    PoolExhausted,
}

/// Something the caller must do or deliver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Make this cloud call and report its result with [`Event::CallDone`].
    Call {
        /// Its id.
        op: OpId,
        /// The request.
        call: Call,
    },
    /// A pod got its address.
    PodAssigned {
        /// The pod.
        key: PodKey,
        /// Its address.
        addr: IpAddr,
        /// The ENI it lives on.
        eni: EniId,
        /// That ENI's device index (the route table is derived from it).
        device_index: u32,
    },
    /// A pod got no address.
    PodRejected {
        /// The pod.
        key: PodKey,
        /// Why.
        reason: Reject,
    },
    /// A pod's address was released (`None`: it held none; DEL is idempotent).
    PodReleased {
        /// The pod.
        key: PodKey,
        /// The address it held.
        addr: Option<IpAddr>,
    },
    /// A call result did not fit the datastore (the datastore is unchanged; a reconcile
    /// follows).
    Inconsistent {
        /// The call.
        op: OpId,
        /// What was wrong.
        error: DatastoreError,
    },
    /// A reconcile found the datastore and EC2 apart and corrected the datastore.
    Reconciled(ReconcileReport),
}

#[derive(Clone, Debug)]
enum Pending {
    CreateEni { device_index: u32, prefix: bool },
    Attach { info: EniInfo },
    Protect { eni: EniId },
    Assign { eni: EniId, count: u32, prefix: bool },
    AssignIpv6 { eni: EniId },
    Unassign { eni: EniId, nets: Vec<Ipv4Net> },
    Detach { eni: EniId },
    Delete { eni: EniId },
    Describe,
    ListUnattached,
}

/// Counters of what the engine did, for reports and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineCounters {
    /// Pod adds answered with an address.
    pub assigned: u64,
    /// Pod adds rejected.
    pub rejected: u64,
    /// Pod deletes.
    pub released: u64,
    /// Insufficient-address back-offs started.
    pub backoffs: u64,
    /// Back-offs started for other errors (throttling, limits, not found, in use, server and
    /// permanent errors).
    pub error_backoffs: u64,
    /// Call results that did not fit the datastore.
    pub inconsistent: u64,
    /// Reconciles against EC2 completed.
    pub reconciles: u64,
    /// Reconciles that changed the datastore.
    pub reconcile_changes: u64,
    /// ENIs deleted after a failed attach, a detach, or found leaked.
    pub enis_deleted: u64,
    /// Failed attempts to delete such an ENI (each is retried).
    pub cleanup_failures: u64,
    /// Unattached ENIs of this node the leak sweep handed over for deletion.
    pub leaked: u64,
    /// Pool-check cycles skipped for want of a call in the node's budget.
    pub budget_waits: u64,
    /// Times EC2 had no free /28 and growth went on with secondary addresses.
    pub prefix_fallbacks: u64,
}

/// One node's engine.
#[derive(Debug)]
pub struct Engine {
    cfg: NodeConfig,
    policy: VpcCni,
    ds: Datastore,
    pending: BTreeMap<OpId, Pending>,
    next_op: u64,
    last_decrease: Option<Time>,
    last_insufficient: Option<Time>,
    /// Prefix fallback: EC2 had no free /28 at this instant; until the back-off has passed,
    /// growth takes secondary addresses, and until a prefix call works again, the fallback
    /// addresses stay.
    no_prefix_since: Option<Time>,
    /// How long the present fallback lasts before prefixes are asked for again.
    no_prefix_for: std::time::Duration,
    schedulable: bool,
    /// Under custom networking, no new ENI until the cluster names the node's ENIConfig.
    hold_new_enis: bool,
    counters: EngineCounters,
    rng: SeededRng,
    /// Back-offs in force.
    gates: BTreeMap<Gate, Retry>,
    /// ENIs EC2 called full (`PrivateIpAddressLimitExceeded`): the block count then, and until
    /// when that limit is believed.
    full_enis: BTreeMap<EniId, (u32, Time)>,
    /// EC2 called the instance full (`AttachmentLimitExceeded`): the ENI count then, and until
    /// when that limit is believed.
    attach_full: Option<(u32, Time)>,
    /// Attached ENIs podip leaves alone, with their device indexes.
    unmanaged: Vec<(EniId, u32)>,
    /// ENIs EC2 was still detaching at the last reconcile, with their device indexes.
    detaching: Vec<(EniId, u32)>,
    /// ENIs to delete, with the device index each may still hold (while EC2 detaches it).
    orphans: BTreeMap<EniId, Option<u32>>,
    /// Blocks whose unassign had an unknown outcome, per ENI: kept out of use, and the unassign
    /// is made again until EC2 answers it (a describe may still list what EC2 took back).
    unreleased: BTreeMap<EniId, Vec<Ipv4Net>>,
    /// ENIs whose detach had an unknown outcome: kept out of use, detached again.
    undetached: std::collections::BTreeSet<EniId>,
    /// Orphans the leak sweep found (dropped when it no longer lists them).
    swept: std::collections::BTreeSet<EniId>,
    /// Attached ENIs not yet set to go with the instance.
    unprotected: std::collections::BTreeSet<EniId>,
    /// Subnets that answered insufficient addresses, until when (subnet discovery skips them).
    exhausted: BTreeMap<crate::addr::SubnetId, Time>,
    /// Unattached ENIs the leak sweep saw, since when.
    leak_seen: BTreeMap<EniId, Time>,
    /// A reconcile is due now (an error showed the datastore may be wrong).
    reconcile_due: bool,
    last_reconcile: Time,
    next_sweep: Time,
    /// The adaptive policy's view of demand (`None` under the VPC CNI's policy).
    adaptive: Option<Adaptive>,
    /// The client-side bucket for mutating calls, when the node has a budget.
    budget: Option<Bucket>,
}

/// A token bucket in thousandths of a call (it may go below zero: a cycle that issues several
/// calls pays for all of them, and the next waits). Paced, it is credited a whole burst at the
/// start of each of the node's slots, may be spent only in the slot's first moments, and what a
/// slot leaves unspent is lost (a debt is kept).
#[derive(Debug)]
struct Bucket {
    per_hour: u32,
    burst: u32,
    milli: i64,
    at: Time,
    pace: Option<Pace>,
    /// A paced node's one call at start, spendable outside its slots until its first slot.
    boot_call: bool,
}

/// The node's slots: every `period` from `phase`, each open for `window`.
#[derive(Debug)]
struct Pace {
    period_ms: u64,
    phase_ms: u64,
    window_ms: u64,
    /// The last slot credited.
    slot: Option<u64>,
}

impl Pace {
    /// The latest slot started at or before `now`.
    fn slot_of(&self, now: Time) -> Option<u64> {
        now.as_millis().checked_sub(self.phase_ms).map(|d| d / self.period_ms)
    }

    fn start(&self, slot: u64) -> Time {
        Time::from_millis(self.phase_ms + slot * self.period_ms)
    }

    fn open(&self, now: Time) -> bool {
        self.slot_of(now).is_some_and(|k| now.since(self.start(k)).as_millis() < u128::from(self.window_ms))
    }
}

impl Bucket {
    fn new(b: crate::config::CallBudget, now: Time, rng: &mut SeededRng) -> Bucket {
        let pace = b.paced.then(|| {
            let period_ms = (3_600_000 * u64::from(b.burst)).div_ceil(u64::from(b.per_hour.max(1))).max(1);
            Pace {
                period_ms,
                phase_ms: now.as_millis() + rng.below(period_ms),
                window_ms: period_ms.min(2 * crate::policy::POOL_CHECK_INTERVAL.as_millis() as u64),
                slot: None,
            }
        });
        // A paced node starts with one call (nodes boot at the launch rate, not all at once);
        // after that, its slots.
        let milli = if pace.is_some() { 1000 } else { i64::from(b.burst) * 1000 };
        let boot_call = pace.is_some();
        Bucket { per_hour: b.per_hour, burst: b.burst, milli, at: now, pace, boot_call }
    }

    fn refill(&mut self, now: Time) {
        let full = i64::from(self.burst) * 1000;
        if let Some(p) = &mut self.pace {
            if let Some(k) = p.slot_of(now).filter(|k| p.slot != Some(*k)) {
                let new = p.slot.map_or(1, |last| k.saturating_sub(last));
                // A past slot's unspent calls are lost; a debt is paid off slot by slot.
                let credit = i64::try_from(new).unwrap_or(i64::MAX).saturating_mul(full);
                self.milli = self.milli.min(0).saturating_add(credit).min(full);
                p.slot = Some(k);
                self.boot_call = false;
            }
            self.at = now;
            return;
        }
        let ms = i64::try_from(now.since(self.at).as_millis()).unwrap_or(i64::MAX);
        let gained = ms.saturating_mul(i64::from(self.per_hour)) / 3600;
        self.milli = self.milli.saturating_add(gained).min(full);
        self.at = now;
    }

    /// Whether a call may be made at `now` (after a refill).
    fn may_call(&self, now: Time) -> bool {
        self.milli >= 1000 && (self.boot_call || self.pace.as_ref().is_none_or(|p| p.open(now)))
    }

    /// Pays for one call.
    fn spend(&mut self) {
        self.milli -= 1000;
        self.boot_call = false;
    }

    /// When a call may next be made (now if it may).
    fn ready_at(&self, now: Time) -> Time {
        if self.may_call(now) {
            return now;
        }
        let Some(p) = &self.pace else {
            let missing = u64::try_from(1000 - self.milli).unwrap_or(0);
            let per_hour = u64::from(self.per_hour.max(1));
            return self.at + std::time::Duration::from_millis((missing * 3600).div_ceil(per_hour));
        };
        // Slots needed to pay a debt and reach one call, counted from the next slot.
        let full = i64::from(self.burst.max(1)) * 1000;
        let owed = 1000 - self.milli.min(0);
        let slots = u64::try_from((owed + full - 1) / full).unwrap_or(1).max(1);
        let next = p.slot_of(now).map_or(0, |k| k + 1);
        p.start(next + slots - 1)
    }
}

/// The longest a prefix fallback lasts before prefixes are asked for again.
pub const NO_PREFIX_MAX: std::time::Duration = std::time::Duration::from_secs(3600);

/// A refused pod that has not asked again for this long is no longer counted as waiting.
const WAITING_FORGOTTEN: std::time::Duration = std::time::Duration::from_secs(60);

/// What the adaptive policy keeps beside [`Demand`]: pods waiting for an address, pods the
/// cluster says are coming, and when refill calls were made.
#[derive(Debug)]
struct Adaptive {
    demand: Demand,
    /// Pods refused for want of an address, when they last asked (kubelet retries within
    /// seconds; one that stopped asking was given up).
    waiting: BTreeMap<PodKey, Time>,
    coming: u32,
    issued: BTreeMap<OpId, Time>,
    /// When the ENI being created was asked for (an attach refill runs from there).
    creating_since: Option<Time>,
    now: Time,
    /// When the pool last grew (an assign or an attach that worked).
    last_growth: Option<Time>,
    /// When the node's demand began to be watched.
    born: Time,
    /// The young node's burst reserve is still kept (no burst has used it yet).
    reserve: bool,
    /// The most addresses the pods held when the node's boot was over: a burst is measured
    /// from there.
    reserve_base: Option<u32>,
}

impl Engine {
    /// An engine for a node whose attached ENIs are `enis` (the primary has device index 0).
    ///
    /// # Errors
    /// The ENIs overlap or carry misaligned prefixes.
    pub fn new(cfg: NodeConfig, enis: &[EniInfo], seed: u64, now: Time) -> Result<Engine, DatastoreError> {
        let mut ds = Datastore::new(cfg.mode, cfg.cooldown, cfg.packing, seed);
        ds.set_prefix_fallback(cfg.prefix_fallback && cfg.mode == CidrMode::Prefix);
        for e in enis {
            ds.add_eni(e, e.device_index == 0, now)?;
        }
        let policy = VpcCni { cfg: cfg.policy_config() };
        let cfg_policy = cfg.pool_policy;
        let cfg_budget = cfg.call_budget;
        let mut rng = SeededRng::new(seed ^ 0x9e37_79b9_7f4a_7c15);
        // The pool fills first; the nodes of a cluster do not all sweep at once.
        let next_sweep = now + std::time::Duration::from_secs(60 + rng.below(240));
        let budget = cfg_budget.map(|b| Bucket::new(b, now, &mut rng));
        // Drawn only for the adaptive policy: the VPC CNI's runs stay as they were.
        let hold_ms = crate::demand::SHRINK_HOLD.as_millis() as u64;
        let hold_for = match cfg_policy {
            PoolPolicyChoice::VpcCni => crate::demand::SHRINK_HOLD,
            PoolPolicyChoice::Adaptive { .. } => std::time::Duration::from_millis(hold_ms + rng.below(hold_ms / 4)),
        };
        Ok(Engine {
            cfg,
            policy,
            ds,
            pending: BTreeMap::new(),
            next_op: 0,
            last_decrease: None,
            last_insufficient: None,
            no_prefix_since: None,
            no_prefix_for: INSUFFICIENT_CIDR_BACKOFF,
            schedulable: true,
            hold_new_enis: false,
            counters: EngineCounters::default(),
            rng,
            gates: BTreeMap::new(),
            full_enis: BTreeMap::new(),
            attach_full: None,
            unmanaged: Vec::new(),
            detaching: Vec::new(),
            orphans: BTreeMap::new(),
            exhausted: BTreeMap::new(),
            unprotected: std::collections::BTreeSet::new(),
            unreleased: BTreeMap::new(),
            undetached: std::collections::BTreeSet::new(),
            swept: std::collections::BTreeSet::new(),
            leak_seen: BTreeMap::new(),
            reconcile_due: false,
            last_reconcile: now,
            next_sweep,
            budget,
            adaptive: match cfg_policy {
                PoolPolicyChoice::VpcCni => None,
                PoolPolicyChoice::Adaptive { misses_per_million } => Some(Adaptive {
                    demand: Demand::new(f64::from(misses_per_million) / 1e6).holding_for(hold_for),
                    waiting: BTreeMap::new(),
                    coming: 0,
                    issued: BTreeMap::new(),
                    creating_since: None,
                    now,
                    last_growth: None,
                    born: now,
                    reserve: true,
                    reserve_base: None,
                }),
            },
        })
    }

    /// A new share of the cluster's call budget (the cluster's node count changed). What the
    /// node holds carries over, up to the new burst; a paced node keeps its phase, and its
    /// current slot counts as already credited: a change never gives a call the budget did not.
    pub fn set_call_budget(&mut self, now: Time, budget: Option<crate::config::CallBudget>) {
        if self.cfg.call_budget == budget {
            return;
        }
        self.cfg.call_budget = budget;
        let old = self.budget.take().map(|mut o| {
            o.refill(now);
            o
        });
        self.budget = budget.map(|b| {
            let mut new = Bucket::new(b, now, &mut self.rng);
            if let Some(o) = old {
                new.milli = o.milli.min(i64::from(new.burst) * 1000);
                new.boot_call = o.boot_call && new.pace.is_some();
                if let (Some(np), Some(op)) = (&mut new.pace, &o.pace) {
                    np.phase_ms = op.phase_ms;
                }
            }
            if let Some(p) = &mut new.pace {
                p.slot = p.slot_of(now);
            }
            new
        });
    }

    /// Pods the cluster has scheduled to this node and not yet started (the adaptive policy
    /// makes room for them ahead; ignored under the VPC CNI's policy).
    pub fn set_coming(&mut self, pods: u32) {
        if let Some(a) = &mut self.adaptive {
            a.coming = pods;
        }
    }

    /// What the adaptive policy has learned of this node's demand, to keep across a restart of
    /// the daemon (`None` under the VPC CNI's policy).
    pub fn pool_memory(&mut self, now: Time) -> Option<crate::demand::PoolMemory> {
        let a = self.adaptive.as_mut()?;
        let mut m = a.demand.memory(now);
        m.age_ms = u64::try_from(now.since(a.born).as_millis()).unwrap_or(u64::MAX);
        m.reserve = a.reserve;
        m.reserve_base = a.reserve_base;
        Some(m)
    }

    /// Takes back what [`Engine::pool_memory`] kept, as of `now` (ignored under the VPC CNI's
    /// policy): a restarted node goes on with its age, its reserve and its hold window.
    pub fn remember_pool(&mut self, now: Time, m: &crate::demand::PoolMemory) {
        let Some(a) = &mut self.adaptive else { return };
        a.born = now.before(std::time::Duration::from_millis(m.age_ms));
        a.reserve = m.reserve;
        a.reserve_base = m.reserve_base;
        a.demand.remember(now, m);
    }

    /// The pods last said to be coming (under the adaptive policy).
    pub fn coming(&self) -> Option<u32> {
        self.adaptive.as_ref().map(|a| a.coming)
    }

    /// The adaptive policy's warm targets for `now`, from the demand seen: the pool holds the
    /// most addresses its pods held (cooling ones included) over the hold window, plus what a
    /// refill needs at the miss rate (and the pods waiting or coming). Until a pod has started
    /// it knows no demand, and holds at least one ENI's addresses (one prefix), as the VPC CNI's
    /// default does. `MINIMUM_IP_TARGET` stays a floor, `WARM_IP_TARGET` (when set) a ceiling on
    /// the warm addresses.
    fn adapt(&mut self, now: Time) {
        let needs_eni = !self.ds.enis().iter().any(|e| self.grows_on(e, now));
        let stats = self.ds.stats(now);
        // Held and cooling addresses are not available (podip counts cooling ones as in use).
        let busy = u32::try_from(stats.assigned + stats.cooling).unwrap_or(u32::MAX);
        let prefixes = self.policy.cfg.prefix_delegation;
        let prior = if prefixes {
            crate::maxpods::IPS_PER_PREFIX
        } else {
            u32::try_from(self.policy.cfg.max_ips_per_eni()).unwrap_or(u32::MAX)
        };
        let max_pods = self.cfg.limits.max_pods;
        let Some(a) = &mut self.adaptive else { return };
        a.waiting.retain(|_, asked| now.since(*asked) < WAITING_FORGOTTEN);
        // The pods Kubernetes says are coming include those already refused and waiting.
        let coming = u32::try_from(a.waiting.len()).unwrap_or(u32::MAX).max(a.coming);
        let grow = a.demand.warm_target(now, coming, needs_eni);
        let held = a.demand.hold(now, busy);
        let mut warm = held.saturating_sub(busy).saturating_add(grow);
        // A young node has not yet seen a whole hold window of its day. Once its first pods are
        // in, it keeps a burst reserve of half an ENI's addresses for the first rollout or
        // scale-up, which a thousand nodes would otherwise all ask EC2 for in the same second,
        // and hands nothing back meanwhile. A burst that takes a quarter of an ENI's addresses
        // past what it held when its boot was over uses the reserve up, however fast it came:
        // from then on the hold keeps the burst's size. (With prefixes, growth by whole /28s
        // leaves a reserve of its own; and fallback addresses held as one would fill the ENIs'
        // slots a prefix needs.)
        let booted = a.demand.first_start().is_some_and(|t| now.since(t) >= crate::demand::RATE_WINDOW);
        if booted && a.reserve {
            let base = *a.reserve_base.get_or_insert(held);
            if busy >= base.saturating_add((prior / 4).max(1)) {
                a.reserve = false;
            }
        }
        let young = a.reserve && !prefixes && now.since(a.born) < a.demand.hold_for();
        if young {
            warm = warm.max(prior / 2);
        }
        if !a.demand.has_seen_starts() {
            warm = warm.max(prior);
        }
        let user = self.cfg.targets;
        if user.warm_ip > 0 {
            warm = warm.min(user.warm_ip);
        }
        // Never more than kubelet's max pods can use.
        let warm = warm.min(max_pods.saturating_sub(busy)).max(1);
        // A few addresses over the target stay: returning them costs a call, and the next
        // pod replacement (whose old address cools down) would want them back.
        let total = u32::try_from(stats.total).unwrap_or(u32::MAX);
        let excess = total.saturating_sub(busy).saturating_sub(warm);
        // A young node hands nothing back, unless `WARM_IP_TARGET` caps its warm addresses.
        let keep = (young && user.warm_ip == 0) || excess < crate::demand::SHRINK_MIN;
        let minimum_ip = if keep { user.minimum_ip.max(total) } else { user.minimum_ip };
        self.policy.cfg.targets = crate::policy::WarmTargets { warm_eni: 0, warm_ip: warm, minimum_ip, warm_prefix: 0 };
    }

    /// Whether a pod refused for want of an address should make the driver run a pool-check
    /// cycle at once rather than at the next tick: under the adaptive policy, a miss starts a
    /// refill right away; the VPC CNI waits for its next 5 s cycle.
    pub fn ticks_on_miss(&self) -> bool {
        self.adaptive.is_some()
    }

    /// Attached ENIs podip must leave alone (trunk, EFA, `no_manage`), with their device
    /// indexes: they count against the instance's ENI limit.
    pub fn set_unmanaged(&mut self, enis: Vec<(EniId, u32)>) {
        self.unmanaged = enis;
    }

    /// Kubelet's max pods as the node's own object says (a launch template may set another than
    /// the recommended one); the pool never grows past it. 0 is ignored.
    pub fn set_max_pods(&mut self, max_pods: u32) {
        if max_pods == 0 || max_pods == self.cfg.limits.max_pods {
            return;
        }
        self.cfg.limits.max_pods = max_pods;
        self.policy = VpcCni { cfg: self.cfg.policy_config() };
    }

    /// Where new pod ENIs go under custom networking, as the cluster says now (the node's
    /// ENIConfig): `None` (the ENIConfig is missing) holds every new ENI until one is named.
    /// ENIs already attached stay. Without custom networking this does nothing.
    pub fn set_pod_eni(&mut self, template: Option<crate::config::EniTemplate>) {
        if !self.cfg.custom_networking() {
            return;
        }
        self.hold_new_enis = template.is_none();
        if let Some(t) = template {
            self.cfg.pod_eni = Some(t);
        }
    }

    /// Holds the addresses of `eni` back from pods while its interface on the node is not set
    /// up (`on`), or lets them go. An unknown ENI is ignored.
    pub fn hold_eni(&mut self, eni: &EniId, on: bool) {
        let _ = self.ds.set_eni_held(eni, on);
    }

    /// ENIs waiting to be deleted.
    pub fn orphans(&self) -> impl Iterator<Item = &EniId> {
        self.orphans.keys()
    }

    /// Device indexes taken: by the datastore's ENIs, the ones podip leaves alone, and the ones
    /// still detaching.
    fn devices_in_use(&self) -> impl Iterator<Item = u32> + '_ {
        let ours = self.ds.enis().iter().map(|e| e.device_index);
        let mut all: Vec<u32> = ours
            .chain(self.unmanaged.iter().map(|(_, d)| *d))
            .chain(self.detaching.iter().map(|(_, d)| *d))
            .chain(self.orphans.values().flatten().copied())
            .collect();
        all.sort_unstable();
        all.dedup();
        all.into_iter()
    }

    /// The configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.cfg
    }

    /// The datastore (read-only).
    pub fn datastore(&self) -> &Datastore {
        &self.ds
    }

    /// The datastore, for restoring a checkpoint before the first event.
    pub fn datastore_mut(&mut self) -> &mut Datastore {
        &mut self.ds
    }

    /// Takes `addr`, which the host has wired to a pod and no key is assigned (it is free, or
    /// cooling), as assigned to `key`: the host's wiring is ground truth over the datastore.
    ///
    /// # Errors
    /// The address is assigned, or is not the node's.
    pub fn adopt(&mut self, key: &PodKey, addr: std::net::IpAddr) -> Result<(), DatastoreError> {
        match addr {
            std::net::IpAddr::V4(a) => self.ds.restore(key, a),
            std::net::IpAddr::V6(a) => self.ds.restore_v6(key, a),
        }
    }

    /// Pool totals at `now`.
    pub fn stats(&self, now: Time) -> Stats {
        self.ds.stats(now)
    }

    /// Calls in flight.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Counters.
    pub fn counters(&self) -> EngineCounters {
        self.counters
    }

    /// Whether growth is paused by an insufficient-address error at `now`.
    pub fn in_backoff(&self, now: Time) -> bool {
        self.last_insufficient.is_some_and(|t| now.since(t) < INSUFFICIENT_CIDR_BACKOFF)
    }

    /// Handles one event and returns what to do.
    pub fn handle(&mut self, now: Time, event: Event) -> Vec<Effect> {
        let mut out = Vec::new();
        self.handle_into(now, event, &mut out);
        out
    }

    /// Handles one event, appending effects to `out` (no allocation on the pod path).
    pub fn handle_into(&mut self, now: Time, event: Event, out: &mut Vec<Effect>) {
        if let Some(a) = &mut self.adaptive {
            a.now = now;
        }
        match event {
            Event::Tick => self.tick(now, out),
            Event::PodAdd(key) => match self.ds.assign(&key, now) {
                Ok(p) => {
                    self.counters.assigned += 1;
                    if let Some(a) = &mut self.adaptive {
                        a.demand.pod_started(now);
                        if !a.waiting.is_empty() {
                            a.waiting.remove(&key);
                        }
                    }
                    out.push(Effect::PodAssigned { key, addr: p.addr, eni: p.eni, device_index: p.device_index });
                }
                Err(_) => {
                    self.counters.rejected += 1;
                    if let Some(a) = &mut self.adaptive {
                        a.waiting.insert(key.clone(), now);
                    }
                    out.push(Effect::PodRejected { key, reason: Reject::PoolExhausted });
                }
            },
            Event::PodDel(key) => {
                if let Some(a) = self.adaptive.as_mut().filter(|a| !a.waiting.is_empty()) {
                    a.waiting.remove(&key);
                }
                let addr = self.ds.unassign(&key, now);
                self.counters.released += u64::from(addr.is_some());
                out.push(Effect::PodReleased { key, addr });
            }
            Event::CallDone { op, result } => self.call_done(now, op, result, out),
            Event::Schedulable(s) => self.schedulable = s,
        }
    }

    /// Whether the budget (if any) holds a call for `now`: a cycle issues no call it cannot pay
    /// for, beyond the created ENI's attach and protect that ride on the create's token.
    fn has_call(&mut self, now: Time) -> bool {
        self.budget.as_mut().is_none_or(|b| {
            b.refill(now);
            b.may_call(now)
        })
    }

    fn issue(&mut self, call: Call, pending: Pending, out: &mut Vec<Effect>) {
        let op = OpId(self.next_op);
        self.next_op += 1;
        // A created ENI's attach and protect ride on the create's token: each goes to an account
        // bucket of its own, at the create's pace.
        let chained = matches!(call, Call::AttachEni { .. } | Call::ProtectEni { .. });
        if let Some(b) = self.budget.as_mut().filter(|_| call.mutating() && !chained) {
            b.spend();
        }
        if let Some(a) = &mut self.adaptive {
            match pending {
                Pending::Assign { .. } => {
                    a.issued.insert(op, a.now);
                }
                Pending::CreateEni { .. } => a.creating_since = Some(a.now),
                _ => {}
            }
        }
        self.pending.insert(op, pending);
        out.push(Effect::Call { op, call });
    }

    fn tick(&mut self, now: Time, out: &mut Vec<Effect>) {
        self.expire_learned(now);
        self.adapt(now);
        self.exhausted.retain(|_, until| now < *until);
        if !self.pending.is_empty() || self.gated(&Gate::Cloud, now) {
            return;
        }
        // A reconcile an error asked for goes first (the datastore may be wrong); pods waiting
        // for addresses go before the periodic reconcile and the sweep.
        if self.housekeeping_due_at(now).is_some_and(|t| t <= now)
            && self.housekeeping(now, self.wants_growth(now), out)
        {
            return;
        }
        // Out of budget: no mutating call until the bucket holds a token again.
        if !self.has_call(now) {
            self.counters.budget_waits += 1;
            return;
        }
        if self.cfg.mode == CidrMode::Ipv6 {
            if !self.gated(&Gate::Grow, now) {
                self.ensure_ipv6_prefix(out);
            }
        } else {
            self.cycle(now, out);
        }
        // Then, in cycles that change nothing else: releases whose outcome was unknown, an ENI
        // that would outlive its instance, an ENI to delete (each behind its own back-off).
        if self.pending.is_empty() {
            self.redo_release(now, out);
        }
        if self.pending.is_empty() {
            self.protect_one(now, out);
        }
        if self.pending.is_empty() {
            self.delete_one_orphan(now, out);
        }
    }

    /// Whether the pool is low and could grow now.
    fn wants_growth(&self, now: Time) -> bool {
        if self.gated(&Gate::Grow, now) || !self.may_manage_enis() || self.in_backoff(now) {
            return false;
        }
        if self.cfg.mode == CidrMode::Ipv6 {
            return self.ds.enis().iter().any(|e| e.primary && e.v6_prefix.is_none());
        }
        let s = self.ds.stats(now);
        let room = self.ds.enis().iter().any(|e| self.grows_on(e, now))
            || (self.has_room_for_eni() && !self.gated(&Gate::Create, now));
        self.policy.is_low(&s) && room && self.policy.blocks_to_assign(&s) > 0
    }

    fn cycle(&mut self, now: Time, out: &mut Vec<Effect>) {
        let stats = self.ds.stats(now);
        if self.policy.is_low(&stats) {
            self.increase(now, &stats, out);
        } else if self.policy.is_high(&stats) && self.last_decrease.is_none_or(|t| now.since(t) > DECREASE_INTERVAL) {
            self.decrease(now, &stats, out);
            self.last_decrease = Some(now);
        }
        let stats = self.ds.stats(now);
        let freeable = self.ds.enis().iter().any(|e| !e.primary && !e.pinned && !e.releasing && e.assigned() == 0);
        if self.policy.should_remove_extra_enis(&stats, freeable) {
            self.try_free_eni(now, out);
        }
        if self.pending.is_empty() {
            self.return_fallback_addresses(now, out);
        }
    }

    fn ensure_ipv6_prefix(&mut self, out: &mut Vec<Effect>) {
        let Some(primary) = self.ds.enis().iter().find(|e| e.primary) else { return };
        if primary.v6_prefix.is_none() {
            let eni = primary.id.clone();
            self.issue(Call::AssignIpv6Prefix { eni: eni.clone() }, Pending::AssignIpv6 { eni }, out);
        }
    }

    fn may_manage_enis(&self) -> bool {
        self.schedulable || self.cfg.manage_enis_non_schedulable
    }

    /// Whether the pool may add blocks to `e`: usable for pods (not releasing, not trunk or
    /// EFA, not the primary under custom networking) and below the per-ENI limit.
    fn takes_blocks(&self, e: &crate::datastore::Eni) -> bool {
        let pod_eni = !(e.releasing || e.pinned || (self.cfg.custom_networking() && e.primary));
        pod_eni && e.block_count() < self.cfg.limits.blocks_per_eni
    }

    fn eni_count(&self) -> u32 {
        self.devices_in_use().count() as u32
    }

    /// Whether the pool may grow on `e` now: it takes blocks, EC2 did not call it full, no
    /// back-off holds it, and its subnet has not just run out.
    fn grows_on(&self, e: &crate::datastore::Eni, now: Time) -> bool {
        self.takes_blocks(e)
            && !self.called_full(e)
            && !self.gated(&Gate::Eni(e.id.clone()), now)
            && !self.subnet_exhausted(&e.subnet, now)
    }

    /// Whether subnet discovery is to leave this subnet alone for now (it ran out).
    fn subnet_exhausted(&self, subnet: &crate::addr::SubnetId, now: Time) -> bool {
        self.cfg.subnet_discovery && self.exhausted.get(subnet).is_some_and(|until| now < *until)
    }

    fn has_room_for_eni(&self) -> bool {
        let learned = self.attach_full.map_or(u32::MAX, |(n, _)| n);
        !self.hold_new_enis && self.eni_count() < self.cfg.limits.max_enis.min(learned)
    }

    /// Whether EC2 said this ENI is full at its present size.
    fn called_full(&self, e: &crate::datastore::Eni) -> bool {
        self.full_enis.get(&e.id).is_some_and(|(n, _)| e.block_count() >= *n)
    }

    /// Forgets limits EC2 reported longer ago than [`LEARNED_LIMIT_TTL`].
    fn expire_learned(&mut self, now: Time) {
        self.full_enis.retain(|_, (_, until)| now < *until);
        if self.attach_full.is_some_and(|(_, until)| now >= until) {
            self.attach_full = None;
        }
    }

    fn increase(&mut self, now: Time, stats: &Stats, out: &mut Vec<Effect>) {
        if !self.may_manage_enis() || self.in_backoff(now) || self.gated(&Gate::Grow, now) {
            return;
        }
        let prefix = self.cfg.mode == CidrMode::Prefix && !self.falling_back(now);
        let per_eni = self.cfg.limits.blocks_per_eni;
        let target = self.ds.enis().iter().find(|e| self.grows_on(e, now));
        if let Some(eni) = target {
            let want = self.fallback_size(self.policy.blocks_to_assign(stats), stats, now);
            let count = u64::from(per_eni - eni.block_count()).min(want) as u32;
            if count == 0 {
                return;
            }
            let eni = eni.id.clone();
            self.assign(eni, count, prefix, out);
        } else if self.has_room_for_eni() && !self.gated(&Gate::Create, now) {
            self.create_eni(now, stats, out);
        }
    }

    /// Whether growth takes secondary addresses in place of prefixes at `now` (EC2 had no free
    /// /28 within the fallback window and podip's fallback is on).
    fn falling_back(&self, now: Time) -> bool {
        self.cfg.prefix_fallback
            && self.cfg.mode == CidrMode::Prefix
            && self.no_prefix_since.is_some_and(|t| now.since(t) < self.no_prefix_for)
    }

    /// Blocks to ask for while falling back: the addresses the warm targets are short of (the
    /// prefixes' worth under fixed prefix targets), within max pods.
    fn fallback_size(&self, blocks: u64, stats: &Stats, now: Time) -> u64 {
        if !self.falling_back(now) {
            return blocks;
        }
        let t = self.policy.cfg.targets;
        let want = if t.warm_ip_enabled() {
            let avail = self.policy.available(stats);
            u64::from(t.warm_ip).saturating_sub(avail).max(u64::from(t.minimum_ip).saturating_sub(stats.total))
        } else {
            blocks * u64::from(crate::maxpods::IPS_PER_PREFIX)
        };
        want.min(u64::from(self.cfg.limits.max_pods).saturating_sub(stats.total)).max(1)
    }

    /// EC2 had no free /28 for a prefix call: with the fallback on, growth goes on at once with
    /// secondary addresses (true); otherwise the caller starts the usual back-off.
    fn fall_back(&mut self, now: Time, prefix: bool, out: &mut Vec<Effect>) -> bool {
        if !(prefix && self.cfg.prefix_fallback && self.cfg.mode == CidrMode::Prefix) {
            return false;
        }
        // Each refusal in a row doubles the window before prefixes are asked for again (120 s
        // to an hour): a fragmented subnet stays fragmented for a while.
        self.no_prefix_for = if self.no_prefix_since.is_some() {
            (self.no_prefix_for * 2).min(NO_PREFIX_MAX)
        } else {
            INSUFFICIENT_CIDR_BACKOFF
        };
        self.no_prefix_since = Some(now);
        self.counters.prefix_fallbacks += 1;
        // The secondary-address call keeps to the budget like any other: the next slot takes it.
        if !self.has_call(now) {
            return true;
        }
        let stats = self.ds.stats(now);
        self.increase(now, &stats, out);
        true
    }

    /// Back on prefixes: fallback addresses holding no pod go back to EC2 when the pool is not
    /// low without them.
    fn return_fallback_addresses(&mut self, now: Time, out: &mut Vec<Effect>) {
        let Some((eni, nets)) = self.fallback_returnable(now) else { return };
        self.ds.set_blocks_releasing(&eni, &nets, true).expect("blocks listed by the datastore");
        let ips = nets.iter().map(|n| n.addr()).collect();
        self.issue(Call::UnassignIps { eni: eni.clone(), ips }, Pending::Unassign { eni, nets }, out);
    }

    fn assign(&mut self, eni: EniId, count: u32, prefix: bool, out: &mut Vec<Effect>) {
        let call = if prefix {
            Call::AssignPrefixes { eni: eni.clone(), count }
        } else {
            Call::AssignIps { eni: eni.clone(), count }
        };
        self.issue(call, Pending::Assign { eni, count, prefix }, out);
    }

    fn create_eni(&mut self, now: Time, stats: &Stats, out: &mut Vec<Effect>) {
        let per_eni = u64::from(self.cfg.limits.blocks_per_eni);
        let blocks = self.fallback_size(self.policy.blocks_for_new_eni(stats), stats, now).min(per_eni) as u32;
        let prefix = self.cfg.mode == CidrMode::Prefix && !self.falling_back(now);
        let (subnet, security_groups) = match &self.cfg.pod_eni {
            Some(t) => (t.subnet.clone(), t.security_groups.clone()),
            None => (self.cfg.node_subnet.clone(), Vec::new()),
        };
        let used: Vec<u32> = self.devices_in_use().collect();
        let device_index = (0..).find(|i| !used.contains(i)).unwrap_or(0);
        let discover_in =
            if self.cfg.subnet_discovery && self.cfg.pod_eni.is_none() { self.cfg.az.clone() } else { None };
        let avoid = if discover_in.is_some() { self.exhausted.keys().cloned().collect() } else { Vec::new() };
        let call = Call::CreateEni {
            subnet,
            discover_in,
            avoid,
            security_groups,
            secondary_ips: if prefix { 0 } else { blocks },
            prefixes: if prefix { blocks } else { 0 },
        };
        self.issue(call, Pending::CreateEni { device_index, prefix }, out);
    }

    fn decrease(&mut self, now: Time, stats: &Stats, out: &mut Vec<Effect>) {
        let over = self.policy.blocks_to_release(stats);
        if over == 0 || self.gated(&Gate::Release, now) {
            return;
        }
        let groups = self.ds.releasable_blocks(over, self.cfg.corrected, now);
        let prefix = self.cfg.mode == CidrMode::Prefix;
        for (eni, nets) in groups {
            // One call per ENI, each paid for: what the budget cannot pay now waits for a later
            // cycle.
            if !self.has_call(now) {
                break;
            }
            // The ENI and blocks come from the datastore itself, so marking them cannot fail.
            self.ds.set_blocks_releasing(&eni, &nets, true).expect("blocks listed by the datastore");
            let call = if prefix {
                Call::UnassignPrefixes { eni: eni.clone(), prefixes: nets.clone() }
            } else {
                Call::UnassignIps { eni: eni.clone(), ips: nets.iter().map(Ipv4Net::addr).collect() }
            };
            self.issue(call, Pending::Unassign { eni, nets }, out);
        }
    }

    fn try_free_eni(&mut self, now: Time, out: &mut Vec<Effect>) {
        if !self.may_manage_enis() || self.gated(&Gate::Release, now) || !self.has_call(now) {
            return;
        }
        if let Some(eni) = self.deletable_eni(now) {
            // Found in the datastore just now.
            self.ds.set_eni_releasing(&eni, true).expect("ENI listed by the datastore");
            self.issue(Call::DetachEni { eni: eni.clone() }, Pending::Detach { eni }, out);
        }
    }

    /// The ENI the policy would free now (`RemoveUnusedENIFromStore`), skipping ENIs with a
    /// call in flight.
    fn deletable_eni(&self, now: Time) -> Option<EniId> {
        // The adaptive policy keeps an emptied ENI (it then holds only its primary address) while
        // the pool has grown within the hold: the next burst then needs assigns, not an attach.
        if let Some(a) = &self.adaptive
            && a.last_growth.is_some_and(|t| now.since(t) < crate::demand::ENI_HOLD)
        {
            return None;
        }
        let busy: Vec<&EniId> = self
            .pending
            .values()
            .filter_map(|p| match p {
                Pending::Assign { eni, .. } | Pending::Unassign { eni, .. } | Pending::Detach { eni } => Some(eni),
                Pending::AssignIpv6 { eni } | Pending::Delete { eni } | Pending::Protect { eni } => Some(eni),
                Pending::Attach { info } => Some(&info.id),
                Pending::CreateEni { .. } | Pending::Describe | Pending::ListUnattached => None,
            })
            .collect();
        let enis: Vec<_> = self.ds.enis().iter().filter(|e| !e.releasing).collect();
        let views: Vec<EniView> = enis
            .iter()
            .map(|e| EniView {
                primary: e.primary,
                pinned: e.pinned || busy.contains(&&e.id),
                age: now.since(e.created_at),
                stats: self.ds.eni_stats(e, now),
            })
            .collect();
        first_deletable(&self.policy, &views).map(|i| enis[i].id.clone())
    }

    /// When a steady pool could next change on its own (a cooldown ending, an ENI coming of
    /// age, the decrease gate or the back-off opening); `None` when only an event can change it.
    /// A caller may skip the ticks before this instant once [`Engine::steady`] holds.
    pub fn next_wakeup(&self, now: Time) -> Option<Time> {
        use crate::policy::MIN_ENI_LIFETIME;
        let later = |t: Time| (t > now).then_some(t);
        let ages = self.ds.enis().iter().filter_map(|e| later(e.created_at + MIN_ENI_LIFETIME));
        let gates = [
            self.last_decrease.and_then(|t| later(t + DECREASE_INTERVAL + std::time::Duration::from_millis(1))),
            self.last_insufficient.and_then(|t| later(t + INSUFFICIENT_CIDR_BACKOFF)),
            self.no_prefix_since.and_then(|t| later(t + self.no_prefix_for)),
            self.ds.next_cool(now),
            self.housekeeping_due_at(now),
        ];
        let backoffs = self.gates.values().filter_map(|r| later(r.until));
        // The adaptive targets change as starts leave the rate window and targets the hold.
        let demand = self.adaptive.as_ref().and_then(|a| a.demand.next_change(now));
        let eni_hold =
            self.adaptive.as_ref().and_then(|a| a.last_growth).and_then(|t| later(t + crate::demand::ENI_HOLD));
        let forget =
            self.adaptive.as_ref().and_then(|a| a.waiting.values().min()).and_then(|t| later(*t + WAITING_FORGOTTEN));
        let token = self.budget.as_ref().filter(|b| !b.may_call(now)).and_then(|b| later(b.ready_at(now)));
        let demand = demand.into_iter().chain(eni_hold).chain(forget).chain(token);
        ages.chain(gates.into_iter().flatten()).chain(backoffs).chain(demand).min()
    }

    /// Whether the pool is at its target at `now`: nothing in flight, and a pool-check cycle
    /// would change nothing (it is not low unless it cannot grow, not high, and no ENI is due to
    /// be freed).
    pub fn steady(&self, now: Time) -> bool {
        if !self.pending.is_empty() || self.housekeeping_due_at(now).is_some_and(|t| t <= now) {
            return false;
        }
        if self.gated(&Gate::Cloud, now) {
            return true;
        }
        if self.orphans.keys().any(|o| !self.gated(&Gate::Orphan(o.clone()), now))
            || self.unprotected.iter().any(|e| !self.gated(&Gate::Protect(e.clone()), now))
        {
            return false;
        }
        if self.cfg.mode == CidrMode::Ipv6 {
            return self.ds.enis().iter().any(|e| e.primary && e.v6_prefix.is_some());
        }
        let s = self.ds.stats(now);
        let eni_with_room = self.ds.enis().iter().any(|e| self.grows_on(e, now));
        let can_create = self.has_room_for_eni() && !self.gated(&Gate::Create, now);
        let can_grow = self.may_manage_enis()
            && !self.in_backoff(now)
            && !self.gated(&Gate::Grow, now)
            && (eni_with_room || can_create);
        if self.policy.is_low(&s) && can_grow && self.policy.blocks_to_assign(&s) > 0 {
            return false;
        }
        let over = self.policy.blocks_to_release(&s);
        if self.policy.is_high(&s) && over > 0 && !self.ds.releasable_blocks(over, self.cfg.corrected, now).is_empty() {
            return false;
        }
        if self.fallback_returnable(now).is_some() {
            return false;
        }
        let freeable = self.ds.enis().iter().any(|e| !e.primary && !e.pinned && !e.releasing && e.assigned() == 0);
        !(self.policy.should_remove_extra_enis(&s, freeable) && self.deletable_eni(now).is_some())
    }

    /// Fallback addresses to hand back to EC2 now, on one ENI: once a prefix call has worked
    /// again, every idle one the pool can do without; before that, only those over the warm
    /// target (the pool shrinks as it would on secondary addresses).
    fn fallback_returnable(&self, now: Time) -> Option<(EniId, Vec<Ipv4Net>)> {
        if !self.cfg.prefix_fallback || self.falling_back(now) || self.gated(&Gate::Release, now) {
            return None;
        }
        let (eni, mut nets) = self.ds.idle_fallback_addresses(now).into_iter().next()?;
        let s = self.ds.stats(now);
        let t = self.policy.cfg.targets;
        if self.no_prefix_since.is_some() {
            if !t.warm_ip_enabled() {
                return None;
            }
            let avail = self.policy.available(&s);
            let over = avail.saturating_sub(u64::from(t.warm_ip)).min(s.total.saturating_sub(u64::from(t.minimum_ip)));
            nets.truncate(usize::try_from(over).unwrap_or(usize::MAX));
        }
        let mut without = s;
        without.total = without.total.saturating_sub(nets.len() as u64);
        (!nets.is_empty() && !self.policy.is_low(&without)).then_some((eni, nets))
    }

    fn call_done(&mut self, now: Time, op: OpId, result: Result<CallOutput, CallError>, out: &mut Vec<Effect>) {
        let Some(pending) = self.pending.remove(&op) else { return };
        if let Some(a) = &mut self.adaptive {
            // Refills that worked teach how long the next one takes.
            let since = a.issued.remove(&op);
            match (&pending, result.is_ok()) {
                (Pending::Assign { .. }, true) => {
                    if let Some(t) = since {
                        a.demand.refill_took(Refill::Assign, now.since(t));
                    }
                    a.last_growth = Some(now);
                }
                (Pending::Attach { .. }, true) => {
                    if let Some(t) = a.creating_since.take() {
                        a.demand.refill_took(Refill::Attach, now.since(t));
                    }
                    a.last_growth = Some(now);
                }
                _ => {}
            }
        }
        if result.is_ok() {
            // The cloud answers: the node-wide back-off starts over.
            self.gates.remove(&Gate::Cloud);
        }
        if let Err(e) = &result {
            if matches!(e.kind, ErrorKind::Throttled | ErrorKind::Transient) {
                // Throttling is account-wide, and a cloud that fails or does not answer fails
                // every call: every call of the node waits.
                self.fail(Gate::Cloud, e, now);
            }
            if e.outcome_unknown() {
                // It may have taken effect: only EC2 can say.
                self.reconcile_due = true;
            }
        }
        let outcome = match (pending, result) {
            (Pending::CreateEni { device_index, prefix }, Ok(CallOutput::Eni(mut info))) => {
                self.succeed(&Gate::Create);
                if prefix && !info.prefixes.is_empty() {
                    self.no_prefix_since = None;
                }
                info.device_index = device_index;
                let eni = info.id.clone();
                self.issue(Call::AttachEni { eni, device_index }, Pending::Attach { info }, out);
                Ok(())
            }
            (Pending::CreateEni { prefix, .. }, Err(e)) => {
                if !(e.is_insufficient_addresses() && self.fall_back(now, prefix, out)) {
                    self.create_failed(now, &e);
                }
                Ok(())
            }
            (Pending::Attach { info }, Ok(_)) => {
                self.succeed(&Gate::Create);
                // EC2 leaves DeleteOnTermination false for an ENI attached by API: without it,
                // the ENI outlives its instance.
                let eni = info.id.clone();
                self.unprotected.insert(eni.clone());
                self.issue(Call::ProtectEni { eni: eni.clone() }, Pending::Protect { eni }, out);
                self.ds.add_eni(&info, false, now)
            }
            (Pending::Protect { eni }, result) => {
                self.protect_done(now, eni, result.map(|_| ()));
                Ok(())
            }
            (Pending::Attach { info }, Err(e)) => {
                self.attach_failed(now, info.id, info.device_index, &e);
                Ok(())
            }
            (Pending::Assign { eni, .. }, Ok(CallOutput::Ips(ips))) => {
                self.succeed(&Gate::Eni(eni.clone()));
                let nets: Vec<Ipv4Net> = ips.into_iter().map(crate::addr::host_net).collect();
                self.ds.add_blocks(&eni, &nets, false)
            }
            (Pending::Assign { eni, .. }, Ok(CallOutput::Prefixes(nets))) => {
                self.succeed(&Gate::Eni(eni.clone()));
                // Prefixes can be had again: fallback addresses may go back.
                self.no_prefix_since = None;
                self.ds.add_blocks(&eni, &nets, true)
            }
            (Pending::Assign { eni, count, prefix }, Err(e)) => {
                self.assign_failed(now, eni, count, prefix, &e, out);
                Ok(())
            }
            (Pending::AssignIpv6 { eni }, Ok(CallOutput::Ipv6Prefix(net))) => {
                self.succeed(&Gate::Grow);
                self.ds.set_v6_prefix(&eni, net)
            }
            (Pending::AssignIpv6 { .. }, Err(e)) => {
                if e.is_insufficient_addresses() {
                    self.note_insufficient(now);
                } else {
                    self.fail(Gate::Grow, &e, now);
                }
                Ok(())
            }
            (Pending::Unassign { eni, nets }, Ok(_)) => {
                self.succeed(&Gate::Release);
                if let Some(u) = self.unreleased.get_mut(&eni) {
                    u.retain(|n| !nets.contains(n));
                }
                self.ds.remove_blocks(&eni, &nets)
            }
            (Pending::Unassign { eni, nets }, Err(e)) => self.unassign_failed(now, &eni, &nets, &e),
            (Pending::Detach { eni }, Ok(_)) => {
                self.succeed(&Gate::Release);
                self.detached(now, &eni)
            }
            (Pending::Detach { eni }, Err(e)) => self.detach_failed(now, &eni, &e),
            (Pending::Delete { eni }, result) => {
                self.delete_done(now, eni, result.map(|_| ()));
                Ok(())
            }
            (Pending::Describe, Ok(CallOutput::Enis(enis))) => {
                self.reconcile(now, enis, out);
                Ok(())
            }
            (Pending::Describe, Err(e)) => {
                self.fail(Gate::Reconcile, &e, now);
                Ok(())
            }
            (Pending::ListUnattached, Ok(CallOutput::Leaked(leaked))) => {
                self.sweep(now, leaked);
                Ok(())
            }
            (Pending::ListUnattached, Err(e)) => {
                self.fail(Gate::Sweep, &e, now);
                Ok(())
            }
            (_, Ok(other)) => Err(DatastoreError::InUse(format!("unexpected result {other:?}"))),
        };
        if let Err(error) = outcome {
            self.counters.inconsistent += 1;
            self.reconcile_due = true;
            out.push(Effect::Inconsistent { op, error });
        }
    }

    fn note_insufficient(&mut self, now: Time) {
        self.last_insufficient = Some(now);
        self.counters.backoffs += 1;
    }

    fn create_failed(&mut self, now: Time, e: &CallError) {
        match e.kind {
            _ if e.is_insufficient_addresses() => self.note_insufficient(now),
            ErrorKind::Throttled | ErrorKind::Transient => {}
            _ => self.fail(Gate::Create, e, now),
        }
    }

    /// The created ENI did not attach: it is deleted (retried until EC2 confirms). When the
    /// attach may have happened after all, the reconcile finds it attached and adopts it.
    fn attach_failed(&mut self, now: Time, eni: EniId, device: u32, e: &CallError) {
        // When the attach may have happened after all, its slot stays reserved until EC2
        // confirms the delete.
        let may_hold = e.outcome_unknown() || e.kind == ErrorKind::Conflict;
        self.orphans.insert(eni, may_hold.then_some(device));
        match e.kind {
            ErrorKind::Capacity(Capacity::AttachmentLimit) => {
                self.attach_full = Some((self.eni_count(), now + LEARNED_LIMIT_TTL));
                self.reconcile_due = true;
                self.fail(Gate::Create, e, now);
            }
            ErrorKind::NotFound | ErrorKind::Conflict => {
                self.reconcile_due = true;
                self.fail(Gate::Create, e, now);
            }
            ErrorKind::Throttled | ErrorKind::Transient => {}
            _ => self.fail(Gate::Create, e, now),
        }
    }

    /// `tryAssignIPs`' error path: retry a multi-address request with 1; after that, subnet
    /// discovery moves on to a new ENI, otherwise an insufficient-address error starts the back-off.
    /// `PrivateIpAddressLimitExceeded` means the datastore is wrong about the ENI: it is skipped
    /// until a reconcile (due at once) has read it from EC2.
    fn assign_failed(&mut self, now: Time, eni: EniId, count: u32, prefix: bool, e: &CallError, out: &mut Vec<Effect>) {
        match e.kind {
            ErrorKind::Capacity(Capacity::AddressLimit) => {
                let blocks = self.ds.eni(&eni).map_or(0, crate::datastore::Eni::block_count);
                self.full_enis.insert(eni.clone(), (blocks, now + LEARNED_LIMIT_TTL));
                self.reconcile_due = true;
                self.fail(Gate::Eni(eni), e, now);
                return;
            }
            // The whole node waits already.
            ErrorKind::Throttled | ErrorKind::Transient => return,
            ErrorKind::NotFound => {
                self.reconcile_due = true;
                self.fail(Gate::Eni(eni), e, now);
                return;
            }
            _ => {}
        }
        if count > 1 && self.pending.is_empty() {
            self.assign(eni, 1, prefix, out);
            return;
        }
        if e.is_insufficient_addresses() {
            // No /28 free, but maybe single addresses: podip's fallback goes on with those.
            if self.fall_back(now, prefix, out) {
                return;
            }
            if self.cfg.subnet_discovery {
                // This ENI's subnet ran out: go on with the other ENIs, else a new ENI, which
                // discovery puts in the subnet with the most room.
                if let Some(subnet) = self.ds.eni(&eni).map(|x| x.subnet.clone()) {
                    self.exhausted.insert(subnet, now + INSUFFICIENT_CIDR_BACKOFF);
                }
                let before = self.pending.len();
                let stats = self.ds.stats(now);
                self.increase(now, &stats, out);
                if self.pending.len() > before {
                    return;
                }
            }
            self.note_insufficient(now);
            return;
        }
        self.fail(Gate::Eni(eni), e, now);
    }

    /// A release that surely did not happen (throttled) is undone; one whose outcome is unknown
    /// keeps its blocks out of use until the reconcile (due at once) reads the ENI.
    fn unassign_failed(
        &mut self,
        now: Time,
        eni: &EniId,
        nets: &[Ipv4Net],
        e: &CallError,
    ) -> Result<(), DatastoreError> {
        let settling = self.unreleased.get(eni).is_some_and(|u| nets.iter().any(|n| u.contains(n)));
        if settling {
            // A retry of a release that may already have happened: whatever this one says, the
            // blocks stay out of use until EC2 answers a retry, or a describe no longer lists them.
            self.reconcile_due |= !e.outcome_unknown() && e.kind != ErrorKind::Throttled;
            self.fail(Gate::Release, e, now);
            return Ok(());
        }
        if e.kind == ErrorKind::Throttled {
            return self.ds.set_blocks_releasing(eni, nets, false);
        }
        if e.outcome_unknown() {
            // EC2 may have taken them: they are released again, never put back in use.
            self.unreleased.entry(eni.clone()).or_default().extend_from_slice(nets);
        } else {
            // A refused unassign changed nothing: the reconcile puts back what EC2 still shows.
            self.reconcile_due = true;
        }
        self.fail(Gate::Release, e, now);
        Ok(())
    }

    /// EC2 is detaching the ENI: it leaves the datastore and is deleted once detached.
    fn detached(&mut self, now: Time, eni: &EniId) -> Result<(), DatastoreError> {
        let device = self.ds.eni(eni).map(|e| e.device_index);
        self.undetached.remove(eni);
        self.ds.remove_eni(eni)?;
        self.full_enis.remove(eni);
        self.gates.remove(&Gate::Eni(eni.clone()));
        self.orphans.insert(eni.clone(), device);
        // The VPC CNI waits 2 s between detach and delete; the delete retries while EC2 says
        // the ENI is still in use.
        self.gates.insert(Gate::Orphan(eni.clone()), Retry { failures: 0, until: now + DETACH_WAIT });
        Ok(())
    }

    fn detach_failed(&mut self, now: Time, eni: &EniId, e: &CallError) -> Result<(), DatastoreError> {
        let settling = self.undetached.contains(eni);
        match e.kind {
            // A retry of a detach that may already have happened: never back in use.
            ErrorKind::Throttled | ErrorKind::Permanent if settling => {
                self.fail(Gate::Release, e, now);
                Ok(())
            }
            ErrorKind::Throttled => self.ds.set_eni_releasing(eni, false),
            // Not attached any more, or already detaching: it only needs deleting.
            ErrorKind::NotFound | ErrorKind::Conflict => {
                self.reconcile_due = true;
                self.detached(now, eni)
            }
            ErrorKind::Transient => {
                // EC2 may be detaching it: it is detached again, never put back in use.
                self.undetached.insert(eni.clone());
                self.fail(Gate::Release, e, now);
                Ok(())
            }
            _ => {
                self.fail(Gate::Release, e, now);
                self.ds.set_eni_releasing(eni, false)
            }
        }
    }
}

/// How long after a detach the first delete of the ENI is tried.
pub const DETACH_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

#[cfg(test)]
mod tests;
