//! Engine decisions per second on one node: pod add/del pairs and pool-check ticks, with podip's
//! dense packing against the VPC CNI's random ENI order (both in this run).
#![allow(missing_docs)]

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ipam::Time;
use ipam::addr::PodKey;
use ipam::catalog::Catalog;
use ipam::config::{NodeConfig, NodeSettings};
use ipam::datastore::{EniInfo, Packing};
use ipam::engine::{Engine, Event};
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Duration;

/// A node of `itype` with every ENI full of addresses (or prefixes) and `resident` pods.
fn node(itype: &str, pd: bool, packing: Packing, resident: u32) -> Engine {
    let t = Catalog::embedded().get(itype).unwrap();
    let settings = NodeSettings { prefix_delegation: pd, packing: Some(packing), ..NodeSettings::default() };
    let cfg = NodeConfig::resolve(t, "subnet-1".into(), &settings).unwrap();
    let per = t.ipv4_per_eni - 1;
    let mut enis = Vec::new();
    for d in 0..t.max_enis {
        let base = u32::from(Ipv4Addr::new(10, (d + 1) as u8, 0, 0));
        enis.push(EniInfo {
            id: format!("eni-{d}").as_str().into(),
            device_index: d,
            subnet: "subnet-1".into(),
            primary_ip: Ipv4Addr::from(base + 4),
            secondary_ips: if pd { vec![] } else { (0..per).map(|i| Ipv4Addr::from(base + 16 + i)).collect() },
            prefixes: if pd {
                (0..per).map(|i| ipnet::Ipv4Net::new(Ipv4Addr::from(base + 256 + 16 * i), 28).unwrap()).collect()
            } else {
                vec![]
            },
            v6_prefix: None,
        });
    }
    let mut e = Engine::new(cfg, &enis, 1, Time::ZERO).unwrap();
    for i in 0..resident {
        e.handle(Time::ZERO, Event::PodAdd(PodKey::new(format!("resident-{i}"))));
    }
    e
}

fn churn(c: &mut Criterion, name: &str, itype: &str, pd: bool, resident: u32) {
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(2));
    for (label, packing) in [("podip-dense", Packing::Dense), ("vpc-cni-random", Packing::Random)] {
        let mut e = node(itype, pd, packing, resident);
        let keys: Vec<PodKey> = (0..64).map(|i| PodKey::new(format!("churn-{i}"))).collect();
        let mut now = Time::from_secs(1);
        let mut i = 0usize;
        let mut out = Vec::with_capacity(4);
        g.bench_function(label, |b| {
            b.iter(|| {
                let k = &keys[i % keys.len()];
                i += 1;
                now = now + Duration::from_secs(1);
                out.clear();
                e.handle_into(now, Event::PodAdd(k.clone()), &mut out);
                e.handle_into(now, Event::PodDel(k.clone()), &mut out);
                black_box(&out);
            })
        });
    }
    g.finish();
}

fn decisions(c: &mut Criterion) {
    churn(c, "add_del/m5.large-secondary-ip-20-pods", "m5.large", false, 20);
    churn(c, "add_del/c5.18xlarge-secondary-ip-200-pods", "c5.18xlarge", false, 200);
    churn(c, "add_del/m5.xlarge-prefix-100-pods", "m5.xlarge", true, 100);
    let mut g = c.benchmark_group("tick");
    g.throughput(Throughput::Elements(1));
    g.bench_function("m5.xlarge-prefix-100-pods", |b| {
        b.iter_batched_ref(
            || node("m5.xlarge", true, Packing::Dense, 100),
            |e| black_box(e.handle(Time::from_secs(1000), Event::Tick)),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, decisions);
criterion_main!(benches);
