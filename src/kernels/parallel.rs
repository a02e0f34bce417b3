//! Spreading work over threads, or not.
//!
//! With the `parallel` feature (the default) large matrices are split into blocks of rows that
//! rayon runs on all cores; small ones stay on the calling thread, because for a 64x64 matrix
//! waking a thread costs more than the arithmetic. Without the feature everything runs on the
//! calling thread and rayon is not even compiled.

/// Below this many multiply-adds a matrix-vector product runs on the calling thread.
pub const MIN_PARALLEL_WORK: usize = 1 << 16;

/// Call `f(output, first_row, block)` for consecutive blocks of whole rows of every output, in
/// one parallel pass (one wake-up of the threads for all of them): `outs` hold rows of `width`
/// values (a weight row's products with `width` input rows) that cost `cost` multiply-adds each.
/// Blocks may run on different threads; small outputs stay on the calling thread.
pub fn for_each_block_of_rows<const N: usize, F>(
    outs: [&mut [f32]; N],
    width: usize,
    cost: usize,
    f: F,
) where
    F: Fn(usize, usize, &mut [f32]) + Sync,
{
    let width = width.max(1);
    let rows: usize = outs.iter().map(|out| out.len() / width).sum();
    if rows == 0 {
        return;
    }
    let threads = thread_count();
    if threads <= 1 || rows.saturating_mul(cost) < MIN_PARALLEL_WORK {
        for (i, out) in outs.into_iter().enumerate() {
            f(i, 0, out);
        }
        return;
    }
    run_blocks(outs, BLOCK_ROWS * width, BLOCK_ROWS, f);
}

/// Rows per block of work. Rayon splits the blocks of a matrix between the threads in halves,
/// and halves again only when a thread runs out, so each thread reads a long run of adjacent
/// rows (which the kernels' prefetching follows from block to block) and small blocks keep the
/// wait for the last one short. 32 rows (two 16-row SIMD blocks) decoded the stories110M shape
/// 6% faster than splitting each matrix into 4 blocks per thread, and int8 as much.
const BLOCK_ROWS: usize = 32;

#[cfg(feature = "parallel")]
fn run_blocks<const N: usize, F>(outs: [&mut [f32]; N], block_len: usize, block_rows: usize, f: F)
where
    F: Fn(usize, usize, &mut [f32]) + Sync,
{
    use rayon::prelude::*;
    outs.into_par_iter()
        .enumerate()
        .flat_map(|(i, out)| {
            out.par_chunks_mut(block_len)
                .enumerate()
                .map(move |(b, block)| (i, b * block_rows, block))
        })
        .for_each(|(i, first_row, block)| f(i, first_row, block));
}

#[cfg(not(feature = "parallel"))]
fn run_blocks<const N: usize, F>(outs: [&mut [f32]; N], block_len: usize, block_rows: usize, f: F)
where
    F: Fn(usize, usize, &mut [f32]) + Sync,
{
    for (i, out) in outs.into_iter().enumerate() {
        for (b, block) in out.chunks_mut(block_len).enumerate() {
            f(i, b * block_rows, block);
        }
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

/// Run `f`, whose largest parallel loop costs `work` multiply-adds, with every thread of the pool
/// on call for the parallel loops inside it; or just call it, if that loop would not run in
/// parallel anyway (or without the `parallel` feature).
///
/// A forward pass is dozens of short parallel loops with a little serial work between them. Left
/// to itself, rayon puts the calling thread to sleep for each loop and lets idle workers doze off
/// between loops, so every loop starts by waking threads up. Here `f` runs on a worker, and the
/// other workers stay awake until it returns: each polls for the loops' work and runs it, and
/// yields the core to the operating system whenever it finds none.
#[cfg(feature = "parallel")]
pub fn on_worker<R: Send, F: FnOnce() -> R + Send>(work: usize, f: F) -> R {
    use std::sync::atomic::{AtomicBool, Ordering};
    let threads = thread_count();
    if threads <= 1 || work < MIN_PARALLEL_WORK {
        return f();
    }
    let done = &AtomicBool::new(false);
    rayon::scope(|scope| {
        let owner = rayon::current_thread_index();
        for _ in 1..threads {
            scope.spawn(move |_| {
                // The thread running `f` may pick up one of these while it waits inside `f`:
                // it must not wait here for `f` to finish.
                if rayon::current_thread_index() == owner {
                    return;
                }
                while !done.load(Ordering::Acquire) {
                    if rayon::yield_now() != Some(rayon::Yield::Executed) {
                        std::thread::yield_now();
                    }
                }
            });
        }
        let result = f();
        done.store(true, Ordering::Release);
        result
    })
}

/// See the `parallel` version: without threads, just call `f`.
#[cfg(not(feature = "parallel"))]
pub fn on_worker<R, F: FnOnce() -> R>(_work: usize, f: F) -> R {
    f()
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
