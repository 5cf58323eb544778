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
//! calls. Blocks being handed back are marked and only dropped once EC2 confirms; a failed
//! release is undone.
//!
//! [`POOL_CHECK_INTERVAL`]: crate::policy::POOL_CHECK_INTERVAL

use crate::addr::{EniId, PodKey};
use crate::call::{Call, CallError, CallOutput, Capacity, ErrorKind, OpId};
use crate::config::NodeConfig;
use crate::datastore::{CidrMode, Datastore, DatastoreError, EniInfo, Stats};
use crate::policy::{DECREASE_INTERVAL, EniView, INSUFFICIENT_CIDR_BACKOFF, PoolPolicy, VpcCni, first_deletable};
use crate::time::Time;
use ipnet::Ipv4Net;
use std::collections::BTreeMap;
use std::net::IpAddr;

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
    /// A call result did not fit the datastore (the datastore is unchanged).
    Inconsistent {
        /// The call.
        op: OpId,
        /// What was wrong.
        error: DatastoreError,
    },
}

#[derive(Clone, Debug)]
enum Pending {
    CreateEni,
    Assign { eni: EniId, count: u32, prefix: bool },
    AssignIpv6 { eni: EniId },
    Unassign { eni: EniId, nets: Vec<Ipv4Net> },
    DeleteEni { eni: EniId },
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
    schedulable: bool,
    counters: EngineCounters,
}

impl Engine {
    /// An engine for a node whose attached ENIs are `enis` (the primary has device index 0).
    ///
    /// # Errors
    /// The ENIs overlap or carry misaligned prefixes.
    pub fn new(cfg: NodeConfig, enis: &[EniInfo], seed: u64, now: Time) -> Result<Engine, DatastoreError> {
        let mut ds = Datastore::new(cfg.mode, cfg.cooldown, cfg.packing, seed);
        for e in enis {
            ds.add_eni(e, e.device_index == 0, now)?;
        }
        let policy = VpcCni { cfg: cfg.policy_config() };
        Ok(Engine {
            cfg,
            policy,
            ds,
            pending: BTreeMap::new(),
            next_op: 0,
            last_decrease: None,
            last_insufficient: None,
            schedulable: true,
            counters: EngineCounters::default(),
        })
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
        match event {
            Event::Tick => self.tick(now, out),
            Event::PodAdd(key) => match self.ds.assign(&key, now) {
                Ok(p) => {
                    self.counters.assigned += 1;
                    out.push(Effect::PodAssigned { key, addr: p.addr, eni: p.eni, device_index: p.device_index });
                }
                Err(_) => {
                    self.counters.rejected += 1;
                    out.push(Effect::PodRejected { key, reason: Reject::PoolExhausted });
                }
            },
            Event::PodDel(key) => {
                let addr = self.ds.unassign(&key, now);
                self.counters.released += u64::from(addr.is_some());
                out.push(Effect::PodReleased { key, addr });
            }
            Event::CallDone { op, result } => self.call_done(now, op, result, out),
            Event::Schedulable(s) => self.schedulable = s,
        }
    }

    fn issue(&mut self, call: Call, pending: Pending, out: &mut Vec<Effect>) {
        let op = OpId(self.next_op);
        self.next_op += 1;
        self.pending.insert(op, pending);
        out.push(Effect::Call { op, call });
    }

    fn tick(&mut self, now: Time, out: &mut Vec<Effect>) {
        if !self.pending.is_empty() {
            return;
        }
        if self.cfg.mode == CidrMode::Ipv6 {
            self.ensure_ipv6_prefix(out);
            return;
        }
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

    fn has_room_for_eni(&self) -> bool {
        (self.ds.enis().len() as u32) < self.cfg.limits.max_enis
    }

    fn increase(&mut self, now: Time, stats: &Stats, out: &mut Vec<Effect>) {
        if !self.may_manage_enis() || self.in_backoff(now) {
            return;
        }
        let prefix = self.cfg.mode == CidrMode::Prefix;
        let per_eni = self.cfg.limits.blocks_per_eni;
        let target = self.ds.enis().iter().find(|e| self.takes_blocks(e));
        if let Some(eni) = target {
            let want = self.policy.blocks_to_assign(stats);
            let count = u64::from(per_eni - eni.block_count()).min(want) as u32;
            if count == 0 {
                return;
            }
            let eni = eni.id.clone();
            self.assign(eni, count, prefix, out);
        } else if self.has_room_for_eni() {
            self.create_eni(stats, out);
        }
    }

    fn assign(&mut self, eni: EniId, count: u32, prefix: bool, out: &mut Vec<Effect>) {
        let call = if prefix {
            Call::AssignPrefixes { eni: eni.clone(), count }
        } else {
            Call::AssignIps { eni: eni.clone(), count }
        };
        self.issue(call, Pending::Assign { eni, count, prefix }, out);
    }

    fn create_eni(&mut self, stats: &Stats, out: &mut Vec<Effect>) {
        let blocks = self.policy.blocks_for_new_eni(stats) as u32;
        let prefix = self.cfg.mode == CidrMode::Prefix;
        let (subnet, security_groups) = match &self.cfg.pod_eni {
            Some(t) => (t.subnet.clone(), t.security_groups.clone()),
            None => (self.cfg.node_subnet.clone(), Vec::new()),
        };
        let used: Vec<u32> = self.ds.enis().iter().map(|e| e.device_index).collect();
        let device_index = (0..).find(|i| !used.contains(i)).unwrap_or(0);
        let call = Call::CreateEni {
            subnet,
            security_groups,
            device_index,
            secondary_ips: if prefix { 0 } else { blocks },
            prefixes: if prefix { blocks } else { 0 },
        };
        self.issue(call, Pending::CreateEni, out);
    }

    fn decrease(&mut self, now: Time, stats: &Stats, out: &mut Vec<Effect>) {
        let over = self.policy.blocks_to_release(stats);
        if over == 0 {
            return;
        }
        let groups = self.ds.releasable_blocks(over, self.cfg.corrected, now);
        let prefix = self.cfg.mode == CidrMode::Prefix;
        for (eni, nets) in groups {
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
        if !self.may_manage_enis() {
            return;
        }
        if let Some(eni) = self.deletable_eni(now) {
            // Found in the datastore just now.
            self.ds.set_eni_releasing(&eni, true).expect("ENI listed by the datastore");
            self.issue(Call::DeleteEni { eni: eni.clone() }, Pending::DeleteEni { eni }, out);
        }
    }

    /// The ENI the policy would free now (`RemoveUnusedENIFromStore`), skipping ENIs with a
    /// call in flight.
    fn deletable_eni(&self, now: Time) -> Option<EniId> {
        let busy: Vec<&EniId> = self
            .pending
            .values()
            .filter_map(|p| match p {
                Pending::Assign { eni, .. } | Pending::Unassign { eni, .. } | Pending::DeleteEni { eni } => Some(eni),
                Pending::AssignIpv6 { eni } => Some(eni),
                Pending::CreateEni => None,
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
            self.ds.next_cool(now),
        ];
        ages.chain(gates.into_iter().flatten()).min()
    }

    /// Whether the pool is at its target at `now`: nothing in flight, and a pool-check cycle
    /// would change nothing (it is not low unless it cannot grow, not high, and no ENI is due to
    /// be freed).
    pub fn steady(&self, now: Time) -> bool {
        if !self.pending.is_empty() {
            return false;
        }
        if self.cfg.mode == CidrMode::Ipv6 {
            return self.ds.enis().iter().any(|e| e.primary && e.v6_prefix.is_some());
        }
        let s = self.ds.stats(now);
        let eni_with_room = self.ds.enis().iter().any(|e| self.takes_blocks(e));
        let can_grow = self.may_manage_enis() && !self.in_backoff(now) && (eni_with_room || self.has_room_for_eni());
        if self.policy.is_low(&s) && can_grow && self.policy.blocks_to_assign(&s) > 0 {
            return false;
        }
        let over = self.policy.blocks_to_release(&s);
        if self.policy.is_high(&s) && over > 0 && !self.ds.releasable_blocks(over, self.cfg.corrected, now).is_empty() {
            return false;
        }
        let freeable = self.ds.enis().iter().any(|e| !e.primary && !e.pinned && !e.releasing && e.assigned() == 0);
        !(self.policy.should_remove_extra_enis(&s, freeable) && self.deletable_eni(now).is_some())
    }

    fn call_done(&mut self, now: Time, op: OpId, result: Result<CallOutput, CallError>, out: &mut Vec<Effect>) {
        let Some(pending) = self.pending.remove(&op) else { return };
        let outcome = match (pending, result) {
            (Pending::CreateEni, Ok(CallOutput::Eni(info))) => self.ds.add_eni(&info, false, now),
            (Pending::CreateEni, Err(e)) => {
                self.note_error(now, &e);
                Ok(())
            }
            (Pending::Assign { eni, .. }, Ok(CallOutput::Ips(ips))) => {
                let nets: Vec<Ipv4Net> = ips.into_iter().map(crate::addr::host_net).collect();
                self.ds.add_blocks(&eni, &nets, false)
            }
            (Pending::Assign { eni, .. }, Ok(CallOutput::Prefixes(nets))) => self.ds.add_blocks(&eni, &nets, true),
            (Pending::Assign { eni, count, prefix }, Err(e)) => {
                self.assign_failed(now, eni, count, prefix, &e, out);
                Ok(())
            }
            (Pending::AssignIpv6 { eni }, Ok(CallOutput::Ipv6Prefix(net))) => self.ds.set_v6_prefix(&eni, net),
            (Pending::Unassign { eni, nets }, Ok(_)) => self.ds.remove_blocks(&eni, &nets),
            (Pending::Unassign { eni, nets }, Err(e)) if e.kind == ErrorKind::NotFound => {
                self.ds.remove_blocks(&eni, &nets)
            }
            (Pending::Unassign { eni, nets }, Err(_)) => self.ds.set_blocks_releasing(&eni, &nets, false),
            (Pending::DeleteEni { eni }, Ok(_)) => self.ds.remove_eni(&eni),
            (Pending::DeleteEni { eni }, Err(e)) if e.kind == ErrorKind::NotFound => self.ds.remove_eni(&eni),
            (Pending::DeleteEni { eni }, Err(_)) => self.ds.set_eni_releasing(&eni, false),
            (Pending::AssignIpv6 { .. }, Err(e)) => {
                self.note_error(now, &e);
                Ok(())
            }
            (_, Ok(other)) => Err(DatastoreError::InUse(format!("unexpected result {other:?}"))),
        };
        if let Err(error) = outcome {
            out.push(Effect::Inconsistent { op, error });
        }
    }

    fn note_error(&mut self, now: Time, e: &CallError) {
        if e.is_insufficient_addresses() {
            self.last_insufficient = Some(now);
            self.counters.backoffs += 1;
        }
    }

    /// `tryAssignIPs`' error path: retry a multi-address request with 1; after that, subnet
    /// discovery moves on to a new ENI, otherwise an insufficient-address error starts the back-off.
    fn assign_failed(&mut self, now: Time, eni: EniId, count: u32, prefix: bool, e: &CallError, out: &mut Vec<Effect>) {
        if e.kind == ErrorKind::Capacity(Capacity::AddressLimit) {
            return;
        }
        if count > 1 && self.pending.is_empty() {
            self.assign(eni, 1, prefix, out);
            return;
        }
        if e.is_insufficient_addresses() && self.cfg.subnet_discovery && self.has_room_for_eni() {
            let stats = self.ds.stats(now);
            self.create_eni(&stats, out);
            return;
        }
        self.note_error(now, e);
    }
}

#[cfg(test)]
mod tests;
