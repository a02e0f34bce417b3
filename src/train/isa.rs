//! The same loop compiled for wider vectors: a function of plain Rust, built a second and third
//! time inside `#[target_feature]` functions for AVX-512F and AVX2, and the widest one this CPU
//! runs chosen at each call.
//!
//! The loops of `train::vector` keep a fixed number of partial sums and the compiler may not
//! reorder float arithmetic, so every build computes the same bits; only the speed differs.

/// `widest! { fn name / plain(arg: Type, ...) { body } }` defines `plain`, an
/// `#[inline(always)]` function with that body, and `name`, which runs it compiled for the
/// widest vectors the CPU has.
macro_rules! widest {
    (
        $(#[$meta:meta])*
        fn $name:ident / $plain:ident ($($arg:ident: $ty:ty),* $(,)?) $body:block
    ) => {
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)]
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                #[allow(clippy::too_many_arguments)]
                fn avx512($($arg: $ty),*) {
                    $plain($($arg),*)
                }
                #[target_feature(enable = "avx2")]
                #[allow(clippy::too_many_arguments)]
                fn avx2($($arg: $ty),*) {
                    $plain($($arg),*)
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
            $plain($($arg),*)
        }

        #[inline(always)]
        #[allow(clippy::too_many_arguments)]
        fn $plain($($arg: $ty),*) $body
    };
}

pub(crate) use widest;
