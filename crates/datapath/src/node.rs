//! The node-level data path the daemon owns: SNAT of pod traffic leaving the VPC (internal SNAT,
//! the VPC CNI's default) with nftables, the connmark that brings NodePort replies back through
//! the primary ENI, and its policy rule. Rendered as one `nft -f` batch that replaces podip's
//! table whole, so applying it twice changes nothing.

use crate::apply::ApplyError;
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// The nftables table podip owns.
pub const TABLE: &str = "podip";
/// The connmark bit (the VPC CNI's `AWS_VPC_K8S_CNI_CONNMARK` default).
pub const CONNMARK: u32 = 0x80;
/// Priority of the fwmark rule.
pub const RULE_CONNMARK: u32 = 1024;

/// How pod traffic leaving the VPC is translated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnatPlan {
    /// Translate to the node's primary address (internal SNAT); false: leave pod addresses.
    pub internal: bool,
    /// The node's primary address.
    pub primary_ip: Ipv4Addr,
    /// The primary interface (NodePort traffic arrives there).
    pub primary_if: String,
    /// Destinations never translated: the VPC's CIDRs and the excluded ones.
    pub exempt: Vec<ipnet::Ipv4Net>,
    /// Host veth prefix (pod traffic enters from these interfaces).
    pub veth_prefix: String,
    /// `fully-random`, `random` or nothing.
    pub port_flag: Option<&'static str>,
    /// IPv6 mode: pods' IPv4 egress from 169.254.172.0/22 is translated to the node's address.
    pub egress_v4: bool,
}

/// The node-local range of IPv6 pods' IPv4 egress interfaces.
pub const EGRESS_V4_RANGE: &str = "169.254.172.0/22";

/// The nft batch: always creates then deletes the table (so a missing one is no error), then,
/// for internal SNAT, defines it again.
pub fn nft_script(p: &SnatPlan) -> String {
    let mut s = format!("table ip {TABLE}\ndelete table ip {TABLE}\n");
    if !p.internal {
        return s;
    }
    let exempt: Vec<String> = p.exempt.iter().map(ToString::to_string).collect();
    let flag = p.port_flag.map(|f| format!(" {f}")).unwrap_or_default();
    s.push_str(&format!(
        "table ip {TABLE} {{\n\
         \tset exempt {{ type ipv4_addr; flags interval; auto-merge; {elements}}}\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         {egress}\
         \t\tip daddr @exempt return\n\
         \t\tfib daddr type local return\n\
         \t\tiifname \"{prefix}*\" snat to {ip}{flag}\n\
         \t}}\n\
         \tchain prerouting {{\n\
         \t\ttype filter hook prerouting priority mangle; policy accept;\n\
         \t\tiifname \"{pif}\" fib daddr type local ct mark set ct mark | {mark:#x}\n\
         \t\tiifname \"{prefix}*\" meta mark set ct mark & {mark:#x}\n\
         \t}}\n\
         }}\n",
        elements = if exempt.is_empty() { String::new() } else { format!("elements = {{ {} }}; ", exempt.join(", ")) },
        egress = if p.egress_v4 {
            format!("\t\tip saddr {EGRESS_V4_RANGE} snat to {}{flag}\n", p.primary_ip)
        } else {
            String::new()
        },
        prefix = p.veth_prefix,
        ip = p.primary_ip,
        pif = p.primary_if,
        mark = CONNMARK,
    ));
    s
}

fn in_netns(netns: Option<&str>, program: &str) -> Command {
    match netns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={ns}")).arg(program);
            c
        }
        None => Command::new(program),
    }
}

fn run(mut c: Command, input: &str, what: &str) -> Result<(), ApplyError> {
    let err = |detail: String| ApplyError { what: what.into(), detail };
    let mut child =
        c.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().map_err(|e| err(e.to_string()))?;
    if let Some(mut i) = child.stdin.take() {
        i.write_all(input.as_bytes()).map_err(|e| err(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| err(e.to_string()))?;
    if out.status.success() { Ok(()) } else { Err(err(String::from_utf8_lossy(&out.stderr).trim().to_string())) }
}

/// Applies the SNAT plan in `netns` (the daemon's own namespace when `None`): the nft table and
/// the fwmark rule (`fwmark 0x80/0x80 lookup main`, priority 1024) for internal SNAT.
///
/// # Errors
/// What nft or ip said.
pub fn apply_snat(p: &SnatPlan, netns: Option<&str>) -> Result<(), ApplyError> {
    // Names reach nft's language: only an interface name's plain alphabet gets there.
    for (what, name) in [("primary interface", &p.primary_if), ("veth prefix", &p.veth_prefix)] {
        if name.is_empty() || name.len() > 15 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        {
            return Err(ApplyError {
                what: "nftables SNAT".into(),
                detail: format!("{what} {name:?} is not an interface name"),
            });
        }
    }
    let mut nft = in_netns(netns, "nft");
    nft.args(["-f", "-"]);
    run(nft, &nft_script(p), "nftables SNAT")?;
    let rule = format!("rule del fwmark {CONNMARK:#x}/{CONNMARK:#x} priority {RULE_CONNMARK}\n");
    let mut ip = in_netns(netns, "ip");
    ip.args(["-force", "-batch", "-"]);
    let _ = run(ip, &rule, "connmark rule");
    if p.internal {
        let mut ip = in_netns(netns, "ip");
        ip.args(["-batch", "-"]);
        run(
            ip,
            &format!("rule add fwmark {CONNMARK:#x}/{CONNMARK:#x} lookup main priority {RULE_CONNMARK}\n"),
            "connmark rule",
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(internal: bool) -> SnatPlan {
        SnatPlan {
            internal,
            primary_ip: Ipv4Addr::new(10, 0, 0, 10),
            primary_if: "eth0".into(),
            exempt: vec!["10.0.0.0/16".parse().unwrap(), "172.16.0.0/12".parse().unwrap()],
            veth_prefix: "eni".into(),
            port_flag: Some("fully-random"),
            egress_v4: false,
        }
    }

    #[test]
    fn internal_snat_translates_to_the_primary_address_outside_the_vpc() {
        let s = nft_script(&plan(true));
        assert!(s.starts_with("table ip podip\ndelete table ip podip\n"), "replaces the table whole");
        assert!(s.contains("elements = { 10.0.0.0/16, 172.16.0.0/12 }"));
        assert!(s.contains("iifname \"eni*\" snat to 10.0.0.10 fully-random"));
        assert!(s.contains("ct mark set ct mark | 0x80"));
    }

    #[test]
    fn external_snat_removes_the_table() {
        assert_eq!(nft_script(&plan(false)), "table ip podip\ndelete table ip podip\n");
    }

    #[test]
    fn a_real_enis_table_leaves_through_its_interface_via_the_subnet_router() {
        let real = EniLink {
            device_index: 1,
            primary_ip: Ipv4Addr::new(10, 0, 32, 7),
            nic: Some(("ens6".into(), "10.0.32.0/19".parse().unwrap())),
            mtu: 9001,
        };
        let sim = EniLink { device_index: 2, primary_ip: Ipv4Addr::new(10, 0, 0, 9), nic: None, mtu: 9001 };
        let lines = eni_lines(&[real, sim], &[3], "eth0");
        assert_eq!(
            lines[..5],
            [
                "link set ens6 mtu 9001 up",
                "addr replace 10.0.32.7/19 dev ens6",
                "route del 10.0.32.0/19 dev ens6 table main",
                "route replace 10.0.32.1/32 dev ens6 table 2",
                "route replace default via 10.0.32.1 dev ens6 table 2",
            ]
        );
        assert_eq!(lines[5], "link add podip-eni2 type dummy");
        assert!(lines.contains(&"route flush table 4".to_string()));
    }

    #[test]
    fn a_link_is_found_by_its_mac_whatever_its_name() {
        let listing = "1: lo: <LOOPBACK,UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000\\    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00\n\
2: ens5: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 9001 qdisc mq state UP mode DEFAULT group default qlen 1000\\    link/ether 0a:1b:2c:3d:4e:5f brd ff:ff:ff:ff:ff:ff\n\
3: ens6@if4: <BROADCAST,MULTICAST> mtu 9001 qdisc noop state DOWN mode DEFAULT group default qlen 1000\\    link/ether 0a:1b:2c:3d:4e:60 brd ff:ff:ff:ff:ff:ff\n";
        assert_eq!(links_with_mac(listing, "0A:1B:2C:3D:4E:5F"), Ok(Some("ens5".into())));
        assert_eq!(links_with_mac(listing, "0a:1b:2c:3d:4e:60"), Ok(Some("ens6".into())));
        assert_eq!(links_with_mac(listing, "0a:1b:2c:3d:4e:61"), Ok(None));
        let twice = format!(
            "{listing}4: ens5p: <BROADCAST> mtu 1500\\    link/ether 0a:1b:2c:3d:4e:5f brd ff:ff:ff:ff:ff:ff\n"
        );
        assert!(links_with_mac(&twice, "0a:1b:2c:3d:4e:5f").unwrap_err().contains("ens5, ens5p"));
    }
}

/// A secondary ENI as the node's data path sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EniLink {
    /// Device index (table = index + 1).
    pub device_index: u32,
    /// The ENI's own primary address.
    pub primary_ip: Ipv4Addr,
    /// The node's interface of this ENI (found by its MAC) and the ENI's subnet: a real ENI's
    /// route table leaves through it, via the subnet's router. `None` on the simulated VPC,
    /// where no such interface exists: a dummy link stands in for it.
    pub nic: Option<(String, ipnet::Ipv4Net)>,
    /// MTU of a real ENI's interface.
    pub mtu: u32,
}

/// The link name of a secondary ENI on the simulated VPC.
pub fn eni_link_name(device_index: u32) -> String {
    format!("podip-eni{device_index}")
}

/// The VPC router's address in `subnet`: its first host (EC2 reserves it for the router).
pub fn subnet_router(subnet: ipnet::Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()) + 1)
}

/// The node's interface whose MAC is `mac` (case ignored), in `netns`.
///
/// # Errors
/// `ip` cannot list the links.
pub fn link_by_mac(mac: &str, netns: Option<&str>) -> Result<Option<String>, ApplyError> {
    let mut c = in_netns(netns, "ip");
    c.args(["-o", "link", "show"]);
    let out = c.output().map_err(|e| ApplyError { what: "links".into(), detail: e.to_string() })?;
    if !out.status.success() {
        return Err(ApplyError { what: "links".into(), detail: String::from_utf8_lossy(&out.stderr).trim().into() });
    }
    links_with_mac(&String::from_utf8_lossy(&out.stdout), mac)
        .map_err(|detail| ApplyError { what: "links".into(), detail })
}

/// Whether route table `table` holds any route in `netns` (a real ENI's table is emptied by the
/// kernel when its interface goes down).
pub fn table_has_routes(table: u32, netns: Option<&str>) -> bool {
    let mut c = in_netns(netns, "ip");
    c.args(["-4", "route", "show", "table", &table.to_string()]);
    c.output().is_ok_and(|o| o.status.success() && !o.stdout.is_empty())
}

/// In `ip -o link show` output, the name of the link with `mac`; several such links are an
/// error (which one carries the ENI cannot be told).
fn links_with_mac(listing: &str, mac: &str) -> Result<Option<String>, String> {
    let names: Vec<String> = listing
        .lines()
        .filter_map(|l| {
            let ether = l.split("link/ether ").nth(1)?.split_whitespace().next()?;
            if !ether.eq_ignore_ascii_case(mac) {
                return None;
            }
            let name = l.split(": ").nth(1)?;
            Some(name.split('@').next().unwrap_or(name).to_string())
        })
        .collect();
    match names.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.clone())),
        many => Err(format!("several interfaces have the MAC {mac}: {}", many.join(", "))),
    }
}

/// Lines that make each secondary ENI a link of the node (a dummy carrying its primary address,
/// on the simulated VPC) with its route table (`device + 1`) leading out through the node's
/// fabric interface, and remove links of ENIs that are gone (`gone` device indexes).
pub fn eni_lines(enis: &[EniLink], gone: &[u32], fabric_if: &str) -> Vec<String> {
    let mut v = Vec::new();
    for e in enis {
        let table = e.device_index + 1;
        match &e.nic {
            // A real ENI (the VPC CNI's setupENINetwork): its interface up with the ENI's
            // address, and its table's default route via the subnet's router through it.
            Some((nic, subnet)) => {
                let gw = subnet_router(*subnet);
                v.push(format!("link set {nic} mtu {} up", e.mtu));
                v.push(format!("addr replace {}/{} dev {nic}", e.primary_ip, subnet.prefix_len()));
                // The address's connected route in main would send the node's own traffic for the
                // whole subnet out of this ENI, from its address: only its table leads there.
                v.push(format!("route del {} dev {nic} table main", subnet.trunc()));
                v.push(format!("route replace {gw}/32 dev {nic} table {table}"));
                v.push(format!("route replace default via {gw} dev {nic} table {table}"));
            }
            None => {
                let link = eni_link_name(e.device_index);
                v.push(format!("link add {link} type dummy"));
                v.push(format!("addr replace {}/32 dev {link}", e.primary_ip));
                v.push(format!("link set {link} up"));
                v.push(format!("route replace default dev {fabric_if} table {table}"));
            }
        }
    }
    for d in gone {
        // A real ENI's interface goes with the detach; the stand-in of a simulated one is ours.
        v.push(format!("link del {}", eni_link_name(*d)));
        v.push(format!("route flush table {}", d + 1));
    }
    v
}

/// Applies [`eni_lines`] in `netns` in one forced batch (a link that already exists is fine).
///
/// # Errors
/// What ip said, other than "exists" or "not found".
pub fn apply_enis(enis: &[EniLink], gone: &[u32], fabric_if: &str, netns: Option<&str>) -> Result<(), ApplyError> {
    let lines = eni_lines(enis, gone, fabric_if);
    if lines.is_empty() {
        return Ok(());
    }
    let mut ip = in_netns(netns, "ip");
    ip.args(["-force", "-batch", "-"]);
    match run(ip, &(lines.join("\n") + "\n"), "ENI links") {
        Ok(()) => Ok(()),
        Err(e) => {
            let benign = ["File exists", "Cannot find device", "Command failed", "No such"];
            let real: Vec<&str> =
                e.detail.lines().filter(|l| !l.trim().is_empty() && !benign.iter().any(|b| l.contains(b))).collect();
            if real.is_empty() { Ok(()) } else { Err(ApplyError { what: e.what, detail: real.join("; ") }) }
        }
    }
}
