//! Test guest for `request_body = "buffer"`: answers 200 with the request body
//! it was given, or 400 "no body" when it got none.

use edgegate_policy_sdk::{export_policy, Error, Policy, Request, RequestVerdict};

/// Echoes the buffered request body.
struct BodyEcho;

impl Policy for BodyEcho {
    fn init(_config: &str) -> Result<Self, Error> {
        Ok(BodyEcho)
    }

    fn on_request(&self, req: Request) -> Result<RequestVerdict, Error> {
        Ok(match req.body {
            Some(body) => RequestVerdict::respond(200, Vec::new(), body),
            None => RequestVerdict::respond(400, Vec::new(), "no body"),
        })
    }
}

export_policy!(BodyEcho);
