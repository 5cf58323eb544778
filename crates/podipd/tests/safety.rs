//! podipd's safety windows that need no privileges, each forced: two daemons at once, hostile
//! paths and settings, floods on both listeners, checkpoints of other versions or unreadable,
//! a step of the wall clock, and a checkpoint write that never ends.
#![allow(clippy::disallowed_methods)] // Drives real processes: waits in wall time.

mod common;

use common::{World, add, attach, introspect, request};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn status_of(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_second_daemon_says_who_holds_the_node_and_touches_nothing() {
    let mut w = World::new("twice");
    w.start(&[]);
    let a = add(&w.sock(), "t1");
    let first = w.daemon.as_ref().unwrap().id();
    let other_sock = w.dir.join("other.sock");
    let out = w.command(&[("PODIP_SOCKET", other_sock.to_str().unwrap())]).stderr(Stdio::piped()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("another podipd (pid {first})")), "{err}");
    assert!(!other_sock.exists(), "the second daemon bound nothing");
    // The first one still serves, with its state.
    let r = request(&w.sock(), &attach("check", "t1")).unwrap();
    assert_eq!(r["ok"]["addr"].as_str(), Some(a.as_str()), "{r}");
}

#[test]
fn a_socket_path_that_is_not_a_socket_is_never_removed() {
    let mut w = World::new("notsock");
    let precious = w.dir.join("precious.txt");
    std::fs::write(&precious, b"keep me").unwrap();
    let out = w.command(&[("PODIP_SOCKET", precious.to_str().unwrap())]).stderr(Stdio::piped()).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "refused as a setting, before anything is touched");
    assert!(!w.dir.join("state").exists(), "nothing was made");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a socket"), "{out:?}");
    assert_eq!(std::fs::read(&precious).unwrap(), b"keep me");
    w.daemon = None;
}

#[test]
fn both_listeners_are_bounded() {
    let mut w = World::new("bounded");
    w.start(&[]);
    let pid = w.daemon.as_ref().unwrap().id();
    let sock = w.sock();
    // An idle TCP connection does not block /metrics.
    let idle = std::net::TcpStream::connect(w.metrics_addr());
    let t0 = Instant::now();
    let text = http_get(&w.metrics_addr(), "/metrics");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(t0.elapsed() < Duration::from_secs(3), "metrics waited for an idle client");
    drop(idle);
    // A head that never ends is cut at 16 KiB; podipd does not grow.
    let rss0 = status_of(pid, "VmRSS:");
    let mut s = std::net::TcpStream::connect(w.metrics_addr()).unwrap();
    let chunk = vec![b'a'; 1 << 20];
    let mut sent = 0;
    for _ in 0..64 {
        match s.write_all(&chunk) {
            Ok(()) => sent += chunk.len(),
            Err(_) => break,
        }
    }
    assert!(sent < 64 << 20, "the endpoint kept reading a 64 MiB header line");
    // The plugin socket: a line without newline is cut at the cap and answered.
    let mut c = UnixStream::connect(&sock).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let big = vec![b'x'; agent::daemon::MAX_REQUEST + 10];
    let _ = c.write_all(&big);
    let mut line = String::new();
    BufReader::new(&c).read_line(&mut line).unwrap();
    assert!(line.contains("bad_request") && line.contains("longer than"), "{line}");
    // A 50 MB network name is refused, not stored.
    let mut req = attach("add", "n1");
    req["network"] = json!("n".repeat(50_000));
    let r = request(&sock, &req).unwrap();
    assert_eq!(r["error"], "bad_request", "{r}");
    assert!(r["message"].as_str().unwrap().starts_with("network="), "{r}");
    // Two hundred idle connections: the worker pool stays bounded, and once they go, ADD works.
    let idle: Vec<UnixStream> = (0..200).filter_map(|_| UnixStream::connect(&sock).ok()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let threads = status_of(pid, "Threads:");
    assert!(threads < 40, "{threads} threads for 200 idle connections");
    drop(idle);
    add(&sock, "after-flood");
    let rss1 = status_of(pid, "VmRSS:");
    assert!(rss1 < rss0 + 64 * 1024, "podipd grew from {rss0} kB to {rss1} kB");
}

#[test]
fn checkpoints_of_other_versions_or_unreadable_stop_the_start_and_stay_untouched() {
    let mut w = World::new("versions");
    w.start(&[]);
    add(&w.sock(), "v1");
    w.kill();
    let cp = w.dir.join("state/ipam.json");
    let newer = br#"{"version":"podip-ipam/9","allocations":[],"future":true}"#;
    std::fs::write(&cp, newer).unwrap();
    let out = w.command(&[]).stderr(Stdio::piped()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("podip-ipam/9") && err.contains("this build reads"), "{err}");
    assert_eq!(std::fs::read(&cp).unwrap(), newer, "left untouched");
    // A file that cannot be read as a checkpoint (larger than any could be) is not corruption:
    // retried, reported, nothing moved.
    std::fs::remove_file(&cp).unwrap();
    std::fs::File::create(&cp).unwrap().set_len(agent::checkpoint::MAX_STATE_FILE + 1).unwrap();
    let out = w.command(&[]).stderr(Stdio::piped()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ipam.json") && err.contains("more than"), "{err}");
    assert_eq!(std::fs::metadata(&cp).unwrap().len(), agent::checkpoint::MAX_STATE_FILE + 1);
    let aside = std::fs::read_dir(w.dir.join("state")).unwrap().filter_map(Result::ok);
    assert!(!aside.into_iter().any(|e| e.file_name().to_string_lossy().contains("corrupt")));
    // A version-1 checkpoint migrates: its assignment and its cooldown survive.
    std::fs::remove_file(&cp).unwrap();
    let st_addr = "10.0.0.9";
    let v1 = format!(
        r#"{{"version":"podip-ipam/1","allocations":[],"cooling":[{{"ip":"{st_addr}","untilMs":{}}}]}}"#,
        common::wall().as_millis() + 60_000
    );
    std::fs::write(&cp, v1).unwrap();
    w.start(&[]);
    let back: Value = serde_json::from_slice(&std::fs::read(&cp).unwrap()).unwrap();
    assert_eq!(back["version"], "podip-ipam/2");
}

/// Whether `faketime` (libfaketime) is here; REQUIRE_PRIVILEGED=1 (CI) requires it.
fn faketime() -> bool {
    let ok = std::process::Command::new("faketime").arg("--version").output().is_ok_and(|o| o.status.success());
    let required = std::env::var("REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1");
    assert!(ok || !required, "faketime is missing; run ./scripts/test");
    ok
}

#[test]
fn a_step_of_the_wall_clock_does_not_shorten_a_cooldown() {
    if !faketime() {
        eprintln!("skipping: needs faketime");
        return;
    }
    let mut w = World::new("clock");
    w.start(&[("IP_COOLDOWN_PERIOD", "60")]);
    let a = add(&w.sock(), "c1");
    request(&w.sock(), &attach("del", "c1")).unwrap();
    assert_eq!(introspect(&w.sock())["cooling"], 1);
    w.kill();
    // The same node after an NTP step of two hours forward; the boot clock did not move.
    let mut c = w.command(&[("IP_COOLDOWN_PERIOD", "60"), ("FAKETIME", "+2h"), ("DONT_FAKE_MONOTONIC", "1")]);
    let lib =
        ["/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1", "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("libfaketime.so.1");
    c.env("LD_PRELOAD", lib);
    // The step is real for a process under it: its wall clock is two hours ahead.
    let faked = std::process::Command::new("date")
        .arg("+%s")
        .env("LD_PRELOAD", lib)
        .env("FAKETIME", "+2h")
        .env("DONT_FAKE_MONOTONIC", "1")
        .output()
        .unwrap();
    let ahead =
        String::from_utf8_lossy(&faked.stdout).trim().parse::<u64>().unwrap() - common::wall().as_millis() / 1000;
    assert!((7100..7300).contains(&ahead), "faketime moved the wall clock by {ahead} s");
    let _ = std::fs::remove_file(w.sock());
    w.daemon = Some(c.spawn().unwrap());
    let t0 = Instant::now();
    while UnixStream::connect(w.sock()).is_err() {
        assert!(t0.elapsed() < Duration::from_secs(20), "podipd did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
    let st = introspect(&w.sock());
    assert_eq!(st["cooling"], 1, "the cooldown survived the clock step: {st}");
    for i in 0..6 {
        let b = add(&w.sock(), &format!("n{i}"));
        assert_ne!(a, b, "a cooling address went to a new pod");
    }
}

fn http_get(addr: &str, path: &str) -> String {
    let t0 = Instant::now();
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(addr) {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).unwrap();
            let mut body = String::new();
            let _ = s.read_to_string(&mut body);
            return body;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "no metrics endpoint at {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_checkpoint_write_that_never_ends_stalls_no_other_request() {
    use agent::protocol::{Attach, Op, Request};
    let w = World::new("slowdisk");
    let vars = [
        ("AWS_EC2_ENDPOINT", w.ep.url()),
        ("PODIP_SOCKET", w.sock().display().to_string()),
        ("PODIP_CHECKPOINT", w.dir.join("state/ipam.json").display().to_string()),
        ("PODIP_PROGRAM_NODE", "false".to_string()),
    ];
    let cfg = agent::config::DaemonConfig::load(None, |k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone()))
        .unwrap();
    let (d, rx, ec2) = agent::daemon::Daemon::boot(cfg, &w.metadata()).unwrap();
    let d2 = std::sync::Arc::clone(&d);
    std::thread::spawn(move || d2.run_cloud(rx, ec2));
    let d2 = std::sync::Arc::clone(&d);
    std::thread::spawn(move || d2.run_ticks());
    let t0 = Instant::now();
    while serde_json::to_string(&d.handle(Request { v: 1, op: Op::Status })).unwrap().contains("\"available\":0") {
        assert!(t0.elapsed() < Duration::from_secs(20), "the pool never filled");
        std::thread::sleep(Duration::from_millis(100));
    }
    let add = |cid: &str| Request {
        v: 1,
        op: Op::Add(Attach {
            network: "podip".into(),
            container_id: cid.into(),
            ifname: "eth0".into(),
            netns: None,
            pod_namespace: None,
            pod_name: None,
            release_only: None,
            scrub_rules: false,
        }),
    };
    // The checkpoint writer is not running: every write "takes forever". An ADD waits for it,
    // without holding the pool.
    let (tx, done) = std::sync::mpsc::channel();
    let d3 = std::sync::Arc::clone(&d);
    std::thread::spawn(move || {
        let r = d3.handle(add("slow"));
        let _ = tx.send(r);
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(done.try_recv().is_err(), "an ADD was acknowledged before its checkpoint was written");
    let t0 = Instant::now();
    let s = d.handle(Request { v: 1, op: Op::Status });
    let i = d.handle(Request { v: 1, op: Op::Introspect });
    assert!(t0.elapsed() < Duration::from_secs(1), "STATUS and introspection waited for the disk");
    assert!(serde_json::to_string(&s).unwrap().contains("status"), "{s:?}");
    assert!(serde_json::to_string(&i).unwrap().contains("\"assigned\":1"), "{i:?}");
    // The disk comes back: the ADD is acknowledged.
    let d4 = std::sync::Arc::clone(&d);
    std::thread::spawn(move || d4.run_commits());
    let r = done.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(serde_json::to_string(&r).unwrap().contains("\"kind\":\"lease\""), "{r:?}");
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn out_of_file_descriptors_the_daemon_waits_instead_of_spinning() {
    let mut w = World::new("nofile");
    let _ = std::fs::remove_file(w.sock());
    w.daemon = Some(w.command_via(&["prlimit", "--nofile=64:64", "--"], &[]).spawn().unwrap());
    let t0 = Instant::now();
    while UnixStream::connect(w.sock()).is_err() {
        assert!(t0.elapsed() < Duration::from_secs(20), "podipd did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
    add(&w.sock(), "before");
    let pid = w.daemon.as_ref().unwrap().id();
    // Idle connections: first enough to occupy every worker, then more than the daemon has
    // descriptors for, which wait in its queue and in the kernel's backlog.
    let mut held: Vec<UnixStream> = (0..20).filter_map(|_| UnixStream::connect(w.sock()).ok()).collect();
    std::thread::sleep(Duration::from_millis(300));
    held.extend((0..120).filter_map(|_| UnixStream::connect(w.sock()).ok()));
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(pid) - before;
    // 2 s of wall time is 200 ticks at 100 Hz: a spinning accept loop burns most of them.
    assert!(used < 40, "podipd used {used} ticks of CPU in 2 s while out of descriptors");
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    let r = request(&w.sock(), &attach("check", "before")).unwrap();
    assert!(r["ok"]["addr"].is_string(), "the daemon serves again: {r}");
}

#[test]
fn state_paths_and_namespaces_of_the_wrong_kind_are_refused_before_anything_is_touched() {
    let w = World::new("kinds");
    let fifo = w.dir.join("fifo.json");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let zero = w.dir.join("zero.json");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let cases = [
        ("PODIP_CHECKPOINT", fifo.display().to_string(), "not a regular file"),
        ("PODIP_CHECKPOINT", zero.display().to_string(), "not a regular file"),
        ("PODIP_CHECKPOINT", "/ipam.json".to_string(), "directory of its own"),
        ("PODIP_CHECKPOINT", "/".to_string(), "directory of its own"),
        ("PODIP_NODE_NETNS", "/dev/zero".to_string(), "not a namespace file"),
        ("PODIP_SOCKET", w.dir.display().to_string(), "not a socket"),
    ];
    for (var, value, needle) in cases {
        let t0 = Instant::now();
        let out = w.command(&[(var, value.as_str())]).stderr(Stdio::piped()).output().unwrap();
        assert!(t0.elapsed() < Duration::from_secs(5), "{var}={value}: podipd hung");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {err}");
        assert!(err.contains(var) && err.contains(needle), "{var}={value}: {err}");
    }
    assert!(!w.dir.join("state").exists(), "nothing was made");
    assert!(!std::path::Path::new("/podipd.lock").exists() && !std::path::Path::new("/node.json").exists());
}
