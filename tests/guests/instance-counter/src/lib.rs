//! Test guest for instance reuse: counts, in guest memory, how many requests
//! this instance has served and passes the count on in request header
//! `x-instance-calls` (always 1 with a fresh instance per call). A request
//! with header `x-trap` traps, so a test can check that a trapped instance is
//! not used again.

use std::sync::atomic::{AtomicU32, Ordering};

use edgegate_policy_sdk::core::{
    Env, HttpRequest, PolicyError, PolicyLogic, RequestChanges, RequestOutcome,
};
use edgegate_policy_sdk::export_logic;

static CALLS: AtomicU32 = AtomicU32::new(0);

/// Counts calls per instance.
struct InstanceCounter;

impl PolicyLogic for InstanceCounter {
    const WANTS_RESPONSE: bool = false;

    fn from_config(_json: &str) -> Result<Self, PolicyError> {
        Ok(InstanceCounter)
    }

    fn on_request(&self, _env: &dyn Env, req: HttpRequest) -> Result<RequestOutcome, PolicyError> {
        let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
        if req.header("x-trap").is_some() {
            panic!("asked to trap after {calls} calls");
        }
        let mut changes = RequestChanges::default();
        changes.set_header("x-instance-calls", &calls.to_string());
        Ok(RequestOutcome::Continue(changes))
    }
}

export_logic!(InstanceCounter);
