//! A policy that lets every request and response through unchanged, without
//! reading its config: the baseline for measuring what a policy call costs.

use edgegate_policy_sdk::{export_policy, Error, Policy, Request, RequestVerdict};

/// The do-nothing policy.
struct Noop;

impl Policy for Noop {
    const WANTS_RESPONSE: bool = false;

    fn init(_config: &str) -> Result<Self, Error> {
        Ok(Noop)
    }

    fn on_request(&self, _req: Request) -> Result<RequestVerdict, Error> {
        Ok(RequestVerdict::continue_())
    }
}

export_policy!(Noop);
