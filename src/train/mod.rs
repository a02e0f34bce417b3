//! Training (temporary module list of branch train-loop; replaced by train-core's at merge).

pub mod checksum;
pub mod data;
pub mod options;
pub mod state;
