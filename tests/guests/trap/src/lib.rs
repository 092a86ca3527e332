//! Test guest whose on-request traps: the host must apply `on_error` and keep serving.

use edgegate_policy_sdk::core::{Env, HttpRequest, PolicyError, PolicyLogic, RequestOutcome};
use edgegate_policy_sdk::export_logic;

/// Traps in on-request.
struct Trap;

impl PolicyLogic for Trap {
    // As the default `on_response` of the WIT-level trait it replaced: called, and passes.
    const WANTS_RESPONSE: bool = true;

    fn from_config(_json: &str) -> Result<Self, PolicyError> {
        Ok(Trap)
    }

    fn on_request(&self, _env: &dyn Env, _req: HttpRequest) -> Result<RequestOutcome, PolicyError> {
        #[cfg(target_arch = "wasm32")]
        core::arch::wasm32::unreachable();
        #[cfg(not(target_arch = "wasm32"))]
        panic!("trap guest");
    }
}

export_logic!(Trap);
