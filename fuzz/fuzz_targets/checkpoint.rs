//! Our model checkpoints (f32 or int8, the config in the safetensors metadata) on arbitrary bytes:
//! `Model::load` refuses with an error naming the file, or loads a model that runs a forward on a
//! short batch without panicking.
#![no_main]

use anvil::models::Model;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    anvil_fuzz::load_file(data, "model.safetensors", |p| Model::load(p), |mut m| {
        let v = m.config().vocab_size as u32;
        let ids: Vec<u32> = (0..4u32).map(|i| i % v.max(1)).collect();
        m.graph().set_grad_enabled(false);
        let _ = m.forward(&ids, 1, None);
    });
});
