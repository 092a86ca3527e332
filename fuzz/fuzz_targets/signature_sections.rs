//! The section walk behind the content digest (what revocations and pins
//! name): bounded on any bytes, and a file without a `signature` section has
//! the digest of the whole file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(digest) = edgegate_trust::content_digest(data) {
        assert_eq!(digest.len(), 64);
        if !data.windows(9).any(|w| w == b"signature") {
            assert_eq!(digest, edgegate_trust::sha256_hex(data));
        }
    }
});
