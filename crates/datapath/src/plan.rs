//! The data path of one pod as operations, computed from its lease. Pure.

use std::fmt;
use std::net::IpAddr;

/// The pod-side gateway (the "169.254.1.1 trick": the host veth answers for it by a permanent
/// neighbour entry, so it carries no address).
pub const GATEWAY_V4: &str = "169.254.1.1";
/// Priority of the to-pod rule.
pub const RULE_TO_POD: u32 = 512;
/// Priority of the from-pod rule.
pub const RULE_FROM_POD: u32 = 1536;
/// The main route table.
pub const MAIN_TABLE: u32 = 254;

/// The IPv4 egress interface of an IPv6 pod (the VPC CNI's `egress-cni`): a second veth with a
/// node-local address, SNATed to the node's IPv4 on the way out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Egress {
    /// The pod's node-local IPv4 (in 169.254.172.0/22).
    pub addr: std::net::Ipv4Addr,
    /// Host-side veth.
    pub host_veth: String,
    /// Host-side MAC.
    pub host_mac: String,
    /// Pod-side MAC.
    pub pod_mac: String,
}

/// Transmit and receive queues of each end of a pod's veth. The kernel's default is one per
/// possible CPU (up to 4,096), and every queue is registered with its own sysfs objects: making a
/// pair took 2.05 ms with 96 queues, 0.83 ms with 32 and 0.25 ms with one (`BENCHMARKS.md`). A
/// veth without XDP hands every packet to the receiving CPU's backlog whatever its queue count,
/// so one queue spreads traffic over the CPUs as before.
pub const VETH_QUEUES: u32 = 1;

/// Name of the egress interface inside the pod.
pub const EGRESS_IF: &str = "v4if0";
/// Its gateway.
pub const EGRESS_GATEWAY: &str = "169.254.172.1";

/// Everything that decides one pod's data path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodNet {
    /// The pod's netns path.
    pub netns: String,
    /// Interface name inside the pod.
    pub ifname: String,
    /// Host-side veth name.
    pub host_veth: String,
    /// Host-side veth MAC.
    pub host_mac: String,
    /// Pod-side MAC.
    pub pod_mac: String,
    /// The pod's address.
    pub addr: IpAddr,
    /// MTU.
    pub mtu: u32,
    /// Route table of the pod's ENI (254 for the primary).
    pub table: u32,
    /// IPv4 egress for an IPv6 pod.
    pub egress: Option<Egress>,
}

/// The host veth name: the prefix and the first 11 hex digits of SHA-1 of `key` (the VPC CNI
/// hashes `namespace.podname`; without Kubernetes names, the container id), at most 15 bytes.
pub fn host_veth_name(prefix: &str, key: &str) -> String {
    let hex = sha1_smol::Sha1::from(key).digest().to_string();
    let keep = 15usize.saturating_sub(prefix.len()).min(11);
    format!("{prefix}{}", &hex[..keep])
}

/// What a pod's host veth name is hashed from: the VPC CNI's `namespace.name` for a pod's
/// `eth0` (tools that find a pod's veth by that hash keep working), else the container id, and
/// for any other interface the container id and the interface. A container id that reads as a
/// `namespace.name` (`default.web`) names that pod's veth: the plugin then holds that pod's lock
/// too (`serial::keys`), and the later of the two waits while the veth carries the other's
/// address. The names are podipd's to compute, from its checkpoint, so they never change for a
/// pod that is running.
pub fn veth_key(pod: Option<(&str, &str)>, container_id: &str, ifname: &str) -> String {
    match (pod, ifname) {
        (Some((ns, name)), "eth0") => format!("{ns}.{name}"),
        (_, "eth0") => container_id.to_string(),
        _ => format!("{container_id}/{ifname}"),
    }
}

/// Whether `name` has the shape of a host veth podip makes with `prefix`: the prefix, then as
/// many lowercase hex digits as [`host_veth_name`] puts after it.
pub fn is_pod_veth_name(prefix: &str, name: &str) -> bool {
    let keep = 15usize.saturating_sub(prefix.len()).min(11);
    name.strip_prefix(prefix)
        .is_some_and(|h| h.len() == keep && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// Whether `name` has the shape of an IPv6 pod's egress veth (see [`egress_veth_name`]).
pub fn is_egress_veth_name(name: &str) -> bool {
    is_pod_veth_name("v4", name)
}

/// The host end of an IPv6 pod's IPv4 egress veth, named after its main host veth.
pub fn egress_veth_name(host_veth: &str) -> String {
    let hex = sha1_smol::Sha1::from(host_veth).digest().to_string();
    format!("v4{}", &hex[..11])
}

/// A locally administered unicast MAC derived from the host veth name, stable across retries.
pub fn host_mac(host_veth: &str) -> String {
    let d = sha1_smol::Sha1::from(host_veth).digest().bytes();
    let first = (d[0] & 0xfe) | 0x02;
    format!("{first:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", d[1], d[2], d[3], d[4], d[5])
}

/// One iproute2 batch line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line(pub String);

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn host_len(addr: &IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

/// Operations inside the pod's netns: the veth pair (its peer moved to the netns of process
/// `host_pid`), address, routes, neighbour. Every interface name comes after `name` or `dev`,
/// where iproute2 takes the next word as it is (`CNI_IFNAME=up` or `n` is a name, not a
/// keyword or an abbreviation of one).
pub fn pod_side(p: &PodNet, host_pid: u32) -> Vec<Line> {
    let l = |s: String| Line(s);
    let q = format!("numtxqueues {VETH_QUEUES} numrxqueues {VETH_QUEUES}");
    let mut v = vec![
        l(format!(
            "link add name {} address {} mtu {} {q} type veth peer name {} mtu {} address {} {q} netns {host_pid}",
            p.ifname, p.pod_mac, p.mtu, p.host_veth, p.mtu, p.host_mac
        )),
        l(format!("link set dev {} up", p.ifname)),
        l(format!(
            "addr add {}/{} dev {}{}",
            p.addr,
            host_len(&p.addr),
            p.ifname,
            if p.addr.is_ipv4() { "" } else { " nodad" }
        )),
    ];
    if p.addr.is_ipv4() {
        v.push(l(format!("route add {GATEWAY_V4}/32 dev {} scope link", p.ifname)));
        v.push(l(format!("route add default via {GATEWAY_V4} dev {}", p.ifname)));
        v.push(l(format!("neigh add {GATEWAY_V4} lladdr {} dev {} nud permanent", p.host_mac, p.ifname)));
    } else {
        v.push(l(format!("route add default via fe80::1 dev {}", p.ifname)));
        v.push(l(format!("neigh add fe80::1 lladdr {} dev {} nud permanent", p.host_mac, p.ifname)));
    }
    if let Some(e) = &p.egress {
        v.push(l(format!(
            "link add name {EGRESS_IF} address {} mtu {} {q} type veth peer name {} mtu {} address {} {q} netns {host_pid}",
            e.pod_mac, p.mtu, e.host_veth, p.mtu, e.host_mac
        )));
        v.push(l(format!("link set dev {EGRESS_IF} up")));
        v.push(l(format!("addr add {}/22 dev {EGRESS_IF}", e.addr)));
        v.push(l(format!("route add default via {EGRESS_GATEWAY} dev {EGRESS_IF}")));
        v.push(l(format!("neigh add {EGRESS_GATEWAY} lladdr {} dev {EGRESS_IF} nud permanent", e.host_mac)));
    }
    v
}

/// Operations on the host: the host veth up, the route to the pod (the policy rules are set
/// exclusively over rtnetlink, see [`crate::host`]).
pub fn host_side(p: &PodNet) -> Vec<Line> {
    let fam = if p.addr.is_ipv4() { "" } else { "-6 " };
    let mut v = vec![
        Line(format!("link set dev {} up", p.host_veth)),
        // `add`, not `replace`: the kernel refuses a second route to one address (see
        // `host::set_route_and_rules`).
        Line(format!("{fam}route add {}/{} dev {} scope link", p.addr, host_len(&p.addr), p.host_veth)),
    ];
    if p.addr.is_ipv6() {
        // No neighbour discovery towards the pod: the host veth's link-local address is still
        // tentative (DAD) when the first packets come, and the pod's MAC is known anyway.
        v.push(Line(format!("-6 neigh replace {} lladdr {} dev {} nud permanent", p.addr, p.pod_mac, p.host_veth)));
    }
    if let Some(e) = &p.egress {
        v.push(Line(format!("link set dev {} up", e.host_veth)));
        v.push(Line(format!("route add {}/32 dev {} scope link", e.addr, e.host_veth)));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> PodNet {
        PodNet {
            netns: "/var/run/netns/p1".into(),
            ifname: "eth0".into(),
            host_veth: host_veth_name("eni", "default.web-0"),
            host_mac: host_mac("enixxxx"),
            pod_mac: host_mac("enixxxx/pod"),
            egress: None,
            addr: "10.0.1.23".parse().unwrap(),
            mtu: 9001,
            table: 2,
        }
    }

    #[test]
    fn veth_names_follow_the_vpc_cni() {
        let n = host_veth_name("eni", "default.web-0");
        assert_eq!(n.len(), 14);
        assert!(n.starts_with("eni"));
        assert_eq!(n, host_veth_name("eni", "default.web-0"), "stable");
        assert_ne!(n, host_veth_name("eni", "default.web-1"));
        assert_eq!(host_veth_name("abcd", "x").len(), 15);
    }

    #[test]
    fn veth_keys_follow_the_vpc_cni_and_never_change() {
        assert_eq!(veth_key(Some(("default", "web")), "c1", "eth0"), "default.web", "the VPC CNI's");
        assert_eq!(veth_key(None, "0123abcd", "eth0"), "0123abcd");
        assert_eq!(veth_key(None, "default.web", "eth0"), "default.web", "a running pod's name never changes");
        assert_eq!(veth_key(Some(("default", "web")), "c1", "net1"), "c1/net1");
    }

    #[test]
    fn pod_side_lines_name_every_interface_after_a_keyword() {
        // Interface names iproute2 would otherwise read as a keyword or its abbreviation.
        for ifname in ["up", "n", "a", "dev", "help", "type"] {
            let p = PodNet { ifname: ifname.into(), addr: "fd00::5".parse().unwrap(), ..pod() };
            for l in pod_side(&p, 1).iter().map(|l| l.0.clone()).filter(|l| l.contains(&format!(" {ifname}"))) {
                assert!(
                    l.contains(&format!("name {ifname} ")) || l.contains(&format!("dev {ifname}")),
                    "{l:?} names {ifname:?} without `name` or `dev` before it"
                );
            }
        }
    }

    #[test]
    fn macs_are_locally_administered_unicast() {
        let m = host_mac("eni0123456789a");
        let first = u8::from_str_radix(&m[..2], 16).unwrap();
        assert_eq!(first & 0x03, 0x02);
        assert_eq!(m.len(), 17);
    }

    #[test]
    fn plans_hold_the_vpc_cni_data_path() {
        let p = pod();
        let pod_ops: Vec<String> = pod_side(&p, 42).iter().map(ToString::to_string).collect();
        assert!(pod_ops[0].contains("type veth peer name eni") && pod_ops[0].ends_with("netns 42"));
        assert!(pod_ops.contains(&"addr add 10.0.1.23/32 dev eth0".to_string()));
        assert!(pod_ops.contains(&"route add default via 169.254.1.1 dev eth0".to_string()));
        assert!(pod_ops.iter().any(|o| o.starts_with("neigh add 169.254.1.1 lladdr ") && o.ends_with("nud permanent")));
        let host: Vec<String> = host_side(&p).iter().map(ToString::to_string).collect();
        assert!(host.contains(&format!("route add 10.0.1.23/32 dev {} scope link", p.host_veth)));
        assert!(!host.iter().any(|l| l.contains("rule")), "rules go over rtnetlink, exclusively");
    }
}
