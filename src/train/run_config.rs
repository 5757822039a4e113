//! The options of an `anvil train` run: `key = value` config files and command-line flags
//! (flags win), resolved into a [`RunConfig`] with every value checked. Each refusal names where
//! the value came from (the flag, or the file and line), the key and what is wrong.
//!
//! A config file holds one `key = value` per line; `#` starts a comment, blank lines are skipped,
//! keys may carry the flag's `--`, a repeated key keeps its last value:
//!
//! ```text
//! # a tiny mixture
//! d-model = 32
//! experts = 4
//! top-k = 2
//! ```

use crate::corpus::ASCII_VOCAB;
use crate::models::{Arch, Config};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Every key a config file or a flag may set (the flag is `--key`).
pub const RUN_KEYS: &[&str] = &[
    "out",
    "steps",
    "batch",
    "seq",
    "lr",
    "warmup",
    "seed",
    "d-model",
    "layers",
    "heads",
    "d-ff",
    "experts",
    "top-k",
    "aux",
    "eval-every",
    "eval-n",
    "data",
    "vocab",
    "resume",
];

/// Where a value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The command line (`--key value`).
    Flag,
    /// Line `line` (from 1) of a config file.
    File { path: PathBuf, line: usize },
    /// Not given: the documented default.
    Default,
}

/// What reading a config file or resolving the options refused.
#[derive(Debug)]
#[non_exhaustive]
pub enum RunConfigError {
    /// The config file could not be read (missing, unreadable, not UTF-8).
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A line of the file is not `key = value`.
    Syntax { path: PathBuf, line: usize },
    /// A key (in the file or a flag) that is not an option.
    UnknownKey { origin: Origin, key: String },
    /// A value that cannot be read or does not fit: `key`'s value from `origin`.
    Value {
        origin: Origin,
        key: String,
        detail: String,
    },
}

impl fmt::Display for RunConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunConfigError::Read { path, source } => write!(f, "{}: {source}", path.display()),
            RunConfigError::Syntax { path, line } => {
                write!(f, "{}:{line}: expected `key = value`", path.display())
            }
            RunConfigError::UnknownKey { origin, key } => match origin {
                Origin::File { path, line } => {
                    write!(f, "{}:{line}: unknown key `{key}`", path.display())
                }
                _ => write!(f, "unknown option `--{key}`"),
            },
            RunConfigError::Value {
                origin,
                key,
                detail,
            } => write!(f, "{}: {detail}", Where(origin, key)),
        }
    }
}

impl std::error::Error for RunConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RunConfigError::Read { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// `--key`, `path:line: key` or `key (default)`: where a value came from, for messages.
struct Where<'a>(&'a Origin, &'a str);

impl fmt::Display for Where<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Origin::Flag => write!(f, "--{}", self.1),
            Origin::File { path, line } => write!(f, "{}:{line}: {}", path.display(), self.1),
            Origin::Default => write!(f, "{} (default)", self.1),
        }
    }
}

/// One `key = value` line.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    key: String,
    value: String,
    line: usize,
}

/// A parsed config file: its `key = value` lines, every key known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigFile {
    path: PathBuf,
    entries: Vec<Entry>,
}

impl ConfigFile {
    /// Reads and parses the file at `path`.
    ///
    /// # Errors
    /// [`RunConfigError::Read`] when it cannot be read as UTF-8 text; as [`ConfigFile::parse`].
    pub fn read(path: impl AsRef<Path>) -> Result<Self, RunConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| RunConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses `text`; `path` names the file in errors.
    ///
    /// # Errors
    /// [`RunConfigError::Syntax`] for a line without `=`, [`RunConfigError::UnknownKey`] for a
    /// key not in [`RUN_KEYS`] (`config` included: files do not nest).
    pub fn parse(text: &str, path: impl AsRef<Path>) -> Result<Self, RunConfigError> {
        let path = path.as_ref().to_path_buf();
        let mut entries = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let line = n + 1;
            let body = raw.split('#').next().unwrap_or("").trim();
            if body.is_empty() {
                continue;
            }
            let Some((k, v)) = body.split_once('=') else {
                return Err(RunConfigError::Syntax { path, line });
            };
            let key = k.trim().trim_start_matches("--").to_string();
            if !RUN_KEYS.contains(&key.as_str()) {
                let origin = Origin::File { path, line };
                return Err(RunConfigError::UnknownKey { origin, key });
            }
            let value = v.trim().to_string();
            entries.push(Entry { key, value, line });
        }
        Ok(ConfigFile { path, entries })
    }

    /// The file's name as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every `(key, value)` line, in file order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str()))
    }

    /// The last value of `key` in the file, with its line.
    pub fn get(&self, key: &str) -> Option<(&str, usize)> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.key == key)
            .map(|e| (e.value.as_str(), e.line))
    }
}

/// The options of a training run, every value checked.
#[derive(Clone, Debug, PartialEq)]
pub struct RunConfig {
    /// Where the checkpoint, metrics and plots go.
    pub out: PathBuf,
    pub steps: u64,
    /// Rows per step.
    pub batch: usize,
    /// Tokens per row.
    pub seq: usize,
    /// Peak learning rate (warmup, then cosine to 10%).
    pub lr: f64,
    pub warmup: u64,
    /// Model, data and evaluation seed.
    pub seed: u64,
    /// Validation loss every `eval_every` steps.
    pub eval_every: u64,
    /// Prompts per domain for the exact-match accuracy.
    pub eval_n: usize,
    /// Text files to train a BPE and the model on (empty: the built-in corpus).
    pub data: Vec<PathBuf>,
    /// BPE vocabulary size with `data`.
    pub vocab: usize,
    /// A checkpoint to continue from.
    pub resume: Option<PathBuf>,
    /// The ExpertModel (its `vocab_size` the built-in corpus's; the caller sets the data's).
    pub model: Config,
}

/// Values by key: the last flag, else the file, else nothing.
struct Lookup<'a> {
    flags: &'a [(String, String)],
    file: Option<&'a ConfigFile>,
}

impl Lookup<'_> {
    fn get(&self, key: &str) -> Option<(&str, Origin)> {
        if let Some((_, v)) = self.flags.iter().rev().find(|(k, _)| k == key) {
            return Some((v.as_str(), Origin::Flag));
        }
        let file = self.file?;
        file.get(key).map(|(v, line)| {
            let path = file.path.clone();
            (v, Origin::File { path, line })
        })
    }

    fn origin(&self, key: &str) -> Origin {
        self.get(key).map_or(Origin::Default, |(_, o)| o)
    }

    /// `key`'s value parsed as `T` (`what` names the type in the error), or `default`.
    fn parse<T: FromStr>(&self, key: &str, what: &str, default: T) -> Result<T, RunConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some((v, origin)) => v.parse().map_err(|_| RunConfigError::Value {
                origin,
                key: key.to_string(),
                detail: format!("cannot read `{v}` as {what}"),
            }),
        }
    }

    fn count(&self, key: &str, default: usize) -> Result<usize, RunConfigError> {
        self.parse(key, "a whole number", default)
    }

    fn positive(&self, key: &str, default: usize) -> Result<usize, RunConfigError> {
        let v = self.count(key, default)?;
        if v == 0 {
            return Err(self.bad(key, "must be at least 1".into()));
        }
        Ok(v)
    }

    /// A path: non-empty after trimming.
    fn path(&self, key: &str) -> Result<Option<PathBuf>, RunConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(("", _)) => Err(self.bad(key, "needs a path".into())),
            Some((v, _)) => Ok(Some(PathBuf::from(v))),
        }
    }

    fn bad(&self, key: &str, detail: String) -> RunConfigError {
        RunConfigError::Value {
            origin: self.origin(key),
            key: key.to_string(),
            detail,
        }
    }

    /// Of two keys whose values clash, the one given explicitly (the first when both are).
    fn blame<'k>(&self, a: &'k str, b: &'k str) -> &'k str {
        if self.get(a).is_none() && self.get(b).is_some() {
            b
        } else {
            a
        }
    }

    /// ` (--key)`, ` (file:3)` or ` (default)`: the origin of a key named in the message of
    /// another (`blamed`, whose origin leads the message: nothing).
    fn origin_note(&self, key: &str, blamed: &str) -> String {
        if key == blamed {
            return String::new();
        }
        match self.origin(key) {
            Origin::Flag => format!(" (--{key})"),
            Origin::File { path, line } => format!(" ({}:{line})", path.display()),
            Origin::Default => " (default)".into(),
        }
    }
}

impl RunConfig {
    /// The options of `flags` (`(key, value)` pairs without `--`, later ones win), falling back
    /// to `file`, then to the defaults of `anvil train --help`.
    ///
    /// # Errors
    /// [`RunConfigError::UnknownKey`] for a flag not in [`RUN_KEYS`]; [`RunConfigError::Value`]
    /// for a value that does not parse, is out of range, clashes with another (d-model and heads,
    /// experts and top-k), names a file that does not exist (`data`, `resume`), or makes a model
    /// whose size overflows.
    pub fn resolve(
        flags: &[(String, String)],
        file: Option<&ConfigFile>,
    ) -> Result<Self, RunConfigError> {
        if let Some((k, _)) = flags.iter().find(|(k, _)| !RUN_KEYS.contains(&k.as_str())) {
            let (origin, key) = (Origin::Flag, k.clone());
            return Err(RunConfigError::UnknownKey { origin, key });
        }
        let o = Lookup { flags, file };
        let model = model(&o)?;
        let seq = o.positive("seq", 64)?;
        let batch = o.positive("batch", 16)?;
        let lr: f64 = o.parse("lr", "a number", 4e-3)?;
        if !(lr > 0.0 && lr.is_finite()) {
            return Err(o.bad("lr", format!("must be a positive number, not {lr}")));
        }
        let data = match o.get("data") {
            None => Vec::new(),
            Some((v, _)) => v
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .collect(),
        };
        if let Some(p) = data.iter().find(|p| !p.is_file()) {
            let detail = format!("{} is not a readable file", p.display());
            return Err(o.bad("data", detail));
        }
        let resume = o.path("resume")?;
        if let Some(r) = resume.as_ref().filter(|r| !r.is_file()) {
            return Err(o.bad("resume", format!("{} does not exist", r.display())));
        }
        let rc = RunConfig {
            out: o.path("out")?.unwrap_or_else(|| PathBuf::from("anvil-run")),
            steps: o.positive("steps", 800)? as u64,
            batch,
            seq,
            lr,
            warmup: o.parse("warmup", "a whole number", 30)?,
            seed: o.parse("seed", "a whole number", 1)?,
            eval_every: o.positive("eval-every", 50)? as u64,
            eval_n: o.count("eval-n", 100)?,
            data,
            vocab: o.positive("vocab", 2048)?,
            resume,
            model,
        };
        check_size(&o, &rc)?;
        Ok(rc)
    }

    /// Reads the config file at `path` alone (no flags).
    ///
    /// # Errors
    /// As [`ConfigFile::read`] and [`RunConfig::resolve`].
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, RunConfigError> {
        Self::resolve(&[], Some(&ConfigFile::read(path)?))
    }

    /// A config file that resolves to this run again.
    pub fn to_text(&self) -> String {
        let m = &self.model;
        let data: Vec<String> = self.data.iter().map(|p| p.display().to_string()).collect();
        let mut s = format!(
            "out = {}\nsteps = {}\nbatch = {}\nseq = {}\nlr = {}\nwarmup = {}\nseed = {}\n\
             d-model = {}\nlayers = {}\nheads = {}\nd-ff = {}\nexperts = {}\ntop-k = {}\naux = {}\n\
             eval-every = {}\neval-n = {}\nvocab = {}\n",
            self.out.display(),
            self.steps,
            self.batch,
            self.seq,
            self.lr,
            self.warmup,
            self.seed,
            m.d_model,
            m.n_layers,
            m.n_heads,
            m.d_ff,
            m.n_experts,
            m.experts_per_token,
            m.router_aux_loss_coef,
            self.eval_every,
            self.eval_n,
            self.vocab,
        );
        if !data.is_empty() {
            s += &format!("data = {}\n", data.join(","));
        }
        if let Some(r) = &self.resume {
            s += &format!("resume = {}\n", r.display());
        }
        s
    }
}

/// The ExpertModel of the model keys.
fn model(o: &Lookup) -> Result<Config, RunConfigError> {
    let (d, heads) = (o.positive("d-model", 128)?, o.positive("heads", 4)?);
    if !d.is_multiple_of(heads) {
        let key = o.blame("d-model", "heads");
        let detail = format!(
            "d-model {d}{} is not a multiple of heads {heads}{}",
            o.origin_note("d-model", key),
            o.origin_note("heads", key)
        );
        return Err(o.bad(key, detail));
    }
    let experts = o.count("experts", 4)?;
    let top_k = o.count("top-k", 2)?;
    if experts > 0 && !(1..=experts).contains(&top_k) {
        let key = o.blame("top-k", "experts");
        let detail = format!(
            "top-k {top_k}{} must be in 1..={experts} (experts{})",
            o.origin_note("top-k", key),
            o.origin_note("experts", key)
        );
        return Err(o.bad(key, detail));
    }
    let aux: f32 = o.parse("aux", "a number", 0.01)?;
    if !(aux >= 0.0 && aux.is_finite()) {
        return Err(o.bad("aux", format!("must be a finite number >= 0, not {aux}")));
    }
    let seq = o.positive("seq", 64)?;
    let config = Config {
        arch: Arch::Expert,
        d_model: d,
        n_layers: o.positive("layers", 4)?,
        n_heads: heads,
        n_kv_heads: heads,
        head_dim: d / heads,
        d_ff: o.positive("d-ff", 256)?,
        max_seq_len: seq.max(128),
        n_experts: experts,
        experts_per_token: if experts > 0 { top_k } else { 0 },
        router_aux_loss_coef: aux,
        dropout: 0.0,
        ..Config::expert(ASCII_VOCAB)
    };
    config
        .validate()
        .map_err(|e| o.bad(o.blame("d-model", "heads"), e.to_string()))?;
    Ok(config)
}

/// Refuses a run whose parameter or activation byte counts overflow the address space (they
/// would overflow the size arithmetic, or abort on allocation, long before training).
fn check_size(o: &Lookup, rc: &RunConfig) -> Result<(), RunConfigError> {
    let m = &rc.model;
    let vocab = rc.vocab.max(ASCII_VOCAB);
    let ffn = m.n_experts.max(1).checked_mul(3);
    let per_layer = ffn
        .and_then(|f| f.checked_mul(m.d_ff))
        .and_then(|f| f.checked_add(m.d_model.checked_mul(4)?))
        .and_then(|f| f.checked_mul(m.d_model));
    let params = per_layer
        .and_then(|l| l.checked_mul(m.n_layers))
        .and_then(|p| p.checked_add(vocab.checked_mul(m.d_model)?.checked_mul(2)?))
        .and_then(|p| p.checked_add(m.max_seq_len.checked_mul(m.d_model)?));
    // The widest activation: a step's logits, or its expert hidden states.
    let rows = rc.batch.checked_mul(rc.seq);
    let acts = rows.and_then(|r| r.checked_mul(vocab.max(m.d_ff.checked_mul(m.n_experts.max(1))?)));
    let fits = |n: Option<usize>| {
        n.and_then(|n| n.checked_mul(4))
            .is_some_and(|b| b <= isize::MAX as usize)
    };
    if fits(params) && fits(acts) {
        return Ok(());
    }
    // Blame the explicitly given size key with the largest value.
    let keys = [
        "d-model", "d-ff", "layers", "experts", "seq", "batch", "vocab",
    ];
    let key = keys
        .iter()
        .filter_map(|k| o.get(k).map(|(v, _)| (*k, v.parse::<usize>().unwrap_or(0))))
        .max_by_key(|&(_, v)| v)
        .map_or("d-model", |(k, _)| k);
    let detail = format!(
        "too large: d-model {}, layers {}, d-ff {}, experts {}, seq {}, batch {}, vocab {} overflow the size of memory",
        m.d_model, m.n_layers, m.d_ff, m.n_experts, rc.seq, rc.batch, vocab
    );
    Err(o.bad(key, detail))
}
