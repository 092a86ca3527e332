//! The built-in detectors: a regex that finds candidates cheaply, a
//! pre-filter that skips the regex when the text cannot contain a match, and
//! a check (Luhn, IBAN mod 97, address parsing) that drops false candidates.

use std::net::{Ipv4Addr, Ipv6Addr};

/// A built-in detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detector {
    /// E-mail addresses.
    Email,
    /// Phone numbers: international (`+` and 8–15 digits) or national (10–11 digits) with separators.
    Phone,
    /// Payment card numbers, 13–19 digits, Luhn-checked.
    CreditCard,
    /// IBANs, mod-97 checked.
    Iban,
    /// IPv4 and IPv6 addresses.
    Ip,
    /// API keys and secrets: OpenAI `sk-`, AWS `AKIA`, GitHub `ghp_`..., Slack `xox?-`, JWTs, PEM private keys.
    Secret,
}

impl Detector {
    /// Every detector, in the default rule order.
    pub const ALL: [Detector; 6] = [
        Detector::Secret,
        Detector::Email,
        Detector::CreditCard,
        Detector::Iban,
        Detector::Ip,
        Detector::Phone,
    ];

    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            Detector::Email => "email",
            Detector::Phone => "phone",
            Detector::CreditCard => "credit_card",
            Detector::Iban => "iban",
            Detector::Ip => "ip",
            Detector::Secret => "secret",
        }
    }

    /// The detector a config name means.
    pub fn from_name(name: &str) -> Option<Self> {
        Detector::ALL.into_iter().find(|d| d.name() == name)
    }

    /// The candidate regex (ASCII classes only: cheap to compile).
    pub fn pattern(self) -> &'static str {
        match self {
            Detector::Email => {
                r"(?-u:\b)[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*\.[A-Za-z]{2,24}(?-u:\b)"
            }
            Detector::Phone => {
                r"(?:\+[0-9]{1,3}[ .-]?)?(?:\([0-9]{1,4}\)[ .-]?)?[0-9]{2,5}(?:[ .-][0-9]{2,5}){1,4}(?-u:\b)"
            }
            Detector::CreditCard => r"(?-u:\b)[0-9](?:[ -]?[0-9]){12,18}(?-u:\b)",
            Detector::Iban => r"(?-u:\b)[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}(?-u:\b)",
            Detector::Ip => {
                r"(?-u:\b)(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?-u:\b)|(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}"
            }
            Detector::Secret => concat!(
                r"sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}",
                r"|(?:AKIA|ASIA)[0-9A-Z]{16}",
                r"|gh[pousr]_[A-Za-z0-9]{36,}",
                r"|github_pat_[A-Za-z0-9_]{22,}",
                r"|xox[baprs]-[A-Za-z0-9-]{10,}",
                r"|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
                r"|-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----",
            ),
        }
    }

    /// False when `text` cannot contain a match (skips the regex).
    pub fn may_match(self, text: &str) -> bool {
        let b = text.as_bytes();
        match self {
            Detector::Email => memchr(b'@', b),
            Detector::Phone | Detector::CreditCard => b.iter().any(u8::is_ascii_digit),
            Detector::Iban => {
                b.iter().any(u8::is_ascii_uppercase) && b.iter().any(u8::is_ascii_digit)
            }
            Detector::Ip => memchr(b'.', b) || memchr(b':', b),
            Detector::Secret => ["sk-", "AKIA", "ASIA", "gh", "xox", "eyJ", "-----BEGIN"]
                .iter()
                .any(|p| text.contains(p)),
        }
    }

    /// Whether a regex candidate really is one.
    pub fn accept(self, candidate: &str, text: &str, start: usize) -> bool {
        match self {
            Detector::Email | Detector::Secret => true,
            Detector::CreditCard => {
                let digits = digits(candidate);
                (13..=19).contains(&digits.len()) && luhn(&digits) && single_separators(candidate)
            }
            Detector::Iban => iban_valid(candidate),
            Detector::Ip => {
                if candidate.contains('.') {
                    candidate.parse::<Ipv4Addr>().is_ok() && !glued(text, start, candidate)
                } else {
                    candidate.bytes().filter(|&c| c == b':').count() >= 2
                        && candidate.bytes().any(|c| c.is_ascii_hexdigit())
                        && candidate.parse::<Ipv6Addr>().is_ok()
                        && !glued(text, start, candidate)
                }
            }
            Detector::Phone => phone_valid(candidate, text, start),
        }
    }
}

fn memchr(needle: u8, hay: &[u8]) -> bool {
    hay.contains(&needle)
}

fn digits(s: &str) -> Vec<u8> {
    s.bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect()
}

/// Luhn checksum over digit values.
pub fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    sum % 10 == 0
}

/// Card numbers are written with one kind of separator, if any.
fn single_separators(s: &str) -> bool {
    !(s.contains(' ') && s.contains('-'))
}

/// IBAN: 15–34 characters after removing spaces, mod 97 of the rearranged number is 1.
pub fn iban_valid(candidate: &str) -> bool {
    let compact: Vec<u8> = candidate.bytes().filter(|&b| b != b' ').collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let rearranged = compact[4..].iter().chain(&compact[..4]);
    let mut rem: u32 = 0;
    for &c in rearranged {
        let v = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

/// A candidate glued to more address-like characters (`1.2.3.4.5`, `a::b:c:`) is not an address.
fn glued(text: &str, start: usize, candidate: &str) -> bool {
    let end = start + candidate.len();
    let before = text[..start].bytes().next_back();
    let after = text[end..].bytes().next();
    let sticky =
        |b: Option<u8>| b.is_some_and(|b| b == b'.' || b == b':' || b.is_ascii_alphanumeric());
    sticky(before)
        || (sticky(after) && after != Some(b'.'))
        || (after == Some(b'.')
            && text[end + 1..]
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_digit()))
}

/// Phone numbers: `+` and 8–15 digits, or 10–11 digits with separators or
/// parentheses; not dotted quads (IP addresses), not preceded by a digit.
fn phone_valid(candidate: &str, text: &str, start: usize) -> bool {
    let n = candidate.bytes().filter(u8::is_ascii_digit).count();
    let international = candidate.starts_with('+');
    let separated = candidate
        .bytes()
        .any(|b| matches!(b, b' ' | b'-' | b'.' | b'('));
    if text[..start]
        .bytes()
        .next_back()
        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    {
        return false;
    }
    let dotted_quad = candidate.split('.').count() == 4 && candidate.parse::<Ipv4Addr>().is_ok();
    if dotted_quad {
        return false;
    }
    if international {
        (8..=15).contains(&n)
    } else {
        separated && (10..=11).contains(&n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_and_iban_checks() {
        assert!(luhn(&digits("4111 1111 1111 1111")));
        assert!(!luhn(&digits("4111 1111 1111 1112")));
        assert!(luhn(&digits("5500-0000-0000-0004")));
        assert!(iban_valid("DE89 3704 0044 0532 0130 00"));
        assert!(iban_valid("GB82WEST12345698765432"));
        assert!(!iban_valid("DE89 3704 0044 0532 0130 01"));
        assert!(!iban_valid("DE89"));
    }
}
