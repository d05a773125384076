//! Fuzzes the log escaper: for any bytes a client may send, the logged
//! text holds no control character or raw line break, the full escape
//! decodes back to the input, and the cut line shows an exact prefix.
//! Run: `cargo +nightly fuzz run escape` from the repository root.
#![no_main]

use libfuzzer_sys::fuzz_target;
use readyloop::escape::{escape, escape_into, unescape, LOG_LIMIT};

fn acts_on_terminal(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}')
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fuzz_target!(|data: &[u8]| {
    let text = escape(data);
    assert!(!text.chars().any(acts_on_terminal), "raw control: {text:?}");
    assert_eq!(unescape(&text).as_deref(), Some(data));

    let mut line = String::new();
    escape_into(&mut line, data, LOG_LIMIT);
    assert!(!line.chars().any(acts_on_terminal), "raw control: {line:?}");
    let shown = data.len().min(LOG_LIMIT);
    let prefix = match data.len() - shown {
        0 => line.as_str(),
        cut => line
            .strip_suffix(&format!("… (+{cut} bytes)"))
            .unwrap_or_else(|| panic!("no cut count in {line:?}")),
    };
    assert_eq!(unescape(prefix).as_deref(), Some(&data[..shown]));

    // Arbitrary text, as from a doctored log: never a panic.
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = unescape(s);
    }
});
