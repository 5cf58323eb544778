//! The spec versions podip speaks, and the VERSION command's answer.

use crate::error::{CniError, ErrorCode};
use serde::Serialize;

/// Versions supported, oldest first.
pub const SUPPORTED: [&str; 3] = ["0.4.0", "1.0.0", "1.1.0"];
/// The newest.
pub const LATEST: &str = "1.1.0";

/// A supported spec version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// 0.4.0: adds CHECK; IP entries carry `version`.
    V0_4_0,
    /// 1.0.0.
    V1_0_0,
    /// 1.1.0: adds GC and STATUS.
    V1_1_0,
}

impl Version {
    /// Parses a `cniVersion` value.
    ///
    /// # Errors
    /// Code 1 naming the version and the supported ones.
    pub fn parse(v: &str) -> Result<Version, CniError> {
        match v {
            "0.4.0" => Ok(Version::V0_4_0),
            "1.0.0" => Ok(Version::V1_0_0),
            "1.1.0" => Ok(Version::V1_1_0),
            other => Err(CniError::new(
                ErrorCode::IncompatibleVersion,
                format!("cniVersion {other:?} is not supported (supported: {})", SUPPORTED.join(", ")),
            )),
        }
    }

    /// The string form.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V0_4_0 => "0.4.0",
            Version::V1_0_0 => "1.0.0",
            Version::V1_1_0 => "1.1.0",
        }
    }
}

/// The VERSION command's answer.
#[derive(Debug, Serialize)]
pub struct VersionInfo {
    /// The version asked in (or the newest).
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// Every supported version.
    #[serde(rename = "supportedVersions")]
    pub supported_versions: Vec<&'static str>,
}

/// The answer to VERSION for a request in `asked` (any version string is accepted here: VERSION
/// is how a runtime discovers what we speak).
pub fn version_info(asked: Option<&str>) -> VersionInfo {
    VersionInfo {
        cni_version: asked.filter(|a| SUPPORTED.contains(a)).unwrap_or(LATEST).to_string(),
        supported_versions: SUPPORTED.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_supported_and_refuses_others_with_code_1() {
        assert_eq!(Version::parse("0.4.0").unwrap(), Version::V0_4_0);
        let e = Version::parse("0.3.1").unwrap_err();
        assert_eq!(u32::from(e.code), 1);
        assert!(e.msg.contains("0.3.1") && e.msg.contains("1.1.0"));
    }

    #[test]
    fn version_info_lists_all() {
        let v = serde_json::to_string(&version_info(Some("1.0.0"))).unwrap();
        assert_eq!(v, r#"{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0","1.1.0"]}"#);
    }
}
