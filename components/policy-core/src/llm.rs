//! What the shipped policies read from an OpenAI-style JSON request body
//! (its `model`, the size of its prompt text and its answer reserve) and
//! from an answer (its `usage`), in one pass each.
//!
//! The pass skips every other field without building a tree: reading the
//! whole body as a `serde_json::Value`, as auth (twice) and routing each
//! did, was the largest share of their time on a 1 KB chat request. A body
//! the typed pass cannot take (a field of the wrong type deep inside, a
//! duplicate key) is read again as a `Value`, whose rules are the
//! reference: both give the same answer for every input the tree can read,
//! and the tests check them against each other. (The typed pass descends
//! only a fixed few levels and skips the rest without recursion, so it also
//! reads a body nested deeper than the tree's 128 levels.)

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

/// What the policies read from an OpenAI-style request body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChatRequest {
    /// `model`, when it is a string.
    pub model: Option<String>,
    /// Bytes of prompt text: `messages[].content` (a string, or the `text`
    /// of its parts), `prompt` and `input`.
    pub prompt_bytes: usize,
    /// Tokens reserved for the answer: `max_completion_tokens`, else
    /// `max_tokens`, else 0.
    pub reserve: u64,
}

/// Reads `body` as an OpenAI-style JSON request; `None` when it is not
/// JSON. JSON that is not an object has none of the fields (all zero).
pub fn chat_request(body: &[u8]) -> Option<ChatRequest> {
    match serde_json::from_slice::<Object<ChatFields>>(body) {
        Ok(Object(fields)) => Some(fields.map(ChatRequest::from).unwrap_or_default()),
        Err(_) => chat_request_from_value(&serde_json::from_slice(body).ok()?),
    }
}

/// The reference reading of [`chat_request`], on a parsed tree.
fn chat_request_from_value(v: &Value) -> Option<ChatRequest> {
    let Some(object) = v.as_object() else {
        return Some(ChatRequest::default());
    };
    let mut prompt_bytes = 0;
    if let Some(messages) = object.get("messages").and_then(Value::as_array) {
        for m in messages {
            prompt_bytes += content_len(m.get("content"));
        }
    }
    prompt_bytes += content_len(object.get("prompt")) + content_len(object.get("input"));
    Some(ChatRequest {
        model: object
            .get("model")
            .and_then(Value::as_str)
            .map(String::from),
        prompt_bytes,
        reserve: object
            .get("max_completion_tokens")
            .or_else(|| object.get("max_tokens"))
            .and_then(Value::as_u64)
            .unwrap_or(0),
    })
}

fn content_len(v: Option<&Value>) -> usize {
    match v {
        Some(Value::String(s)) => s.len(),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|p| match p {
                Value::String(s) => s.len(),
                other => content_len(other.get("text")),
            })
            .sum(),
        _ => 0,
    }
}

/// Tokens an answer says it used: `usage.total_tokens`, else
/// `prompt_tokens` (or `input_tokens`) plus `completion_tokens` (or
/// `output_tokens`). `Ok(None)`: JSON that does not say; `Err(())`: not
/// JSON at all.
#[allow(clippy::result_unit_err)]
pub fn usage_tokens(body: &[u8]) -> Result<Option<u64>, ()> {
    match serde_json::from_slice::<Object<Answer>>(body) {
        Ok(Object(Some(a))) => Ok(a.tokens()),
        // JSON, but not an object: it states nothing.
        Ok(Object(None)) => Ok(None),
        Err(_) => match serde_json::from_slice::<Value>(body) {
            Ok(v) => Ok(usage_from_value(&v)),
            Err(_) => Err(()),
        },
    }
}

/// The reference reading of [`usage_tokens`], on a parsed tree.
pub fn usage_from_value(v: &Value) -> Option<u64> {
    let usage = v.get("usage")?;
    let field = |name: &str| usage.get(name).and_then(Value::as_u64);
    field("total_tokens").or_else(|| {
        let prompt = field("prompt_tokens").or_else(|| field("input_tokens"))?;
        // A hostile provider's counts saturate, never wrap to a small charge.
        Some(
            prompt.saturating_add(
                field("completion_tokens")
                    .or_else(|| field("output_tokens"))
                    .unwrap_or(0),
            ),
        )
    })
}

/// Visitor methods for the kinds of JSON value a reader does not look
/// into: each gives `$v` (an array's or object's insides are skipped);
/// `expecting` is the message for the errors none of them raise.
macro_rules! give {
    ($v:expr; $($kind:ident),*) => { $( give!(@$kind $v); )* };
    (@expecting $v:expr) => {
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any JSON value")
        }
    };
    (@bool $v:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($v)
        }
    };
    (@num $v:expr) => {
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($v)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($v)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($v)
        }
    };
    (@unit $v:expr) => {
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($v)
        }
    };
    (@str $v:expr) => {
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok($v)
        }
    };
    (@seq $v:expr) => {
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok($v)
        }
    };
    (@map $v:expr) => {
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok($v)
        }
    };
}

/// A JSON object read field by field: `T` says which fields it takes.
/// Anything but an object is `None`, as `Value::get` on it finds nothing.
struct Object<T>(Option<T>);

/// Reads the fields of one kind of object.
trait Fields<'de>: Default {
    /// Reads the value of field `key` when it is one of ours (`Ok(true)`);
    /// `Ok(false)` leaves it to be skipped. One of ours seen twice is an
    /// error ([`fill`]), so the body is read again as a tree (where the
    /// last one wins).
    fn field<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error>;
}

impl<'de, T: Fields<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Fields<'de>> Visitor<'de> for V<T> {
            type Value = Option<T>;
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields = T::default();
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    if !fields.field(&key, &mut map)? {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(Some(fields))
            }
            give!(None; expecting, bool, num, unit, str, seq);
        }
        d.deserialize_any(V(std::marker::PhantomData)).map(Object)
    }
}

/// An object key: borrowed from the body, copied only when it has escapes
/// (serde's own `Cow<str>` always copies).
struct Key<'de>(std::borrow::Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Key(std::borrow::Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Key(std::borrow::Cow::Owned(s.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

/// Sets a field's slot, once: a second value for it is an error.
fn fill<'de, A: MapAccess<'de>, T: Deserialize<'de>>(
    slot: &mut Option<T>,
    map: &mut A,
) -> Result<bool, A::Error> {
    if slot.is_some() {
        return Err(de::Error::custom("duplicate field"));
    }
    *slot = Some(map.next_value::<T>()?);
    Ok(true)
}

/// The request body's fields; each slot is `Some` once the field was seen.
#[derive(Default)]
struct ChatFields {
    model: Option<AnyString>,
    messages: Option<Messages>,
    prompt: Option<Text>,
    input: Option<Text>,
    max_completion_tokens: Option<AnyU64>,
    max_tokens: Option<AnyU64>,
}

impl<'de> Fields<'de> for ChatFields {
    fn field<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        match key {
            "model" => fill(&mut self.model, map),
            "messages" => fill(&mut self.messages, map),
            "prompt" => fill(&mut self.prompt, map),
            "input" => fill(&mut self.input, map),
            "max_completion_tokens" => fill(&mut self.max_completion_tokens, map),
            "max_tokens" => fill(&mut self.max_tokens, map),
            _ => Ok(false),
        }
    }
}

impl From<ChatFields> for ChatRequest {
    fn from(f: ChatFields) -> Self {
        let text = |t: Option<Text>| t.map_or(0, |t| t.0);
        ChatRequest {
            model: f.model.and_then(|m| m.0),
            prompt_bytes: f.messages.map_or(0, |m| m.0) + text(f.prompt) + text(f.input),
            // `max_completion_tokens` decides when present, a number or not.
            reserve: f
                .max_completion_tokens
                .or(f.max_tokens)
                .and_then(|n| n.0)
                .unwrap_or(0),
        }
    }
}

/// An answer's fields: its `usage`.
#[derive(Default)]
struct Answer {
    usage: Option<Object<Usage>>,
}

impl<'de> Fields<'de> for Answer {
    fn field<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        match key {
            "usage" => fill(&mut self.usage, map),
            _ => Ok(false),
        }
    }
}

impl Answer {
    /// The tokens `usage` states, by the rules of [`usage_from_value`].
    fn tokens(self) -> Option<u64> {
        let u = self.usage?.0?;
        let n = |f: Option<AnyU64>| f.and_then(|n| n.0);
        // Each count is taken only when it is a number; else the next one.
        n(u.total_tokens).or_else(|| {
            let prompt = n(u.prompt_tokens).or(n(u.input_tokens))?;
            let completion = n(u.completion_tokens).or(n(u.output_tokens));
            Some(prompt.saturating_add(completion.unwrap_or(0)))
        })
    }
}

/// The counts of `usage`.
#[derive(Default)]
struct Usage {
    total_tokens: Option<AnyU64>,
    prompt_tokens: Option<AnyU64>,
    input_tokens: Option<AnyU64>,
    completion_tokens: Option<AnyU64>,
    output_tokens: Option<AnyU64>,
}

impl<'de> Fields<'de> for Usage {
    fn field<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        match key {
            "total_tokens" => fill(&mut self.total_tokens, map),
            "prompt_tokens" => fill(&mut self.prompt_tokens, map),
            "input_tokens" => fill(&mut self.input_tokens, map),
            "completion_tokens" => fill(&mut self.completion_tokens, map),
            "output_tokens" => fill(&mut self.output_tokens, map),
            _ => Ok(false),
        }
    }
}

/// A message: its `content` as [`Text`].
#[derive(Default)]
struct Message {
    content: Option<Text>,
}

impl<'de> Fields<'de> for Message {
    fn field<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        match key {
            "content" => fill(&mut self.content, map),
            _ => Ok(false),
        }
    }
}

/// A content part that is an object: its `text` as [`Text`].
#[derive(Default)]
struct TextPart {
    text: Option<Text>,
}

impl<'de> Fields<'de> for TextPart {
    fn field<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        match key {
            "text" => fill(&mut self.text, map),
            _ => Ok(false),
        }
    }
}

/// Any JSON; the number when it is a `u64`, as `Value::as_u64`.
struct AnyU64(Option<u64>);

impl<'de> Deserialize<'de> for AnyU64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Option<u64>;
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Some(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(u64::try_from(v).ok())
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(None)
            }
            give!(None; expecting, bool, unit, str, seq, map);
        }
        d.deserialize_any(V).map(AnyU64)
    }
}

/// Any JSON; the string when it is one.
struct AnyString(Option<String>);

impl<'de> Deserialize<'de> for AnyString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Option<String>;
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Some(s.to_string()))
            }
            give!(None; expecting, bool, num, unit, seq, map);
        }
        d.deserialize_any(V).map(AnyString)
    }
}

/// `messages`: when it is an array, the summed content length of its
/// elements (one that is not an object counts 0); else 0.
struct Messages(usize);

impl<'de> Deserialize<'de> for Messages {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = usize;
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
                let mut sum = 0usize;
                while let Some(m) = seq.next_element::<Object<Message>>()? {
                    let content = m.0.and_then(|m| m.content);
                    sum = sum.saturating_add(content.map_or(0, |t| t.0));
                }
                Ok(sum)
            }
            give!(0; expecting, bool, num, unit, str, map);
        }
        d.deserialize_any(V).map(Messages)
    }
}

/// A content value's text length: a string's length, or an array's parts
/// (a string part: its length; an object part: its `text` as content;
/// anything else 0); anything else 0.
struct Text(usize);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = usize;
            fn visit_str<E: de::Error>(self, s: &str) -> Result<usize, E> {
                Ok(s.len())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
                let mut sum = 0usize;
                while let Some(p) = seq.next_element::<Part>()? {
                    sum = sum.saturating_add(p.0);
                }
                Ok(sum)
            }
            give!(0; expecting, bool, num, unit, map);
        }
        d.deserialize_any(V).map(Text)
    }
}

/// One part of a content array.
struct Part(usize);

impl<'de> Deserialize<'de> for Part {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = usize;
            fn visit_str<E: de::Error>(self, s: &str) -> Result<usize, E> {
                Ok(s.len())
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<usize, A::Error> {
                let part =
                    Object::<TextPart>::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(part.0.and_then(|p| p.text).map_or(0, |t| t.0))
            }
            give!(0; expecting, bool, num, unit, seq);
        }
        d.deserialize_any(V).map(Part)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bodies whose every field the readers look at takes each shape JSON
    /// allows, and the odd cases (duplicates, escapes, non-objects).
    const REQUESTS: &[&str] = &[
        r#"{"model":"gpt-4o","temperature":0,"messages":[{"role":"system","content":"You help."},{"role":"user","content":"Hi there"}],"max_tokens":50}"#,
        r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"abc"},"de",{"type":"image_url","image_url":{"url":"x"}},7,[1,2],{"text":["fg","h"]},{"text":{"a":1}}]}]}"#,
        r#"{"model":7,"messages":"not a list","prompt":"hello","input":["a","bc"],"max_completion_tokens":9,"max_tokens":3}"#,
        r#"{"max_completion_tokens":null,"max_tokens":3}"#,
        r#"{"max_completion_tokens":1.0,"max_tokens":3}"#,
        r#"{"max_tokens":-4,"messages":[null,1,"x",{"content":null},{"content":{"text":"no"}},{"content":"ok"}]}"#,
        r#"{"model":"a","model":"b"}"#,
        r#"{"messages":[{"content":"one","content":"three"}]}"#,
        r#"{"messages":[{"content":[{"text":"x","text":"yyyy"}]}]}"#,
        r#"{"m\u006fdel":"escaped","messages":[{"content":"caf\u00e9 \"q\""}]}"#,
        r#"{"nested":{"messages":[{"content":"not read"}]},"prompt":{"text":"objects count 0"}}"#,
        r#"["model","messages"]"#,
        r#""just a string""#,
        r#"42"#,
        r#"null"#,
        r#"{}"#,
        r#"{"model":"m","messages":[{"content":"unterminated"}"#,
        r#"not json"#,
        "",
        r#"{"usage":{"total_tokens":5}}"#,
    ];

    const ANSWERS: &[&str] = &[
        r#"{"id":"x","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":250,"completion_tokens":9,"total_tokens":259}}"#,
        r#"{"usage":{"input_tokens":5,"output_tokens":7}}"#,
        r#"{"usage":{"prompt_tokens":5,"input_tokens":100}}"#,
        r#"{"usage":{"prompt_tokens":null,"input_tokens":100,"completion_tokens":1}}"#,
        r#"{"usage":{"total_tokens":"12","prompt_tokens":2,"output_tokens":3}}"#,
        r#"{"usage":{"prompt_tokens":18446744073709551615,"completion_tokens":2}}"#,
        r#"{"usage":[259,1,2]}"#,
        r#"{"usage":null}"#,
        r#"{"usage":{"total_tokens":1},"usage":{"total_tokens":2}}"#,
        r#"{"usage":{"total_tokens":1,"total_tokens":2}}"#,
        r#"[{"usage":{"total_tokens":1}}]"#,
        r#"{"choices":[]}"#,
        r#"data: {"usage":{"total_tokens":3}}"#,
        "",
    ];

    #[test]
    fn the_typed_pass_reads_requests_as_the_tree_does() {
        for body in REQUESTS {
            let tree = serde_json::from_slice::<Value>(body.as_bytes())
                .ok()
                .and_then(|v| chat_request_from_value(&v));
            assert_eq!(chat_request(body.as_bytes()), tree, "{body}");
        }
        // And the typed pass itself took the ordinary bodies (no fallback).
        let typed = |b: &str| {
            serde_json::from_slice::<Object<ChatFields>>(b.as_bytes())
                .ok()
                .and_then(|o| o.0)
                .map(ChatRequest::from)
        };
        assert_eq!(
            typed(REQUESTS[0]),
            Some(ChatRequest {
                model: Some("gpt-4o".into()),
                prompt_bytes: "You help.".len() + "Hi there".len(),
                reserve: 50,
            })
        );
        // "abc" + "de" + "fg" + "h"; the image part, a number, an array and
        // an object `text` count nothing.
        assert_eq!(typed(REQUESTS[1]).map(|r| r.prompt_bytes), Some(8));
        assert_eq!(
            typed(REQUESTS[2]).map(|r| (r.model, r.prompt_bytes, r.reserve)),
            Some((None, 8, 9))
        );
        assert_eq!(
            typed(REQUESTS[3]).map(|r| r.reserve),
            Some(0),
            "a null max_completion_tokens decides"
        );
        assert_eq!(
            typed(REQUESTS[9]).and_then(|r| r.model).as_deref(),
            Some("escaped")
        );
        assert_eq!(typed(REQUESTS[11]), None, "an array is not an object");
        assert_eq!(
            chat_request(REQUESTS[11].as_bytes()),
            Some(ChatRequest::default())
        );
        assert_eq!(chat_request(REQUESTS[17].as_bytes()), None, "not JSON");
        // Duplicates go to the tree, where the last one wins.
        assert_eq!(typed(REQUESTS[6]), None);
        assert_eq!(
            chat_request(REQUESTS[6].as_bytes())
                .and_then(|r| r.model)
                .as_deref(),
            Some("b")
        );
        assert_eq!(
            chat_request(REQUESTS[7].as_bytes()).map(|r| r.prompt_bytes),
            Some(5)
        );
    }

    #[test]
    fn the_typed_pass_reads_usage_as_the_tree_does() {
        for body in ANSWERS {
            let tree = serde_json::from_slice::<Value>(body.as_bytes())
                .map(|v| usage_from_value(&v))
                .map_err(|_| ());
            assert_eq!(usage_tokens(body.as_bytes()), tree, "{body}");
        }
        assert_eq!(usage_tokens(ANSWERS[0].as_bytes()), Ok(Some(259)));
        assert_eq!(usage_tokens(ANSWERS[1].as_bytes()), Ok(Some(12)));
        assert_eq!(usage_tokens(ANSWERS[2].as_bytes()), Ok(Some(5)));
        assert_eq!(
            usage_tokens(ANSWERS[3].as_bytes()),
            Ok(Some(101)),
            "a null prompt_tokens gives way"
        );
        assert_eq!(
            usage_tokens(ANSWERS[5].as_bytes()),
            Ok(Some(u64::MAX)),
            "saturates"
        );
        assert_eq!(
            usage_tokens(ANSWERS[6].as_bytes()),
            Ok(None),
            "an array usage states nothing"
        );
        assert_eq!(
            usage_tokens(ANSWERS[8].as_bytes()),
            Ok(Some(2)),
            "the last usage wins"
        );
        assert_eq!(usage_tokens(ANSWERS[12].as_bytes()), Err(()));
    }

    #[test]
    fn deep_nesting_neither_overflows_nor_counts() {
        // A field the pass skips is skipped without recursion, at any depth
        // (the tree stops at 128 levels and calls the body not JSON).
        let deep = format!(
            "{{\"x\":{}1{},\"model\":\"m\"}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert_eq!(
            chat_request(deep.as_bytes())
                .and_then(|r| r.model)
                .as_deref(),
            Some("m")
        );
        assert_eq!(usage_tokens(deep.as_bytes()), Ok(None));
        // The readers descend a fixed few levels (messages, a message, its
        // parts, a part's text) and skip what lies below.
        let read = format!(
            "{{\"messages\":{}1{}}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert_eq!(
            chat_request(read.as_bytes()).map(|r| r.prompt_bytes),
            Some(0)
        );
    }
}
