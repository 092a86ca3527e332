//! Test guest whose init always refuses its config: admission must fail with
//! the key and reason it names.

use edgegate_policy_sdk::core::{Env, HttpRequest, PolicyError, PolicyLogic, RequestOutcome};
use edgegate_policy_sdk::export_logic;

/// Never gets past init.
struct InitFails;

impl PolicyLogic for InitFails {
    // As the default `on_response` of the WIT-level trait it replaced: called, and passes.
    const WANTS_RESPONSE: bool = true;

    fn from_config(_json: &str) -> Result<Self, PolicyError> {
        Err(PolicyError::config("threshold", "must be positive"))
    }

    fn on_request(&self, _env: &dyn Env, _req: HttpRequest) -> Result<RequestOutcome, PolicyError> {
        Ok(RequestOutcome::pass())
    }
}

export_logic!(InitFails);
