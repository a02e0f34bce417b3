//! Tell a story, printing it as it is generated.
//!
//! ```sh
//! cargo run --release --example story -- MODEL TOKENIZER [PROMPT]
//! cargo run --release --example story -- tests/models/stories260K.bin tests/models/tok512.bin
//! ```

use std::io::Write;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use llama2::{Generator, Model, Sampler, Tokenizer};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (model, tokenizer, prompt) = match args.as_slice() {
        [model, tokenizer] => (model, tokenizer, ""),
        [model, tokenizer, prompt] => (model, tokenizer, prompt.as_str()),
        _ => {
            eprintln!("usage: story MODEL TOKENIZER [PROMPT]");
            return ExitCode::FAILURE;
        }
    };
    match tell(model, tokenizer, prompt) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("story: {e}");
            ExitCode::FAILURE
        }
    }
}

fn tell(model: &str, tokenizer: &str, prompt: &str) -> Result<(), Box<dyn std::error::Error>> {
    let model = Model::open(model)?;
    let tokenizer = Tokenizer::open(tokenizer, model.config().vocab_size)?;
    let seed = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let sampler = Sampler::new(0.8, 0.9, seed)?;
    let mut out = std::io::stdout().lock();
    // 256 positions, prompt included; text() yields whole UTF-8 characters as they are made.
    for chunk in Generator::new(&model, &tokenizer, sampler, prompt.as_bytes(), 256)?.text() {
        out.write_all(chunk?.as_bytes())?;
        out.flush()?;
    }
    writeln!(out)?;
    Ok(())
}
