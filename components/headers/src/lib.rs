//! The headers policy: sets and removes request and response headers, answers
//! denied paths itself, requires a header, and carries values through the
//! context bag. The logic lives in [`rules`] and [`config`]; this file only
//! connects it to the host.

use edgegate_policy_sdk::core::{
    Env, HttpRequest, HttpResponse, PolicyError, PolicyLogic, RequestInfo, RequestOutcome,
    ResponseOutcome,
};
use edgegate_policy_sdk::export_logic;

pub mod config;
pub mod rules;

/// The exported policy: [`rules::HeaderRules`] wired to the request's context bag.
struct Headers(rules::HeaderRules);

impl PolicyLogic for Headers {
    const WANTS_RESPONSE: bool = true;

    fn from_config(json: &str) -> Result<Self, PolicyError> {
        config::HeadersConfig::parse(json).map(|c| Headers(rules::HeaderRules::new(c)))
    }

    fn on_request(&self, env: &dyn Env, req: HttpRequest) -> Result<RequestOutcome, PolicyError> {
        Ok(self.0.on_request(&req, |k, v| env.ctx_set(k, v)))
    }

    fn on_response(
        &self,
        env: &dyn Env,
        _info: &RequestInfo,
        _resp: HttpResponse,
    ) -> Result<ResponseOutcome, PolicyError> {
        Ok(self.0.on_response(|k| env.ctx_get(k)))
    }
}

export_logic!(Headers);
