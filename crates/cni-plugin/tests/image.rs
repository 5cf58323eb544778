//! The node image, built and run: buildah makes an image `FROM scratch` of deploy/Dockerfile's
//! final-stage layout from this run's binaries (podipd and podip-cni at `/`, nft and ip with the
//! libraries they load, the CA bundle), containerd runs it. The init step installs the plugin
//! into a directory; the daemon, in a network namespace of the test's with the simulated VPC on
//! that namespace's loopback, boots through the AWS SDK, programs the namespace's SNAT with the
//! image's own nft, writes the CNI configuration, and answers the readiness probe run inside the
//! container. Needs root, containerd and buildah; skips without, unless REQUIRE_PRIVILEGED=1.
#![allow(clippy::disallowed_methods)] // Drives real processes: waits in wall time.

mod common;

use common::{Containerd, privileged, sh, tools_present};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn buildah_present() -> bool {
    let have = Command::new("buildah").arg("--version").output().is_ok_and(|o| o.status.success());
    let required = std::env::var("REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1");
    assert!(have || !required, "REQUIRE_PRIVILEGED=1 but buildah is missing; run ./scripts/test");
    if !have {
        eprintln!("skipping: buildah missing");
    }
    have
}

fn which(tool: &str) -> PathBuf {
    let out = sh(&["sh", "-c", &format!("command -v {tool}")]);
    std::fs::canonicalize(out.trim()).unwrap()
}

/// Copies `bin` to `at` under `root`, and every library `ldd` says it loads to its own path.
fn install(root: &Path, bin: &Path, at: &str) {
    let dest = root.join(at.trim_start_matches('/'));
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::copy(bin, &dest).unwrap();
    for line in sh(&["ldd", bin.to_str().unwrap()]).lines() {
        let Some(lib) = line.split_whitespace().find(|w| w.starts_with('/')) else { continue };
        let to = root.join(lib.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(std::fs::canonicalize(lib).unwrap(), &to).unwrap();
    }
}

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// The final stage of deploy/Dockerfile: what it installs and copies, and its entry point.
fn dockerfile_final_stage() -> String {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/Dockerfile")).unwrap();
    text.rsplit("\nFROM ").next().unwrap().to_string()
}

#[test]
fn the_node_image_installs_the_plugin_and_serves_a_node_under_containerd() {
    if !privileged() || !tools_present() || !buildah_present() {
        return;
    }
    // The layout tested is the Dockerfile's.
    let stage = dockerfile_final_stage();
    for needed in [
        "nftables",
        "iproute2",
        "ca-certificates",
        "/podipd /src/target/release/podip-cni /",
        "ENTRYPOINT [\"/podipd\"]",
    ] {
        assert!(stage.contains(needed), "deploy/Dockerfile's final stage lacks {needed:?}:\n{stage}");
    }
    let dir = std::env::temp_dir().join(format!("podip-image-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let storage = ["--storage-driver", "vfs", "--root"];
    let root_arg = dir.join("storage");
    let runroot = dir.join("runroot");
    let buildah = |args: &[&str]| -> String {
        let out = Command::new("buildah")
            .args(storage)
            .arg(&root_arg)
            .arg("--runroot")
            .arg(&runroot)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "buildah {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let ctr_id = buildah(&["from", "scratch"]);
    let mnt = PathBuf::from(buildah(&["mount", &ctr_id]));
    install(&mnt, &common::podipd_bin(), "/podipd");
    install(&mnt, &common::plugin_bin(), "/podip-cni");
    install(&mnt, &which("nft"), "/usr/sbin/nft");
    install(&mnt, &which("ip"), "/usr/sbin/ip");
    std::fs::create_dir_all(mnt.join("etc/ssl/certs")).unwrap();
    std::fs::copy("/etc/ssl/certs/ca-certificates.crt", mnt.join("etc/ssl/certs/ca-certificates.crt")).unwrap();
    buildah(&["config", "--entrypoint", "[\"/podipd\"]", &ctr_id]);
    buildah(&["commit", "--quiet", &ctr_id, "podip:e2e"]);
    let archive = dir.join("podip.tar");
    buildah(&["push", "--quiet", "podip:e2e", &format!("oci-archive:{}:podip:e2e", archive.display())]);
    buildah(&["rm", &ctr_id]);

    let ctrd = Containerd::start(&dir);
    let ctr = |args: &[&str]| -> std::process::Output {
        Command::new("ctr").arg("--address").arg(&ctrd.address).args(args).output().unwrap()
    };
    let ok = |o: std::process::Output, what: &str| -> String {
        assert!(
            o.status.success(),
            "{what}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    ok(ctr(&["images", "import", archive.to_str().unwrap()]), "import");

    // The init container's step.
    let bin = dir.join("opt-cni-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let mount = |src: &Path, dst: &str| format!("type=bind,src={},dst={dst},options=rbind:rw", src.display());
    let out = ok(
        ctr(&[
            "run",
            "--rm",
            "--mount",
            &mount(&bin, "/host/opt/cni/bin"),
            "podip:e2e",
            "podip-init",
            "/podipd",
            "install-cni",
            "--to",
            "/host/opt/cni/bin",
        ]),
        "install-cni",
    );
    assert!(out.contains("installed"), "{out}");
    assert_eq!(std::fs::read(bin.join("podip-cni")).unwrap(), std::fs::read(common::plugin_bin()).unwrap());

    // The daemon, on a node namespace whose loopback serves the simulated VPC.
    let ns = Netns(format!("podip-img{}", std::process::id()));
    sh(&["ip", "netns", "add", &ns.0]);
    sh(&["ip", "-n", &ns.0, "link", "set", "lo", "up"]);
    let podip = common::podipd_bin().with_file_name("podip");
    let mut sim = Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(&podip)
        .args([
            "sim-vpc",
            "--latency-scale",
            "0",
            "--vpc-cidr",
            "10.0.0.0/16",
            "--subnet",
            "us-east-1a=10.0.0.0/24",
            "--instance",
            "m5.large",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(sim.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let ready: serde_json::Value = serde_json::from_str(&line).unwrap();
    let (run, netd) = (dir.join("run"), dir.join("net.d"));
    for d in [&run, &netd] {
        std::fs::create_dir_all(d).unwrap();
    }
    let env = [
        format!("AWS_ENDPOINT_URL_EC2={}", ready["ec2"].as_str().unwrap()),
        format!("AWS_EC2_METADATA_SERVICE_ENDPOINT={}", ready["instances"][0]["imds"].as_str().unwrap()),
        "PODIP_PRIMARY_IF=lo".to_string(),
        "PODIP_CNI_CONFLIST=/host/etc/cni/net.d/05-podip.conflist".to_string(),
    ];
    let netns_arg = format!("network:/var/run/netns/{}", ns.0);
    let (m1, m2) = (mount(&run, "/run/podip"), mount(&netd, "/host/etc/cni/net.d"));
    let mut args: Vec<&str> =
        vec!["run", "-d", "--with-ns", &netns_arg, "--cap-add", "CAP_NET_ADMIN", "--cap-add", "CAP_NET_RAW"];
    for e in &env {
        args.extend(["--env", e]);
    }
    args.extend(["--mount", &m1, "--mount", &m2, "podip:e2e", "podip-daemon", "/podipd"]);
    ok(ctr(&args), "run the daemon");
    let conflist = netd.join("05-podip.conflist");
    let t0 = Instant::now();
    while !conflist.exists() {
        let tasks = String::from_utf8_lossy(&ctr(&["task", "ls"]).stdout).into_owned();
        assert!(
            t0.elapsed() < Duration::from_secs(30) && !tasks.contains("STOPPED"),
            "the daemon did not serve: {tasks}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The readiness probe, as the kubelet runs it: inside the container.
    let probe = ctr(&["task", "exec", "--exec-id", "probe", "podip-daemon", "/podipd", "health"]);
    let said = ok(probe, "the readiness probe");
    assert!(said.starts_with("ready"), "{said}");
    // The image's nft programmed the node namespace's SNAT.
    let rules = sh(&["ip", "netns", "exec", &ns.0, "nft", "list", "ruleset"]);
    assert!(rules.contains("podip"), "no SNAT table: {rules}");
    let list: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&conflist).unwrap()).unwrap();
    assert_eq!(list["plugins"][0]["socket"], "/run/podip/podipd.sock");

    let _ = ctr(&["task", "kill", "-s", "KILL", "podip-daemon"]);
    std::thread::sleep(Duration::from_millis(500));
    let _ = ctr(&["task", "rm", "-f", "podip-daemon"]);
    let _ = ctr(&["container", "rm", "podip-daemon"]);
    let _ = sim.kill();
    let _ = sim.wait();
    drop(ctrd);
    let _ = Command::new("buildah")
        .args(storage)
        .arg(&root_arg)
        .arg("--runroot")
        .arg(&runroot)
        .args(["rmi", "--all", "--force"])
        .output();
    let _ = std::fs::remove_dir_all(&dir);
}
