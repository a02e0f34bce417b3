//! Matrix-matrix products for training: the forward pass of a linear layer and both of its
//! gradients, in `f32` or with `bfloat16` operands, on row-major slices.
//!
//! | function | computes | used for |
//! | --- | --- | --- |
//! | [`matmul_nt`] | `out (m, n) (+)= a (m, k) · bᵀ`, `b` of shape `(n, k)` | forward: `Y = X Wᵀ` |
//! | [`matmul_nn`] | `out (m, n) (+)= a (m, k) · b (k, n)` | input gradient: `dX = dY W` |
//! | [`matmul_tn`] | `out (m, n) (+)= aᵀ · b`, `a` of shape `(k, m)`, `b` of `(k, n)` | weight gradient: `dW += dYᵀ X` |
//!
//! Each has a `_bf16` twin whose operands are bfloat16 bit patterns (`u16`, made by [`to_bf16`])
//! and whose sums are `f32`: the mixed precision of `--dtype bfloat16`.
//!
//! **What every output is.** Each output element is one sum, added in a fixed order whatever
//! the instruction set, the blocking or the number of threads: starting from `out` (with
//! `accumulate`) or from zero, `acc = fma(a(i, p), b(p, j), acc)` for `p = 0, 1, 2, ...` in
//! `f32`. The `bf16` sums go by pairs as AVX-512 BF16's `vdpbf16ps` adds them: for each pair of
//! `k` indices the odd product first, then the even one (`k` odd: a zero pair partner), each
//! product exact in `f32`. So every path gives exactly the bits of the plain loops in [`plain`],
//! and threads only split the outputs between them (never one sum), so the results do not
//! depend on the thread count. (The BF16 instruction also treats subnormal inputs and results
//! as zero; the other paths do not, so values below `f32::MIN_POSITIVE` may differ there.)
//!
//! **Blocking.** `b` is packed into strips of `NR` columns laid out `k`-major (one step of
//! `k` is `NR` consecutive values; bf16 strips for `vdpbf16ps` hold pairs of steps side by
//! side), zero-padded. A register tile of `MR x NR` sums stays in vector registers while `k`
//! runs: per step, `NR / lanes` vector loads of the strip and one broadcast of `a` per row.
//! Tiles: AVX-512 14 x 32 (28 of the 32 registers hold sums), AVX2 6 x 16, plain 4 x 16.
//! The output is cut into blocks of rows (or of columns, when that moves less data), one task
//! each (rayon with the `parallel` feature); a task walks `k` in blocks of [`KC`] (a strip's
//! block, 32 KiB, stays in L1 while the task's row tiles pass over it) and its columns in
//! blocks of [`NC`]. `b` is packed by all threads and shared, all at once if it fits 4 MiB
//! of `f32`, else in panels of whole blocks of `k`, one after the other (the pack buffer
//! stays small: training's memory budget counts it); only when one block of `k` across all
//! columns is larger (the classifier's forward product) does each task pack its own blocks.
//! With `b` shared, a tile whose `a` runs along `k` takes up to 256 KiB of its strip at once
//! (read from L2), so its sums are loaded and stored once, not once per block of [`KC`].
//! `a` is read where it lies: its rows (or, for
//! [`matmul_tn`], its columns) are already contiguous along `k` or along the tile's rows, so
//! packing it would cost a pass over memory for little, which matters for small `k`
//! (`dim = 64`); only the bf16 `matmul_tn` on `vdpbf16ps` copies a tile of `a` as pairs. Pack
//! buffers are per thread and reused: a call allocates nothing once they have grown.
//!
//! **Not here**: anything but dense row-major `f32`/`bf16` products (no strides, no `alpha`/`beta`
//! beyond `accumulate`), integer products, matrix-vector products (see [`crate::kernels`] for
//! inference, whose sums follow `run.c` instead).
//!
//! **Contracts.** `out` holds at least `m * n` values and `a` and `b` at least `m * k` and
//! `k * n` (only the first `m * n` of `out` are written). Shorter slices fail a
//! `debug_assert!` in debug builds; in release builds the call does nothing (it never reads or
//! writes outside the slices it is given, and never panics).

pub mod plain;
#[cfg(test)]
mod tests;
mod tile;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Values of `k` per packed block: a 32-column strip of this many steps is 32 KiB, in L1.
pub const KC: usize = 256;
/// Bytes of a strip a tile runs over at once when all of `b` is packed already: it is read
/// from L2 (256 KiB: 2048 steps of `f32`, 4096 of bf16).
const LONG_STRIP_BYTES: usize = 256 << 10;
/// Bytes of the longest block of a strip a task packs for itself as one (40 KiB: 320 steps of
/// `f32`, 640 of bf16), so that it stays in L1 with a tile of `a`.
const SHORT_STRIP_BYTES: usize = 40 << 10;
/// Columns per packed block of `b`: `KC x NC` values (512 KiB) stay in L2.
pub const NC: usize = 512;

/// How the operands of a product are laid out (see the module table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `out = a bᵀ`: `a` is `(m, k)`, `b` is `(n, k)`.
    Nt,
    /// `out = a b`: `a` is `(m, k)`, `b` is `(k, n)`.
    Nn,
    /// `out = aᵀ b`: `a` is `(k, m)`, `b` is `(k, n)`.
    Tn,
}

/// An instruction set the products can run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable Rust (`f32::mul_add`), for every CPU.
    Plain,
    /// x86-64 AVX2 and FMA: 8 lanes, tiles of 6 x 16.
    Avx2,
    /// x86-64 AVX-512F: 16 lanes, tiles of 14 x 32; bf16 products emulated.
    Avx512,
    /// AVX-512F with AVX-512 BF16: as [`Isa::Avx512`], with `vdpbf16ps` for bf16 products.
    Avx512Bf16,
}

impl Isa {
    /// The fastest instruction set this CPU supports, detected once.
    ///
    /// `LLAMA2_ISA` (`portable` or `plain`, `avx2`, `avx512`) asks for a slower one, as for the
    /// inference kernels; `avx512` includes BF16 when the CPU has it. A request the CPU cannot
    /// honour is ignored.
    pub fn detect() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| {
            let best = Isa::available().last().copied().unwrap_or(Isa::Plain);
            let requested = std::env::var("LLAMA2_ISA").ok();
            match requested.as_deref().map(|s| s.trim().to_ascii_lowercase()) {
                Some(name) if name == "portable" || name == "plain" => Isa::Plain,
                Some(name) if name == "avx2" && Isa::Avx2.is_supported() => Isa::Avx2,
                Some(name) if name == "avx512" && best == Isa::Avx512Bf16 => best,
                Some(name) if name == "avx512" && Isa::Avx512.is_supported() => Isa::Avx512,
                _ => best,
            }
        })
    }

    /// Every instruction set this CPU can run, slowest first (for tests and benchmarks).
    pub fn available() -> Vec<Isa> {
        [Isa::Plain, Isa::Avx2, Isa::Avx512, Isa::Avx512Bf16]
            .into_iter()
            .filter(|isa| isa.is_supported())
            .collect()
    }

    /// True if this CPU has the instructions.
    pub fn is_supported(self) -> bool {
        match self {
            Isa::Plain => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Bf16 => {
                is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// This instruction set if the CPU has it, else [`Isa::Plain`]: asking never runs an
    /// instruction the CPU lacks.
    fn or_plain(self) -> Isa {
        if self.is_supported() {
            self
        } else {
            Isa::Plain
        }
    }
}

/// `out (m x n) (+)= a (m x k) · bᵀ` where `b` is `(n x k)`: a linear layer's forward pass,
/// `Y = X Wᵀ`. With `accumulate` the products are added to `out`, else they replace it.
pub fn matmul_nt(
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) {
    matmul(Isa::detect(), Layout::Nt, out, a, b, (m, k, n), accumulate);
}

/// `out (m x n) (+)= a (m x k) · b (k x n)`: the input gradient of a linear layer, `dX = dY W`.
pub fn matmul_nn(
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) {
    matmul(Isa::detect(), Layout::Nn, out, a, b, (m, k, n), accumulate);
}

/// `out (m x n) (+)= aᵀ · b` where `a` is `(k x m)` and `b` is `(k x n)`: the weight gradient
/// of a linear layer, `dW += dYᵀ X`.
pub fn matmul_tn(
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) {
    matmul(Isa::detect(), Layout::Tn, out, a, b, (m, k, n), accumulate);
}

/// [`matmul_nt`] with bfloat16 operands (see [`to_bf16`]) and `f32` sums.
pub fn matmul_nt_bf16(
    out: &mut [f32],
    a: &[u16],
    b: &[u16],
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) {
    matmul_bf16(Isa::detect(), Layout::Nt, out, a, b, (m, k, n), accumulate);
}

/// [`matmul_nn`] with bfloat16 operands (see [`to_bf16`]) and `f32` sums.
pub fn matmul_nn_bf16(
    out: &mut [f32],
    a: &[u16],
    b: &[u16],
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) {
    matmul_bf16(Isa::detect(), Layout::Nn, out, a, b, (m, k, n), accumulate);
}

/// [`matmul_tn`] with bfloat16 operands (see [`to_bf16`]) and `f32` sums.
pub fn matmul_tn_bf16(
    out: &mut [f32],
    a: &[u16],
    b: &[u16],
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) {
    matmul_bf16(Isa::detect(), Layout::Tn, out, a, b, (m, k, n), accumulate);
}

/// Round each `f32` of `src` to the nearest bfloat16 (ties to even) into `dst`, as bit
/// patterns: the top 16 bits of the rounded `f32`. NaNs stay NaNs (quiet, sign kept);
/// infinities and values that round past the largest bfloat16 become infinities.
pub fn to_bf16(dst: &mut [u16], src: &[f32]) {
    debug_assert_eq!(dst.len(), src.len());
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = bf16_from_f32(s);
    }
}

/// [`to_bf16`] for the products of [`Isa::detect`]: on [`Isa::Avx512Bf16`] with that
/// extension's `vcvtneps2bf16`, 16 values per instruction. The bits are [`to_bf16`]'s except
/// for magnitudes below `f32::MIN_POSITIVE` (subnormals), which become zeros of their sign: the
/// instruction flushes them, as `vdpbf16ps` treats subnormal operands as zeros anyway.
pub fn to_bf16_for_products(dst: &mut [u16], src: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if Isa::detect() == Isa::Avx512Bf16 {
        // SAFETY: `detect` returns `Avx512Bf16` only where the CPU has AVX-512F and BF16.
        return unsafe { x86::to_bf16_cvtne(dst, src) };
    }
    to_bf16(dst, src);
}

/// One `f32` rounded to the nearest bfloat16, ties to even (see [`to_bf16`]).
#[inline]
pub fn bf16_from_f32(x: f32) -> u16 {
    let bits = x.to_bits();
    // Add just under half of the dropped part's unit, plus one if the kept part is odd: a tie
    // then rounds up exactly when that makes the result even. Overflow carries into infinity.
    let rounded = (bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16) as u16;
    // Rounding could carry a NaN's payload into the exponent and make it infinite: a NaN is
    // cut and kept quiet instead. (A select, not a branch, so loops of it vectorize.)
    let nan = ((bits >> 16) as u16) | 0x0040;
    if x.is_nan() {
        nan
    } else {
        rounded
    }
}

/// The `f32` a bfloat16 bit pattern stands for (exact: bfloat16 is the top half of an `f32`).
#[inline(always)]
pub fn bf16_to_f32(x: u16) -> f32 {
    f32::from_bits((x as u32) << 16)
}

/// [`matmul_nt`], [`matmul_nn`] or [`matmul_tn`] on a chosen instruction set (`shape` is
/// `(m, k, n)`): for tests and benchmarks. An unsupported `isa` runs the plain code.
pub fn matmul(
    isa: Isa,
    layout: Layout,
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    shape: (usize, usize, usize),
    accumulate: bool,
) {
    let problem = Problem::new(layout, out, a, b, shape, accumulate);
    let Some(mut problem) = problem else { return };
    match isa.or_plain() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => run(&x86::Avx2F32, &mut problem),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Bf16 => run(&x86::Avx512F32, &mut problem),
        _ => run(&plain::PlainF32, &mut problem),
    }
}

/// The bf16 products on a chosen instruction set (see [`matmul`]).
pub fn matmul_bf16(
    isa: Isa,
    layout: Layout,
    out: &mut [f32],
    a: &[u16],
    b: &[u16],
    shape: (usize, usize, usize),
    accumulate: bool,
) {
    let problem = Problem::new(layout, out, a, b, shape, accumulate);
    let Some(mut problem) = problem else { return };
    match isa.or_plain() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => run(&x86::Avx2Bf16, &mut problem),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => run(&x86::Avx512Bf16Emulated, &mut problem),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Bf16 => run(&x86::Avx512Dpbf16, &mut problem),
        _ => run(&plain::PlainBf16, &mut problem),
    }
}

/// A matrix operand seen through strides: element `(row, col)` is `data[row * rs + col * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct View<'a, T> {
    pub data: &'a [T],
    pub rs: usize,
    pub cs: usize,
}

/// One product, its operands seen as `a (m, k)` and `b (k, n)` whatever the layout.
struct Problem<'a, T> {
    out: &'a mut [f32],
    a: View<'a, T>,
    b: View<'a, T>,
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
}

impl<'a, T> Problem<'a, T> {
    /// The product, or `None` if it has nothing to compute or the slices are too short (a
    /// broken contract: debug builds stop there, release builds leave `out` as it is).
    fn new(
        layout: Layout,
        out: &'a mut [f32],
        a: &'a [T],
        b: &'a [T],
        (m, k, n): (usize, usize, usize),
        accumulate: bool,
    ) -> Option<Self> {
        let fits =
            |len: usize, x: usize, y: usize| x.checked_mul(y).is_some_and(|size| len >= size);
        let ok = fits(out.len(), m, n) && fits(a.len(), m, k) && fits(b.len(), k, n);
        debug_assert!(ok, "matmul: slices too short for shape ({m}, {k}, {n})");
        if !ok || m == 0 || n == 0 {
            return None;
        }
        let (a, b) = match layout {
            Layout::Nt => (
                View {
                    data: a,
                    rs: k,
                    cs: 1,
                },
                View {
                    data: b,
                    rs: 1,
                    cs: k,
                },
            ),
            Layout::Nn => (
                View {
                    data: a,
                    rs: k,
                    cs: 1,
                },
                View {
                    data: b,
                    rs: n,
                    cs: 1,
                },
            ),
            Layout::Tn => (
                View {
                    data: a,
                    rs: 1,
                    cs: m,
                },
                View {
                    data: b,
                    rs: n,
                    cs: 1,
                },
            ),
        };
        Some(Problem {
            out: &mut out[..m * n],
            a,
            b,
            m,
            k,
            n,
            accumulate,
        })
    }
}

/// One register tile's work: rows `row..row + rows` (`rows <= MR`) and columns
/// `col..col + cols` (`cols <= NR`) of the output, over `kc` values of `k` from `p0`.
///
/// `a` points at `a(row, p0)` and element `(i, p)` of the tile is at `a + i * a_rs + p * a_cs`;
/// `b` points at the packed strip (`NR` values per step of `k`); `out` at `out(row, col)`, with
/// rows `ldo` apart. With `load` the sums start from `out`, else from zero.
pub(crate) struct Tile<A, P> {
    pub rows: usize,
    pub cols: usize,
    pub kc: usize,
    pub a: *const A,
    pub a_rs: usize,
    pub a_cs: usize,
    pub b: *const P,
    pub out: *mut f32,
    pub ldo: usize,
    pub load: bool,
}

/// What an instruction set brings to the blocked product: its tile shape, how it packs `b`,
/// and its register tile.
pub(crate) trait Kernel: Sync {
    /// Element of the operands (`f32`, or `u16` for bf16).
    type A: Copy + Sync;
    /// Element of the packed strips of `b`.
    type Packed: PackedValue;
    /// Rows of a register tile.
    const MR: usize;
    /// Columns of a register tile (the width of a packed strip).
    const NR: usize;

    /// Values of `k` a packed strip holds side by side (1, or 2 for `vdpbf16ps`'s pairs).
    const GROUP: usize = 1;

    /// True if [`Kernel::a_tile`] copies an `a` whose rows are strided (`matmul_tn`'s) into
    /// contiguous pairs, rather than reading it in place.
    const COPIES_COLUMNS_OF_A: bool = false;

    /// Pack `b(p0 + p, j0 + j)` for `p < kc`, `j < nc` into strips of `NR` columns, zero-padded:
    /// `packed` holds [`packed_len`]`::<Self>(kc, nc)` values.
    fn pack_b(
        &self,
        packed: &mut [Self::Packed],
        b: View<Self::A>,
        p0: usize,
        kc: usize,
        j0: usize,
        nc: usize,
    ) {
        pack_strips::<_, _, 1>(packed, b, p0, kc, j0, nc, Self::NR, |x| self.convert(x));
    }

    /// An operand value as the packed strips hold it.
    fn convert(&self, x: Self::A) -> Self::Packed;

    /// Rows `row..row + rows` of `a` from `p0` as the tile reads them: the operand itself, or a
    /// copy in `scratch` (returned as pointer and strides).
    fn a_tile(
        &self,
        _scratch: &mut Vec<Self::A>,
        a: View<Self::A>,
        row: usize,
        _rows: usize,
        p0: usize,
        _kc: usize,
    ) -> (*const Self::A, usize, usize) {
        (a.data[row * a.rs + p0 * a.cs..].as_ptr(), a.rs, a.cs)
    }

    /// Compute one register tile.
    ///
    /// # Safety
    ///
    /// The CPU has the kernel's instructions, and every element the tile describes is in bounds.
    unsafe fn tile(&self, tile: &Tile<Self::A, Self::Packed>);
}

/// Pack strips of `nr` columns of `b` (`GROUP` consecutive `k` values of a column side by side,
/// for `vdpbf16ps`'s pairs), zero-padded in both directions. Strip `s` starts at
/// `s * nr * kc'` where `kc'` is `kc` rounded up to `GROUP`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn pack_strips<A: Copy, P: Copy + Default, const GROUP: usize>(
    packed: &mut [P],
    b: View<A>,
    p0: usize,
    kc: usize,
    j0: usize,
    nc: usize,
    nr: usize,
    convert: impl Fn(A) -> P,
) {
    let kc_padded = kc.next_multiple_of(GROUP);
    let strips = nc.div_ceil(nr);
    // Every value is written below, padding included.
    for (s, strip) in packed[..strips * nr * kc_padded]
        .chunks_exact_mut(nr * kc_padded)
        .enumerate()
    {
        let (col0, cols) = (j0 + s * nr, nr.min(nc - s * nr));
        // Value `(p, j)` of the strip lies at `(p / GROUP * nr + j) * GROUP + p % GROUP`.
        if b.cs == 1 {
            // `b`'s rows run along the columns: copy a run of each row (two rows interleaved
            // for pairs), in loops the compiler turns into vector moves.
            for (g, group) in strip.chunks_exact_mut(nr * GROUP).enumerate() {
                let row = |h: usize| -> &[A] {
                    let p = g * GROUP + h;
                    if p < kc {
                        &b.data[(p0 + p) * b.rs + col0..][..cols]
                    } else {
                        &[]
                    }
                };
                if GROUP == 1 {
                    let (run, rest) = group.split_at_mut(row(0).len());
                    for (x, &y) in run.iter_mut().zip(row(0)) {
                        *x = convert(y);
                    }
                    rest.fill(P::default());
                } else if GROUP == 2 && row(1).len() == nr {
                    for ((x, &y0), &y1) in group.chunks_exact_mut(2).zip(row(0)).zip(row(1)) {
                        x[0] = convert(y0);
                        x[1] = convert(y1);
                    }
                } else {
                    // A partial strip or the last, odd step: one value at a time.
                    for h in 0..GROUP {
                        let mut places = group[h..].iter_mut().step_by(GROUP);
                        for (x, &y) in places.by_ref().zip(row(h)) {
                            *x = convert(y);
                        }
                        places.for_each(|x| *x = P::default());
                    }
                }
            }
        } else {
            // `b`'s columns run along `k` (`matmul_nt`): copy a run of each column, eight steps
            // at a time so that the writes stay in eight rows of the strip.
            const STEPS: usize = 8;
            let whole = if b.rs == 1 { kc / STEPS * STEPS } else { 0 };
            for p in (0..whole).step_by(STEPS) {
                for j in 0..cols {
                    let run = &b.data[(col0 + j) * b.cs + p0 + p..][..STEPS];
                    for (q, &y) in run.iter().enumerate() {
                        let at = p + q;
                        strip[(at / GROUP * nr + j) * GROUP + at % GROUP] = convert(y);
                    }
                }
            }
            for j in 0..cols {
                let column = (whole..kc).map(|p| b.data[(p0 + p) * b.rs + (col0 + j) * b.cs]);
                for (p, y) in (whole..kc).zip(column) {
                    strip[(p / GROUP * nr + j) * GROUP + p % GROUP] = convert(y);
                }
                for p in kc..kc_padded {
                    strip[(p / GROUP * nr + j) * GROUP + p % GROUP] = P::default();
                }
            }
            for j in cols..nr {
                for p in 0..kc_padded {
                    strip[(p / GROUP * nr + j) * GROUP + p % GROUP] = P::default();
                }
            }
        }
    }
}

/// Values of the packed strips of a `kc x nc` block of `b`.
pub(crate) fn packed_len<K: Kernel>(kc: usize, nc: usize) -> usize {
    nc.div_ceil(K::NR) * K::NR * kc.next_multiple_of(K::GROUP)
}

/// Most values of `b` packed at once for all tasks to share (4 MiB of `f32`): a larger `b` is
/// packed and multiplied in panels of whole blocks of `k` (all columns, `KC` steps or a
/// multiple), one after the other, so the buffer stays this small whatever the shape. Only
/// when one block of `k` across all columns is larger still (the classifier's forward
/// product) does each task pack its own blocks of `b`.
const SHARED_B_MAX: usize = 1 << 20;

/// Bytes the pack buffers of all threads have grown to (they are kept for the next call).
static PACK_BUFFER_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Bytes of memory the products hold in pack buffers, all threads together: at most about
/// 4.5 MiB per thread, reached on the first large products and kept from then on. (A buffer
/// made for a product nested in another's task is counted though it is freed after.)
pub fn pack_buffer_bytes() -> usize {
    PACK_BUFFER_BYTES.load(Ordering::Relaxed)
}

/// `buffer.resize(len)` (new values are zeros), counting any growth in
/// [`pack_buffer_bytes`].
fn resize_pack_buffer<T: Clone + Default>(buffer: &mut Vec<T>, len: usize) {
    let before = buffer.capacity();
    buffer.resize(len, T::default());
    let grown = buffer.capacity().saturating_sub(before);
    PACK_BUFFER_BYTES.fetch_add(grown * std::mem::size_of::<T>(), Ordering::Relaxed);
}

/// Per-thread pack buffers, reused from call to call.
pub(crate) struct Buffers<P, A> {
    b: Vec<P>,
    a: Vec<A>,
}

/// Run the blocked product with `kernel`: blocks of the output spread over threads.
fn run<K: Kernel>(kernel: &K, problem: &mut Problem<K::A>)
where
    Buffers<K::Packed, K::A>: ThreadBuffers,
{
    let Problem {
        k,
        n,
        a,
        b,
        accumulate,
        ..
    } = *problem;
    if k == 0 {
        if !accumulate {
            problem.out.fill(0.0);
        }
        return;
    }
    let Some(panel) = panel_steps::<K>(k, n) else {
        run_tasks(kernel, problem, None);
        return;
    };
    // Pack `b` a panel of `k` at a time, its strips spread over the threads, for every task
    // to read. Panels end on block boundaries, so every sum runs in the same order as in one
    // panel: each block adds to the output what the blocks before it left there.
    K::Packed::with_shared(|packed| {
        for p0 in (0..k).step_by(panel) {
            let kp = panel.min(k - p0);
            resize_pack_buffer(packed, packed_len::<K>(kp, n));
            let strip_len = packed_len::<K>(kp, K::NR);
            for_each_chunk(packed, strip_len, kp * n, |s, strip| {
                let col = s * K::NR;
                kernel.pack_b(strip, b, p0, kp, col, K::NR.min(n - col));
            });
            let mut part = Problem {
                out: &mut *problem.out,
                a: View {
                    data: &a.data[p0 * a.cs..],
                    ..a
                },
                b,
                k: kp,
                accumulate: accumulate || p0 > 0,
                ..*problem
            };
            run_tasks(kernel, &mut part, Some(packed));
        }
    });
}

/// Steps of `k` per shared panel of `b` (all of `k` when `b` fits [`SHARED_B_MAX`], else the
/// most whole blocks of [`KC`] that do), or `None` if not even one block fits.
fn panel_steps<K: Kernel>(k: usize, n: usize) -> Option<usize> {
    if packed_len::<K>(k, n) <= SHARED_B_MAX {
        return Some(k);
    }
    let blocks = SHARED_B_MAX / packed_len::<K>(KC, n);
    (blocks > 0).then_some(blocks * KC)
}

/// The tasks of [`run`], with all of `b` packed in `whole_b` or packing it as they go.
fn run_tasks<K: Kernel>(kernel: &K, problem: &mut Problem<K::A>, whole_b: Option<&[K::Packed]>)
where
    Buffers<K::Packed, K::A>: ThreadBuffers,
{
    let Problem {
        m,
        k,
        n,
        a,
        b,
        accumulate,
        ..
    } = *problem;
    let (task_rows, task_cols) = task_shape::<K>(m, n, whole_b.is_some());
    let col_tasks = n.div_ceil(task_cols);
    let out = SharedOut(problem.out.as_mut_ptr());
    let b = match whole_b {
        Some(packed) => PackedB::Whole(packed),
        None => PackedB::PerTask(b),
    };
    for_each_task(
        m.div_ceil(task_rows) * col_tasks,
        m.saturating_mul(n).saturating_mul(k),
        |task| {
            let (row0, col0) = (task / col_tasks * task_rows, task % col_tasks * task_cols);
            let block = Block {
                row0,
                rows: task_rows.min(m - row0),
                col0,
                cols: task_cols.min(n - col0),
            };
            Buffers::with(|buffers| {
                // SAFETY: tasks cover disjoint blocks of the `m x n` output, which `out` points
                // at (`Problem::new` checked its length), and each writes only inside its own.
                unsafe { compute_block(kernel, buffers, out, n, a, b, block, k, accumulate) }
            });
        },
    );
}

/// Where a task finds `b`'s strips: all packed already, or to be packed block by block.
#[derive(Clone, Copy)]
enum PackedB<'a, A, P> {
    Whole(&'a [P]),
    PerTask(View<'a, A>),
}

/// The output matrix, written by several tasks at once, each in its own block.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);

// SAFETY: tasks write disjoint blocks of the output through it (see `run`), and the slice it
// comes from stays borrowed until they are all done.
unsafe impl Send for SharedOut {}
// SAFETY: as above.
unsafe impl Sync for SharedOut {}

/// A block of the output: rows `row0..row0 + rows`, columns `col0..col0 + cols`.
#[derive(Clone, Copy)]
struct Block {
    row0: usize,
    rows: usize,
    col0: usize,
    cols: usize,
}

/// Rows and columns of a task's block: all the output with one thread; else about four tasks
/// per thread (so they finish together). With `b` packed once for all, the output is cut along
/// the rows, and along the columns too when there are too few rows for all the tasks (a weight
/// gradient of a narrow layer). Otherwise it is cut along one direction only: cutting rows
/// makes each task pack its own copy of `b` (reading and writing `k x n` values per task), so
/// then there is one band of rows per thread (the classifier's input gradient of stories15M ran
/// 1.3x faster in f32 and 1.6x in bf16 than with four per thread); cutting columns makes each
/// read all of `a` (`m x k` per task); whichever moves less.
fn task_shape<K: Kernel>(m: usize, n: usize, whole_b: bool) -> (usize, usize) {
    let threads = thread_count();
    if threads == 1 {
        return (m, n);
    }
    let tasks = 4 * threads;
    let row_bands = m.div_ceil(K::MR).min(tasks);
    let col_blocks = n.div_ceil(K::NR).min(tasks);
    let rows = m.div_ceil(row_bands).next_multiple_of(K::MR);
    if whole_b {
        let col_blocks = col_blocks.min(tasks.div_ceil(row_bands));
        (rows, n.div_ceil(col_blocks).next_multiple_of(K::NR))
    } else if 2 * row_bands * n <= col_blocks * m {
        // Each band packs all of `b`: one band per thread, not four.
        let bands = m.div_ceil(K::MR).min(threads);
        (m.div_ceil(bands).next_multiple_of(K::MR), n)
    } else {
        (m, n.div_ceil(col_blocks).next_multiple_of(K::NR))
    }
}

/// One task: `out`'s `block`, over all of `k`. `ldo` is the output's row length (`n`).
///
/// # Safety
///
/// `out` points at an `m x ldo` output in which `block` lies, and no other thread touches the
/// block meanwhile; `a` and `b` hold the product's operands (checked by `Problem::new`).
#[allow(clippy::too_many_arguments)]
unsafe fn compute_block<K: Kernel>(
    kernel: &K,
    buffers: &mut Buffers<K::Packed, K::A>,
    out: SharedOut,
    ldo: usize,
    a: View<K::A>,
    b: PackedB<K::A, K::Packed>,
    block: Block,
    k: usize,
    accumulate: bool,
) {
    let Block {
        row0,
        rows,
        col0,
        cols,
    } = block;
    // With all of `b` packed, a tile whose `a` lies along `k` (or is copied so) runs over
    // many blocks at once and loads and stores its sums once, not once per block; strided
    // in-place columns of `a` stay at `KC` steps (each step another row of memory).
    let block_k = match b {
        PackedB::Whole(_) if a.cs == 1 || K::COPIES_COLUMNS_OF_A => {
            k.min(LONG_STRIP_BYTES / (K::NR * std::mem::size_of::<K::Packed>()))
        }
        PackedB::Whole(_) => KC,
        // Packing as it goes, a task takes a short `k` (a layer's width) in one block rather
        // than a block and a sliver (288 = 256 + 32): its sums are then stored once.
        PackedB::PerTask(_)
            if k * K::NR * std::mem::size_of::<K::Packed>() <= SHORT_STRIP_BYTES =>
        {
            k
        }
        PackedB::PerTask(_) => KC,
    };
    for j0 in (col0..col0 + cols).step_by(NC) {
        let nc = NC.min(col0 + cols - j0);
        for p0 in (0..k).step_by(block_k) {
            let kc = block_k.min(k - p0);
            // Strip `s` of this block, from step `p0`.
            let (strips, strip_len, first): (&[K::Packed], usize, usize) = match b {
                PackedB::Whole(packed) => (packed, packed_len::<K>(k, K::NR), j0 / K::NR),
                PackedB::PerTask(b) => {
                    resize_pack_buffer(&mut buffers.b, packed_len::<K>(kc, nc));
                    kernel.pack_b(&mut buffers.b, b, p0, kc, j0, nc);
                    (&buffers.b, packed_len::<K>(kc, K::NR), 0)
                }
            };
            let step0 = match b {
                PackedB::Whole(_) => p0 * K::NR,
                PackedB::PerTask(_) => 0,
            };
            for i in (row0..row0 + rows).step_by(K::MR) {
                let tile_rows = K::MR.min(row0 + rows - i);
                let (a_ptr, a_rs, a_cs) = kernel.a_tile(&mut buffers.a, a, i, tile_rows, p0, kc);
                for s in 0..nc.div_ceil(K::NR) {
                    let strip = &strips[(first + s) * strip_len + step0..];
                    let col = j0 + s * K::NR;
                    let tile = Tile {
                        rows: tile_rows,
                        cols: K::NR.min(j0 + nc - col),
                        kc,
                        a: a_ptr,
                        a_rs,
                        a_cs,
                        b: strip.as_ptr(),
                        out: out.0.wrapping_add(i * ldo + col),
                        ldo,
                        load: accumulate || p0 > 0,
                    };
                    // SAFETY: `run` was given this kernel only if the CPU has its instructions
                    // (`Isa::or_plain`); the tile lies in the task's block of the output and in
                    // the operands (the caller's guarantees), and the strip holds `kc` (rounded
                    // up to a pair) steps of `NR` values.
                    unsafe { kernel.tile(&tile) };
                }
            }
        }
    }
}

thread_local! {
    static BUFFERS_F32: RefCell<Buffers<f32, f32>> = const { RefCell::new(Buffers::new()) };
    static BUFFERS_BF16: RefCell<Buffers<u16, u16>> = const { RefCell::new(Buffers::new()) };
    static BUFFERS_BF16_AS_F32: RefCell<Buffers<f32, u16>> = const { RefCell::new(Buffers::new()) };
}

impl<P, A> Buffers<P, A> {
    const fn new() -> Self {
        Buffers {
            b: Vec::new(),
            a: Vec::new(),
        }
    }
}

thread_local! {
    static WHOLE_B_F32: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static WHOLE_B_U16: RefCell<Vec<u16>> = const { RefCell::new(Vec::new()) };
}

/// An element of packed strips, with the calling thread's buffer for a whole packed `b`.
pub(crate) trait PackedValue: Copy + Default + Send + Sync + 'static {
    /// Run `f` with the buffer.
    fn with_shared<R>(f: impl FnOnce(&mut Vec<Self>) -> R) -> R;
}

impl PackedValue for f32 {
    fn with_shared<R>(f: impl FnOnce(&mut Vec<Self>) -> R) -> R {
        WHOLE_B_F32.with(|cell| with_cell(cell, f))
    }
}

impl PackedValue for u16 {
    fn with_shared<R>(f: impl FnOnce(&mut Vec<Self>) -> R) -> R {
        WHOLE_B_U16.with(|cell| with_cell(cell, f))
    }
}

/// Run `f` with the buffer in `cell`, or with a new one if it is in use: while this thread
/// waits for a product's tasks, rayon may give it another product to run (when products are
/// themselves called from parallel loops), which needs a buffer of its own.
fn with_cell<T, R>(cell: &RefCell<Vec<T>>, f: impl FnOnce(&mut Vec<T>) -> R) -> R {
    match cell.try_borrow_mut() {
        Ok(mut buffer) => f(&mut buffer),
        Err(_) => f(&mut Vec::new()),
    }
}

/// This thread's pack buffers of one pair of element types.
pub(crate) trait ThreadBuffers: Sized + 'static {
    /// Run `f` with them.
    fn with<R>(f: impl FnOnce(&mut Self) -> R) -> R;
}

macro_rules! thread_buffers {
    ($cell:ident, $p:ty, $a:ty) => {
        impl ThreadBuffers for Buffers<$p, $a> {
            fn with<R>(f: impl FnOnce(&mut Self) -> R) -> R {
                $cell.with(|cell| f(&mut cell.borrow_mut()))
            }
        }
    };
}
thread_buffers!(BUFFERS_F32, f32, f32);
thread_buffers!(BUFFERS_BF16, u16, u16);
thread_buffers!(BUFFERS_BF16_AS_F32, f32, u16);

/// Below this many multiply-adds a product runs on the calling thread.
#[cfg(feature = "parallel")]
const MIN_PARALLEL_WORK: usize = 1 << 18;

/// Call `f(task)` for every task `0..tasks`, on all threads when `work` (multiply-adds) is
/// worth it.
fn for_each_task(tasks: usize, work: usize, f: impl Fn(usize) + Sync) {
    #[cfg(feature = "parallel")]
    if work >= MIN_PARALLEL_WORK && tasks > 1 && thread_count() > 1 {
        use rayon::prelude::*;
        (0..tasks).into_par_iter().for_each(&f);
        return;
    }
    let _ = work;
    (0..tasks).for_each(f);
}

/// Call `f(index, chunk)` for every chunk of `chunk_len` values of `data`, on all threads when
/// `work` is worth it.
fn for_each_chunk<P: Send>(
    data: &mut [P],
    chunk_len: usize,
    work: usize,
    f: impl Fn(usize, &mut [P]) + Sync,
) {
    #[cfg(feature = "parallel")]
    if work >= MIN_PARALLEL_WORK && thread_count() > 1 {
        use rayon::prelude::*;
        data.par_chunks_mut(chunk_len)
            .enumerate()
            .for_each(|(i, chunk)| f(i, chunk));
        return;
    }
    let _ = work;
    for (i, chunk) in data.chunks_mut(chunk_len).enumerate() {
        f(i, chunk);
    }
}

/// Threads the products are spread over: rayon's (`RAYON_NUM_THREADS`), 1 without the
/// `parallel` feature.
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
