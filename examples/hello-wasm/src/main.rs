//! A Stratus wasm function: greets its input.
//! Build: cargo build --release --target wasm32-wasip1

use std::io::{Read, Write};

fn main() {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).expect("stdin");
    let name = input.trim();
    let name = if name.is_empty() { "world" } else { name };
    eprintln!("greeting {name} (invocation {})", std::env::var("STRATUS_INVOCATION_ID").unwrap_or_default());
    write!(std::io::stdout(), "hello, {name}!").expect("stdout");
}
