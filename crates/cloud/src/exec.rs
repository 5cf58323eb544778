//! Carries out an engine [`Call`] as EC2 actions for one node: new ENIs are created with the
//! node's tags and podip's description (under subnet discovery, in the AZ's discoverable subnet
//! with the most free addresses), the reconcile reads the node's ENIs and sorts out the
//! ones podip must leave alone, the leak sweep lists the unattached ENIs agents left.

use crate::{
    CallError, CallOutput, CreateEni, DESCRIPTION_PREFIX, Ec2, EniStatus, SubnetDescription, TAG_CLUSTER,
    TAG_CREATED_AT, TAG_INSTANCE_ID,
};
use ipam::addr::InstanceId;
use ipam::call::{Call, NodeEnis};

/// The node a call is made for, and what its new ENIs are tagged with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// The instance.
    pub instance: InstanceId,
    /// The cluster's name (`CLUSTER_NAME`), when known.
    pub cluster: Option<String>,
    /// The security groups of a new ENI the engine gives none (the primary ENI's, as the VPC
    /// CNI does; with none here, EC2 gives the VPC's default group).
    pub security_groups: Vec<String>,
}

impl Owner {
    /// The owner `instance`, of no named cluster.
    pub fn new(instance: InstanceId) -> Owner {
        Owner { instance, cluster: None, security_groups: Vec::new() }
    }

    /// The tags of a new ENI created at `created_at` (an RFC 3339 time).
    pub fn tags(&self, created_at: String) -> Vec<(String, String)> {
        let mut tags =
            vec![(TAG_INSTANCE_ID.to_string(), self.instance.0.clone()), (TAG_CREATED_AT.into(), created_at)];
        if let Some(c) = &self.cluster {
            tags.push((TAG_CLUSTER.into(), c.clone()));
        }
        tags
    }
}

/// Performs `call` for `owner` against `ec2`; `unix_secs` is the time new ENIs are stamped with.
///
/// # Errors
/// The EC2 error, classified.
pub fn execute(ec2: &mut dyn Ec2, owner: &Owner, unix_secs: u64, call: &Call) -> Result<CallOutput, CallError> {
    match call {
        Call::CreateEni { subnet, discover_in, avoid, security_groups, secondary_ips, prefixes } => {
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix_secs);
            let mut req = CreateEni {
                subnet: subnet.clone(),
                security_groups: if security_groups.is_empty() {
                    owner.security_groups.clone()
                } else {
                    security_groups.clone()
                },
                secondary_ips: *secondary_ips,
                prefixes: *prefixes,
                description: format!("{DESCRIPTION_PREFIX}{}", owner.instance),
                tags: owner.tags(humantime::format_rfc3339_seconds(at).to_string()),
            };
            let Some(az) = discover_in else {
                return Ok(CallOutput::Eni(ec2.create_network_interface(&req)?.into_info(0)));
            };
            // Subnet discovery: every valid subnet of the AZ, most free addresses first, until
            // one has room.
            let mut subnets: Vec<SubnetDescription> = ec2
                .describe_subnets(az)?
                .into_iter()
                .filter(|s| s.discoverable(subnet, owner.cluster.as_deref()) && !avoid.contains(&s.id))
                .collect();
            subnets
                .sort_by(|a, b| b.available.cmp(&a.available).then_with(|| (&a.id != subnet).cmp(&(&b.id != subnet))));
            let mut last = None;
            for s in subnets {
                req.subnet = s.id;
                match ec2.create_network_interface(&req) {
                    Ok(eni) => return Ok(CallOutput::Eni(eni.into_info(0))),
                    Err(e) if e.is_insufficient_addresses() => last = Some(e),
                    Err(e) => return Err(e),
                }
            }
            Err(last.unwrap_or_else(|| {
                crate::ec2_error(
                    "InsufficientFreeAddressesInSubnet",
                    format!("subnet discovery: no subnet of {az} may take pod ENIs (tag one kubernetes.io/role/cni=1)"),
                )
            }))
        }
        Call::AttachEni { eni, device_index } => {
            ec2.attach_network_interface(eni, &owner.instance, *device_index).map(|()| CallOutput::Done)
        }
        Call::AssignIps { eni, count } => ec2.assign_private_ip_addresses(eni, *count).map(CallOutput::Ips),
        Call::AssignPrefixes { eni, count } => ec2.assign_ipv4_prefixes(eni, *count).map(CallOutput::Prefixes),
        Call::AssignIpv6Prefix { eni } => ec2.assign_ipv6_prefix(eni).map(CallOutput::Ipv6Prefix),
        Call::UnassignIps { eni, ips } => ec2.unassign_private_ip_addresses(eni, ips).map(|()| CallOutput::Done),
        Call::UnassignPrefixes { eni, prefixes } => {
            ec2.unassign_ipv4_prefixes(eni, prefixes).map(|()| CallOutput::Done)
        }
        Call::ProtectEni { eni } => ec2.set_delete_on_termination(eni).map(|()| CallOutput::Done),
        Call::DetachEni { eni } => ec2.detach_network_interface(eni).map(|()| CallOutput::Done),
        Call::DeleteEni { eni } => ec2.delete_network_interface(eni).map(|()| CallOutput::Done),
        Call::Describe => {
            let mut out = NodeEnis::default();
            for d in ec2.describe_network_interfaces(&owner.instance)? {
                let Some((_, dev)) = d.attachment.clone() else { continue };
                if d.status == EniStatus::Detaching {
                    // On its way out: neither the node's nor deletable yet, but its slot is taken.
                    out.detaching.push((d.id, dev));
                    continue;
                }
                if d.managed() || dev == 0 {
                    if dev != 0 && !d.delete_on_termination {
                        out.unprotected.push(d.id.clone());
                    }
                    out.managed.push(d.into_info(dev));
                } else {
                    out.unmanaged.push((d.id, dev));
                }
            }
            Ok(CallOutput::Enis(out))
        }
        Call::ListUnattached => {
            let enis = ec2.describe_unattached(owner.cluster.as_deref())?;
            Ok(CallOutput::Leaked(
                enis.into_iter()
                    .filter(|d| d.status == EniStatus::Available && d.created_by_an_agent() && d.managed())
                    .map(|d| {
                        let mine = d.tags.get(TAG_INSTANCE_ID) == Some(&owner.instance.0);
                        (d.id, mine)
                    })
                    .collect(),
            ))
        }
    }
}
