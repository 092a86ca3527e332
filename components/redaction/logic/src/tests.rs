//! Native tests of the redaction logic.

#![allow(clippy::unwrap_used)]

use super::*;
use edgegate_policy_core::testing::MemoryEnv;
use edgegate_policy_core::{EndReason, SseEvent, StreamError};
use serde_json::json;

fn policy(config: serde_json::Value) -> Redaction {
    Redaction::from_config(&config.to_string()).unwrap()
}

fn defaults() -> Redaction {
    Redaction::from_config("").unwrap()
}

fn text(p: &Redaction, input: &str) -> String {
    match p
        .redact_body(&MemoryEnv::default(), Some("text/plain"), input.as_bytes())
        .unwrap()
    {
        Scan::Clean => input.to_string(),
        Scan::Changed(b) => String::from_utf8(b).unwrap(),
        Scan::Blocked(r) => panic!("blocked by {r}"),
    }
}

#[test]
fn each_detector_finds_its_kind() {
    let p = defaults();
    let cases = [
        ("mail jane.doe@example.com now", "mail [REDACTED:email] now"),
        ("call +1 415 555 0134 today", "call [REDACTED:phone] today"),
        ("call (212) 555-0199 today", "call [REDACTED:phone] today"),
        ("call 555-123-4567", "call [REDACTED:phone]"),
        (
            "card 4111 1111 1111 1111 ok",
            "card [REDACTED:credit_card] ok",
        ),
        ("card 5500-0000-0000-0004", "card [REDACTED:credit_card]"),
        ("card 4111111111111111.", "card [REDACTED:credit_card]."),
        (
            "iban DE89 3704 0044 0532 0130 00 thanks",
            "iban [REDACTED:iban] thanks",
        ),
        ("iban GB82WEST12345698765432", "iban [REDACTED:iban]"),
        ("from 192.168.10.24.", "from [REDACTED:ip]."),
        ("from 2001:db8::8a2e:370:7334 x", "from [REDACTED:ip] x"),
        (
            "key sk-proj-abcdefghijklmnopqrstuvwxyz0123",
            "key [REDACTED:secret]",
        ),
        ("aws AKIAIOSFODNN7EXAMPLE", "aws [REDACTED:secret]"),
        (
            "gh ghp_abcdefghijklmnopqrstuvwxyz0123456789",
            "gh [REDACTED:secret]",
        ),
        ("-----BEGIN RSA PRIVATE KEY-----", "[REDACTED:secret]"),
    ];
    for (input, expected) in cases {
        assert_eq!(text(&p, input), expected, "{input}");
    }
}

#[test]
fn lookalikes_are_left_alone() {
    let p = defaults();
    for input in [
        "card 4111 1111 1111 1112",         // Luhn fails
        "iban GB82 WEST 1234 5698 7654 33", // mod 97 fails
        "version 999.1.1.1",                // not an IPv4 address
        "on 2024-01-15 at 10:30:00",        // a date and a time
        "order 12345 shipped",              // a short number
        "v1.2.3 and 1.2.3.4.5",             // versions
        "no secrets here: sk-short",
        "email at example dot com",
    ] {
        assert_eq!(text(&p, input), input, "{input}");
    }
}

#[test]
fn json_stays_valid_and_only_string_values_change() {
    let p = defaults();
    let body = r#"{"model":"gpt-4o","temperature":0.2,"n":1,
      "messages":[{"role":"user","content":"I am jane.doe@example.com, caf\u00e9 \"quoted\""}],
      "jane.doe@example.com":"key stays","list":[1,2.5,"10.0.0.1"]}"#;
    let Scan::Changed(out) = p
        .redact_body(
            &MemoryEnv::default(),
            Some("application/json"),
            body.as_bytes(),
        )
        .unwrap()
    else {
        panic!("nothing redacted")
    };
    let out = String::from_utf8(out).unwrap();
    let before: serde_json::Value = serde_json::from_str(body).unwrap();
    let after: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(after["model"], before["model"]);
    assert_eq!(after["temperature"], 0.2);
    assert_eq!(after["list"][1], 2.5);
    assert_eq!(after["list"][2], "[REDACTED:ip]");
    assert_eq!(
        after["jane.doe@example.com"], "key stays",
        "keys are not redacted"
    );
    assert_eq!(
        after["messages"][0]["content"],
        "I am [REDACTED:email], café \"quoted\""
    );
    // Untouched parts keep their bytes, whitespace and escapes included.
    assert!(
        out.starts_with("{\"model\":\"gpt-4o\",\"temperature\":0.2,\"n\":1,\n      \"messages\"")
    );
}

#[test]
fn json_shape_is_detected_without_content_type_and_invalid_json_is_text() {
    let p = defaults();
    let env = MemoryEnv::default();
    let Scan::Changed(out) = p.redact_body(&env, None, br#"{"a":"x@y.io"}"#).unwrap() else {
        panic!()
    };
    assert_eq!(out, br#"{"a":"[REDACTED:email]"}"#);
    let Scan::Changed(out) = p
        .redact_body(&env, Some("application/json"), br#"{"a":"x@y.io""#)
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(out, br#"{"a":"[REDACTED:email]""#);
    assert_eq!(
        p.redact_body(&env, None, &[0xff, 0xfe, b'@']).unwrap(),
        Scan::Clean
    );
}

#[test]
fn sse_lines_are_redacted_as_json() {
    let p = defaults();
    let body =
        "data: {\"choices\":[{\"delta\":{\"content\":\"mail x@y.io\"}}]}\n\ndata: [DONE]\n\n";
    let Scan::Changed(out) = p
        .redact_body(
            &MemoryEnv::default(),
            Some("text/event-stream"),
            body.as_bytes(),
        )
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "data: {\"choices\":[{\"delta\":{\"content\":\"mail [REDACTED:email]\"}}]}\n\ndata: [DONE]\n\n"
    );
}

#[test]
fn hash_mode_is_a_stable_pseudonym() {
    let p = policy(json!({"rules": [{"detector": "email", "mode": "hash"}]}));
    let a = text(&p, "a@x.io and b@x.io and a@x.io");
    let parts: Vec<&str> = a.split(" and ").collect();
    assert_eq!(parts[0], parts[2]);
    assert_ne!(parts[0], parts[1]);
    assert!(
        parts[0].starts_with("[email:") && parts[0].len() == "[email:]".len() + 12,
        "{a}"
    );
    // A secret changes every pseudonym.
    let keyed =
        policy(json!({"hash_secret": "s3", "rules": [{"detector": "email", "mode": "hash"}]}));
    assert_ne!(text(&keyed, "a@x.io"), parts[0]);
}

#[test]
fn block_rules_refuse_requests_without_echoing_the_value() {
    let p = policy(
        json!({"rules": [{"detector": "email"}, {"detector": "credit_card", "mode": "block"}]}),
    );
    let env = MemoryEnv::default();
    let req = HttpRequest::new("POST", "/v1/chat/completions")
        .with_header("content-type", "application/json")
        .with_body(json!({"messages": [{"content": "x@y.io 4111 1111 1111 1111"}]}).to_string());
    let RequestOutcome::Respond(resp) = p.on_request(&env, req).unwrap() else {
        panic!()
    };
    assert_eq!(resp.status, 400);
    let body = String::from_utf8(resp.body.unwrap()).unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"], "redaction_blocked");
    assert_eq!(v["rule"], "credit_card");
    assert!(!body.contains("4111"));
    assert_eq!(env.counter("blocked", "credit_card"), 1);

    // In a response: replaced by a 502.
    let resp = HttpResponse {
        status: 200,
        headers: vec![].into(),
        body: Some(b"leak 4111 1111 1111 1111".to_vec()),
    };
    let ResponseOutcome::Replace(r) = p.on_response(&env, &RequestInfo::default(), resp).unwrap()
    else {
        panic!()
    };
    assert_eq!(r.status, 502);
}

#[test]
fn custom_patterns_headers_and_metrics() {
    let p = policy(json!({
        "headers": ["X-User-Email"],
        "rules": [{"detector": "email"}, {"name": "ticket", "pattern": "TKT-[0-9]{6}", "mode": "mask"}],
    }));
    let env = MemoryEnv::default();
    let req = HttpRequest::new("POST", "/")
        .with_header("x-user-email", "a@b.io")
        .with_header("x-other", "c@d.io")
        .with_body("see TKT-123456 and TKT-654321, mail e@f.io");
    let RequestOutcome::Continue(c) = p.on_request(&env, req).unwrap() else {
        panic!()
    };
    assert_eq!(
        c.headers,
        [HeaderOp::Set(
            "x-user-email".into(),
            "[REDACTED:email]".into()
        )]
    );
    assert_eq!(
        c.body.as_deref(),
        Some(&b"see [REDACTED:ticket] and [REDACTED:ticket], mail [REDACTED:email]"[..])
    );
    assert_eq!(env.counter("redactions", "ticket"), 2);
    assert_eq!(env.counter("redactions", "email"), 2);
    assert!(
        env.logs.borrow().is_empty(),
        "nothing logged, least of all values"
    );
}

#[test]
fn switches_turn_phases_off() {
    let p = policy(json!({"request": false, "response": false}));
    let env = MemoryEnv::default();
    let req = HttpRequest::new("POST", "/").with_body("a@b.io");
    assert_eq!(p.on_request(&env, req).unwrap(), RequestOutcome::pass());
    let resp = HttpResponse {
        status: 200,
        headers: vec![].into(),
        body: Some(b"a@b.io".to_vec()),
    };
    assert_eq!(
        p.on_response(&env, &RequestInfo::default(), resp).unwrap(),
        ResponseOutcome::pass()
    );
}

#[test]
fn bad_configs_name_the_key() {
    let cases = [
        (
            json!({"rules": [{"detector": "passport"}]}),
            "rules[0].detector",
        ),
        (
            json!({"rules": [{"name": "x", "pattern": "("}]}),
            "rules[0].pattern",
        ),
        (
            json!({"rules": [{"name": "x", "pattern": "a*"}]}),
            "rules[0].pattern",
        ),
        (json!({"rules": [{"pattern": "abc"}]}), "rules[0].name"),
        (json!({"rules": [{"name": "x"}]}), "rules[0]"),
        (
            json!({"rules": [{"detector": "email", "pattern": "a"}]}),
            "rules[0]",
        ),
        (
            json!({"rules": [{"detector": "email"}, {"detector": "email"}]}),
            "rules[1].name",
        ),
        (
            json!({"rules": [{"detector": "email", "mode": "drop"}]}),
            "rules[0].mode",
        ),
        (
            json!({"rules": [{"name": "bad name", "detector": "email"}]}),
            "rules[0].name",
        ),
        (json!({"headers": ["bad header"]}), "headers[0]"),
        (json!({"unknown": true}), "unknown"),
    ];
    for (cfg, key) in cases {
        match Redaction::from_config(&cfg.to_string()) {
            Err(PolicyError::Config(e)) => assert_eq!(e.key, key, "{cfg}: {}", e.reason),
            Err(other) => panic!("{cfg}: {other:?}"),
            Ok(_) => panic!("{cfg} accepted"),
        }
    }
    let Err(PolicyError::Config(e)) =
        Redaction::from_config(r#"{"rules":[{"name":"x","pattern":"("}]}"#)
    else {
        panic!()
    };
    assert!(e.reason.starts_with("invalid regex:"), "{}", e.reason);
}

/// Scanners see untrusted text: random strings over the characters they
/// care about must never panic, and every match must be a valid slice.
#[test]
fn scanners_never_panic_and_stay_on_char_boundaries() {
    let alphabet: Vec<char> =
        "0123456789 .-+()@:abcdefxyzABCDEFGKZ_/é€\"\\{}[],\nsk-eyJAKIAxoxbghp_"
            .chars()
            .collect();
    let mut x: u64 = 0x1234_5678;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..20_000 {
        let len = (next() % 48) as usize;
        let s: String = (0..len)
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
            .collect();
        for d in Detector::ALL {
            let mut spans = Vec::new();
            d.find(&s, &Lexed::of(&s), &mut spans);
            for (a, b) in spans {
                assert!(
                    a < b && s.get(a..b).is_some(),
                    "{d:?} gave {a}..{b} in {s:?}"
                );
            }
        }
        let p = defaults();
        let _ = p
            .redact_body(&MemoryEnv::default(), None, s.as_bytes())
            .unwrap();
    }
}

#[test]
fn values_are_found_next_to_other_numbers_and_words() {
    let p = defaults();
    let cases = [
        // The longest phone-shaped start of a longer run of digit groups.
        (
            "call 555-123-4567 20 times",
            "call [REDACTED:phone] 20 times",
        ),
        ("call 1-800-555-0199 now", "call [REDACTED:phone] now"),
        ("call +14155550134 now", "call [REDACTED:phone] now"),
        ("tel +49 (0)30 1234567", "tel [REDACTED:phone]"),
        ("tel 030 1234 5678", "tel [REDACTED:phone]"),
        ("tel 01 23 45 67 89.", "tel [REDACTED:phone]."),
        ("2024-01-15 555-123-4567", "2024-01-15 [REDACTED:phone]"),
        // A card inside a longer run of groups: after a reference, before an expiry.
        (
            "ref 1234 4111 1111 1111 1111",
            "ref 1234 [REDACTED:credit_card]",
        ),
        ("4111 1111 1111 1111 12/26", "[REDACTED:credit_card] 12/26"),
        (
            "4111 1111 1111 1111 5500 0000 0000 0004",
            "[REDACTED:credit_card] [REDACTED:credit_card]",
        ),
        ("amex 3782 822463 10005", "amex [REDACTED:credit_card]"),
        // An IBAN followed by more upper-case words.
        (
            "iban DE89 3704 0044 0532 0130 00 BIC COBADEFFXXX",
            "iban [REDACTED:iban] BIC COBADEFFXXX",
        ),
        ("host 10.0.0.1:8080", "host [REDACTED:ip]:8080"),
        ("from ::ffff:192.168.1.1 x", "from [REDACTED:ip] x"),
    ];
    for (input, expected) in cases {
        assert_eq!(text(&p, input), expected, "{input}");
    }
}

#[test]
fn dates_times_and_number_lists_are_not_phones_or_cards() {
    let p = defaults();
    for input in [
        "at 2024-01-15 10:30 ok",
        "on 15.01.2024 10:30 ok",
        "on 01.02.2024 10 am",
        "01-15-2024 09:00",
        "scores 10 20 30 40 50 60",
        "id 12345 67890 12345",
        "ms 1700000000004",  // Luhn-valid, but no card issuer starts with 1
        "ref 7992 7398 713", // Luhn-valid, 11 digits
        "task-abcdefghijklmnopqrstuvwxyz012345", // `sk-` inside a word
    ] {
        assert_eq!(text(&p, input), input, "{input}");
    }
}

#[test]
fn private_keys_are_masked_with_their_key_material() {
    let p = defaults();
    let key = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA1234\nabcd==\n-----END RSA PRIVATE KEY-----";
    assert_eq!(text(&p, &format!("{key}\nbye")), "[REDACTED:secret]\nbye");
    // Truncated: the base64 lines that follow the header go too.
    assert_eq!(
        text(
            &p,
            "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg+/=\nabc\n\nthanks"
        ),
        "[REDACTED:secret]\n\nthanks"
    );
    // Inside JSON the newlines are escapes; the value is unescaped before scanning.
    let body = json!({ "content": format!("my key: {key} ok") }).to_string();
    let Scan::Changed(out) = p
        .redact_body(&MemoryEnv::default(), None, body.as_bytes())
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(out, br#"{"content":"my key: [REDACTED:secret] ok"}"#);
}

#[test]
fn a_block_rule_blocks_even_inside_another_rules_match() {
    let p = policy(json!({"rules": [
        {"detector": "email"},
        {"name": "corp", "pattern": "secretcorp", "mode": "block"},
    ]}));
    let env = MemoryEnv::default();
    assert_eq!(
        p.redact_body(&env, None, b"mail x@secretcorp.com").unwrap(),
        Scan::Blocked("corp".into())
    );
}

#[test]
fn every_value_of_a_redacted_header_is_written_back() {
    let p = policy(json!({"headers": ["x-e"], "rules": [{"detector": "email"}]}));
    let req = HttpRequest::new("GET", "/")
        .with_header("x-e", "plain")
        .with_header("x-e", "c@d.io");
    let RequestOutcome::Continue(c) = p.on_request(&MemoryEnv::default(), req).unwrap() else {
        panic!()
    };
    assert_eq!(
        c.headers,
        [
            HeaderOp::Set("x-e".into(), "plain".into()),
            HeaderOp::Append("x-e".into(), "[REDACTED:email]".into()),
        ]
    );
}

#[test]
fn a_blocked_request_reports_the_block_only() {
    let p = policy(json!({
        "headers": ["x-e"],
        "rules": [{"detector": "email"}, {"detector": "credit_card", "mode": "block"}],
    }));
    let env = MemoryEnv::default();
    let req = HttpRequest::new("POST", "/")
        .with_header("x-e", "a@b.io")
        .with_body("a@b.io 4111 1111 1111 1111");
    assert!(matches!(
        p.on_request(&env, req).unwrap(),
        RequestOutcome::Respond(_)
    ));
    assert_eq!(env.counter("blocked", "credit_card"), 1);
    assert_eq!(env.counter("redactions", "email"), 0);
}

/// Streams through the event hook as the host does: each call gets the
/// carry the last one held back.
fn run_events(p: &Redaction, events: Vec<SseEvent>) -> Result<Vec<SseEvent>, StreamError> {
    let env = MemoryEnv::default();
    let mut state = BodyState::default();
    let mut carry = String::new();
    let mut out = Vec::new();
    let items = events
        .into_iter()
        .map(StreamItem::Event)
        .chain([StreamItem::End(EndReason::Complete)]);
    for item in items {
        let given = item.clone();
        match p
            .on_response_event(&env, &mut state, item, carry.clone())
            .unwrap()
        {
            EventOutcome::Pass => {
                if let StreamItem::Event(e) = given {
                    out.push(e);
                }
            }
            EventOutcome::Emit { events, carry: c } => {
                assert!(
                    c.len() <= 64 << 10,
                    "the carry stays under the host's limit"
                );
                out.extend(events);
                carry = c;
            }
            EventOutcome::Fail(e) => return Err(e),
        }
    }
    Ok(out)
}

fn openai_stream(pieces: &[&str]) -> Vec<SseEvent> {
    let chunk = |delta: serde_json::Value, finish: serde_json::Value| {
        SseEvent::data(
            json!({"id": "c1", "object": "chat.completion.chunk", "model": "m",
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            .to_string(),
        )
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        json!(null),
    )];
    events.extend(
        pieces
            .iter()
            .map(|p| chunk(json!({ "content": p }), json!(null))),
    );
    events.push(chunk(json!({}), json!("stop")));
    events.push(SseEvent::data("[DONE]"));
    events
}

fn openai_text(events: &[SseEvent]) -> String {
    events
        .iter()
        .filter_map(|e| serde_json::from_str::<serde_json::Value>(&e.data).ok())
        .filter_map(|v| {
            v.pointer("/choices/0/delta/content")?
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

fn masking() -> Redaction {
    policy(json!({ "rules": [
        { "detector": "email", "mode": "mask" },
        { "detector": "phone", "mode": "mask" },
        { "detector": "credit_card", "mode": "mask" },
        { "detector": "iban", "mode": "mask" },
        { "detector": "secret", "mode": "mask" },
    ]}))
}

const PII_ANSWER: &str = "Write to jane@example.com or call +1 415 555 0134. Card 4111 1111 1111 1111, \
                          IBAN DE89 3704 0044 0532 0130 00, key sk-proj-abcdefghijklmnopqrstuvwxyz0123 done.";
const PII: [&str; 5] = [
    "jane@example.com",
    "415 555 0134",
    "4111 1111 1111 1111",
    "DE89 3704 0044 0532 0130 00",
    "sk-proj-abcdefghijklmnopqrstuvwxyz0123",
];

#[test]
fn pii_split_across_two_openai_deltas_is_redacted_at_every_cut() {
    let p = masking();
    let whole = text(&p, PII_ANSWER);
    for cut in 1..PII_ANSWER.len() {
        let (a, b) = PII_ANSWER.split_at(cut);
        let out = run_events(&p, openai_stream(&[a, b])).unwrap();
        let streamed = openai_text(&out);
        assert_eq!(streamed, whole, "cut at {cut}: {a:?} | {b:?}");
        for e in &out {
            for secret in PII {
                assert!(
                    !e.data.contains(secret),
                    "cut {cut}: {secret} leaked in {}",
                    e.data
                );
            }
        }
        assert_eq!(out.last().map(|e| e.data.as_str()), Some("[DONE]"));
    }
}

#[test]
fn pii_in_three_byte_deltas_is_redacted_and_text_keeps_flowing() {
    let p = masking();
    let pieces: Vec<String> = PII_ANSWER
        .as_bytes()
        .chunks(3)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
    let out = run_events(&p, openai_stream(&refs)).unwrap();
    assert_eq!(openai_text(&out), text(&p, PII_ANSWER));
    // Text flows: the first words go out long before the stream ends.
    let first_text = out
        .iter()
        .position(|e| openai_text(std::slice::from_ref(e)).starts_with("Write"))
        .unwrap();
    assert!(
        first_text < 6,
        "the first word went out at event {first_text}"
    );
}

#[test]
fn pii_split_across_anthropic_text_deltas_is_redacted() {
    let p = masking();
    let (a, b) = PII_ANSWER.split_at(17); // "Write to jane@exa" | "mple.com ..."
    let delta = |t: &str| {
        SseEvent::named(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
                   "delta": {"type": "text_delta", "text": t}})
            .to_string(),
        )
    };
    let events = vec![
        SseEvent::named("message_start", json!({"type": "message_start", "message": {"usage": {"input_tokens": 5}}}).to_string()),
        SseEvent::named("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}).to_string()),
        delta(a),
        delta(b),
        SseEvent::named("content_block_stop", json!({"type": "content_block_stop", "index": 0}).to_string()),
        SseEvent::named("message_stop", json!({"type": "message_stop"}).to_string()),
    ];
    let out = run_events(&p, events).unwrap();
    let streamed: String = out
        .iter()
        .filter_map(|e| serde_json::from_str::<serde_json::Value>(&e.data).ok())
        .filter_map(|v| v.pointer("/delta/text")?.as_str().map(str::to_string))
        .collect();
    assert_eq!(streamed, text(&p, PII_ANSWER));
    let stop = out
        .iter()
        .position(|e| e.event.as_deref() == Some("content_block_stop"))
        .unwrap();
    let last_delta = out
        .iter()
        .rposition(|e| e.event.as_deref() == Some("content_block_delta"))
        .unwrap();
    assert!(
        last_delta < stop,
        "held text goes out before its block stops"
    );
}

#[test]
fn a_block_rule_hit_mid_stream_ends_it_and_counts() {
    let p = policy(json!({ "rules": [{ "detector": "credit_card", "mode": "block" }] }));
    let env = MemoryEnv::default();
    let mut state = BodyState::default();
    let mut carry = String::new();
    let mut failed_at = None;
    for (i, piece) in ["Your card is 4111 1111", " 1111 1111, ", "thanks"]
        .iter()
        .enumerate()
    {
        let event = openai_stream(&[piece])[1].clone();
        match p
            .on_response_event(&env, &mut state, StreamItem::Event(event), carry.clone())
            .unwrap()
        {
            EventOutcome::Emit { carry: c, .. } => carry = c,
            EventOutcome::Pass => {}
            EventOutcome::Fail(e) => {
                assert_eq!(e.code, "response_blocked");
                assert!(e.message.contains("credit_card"));
                failed_at = Some(i);
                break;
            }
        }
    }
    assert_eq!(failed_at, Some(1), "blocked once the number is whole");
    assert_eq!(env.counter("blocked", "credit_card"), 1);
}

#[test]
fn plain_chunks_are_redacted_across_chunk_boundaries() {
    let p = masking();
    let env = MemoryEnv::default();
    let mut state = BodyState::default();
    for cut in 1..PII_ANSWER.len() {
        let (a, b) = PII_ANSWER.split_at(cut);
        let mut carry = Vec::new();
        let mut out = Vec::new();
        for (piece, end) in [(a, None), (b, None), ("", Some(EndReason::Complete))] {
            let mut data = std::mem::take(&mut carry);
            data.extend_from_slice(piece.as_bytes());
            match p
                .on_response_chunk(
                    &env,
                    &mut state,
                    Chunk {
                        data: data.clone(),
                        end,
                    },
                )
                .unwrap()
            {
                ChunkOutcome::Pass => out.extend(data),
                ChunkOutcome::Emit { data, carry: c } => {
                    out.extend(data);
                    carry = c;
                }
                ChunkOutcome::Fail(e) => panic!("failed: {e:?}"),
            }
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            text(&p, PII_ANSWER),
            "cut {cut}"
        );
    }
}

#[test]
fn a_flushed_choice_carries_only_its_own_text() {
    // Two choices in one stream (`n = 2`). Choice 0 ends after the first
    // event while its last word is still held; the event that flushes it
    // is made from that first event, which also had choice 1's text. That
    // text went out with choice 1's own stream and must not go out twice.
    let p = masking();
    let event = |choices: serde_json::Value| {
        SseEvent::data(
            json!({"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": choices})
                .to_string(),
        )
    };
    let events = vec![
        event(json!([
            {"index": 0, "delta": {"content": "mail jane@exa"}, "finish_reason": null},
            {"index": 1, "delta": {"content": "first"}, "finish_reason": null},
        ])),
        event(json!([{"index": 1, "delta": {"content": " second"}, "finish_reason": null}])),
        event(json!([{"index": 1, "delta": {}, "finish_reason": "stop"}])),
    ];
    let out = run_events(&p, events).unwrap();
    let text_of = |index: u64| -> String {
        out.iter()
            .filter_map(|e| serde_json::from_str::<serde_json::Value>(&e.data).ok())
            .flat_map(|v| v["choices"].as_array().cloned().unwrap_or_default())
            .filter(|c| c["index"] == index)
            .filter_map(|c| c["delta"]["content"].as_str().map(str::to_string))
            .collect()
    };
    assert_eq!(
        text_of(0),
        "mail jane@exa",
        "choice 0, its held word flushed once"
    );
    assert_eq!(text_of(1), "first second", "choice 1, each word once");
}
