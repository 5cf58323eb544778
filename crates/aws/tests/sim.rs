//! The SDK backend against the simulated VPC's EC2 endpoint and metadata service: every action
//! podip calls, EC2's error codes classified, lost replies, a hung and a vanished endpoint,
//! pagination, and the node's metadata (with its lag and its token).

mod common;

use cloud::sim::{SimParams, SimVpc};
use cloud::{CreateEni, Ec2, EniStatus, ErrorKind, TAG_CLUSTER, TAG_INSTANCE_ID};
use ipam::Time;
use ipam::addr::{InstanceId, SubnetId};
use ipam::catalog::Catalog;
use sim_endpoint::Endpoint;
use std::io::{Read, Write};
use std::time::Duration;

#[allow(clippy::disallowed_methods)] // The endpoint's clock: the test runs at wall time.
fn wall() -> Time {
    Time::from_millis(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64)
}

fn world(params: SimParams) -> (Endpoint, SubnetId, InstanceId) {
    let mut vpc = SimVpc::new(params);
    vpc.add_vpc_cidr("10.0.0.0/16".parse().unwrap()).unwrap();
    let subnet = vpc.add_subnet("us-east-1a", "10.0.0.0/20".parse().unwrap()).unwrap();
    vpc.set_now(wall());
    let (instance, _) = vpc.run_instance(Catalog::embedded().get("m5.large").unwrap(), &subnet).unwrap();
    (Endpoint::start(vpc, wall).unwrap(), subnet, instance)
}

/// What EC2 holds for `eni` now (attachments past their settling time settled).
fn now_eni(ep: &Endpoint, eni: &ipam::addr::EniId) -> Option<cloud::EniDescription> {
    let mut vpc = ep.vpc();
    vpc.set_now(wall());
    vpc.peek_eni(eni)
}

fn instant() -> SimParams {
    let mut p = SimParams { buckets: Default::default(), imds_lag: Duration::ZERO, ..SimParams::default() };
    p.attach_settle = cloud::sim::params::LatencyRange::ms(0, 0);
    p.detach_settle = cloud::sim::params::LatencyRange::ms(0, 0);
    p
}

#[test]
fn every_action_podip_calls_round_trips_through_the_sdk() {
    let (ep, subnet, instance) = world(instant());
    let mut ec2 = common::client(&ep.url(), Some(ep.vpc().vpc_id()), Duration::from_secs(10));
    let req = CreateEni {
        subnet: subnet.clone(),
        security_groups: vec!["sg-1".into(), "sg-2".into()],
        secondary_ips: 3,
        prefixes: 0,
        description: "podip-i-test".into(),
        tags: vec![(TAG_INSTANCE_ID.into(), instance.0.clone()), (TAG_CLUSTER.into(), "blue".into())],
    };
    let e = ec2.create_network_interface(&req).unwrap();
    assert_eq!((e.secondary_ips.len(), e.status, e.attachment.clone()), (3, EniStatus::Available, None));
    assert_eq!(e.security_groups, ["sg-1", "sg-2"]);
    assert_eq!(e.description, "podip-i-test");
    assert_eq!(e.tags.get(TAG_CLUSTER).map(String::as_str), Some("blue"));
    assert_eq!(Some(e.clone()), ep.vpc().peek_eni(&e.id), "the SDK reads back exactly what EC2 holds");

    // Unattached and tagged: the leak sweep's query finds it, for its cluster only.
    assert_eq!(ec2.describe_unattached(Some("blue")).unwrap().len(), 1);
    assert!(ec2.describe_unattached(Some("green")).unwrap().is_empty());

    ec2.attach_network_interface(&e.id, &instance, 1).unwrap();
    ec2.set_delete_on_termination(&e.id).unwrap();
    let ips = ec2.assign_private_ip_addresses(&e.id, 2).unwrap();
    assert_eq!(ips.len(), 2);
    ec2.unassign_private_ip_addresses(&e.id, &ips[..1]).unwrap();
    let mine = ec2.describe_network_interfaces(&instance).unwrap();
    assert_eq!(mine.len(), 2, "{mine:?}");
    let got = mine.iter().find(|d| d.id == e.id).unwrap();
    assert_eq!(got.attachment, Some((instance.clone(), 1)));
    assert!(got.delete_on_termination);
    assert_eq!(got.secondary_ips.len(), 4);
    assert!(got.secondary_ips.contains(&ips[1]) && !got.secondary_ips.contains(&ips[0]));
    assert_eq!(Some(got.clone()), ep.vpc().peek_eni(&e.id));

    // Prefixes on a second ENI, then back.
    let p = ec2
        .create_network_interface(&CreateEni { subnet: subnet.clone(), prefixes: 1, ..CreateEni::default() })
        .unwrap();
    assert_eq!(p.prefixes.len(), 1);
    assert_eq!(p.security_groups, [cloud::sim::DEFAULT_SECURITY_GROUP], "no groups given: the VPC's default");
    let more = ec2.assign_ipv4_prefixes(&p.id, 2).unwrap();
    assert_eq!(more.len(), 2);
    assert!(more.iter().all(|n| n.prefix_len() == 28));
    ec2.unassign_ipv4_prefixes(&p.id, &more).unwrap();
    assert_eq!(ep.vpc().peek_eni(&p.id).unwrap().prefixes, p.prefixes);

    let subnets = ec2.describe_subnets("us-east-1a").unwrap();
    assert_eq!(subnets.len(), 1);
    assert_eq!(subnets[0].id, subnet);
    assert_eq!(subnets[0].available, ep.vpc().subnet(&subnet).unwrap().free_ips());
    assert!(ec2.describe_subnets("us-east-1b").unwrap().is_empty());

    // Detach (the attachment id was kept from the attach), then delete.
    ec2.detach_network_interface(&e.id).unwrap();
    assert_eq!(now_eni(&ep, &e.id).unwrap().attachment, None);
    ec2.delete_network_interface(&e.id).unwrap();
    assert_eq!(ep.vpc().peek_eni(&e.id), None);
    let err = ec2.delete_network_interface(&e.id).unwrap_err();
    assert_eq!((err.code.as_str(), err.kind), ("InvalidNetworkInterfaceID.NotFound", ErrorKind::NotFound), "{err}");
}

#[test]
fn a_detach_by_a_fresh_client_finds_the_attachment_id_first() {
    let (ep, subnet, instance) = world(instant());
    let mut first = common::client(&ep.url(), None, Duration::from_secs(10));
    let e = first.create_network_interface(&CreateEni { subnet, ..CreateEni::default() }).unwrap();
    first.attach_network_interface(&e.id, &instance, 2).unwrap();
    // A restarted daemon knows only the ENI id.
    let mut second = common::client(&ep.url(), None, Duration::from_secs(10));
    second.set_delete_on_termination(&e.id).unwrap();
    assert!(ep.vpc().peek_eni(&e.id).unwrap().delete_on_termination);
    second.detach_network_interface(&e.id).unwrap();
    assert_eq!(now_eni(&ep, &e.id).unwrap().attachment, None);
    let err = second.detach_network_interface(&e.id).unwrap_err();
    assert_eq!(err.code, "InvalidAttachmentID.NotFound", "{err}");
}

#[test]
fn ec2_errors_arrive_with_their_codes_and_kinds() {
    let (ep, subnet, instance) = world(instant());
    let mut ec2 = common::client(&ep.url(), None, Duration::from_secs(10));
    // Instance limits: an m5.large takes 3 ENIs of 10 addresses each.
    let e = ec2.create_network_interface(&CreateEni { subnet: subnet.clone(), ..CreateEni::default() }).unwrap();
    ec2.attach_network_interface(&e.id, &instance, 1).unwrap();
    let err = ec2.assign_private_ip_addresses(&e.id, 10).unwrap_err();
    assert_eq!(err.code, "PrivateIpAddressLimitExceeded", "{err}");
    assert_eq!(err.kind, ErrorKind::Capacity(cloud::Capacity::AddressLimit));
    for d in 2..3 {
        let x = ec2.create_network_interface(&CreateEni { subnet: subnet.clone(), ..CreateEni::default() }).unwrap();
        ec2.attach_network_interface(&x.id, &instance, d).unwrap();
    }
    let x = ec2.create_network_interface(&CreateEni { subnet: subnet.clone(), ..CreateEni::default() }).unwrap();
    let err = ec2.attach_network_interface(&x.id, &instance, 3).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Capacity(cloud::Capacity::AttachmentLimit), "{err}");
    let err = ec2
        .create_network_interface(&CreateEni { subnet: SubnetId("subnet-nope".into()), ..CreateEni::default() })
        .unwrap_err();
    assert_eq!((err.code.as_str(), err.kind), ("InvalidSubnetID.NotFound", ErrorKind::NotFound));
    assert!(err.message.contains("subnet-nope"), "{err}");

    // Refused by the account (no IAM permission): permanent.
    ep.set_refusal(|action| {
        (action == "AssignPrivateIpAddresses")
            .then(|| cloud::ec2_error("UnauthorizedOperation", "You are not authorized"))
    });
    let err = ec2.assign_private_ip_addresses(&e.id, 1).unwrap_err();
    assert_eq!((err.code.as_str(), err.kind), ("UnauthorizedOperation", ErrorKind::Permanent));
    ep.set_refusal(|_| None);

    // Throttling: HTTP 503 with RequestLimitExceeded.
    let storm = cloud::sim::params::Window { start: Time::ZERO, end: Time::from_secs(u64::MAX / 2000) };
    ep.vpc().set_faults(cloud::sim::params::Faults { throttle_storms: vec![storm], ..Default::default() });
    let err = ec2.assign_private_ip_addresses(&e.id, 1).unwrap_err();
    assert_eq!((err.code.as_str(), err.kind), ("RequestLimitExceeded", ErrorKind::Throttled), "{err}");

    // A reply lost after the call took effect: the outcome is unknown, and it did happen.
    ep.vpc().set_faults(cloud::sim::params::Faults { lost_reply_rate: 1.0, ..Default::default() });
    let before = ep.vpc().peek_eni(&e.id).unwrap().secondary_ips.len();
    let err = ec2.assign_private_ip_addresses(&e.id, 1).unwrap_err();
    assert!(err.outcome_unknown(), "{err}");
    assert_eq!(ep.vpc().peek_eni(&e.id).unwrap().secondary_ips.len(), before + 1);
    ep.vpc().set_faults(cloud::sim::params::Faults::default());
    assert!(ec2.describe_network_interfaces(&instance).is_ok(), "the client reconnects after a dropped connection");
}

#[test]
#[allow(clippy::disallowed_methods)] // Measures how long the client waits.
fn a_hung_endpoint_times_out_and_a_vanished_one_is_unavailable_then_used_again() {
    let (ep, _, instance) = world(instant());
    let mut ec2 = common::client(&ep.url(), None, Duration::from_millis(800));
    assert!(ec2.describe_network_interfaces(&instance).is_ok());
    ep.set_latency_scale(1e6);
    let t0 = std::time::Instant::now();
    let err = ec2.describe_network_interfaces(&instance).unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert!(err.outcome_unknown() && err.code == "RequestTimeout", "{err}");
    ep.set_latency_scale(0.0);
    ep.stop();
    let err = ec2.describe_network_interfaces(&instance).unwrap_err();
    assert_eq!((err.code.as_str(), err.kind), ("Unavailable", ErrorKind::Transient), "{err}");
    ep.restart().unwrap();
    assert_eq!(ec2.describe_network_interfaces(&instance).unwrap().len(), 1);
}

#[test]
fn a_thousand_and_more_enis_come_back_across_pages() {
    let (ep, subnet, _) = world(instant());
    {
        let mut vpc = ep.vpc();
        for i in 0..1_030u32 {
            let tags = vec![(TAG_INSTANCE_ID.to_string(), format!("i-{i}"))];
            vpc.create_network_interface(&CreateEni { subnet: subnet.clone(), tags, ..CreateEni::default() }).unwrap();
        }
    }
    let mut ec2 = common::client(&ep.url(), Some(ep.vpc().vpc_id()), Duration::from_secs(30));
    let before = ep.vpc().action_stats().get(&cloud::Action::DescribeNetworkInterfaces).map_or(0, |s| s.calls);
    let all = ec2.describe_unattached(None).unwrap();
    assert_eq!(all.len(), 1_030);
    let calls = ep.vpc().action_stats()[&cloud::Action::DescribeNetworkInterfaces].calls - before;
    assert_eq!(calls, 2, "two pages of at most 1000");
}

/// A raw HTTP/1.1 exchange on loopback, to see what the metadata service does without the SDK.
fn raw(addr: std::net::SocketAddr, request: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn the_metadata_service_describes_the_node_and_lags_behind_ec2() {
    let mut params = instant();
    params.imds_lag = Duration::from_secs(3600);
    let (ep, subnet, instance) = world(params);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    aws::install_crypto_provider();
    let md = aws::metadata::Metadata::at(&ep.imds_url(&instance)).unwrap();
    let node = rt.block_on(md.node()).unwrap();
    let primary = ep.vpc().describe_enis_where(|e| e.attachment == Some((instance.clone(), 0))).unwrap().remove(0);
    assert_eq!(node.instance, instance);
    assert_eq!(
        (node.instance_type.as_str(), node.az.as_str(), node.region.as_str()),
        ("m5.large", "us-east-1a", "us-east-1")
    );
    assert_eq!(
        (node.primary_eni.clone(), node.mac.clone(), node.local_ipv4),
        (primary.id.clone(), primary.mac.clone(), primary.primary_ip)
    );
    assert_eq!(node.subnet, (subnet.clone(), "10.0.0.0/20".parse().unwrap()));
    assert_eq!(node.vpc_cidrs, ["10.0.0.0/16".parse::<ipnet::Ipv4Net>().unwrap()]);
    assert_eq!(node.vpc_id, ep.vpc().vpc_id());
    assert_eq!(node.security_groups, [cloud::sim::DEFAULT_SECURITY_GROUP]);
    assert_eq!(node.interfaces.len(), 1);

    // A second ENI appears with its device number; its new addresses do not, for a while.
    let mut ec2 = common::client(&ep.url(), None, Duration::from_secs(10));
    let e = ec2.create_network_interface(&CreateEni { subnet, ..CreateEni::default() }).unwrap();
    ec2.attach_network_interface(&e.id, &instance, 1).unwrap();
    let ips = ec2.assign_private_ip_addresses(&e.id, 2).unwrap();
    let node = rt.block_on(md.node()).unwrap();
    let second = node.interfaces.iter().find(|i| i.eni == e.id).unwrap();
    assert_eq!(second.device, 1);
    let listed = rt.block_on(md.get(&format!("network/interfaces/macs/{}/local-ipv4s", second.mac))).unwrap().unwrap();
    assert!(!listed.contains(&ips[0].to_string()), "metadata lags EC2: {listed}");
    assert_eq!(
        rt.block_on(md.get(&format!("network/interfaces/macs/{}/ipv4-prefix", second.mac))).unwrap(),
        None,
        "404 means none"
    );

    // IMDSv2 only: no token, no answer; a token PUT needs its TTL header and echoes it.
    let path = format!("/imds/{}/latest/meta-data/instance-id", instance.0);
    let r = raw(ep.addr(), &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
    assert!(r.starts_with("HTTP/1.1 401"), "{r}");
    let token_path = format!("/imds/{}/latest/api/token", instance.0);
    let r = raw(
        ep.addr(),
        &format!("PUT {token_path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    );
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    let r = raw(
        ep.addr(),
        &format!(
            "PUT {token_path} HTTP/1.1\r\nHost: x\r\nx-aws-ec2-metadata-token-ttl-seconds: 60\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    );
    assert!(
        r.starts_with("HTTP/1.1 200") && r.to_ascii_lowercase().contains("x-aws-ec2-metadata-token-ttl-seconds: 60"),
        "{r}"
    );
    let token = r.rsplit("\r\n\r\n").next().unwrap();
    let r = raw(
        ep.addr(),
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nx-aws-ec2-metadata-token: {token}\r\nConnection: close\r\n\r\n"),
    );
    assert!(r.ends_with(&instance.0), "{r}");
    // Another instance's token is refused.
    let other = ep
        .vpc()
        .run_instance(Catalog::embedded().get("m5.large").unwrap(), &SubnetId(node.subnet.0.0.clone()))
        .unwrap()
        .0;
    let r = raw(
        ep.addr(),
        &format!(
            "GET /imds/{}/latest/meta-data/instance-id HTTP/1.1\r\nHost: x\r\nx-aws-ec2-metadata-token: {token}\r\nConnection: close\r\n\r\n",
            other.0
        ),
    );
    assert!(r.starts_with("HTTP/1.1 401"), "{r}");
}

#[test]
fn the_instance_profile_credentials_come_from_the_metadata_service() {
    use aws_credential_types::provider::ProvideCredentials;
    let (ep, _, instance) = world(instant());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    aws::install_crypto_provider();
    let imds = aws_config::imds::Client::builder().endpoint(ep.imds_url(&instance)).unwrap().build();
    let provider = aws_config::imds::credentials::ImdsCredentialsProvider::builder().imds_client(imds).build();
    let creds = rt.block_on(provider.provide_credentials()).unwrap();
    assert_eq!(creds.access_key_id(), "ASIASIMULATEDNODE");
}

#[test]
fn the_iam_policy_grants_exactly_the_actions_the_backend_calls() {
    let (ep, subnet, instance) = world(instant());
    let before: Vec<cloud::Action> = ep.vpc().action_stats().keys().copied().collect();
    let mut ec2 = common::client(&ep.url(), Some(ep.vpc().vpc_id()), Duration::from_secs(10));
    // Every operation of the backend, once.
    let tags = vec![(TAG_INSTANCE_ID.to_string(), instance.0.clone())];
    let e = ec2.create_network_interface(&CreateEni { subnet: subnet.clone(), tags, ..CreateEni::default() }).unwrap();
    ec2.attach_network_interface(&e.id, &instance, 1).unwrap();
    ec2.set_delete_on_termination(&e.id).unwrap();
    let ips = ec2.assign_private_ip_addresses(&e.id, 1).unwrap();
    ec2.unassign_private_ip_addresses(&e.id, &ips).unwrap();
    let p = ec2.assign_ipv4_prefixes(&e.id, 1).unwrap();
    ec2.unassign_ipv4_prefixes(&e.id, &p).unwrap();
    let _ = ec2.assign_ipv6_prefix(&e.id); // The subnet has no IPv6 block: refused, but called.
    ec2.describe_network_interfaces(&instance).unwrap();
    ec2.describe_unattached(None).unwrap();
    ec2.describe_subnets("us-east-1a").unwrap();
    ec2.detach_network_interface(&e.id).unwrap();
    ec2.delete_network_interface(&now_eni(&ep, &e.id).unwrap().id).unwrap();
    let called: std::collections::BTreeSet<String> =
        ep.vpc().action_stats().keys().filter(|a| !before.contains(a)).map(|a| format!("ec2:{}", a.name())).collect();
    let policy: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/iam-policy.json")).unwrap(),
    )
    .unwrap();
    let granted: std::collections::BTreeSet<String> =
        policy["Statement"][0]["Action"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect();
    assert_eq!(called, granted, "the policy's first statement lists exactly the EC2 actions podipd calls");
    // Tags go on at creation (TagSpecifications), which EC2 authorizes as CreateTags.
    assert_eq!(policy["Statement"][1]["Action"], "ec2:CreateTags");
    assert_eq!(policy["Statement"][1]["Condition"]["StringEquals"]["ec2:CreateAction"], "CreateNetworkInterface");
}

#[test]
fn a_metadata_service_that_refuses_a_token_is_a_refusal_not_an_outage() {
    let (ep, _, _) = world(instant());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    aws::install_crypto_provider();
    // An instance the service does not know answers the token request with 404: waiting for it
    // would wait forever.
    let md = aws::metadata::Metadata::at(&ep.imds_url(&InstanceId("i-0000000000nothere".into()))).unwrap();
    match rt.block_on(md.node()) {
        Err(aws::metadata::MetadataError::Bad { .. }) => {}
        other => panic!("{other:?}"),
    }
    // A service that is not there at all is an outage (worth waiting for).
    let addr = ep.addr();
    drop(ep);
    let md = aws::metadata::Metadata::at(&format!("http://{addr}/imds/i-x")).unwrap();
    match rt.block_on(md.node()) {
        Err(aws::metadata::MetadataError::Unreachable { .. }) => {}
        other => panic!("{other:?}"),
    }
}
