//! Carries out an engine [`Call`] as EC2 actions: create-and-attach (deleting the ENI again if
//! the attach fails) and detach-then-delete.

use crate::{Call, CallError, CallOutput, CreateEni, Ec2, ErrorKind};
use ipam::addr::InstanceId;

/// Performs `call` for `instance` against `ec2`.
///
/// # Errors
/// The first EC2 error, classified. A failed attach leaves no ENI behind (best effort: if the
/// clean-up delete also fails, the attach error is still the one returned).
pub fn execute(ec2: &mut dyn Ec2, instance: &InstanceId, call: &Call) -> Result<CallOutput, CallError> {
    match call {
        Call::CreateEni { subnet, security_groups, device_index, secondary_ips, prefixes } => {
            let eni = ec2.create_network_interface(&CreateEni {
                subnet: subnet.clone(),
                security_groups: security_groups.clone(),
                secondary_ips: *secondary_ips,
                prefixes: *prefixes,
            })?;
            if let Err(e) = ec2.attach_network_interface(&eni.id, instance, *device_index) {
                let _ = ec2.delete_network_interface(&eni.id);
                return Err(e);
            }
            Ok(CallOutput::Eni(eni.into_info(*device_index)))
        }
        Call::AssignIps { eni, count } => ec2.assign_private_ip_addresses(eni, *count).map(CallOutput::Ips),
        Call::AssignPrefixes { eni, count } => ec2.assign_ipv4_prefixes(eni, *count).map(CallOutput::Prefixes),
        Call::AssignIpv6Prefix { eni } => ec2.assign_ipv6_prefix(eni).map(CallOutput::Ipv6Prefix),
        Call::UnassignIps { eni, ips } => ec2.unassign_private_ip_addresses(eni, ips).map(|()| CallOutput::Done),
        Call::UnassignPrefixes { eni, prefixes } => {
            ec2.unassign_ipv4_prefixes(eni, prefixes).map(|()| CallOutput::Done)
        }
        Call::DeleteEni { eni } => {
            match ec2.detach_network_interface(eni) {
                Ok(()) => {}
                // Already detached: go on to the delete.
                Err(e) if e.code == "InvalidAttachmentID.NotFound" => {}
                Err(e) => return Err(e),
            }
            match ec2.delete_network_interface(eni) {
                Err(e) if e.kind == ErrorKind::NotFound => Err(e),
                other => other.map(|()| CallOutput::Done),
            }
        }
    }
}
