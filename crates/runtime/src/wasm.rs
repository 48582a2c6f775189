//! WASI preview 1 modules on wasmtime.

use crate::capped::{CappedPipe, OUTPUT_LIMIT_MSG};
use crate::{Error, OutputCaps, RunOutcome, TRUNCATED_MARKER};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use stratus_core::{Failure, FailureKind, Limits};
use tokio_util::sync::CancellationToken;
use wasmtime::{
    Caller, Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module, PoolingAllocationConfig,
    ResourceLimiter, Store, Trap, UpdateDeadline,
};
use wasmtime_wasi::p1::{self, WasiP1Ctx};
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{HostMonotonicClock, I32Exit, WasiCtxBuilder};

/// Epoch tick: the granularity of wasm timeouts.
const TICK: Duration = Duration::from_millis(2);
/// Largest linear memory any guest may have (wasm32's whole address space).
const MAX_GUEST_MEMORY: usize = 4 << 30;
/// Largest module accepted for compilation.
pub const MAX_MODULE_BYTES: usize = 64 << 20;
/// Compilations at once: each takes a core (and much memory) for a while,
/// so a burst of deploys must not take the whole machine.
const MAX_COMPILATIONS: usize = 2;
/// How often a guest sleeping in `poll_oneoff` looks at its cancellation.
const SLEEP_SLICE: Duration = Duration::from_millis(10);

pub struct Host {
    wasi: WasiP1Ctx,
    limiter: MemoryLimiter,
    cancelled: bool,
    /// When the invocation times out, and its cancellation: checked by the
    /// epoch callback while the guest computes, and by [`poll_oneoff`]
    /// while it sleeps in the host.
    deadline: Instant,
    cancel: CancellationToken,
    /// The zero of the guest's monotonic clock.
    origin: Instant,
}

/// The guest's monotonic clock: nanoseconds since [`Host::origin`], so
/// [`poll_oneoff`] can turn an absolute monotonic time into an instant.
struct Monotonic(Instant);

impl HostMonotonicClock for Monotonic {
    fn resolution(&self) -> u64 {
        1
    }
    fn now(&self) -> u64 {
        self.0.elapsed().as_nanos().try_into().unwrap_or(u64::MAX)
    }
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
    compiling: (Mutex<usize>, Condvar),
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
        linker.allow_shadowing(true);
        linker
            .func_wrap("wasi_snapshot_preview1", "poll_oneoff", poll_oneoff)
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
            compiling: (Mutex::new(0), Condvar::new()),
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
        if bytes.len() > MAX_MODULE_BYTES {
            return Err(Error::InvalidWasm(format!(
                "the module is {} MiB; the limit is {} MiB",
                bytes.len() >> 20,
                MAX_MODULE_BYTES >> 20
            )));
        }
        let module = {
            let _turn = self.compile_turn();
            Module::new(&self.engine, bytes).map_err(|e| Error::InvalidWasm(format!("{e:#}")))?
        };
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

    /// Waits for one of the [`MAX_COMPILATIONS`] turns; the turn ends when
    /// the guard is dropped.
    fn compile_turn(&self) -> impl Drop + '_ {
        let (count, freed) = &self.compiling;
        let mut n = count.lock().unwrap();
        while *n >= MAX_COMPILATIONS {
            n = freed.wait(n).unwrap();
        }
        *n += 1;
        struct Turn<'a>(&'a (Mutex<usize>, Condvar));
        impl Drop for Turn<'_> {
            fn drop(&mut self) {
                *self.0.0.lock().unwrap() -= 1;
                self.0.1.notify_one();
            }
        }
        Turn(&self.compiling)
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
        let origin = Instant::now();
        let wasi = WasiCtxBuilder::new()
            .stdin(MemoryInputPipe::new(input))
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .envs(env)
            .arg("main")
            .monotonic_clock(Monotonic(origin))
            .build_p1();
        let max_bytes = (limits.memory_mb as usize).saturating_mul(1 << 20).min(MAX_GUEST_MEMORY);
        let deadline = origin + Duration::from_millis(limits.timeout_ms);
        let host = Host {
            wasi,
            limiter: MemoryLimiter { max_bytes, denied: false },
            cancelled: false,
            deadline,
            cancel: cancel.clone(),
            origin,
        };
        let mut store = Store::new(&self.engine, host);
        store.limiter(|h| &mut h.limiter);
        // Checked on every epoch tick: the timeout, and cancellation.
        let cancel = cancel.clone();
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |mut ctx| {
            if cancel.is_cancelled() {
                ctx.data_mut().cancelled = true;
                return Ok(UpdateDeadline::Interrupt);
            }
            if Instant::now() >= deadline {
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

/// WASI's `poll_oneoff`, in place of wasmtime-wasi's: the same answers for
/// everything a guest here can wait on (clocks; stdin, stdout and stderr
/// are memory pipes, always ready), but a sleep ends at the invocation's
/// deadline or cancellation. The epoch cannot interrupt a guest inside a
/// host call, so without this a guest asleep would hold its slot past its
/// timeout for as long as it asked.
fn poll_oneoff(mut caller: Caller<'_, Host>, subs: i32, events: i32, n: i32, nevents: i32) -> wasmtime::Result<i32> {
    // wasi_snapshot_preview1's layouts and codes.
    const SUBSCRIPTION: usize = 48;
    const EVENT: usize = 32;
    const ERRNO_BADF: u16 = 8;
    const ERRNO_FAULT: i32 = 21;
    const ERRNO_INVAL: i32 = 28;
    const CLOCK: u8 = 0;
    const FD_READ: u8 = 1;
    const FD_WRITE: u8 = 2;

    let Some(memory) = caller.get_export("memory").and_then(|e| e.into_memory()) else {
        return Ok(ERRNO_FAULT);
    };
    let (subs, events, n, nevents) =
        (subs as u32 as usize, events as u32 as usize, n as u32 as usize, nevents as u32 as usize);
    if n == 0 {
        return Ok(ERRNO_INVAL);
    }
    let len = memory.data_size(&caller);
    let fits =
        |at: usize, size: usize| n.checked_mul(size).and_then(|l| at.checked_add(l)).is_some_and(|end| end <= len);
    if !fits(subs, SUBSCRIPTION) || !fits(events, EVENT) || nevents.checked_add(4).is_none_or(|end| end > len) {
        return Ok(ERRNO_FAULT);
    }
    let now = Instant::now();
    let origin = caller.data().origin;
    // (userdata, when it fires; None: never) and (userdata, type, error).
    let mut clocks: Vec<(u64, Option<Instant>)> = Vec::new();
    let mut ready: Vec<(u64, u8, u16)> = Vec::new();
    {
        let data = memory.data(&caller);
        let u64_at = |at: usize| u64::from_le_bytes(data[at..at + 8].try_into().expect("8 bytes"));
        let u32_at = |at: usize| u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes"));
        for i in 0..n {
            let at = subs + i * SUBSCRIPTION;
            let userdata = u64_at(at);
            match data[at + 8] {
                CLOCK => {
                    let (id, timeout, flags) = (u32_at(at + 16), u64_at(at + 24), data[at + 40]);
                    let absolute = flags & 1 != 0;
                    let when = match (id, absolute) {
                        // Realtime and monotonic run at the same rate.
                        (0 | 1, false) => now.checked_add(Duration::from_nanos(timeout)),
                        (1, true) => origin.checked_add(Duration::from_nanos(timeout)),
                        (0, true) => {
                            let wall = std::time::SystemTime::now()
                                .duration_since(std::time::UNIX_EPOCH)
                                .map(|d| d.as_nanos() as u64)
                                .unwrap_or(0);
                            now.checked_add(Duration::from_nanos(timeout.saturating_sub(wall)))
                        }
                        _ => return Ok(ERRNO_INVAL),
                    };
                    clocks.push((userdata, when));
                }
                kind @ (FD_READ | FD_WRITE) => {
                    let fd = u32_at(at + 16);
                    let open = if kind == FD_READ { fd == 0 } else { fd == 1 || fd == 2 };
                    ready.push((userdata, kind, if open { 0 } else { ERRNO_BADF }));
                }
                _ => return Ok(ERRNO_INVAL),
            }
        }
    }
    if ready.is_empty() {
        let wake = clocks.iter().filter_map(|c| c.1).min();
        loop {
            let host = caller.data();
            if host.cancel.is_cancelled() {
                caller.data_mut().cancelled = true;
                return Err(Trap::Interrupt.into());
            }
            let now = Instant::now();
            if wake.is_some_and(|w| now >= w) {
                break;
            }
            if now >= host.deadline {
                return Err(Trap::Interrupt.into());
            }
            let until = wake.map_or(host.deadline, |w| w.min(host.deadline));
            std::thread::sleep((until - now).min(SLEEP_SLICE));
        }
    }
    let now = Instant::now();
    let fired = clocks.iter().filter(|(_, w)| w.is_some_and(|w| w <= now)).map(|(u, _)| (*u, CLOCK, 0));
    let all: Vec<(u64, u8, u16)> = ready.iter().copied().chain(fired).collect();
    let data = memory.data_mut(&mut caller);
    for (i, (userdata, kind, error)) in all.iter().enumerate() {
        let e = &mut data[events + i * EVENT..][..EVENT];
        e.fill(0);
        e[0..8].copy_from_slice(&userdata.to_le_bytes());
        e[8..10].copy_from_slice(&error.to_le_bytes());
        e[10] = *kind;
        if *kind != CLOCK && *error == 0 {
            e[16..24].copy_from_slice(&1u64.to_le_bytes());
        }
    }
    data[nevents..nevents + 4].copy_from_slice(&(all.len() as u32).to_le_bytes());
    Ok(0)
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

    /// A guest asleep in `poll_oneoff` ends at its timeout (the epoch
    /// cannot reach it there) or when cancelled; a short sleep wakes with
    /// its clock event.
    #[test]
    fn a_guest_asleep_in_a_host_call_ends_at_its_timeout_or_cancel() {
        const SLEEP: &str = r#"(module
          (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
          (memory (export "memory") 1)
          (func (export "_start")
            (i32.store (i32.const 16) (i32.const 1))
            (i64.store (i32.const 24) (i64.const NANOS))
            (if (i32.ne (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)) (i32.const 0))
              (then unreachable))
            (if (i32.ne (i32.load (i32.const 128)) (i32.const 1)) (then unreachable))
            (if (i32.ne (i32.load8_u (i32.const 74)) (i32.const 0)) (then unreachable))))"#;
        let rt = WasmRuntime::new(2, None).unwrap();
        let short = module(&rt, &SLEEP.replace("NANOS", "10000000"));
        let hour = Arc::new(module(&rt, &SLEEP.replace("NANOS", "3600000000000")));
        let ok = rt.run(
            &short,
            vec![],
            &[],
            Limits { timeout_ms: 60_000, memory_mb: 16, ..Limits::default() },
            OutputCaps::default(),
            &CancellationToken::new(),
        );
        assert!(ok.result.is_ok(), "{:?}", ok.result);

        let run_in_thread = |limits: Limits, cancel: CancellationToken| {
            let (rt, hour) = (rt.clone(), hour.clone());
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(rt.run(&hour, vec![], &[], limits, OutputCaps::default(), &cancel));
            });
            // A generous bound: without the interruptible sleep this blocks for an hour.
            rx.recv_timeout(Duration::from_secs(60)).expect("the sleeping guest was not stopped")
        };
        let timed_out =
            run_in_thread(Limits { timeout_ms: 200, memory_mb: 16, ..Limits::default() }, CancellationToken::new());
        assert_eq!(timed_out.result.unwrap_err().kind, FailureKind::Timeout);
        let cancel = CancellationToken::new();
        cancel.cancel();
        let cancelled = run_in_thread(Limits { timeout_ms: 60_000, memory_mb: 16, ..Limits::default() }, cancel);
        assert_eq!(cancelled.result.unwrap_err().kind, FailureKind::Cancelled);
    }

    #[test]
    fn an_oversized_module_is_refused_before_compiling() {
        let rt = WasmRuntime::new(1, None).unwrap();
        let mut bytes = b"\0asm".to_vec();
        bytes.resize(MAX_MODULE_BYTES + 1, 0);
        let err = rt.validate("big", &bytes).expect_err("refused");
        assert!(err.to_string().contains("limit"), "{err}");
    }

    /// The epoch thread only ticks while a guest runs; a guest started after
    /// it went idle still times out, and every run lets go of the ticker.
    #[test]
    fn the_ticker_wakes_for_each_run_and_times_out_a_spinning_guest() {
        let rt = WasmRuntime::new(2, None).unwrap();
        let quick = module(&rt, r#"(module (func (export "_start")))"#);
        let spin = module(&rt, r#"(module (func (export "_start") (loop (br 0))))"#);
        let limits = Limits { timeout_ms: 100, memory_mb: 16, ..Limits::default() };
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
