//! The `edgegate` command line: `check-config` accepts good configs and names what is
//! wrong in bad ones; `serve` refuses to start on a bad config.

#![allow(clippy::unwrap_used)]

mod support;

use support::{base_config, check_config as check, policy, route, Upstream};

#[test]
fn check_config_accepts_the_shipped_demo_config() {
    support::components();
    let path = support::repo_root().join("policies/gateway.toml");
    let out = support::edgegate(&["check-config", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok ("));
}

#[test]
fn unknown_key_fails_check_config_naming_file_line_and_key() {
    let upstream = Upstream::start();
    let config = base_config(upstream.addr) + &route("api", "/", &[]) + "upstrem = \"x\"\n";
    let (ok, _, stderr) = check(&config);
    assert!(!ok);
    assert!(
        stderr.starts_with(
            "edgegate: error: gateway.toml:18:1: key `routes[0].upstrem`: unknown field `upstrem`"
        ),
        "{stderr}"
    );
}

#[test]
fn policy_init_refusal_is_reported_with_policy_key_and_reason() {
    let upstream = Upstream::start();
    let config = base_config(upstream.addr)
        + &policy("limits", "init-fails", "")
        + &route("api", "/", &["limits"]);
    let (ok, _, stderr) = check(&config);
    assert!(!ok);
    assert!(
        stderr.contains(
            "policy `limits` refused at admission: invalid config: key `threshold`: must be positive"
        ),
        "{stderr}"
    );
}

#[test]
fn missing_component_and_bad_reference_are_named() {
    let upstream = Upstream::start();
    let config = base_config(upstream.addr)
        + "[policies.ghost]\ncomponent = \"nowhere/ghost.wasm\"\n"
        + &route("api", "/", &["ghost"]);
    let (ok, _, stderr) = check(&config);
    assert!(!ok);
    assert!(
        stderr.contains("policy `ghost`: cannot read component"),
        "{stderr}"
    );
    assert!(stderr.contains("nowhere/ghost.wasm"), "{stderr}");

    let config = base_config(upstream.addr).replace("[upstreams.backend]", "[upstreams.other]")
        + &route("api", "/", &[]);
    let (ok, _, stderr) = check(&config);
    assert!(!ok);
    assert!(
        stderr.contains("key `routes[0].upstream`: unknown upstream `backend`"),
        "{stderr}"
    );
}

#[test]
fn serve_refuses_a_bad_config_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, "version = 7\n").unwrap();
    let out = support::edgegate(&["serve", "--config", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(":1:11: key `version`: unsupported config version 7"),
        "{stderr}"
    );
}
