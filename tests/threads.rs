//! Without the `parallel` feature the library must not start a single thread; with it, large
//! matrices run on rayon's pool. Counted in /proc, so Linux only.
//!
//! This file holds one test on purpose: other tests running beside it would start threads too.

#![cfg(target_os = "linux")]

use llama2::checkpoint::Format;
use llama2::convert::{write_float, FloatTensors};
use llama2::{Config, Model};

/// Threads of this process right now.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[test]
fn threads_are_started_only_by_the_parallel_feature() {
    // 256 x 256 matrices: large enough for the parallel path (64Ki multiply-adds).
    let config = Config {
        dim: 256,
        hidden_dim: 512,
        n_layers: 1,
        n_heads: 8,
        n_kv_heads: 8,
        vocab_size: 512,
        seq_len: 16,
        shared_classifier: true,
    };
    let mut bytes = Vec::new();
    write_float(
        &mut bytes,
        &FloatTensors::random(config, 1),
        Format::Float32V1,
    )
    .unwrap();
    let model = Model::from_bytes(bytes)
        .unwrap()
        .with_arithmetic(llama2::Arithmetic::Exact);
    let mut state = model.new_state().unwrap();

    let before = threads();
    for pos in 0..4 {
        model.forward(&mut state, 1, pos).unwrap();
    }
    let after = threads();

    if cfg!(feature = "parallel") {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cores > 1 {
            assert!(
                after > before,
                "rayon's pool did not start: {before} -> {after} threads"
            );
        }
    } else {
        assert_eq!(
            after, before,
            "a thread was started without the parallel feature"
        );
    }
}
