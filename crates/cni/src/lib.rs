//! The CNI specification as data: the plugin's environment ([`env`]), its network configuration
//! on stdin ([`config`]), its results ([`result`]) and errors ([`error`]) on stdout, for spec
//! versions 0.4.0, 1.0.0 and 1.1.0 ([`version`]).
//!
//! Pure: no I/O, no netlink. Parse functions take strings and variable lookups, so every rule is
//! tested without a runtime.
//!
//! # Example
//! ```
//! use cni::env::{CniEnv, Command};
//! let vars = [("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth0")];
//! let env = CniEnv::from_lookup(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())).unwrap();
//! assert_eq!(env.command, Command::Del);
//! assert!(env.netns.is_none(), "DEL may come without a netns");
//! ```
#![forbid(unsafe_code)]

pub mod config;
pub mod env;
pub mod error;
pub mod result;
pub mod version;

pub use error::{CniError, ErrorCode};
