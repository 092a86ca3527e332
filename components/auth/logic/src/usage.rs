//! Tokens counted from a streamed answer, for the token quota.
//!
//! OpenAI sends `usage` in a last chunk when the client asked for it
//! (`stream_options.include_usage`). Anthropic sends the input tokens in
//! `message_start` and the output tokens in `message_delta`, where the count
//! is cumulative: it is taken, never added up, and `message_start`'s own
//! output count (a first token or so) is superseded by it. What the
//! provider does not say (no usage chunk, or a client gone before the end)
//! is estimated from the streamed text. The counts come from the upstream,
//! so every sum saturates: a hostile provider's `u64::MAX` charges the most,
//! never wraps to the least.

use edgegate_policy_core::SseEvent;
use serde_json::Value;

use crate::limits::estimate_tokens;

/// What a stream said about its tokens so far.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StreamUsage {
    /// OpenAI's `usage` chunk: its total.
    total: Option<u64>,
    /// Anthropic: input tokens, cache writes and reads included.
    input: Option<u64>,
    /// Anthropic: output tokens, the latest cumulative count.
    output: Option<u64>,
    /// Whether `output` came from `message_delta` (the answer's count), not
    /// only from `message_start` (its first token).
    output_stated: bool,
    /// Bytes of answer text streamed (content, tool arguments).
    text_bytes: u64,
}

fn field(v: &Value, name: &str) -> Option<u64> {
    v.get(name).and_then(Value::as_u64)
}

/// Anthropic input tokens: uncached, cache writes and cache reads.
fn anthropic_input(usage: &Value) -> Option<u64> {
    let base = field(usage, "input_tokens")?;
    Some(
        base.saturating_add(field(usage, "cache_creation_input_tokens").unwrap_or(0))
            .saturating_add(field(usage, "cache_read_input_tokens").unwrap_or(0)),
    )
}

fn str_len(v: Option<&Value>) -> u64 {
    v.and_then(Value::as_str).map_or(0, |s| s.len() as u64)
}

impl StreamUsage {
    /// Take in one event of the stream.
    pub fn observe(&mut self, event: &SseEvent) {
        let Ok(v) = serde_json::from_str::<Value>(&event.data) else {
            return;
        };
        let kind = event
            .event
            .as_deref()
            .or_else(|| v.get("type").and_then(Value::as_str));
        match kind {
            Some("message_start") => {
                if let Some(usage) = v.pointer("/message/usage") {
                    self.input = anthropic_input(usage).or(self.input);
                    self.output = self.output.max(field(usage, "output_tokens"));
                }
            }
            Some("message_delta") => {
                if let Some(usage) = v.get("usage") {
                    // Cumulative: the latest count replaces the one before.
                    if let Some(out) = field(usage, "output_tokens") {
                        self.output = Some(out);
                        self.output_stated = true;
                    }
                    if let Some(input) = anthropic_input(usage) {
                        self.input = Some(input);
                    }
                }
            }
            Some("content_block_delta") => {
                self.text_bytes = self
                    .text_bytes
                    .saturating_add(str_len(v.pointer("/delta/text")))
                    .saturating_add(str_len(v.pointer("/delta/partial_json")));
            }
            _ => {
                if let Some(usage) = v.get("usage").filter(|u| u.is_object()) {
                    self.total = field(usage, "total_tokens").or_else(|| {
                        Some(
                            field(usage, "prompt_tokens")?
                                .saturating_add(field(usage, "completion_tokens").unwrap_or(0)),
                        )
                    });
                }
                for c in v
                    .get("choices")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    self.text_bytes = self
                        .text_bytes
                        .saturating_add(str_len(c.pointer("/delta/content")))
                        .saturating_add(str_len(c.get("text")));
                    for call in c
                        .pointer("/delta/tool_calls")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        self.text_bytes = self
                            .text_bytes
                            .saturating_add(str_len(call.pointer("/function/arguments")));
                    }
                }
            }
        }
    }

    /// The tokens to charge: the provider's counts where it gave them,
    /// `prompt_estimate` for an input it did not state, and the streamed
    /// text's estimate for an output it did not state (or stated only in
    /// part: a stream cut before Anthropic's `message_delta`).
    pub fn tokens(&self, prompt_estimate: u64) -> u64 {
        if let Some(total) = self.total {
            return total;
        }
        let streamed = estimate_tokens(self.text_bytes as usize);
        let input = self.input.unwrap_or(prompt_estimate);
        let output = match self.output {
            Some(out) if self.output_stated => out,
            known => known.unwrap_or(0).max(streamed),
        };
        input.saturating_add(output)
    }

    /// Whether the provider stated the whole count.
    pub fn stated(&self) -> bool {
        self.total.is_some() || (self.input.is_some() && self.output_stated)
    }
}
