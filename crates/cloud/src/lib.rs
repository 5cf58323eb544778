//! The cloud seam of podip: the narrow [`Ec2`] trait in domain types, the error kinds callers
//! react to, the translation of engine [`Call`]s into EC2 actions, and the simulated VPC
//! backend ([`sim::SimVpc`]), which is always compiled.
//!
//! No SDK type appears in any signature here: a real AWS backend implements [`Ec2`] by mapping
//! these types to the EC2 wire format.
//!
//! # Example
//! ```
//! use cloud::sim::{SimParams, SimVpc};
//! let mut vpc = SimVpc::new(SimParams::default());
//! vpc.add_vpc_cidr("10.0.0.0/16".parse().unwrap()).unwrap();
//! let subnet = vpc.add_subnet("us-east-1a", "10.0.0.0/24".parse().unwrap()).unwrap();
//! let free = vpc.subnet(&subnet).unwrap().free_ips();
//! assert_eq!(free, 256 - 5);
//! ```
#![forbid(unsafe_code)]

pub mod exec;
pub mod sim;

use ipam::addr::{EniId, InstanceId, SubnetId};
pub use ipam::call::{Call, CallError, CallOutput, Capacity, ErrorKind};
use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// The EC2 API actions podip uses; each has its own throttling bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Action {
    /// `CreateNetworkInterface`.
    CreateNetworkInterface,
    /// `AttachNetworkInterface`.
    AttachNetworkInterface,
    /// `AssignPrivateIpAddresses` (addresses and IPv4 prefixes).
    AssignPrivateIpAddresses,
    /// `UnassignPrivateIpAddresses`.
    UnassignPrivateIpAddresses,
    /// `AssignIpv6Addresses` (addresses and IPv6 prefixes).
    AssignIpv6Addresses,
    /// `DetachNetworkInterface`.
    DetachNetworkInterface,
    /// `ModifyNetworkInterfaceAttribute` (the attachment's `DeleteOnTermination`).
    ModifyNetworkInterfaceAttribute,
    /// `DeleteNetworkInterface`.
    DeleteNetworkInterface,
    /// `DescribeNetworkInterfaces` (filtered).
    DescribeNetworkInterfaces,
    /// `DescribeSubnets` (filtered on the VPC and AZ).
    DescribeSubnets,
    /// `RunInstances`.
    RunInstances,
    /// `TerminateInstances`.
    TerminateInstances,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 12] = [
        Action::CreateNetworkInterface,
        Action::AttachNetworkInterface,
        Action::AssignPrivateIpAddresses,
        Action::UnassignPrivateIpAddresses,
        Action::AssignIpv6Addresses,
        Action::DetachNetworkInterface,
        Action::ModifyNetworkInterfaceAttribute,
        Action::DeleteNetworkInterface,
        Action::DescribeNetworkInterfaces,
        Action::DescribeSubnets,
        Action::RunInstances,
        Action::TerminateInstances,
    ];

    /// The EC2 action name.
    pub fn name(self) -> &'static str {
        match self {
            Action::CreateNetworkInterface => "CreateNetworkInterface",
            Action::AttachNetworkInterface => "AttachNetworkInterface",
            Action::AssignPrivateIpAddresses => "AssignPrivateIpAddresses",
            Action::UnassignPrivateIpAddresses => "UnassignPrivateIpAddresses",
            Action::AssignIpv6Addresses => "AssignIpv6Addresses",
            Action::DetachNetworkInterface => "DetachNetworkInterface",
            Action::ModifyNetworkInterfaceAttribute => "ModifyNetworkInterfaceAttribute",
            Action::DeleteNetworkInterface => "DeleteNetworkInterface",
            Action::DescribeNetworkInterfaces => "DescribeNetworkInterfaces",
            Action::DescribeSubnets => "DescribeSubnets",
            Action::RunInstances => "RunInstances",
            Action::TerminateInstances => "TerminateInstances",
        }
    }
}

/// A request to create an ENI.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CreateEni {
    /// Subnet.
    pub subnet: SubnetId,
    /// Security groups.
    pub security_groups: Vec<String>,
    /// `SecondaryPrivateIpAddressCount`.
    pub secondary_ips: u32,
    /// `Ipv4PrefixCount`.
    pub prefixes: u32,
    /// `Description`.
    pub description: String,
    /// `TagSpecifications` of the new interface.
    pub tags: Vec<(String, String)>,
}

/// Tag naming the instance an ENI was created for (the VPC CNI's, so its tools find podip's ENIs).
pub const TAG_INSTANCE_ID: &str = "node.k8s.amazonaws.com/instance_id";
/// Tag holding when an ENI was created (RFC 3339).
pub const TAG_CREATED_AT: &str = "node.k8s.amazonaws.com/createdAt";
/// Tag naming the cluster (set when the cluster name is known).
pub const TAG_CLUSTER: &str = "cluster.k8s.amazonaws.com/name";
/// Subnet tag that makes a subnet a candidate for pod ENIs under subnet discovery (any value but
/// `0`; `0` on the node's own subnet takes it out).
pub const TAG_SUBNET_CNI: &str = "kubernetes.io/role/cni";
/// Subnet tag prefix that restricts a subnet to the clusters named after it.
pub const TAG_SUBNET_CLUSTER_PREFIX: &str = "cni.networking.k8s.aws/cluster/";
/// Tag that marks an ENI no agent may manage (`true`).
pub const TAG_NO_MANAGE: &str = "node.k8s.amazonaws.com/no_manage";
/// The start of the description of every ENI podip creates (`podip-<instance-id>`).
pub const DESCRIPTION_PREFIX: &str = "podip-";

/// An ENI's state, as `DescribeNetworkInterfaces` reports it in `Status` (with the attachment's
/// own `attaching` and `detaching` states folded in).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EniStatus {
    /// Not attached.
    #[default]
    Available,
    /// Being attached.
    Attaching,
    /// Attached.
    InUse,
    /// Being detached: it cannot be deleted yet.
    Detaching,
}

/// What EC2 says about an ENI.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EniDescription {
    /// Id.
    pub id: EniId,
    /// Subnet.
    pub subnet: SubnetId,
    /// Primary private address.
    pub primary_ip: Ipv4Addr,
    /// Secondary private addresses.
    pub secondary_ips: Vec<Ipv4Addr>,
    /// IPv4 prefixes.
    pub prefixes: Vec<Ipv4Net>,
    /// IPv6 prefixes.
    pub ipv6_prefixes: Vec<Ipv6Net>,
    /// Attachment, if attached: instance and device index.
    pub attachment: Option<(InstanceId, u32)>,
    /// Status.
    #[serde(default)]
    pub status: EniStatus,
    /// The attachment's `DeleteOnTermination` (false for an ENI attached by API until set).
    #[serde(default)]
    pub delete_on_termination: bool,
    /// `InterfaceType`: `interface`, `trunk`, `efa`, ...
    #[serde(default)]
    pub interface_type: String,
    /// `Description`.
    #[serde(default)]
    pub description: String,
    /// Tags.
    #[serde(default)]
    pub tags: std::collections::BTreeMap<String, String>,
    /// Security groups (`Groups`).
    #[serde(default)]
    pub security_groups: Vec<String>,
    /// MAC address (`MacAddress`).
    #[serde(default)]
    pub mac: String,
}

impl EniDescription {
    /// Whether an agent may use and free this ENI: not a trunk or EFA interface, and not tagged
    /// `node.k8s.amazonaws.com/no_manage=true` (`vpc-cni-behaviour.md` §7).
    pub fn managed(&self) -> bool {
        let special = matches!(self.interface_type.as_str(), "trunk" | "branch" | "efa" | "efa-only");
        let no_manage = self.tags.get(TAG_NO_MANAGE).is_some_and(|v| v.eq_ignore_ascii_case("true"));
        !special && !no_manage
    }

    /// Whether an agent created this ENI for a node and the leak sweep may collect it: podip's
    /// description, or aws-node's (`aws-K8S-`, left behind by a node that moved to podipd),
    /// with the instance tag.
    pub fn created_by_an_agent(&self) -> bool {
        let ours = self.description.starts_with(DESCRIPTION_PREFIX) || self.description.starts_with("aws-K8S-");
        ours && self.tags.contains_key(TAG_INSTANCE_ID)
    }

    /// What the engine's datastore takes of this ENI, attached at `device_index`.
    pub fn into_info(self, device_index: u32) -> ipam::datastore::EniInfo {
        ipam::datastore::EniInfo {
            id: self.id,
            device_index,
            subnet: self.subnet,
            primary_ip: self.primary_ip,
            secondary_ips: self.secondary_ips,
            prefixes: self.prefixes,
            v6_prefix: self.ipv6_prefixes.first().copied(),
        }
    }
}

/// What EC2 says about a subnet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetDescription {
    /// Id.
    pub id: SubnetId,
    /// Availability zone.
    pub az: String,
    /// IPv4 block.
    pub cidr: Ipv4Net,
    /// `AvailableIpAddressCount`.
    pub available: u32,
    /// Tags.
    #[serde(default)]
    pub tags: std::collections::BTreeMap<String, String>,
}

impl SubnetDescription {
    /// Whether subnet discovery may put a pod ENI here (`vpc-cni-behaviour.md` §2.12): the
    /// node's own subnet unless tagged `kubernetes.io/role/cni=0`; another only when tagged
    /// with any other value; and, when the subnet names clusters, only for one of them.
    pub fn discoverable(&self, node_subnet: &SubnetId, cluster: Option<&str>) -> bool {
        let role = self.tags.get(TAG_SUBNET_CNI).map(String::as_str);
        let role_ok = if &self.id == node_subnet { role != Some("0") } else { role.is_some_and(|r| r != "0") };
        let names_clusters = self.tags.keys().any(|k| k.starts_with(TAG_SUBNET_CLUSTER_PREFIX));
        let cluster_ok = match cluster {
            Some(c) if names_clusters => self.tags.contains_key(&format!("{TAG_SUBNET_CLUSTER_PREFIX}{c}")),
            _ => true,
        };
        role_ok && cluster_ok
    }
}

/// The EC2 operations podip needs, in domain types.
///
/// Every method is one EC2 action and fails with a classified [`CallError`] carrying the real
/// EC2 error code.
pub trait Ec2 {
    /// `CreateNetworkInterface`.
    ///
    /// # Errors
    /// `InsufficientFreeAddressesInSubnet`, `InsufficientCidrBlocks`, `InvalidSubnetID.NotFound`,
    /// `RequestLimitExceeded`.
    fn create_network_interface(&mut self, req: &CreateEni) -> Result<EniDescription, CallError>;
    /// `AttachNetworkInterface`.
    ///
    /// # Errors
    /// `AttachmentLimitExceeded`, `InvalidNetworkInterfaceID.NotFound`, `RequestLimitExceeded`.
    fn attach_network_interface(
        &mut self,
        eni: &EniId,
        instance: &InstanceId,
        device_index: u32,
    ) -> Result<(), CallError>;
    /// `AssignPrivateIpAddresses` with `SecondaryPrivateIpAddressCount`.
    ///
    /// # Errors
    /// `PrivateIpAddressLimitExceeded`, `InsufficientFreeAddressesInSubnet`, not found, throttled.
    fn assign_private_ip_addresses(&mut self, eni: &EniId, count: u32) -> Result<Vec<Ipv4Addr>, CallError>;
    /// `AssignPrivateIpAddresses` with `Ipv4PrefixCount`.
    ///
    /// # Errors
    /// `PrivateIpAddressLimitExceeded`, `InsufficientCidrBlocks`, not found, throttled.
    fn assign_ipv4_prefixes(&mut self, eni: &EniId, count: u32) -> Result<Vec<Ipv4Net>, CallError>;
    /// `AssignIpv6Addresses` with `Ipv6PrefixCount=1` (an /80).
    ///
    /// # Errors
    /// The subnet has no IPv6 block, not found, throttled.
    fn assign_ipv6_prefix(&mut self, eni: &EniId) -> Result<Ipv6Net, CallError>;
    /// `UnassignPrivateIpAddresses` with addresses.
    ///
    /// # Errors
    /// An address not on the ENI, not found, throttled.
    fn unassign_private_ip_addresses(&mut self, eni: &EniId, ips: &[Ipv4Addr]) -> Result<(), CallError>;
    /// `UnassignPrivateIpAddresses` with `Ipv4Prefixes`.
    ///
    /// # Errors
    /// A prefix not on the ENI, not found, throttled.
    fn unassign_ipv4_prefixes(&mut self, eni: &EniId, prefixes: &[Ipv4Net]) -> Result<(), CallError>;
    /// `DetachNetworkInterface`.
    ///
    /// # Errors
    /// Not attached or not found, throttled.
    fn detach_network_interface(&mut self, eni: &EniId) -> Result<(), CallError>;
    /// `DeleteNetworkInterface`.
    ///
    /// # Errors
    /// Still attached (`InvalidNetworkInterface.InUse`), not found, throttled.
    fn delete_network_interface(&mut self, eni: &EniId) -> Result<(), CallError>;
    /// `DescribeNetworkInterfaces` filtered on `attachment.instance-id`.
    ///
    /// # Errors
    /// Throttled.
    fn describe_network_interfaces(&mut self, instance: &InstanceId) -> Result<Vec<EniDescription>, CallError>;
    /// `DescribeNetworkInterfaces` filtered on the node's VPC (`vpc-id`), `status=available`,
    /// the tag key `node.k8s.amazonaws.com/instance_id` and, when `cluster` is given, the tag
    /// `cluster.k8s.amazonaws.com/name=<cluster>`: the unattached ENIs agents created for any
    /// node (of the cluster), which the leak sweep collects, as the VPC CNI's does.
    ///
    /// # Errors
    /// Throttled.
    fn describe_unattached(&mut self, cluster: Option<&str>) -> Result<Vec<EniDescription>, CallError>;
    /// `ModifyNetworkInterfaceAttribute` setting the attachment's `DeleteOnTermination`, so the
    /// ENI goes with its instance (EC2 leaves it false for an ENI attached by API).
    ///
    /// # Errors
    /// Not attached, not found, throttled.
    fn set_delete_on_termination(&mut self, eni: &EniId) -> Result<(), CallError>;
    /// `DescribeSubnets` filtered on the availability zone `az` (of the node's VPC).
    ///
    /// # Errors
    /// Throttled.
    fn describe_subnets(&mut self, az: &str) -> Result<Vec<SubnetDescription>, CallError>;
}

/// The error kind of an EC2 error code.
pub fn classify(code: &str) -> ErrorKind {
    match code {
        "RequestLimitExceeded" | "Throttling" => ErrorKind::Throttled,
        "InternalError" | "InternalFailure" | "ServiceUnavailable" | "Unavailable" | "RequestTimeout" => {
            ErrorKind::Transient
        }
        "InvalidNetworkInterface.InUse" | "IncorrectState" | "IncorrectInstanceState" => ErrorKind::Conflict,
        "InsufficientCidrBlocks" => ErrorKind::Capacity(Capacity::InsufficientCidrBlocks),
        "InsufficientFreeAddressesInSubnet" => ErrorKind::Capacity(Capacity::InsufficientFreeAddresses),
        "PrivateIpAddressLimitExceeded" => ErrorKind::Capacity(Capacity::AddressLimit),
        "AttachmentLimitExceeded" => ErrorKind::Capacity(Capacity::AttachmentLimit),
        "NetworkInterfaceLimitExceeded" => ErrorKind::Capacity(Capacity::Quota),
        c if c.ends_with(".NotFound") => ErrorKind::NotFound,
        _ => ErrorKind::Permanent,
    }
}

/// A [`CallError`] for EC2 `code`, classified.
pub fn ec2_error(code: &str, message: impl Into<String>) -> CallError {
    CallError::new(classify(code), code, message)
}
