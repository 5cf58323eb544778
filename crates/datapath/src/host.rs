//! The node's pod wiring as the kernel holds it, read and changed over rtnetlink: the links, the
//! host routes to pods (/32 and /128 in the main table), and podip's policy rules (to-pod at
//! [`RULE_TO_POD`], from-pod at [`RULE_FROM_POD`]). The daemon reads it as ground truth at boot
//! and in its sweeps; the plugin finds a pod's address here when the daemon no longer knows it.
//!
//! Rules are kept exclusive: [`set_pod_rules`] removes every rule of the address at podip's
//! priorities (whatever their table) before adding its own with `NLM_F_EXCL`, so copies never
//! pile up and a rule towards an ENI the address has left never survives.

use crate::apply::ApplyError;
use crate::netlink::Nl;
use crate::plan::{MAIN_TABLE, RULE_FROM_POD, RULE_TO_POD};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// A host route to one pod address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRoute {
    /// The pod's address (/32 or /128).
    pub addr: IpAddr,
    /// The link it leaves through.
    pub link: String,
}

/// One of podip's policy rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRule {
    /// [`RULE_TO_POD`] or [`RULE_FROM_POD`].
    pub priority: u32,
    /// The pod address it selects (destination for to-pod, source for from-pod).
    pub addr: IpAddr,
    /// The table it points to.
    pub table: u32,
}

/// What the node's namespace holds that concerns pods.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostView {
    /// Link names.
    pub links: Vec<String>,
    /// Names of the links that are veths.
    pub veths: Vec<String>,
    /// Each link's index, by name (a link made again under its name has another).
    pub indexes: BTreeMap<String, u32>,
    /// Host routes to single addresses through a link (main table).
    pub routes: Vec<PodRoute>,
    /// Rules at podip's two priorities.
    pub rules: Vec<PodRule>,
}

impl HostView {
    /// Addresses with a host route over a veth, with that veth: a pod's wiring, whatever prefix
    /// its veth was named with (counting more as wired only keeps more addresses held).
    pub fn wired(&self) -> BTreeMap<IpAddr, String> {
        self.routes.iter().filter(|r| self.veths.contains(&r.link)).map(|r| (r.addr, r.link.clone())).collect()
    }

    /// Whether a link named `name` exists.
    pub fn has_link(&self, name: &str) -> bool {
        self.links.iter().any(|l| l == name)
    }

    /// The address routed over `link`, if any (the pod's, for a host veth).
    pub fn addr_on(&self, link: &str) -> Option<IpAddr> {
        self.routes.iter().find(|r| r.link == link).map(|r| r.addr)
    }
}

fn family_of(addr: IpAddr) -> AddressFamily {
    if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 }
}

fn host_len(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

/// Reads the pod wiring of the namespace at `netns` (the caller's own when `None`).
///
/// # Errors
/// The namespace cannot be entered, a dump fails, or changes kept interrupting the dumps.
pub fn scan(netns: Option<&str>) -> Result<HostView, ApplyError> {
    let mut nl = Nl::open_in(netns)?;
    // A dump the kernel marks interrupted may miss an object: read the whole view again.
    let mut tries = 0;
    loop {
        match scan_with(&mut nl) {
            Err(e) if e.detail.contains("interrupted") && tries < 4 => tries += 1,
            r => return r,
        }
    }
}

pub(crate) fn scan_with(nl: &mut Nl) -> Result<HostView, ApplyError> {
    let mut names: BTreeMap<u32, String> = BTreeMap::new();
    let mut veths = Vec::new();
    for m in nl.call("dump links", RouteNetlinkMessage::GetLink(LinkMessage::default()), NLM_F_DUMP)? {
        let RouteNetlinkMessage::NewLink(l) = m else { continue };
        let name = l.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        });
        let veth = l.attributes.iter().any(|a| match a {
            LinkAttribute::LinkInfo(infos) => infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth))),
            _ => false,
        });
        if let Some(name) = name {
            if veth {
                veths.push(name.clone());
            }
            names.insert(l.header.index, name);
        }
    }
    let indexes = names.iter().map(|(i, n)| (n.clone(), *i)).collect();
    let mut view = HostView { links: names.values().cloned().collect(), veths, indexes, ..HostView::default() };
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut q = RouteMessage::default();
        q.header.address_family = family;
        for m in nl.call("dump routes", RouteNetlinkMessage::GetRoute(q), NLM_F_DUMP)? {
            let RouteNetlinkMessage::NewRoute(r) = m else { continue };
            let table = r
                .attributes
                .iter()
                .find_map(|a| match a {
                    RouteAttribute::Table(t) => Some(*t),
                    _ => None,
                })
                .unwrap_or(u32::from(r.header.table));
            let mut dst = None;
            let mut oif = None;
            for a in &r.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet(v4)) => dst = Some(IpAddr::V4(*v4)),
                    RouteAttribute::Destination(RouteAddress::Inet6(v6)) => dst = Some(IpAddr::V6(*v6)),
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    _ => {}
                }
            }
            let (Some(addr), Some(oif)) = (dst, oif) else { continue };
            if table != u32::from(RouteHeader::RT_TABLE_MAIN) || r.header.destination_prefix_length != host_len(addr) {
                continue;
            }
            if let Some(link) = names.get(&oif) {
                view.routes.push(PodRoute { addr, link: link.clone() });
            }
        }
        let mut q = RuleMessage::default();
        q.header.family = family;
        for m in nl.call("dump rules", RouteNetlinkMessage::GetRule(q), NLM_F_DUMP)? {
            let RouteNetlinkMessage::NewRule(r) = m else { continue };
            let mut priority = 0;
            let mut table = u32::from(r.header.table);
            let (mut src, mut dst) = (None, None);
            for a in &r.attributes {
                match a {
                    RuleAttribute::Priority(p) => priority = *p,
                    RuleAttribute::Table(t) => table = *t,
                    RuleAttribute::Source(s) => src = Some(*s),
                    RuleAttribute::Destination(d) => dst = Some(*d),
                    _ => {}
                }
            }
            let addr = match priority {
                RULE_TO_POD => dst.filter(|a| r.header.dst_len == host_len(*a)),
                RULE_FROM_POD => src.filter(|a| r.header.src_len == host_len(*a)),
                _ => None,
            };
            if let Some(addr) = addr {
                view.rules.push(PodRule { priority, addr, table });
            }
        }
    }
    Ok(view)
}

fn rule_message(addr: IpAddr, priority: u32, table: u32) -> RuleMessage {
    let mut r = RuleMessage::default();
    r.header.family = family_of(addr);
    r.header.action = RuleAction::ToTable;
    r.header.table = u8::try_from(table).unwrap_or(0);
    if priority == RULE_TO_POD {
        r.header.dst_len = host_len(addr);
        r.attributes.push(RuleAttribute::Destination(addr));
    } else {
        r.header.src_len = host_len(addr);
        r.attributes.push(RuleAttribute::Source(addr));
    }
    r.attributes.push(RuleAttribute::Priority(priority));
    if table != 0 {
        r.attributes.push(RuleAttribute::Table(table));
    }
    r
}

/// Whether the kernel said the object exists already (EEXIST).
pub(crate) fn exists(e: &ApplyError) -> bool {
    e.detail.contains("File exists") || e.detail.contains("os error 17")
}

/// Whether the kernel said there is no such object (ENOENT).
fn not_found(e: &ApplyError) -> bool {
    e.detail.contains("No such file") || e.detail.contains("os error 2")
}

/// Removes every rule of `addr` at `priority`, whatever its table; returns how many went.
pub(crate) fn del_rule_all(nl: &mut Nl, addr: IpAddr, priority: u32) -> Result<u32, ApplyError> {
    // Table 0 matches any table; each call removes one rule. Bounded, in case of a kernel that
    // keeps answering success.
    let mut removed = 0;
    for _ in 0..64 {
        match nl.call("remove rule", RouteNetlinkMessage::DelRule(rule_message(addr, priority, 0)), 0) {
            Ok(_) => removed += 1,
            Err(e) if not_found(&e) => return Ok(removed),
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

/// Makes `addr`'s rules exactly: to-pod via main, and from-pod via `table` when it is not main.
pub(crate) fn set_pod_rules(nl: &mut Nl, addr: IpAddr, table: u32) -> Result<(), ApplyError> {
    del_rule_all(nl, addr, RULE_TO_POD)?;
    del_rule_all(nl, addr, RULE_FROM_POD)?;
    let add = |nl: &mut Nl, what: &str, prio: u32, t: u32| {
        nl.call(what, RouteNetlinkMessage::NewRule(rule_message(addr, prio, t)), NLM_F_CREATE | NLM_F_EXCL).map(|_| ())
    };
    add(nl, "to-pod rule", RULE_TO_POD, MAIN_TABLE)?;
    if table != MAIN_TABLE {
        add(nl, "from-pod rule", RULE_FROM_POD, table)?;
    }
    Ok(())
}

/// What a host route request is called when the kernel found the pod's address routed already:
/// another link carries it on this host (another pod's, or something else's), so this setup
/// adds nothing for it and removes nothing of it (its rules are that owner's).
pub const ROUTED_ALREADY: &str = "host route to the pod (the address is routed already)";

/// Whether `e` is a setup's finding that the pod's address is routed on the host already.
pub fn routed_already(e: &ApplyError) -> bool {
    e.what == ROUTED_ALREADY
}

/// The error for `addr` found routed already (`detail`: what the kernel or tool said), naming
/// the routes there.
pub(crate) fn routed_already_error(addr: IpAddr, detail: &str) -> ApplyError {
    let routes = crate::inspect::routes_to_addr(addr).map_or_else(|e| e.to_string(), |r| r.join(", "));
    ApplyError {
        what: ROUTED_ALREADY.into(),
        detail: format!("{addr} is routed on this host already ({routes}), so another pod may carry it ({detail})"),
    }
}

/// Adds `route` to `addr` exclusively, then makes `addr`'s rules exactly as [`set_pod_rules`]
/// does, in one datagram when no rule of `addr` is there already (the usual case: the removals
/// find nothing and the adds are the only ones); otherwise the rules are made exact one request
/// at a time. The route goes first, on its own: the kernel refuses a second route to one address
/// (`NLM_F_EXCL`), so whatever podipd's state says, no two pods of a node are routed one
/// address, and a refused route leaves the rules of whoever holds the address as they are.
pub(crate) fn set_route_and_rules(
    nl: &mut Nl,
    route: (&str, RouteNetlinkMessage),
    addr: IpAddr,
    table: u32,
) -> Result<(), ApplyError> {
    if let Err(e) = nl.call(route.0, route.1, NLM_F_CREATE | NLM_F_EXCL) {
        return Err(if exists(&e) { routed_already_error(addr, &e.detail) } else { e });
    }
    let mut reqs = vec![
        ("remove rule", RouteNetlinkMessage::DelRule(rule_message(addr, RULE_TO_POD, 0)), 0),
        ("remove rule", RouteNetlinkMessage::DelRule(rule_message(addr, RULE_FROM_POD, 0)), 0),
        (
            "to-pod rule",
            RouteNetlinkMessage::NewRule(rule_message(addr, RULE_TO_POD, MAIN_TABLE)),
            NLM_F_CREATE | NLM_F_EXCL,
        ),
    ];
    if table != MAIN_TABLE {
        reqs.push((
            "from-pod rule",
            RouteNetlinkMessage::NewRule(rule_message(addr, RULE_FROM_POD, table)),
            NLM_F_CREATE | NLM_F_EXCL,
        ));
    }
    let outcomes = nl.call_each(reqs)?;
    let mut it = outcomes.into_iter();
    let gone = |r: &Result<(), ApplyError>| matches!(r, Err(e) if not_found(e));
    let (to, from) = (it.next(), it.next());
    let clean = to.as_ref().is_some_and(gone) && from.as_ref().is_some_and(gone) && it.all(|r| r.is_ok());
    if clean { Ok(()) } else { set_pod_rules(nl, addr, table) }
}

/// Removes every podip rule of `addr` in the namespace at `netns`; returns how many went.
///
/// # Errors
/// The namespace cannot be entered, or the kernel refused for another reason than "not found".
pub fn remove_pod_rules(netns: Option<&str>, addr: IpAddr) -> Result<u32, ApplyError> {
    let mut nl = Nl::open_in(netns)?;
    Ok(del_rule_all(&mut nl, addr, RULE_TO_POD)? + del_rule_all(&mut nl, addr, RULE_FROM_POD)?)
}

/// Sets `addr`'s rules exclusively in the namespace at `netns` (see [`set_pod_rules`]).
///
/// # Errors
/// The namespace cannot be entered, or the kernel refused.
pub fn ensure_pod_rules(netns: Option<&str>, addr: IpAddr, table: u32) -> Result<(), ApplyError> {
    let mut nl = Nl::open_in(netns)?;
    set_pod_rules(&mut nl, addr, table)
}

/// The veth the caller's namespace has a host route (/32, /128) to `addr` over, if any: one
/// route lookup that returns the matching table entry (`RTM_F_FIB_MATCH`, so a covering
/// blackhole, prohibit or default route is told apart) and one link lookup, no dump.
///
/// # Errors
/// The kernel refused a lookup.
pub fn routed_over(addr: IpAddr) -> Result<Option<String>, ApplyError> {
    let mut nl = Nl::open()?;
    let mut q = RouteMessage::default();
    q.header.address_family = family_of(addr);
    q.header.destination_prefix_length = host_len(addr);
    q.header.flags = netlink_packet_route::route::RouteFlags::FibMatch;
    q.attributes.push(RouteAttribute::Destination(match addr {
        IpAddr::V4(a) => RouteAddress::Inet(a),
        IpAddr::V6(a) => RouteAddress::Inet6(a),
    }));
    let replies = match nl.call("route lookup", RouteNetlinkMessage::GetRoute(q), 0) {
        Ok(r) => r,
        // No usable route (unreachable, prohibited, blackholed, no network): not over a veth.
        Err(e)
            if ["os error 101", "os error 113", "os error 13", "os error 22", "os error 3"]
                .iter()
                .any(|c| e.detail.contains(c)) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let oif = replies.iter().find_map(|m| match m {
        RouteNetlinkMessage::NewRoute(r) if r.header.destination_prefix_length == host_len(addr) => {
            r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Oif(i) => Some(*i),
                _ => None,
            })
        }
        _ => None,
    });
    let Some(oif) = oif else { return Ok(None) };
    let mut m = LinkMessage::default();
    m.header.index = oif;
    let link = nl.call("link lookup", RouteNetlinkMessage::GetLink(m), 0)?.into_iter().find_map(|r| match r {
        RouteNetlinkMessage::NewLink(l) => Some(l),
        _ => None,
    });
    let Some(link) = link else { return Ok(None) };
    let veth = link.attributes.iter().any(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth))),
        _ => false,
    });
    Ok(link
        .attributes
        .into_iter()
        .find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n),
            _ => None,
        })
        .filter(|_| veth))
}

/// Whether the network namespace at `netns` holds `addr` on any of its interfaces.
///
/// # Errors
/// The namespace cannot be entered or its addresses read.
pub fn netns_has_addr(netns: &str, addr: IpAddr) -> Result<bool, ApplyError> {
    use netlink_packet_route::address::{AddressAttribute, AddressMessage};
    let mut nl = Nl::open_in(Some(netns))?;
    let mut q = AddressMessage::default();
    q.header.family = family_of(addr);
    let found =
        nl.call("dump addresses", RouteNetlinkMessage::GetAddress(q), NLM_F_DUMP)?.into_iter().any(|m| match m {
            RouteNetlinkMessage::NewAddress(a) => a.attributes.iter().any(|x| match x {
                AddressAttribute::Address(v) | AddressAttribute::Local(v) => *v == addr,
                _ => false,
            }),
            _ => false,
        });
    Ok(found)
}

/// Whether a link named `name` exists in the caller's namespace (one lookup, no dump).
///
/// # Errors
/// The kernel refused for another reason than "no such device".
pub fn link_exists(name: &str) -> Result<bool, ApplyError> {
    let mut nl = Nl::open()?;
    match nl.index(name) {
        Ok(_) => Ok(true),
        Err(e) if e.detail.contains("No such") || e.detail.contains("no such") => Ok(false),
        Err(e) => Err(e),
    }
}

/// One link, looked up by the name or index `q` carries; `None` when there is no such link.
fn get_link(nl: &mut Nl, what: &str, q: LinkMessage) -> Result<Option<LinkMessage>, ApplyError> {
    match nl.call(what, RouteNetlinkMessage::GetLink(q), 0) {
        Ok(r) => Ok(r.into_iter().find_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(l),
            _ => None,
        })),
        Err(e) if e.detail.contains("No such") || e.detail.contains("no such") => Ok(None),
        Err(e) => Err(e),
    }
}

/// Takes the link `name` down in the caller's namespace: the kernel drops every route over it at
/// once (IPv4 and IPv6), and its veth peer loses its carrier, so nothing on the host carries a
/// pod's address any more. Deleting the link would wait for an RCU grace period (about 20 ms);
/// DEL leaves that to the pod namespace's own teardown. Returns its peer's interface index (in
/// the peer's namespace) with its own when it has one; `Ok(None)` too when the link was already
/// gone.
///
/// # Errors
/// The kernel refused for another reason than "not found".
pub fn retire_link(name: &str) -> Result<Option<(u32, u32)>, ApplyError> {
    let mut nl = Nl::open()?;
    let mut q = LinkMessage::default();
    q.attributes.push(LinkAttribute::IfName(name.to_string()));
    let Some(link) = get_link(&mut nl, &format!("find {name}"), q)? else { return Ok(None) };
    let peer = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Link(i) => Some(*i),
        _ => None,
    });
    let mut m = LinkMessage::default();
    m.header.index = link.header.index;
    m.header.flags = LinkFlags::empty();
    m.header.change_mask = LinkFlags::Up;
    match nl.call(&format!("take link {name} down"), RouteNetlinkMessage::SetLink(m), 0) {
        Ok(_) => Ok(peer.map(|p| (link.header.index, p))),
        Err(e) if e.detail.contains("No such") => Ok(None),
        Err(e) => Err(e),
    }
}

/// The pod end of a retired veth, interface `index` in the pod's namespace at `netns`: when it
/// is the peer of host interface `host` (its link says so) and still named `ifname`, it goes
/// down and is renamed `pdel<index>`, so the runtime may ADD `ifname` again in the same
/// namespace. Any other interface there (another namespace's, another veth's) is left alone.
/// The pair goes with the namespace. False when nothing was changed.
///
/// # Errors
/// The namespace cannot be entered, or the kernel refused for another reason than "not found".
pub fn retire_pod_end(netns: &str, index: u32, host: u32, ifname: &str) -> Result<bool, ApplyError> {
    let mut nl = Nl::open_in(Some(netns))?;
    let mut q = LinkMessage::default();
    q.header.index = index;
    let found = get_link(&mut nl, &format!("find interface {index} in {netns}"), q)?;
    let ours = found.is_some_and(|l| {
        l.attributes.iter().any(|a| matches!(a, LinkAttribute::IfName(n) if n == ifname))
            && l.attributes.iter().any(|a| matches!(a, LinkAttribute::Link(i) if *i == host))
    });
    if !ours {
        return Ok(false);
    }
    // Down first: the kernel renames only an interface that is down.
    let mut down = LinkMessage::default();
    down.header.index = index;
    down.header.flags = LinkFlags::empty();
    down.header.change_mask = LinkFlags::Up;
    let mut rename = LinkMessage::default();
    rename.header.index = index;
    rename.attributes.push(LinkAttribute::IfName(format!("pdel{index}")));
    for (what, m) in [("take down", down), ("rename", rename)] {
        match nl.call(&format!("{what} {ifname} in {netns}"), RouteNetlinkMessage::SetLink(m), 0) {
            Ok(_) => {}
            Err(e) if e.detail.contains("No such") => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Removes the link `name` in the namespace at `netns` (a veth takes its peer with it); false
/// when it was already gone.
///
/// # Errors
/// The kernel refused for another reason than "not found".
pub fn remove_link(netns: Option<&str>, name: &str) -> Result<bool, ApplyError> {
    let mut nl = Nl::open_in(netns)?;
    let index = match nl.index(name) {
        Ok(i) => i,
        Err(e) if e.detail.contains("No such") || e.detail.contains("no such") => return Ok(false),
        Err(e) => return Err(e),
    };
    crate::netlink::remove_index(&mut nl, name, index)
}

/// Removes link `index` (read as `name`) in the namespace at `netns`, and no other: a link made
/// under that name since it was read has another index and stays. False when it was already
/// gone.
///
/// # Errors
/// The kernel refused for another reason than "not found".
pub fn remove_link_at(netns: Option<&str>, name: &str, index: u32) -> Result<bool, ApplyError> {
    crate::netlink::remove_index(&mut Nl::open_in(netns)?, name, index)
}
