//! The wasmtime side of edgegate: one engine, compiled policy components,
//! a fresh limited store per call, and the host capabilities policies may be granted.

pub mod bindings;
pub mod compile_cache;
mod engine;
mod error;
mod guest_text;
pub mod host;
mod policy;

pub use compile_cache::CacheOutcome;
pub use engine::{idle_this_thread, lower_this_threads_priority, Runtime, RuntimeConfig, CONTRACT};
pub use error::{PolicyFailure, RuntimeError};
pub use guest_text::{guest_text, MAX_GUEST_ERROR, MAX_GUEST_LOG_LINE};
pub use host::{
    tls_keys, Capabilities, Capability, ContextBag, EventSink, HealthSource, HostServices, KvStore,
    LogLimits,
};
pub use policy::{CompiledComponent, Lease, PolicyInstance, PolicySettings};
