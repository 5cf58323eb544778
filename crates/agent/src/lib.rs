//! The node agent's parts that `podipd` and `podip-cni` share: the daemon's configuration
//! ([`config`], aws-node's environment names and a TOML file), the versioned plugin protocol
//! ([`protocol`]), and the checkpoint ([`checkpoint`]) with its reconciliation against ground
//! truth.
#![forbid(unsafe_code)]

pub mod awsnode;
pub mod checkpoint;
pub mod clock;
pub mod cniconf;
pub mod config;
pub mod daemon;
pub mod limits;
pub mod lock;
pub mod metrics;
pub use protocol;
pub mod vpccni;
