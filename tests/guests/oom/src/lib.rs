//! Test guest whose on-request allocates until memory runs out: the host's
//! memory limit refuses to grow memory, allocation fails, and with
//! `panic = "abort"` that aborts, which is a trap.

use edgegate_policy_sdk::{export_policy, Error, Policy, Request, RequestVerdict};
use std::hint::black_box;

/// Allocates 1 MiB blocks in on-request until allocation fails.
struct Oom;

const BLOCK: usize = 1 << 20;

impl Policy for Oom {
    fn init(_config: &str) -> Result<Self, Error> {
        Ok(Oom)
    }

    fn on_request(&self, _req: Request) -> Result<RequestVerdict, Error> {
        let mut blocks: Vec<Vec<u8>> = Vec::new();
        loop {
            // Touch the block so neither the allocation nor the memory is optimized away.
            blocks.push(black_box(vec![1u8; BLOCK]));
            black_box(&blocks);
        }
    }
}

export_policy!(Oom);
