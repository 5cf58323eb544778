//! podipd as a pod of a cluster (an in-process API server): custom networking follows the
//! node's ENIConfig through a relabel without a restart, max pods comes from the Node object,
//! a missing ENIConfig holds new ENIs and becomes an event, and every API request podipd makes
//! is one deploy/rbac.yaml grants.
#![allow(clippy::disallowed_methods)] // A harness against real processes: wall time.

mod common;

use common::{World, add, introspect};
use kubernetes::apiserver::ApiServer;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn node(eniconfig: &str, pods: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
           "metadata": {"name": "ip-10-0-0-9.ec2.internal", "labels": {"k8s.amazonaws.com/eniConfig": eniconfig}},
           "status": {"capacity": {"pods": pods}}})
}

fn eniconfig(name: &str, subnet: &str) -> Value {
    json!({"apiVersion": "crd.k8s.amazonaws.com/v1alpha1", "kind": "ENIConfig",
           "metadata": {"name": name}, "spec": {"subnet": subnet, "securityGroups": [format!("sg-{name}")]}})
}

/// Waits (30 s at most) for the introspected state to satisfy `f`.
fn wait(w: &World, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let t0 = Instant::now();
    loop {
        let st = introspect(&w.sock());
        if f(&st) {
            return st;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "never {what}: {st}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The node's pod ENIs as EC2 holds them: subnet and security groups.
fn pod_enis(w: &World) -> Vec<(String, Vec<String>)> {
    let instance = w.instance.clone();
    let enis =
        w.ep.vpc()
            .describe_enis_where(|e| e.attachment.as_ref().is_some_and(|(i, d)| *i == instance && *d > 0))
            .unwrap();
    enis.into_iter().map(|e| (e.subnet.0, e.security_groups)).collect()
}

#[test]
fn custom_networking_follows_the_nodes_eniconfig_and_max_pods_its_object_without_a_restart() {
    let mut w = World::new("kube");
    let (a, b) = {
        let mut vpc = w.ep.vpc();
        let a = vpc.subnets()[1].id.clone();
        let b = vpc.add_subnet("us-east-1a", "100.64.4.0/22".parse().unwrap()).unwrap();
        (a, b)
    };
    let api = ApiServer::start().unwrap();
    api.apply("nodes", node("blue", "17"));
    api.apply("eniconfigs", eniconfig("blue", &a.0));
    api.apply("eniconfigs", eniconfig("green", &b.0));
    let kubeconfig = w.dir.join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
    w.start(&[
        ("KUBECONFIG", kubeconfig.to_str().unwrap()),
        ("MY_NODE_NAME", "ip-10-0-0-9.ec2.internal"),
        ("MY_POD_NAME", "podip-x7k2p"),
        ("MY_POD_NAMESPACE", "kube-system"),
        ("AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG", "true"),
        ("WARM_ENI_TARGET", "1"),
    ]);
    wait(&w, "max pods from the node object", |st| st["max_pods"] == 17);
    let first = add(&w.sock(), "p0");
    let a_net: ipnet::Ipv4Net = "100.64.0.0/22".parse().unwrap();
    assert!(a_net.contains(&first.parse::<std::net::Ipv4Addr>().unwrap()), "{first}");
    assert_eq!(pod_enis(&w), [(a.0.clone(), vec!["sg-blue".to_string()])], "the ENIConfig's subnet and groups");

    // Relabelled to the other ENIConfig, with a new max pods: taken without a restart; the next
    // ENI goes to the new subnet with its groups.
    api.apply("nodes", node("green", "12"));
    wait(&w, "the new ENIConfig", |st| st["pod_eni"]["subnet"] == b.0.as_str() && st["max_pods"] == 12);
    let mut got = Vec::new();
    for i in 1..12 {
        got.push(add(&w.sock(), &format!("p{i}")));
    }
    let enis = pod_enis(&w);
    assert!(enis.contains(&(b.0.clone(), vec!["sg-green".to_string()])), "a pod ENI in the new subnet: {enis:?}");
    let b_net: ipnet::Ipv4Net = "100.64.4.0/22".parse().unwrap();
    assert!(got.iter().any(|ip| b_net.contains(&ip.parse::<std::net::Ipv4Addr>().unwrap())), "{got:?}");
    let st = wait(&w, "a settled pool", |st| st["in_flight"] == 0);
    // At max pods the pool stops growing, though WARM_ENI_TARGET=1 asks for a spare ENI.
    std::thread::sleep(Duration::from_secs(11));
    let later = wait(&w, "a settled pool", |st| st["in_flight"] == 0);
    assert_eq!(
        (pod_enis(&w).len(), later["total"].clone()),
        (2, st["total"].clone()),
        "no growth at max pods: {later}"
    );
    // A pod's name and namespace from CNI_ARGS are kept with its address and shown.
    let mut req = common::attach("add", "named");
    req["pod_namespace"] = json!("shop");
    req["pod_name"] = json!("cart-7d9f");
    let r = common::request(&w.sock(), &req).unwrap();
    let ip = r["ok"]["addr"].as_str().unwrap_or_default().to_string();
    let st = introspect(&w.sock());
    let pod = st["pods"].as_array().unwrap().iter().find(|p| p["container_id"] == "named").cloned().unwrap_or_default();
    assert_eq!(
        (pod["namespace"].clone(), pod["name"].clone(), pod["ip"].as_str()),
        (json!("shop"), json!("cart-7d9f"), Some(ip.as_str())),
        "{r} {st}"
    );

    // The node names an ENIConfig that does not exist: new ENIs are held, and an event says so.
    api.apply("nodes", node("missing", "12"));
    let t0 = Instant::now();
    while !api.objects("events").iter().any(|e| e["reason"] == "ENIConfigMissing") {
        assert!(t0.elapsed() < Duration::from_secs(20), "no event: {:?}", api.objects("events"));
        std::thread::sleep(Duration::from_millis(100));
    }
    let ev = api.objects("events").into_iter().find(|e| e["reason"] == "ENIConfigMissing").unwrap();
    assert_eq!(ev["regarding"]["name"], "podip-x7k2p");

    // Every request podipd made is one its ClusterRole grants.
    let rbac = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/rbac.yaml")).unwrap();
    for a in api.accesses() {
        let granted = rbac.contains(&format!("resources: [\"{}\"]", a.resource)) && {
            let block = rbac.split(&format!("resources: [\"{}\"]", a.resource)).nth(1).unwrap_or_default();
            block.lines().nth(1).is_some_and(|l| l.contains("verbs:") && l.contains(&format!("\"{}\"", a.verb)))
        };
        assert!(granted, "{a:?} is not granted by deploy/rbac.yaml");
    }
}

#[test]
fn ec2_refusing_for_want_of_permission_becomes_an_event_on_the_daemons_pod() {
    let mut w = World::new("kubeiam");
    let api = ApiServer::start().unwrap();
    api.apply("nodes", node("default", "29"));
    let kubeconfig = w.dir.join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
    w.refuse_growth.store(true, std::sync::atomic::Ordering::Relaxed);
    w.start(&[
        ("KUBECONFIG", kubeconfig.to_str().unwrap()),
        ("MY_NODE_NAME", "ip-10-0-0-9.ec2.internal"),
        ("MY_POD_NAME", "podip-q4m8z"),
        ("MY_POD_NAMESPACE", "kube-system"),
    ]);
    let t0 = Instant::now();
    let ev = loop {
        if let Some(e) = api.objects("events").into_iter().find(|e| e["reason"] == "MissingIAMPermissions") {
            break e;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "no event: {:?}", api.objects("events"));
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(ev["regarding"]["name"], "podip-q4m8z");
    assert_eq!(ev["type"], "Warning");
    let note = ev["note"].as_str().unwrap();
    assert!(note.contains("UnauthorizedOperation") && note.contains("deploy/iam-policy.json"), "{note}");
    // Refused again and again: still one event, not one per call.
    std::thread::sleep(Duration::from_secs(6));
    let n = api.objects("events").iter().filter(|e| e["reason"] == "MissingIAMPermissions").count();
    assert_eq!(n, 1);
}

/// A pod bound to the node, not started: it has no IP yet.
fn pending_pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "shop"},
           "spec": {"nodeName": "ip-10-0-0-9.ec2.internal", "containers": [{"name": "c", "image": "nginx"}]},
           "status": {"phase": "Pending"}})
}

#[test]
fn the_adaptive_pool_grows_for_pods_scheduled_here_and_the_call_budget_is_shared_over_the_nodes_counted() {
    // m5.xlarge: 4 ENIs x 14 secondary addresses, max pods 58.
    let mut w = World::of_type("kubecoming", "m5.xlarge", cloud::sim::SimParams { seed: 3, ..Default::default() });
    let api = ApiServer::start().unwrap();
    api.apply("nodes", node("default", "58"));
    for i in 0..2 {
        api.apply("nodes", json!({"metadata": {"name": format!("ip-10-0-1-{i}.ec2.internal")}}));
    }
    let kubeconfig = w.dir.join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
    w.start(&[
        ("KUBECONFIG", kubeconfig.to_str().unwrap()),
        ("MY_NODE_NAME", "ip-10-0-0-9.ec2.internal"),
        ("PODIP_POOL_POLICY", ""),
        ("WARM_ENI_TARGET", ""),
        // The cluster's budget, with no node count given: Kubernetes counts three.
        ("PODIP_CLUSTER_EC2_CALLS_PER_SECOND", "0.5"),
    ]);
    let st = wait(&w, "the budget shared over three nodes", |st| st["call_budget"]["per_hour"] == 600);
    assert_eq!(st["call_budget"], json!({"per_hour": 600, "burst": 16, "paced": false}), "{st}");
    let boot = wait(&w, "a settled pool", |st| st["in_flight"] == 0 && st["total"].as_u64() > Some(0));
    let held = boot["total"].as_u64().unwrap();
    assert!(held < 30, "the boot pool is one ENI's worth: {boot}");

    // Thirty pods are scheduled here at once: the pool grows for them before kubelet asks.
    for i in 0..30 {
        api.apply("pods", pending_pod(&format!("web-{i}")));
    }
    let st = wait(&w, "room for the pods coming", |st| {
        st["coming"] == 30 && st["in_flight"] == 0 && st["total"].as_u64() >= Some(30)
    });
    assert_eq!(st["assigned"], 0, "{st}");
    // Pods given an address are no longer coming, before kubelet reports their IPs.
    for i in 0..5 {
        let mut req = common::attach("add", &format!("c{i}"));
        req["pod_namespace"] = json!("shop");
        req["pod_name"] = json!(format!("web-{i}"));
        let r = common::request(&w.sock(), &req).unwrap();
        assert!(r["ok"]["addr"].is_string(), "no wait for a pod that was coming: {r}");
    }
    wait(&w, "25 pods still coming", |st| st["coming"] == 25);
    // Pods deleted before they start are no longer coming.
    for i in 20..30 {
        api.delete("pods", "shop", &format!("web-{i}"));
    }
    wait(&w, "15 pods still coming", |st| st["coming"] == 15);
}
