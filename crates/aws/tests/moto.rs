//! The SDK backend against moto's EC2 server (PyPI `moto[server]`, started here on loopback), a
//! judge of the wire format independent of podip's simulator, for every action moto implements.
//! moto does not model prefixes, instance limits or attachment states: those are judged by the
//! simulator alone (`tests/sim.rs`). Skipped without moto unless REQUIRE_PRIVILEGED=1 (CI).
//!
//! Where moto and the simulator answer differently (both checked here):
//! - moto ignores `Attachment.DeleteOnTermination` on ModifyNetworkInterfaceAttribute: the call
//!   succeeds and the flag stays as it was; the simulator sets it, as EC2 does.
//! - moto's AssignPrivateIpAddresses lists every address of the interface, not only the new
//!   ones as the simulator does: the backend cannot tell which are new and reports the call as
//!   done with an unknown result, which the engine settles with a reconcile.

mod common;

use cloud::{CreateEni, Ec2, ErrorKind, TAG_CLUSTER, TAG_INSTANCE_ID};
use ipam::addr::{InstanceId, SubnetId};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn moto_server() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    let candidates =
        [std::env::var_os("MOTO_SERVER").map(PathBuf::from), Some(home.join(".cache/podip/motovenv/bin/moto_server"))];
    let found = candidates.into_iter().flatten().find(|p| p.exists());
    let required = std::env::var("REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1");
    assert!(found.is_some() || !required, "REQUIRE_PRIVILEGED=1 but no moto_server (scripts/test installs it)");
    if found.is_none() {
        eprintln!("skipping: no moto_server (pip install 'moto[server]' into ~/.cache/podip/motovenv)");
    }
    found
}

/// A moto server on a free loopback port, stopped (by its PID) when dropped.
struct Moto {
    child: Child,
    url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[allow(clippy::disallowed_methods)] // Waits for a real process to listen.
fn start() -> Option<Moto> {
    let bin = moto_server()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t0.elapsed() < Duration::from_secs(30), "moto_server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(Moto { child, url: format!("http://127.0.0.1:{port}") })
}

/// A VPC, a subnet in us-east-1a and a running instance in it, made through the SDK.
fn world(ec2: &aws::AwsEc2) -> (String, SubnetId, InstanceId) {
    let c = ec2.client().clone();
    ec2.block_on(async move {
        let vpc = c.create_vpc().cidr_block("10.1.0.0/16").send().await.unwrap();
        let vpc = vpc.vpc().unwrap().vpc_id().unwrap().to_string();
        let s = c
            .create_subnet()
            .vpc_id(&vpc)
            .cidr_block("10.1.0.0/24")
            .availability_zone("us-east-1a")
            .send()
            .await
            .unwrap();
        let subnet = s.subnet().unwrap().subnet_id().unwrap().to_string();
        let images = c.describe_images().send().await.unwrap();
        let ami = images.images()[0].image_id().unwrap().to_string();
        let r = c
            .run_instances()
            .image_id(ami)
            .instance_type(aws_sdk_ec2::types::InstanceType::M5Large)
            .subnet_id(&subnet)
            .min_count(1)
            .max_count(1)
            .send()
            .await
            .unwrap();
        let instance = r.instances()[0].instance_id().unwrap().to_string();
        (vpc, SubnetId(subnet), InstanceId(instance))
    })
}

#[test]
fn every_action_moto_implements_reads_and_writes_ec2s_wire_format() {
    let Some(moto) = start() else { return };
    let ec2 = common::client(&moto.url, None, Duration::from_secs(20));
    let (vpc, subnet, instance) = world(&ec2);
    let mut ec2 = common::client(&moto.url, Some(&vpc), Duration::from_secs(20));

    let req = CreateEni {
        subnet: subnet.clone(),
        security_groups: vec![],
        secondary_ips: 2,
        prefixes: 0,
        description: "podip-test".into(),
        tags: vec![(TAG_INSTANCE_ID.into(), instance.0.clone()), (TAG_CLUSTER.into(), "blue".into())],
    };
    let e = ec2.create_network_interface(&req).unwrap();
    assert_eq!(e.subnet, subnet);
    assert_eq!(e.secondary_ips.len(), 2, "{e:?}");
    assert!(e.primary_ip.to_string().starts_with("10.1.0."), "{e:?}");
    assert_eq!(e.description, "podip-test");
    assert_eq!(e.tags.get(TAG_CLUSTER).map(String::as_str), Some("blue"));
    assert_eq!(e.attachment, None);

    // The leak sweep's query: unattached, tagged by an agent, of this cluster, in this VPC.
    let unattached = ec2.describe_unattached(Some("blue")).unwrap();
    assert_eq!(unattached.iter().map(|d| &d.id).collect::<Vec<_>>(), [&e.id]);
    assert!(ec2.describe_unattached(Some("green")).unwrap().is_empty());

    ec2.attach_network_interface(&e.id, &instance, 1).unwrap();
    ec2.set_delete_on_termination(&e.id).unwrap();
    let err = ec2.assign_private_ip_addresses(&e.id, 3).unwrap_err();
    assert!(err.outcome_unknown(), "moto lists every address: which are new is unknown: {err}");
    let mine = ec2.describe_network_interfaces(&instance).unwrap();
    let got = mine.iter().find(|d| d.id == e.id).expect("the attached ENI is the instance's");
    assert_eq!(got.attachment, Some((instance.clone(), 1)));
    assert!(!got.delete_on_termination, "moto ignores DeleteOnTermination (if this fails, moto learned it)");
    assert_eq!(got.secondary_ips.len(), 5, "the assign took effect: {got:?}");
    let gone = got.secondary_ips[..2].to_vec();
    ec2.unassign_private_ip_addresses(&e.id, &gone).unwrap();
    let mine = ec2.describe_network_interfaces(&instance).unwrap();
    let got = mine.iter().find(|d| d.id == e.id).unwrap();
    assert_eq!(got.secondary_ips.len(), 3, "{got:?}");
    assert!(gone.iter().all(|ip| !got.secondary_ips.contains(ip)));
    assert!(mine.iter().any(|d| d.attachment == Some((instance.clone(), 0))), "the primary ENI is listed: {mine:?}");
    assert!(ec2.describe_unattached(Some("blue")).unwrap().is_empty(), "attached: no longer a leak");

    let subnets = ec2.describe_subnets("us-east-1a").unwrap();
    let ours = subnets.iter().find(|s| s.id == subnet).expect("the subnet is listed");
    assert_eq!(ours.cidr, "10.1.0.0/24".parse::<ipnet::Ipv4Net>().unwrap());
    assert!(ours.available > 0 && ours.available < 256, "{ours:?}");
    assert!(subnets.iter().all(|s| s.az == "us-east-1a"));

    // A fresh client (a restarted daemon) detaches by ENI id: it finds the attachment first.
    let mut fresh = common::client(&moto.url, Some(&vpc), Duration::from_secs(20));
    fresh.detach_network_interface(&e.id).unwrap();
    let after = fresh.describe_network_interfaces(&instance).unwrap();
    assert!(after.iter().all(|d| d.id != e.id), "{after:?}");
    fresh.delete_network_interface(&e.id).unwrap();

    // EC2's error codes, classified.
    let err = fresh.delete_network_interface(&e.id).unwrap_err();
    assert_eq!((err.code.as_str(), err.kind), ("InvalidNetworkInterfaceID.NotFound", ErrorKind::NotFound), "{err}");
    let err = fresh
        .create_network_interface(&CreateEni { subnet: SubnetId("subnet-00000000".into()), ..CreateEni::default() })
        .unwrap_err();
    assert_eq!((err.code.as_str(), err.kind), ("InvalidSubnetID.NotFound", ErrorKind::NotFound), "{err}");
    let err = fresh.detach_network_interface(&e.id).unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound, "{err}");
}
