//! Host capabilities, one module each, and the per-call state they read.
//!
//! Like Spin's factors: each capability has its config (granted per policy),
//! process-wide state (the key/value namespaces, the health source) and
//! per-call state inside [`HostState`]. `log` and `context` are always granted;
//! `clock`, `kv`, `health` and `crypto` only when the policy's config lists them.

mod clock;
mod context;
mod crypto;
mod health;
mod kv;
mod log;
mod metrics;

use std::sync::Arc;

use crate::policy::PolicyLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub use context::ContextBag;
pub use health::{EndpointHealth, HealthSource, NoHealth};
pub use kv::{KvError, KvNamespace, KvStore};
pub use metrics::{EventSink, NoEvents, MAX_EVENTS_PER_CALL};

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
        let wasi = WasiCtx::builder().build();
        Self {
            policy,
            limiter,
            caps,
            kv,
            services,
            ctx,
            events_left: MAX_EVENTS_PER_CALL,
            wasi,
            table: ResourceTable::new(),
        }
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
