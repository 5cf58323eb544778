//! One simulated subnet's address space: a bitmap of used addresses, the 5 addresses AWS
//! reserves, subnet CIDR reservations, and EC2's choice of free addresses and aligned /28 blocks.

use super::params::Placement;
use ipam::addr::SubnetId;
use ipam::rng::SeededRng;
use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use thiserror::Error;

/// Addresses AWS reserves at the start of every subnet (network, router, DNS, future use).
pub const RESERVED_HEAD: u32 = 4;
/// Addresses AWS reserves at the end (the broadcast address).
pub const RESERVED_TAIL: u32 = 1;

/// The type of a subnet CIDR reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReservationKind {
    /// AWS assigns prefixes from it (and nothing else).
    Prefix,
    /// Only addresses named by hand come from it; never auto-assigned.
    Explicit,
}

/// A subnet CIDR reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// The reserved range.
    pub cidr: Ipv4Net,
    /// Its type.
    pub kind: ReservationKind,
}

/// A reservation EC2 would refuse.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ReservationError {
    /// Not inside the subnet.
    #[error("reservation {cidr} is not inside subnet {subnet}")]
    OutsideSubnet {
        /// The reservation.
        cidr: Ipv4Net,
        /// The subnet.
        subnet: Ipv4Net,
    },
    /// Overlaps another reservation.
    #[error("reservation {cidr} overlaps reservation {other}")]
    Overlap {
        /// The reservation.
        cidr: Ipv4Net,
        /// The existing one.
        other: Ipv4Net,
    },
}

/// Counts of one aligned /28 block's addresses by state (out of 16).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockSummary {
    /// In use.
    pub used: u32,
    /// Reserved by AWS (first 4, last 1 of the subnet).
    pub reserved: u32,
    /// In an explicit reservation.
    pub explicit: u32,
    /// In a prefix reservation.
    pub prefix_reserved: u32,
}

/// One subnet.
#[derive(Clone, Debug)]
pub struct Subnet {
    /// Id.
    pub id: SubnetId,
    /// Availability zone.
    pub az: String,
    /// IPv4 block.
    pub cidr: Ipv4Net,
    /// IPv6 block, if any.
    pub ipv6: Option<Ipv6Net>,
    /// Tags (`kubernetes.io/role/cni` marks a subnet for subnet discovery).
    pub tags: std::collections::BTreeMap<String, String>,
    used: Vec<u64>,
    reserved: Vec<u64>,
    explicit: Vec<u64>,
    prefix_res: Vec<u64>,
    reservations: Vec<Reservation>,
    foreign: BTreeSet<u32>,
    used_count: u32,
    v6_next: u64,
}

fn words(size: u32) -> usize {
    size.div_ceil(64) as usize
}

fn set_bit(v: &mut [u64], i: u32, on: bool) {
    let (w, b) = ((i / 64) as usize, i % 64);
    if on {
        v[w] |= 1 << b;
    } else {
        v[w] &= !(1 << b);
    }
}

fn get_bit(v: &[u64], i: u32) -> bool {
    v[(i / 64) as usize] >> (i % 64) & 1 == 1
}

/// Index of the k-th (0-based) set bit of `w`.
fn select_bit(mut w: u64, k: u32) -> u32 {
    for _ in 0..k {
        w &= w - 1;
    }
    w.trailing_zeros()
}

impl Subnet {
    /// What `DescribeSubnets` says of this subnet.
    pub fn description(&self) -> crate::SubnetDescription {
        crate::SubnetDescription {
            id: self.id.clone(),
            az: self.az.clone(),
            cidr: self.cidr,
            available: self.free_ips(),
            tags: self.tags.clone(),
        }
    }

    /// A fresh subnet with only the 5 reserved addresses taken.
    pub fn new(id: SubnetId, az: &str, cidr: Ipv4Net, ipv6: Option<Ipv6Net>) -> Subnet {
        let cidr = cidr.trunc();
        let size = 1u32 << (32 - u32::from(cidr.prefix_len()));
        let n = words(size);
        let mut reserved = vec![0u64; n];
        for i in 0..RESERVED_HEAD.min(size) {
            set_bit(&mut reserved, i, true);
        }
        set_bit(&mut reserved, size - RESERVED_TAIL, true);
        for i in size..(n as u32 * 64) {
            set_bit(&mut reserved, i, true);
        }
        Subnet {
            id,
            az: az.to_string(),
            cidr,
            ipv6,
            tags: std::collections::BTreeMap::new(),
            used: vec![0; n],
            reserved,
            explicit: vec![0; n],
            prefix_res: vec![0; n],
            reservations: Vec::new(),
            foreign: BTreeSet::new(),
            used_count: 0,
            v6_next: 0,
        }
    }

    /// Addresses in the block.
    pub fn size(&self) -> u32 {
        1u32 << (32 - u32::from(self.cidr.prefix_len()))
    }

    /// Offset of `ip` in the subnet.
    pub fn offset(&self, ip: Ipv4Addr) -> Option<u32> {
        self.cidr.contains(&ip).then(|| u32::from(ip) - u32::from(self.cidr.network()))
    }

    /// The address at `offset`.
    pub fn addr(&self, offset: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.cidr.network()) + offset)
    }

    /// Whether `offset` is one of the 5 addresses AWS reserves.
    pub fn is_reserved(&self, offset: u32) -> bool {
        get_bit(&self.reserved, offset)
    }

    /// Whether `offset` is in use.
    pub fn is_used(&self, offset: u32) -> bool {
        get_bit(&self.used, offset)
    }

    /// Addresses in use (by ENIs or by anything else in the subnet).
    pub fn used_count(&self) -> u32 {
        self.used_count
    }

    /// The reservations.
    pub fn reservations(&self) -> &[Reservation] {
        &self.reservations
    }

    /// Addresses used by something other than podip's ENIs (existing usage).
    pub fn foreign(&self) -> &BTreeSet<u32> {
        &self.foreign
    }

    pub(crate) fn mark(&mut self, offset: u32, on: bool) {
        if get_bit(&self.used, offset) != on {
            set_bit(&mut self.used, offset, on);
            if on {
                self.used_count += 1;
            } else {
                self.used_count -= 1;
            }
        }
    }

    /// Marks an address as used by something outside podip. False if it is reserved or in use.
    pub fn occupy(&mut self, ip: Ipv4Addr) -> bool {
        match self.offset(ip) {
            Some(o) if !self.is_reserved(o) && !self.is_used(o) => {
                self.mark(o, true);
                self.foreign.insert(o);
                true
            }
            _ => false,
        }
    }

    /// Frees an address something outside podip held (its workload went away). False if podip's
    /// side (an ENI) holds it, or nothing does.
    pub fn vacate(&mut self, ip: Ipv4Addr) -> bool {
        match self.offset(ip) {
            Some(o) if self.foreign.remove(&o) => {
                self.mark(o, false);
                true
            }
            _ => false,
        }
    }

    /// Adds a reservation; it may cover addresses already in use (EC2 unassigns nothing).
    ///
    /// # Errors
    /// Outside the subnet, or overlapping another reservation.
    pub fn add_reservation(&mut self, r: Reservation) -> Result<(), ReservationError> {
        let cidr = r.cidr.trunc();
        if !self.cidr.contains(&cidr) {
            return Err(ReservationError::OutsideSubnet { cidr, subnet: self.cidr });
        }
        if let Some(o) = self.reservations.iter().find(|o| o.cidr.contains(&cidr) || cidr.contains(&o.cidr)) {
            return Err(ReservationError::Overlap { cidr, other: o.cidr });
        }
        let start = u32::from(cidr.network()) - u32::from(self.cidr.network());
        let len = 1u32 << (32 - u32::from(cidr.prefix_len()));
        let map = match r.kind {
            ReservationKind::Prefix => &mut self.prefix_res,
            ReservationKind::Explicit => &mut self.explicit,
        };
        for i in start..start + len {
            set_bit(map, i, true);
        }
        self.reservations.push(Reservation { cidr, kind: r.kind });
        Ok(())
    }

    fn ip_candidates(&self, w: usize) -> u64 {
        !(self.used[w] | self.reserved[w] | self.explicit[w] | self.prefix_res[w])
    }

    /// Addresses EC2 could still auto-assign as secondary or primary addresses.
    pub fn free_ips(&self) -> u32 {
        (0..self.used.len()).map(|w| self.ip_candidates(w).count_ones()).sum()
    }

    fn block_state(&self, b: u32) -> (bool, bool, bool) {
        let (w, shift) = ((b / 4) as usize, (b % 4) * 16);
        let taken = ((self.used[w] | self.reserved[w] | self.explicit[w]) >> shift) & 0xFFFF;
        let pres = (self.prefix_res[w] >> shift) & 0xFFFF;
        (taken == 0, pres == 0xFFFF, pres == 0)
    }

    /// What one aligned /28 block holds.
    pub fn block_summary(&self, b: u32) -> BlockSummary {
        let (w, shift) = ((b / 4) as usize, (b % 4) * 16);
        let bits = |v: &[u64]| ((v[w] >> shift) & 0xFFFF) as u16;
        BlockSummary {
            used: bits(&self.used).count_ones(),
            reserved: bits(&self.reserved).count_ones(),
            explicit: bits(&self.explicit).count_ones(),
            prefix_reserved: bits(&self.prefix_res).count_ones(),
        }
    }

    /// Number of aligned /28 blocks.
    pub fn block_count(&self) -> u32 {
        self.size() / 16
    }

    /// Whether block `b` (the b-th aligned /28) is wholly free, so a prefix request could get it.
    pub fn block_free(&self, b: u32) -> bool {
        let (free, in_res, no_res) = self.block_state(b);
        free && (in_res || no_res)
    }

    /// Aligned /28 blocks a prefix request could still get.
    pub fn free_prefixes(&self) -> u32 {
        (0..self.block_count()).filter(|b| self.block_free(*b)).count() as u32
    }

    /// Picks a free address for auto-assignment and marks it used.
    pub fn take_ip(&mut self, rng: &mut SeededRng, placement: Placement) -> Option<Ipv4Addr> {
        let counts: Vec<u32> = (0..self.used.len()).map(|w| self.ip_candidates(w).count_ones()).collect();
        let total: u32 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let mut k = match placement {
            Placement::Random => rng.below(u64::from(total)) as u32,
            Placement::Lowest => 0,
            Placement::Highest => total - 1,
        };
        for (w, c) in counts.iter().enumerate() {
            if k < *c {
                let off = w as u32 * 64 + select_bit(self.ip_candidates(w), k);
                self.mark(off, true);
                return Some(self.addr(off));
            }
            k -= c;
        }
        None
    }

    /// Picks a free aligned /28 (inside a prefix reservation when one has room) and marks it used.
    pub fn take_prefix(&mut self, rng: &mut SeededRng, placement: Placement) -> Option<Ipv4Net> {
        let mut reserved = Vec::new();
        let mut open = Vec::new();
        for b in 0..self.block_count() {
            let (free, in_res, no_res) = self.block_state(b);
            if free && in_res {
                reserved.push(b);
            } else if free && no_res {
                open.push(b);
            }
        }
        let pool = if reserved.is_empty() { open } else { reserved };
        if pool.is_empty() {
            return None;
        }
        let b = match placement {
            Placement::Random => pool[rng.below(pool.len() as u64) as usize],
            Placement::Lowest => pool[0],
            Placement::Highest => pool[pool.len() - 1],
        };
        for i in b * 16..b * 16 + 16 {
            self.mark(i, true);
        }
        // An aligned /28 inside the subnet is always a valid network.
        Some(Ipv4Net::new(self.addr(b * 16), 28).expect("/28 is valid"))
    }

    /// The next /80 of the subnet's IPv6 block.
    pub fn take_ipv6_prefix(&mut self) -> Option<Ipv6Net> {
        let v6 = self.ipv6?;
        if v6.prefix_len() > 80 || self.v6_next >= (1u64 << (80 - u32::from(v6.prefix_len())).min(63)) {
            return None;
        }
        let n = self.v6_next;
        self.v6_next += 1;
        let base = u128::from(v6.network()) + (u128::from(n) << 48);
        Ipv6Net::new(base.into(), 80).ok()
    }

    /// Frees an address or a whole block.
    pub(crate) fn release(&mut self, net: Ipv4Net) {
        let start = u32::from(net.network()) - u32::from(self.cidr.network());
        let len = 1u32 << (32 - u32::from(net.prefix_len()));
        for i in start..start + len {
            self.mark(i, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(cidr: &str) -> Subnet {
        Subnet::new("subnet-1".into(), "az1", cidr.parse().unwrap(), None)
    }

    #[test]
    fn five_addresses_are_reserved() {
        let s = subnet("10.0.0.0/24");
        assert_eq!(s.free_ips(), 251);
        for o in [0, 1, 2, 3, 255] {
            assert!(s.is_reserved(o));
        }
        assert!(!s.is_reserved(4));
        // The first and last /28 hold reserved addresses: never prefixes.
        assert!(!s.block_free(0));
        assert!(!s.block_free(15));
        assert_eq!(s.free_prefixes(), 14);
    }

    #[test]
    fn lowest_placement_starts_after_the_reserved_head() {
        let mut s = subnet("10.0.0.0/28");
        let mut rng = SeededRng::new(1);
        assert_eq!(s.take_ip(&mut rng, Placement::Lowest), Some("10.0.0.4".parse().unwrap()));
        assert_eq!(s.take_ip(&mut rng, Placement::Highest), Some("10.0.0.14".parse().unwrap()));
        assert_eq!(s.take_prefix(&mut rng, Placement::Random), None);
    }

    #[test]
    fn explicit_reservations_are_never_auto_assigned() {
        let mut s = subnet("10.0.0.0/27");
        s.add_reservation(Reservation { cidr: "10.0.0.16/28".parse().unwrap(), kind: ReservationKind::Explicit })
            .unwrap();
        let mut rng = SeededRng::new(3);
        while let Some(ip) = s.take_ip(&mut rng, Placement::Random) {
            assert!(u32::from(ip) < u32::from(Ipv4Addr::new(10, 0, 0, 16)), "{ip}");
        }
        assert_eq!(s.used_count(), 12);
    }

    #[test]
    fn prefix_reservations_are_used_for_prefixes_first_and_not_for_ips() {
        let mut s = subnet("10.0.0.0/24");
        let res: Ipv4Net = "10.0.0.64/26".parse().unwrap();
        s.add_reservation(Reservation { cidr: res, kind: ReservationKind::Prefix }).unwrap();
        let mut rng = SeededRng::new(9);
        for _ in 0..4 {
            let p = s.take_prefix(&mut rng, Placement::Random).unwrap();
            assert!(res.contains(&p), "{p}");
        }
        let p = s.take_prefix(&mut rng, Placement::Random).unwrap();
        assert!(!res.contains(&p), "falls back to open space once the reservation is full");
        while let Some(ip) = s.take_ip(&mut rng, Placement::Random) {
            assert!(!res.contains(&ip));
        }
    }

    #[test]
    fn reservations_must_be_inside_and_disjoint() {
        let mut s = subnet("10.0.0.0/24");
        let r = |c: &str| Reservation { cidr: c.parse().unwrap(), kind: ReservationKind::Prefix };
        assert!(matches!(s.add_reservation(r("10.0.1.0/28")), Err(ReservationError::OutsideSubnet { .. })));
        s.add_reservation(r("10.0.0.64/26")).unwrap();
        assert!(matches!(s.add_reservation(r("10.0.0.80/28")), Err(ReservationError::Overlap { .. })));
    }

    #[test]
    fn one_stray_address_kills_a_block() {
        let mut s = subnet("10.0.0.0/24");
        assert!(s.block_free(3));
        assert!(s.occupy("10.0.0.55".parse().unwrap()));
        assert!(!s.block_free(3));
        assert!(!s.occupy("10.0.0.55".parse().unwrap()), "already used");
        assert!(!s.occupy("10.0.0.0".parse().unwrap()), "reserved");
    }
}
