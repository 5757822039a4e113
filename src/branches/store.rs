//! Saving and loading the trunk and each branch on its own, as safetensors files written to a
//! temporary name and renamed into place. A branch file holds `lora.a`, `lora.b`, `head.weight`,
//! `head.bias` and its name, labels, rank and alpha in the metadata.

use super::{System, SystemConfig};
use crate::io::safetensors::{self, SafeTensors};
use crate::json::{self, Value};
use crate::models::{Error, FileSource, Result};

use crate::tensor::Tensor;
use std::path::Path;

/// Metadata key of the trunk's config.
pub const TRUNK_KEY: &str = "anvil.branches.trunk";
/// Metadata key of a branch's description.
pub const BRANCH_KEY: &str = "anvil.branches.branch";

fn bad(path: &Path, what: &str) -> Error {
    Error::Config {
        detail: format!("{}: {what}", path.display()),
    }
}

/// The metadata value of `key` parsed as JSON.
fn meta(file: &SafeTensors, key: &str) -> Result<Value> {
    let path = file.path();
    let text = file
        .metadata()
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| {
            bad(
                path,
                &format!("no `{key}` metadata (not a file of this kind)"),
            )
        })?;
    json::parse_str(text).map_err(|e| bad(path, &format!("`{key}` metadata: {e}")))
}

fn get_usize(v: &Value, key: &str, path: &Path) -> Result<usize> {
    v.get(key)
        .and_then(Value::as_u64)
        .map(|x| x as usize)
        .ok_or_else(|| bad(path, &format!("metadata lacks a whole number `{key}`")))
}

fn get_f32(v: &Value, key: &str, path: &Path) -> Result<f32> {
    v.get(key)
        .and_then(Value::as_f64)
        .map(|x| x as f32)
        .ok_or_else(|| bad(path, &format!("metadata lacks a number `{key}`")))
}

impl SystemConfig {
    fn to_json(self) -> String {
        format!(
            "{{\"d\":{},\"layers\":{},\"n_experts\":{},\"top_k\":{},\"expert_ff\":{},\
             \"dense\":{},\"rank\":{},\"alpha\":{}}}",
            self.d,
            self.layers,
            self.n_experts,
            self.top_k,
            self.expert_ff,
            self.dense,
            self.rank,
            self.alpha
        )
    }

    fn from_json(v: &Value, path: &Path) -> Result<Self> {
        let c = SystemConfig {
            d: get_usize(v, "d", path)?,
            layers: get_usize(v, "layers", path)?,
            n_experts: get_usize(v, "n_experts", path)?,
            top_k: get_usize(v, "top_k", path)?,
            expert_ff: get_usize(v, "expert_ff", path)?,
            dense: v
                .get("dense")
                .and_then(Value::as_bool)
                .ok_or_else(|| bad(path, "metadata lacks a boolean `dense`"))?,
            rank: get_usize(v, "rank", path)?,
            alpha: get_f32(v, "alpha", path)?,
        };
        c.validate().map_err(|e| bad(path, &e.to_string()))?;
        Ok(c)
    }
}

impl System {
    /// Writes the trunk's parameters and config to `path` (atomically).
    ///
    /// # Errors
    /// [`Error::Io`] when writing fails.
    pub fn save_trunk(&self, path: impl AsRef<Path>) -> Result<()> {
        let tensors: Vec<(&str, &Tensor)> = self
            .trunk_params()
            .iter()
            .map(|(n, p)| Ok((n.as_str(), self.graph_ref().param_tensor(*p)?)))
            .collect::<Result<_>>()?;
        let config = self.config.to_json();
        safetensors::save(path, &tensors, &[(TRUNK_KEY, config.as_str())])?;
        Ok(())
    }

    /// A system with the trunk of `path` and no branch.
    ///
    /// # Errors
    /// [`Error::Io`] for an unreadable or malformed file; [`Error::Config`] for missing or bad
    /// metadata; [`Error::MissingTensor`], [`Error::UnexpectedTensor`], [`Error::TensorShape`].
    pub fn load_trunk(path: impl AsRef<Path>) -> Result<Self> {
        let file = SafeTensors::open(path.as_ref())?;
        let config = SystemConfig::from_json(&meta(&file, TRUNK_KEY)?, file.path())?;
        let mut src = FileSource::new(&file, str::to_string);
        let sys = System::build(config, &mut src)?;
        src.check_all_used(|_| false)?;
        Ok(sys)
    }

    /// Writes branch `idx` alone to `path` (atomically).
    ///
    /// # Errors
    /// [`Error::Config`] for an unknown branch; [`Error::Io`] when writing fails.
    pub fn save_branch(&self, idx: usize, path: impl AsRef<Path>) -> Result<()> {
        let br = self.branches.get(idx).ok_or_else(|| Error::Config {
            detail: format!("no branch {idx}"),
        })?;
        let strip = format!("branch.{}.", br.name);
        let tensors: Vec<(&str, &Tensor)> = br
            .params
            .iter()
            .map(|(n, p)| {
                let short = n.strip_prefix(&strip).unwrap_or(n);
                Ok((short, self.graph_ref().param_tensor(*p)?))
            })
            .collect::<Result<_>>()?;
        let mut desc = String::from("{\"name\":");
        json::write_string(&mut desc, &br.name);
        desc.push_str(",\"labels\":[");
        for (i, l) in br.labels.iter().enumerate() {
            if i > 0 {
                desc.push(',');
            }
            json::write_string(&mut desc, l);
        }
        desc.push_str(&format!(
            "],\"rank\":{},\"alpha\":{},\"d\":{}}}",
            self.config.rank, self.config.alpha, self.config.d
        ));
        safetensors::save(path, &tensors, &[(BRANCH_KEY, desc.as_str())])?;
        Ok(())
    }

    /// Loads the branch saved in `path` (frozen: [`System::set_trainable`] decides what trains)
    /// and returns its index.
    ///
    /// # Errors
    /// As [`System::load_trunk`]; [`Error::Config`] when its rank, alpha or width differ from
    /// this system's or its name is taken.
    pub fn load_branch(&mut self, path: impl AsRef<Path>) -> Result<usize> {
        let file = SafeTensors::open(path.as_ref())?;
        let p = file.path().to_path_buf();
        let desc = meta(&file, BRANCH_KEY)?;
        let name = desc
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(&p, "metadata lacks a string `name`"))?
            .to_string();
        let labels: Vec<String> = desc
            .get("labels")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().map(|l| l.as_str().map(String::from)).collect())
            .ok_or_else(|| bad(&p, "metadata lacks a string array `labels`"))?;
        let (rank, alpha, d) = (
            get_usize(&desc, "rank", &p)?,
            get_f32(&desc, "alpha", &p)?,
            get_usize(&desc, "d", &p)?,
        );
        let c = self.config;
        if rank != c.rank || alpha != c.alpha || d != c.d {
            return Err(bad(
                &p,
                &format!(
                    "branch has rank {rank}, alpha {alpha}, width {d}; the system has {}, {}, {}",
                    c.rank, c.alpha, c.d
                ),
            ));
        }
        let strip = format!("branch.{name}.");
        let mut src = FileSource::new(&file, |n: &str| {
            n.strip_prefix(strip.as_str()).unwrap_or(n).to_string()
        });
        let idx = self.add_branch_from(&name, &labels, &mut src)?;
        if let Err(e) = src.check_all_used(|_| false) {
            // Leave the system as it was: drop the half-checked branch from the list (its
            // parameters stay in the graph, frozen and unused).
            self.branches.pop();
            return Err(e);
        }
        for (_, pid) in &self.branches[idx].params {
            self.graph.set_requires_grad(*pid, false)?;
        }
        Ok(idx)
    }
}
