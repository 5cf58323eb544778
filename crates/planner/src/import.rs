//! Reads AWS CLI JSON exports (`aws ec2 describe-vpcs`, `describe-subnets`,
//! `describe-network-interfaces`, `get-subnet-cidr-reservations`) into the current state of a
//! VPC, with no credentials needed. A malformed file is rejected with the path of the bad field.

use cloud::sim::subnet::{Reservation, ReservationKind};
use ipnet::{Ipv4Net, Ipv6Net};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use thiserror::Error;

/// A file that could not be read as the export it should be.
#[derive(Debug, Error)]
#[error("{file}: {path}: {message}")]
pub struct ImportError {
    /// Which file (as the user named it).
    pub file: String,
    /// Path of the bad field, e.g. `Subnets[2].CidrBlock`.
    pub path: String,
    /// What was wrong.
    pub message: String,
}

fn parse<T: DeserializeOwned>(file: &str, text: &str) -> Result<T, ImportError> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        ImportError {
            file: file.to_string(),
            path: if path == "." { "(top)".into() } else { path },
            message: e.into_inner().to_string(),
        }
    })
}

/// `aws ec2 describe-vpcs`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Vpcs {
    /// The VPCs.
    pub vpcs: Vec<Vpc>,
}

/// One VPC.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Vpc {
    /// `vpc-...`.
    pub vpc_id: String,
    /// Primary IPv4 block.
    pub cidr_block: Ipv4Net,
    /// All IPv4 blocks.
    #[serde(default)]
    pub cidr_block_association_set: Vec<CidrAssociation>,
}

/// A VPC CIDR association.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CidrAssociation {
    /// The block.
    pub cidr_block: Ipv4Net,
    /// Its state.
    #[serde(default)]
    pub cidr_block_state: Option<CidrState>,
}

/// `{"State": "associated"}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CidrState {
    /// `associated`, `disassociated`, ...
    pub state: String,
}

impl Vpc {
    /// The associated IPv4 blocks, primary first.
    pub fn cidrs(&self) -> Vec<Ipv4Net> {
        let mut out = vec![self.cidr_block];
        for a in &self.cidr_block_association_set {
            let live = a.cidr_block_state.as_ref().is_none_or(|s| s.state == "associated");
            if live && !out.contains(&a.cidr_block) {
                out.push(a.cidr_block);
            }
        }
        out
    }
}

/// `aws ec2 describe-subnets`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Subnets {
    /// The subnets.
    pub subnets: Vec<Subnet>,
}

/// One subnet.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Subnet {
    /// `subnet-...`.
    pub subnet_id: String,
    /// `vpc-...`.
    pub vpc_id: String,
    /// AZ name.
    pub availability_zone: String,
    /// IPv4 block.
    pub cidr_block: Ipv4Net,
    /// Free addresses as EC2 counts them.
    #[serde(default)]
    pub available_ip_address_count: Option<u32>,
    /// IPv6 blocks.
    #[serde(default)]
    pub ipv6_cidr_block_association_set: Vec<Ipv6Association>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<Tag>,
}

/// An IPv6 block association.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Ipv6Association {
    /// The block.
    pub ipv6_cidr_block: Ipv6Net,
}

/// A tag.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Tag {
    /// Key.
    pub key: String,
    /// Value.
    pub value: String,
}

/// `aws ec2 describe-network-interfaces`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkInterfaces {
    /// The ENIs.
    pub network_interfaces: Vec<NetworkInterface>,
}

/// One ENI.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkInterface {
    /// `eni-...`.
    pub network_interface_id: String,
    /// Subnet.
    pub subnet_id: String,
    /// Its IPv4 addresses.
    #[serde(default)]
    pub private_ip_addresses: Vec<PrivateIp>,
    /// Its IPv4 prefixes.
    #[serde(default)]
    pub ipv4_prefixes: Vec<Ipv4PrefixSpec>,
    /// `interface`, `nat_gateway`, `trunk`, ...
    #[serde(default)]
    pub interface_type: Option<String>,
    /// Its description (`aws-K8S-i-...` for the VPC CNI's ENIs, `podip-i-...` for podipd's).
    #[serde(default)]
    pub description: Option<String>,
    /// Its tags.
    #[serde(default)]
    pub tag_set: Vec<Tag>,
    /// Its attachment, when attached.
    #[serde(default)]
    pub attachment: Option<Attachment>,
}

/// An ENI's attachment.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Attachment {
    /// The instance, when attached to one.
    #[serde(default)]
    pub instance_id: Option<String>,
    /// 0 for the instance's primary ENI.
    #[serde(default)]
    pub device_index: Option<u32>,
}

impl NetworkInterface {
    /// Whether a node agent of a cluster (the VPC CNI's aws-node, or podipd) made this ENI for
    /// a node: its tags or its description say so. The plan simulates the cluster's nodes
    /// itself, so their ENIs are not other workloads' usage.
    pub fn made_for_a_node(&self) -> bool {
        let tagged = self.tag_set.iter().any(|t| t.key == cloud::TAG_INSTANCE_ID || t.key == cloud::TAG_CLUSTER);
        let described = self
            .description
            .as_deref()
            .is_some_and(|d| d.starts_with("aws-K8S-") || d.starts_with(cloud::DESCRIPTION_PREFIX));
        tagged || described
    }
}

/// One private address of an ENI.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PrivateIp {
    /// The address.
    pub private_ip_address: Ipv4Addr,
    /// Whether it is the ENI's primary.
    #[serde(default)]
    pub primary: bool,
}

/// `{"Ipv4Prefix": "10.0.1.16/28"}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Ipv4PrefixSpec {
    /// The prefix.
    pub ipv4_prefix: Ipv4Net,
}

/// `aws ec2 get-subnet-cidr-reservations`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CidrReservations {
    /// IPv4 reservations.
    #[serde(default)]
    pub subnet_ipv4_cidr_reservations: Vec<CidrReservation>,
}

/// One reservation.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CidrReservation {
    /// Subnet.
    pub subnet_id: String,
    /// Range.
    pub cidr: Ipv4Net,
    /// `prefix` or `explicit`.
    pub reservation_type: ReservationKind,
}

/// The exports of one account, as read.
#[derive(Debug, Default)]
pub struct AwsExports {
    /// VPCs.
    pub vpcs: Vec<Vpc>,
    /// Subnets.
    pub subnets: Vec<Subnet>,
    /// ENIs.
    pub enis: Vec<NetworkInterface>,
    /// Reservations.
    pub reservations: Vec<CidrReservation>,
}

/// What one subnet currently holds, from the exports.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubnetUsage {
    /// Every address in use (ENI primaries and secondaries).
    pub addresses: Vec<Ipv4Addr>,
    /// Every prefix in use.
    pub prefixes: Vec<Ipv4Net>,
    /// Reservations.
    pub reservations: Vec<Reservation>,
}

impl AwsExports {
    /// Reads `describe-vpcs` output.
    ///
    /// # Errors
    /// The path of the first bad field.
    pub fn add_vpcs(&mut self, file: &str, text: &str) -> Result<(), ImportError> {
        self.vpcs.extend(parse::<Vpcs>(file, text)?.vpcs);
        Ok(())
    }

    /// Reads `describe-subnets` output.
    ///
    /// # Errors
    /// The path of the first bad field.
    pub fn add_subnets(&mut self, file: &str, text: &str) -> Result<(), ImportError> {
        self.subnets.extend(parse::<Subnets>(file, text)?.subnets);
        Ok(())
    }

    /// Reads `describe-network-interfaces` output.
    ///
    /// # Errors
    /// The path of the first bad field.
    pub fn add_network_interfaces(&mut self, file: &str, text: &str) -> Result<(), ImportError> {
        self.enis.extend(parse::<NetworkInterfaces>(file, text)?.network_interfaces);
        Ok(())
    }

    /// Reads `get-subnet-cidr-reservations` output.
    ///
    /// # Errors
    /// The path of the first bad field.
    pub fn add_reservations(&mut self, file: &str, text: &str) -> Result<(), ImportError> {
        self.reservations.extend(parse::<CidrReservations>(file, text)?.subnet_ipv4_cidr_reservations);
        Ok(())
    }

    /// The instances a node agent made ENIs for: the cluster's nodes.
    fn nodes(&self) -> std::collections::BTreeSet<String> {
        let mut out = std::collections::BTreeSet::new();
        for e in self.enis.iter().filter(|e| e.made_for_a_node()) {
            if let Some(t) = e.tag_set.iter().find(|t| t.key == cloud::TAG_INSTANCE_ID) {
                out.insert(t.value.clone());
            }
            if let Some(i) = e.attachment.as_ref().and_then(|a| a.instance_id.clone()) {
                out.insert(i);
            }
            if let Some(i) = e.description.as_deref().and_then(|d| d.strip_prefix("aws-K8S-")) {
                out.insert(i.to_string());
            }
        }
        out
    }

    /// Whether `e` is one of the cluster's nodes' ENIs: made by a node agent, or the primary
    /// ENI of an instance one was made for (EC2 made it with the instance; aws-node put pod
    /// addresses on it).
    fn of_a_node(e: &NetworkInterface, nodes: &std::collections::BTreeSet<String>) -> bool {
        let primary_of_node = e
            .attachment
            .as_ref()
            .is_some_and(|a| a.device_index == Some(0) && a.instance_id.as_ref().is_some_and(|i| nodes.contains(i)));
        e.made_for_a_node() || primary_of_node
    }

    /// Usage per subnet id.
    pub fn usage(&self) -> BTreeMap<String, SubnetUsage> {
        let mut out: BTreeMap<String, SubnetUsage> = BTreeMap::new();
        let nodes = self.nodes();
        for e in self.enis.iter().filter(|e| !Self::of_a_node(e, &nodes)) {
            let u = out.entry(e.subnet_id.clone()).or_default();
            u.addresses.extend(e.private_ip_addresses.iter().map(|p| p.private_ip_address));
            u.prefixes.extend(e.ipv4_prefixes.iter().map(|p| p.ipv4_prefix));
        }
        for r in &self.reservations {
            out.entry(r.subnet_id.clone())
                .or_default()
                .reservations
                .push(Reservation { cidr: r.cidr, kind: r.reservation_type });
        }
        out
    }
}

impl AwsExports {
    /// The clusters the left-out ENIs are tagged for (`cluster.k8s.amazonaws.com/name`).
    pub fn clusters(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .enis
            .iter()
            .flat_map(|e| e.tag_set.iter().filter(|t| t.key == cloud::TAG_CLUSTER).map(|t| t.value.clone()))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// What the import left out as the cluster's own: ENIs a node agent made and their nodes'
    /// primary ENIs, and the addresses (prefixes counted as 16) they hold.
    pub fn nodes_own(&self) -> (usize, usize) {
        let nodes = self.nodes();
        let own: Vec<&NetworkInterface> = self.enis.iter().filter(|e| Self::of_a_node(e, &nodes)).collect();
        let addrs = own.iter().map(|e| e.private_ip_addresses.len() + 16 * e.ipv4_prefixes.len()).sum();
        (own.len(), addrs)
    }
}

#[cfg(test)]
mod tests;
