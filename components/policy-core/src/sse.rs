//! Server-sent events, read and written the way browsers and SDKs read them
//! (the WHATWG `text/event-stream` rules), with bounds: a stream that never
//! ends a line or an event cannot grow memory past [`MAX_EVENT_BYTES`].
//!
//! Host-neutral: the Spin gateway and the edgegate host both stream with it
//! (the host over its WIT event type, `host/gateway/src/request_path/sse.rs`).

use std::collections::VecDeque;

use crate::SseEvent;

/// Largest event (its field lines together) the parser holds.
pub const MAX_EVENT_BYTES: usize = 1 << 20;

/// What the parser found in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    /// A whole event.
    Event(SseEvent),
    /// A comment line (`: keep-alive`) with its line end, passed on as it came.
    Comment(Vec<u8>),
}

/// The stream broke the format's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTooLarge;

impl std::fmt::Display for EventTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a server-sent event over {MAX_EVENT_BYTES} bytes")
    }
}

impl std::error::Error for EventTooLarge {}

/// An incremental `text/event-stream` parser.
#[derive(Debug, Default)]
pub struct SseParser {
    /// The bytes of the line being read.
    line: Vec<u8>,
    /// The last byte fed was a CR: an LF right after it ends no second line.
    after_cr: bool,
    event: Option<String>,
    data: String,
    has_data: bool,
    id: Option<String>,
    retry: Option<u32>,
    /// Bytes held for the current event (lines read plus the line being read).
    held: usize,
    ready: VecDeque<SseItem>,
}

impl SseParser {
    /// Feeds bytes; whole events become available from [`SseParser::next_item`].
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), EventTooLarge> {
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
    pub fn next_item(&mut self) -> Option<SseItem> {
        self.ready.pop_front()
    }

    fn line_done(&mut self, line: &[u8]) {
        if line.is_empty() {
            self.dispatch();
            return;
        }
        if line[0] == b':' {
            self.held -= line.len();
            let mut comment = Vec::with_capacity(line.len() + 1);
            comment.extend_from_slice(line);
            comment.push(b'\n');
            self.ready.push_back(SseItem::Comment(comment));
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
            self.ready.push_back(SseItem::Event(SseEvent {
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

/// Appends `event` as wire bytes to `out`. Field values that would break the
/// framing (a line break in `event` or `id`) are refused; `data` with line
/// breaks becomes several `data` lines, as the format says.
pub fn write_event(event: &SseEvent, out: &mut Vec<u8>) -> Result<(), &'static str> {
    write_fields(
        event.event.as_deref(),
        &event.data,
        event.id.as_deref(),
        event.retry,
        out,
    )
}

/// [`write_event`] over the fields of an event of another type (the
/// edgegate host writes the contract's events with it), so nothing is
/// copied to make one.
pub fn write_fields(
    event: Option<&str>,
    data: &str,
    id: Option<&str>,
    retry: Option<u32>,
    out: &mut Vec<u8>,
) -> Result<(), &'static str> {
    let one_line = |v: &str| !v.contains(['\r', '\n']);
    if let Some(name) = event {
        if !one_line(name) {
            return Err("an event name with a line break");
        }
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    if let Some(id) = id {
        if !one_line(id) || id.contains('\0') {
            return Err("an event id with a line break or NUL");
        }
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(id.as_bytes());
        out.push(b'\n');
    }
    if let Some(ms) = retry {
        out.extend_from_slice(format!("retry: {ms}\n").as_bytes());
    }
    let data = data.replace("\r\n", "\n").replace('\r', "\n");
    for line in data.split('\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
    Ok(())
}

/// Whether a `content-type` value names a server-sent event stream.
pub fn is_event_stream(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream"))
}

/// The event that ends a stream a policy stopped (docs/phases.md §7), shaped
/// so that the OpenAI and Anthropic SDKs raise it as an API error.
pub fn error_event(policy: &str, code: &str, message: &str) -> Vec<u8> {
    let data = serde_json::json!({
        "type": "error",
        "error": {
            "type": "policy_error",
            "code": code,
            "message": message,
            "policy": policy,
        }
    });
    let mut out = Vec::new();
    // One line of JSON and a fixed name: nothing here can break the framing.
    let _ = write_event(&SseEvent::named("error", data.to_string()), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: Option<&str>, data: &str, id: Option<&str>) -> SseItem {
        SseItem::Event(SseEvent {
            event: event.map(str::to_string),
            data: data.to_string(),
            id: id.map(str::to_string),
            retry: None,
        })
    }

    fn all(p: &mut SseParser) -> Vec<SseItem> {
        std::iter::from_fn(|| p.next_item()).collect()
    }

    #[test]
    fn events_split_anywhere_parse_as_whole_ones() {
        let wire =
            b"event: delta\r\ndata: {\"a\":\r\ndata:1}\r\nid: 7\r\n\r\n: ping\n\ndata: [DONE]\n\n";
        for cut in 0..wire.len() {
            let mut p = SseParser::default();
            p.feed(&wire[..cut]).unwrap();
            p.feed(&wire[cut..]).unwrap();
            assert_eq!(
                all(&mut p),
                vec![
                    ev(Some("delta"), "{\"a\":\n1}", Some("7")),
                    SseItem::Comment(b": ping\n".to_vec()),
                    ev(None, "[DONE]", None),
                ],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn lone_cr_ends_lines_and_one_leading_space_is_dropped() {
        let mut p = SseParser::default();
        p.feed(b"data:  two spaces\rdata:none\r\r").unwrap();
        assert_eq!(all(&mut p), vec![ev(None, " two spaces\nnone", None)]);
    }

    #[test]
    fn an_endless_event_is_refused_at_the_bound() {
        let mut p = SseParser::default();
        let line = vec![b'x'; 64 << 10];
        p.feed(b"data: ").unwrap();
        let failed = (0..(MAX_EVENT_BYTES / line.len() + 2)).any(|_| p.feed(&line).is_err());
        assert!(failed, "an event over the bound is refused");
    }

    #[test]
    fn written_events_parse_back_the_same_and_forged_fields_are_refused() {
        let event = SseEvent {
            event: Some("content_block_delta".into()),
            data: "line one\nline two\r\nthree".into(),
            id: Some("9".into()),
            retry: Some(1500),
        };
        let mut out = Vec::new();
        write_event(&event, &mut out).unwrap();
        let mut p = SseParser::default();
        p.feed(&out).unwrap();
        let Some(SseItem::Event(back)) = p.next_item() else {
            panic!("no event")
        };
        assert_eq!(back.data, "line one\nline two\nthree");
        assert_eq!(
            (back.event, back.id, back.retry),
            (event.event, event.id, event.retry)
        );
        let bad = SseEvent::named("x\ndata: forged", "");
        assert!(write_event(&bad, &mut Vec::new()).is_err());
    }

    #[test]
    fn the_error_event_parses_as_one_error() {
        let mut p = SseParser::default();
        p.feed(&error_event(
            "redaction",
            "response_blocked",
            "a \"card\"\nnumber",
        ))
        .unwrap();
        let Some(SseItem::Event(e)) = p.next_item() else {
            panic!("no event")
        };
        assert_eq!(e.event.as_deref(), Some("error"));
        let v: serde_json::Value = serde_json::from_str(&e.data).unwrap();
        assert_eq!(v["error"]["code"], "response_blocked");
        assert_eq!(v["error"]["policy"], "redaction");
        assert_eq!(v["error"]["message"], "a \"card\"\nnumber");
        assert!(is_event_stream("Text/Event-Stream; charset=utf-8"));
        assert!(!is_event_stream("application/json"));
    }
}
