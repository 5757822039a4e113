//! Model configurations on arbitrary text: `Config::from_json` (GPT-2, LLaMA, Mistral, Mixtral,
//! ExpertModel layouts) and `EncoderConfig::from_json` (BERT) refuse with an error or accept a
//! configuration that validates and round-trips through `to_json`.
#![no_main]

use anvil::models::{Config, EncoderConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = Config::from_json(text) {
        c.validate().expect("an accepted config validates");
        let back = Config::from_json(&c.to_json()).expect("our own JSON reads back");
        assert_eq!(back, c);
    }
    let _ = EncoderConfig::from_json(text);
});
