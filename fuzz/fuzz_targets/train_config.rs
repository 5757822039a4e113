//! `anvil train --config FILE` on arbitrary text: `ConfigFile::parse` then `RunConfig::resolve`
//! refuse with an error naming the file, or accept a run whose model validates, whose
//! `to_text` reads back to the same run, and which the same lines given as flags resolve to.
#![no_main]

use anvil::train::{ConfigFile, RunConfig};
use libfuzzer_sys::fuzz_target;

const NAME: &str = "run.conf";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    anvil_fuzz::refused_or(ConfigFile::parse(text, NAME), NAME, |file| {
        let flags: Vec<(String, String)> = file
            .entries()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let as_flags = RunConfig::resolve(&flags, None);
        anvil_fuzz::refused_or(RunConfig::resolve(&[], Some(&file)), NAME, |rc| {
            rc.model
                .validate()
                .expect("an accepted run's model validates");
            let again = ConfigFile::parse(&rc.to_text(), NAME).expect("our own text parses");
            let back = RunConfig::resolve(&[], Some(&again)).expect("our own text resolves");
            assert_eq!(back, rc);
            assert_eq!(as_flags.expect("the same values as flags resolve"), rc);
        });
    });
});
