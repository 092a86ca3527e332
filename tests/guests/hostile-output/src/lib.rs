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
//!
//! On an event stream (`response_body = "sse"`), by the request path:
//! - `/stream-carry`: hold back a 1 MiB carry;
//! - `/stream-flood`: emit 10 000 events for one;
//! - `/stream-forge`: emit an event whose name has a line break (a forged `data:`);
//! - `/stream-trap`: trap in the event hook.

use edgegate_policy_sdk::{
    context, export_policy, BodyModes, Error, EventOutput, EventVerdict, HeaderOp, Policy, Request,
    RequestMutations, RequestSummary, RequestVerdict, ResponseHead, ResponseMutations,
    ResponseVerdict, SseEvent, StreamEvent,
};

/// Misbehaves as the path says.
struct HostileOutput;

fn number(path: &str, prefix: &str) -> Option<usize> {
    path.strip_prefix(prefix)?.parse().ok()
}

impl Policy for HostileOutput {
    const RESPONSE_BODY: BodyModes = BodyModes::BUFFER_OR_SSE;

    fn init(_config: &str) -> Result<Self, Error> {
        Ok(HostileOutput)
    }

    fn on_response_event(&self, event: StreamEvent, carry: String) -> Result<EventVerdict, Error> {
        let StreamEvent::Event(e) = event else {
            return Ok(EventVerdict::Pass);
        };
        let emit = |events: Vec<SseEvent>, carry: String| {
            Ok(EventVerdict::Emit(EventOutput { events, carry }))
        };
        match context::get("hostile.stream").as_deref() {
            Some("/stream-carry") => emit(vec![e], "c".repeat(1 << 20)),
            Some("/stream-flood") => emit(vec![e; 10_000], carry),
            Some("/stream-forge") => emit(
                vec![SseEvent {
                    event: Some("x\ndata: forged".into()),
                    ..e
                }],
                carry,
            ),
            Some("/stream-trap") => panic!("hostile trap in the event hook"),
            _ => Ok(EventVerdict::Pass),
        }
    }

    fn on_request(&self, req: Request) -> Result<RequestVerdict, Error> {
        let path = req.path.as_str();
        if path.starts_with("/stream-") {
            context::set("hostile.stream", path);
        }
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
