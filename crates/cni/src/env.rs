//! The plugin's environment (`CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`,
//! `CNI_ARGS`, `CNI_PATH`) checked against the spec's rules for each command.

use crate::error::{CniError, ErrorCode};
use std::collections::BTreeMap;

/// The operation asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Attach.
    Add,
    /// Detach (idempotent).
    Del,
    /// Verify.
    Check,
    /// Garbage-collect attachments not in the valid list.
    Gc,
    /// Readiness.
    Status,
    /// Versions supported.
    Version,
}

impl Command {
    fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }
}

/// A checked environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CniEnv {
    /// `CNI_COMMAND`.
    pub command: Command,
    /// `CNI_CONTAINERID` (ADD, DEL, CHECK).
    pub container_id: Option<String>,
    /// `CNI_NETNS` (ADD, CHECK; optional and possibly empty on DEL).
    pub netns: Option<String>,
    /// `CNI_IFNAME` (ADD, DEL, CHECK).
    pub ifname: Option<String>,
    /// `CNI_ARGS`, parsed `K=V;K=V`.
    pub args: BTreeMap<String, String>,
    /// `CNI_PATH`, split on `:`.
    pub path: Vec<String>,
}

/// The longest container id accepted (runtimes use 64 hex digits, containerd prefixes a
/// namespace).
pub const MAX_CONTAINER_ID: usize = 256;

/// Whether `id` is a valid container id (at most [`MAX_CONTAINER_ID`] bytes): starts alphanumeric, then alphanumerics, `_`, `.`, `-`.
pub fn valid_container_id(id: &str) -> bool {
    let mut chars = id.chars();
    if id.len() > MAX_CONTAINER_ID {
        return false;
    }
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Why `name` cannot be an interface name, if it cannot.
pub fn ifname_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name.len() > 15 {
        Some("is longer than 15 characters")
    } else if name == "." || name == ".." {
        Some("is . or ..")
    } else if name.chars().any(|c| "/:\\#\"'%".contains(c) || c.is_whitespace() || c.is_control()) {
        // `\`, `#` and quotes mean something to iproute2's batch reader (a line continued, a
        // comment, a quoted word), through which IPv6 pods are set up; the kernel replaces a
        // `%d` in a new interface's name with a number of its choosing.
        Some("contains /, :, \\, #, %, a quote, whitespace or a control character")
    } else {
        None
    }
}

/// Why `prefix` cannot be a host veth prefix, if it cannot: 1 to 4 ASCII letters or digits
/// (the rest of the 15-byte name is the pod's hash), and not a prefix the node's own interfaces
/// use (`eth`, `lo`, `vlan`).
pub fn veth_prefix_problem(prefix: &str) -> Option<&'static str> {
    if prefix.is_empty() || prefix.len() > 4 {
        Some("must be 1 to 4 characters")
    } else if !prefix.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Some("must hold only ASCII letters and digits")
    } else if ["eth", "lo", "vlan"].contains(&prefix) {
        Some("must not be eth, lo or vlan")
    } else {
        None
    }
}

/// Why `name` cannot be a CNI network name, if it cannot: 1 to 128 characters, a letter or
/// digit first, then letters, digits, `_`, `.`, `-` (libcni's rule, with a length cap).
pub fn network_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > 128 {
        Some("must be 1 to 128 characters")
    } else if !valid_container_id(name) {
        Some("must start with a letter or digit and hold only letters, digits, _ . -")
    } else {
        None
    }
}

impl CniEnv {
    /// Reads and checks the environment through `get` (e.g. `std::env::var(k).ok()`).
    ///
    /// # Errors
    /// Code 4 naming every missing or bad variable and its value.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<CniEnv, CniError> {
        let mut bad = Vec::new();
        let command = match get("CNI_COMMAND") {
            None => {
                return Err(CniError::new(ErrorCode::InvalidEnv, "CNI_COMMAND is not set"));
            }
            Some(c) => match Command::parse(&c) {
                Some(c) => c,
                None => {
                    return Err(CniError::new(
                        ErrorCode::InvalidEnv,
                        format!("CNI_COMMAND={c:?} is not one of ADD, DEL, CHECK, GC, STATUS, VERSION"),
                    ));
                }
            },
        };
        let per_container = matches!(command, Command::Add | Command::Del | Command::Check);
        let nonempty = |k: &str| get(k).filter(|v| !v.is_empty());
        let container_id = nonempty("CNI_CONTAINERID");
        let netns = nonempty("CNI_NETNS");
        let ifname = nonempty("CNI_IFNAME");
        if per_container {
            match &container_id {
                None => bad.push("CNI_CONTAINERID is not set".to_string()),
                Some(id) if !valid_container_id(id) => bad.push(format!(
                    "CNI_CONTAINERID={id:?} must start with a letter or digit and hold only letters, digits, _ . -"
                )),
                _ => {}
            }
            match &ifname {
                None => bad.push("CNI_IFNAME is not set".to_string()),
                Some(n) => {
                    if let Some(p) = ifname_problem(n) {
                        bad.push(format!("CNI_IFNAME={n:?} {p}"));
                    }
                }
            }
            if netns.is_none() && command != Command::Del {
                bad.push("CNI_NETNS is not set".to_string());
            }
        }
        let path: Vec<String> = get("CNI_PATH")
            .map(|p| p.split(':').filter(|s| !s.is_empty()).map(String::from).collect())
            .unwrap_or_default();
        if command == Command::Gc && path.is_empty() {
            bad.push("CNI_PATH is not set (GC needs it)".to_string());
        }
        let mut args = BTreeMap::new();
        if let Some(raw) = get("CNI_ARGS") {
            for kv in raw.split(';').filter(|s| !s.is_empty()) {
                match kv.split_once('=') {
                    Some((k, v)) if !k.is_empty() => {
                        if args.insert(k.to_string(), v.to_string()).is_some() {
                            bad.push(format!("CNI_ARGS has {k:?} more than once"));
                        }
                    }
                    _ => bad.push(format!("CNI_ARGS has {kv:?}, not KEY=VALUE")),
                }
            }
        }
        if !bad.is_empty() {
            return Err(CniError::new(ErrorCode::InvalidEnv, bad.join("; ")));
        }
        Ok(CniEnv { command, container_id, netns, ifname, args, path })
    }

    /// The Kubernetes pod namespace and name from `CNI_ARGS`, when the runtime sent them.
    pub fn pod(&self) -> Option<(&str, &str)> {
        Some((self.args.get("K8S_POD_NAMESPACE")?.as_str(), self.args.get("K8S_POD_NAME")?.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Result<CniEnv, CniError> {
        CniEnv::from_lookup(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string()))
    }

    #[test]
    fn add_needs_everything() {
        let e = env(&[("CNI_COMMAND", "ADD")]).unwrap_err();
        assert_eq!(u32::from(e.code), 4);
        for v in ["CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS"] {
            assert!(e.msg.contains(v), "{}", e.msg);
        }
        let ok = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc-1"),
            ("CNI_NETNS", "/proc/1/ns/net"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0"),
            ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
        ])
        .unwrap();
        assert_eq!(ok.pod(), Some(("default", "web-0")));
        assert_eq!(ok.path, vec!["/opt/cni/bin", "/usr/lib/cni"]);
    }

    #[test]
    fn del_accepts_an_empty_netns() {
        let e = env(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c"), ("CNI_IFNAME", "eth0"), ("CNI_NETNS", "")])
            .unwrap();
        assert_eq!(e.netns, None);
    }

    #[test]
    fn bad_values_are_named() {
        let e = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "-bad"),
            ("CNI_NETNS", "/x"),
            ("CNI_IFNAME", "a-very-long-ifname0"),
        ])
        .unwrap_err();
        assert!(e.msg.contains("\"-bad\"") && e.msg.contains("\"a-very-long-ifname0\" is longer than 15"), "{}", e.msg);
        let e = env(&[("CNI_COMMAND", "FROB")]).unwrap_err();
        assert!(e.msg.contains("FROB"));
        for bad in [".", "..", "a/b", "a:b", "a b", "e\\", "a#b", "a\"b", "a'b", "eth%d"] {
            assert!(ifname_problem(bad).is_some(), "{bad}");
        }
        assert_eq!(ifname_problem("eth0"), None);
        let e = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "K8S_POD_NAME=a;K8S_POD_NAME=b"),
        ])
        .unwrap_err();
        assert!(e.msg.contains("\"K8S_POD_NAME\" more than once"), "{}", e.msg);
        let e = env(&[("CNI_COMMAND", "GC")]).unwrap_err();
        assert!(e.msg.contains("CNI_PATH"));
        assert!(env(&[("CNI_COMMAND", "VERSION")]).is_ok());
        assert!(env(&[("CNI_COMMAND", "STATUS")]).is_ok());
    }
}
