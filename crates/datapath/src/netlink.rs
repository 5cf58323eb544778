//! The pod data path applied over rtnetlink from the plugin's own process: one socket in the
//! host namespace, one opened inside the pod's namespace (the thread enters it only to create
//! the socket and returns at once). No process is spawned, which is what keeps an ADD fast.
//!
//! IPv4 pods only; IPv6 pods (and their egress interface) go through [`crate::apply`].

use crate::apply::ApplyError;
use crate::plan::{GATEWAY_V4, PodNet};
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
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

    /// Sends one request and returns the messages of the answer; a NACK becomes an error naming
    /// `what` and the errno.
    pub(crate) fn call(
        &mut self,
        what: &str,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, ApplyError> {
        self.seq += 1;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.seq;
        let mut m = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        m.finalize();
        let mut buf = vec![0; m.buffer_len()];
        m.serialize(&mut buf);
        self.sock.send(&buf, 0).map_err(|e| err(what, e))?;
        let mut out = Vec::new();
        loop {
            let (data, _) = self.sock.recv_from_full().map_err(|e| err(what, e))?;
            let mut off = 0;
            while off < data.len() {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[off..]).map_err(|e| err(what, e))?;
                let len = msg.header.length as usize;
                let seq = msg.header.sequence_number;
                match msg.payload {
                    NetlinkPayload::Error(e) if seq == self.seq => {
                        return match e.code {
                            None => Ok(out),
                            Some(code) => Err(err(what, std::io::Error::from_raw_os_error(-code.get()))),
                        };
                    }
                    NetlinkPayload::Done(_) if seq == self.seq => return Ok(out),
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

    pub(crate) fn index(&mut self, name: &str) -> Result<u32, ApplyError> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        let replies = self.call(&format!("find {name}"), RouteNetlinkMessage::GetLink(m), 0)?;
        replies
            .into_iter()
            .find_map(|r| match r {
                RouteNetlinkMessage::NewLink(l) => Some(l.header.index),
                _ => None,
            })
            .ok_or_else(|| err(&format!("find {name}"), "no such link"))
    }

    fn up(&mut self, index: u32, what: &str) -> Result<(), ApplyError> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        self.call(what, RouteNetlinkMessage::SetLink(m), 0).map(|_| ())
    }

    fn route(
        &mut self,
        what: &str,
        dst: Option<(Ipv4Addr, u8)>,
        gw: Option<Ipv4Addr>,
        oif: u32,
        scope: RouteScope,
    ) -> Result<(), ApplyError> {
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
        self.call(what, RouteNetlinkMessage::NewRoute(r), NLM_F_CREATE | NLM_F_REPLACE).map(|_| ())
    }
}

fn mac(s: &str) -> Vec<u8> {
    s.split(':').filter_map(|b| u8::from_str_radix(b, 16).ok()).collect()
}

/// Creates the pod's data path (IPv4) over netlink. On a failure, the veth (and with it the
/// pod end and the host route) is deleted again before the error is returned.
///
/// # Errors
/// The step that failed and the kernel's errno.
pub fn setup(p: &PodNet) -> Result<(), ApplyError> {
    let IpAddr::V4(addr) = p.addr else {
        return Err(err("netlink setup", "IPv6 pods go through the iproute2 path"));
    };
    let pod_ns = File::open(&p.netns).map_err(|e| err(&format!("pod netns {}", p.netns), e))?;
    let host_ns = File::open("/proc/self/ns/net").map_err(|e| err("own netns", e))?;
    let mut host = Nl::open()?;
    // The pod's socket: enter its namespace just to create it, then come back.
    setns(&pod_ns, CloneFlags::CLONE_NEWNET).map_err(|e| err("enter pod netns", e))?;
    let pod = Nl::open();
    setns(&host_ns, CloneFlags::CLONE_NEWNET).map_err(|e| err("return to host netns", e))?;
    let mut pod = pod?;

    // The veth pair, created on the host with its peer placed in the pod's namespace.
    let mut peer = LinkMessage::default();
    peer.attributes.push(LinkAttribute::IfName(p.ifname.clone()));
    peer.attributes.push(LinkAttribute::Address(mac(&p.pod_mac)));
    peer.attributes.push(LinkAttribute::Mtu(p.mtu));
    peer.attributes.push(LinkAttribute::NetNsFd(pod_ns.as_raw_fd()));
    let mut veth = LinkMessage::default();
    veth.attributes.push(LinkAttribute::IfName(p.host_veth.clone()));
    veth.attributes.push(LinkAttribute::Address(mac(&p.host_mac)));
    veth.attributes.push(LinkAttribute::Mtu(p.mtu));
    veth.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
    ]));
    host.call("create veth", RouteNetlinkMessage::NewLink(veth), NLM_F_CREATE | NLM_F_EXCL)?;

    let result = (|| {
        let gw: Ipv4Addr = GATEWAY_V4.parse().expect("literal");
        let pi = pod.index(&p.ifname)?;
        pod.up(pi, "pod interface up")?;
        let mut a = AddressMessage::default();
        a.header.family = AddressFamily::Inet;
        a.header.prefix_len = 32;
        a.header.index = pi;
        a.attributes.push(AddressAttribute::Local(IpAddr::V4(addr)));
        a.attributes.push(AddressAttribute::Address(IpAddr::V4(addr)));
        pod.call("pod address", RouteNetlinkMessage::NewAddress(a), NLM_F_CREATE | NLM_F_EXCL)?;
        pod.route("pod gateway route", Some((gw, 32)), None, pi, RouteScope::Link)?;
        pod.route("pod default route", None, Some(gw), pi, RouteScope::Universe)?;
        let mut n = NeighbourMessage::default();
        n.header.family = AddressFamily::Inet;
        n.header.ifindex = pi;
        n.header.state = NeighbourState::Permanent;
        n.header.kind = RouteType::Unicast;
        n.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(gw)));
        n.attributes.push(NeighbourAttribute::LinkLayerAddress(mac(&p.host_mac)));
        pod.call("pod gateway neighbour", RouteNetlinkMessage::NewNeighbour(n), NLM_F_CREATE | NLM_F_REPLACE)?;
        let hi = host.index(&p.host_veth)?;
        host.up(hi, "host veth up")?;
        host.route("host route to the pod", Some((addr, 32)), None, hi, RouteScope::Link)?;
        crate::host::set_pod_rules(&mut host, p.addr, p.table)
    })();
    if result.is_err() {
        // Only what this call made: the veth it just created (its peer and routes go with it) and
        // the rules of this pod's address.
        let _ = crate::apply::teardown(Some(&p.host_veth), &[p.addr]);
    }
    result
}
