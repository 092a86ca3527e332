//! Test guest for request bodies. With `request_body = "buffer"` it answers
//! 200 with the request body it was given, or 400 "no body" when it got none.
//! With `request_body = "stream"` it lets the request go on and rewrites its
//! body as it streams: every `a` becomes `b`; a chunk with `STOP` in it ends
//! the body with the error `stop_seen`; and it holds back a trailing `S`,
//! `ST` or `STO` (a carry), so a `STOP` split between chunks is seen too.

use edgegate_policy_sdk::{
    export_policy, BodyChunk, BodyModes, ChunkOutput, ChunkVerdict, Error, Policy, Request,
    RequestVerdict, StreamError,
};

/// Echoes the buffered request body, or rewrites a streamed one.
struct BodyEcho;

impl Policy for BodyEcho {
    const REQUEST_BODY: BodyModes = BodyModes {
        buffer: true,
        chunks: true,
        sse: false,
    };

    fn init(_config: &str) -> Result<Self, Error> {
        Ok(BodyEcho)
    }

    fn on_request(&self, req: Request) -> Result<RequestVerdict, Error> {
        if req.path.starts_with("/stream") {
            return Ok(RequestVerdict::continue_());
        }
        Ok(match req.body {
            Some(body) => RequestVerdict::respond(200, Vec::new(), body),
            None => RequestVerdict::respond(400, Vec::new(), "no body"),
        })
    }

    fn on_request_chunk(&self, chunk: BodyChunk) -> Result<ChunkVerdict, Error> {
        let mut data = chunk.data;
        if data.windows(4).any(|w| w == b"STOP") {
            return Ok(ChunkVerdict::Fail(StreamError {
                code: "stop_seen".into(),
                message: "the body said STOP".into(),
            }));
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
        Ok(ChunkVerdict::Emit(ChunkOutput { data, carry }))
    }
}

export_policy!(BodyEcho);
