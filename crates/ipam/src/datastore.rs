//! The node's address datastore: its ENIs, their /32 secondary addresses and /28 prefixes, the
//! node's IPv6 /80, and which pod holds which address.
//!
//! Invariants (checked by the property tests):
//! - an address is held by at most one pod, and a pod key by at most one address;
//! - the same key always gets the same address back (assignment is idempotent);
//! - a released address cools down for the configured period before it is handed out again;
//! - a CIDR or ENI that holds a pod is never removed.

use crate::addr::{EniId, PREFIX_SIZE, PodKey, SubnetId, host_net, is_aligned_prefix, nth};
use crate::rng::SeededRng;
use crate::time::Time;
use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;
use thiserror::Error;

/// Which kind of address block gives pods their addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CidrMode {
    /// Secondary /32 IPv4 addresses.
    Secondary,
    /// Delegated /28 IPv4 prefixes.
    Prefix,
    /// The node's IPv6 /80.
    Ipv6,
}

/// How a pod's address is chosen among the free ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Packing {
    /// podip: fullest prefix first, then fullest ENI, so whole prefixes and ENIs free up.
    Dense,
    /// The VPC CNI: ENIs in random order, the first CIDR with a free address.
    Random,
}

/// The state of one address slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Free,
    /// Released; not handed out before the instant.
    Cooling(Time),
    Assigned,
}

impl Slot {
    fn usable(self, now: Time) -> bool {
        match self {
            Slot::Free => true,
            Slot::Cooling(until) => until <= now,
            Slot::Assigned => false,
        }
    }

    fn cooling(self, now: Time) -> bool {
        matches!(self, Slot::Cooling(until) if until > now)
    }

    /// The slot when it is still cooling at `now`, else `Free`.
    fn filter_cooling(self, now: Time) -> Slot {
        if self.cooling(now) { self } else { Slot::Free }
    }
}

/// One IPv4 block on an ENI: a /32 secondary address or a /28 prefix.
#[derive(Clone, Debug)]
pub struct Cidr {
    /// The block.
    pub net: Ipv4Net,
    /// Whether it is a delegated prefix.
    pub is_prefix: bool,
    /// Being handed back to EC2: not counted and not handed out.
    pub releasing: bool,
    slots: Vec<Slot>,
    assigned: u32,
}

impl Cidr {
    fn new(net: Ipv4Net, is_prefix: bool) -> Cidr {
        let size = if is_prefix { PREFIX_SIZE as usize } else { 1 };
        Cidr { net, is_prefix, releasing: false, slots: vec![Slot::Free; size], assigned: 0 }
    }

    /// Addresses in the block.
    pub fn size(&self) -> u32 {
        self.slots.len() as u32
    }

    /// Addresses held by pods.
    pub fn assigned(&self) -> u32 {
        self.assigned
    }

    /// Released addresses still cooling down at `now`.
    pub fn cooling(&self, now: Time) -> u32 {
        self.slots.iter().filter(|s| s.cooling(now)).count() as u32
    }

    fn free_slot(&self, now: Time) -> Option<usize> {
        if self.assigned == self.size() {
            return None;
        }
        self.slots.iter().position(|s| s.usable(now))
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        self.net.contains(&ip)
    }

    fn index_of(&self, ip: Ipv4Addr) -> usize {
        (u32::from(ip) - u32::from(self.net.network())) as usize
    }

    fn mode(&self) -> CidrMode {
        if self.is_prefix { CidrMode::Prefix } else { CidrMode::Secondary }
    }
}

/// One ENI attached to the node.
#[derive(Clone, Debug)]
pub struct Eni {
    /// EC2 id.
    pub id: EniId,
    /// Whether this is the instance's primary ENI (device 0).
    pub primary: bool,
    /// Attachment device index.
    pub device_index: u32,
    /// The subnet the ENI lives in.
    pub subnet: SubnetId,
    /// The ENI's own primary address (never given to pods).
    pub primary_ip: Ipv4Addr,
    /// When the ENI joined the datastore.
    pub created_at: Time,
    /// A trunk or EFA ENI: never used for pods and never freed.
    pub pinned: bool,
    /// Being detached and deleted: not counted and not handed out.
    pub releasing: bool,
    /// Its interface on the node is not set up yet: counted, but nothing on it is handed out
    /// (a pod there would have no route).
    pub held: bool,
    /// The node's IPv6 prefix, on the ENI that carries it.
    pub v6_prefix: Option<Ipv6Net>,
    /// IPv4 blocks, in the order they were added.
    pub cidrs: Vec<Cidr>,
    assigned: u32,
}

impl Eni {
    /// Pods holding an address of this ENI.
    pub fn assigned(&self) -> u32 {
        self.assigned
    }

    /// IPv4 blocks of any kind on the ENI (what the per-ENI EC2 limit counts).
    pub fn block_count(&self) -> u32 {
        self.cidrs.len() as u32
    }

    /// Secondary /32 addresses on the ENI.
    pub fn secondary_ips(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.cidrs.iter().filter(|c| !c.is_prefix).map(|c| c.net.addr())
    }

    /// Prefixes on the ENI.
    pub fn prefixes(&self) -> impl Iterator<Item = Ipv4Net> + '_ {
        self.cidrs.iter().filter(|c| c.is_prefix).map(|c| c.net)
    }
}

/// What EC2 reports about an ENI when it joins the datastore.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EniInfo {
    /// EC2 id.
    pub id: EniId,
    /// Attachment device index.
    pub device_index: u32,
    /// The subnet.
    pub subnet: SubnetId,
    /// The ENI's primary private address.
    pub primary_ip: Ipv4Addr,
    /// Secondary private addresses.
    pub secondary_ips: Vec<Ipv4Addr>,
    /// Delegated /28 prefixes.
    pub prefixes: Vec<Ipv4Net>,
    /// Delegated IPv6 prefix, if any.
    pub v6_prefix: Option<Ipv6Net>,
}

/// Pool totals, counting only blocks of the current mode on usable ENIs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Addresses in the pool.
    pub total: u64,
    /// Addresses held by pods.
    pub assigned: u64,
    /// Released addresses still cooling down.
    pub cooling: u64,
    /// Prefixes in the pool.
    pub total_prefixes: u64,
    /// Prefixes holding no pod (the VPC CNI's "free prefixes").
    pub free_prefixes: u64,
    /// Prefixes holding no pod and no cooling address (can be returned to EC2 now).
    pub idle_prefixes: u64,
}

/// What the datastore refused to do.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DatastoreError {
    /// No usable address is left.
    #[error("no free address in the pool")]
    NoFreeAddress,
    /// The ENI is not in the datastore.
    #[error("unknown ENI {0}")]
    UnknownEni(EniId),
    /// The ENI is already in the datastore.
    #[error("ENI {0} is already in the datastore")]
    DuplicateEni(EniId),
    /// The block is already in the datastore.
    #[error("address block {0} is already in the datastore")]
    DuplicateBlock(Ipv4Net),
    /// A prefix that is not an aligned /28.
    #[error("{0} is not an aligned /28 prefix")]
    MisalignedPrefix(Ipv4Net),
    /// Removing the block or ENI would drop a pod's address.
    #[error("{0} still holds pods")]
    InUse(String),
    /// The block is not on that ENI.
    #[error("address block {net} is not on ENI {eni}")]
    UnknownBlock {
        /// ENI asked about.
        eni: EniId,
        /// Block asked about.
        net: Ipv4Net,
    },
}

/// The datastore of one node.
#[derive(Clone, Debug)]
pub struct Datastore {
    mode: CidrMode,
    cooldown: Duration,
    packing: Packing,
    rng: SeededRng,
    enis: Vec<Eni>,
    pods: HashMap<PodKey, IpAddr>,
    hints: HashMap<IpAddr, (u32, u32)>,
    v6_slots: BTreeMap<u64, Slot>,
    v6_next: u64,
    /// Offsets below this are never handed out again (a quarantine after a lost checkpoint
    /// without a host to rebuild from).
    v6_floor: u64,
    order: Vec<usize>,
    /// In prefix mode, single addresses count too (podip's fallback when EC2 has no free /28);
    /// the VPC CNI leaves them to the pods that hold them.
    mixed: bool,
}

/// Where a pod's address lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The address.
    pub addr: IpAddr,
    /// The ENI it belongs to.
    pub eni: EniId,
    /// That ENI's device index.
    pub device_index: u32,
}

impl Datastore {
    /// An empty datastore.
    pub fn new(mode: CidrMode, cooldown: Duration, packing: Packing, seed: u64) -> Datastore {
        Datastore {
            mode,
            cooldown,
            packing,
            rng: SeededRng::new(seed),
            enis: Vec::new(),
            pods: HashMap::new(),
            hints: HashMap::new(),
            v6_slots: BTreeMap::new(),
            v6_next: 1,
            v6_floor: 1,
            order: Vec::new(),
            mixed: false,
        }
    }

    /// The current mode.
    pub fn mode(&self) -> CidrMode {
        self.mode
    }

    /// The cooldown period.
    pub fn cooldown(&self) -> Duration {
        self.cooldown
    }

    /// The ENIs, primary first, in the order they joined.
    pub fn enis(&self) -> &[Eni] {
        &self.enis
    }

    /// The ENI with this id.
    pub fn eni(&self, id: &EniId) -> Option<&Eni> {
        self.enis.iter().find(|e| &e.id == id)
    }

    fn eni_index(&self, id: &EniId) -> Result<usize, DatastoreError> {
        self.enis.iter().position(|e| &e.id == id).ok_or_else(|| DatastoreError::UnknownEni(id.clone()))
    }

    /// Every pod and its address.
    pub fn pods(&self) -> impl Iterator<Item = (&PodKey, &IpAddr)> {
        self.pods.iter()
    }

    /// The address held by `key`, if any.
    pub fn pod(&self, key: &PodKey) -> Option<IpAddr> {
        self.pods.get(key).copied()
    }

    /// Number of pods holding an address.
    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }

    /// Adds an attached ENI with the blocks EC2 reports on it.
    ///
    /// # Errors
    /// A duplicate ENI or block, or a misaligned prefix; nothing changes then.
    pub fn add_eni(&mut self, info: &EniInfo, primary: bool, now: Time) -> Result<(), DatastoreError> {
        if self.eni(&info.id).is_some() {
            return Err(DatastoreError::DuplicateEni(info.id.clone()));
        }
        let mut blocks: Vec<(Ipv4Net, bool)> = info.secondary_ips.iter().map(|ip| (host_net(*ip), false)).collect();
        blocks.extend(info.prefixes.iter().map(|p| (*p, true)));
        self.check_new_blocks(&blocks)?;
        let eni = Eni {
            id: info.id.clone(),
            primary,
            device_index: info.device_index,
            subnet: info.subnet.clone(),
            primary_ip: info.primary_ip,
            created_at: now,
            pinned: false,
            held: false,
            releasing: false,
            v6_prefix: info.v6_prefix,
            cidrs: blocks.into_iter().map(|(n, p)| Cidr::new(n, p)).collect(),
            assigned: 0,
        };
        if primary {
            self.enis.insert(0, eni);
        } else {
            self.enis.push(eni);
        }
        Ok(())
    }

    /// Marks an ENI as trunk or EFA: never used for pods, never freed.
    ///
    /// # Errors
    /// Unknown ENI.
    pub fn pin_eni(&mut self, id: &EniId) -> Result<(), DatastoreError> {
        let i = self.eni_index(id)?;
        self.enis[i].pinned = true;
        Ok(())
    }

    /// Makes an ENI look older or younger (for restored state and tests).
    ///
    /// # Errors
    /// Unknown ENI.
    pub fn set_eni_created_at(&mut self, id: &EniId, at: Time) -> Result<(), DatastoreError> {
        let i = self.eni_index(id)?;
        self.enis[i].created_at = at;
        Ok(())
    }

    fn check_new_blocks(&self, blocks: &[(Ipv4Net, bool)]) -> Result<(), DatastoreError> {
        for (i, (net, is_prefix)) in blocks.iter().enumerate() {
            if *is_prefix && !is_aligned_prefix(net) {
                return Err(DatastoreError::MisalignedPrefix(*net));
            }
            let dup_inside = blocks[..i].iter().any(|(n, _)| n.contains(net) || net.contains(n));
            let dup_existing =
                self.enis.iter().flat_map(|e| &e.cidrs).any(|c| c.net.contains(net) || net.contains(&c.net));
            if dup_inside || dup_existing {
                return Err(DatastoreError::DuplicateBlock(*net));
            }
        }
        Ok(())
    }

    /// Adds blocks EC2 granted to an ENI.
    ///
    /// # Errors
    /// Unknown ENI, duplicate block or misaligned prefix; nothing changes then.
    pub fn add_blocks(&mut self, eni: &EniId, nets: &[Ipv4Net], is_prefix: bool) -> Result<(), DatastoreError> {
        let i = self.eni_index(eni)?;
        let blocks: Vec<(Ipv4Net, bool)> = nets.iter().map(|n| (*n, is_prefix)).collect();
        self.check_new_blocks(&blocks)?;
        self.enis[i].cidrs.extend(blocks.into_iter().map(|(n, p)| Cidr::new(n, p)));
        Ok(())
    }

    /// Sets or clears the releasing mark of blocks on an ENI.
    ///
    /// # Errors
    /// Unknown ENI or block; nothing changes then.
    pub fn set_blocks_releasing(&mut self, eni: &EniId, nets: &[Ipv4Net], on: bool) -> Result<(), DatastoreError> {
        let i = self.eni_index(eni)?;
        for net in nets {
            if !self.enis[i].cidrs.iter().any(|c| c.net == *net) {
                return Err(DatastoreError::UnknownBlock { eni: eni.clone(), net: *net });
            }
        }
        for c in self.enis[i].cidrs.iter_mut().filter(|c| nets.contains(&c.net)) {
            c.releasing = on;
        }
        Ok(())
    }

    /// Removes blocks from an ENI (after EC2 took them back, or found them gone).
    ///
    /// # Errors
    /// Unknown ENI or block, or a block that holds a pod; nothing changes then.
    pub fn remove_blocks(&mut self, eni: &EniId, nets: &[Ipv4Net]) -> Result<(), DatastoreError> {
        let i = self.eni_index(eni)?;
        for net in nets {
            match self.enis[i].cidrs.iter().find(|c| c.net == *net) {
                None => return Err(DatastoreError::UnknownBlock { eni: eni.clone(), net: *net }),
                Some(c) if c.assigned > 0 => return Err(DatastoreError::InUse(net.to_string())),
                Some(_) => {}
            }
        }
        self.enis[i].cidrs.retain(|c| !nets.contains(&c.net));
        Ok(())
    }

    /// Records the IPv6 prefix EC2 delegated to an ENI.
    ///
    /// # Errors
    /// Unknown ENI.
    pub fn set_v6_prefix(&mut self, eni: &EniId, net: Ipv6Net) -> Result<(), DatastoreError> {
        let i = self.eni_index(eni)?;
        self.enis[i].v6_prefix = Some(net);
        Ok(())
    }

    /// Holds an ENI's addresses back (its interface is not set up yet), or lets them go.
    ///
    /// # Errors
    /// [`DatastoreError::UnknownEni`] when it is not here.
    pub fn set_eni_held(&mut self, eni: &EniId, on: bool) -> Result<(), DatastoreError> {
        let i = self.eni_index(eni)?;
        self.enis[i].held = on;
        Ok(())
    }

    /// Sets or clears the releasing mark of an ENI.
    ///
    /// # Errors
    /// Unknown ENI.
    pub fn set_eni_releasing(&mut self, eni: &EniId, on: bool) -> Result<(), DatastoreError> {
        let i = self.eni_index(eni)?;
        self.enis[i].releasing = on;
        Ok(())
    }

    /// Removes an ENI that holds no pods.
    ///
    /// # Errors
    /// Unknown ENI, or one that still holds pods.
    pub fn remove_eni(&mut self, eni: &EniId) -> Result<(), DatastoreError> {
        let i = self.eni_index(eni)?;
        if self.enis[i].assigned > 0 {
            return Err(DatastoreError::InUse(eni.to_string()));
        }
        self.enis.remove(i);
        Ok(())
    }

    fn usable_eni(&self, e: &Eni) -> bool {
        !e.releasing && !e.pinned
    }

    /// Whether pods may be given addresses of `e`.
    fn assignable(&self, e: &Eni) -> bool {
        self.usable_eni(e) && !e.held
    }

    fn counts(&self, c: &Cidr) -> bool {
        !c.releasing && (c.mode() == self.mode || (self.mixed && self.mode == CidrMode::Prefix && !c.is_prefix))
    }

    /// In prefix mode, whether single secondary addresses also serve pods (the fallback when
    /// EC2 has no free /28 in the subnet). Prefixes are still picked first.
    pub fn set_prefix_fallback(&mut self, on: bool) {
        self.mixed = on;
    }

    /// Fallback addresses (single addresses in prefix mode) that hold no pod and are not cooling
    /// or releasing: what goes back to EC2 once prefixes can be had again.
    pub fn idle_fallback_addresses(&self, now: Time) -> Vec<(EniId, Vec<Ipv4Net>)> {
        if self.mode != CidrMode::Prefix || !self.mixed {
            return Vec::new();
        }
        self.enis
            .iter()
            .filter(|e| self.usable_eni(e))
            .map(|e| {
                let nets = e
                    .cidrs
                    .iter()
                    .filter(|c| !c.is_prefix && !c.releasing && c.assigned == 0 && c.cooling(now) == 0)
                    .map(|c| c.net)
                    .collect::<Vec<_>>();
                (e.id.clone(), nets)
            })
            .filter(|(_, n)| !n.is_empty())
            .collect()
    }

    /// Pool totals at `now`.
    pub fn stats(&self, now: Time) -> Stats {
        let mut s = Stats::default();
        if self.mode == CidrMode::Ipv6 {
            if let Some(p) = self.enis.iter().filter(|e| self.usable_eni(e)).find_map(|e| e.v6_prefix) {
                s.total = 1u64 << (128 - u32::from(p.prefix_len())).min(63);
            }
            s.assigned = self.pods.len() as u64;
            s.cooling = self.v6_slots.values().filter(|v| v.cooling(now)).count() as u64;
            return s;
        }
        for e in self.enis.iter().filter(|e| self.usable_eni(e)) {
            let t = self.eni_stats(e, now);
            s.total += t.total;
            s.assigned += t.assigned;
            s.cooling += t.cooling;
            s.total_prefixes += t.total_prefixes;
            s.free_prefixes += t.free_prefixes;
            s.idle_prefixes += t.idle_prefixes;
        }
        s
    }

    /// Addresses a pod could be given at `now`: free and not cooling, on ENIs whose addresses
    /// are handed out (not held back while the node sets their interface up, not releasing).
    /// [`Datastore::stats`] counts held ENIs too: they are in the pool.
    pub fn available(&self, now: Time) -> u64 {
        if self.mode == CidrMode::Ipv6 {
            if !self.enis.iter().any(|e| self.assignable(e) && e.v6_prefix.is_some()) {
                return 0;
            }
            let s = self.stats(now);
            return s.total.saturating_sub(s.assigned + s.cooling);
        }
        self.enis
            .iter()
            .filter(|e| self.assignable(e))
            .map(|e| {
                let t = self.eni_stats(e, now);
                t.total.saturating_sub(t.assigned + t.cooling)
            })
            .sum()
    }

    /// IPv6 offsets from 1 to `last` a pod could still be given at `now` (none held, none
    /// cooling, none quarantined): the allocator hands out the lowest usable offset first, so
    /// this is how many more pods can have an offset at most `last`.
    pub fn v6_available_up_to(&self, last: u64, now: Time) -> u64 {
        let first = self.v6_floor.max(1);
        if last < first {
            return 0;
        }
        let taken = self.v6_slots.range(first..=last).filter(|(_, s)| !s.usable(now)).count() as u64;
        (last - first + 1).saturating_sub(taken)
    }

    /// Per-ENI totals at `now` (same counting rules as [`Datastore::stats`]).
    pub fn eni_stats(&self, eni: &Eni, now: Time) -> Stats {
        let mut s = Stats::default();
        for c in eni.cidrs.iter().filter(|c| self.counts(c)) {
            let cooling = u64::from(c.cooling(now));
            s.total += u64::from(c.size());
            s.assigned += u64::from(c.assigned);
            s.cooling += cooling;
            if c.is_prefix {
                s.total_prefixes += 1;
                if c.assigned == 0 {
                    s.free_prefixes += 1;
                    if cooling == 0 {
                        s.idle_prefixes += 1;
                    }
                }
            }
        }
        s
    }

    /// The earliest instant after `now` at which a cooling address becomes usable.
    pub fn next_cool(&self, now: Time) -> Option<Time> {
        let v4 = self.enis.iter().flat_map(|e| &e.cidrs).flat_map(|c| &c.slots);
        v4.chain(self.v6_slots.values())
            .filter_map(|s| match s {
                Slot::Cooling(until) if *until > now => Some(*until),
                _ => None,
            })
            .min()
    }

    /// Gives `key` an address; the same key gets the same address again.
    ///
    /// # Errors
    /// [`DatastoreError::NoFreeAddress`] when every address is held or cooling.
    pub fn assign(&mut self, key: &PodKey, now: Time) -> Result<Placement, DatastoreError> {
        if let Some(addr) = self.pods.get(key) {
            return Ok(self.placement_of(*addr));
        }
        if self.mode == CidrMode::Ipv6 {
            return self.assign_v6(key, now);
        }
        let (ei, ci) = match self.packing {
            Packing::Dense => self.pick_dense(now),
            Packing::Random => self.pick_random(now),
        }
        .ok_or(DatastoreError::NoFreeAddress)?;
        let eni = &mut self.enis[ei];
        let cidr = &mut eni.cidrs[ci];
        // pick_* only returns blocks with a usable slot.
        let si = cidr.free_slot(now).expect("picked block has a free slot");
        cidr.slots[si] = Slot::Assigned;
        cidr.assigned += 1;
        eni.assigned += 1;
        let addr = IpAddr::V4(nth(&cidr.net, si as u32));
        self.pods.insert(key.clone(), addr);
        self.hints.insert(addr, (ei as u32, ci as u32));
        Ok(Placement { addr, eni: eni.id.clone(), device_index: eni.device_index })
    }

    fn placement_of(&self, addr: IpAddr) -> Placement {
        let eni = match addr {
            IpAddr::V4(ip) => self.enis.iter().find(|e| e.cidrs.iter().any(|c| c.contains(ip))),
            IpAddr::V6(ip) => self.enis.iter().find(|e| e.v6_prefix.is_some_and(|p| p.contains(&ip))),
        };
        match eni {
            Some(e) => Placement { addr, eni: e.id.clone(), device_index: e.device_index },
            None => Placement { addr, eni: EniId(String::new()), device_index: 0 },
        }
    }

    fn pick_dense(&self, now: Time) -> Option<(usize, usize)> {
        if self.mode == CidrMode::Secondary {
            return self.pick_dense_secondary(now);
        }
        let mut best: Option<((u32, u32, u32), usize, usize)> = None;
        for (ei, e) in self.enis.iter().enumerate() {
            if !self.assignable(e) {
                continue;
            }
            for (ci, c) in e.cidrs.iter().enumerate() {
                if !self.counts(c) || c.assigned == c.size() {
                    continue;
                }
                // Prefixes before fallback addresses (so those empty out and go back), then the
                // fullest block, then the fullest ENI.
                let score = (u32::from(c.is_prefix), c.assigned, e.assigned);
                if best.as_ref().is_some_and(|(b, _, _)| *b >= score) {
                    continue;
                }
                if c.free_slot(now).is_some() {
                    best = Some((score, ei, ci));
                }
            }
        }
        best.map(|(_, e, c)| (e, c))
    }

    /// Secondary-IP mode: every block is a single address, so "fullest block" is moot and the
    /// choice is the fullest ENI with a usable address.
    fn pick_dense_secondary(&self, now: Time) -> Option<(usize, usize)> {
        let mut best: Option<(u32, usize, usize)> = None;
        for (ei, e) in self.enis.iter().enumerate() {
            if !self.assignable(e) || best.is_some_and(|(a, _, _)| a >= e.assigned) {
                continue;
            }
            if let Some(ci) = e.cidrs.iter().position(|c| self.counts(c) && c.slots[0].usable(now)) {
                best = Some((e.assigned, ei, ci));
            }
        }
        best.map(|(_, e, c)| (e, c))
    }

    fn pick_random(&mut self, now: Time) -> Option<(usize, usize)> {
        self.order.clear();
        self.order.extend(0..self.enis.len());
        let mut order = std::mem::take(&mut self.order);
        self.rng.shuffle(&mut order);
        let found = order.iter().find_map(|&ei| {
            let e = &self.enis[ei];
            if !self.assignable(e) {
                return None;
            }
            e.cidrs.iter().position(|c| self.counts(c) && c.free_slot(now).is_some()).map(|ci| (ei, ci))
        });
        self.order = order;
        found
    }

    fn assign_v6(&mut self, key: &PodKey, now: Time) -> Result<Placement, DatastoreError> {
        let ei = self
            .enis
            .iter()
            .position(|e| !e.releasing && !e.held && e.v6_prefix.is_some())
            .ok_or(DatastoreError::NoFreeAddress)?;
        // v6_prefix is Some by the position() filter above.
        let prefix = self.enis[ei].v6_prefix.expect("filtered on v6_prefix");
        let host_bits = 128 - u32::from(prefix.prefix_len());
        let span = if host_bits >= 64 { u64::MAX } else { (1u64 << host_bits) - 1 };
        // The lowest offset free to use: a released one whose cooldown is over, or one below the
        // never-used mark that no pod holds and nothing cools (freed before a restart), so
        // offsets (and with them IPv6 pods' egress IPv4) stay as low as the live pods allow.
        let reuse = {
            let mut expected = self.v6_floor.max(1);
            let mut found = None;
            for (k, s) in self.v6_slots.range(expected..) {
                if *k > expected {
                    break;
                }
                if s.usable(now) {
                    found = Some(*k);
                    break;
                }
                expected = k + 1;
            }
            found.or((expected < self.v6_next).then_some(expected))
        };
        let offset = match reuse {
            Some(o) => o,
            None if self.v6_next <= span => {
                self.v6_next += 1;
                self.v6_next - 1
            }
            None => return Err(DatastoreError::NoFreeAddress),
        };
        self.v6_slots.insert(offset, Slot::Assigned);
        let addr = IpAddr::V6(Ipv6Addr::from(u128::from(prefix.network()) + u128::from(offset)));
        self.enis[ei].assigned += 1;
        self.pods.insert(key.clone(), addr);
        Ok(Placement { addr, eni: self.enis[ei].id.clone(), device_index: self.enis[ei].device_index })
    }

    /// Releases `key`'s address, which then cools down. Returns the address, or `None` for a key
    /// that held none (release is idempotent).
    pub fn unassign(&mut self, key: &PodKey, now: Time) -> Option<IpAddr> {
        let addr = self.pods.remove(key)?;
        let slot = if self.cooldown.is_zero() { Slot::Free } else { Slot::Cooling(now + self.cooldown) };
        match addr {
            IpAddr::V4(ip) => {
                let hint = self.hints.remove(&addr).map(|(e, c)| (e as usize, c as usize));
                let at = hint
                    .filter(|(e, c)| self.enis.get(*e).and_then(|e| e.cidrs.get(*c)).is_some_and(|c| c.contains(ip)))
                    .or_else(|| {
                        self.enis
                            .iter()
                            .enumerate()
                            .find_map(|(ei, e)| e.cidrs.iter().position(|c| c.contains(ip)).map(|ci| (ei, ci)))
                    });
                if let Some((ei, ci)) = at {
                    let e = &mut self.enis[ei];
                    let c = &mut e.cidrs[ci];
                    let si = c.index_of(ip);
                    c.slots[si] = slot;
                    c.assigned -= 1;
                    e.assigned -= 1;
                }
            }
            IpAddr::V6(ip) => {
                if let Some(e) = self.enis.iter_mut().find(|e| e.v6_prefix.is_some_and(|p| p.contains(&ip))) {
                    let base = e.v6_prefix.map(|p| u128::from(p.network())).unwrap_or(0);
                    let offset = (u128::from(ip) - base) as u64;
                    self.v6_slots.insert(offset, slot);
                    e.assigned -= 1;
                }
            }
        }
        Some(addr)
    }

    /// Restores an IPv6 assignment read back from a checkpoint, keeping its exact address.
    ///
    /// # Errors
    /// The address is not in the node's /80, or another key holds it.
    pub fn restore_v6(&mut self, key: &PodKey, addr: Ipv6Addr) -> Result<(), DatastoreError> {
        if let Some(existing) = self.pods.get(key) {
            return if *existing == IpAddr::V6(addr) { Ok(()) } else { Err(DatastoreError::InUse(key.to_string())) };
        }
        let Some(ei) = self.enis.iter().position(|e| e.v6_prefix.is_some_and(|p| p.contains(&addr))) else {
            return Err(DatastoreError::NoFreeAddress);
        };
        let base = self.enis[ei].v6_prefix.map(|p| u128::from(p.network())).unwrap_or(0);
        let offset = (u128::from(addr) - base) as u64;
        if self.v6_slots.get(&offset) == Some(&Slot::Assigned) {
            return Err(DatastoreError::InUse(addr.to_string()));
        }
        self.v6_slots.insert(offset, Slot::Assigned);
        self.v6_next = self.v6_next.max(offset + 1);
        self.enis[ei].assigned += 1;
        self.pods.insert(key.clone(), IpAddr::V6(addr));
        Ok(())
    }

    /// The offset of an IPv6 pod address in the node's /80 (1 for the first pod).
    pub fn v6_offset(&self, addr: Ipv6Addr) -> Option<u64> {
        let p = self.enis.iter().find_map(|e| e.v6_prefix.filter(|p| p.contains(&addr)))?;
        Some((u128::from(addr) - u128::from(p.network())) as u64)
    }

    /// Restores an assignment read back from a checkpoint, keeping its exact address.
    ///
    /// # Errors
    /// The address is not in the pool, or another key holds it.
    pub fn restore(&mut self, key: &PodKey, addr: Ipv4Addr) -> Result<(), DatastoreError> {
        if let Some(existing) = self.pods.get(key) {
            return if *existing == IpAddr::V4(addr) { Ok(()) } else { Err(DatastoreError::InUse(key.to_string())) };
        }
        for e in &mut self.enis {
            if let Some(c) = e.cidrs.iter_mut().find(|c| c.contains(addr)) {
                let si = c.index_of(addr);
                if c.slots[si] == Slot::Assigned {
                    return Err(DatastoreError::InUse(addr.to_string()));
                }
                c.slots[si] = Slot::Assigned;
                c.assigned += 1;
                e.assigned += 1;
                self.pods.insert(key.clone(), IpAddr::V4(addr));
                return Ok(());
            }
        }
        Err(DatastoreError::NoFreeAddress)
    }

    /// Every IPv4 address still cooling at `now`, with the instant it becomes usable.
    pub fn cooling(&self, now: Time) -> Vec<(Ipv4Addr, Time)> {
        let mut out = Vec::new();
        for c in self.enis.iter().flat_map(|e| &e.cidrs) {
            for (i, s) in c.slots.iter().enumerate() {
                if let Slot::Cooling(until) = s.filter_cooling(now) {
                    out.push((nth(&c.net, i as u32), until));
                }
            }
        }
        out
    }

    /// Every IPv6 pod address still cooling at `now`, with the instant it becomes usable.
    pub fn cooling_v6(&self, now: Time) -> Vec<(Ipv6Addr, Time)> {
        let Some(p) = self.enis.iter().find_map(|e| e.v6_prefix) else { return Vec::new() };
        self.v6_slots
            .iter()
            .filter_map(|(o, s)| match s.filter_cooling(now) {
                Slot::Cooling(until) => Some((Ipv6Addr::from(u128::from(p.network()) + u128::from(*o)), until)),
                _ => None,
            })
            .collect()
    }

    /// Restores an IPv6 cooldown read back from a checkpoint. False when the address is not in
    /// the node's prefix or is held by a pod.
    pub fn restore_cooling_v6(&mut self, addr: Ipv6Addr, until: Time) -> bool {
        let Some(offset) = self.v6_offset(addr) else { return false };
        if self.v6_slots.get(&offset) == Some(&Slot::Assigned) {
            return false;
        }
        self.v6_slots.insert(offset, Slot::Cooling(until));
        self.v6_next = self.v6_next.max(offset + 1);
        true
    }

    /// The next never-used offset of the IPv6 allocator (persisted, so a restart never hands
    /// out an address from the beginning of the /80 again).
    pub fn v6_next(&self) -> u64 {
        self.v6_next
    }

    /// Moves the IPv6 allocator's never-used mark forward to at least `next`.
    pub fn advance_v6(&mut self, next: u64) {
        self.v6_next = self.v6_next.max(next);
    }

    /// Never hands out an IPv6 offset below `next` again, in this run (a quarantine).
    pub fn quarantine_v6_below(&mut self, next: u64) {
        self.advance_v6(next);
        self.v6_floor = self.v6_floor.max(next);
    }

    /// Restores a cooldown read back from a checkpoint. False when the address is not in the
    /// pool or is held by a pod.
    pub fn restore_cooling(&mut self, ip: Ipv4Addr, until: Time) -> bool {
        for c in self.enis.iter_mut().flat_map(|e| e.cidrs.iter_mut()) {
            if c.contains(ip) {
                let i = c.index_of(ip);
                if c.slots[i] == Slot::Assigned {
                    return false;
                }
                c.slots[i] = Slot::Cooling(until);
                return true;
            }
        }
        false
    }

    /// Blocks of the current mode that hold no pod, up to `limit`, grouped by ENI.
    ///
    /// Upstream order (`corrected` false): ENIs in datastore order. podip's order (`corrected`):
    /// blocks with a cooling address are skipped, and the newest ENIs give up blocks first, so
    /// they empty out and can be freed whole.
    pub fn releasable_blocks(&self, limit: u64, corrected: bool, now: Time) -> Vec<(EniId, Vec<Ipv4Net>)> {
        let skip_cooling = corrected;
        let mut out: Vec<(EniId, Vec<Ipv4Net>)> = Vec::new();
        let mut left = limit;
        let mut order: Vec<&Eni> = self.enis.iter().filter(|e| self.usable_eni(e)).collect();
        if corrected {
            order.reverse();
        }
        for e in order {
            if left == 0 {
                break;
            }
            let mut nets = Vec::new();
            // In prefix mode only prefixes: fallback addresses go back on their own rule.
            let kind = |c: &&Cidr| self.mode != CidrMode::Prefix || c.is_prefix;
            for c in e.cidrs.iter().filter(|c| self.counts(c) && c.assigned == 0).filter(kind) {
                if left == 0 {
                    break;
                }
                if skip_cooling && c.cooling(now) > 0 {
                    continue;
                }
                nets.push(c.net);
                left -= 1;
            }
            if !nets.is_empty() {
                out.push((e.id.clone(), nets));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str, dev: u32, ips: &[&str], prefixes: &[&str]) -> EniInfo {
        EniInfo {
            id: id.into(),
            device_index: dev,
            subnet: "subnet-1".into(),
            primary_ip: Ipv4Addr::new(10, 0, 9, dev as u8),
            secondary_ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
            prefixes: prefixes.iter().map(|s| s.parse().unwrap()).collect(),
            v6_prefix: None,
        }
    }

    fn t(s: u64) -> Time {
        Time::from_secs(s)
    }

    #[test]
    fn same_key_same_address() {
        let mut ds = Datastore::new(CidrMode::Secondary, Duration::from_secs(30), Packing::Dense, 1);
        ds.add_eni(&info("eni-1", 0, &["10.0.0.5", "10.0.0.6"], &[]), true, t(0)).unwrap();
        let k = PodKey::new("a");
        let a = ds.assign(&k, t(1)).unwrap();
        let b = ds.assign(&k, t(2)).unwrap();
        assert_eq!(a, b);
        assert_eq!(ds.stats(t(2)).assigned, 1);
    }

    /// vpc-cni-behaviour.md §8 table E (`TestGetIPStatsV4`, IP_COOLDOWN_PERIOD=1).
    #[test]
    fn table_e_cooldown_stats() {
        let mut ds = Datastore::new(CidrMode::Secondary, Duration::from_secs(1), Packing::Random, 1);
        ds.add_eni(&info("eni-1", 0, &["1.1.1.1", "1.1.1.2"], &[]), true, t(0)).unwrap();
        let (p1, p2) = (PodKey::new("p1"), PodKey::new("p2"));
        ds.assign(&p1, t(0)).unwrap();
        ds.assign(&p2, t(0)).unwrap();
        let s = ds.stats(t(0));
        assert_eq!((s.total, s.assigned, s.cooling), (2, 2, 0)); // #34
        ds.unassign(&p2, Time::from_millis(100)).unwrap();
        let s = ds.stats(Time::from_millis(100));
        assert_eq!((s.total, s.assigned, s.cooling), (2, 1, 1)); // #35
        let s = ds.stats(Time::from_millis(1100));
        assert_eq!((s.total, s.assigned, s.cooling), (2, 1, 0)); // #36
    }

    /// `TestGetIPStatsV4WithPD`: {16, 1 prefix, 2, 0} -> {16, 1, 1, 1} -> {16, 1, 1, 0}.
    #[test]
    fn table_e_cooldown_stats_prefix_mode() {
        let mut ds = Datastore::new(CidrMode::Prefix, Duration::from_secs(1), Packing::Random, 1);
        ds.add_eni(&info("eni-1", 0, &[], &["10.0.0.16/28"]), true, t(0)).unwrap();
        let (p1, p2) = (PodKey::new("p1"), PodKey::new("p2"));
        ds.assign(&p1, t(0)).unwrap();
        ds.assign(&p2, t(0)).unwrap();
        let s = ds.stats(t(0));
        assert_eq!((s.total, s.total_prefixes, s.assigned, s.cooling), (16, 1, 2, 0));
        ds.unassign(&p2, t(0)).unwrap();
        let s = ds.stats(t(0));
        assert_eq!((s.total, s.total_prefixes, s.assigned, s.cooling), (16, 1, 1, 1));
        let s = ds.stats(t(1));
        assert_eq!((s.total, s.total_prefixes, s.assigned, s.cooling), (16, 1, 1, 0));
    }

    /// `TestGetIPStatsV6`: a /80 with one pod has 2^48 addresses.
    #[test]
    fn ipv6_pool_is_a_whole_slash_80() {
        let mut ds = Datastore::new(CidrMode::Ipv6, Duration::from_secs(30), Packing::Dense, 1);
        let mut i = info("eni-1", 0, &[], &[]);
        i.v6_prefix = Some("2001:db8:0:1:5::/80".parse().unwrap());
        ds.add_eni(&i, true, t(0)).unwrap();
        let a = ds.assign(&PodKey::new("p"), t(0)).unwrap();
        assert_eq!(a.addr, "2001:db8:0:1:5::1".parse::<IpAddr>().unwrap());
        let s = ds.stats(t(0));
        assert_eq!((s.total, s.assigned), (281_474_976_710_656, 1));
        ds.unassign(&PodKey::new("p"), t(0));
        let b = ds.assign(&PodKey::new("q"), t(1)).unwrap();
        assert_ne!(a.addr, b.addr, "a cooling IPv6 address is not reused");
    }

    /// `TestTogglePD`: the first pod in a /28 gets the network address itself.
    #[test]
    fn first_pod_in_a_prefix_gets_its_base() {
        let mut ds = Datastore::new(CidrMode::Prefix, Duration::from_secs(30), Packing::Random, 1);
        ds.add_eni(&info("eni-1", 0, &[], &["10.0.0.0/28"]), true, t(0)).unwrap();
        let p = ds.assign(&PodKey::new("a"), t(0)).unwrap();
        assert_eq!(p.addr, "10.0.0.0".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn ipv6_offsets_freed_before_a_restart_are_used_again_lowest_first() {
        let mut ds = Datastore::new(CidrMode::Ipv6, Duration::from_secs(30), Packing::Dense, 1);
        let info = EniInfo {
            id: "eni-1".into(),
            device_index: 0,
            subnet: "subnet-1".into(),
            primary_ip: Ipv4Addr::new(10, 0, 0, 4),
            secondary_ips: vec![],
            prefixes: vec![],
            v6_prefix: Some("2600:1f18:aaaa:1:1::/80".parse().unwrap()),
        };
        ds.add_eni(&info, true, Time::ZERO).unwrap();
        // As restored: offsets up to 1091 were used once; 3 is held, 1 cools.
        ds.advance_v6(1092);
        let base = u128::from("2600:1f18:aaaa:1:1::".parse::<Ipv6Addr>().unwrap());
        ds.restore_v6(&PodKey::new("held"), Ipv6Addr::from(base + 3)).unwrap();
        ds.restore_cooling_v6(Ipv6Addr::from(base + 1), Time::from_secs(30));
        // Offsets 1 to 10 a pod could still get: all but the held one and the cooling one.
        assert_eq!(ds.v6_available_up_to(10, Time::ZERO), 8);
        assert_eq!(ds.v6_available_up_to(10, Time::from_secs(30)), 9, "cooled down");
        let got: Vec<u64> = (0..3)
            .map(|i| match ds.assign(&PodKey::new(format!("n{i}")), Time::ZERO).unwrap().addr {
                IpAddr::V6(a) => ds.v6_offset(a).unwrap(),
                IpAddr::V4(_) => unreachable!(),
            })
            .collect();
        assert_eq!(got, vec![2, 4, 5]);
        // A quarantine keeps everything below its mark out of use.
        assert_eq!(ds.v6_available_up_to(10, Time::ZERO), 5, "2, 4 and 5 taken too");
        ds.quarantine_v6_below(5000);
        assert_eq!(ds.v6_available_up_to(1021, Time::ZERO), 0, "everything below 5000 is out of use");
        let IpAddr::V6(a) = ds.assign(&PodKey::new("q"), Time::ZERO).unwrap().addr else { unreachable!() };
        assert_eq!(ds.v6_offset(a), Some(5000));
    }

    #[test]
    fn cooling_addresses_are_not_reused_until_cool() {
        let mut ds = Datastore::new(CidrMode::Secondary, Duration::from_secs(30), Packing::Dense, 1);
        ds.add_eni(&info("eni-1", 0, &["10.0.0.5"], &[]), true, t(0)).unwrap();
        ds.assign(&PodKey::new("a"), t(0)).unwrap();
        ds.unassign(&PodKey::new("a"), t(10));
        assert_eq!(ds.assign(&PodKey::new("b"), t(39)), Err(DatastoreError::NoFreeAddress));
        assert!(ds.assign(&PodKey::new("b"), t(40)).is_ok());
    }

    #[test]
    fn dense_packing_fills_the_fullest_prefix_first() {
        let mut ds = Datastore::new(CidrMode::Prefix, Duration::ZERO, Packing::Dense, 1);
        ds.add_eni(&info("eni-1", 0, &[], &["10.0.0.16/28", "10.0.0.32/28"]), true, t(0)).unwrap();
        ds.add_eni(&info("eni-2", 1, &[], &["10.0.1.16/28"]), false, t(0)).unwrap();
        for i in 0..20 {
            ds.assign(&PodKey::new(format!("p{i}")), t(0)).unwrap();
        }
        // Free the first prefix except one pod, then add more: they go to the fuller prefix.
        for i in 1..16 {
            ds.unassign(&PodKey::new(format!("p{i}")), t(0));
        }
        let p = ds.assign(&PodKey::new("new"), t(0)).unwrap();
        assert_eq!(p.addr.to_string().rsplit_once('.').map(|(n, _)| n.to_string()).unwrap(), "10.0.0");
        let s = ds.stats(t(0));
        assert_eq!(s.free_prefixes, 1, "eni-2's prefix stays empty");
    }

    #[test]
    fn removing_a_block_with_pods_is_refused_and_changes_nothing() {
        let mut ds = Datastore::new(CidrMode::Secondary, Duration::ZERO, Packing::Dense, 1);
        ds.add_eni(&info("eni-1", 0, &["10.0.0.5"], &[]), true, t(0)).unwrap();
        ds.assign(&PodKey::new("a"), t(0)).unwrap();
        let net: Ipv4Net = "10.0.0.5/32".parse().unwrap();
        assert!(matches!(ds.remove_blocks(&"eni-1".into(), &[net]), Err(DatastoreError::InUse(_))));
        assert!(matches!(ds.remove_eni(&"eni-1".into()), Err(DatastoreError::InUse(_))));
        assert_eq!(ds.stats(t(0)).total, 1);
    }

    #[test]
    fn duplicate_and_misaligned_blocks_are_refused() {
        let mut ds = Datastore::new(CidrMode::Prefix, Duration::ZERO, Packing::Dense, 1);
        ds.add_eni(&info("eni-1", 0, &[], &["10.0.0.16/28"]), true, t(0)).unwrap();
        let dup: Ipv4Net = "10.0.0.16/28".parse().unwrap();
        assert_eq!(ds.add_blocks(&"eni-1".into(), &[dup], true), Err(DatastoreError::DuplicateBlock(dup)));
        let bad: Ipv4Net = "10.0.0.40/28".parse().unwrap();
        assert_eq!(ds.add_blocks(&"eni-1".into(), &[bad], true), Err(DatastoreError::MisalignedPrefix(bad)));
    }
}
