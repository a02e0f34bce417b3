//! `cargo bench --bench fast`: how close the fast kernels (`llama2::fast`) come to this
//! machine's read bandwidth, on the matrix shapes of stories15M, 42M and 110M.
//!
//! Decoding reads every weight once per token, so a matrix-vector product can go no faster
//! than memory delivers the matrix. This program measures that ceiling (a parallel sum over a
//! buffer far larger than the caches), then each kernel's speed in GB/s of weights read:
//!
//! * **f32**, **int8 groups of 32, 48 and 64** (bytes: one per value plus a
//!   float per group);
//! * each model's four matrix shapes: `dim x dim` (wq, wk, wv, wo), `hidden x dim` (w1, w3),
//!   `dim x hidden` (w2) and `vocab x dim` (the classifier);
//! * **1 thread** and **2 threads** (rayon, blocks of 32 rows, as decoding splits them);
//! * **cold**: copies of the matrix taking turns, together far larger than the caches, as a
//!   model's layers do; **warm**: one copy again and again (from cache, when it fits).
//!
//! The kernel of every row is the one the tuner (`llama2::fast::tune`) picks for the model, on
//! its largest matrix (the classifier), from memory.
//! A sweep of every candidate kernel on one shape shows what the choice is worth, and an
//! estimate of decode speed (weights only: bytes per token over the measured GB/s) ends it.
//! `FAST_BENCH=quick` measures less.

use std::time::{Duration, Instant};

use llama2::fast::tune::{self, Residency};
use llama2::fast::{self, Isa, Kernel};
use rayon::prelude::*;

/// Bytes the cold measurements cycle through, and the bandwidth probe reads.
const COLD_BYTES: usize = 768 << 20;
/// Rows a rayon task takes.
const BLOCK_ROWS: usize = 32;
/// How long one measurement runs (at least one pass).
const MEASURE: Duration = Duration::from_millis(300);

/// A model's shape.
struct Shape {
    name: &'static str,
    dim: usize,
    hidden: usize,
    layers: usize,
}

const SHAPES: [Shape; 3] = [
    Shape {
        name: "15M",
        dim: 288,
        hidden: 768,
        layers: 6,
    },
    Shape {
        name: "42M",
        dim: 512,
        hidden: 1376,
        layers: 8,
    },
    Shape {
        name: "110M",
        dim: 768,
        hidden: 2048,
        layers: 12,
    },
];
const VOCAB: usize = 32000;

impl Shape {
    /// `(name, rows, cols, matrices of this shape per token)`.
    fn matrices(&self) -> [(&'static str, usize, usize, usize); 4] {
        [
            ("dim x dim", self.dim, self.dim, 4 * self.layers),
            ("hidden x dim", self.hidden, self.dim, 2 * self.layers),
            ("dim x hidden", self.dim, self.hidden, self.layers),
            ("vocab x dim", VOCAB, self.dim, 1),
        ]
    }
}

/// A kind of weights: float, or int8 in groups.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    F32,
    Q8(usize),
}

impl Kind {
    fn name(self) -> String {
        match self {
            Kind::F32 => "f32".into(),
            Kind::Q8(g) => format!("int8 g{g}"),
        }
    }

    /// Bytes of a `rows x cols` matrix.
    fn bytes(self, rows: usize, cols: usize) -> usize {
        match self {
            Kind::F32 => 4 * rows * cols,
            Kind::Q8(g) => rows * cols + 4 * rows * cols / g,
        }
    }
}

/// Random-looking weights, enough for all the copies: float values, int8 values and scales.
struct Pool {
    floats: Vec<f32>,
    bytes: Vec<i8>,
    scales: Vec<f32>,
}

impl Pool {
    fn new() -> Pool {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let floats = (0..COLD_BYTES / 4)
            .map(|_| (next() >> 41) as f32 / (1u64 << 23) as f32 - 0.5)
            .collect();
        let bytes = (0..COLD_BYTES).map(|_| (next() >> 56) as i8).collect();
        let scales = (0..COLD_BYTES / 32)
            .map(|_| 0.01 + (next() >> 54) as f32 * 1e-5)
            .collect();
        Pool {
            floats,
            bytes,
            scales,
        }
    }
}

/// One matrix-vector product of the pool's `copy`-th `rows x cols` matrix of `kind`, on
/// `threads` threads.
struct Product<'a> {
    pool: &'a Pool,
    kind: Kind,
    rows: usize,
    cols: usize,
    x: Vec<f32>,
    xq: Vec<i8>,
    xs: Vec<f32>,
}

impl<'a> Product<'a> {
    fn new(pool: &'a Pool, kind: Kind, rows: usize, cols: usize) -> Product<'a> {
        let groups = match kind {
            Kind::F32 => 0,
            Kind::Q8(g) => cols / g,
        };
        Product {
            pool,
            kind,
            rows,
            cols,
            x: (0..cols).map(|i| (i % 13) as f32 * 0.1 - 0.6).collect(),
            xq: (0..cols).map(|i| ((i * 37) % 255) as i8 / 2).collect(),
            xs: vec![0.02; groups],
        }
    }

    /// How many copies fit in the pool.
    fn copies(&self) -> usize {
        (COLD_BYTES / self.kind.bytes(self.rows, self.cols)).max(1)
    }

    /// Rows `first..first + out.len()` of copy `copy`.
    fn rows_of(&self, kernel: Kernel, copy: usize, first: usize, out: &mut [f32]) {
        let (rows, cols) = (self.rows, self.cols);
        match self.kind {
            Kind::F32 => {
                let base = copy * rows * cols + first * cols;
                let w = &self.pool.floats[base..base + out.len() * cols];
                fast::matvec_f32(kernel, out, w, &self.x);
            }
            Kind::Q8(group) => {
                let groups = cols / group;
                let base = copy * rows * cols + first * cols;
                let wq = &self.pool.bytes[base..base + out.len() * cols];
                let sbase = copy * rows * groups + first * groups;
                let ws = &self.pool.scales[sbase..sbase + out.len() * groups];
                fast::matvec_q8(kernel, out, wq, ws, &self.xq, &self.xs, group);
            }
        }
    }

    fn run(&self, kernel: Kernel, copy: usize, out: &mut [f32], threads: usize) {
        if threads == 1 {
            self.rows_of(kernel, copy, 0, out);
        } else {
            out.par_chunks_mut(BLOCK_ROWS)
                .enumerate()
                .for_each(|(b, block)| self.rows_of(kernel, copy, b * BLOCK_ROWS, block));
        }
    }

    /// GB/s of weights read: passes over `copies` copies for about [`MEASURE`], the best pass.
    fn gbps(&self, kernel: Kernel, threads: usize, copies: usize, pools: &Pools) -> f64 {
        let mut out = vec![0.0f32; self.rows];
        let bytes = (copies * self.kind.bytes(self.rows, self.cols)) as f64;
        pools.get(threads).install(|| {
            let start = Instant::now();
            let mut best = f64::INFINITY;
            // Several matrices a pass, so a pass is long enough to time.
            let reps = (4 << 20) / (copies * self.kind.bytes(self.rows, self.cols)) + 1;
            while best.is_infinite() || start.elapsed() < MEASURE {
                let t = Instant::now();
                for _ in 0..reps {
                    for copy in 0..copies {
                        self.run(kernel, copy, &mut out, threads);
                    }
                }
                best = best.min(t.elapsed().as_secs_f64() / reps as f64);
            }
            std::hint::black_box(&out);
            bytes / best / 1e9
        })
    }

    /// The tuner's kernel for this matrix (its first copy), timed from memory.
    fn plan(&self) -> (Kernel, Duration) {
        let candidates = tune::candidates(None);
        let start = Instant::now();
        let kernel = match self.kind {
            Kind::F32 => {
                let w = &self.pool.floats[..self.rows * self.cols];
                tune::plan_f32(
                    &candidates,
                    w,
                    self.cols,
                    Residency::Memory,
                    tune::DEFAULT_BUDGET,
                )
            }
            Kind::Q8(group) => {
                let wq = &self.pool.bytes[..self.rows * self.cols];
                let ws = &self.pool.scales[..self.rows * self.cols / group];
                let residency = Residency::Memory;
                tune::plan_q8(
                    &candidates,
                    wq,
                    ws,
                    self.cols,
                    group,
                    residency,
                    tune::DEFAULT_BUDGET,
                )
            }
        };
        (kernel, start.elapsed())
    }
}

/// Thread pools of 1 and 2 threads.
struct Pools(rayon::ThreadPool, rayon::ThreadPool);

impl Pools {
    fn get(&self, threads: usize) -> &rayon::ThreadPool {
        if threads == 1 {
            &self.0
        } else {
            &self.1
        }
    }
}

/// Read bandwidth: `threads` threads sum disjoint parts of `data`, best of `passes`, GB/s.
fn read_bandwidth(data: &[f32], threads: usize, passes: usize) -> f64 {
    let part = data.len().div_ceil(threads);
    let mut best = 0.0f64;
    for _ in 0..passes {
        let start = Instant::now();
        let total: f32 = std::thread::scope(|scope| {
            let workers: Vec<_> = data
                .chunks(part)
                .map(|chunk| scope.spawn(move || sum(chunk)))
                .collect();
            workers.into_iter().map(|w| w.join().expect("sum")).sum()
        });
        std::hint::black_box(total);
        best = best.max((4 * data.len()) as f64 / start.elapsed().as_secs_f64() / 1e9);
    }
    best
}

/// A sum with 64 independent running sums, so the adds keep up with memory.
fn sum(values: &[f32]) -> f32 {
    let mut sums = [0.0f32; 64];
    for chunk in values.chunks_exact(64) {
        for (s, &v) in sums.iter_mut().zip(chunk) {
            *s += v;
        }
    }
    sums.iter().sum()
}

fn cpu_name() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |key: &str| {
        info.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split(':').nth(1))
            .map_or(String::from("?"), |v| v.trim().to_string())
    };
    format!(
        "{} (family {}, model {})",
        field("model name"),
        field("cpu family"),
        field("model\t")
    )
}

fn kernel_name(k: Kernel) -> String {
    format!("{} r{} pf{}", k.isa.name(), k.rows, k.prefetch)
}

fn main() {
    let quick = std::env::var("FAST_BENCH").is_ok_and(|v| v == "quick");
    let pools = Pools(
        rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("pool"),
        rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("pool"),
    );
    println!("CPU: {}", cpu_name());
    println!(
        "instruction sets: {:?}; LLAMA2_ISA: {:?}",
        Isa::available(),
        std::env::var("LLAMA2_ISA").ok()
    );
    let pool = Pool::new();
    let bw = [
        read_bandwidth(&pool.floats, 1, 5),
        read_bandwidth(&pool.floats, 2, 5),
    ];
    println!(
        "read bandwidth ({} MiB, best of 5): 1 thread {:.1} GB/s, 2 threads {:.1} GB/s\n",
        COLD_BYTES >> 20,
        bw[0],
        bw[1]
    );

    let kinds = [Kind::F32, Kind::Q8(32), Kind::Q8(48), Kind::Q8(64)];
    // Weights-only decode estimate: seconds per token, summed over the matrices.
    let mut per_token = vec![[0.0f64; 3]; kinds.len() * SHAPES.len()];
    println!("| weights | model | matrix | kernel (tuned) | tune ms | 1 thr cold | 2 thr cold | bw now | % of bw | 1 thr warm | 2 thr warm |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (ki, &kind) in kinds.iter().enumerate() {
        for (si, shape) in SHAPES.iter().enumerate() {
            if let Kind::Q8(g) = kind {
                if shape.dim % g != 0 || shape.hidden % g != 0 {
                    continue;
                }
            }
            // One plan per model, made on its largest matrix (the classifier), from memory.
            let classifier = Product::new(&pool, kind, VOCAB, shape.dim);
            let (kernel, took) = classifier.plan();
            for (name, rows, cols, count) in shape.matrices() {
                if quick && name != "hidden x dim" {
                    continue;
                }
                let product = Product::new(&pool, kind, rows, cols);
                let copies = product.copies();
                // The machine's bandwidth right before, as other programs may be using it.
                let bw_now = read_bandwidth(&pool.floats, 2, 3);
                let cold = [1, 2].map(|t| product.gbps(kernel, t, copies, &pools));
                let warm = [1, 2].map(|t| product.gbps(kernel, t, 1, &pools));
                let bytes = kind.bytes(rows, cols) as f64 * count as f64;
                let entry = &mut per_token[ki * SHAPES.len() + si];
                entry[0] += bytes;
                entry[1] += bytes / (cold[1] * 1e9);
                entry[2] += bytes / (bw_now * 1e9);
                println!(
                    "| {} | {} | {name} ({rows}x{cols}) | {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.0}% | {:.1} | {:.1} |",
                    kind.name(),
                    shape.name,
                    kernel_name(kernel),
                    took.as_secs_f64() * 1e3,
                    cold[0],
                    cold[1],
                    bw_now,
                    100.0 * cold[1] / bw_now,
                    warm[0],
                    warm[1],
                );
            }
        }
    }

    println!(
        "\nDecode estimate from the matrices alone (2 threads, cold; no attention, norms, etc.):"
    );
    println!("| weights | model | MB per token | est. tok/s | bandwidth bound tok/s |");
    println!("| --- | --- | --- | --- | --- |");
    for (ki, &kind) in kinds.iter().enumerate() {
        for (si, shape) in SHAPES.iter().enumerate() {
            let [bytes, secs, bound] = per_token[ki * SHAPES.len() + si];
            if bytes == 0.0 {
                continue;
            }
            println!(
                "| {} | {} | {:.1} | {:.0} | {:.0} |",
                kind.name(),
                shape.name,
                bytes / 1e6,
                1.0 / secs,
                1.0 / bound
            );
        }
    }

    // Every candidate on one shape, cold, two threads: what the choice is worth.
    for (kind, rows, cols) in [
        (Kind::F32, 2048, 768),
        (Kind::Q8(64), 2048, 768),
        (Kind::F32, 288, 288),
    ] {
        let product = Product::new(&pool, kind, rows, cols);
        let copies = product.copies();
        println!(
            "\nEvery candidate, {} {rows}x{cols}, 2 threads, cold (GB/s):",
            kind.name()
        );
        let mut line = String::new();
        for kernel in tune::candidates(None) {
            if quick && kernel.prefetch == 1024 {
                continue;
            }
            let g = product.gbps(kernel, 2, copies, &pools);
            line.push_str(&format!("{}: {g:.1}; ", kernel_name(kernel)));
        }
        println!("{line}");
    }
}
