//! Choose the fastest kernel by timing it, as FFTW plans: no table of CPU names.
//!
//! Every [`Kernel`] computes the same bits (see [`super`]), so choosing one is only about
//! speed, and speed depends on the CPU in ways hard to guess (Zen 4 runs AVX-512 as two
//! 256-bit halves; how many streams of rows its prefetchers follow varies). So a plan times
//! each candidate (instruction set x rows per pass x prefetch distance) on the matrix it will
//! be used for, for a few milliseconds, and keeps the fastest.
//!
//! The timing reads the matrix a slice of rows at a time, moving on to the next slice every run.
//! Decoding a model larger than the caches reads every matrix from memory (the other layers
//! have pushed it out), so for such a model ([`Residency::Memory`]) each slice is flushed from
//! the caches before it is timed; a model that fits in the caches is timed as it is
//! ([`Residency::Cache`]). Candidates take turns, round after round, so that noise from other
//! programs falls on all of them alike; each is scored by its fastest run (noise only ever
//! adds time).
//!
//! Each run spreads the slice's rows over the threads exactly as decoding does
//! ([`for_each_block_of_rows`]), so that a kernel is timed with every core pulling from memory
//! at once, as in decoding, not alone with the memory to itself.
//!
//! `LLAMA2_ISA` (`portable`, `avx2`, `avx512`) restricts the candidates to one instruction set.

use std::time::{Duration, Instant};

use super::{matvec_f32, matvec_q8, Isa, Kernel};
use crate::kernels::parallel::for_each_block_of_rows;

/// Prefetch distances tried, in bytes ahead of each row's reads (0: none).
pub const PREFETCH_CHOICES: [usize; 4] = [0, 1024, 4096, 16384];

/// A slice of the matrix timed in one run: about this many bytes of weights.
const SLICE_BYTES: usize = 1024 * 1024;

/// Where decoding will find the weights, so where the timing should take them from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Residency {
    /// In memory: the model is larger than the caches, so each matrix arrives from memory.
    Memory,
    /// In the caches: the whole model fits.
    Cache,
}

/// The default time a plan may take.
pub const DEFAULT_BUDGET: Duration = Duration::from_millis(30);

/// Every kernel worth timing on this CPU: all of `only`'s, or if `None`, of every available
/// instruction set but the portable one (unless it is the only one), or of `LLAMA2_ISA`'s.
pub fn candidates(only: Option<Isa>) -> Vec<Kernel> {
    let isas = match only.or_else(Isa::forced) {
        Some(isa) => vec![isa],
        None => {
            let simd: Vec<Isa> = Isa::available()
                .into_iter()
                .filter(|&i| i != Isa::Portable)
                .collect();
            if simd.is_empty() {
                vec![Isa::Portable]
            } else {
                simd
            }
        }
    };
    let mut kernels = Vec::new();
    for isa in isas {
        for &rows in Kernel::rows_choices(isa) {
            let distances: &[usize] = if isa == Isa::Portable {
                &[0]
            } else {
                &PREFETCH_CHOICES
            };
            for &prefetch in distances {
                kernels.push(Kernel {
                    isa,
                    rows,
                    prefetch,
                });
            }
        }
    }
    kernels
}

/// The fastest of `candidates` for the float matrix `w` (`w.len() / cols` rows of `cols`),
/// timed for about `budget` with the weights where decoding will find them.
///
/// # Panics
/// If `candidates` is empty or `w` is not whole rows of `cols > 0`.
pub fn plan_f32(
    candidates: &[Kernel],
    w: &[f32],
    cols: usize,
    residency: Residency,
    budget: Duration,
) -> Kernel {
    assert!(cols > 0 && w.len().is_multiple_of(cols), "matrix shape");
    let rows = w.len() / cols;
    let x: Vec<f32> = (0..cols).map(|i| (i % 7) as f32 * 0.25 - 0.75).collect();
    let slice_rows = (SLICE_BYTES / (4 * cols)).clamp(1, rows.max(1));
    let mut out = vec![0.0f32; slice_rows];
    fastest(candidates, rows, slice_rows, budget, |kernel, first| {
        let n = slice_rows.min(rows - first);
        let w = &w[first * cols..(first + n) * cols];
        if residency == Residency::Memory {
            evict(w);
        }
        let start = Instant::now();
        for_each_block_of_rows([&mut out[..n]], 1, cols, |_, first, block| {
            let w = &w[first * cols..(first + block.len()) * cols];
            matvec_f32(kernel, block, w, &x);
        });
        start.elapsed()
    })
}

/// The fastest of `candidates` for the int8 matrix `wq` with scales `ws` (groups of `group`,
/// rows of `cols`), timed for about `budget`.
///
/// # Panics
/// If `candidates` is empty or the shapes do not fit (see [`matvec_q8`]).
pub fn plan_q8(
    candidates: &[Kernel],
    wq: &[i8],
    ws: &[f32],
    cols: usize,
    group: usize,
    residency: Residency,
    budget: Duration,
) -> Kernel {
    assert!(
        cols > 0 && group > 0 && cols.is_multiple_of(group),
        "matrix shape"
    );
    assert!(wq.len().is_multiple_of(cols), "matrix shape");
    let rows = wq.len() / cols;
    let groups = cols / group;
    let xq: Vec<i8> = (0..cols).map(|i| (i % 255) as i8 / 2).collect();
    let xs = vec![0.01f32; groups];
    let slice_rows = (SLICE_BYTES / cols).clamp(1, rows.max(1));
    let mut out = vec![0.0f32; slice_rows];
    fastest(candidates, rows, slice_rows, budget, |kernel, first| {
        let n = slice_rows.min(rows - first);
        let w = &wq[first * cols..(first + n) * cols];
        let s = &ws[first * groups..(first + n) * groups];
        if residency == Residency::Memory {
            evict(w);
            evict(s);
        }
        let start = Instant::now();
        for_each_block_of_rows([&mut out[..n]], 1, cols, |_, first, block| {
            let w = &w[first * cols..(first + block.len()) * cols];
            let s = &s[first * groups..(first + block.len()) * groups];
            matvec_q8(kernel, block, w, s, &xq, &xs, group);
        });
        start.elapsed()
    })
}

/// Run the candidates in turns, each on the next slice of rows (`time(kernel, first_row)`
/// returns how long the product took), until `budget` is spent (at least three rounds), and
/// return the one with the shortest time.
fn fastest(
    candidates: &[Kernel],
    rows: usize,
    slice_rows: usize,
    budget: Duration,
    mut time: impl FnMut(Kernel, usize) -> Duration,
) -> Kernel {
    assert!(!candidates.is_empty(), "no candidate kernels");
    let mut best = vec![Duration::MAX; candidates.len()];
    let mut first = 0;
    let start = Instant::now();
    let mut round = 0;
    while round < 3 || start.elapsed() < budget {
        for (k, &kernel) in candidates.iter().enumerate() {
            best[k] = best[k].min(time(kernel, first));
            first += slice_rows;
            if first >= rows {
                first = 0;
            }
        }
        round += 1;
    }
    let winner = (0..candidates.len()).min_by_key(|&k| best[k]).unwrap_or(0);
    candidates[winner]
}

/// Push `data` out of every cache, so that the next read comes from memory.
fn evict<T>(data: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_clflush, _mm_mfence};
        let bytes = std::mem::size_of_val(data);
        let start = data.as_ptr() as *const u8;
        for offset in (0..bytes).step_by(64) {
            // SAFETY: the address is inside `data`; `clflush` (SSE2, part of x86-64) writes
            // nothing and only drops the line from the caches.
            unsafe { _mm_clflush(start.wrapping_add(offset)) };
        }
        // SAFETY: a fence has no memory operands; it waits for the flushes to finish.
        unsafe { _mm_mfence() };
    }
    // Elsewhere the slices are timed as they are, in whatever cache holds them.
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}
