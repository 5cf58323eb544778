//! What podipd takes from its own Node object: kubelet's max pods (`status.capacity.pods`),
//! whether the node is unschedulable (the `node.kubernetes.io/unschedulable` taint, or
//! `spec.unschedulable`), and the name of its ENIConfig.

use crate::eniconfig::{NameSources, name_for};
use k8s_openapi::api::core::v1::Node;

/// The unschedulable taint's key.
pub const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";

/// The node as podipd needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    /// Kubelet's max pods, when the node reports a readable capacity.
    pub max_pods: Option<u32>,
    /// Cordoned or tainted unschedulable.
    pub unschedulable: bool,
    /// The ENIConfig the node names (`default` when it names none).
    pub eniconfig: String,
}

/// Reads `node` with the ENIConfig name `sources`.
pub fn view(node: &Node, sources: &NameSources) -> NodeView {
    let max_pods = node
        .status
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("pods"))
        .and_then(|q| q.0.parse::<u32>().ok())
        .filter(|n| *n > 0);
    let spec = node.spec.as_ref();
    let tainted = spec.and_then(|s| s.taints.as_ref()).is_some_and(|t| t.iter().any(|t| t.key == UNSCHEDULABLE_TAINT));
    let cordoned = spec.and_then(|s| s.unschedulable).unwrap_or(false);
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let annotations = node.metadata.annotations.clone().unwrap_or_default();
    NodeView { max_pods, unschedulable: tainted || cordoned, eniconfig: name_for(&labels, &annotations, sources) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_pods_taints_and_the_eniconfig_name_are_read_from_the_node() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "ip-10-0-0-1", "labels": {"k8s.amazonaws.com/eniConfig": "us-east-1a"}},
            "spec": {"taints": [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]},
            "status": {"capacity": {"pods": "29", "cpu": "2"}}
        }))
        .unwrap();
        let v = view(&node, &NameSources::default());
        assert_eq!(v, NodeView { max_pods: Some(29), unschedulable: true, eniconfig: "us-east-1a".into() });
        let bare: Node = serde_json::from_value(serde_json::json!({"metadata": {"name": "n"}})).unwrap();
        assert_eq!(
            view(&bare, &NameSources::default()),
            NodeView { max_pods: None, unschedulable: false, eniconfig: "default".into() }
        );
        let odd: Node = serde_json::from_value(
            serde_json::json!({"metadata": {"name": "n"}, "status": {"capacity": {"pods": "1k"}}}),
        )
        .unwrap();
        assert_eq!(
            view(&odd, &NameSources::default()).max_pods,
            None,
            "an unreadable capacity is not a number of pods"
        );
    }
}
