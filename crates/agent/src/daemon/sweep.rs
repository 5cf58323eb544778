//! The host sweep: the node's wiring is ground truth both ways. An assignment the host has not
//! wired (no veth of its pod, no route to its address) for longer than the grace period is
//! released into cooldown, unless an ADD or DEL of its container holds the container's
//! attachment lock (an ADD may be stalled between podipd's answer and the wiring), or the sweep
//! cannot see that lock (see [`super::locks`]). Rules of addresses no attachment holds (nor
//! cools), and veths named as podip names them that no attachment owns, are removed once two
//! sweeps in a row found them so (a link of another kind, or the node's primary interface,
//! never). Everything removed is counted.

use super::{Daemon, Inner, locks};
use ipam::Time;
use ipam::addr::PodKey;
use ipam::engine::Event;
use nix::fcntl::Flock;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// A host object no attachment holds.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Stray {
    /// A policy rule of an address (priority, address).
    Rule(u32, IpAddr),
    /// A host veth of podip's prefix, with its index (one made again under the name is another).
    Link(String, u32),
}

/// What one sweep did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Assignments released because the host never wired them.
    pub released: Vec<(PodKey, IpAddr)>,
    /// Stray objects removed.
    pub removed: Vec<String>,
    /// Removals that failed.
    pub errors: Vec<String>,
    /// Assignments the sweep will not release although unwired, and why.
    pub kept: Vec<String>,
    /// Addresses the host routes to a pod's veth that no attachment held, taken as that veth's
    /// (`host:<veth>`).
    pub adopted: Vec<String>,
}

impl Daemon {
    /// How often the host is swept: a third of the grace period, between 1 s and 60 s.
    pub fn sweep_interval(&self) -> Duration {
        (self.cfg.wiring_grace / 3).clamp(Duration::from_secs(1), Duration::from_secs(60))
    }

    /// Sweeps the host forever, the first time at once (at boot).
    pub fn run_sweeps(self: &Arc<Self>) {
        loop {
            let r = self.sweep();
            for (k, a) in &r.released {
                eprintln!("podipd: released {a} of {k}: the host never wired it");
            }
            for e in &r.errors {
                eprintln!("podipd: sweep: {e}");
            }
            for k in &r.kept {
                eprintln!("podipd: sweep: {k}");
            }
            for what in &r.adopted {
                eprintln!(
                    "podipd: recovered {what} from the host: it routes the address to the pod, and no attachment held it"
                );
            }
            for what in &r.removed {
                eprintln!("podipd: removed {what}: no attachment holds it");
            }
            std::thread::sleep(self.sweep_interval());
        }
    }

    /// One sweep (nothing when the daemon does not own the node's data path).
    pub fn sweep(&self) -> SweepReport {
        let mut report = SweepReport::default();
        if !self.cfg.program_node {
            return report;
        }
        let view = match datapath::host::scan(self.cfg.node_netns.as_deref()) {
            Ok(v) => v,
            Err(e) => {
                report.errors.push(format!("reading the host: {e}"));
                return report;
            }
        };
        let prefix = &self.cfg.veth_prefix;
        let lock_dir = protocol::lockfile::lock_dir(&self.cfg.socket);
        let wired = view.wired();
        let now = super::now();
        let (remove, due) = {
            let mut g = self.lock();
            let inner: &mut Inner = &mut g;
            let pods: Vec<(PodKey, IpAddr)> = inner.engine.datastore().pods().map(|(k, a)| (k.clone(), *a)).collect();
            let mut expected: BTreeSet<String> = BTreeSet::new();
            let mut seen_unwired: BTreeMap<PodKey, Time> = BTreeMap::new();
            let mut due: Vec<(PodKey, IpAddr)> = Vec::new();
            for (k, a) in &pods {
                let veth = self.veth_of(k, inner.meta.get(k));
                let on_host = view.has_link(&veth) || wired.contains_key(a);
                if a.is_ipv6() {
                    // An IPv6 pod's IPv4 egress veth belongs to it too.
                    expected.insert(datapath::egress_veth_name(&veth));
                }
                expected.insert(veth);
                if !on_host {
                    let since = inner.unwired.get(k).copied().unwrap_or(now);
                    if now.since(since) >= self.cfg.wiring_grace {
                        due.push((k.clone(), *a));
                    }
                    seen_unwired.insert(k.clone(), since);
                }
            }
            inner.unwired = seen_unwired;
            report.kept.extend(inner.locks.observe(&lock_dir, pods.iter().map(|(k, _)| k)));
            let ds = inner.engine.datastore();
            inner.locks.retain(|k| ds.pod(k).is_some());
            due.retain(|(k, _)| !inner.locks.pinned(k));
            // Held: assigned or cooling (a cooling address's pod may still be draining).
            let ds = inner.engine.datastore();
            let mut held: BTreeSet<IpAddr> = ds.pods().map(|(_, a)| *a).collect();
            held.extend(ds.cooling(now).into_iter().map(|(a, _)| IpAddr::V4(a)));
            held.extend(ds.cooling_v6(now).into_iter().map(|(a, _)| IpAddr::V6(a)));
            let mut strays: BTreeSet<Stray> = BTreeSet::new();
            for r in &view.rules {
                // The rules of an address the host routes to a veth go with that veth, or stay
                // with it once adopted.
                if !held.contains(&r.addr) && !wired.contains_key(&r.addr) {
                    strays.insert(Stray::Rule(r.priority, r.addr));
                }
            }
            // Only veths named as podip names them (an IPv6 pod's egress veth too), never the
            // node's primary interface, whatever else shares the prefix.
            let ours = |l: &str| {
                l != self.cfg.primary_if
                    && (datapath::plan::is_pod_veth_name(prefix, l)
                        || (self.cfg.ipv6 && datapath::plan::is_egress_veth_name(l)))
            };
            // The IPv4 egress veth of an IPv6 pod whose veth routes an address nobody holds
            // goes with that pod: it is adopted whole, or its veth goes first.
            let adoptable: BTreeSet<String> = view
                .veths
                .iter()
                .filter(|v| view.addr_on(v).is_some_and(|a| pool_side(a) && !held.contains(&a)))
                .map(|v| datapath::egress_veth_name(v))
                .collect();
            for l in view.veths.iter().filter(|l| ours(l) && !adoptable.contains(*l)) {
                let addr = view.addr_on(l);
                if let Some(&i) = view.indexes.get(l)
                    && !expected.contains(l)
                    && addr.is_none_or(|a| !held.contains(&a))
                {
                    strays.insert(Stray::Link(l.clone(), i));
                }
            }
            let remove: Vec<Stray> = strays.intersection(&inner.strays).cloned().collect();
            inner.strays = strays.difference(&remove.iter().cloned().collect()).cloned().collect();
            (remove, due)
        };
        let netns = self.cfg.node_netns.as_deref();
        self.release_unwired(&lock_dir, due, &mut report);
        for s in remove {
            let (kind, what, r) = match &s {
                Stray::Rule(_, a) => {
                    // Under the pool's lock, and only if the address is still nobody's: an ADD
                    // that got it since the scan sets its rules after its answer, which waits
                    // for this lock.
                    let g = self.lock();
                    let r = if holds(&g, super::now(), *a) {
                        Ok(false)
                    } else {
                        datapath::host::remove_pod_rules(netns, *a).map(|n| n > 0)
                    };
                    drop(g);
                    // The lock is taken again at once for the next stray: a short pause lets an
                    // ADD waiting for it in (a mutex does not queue its waiters), so a sweep of
                    // many strays never holds pod starts back until it is done.
                    std::thread::sleep(Duration::from_micros(200));
                    ("rule", format!("rules of {a}"), r)
                }
                // Routed one of the pool's addresses that nobody holds, in two sweeps in a row:
                // a pod is wired with it (an ADD that wired it after the sweep took its address
                // for unwired, its lock out of sight): adopted, as at boot, rather than torn
                // from under the pod. The kernel already keeps the address to that one pod.
                Stray::Link(l, i) if view.addr_on(l).is_some_and(pool_side) => {
                    let a = view.addr_on(l).unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
                    let key = PodKey {
                        network: String::new(),
                        container_id: format!("{}{l}", super::RECOVERED),
                        ifname: String::new(),
                    };
                    let now = super::now();
                    let mut g = self.lock();
                    let inner: &mut Inner = &mut g;
                    let r = if holds(inner, now, a) {
                        Ok(false)
                    } else {
                        match inner.engine.adopt(&key, a) {
                            Ok(()) => {
                                self.metrics.recovered.inc();
                                let generation = self.publish(inner, now);
                                drop(g);
                                if let Err(e) = self.commit.wait(generation) {
                                    report.errors.push(format!("checkpoint not written: {e}"));
                                }
                                report.adopted.push(format!("{a} of veth {l}"));
                                continue;
                            }
                            // Not the node's: the veth goes, as any stray.
                            Err(_) => {
                                drop(g);
                                datapath::host::remove_link_at(netns, l, *i)
                            }
                        }
                    };
                    ("link", format!("veth {l}"), r)
                }
                // By the index the scans saw: a veth an ADD made under the name since (the pod's
                // next sandbox, its stale veth removed) is another link, and stays.
                Stray::Link(l, i) => ("link", format!("veth {l}"), datapath::host::remove_link_at(netns, l, *i)),
            };
            match r {
                Ok(true) => {
                    self.metrics.strays_removed.get_or_create(&crate::metrics::KindLabel { kind: kind.into() }).inc();
                    report.removed.push(what);
                }
                Ok(false) => {}
                Err(e) => report.errors.push(format!("{what}: {e}")),
            }
        }
        report
    }
}

impl Daemon {
    /// Releases into cooldown the assignments `due` that the host has not wired for the grace
    /// period. Each container's attachment lock is taken first, as podip-cni holds it for a
    /// whole ADD or DEL: a lock another holds means an ADD may be between podipd's answer and the
    /// wiring (however long it stalled), and that assignment waits for a later sweep. With the
    /// locks held, the host is read again (what an ADD wired before it let go is there now), and
    /// only what is still unwired, and still assigned as it was, is released.
    fn release_unwired(&self, lock_dir: &std::path::Path, due: Vec<(PodKey, IpAddr)>, report: &mut SweepReport) {
        if due.is_empty() {
            return;
        }
        // Per bucket: Ok(Some(lock)) taken, Ok(None) another holds it, Err(why) the sweep cannot
        // see whether a plugin holds it (the assignment is then pinned).
        let mut buckets: BTreeMap<String, Result<Option<Flock<File>>, String>> = BTreeMap::new();
        let mut free = Vec::new();
        let mut unseen = Vec::new();
        for (k, a) in due {
            let b = protocol::lockfile::bucket(&k.container_id);
            let taken = buckets.entry(b.clone()).or_insert_with(|| match locks::take(lock_dir, &b) {
                Ok(locks::Taken::Free(l)) => Ok(Some(l)),
                Ok(locks::Taken::Held) => Ok(None),
                Err(e) => Err(format!(
                    "its attachment lock file {} cannot be taken ({e})",
                    protocol::lockfile::bucket_path(lock_dir, &b).display()
                )),
            });
            match taken {
                Ok(Some(_)) => free.push((k, a, b)),
                Ok(None) => {}
                Err(why) => unseen.push((k, a, why.clone())),
            }
        }
        if !unseen.is_empty() {
            let mut g = self.lock();
            for (k, a, why) in unseen {
                report.kept.push(format!("{a} of {k} is unwired, and {why}: it stays held until its DEL"));
                g.locks.pin(k);
            }
        }
        if free.is_empty() {
            return;
        }
        let view = match datapath::host::scan(self.cfg.node_netns.as_deref()) {
            Ok(v) => v,
            Err(e) => {
                report.errors.push(format!("reading the host: {e}"));
                return;
            }
        };
        let wired = view.wired();
        let now = super::now();
        let generation = {
            let mut g = self.lock();
            let inner: &mut Inner = &mut g;
            for (k, a, b) in free {
                let veth = self.veth_of(&k, inner.meta.get(&k));
                let on_host = view.has_link(&veth) || wired.contains_key(&a);
                if on_host || inner.engine.datastore().pod(&k) != Some(a) {
                    continue;
                }
                // The lock taken must be the file the sweep saw, still named by its path now
                // that the address goes (an ADD that takes the path's file from now on asks
                // podipd after this release). Otherwise a plugin may hold the file the sweep
                // saw, or one made since: the assignment stays until its DEL.
                if let Some(Ok(Some(lock))) = buckets.get(&b)
                    && !inner.locks.still(lock_dir, &b, lock)
                {
                    report.kept.push(format!(
                        "{a} of {k} is unwired, and its attachment lock file {} was removed or replaced as the sweep took it: it stays held until its DEL",
                        protocol::lockfile::bucket_path(lock_dir, &b).display()
                    ));
                    inner.locks.pin(k);
                    continue;
                }
                inner.engine.handle(now, Event::PodDel(k.clone()));
                inner.meta.remove(&k);
                inner.unwired.remove(&k);
                self.metrics.unwired_released.inc();
                report.released.push((k, a));
            }
            (!report.released.is_empty()).then(|| self.publish(inner, now))
        };
        if let Some(g) = generation
            && let Err(e) = self.commit.wait(g)
        {
            report.errors.push(format!("checkpoint not written: {e}"));
        }
        drop(buckets);
    }
}

/// Whether `addr` is of the pool (an IPv6 pod's node-local IPv4 egress address is not).
pub(super) fn pool_side(addr: IpAddr) -> bool {
    let egress: ipnet::Ipv4Net = datapath::node::EGRESS_V4_RANGE.parse().expect("literal");
    !matches!(addr, IpAddr::V4(v4) if egress.contains(&v4))
}

/// Whether an attachment holds `addr`, or it cools (its pod may still be draining).
fn holds(inner: &Inner, now: Time, addr: IpAddr) -> bool {
    let ds = inner.engine.datastore();
    ds.pods().any(|(_, a)| *a == addr)
        || match addr {
            IpAddr::V4(v4) => ds.cooling(now).into_iter().any(|(c, _)| c == v4),
            IpAddr::V6(v6) => ds.cooling_v6(now).into_iter().any(|(c, _)| c == v6),
        }
}
