//! The HTML report opens in headless Chromium without errors and shows its charts (a screenshot
//! is taken and checked).

use std::path::{Path, PathBuf};
use std::process::Command;

fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn required() -> bool {
    std::env::var("REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1")
        || std::env::var("PODIP_REQUIRE_BROWSER").is_ok_and(|v| v == "1")
}

fn headless(browser: &Path, profile: &Path, extra: &[&str], url: &str) -> std::process::Output {
    Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("run chromium")
}

#[test]
fn html_report_renders_in_headless_chromium() {
    let Some(browser) = chromium() else {
        assert!(!required(), "chromium is required (REQUIRE_PRIVILEGED=1) but not installed; run ./scripts/test");
        eprintln!("skipping: chromium not installed");
        return;
    };
    let dir = std::env::temp_dir().join(format!("podip-html-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let html = dir.join("plan.html");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/small-cluster.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_podip"))
        .args(["plan", example, "--quiet", "--json", "--html"])
        .arg(&html)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let variants = report["variants"].as_array().unwrap().len();
    let url = format!("file://{}", html.display());

    let dom = headless(&browser, &dir.join("profile-dom"), &["--dump-dom"], &url);
    assert!(dom.status.success(), "{}", String::from_utf8_lossy(&dom.stderr));
    let dom_text = String::from_utf8_lossy(&dom.stdout);
    assert_eq!(dom_text.matches("class=\"series\"").count(), variants, "one line per variant in the chart");
    assert!(dom_text.contains("id=\"routable-chart\""));
    assert!(dom_text.matches("class=\"blockmap\"").count() >= 2, "block maps shown");
    assert!(dom_text.contains("id=\"recommendation\""));
    let log = String::from_utf8_lossy(&dom.stderr);
    assert!(!log.contains("Uncaught") && !log.contains(":ERROR:CONSOLE"), "page errors: {log}");

    let png = dir.join("plan.png");
    let shot = headless(
        &browser,
        &dir.join("profile-shot"),
        &[&format!("--screenshot={}", png.display()), "--window-size=1400,2400", "--hide-scrollbars"],
        &url,
    );
    assert!(shot.status.success(), "{}", String::from_utf8_lossy(&shot.stderr));
    let bytes = std::fs::read(&png).expect("screenshot written");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert!(bytes.len() > 20_000, "a rendered page, not a blank one ({} bytes)", bytes.len());
    let keep = std::env::var_os("PODIP_KEEP_SCREENSHOT").map(PathBuf::from);
    if let Some(to) = keep {
        std::fs::copy(&png, to).unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
