//! The simulated VPC: a copy of EC2's address behaviour on the points that matter to pod
//! addressing, in virtual time, seeded.
//!
//! - Subnets reserve their first 4 and last address; addresses and aligned /28 prefixes are
//!   picked at random among eligible free ones ([`params::Placement`]); explicit reservations are
//!   never auto-assigned; prefix reservations serve prefixes first.
//! - Per-instance ENI limits and per-ENI address limits come from the instance catalog.
//! - Failures carry the real EC2 error codes.
//! - Each action has an account-wide token bucket; an empty one answers `RequestLimitExceeded`.
//! - Each call takes a sampled virtual latency, read with [`SimVpc::take_elapsed`].
//! - Faults can be injected: random errors (transient, or any code the action can answer),
//!   replies lost after the call took effect, throttling storms, latency spikes. A throttled
//!   request takes no token.
//! - Attachments go through `attaching` and `detaching` for a sampled time; an ENI still
//!   attached or detaching cannot be deleted (`InvalidNetworkInterface.InUse`); an ENI attaches
//!   only to an instance in its subnet's AZ.
//! - ENIs carry a description and tags; the unattached ones of an instance can be listed.
//! - The instance metadata view of an ENI's addresses ([`SimVpc::metadata_enis`]) lags EC2.

pub mod bucket;
pub mod params;
pub mod subnet;

use crate::{Action, CreateEni, Ec2, EniDescription, EniStatus, ec2_error};
use bucket::TokenBucket;
use ipam::Time;
use ipam::addr::{EniId, InstanceId, SubnetId, host_net};
use ipam::call::CallError;
use ipam::catalog::InstanceType;
use ipam::rng::SeededRng;
use ipnet::{Ipv4Net, Ipv6Net};
use params::LatencyRange;
pub use params::SimParams;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::Ipv4Addr;
use std::time::Duration;
use subnet::{Reservation, ReservationError, Subnet};
use thiserror::Error;

/// Calls of one action and how they ended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ActionStats {
    /// Requests made.
    pub calls: u64,
    /// Requests that succeeded.
    pub ok: u64,
    /// Requests answered `RequestLimitExceeded`.
    pub throttled: u64,
    /// Other failures by EC2 error code.
    pub errors: BTreeMap<String, u64>,
    /// Failures injected by [`params::Faults::error_rate`] (also counted above).
    pub injected: u64,
    /// Calls that took effect but whose reply was lost (counted as `ok`).
    pub lost: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AttachState {
    Attaching,
    Attached,
    Detaching,
}

#[derive(Clone, Debug)]
struct SimAttachment {
    instance: InstanceId,
    device: u32,
    state: AttachState,
    delete_on_termination: bool,
}

#[derive(Clone, Debug)]
struct SimEni {
    subnet: usize,
    primary_ip: Ipv4Addr,
    secondary: Vec<Ipv4Addr>,
    prefixes: Vec<Ipv4Net>,
    ipv6_prefixes: Vec<Ipv6Net>,
    attachment: Option<SimAttachment>,
    description: String,
    tags: BTreeMap<String, String>,
    interface_type: String,
    security_groups: Vec<String>,
    /// Recent address changes (when, block, added), newest last, for the lagging metadata view.
    changes: VecDeque<(Time, Ipv4Net, bool)>,
}

#[derive(Clone, Debug)]
struct SimInstance {
    instance_type: String,
    subnet: SubnetId,
    max_enis: u32,
    ipv4_per_eni: u32,
    az: String,
    enis: BTreeMap<u32, EniId>,
}

/// A VPC layout EC2 would refuse.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum LayoutError {
    /// The subnet is not inside any VPC CIDR.
    #[error("subnet {0} is not inside any VPC CIDR")]
    OutsideVpc(Ipv4Net),
    /// The subnet overlaps another.
    #[error("subnet {0} overlaps subnet {1}")]
    Overlap(Ipv4Net, Ipv4Net),
    /// Subnets must be /16 to /28.
    #[error("subnet {0} must be between /16 and /28")]
    BadSize(Ipv4Net),
    /// VPC CIDRs must be /16 to /28 and disjoint.
    #[error("VPC CIDR {0} must be between /16 and /28 and not overlap another")]
    BadVpcCidr(Ipv4Net),
    /// No such subnet.
    #[error("unknown subnet {0}")]
    UnknownSubnet(SubnetId),
    /// A bad reservation.
    #[error(transparent)]
    Reservation(#[from] ReservationError),
}

/// The id of the simulator's one VPC.
pub const VPC_ID: &str = "vpc-0000000000000000a";

/// The security group an ENI created without any gets: the VPC's default one, as in EC2.
pub const DEFAULT_SECURITY_GROUP: &str = "sg-0000000000000000d";

/// An ENI's MAC address: fixed per id, locally administered, as EC2's are per interface.
pub fn mac_of(id: &EniId) -> String {
    let n = u64::from_str_radix(id.0.trim_start_matches("eni-"), 16).unwrap_or(0);
    let b = n.to_be_bytes();
    format!("02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[3], b[4], b[5], b[6], b[7])
}

/// An instance as the metadata service describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceView {
    /// Instance type.
    pub instance_type: String,
    /// Availability zone.
    pub az: String,
    /// The subnet of its primary ENI.
    pub subnet: SubnetId,
}

/// The simulated VPC.
#[derive(Clone, Debug)]
pub struct SimVpc {
    params: SimParams,
    rng: SeededRng,
    now: Time,
    elapsed: Duration,
    cidrs: Vec<Ipv4Net>,
    subnets: Vec<Subnet>,
    enis: BTreeMap<EniId, SimEni>,
    instances: BTreeMap<InstanceId, SimInstance>,
    buckets: BTreeMap<Action, TokenBucket>,
    stats: BTreeMap<Action, ActionStats>,
    next_id: u64,
    /// Attachments leaving `attaching` or `detaching`, by when.
    transitions: BTreeSet<(Time, EniId)>,
}

impl SimVpc {
    /// An empty VPC.
    pub fn new(params: SimParams) -> SimVpc {
        let buckets =
            params.buckets.iter().map(|(a, s)| (*a, TokenBucket::new(s.capacity, s.refill_per_sec))).collect();
        SimVpc {
            rng: SeededRng::new(params.seed),
            params,
            now: Time::ZERO,
            elapsed: Duration::ZERO,
            cidrs: Vec::new(),
            subnets: Vec::new(),
            enis: BTreeMap::new(),
            instances: BTreeMap::new(),
            buckets,
            stats: BTreeMap::new(),
            next_id: 1,
            transitions: BTreeSet::new(),
        }
    }

    /// Sets the virtual clock (calls are made at this instant).
    pub fn set_now(&mut self, now: Time) {
        self.now = now;
        self.settle();
    }

    /// Completes the attachments whose `attaching` or `detaching` time is over.
    fn settle(&mut self) {
        while let Some((at, id)) = self.transitions.first().cloned() {
            if at > self.now {
                break;
            }
            self.transitions.pop_first();
            let Some(e) = self.enis.get_mut(&id) else { continue };
            match e.attachment.as_ref().map(|a| a.state) {
                Some(AttachState::Attaching) => {
                    if let Some(a) = e.attachment.as_mut() {
                        a.state = AttachState::Attached;
                    }
                }
                Some(AttachState::Detaching) => {
                    if let Some(a) = e.attachment.take()
                        && let Some(i) = self.instances.get_mut(&a.instance)
                    {
                        i.enis.remove(&a.device);
                    }
                }
                _ => {}
            }
        }
    }

    /// The virtual clock.
    pub fn now(&self) -> Time {
        self.now
    }

    /// Virtual time the calls since the last `take_elapsed` took, and resets it.
    pub fn take_elapsed(&mut self) -> Duration {
        std::mem::take(&mut self.elapsed)
    }

    /// Calls per action.
    pub fn action_stats(&self) -> &BTreeMap<Action, ActionStats> {
        &self.stats
    }

    /// Parameters.
    pub fn params(&self) -> &SimParams {
        &self.params
    }

    /// Replaces the injected faults.
    pub fn set_faults(&mut self, faults: params::Faults) {
        self.params.faults = faults;
    }

    /// Adds a CIDR block to the VPC.
    ///
    /// # Errors
    /// Outside /16–/28, or overlapping another block.
    pub fn add_vpc_cidr(&mut self, cidr: Ipv4Net) -> Result<(), LayoutError> {
        let cidr = cidr.trunc();
        if !(16..=28).contains(&cidr.prefix_len()) || self.cidrs.iter().any(|c| c.contains(&cidr) || cidr.contains(c)) {
            return Err(LayoutError::BadVpcCidr(cidr));
        }
        self.cidrs.push(cidr);
        Ok(())
    }

    /// The VPC's CIDR blocks.
    pub fn vpc_cidrs(&self) -> &[Ipv4Net] {
        &self.cidrs
    }

    /// Adds a subnet and returns its id.
    ///
    /// # Errors
    /// Outside the VPC, overlapping, or a bad size.
    pub fn add_subnet(&mut self, az: &str, cidr: Ipv4Net) -> Result<SubnetId, LayoutError> {
        self.add_subnet_v6(az, cidr, None)
    }

    /// Adds a dual-stack subnet.
    ///
    /// # Errors
    /// As [`SimVpc::add_subnet`].
    pub fn add_subnet_v6(&mut self, az: &str, cidr: Ipv4Net, ipv6: Option<Ipv6Net>) -> Result<SubnetId, LayoutError> {
        let cidr = cidr.trunc();
        if !(16..=28).contains(&cidr.prefix_len()) {
            return Err(LayoutError::BadSize(cidr));
        }
        if !self.cidrs.iter().any(|c| c.contains(&cidr)) {
            return Err(LayoutError::OutsideVpc(cidr));
        }
        if let Some(o) = self.subnets.iter().find(|s| s.cidr.contains(&cidr) || cidr.contains(&s.cidr)) {
            return Err(LayoutError::Overlap(cidr, o.cidr));
        }
        let id = SubnetId(format!("subnet-{:017x}", self.fresh_id()));
        self.subnets.push(Subnet::new(id.clone(), az, cidr, ipv6));
        Ok(id)
    }

    fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn subnet_index(&self, id: &SubnetId) -> Option<usize> {
        self.subnets.iter().position(|s| &s.id == id)
    }

    /// The subnet with this id.
    pub fn subnet(&self, id: &SubnetId) -> Option<&Subnet> {
        self.subnets.iter().find(|s| &s.id == id)
    }

    /// The subnet with this id, for setting up existing usage.
    pub fn subnet_mut(&mut self, id: &SubnetId) -> Option<&mut Subnet> {
        self.subnets.iter_mut().find(|s| &s.id == id)
    }

    /// Every subnet.
    pub fn subnets(&self) -> &[Subnet] {
        &self.subnets
    }

    /// Tags a subnet.
    ///
    /// # Errors
    /// Unknown subnet.
    pub fn tag_subnet(&mut self, subnet: &SubnetId, key: &str, value: &str) -> Result<(), LayoutError> {
        let s = self.subnet_mut(subnet).ok_or_else(|| LayoutError::UnknownSubnet(subnet.clone()))?;
        s.tags.insert(key.into(), value.into());
        Ok(())
    }

    /// Adds a subnet CIDR reservation.
    ///
    /// # Errors
    /// Unknown subnet, outside it, or overlapping.
    pub fn add_reservation(&mut self, subnet: &SubnetId, r: Reservation) -> Result<(), LayoutError> {
        let s = self.subnet_mut(subnet).ok_or_else(|| LayoutError::UnknownSubnet(subnet.clone()))?;
        Ok(s.add_reservation(r)?)
    }

    /// Marks `n` random free addresses of a subnet as used by something else (existing usage).
    ///
    /// # Errors
    /// Unknown subnet.
    pub fn occupy_random(&mut self, subnet: &SubnetId, n: u32) -> Result<u32, LayoutError> {
        let i = self.subnet_index(subnet).ok_or_else(|| LayoutError::UnknownSubnet(subnet.clone()))?;
        let mut done = 0;
        for _ in 0..n {
            match self.subnets[i].take_ip(&mut self.rng, params::Placement::Random) {
                Some(ip) => {
                    let off = self.subnets[i].offset(ip).unwrap_or(0);
                    self.subnets[i].mark(off, false);
                    self.subnets[i].occupy(ip);
                    done += 1;
                }
                None => break,
            }
        }
        Ok(done)
    }

    fn sample(&mut self, r: LatencyRange) -> Duration {
        let span = r.max.saturating_sub(r.min).as_millis() as u64;
        let mut d = r.min + Duration::from_millis(if span == 0 { 0 } else { self.rng.below(span + 1) });
        let f = &self.params.faults;
        if f.latency_spike_rate > 0.0 && self.rng.unit() < f.latency_spike_rate {
            d = d.mul_f64(f.latency_spike_factor.max(1.0));
        }
        d
    }

    fn latency_of(&self, action: Action) -> LatencyRange {
        let p = &self.params;
        let half = |r: LatencyRange| LatencyRange { min: r.min / 2, max: r.max / 2 };
        match action {
            Action::CreateNetworkInterface | Action::AttachNetworkInterface => half(p.eni_create_attach),
            Action::AssignPrivateIpAddresses | Action::AssignIpv6Addresses => p.assign,
            Action::UnassignPrivateIpAddresses
            | Action::DetachNetworkInterface
            | Action::ModifyNetworkInterfaceAttribute
            | Action::DeleteNetworkInterface
            | Action::TerminateInstances => p.release,
            Action::DescribeNetworkInterfaces | Action::DescribeSubnets => p.describe,
            Action::RunInstances => p.eni_create_attach,
        }
    }

    /// Admission of one request: counts it, applies faults and the action's bucket, and charges
    /// its latency.
    fn begin(&mut self, action: Action) -> Result<(), CallError> {
        let lat = self.latency_of(action);
        let d = self.sample(lat);
        self.elapsed += d;
        let now = self.now;
        let stats = self.stats.entry(action).or_default();
        stats.calls += 1;
        // A request refused by throttling takes no token.
        let storm = self.params.faults.throttle_storms.iter().any(|w| w.contains(now));
        if storm || !self.buckets.get_mut(&action).is_none_or(|b| b.take(now)) {
            stats.throttled += 1;
            return Err(ec2_error("RequestLimitExceeded", format!("Request limit exceeded for {}", action.name())));
        }
        if self.params.faults.error_rate > 0.0 && self.rng.unit() < self.params.faults.error_rate {
            let code = if self.params.faults.any_code {
                let codes = injectable_codes(action);
                codes[self.rng.below(codes.len() as u64) as usize]
            } else {
                "InternalError"
            };
            stats.injected += 1;
            if code == "RequestLimitExceeded" {
                stats.throttled += 1;
            } else {
                *stats.errors.entry(code.into()).or_default() += 1;
            }
            return Err(ec2_error(code, format!("{} failed (injected)", action.name())));
        }
        Ok(())
    }

    fn finish<T>(&mut self, action: Action, r: Result<T, CallError>) -> Result<T, CallError> {
        let lost = r.is_ok()
            && self.params.faults.lost_reply_rate > 0.0
            && self.rng.unit() < self.params.faults.lost_reply_rate;
        let stats = self.stats.entry(action).or_default();
        match &r {
            Ok(_) => stats.ok += 1,
            Err(e) => *stats.errors.entry(e.code.clone()).or_default() += 1,
        }
        if lost {
            stats.lost += 1;
            return Err(ec2_error("RequestTimeout", format!("{}: the reply was lost (injected)", action.name())));
        }
        r
    }

    fn eni_not_found(id: &EniId) -> CallError {
        ec2_error("InvalidNetworkInterfaceID.NotFound", format!("The networkInterface ID '{id}' does not exist"))
    }

    fn eni_limit(&self, e: &SimEni) -> Option<u32> {
        let a = e.attachment.as_ref()?;
        self.instances.get(&a.instance).map(|i| i.ipv4_per_eni)
    }

    /// Records an address change of an ENI for the lagging metadata view.
    fn record(&mut self, id: &EniId, nets: &[Ipv4Net], added: bool) {
        let lag = self.params.imds_lag;
        let now = self.now;
        if lag.is_zero() {
            return;
        }
        if let Some(e) = self.enis.get_mut(id) {
            while e.changes.front().is_some_and(|(t, _, _)| now.since(*t) > lag) {
                e.changes.pop_front();
            }
            e.changes.extend(nets.iter().map(|n| (now, *n, added)));
        }
    }

    /// What the instance metadata service shows of `instance`'s attached ENIs now: EC2's state
    /// as it was [`SimParams::imds_lag`] ago for addresses and prefixes (the VPC CNI builds its
    /// pool from this view). Not an API call.
    pub fn metadata_enis(&self, instance: &InstanceId) -> Vec<EniDescription> {
        let lag = self.params.imds_lag;
        let mut out = Vec::new();
        for (id, e) in &self.enis {
            if e.attachment.as_ref().is_none_or(|a| &a.instance != instance) {
                continue;
            }
            let Some(mut d) = self.describe(id) else { continue };
            for (t, net, added) in e.changes.iter().rev() {
                if self.now.since(*t) > lag {
                    break;
                }
                let host = net.prefix_len() == 32;
                match (added, host) {
                    (true, true) => d.secondary_ips.retain(|ip| *ip != net.addr()),
                    (true, false) => d.prefixes.retain(|p| p != net),
                    (false, true) => d.secondary_ips.push(net.addr()),
                    (false, false) => d.prefixes.push(*net),
                }
            }
            out.push(d);
        }
        out
    }

    /// Launches an instance of type `t` with its primary ENI in `subnet` (`RunInstances`).
    ///
    /// # Errors
    /// Unknown subnet, no free address, throttled.
    pub fn run_instance(
        &mut self,
        t: &InstanceType,
        subnet: &SubnetId,
    ) -> Result<(InstanceId, EniDescription), CallError> {
        self.begin(Action::RunInstances)?;
        let r = self.run_instance_inner(t, subnet);
        self.finish(Action::RunInstances, r)
    }

    fn run_instance_inner(
        &mut self,
        t: &InstanceType,
        subnet: &SubnetId,
    ) -> Result<(InstanceId, EniDescription), CallError> {
        let eni = self.create_inner(&CreateEni {
            subnet: subnet.clone(),
            security_groups: vec![],
            secondary_ips: 0,
            prefixes: 0,
            ..CreateEni::default()
        })?;
        let id = InstanceId(format!("i-{:017x}", self.fresh_id()));
        let az = self.subnet(subnet).map(|s| s.az.clone()).unwrap_or_default();
        self.instances.insert(
            id.clone(),
            SimInstance {
                instance_type: t.name.clone(),
                subnet: subnet.clone(),
                max_enis: t.max_enis,
                ipv4_per_eni: t.ipv4_per_eni,
                az,
                enis: BTreeMap::from([(0, eni.id.clone())]),
            },
        );
        if let Some(e) = self.enis.get_mut(&eni.id) {
            e.attachment = Some(SimAttachment {
                instance: id.clone(),
                device: 0,
                state: AttachState::Attached,
                delete_on_termination: true,
            });
            e.description = format!("Primary network interface of {id}");
        }
        let desc = self.describe(&eni.id).ok_or_else(|| Self::eni_not_found(&eni.id))?;
        Ok((id, desc))
    }

    /// Terminates an instance: its ENIs are deleted with it (`DeleteOnTermination`).
    ///
    /// # Errors
    /// Unknown instance, throttled.
    pub fn terminate_instance(&mut self, id: &InstanceId) -> Result<(), CallError> {
        self.begin(Action::TerminateInstances)?;
        let r = match self.instances.remove(id) {
            None => Err(ec2_error("InvalidInstanceID.NotFound", format!("The instance ID '{id}' does not exist"))),
            Some(inst) => {
                // ENIs go with the instance only when their attachment says so; the others
                // stay, unattached (a leak unless someone sweeps them).
                for eni in inst.enis.values() {
                    let dot =
                        self.enis.get(eni).and_then(|e| e.attachment.as_ref()).is_some_and(|a| a.delete_on_termination);
                    if dot {
                        self.destroy_eni(eni);
                    } else if let Some(e) = self.enis.get_mut(eni) {
                        e.attachment = None;
                    }
                }
                Ok(())
            }
        };
        self.finish(Action::TerminateInstances, r)
    }

    fn destroy_eni(&mut self, id: &EniId) {
        if let Some(e) = self.enis.remove(id) {
            if let Some(a) = &e.attachment
                && let Some(i) = self.instances.get_mut(&a.instance)
            {
                i.enis.remove(&a.device);
            }
            let s = &mut self.subnets[e.subnet];
            s.release(host_net(e.primary_ip));
            for ip in e.secondary {
                s.release(host_net(ip));
            }
            for p in e.prefixes {
                s.release(p);
            }
        }
    }

    /// What EC2 holds for an ENI, read without making (or counting) an API call.
    pub fn peek_eni(&self, id: &EniId) -> Option<EniDescription> {
        self.describe(id)
    }

    /// `DescribeNetworkInterfaces` with a filter: the ENIs `keep` accepts, in id order (one
    /// call, throttled and counted like any other).
    ///
    /// # Errors
    /// Throttled or an injected fault.
    pub fn describe_enis_where(
        &mut self,
        keep: impl Fn(&EniDescription) -> bool,
    ) -> Result<Vec<EniDescription>, CallError> {
        self.begin(Action::DescribeNetworkInterfaces)?;
        let r = Ok(self.enis.keys().filter_map(|id| self.describe(id)).filter(|d| keep(d)).collect());
        self.finish(Action::DescribeNetworkInterfaces, r)
    }

    /// `DescribeSubnets` with a filter: the subnets `keep` accepts (one call).
    ///
    /// # Errors
    /// Throttled or an injected fault.
    pub fn describe_subnets_where(
        &mut self,
        keep: impl Fn(&crate::SubnetDescription) -> bool,
    ) -> Result<Vec<crate::SubnetDescription>, CallError> {
        self.begin(Action::DescribeSubnets)?;
        let r = Ok(self.subnets.iter().map(Subnet::description).filter(|d| keep(d)).collect());
        self.finish(Action::DescribeSubnets, r)
    }

    /// The VPC's id (the simulator holds one VPC).
    pub fn vpc_id(&self) -> &'static str {
        VPC_ID
    }

    /// What the instance metadata service knows of `instance` that is not about its ENIs: its
    /// type, AZ and the subnet it was launched in. `None` for an unknown (or terminated) one.
    pub fn instance(&self, id: &InstanceId) -> Option<InstanceView> {
        self.instances.get(id).map(|i| InstanceView {
            instance_type: i.instance_type.clone(),
            az: i.az.clone(),
            subnet: i.subnet.clone(),
        })
    }

    /// The instances running, in id order.
    pub fn instance_ids(&self) -> Vec<InstanceId> {
        self.instances.keys().cloned().collect()
    }

    fn describe(&self, id: &EniId) -> Option<EniDescription> {
        let e = self.enis.get(id)?;
        Some(EniDescription {
            id: id.clone(),
            subnet: self.subnets[e.subnet].id.clone(),
            primary_ip: e.primary_ip,
            secondary_ips: e.secondary.clone(),
            prefixes: e.prefixes.clone(),
            ipv6_prefixes: e.ipv6_prefixes.clone(),
            attachment: e.attachment.as_ref().map(|a| (a.instance.clone(), a.device)),
            delete_on_termination: e.attachment.as_ref().is_some_and(|a| a.delete_on_termination),
            status: match e.attachment.as_ref().map(|a| a.state) {
                None => EniStatus::Available,
                Some(AttachState::Attaching) => EniStatus::Attaching,
                Some(AttachState::Attached) => EniStatus::InUse,
                Some(AttachState::Detaching) => EniStatus::Detaching,
            },
            interface_type: e.interface_type.clone(),
            description: e.description.clone(),
            tags: e.tags.clone(),
            security_groups: e.security_groups.clone(),
            mac: mac_of(id),
        })
    }

    fn create_inner(&mut self, req: &CreateEni) -> Result<EniDescription, CallError> {
        let si = self.subnet_index(&req.subnet).ok_or_else(|| {
            ec2_error("InvalidSubnetID.NotFound", format!("The subnet ID '{}' does not exist", req.subnet))
        })?;
        let placement = self.params.placement;
        let s = &self.subnets[si];
        if s.free_ips() < req.secondary_ips.saturating_add(1) {
            return Err(ec2_error(
                "InsufficientFreeAddressesInSubnet",
                format!("The specified subnet {} does not have enough free addresses", req.subnet),
            ));
        }
        // The primary address comes first, so it can itself break up /28 blocks (issue #2313).
        let s = &mut self.subnets[si];
        let primary =
            s.take_ip(&mut self.rng, placement).ok_or_else(|| ec2_error("InsufficientFreeAddressesInSubnet", ""))?;
        let mut prefixes = Vec::new();
        for _ in 0..req.prefixes {
            match s.take_prefix(&mut self.rng, placement) {
                Some(p) => prefixes.push(p),
                None => {
                    s.release(host_net(primary));
                    for p in prefixes {
                        s.release(p);
                    }
                    return Err(ec2_error(
                        "InsufficientCidrBlocks",
                        format!(
                            "The specified subnet {} does not have enough contiguous free address blocks",
                            req.subnet
                        ),
                    ));
                }
            }
        }
        let mut secondary = Vec::new();
        for _ in 0..req.secondary_ips {
            // Enough free addresses were checked above.
            secondary.push(s.take_ip(&mut self.rng, placement).expect("free addresses counted"));
        }
        let id = EniId(format!("eni-{:017x}", self.fresh_id()));
        self.enis.insert(
            id.clone(),
            SimEni {
                subnet: si,
                primary_ip: primary,
                secondary,
                prefixes,
                ipv6_prefixes: vec![],
                attachment: None,
                description: req.description.clone(),
                tags: req.tags.iter().cloned().collect(),
                interface_type: "interface".into(),
                security_groups: if req.security_groups.is_empty() {
                    vec![DEFAULT_SECURITY_GROUP.to_string()]
                } else {
                    req.security_groups.clone()
                },
                changes: VecDeque::new(),
            },
        );
        self.describe(&id).ok_or_else(|| Self::eni_not_found(&id))
    }

    fn assign_ips_inner(&mut self, id: &EniId, count: u32) -> Result<Vec<Ipv4Addr>, CallError> {
        let e = self.enis.get(id).ok_or_else(|| Self::eni_not_found(id))?;
        if let Some(limit) = self.eni_limit(e) {
            let have = 1 + e.secondary.len() as u32 + e.prefixes.len() as u32;
            if have.saturating_add(count) > limit {
                return Err(ec2_error(
                    "PrivateIpAddressLimitExceeded",
                    format!("Number of private addresses will exceed limit for {id}"),
                ));
            }
        }
        let si = e.subnet;
        if self.subnets[si].free_ips() < count {
            return Err(ec2_error(
                "InsufficientFreeAddressesInSubnet",
                format!("The specified subnet {} does not have enough free addresses", self.subnets[si].id),
            ));
        }
        let placement = self.params.placement;
        let mut ips = Vec::new();
        for _ in 0..count {
            // Counted just above.
            ips.push(self.subnets[si].take_ip(&mut self.rng, placement).expect("free addresses counted"));
        }
        if let Some(e) = self.enis.get_mut(id) {
            e.secondary.extend(&ips);
        }
        let nets: Vec<Ipv4Net> = ips.iter().map(|ip| host_net(*ip)).collect();
        self.record(id, &nets, true);
        Ok(ips)
    }

    fn assign_prefixes_inner(&mut self, id: &EniId, count: u32) -> Result<Vec<Ipv4Net>, CallError> {
        let e = self.enis.get(id).ok_or_else(|| Self::eni_not_found(id))?;
        if let Some(limit) = self.eni_limit(e) {
            let have = 1 + e.secondary.len() as u32 + e.prefixes.len() as u32;
            if have.saturating_add(count) > limit {
                return Err(ec2_error(
                    "PrivateIpAddressLimitExceeded",
                    format!("Number of private addresses will exceed limit for {id}"),
                ));
            }
        }
        let si = e.subnet;
        let placement = self.params.placement;
        let mut got = Vec::new();
        for _ in 0..count {
            match self.subnets[si].take_prefix(&mut self.rng, placement) {
                Some(p) => got.push(p),
                None => {
                    for p in got {
                        self.subnets[si].release(p);
                    }
                    return Err(ec2_error(
                        "InsufficientCidrBlocks",
                        format!(
                            "The specified subnet {} does not have enough contiguous free address blocks",
                            self.subnets[si].id
                        ),
                    ));
                }
            }
        }
        if let Some(e) = self.enis.get_mut(id) {
            e.prefixes.extend(&got);
        }
        self.record(id, &got, true);
        Ok(got)
    }

    /// `UnassignPrivateIpAddresses` of addresses (/32s) or prefixes: all of them must be on the
    /// ENI, or nothing changes.
    fn unassign_blocks(&mut self, eni: &EniId, nets: &[Ipv4Net], prefixes: bool) -> Result<(), CallError> {
        self.begin(Action::UnassignPrivateIpAddresses)?;
        let r = (|| {
            let e = self.enis.get_mut(eni).ok_or_else(|| Self::eni_not_found(eni))?;
            let held: Vec<Ipv4Net> =
                if prefixes { e.prefixes.clone() } else { e.secondary.iter().map(|ip| host_net(*ip)).collect() };
            if let Some(n) = nets.iter().find(|n| !held.contains(n)) {
                let shown = if prefixes { n.to_string() } else { n.addr().to_string() };
                return Err(ec2_error("InvalidParameterValue", format!("{shown} is not assigned to {eni}")));
            }
            if prefixes {
                e.prefixes.retain(|p| !nets.contains(p));
            } else {
                e.secondary.retain(|ip| !nets.contains(&host_net(*ip)));
            }
            let si = e.subnet;
            for n in nets {
                self.subnets[si].release(*n);
            }
            self.record(eni, nets, false);
            Ok(())
        })();
        self.finish(Action::UnassignPrivateIpAddresses, r)
    }

    /// Checks the VPC's own invariants: every address belongs to at most one holder and lies in
    /// its subnet outside the reserved ones, prefixes are aligned, limits hold. Returns the
    /// violations found.
    pub fn check_invariants(&self) -> Vec<String> {
        let mut bad = Vec::new();
        let mut seen: BTreeMap<(usize, u32), String> = BTreeMap::new();
        for (id, e) in &self.enis {
            let s = &self.subnets[e.subnet];
            let mut nets: Vec<Ipv4Net> = vec![host_net(e.primary_ip)];
            nets.extend(e.secondary.iter().map(|ip| host_net(*ip)));
            for p in &e.prefixes {
                if !ipam::addr::is_aligned_prefix(p) {
                    bad.push(format!("{id}: prefix {p} not aligned"));
                }
                nets.push(*p);
            }
            for n in nets {
                for ip in n
                    .hosts()
                    .chain(if n.prefix_len() == 32 { None } else { Some(n.network()) })
                    .chain(if n.prefix_len() == 32 { None } else { Some(n.broadcast()) })
                {
                    let Some(o) = s.offset(ip) else {
                        bad.push(format!("{id}: {ip} outside subnet {}", s.cidr));
                        continue;
                    };
                    if s.is_reserved(o) {
                        bad.push(format!("{id}: {ip} is a reserved address"));
                    }
                    if !s.is_used(o) {
                        bad.push(format!("{id}: {ip} not marked used"));
                    }
                    if let Some(other) = seen.insert((e.subnet, o), id.to_string()) {
                        bad.push(format!("{ip} held by {other} and {id}"));
                    }
                }
            }
            if let Some(limit) = self.eni_limit(e) {
                let n = 1 + e.secondary.len() + e.prefixes.len();
                if n as u32 > limit {
                    bad.push(format!("{id}: {n} addresses over the limit {limit}"));
                }
            }
        }
        for (si, s) in self.subnets.iter().enumerate() {
            for o in s.foreign() {
                if let Some(other) = seen.insert((si, *o), "existing usage".into()) {
                    bad.push(format!("{} held by {other} and existing usage", s.addr(*o)));
                }
            }
            let held = seen.keys().filter(|(i, _)| *i == si).count() as u32;
            if held != s.used_count() {
                bad.push(format!("{}: {} addresses marked used, {} held", s.id, s.used_count(), held));
            }
        }
        for (id, inst) in &self.instances {
            if inst.enis.len() as u32 > inst.max_enis {
                bad.push(format!("{id}: {} ENIs over the limit {}", inst.enis.len(), inst.max_enis));
            }
        }
        bad
    }
}

impl Ec2 for SimVpc {
    fn create_network_interface(&mut self, req: &CreateEni) -> Result<EniDescription, CallError> {
        self.begin(Action::CreateNetworkInterface)?;
        let r = self.create_inner(req);
        self.finish(Action::CreateNetworkInterface, r)
    }

    fn attach_network_interface(
        &mut self,
        eni: &EniId,
        instance: &InstanceId,
        device_index: u32,
    ) -> Result<(), CallError> {
        self.begin(Action::AttachNetworkInterface)?;
        let r = (|| {
            let e = self.enis.get(eni).ok_or_else(|| Self::eni_not_found(eni))?;
            if e.attachment.is_some() {
                return Err(ec2_error("InvalidParameterValue", format!("{eni} is already attached")));
            }
            let n = 1 + e.secondary.len() as u32 + e.prefixes.len() as u32;
            let az = self.subnets[e.subnet].az.clone();
            let inst = self.instances.get_mut(instance).ok_or_else(|| {
                ec2_error("InvalidInstanceID.NotFound", format!("The instance ID '{instance}' does not exist"))
            })?;
            if inst.az != az {
                return Err(ec2_error(
                    "InvalidParameterCombination",
                    format!("{eni} is in {az} and instance {instance} in {}: they must be in the same AZ", inst.az),
                ));
            }
            if inst.enis.len() as u32 >= inst.max_enis {
                return Err(ec2_error(
                    "AttachmentLimitExceeded",
                    format!("Interface count {} exceeds the limit for this instance type", inst.enis.len() + 1),
                ));
            }
            if n > inst.ipv4_per_eni {
                return Err(ec2_error("PrivateIpAddressLimitExceeded", format!("{eni} has too many addresses")));
            }
            if inst.enis.contains_key(&device_index) {
                return Err(ec2_error("InvalidParameterValue", format!("device index {device_index} is in use")));
            }
            inst.enis.insert(device_index, eni.clone());
            if let Some(e) = self.enis.get_mut(eni) {
                e.attachment = Some(SimAttachment {
                    instance: instance.clone(),
                    device: device_index,
                    state: AttachState::Attaching,
                    delete_on_termination: false,
                });
            }
            let settle = self.sample(self.params.attach_settle);
            self.transitions.insert((self.now + settle, eni.clone()));
            Ok(())
        })();
        self.finish(Action::AttachNetworkInterface, r)
    }

    fn assign_private_ip_addresses(&mut self, eni: &EniId, count: u32) -> Result<Vec<Ipv4Addr>, CallError> {
        self.begin(Action::AssignPrivateIpAddresses)?;
        let r = self.assign_ips_inner(eni, count);
        self.finish(Action::AssignPrivateIpAddresses, r)
    }

    fn assign_ipv4_prefixes(&mut self, eni: &EniId, count: u32) -> Result<Vec<Ipv4Net>, CallError> {
        self.begin(Action::AssignPrivateIpAddresses)?;
        let r = self.assign_prefixes_inner(eni, count);
        self.finish(Action::AssignPrivateIpAddresses, r)
    }

    fn assign_ipv6_prefix(&mut self, eni: &EniId) -> Result<Ipv6Net, CallError> {
        self.begin(Action::AssignIpv6Addresses)?;
        let r = (|| {
            let si = self.enis.get(eni).ok_or_else(|| Self::eni_not_found(eni))?.subnet;
            let p = self.subnets[si].take_ipv6_prefix().ok_or_else(|| {
                ec2_error(
                    "InvalidParameterValue",
                    format!("subnet {} has no IPv6 block with room", self.subnets[si].id),
                )
            })?;
            if let Some(e) = self.enis.get_mut(eni) {
                e.ipv6_prefixes.push(p);
            }
            Ok(p)
        })();
        self.finish(Action::AssignIpv6Addresses, r)
    }

    fn unassign_private_ip_addresses(&mut self, eni: &EniId, ips: &[Ipv4Addr]) -> Result<(), CallError> {
        let nets: Vec<Ipv4Net> = ips.iter().map(|ip| host_net(*ip)).collect();
        self.unassign_blocks(eni, &nets, false)
    }

    fn unassign_ipv4_prefixes(&mut self, eni: &EniId, prefixes: &[Ipv4Net]) -> Result<(), CallError> {
        self.unassign_blocks(eni, prefixes, true)
    }

    fn detach_network_interface(&mut self, eni: &EniId) -> Result<(), CallError> {
        self.begin(Action::DetachNetworkInterface)?;
        let r = (|| {
            let e = self.enis.get_mut(eni).ok_or_else(|| Self::eni_not_found(eni))?;
            let a = e
                .attachment
                .as_mut()
                .ok_or_else(|| ec2_error("InvalidAttachmentID.NotFound", format!("{eni} is not attached")))?;
            if a.device == 0 {
                return Err(ec2_error("OperationNotPermitted", "The primary network interface cannot be detached"));
            }
            if a.state == AttachState::Detaching {
                return Err(ec2_error("IncorrectState", format!("{eni} is already detaching")));
            }
            a.state = AttachState::Detaching;
            let settle = self.sample(self.params.detach_settle);
            self.transitions.insert((self.now + settle, eni.clone()));
            Ok(())
        })();
        self.finish(Action::DetachNetworkInterface, r)
    }

    fn delete_network_interface(&mut self, eni: &EniId) -> Result<(), CallError> {
        self.begin(Action::DeleteNetworkInterface)?;
        let r = match self.enis.get(eni) {
            None => Err(Self::eni_not_found(eni)),
            Some(e) if e.attachment.is_some() => Err(ec2_error(
                "InvalidNetworkInterface.InUse",
                format!("Network interface '{eni}' is currently in use"),
            )),
            Some(_) => {
                self.destroy_eni(eni);
                Ok(())
            }
        };
        self.finish(Action::DeleteNetworkInterface, r)
    }

    fn describe_network_interfaces(&mut self, instance: &InstanceId) -> Result<Vec<EniDescription>, CallError> {
        self.begin(Action::DescribeNetworkInterfaces)?;
        let ids: Vec<EniId> = self
            .enis
            .iter()
            .filter(|(_, e)| e.attachment.as_ref().is_some_and(|a| &a.instance == instance))
            .map(|(id, _)| id.clone())
            .collect();
        let r = Ok(ids.iter().filter_map(|id| self.describe(id)).collect());
        self.finish(Action::DescribeNetworkInterfaces, r)
    }

    fn describe_subnets(&mut self, az: &str) -> Result<Vec<crate::SubnetDescription>, CallError> {
        self.begin(Action::DescribeSubnets)?;
        let r = Ok(self.subnets.iter().filter(|s| s.az == az).map(Subnet::description).collect());
        self.finish(Action::DescribeSubnets, r)
    }

    fn set_delete_on_termination(&mut self, eni: &EniId) -> Result<(), CallError> {
        self.begin(Action::ModifyNetworkInterfaceAttribute)?;
        let r = match self.enis.get_mut(eni) {
            None => Err(Self::eni_not_found(eni)),
            Some(e) => match e.attachment.as_mut() {
                None => Err(ec2_error("InvalidAttachmentID.NotFound", format!("{eni} is not attached"))),
                Some(a) => {
                    a.delete_on_termination = true;
                    Ok(())
                }
            },
        };
        self.finish(Action::ModifyNetworkInterfaceAttribute, r)
    }

    fn describe_unattached(&mut self, cluster: Option<&str>) -> Result<Vec<EniDescription>, CallError> {
        self.begin(Action::DescribeNetworkInterfaces)?;
        let ids: Vec<EniId> = self
            .enis
            .iter()
            .filter(|(_, e)| {
                let cluster_ok = cluster.is_none_or(|c| e.tags.get(crate::TAG_CLUSTER).is_some_and(|t| t == c));
                e.attachment.is_none() && e.tags.contains_key(crate::TAG_INSTANCE_ID) && cluster_ok
            })
            .map(|(id, _)| id.clone())
            .collect();
        let r = Ok(ids.iter().filter_map(|id| self.describe(id)).collect());
        self.finish(Action::DescribeNetworkInterfaces, r)
    }
}

/// The codes EC2 can answer `action` with, for injected faults: its own failures and the ones
/// every action shares.
fn injectable_codes(action: Action) -> &'static [&'static str] {
    match action {
        Action::CreateNetworkInterface => &[
            "InsufficientFreeAddressesInSubnet",
            "InsufficientCidrBlocks",
            "NetworkInterfaceLimitExceeded",
            "UnauthorizedOperation",
            "InternalError",
            "RequestLimitExceeded",
            "Unavailable",
        ],
        Action::AttachNetworkInterface => &[
            "AttachmentLimitExceeded",
            "InvalidNetworkInterfaceID.NotFound",
            "IncorrectState",
            "UnauthorizedOperation",
            "InternalError",
            "RequestLimitExceeded",
            "Unavailable",
        ],
        Action::AssignPrivateIpAddresses | Action::AssignIpv6Addresses => &[
            "PrivateIpAddressLimitExceeded",
            "InsufficientFreeAddressesInSubnet",
            "InsufficientCidrBlocks",
            "InvalidNetworkInterfaceID.NotFound",
            "UnauthorizedOperation",
            "InternalError",
            "RequestLimitExceeded",
            "Unavailable",
        ],
        Action::UnassignPrivateIpAddresses => &[
            "InvalidParameterValue",
            "InvalidNetworkInterfaceID.NotFound",
            "UnauthorizedOperation",
            "InternalError",
            "RequestLimitExceeded",
            "Unavailable",
        ],
        Action::ModifyNetworkInterfaceAttribute => &[
            "InvalidAttachmentID.NotFound",
            "InvalidNetworkInterfaceID.NotFound",
            "UnauthorizedOperation",
            "InternalError",
            "RequestLimitExceeded",
            "Unavailable",
        ],
        Action::DetachNetworkInterface => &[
            "IncorrectState",
            "InvalidAttachmentID.NotFound",
            "UnauthorizedOperation",
            "InternalError",
            "RequestLimitExceeded",
            "Unavailable",
        ],
        Action::DeleteNetworkInterface => &[
            "InvalidNetworkInterface.InUse",
            "InvalidNetworkInterfaceID.NotFound",
            "UnauthorizedOperation",
            "InternalError",
            "RequestLimitExceeded",
            "Unavailable",
        ],
        Action::DescribeNetworkInterfaces
        | Action::DescribeSubnets
        | Action::RunInstances
        | Action::TerminateInstances => {
            &["UnauthorizedOperation", "InternalError", "RequestLimitExceeded", "Unavailable"]
        }
    }
}

#[cfg(test)]
mod tests;
