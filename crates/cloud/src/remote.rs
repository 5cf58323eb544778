//! The simulated VPC as a service: a [`serve`] loop that owns a [`SimVpc`] behind a Unix socket,
//! and [`RemoteEc2`], an [`Ec2`] client for it. A node daemon on a laptop uses the service as
//! its cloud, so the cloud's state (its ground truth) outlives the daemon, as EC2's does.
//!
//! One JSON request and one JSON reply per line. Calls are made at wall-clock time, and the
//! reply waits the call's simulated latency (scaled by the service's `latency_scale`).

use crate::sim::SimVpc;
use crate::{CallError, CreateEni, Ec2, EniDescription, ec2_error};
use ipam::Time;
use ipam::addr::{EniId, InstanceId, SubnetId};
use ipam::catalog::Catalog;
use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A request to the service.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Ec2Request {
    /// Launch an instance (the node) with its primary ENI in `subnet`.
    RunInstance {
        /// Type.
        instance_type: String,
        /// Subnet id.
        subnet: SubnetId,
    },
    /// The subnets, for a node choosing where it lives.
    Subnets,
    /// The VPC's CIDR blocks (IMDS `vpc-ipv4-cidr-blocks`).
    VpcCidrs,
    /// `CreateNetworkInterface`.
    Create {
        /// Subnet.
        subnet: SubnetId,
        /// Secondary addresses.
        secondary_ips: u32,
        /// Prefixes.
        prefixes: u32,
        /// Description.
        #[serde(default)]
        description: String,
        /// Tags.
        #[serde(default)]
        tags: Vec<(String, String)>,
    },
    /// `AttachNetworkInterface`.
    Attach {
        /// ENI.
        eni: EniId,
        /// Instance.
        instance: InstanceId,
        /// Slot.
        device_index: u32,
    },
    /// `AssignPrivateIpAddresses` (count).
    AssignIps {
        /// ENI.
        eni: EniId,
        /// Count.
        count: u32,
    },
    /// `AssignPrivateIpAddresses` (prefix count).
    AssignPrefixes {
        /// ENI.
        eni: EniId,
        /// Count.
        count: u32,
    },
    /// `AssignIpv6Addresses` (one /80).
    AssignIpv6Prefix {
        /// ENI.
        eni: EniId,
    },
    /// `UnassignPrivateIpAddresses` (addresses).
    UnassignIps {
        /// ENI.
        eni: EniId,
        /// Addresses.
        ips: Vec<Ipv4Addr>,
    },
    /// `UnassignPrivateIpAddresses` (prefixes).
    UnassignPrefixes {
        /// ENI.
        eni: EniId,
        /// Prefixes.
        prefixes: Vec<Ipv4Net>,
    },
    /// `DetachNetworkInterface`.
    Detach {
        /// ENI.
        eni: EniId,
    },
    /// `DeleteNetworkInterface`.
    Delete {
        /// ENI.
        eni: EniId,
    },
    /// `DescribeNetworkInterfaces` for an instance.
    Describe {
        /// Instance.
        instance: InstanceId,
    },
    /// `DescribeNetworkInterfaces` of the unattached ENIs agents created (by tag).
    DescribeUnattached {
        /// Cluster.
        #[serde(default)]
        cluster: Option<String>,
    },
    /// `ModifyNetworkInterfaceAttribute` (`DeleteOnTermination=true`).
    SetDeleteOnTermination {
        /// ENI.
        eni: EniId,
    },
    /// `DescribeSubnets` of an AZ.
    DescribeSubnets {
        /// AZ.
        az: String,
    },
    /// The instance metadata service's (lagging) view of an instance's ENIs.
    Metadata {
        /// Instance.
        instance: InstanceId,
    },
}

/// A successful reply.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Ec2Reply {
    /// Nothing to report.
    Done,
    /// An instance and its primary ENI.
    Instance {
        /// Id.
        instance: InstanceId,
        /// Primary ENI.
        primary: EniDescription,
    },
    /// Subnets: (id, az, cidr).
    Subnets {
        /// The subnets.
        subnets: Vec<(SubnetId, String, Ipv4Net)>,
    },
    /// CIDR blocks.
    Cidrs {
        /// Them.
        cidrs: Vec<Ipv4Net>,
    },
    /// One ENI.
    Eni {
        /// It.
        eni: EniDescription,
    },
    /// ENIs.
    Enis {
        /// Them.
        enis: Vec<EniDescription>,
    },
    /// Addresses.
    Ips {
        /// Them.
        ips: Vec<Ipv4Addr>,
    },
    /// Prefixes.
    Prefixes {
        /// Them.
        prefixes: Vec<Ipv4Net>,
    },
    /// An IPv6 prefix.
    Ipv6Prefix {
        /// It.
        prefix: Ipv6Net,
    },
    /// Subnets as EC2 describes them.
    SubnetDescriptions {
        /// Them.
        subnets: Vec<crate::SubnetDescription>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct Wire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ok: Option<Ec2Reply>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    err: Option<CallError>,
}

fn handle(vpc: &mut SimVpc, req: Ec2Request) -> Result<Ec2Reply, CallError> {
    Ok(match req {
        Ec2Request::RunInstance { instance_type, subnet } => {
            let t = Catalog::embedded()
                .get(&instance_type)
                .map_err(|e| ec2_error("InvalidParameterValue", e.to_string()))?;
            let (instance, primary) = vpc.run_instance(t, &subnet)?;
            Ec2Reply::Instance { instance, primary }
        }
        Ec2Request::Subnets => {
            Ec2Reply::Subnets { subnets: vpc.subnets().iter().map(|s| (s.id.clone(), s.az.clone(), s.cidr)).collect() }
        }
        Ec2Request::VpcCidrs => Ec2Reply::Cidrs { cidrs: vpc.vpc_cidrs().to_vec() },
        Ec2Request::Create { subnet, secondary_ips, prefixes, description, tags } => Ec2Reply::Eni {
            eni: vpc.create_network_interface(&CreateEni {
                subnet,
                security_groups: vec![],
                secondary_ips,
                prefixes,
                description,
                tags,
            })?,
        },
        Ec2Request::Attach { eni, instance, device_index } => {
            vpc.attach_network_interface(&eni, &instance, device_index)?;
            Ec2Reply::Done
        }
        Ec2Request::AssignIps { eni, count } => Ec2Reply::Ips { ips: vpc.assign_private_ip_addresses(&eni, count)? },
        Ec2Request::AssignPrefixes { eni, count } => {
            Ec2Reply::Prefixes { prefixes: vpc.assign_ipv4_prefixes(&eni, count)? }
        }
        Ec2Request::AssignIpv6Prefix { eni } => Ec2Reply::Ipv6Prefix { prefix: vpc.assign_ipv6_prefix(&eni)? },
        Ec2Request::UnassignIps { eni, ips } => {
            vpc.unassign_private_ip_addresses(&eni, &ips)?;
            Ec2Reply::Done
        }
        Ec2Request::UnassignPrefixes { eni, prefixes } => {
            vpc.unassign_ipv4_prefixes(&eni, &prefixes)?;
            Ec2Reply::Done
        }
        Ec2Request::Detach { eni } => {
            vpc.detach_network_interface(&eni)?;
            Ec2Reply::Done
        }
        Ec2Request::Delete { eni } => {
            vpc.delete_network_interface(&eni)?;
            Ec2Reply::Done
        }
        Ec2Request::Describe { instance } => Ec2Reply::Enis { enis: vpc.describe_network_interfaces(&instance)? },
        Ec2Request::DescribeUnattached { cluster } => {
            Ec2Reply::Enis { enis: vpc.describe_unattached(cluster.as_deref())? }
        }
        Ec2Request::SetDeleteOnTermination { eni } => {
            vpc.set_delete_on_termination(&eni)?;
            Ec2Reply::Done
        }
        Ec2Request::Metadata { instance } => Ec2Reply::Enis { enis: vpc.metadata_enis(&instance) },
        Ec2Request::DescribeSubnets { az } => Ec2Reply::SubnetDescriptions { subnets: vpc.describe_subnets(&az)? },
    })
}

/// Serves `vpc` on `listener` until the process ends; `now` reads the clock, `latency_scale`
/// (read at every call, so a test can slow the cloud down or hang it) scales each call's
/// simulated latency (0 answers at once).
pub fn serve(
    listener: UnixListener,
    vpc: SimVpc,
    now: fn() -> Time,
    latency_scale: impl Fn() -> f64 + Send + Sync + 'static,
) {
    serve_with(listener, vpc, now, latency_scale, |_| None);
}

/// [`serve`], answering a request with `refuse`'s error instead when it returns one (a test's
/// cloud that, say, refuses every mutation as an account without the IAM permissions would).
pub fn serve_with(
    listener: UnixListener,
    vpc: SimVpc,
    now: fn() -> Time,
    latency_scale: impl Fn() -> f64 + Send + Sync + 'static,
    refuse: impl Fn(&Ec2Request) -> Option<CallError> + Send + Sync + 'static,
) {
    let vpc = Arc::new(Mutex::new(vpc));
    let latency_scale = Arc::new(latency_scale);
    let refuse = Arc::new(refuse);
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let vpc = Arc::clone(&vpc);
        let latency_scale = Arc::clone(&latency_scale);
        let refuse = Arc::clone(&refuse);
        std::thread::spawn(move || {
            let Ok(read) = conn.try_clone() else { return };
            let mut write = conn;
            for line in BufReader::new(read).lines() {
                let Ok(line) = line else { return };
                let (wire, latency) = match serde_json::from_str::<Ec2Request>(&line) {
                    Err(e) => {
                        (Wire { ok: None, err: Some(ec2_error("InvalidRequest", e.to_string())) }, Duration::ZERO)
                    }
                    Ok(req) if let Some(e) = refuse(&req) => (Wire { ok: None, err: Some(e) }, Duration::ZERO),
                    Ok(req) => {
                        // A poisoned lock means a handler panicked; the simulation is then void.
                        let mut v = vpc.lock().expect("sim VPC lock");
                        v.set_now(now());
                        let r = handle(&mut v, req);
                        let latency = v.take_elapsed();
                        drop(v);
                        match r {
                            Ok(ok) => (Wire { ok: Some(ok), err: None }, latency),
                            Err(e) => (Wire { ok: None, err: Some(e) }, latency),
                        }
                    }
                };
                std::thread::sleep(latency.mul_f64(latency_scale().clamp(0.0, 1e6)));
                let Ok(mut text) = serde_json::to_string(&wire) else { return };
                text.push('\n');
                if write.write_all(text.as_bytes()).is_err() {
                    return;
                }
            }
        });
    }
}

/// The longest reply line taken from the service.
const MAX_REPLY: usize = 64 << 20;

/// How long a call to the service may take before it counts as failed (`RequestTimeout`, an
/// unknown outcome); the service's own latencies are scaled well below this.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// An [`Ec2`] client of the simulated-VPC service. It connects on first use, gives every call
/// [`CALL_TIMEOUT`], and after any connection failure connects again on the next call, so a
/// restarted service is picked up without restarting the daemon.
#[derive(Debug)]
pub struct RemoteEc2 {
    path: std::path::PathBuf,
    timeout: Duration,
    conn: Option<(BufReader<UnixStream>, UnixStream)>,
}

impl RemoteEc2 {
    /// Connects to the service at `path`.
    ///
    /// # Errors
    /// The socket cannot be reached.
    pub fn connect(path: &Path) -> std::io::Result<RemoteEc2> {
        let mut c = RemoteEc2 { path: path.to_path_buf(), timeout: CALL_TIMEOUT, conn: None };
        c.reconnect()?;
        Ok(c)
    }

    /// Sets the per-call timeout.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
        if let Some((_, s)) = &self.conn
            && (s.set_read_timeout(Some(timeout)).is_err() || s.set_write_timeout(Some(timeout)).is_err())
        {
            self.conn = None;
        }
    }

    fn reconnect(&mut self) -> std::io::Result<()> {
        let s = UnixStream::connect(&self.path)?;
        s.set_read_timeout(Some(self.timeout))?;
        s.set_write_timeout(Some(self.timeout))?;
        self.conn = Some((BufReader::new(s.try_clone()?), s));
        Ok(())
    }

    /// Makes one request.
    ///
    /// # Errors
    /// The call's EC2 error; `Unavailable` when the service cannot be reached, `RequestTimeout`
    /// when it does not answer in time (the call may still have taken effect).
    pub fn call(&mut self, req: &Ec2Request) -> Result<Ec2Reply, CallError> {
        let mut line = serde_json::to_string(req).map_err(|e| ec2_error("InvalidRequest", e.to_string()))?;
        line.push('\n');
        if self.conn.is_none() {
            self.reconnect().map_err(|e| ec2_error("Unavailable", format!("simulated VPC service: {e}")))?;
        }
        let r = self.exchange(&line);
        if r.is_err() {
            // The stream may hold half a reply: never reuse it.
            self.conn = None;
        }
        let reply = r?;
        let wire: Wire = serde_json::from_str(&reply).map_err(|e| ec2_error("InternalError", e.to_string()))?;
        match (wire.ok, wire.err) {
            (Some(ok), _) => Ok(ok),
            (None, Some(e)) => Err(e),
            (None, None) => Err(ec2_error("InternalError", "empty reply")),
        }
    }

    /// Sends one request line and reads one reply line, all within the call's timeout (a
    /// reply that trickles in is cut off too).
    #[allow(clippy::disallowed_methods)] // A network timeout is measured in real time.
    fn exchange(&mut self, line: &str) -> Result<String, CallError> {
        let timeout = self.timeout;
        let deadline = std::time::Instant::now() + timeout;
        let late = || ec2_error("RequestTimeout", format!("simulated VPC service: no answer in {timeout:?}"));
        let lost = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => late(),
            _ => ec2_error("Unavailable", format!("simulated VPC service: {e}")),
        };
        let (reader, writer) = self.conn.as_mut().ok_or_else(|| ec2_error("Unavailable", "not connected"))?;
        writer.write_all(line.as_bytes()).map_err(lost)?;
        let mut reply = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(late());
            }
            reader.get_ref().set_read_timeout(Some(left)).map_err(lost)?;
            let buf = reader.fill_buf().map_err(lost)?;
            if buf.is_empty() {
                return Err(ec2_error("Unavailable", "simulated VPC service closed the connection"));
            }
            let (take, done) = match buf.iter().position(|b| *b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            reply.extend_from_slice(&buf[..take]);
            reader.consume(take);
            if done {
                return String::from_utf8(reply).map_err(|e| ec2_error("InternalError", e.to_string()));
            }
            if reply.len() > MAX_REPLY {
                return Err(ec2_error("InternalError", format!("a reply longer than {MAX_REPLY} bytes")));
            }
        }
    }

    /// The instance metadata service's view of `instance`'s ENIs (it lags EC2).
    ///
    /// # Errors
    /// As [`RemoteEc2::call`].
    pub fn metadata_enis(&mut self, instance: &InstanceId) -> Result<Vec<EniDescription>, CallError> {
        match self.call(&Ec2Request::Metadata { instance: instance.clone() })? {
            Ec2Reply::Enis { enis } => Ok(enis),
            r => Err(unexpected(r)),
        }
    }
}

fn unexpected(r: Ec2Reply) -> CallError {
    ec2_error("InternalError", format!("unexpected reply {r:?}"))
}

impl Ec2 for RemoteEc2 {
    fn create_network_interface(&mut self, req: &CreateEni) -> Result<EniDescription, CallError> {
        match self.call(&Ec2Request::Create {
            subnet: req.subnet.clone(),
            secondary_ips: req.secondary_ips,
            prefixes: req.prefixes,
            description: req.description.clone(),
            tags: req.tags.clone(),
        })? {
            Ec2Reply::Eni { eni } => Ok(eni),
            r => Err(unexpected(r)),
        }
    }

    fn attach_network_interface(
        &mut self,
        eni: &EniId,
        instance: &InstanceId,
        device_index: u32,
    ) -> Result<(), CallError> {
        self.call(&Ec2Request::Attach { eni: eni.clone(), instance: instance.clone(), device_index }).map(|_| ())
    }

    fn assign_private_ip_addresses(&mut self, eni: &EniId, count: u32) -> Result<Vec<Ipv4Addr>, CallError> {
        match self.call(&Ec2Request::AssignIps { eni: eni.clone(), count })? {
            Ec2Reply::Ips { ips } => Ok(ips),
            r => Err(unexpected(r)),
        }
    }

    fn assign_ipv4_prefixes(&mut self, eni: &EniId, count: u32) -> Result<Vec<Ipv4Net>, CallError> {
        match self.call(&Ec2Request::AssignPrefixes { eni: eni.clone(), count })? {
            Ec2Reply::Prefixes { prefixes } => Ok(prefixes),
            r => Err(unexpected(r)),
        }
    }

    fn assign_ipv6_prefix(&mut self, eni: &EniId) -> Result<Ipv6Net, CallError> {
        match self.call(&Ec2Request::AssignIpv6Prefix { eni: eni.clone() })? {
            Ec2Reply::Ipv6Prefix { prefix } => Ok(prefix),
            r => Err(unexpected(r)),
        }
    }

    fn unassign_private_ip_addresses(&mut self, eni: &EniId, ips: &[Ipv4Addr]) -> Result<(), CallError> {
        self.call(&Ec2Request::UnassignIps { eni: eni.clone(), ips: ips.to_vec() }).map(|_| ())
    }

    fn unassign_ipv4_prefixes(&mut self, eni: &EniId, prefixes: &[Ipv4Net]) -> Result<(), CallError> {
        self.call(&Ec2Request::UnassignPrefixes { eni: eni.clone(), prefixes: prefixes.to_vec() }).map(|_| ())
    }

    fn detach_network_interface(&mut self, eni: &EniId) -> Result<(), CallError> {
        self.call(&Ec2Request::Detach { eni: eni.clone() }).map(|_| ())
    }

    fn delete_network_interface(&mut self, eni: &EniId) -> Result<(), CallError> {
        self.call(&Ec2Request::Delete { eni: eni.clone() }).map(|_| ())
    }

    fn describe_network_interfaces(&mut self, instance: &InstanceId) -> Result<Vec<EniDescription>, CallError> {
        match self.call(&Ec2Request::Describe { instance: instance.clone() })? {
            Ec2Reply::Enis { enis } => Ok(enis),
            r => Err(unexpected(r)),
        }
    }

    fn describe_subnets(&mut self, az: &str) -> Result<Vec<crate::SubnetDescription>, CallError> {
        match self.call(&Ec2Request::DescribeSubnets { az: az.into() })? {
            Ec2Reply::SubnetDescriptions { subnets } => Ok(subnets),
            r => Err(unexpected(r)),
        }
    }

    fn set_delete_on_termination(&mut self, eni: &EniId) -> Result<(), CallError> {
        self.call(&Ec2Request::SetDeleteOnTermination { eni: eni.clone() }).map(|_| ())
    }

    fn describe_unattached(&mut self, cluster: Option<&str>) -> Result<Vec<EniDescription>, CallError> {
        match self.call(&Ec2Request::DescribeUnattached { cluster: cluster.map(String::from) })? {
            Ec2Reply::Enis { enis } => Ok(enis),
            r => Err(unexpected(r)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimParams;

    #[test]
    fn the_service_answers_like_the_simulator() {
        let dir = std::env::temp_dir().join(format!("podip-remote-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("vpc.sock");
        let _ = std::fs::remove_file(&sock);
        let mut vpc = SimVpc::new(SimParams::default());
        vpc.add_vpc_cidr("10.0.0.0/16".parse().unwrap()).unwrap();
        let subnet = vpc.add_subnet("az1", "10.0.0.0/28".parse().unwrap()).unwrap();
        let listener = UnixListener::bind(&sock).unwrap();
        std::thread::spawn(move || serve(listener, vpc, || Time::from_secs(1), || 0.0));
        let mut c = RemoteEc2::connect(&sock).unwrap();
        let Ec2Reply::Instance { instance, primary } =
            c.call(&Ec2Request::RunInstance { instance_type: "m5.large".into(), subnet: subnet.clone() }).unwrap()
        else {
            panic!()
        };
        assert_eq!(c.assign_private_ip_addresses(&primary.id, 9).unwrap().len(), 9);
        let e = c.assign_private_ip_addresses(&primary.id, 1).unwrap_err();
        assert_eq!(e.code, "PrivateIpAddressLimitExceeded");
        let enis = c.describe_network_interfaces(&instance).unwrap();
        assert_eq!(enis[0].secondary_ips.len(), 9);
        let e = c.call(&Ec2Request::RunInstance { instance_type: "m9.huge".into(), subnet }).unwrap_err();
        assert!(e.message.contains("m9.huge"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_hung_service_times_out_and_a_restarted_one_is_used_again() {
        let dir = std::env::temp_dir().join(format!("podip-remote-r-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("vpc.sock");
        let _ = std::fs::remove_file(&sock);
        // A service that takes requests and never answers.
        let hung = UnixListener::bind(&sock).unwrap();
        let held = std::thread::spawn(move || hung.accept().map(|(s, _)| s));
        let mut c = RemoteEc2::connect(&sock).unwrap();
        c.set_timeout(Duration::from_millis(300));
        #[allow(clippy::disallowed_methods)] // Measures the timeout in real time.
        let t0 = std::time::Instant::now();
        let e = c.call(&Ec2Request::VpcCidrs).unwrap_err();
        assert_eq!((e.code.as_str(), e.kind), ("RequestTimeout", crate::ErrorKind::Transient), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(5));
        drop(held.join());
        // A service that answers one byte at a time, forever: cut off at the timeout too.
        std::fs::remove_file(&sock).unwrap();
        let trickle = UnixListener::bind(&sock).unwrap();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = trickle.accept() {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut l = String::new();
                let _ = r.read_line(&mut l);
                while s.write_all(b" ").is_ok() {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        });
        #[allow(clippy::disallowed_methods)] // Measures the timeout in real time.
        let t0 = std::time::Instant::now();
        let e = c.call(&Ec2Request::VpcCidrs).unwrap_err();
        assert_eq!(e.code, "RequestTimeout", "{e}");
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        // The service is restarted at the same path: the next call reaches it.
        std::fs::remove_file(&sock).unwrap();
        let e = c.call(&Ec2Request::VpcCidrs).unwrap_err();
        assert_eq!(e.code, "Unavailable", "{e}");
        let mut vpc = SimVpc::new(SimParams::default());
        vpc.add_vpc_cidr("10.9.0.0/16".parse().unwrap()).unwrap();
        let listener = UnixListener::bind(&sock).unwrap();
        std::thread::spawn(move || serve(listener, vpc, || Time::from_secs(1), || 0.0));
        let Ec2Reply::Cidrs { cidrs } = c.call(&Ec2Request::VpcCidrs).unwrap() else { panic!() };
        assert_eq!(cidrs, vec!["10.9.0.0/16".parse::<Ipv4Net>().unwrap()]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
