//! The ADD result, printed per spec version (0.4.0 IP entries carry `"version"`; 1.1.0
//! interfaces may carry `mtu`).

use crate::version::Version;
use ipnet::IpNet;
use serde::Serialize;
use serde_json::{Value, json};
use std::net::IpAddr;

/// An interface of the result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    /// Name.
    pub name: String,
    /// MAC address.
    pub mac: String,
    /// Netns path, for interfaces inside the container.
    pub sandbox: Option<String>,
    /// MTU (1.1.0).
    pub mtu: Option<u32>,
}

/// An address of the result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpConfig {
    /// Address with prefix length.
    pub address: IpNet,
    /// Gateway.
    pub gateway: Option<IpAddr>,
    /// Index into the interfaces.
    pub interface: Option<usize>,
}

/// A route of the result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Route {
    /// Destination.
    pub dst: IpNet,
    /// Gateway.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

/// An ADD result.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct AddResult {
    /// Interfaces.
    pub interfaces: Vec<Interface>,
    /// Addresses.
    pub ips: Vec<IpConfig>,
    /// Routes.
    pub routes: Vec<Route>,
}

impl AddResult {
    /// The result as JSON in `version`.
    pub fn to_value(&self, version: Version) -> Value {
        let interfaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|i| {
                let mut v = json!({"name": i.name, "mac": i.mac});
                if let Some(s) = &i.sandbox {
                    v["sandbox"] = json!(s);
                }
                if let (Some(m), Version::V1_1_0) = (i.mtu, version) {
                    v["mtu"] = json!(m);
                }
                v
            })
            .collect();
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut v = json!({"address": ip.address.to_string()});
                if let Some(g) = ip.gateway {
                    v["gateway"] = json!(g.to_string());
                }
                if let Some(i) = ip.interface {
                    v["interface"] = json!(i);
                }
                if version == Version::V0_4_0 {
                    v["version"] = json!(if ip.address.addr().is_ipv4() { "4" } else { "6" });
                }
                v
            })
            .collect();
        json!({"cniVersion": version.as_str(), "interfaces": interfaces, "ips": ips, "routes": self.routes, "dns": {}})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AddResult {
        AddResult {
            interfaces: vec![
                Interface { name: "enia1b2c3d4e5f".into(), mac: "0a:58:0a:01:02:03".into(), sandbox: None, mtu: None },
                Interface {
                    name: "eth0".into(),
                    mac: "0a:58:64:40:00:17".into(),
                    sandbox: Some("/var/run/netns/p".into()),
                    mtu: Some(9001),
                },
            ],
            ips: vec![IpConfig {
                address: "100.64.0.23/32".parse().unwrap(),
                gateway: Some("169.254.1.1".parse().unwrap()),
                interface: Some(1),
            }],
            routes: vec![Route { dst: "0.0.0.0/0".parse().unwrap(), gw: Some("169.254.1.1".parse().unwrap()) }],
        }
    }

    #[test]
    fn version_1_1_carries_mtu_and_no_ip_version() {
        let v = sample().to_value(Version::V1_1_0);
        assert_eq!(v["interfaces"][1]["mtu"], 9001);
        assert!(v["ips"][0].get("version").is_none());
        assert_eq!(v["ips"][0]["interface"], 1);
        assert_eq!(v["routes"][0]["gw"], "169.254.1.1");
    }

    #[test]
    fn version_0_4_marks_ip_versions_and_drops_mtu() {
        let v = sample().to_value(Version::V0_4_0);
        assert_eq!(v["ips"][0]["version"], "4");
        assert!(v["interfaces"][1].get("mtu").is_none());
        assert_eq!(v["cniVersion"], "0.4.0");
    }
}
