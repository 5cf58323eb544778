//! `podip frag`: a subnet's /28 fragmentation, from a CIDR and a list of used addresses, or from
//! AWS CLI exports.

use super::table;
use crate::fail::Failure;
use ipnet::Ipv4Net;
use planner::frag::{FragInput, FragReport, analyse, parse_reservation, parse_used};
use planner::import::AwsExports;

/// Arguments of `podip frag`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The subnet's CIDR.
    #[arg(long, value_name = "CIDR", conflicts_with = "subnet_id")]
    pub subnet: Option<Ipv4Net>,
    /// File of used addresses, one per line (`#` comments allowed).
    #[arg(long, value_name = "FILE", requires = "subnet")]
    pub used: Option<String>,
    /// A subnet CIDR reservation, CIDR:prefix or CIDR:explicit (repeatable).
    #[arg(long, value_name = "CIDR:TYPE")]
    pub reservation: Vec<String>,
    /// With AWS exports: the subnet to analyse.
    #[arg(long, value_name = "ID", requires = "subnets")]
    pub subnet_id: Option<String>,
    /// `aws ec2 describe-subnets` output.
    #[arg(long, value_name = "FILE")]
    pub subnets: Option<String>,
    /// `aws ec2 describe-network-interfaces` output.
    #[arg(long, value_name = "FILE")]
    pub network_interfaces: Option<String>,
    /// `aws ec2 get-subnet-cidr-reservations` output.
    #[arg(long, value_name = "FILE")]
    pub reservations: Option<String>,
    /// Suggest the reservation that secures N prefixes.
    #[arg(long, value_name = "N")]
    pub prefixes: Option<u32>,
    /// Addresses the reservations must leave EC2 to auto-assign (new nodes' and ENIs' primary
    /// addresses never come from a prefix reservation).
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub keep_free: u32,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

fn read(path: &str) -> Result<String, Failure> {
    std::fs::read_to_string(path).map_err(|e| Failure::input(format!("{path}: {e}")))
}

fn gather(a: &Args) -> Result<FragInput, Failure> {
    let mut input = FragInput { want_prefixes: a.prefixes, keep_free: a.keep_free, ..FragInput::default() };
    let mut errors = Vec::new();
    for r in &a.reservation {
        match parse_reservation(r) {
            Ok(r) => input.reservations.push(r),
            Err(e) => errors.push(e),
        }
    }
    if let Some(cidr) = a.subnet {
        input.subnet = Some(cidr);
        if let Some(f) = &a.used {
            match parse_used(f, &read(f)?) {
                Ok(u) => input.used = u,
                Err(e) => errors.extend(e.0),
            }
        }
    } else if let Some(id) = &a.subnet_id {
        let mut x = AwsExports::default();
        let subnets = a.subnets.as_deref().unwrap_or_default();
        x.add_subnets(subnets, &read(subnets)?).map_err(Failure::input)?;
        if let Some(f) = &a.network_interfaces {
            x.add_network_interfaces(f, &read(f)?).map_err(Failure::input)?;
        }
        if let Some(f) = &a.reservations {
            x.add_reservations(f, &read(f)?).map_err(Failure::input)?;
        }
        let Some(s) = x.subnets.iter().find(|s| &s.subnet_id == id) else {
            return Err(Failure::input(format!("--subnet-id {id}: not in {subnets}")));
        };
        input.subnet = Some(s.cidr_block);
        input.subnet_id = Some(id.clone());
        if let Some(u) = x.usage().remove(id) {
            input.used = u.addresses.iter().map(|ip| (*ip, format!("ENI address {ip}"))).collect();
            input.used_prefixes = u.prefixes.iter().map(|p| (*p, format!("ENI prefix {p}"))).collect();
            input.reservations.extend(u.reservations);
        }
    } else {
        errors.push("give --subnet CIDR [--used FILE], or --subnet-id ID --subnets FILE [--network-interfaces FILE] [--reservations FILE]".into());
    }
    if errors.is_empty() { Ok(input) } else { Err(Failure::input(errors.join("; "))) }
}

/// Runs `podip frag`.
pub fn run(a: &Args) -> Result<(), Failure> {
    let input = gather(a)?;
    let report = analyse(&input).map_err(Failure::input)?;
    if a.json {
        return table::print_json(&report);
    }
    print(&report);
    Ok(())
}

fn print(r: &FragReport) {
    outln!("subnet {} ({} addresses, {} in use)", r.subnet, r.size, r.used);
    let t = table::kv(&[
        ("free addresses", format!("{} (EC2 can still auto-assign)", r.free_ips)),
        ("free /28 prefixes", format!("{} (aligned and wholly free)", r.free_prefixes)),
        ("stranded addresses", format!("{} (free, but in no free /28)", r.stranded_ips)),
        ("fragmentation", format!("{:.1}% of free addresses stranded", r.fragmentation * 100.0)),
    ]);
    outln!("{t}");
    outln!("block map, one /28 per glyph (R reserved, # used, + partly used, X explicit, P prefix-reserved, . free):");
    for (i, row) in r.block_map.iter().enumerate() {
        let first = r.blocks[i * 16].cidr.network();
        outln!("  {first:<15} {row}");
    }
    if let Some(a) = &r.advice {
        if a.cidrs.is_empty() {
            outln!("{}", a.note.clone().unwrap_or_default());
        } else {
            let ranges: Vec<String> = a.cidrs.iter().map(ToString::to_string).collect();
            outln!("to secure {} prefixes, reserve {} (wholly free /28 blocks only):", a.prefixes, ranges.join(", "));
            for cmd in &a.commands {
                outln!("  {cmd}");
            }
        }
    }
}
