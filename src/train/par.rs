//! Running one task per block of several output buffers, on rayon's threads or not.
//!
//! Task `i` receives block `i` of each buffer (blocks of a fixed length per buffer), so which
//! thread runs a task never changes what it computes.

/// `f(i, a_i)` for the blocks of `a` (as [`for_each_zip3`], with one buffer).
pub fn for_each_block<F>((a, la): (&mut [f32], usize), work: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    #[cfg(feature = "parallel")]
    if worth_threads(a.len().div_ceil(la), work) {
        use rayon::prelude::*;
        a.par_chunks_mut(la).enumerate().for_each(|(i, a)| f(i, a));
        return;
    }
    let _ = work;
    for (i, a) in a.chunks_mut(la).enumerate() {
        f(i, a);
    }
}

/// `f(i, a_i, b_i)` for the blocks of `a` and `b` (as [`for_each_zip3`], with two buffers).
pub fn for_each_zip2<F>(
    (a, la): (&mut [f32], usize),
    (b, lb): (&mut [f32], usize),
    work: usize,
    f: F,
) where
    F: Fn(usize, &mut [f32], &mut [f32]) + Sync,
{
    #[cfg(feature = "parallel")]
    if worth_threads(a.len().div_ceil(la), work) {
        use rayon::prelude::*;
        a.par_chunks_mut(la)
            .zip(b.par_chunks_mut(lb))
            .enumerate()
            .for_each(|(i, (a, b))| f(i, a, b));
        return;
    }
    let _ = work;
    for (i, (a, b)) in a.chunks_mut(la).zip(b.chunks_mut(lb)).enumerate() {
        f(i, a, b);
    }
}

/// `f(i, a_i, b_i, c_i)` for the blocks of `a`, `b`, `c` (lengths given beside each); `work` is
/// the cost of one task in multiply-adds, to keep small jobs on the calling thread.
pub fn for_each_zip3<F>(
    (a, la): (&mut [f32], usize),
    (b, lb): (&mut [f32], usize),
    (c, lc): (&mut [f32], usize),
    work: usize,
    f: F,
) where
    F: Fn(usize, &mut [f32], &mut [f32], &mut [f32]) + Sync,
{
    #[cfg(feature = "parallel")]
    if worth_threads(a.len() / la, work) {
        use rayon::prelude::*;
        a.par_chunks_mut(la)
            .zip(b.par_chunks_mut(lb))
            .zip(c.par_chunks_mut(lc))
            .enumerate()
            .for_each(|(i, ((a, b), c))| f(i, a, b, c));
        return;
    }
    let _ = work;
    let blocks = a.chunks_mut(la).zip(b.chunks_mut(lb)).zip(c.chunks_mut(lc));
    for (i, ((a, b), c)) in blocks.enumerate() {
        f(i, a, b, c);
    }
}

/// Like [`for_each_zip3`] with four buffers.
pub fn for_each_zip4<F>(
    (a, la): (&mut [f32], usize),
    (b, lb): (&mut [f32], usize),
    (c, lc): (&mut [f32], usize),
    (d, ld): (&mut [f32], usize),
    work: usize,
    f: F,
) where
    F: Fn(usize, &mut [f32], &mut [f32], &mut [f32], &mut [f32]) + Sync,
{
    #[cfg(feature = "parallel")]
    if worth_threads(a.len() / la, work) {
        use rayon::prelude::*;
        a.par_chunks_mut(la)
            .zip(b.par_chunks_mut(lb))
            .zip(c.par_chunks_mut(lc))
            .zip(d.par_chunks_mut(ld))
            .enumerate()
            .for_each(|(i, (((a, b), c), d))| f(i, a, b, c, d));
        return;
    }
    let _ = work;
    let blocks = a.chunks_mut(la).zip(b.chunks_mut(lb)).zip(c.chunks_mut(lc));
    for (i, (((a, b), c), d)) in blocks.zip(d.chunks_mut(ld)).enumerate() {
        f(i, a, b, c, d);
    }
}

/// True when `tasks` tasks of `work` multiply-adds each are worth waking threads for.
#[cfg(feature = "parallel")]
fn worth_threads(tasks: usize, work: usize) -> bool {
    use crate::kernels::parallel::{thread_count, MIN_PARALLEL_WORK};
    thread_count() > 1 && tasks > 1 && tasks.saturating_mul(work) >= MIN_PARALLEL_WORK
}
