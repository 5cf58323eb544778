//! The network configuration a runtime passes on stdin, for podip's plugin.

use crate::error::{CniError, ErrorCode};
use crate::version::Version;
use serde::Deserialize;
use serde_json::Value;

/// Default daemon socket.
pub const DEFAULT_SOCKET: &str = "/run/podip/podipd.sock";

/// An attachment the runtime still considers valid (GC).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Attachment {
    /// Container id.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// Interface name.
    pub ifname: String,
}

#[derive(Deserialize)]
struct Raw {
    #[serde(rename = "cniVersion")]
    cni_version: Option<String>,
    name: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    socket: Option<String>,
    mtu: Option<Value>,
    #[serde(rename = "vethPrefix")]
    veth_prefix: Option<String>,
    #[serde(rename = "prevResult")]
    prev_result: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments")]
    valid_attachments: Option<Vec<Attachment>>,
}

/// A checked network configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct NetConf {
    /// The spec version the runtime speaks.
    pub version: Version,
    /// The network name (part of the IPAM key).
    pub name: String,
    /// The plugin type.
    pub kind: String,
    /// The daemon's socket.
    pub socket: String,
    /// Pod MTU, if set.
    pub mtu: Option<u32>,
    /// Host veth prefix, when the configuration sets one: it must then equal podipd's
    /// (`AWS_VPC_K8S_CNI_VETHPREFIX`), which ADD and DEL both use.
    pub veth_prefix: Option<String>,
    /// The previous result (CHECK, DEL, chained ADD).
    pub prev_result: Option<Value>,
    /// GC's valid attachments.
    /// GC's valid attachments; `None` when the configuration does not carry the key (GC then
    /// refuses rather than take every attachment for stale).
    pub valid_attachments: Option<Vec<Attachment>>,
}

impl NetConf {
    /// Parses stdin.
    ///
    /// # Errors
    /// Code 6 for text that is not a JSON object; code 1 for an unsupported `cniVersion`;
    /// code 7 naming every bad field and its value.
    pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
        let raw: Raw = serde_json::from_slice(stdin)
            .map_err(|e| CniError::new(ErrorCode::Decode, format!("network configuration is not valid JSON: {e}")))?;
        let version = Version::parse(raw.cni_version.as_deref().unwrap_or(""))?;
        let mut bad = Vec::new();
        let name = raw.name.unwrap_or_default();
        if let Some(p) = crate::env::network_name_problem(&name) {
            let shown: String = name.chars().take(64).collect();
            bad.push(format!("name={shown:?} {p}"));
        }
        let mtu = match &raw.mtu {
            None => None,
            Some(Value::Number(n)) => match n.as_u64() {
                Some(m) if (576..=9001).contains(&m) => Some(m as u32),
                _ => {
                    bad.push(format!("mtu={n} is outside 576..9001"));
                    None
                }
            },
            Some(other) => {
                bad.push(format!("mtu={other} is not a number"));
                None
            }
        };
        let veth_prefix = raw.veth_prefix;
        if let Some(p) = veth_prefix.as_deref().and_then(crate::env::veth_prefix_problem) {
            bad.push(format!("vethPrefix={:?} {p}", veth_prefix.as_deref().unwrap_or_default()));
        }
        let socket = raw.socket.unwrap_or_else(|| DEFAULT_SOCKET.into());
        if !socket.starts_with('/') || socket.len() > 107 || socket.contains('\0') {
            bad.push(format!("socket={socket:?} must be an absolute path of at most 107 bytes"));
        }
        if !bad.is_empty() {
            return Err(CniError::new(ErrorCode::InvalidConfig, bad.join("; ")).in_version(version.as_str()));
        }
        Ok(NetConf {
            version,
            name,
            kind: raw.kind.unwrap_or_default(),
            socket,
            mtu,
            veth_prefix,
            prev_result: raw.prev_result,
            valid_attachments: raw.valid_attachments,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_conflist_entry() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"podip","type":"podip-cni","mtu":9001,"socket":"/tmp/s.sock"}"#,
        )
        .unwrap();
        assert_eq!(
            (c.version, c.name.as_str(), c.mtu, c.socket.as_str()),
            (Version::V1_0_0, "podip", Some(9001), "/tmp/s.sock")
        );
        assert_eq!(c.veth_prefix, None);
    }

    #[test]
    fn the_bad_input_table() {
        let code = |s: &[u8]| u32::from(NetConf::parse(s).unwrap_err().code);
        assert_eq!(code(b"{not json"), 6);
        assert_eq!(code(b"[1,2]"), 6);
        assert_eq!(code(br#"{"cniVersion":"0.2.0","name":"n"}"#), 1);
        assert_eq!(code(br#"{"name":"n"}"#), 1);
        let e = NetConf::parse(br#"{"cniVersion":"1.1.0","name":"","mtu":"big","vethPrefix":"toolong"}"#).unwrap_err();
        assert_eq!(u32::from(e.code), 7);
        for needle in ["name", "mtu=\"big\"", "vethPrefix=\"toolong\""] {
            assert!(e.msg.contains(needle), "{}", e.msg);
        }
        let e = NetConf::parse(br#"{"cniVersion":"1.1.0","name":"a b","vethPrefix":"e\u0007","socket":"rel.sock"}"#)
            .unwrap_err();
        for needle in ["name=\"a b\"", "vethPrefix=\"e\\u{7}\"", "socket=\"rel.sock\""] {
            assert!(e.msg.contains(needle), "{needle}: {}", e.msg);
        }
        let long = format!(r#"{{"cniVersion":"1.1.0","name":"{}"}}"#, "n".repeat(50_000_000));
        let e = NetConf::parse(long.as_bytes()).unwrap_err();
        assert!(e.msg.contains("1 to 128") && e.msg.len() < 300, "the message stays short");
    }

    #[test]
    fn gc_valid_attachments() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.1.0","name":"podip","cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}]}"#,
        )
        .unwrap();
        assert_eq!(c.valid_attachments, Some(vec![Attachment { container_id: "c1".into(), ifname: "eth0".into() }]));
    }
}
