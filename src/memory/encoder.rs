//! Our own sentence embeddings as the memory's [`Embedder`]: a [`SentenceEmbedder`] (e.g. the
//! real all-MiniLM-L6-v2) behind a lock, since embedding runs the encoder's graph.

use super::{Embedder, Error};
use crate::models::SentenceEmbedder;
use std::path::Path;
use std::sync::Mutex;

/// A sentence-transformers encoder used for memory retrieval.
pub struct EncoderEmbedder {
    inner: Mutex<SentenceEmbedder>,
    name: String,
}

impl EncoderEmbedder {
    /// Loads the sentence-transformers model directory `dir`.
    ///
    /// # Errors
    /// [`Error::Embed`] naming what could not be loaded.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, Error> {
        let dir = dir.as_ref();
        let e = SentenceEmbedder::load(dir).map_err(|e| Error::Embed(e.to_string()))?;
        let name = dir
            .canonicalize()
            .unwrap_or_else(|_| dir.to_path_buf())
            .display()
            .to_string();
        Ok(EncoderEmbedder {
            inner: Mutex::new(e),
            name: format!("encoder:{name}"),
        })
    }
}

impl Embedder for EncoderEmbedder {
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, Error> {
        let mut e = self
            .inner
            .lock()
            .map_err(|_| Error::Embed("the encoder panicked earlier".into()))?;
        e.embed(texts, |_, _| {})
            .map_err(|e| Error::Embed(e.to_string()))
    }

    fn id(&self) -> String {
        self.name.clone()
    }
}
