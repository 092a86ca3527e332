//! Test guest whose on-request recurses without end: the host's stack limit
//! must turn it into a trap.

use edgegate_policy_sdk::{export_policy, Error, Policy, Request, RequestVerdict};
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

impl Policy for Stack {
    fn init(_config: &str) -> Result<Self, Error> {
        Ok(Stack)
    }

    fn on_request(&self, _req: Request) -> Result<RequestVerdict, Error> {
        black_box(descend(0));
        Ok(RequestVerdict::continue_())
    }
}

export_policy!(Stack);
