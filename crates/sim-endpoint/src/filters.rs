//! EC2's describe filters over ENIs and subnets: the filter names podip and the VPC CNI send
//! (and the common ones an operator types), with EC2's `*` and `?` wildcards. An unknown filter
//! is refused by name, as EC2 refuses it.

use crate::query::Refusal;
use cloud::{EniDescription, EniStatus, SubnetDescription};

/// Whether `value` matches `pattern`, where `*` is any run of characters and `?` any one.
pub fn glob(pattern: &str, value: &str) -> bool {
    let (p, v): (Vec<char>, Vec<char>) = (pattern.chars().collect(), value.chars().collect());
    // Iterative matching with one backtrack point for the last `*`: linear in practice.
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < v.len() {
        if i < p.len() && (p[i] == '?' || p[i] == v[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

fn any(values: &[String], field: &str) -> bool {
    values.iter().any(|p| glob(p, field))
}

fn tag_filter(name: &str, values: &[String], tags: &std::collections::BTreeMap<String, String>) -> Option<bool> {
    if name == "tag-key" {
        return Some(tags.keys().any(|k| any(values, k)));
    }
    if name == "tag-value" {
        return Some(tags.values().any(|v| any(values, v)));
    }
    let key = name.strip_prefix("tag:")?;
    Some(tags.get(key).is_some_and(|v| any(values, v)))
}

fn unknown(name: &str) -> Refusal {
    Refusal { code: "InvalidParameterValue", message: format!("The filter '{name}' is invalid") }
}

/// EC2's longest filter value.
const MAX_VALUE: usize = 255;

fn check_values(filters: &[(String, Vec<String>)]) -> Result<(), Refusal> {
    for (n, values) in filters {
        if values.is_empty() {
            return Err(Refusal { code: "InvalidParameterValue", message: format!("The filter '{n}' has no values") });
        }
        if values.iter().any(|v| v.chars().count() > MAX_VALUE) {
            return Err(Refusal {
                code: "InvalidParameterValue",
                message: format!("A value of the filter '{n}' is longer than {MAX_VALUE} characters"),
            });
        }
    }
    Ok(())
}

/// Checks every filter name and value before any is applied.
///
/// # Errors
/// The first unknown name, a filter without values, a value too long.
pub fn check_eni_filters(filters: &[(String, Vec<String>)]) -> Result<(), Refusal> {
    check_values(filters)?;
    const KNOWN: [&str; 14] = [
        "network-interface-id",
        "attachment.instance-id",
        "attachment.attachment-id",
        "attachment.device-index",
        "attachment.status",
        "status",
        "subnet-id",
        "vpc-id",
        "availability-zone",
        "description",
        "interface-type",
        "group-id",
        "mac-address",
        "private-ip-address",
    ];
    for (n, _) in filters {
        if !(KNOWN.contains(&n.as_str()) || n == "tag-key" || n == "tag-value" || n.starts_with("tag:")) {
            return Err(unknown(n));
        }
    }
    Ok(())
}

/// Whether `e` passes every filter (names already checked). `az` is the ENI's subnet's AZ.
pub fn eni_matches(e: &EniDescription, az: &str, vpc: &str, filters: &[(String, Vec<String>)]) -> bool {
    filters.iter().all(|(name, values)| {
        if let Some(t) = tag_filter(name, values, &e.tags) {
            return t;
        }
        let attachment = e.attachment.as_ref();
        match name.as_str() {
            "network-interface-id" => any(values, &e.id.0),
            "attachment.instance-id" => attachment.is_some_and(|(i, _)| any(values, &i.0)),
            "attachment.attachment-id" => attachment.is_some() && any(values, &crate::actions::attachment_id(&e.id)),
            "attachment.device-index" => attachment.is_some_and(|(_, d)| any(values, &d.to_string())),
            "attachment.status" => attachment.is_some() && any(values, attachment_status(e.status)),
            "status" => any(values, status(e.status)),
            "subnet-id" => any(values, &e.subnet.0),
            "vpc-id" => any(values, vpc),
            "availability-zone" => any(values, az),
            "description" => any(values, &e.description),
            "interface-type" => any(values, &e.interface_type),
            "group-id" => e.security_groups.iter().any(|g| any(values, g)),
            "mac-address" => any(values, &e.mac),
            "private-ip-address" => {
                std::iter::once(&e.primary_ip).chain(&e.secondary_ips).any(|ip| any(values, &ip.to_string()))
            }
            _ => false,
        }
    })
}

/// Checks every subnet filter name and value.
///
/// # Errors
/// The first unknown name, a filter without values, a value too long.
pub fn check_subnet_filters(filters: &[(String, Vec<String>)]) -> Result<(), Refusal> {
    check_values(filters)?;
    const KNOWN: [&str; 6] = ["subnet-id", "vpc-id", "availability-zone", "cidr-block", "state", "default-for-az"];
    for (n, _) in filters {
        if !(KNOWN.contains(&n.as_str()) || n == "tag-key" || n == "tag-value" || n.starts_with("tag:")) {
            return Err(unknown(n));
        }
    }
    Ok(())
}

/// Whether subnet `s` passes every filter (names already checked).
pub fn subnet_matches(s: &SubnetDescription, vpc: &str, filters: &[(String, Vec<String>)]) -> bool {
    filters.iter().all(|(name, values)| {
        if let Some(t) = tag_filter(name, values, &s.tags) {
            return t;
        }
        match name.as_str() {
            "subnet-id" => any(values, &s.id.0),
            "vpc-id" => any(values, vpc),
            "availability-zone" => any(values, &s.az),
            "cidr-block" => any(values, &s.cidr.to_string()),
            "state" => any(values, "available"),
            "default-for-az" => any(values, "false"),
            _ => false,
        }
    })
}

/// `Status` of an ENI.
pub fn status(s: EniStatus) -> &'static str {
    match s {
        EniStatus::Available => "available",
        EniStatus::Attaching => "attaching",
        EniStatus::InUse => "in-use",
        EniStatus::Detaching => "detaching",
    }
}

/// `Attachment.Status` of an attached ENI.
pub fn attachment_status(s: EniStatus) -> &'static str {
    match s {
        EniStatus::Available => "detached",
        EniStatus::Attaching => "attaching",
        EniStatus::InUse => "attached",
        EniStatus::Detaching => "detaching",
    }
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn wildcards_match_as_ec2s_do() {
        assert!(glob("aws-K8S-*", "aws-K8S-i-0abc"));
        assert!(glob("*", ""));
        assert!(glob("eni-?bc", "eni-abc"));
        assert!(!glob("eni-?bc", "eni-bc"));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
        assert!(glob("exact", "exact") && !glob("exact", "exact1"));
    }
}
