//! [`AwsEc2`]: the [`Ec2`] operations as EC2 API calls through the SDK, one request each (a
//! detach or DeleteOnTermination whose attachment id is not known yet first describes the ENI).

use crate::convert;
use crate::error::call_error;
use aws_sdk_ec2::types::{Filter, NetworkInterfaceAttachmentChanges, ResourceType, Tag, TagSpecification};
use cloud::{CallError, CreateEni, Ec2, EniDescription, SubnetDescription, TAG_CLUSTER, TAG_INSTANCE_ID, ec2_error};
use ipam::addr::{EniId, InstanceId};
use ipnet::{Ipv4Net, Ipv6Net};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

/// How long one EC2 call may take before it counts as failed with an unknown outcome.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// EC2 through the AWS SDK, called from a plain thread (it drives its own small runtime).
pub struct AwsEc2 {
    rt: tokio::runtime::Runtime,
    client: aws_sdk_ec2::Client,
    vpc_id: Option<String>,
    attachments: HashMap<EniId, String>,
}

impl std::fmt::Debug for AwsEc2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsEc2").field("vpc_id", &self.vpc_id).finish_non_exhaustive()
    }
}

fn filter(name: &str, values: &[&str]) -> Filter {
    Filter::builder().name(name).set_values(Some(values.iter().map(|v| v.to_string()).collect())).build()
}

fn count(n: u32, what: &str) -> Result<i32, CallError> {
    i32::try_from(n).map_err(|_| ec2_error("InvalidParameterValue", format!("{what} {n} is too large")))
}

/// The blocks an assign answered, when they are exactly the `asked` new ones. An answer of
/// another length (some EC2 stand-ins list every address of the interface) cannot say which
/// are new: the call took effect but its result is unknown, and the reconcile reads the truth.
fn exactly<T>(got: Vec<T>, asked: u32, what: &str) -> Result<Vec<T>, CallError> {
    if got.len() == asked as usize {
        Ok(got)
    } else {
        Err(ec2_error(
            "RequestTimeout",
            format!(
                "AssignPrivateIpAddresses answered {} {what} for {asked} asked: which are new is unknown",
                got.len()
            ),
        ))
    }
}

impl AwsEc2 {
    /// A client configured by [`crate::sdk_config`] (endpoint, region and credentials from the
    /// SDK's chains), limited to `vpc_id`'s resources where a call lists more than the node's.
    ///
    /// # Errors
    /// The runtime cannot start.
    pub fn new(vpc_id: Option<String>) -> std::io::Result<AwsEc2> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let conf = rt.block_on(crate::sdk_config());
        Ok(AwsEc2::with_config(rt, &conf, vpc_id, None))
    }

    /// A client of `conf`, on `rt`; `endpoint` replaces the EC2 endpoint `conf` resolves to.
    pub fn with_config(
        rt: tokio::runtime::Runtime,
        conf: &aws_config::SdkConfig,
        vpc_id: Option<String>,
        endpoint: Option<&str>,
    ) -> AwsEc2 {
        let mut b = aws_sdk_ec2::config::Builder::from(conf);
        if let Some(e) = endpoint {
            b = b.endpoint_url(e);
        }
        AwsEc2 { rt, client: aws_sdk_ec2::Client::from_conf(b.build()), vpc_id, attachments: HashMap::new() }
    }

    /// The SDK client (for the calls outside [`Ec2`] a tool or test makes).
    pub fn client(&self) -> &aws_sdk_ec2::Client {
        &self.client
    }

    /// Runs `f` on the client's runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    fn describe_where(&mut self, filters: Vec<Filter>) -> Result<Vec<EniDescription>, CallError> {
        let req = self.client.describe_network_interfaces().set_filters(Some(filters)).max_results(1000);
        let found: Vec<_> =
            self.rt.block_on(req.into_paginator().items().send().collect::<Result<Vec<_>, _>>()).map_err(call_error)?;
        let enis = found.iter().map(convert::eni).collect::<Result<Vec<_>, _>>()?;
        for (e, n) in enis.iter().zip(&found) {
            match n.attachment().and_then(|a| a.attachment_id()) {
                Some(a) if e.attachment.is_some() => {
                    self.attachments.insert(e.id.clone(), a.to_string());
                }
                _ => {
                    self.attachments.remove(&e.id);
                }
            }
        }
        Ok(enis)
    }

    /// The attachment id of `eni`: known from its attach or a describe, else described now.
    fn attachment_of(&mut self, eni: &EniId) -> Result<String, CallError> {
        if let Some(a) = self.attachments.get(eni) {
            return Ok(a.clone());
        }
        let d = self.describe_where(vec![filter("network-interface-id", &[&eni.0])])?;
        if d.is_empty() {
            return Err(ec2_error(
                "InvalidNetworkInterfaceID.NotFound",
                format!("The networkInterface ID '{eni}' does not exist"),
            ));
        }
        self.attachments
            .get(eni)
            .cloned()
            .ok_or_else(|| ec2_error("InvalidAttachmentID.NotFound", format!("{eni} is not attached")))
    }
}

impl Ec2 for AwsEc2 {
    fn create_network_interface(&mut self, req: &CreateEni) -> Result<EniDescription, CallError> {
        let tags = req.tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect();
        let mut call = self
            .client
            .create_network_interface()
            .subnet_id(&req.subnet.0)
            .description(&req.description)
            .set_groups((!req.security_groups.is_empty()).then(|| req.security_groups.clone()))
            .tag_specifications(
                TagSpecification::builder().resource_type(ResourceType::NetworkInterface).set_tags(Some(tags)).build(),
            );
        if req.secondary_ips > 0 {
            call = call.secondary_private_ip_address_count(count(req.secondary_ips, "SecondaryPrivateIpAddressCount")?);
        }
        if req.prefixes > 0 {
            call = call.ipv4_prefix_count(count(req.prefixes, "Ipv4PrefixCount")?);
        }
        let out = self.rt.block_on(call.send()).map_err(call_error)?;
        let n = out
            .network_interface()
            .ok_or_else(|| ec2_error("InternalError", "CreateNetworkInterface answered without the interface"))?;
        convert::eni(n)
    }

    fn attach_network_interface(
        &mut self,
        eni: &EniId,
        instance: &InstanceId,
        device_index: u32,
    ) -> Result<(), CallError> {
        let call = self
            .client
            .attach_network_interface()
            .network_interface_id(&eni.0)
            .instance_id(&instance.0)
            .device_index(count(device_index, "DeviceIndex")?);
        let out = self.rt.block_on(call.send()).map_err(call_error)?;
        if let Some(a) = out.attachment_id() {
            self.attachments.insert(eni.clone(), a.to_string());
        }
        Ok(())
    }

    fn assign_private_ip_addresses(&mut self, eni: &EniId, n: u32) -> Result<Vec<Ipv4Addr>, CallError> {
        let call = self
            .client
            .assign_private_ip_addresses()
            .network_interface_id(&eni.0)
            .secondary_private_ip_address_count(count(n, "SecondaryPrivateIpAddressCount")?);
        let out = self.rt.block_on(call.send()).map_err(call_error)?;
        let got = out
            .assigned_private_ip_addresses()
            .iter()
            .map(|a| {
                a.private_ip_address().and_then(|s| s.parse().ok()).ok_or_else(|| {
                    ec2_error("InternalError", "AssignPrivateIpAddresses answered an unreadable address")
                })
            })
            .collect::<Result<Vec<Ipv4Addr>, _>>()?;
        exactly(got, n, "addresses")
    }

    fn assign_ipv4_prefixes(&mut self, eni: &EniId, n: u32) -> Result<Vec<Ipv4Net>, CallError> {
        let call = self
            .client
            .assign_private_ip_addresses()
            .network_interface_id(&eni.0)
            .ipv4_prefix_count(count(n, "Ipv4PrefixCount")?);
        let out = self.rt.block_on(call.send()).map_err(call_error)?;
        let got = out
            .assigned_ipv4_prefixes()
            .iter()
            .map(|p| {
                p.ipv4_prefix()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| ec2_error("InternalError", "AssignPrivateIpAddresses answered an unreadable prefix"))
            })
            .collect::<Result<Vec<Ipv4Net>, _>>()?;
        exactly(got, n, "prefixes")
    }

    fn assign_ipv6_prefix(&mut self, eni: &EniId) -> Result<Ipv6Net, CallError> {
        let call = self.client.assign_ipv6_addresses().network_interface_id(&eni.0).ipv6_prefix_count(1);
        let out = self.rt.block_on(call.send()).map_err(call_error)?;
        out.assigned_ipv6_prefixes()
            .first()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ec2_error("InternalError", "AssignIpv6Addresses answered no readable prefix"))
    }

    fn unassign_private_ip_addresses(&mut self, eni: &EniId, ips: &[Ipv4Addr]) -> Result<(), CallError> {
        let call = self
            .client
            .unassign_private_ip_addresses()
            .network_interface_id(&eni.0)
            .set_private_ip_addresses(Some(ips.iter().map(ToString::to_string).collect()));
        self.rt.block_on(call.send()).map_err(call_error).map(drop)
    }

    fn unassign_ipv4_prefixes(&mut self, eni: &EniId, prefixes: &[Ipv4Net]) -> Result<(), CallError> {
        let call = self
            .client
            .unassign_private_ip_addresses()
            .network_interface_id(&eni.0)
            .set_ipv4_prefixes(Some(prefixes.iter().map(ToString::to_string).collect()));
        self.rt.block_on(call.send()).map_err(call_error).map(drop)
    }

    fn detach_network_interface(&mut self, eni: &EniId) -> Result<(), CallError> {
        let attachment = self.attachment_of(eni)?;
        let call = self.client.detach_network_interface().attachment_id(&attachment);
        self.rt.block_on(call.send()).map_err(call_error)?;
        self.attachments.remove(eni);
        Ok(())
    }

    fn delete_network_interface(&mut self, eni: &EniId) -> Result<(), CallError> {
        let call = self.client.delete_network_interface().network_interface_id(&eni.0);
        self.rt.block_on(call.send()).map_err(call_error)?;
        self.attachments.remove(eni);
        Ok(())
    }

    fn describe_network_interfaces(&mut self, instance: &InstanceId) -> Result<Vec<EniDescription>, CallError> {
        self.describe_where(vec![filter("attachment.instance-id", &[&instance.0])])
    }

    fn describe_unattached(&mut self, cluster: Option<&str>) -> Result<Vec<EniDescription>, CallError> {
        let mut f = vec![filter("status", &["available"]), filter("tag-key", &[TAG_INSTANCE_ID])];
        if let Some(c) = cluster {
            f.push(filter(&format!("tag:{TAG_CLUSTER}"), &[c]));
        }
        if let Some(v) = &self.vpc_id {
            f.push(filter("vpc-id", &[v]));
        }
        self.describe_where(f)
    }

    fn set_delete_on_termination(&mut self, eni: &EniId) -> Result<(), CallError> {
        let attachment = self.attachment_of(eni)?;
        let call = self.client.modify_network_interface_attribute().network_interface_id(&eni.0).attachment(
            NetworkInterfaceAttachmentChanges::builder().attachment_id(attachment).delete_on_termination(true).build(),
        );
        self.rt.block_on(call.send()).map_err(call_error).map(drop)
    }

    fn describe_subnets(&mut self, az: &str) -> Result<Vec<SubnetDescription>, CallError> {
        let mut f = vec![filter("availability-zone", &[az])];
        if let Some(v) = &self.vpc_id {
            f.push(filter("vpc-id", &[v]));
        }
        let call = self.client.describe_subnets().set_filters(Some(f));
        let out = self.rt.block_on(call.send()).map_err(call_error)?;
        out.subnets().iter().map(convert::subnet).collect()
    }
}
