//! Hand-written scanners for the built-in detectors. Each appends the byte
//! ranges of checked matches; none allocates per byte or backtracks far.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::detect::{iban_valid, luhn};

type Out = Vec<(usize, usize)>;

/// What one pass over a text found, shared by the scanners: the token
/// starts (a byte that is alphanumeric or one of `+(-` after one that is
/// not), where every built-in match begins, and which byte classes occur.
#[derive(Debug, Default)]
pub struct Lexed {
    starts: Vec<usize>,
    classes: u8,
}

/// Byte classes in [`Lexed`].
pub const DIGIT: u8 = 1;
/// An upper-case ASCII letter.
pub const UPPER: u8 = 2;
/// `@`.
pub const AT: u8 = 4;
/// `.` or `:`.
pub const DOT_OR_COLON: u8 = 8;
/// A letter or digit (table bit, not reported).
const ALNUM: u8 = 16;
/// `+`, `(` or `-`: may start a token (table bit, not reported).
const STARTS_TOKEN: u8 = 32;

/// Each byte's classes.
static BYTE_TABLE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = if b.is_ascii_digit() {
            DIGIT | ALNUM
        } else if b.is_ascii_uppercase() {
            UPPER | ALNUM
        } else if b.is_ascii_lowercase() {
            ALNUM
        } else {
            match b {
                b'@' => AT,
                b'.' | b':' => DOT_OR_COLON,
                b'+' | b'(' | b'-' => STARTS_TOKEN,
                _ => 0,
            }
        };
        c += 1;
    }
    t
};

impl Lexed {
    /// One pass over `text`, table-driven.
    pub fn of(text: &str) -> Self {
        let b = text.as_bytes();
        let mut starts = Vec::with_capacity(b.len() / 4);
        let mut classes = 0;
        let mut prev = 0u8;
        for (i, &c) in b.iter().enumerate() {
            let t = BYTE_TABLE[usize::from(c)];
            classes |= t;
            if prev & ALNUM == 0 && t & (ALNUM | STARTS_TOKEN) != 0 {
                starts.push(i);
            }
            prev = t;
        }
        Lexed {
            starts,
            classes: classes & (DIGIT | UPPER | AT | DOT_OR_COLON),
        }
    }

    /// Whether a byte of `class` occurs.
    pub fn has(&self, class: u8) -> bool {
        self.classes & class != 0
    }
}

/// Walks the token starts from left to right; a scanner that consumed up to
/// `end` asks for the next start at or after it.
struct Cursor<'a> {
    starts: &'a [usize],
    k: usize,
}

impl<'a> Cursor<'a> {
    fn new(lexed: &'a Lexed) -> Self {
        Cursor {
            starts: &lexed.starts,
            k: 0,
        }
    }

    fn next_from(&mut self, pos: usize) -> Option<usize> {
        while self.k < self.starts.len() && self.starts[self.k] < pos {
            self.k += 1;
        }
        self.starts.get(self.k).copied()
    }
}

fn alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

/// The byte before `i`, if any.
fn before(b: &[u8], i: usize) -> Option<u8> {
    i.checked_sub(1).map(|j| b[j])
}

/// E-mail addresses: a local part of `[A-Za-z0-9._%+-]` (≤ 64) around each
/// `@`, and a domain of dot-separated labels ending in a 2–24 letter TLD.
pub fn emails(text: &str, _lexed: &Lexed, out: &mut Out) {
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
fn digit_runs(text: &str, lexed: &Lexed, seps: &[u8], mut each: impl FnMut(usize, usize, usize)) {
    let b = text.as_bytes();
    let mut cursor = Cursor::new(lexed);
    let mut pos = 0;
    while let Some(i) = cursor.next_from(pos) {
        pos = i + 1;
        let glued = match before(b, i) {
            Some(c) if alnum(c) => true,
            // `-7` or `.5` right after a digit continues something else (`3-7`, `1.5`).
            Some(c) if c != b' ' && seps.contains(&c) => i >= 2 && b[i - 2].is_ascii_digit(),
            _ => false,
        };
        if !b[i].is_ascii_digit() || glued {
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
        pos = end.max(i + 1);
    }
}

/// Payment cards: 13–19 digits with an issuer's prefix (2221–2720 or a
/// first digit 3–6), Luhn-valid. Written in one piece or in groups joined by
/// single spaces or dashes of one kind, every group but the last 4–6 digits
/// long. In a longer run of groups (`ref 1234 4111 1111 1111 1111`, a card
/// followed by its expiry month) the earliest, then longest, card is taken.
pub fn cards(text: &str, lexed: &Lexed, out: &mut Out) {
    let mut groups: Vec<(usize, usize)> = Vec::new();
    digit_runs(text, lexed, b" -", |s, e, _| {
        groups.clear();
        let mut from = s;
        for (k, c) in text[s..e].bytes().enumerate() {
            if c == b' ' || c == b'-' {
                groups.push((from, s + k));
                from = s + k + 1;
            }
        }
        groups.push((from, e));
        let mut a = 0;
        while a < groups.len() {
            match card_groups(text.as_bytes(), &groups[a..]) {
                Some(n) => {
                    out.push((groups[a].0, groups[a + n - 1].1));
                    a += n;
                }
                None => a += 1,
            }
        }
    });
}

/// How many of the leading `groups` (as many as fit) spell a card number.
fn card_groups(b: &[u8], groups: &[(usize, usize)]) -> Option<usize> {
    let mut digits = [0u8; 19];
    let mut len = 0;
    let mut best = None;
    for (n, &(s, e)) in groups.iter().enumerate() {
        if len + (e - s) > digits.len() {
            break;
        }
        for (k, &c) in b[s..e].iter().enumerate() {
            digits[len + k] = c - b'0';
        }
        len += e - s;
        if len >= 13 && issuer(&digits[..len]) && luhn(&digits[..len]) {
            best = Some(n + 1);
        }
        // The group just read is followed by another: it must look like a card group,
        // and the separator must be the kind the card started with.
        let (next_sep, first_sep) = (b.get(e), b.get(groups[0].1));
        if !(4..=6).contains(&(e - s)) || next_sep != first_sep {
            break;
        }
    }
    best
}

/// Card numbers start with an issuer's prefix: 2221–2720 (Mastercard 2-series)
/// or 3 (Amex, Diners, JCB), 4 (Visa), 5 (Mastercard, Maestro), 6 (Discover, UnionPay).
fn issuer(digits: &[u8]) -> bool {
    match digits {
        [3..=6, ..] => true,
        [2, a, b, c, ..] => (2221..=2720)
            .contains(&(u16::from(*a) * 100 + u16::from(*b) * 10 + u16::from(*c) + 2000)),
        _ => false,
    }
}

/// IPv4 dotted quads and IPv6 addresses (anything `Ipv6Addr` parses with at
/// least two colons and a hex digit), not glued to more address characters.
pub fn ips(text: &str, lexed: &Lexed, out: &mut Out) {
    let b = text.as_bytes();
    digit_runs(text, lexed, b".", |s, e, _| {
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

/// Phone numbers: `+` and 8–15 digits in any grouping (`+1 415 555 0134`,
/// `+49 (0)30 1234567`, `+14155550134`); North American `(555) 123-4567`,
/// `555-123-4567`, `1-800-555-0199`; or a trunk `0` and 10–12 digits in groups
/// of two or more (`030 1234 5678`, `01 23 45 67 89`). Groups are joined by one
/// of ` .-`; when a longer run fails, its longest phone-shaped start is taken
/// (`555-123-4567 20 times`). Dates, and digits right after them (a time),
/// are skipped.
pub fn phones(text: &str, lexed: &Lexed, out: &mut Out) {
    let b = text.as_bytes();
    let mut groups = Vec::new();
    let mut cursor = Cursor::new(lexed);
    let mut pos = 0;
    while let Some(i) = cursor.next_from(pos) {
        pos = i + 1;
        let c = b[i];
        let starts = (c == b'+' || c == b'(' || c.is_ascii_digit())
            && !before(b, i).is_some_and(|p| alnum(p) || matches!(p, b'.' | b'-' | b'+' | b'('));
        if !starts {
            continue;
        }
        phone_groups(b, i, &mut groups);
        let Some(last) = groups.last() else {
            continue;
        };
        let run_end = last.end;
        if let Some(date_end) = date(b, i, &groups) {
            pos = date_end;
            continue;
        }
        let found = (1..=groups.len())
            .rev()
            .map(|n| &groups[..n])
            .find(|g| phone_shaped(text, i, g));
        match found {
            Some(g) => {
                let end = g[g.len() - 1].end;
                out.push((i, end));
                pos = end;
            }
            // Like a regex scan: the next candidate starts after this one.
            None => pos = run_end.max(i + 1),
        }
    }
}

/// One group of a phone number: `start..end`, `(` and `)` included.
struct Group {
    start: usize,
    end: usize,
    paren: bool,
}

impl Group {
    fn digits(&self) -> usize {
        self.end - self.start - if self.paren { 2 } else { 0 }
    }

    /// Where its digits start.
    fn first_digit(&self) -> usize {
        self.start + usize::from(self.paren)
    }
}

/// Reads the phone-shaped groups at `i` (after an optional `+`): up to six
/// groups of 1–8 digits (the first after `+` up to 15), the first two may be
/// in parentheses, joined by one of ` .-` (or nothing after a `)`).
fn phone_groups(b: &[u8], i: usize, groups: &mut Vec<Group>) {
    groups.clear();
    let plus = b[i] == b'+';
    let mut j = i + usize::from(plus);
    loop {
        let start = j;
        let paren = b.get(j) == Some(&b'(') && groups.len() <= 1;
        j += usize::from(paren);
        let first = j;
        while b.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        let most = if plus && groups.is_empty() && !paren {
            15
        } else {
            8
        };
        if !(1..=most).contains(&(j - first)) || (paren && b.get(j) != Some(&b')')) {
            return;
        }
        j += usize::from(paren);
        groups.push(Group {
            start,
            end: j,
            paren,
        });
        if groups.len() == 6 {
            return;
        }
        match b.get(j) {
            Some(b' ' | b'.' | b'-')
                if b.get(j + 1)
                    .is_some_and(|&c| c.is_ascii_digit() || c == b'(') =>
            {
                j += 1
            }
            Some(c) if paren && c.is_ascii_digit() => {}
            _ => return,
        }
    }
}

/// Whether the number starting at `start` and made of `groups` is a phone number.
fn phone_shaped(text: &str, start: usize, groups: &[Group]) -> bool {
    let b = text.as_bytes();
    let (Some(first), Some(last)) = (groups.first(), groups.last()) else {
        return false;
    };
    if b.get(last.end).is_some_and(|&c| alnum(c))
        || text[start..last.end].parse::<Ipv4Addr>().is_ok()
    {
        return false;
    }
    let digits: usize = groups.iter().map(Group::digits).sum();
    if b[start] == b'+' {
        return (8..=15).contains(&digits);
    }
    let lens = |want: &[usize]| groups.iter().map(Group::digits).eq(want.iter().copied());
    let north_american =
        lens(&[3, 3, 4]) || (lens(&[1, 3, 3, 4]) && b[first.first_digit()] == b'1');
    let trunk = b[first.first_digit()] == b'0'
        && groups.len() >= 2
        && groups.iter().all(|g| g.digits() >= 2)
        && (10..=12).contains(&digits);
    north_american || trunk
}

/// The end of a date (`2024-01-15`, `15.01.2024`, `01-15-2024`) that the
/// groups at `start` begin with, and of a time's hour right after it.
fn date(b: &[u8], start: usize, groups: &[Group]) -> Option<usize> {
    let [g0, g1, g2, rest @ ..] = groups else {
        return None;
    };
    if b[start] == b'+' || groups[..3].iter().any(|g| g.paren) || b[g0.end] != b[g1.end] {
        return None;
    }
    let value = |g: &Group| {
        b[g.start..g.end]
            .iter()
            .fold(0u32, |v, &c| v * 10 + u32::from(c - b'0'))
    };
    let year = |g: &Group| g.digits() == 4 && (1900..=2099).contains(&value(g));
    let part = |g: &Group, most| g.digits() <= 2 && (1..=most).contains(&value(g));
    let is_date = (year(g0) && part(g1, 12) && part(g2, 31))
        || (year(g2) && ((part(g0, 31) && part(g1, 12)) || (part(g0, 12) && part(g1, 31))));
    if !is_date {
        return None;
    }
    let time = rest
        .first()
        .filter(|g| g.digits() <= 2 && b[g2.end] == b' ');
    Some(time.map_or(g2.end, |g| g.end))
}

/// IBANs: country letters and check digits, then 11–30 letters or digits
/// (spaces between groups allowed); the longest mod-97-valid prefix wins.
pub fn ibans(text: &str, lexed: &Lexed, out: &mut Out) {
    let b = text.as_bytes();
    let mut cursor = Cursor::new(lexed);
    let mut pos = 0;
    while let Some(i) = cursor.next_from(pos) {
        pos = i + 1;
        if i + 4 > b.len() {
            break;
        }
        let head = b[i].is_ascii_uppercase()
            && b[i + 1].is_ascii_uppercase()
            && b[i + 2].is_ascii_digit()
            && b[i + 3].is_ascii_digit()
            && !before(b, i).is_some_and(alnum);
        if !head {
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
        if let Some(&e) = ends.iter().rev().find(|&&e| iban_valid(&text[i..e])) {
            out.push((i, e));
            pos = e;
        }
    }
}

/// Secrets with a recognisable shape: at each token start whose first byte
/// can begin a shape, the shapes are tried in place (a pass per prefix with
/// `str::match_indices` cost 3× more inside wasm, which has no SIMD string
/// search).
pub fn secrets(text: &str, lexed: &Lexed, out: &mut Out) {
    let b = text.as_bytes();
    let mut cursor = Cursor::new(lexed);
    let mut pos = 0;
    while let Some(i) = cursor.next_from(pos) {
        pos = i + 1;
        let first = matches!(b[i], b's' | b'A' | b'g' | b'x' | b'e' | b'-');
        if !first || before(b, i).is_some_and(token) {
            continue;
        }
        if let Some(end) = secret_at(text, i) {
            out.push((i, end));
            pos = end;
        }
    }
}

/// A token character: letters, digits, `_` and `-`.
fn token(c: u8) -> bool {
    alnum(c) || c == b'_' || c == b'-'
}

/// The end of the longest run from `from` of bytes that `ok` accepts.
fn run_end(b: &[u8], from: usize, ok: impl Fn(u8) -> bool) -> usize {
    let mut e = from;
    while e < b.len() && ok(b[e]) {
        e += 1;
    }
    e
}

/// The end of a secret starting at `s`, if one does.
fn secret_at(text: &str, s: usize) -> Option<usize> {
    let b = text.as_bytes();
    let rest = &text[s..];
    let upper_digit = |c: u8| c.is_ascii_uppercase() || c.is_ascii_digit();
    let after = |prefix: &str, ok: &dyn Fn(u8) -> bool, least: usize| {
        let e = run_end(b, s + prefix.len(), ok);
        (e - s - prefix.len() >= least).then_some(e)
    };
    if rest.starts_with("sk-") {
        return after("sk-", &token, 20);
    }
    if rest.starts_with("AKIA") || rest.starts_with("ASIA") {
        let e = run_end(b, s + 4, upper_digit);
        return (e - s - 4 == 16).then_some(e);
    }
    if rest.starts_with("github_pat_") {
        return after("github_pat_", &|c| alnum(c) || c == b'_', 22);
    }
    if rest.len() > 3 && rest.starts_with("gh") && b"pousr".contains(&b[s + 2]) && b[s + 3] == b'_'
    {
        return after("ghp_", &alnum, 36);
    }
    if rest.len() > 4 && rest.starts_with("xox") && b"baprs".contains(&b[s + 3]) && b[s + 4] == b'-'
    {
        return after("xoxb-", &|c| alnum(c) || c == b'-', 10);
    }
    if rest.starts_with("-----BEGIN ") {
        let e = run_end(b, s + 11, |c| {
            c.is_ascii_uppercase() || c == b' ' || c == b'-'
        });
        return text[s..e]
            .ends_with("PRIVATE KEY-----")
            .then(|| pem_end(text, e));
    }
    if rest.starts_with("eyJ") {
        // JWT: three base64url parts, the first two starting with `eyJ`.
        let e1 = run_end(b, s, token);
        if e1 - s < 11 || b.get(e1) != Some(&b'.') || !text[e1 + 1..].starts_with("eyJ") {
            return None;
        }
        let e2 = run_end(b, e1 + 1, token);
        if e2 - e1 < 12 || b.get(e2) != Some(&b'.') {
            return None;
        }
        let e3 = run_end(b, e2 + 1, token);
        return (e3 - e2 > 8).then_some(e3);
    }
    None
}

/// Where a PEM private key whose header ends at `from` ends: after its
/// `-----END … PRIVATE KEY-----` line, or, when that is missing (a truncated
/// paste), after the whole base64 lines that follow. The key material is the
/// secret, not the header.
fn pem_end(text: &str, from: usize) -> usize {
    let b = text.as_bytes();
    // Base64, line breaks (real, or escaped in text that was JSON), and the
    // `Proc-Type: 4,ENCRYPTED` / `DEK-Info:` headers of encrypted keys.
    let keyish = |c: u8| alnum(c) || b"+/=:,- \t\r\n\\".contains(&c);
    let mut e = from;
    while e < b.len() && keyish(b[e]) {
        if b[e] == b'-' && text[e..].starts_with("-----END ") {
            let tail = &text[e + 9..];
            let label = tail
                .bytes()
                .take_while(|&c| c.is_ascii_uppercase() || c == b' ')
                .count();
            if tail[label..].starts_with("-----") && tail[..label].ends_with("PRIVATE KEY") {
                return e + 9 + label + 5;
            }
            break;
        }
        e += 1;
    }
    // No end line: whole lines of base64 after the header, up to a blank
    // line or one with other characters.
    let line_break = |i: usize| {
        ["\r\n", "\n", "\\r\\n", "\\n"]
            .iter()
            .find(|t| text[i..].starts_with(**t))
            .map(|t| t.len())
    };
    let mut end = from;
    while let Some(n) = line_break(end) {
        let line = end + n;
        let j = run_end(b, line, |c| alnum(c) || b"+/=".contains(&c));
        if j == line || (j < b.len() && line_break(j).is_none()) {
            break;
        }
        end = j;
    }
    end
}
