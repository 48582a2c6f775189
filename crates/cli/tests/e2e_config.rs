//! `stratus.toml` and `stratus migrate`, as a user runs them.

mod common;
use common::*;
use std::process::Command;

fn stratus(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).env_remove("STRATUS_URL").output().unwrap()
}

#[test]
fn a_config_file_sets_the_node_and_flags_win_over_it() {
    let tmp = tempfile::tempdir().unwrap();
    let from_file = tmp.path().join("from-file");
    let config = tmp.path().join("stratus.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nslots = 1\nlease_timeout = \"7s\"\n",
            from_file.display()
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let s = Server::spawn(&["--config", cfg, "up"], from_file.clone());
    let guest = guest_wasm();
    s.ok(&["fn", "deploy", "t", "--wasm", guest.to_str().unwrap()]);
    assert_eq!(s.ok(&["invoke", "t", "echo:configured"]), "configured");
    assert!(from_file.join("state.db").is_file(), "state under the file's data_dir");
    let workers = s.get_json("/v1/workers");
    assert_eq!(workers["workers"][0]["slots"], 1, "slots from the file: {workers}");
    drop(s);

    // A flag wins over the file.
    let from_flag = tmp.path().join("from-flag");
    let s = Server::spawn(
        &["--config", cfg, "up", "--data-dir", from_flag.to_str().unwrap(), "--slots", "2"],
        from_flag.clone(),
    );
    assert_eq!(s.get_json("/v1/workers")["workers"][0]["slots"], 2);
    assert!(from_flag.join("state.db").is_file());
    assert!(s.ok(&["fn", "list"]).trim().lines().count() <= 1, "a fresh data dir: no functions");
}

#[test]
fn a_bad_config_file_is_refused_before_anything_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    for (text, says) in [
        ("stat = \"sqlite://x\"\n", "unknown field `stat`"),
        ("lease_timeout = \"soon\"\n", "lease_timeout"),
        ("[worker]\nslots = 0\n", "worker.slots"),
    ] {
        let config = tmp.path().join("bad.toml");
        std::fs::write(&config, format!("data_dir = \"{}\"\n{text}", data.display())).unwrap();
        let out = stratus(&["--config", config.to_str().unwrap(), "up", "--listen", "127.0.0.1:0"]);
        assert!(!out.status.success(), "{text}");
        let err = stderr(&out);
        assert!(err.contains("bad.toml") && err.contains(says), "{text}: {err}");
        assert!(!data.exists(), "nothing was created");
    }
    let out = stratus(&["--config", "/nonexistent/stratus.toml", "up"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("/nonexistent/stratus.toml"), "{}", stderr(&out));
}

#[test]
fn migrate_upgrades_a_new_database_once_and_the_server_then_uses_it() {
    let tmp = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", tmp.path().join("d/state.db").display());
    let out = stratus(&["migrate", "--state", &db]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("schema upgraded from version 0 to 9"), "{}", stdout(&out));
    let out = stratus(&["migrate", "--state", &db, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["found"].as_u64(), v["now"].as_u64()), (Some(9), Some(9)), "{v}");
    // The same database through the data dir: the server finds it migrated.
    let s = Server::start_in(tmp.path().join("d"), &["--slots", "1"]);
    let guest = guest_wasm();
    s.ok(&["fn", "deploy", "t", "--wasm", guest.to_str().unwrap()]);
    assert_eq!(s.ok(&["invoke", "t", "echo:migrated"]), "migrated");
}

#[test]
fn migrate_on_postgres_and_errors_without_the_password() {
    let url = postgres_url(&format!("mig_{}", stratus_core::new_id().as_uuid().simple()));
    let out = stratus(&["migrate", "--state", &url]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("schema upgraded from version 0 to 9"), "{}", stdout(&out));
    let out = stratus(&["migrate", "--state", &url]);
    assert!(stdout(&out).contains("nothing to do"), "{}", stdout(&out));

    let out = stratus(&["migrate", "--state", "postgres://someone:hunter2@127.0.0.1:1/x?connect_timeout=2"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("someone:***@127.0.0.1:1"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    let out = stratus(&["migrate", "--state", "mysql://x"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("unsupported state store URL"), "{}", stderr(&out));
}

#[test]
fn help_never_shows_the_secrets_in_the_environment() {
    let out = Command::new(BIN)
        .args(["up", "--help"])
        .env("STRATUS_STATE", "postgres://u:hunter2@db/x")
        .env("STRATUS_OBJECTS", "s3://b?secret_access_key=hunter3")
        .output()
        .unwrap();
    let help = stdout(&out);
    assert!(help.contains("STRATUS_STATE") && help.contains("STRATUS_OBJECTS"), "{help}");
    assert!(!help.contains("hunter2") && !help.contains("hunter3"), "{help}");
}
