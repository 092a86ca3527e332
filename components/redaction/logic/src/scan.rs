//! Hand-written scanners for the built-in detectors. Each appends the byte
//! ranges of checked matches; none allocates per byte or backtracks far.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::detect::{iban_valid, luhn};

type Out = Vec<(usize, usize)>;

/// A secret's shape: its prefix, the characters after it, and how many of them at least.
type Shape<'a> = (&'a str, &'a dyn Fn(u8) -> bool, usize);

fn alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

/// The byte before `i`, if any.
fn before(b: &[u8], i: usize) -> Option<u8> {
    i.checked_sub(1).map(|j| b[j])
}

/// E-mail addresses: a local part of `[A-Za-z0-9._%+-]` (≤ 64) around each
/// `@`, and a domain of dot-separated labels ending in a 2–24 letter TLD.
pub fn emails(text: &str, out: &mut Out) {
    let b = text.as_bytes();
    let local = |c: u8| alnum(c) || b"._%+-".contains(&c);
    let domain = |c: u8| alnum(c) || c == b'.' || c == b'-';
    let mut taken = 0;
    for (at, _) in text.match_indices('@') {
        if at < taken {
            continue;
        }
        let mut s = at;
        while s > taken && at - s < 64 && local(b[s - 1]) {
            s -= 1;
        }
        while s < at && b[s] == b'.' {
            s += 1;
        }
        if s == at {
            continue;
        }
        let mut e = at + 1;
        while e < b.len() && domain(b[e]) {
            e += 1;
        }
        while e > at + 1 && matches!(b[e - 1], b'.' | b'-') {
            e -= 1;
        }
        let labels: Vec<&str> = text[at + 1..e].split('.').collect();
        let tld = labels.last().copied().unwrap_or("");
        let ok = labels.len() >= 2
            && labels
                .iter()
                .all(|l| !l.is_empty() && l.len() <= 63 && !l.starts_with('-'))
            && (2..=24).contains(&tld.len())
            && tld.bytes().all(|c| c.is_ascii_alphabetic());
        if ok {
            out.push((s, e));
            taken = e;
        }
    }
}

/// Runs of digit groups joined by single separators from `seps`, starting at
/// a digit not glued to a letter, digit or separator: `(start, end, digits)`.
fn digit_runs(text: &str, seps: &[u8], mut each: impl FnMut(usize, usize, usize)) {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let glued = match before(b, i) {
            Some(c) if alnum(c) => true,
            // `-7` or `.5` right after a digit continues something else (`3-7`, `1.5`).
            Some(c) if c != b' ' && seps.contains(&c) => i >= 2 && b[i - 2].is_ascii_digit(),
            _ => false,
        };
        if !b[i].is_ascii_digit() || glued {
            i += 1;
            continue;
        }
        let start = i;
        let mut end = i;
        let mut digits = 0;
        while end < b.len() {
            if b[end].is_ascii_digit() {
                digits += 1;
                end += 1;
            } else if seps.contains(&b[end]) && b.get(end + 1).is_some_and(u8::is_ascii_digit) {
                end += 1;
            } else {
                break;
            }
        }
        if !b.get(end).is_some_and(|&c| alnum(c)) {
            each(start, end, digits);
        }
        i = end.max(i + 1);
    }
}

/// Payment cards: 13–19 digits, grouped by single spaces or dashes (one kind), Luhn-valid.
pub fn cards(text: &str, out: &mut Out) {
    digit_runs(text, b" -", |s, e, n| {
        let run = &text[s..e];
        if (13..=19).contains(&n) && !(run.contains(' ') && run.contains('-')) {
            let digits: Vec<u8> = run
                .bytes()
                .filter(u8::is_ascii_digit)
                .map(|c| c - b'0')
                .collect();
            if luhn(&digits) {
                out.push((s, e));
            }
        }
    });
}

/// IPv4 dotted quads and IPv6 addresses (anything `Ipv6Addr` parses with at
/// least two colons and a hex digit), not glued to more address characters.
pub fn ips(text: &str, out: &mut Out) {
    let b = text.as_bytes();
    digit_runs(text, b".", |s, e, _| {
        let run = &text[s..e];
        if run.bytes().filter(|&c| c == b'.').count() == 3 && run.parse::<Ipv4Addr>().is_ok() {
            out.push((s, e));
        }
    });
    let hexish = |c: u8| c.is_ascii_hexdigit() || c == b':';
    let mut i = 0;
    while let Some(off) = text[i..].find(':') {
        let colon = i + off;
        let mut s = colon;
        while s > 0 && hexish(b[s - 1]) {
            s -= 1;
        }
        let mut e = colon;
        while e < b.len()
            && (hexish(b[e]) || (b[e] == b'.' && b.get(e + 1).is_some_and(u8::is_ascii_digit)))
        {
            e += 1;
        }
        let run = &text[s..e];
        let glued = before(b, s).is_some_and(alnum) || b.get(e).is_some_and(|&c| alnum(c));
        if !glued
            && run.bytes().filter(|&c| c == b':').count() >= 2
            && run.bytes().any(|c| c.is_ascii_hexdigit())
            && run.parse::<Ipv6Addr>().is_ok()
        {
            out.push((s, e));
        }
        i = e.max(colon + 1);
    }
}

/// Phone numbers: `+CC` and 8–15 digits, or 10–11 digits with separators or
/// an area code in parentheses; groups of 1–5 digits joined by one of ` .-`.
pub fn phones(text: &str, out: &mut Out) {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let starts = (c == b'+' || c == b'(' || c.is_ascii_digit())
            && !before(b, i).is_some_and(|p| alnum(p) || matches!(p, b'.' | b'-' | b'+' | b'('));
        if !starts {
            i += 1;
            continue;
        }
        let (end, digits, international, punctuated) = phone_at(b, i);
        let ok = if international {
            (8..=15).contains(&digits)
        } else {
            punctuated && (10..=11).contains(&digits)
        };
        let dotted_quad = text
            .get(i..end)
            .is_some_and(|t| t.parse::<Ipv4Addr>().is_ok());
        if ok && !dotted_quad && !b.get(end).is_some_and(|&c| alnum(c)) {
            out.push((i, end));
        }
        // Like a regex scan: the next candidate starts after this one.
        i = end.max(i + 1);
    }
}

/// Reads a phone-shaped run at `i`: (end, digit count, starts with `+`, has separators or parentheses).
fn phone_at(b: &[u8], mut i: usize) -> (usize, usize, bool, bool) {
    let start = i;
    let international = b[i] == b'+';
    let mut digits = 0;
    let mut punctuated = false;
    let mut groups = 0;
    if international {
        i += 1;
    }
    let group = |i: &mut usize, digits: &mut usize| -> bool {
        let s = *i;
        while *i < b.len() && b[*i].is_ascii_digit() && *i - s < 5 {
            *i += 1;
        }
        *digits += *i - s;
        *i > s && !b.get(*i).is_some_and(u8::is_ascii_digit)
    };
    let mut end = i;
    loop {
        let mut j = end;
        let paren = b.get(j) == Some(&b'(') && groups <= 1;
        if paren {
            j += 1;
        }
        let mut d = digits;
        if !group(&mut j, &mut d) {
            break;
        }
        if paren {
            if b.get(j) != Some(&b')') {
                break;
            }
            j += 1;
            punctuated = true;
        }
        digits = d;
        groups += 1;
        end = j;
        // One separator, then another group.
        let mut k = end;
        if matches!(b.get(k), Some(b' ' | b'.' | b'-')) {
            k += 1;
            if b.get(k).is_some_and(|&c| c.is_ascii_digit() || c == b'(') && groups < 6 {
                punctuated = true;
                end = k;
                continue;
            }
        }
        break;
    }
    // A trailing separator was consumed only when a group followed it.
    while end > start && matches!(b[end - 1], b' ' | b'.' | b'-') {
        end -= 1;
    }
    (end, digits, international, punctuated || groups > 1)
}

/// IBANs: country letters and check digits, then 11–30 letters or digits
/// (spaces between groups allowed); the longest mod-97-valid prefix wins.
pub fn ibans(text: &str, out: &mut Out) {
    let b = text.as_bytes();
    let mut i = 0;
    while i + 4 <= b.len() {
        let head = b[i].is_ascii_uppercase()
            && b[i + 1].is_ascii_uppercase()
            && b[i + 2].is_ascii_digit()
            && b[i + 3].is_ascii_digit()
            && !before(b, i).is_some_and(alnum);
        if !head {
            i += 1;
            continue;
        }
        // Group ends (exclusive) where a match may stop.
        let mut ends = Vec::new();
        let mut j = i + 4;
        let mut chars = 4;
        while j < b.len() && chars < 34 {
            if b[j] == b' '
                && b.get(j + 1)
                    .is_some_and(|&c| c.is_ascii_uppercase() || c.is_ascii_digit())
            {
                ends.push(j);
                j += 1;
            } else if b[j].is_ascii_uppercase() || b[j].is_ascii_digit() {
                j += 1;
                chars += 1;
            } else {
                break;
            }
        }
        if !b.get(j).is_some_and(|&c| alnum(c)) {
            ends.push(j);
        }
        match ends.iter().rev().find(|&&e| iban_valid(&text[i..e])) {
            Some(&e) => {
                out.push((i, e));
                i = e;
            }
            None => i += 1,
        }
    }
}

/// Secrets with a recognisable shape.
pub fn secrets(text: &str, out: &mut Out) {
    let token = |c: u8| alnum(c) || c == b'_' || c == b'-';
    let b = text.as_bytes();
    let run = |from: usize, ok: &dyn Fn(u8) -> bool| {
        let mut e = from;
        while e < b.len() && ok(b[e]) {
            e += 1;
        }
        e
    };
    // (prefix, allowed characters after it, least characters after it)
    let shapes: [Shape; 7] = [
        ("sk-", &token, 20),
        (
            "AKIA",
            &|c: u8| c.is_ascii_uppercase() || c.is_ascii_digit(),
            16,
        ),
        (
            "ASIA",
            &|c: u8| c.is_ascii_uppercase() || c.is_ascii_digit(),
            16,
        ),
        ("github_pat_", &|c: u8| alnum(c) || c == b'_', 22),
        ("xox", &|c: u8| alnum(c) || c == b'-', 12),
        ("gh", &|c: u8| alnum(c) || c == b'_', 38),
        (
            "-----BEGIN ",
            &|c: u8| c.is_ascii_uppercase() || c == b' ' || c == b'-',
            0,
        ),
    ];
    for (prefix, ok, least) in shapes {
        for (s, _) in text.match_indices(prefix) {
            if before(b, s).is_some_and(token) {
                continue;
            }
            let e = run(s + prefix.len(), ok);
            let body = &text[s + prefix.len()..e];
            let shaped = match prefix {
                "xox" => {
                    body.len() >= least
                        && matches!(
                            body.as_bytes().first(),
                            Some(b'b' | b'a' | b'p' | b'r' | b's')
                        )
                        && body.as_bytes().get(1) == Some(&b'-')
                }
                "gh" => {
                    body.len() >= least
                        && matches!(
                            body.as_bytes().first(),
                            Some(b'p' | b'o' | b'u' | b's' | b'r')
                        )
                        && body.as_bytes().get(1) == Some(&b'_')
                }
                "-----BEGIN " => body.ends_with("PRIVATE KEY-----"),
                "AKIA" | "ASIA" => body.len() == least,
                _ => body.len() >= least,
            };
            if shaped {
                out.push((s, e));
            }
        }
    }
    // JWTs: three base64url parts, the first two starting with `eyJ`.
    for (s, _) in text.match_indices("eyJ") {
        if before(b, s).is_some_and(|c| token(c) || c == b'.') {
            continue;
        }
        let b64 = |c: u8| token(c);
        let e1 = run(s, &b64);
        if e1 - s < 11 || b.get(e1) != Some(&b'.') || !text[e1 + 1..].starts_with("eyJ") {
            continue;
        }
        let e2 = run(e1 + 1, &b64);
        if e2 - e1 < 12 || b.get(e2) != Some(&b'.') {
            continue;
        }
        let e3 = run(e2 + 1, &b64);
        if e3 - e2 > 8 {
            out.push((s, e3));
        }
    }
}
