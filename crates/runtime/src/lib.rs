//! Function runtimes. Both share one contract: input bytes on stdin, output
//! bytes on stdout, logs on stderr, exit status 0 means success.
//!
//! - [`wasm::WasmRuntime`]: WASI preview 1 modules on wasmtime. Modules are
//!   compiled once (and the compiled artifact cached on disk), each
//!   invocation gets a fresh instance from the pooling allocator, time is
//!   bounded by epoch interruption and memory by a store limiter.
//! - [`process`]: a command run in an unpacked bundle directory, in its own
//!   process group, with a memory rlimit and a timeout that kills the group.
//! - [`warm`]: process functions kept alive across invocations, speaking the
//!   framing documented in `docs/process-functions.md`.
//! - [`sandbox`]: the walls around process functions (user, namespaces,
//!   file system view, network, cgroups, seccomp).
//! - [`bundle`]: deterministic, content-addressed directory archives.

pub mod bundle;
mod capped;
pub mod process;
pub mod pyenv;
pub mod sandbox;
pub mod spawn;
pub mod warm;
pub mod wasm;

use stratus_core::Failure;

/// The result of running a function once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    pub result: Result<Vec<u8>, Failure>,
    /// Captured stderr (truncated to the configured cap).
    pub logs: Vec<u8>,
}

/// Caps on what one invocation may produce.
#[derive(Debug, Clone, Copy)]
pub struct OutputCaps {
    /// Output larger than this fails the invocation (`output_limit`).
    pub max_output: usize,
    /// Logs beyond this are dropped, with a marker line.
    pub max_logs: usize,
}

impl Default for OutputCaps {
    fn default() -> Self {
        OutputCaps { max_output: 64 << 20, max_logs: 1 << 20 }
    }
}

pub const TRUNCATED_MARKER: &[u8] = b"\n[stratus: logs truncated]\n";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid wasm module: {0}")]
    InvalidWasm(String),
    #[error("invalid bundle: {0}")]
    InvalidBundle(String),
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
    #[error("runtime error: {0}")]
    Runtime(String),
}
