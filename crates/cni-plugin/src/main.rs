//! `podip-cni`, the CNI plugin the container runtime execs. Stdout carries exactly one JSON
//! document (the result or the error); diagnostics go to stderr.
//!
//! ADD asks podipd for the attachment's address (the same key gets the same address) and builds
//! the data path; if the data path fails, the address is released again. DEL releases the address
//! and removes the data path, idempotently, with or without the netns. CHECK compares the kernel
//! with the lease. GC and STATUS are forwarded to podipd. VERSION lists 0.4.0, 1.0.0 and 1.1.0.

mod daemon;

use agent::protocol::{Attach, ErrorKind, Lease, Op, Readiness, Reply};
use cni::config::NetConf;
use cni::env::{CniEnv, Command};
use cni::error::{CniError, ErrorCode};
use cni::result::{AddResult, Interface, IpConfig, Route};
use cni::version::version_info;
use datapath::PodNet;
use std::io::Read;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    let outcome = match std::io::stdin().read_to_end(&mut stdin) {
        Err(e) => Err(CniError::new(ErrorCode::Io, format!("reading the network configuration: {e}"))),
        Ok(_) => run(&stdin),
    };
    match outcome {
        Ok(Some(out)) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            println!("{}", e.to_json());
            ExitCode::from(1)
        }
    }
}

fn run(stdin: &[u8]) -> Result<Option<String>, CniError> {
    let env = CniEnv::from_lookup(|k| std::env::var(k).ok())?;
    if env.command == Command::Version {
        let asked = serde_json::from_slice::<serde_json::Value>(stdin).ok();
        let v = asked.as_ref().and_then(|v| v["cniVersion"].as_str());
        return Ok(Some(serde_json::to_string(&version_info(v)).unwrap_or_default()));
    }
    let conf = NetConf::parse(stdin)?;
    let ver = conf.version.as_str();
    let r = match env.command {
        Command::Add => add(&env, &conf).map(Some),
        Command::Del => del(&env, &conf).map(|()| None),
        Command::Check => check(&env, &conf).map(|()| None),
        Command::Gc => gc(&conf).map(|()| None),
        Command::Status => status(&conf).map(|()| None),
        Command::Version => unreachable!("answered above"),
    };
    r.map_err(|e| e.in_version(ver))
}

fn attach(env: &CniEnv, conf: &NetConf) -> Attach {
    let pod = env.pod();
    Attach {
        network: conf.name.clone(),
        container_id: env.container_id.clone().unwrap_or_default(),
        ifname: env.ifname.clone().unwrap_or_default(),
        netns: env.netns.clone(),
        pod_namespace: pod.map(|p| p.0.to_string()),
        pod_name: pod.map(|p| p.1.to_string()),
    }
}

/// The host veth name: the VPC CNI's `namespace.name` hash, or the container id without them.
fn veth_name(env: &CniEnv, lease_prefix: &str) -> String {
    let key = match env.pod() {
        Some((ns, name)) => format!("{ns}.{name}"),
        None => env.container_id.clone().unwrap_or_default(),
    };
    datapath::host_veth_name(lease_prefix, &key)
}

fn pod_net(env: &CniEnv, conf: &NetConf, lease: &Lease) -> PodNet {
    let host_veth = veth_name(env, &lease.veth_prefix);
    let egress = lease.egress_v4.map(|addr| {
        let host = datapath::egress_veth_name(&host_veth);
        datapath::Egress {
            addr,
            host_mac: datapath::host_mac(&host),
            pod_mac: datapath::host_mac(&format!("{host}/pod")),
            host_veth: host,
        }
    });
    PodNet {
        egress,
        netns: env.netns.clone().unwrap_or_default(),
        ifname: env.ifname.clone().unwrap_or_default(),
        host_mac: datapath::host_mac(&host_veth),
        pod_mac: datapath::host_mac(&format!("{host_veth}/pod")),
        host_veth,
        addr: lease.addr,
        mtu: conf.mtu.unwrap_or(lease.mtu),
        table: lease.route_table,
    }
}

fn daemon_error(kind: ErrorKind, message: String) -> CniError {
    match kind {
        ErrorKind::PoolExhausted => CniError::new(ErrorCode::TryAgainLater, message),
        ErrorKind::UnknownAttachment => CniError::new(ErrorCode::UnknownContainer, message),
        ErrorKind::BadRequest | ErrorKind::UnsupportedVersion => CniError::new(ErrorCode::Plugin(101), message),
        ErrorKind::Internal => CniError::new(ErrorCode::Plugin(102), message),
    }
}

fn add(env: &CniEnv, conf: &NetConf) -> Result<String, CniError> {
    let a = attach(env, conf);
    let lease = match daemon::call(&conf.socket, Op::Add(a.clone()))? {
        Ok(Reply::Lease(l)) => l,
        Ok(other) => return Err(CniError::new(ErrorCode::Plugin(101), format!("unexpected reply {other:?}"))),
        Err((kind, msg)) => return Err(daemon_error(kind, msg)),
    };
    let p = pod_net(env, conf, &lease);
    let applied =
        if p.addr.is_ipv4() && p.egress.is_none() { datapath::netlink::setup(&p) } else { datapath::apply::setup(&p) };
    if let Err(e) = applied {
        // Undo: the address goes back to the pool (the data path was already removed).
        let _ = daemon::call(&conf.socket, Op::Del(a));
        return Err(CniError::new(ErrorCode::Plugin(100), format!("data path setup failed: {e}")));
    }
    let len = if lease.addr.is_ipv4() { 32 } else { 128 };
    let gw = if lease.addr.is_ipv4() { datapath::plan::GATEWAY_V4.parse().ok() } else { "fe80::1".parse().ok() };
    let mut result = AddResult {
        interfaces: vec![
            Interface { name: p.host_veth.clone(), mac: p.host_mac.clone(), sandbox: None, mtu: Some(p.mtu) },
            Interface {
                name: p.ifname.clone(),
                mac: p.pod_mac.clone(),
                sandbox: Some(p.netns.clone()),
                mtu: Some(p.mtu),
            },
        ],
        ips: vec![IpConfig {
            address: ipnet::IpNet::new(lease.addr, len)
                .map_err(|e| CniError::new(ErrorCode::Plugin(101), e.to_string()))?,
            gateway: gw,
            interface: Some(1),
        }],
        routes: vec![Route {
            dst: if lease.addr.is_ipv4() {
                "0.0.0.0/0".parse().expect("literal")
            } else {
                "::/0".parse().expect("literal")
            },
            gw,
        }],
    };
    if let Some(e) = &p.egress {
        result.interfaces.push(Interface {
            name: datapath::plan::EGRESS_IF.into(),
            mac: e.pod_mac.clone(),
            sandbox: Some(p.netns.clone()),
            mtu: Some(p.mtu),
        });
        result.ips.push(IpConfig {
            address: ipnet::IpNet::new(std::net::IpAddr::V4(e.addr), 22)
                .map_err(|e| CniError::new(ErrorCode::Plugin(101), e.to_string()))?,
            gateway: datapath::plan::EGRESS_GATEWAY.parse().ok(),
            interface: Some(2),
        });
    }
    Ok(result.to_value(conf.version).to_string())
}

fn del(env: &CniEnv, conf: &NetConf) -> Result<(), CniError> {
    let a = attach(env, conf);
    let released = daemon::call(&conf.socket, Op::Del(a));
    let (addr, table, daemon_err) = match released {
        Ok(Ok(Reply::Released { addr, route_table })) => {
            (addr, route_table.unwrap_or(datapath::plan::MAIN_TABLE), None)
        }
        Ok(Ok(_)) => (None, datapath::plan::MAIN_TABLE, None),
        Ok(Err((kind, msg))) => (None, datapath::plan::MAIN_TABLE, Some(daemon_error(kind, msg))),
        Err(e) => (None, datapath::plan::MAIN_TABLE, Some(e)),
    };
    // The data path goes whatever the daemon said: DEL is best effort and idempotent.
    let prefix = conf.veth_prefix.clone();
    let veth = veth_name(env, &prefix);
    let mut errors = Vec::new();
    if let Err(es) = datapath::apply::teardown(&veth, addr, table) {
        errors.extend(es.into_iter().map(|e| e.to_string()));
    }
    if let Some(e) = daemon_err {
        return Err(e);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(ErrorCode::Plugin(100), format!("data path teardown: {}", errors.join("; "))))
    }
}

fn check(env: &CniEnv, conf: &NetConf) -> Result<(), CniError> {
    let lease = match daemon::call(&conf.socket, Op::Check(attach(env, conf)))? {
        Ok(Reply::Lease(l)) => l,
        Ok(other) => return Err(CniError::new(ErrorCode::Plugin(101), format!("unexpected reply {other:?}"))),
        Err((kind, msg)) => return Err(daemon_error(kind, msg)),
    };
    datapath::apply::check(&pod_net(env, conf, &lease))
        .map_err(|e| CniError::new(ErrorCode::Plugin(100), format!("data path: {e}")))
}

fn gc(conf: &NetConf) -> Result<(), CniError> {
    let valid = conf.valid_attachments.iter().map(|a| (a.container_id.clone(), a.ifname.clone())).collect();
    match daemon::call(&conf.socket, Op::Gc { network: conf.name.clone(), valid })? {
        Ok(_) => Ok(()),
        Err((kind, msg)) => Err(daemon_error(kind, msg)),
    }
}

fn status(conf: &NetConf) -> Result<(), CniError> {
    match daemon::call(&conf.socket, Op::Status) {
        Ok(Ok(Reply::Status { readiness: Readiness::Ready, .. })) => Ok(()),
        Ok(Ok(Reply::Status { readiness, .. })) => {
            Err(CniError::new(ErrorCode::NotAvailable, format!("no address can be had now ({readiness:?})")))
        }
        Ok(Ok(other)) => Err(CniError::new(ErrorCode::Plugin(101), format!("unexpected reply {other:?}"))),
        Ok(Err((_, msg))) => Err(CniError::new(ErrorCode::NotAvailable, msg)),
        Err(e) => Err(CniError::new(ErrorCode::NotAvailable, e.msg)),
    }
}
