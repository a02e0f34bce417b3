//! What `std`'s prelude would give every module, taken from `alloc` so that the same code builds
//! with and without `std` (`use crate::prelude::*;` at the top of a module that needs it).

#[cfg(not(feature = "std"))]
pub(crate) use crate::math::Float;
pub(crate) use alloc::format;
pub(crate) use alloc::string::{String, ToString};
pub(crate) use alloc::vec;
pub(crate) use alloc::vec::Vec;
