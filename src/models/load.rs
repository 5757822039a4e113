//! Loading: HF checkpoint directories (`config.json` + `model.safetensors`) and our own
//! checkpoints (one safetensors file with the config in its metadata); saving our checkpoints.
//!
//! f32 tensors are used in place from the memory map (no copy until a parameter is updated);
//! f16 and bf16 tensors convert to f32 on load. Every tensor the model needs must be present with
//! the shape the config implies, and every tensor in the file must be used: a missing, extra or
//! mis-shaped tensor is an error naming the file and the tensor.

use super::{Config, Error, Model, Result};
use crate::io::safetensors::{self, SCALES_SUFFIX, SafeTensors};
use crate::nn::{Init, Source};
use crate::tensor::{DType, Tensor};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The metadata key under which our checkpoints keep the model config (JSON).
pub const CHECKPOINT_CONFIG_KEY: &str = "anvil.config";

/// Parameters read from a safetensors file, by name, with what was used remembered: the one
/// loader behind models, the encoder and the branches. f32 tensors stay mapped, f16 / bf16
/// convert; a missing or mis-shaped tensor is an error naming the file and the tensor.
pub(crate) struct FileSource<'a> {
    file: &'a SafeTensors,
    /// The stored name of a requested one (a prefix added or stripped: GPT-2 checkpoints on the
    /// hub have no `transformer.`, BERT ones may have `bert.`).
    rename: Box<dyn Fn(&str) -> String + 'a>,
    used: HashSet<String>,
}

impl<'a> FileSource<'a> {
    pub(crate) fn new(file: &'a SafeTensors, rename: impl Fn(&str) -> String + 'a) -> Self {
        FileSource {
            file,
            rename: Box::new(rename),
            used: HashSet::new(),
        }
    }

    /// [`Error::UnexpectedTensor`] for the first tensor of the file that nothing asked for and
    /// `ignorable` does not excuse.
    pub(crate) fn check_all_used(&self, ignorable: impl Fn(&str) -> bool) -> Result<()> {
        match self
            .file
            .names()
            .into_iter()
            .find(|n| !self.used.contains(*n) && !ignorable(n))
        {
            Some(extra) => Err(Error::UnexpectedTensor {
                path: self.file.path().to_path_buf(),
                name: extra.to_string(),
            }),
            None => Ok(()),
        }
    }
}

impl FileSource<'_> {
    /// Up to [`NEARBY_SHOWN`] unused tensors of the file sharing the longest dotted prefix with
    /// `name` (any at all when none shares one), sorted: what a missing tensor's error suggests.
    fn nearby(&self, name: &str) -> Vec<String> {
        let unused: Vec<&str> = self
            .file
            .names()
            .into_iter()
            .filter(|n| !self.used.contains(*n))
            .collect();
        let cuts = name.match_indices('.').map(|(i, _)| i + 1).rev();
        for cut in cuts.chain([0]) {
            let mut near: Vec<String> = unused
                .iter()
                .filter(|n| n.starts_with(&name[..cut]))
                .map(|n| n.to_string())
                .collect();
            if !near.is_empty() {
                near.sort();
                near.truncate(NEARBY_SHOWN);
                return near;
            }
        }
        Vec::new()
    }
}

/// Unused tensors a missing tensor's error lists.
const NEARBY_SHOWN: usize = 3;

impl Source for FileSource<'_> {
    fn get(&mut self, name: &str, shape: &[usize], _init: Init) -> Result<Tensor> {
        let stored = (self.rename)(name);
        let path = self.file.path().to_path_buf();
        let info = self.file.info(&stored).map_err(|_| Error::MissingTensor {
            path: path.clone(),
            nearby: self.nearby(&stored),
            first: self.used.is_empty(),
            name: stored.clone(),
        })?;
        if info.shape != shape {
            return Err(Error::TensorShape {
                path,
                name: stored,
                expected: shape.to_vec(),
                actual: info.shape.clone(),
            });
        }
        let t = self.file.tensor(&stored)?;
        self.used.insert(stored);
        Ok(match t.dtype() {
            DType::F32 => t,
            _ => t.to_f32(),
        })
    }

    fn get_int8(&mut self, name: &str, out: usize, inp: usize) -> Result<Option<Tensor>> {
        let stored = (self.rename)(name);
        let Ok(info) = self.file.info(&stored) else {
            return Ok(None);
        };
        if info.dtype != safetensors::FileDtype::I8 {
            return Ok(None);
        }
        if info.shape != [out, inp] {
            return Err(Error::TensorShape {
                path: self.file.path().to_path_buf(),
                name: stored,
                expected: vec![out, inp],
                actual: info.shape.clone(),
            });
        }
        let t = self.file.tensor(&stored)?;
        self.used.insert(stored);
        Ok(Some(t))
    }

    fn locate(&self, name: &str, source: crate::tensor::Error) -> Error {
        Error::Io(crate::io::Error::Tensor {
            path: self.file.path().to_path_buf(),
            name: (self.rename)(name),
            source,
        })
    }
}

fn strip_transformer(name: &str) -> String {
    name.strip_prefix("transformer.")
        .unwrap_or(name)
        .to_string()
}

/// Tensors a checkpoint may hold that are not parameters: GPT-2's causal-mask buffers.
fn ignorable(config: &Config, name: &str) -> bool {
    name.ends_with(".attn.bias") && config.arch == super::Arch::Gpt2
        || name.ends_with(".attn.masked_bias")
        || name.ends_with(SCALES_SUFFIX)
        // Optimizer state in a training checkpoint.
        || name.starts_with(crate::train::OPTIMIZER_PREFIX)
        // A tied head saved beside the embedding it equals.
        || (config.tie_embeddings && name == "lm_head.weight")
}

impl Model {
    /// Loads a HF checkpoint directory (`config.json` + `model.safetensors`) or one of our
    /// checkpoint files (see [`Model::save`]).
    ///
    /// # Errors
    /// [`Error::Read`] when the config cannot be read; [`Error::Config`] for an unusable config;
    /// [`Error::Io`] for a malformed tensor file; [`Error::MissingTensor`],
    /// [`Error::UnexpectedTensor`], [`Error::TensorShape`] naming the tensor.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if path.is_dir() {
            let cfg_path = path.join("config.json");
            let text = std::fs::read_to_string(&cfg_path).map_err(|source| Error::Read {
                path: cfg_path.clone(),
                source,
            })?;
            let config = Config::from_json(&text).map_err(|e| at(&cfg_path, e))?;
            let weights = path.join("model.safetensors");
            if !weights.exists() && path.join("model.safetensors.index.json").exists() {
                return Err(Error::Config {
                    detail: format!(
                        "{}: sharded checkpoints are not supported; merge the shards into one model.safetensors",
                        path.display()
                    ),
                });
            }
            let file = SafeTensors::open(&weights)?;
            Self::from_file(config, &file)
        } else {
            let file = SafeTensors::open(path)?;
            let text = file
                .metadata()
                .iter()
                .find_map(|(k, v)| (k == CHECKPOINT_CONFIG_KEY).then_some(v.as_str()))
                .ok_or_else(|| Error::Config {
                    detail: format!(
                        "{}: no `{CHECKPOINT_CONFIG_KEY}` in the metadata: not an Anvil checkpoint (for a HF checkpoint, give its directory)",
                        path.display()
                    ),
                })?;
            let config = Config::from_json(text).map_err(|e| at(path, e))?;
            Self::from_file(config, &file)
        }
    }

    /// The model of `config` with its weights from `file`.
    ///
    /// # Errors
    /// As [`Model::load`].
    pub fn from_file(config: Config, file: &SafeTensors) -> Result<Self> {
        let hub_gpt2 = config.arch == super::Arch::Gpt2
            && file.info("transformer.wte.weight").is_err()
            && file.info("wte.weight").is_ok();
        let mut src = FileSource::new(file, move |n: &str| {
            if hub_gpt2 {
                strip_transformer(n)
            } else {
                n.to_string()
            }
        });
        let model = Model::build(config, &mut src)?;
        src.check_all_used(|n| ignorable(&model.config, n))?;
        Ok(model)
    }

    /// Writes every parameter under its name, with the config in the metadata, to a temporary
    /// file renamed over `path` (an interrupted save leaves the old file intact).
    ///
    /// # Errors
    /// [`Error::Io`] when writing fails; [`Error::Config`] for a model quantized per block of
    /// 32, which has no checkpoint form.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        if self.quant_format() == Some(crate::kernels::qgemm::QFormat::Block32) {
            return Err(Error::Config {
                detail: "int8 weights per block of 32 have no checkpoint form; quantize per channel to save".into(),
            });
        }
        // Weights laid out for decoding (`Model::prepare_decode`) go back to their checkpoint form.
        let owned: Vec<(&str, std::borrow::Cow<'_, Tensor>)> = self
            .params
            .iter()
            .map(|(n, p)| Ok((n.as_str(), self.graph.checkpoint_tensor(*p)?)))
            .collect::<Result<_>>()?;
        let tensors: Vec<(&str, &Tensor)> = owned.iter().map(|(n, t)| (*n, t.as_ref())).collect();
        let config = self.config.to_json();
        safetensors::save(
            path,
            &tensors,
            &[(CHECKPOINT_CONFIG_KEY, config.as_str()), ("format", "pt")],
        )?;
        Ok(())
    }
}

/// A config error located in `path`.
fn at(path: &Path, e: Error) -> Error {
    match e {
        Error::Config { detail } => Error::Config {
            detail: format!("{}: {detail}", PathBuf::from(path).display()),
        },
        e => e,
    }
}
