//! Simulated-VPC allocations per second: secondary addresses and /28 prefixes in a half-used
//! subnet, with EC2's random placement against lowest-first placement (both in this run).
#![allow(missing_docs)]

use cloud::Ec2;
use cloud::sim::params::Placement;
use cloud::sim::{SimParams, SimVpc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ipam::catalog::Catalog;
use std::collections::BTreeMap;
use std::hint::black_box;

fn setup(placement: Placement, subnet: &str, used: u32) -> (SimVpc, ipam::addr::EniId) {
    let mut v = SimVpc::new(SimParams { placement, buckets: BTreeMap::new(), ..SimParams::default() });
    v.add_vpc_cidr("10.0.0.0/16".parse().unwrap()).unwrap();
    let s = v.add_subnet("az1", subnet.parse().unwrap()).unwrap();
    v.occupy_random(&s, used).unwrap();
    let t = Catalog::embedded().get("c5.18xlarge").unwrap();
    let (_, eni) = v.run_instance(t, &s).unwrap();
    (v, eni.id)
}

fn allocations(c: &mut Criterion) {
    let mut g = c.benchmark_group("sim_assign_unassign_ip/16k-subnet-half-used");
    g.throughput(Throughput::Elements(1));
    for (label, p) in [("random", Placement::Random), ("lowest", Placement::Lowest)] {
        let (mut v, eni) = setup(p, "10.0.0.0/18", 8192);
        g.bench_function(label, |b| {
            b.iter(|| {
                let ips = v.assign_private_ip_addresses(&eni, 1).unwrap();
                v.unassign_private_ip_addresses(&eni, &ips).unwrap();
                black_box(ips);
            })
        });
    }
    g.finish();
    let mut g = c.benchmark_group("sim_assign_unassign_prefix/4k-subnet-200-used");
    g.throughput(Throughput::Elements(1));
    for (label, p) in [("random", Placement::Random), ("lowest", Placement::Lowest)] {
        let (mut v, eni) = setup(p, "10.0.0.0/20", 200);
        g.bench_function(label, |b| {
            b.iter(|| {
                let ps = v.assign_ipv4_prefixes(&eni, 1).unwrap();
                v.unassign_ipv4_prefixes(&eni, &ps).unwrap();
                black_box(ps);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, allocations);
criterion_main!(benches);
