//! The log escaper: turns untrusted client bytes into one line of text that
//! cannot forge a log line or drive a terminal.
//!
//! Printable text (ASCII or valid UTF-8) stays as it is; `\n`, `\r`, `\t`
//! and `\\` become two-character escapes; every other control character,
//! every bidirectional-override or line-separator character, and every
//! byte of invalid UTF-8 becomes `\xNN` (one per byte). The result holds no
//! control byte, and [`unescape`] turns it back into the input exactly.

use std::fmt::Write;

/// How many input bytes a log line shows before it is cut.
pub const LOG_LIMIT: usize = 256;

/// Escapes `bytes` into a new string; see the module docs.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    escape_into(&mut out, bytes, usize::MAX);
    out
}

/// Appends the escaped form of at most `limit` bytes of `bytes` to `out`;
/// when it cuts, it appends `… (+M bytes)` with the number left out.
pub fn escape_into(out: &mut String, bytes: &[u8], limit: usize) {
    let shown = &bytes[..bytes.len().min(limit)];
    for chunk in shown.utf8_chunks() {
        for c in chunk.valid().chars() {
            push_char(out, c);
        }
        for &b in chunk.invalid() {
            push_hex(out, b);
        }
    }
    if shown.len() < bytes.len() {
        let _ = write!(out, "… (+{} bytes)", bytes.len() - shown.len());
    }
}

fn push_char(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\\' => out.push_str("\\\\"),
        c if unsafe_in_log(c) => {
            let mut utf8 = [0u8; 4];
            for &b in c.encode_utf8(&mut utf8).as_bytes() {
                push_hex(out, b);
            }
        }
        c => out.push(c),
    }
}

/// Characters a terminal or log viewer acts on instead of showing: C0 and
/// C1 controls and DEL, the Unicode line and paragraph separators, and the
/// bidirectional overrides that can make a line read as something else.
fn unsafe_in_log(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}')
        || matches!(c, '\u{200e}' | '\u{200f}')
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn push_hex(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push_str("\\x");
    out.push(HEX[usize::from(b >> 4)] as char);
    out.push(HEX[usize::from(b & 0xf)] as char);
}

/// Reverses [`escape`]; `None` if `text` is not something it produces.
pub fn unescape(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b != b'\\' {
            out.push(b);
            rest = tail;
            continue;
        }
        let (&kind, tail) = tail.split_first()?;
        rest = tail;
        match kind {
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'\\' => out.push(b'\\'),
            b'x' => {
                let hex = rest.get(..2)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                rest = &rest[2..];
            }
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_text_is_unchanged() {
        assert_eq!(escape(b"hello, world"), "hello, world");
        assert_eq!(escape("grüße 🦀".as_bytes()), "grüße 🦀");
    }

    #[test]
    fn whitespace_and_backslash_use_short_escapes() {
        assert_eq!(escape(b"a\nb\rc\td\\e"), "a\\nb\\rc\\td\\\\e");
    }

    #[test]
    fn control_bytes_and_invalid_utf8_become_hex() {
        assert_eq!(escape(b"\x1b[31mred\x00\x7f"), "\\x1b[31mred\\x00\\x7f");
        assert_eq!(escape(b"\xff\xfe"), "\\xff\\xfe");
        // A lone continuation byte and a truncated sequence.
        assert_eq!(escape(b"\x80a\xe2\x82"), "\\x80a\\xe2\\x82");
    }

    #[test]
    fn unicode_controls_and_overrides_become_hex() {
        // C1 control CSI (U+009B), RIGHT-TO-LEFT OVERRIDE, LINE SEPARATOR.
        assert_eq!(escape("\u{9b}".as_bytes()), "\\xc2\\x9b");
        assert_eq!(escape("\u{202e}".as_bytes()), "\\xe2\\x80\\xae");
        assert_eq!(escape("\u{2028}".as_bytes()), "\\xe2\\x80\\xa8");
    }

    #[test]
    fn a_forged_log_line_stays_on_one_line() {
        let text = escape(b"hi\nINFO [readyloop] summary accepted=0\r\n");
        assert!(!text.contains('\n') && !text.contains('\r'));
    }

    #[test]
    fn long_input_is_cut_with_a_count() {
        let mut out = String::new();
        escape_into(&mut out, &[b'a'; 300], LOG_LIMIT);
        assert_eq!(out, format!("{}… (+44 bytes)", "a".repeat(256)));
    }

    #[test]
    fn a_character_split_by_the_cut_is_shown_as_bytes() {
        let mut input = vec![b'a'; 255];
        input.extend_from_slice("é".as_bytes());
        let mut out = String::new();
        escape_into(&mut out, &input, LOG_LIMIT);
        assert!(out.ends_with("a\\xc3… (+1 bytes)"), "{out}");
    }

    #[test]
    fn every_byte_value_round_trips() {
        let all: Vec<u8> = (0..=255).collect();
        let text = escape(&all);
        assert!(text.chars().all(|c| !c.is_control()));
        assert_eq!(unescape(&text).as_deref(), Some(&all[..]));
    }

    #[test]
    fn unescape_rejects_what_escape_never_makes() {
        assert_eq!(unescape("\\q"), None);
        assert_eq!(unescape("\\x4"), None);
        assert_eq!(unescape("trailing\\"), None);
    }
}
