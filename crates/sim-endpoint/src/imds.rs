//! The instance metadata service (IMDSv2) of each simulated instance, under
//! `/imds/<instance-id>/latest/...`: a session token from a `PUT` with its TTL header, then the
//! metadata paths the VPC CNI and the SDK read. ENIs and addresses come from the simulator's
//! lagging metadata view, as a real node's metadata trails EC2.

use cloud::sim::SimVpc;
use ipam::Time;
use ipam::addr::InstanceId;
use std::collections::HashMap;
use std::time::Duration;

/// The header a token `PUT` must carry, and its answer echoes.
pub const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
/// The header every metadata `GET` must carry.
pub const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
/// The role whose credentials the simulated instances serve.
pub const ROLE: &str = "podip-simulated-node";
/// IMDSv2's longest token lifetime.
const MAX_TTL: u64 = 21_600;
/// Live tokens kept per service (IMDS throttles token requests too).
const MAX_TOKENS: usize = 10_000;

/// Issued tokens: token to (instance, expiry).
#[derive(Debug, Default)]
pub struct Tokens {
    issued: HashMap<String, (InstanceId, Time)>,
    next: u64,
}

/// A metadata answer: HTTP status, body, and the TTL header to echo on a token.
#[derive(Debug, PartialEq, Eq)]
pub struct Reply {
    /// Status.
    pub status: u16,
    /// Body (plain text, or JSON for credentials).
    pub body: String,
    /// The token's TTL, for a token `PUT`.
    pub ttl: Option<u64>,
}

fn reply(status: u16, body: impl Into<String>) -> Reply {
    Reply { status, body: body.into(), ttl: None }
}

/// Serves one metadata request for the path after `/imds/`.
pub fn serve(
    vpc: &SimVpc,
    tokens: &mut Tokens,
    now: Time,
    method: &str,
    rest: &str,
    ttl_header: Option<&str>,
    token: Option<&str>,
) -> Reply {
    let Some((instance, path)) = rest.split_once('/') else { return reply(404, "Not Found") };
    let instance = InstanceId(instance.to_string());
    if vpc.instance(&instance).is_none() {
        return reply(404, "Not Found");
    }
    if path == "latest/api/token" {
        if method != "PUT" {
            return reply(405, "Method Not Allowed");
        }
        let ttl = match ttl_header.map(str::parse::<u64>) {
            Some(Ok(t)) if (1..=MAX_TTL).contains(&t) => t,
            _ => return reply(400, "Bad Request"),
        };
        tokens.next += 1;
        let t = format!("AQAEA{:016x}{}", tokens.next, instance.0.trim_start_matches("i-"));
        tokens.issued.retain(|_, (_, until)| *until > now);
        if tokens.issued.len() >= MAX_TOKENS {
            return reply(429, "Too Many Requests");
        }
        tokens.issued.insert(t.clone(), (instance, now + Duration::from_secs(ttl)));
        return Reply { status: 200, body: t, ttl: Some(ttl) };
    }
    if method != "GET" {
        return reply(405, "Method Not Allowed");
    }
    match token.and_then(|t| tokens.issued.get(t)) {
        Some((i, until)) if *i == instance && *until > now => {}
        _ => return reply(401, "Unauthorized"),
    }
    match path.strip_prefix("latest/meta-data/") {
        Some(p) => meta_data(vpc, &instance, now, p).map_or_else(|| reply(404, "Not Found"), |b| reply(200, b)),
        None => reply(404, "Not Found"),
    }
}

fn meta_data(vpc: &SimVpc, instance: &InstanceId, now: Time, path: &str) -> Option<String> {
    let view = vpc.instance(instance)?;
    let enis = vpc.metadata_enis(instance);
    let primary = enis.iter().find(|e| e.attachment.as_ref().is_some_and(|(_, d)| *d == 0))?;
    let vpc_cidrs = || vpc.vpc_cidrs().iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
    Some(match path {
        "instance-id" => instance.0.clone(),
        "instance-type" => view.instance_type,
        "placement/availability-zone" => view.az.clone(),
        "placement/region" => region_of(&view.az).to_string(),
        "local-ipv4" => primary.primary_ip.to_string(),
        "mac" => primary.mac.clone(),
        "security-groups" => primary.security_groups.join("\n"),
        "iam/security-credentials/" | "iam/security-credentials" => ROLE.to_string(),
        "iam/info" => format!(
            r#"{{"Code":"Success","LastUpdated":"{}","InstanceProfileArn":"arn:aws:iam::{}:instance-profile/{ROLE}","InstanceProfileId":"AIPASIMULATED"}}"#,
            rfc3339(now),
            crate::actions::OWNER_ID
        ),
        p if p == format!("iam/security-credentials/{ROLE}") => format!(
            r#"{{"Code":"Success","LastUpdated":"{}","Type":"AWS-HMAC","AccessKeyId":"ASIASIMULATEDNODE","SecretAccessKey":"simulated","Token":"simulated","Expiration":"{}"}}"#,
            rfc3339(now),
            rfc3339(now + Duration::from_secs(6 * 3600))
        ),
        "network/interfaces/macs/" | "network/interfaces/macs" => {
            enis.iter().map(|e| format!("{}/", e.mac)).collect::<Vec<_>>().join("\n")
        }
        p => {
            let rest = p.strip_prefix("network/interfaces/macs/")?;
            let (mac, field) = rest.split_once('/')?;
            let e = enis.iter().find(|e| e.mac == mac)?;
            let subnet = vpc.subnet(&e.subnet)?;
            match field {
                "interface-id" => e.id.0.clone(),
                "device-number" => e.attachment.as_ref()?.1.to_string(),
                "network-card" => "0".into(),
                "local-ipv4s" => std::iter::once(e.primary_ip)
                    .chain(e.secondary_ips.iter().copied())
                    .map(|ip| ip.to_string())
                    .collect::<Vec<_>>()
                    .join("\n"),
                "ipv4-prefix" if !e.prefixes.is_empty() => {
                    e.prefixes.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
                }
                "ipv6-prefix" if !e.ipv6_prefixes.is_empty() => {
                    e.ipv6_prefixes.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
                }
                "subnet-id" => e.subnet.0.clone(),
                "subnet-ipv4-cidr-block" => subnet.cidr.to_string(),
                "subnet-ipv6-cidr-blocks" => subnet.ipv6?.to_string(),
                "vpc-id" => vpc.vpc_id().to_string(),
                "vpc-ipv4-cidr-block" => vpc.vpc_cidrs().first()?.to_string(),
                "vpc-ipv4-cidr-blocks" => vpc_cidrs(),
                "security-group-ids" => e.security_groups.join("\n"),
                "owner-id" => crate::actions::OWNER_ID.to_string(),
                "mac" => e.mac.clone(),
                _ => return None,
            }
        }
    })
}

/// The region of an availability zone (`us-east-1a` is in `us-east-1`).
pub fn region_of(az: &str) -> &str {
    az.trim_end_matches(|c: char| c.is_ascii_lowercase())
}

fn rfc3339(t: Time) -> String {
    let at = std::time::UNIX_EPOCH + Duration::from_millis(t.as_millis());
    humantime::format_rfc3339_seconds(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::region_of;

    #[test]
    fn a_zone_is_in_its_region() {
        assert_eq!(region_of("us-east-1a"), "us-east-1");
        assert_eq!(region_of("ap-southeast-2c"), "ap-southeast-2");
    }
}
