//! kube-rs's real reflectors and event recorder against the in-process API server: the node's
//! max pods, taint and ENIConfig followed through relabels, new and deleted ENIConfigs, a watch
//! expired by compaction (410), a forbidden resource; the node's pods that will want addresses;
//! the cluster's node count; and every request the code makes, as RBAC
//! sees it, held to deploy/rbac.yaml's ClusterRole.

use kubernetes::Cluster;
use kubernetes::apiserver::ApiServer;
use kubernetes::eniconfig::{EniConfigSpec, Missing, NameSources};
use kubernetes::events::{Events, Problem};
use serde_json::json;
use std::time::Duration;

fn node(labels: serde_json::Value, pods: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Node",
           "metadata": {"name": "ip-10-0-0-1", "labels": labels},
           "status": {"capacity": {"pods": pods}}})
}

fn eniconfig(name: &str, subnet: &str) -> serde_json::Value {
    json!({"apiVersion": "crd.k8s.amazonaws.com/v1alpha1", "kind": "ENIConfig",
           "metadata": {"name": name}, "spec": {"subnet": subnet, "securityGroups": [format!("sg-{name}")]}})
}

fn spec(name: &str, subnet: &str) -> EniConfigSpec {
    EniConfigSpec { subnet: subnet.into(), security_groups: vec![format!("sg-{name}")] }
}

/// Polls `f` on the runtime until it holds (10 s at most).
#[allow(clippy::disallowed_methods)] // Waits for real watches.
fn until(rt: &tokio::runtime::Runtime, what: &str, f: impl Fn() -> bool) {
    let t0 = std::time::Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(10), "never: {what}");
        rt.block_on(async { tokio::time::sleep(Duration::from_millis(20)).await });
    }
}

#[test]
fn the_node_and_its_eniconfig_are_followed_without_a_restart() {
    aws_lc_rs_provider();
    let api = ApiServer::start().unwrap();
    api.apply("nodes", node(json!({"k8s.amazonaws.com/eniConfig": "az1"}), "29"));
    api.apply(
        "nodes",
        json!({"metadata": {"name": "another-node", "labels": {}}, "status": {"capacity": {"pods": "110"}}}),
    );
    api.apply("eniconfigs", eniconfig("az1", "subnet-a"));
    api.apply("eniconfigs", eniconfig("az2", "subnet-b"));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = rt.block_on(async { api.client() }).unwrap();
    let cluster = rt.block_on(async { Cluster::start(client.clone(), "ip-10-0-0-1", NameSources::default()) });
    until(&rt, "synced", || cluster.synced());
    let n = cluster.node().unwrap();
    assert_eq!((n.max_pods, n.unschedulable, n.eniconfig.as_str()), (Some(29), false, "az1"));
    assert_eq!(cluster.eniconfig(), Some(Ok(spec("az1", "subnet-a"))));

    // Relabelled: the other ENIConfig, at once.
    api.apply("nodes", node(json!({"k8s.amazonaws.com/eniConfig": "az2"}), "29"));
    until(&rt, "relabel seen", || cluster.eniconfig() == Some(Ok(spec("az2", "subnet-b"))));
    // Its ENIConfig deleted: missing, by name; created again: back.
    api.delete("eniconfigs", "", "az2");
    until(&rt, "deletion seen", || cluster.eniconfig() == Some(Err(Missing("az2".into()))));
    api.apply("eniconfigs", eniconfig("az2", "subnet-c"));
    until(&rt, "new ENIConfig seen", || cluster.eniconfig() == Some(Ok(spec("az2", "subnet-c"))));

    // History compacted under the watches: they get 410 and list again; changes still arrive.
    api.compact();
    api.apply("nodes", node(json!({"k8s.amazonaws.com/eniConfig": "az2"}), "58"));
    until(&rt, "max pods after a 410", || cluster.node().and_then(|n| n.max_pods) == Some(58));
    // Cordoned: the taint is seen.
    let mut tainted = node(json!({"k8s.amazonaws.com/eniConfig": "az2"}), "58");
    tainted["spec"] = json!({"taints": [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]});
    api.apply("nodes", tainted);
    until(&rt, "taint seen", || cluster.node().is_some_and(|n| n.unschedulable));

    // Forbidden for a while (an RBAC mistake being fixed): the last known state stays, and the
    // watch recovers once allowed.
    api.forbid("nodes", true);
    api.compact();
    until(&rt, "the 403 surfaced", || cluster.last_error().is_some_and(|e| e.contains("forbidden")));
    assert_eq!(cluster.node().and_then(|n| n.max_pods), Some(58), "the last state is kept");
    api.forbid("nodes", false);
    api.apply("nodes", node(json!({"k8s.amazonaws.com/eniConfig": "az1"}), "20"));
    until(&rt, "recovered after 403", || cluster.node().and_then(|n| n.max_pods) == Some(20));
    assert_eq!(cluster.last_error(), None, "an event after the error clears it");

    // The node's pods: only those that will take an address and have none yet; another node's
    // pods, host-network pods and finished ones are not counted.
    let pod = |name: &str, node: &str, extra: serde_json::Value| {
        let mut p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "shop"},
                           "spec": {"nodeName": node, "containers": [{"name": "c", "image": "nginx"}]},
                           "status": {"phase": "Pending"}});
        if let (Some(p), Some(e)) = (p.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                p[k].as_object_mut().unwrap().extend(v.as_object().unwrap().clone());
            }
        }
        p
    };
    until(&rt, "the pods listed", || cluster.pods_wanting_addresses() == Some(vec![]));
    api.apply("pods", pod("web-1", "ip-10-0-0-1", json!({})));
    api.apply("pods", pod("web-2", "ip-10-0-0-1", json!({})));
    api.apply("pods", pod("elsewhere", "another-node", json!({})));
    api.apply("pods", pod("agent", "ip-10-0-0-1", json!({"spec": {"hostNetwork": true}})));
    api.apply("pods", pod("job", "ip-10-0-0-1", json!({"status": {"phase": "Succeeded"}})));
    let wanting = |n: usize| {
        let c = cluster.clone();
        move || c.pods_wanting_addresses().is_some_and(|p| p.len() == n)
    };
    until(&rt, "two pods coming", wanting(2));
    api.apply("pods", pod("web-1", "ip-10-0-0-1", json!({"status": {"podIP": "10.0.1.7", "phase": "Running"}})));
    until(&rt, "one pod left to start", wanting(1));
    assert_eq!(cluster.pods_wanting_addresses(), Some(vec![("shop".to_string(), "web-2".to_string())]));

    // The cluster's node count: one page of one node and the count of the rest.
    rt.block_on(async { cluster.count_nodes(client.clone(), Duration::from_millis(100)) });
    until(&rt, "two nodes counted", || cluster.node_count() == Some(2));
    for i in 0..5 {
        api.apply("nodes", json!({"metadata": {"name": format!("n{i}")}}));
    }
    until(&rt, "seven nodes counted", || cluster.node_count() == Some(7));
    api.delete("nodes", "", "n0");
    until(&rt, "a node gone", || cluster.node_count() == Some(6));

    // Events on the daemon's pod; a repeat is folded into the same event.
    let events = Events::new(client, "kube-system", "podip-x7k2p");
    rt.block_on(events.publish(&Problem::SubnetExhausted("subnet-a has no free address".into()))).unwrap();
    rt.block_on(events.publish(&Problem::SubnetExhausted("subnet-a has no free address".into()))).unwrap();
    let evs = api.objects("events");
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert_eq!(evs[0]["reason"], "SubnetExhausted");
    assert_eq!(evs[0]["type"], "Warning");
    assert_eq!(evs[0]["regarding"]["name"], "podip-x7k2p");
    assert_eq!(evs[0]["regarding"]["kind"], "Pod");

    // Every request the code made is one the ClusterRole grants, and every grant is used.
    let rbac = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/rbac.yaml")).unwrap();
    let granted = granted(&rbac);
    let made: std::collections::BTreeSet<(String, String, String)> =
        api.accesses().into_iter().map(|a| (a.group, a.resource, a.verb)).collect();
    assert_eq!(made, granted, "the ClusterRole grants exactly what podipd's Kubernetes code calls");
}

/// The ClusterRole's rules as (group, resource, verb).
fn granted(rbac: &str) -> std::collections::BTreeSet<(String, String, String)> {
    let mut out = std::collections::BTreeSet::new();
    for doc in yaml_serde::Deserializer::from_str(rbac) {
        let v: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
        if v["kind"] != "ClusterRole" {
            continue;
        }
        let role: k8s_openapi::api::rbac::v1::ClusterRole = serde_json::from_value(v).unwrap();
        for r in role.rules.unwrap_or_default() {
            for g in r.api_groups.unwrap_or_default() {
                for res in r.resources.clone().unwrap_or_default() {
                    for verb in &r.verbs {
                        out.insert((g.clone(), res.clone(), verb.clone()));
                    }
                }
            }
        }
    }
    out
}

fn aws_lc_rs_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

#[test]
fn a_list_in_pages_of_one_sees_every_object_once_in_order() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, ListParams};
    aws_lc_rs_provider();
    let api = ApiServer::start().unwrap();
    // Namespaces that sort differently as strings with a '/' than as pairs ('-' < '/').
    for (ns, name) in [("a", "p1"), ("a", "p2"), ("a-x", "q1"), ("b", "r1")] {
        api.apply("pods", json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns}}));
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = rt.block_on(async { api.client() }).unwrap();
    let pods: Api<Pod> = Api::all(client);
    let mut seen = Vec::new();
    let mut remaining = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut lp = ListParams::default().limit(1);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = rt.block_on(pods.list(&lp)).unwrap();
        for p in &page.items {
            seen.push(format!(
                "{}/{}",
                p.metadata.namespace.clone().unwrap_or_default(),
                p.metadata.name.clone().unwrap()
            ));
        }
        remaining.push(page.metadata.remaining_item_count);
        token = page.metadata.continue_.filter(|c| !c.is_empty());
        if token.is_none() {
            break;
        }
    }
    assert_eq!(seen, ["a/p1", "a/p2", "a-x/q1", "b/r1"]);
    assert_eq!(remaining, [Some(3), Some(2), Some(1), None]);
}
