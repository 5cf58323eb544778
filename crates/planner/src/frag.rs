//! `podip frag`: a subnet's /28 fragmentation. Which free addresses EC2 could still auto-assign,
//! which aligned /28 blocks a prefix request could still get, a block map, a fragmentation score,
//! and the subnet CIDR reservation that would secure N prefixes.

use cloud::sim::subnet::{Reservation, ReservationKind, Subnet};
use ipam::addr::SubnetId;
use ipnet::Ipv4Net;
use serde::Serialize;
use std::net::Ipv4Addr;
use thiserror::Error;

/// What is known of the subnet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FragInput {
    /// Subnet id, for the suggested command (a placeholder when unknown).
    pub subnet_id: Option<String>,
    /// The subnet's block.
    pub subnet: Option<Ipv4Net>,
    /// Addresses in use, with where each came from (for error messages).
    pub used: Vec<(Ipv4Addr, String)>,
    /// Prefixes in use.
    pub used_prefixes: Vec<(Ipv4Net, String)>,
    /// Reservations.
    pub reservations: Vec<Reservation>,
    /// Prefixes to secure with a reservation.
    pub want_prefixes: Option<u32>,
    /// Addresses a reservation must leave EC2 to auto-assign (new nodes' and ENIs' primary
    /// addresses never come from a prefix reservation).
    pub keep_free: u32,
}

/// Every problem with the input, at once.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{}", .0.join("; "))]
pub struct FragInputError(pub Vec<String>);

/// State of one aligned /28 block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BlockState {
    /// Holds an address AWS reserves: never a prefix.
    Reserved,
    /// Every address in use.
    Used,
    /// Some addresses in use: lost to prefixes.
    Partial,
    /// In an explicit reservation: nothing is auto-assigned from it.
    Explicit,
    /// Wholly free inside a prefix reservation.
    FreeReserved,
    /// Wholly free.
    Free,
}

impl BlockState {
    /// The map glyph.
    pub fn glyph(self) -> char {
        match self {
            BlockState::Reserved => 'R',
            BlockState::Used => '#',
            BlockState::Partial => '+',
            BlockState::Explicit => 'X',
            BlockState::FreeReserved => 'P',
            BlockState::Free => '.',
        }
    }
}

/// One block of the map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Block {
    /// The /28.
    pub cidr: Ipv4Net,
    /// Its state.
    pub state: BlockState,
    /// Addresses in use in it.
    pub used: u32,
}

/// The reservations that would secure prefixes: aligned ranges of wholly free /28 blocks only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Advice {
    /// Prefixes asked for.
    pub prefixes: u32,
    /// The ranges to reserve (empty when the prefixes cannot be secured).
    pub cidrs: Vec<Ipv4Net>,
    /// Free /28 blocks in those ranges (the prefixes asked for), or at most how many could be.
    pub free_blocks: u32,
    /// The commands that create them.
    pub commands: Vec<String>,
    /// Why none was proposed.
    pub note: Option<String>,
}

/// The analysis (the `podip frag --json` schema).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FragReport {
    /// The subnet.
    pub subnet: Ipv4Net,
    /// Addresses in the subnet.
    pub size: u32,
    /// Addresses in use.
    pub used: u32,
    /// Addresses EC2 could still auto-assign (not reserved, not in use, not in a reservation).
    pub free_ips: u32,
    /// Aligned /28 blocks a prefix request could still get.
    pub free_prefixes: u32,
    /// Share of the free addresses outside any free /28 block: 0 = none, 1 = every free address
    /// is stranded for prefix delegation.
    pub fragmentation: f64,
    /// Free addresses that no prefix can use.
    pub stranded_ips: u32,
    /// One glyph per /28, 16 to a line: `R` reserved, `#` used, `+` partly used, `X` explicit
    /// reservation, `P` free in a prefix reservation, `.` free.
    pub block_map: Vec<String>,
    /// Every block.
    pub blocks: Vec<Block>,
    /// The reservation that would secure the prefixes asked for.
    pub advice: Option<Advice>,
}

/// Runs the analysis.
///
/// # Errors
/// Every bad input value at once: no subnet, an address outside it or AWS-reserved, a prefix not
/// aligned or outside, an overlapping reservation.
pub fn analyse(input: &FragInput) -> Result<FragReport, FragInputError> {
    let mut errors = Vec::new();
    let Some(cidr) = input.subnet else {
        return Err(FragInputError(vec!["no subnet: give --subnet CIDR or the AWS exports with --subnet-id".into()]));
    };
    if !(16..=28).contains(&cidr.prefix_len()) || cidr.trunc() != cidr {
        errors.push(format!("--subnet {cidr}: a subnet is an aligned block between /16 and /28"));
        return Err(FragInputError(errors));
    }
    let mut s = Subnet::new(SubnetId(input.subnet_id.clone().unwrap_or_default()), "", cidr, None);
    for r in &input.reservations {
        if let Err(e) = s.add_reservation(*r) {
            errors.push(format!("--reservation {}: {e}", r.cidr));
        }
    }
    for (ip, origin) in &input.used {
        match s.offset(*ip) {
            None => errors.push(format!("{origin}: {ip} is not in subnet {cidr}")),
            Some(o) if s.is_reserved(o) => errors.push(format!("{origin}: {ip} is an address AWS reserves in {cidr}")),
            Some(_) => {
                s.occupy(*ip);
            }
        }
    }
    for (p, origin) in &input.used_prefixes {
        if !ipam::addr::is_aligned_prefix(p) || !cidr.contains(p) {
            errors.push(format!("{origin}: {p} is not an aligned /28 inside {cidr}"));
            continue;
        }
        for i in 0..16 {
            s.occupy(ipam::addr::nth(p, i));
        }
    }
    if input.want_prefixes == Some(0) {
        errors.push("--prefixes 0: ask for at least 1".into());
    }
    if !errors.is_empty() {
        return Err(FragInputError(errors));
    }
    let blocks = block_map(&s);
    let free_ips = s.free_ips();
    let free_prefixes = s.free_prefixes();
    let in_blocks: u32 = blocks.iter().filter(|b| b.state == BlockState::Free).count() as u32 * 16;
    let stranded = free_ips.saturating_sub(in_blocks);
    let fragmentation = if free_ips == 0 { 0.0 } else { f64::from(stranded) / f64::from(free_ips) };
    let block_map = blocks.chunks(16).map(|row| row.iter().map(|b| b.state.glyph()).collect()).collect();
    let advice = input.want_prefixes.map(|n| advise(&s, &blocks, n, input.keep_free, input.subnet_id.as_deref()));
    Ok(FragReport {
        subnet: cidr,
        size: s.size(),
        used: s.used_count(),
        free_ips,
        free_prefixes,
        fragmentation: (fragmentation * 1000.0).round() / 1000.0,
        stranded_ips: stranded,
        block_map,
        blocks,
        advice,
    })
}

/// Every aligned /28 block of `s` and its state.
pub fn block_map(s: &Subnet) -> Vec<Block> {
    (0..s.block_count())
        .map(|b| {
            let sum = s.block_summary(b);
            let state = if sum.reserved > 0 {
                BlockState::Reserved
            } else if sum.used == 16 {
                BlockState::Used
            } else if sum.used > 0 {
                BlockState::Partial
            } else if sum.explicit > 0 {
                BlockState::Explicit
            } else if sum.prefix_reserved == 16 {
                BlockState::FreeReserved
            } else {
                BlockState::Free
            };
            // Aligned /28 inside the subnet: always valid.
            let cidr = Ipv4Net::new(s.addr(b * 16), 28).expect("/28");
            Block { cidr, state, used: sum.used }
        })
        .collect()
}

/// Reservations securing `n` prefixes: aligned ranges made only of wholly free /28 blocks (no
/// used, AWS-reserved or already reserved address), clear of other reservations, largest first,
/// as few as the free blocks allow; and never so many that fewer than `keep` addresses stay
/// auto-assignable.
fn advise(s: &Subnet, blocks: &[Block], n: u32, keep: u32, subnet_id: Option<&str>) -> Advice {
    let id = subnet_id.filter(|i| !i.is_empty()).unwrap_or("SUBNET_ID");
    let clashes = |r: &Ipv4Net| s.reservations().iter().any(|x| x.cidr.contains(r) || r.contains(&x.cidr));
    let free_total = blocks.iter().filter(|b| b.state == BlockState::Free).count() as u32;
    let affordable = s.free_ips().saturating_sub(keep) / 16;
    let none = |free_blocks: u32, note: String| Advice {
        prefixes: n,
        cidrs: Vec::new(),
        free_blocks,
        commands: Vec::new(),
        note: Some(note),
    };
    if n > affordable {
        return none(
            affordable.min(free_total),
            format!(
                "reserving {n} /28 blocks would leave fewer than {keep} addresses for new nodes' primary addresses; at most {} fit",
                affordable.min(free_total)
            ),
        );
    }
    let mut taken = vec![false; blocks.len()];
    let mut cidrs = Vec::new();
    let mut left = n;
    while left > 0 {
        // The largest aligned window of wholly free, untaken blocks no bigger than what is left.
        let mut size = 1usize << (31 - left.leading_zeros());
        let found = loop {
            let hit = (0..blocks.len()).step_by(size).find(|start| {
                let w = &blocks[*start..(*start + size).min(blocks.len())];
                let net = Ipv4Net::new(w[0].cidr.network(), 28 - size.trailing_zeros() as u8).expect("aligned");
                w.len() == size
                    && w.iter().all(|b| b.state == BlockState::Free)
                    && !taken[*start..*start + size].iter().any(|t| *t)
                    && !clashes(&net)
            });
            match hit {
                Some(start) => break Some((start, size)),
                None if size > 1 => size /= 2,
                None => break None,
            }
        };
        let Some((start, size)) = found else { break };
        taken[start..start + size].iter_mut().for_each(|t| *t = true);
        cidrs.push(Ipv4Net::new(blocks[start].cidr.network(), 28 - size.trailing_zeros() as u8).expect("aligned"));
        left -= size as u32;
    }
    if left > 0 {
        let had = n - left;
        return none(had, format!("only {had} wholly free /28 blocks clear of other reservations; {n} asked"));
    }
    cidrs.sort();
    let commands = cidrs
        .iter()
        .map(|c| {
            format!("aws ec2 create-subnet-cidr-reservation --subnet-id {id} --cidr {c} --reservation-type prefix")
        })
        .collect();
    Advice { prefixes: n, cidrs, free_blocks: n, commands, note: None }
}

/// Reads a `--reservation CIDR:prefix|CIDR:explicit` value.
///
/// # Errors
/// A message naming the value.
pub fn parse_reservation(v: &str) -> Result<Reservation, String> {
    let (c, k) =
        v.split_once(':').ok_or_else(|| format!("--reservation {v}: expected CIDR:prefix or CIDR:explicit"))?;
    let cidr: Ipv4Net = c.parse().map_err(|_| format!("--reservation {v}: {c:?} is not an IPv4 CIDR"))?;
    if cidr.trunc() != cidr {
        return Err(format!("--reservation {v}: host bits set (did you mean {}?)", cidr.trunc()));
    }
    let kind = match k {
        "prefix" => ReservationKind::Prefix,
        "explicit" => ReservationKind::Explicit,
        _ => return Err(format!("--reservation {v}: type {k:?} is neither prefix nor explicit")),
    };
    Ok(Reservation { cidr, kind })
}

/// Reads a used-address file: one address per line, `#` comments and blank lines allowed.
///
/// # Errors
/// Every bad line, as `FILE:LINE: value`.
pub fn parse_used(file: &str, text: &str) -> Result<Vec<(Ipv4Addr, String)>, FragInputError> {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let v = line.split('#').next().unwrap_or("").trim();
        if v.is_empty() {
            continue;
        }
        let origin = format!("{file}:{}", i + 1);
        match v.parse::<Ipv4Addr>() {
            Ok(ip) => out.push((ip, origin)),
            Err(_) => bad.push(format!("{origin}: {v:?} is not an IPv4 address")),
        }
    }
    if bad.is_empty() { Ok(out) } else { Err(FragInputError(bad)) }
}

#[cfg(test)]
mod tests;
