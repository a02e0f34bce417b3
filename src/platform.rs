//! What the host provides, in one place: which instructions the CPU has, and settings from the
//! environment. With `std` these are asked of the operating system at run time; without it (a
//! firmware) the answers are fixed when the crate is compiled: the CPU features the build
//! targets, and no environment.

/// True if the CPU running us has the instruction-set extension `$feature` (a name as
/// `is_x86_feature_detected!` takes it, such as `"avx2"`).
#[cfg(all(feature = "std", target_arch = "x86_64"))]
macro_rules! cpu_has {
    ($feature:tt) => {
        std::is_x86_feature_detected!($feature)
    };
}

/// Without `std`: true if the build targets `$feature` (`-C target-feature` or `target-cpu`).
#[cfg(all(not(feature = "std"), target_arch = "x86_64"))]
macro_rules! cpu_has {
    ($feature:tt) => {
        crate::platform::built_for(cfg!(target_feature = $feature))
    };
}

/// What the build was told about the CPU (a function, so that code testing several features
/// does not read as a constant expression).
#[cfg(all(not(feature = "std"), target_arch = "x86_64"))]
pub(crate) fn built_for(feature: bool) -> bool {
    feature
}

#[cfg(target_arch = "x86_64")]
pub(crate) use cpu_has;

/// The value of environment variable `name`, if set and UTF-8 (never, without `std`).
pub(crate) fn env_var(name: &str) -> Option<alloc::string::String> {
    #[cfg(feature = "std")]
    {
        std::env::var(name).ok()
    }
    #[cfg(not(feature = "std"))]
    {
        let _ = name;
        None
    }
}
