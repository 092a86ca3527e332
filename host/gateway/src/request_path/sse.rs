//! Server-sent events on the host: the parser and writer of
//! `edgegate_policy_core::sse` (the WHATWG `text/event-stream` rules, with
//! bounds; the Spin gateway streams with the same code), over the
//! contract's event type. An upstream that never ends a line or an event
//! cannot grow the gateway's memory.

use bytes::Bytes;
pub(crate) use edgegate_policy_core::sse::EventTooLarge;
use edgegate_policy_core::sse::{self as core_sse, SseItem, SseParser};
use edgegate_runtime::bindings::types::SseEvent;

/// What the parser found in the stream.
#[derive(Debug, PartialEq)]
pub(crate) enum Item {
    /// A whole event.
    Event(SseEvent),
    /// A comment line (`: keep-alive`), passed on as it came, unseen by policies.
    Comment(Bytes),
}

/// An incremental `text/event-stream` parser.
#[derive(Default)]
pub(crate) struct Parser(SseParser);

impl Parser {
    /// Feed bytes; whole events become available from [`Parser::next`].
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Result<(), EventTooLarge> {
        self.0.feed(bytes)
    }

    /// The next whole event or comment, in stream order; its fields move
    /// into the contract's type.
    pub(crate) fn next(&mut self) -> Option<Item> {
        self.0.next_item().map(|item| match item {
            SseItem::Event(e) => Item::Event(SseEvent {
                event: e.event,
                data: e.data,
                id: e.id,
                retry: e.retry,
            }),
            SseItem::Comment(c) => Item::Comment(Bytes::from(c)),
        })
    }
}

/// A policy's event as wire bytes, appended to `out`. Field values that
/// would break the framing (a line break in `event` or `id`) are refused;
/// `data` with line breaks becomes several `data` lines, as the format says.
pub(crate) fn write(event: &SseEvent, out: &mut Vec<u8>) -> Result<(), &'static str> {
    core_sse::write_fields(
        event.event.as_deref(),
        &event.data,
        event.id.as_deref(),
        event.retry,
        out,
    )
}

/// Whether a response is a server-sent event stream, by its content type.
pub(crate) fn is_event_stream(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(core_sse::is_event_stream)
}

#[cfg(test)]
mod tests {
    //! The parsing and writing rules are policy-core's and tested there;
    //! these check the adapter: fields move into the contract's type and
    //! back, comments come out as `Bytes`, the bound still refuses.
    use super::*;
    use edgegate_policy_core::sse::MAX_EVENT_BYTES;

    #[test]
    fn events_and_comments_cross_the_adapter_whole() {
        let event = SseEvent {
            event: Some("content_block_delta".into()),
            data: "line one\nline two\r\nthree".into(),
            id: Some("9".into()),
            retry: Some(1500),
        };
        let mut out = b": ping\n\n".to_vec();
        write(&event, &mut out).unwrap();
        let mut p = Parser::default();
        // Split mid-event: the adapter hands out nothing half-read.
        let (a, b) = out.split_at(out.len() - 3);
        p.feed(a).unwrap();
        assert_eq!(
            p.next(),
            Some(Item::Comment(Bytes::from_static(b": ping\n")))
        );
        assert_eq!(p.next(), None);
        p.feed(b).unwrap();
        let Some(Item::Event(back)) = p.next() else {
            panic!("no event")
        };
        assert_eq!(back.data, "line one\nline two\nthree");
        assert_eq!(
            (back.event, back.id, back.retry),
            (event.event, event.id, event.retry)
        );
        let forged = SseEvent {
            event: Some("x\ndata: forged".into()),
            data: String::new(),
            id: None,
            retry: None,
        };
        assert!(write(&forged, &mut Vec::new()).is_err());
    }

    #[test]
    fn an_endless_event_is_refused_at_the_bound() {
        let mut p = Parser::default();
        let line = vec![b'x'; 64 << 10];
        p.feed(b"data: ").unwrap();
        let refused = (0..MAX_EVENT_BYTES / line.len() + 2).any(|_| p.feed(&line).is_err());
        assert!(refused, "an event over the bound is refused");
    }

    #[test]
    fn the_content_type_decides_what_is_an_event_stream() {
        let mut h = http::HeaderMap::new();
        assert!(!is_event_stream(&h));
        h.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/event-stream; charset=utf-8"),
        );
        assert!(is_event_stream(&h));
        h.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        assert!(!is_event_stream(&h));
    }
}
