//! The cluster as podipd follows it: reflectors (kube-runtime's watchers, re-listing on a 410
//! and backing off on errors) over the node's own Node object (selected by name) and over the
//! ENIConfigs, read at any moment without a request.

use crate::eniconfig::{EniConfig, EniConfigSpec, Missing, NameSources, lookup};
use crate::node::{NodeView, view};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

/// What the cluster says about this node, kept current.
#[derive(Clone)]
pub struct Cluster {
    node_name: String,
    sources: NameSources,
    nodes: Store<Node>,
    eniconfigs: Store<EniConfig>,
    /// The watches' latest error (a 403 for want of RBAC, the API server unreachable, a CRD
    /// not installed), cleared by the next event that arrives.
    last_error: LastError,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("node_name", &self.node_name).finish_non_exhaustive()
    }
}

type LastError = std::sync::Arc<std::sync::Mutex<Option<String>>>;

/// Keeps a watch's latest outcome: its error, or nothing once events arrive again.
fn recorder<T>(
    last: &LastError,
    what: &'static str,
) -> impl FnMut(Result<T, watcher::Error>) -> std::future::Ready<()> + use<T> {
    let last = std::sync::Arc::clone(last);
    move |r| {
        let mut l = last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *l = r.err().map(|e| format!("watching {what}: {e}"));
        std::future::ready(())
    }
}

impl Cluster {
    /// Starts following node `node_name` and the ENIConfigs (tasks on the current tokio
    /// runtime, running until it stops).
    pub fn start(client: Client, node_name: &str, sources: NameSources) -> Cluster {
        let last_error = std::sync::Arc::new(std::sync::Mutex::new(None));
        let (nodes, writer) = reflector::store();
        let cfg = watcher::Config::default().fields(&format!("metadata.name={node_name}"));
        let stream = reflector::reflector(writer, watcher(Api::<Node>::all(client.clone()), cfg)).default_backoff();
        tokio::spawn(stream.for_each(recorder(&last_error, "the node")));
        let (eniconfigs, writer) = reflector::store();
        let stream = reflector::reflector(writer, watcher(Api::<EniConfig>::all(client), watcher::Config::default()))
            .default_backoff();
        tokio::spawn(stream.for_each(recorder(&last_error, "ENIConfigs")));
        Cluster { node_name: node_name.to_string(), sources, nodes, eniconfigs, last_error }
    }

    /// The watches' latest error, if the last thing they saw was one.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The node, once its object has been read.
    pub fn node(&self) -> Option<NodeView> {
        self.nodes
            .state()
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(self.node_name.as_str()))
            .map(|n| view(n, &self.sources))
    }

    /// Whether both the node and the ENIConfigs have been listed once.
    pub fn synced(&self) -> bool {
        self.node().is_some() && self.eniconfigs_synced()
    }

    fn eniconfigs_synced(&self) -> bool {
        // A store answers `wait_until_ready` once its first list is in; poll the same fact.
        futures::FutureExt::now_or_never(self.eniconfigs.wait_until_ready()).is_some_and(|r| r.is_ok())
    }

    /// The node's ENIConfig: `None` until the node and the ENIConfigs are known; then its spec,
    /// or which name is missing.
    pub fn eniconfig(&self) -> Option<Result<EniConfigSpec, Missing>> {
        let node = self.node()?;
        if !self.eniconfigs_synced() {
            return None;
        }
        let all = self.eniconfigs.state();
        Some(lookup(&node.eniconfig, all.iter().map(|c| c.as_ref())))
    }
}
