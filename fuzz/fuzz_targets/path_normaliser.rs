//! The path normaliser and the host parser: no panic on any input, and what
//! comes out is a fixed point (normalising it again changes nothing), holds
//! no dot segment and, with merging on, no empty segment.
#![no_main]

use edgegate_config::EscapedSlashes;
use edgegate_request::canonical::{normalize_path, parse_host, PathRules};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for (merge_slashes, escaped_slashes) in [
        (true, EscapedSlashes::Reject),
        (false, EscapedSlashes::Keep),
    ] {
        let rules = PathRules {
            merge_slashes,
            escaped_slashes,
        };
        if let Ok(normal) = normalize_path(text, rules) {
            let again = normalize_path(&normal, rules).expect("a normal path normalises");
            assert_eq!(again, normal, "not a fixed point: {text:?}");
            let path = normal.split('?').next().unwrap_or("");
            assert!(path.starts_with('/'));
            for (i, seg) in path.split('/').skip(1).enumerate() {
                assert!(seg != "." && seg != "..", "dot segment left in {normal:?}");
                let last = i + 2 == path.split('/').count();
                assert!(!merge_slashes || !seg.is_empty() || last, "empty segment in {normal:?}");
            }
        }
    }
    if let Ok(host) = parse_host(text) {
        let again = parse_host(&host.authority()).expect("a canonical host parses");
        assert_eq!(again, host);
    }
});
