//! Spreading work over threads, or not.
//!
//! With the `parallel` feature (the default) large matrices are split into blocks of rows that
//! rayon runs on all cores; small ones stay on the calling thread, because for a 64x64 matrix
//! waking a thread costs more than the arithmetic. Without the feature everything runs on the
//! calling thread and rayon is not even compiled.

/// Below this many multiply-adds a matrix-vector product runs on the calling thread.
pub const MIN_PARALLEL_WORK: usize = 1 << 16;

/// Call `f(first_row, block)` for consecutive blocks of `out`, where each element of `out` is one
/// output row that costs `cols` multiply-adds. Blocks may run on different threads.
pub fn for_each_row_block<F>(out: &mut [f32], cols: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    for_each_row_group(out, 1, cols, |first_row, block| f(first_row, block));
}

/// Like [`for_each_row_block`] for outputs with `width` values per row: `out` holds
/// `out.len() / width` rows of `width` values, each row costs `cost` multiply-adds, and `f`
/// receives whole rows.
pub fn for_each_row_group<F>(out: &mut [f32], width: usize, cost: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    let rows = out.len() / width.max(1);
    if rows == 0 {
        return;
    }
    let threads = thread_count();
    if threads <= 1 || rows.saturating_mul(cost) < MIN_PARALLEL_WORK {
        f(0, out);
        return;
    }
    // A few blocks per thread evens out uneven progress; blocks of a multiple of 16 rows keep
    // the SIMD kernels on their wide paths.
    let block_rows = rows.div_ceil(threads * 4).next_multiple_of(16).max(16);
    run_blocks(out, block_rows, width, f);
}

#[cfg(feature = "parallel")]
fn run_blocks<F>(out: &mut [f32], block_rows: usize, width: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    use rayon::prelude::*;
    out.par_chunks_mut(block_rows * width)
        .enumerate()
        .for_each(|(i, block)| f(i * block_rows, block));
}

#[cfg(not(feature = "parallel"))]
fn run_blocks<F>(out: &mut [f32], block_rows: usize, width: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    for (i, block) in out.chunks_mut(block_rows * width).enumerate() {
        f(i * block_rows, block);
    }
}

/// Call `f(head, out_head, scores_head)` for every attention head, where `out` holds `head_dim`
/// values per head and `scores` holds `n_pos` per head. `work` is the total cost estimate.
pub fn for_each_head<F>(
    out: &mut [f32],
    scores: &mut [f32],
    head_dim: usize,
    n_pos: usize,
    work: usize,
    f: F,
) where
    F: Fn(usize, &mut [f32], &mut [f32]) + Sync,
{
    #[cfg(feature = "parallel")]
    if thread_count() > 1 && work >= MIN_PARALLEL_WORK {
        use rayon::prelude::*;
        out.par_chunks_mut(head_dim)
            .zip(scores.par_chunks_mut(n_pos))
            .enumerate()
            .for_each(|(h, (o, s))| f(h, o, s));
        return;
    }
    let _ = work;
    for (h, (o, s)) in out
        .chunks_mut(head_dim)
        .zip(scores.chunks_mut(n_pos))
        .enumerate()
    {
        f(h, o, s);
    }
}

/// Number of threads work is spread over (1 without the `parallel` feature).
pub fn thread_count() -> usize {
    #[cfg(feature = "parallel")]
    {
        rayon::current_num_threads()
    }
    #[cfg(not(feature = "parallel"))]
    {
        1
    }
}
