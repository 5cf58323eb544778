//! `podipd`, the node daemon: validates its whole configuration before touching anything, boots
//! the node from the instance metadata service and EC2 (through the AWS SDK), then serves the
//! plugin protocol and writes the node's CNI configuration. Exit codes: 2 for a bad
//! configuration (every bad value named), 1 for a failed start.
//!
//! Two helpers for the DaemonSet share the binary: `podipd health` (the probes) and
//! `podipd install-cni` (the init container).

use agent::config::DaemonConfig;
use agent::daemon::Daemon;
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// The podip node daemon. Settings come from aws-node's environment variables (WARM_ENI_TARGET,
/// WARM_IP_TARGET, ...; see docs/daemon.md) and an optional TOML file with the same names.
#[derive(Debug, Parser)]
#[command(name = "podipd", version)]
struct Args {
    /// TOML file with the settings (the environment wins).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Helper>,
}

#[derive(Debug, clap::Subcommand)]
enum Helper {
    /// Asks the running daemon for its status: exit 0 when it can start pods (with --live, when
    /// it answers at all), 1 otherwise. For the DaemonSet's readiness and liveness probes.
    Health {
        /// The daemon's socket.
        #[arg(long, env = "PODIP_SOCKET", default_value = "/run/podip/podipd.sock")]
        socket: PathBuf,
        /// The CNI configuration the daemon writes once serving: not ready until it is there.
        #[arg(long, env = "PODIP_CNI_CONFLIST")]
        conflist: Option<PathBuf>,
        /// Only whether the daemon answers (liveness), not whether the node can start pods.
        #[arg(long)]
        live: bool,
    },
    /// Installs the plugin binary into the node's CNI directory (atomically: a reader never
    /// sees half a binary). For the DaemonSet's init container.
    InstallCni {
        /// The node's CNI binary directory (mounted from the host).
        #[arg(long, value_name = "DIR", default_value = "/host/opt/cni/bin")]
        to: PathBuf,
        /// The plugin to install (default: podip-cni beside this binary).
        #[arg(long, value_name = "FILE")]
        from: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    match args.command {
        Some(Helper::Health { socket, conflist, live }) => {
            return health(&socket, conflist.filter(|c| !c.as_os_str().is_empty()).as_deref(), live);
        }
        Some(Helper::InstallCni { to, from }) => return install_cni(&to, from),
        None => {}
    }
    let file = match &args.config {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("podipd: error: {}: {e}", p.display());
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let vars: Vec<(String, String)> = std::env::vars_os()
        .map(|(k, v)| (k.to_string_lossy().into_owned(), v.to_string_lossy().into_owned()))
        .collect();
    // Every bad setting at once: the environment's aws-node variables and the values read.
    let env = DaemonConfig::check_environment(&vars);
    let cfg = DaemonConfig::load(file.as_deref(), |k| std::env::var(k).ok()).and_then(|c| c.check_host().map(|()| c));
    let (env_notes, cfg) = match (env, cfg) {
        (Ok(n), Ok(c)) => (n, c),
        (env, cfg) => {
            let mut bad = env.err().map(|e| e.0).unwrap_or_default();
            bad.extend(cfg.err().map(|e| e.0).unwrap_or_default());
            eprintln!("podipd: error: {}", agent::config::ConfigError(bad));
            return ExitCode::from(2);
        }
    };
    for n in env_notes {
        eprintln!("podipd: {n}");
    }
    // One TLS crypto provider for the whole process (the SDK and the Kubernetes client).
    aws::install_crypto_provider();
    // The cloud may be starting or briefly gone: keep trying with a growing back-off (the
    // plugin's STATUS fails meanwhile, as nothing is served). Anything else stops the start.
    let metadata = aws::metadata::Metadata::new();
    let mut delay = Duration::from_millis(100);
    let (daemon, rx, ec2) = loop {
        match Daemon::boot(cfg.clone(), &metadata) {
            Ok(b) => break b,
            Err(e @ agent::daemon::DaemonError::Unreachable(_)) => {
                eprintln!("podipd: {e}; retrying in {delay:?}");
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(30));
            }
            Err(e) => {
                eprintln!("podipd: error: {e}");
                return ExitCode::from(1);
            }
        }
    };
    for n in &daemon.startup_notes {
        eprintln!("podipd: {n}");
    }
    let d = Arc::clone(&daemon);
    std::thread::spawn(move || d.run_commits());
    let d = Arc::clone(&daemon);
    std::thread::spawn(move || d.run_sweeps());
    let d = Arc::clone(&daemon);
    std::thread::spawn(move || d.run_cloud(rx, ec2));
    let d = Arc::clone(&daemon);
    std::thread::spawn(move || d.run_ticks());
    let d = Arc::clone(&daemon);
    let every = cfg.metadata_every;
    std::thread::spawn(move || d.run_metadata(every));
    let d = Arc::clone(&daemon);
    std::thread::spawn(move || {
        if let Err(e) = d.serve_http() {
            eprintln!("podipd: metrics endpoint: {e}");
        }
    });
    let conflist = cfg.cni_conflist.clone();
    let socket = cfg.socket.clone();
    let listening = move || {
        eprintln!("podipd: serving on {}", socket.display());
        // Only now may kubelet schedule pods here: the plugin's configuration appears. A write
        // that fails is retried (the readiness probe fails meanwhile).
        if let Some(path) = conflist {
            std::thread::spawn(move || {
                let mut failures = 0u32;
                loop {
                    match agent::cniconf::write(&path, &socket) {
                        Ok(()) => {
                            eprintln!("podipd: wrote {}", path.display());
                            return;
                        }
                        Err(e) => {
                            if failures.is_multiple_of(12) {
                                eprintln!("podipd: error: {}: {e}; retrying every 5 s", path.display());
                            }
                            failures += 1;
                            std::thread::sleep(Duration::from_secs(5));
                        }
                    }
                }
            });
        }
    };
    match daemon.serve(listening) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("podipd: error: {e}");
            ExitCode::from(1)
        }
    }
}

/// `podipd health`: one STATUS request over the socket, with short timeouts and a bounded reply.
fn health(socket: &std::path::Path, conflist: Option<&std::path::Path>, live: bool) -> ExitCode {
    use std::io::{BufRead, BufReader, Read, Write};
    let answer = (|| -> std::io::Result<serde_json::Value> {
        let mut s = std::os::unix::net::UnixStream::connect(socket)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.set_write_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"{\"v\":1,\"op\":\"status\"}\n")?;
        let mut line = String::new();
        BufReader::new(s.take(64 * 1024)).read_line(&mut line)?;
        serde_json::from_str(&line).map_err(std::io::Error::other)
    })();
    match answer {
        Ok(v) if live && v.get("ok").is_some() => ExitCode::SUCCESS,
        Ok(v) if v["ok"]["readiness"] == "ready" && conflist.is_some_and(|c| !agent::cniconf::written(c, socket)) => {
            println!("not ready: {} is not written yet", conflist.map(|c| c.display().to_string()).unwrap_or_default());
            ExitCode::from(1)
        }
        Ok(v) if v["ok"]["readiness"] == "ready" => {
            println!("ready: {} addresses available", v["ok"]["available"]);
            ExitCode::SUCCESS
        }
        Ok(v) => {
            println!("not ready: {v}");
            ExitCode::from(1)
        }
        Err(e) => {
            println!("podipd does not answer on {}: {e}", socket.display());
            ExitCode::from(1)
        }
    }
}

/// `podipd install-cni`: copies the plugin beside a temporary name in `to`, then renames it in.
fn install_cni(to: &std::path::Path, from: Option<PathBuf>) -> ExitCode {
    use std::os::unix::fs::PermissionsExt;
    let from = from.unwrap_or_else(|| {
        std::env::current_exe().ok().and_then(|e| e.parent().map(|d| d.join("podip-cni"))).unwrap_or_default()
    });
    let target = to.join("podip-cni");
    let tmp = to.join(".podip-cni.tmp");
    match std::fs::metadata(&from) {
        Ok(m) if m.is_file() && m.len() > 0 => {}
        Ok(_) => {
            eprintln!("podipd: error: {}: not a plugin binary (a regular, non-empty file)", from.display());
            return ExitCode::from(1);
        }
        Err(e) => {
            eprintln!("podipd: error: {}: {e}", from.display());
            return ExitCode::from(1);
        }
    }
    // The temporary file is made anew (a link planted there is replaced, never followed).
    let r = std::fs::File::open(&from)
        .and_then(|mut src| {
            let mut dst = agent::cniconf::create_fresh(&tmp)?;
            std::io::copy(&mut src, &mut dst)?;
            dst.sync_all()
        })
        .and_then(|()| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)))
        .and_then(|()| std::fs::rename(&tmp, &target));
    match r {
        Ok(()) => {
            println!("installed {} as {}", from.display(), target.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            eprintln!("podipd: error: installing {} into {}: {e}", from.display(), to.display());
            ExitCode::from(1)
        }
    }
}
