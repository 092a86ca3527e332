//! `message`: the headers of the message a head call is about, read on demand.
//!
//! The gateway moves its header map into the store for the call and takes it
//! back after ([`HostState::message`]), so no header is copied unless the
//! policy asks for it. Outside a head call the map is empty.

use http::HeaderMap;

use crate::bindings::message::Host;
use crate::bindings::types::Headers;
use crate::host::HostState;

fn text(value: &http::HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes()).into_owned()
}

/// Every field of `map` as the WIT header list (names lower-case, values
/// with non-UTF-8 bytes replaced).
fn header_list(map: &HeaderMap) -> Headers {
    map.iter()
        .map(|(n, v)| (n.as_str().to_string(), text(v)))
        .collect()
}

impl Host for HostState {
    fn header(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        Ok(self.message.get(name.as_str()).map(text))
    }

    fn header_values(&mut self, name: String) -> wasmtime::Result<Vec<String>> {
        Ok(self
            .message
            .get_all(name.as_str())
            .iter()
            .map(text)
            .collect())
    }

    fn entries(&mut self) -> wasmtime::Result<Headers> {
        Ok(header_list(&self.message))
    }
}
