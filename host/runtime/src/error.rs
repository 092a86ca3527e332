//! Typed errors of the runtime.

use crate::bindings::types;
use crate::guest_text::{guest_text, MAX_GUEST_ERROR};

/// Errors loading or compiling a component.
///
/// wasmtime's reasons quote the component (import and export names, custom
/// sections), which its author chose, so `Display` passes them through
/// [`guest_text`].
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The engine could not be configured.
    #[error("configuring the wasm engine: {0}")]
    Engine(String),
    /// The bytes are not a valid component or failed to compile.
    #[error(
        "compiling component `{name}`: {}",
        guest_text(reason, MAX_GUEST_ERROR)
    )]
    Compile {
        /// Policy name.
        name: String,
        /// What wasmtime said.
        reason: String,
    },
    /// The component imports or exports something edgegate does not provide.
    #[error(
        "component `{name}` does not fit the edgegate:policy world: {}",
        guest_text(reason, MAX_GUEST_ERROR)
    )]
    Link {
        /// Policy name.
        name: String,
        /// What wasmtime said.
        reason: String,
    },
}

/// Why a policy call did not produce a verdict; the gateway applies the policy's `on_error`.
///
/// Its messages may come from the guest, so `Display` passes each through
/// [`guest_text`]: however a failure was built (here, in `policy.rs` or in the
/// gateway), what reaches a log or a terminal is bounded and escaped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyFailure {
    /// The guest trapped (unreachable, panic, bad memory access, ...).
    #[error("trapped: {}", guest_text(.0, MAX_GUEST_ERROR))]
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
    #[error("could not instantiate: {}", guest_text(.0, MAX_GUEST_ERROR))]
    Instantiate(String),
    /// `init` refused the policy's config.
    #[error(
        "invalid config: key `{}`: {}",
        guest_text(key, MAX_GUEST_ERROR),
        guest_text(reason, MAX_GUEST_ERROR)
    )]
    InvalidConfig {
        /// Key path inside the policy's config table.
        key: String,
        /// Why the guest refused it.
        reason: String,
    },
    /// The guest returned an error of its own.
    #[error("policy error: {}", guest_text(.0, MAX_GUEST_ERROR))]
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

/// A guest's error, cut and escaped here so a megabyte message is not kept,
/// copied and logged on every request.
impl From<types::Error> for PolicyFailure {
    fn from(e: types::Error) -> Self {
        match e {
            types::Error::InvalidConfig(c) => PolicyFailure::InvalidConfig {
                key: guest_text(&c.key, MAX_GUEST_ERROR),
                reason: guest_text(&c.reason, MAX_GUEST_ERROR),
            },
            types::Error::Internal(m) => PolicyFailure::Guest(guest_text(&m, MAX_GUEST_ERROR)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_errors_are_cut_and_escaped_when_converted() {
        let huge = format!("boom\r\nFAKE LINE\u{1b}[2J{}", "x".repeat(8 << 20));
        let PolicyFailure::Guest(m) = PolicyFailure::from(types::Error::Internal(huge)) else {
            panic!("not a guest error");
        };
        assert!(m.len() <= MAX_GUEST_ERROR, "{}", m.len());
        assert!(m.starts_with("boom\\r\\nFAKE LINE\\u{1b}[2Jxxx"), "{m}");
        assert!(m.ends_with(" bytes cut)"), "{m}");

        let refused = PolicyFailure::from(types::Error::InvalidConfig(types::ConfigError {
            key: "keys[0]\n".into(),
            reason: "y".repeat(10 << 20),
        }));
        let PolicyFailure::InvalidConfig { key, reason } = &refused else {
            panic!("not an invalid-config error");
        };
        assert_eq!(key, "keys[0]\\n");
        assert!(reason.len() <= MAX_GUEST_ERROR);
        let shown = refused.to_string();
        assert!(
            shown.starts_with("invalid config: key `keys[0]\\n`: yyy"),
            "{shown}"
        );
        assert!(shown.len() < 2 * MAX_GUEST_ERROR + 64);
    }

    #[test]
    fn display_treats_failures_built_elsewhere() {
        // Built directly (as `policy.rs` and the gateway do), not through `From`.
        let trap = PolicyFailure::Trap(format!(
            "wasm backtrace:\n 0: \u{1b}[31mf{}",
            "z".repeat(1 << 20)
        ));
        let shown = trap.to_string();
        assert!(
            shown.starts_with("trapped: wasm backtrace:\\n 0: \\u{1b}[31mf"),
            "{shown}"
        );
        assert!(shown.len() <= "trapped: ".len() + MAX_GUEST_ERROR);
        let header = PolicyFailure::Guest("invalid header name `a\r\nset-cookie: x`".into());
        assert_eq!(
            header.to_string(),
            "policy error: invalid header name `a\\r\\nset-cookie: x`"
        );
        let link = RuntimeError::Link {
            name: "p".into(),
            reason: "no import `evil\n2025 INFO forged`".into(),
        };
        assert_eq!(
            link.to_string(),
            "component `p` does not fit the edgegate:policy world: no import `evil\\n2025 INFO forged`"
        );
        let inst = PolicyFailure::Instantiate("\u{202e}pool".into());
        assert_eq!(inst.to_string(), "could not instantiate: \\u{202e}pool");
    }
}
