//! The register tile, written once over a vector of `f32` lanes: `MR` rows of `NV` vectors of
//! sums stay in registers while `k` runs, each step one fused multiply-add per register.
//!
//! Instruction sets only say what a vector is (see `x86.rs` and [`super::plain`]); the
//! `#[target_feature]` functions that instantiate this code live there.

use super::Tile;

/// A vector of `f32` lanes.
///
/// # Safety
///
/// Every method may use the instructions of its instruction set: call them only where the CPU
/// has them. Pointers must be valid for the lanes read or written.
pub(crate) trait Lanes: Copy {
    /// Lanes per vector.
    const N: usize;
    unsafe fn zero() -> Self;
    unsafe fn splat(v: f32) -> Self;
    unsafe fn load(p: *const f32) -> Self;
    /// The first `n < N` lanes from `p`, the others zero.
    unsafe fn load_first(p: *const f32, n: usize) -> Self;
    unsafe fn store(self, p: *mut f32);
    /// Write the first `n < N` lanes to `p`.
    unsafe fn store_first(self, p: *mut f32, n: usize);
    /// `self + a * b`, rounded once.
    unsafe fn mul_add(self, a: Self, b: Self) -> Self;
}

/// An operand element the `f32` tile can read: `f32` itself, or a bfloat16 bit pattern.
pub(crate) trait Operand: Copy {
    fn to_f32(self) -> f32;
}

impl Operand for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}

impl Operand for u16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        super::bf16_to_f32(self)
    }
}

/// The order of `k` the sums follow: `f32` products in order, or bf16 products by pairs, odd
/// before even (as `vdpbf16ps` adds them).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    InOrder,
    OddFirst,
}

/// One register tile of `MR x (NV * V::N)` (see [`Tile`]); `tile.rows` must be `MR`.
///
/// The sums are passed from step to step by value, so that the compiler keeps them in
/// registers rather than in an array in memory.
///
/// # Safety
///
/// As [`Lanes`], and the tile's elements are in bounds; the strip holds `NV * V::N` values per
/// step of `k`.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // constant indices keep the sums in registers
pub(crate) unsafe fn tile<V: Lanes, A: Operand, const MR: usize, const NV: usize>(
    t: &Tile<A, f32>,
    order: Order,
) {
    // SAFETY (whole body): the caller guarantees the CPU features and that every pointer below
    // stays inside the tile it described.
    unsafe {
        let mut acc = load::<V, A, f32, MR, NV>(t);
        match order {
            Order::InOrder => {
                for p in 0..t.kc {
                    acc = step::<V, A, MR, NV>(acc, t, p);
                }
            }
            Order::OddFirst => {
                for pair in 0..t.kc / 2 {
                    acc = step::<V, A, MR, NV>(acc, t, 2 * pair + 1);
                    acc = step::<V, A, MR, NV>(acc, t, 2 * pair);
                }
                if t.kc % 2 == 1 {
                    // The missing odd partner is a zero product, added first like any other.
                    let zero = V::zero();
                    for i in 0..MR {
                        for v in 0..NV {
                            acc[i][v] = acc[i][v].mul_add(zero, zero);
                        }
                    }
                    acc = step::<V, A, MR, NV>(acc, t, t.kc - 1);
                }
            }
        }
        store(acc, t);
    }
}

/// One step `p` of `k`: a row of the strip times a column of `a`, added to the sums.
///
/// # Safety
///
/// As [`tile`], and `p < t.kc`.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // as in `tile`
unsafe fn step<V: Lanes, A: Operand, const MR: usize, const NV: usize>(
    mut acc: [[V; NV]; MR],
    t: &Tile<A, f32>,
    p: usize,
) -> [[V; NV]; MR] {
    // SAFETY: the caller guarantees the CPU features and that step `p` of the strip and of the
    // tile's rows of `a` are in bounds.
    unsafe {
        let bp = t.b.add(p * NV * V::N);
        let mut b = [V::zero(); NV];
        for v in 0..NV {
            b[v] = V::load(bp.add(v * V::N));
        }
        for i in 0..MR {
            let a = V::splat((*t.a.add(i * t.a_rs + p * t.a_cs)).to_f32());
            for v in 0..NV {
                acc[i][v] = acc[i][v].mul_add(a, b[v]);
            }
        }
        acc
    }
}

/// A tile's starting sums: its corner of the output with `t.load`, else zeros.
///
/// # Safety
///
/// As [`tile`].
#[inline(always)]
#[allow(clippy::needless_range_loop)] // as in `tile`
pub(crate) unsafe fn load<V: Lanes, A, P, const MR: usize, const NV: usize>(
    t: &Tile<A, P>,
) -> [[V; NV]; MR] {
    // SAFETY: the caller guarantees the CPU features and the output's bounds.
    unsafe {
        let mut acc = [[V::zero(); NV]; MR];
        if t.load {
            for i in 0..MR {
                for v in 0..NV {
                    let col = v * V::N;
                    let p = t.out.add(i * t.ldo + col);
                    if col + V::N <= t.cols {
                        acc[i][v] = V::load(p);
                    } else if col < t.cols {
                        acc[i][v] = V::load_first(p, t.cols - col);
                    }
                }
            }
        }
        acc
    }
}

/// Write a tile's sums to its `rows x cols` corner of the output.
///
/// # Safety
///
/// As [`tile`].
#[inline(always)]
#[allow(clippy::needless_range_loop)] // as in `tile`
pub(crate) unsafe fn store<V: Lanes, A, P, const MR: usize, const NV: usize>(
    acc: [[V; NV]; MR],
    t: &Tile<A, P>,
) {
    // SAFETY: the caller guarantees the output rows and columns are in bounds.
    unsafe {
        for i in 0..MR {
            for v in 0..NV {
                let col = v * V::N;
                let p = t.out.add(i * t.ldo + col);
                if col + V::N <= t.cols {
                    acc[i][v].store(p);
                } else if col < t.cols {
                    acc[i][v].store_first(p, t.cols - col);
                }
            }
        }
    }
}

/// Cover `t.rows` rows (any number up to the largest kernel) with register tiles of the given
/// heights, tallest first: `kernel(height, sub_tile)`.
#[inline(always)]
pub(crate) fn by_heights<A, P>(
    t: &Tile<A, P>,
    heights: &[usize],
    mut kernel: impl FnMut(usize, &Tile<A, P>),
) {
    let mut row = 0;
    while row < t.rows {
        let left = t.rows - row;
        let height = heights.iter().copied().find(|&h| h <= left).unwrap_or(1);
        let sub = Tile {
            rows: height,
            cols: t.cols,
            kc: t.kc,
            a: t.a.wrapping_add(row * t.a_rs),
            a_rs: t.a_rs,
            a_cs: t.a_cs,
            b: t.b,
            out: t.out.wrapping_add(row * t.ldo),
            ldo: t.ldo,
            load: t.load,
        };
        kernel(height, &sub);
        row += height;
    }
}
