//! The process-wide wasmtime engine, its linker and the epoch ticker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::bindings::Policy;
use crate::compile_cache::{CacheOutcome, CompileCache};
use crate::error::RuntimeError;
use crate::host::HostState;
use crate::policy::CompiledComponent;

/// Engine-wide settings; per-policy limits live in [`crate::PolicySettings`].
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// How many policy instances may be alive at once across all requests.
    pub max_instances: u32,
    /// The largest linear memory any policy may be granted, in bytes.
    pub max_memory_bytes: usize,
    /// Wasm stack limit per call, in bytes.
    pub max_wasm_stack: usize,
    /// Epoch tick: the resolution of policy time budgets.
    pub epoch_tick: Duration,
    /// Folder of compiled components kept across restarts (`None`: compile
    /// every time). See [`crate::compile_cache`].
    pub compile_cache: Option<std::path::PathBuf>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            max_instances: 1000,
            // The most a policy's config may ask for (edgegate-config refuses more).
            max_memory_bytes: 64 << 20,
            max_wasm_stack: 512 << 10,
            epoch_tick: Duration::from_millis(1),
            compile_cache: None,
        }
    }
}

/// One per process: compiles components and runs calls.
pub struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<HostState>,
    ticker: Option<EpochTicker>,
    cache: Option<CompileCache>,
}

impl Runtime {
    /// Build the engine (pooling allocator, epoch interruption) and start the epoch ticker.
    pub fn new(cfg: &RuntimeConfig) -> Result<Self, RuntimeError> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(cfg.max_instances)
            .total_core_instances(cfg.max_instances.saturating_mul(4))
            .total_memories(cfg.max_instances.saturating_mul(2))
            .total_tables(cfg.max_instances.saturating_mul(4))
            .max_core_instances_per_component(32)
            .max_memories_per_component(4)
            .max_tables_per_component(16)
            .max_memory_size(cfg.max_memory_bytes)
            .total_stacks(cfg.max_instances)
            .table_elements(20_000)
            // A fresh instance per call must not pay page faults and madvise for
            // the pages the last one touched: keep them resident and reset only
            // the dirty ones (PAGEMAP_SCAN, Linux 6.7+; plain memset elsewhere).
            .pagemap_scan(wasmtime::Enabled::Auto)
            .linear_memory_keep_resident(2 << 20)
            .table_keep_resident(64 << 10)
            .async_stack_keep_resident(cfg.max_wasm_stack + (512 << 10));
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .max_wasm_stack(cfg.max_wasm_stack)
            .async_stack_size(cfg.max_wasm_stack + (512 << 10))
            .memory_init_cow(true)
            // Reserve the whole 32-bit index space per memory slot (virtual
            // address space only: 1000 instances take ~8 TB of the 128 TB a
            // process has) so compiled code needs no bounds check on each
            // load and store; reserving only `max_memory_bytes` made
            // byte-scanning guests (redaction) about 2× slower.
            .memory_reservation(1 << 32)
            .memory_guard_size(32 << 20)
            .memory_reservation_for_growth(0)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        // `EDGEGATE_PERF_MAP=1` writes /tmp/perf-PID.map so `perf report`
        // names the functions of compiled guests (profiling only).
        let perf_map = std::env::var_os("EDGEGATE_PERF_MAP").is_some_and(|v| v == "1");
        if perf_map {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        low_priority_compile_threads();
        let engine = Engine::new(&config).map_err(|e| RuntimeError::Engine(e.to_string()))?;
        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| RuntimeError::Engine(e.to_string()))?;
        Policy::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| RuntimeError::Engine(e.to_string()))?;
        let cache = cfg.compile_cache.as_deref().and_then(|dir| {
            // Our settings that shape the engine, beside wasmtime's own hash.
            let settings = format!(
                "{CONTRACT} instances={} memory={} stack={} tick={:?} perf_map={perf_map}",
                cfg.max_instances, cfg.max_memory_bytes, cfg.max_wasm_stack, cfg.epoch_tick
            );
            match CompileCache::open(dir, &engine, &settings) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::error!(dir = %dir.display(), error = %e, "compile cache unusable; every component is compiled at start");
                    None
                }
            }
        });
        let ticker = EpochTicker::start(engine.clone(), cfg.epoch_tick);
        Ok(Self {
            engine,
            linker,
            ticker: Some(ticker),
            cache,
        })
    }

    /// Compile a component once and pre-link it; the result is cheap to instantiate per call.
    /// `digest` names the version (the caller's content digest; the runtime does not check it).
    pub fn compile(
        &self,
        name: &str,
        digest: String,
        bytes: &[u8],
    ) -> Result<Arc<CompiledComponent>, RuntimeError> {
        let cached = self
            .cache
            .as_ref()
            .and_then(|c| c.load(&self.engine, bytes));
        let outcome = match (&self.cache, &cached) {
            (None, _) => CacheOutcome::Off,
            (Some(_), Some(_)) => CacheOutcome::Hit,
            (Some(_), None) => CacheOutcome::Miss,
        };
        let component = match cached {
            Some(c) => c,
            None => {
                let c = Component::new(&self.engine, bytes).map_err(|e| RuntimeError::Compile {
                    name: name.to_string(),
                    reason: format!("{e:#}"),
                })?;
                if let Some(cache) = &self.cache {
                    cache.store(&c, bytes);
                }
                c
            }
        };
        if let Some(old) = older_contract(&self.engine, &component) {
            return Err(RuntimeError::Link {
                name: name.to_string(),
                reason: format!(
                    "it implements {old}, and this gateway runs {CONTRACT}; rebuild it against the {CONTRACT_SDK} SDK (docs/writing-a-policy.md)"
                ),
            });
        }
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| RuntimeError::Link {
                name: name.to_string(),
                reason: format!("{e:#}"),
            })?;
        let pre = crate::bindings::PolicyPre::new(pre).map_err(|e| RuntimeError::Link {
            name: name.to_string(),
            reason: format!("{e:#}"),
        })?;
        Ok(Arc::new(CompiledComponent::new(
            name,
            digest,
            bytes,
            pre,
            self.engine.clone(),
            outcome,
        )))
    }

    /// Compile-cache (hits, misses) since start; `None` without a cache.
    pub fn compile_cache_counts(&self) -> Option<(u64, u64)> {
        self.cache.as_ref().map(CompileCache::counts)
    }

    /// The underlying engine (for benchmarks and tools).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(t) = self.ticker.take() {
            t.stop();
        }
    }
}

/// The policy contract this host runs.
pub const CONTRACT: &str = "edgegate:policy@0.2.0";
const CONTRACT_SDK: &str = "0.2";

/// The contract version a component exports hooks for, when it is another
/// one than [`CONTRACT`] (an older component fails to link; this names why).
fn older_contract(engine: &Engine, component: &Component) -> Option<String> {
    let ty = component.component_type();
    let found = ty
        .exports(engine)
        .map(|(name, _)| name)
        .find(|name| name.starts_with("edgegate:policy/hooks@"))?;
    let version = found.trim_start_matches("edgegate:policy/hooks@");
    (version != CONTRACT.trim_start_matches("edgegate:policy@"))
        .then(|| format!("edgegate:policy@{version}"))
}

/// One thread advancing the engine's epoch; stores compare against it for their deadlines.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

impl EpochTicker {
    fn start(engine: Engine, tick: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("edgegate-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    engine.increment_epoch();
                }
            })
            .expect("spawning the epoch ticker thread");
        Self { stop, handle }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.handle.join();
    }
}

/// Cranelift compiles on rayon's global pool. Its threads run at a lower
/// priority (nice 10) than the request workers, so a version pushed under
/// live traffic takes idle CPU, not the workers' (bench/swap.sh measures the
/// p99 during swaps). Compiling on an idle machine is as fast as before.
fn low_priority_compile_threads() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let built = rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("edgegate-compile-{i}"))
            .start_handler(|_| lower_this_threads_priority(10))
            .build_global();
        if let Err(e) = built {
            // Someone built the global pool first: compiles run at its priority.
            tracing::debug!(error = %e, "rayon pool already built; compile threads keep their priority");
        }
    });
}

/// Lowers the calling thread's scheduling priority to `nice` (Linux; a no-op
/// elsewhere). The thread cannot raise it again without privileges, so use it
/// on threads that end with their work.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn lower_this_threads_priority(nice: i32) {
    // SAFETY: setpriority takes plain integers and touches no memory; on Linux,
    // PRIO_PROCESS with who = 0 sets the nice value of the calling thread only.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "cannot lower the compile thread's priority");
    }
}

/// Lowers the calling thread's scheduling priority (Linux only).
#[cfg(not(target_os = "linux"))]
pub fn lower_this_threads_priority(_nice: i32) {}

/// Moves the calling thread to `SCHED_IDLE` (Linux): it runs only on CPU that
/// normal threads leave, and a waking normal thread preempts it at once. For
/// threads whose work must never delay the request workers. Falls back to
/// nice 19 where the policy cannot be set.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn idle_this_thread() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler reads the param struct we pass by reference
    // and touches no other memory; pid 0 is the calling thread.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "cannot set SCHED_IDLE; using nice 19");
        lower_this_threads_priority(19);
    }
}

/// Moves the calling thread to `SCHED_IDLE` (Linux only; elsewhere it does nothing).
#[cfg(not(target_os = "linux"))]
pub fn idle_this_thread() {}
