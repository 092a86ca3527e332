//! Body types and bounded buffering.

use std::future::Future;

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

/// Why a client's request body failed: the client's fault, never the upstream's.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    /// Bad framing (a malformed chunk, a body shorter than its length, ...).
    #[error("the request body is malformed or was cut short: {0}")]
    Malformed(hyper::Error),
    /// No body bytes for longer than the idle timeout.
    #[error("no request body data for {0} ms")]
    Idle(u128),
}

/// The first error of type `T` in `e`'s chain of causes, if any.
pub fn find_cause<'a, T: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    // Bounded: error chains are short, but a cycle must not loop forever.
    for _ in 0..16 {
        let err = cur?;
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        cur = err.source();
    }
    None
}

/// An upstream's answer stopped arriving mid-body.
#[derive(Debug, thiserror::Error)]
#[error("no response body data from the upstream for {0} ms")]
pub struct UpstreamIdle(pub u128);

/// Whose body a [`WatchedBody`] carries, which decides what its errors say.
#[derive(Clone, Copy)]
enum Side {
    /// A client's request body: framing errors and idleness are the
    /// client's ([`ClientBodyError`]), never held against the upstream.
    Client,
    /// An upstream's response body: idleness is [`UpstreamIdle`].
    Upstream,
}

/// A body in flight that is cut once nothing arrives for `idle`: a
/// client's request body (`body_idle_timeout_ms`), or an upstream's answer
/// (`upstreams.NAME.idle_timeout_ms`, beside `timeout_ms`, which bounds only
/// the wait for the headers). The timer exists only while the body waits.
pub struct WatchedBody {
    inner: hyper::body::Incoming,
    idle: std::time::Duration,
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    side: Side,
}

impl WatchedBody {
    /// A client's request body.
    pub fn client(inner: hyper::body::Incoming, idle: std::time::Duration) -> Self {
        Self {
            inner,
            idle,
            timer: None,
            side: Side::Client,
        }
    }

    /// An upstream's response body.
    pub fn upstream(inner: hyper::body::Incoming, idle: std::time::Duration) -> Self {
        Self {
            side: Side::Upstream,
            ..Self::client(inner, idle)
        }
    }

    /// As a boxed body for the upstream client, the client, or buffering.
    pub fn boxed(self) -> ProxyBody {
        self.boxed_unsync()
    }
}

impl http_body::Body for WatchedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(match this.side {
                Side::Client => Box::new(ClientBodyError::Malformed(e)),
                Side::Upstream => Box::new(e),
            }))),
            Poll::Ready(Some(Ok(frame))) => {
                // Progress: the next wait starts its own idle window.
                this.timer = None;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let idle = this.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(match this.side {
                        Side::Client => Box::new(ClientBodyError::Idle(idle.as_millis())),
                        Side::Upstream => {
                            tracing::warn!(
                                idle_ms = idle.as_millis() as u64,
                                "upstream answer stopped mid-body; cut (idle_timeout_ms)"
                            );
                            Box::new(UpstreamIdle(idle.as_millis()))
                        }
                    }))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
