//! `make bench`: how fast llama2-rs runs llama2.c checkpoints (float and int8) on this machine.
//!
//! On first use it writes checkpoints with random weights in the shapes of the TinyStories
//! models (stories15M, stories42M, stories110M) into `target/bench-models/`, so nothing needs
//! downloading, and quantizes each to int8 (version 2, the largest row-aligned group size up
//! to 64, as `llama2 quantize` does); the bundled stories260K is used as it is. Then it prints
//! one table with a row per model:
//!
//! * **decode**: tokens per second of the `llama2` binary at `-t 0 -n 256` with a short prompt,
//!   as it reports it (`achieved tok/s`), in fast arithmetic (the default) and with `--exact`.
//!   Random weights are fine at temperature 0: every run computes the same tokens, and the
//!   speed does not depend on what they are. **kernel** is the fast kernel the model chose by
//!   timing (instruction set, rows per pass, prefetch distance).
//! * **llama2.c**: the same command with llama2.c's `run`, if `LLAMA2C_RUN` names one (build it
//!   with `make runomp` in a llama2.c checkout), with as many OpenMP threads as we use and with
//!   one; for the int8 rows, its `runq`, named by `LLAMA2C_RUNQ`. The programs take turns, each
//!   round in another order, and each decode figure is the median of `BENCH_REPEATS` (5) runs.
//! * **prefill**: a prompt of up to 300 tokens (the context, if shorter) through
//!   `Model::forward_batch`, and the same tokens one at a time through `Model::forward`, in
//!   both arithmetics.
//! * **TTFT**: time to first token, from opening the model to sampling after that prompt.
//! * **peak RSS**: the high-water mark of resident memory of a process that did all of the
//!   above (Linux only).
//! * **bandwidth**: bytes of weights decoding reads per token times decode tok/s, beside the read
//!   bandwidth of this machine, measured by a parallel sum over a buffer far larger than the
//!   caches after each round of decode runs (the median, like the speeds).
//!
//! Prefill, TTFT and memory are measured in a child process (this program run again with
//! `--measure`), so that its peak memory is its own. `RAYON_NUM_THREADS` sets the thread count
//! (default: all cores); `BENCH_MODELS=260K,15M` picks models.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use llama2::convert::{self, FloatTensors};
use llama2::{Arithmetic, Config, Format, Logits, Model, Sampler, Tokenizer};

/// A model to measure: a name, the file, its tokenizer, and how to make it if synthetic.
struct Bench {
    name: &'static str,
    path: PathBuf,
    tokenizer: PathBuf,
    synthetic: Option<Synthetic>,
}

/// How a synthetic model is made: random float weights of a shape, optionally quantized.
#[derive(Clone)]
struct Synthetic {
    config: Config,
    /// For an int8 model, the float model it is quantized from.
    quantized_from: Option<PathBuf>,
}

/// The prompt of the decode runs (both programs).
const DECODE_PROMPT: &str = "Once upon a time";
/// Positions of the decode runs.
const DECODE_STEPS: usize = 256;
/// Longest prompt of the prefill measurement.
const PREFILL_TOKENS: usize = 300;
/// Size of the buffer the read bandwidth is measured on.
const BANDWIDTH_BYTES: usize = 1 << 30;

/// Text for the prefill prompt (repeated as needed).
const STORY: &str = "Once upon a time, there was a little girl named Lily. She loved to play \
outside in the park with her friends. One day, she saw a big red ball under a tree. She ran to \
the ball and picked it up. It was shiny and new. Lily wanted to share the ball with her friend \
Tom, so she walked over to the swings where he was playing. Tom smiled and said thank you, and \
they played catch until the sun went down. When it was time to go home, Lily gave Tom a hug. ";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--measure") {
        measure_child(&args[1..]);
        return;
    }
    let threads = thread_count();
    let repeats = env_number("BENCH_REPEATS", 5);
    let run = std::env::var_os("LLAMA2C_RUN").map(PathBuf::from);
    let runq = std::env::var_os("LLAMA2C_RUNQ").map(PathBuf::from);
    let benches = selected_benches();
    for bench in &benches {
        if let Some(synthetic) = &bench.synthetic {
            ensure_synthetic(&bench.path, synthetic);
        }
    }

    let bandwidth_buffer = BandwidthBuffer::new();
    let mut rows = Vec::new();
    for bench in &benches {
        eprintln!("measuring {} ...", bench.name);
        let int8 = bench
            .synthetic
            .as_ref()
            .is_some_and(|s| s.quantized_from.is_some());
        let llama2c = if int8 {
            runq.as_deref()
        } else {
            run.as_deref()
        };
        rows.push(measure(bench, threads, repeats, llama2c, &bandwidth_buffer));
    }
    let llama2c = run.is_some() || runq.is_some();
    println!(
        "CPU: {}; {threads} threads; read bandwidth: {threads} threads summing {} MiB, \
         measured after each round of decode runs.",
        cpu_model(),
        BANDWIDTH_BYTES >> 20,
    );
    println!();
    print_table(&rows, threads, llama2c);
}

/// Measurements of one model.
struct Row {
    name: &'static str,
    file_mb: f64,
    /// The fast kernel the model chose.
    kernel: String,
    decode: f64,
    decode_exact: f64,
    llama2c_threads: Option<f64>,
    llama2c_single: Option<f64>,
    prompt: usize,
    prefill: f64,
    one_by_one: f64,
    prefill_exact: f64,
    one_by_one_exact: f64,
    ttft_ms: f64,
    peak_rss_mb: Option<f64>,
    /// Bytes of weights one decoding step reads.
    weight_bytes: f64,
    /// The machine's read bandwidth, the median of the measurements between the decode runs.
    bandwidth: f64,
}

/// Measure one model. On a shared machine speeds vary from minute to minute, so the decode runs
/// of the programs alternate, the bandwidth is measured after each round of them, and every
/// figure is the median of its `repeats` measurements.
fn measure(
    bench: &Bench,
    threads: usize,
    repeats: usize,
    llama2c: Option<&Path>,
    bandwidth_buffer: &BandwidthBuffer,
) -> Row {
    let model = Model::open(&bench.path).expect("the benchmark model loads");
    let config = *model.config();
    let steps = DECODE_STEPS.min(config.seq_len).to_string();
    let decode_args = |program: &Path| -> Command {
        let mut command = Command::new(program);
        command.arg(&bench.path).arg("-z").arg(&bench.tokenizer);
        command.args(["-t", "0", "-n", &steps, "-i", DECODE_PROMPT]);
        command
    };

    // The decode commands: ours (fast, then exact), then llama2.c's with our thread count and
    // with one.
    let mut commands = Vec::new();
    for arithmetic in [&[][..], &["--exact"]] {
        let mut ours = decode_args(Path::new(env!("CARGO_BIN_EXE_llama2")));
        ours.args(["--threads", &threads.to_string()])
            .args(arithmetic);
        commands.push(ours);
    }
    if let Some(run) = llama2c {
        for n in [threads, 1] {
            let mut theirs = decode_args(run);
            theirs.env("OMP_NUM_THREADS", n.to_string());
            commands.push(theirs);
        }
    }
    let mut speeds = vec![Vec::new(); commands.len()];
    let mut bandwidths = Vec::new();
    for repeat in 0..repeats {
        // The programs take turns going first, so that none always runs right after another.
        for k in 0..commands.len() {
            let i = (k + repeat) % commands.len();
            speeds[i].push(achieved_tok_s(&mut commands[i]));
        }
        bandwidths.push(bandwidth_buffer.read_bandwidth(threads));
    }
    let (decode, bandwidth) = (median(&speeds[0]), median(&bandwidths));
    let decode_exact = median(&speeds[1]);
    let with_threads = speeds.get(2).map(|s| median(s));
    let single = speeds.get(3).map(|s| median(s));

    let prompt = PREFILL_TOKENS.min(config.seq_len);
    let child = Command::new(std::env::current_exe().expect("own path"))
        .arg("--measure")
        .arg(&bench.path)
        .arg(&bench.tokenizer)
        .arg(prompt.to_string())
        .arg(repeats.to_string())
        .env("RAYON_NUM_THREADS", threads.to_string())
        .output()
        .expect("the measuring child runs");
    assert!(
        child.status.success(),
        "measuring {} failed: {}",
        bench.name,
        String::from_utf8_lossy(&child.stderr)
    );
    let report = String::from_utf8_lossy(&child.stdout);
    let field = |name: &str| -> Option<f64> {
        report
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
    };
    Row {
        name: bench.name,
        file_mb: model.file_size() as f64 / 1e6,
        kernel: model.kernels().fast_kernel().map_or("?".into(), |k| {
            format!("{} x{} pf{}", k.isa.name(), k.rows, k.prefetch)
        }),
        decode,
        decode_exact,
        llama2c_threads: with_threads,
        llama2c_single: single,
        prompt,
        prefill: field("prefill").unwrap_or(0.0),
        one_by_one: field("one_by_one").unwrap_or(0.0),
        prefill_exact: field("prefill_exact").unwrap_or(0.0),
        one_by_one_exact: field("one_by_one_exact").unwrap_or(0.0),
        ttft_ms: field("ttft_ms").unwrap_or(0.0),
        peak_rss_mb: field("peak_rss_kb").map(|kb| kb * 1024.0 / 1e6),
        weight_bytes: weight_bytes_per_token(&config, model.format()) as f64,
        bandwidth,
    }
}

/// The middle value of `values` (the mean of the two middle ones for an even count).
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n == 0 {
        return 0.0;
    }
    (sorted[(n - 1) / 2] + sorted[n / 2]) / 2.0
}

/// Run a decode command and read the `achieved tok/s: X` it prints on stderr.
fn achieved_tok_s(command: &mut Command) -> f64 {
    let output = command.output().expect("the decode command runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{command:?} failed: {stderr}");
    stderr
        .lines()
        .find_map(|line| line.strip_prefix("achieved tok/s:")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{command:?} printed no tok/s: {stderr}"))
}

/// The child: time to first token, prefill speeds and peak memory of one model, printed as
/// `name=value` pairs on stdout.
fn measure_child(args: &[String]) {
    let [model_path, tokenizer_path, prompt, repeats] = args else {
        panic!("usage: bench --measure <model> <tokenizer> <prompt tokens> <repeats>");
    };
    let prompt: usize = prompt.parse().expect("prompt length");
    let repeats: usize = repeats.parse().expect("repeats");

    // Time to first token: everything a fresh process does before it can print a token.
    let start = Instant::now();
    let model = Model::open(model_path).expect("model");
    let tokenizer = Tokenizer::open(tokenizer_path, model.config().vocab_size).expect("tokenizer");
    let tokens = prompt_tokens(&tokenizer, prompt);
    let mut state = model.new_state().expect("state");
    let mut sampler = Sampler::new(0.0, 0.9, 1).expect("sampler");
    let logits = model
        .forward_batch(&mut state, &tokens, 0, Logits::Last)
        .expect("prefill");
    sampler.sample(logits);
    let ttft = start.elapsed().as_secs_f64();

    print!("ttft_ms={:.1}", ttft * 1e3);
    let exact = Model::open_with(model_path, Arithmetic::Exact).expect("model");
    for (model, suffix) in [(&model, ""), (&exact, "_exact")] {
        let (prefill, one_by_one) = prefill_speeds(model, &mut state, &tokens, repeats);
        print!(" prefill{suffix}={prefill:.2} one_by_one{suffix}={one_by_one:.2}");
    }
    if let Some(kb) = peak_rss_kb() {
        print!(" peak_rss_kb={kb}");
    }
    println!();
}

/// Tokens per second of `tokens` through `model` as one batch (the best of `repeats` runs) and
/// one at a time.
fn prefill_speeds(
    model: &Model,
    state: &mut llama2::State,
    tokens: &[u32],
    repeats: usize,
) -> (f64, f64) {
    let mut prefill = 0.0f64;
    for _ in 0..repeats {
        state.reset();
        let start = Instant::now();
        model
            .forward_batch(state, tokens, 0, Logits::Last)
            .expect("prefill");
        prefill = prefill.max(tokens.len() as f64 / start.elapsed().as_secs_f64());
    }
    state.reset();
    let start = Instant::now();
    for (pos, &token) in tokens.iter().enumerate() {
        model.forward(state, token, pos).expect("forward");
    }
    let one_by_one = tokens.len() as f64 / start.elapsed().as_secs_f64();
    (prefill, one_by_one)
}

/// The CPU's model name, as `/proc/cpuinfo` gives it (Linux), with its family and model numbers.
fn cpu_model() -> String {
    let Ok(info) = fs::read_to_string("/proc/cpuinfo") else {
        return "unknown".into();
    };
    let field = |name: &str| {
        info.lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
            .and_then(|l| l.split_once(':'))
            .map_or(String::new(), |(_, v)| v.trim().to_string())
    };
    format!(
        "{} (family {}, model {})",
        field("model name"),
        field("cpu family"),
        field("model")
    )
}

/// `n` tokens of the story prompt, BOS first.
fn prompt_tokens(tokenizer: &Tokenizer, n: usize) -> Vec<u32> {
    let mut text = String::new();
    loop {
        text.push_str(STORY);
        let tokens = tokenizer
            .encode(text.as_bytes(), true, false)
            .expect("encode");
        if tokens.len() >= n {
            return tokens[..n].to_vec();
        }
    }
}

/// The process's peak resident memory (`VmHWM`), in KiB; Linux only.
fn peak_rss_kb() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Bytes of weights one decoding step reads: every matrix, the norms, the classifier, and one
/// row of the embedding table (int8 matrices: one byte per value and a float per group).
fn weight_bytes_per_token(c: &Config, format: Format) -> usize {
    let (dim, hidden, kv_dim) = (c.dim, c.hidden_dim, c.kv_dim());
    let matrix_values = c.n_layers * (2 * dim * dim + 2 * dim * kv_dim + 3 * dim * hidden)
        + c.vocab_size * dim
        + dim;
    let norms = c.n_layers * 2 * dim + dim;
    let matrix_bytes = match format {
        Format::Int8V2 { group_size } => matrix_values + 4 * matrix_values / group_size,
        _ => 4 * matrix_values,
    };
    matrix_bytes + 4 * norms
}

/// The buffer the read bandwidth is measured on, allocated (and touched) once: a fresh
/// gigabyte before every measurement would leave the kernel reclaiming memory during the runs
/// that follow.
struct BandwidthBuffer(Vec<f32>);

impl BandwidthBuffer {
    fn new() -> BandwidthBuffer {
        BandwidthBuffer(vec![1.0f32; BANDWIDTH_BYTES / 4])
    }

    /// Read bandwidth of this machine: `threads` threads sum disjoint parts of the buffer; the
    /// best of three passes, in GB/s.
    fn read_bandwidth(&self, threads: usize) -> f64 {
        let part = self.0.len().div_ceil(threads);
        let mut best = 0.0f64;
        for _ in 0..3 {
            let start = Instant::now();
            let total: f32 = std::thread::scope(|scope| {
                let workers: Vec<_> = self
                    .0
                    .chunks(part)
                    .map(|chunk| scope.spawn(move || sum(chunk)))
                    .collect();
                workers.into_iter().map(|w| w.join().expect("sum")).sum()
            });
            let seconds = start.elapsed().as_secs_f64();
            assert!(total > 0.0);
            best = best.max(BANDWIDTH_BYTES as f64 / seconds / 1e9);
        }
        best
    }
}

/// Sum with 64 independent running sums, so the adds keep up with memory.
fn sum(values: &[f32]) -> f32 {
    let mut sums = [0.0f32; 64];
    let mut chunks = values.chunks_exact(64);
    for chunk in &mut chunks {
        for (s, &v) in sums.iter_mut().zip(chunk) {
            *s += v;
        }
    }
    sums.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

fn print_table(rows: &[Row], threads: usize, with_llama2c: bool) {
    let mut header = "| model | file MB | fast kernel | decode tok/s | --exact tok/s |".to_string();
    if with_llama2c {
        header.push_str(&format!(" llama2.c {threads} thr | llama2.c 1 thr |"));
    }
    header.push_str(
        " prompt | prefill tok/s | one by one tok/s | --exact prefill | --exact one by one \
         | TTFT ms | peak RSS MB | decode GB/s | read GB/s | decode / read |",
    );
    println!("{header}");
    let columns = header.matches('|').count() - 1;
    println!("|{}", " --- |".repeat(columns));
    for r in rows {
        let mut line = format!(
            "| {} | {:.0} | {} | {:.1} | {:.1} |",
            r.name, r.file_mb, r.kernel, r.decode, r.decode_exact
        );
        if with_llama2c {
            let show = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.1}"));
            line.push_str(&format!(
                " {} | {} |",
                show(r.llama2c_threads),
                show(r.llama2c_single)
            ));
        }
        let rss = r
            .peak_rss_mb
            .map_or("n/a".to_string(), |mb| format!("{mb:.0}"));
        let effective = r.weight_bytes * r.decode / 1e9;
        line.push_str(&format!(
            " {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {rss} | {effective:.1} | {:.1} | {:.0}% |",
            r.prompt,
            r.prefill,
            r.one_by_one,
            r.prefill_exact,
            r.one_by_one_exact,
            r.ttft_ms,
            r.bandwidth,
            100.0 * effective / r.bandwidth
        ));
        println!("{line}");
    }
}

/// The models to measure, filtered by `BENCH_MODELS` (names or parts of names, comma-separated).
fn selected_benches() -> Vec<Bench> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("target").join("bench-models");
    let llama_tokenizer = root.join("tokenizer.bin");
    let stories = |dim, hidden_dim, n_layers, n_heads, seq_len| Config {
        dim,
        hidden_dim,
        n_layers,
        n_heads,
        n_kv_heads: n_heads,
        vocab_size: 32000,
        seq_len,
        shared_classifier: true,
    };
    let float = |name, file: &str, config| Bench {
        name,
        path: dir.join(file),
        tokenizer: llama_tokenizer.clone(),
        synthetic: Some(Synthetic {
            config,
            quantized_from: None,
        }),
    };
    let int8 = |name, file: &str, float: &Bench| Bench {
        name,
        path: dir.join(file),
        tokenizer: llama_tokenizer.clone(),
        synthetic: Some(Synthetic {
            config: float.synthetic.as_ref().expect("synthetic").config,
            quantized_from: Some(float.path.clone()),
        }),
    };
    let s15 = float(
        "stories15M",
        "stories15M-random.bin",
        stories(288, 768, 6, 6, 256),
    );
    let s42 = float(
        "stories42M",
        "stories42M-random.bin",
        stories(512, 1376, 8, 8, 1024),
    );
    let s110 = float(
        "stories110M",
        "stories110M-random.bin",
        stories(768, 2048, 12, 12, 1024),
    );
    let q15 = int8("stories15M int8", "stories15M-random-q80.bin", &s15);
    let q42 = int8("stories42M int8", "stories42M-random-q80.bin", &s42);
    let q110 = int8("stories110M int8", "stories110M-random-q80.bin", &s110);
    let all = vec![
        Bench {
            name: "stories260K",
            path: root.join("tests/models/stories260K.bin"),
            tokenizer: root.join("tests/models/tok512.bin"),
            synthetic: None,
        },
        s15,
        s42,
        s110,
        q15,
        q42,
        q110,
    ];
    let Ok(filter) = std::env::var("BENCH_MODELS") else {
        return all;
    };
    let wanted: Vec<&str> = filter.split(',').map(str::trim).collect();
    all.into_iter()
        .filter(|b| wanted.iter().any(|w| !w.is_empty() && b.name.contains(w)))
        .collect()
}

/// Write the synthetic checkpoint at `path` unless a valid one is already there: random weights
/// of the shape (legacy format, which llama2.c's `run` reads), or the int8 quantization of
/// another synthetic model.
fn ensure_synthetic(path: &Path, synthetic: &Synthetic) {
    let expected_format = |format: Format| {
        matches!(format, Format::Int8V2 { .. }) == synthetic.quantized_from.is_some()
    };
    if Model::open_with(path, Arithmetic::Exact)
        .is_ok_and(|m| *m.config() == synthetic.config && expected_format(m.format()))
    {
        return;
    }
    eprintln!("writing {} ...", path.display());
    fs::create_dir_all(path.parent().expect("a folder")).expect("create the model folder");
    if let Some(float_path) = &synthetic.quantized_from {
        let float = Synthetic {
            config: synthetic.config,
            quantized_from: None,
        };
        ensure_synthetic(float_path, &float);
        let model = Model::open_with(float_path, Arithmetic::Exact).expect("the float model loads");
        convert::quantize_to_file(&model, path, None).expect("quantize the model");
        return;
    }
    let partial = path.with_extension("partial");
    let mut out = BufWriter::new(File::create(&partial).expect("create the model file"));
    let tensors = FloatTensors::random(synthetic.config, 42);
    convert::write_float(&mut out, &tensors, Format::Legacy).expect("write the model");
    out.flush().expect("write the model");
    fs::rename(&partial, path).expect("rename the model file");
}

fn thread_count() -> usize {
    let available = std::thread::available_parallelism().map_or(1, |n| n.get());
    env_number("RAYON_NUM_THREADS", available).max(1)
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|&v| v > 0)
        .unwrap_or(default)
}
