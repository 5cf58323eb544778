//! How the engine recovers from EC2's errors without looping: back-off with jitter per error
//! kind and per target, the reconcile that corrects the datastore from EC2, the deletion of
//! unattached ENIs (a failed attach, a detach, a leak) and the leak sweep.
//!
//! Bounds, per node: every gate doubles from its kind's base to its cap (jittered to 50-100%),
//! so a call that keeps failing is repeated at most once per cap; throttling, server errors and
//! timeouts stop every call of the node; a reconcile runs at most once per pool cycle and only
//! with nothing in flight; a limit EC2 reports is believed over the catalog for
//! [`super::LEARNED_LIMIT_TTL`].

use super::{Effect, Engine, Pending};
use crate::addr::{EniId, host_net};
use crate::call::{Call, CallError, Capacity, ErrorKind, NodeEnis};
use crate::time::Time;
use ipnet::Ipv4Net;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// How long an unattached ENI of this node must be seen by the leak sweep before it is deleted:
/// the VPC CNI's 5 minutes after `createdAt` (`vpc-cni-behaviour.md` §7), counted here on the
/// node's own clock from the first sighting, so clock skew cannot shorten it.
pub const LEAK_GRACE: Duration = Duration::from_secs(300);

/// How long an unattached ENI another node made must be seen before this node deletes it: its
/// own node, if alive, does it after [`LEAK_GRACE`]. Then one such ENI per sweep, picked at
/// random, so the nodes of a cluster do not all race for the same ones.
pub const FOREIGN_LEAK_GRACE: Duration = Duration::from_secs(1800);

/// What a back-off gates.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Gate {
    /// Every call (the account is throttled, or the cloud fails or does not answer).
    Cloud,
    /// Growing the pool at all.
    Grow,
    /// Creating and attaching ENIs.
    Create,
    /// Assigning to one ENI.
    Eni(EniId),
    /// Handing blocks and ENIs back.
    Release,
    /// Deleting one unattached ENI.
    Orphan(EniId),
    /// Setting one ENI to go with the instance.
    Protect(EniId),
    /// The reconcile.
    Reconcile,
    /// The leak sweep.
    Sweep,
}

/// One back-off: failures in a row, and until when the gate is shut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Retry {
    pub(super) failures: u32,
    pub(super) until: Time,
}

/// The first and the longest back-off after an error of `kind` (before jitter). Throttling and
/// server errors start short; limits and permanent errors, which a retry rarely fixes, start at
/// 30 s; a quota at a minute.
pub fn backoff_bounds(kind: ErrorKind) -> (Duration, Duration) {
    let s = Duration::from_secs;
    match kind {
        ErrorKind::Throttled | ErrorKind::Transient | ErrorKind::NotFound => (s(5), s(60)),
        ErrorKind::Conflict => (s(2), s(60)),
        ErrorKind::Capacity(Capacity::Quota) => (s(60), s(600)),
        ErrorKind::Capacity(_) => (s(30), s(300)),
        ErrorKind::Permanent => (s(30), s(600)),
    }
}

/// What a reconcile changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReconcileReport {
    /// ENIs attached in EC2 that the datastore lacked (adopted).
    pub adopted_enis: Vec<EniId>,
    /// ENIs in the datastore that EC2 no longer shows attached (dropped, or kept out of use
    /// while pods hold addresses on them).
    pub dropped_enis: Vec<EniId>,
    /// Blocks EC2 shows that the datastore lacked (adopted).
    pub adopted_blocks: Vec<Ipv4Net>,
    /// Blocks the datastore had that EC2 does not (dropped, or kept out of use while pods
    /// hold addresses in them).
    pub dropped_blocks: Vec<Ipv4Net>,
    /// Blocks or ENIs marked as being released that EC2 still shows: usable again.
    pub restored: Vec<String>,
    /// Pods whose address EC2 no longer has on this node (they keep it until they go; it is
    /// never handed to another pod here).
    pub stranded_pods: u32,
}

impl ReconcileReport {
    /// Whether anything changed.
    pub fn changed(&self) -> bool {
        *self != ReconcileReport::default()
    }
}

impl Engine {
    /// Whether `gate` is shut at `now`.
    pub(super) fn gated(&self, gate: &Gate, now: Time) -> bool {
        self.gates.get(gate).is_some_and(|r| now < r.until)
    }

    /// Shuts `gate` after error `e`: the kind's base doubled per failure in a row, up to its
    /// cap, jittered to 50-100%.
    pub(super) fn fail(&mut self, gate: Gate, e: &CallError, now: Time) {
        let (base, cap) = backoff_bounds(e.kind);
        let failures = self.gates.get(&gate).map_or(0, |r| r.failures).saturating_add(1);
        let full = base.saturating_mul(1 << (failures - 1).min(16)).min(cap);
        let delay = full.mul_f64(0.5 + 0.5 * self.rng.unit());
        self.gates.insert(gate, Retry { failures, until: now + delay });
        self.counters.error_backoffs += 1;
    }

    /// Opens `gate` after a success.
    pub(super) fn succeed(&mut self, gate: &Gate) {
        self.gates.remove(gate);
    }

    fn reconcile_at(&self) -> Option<Time> {
        if self.reconcile_due {
            return Some(self.last_reconcile);
        }
        self.cfg.housekeeping.reconcile_every.map(|every| self.last_reconcile + every)
    }

    /// When the next reconcile or sweep is due (it runs at the first pool cycle from then).
    pub(super) fn housekeeping_due_at(&self, now: Time) -> Option<Time> {
        let gate = |g: &Gate| self.gates.get(g).map_or(now, |r| r.until.max(now));
        let reconcile = self.reconcile_at().map(|t| t.max(gate(&Gate::Reconcile)));
        let sweep = self.cfg.housekeeping.leak_sweep_every.map(|_| self.next_sweep.max(gate(&Gate::Sweep)));
        [reconcile, sweep].into_iter().flatten().min()
    }

    /// Starts a reconcile or a leak sweep when one is due (nothing else is in flight); true
    /// when it did. While the pool wants to grow, only a reconcile an error asked for runs.
    pub(super) fn housekeeping(&mut self, now: Time, growth_waits: bool, out: &mut Vec<Effect>) -> bool {
        let reconcile = self.reconcile_at().is_some_and(|t| t <= now) && !self.gated(&Gate::Reconcile, now);
        if reconcile && (self.reconcile_due || !growth_waits) {
            self.issue(Call::Describe, Pending::Describe, out);
            return true;
        }
        if growth_waits {
            return false;
        }
        if self.cfg.housekeeping.leak_sweep_every.is_some() && self.next_sweep <= now && !self.gated(&Gate::Sweep, now)
        {
            self.issue(Call::ListUnattached, Pending::ListUnattached, out);
            return true;
        }
        false
    }

    /// Makes again a release whose outcome was unknown (unassign, or detach), when the release
    /// back-off is over.
    pub(super) fn redo_release(&mut self, now: Time, out: &mut Vec<Effect>) {
        if self.gated(&Gate::Release, now) {
            return;
        }
        // Entries stay until settled: a retry's success, or a reconcile that no longer lists them.
        self.undetached.retain(|eni| self.ds.eni(eni).is_some_and(|e| e.releasing));
        for (eni, nets) in &mut self.unreleased {
            let e = self.ds.eni(eni);
            nets.retain(|n| e.is_some_and(|e| e.cidrs.iter().any(|c| c.net == *n && c.releasing && c.assigned() == 0)));
        }
        self.unreleased.retain(|_, nets| !nets.is_empty());
        if let Some(eni) = self.undetached.first().cloned() {
            self.issue(Call::DetachEni { eni: eni.clone() }, Pending::Detach { eni }, out);
            return;
        }
        let Some((eni, mut nets)) = self.unreleased.first_key_value().map(|(k, v)| (k.clone(), v.clone())) else {
            return;
        };
        // One call per kind: prefixes and single addresses (a fallback's) go back separately.
        let single = nets[0].prefix_len() == 32;
        nets.retain(|n| (n.prefix_len() == 32) == single);
        let call = if single {
            Call::UnassignIps { eni: eni.clone(), ips: nets.iter().map(Ipv4Net::addr).collect() }
        } else {
            Call::UnassignPrefixes { eni: eni.clone(), prefixes: nets.clone() }
        };
        self.issue(call, Pending::Unassign { eni, nets }, out);
    }

    /// Sets one attached ENI to go with the instance, when its back-off is over.
    pub(super) fn protect_one(&mut self, now: Time, out: &mut Vec<Effect>) {
        let ready = self.unprotected.iter().find(|e| !self.gated(&Gate::Protect((*e).clone()), now)).cloned();
        if let Some(eni) = ready {
            self.issue(Call::ProtectEni { eni: eni.clone() }, Pending::Protect { eni }, out);
        }
    }

    pub(super) fn protect_done(&mut self, now: Time, eni: EniId, result: Result<(), CallError>) {
        match result {
            Ok(()) => {
                self.unprotected.remove(&eni);
                self.gates.remove(&Gate::Protect(eni));
            }
            Err(e) if e.kind == ErrorKind::NotFound => {
                // Gone or detached: the reconcile sorts it out.
                self.unprotected.remove(&eni);
                self.reconcile_due = true;
            }
            Err(e) => self.fail(Gate::Protect(eni), &e, now),
        }
    }

    /// Deletes one unattached ENI whose back-off is over.
    pub(super) fn delete_one_orphan(&mut self, now: Time, out: &mut Vec<Effect>) {
        let ready = self.orphans.keys().find(|o| !self.gated(&Gate::Orphan((*o).clone()), now)).cloned();
        if let Some(eni) = ready {
            self.issue(Call::DeleteEni { eni: eni.clone() }, Pending::Delete { eni }, out);
        }
    }

    pub(super) fn delete_done(&mut self, now: Time, eni: EniId, result: Result<(), CallError>) {
        match result {
            Ok(()) => {
                self.counters.enis_deleted += 1;
                self.orphans.remove(&eni);
                self.swept.remove(&eni);
                self.gates.remove(&Gate::Orphan(eni));
            }
            Err(e) if e.kind == ErrorKind::NotFound => {
                self.orphans.remove(&eni);
                self.swept.remove(&eni);
                self.gates.remove(&Gate::Orphan(eni));
            }
            Err(e) if e.kind == ErrorKind::Conflict && self.swept.contains(&eni) => {
                // A leaked ENI someone attached since: not a leak any more.
                self.orphans.remove(&eni);
                self.swept.remove(&eni);
                self.gates.remove(&Gate::Orphan(eni));
            }
            Err(e) => {
                self.counters.cleanup_failures += 1;
                if e.kind == ErrorKind::Conflict {
                    // Still detaching, or attached after all (a lost attach reply): the
                    // reconcile adopts it if it is this node's.
                    self.reconcile_due = true;
                }
                self.fail(Gate::Orphan(eni), &e, now);
            }
        }
    }

    /// Corrects the datastore from EC2's view of the node's ENIs; nothing else is in flight.
    pub(super) fn reconcile(&mut self, now: Time, node: NodeEnis, out: &mut Vec<Effect>) {
        self.succeed(&Gate::Reconcile);
        self.reconcile_due = false;
        self.last_reconcile = now;
        self.counters.reconciles += 1;
        self.unmanaged = node.unmanaged;
        self.unprotected = node.unprotected.into_iter().collect();
        // Someone tagged an ENI podip used `no_manage`, or it became a trunk: podip lets go of
        // it without touching it.
        let let_go: Vec<EniId> = self.unmanaged.iter().map(|(id, _)| id.clone()).collect();
        let mut report = ReconcileReport::default();
        let ec2: BTreeMap<EniId, &crate::datastore::EniInfo> = node.managed.iter().map(|e| (e.id.clone(), e)).collect();
        let known: Vec<EniId> = self.ds.enis().iter().map(|e| e.id.clone()).collect();
        for id in &known {
            match ec2.get(id) {
                None if let_go.contains(id) => self.let_go(id, &mut report),
                None => self.reconcile_gone(id, &mut report),
                Some(info) => self.reconcile_blocks(id, info, &mut report),
            }
        }
        for id in &let_go {
            self.orphans.remove(id);
        }
        // An orphan EC2 no longer shows attached (or detaching) here frees its device index.
        self.detaching = node.detaching;
        let attached: BTreeSet<&EniId> =
            ec2.keys().chain(let_go.iter()).chain(self.detaching.iter().map(|(id, _)| id)).collect();
        for (id, device) in &mut self.orphans {
            if !attached.contains(id) {
                *device = None;
            }
        }
        for info in node.managed.iter().filter(|e| !known.contains(&e.id)) {
            self.orphans.remove(&info.id);
            self.gates.remove(&Gate::Orphan(info.id.clone()));
            self.leak_seen.remove(&info.id);
            match self.ds.add_eni(info, info.device_index == 0, now) {
                Ok(()) => report.adopted_enis.push(info.id.clone()),
                Err(error) => {
                    self.counters.inconsistent += 1;
                    out.push(Effect::Inconsistent { op: crate::call::OpId(u64::MAX), error });
                }
            }
        }
        if report.changed() {
            self.counters.reconcile_changes += 1;
            out.push(Effect::Reconciled(report));
        }
    }

    /// An ENI podip used that it must now leave alone: forgotten (its pods keep their addresses
    /// until they go, out of use for new ones), never detached or deleted.
    fn let_go(&mut self, id: &EniId, report: &mut ReconcileReport) {
        let Some(eni) = self.ds.eni(id) else { return };
        report.dropped_enis.push(id.clone());
        if eni.assigned() == 0 {
            let _ = self.ds.remove_eni(id);
            return;
        }
        report.stranded_pods += eni.assigned();
        let nets: Vec<Ipv4Net> = eni.cidrs.iter().map(|c| c.net).collect();
        let _ = self.ds.set_eni_releasing(id, true);
        let _ = self.ds.set_blocks_releasing(id, &nets, true);
    }

    /// An ENI EC2 no longer shows attached to the node.
    fn reconcile_gone(&mut self, id: &EniId, report: &mut ReconcileReport) {
        self.undetached.remove(id);
        self.unreleased.remove(id);
        let Some(eni) = self.ds.eni(id) else { return };
        if eni.primary {
            return;
        }
        report.dropped_enis.push(id.clone());
        if eni.assigned() == 0 {
            // Nothing of it is in use: forget it, and delete it if it still exists (its slot
            // stays taken while EC2 may still be detaching it).
            let device = eni.device_index;
            let _ = self.ds.remove_eni(id);
            self.orphans.insert(id.clone(), Some(device));
            return;
        }
        report.stranded_pods += eni.assigned();
        let nets: Vec<Ipv4Net> = eni.cidrs.iter().map(|c| c.net).collect();
        let _ = self.ds.set_eni_releasing(id, true);
        let _ = self.ds.set_blocks_releasing(id, &nets, true);
    }

    /// Makes one ENI's blocks match EC2's.
    fn reconcile_blocks(&mut self, id: &EniId, info: &crate::datastore::EniInfo, report: &mut ReconcileReport) {
        let Some(eni) = self.ds.eni(id) else { return };
        let mut theirs: BTreeSet<(Ipv4Net, bool)> =
            info.secondary_ips.iter().map(|ip| (host_net(*ip), false)).collect();
        theirs.extend(info.prefixes.iter().map(|p| (*p, true)));
        let ours: Vec<(Ipv4Net, bool, bool, u32)> =
            eni.cidrs.iter().map(|c| (c.net, c.is_prefix, c.releasing, c.assigned())).collect();
        let eni_releasing = eni.releasing;
        let v6_missing = eni.v6_prefix.is_none();
        // What a release of unknown outcome holds stays out of use even if EC2 still lists it: a
        // describe can lag what EC2 already took back. The release is made again instead.
        let unreleased: Vec<Ipv4Net> = self.unreleased.get(id).cloned().unwrap_or_default();
        if eni_releasing && !self.undetached.contains(id) && eni.assigned() == 0 {
            // A detach that surely did not happen: the ENI is usable again.
            let _ = self.ds.set_eni_releasing(id, false);
            report.restored.push(id.to_string());
        }
        for (net, is_prefix, releasing, assigned) in &ours {
            let present = theirs.contains(&(*net, *is_prefix));
            if present && *releasing && unreleased.contains(net) {
                continue;
            }
            if present && *releasing {
                let _ = self.ds.set_blocks_releasing(id, &[*net], false);
                report.restored.push(net.to_string());
            } else if !present {
                if let Some(u) = self.unreleased.get_mut(id) {
                    u.retain(|n| n != net);
                }
                report.dropped_blocks.push(*net);
                if *assigned == 0 {
                    let _ = self.ds.remove_blocks(id, &[*net]);
                } else {
                    report.stranded_pods += assigned;
                    let _ = self.ds.set_blocks_releasing(id, &[*net], true);
                }
            }
        }
        let have: BTreeSet<Ipv4Net> = ours.iter().map(|(n, ..)| *n).collect();
        for (net, is_prefix) in theirs.into_iter().filter(|(n, _)| !have.contains(n)) {
            if self.ds.add_blocks(id, &[net], is_prefix).is_ok() {
                report.adopted_blocks.push(net);
            }
        }
        if v6_missing && let Some(p) = info.v6_prefix {
            let _ = self.ds.set_v6_prefix(id, p);
        }
    }

    /// The leak sweep's list: this node's ENIs unattached for [`LEAK_GRACE`] are deleted, and
    /// one other node's unattached for [`FOREIGN_LEAK_GRACE`], at random.
    pub(super) fn sweep(&mut self, now: Time, leaked: Vec<(EniId, bool)>) {
        self.succeed(&Gate::Sweep);
        if let Some(every) = self.cfg.housekeeping.leak_sweep_every {
            self.next_sweep = now + every;
        }
        let present: BTreeSet<&EniId> = leaked.iter().map(|(id, _)| id).collect();
        self.leak_seen.retain(|id, _| present.contains(id));
        // A leaked ENI no longer unattached (someone attached it) is not to be deleted.
        let gone: Vec<EniId> = self.swept.iter().filter(|id| !present.contains(id)).cloned().collect();
        for id in gone {
            self.swept.remove(&id);
            self.orphans.remove(&id);
            self.gates.remove(&Gate::Orphan(id));
        }
        let mut foreign = Vec::new();
        for (id, mine) in &leaked {
            if self.orphans.contains_key(id) {
                continue;
            }
            let first = *self.leak_seen.entry(id.clone()).or_insert(now);
            let seen = now.since(first);
            if *mine && seen >= LEAK_GRACE {
                self.leak_seen.remove(id);
                self.orphans.insert(id.clone(), None);
                self.swept.insert(id.clone());
                self.counters.leaked += 1;
            } else if !*mine && seen >= FOREIGN_LEAK_GRACE {
                foreign.push(id.clone());
            }
        }
        if !foreign.is_empty() {
            let id = foreign.swap_remove(self.rng.below(foreign.len() as u64) as usize);
            self.leak_seen.remove(&id);
            self.swept.insert(id.clone());
            self.orphans.insert(id, None);
            self.counters.leaked += 1;
        }
    }
}
