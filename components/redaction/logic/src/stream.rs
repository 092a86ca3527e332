//! Redaction of bodies as they stream: server-sent events (OpenAI chat
//! chunks, Anthropic message events, any JSON or text events) and plain
//! chunks.
//!
//! A streamed answer's text arrives in pieces (`choices[].delta.content`,
//! `content_block_delta`'s `delta.text`), and PII may be split between two
//! of them: `jane@exa` + `mple.com`. Each text stream is scanned with what
//! the last call held back in front of it, and the tail that could still
//! grow into a match is held back again (the carry): the trailing word, the
//! digit groups before it (cards, phones and IBANs have spaces), and any
//! match that runs to the end of what arrived. That is usually one word, so
//! the answer keeps flowing; it is at most [`HOLD_LIMIT`] bytes. The held
//! text goes out in front of the stream's next piece, or in an event of the
//! same shape before the event that ends its text stream.

use std::collections::BTreeMap;

use edgegate_policy_core::{
    BodyState, Chunk, ChunkOutcome, EndReason, Env, EventOutcome, PolicyError, SseEvent,
    StreamError, StreamItem,
};
use serde_json::Value;

use crate::config::Mode;
use crate::{json, Counts, Redaction, Scan};

/// Most text held back for one text stream: past it the oldest part goes
/// out as it is (a secret longer than this, split across pieces at the
/// wrong place, is then redacted only where whole).
pub const HOLD_LIMIT: usize = 1024;
/// Most text held back for a match that runs to the end of what arrived
/// (a PEM key still arriving): below the host's 64 KiB carry limit.
const MATCH_HOLD_LIMIT: usize = 48 << 10;

/// One text stream's next piece: what goes out now, and what is held.
struct Piece {
    out: String,
    held: String,
}

/// What scanning a piece found.
enum Found {
    Piece(Piece),
    Blocked(String),
}

/// The per-body state: each text stream's last event (the template its held
/// text is flushed in): its type, its JSON text as it arrived, and where the
/// text goes. The template is made from it only when held text is flushed,
/// not for every event.
#[derive(Default)]
struct Templates(BTreeMap<String, (Option<String>, String, TextPath)>);

impl Redaction {
    /// One piece of a text stream: `held` (from the last call) + `new`.
    /// With `end`, nothing is held.
    fn piece(
        &self,
        env: &dyn Env,
        held: &str,
        new: &str,
        end: bool,
        counts: &mut Counts,
    ) -> Result<Found, PolicyError> {
        let mut text = String::with_capacity(held.len() + new.len());
        text.push_str(held);
        text.push_str(new);
        let found = self.matches(&text)?;
        let mut cut = if end { text.len() } else { hold_from(&text) };
        // A match that runs to the end of what arrived may still grow; one
        // that crosses the cut must go out whole or not at all.
        loop {
            let before = cut;
            for &(s, e, _) in &found {
                let open = !end && e == text.len();
                if s < cut && (e > cut || open) && text.len() - s <= MATCH_HOLD_LIMIT {
                    cut = s;
                }
            }
            if cut == before {
                break;
            }
        }
        let final_: Vec<(usize, usize, usize)> =
            found.into_iter().filter(|&(_, e, _)| e <= cut).collect();
        if let Some(&(_, _, i)) = final_.iter().find(|m| self.rules[m.2].mode == Mode::Block) {
            return Ok(Found::Blocked(self.rules[i].name.clone()));
        }
        let out = self.rewrite(env, &text[..cut], &final_, counts);
        Ok(Found::Piece(Piece {
            out,
            held: text[cut..].to_string(),
        }))
    }

    /// `response_body = "stream"`: the body as text chunks.
    pub(crate) fn response_chunk(
        &self,
        env: &dyn Env,
        chunk: Chunk,
    ) -> Result<ChunkOutcome, PolicyError> {
        let end = chunk.end.is_some();
        if chunk.end == Some(EndReason::ClientGone) {
            return Ok(ChunkOutcome::Pass);
        }
        // A UTF-8 sequence cut by the chunk's end waits for its rest.
        let (text, rest) = match std::str::from_utf8(&chunk.data) {
            Ok(t) => (t, &[][..]),
            Err(e) if e.error_len().is_none() && !end => {
                let (valid, rest) = chunk.data.split_at(e.valid_up_to());
                // Just checked: `valid` is the valid prefix.
                (std::str::from_utf8(valid).unwrap_or_default(), rest)
            }
            // Not text: not ours to scan.
            Err(_) => return Ok(ChunkOutcome::Pass),
        };
        let mut counts = Counts(vec![0; self.rules.len()]);
        let piece = match self.piece(env, "", text, end, &mut counts)? {
            Found::Piece(p) => p,
            Found::Blocked(rule) => return Ok(ChunkOutcome::Fail(self.block_error(env, &rule))),
        };
        self.report(env, &counts);
        let mut carry = piece.held.into_bytes();
        carry.extend_from_slice(rest);
        Ok(ChunkOutcome::Emit {
            data: piece.out.into_bytes(),
            carry,
        })
    }

    /// `response_body = "sse"`: one event, or the end.
    pub(crate) fn response_event(
        &self,
        env: &dyn Env,
        state: &mut BodyState,
        item: StreamItem,
        carry: String,
    ) -> Result<EventOutcome, PolicyError> {
        let templates = state.get::<Templates>();
        let mut held: BTreeMap<String, String> = if carry.is_empty() {
            BTreeMap::new()
        } else {
            serde_json::from_str(&carry)
                .map_err(|e| PolicyError::Internal(format!("carry: {e}")))?
        };
        let mut counts = Counts(vec![0; self.rules.len()]);
        let mut events = Vec::new();
        let event = match item {
            StreamItem::End(EndReason::ClientGone) => return Ok(EventOutcome::Pass),
            StreamItem::End(_) => {
                // Whatever is still held goes out before the stream ends.
                for (key, text) in std::mem::take(&mut held) {
                    match self.flush(env, templates, &key, &text, &mut counts)? {
                        Ok(Some(e)) => events.push(e),
                        Ok(None) => {}
                        Err(rule) => return Ok(EventOutcome::Fail(self.block_error(env, &rule))),
                    }
                }
                self.report(env, &counts);
                return Ok(EventOutcome::Emit {
                    events,
                    carry: String::new(),
                });
            }
            StreamItem::Event(e) => e,
        };
        let mut parsed: Option<Value> = serde_json::from_str(&event.data).ok();
        let texts = parsed
            .as_ref()
            .map(|v| text_streams(event.event.as_deref(), v))
            .unwrap_or_default();
        // Streams this event does not continue end here: their held text
        // goes out first, in an event shaped like their last one.
        let continued: Vec<&str> = texts.iter().map(|t| t.key.as_str()).collect();
        let ended: Vec<String> = held
            .keys()
            .filter(|k| !continued.contains(&k.as_str()))
            .cloned()
            .collect();
        for key in ended {
            let text = held.remove(&key).unwrap_or_default();
            match self.flush(env, templates, &key, &text, &mut counts)? {
                Ok(Some(e)) => events.push(e),
                Ok(None) => {}
                Err(rule) => return Ok(EventOutcome::Fail(self.block_error(env, &rule))),
            }
        }
        let mut changed = !events.is_empty();
        if let Some(v) = parsed.as_mut() {
            for t in &texts {
                let before = held.remove(&t.key).unwrap_or_default();
                let piece = match self.piece(env, &before, &t.text, false, &mut counts)? {
                    Found::Piece(p) => p,
                    Found::Blocked(rule) => {
                        return Ok(EventOutcome::Fail(self.block_error(env, &rule)))
                    }
                };
                if piece.out != t.text {
                    changed = true;
                    set_text(v, t.path, &piece.out);
                }
                if !piece.held.is_empty() {
                    held.insert(t.key.clone(), piece.held);
                }
                templates.0.insert(
                    t.key.clone(),
                    (event.event.clone(), event.data.clone(), t.path),
                );
            }
        }
        // The rest of the event: its other strings, scanned whole.
        let data = match (&parsed, changed) {
            (Some(v), true) => v.to_string(),
            _ => event.data.clone(),
        };
        let scanned = if parsed.is_some() {
            json::redact_strings(&data, |s| self.scan_text(env, s, &mut counts))?
        } else {
            self.scan_text(env, &data, &mut counts)?
        };
        let data = match scanned {
            Scan::Clean => data,
            Scan::Changed(d) => {
                changed = true;
                d
            }
            Scan::Blocked(rule) => return Ok(EventOutcome::Fail(self.block_error(env, &rule))),
        };
        self.report(env, &counts);
        let carry = if held.is_empty() {
            String::new()
        } else {
            serde_json::to_string(&held).map_err(|e| PolicyError::Internal(e.to_string()))?
        };
        if !changed && carry.is_empty() && events.is_empty() {
            return Ok(EventOutcome::Pass);
        }
        events.push(SseEvent { data, ..event });
        Ok(EventOutcome::Emit { events, carry })
    }

    /// The held text of stream `key` as an event shaped like its last one;
    /// `Err(rule)` when a block rule matches it.
    fn flush(
        &self,
        env: &dyn Env,
        templates: &Templates,
        key: &str,
        text: &str,
        counts: &mut Counts,
    ) -> Result<Result<Option<SseEvent>, String>, PolicyError> {
        if text.is_empty() {
            return Ok(Ok(None));
        }
        let piece = match self.piece(env, "", text, true, counts)? {
            Found::Piece(p) => p,
            Found::Blocked(rule) => return Ok(Err(rule)),
        };
        let Some((name, data, path)) = templates.0.get(key) else {
            return Ok(Ok(None));
        };
        // Stored only for events that parsed.
        let Ok(last) = serde_json::from_str::<Value>(data) else {
            return Ok(Ok(None));
        };
        let mut v = template(last, name.as_deref());
        set_text(&mut v, *path, &piece.out);
        Ok(Ok(Some(SseEvent {
            event: name.clone(),
            data: v.to_string(),
            id: None,
            retry: None,
        })))
    }

    fn block_error(&self, env: &dyn Env, rule: &str) -> StreamError {
        env.count("blocked", rule, 1);
        StreamError::new(
            "response_blocked",
            format!("response blocked by redaction rule `{rule}`"),
        )
    }
}

/// Where the held text starts: the trailing word (it may go on in the next
/// piece), and the groups of digits or capitals before it that a card,
/// phone or IBAN spreads over, within [`HOLD_LIMIT`].
fn hold_from(text: &str) -> usize {
    let b = text.as_bytes();
    let floor = floor_char_boundary(text, text.len().saturating_sub(HOLD_LIMIT));
    let word_start = |end: usize| {
        let mut i = end;
        while i > floor && !b[i - 1].is_ascii_whitespace() {
            i -= 1;
        }
        i
    };
    let grouped = |word: &[u8]| {
        !word.is_empty()
            && word.iter().any(u8::is_ascii_digit)
            && word
                .iter()
                .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase() || b"+-().".contains(c))
    };
    let mut start = word_start(text.len());
    // The word `start` begins (empty when the text ends in a space).
    let mut word_end = text.len();
    // Digit groups before the last word: `4111 1111 1111 ` + `1111`.
    loop {
        let mut gap = start;
        while gap > floor && b[gap - 1] == b' ' {
            gap -= 1;
        }
        if gap == start || gap == floor || start - gap > 2 {
            break;
        }
        let prev = word_start(gap);
        let word = &b[start..word_end];
        if !grouped(&b[prev..gap]) || !(word.is_empty() || grouped(word)) {
            break;
        }
        start = prev;
        word_end = gap;
    }
    floor_char_boundary(text, start.max(floor))
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// A text stream in an event: a key naming it across events, where its text
/// is in this event, and the text.
struct TextStream {
    key: String,
    path: TextPath,
    text: String,
}

/// Where a streamed text field is in an event's JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TextPath {
    /// `choices[i].delta.content`.
    ChoiceDelta(usize),
    /// `choices[i].text` (completions).
    ChoiceText(usize),
    /// `delta.<field>` (Anthropic's `content_block_delta`).
    Delta(&'static str),
}

impl TextPath {
    fn get(self, v: &Value) -> Option<&Value> {
        match self {
            TextPath::ChoiceDelta(i) => v.get("choices")?.get(i)?.get("delta")?.get("content"),
            TextPath::ChoiceText(i) => v.get("choices")?.get(i)?.get("text"),
            TextPath::Delta(field) => v.get("delta")?.get(field),
        }
    }

    fn get_mut(self, v: &mut Value) -> Option<&mut Value> {
        match self {
            TextPath::ChoiceDelta(i) => v
                .get_mut("choices")?
                .get_mut(i)?
                .get_mut("delta")?
                .get_mut("content"),
            TextPath::ChoiceText(i) => v.get_mut("choices")?.get_mut(i)?.get_mut("text"),
            TextPath::Delta(field) => v.get_mut("delta")?.get_mut(field),
        }
    }
}

/// The streamed text fields of an event: OpenAI's `choices[].delta.content`
/// (and `choices[].text` of completions), Anthropic's
/// `content_block_delta` `delta.text` and `delta.partial_json`.
fn text_streams(event: Option<&str>, v: &Value) -> Vec<TextStream> {
    let mut out = Vec::new();
    let mut take = |key: String, path: TextPath| {
        if let Some(Value::String(t)) = path.get(v) {
            out.push(TextStream {
                key,
                path,
                text: t.clone(),
            });
        }
    };
    if let Some(choices) = v.get("choices").and_then(Value::as_array) {
        for (i, c) in choices.iter().enumerate() {
            let index = c.get("index").and_then(Value::as_u64).unwrap_or(i as u64);
            take(format!("choice.{index}.delta"), TextPath::ChoiceDelta(i));
            take(format!("choice.{index}.text"), TextPath::ChoiceText(i));
        }
    }
    let anthropic_delta = event == Some("content_block_delta")
        || v.get("type").and_then(Value::as_str) == Some("content_block_delta");
    if anthropic_delta {
        let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
        for field in ["text", "partial_json"] {
            take(format!("block.{index}.{field}"), TextPath::Delta(field));
        }
    }
    out
}

fn set_text(v: &mut Value, path: TextPath, text: &str) {
    if let Some(slot) = path.get_mut(v) {
        *slot = Value::String(text.to_string());
    }
}

/// An event to flush held text in later, made from a stream's last event:
/// its end-of-stream markers (`finish_reason`) and usage cleared, and every
/// text field in it emptied, so that it carries only the text flushed into
/// it (another choice's text, which went out with its own stream, is not
/// sent twice).
fn template(mut t: Value, event: Option<&str>) -> Value {
    let paths: Vec<TextPath> = text_streams(event, &t).iter().map(|s| s.path).collect();
    for path in paths {
        set_text(&mut t, path, "");
    }
    if let Some(choices) = t.get_mut("choices").and_then(Value::as_array_mut) {
        for c in choices {
            if let Some(f) = c.get_mut("finish_reason") {
                *f = Value::Null;
            }
        }
    }
    if let Some(obj) = t.as_object_mut() {
        obj.remove("usage");
    }
    t
}
