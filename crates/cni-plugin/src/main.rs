//! `podip-cni`, the CNI plugin the container runtime execs. Stdout carries exactly one JSON
//! document (the result or the error); diagnostics go to stderr.
//!
//! ADD checks the pod's netns before anything else (a namespace file, a network namespace, not
//! the plugin's own nor the host's, opened without blocking), then asks podipd for the
//! attachment's address and builds the data path. An address this ADD took is given back if
//! the data path fails; one the attachment already held (a retried ADD) never is: a complete
//! data path is answered as is, an incomplete one rebuilt. DEL first tears the data path down
//! (the rules of the address, while the pod's route still holds it, then the veth only if it
//! carries this attachment's address or none), then releases the address it tore down (and no other), so nothing on the host still uses an
//! address the pool hands out again; with podipd unreachable it changes nothing and the runtime
//! retries. DEL is idempotent, with or without the netns. ADD and DEL of one attachment never
//! overlap ([`serial`]), and the host veth's name is podipd's.
//! CHECK compares the kernel with the lease. GC asks podipd which attachments the runtime no
//! longer lists and releases each as DEL does. STATUS is forwarded to podipd. VERSION
//! lists 0.4.0, 1.0.0 and 1.1.0.

mod daemon;
mod serial;

use cni::config::NetConf;
use cni::env::{CniEnv, Command};
use cni::error::{CniError, ErrorCode};
use cni::result::{AddResult, Interface, IpConfig, Route};
use cni::version::version_info;
use datapath::PodNet;
use datapath::apply::SetupError;
use protocol::{Attach, ErrorKind, Lease, Op, Readiness, Reply};
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
        release_only: None,
        scrub_rules: false,
    }
}

/// The host veth name podipd gave, or (from an older podipd) the same computed here.
fn veth_name(env: &CniEnv, lease: &Lease) -> String {
    if !lease.veth.is_empty() {
        return lease.veth.clone();
    }
    let key = datapath::veth_key(
        env.pod(),
        env.container_id.as_deref().unwrap_or_default(),
        env.ifname.as_deref().unwrap_or_default(),
    );
    datapath::host_veth_name(&lease.veth_prefix, &key)
}

fn pod_net(env: &CniEnv, conf: &NetConf, lease: &Lease) -> PodNet {
    let host_veth = veth_name(env, lease);
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
    let netns = env.netns.as_deref().unwrap_or_default();
    datapath::netns::open_pod_netns(netns).map_err(|e| CniError::new(ErrorCode::InvalidEnv, e.to_string()))?;
    let a = attach(env, conf);
    let pod = a.pod_namespace.as_deref().zip(a.pod_name.as_deref());
    let mut keys = serial::keys(pod, &a.container_id);
    let mut serial = serial::lock_keys(&conf.socket, &keys)?;
    let ask = || match daemon::call(&conf.socket, Op::Add(a.clone()))? {
        Ok(Reply::Lease(l)) => Ok(*l),
        Ok(other) => Err(CniError::new(ErrorCode::Plugin(101), format!("unexpected reply {other:?}"))),
        Err((kind, msg)) => Err(daemon_error(kind, msg)),
    };
    // Gives back an address this ADD took (never one the attachment held before it) as the ADD
    // fails with `e`, which then says whether the address went back.
    let give_back = |lease: &Lease, mut e: CniError| {
        if !lease.existing {
            let gone = match daemon::call(&conf.socket, Op::Del(Attach { release_only: Some(lease.addr), ..a.clone() }))
            {
                Ok(Ok(_)) => Ok(()),
                Ok(Err((_, msg))) => Err(msg),
                Err(err) => Err(err.msg),
            };
            if let Err(why) = gone {
                e.msg = format!(
                    "{}; {} stays held until this sandbox's DEL, or until podipd's sweep finds nothing of it on the host for PODIP_WIRING_GRACE (podipd did not take it back: {why})",
                    e.msg, lease.addr
                );
            }
        }
        e
    };
    let mut lease = ask()?;
    // The veth is named after the pod podipd recorded at the first ADD, which the pod's next
    // sandbox may be building under that pod's lock. A retried ADD that carries another identity
    // (or none) takes that lock too. It never lets its container's go (a DEL of the container
    // would run in between): it takes the pod's at once if it is free, and otherwise lets all go,
    // takes them in their fixed order, and goes on only if the attachment is as it was.
    let recorded = |l: &Lease| l.pod.as_ref().map(|(ns, name)| serial::pod_key(ns, name));
    if let Some(r) = recorded(&lease).filter(|r| !keys.contains(r)) {
        keys.push(r.clone());
        if !serial.try_add(&conf.socket, &r)? {
            drop(serial);
            serial = serial::lock_keys(&conf.socket, &keys)?;
            let first = lease;
            lease = ask()?;
            let same = lease.existing && lease.addr == first.addr && recorded(&lease).is_none_or(|r| keys.contains(&r));
            if !same {
                return Err(give_back(
                    &lease,
                    CniError::new(
                        ErrorCode::TryAgainLater,
                        "the attachment changed while this ADD waited for its pod's lock (a DEL of the container came); try again",
                    ),
                ));
            }
        }
    }
    // The locks must still be the files their paths name now that the address is this ADD's:
    // the sweep, which releases an address the host never wired once it holds the container's
    // lock, cannot see a lock whose file was removed since.
    if !serial.still_named() {
        return Err(give_back(
            &lease,
            CniError::new(
                ErrorCode::TryAgainLater,
                "the attachment lock files were removed or replaced while this ADD held them; try again",
            ),
        ));
    }
    let _serial = serial;
    if let Some(p) = conf.veth_prefix.as_deref().filter(|p| *p != lease.veth_prefix) {
        let e = CniError::new(
            ErrorCode::InvalidConfig,
            format!(
                "vethPrefix={p:?} differs from podipd's {:?} (AWS_VPC_K8S_CNI_VETHPREFIX); remove it or make them equal",
                lease.veth_prefix
            ),
        );
        return Err(give_back(&lease, e));
    }
    let p = pod_net(env, conf, &lease);
    if lease.existing && datapath::apply::check(&p).is_ok() {
        return result(&p, &lease, conf);
    }
    // A veth of this name already there: this attachment's own unfinished one (it carries this
    // address, or none) goes; one that carries another address belongs to another attachment (a
    // previous sandbox of the same pod whose DEL has not come yet) and is never touched, nor is
    // a link of the name that is not a veth, nor anything when the host cannot be read. No link
    // of the name (it went, or it was never there and a lookup failed): nothing to do.
    let existing_veth = || match datapath::host::scan(None) {
        Err(e) => Err(CniError::new(
            ErrorCode::TryAgainLater,
            format!("host veth {} may exist and the host could not be read to see whose it is: {e}", p.host_veth),
        )),
        Ok(v) if !v.has_link(&p.host_veth) => Ok(()),
        Ok(v) if !v.veths.contains(&p.host_veth) => Err(CniError::new(
            ErrorCode::Plugin(100),
            format!("host interface {} exists and is not a veth; podip never removes it", p.host_veth),
        )),
        Ok(v) => match v.addr_on(&p.host_veth) {
            Some(other) if other != p.addr => Err(CniError::new(
                ErrorCode::TryAgainLater,
                format!(
                    "host veth {} carries {other}, another attachment's (a previous sandbox of this pod?); waiting for its DEL",
                    p.host_veth
                ),
            )),
            _ => {
                let _ = datapath::apply::teardown(Some(&p.host_veth), &[p.addr]);
                Ok(())
            }
        },
    };
    // An IPv4 pod's pair is made over rtnetlink, at once: the creation fails if the name is
    // taken, and a failed setup removes exactly what it made, so the veth is looked at only
    // then, and the setup runs once more if it was this attachment's. Every other pod goes
    // through iproute2, and its veth is looked at first.
    let fast = p.addr.is_ipv4() && p.egress.is_none();
    let setup = || if fast { datapath::netlink::setup(&p) } else { datapath::apply::setup(&p) };
    if !fast
        && datapath::host::link_exists(&p.host_veth).unwrap_or(true)
        && let Err(e) = existing_veth()
    {
        return Err(give_back(&lease, e));
    }
    let mut applied = setup();
    if matches!(applied, Err(SetupError::Taken(_))) {
        if let Err(e) = existing_veth() {
            return Err(give_back(&lease, e));
        }
        applied = setup();
    }
    match applied {
        Ok(()) => result(&p, &lease, conf),
        // What the setup made may still carry the address (in the pod too): it stays held, so
        // nothing else gets it; the runtime's DEL of the failed sandbox removes it all and
        // releases it.
        Err(e @ SetupError::Left { .. }) => Err(CniError::new(
            ErrorCode::Plugin(100),
            format!(
                "data path setup failed: {e}; {} stays held until this sandbox's DEL, or until podipd's sweep finds nothing of it on the host for PODIP_WIRING_GRACE",
                p.addr
            ),
        )),
        Err(e) => {
            let code =
                if matches!(e, SetupError::Taken(_)) { ErrorCode::TryAgainLater } else { ErrorCode::Plugin(100) };
            Err(give_back(&lease, CniError::new(code, format!("data path setup failed: {e}"))))
        }
    }
}

fn result(p: &PodNet, lease: &Lease, conf: &NetConf) -> Result<String, CniError> {
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
    release(conf, attach(env, conf))
}

/// Tears an attachment's data path down, then releases its address (DEL, and GC for each stale
/// attachment).
fn release(conf: &NetConf, a: Attach) -> Result<(), CniError> {
    let pod = a.pod_namespace.as_deref().zip(a.pod_name.as_deref());
    let mut keys = serial::keys(pod, &a.container_id);
    let mut serial = serial::lock_keys(&conf.socket, &keys)?;
    // What to tear down, from podipd (unreachable: nothing is changed, the runtime retries).
    let mut plan = daemon::call(&conf.socket, Op::Teardown(a.clone()))?;
    // The veth is named after the pod podipd recorded at ADD, which another sandbox of the pod
    // may be building under that pod's lock. A DEL that does not hold it (no identity, or
    // another one) takes it too, with its own, in their fixed order, and asks again (nothing is
    // changed before the last answer, so the gap between is harmless), until it holds the lock
    // of the pod the answer names. An attachment recovered from the host is podipd's
    // `host:<veth>`, whose lock the sweep takes before it releases the address: the DEL holds
    // it too, so the address is never released (and handed to another pod) while this DEL is
    // still to remove its rules. It holds it for every attachment, recovered or not: podipd,
    // restarted without its checkpoint while this DEL runs, recovers the pod from the host
    // under that key.
    let wanted = |plan: &Result<Reply, (ErrorKind, String)>| -> Vec<String> {
        let Ok(Reply::Teardown { pod, veth, .. }) = plan else { return Vec::new() };
        let pod = pod.as_ref().map(|(ns, name)| serial::pod_key(ns, name));
        pod.into_iter().chain((!veth.is_empty()).then(|| protocol::lockfile::recovered_key(veth))).collect()
    };
    // Each missing lock is first tried without letting any go; only an answer that names a
    // recovered attachment is asked again then (the sweep releases that one under the lock just
    // taken; this DEL's own attachment is under the container's lock it held all along).
    let is_recovered =
        |plan: &Result<Reply, (ErrorKind, String)>| matches!(plan, Ok(Reply::Teardown { recovered: true, .. }));
    loop {
        let missing: Vec<String> = wanted(&plan).into_iter().filter(|k| !keys.contains(k)).collect();
        if missing.is_empty() {
            break;
        }
        keys.extend(missing.iter().cloned());
        let mut all = true;
        for k in &missing {
            if !serial.try_add(&conf.socket, k)? {
                all = false;
                break;
            }
        }
        if all && !is_recovered(&plan) {
            break;
        }
        if !all {
            drop(serial);
            serial = serial::lock_keys(&conf.socket, &keys)?;
        }
        plan = daemon::call(&conf.socket, Op::Teardown(a.clone()))?;
    }
    let _serial = serial;
    let (addr, veth) = match plan {
        Ok(Reply::Teardown { addr, veth, recovered, .. }) => {
            // An attachment recovered from the host is known only by its veth, which every
            // sandbox of the pod names alike: only the sandbox whose namespace holds the address
            // tears it down. Another one's DEL (or one without a namespace) leaves it: the sweep
            // releases it once nothing of it is on the host, and its rules after the cooldown.
            let mine = match (recovered, addr, a.netns.as_deref()) {
                (false, _, _) => true,
                (true, Some(ip), Some(ns)) => datapath::host::netns_has_addr(ns, ip).unwrap_or(false),
                (true, _, _) => false,
            };
            if !mine {
                return Ok(());
            }
            (addr, veth)
        }
        Ok(other) => return Err(CniError::new(ErrorCode::Plugin(101), format!("unexpected reply {other:?}"))),
        Err((kind, msg)) => return Err(daemon_error(kind, msg)),
    };
    // The veth goes only if it is this attachment's: it carries this address, or none. One that
    // carries another address is another attachment's (the sweep collects it if nobody holds it).
    // Any other veth the host routes this attachment's address over is this attachment's too
    // (an address has one holder): it goes as well, so nothing still carries the address once
    // it is released.
    // A host route to the address over a veth is the pod's wiring, whatever its veth's name.
    let via = match addr {
        Some(a) => datapath::host::routed_over(a).map_err(|e| CniError::new(ErrorCode::Plugin(100), e.to_string()))?,
        None => None,
    };
    let ours = if via.as_deref() == Some(veth.as_str()) {
        true
    } else if datapath::host::link_exists(&veth).unwrap_or(false) {
        // It exists but does not carry this address: this attachment's only if it is a veth (a
        // link of another kind is never podip's) and carries none.
        datapath::host::scan(None).map(|v| v.veths.contains(&veth) && v.addr_on(&veth).is_none()).unwrap_or(false)
    } else {
        false
    };
    let addrs: Vec<std::net::IpAddr> = addr.into_iter().collect();
    // The pod's own veth, for an IPv4 pod whose namespace is still there (the runtime deletes it
    // right after DEL), only goes down: its routes go with it at once, and the link goes with the
    // namespace, as the VPC CNI leaves it. Deleting it here would wait out an RCU grace period.
    let netns_alive = a.netns.as_deref().is_some_and(|n| datapath::netns::open_pod_netns(n).is_ok());
    let retire = ours && netns_alive && addr.is_some_and(|ip| ip.is_ipv4());
    // A route over another link than the attachment's veth is this attachment's (its veth under
    // another name: the prefix changed) when its namespace holds the address, or, without that
    // proof, when podipd still says the address is this attachment's now that the route is
    // seen. Otherwise it is another pod's, wired with the address since podipd answered this
    // DEL (podipd restarted without its checkpoint, say): nothing of the address on the host is
    // this DEL's.
    let foreign = match (&via, addr) {
        (Some(v), Some(ip)) if *v != veth => {
            let in_netns = a.netns.as_deref().is_some_and(|ns| datapath::host::netns_has_addr(ns, ip).unwrap_or(false));
            !in_netns
                && match daemon::call(&conf.socket, Op::Teardown(a.clone()))? {
                    Ok(Reply::Teardown { addr: now, .. }) => now != Some(ip),
                    Ok(other) => {
                        return Err(CniError::new(ErrorCode::Plugin(101), format!("unexpected reply {other:?}")));
                    }
                    Err((kind, msg)) => return Err(daemon_error(kind, msg)),
                }
        }
        _ => false,
    };
    // With no route to the address at all (the pod's veth went before this DEL), nothing on
    // the host keeps the address to this pod while its rules go: podipd removes them, under its
    // pool lock and only while the attachment still holds the address, as it releases it.
    let scrub = addr.is_some() && via.is_none();
    let rules_here = !scrub && !foreign;
    let mut links: Vec<String> = (ours && !retire).then(|| veth.clone()).into_iter().collect();
    links.extend(via.filter(|v| *v != veth && !foreign));
    let mut errors = Vec::new();
    if retire
        && let Some(ns) = a.netns.as_deref()
        && let Err(es) = datapath::apply::retire(&veth, ns, &a.ifname, if rules_here { &addrs } else { &[] })
    {
        errors.extend(es.into_iter().map(|e| e.to_string()));
    }
    for l in &links {
        let r = if rules_here {
            datapath::apply::teardown(Some(l), &addrs)
        } else {
            datapath::apply::remove_links(Some(l), &addrs)
        };
        if let Err(es) = r {
            errors.extend(es.into_iter().map(|e| e.to_string()));
        }
    }
    if links.is_empty()
        && !retire
        && rules_here
        && let Err(es) = datapath::apply::teardown(None, &addrs)
    {
        errors.extend(es.into_iter().map(|e| e.to_string()));
    }
    if !errors.is_empty() {
        // Nothing is released while the host may still use the address; the runtime retries.
        return Err(CniError::new(ErrorCode::Plugin(100), format!("data path teardown: {}", errors.join("; "))));
    }
    // Only now, with nothing on the host using it, does the address go back to the pool: the
    // address this teardown found, and no other (none found: the unspecified address, which
    // releases nothing and tells podipd the attachment is gone).
    let only = addr.unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    match daemon::call(&conf.socket, Op::Del(Attach { release_only: Some(only), scrub_rules: scrub, ..a }))? {
        Ok(_) => Ok(()),
        Err((kind, msg)) => Err(daemon_error(kind, msg)),
    }
}

fn check(env: &CniEnv, conf: &NetConf) -> Result<(), CniError> {
    let lease = match daemon::call(&conf.socket, Op::Check(attach(env, conf)))? {
        Ok(Reply::Lease(l)) => *l,
        Ok(other) => return Err(CniError::new(ErrorCode::Plugin(101), format!("unexpected reply {other:?}"))),
        Err((kind, msg)) => return Err(daemon_error(kind, msg)),
    };
    datapath::apply::check(&pod_net(env, conf, &lease))
        .map_err(|e| CniError::new(ErrorCode::Plugin(100), format!("data path: {e}")))
}

fn gc(conf: &NetConf) -> Result<(), CniError> {
    let Some(valid) = &conf.valid_attachments else {
        return Err(CniError::new(
            ErrorCode::InvalidConfig,
            "GC needs cni.dev/valid-attachments (an empty list, to release every attachment)",
        ));
    };
    let valid = valid.iter().map(|a| (a.container_id.clone(), a.ifname.clone())).collect();
    let stale = match daemon::call(&conf.socket, Op::Gc { network: conf.name.clone(), valid })? {
        Ok(Reply::Stale { attachments }) => attachments,
        Ok(other) => return Err(CniError::new(ErrorCode::Plugin(101), format!("unexpected reply {other:?}"))),
        Err((kind, msg)) => return Err(daemon_error(kind, msg)),
    };
    // Each goes as a DEL would: its data path first, then its address. All are tried.
    let errors: Vec<String> = stale
        .into_iter()
        .filter_map(|a| {
            let who = format!("{}/{}", a.container_id, a.ifname);
            release(conf, a).err().map(|e| format!("{who}: {}", e.msg))
        })
        .collect();
    if errors.is_empty() { Ok(()) } else { Err(CniError::new(ErrorCode::Plugin(100), errors.join("; "))) }
}

fn status(conf: &NetConf) -> Result<(), CniError> {
    match daemon::call(&conf.socket, Op::Status) {
        // A full or refilling pool is normal: ADD answers it with code 11. STATUS fails only
        // when the daemon cannot serve at all, since a failure makes the node NotReady.
        Ok(Ok(Reply::Status { readiness: Readiness::Ready | Readiness::Refilling | Readiness::Exhausted, .. })) => {
            Ok(())
        }
        Ok(Ok(Reply::Status { readiness: Readiness::CloudDown, .. })) => {
            Err(CniError::new(ErrorCode::NotAvailable, "podipd has no address and cannot reach the cloud to get one"))
        }
        Ok(Ok(other)) => Err(CniError::new(ErrorCode::Plugin(101), format!("unexpected reply {other:?}"))),
        Ok(Err((_, msg))) => Err(CniError::new(ErrorCode::NotAvailable, msg)),
        Err(e) => Err(CniError::new(ErrorCode::NotAvailable, e.msg)),
    }
}
