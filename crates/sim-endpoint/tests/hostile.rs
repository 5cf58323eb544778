//! The simulated VPC's EC2 endpoint against hostile and careless requests: it answers each with
//! EC2's code and status, changes nothing it refuses, and never panics, hangs or serves an
//! unsigned request.

use cloud::sim::{SimParams, SimVpc};
use ipam::Time;
use ipam::catalog::Catalog;
use sim_endpoint::Endpoint;
use std::io::{Read, Write};

#[allow(clippy::disallowed_methods)] // The endpoint's clock: the test runs at wall time.
fn wall() -> Time {
    Time::from_millis(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64)
}

fn world() -> (Endpoint, String, String) {
    let mut vpc = SimVpc::new(SimParams { buckets: Default::default(), ..SimParams::default() });
    vpc.add_vpc_cidr("10.0.0.0/16".parse().unwrap()).unwrap();
    let subnet = vpc.add_subnet("us-east-1a", "10.0.0.0/20".parse().unwrap()).unwrap();
    vpc.set_now(wall());
    let (instance, _) = vpc.run_instance(Catalog::embedded().get("m5.large").unwrap(), &subnet).unwrap();
    (Endpoint::start(vpc, wall).unwrap(), subnet.0, instance.0)
}

/// POSTs `body`, signed (or not); the status and body.
fn post(ep: &Endpoint, body: &str, signed: bool) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(ep.addr()).unwrap();
    let auth = if signed {
        "Authorization: AWS4-HMAC-SHA256 Credential=test/20261127/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=0\r\n"
    } else {
        ""
    };
    let req = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, out)
}

fn code(out: &str) -> &str {
    out.split("<Code>").nth(1).and_then(|r| r.split("</Code>").next()).unwrap_or("")
}

#[test]
fn an_unsigned_request_is_refused() {
    let (ep, ..) = world();
    let (status, out) = post(&ep, "Action=DescribeNetworkInterfaces&Version=2016-11-15", false);
    assert_eq!((status, code(&out)), (401, "MissingAuthenticationToken"), "{out}");
}

#[test]
fn huge_counts_are_refused_not_overflowed() {
    let (ep, subnet, _) = world();
    for body in [
        format!("Action=CreateNetworkInterface&SubnetId={subnet}&SecondaryPrivateIpAddressCount=4294967295"),
        format!("Action=CreateNetworkInterface&SubnetId={subnet}&Ipv4PrefixCount=4097"),
        "Action=AssignPrivateIpAddresses&NetworkInterfaceId=eni-1&SecondaryPrivateIpAddressCount=4294967295".into(),
        "Action=RunInstances&InstanceType=m5.large&SubnetId=x&MinCount=1&MaxCount=99999999999".into(),
    ] {
        let (status, out) = post(&ep, &body, true);
        assert_eq!((status, code(&out)), (400, "InvalidParameterValue"), "{body}: {out}");
    }
    assert!(ep.vpc().check_invariants().is_empty());
}

#[test]
fn a_dry_run_changes_nothing() {
    let (ep, subnet, instance) = world();
    let before = ep.vpc().describe_enis_where(|_| true).unwrap().len();
    let (status, out) = post(&ep, &format!("Action=CreateNetworkInterface&SubnetId={subnet}&DryRun=true"), true);
    assert_eq!((status, code(&out)), (412, "DryRunOperation"), "{out}");
    let (status, out) = post(&ep, &format!("Action=TerminateInstances&InstanceId.1={instance}&DryRun=true"), true);
    assert_eq!((status, code(&out)), (412, "DryRunOperation"), "{out}");
    assert_eq!(ep.vpc().describe_enis_where(|_| true).unwrap().len(), before);
    assert!(ep.vpc().instance(&ipam::addr::InstanceId(instance)).is_some());
}

#[test]
fn a_refused_terminate_terminates_nothing() {
    let (ep, _, instance) = world();
    let (status, out) =
        post(&ep, &format!("Action=TerminateInstances&InstanceId.1={instance}&InstanceId.2=i-nope"), true);
    assert_eq!((status, code(&out)), (400, "InvalidInstanceID.NotFound"), "{out}");
    assert!(ep.vpc().instance(&ipam::addr::InstanceId(instance)).is_some(), "the other instance still runs");
}

#[test]
#[allow(clippy::disallowed_methods)] // Measures that the service answers at once.
fn long_text_and_odd_filters_are_refused_and_do_not_stall_the_service() {
    let (ep, subnet, _) = world();
    let long = "a".repeat(256);
    let (_, out) = post(&ep, &format!("Action=CreateNetworkInterface&SubnetId={subnet}&Description={long}"), true);
    assert_eq!(code(&out), "InvalidParameterValue", "{out}");
    let pattern = format!("*{}b", "a".repeat(30_000));
    let t0 = std::time::Instant::now();
    let (_, out) = post(
        &ep,
        &format!("Action=DescribeNetworkInterfaces&Filter.1.Name=description&Filter.1.Value.1={pattern}"),
        true,
    );
    assert_eq!(code(&out), "InvalidParameterValue", "{out}");
    assert!(t0.elapsed() < std::time::Duration::from_secs(2));
    // A filter without a name never widens the answer; a value without a filter name is refused.
    let (_, out) = post(&ep, "Action=DescribeNetworkInterfaces&Filter.1.Value.1=x", true);
    assert_eq!(code(&out), "InvalidParameterValue", "{out}");
    let (_, out) = post(&ep, "Action=DescribeNetworkInterfaces&MaxResults=5&NextToken=garbage", true);
    assert_eq!(code(&out), "InvalidParameterValue", "{out}");
    let (_, out) = post(&ep, &format!("Action=RunInstances&InstanceType=m5.large&SubnetId={subnet}"), true);
    assert_eq!(code(&out), "MissingParameter", "{out}");
}
