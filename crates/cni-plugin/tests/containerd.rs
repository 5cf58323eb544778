//! A real container runtime calls podip-cni: containerd (`ctr run --cni`) starts busybox
//! containers in a node namespace this test makes; they get addresses from the simulated subnet
//! and reach each other; when they stop, nothing is left. Needs root and containerd, runc and
//! busybox-static (the test command installs them); skips without, unless REQUIRE_PRIVILEGED=1.
#![allow(clippy::disallowed_methods)] // Drives real processes: waits in wall time.

mod common;

use common::{Containerd, Node, introspect, privileged, sh, tools_present};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CONFLIST: &str = "/etc/cni/net.d/00-podip-e2e.conflist";
const PLUGIN: &str = "/opt/cni/bin/podip-cni";

fn rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "proc", "sys", "dev", "etc", "tmp", "run"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    let list = sh(&["/bin/busybox", "--list"]);
    for applet in list.lines().filter(|a| *a != "busybox") {
        let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
    }
    root
}

#[test]
fn containerd_containers_get_addresses_and_reach_each_other() {
    if !privileged() || !tools_present() {
        return;
    }
    let node = Node::new("ctrd");
    std::fs::create_dir_all("/opt/cni/bin").unwrap();
    std::fs::create_dir_all("/etc/cni/net.d").unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_podip-cni"), PLUGIN).unwrap();
    // The configuration podipd writes on a node, with Debian's portmap chained after it.
    let mut list: serde_json::Value = serde_json::from_str(&agent::cniconf::conflist(&node.socket)).unwrap();
    list["plugins"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}));
    std::fs::write(CONFLIST, list.to_string()).unwrap();
    let _cleanup = Cleanup;
    let root = rootfs(&node.dir);
    let ctrd = Containerd::start(&node.dir);
    // ctr does not retry an ADD answered "try again later" as kubelet does: let the pool fill.
    common::wait_for(&node.socket, |st| st["total"].as_u64().unwrap_or(0) >= 2, 20);
    let rootfs = root.display().to_string();
    // The first container waits a little; the second finds it and pings it. Both run with --rm,
    // so ctr calls DEL when they end.
    let mut server = Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{}", node.name))
        .arg("ctr")
        .arg("--address")
        .arg(&ctrd.address)
        .args(["run", "--rm", "--cni", "--rootfs", &rootfs, "e2e-server", "/bin/sleep", "6"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let server_ip = loop {
        let st = introspect(&node.socket);
        let found = st["pods"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["container_id"].as_str().unwrap().contains("e2e-server"))
            .cloned();
        if let Some(p) = found {
            break p["ip"].as_str().unwrap().to_string();
        }
        if t0.elapsed() > Duration::from_secs(20) || server.try_wait().unwrap().is_some() {
            let _ = server.kill();
            let out = server.wait_with_output().unwrap();
            panic!("the server never got an address: {st}\nctr: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(server_ip.starts_with("10.0.0."), "{server_ip}");
    let script = format!("ip -4 -o addr show dev eth0 && ping -c 1 -W 2 {server_ip}");
    let out =
        ctrd.ctr(&node.name, &["run", "--rm", "--cni", "--rootfs", &rootfs, "e2e-client", "/bin/sh", "-c", &script]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "client: {text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("inet 10.0.0."), "{text}");
    assert!(text.contains("1 packets received"), "{text}");
    // When the server ends, ctr runs DEL: its address and veth go.
    assert!(server.wait().unwrap().success());
    let st = introspect(&node.socket);
    assert_eq!(st["pods"].as_array().unwrap().len(), 0, "every address released: {st}");
    // The runtime deletes the pod's namespace after DEL; its veth goes with it.
    let t0 = std::time::Instant::now();
    while sh(&["ip", "-n", &node.name, "-o", "link", "show"]).contains("eni") {
        let links = sh(&["ip", "-n", &node.name, "-o", "link", "show"]);
        assert!(t0.elapsed() < Duration::from_secs(5), "no veth left: {links}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!sh(&["ip", "-n", &node.name, "rule", "show"]).contains("10.0.0."));
}

struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(CONFLIST);
        let _ = std::fs::remove_file(PLUGIN);
    }
}
