//! Test guest whose on-request never returns: the host's deadline must stop it.

use edgegate_policy_sdk::{export_policy, Error, Policy, Request, RequestVerdict};
use std::hint::black_box;

/// Loops forever in on-request.
struct Spin;

impl Policy for Spin {
    fn init(_config: &str) -> Result<Self, Error> {
        Ok(Spin)
    }

    fn on_request(&self, _req: Request) -> Result<RequestVerdict, Error> {
        // black_box keeps the optimizer from proving the loop has no effect.
        let mut turns = 0u64;
        loop {
            turns = black_box(turns.wrapping_add(1));
        }
    }
}

export_policy!(Spin);
