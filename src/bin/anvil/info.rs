//! `anvil info PATH`: what a checkpoint holds: parameters, memory, config, training state, and
//! any NaN/inf per tensor.

use crate::Flags;
use anvil::io::safetensors::SafeTensors;
use anvil::models::Model;
use anvil::train::TRAIN_STATE_KEY;
use std::path::Path;

const HELP: &str = "\
anvil info: parameters, memory at f32/f16/int8, config and a NaN/inf scan of a model

Usage: anvil info PATH

PATH is a checkpoint file from `anvil train` / `Model::save`, or a HF directory
(config.json + model.safetensors).

Options:
  -h, --help   this help";

fn mib(bytes: usize) -> String {
    format!("{:.2} MiB", bytes as f64 / (1024.0 * 1024.0))
}

pub fn main(args: &[String]) -> Result<(), String> {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{HELP}");
        return Ok(());
    }
    let f = Flags::parse(args, &[], &[])?;
    let [path] = f.positional.as_slice() else {
        return Err("anvil info takes one path; run `anvil info --help`".into());
    };
    let path = Path::new(path);
    if !path.exists() {
        return Err(format!("{}: no such file or directory", path.display()));
    }
    let model = Model::load(path).map_err(|e| e.to_string())?;
    let c = model.config();
    println!("{}: {}", path.display(), c.arch.name());
    println!(
        "parameters: {} total, {} non-embedding",
        model.num_params(false),
        model.num_params(true)
    );
    let fp = model.footprint();
    println!(
        "memory: f32 {}, f16 {}, int8 {}",
        mib(fp.f32),
        mib(fp.f16),
        mib(fp.int8)
    );
    if path.is_file()
        && let Ok(file) = SafeTensors::open(path)
        && let Some((_, state)) = file.metadata().iter().find(|(k, _)| k == TRAIN_STATE_KEY)
        && let Ok(v) = anvil::json::parse_str(state)
    {
        println!(
            "training checkpoint: step {}",
            v.get("step")
                .and_then(anvil::json::Value::as_u64)
                .unwrap_or(0)
        );
    }
    println!("config: {}", c.to_json());
    let g = model.graph_ref();
    let mut bad = 0;
    for (name, p) in model.params() {
        let t = g.param_tensor(*p).map_err(|e| e.to_string())?;
        let v = t.as_slice();
        let nan = v.iter().filter(|x| x.is_nan()).count();
        let inf = v.iter().filter(|x| x.is_infinite()).count();
        if nan + inf > 0 {
            bad += 1;
            println!("  {name} {:?}: {nan} NaN, {inf} inf", t.shape());
        }
    }
    if bad == 0 {
        println!(
            "non-finite values: none in {} tensors",
            model.params().len()
        );
    } else {
        println!(
            "non-finite values: in {bad} of {} tensors",
            model.params().len()
        );
    }
    Ok(())
}
