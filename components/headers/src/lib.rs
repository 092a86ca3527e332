//! The headers policy: sets and removes request and response headers, answers
//! denied paths itself, requires a header, and carries values through the
//! context bag. The logic lives in [`rules`] and [`config`]; this file only
//! connects it to the host.

use edgegate_policy_sdk::{
    context, export_policy, Error, Policy, Request, RequestSummary, RequestVerdict, ResponseHead,
    ResponseVerdict,
};

pub mod config;
pub mod rules;

/// The exported policy: [`rules::HeaderRules`] wired to the host's context bag.
struct Headers(rules::HeaderRules);

impl Policy for Headers {
    fn init(config: &str) -> Result<Self, Error> {
        config::HeadersConfig::parse(config).map(|c| Headers(rules::HeaderRules::new(c)))
    }

    fn on_request(&self, req: Request) -> Result<RequestVerdict, Error> {
        Ok(self.0.on_request(&req, context::set))
    }

    fn on_response(
        &self,
        _req: RequestSummary,
        _resp: ResponseHead,
    ) -> Result<ResponseVerdict, Error> {
        Ok(self.0.on_response(context::get))
    }
}

export_policy!(Headers);
