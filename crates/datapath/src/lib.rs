//! A pod's Linux data path, as the VPC CNI builds it: a veth pair (pod `eth0`, host
//! `<prefix><hash>`), the pod's /32 with the 169.254.1.1 gateway and a permanent neighbour entry
//! for it (no proxy ARP), a host route to the pod, and policy rules (to-pod at 512, from-pod via
//! the ENI's table at 1536).
//!
//! [`plan`] computes the operations as data, per side (inside the pod's netns, on the host);
//! [`netlink`] carries out an IPv4 pod's over rtnetlink from the calling process (no process
//! spawned: the fast path); [`apply`] carries out any plan through iproute2's batch mode (IPv6
//! pods, checks); [`host`] reads the node's pod wiring and keeps policy rules exclusive, and
//! tears down; [`inspect`] reads one pod's wiring on the host exactly, for CHECK; [`node`] owns
//! the node-level SNAT and ENI links.
#![forbid(unsafe_code)]

pub mod apply;
pub mod host;
pub mod inspect;
pub mod netlink;
pub mod netns;
pub mod node;
pub mod plan;

pub use plan::{Egress, PodNet, egress_veth_name, host_mac, host_veth_name, veth_key};
