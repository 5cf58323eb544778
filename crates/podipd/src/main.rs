//! `podipd`, the node daemon: validates its whole configuration before touching anything, boots
//! the node from the instance metadata service and EC2 (through the AWS SDK), then serves the plugin protocol. Exit codes: 2 for a bad
//! configuration (every bad value named), 1 for a failed start.

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
}

fn main() -> ExitCode {
    let args = Args::parse();
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
    std::thread::spawn(move || {
        if let Err(e) = d.serve_http() {
            eprintln!("podipd: metrics endpoint: {e}");
        }
    });
    eprintln!("podipd: serving on {}", cfg.socket.display());
    match daemon.serve() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("podipd: error: {e}");
            ExitCode::from(1)
        }
    }
}
