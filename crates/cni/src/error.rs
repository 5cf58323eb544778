//! CNI errors: the spec's codes and the JSON a plugin prints on stdout when it fails.

use serde::Serialize;
use std::fmt;

/// The spec's error codes (0–99 are reserved by the spec; 100+ are plugin-specific).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(into = "u32")]
pub enum ErrorCode {
    /// 1: incompatible CNI version.
    IncompatibleVersion,
    /// 2: unsupported field in the network configuration.
    UnsupportedField,
    /// 3: container unknown or missing.
    UnknownContainer,
    /// 4: invalid required environment variables.
    InvalidEnv,
    /// 5: I/O failure.
    Io,
    /// 6: failed to decode content.
    Decode,
    /// 7: invalid network configuration.
    InvalidConfig,
    /// 11: try again later.
    TryAgainLater,
    /// 50: STATUS: the plugin cannot serve ADD.
    NotAvailable,
    /// 51: STATUS: not available, and existing containers may have limited connectivity.
    LimitedConnectivity,
    /// 100+: podip's own.
    Plugin(u32),
}

impl From<ErrorCode> for u32 {
    fn from(c: ErrorCode) -> u32 {
        match c {
            ErrorCode::IncompatibleVersion => 1,
            ErrorCode::UnsupportedField => 2,
            ErrorCode::UnknownContainer => 3,
            ErrorCode::InvalidEnv => 4,
            ErrorCode::Io => 5,
            ErrorCode::Decode => 6,
            ErrorCode::InvalidConfig => 7,
            ErrorCode::TryAgainLater => 11,
            ErrorCode::NotAvailable => 50,
            ErrorCode::LimitedConnectivity => 51,
            ErrorCode::Plugin(n) => n,
        }
    }
}

/// An error as the runtime reads it: `{"cniVersion","code","msg","details"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
pub struct CniError {
    /// The version the error is reported in.
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// Code.
    pub code: ErrorCode,
    /// Short message.
    pub msg: String,
    /// Longer detail.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    /// An error with `code` and `msg` in the newest version.
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> CniError {
        CniError { cni_version: crate::version::LATEST.into(), code, msg: msg.into(), details: String::new() }
    }

    /// The same error with details.
    pub fn with_details(mut self, details: impl Into<String>) -> CniError {
        self.details = details.into();
        self
    }

    /// The same error reported in `version`.
    pub fn in_version(mut self, version: &str) -> CniError {
        self.cni_version = version.into();
        self
    }

    /// The JSON printed on stdout.
    pub fn to_json(&self) -> String {
        // A struct of strings and integers always serializes.
        serde_json::to_string(self).expect("error serializes")
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CNI error {}: {}", u32::from(self.code), self.msg)?;
        if !self.details.is_empty() {
            write!(f, " ({})", self.details)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_has_the_spec_shape() {
        let e = CniError::new(ErrorCode::TryAgainLater, "pool exhausted").with_details("refill in flight");
        assert_eq!(
            e.to_json(),
            r#"{"cniVersion":"1.1.0","code":11,"msg":"pool exhausted","details":"refill in flight"}"#
        );
        assert_eq!(CniError::new(ErrorCode::Decode, "x").to_json(), r#"{"cniVersion":"1.1.0","code":6,"msg":"x"}"#);
    }
}
