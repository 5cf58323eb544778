//! Carries out plans: one iproute2 batch inside the pod's netns (through `nsenter`), one on the
//! host, the rules over rtnetlink; teardown (rtnetlink, no process) that reports every error but
//! treats "already gone" as done; and checks that read the kernel's state back.

use crate::plan::{EGRESS_GATEWAY, EGRESS_IF, GATEWAY_V4, Line, PodNet, host_side, pod_side};
use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use thiserror::Error;

/// A failed data-path operation.
#[derive(Debug, Error)]
#[error("{what}: {detail}")]
pub struct ApplyError {
    /// What was being done.
    pub what: String,
    /// What the kernel or tool said.
    pub detail: String,
}

/// A failed setup, and what it left behind: the caller gives the pod's address back only when
/// nothing the setup made still carries it.
#[derive(Debug, Error)]
pub enum SetupError {
    /// The host veth's name is taken (or could not be told free): nothing was made, and the link
    /// of that name is someone's, perhaps an earlier try's of this attachment.
    #[error("{0}")]
    Taken(ApplyError),
    /// Whatever the setup made is removed again (or it made nothing).
    #[error("{0}")]
    Undone(ApplyError),
    /// Some of what the setup made could not be removed, or could not be told apart from what
    /// others made: it may still be on the host and in the pod, carrying the address.
    #[error("{error}; what it made could not all be removed ({undo})")]
    Left {
        /// What failed.
        error: ApplyError,
        /// Why the undo did not finish.
        undo: String,
    },
}

impl SetupError {
    /// The outcome of a setup that failed with `error` and then ran its undo.
    pub(crate) fn after_undo(error: ApplyError, undo: Result<(), Vec<ApplyError>>) -> SetupError {
        match undo {
            Ok(()) => SetupError::Undone(error),
            Err(es) => {
                let undo = es.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
                SetupError::Left { error, undo }
            }
        }
    }
}

fn run(mut cmd: Command, input: &str, what: &str) -> Result<String, ApplyError> {
    let err = |detail: String| ApplyError { what: what.to_string(), detail };
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(format!("cannot run {:?}: {e}", cmd.get_program())))?;
    if let Some(mut i) = child.stdin.take() {
        i.write_all(input.as_bytes()).map_err(|e| err(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| err(e.to_string()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(err(String::from_utf8_lossy(&out.stderr).trim().to_string()))
    }
}

fn batch(lines: &[Line]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// Splits lines into those for `ip -batch` and those for `ip -6 -batch` (marked `-6 `, since a
/// batch line cannot carry the family option).
fn by_family(lines: &[Line]) -> (Vec<Line>, Vec<Line>) {
    let (v6, rest): (Vec<&Line>, Vec<&Line>) = lines.iter().partition(|l| l.0.starts_with("-6 "));
    (
        rest.into_iter().cloned().collect(),
        v6.into_iter().map(|l| Line(l.0.trim_start_matches("-6 ").to_string())).collect(),
    )
}

/// Runs host lines: the family-less batch, then the IPv6 one; stops at the first failure.
fn run_host(lines: &[Line], what: &str) -> Result<(), ApplyError> {
    let (plain, v6) = by_family(lines);
    for (fam, part) in [(None, plain), (Some("-6"), v6)] {
        if part.is_empty() {
            continue;
        }
        let mut c = Command::new("ip");
        if let Some(f) = fam {
            c.arg(f);
        }
        c.args(["-batch", "-"]);
        run(c, &batch(&part), what)?;
    }
    Ok(())
}

/// Creates the pod's data path: the pod side in one batch, then the host side in one batch. The
/// caller has made sure no link of the pair's host names is there (a link of those names after
/// a failure is this call's). On a failure, what this call created, and nothing else, is
/// removed again before the error is returned, and the error says whether that succeeded.
///
/// # Errors
/// The step that failed and what the kernel said, and what is left.
pub fn setup(p: &PodNet) -> Result<(), SetupError> {
    let lines = pod_side(p, std::process::id());
    let mut pod = Command::new("nsenter");
    pod.arg(format!("--net={}", p.netns)).args(["ip", "-batch", "-"]);
    if let Err(e) = run(pod, &batch(&lines), "pod side") {
        // `ip -batch` stops at the first line that fails and names it: the lines before it are
        // this call's. No line named: nothing of the batch may have run (nsenter or ip could not
        // start, the namespace is gone) or some of it may have (iproute2 exits without naming
        // the line on some failures): a link of the pair's names is then this call's, and left.
        let failed = failed_line(&e.detail);
        let made = |line: usize| failed.is_some_and(|n| n > line);
        // Line 1 makes the pod's pair; the egress interface's pair has a line of its own.
        let egress_line =
            lines.iter().position(|l| l.0.starts_with(&format!("link add name {} ", crate::plan::EGRESS_IF)));
        let egress = p.egress.as_ref().filter(|_| egress_line.is_some_and(|i| made(i + 1)));
        let undo = undo_links(p, made(1), egress.is_some()).map_err(|e| vec![e]);
        let undo = undo.and_then(|()| if failed.is_some() { Ok(()) } else { links_gone(p) });
        if failed == Some(1) && crate::netlink::pod_has_ifname(p) {
            return Err(SetupError::after_undo(crate::netlink::ifname_taken(p, "pod side", &e), undo));
        }
        let at = failed.and_then(|n| lines.get(n - 1)).map(|l| format!(" (line {}: {l})", failed.unwrap_or(0)));
        let e = ApplyError { what: format!("pod side{}", at.unwrap_or_default()), detail: e.detail };
        return Err(SetupError::after_undo(e, undo));
    }
    let host = run_host(&host_side(p), "host side")
        .map_err(|e| routed_elsewhere(p, e))
        .and_then(|()| crate::host::ensure_pod_rules(None, p.addr, p.table));
    if let Err(e) = host {
        let mut errors: Vec<ApplyError> = undo_links(p, true, p.egress.is_some()).err().into_iter().collect();
        // An address routed already is another's, and so are its rules.
        if !crate::host::routed_already(&e) {
            errors.extend(crate::host::remove_pod_rules(None, p.addr).err());
        }
        return Err(SetupError::after_undo(e, if errors.is_empty() { Ok(()) } else { Err(errors) }));
    }
    Ok(())
}

/// `e`, or, when the host side failed because a route exists and one of the pod's addresses is
/// routed otherwise than over its own veth, the error that says so.
fn routed_elsewhere(p: &PodNet, e: ApplyError) -> ApplyError {
    if !e.detail.contains("File exists") {
        return e;
    }
    let mut ours = vec![(p.addr, p.host_veth.as_str())];
    ours.extend(p.egress.as_ref().map(|g| (IpAddr::V4(g.addr), g.host_veth.as_str())));
    for (addr, veth) in ours {
        let own = [format!("dev {veth}")];
        if crate::inspect::routes_to_addr(addr).is_ok_and(|r| !r.is_empty() && r != own) {
            return crate::host::routed_already_error(addr, &e.detail);
        }
    }
    e
}

/// Whether no link of the pair's host names is left (after a batch that did not say how far it
/// got).
fn links_gone(p: &PodNet) -> Result<(), Vec<ApplyError>> {
    let names = std::iter::once(p.host_veth.as_str()).chain(p.egress.as_ref().map(|e| e.host_veth.as_str()));
    let left: Vec<ApplyError> = names
        .filter_map(|n| match crate::host::link_exists(n) {
            Ok(false) => None,
            Ok(true) => Some(ApplyError { what: format!("host veth {n}"), detail: "still there".into() }),
            Err(e) => Some(e),
        })
        .collect();
    if left.is_empty() { Ok(()) } else { Err(left) }
}

/// The line of an `ip -batch -` that failed, counted from 1, from iproute2's "Command failed
/// -:N".
fn failed_line(detail: &str) -> Option<usize> {
    detail.lines().rev().find_map(|l| l.trim().strip_prefix("Command failed -:")?.trim().parse().ok())
}

/// Removes the pairs a setup made: the pod's (its host end, and the pod end and routes with it)
/// and the egress interface's.
fn undo_links(p: &PodNet, pair: bool, egress: bool) -> Result<(), ApplyError> {
    if pair {
        crate::host::remove_link(None, &p.host_veth)?;
    }
    if let Some(e) = p.egress.as_ref().filter(|_| egress) {
        crate::host::remove_link(None, &e.host_veth)?;
    }
    Ok(())
}

/// Removes every podip rule of `addrs`, then, when that went well, the host veth when given (and
/// so the pod end and its routes; for an IPv6 pod also its IPv4 egress veth), in the caller's
/// namespace, over rtnetlink. Rules go first: while the pod's host route still holds its address
/// (the kernel routes one address to one link), no other pod can be wired with it, so the rules
/// removed are this pod's; once the route is gone, a stalled teardown has nothing of the address
/// left to remove. Objects that are already gone count as removed; every other error is reported.
///
/// # Errors
/// Every step that failed for another reason (a failed rule removal leaves the veth).
pub fn teardown(host_veth: Option<&str>, addrs: &[IpAddr]) -> Result<(), Vec<ApplyError>> {
    remove_rules(addrs)?;
    remove_links(host_veth, addrs)
}

/// [`teardown`] without the rules (the daemon removes them, see `protocol::Attach::scrub_rules`).
///
/// # Errors
/// Every removal that failed for another reason than "already gone".
pub fn remove_links(host_veth: Option<&str>, addrs: &[IpAddr]) -> Result<(), Vec<ApplyError>> {
    let mut errors = Vec::new();
    let mut links: Vec<String> = host_veth.map(String::from).into_iter().collect();
    if let Some(v) = host_veth.filter(|_| addrs.iter().any(IpAddr::is_ipv6)) {
        links.push(crate::plan::egress_veth_name(v));
    }
    for l in &links {
        if let Err(e) = crate::host::remove_link(None, l) {
            errors.push(e);
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

/// Removes every podip rule of `addrs`, each tried.
fn remove_rules(addrs: &[IpAddr]) -> Result<(), Vec<ApplyError>> {
    let errors: Vec<ApplyError> = addrs.iter().filter_map(|a| crate::host::remove_pod_rules(None, *a).err()).collect();
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

/// DEL's fast teardown of an IPv4 pod whose namespace at `netns` still exists: every podip rule
/// of `addrs` is removed first (as [`teardown`] does, while the pod's route still holds the
/// address), then its host veth goes down (every route over it goes with it), and its pod end
/// goes down and gives up `ifname`. The pair is left to the pod namespace's teardown, which the
/// runtime does right after DEL (deleting a veth waits for an RCU grace period, about 20 ms);
/// the daemon's sweep removes the host end if the namespace outlives the attachment.
///
/// # Errors
/// Every step that failed for another reason than "already gone" (a failed rule removal leaves
/// the veth up).
pub fn retire(host_veth: &str, netns: &str, ifname: &str, addrs: &[IpAddr]) -> Result<(), Vec<ApplyError>> {
    remove_rules(addrs)?;
    let mut errors = Vec::new();
    match crate::host::retire_link(host_veth) {
        // Its pod end, in this namespace, under this name: renamed, and the pair left to the
        // namespace. Anything else (a DEL retried after the rename, a namespace that is not the
        // pod end's): the veth is deleted now, as without a namespace.
        Ok(Some((host, peer))) => match crate::host::retire_pod_end(netns, peer, host, ifname) {
            Ok(true) => {}
            Ok(false) => {
                if let Err(e) = crate::host::remove_link(None, host_veth) {
                    errors.push(e);
                }
            }
            Err(e) => errors.push(e),
        },
        Ok(None) => {}
        Err(e) => errors.push(e),
    }
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

/// Checks the pod's data path against the kernel: inside the pod, the interface with exactly its
/// address, the default route through the gateway on an interface that has the gateway's
/// permanent neighbour, and that neighbour at the host veth's MAC on the pod's interface (the
/// same for an IPv6 pod's IPv4 egress interface); on the host, everything
/// [`crate::inspect::check_host`] reads.
///
/// # Errors
/// The first thing missing or different.
pub fn check(p: &PodNet) -> Result<(), ApplyError> {
    let missing = |what: &str| ApplyError { what: "check".into(), detail: format!("{what} is missing") };
    let in_pod = |args: &[&str], what: &str| {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", p.netns)).arg("ip").args(args);
        run(c, "", what)
    };
    let (gw, fam) = if p.addr.is_ipv4() { (GATEWAY_V4, "-4") } else { ("fe80::1", "-6") };
    // The pod's interfaces: (name, address, its prefix length, gateway, the gateway's MAC, route
    // family).
    let mut ifs =
        vec![(p.ifname.as_str(), p.addr, if p.addr.is_ipv4() { 32 } else { 128 }, gw, p.host_mac.as_str(), fam)];
    if let Some(e) = &p.egress {
        ifs.push((EGRESS_IF, IpAddr::V4(e.addr), 22, EGRESS_GATEWAY, e.host_mac.as_str(), "-4"));
    }
    let addrs = in_pod(&["-o", "addr", "show"], "pod interfaces")?;
    let neighbours = in_pod(&["neigh", "show"], "pod neighbours")?;
    // The pod's permanent neighbour entries for `gw` on `ifname`.
    let permanent = |gw: &str, ifname: &str| -> Vec<&str> {
        let at = format!("{gw} ");
        neighbours
            .lines()
            .filter(|l| l.starts_with(&at) && has_words(l, &["dev", ifname]) && l.contains("PERMANENT"))
            .collect()
    };
    for (ifname, addr, len, gw, mac, fam) in ifs {
        let on_if = addrs.lines().filter(|l| l.split_whitespace().nth(1) == Some(ifname)).collect::<Vec<_>>();
        let listed = global_addrs(&on_if.join("\n"));
        if listed != [format!("{addr}/{len}")] {
            return Err(if listed.iter().any(|a| a.starts_with(&format!("{addr}/"))) {
                ApplyError {
                    what: "check".into(),
                    detail: format!("{ifname} carries [{}], not [{addr}/{len}]", listed.join(", ")),
                }
            } else {
                missing(&format!("address {addr} on {ifname}"))
            });
        }
        if !permanent(gw, ifname).iter().any(|l| has_words(l, &["lladdr", mac])) {
            return Err(missing(&format!("the permanent neighbour {gw} at {mac} on {ifname}")));
        }
        // Through the gateway, on whichever of the pod's interfaces was added last (each ADD of
        // another interface in the same namespace takes the default route over), as long as the
        // gateway is a permanent neighbour there: one without it cannot reach the host.
        let routes = in_pod(&[fam, "route", "show", "default"], "pod routes")?;
        let through = routes.lines().find_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let dev = w.windows(2).find(|p| p[0] == "dev").map(|p| p[1]);
            has_words(l, &["via", gw]).then_some(dev).flatten()
        });
        match through {
            None => return Err(missing(&format!("the pod's default route via {gw}"))),
            Some(dev) if permanent(gw, dev).is_empty() => {
                return Err(missing(&format!(
                    "the pod's default route via {gw} on an interface wired to the host ({dev} is not)"
                )));
            }
            Some(_) => {}
        }
    }
    crate::inspect::check_host(p)
}

/// Whether `line` holds `words` one after the other.
fn has_words(line: &str, words: &[&str]) -> bool {
    let all: Vec<&str> = line.split_whitespace().collect();
    all.windows(words.len()).any(|w| w == words)
}

/// The addresses `ip -o addr show` output lists (`ADDR/LEN`, `inet` and `inet6`), but for IPv6
/// link-local ones (every IPv6 interface has its own).
fn global_addrs(out: &str) -> Vec<String> {
    let mut v = Vec::new();
    for l in out.lines() {
        let words: Vec<&str> = l.split_whitespace().collect();
        for w in words.windows(2).filter(|w| matches!(w[0], "inet" | "inet6")) {
            let link_local = w[1]
                .split('/')
                .next()
                .and_then(|a| a.parse::<std::net::Ipv6Addr>().ok())
                .is_some_and(|a| a.is_unicast_link_local());
            if !link_local {
                v.push(w[1].to_string());
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::{failed_line, global_addrs};

    #[test]
    fn addresses_are_listed_exactly_and_link_local_ones_left_out() {
        let out = "2: eth0    inet 10.0.0.234/32 scope global eth0\\       valid_lft forever\n\
                   2: eth0    inet 10.0.0.23/32 scope global eth0\n\
                   3: eth0    inet6 2600:1f18::5/128 scope global\n\
                   3: eth0    inet6 fe80::1c2:3ff:fe04:506/64 scope link\n";
        assert_eq!(global_addrs(out), ["10.0.0.234/32", "10.0.0.23/32", "2600:1f18::5/128"]);
    }

    #[test]
    fn the_failed_line_of_a_batch_is_read_from_iproute2s_message() {
        assert_eq!(failed_line("RTNETLINK answers: File exists\nCommand failed -:4"), Some(4));
        assert_eq!(failed_line("Error: Unknown device type.\nCommand failed -:1\n"), Some(1));
        // nsenter could not enter the namespace: no line of the batch ran.
        assert_eq!(failed_line("nsenter: cannot open /var/run/netns/x: No such file or directory"), None);
        assert_eq!(failed_line("Command failed -:x"), None);
    }
}
