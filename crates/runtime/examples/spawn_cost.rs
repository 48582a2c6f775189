//! Measures the cost of one cold process run (`process::run` of /bin/true)
//! beside a bare spawn+wait and the spawn alone, and (as root) the same in
//! the sandbox.
//! `cargo run --release -p stratus-runtime --example spawn_cost`
use std::sync::Arc;
use std::time::{Duration, Instant};
use stratus_core::Limits;
use stratus_runtime::sandbox::{Sandbox, SandboxConfig};
use stratus_runtime::{OutputCaps, process, spawn};

async fn runs(dir: &std::path::Path, n: u32, place: process::Place<'_>) -> Duration {
    let t = Instant::now();
    for _ in 0..n {
        let o = process::run(
            dir,
            "/bin/true",
            &[],
            vec![],
            Limits::default(),
            OutputCaps::default(),
            &Default::default(),
            place,
        )
        .await;
        assert!(o.result.is_ok(), "{:?}", o.result);
    }
    t.elapsed() / n
}

#[tokio::main]
async fn main() {
    let n = 500;
    let dir = std::env::temp_dir();
    let t = Instant::now();
    for _ in 0..n {
        std::process::Command::new("/bin/true").status().unwrap();
    }
    println!("bare spawn+wait (std, posix_spawn): {:?}", t.elapsed() / n);
    let spec = process::command(&dir, "/bin/true", &[], Limits::default(), None);
    let t = Instant::now();
    for _ in 0..n {
        let mut c = spawn::spawn(&spec).unwrap();
        assert!(c.wait().await.unwrap().success());
    }
    println!("spawn::spawn + wait:                {:?}", t.elapsed() / n);
    println!("process::run (pipes, limits):       {:?}", runs(&dir, n, None).await);

    // SAFETY: plain syscall.
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let bundles = scratch.path().join("bundles");
    let bundle = bundles.join("b");
    std::fs::create_dir_all(&bundle).unwrap();
    let sandbox = Arc::new(Sandbox::new(&SandboxConfig {
        uid: 64123,
        gid: 64123,
        bundles_dir: bundles.clone(),
        root_dir: scratch.path().join("root"),
        extra_paths: Vec::new(),
        pyenvs_dir: None,
        disabled: false,
    }));
    println!("sandbox layers: {:?}", sandbox.layers());
    println!("process::run in the sandbox:        {:?}", runs(&bundle, n, Some((&sandbox, false))).await);
}
