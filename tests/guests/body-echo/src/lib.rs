//! Test guest for request bodies. With `request_body = "buffer"` it answers
//! 200 with the request body it was given, or 400 "no body" when it got none.
//! With `request_body = "stream"` it lets the request go on and rewrites its
//! body as it streams: every `a` becomes `b`; a chunk with `STOP` in it ends
//! the body with the error `stop_seen`; and it holds back a trailing `S`,
//! `ST` or `STO` (a carry), so a `STOP` split between chunks is seen too.

use edgegate_policy_sdk::core::{
    BodyModes, BodyState, Chunk, ChunkOutcome, Env, HttpRequest, HttpResponse, PolicyError,
    PolicyLogic, RequestOutcome, StreamError,
};
use edgegate_policy_sdk::export_logic;

/// Echoes the buffered request body, or rewrites a streamed one.
struct BodyEcho;

impl PolicyLogic for BodyEcho {
    // As the default `on_response` of the WIT-level trait it replaced: called, and passes.
    const WANTS_RESPONSE: bool = true;
    const REQUEST_BODY: BodyModes = BodyModes {
        buffer: true,
        chunks: true,
        sse: false,
    };

    fn from_config(_json: &str) -> Result<Self, PolicyError> {
        Ok(BodyEcho)
    }

    fn on_request(&self, _env: &dyn Env, req: HttpRequest) -> Result<RequestOutcome, PolicyError> {
        if req.path.starts_with("/stream") {
            return Ok(RequestOutcome::pass());
        }
        Ok(match req.body {
            Some(body) => RequestOutcome::Respond(HttpResponse::new(200).with_body(body)),
            None => RequestOutcome::Respond(HttpResponse::new(400).with_body("no body")),
        })
    }

    fn on_request_chunk(
        &self,
        _env: &dyn Env,
        _state: &mut BodyState,
        chunk: Chunk,
    ) -> Result<ChunkOutcome, PolicyError> {
        let mut data = chunk.data;
        if data.windows(4).any(|w| w == b"STOP") {
            return Ok(ChunkOutcome::Fail(StreamError::new(
                "stop_seen",
                "the body said STOP",
            )));
        }
        for b in &mut data {
            if *b == b'a' {
                *b = b'b';
            }
        }
        // A `STOP` may be split between chunks: hold back its start.
        let held = if chunk.end.is_some() {
            0
        } else {
            ["STO", "ST", "S"]
                .iter()
                .find(|p| data.ends_with(p.as_bytes()))
                .map_or(0, |p| p.len())
        };
        let carry = data.split_off(data.len() - held);
        Ok(ChunkOutcome::Emit { data, carry })
    }
}

export_logic!(BodyEcho);
