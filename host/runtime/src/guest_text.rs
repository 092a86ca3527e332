//! Guest-provided text made safe for a log line or a terminal: bounded and escaped.
//!
//! A policy is trusted to run, not to behave: its log messages and error
//! strings may be megabytes long and may hold CR/LF (forged log lines), ANSI
//! escapes (a rewritten terminal) or bidi controls (text that reads other than
//! it is). Every such string passes through [`guest_text`] before it leaves
//! the runtime.

/// Longest guest error string kept (`PolicyFailure` messages, `init` refusals).
pub const MAX_GUEST_ERROR: usize = 1024;
/// Longest guest log line kept.
pub const MAX_GUEST_LOG_LINE: usize = 4096;

/// `s` cut to at most `max` bytes (the cut marker included) at a char
/// boundary, with control characters escaped.
///
/// Escaped: CR, LF and tab as `\r`, `\n`, `\t`; every other C0 control, DEL,
/// C1 control, the Unicode line and paragraph separators and the bidi controls
/// (U+061C, U+200E, U+200F, U+202A–U+202E, U+2066–U+2069) as `\u{..}`. What is
/// left out is named by a marker, `…(N bytes cut)`, N counting bytes of `s`.
/// Backslashes stay as they are, so treated text passes through again
/// unchanged: a literal `\n` from the guest reads like an escaped newline,
/// but neither can break a line. The work done is bounded by `max`, not by
/// `s`. When `max` is too small for the marker, the output is the marker.
pub fn guest_text(s: &str, max: usize) -> String {
    let reserve = cut_marker(s.len()).len();
    let mut out = String::with_capacity(s.len().min(max));
    // The last place where a cut still leaves room for the marker:
    // (bytes of `out`, bytes of `s` shown).
    let mut keep = (0, 0);
    for (at, c) in s.char_indices() {
        if out.len() + reserve <= max {
            keep = (out.len(), at);
        }
        push_escaped(&mut out, c);
        if out.len() > max {
            out.truncate(keep.0);
            out.push_str(&cut_marker(s.len() - keep.1));
            return out;
        }
    }
    out
}

fn cut_marker(cut: usize) -> String {
    format!("…({cut} bytes cut)")
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if needs_escape(c) => out.extend(c.escape_unicode()),
        c => out.push(c),
    }
}

/// C0, DEL and C1 controls, line and paragraph separators, and bidi controls.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_plain_text_is_kept() {
        assert_eq!(
            guest_text("user 42 denied: bad token", 1024),
            "user 42 denied: bad token"
        );
        assert_eq!(guest_text("", 16), "");
        assert_eq!(guest_text("Grüße, 世界", 1024), "Grüße, 世界");
        assert_eq!(guest_text(r"C:\path\n", 1024), r"C:\path\n");
    }

    #[test]
    fn line_breaks_cannot_forge_log_lines() {
        let forged = "ok\r\n2025-01-01T00:00:00Z INFO admin: login accepted";
        assert_eq!(
            guest_text(forged, 1024),
            "ok\\r\\n2025-01-01T00:00:00Z INFO admin: login accepted"
        );
        assert_eq!(
            guest_text("a\tb\u{2028}c\u{2029}d\u{85}e", 1024),
            "a\\tb\\u{2028}c\\u{2029}d\\u{85}e"
        );
    }

    #[test]
    fn terminal_escapes_and_other_controls_are_escaped() {
        assert_eq!(
            guest_text("\u{1b}[2J\u{1b}[31mred\u{1b}[0m", 1024),
            "\\u{1b}[2J\\u{1b}[31mred\\u{1b}[0m"
        );
        assert_eq!(
            guest_text("\0\u{7}\u{7f}\u{9b}", 1024),
            "\\u{0}\\u{7}\\u{7f}\\u{9b}"
        );
    }

    #[test]
    fn bidi_controls_are_escaped() {
        // "Trojan Source": an override makes `admin` read as something else.
        assert_eq!(
            guest_text("user \u{202E}nimda\u{202C} ok", 1024),
            "user \\u{202e}nimda\\u{202c} ok"
        );
        for c in ('\u{202A}'..='\u{202E}').chain('\u{2066}'..='\u{2069}') {
            let out = guest_text(&c.to_string(), 64);
            assert!(out.starts_with("\\u{") && out.is_ascii(), "{c:?} -> {out}");
        }
        assert_eq!(
            guest_text("\u{200E}\u{200F}\u{61C}", 64),
            "\\u{200e}\\u{200f}\\u{61c}"
        );
    }

    #[test]
    fn cuts_at_a_char_boundary_and_names_the_cut() {
        // 'é' is 2 bytes: the cut never splits it.
        let s = "é".repeat(100);
        let out = guest_text(&s, 64);
        assert!(out.len() <= 64, "{}", out.len());
        let shown = out.split('…').next().unwrap();
        assert!(shown.chars().all(|c| c == 'é'));
        assert_eq!(
            out,
            format!("{shown}…({} bytes cut)", s.len() - shown.len())
        );
        // 4-byte chars at every offset of the cut.
        for max in 40..60 {
            let out = guest_text(&"𝄞".repeat(50), max);
            assert!(out.len() <= max, "max {max}: {}", out.len());
            assert!(out.ends_with(" bytes cut)"));
        }
    }

    #[test]
    fn escapes_count_against_the_bound() {
        let out = guest_text(&"\n".repeat(1000), 100);
        assert!(out.len() <= 100, "{}", out.len());
        assert!(out.starts_with("\\n\\n"));
        let shown = out.matches("\\n").count();
        assert!(
            out.ends_with(&format!("…({} bytes cut)", 1000 - shown)),
            "{out}"
        );
    }

    #[test]
    fn huge_input_gives_bounded_output() {
        let s = format!("{}\r\n\u{1b}[0m", "x".repeat(10 << 20));
        let out = guest_text(&s, MAX_GUEST_ERROR);
        assert!(out.len() <= MAX_GUEST_ERROR);
        assert!(out.ends_with(&format!(
            "…({} bytes cut)",
            s.len() - out.find('…').unwrap()
        )));
        assert!(!out.contains(['\r', '\n', '\u{1b}']));
    }

    #[test]
    fn treated_text_passes_through_unchanged() {
        for s in [
            "plain".to_string(),
            "a\r\nb\u{1b}[0m\u{202E}".to_string(),
            "y".repeat(5000),
            "\n".repeat(5000),
        ] {
            let once = guest_text(&s, 1024);
            assert_eq!(guest_text(&once, 1024), once);
        }
    }

    #[test]
    fn a_bound_below_the_marker_gives_just_the_marker() {
        assert_eq!(guest_text("abcdef", 3), "…(6 bytes cut)");
        assert_eq!(guest_text("abc", 3), "abc");
    }
}
