//! A model built into the program: no files are read at run time.
//!
//! The bundled 260K-parameter model and its tokenizer are compiled in with `include_bytes!`
//! and loaded from memory, as on a device without a file system.
//!
//! ```sh
//! cargo run --release --example embedded -- [PROMPT]
//! ```

use std::process::ExitCode;

use llama2::{Generator, Model, Sampler, Tokenizer};

/// Wraps the included bytes so they start on a 4-byte boundary: the model then reads its float
/// weights in place instead of copying them into an aligned buffer.
#[repr(C, align(4))]
struct Aligned<T: ?Sized>(T);

static MODEL: &Aligned<[u8]> = &Aligned(*include_bytes!("../tests/models/stories260K.bin"));
static TOKENIZER: &[u8] = include_bytes!("../tests/models/tok512.bin");

fn main() -> ExitCode {
    let prompt = std::env::args().nth(1).unwrap_or_default();
    match run(&prompt) {
        Ok(story) => {
            println!("{story}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("embedded: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A greedy (temperature 0) story of up to 128 positions.
fn run(prompt: &str) -> llama2::Result<String> {
    let model = Model::from_static(&MODEL.0)?;
    let tokenizer = Tokenizer::from_bytes(TOKENIZER, Some(model.config().vocab_size))?;
    let sampler = Sampler::new(0.0, 0.9, 1)?;
    Generator::new(&model, &tokenizer, sampler, prompt.as_bytes(), 128)?
        .text()
        .collect()
}
