//! `clock`: wall and monotonic time.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::bindings::clock::Host;
use crate::host::{Capability, HostState};

fn process_start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

impl Host for HostState {
    fn now_millis(&mut self) -> wasmtime::Result<u64> {
        self.require(Capability::Clock)?;
        Ok(SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0))
    }

    fn monotonic_nanos(&mut self) -> wasmtime::Result<u64> {
        self.require(Capability::Clock)?;
        Ok(process_start().elapsed().as_nanos() as u64)
    }
}
