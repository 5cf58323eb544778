//! Events an operator must see, recorded on the daemon's own pod (`events.k8s.io/v1`, through
//! kube-runtime's recorder, which folds repeats into a series): missing IAM permissions, an
//! exhausted subnet, a missing ENIConfig.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

/// A problem worth an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// EC2 refused a call for lack of permission (the call and EC2's message).
    MissingIamPermissions(String),
    /// The subnet has no address or /28 left for the node's pods.
    SubnetExhausted(String),
    /// The node names an ENIConfig that does not exist.
    EniConfigMissing(String),
    /// The node's ENIConfig names a subnet its pod ENIs cannot use (unknown, or in another AZ).
    EniConfigInvalid(String),
}

impl Problem {
    /// The event's reason, a CamelCase word (`kubectl get events` shows it).
    pub fn reason(&self) -> &'static str {
        match self {
            Problem::MissingIamPermissions(_) => "MissingIAMPermissions",
            Problem::SubnetExhausted(_) => "SubnetExhausted",
            Problem::EniConfigMissing(_) => "ENIConfigMissing",
            Problem::EniConfigInvalid(_) => "ENIConfigInvalid",
        }
    }

    /// What happened, for a person.
    pub fn note(&self) -> String {
        match self {
            Problem::MissingIamPermissions(m) => {
                format!("EC2 refused a call podipd needs ({m}); grant the actions of deploy/iam-policy.json")
            }
            Problem::SubnetExhausted(m) => format!("no pod address can be had: {m}"),
            Problem::EniConfigMissing(name) => {
                format!("the node names ENIConfig {name:?}, which does not exist: no pod ENI is created until it does")
            }
            Problem::EniConfigInvalid(m) => {
                format!("the node's ENIConfig names a subnet its pod ENIs cannot use ({m}): fix its spec.subnet")
            }
        }
    }
}

/// Records events on one pod.
#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
    pod: ObjectReference,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").field("pod", &self.pod.name).finish_non_exhaustive()
    }
}

impl Events {
    /// A recorder for pod `name` in `namespace` (the daemon's own, from the downward API).
    pub fn new(client: kube::Client, namespace: &str, name: &str) -> Events {
        let reporter = Reporter { controller: "podipd".into(), instance: Some(name.to_string()) };
        let pod = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(namespace.to_string()),
            name: Some(name.to_string()),
            ..ObjectReference::default()
        };
        Events { recorder: Recorder::new(client, reporter), pod }
    }

    /// Records `problem` as a warning.
    ///
    /// # Errors
    /// The API server refused it or cannot be reached.
    pub async fn publish(&self, problem: &Problem) -> Result<(), kube::Error> {
        let ev = Event {
            type_: EventType::Warning,
            reason: problem.reason().into(),
            note: Some(problem.note()),
            action: "AllocateAddresses".into(),
            secondary: None,
        };
        self.recorder.publish(&ev, &self.pod).await
    }
}
