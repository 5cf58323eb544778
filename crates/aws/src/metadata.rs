//! The node as the instance metadata service describes it: instance id and type, AZ and
//! region, the primary ENI and its subnet, the VPC's CIDR blocks, the security groups, and
//! each attached interface's MAC and device number. Addresses and prefixes are never taken from
//! here: the metadata trails EC2, and an address EC2 already took back must not return to the
//! pool (the VPC CNI's #3887). The daemon reads them from EC2.

use aws_config::imds::client::error::ImdsError;
use ipam::addr::{EniId, InstanceId, SubnetId};
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;
use thiserror::Error;

/// What the metadata service says of the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeMetadata {
    /// `instance-id`.
    pub instance: InstanceId,
    /// `instance-type`.
    pub instance_type: String,
    /// `placement/availability-zone`.
    pub az: String,
    /// `placement/region`.
    pub region: String,
    /// `local-ipv4`.
    pub local_ipv4: Ipv4Addr,
    /// The primary interface's MAC (`mac`).
    pub mac: String,
    /// The primary ENI.
    pub primary_eni: EniId,
    /// Its subnet, and the subnet's block.
    pub subnet: (SubnetId, Ipv4Net),
    /// The VPC.
    pub vpc_id: String,
    /// The VPC's IPv4 blocks (`vpc-ipv4-cidr-blocks`).
    pub vpc_cidrs: Vec<Ipv4Net>,
    /// The primary interface's security groups (`security-group-ids`).
    pub security_groups: Vec<String>,
    /// Every attached interface: MAC, ENI and device number.
    pub interfaces: Vec<Interface>,
}

/// An attached interface as the metadata lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    /// MAC.
    pub mac: String,
    /// ENI.
    pub eni: EniId,
    /// Device number (the primary's is 0).
    pub device: u32,
    /// Its subnet's IPv4 block (`subnet-ipv4-cidr-block`).
    pub subnet: Option<Ipv4Net>,
}

/// A metadata read that failed.
#[derive(Debug, Error)]
pub enum MetadataError {
    /// The service did not answer (not on EC2, or the endpoint is wrong).
    #[error("instance metadata {path}: the service did not answer: {message}")]
    Unreachable {
        /// Path.
        path: String,
        /// Detail.
        message: String,
    },
    /// The service answered with an error or nothing usable.
    #[error("instance metadata {path}: {message}")]
    Bad {
        /// Path.
        path: String,
        /// Detail.
        message: String,
    },
}

/// The metadata service's client (IMDSv2; the endpoint from `AWS_EC2_METADATA_SERVICE_ENDPOINT`
/// or the SDK's profile, else the link-local address).
///
/// Its connections belong to the runtime that first used them: use one client from one tokio
/// runtime only, and [`Metadata::fresh`] for another.
#[derive(Clone, Debug)]
pub struct Metadata {
    client: aws_config::imds::Client,
    endpoint: Option<String>,
}

impl Default for Metadata {
    fn default() -> Self {
        Metadata::new()
    }
}

impl Metadata {
    /// A client with the SDK's endpoint resolution.
    pub fn new() -> Metadata {
        // The SDK reads the same variable; kept to tell one metadata service from another.
        let endpoint = std::env::var("AWS_EC2_METADATA_SERVICE_ENDPOINT").ok().filter(|e| !e.is_empty());
        Metadata { client: aws_config::imds::Client::builder().build(), endpoint }
    }

    /// The service's endpoint when one was named (`None`: the link-local address, a real
    /// instance's own).
    pub fn endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref()
    }

    /// A client of the same service with connections of its own (for another runtime).
    pub fn fresh(&self) -> Metadata {
        match &self.endpoint {
            Some(e) => Metadata::at(e)
                .unwrap_or_else(|_| Metadata { client: aws_config::imds::Client::builder().build(), endpoint: None }),
            None => Metadata { client: aws_config::imds::Client::builder().build(), endpoint: None },
        }
    }

    /// A client of the service at `endpoint`.
    ///
    /// # Errors
    /// `endpoint` is not a URI.
    pub fn at(endpoint: &str) -> Result<Metadata, MetadataError> {
        let b = aws_config::imds::Client::builder()
            .endpoint(endpoint)
            .map_err(|e| MetadataError::Bad { path: endpoint.into(), message: e.to_string() })?;
        Ok(Metadata { client: b.build(), endpoint: Some(endpoint.to_string()) })
    }

    /// The SDK's client underneath (for the instance-profile credentials).
    pub fn client(&self) -> &aws_config::imds::Client {
        &self.client
    }

    /// The text at `path` under `/latest/meta-data/`; `None` when the service says 404.
    ///
    /// # Errors
    /// Unreachable or another error status.
    pub async fn get(&self, path: &str) -> Result<Option<String>, MetadataError> {
        // A kept-alive connection the service already closed fails once: ask again, once.
        match self.get_once(path).await {
            Err(MetadataError::Unreachable { .. }) => self.get_once(path).await,
            r => r,
        }
    }

    async fn get_once(&self, path: &str) -> Result<Option<String>, MetadataError> {
        let full = format!("/latest/meta-data/{path}");
        match self.client.get(full.clone()).await {
            Ok(v) => Ok(Some(v.as_ref().to_string())),
            Err(ImdsError::ErrorResponse(r)) if r.response().status().as_u16() == 404 => Ok(None),
            Err(ImdsError::ErrorResponse(r)) => {
                Err(MetadataError::Bad { path: full, message: format!("status {}", r.response().status().as_u16()) })
            }
            // No token because the service could not be reached: worth waiting for. A token
            // refused (IMDS disabled, an unknown instance) is not.
            Err(e @ ImdsError::FailedToLoadToken(_)) if matches!(&e, ImdsError::FailedToLoadToken(t) if !t.is_dispatch_failure()) => {
                Err(MetadataError::Bad { path: full, message: crate::error::error_chain(&e) })
            }
            Err(e @ (ImdsError::IoError(_) | ImdsError::FailedToLoadToken(_))) => {
                Err(MetadataError::Unreachable { path: full, message: crate::error::error_chain(&e) })
            }
            Err(e) => Err(MetadataError::Bad { path: full, message: crate::error::error_chain(&e) }),
        }
    }

    async fn need(&self, path: &str) -> Result<String, MetadataError> {
        self.get(path).await?.map(|s| s.trim().to_string()).ok_or_else(|| MetadataError::Bad {
            path: format!("/latest/meta-data/{path}"),
            message: "not found (404)".into(),
        })
    }

    async fn parsed<T: std::str::FromStr>(&self, path: &str) -> Result<T, MetadataError> {
        let v = self.need(path).await?;
        v.parse().map_err(|_| MetadataError::Bad {
            path: format!("/latest/meta-data/{path}"),
            message: format!("unreadable value {v:?}"),
        })
    }

    /// The VPC's IPv4 blocks, as the primary interface's metadata lists them now (re-read
    /// periodically: a VPC can gain blocks while the node runs).
    ///
    /// # Errors
    /// As [`Metadata::get`], or an unreadable block.
    pub async fn vpc_cidrs(&self, mac: &str) -> Result<Vec<Ipv4Net>, MetadataError> {
        let path = format!("network/interfaces/macs/{mac}/vpc-ipv4-cidr-blocks");
        lines(&self.need(&path).await?)
            .map(|l| {
                l.parse()
                    .map_err(|_| MetadataError::Bad { path: path.clone(), message: format!("unreadable block {l:?}") })
            })
            .collect()
    }

    /// Every attached interface; `primary_mac`'s device number is 0 whatever the metadata says
    /// (as the VPC CNI forces it).
    ///
    /// # Errors
    /// As [`Metadata::get`]; an interface without a readable id or device number.
    pub async fn interfaces(&self, primary_mac: &str) -> Result<Vec<Interface>, MetadataError> {
        let mut interfaces = Vec::new();
        for m in lines(&self.need("network/interfaces/macs/").await?) {
            let m = m.trim_end_matches('/').to_string();
            let at = |f: &str| format!("network/interfaces/macs/{m}/{f}");
            let eni = EniId(self.need(&at("interface-id")).await?);
            let device = if m == primary_mac { 0 } else { self.parsed(&at("device-number")).await? };
            let subnet = self.get(&at("subnet-ipv4-cidr-block")).await?.and_then(|s| s.trim().parse().ok());
            interfaces.push(Interface { mac: m, eni, device, subnet });
        }
        Ok(interfaces)
    }

    /// The whole node.
    ///
    /// # Errors
    /// As [`Metadata::get`]; a required path missing or unreadable.
    pub async fn node(&self) -> Result<NodeMetadata, MetadataError> {
        let mac = self.need("mac").await?;
        let at = |f: &str| format!("network/interfaces/macs/{mac}/{f}");
        let interfaces = self.interfaces(&mac).await?;
        let primary_eni = EniId(self.need(&at("interface-id")).await?);
        let az = self.need("placement/availability-zone").await?;
        let region = match self.get("placement/region").await? {
            Some(r) => r.trim().to_string(),
            None => az.trim_end_matches(|c: char| c.is_ascii_lowercase()).to_string(),
        };
        Ok(NodeMetadata {
            instance: InstanceId(self.need("instance-id").await?),
            instance_type: self.need("instance-type").await?,
            az,
            region,
            local_ipv4: self.parsed("local-ipv4").await?,
            subnet: (SubnetId(self.need(&at("subnet-id")).await?), self.parsed(&at("subnet-ipv4-cidr-block")).await?),
            vpc_id: self.need(&at("vpc-id")).await?,
            vpc_cidrs: self.vpc_cidrs(&mac).await?,
            security_groups: lines(&self.get(&at("security-group-ids")).await?.unwrap_or_default())
                .map(str::to_string)
                .collect(),
            primary_eni,
            mac,
            interfaces,
        })
    }
}

fn lines(s: &str) -> impl Iterator<Item = &str> {
    s.lines().map(str::trim).filter(|l| !l.is_empty())
}
