//! The safetensors reader on raw bytes, header and data: every input is refused with an error naming the
//! file (and never allocates past what it backs), or yields tensors whose byte ranges lie inside the input
//! and every one of which reads (or is refused by name) with as many values as its shape says.
#![no_main]

use anvil::io::safetensors::{FileDtype, SafeTensors, parse_header};
use anvil_fuzz::refused_or;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

const NAME: &str = "fuzz.safetensors";

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = parse_header(Path::new(NAME), data) {
        assert!(h.data_start <= data.len());
        for t in &h.tensors {
            assert!(t.range.start >= h.data_start && t.range.end <= data.len());
            assert_eq!(
                t.range.len(),
                t.dtype.size() * t.shape.iter().product::<usize>()
            );
        }
    }
    refused_or(SafeTensors::from_bytes(NAME, data), NAME, |st| {
        for info in st.infos() {
            let numel: usize = info.shape.iter().product();
            assert_eq!(
                st.bytes(&info.name).expect("listed").len(),
                info.range.len()
            );
            refused_or(st.tensor(&info.name), NAME, |t| {
                assert_eq!(t.shape(), &info.shape[..]);
                assert_eq!(t.to_vec().len(), numel);
                let _ = t.to_string();
            });
            match st.i64s(&info.name) {
                Ok(v) => assert!(info.dtype == FileDtype::I64 && v.len() == numel),
                Err(e) => assert!(e.to_string().contains(&info.name)),
            }
        }
        for nf in st.non_finite() {
            let info = st.info(&nf.name).expect("reported tensors exist");
            let numel: usize = info.shape.iter().product();
            assert!(nf.first < numel && nf.nan + nf.pos_inf + nf.neg_inf <= numel);
        }
    });
});
