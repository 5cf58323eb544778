//! Kubelet max pods for an instance type, as the EKS max-pods calculator computes it
//! (`amazon-eks-ami` `max-pods-calculator.sh`; `vpc-cni-behaviour.md` §2.13).

use crate::catalog::InstanceType;
use serde::Serialize;

/// Addresses in one IPv4 prefix (/28).
pub const IPS_PER_PREFIX: u32 = 16;
/// Host-network pods the formula adds (aws-node and kube-proxy).
pub const HOST_NETWORK_PODS: u32 = 2;
/// Cap for instance types with at most [`SMALL_VCPU_LIMIT`] vCPUs.
pub const SMALL_CAP: u32 = 110;
/// Cap for larger instance types.
pub const LARGE_CAP: u32 = 250;
/// vCPU count at or below which [`SMALL_CAP`] applies.
pub const SMALL_VCPU_LIMIT: u32 = 30;

/// The settings the calculator takes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MaxPodsOptions {
    /// Prefix delegation is on (honoured only where the type supports it).
    pub prefix_delegation: bool,
    /// Custom networking: the primary ENI carries no pods.
    pub custom_networking: bool,
    /// `MAX_ENI` / `--cni-max-eni`: used when at least 1 and below the type's limit.
    pub max_eni: Option<u32>,
}

/// The calculator's answer, in the `podip maxpods --json` schema.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MaxPods {
    /// The instance type asked about.
    pub instance_type: String,
    /// Recommended kubelet max pods (capped at 110 or 250).
    pub max_pods: u32,
    /// The uncapped value (`--show-max-allowed`).
    pub max_allowed: u32,
    /// ENIs usable for pods.
    pub enis: u32,
    /// Pod addresses per ENI.
    pub ips_per_eni: u32,
    /// Whether prefix delegation was applied (false when the type cannot do it).
    #[serde(skip)]
    pub prefix_delegation: bool,
}

/// Number of ENIs the node may hold: the type's limit, lowered by `MAX_ENI` when that is ≥ 1.
pub fn eni_limit(t: &InstanceType, max_eni: Option<u32>) -> u32 {
    match max_eni {
        Some(m) if m >= 1 && m < t.max_enis => m,
        _ => t.max_enis,
    }
}

/// Computes max pods for `t` under `opts`.
pub fn max_pods(t: &InstanceType, opts: &MaxPodsOptions) -> MaxPods {
    let mut enis = eni_limit(t, opts.max_eni);
    if opts.custom_networking {
        enis = enis.saturating_sub(1);
    }
    let pd = opts.prefix_delegation && t.supports_prefix_delegation();
    let per_eni = if pd { (t.ipv4_per_eni - 1) * IPS_PER_PREFIX } else { t.ipv4_per_eni - 1 };
    let max_allowed = enis * per_eni + HOST_NETWORK_PODS;
    let cap = if t.vcpus_or_estimate() <= SMALL_VCPU_LIMIT { SMALL_CAP } else { LARGE_CAP };
    MaxPods {
        instance_type: t.name.clone(),
        max_pods: max_allowed.min(cap),
        max_allowed,
        enis,
        ips_per_eni: per_eni,
        prefix_delegation: pd,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;

    fn mp(name: &str, pd: bool, cn: bool, max_eni: Option<u32>) -> MaxPods {
        let t = Catalog::embedded().get(name).unwrap();
        max_pods(t, &MaxPodsOptions { prefix_delegation: pd, custom_networking: cn, max_eni })
    }

    /// Values from `misc/eni-max-pods.txt` and the calculator (vpc-cni-behaviour.md §3 samples).
    #[test]
    fn secondary_ip_mode_matches_eni_max_pods_txt() {
        for (name, want) in [
            ("t2.micro", 4),
            ("t3.medium", 17),
            ("m5.large", 29),
            ("c5.large", 29),
            ("m5.xlarge", 58),
            ("m6a.xlarge", 58),
            ("c5.18xlarge", 737),
            ("m6i.32xlarge", 737),
            ("m5.metal", 737),
            ("c6in.32xlarge", 394),
            ("g5.48xlarge", 345),
            ("p4d.24xlarge", 737),
            ("p5.48xlarge", 100),
            ("trn1.32xlarge", 247),
            ("trn2.48xlarge", 100),
        ] {
            assert_eq!(mp(name, false, false, None).max_allowed, want, "{name}");
        }
    }

    #[test]
    fn caps_by_vcpu() {
        assert_eq!(mp("c5.18xlarge", false, false, None).max_pods, 250);
        assert_eq!(mp("m5.xlarge", false, false, None).max_pods, 58);
        let t3 = mp("t3.medium", true, false, None);
        assert_eq!((t3.max_allowed, t3.max_pods), (242, 110));
    }

    #[test]
    fn prefix_delegation() {
        let m5 = mp("m5.large", true, false, None);
        assert_eq!((m5.max_allowed, m5.max_pods, m5.ips_per_eni), (434, 110, 144));
        assert_eq!(mp("m5.xlarge", true, false, None).max_allowed, 898);
        assert_eq!(mp("c5.18xlarge", true, false, None).max_allowed, 11762);
        // Xen types cannot do PD: the calculator falls back to the secondary-IP formula.
        let t2 = mp("t2.micro", true, false, None);
        assert_eq!((t2.max_allowed, t2.prefix_delegation), (4, false));
    }

    #[test]
    fn custom_networking_drops_the_primary_eni() {
        let m5 = mp("m5.large", false, true, None);
        assert_eq!((m5.max_pods, m5.enis, m5.ips_per_eni), (20, 2, 9));
    }

    #[test]
    fn max_eni_lowers_the_limit_only_when_valid() {
        assert_eq!(mp("m5.xlarge", false, false, Some(2)).max_pods, 30);
        assert_eq!(mp("m5.xlarge", false, false, Some(9)).max_pods, 58);
        assert_eq!(mp("m5.xlarge", false, false, Some(0)).max_pods, 58);
    }
}
