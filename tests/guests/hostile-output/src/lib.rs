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

use edgegate_policy_sdk::core::{
    BodyModes, BodyState, Env, EventOutcome, HeaderOp, HttpRequest, HttpResponse, PolicyError,
    PolicyLogic, RequestChanges, RequestInfo, RequestOutcome, ResponseChanges, ResponseOutcome,
    SseEvent, StreamItem,
};
use edgegate_policy_sdk::export_logic;

/// Misbehaves as the path says.
struct HostileOutput;

fn number(path: &str, prefix: &str) -> Option<usize> {
    path.strip_prefix(prefix)?.parse().ok()
}

/// An answer with `headers` and `body`.
fn respond(status: u16, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) -> RequestOutcome {
    let mut answer = HttpResponse::new(status).with_body(body);
    for (n, v) in headers {
        answer = answer.with_header(n, v);
    }
    RequestOutcome::Respond(answer)
}

/// Go on with these header operations.
fn continue_with(headers: Vec<HeaderOp>) -> RequestOutcome {
    RequestOutcome::Continue(RequestChanges {
        headers,
        ..RequestChanges::default()
    })
}

impl PolicyLogic for HostileOutput {
    const WANTS_RESPONSE: bool = true;
    const RESPONSE_BODY: BodyModes = BodyModes::BUFFER_OR_SSE;

    fn from_config(_json: &str) -> Result<Self, PolicyError> {
        Ok(HostileOutput)
    }

    fn on_response_event(
        &self,
        env: &dyn Env,
        _state: &mut BodyState,
        item: StreamItem,
        carry: String,
    ) -> Result<EventOutcome, PolicyError> {
        let StreamItem::Event(e) = item else {
            return Ok(EventOutcome::Pass);
        };
        let emit = |events: Vec<SseEvent>, carry: String| Ok(EventOutcome::Emit { events, carry });
        match env.ctx_get("hostile.stream").as_deref() {
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
            _ => Ok(EventOutcome::Pass),
        }
    }

    fn on_request(&self, env: &dyn Env, req: HttpRequest) -> Result<RequestOutcome, PolicyError> {
        let path = req.path.as_str();
        if path.starts_with("/stream-") {
            env.ctx_set("hostile.stream", path);
        }
        if let Some(n) = number(path, "/ops/") {
            let headers = (0..n)
                .map(|i| HeaderOp::Set(format!("x-h{i}"), "v".into()))
                .collect();
            return Ok(continue_with(headers));
        }
        if let Some(n) = number(path, "/churn/") {
            let mut headers: Vec<HeaderOp> = (0..n)
                .map(|i| HeaderOp::Append("x-churn".into(), i.to_string()))
                .collect();
            headers.extend((0..n).map(|_| HeaderOp::Remove("x-churn".into())));
            return Ok(continue_with(headers));
        }
        if let Some(n) = number(path, "/respond-headers/") {
            let mut answer = HttpResponse::new(200).with_body("many headers");
            for i in 0..n {
                answer = answer.with_header(&format!("x-h{i}"), "v");
            }
            return Ok(RequestOutcome::Respond(answer));
        }
        if let Some(code) = number(path, "/status/") {
            return Ok(respond(code as u16, &[], "odd status"));
        }
        Ok(match path {
            "/lying-length" => respond(200, &[("content-length", "100")], "abc"),
            "/chunked-lie" => respond(
                200,
                &[
                    ("transfer-encoding", "chunked"),
                    ("connection", "keep-alive, x-keep"),
                ],
                "abc",
            ),
            "/big-error" => return Err(PolicyError::Internal("e".repeat(8 << 20))),
            "/forged-error" => {
                return Err(PolicyError::Internal(
                    "oops\r\n2026-01-01T00:00:00Z  INFO edgegate: forged line \x1b[31mred\x1b[0m"
                        .into(),
                ))
            }
            "/big-body" => respond(200, &[], vec![b'b'; 2 << 20]),
            "/set-x-foo" => {
                continue_with(vec![HeaderOp::Set("x-foo".into(), "from-policy".into())])
            }
            _ => RequestOutcome::pass(),
        })
    }

    fn on_response(
        &self,
        _env: &dyn Env,
        info: &RequestInfo,
        _resp: HttpResponse,
    ) -> Result<ResponseOutcome, PolicyError> {
        Ok(match number(&info.path, "/response-ops/") {
            Some(n) => ResponseOutcome::Continue(ResponseChanges {
                headers: (0..n)
                    .map(|i| HeaderOp::Set(format!("x-r{i}"), "v".into()))
                    .collect(),
                ..ResponseChanges::default()
            }),
            None => ResponseOutcome::pass(),
        })
    }
}

export_logic!(HostileOutput);
