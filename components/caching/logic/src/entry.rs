//! [`Entry`]: one stored response and its compact binary form in the
//! key/value store.
//!
//! Layout (integers big-endian):
//!
//! ```text
//! magic "EGC" version u8 | status u16 | stored_at_ms u64 | expires_at_ms u64
//! | header count u16 | { name len u16, name, value len u32, value } *
//! | body len u32 | body
//! ```
//!
//! Decoding checks every length against what is left and refuses trailing
//! bytes, so corrupt or foreign bytes decode to `None` (a miss), never a panic.

use edgegate_policy_core::Headers;

/// Magic and format version, so entries of another format read as misses.
const MAGIC: &[u8; 4] = b"EGC\x01";

/// A stored response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Status code.
    pub status: u16,
    /// When the response was generated upstream (now minus the `Age` it came with), ms since the epoch.
    pub stored_at_ms: u64,
    /// When it stops being fresh, ms since the epoch.
    pub expires_at_ms: u64,
    /// End-to-end headers, as the upstream sent them.
    pub headers: Headers,
    /// The body.
    pub body: Vec<u8>,
}

impl Entry {
    /// The bytes to store; `None` when a length does not fit its field.
    pub fn encode(&self) -> Option<Vec<u8>> {
        let header_bytes: usize = self
            .headers
            .iter()
            .map(|(n, v)| 6 + n.len() + v.len())
            .sum();
        let mut out = Vec::with_capacity(28 + header_bytes + self.body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.status.to_be_bytes());
        out.extend_from_slice(&self.stored_at_ms.to_be_bytes());
        out.extend_from_slice(&self.expires_at_ms.to_be_bytes());
        out.extend_from_slice(&u16::try_from(self.headers.len()).ok()?.to_be_bytes());
        for (name, value) in &self.headers {
            out.extend_from_slice(&u16::try_from(name.len()).ok()?.to_be_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&u32::try_from(value.len()).ok()?.to_be_bytes());
            out.extend_from_slice(value.as_bytes());
        }
        out.extend_from_slice(&u32::try_from(self.body.len()).ok()?.to_be_bytes());
        out.extend_from_slice(&self.body);
        Some(out)
    }

    /// The entry `bytes` encode, or `None` when they are not a whole, valid entry.
    pub fn decode(bytes: &[u8]) -> Option<Entry> {
        let mut r = Reader(bytes);
        if r.take(MAGIC.len())? != MAGIC {
            return None;
        }
        let status = u16::from_be_bytes(r.array()?);
        let stored_at_ms = u64::from_be_bytes(r.array()?);
        let expires_at_ms = u64::from_be_bytes(r.array()?);
        let count = u16::from_be_bytes(r.array()?);
        // Each header takes at least 6 bytes: don't reserve for a count the bytes can't hold.
        let mut headers = Vec::with_capacity(usize::from(count).min(r.0.len() / 6));
        for _ in 0..count {
            let name_len = usize::from(u16::from_be_bytes(r.array()?));
            let name = r.text(name_len)?;
            let value_len = usize::try_from(u32::from_be_bytes(r.array()?)).ok()?;
            let value = r.text(value_len)?;
            headers.push((name, value));
        }
        let body_len = usize::try_from(u32::from_be_bytes(r.array()?)).ok()?;
        let body = r.take(body_len)?.to_vec();
        if !r.0.is_empty() {
            return None;
        }
        Some(Entry {
            status,
            stored_at_ms,
            expires_at_ms,
            headers,
            body,
        })
    }
}

/// A cursor over bytes whose every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn text(&mut self, n: usize) -> Option<String> {
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn sample() -> Entry {
        Entry {
            status: 200,
            stored_at_ms: 1_700_000_000_123,
            expires_at_ms: 1_700_000_060_123,
            headers: vec![
                ("content-type".into(), "text/plain".into()),
                ("etag".into(), "\"v1\"".into()),
                ("x-empty".into(), String::new()),
            ],
            body: b"hello".to_vec(),
        }
    }

    #[test]
    fn round_trips() {
        let e = sample();
        assert_eq!(Entry::decode(&e.encode().unwrap()), Some(e));
        let empty = Entry {
            status: 204,
            stored_at_ms: 0,
            expires_at_ms: 1,
            headers: Vec::new(),
            body: Vec::new(),
        };
        assert_eq!(Entry::decode(&empty.encode().unwrap()), Some(empty));
    }

    #[test]
    fn corrupt_bytes_decode_to_none() {
        let bytes = sample().encode().unwrap();
        // Every truncation, and one trailing byte too many.
        for len in 0..bytes.len() {
            assert_eq!(Entry::decode(&bytes[..len]), None, "truncated to {len}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Entry::decode(&longer), None);
        // Garbled: every single byte flipped decodes to something or nothing, never panics.
        for i in 0..bytes.len() {
            let mut garbled = bytes.clone();
            garbled[i] ^= 0xff;
            let _ = Entry::decode(&garbled);
        }
        // Lengths claiming far more than there is.
        let mut huge = bytes[..22].to_vec();
        huge.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(Entry::decode(&huge), None);
        // Header text that is not UTF-8.
        let mut bad_utf8 = bytes.clone();
        let at = bytes
            .windows(12)
            .position(|w| w == b"content-type")
            .unwrap();
        bad_utf8[at] = 0xc3;
        assert_eq!(Entry::decode(&bad_utf8), None);
        assert_eq!(Entry::decode(b"not an entry at all"), None);
    }
}
