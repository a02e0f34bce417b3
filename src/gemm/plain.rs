//! The products written as directly as the maths (the oracle the tests hold every other path
//! to), and the portable register tile that runs where no SIMD path does.

use super::tile::{self, Lanes, Operand, Order};
use super::{Kernel, Layout, Tile};

/// `out (+)= a · b` in `layout` (see [`super::Layout`]), one sum at a time, in order of `k`:
/// `acc = fma(a(i, p), b(p, j), acc)` from `out(i, j)` (with `accumulate`) or zero.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    layout: Layout,
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) {
    for i in 0..m {
        for j in 0..n {
            let mut acc = if accumulate { out[i * n + j] } else { 0.0 };
            for p in 0..k {
                let (x, y) = operands(layout, a, b, (m, k, n), i, p, j);
                acc = x.mul_add(y, acc);
            }
            out[i * n + j] = acc;
        }
    }
}

/// The bf16 product of [`super::matmul_bf16`]: each sum goes by pairs of `k` as `vdpbf16ps`
/// adds them, `acc += a(i, p+1) b(p+1, j)`, then `acc += a(i, p) b(p, j)`, every product exact in
/// `f32` and every addition rounded; an odd `k` ends with a pair whose odd half is zero.
#[allow(clippy::too_many_arguments)]
pub fn matmul_bf16(
    layout: Layout,
    out: &mut [f32],
    a: &[u16],
    b: &[u16],
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) {
    for i in 0..m {
        for j in 0..n {
            let mut acc = if accumulate { out[i * n + j] } else { 0.0 };
            let product = |p: usize| {
                if p < k {
                    let (x, y) = operands(layout, a, b, (m, k, n), i, p, j);
                    x.to_f32() * y.to_f32()
                } else {
                    0.0
                }
            };
            for p in (0..k).step_by(2) {
                acc += product(p + 1);
                acc += product(p);
            }
            out[i * n + j] = acc;
        }
    }
}

/// `(a(i, p), b(p, j))` of a product in `layout`.
fn operands<T: Copy>(
    layout: Layout,
    a: &[T],
    b: &[T],
    (m, k, n): (usize, usize, usize),
    i: usize,
    p: usize,
    j: usize,
) -> (T, T) {
    match layout {
        Layout::Nt => (a[i * k + p], b[j * k + p]),
        Layout::Nn => (a[i * k + p], b[p * n + j]),
        Layout::Tn => (a[p * m + i], b[p * n + j]),
    }
}

/// Eight `f32` lanes in an array: the compiler vectorises the loops for the build target.
#[derive(Clone, Copy)]
pub(crate) struct Portable([f32; 8]);

impl Lanes for Portable {
    const N: usize = 8;

    #[inline(always)]
    unsafe fn zero() -> Self {
        Portable([0.0; 8])
    }

    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        Portable([v; 8])
    }

    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: the caller guarantees 8 readable values at `p`.
        Portable(unsafe { p.cast::<[f32; 8]>().read_unaligned() })
    }

    #[inline(always)]
    unsafe fn load_first(p: *const f32, n: usize) -> Self {
        let mut lanes = [0.0; 8];
        for (i, lane) in lanes.iter_mut().enumerate().take(n) {
            // SAFETY: the caller guarantees `n` readable values at `p`.
            *lane = unsafe { *p.add(i) };
        }
        Portable(lanes)
    }

    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: the caller guarantees 8 writable values at `p`.
        unsafe { p.cast::<[f32; 8]>().write_unaligned(self.0) }
    }

    #[inline(always)]
    unsafe fn store_first(self, p: *mut f32, n: usize) {
        for (i, &lane) in self.0.iter().enumerate().take(n) {
            // SAFETY: the caller guarantees `n` writable values at `p`.
            unsafe { *p.add(i) = lane };
        }
    }

    #[inline(always)]
    unsafe fn mul_add(self, a: Self, b: Self) -> Self {
        Portable(std::array::from_fn(|i| a.0[i].mul_add(b.0[i], self.0[i])))
    }
}

/// Tiles of 4 x 16 on [`Portable`] vectors.
pub(crate) struct PlainF32;
/// [`PlainF32`] for bf16 operands: `b` packed as `f32`, the sums in `vdpbf16ps`'s order.
pub(crate) struct PlainBf16;

const PLAIN_HEIGHTS: [usize; 3] = [4, 2, 1];

/// A tile of any height up to 4 on the portable vectors.
///
/// # Safety
///
/// As [`tile::tile`].
unsafe fn plain_tile<A: Operand>(t: &Tile<A, f32>, order: Order) {
    tile::by_heights(t, &PLAIN_HEIGHTS, |height, sub| {
        // SAFETY: the caller's guarantees hold for each band of rows of the tile.
        unsafe {
            match height {
                4 => tile::tile::<Portable, A, 4, 2>(sub, order),
                2 => tile::tile::<Portable, A, 2, 2>(sub, order),
                _ => tile::tile::<Portable, A, 1, 2>(sub, order),
            }
        }
    });
}

impl Kernel for PlainF32 {
    type A = f32;
    type Packed = f32;
    const MR: usize = 4;
    const NR: usize = 16;

    fn convert(&self, x: f32) -> f32 {
        x
    }

    unsafe fn tile(&self, t: &Tile<f32, f32>) {
        // SAFETY: the portable vectors need no CPU feature; the caller guarantees the bounds.
        unsafe { plain_tile(t, Order::InOrder) }
    }
}

impl Kernel for PlainBf16 {
    type A = u16;
    type Packed = f32;
    const MR: usize = 4;
    const NR: usize = 16;

    fn convert(&self, x: u16) -> f32 {
        x.to_f32()
    }

    unsafe fn tile(&self, t: &Tile<u16, f32>) {
        // SAFETY: as for `PlainF32`.
        unsafe { plain_tile(t, Order::OddFirst) }
    }
}
