//! The pods Kubernetes has bound to this node that will want a VPC address and have none yet:
//! the adaptive pool's knowledge of what is coming, before kubelet asks the plugin.

use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus};
use kube::api::ObjectMeta;

/// A pod reduced to what podipd reads (the reflector keeps only this, not whole pod specs).
pub fn slim(pod: &mut Pod) {
    let spec = pod.spec.take().unwrap_or_default();
    let status = pod.status.take().unwrap_or_default();
    let meta = std::mem::take(&mut pod.metadata);
    *pod = Pod {
        metadata: ObjectMeta {
            name: meta.name,
            namespace: meta.namespace,
            uid: meta.uid,
            resource_version: meta.resource_version,
            deletion_timestamp: meta.deletion_timestamp,
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec { host_network: spec.host_network, node_name: spec.node_name, ..PodSpec::default() }),
        status: Some(PodStatus { phase: status.phase, pod_ip: status.pod_ip, ..PodStatus::default() }),
    };
}

/// The pod's (namespace, name) when it will want an address from the node's pool and has none
/// yet: not on the host's network, not finished, not being deleted, no pod IP reported.
pub fn wanting(pod: &Pod) -> Option<(String, String)> {
    let spec = pod.spec.as_ref()?;
    if spec.host_network == Some(true) || pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod.status.as_ref();
    let finished = status.and_then(|s| s.phase.as_deref()).is_some_and(|p| p == "Succeeded" || p == "Failed");
    let addressed = status.and_then(|s| s.pod_ip.as_deref()).is_some_and(|ip| !ip.is_empty());
    if finished || addressed {
        return None;
    }
    Some((pod.metadata.namespace.clone().unwrap_or_default(), pod.metadata.name.clone()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn only_pods_that_will_take_an_address_are_wanting() {
        let base = serde_json::json!({"metadata": {"name": "web-1", "namespace": "shop",
            "labels": {"app": "web"}, "managedFields": [{"manager": "kubelet"}]},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "nginx"}]},
            "status": {"phase": "Pending"}});
        let mut p = pod(base.clone());
        assert_eq!(wanting(&p), Some(("shop".into(), "web-1".into())));
        slim(&mut p);
        assert_eq!(wanting(&p), Some(("shop".into(), "web-1".into())), "slimmed, the same answer");
        assert!(p.spec.as_ref().unwrap().containers.is_empty() && p.metadata.labels.is_none());
        let mut host = base.clone();
        host["spec"]["hostNetwork"] = true.into();
        let mut done = base.clone();
        done["status"]["phase"] = "Succeeded".into();
        let mut deleting = base.clone();
        deleting["metadata"]["deletionTimestamp"] = "2026-11-27T10:00:00Z".into();
        let mut running = base.clone();
        running["status"]["podIP"] = "10.0.1.7".into();
        for (what, v) in [("host network", host), ("finished", done), ("deleting", deleting), ("addressed", running)] {
            let mut p = pod(v);
            assert_eq!(wanting(&p), None, "{what}");
            slim(&mut p);
            assert_eq!(wanting(&p), None, "{what}, slimmed");
        }
    }
}
