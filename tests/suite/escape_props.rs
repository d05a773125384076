//! The log escaper over arbitrary input: whatever a client sends, the
//! logged text is one inert line that decodes back to exactly the bytes
//! received.

use proptest::prelude::*;
use readyloop::escape::{escape, escape_into, unescape, LOG_LIMIT};

/// Characters a terminal or log viewer acts on instead of showing; none
/// may reach the log raw.
fn acts_on_terminal(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}')
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Characters worth hitting often: controls, escapes' own syntax, bidi
/// overrides, separators, multibyte text and the cut's own ellipsis.
const NASTY: &[char] = &[
    '\0', '\n', '\r', '\t', '\x1b', '\x7f', '\u{9b}', '\\', 'x', '[',
    '\u{2028}', '\u{2029}', '\u{200e}', '\u{200f}', '\u{202a}', '\u{202e}',
    '\u{2066}', '\u{2069}', '\u{feff}', 'é', '…', '🦀',
];

/// Client input: raw bytes, arbitrary text, and runs of [`NASTY`]
/// characters with raw bytes spliced in (which may split a character).
fn client_bytes() -> impl Strategy<Value = Vec<u8>> {
    let raw = prop::collection::vec(any::<u8>(), 0..700);
    let text = any::<String>().prop_map(String::into_bytes);
    let nasty = prop::collection::vec(prop::sample::select(NASTY), 0..64);
    let mixed = (nasty, prop::collection::vec(any::<u8>(), 0..8), any::<u8>())
        .prop_map(|(chars, junk, at)| {
            let mut b = String::from_iter(chars).into_bytes();
            let at = usize::from(at) % (b.len() + 1);
            b.splice(at..at, junk);
            b
        });
    prop_oneof![raw, text, mixed]
}

fn assert_inert(text: &str) -> Result<(), TestCaseError> {
    prop_assert!(!text.contains('\n') && !text.contains('\r'), "{text:?}");
    let bad = text.chars().find(|&c| acts_on_terminal(c));
    prop_assert!(bad.is_none(), "raw {bad:?} in {text:?}");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any bytes escape to text with no control character, no raw line
    /// break, and that unescapes back to the input exactly.
    #[test]
    fn escape_is_inert_and_reversible(x in client_bytes()) {
        let text = escape(&x);
        assert_inert(&text)?;
        prop_assert_eq!(unescape(&text), Some(x));
    }

    /// With the log's cut, the line shows the first `LOG_LIMIT` bytes,
    /// which decode back exactly, and says how many were left out.
    #[test]
    fn the_cut_line_shows_an_exact_prefix(
        x in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..2 * LOG_LIMIT),
            client_bytes(),
        ],
    ) {
        let mut line = String::new();
        escape_into(&mut line, &x, LOG_LIMIT);
        assert_inert(&line)?;
        let shown = x.len().min(LOG_LIMIT);
        let suffix = match x.len() - shown {
            0 => String::new(),
            cut => format!("… (+{cut} bytes)"),
        };
        let prefix = line.strip_suffix(suffix.as_str());
        prop_assert!(prefix.is_some(), "{line:?} lacks {suffix:?}");
        let prefix = prefix.unwrap_or_default();
        prop_assert_eq!(unescape(prefix), Some(x[..shown].to_vec()));
    }

    /// `unescape` takes any text (say, a doctored log) without panicking,
    /// and what it decodes survives another escape round trip.
    #[test]
    fn unescape_never_panics(text in r"[\\xnrtq0-9a-fA-Z é…]{0,48}") {
        if let Some(bytes) = unescape(&text) {
            // Hex escapes of printable bytes are valid input but not what
            // escape writes, so compare decoded forms.
            prop_assert_eq!(unescape(&escape(&bytes)), Some(bytes));
        }
    }
}
