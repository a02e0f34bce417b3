//! The hot loops (dot products, matrix-vector and matrix-matrix products), with the instruction
//! set chosen at run time.
//!
//! Every kernel here is written once, generically over a `Vector` of 16 `f32` lanes, and built
//! for each instruction set: AVX-512F (one register) and AVX2 (two) in `kernels/x86.rs`, and
//! `Portable`, an array the compiler vectorises as best it can, for every other CPU.
//! [`Isa::detect`] picks the best one the CPU has, once per process.
//!
//! Every dot product is summed the same way, on every instruction set: 16 running sums, one per
//! lane, take the columns in chunks of 16 (each product rounded, then added: no fused
//! multiply-add); the 16 sums are added pairwise, upper half onto lower half, down to one; the
//! columns left after the last full chunk are summed in order and added last. So every
//! instruction set gives the same bits, and so does [`super::plain::dot_in_lanes`], which spells
//! the order out. (The bits are not `run.c`'s, which sums each row strictly in order, but they
//! have matched its sampled text in every case tested.) Tiles of several rows and tokens only
//! interleave independent dot products (which hides the latency of the arithmetic and reuses
//! each loaded weight for several tokens); they never change how one is summed. So a batch of
//! tokens gives exactly the numbers of one token at a time.
//!
//! Threads are not this module's business: see [`super::parallel`].

use std::sync::OnceLock;

/// An instruction set the kernels can run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Plain Rust the compiler vectorises for the build target: runs everywhere.
    Portable,
    /// x86-64 AVX2, two 8-lane registers per vector.
    Avx2,
    /// x86-64 AVX-512F, one 16-lane register per vector.
    Avx512,
}

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

    /// Dot product of two equal-length vectors.
    pub fn dot(self, a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len(), "dot of vectors of different lengths");
        match self.or_portable() {
            // SAFETY: `or_portable` checked that the CPU has the instructions.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { super::x86::dot_avx2(a, b) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { super::x86::dot_avx512(a, b) },
            // SAFETY: the portable vector has no CPU requirements.
            _ => unsafe { dot_generic::<Portable>(a, b) },
        }
    }

    /// `out[i] = w[i] · x` for each row `i` of the row-major matrix `w`, `(out.len(), x.len())`.
    pub fn matvec(self, out: &mut [f32], w: &[f32], x: &[f32]) {
        assert_eq!(w.len(), out.len() * x.len(), "matrix shape does not match");
        match self.or_portable() {
            // SAFETY: `or_portable` checked that the CPU has the instructions.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { super::x86::matvec_avx2(out, w, x) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { super::x86::matvec_avx512(out, w, x) },
            // SAFETY: the portable vector has no CPU requirements.
            _ => unsafe { matvec_generic::<Portable>(out, w, x) },
        }
    }

    /// `scores[t] = q · row t`, where row `t` is the `q.len()` values at `rows[t * stride..]`:
    /// one attention head's query against its cached keys.
    pub fn dots_strided(self, scores: &mut [f32], q: &[f32], rows: &[f32], stride: usize) {
        check_strided(scores.len(), q.len(), rows.len(), stride);
        match self.or_portable() {
            // SAFETY: `or_portable` checked that the CPU has the instructions.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { super::x86::dots_strided_avx2(scores, q, rows, stride) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { super::x86::dots_strided_avx512(scores, q, rows, stride) },
            // SAFETY: the portable vector has no CPU requirements.
            _ => unsafe { dots_strided_generic::<Portable>(scores, q, rows, stride) },
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
            // SAFETY: `or_portable` checked that the CPU has the instructions.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { super::x86::weighted_sum_avx2(out, weights, rows, stride) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { super::x86::weighted_sum_avx512(out, weights, rows, stride) },
            // SAFETY: the portable vector has no CPU requirements.
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

    /// Matrix-matrix product with a transposed result: `out_t[i * m + t] = w[i] · xs[t]` for
    /// each row `i` of `w` (`rows x cols`) and each of the `m` rows of `xs` (`m x cols`).
    ///
    /// Each weight row is read once for all `m` activation rows. Every element equals what
    /// [`Isa::matvec`] computes for the same row and vector, bit for bit.
    pub fn matmul_t(self, out_t: &mut [f32], w: &[f32], xs: &[f32], cols: usize) {
        assert!(cols > 0, "matrix with no columns");
        assert!(
            w.len().is_multiple_of(cols) && xs.len().is_multiple_of(cols),
            "matrix shapes do not match"
        );
        let (rows, m) = (w.len() / cols, xs.len() / cols);
        assert_eq!(out_t.len(), rows * m, "output shape does not match");
        match self.or_portable() {
            // SAFETY: `or_portable` checked that the CPU has the instructions.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { super::x86::matmul_t_avx2(out_t, w, xs, cols) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { super::x86::matmul_t_avx512(out_t, w, xs, cols) },
            // SAFETY: the portable vector has no CPU requirements.
            _ => unsafe { matmul_t_generic::<Portable, 4, 4>(out_t, w, xs, cols) },
        }
    }
}

/// Check that `n` rows of `width` values, `stride` apart, fit in `len` values.
fn check_strided(n: usize, width: usize, len: usize, stride: usize) {
    if n > 0 {
        assert!(width <= stride, "rows overlap");
        assert!((n - 1) * stride + width <= len, "rows out of bounds");
    }
}

/// Dot product of two equal-length vectors, on the best instruction set.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    Isa::detect().dot(a, b)
}

/// `out = W x` for a row-major `W` of shape `(out.len(), x.len())`, on the best instruction set.
pub fn matvec(out: &mut [f32], w: &[f32], x: &[f32]) {
    Isa::detect().matvec(out, w, x)
}

/// `out_t = W Xᵀ` (see [`Isa::matmul_t`]), on the best instruction set.
pub fn matmul_t(out_t: &mut [f32], w: &[f32], xs: &[f32], cols: usize) {
    Isa::detect().matmul_t(out_t, w, xs, cols)
}

/// A SIMD register of `LANES` `f32` lanes, with the few operations the kernels need.
///
/// # Safety
///
/// Every method is `unsafe` because implementations use instructions the CPU may lack: call them
/// only after checking [`Isa::is_supported`] for the implementation's instruction set.
pub(crate) trait Vector: Copy {
    /// Number of `f32` lanes.
    const LANES: usize;

    /// All lanes zero.
    unsafe fn zero() -> Self;

    /// Load `LANES` values; `p` must point to `LANES` readable floats.
    unsafe fn load(p: *const f32) -> Self;

    /// Load the first `n` values (`n < LANES`) of `p` and zero the other lanes; `p` must point to
    /// `n` readable floats.
    unsafe fn load_partial(p: *const f32, n: usize) -> Self;

    /// Lane `j` from `p + j * stride`; those `LANES` floats must be readable, and
    /// `stride * LANES` must fit in an `i32`.
    unsafe fn gather(p: *const f32, stride: usize) -> Self;

    /// Every lane `v`.
    unsafe fn splat(v: f32) -> Self;

    /// Store all lanes; `p` must point to `LANES` writable floats.
    unsafe fn store(self, p: *mut f32);

    /// Store the first `n` lanes (`n < LANES`); `p` must point to `n` writable floats.
    unsafe fn store_partial(self, p: *mut f32, n: usize);

    /// `self + a * b` lane by lane, rounding the product and then the sum: no fused
    /// multiply-add, whose single rounding would give other bits than `run.c`'s arithmetic.
    unsafe fn add_product(self, a: Self, b: Self) -> Self;

    /// The sum of the lanes: the upper half is added to the lower half, lane by lane, until one
    /// lane is left.
    unsafe fn sum(self) -> f32;

    /// `self + b` lane by lane.
    unsafe fn add(self, b: Self) -> Self;

    /// `self * b` lane by lane.
    unsafe fn mul(self, b: Self) -> Self;

    /// Lane by lane, `self` where it is greater than `b`, otherwise `b`: the step of an in-order
    /// maximum scan, which passes over a NaN in `self` and keeps one in `b`.
    unsafe fn max(self, b: Self) -> Self;

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

/// The portable "register": 16 lanes in an array. Loops over it are simple enough for the
/// compiler to turn into whatever vector instructions the build target has.
#[derive(Clone, Copy)]
pub(crate) struct Portable([f32; 16]);

impl Portable {
    /// `f` applied lane by lane to `self` and `b`.
    #[inline(always)]
    fn zip(mut self, b: Self, f: impl Fn(f32, f32) -> f32) -> Self {
        for (x, &y) in self.0.iter_mut().zip(&b.0) {
            *x = f(*x, y);
        }
        self
    }
}

impl Vector for Portable {
    const LANES: usize = 16;

    #[inline(always)]
    unsafe fn zero() -> Self {
        Portable([0.0; 16])
    }

    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: the caller guarantees 16 readable floats at `p`; `read_unaligned` allows any
        // alignment of the array.
        Portable(unsafe { p.cast::<[f32; 16]>().read_unaligned() })
    }

    #[inline(always)]
    unsafe fn load_partial(p: *const f32, n: usize) -> Self {
        let mut lanes = [0.0; 16];
        // SAFETY: the caller guarantees `n` readable floats at `p`, and `n < 16`.
        lanes[..n].copy_from_slice(unsafe { std::slice::from_raw_parts(p, n) });
        Portable(lanes)
    }

    #[inline(always)]
    unsafe fn gather(p: *const f32, stride: usize) -> Self {
        let mut lanes = [0.0; 16];
        for (j, lane) in lanes.iter_mut().enumerate() {
            // SAFETY: the caller guarantees that `p + j * stride` is readable for every lane.
            *lane = unsafe { *p.add(j * stride) };
        }
        Portable(lanes)
    }

    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        Portable([v; 16])
    }

    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: the caller guarantees 16 writable floats at `p`.
        unsafe { p.cast::<[f32; 16]>().write_unaligned(self.0) }
    }

    #[inline(always)]
    unsafe fn store_partial(self, p: *mut f32, n: usize) {
        // SAFETY: the caller guarantees `n` writable floats at `p`, and `n < 16`.
        unsafe { std::slice::from_raw_parts_mut(p, n) }.copy_from_slice(&self.0[..n]);
    }

    #[inline(always)]
    unsafe fn add_product(self, a: Self, b: Self) -> Self {
        self.zip(a.mul(b), |x, ab| x + ab)
    }

    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        self.zip(b, |x, y| x + y)
    }

    #[inline(always)]
    unsafe fn mul(self, b: Self) -> Self {
        self.zip(b, |x, y| x * y)
    }

    #[inline(always)]
    unsafe fn max(self, b: Self) -> Self {
        self.zip(b, |a, b| if a > b { a } else { b })
    }

    #[inline(always)]
    unsafe fn sum(self) -> f32 {
        let mut lanes = self.0;
        let mut width = 8;
        while width > 0 {
            for i in 0..width {
                lanes[i] += lanes[i + width];
            }
            width /= 2;
        }
        lanes[0]
    }
}

/// Dot products of `R` weight rows with `T` activation vectors, all `n` long:
/// `out[r][t] = rows[r] · xs[t]`, each summed in the order of the module documentation.
///
/// # Safety
///
/// The CPU supports `V`'s instructions, and every pointer points to `n` readable floats.
#[inline(always)]
unsafe fn dot_tile<V: Vector, const R: usize, const T: usize>(
    rows: [*const f32; R],
    xs: [*const f32; T],
    n: usize,
) -> [[f32; T]; R] {
    // SAFETY (for every read below): offsets stay below `n`; the caller vouches for the CPU.
    unsafe {
        let mut acc = [[V::zero(); T]; R];
        let full = n - n % V::LANES;
        let mut k = 0;
        while k < full {
            let mut w = [V::zero(); R];
            for r in 0..R {
                w[r] = V::load(rows[r].add(k));
            }
            for t in 0..T {
                let x = V::load(xs[t].add(k));
                for r in 0..R {
                    acc[r][t] = acc[r][t].add_product(w[r], x);
                }
            }
            k += V::LANES;
        }
        // Plain loops rather than `array::map`, whose closures might not be inlined into the
        // caller's `#[target_feature]` context (and then neither would the intrinsics).
        let mut dots = [[0.0; T]; R];
        for r in 0..R {
            for t in 0..T {
                // The columns left over after the last full chunk, in order, on their own.
                let mut tail = 0.0f32;
                for j in full..n {
                    tail += *rows[r].add(j) * *xs[t].add(j);
                }
                dots[r][t] = acc[r][t].sum() + tail;
            }
        }
        dots
    }
}

/// [`Isa::dot`] for vector type `V`.
///
/// # Safety
///
/// The CPU supports `V`'s instructions; `a` and `b` have the same length.
#[inline(always)]
pub(crate) unsafe fn dot_generic<V: Vector>(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    // SAFETY: both slices hold `a.len()` floats; the caller vouches for the CPU.
    unsafe { dot_tile::<V, 1, 1>([a.as_ptr()], [b.as_ptr()], a.len())[0][0] }
}

/// [`Isa::matvec`] for vector type `V`: one row after the other, so the weights stream through
/// memory in order, which the hardware prefetchers follow best (interleaving several rows
/// halves the bandwidth for long rows). The processor overlaps the independent rows by itself.
///
/// # Safety
///
/// The CPU supports `V`'s instructions; `w.len() == out.len() * x.len()`.
#[inline(always)]
pub(crate) unsafe fn matvec_generic<V: Vector>(out: &mut [f32], w: &[f32], x: &[f32]) {
    let n = x.len();
    debug_assert_eq!(w.len(), out.len() * n);
    for (i, o) in out.iter_mut().enumerate() {
        // SAFETY: row `i` lies inside `w` and `x` holds `n` floats; the caller vouches for the
        // CPU.
        *o = unsafe { dot_tile::<V, 1, 1>([w[i * n..].as_ptr()], [x.as_ptr()], n)[0][0] };
    }
}

/// [`Isa::dots_strided`] for vector type `V`: four rows at a time, since rows this short
/// (one head) stream well together.
///
/// Rows shorter than one vector (the heads of tiny models) have no full chunk: their dot product
/// is summed in order, column after column. For those, blocks of `LANES` rows go in the lanes
/// instead, one column at a time, which adds in the same order.
///
/// # Safety
///
/// The CPU supports `V`'s instructions; the rows fit in `rows` (see `check_strided`).
#[inline(always)]
pub(crate) unsafe fn dots_strided_generic<V: Vector>(
    scores: &mut [f32],
    q: &[f32],
    rows: &[f32],
    stride: usize,
) {
    let n = q.len();
    let row = |t: usize| rows[t * stride..].as_ptr();
    let mut t = 0;
    if n < V::LANES && stride.saturating_mul(V::LANES) <= i32::MAX as usize {
        let mut blocks = scores.chunks_exact_mut(V::LANES);
        for block in &mut blocks {
            // SAFETY: rows `t..t + LANES` hold `n` floats each, so column `i < n` of each is
            // readable; `block` holds `LANES` floats; the caller vouches for the CPU.
            unsafe {
                let mut dots = V::zero();
                for (i, &qi) in q.iter().enumerate() {
                    dots = dots.add_product(V::splat(qi), V::gather(row(t).add(i), stride));
                }
                // `dot_tile` adds its in-order sum to that of (no) full chunks, 0.0: so here.
                V::zero().add(dots).store(block.as_mut_ptr());
            }
            t += V::LANES;
        }
    }
    let mut groups = scores[t..].chunks_exact_mut(4);
    for group in &mut groups {
        // SAFETY: rows `t..t + 4` hold `n` floats each, as does `q`; the caller vouches for the
        // CPU.
        let dots =
            unsafe { dot_tile::<V, 4, 1>(std::array::from_fn(|r| row(t + r)), [q.as_ptr()], n) };
        for (s, d) in group.iter_mut().zip(dots) {
            *s = d[0];
        }
        t += 4;
    }
    for s in groups.into_remainder() {
        // SAFETY: as above, for the single row `t`.
        *s = unsafe { dot_tile::<V, 1, 1>([row(t)], [q.as_ptr()], n)[0][0] };
        t += 1;
    }
}

/// [`Isa::weighted_sum_strided`] for vector type `V`: one register of output at a time, summing
/// over all rows.
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
    let n = out.len();
    let mut j = 0;
    while j < n {
        let lanes = V::LANES.min(n - j);
        // SAFETY: each row holds `n` floats from `t * stride`, so `lanes` floats from `j` are
        // readable, and `out` has `lanes` writable floats from `j`; the caller vouches for the
        // CPU.
        unsafe {
            let mut acc = V::zero();
            for (t, &weight) in weights.iter().enumerate() {
                let p = rows.as_ptr().add(t * stride + j);
                let v = if lanes == V::LANES {
                    V::load(p)
                } else {
                    V::load_partial(p, lanes)
                };
                acc = acc.add_product(V::splat(weight), v);
            }
            if lanes == V::LANES {
                acc.store(out.as_mut_ptr().add(j));
            } else {
                acc.store_partial(out.as_mut_ptr().add(j), lanes);
            }
        }
        j += lanes;
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

/// [`Isa::matmul_t`] for vector type `V`, in tiles of `R` weight rows by `T` activation rows.
///
/// # Safety
///
/// The CPU supports `V`'s instructions; the shapes are consistent (as checked by `matmul_t`).
#[inline(always)]
pub(crate) unsafe fn matmul_t_generic<V: Vector, const R: usize, const T: usize>(
    out_t: &mut [f32],
    w: &[f32],
    xs: &[f32],
    cols: usize,
) {
    let (rows, m) = (w.len() / cols, xs.len() / cols);
    let mut i = 0;
    while i < rows {
        let out_rows = &mut out_t[i * m..];
        // SAFETY (both calls): the rows passed lie inside `w`; the caller vouches for the CPU.
        if i + R <= rows {
            unsafe { row_group::<V, R, T>(out_rows, &w[i * cols..(i + R) * cols], xs, cols) };
            i += R;
        } else {
            unsafe { row_group::<V, 1, T>(out_rows, &w[i * cols..(i + 1) * cols], xs, cols) };
            i += 1;
        }
    }
}

/// Rows `w` (exactly `R` of them) times every activation row of `xs`, `T` at a time, written to
/// the first `R * m` values of `out_t` (row-major, `m` values per weight row).
///
/// # Safety
///
/// The CPU supports `V`'s instructions; `w` holds `R * cols` floats.
#[inline(always)]
unsafe fn row_group<V: Vector, const R: usize, const T: usize>(
    out_t: &mut [f32],
    w: &[f32],
    xs: &[f32],
    cols: usize,
) {
    let m = xs.len() / cols;
    let rows: [*const f32; R] = std::array::from_fn(|r| w[r * cols..].as_ptr());
    let x = |t: usize| xs[t * cols..].as_ptr();
    let mut t = 0;
    while t < m {
        if t + T <= m {
            // SAFETY: rows and activation rows `t..t + T` each hold `cols` floats.
            let dots =
                unsafe { dot_tile::<V, R, T>(rows, std::array::from_fn(|j| x(t + j)), cols) };
            for (r, row) in dots.iter().enumerate() {
                out_t[r * m + t..r * m + t + T].copy_from_slice(row);
            }
            t += T;
        } else {
            // SAFETY: as above, for the single activation row `t`.
            let dots = unsafe { dot_tile::<V, R, 1>(rows, [x(t)], cols) };
            for (r, row) in dots.iter().enumerate() {
                out_t[r * m + t] = row[0];
            }
            t += 1;
        }
    }
}
