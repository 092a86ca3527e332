//! The gateway config parser and its validation: any text gives a config or
//! an error naming the file, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(e) = edgegate_config::parse(std::path::Path::new("fuzz.toml"), text) {
            assert!(e.to_string().contains("fuzz.toml"), "{e}");
        }
    }
});
