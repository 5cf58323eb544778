//! The plan as one self-contained HTML page: the comparison table, an SVG chart of routable
//! IPv4 over time per variant, and each subnet's /28 block map.

use crate::plan::{PlanReport, VariantReport};
use std::fmt::Write;

const COLORS: [&str; 8] = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#e377c2"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn chart(r: &PlanReport) -> String {
    let (w, h, pad) = (760.0, 300.0, 48.0);
    let max_y = r.variants.iter().flat_map(|v| v.series.iter().map(|s| s.routable)).max().unwrap_or(1).max(1) as f64;
    let max_x = r.horizon_hours.max(0.01);
    let mut svg = format!(
        r##"<svg id="routable-chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="routable IPv4 over time">"##
    );
    let _ = write!(
        svg,
        r##"<rect x="{pad}" y="10" width="{}" height="{}" fill="#fafafa" stroke="#ccc"/>"##,
        w - pad - 10.0,
        h - pad - 10.0
    );
    for k in 0..=4 {
        let y = 10.0 + (h - pad - 10.0) * (1.0 - f64::from(k) / 4.0);
        let _ = write!(
            svg,
            r##"<line x1="{pad}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#eee"/><text x="{}" y="{:.1}" font-size="11" text-anchor="end">{:.0}</text>"##,
            w - 10.0,
            pad - 4.0,
            y + 4.0,
            max_y * f64::from(k) / 4.0
        );
    }
    for k in 0..=4 {
        let x = pad + (w - pad - 10.0) * f64::from(k) / 4.0;
        let _ = write!(
            svg,
            r##"<text x="{x:.1}" y="{}" font-size="11" text-anchor="middle">{:.1} h</text>"##,
            h - pad + 16.0,
            max_x * f64::from(k) / 4.0
        );
    }
    for (i, v) in r.variants.iter().enumerate() {
        let pts: Vec<String> = v
            .series
            .iter()
            .map(|s| {
                let x = pad + (w - pad - 10.0) * (s.hour / max_x);
                let y = 10.0 + (h - pad - 10.0) * (1.0 - s.routable as f64 / max_y);
                format!("{x:.1},{y:.1}")
            })
            .collect();
        let _ = write!(
            svg,
            r##"<polyline class="series" data-variant="{}" fill="none" stroke="{}" stroke-width="2" points="{}"/>"##,
            esc(&v.id),
            COLORS[i % COLORS.len()],
            pts.join(" ")
        );
    }
    svg.push_str("</svg>");
    let mut legend = String::from(r#"<div class="legend">"#);
    for (i, v) in r.variants.iter().enumerate() {
        let _ = write!(legend, r#"<span><i style="background:{}"></i>{}</span>"#, COLORS[i % COLORS.len()], esc(&v.id));
    }
    legend.push_str("</div>");
    svg + &legend
}

fn block_maps(v: &VariantReport) -> String {
    let mut out = format!("<h3>{} — subnets at the end of the run</h3>", esc(&v.id));
    for m in &v.subnet_maps {
        let cell = 10.0;
        let cols = 64.0;
        let rows = m.rows.len() as f64;
        let _ = write!(
            out,
            r##"<figure><figcaption>{} {} — {} free addresses, {} free /28 blocks</figcaption><svg class="blockmap" xmlns="http://www.w3.org/2000/svg" width="{}" height="{}">"##,
            esc(&m.name),
            esc(&m.cidr),
            m.free_ips,
            m.free_prefixes,
            cols * cell,
            rows * cell
        );
        for (y, row) in m.rows.iter().enumerate() {
            for (x, g) in row.chars().enumerate() {
                let fill = match g {
                    'R' => "#555",
                    '#' => "#d62728",
                    '+' => "#ff9896",
                    'X' => "#9467bd",
                    'P' => "#98df8a",
                    _ => "#e8f5e9",
                };
                let _ = write!(
                    out,
                    r##"<rect x="{}" y="{}" width="9" height="9" fill="{fill}"/>"##,
                    x as f64 * cell,
                    y as f64 * cell
                );
            }
        }
        out.push_str("</svg></figure>");
    }
    out
}

/// Renders the page.
pub fn render(r: &PlanReport) -> String {
    let mut rows = String::new();
    for v in &r.variants {
        let pick = if v.id == r.recommendation.variant { " class=\"pick\"" } else { "" };
        let calls: u64 = v.ec2_calls.values().sum();
        let _ = write!(
            rows,
            "<tr{pick}><td><b>{}</b><br><small>{}</small></td><td>{} ({:.1}%)</td><td>{}</td><td>{:.0}</td><td>{}</td><td>{} / {}</td><td>{} / {}</td><td>{}</td><td>{}: {:.1} / {:.1}</td><td>{} ({:.1}%)</td><td>{}</td><td>{}</td><td>${:.0}</td><td>{}</td></tr>",
            esc(&v.id),
            esc(&v.title),
            v.routable_peak,
            v.routable_share * 100.0,
            v.nonroutable_peak,
            v.idle_avg,
            v.headroom_nodes,
            v.pods_started,
            v.pods_asked,
            v.pods_failed,
            v.pods_unschedulable,
            v.nodes_failed,
            v.pods_waited,
            v.wait_p50_s,
            v.wait_p99_s,
            calls,
            v.throttled_share * 100.0,
            v.max_pods.iter().map(|(t, n)| format!("{t}: {n}")).collect::<Vec<_>>().join(", "),
            v.nau_peak,
            v.monthly_cost_usd,
            esc(&v.disruption_text),
        );
    }
    let mut caveats = String::new();
    for v in &r.variants {
        if v.caveats.is_empty() {
            continue;
        }
        let _ = write!(caveats, "<li><b>{}</b><ul>", esc(&v.id));
        for c in &v.caveats {
            let _ = write!(caveats, "<li>{}</li>", esc(c));
        }
        caveats.push_str("</ul></li>");
    }
    let mut maps = String::new();
    if let Some(today) = r.variants.iter().find(|v| v.id == "vpc-cni-today") {
        maps.push_str(&block_maps(today));
    }
    if let Some(pick) = r.variants.iter().find(|v| v.id == r.recommendation.variant && v.id != "vpc-cni-today") {
        maps.push_str(&block_maps(pick));
    }
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>podip plan: {name}</title>
<style>
body{{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}}
table{{border-collapse:collapse;margin:12px 0}}td,th{{border:1px solid #ddd;padding:4px 8px;vertical-align:top}}
th{{background:#f3f3f3}}tr.pick{{background:#eef8ee}}small{{color:#666}}
.legend span{{margin-right:14px;white-space:nowrap}}.legend i{{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:middle}}
figure{{margin:8px 0}}figcaption{{font-size:12px;color:#444}}
</style></head><body>
<h1>podip plan: {name}</h1>
<p>Seed {seed}, {hours} simulated hours, up to {nodes} nodes; {space} usable addresses in the routable subnets; headroom asked: {target} nodes.</p>
<p id="recommendation"><b>Recommendation: {rec}</b> — {reason}</p>
<table id="variants"><thead><tr><th>variant</th><th>routable IPv4 at peak</th><th>non-routable</th><th>idle (avg)</th><th>headroom (nodes)</th><th>pods started / asked</th><th>no address / unschedulable</th><th>nodes failed</th><th>waited: p50 / p99 (s)</th><th>EC2 calls (throttled)</th><th>max pods</th><th>NAU</th><th>cost/month</th><th>disruption</th></tr></thead>
<tbody>{rows}</tbody></table>
<h2>Routable IPv4 over time</h2>
{chart}
<h2>Subnet /28 block maps</h2>
<p><small>One square per aligned /28: dark = holds an AWS-reserved address, red = full, pink = partly used (lost to prefixes), purple = explicit reservation, light green = free in a prefix reservation, pale = free.</small></p>
{maps}
<h2>Caveats</h2><ul>{caveats}</ul>
</body></html>
"#,
        name = esc(&r.scenario),
        seed = r.seed,
        hours = r.horizon_hours,
        nodes = r.peak_nodes,
        space = r.routable_space,
        target = r.headroom_target_nodes,
        rec = if r.recommendation.variant.is_empty() { "none".to_string() } else { esc(&r.recommendation.variant) },
        reason = esc(&r.recommendation.reason),
        chart = chart(r),
    )
}
