//! The hot loops (dot product, matrix-vector product), chosen for the CPU at run time.
//!
//! The portable versions are written so the compiler vectorises them: the work is split into
//! chunks of 16 with 16 independent running sums, which become SIMD registers.

/// Dot product of two equal-length vectors.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    portable::dot(a, b)
}

/// `out[i] = dot(w[i], x)` for each row `i` of the row-major matrix `w`.
pub fn matvec(out: &mut [f32], w: &[f32], x: &[f32]) {
    for (o, row) in out.iter_mut().zip(w.chunks_exact(x.len())) {
        *o = dot(row, x);
    }
}

/// Vectorisable code with no target-specific instructions.
pub mod portable {
    const LANES: usize = 16;

    /// Dot product with 16 independent partial sums, added pairwise at the end.
    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut sums = [0.0f32; LANES];
        let chunks = a.chunks_exact(LANES).zip(b.chunks_exact(LANES));
        for (ca, cb) in chunks {
            for i in 0..LANES {
                sums[i] += ca[i] * cb[i];
            }
        }
        let tail_start = n - n % LANES;
        let mut tail = 0.0f32;
        for i in tail_start..n {
            tail += a[i] * b[i];
        }
        reduce(sums) + tail
    }

    fn reduce(mut sums: [f32; LANES]) -> f32 {
        let mut width = LANES / 2;
        while width > 0 {
            for i in 0..width {
                sums[i] += sums[i + width];
            }
            width /= 2;
        }
        sums[0]
    }
}
