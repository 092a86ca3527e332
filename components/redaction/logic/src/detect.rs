//! The built-in detectors: a pre-filter that skips a detector when the text
//! cannot contain a match, and a scanner (`crate::scan`) that finds candidates
//! and checks them (Luhn, IBAN mod 97, address parsing).

use crate::scan::{self, Lexed};

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

    /// Appends the byte ranges of this detector's matches in `text`.
    ///
    /// Hand-written scanners rather than regexes: the gateway builds a policy
    /// for every call, and compiling six regexes took ~1 ms per call natively,
    /// more than scanning 64 KB.
    pub fn find(self, text: &str, lexed: &Lexed, out: &mut Vec<(usize, usize)>) {
        match self {
            Detector::Email => crate::scan::emails(text, lexed, out),
            Detector::Phone => crate::scan::phones(text, lexed, out),
            Detector::CreditCard => crate::scan::cards(text, lexed, out),
            Detector::Iban => crate::scan::ibans(text, lexed, out),
            Detector::Ip => crate::scan::ips(text, lexed, out),
            Detector::Secret => crate::scan::secrets(text, lexed, out),
        }
    }

    /// False when `text` cannot contain a match (skips the scanner).
    pub fn may_match(self, lexed: &Lexed) -> bool {
        match self {
            Detector::Email => lexed.has(scan::AT),
            Detector::Phone | Detector::CreditCard => lexed.has(scan::DIGIT),
            Detector::Iban => lexed.has(scan::UPPER) && lexed.has(scan::DIGIT),
            Detector::Ip => lexed.has(scan::DOT_OR_COLON),
            // Its scanner looks at few token starts; it is its own filter.
            Detector::Secret => true,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_and_iban_checks() {
        let digits = |s: &str| -> Vec<u8> {
            s.bytes()
                .filter(u8::is_ascii_digit)
                .map(|b| b - b'0')
                .collect()
        };
        assert!(luhn(&digits("4111 1111 1111 1111")));
        assert!(!luhn(&digits("4111 1111 1111 1112")));
        assert!(luhn(&digits("5500-0000-0000-0004")));
        assert!(iban_valid("DE89 3704 0044 0532 0130 00"));
        assert!(iban_valid("GB82WEST12345698765432"));
        assert!(!iban_valid("DE89 3704 0044 0532 0130 01"));
        assert!(!iban_valid("DE89"));
    }
}
