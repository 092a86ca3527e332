//! A policy that lets every request and response through unchanged, without
//! reading its config: the baseline for measuring what a policy call costs.

use edgegate_policy_sdk::core::{
    Env, HttpRequest, PolicyError, PolicyLogic, RequestChanges, RequestOutcome,
};
use edgegate_policy_sdk::export_logic;

/// The do-nothing policy.
struct Noop;

impl PolicyLogic for Noop {
    const WANTS_RESPONSE: bool = false;

    fn from_config(_json: &str) -> Result<Self, PolicyError> {
        Ok(Noop)
    }

    fn on_request(&self, _env: &dyn Env, _req: HttpRequest) -> Result<RequestOutcome, PolicyError> {
        Ok(RequestOutcome::Continue(RequestChanges::default()))
    }
}

export_logic!(Noop);
