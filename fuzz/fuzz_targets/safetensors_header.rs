//! The safetensors header parser on raw bytes: every input is either refused with an error or yields
//! tensors whose byte ranges lie inside the input; none panics.
#![no_main]

use anvil::io::safetensors::parse_header;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = parse_header(Path::new("fuzz"), data) {
        assert!(h.data_start <= data.len());
        for t in &h.tensors {
            assert!(t.range.start >= h.data_start && t.range.end <= data.len());
            assert_eq!(t.range.len(), t.dtype.size() * t.shape.iter().product::<usize>());
        }
    }
});
