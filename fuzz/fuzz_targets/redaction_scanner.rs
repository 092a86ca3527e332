//! The redaction scanners over JSON, SSE and text bodies: any bytes are
//! scanned without a panic, and so is what a scan redacted.
#![no_main]

use edgegate_policy_core::testing::MemoryEnv;
use edgegate_policy_core::PolicyLogic;
use edgegate_redaction::{Redaction, Scan};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    let content_type = match kind % 3 {
        0 => Some("application/json"),
        1 => Some("text/event-stream"),
        _ => Some("text/plain"),
    };
    let policy = Redaction::from_config("{}").expect("the default config");
    let env = MemoryEnv::at(0);
    if let Ok(Scan::Changed(redacted)) = policy.redact_body(&env, content_type, body) {
        let again = policy.redact_body(&env, content_type, &redacted);
        assert!(
            matches!(again, Ok(Scan::Clean) | Ok(Scan::Changed(_))),
            "{again:?}"
        );
    }
});
