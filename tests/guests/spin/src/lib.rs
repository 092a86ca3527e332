//! Test guest whose on-request never returns: the host's deadline must stop it.

use edgegate_policy_sdk::core::{Env, HttpRequest, PolicyError, PolicyLogic, RequestOutcome};
use edgegate_policy_sdk::export_logic;
use std::hint::black_box;

/// Loops forever in on-request.
struct Spin;

impl PolicyLogic for Spin {
    // As the default `on_response` of the WIT-level trait it replaced: called, and passes.
    const WANTS_RESPONSE: bool = true;

    fn from_config(_json: &str) -> Result<Self, PolicyError> {
        Ok(Spin)
    }

    fn on_request(&self, _env: &dyn Env, _req: HttpRequest) -> Result<RequestOutcome, PolicyError> {
        // black_box keeps the optimizer from proving the loop has no effect.
        let mut turns = 0u64;
        loop {
            turns = black_box(turns.wrapping_add(1));
        }
    }
}

export_logic!(Spin);
