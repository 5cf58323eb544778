//! What podipd reads from and writes to the Kubernetes API: its own Node (max pods, the
//! unschedulable taint, the ENIConfig it names), the pods bound to it, the cluster's node count
//! (for a shared EC2 call budget), the ENIConfigs of custom networking, and events
//! an operator must see on the daemon's pod. Everything goes through kube-rs; the tests run the
//! real reflectors against an in-process API server.

pub mod apiserver;
pub mod cluster;
pub mod eniconfig;
pub mod events;
pub mod node;
pub mod pods;

pub use cluster::Cluster;
pub use kube;

/// A client from the environment: in-cluster (the DaemonSet's service account) or `KUBECONFIG`.
///
/// # Errors
/// Neither is there, or the configuration is unreadable.
pub async fn client() -> Result<kube::Client, kube::Error> {
    kube::Client::try_default().await
}
