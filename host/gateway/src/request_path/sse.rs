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
    use super::*;
    use edgegate_policy_core::sse::MAX_EVENT_BYTES;

    fn ev(event: Option<&str>, data: &str, id: Option<&str>) -> Item {
        Item::Event(SseEvent {
            event: event.map(str::to_string),
            data: data.to_string(),
            id: id.map(str::to_string),
            retry: None,
        })
    }

    fn all(p: &mut Parser) -> Vec<Item> {
        std::iter::from_fn(|| p.next()).collect()
    }

    #[test]
    fn events_split_anywhere_parse_as_whole_ones() {
        let wire =
            b"event: delta\r\ndata: {\"a\":\r\ndata:1}\r\nid: 7\r\n\r\n: ping\n\ndata: [DONE]\n\n";
        for cut in 0..wire.len() {
            let mut p = Parser::default();
            p.feed(&wire[..cut]).unwrap();
            p.feed(&wire[cut..]).unwrap();
            assert_eq!(
                all(&mut p),
                vec![
                    ev(Some("delta"), "{\"a\":\n1}", Some("7")),
                    Item::Comment(Bytes::from_static(b": ping\n")),
                    ev(None, "[DONE]", None),
                ],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn lone_cr_ends_lines_and_one_leading_space_is_dropped() {
        let mut p = Parser::default();
        p.feed(b"data:  two spaces\rdata:none\r\r").unwrap();
        assert_eq!(all(&mut p), vec![ev(None, " two spaces\nnone", None)]);
    }

    #[test]
    fn an_endless_event_is_refused_at_the_bound() {
        let mut p = Parser::default();
        let line = vec![b'x'; 64 << 10];
        p.feed(b"data: ").unwrap();
        let mut failed = false;
        for _ in 0..(MAX_EVENT_BYTES / line.len() + 2) {
            if p.feed(&line).is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed, "an event over the bound is refused");
    }

    #[test]
    fn written_events_parse_back_the_same() {
        let event = SseEvent {
            event: Some("content_block_delta".into()),
            data: "line one\nline two\r\nthree".into(),
            id: Some("9".into()),
            retry: Some(1500),
        };
        let mut out = Vec::new();
        write(&event, &mut out).unwrap();
        let mut p = Parser::default();
        p.feed(&out).unwrap();
        let Some(Item::Event(back)) = p.next() else {
            panic!("no event")
        };
        assert_eq!(back.data, "line one\nline two\nthree");
        assert_eq!(
            (back.event, back.id, back.retry),
            (event.event, event.id, event.retry)
        );
        let bad = SseEvent {
            event: Some("x\ndata: forged".into()),
            data: String::new(),
            id: None,
            retry: None,
        };
        assert!(write(&bad, &mut Vec::new()).is_err());
    }
}
