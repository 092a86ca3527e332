//! Test guest whose on-request recurses without end: the host's stack limit
//! must turn it into a trap.

use edgegate_policy_sdk::core::{Env, HttpRequest, PolicyError, PolicyLogic, RequestOutcome};
use edgegate_policy_sdk::export_logic;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

/// Recurses forever in on-request.
struct Stack;

static DEPTH: AtomicU64 = AtomicU64::new(0);

/// Not a tail call (work after the call touches memory), and no frame takes the
/// address of a local, so each level uses the wasm stack itself rather than
/// Rust's shadow stack in linear memory: this exhausts `max_wasm_stack`.
#[inline(never)]
fn descend(depth: u64) -> u64 {
    DEPTH.store(depth, Ordering::Relaxed);
    if DEPTH.load(Ordering::Relaxed) == u64::MAX {
        return depth;
    }
    let r = descend(depth + 1);
    DEPTH.store(r, Ordering::Relaxed);
    r.wrapping_mul(3).wrapping_sub(depth)
}

impl PolicyLogic for Stack {
    // As the default `on_response` of the WIT-level trait it replaced: called, and passes.
    const WANTS_RESPONSE: bool = true;

    fn from_config(_json: &str) -> Result<Self, PolicyError> {
        Ok(Stack)
    }

    fn on_request(&self, _env: &dyn Env, _req: HttpRequest) -> Result<RequestOutcome, PolicyError> {
        black_box(descend(0));
        Ok(RequestOutcome::pass())
    }
}

export_logic!(Stack);
