//! Every manifest in deploy/ read into k8s-openapi's typed objects and checked field by field
//! against what podipd needs and accepts: the DaemonSet's settings pass podipd's own validation,
//! its paths are mounted from the host, its probes and init step are podipd's helpers, it asks
//! for no more privilege than NET_ADMIN and NET_RAW; the CRD is the one the code watches; the
//! binding names the service account the DaemonSet runs as.

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Container, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kubernetes::kube::Resource;
use serde::Deserialize;
use std::path::Path;

fn docs(file: &str) -> Vec<serde_json::Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy").join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    yaml_serde::Deserializer::from_str(&text)
        .map(|d| serde_json::Value::deserialize(d).unwrap_or_else(|e| panic!("{file}: {e}")))
        .collect()
}

fn typed<T: serde::de::DeserializeOwned>(docs: &[serde_json::Value], kind: &str) -> T {
    let v = docs.iter().find(|d| d["kind"] == kind).unwrap_or_else(|| panic!("no {kind}"));
    // Unknown fields would be dropped silently by serde: compare the round trip too.
    let t: T = serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{kind}: {e}"));
    t
}

fn round_trips<T: serde::de::DeserializeOwned + serde::Serialize>(v: &serde_json::Value) {
    let t: T = serde_json::from_value(v.clone()).unwrap();
    let back = serde_json::to_value(&t).unwrap();
    assert_eq!(&back, v, "a field k8s-openapi does not know (a typo?) in {}", v["kind"]);
}

#[test]
fn every_manifest_is_a_typed_object_without_unknown_fields() {
    for d in docs("rbac.yaml") {
        match d["kind"].as_str().unwrap() {
            "ServiceAccount" => round_trips::<ServiceAccount>(&d),
            "ClusterRole" => round_trips::<ClusterRole>(&d),
            "ClusterRoleBinding" => round_trips::<ClusterRoleBinding>(&d),
            k => panic!("unexpected {k} in rbac.yaml"),
        }
    }
    for d in docs("eniconfig-crd.yaml") {
        round_trips::<CustomResourceDefinition>(&d);
    }
    for d in docs("daemonset.yaml") {
        round_trips::<DaemonSet>(&d);
    }
}

#[test]
fn the_binding_names_the_account_the_daemonset_runs_as() {
    let rbac = docs("rbac.yaml");
    let sa: ServiceAccount = typed(&rbac, "ServiceAccount");
    let role: ClusterRole = typed(&rbac, "ClusterRole");
    let binding: ClusterRoleBinding = typed(&rbac, "ClusterRoleBinding");
    let ds: DaemonSet = typed(&docs("daemonset.yaml"), "DaemonSet");
    assert_eq!(binding.role_ref.name, role.metadata.name.clone().unwrap());
    let subject = &binding.subjects.unwrap()[0];
    assert_eq!((subject.kind.as_str(), Some(&subject.name)), ("ServiceAccount", sa.metadata.name.as_ref()));
    assert_eq!(subject.namespace, sa.metadata.namespace);
    assert_eq!(ds.metadata.namespace, sa.metadata.namespace);
    assert_eq!(ds.spec.unwrap().template.spec.unwrap().service_account_name, sa.metadata.name);
}

#[test]
fn the_crd_is_the_eniconfig_the_code_watches() {
    let crd: CustomResourceDefinition = typed(&docs("eniconfig-crd.yaml"), "CustomResourceDefinition");
    type E = kubernetes::eniconfig::EniConfig;
    assert_eq!(crd.spec.group, E::group(&()));
    assert_eq!(crd.spec.names.plural, E::plural(&()));
    assert_eq!(crd.spec.names.kind, E::kind(&()));
    assert_eq!(crd.spec.scope, "Cluster");
    let v = &crd.spec.versions[0];
    assert_eq!((v.name.as_str(), v.served, v.storage), (E::version(&()).as_ref(), true, true));
    let spec = &v.schema.as_ref().unwrap().open_api_v3_schema.as_ref().unwrap().properties.as_ref().unwrap()["spec"];
    assert_eq!(spec.required.as_deref(), Some(&["subnet".to_string()][..]));
    assert!(spec.properties.as_ref().unwrap().contains_key("securityGroups"));
    assert_eq!(crd.metadata.name.unwrap(), format!("{}.{}", E::plural(&()), E::group(&())));
}

fn mount_of<'a>(c: &'a Container, ds: &'a k8s_openapi::api::core::v1::PodSpec, path: &str) -> (&'a str, String) {
    let m = c
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .filter(|m| Path::new(path).starts_with(&m.mount_path))
        .max_by_key(|m| m.mount_path.len())
        .unwrap_or_else(|| panic!("{path} is not on a mounted volume of {}", c.name));
    let vol = ds.volumes.as_ref().unwrap().iter().find(|v| v.name == m.name).unwrap();
    (
        m.mount_path.as_str(),
        vol.host_path.as_ref().unwrap_or_else(|| panic!("{} is not a hostPath", m.name)).path.clone(),
    )
}

#[test]
fn the_daemonset_runs_podipd_as_it_must_run() {
    let ds: DaemonSet = typed(&docs("daemonset.yaml"), "DaemonSet");
    let pod = ds.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(pod.priority_class_name.as_deref(), Some("system-node-critical"));
    assert!(
        pod.tolerations.as_ref().unwrap().iter().any(|t| t.operator.as_deref() == Some("Exists") && t.key.is_none())
    );
    let main = &pod.containers[0];
    let init = &pod.init_containers.as_ref().unwrap()[0];
    // Privilege: nothing beyond NET_ADMIN and NET_RAW, never privileged.
    let sc = main.security_context.as_ref().unwrap();
    assert_ne!(sc.privileged, Some(true));
    let caps = sc.capabilities.as_ref().unwrap();
    assert_eq!(caps.add.as_deref(), Some(&["NET_ADMIN".to_string(), "NET_RAW".to_string()][..]));
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    assert_ne!(init.security_context.as_ref().and_then(|s| s.privileged), Some(true));
    // The helpers are podipd's own subcommands.
    let cmd = |c: &Container| c.command.clone().unwrap_or_default();
    assert_eq!(cmd(init)[..2], ["/podipd", "install-cni"]);
    let to = cmd(init)[3].clone();
    assert_eq!(mount_of(init, &pod, &to).1, "/opt/cni/bin", "the plugin lands in the host's CNI directory");
    let probe = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref().unwrap().exec.as_ref().unwrap().command.clone().unwrap()
    };
    assert_eq!(probe(&main.readiness_probe), ["/podipd", "health"]);
    assert_eq!(probe(&main.liveness_probe), ["/podipd", "health", "--live"]);
    // The environment passes podipd's own validation (the downward API filled in).
    let env: Vec<(String, String)> = main
        .env
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| {
            let v = match (&e.value, &e.value_from) {
                (Some(v), _) => v.clone(),
                (None, Some(_)) => match e.name.as_str() {
                    "MY_POD_NAMESPACE" => "kube-system".into(),
                    "MY_POD_NAME" => "podip-x7k2p".into(),
                    _ => "ip-10-0-0-1.ec2.internal".into(),
                },
                _ => String::new(),
            };
            (e.name.clone(), v)
        })
        .collect();
    let known: Vec<&str> = agent::config::VARIABLES.iter().map(|(n, _)| *n).collect();
    for (n, _) in &env {
        assert!(known.contains(&n.as_str()), "{n} is not a setting podipd reads");
    }
    agent::config::DaemonConfig::check_environment(&env).unwrap();
    let cfg =
        agent::config::DaemonConfig::load(None, |k| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())).unwrap();
    assert_eq!(cfg.node_name.as_deref(), Some("ip-10-0-0-1.ec2.internal"), "podipd follows its node");
    // Every path podipd writes is on the host, where the runtime and a restarted podipd find it.
    let conflist = cfg.cni_conflist.clone().unwrap();
    let (_, host) = mount_of(main, &pod, conflist.to_str().unwrap());
    assert_eq!(host, "/etc/cni/net.d");
    for p in [&cfg.socket, &cfg.checkpoint, cfg.import_checkpoint.as_ref().unwrap()] {
        mount_of(main, &pod, p.to_str().unwrap());
    }
    // The plugin finds the daemon: the socket's path is the same inside and on the host.
    let (inside, host) = mount_of(main, &pod, cfg.socket.to_str().unwrap());
    assert_eq!(inside, host, "the conflist names the socket by its path inside the container");
}
