//! The flags of `llama2 train`: llama2.c's `train.py` settings with dashes for underscores, its
//! defaults, and a few of our own (`--data`, `--val`, `--init`, `--order`, `--resume`, ...).
//!
//! One table, [`FLAGS`], says everything about a flag once: its name, default, help line, and how
//! to read and write its value. Parsing, the usage text, the settings stored in a training state
//! and the merge of a resumed run's settings with the flags given now all go through it.
//!
//! This module only turns text into checked [`Settings`]; it opens no file.

use std::path::PathBuf;

use super::data::Order;
use crate::checkpoint::Config;
use crate::error::{Error, Result};

/// The arithmetic precision of training.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    /// Everything in `f32`.
    Float32,
    /// Matrix products on `bfloat16` copies of weights and activations, with `f32` sums; weights,
    /// gradients and Adam's moments stay `f32`.
    Bfloat16,
}

/// Everything that fixes what a training run computes (stored with its state, so that a resumed
/// run continues with the same values unless a flag changes one).
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// `--data`: the training token file or folder of shards.
    pub data: Option<PathBuf>,
    /// `--val`: the validation token file or folder (none: hold out the last 10% of `--data`).
    pub val: Option<PathBuf>,
    /// `--init`: a float checkpoint to fine-tune (none: a new model).
    pub init: Option<PathBuf>,
    /// `--order`: the order training reads windows in.
    pub order: Order,
    /// `--batch-size`: rows of a micro-batch (B).
    pub batch_size: usize,
    /// `--max-seq-len`: positions of a row (T), and a new model's context.
    pub max_seq_len: usize,
    /// `--gradient-accumulation-steps`: micro-batches per optimizer step.
    pub gradient_accumulation_steps: usize,
    /// `--learning-rate`: the largest learning rate.
    pub learning_rate: f32,
    /// `--min-lr`: the learning rate at the end of the cosine decay.
    pub min_lr: f32,
    /// `--max-iters`: optimizer steps in all.
    pub max_iters: usize,
    /// `--warmup-iters`: steps of linear warmup from 0.
    pub warmup_iters: usize,
    /// `--lr-decay-iters`: the step where the cosine decay ends (none: `--max-iters`).
    pub lr_decay_iters: Option<usize>,
    /// `--decay-lr`: warmup and cosine decay (false: a constant `--learning-rate`).
    pub decay_lr: bool,
    /// `--weight-decay`: AdamW's decoupled weight decay, on matrices only.
    pub weight_decay: f32,
    /// `--beta1`: AdamW's first-moment decay.
    pub beta1: f32,
    /// `--beta2`: AdamW's second-moment decay.
    pub beta2: f32,
    /// `--grad-clip`: largest global gradient norm (0: no clipping).
    pub grad_clip: f32,
    /// `--dropout`: probability of zeroing an activation where model.py puts dropout.
    pub dropout: f32,
    /// `--eval-interval`: steps between evaluations (and saved states).
    pub eval_interval: usize,
    /// `--eval-iters`: validation batches per evaluation (0: no validation).
    pub eval_iters: usize,
    /// `--seed`: seeds the new model's weights, the shuffling and the dropout masks.
    pub seed: u64,
    /// `--dtype`: the arithmetic precision.
    pub dtype: Dtype,
    /// `--dim`: a new model's width.
    pub dim: usize,
    /// `--n-layers`: a new model's blocks.
    pub n_layers: usize,
    /// `--n-heads`: a new model's query heads.
    pub n_heads: usize,
    /// `--n-kv-heads`: a new model's key/value heads (none: `--n-heads`).
    pub n_kv_heads: Option<usize>,
    /// `--vocab-size`: a new model's vocabulary.
    pub vocab_size: usize,
    /// `--multiple-of`: a new model's feed-forward width is rounded up to a multiple of this.
    pub multiple_of: usize,
}

/// What a flag is to a resumed run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagKind {
    /// Fixes the model's shape or the data: a resumed run refuses a different value.
    Fixed,
    /// A setting a resumed run may change (the results then differ from an uninterrupted run).
    /// `--data` and `--val` are of this kind because the files may move: a resumed run compares
    /// their contents instead.
    Tunable,
}

/// One flag of `llama2 train` that is part of [`Settings`].
pub struct Flag {
    /// The name without the leading dashes.
    pub name: &'static str,
    /// The default value as text (empty: none).
    pub default: &'static str,
    /// One line of help.
    pub help: &'static str,
    /// Whether a resumed run may change it.
    pub kind: FlagKind,
    set: fn(&mut Settings, &str) -> std::result::Result<(), String>,
    get: fn(&Settings) -> String,
}

fn count(value: &str, least: usize) -> std::result::Result<usize, String> {
    match value.trim().parse::<usize>() {
        Ok(n) if n >= least => Ok(n),
        Ok(_) => Err(format!("must be at least {least}, got {value}")),
        Err(_) => Err(format!("{value:?} is not a whole number")),
    }
}

fn real(value: &str, range: std::ops::Range<f32>) -> std::result::Result<f32, String> {
    match value.trim().parse::<f32>() {
        Ok(x) if x >= range.start && x < range.end => Ok(x),
        Ok(_) => Err(format!(
            "must be in [{}, {}), got {value}",
            range.start, range.end
        )),
        Err(_) => Err(format!("{value:?} is not a number")),
    }
}

fn boolean(value: &str) -> std::result::Result<bool, String> {
    match value.trim() {
        "true" | "True" | "1" => Ok(true),
        "false" | "False" | "0" => Ok(false),
        _ => Err(format!("expected true or false, got {value:?}")),
    }
}

fn path(value: &str) -> std::result::Result<Option<PathBuf>, String> {
    Ok((!value.is_empty()).then(|| PathBuf::from(value)))
}

fn show_path(p: &Option<PathBuf>) -> String {
    p.as_ref()
        .map_or(String::new(), |p| p.display().to_string())
}

fn show<T: ToString>(x: &Option<T>) -> String {
    x.as_ref().map_or(String::new(), T::to_string)
}

const INF: f32 = f32::INFINITY;

macro_rules! flag {
    ($name:literal, $default:literal, $kind:ident, $help:literal,
     |$s:ident, $v:ident| $set:expr, |$g:ident| $get:expr) => {
        Flag {
            name: $name,
            default: $default,
            help: $help,
            kind: FlagKind::$kind,
            set: |$s, $v| {
                $set;
                Ok(())
            },
            get: |$g| $get,
        }
    };
}

/// Every flag that is part of [`Settings`], in the order `--help` lists them.
pub const FLAGS: &[Flag] = &[
    flag!(
        "data",
        "",
        Tunable,
        "training tokens: a .bin file or a folder of .bin shards",
        |s, v| s.data = path(v)?,
        |s| show_path(&s.data)
    ),
    flag!(
        "val",
        "",
        Tunable,
        "validation tokens (default: the last 10% of --data's windows)",
        |s, v| s.val = path(v)?,
        |s| show_path(&s.val)
    ),
    flag!(
        "init",
        "",
        Fixed,
        "fine-tune this float checkpoint (its shape; default: a new model)",
        |s, v| s.init = path(v)?,
        |s| show_path(&s.init)
    ),
    flag!(
        "order",
        "random",
        Tunable,
        "random|sequential order of the training windows",
        |s, v| s.order = match v {
            "random" => Order::Random,
            "sequential" => Order::Sequential,
            _ => return Err(format!("expected random or sequential, got {v:?}")),
        },
        |s| s.order.name().to_string()
    ),
    flag!(
        "batch-size",
        "128",
        Tunable,
        "rows of a micro-batch (B)",
        |s, v| s.batch_size = count(v, 1)?,
        |s| s.batch_size.to_string()
    ),
    flag!(
        "max-seq-len",
        "256",
        Fixed,
        "positions per row (T); a new model's context",
        |s, v| s.max_seq_len = count(v, 1)?,
        |s| s.max_seq_len.to_string()
    ),
    flag!(
        "gradient-accumulation-steps",
        "4",
        Tunable,
        "micro-batches per optimizer step",
        |s, v| s.gradient_accumulation_steps = count(v, 1)?,
        |s| s.gradient_accumulation_steps.to_string()
    ),
    flag!(
        "learning-rate",
        "5e-4",
        Tunable,
        "largest learning rate",
        |s, v| s.learning_rate = real(v, 0.0..INF)?,
        |s| s.learning_rate.to_string()
    ),
    flag!(
        "min-lr",
        "0",
        Tunable,
        "learning rate at the end of the decay",
        |s, v| s.min_lr = real(v, 0.0..INF)?,
        |s| s.min_lr.to_string()
    ),
    flag!(
        "max-iters",
        "100000",
        Tunable,
        "optimizer steps in all (a resumed run continues to it)",
        |s, v| s.max_iters = count(v, 0)?,
        |s| s.max_iters.to_string()
    ),
    flag!(
        "warmup-iters",
        "1000",
        Tunable,
        "steps of linear warmup from 0",
        |s, v| s.warmup_iters = count(v, 0)?,
        |s| s.warmup_iters.to_string()
    ),
    flag!(
        "lr-decay-iters",
        "",
        Tunable,
        "step where the cosine decay ends (default: --max-iters)",
        |s, v| s.lr_decay_iters = if v.is_empty() {
            None
        } else {
            Some(count(v, 1)?)
        },
        |s| show(&s.lr_decay_iters)
    ),
    flag!(
        "decay-lr",
        "true",
        Tunable,
        "true|false: warmup and cosine decay, or a constant rate",
        |s, v| s.decay_lr = boolean(v)?,
        |s| s.decay_lr.to_string()
    ),
    flag!(
        "weight-decay",
        "0.1",
        Tunable,
        "AdamW weight decay (matrices only)",
        |s, v| s.weight_decay = real(v, 0.0..INF)?,
        |s| s.weight_decay.to_string()
    ),
    flag!(
        "beta1",
        "0.9",
        Tunable,
        "AdamW first-moment decay",
        |s, v| s.beta1 = real(v, 0.0..1.0)?,
        |s| s.beta1.to_string()
    ),
    flag!(
        "beta2",
        "0.95",
        Tunable,
        "AdamW second-moment decay",
        |s, v| s.beta2 = real(v, 0.0..1.0)?,
        |s| s.beta2.to_string()
    ),
    flag!(
        "grad-clip",
        "1.0",
        Tunable,
        "largest global gradient norm (0: no clipping)",
        |s, v| s.grad_clip = real(v, 0.0..INF)?,
        |s| s.grad_clip.to_string()
    ),
    flag!(
        "dropout",
        "0.0",
        Tunable,
        "dropout probability",
        |s, v| s.dropout = real(v, 0.0..1.0)?,
        |s| s.dropout.to_string()
    ),
    flag!(
        "eval-interval",
        "2000",
        Tunable,
        "steps between evaluations and saved states",
        |s, v| s.eval_interval = count(v, 1)?,
        |s| s.eval_interval.to_string()
    ),
    flag!(
        "eval-iters",
        "100",
        Tunable,
        "validation batches per evaluation (0: no validation)",
        |s, v| s.eval_iters = count(v, 0)?,
        |s| s.eval_iters.to_string()
    ),
    flag!(
        "seed",
        "1337",
        Tunable,
        "seeds new weights, shuffling and dropout",
        |s, v| s.seed = v
            .trim()
            .parse()
            .map_err(|_| format!("{v:?} is not a whole number"))?,
        |s| s.seed.to_string()
    ),
    flag!(
        "dtype",
        "float32",
        Tunable,
        "float32|bfloat16 arithmetic",
        |s, v| s.dtype = match v {
            "float32" => Dtype::Float32,
            "bfloat16" => Dtype::Bfloat16,
            _ => return Err(format!("expected float32 or bfloat16, got {v:?}")),
        },
        |s| match s.dtype {
            Dtype::Float32 => "float32",
            Dtype::Bfloat16 => "bfloat16",
        }
        .into()
    ),
    flag!(
        "dim",
        "288",
        Fixed,
        "new model: width",
        |s, v| s.dim = count(v, 1)?,
        |s| s.dim.to_string()
    ),
    flag!(
        "n-layers",
        "6",
        Fixed,
        "new model: blocks",
        |s, v| s.n_layers = count(v, 1)?,
        |s| s.n_layers.to_string()
    ),
    flag!(
        "n-heads",
        "6",
        Fixed,
        "new model: query heads",
        |s, v| s.n_heads = count(v, 1)?,
        |s| s.n_heads.to_string()
    ),
    flag!(
        "n-kv-heads",
        "",
        Fixed,
        "new model: key/value heads (default: --n-heads)",
        |s, v| s.n_kv_heads = if v.is_empty() {
            None
        } else {
            Some(count(v, 1)?)
        },
        |s| show(&s.n_kv_heads)
    ),
    flag!(
        "vocab-size",
        "32000",
        Fixed,
        "new model: vocabulary size (at most 65536)",
        |s, v| s.vocab_size = match count(v, 1)? {
            n if n <= 65536 => n,
            n => return Err(format!("token files hold u16 ids: at most 65536, got {n}")),
        },
        |s| s.vocab_size.to_string()
    ),
    flag!(
        "multiple-of",
        "32",
        Fixed,
        "new model: feed-forward width rounded up to a multiple of this",
        |s, v| s.multiple_of = count(v, 1)?,
        |s| s.multiple_of.to_string()
    ),
];

/// The flags that set a new model's shape (refused with `--init`, whose checkpoint has one).
const SHAPE_FLAGS: [&str; 6] = [
    "dim",
    "n-layers",
    "n-heads",
    "n-kv-heads",
    "vocab-size",
    "multiple-of",
];

fn flag_named(name: &str) -> Option<&'static Flag> {
    FLAGS.iter().find(|f| f.name == name)
}

impl Default for Settings {
    /// `train.py`'s defaults.
    fn default() -> Settings {
        let mut s = Settings {
            data: None,
            val: None,
            init: None,
            order: Order::Random,
            batch_size: 0,
            max_seq_len: 0,
            gradient_accumulation_steps: 0,
            learning_rate: 0.0,
            min_lr: 0.0,
            max_iters: 0,
            warmup_iters: 0,
            lr_decay_iters: None,
            decay_lr: true,
            weight_decay: 0.0,
            beta1: 0.0,
            beta2: 0.0,
            grad_clip: 0.0,
            dropout: 0.0,
            eval_interval: 0,
            eval_iters: 0,
            seed: 0,
            dtype: Dtype::Float32,
            dim: 0,
            n_layers: 0,
            n_heads: 0,
            n_kv_heads: None,
            vocab_size: 0,
            multiple_of: 0,
        };
        for flag in FLAGS {
            (flag.set)(&mut s, flag.default).expect("defaults are valid");
        }
        s
    }
}

impl Settings {
    /// Set flag `name` (without dashes) from text. Errors name the flag.
    pub fn set(&mut self, name: &str, value: &str) -> Result<()> {
        let flag =
            flag_named(name).ok_or_else(|| Error::input(format!("unknown flag --{name}")))?;
        (flag.set)(self, value).map_err(|problem| Error::input(format!("--{name}: {problem}")))
    }

    /// Flag `name`'s value as text that [`Settings::set`] reads back to the same value.
    pub fn get(&self, name: &str) -> Option<String> {
        flag_named(name).map(|flag| (flag.get)(self))
    }

    /// Every flag as `name value` lines (the form a training state stores).
    pub fn to_text(&self) -> String {
        FLAGS
            .iter()
            .map(|f| format!("{} {}\n", f.name, (f.get)(self)))
            .collect()
    }

    /// Read [`Settings::to_text`]'s lines back (flags it does not mention keep their defaults).
    pub fn from_text(text: &str) -> Result<Settings> {
        let mut s = Settings::default();
        for line in text.lines() {
            let (name, value) = line.split_once(' ').unwrap_or((line, ""));
            s.set(name, value)?;
        }
        Ok(s)
    }

    /// The step where the learning rate's cosine decay ends.
    pub fn lr_decay_iters(&self) -> usize {
        self.lr_decay_iters.unwrap_or(self.max_iters)
    }

    /// The shape of a new model, with `model.py`'s feed-forward width: two thirds of `4 * dim`
    /// rounded up to a multiple of `--multiple-of`. Errors for heads that do not divide the width.
    pub fn new_model_config(&self) -> Result<Config> {
        let n_kv_heads = self.n_kv_heads.unwrap_or(self.n_heads);
        if !self.dim.is_multiple_of(self.n_heads) {
            return Err(Error::input(format!(
                "--n-heads: {} heads do not divide --dim {}",
                self.n_heads, self.dim
            )));
        }
        if !(self.dim / self.n_heads).is_multiple_of(2) {
            return Err(Error::input(format!(
                "--n-heads: a head's width (--dim / --n-heads = {}) must be even for rotary embeddings",
                self.dim / self.n_heads
            )));
        }
        if n_kv_heads > self.n_heads || !self.n_heads.is_multiple_of(n_kv_heads) {
            return Err(Error::input(format!(
                "--n-kv-heads: {n_kv_heads} must divide --n-heads {}",
                self.n_heads
            )));
        }
        let hidden = 2 * (4 * self.dim) / 3;
        let hidden_dim = hidden.div_ceil(self.multiple_of) * self.multiple_of;
        Ok(Config {
            dim: self.dim,
            hidden_dim,
            n_layers: self.n_layers,
            n_heads: self.n_heads,
            n_kv_heads,
            vocab_size: self.vocab_size,
            seq_len: self.max_seq_len,
            shared_classifier: true,
        })
    }

    /// Checks between flags that each flag alone cannot make.
    pub fn check(&self) -> Result<()> {
        if self.data.is_none() {
            return Err(Error::input(
                "--data is required: a token file or a folder of .bin shards",
            ));
        }
        if self.min_lr > self.learning_rate {
            return Err(Error::input(format!(
                "--min-lr: {} is above --learning-rate {}",
                self.min_lr, self.learning_rate
            )));
        }
        if self.init.is_none() {
            self.new_model_config()?;
        }
        Ok(())
    }
}

/// The arguments of `llama2 train`: where the run lives, and the flags given.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// `--out`: the run's folder (created if missing).
    pub out: PathBuf,
    /// `--resume`: continue the run saved in `out`.
    pub resume: bool,
    /// `--always-save-checkpoint`: write `model.bin` at every evaluation, improved or not.
    pub always_save_checkpoint: bool,
    /// `--threads`: the number of threads (applied by the caller, which owns the thread pool).
    pub threads: Option<usize>,
    /// Every other flag: defaults overridden by the flags given.
    pub settings: Settings,
    /// The names of the flags given, which on `--resume` override the run's stored settings.
    pub given: Vec<&'static str>,
}

impl TrainOptions {
    /// Options for a run in `out` with these settings, every one of them counted as given.
    pub fn new(out: impl Into<PathBuf>, settings: Settings) -> TrainOptions {
        TrainOptions {
            out: out.into(),
            resume: false,
            always_save_checkpoint: false,
            threads: None,
            settings,
            given: FLAGS.iter().map(|f| f.name).collect(),
        }
    }

    /// Parse `llama2 train`'s arguments (after the word `train`). Every value is checked here;
    /// files are opened only by [`super::run`].
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<TrainOptions> {
        let mut out = None;
        let mut options = TrainOptions {
            out: PathBuf::new(),
            resume: false,
            always_save_checkpoint: false,
            threads: None,
            settings: Settings::default(),
            given: Vec::new(),
        };
        let mut rest = args.iter().map(AsRef::as_ref).peekable();
        while let Some(arg) = rest.next() {
            let Some(name) = arg.strip_prefix("--") else {
                return Err(Error::input(format!(
                    "train: unexpected argument {arg:?} (flags are --name value)"
                )));
            };
            // `--name=value` or `--name value`.
            let (name, inline) = match name.split_once('=') {
                Some((n, v)) => (n.replace('_', "-"), Some(v.to_string())),
                None => (name.replace('_', "-"), None),
            };
            // Switches take no value, or an explicit true/false.
            if name == "resume" || name == "always-save-checkpoint" {
                let value = match inline {
                    Some(v) => boolean(&v).map_err(|p| Error::input(format!("--{name}: {p}")))?,
                    None => match rest.peek().map(|v| boolean(v)) {
                        Some(Ok(v)) => {
                            rest.next();
                            v
                        }
                        _ => true,
                    },
                };
                if name == "resume" {
                    options.resume = value;
                } else {
                    options.always_save_checkpoint = value;
                }
                continue;
            }
            let value = match inline {
                Some(v) => v,
                None => rest
                    .next()
                    .ok_or_else(|| Error::input(format!("flag --{name} needs a value")))?
                    .to_string(),
            };
            match name.as_str() {
                "out" => out = Some(PathBuf::from(value)),
                "threads" => {
                    options.threads = Some(
                        count(&value, 1).map_err(|p| Error::input(format!("--threads: {p}")))?,
                    )
                }
                _ => {
                    let flag = flag_named(&name).ok_or_else(|| {
                        Error::input(format!(
                            "train: unknown flag --{name} (run 'llama2 train --help' for the list)"
                        ))
                    })?;
                    options.settings.set(flag.name, &value)?;
                    if !options.given.contains(&flag.name) {
                        options.given.push(flag.name);
                    }
                }
            }
        }
        options.out = out.ok_or_else(|| Error::input("--out is required: the run's folder"))?;
        if options.settings.init.is_some() {
            if let Some(name) = options.given.iter().find(|n| SHAPE_FLAGS.contains(n)) {
                return Err(Error::input(format!(
                    "--{name}: the model's shape comes from --init's checkpoint"
                )));
            }
        }
        if !options.resume {
            options.settings.check()?;
        }
        Ok(options)
    }

    /// The settings of a resumed run: the stored ones, with the flags given now applied over
    /// them. Errors if a given flag would change the model's shape or the data.
    pub fn resumed_settings(&self, stored: &Settings) -> Result<Settings> {
        let mut merged = stored.clone();
        for name in &self.given {
            let flag = flag_named(name).expect("given flags are known");
            let now = (flag.get)(&self.settings);
            if flag.kind == FlagKind::Fixed && now != (flag.get)(stored) {
                return Err(Error::input(format!(
                    "--{name}: the run in {} was made with {:?}; a resumed run cannot change \
                     the model's shape or data (start a new --out)",
                    self.out.display(),
                    (flag.get)(stored)
                )));
            }
            (flag.set)(&mut merged, &now).expect("a value read from valid settings is valid");
        }
        merged.check()?;
        Ok(merged)
    }

    /// The help text of `llama2 train`, from the flag table.
    pub fn usage() -> String {
        let mut text = String::from(
            "Usage: llama2 train --data TRAIN.bin [--val VAL.bin] --out DIR [options]\n\
             Trains a new model (or fine-tunes --init) as llama2.c's train.py does.\n\
             Writes DIR/model.bin, DIR/log.tsv and DIR/state.bin (everything to --resume).\n\
             Options (train.py's names and defaults):\n",
        );
        let mut line = |name: &str, default: &str, help: &str| {
            let default = if default.is_empty() {
                String::new()
            } else {
                format!(" (default {default})")
            };
            text.push_str(&format!("  --{name:<28} {help}{default}\n"));
        };
        line("out DIR", "", "the run's folder (created if missing)");
        for flag in FLAGS {
            line(flag.name, flag.default, flag.help);
        }
        line(
            "resume",
            "",
            "continue the run saved in --out, up to --max-iters",
        );
        line(
            "always-save-checkpoint",
            "",
            "write model.bin at every evaluation",
        );
        line("threads", "", "number of threads (default: all cores)");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &str) -> Result<TrainOptions> {
        TrainOptions::parse(&args.split_whitespace().collect::<Vec<_>>())
    }

    #[test]
    fn defaults_are_train_pys() {
        let s = Settings::default();
        assert_eq!(
            (s.batch_size, s.max_seq_len, s.gradient_accumulation_steps),
            (128, 256, 4)
        );
        assert_eq!(
            (s.learning_rate, s.min_lr, s.max_iters, s.warmup_iters),
            (5e-4, 0.0, 100000, 1000)
        );
        assert_eq!(
            (s.weight_decay, s.beta1, s.beta2, s.grad_clip, s.dropout),
            (0.1, 0.9, 0.95, 1.0, 0.0)
        );
        assert_eq!(
            (s.eval_interval, s.eval_iters, s.decay_lr, s.seed),
            (2000, 100, true, 1337)
        );
        assert_eq!(
            (s.dim, s.n_layers, s.n_heads, s.vocab_size, s.multiple_of),
            (288, 6, 6, 32000, 32)
        );
        assert_eq!(s.lr_decay_iters(), 100000);
        // model.py's feed-forward width of the stories15M shape: 768.
        let c = s.new_model_config().unwrap();
        assert_eq!((c.hidden_dim, c.n_kv_heads, c.seq_len), (768, 6, 256));
    }

    #[test]
    fn flags_parse_both_spellings_and_settings_round_trip_as_text() {
        let o = parse(
            "--data d.bin --out run --batch-size 8 --learning_rate=1e-3 --decay-lr false \
             --n-kv-heads 2 --order sequential --resume --lr-decay-iters 50 --threads 2",
        )
        .unwrap();
        let s = &o.settings;
        assert_eq!(
            (s.batch_size, s.learning_rate, s.decay_lr),
            (8, 1e-3, false)
        );
        assert_eq!(
            (s.n_kv_heads, s.order, s.lr_decay_iters),
            (Some(2), Order::Sequential, Some(50))
        );
        assert!(o.resume && !o.always_save_checkpoint);
        assert_eq!(o.threads, Some(2));
        assert_eq!(o.out, PathBuf::from("run"));
        assert_eq!(Settings::from_text(&s.to_text()).unwrap(), *s);
        let odd = Settings {
            learning_rate: 0.1 + 0.2,
            seed: u64::MAX,
            ..Settings::default()
        };
        assert_eq!(Settings::from_text(&odd.to_text()).unwrap(), odd);
    }

    #[test]
    fn bad_flags_are_named() {
        for (args, named) in [
            ("--data d --out o --batch-size 0", "--batch-size"),
            ("--data d --out o --batch-size x", "--batch-size"),
            ("--data d --out o --beta2 1", "--beta2"),
            ("--data d --out o --dropout -0.1", "--dropout"),
            ("--data d --out o --learning-rate nan", "--learning-rate"),
            ("--data d --out o --order backwards", "--order"),
            ("--data d --out o --dtype float16", "--dtype"),
            ("--data d --out o --vocab-size 70000", "--vocab-size"),
            ("--data d --out o --dim 100 --n-heads 3", "--n-heads"),
            ("--data d --out o --n-kv-heads 4", "--n-kv-heads"),
            ("--data d --out o --min-lr 1", "--min-lr"),
            ("--data d --out o --init m.bin --dim 64", "--dim"),
            ("--data d --out o --eval-interval 0", "--eval-interval"),
            ("--data d --out o --threads 0", "--threads"),
            ("--data d --out o --colour red", "--colour"),
            ("--data d --out o --seed", "--seed"),
            ("--out o", "--data"),
            ("--data d", "--out"),
        ] {
            let e = parse(args)
                .err()
                .unwrap_or_else(|| panic!("{args} accepted"))
                .to_string();
            assert!(e.contains(named), "{args}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn a_resumed_run_keeps_its_settings_unless_a_tunable_flag_changes_one() {
        let stored =
            parse("--data d.bin --out o --dim 64 --n-heads 4 --learning-rate 1e-3 --max-iters 10")
                .unwrap()
                .settings;
        let resumed = parse("--out o --resume --max-iters 20 --learning-rate 2e-3").unwrap();
        let merged = resumed.resumed_settings(&stored).unwrap();
        assert_eq!(
            (merged.max_iters, merged.learning_rate, merged.dim),
            (20, 2e-3, 64)
        );
        assert_eq!(merged.data, stored.data);
        // The same shape given again is fine; another one is refused.
        let same = parse("--out o --resume --dim 64 --data d.bin").unwrap();
        assert!(same.resumed_settings(&stored).is_ok());
        let other = parse("--out o --resume --dim 32").unwrap();
        let e = other.resumed_settings(&stored).err().unwrap().to_string();
        assert!(e.contains("--dim") && e.contains("64"), "{e}");
    }
}
