//! One pod's wiring on the host as the kernel holds it, read exactly for CHECK: the host veths
//! (MAC, up), every main-table route to the pod's address, every policy rule that names the
//! address, and the host's neighbour entry for it. Each is compared with the plan whole: a part
//! that is there but different (a route through a gateway, a rule inverted or at another
//! priority, a veth at another MAC) fails as surely as one that is missing.

use crate::apply::ApplyError;
use crate::netlink::Nl;
use crate::plan::{MAIN_TABLE, PodNet, RULE_FROM_POD, RULE_TO_POD};
use netlink_packet_core::NLM_F_DUMP;
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleFlags, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

/// A link as CHECK compares it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Link {
    index: u32,
    mac: String,
    up: bool,
}

fn host_len(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

fn family_of(addr: IpAddr) -> AddressFamily {
    if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 }
}

fn mac_text(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

fn wrong(detail: String) -> ApplyError {
    ApplyError { what: "check".into(), detail }
}

/// Checks the host's side of `p` (and of its IPv4 egress) against the kernel.
///
/// # Errors
/// The first part missing or different, named with what was found; or a dump failed.
pub fn check_host(p: &PodNet) -> Result<(), ApplyError> {
    let mut nl = Nl::open()?;
    let links = links(&mut nl)?;
    // (address, host veth, the MAC the veth must have, the pod's MAC when the host has a
    // permanent neighbour entry for it).
    let mut sides = vec![(p.addr, p.host_veth.as_str(), p.host_mac.as_str(), p.addr.is_ipv6().then_some(&p.pod_mac))];
    if let Some(e) = &p.egress {
        sides.push((IpAddr::V4(e.addr), e.host_veth.as_str(), e.host_mac.as_str(), None));
    }
    for (addr, veth, mac, neighbour) in sides {
        let Some(link) = links.get(veth) else {
            return Err(wrong(format!("host veth {veth} is missing")));
        };
        if !link.mac.eq_ignore_ascii_case(mac) {
            return Err(wrong(format!("host veth {veth} has MAC {}, not {mac}", link.mac)));
        }
        if !link.up {
            return Err(wrong(format!("host veth {veth} is down")));
        }
        let routes = routes_to(&mut nl, addr, &links)?;
        if routes != [format!("dev {veth}")] {
            return Err(wrong(format!(
                "the host's routes to {addr} are [{}], not [dev {veth}] (no gateway)",
                routes.join(", ")
            )));
        }
        if let Some(pod_mac) = neighbour {
            let n = neighbour_of(&mut nl, addr, link.index)?;
            if !n.as_ref().is_some_and(|(m, permanent)| m.eq_ignore_ascii_case(pod_mac) && *permanent) {
                return Err(wrong(format!(
                    "the host's neighbour {addr} on {veth} is {}, not {pod_mac} permanent",
                    n.map_or("missing".into(), |(m, p)| format!("{m}{}", if p { " permanent" } else { "" }))
                )));
            }
        }
    }
    let rules = rules_of(&mut nl, p.addr)?;
    let mut wanted = vec![format!("{RULE_TO_POD}: to {} lookup {MAIN_TABLE}", p.addr)];
    if p.table != MAIN_TABLE {
        wanted.push(format!("{RULE_FROM_POD}: from {} lookup {}", p.addr, p.table));
    }
    if rules != wanted {
        return Err(wrong(format!("the rules of {} are [{}], not [{}]", p.addr, rules.join("; "), wanted.join("; "))));
    }
    Ok(())
}

/// Every main-table route to exactly `addr` in the caller's namespace, each as `dev X` (with
/// ` via G`, or its type when it is not unicast).
///
/// # Errors
/// A dump failed.
pub fn routes_to_addr(addr: IpAddr) -> Result<Vec<String>, ApplyError> {
    let mut nl = Nl::open()?;
    let links = links(&mut nl)?;
    routes_to(&mut nl, addr, &links)
}

fn links(nl: &mut Nl) -> Result<BTreeMap<String, Link>, ApplyError> {
    let mut out = BTreeMap::new();
    for m in nl.call("dump links", RouteNetlinkMessage::GetLink(LinkMessage::default()), NLM_F_DUMP)? {
        let RouteNetlinkMessage::NewLink(l) = m else { continue };
        let mut name = None;
        let mut mac = String::new();
        for a in &l.attributes {
            match a {
                LinkAttribute::IfName(n) => name = Some(n.clone()),
                LinkAttribute::Address(b) => mac = mac_text(b),
                _ => {}
            }
        }
        if let Some(name) = name {
            out.insert(name, Link { index: l.header.index, mac, up: l.header.flags.contains(LinkFlags::Up) });
        }
    }
    Ok(out)
}

/// Every main-table route to exactly `addr`, as `dev X` (with ` via G`, or its type when it is
/// not unicast).
fn routes_to(nl: &mut Nl, addr: IpAddr, links: &BTreeMap<String, Link>) -> Result<Vec<String>, ApplyError> {
    let names: BTreeMap<u32, &str> = links.iter().map(|(n, l)| (l.index, n.as_str())).collect();
    let mut q = RouteMessage::default();
    q.header.address_family = family_of(addr);
    let mut out = Vec::new();
    for m in nl.call("dump routes", RouteNetlinkMessage::GetRoute(q), NLM_F_DUMP)? {
        let RouteNetlinkMessage::NewRoute(r) = m else { continue };
        let mut table = u32::from(r.header.table);
        let (mut dst, mut oif, mut via) = (None, None, None);
        for a in &r.attributes {
            match a {
                RouteAttribute::Table(t) => table = *t,
                RouteAttribute::Destination(RouteAddress::Inet(v4)) => dst = Some(IpAddr::V4(*v4)),
                RouteAttribute::Destination(RouteAddress::Inet6(v6)) => dst = Some(IpAddr::V6(*v6)),
                RouteAttribute::Oif(i) => oif = Some(*i),
                RouteAttribute::Gateway(RouteAddress::Inet(g)) => via = Some(IpAddr::V4(*g)),
                RouteAttribute::Gateway(RouteAddress::Inet6(g)) => via = Some(IpAddr::V6(*g)),
                _ => {}
            }
        }
        if dst != Some(addr)
            || r.header.destination_prefix_length != host_len(addr)
            || table != u32::from(RouteHeader::RT_TABLE_MAIN)
        {
            continue;
        }
        let mut s = format!("dev {}", oif.and_then(|i| names.get(&i).copied()).unwrap_or("?"));
        if let Some(g) = via {
            let _ = write!(s, " via {g}");
        }
        if r.header.kind != RouteType::Unicast {
            let _ = write!(s, " {:?}", r.header.kind);
        }
        out.push(s);
    }
    Ok(out)
}

/// Every rule whose source or destination is exactly `addr`, as `PRIORITY: [not ]to|from ADDR
/// [other selectors] lookup TABLE` (or its action), sorted.
fn rules_of(nl: &mut Nl, addr: IpAddr) -> Result<Vec<String>, ApplyError> {
    let mut q = RuleMessage::default();
    q.header.family = family_of(addr);
    let mut out = Vec::new();
    for m in nl.call("dump rules", RouteNetlinkMessage::GetRule(q), NLM_F_DUMP)? {
        let RouteNetlinkMessage::NewRule(r) = m else { continue };
        let (mut priority, mut table) = (0, u32::from(r.header.table));
        let (mut src, mut dst) = (None, None);
        let mut selectors = Vec::new();
        for a in &r.attributes {
            match a {
                RuleAttribute::Priority(p) => priority = *p,
                RuleAttribute::Table(t) => table = *t,
                RuleAttribute::Source(s) if r.header.src_len == host_len(*s) => src = Some(*s),
                RuleAttribute::Destination(d) if r.header.dst_len == host_len(*d) => dst = Some(*d),
                // Reported by the kernel for every rule, or not a selector.
                RuleAttribute::Protocol(_)
                | RuleAttribute::SuppressPrefixLen(_)
                | RuleAttribute::SuppressIfGroup(_)
                | RuleAttribute::Other(_) => {}
                RuleAttribute::FwMask(0) => {}
                RuleAttribute::UidRange(u) if u.start == 0 && u.end == u32::MAX => {}
                other => selectors.push(format!("{other:?}")),
            }
        }
        let mut s = format!("{priority}: ");
        if r.header.flags.contains(RuleFlags::Invert) {
            s.push_str("not ");
        }
        match (src, dst) {
            (Some(a), _) if a == addr => {
                let _ = write!(s, "from {a}");
                if dst.is_some() || r.header.dst_len != 0 {
                    selectors.push(format!("to /{}", r.header.dst_len));
                }
            }
            (_, Some(a)) if a == addr => {
                let _ = write!(s, "to {a}");
                if r.header.src_len != 0 {
                    selectors.push(format!("from /{}", r.header.src_len));
                }
            }
            _ => continue,
        }
        if r.header.tos != 0 {
            selectors.push(format!("tos {}", r.header.tos));
        }
        for sel in selectors {
            let _ = write!(s, " {sel}");
        }
        match r.header.action {
            RuleAction::ToTable => {
                let _ = write!(s, " lookup {table}");
            }
            other => {
                let _ = write!(s, " {other:?}");
            }
        }
        out.push(s);
    }
    out.sort_by_key(|s| s.split(':').next().and_then(|p| p.parse::<u32>().ok()).unwrap_or(0));
    Ok(out)
}

/// The host's neighbour entry for `addr` on link `index`: its MAC and whether it is permanent.
fn neighbour_of(nl: &mut Nl, addr: IpAddr, index: u32) -> Result<Option<(String, bool)>, ApplyError> {
    let mut q = NeighbourMessage::default();
    q.header.family = family_of(addr);
    for m in nl.call("dump neighbours", RouteNetlinkMessage::GetNeighbour(q), NLM_F_DUMP)? {
        let RouteNetlinkMessage::NewNeighbour(n) = m else { continue };
        if n.header.ifindex != index {
            continue;
        }
        let (mut dst, mut mac) = (None, None);
        for a in &n.attributes {
            match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => dst = Some(IpAddr::V4(*v4)),
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => dst = Some(IpAddr::V6(*v6)),
                NeighbourAttribute::LinkLayerAddress(b) => mac = Some(mac_text(b)),
                _ => {}
            }
        }
        if dst == Some(addr) {
            return Ok(Some((mac.unwrap_or_default(), n.header.state == NeighbourState::Permanent)));
        }
    }
    Ok(None)
}
