//! WASI preview 1 modules on wasmtime.

use crate::capped::{CappedPipe, OUTPUT_LIMIT_MSG};
use crate::{Error, OutputCaps, RunOutcome, TRUNCATED_MARKER};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stratus_core::{Failure, FailureKind, Limits};
use tokio_util::sync::CancellationToken;
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module, PoolingAllocationConfig, ResourceLimiter,
    Store, Trap, UpdateDeadline,
};
use wasmtime_wasi::p1::{self, WasiP1Ctx};
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{I32Exit, WasiCtxBuilder};

/// Epoch tick: the granularity of wasm timeouts.
const TICK: Duration = Duration::from_millis(2);
/// Largest linear memory any guest may have (wasm32's whole address space).
const MAX_GUEST_MEMORY: usize = 4 << 30;

pub struct Host {
    wasi: WasiP1Ctx,
    limiter: MemoryLimiter,
    cancelled: bool,
}

struct MemoryLimiter {
    max_bytes: usize,
    denied: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.denied = true;
            return Ok(false);
        }
        Ok(true)
    }
    fn table_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}

/// A compiled module, ready to instantiate.
pub struct WasmModule {
    pre: InstancePre<Host>,
}

pub struct WasmRuntime {
    engine: Engine,
    linker: Linker<Host>,
    cache_dir: Option<PathBuf>,
    modules: Mutex<HashMap<String, Arc<WasmModule>>>,
    engine_hash: String,
    ticker: Ticker,
}

/// Drives the engine's epoch (timeouts, cancellation) every [`TICK`], but
/// only while a guest runs: an idle server has no thread waking 500 times a
/// second.
struct Ticker {
    running: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: std::thread::Thread,
}

impl Ticker {
    fn start(engine: &Engine) -> std::io::Result<Ticker> {
        let weak = engine.weak();
        let running = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (running.clone(), stop.clone());
        let handle = std::thread::Builder::new().name("stratus-wasm-epoch".into()).spawn(move || {
            while !s.load(SeqCst) {
                // A guest that starts after this check unparks us: the
                // token makes `park` return at once.
                if r.load(SeqCst) == 0 {
                    std::thread::park();
                    continue;
                }
                let Some(engine) = weak.upgrade() else { return };
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(TICK);
            }
        })?;
        Ok(Ticker { running, stop, thread: handle.thread().clone() })
    }

    /// Ticks until the returned guard is dropped.
    fn hold(&self) -> Ticking<'_> {
        if self.running.fetch_add(1, SeqCst) == 0 {
            self.thread.unpark();
        }
        Ticking(self)
    }
}

struct Ticking<'a>(&'a Ticker);

impl Drop for Ticking<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, SeqCst);
    }
}

impl Drop for WasmRuntime {
    fn drop(&mut self) {
        self.ticker.stop.store(true, SeqCst);
        self.ticker.thread.unpark();
    }
}

impl WasmRuntime {
    /// `concurrency` bounds how many instances can be alive at once (the
    /// pooling allocator reserves that many slots); `cache_dir` keeps
    /// compiled modules across restarts.
    pub fn new(concurrency: u32, cache_dir: Option<PathBuf>) -> Result<Arc<Self>, Error> {
        let mut pool = PoolingAllocationConfig::new();
        let slots = concurrency.max(1) * 2 + 8;
        pool.total_core_instances(slots)
            .total_memories(slots)
            .total_tables(slots)
            .total_stacks(slots)
            .max_memory_size(MAX_GUEST_MEMORY)
            // Keeping a little memory resident avoids a page decommit per
            // instance, which otherwise costs more than the whole call.
            .linear_memory_keep_resident(4 << 20)
            .table_keep_resident(64 << 10);
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .max_wasm_stack(1 << 20);
        let engine = Engine::new(&config).map_err(|e| Error::Runtime(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        p1::add_to_linker_sync(&mut linker, |h: &mut Host| &mut h.wasi)
            .map_err(|e| Error::Runtime(format!("{e:#}")))?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let engine_hash = format!("{:016x}", h.finish());
        if let Some(dir) = &cache_dir {
            std::fs::create_dir_all(dir)?;
        }
        let ticker = Ticker::start(&engine)?;
        Ok(Arc::new(WasmRuntime {
            engine,
            linker,
            cache_dir,
            modules: Mutex::new(HashMap::new()),
            engine_hash,
            ticker,
        }))
    }

    /// Checks that `bytes` is a WASI command module this runtime can run.
    /// Compiles it (and caches the result), so the first invocation is fast.
    pub fn validate(&self, digest: &str, bytes: &[u8]) -> Result<(), Error> {
        self.load(digest, || Ok(bytes.to_vec())).map(|_| ())
    }

    /// The module for `digest` if it is already compiled and in memory.
    pub fn cached(&self, digest: &str) -> Option<Arc<WasmModule>> {
        self.modules.lock().unwrap().get(digest).cloned()
    }

    /// The compiled module for `digest`: from memory, from the disk cache, or
    /// compiled from the bytes `fetch` returns.
    pub fn load(&self, digest: &str, fetch: impl FnOnce() -> Result<Vec<u8>, Error>) -> Result<Arc<WasmModule>, Error> {
        if let Some(m) = self.modules.lock().unwrap().get(digest) {
            return Ok(m.clone());
        }
        let cached = self.cache_dir.as_ref().map(|d| d.join(format!("{digest}-{}.cwasm", self.engine_hash)));
        let module = match cached.as_ref().filter(|p| p.exists()) {
            // SAFETY: the file was written by `Module::serialize` of an engine
            // with the same compatibility hash, into our own cache directory.
            Some(path) => match unsafe { Module::deserialize_file(&self.engine, path) } {
                Ok(m) => m,
                Err(_) => self.compile(&fetch()?, cached.as_ref())?,
            },
            None => self.compile(&fetch()?, cached.as_ref())?,
        };
        let pre = self.linker.instantiate_pre(&module).map_err(|e| Error::InvalidWasm(format!("{e:#}")))?;
        let m = Arc::new(WasmModule { pre });
        self.modules.lock().unwrap().insert(digest.to_string(), m.clone());
        Ok(m)
    }

    fn compile(&self, bytes: &[u8], cache: Option<&PathBuf>) -> Result<Module, Error> {
        if !bytes.starts_with(b"\0asm") {
            return Err(Error::InvalidWasm("not a WebAssembly binary (missing \\0asm header)".into()));
        }
        let module = Module::new(&self.engine, bytes).map_err(|e| Error::InvalidWasm(format!("{e:#}")))?;
        if module.get_export("_start").is_none() {
            return Err(Error::InvalidWasm(
                "the module exports no _start function (build a WASI command, e.g. --target wasm32-wasip1 with a main)"
                    .into(),
            ));
        }
        for import in module.imports() {
            if import.module() != "wasi_snapshot_preview1" {
                return Err(Error::InvalidWasm(format!(
                    "import {}::{} is not provided: only wasi_snapshot_preview1 is available",
                    import.module(),
                    import.name()
                )));
            }
        }
        if let Some(path) = cache
            && let Ok(bin) = module.serialize()
        {
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            if std::fs::write(&tmp, bin).is_ok() {
                let _ = std::fs::rename(&tmp, path);
            }
        }
        Ok(module)
    }

    /// Runs the module once, on the calling thread (call it from a blocking
    /// context, not from an async task).
    pub fn run(
        &self,
        module: &WasmModule,
        input: Vec<u8>,
        env: &[(String, String)],
        limits: Limits,
        caps: OutputCaps,
        cancel: &CancellationToken,
    ) -> RunOutcome {
        let stdout = CappedPipe::new(caps.max_output, true);
        let stderr = CappedPipe::new(caps.max_logs, false);
        let wasi = WasiCtxBuilder::new()
            .stdin(MemoryInputPipe::new(input))
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .envs(env)
            .arg("main")
            .build_p1();
        let max_bytes = (limits.memory_mb as usize).saturating_mul(1 << 20).min(MAX_GUEST_MEMORY);
        let host = Host { wasi, limiter: MemoryLimiter { max_bytes, denied: false }, cancelled: false };
        let mut store = Store::new(&self.engine, host);
        store.limiter(|h| &mut h.limiter);
        // Checked on every epoch tick: the timeout, and cancellation.
        let deadline = std::time::Instant::now() + Duration::from_millis(limits.timeout_ms);
        let cancel = cancel.clone();
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |mut ctx| {
            if cancel.is_cancelled() {
                ctx.data_mut().cancelled = true;
                return Ok(UpdateDeadline::Interrupt);
            }
            if std::time::Instant::now() >= deadline {
                return Ok(UpdateDeadline::Interrupt);
            }
            Ok(UpdateDeadline::Continue(1))
        });

        let ticking = self.ticker.hold();
        let result = module
            .pre
            .instantiate(&mut store)
            .and_then(|instance| instance.get_typed_func::<(), ()>(&mut store, "_start"))
            .and_then(|start| start.call(&mut store, ()));
        drop(ticking);
        let memory_denied = store.data().limiter.denied;
        let cancelled = store.data().cancelled;
        drop(store);

        let (out, _) = stdout.take();
        let (mut logs, truncated) = stderr.take();
        if truncated {
            logs.extend_from_slice(TRUNCATED_MARKER);
        }
        let result = match result {
            Ok(()) => Ok(out),
            // `proc_exit(0)` ends the guest through an error that means success.
            Err(e) if matches!(e.downcast_ref::<I32Exit>(), Some(I32Exit(0))) => Ok(out),
            Err(_) if cancelled => Err(Failure::new(FailureKind::Cancelled, "cancelled")),
            Err(e) => Err(classify(&e, memory_denied, limits)),
        };
        RunOutcome { result, logs }
    }
}

fn classify(e: &wasmtime::Error, memory_denied: bool, limits: Limits) -> Failure {
    if let Some(exit) = e.downcast_ref::<I32Exit>() {
        let mut f = Failure::new(FailureKind::Exit, format!("exited with status {}", exit.0));
        f.exit_code = Some(exit.0);
        return f;
    }
    if let Some(trap) = e.downcast_ref::<Trap>()
        && *trap == Trap::Interrupt
    {
        return Failure::new(FailureKind::Timeout, format!("timed out after {} ms", limits.timeout_ms));
    }
    let text = format!("{e:#}");
    if text.contains(OUTPUT_LIMIT_MSG) {
        return Failure::new(FailureKind::OutputLimit, "output limit exceeded");
    }
    if memory_denied {
        return Failure::new(FailureKind::OutOfMemory, format!("out of memory: the limit is {} MiB", limits.memory_mb));
    }
    if let Some(trap) = e.downcast_ref::<Trap>() {
        return Failure::new(FailureKind::Trap, format!("wasm trap: {trap}"));
    }
    Failure::new(FailureKind::Trap, first_line(&text).to_string())
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(rt: &WasmRuntime, wat: &str) -> WasmModule {
        let m = Module::new(&rt.engine, wat).unwrap();
        WasmModule { pre: rt.linker.instantiate_pre(&m).unwrap() }
    }

    /// The epoch thread only ticks while a guest runs; a guest started after
    /// it went idle still times out, and every run lets go of the ticker.
    #[test]
    fn the_ticker_wakes_for_each_run_and_times_out_a_spinning_guest() {
        let rt = WasmRuntime::new(2, None).unwrap();
        let quick = module(&rt, r#"(module (func (export "_start")))"#);
        let spin = module(&rt, r#"(module (func (export "_start") (loop (br 0))))"#);
        let limits = Limits { timeout_ms: 100, memory_mb: 16 };
        let cancel = CancellationToken::new();
        for _ in 0..2 {
            let ok = rt.run(&quick, vec![], &[], limits, OutputCaps::default(), &cancel);
            assert!(ok.result.is_ok(), "{:?}", ok.result);
            assert_eq!(rt.ticker.running.load(SeqCst), 0);
            let spun = rt.run(&spin, vec![], &[], limits, OutputCaps::default(), &cancel);
            let failure = spun.result.expect_err("a spinning guest must not succeed");
            assert_eq!(failure.kind, FailureKind::Timeout, "{failure:?}");
            assert_eq!(rt.ticker.running.load(SeqCst), 0);
        }
    }
}
