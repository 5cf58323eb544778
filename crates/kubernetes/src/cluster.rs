//! The cluster as podipd follows it: reflectors (kube-runtime's watchers, re-listing on a 410
//! and backing off on errors) over the node's own Node object (selected by name), the pods bound
//! to it and the ENIConfigs, read at any moment without a request; and, when asked, the
//! cluster's node count, read every few minutes from one page of one node.

use crate::eniconfig::{EniConfig, EniConfigSpec, Missing, NameSources, lookup};
use crate::node::{NodeView, view};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::ListParams;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// What the cluster says about this node, kept current.
#[derive(Clone)]
pub struct Cluster {
    node_name: String,
    sources: NameSources,
    nodes: Store<Node>,
    pods: Store<Pod>,
    eniconfigs: Store<EniConfig>,
    /// The cluster's node count, once counted.
    node_count: Arc<Mutex<Option<u32>>>,
    /// Why the last count failed (cleared by one that works).
    count_error: LastError,
    /// The watches' latest error (a 403 for want of RBAC, the API server unreachable, a CRD
    /// not installed), cleared by the next event that arrives.
    last_error: LastError,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("node_name", &self.node_name).finish_non_exhaustive()
    }
}

type LastError = Arc<Mutex<Option<String>>>;

/// Keeps a watch's latest outcome: its error, or nothing once events arrive again.
fn recorder<T>(
    last: &LastError,
    what: &'static str,
) -> impl FnMut(Result<T, watcher::Error>) -> std::future::Ready<()> + use<T> {
    let last = Arc::clone(last);
    move |r| {
        let mut l = last.lock().unwrap_or_else(PoisonError::into_inner);
        *l = r.err().map(|e| format!("watching {what}: {e}"));
        std::future::ready(())
    }
}

impl Cluster {
    /// Starts following node `node_name` and the ENIConfigs (tasks on the current tokio
    /// runtime, running until it stops).
    pub fn start(client: Client, node_name: &str, sources: NameSources) -> Cluster {
        let last_error = Arc::new(Mutex::new(None));
        let (nodes, writer) = reflector::store();
        let cfg = watcher::Config::default().fields(&format!("metadata.name={node_name}"));
        let stream = reflector::reflector(writer, watcher(Api::<Node>::all(client.clone()), cfg)).default_backoff();
        tokio::spawn(stream.for_each(recorder(&last_error, "the node")));
        // The pods bound to the node, as kubelet selects them; kept slim (a few fields each).
        let (pods, writer) = reflector::store();
        let cfg = watcher::Config::default().fields(&format!("spec.nodeName={node_name}"));
        let stream = watcher(Api::<Pod>::all(client.clone()), cfg).modify(crate::pods::slim);
        let stream = reflector::reflector(writer, stream).default_backoff();
        tokio::spawn(stream.for_each(recorder(&last_error, "the node's pods")));
        let (eniconfigs, writer) = reflector::store();
        let stream = reflector::reflector(writer, watcher(Api::<EniConfig>::all(client), watcher::Config::default()))
            .default_backoff();
        tokio::spawn(stream.for_each(recorder(&last_error, "ENIConfigs")));
        let node_count = Arc::new(Mutex::new(None));
        let count_error = Arc::new(Mutex::new(None));
        Cluster {
            node_name: node_name.to_string(),
            sources,
            nodes,
            pods,
            eniconfigs,
            node_count,
            count_error,
            last_error,
        }
    }

    /// Counts the cluster's nodes now and then every `every` (a task on the current runtime):
    /// one page of one node's metadata, whose `remainingItemCount` gives the rest. A failed
    /// count keeps the last one, and says why ([`Cluster::count_error`]).
    pub fn count_nodes(&self, client: Client, every: Duration) {
        let count = Arc::clone(&self.node_count);
        let last_error = Arc::clone(&self.count_error);
        tokio::spawn(async move {
            let api = Api::<Node>::all(client);
            loop {
                match api.list_metadata(&ListParams::default().limit(1)).await {
                    Ok(page) => {
                        let rest = page.metadata.remaining_item_count.and_then(|n| u32::try_from(n).ok());
                        let more = page.metadata.continue_.as_deref().is_some_and(|c| !c.is_empty());
                        let n = match (rest, more) {
                            (Some(r), _) => Some(r.saturating_add(u32::try_from(page.items.len()).unwrap_or(1))),
                            (None, false) => u32::try_from(page.items.len()).ok(),
                            // Paged without a count (an old server): unknown, keep the last.
                            (None, true) => None,
                        };
                        let mut e = last_error.lock().unwrap_or_else(PoisonError::into_inner);
                        match n.filter(|n| *n > 0) {
                            Some(n) => {
                                *count.lock().unwrap_or_else(PoisonError::into_inner) = Some(n);
                                *e = None;
                            }
                            None => *e = Some("counting nodes: the API server gave no remainingItemCount".into()),
                        }
                    }
                    Err(e) => {
                        *last_error.lock().unwrap_or_else(PoisonError::into_inner) =
                            Some(format!("counting nodes: {e}"));
                    }
                }
                tokio::time::sleep(every).await;
            }
        });
    }

    /// Why the last count of the nodes failed, if it did.
    pub fn count_error(&self) -> Option<String> {
        self.count_error.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The cluster's node count, once [`Cluster::count_nodes`] has read one.
    pub fn node_count(&self) -> Option<u32> {
        *self.node_count.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The pods bound to the node that will want an address and have none yet (namespace,
    /// name), once the node's pods have been listed.
    pub fn pods_wanting_addresses(&self) -> Option<Vec<(String, String)>> {
        futures::FutureExt::now_or_never(self.pods.wait_until_ready())
            .is_some_and(|r| r.is_ok())
            .then(|| self.pods.state().iter().filter_map(|p| crate::pods::wanting(p)).collect())
    }

    /// The watches' latest error, if the last thing they saw was one.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(PoisonError::into_inner).clone()
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
