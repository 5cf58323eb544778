//! The alphabet, kind and size of every string and number podip stores or passes to the kernel,
//! checked before any use: what the plugin sends, what the checkpoint holds.

use crate::checkpoint::Allocation;
use crate::protocol::Attach;

/// Longest netns path accepted.
pub const MAX_PATH: usize = 4096;
/// Longest Kubernetes namespace (a DNS label).
pub const MAX_POD_NAMESPACE: usize = 63;
/// Longest Kubernetes pod name (a DNS subdomain).
pub const MAX_POD_NAME: usize = 253;
/// Most attachments a GC request may list as valid.
pub const MAX_VALID: usize = 65_536;

fn kube_name(what: &str, v: &str, max: usize) -> Result<(), String> {
    if v.is_empty() || v.len() > max || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') {
        let shown: String = v.chars().take(64).collect();
        return Err(format!("{what}={shown:?} must be 1 to {max} letters, digits, - or ."));
    }
    Ok(())
}

fn key(network: &str, container_id: &str, ifname: &str) -> Result<(), String> {
    let shown = |v: &str| v.chars().take(64).collect::<String>();
    if let Some(p) = cni::env::network_name_problem(network) {
        return Err(format!("network={:?} {p}", shown(network)));
    }
    if !cni::env::valid_container_id(container_id) {
        return Err(format!(
            "container_id={:?} must be at most {} letters, digits, _ . - (a letter or digit first)",
            shown(container_id),
            cni::env::MAX_CONTAINER_ID
        ));
    }
    if let Some(p) = cni::env::ifname_problem(ifname) {
        return Err(format!("ifname={:?} {p}", shown(ifname)));
    }
    Ok(())
}

fn pod(ns: Option<&str>, name: Option<&str>) -> Result<(), String> {
    if let Some(ns) = ns {
        kube_name("pod_namespace", ns, MAX_POD_NAMESPACE)?;
        // A DNS label: no dot, so `namespace.name` (a veth's hash) names one pod only.
        if ns.contains('.') {
            return Err(format!(
                "pod_namespace={:?} must hold no dot (a DNS label)",
                ns.chars().take(64).collect::<String>()
            ));
        }
    }
    if let Some(n) = name {
        kube_name("pod_name", n, MAX_POD_NAME)?;
    }
    Ok(())
}

/// Checks a request's attachment.
///
/// # Errors
/// The first bad field, named with (the start of) its value.
pub fn attach(a: &Attach) -> Result<(), String> {
    key(&a.network, &a.container_id, &a.ifname)?;
    pod(a.pod_namespace.as_deref(), a.pod_name.as_deref())?;
    if let Some(n) = &a.netns
        && (n.len() > MAX_PATH || !n.starts_with('/') || n.contains('\0'))
    {
        return Err(format!("netns must be an absolute path of at most {MAX_PATH} bytes"));
    }
    Ok(())
}

/// Checks a checkpoint entry the same way.
///
/// # Errors
/// The first bad field.
pub fn allocation(a: &Allocation) -> Result<(), String> {
    // An attachment recovered from the host is keyed by its veth alone.
    let recovered = a.container_id.strip_prefix(crate::daemon::RECOVERED);
    if let Some(veth) = recovered.filter(|_| a.network.is_empty() && a.ifname.is_empty()) {
        return match interface_problem(veth) {
            None => Ok(()),
            Some(p) => Err(format!("container_id={:?} {p}", a.container_id)),
        };
    }
    key(&a.network, &a.container_id, &a.ifname)?;
    pod(a.pod_namespace.as_deref(), a.pod_name.as_deref())
}

/// Why `name` cannot name one of the node's interfaces, if it cannot: 1 to 15 ASCII letters,
/// digits, `_`, `.` or `-` (it reaches nftables and iproute2).
pub fn interface_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > 15 {
        Some("must be 1 to 15 characters")
    } else if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')) {
        Some("must hold only ASCII letters, digits, _ . -")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a() -> Attach {
        Attach {
            network: "podip".into(),
            container_id: "c1".into(),
            ifname: "eth0".into(),
            netns: Some("/proc/1/ns/net".into()),
            pod_namespace: Some("default".into()),
            pod_name: Some("web-0".into()),
            release_only: None,
            scrub_rules: false,
        }
    }

    #[test]
    fn hostile_fields_are_refused_by_name() {
        assert!(attach(&a()).is_ok());
        type Mutation = Box<dyn Fn(&mut Attach)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (Box::new(|a| a.network = "n".repeat(50_000_000)), "network"),
            (Box::new(|a| a.network = "a\"b".into()), "network"),
            (Box::new(|a| a.container_id = "x".repeat(300)), "container_id"),
            (Box::new(|a| a.ifname = "e\u{7}".into()), "ifname"),
            (Box::new(|a| a.pod_name = Some("web;rm".into())), "pod_name"),
            (Box::new(|a| a.pod_namespace = Some("n".repeat(64))), "pod_namespace"),
            (Box::new(|a| a.pod_namespace = Some("a.b".into())), "pod_namespace"),
            (Box::new(|a| a.netns = Some("relative".into())), "netns"),
        ];
        for (f, field) in cases {
            let mut x = a();
            f(&mut x);
            let e = attach(&x).unwrap_err();
            assert!(e.starts_with(field) && e.len() < 200, "{e}");
        }
        assert_eq!(interface_problem("eth0"), None);
        assert!(interface_problem("eth0\" accept; iifname \"x").is_some());
        assert!(interface_problem("").is_some());
    }
}
