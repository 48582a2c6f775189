//! Measures the cost of one cold process run (`process::run` of /bin/true)
//! beside a bare spawn+wait and the spawn alone.
//! `cargo run --release -p stratus-runtime --example spawn_cost`
use std::time::Instant;
use stratus_core::Limits;
use stratus_runtime::{OutputCaps, process, spawn};

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
    let t = Instant::now();
    for _ in 0..n {
        let o = process::run(
            &dir,
            "/bin/true",
            &[],
            vec![],
            Limits::default(),
            OutputCaps::default(),
            &Default::default(),
            None,
        )
        .await;
        assert!(o.result.is_ok());
    }
    println!("process::run (pipes, limits):       {:?}", t.elapsed() / n);
}
