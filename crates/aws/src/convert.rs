//! EC2's types as the SDK gives them, read into podip's domain types. A field EC2 always sends
//! but the answer lacks is a malformed answer, reported with the field's name.

use aws_sdk_ec2::types::{AttachmentStatus, NetworkInterface, NetworkInterfaceStatus, Subnet, Tag};
use cloud::{CallError, EniDescription, EniStatus, SubnetDescription, ec2_error};
use ipam::addr::{EniId, InstanceId, SubnetId};
use std::collections::BTreeMap;

fn malformed(what: &str, field: &str) -> CallError {
    ec2_error("InternalError", format!("EC2 answered a {what} without a readable {field}"))
}

fn tags(t: &[Tag]) -> BTreeMap<String, String> {
    t.iter().filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string()))).collect()
}

fn parse<T: std::str::FromStr>(v: Option<&str>, what: &str, field: &str) -> Result<T, CallError> {
    v.and_then(|s| s.parse().ok()).ok_or_else(|| malformed(what, field))
}

/// An ENI as EC2 described it.
///
/// # Errors
/// A missing or unreadable id, subnet or address.
pub fn eni(n: &NetworkInterface) -> Result<EniDescription, CallError> {
    let w = "network interface";
    let id = EniId(n.network_interface_id().ok_or_else(|| malformed(w, "NetworkInterfaceId"))?.to_string());
    let primary_ip = parse(n.private_ip_address(), w, "PrivateIpAddress")?;
    let mut secondary_ips = Vec::new();
    for a in n.private_ip_addresses() {
        if a.primary() != Some(true) {
            secondary_ips.push(parse(a.private_ip_address(), w, "PrivateIpAddresses")?);
        }
    }
    let prefixes =
        n.ipv4_prefixes().iter().map(|p| parse(p.ipv4_prefix(), w, "Ipv4Prefixes")).collect::<Result<_, _>>()?;
    let ipv6_prefixes =
        n.ipv6_prefixes().iter().map(|p| parse(p.ipv6_prefix(), w, "Ipv6Prefixes")).collect::<Result<_, _>>()?;
    let att = n.attachment();
    let attachment = match att {
        Some(a) if a.status() != Some(&AttachmentStatus::Detached) => Some((
            InstanceId(a.instance_id().ok_or_else(|| malformed(w, "Attachment.InstanceId"))?.to_string()),
            u32::try_from(a.device_index().ok_or_else(|| malformed(w, "Attachment.DeviceIndex"))?)
                .map_err(|_| malformed(w, "Attachment.DeviceIndex"))?,
        )),
        _ => None,
    };
    let status = match (n.status(), att.and_then(|a| a.status())) {
        (_, Some(AttachmentStatus::Attaching)) => EniStatus::Attaching,
        (_, Some(AttachmentStatus::Detaching)) => EniStatus::Detaching,
        (Some(NetworkInterfaceStatus::InUse), _) => EniStatus::InUse,
        (Some(NetworkInterfaceStatus::Attaching), _) => EniStatus::Attaching,
        (Some(NetworkInterfaceStatus::Detaching), _) => EniStatus::Detaching,
        (_, Some(AttachmentStatus::Attached)) => EniStatus::InUse,
        _ => EniStatus::Available,
    };
    Ok(EniDescription {
        id,
        subnet: SubnetId(n.subnet_id().ok_or_else(|| malformed(w, "SubnetId"))?.to_string()),
        primary_ip,
        secondary_ips,
        prefixes,
        ipv6_prefixes,
        attachment,
        status,
        delete_on_termination: att.and_then(|a| a.delete_on_termination()).unwrap_or(false),
        interface_type: n.interface_type().map_or_else(|| "interface".to_string(), |t| t.as_str().to_string()),
        description: n.description().unwrap_or_default().to_string(),
        tags: tags(n.tag_set()),
        security_groups: n.groups().iter().filter_map(|g| g.group_id().map(str::to_string)).collect(),
        mac: n.mac_address().unwrap_or_default().to_string(),
    })
}

/// A subnet as EC2 described it.
///
/// # Errors
/// A missing or unreadable id, AZ or CIDR block.
pub fn subnet(s: &Subnet) -> Result<SubnetDescription, CallError> {
    let w = "subnet";
    Ok(SubnetDescription {
        id: SubnetId(s.subnet_id().ok_or_else(|| malformed(w, "SubnetId"))?.to_string()),
        az: s.availability_zone().ok_or_else(|| malformed(w, "AvailabilityZone"))?.to_string(),
        cidr: parse(s.cidr_block(), w, "CidrBlock")?,
        available: s.available_ip_address_count().and_then(|n| u32::try_from(n).ok()).unwrap_or(0),
        tags: tags(s.tags()),
    })
}
