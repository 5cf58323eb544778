//! aws-node's variables that podipd does not honour, and why: each is refused at start when set
//! to anything but a value that asks for nothing (its default), so a manifest carried over from
//! aws-node never loses a setting silently. Logging and init-container variables are accepted
//! and named in a start-up note, since they change nothing podipd does.

/// A variable podipd does not honour: its name, the values that ask for nothing, and why.
pub struct Unsupported {
    /// The variable.
    pub name: &'static str,
    /// Values accepted (compared without case); empty means none is.
    pub accepted: &'static [&'static str],
    /// Why the variable is not honoured.
    pub why: &'static str,
}

const fn u(name: &'static str, accepted: &'static [&'static str], why: &'static str) -> Unsupported {
    Unsupported { name, accepted, why }
}

const OFF: &[&str] = &["false", "0", ""];
const ON: &[&str] = &["true", "1", ""];

/// Every aws-node variable podipd refuses unless it asks for nothing.
pub const UNSUPPORTED: &[Unsupported] = &[
    u("ENABLE_POD_ENI", OFF, "security groups for pods (trunk and branch ENIs) are not supported"),
    u("ENABLE_MULTI_NIC", OFF, "only the default network card is managed"),
    u("DISABLE_NETWORK_RESOURCE_PROVISIONING", OFF, "podipd always manages the node's ENIs and addresses"),
    u("ENABLE_IMDS_ONLY_MODE", OFF, "podipd always reads addresses from EC2, never from the instance metadata alone"),
    u(
        "MANAGE_UNTAGGED_ENI",
        ON,
        "untagged ENIs are always managed; tag one node.k8s.amazonaws.com/no_manage=true to leave it alone",
    ),
    u("ADDITIONAL_ENI_TAGS", &["", "{}"], "extra ENI tags are not supported; CLUSTER_NAME tags the ENIs"),
    u("AWS_VPC_K8S_CNI_CONNMARK", &["0x80", "128", ""], "the connmark is fixed at 0x80"),
    u("AWS_VPC_CNI_NODE_PORT_SUPPORT", ON, "NodePort support is always on"),
    u("AWS_EXTERNAL_SERVICE_CIDRS", &[""], "external service CIDRs are not supported"),
    u("ENABLE_BANDWIDTH_PLUGIN", OFF, "chain the bandwidth plugin in the CNI configuration instead"),
    u("DISABLE_POD_V6", OFF, "chain the tuning plugin in the CNI configuration instead"),
    u("ENABLE_V6_EGRESS", OFF, "IPv6 egress for IPv4 pods is not supported"),
    u("ENABLE_V4_EGRESS", ON, "IPv6 pods always get IPv4 egress through the node"),
    u("NETWORK_POLICY_ENFORCING_MODE", &["standard", ""], "network policy is left to a network policy agent"),
    u("ENABLE_NETWORK_POLICY", OFF, "network policy is left to a network policy agent"),
    u("DISABLE_INTROSPECTION", OFF, "introspection is always served on the daemon's owner-only socket"),
    u("DISABLE_METRICS", OFF, "metrics are always served, on loopback (PODIP_METRICS_ADDRESS)"),
    u("INTROSPECTION_BIND_ADDRESS", &["127.0.0.1:61679", ""], "introspection is served on the daemon's socket"),
    u("METRICS_BIND_ADDRESS", &[""], "set PODIP_METRICS_ADDRESS (loopback only)"),
    u("AWS_VPC_K8S_CNI_BACKING_STORE", &[""], "set PODIP_CHECKPOINT"),
    u("ANNOTATE_POD_IP", OFF, "pod annotations are not written (podipd may not patch pods)"),
    u("PODIP_CLOUD", &[], REMOVED),
    u("PODIP_INSTANCE_TYPE", &[], REMOVED),
    u("PODIP_NODE_SUBNET", &[], REMOVED),
];

/// Why the settings of podipd's private cloud protocol are refused.
const REMOVED: &str = "removed: the node comes from the instance metadata service and EC2 from the AWS SDK; \
to use `podip sim-vpc`, set AWS_ENDPOINT_URL_EC2 and AWS_EC2_METADATA_SERVICE_ENDPOINT to the URLs it prints";

/// Variables accepted and ignored, each named in a start-up note.
pub const IGNORED: &[(&str, &str)] = &[
    ("AWS_VPC_K8S_CNI_LOGLEVEL", "podipd logs to stderr"),
    ("AWS_VPC_K8S_CNI_LOG_FILE", "podipd logs to stderr"),
    ("AWS_VPC_K8S_PLUGIN_LOG_FILE", "podip-cni logs nothing: its stdout is the CNI protocol"),
    ("AWS_VPC_K8S_PLUGIN_LOG_LEVEL", "podip-cni logs nothing: its stdout is the CNI protocol"),
    ("AWS_VPC_K8S_CNI_CONFIGURE_RPFILTER", "an init-container setting"),
    ("DISABLE_TCP_EARLY_DEMUX", "an init-container setting"),
    ("ENABLE_NFTABLES", "podipd always uses nftables"),
    ("HOST_CNI_BIN_PATH", "an init-container setting"),
    ("HOST_CNI_CONFDIR_PATH", "an init-container setting"),
    ("CLUSTER_ENDPOINT", "the API server comes from the service account (or KUBECONFIG)"),
    (
        "POD_SECURITY_GROUP_ENFORCING_MODE",
        "security groups for pods are not supported (ENABLE_POD_ENI=true is refused)",
    ),
    ("AWS_VPC_K8S_EGRESS_V4_PLUGIN_LOG_FILE", "podip-cni logs nothing: its stdout is the CNI protocol"),
    ("AWS_VPC_K8S_EGRESS_V6_PLUGIN_LOG_FILE", "podip-cni logs nothing: its stdout is the CNI protocol"),
    ("VPC_CNI_VERSION", "informational"),
    ("VPC_ID", "podipd reads the VPC from the cloud"),
];

/// Prefixes of aws-node's own variables: one podipd does not know is refused. (Not `AWS_`:
/// the SDK's own variables, such as IRSA's `AWS_ROLE_ARN`, share it.)
pub const FAMILY: &[&str] =
    &["AWS_VPC_", "AWS_MANAGE_", "WARM_", "MINIMUM_IP", "ENABLE_", "DISABLE_", "ENI_CONFIG_", "ANNOTATE_", "PODIP_"];

/// Problems with the environment's aws-node variables (`known` are the ones podipd honours),
/// and notes for the ones it ignores.
pub fn check(vars: &[(String, String)], known: &[&str]) -> (Vec<String>, Vec<String>) {
    let mut bad = Vec::new();
    let mut notes = Vec::new();
    for (name, value) in vars {
        if known.contains(&name.as_str()) {
            continue;
        }
        if let Some(x) = UNSUPPORTED.iter().find(|x| x.name == name) {
            if !x.accepted.iter().any(|a| a.eq_ignore_ascii_case(value.trim())) {
                bad.push(format!("{name}={value:?}: not supported: {}", x.why));
            }
        } else if let Some((_, why)) = IGNORED.iter().find(|(n, _)| n == name) {
            notes.push(format!("{name} is ignored: {why}"));
        } else if FAMILY.iter().any(|p| name.starts_with(p)) {
            bad.push(format!("{name}={value:?}: not an aws-node setting podipd knows"));
        }
    }
    (bad, notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn a_setting_that_asks_for_something_podip_cannot_do_is_refused_by_name() {
        let (bad, _) = check(&vars(&[("ENABLE_POD_ENI", "true"), ("ENABLE_MULTI_NIC", "false")]), &[]);
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(bad[0].starts_with("ENABLE_POD_ENI=\"true\": not supported: security groups for pods"), "{bad:?}");
    }

    #[test]
    fn the_stock_aws_node_manifest_is_accepted() {
        // The env of aws-node's DaemonSet as shipped (config/master/aws-k8s-cni.yaml) and as the
        // EKS add-on sets it; the ones podipd honours are passed as known.
        let known = crate::config::VARIABLES.map(|(n, _)| n);
        let stock = vars(&[
            ("ADDITIONAL_ENI_TAGS", "{}"),
            ("ANNOTATE_POD_IP", "false"),
            ("AWS_VPC_CNI_NODE_PORT_SUPPORT", "true"),
            ("AWS_VPC_ENI_MTU", "9001"),
            ("AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG", "false"),
            ("AWS_VPC_K8S_CNI_EXTERNALSNAT", "false"),
            ("AWS_VPC_K8S_CNI_LOGLEVEL", "DEBUG"),
            ("AWS_VPC_K8S_CNI_LOG_FILE", "/host/var/log/aws-routed-eni/ipamd.log"),
            ("AWS_VPC_K8S_CNI_RANDOMIZESNAT", "prng"),
            ("AWS_VPC_K8S_CNI_VETHPREFIX", "eni"),
            ("AWS_VPC_K8S_PLUGIN_LOG_FILE", "/var/log/aws-routed-eni/plugin.log"),
            ("AWS_VPC_K8S_PLUGIN_LOG_LEVEL", "DEBUG"),
            ("CLUSTER_ENDPOINT", "https://ABC.gr7.us-east-1.eks.amazonaws.com"),
            ("CLUSTER_NAME", "prod"),
            ("DISABLE_INTROSPECTION", "false"),
            ("DISABLE_LEAKED_ENI_CLEANUP", "false"),
            ("POD_SECURITY_GROUP_ENFORCING_MODE", "standard"),
            ("AWS_VPC_K8S_EGRESS_V4_PLUGIN_LOG_FILE", "/var/log/aws-routed-eni/egress-v4-plugin.log"),
            ("AWS_MANAGE_ENIS_NON_SCHEDULABLE", "false"),
            ("DISABLE_METRICS", "false"),
            ("DISABLE_NETWORK_RESOURCE_PROVISIONING", "false"),
            ("ENABLE_IPv4", "true"),
            ("ENABLE_IPv6", "false"),
            ("ENABLE_POD_ENI", "false"),
            ("ENABLE_PREFIX_DELEGATION", "false"),
            ("ENABLE_SUBNET_DISCOVERY", "true"),
            ("NETWORK_POLICY_ENFORCING_MODE", "standard"),
            ("VPC_CNI_VERSION", "v1.19.2"),
            ("VPC_ID", "vpc-0123"),
            ("WARM_ENI_TARGET", "1"),
            ("WARM_PREFIX_TARGET", "1"),
            ("MY_NODE_NAME", "ip-10-0-0-1.ec2.internal"),
            ("MY_POD_NAME", "aws-node-abcde"),
            ("AWS_ROLE_ARN", "arn:aws:iam::1:role/x"),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/secrets/eks.amazonaws.com/serviceaccount/token"),
            ("AWS_REGION", "us-east-1"),
        ]);
        let (bad, _) = check(&stock, &known);
        assert!(bad.is_empty(), "{bad:?}");
    }

    #[test]
    fn unknown_aws_node_variables_are_refused_and_logging_ones_noted() {
        let (bad, notes) = check(
            &vars(&[
                ("WARM_IP_TARGETS", "5"),
                ("AWS_VPC_K8S_CNI_LOGLEVEL", "DEBUG"),
                ("WARM_IP_TARGET", "5"),
                ("HOME", "/root"),
            ]),
            &["WARM_IP_TARGET"],
        );
        assert_eq!(bad, vec!["WARM_IP_TARGETS=\"5\": not an aws-node setting podipd knows".to_string()]);
        assert_eq!(notes.len(), 1);
    }
}
