//! Test guest for the `kv` capability: counts hits and passes the count on in
//! request header `x-hits`; answers 500 "kv denied" when `kv` is not granted.

use edgegate_policy_sdk::core::{
    Env, HttpRequest, HttpResponse, KvError, PolicyError, PolicyLogic, RequestChanges,
    RequestOutcome,
};
use edgegate_policy_sdk::export_logic;

/// Increments kv counter `hits` on every request.
struct KvUser;

impl PolicyLogic for KvUser {
    // As the default `on_response` of the WIT-level trait it replaced: called, and passes.
    const WANTS_RESPONSE: bool = true;

    fn from_config(_json: &str) -> Result<Self, PolicyError> {
        Ok(KvUser)
    }

    fn on_request(&self, env: &dyn Env, _req: HttpRequest) -> Result<RequestOutcome, PolicyError> {
        match env.kv_incr("hits", 1, None) {
            Ok(hits) => {
                let mut changes = RequestChanges::default();
                changes.set_header("x-hits", &hits.to_string());
                Ok(RequestOutcome::Continue(changes))
            }
            Err(KvError::Denied) => Ok(RequestOutcome::Respond(
                HttpResponse::new(500).with_body("kv denied"),
            )),
            Err(other) => Err(PolicyError::Internal(other.to_string())),
        }
    }
}

export_logic!(KvUser);
