//! llama2-rs as a `no_std` static library for C: the crate's C API (`include/llama2.h`) with a
//! panic handler and a heap of this demo's own, as a microcontroller firmware would supply them.
//!
//! The heap is a fixed static arena handed out by a bump allocator that reuses nothing but the
//! most recent block: enough for one model, one tokenizer and one generation at a time, and a
//! picture of what a device must provide. `llama2_heap_peak` reports its high-water mark.
#![no_std]

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicUsize, Ordering};

pub use llama2::capi::*;

/// Size of the arena: the stories260K model's heap needs (KV cache, activations, tokenizer)
/// with room to spare; the weights stay in the caller's memory.
const HEAP_BYTES: usize = 4 << 20;

#[repr(C, align(64))]
struct Arena(UnsafeCell<[u8; HEAP_BYTES]>);

// SAFETY: the arena is only reached through the allocator below, which hands out disjoint
// blocks (its bookkeeping is atomic).
unsafe impl Sync for Arena {}

static ARENA: Arena = Arena(UnsafeCell::new([0; HEAP_BYTES]));

/// A bump allocator: `next` is the first free byte; freeing the last block moves it back.
struct Bump {
    next: AtomicUsize,
    peak: AtomicUsize,
}

unsafe impl GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let base = ARENA.0.get() as usize;
        let mut current = self.next.load(Ordering::Relaxed);
        loop {
            let start = (base + current).next_multiple_of(layout.align()) - base;
            let Some(end) = start.checked_add(layout.size()).filter(|&e| e <= HEAP_BYTES) else {
                return core::ptr::null_mut();
            };
            match self.next.compare_exchange(current, end, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => {
                    self.peak.fetch_max(end, Ordering::Relaxed);
                    return (base + start) as *mut u8;
                }
                Err(now) => current = now,
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let base = ARENA.0.get() as usize;
        let end = ptr as usize - base + layout.size();
        // Only the most recent block can be given back; others stay until the arena is reset.
        let _ = self.next.compare_exchange(
            end,
            ptr as usize - base,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
}

#[global_allocator]
static HEAP: Bump = Bump {
    next: AtomicUsize::new(0),
    peak: AtomicUsize::new(0),
};

/// The most heap the library has held at once, in bytes.
#[no_mangle]
pub extern "C" fn llama2_heap_peak() -> usize {
    HEAP.peak.load(Ordering::Relaxed)
}

extern "C" {
    /// The C library's `abort`: this demo links with one; a firmware would reset instead.
    fn abort() -> !;
}

/// The unwinding personality routine the precompiled `core` refers to. With `panic = "abort"`
/// nothing unwinds, so it is never called; it only has to exist for the link to succeed.
#[no_mangle]
pub extern "C" fn rust_eh_personality() {}

/// The library returns errors rather than panicking; should a bug panic anyway, stop the
/// program rather than unwind into C.
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // SAFETY: abort takes no arguments and never returns.
    unsafe { abort() }
}
