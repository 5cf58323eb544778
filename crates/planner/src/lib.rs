//! podip's planner: node engines run against the simulated VPC in virtual time.
//!
//! [`node::NodeSim`] drives one node (its engine, its instance on a [`cloud::sim::SimVpc`], its
//! pool-check timer and the latency of each cloud call) as a discrete-event simulation.
//! [`pool::run_pool`] is the `podip pool` experiment built on it.
#![forbid(unsafe_code)]

pub mod artifacts;
pub mod cluster;
pub mod frag;
pub mod html;
pub mod import;
pub mod node;
pub mod plan;
pub mod podipd;
pub mod pool;
pub mod room;
pub mod scenario;
pub mod script;
pub mod search;
pub mod strategy;
