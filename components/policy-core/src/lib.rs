//! The vocabulary of edgegate's policy logic, without any WIT bindings.
//!
//! The four shipped policies (auth, routing, redaction, caching) are written
//! against these plain types and the [`Env`] trait. The component shim
//! (`edgegate_policy_sdk::export_logic!`) maps them onto the `edgegate:policy`
//! WIT world; other hosts (the Spin gateway) implement [`Env`] themselves;
//! unit tests use [`testing::MemoryEnv`] (feature `testing`).

mod config;
mod env;
mod headers;
pub mod hop;
mod http;
pub mod keys;
pub mod llm;
pub mod sse;
mod stream;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::{parse_config, ConfigError, PolicyError};
pub use env::{Circuit, Endpoint, Env, KvError, Level, SignatureAlg, VerifyKey};
pub use headers::{header, header_values, is_header_name, HeaderSource, HeaderView, Headers};
pub use http::{
    json_error, HeaderOp, HttpRequest, HttpResponse, RequestChanges, RequestInfo, RequestOutcome,
    ResponseChanges, ResponseOutcome, RouteDecision,
};
pub use stream::{
    BodyModes, BodyState, Chunk, ChunkOutcome, EndReason, EventOutcome, SseEvent, StreamError,
    StreamItem,
};

/// One policy's logic: built from its config, then asked about requests and responses.
///
/// A value may serve many requests (instances are reused); state of one
/// body lives in the [`BodyState`] its chunk and event calls get, state
/// across requests in [`Env`]'s key/value store, never in fields.
pub trait PolicyLogic: Sized + 'static {
    /// Whether [`PolicyLogic::on_response`] does anything.
    const WANTS_RESPONSE: bool;
    /// The request body modes it handles (a config naming another is refused).
    const REQUEST_BODY: BodyModes = BodyModes::BUFFER;
    /// The response body modes it handles.
    const RESPONSE_BODY: BodyModes = BodyModes::BUFFER;

    /// Parses and checks the config table (JSON text).
    fn from_config(json: &str) -> Result<Self, PolicyError>;

    /// The request phase.
    fn on_request(&self, env: &dyn Env, req: HttpRequest) -> Result<RequestOutcome, PolicyError>;

    /// The response phase; by default the response passes unchanged.
    fn on_response(
        &self,
        env: &dyn Env,
        info: &RequestInfo,
        resp: HttpResponse,
    ) -> Result<ResponseOutcome, PolicyError> {
        let _ = (env, info, resp);
        Ok(ResponseOutcome::Continue(ResponseChanges::default()))
    }

    /// `request_body = "stream"`: one chunk of the request body.
    fn on_request_chunk(
        &self,
        env: &dyn Env,
        state: &mut BodyState,
        chunk: Chunk,
    ) -> Result<ChunkOutcome, PolicyError> {
        let _ = (env, state, chunk);
        Ok(ChunkOutcome::Pass)
    }

    /// `response_body = "stream"`: one chunk of the response body.
    fn on_response_chunk(
        &self,
        env: &dyn Env,
        state: &mut BodyState,
        chunk: Chunk,
    ) -> Result<ChunkOutcome, PolicyError> {
        let _ = (env, state, chunk);
        Ok(ChunkOutcome::Pass)
    }

    /// `response_body = "sse"`: one server-sent event, or the stream's end.
    /// `carry` is the text the last call held back.
    fn on_response_event(
        &self,
        env: &dyn Env,
        state: &mut BodyState,
        item: StreamItem,
        carry: String,
    ) -> Result<EventOutcome, PolicyError> {
        let _ = (env, state, item, carry);
        Ok(EventOutcome::Pass)
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// Base64url without padding (JWT, JWK), tolerant of padding.
pub fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .ok()
}

/// Standard base64 with padding (HTTP Basic).
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_base64() {
        assert_eq!(hex(&[0, 0xab, 0x7f]), "00ab7f");
        assert_eq!(base64url_decode("aGk_"), Some(b"hi?".to_vec()));
        assert_eq!(base64url_decode("aGk="), Some(b"hi".to_vec()));
        assert_eq!(base64_decode("dTpw"), Some(b"u:p".to_vec()));
        assert_eq!(base64url_decode("***"), None);
    }
}
