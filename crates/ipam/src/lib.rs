//! Pure pod-address core of podip: address math, the instance catalog, the datastore, warm-pool
//! policies, max pods and the node engine.
//!
//! Nothing here does I/O, reads a clock or draws randomness on its own: time arrives as a
//! [`Time`] argument and randomness as a seed, so every decision can be replayed exactly.
//!
//! # Example
//! ```
//! use ipam::{catalog::Catalog, maxpods::{max_pods, MaxPodsOptions}};
//! let m5 = Catalog::embedded().get("m5.large").unwrap();
//! let mp = max_pods(m5, &MaxPodsOptions::default());
//! assert_eq!(mp.max_pods, 29);
//! ```
#![forbid(unsafe_code)]

pub mod addr;
pub mod call;
pub mod catalog;
pub mod config;
pub mod datastore;
pub mod demand;
pub mod engine;
pub mod maxpods;
pub mod policy;
pub mod rng;
pub mod time;

pub use time::Time;
