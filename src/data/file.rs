//! The token file: an atomic streaming writer, a validating memory-mapped reader, and the
//! text-to-tokens pass that streams files larger than memory.

use super::{Error, Result};
use crate::tensor::{Mmap, map_file};
use crate::tokenizer::Tokenizer;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The first eight bytes of every token file.
pub const MAGIC: &[u8; 8] = b"ANVILTOK";
/// The format version this build reads and writes.
pub const VERSION: u32 = 1;
/// Header bytes before the first id.
pub const HEADER_LEN: usize = 32;

/// Text read per tokenizer call when streaming a file (cut at a line end).
const CHUNK_BYTES: usize = 1 << 20;

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn header(width: u32, count: u64, vocab: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&width.to_le_bytes());
    h[16..24].copy_from_slice(&count.to_le_bytes());
    h[24..32].copy_from_slice(&vocab.to_le_bytes());
    h
}

/// Writes ids to a temporary file beside the target; [`TokenWriter::finish`] writes the count
/// into the header and renames the file into place, so a reader never sees a partial file.
pub struct TokenWriter {
    out: BufWriter<File>,
    tmp: PathBuf,
    path: PathBuf,
    width: u32,
    vocab: u64,
    count: u64,
}

impl TokenWriter {
    /// A writer for ids below `vocab_size`: two bytes each when they fit, else four.
    ///
    /// # Errors
    /// [`Error::Io`] when the temporary file cannot be created; [`Error::Config`] for a
    /// vocabulary of 0 or above `u32`.
    pub fn create(path: impl AsRef<Path>, vocab_size: usize) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if vocab_size == 0 || vocab_size as u64 > u64::from(u32::MAX) + 1 {
            return Err(Error::Config {
                detail: format!("vocabulary size {vocab_size} cannot be stored as token ids"),
            });
        }
        let width = if vocab_size <= 1 << 16 { 2 } else { 4 };
        let mut name = path
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        name.push(format!(".tmp{}", std::process::id()));
        let tmp = path.with_file_name(name);
        let file = File::create(&tmp).map_err(io_err(&tmp))?;
        let mut out = BufWriter::new(file);
        out.write_all(&header(width, 0, vocab_size as u64))
            .map_err(io_err(&tmp))?;
        Ok(TokenWriter {
            out,
            tmp,
            path,
            width,
            vocab: vocab_size as u64,
            count: 0,
        })
    }

    /// Appends `ids`.
    ///
    /// # Errors
    /// [`Error::Config`] for an id outside the vocabulary; [`Error::Io`] when writing fails.
    pub fn write(&mut self, ids: &[u32]) -> Result<()> {
        if let Some(&bad) = ids.iter().find(|&&i| u64::from(i) >= self.vocab) {
            return Err(Error::Config {
                detail: format!("token id {bad} is outside the vocabulary of {}", self.vocab),
            });
        }
        let mut buf = Vec::with_capacity(ids.len() * self.width as usize);
        for &i in ids {
            if self.width == 2 {
                buf.extend_from_slice(&(i as u16).to_le_bytes());
            } else {
                buf.extend_from_slice(&i.to_le_bytes());
            }
        }
        self.out.write_all(&buf).map_err(io_err(&self.tmp))?;
        self.count += ids.len() as u64;
        Ok(())
    }

    /// Ids written so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Completes the header, syncs, and renames the file into place.
    ///
    /// # Errors
    /// [`Error::Io`] when flushing, syncing or renaming fails (the temporary file is removed).
    pub fn finish(self) -> Result<PathBuf> {
        let TokenWriter {
            out,
            tmp,
            path,
            width,
            vocab,
            count,
        } = self;
        let r = (|| {
            let mut f = out.into_inner().map_err(|e| e.into_error())?;
            f.seek(SeekFrom::Start(0))?;
            f.write_all(&header(width, count, vocab))?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        if let Err(source) = r {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::Io { path, source });
        }
        Ok(path)
    }
}

/// A memory-mapped token file, validated on open.
pub struct TokenFile {
    map: Mmap,
    path: PathBuf,
    width: usize,
    count: usize,
    vocab: usize,
}

impl std::fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenFile")
            .field("path", &self.path)
            .field("width", &self.width)
            .field("count", &self.count)
            .field("vocab", &self.vocab)
            .finish()
    }
}

impl TokenFile {
    /// Maps `path` and checks its header against its length.
    ///
    /// # Errors
    /// [`Error::Io`] when it cannot be opened; [`Error::Format`] naming the first thing wrong:
    /// too short for a header, the magic, the version, the id width, or a length that does not
    /// match the count.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(io_err(&path))?;
        let map = map_file(&file).map_err(io_err(&path))?;
        let bad = |detail: String| Error::Format {
            path: path.clone(),
            detail,
        };
        if map.len() < HEADER_LEN {
            return Err(bad(format!(
                "{} bytes is shorter than the {HEADER_LEN}-byte header",
                map.len()
            )));
        }
        if &map[..8] != MAGIC {
            return Err(bad(format!(
                "magic is {:?}, expected {:?}",
                String::from_utf8_lossy(&map[..8]),
                "ANVILTOK"
            )));
        }
        let u32_at = |o: usize| u32::from_le_bytes(map[o..o + 4].try_into().unwrap_or([0; 4]));
        let u64_at = |o: usize| u64::from_le_bytes(map[o..o + 8].try_into().unwrap_or([0; 8]));
        let version = u32_at(8);
        if version != VERSION {
            return Err(bad(format!(
                "version {version}, this build reads {VERSION}"
            )));
        }
        let width = u32_at(12);
        if width != 2 && width != 4 {
            return Err(bad(format!("id width {width} bytes (must be 2 or 4)")));
        }
        let count = u64_at(16);
        let vocab = u64_at(24);
        let want = (count as u128) * u128::from(width) + HEADER_LEN as u128;
        if want != map.len() as u128 {
            return Err(bad(format!(
                "header says {count} ids of {width} bytes ({want} bytes with the header) but the file has {} bytes",
                map.len()
            )));
        }
        if vocab == 0 || (width == 2 && vocab > 1 << 16) {
            return Err(bad(format!(
                "vocabulary size {vocab} does not fit {width}-byte ids"
            )));
        }
        Ok(TokenFile {
            map,
            path,
            width: width as usize,
            count: count as usize,
            vocab: vocab as usize,
        })
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The vocabulary size recorded by the writer.
    pub fn vocab_size(&self) -> usize {
        self.vocab
    }

    /// Bytes per id (2 or 4).
    pub fn width(&self) -> usize {
        self.width
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Ids `start..start + len` (the range must lie inside the file).
    ///
    /// # Errors
    /// [`Error::Config`] for a range past the end.
    pub fn read(&self, start: usize, len: usize) -> Result<Vec<u32>> {
        if start.checked_add(len).is_none_or(|e| e > self.count) {
            return Err(Error::Config {
                detail: format!(
                    "ids {start}..{} past the end of {} ({} ids)",
                    start.saturating_add(len),
                    self.path.display(),
                    self.count
                ),
            });
        }
        let w = self.width;
        let bytes = &self.map[HEADER_LEN + start * w..HEADER_LEN + (start + len) * w];
        Ok(if w == 2 {
            bytes
                .chunks_exact(2)
                .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]])))
                .collect()
        } else {
            bytes
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        })
    }
}

/// Tokenizes `files` in order into the token file `out`, `separator` (if any) after each file.
/// Each file is read in chunks of about a megabyte cut at a line end, so files larger than
/// memory stream through. Returns the number of ids written.
///
/// # Errors
/// [`Error::Io`] for a file that cannot be read or is not UTF-8 (naming it); the writer's
/// errors.
pub fn encode_files(
    files: &[PathBuf],
    tokenizer: &dyn Tokenizer,
    separator: Option<u32>,
    out: impl AsRef<Path>,
) -> Result<u64> {
    let mut w = TokenWriter::create(out, tokenizer.vocab_size())?;
    for path in files {
        let mut f = File::open(path).map_err(io_err(path))?;
        let mut pending: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; CHUNK_BYTES];
        loop {
            let n = f.read(&mut buf).map_err(io_err(path))?;
            pending.extend_from_slice(&buf[..n]);
            // Encode up to the last newline; keep the rest for the next chunk (a chunk never
            // splits a character or a word), or everything at the end of the file.
            let cut = if n == 0 {
                pending.len()
            } else {
                match pending.iter().rposition(|&b| b == b'\n') {
                    Some(p) => p + 1,
                    // A very long line: cut at the last whole character instead.
                    None if pending.len() > 16 * CHUNK_BYTES => match std::str::from_utf8(&pending)
                    {
                        Ok(_) => pending.len(),
                        Err(e) => e.valid_up_to(),
                    },
                    None => continue,
                }
            };
            let text = std::str::from_utf8(&pending[..cut]).map_err(|e| Error::Io {
                path: path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })?;
            w.write(&tokenizer.encode(text))?;
            pending.drain(..cut);
            if n == 0 {
                break;
            }
        }
        if let Some(s) = separator {
            w.write(&[s])?;
        }
    }
    let count = w.count();
    w.finish()?;
    Ok(count)
}
