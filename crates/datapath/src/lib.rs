//! A pod's Linux data path, as the VPC CNI builds it: a veth pair (pod `eth0`, host
//! `<prefix><hash>`), the pod's /32 with the 169.254.1.1 gateway and a permanent neighbour entry
//! for it (no proxy ARP), a host route to the pod, and policy rules (to-pod at 512, from-pod via
//! the ENI's table at 1536).
//!
//! [`plan`] computes the operations as data, per side (inside the pod's netns, on the host);
//! [`apply`] carries a plan out in one batch per side, through iproute2's batch mode, so a whole
//! side is one netlink session.
#![forbid(unsafe_code)]

pub mod apply;
pub mod node;
pub mod plan;

pub use plan::{Egress, PodNet, egress_veth_name, host_mac, host_veth_name};
