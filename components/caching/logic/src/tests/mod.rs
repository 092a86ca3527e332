//! Native tests of the caching logic: whole exchanges (request phase, upstream,
//! response phase) against an in-memory key/value store and a settable clock.

#![allow(clippy::unwrap_used)]

use super::*;
use edgegate_policy_core::testing::MemoryEnv;
use edgegate_policy_core::ConfigError;
use serde_json::json;

mod config;
mod http;
mod llm;

const START_MS: u64 = 1_700_000_000_000;

fn caching(config: serde_json::Value) -> Caching {
    Caching::from_config(&config.to_string()).unwrap()
}

fn get(path: &str) -> HttpRequest {
    request("GET", path)
}

fn request(method: &str, path: &str) -> HttpRequest {
    HttpRequest {
        authority: "example.com".into(),
        route: "web".into(),
        ..HttpRequest::new(method, path)
    }
}

fn upstream(body: &str, headers: &[(&str, &str)]) -> HttpResponse {
    HttpResponse {
        status: 200,
        headers: [("content-type", "text/plain")]
            .iter()
            .chain(headers)
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        body: Some(body.as_bytes().to_vec()),
    }
}

/// What the client got, and whether the upstream was asked.
struct Exchange {
    resp: HttpResponse,
    /// The response's headers as a list, to read without copies.
    fields: edgegate_policy_core::Headers,
    upstream_called: bool,
}

impl Exchange {
    fn new(resp: HttpResponse, upstream_called: bool) -> Self {
        Exchange {
            fields: resp.headers.to_vec(),
            resp,
            upstream_called,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        edgegate_policy_core::header(&self.fields, name)
    }

    fn status(&self) -> Option<&str> {
        self.header("x-edgegate-cache")
    }

    fn body(&self) -> Option<&str> {
        self.resp
            .body
            .as_deref()
            .map(|b| std::str::from_utf8(b).unwrap())
    }
}

/// One request through the policy as the host runs it: a fresh context bag
/// (keeping the `principal` auth would have set), the request phase, the
/// upstream when the cache did not answer, the response phase.
fn send(c: &Caching, env: &MemoryEnv, req: HttpRequest, from_upstream: &HttpResponse) -> Exchange {
    let principal = env.ctx_get(ctx::PRINCIPAL);
    env.ctx.borrow_mut().clear();
    if let Some(p) = principal {
        env.ctx_set(ctx::PRINCIPAL, &p);
    }
    let info = req.info("app");
    match c.on_request(env, req).unwrap() {
        RequestOutcome::Respond(resp) => Exchange::new(resp, false),
        RequestOutcome::Continue(changes) => {
            assert_eq!(
                changes,
                Default::default(),
                "a miss changes nothing upstream"
            );
            let mut resp = from_upstream.clone();
            match c.on_response(env, &info, resp.clone()).unwrap() {
                ResponseOutcome::Continue(changes) => {
                    for op in changes.headers {
                        let HeaderOp::Set(name, value) = op else {
                            panic!("unexpected {op:?}")
                        };
                        let fields = resp.headers.list_mut();
                        fields.retain(|(n, _)| *n != name);
                        fields.push((name, value));
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
            Exchange::new(resp, true)
        }
        other => panic!("unexpected {other:?}"),
    }
}

fn setup(config: serde_json::Value) -> (Caching, MemoryEnv) {
    (caching(config), MemoryEnv::at(START_MS))
}

fn refused(config: serde_json::Value) -> ConfigError {
    match Caching::from_config(&config.to_string()) {
        Err(PolicyError::Config(e)) => e,
        Err(other) => panic!("expected a config error, got {other:?}"),
        Ok(_) => panic!("expected a config error for {config}"),
    }
}
