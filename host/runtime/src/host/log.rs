//! `log`: guest log lines into the host's `tracing` output, tagged with the policy.

use crate::bindings::log::{Host, Level};
use crate::host::HostState;

/// Longest log message kept; the rest is cut so a guest cannot flood the log.
const MAX_LOG_MESSAGE: usize = 4096;

impl Host for HostState {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let mut message = message;
        if message.len() > MAX_LOG_MESSAGE {
            let mut cut = MAX_LOG_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let policy = &*self.policy;
        match level {
            Level::Trace => tracing::trace!(target: "edgegate::policy", policy, "{message}"),
            Level::Debug => tracing::debug!(target: "edgegate::policy", policy, "{message}"),
            Level::Info => tracing::info!(target: "edgegate::policy", policy, "{message}"),
            Level::Warn => tracing::warn!(target: "edgegate::policy", policy, "{message}"),
            Level::Error => tracing::error!(target: "edgegate::policy", policy, "{message}"),
        }
        Ok(())
    }
}
