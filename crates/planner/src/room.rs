//! Room for new subnets in a VPC: aligned blocks inside its CIDR blocks that overlap no subnet,
//! and a routable secondary block it could add when its own blocks are full.

use crate::scenario::secondary_cidr_refusal;
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;

/// The smallest subnet (prefix length) that holds `addresses` usable addresses (EC2 keeps five
/// of every subnet), at most a /16 and at least a /28.
pub fn prefix_for(addresses: u64) -> u8 {
    let mut p = 28u8;
    while p > 16 && (1u64 << (32 - p)).saturating_sub(5) < addresses {
        p -= 1;
    }
    p
}

/// The first aligned /`prefix` inside the VPC's blocks that overlaps none of `taken`.
pub fn free_block(vpc: &[Ipv4Net], taken: &[Ipv4Net], prefix: u8) -> Option<Ipv4Net> {
    vpc.iter()
        .filter(|b| b.prefix_len() <= prefix)
        .find_map(|b| b.subnets(prefix).ok()?.find(|c| !taken.iter().any(|t| t.contains(c) || c.contains(t))))
}

/// Places one subnet of `prefix` per AZ, largest need first; where a size does not fit, the
/// largest that does (down to a /28). Returns each AZ's block, or `None` when nothing fits.
pub fn place(vpc: &[Ipv4Net], existing: &[Ipv4Net], wants: &[(String, u8)]) -> Vec<(String, Option<Ipv4Net>)> {
    let mut taken: Vec<Ipv4Net> = existing.to_vec();
    let mut order: Vec<usize> = (0..wants.len()).collect();
    order.sort_by_key(|i| wants[*i].1);
    let mut out: Vec<(String, Option<Ipv4Net>)> = wants.iter().map(|(az, _)| (az.clone(), None)).collect();
    for i in order {
        let got = (wants[i].1..=28).find_map(|p| free_block(vpc, &taken, p));
        if let Some(b) = got {
            taken.push(b);
        }
        out[i].1 = got;
    }
    out
}

/// A /16 the VPC could add as a routable secondary block: in the same RFC 1918 range as its
/// primary, overlapping none of its blocks nor `avoid` (networks known elsewhere), allowed by
/// the association rules.
pub fn routable_secondary(vpc: &[Ipv4Net], avoid: &[Ipv4Net]) -> Option<Ipv4Net> {
    let primary = vpc.first()?;
    let range: Ipv4Net = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
        .iter()
        .filter_map(|r| r.parse::<Ipv4Net>().ok())
        .find(|r| r.contains(primary))?;
    // From the primary's own /16 upwards, wrapping around the range.
    let start = u32::from(primary.network()) & 0xffff_0000;
    let size = 1u32 << (32 - u32::from(range.prefix_len()));
    let base = u32::from(range.network());
    (0..size >> 16)
        .map(|k| base + ((start - base + (k << 16)) % size))
        .filter_map(|a| Ipv4Net::new(Ipv4Addr::from(a), 16).ok())
        .find(|c| {
            !vpc.iter().chain(avoid).any(|v| v.contains(c) || c.contains(v))
                && secondary_cidr_refusal(primary, c).is_none()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn sizes_hold_the_need_within_ec2s_limits() {
        assert_eq!(prefix_for(11), 28);
        assert_eq!(prefix_for(12), 27);
        assert_eq!(prefix_for(251), 24);
        assert_eq!(prefix_for(252), 23);
        assert_eq!(prefix_for(10_000_000), 16);
    }

    #[test]
    fn new_subnets_are_aligned_inside_the_vpc_and_overlap_nothing() {
        let vpc = [net("10.0.0.0/16")];
        let existing = [net("10.0.0.0/20"), net("10.0.16.0/20"), net("10.0.128.0/24")];
        let got = place(&vpc, &existing, &[("a".into(), 18), ("b".into(), 18), ("c".into(), 17)]);
        let blocks: Vec<Ipv4Net> = got.iter().filter_map(|(_, b)| *b).collect();
        assert_eq!(blocks.len(), 3, "{got:?}");
        for (i, b) in blocks.iter().enumerate() {
            assert!(vpc[0].contains(b));
            assert_eq!(b.trunc(), *b);
            for o in existing.iter().chain(blocks.iter().skip(i + 1)) {
                assert!(!b.contains(o) && !o.contains(b), "{b} overlaps {o}");
            }
        }
        // The /17 did not fit whole beside the /18s: the largest that does, not nothing.
        assert!(got.iter().all(|(_, b)| b.is_some()));
    }

    #[test]
    fn a_full_vpc_gets_a_routable_secondary_block_of_its_own_range() {
        let vpc = [net("10.0.0.0/16"), net("10.1.0.0/16")];
        assert_eq!(free_block(&vpc[..1], &[net("10.0.0.0/16")], 24), None);
        assert_eq!(routable_secondary(&vpc, &[]), Some(net("10.2.0.0/16")));
        assert_eq!(
            routable_secondary(&vpc, &[net("10.2.0.0/15")]),
            Some(net("10.4.0.0/16")),
            "a known network is skipped"
        );
        assert_eq!(routable_secondary(&[net("192.168.0.0/16")], &[]), None);
        assert_eq!(routable_secondary(&[net("172.31.0.0/16")], &[]), Some(net("172.16.0.0/16")));
    }
}
