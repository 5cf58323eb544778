//! What a variant asks the operator to apply, as files: the aws-node settings, kubelet's max
//! pods (and the Karpenter fragment that sets it), and the AWS CLI scripts that make the subnet
//! reservations, the pod subnets with their ENIConfigs, and the private NAT gateways with their
//! routes.

use crate::scenario::Scenario;
use crate::script::{Helper, Script, comment_text, quote, var_name};
use crate::strategy::NatPlan;
use ipam::maxpods::{MaxPodsOptions, max_pods};
use ipnet::Ipv4Net;

/// `kubectl set env` on the aws-node DaemonSet.
pub fn aws_node_env(vars: &[(&str, String)]) -> String {
    set_env("aws-node", "Apply to the VPC CNI's DaemonSet; nodes pick it up as aws-node restarts.", vars)
}

/// `kubectl set env` on podipd's DaemonSet (`deploy/daemonset.yaml`).
pub fn podipd_env(vars: &[(&str, String)]) -> String {
    set_env(
        "podip",
        "Apply to podipd's DaemonSet once it is installed (docs/install.md: moving a node group from\n# aws-node, without draining); nodes pick it up as podipd restarts.",
        vars,
    )
}

fn set_env(daemonset: &str, comment: &str, vars: &[(&str, String)]) -> String {
    let mut s = format!("#!/bin/sh\n# {comment}\nset -eu\nkubectl -n kube-system set env daemonset/{daemonset} \\\n");
    for (i, (k, v)) in vars.iter().enumerate() {
        s.push_str(&format!("  {k}={}{}\n", quote(v), if i + 1 < vars.len() { " \\" } else { "" }));
    }
    s
}

/// kubelet's max pods per instance type, and the Karpenter fragment that sets it.
pub fn max_pods_files(sc: &Scenario, pd: bool, cn: bool) -> (String, String) {
    let opts = MaxPodsOptions { prefix_delegation: pd, custom_networking: cn, max_eni: None };
    let mut txt = String::from("# instance type -> kubelet maxPods (EKS max-pods calculator)\n");
    let mut karp = String::from(
        "# Karpenter (karpenter.k8s.aws/v1): merge into each node group's EC2NodeClass so kubelet's max pods\n\
         # matches the CNI mode. Only spec.kubelet.maxPods changes; keep the rest of the class as it is\n\
         # (role, amiSelectorTerms, subnetSelectorTerms, securityGroupSelectorTerms). One document per group.\n",
    );
    let mut seen = std::collections::BTreeSet::new();
    for g in &sc.node_groups {
        let mp = max_pods(g.instance_type, &opts).max_pods;
        if seen.insert(g.instance_type.name.as_str()) {
            txt.push_str(&format!("{} {mp}\n", g.instance_type.name));
        }
        karp.push_str(&format!(
            "---\n# node group {} ({})\nspec:\n  kubelet:\n    maxPods: {mp}\n",
            comment_text(&g.name),
            g.instance_type.name
        ));
    }
    (txt, karp)
}

/// Prefix reservations: for each of the scenario's subnets (by index), the blocks to reserve.
pub fn reservations_script(sc: &Scenario, plan: &[(usize, Vec<Ipv4Net>)]) -> String {
    let mut s = Script::new(sc, "Keeps whole /28 blocks for prefixes: subnet CIDR reservations of type prefix.");
    s.helper(Helper::Reserve);
    for (i, cidrs) in plan {
        let Some(sub) = sc.subnets.get(*i) else { continue };
        if cidrs.is_empty() {
            continue;
        }
        let id = s.existing_subnet(sc, sub);
        let blocks: u64 = cidrs.iter().map(|c| 1u64 << 28u8.saturating_sub(c.prefix_len())).sum();
        s.note(&format!("{} ({}): {blocks} /28 blocks in {} ranges", sub.name, sub.cidr, cidrs.len()));
        for c in cidrs {
            s.line(format!("reserve {id} {c}"));
        }
    }
    s.render()
}

/// New routable subnets for subnet discovery: the secondary block when one is needed, one subnet
/// per AZ, each tagged `kubernetes.io/role/cni=1`.
pub fn discovery_subnets_script(sc: &Scenario, blocks: &[Ipv4Net], subnets: &[(String, Ipv4Net)]) -> String {
    let mut s = Script::new(
        sc,
        "New routable subnets tagged kubernetes.io/role/cni=1: the VPC CNI's subnet discovery puts new ENIs there.",
    );
    s.vpc(sc);
    s.helper(Helper::Subnet);
    if !blocks.is_empty() {
        s.helper(Helper::VpcCidr);
    }
    for b in blocks {
        s.line(format!("vpc_cidr {b}"));
    }
    s.helper(Helper::SameRoutes);
    s.helper(Helper::UseRouteTable);
    for (az, net) in subnets {
        let v = var_name("NEW_SUBNET", az);
        s.line(format!("{v}=$(subnet {az} {net} podip-pods-{az})"));
        s.line(format!("ec2 create-tags --resources \"${v}\" --tags Key=kubernetes.io/role/cni,Value=1"));
        // Pods on its ENIs leave through its route table: the node subnet's, so they reach
        // what the nodes reach.
        if let Some(node) = sc.subnets.iter().find(|x| x.az == *az) {
            let node = s.existing_subnet(sc, node);
            s.line(format!("same_routes \"${v}\" {node}"));
        }
    }
    s.note("aws-node 1.18 or later with ENABLE_SUBNET_DISCOVERY=true (the default) uses them for new ENIs.");
    s.render()
}

/// Custom networking: the CG-NAT blocks, one pod subnet per AZ, and the ENIConfigs naming them.
pub fn custom_networking_script(sc: &Scenario, blocks: &[Ipv4Net], subnets: &[(String, Ipv4Net)]) -> String {
    let mut s = Script::new(
        sc,
        "Custom networking: associates the pods' CG-NAT blocks, creates a pod subnet per AZ, and writes the ENIConfigs.",
    );
    s.vpc(sc);
    let out = s.setting("ENICONFIG_FILE", "where the ENIConfigs are written, for kubectl apply -f", "eniconfig.yaml");
    let sgs = s.setting(
        "POD_SECURITY_GROUPS",
        "security groups of the pods' ENIs (space-separated sg- ids); empty: the node's primary ENI's",
        "",
    );
    s.helper(Helper::VpcCidr);
    s.helper(Helper::Subnet);
    s.helper(Helper::EniConfig);
    for b in blocks {
        s.line(format!("vpc_cidr {b}"));
    }
    let mut names = Vec::new();
    for (az, net) in subnets {
        let v = var_name("POD_SUBNET", az);
        s.line(format!("{v}=$(subnet {az} {net} podip-pods-{az})"));
        names.push((az, v));
    }
    s.line(format!("for g in {sgs}; do"));
    s.line("  case $g in sg-*) ;; *) echo \"POD_SECURITY_GROUPS: $g is not a security group id\" >&2; exit 1 ;; esac");
    s.line("done");
    s.note("One ENIConfig per AZ, named for it (aws-node: ENI_CONFIG_LABEL_DEF=topology.kubernetes.io/zone).");
    s.line("{");
    for (az, v) in &names {
        s.line(format!("  eniconfig {az} \"${v}\""));
    }
    s.line(format!("}} >\"{out}\""));
    s.line(format!("echo \"wrote {out}: kubectl apply -f {out}, then apply.sh, then replace the nodes\" >&2"));
    s.render()
}

/// The private NAT gateway layout: the non-routable blocks and node subnets, the gateways in
/// each AZ's routable subnet, and each AZ's non-routable route tables sending the destinations
/// to its gateways.
pub fn private_nat_script(
    sc: &Scenario,
    blocks: &[Ipv4Net],
    node_subnets: &[(String, Ipv4Net)],
    gateway_subnets: &[(String, usize)],
    nat: &NatPlan,
) -> String {
    let mut s = Script::new(
        sc,
        "Private NAT: non-routable node subnets, a private NAT gateway per AZ, and routes to the networks outside.",
    );
    s.vpc(sc);
    let dest: Vec<String> = sc.traffic.destinations.iter().map(ToString::to_string).collect();
    let dest = s.setting(
        "DESTINATIONS",
        "the networks outside the VPC that pods reach through the NAT gateways (peered VPCs, on-premises), \
         space-separated: the scenario's traffic.destinations, or the RFC 1918 blocks around the VPC",
        &dest.join(" "),
    );
    let egress = s.setting(
        "EGRESS_NAT_GATEWAY",
        "a NAT gateway (nat-...) for the nodes' other traffic (0.0.0.0/0: the EKS API, ECR, S3, unless VPC \
         endpoints serve them), e.g. the public one the node subnets use today; empty: no default route",
        "",
    );
    for h in [
        Helper::VpcCidr,
        Helper::Subnet,
        Helper::NatGateway,
        Helper::RouteTable,
        Helper::UseRouteTable,
        Helper::NatRoute,
    ] {
        s.helper(h);
    }
    for b in blocks {
        s.line(format!("vpc_cidr {b}"));
    }
    let mut per_az: std::collections::BTreeMap<&str, Vec<String>> = std::collections::BTreeMap::new();
    for (k, (az, net)) in node_subnets.iter().enumerate() {
        let v = format!("{}_{k}", var_name("NODES", az));
        s.line(format!("{v}=$(subnet {az} {net} podip-nodes-{az}-{k})"));
        per_az.entry(az.as_str()).or_default().push(v);
    }
    for (az, subs) in &per_az {
        let Some(routable) = gateway_subnets.iter().find(|(a, _)| a == az).and_then(|(_, i)| sc.subnets.get(*i)) else {
            s.note(&format!("{az}: no routable subnet to hold a NAT gateway"));
            continue;
        };
        let routable = s.existing_subnet(sc, routable);
        // A gateway serves the route tables of the subnets it is given; one with no subnet would
        // cost without carrying anything.
        let gws = (nat.gateways_per_az as usize).min(subs.len()).max(1);
        if gws < nat.gateways_per_az as usize {
            s.note(&format!(
                "{az}: {} gateways are planned but only {} node subnets route to them: split the subnets to use more",
                nat.gateways_per_az,
                subs.len()
            ));
        }
        for g in 0..gws {
            let nat_var = format!("{}_{g}", var_name("NAT", az));
            let rt_var = format!("{}_{g}", var_name("RT", az));
            s.line(format!("{nat_var}=$(nat_gateway {routable} podip-nat-{az}-{g} {})", nat.addresses_per_gateway));
            s.line(format!("{rt_var}=$(route_table podip-nonroutable-{az}-{g})"));
            s.line(format!("for d in {dest}; do nat_route \"${rt_var}\" \"$d\" \"${nat_var}\"; done"));
            s.line(format!("if [ -n \"{egress}\" ]; then nat_route \"${rt_var}\" 0.0.0.0/0 \"{egress}\"; fi"));
            for v in subs.iter().skip(g).step_by(gws) {
                s.line(format!("use_route_table \"${rt_var}\" \"${v}\""));
            }
        }
    }
    s.note("The routable subnets' own route tables must send the destinations on (a transit gateway or peering).");
    s.render()
}
