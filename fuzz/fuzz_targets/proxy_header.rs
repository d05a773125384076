//! Fuzzes the PROXY header parser: for any bytes, no panic; a header
//! lies within the bytes and the cap; an incomplete prefix is below the
//! cap; and the verdict on the bytes fed in any two pieces, as a reader
//! that stops at the first verdict would see them, is the verdict on the
//! whole. Run: `cargo +nightly fuzz run proxy_header` from the
//! repository root.
#![no_main]

use libfuzzer_sys::fuzz_target;
use readyloop::proxy::header::{room, MAX};
use readyloop::proxy::{parse, Parse};

fuzz_target!(|data: &[u8]| {
    assert!(room(data) >= 1);
    let whole = parse(data);
    match whole {
        Ok(Parse::Done(h)) => assert!(h.len <= data.len() && h.len <= MAX),
        Ok(Parse::Incomplete) => assert!(data.len() < MAX),
        Err(_) => {}
    }
    // The first verdict over growing prefixes is the whole's.
    for at in 0..=data.len() {
        match parse(&data[..at]) {
            Ok(Parse::Incomplete) => continue,
            first => {
                assert_eq!(first, whole, "at {at}");
                break;
            }
        }
    }
});
