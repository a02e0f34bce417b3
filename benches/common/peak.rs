//! The machine's FLOP peak, measured (shared by the `gemm` and `train` benchmarks): every thread
//! runs a loop of independent fused multiply-adds (AVX-512, AVX2), and of `vdpbf16ps` where the
//! CPU has it, with nothing else to do. Each thread's FLOPs count over its own CPU time, so other
//! processes on a shared machine do not lower the figure.

use std::time::Instant;

use llama2::gemm::Isa;

/// Run time of the calling thread so far, in seconds (Linux).
fn thread_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(stat.split_whitespace().next()?.parse::<f64>().ok()? * 1e-9)
}

pub fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// FLOP/s the machine can do at best.
pub struct Peak {
    /// f32 FLOP/s (fused multiply-adds count 2).
    pub f32: f64,
    /// bfloat16 FLOP/s with `vdpbf16ps`, where the CPU has it.
    pub bf16: Option<f64>,
}

/// Run `per_thread` (which returns the FLOPs it did) on every thread at once: FLOP/s of all,
/// each thread's FLOPs over its own CPU time (see the module comment).
fn on_all_threads(threads: usize, per_thread: fn() -> f64) -> f64 {
    let mut best = 0.0f64;
    for _ in 0..3 {
        let rate: f64 = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(move || {
                        let (wall, cpu) = (Instant::now(), thread_cpu_seconds());
                        let flops = per_thread();
                        let time = match (cpu, thread_cpu_seconds()) {
                            (Some(before), Some(after)) => after - before,
                            _ => wall.elapsed().as_secs_f64(),
                        };
                        flops / time
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        best = best.max(rate);
    }
    best
}

/// The peak, measured, and what it means in FMA units and clock.
pub fn measure_peak(threads: usize) -> Peak {
    #[cfg(target_arch = "x86_64")]
    {
        let mut f32_peak = 0.0f64;
        if Isa::Avx2.is_supported() {
            let rate = on_all_threads(threads, fma_loop_avx2);
            println!("peak, AVX2 FMA loop:        {:>7.1} GFLOP/s", rate / 1e9);
            f32_peak = f32_peak.max(rate);
        }
        if Isa::Avx512.is_supported() {
            let rate = on_all_threads(threads, fma_loop_avx512);
            // Two 512-bit FMA pipes per core: 2 pipes x 16 lanes x 2 FLOPs per cycle.
            let ghz = rate / (threads as f64 * 2.0 * 16.0 * 2.0) / 1e9;
            println!("peak, AVX-512 FMA loop:     {:>7.1} GFLOP/s (= {threads} cores x 2 FMA pipes x 16 lanes x 2 FLOPs x {ghz:.2} GHz)", rate / 1e9);
            f32_peak = f32_peak.max(rate);
        }
        let bf16 = Isa::Avx512Bf16.is_supported().then(|| {
            let rate = on_all_threads(threads, dpbf16_loop);
            println!("peak, vdpbf16ps loop:       {:>7.1} GFLOP/s", rate / 1e9);
            rate
        });
        if f32_peak > 0.0 {
            return Peak {
                f32: f32_peak,
                bf16,
            };
        }
    }
    let _ = threads;
    println!("peak: no SIMD loop for this CPU; shares are of 1 GFLOP/s");
    Peak {
        f32: 1e9,
        bf16: None,
    }
}

/// Iterations of the peak loops (each runs 12 independent chains).
#[cfg(target_arch = "x86_64")]
const PEAK_STEPS: usize = 20_000_000;

#[cfg(target_arch = "x86_64")]
fn fma_loop_avx512() -> f64 {
    // SAFETY: called only when the CPU has AVX-512F (`measure_peak` checks).
    unsafe { fma_chains_avx512() }
}

#[cfg(target_arch = "x86_64")]
fn fma_loop_avx2() -> f64 {
    // SAFETY: called only when the CPU has AVX2 and FMA (`measure_peak` checks).
    unsafe { fma_chains_avx2() }
}

#[cfg(target_arch = "x86_64")]
fn dpbf16_loop() -> f64 {
    // SAFETY: called only when the CPU has AVX-512 BF16 (`measure_peak` checks).
    unsafe { dpbf16_chains() }
}

/// 12 independent chains of `acc = op(acc, x, y)`: enough to cover 2 pipes x 4 cycles of
/// latency. Returns the FLOPs done.
macro_rules! chains {
    ($name:ident, $feature:literal, $vector:ty, $flops_per_op:expr, $set:ident, $op:ident) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $feature)]
        unsafe fn $name() -> f64 {
            let x: $vector = $set(0.999);
            let y: $vector = $set(0.001);
            let mut acc: [$vector; 12] = [$set(1.0); 12];
            for _ in 0..PEAK_STEPS {
                for a in acc.iter_mut() {
                    *a = $op(*a, x, y);
                }
            }
            std::hint::black_box(acc);
            (PEAK_STEPS * 12 * $flops_per_op) as f64
        }
    };
}

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// `a + x * y` in 16 lanes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn fma512(a: __m512, x: __m512, y: __m512) -> __m512 {
    // SAFETY: inlined only into functions enabling AVX-512F.
    unsafe { _mm512_fmadd_ps(x, y, a) }
}

/// `a + x * y` in 8 lanes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn fma256(a: __m256, x: __m256, y: __m256) -> __m256 {
    // SAFETY: inlined only into functions enabling AVX2 and FMA.
    unsafe { _mm256_fmadd_ps(x, y, a) }
}

/// `vdpbf16ps`: 16 lanes, each two bf16 products added.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn dpbf16(a: __m512, x: __m512, y: __m512) -> __m512 {
    // SAFETY: inlined only into functions enabling AVX-512 BF16; the transmutes reinterpret
    // 512 bits as 32 bf16 values.
    unsafe {
        _mm512_dpbf16_ps(
            a,
            std::mem::transmute::<__m512, __m512bh>(x),
            std::mem::transmute::<__m512, __m512bh>(y),
        )
    }
}

chains!(
    fma_chains_avx512,
    "avx512f",
    __m512,
    16 * 2,
    _mm512_set1_ps,
    fma512
);
chains!(
    fma_chains_avx2,
    "avx2,fma",
    __m256,
    8 * 2,
    _mm256_set1_ps,
    fma256
);
chains!(
    dpbf16_chains,
    "avx512f,avx512bf16",
    __m512,
    16 * 4,
    _mm512_set1_ps,
    dpbf16
);
