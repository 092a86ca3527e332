//! The content digest: the sha256 that revocations, pins and fleet digests name.
//!
//! A signature does not cover its own `signature` section, so anyone can
//! re-encode that section (a non-minimal LEB128 length, a junk signature entry,
//! an extra group of signed hashes) and the component still verifies. The sha256
//! of the file changes with every such re-encoding; the code does not. So the
//! digest that says "this code" is taken over the signed content instead: the
//! 8-byte header and every top-level section except custom sections named
//! `signature`, byte for byte as they are in the file. A file without a
//! signature section has the sha256 of the whole file as its content digest.
//!
//! The sections are read by a small parser of the binary's framing (id byte,
//! u32 LEB128 size, contents; a custom section's name inside): it reads no
//! section contents, allocates nothing, and answers a typed [`SectionError`]
//! for anything it cannot read.

use std::fmt;
use std::ops::Range;

/// Name of the custom section that carries the signatures (tool-conventions format).
const SIGNATURE_SECTION: &[u8] = b"signature";
/// `\0asm`, the start of every WebAssembly binary (core module or component).
const MAGIC: [u8; 4] = *b"\0asm";
/// Magic plus the 4-byte version (core module) or version and layer (component).
const HEADER_LEN: usize = 8;
/// Most bytes a u32 LEB128 may take.
const MAX_LEB_BYTES: usize = 5;
/// Id of a custom section.
const CUSTOM_SECTION_ID: u8 = 0;

/// Which length of the binary could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LengthField {
    /// The size of a section, after its id byte.
    SectionSize,
    /// The length of a custom section's name, at the start of its contents.
    CustomSectionName,
}

impl fmt::Display for LengthField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LengthField::SectionSize => "section size",
            LengthField::CustomSectionName => "custom section name length",
        })
    }
}

/// Why the sections of a binary cannot be read; offsets are bytes from the start of the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SectionError {
    /// Shorter than the 8-byte header, or not starting with `\0asm`.
    #[error("not a WebAssembly binary (no 8-byte `\\0asm` header)")]
    NotWasm,
    /// A LEB128 that the end of the file (or of its section) cuts off.
    #[error("{field} at byte {offset}: the LEB128 is cut off by the end of the {within}")]
    TruncatedLeb {
        /// Which length.
        field: LengthField,
        /// Where its first byte is.
        offset: usize,
        /// `file` or `section`.
        within: &'static str,
    },
    /// A LEB128 longer than the 5 bytes a u32 may take.
    #[error("{field} at byte {offset}: the LEB128 is longer than 5 bytes")]
    OverlongLeb {
        /// Which length.
        field: LengthField,
        /// Where its first byte is.
        offset: usize,
    },
    /// A 5-byte LEB128 whose last byte sets bits above the 32nd.
    #[error("{field} at byte {offset}: the LEB128 does not fit in 32 bits")]
    LebOverflow {
        /// Which length.
        field: LengthField,
        /// Where its first byte is.
        offset: usize,
    },
    /// A length that runs past the end of the file (or of its section).
    #[error("{field} at byte {offset}: {len} bytes, but only {left} remain in the {within}")]
    PastEnd {
        /// Which length.
        field: LengthField,
        /// Where its first byte is.
        offset: usize,
        /// The length it gives.
        len: u32,
        /// The bytes there are.
        left: usize,
        /// `file` or `section`.
        within: &'static str,
    },
}

/// One top-level section of a binary.
pub(crate) struct Section<'a> {
    /// The whole section in the file: id byte, size and contents.
    pub(crate) range: Range<usize>,
    /// A custom section's name (none for other sections).
    pub(crate) name: Option<&'a [u8]>,
    /// The contents after the size and, for a custom section, after the name.
    pub(crate) payload: &'a [u8],
}

impl Section<'_> {
    /// Whether this is a custom section named `signature`.
    pub(crate) fn is_signature(&self) -> bool {
        self.name == Some(SIGNATURE_SECTION)
    }
}

/// The top-level sections of a binary, in file order; ends at the first error.
pub(crate) struct Sections<'a> {
    bytes: &'a [u8],
    pos: usize,
    failed: bool,
}

/// The sections of `bytes` after its header.
pub(crate) fn sections(bytes: &[u8]) -> Result<Sections<'_>, SectionError> {
    if bytes.len() < HEADER_LEN || bytes[..MAGIC.len()] != MAGIC {
        return Err(SectionError::NotWasm);
    }
    Ok(Sections {
        bytes,
        pos: HEADER_LEN,
        failed: false,
    })
}

impl<'a> Sections<'a> {
    /// Reads the section at `self.pos`, which is before the end of the file.
    fn read(&mut self) -> Result<Section<'a>, SectionError> {
        let bytes = self.bytes;
        let start = self.pos;
        let mut pos = start + 1; // the id byte
        let size_at = pos;
        let size = read_u32(bytes, &mut pos, LengthField::SectionSize, "file")?;
        let end = checked_end(pos, size, bytes.len()).ok_or(SectionError::PastEnd {
            field: LengthField::SectionSize,
            offset: size_at,
            len: size,
            left: bytes.len() - pos,
            within: "file",
        })?;
        let mut section = Section {
            range: start..end,
            name: None,
            payload: &bytes[pos..end],
        };
        if bytes[start] == CUSTOM_SECTION_ID {
            // Bounded by the section's end: a name never reaches into the next section.
            let contents = &bytes[..end];
            let name_at = pos;
            let name_len = read_u32(
                contents,
                &mut pos,
                LengthField::CustomSectionName,
                "section",
            )?;
            let name_end = checked_end(pos, name_len, end).ok_or(SectionError::PastEnd {
                field: LengthField::CustomSectionName,
                offset: name_at,
                len: name_len,
                left: end - pos,
                within: "section",
            })?;
            section.name = Some(&bytes[pos..name_end]);
            section.payload = &bytes[name_end..end];
        }
        self.pos = end;
        Ok(section)
    }
}

impl<'a> Iterator for Sections<'a> {
    type Item = Result<Section<'a>, SectionError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.bytes.len() {
            return None;
        }
        let section = self.read();
        self.failed = section.is_err();
        Some(section)
    }
}

/// `pos + len` when it is at most `limit`.
fn checked_end(pos: usize, len: u32, limit: usize) -> Option<usize> {
    usize::try_from(len)
        .ok()
        .and_then(|len| pos.checked_add(len))
        .filter(|&end| end <= limit)
}

/// An unsigned LEB128 of at most 32 bits at `*pos`, which it moves past it.
/// Non-minimal encodings (padding bytes `0x80`) are valid WebAssembly and accepted.
fn read_u32(
    bytes: &[u8],
    pos: &mut usize,
    field: LengthField,
    within: &'static str,
) -> Result<u32, SectionError> {
    let offset = *pos;
    let mut value: u32 = 0;
    for i in 0..MAX_LEB_BYTES {
        let Some(&byte) = bytes.get(offset + i) else {
            return Err(SectionError::TruncatedLeb {
                field,
                offset,
                within,
            });
        };
        let last = byte & 0x80 == 0;
        if i == MAX_LEB_BYTES - 1 {
            if !last {
                return Err(SectionError::OverlongLeb { field, offset });
            }
            // The fifth byte holds bits 28..32: its upper three value bits must be zero.
            if byte & 0x70 != 0 {
                return Err(SectionError::LebOverflow { field, offset });
            }
        }
        value |= u32::from(byte & 0x7f) << (7 * i);
        if last {
            *pos = offset + i + 1;
            return Ok(value);
        }
    }
    Err(SectionError::OverlongLeb { field, offset })
}

/// Hex sha256 of the signed content of a WebAssembly binary: its header and
/// every top-level section except custom sections named `signature`, as they
/// are in the file. What revocation lists, `sha256` pins and fleet digests name;
/// re-encoding or re-signing a component leaves it unchanged, changing one byte
/// of its code changes it. Without a signature section it is the sha256 of the file.
pub fn content_digest(bytes: &[u8]) -> Result<String, SectionError> {
    let mut sha = ring::digest::Context::new(&ring::digest::SHA256);
    let mut kept = 0..HEADER_LEN;
    for section in sections(bytes)? {
        let section = section?;
        if section.is_signature() {
            sha.update(&bytes[kept.clone()]);
            kept = section.range.end..section.range.end;
        } else {
            kept.end = section.range.end;
        }
    }
    sha.update(&bytes[kept]);
    Ok(hex::encode(sha.finish()))
}

/// The content digest, or the sha256 of the file when its sections cannot be
/// read: the name a refused upload is listed and logged under.
pub fn content_digest_or_file_sha256(bytes: &[u8]) -> String {
    content_digest(bytes).unwrap_or_else(|_| crate::sha256_hex(bytes))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;
    use std::time::SystemTime;

    use wasmsign2::{CustomSection, SignatureData, SignatureForHashes, SignedHashes};

    use super::*;
    use crate::keys::{generate_key, sign_component, SigningKey};
    use crate::revocation::RevocationList;
    use crate::store::TrustStore;
    use crate::verify::{verify_component, Refusal, VerifyOptions};
    use crate::{sha256_hex, verify_unsigned};

    const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

    /// `n` as an unsigned LEB128 with `pad` more bytes than it needs (`0x80`
    /// continuation bytes, as the format allows).
    fn leb(mut n: u32, pad: usize) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
        if pad > 0 {
            let last = out.len() - 1;
            out[last] |= 0x80;
            out.extend(std::iter::repeat_n(0x80, pad - 1));
            out.push(0);
        }
        out
    }

    /// A custom section, its size and name length padded by `pads` bytes.
    fn custom(name: &[u8], payload: &[u8], pads: (usize, usize)) -> Vec<u8> {
        let mut contents = leb(name.len() as u32, pads.1);
        contents.extend_from_slice(name);
        contents.extend_from_slice(payload);
        section(0, &contents, pads.0)
    }

    /// A section with id `id`, its size padded by `pad` bytes.
    fn section(id: u8, contents: &[u8], pad: usize) -> Vec<u8> {
        let mut out = vec![id];
        out.extend(leb(contents.len() as u32, pad));
        out.extend_from_slice(contents);
        out
    }

    /// A small component: a (fake) core module section holding a nested
    /// `signature` custom section, and two custom sections.
    fn component() -> Vec<u8> {
        let mut out = COMPONENT_HEADER.to_vec();
        let nested = [
            b"\0asm\x01\0\0\0".to_vec(),
            custom(b"signature", b"nested, not ours", (0, 0)),
        ]
        .concat();
        out.extend(section(1, &nested, 0));
        out.extend(custom(b"edgegate-test", &[7; 300], (0, 0)));
        out.extend(custom(b"more", &[9; 20], (0, 0)));
        out
    }

    fn trust_of(key: &SigningKey) -> TrustStore {
        TrustStore::parse(
            Path::new("trust.toml"),
            &TrustStore::render_single(&key.key_id(), &key.public_pem(), &["*".into()]),
        )
        .unwrap()
    }

    fn opts<'a>(pin: Option<&'a str>, list: Option<&'a RevocationList>) -> VerifyOptions<'a> {
        VerifyOptions {
            kind: "auth",
            required_signers: 1,
            sha256_pin: pin,
            now: SystemTime::now(),
            revocations: list,
        }
    }

    /// `signed` with its leading signature section replaced by `data`, its lengths padded by `pads`.
    fn resigned(signed: &[u8], data: &SignatureData, pads: (usize, usize)) -> Vec<u8> {
        let first = sections(signed).unwrap().next().unwrap().unwrap();
        assert!(first.is_signature());
        let mut out = signed[..HEADER_LEN].to_vec();
        out.extend(custom(SIGNATURE_SECTION, &data.serialize().unwrap(), pads));
        out.extend_from_slice(&signed[first.range.end..]);
        out
    }

    fn signature_data(signed: &[u8]) -> SignatureData {
        let first = sections(signed).unwrap().next().unwrap().unwrap();
        CustomSection::new("signature".into(), first.payload.to_vec())
            .signature_data()
            .unwrap()
    }

    /// The three re-encodings of a signature section that no signature covers.
    fn reencodings(signed: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
        let data = signature_data(signed);
        let junk = SignatureForHashes {
            key_id: Some(vec![0xee; 12]),
            alg_id: data.signed_hashes_set[0].signatures[0].alg_id,
            signature: vec![0x55; 64],
        };
        let mut with_junk_entry = data.clone();
        with_junk_entry.signed_hashes_set[0]
            .signatures
            .push(junk.clone());
        let mut with_extra_group = data.clone();
        with_extra_group.signed_hashes_set.push(SignedHashes {
            hashes: vec![vec![0x42; 32]],
            signatures: vec![junk],
        });
        vec![
            (
                "non-minimal LEB128 lengths",
                resigned(signed, &data, (3, 2)),
            ),
            (
                "a junk signature entry",
                resigned(signed, &with_junk_entry, (0, 0)),
            ),
            (
                "an extra signed-hashes group",
                resigned(signed, &with_extra_group, (0, 0)),
            ),
        ]
    }

    #[test]
    fn reencoded_signature_sections_keep_the_content_digest_and_stay_revoked() {
        let key = generate_key();
        let trust = trust_of(&key);
        let signed = sign_component(&component(), &key).unwrap();
        let digest = content_digest(&signed).unwrap();
        assert_ne!(digest, sha256_hex(&signed));
        let revoked = RevocationList {
            version: 1,
            revoked_keys: BTreeSet::new(),
            revoked_digests: [digest.clone()].into(),
        };
        assert_eq!(
            verify_component(&signed, &trust, &opts(None, Some(&revoked))),
            Err(Refusal::RevokedDigest(digest.clone()))
        );
        let variants = reencodings(&signed);
        assert_eq!(variants.len(), 3);
        for (what, bytes) in &variants {
            assert_ne!(sha256_hex(bytes), sha256_hex(&signed), "{what}: same file");
            assert_eq!(content_digest(bytes).unwrap(), digest, "{what}");
            // Without a revocation each one still verifies: a real way around
            // a revocation of the file's sha256.
            let ok = verify_component(bytes, &trust, &opts(None, None))
                .unwrap_or_else(|r| panic!("{what}: {r}"));
            assert_eq!(ok.digest, digest, "{what}");
            assert_eq!(ok.key_ids, vec![key.key_id()], "{what}");
            assert_eq!(
                verify_component(bytes, &trust, &opts(None, Some(&revoked))),
                Err(Refusal::RevokedDigest(digest.clone())),
                "{what}"
            );
            // The pin names the content too, in either case.
            let upper = digest.to_ascii_uppercase();
            assert!(
                verify_component(bytes, &trust, &opts(Some(&upper), None)).is_ok(),
                "{what}"
            );
            let file_pin = sha256_hex(&signed);
            assert_eq!(
                verify_component(bytes, &trust, &opts(Some(&file_pin), None)),
                Err(Refusal::DigestMismatch {
                    expected: file_pin.clone(),
                    actual: digest.clone()
                }),
                "{what}"
            );
        }
    }

    #[test]
    fn a_file_sha256_on_an_older_list_still_refuses_that_file_only() {
        let key = generate_key();
        let trust = trust_of(&key);
        let signed = sign_component(&component(), &key).unwrap();
        let file = sha256_hex(&signed);
        let legacy = RevocationList {
            version: 1,
            revoked_keys: BTreeSet::new(),
            revoked_digests: [file.clone()].into(),
        };
        assert_eq!(
            verify_component(&signed, &trust, &opts(None, Some(&legacy))),
            Err(Refusal::RevokedDigest(file))
        );
        // Its re-encodings get past such an entry: why lists name the content digest.
        for (what, bytes) in reencodings(&signed) {
            assert!(
                verify_component(&bytes, &trust, &opts(None, Some(&legacy))).is_ok(),
                "{what}"
            );
        }
    }

    #[test]
    fn signing_and_signing_again_keep_the_content_digest() {
        let plain = component();
        let unsigned = content_digest(&plain).unwrap();
        assert_eq!(
            unsigned,
            sha256_hex(&plain),
            "no signature: the file's sha256"
        );
        let once = sign_component(&plain, &generate_key()).unwrap();
        let twice = sign_component(&once, &generate_key()).unwrap();
        assert_eq!(content_digest(&once).unwrap(), unsigned);
        assert_eq!(content_digest(&twice).unwrap(), unsigned);
        assert_eq!(
            verify_unsigned(&twice, Some(&unsigned)).unwrap().digest,
            unsigned
        );
        assert!(matches!(
            verify_unsigned(&twice, Some(&"00".repeat(32))),
            Err(Refusal::DigestMismatch { .. })
        ));
    }

    #[test]
    fn every_other_byte_counts_including_nested_signature_sections() {
        let plain = component();
        let digest = content_digest(&plain).unwrap();
        // A `signature` section inside the core module is part of the module.
        let at = plain.windows(6).position(|w| w == b"nested").unwrap();
        let mut changed = plain.clone();
        changed[at] ^= 1;
        assert_ne!(content_digest(&changed).unwrap(), digest);
        // Other sections are hashed as they are: re-encoding one changes the digest
        // (and breaks the signature, which covers it).
        let more = custom(b"more", &[9; 20], (0, 0));
        let mut padded = plain[..plain.len() - more.len()].to_vec();
        padded.extend(custom(b"more", &[9; 20], (2, 1)));
        assert_eq!(padded.len(), plain.len() + 3);
        assert_ne!(content_digest(&padded).unwrap(), digest);
        // A `signature` section anywhere at the top level is not content.
        let mut appended = plain.clone();
        appended.extend(custom(b"signature", b"anything", (3, 1)));
        assert_eq!(content_digest(&appended).unwrap(), digest);
        let mut inserted = plain[..HEADER_LEN].to_vec();
        inserted.extend(custom(b"signature", &[], (0, 4)));
        inserted.extend_from_slice(&plain[HEADER_LEN..]);
        assert_eq!(content_digest(&inserted).unwrap(), digest);
        // A section merely named like one is.
        let mut lookalike = plain.clone();
        lookalike.extend(custom(b"signature_delimiter", &[0; 16], (0, 0)));
        assert_ne!(content_digest(&lookalike).unwrap(), digest);
    }

    #[test]
    fn hostile_framing_is_refused_by_name() {
        let with = |tail: &[u8]| [COMPONENT_HEADER.as_slice(), tail].concat();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (Vec::new(), "not a WebAssembly binary (no 8-byte `\\0asm` header)"),
            (COMPONENT_HEADER[..7].to_vec(), "not a WebAssembly binary (no 8-byte `\\0asm` header)"),
            (b"\0ASM\x0d\0\x01\0".to_vec(), "not a WebAssembly binary (no 8-byte `\\0asm` header)"),
            (with(&[0]), "section size at byte 9: the LEB128 is cut off by the end of the file"),
            (with(&[1, 0x80, 0x80]), "section size at byte 9: the LEB128 is cut off by the end of the file"),
            (with(&[1, 0x80, 0x80, 0x80, 0x80, 0x80, 0]), "section size at byte 9: the LEB128 is longer than 5 bytes"),
            (with(&[1, 0xff, 0xff, 0xff, 0xff, 0x1f]), "section size at byte 9: the LEB128 does not fit in 32 bits"),
            (with(&[1, 0xff, 0xff, 0xff, 0xff, 0x0f]), "section size at byte 9: 4294967295 bytes, but only 0 remain in the file"),
            (with(&[1, 5, 1, 2]), "section size at byte 9: 5 bytes, but only 2 remain in the file"),
            (with(&[0, 0]), "custom section name length at byte 10: the LEB128 is cut off by the end of the section"),
            (with(&[0, 1, 0x80, 0x01, b'x']), "custom section name length at byte 10: the LEB128 is cut off by the end of the section"),
            (with(&[0, 2, 9, b's']), "custom section name length at byte 10: 9 bytes, but only 1 remain in the section"),
            (with(&[0, 2, 1, b'x', 1, 0x81]), "section size at byte 13: the LEB128 is cut off by the end of the file"),
        ];
        for (bytes, message) in cases {
            let e = content_digest(&bytes).unwrap_err();
            assert_eq!(e.to_string(), message, "{bytes:02x?}");
        }
        let key = generate_key();
        assert_eq!(
            verify_component(&with(&[1, 5, 1, 2]), &trust_of(&key), &opts(None, None))
                .unwrap_err()
                .to_string(),
            "malformed component: section size at byte 9: 5 bytes, but only 2 remain in the file"
        );
        assert_eq!(
            content_digest(&COMPONENT_HEADER).unwrap(),
            sha256_hex(&COMPONENT_HEADER)
        );
    }

    #[test]
    fn truncated_and_mangled_components_return_errors_without_panicking() {
        let key = generate_key();
        let trust = trust_of(&key);
        let signed = sign_component(&component(), &key).unwrap();
        let boundaries: Vec<usize> = std::iter::once(HEADER_LEN)
            .chain(sections(&signed).unwrap().map(|s| s.unwrap().range.end))
            .collect();
        for len in 0..signed.len() {
            let cut = &signed[..len];
            let digest = content_digest(cut);
            assert_eq!(
                digest.is_ok(),
                boundaries.contains(&len),
                "cut at {len}: {digest:?}"
            );
            assert!(
                verify_component(cut, &trust, &opts(None, None)).is_err(),
                "cut at {len}"
            );
        }
        // Every byte set to each value that breaks LEB128s: the parser answers, never panics.
        for i in HEADER_LEN..signed.len() {
            for value in [0x00, 0x7f, 0x80, 0xff] {
                let mut m = signed.clone();
                m[i] = value;
                let _ = content_digest(&m);
                let _ = verify_component(&m, &trust, &opts(None, None));
            }
        }
    }
}
