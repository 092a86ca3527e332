//! Typed errors of the runtime.

use crate::bindings::types;

/// Errors loading or compiling a component.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The engine could not be configured.
    #[error("configuring the wasm engine: {0}")]
    Engine(String),
    /// The bytes are not a valid component or failed to compile.
    #[error("compiling component `{name}`: {reason}")]
    Compile {
        /// Policy name.
        name: String,
        /// What wasmtime said.
        reason: String,
    },
    /// The component imports or exports something edgegate does not provide.
    #[error("component `{name}` does not fit the edgegate:policy world: {reason}")]
    Link {
        /// Policy name.
        name: String,
        /// What wasmtime said.
        reason: String,
    },
}

/// Why a policy call did not produce a verdict; the gateway applies the policy's `on_error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyFailure {
    /// The guest trapped (unreachable, panic, bad memory access, ...).
    #[error("trapped: {0}")]
    Trap(String),
    /// The wall-time budget ran out (epoch deadline).
    #[error("timed out after {0} ms")]
    Timeout(u64),
    /// The guest tried to grow its memory past its limit.
    #[error("ran out of memory (limit {0} bytes)")]
    OutOfMemory(usize),
    /// The guest's stack overflowed.
    #[error("stack overflow")]
    StackOverflow,
    /// Instantiation failed (e.g. the instance pool is exhausted).
    #[error("could not instantiate: {0}")]
    Instantiate(String),
    /// `init` refused the policy's config.
    #[error("invalid config: key `{key}`: {reason}")]
    InvalidConfig {
        /// Key path inside the policy's config table.
        key: String,
        /// Why the guest refused it.
        reason: String,
    },
    /// The guest returned an error of its own.
    #[error("policy error: {0}")]
    Guest(String),
}

impl PolicyFailure {
    /// Short stable label for metrics (`trap`, `timeout`, `oom`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            PolicyFailure::Trap(_) => "trap",
            PolicyFailure::Timeout(_) => "timeout",
            PolicyFailure::OutOfMemory(_) => "oom",
            PolicyFailure::StackOverflow => "stack_overflow",
            PolicyFailure::Instantiate(_) => "instantiate",
            PolicyFailure::InvalidConfig { .. } => "invalid_config",
            PolicyFailure::Guest(_) => "guest_error",
        }
    }

    /// True for failures of the sandbox (trap, timeout, memory, stack), as opposed to errors the guest returned.
    pub fn is_trap(&self) -> bool {
        matches!(
            self,
            PolicyFailure::Trap(_)
                | PolicyFailure::Timeout(_)
                | PolicyFailure::OutOfMemory(_)
                | PolicyFailure::StackOverflow
        )
    }
}

impl From<types::Error> for PolicyFailure {
    fn from(e: types::Error) -> Self {
        match e {
            types::Error::InvalidConfig(c) => PolicyFailure::InvalidConfig {
                key: c.key,
                reason: c.reason,
            },
            types::Error::Internal(m) => PolicyFailure::Guest(m),
        }
    }
}
