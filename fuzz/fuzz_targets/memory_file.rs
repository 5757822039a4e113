//! The memory file loader on raw bytes, both as a whole file and as a body re-signed with a valid header
//! (so mutations reach the JSON and invariant checks past the checksum): every input is refused with an
//! error or loads into a memory whose levels are within budget and whose chunks tile the messages.
#![no_main]

use anvil::memory::{Level, Memory, WordCounter, persist};
use libfuzzer_sys::fuzz_target;

fn check(bytes: &[u8]) {
    if let Ok(m) = Memory::from_bytes(bytes, Box::new(WordCounter), "fuzz") {
        let mut next = 0;
        for l in [Level::LongTerm, Level::Obsolete, Level::Current] {
            for c in m.chunks(l) {
                assert_eq!(c.first, next);
                next = c.last + 1;
            }
        }
        assert_eq!(next, m.messages());
        assert!(m.stats().iter().all(|s| s.tokens <= s.budget));
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut file = format!(
        "anvil-memory 1 {:016x} {}\n",
        persist::checksum(data),
        data.len()
    )
    .into_bytes();
    file.extend_from_slice(data);
    check(&file);
});
