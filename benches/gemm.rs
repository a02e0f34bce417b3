//! `cargo bench --bench gemm`: how fast the training matrix products (`llama2::gemm`) run on
//! this machine, against its FLOP peak.
//!
//! First it measures the peak: every thread runs a loop of independent fused multiply-adds
//! (AVX-512, AVX2) and of `vdpbf16ps` where the CPU has it, with nothing else to do. Then, for
//! the linear layers of the two training shapes of the project (stories15M at B x T = 8 x 256,
//! the stories260K recipe at 32 x 512), it prints GFLOP/s of the forward product (`nt`), the
//! input gradient (`nn`) and the weight gradient (`tn`), in f32 and bf16 on each instruction
//! set, and the share of the peak of the best path.
//!
//! Times are **CPU time** (the run time the kernel's scheduler counted for this process's
//! threads, from `/proc/self/task/*/schedstat`) divided by the thread count, not wall time, so
//! that other processes on a shared machine do not count against us: GFLOP/s is what the cores
//! would do if they were ours alone (and only an estimate where threads wait on each other,
//! which costs no CPU time). Each figure is the fastest of repeated calls. Without
//! `/proc` (not Linux), wall time is used.
//!
//! `RAYON_NUM_THREADS` sets the threads (default: all cores); `BENCH_GEMM_MODELS=15M,260K`
//! picks the shapes. `BENCH_GEMM_ISAS` picks
//! instruction sets (`plain,avx2,avx512,avx512bf16`; default all but `plain`, whose portable
//! fused multiply-adds are slow on x86 builds without FMA).

use std::time::{Duration, Instant};

use llama2::gemm::{self, Isa, Layout};

#[path = "common/peak.rs"]
mod peak;
use peak::{cpu_name, measure_peak};

/// A product to measure: which model and layer, and its `(m, k, n)`.
struct Shape {
    model: &'static str,
    layer: &'static str,
    layout: Layout,
    m: usize,
    k: usize,
    n: usize,
}

/// The products of one training step of a model: for each distinct linear layer `(out, in)`,
/// forward `(rows, in) x (out, in)ᵀ`, input gradient `(rows, out) x (out, in)` and weight
/// gradient `(rows, out)ᵀ x (rows, in)`.
fn shapes(model: &'static str, rows: usize, layers: &[(&'static str, usize, usize)]) -> Vec<Shape> {
    let mut shapes = Vec::new();
    for &(layer, out, input) in layers {
        let of = |layout, m, k, n| Shape {
            model,
            layer,
            layout,
            m,
            k,
            n,
        };
        shapes.push(of(Layout::Nt, rows, input, out));
        shapes.push(of(Layout::Nn, rows, out, input));
        shapes.push(of(Layout::Tn, out, rows, input));
    }
    shapes
}

fn main() {
    let threads = gemm::thread_count();
    let isas = chosen_isas();
    println!("gemm benchmark: {threads} threads, {}", cpu_name());
    let peak = measure_peak(threads);
    let mut all = shapes(
        "15M",
        2048,
        &[
            ("wq", 288, 288),
            ("w1", 768, 288),
            ("w2", 288, 768),
            ("cls", 32000, 288),
        ],
    );
    all.extend(shapes(
        "260K",
        16384,
        &[
            ("wq", 64, 64),
            ("wk", 32, 64),
            ("w1", 172, 64),
            ("w2", 64, 172),
            ("cls", 512, 64),
        ],
    ));
    let models = std::env::var("BENCH_GEMM_MODELS").unwrap_or_else(|_| "15M,260K".into());
    all.retain(|shape| models.split(',').any(|name| name.trim() == shape.model));

    print!(
        "{:<5} {:<4} {:<3} {:>6} {:>6} {:>6} |",
        "model", "op", "", "m", "k", "n"
    );
    for isa in &isas {
        print!(" {:>10}", format!("f32 {}", short(*isa)));
    }
    for isa in &isas {
        print!(" {:>11}", format!("bf16 {}", short(*isa)));
    }
    println!(" | {:>8} {:>8}", "f32 peak", "bf16 pk");
    for shape in &all {
        let Shape {
            model,
            layer,
            layout,
            m,
            k,
            n,
        } = *shape;
        let op = match layout {
            Layout::Nt => "nt",
            Layout::Nn => "nn",
            Layout::Tn => "tn",
        };
        print!("{model:<5} {layer:<4} {op:<3} {m:>6} {k:>6} {n:>6} |");
        let flops = 2.0 * (m * k * n) as f64;
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 104729) % 1000) as f32 * 1e-3 - 0.5)
            .collect();
        let (mut a16, mut b16) = (vec![0u16; a.len()], vec![0u16; b.len()]);
        gemm::to_bf16(&mut a16, &a);
        gemm::to_bf16(&mut b16, &b);
        let mut out = vec![0.0f32; m * n];
        let (mut best32, mut best16) = (0.0f64, 0.0f64);
        for &isa in &isas {
            let time = fastest(threads, || {
                gemm::matmul(isa, layout, &mut out, &a, &b, (m, k, n), false)
            });
            let gflops = flops / time / 1e9;
            best32 = best32.max(gflops);
            print!(" {gflops:>10.1}");
        }
        for &isa in &isas {
            let time = fastest(threads, || {
                gemm::matmul_bf16(isa, layout, &mut out, &a16, &b16, (m, k, n), false)
            });
            let gflops = flops / time / 1e9;
            best16 = best16.max(gflops);
            print!(" {gflops:>11.1}");
        }
        let bf16_peak = peak.bf16.unwrap_or(peak.f32);
        println!(
            " | {:>7.0}% {:>7.0}%",
            100.0 * best32 * 1e9 / peak.f32,
            100.0 * best16 * 1e9 / bf16_peak
        );
    }
    println!("(GFLOP/s = 2 m k n / time; f32 peak and bf16 pk: the best f32 and bf16 figure of the row as a share of the measured peaks)");
}

/// The instruction sets to measure: `BENCH_GEMM_ISAS`, else all this CPU has but the plain one.
fn chosen_isas() -> Vec<Isa> {
    let names =
        std::env::var("BENCH_GEMM_ISAS").unwrap_or_else(|_| "avx2,avx512,avx512bf16".into());
    Isa::available()
        .into_iter()
        .filter(|isa| names.split(',').any(|name| name.trim() == short(*isa)))
        .collect()
}

fn short(isa: Isa) -> &'static str {
    match isa {
        Isa::Plain => "plain",
        Isa::Avx2 => "avx2",
        Isa::Avx512 => "avx512",
        Isa::Avx512Bf16 => "avx512bf16",
    }
}

/// The fastest of repeated calls of `f`, in seconds of CPU time per thread (see the module
/// comment): calls go on for about 0.3 s (at least 3).
fn fastest(threads: usize, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut best = f64::INFINITY;
    let mut calls = 0;
    while calls < 3 || start.elapsed() < Duration::from_millis(300) {
        let (wall, cpu) = (Instant::now(), process_cpu_seconds());
        f();
        let time = match (cpu, process_cpu_seconds()) {
            (Some(before), Some(after)) => (after - before) / threads as f64,
            _ => wall.elapsed().as_secs_f64(),
        };
        best = best.min(time);
        calls += 1;
    }
    best
}

/// Run time of all of this process's threads so far, in seconds (Linux).
fn process_cpu_seconds() -> Option<f64> {
    let mut total = 0.0;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let path = task.ok()?.path().join("schedstat");
        // A thread may end between the listing and the read: it ran no kernel of ours.
        if let Ok(stat) = std::fs::read_to_string(path) {
            total += stat.split_whitespace().next()?.parse::<f64>().ok()? * 1e-9;
        }
    }
    Some(total)
}
