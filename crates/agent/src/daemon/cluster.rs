//! The daemon's link to Kubernetes, when it runs as a pod (`MY_NODE_NAME` set): a thread of its
//! own follows the node's Node object, the pods bound to it and the ENIConfigs (and counts the
//! cluster's nodes, under a shared call budget); every pool cycle takes from them kubelet's max
//! pods, the unschedulable taint, the pods coming, the node's share of the budget and, under
//! custom networking, where new pod ENIs go. Problems an operator must see become events on the daemon's pod, at most one per reason
//! every ten minutes.

use super::DaemonError;
use ipam::Time;
use kubernetes::Cluster;
use kubernetes::eniconfig::{EniConfigSpec, Missing, NameSources};
use kubernetes::events::{Events, Problem};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// How often one reason may become an event.
const EVENT_EVERY: Duration = Duration::from_secs(600);

/// How often the cluster's nodes are counted (one small list; a thousand nodes make three
/// requests a second of it).
pub const NODE_COUNT_EVERY: Duration = Duration::from_secs(300);

/// What the daemon last took from the cluster (to log changes once).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// Max pods.
    pub max_pods: Option<u32>,
    /// Unschedulable.
    pub unschedulable: bool,
    /// The node's ENIConfig.
    pub eniconfig: Option<Result<EniConfigSpec, Missing>>,
    /// The cluster's node count, when counted.
    pub cluster_nodes: Option<u32>,
}

/// The link.
pub struct Kube {
    cluster: Cluster,
    events: Option<Events>,
    rt: tokio::runtime::Handle,
    last_event: Mutex<BTreeMap<&'static str, Time>>,
    last_logged: Mutex<Option<String>>,
    count_logged: Mutex<Option<String>>,
}

impl std::fmt::Debug for Kube {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kube").field("cluster", &self.cluster).finish_non_exhaustive()
    }
}

impl Kube {
    /// Connects (in-cluster, or `KUBECONFIG`) and follows node `node`; events go to `pod`
    /// (namespace, name) when known; the cluster's nodes are counted when `count_nodes`.
    ///
    /// # Errors
    /// No Kubernetes configuration can be found or read.
    pub fn start(
        node: &str,
        pod: Option<(String, String)>,
        sources: NameSources,
        count_nodes: bool,
    ) -> Result<Kube, DaemonError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let node = node.to_string();
        std::thread::Builder::new()
            .name("kubernetes".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                };
                rt.block_on(async move {
                    match kubernetes::client().await {
                        Ok(client) => {
                            let cluster = Cluster::start(client.clone(), &node, sources);
                            if count_nodes {
                                cluster.count_nodes(client.clone(), NODE_COUNT_EVERY);
                            }
                            let events = pod.map(|(ns, name)| Events::new(client, &ns, &name));
                            let _ = tx.send(Ok((cluster, events, tokio::runtime::Handle::current())));
                            std::future::pending::<()>().await;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e.to_string()));
                        }
                    }
                });
            })
            .map_err(|e| DaemonError::Kubernetes(e.to_string()))?;
        let (cluster, events, rt) = rx.recv().map_err(|e| DaemonError::Kubernetes(e.to_string()))?.map_err(|e| {
            DaemonError::Kubernetes(format!(
                "no client ({e}); in a pod the service account is used, elsewhere KUBECONFIG"
            ))
        })?;
        Ok(Kube {
            cluster,
            events,
            rt,
            last_event: Mutex::new(BTreeMap::new()),
            last_logged: Mutex::new(None),
            count_logged: Mutex::new(None),
        })
    }

    /// Waits up to `limit` for the node and the ENIConfigs to be read once.
    pub fn wait_synced(&self, limit: Duration) -> bool {
        let step = Duration::from_millis(50);
        let mut waited = Duration::ZERO;
        while !self.cluster.synced() {
            if waited >= limit {
                return false;
            }
            std::thread::sleep(step);
            waited += step;
        }
        true
    }

    /// What the cluster says now.
    pub fn seen(&self) -> Seen {
        let node = self.cluster.node();
        Seen {
            max_pods: node.as_ref().and_then(|n| n.max_pods),
            unschedulable: node.as_ref().is_some_and(|n| n.unschedulable),
            eniconfig: self.cluster.eniconfig(),
            cluster_nodes: self.cluster.node_count(),
        }
    }

    /// The pods bound to the node that will want an address and have none yet (namespace,
    /// name), once listed.
    pub fn pods_wanting_addresses(&self) -> Option<Vec<(String, String)>> {
        self.cluster.pods_wanting_addresses()
    }

    /// Whether the node's object has been read.
    pub fn knows_node(&self) -> bool {
        self.cluster.node().is_some()
    }

    /// The watches' latest error (RBAC, the API server, a missing CRD), logged once per
    /// distinct error.
    pub fn report_errors(&self) {
        for (now, logged) in
            [(self.cluster.last_error(), &self.last_logged), (self.cluster.count_error(), &self.count_logged)]
        {
            let mut last = logged.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if now != *last {
                if let Some(e) = &now {
                    eprintln!("podipd: kubernetes: {e}");
                }
                *last = now;
            }
        }
    }

    /// The watches' latest error.
    pub fn last_error(&self) -> Option<String> {
        self.cluster.last_error()
    }

    /// Records `problem` on the daemon's pod, unless its reason was recorded less than ten
    /// minutes before `now`.
    pub fn problem(&self, problem: Problem, now: Time) {
        let Some(events) = self.events.clone() else { return };
        {
            let mut last = self.last_event.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.get(problem.reason()).is_some_and(|t| now.since(*t) < EVENT_EVERY) {
                return;
            }
            last.insert(problem.reason(), now);
        }
        eprintln!("podipd: event {}: {}", problem.reason(), problem.note());
        self.rt.spawn(async move {
            if let Err(e) = events.publish(&problem).await {
                eprintln!("podipd: event {} not recorded: {e}", problem.reason());
            }
        });
    }
}
