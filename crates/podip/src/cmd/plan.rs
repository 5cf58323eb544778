//! `podip plan`: the five IPv4-scarcity strategies simulated on the user's cluster, side by side.

use super::table;
use crate::fail::Failure;
use indicatif::{ProgressBar, ProgressStyle};
use planner::html;
use planner::import::AwsExports;
use planner::plan::{PlanReport, run_plan};
use planner::scenario::Scenario;
use std::path::{Path, PathBuf};

/// Arguments of `podip plan`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Scenario file (TOML); see examples/.
    pub scenario: PathBuf,
    /// Print the report as JSON (schema `podip.plan/1`, docs/plan-json.md).
    #[arg(long)]
    pub json: bool,
    /// Also write the report as one self-contained HTML page.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Write the configuration to apply, one directory per variant.
    #[arg(long, value_name = "DIR")]
    pub emit: Option<PathBuf>,
    /// `aws ec2 describe-vpcs` output: the VPC's CIDRs.
    #[arg(long, value_name = "FILE")]
    pub vpcs: Option<PathBuf>,
    /// `aws ec2 describe-subnets` output: the subnets (replaces the scenario's).
    #[arg(long, value_name = "FILE")]
    pub subnets: Option<PathBuf>,
    /// `aws ec2 describe-network-interfaces` output: the addresses in use.
    #[arg(long, value_name = "FILE")]
    pub network_interfaces: Option<PathBuf>,
    /// `aws ec2 get-subnet-cidr-reservations` output.
    #[arg(long, value_name = "FILE")]
    pub reservations: Option<PathBuf>,
    /// Worker threads (default: the machine's cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Print the table at its full width (it is wrapped to the terminal, or to 120 columns when
    /// the output is not a terminal).
    #[arg(long)]
    pub wide: bool,
}

fn read(p: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(p).map_err(|e| Failure::input(format!("{}: {e}", p.display())))
}

fn exports(a: &Args) -> Result<Option<AwsExports>, Failure> {
    if a.subnets.is_none() && a.vpcs.is_none() && a.network_interfaces.is_none() && a.reservations.is_none() {
        return Ok(None);
    }
    let Some(subnets) = &a.subnets else {
        return Err(Failure::input("AWS exports need --subnets FILE (describe-subnets output)"));
    };
    let mut x = AwsExports::default();
    x.add_subnets(&subnets.display().to_string(), &read(subnets)?).map_err(Failure::input)?;
    if let Some(f) = &a.vpcs {
        x.add_vpcs(&f.display().to_string(), &read(f)?).map_err(Failure::input)?;
    }
    if let Some(f) = &a.network_interfaces {
        x.add_network_interfaces(&f.display().to_string(), &read(f)?).map_err(Failure::input)?;
    }
    if let Some(f) = &a.reservations {
        x.add_reservations(&f.display().to_string(), &read(f)?).map_err(Failure::input)?;
    }
    Ok(Some(x))
}

/// Runs `podip plan`.
pub fn run(a: &Args) -> Result<(), Failure> {
    let text = read(&a.scenario)?;
    let x = exports(a)?;
    let sc = Scenario::parse_with(&text, x.as_ref())
        .map_err(|e| Failure::input(format!("{}: {e}", a.scenario.display())))?;
    if a.threads == Some(0) {
        return Err(Failure::input("--threads 0: at least 1"));
    }
    let threads = a.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let bar = if a.quiet { ProgressBar::hidden() } else { ProgressBar::new(1000) };
    bar.set_style(
        ProgressStyle::with_template("{spinner} simulating {msg} [{bar:40}] {percent}% ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(sc.name.clone());
    // Checked before the run: a bad --emit directory is known at once.
    if let Some(dir) = &a.emit {
        if dir.exists() && !dir.is_dir() {
            return Err(Failure::input(format!("--emit {}: not a directory", dir.display())));
        }
        clear_emitted(dir)?;
    }
    let report = run_plan(&sc, threads, &|done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    if let Some(path) = &a.html {
        std::fs::write(path, html::render(&report))
            .map_err(|e| Failure::Other(anyhow::anyhow!("{}: {e}", path.display())))?;
    }
    if let Some(dir) = &a.emit {
        emit(dir, &report).map_err(|e| Failure::Other(anyhow::anyhow!("{}: {e}", dir.display())))?;
    }
    if a.json {
        return table::print_json(&report);
    }
    print(&report, a.wide);
    Ok(())
}

/// Marks a directory `--emit` wrote, listing the variant directories in it.
const EMIT_MARK: &str = ".podip-emit";

/// Clears what an earlier `--emit` wrote into `dir` (the variant directories its mark lists), so
/// no stale script is left beside the new ones; a directory with other contents is refused.
fn clear_emitted(dir: &Path) -> Result<(), Failure> {
    let Ok(mut entries) = std::fs::read_dir(dir) else { return Ok(()) };
    let mark = dir.join(EMIT_MARK);
    let Ok(listed) = std::fs::read_to_string(&mark) else {
        return if entries.next().is_none() {
            Ok(())
        } else {
            Err(Failure::input(format!(
                "--emit {}: not empty, and not written by podip plan --emit; give a new or empty directory",
                dir.display()
            )))
        };
    };
    for name in listed.lines().filter(|l| !l.is_empty() && !l.contains('/') && *l != "." && *l != "..") {
        let _ = std::fs::remove_dir_all(dir.join(name));
    }
    std::fs::remove_file(&mark).map_err(|e| Failure::Other(anyhow::anyhow!("{}: {e}", mark.display())))
}

fn emit(dir: &Path, r: &PlanReport) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let ids: Vec<&str> = r.variants.iter().map(|v| v.id.as_str()).collect();
    std::fs::write(dir.join(EMIT_MARK), ids.join("\n") + "\n")?;
    for v in &r.variants {
        let d = dir.join(&v.id);
        std::fs::create_dir_all(&d)?;
        let mut readme = format!("# {}\n\n{}\n\nDisruption: {}.\n", v.id, v.title, v.disruption_text);
        if !v.caveats.is_empty() {
            readme.push_str("\nCaveats:\n");
            for c in &v.caveats {
                readme.push_str(&format!("- {c}\n"));
            }
        }
        if v.config.is_empty() {
            readme.push_str("\nNothing to apply.\n");
        }
        std::fs::write(d.join("README.md"), readme)?;
        for (name, body) in &v.config {
            let path = d.join(name);
            std::fs::write(&path, body)?;
            #[cfg(unix)]
            if name.ends_with(".sh") {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
            }
        }
    }
    Ok(())
}

/// Max pods per instance type: the number alone for one type, else each type with its own.
fn max_pods_cell(m: &std::collections::BTreeMap<String, u32>) -> String {
    if m.len() == 1 {
        m.values().map(ToString::to_string).collect()
    } else {
        m.iter().map(|(t, n)| format!("{t} {n}")).collect::<Vec<_>>().join(", ")
    }
}

fn print(r: &PlanReport, wide: bool) {
    outln!(
        "{}: {} simulated hours, node groups of at most {} nodes, {} usable routable addresses, headroom asked: {} nodes (seed {})",
        r.scenario,
        r.horizon_hours,
        r.peak_nodes,
        r.routable_space,
        r.headroom_target_nodes,
        r.seed
    );
    for n in &r.import_notes {
        outln!("import: {n}");
    }
    const HEADER: [&str; 14] = [
        "variant",
        "routable IPv4 peak",
        "non-routable",
        "idle avg",
        "headroom nodes",
        "pods started/asked",
        "no address/ unschedulable",
        "waited (p50/p99 s)",
        "nodes failed",
        "EC2 calls (throttled)",
        "max pods",
        "NAU",
        "$/month",
        "disruption",
    ];
    let rows: Vec<Vec<String>> = r
        .variants
        .iter()
        .map(|v| {
            let calls: u64 = v.ec2_calls.values().sum();
            let mark = if v.id == r.recommendation.variant { " *" } else { "" };
            vec![
                format!("{}{mark}", v.id),
                format!("{} ({:.1}%)", v.routable_peak, v.routable_share * 100.0),
                v.nonroutable_peak.to_string(),
                format!("{:.0}", v.idle_avg),
                v.headroom_nodes.to_string(),
                format!("{}/{}", v.pods_started, v.pods_asked),
                format!("{}/{}", v.pods_failed + v.pods_waiting_at_end, v.pods_unschedulable),
                // No pod waited: no wait to show.
                if v.pods_waited == 0 {
                    "0".into()
                } else {
                    format!("{} ({:.1}/{:.1})", v.pods_waited, v.wait_p50_s, v.wait_p99_s)
                },
                v.nodes_failed.to_string(),
                format!("{calls} ({:.1}%)", v.throttled_share * 100.0),
                max_pods_cell(&v.max_pods),
                v.nau_peak.to_string(),
                format!("{:.0}", v.monthly_cost_usd),
                v.disruption.short().to_string(),
            ]
        })
        .collect();
    // One table at full width with --wide; else two that fit a 120-column terminal: the
    // addresses, then pods, EC2 and what it takes (the disruption wraps at its spaces).
    let groups: Vec<Vec<usize>> = if wide {
        vec![(0..HEADER.len()).collect()]
    } else {
        vec![vec![0, 1, 2, 3, 4, 10, 11, 12], vec![0, 5, 6, 7, 8, 9, 13]]
    };
    for cols in groups {
        let header: Vec<&str> = cols.iter().map(|c| HEADER[*c]).collect();
        let mut t = table::new(&header);
        if wide {
            t.set_content_arrangement(comfy_table::ContentArrangement::Disabled);
        } else if t.width().is_none() {
            // Not a terminal: the width a reader's terminal most likely has.
            t.set_width(120);
        }
        for row in &rows {
            t.add_row(cols.iter().map(|c| row[*c].clone()).collect::<Vec<_>>());
        }
        // Values stay whole (the headers and the disruption wrap at their spaces).
        for (k, col) in cols.iter().enumerate() {
            if *col == HEADER.len() - 1 {
                continue;
            }
            let longest = rows.iter().map(|r| r[*col].chars().count()).max().unwrap_or(1) as u16;
            if let Some(c) = t.column_mut(k) {
                c.set_constraint(comfy_table::ColumnConstraint::LowerBoundary(comfy_table::Width::Fixed(longest + 2)));
            }
        }
        outln!("{t}");
    }
    if r.recommendation.variant.is_empty() {
        outln!("* no recommendation: {}", r.recommendation.reason);
    } else {
        outln!("* recommended: {} — {}", r.recommendation.variant, r.recommendation.reason);
    }
    for v in &r.variants {
        if !v.caveats.is_empty() || !v.shortfalls.is_empty() {
            outln!("{}:", v.id);
            for s in &v.shortfalls {
                outln!("  - falls short: {s}");
            }
            for c in &v.caveats {
                outln!("  - {c}");
            }
        }
    }
}
