//! The simulated VPC's parameters. Every default is a fact from the references, with its source;
//! where no public source exists the value is marked assumed.

use crate::Action;
use ipam::Time;
use std::collections::BTreeMap;
use std::time::Duration;

/// How EC2 picks free addresses and /28 blocks in a subnet. Undocumented; observed to be random
/// (`aws-and-peers.md` §3.4), kept pluggable to test sensitivity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Uniform among eligible free addresses (default).
    Random,
    /// Lowest eligible first.
    Lowest,
    /// Highest eligible first.
    Highest,
}

/// Capacity and refill rate of one action's bucket.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BucketSpec {
    /// Burst.
    pub capacity: f64,
    /// Tokens per second.
    pub refill_per_sec: f64,
}

/// A latency range, sampled uniformly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LatencyRange {
    /// Shortest.
    pub min: Duration,
    /// Longest.
    pub max: Duration,
}

impl LatencyRange {
    /// A range from `min_ms` to `max_ms` milliseconds.
    pub const fn ms(min_ms: u64, max_ms: u64) -> LatencyRange {
        LatencyRange { min: Duration::from_millis(min_ms), max: Duration::from_millis(max_ms) }
    }
}

/// A window of virtual time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Start (inclusive).
    pub start: Time,
    /// End (exclusive).
    pub end: Time,
}

impl Window {
    /// Whether `t` is inside.
    pub fn contains(&self, t: Time) -> bool {
        self.start <= t && t < self.end
    }
}

/// Injected faults.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    /// Probability that a call fails before taking effect: with `InternalError`, or with any code
    /// EC2 can answer that action with when `any_code` is set.
    pub error_rate: f64,
    /// Draw injected errors from every code the action can fail with (limits, not found, in use,
    /// insufficient addresses, unauthorized, throttled...), not only `InternalError`.
    pub any_code: bool,
    /// Probability that a call takes effect but its reply is lost (the caller sees
    /// `RequestTimeout`): the window only a reconcile can close.
    pub lost_reply_rate: f64,
    /// Windows in which every call is throttled (`RequestLimitExceeded`).
    pub throttle_storms: Vec<Window>,
    /// Probability that a call's latency is multiplied by `latency_spike_factor`.
    pub latency_spike_rate: f64,
    /// Multiplier of a latency spike.
    pub latency_spike_factor: f64,
}

/// Everything that shapes the simulated VPC.
#[derive(Clone, Debug, PartialEq)]
pub struct SimParams {
    /// Seed of every random choice.
    pub seed: u64,
    /// Address placement policy.
    pub placement: Placement,
    /// Per-action token buckets for the account.
    pub buckets: BTreeMap<Action, BucketSpec>,
    /// Create and attach an ENI: "can take up to 10 seconds" (VPC CNI `docs/eni-and-ip-target.md`);
    /// the 2 s floor is assumed. Split evenly between the create and the attach.
    pub eni_create_attach: LatencyRange,
    /// Assign an address or prefix: "typically completes in under a second" (EKS best practices,
    /// prefix mode); the 0.2 s floor is assumed.
    pub assign: LatencyRange,
    /// Unassign, detach, delete: assumed like assign.
    pub release: LatencyRange,
    /// Describe calls: assumed.
    pub describe: LatencyRange,
    /// How long an attachment stays `attaching` after `AttachNetworkInterface` returns. EC2
    /// documents the state but not its length; assumed 1-3 s.
    pub attach_settle: LatencyRange,
    /// How long an attachment stays `detaching` (the ENI cannot be deleted meanwhile:
    /// `InvalidNetworkInterface.InUse`). The VPC CNI sleeps 2 s between detach and delete and
    /// retries the delete 12 times (`vpc-cni-behaviour.md` §7); assumed 1-5 s.
    pub detach_settle: LatencyRange,
    /// How far the instance metadata service's view of an ENI's addresses lags EC2 (IMDS is
    /// eventually consistent, `vpc-cni-behaviour.md` §7, VPC CNI issues #3887, #711); assumed
    /// 5 s. 0 makes it exact.
    pub imds_lag: Duration,
    /// Faults.
    pub faults: Faults,
}

impl SimParams {
    /// The buckets of `aws-and-peers.md` §3.1 (EC2 API throttling documentation).
    pub fn default_buckets() -> BTreeMap<Action, BucketSpec> {
        let spec = |capacity, refill_per_sec| BucketSpec { capacity, refill_per_sec };
        BTreeMap::from([
            (Action::CreateNetworkInterface, spec(100.0, 5.0)),
            (Action::AssignPrivateIpAddresses, spec(100.0, 5.0)),
            (Action::UnassignPrivateIpAddresses, spec(100.0, 5.0)),
            (Action::AssignIpv6Addresses, spec(100.0, 5.0)),
            (Action::DeleteNetworkInterface, spec(100.0, 5.0)),
            // Not listed: the mutating default.
            (Action::AttachNetworkInterface, spec(50.0, 5.0)),
            (Action::DetachNetworkInterface, spec(50.0, 5.0)),
            (Action::ModifyNetworkInterfaceAttribute, spec(50.0, 5.0)),
            // Filtered describe: non-mutating.
            (Action::DescribeNetworkInterfaces, spec(100.0, 20.0)),
            (Action::DescribeSubnets, spec(100.0, 20.0)),
            (Action::RunInstances, spec(5.0, 2.0)),
            (Action::TerminateInstances, spec(100.0, 5.0)),
        ])
    }
}

impl Default for SimParams {
    fn default() -> Self {
        SimParams {
            seed: 1,
            placement: Placement::Random,
            buckets: SimParams::default_buckets(),
            eni_create_attach: LatencyRange::ms(2_000, 10_000),
            assign: LatencyRange::ms(200, 1_000),
            release: LatencyRange::ms(200, 1_000),
            describe: LatencyRange::ms(50, 300),
            attach_settle: LatencyRange::ms(1_000, 3_000),
            detach_settle: LatencyRange::ms(1_000, 5_000),
            imds_lag: Duration::from_secs(5),
            faults: Faults::default(),
        }
    }
}
