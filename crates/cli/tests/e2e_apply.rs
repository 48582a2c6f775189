//! `stratus apply -f project.yaml` and `stratus export` against the real
//! server, on SQLite and on PostgreSQL: a plan first, then the changes; a
//! second apply and an apply of the export change nothing; `--prune`
//! deletes what the file leaves out; a bad file changes nothing.

mod common;
use common::*;
use std::path::Path;

fn project_file(dir: &Path, greeting: &str, with_schedule: bool) -> std::path::PathBuf {
    let slots = if with_schedule { 3 } else { 2 };
    let code = dir.join("py");
    std::fs::create_dir_all(&code).unwrap();
    std::fs::write(code.join("main.py"), "import os\nprint(os.environ['GREETING'], end='')\n").unwrap();
    std::fs::write(dir.join("db.secret"), "s3cret-apply-value\n").unwrap();
    let schedule = if with_schedule {
        "schedules:\n  nightly:\n    timing: {kind: cron, expr: \"0 2 * * *\", tz: UTC}\n    action: {kind: emit, type: com.example.tick}\n    paused: true\n"
    } else {
        ""
    };
    let text = format!(
        r#"functions:
  t:
    path: {wasm}
    runtime: {{kind: wasm}}
    timeout_ms: 5000
  greet:
    path: py
    runtime: {{kind: process, cmd: python3 main.py, warm: false}}
    vars: [GREETING]
    secrets: [{{name: db, env: DB_PASSWORD}}]
    tags: [archive]
variables:
  GREETING: {greeting}
  CONF: {{value: '{{"a": 1}}', json: true}}
secrets:
  db: {{from_file: db.secret}}
limits:
  archive: {slots}
triggers:
  on-upload:
    "on": stratus.object.created
    subject_prefix: in/
    action: {{kind: invoke, function: t}}
{schedule}"#,
        wasm = guest_wasm().display(),
    );
    let path = dir.join("project.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn lines(out: &str) -> Vec<String> {
    let mut l: Vec<String> = out.lines().map(str::to_string).collect();
    l.sort();
    l
}

fn applies_a_project(extra: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &[&["--slots", "2"], extra].concat());
    let file = project_file(tmp.path(), "hello", true);
    let f = file.to_str().unwrap();

    // The plan, and nothing done.
    let plan = s.ok(&["apply", "-f", f, "--dry-run"]);
    assert_eq!(
        lines(&plan),
        [
            "+ function greet",
            "+ function t",
            "+ limit archive (3 slots)",
            "+ schedule nightly",
            "+ secret db",
            "+ trigger on-upload",
            "+ variable CONF",
            "+ variable GREETING"
        ],
        "{plan}"
    );
    let rows = s.ok(&["--json", "apply", "-f", f, "--dry-run"]);
    let row: serde_json::Value = serde_json::from_str(rows.lines().next().unwrap()).unwrap();
    assert_eq!((row["kind"].as_str(), row["change"].as_str()), (Some("variable"), Some("create")), "{rows}");
    assert_eq!(s.ok(&["--json", "fn", "list"]).trim(), "", "a dry run changes nothing");

    s.ok(&["apply", "-f", f]);
    assert_eq!(s.ok(&["invoke", "t", "echo:applied"]), "applied");
    assert_eq!(s.ok(&["invoke", "greet"]), "hello");
    assert!(s.ok(&["schedule", "show", "nightly"]).contains("paused"));
    assert!(s.ok(&["--json", "trigger", "show", "on-upload"]).contains("in/"));
    assert!(s.ok(&["secret", "list"]).contains("db"));
    let limit: serde_json::Value = serde_json::from_str(&s.ok(&["--json", "limit", "show", "archive"])).unwrap();
    assert_eq!(limit["slots"], 3, "{limit}");
    assert!(s.ok(&["fn", "show", "greet"]).contains("tags:     archive"));

    // Again, and from its own export: nothing changes, no new version.
    let again = s.ok(&["apply", "-f", f]);
    assert!(again.lines().all(|l| l.starts_with("= ")), "{again}");
    let exported = tmp.path().join("exported.yaml");
    s.ok(&["export", "-o", exported.to_str().unwrap()]);
    let text = std::fs::read_to_string(&exported).unwrap();
    assert!(!text.contains("s3cret-apply-value") && text.contains("from_env: DB"), "{text}");
    assert!(text.contains("archive: 3") && text.contains("- archive"), "limits and tags exported: {text}");
    let from_export = s.ok(&["apply", "-f", exported.to_str().unwrap()]);
    assert!(from_export.lines().all(|l| l.starts_with("= ")), "{from_export}");
    for name in ["t", "greet"] {
        let v: serde_json::Value = serde_json::from_str(&s.ok(&["--json", "fn", "show", name])).unwrap();
        assert_eq!(v["version"], 1, "{name} was not deployed again");
    }

    // A change, and a schedule left out: updated, and deleted with --prune only.
    let file = project_file(tmp.path(), "bonjour", false);
    let plan = s.ok(&["apply", "-f", f]);
    assert!(plan.contains("~ variable GREETING") && !plan.contains("nightly"), "{plan}");
    assert!(plan.contains("~ limit archive (3 -> 2 slots)"), "{plan}");
    assert_eq!(s.ok(&["invoke", "greet"]), "bonjour");
    assert!(s.cli(&["schedule", "show", "nightly"]).status.success());
    let pruned = s.ok(&["apply", "-f", file.to_str().unwrap(), "--prune"]);
    assert!(pruned.contains("- schedule nightly"), "{pruned}");
    assert!(!s.cli(&["schedule", "show", "nightly"]).status.success());

    // A bad file, or a secret whose source is missing: an error, nothing changed.
    let bad = tmp.path().join("bad.yaml");
    std::fs::write(&bad, "variables:\n  NEW: x\nfunctionz: {}\n").unwrap();
    let o = s.cli(&["apply", "-f", bad.to_str().unwrap()]);
    assert!(!o.status.success() && stderr(&o).contains("functionz"), "{}", stderr(&o));
    std::fs::write(&bad, "variables:\n  NEW: x\nsecrets:\n  other: {from_file: missing.txt}\n").unwrap();
    let o = s.cli(&["apply", "-f", bad.to_str().unwrap()]);
    assert!(!o.status.success() && stderr(&o).contains("missing.txt"), "{}", stderr(&o));
    assert!(!s.cli(&["var", "get", "NEW"]).status.success(), "nothing was applied");
}

#[test]
fn apply_and_export_on_sqlite() {
    applies_a_project(&[]);
}

#[test]
fn apply_and_export_on_postgres() {
    let schema = format!("e2e_{}", stratus_core::new_id().as_uuid().simple());
    applies_a_project(&["--state", &postgres_url(&schema)]);
}
