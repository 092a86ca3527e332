//! Test guest for the `kv` capability: counts hits and passes the count on in
//! request header `x-hits`; answers 500 "kv denied" when `kv` is not granted.

use edgegate_policy_sdk::kv::{self, KvError};
use edgegate_policy_sdk::{
    export_policy, Error, Policy, Request, RequestMutations, RequestVerdict,
};

/// Increments kv counter `hits` on every request.
struct KvUser;

impl Policy for KvUser {
    fn init(_config: &str) -> Result<Self, Error> {
        Ok(KvUser)
    }

    fn on_request(&self, _req: Request) -> Result<RequestVerdict, Error> {
        match kv::incr("hits", 1, None) {
            Ok(hits) => {
                let mut changes = RequestMutations::default();
                changes.set_header("x-hits", &hits.to_string());
                Ok(RequestVerdict::continue_with(changes))
            }
            Err(KvError::Denied) => Ok(RequestVerdict::respond(500, Vec::new(), "kv denied")),
            Err(other) => Err(other.into()),
        }
    }
}

export_policy!(KvUser);
