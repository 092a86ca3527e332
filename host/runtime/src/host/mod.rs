//! Host capabilities, one module each, and the per-call state they read.
//!
//! Like Spin's factors: each capability has its config (granted per policy),
//! process-wide state (the key/value namespaces, the health source) and
//! per-call state inside [`HostState`]. `message`, `log`, `context` and
//! `metrics` are always granted; `clock`, `kv`, `health` and `crypto` only
//! when the policy's config lists them.
//!
//! Everything a guest hands a host function is bounded here, whatever the
//! guest: log lines per call and per second, context entries and bytes, kv
//! keys, entries and bytes (with a per-entry overhead), metric names and
//! calls, crypto input sizes, WASI random bytes and live WASI resources.

mod clock;
mod context;
mod crypto;
mod health;
mod kv;
mod log;
mod message;
mod metrics;

use std::sync::Arc;

use crate::policy::PolicyLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub use context::{tls_keys, ContextBag, MAX_CONTEXT_BYTES, MAX_CONTEXT_ENTRIES};
pub use crypto::MAX_CRYPTO_INPUT;
pub use health::{EndpointHealth, HealthSource, NoHealth};
pub use kv::{KvError, KvNamespace, KvStore, ENTRY_OVERHEAD, MAX_KEY_BYTES};
pub use log::{
    LogLimits, LOG_BURST_LINES, LOG_LINES_PER_SECOND, LOG_SUMMARY_INTERVAL, MAX_LOG_BYTES_PER_CALL,
    MAX_LOG_LINES_PER_CALL,
};
pub use metrics::{EventSink, NoEvents, MAX_EVENTS_PER_CALL};

/// Most bytes one `wasi:random` call may ask for (wasmtime's default is 64 MiB
/// of host memory per call; guests seed hash maps with 16).
pub const MAX_RANDOM_BYTES: u64 = 64 << 10;
/// Most WASI resources (streams, pollables, ...) one store may hold at once
/// (wasmtime's default is a million); a guest that leaks them traps instead
/// of growing the host, also across the calls of a reused instance.
pub const MAX_RESOURCES: usize = 4096;

/// A capability a policy may be granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Capability {
    /// Wall and monotonic clocks.
    Clock,
    /// The namespaced key/value store.
    Kv,
    /// The read-only upstream health view.
    Health,
    /// Native sha256 / HMAC / signature verification.
    Crypto,
}

impl Capability {
    /// The name used in config files.
    pub fn name(self) -> &'static str {
        match self {
            Capability::Clock => "clock",
            Capability::Kv => "kv",
            Capability::Health => "health",
            Capability::Crypto => "crypto",
        }
    }

    /// Parse a config name.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "clock" => Capability::Clock,
            "kv" => Capability::Kv,
            "health" => Capability::Health,
            "crypto" => Capability::Crypto,
            _ => return None,
        })
    }

    /// Every capability name, for error messages.
    pub const NAMES: &'static [&'static str] = &["clock", "kv", "health", "crypto"];
}

/// The set of capabilities granted to one policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities(u8);

impl Capabilities {
    /// Nothing granted (the default).
    pub const NONE: Capabilities = Capabilities(0);

    fn bit(c: Capability) -> u8 {
        match c {
            Capability::Clock => 1,
            Capability::Kv => 2,
            Capability::Health => 4,
            Capability::Crypto => 8,
        }
    }

    /// Grant one more capability.
    pub fn with(self, c: Capability) -> Self {
        Capabilities(self.0 | Self::bit(c))
    }

    /// Whether `c` is granted.
    pub fn has(self, c: Capability) -> bool {
        self.0 & Self::bit(c) != 0
    }
}

impl FromIterator<Capability> for Capabilities {
    fn from_iter<I: IntoIterator<Item = Capability>>(iter: I) -> Self {
        iter.into_iter()
            .fold(Capabilities::NONE, Capabilities::with)
    }
}

/// Process-wide services the host capabilities read: the health view and the
/// sink for policy counters.
#[derive(Clone)]
pub struct HostServices {
    /// Upstream health (capability `health`).
    pub health: Arc<dyn HealthSource>,
    /// Policy counters (`metrics`, always granted).
    pub events: Arc<dyn EventSink>,
}

impl HostServices {
    /// Services that know nothing and record nothing (tools, tests, benches).
    pub fn none() -> Self {
        Self {
            health: Arc::new(NoHealth),
            events: Arc::new(NoEvents),
        }
    }

    /// Log lines of `policy` dropped so far over the log bounds (per call or
    /// per second), for a metric. The count is process-wide ([`LogLimits::global`]):
    /// it survives reloads and every `HostServices` reports the same.
    pub fn log_lines_dropped(&self, policy: &str) -> u64 {
        LogLimits::global().dropped(policy)
    }

    /// [`HostServices::log_lines_dropped`] of every policy that has logged, by name.
    pub fn log_lines_dropped_by_policy(&self) -> Vec<(String, u64)> {
        LogLimits::global().dropped_by_policy()
    }
}

/// Per-call state of one policy instance: limits, grants and the request's context bag.
pub struct HostState {
    pub(crate) policy: Arc<str>,
    pub(crate) limiter: PolicyLimiter,
    pub(crate) caps: Capabilities,
    pub(crate) kv: Option<Arc<KvNamespace>>,
    pub(crate) services: HostServices,
    pub(crate) ctx: ContextBag,
    pub(crate) events_left: u32,
    /// When the running call's wall-time budget ends (`PolicyInstance::arm`).
    pub(crate) deadline: std::time::Instant,
    /// The headers of the message a head call is about (`message`); empty
    /// outside one.
    pub(crate) message: http::HeaderMap,
    log_allowance: log::CallLogAllowance,
    /// Whether this call already said that its context is full.
    context_full_warned: bool,
    /// This policy's shared log rate state, looked up on the first line.
    log: Option<Arc<log::PolicyLog>>,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl HostState {
    pub(crate) fn new(
        policy: Arc<str>,
        limiter: PolicyLimiter,
        caps: Capabilities,
        kv: Option<Arc<KvNamespace>>,
        services: HostServices,
        ctx: ContextBag,
    ) -> Self {
        // WASI with nothing granted: no files, no env, no network, no stdio.
        let wasi = WasiCtx::builder().max_random_size(MAX_RANDOM_BYTES).build();
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        Self {
            policy,
            limiter,
            caps,
            kv,
            services,
            ctx,
            events_left: MAX_EVENTS_PER_CALL,
            deadline: std::time::Instant::now(),
            message: http::HeaderMap::new(),
            log_allowance: log::CallLogAllowance::default(),
            context_full_warned: false,
            log: None,
            wasi,
            table,
        }
    }

    /// Reset the per-call allowances (metric events, log lines and bytes)
    /// before a reused instance runs its next call.
    pub(crate) fn begin_call(&mut self) {
        self.events_left = MAX_EVENTS_PER_CALL;
        self.log_allowance = log::CallLogAllowance::default();
        self.context_full_warned = false;
    }

    pub(crate) fn require(&self, c: Capability) -> wasmtime::Result<()> {
        if self.caps.has(c) {
            Ok(())
        } else {
            Err(wasmtime::format_err!(
                "capability `{}` is not granted to policy `{}`",
                c.name(),
                self.policy
            ))
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl crate::bindings::types::Host for HostState {}
