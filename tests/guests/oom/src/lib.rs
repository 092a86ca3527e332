//! Test guest whose on-request allocates until memory runs out: the host's
//! memory limit refuses to grow memory, allocation fails, and with
//! `panic = "abort"` that aborts, which is a trap.

use edgegate_policy_sdk::core::{Env, HttpRequest, PolicyError, PolicyLogic, RequestOutcome};
use edgegate_policy_sdk::export_logic;
use std::hint::black_box;

/// Allocates 1 MiB blocks in on-request until allocation fails.
struct Oom;

const BLOCK: usize = 1 << 20;

impl PolicyLogic for Oom {
    // As the default `on_response` of the WIT-level trait it replaced: called, and passes.
    const WANTS_RESPONSE: bool = true;

    fn from_config(_json: &str) -> Result<Self, PolicyError> {
        Ok(Oom)
    }

    fn on_request(&self, _env: &dyn Env, _req: HttpRequest) -> Result<RequestOutcome, PolicyError> {
        let mut blocks: Vec<Vec<u8>> = Vec::new();
        loop {
            // Touch the block so neither the allocation nor the memory is optimized away.
            blocks.push(black_box(vec![1u8; BLOCK]));
            black_box(&blocks);
        }
    }
}

export_logic!(Oom);
