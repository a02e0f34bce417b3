//! A SIMD register as the kernels see it: the [`Vector`] trait, and [`Portable`], an 8-lane
//! array the compiler vectorises for any target.
//!
//! This is the bottom of the kernel stack: it knows nothing of matrices, models or instruction
//! set detection. The x86 registers (AVX2, AVX-512) implement the trait in `kernels/x86.rs`;
//! the kernel bodies written over it are in [`super::exact`].

/// A SIMD register of `LANES` `f32` lanes, with the few operations the kernels need.
///
/// # Safety
///
/// Every method is `unsafe` because implementations use instructions the CPU may lack: call them
/// only on a CPU that has the implementation's instruction set (see
/// [`super::dispatch::Isa::is_supported`]).
// The trait's `# Safety` section above is every method's.
#[allow(clippy::missing_safety_doc)]
pub trait Vector: Copy {
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
pub struct Portable([f32; 8]);

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
        lanes[..n].copy_from_slice(unsafe { core::slice::from_raw_parts(p, n) });
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
        unsafe { core::slice::from_raw_parts_mut(p, n) }.copy_from_slice(&self.0[..n]);
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
