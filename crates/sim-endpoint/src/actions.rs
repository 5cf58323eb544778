//! Each EC2 action the simulator serves: its parameters read and checked, the simulated VPC
//! called, the answer written as EC2 writes it. Parameters are all read before the VPC is
//! touched, so a refused request changes nothing.

use crate::filters;
use crate::query::{Params, Refusal};
use crate::xml::{Xml, response};
use cloud::sim::SimVpc;
use cloud::{CallError, CreateEni, Ec2, EniDescription};
use ipam::addr::{EniId, InstanceId, SubnetId};
use ipam::catalog::Catalog;
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;

/// The account every simulated resource belongs to.
pub const OWNER_ID: &str = "111122223333";

/// What an action answers: the XML body, or EC2's error code and message.
pub type Answer = Result<String, Failure>;

/// A failed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// EC2 error code.
    pub code: String,
    /// Message.
    pub message: String,
}

impl From<Refusal> for Failure {
    fn from(r: Refusal) -> Failure {
        Failure { code: r.code.to_string(), message: r.message }
    }
}

impl From<CallError> for Failure {
    fn from(e: CallError) -> Failure {
        Failure { code: e.code, message: e.message }
    }
}

fn invalid(name: &str, value: &str, why: &str) -> Failure {
    Failure {
        code: "InvalidParameterValue".into(),
        message: format!("Value ({value}) for parameter {name} is invalid. {why}"),
    }
}

/// The attachment id of `eni`'s attachment (one per ENI in the simulator).
pub fn attachment_id(eni: &EniId) -> String {
    format!("eni-attach-{}", eni.0.trim_start_matches("eni-"))
}

fn eni_of_attachment(vpc: &SimVpc, id: &str) -> Result<EniId, Failure> {
    let not_found = || Failure {
        code: "InvalidAttachmentID.NotFound".into(),
        message: format!("The attachment ID '{id}' does not exist"),
    };
    let eni = EniId(format!("eni-{}", id.strip_prefix("eni-attach-").ok_or_else(not_found)?));
    match vpc.peek_eni(&eni) {
        Some(d) if d.attachment.is_some() => Ok(eni),
        _ => Err(not_found()),
    }
}

/// The largest count a request may ask for (far above any instance's limits).
const MAX_COUNT: u32 = 4096;
/// EC2's longest description.
const MAX_DESCRIPTION: usize = 255;

fn count(p: &Params, name: &str) -> Result<Option<u32>, Failure> {
    match p.parsed::<u32>(name, "Expected a whole number.")? {
        Some(n) if n > MAX_COUNT => Err(invalid(name, &n.to_string(), &format!("Expected at most {MAX_COUNT}."))),
        n => Ok(n),
    }
}

/// EC2's answer to a request with `DryRun=true`: the request was valid; nothing changed.
fn dry_run(action: &str) -> Failure {
    Failure {
        code: "DryRunOperation".into(),
        message: format!("Request would have succeeded, but DryRun flag is set ({action})."),
    }
}

fn eni_param(p: &Params) -> Result<EniId, Failure> {
    Ok(EniId(p.required("NetworkInterfaceId")?.to_string()))
}

/// Serves `action` on `vpc`.
pub fn dispatch(vpc: &mut SimVpc, action: &str, p: &Params, rid: &str) -> Answer {
    const ACTIONS: [&str; 12] = [
        "CreateNetworkInterface",
        "AttachNetworkInterface",
        "AssignPrivateIpAddresses",
        "UnassignPrivateIpAddresses",
        "AssignIpv6Addresses",
        "DetachNetworkInterface",
        "ModifyNetworkInterfaceAttribute",
        "DeleteNetworkInterface",
        "DescribeNetworkInterfaces",
        "DescribeSubnets",
        "RunInstances",
        "TerminateInstances",
    ];
    if ACTIONS.contains(&action) && p.flag("DryRun")? == Some(true) {
        return Err(dry_run(action));
    }
    match action {
        "CreateNetworkInterface" => create(vpc, p, rid),
        "AttachNetworkInterface" => attach(vpc, p, rid),
        "AssignPrivateIpAddresses" => assign(vpc, p, rid),
        "UnassignPrivateIpAddresses" => unassign(vpc, p, rid),
        "AssignIpv6Addresses" => assign_v6(vpc, p, rid),
        "DetachNetworkInterface" => {
            let eni = eni_of_attachment(vpc, p.required("AttachmentId")?)?;
            p.flag("Force")?;
            vpc.detach_network_interface(&eni)?;
            Ok(response(action, rid, |_| {}))
        }
        "ModifyNetworkInterfaceAttribute" => modify(vpc, p, rid),
        "DeleteNetworkInterface" => {
            let eni = eni_param(p)?;
            vpc.delete_network_interface(&eni)?;
            Ok(response(action, rid, |x| {
                x.leaf("return", "true");
            }))
        }
        "DescribeNetworkInterfaces" => describe_enis(vpc, p, rid),
        "DescribeSubnets" => describe_subnets(vpc, p, rid),
        "RunInstances" => run(vpc, p, rid),
        "TerminateInstances" => terminate(vpc, p, rid),
        other => Err(Failure {
            code: "InvalidAction".into(),
            message: format!("The action {other} is not valid for this web service (the simulated VPC)."),
        }),
    }
}

fn create(vpc: &mut SimVpc, p: &Params, rid: &str) -> Answer {
    let req = CreateEni {
        subnet: SubnetId(p.required("SubnetId")?.to_string()),
        security_groups: p.list("SecurityGroupId"),
        secondary_ips: count(p, "SecondaryPrivateIpAddressCount")?.unwrap_or(0),
        prefixes: count(p, "Ipv4PrefixCount")?.unwrap_or(0),
        description: p.get("Description").unwrap_or_default().to_string(),
        tags: p.tags_for("network-interface"),
    };
    if req.description.chars().count() > MAX_DESCRIPTION {
        return Err(invalid("Description", "...", &format!("At most {MAX_DESCRIPTION} characters.")));
    }
    if let Some((k, v)) = req.tags.iter().find(|(k, v)| k.chars().count() > 128 || v.chars().count() > 256) {
        return Err(invalid(
            "TagSpecification",
            &format!("{k}={v}"),
            "Tag keys hold at most 128 characters, values 256.",
        ));
    }
    if req.secondary_ips > 0 && req.prefixes > 0 {
        return Err(Failure {
            code: "InvalidParameterCombination".into(),
            message: "SecondaryPrivateIpAddressCount and Ipv4PrefixCount cannot both be given".into(),
        });
    }
    let e = vpc.create_network_interface(&req)?;
    let az = az_of(vpc, &e.subnet);
    Ok(response("CreateNetworkInterface", rid, |x| {
        x.open("networkInterface");
        eni_xml(x, &e, &az, vpc.vpc_id());
        x.close("networkInterface");
    }))
}

fn attach(vpc: &mut SimVpc, p: &Params, rid: &str) -> Answer {
    let eni = eni_param(p)?;
    let instance = InstanceId(p.required("InstanceId")?.to_string());
    let device = p.required("DeviceIndex")?;
    let device: u32 = device.parse().map_err(|_| invalid("DeviceIndex", device, "Expected a whole number."))?;
    if let Some(card) = p.get("NetworkCardIndex")
        && card != "0"
    {
        return Err(invalid("NetworkCardIndex", card, "The simulated instances have one network card."));
    }
    vpc.attach_network_interface(&eni, &instance, device)?;
    Ok(response("AttachNetworkInterface", rid, |x| {
        x.leaf("attachmentId", attachment_id(&eni)).leaf("networkCardIndex", 0);
    }))
}

fn assign(vpc: &mut SimVpc, p: &Params, rid: &str) -> Answer {
    let eni = eni_param(p)?;
    let ips = count(p, "SecondaryPrivateIpAddressCount")?;
    let prefixes = count(p, "Ipv4PrefixCount")?;
    if !p.list("PrivateIpAddress").is_empty() || !p.list("Ipv4Prefix").is_empty() {
        return Err(Failure {
            code: "InvalidParameterCombination".into(),
            message: "the simulated VPC assigns by count only (SecondaryPrivateIpAddressCount or Ipv4PrefixCount)"
                .into(),
        });
    }
    match (ips, prefixes) {
        (Some(n), None) => {
            let got = vpc.assign_private_ip_addresses(&eni, n)?;
            Ok(response("AssignPrivateIpAddresses", rid, |x| {
                x.leaf("networkInterfaceId", &eni.0);
                x.items("assignedPrivateIpAddressesSet", &got, |x, ip| {
                    x.leaf("privateIpAddress", ip);
                });
                x.items("assignedIpv4PrefixSet", std::iter::empty::<Ipv4Net>(), |_, _| {});
            }))
        }
        (None, Some(n)) => {
            let got = vpc.assign_ipv4_prefixes(&eni, n)?;
            Ok(response("AssignPrivateIpAddresses", rid, |x| {
                x.leaf("networkInterfaceId", &eni.0);
                x.items("assignedPrivateIpAddressesSet", std::iter::empty::<Ipv4Addr>(), |_, _| {});
                x.items("assignedIpv4PrefixSet", &got, |x, n| {
                    x.leaf("ipv4Prefix", n);
                });
            }))
        }
        _ => Err(Failure {
            code: "InvalidParameterCombination".into(),
            message: "exactly one of SecondaryPrivateIpAddressCount and Ipv4PrefixCount must be given".into(),
        }),
    }
}

fn unassign(vpc: &mut SimVpc, p: &Params, rid: &str) -> Answer {
    let eni = eni_param(p)?;
    let ips = p.list("PrivateIpAddress");
    let prefixes = p.list("Ipv4Prefix");
    match (ips.is_empty(), prefixes.is_empty()) {
        (false, true) => {
            let ips: Vec<Ipv4Addr> = ips
                .iter()
                .map(|s| s.parse().map_err(|_| invalid("PrivateIpAddress", s, "Expected an IPv4 address.")))
                .collect::<Result<_, _>>()?;
            vpc.unassign_private_ip_addresses(&eni, &ips)?;
        }
        (true, false) => {
            let nets: Vec<Ipv4Net> = prefixes
                .iter()
                .map(|s| s.parse().map_err(|_| invalid("Ipv4Prefix", s, "Expected an IPv4 prefix.")))
                .collect::<Result<_, _>>()?;
            vpc.unassign_ipv4_prefixes(&eni, &nets)?;
        }
        _ => {
            return Err(Failure {
                code: "InvalidParameterCombination".into(),
                message: "exactly one of PrivateIpAddress and Ipv4Prefix must be given".into(),
            });
        }
    }
    Ok(response("UnassignPrivateIpAddresses", rid, |x| {
        x.leaf("return", "true");
    }))
}

fn assign_v6(vpc: &mut SimVpc, p: &Params, rid: &str) -> Answer {
    let eni = eni_param(p)?;
    match count(p, "Ipv6PrefixCount")? {
        Some(1) => {}
        Some(n) => return Err(invalid("Ipv6PrefixCount", &n.to_string(), "The simulated VPC assigns one /80.")),
        None => {
            return Err(Failure {
                code: "InvalidParameterCombination".into(),
                message: "the simulated VPC assigns IPv6 prefixes only (Ipv6PrefixCount=1)".into(),
            });
        }
    }
    let prefix = vpc.assign_ipv6_prefix(&eni)?;
    Ok(response("AssignIpv6Addresses", rid, |x| {
        x.leaf("networkInterfaceId", &eni.0);
        x.items("assignedIpv6Addresses", std::iter::empty::<String>(), |_, _| {});
        x.open("assignedIpv6PrefixSet").leaf("item", prefix).close("assignedIpv6PrefixSet");
    }))
}

fn modify(vpc: &mut SimVpc, p: &Params, rid: &str) -> Answer {
    let eni = eni_param(p)?;
    let Some(att) = p.get("Attachment.AttachmentId") else {
        return Err(Failure {
            code: "InvalidParameterCombination".into(),
            message: "the simulated VPC modifies only Attachment.DeleteOnTermination".into(),
        });
    };
    match p.flag("Attachment.DeleteOnTermination")? {
        Some(true) => {}
        Some(false) => {
            return Err(invalid("Attachment.DeleteOnTermination", "false", "The simulated VPC only sets it."));
        }
        None => return Err(Refusal::missing_param("Attachment.DeleteOnTermination").into()),
    }
    if eni_of_attachment(vpc, att)? != eni {
        return Err(Failure {
            code: "InvalidAttachmentID.NotFound".into(),
            message: format!("The attachment ID '{att}' does not belong to {eni}"),
        });
    }
    vpc.set_delete_on_termination(&eni)?;
    Ok(response("ModifyNetworkInterfaceAttribute", rid, |x| {
        x.leaf("return", "true");
    }))
}

fn az_of(vpc: &SimVpc, subnet: &SubnetId) -> String {
    vpc.subnet(subnet).map(|s| s.az.clone()).unwrap_or_default()
}

/// EC2's `MaxResults` bounds for `DescribeNetworkInterfaces`.
const MAX_RESULTS: std::ops::RangeInclusive<usize> = 5..=1000;

fn describe_enis(vpc: &mut SimVpc, p: &Params, rid: &str) -> Answer {
    let ids = p.list("NetworkInterfaceId");
    let filters = p.filters();
    filters::check_eni_filters(&filters)?;
    let max = match p.get("MaxResults") {
        None => None,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if MAX_RESULTS.contains(&n) && ids.is_empty() => Some(n),
            Ok(_) if !ids.is_empty() => {
                return Err(Failure {
                    code: "InvalidParameterCombination".into(),
                    message: "The parameter NetworkInterfaceIds cannot be used with the parameter MaxResults".into(),
                });
            }
            _ => return Err(invalid("MaxResults", v, "Expected a number from 5 to 1000.")),
        },
    };
    let after = p.get("NextToken").map(str::to_string);
    if let Some(t) = &after
        && !(t.starts_with("eni-") && t.len() <= 64 && t[4..].bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(invalid("NextToken", t, "The token is not one this service gave."));
    }
    let subnets: std::collections::BTreeMap<SubnetId, String> =
        vpc.subnets().iter().map(|s| (s.id.clone(), s.az.clone())).collect();
    let vpc_id = vpc.vpc_id();
    let wanted: std::collections::BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    let mut found = vpc.describe_enis_where(|e| {
        let az = subnets.get(&e.subnet).map(String::as_str).unwrap_or_default();
        (wanted.is_empty() || wanted.contains(e.id.0.as_str())) && filters::eni_matches(e, az, vpc_id, &filters)
    })?;
    if let Some(missing) = ids.iter().find(|id| !found.iter().any(|e| &e.id.0 == *id)) {
        return Err(Failure {
            code: "InvalidNetworkInterfaceID.NotFound".into(),
            message: format!("The networkInterface ID '{missing}' does not exist"),
        });
    }
    if let Some(t) = &after {
        found.retain(|e| e.id.0.as_str() > t.as_str());
    }
    let next = match max {
        Some(n) if found.len() > n => {
            found.truncate(n);
            found.last().map(|e| e.id.0.clone())
        }
        _ => None,
    };
    Ok(response("DescribeNetworkInterfaces", rid, |x| {
        x.items("networkInterfaceSet", &found, |x, e| {
            eni_xml(x, e, subnets.get(&e.subnet).map_or("", String::as_str), vpc_id)
        });
        if let Some(n) = &next {
            x.leaf("nextToken", n);
        }
    }))
}

fn describe_subnets(vpc: &mut SimVpc, p: &Params, rid: &str) -> Answer {
    let ids = p.list("SubnetId");
    let filters = p.filters();
    filters::check_subnet_filters(&filters)?;
    let vpc_id = vpc.vpc_id();
    let found = vpc.describe_subnets_where(|s| {
        (ids.is_empty() || ids.contains(&s.id.0)) && filters::subnet_matches(s, vpc_id, &filters)
    })?;
    if let Some(missing) = ids.iter().find(|id| !found.iter().any(|s| &s.id.0 == *id)) {
        return Err(Failure {
            code: "InvalidSubnetID.NotFound".into(),
            message: format!("The subnet ID '{missing}' does not exist"),
        });
    }
    Ok(response("DescribeSubnets", rid, |x| {
        x.items("subnetSet", &found, |x, s| {
            x.leaf("subnetId", &s.id.0)
                .leaf("state", "available")
                .leaf("vpcId", vpc_id)
                .leaf("ownerId", OWNER_ID)
                .leaf("cidrBlock", s.cidr)
                .leaf("availableIpAddressCount", s.available)
                .leaf("availabilityZone", &s.az)
                .leaf("defaultForAz", "false")
                .leaf("mapPublicIpOnLaunch", "false")
                .tags(&s.tags);
        });
    }))
}

fn run(vpc: &mut SimVpc, p: &Params, rid: &str) -> Answer {
    let type_name = p.required("InstanceType")?;
    let t = Catalog::embedded().get(type_name).map_err(|e| invalid("InstanceType", type_name, &e.to_string()))?;
    let subnet = SubnetId(p.required("SubnetId")?.to_string());
    let min = count(p, "MinCount")?.ok_or_else(|| Failure::from(Refusal::missing_param("MinCount")))?;
    let max = count(p, "MaxCount")?.ok_or_else(|| Failure::from(Refusal::missing_param("MaxCount")))?;
    if min == 0 || max < min || max > 100 {
        return Err(invalid(
            "MaxCount",
            &max.to_string(),
            "MinCount must be at least 1 and at most MaxCount (100 here).",
        ));
    }
    let mut launched = Vec::new();
    for _ in 0..max {
        match vpc.run_instance(t, &subnet) {
            Ok(i) => launched.push(i),
            Err(e) if launched.len() as u32 >= min => {
                let _ = e;
                break;
            }
            Err(e) => {
                for (id, _) in &launched {
                    let _ = vpc.terminate_instance(id);
                }
                return Err(e.into());
            }
        }
    }
    let az = az_of(vpc, &subnet);
    let vpc_id = vpc.vpc_id();
    Ok(response("RunInstances", rid, |x| {
        x.leaf("reservationId", format!("r-{}", rid.replace('-', "").get(..17).unwrap_or("0")));
        x.leaf("ownerId", OWNER_ID);
        x.items("instancesSet", &launched, |x, (id, primary)| {
            x.leaf("instanceId", &id.0)
                .leaf("imageId", p.get("ImageId").unwrap_or("ami-00000000000000000"))
                .open("instanceState")
                .leaf("code", 16)
                .leaf("name", "running")
                .close("instanceState")
                .leaf("instanceType", type_name)
                .open("placement")
                .leaf("availabilityZone", &az)
                .close("placement")
                .leaf("subnetId", &subnet.0)
                .leaf("vpcId", vpc_id)
                .leaf("privateIpAddress", primary.primary_ip);
            x.items("networkInterfaceSet", [primary], |x, e| eni_xml(x, e, &az, vpc_id));
        });
    }))
}

fn terminate(vpc: &mut SimVpc, p: &Params, rid: &str) -> Answer {
    let ids = p.list("InstanceId");
    if ids.is_empty() {
        return Err(Refusal::missing_param("InstanceId.1").into());
    }
    // Every id checked before any instance goes: a refused request changes nothing.
    if let Some(missing) = ids.iter().find(|id| vpc.instance(&InstanceId((*id).clone())).is_none()) {
        return Err(Failure {
            code: "InvalidInstanceID.NotFound".into(),
            message: format!("The instance ID '{missing}' does not exist"),
        });
    }
    for id in &ids {
        vpc.terminate_instance(&InstanceId(id.clone()))?;
    }
    Ok(response("TerminateInstances", rid, |x| {
        x.items("instancesSet", &ids, |x, id| {
            x.leaf("instanceId", id);
            x.open("currentState").leaf("code", 32).leaf("name", "shutting-down").close("currentState");
            x.open("previousState").leaf("code", 16).leaf("name", "running").close("previousState");
        });
    }))
}

/// The fields of a `NetworkInterface`, as EC2 writes them.
pub fn eni_xml(x: &mut Xml, e: &EniDescription, az: &str, vpc_id: &str) {
    x.leaf("networkInterfaceId", &e.id.0)
        .leaf("subnetId", &e.subnet.0)
        .leaf("vpcId", vpc_id)
        .leaf("availabilityZone", az)
        .leaf("description", &e.description)
        .leaf("ownerId", OWNER_ID)
        .leaf("requesterManaged", "false")
        .leaf("status", filters::status(e.status))
        .leaf("macAddress", &e.mac)
        .leaf("privateIpAddress", e.primary_ip)
        .leaf("sourceDestCheck", "true")
        .leaf("interfaceType", &e.interface_type);
    x.items("groupSet", &e.security_groups, |x, g| {
        x.leaf("groupId", g).leaf("groupName", g);
    });
    if let Some((instance, device)) = &e.attachment {
        x.open("attachment")
            .leaf("attachmentId", attachment_id(&e.id))
            .leaf("instanceId", &instance.0)
            .leaf("instanceOwnerId", OWNER_ID)
            .leaf("deviceIndex", device)
            .leaf("networkCardIndex", 0)
            .leaf("status", filters::attachment_status(e.status))
            .leaf("deleteOnTermination", e.delete_on_termination)
            .close("attachment");
    }
    x.tags(&e.tags);
    let addrs = std::iter::once((e.primary_ip, true)).chain(e.secondary_ips.iter().map(|ip| (*ip, false)));
    x.items("privateIpAddressesSet", addrs, |x, (ip, primary)| {
        x.leaf("privateIpAddress", ip).leaf("primary", primary);
    });
    x.items("ipv4PrefixSet", &e.prefixes, |x, n| {
        x.leaf("ipv4Prefix", n);
    });
    x.items("ipv6AddressesSet", std::iter::empty::<String>(), |_, _| {});
    x.items("ipv6PrefixSet", &e.ipv6_prefixes, |x, n| {
        x.leaf("ipv6Prefix", n);
    });
}
