//! Body types and bounded buffering.

use bytes::{Bytes, BytesMut};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};

/// Errors crossing body boundaries.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A body in flight, streamed or buffered.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// A body from bytes in memory.
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> ProxyBody {
    full(Bytes::new())
}

/// Why a body could not be buffered.
#[derive(Debug)]
pub enum BufferError {
    /// Longer than the limit.
    TooLarge,
    /// The peer failed mid-body.
    Read(BoxError),
}

/// Buffer a body, refusing more than `limit` bytes.
pub async fn buffer(mut body: ProxyBody, limit: usize) -> Result<Bytes, BufferError> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(BufferError::Read)?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(BufferError::TooLarge);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}
