//! Our JSON parser on arbitrary bytes: every input is refused with an offset inside it, or parses to a value
//! that writes back (compact and pretty) to text parsing to the same value.
#![no_main]

use anvil::json;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match json::parse(data) {
        Err(e) => assert!(
            e.offset <= data.len(),
            "{e} past the {}-byte input",
            data.len()
        ),
        Ok(v) => {
            for text in [v.to_json(), v.to_json_pretty()] {
                let back =
                    json::parse_str(&text).unwrap_or_else(|e| panic!("{e} in our own {text}"));
                assert_eq!(back, v, "{text}");
            }
        }
    }
});
