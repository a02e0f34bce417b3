//! The C interface declared in `include/llama2.h` (feature `capi`).
//!
//! A thin layer over the library: each function checks its pointers, calls [`Model`],
//! [`Tokenizer`] or [`Generator`], and turns a [`crate::Error`] into a status code and a one-line
//! message written into the caller's `llama2_error`. Handles are boxes given to C as opaque
//! pointers and taken back by the `_free` functions. Nothing here unwinds into C: the library
//! returns errors instead of panicking, and these functions never panic themselves.
//!
//! This is not a second API: anything the library does not offer is not offered here either.

use alloc::boxed::Box;
use core::ffi::{c_char, c_int, c_void, CStr};

use crate::{Error, Generator, Model, Sampler, Tokenizer};

/// `llama2_status` in the header.
pub type Status = c_int;
/// Success.
pub const LLAMA2_OK: Status = 0;
/// A NULL pointer, a bad length or an out-of-range value.
pub const LLAMA2_ERR_ARGUMENT: Status = 1;
/// The model bytes are not a valid checkpoint.
pub const LLAMA2_ERR_MODEL: Status = 2;
/// The tokenizer bytes are invalid or do not fit the model.
pub const LLAMA2_ERR_TOKENIZER: Status = 3;
/// An allocation failed.
pub const LLAMA2_ERR_MEMORY: Status = 4;
/// The callback asked to stop.
pub const LLAMA2_ERR_STOPPED: Status = 5;

/// `llama2_error` in the header: room for a one-line message.
#[repr(C)]
pub struct Llama2Error {
    /// NUL-terminated UTF-8 (cut at 255 bytes).
    pub message: [c_char; 256],
}

/// The callback type `llama2_piece_fn`.
pub type PieceFn = Option<unsafe extern "C" fn(*const c_char, usize, *mut c_void) -> c_int>;

/// Write `message` into `error` (if not NULL) and return `status`.
fn fail(error: *mut Llama2Error, status: Status, message: &dyn core::fmt::Display) -> Status {
    // SAFETY: the header says `error` is NULL or points to a writable llama2_error.
    if let Some(error) = unsafe { error.as_mut() } {
        let mut writer = Truncating {
            buf: &mut error.message,
            len: 0,
        };
        let _ = core::fmt::write(&mut writer, format_args!("{message}"));
        let end = writer.len;
        error.message[end] = 0;
    }
    status
}

/// The status code of a library error.
fn status_of(e: &Error) -> Status {
    match e {
        Error::Checkpoint { .. } => LLAMA2_ERR_MODEL,
        Error::Tokenizer { .. } => LLAMA2_ERR_TOKENIZER,
        Error::OutOfMemory { .. } => LLAMA2_ERR_MEMORY,
        _ => LLAMA2_ERR_ARGUMENT,
    }
}

/// A `fmt::Write` into a fixed buffer that keeps room for the NUL and cuts on a char boundary.
struct Truncating<'a> {
    buf: &'a mut [c_char; 256],
    len: usize,
}

impl core::fmt::Write for Truncating<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for ch in s.chars() {
            let mut utf8 = [0u8; 4];
            let bytes = ch.encode_utf8(&mut utf8).as_bytes();
            if self.len + bytes.len() > self.buf.len() - 1 {
                return Ok(());
            }
            for &b in bytes {
                self.buf[self.len] = b as c_char;
                self.len += 1;
            }
        }
        Ok(())
    }
}

/// `llama2_model_open`.
///
/// # Safety
/// `bytes` must point to `len` readable bytes that stay valid and unchanged until the model is
/// freed; `model` must point to a writable pointer; `error` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn llama2_model_open(
    bytes: *const u8,
    len: usize,
    model: *mut *mut Model,
    error: *mut Llama2Error,
) -> Status {
    if bytes.is_null() || model.is_null() {
        return fail(
            error,
            LLAMA2_ERR_ARGUMENT,
            &"llama2_model_open: NULL pointer",
        );
    }
    // SAFETY: the caller promises `len` bytes at `bytes` that outlive the model, which is
    // exactly what a `'static` borrow asks for as far as the model can tell.
    let bytes: &'static [u8] = unsafe { core::slice::from_raw_parts(bytes, len) };
    match Model::from_static(bytes) {
        Ok(m) => {
            // SAFETY: checked non-NULL above; the caller gave a writable pointer.
            unsafe { *model = Box::into_raw(Box::new(m)) };
            LLAMA2_OK
        }
        Err(e) => fail(error, status_of(&e), &e),
    }
}

/// `llama2_model_free`.
///
/// # Safety
/// `model` is NULL or a pointer from `llama2_model_open` not yet freed.
#[no_mangle]
pub unsafe extern "C" fn llama2_model_free(model: *mut Model) {
    if !model.is_null() {
        // SAFETY: it came from Box::into_raw in llama2_model_open and is freed once.
        drop(unsafe { Box::from_raw(model) });
    }
}

/// `llama2_tokenizer_open`.
///
/// # Safety
/// `bytes` points to `len` readable bytes; `model` is a live model; `tokenizer` is writable;
/// `error` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn llama2_tokenizer_open(
    bytes: *const u8,
    len: usize,
    model: *const Model,
    tokenizer: *mut *mut Tokenizer,
    error: *mut Llama2Error,
) -> Status {
    // SAFETY: the caller passes NULL or a live model from llama2_model_open.
    let Some(model) = (unsafe { model.as_ref() }) else {
        return fail(
            error,
            LLAMA2_ERR_ARGUMENT,
            &"llama2_tokenizer_open: NULL model",
        );
    };
    if bytes.is_null() || tokenizer.is_null() {
        return fail(
            error,
            LLAMA2_ERR_ARGUMENT,
            &"llama2_tokenizer_open: NULL pointer",
        );
    }
    // SAFETY: `len` readable bytes at `bytes`, only read during this call.
    let bytes = unsafe { core::slice::from_raw_parts(bytes, len) };
    match Tokenizer::from_bytes(bytes, Some(model.config().vocab_size)) {
        Ok(t) => {
            // SAFETY: checked non-NULL above.
            unsafe { *tokenizer = Box::into_raw(Box::new(t)) };
            LLAMA2_OK
        }
        Err(e) => fail(error, status_of(&e), &e),
    }
}

/// `llama2_tokenizer_free`.
///
/// # Safety
/// `tokenizer` is NULL or a pointer from `llama2_tokenizer_open` not yet freed.
#[no_mangle]
pub unsafe extern "C" fn llama2_tokenizer_free(tokenizer: *mut Tokenizer) {
    if !tokenizer.is_null() {
        // SAFETY: it came from Box::into_raw in llama2_tokenizer_open and is freed once.
        drop(unsafe { Box::from_raw(tokenizer) });
    }
}

/// `llama2_generate`.
///
/// # Safety
/// `model` and `tokenizer` are live handles, `prompt` is NULL (no prompt) or NUL-terminated,
/// `on_piece` is a valid function pointer that does not unwind, `error` is NULL or writable.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn llama2_generate(
    model: *const Model,
    tokenizer: *const Tokenizer,
    prompt: *const c_char,
    steps: usize,
    temperature: f32,
    topp: f32,
    seed: u64,
    on_piece: PieceFn,
    user: *mut c_void,
    error: *mut Llama2Error,
) -> Status {
    // SAFETY: NULL or live handles, as the header requires.
    let (Some(model), Some(tokenizer)) = (unsafe { model.as_ref() }, unsafe { tokenizer.as_ref() })
    else {
        return fail(error, LLAMA2_ERR_ARGUMENT, &"llama2_generate: NULL handle");
    };
    let Some(on_piece) = on_piece else {
        return fail(
            error,
            LLAMA2_ERR_ARGUMENT,
            &"llama2_generate: NULL callback",
        );
    };
    let prompt: &[u8] = if prompt.is_null() {
        b""
    } else {
        // SAFETY: the caller promises a NUL-terminated string.
        unsafe { CStr::from_ptr(prompt) }.to_bytes()
    };
    let run = || -> crate::Result<bool> {
        let sampler = Sampler::new(temperature, topp, seed)?;
        for piece in Generator::new(model, tokenizer, sampler, prompt, steps)?.text() {
            let piece = piece?;
            // SAFETY: a valid callback reading `len` bytes at the pointer during the call.
            let stop = unsafe { on_piece(piece.as_ptr().cast(), piece.len(), user) };
            if stop != 0 {
                return Ok(false);
            }
        }
        Ok(true)
    };
    match run() {
        Ok(true) => LLAMA2_OK,
        Ok(false) => fail(error, LLAMA2_ERR_STOPPED, &"stopped by the callback"),
        Err(e) => fail(error, status_of(&e), &e),
    }
}
