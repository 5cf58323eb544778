//! Opt-in: an installation of podipd on a real EKS cluster, checked from outside (see
//! docs/install.md). Runs only with `--ignored` and `PODIP_E2E_KUBECONFIG` (plus AWS credentials
//! and region in the SDK's usual variables): every podip pod is Ready; a new pod gets an address
//! that EC2 says belongs to an ENI attached to the pod's node; the pod is deleted again.
#![allow(clippy::disallowed_methods)] // Waits on a real cluster in wall time.

use k8s_openapi::api::core::v1::Pod;
use kubernetes::kube::api::{Api, DeleteParams, ListParams, PostParams};
use kubernetes::kube::config::{KubeConfigOptions, Kubeconfig};
use std::time::{Duration, Instant};

#[test]
#[ignore = "needs a real EKS cluster: PODIP_E2E_KUBECONFIG and AWS credentials"]
fn a_pod_on_a_real_cluster_gets_an_address_ec2_gave_its_node() {
    let Some(path) = std::env::var_os("PODIP_E2E_KUBECONFIG") else {
        eprintln!("skipping: PODIP_E2E_KUBECONFIG is not set");
        return;
    };
    aws::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let kc = Kubeconfig::read_from(&path).unwrap();
        let cfg = kubernetes::kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.unwrap();
        let client = kubernetes::kube::Client::try_from(cfg).unwrap();
        let system: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
        let ours = system.list(&ListParams::default().labels("app.kubernetes.io/name=podip")).await.unwrap();
        assert!(!ours.items.is_empty(), "no podip pods in kube-system");
        for p in &ours.items {
            let ready = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            assert!(ready, "{} is not Ready", p.metadata.name.clone().unwrap_or_default());
        }
        let pods: Api<Pod> = Api::namespaced(client, "default");
        let name = format!("podip-e2e-{}", std::process::id());
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "sleep", "image": "public.ecr.aws/docker/library/busybox:stable",
                                     "command": ["sleep", "300"]}],
                     "terminationGracePeriodSeconds": 0}
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
        let t0 = Instant::now();
        let (ip, node) = loop {
            let p = pods.get(&name).await.unwrap();
            let st = p.status.clone().unwrap_or_default();
            if let (Some(ip), Some(node)) = (st.pod_ip.clone(), p.spec.as_ref().and_then(|s| s.node_name.clone())) {
                break (ip, node);
            }
            assert!(t0.elapsed() < Duration::from_secs(180), "the pod never got an address: {st:?}");
            tokio::time::sleep(Duration::from_secs(2)).await;
        };
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(pods.clone().into_client());
        let provider = nodes.get(&node).await.unwrap().spec.unwrap().provider_id.unwrap();
        let instance = provider.rsplit('/').next().unwrap().to_string();
        let conf = aws::sdk_config().await;
        let ec2 = aws_sdk_ec2_client(&conf);
        let enis = ec2
            .describe_network_interfaces()
            .filters(aws_sdk_ec2::types::Filter::builder().name("attachment.instance-id").values(&instance).build())
            .send()
            .await
            .unwrap();
        let addr: std::net::Ipv4Addr = ip.parse().unwrap();
        let owned = enis.network_interfaces().iter().any(|e| {
            e.private_ip_addresses().iter().any(|a| a.private_ip_address() == Some(ip.as_str()))
                || e.ipv4_prefixes().iter().any(|p| {
                    p.ipv4_prefix().and_then(|s| s.parse::<ipnet::Ipv4Net>().ok()).is_some_and(|n| n.contains(&addr))
                })
        });
        let _ = pods.delete(&name, &DeleteParams::default()).await;
        assert!(owned, "{ip} is on no ENI EC2 shows attached to {instance} ({node})");
        eprintln!("{name} got {ip} on {node} ({instance}), an address EC2 gave that instance");
    });
}

fn aws_sdk_ec2_client(conf: &aws_config::SdkConfig) -> aws_sdk_ec2::Client {
    aws_sdk_ec2::Client::new(conf)
}
