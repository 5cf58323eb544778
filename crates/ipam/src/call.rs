//! The cloud requests the node engine asks for, their results, and the error kinds it reacts to.
//!
//! These are domain types: the `cloud` crate's backends translate them to and from EC2.

use crate::addr::{EniId, SubnetId};
use crate::datastore::EniInfo;
use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::Ipv4Addr;
use thiserror::Error;

/// Identifies one request from the engine until its result comes back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OpId(pub u64);

/// A cloud request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "call", rename_all = "snake_case")]
pub enum Call {
    /// Create an ENI with addresses or prefixes (tagged as the node's; not attached yet).
    CreateEni {
        /// Subnet for the ENI (with `discover_in`, the node's subnet).
        subnet: SubnetId,
        /// Subnet discovery: try the discoverable subnets of this AZ, most free addresses
        /// first, as the VPC CNI does (`vpc-cni-behaviour.md` §2.12).
        #[serde(skip_serializing_if = "Option::is_none")]
        discover_in: Option<String>,
        /// Subnets discovery must skip (they just ran out).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        avoid: Vec<SubnetId>,
        /// Security groups (empty: the primary ENI's).
        security_groups: Vec<String>,
        /// Secondary addresses to create it with.
        secondary_ips: u32,
        /// /28 prefixes to create it with.
        prefixes: u32,
    },
    /// Attach a created ENI to the node at `device_index`.
    AttachEni {
        /// The ENI.
        eni: EniId,
        /// Attachment slot.
        device_index: u32,
    },
    /// Assign secondary addresses to an ENI.
    AssignIps {
        /// Target ENI.
        eni: EniId,
        /// How many.
        count: u32,
    },
    /// Assign /28 prefixes to an ENI.
    AssignPrefixes {
        /// Target ENI.
        eni: EniId,
        /// How many.
        count: u32,
    },
    /// Assign an IPv6 /80 prefix to an ENI.
    AssignIpv6Prefix {
        /// Target ENI.
        eni: EniId,
    },
    /// Return secondary addresses to EC2.
    UnassignIps {
        /// ENI holding them.
        eni: EniId,
        /// The addresses.
        ips: Vec<Ipv4Addr>,
    },
    /// Return prefixes to EC2.
    UnassignPrefixes {
        /// ENI holding them.
        eni: EniId,
        /// The prefixes.
        prefixes: Vec<Ipv4Net>,
    },
    /// Make an attached ENI go with the instance (`DeleteOnTermination`).
    ProtectEni {
        /// The ENI.
        eni: EniId,
    },
    /// Detach an ENI from the node (it is deleted once EC2 has detached it).
    DetachEni {
        /// The ENI.
        eni: EniId,
    },
    /// Delete an unattached ENI.
    DeleteEni {
        /// The ENI.
        eni: EniId,
    },
    /// Read the node's attached ENIs from EC2 (the reconcile).
    Describe,
    /// List the unattached ENIs agents created for nodes (of the cluster): the leak sweep.
    ListUnattached,
}

impl Call {
    /// Whether the call changes something at EC2 (and draws on a mutating API bucket).
    pub fn mutating(&self) -> bool {
        !matches!(self, Call::Describe | Call::ListUnattached)
    }

    /// A short name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Call::CreateEni { .. } => "create_eni",
            Call::AttachEni { .. } => "attach_eni",
            Call::ProtectEni { .. } => "protect_eni",
            Call::AssignIps { .. } => "assign_ips",
            Call::AssignPrefixes { .. } => "assign_prefixes",
            Call::AssignIpv6Prefix { .. } => "assign_ipv6_prefix",
            Call::UnassignIps { .. } => "unassign_ips",
            Call::UnassignPrefixes { .. } => "unassign_prefixes",
            Call::DetachEni { .. } => "detach_eni",
            Call::DeleteEni { .. } => "delete_eni",
            Call::Describe => "describe",
            Call::ListUnattached => "list_unattached",
        }
    }
}

/// The node's ENIs as EC2 reports them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeEnis {
    /// Attached (or attaching) ENIs podip may use and free.
    pub managed: Vec<EniInfo>,
    /// Attached ENIs podip must leave alone (trunk, EFA, `no_manage`), with their device indexes.
    pub unmanaged: Vec<(EniId, u32)>,
    /// Managed secondary ENIs whose attachment does not delete them with the instance.
    pub unprotected: Vec<EniId>,
    /// ENIs EC2 is still detaching from the node, with the device indexes they still hold.
    pub detaching: Vec<(EniId, u32)>,
}

/// A successful result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallOutput {
    /// The ENI created (not attached; its device index is not meaningful yet).
    Eni(EniInfo),
    /// The node's ENIs.
    Enis(NodeEnis),
    /// Unattached ENIs agents left: each id, and whether it was made for this node.
    Leaked(Vec<(EniId, bool)>),
    /// Addresses assigned.
    Ips(Vec<Ipv4Addr>),
    /// Prefixes assigned.
    Prefixes(Vec<Ipv4Net>),
    /// IPv6 prefix assigned.
    Ipv6Prefix(Ipv6Net),
    /// Done, nothing to report.
    Done,
}

/// Which capacity ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Capacity {
    /// `InsufficientCidrBlocks`: no free aligned /28 in the subnet.
    InsufficientCidrBlocks,
    /// `InsufficientFreeAddressesInSubnet`.
    InsufficientFreeAddresses,
    /// `PrivateIpAddressLimitExceeded`: the ENI is full.
    AddressLimit,
    /// `AttachmentLimitExceeded`: the instance is full.
    AttachmentLimit,
    /// An account quota (e.g. ENIs per region).
    Quota,
}

/// How the engine (and any retry logic) should treat a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorKind {
    /// `RequestLimitExceeded`: back off and retry.
    Throttled,
    /// A transient server-side error: retry.
    Transient,
    /// Out of addresses, prefixes or slots.
    Capacity(Capacity),
    /// The resource does not exist (e.g. `InvalidNetworkInterfaceID.NotFound`).
    NotFound,
    /// The resource is in a state that forbids the call for now (`InvalidNetworkInterface.InUse`
    /// while an ENI is still detaching, `IncorrectState`): retry later.
    Conflict,
    /// Anything else: retrying will not help.
    Permanent,
}

/// A failed cloud call: its kind and the EC2 error code.
#[derive(Clone, Debug, PartialEq, Eq, Error, Serialize, Deserialize)]
#[error("{code}: {message}")]
pub struct CallError {
    /// Classification.
    pub kind: ErrorKind,
    /// The EC2 error code, e.g. `InsufficientCidrBlocks`.
    pub code: String,
    /// Human-readable detail.
    pub message: String,
}

impl CallError {
    /// An error of `kind` with EC2 `code`.
    pub fn new(kind: ErrorKind, code: &str, message: impl Into<String>) -> CallError {
        CallError { kind, code: code.to_string(), message: message.into() }
    }

    /// Whether the call may have taken effect in EC2 although it failed (a lost reply, a
    /// timeout, a server error): only a reconcile can tell.
    pub fn outcome_unknown(&self) -> bool {
        self.kind == ErrorKind::Transient
    }

    /// Whether this is one of the two subnet-exhaustion errors that start the 120 s back-off.
    pub fn is_insufficient_addresses(&self) -> bool {
        matches!(self.kind, ErrorKind::Capacity(Capacity::InsufficientCidrBlocks | Capacity::InsufficientFreeAddresses))
    }
}

impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "op-{}", self.0)
    }
}
