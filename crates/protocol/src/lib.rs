//! The plugin/daemon protocol: one JSON request and one JSON reply per line over the daemon's
//! Unix socket. The protocol is versioned, not the build: a request names the protocol version
//! it speaks (`v`); the daemon answers any version it supports and refuses others with the list.

pub mod lockfile;

use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Protocol versions this build speaks.
pub const SUPPORTED: [u32; 1] = [1];
/// The version this build sends.
pub const CURRENT: u32 = 1;

/// One attachment's IPAM key and metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attach {
    /// CNI network name.
    pub network: String,
    /// Container id.
    pub container_id: String,
    /// Interface name.
    pub ifname: String,
    /// Netns path (ADD, CHECK).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// Kubernetes namespace, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_namespace: Option<String>,
    /// Kubernetes pod name, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// DEL: release the attachment's address only if it is this one (the one the plugin's
    /// teardown found and took off the host); the unspecified address (`0.0.0.0`) releases
    /// nothing (the teardown found none). Without it (older plugins), DEL releases whatever the
    /// attachment holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_only: Option<IpAddr>,
    /// DEL with `release_only`: podipd removes that address's policy rules itself, under its
    /// pool lock, and only while the attachment still holds the address, before it releases it.
    /// The plugin asks so when the host routes the address nowhere: without the pod's own route
    /// holding the address, only podipd can tell the rules are still this attachment's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub scrub_rules: bool,
}

/// A request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Protocol version.
    pub v: u32,
    /// What to do.
    #[serde(flatten)]
    pub op: Op,
}

/// The operations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Give the attachment an address (the same key gets the same address).
    Add(Attach),
    /// Release it (idempotent). The plugin sends it after tearing the data path down, so the
    /// address is free only once nothing on the host uses it.
    Del(Attach),
    /// What DEL must tear down: the attachment's address (if it holds one) and its host veth.
    /// Changes nothing.
    Teardown(Attach),
    /// Is it still held?
    Check(Attach),
    /// Which attachments of `network` are not in `valid` (changes nothing: the plugin tears each
    /// down and releases it with DEL).
    Gc {
        /// Network.
        network: String,
        /// (container id, ifname) pairs still valid.
        valid: Vec<(String, String)>,
    },
    /// Readiness.
    Status,
    /// The daemon's ENIs, blocks and assignments (introspection).
    Introspect,
}

/// What the daemon gives an attachment: everything the plugin needs to wire the pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The pod's address.
    pub addr: IpAddr,
    /// The ENI it lives on.
    pub eni: String,
    /// That ENI's device index.
    pub device_index: u32,
    /// The route table of pod egress (254 = main for the primary ENI, device + 1 otherwise).
    pub route_table: u32,
    /// Pod MTU.
    pub mtu: u32,
    /// Host veth prefix.
    pub veth_prefix: String,
    /// The attachment's host veth (named by podipd, so ADD, DEL and the sweep agree).
    #[serde(default)]
    pub veth: String,
    /// IPv6 pods: the node-local IPv4 (169.254.172.0/22) of their IPv4 egress interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_v4: Option<std::net::Ipv4Addr>,
    /// The attachment already held this address before this request (a repeated ADD): the
    /// plugin must not give it back if its own work fails.
    #[serde(default)]
    pub existing: bool,
    /// The pod identity podipd recorded at the attachment's first ADD (`namespace`, `name`),
    /// which names the veth: a retried ADD that carries another one (or none) serialises with
    /// the pod's other sandboxes under it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<(String, String)>,
}

/// Readiness, as STATUS reports it. A full or refilling pool is `Ready`: the node can serve
/// pods, and an ADD that finds no free address gets code 11 (try again later).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Readiness {
    /// The daemon serves ADDs (the pool may be full or refilling at this instant).
    Ready,
    /// Not sent since protocol 1.1 (a full pool is `Ready`); a plugin treats it as `Ready`.
    Refilling,
    /// Not sent since protocol 1.1 (a full pool is `Ready`); a plugin treats it as `Ready`.
    Exhausted,
    /// The pool has no address at all and the cloud cannot be reached: no pod can start here.
    CloudDown,
}

/// A successful reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reply {
    /// ADD or CHECK.
    Lease(Box<Lease>),
    /// DEL: the address released, if any was held.
    Released {
        /// The address.
        addr: Option<IpAddr>,
        /// The daemon's host veth prefix (ADD and DEL use the same).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        veth_prefix: Option<String>,
    },
    /// TEARDOWN: the attachment's address, if it holds one, and its host veth's name.
    Teardown {
        /// The address.
        addr: Option<IpAddr>,
        /// The host veth.
        veth: String,
        /// The address is held by an attachment recovered from the host (its checkpoint entry
        /// was lost): the plugin tears it down only for the sandbox that really holds it.
        #[serde(default)]
        recovered: bool,
        /// The pod identity podipd recorded at ADD (`namespace`, `name`), which names the veth:
        /// a DEL that came without it serialises with the pod's other sandboxes under it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pod: Option<(String, String)>,
    },
    /// GC: the attachments of the network the runtime no longer lists.
    Stale {
        /// Each, with its pod's identity when known.
        attachments: Vec<Attach>,
    },
    /// Introspection: ENIs and assignments.
    Introspect {
        /// The state.
        state: serde_json::Value,
    },
    /// STATUS.
    Status {
        /// Readiness.
        readiness: Readiness,
        /// Addresses ADD can hand out now (free, not cooling, on an ENI the node has set up).
        available: u64,
    },
}

/// Why the daemon refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// No address now; try again (CNI code 11).
    PoolExhausted,
    /// The attachment is unknown (CHECK).
    UnknownAttachment,
    /// The request is malformed.
    BadRequest,
    /// The protocol version is not spoken here.
    UnsupportedVersion,
    /// The daemon failed (e.g. it could not write its checkpoint).
    Internal,
}

/// A reply line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// Protocol version of the reply.
    pub v: u32,
    /// The reply, or why not.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// Success or failure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Outcome {
    /// Success.
    Ok {
        /// The reply.
        ok: Reply,
    },
    /// Failure.
    Err {
        /// Kind.
        error: ErrorKind,
        /// Detail.
        message: String,
    },
}

/// Parses a request line, refusing unsupported versions.
///
/// # Errors
/// A response to send back instead.
pub fn parse_request(line: &str) -> Result<Request, Response> {
    #[derive(Deserialize)]
    struct Versioned {
        v: u32,
    }
    let err = |error, message: String| Response { v: CURRENT, outcome: Outcome::Err { error, message } };
    let v: Versioned =
        serde_json::from_str(line).map_err(|e| err(ErrorKind::BadRequest, format!("not a request: {e}")))?;
    if !SUPPORTED.contains(&v.v) {
        return Err(err(
            ErrorKind::UnsupportedVersion,
            format!("protocol version {} is not supported; this daemon speaks {SUPPORTED:?}", v.v),
        ));
    }
    serde_json::from_str(line).map_err(|e| err(ErrorKind::BadRequest, format!("bad request: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attach() -> Attach {
        Attach {
            network: "podip".into(),
            container_id: "c1".into(),
            ifname: "eth0".into(),
            netns: Some("/proc/1/ns/net".into()),
            pod_namespace: None,
            pod_name: None,
            release_only: None,
            scrub_rules: false,
        }
    }

    #[test]
    fn requests_round_trip() {
        for op in [
            Op::Add(attach()),
            Op::Del(attach()),
            Op::Del(Attach { release_only: Some("10.0.0.7".parse().unwrap()), ..attach() }),
            Op::Del(Attach { release_only: Some("10.0.0.7".parse().unwrap()), scrub_rules: true, ..attach() }),
            Op::Status,
            Op::Gc { network: "podip".into(), valid: vec![("c1".into(), "eth0".into())] },
        ] {
            let r = Request { v: 1, op };
            let line = serde_json::to_string(&r).unwrap();
            assert_eq!(parse_request(&line).unwrap(), r);
        }
        let line = serde_json::to_string(&Request { v: 1, op: Op::Add(attach()) }).unwrap();
        assert!(line.starts_with(r#"{"v":1,"op":"add","network":"podip""#), "{line}");
    }

    #[test]
    fn unknown_versions_are_refused_with_the_supported_list() {
        let r = parse_request(r#"{"v":7,"op":"status"}"#).unwrap_err();
        assert!(
            matches!(r.outcome, Outcome::Err { error: ErrorKind::UnsupportedVersion, ref message } if message.contains("[1]"))
        );
        let r = parse_request("garbage").unwrap_err();
        assert!(matches!(r.outcome, Outcome::Err { error: ErrorKind::BadRequest, .. }));
    }

    #[test]
    fn responses_round_trip() {
        let ok = Response {
            v: 1,
            outcome: Outcome::Ok {
                ok: Reply::Lease(Box::new(Lease {
                    addr: "10.0.0.5".parse().unwrap(),
                    eni: "eni-1".into(),
                    device_index: 1,
                    route_table: 2,
                    mtu: 9001,
                    veth_prefix: "eni".into(),
                    veth: "eni0123456789a".into(),
                    egress_v4: None,
                    existing: false,
                    pod: Some(("default".into(), "web".into())),
                })),
            },
        };
        let s = serde_json::to_string(&ok).unwrap();
        assert_eq!(serde_json::from_str::<Response>(&s).unwrap(), ok);
        let e =
            Response { v: 1, outcome: Outcome::Err { error: ErrorKind::PoolExhausted, message: "refilling".into() } };
        let s = serde_json::to_string(&e).unwrap();
        assert_eq!(s, r#"{"v":1,"error":"pool_exhausted","message":"refilling"}"#);
        assert_eq!(serde_json::from_str::<Response>(&s).unwrap(), e);
    }
}
