//! The `podip` command: parses arguments, runs one subcommand, maps errors to exit codes
//! (0 ok, 2 usage or invalid input, 1 other failures).

/// `println!` for the command's output: a reader that went away (`podip plan x | head -1`)
/// ends the program quietly with success, as a closed pipe should, instead of a panic.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::out::line(format_args!($($arg)*))
    };
}

mod cmd;
mod fail;
mod out;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Pod IPv4 address planning and management for Amazon EKS.
#[derive(Debug, Parser)]
#[command(name = "podip", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The five IPv4-scarcity strategies simulated on your cluster, side by side.
    Plan(cmd::plan::Args),
    /// Recommended kubelet max pods for an instance type (the EKS max-pods calculator).
    Maxpods(cmd::maxpods::Args),
    /// One node's settled warm pool for a pod count, simulated on the embedded VPC.
    Pool(cmd::pool::Args),
    /// Serve the simulated VPC as EC2 and its instance metadata (the cloud of podipd on a laptop).
    SimVpc(cmd::simvpc::Args),
    /// A subnet's /28 fragmentation: free addresses, free prefixes, block map, reservation advice.
    Frag(cmd::frag::Args),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let result = match cli.command {
        Command::Plan(a) => cmd::plan::run(&a),
        Command::Maxpods(a) => cmd::maxpods::run(&a),
        Command::Pool(a) => cmd::pool::run(&a),
        Command::Frag(a) => cmd::frag::run(&a),
        Command::SimVpc(a) => cmd::simvpc::run(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => f.report(),
    }
}
