//! Malformed int8 checkpoints (as `anvil quantize` writes them, then damaged): each refusal names the file
//! and the int8 tensor. The regressions the `checkpoint` fuzzer found are named `regression_*`.

use super::scratch;
use anvil::io::safetensors::SafeTensors;
use anvil::models::{Arch, Config, Model};
use std::path::{Path, PathBuf};

/// A small quantized LLaMA saved as `dir/name`, the name of its first int8 tensor and that tensor's bytes
/// in the file.
fn int8_checkpoint(dir: &Path, name: &str) -> (PathBuf, String, std::ops::Range<usize>) {
    let config = Config {
        arch: Arch::Llama,
        vocab_size: 64,
        d_model: 32,
        n_layers: 1,
        n_heads: 2,
        n_kv_heads: 2,
        head_dim: 16,
        d_ff: 48,
        max_seq_len: 16,
        dropout: 0.0,
        ..Config::expert(64)
    };
    let mut m = Model::new(config, 7).unwrap();
    m.quantize().unwrap();
    let path = dir.join(name);
    m.save(&path).unwrap();
    let file = SafeTensors::open(&path).unwrap();
    let info = file
        .infos()
        .iter()
        .find(|i| i.dtype == anvil::io::safetensors::FileDtype::I8)
        .expect("a quantized model has int8 tensors");
    (path.clone(), info.name.clone(), info.range.clone())
}

/// Found by the `checkpoint` fuzzer: an int8 weight byte of 0x80 (-128, outside the symmetric format the
/// int8 GEMM packs) was refused by the kernel with a message that named neither the file nor the tensor.
#[test]
fn regression_int8_weight_of_minus_128_names_the_file_and_tensor() {
    let dir = scratch("int8-minus-128");
    let (path, tensor, range) = int8_checkpoint(&dir, "q.safetensors");
    assert!(Model::load(&path).unwrap().is_quantized());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[range.start + 5] = 0x80;
    let bad = dir.join("minus128.safetensors");
    std::fs::write(&bad, &bytes).unwrap();
    let e = Model::load(&bad).unwrap_err().to_string();
    for needle in [
        "minus128.safetensors",
        &format!("tensor `{tensor}`"),
        "-128",
    ] {
        assert!(e.contains(needle), "expected `{needle}` in: {e}");
    }
}
