//! Test guest whose on-request traps: the host must apply `on_error` and keep serving.

use edgegate_policy_sdk::{export_policy, Error, Policy, Request, RequestVerdict};

/// Traps in on-request.
struct Trap;

impl Policy for Trap {
    fn init(_config: &str) -> Result<Self, Error> {
        Ok(Trap)
    }

    fn on_request(&self, _req: Request) -> Result<RequestVerdict, Error> {
        #[cfg(target_arch = "wasm32")]
        core::arch::wasm32::unreachable();
        #[cfg(not(target_arch = "wasm32"))]
        panic!("trap guest");
    }
}

export_policy!(Trap);
