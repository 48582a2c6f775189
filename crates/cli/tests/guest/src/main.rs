//! Test guest: what it does is chosen by its input.
//!
//! `echo:X` prints X; `env:NAME` prints $NAME; `fail` exits 3 after logging;
//! `trap` panics (a wasm trap); `spin` loops forever; `alloc` grows memory
//! until refused; `flood` writes to stdout forever; `log:N` writes N bytes
//! of logs; `file` tries to read /etc/passwd; `sleep:MS` sleeps (in a host
//! call); anything else is echoed.

use std::io::{Read, Write};

fn main() {
    let mut input = Vec::new();
    std::io::stdin().read_to_end(&mut input).unwrap();
    let text = String::from_utf8_lossy(&input).to_string();
    let mut out = std::io::stdout();
    if let Some(x) = text.strip_prefix("echo:") {
        out.write_all(x.as_bytes()).unwrap();
    } else if let Some(name) = text.strip_prefix("env:") {
        out.write_all(std::env::var(name).unwrap_or_default().as_bytes()).unwrap();
    } else if text == "fail" {
        eprintln!("boom: failing on purpose");
        std::process::exit(3);
    } else if text == "trap" {
        panic!("trapping on purpose");
    } else if text == "spin" {
        let mut x: u64 = 0;
        loop {
            x = std::hint::black_box(x.wrapping_add(1));
        }
    } else if text == "alloc" {
        let mut keep: Vec<Vec<u8>> = Vec::new();
        loop {
            keep.push(vec![1u8; 8 << 20]);
        }
    } else if text == "flood" {
        let chunk = vec![b'x'; 1 << 20];
        loop {
            out.write_all(&chunk).unwrap();
        }
    } else if let Some(n) = text.strip_prefix("log:") {
        let n: usize = n.parse().unwrap();
        std::io::stderr().write_all(&vec![b'l'; n]).unwrap();
        out.write_all(b"logged").unwrap();
    } else if let Some(ms) = text.strip_prefix("sleep:") {
        std::thread::sleep(std::time::Duration::from_millis(ms.parse().unwrap()));
        out.write_all(b"slept").unwrap();
    } else if text == "file" {
        match std::fs::read_to_string("/etc/passwd") {
            Ok(_) => out.write_all(b"read").unwrap(),
            Err(e) => write!(out, "denied: {e}").unwrap(),
        }
    } else if text.contains("\"print_clock\"") {
        // The benchmark of events: when the action started, by the host's clock.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        write!(out, "{}", now.as_micros()).unwrap();
    } else {
        out.write_all(&input).unwrap();
    }
}
