//! The hot loops (matrix-vector and matrix-matrix products, attention scores and weighted sums),
//! with the instruction set chosen at run time.
//!
//! **Every sum is `run.c`'s sum.** `run.c` computes each dot product as
//! `sum += w[j] * x[j]` for `j = 0, 1, 2, ...`: every product rounded, then added, in order.
//! Splitting that sum over SIMD lanes would change its rounding, and with it, now and then, a
//! sampled token. So no kernel here ever splits one sum: vectors run *many sums side by side*,
//! one per lane, each strictly in order.
//!
//! * Matrix-vector products (and attention scores, which are a matrix of cached keys times a
//!   query) put one **row** in each lane: a block of rows is loaded, transposed so that each
//!   register holds one column of the block, and the columns are added in order.
//! * Batched matrix products put one **token** in each lane: the batch's activations are
//!   transposed once, and each weight is broadcast and multiplied by a column of tokens.
//! * Weighted sums of cached values put one **output element** in each lane, and add the
//!   positions in order.
//!
//! So all instruction sets, and the plain loops of [`super::plain`], give the same bits, and a
//! batch of tokens gives exactly the numbers of one token at a time. The kernels are written once,
//! generically over a `Vector` of `f32` lanes, and built per instruction set in
//! `kernels/x86.rs` (AVX-512F: 16 lanes, AVX2: 8 lanes) and here (`Portable`, for every other
//! CPU). Threads are not this module's business: see [`super::parallel`].

use std::sync::OnceLock;

/// An instruction set the kernels can run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Plain Rust the compiler vectorises for the build target: runs everywhere.
    Portable,
    /// x86-64 AVX2: 8 lanes.
    Avx2,
    /// x86-64 AVX-512F: 16 lanes.
    Avx512,
}

/// Batched products transpose the activations into columns of this many tokens (a multiple of
/// every instruction set's lane count), zero-padded.
pub const TOKEN_BLOCK: usize = 16;

impl Isa {
    /// The fastest instruction set this CPU supports (detected once, then cached).
    ///
    /// The environment variable `LLAMA2_ISA` (`portable`, `avx2` or `avx512`) asks for a
    /// slower one, to measure or test it; a request the CPU cannot honour is ignored.
    pub fn detect() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| {
            let requested = std::env::var("LLAMA2_ISA")
                .ok()
                .and_then(|name| Isa::named(&name));
            match requested {
                Some(isa) if isa.is_supported() => isa,
                _ => [Isa::Avx512, Isa::Avx2]
                    .into_iter()
                    .find(|isa| isa.is_supported())
                    .unwrap_or(Isa::Portable),
            }
        })
    }

    /// The instruction set called `name` (`portable`, `avx2` or `avx512`, any case).
    pub fn named(name: &str) -> Option<Isa> {
        match name.trim().to_ascii_lowercase().as_str() {
            "portable" => Some(Isa::Portable),
            "avx2" => Some(Isa::Avx2),
            "avx512" => Some(Isa::Avx512),
            _ => None,
        }
    }

    /// Every instruction set this CPU can run, slowest first (for tests and benchmarks).
    pub fn available() -> Vec<Isa> {
        [Isa::Portable, Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter(|isa| isa.is_supported())
            .collect()
    }

    /// True if this CPU has the instructions.
    pub fn is_supported(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx2 | Isa::Avx512 => false,
        }
    }

    /// This instruction set if the CPU supports it, otherwise the portable one, so that asking
    /// for an instruction set can never run an instruction the CPU lacks.
    fn or_portable(self) -> Isa {
        if self.is_supported() {
            self
        } else {
            Isa::Portable
        }
    }

    /// `out[i] = w[i] · x` for each row `i` of the row-major matrix `w`, `(out.len(), x.len())`.
    pub fn matvec(self, out: &mut [f32], w: &[f32], x: &[f32]) {
        assert_eq!(w.len(), out.len() * x.len(), "matrix shape does not match");
        self.dots_strided(out, x, w, x.len());
    }

    /// `out[t] = row t · x`, where row `t` is the `x.len()` values at `rows[t * stride..]`: a
    /// matrix whose rows lie `stride` apart, such as one attention head's cached keys.
    pub fn dots_strided(self, out: &mut [f32], x: &[f32], rows: &[f32], stride: usize) {
        check_strided(out.len(), x.len(), rows.len(), stride);
        match self.or_portable() {
            // SAFETY: `or_portable` checked that the CPU has the instructions, and
            // `check_strided` that the rows are in bounds.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { super::x86::dots_strided_avx2(out, x, rows, stride) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { super::x86::dots_strided_avx512(out, x, rows, stride) },
            // SAFETY: the portable vector has no CPU requirements; rows checked above.
            _ => unsafe { dots_strided_generic::<Portable>(out, x, rows, stride) },
        }
    }

    /// Attention scores of every query head at once: `scores[h * n_pos + t] = q_h · k_t`, where
    /// `q_h` is head `h`'s `head_dim` values of `q`, and `k_t` the slice of cached key row `t`
    /// (`keys` holds `n_pos` rows of `kv_dim` values) for key head `h / kv_mul`.
    ///
    /// The same sums as [`Isa::dots_strided`] per head, but each block of keys is transposed
    /// once for all heads: for heads narrower than a vector (the tiny models), per-head calls
    /// would waste most of every transpose. `kv_mul` must be at most [`MAX_KV_MUL`].
    pub fn scores_all_heads(
        self,
        scores: &mut [f32],
        q: &[f32],
        keys: &[f32],
        n_pos: usize,
        head_dim: usize,
        kv_mul: usize,
    ) {
        assert!(
            head_dim > 0 && (1..=MAX_KV_MUL).contains(&kv_mul),
            "bad head shape"
        );
        assert!(q.len().is_multiple_of(head_dim * kv_mul), "bad head shape");
        let n_heads = q.len() / head_dim;
        let kv_dim = n_heads / kv_mul * head_dim;
        assert!(scores.len() >= n_heads * n_pos, "scores too short");
        assert!(keys.len() >= n_pos * kv_dim, "keys too short");
        let shape = HeadShape {
            n_pos,
            head_dim,
            kv_mul,
            kv_dim,
        };
        match self.or_portable() {
            // SAFETY: `or_portable` checked that the CPU has the instructions; shapes checked.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { super::x86::scores_all_heads_avx2(scores, q, keys, shape) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { super::x86::scores_all_heads_avx512(scores, q, keys, shape) },
            // SAFETY: the portable vector has no CPU requirements; shapes checked above.
            _ => unsafe { scores_all_heads_generic::<Portable>(scores, q, keys, shape) },
        }
    }

    /// The weighted sums of every query head at once: `out_h = Σ_t att[h * n_pos + t] * v_t`,
    /// where `v_t` is the slice of cached value row `t` (`values` holds `n_pos` rows of
    /// `kv_dim` values) for key head `h / kv_mul`; each value summed in order of `t`, as
    /// [`Isa::weighted_sum_strided`] sums it for one head.
    ///
    /// Doing the heads together keeps several independent sums in flight; one narrow head alone
    /// would wait on the latency of every addition.
    pub fn weighted_sums_all_heads(
        self,
        out: &mut [f32],
        att: &[f32],
        values: &[f32],
        n_pos: usize,
        head_dim: usize,
        kv_mul: usize,
    ) {
        assert!(head_dim > 0 && kv_mul > 0, "bad head shape");
        assert!(
            out.len().is_multiple_of(head_dim * kv_mul),
            "bad head shape"
        );
        let n_heads = out.len() / head_dim;
        let kv_dim = n_heads / kv_mul * head_dim;
        assert!(att.len() >= n_heads * n_pos, "attention weights too short");
        assert!(values.len() >= n_pos * kv_dim, "values too short");
        let shape = HeadShape {
            n_pos,
            head_dim,
            kv_mul,
            kv_dim,
        };
        match self.or_portable() {
            // SAFETY: `or_portable` checked that the CPU has the instructions; shapes checked.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe {
                super::x86::weighted_sums_all_heads_avx2(out, att, values, shape)
            },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe {
                super::x86::weighted_sums_all_heads_avx512(out, att, values, shape)
            },
            // SAFETY: the portable vector has no CPU requirements; shapes checked above.
            _ => unsafe { weighted_sums_all_heads_generic::<Portable>(out, att, values, shape) },
        }
    }

    /// `out = Σ_t weights[t] * row t`, rows as in [`Isa::dots_strided`], each value summed in
    /// order of `t`: one attention head's weighted sum of its cached values.
    pub fn weighted_sum_strided(
        self,
        out: &mut [f32],
        weights: &[f32],
        rows: &[f32],
        stride: usize,
    ) {
        check_strided(weights.len(), out.len(), rows.len(), stride);
        match self.or_portable() {
            // SAFETY: `or_portable` checked that the CPU has the instructions, and
            // `check_strided` that the rows are in bounds.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { super::x86::weighted_sum_avx2(out, weights, rows, stride) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { super::x86::weighted_sum_avx512(out, weights, rows, stride) },
            // SAFETY: the portable vector has no CPU requirements; rows checked above.
            _ => unsafe { weighted_sum_generic::<Portable>(out, weights, rows, stride) },
        }
    }

    /// The largest value of `x` (negative infinity if `x` is empty), exactly as the in-order
    /// scan `if v > max { max = v }` from `x[0]` finds it: NaNs after the first value are passed
    /// over. (Of a `0.0` and a `-0.0` either may come back.)
    pub fn max(self, x: &[f32]) -> f32 {
        match self.or_portable() {
            // SAFETY: `or_portable` checked that the CPU has the instructions.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { super::x86::max_avx2(x) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { super::x86::max_avx512(x) },
            // SAFETY: the portable vector has no CPU requirements.
            _ => unsafe { max_generic::<Portable>(x) },
        }
    }

    /// `x[i] /= divisor` for every value: a true division, as `run.c` writes it (multiplying by
    /// the reciprocal would round differently).
    pub fn divide(self, x: &mut [f32], divisor: f32) {
        match self.or_portable() {
            // SAFETY: `or_portable` checked that the CPU has the instructions.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { super::x86::divide_avx2(x, divisor) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { super::x86::divide_avx512(x, divisor) },
            // SAFETY: the portable vector has no CPU requirements.
            _ => unsafe { divide_generic::<Portable>(x, divisor) },
        }
    }

    /// Matrix-matrix product with a transposed result: `out_t[i * m + t] = w[i] · x_t` for each
    /// row `i` of `w` (`rows x cols`) and each of `m` tokens, whose activations are given
    /// transposed and padded by [`transpose_tokens`]: `xs_t[j * padded + t]` is column `j` of
    /// token `t`, with `padded = m` rounded up to [`TOKEN_BLOCK`].
    ///
    /// Each weight is read once for all `m` tokens, and every element equals what
    /// [`Isa::matvec`] computes for the same row and token, bit for bit.
    pub fn matmul_t(self, out_t: &mut [f32], w: &[f32], xs_t: &[f32], m: usize, cols: usize) {
        assert!(cols > 0, "matrix with no columns");
        assert!(w.len().is_multiple_of(cols), "matrix shape does not match");
        let rows = w.len() / cols;
        assert_eq!(out_t.len(), rows * m, "output shape does not match");
        assert!(
            xs_t.len() >= cols * m.next_multiple_of(TOKEN_BLOCK),
            "transposed activations too short"
        );
        match self.or_portable() {
            // SAFETY: `or_portable` checked that the CPU has the instructions; shapes checked.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { super::x86::matmul_t_avx2(out_t, w, xs_t, m, cols) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { super::x86::matmul_t_avx512(out_t, w, xs_t, m, cols) },
            // SAFETY: the portable vector has no CPU requirements; shapes checked above.
            _ => unsafe { matmul_t_generic::<Portable, 4>(out_t, w, xs_t, m, cols) },
        }
    }
}

/// The most query heads per key head that [`Isa::scores_all_heads`] handles (it keeps one
/// running sum per query head of the current key head in registers).
pub const MAX_KV_MUL: usize = 8;

/// The shape of one [`Isa::scores_all_heads`] call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HeadShape {
    /// Cached positions (rows of keys).
    pub n_pos: usize,
    /// Values per head.
    pub head_dim: usize,
    /// Query heads per key head.
    pub kv_mul: usize,
    /// Values per cached row: key heads times `head_dim`.
    pub kv_dim: usize,
}

/// Check that `n` rows of `width` values, `stride` apart, fit in `len` values.
fn check_strided(n: usize, width: usize, len: usize, stride: usize) {
    if n > 0 {
        assert!(width <= stride, "rows overlap");
        assert!((n - 1) * stride + width <= len, "rows out of bounds");
    }
}

/// `out = W x` for a row-major `W` of shape `(out.len(), x.len())`, on the best instruction set.
pub fn matvec(out: &mut [f32], w: &[f32], x: &[f32]) {
    Isa::detect().matvec(out, w, x)
}

/// Write the `m` rows of `xs` (each `cols` long) as columns: `xs_t[j * padded + t] = xs[t][j]`,
/// with `padded = m` rounded up to [`TOKEN_BLOCK`] and the padding zeroed. `xs_t` must hold at
/// least `cols * padded` values.
pub fn transpose_tokens(xs_t: &mut [f32], xs: &[f32], m: usize, cols: usize) {
    let padded = m.next_multiple_of(TOKEN_BLOCK);
    let xs_t = &mut xs_t[..cols * padded];
    for (j, column) in xs_t.chunks_exact_mut(padded).enumerate() {
        for (t, value) in column.iter_mut().enumerate() {
            *value = if t < m { xs[t * cols + j] } else { 0.0 };
        }
    }
}

/// `out_t = W Xᵀ` (see [`Isa::matmul_t`]), on the best instruction set.
pub fn matmul_t(out_t: &mut [f32], w: &[f32], xs_t: &[f32], m: usize, cols: usize) {
    Isa::detect().matmul_t(out_t, w, xs_t, m, cols)
}

/// A SIMD register of `LANES` `f32` lanes, with the few operations the kernels need.
///
/// # Safety
///
/// Every method is `unsafe` because implementations use instructions the CPU may lack: call them
/// only after checking [`Isa::is_supported`] for the implementation's instruction set.
pub(crate) trait Vector: Copy {
    /// Number of `f32` lanes (at most 16).
    const LANES: usize;

    /// All lanes zero.
    unsafe fn zero() -> Self;

    /// Load `LANES` values; `p` must point to `LANES` readable floats.
    unsafe fn load(p: *const f32) -> Self;

    /// Load the first `n` values (`n < LANES`) of `p` and zero the other lanes; `p` must point to
    /// `n` readable floats.
    unsafe fn load_partial(p: *const f32, n: usize) -> Self;

    /// Every lane `v`.
    unsafe fn splat(v: f32) -> Self;

    /// Store all lanes; `p` must point to `LANES` writable floats.
    unsafe fn store(self, p: *mut f32);

    /// Store the first `n` lanes (`n < LANES`); `p` must point to `n` writable floats.
    unsafe fn store_partial(self, p: *mut f32, n: usize);

    /// `self + a * b` lane by lane, rounding the product and then the sum: no fused
    /// multiply-add, whose single rounding would give other bits than `run.c`'s arithmetic.
    unsafe fn add_product(self, a: Self, b: Self) -> Self;

    /// `self / b` lane by lane.
    unsafe fn div(self, b: Self) -> Self;

    /// Lane by lane, `self` where it is greater than `b`, otherwise `b`: the step of an in-order
    /// maximum scan, which passes over a NaN in `self` and keeps one in `b`.
    unsafe fn max(self, b: Self) -> Self;

    /// Ask for the cache line holding `p` to be brought into the level-1 cache, without
    /// waiting for it. `p` may be any address: prefetching never faults. (Nothing by default.)
    #[inline(always)]
    unsafe fn prefetch(_p: *const f32) {}

    /// Transpose a square block of `LANES` vectors in place: afterwards lane `r` of vector `c`
    /// holds what lane `c` of vector `r` held. `block.len()` must be `LANES`.
    unsafe fn transpose(block: &mut [Self]);

    /// The largest lane, by the in-order scan of [`Vector::max`] from lane 0.
    #[inline(always)]
    unsafe fn max_lane(self) -> f32 {
        let mut lanes = [0.0f32; 16];
        // SAFETY: no vector has more than 16 lanes; the caller vouches for the CPU.
        unsafe { self.store(lanes.as_mut_ptr()) };
        let lanes = &lanes[..Self::LANES];
        lanes[1..]
            .iter()
            .fold(lanes[0], |m, &v| if v > m { v } else { m })
    }
}

/// The portable "register": 8 lanes in an array. Loops over it are simple enough for the
/// compiler to turn into whatever vector instructions the build target has.
#[derive(Clone, Copy)]
pub(crate) struct Portable([f32; 8]);

impl Vector for Portable {
    const LANES: usize = 8;

    #[inline(always)]
    unsafe fn zero() -> Self {
        Portable([0.0; 8])
    }

    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: the caller guarantees 8 readable floats at `p`; `read_unaligned` allows any
        // alignment of the array.
        Portable(unsafe { p.cast::<[f32; 8]>().read_unaligned() })
    }

    #[inline(always)]
    unsafe fn load_partial(p: *const f32, n: usize) -> Self {
        let mut lanes = [0.0; 8];
        // SAFETY: the caller guarantees `n` readable floats at `p`, and `n < 8`.
        lanes[..n].copy_from_slice(unsafe { std::slice::from_raw_parts(p, n) });
        Portable(lanes)
    }

    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        Portable([v; 8])
    }

    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: the caller guarantees 8 writable floats at `p`.
        unsafe { p.cast::<[f32; 8]>().write_unaligned(self.0) }
    }

    #[inline(always)]
    unsafe fn store_partial(self, p: *mut f32, n: usize) {
        // SAFETY: the caller guarantees `n` writable floats at `p`, and `n < 8`.
        unsafe { std::slice::from_raw_parts_mut(p, n) }.copy_from_slice(&self.0[..n]);
    }

    #[inline(always)]
    unsafe fn add_product(mut self, a: Self, b: Self) -> Self {
        for ((s, &x), &y) in self.0.iter_mut().zip(&a.0).zip(&b.0) {
            *s += x * y;
        }
        self
    }

    #[inline(always)]
    unsafe fn div(mut self, b: Self) -> Self {
        for (a, &b) in self.0.iter_mut().zip(&b.0) {
            *a /= b;
        }
        self
    }

    #[inline(always)]
    unsafe fn max(mut self, b: Self) -> Self {
        for (a, &b) in self.0.iter_mut().zip(&b.0) {
            *a = if *a > b { *a } else { b };
        }
        self
    }

    #[inline(always)]
    unsafe fn transpose(block: &mut [Self]) {
        for r in 0..8 {
            for c in r + 1..8 {
                let upper = block[r].0[c];
                block[r].0[c] = block[c].0[r];
                block[c].0[r] = upper;
            }
        }
    }
}

/// [`Isa::dots_strided`] for vector type `V`: blocks of `LANES` rows, one row per lane. Each
/// block of `LANES` columns is loaded row by row and transposed, so that vector `c` holds
/// column `c` of every row; the columns are then added to the running sums in order.
///
/// # Safety
///
/// The CPU supports `V`'s instructions; the rows fit in `rows` (see `check_strided`).
#[inline(always)]
pub(crate) unsafe fn dots_strided_generic<V: Vector>(
    out: &mut [f32],
    x: &[f32],
    rows: &[f32],
    stride: usize,
) {
    let lanes = V::LANES;
    let mut first = 0;
    while first < out.len() {
        let block_rows = lanes.min(out.len() - first);
        // SAFETY: rows `first..first + block_rows` are in bounds (checked by the caller), and
        // `out` holds them; the caller vouches for the CPU.
        unsafe {
            let row0 = rows.as_ptr().add(first * stride);
            // The rows after this block, to prefetch while this one is summed. Past the last
            // block they lie outside `rows`, maybe outside any allocation (`wrapping_add`):
            // harmless for a prefetch, and often the rows this thread takes next.
            let next_block = row0.wrapping_add(lanes * stride);
            let sums = if block_rows == lanes {
                dots_of_full_block::<V>(row0, stride, x, next_block)
            } else {
                dots_of_block::<V>(row0, stride, block_rows, x)
            };
            let dst = out.as_mut_ptr().add(first);
            if block_rows == lanes {
                sums.store(dst);
            } else {
                sums.store_partial(dst, block_rows);
            }
        }
        first += block_rows;
    }
}

/// The running sums of `LANES` rows starting at `row0`, `stride` apart, times `x`: the hot loop
/// of [`dots_strided_generic`], with no partial rows to check for.
///
/// While it reads this block a column at a time, it asks for the next block (the `LANES` rows
/// from `next_block` on) as fast as it consumes this one. Read a column at a time, a block is
/// `LANES` short streams side by side, which the hardware prefetchers follow poorly:
///
/// * rows that follow each other in memory (a matrix) are asked for front to back, one long
///   stream that keeps memory busy (decoding stories110M's shapes measured 10% faster,
///   stories15M's 20%);
/// * rows with gaps between them (one head's part of the cached keys) are asked for at the
///   place being read in this block, a block on (int8 stories110M decoded 5% faster).
///
/// # Safety
///
/// The CPU supports `V`'s instructions; the `LANES` rows hold `x.len()` readable floats each.
#[inline(always)]
unsafe fn dots_of_full_block<V: Vector>(
    row0: *const f32,
    stride: usize,
    x: &[f32],
    next_block: *const f32,
) -> V {
    let (n, lanes) = (x.len(), V::LANES);
    let full = n - n % lanes;
    let contiguous = stride == n;
    // Each step reads `LANES * LANES` floats of this block: prefetch as many of the next.
    let lines_per_step = (lanes * lanes / FLOATS_PER_LINE).min(lanes);
    // SAFETY: every read is of row `r < LANES` at a column below `n`; the caller vouches for
    // the CPU. Prefetches never fault, so their addresses need no such care.
    unsafe {
        let mut sums = V::zero();
        let mut block = [V::zero(); 16];
        let block = &mut block[..lanes];
        let mut j = 0;
        while j < full {
            for (r, v) in block.iter_mut().enumerate() {
                if !contiguous {
                    V::prefetch(next_block.wrapping_add(r * stride + j));
                } else if r < lines_per_step {
                    V::prefetch(next_block.wrapping_add(j * lanes + r * FLOATS_PER_LINE));
                }
                *v = V::load(row0.add(r * stride + j));
            }
            V::transpose(block);
            for (c, column) in block.iter().enumerate() {
                sums = sums.add_product(*column, V::splat(*x.get_unchecked(j + c)));
            }
            j += lanes;
        }
        if j < n {
            sums = add_columns(sums, row0, stride, lanes, j, x);
        }
        sums
    }
}

/// Floats in a 64-byte cache line.
const FLOATS_PER_LINE: usize = 16;

/// [`dots_of_full_block`] for the last, partial block of `block_rows < LANES` rows (the other
/// lanes see zeros).
///
/// # Safety
///
/// As for [`dots_of_full_block`], for `block_rows` rows.
#[inline(always)]
unsafe fn dots_of_block<V: Vector>(
    row0: *const f32,
    stride: usize,
    block_rows: usize,
    x: &[f32],
) -> V {
    let mut sums = V::zero();
    let mut j = 0;
    while j < x.len() {
        // SAFETY: forwarded from this function's contract.
        sums = unsafe { add_columns(sums, row0, stride, block_rows, j, x) };
        j += V::LANES.min(x.len() - j);
    }
    sums
}

/// Add columns `j..j + LANES` (or up to the end of `x`) of `block_rows` rows to `sums`, one
/// column after the other: the general (and slower) step, for edges of the matrix.
///
/// # Safety
///
/// The CPU supports `V`'s instructions; the `block_rows` rows from `row0` hold `x.len()`
/// readable floats each.
#[inline(always)]
unsafe fn add_columns<V: Vector>(
    mut sums: V,
    row0: *const f32,
    stride: usize,
    block_rows: usize,
    j: usize,
    x: &[f32],
) -> V {
    let lanes = V::LANES;
    let width = lanes.min(x.len() - j);
    // SAFETY: rows below `block_rows`, columns below `x.len()`; the caller vouches for the CPU.
    unsafe {
        let mut block = [V::zero(); 16];
        let block = &mut block[..lanes];
        for (r, v) in block.iter_mut().enumerate().take(block_rows) {
            let p = row0.add(r * stride + j);
            *v = if width == lanes {
                V::load(p)
            } else {
                V::load_partial(p, width)
            };
        }
        V::transpose(block);
        for (c, column) in block[..width].iter().enumerate() {
            sums = sums.add_product(*column, V::splat(*x.get_unchecked(j + c)));
        }
    }
    sums
}

/// [`Isa::scores_all_heads`] for vector type `V`: blocks of `LANES` positions, one position per
/// lane. Each block of `LANES` key columns is transposed once; column `j` belongs to key head
/// `j / head_dim`, and is added (times the query value) to the running sums of that key head's
/// `kv_mul` query heads. Columns come in order, so each sum is in order; when the key head
/// changes, the finished sums are stored.
///
/// # Safety
///
/// The CPU supports `V`'s instructions; the shapes are consistent (as checked by
/// `scores_all_heads`).
#[inline(always)]
pub(crate) unsafe fn scores_all_heads_generic<V: Vector>(
    scores: &mut [f32],
    q: &[f32],
    keys: &[f32],
    shape: HeadShape,
) {
    let HeadShape {
        n_pos,
        head_dim,
        kv_mul,
        kv_dim,
    } = shape;
    let lanes = V::LANES;
    let mut first = 0;
    while first < n_pos {
        let block_rows = lanes.min(n_pos - first);
        // Store the sums of key head `kv_head`'s query heads for this block of positions.
        let flush = |sums: &[V; MAX_KV_MUL], kv_head: usize, scores: &mut [f32]| {
            for (k, sum) in sums.iter().enumerate().take(kv_mul) {
                let head = kv_head * kv_mul + k;
                // SAFETY: `scores` holds `n_pos` values per head, and positions
                // `first..first + block_rows` are below `n_pos`; the caller vouches for the CPU.
                unsafe {
                    let dst = scores.as_mut_ptr().add(head * n_pos + first);
                    if block_rows == lanes {
                        sum.store(dst);
                    } else {
                        sum.store_partial(dst, block_rows);
                    }
                }
            }
        };
        // SAFETY: rows `first..first + block_rows` hold `kv_dim` floats each and the columns
        // read stay below `kv_dim`; query indices stay inside `q`. The caller vouches for the
        // CPU.
        unsafe {
            let mut sums = [V::zero(); MAX_KV_MUL];
            let mut kv_head = 0;
            let mut block = [V::zero(); 16];
            let block = &mut block[..lanes];
            let mut j = 0;
            while j < kv_dim {
                let width = lanes.min(kv_dim - j);
                for (r, v) in block.iter_mut().enumerate() {
                    *v = if r >= block_rows {
                        V::zero()
                    } else {
                        let p = keys.as_ptr().add((first + r) * kv_dim + j);
                        if width == lanes {
                            V::load(p)
                        } else {
                            V::load_partial(p, width)
                        }
                    };
                }
                V::transpose(block);
                for (c, column) in block[..width].iter().enumerate() {
                    let (head_of_column, i) = ((j + c) / head_dim, (j + c) % head_dim);
                    if head_of_column != kv_head {
                        flush(&sums, kv_head, scores);
                        sums = [V::zero(); MAX_KV_MUL];
                        kv_head = head_of_column;
                    }
                    for (k, sum) in sums.iter_mut().enumerate().take(kv_mul) {
                        let query = *q.get_unchecked((kv_head * kv_mul + k) * head_dim + i);
                        *sum = sum.add_product(*column, V::splat(query));
                    }
                }
                j += width;
            }
            flush(&sums, kv_head, scores);
        }
        first += block_rows;
    }
}

/// [`Isa::weighted_sum_strided`] for vector type `V`: up to [`WEIGHTED_SUM_VECTORS`] registers
/// of output at a time (a whole head, usually), in one pass down the rows, each value summed in
/// order of the rows. One pass reads each row's slice once, as a few neighbouring lines, and
/// asks for the slice [`ROWS_AHEAD`] rows on: the rows are far apart (one head's part of the
/// cached values), and the hardware prefetchers do not follow them.
///
/// # Safety
///
/// The CPU supports `V`'s instructions; the rows fit in `rows` (see `check_strided`).
#[inline(always)]
pub(crate) unsafe fn weighted_sum_generic<V: Vector>(
    out: &mut [f32],
    weights: &[f32],
    rows: &[f32],
    stride: usize,
) {
    let (n, lanes) = (out.len(), V::LANES);
    let mut j0 = 0;
    while j0 < n {
        let width = (WEIGHTED_SUM_VECTORS * lanes).min(n - j0);
        // SAFETY: each row holds `n` floats from `t * stride`, so `width` floats from `j0` are
        // readable, and `out` has `width` writable floats from `j0`; the caller vouches for
        // the CPU. Prefetches never fault, so their addresses need no such care.
        unsafe {
            let mut sums = [V::zero(); WEIGHTED_SUM_VECTORS];
            for (t, &weight) in weights.iter().enumerate() {
                let row = rows.as_ptr().add(t * stride + j0);
                for line in (0..width).step_by(FLOATS_PER_LINE) {
                    V::prefetch(row.wrapping_add(ROWS_AHEAD * stride + line));
                }
                let weight = V::splat(weight);
                for (k, sum) in sums.iter_mut().enumerate().take(width.div_ceil(lanes)) {
                    let (p, left) = (row.add(k * lanes), width - k * lanes);
                    let v = if left >= lanes {
                        V::load(p)
                    } else {
                        V::load_partial(p, left)
                    };
                    *sum = sum.add_product(weight, v);
                }
            }
            for (k, sum) in sums.iter().enumerate().take(width.div_ceil(lanes)) {
                let (p, left) = (out.as_mut_ptr().add(j0 + k * lanes), width - k * lanes);
                if left >= lanes {
                    sum.store(p);
                } else {
                    sum.store_partial(p, left);
                }
            }
        }
        j0 += width;
    }
}

/// Output registers [`weighted_sum_generic`] fills in one pass (a head of 128 values with
/// AVX-512).
const WEIGHTED_SUM_VECTORS: usize = 8;

/// How many rows ahead [`weighted_sum_generic`] asks for the values it will read.
const ROWS_AHEAD: usize = 8;

/// [`Isa::divide`] for vector type `V`.
///
/// # Safety
///
/// The CPU supports `V`'s instructions.
#[inline(always)]
pub(crate) unsafe fn divide_generic<V: Vector>(x: &mut [f32], divisor: f32) {
    let mut j = 0;
    while j < x.len() {
        let lanes = V::LANES.min(x.len() - j);
        // SAFETY: `lanes` floats from `j` are inside `x`; the caller vouches for the CPU.
        unsafe {
            let p = x.as_mut_ptr().add(j);
            if lanes == V::LANES {
                V::load(p).div(V::splat(divisor)).store(p);
            } else {
                V::load_partial(p, lanes)
                    .div(V::splat(divisor))
                    .store_partial(p, lanes);
            }
        }
        j += lanes;
    }
}

/// [`Isa::weighted_sums_all_heads`] for vector type `V`: for each stretch of `LANES` values of
/// a head, eight heads at a time run down the positions together, each adding its weight times
/// its key head's values.
///
/// # Safety
///
/// The CPU supports `V`'s instructions; the shapes are consistent (as checked by
/// `weighted_sums_all_heads`).
#[inline(always)]
pub(crate) unsafe fn weighted_sums_all_heads_generic<V: Vector>(
    out: &mut [f32],
    att: &[f32],
    values: &[f32],
    shape: HeadShape,
) {
    const HEADS: usize = 8;
    let HeadShape {
        n_pos,
        head_dim,
        kv_mul,
        kv_dim,
    } = shape;
    let n_heads = out.len() / head_dim;
    let mut first_head = 0;
    while first_head < n_heads {
        let heads = HEADS.min(n_heads - first_head);
        let mut j = 0;
        while j < head_dim {
            let lanes = V::LANES.min(head_dim - j);
            // SAFETY: for head `h < n_heads`, position `t < n_pos` and values `j..j + lanes` of
            // a head, `att[h * n_pos + t]`, `values[t * kv_dim + (h / kv_mul) * head_dim + j..]`
            // and `out[h * head_dim + j..]` are in bounds (checked by the caller); the caller
            // vouches for the CPU.
            unsafe {
                let mut sums = [V::zero(); HEADS];
                let value_at = |h: usize| (h / kv_mul) * head_dim + j;
                for t in 0..n_pos {
                    let row = values.as_ptr().add(t * kv_dim);
                    for (k, sum) in sums.iter_mut().enumerate().take(heads) {
                        let h = first_head + k;
                        let p = row.add(value_at(h));
                        let v = if lanes == V::LANES {
                            V::load(p)
                        } else {
                            V::load_partial(p, lanes)
                        };
                        *sum = sum.add_product(V::splat(*att.get_unchecked(h * n_pos + t)), v);
                    }
                }
                for (k, sum) in sums.iter().enumerate().take(heads) {
                    let dst = out.as_mut_ptr().add((first_head + k) * head_dim + j);
                    if lanes == V::LANES {
                        sum.store(dst);
                    } else {
                        sum.store_partial(dst, lanes);
                    }
                }
            }
            j += lanes;
        }
        first_head += heads;
    }
}

/// [`Isa::max`] for vector type `V`: lane by lane over the full chunks, starting from `x[0]` in
/// every lane (so that a NaN there stays, as in the scan), then across the lanes and on through
/// the values left over.
///
/// # Safety
///
/// The CPU supports `V`'s instructions.
#[inline(always)]
pub(crate) unsafe fn max_generic<V: Vector>(x: &[f32]) -> f32 {
    let Some(&first) = x.first() else {
        return f32::NEG_INFINITY;
    };
    let full = x.len() - x.len() % V::LANES;
    // SAFETY: every chunk below `full` holds `LANES` readable floats; the caller vouches for the
    // CPU.
    let max = unsafe {
        let mut maxes = V::splat(first);
        for k in (0..full).step_by(V::LANES) {
            maxes = V::load(x[k..].as_ptr()).max(maxes);
        }
        maxes.max_lane()
    };
    x[full..]
        .iter()
        .fold(max, |m, &v| if v > m { v } else { m })
}

/// [`Isa::matmul_t`] for vector type `V`: groups of `R` weight rows, one token per lane. For each
/// group, every block of `LANES` tokens runs down all the columns, adding each broadcast weight
/// times the column of tokens: `R` running sums per token, each in column order.
///
/// Weight rows are the outer loop so that each group is read from memory once and then served
/// from cache to every block of tokens.
///
/// # Safety
///
/// The CPU supports `V`'s instructions; the shapes are consistent (as checked by `matmul_t`).
#[inline(always)]
pub(crate) unsafe fn matmul_t_generic<V: Vector, const R: usize>(
    out_t: &mut [f32],
    w: &[f32],
    xs_t: &[f32],
    m: usize,
    cols: usize,
) {
    let rows = w.len() / cols;
    let padded = m.next_multiple_of(TOKEN_BLOCK);
    let mut i = 0;
    while i < rows {
        let group = R.min(rows - i);
        // Rows past the matrix's end repeat its last row; their sums are not stored.
        let row: [*const f32; R] =
            std::array::from_fn(|r| w[(i + r.min(group - 1)) * cols..].as_ptr());
        let mut t = 0;
        while t < m {
            let tokens = V::LANES.min(m - t);
            // SAFETY: each row pointer has `cols` readable floats; column `j` of tokens
            // `t..t + LANES` lies inside the padded `xs_t`; the output holds `m` floats per row
            // from `(i + r) * m`. The caller vouches for the CPU.
            unsafe {
                let mut sums = [V::zero(); R];
                for j in 0..cols {
                    let x = V::load(xs_t.as_ptr().add(j * padded + t));
                    for r in 0..R {
                        sums[r] = sums[r].add_product(V::splat(*row[r].add(j)), x);
                    }
                }
                for (r, sum) in sums.iter().enumerate().take(group) {
                    let dst = out_t.as_mut_ptr().add((i + r) * m + t);
                    if tokens == V::LANES {
                        sum.store(dst);
                    } else {
                        sum.store_partial(dst, tokens);
                    }
                }
            }
            t += tokens;
        }
        i += group;
    }
}
