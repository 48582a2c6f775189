//! `stratus-bench ui`: the dashboard's page of a big job (100,000 no-op
//! tasks; 10,000 with `--quick`): how long the server takes to answer it,
//! how much it weighs, and — when chromium and the browser tests' venv are
//! there (`scripts/ui-tests.sh` installs both) — how long headless chromium
//! takes to load and draw it (`tests/browser/render.py`).

use crate::http::Conn;
use crate::map_bench::map_noop_on;
use crate::node::Node;
use crate::stats::percentile;
use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

pub fn run(bin: &Path, quick: bool, out: &Path) -> Result<()> {
    let n: u64 = if quick { 10_000 } else { 100_000 };
    let node = Node::up(bin, &["--slots", "2"])?;
    map_noop_on(&node, n)?;
    let mut conn = Conn::open(&node.url)?;
    let jobs: Value = serde_json::from_slice(&conn.request("GET", "/v1/jobs?limit=1", b"")?.body)?;
    let id = jobs["jobs"][0]["id"].as_str().context("the job's id")?.to_string();
    let path = format!("/ui/jobs/{id}");
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..7 {
        let t = Instant::now();
        let r = conn.request("GET", &path, b"")?;
        times.push(t.elapsed());
        ensure!(r.status == 200, "GET {path}: HTTP {}", r.status);
        let page = String::from_utf8(r.body)?;
        ensure!(page.contains(&format!(r#"data-tasks="{n}""#)), "the timeline holds every task");
        bytes = page.len();
    }
    times.sort();
    let served = percentile(&times, 0.5);
    println!(
        "dashboard page of a {n}-task job: served in {:.0} ms (median of 7), {:.0} KiB",
        served.as_secs_f64() * 1000.0,
        bytes as f64 / 1024.0
    );
    let browser = render(&node, &path)?;
    match &browser {
        Some(b) => println!(
            "  headless chromium: loaded in {:.0} ms, drawn in {:.0} ms (median of 3), {} bars",
            b["load_ms"].as_f64().unwrap_or(0.0),
            b["painted_ms"].as_f64().unwrap_or(0.0),
            b["bars"]
        ),
        None => println!("  headless chromium: not measured (run scripts/ui-tests.sh once to install it)"),
    }
    let figures = json!({
        "benchmark": "ui",
        "tasks": n,
        "served_ms": served.as_secs_f64() * 1000.0,
        "bytes": bytes,
        "browser": browser,
    });
    std::fs::write(out.join("ui.json"), serde_json::to_string_pretty(&figures)?)?;
    Ok(())
}

/// The browser's figures for `path`, when the browser tests' venv and
/// chromium are installed.
fn render(node: &Node, path: &str) -> Result<Option<Value>> {
    let python = Path::new("bench/.venv-ui/bin/python");
    let has_chromium = Command::new("chromium").arg("--version").output().is_ok_and(|o| o.status.success());
    if !python.exists() || !has_chromium {
        return Ok(None);
    }
    let link = node.cli(&["dashboard", "--next", path])?.trim().to_string();
    let out = Command::new(python).arg("tests/browser/render.py").arg(&link).output()?;
    ensure!(out.status.success(), "render.py: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout)?;
    ensure!(v["errors"].as_array().is_some_and(|e| e.is_empty()), "console errors: {}", v["errors"]);
    Ok(Some(v))
}
