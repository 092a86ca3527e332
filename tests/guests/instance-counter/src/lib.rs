//! Test guest for instance reuse: counts, in guest memory, how many requests
//! this instance has served and passes the count on in request header
//! `x-instance-calls` (always 1 with a fresh instance per call). A request
//! with header `x-trap` traps, so a test can check that a trapped instance is
//! not used again.

use std::sync::atomic::{AtomicU32, Ordering};

use edgegate_policy_sdk::{
    export_policy, Error, Policy, Request, RequestMutations, RequestVerdict,
};

static CALLS: AtomicU32 = AtomicU32::new(0);

/// Counts calls per instance.
struct InstanceCounter;

impl Policy for InstanceCounter {
    const WANTS_RESPONSE: bool = false;

    fn init(_config: &str) -> Result<Self, Error> {
        Ok(InstanceCounter)
    }

    fn on_request(&self, req: Request) -> Result<RequestVerdict, Error> {
        let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
        if req.header("x-trap").is_some() {
            panic!("asked to trap after {calls} calls");
        }
        let mut changes = RequestMutations::default();
        changes.set_header("x-instance-calls", &calls.to_string());
        Ok(RequestVerdict::continue_with(changes))
    }
}

export_policy!(InstanceCounter);
