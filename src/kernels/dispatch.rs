//! One choice of kernels for the whole forward pass: the instruction set ([`Isa`]), detected once
//! and overridable with `LLAMA2_ISA`, and the table of kernel functions built for it
//! ([`Kernels`]), float and int8 alike.
//!
//! A model picks its table once, when it is loaded; every matrix product, attention head and
//! softmax then calls through it, with no `match` on the instruction set per call. The table's
//! methods check the shapes of their slices and call the function in the table, which trusts
//! them: that is the one place where safe code meets the SIMD kernels.
//!
//! Adding a kind of kernel (another instruction set, or a faster arithmetic than `run.c`'s) is
//! adding its functions and one constructor that fills a [`Kernels`] with them: nothing above
//! this module changes. The fast arithmetic ([`Arithmetic::Fast`], [`Kernels::fast`]) is such a
//! table: the exact one for the same instruction set, with the steps that decoding spends its
//! time in (one position's matrix products, attention's dot products and weighted sums, softmax)
//! taken from [`crate::fast`] instead, in the [`fast::Kernel`] a timing chose.

#[allow(unused_imports)]
use crate::prelude::*;

use super::exact::{self, HeadShape, MAX_KV_MUL, TOKEN_BLOCK};
#[cfg(target_arch = "x86_64")]
use super::x86::{avx2, avx512};
use crate::fast;
use crate::quant::{self, Q8Matrix, QuantizedVector};

/// An instruction set the kernels can run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Plain Rust the compiler vectorises for the build target: runs everywhere.
    Portable,
    /// x86-64 AVX2: 8 lanes.
    Avx2,
    /// x86-64 AVX-512F: 16 lanes (int8 products with VNNI where the CPU has it).
    Avx512,
}

impl Isa {
    /// The fastest instruction set this CPU supports (detected once, then cached).
    ///
    /// The environment variable `LLAMA2_ISA` (`portable`, `avx2` or `avx512`) asks for a
    /// slower one, to measure or test it; a request the CPU cannot honour is ignored.
    pub fn detect() -> Isa {
        #[cfg(feature = "std")]
        {
            static CHOSEN: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
            *CHOSEN.get_or_init(Isa::choose)
        }
        // Without std the choice is fixed at compile time, so there is nothing to cache.
        #[cfg(not(feature = "std"))]
        Isa::choose()
    }

    /// `LLAMA2_ISA` if set and supported, else the fastest supported instruction set.
    fn choose() -> Isa {
        let requested = crate::platform::env_var("LLAMA2_ISA").and_then(|name| Isa::named(&name));
        match requested {
            Some(isa) if isa.is_supported() => isa,
            _ => [Isa::Avx512, Isa::Avx2]
                .into_iter()
                .find(|isa| isa.is_supported())
                .unwrap_or(Isa::Portable),
        }
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
            Isa::Avx2 => crate::platform::cpu_has!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => crate::platform::cpu_has!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx2 | Isa::Avx512 => false,
        }
    }
}

/// How the forward pass rounds: in `run.c`'s order, or fast.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Arithmetic {
    /// Each dot product split over vector lanes with fused multiply-add and several partial
    /// sums, softmax with a vectorised `exp` ([`crate::fast`]): not `run.c`'s bits, but the same
    /// bits for any number of threads and on every instruction set.
    #[default]
    Fast,
    /// Every sum in `run.c`'s order and the C library's `exp`: byte for byte what llama2.c's
    /// `run.c` and `runq.c` (built without fast-math) compute.
    Exact,
}

impl Arithmetic {
    /// Its name: `fast` or `exact`.
    pub fn name(self) -> &'static str {
        match self {
            Arithmetic::Fast => "fast",
            Arithmetic::Exact => "exact",
        }
    }
}

/// True if the CPU has AVX-512's byte dot products (VNNI, with F and BW), which the AVX-512
/// table uses for int8 matrices.
#[cfg(target_arch = "x86_64")]
fn has_avx512_vnni() -> bool {
    crate::platform::cpu_has!("avx512f")
        && crate::platform::cpu_has!("avx512bw")
        && crate::platform::cpu_has!("avx512vnni")
}

exact::instantiate!(
    /// The exact kernels in [`Portable`](crate::kernels::vector::Portable) registers: for every
    /// CPU.
    portable,
    crate::kernels::vector::Portable,
    crate::kernels::vector::Portable,
    4
);

/// The kernels of the forward pass, built for one instruction set: a table of functions chosen
/// once (per model) instead of a `match` in every call.
///
/// Each entry is an `unsafe fn` whose contract is that of the kernel it points to: the CPU has
/// the table's instructions (guaranteed by the constructors, which check), and the slices have
/// the shapes the kernel documents (guaranteed by the method of the same name, which checks
/// them before calling). The entries are private; the methods are the interface.
#[derive(Clone, Copy, Debug)]
pub struct Kernels {
    isa: Isa,
    /// `Some` for [`Arithmetic::Fast`]: the fast kernel that the methods with a fast version
    /// call instead of the table's entry (matrix products of one position, attention's dots
    /// and weighted sums, softmax).
    fast: Option<fast::Kernel>,
    /// `out[i] = w[i] · x` for the rows of `w`; see [`exact::matvec`].
    matvec: unsafe fn(&mut [f32], &[f32], &[f32]),
    /// One dot product per row of a strided matrix; see [`exact::dots_strided`].
    dots_strided: unsafe fn(&mut [f32], &[f32], &[f32], usize),
    /// Rows of a matrix times a transposed batch; see [`exact::matmul_t`].
    matmul_t: unsafe fn(&mut [f32], &[f32], &[f32], usize, usize),
    /// A weighted sum of strided rows; see [`exact::weighted_sum`].
    weighted_sum: unsafe fn(&mut [f32], &[f32], &[f32], usize),
    /// Attention scores of every head at once; see [`exact::scores_all_heads`].
    scores_all_heads: unsafe fn(&mut [f32], &[f32], &[f32], HeadShape),
    /// Weighted sums of every head at once; see [`exact::weighted_sums_all_heads`].
    weighted_sums_all_heads: unsafe fn(&mut [f32], &[f32], &[f32], HeadShape),
    /// The largest value; see [`exact::max`].
    max: unsafe fn(&[f32]) -> f32,
    /// Division of every value; see [`exact::divide`].
    divide: unsafe fn(&mut [f32], f32),
    /// Softmax of rows; see [`exact::softmax_rows`].
    softmax_rows: unsafe fn(&mut [f32], usize),
    /// Int8 rows times quantized vectors, for matrices that
    /// [suit the SIMD kernels](Q8Matrix::suits_simd_kernels) (others take
    /// [`quant::plain::rows_aligned`]); see [`quant::plain::rows_aligned`] for what it computes.
    q8_rows: unsafe fn(&mut [f32], &Q8Matrix, usize, &[QuantizedVector]),
}

/// A table of the exact kernels of module `$m` (built by [`exact::instantiate!`]), with the int8
/// kernel `$q8`.
macro_rules! exact_table {
    ($isa:expr, $m:ident, $q8:expr) => {
        Kernels {
            isa: $isa,
            fast: None,
            matvec: $m::matvec,
            dots_strided: $m::dots_strided,
            matmul_t: $m::matmul_t,
            weighted_sum: $m::weighted_sum,
            scores_all_heads: $m::scores_all_heads,
            weighted_sums_all_heads: $m::weighted_sums_all_heads,
            max: $m::max,
            divide: $m::divide,
            softmax_rows: $m::softmax_rows,
            q8_rows: $q8,
        }
    };
}

impl Kernels {
    /// The exact kernels for the instruction set [`Isa::detect`] picks (a table of function
    /// pointers: cheap to build).
    pub fn detect() -> Kernels {
        Kernels::exact(Isa::detect())
    }

    /// The exact kernels (every sum in `run.c`'s order) for `isa`, or for [`Isa::Portable`] if
    /// this CPU cannot run `isa`: a table can never hold an instruction the CPU lacks.
    pub fn exact(isa: Isa) -> Kernels {
        let isa = if isa.is_supported() {
            isa
        } else {
            Isa::Portable
        };
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 if has_avx512_vnni() => {
                exact_table!(isa, avx512, quant::x86::rows_avx512_vnni)
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => exact_table!(isa, avx512, quant::x86::rows_avx2),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => exact_table!(isa, avx2, quant::x86::rows_avx2),
            _ => exact_table!(Isa::Portable, portable, quant::plain::rows_aligned),
        }
    }

    /// The fast-arithmetic kernels running `kernel` (see [`Arithmetic::Fast`]): the exact table
    /// of the widest instruction set, except that one position's matrix products (float and
    /// int8), attention's dot products and weighted sums, and softmax call [`crate::fast`] with
    /// `kernel` (whose instruction set the timing chose, maybe a narrower one), and that a batch
    /// of positions times a float matrix is [`crate::gemm::matmul_nt`] (with `std`). Int8
    /// batches keep the exact products.
    pub fn fast(kernel: fast::Kernel) -> Kernels {
        Kernels {
            fast: Some(kernel),
            ..Kernels::exact(Isa::detect())
        }
    }

    /// The instruction set of this table.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// How this table rounds.
    pub fn arithmetic(&self) -> Arithmetic {
        match self.fast {
            Some(_) => Arithmetic::Fast,
            None => Arithmetic::Exact,
        }
    }

    /// The fast kernel this table runs ([`Arithmetic::Fast`] only).
    pub fn fast_kernel(&self) -> Option<fast::Kernel> {
        self.fast
    }

    /// `out[i] = w[i] · x` for each row `i` of the row-major matrix `w`, `(out.len(), x.len())`.
    pub fn matvec(&self, out: &mut [f32], w: &[f32], x: &[f32]) {
        assert_eq!(w.len(), out.len() * x.len(), "matrix shape does not match");
        if let Some(kernel) = self.fast {
            return fast::matvec_f32(kernel, out, w, x);
        }
        // SAFETY: the table's CPU check (constructors) and the shape check above.
        unsafe { (self.matvec)(out, w, x) }
    }

    /// `out[t] = row t · x`, where row `t` is the `x.len()` values at `rows[t * stride..]`: a
    /// matrix whose rows lie `stride` apart, such as one attention head's cached keys.
    pub fn dots_strided(&self, out: &mut [f32], x: &[f32], rows: &[f32], stride: usize) {
        check_strided(out.len(), x.len(), rows.len(), stride);
        if let Some(kernel) = self.fast {
            return fast::dots_f32_strided(kernel, out, rows, stride, x);
        }
        // SAFETY: the table's CPU check (constructors) and the shape check above.
        unsafe { (self.dots_strided)(out, x, rows, stride) }
    }

    /// Matrix-matrix product with a transposed result: `out_t[i * m + t] = w[i] · x_t` for each
    /// row `i` of `w` (`rows x cols`) and each of `m` tokens, whose activations are given
    /// transposed and padded by [`exact::transpose_tokens`]: `xs_t[j * padded + t]` is column `j`
    /// of token `t`, with `padded = m` rounded up to [`TOKEN_BLOCK`].
    ///
    /// Each weight is read once for all `m` tokens, and every element equals what
    /// [`Kernels::matvec`] computes for the same row and token, bit for bit.
    pub fn matmul_t(&self, out_t: &mut [f32], w: &[f32], xs_t: &[f32], m: usize, cols: usize) {
        assert!(cols > 0, "matrix with no columns");
        assert!(w.len().is_multiple_of(cols), "matrix shape does not match");
        let rows = w.len() / cols;
        assert_eq!(out_t.len(), rows * m, "output shape does not match");
        assert!(
            xs_t.len() >= cols * m.next_multiple_of(TOKEN_BLOCK),
            "transposed activations too short"
        );
        // SAFETY: the table's CPU check (constructors) and the shape checks above.
        unsafe { (self.matmul_t)(out_t, w, xs_t, m, cols) }
    }

    /// `out = Σ_t weights[t] * row t`, rows as in [`Kernels::dots_strided`], each value summed in
    /// order of `t`: one attention head's weighted sum of its cached values.
    pub fn weighted_sum(&self, out: &mut [f32], weights: &[f32], rows: &[f32], stride: usize) {
        check_strided(weights.len(), out.len(), rows.len(), stride);
        if let Some(kernel) = self.fast {
            return fast::weighted_sum(kernel.isa, out, weights, rows, stride);
        }
        // SAFETY: the table's CPU check (constructors) and the shape check above.
        unsafe { (self.weighted_sum)(out, weights, rows, stride) }
    }

    /// Attention scores of every query head at once: `scores[h * n_pos + t] = q_h · k_t`, where
    /// `q_h` is head `h`'s `head_dim` values of `q`, and `k_t` the slice of cached key row `t`
    /// (`keys` holds `n_pos` rows of `kv_dim` values) for key head `h / kv_mul`.
    ///
    /// The same sums as [`Kernels::dots_strided`] per head, but each block of keys is transposed
    /// once for all heads: for heads narrower than a vector (the tiny models), per-head calls
    /// would waste most of every transpose. `kv_mul` must be at most [`MAX_KV_MUL`].
    pub fn scores_all_heads(
        &self,
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
        let shape = head_shape(n_heads, n_pos, head_dim, kv_mul);
        assert!(scores.len() >= n_heads * n_pos, "scores too short");
        assert!(keys.len() >= n_pos * shape.kv_dim, "keys too short");
        // SAFETY: the table's CPU check (constructors) and the shape checks above.
        unsafe { (self.scores_all_heads)(scores, q, keys, shape) }
    }

    /// The weighted sums of every query head at once: `out_h = Σ_t att[h * n_pos + t] * v_t`,
    /// where `v_t` is the slice of cached value row `t` (`values` holds `n_pos` rows of
    /// `kv_dim` values) for key head `h / kv_mul`; each value summed in order of `t`, as
    /// [`Kernels::weighted_sum`] sums it for one head.
    ///
    /// Doing the heads together keeps several independent sums in flight; one narrow head alone
    /// would wait on the latency of every addition.
    pub fn weighted_sums_all_heads(
        &self,
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
        let shape = head_shape(n_heads, n_pos, head_dim, kv_mul);
        assert!(att.len() >= n_heads * n_pos, "attention weights too short");
        assert!(values.len() >= n_pos * shape.kv_dim, "values too short");
        // SAFETY: the table's CPU check (constructors) and the shape checks above.
        unsafe { (self.weighted_sums_all_heads)(out, att, values, shape) }
    }

    /// The largest value of `x` (negative infinity if `x` is empty), exactly as the in-order
    /// scan `if v > max { max = v }` from `x[0]` finds it: NaNs after the first value are passed
    /// over. (Of a `0.0` and a `-0.0` either may come back.)
    pub fn max(&self, x: &[f32]) -> f32 {
        // SAFETY: the table's CPU check (constructors); any slice will do.
        unsafe { (self.max)(x) }
    }

    /// `x[i] /= divisor` for every value: a true division, as `run.c` writes it (multiplying by
    /// the reciprocal would round differently).
    pub fn divide(&self, x: &mut [f32], divisor: f32) {
        // SAFETY: the table's CPU check (constructors); any slice will do.
        unsafe { (self.divide)(x, divisor) }
    }

    /// Softmax of every row of `x` (rows of `width` values) in place; see
    /// [`exact::softmax_rows`]. Each row gets the bits [`Kernels::softmax`] gives it alone.
    pub fn softmax_rows(&self, x: &mut [f32], width: usize) {
        if width == 0 {
            return;
        }
        if let Some(kernel) = self.fast {
            x.chunks_mut(width)
                .for_each(|row| fast::softmax(kernel.isa, row));
            return;
        }
        // SAFETY: the table's CPU check (constructors); any slice and width will do.
        unsafe { (self.softmax_rows)(x, width) }
    }

    /// Softmax of `x` in place: `e^(x - max) / Σ e^(x - max)`.
    pub fn softmax(&self, x: &mut [f32]) {
        self.softmax_rows(x, x.len());
    }

    /// `out[i * m + t]` = row `first_row + i` of `w` times `xs[t]`, for each of the
    /// `m = xs.len()` vectors (at least one) and every row `i < out.len() / m`. `w`'s rows must be
    /// aligned to its groups, and every `x` quantized in the same groups.
    ///
    /// # Panics
    /// If the rows are not aligned to groups, or a vector was quantized for another matrix.
    pub fn q8_rows(&self, out: &mut [f32], w: &Q8Matrix, first_row: usize, xs: &[QuantizedVector]) {
        assert!(w.rows_aligned_to_groups(), "rows straddle groups");
        assert!(!xs.is_empty(), "no vectors");
        assert!(
            first_row + out.len() / xs.len() <= w.rows,
            "rows out of bounds"
        );
        w.check_quantized_input(xs);
        if let (Some(kernel), [x]) = (self.fast, xs) {
            if w.group_size.is_multiple_of(4) {
                let (rows, groups) = (out.len(), w.cols / w.group_size);
                let wq = &w.values[first_row * w.cols..(first_row + rows) * w.cols];
                let ws = &w.scales[first_row * groups..(first_row + rows) * groups];
                let (xq, xs) = (&x.values[..], &x.scales[..]);
                return fast::matvec_q8(kernel, out, wq, ws, xq, xs, w.group_size);
            }
        }
        if w.suits_simd_kernels() {
            // SAFETY: the table's CPU check (constructors), and the checks above: rows aligned
            // to groups of a size the SIMD kernels take, inside the matrix, and every vector
            // quantized for it.
            unsafe { (self.q8_rows)(out, w, first_row, xs) }
        } else {
            quant::plain::rows_aligned(out, w, first_row, xs);
        }
    }
}

/// The shape of an all-heads attention call.
fn head_shape(n_heads: usize, n_pos: usize, head_dim: usize, kv_mul: usize) -> HeadShape {
    HeadShape {
        n_pos,
        head_dim,
        kv_mul,
        kv_dim: n_heads / kv_mul * head_dim,
    }
}

/// Check that `n` rows of `width` values, `stride` apart, fit in `len` values.
fn check_strided(n: usize, width: usize, len: usize, stride: usize) {
    if n > 0 {
        assert!(width <= stride, "rows overlap");
        assert!((n - 1) * stride + width <= len, "rows out of bounds");
    }
}
