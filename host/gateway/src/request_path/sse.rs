//! Server-sent events, read and written the way browsers and SDKs read them
//! (the WHATWG `text/event-stream` rules), with bounds: an upstream that
//! never ends a line or an event cannot grow the gateway's memory.

use bytes::{BufMut, Bytes, BytesMut};
use edgegate_runtime::bindings::types::SseEvent;

/// Largest event (its field lines together) the parser holds.
pub(crate) const MAX_EVENT_BYTES: usize = 1 << 20;

/// What the parser found in the stream.
#[derive(Debug, PartialEq)]
pub(crate) enum Item {
    /// A whole event.
    Event(SseEvent),
    /// A comment line (`: keep-alive`), passed on as it came, unseen by policies.
    Comment(Bytes),
}

/// The stream broke the format's bounds.
#[derive(Debug, thiserror::Error)]
#[error("a server-sent event over {MAX_EVENT_BYTES} bytes")]
pub(crate) struct EventTooLarge;

/// An incremental `text/event-stream` parser.
#[derive(Default)]
pub(crate) struct Parser {
    /// The bytes of the line being read.
    line: Vec<u8>,
    /// The last byte fed was a CR: an LF right after it ends no second line.
    after_cr: bool,
    /// Fields of the event being read.
    event: Option<String>,
    data: String,
    has_data: bool,
    id: Option<String>,
    retry: Option<u32>,
    /// Bytes held for the current event (lines read plus the line being read).
    held: usize,
    ready: std::collections::VecDeque<Item>,
}

impl Parser {
    /// Feed bytes; whole events become available from [`Parser::next`].
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) -> Result<(), EventTooLarge> {
        while !bytes.is_empty() {
            if self.after_cr && bytes[0] == b'\n' {
                bytes = &bytes[1..];
                self.after_cr = false;
                continue;
            }
            self.after_cr = false;
            match bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(at) => {
                    self.take(&bytes[..at])?;
                    self.after_cr = bytes[at] == b'\r';
                    let line = std::mem::take(&mut self.line);
                    self.line_done(&line);
                    bytes = &bytes[at + 1..];
                }
                None => {
                    self.take(bytes)?;
                    bytes = &[];
                }
            }
        }
        Ok(())
    }

    fn take(&mut self, part: &[u8]) -> Result<(), EventTooLarge> {
        self.held += part.len();
        if self.held > MAX_EVENT_BYTES {
            return Err(EventTooLarge);
        }
        self.line.extend_from_slice(part);
        Ok(())
    }

    /// The next whole event or comment, in stream order.
    pub(crate) fn next(&mut self) -> Option<Item> {
        self.ready.pop_front()
    }

    fn line_done(&mut self, line: &[u8]) {
        if line.is_empty() {
            self.dispatch();
            return;
        }
        if line[0] == b':' {
            self.held -= line.len();
            let mut comment = BytesMut::with_capacity(line.len() + 1);
            comment.put_slice(line);
            comment.put_u8(b'\n');
            self.ready.push_back(Item::Comment(comment.freeze()));
            return;
        }
        let text = String::from_utf8_lossy(line);
        let (name, value) = match text.split_once(':') {
            Some((n, v)) => (n, v.strip_prefix(' ').unwrap_or(v)),
            None => (&*text, ""),
        };
        match name {
            "event" => self.event = Some(value.to_string()),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.id = Some(value.to_string()),
            "retry" => {
                if let Ok(ms) = value.parse() {
                    self.retry = Some(ms);
                }
            }
            _ => {}
        }
    }

    fn dispatch(&mut self) {
        let seen =
            self.has_data || self.event.is_some() || self.id.is_some() || self.retry.is_some();
        if seen {
            self.ready.push_back(Item::Event(SseEvent {
                event: self.event.take(),
                data: std::mem::take(&mut self.data),
                id: self.id.take(),
                retry: self.retry.take(),
            }));
        }
        self.has_data = false;
        self.held = 0;
    }
}

/// A policy's event as wire bytes. Field values that would break the framing
/// (a line break in `event` or `id`) are refused; `data` with line breaks
/// becomes several `data` lines, as the format says.
pub(crate) fn write(event: &SseEvent, out: &mut BytesMut) -> Result<(), &'static str> {
    let one_line = |v: &str| !v.contains(['\r', '\n']);
    if let Some(name) = &event.event {
        if !one_line(name) {
            return Err("an event name with a line break");
        }
        out.put_slice(b"event: ");
        out.put_slice(name.as_bytes());
        out.put_u8(b'\n');
    }
    if let Some(id) = &event.id {
        if !one_line(id) || id.contains('\0') {
            return Err("an event id with a line break or NUL");
        }
        out.put_slice(b"id: ");
        out.put_slice(id.as_bytes());
        out.put_u8(b'\n');
    }
    if let Some(ms) = event.retry {
        out.put_slice(format!("retry: {ms}\n").as_bytes());
    }
    let data = event.data.replace("\r\n", "\n").replace('\r', "\n");
    for line in data.split('\n') {
        out.put_slice(b"data: ");
        out.put_slice(line.as_bytes());
        out.put_u8(b'\n');
    }
    out.put_u8(b'\n');
    Ok(())
}

/// Whether a response is a server-sent event stream, by its content type.
pub(crate) fn is_event_stream(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream"))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut out = BytesMut::new();
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
        assert!(write(&bad, &mut BytesMut::new()).is_err());
    }
}
