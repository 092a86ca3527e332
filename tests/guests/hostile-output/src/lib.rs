//! Test guest whose outputs are hostile: the host must bound and validate
//! everything it returns. What it does is chosen by the request path:
//!
//! - `/ops/N`: continue with N distinct `set` header operations;
//! - `/churn/N`: N appends of one name followed by N removes (host CPU);
//! - `/respond-headers/N`: answer with N distinct headers;
//! - `/response-ops/N`: pass the request on, then N header ops in the response phase;
//! - `/lying-length`: answer `content-length: 100` with a 3-byte body;
//! - `/chunked-lie`: answer `transfer-encoding: chunked` with a plain body;
//! - `/status/N`: answer with status N (101, 99, 600, ...);
//! - `/big-error`: fail with an 8 MiB error string;
//! - `/forged-error`: fail with CR/LF and ANSI escapes that mimic a log line;
//! - `/big-body`: answer with a 2 MiB body;
//! - `/set-x-foo`: set request header `x-foo: from-policy` and pass on.

use edgegate_policy_sdk::{
    export_policy, Error, HeaderOp, Policy, Request, RequestMutations, RequestSummary,
    RequestVerdict, ResponseHead, ResponseMutations, ResponseVerdict,
};

/// Misbehaves as the path says.
struct HostileOutput;

fn number(path: &str, prefix: &str) -> Option<usize> {
    path.strip_prefix(prefix)?.parse().ok()
}

impl Policy for HostileOutput {
    fn init(_config: &str) -> Result<Self, Error> {
        Ok(HostileOutput)
    }

    fn on_request(&self, req: Request) -> Result<RequestVerdict, Error> {
        let path = req.path.as_str();
        if let Some(n) = number(path, "/ops/") {
            let headers = (0..n)
                .map(|i| HeaderOp::set(format!("x-h{i}"), "v"))
                .collect();
            return Ok(RequestVerdict::continue_with(RequestMutations {
                headers,
                ..RequestMutations::default()
            }));
        }
        if let Some(n) = number(path, "/churn/") {
            let mut headers: Vec<HeaderOp> = (0..n)
                .map(|i| HeaderOp::append("x-churn", i.to_string()))
                .collect();
            headers.extend((0..n).map(|_| HeaderOp::remove("x-churn")));
            return Ok(RequestVerdict::continue_with(RequestMutations {
                headers,
                ..RequestMutations::default()
            }));
        }
        if let Some(n) = number(path, "/respond-headers/") {
            let headers = (0..n)
                .map(|i| (format!("x-h{i}"), "v".to_string()))
                .collect();
            return Ok(RequestVerdict::respond(200, headers, "many headers"));
        }
        if let Some(code) = number(path, "/status/") {
            return Ok(RequestVerdict::respond(
                code as u16,
                Vec::new(),
                "odd status",
            ));
        }
        Ok(match path {
            "/lying-length" => {
                RequestVerdict::respond(200, vec![("content-length".into(), "100".into())], "abc")
            }
            "/chunked-lie" => RequestVerdict::respond(
                200,
                vec![
                    ("transfer-encoding".into(), "chunked".into()),
                    ("connection".into(), "keep-alive, x-keep".into()),
                ],
                "abc",
            ),
            "/big-error" => return Err(Error::internal("e".repeat(8 << 20))),
            "/forged-error" => {
                return Err(Error::internal(
                    "oops\r\n2026-01-01T00:00:00Z  INFO edgegate: forged line \x1b[31mred\x1b[0m",
                ))
            }
            "/big-body" => RequestVerdict::respond(200, Vec::new(), vec![b'b'; 2 << 20]),
            "/set-x-foo" => RequestVerdict::continue_with(RequestMutations {
                headers: vec![HeaderOp::set("x-foo", "from-policy")],
                ..RequestMutations::default()
            }),
            _ => RequestVerdict::continue_(),
        })
    }

    fn on_response(
        &self,
        req: RequestSummary,
        _resp: ResponseHead,
    ) -> Result<ResponseVerdict, Error> {
        Ok(match number(&req.path, "/response-ops/") {
            Some(n) => ResponseVerdict::continue_with(ResponseMutations {
                headers: (0..n)
                    .map(|i| HeaderOp::set(format!("x-r{i}"), "v"))
                    .collect(),
                ..ResponseMutations::default()
            }),
            None => ResponseVerdict::continue_(),
        })
    }
}

export_policy!(HostileOutput);
