//! The pod data path applied over rtnetlink from the plugin's own process: one socket in the
//! host namespace, one opened inside the pod's namespace (the thread enters it only to create
//! the socket and returns at once). No process is spawned, which is what keeps an ADD fast.
//!
//! IPv4 pods only; IPv6 pods (and their egress interface) go through [`crate::apply`].

use crate::apply::{ApplyError, SetupError};
use crate::plan::{GATEWAY_V4, PodNet, VETH_QUEUES};
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP_INTR, NLM_F_ECHO, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkHeader,
    NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use nix::sched::{CloneFlags, setns};
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

fn err(what: &str, detail: impl ToString) -> ApplyError {
    ApplyError { what: what.to_string(), detail: detail.to_string() }
}

/// One rtnetlink socket.
pub(crate) struct Nl {
    sock: Socket,
    seq: u32,
}

impl Nl {
    /// A socket in the calling thread's namespace.
    pub(crate) fn open() -> Result<Nl, ApplyError> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(|e| err("netlink socket", e))?;
        sock.bind_auto().map_err(|e| err("netlink bind", e))?;
        sock.connect(&SocketAddr::new(0, 0)).map_err(|e| err("netlink connect", e))?;
        Ok(Nl { sock, seq: 0 })
    }

    /// A socket in the network namespace at `netns` (the caller's own when `None`). The
    /// namespace is entered by a short-lived thread of its own, so no thread of the caller ever
    /// changes namespace; the socket stays bound to the namespace it was made in.
    pub(crate) fn open_in(netns: Option<&str>) -> Result<Nl, ApplyError> {
        let Some(ns) = netns else { return Nl::open() };
        let file = File::open(ns).map_err(|e| err(&format!("netns {ns}"), e))?;
        std::thread::scope(|s| {
            s.spawn(|| {
                setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| err(&format!("enter netns {ns}"), e))?;
                Nl::open()
            })
            .join()
            .unwrap_or_else(|_| Err(err("netlink", "the namespace thread panicked")))
        })
    }

    /// Appends `msg` to `buf` as a request with the next sequence number, asking for an
    /// acknowledgement.
    fn encode(&mut self, msg: RouteNetlinkMessage, flags: u16, buf: &mut Vec<u8>) {
        self.seq += 1;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.seq;
        let mut m = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        m.finalize();
        let at = buf.len();
        buf.resize(at + m.buffer_len(), 0);
        m.serialize(&mut buf[at..]);
    }

    /// Sends one request and returns the messages of the answer; a NACK becomes an error naming
    /// `what` and the errno, and so does a dump the kernel marks interrupted (a change came
    /// while it was read, so it may miss an object: never taken for the whole state).
    pub(crate) fn call(
        &mut self,
        what: &str,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, ApplyError> {
        let mut buf = Vec::new();
        self.encode(msg, flags, &mut buf);
        self.sock.send(&buf, 0).map_err(|e| err(what, e))?;
        let mut out = Vec::new();
        let mut interrupted = false;
        let done = |out, interrupted: bool| {
            if interrupted { Err(err(what, "the dump was interrupted by a change; ask again")) } else { Ok(out) }
        };
        loop {
            let (data, _) = self.sock.recv_from_full().map_err(|e| err(what, e))?;
            let mut off = 0;
            while off < data.len() {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[off..]).map_err(|e| err(what, e))?;
                let len = msg.header.length as usize;
                let seq = msg.header.sequence_number;
                interrupted |= seq == self.seq && msg.header.flags & NLM_F_DUMP_INTR != 0;
                match msg.payload {
                    NetlinkPayload::Error(e) if seq == self.seq => {
                        return match e.code {
                            None => done(out, interrupted),
                            Some(code) => Err(err(what, std::io::Error::from_raw_os_error(-code.get()))),
                        };
                    }
                    NetlinkPayload::Done(_) if seq == self.seq => return done(out, interrupted),
                    NetlinkPayload::InnerMessage(inner) if seq == self.seq => out.push(inner),
                    _ => {}
                }
                if len == 0 {
                    break;
                }
                off += len;
            }
        }
    }

    /// Sends several requests in one datagram (the kernel runs them in order) and waits for
    /// every acknowledgement; the first NACK becomes an error naming its request. The kernel goes
    /// on with the later requests of the datagram after one fails: only for requests whose
    /// failure undoes them all anyway (the caller removes what it made).
    fn call_all(&mut self, reqs: Vec<(&str, RouteNetlinkMessage, u16)>) -> Result<(), ApplyError> {
        self.call_each(reqs)?.into_iter().find_map(Result::err).map_or(Ok(()), Err)
    }

    /// Sends several requests in one datagram (the kernel runs them in order, each whatever
    /// became of the ones before) and returns each one's outcome, in order. The outer error is
    /// the socket's.
    pub(crate) fn call_each(
        &mut self,
        reqs: Vec<(&str, RouteNetlinkMessage, u16)>,
    ) -> Result<Vec<Result<(), ApplyError>>, ApplyError> {
        let first = self.seq + 1;
        let mut buf = Vec::new();
        let mut names = Vec::new();
        for (what, msg, flags) in reqs {
            self.encode(msg, flags, &mut buf);
            names.push(what.to_string());
        }
        let last = self.seq;
        let what = |seq: u32| names.get((seq - first) as usize).map_or("netlink", String::as_str).to_string();
        self.sock.send(&buf, 0).map_err(|e| err(&what(first), e))?;
        let mut outcomes: Vec<Option<Result<(), ApplyError>>> = names.iter().map(|_| None).collect();
        let mut acked = 0;
        while acked < names.len() {
            let (data, _) = self.sock.recv_from_full().map_err(|e| err(&what(first), e))?;
            let mut off = 0;
            while off < data.len() {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[off..])
                    .map_err(|e| err(&what(first), e))?;
                let len = msg.header.length as usize;
                let seq = msg.header.sequence_number;
                if let NetlinkPayload::Error(e) = msg.payload
                    && (first..=last).contains(&seq)
                    && let Some(slot) = outcomes.get_mut((seq - first) as usize)
                    && slot.is_none()
                {
                    acked += 1;
                    *slot = Some(match e.code {
                        None => Ok(()),
                        Some(code) => Err(err(&what(seq), std::io::Error::from_raw_os_error(-code.get()))),
                    });
                }
                if len == 0 {
                    break;
                }
                off += len;
            }
        }
        Ok(outcomes.into_iter().map(|o| o.unwrap_or(Ok(()))).collect())
    }

    pub(crate) fn index(&mut self, name: &str) -> Result<u32, ApplyError> {
        self.link(name).map(|(i, _)| i)
    }

    /// Link `name`'s index and, when it has one, the index of the link it is tied to
    /// (`IFLA_LINK`: a veth's peer, counted in the peer's namespace).
    pub(crate) fn link(&mut self, name: &str) -> Result<(u32, Option<u32>), ApplyError> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        let replies = self.call(&format!("find {name}"), RouteNetlinkMessage::GetLink(m), 0)?;
        link_named(replies, name).ok_or_else(|| err(&format!("find {name}"), "no such link"))
    }
}

/// The index of link `name` among `replies`, and of the link it is tied to (`IFLA_LINK`).
fn link_named(replies: Vec<RouteNetlinkMessage>, name: &str) -> Option<(u32, Option<u32>)> {
    replies.into_iter().find_map(|r| match r {
        RouteNetlinkMessage::NewLink(l)
            if l.attributes.iter().any(|a| matches!(a, LinkAttribute::IfName(n) if n == name)) =>
        {
            let peer = l.attributes.iter().find_map(|a| match a {
                LinkAttribute::Link(i) => Some(*i),
                _ => None,
            });
            Some((l.header.index, peer))
        }
        _ => None,
    })
}

/// Brings link `index` up.
fn up_message(index: u32) -> RouteNetlinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.header.flags = LinkFlags::Up;
    m.header.change_mask = LinkFlags::Up;
    RouteNetlinkMessage::SetLink(m)
}

/// A main-table IPv4 route to `dst` (the default route when `None`), through `gw` or on link
/// `oif`.
fn route_message(
    dst: Option<(Ipv4Addr, u8)>,
    gw: Option<Ipv4Addr>,
    oif: u32,
    scope: RouteScope,
) -> RouteNetlinkMessage {
    let mut r = RouteMessage::default();
    r.header.address_family = AddressFamily::Inet;
    r.header.table = RouteHeader::RT_TABLE_MAIN;
    r.header.protocol = RouteProtocol::Boot;
    r.header.scope = scope;
    r.header.kind = RouteType::Unicast;
    if let Some((d, len)) = dst {
        r.header.destination_prefix_length = len;
        r.attributes.push(RouteAttribute::Destination(RouteAddress::Inet(d)));
    }
    if let Some(g) = gw {
        r.attributes.push(RouteAttribute::Gateway(RouteAddress::Inet(g)));
    }
    r.attributes.push(RouteAttribute::Oif(oif));
    RouteNetlinkMessage::NewRoute(r)
}

fn mac(s: &str) -> Vec<u8> {
    s.split(':').filter_map(|b| u8::from_str_radix(b, 16).ok()).collect()
}

/// The error of a pod whose namespace already has an interface named `CNI_IFNAME`.
pub(crate) fn ifname_taken(p: &PodNet, what: &str, e: &ApplyError) -> ApplyError {
    err(
        what,
        format!(
            "the pod's namespace {} already has an interface named {:?} (CNI_IFNAME): {}",
            p.netns, p.ifname, e.detail
        ),
    )
}

/// Whether the pod's namespace has an interface named `CNI_IFNAME`.
pub(crate) fn pod_has_ifname(p: &PodNet) -> bool {
    Nl::open_in(Some(&p.netns)).and_then(|mut n| n.index(&p.ifname)).is_ok()
}

/// Creates the pod's data path (IPv4) over netlink. On a failure after the veth was made, that
/// veth (by its index: never a link another made under the name since) and the rules of the
/// pod's address are removed again before the error is returned, and the error says whether
/// that succeeded. A name that is taken makes nothing.
///
/// # Errors
/// The step that failed and the kernel's errno, and what is left.
pub fn setup(p: &PodNet) -> Result<(), SetupError> {
    let IpAddr::V4(addr) = p.addr else {
        return Err(SetupError::Undone(err("netlink setup", "IPv6 pods go through the iproute2 path")));
    };
    let undone = SetupError::Undone;
    let pod_ns = File::open(&p.netns).map_err(|e| undone(err(&format!("pod netns {}", p.netns), e)))?;
    let host_ns = File::open("/proc/self/ns/net").map_err(|e| undone(err("own netns", e)))?;
    let mut host = Nl::open().map_err(undone)?;
    // The pod's socket: enter its namespace just to create it, then come back.
    setns(&pod_ns, CloneFlags::CLONE_NEWNET).map_err(|e| undone(err("enter pod netns", e)))?;
    let pod = Nl::open();
    setns(&host_ns, CloneFlags::CLONE_NEWNET).map_err(|e| undone(err("return to host netns", e)))?;
    let mut pod = pod.map_err(undone)?;

    // The veth pair, created on the host with its peer placed in the pod's namespace; the host
    // end up from the start. (Not the peer: the kernel configures it before the pair is joined,
    // and a veth without its peer refuses to go up, ENOTCONN.)
    // One queue each way on both ends (see [`crate::plan::VETH_QUEUES`]).
    let queues = [LinkAttribute::NumTxQueues(VETH_QUEUES), LinkAttribute::NumRxQueues(VETH_QUEUES)];
    let mut peer = LinkMessage::default();
    peer.attributes.push(LinkAttribute::IfName(p.ifname.clone()));
    peer.attributes.push(LinkAttribute::Address(mac(&p.pod_mac)));
    peer.attributes.push(LinkAttribute::Mtu(p.mtu));
    peer.attributes.extend(queues.clone());
    peer.attributes.push(LinkAttribute::NetNsFd(pod_ns.as_raw_fd()));
    let mut veth = LinkMessage::default();
    veth.header.flags = LinkFlags::Up;
    veth.header.change_mask = LinkFlags::Up;
    veth.attributes.push(LinkAttribute::IfName(p.host_veth.clone()));
    veth.attributes.push(LinkAttribute::Address(mac(&p.host_mac)));
    veth.attributes.push(LinkAttribute::Mtu(p.mtu));
    veth.attributes.extend(queues);
    veth.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
    ]));
    // The kernel echoes the new host end (NLM_F_ECHO, Linux 6.2 and later) with both indexes:
    // its own, and its peer's (IFLA_LINK, an index in the pod's namespace, where the peer was
    // just created). An older kernel echoes nothing, and one lookup gives the same.
    let echoed =
        match host.call("create veth", RouteNetlinkMessage::NewLink(veth), NLM_F_CREATE | NLM_F_EXCL | NLM_F_ECHO) {
            Ok(replies) => link_named(replies, &p.host_veth),
            Err(e) => {
                // Say which name is taken: the host's, or the pod's interface (the runtime's
                // CNI_IFNAME). A host name that cannot be told free counts as taken (the answer
                // may have been lost after the kernel made the pair): whose the link is, is for
                // the caller to find out.
                return Err(match host.index(&p.host_veth) {
                    Err(g) if g.detail.contains("no such") || g.detail.contains("No such") => {
                        if pod.index(&p.ifname).is_ok() {
                            undone(ifname_taken(p, "create veth", &e))
                        } else {
                            undone(e)
                        }
                    }
                    _ => SetupError::Taken(err(
                        "create veth",
                        format!("host interface {} already exists: {}", p.host_veth, e.detail),
                    )),
                });
            }
        };
    // Made: from here on a failure removes the pair, by its index.
    let (hi, peer) = match echoed {
        Some(indexes) => indexes,
        None => match host.link(&p.host_veth) {
            Ok(indexes) => indexes,
            Err(e) => {
                // An older kernel, and the new veth cannot be found: it is this call's, by name.
                let undo = crate::apply::teardown(Some(&p.host_veth), &[]);
                return Err(SetupError::after_undo(e, undo));
            }
        },
    };

    let result = (|| {
        let gw: Ipv4Addr = GATEWAY_V4.parse().expect("literal");
        let pi = match peer {
            Some(i) => i,
            None => pod.index(&p.ifname)?,
        };
        let mut a = AddressMessage::default();
        a.header.family = AddressFamily::Inet;
        a.header.prefix_len = 32;
        a.header.index = pi;
        a.attributes.push(AddressAttribute::Local(IpAddr::V4(addr)));
        a.attributes.push(AddressAttribute::Address(IpAddr::V4(addr)));
        let mut n = NeighbourMessage::default();
        n.header.family = AddressFamily::Inet;
        n.header.ifindex = pi;
        n.header.state = NeighbourState::Permanent;
        n.header.kind = RouteType::Unicast;
        n.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(gw)));
        n.attributes.push(NeighbourAttribute::LinkLayerAddress(mac(&p.host_mac)));
        // One datagram for the pod's side: the kernel brings the interface up, then adds the
        // gateway's route before the default route that goes through it.
        pod.call_all(vec![
            ("pod interface up", up_message(pi), 0),
            ("pod address", RouteNetlinkMessage::NewAddress(a), NLM_F_CREATE | NLM_F_EXCL),
            (
                "pod gateway route",
                route_message(Some((gw, 32)), None, pi, RouteScope::Link),
                NLM_F_CREATE | NLM_F_REPLACE,
            ),
            (
                "pod default route",
                route_message(None, Some(gw), pi, RouteScope::Universe),
                NLM_F_CREATE | NLM_F_REPLACE,
            ),
            ("pod gateway neighbour", RouteNetlinkMessage::NewNeighbour(n), NLM_F_CREATE | NLM_F_REPLACE),
        ])?;
        // One datagram for the host's side, the route and the rules, in the usual case: no rule
        // of this address is left from before (otherwise they are made exact one by one).
        let route = route_message(Some((addr, 32)), None, hi, RouteScope::Link);
        crate::host::set_route_and_rules(&mut host, ("host route to the pod", route), p.addr, p.table)
    })();
    result.map_err(|e| {
        // Only what this call made: the veth it just created (its peer and routes go with it),
        // by its index, and the rules of this pod's address (unless it is routed already).
        let mut errors: Vec<ApplyError> = remove_index(&mut host, &p.host_veth, hi).err().into_iter().collect();
        // An address routed already is another's, and so are its rules.
        if !crate::host::routed_already(&e) {
            errors.extend(crate::host::remove_pod_rules(None, p.addr).err());
        }
        SetupError::after_undo(e, if errors.is_empty() { Ok(()) } else { Err(errors) })
    })
}

/// Removes link `index` (named `name` when it was read); gone already counts as removed.
pub(crate) fn remove_index(nl: &mut Nl, name: &str, index: u32) -> Result<bool, ApplyError> {
    let mut m = LinkMessage::default();
    m.header.index = index;
    match nl.call(&format!("remove link {name}"), RouteNetlinkMessage::DelLink(m), 0) {
        Ok(_) => Ok(true),
        Err(e) if e.detail.contains("No such") => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` on a thread of its own in a fresh network namespace (root only; without root
    /// the test is skipped unless REQUIRE_PRIVILEGED=1).
    fn in_new_netns(f: impl FnOnce() + Send) {
        let required = std::env::var("REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1");
        std::thread::scope(|s| {
            s.spawn(|| {
                if let Err(e) = nix::sched::unshare(CloneFlags::CLONE_NEWNET) {
                    assert!(!required, "REQUIRE_PRIVILEGED=1 but no network namespace of its own: {e}");
                    eprintln!("skipping: needs root ({e})");
                    return;
                }
                f();
            })
            .join()
            .expect("the test thread");
        });
    }

    #[test]
    fn a_batch_names_the_request_the_kernel_refused_and_reads_every_answer() {
        in_new_netns(|| {
            let mut nl = Nl::open().unwrap();
            let lo = nl.index("lo").unwrap();
            nl.call("lo up", up_message(lo), 0).unwrap();
            let dst = |last: u8| Some((Ipv4Addr::new(10, 9, 0, last), 32));
            nl.call_all(vec![
                ("first", route_message(dst(1), None, lo, RouteScope::Link), NLM_F_CREATE | NLM_F_EXCL),
                ("second", route_message(dst(2), None, lo, RouteScope::Link), NLM_F_CREATE | NLM_F_EXCL),
            ])
            .unwrap();
            // The second request names a link that is not there: its name comes back, the
            // others' answers are read too.
            let e = nl
                .call_all(vec![
                    ("third", route_message(dst(3), None, lo, RouteScope::Link), NLM_F_CREATE | NLM_F_EXCL),
                    ("to no link", route_message(dst(4), None, 9999, RouteScope::Link), NLM_F_CREATE | NLM_F_EXCL),
                    ("fifth", route_message(dst(5), None, lo, RouteScope::Link), NLM_F_CREATE | NLM_F_EXCL),
                ])
                .unwrap_err();
            assert_eq!(e.what, "to no link", "{e:?}");
            // Nothing of the batch is left unread: the next request gets its own answer.
            let again = nl.call("again", route_message(dst(1), None, lo, RouteScope::Link), NLM_F_CREATE | NLM_F_EXCL);
            assert!(again.is_err_and(|e| e.what == "again" && e.detail.contains("exists")));
            nl.call("sixth", route_message(dst(6), None, lo, RouteScope::Link), NLM_F_CREATE | NLM_F_EXCL).unwrap();
        });
    }

    /// The kernel's echo of a created veth gives the indexes a lookup would (Linux 6.2 and
    /// later echo it; setup looks the link up itself on an older kernel).
    #[test]
    fn a_created_veths_echo_names_its_index_and_its_peers() {
        in_new_netns(|| {
            let mut nl = Nl::open().unwrap();
            let own = File::open("/proc/thread-self/ns/net").unwrap();
            let mut peer = LinkMessage::default();
            peer.attributes.push(LinkAttribute::IfName("echop".into()));
            peer.attributes.push(LinkAttribute::NetNsFd(own.as_raw_fd()));
            let mut veth = LinkMessage::default();
            veth.attributes.push(LinkAttribute::IfName("echoh".into()));
            veth.attributes.push(LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
            ]));
            let replies =
                nl.call("create", RouteNetlinkMessage::NewLink(veth), NLM_F_CREATE | NLM_F_EXCL | NLM_F_ECHO).unwrap();
            let echoed = link_named(replies, "echoh");
            let (hi, pi) = nl.link("echoh").unwrap();
            assert_eq!(pi, Some(nl.index("echop").unwrap()));
            let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
            let mut v = release.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse::<u32>().ok());
            if (v.next().unwrap_or(0), v.next().unwrap_or(0)) >= (6, 2) {
                assert_eq!(echoed, Some((hi, pi)), "Linux {release}");
            } else {
                assert!(echoed.is_none_or(|e| e == (hi, pi)), "Linux {release}");
            }
        });
    }

    /// The host's route and rules in one datagram: exact whatever rules of the address were
    /// there before (none: the batch alone; stale or doubled ones: made exact one by one).
    #[test]
    fn the_host_route_and_rules_are_exact_whatever_was_there() {
        in_new_netns(|| {
            let mut nl = Nl::open().unwrap();
            let lo = nl.index("lo").unwrap();
            nl.call("lo up", up_message(lo), 0).unwrap();
            let rules = |addr: &str| -> Vec<(u32, u32)> {
                let mut v: Vec<(u32, u32)> = crate::host::scan(None)
                    .unwrap()
                    .rules
                    .iter()
                    .filter(|r| r.addr.to_string() == addr)
                    .map(|r| (r.priority, r.table))
                    .collect();
                v.sort_unstable();
                v
            };
            // Each time as a new setup finds the host: no route to the address (its old veth,
            // and the route with it, went), whatever rules.
            let set = |nl: &mut Nl, last: u8, table: u32| {
                let a = Ipv4Addr::new(10, 9, 1, last);
                let route = || route_message(Some((a, 32)), None, lo, RouteScope::Link);
                if let RouteNetlinkMessage::NewRoute(old) = route() {
                    let _ = nl.call("old route", RouteNetlinkMessage::DelRoute(old), 0);
                }
                crate::host::set_route_and_rules(nl, ("route", route()), IpAddr::V4(a), table).unwrap();
            };
            // Nothing before: both rules.
            set(&mut nl, 1, 3);
            assert_eq!(
                rules("10.9.1.1"),
                vec![(crate::plan::RULE_TO_POD, crate::plan::MAIN_TABLE), (crate::plan::RULE_FROM_POD, 3)]
            );
            // Again, over its own rules, then to the main table: exact each time.
            set(&mut nl, 1, 3);
            assert_eq!(
                rules("10.9.1.1"),
                vec![(crate::plan::RULE_TO_POD, crate::plan::MAIN_TABLE), (crate::plan::RULE_FROM_POD, 3)]
            );
            set(&mut nl, 1, crate::plan::MAIN_TABLE);
            assert_eq!(rules("10.9.1.1"), vec![(crate::plan::RULE_TO_POD, crate::plan::MAIN_TABLE)]);
            // Stale rules towards other tables, two at the to-pod priority.
            for (prio, table) in
                [(crate::plan::RULE_TO_POD, 78), (crate::plan::RULE_TO_POD, 79), (crate::plan::RULE_FROM_POD, 77)]
            {
                let mut r = netlink_packet_route::rule::RuleMessage::default();
                r.header.family = AddressFamily::Inet;
                r.header.action = netlink_packet_route::rule::RuleAction::ToTable;
                if prio == crate::plan::RULE_TO_POD {
                    r.header.dst_len = 32;
                    r.attributes
                        .push(netlink_packet_route::rule::RuleAttribute::Destination("10.9.1.2".parse().unwrap()));
                } else {
                    r.header.src_len = 32;
                    r.attributes.push(netlink_packet_route::rule::RuleAttribute::Source("10.9.1.2".parse().unwrap()));
                }
                r.attributes.push(netlink_packet_route::rule::RuleAttribute::Priority(prio));
                r.attributes.push(netlink_packet_route::rule::RuleAttribute::Table(table));
                nl.call("stale rule", RouteNetlinkMessage::NewRule(r), NLM_F_CREATE | NLM_F_EXCL).unwrap();
            }
            set(&mut nl, 2, 4);
            assert_eq!(
                rules("10.9.1.2"),
                vec![(crate::plan::RULE_TO_POD, crate::plan::MAIN_TABLE), (crate::plan::RULE_FROM_POD, 4)]
            );
            // The address routed already (another pod's): refused, and its rules stay as they are.
            let a = Ipv4Addr::new(10, 9, 1, 2);
            let route = route_message(Some((a, 32)), None, lo, RouteScope::Link);
            let e = crate::host::set_route_and_rules(&mut nl, ("route", route), IpAddr::V4(a), 9).unwrap_err();
            assert!(crate::host::routed_already(&e), "{e:?}");
            assert!(e.detail.contains("10.9.1.2 is routed on this host already (dev lo)"), "{e:?}");
            assert_eq!(
                rules("10.9.1.2"),
                vec![(crate::plan::RULE_TO_POD, crate::plan::MAIN_TABLE), (crate::plan::RULE_FROM_POD, 4)]
            );
        });
    }
}
