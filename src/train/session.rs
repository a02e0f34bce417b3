//! A training run from start to finish: `llama2 train`'s loop around the maths of this module.
//!
//! [`run`] sets everything up and checks every input before the first step (flags, data, the
//! `--init` model, the output folder), then repeats `train.py`'s step: `accum` micro-batches of
//! forward and backward passes, the gradient norm and clipping, one AdamW update at the learning
//! rate of the step. Every `--eval-interval` steps (and before the first, and after the last) it
//! evaluates on fixed validation batches, then writes `model.bin` (when the loss improved) and the
//! whole training state (`state.bin`). Files in the run's folder `DIR`:
//!
//! * `model.bin`: the best model so far, a legacy llama2.c checkpoint that `run.c` reads;
//! * `log.tsv`: one row per optimizer step (see [`LogRow`]);
//! * `loss.svg`: the training and validation losses of `log.tsv` as a chart, drawn at every
//!   evaluation;
//! * `state.bin`: everything `--resume` needs ([`super::state`]).
//!
//! The run reports progress through a callback and never prints.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::data::{Corpus, Stream, WindowSet};
use super::options::{Dtype, Settings, TrainOptions};
use super::state::{self, RunPosition};
use super::{
    clip_grads, forward_backward, init_params, learning_rate, loss, AdamW, AdamWConfig, Dropout,
    Precision, Schedule, Workspace,
};
use crate::checkpoint::{Config, Format};
use crate::convert::write_atomically;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::params::Params;

/// The header of `log.tsv`, tab-separated.
pub const LOG_HEADER: &str = "step\tlr\ttrain_loss\tgrad_norm\tval_loss\ttokens_per_s";

/// One row of `log.tsv`: optimizer step `step` (1-based), or row 0 with only the evaluation
/// before training.
#[derive(Clone, Debug, PartialEq)]
pub struct LogRow {
    /// The optimizer step this row is about; 0 for the evaluation before training.
    pub step: usize,
    /// The learning rate the step used.
    pub lr: Option<f32>,
    /// The mean unscaled loss of the step's micro-batches.
    pub train_loss: Option<f32>,
    /// The global gradient norm before clipping.
    pub grad_norm: Option<f32>,
    /// The validation loss of the evaluation that followed the step, if one did.
    pub val_loss: Option<f32>,
    /// Training tokens per second of the step.
    pub tokens_per_s: Option<f64>,
}

impl LogRow {
    /// The row as `log.tsv` holds it: tab-separated, empty fields for what it lacks. Losses and
    /// rates are written in full (shortest text that reads back to the same `f32`).
    pub fn tsv(&self) -> String {
        fn field<T: ToString>(x: Option<T>) -> String {
            x.map_or(String::new(), |x| x.to_string())
        }
        format!(
            "{}\t{}\t{}\t{}\t{}\t{}",
            self.step,
            field(self.lr),
            field(self.train_loss),
            field(self.grad_norm),
            field(self.val_loss),
            field(self.tokens_per_s.map(|t| t.round() as u64)),
        )
    }

    /// The row as a progress line for people, with the time left.
    pub fn progress_line(&self, max_iters: usize, eta: Option<Duration>) -> String {
        let mut line = format!("step {}/{max_iters}", self.step);
        if let (Some(loss), Some(lr), Some(norm)) = (self.train_loss, self.lr, self.grad_norm) {
            line += &format!(" | loss {loss:.4} | lr {lr:.3e} | grad norm {norm:.3}");
        }
        if let Some(speed) = self.tokens_per_s {
            line += &format!(" | {speed:.0} tok/s");
        }
        if let Some(val) = self.val_loss {
            line += &format!(" | val loss {val:.4}");
        }
        if let Some(eta) = eta {
            let s = eta.as_secs();
            line += &format!(" | ETA {}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60);
        }
        line
    }
}

/// What a run is about to do, reported once before the first step.
#[derive(Clone, Debug)]
pub struct RunInfo {
    /// The model's shape.
    pub config: Config,
    /// Number of parameters (a shared classifier counted once).
    pub parameters: usize,
    /// Where the weights came from: `"new"`, the `--init` path, or the resumed state.
    pub origin: String,
    /// The run's settings after defaults and, when resuming, the stored ones.
    pub settings: Settings,
    /// Tokens and files of `--data`.
    pub data_tokens: usize,
    /// Windows training reads from (after any held-out tail).
    pub train_windows: usize,
    /// Validation windows (0 without validation).
    pub val_windows: usize,
    /// True when the validation windows are the last 10% of `--data`.
    pub val_held_out: bool,
    /// Validation batches of each evaluation (at most `--eval-iters`).
    pub eval_batches: usize,
    /// Tokens per optimizer step (`B * T * accumulation steps`).
    pub tokens_per_step: usize,
    /// The first step this run makes (the step resumed from, plus one).
    pub first_step: usize,
}

impl RunInfo {
    /// A few lines for people: the model, the data and the plan.
    pub fn describe(&self) -> String {
        let (c, s) = (&self.config, &self.settings);
        let validation = match (self.val_windows, self.val_held_out) {
            (0, _) => "no validation".to_string(),
            (n, true) => format!("{n} validation windows (the last 10% of --data)"),
            (n, false) => format!("{n} validation windows (--val)"),
        };
        format!(
            "model ({}): dim {}, {} layers, {} heads ({} kv), hidden {}, vocab {}, context {}; \
             {:.2}M parameters\n\
             data: {} tokens, {} training windows of {} tokens, {validation}, evaluated in {} \
             batches\n\
             steps {}..{}: {} tokens per step (accumulation {} x batch {} x {} positions), {} order",
            self.origin,
            c.dim,
            c.n_layers,
            c.n_heads,
            c.n_kv_heads,
            c.hidden_dim,
            c.vocab_size,
            c.seq_len,
            self.parameters as f64 / 1e6,
            self.data_tokens,
            self.train_windows,
            s.max_seq_len + 1,
            self.eval_batches,
            self.first_step,
            s.max_iters,
            self.tokens_per_step,
            s.gradient_accumulation_steps,
            s.batch_size,
            s.max_seq_len,
            s.order.name(),
        )
    }
}

/// What [`run`] reports as it goes.
#[derive(Debug)]
pub enum Progress<'a> {
    /// The run is set up and every input checked.
    Start(&'a RunInfo),
    /// A row of `log.tsv` was written, with the time the rest of the run should take.
    Row(&'a LogRow, Option<Duration>),
    /// `model.bin` was written after the evaluation of this step.
    SavedModel(usize),
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// The last optimizer step done (the run's `--max-iters`).
    pub step: usize,
    /// The best validation loss seen, if there was validation data.
    pub best_val_loss: Option<f32>,
    /// The path of `model.bin`.
    pub model: PathBuf,
}

/// The files of a run's folder.
struct RunFiles {
    model: PathBuf,
    log: PathBuf,
    chart: PathBuf,
    state: PathBuf,
}

impl RunFiles {
    fn new(dir: &Path) -> RunFiles {
        RunFiles {
            model: dir.join("model.bin"),
            log: dir.join("log.tsv"),
            chart: dir.join("loss.svg"),
            state: dir.join("state.bin"),
        }
    }
}

/// Create the run's folder if needed and prove that files can be written there. Half-written
/// files a killed run left behind (`*.partial-PID`, see [`write_atomically`]) are removed.
fn prepare_folder(dir: &Path) -> Result<()> {
    let fail = |e: std::io::Error| Error::input(format!("--out {}: {e}", dir.display()));
    fs::create_dir_all(dir).map_err(fail)?;
    let probe = dir.join(format!(".write-test-{}", std::process::id()));
    fs::write(&probe, b"").map_err(fail)?;
    fs::remove_file(&probe).map_err(fail)?;
    let ours = ["model.bin", "state.bin", "log.tsv", "loss.svg"];
    for entry in fs::read_dir(dir).map_err(fail)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if ours
            .iter()
            .any(|file| name.starts_with(&format!("{file}.partial-")))
        {
            let _ = fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// The weights a run starts from: a resumed state's, `--init`'s, or new ones.
fn starting_params(settings: &Settings) -> Result<(Params, String)> {
    let Some(init) = &settings.init else {
        let config = settings.new_model_config()?;
        return Ok((init_params(&config, settings.seed)?, "new".into()));
    };
    let model = Model::open(init).map_err(|e| Error::input(format!("--init: {e}")))?;
    if let Format::Int8V2 { .. } = model.format() {
        return Err(Error::input(format!(
            "--init {}: an int8 checkpoint cannot be trained; give its float original",
            init.display()
        )));
    }
    Ok((Params::from_model(&model)?, init.display().to_string()))
}

/// The training and validation windows, checked against the batch size.
fn open_data(
    settings: &Settings,
    config: &Config,
) -> Result<(WindowSet, Option<WindowSet>, u64, Option<u64>)> {
    let (t, b, vocab) = (settings.max_seq_len, settings.batch_size, config.vocab_size);
    let data_path = settings.data.as_ref().expect("checked by Settings::check");
    let data = Corpus::open("--data", data_path, t, vocab)?;
    let data_fingerprint = data.fingerprint();
    let all = data.windows();
    let too_few = |flag: &str, path: &Path, n: usize, what: &str| {
        Error::input(format!(
            "{flag} {}: {n} {what}windows of {} tokens, fewer than one batch of {b} \
             (lower --batch-size or --max-seq-len, or give more data)",
            path.display(),
            t + 1
        ))
    };
    let (train, val, val_fingerprint) = match &settings.val {
        Some(val_path) => {
            let val = Corpus::open("--val", val_path, t, vocab)?;
            let fingerprint = val.fingerprint();
            let val = val.windows();
            if settings.eval_iters > 0 && val.len() < b {
                return Err(too_few("--val", val_path, val.len(), ""));
            }
            (all, Some(val), Some(fingerprint))
        }
        None if settings.eval_iters > 0 => {
            let held_out = all.len() / 10;
            let (train, val) = all.split_tail(held_out);
            if val.len() < b {
                return Err(Error::input(format!(
                    "--data {}: the held-out last 10% is {} windows, fewer than one batch of {b} \
                     (give --val, or --eval-iters 0 for no validation)",
                    data_path.display(),
                    val.len()
                )));
            }
            (train, Some(val), None)
        }
        None => (all, None, None),
    };
    if train.len() < b {
        return Err(too_few("--data", data_path, train.len(), "training "));
    }
    Ok((train, val, data_fingerprint, val_fingerprint))
}

/// Keep the rows of `log.tsv` up to `step` (a killed run may have logged steps past its last
/// saved state), so that a resumed run's log reads as an uninterrupted one's.
fn truncate_log(path: &Path, step: usize) -> Result<()> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut kept = format!("{LOG_HEADER}\n");
    for line in text.lines().skip(1) {
        match line
            .split('\t')
            .next()
            .and_then(|s| s.parse::<usize>().ok())
        {
            Some(row) if row <= step => {
                kept.push_str(line);
                kept.push('\n');
            }
            _ => break,
        }
    }
    write_atomically(path, |out| out.write_all(kept.as_bytes()))
}

/// Draw `loss.svg`, training and validation loss against steps, from the rows of `log.tsv`.
fn draw_loss_chart(log: &Path, chart: &Path) -> Result<()> {
    let text = fs::read_to_string(log).map_err(|e| Error::io(log, e))?;
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split('\t').collect();
        let Some(step) = fields.first().and_then(|s| s.parse::<u64>().ok()) else {
            continue;
        };
        let loss = |column: usize| fields.get(column).and_then(|s| s.parse::<f32>().ok());
        train.extend(loss(2).map(|l| (step, l)));
        val.extend(loss(4).map(|l| (step, l)));
    }
    let svg = crate::svg::loss_chart(&train, &val);
    write_atomically(chart, |out| out.write_all(svg.as_bytes()))
}

/// Fixed validation batches and the means of their losses.
struct Evaluator {
    stream: Stream,
    batches: usize,
}

impl Evaluator {
    fn mean_loss(
        &mut self,
        params: &Params,
        ws: &mut Workspace,
        x: &mut [u16],
        y: &mut [u16],
    ) -> Result<f32> {
        let mut sum = 0.0f64;
        for k in 0..self.batches {
            self.stream.batch((k * ws.batch()) as u64, x, y);
            sum += f64::from(loss(params, ws, x, y)?);
        }
        Ok((sum / self.batches as f64) as f32)
    }
}

/// Train as `options` say, reporting through `progress`. Every input is checked before the
/// first step; errors after it are I/O errors or a diverged loss.
pub fn run(options: &TrainOptions, mut progress: impl FnMut(Progress)) -> Result<Summary> {
    let dir = &options.out;
    prepare_folder(dir)?;
    let files = RunFiles::new(dir);

    // The settings and weights: stored ones when resuming, else the flags' and new or --init's.
    let resumed = if options.resume {
        if !files.state.exists() {
            return Err(Error::input(format!(
                "--resume: {} holds no training state (state.bin)",
                dir.display()
            )));
        }
        Some(state::load(&files.state)?)
    } else {
        if files.state.exists() {
            return Err(Error::input(format!(
                "--out {}: already holds a run (state.bin); add --resume to continue it, or \
                 choose another folder",
                dir.display()
            )));
        }
        None
    };
    let settings = match &resumed {
        Some(s) => options.resumed_settings(&s.position.settings)?,
        None => options.settings.clone(),
    };
    let (params, origin, adam, position) = match resumed {
        Some(s) => {
            let origin = format!("{} at step {}", files.state.display(), s.position.step);
            let adam = AdamW::from_parts(s.adam_m, s.adam_v, s.position.adam_step)?;
            (s.params, origin, adam, Some(s.position))
        }
        None => {
            let (params, origin) = starting_params(&settings)?;
            let adam = AdamW::new(&params)?;
            (params, origin, adam, None)
        }
    };
    let config = *params.config();
    let (b, t, accum) = (
        settings.batch_size,
        settings.max_seq_len,
        settings.gradient_accumulation_steps,
    );
    if t > config.seq_len {
        return Err(Error::input(format!(
            "--max-seq-len {t}: longer than the model's context of {} positions",
            config.seq_len
        )));
    }
    let start_step = position.as_ref().map_or(0, |p| p.step);
    if start_step > settings.max_iters {
        return Err(Error::input(format!(
            "--max-iters {}: the run in {} is already at step {start_step}",
            settings.max_iters,
            dir.display()
        )));
    }

    // The data, checked against the vocabulary and the batch size (and a resumed run's data).
    let (train, val, data_fingerprint, val_fingerprint) = open_data(&settings, &config)?;
    if let Some(p) = &position {
        if p.data_fingerprint != data_fingerprint {
            return Err(Error::input(format!(
                "--data: these tokens differ from the data the run in {} was trained on",
                dir.display()
            )));
        }
        if p.val_fingerprint != val_fingerprint {
            return Err(Error::input(format!(
                "--val: this validation data differs from the run's in {}",
                dir.display()
            )));
        }
    }
    let info = RunInfo {
        config,
        parameters: params.len(),
        origin,
        settings: settings.clone(),
        data_tokens: train.corpus().tokens(),
        train_windows: train.len(),
        val_windows: val.as_ref().map_or(0, WindowSet::len),
        val_held_out: settings.val.is_none() && val.is_some(),
        eval_batches: val
            .as_ref()
            .map_or(0, |v| settings.eval_iters.min(v.len() / b)),
        tokens_per_step: b * t * accum,
        first_step: start_step + 1,
    };
    let evaluator = val.map(|val| Evaluator {
        // The same batches every time: the start of the validation stream.
        stream: Stream::new(val, settings.order, settings.seed ^ 0x7661_6c69_6461_7465),
        batches: info.eval_batches,
    });
    let position = position.unwrap_or(RunPosition {
        settings: settings.clone(),
        step: 0,
        windows_seen: 0,
        adam_step: 0,
        best_val_loss: None,
        data_fingerprint,
        val_fingerprint,
    });
    progress(Progress::Start(&info));

    // log.tsv: a new one, or the resumed run's up to its saved step.
    if start_step == 0 {
        write_atomically(&files.log, |out| writeln!(out, "{LOG_HEADER}"))?;
    } else {
        truncate_log(&files.log, start_step)?;
    }
    let log = fs::OpenOptions::new()
        .append(true)
        .open(&files.log)
        .map_err(|e| Error::io(&files.log, e))?;
    let mut trainer = Trainer {
        grads: params.zeros_like()?,
        ws: Workspace::with_precision(&config, b, t, precision(settings.dtype))?,
        x: vec![0; b * t],
        y: vec![0; b * t],
        stream: Stream::new(train, settings.order, settings.seed),
        evaluator,
        params,
        adam,
        position: RunPosition {
            settings: settings.clone(),
            ..position
        },
        settings,
        files,
        log,
        always_save: options.always_save_checkpoint,
        progress: &mut progress,
    };
    if start_step == 0 {
        let mut row = LogRow {
            step: 0,
            lr: None,
            train_loss: None,
            grad_norm: None,
            val_loss: None,
            tokens_per_s: None,
        };
        trainer.finish_step(&mut row, None, true)?;
    }
    let started = Instant::now();
    let max_iters = trainer.settings.max_iters;
    for step in start_step + 1..=max_iters {
        let mut row = trainer.train_step(step, info.tokens_per_step)?;
        let eta = started
            .elapsed()
            .mul_f64((max_iters - step) as f64 / (step - start_step) as f64);
        let evaluate = step.is_multiple_of(trainer.settings.eval_interval) || step == max_iters;
        trainer.finish_step(&mut row, Some(eta), evaluate)?;
    }
    Ok(Summary {
        step: trainer.position.step,
        best_val_loss: trainer.position.best_val_loss,
        model: trainer.files.model,
    })
}

/// Everything a run updates from step to step.
struct Trainer<'a> {
    settings: Settings,
    params: Params,
    grads: Params,
    adam: AdamW,
    ws: Workspace,
    /// One micro-batch of inputs and targets, `B * T` ids each.
    x: Vec<u16>,
    y: Vec<u16>,
    stream: Stream,
    evaluator: Option<Evaluator>,
    position: RunPosition,
    files: RunFiles,
    log: fs::File,
    always_save: bool,
    progress: &'a mut dyn FnMut(Progress),
}

impl Trainer<'_> {
    /// Optimizer step `step` (1-based; train.py's iteration `step - 1`): the micro-batches'
    /// forward and backward passes, clipping, and the AdamW update. Returns its log row.
    fn train_step(&mut self, step: usize, tokens_per_step: usize) -> Result<LogRow> {
        let started = Instant::now();
        let s = &self.settings;
        let lr = learning_rate(
            step - 1,
            &Schedule {
                learning_rate: s.learning_rate,
                min_lr: s.min_lr,
                warmup_iters: s.warmup_iters,
                lr_decay_iters: s.lr_decay_iters(),
                decay_lr: s.decay_lr,
            },
        );
        let accum = s.gradient_accumulation_steps;
        self.grads.data_mut().fill(0.0);
        let mut loss_sum = 0.0f64;
        for micro in 0..accum {
            self.stream
                .batch(self.position.windows_seen, &mut self.x, &mut self.y);
            self.position.windows_seen += s.batch_size as u64;
            let dropout = Dropout::for_step(s.dropout, s.seed, step as u64, micro as u64);
            let (x, y) = (&self.x, &self.y);
            let loss = forward_backward(
                &self.params,
                &mut self.grads,
                &mut self.ws,
                x,
                y,
                dropout,
                1.0 / accum as f32,
            )?;
            loss_sum += f64::from(loss);
        }
        let train_loss = (loss_sum / accum as f64) as f32;
        if !train_loss.is_finite() {
            return Err(Error::input(format!(
                "training diverged at step {step} (loss {train_loss}); try a lower --learning-rate"
            )));
        }
        let grad_norm = clip_grads(&mut self.grads, s.grad_clip);
        let hyper = AdamWConfig {
            beta1: s.beta1,
            beta2: s.beta2,
            eps: 1e-8,
            weight_decay: s.weight_decay,
        };
        self.adam.step(&mut self.params, &self.grads, lr, &hyper)?;
        self.position.step = step;
        let seconds = started.elapsed().as_secs_f64().max(1e-9);
        Ok(LogRow {
            step,
            lr: Some(lr),
            train_loss: Some(train_loss),
            grad_norm: Some(grad_norm),
            val_loss: None,
            tokens_per_s: Some(tokens_per_step as f64 / seconds),
        })
    }

    /// Evaluate (when `evaluate`), log the row, and save: `model.bin` first, then the state that
    /// records it, so that a kill between the two only repeats work.
    fn finish_step(
        &mut self,
        row: &mut LogRow,
        eta: Option<Duration>,
        evaluate: bool,
    ) -> Result<()> {
        let mut save_model = false;
        if evaluate {
            if let Some(e) = self.evaluator.as_mut() {
                let val_loss = e.mean_loss(&self.params, &mut self.ws, &mut self.x, &mut self.y)?;
                row.val_loss = Some(val_loss);
                if self
                    .position
                    .best_val_loss
                    .is_none_or(|best| val_loss < best)
                {
                    self.position.best_val_loss = Some(val_loss);
                    save_model = true;
                }
            } else {
                // Without validation data the last model is the one to keep.
                save_model = row.step == self.settings.max_iters;
            }
            save_model |= self.always_save;
        }
        writeln!(self.log, "{}", row.tsv()).map_err(|e| Error::io(&self.files.log, e))?;
        (self.progress)(Progress::Row(row, eta));
        if evaluate {
            if save_model {
                self.params.save(&self.files.model, Format::Legacy)?;
                (self.progress)(Progress::SavedModel(row.step));
            }
            draw_loss_chart(&self.files.log, &self.files.chart)?;
            self.position.adam_step = self.adam.step_count();
            state::save(
                &self.files.state,
                &self.position,
                &self.params,
                self.adam.m(),
                self.adam.v(),
            )?;
        }
        Ok(())
    }
}

/// The matrix products' arithmetic for `--dtype`.
fn precision(dtype: Dtype) -> Precision {
    match dtype {
        Dtype::Float32 => Precision::F32,
        Dtype::Bfloat16 => Precision::Bf16,
    }
}
