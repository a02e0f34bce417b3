//! The same loop compiled for wider vectors: a function of plain Rust, built a second and third
//! time inside `#[target_feature]` functions for AVX-512F and AVX2, and the widest one this CPU
//! runs chosen at each call.
//!
//! The loops of `train::vector` keep a fixed number of partial sums and the compiler may not
//! reorder float arithmetic, so every build computes the same bits; only the speed differs.

/// `widest!(fn name = body(arg: Type, ...))` defines `fn name(arg: Type, ...)` that calls
/// `body(arg, ...)` (an `#[inline(always)]` function) compiled for the widest vectors the CPU
/// has.
macro_rules! widest {
    ($(#[$meta:meta])* fn $name:ident = $body:ident ($($arg:ident: $ty:ty),* $(,)?)) => {
        $(#[$meta])*
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                #[allow(clippy::too_many_arguments)]
                fn avx512($($arg: $ty),*) {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2")]
                #[allow(clippy::too_many_arguments)]
                fn avx2($($arg: $ty),*) {
                    $body($($arg),*)
                }
                if std::is_x86_feature_detected!("avx512f") {
                    // SAFETY: this CPU has AVX-512F, checked just above.
                    return unsafe { avx512($($arg),*) };
                }
                if std::is_x86_feature_detected!("avx2") {
                    // SAFETY: this CPU has AVX2, checked just above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

pub(crate) use widest;
