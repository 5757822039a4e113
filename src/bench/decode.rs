//! `anvil bench decode`: prefill and token-by-token decode through the key/value cache, batch 1,
//! a 64-token prompt then 64 new tokens (greedy), on random-weight models of three sizes, f32 and
//! int8 weights.

use super::Record;
use crate::generate::argmax;
use crate::models::{Arch, Config, Model};
use std::time::{Duration, Instant};

/// Prompt tokens, then tokens decoded one at a time.
pub const PROMPT: usize = 64;
pub const NEW: usize = 64;

/// A decode benchmark model.
#[derive(Clone, Debug)]
pub struct DecodeModel {
    pub name: &'static str,
    pub config: Config,
}

/// GPT-2 124M, the "tiny" GPT (vocab 4096, 6 layers, d 384, 6 heads) and its 8-expert top-2
/// mixture (Mixtral layout: SwiGLU experts of width 1536, untied head).
pub fn decode_models() -> Vec<DecodeModel> {
    let gpt = |vocab, layers, d, heads, ctx| super::train::gpt2(vocab, d, layers, heads, ctx);
    let tiny = gpt(4096, 6, 384, 6, 256);
    let moe = Config {
        arch: Arch::Mixtral,
        n_experts: 8,
        experts_per_token: 2,
        tie_embeddings: false,
        norm_eps: 1e-5,
        ..tiny.clone()
    };
    vec![
        DecodeModel {
            name: "gpt2-124m",
            config: gpt(50257, 12, 768, 12, 1024),
        },
        DecodeModel {
            name: "tiny",
            config: tiny,
        },
        DecodeModel {
            name: "tiny-moe8x2",
            config: moe,
        },
    ]
}

/// One generation on `m`: the seconds of the prefill and of the whole decode.
///
/// # Errors
/// The model's errors, as text.
pub fn decode_once(m: &mut Model) -> Result<Vec<f64>, String> {
    let prompt: Vec<u32> = (0..PROMPT as u32)
        .map(|i| (i * 7919 + 13) % m.config().vocab_size as u32)
        .collect();
    let once = |m: &mut Model| -> crate::models::Result<Vec<f64>> {
        let mut cache = m.new_cache(1, Some(PROMPT + NEW + 1));
        let t0 = Instant::now();
        let l = m.forward_cached_last(&prompt, &[0], &mut cache)?;
        let v = m.config().vocab_size;
        let vals = m.graph_ref().value(l)?;
        let mut next = argmax(&vals[vals.len() - v..]);
        m.graph().clear();
        let prefill = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        for _ in 0..NEW {
            let l = m.forward_cached(&[next], &[0], &mut cache)?;
            next = argmax(m.graph_ref().value(l)?);
            m.graph().clear();
        }
        Ok(vec![prefill, t1.elapsed().as_secs_f64()])
    };
    once(m).map_err(|e| e.to_string())
}

/// Bytes of weights a decode step reads: every parameter at its storage size, except the
/// embedding tables, of which one row is read (a tied head reads the whole token embedding
/// through the head, so it is counted there), and mixture experts, of which `k` of `E` run.
pub fn weight_bytes_per_token(m: &Model) -> usize {
    let g = m.graph_ref();
    let c = m.config();
    m.params()
        .iter()
        .map(|(name, p)| {
            let Ok(t) = g.param_tensor(*p) else { return 0 };
            let per = match t.dtype() {
                crate::tensor::DType::I8 => 1,
                dt => dt.size(),
            };
            let scales = if per == 1 { 4 * t.shape()[0] } else { 0 };
            let embedding = name.ends_with("wpe.weight")
                || (name.ends_with("embed_tokens.weight") && !m.config().tie_embeddings)
                || (name.ends_with("wte.weight") && m.is_quantized());
            if embedding {
                t.shape().last().copied().unwrap_or(0) * per
            } else if name.contains(".experts.") {
                (t.numel() * per + scales) * c.experts_per_token / c.n_experts.max(1)
            } else {
                t.numel() * per + scales
            }
        })
        .sum()
}

/// A peer generating with the model of the given name: the seconds of its prefill and of its
/// whole decode, as [`decode_once`] reports ours.
pub type DecodePeer<'a> = &'a mut (dyn FnMut(&str) -> Result<Vec<f64>, String> + Send);

/// Prefill and decode records for every model, f32 then int8, plus the decode's weight
/// traffic (`gbps`) and its ceiling: the rate at which this machine reads a buffer of one f32
/// step's weight bytes (`read_ceiling`, measured in turn with the decodes) and the decode
/// tokens/s that rate would allow if a step did nothing but stream its weights
/// (`decode_ceiling`). With a `peer`, its generation runs in turn with ours, round after round,
/// and the records add its figures and our speed-ups over it (`ratio`, per round, median):
/// prefill and decode in f32, the int8 decode against the peer's (f32) decode, and the ceiling's
/// (`f32/ceiling_vs_torch`: the largest f32 decode speed-up this machine's memory allows).
///
/// `only`: the models whose name contains it.
///
/// # Errors
/// The model's or the peer's errors, as text.
pub fn decode_records(
    threads: usize,
    budget: Duration,
    only: Option<&str>,
    mut peer: Option<DecodePeer>,
) -> Result<Vec<Record>, String> {
    let mut out = Vec::new();
    for dm in decode_models() {
        if only.is_some_and(|o| !dm.name.contains(o)) {
            continue;
        }
        let mut f32m = Model::new(dm.config.clone(), 1).map_err(|e| e.to_string())?;
        // As `anvil generate` runs it.
        f32m.prepare_decode().map_err(|e| e.to_string())?;
        let mut int8m = Model::new(dm.config.clone(), 1).map_err(|e| e.to_string())?;
        int8m.quantize().map_err(|e| e.to_string())?;
        // The read ceiling: a buffer of one f32 decode step's weight bytes, read in turn with
        // the decodes, its seconds per pass scaled to the NEW steps of a decode.
        let bytes = weight_bytes_per_token(&f32m);
        let mut pass = super::read_pass(bytes, threads);
        let r = {
            let mut a = || decode_once(&mut f32m);
            let mut b = || decode_once(&mut int8m);
            let mut c = || Ok(vec![pass() * NEW as f64]);
            let mut theirs = peer.as_mut().map(|p| move || p(dm.name));
            let mut runs: Vec<super::Timed> = vec![&mut a, &mut b, &mut c];
            if let Some(t) = theirs.as_mut() {
                runs.push(t);
            }
            super::rounds(&mut runs, budget, 3)?
        };
        let shape = format!("{PROMPT}+{NEW}");
        let mut rec = |name: String, unit, value, seconds| {
            out.push(Record {
                name,
                shape: shape.clone(),
                threads,
                unit,
                value,
                seconds,
                spread: None,
            })
        };
        let ceiling = r.median(2, 0);
        rec(
            format!("anvil/{}-f32/read_ceiling", dm.name),
            "gbps",
            bytes as f64 * NEW as f64 / ceiling / 1e9,
            ceiling,
        );
        rec(
            format!("anvil/{}-f32/decode_ceiling", dm.name),
            "tokens_per_s",
            NEW as f64 / ceiling,
            ceiling,
        );
        let engines = [
            (format!("anvil/{}-f32", dm.name), Some(&f32m), 0),
            (format!("anvil/{}-int8", dm.name), Some(&int8m), 1),
            (format!("torch/{}-f32", dm.name), None, 3),
        ];
        for (tag, model, run) in engines.into_iter().filter(|e| e.2 < r.samples.len()) {
            let (p, d) = (r.median(run, 0), r.median(run, 1));
            rec(
                format!("{tag}/prefill"),
                "tokens_per_s",
                PROMPT as f64 / p,
                p,
            );
            rec(format!("{tag}/decode"), "tokens_per_s", NEW as f64 / d, d);
            if let Some(m) = model {
                let bytes = weight_bytes_per_token(m) as f64;
                rec(
                    format!("{tag}/decode_weights"),
                    "gbps",
                    bytes * NEW as f64 / d / 1e9,
                    d,
                );
            }
        }
        if r.samples.len() > 3 {
            let tag = format!("anvil/{}", dm.name);
            // The ceiling's one figure is its NEW steps' seconds: against the peer's decode.
            for (name, ours, theirs) in [
                ("f32/prefill_vs_torch", (0, 0), (3, 0)),
                ("f32/decode_vs_torch", (0, 1), (3, 1)),
                ("int8/decode_vs_torch_f32", (1, 1), (3, 1)),
                ("f32/ceiling_vs_torch", (2, 0), (3, 1)),
            ] {
                out.push(Record {
                    name: format!("{tag}-{name}"),
                    shape: shape.clone(),
                    threads,
                    unit: "ratio",
                    value: r.speedup(ours, theirs),
                    seconds: r.median(ours.0, ours.1),
                    spread: Some(r.spread(ours, theirs)),
                });
            }
        }
    }
    Ok(out)
}
