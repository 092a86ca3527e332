//! tests/fixtures/attempts.toml: the case table the Spin component is tested
//! against too, here through the plan and error body the gateway uses.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use edgegate_request::attempts::{provider_failed, AttemptPlan};
use edgegate_request::errors::error_body;

use edgegate_request::fixtures::attempts as table;

#[test]
fn plans_make_the_attempts_and_waits_the_table_lists() {
    for case in table().plan {
        let d = &case.decision;
        let plan = AttemptPlan::of_decision(
            &d.upstream,
            d.fallbacks.iter().map(String::as_str),
            d.retries,
            d.backoff_ms,
            |name| Ok::<_, ()>(name.to_string()),
        )
        .unwrap();
        let tries: Vec<String> = (0..plan.attempts())
            .map(|n| plan.attempt(n).0.clone())
            .collect();
        assert_eq!(tries, case.tries, "{}", d.upstream);
        let windows: Vec<u64> = (1..=plan.retries)
            .map(|r| plan.backoff_window(r).as_millis() as u64)
            .collect();
        assert_eq!(windows, case.windows_ms, "{:?}", case.tries);
        for r in 1..=plan.retries {
            let window = plan.backoff_window(r);
            assert!(plan.backoff_before(r, 0.999) < window || window.is_zero());
            assert_eq!(plan.backoff_before(r, 0.0), Duration::ZERO);
        }
    }
}

#[test]
fn an_unknown_upstream_in_a_decision_is_the_resolvers_error() {
    let plan = AttemptPlan::of_decision("a", ["nope"], 0, 0, |name| {
        if name == "a" {
            Ok(1)
        } else {
            Err(format!("unknown upstream `{name}`"))
        }
    });
    assert_eq!(plan, Err("unknown upstream `nope`".to_string()));
}

#[test]
fn provider_failures_and_error_bodies_are_as_the_table_says() {
    let t = table();
    for s in t.provider_failed {
        assert!(provider_failed(s), "{s}");
    }
    for s in t.answered {
        assert!(!provider_failed(s), "{s}");
    }
    for e in t.error_body {
        let got: serde_json::Value =
            serde_json::from_str(&error_body(&e.code, &e.message, e.request_id.as_deref()))
                .unwrap();
        let want: serde_json::Value = serde_json::from_str(&e.json).unwrap();
        assert_eq!(got, want);
    }
}
