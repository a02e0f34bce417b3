//! The heap a generation needs, measured with a counting allocator: the weights stay where they
//! are (here, in the program image as on a device), so what is allocated is the KV cache, the
//! activations and the tokenizer. The budget is 1.5 times the KV cache plus the activations of
//! llama2.c's `RunState` for the same number of positions; the first generation also pays for
//! what is set up once (the choice of kernels, the thread pool). The tokenizer's share is
//! reported beside it. A prompt's positions go through the model together, in buffers that
//! grow with the prompt: they are counted in the heap, not in the budget.
//!
//! One test in this file, so no other test's allocations run at the same time.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use llama2::{Config, Generator, Model, Sampler, Tokenizer};

/// The system allocator, counting the bytes held now and the most held since the last reset.
struct Counting;

static HELD: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout, which the caller guarantees.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = HELD.fetch_add(layout.size(), Relaxed) + layout.size();
            PEAK.fetch_max(now, Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(layout.size(), Relaxed);
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Start a new measurement: the peak becomes what is held now.
fn reset_peak() -> usize {
    let now = HELD.load(Relaxed);
    PEAK.store(now, Relaxed);
    now
}

#[repr(C, align(4))]
struct Aligned<T: ?Sized>(T);

static MODEL: &Aligned<[u8]> = &Aligned(*include_bytes!("models/stories260K.bin"));
static TOKENIZER: &[u8] = include_bytes!("models/tok512.bin");

/// Bytes of the activations of one position: x, xb, xb2, q (dim), hb, hb2 (hidden), the
/// attention scores (n_heads x positions) and the logits (vocab), as in llama2.c's `RunState`.
fn activation_bytes(c: &Config, positions: usize) -> usize {
    4 * (4 * c.dim + 2 * c.hidden_dim + c.n_heads * positions + c.vocab_size)
}

/// Bytes of the key and value caches: n_layers x positions x kv_dim each.
fn kv_cache_bytes(c: &Config, positions: usize) -> usize {
    4 * 2 * c.n_layers * positions * c.kv_dim()
}

#[test]
fn a_generation_needs_at_most_one_and_a_half_run_states_of_heap() {
    let before_model = reset_peak();
    let model = Model::from_static(&MODEL.0).unwrap();
    let model_heap = PEAK.load(Relaxed) - before_model;
    let before_tokenizer = reset_peak();
    let tokenizer = Tokenizer::from_bytes(TOKENIZER, Some(model.config().vocab_size)).unwrap();
    let tokenizer_heap = PEAK.load(Relaxed) - before_tokenizer;
    eprintln!("model (weights in place): {model_heap} bytes; tokenizer: {tokenizer_heap} bytes");
    // The layout tables only: the weights are not copied.
    assert!(
        model_heap < model.file_size() / 100,
        "the weights must not be copied: {model_heap} bytes"
    );

    for prompt in [&b""[..], b"Once upon a time"] {
        for positions in [64, 256, 512] {
            let before = reset_peak();
            let sampler = Sampler::new(1.0, 0.9, 7).unwrap();
            let mut tokens = 0;
            for token in Generator::new(&model, &tokenizer, sampler, prompt, positions).unwrap() {
                token.unwrap();
                tokens += 1;
            }
            let heap = PEAK.load(Relaxed) - before;
            let c = model.config();
            let budget = kv_cache_bytes(c, positions) + activation_bytes(c, positions);
            eprintln!(
                "{positions:>4} positions, prompt {:?} ({tokens} tokens): heap {heap} bytes, \
                 KV cache + activations (run.c's RunState) {budget} bytes, ratio {:.2}",
                String::from_utf8_lossy(prompt),
                heap as f64 / budget as f64
            );
            assert!(
                heap as f64 <= 1.5 * budget as f64,
                "{positions} positions: {heap} bytes of heap, budget 1.5 x {budget}"
            );
        }
    }
}
