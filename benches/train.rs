//! `cargo bench --bench train` (`make bench-train`): how fast `llama2 train` trains on this
//! machine, for the two shapes of the training-speed issue, in f32 and in bfloat16.
//!
//! For each shape and precision it runs a few full training steps on random tokens (one
//! micro-batch, no dropout: forward + backward, gradient clipping, AdamW) and prints
//!
//! * tokens per second of the whole step, and the share of the machine's FLOP peak (measured
//!   first, as in `benches/gemm.rs`) that the model's FLOPs per token make of it;
//! * the step split into forward (the loss alone, `train::loss`), backward
//!   (`forward_backward` minus that forward) and optimizer (clipping and AdamW);
//! * the peak resident memory (`VmHWM`; each configuration runs in a process of its own),
//!   what of it was there before training began (the program with its code paged in, its
//!   libraries and threads),
//!   and the budget for the rest: parameters x 16 bytes (weights, gradients, Adam's two
//!   moments) plus the memory of one micro-batch: the workspace ([`Workspace::bytes`]:
//!   activations, gradient scratch, bfloat16 copies) and what the matrix products' pack
//!   buffers hold ([`gemm::pack_buffer_bytes`], a few MiB per thread at most).
//!
//! FLOPs per token, as PaLM's and nanoGPT's MFU count them: `6 P + 12 L T C`, where `P` is the
//! parameters that take part in matrix products (every linear layer and the classifier, not the
//! norms or the embedding lookup), `L` layers, `T` positions, `C` = dim: 2 FLOPs per weight per
//! token forward and 4 backward, plus attention's scores and weighted sums (the masked half of
//! the causal scores included, so the figure is comparable with other reports).
//!
//! Times are **wall** times of the fastest of the timed steps (the machine may be shared; the
//! fastest step is the one least disturbed). `BENCH_TRAIN_STEPS` (default 3) sets the timed
//! steps, `BENCH_TRAIN_MODELS=260K,15M` the shapes, `BENCH_TRAIN_DTYPES=float32,bfloat16` the
//! precisions, `RAYON_NUM_THREADS` the threads.

use std::time::Instant;

use llama2::train::{self, AdamW, AdamWConfig, Dropout, Precision, Workspace};
use llama2::{gemm, Config};

#[path = "common/peak.rs"]
mod peak;
use peak::{cpu_name, measure_peak};

/// A training shape of the issue: the model and the micro-batch `B x T`.
struct Shape {
    name: &'static str,
    config: Config,
    batch: usize,
    seq_len: usize,
}

fn shapes() -> Vec<Shape> {
    vec![
        // train.py's stories260K recipe: dim 64, 5 layers, 8 heads, 4 kv heads, vocab 512,
        // multiple_of 4 (hidden 172), B = 32, T = 512.
        Shape {
            name: "260K",
            config: Config {
                dim: 64,
                hidden_dim: 172,
                n_layers: 5,
                n_heads: 8,
                n_kv_heads: 4,
                vocab_size: 512,
                seq_len: 512,
                shared_classifier: true,
            },
            batch: 32,
            seq_len: 512,
        },
        // train.py's defaults (stories15M): dim 288, 6 layers, 6 heads, vocab 32000, B = 8,
        // T = 256.
        Shape {
            name: "15M",
            config: Config {
                dim: 288,
                hidden_dim: 768,
                n_layers: 6,
                n_heads: 6,
                n_kv_heads: 6,
                vocab_size: 32000,
                seq_len: 256,
                shared_classifier: true,
            },
            batch: 8,
            seq_len: 256,
        },
    ]
}

/// `6 P + 12 L T C` (see the module comment).
fn flops_per_token(c: &Config, seq_len: usize) -> f64 {
    let per_layer = 2 * c.dim * c.dim + 2 * c.dim * c.kv_dim() + 3 * c.dim * c.hidden_dim;
    let in_products = c.n_layers * per_layer + c.vocab_size * c.dim;
    6.0 * in_products as f64 + 12.0 * (c.n_layers * seq_len * c.dim) as f64
}

/// Seconds of each part of a step, the fastest of the timed steps.
#[derive(Clone, Copy)]
struct StepTimes {
    forward: f64,
    forward_backward: f64,
    optimizer: f64,
}

fn main() {
    let steps: usize = env_or("BENCH_TRAIN_STEPS", "3").parse().unwrap_or(3).max(1);
    if let Ok(child) = std::env::var(CHILD) {
        return measure_one(&child, steps);
    }
    let threads = gemm::thread_count();
    println!("training benchmark: {threads} threads, {}", cpu_name());
    let peak = measure_peak(threads);
    let models = env_or("BENCH_TRAIN_MODELS", "260K,15M");
    let dtypes = env_or("BENCH_TRAIN_DTYPES", "float32,bfloat16");
    println!(
        "\n{:<5} {:>8} {:>9} {:>8} {:>9} {:>7} {:>6} | {:>8} {:>8} {:>8} | {:>8} {:>7} {:>7}",
        "model",
        "dtype",
        "B x T",
        "MFLOP/t",
        "tok/s",
        "GFLOP/s",
        "peak",
        "fwd ms",
        "bwd ms",
        "opt ms",
        "RSS MiB",
        "before",
        "budget"
    );
    for shape in shapes() {
        if !models.split(',').any(|m| m.trim() == shape.name) {
            continue;
        }
        for dtype in ["float32", "bfloat16"] {
            if !dtypes.split(',').any(|d| d.trim() == dtype) {
                continue;
            }
            let peak_rate = match dtype {
                "float32" => peak.f32,
                _ => peak.bf16.unwrap_or(peak.f32),
            };
            // Each configuration in a process of its own, as a training run would be: what one
            // leaves in the allocator's free lists must not count for (or against) the next.
            let status = std::process::Command::new(std::env::current_exe().expect("this bench"))
                .args(std::env::args().skip(1))
                .env(CHILD, format!("{} {dtype} {peak_rate}", shape.name))
                .status();
            if !status.is_ok_and(|s| s.success()) {
                eprintln!("{} {dtype}: the measuring process failed", shape.name);
            }
        }
    }
    println!(
        "(tok/s: B x T over the fastest full step of {steps}; FLOPs per token 6 P + 12 L T C; \
         peak: share of the f32 peak for float32, of the vdpbf16ps peak for bfloat16; \
         RSS: VmHWM of the configuration's own process, of which `before` was there before \
         training began; budget for the rest: parameters x 16 bytes + workspace + pack buffers)"
    );
}

/// The variable that asks a child process to measure one configuration: `"model dtype peak"`
/// (the peak in FLOP/s, measured once by the parent).
const CHILD: &str = "BENCH_TRAIN_ONE";

/// Measure the configuration `spec` (see [`CHILD`]) and print its row of the table.
fn measure_one(spec: &str, steps: usize) {
    let mut words = spec.split_whitespace();
    let (Some(name), Some(dtype), Some(peak_rate)) = (words.next(), words.next(), words.next())
    else {
        panic!("{CHILD}: expected \"model dtype peak\", got {spec:?}");
    };
    let shape = shapes()
        .into_iter()
        .find(|s| s.name == name)
        .expect("a known model");
    let precision = match dtype {
        "float32" => Precision::F32,
        _ => Precision::Bf16,
    };
    let peak_rate: f64 = peak_rate.parse().expect("the peak");
    // The program before training: its code paged in and its threads started by a few steps
    // of a tiny model (whose buffers are a few KiB).
    let tiny = Shape {
        name: "tiny",
        config: Config {
            dim: 16,
            hidden_dim: 32,
            n_layers: 1,
            n_heads: 2,
            n_kv_heads: 1,
            vocab_size: 32,
            seq_len: 8,
            shared_classifier: true,
        },
        batch: 1,
        seq_len: 8,
    };
    run(&tiny, precision, 1);
    reset_peak_rss();
    let before = peak_rss_mib();
    let (times, budget) = run(&shape, precision, steps);
    let tokens = (shape.batch * shape.seq_len) as f64;
    let step = times.forward_backward + times.optimizer;
    let tok_per_s = tokens / step;
    let flops = flops_per_token(&shape.config, shape.seq_len);
    let rate = flops * tok_per_s;
    let ms = |s: f64| s * 1e3;
    let mib = |m: Option<f64>| m.map_or("?".into(), |m| format!("{m:.1}"));
    println!(
        "{:<5} {:>8} {:>9} {:>8.2} {:>9.0} {:>7.1} {:>5.1}% | {:>8.1} {:>8.1} {:>8.1} | {:>8} {:>7} {:>7.1}",
        shape.name,
        dtype,
        format!("{}x{}", shape.batch, shape.seq_len),
        flops / 1e6,
        tok_per_s,
        rate / 1e9,
        100.0 * rate / peak_rate,
        ms(times.forward),
        ms(times.forward_backward - times.forward),
        ms(times.optimizer),
        mib(peak_rss_mib()),
        mib(before),
        budget as f64 / (1 << 20) as f64,
    );
}

/// One warm-up and `steps` timed training steps of `shape`; their fastest times, and the memory
/// budget in bytes: parameters x 16, the workspace and the pack buffers.
fn run(shape: &Shape, precision: Precision, steps: usize) -> (StepTimes, usize) {
    let c = &shape.config;
    let mut params = train::init_params(c, 1).expect("parameters");
    let mut grads = params.zeros_like().expect("gradients");
    let mut adam = AdamW::new(&params).expect("moments");
    let mut ws =
        Workspace::with_precision(c, shape.batch, shape.seq_len, precision).expect("workspace");
    let tokens = random_tokens(shape.batch * shape.seq_len + 1, c.vocab_size);
    let (inputs, targets) = (&tokens[..tokens.len() - 1], &tokens[1..]);
    let hyper = AdamWConfig::default();
    let mut best = StepTimes {
        forward: f64::INFINITY,
        forward_backward: f64::INFINITY,
        optimizer: f64::INFINITY,
    };
    for step in 0..=steps {
        let start = Instant::now();
        train::loss(&params, &mut ws, inputs, targets).expect("forward");
        let forward = start.elapsed().as_secs_f64();
        let start = Instant::now();
        train::forward_backward(
            &params,
            &mut grads,
            &mut ws,
            inputs,
            targets,
            Dropout::OFF,
            1.0,
        )
        .expect("forward and backward");
        let forward_backward = start.elapsed().as_secs_f64();
        let start = Instant::now();
        train::clip_grads(&mut grads, 1.0);
        adam.step(&mut params, &grads, 1e-4, &hyper).expect("AdamW");
        grads.data_mut().fill(0.0);
        let optimizer = start.elapsed().as_secs_f64();
        if step > 0 {
            best.forward = best.forward.min(forward);
            best.forward_backward = best.forward_backward.min(forward_backward);
            best.optimizer = best.optimizer.min(optimizer);
        }
    }
    (
        best,
        params.len() * 16 + ws.bytes() + gemm::pack_buffer_bytes(),
    )
}

/// `len` token ids below `vocab` from a fixed xorshift sequence.
fn random_tokens(len: usize, vocab: usize) -> Vec<u16> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % vocab as u64) as u16
        })
        .collect()
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.into())
}

/// Start a new peak of resident memory (Linux: writing 5 to `clear_refs` resets `VmHWM`).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// `VmHWM` of `/proc/self/status` in MiB (Linux).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
