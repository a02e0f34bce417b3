//! The training state file, `DIR/state.bin`: everything a stopped run needs to go on as if it
//! had never stopped.
//!
//! It holds the parameters, AdamW's two moments and step count, the optimizer step reached, the
//! data position (windows read so far), the best validation loss, fingerprints of the data and
//! the run's settings as `name value` lines. There is no separate random state to keep: the
//! shuffled order and the dropout masks are pure functions of `--seed` and the position.
//!
//! Layout, little-endian, checked by a checksum at the end:
//!
//! ```text
//! magic "L2TRAIN\0"  version u32
//! dim hidden_dim n_layers n_heads n_kv_heads vocab_size seq_len shared_classifier  (u64 each)
//! step u64  windows_seen u64  adam_step u64  best_val_loss (u8 present, f32)
//! data_fingerprint u64  val_fingerprint (u8 present, u64)
//! settings_len u64  settings (UTF-8)
//! n u64  params [f32; n]  adam_m [f32; n]  adam_v [f32; n]
//! checksum u64 (of every byte before it)
//! ```
//!
//! The file is written under a temporary name and renamed, so a kill at any moment leaves the
//! previous state or the new one, never half of one.

use std::io::{self, Write};
use std::path::Path;

use super::checksum::{checksum, Checksum};
use super::options::Settings;
use crate::checkpoint::Config;
use crate::convert::write_atomically;
use crate::error::{Error, Result};
use crate::params::Params;

const MAGIC: &[u8; 8] = b"L2TRAIN\0";
/// Bumped whenever the layout changes; older files are refused rather than misread.
pub const VERSION: u32 = 1;

/// Where a run stands, apart from its tensors.
#[derive(Clone, Debug, PartialEq)]
pub struct RunPosition {
    /// The run's settings (flags) when the state was written.
    pub settings: Settings,
    /// Optimizer steps done.
    pub step: usize,
    /// Training windows read so far: the next micro-batch starts at this window of the stream.
    pub windows_seen: u64,
    /// AdamW's step count (its bias correction).
    pub adam_step: u64,
    /// The lowest validation loss so far, if any evaluation had validation data.
    pub best_val_loss: Option<f32>,
    /// Fingerprint of the training data's tokens.
    pub data_fingerprint: u64,
    /// Fingerprint of the `--val` data's tokens (none when held out from `--data`).
    pub val_fingerprint: Option<u64>,
}

/// A training state read back: the position, the parameters and AdamW's moments.
pub struct TrainingState {
    /// Where the run stands.
    pub position: RunPosition,
    /// The model's weights.
    pub params: Params,
    /// AdamW's first moments.
    pub adam_m: Params,
    /// AdamW's second moments.
    pub adam_v: Params,
}

/// A writer that checksums what passes through it.
struct Summing<'w, W: Write> {
    out: &'w mut W,
    sum: Checksum,
}

impl<W: Write> Write for Summing<'_, W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let n = self.out.write(bytes)?;
        self.sum.update(&bytes[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

fn put_u64(out: &mut impl Write, x: u64) -> io::Result<()> {
    out.write_all(&x.to_le_bytes())
}

fn put_f32s(out: &mut impl Write, values: &[f32]) -> io::Result<()> {
    let mut bytes = Vec::with_capacity(4 * 4096);
    for chunk in values.chunks(4096) {
        bytes.clear();
        bytes.extend(chunk.iter().flat_map(|x| x.to_le_bytes()));
        out.write_all(&bytes)?;
    }
    Ok(())
}

/// Write a state to `path` atomically. `adam_m` and `adam_v` must have `params`' shape.
pub fn save(
    path: &Path,
    position: &RunPosition,
    params: &Params,
    adam_m: &Params,
    adam_v: &Params,
) -> Result<()> {
    write_atomically(path, |file| {
        let mut out = Summing {
            out: file,
            sum: Checksum::new(),
        };
        out.write_all(MAGIC)?;
        out.write_all(&VERSION.to_le_bytes())?;
        let c = params.config();
        for x in [
            c.dim,
            c.hidden_dim,
            c.n_layers,
            c.n_heads,
            c.n_kv_heads,
            c.vocab_size,
            c.seq_len,
        ] {
            put_u64(&mut out, x as u64)?;
        }
        put_u64(&mut out, u64::from(c.shared_classifier))?;
        put_u64(&mut out, position.step as u64)?;
        put_u64(&mut out, position.windows_seen)?;
        put_u64(&mut out, position.adam_step)?;
        out.write_all(&[u8::from(position.best_val_loss.is_some())])?;
        out.write_all(&position.best_val_loss.unwrap_or(0.0).to_le_bytes())?;
        put_u64(&mut out, position.data_fingerprint)?;
        out.write_all(&[u8::from(position.val_fingerprint.is_some())])?;
        put_u64(&mut out, position.val_fingerprint.unwrap_or(0))?;
        let settings = position.settings.to_text();
        put_u64(&mut out, settings.len() as u64)?;
        out.write_all(settings.as_bytes())?;
        put_u64(&mut out, params.len() as u64)?;
        for tensor in [params, adam_m, adam_v] {
            put_f32s(&mut out, tensor.data())?;
        }
        let sum = out.sum.finish();
        put_u64(out.out, sum)
    })
}

/// Reads a state file's fields in order, refusing to run past its end.
struct Reader<'a> {
    bytes: &'a [u8],
    name: String,
}

impl<'a> Reader<'a> {
    fn corrupt(&self, problem: impl std::fmt::Display) -> Error {
        Error::input(format!("training state {}: {problem}", self.name))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.bytes.len() {
            return Err(self.corrupt("truncated"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn usize(&mut self) -> Result<usize> {
        let x = self.u64()?;
        usize::try_from(x).map_err(|_| self.corrupt(format!("value {x} too large")))
    }

    fn f32(&mut self) -> Result<f32> {
        Ok(f32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn f32s_into(&mut self, out: &mut Params) -> Result<()> {
        let bytes = self.take(4 * out.len())?;
        for (x, b) in out.data_mut().iter_mut().zip(bytes.chunks_exact(4)) {
            *x = f32::from_le_bytes(b.try_into().expect("4 bytes"));
        }
        Ok(())
    }
}

/// Read a state written by [`save`]. Errors for a missing, truncated, corrupt (checksum) or
/// foreign file, or one of another version.
pub fn load(path: &Path) -> Result<TrainingState> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let mut r = Reader {
        bytes: &bytes,
        name: path.display().to_string(),
    };
    if bytes.len() < MAGIC.len() + 4 + 8 || &bytes[..MAGIC.len()] != MAGIC {
        return Err(r.corrupt("not a llama2 training state"));
    }
    let (body, sum) = bytes.split_at(bytes.len() - 8);
    if checksum(body).to_le_bytes() != sum {
        return Err(r.corrupt("checksum mismatch (the file is damaged)"));
    }
    r.bytes = &body[MAGIC.len()..];
    let version = u32::from_le_bytes(r.take(4)?.try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(r.corrupt(format!(
            "format version {version}, this program reads version {VERSION}"
        )));
    }
    let mut shape = [0usize; 7];
    for x in &mut shape {
        *x = r.usize()?;
    }
    let [dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len] = shape;
    let config = Config {
        dim,
        hidden_dim,
        n_layers,
        n_heads,
        n_kv_heads,
        vocab_size,
        seq_len,
        shared_classifier: r.u64()? != 0,
    };
    let step = r.usize()?;
    let windows_seen = r.u64()?;
    let adam_step = r.u64()?;
    let has_best = r.u8()? != 0;
    let best = r.f32()?;
    let data_fingerprint = r.u64()?;
    let has_val = r.u8()? != 0;
    let val = r.u64()?;
    let settings_len = r.usize()?;
    let settings = std::str::from_utf8(r.take(settings_len)?)
        .map_err(|_| r.corrupt("settings are not UTF-8"))?;
    let settings = Settings::from_text(settings).map_err(|e| r.corrupt(e))?;
    let n = r.usize()?;
    // The length check comes before any allocation, so a bad shape cannot ask for the moon.
    if n.checked_mul(12) != Some(r.bytes.len()) {
        return Err(r.corrupt("tensor sizes do not match the file's length"));
    }
    let mut params = Params::zeros(&config)?;
    if params.len() != n {
        return Err(r.corrupt("tensor sizes do not match the model's shape"));
    }
    let mut adam_m = params.zeros_like()?;
    let mut adam_v = params.zeros_like()?;
    for tensor in [&mut params, &mut adam_m, &mut adam_v] {
        r.f32s_into(tensor)?;
    }
    Ok(TrainingState {
        position: RunPosition {
            settings,
            step,
            windows_seen,
            adam_step,
            best_val_loss: has_best.then_some(best),
            data_fingerprint,
            val_fingerprint: has_val.then_some(val),
        },
        params,
        adam_m,
        adam_v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Config {
        Config {
            dim: 8,
            hidden_dim: 16,
            n_layers: 2,
            n_heads: 2,
            n_kv_heads: 1,
            vocab_size: 11,
            seq_len: 5,
            shared_classifier: false,
        }
    }

    fn filled(config: &Config, base: f32) -> Params {
        let mut p = Params::zeros(config).unwrap();
        for (i, x) in p.data_mut().iter_mut().enumerate() {
            *x = base + i as f32 * 0.001;
        }
        p
    }

    #[test]
    fn a_state_reads_back_exactly_and_damage_is_caught() {
        let dir = std::env::temp_dir().join(format!("llama2-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.bin");
        let settings = Settings {
            learning_rate: 3e-4,
            max_iters: 77,
            data: Some("some/data".into()),
            ..Settings::default()
        };
        let position = RunPosition {
            settings,
            step: 40,
            windows_seen: 40 * 4 * 8,
            adam_step: 40,
            best_val_loss: Some(2.5),
            data_fingerprint: 0xDEAD_BEEF,
            val_fingerprint: None,
        };
        let c = small();
        let (p, m, v) = (filled(&c, 1.0), filled(&c, -2.0), filled(&c, 1e-9));
        save(&path, &position, &p, &m, &v).unwrap();
        let back = load(&path).unwrap();
        assert_eq!(back.position, position);
        assert_eq!(back.params.config(), &c);
        assert_eq!(back.params.data(), p.data());
        assert_eq!(back.adam_m.data(), m.data());
        assert_eq!(back.adam_v.data(), v.data());
        // No temporary file is left beside it.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);

        let good = std::fs::read(&path).unwrap();
        let mut flipped = good.clone();
        flipped[200] ^= 4;
        std::fs::write(&path, &flipped).unwrap();
        let e = load(&path).err().unwrap().to_string();
        assert!(e.contains("checksum") && e.contains("state.bin"), "{e}");
        std::fs::write(&path, &good[..good.len() / 2]).unwrap();
        assert!(load(&path).is_err());
        std::fs::write(&path, b"hello").unwrap();
        assert!(load(&path)
            .err()
            .unwrap()
            .to_string()
            .contains("not a llama2 training state"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
