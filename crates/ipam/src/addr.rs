//! Identifiers and address helpers shared by every podip crate: ENI and subnet ids, pod keys,
//! and /28 prefix math.

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::Ipv4Addr;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.to_string())
            }
        }
    };
}

id_type!(
    /// An ENI id (`eni-...`).
    EniId
);
id_type!(
    /// A subnet id (`subnet-...`).
    SubnetId
);
id_type!(
    /// An EC2 instance id (`i-...`).
    InstanceId
);

/// The IPAM key of one pod attachment, as the CNI spec defines it: (network name, container id,
/// interface name). The same key always gets the same address.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PodKey {
    /// The CNI network name (`name` in the network configuration).
    pub network: String,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
}

impl PodKey {
    /// A key on the `podip` network with interface `eth0`.
    pub fn new(container_id: impl Into<String>) -> PodKey {
        PodKey { network: "podip".into(), container_id: container_id.into(), ifname: "eth0".into() }
    }
}

impl fmt::Display for PodKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.network, self.container_id, self.ifname)
    }
}

/// Prefix length of an IPv4 delegated prefix.
pub const PREFIX_LEN: u8 = 28;
/// Addresses in an IPv4 delegated prefix.
pub const PREFIX_SIZE: u32 = 16;
/// Prefix length of the IPv6 prefix a node gets.
pub const V6_NODE_PREFIX_LEN: u8 = 80;

/// The `/32` network holding exactly `ip`.
pub fn host_net(ip: Ipv4Addr) -> Ipv4Net {
    // A /32 is always a valid prefix length.
    Ipv4Net::new(ip, 32).expect("/32 is valid")
}

/// Whether `net` is a /28 whose base is 16-aligned.
pub fn is_aligned_prefix(net: &Ipv4Net) -> bool {
    net.prefix_len() == PREFIX_LEN && u32::from(net.network()) % PREFIX_SIZE == 0 && net.addr() == net.network()
}

/// The n-th address of `net` (0 is the network address).
pub fn nth(net: &Ipv4Net, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()) + n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_alignment() {
        assert!(is_aligned_prefix(&"10.0.0.16/28".parse().unwrap()));
        assert!(!is_aligned_prefix(&"10.0.0.17/28".parse().unwrap()));
        assert!(!is_aligned_prefix(&"10.0.0.16/27".parse().unwrap()));
        assert_eq!(nth(&"10.0.0.16/28".parse().unwrap(), 15), Ipv4Addr::new(10, 0, 0, 31));
    }
}
