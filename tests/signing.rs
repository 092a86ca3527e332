//! `edgegate keygen`, `sign` and `verify` on real components, and that a signed
//! component still loads and runs.

#![allow(clippy::unwrap_used)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use support::{edgegate, output_text as text};

/// `edgegate sign --key SECRET --out OUT INPUT`, which must succeed.
fn sign(secret: &Path, input: &Path, out: &Path) {
    let o = edgegate(&["sign", "--key", p(secret), "--out", p(out), p(input)]);
    assert!(o.status.success(), "{}", text(&o));
}

/// `keygen` into `dir`; returns (key id, secret path, trust path).
fn keygen(dir: &Path, kinds: &str) -> (String, PathBuf, PathBuf) {
    let out = edgegate(&["keygen", "--out", dir.to_str().unwrap(), "--kinds", kinds]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let id = stdout
        .lines()
        .next()
        .unwrap()
        .strip_prefix("key id ")
        .unwrap()
        .to_string();
    (
        id.clone(),
        dir.join(format!("{id}.secret")),
        dir.join("trust.toml"),
    )
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn keygen_sign_verify_round_trip_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let (id, secret, trust) = keygen(&dir.path().join("keys"), "auth,custom");
    assert_eq!(
        std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(dir.path().join(format!("keys/{id}.public")).exists());

    let unsigned = dir.path().join("headers.wasm");
    std::fs::copy(support::unsigned_component("headers"), &unsigned).unwrap();
    let signed = dir.path().join("headers.signed.wasm");
    sign(&secret, &unsigned, &signed);

    let out = edgegate(&["verify", "--trust", p(&trust), "--kind", "auth", p(&signed)]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("trusted, signed by {id}")),
        "{}",
        text(&out)
    );

    let refused = |component: &Path, trust: &Path, kind: &str| {
        let out = edgegate(&["verify", "--trust", p(trust), "--kind", kind, p(component)]);
        assert!(!out.status.success());
        text(&out)
    };
    assert!(refused(&unsigned, &trust, "auth").contains("refused: unsigned"));
    let mut bytes = std::fs::read(&signed).unwrap();
    let last = bytes.len() - 10;
    bytes[last] ^= 0x20;
    let tampered = dir.path().join("tampered.wasm");
    std::fs::write(&tampered, &bytes).unwrap();
    let msg = refused(&tampered, &trust, "auth");
    assert!(msg.contains(&format!("refused: signature does not verify: the component changed after it was signed (key {id})")), "{msg}");
    let msg = refused(&signed, &trust, "routing");
    assert!(
        msg.contains(&format!(
            "refused: key {id} may not sign `routing` policies"
        )),
        "{msg}"
    );
    let (other_id, _, other_trust) = keygen(&dir.path().join("other"), "*");
    let msg = refused(&signed, &other_trust, "auth");
    assert!(
        msg.contains(&format!("refused: signed by an unknown key ({id})")),
        "{msg}"
    );
    assert_ne!(other_id, id);

    // Signing in place, by a second key, keeps the first signature (k-of-n).
    let (_, other_secret, _) = keygen(&dir.path().join("third"), "*");
    let out = edgegate(&["sign", "--key", p(&other_secret), p(&signed)]);
    assert!(out.status.success(), "{}", text(&out));
    let out = edgegate(&["verify", "--trust", p(&trust), "--kind", "auth", p(&signed)]);
    assert!(out.status.success(), "{}", text(&out));
}

#[tokio::test]
async fn signed_component_still_loads_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (_, secret, trust) = keygen(&dir.path().join("keys"), "*");
    let signed = dir.path().join("headers.wasm");
    sign(&secret, &support::unsigned_component("headers"), &signed);
    let upstream = support::Upstream::start();
    let config = support::base_config(upstream.addr).replace(
        &format!("{:?}", p(&support::trust_store())),
        &format!("{:?}", p(&trust)),
    ) + &format!(
            "[policies.h]\ncomponent = {:?}\nconfig = {{ request_set = {{ \"x-signed\" = \"yes\" }} }}\n",
            p(&signed)
        )
        + &support::route("api", "/", &["h"]);
    let gw = support::Gateway::start(&config);
    assert_eq!(reqwest::get(gw.url("/")).await.unwrap().status(), 200);
    assert_eq!(upstream.seen()[0].header("x-signed"), Some("yes"));
}

/// The content sha256 `edgegate verify` prints for a trusted `component`.
fn verified_digest(trust: &Path, component: &Path) -> String {
    let out = edgegate(&["verify", "--trust", p(trust), p(component)]);
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    let digest = t
        .rsplit("(content sha256 ")
        .next()
        .unwrap()
        .trim_end()
        .trim_end_matches(')')
        .to_string();
    assert_eq!(digest.len(), 64, "{t}");
    digest
}

/// `n` as an unsigned LEB128 of exactly `width` bytes: longer than needed is
/// valid WebAssembly (padding bytes `0x80`).
fn padded_leb(mut n: usize, width: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..width {
        out.push((n & 0x7f) as u8 | if i + 1 < width { 0x80 } else { 0 });
        n >>= 7;
    }
    assert_eq!(n, 0);
    out
}

/// A LEB128 at `pos`: (value, position after it).
fn read_leb(bytes: &[u8], mut pos: usize) -> (usize, usize) {
    let mut value = 0;
    for shift in (0..35).step_by(7) {
        let b = bytes[pos];
        pos += 1;
        value |= usize::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return (value, pos);
        }
    }
    panic!("LEB128 longer than 5 bytes");
}

/// `signed` with its leading `signature` section's size and name length
/// re-encoded as 5- and 3-byte LEB128s: the same signature, another file.
fn pad_signature_section_lengths(signed: &[u8]) -> Vec<u8> {
    assert_eq!(signed[8], 0, "the signature section comes first");
    let (size, contents_at) = read_leb(signed, 9);
    let end = contents_at + size;
    let (name_len, name_at) = read_leb(signed, contents_at);
    assert_eq!(&signed[name_at..name_at + name_len], b"signature");
    let mut contents = padded_leb(name_len, 3);
    contents.extend_from_slice(&signed[name_at..end]);
    let mut out = signed[..8].to_vec();
    out.push(0);
    out.extend(padded_leb(contents.len(), 5));
    out.extend(contents);
    out.extend_from_slice(&signed[end..]);
    out
}

/// `check-config` on a config whose one policy `h` uses `component`, trusting `trust`.
fn check_with(
    trust: &Path,
    component: &Path,
    extra_policy: &str,
    extra_trust: &str,
) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "version = 1\n[trust]\nstore = {:?}\n{extra_trust}\n[upstreams.b]\nendpoints = [\"127.0.0.1:9\"]\n[policies.h]\ncomponent = {:?}\n{extra_policy}\n[[routes]]\nname = \"r\"\nupstream = \"b\"\npolicies = [\"h\"]\n",
        p(trust),
        p(component)
    );
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, config).unwrap();
    let out = edgegate(&["check-config", p(&path)]);
    (out.status.success(), text(&out))
}

#[test]
fn gateway_refuses_what_it_cannot_verify_and_names_why() {
    let trust = support::trust_store();
    let signed = support::component("headers");
    let unsigned = support::unsigned_component("headers");

    let (ok, out) = check_with(&trust, &signed, "", "");
    assert!(ok, "{out}");

    let (ok, out) = check_with(&trust, &unsigned, "", "");
    assert!(!ok);
    assert!(
        out.contains(&format!(
            "policy `h`: component {} refused: unsigned: the component carries no signature",
            unsigned.display()
        )),
        "{out}"
    );

    let pin = "ab".repeat(32);
    let (ok, out) = check_with(&trust, &signed, &format!("sha256 = \"{pin}\""), "");
    assert!(!ok);
    assert!(
        out.contains("refused: digest mismatch: sha256 is "),
        "{out}"
    );
    assert!(out.contains(&format!("the config pins {pin}")), "{out}");

    let (ok, out) = check_with(&trust, &signed, "", "required_signers = { custom = 2 }");
    assert!(!ok);
    assert!(
        out.contains("refused: needs signatures from 2 distinct trusted keys, has 1"),
        "{out}"
    );

    // A key that may only sign auth policies does not vouch for a custom one.
    let dir = tempfile::tempdir().unwrap();
    let (id, secret, auth_only) = keygen(&dir.path().join("k"), "auth");
    let by_auth_key = dir.path().join("h.wasm");
    sign(&secret, &unsigned, &by_auth_key);
    let (ok, out) = check_with(&auth_only, &by_auth_key, "", "");
    assert!(!ok);
    assert!(
        out.contains(&format!("refused: key {id} may not sign `custom` policies")),
        "{out}"
    );
    let (ok, out) = check_with(&auth_only, &by_auth_key, "kind = \"auth\"", "");
    assert!(ok, "{out}");

    // Signed by a key the gateway does not know.
    let (ok, out) = check_with(&trust, &by_auth_key, "", "");
    assert!(!ok);
    assert!(
        out.contains(&format!("refused: signed by an unknown key ({id})")),
        "{out}"
    );
}

#[test]
fn serve_fails_start_on_an_unsigned_component() {
    let upstream = support::Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let config = support::base_config(upstream.addr)
        + &format!(
            "[policies.h]\ncomponent = {:?}\n",
            p(&support::unsigned_component("noop"))
        )
        + &support::route("api", "/", &["h"]);
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, config).unwrap();
    let out = edgegate(&["serve", "--config", p(&path)]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("refused: unsigned: the component carries no signature"),
        "{}",
        text(&out)
    );
}

#[test]
fn revocation_list_refuses_revoked_digests_and_rollbacks() {
    let dir = tempfile::tempdir().unwrap();
    let (id, secret, trust) = keygen(&dir.path().join("k"), "*");
    let signed = dir.path().join("h.wasm");
    sign(&secret, &support::unsigned_component("headers"), &signed);
    let digest = verified_digest(&trust, &signed);
    let list = dir.path().join("revocations.toml");
    let revoke = |version: &str, extra: &[&str]| {
        let mut args = vec![
            "revoke",
            "--key",
            p(&secret),
            "--list-version",
            version,
            "--out",
            p(&list),
        ];
        args.extend_from_slice(extra);
        let out = edgegate(&args);
        assert!(out.status.success(), "{}", text(&out));
    };
    let revocations = format!("revocations = {:?}", p(&list));

    revoke("1", &[]);
    let (ok, out) = check_with(&trust, &signed, "", &revocations);
    assert!(ok, "{out}");
    revoke("2", &["--revoke-digest", &digest]);
    let (ok, out) = check_with(&trust, &signed, "", &revocations);
    assert!(!ok);
    assert!(
        out.contains(&format!("refused: digest {digest} is revoked")),
        "{out}"
    );
    let out = edgegate(&[
        "verify",
        "--trust",
        p(&trust),
        "--revocations",
        p(&list),
        p(&signed),
    ]);
    assert!(!out.status.success());

    // Rolling back to an older list (which did not revoke the digest) is refused.
    revoke("1", &[]);
    let (ok, out) = check_with(&trust, &signed, "", &revocations);
    assert!(!ok);
    assert!(
        out.contains("revocation list version 1 is older than version 2 already held"),
        "{out}"
    );

    revoke("3", &["--revoke-key", &id]);
    let (ok, out) = check_with(&trust, &signed, "", &revocations);
    assert!(!ok);
    assert!(
        out.contains(&format!("refused: key {id} is revoked")),
        "{out}"
    );

    // A changed list no longer verifies.
    let tampered = std::fs::read_to_string(&list)
        .unwrap()
        .replace("\"version\":3", "\"version\":4");
    std::fs::write(&list, tampered).unwrap();
    let (ok, out) = check_with(&trust, &signed, "", &revocations);
    assert!(!ok);
    assert!(out.contains("signature does not verify"), "{out}");
}

/// Revocations and pins name the signed content: re-encoding the signature
/// section (which no signature covers) changes the file's sha256 but gets a
/// revoked component past neither `verify` nor the gateway.
#[test]
fn revoked_component_stays_revoked_when_its_signature_section_is_reencoded() {
    let dir = tempfile::tempdir().unwrap();
    let (_, secret, trust) = keygen(&dir.path().join("k"), "*");
    let unsigned = support::unsigned_component("headers");
    let signed = dir.path().join("h.wasm");
    sign(&secret, &unsigned, &signed);
    let digest = verified_digest(&trust, &signed);
    let signed_bytes = std::fs::read(&signed).unwrap();
    assert_ne!(digest, edgegate_trust::sha256_hex(&signed_bytes));
    assert_eq!(
        digest,
        edgegate_trust::content_digest(&std::fs::read(&unsigned).unwrap()).unwrap(),
        "the content digest of the file before signing"
    );

    let reencoded = dir.path().join("h-reencoded.wasm");
    let reencoded_bytes = pad_signature_section_lengths(&signed_bytes);
    assert_eq!(reencoded_bytes.len(), signed_bytes.len() + 5);
    std::fs::write(&reencoded, &reencoded_bytes).unwrap();
    assert_ne!(
        edgegate_trust::sha256_hex(&reencoded_bytes),
        edgegate_trust::sha256_hex(&signed_bytes)
    );
    // Still validly signed, under the same content digest.
    assert_eq!(verified_digest(&trust, &reencoded), digest);
    let pin = format!("sha256 = \"{}\"", digest.to_uppercase());
    let (ok, out) = check_with(&trust, &reencoded, &pin, "");
    assert!(ok, "the pin holds across re-encodings: {out}");

    let list = dir.path().join("revocations.toml");
    let out = edgegate(&[
        "revoke",
        "--key",
        p(&secret),
        "--list-version",
        "1",
        "--revoke-digest",
        &digest,
        "--out",
        p(&list),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    for component in [&signed, &reencoded] {
        let out = edgegate(&[
            "verify",
            "--trust",
            p(&trust),
            "--revocations",
            p(&list),
            p(component),
        ]);
        assert!(!out.status.success());
        assert!(
            text(&out).contains(&format!(
                "{}: refused: digest {digest} is revoked",
                component.display()
            )),
            "{}",
            text(&out)
        );
        let (ok, out) = check_with(
            &trust,
            component,
            "",
            &format!("revocations = {:?}", p(&list)),
        );
        assert!(!ok);
        assert!(
            out.contains(&format!(
                "policy `h`: component {} refused: digest {digest} is revoked",
                component.display()
            )),
            "{out}"
        );
    }
}

#[test]
fn no_random_byte_change_of_a_real_signed_component_is_accepted() {
    use edgegate_trust::{verify_component, TrustStore, VerifyOptions};
    let trust = TrustStore::load(&support::trust_store()).unwrap();
    let signed = std::fs::read(support::component("noop")).unwrap();
    let opts = VerifyOptions {
        kind: "custom",
        required_signers: 1,
        sha256_pin: None,
        now: std::time::SystemTime::now(),
        revocations: None,
    };
    assert!(verify_component(&signed, &trust, &opts).is_ok());
    // 2,500 single-byte changes at pseudo-random positions (fixed seed, so a failure reproduces).
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut accepted = Vec::new();
    for _ in 0..2_500 {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let pos = (state >> 33) as usize % signed.len();
        let flip = ((state >> 8) as u8) | 1;
        let mut m = signed.clone();
        m[pos] ^= flip;
        if verify_component(&m, &trust, &opts).is_ok() {
            accepted.push((pos, flip));
        }
    }
    assert!(
        accepted.is_empty(),
        "accepted after changing bytes {accepted:?}"
    );
}
