//! Test guest whose init always refuses its config: admission must fail with
//! the key and reason it names.

use edgegate_policy_sdk::{export_policy, Error, Policy, Request, RequestVerdict};

/// Never gets past init.
struct InitFails;

impl Policy for InitFails {
    fn init(_config: &str) -> Result<Self, Error> {
        Err(Error::invalid_config("threshold", "must be positive"))
    }

    fn on_request(&self, _req: Request) -> Result<RequestVerdict, Error> {
        Ok(RequestVerdict::continue_())
    }
}

export_policy!(InitFails);
