//! The `llama2` command: run.c's flags on top of the `llama2` library.
//!
//! This file parses arguments and prints; everything else is the library's.

use std::ffi::{OsStr, OsString};
use std::io::{self, BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use llama2::attention::{token_labels, AttentionMaps};
use llama2::{
    bpe, convert, evaluate, pretokenize, top_k, train, Arithmetic, Chat, Generator, Model, Sampler,
    Token, Tokenizer,
};

const USAGE: &str = "\
Usage:   llama2 <checkpoint> [options]
         llama2 tokenize [-z <tokenizer>] [-i <text>]
         llama2 quantize <float checkpoint> <int8 output> [--group-size <int>]
         llama2 train-tokenizer --vocab-size <int> -o <tokenizer.bin> <input>...
         llama2 pretokenize -z <tokenizer> -o <out.bin> <input>...
         llama2 inspect <checkpoint> [--stats]
         llama2 attention <checkpoint> [-z <tokenizer>] -i <text> -o <picture.svg>
         llama2 train --data <tokens.bin> --out <dir> [options] (llama2 train --help)
Example: llama2 model.bin -n 256 -i \"Once upon a time\"
Options:
  -t <float>  temperature in [0,inf], default 1.0
  -p <float>  p value in top-p (nucleus) sampling in [0,1], default 0.9
  -s <int>    random seed, default time(NULL)
  -n <int>    number of steps to run for, default 256. 0 = max_seq_len
  -i <string> input prompt (eval mode: the text; read from stdin if absent)
  -z <string> optional path to custom tokenizer, default tokenizer.bin
  -m <string> mode: generate|chat|eval, default: generate
  -y <string> (optional) system prompt in chat mode
  --threads <int>  number of threads, default: all cores (or RAYON_NUM_THREADS)
  --exact     llama2.c's arithmetic, every sum in run.c's order: the same bytes as run.c
              and runq.c; by default sums are split over vector lanes (faster, deterministic,
              not run.c's last bits)
  --top-k <int>    generate mode: for each generated token, print the <int> most likely
                   tokens and their probabilities after temperature (at -t 0, those of
                   temperature 1) to stderr, or between the text when stdout is a terminal
  -h, --help  print this help
Commands:
  tokenize    print the token ids of the text (BOS first), one line
  quantize    write an int8 (version 2) copy of a float checkpoint; the group size defaults
              to the largest of at most 64 that divides every row length
  train       train a new model or fine-tune one (train.py's flags; see llama2 train --help)
  train-tokenizer  train a SentencePiece-style BPE vocabulary on text files (.txt: a document
              per line; .json: TinyStories shards) and write it in tokenizer.bin format
  pretokenize write the documents as BOS + token ids, little-endian u16 (llama2.c's format)
  attention   draw the attention weights of every layer and head for the prompt's tokens
              (at most 64, BOS included) as a grid of heat maps, an SVG file
  inspect     print the format, header and every tensor (shape, parameters, bytes) and the
              totals; --stats adds each tensor's mean, std and max|w|
";

/// What went wrong, as one line for stderr.
struct Failure(String);

impl From<llama2::Error> for Failure {
    fn from(e: llama2::Error) -> Failure {
        Failure(e.to_string())
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        Failure(format!("writing output: {e}"))
    }
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(message)) => {
            eprintln!("llama2: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[OsString]) -> Result<(), Failure> {
    let Some(first) = args.first() else {
        return Err(Failure(
            "missing checkpoint argument (run 'llama2 --help' for usage)".into(),
        ));
    };
    if is_help(first) {
        print!("{USAGE}");
        return Ok(());
    }
    if first == "tokenize" {
        let options = Options::parse(&args[1..])?;
        if options.help {
            print!("{USAGE}");
            return Ok(());
        }
        return tokenize(&options);
    }
    if first == "quantize" {
        return quantize(&args[1..]);
    }
    if first == "train" {
        return train(&args[1..]);
    }
    if first == "train-tokenizer" {
        return train_tokenizer(&args[1..]);
    }
    if first == "pretokenize" {
        return pretokenize(&args[1..]);
    }
    if first == "inspect" {
        return inspect(&args[1..]);
    }
    if first == "attention" {
        return attention(&args[1..]);
    }
    let checkpoint = first;
    if checkpoint.to_string_lossy().starts_with('-') {
        let flag = checkpoint.to_string_lossy();
        return Err(Failure(format!(
            "expected a checkpoint path first, got flag {flag} (write ./{flag} for a file of that name)"
        )));
    }
    let options = Options::parse(&args[1..])?;
    if options.help {
        print!("{USAGE}");
        return Ok(());
    }
    options.configure_threads()?;

    let model = Model::open_with(checkpoint, options.arithmetic)?;
    let tokenizer = Tokenizer::open(&options.tokenizer, model.config().vocab_size)?;
    match options.mode.as_str() {
        "generate" => generate(&model, &tokenizer, &options),
        "chat" => chat(&model, &tokenizer, &options),
        "eval" => eval(&model, &tokenizer, &options),
        _ => unreachable!("mode validated while parsing"),
    }
}

fn is_help(arg: &OsStr) -> bool {
    arg == "-h" || arg == "--help"
}

/// The parsed flags, with run.c's defaults.
struct Options {
    /// `-h` or `--help` was given (in place of a flag, not as a flag's value).
    help: bool,
    temperature: f32,
    top_p: f32,
    seed: u64,
    steps: usize,
    prompt: Option<Vec<u8>>,
    tokenizer: OsString,
    mode: String,
    system_prompt: Option<Vec<u8>>,
    threads: Option<usize>,
    top_k: usize,
    arithmetic: Arithmetic,
}

impl Options {
    fn parse(args: &[OsString]) -> Result<Options, Failure> {
        let mut options = Options {
            help: false,
            temperature: 1.0,
            top_p: 0.9,
            seed: 0,
            steps: 256,
            prompt: None,
            tokenizer: OsString::from("tokenizer.bin"),
            mode: "generate".into(),
            system_prompt: None,
            threads: None,
            top_k: 0,
            arithmetic: Arithmetic::Fast,
        };
        let mut rest = args.iter();
        while let Some(flag) = rest.next() {
            if is_help(flag) {
                options.help = true;
                return Ok(options);
            }
            let name = flag.to_string_lossy().into_owned();
            if name == "--exact" {
                options.arithmetic = Arithmetic::Exact;
                continue;
            }
            let known = [
                "-t",
                "-p",
                "-s",
                "-n",
                "-i",
                "-z",
                "-m",
                "-y",
                "--threads",
                "--top-k",
            ];
            if !known.contains(&name.as_str()) {
                return Err(Failure(format!(
                    "unknown flag {name} (run 'llama2 --help' for usage)"
                )));
            }
            let value = rest
                .next()
                .ok_or_else(|| Failure(format!("flag {name} needs a value")))?;
            match name.as_str() {
                "-t" => {
                    options.temperature = number(&name, value)?;
                    if !(options.temperature >= 0.0 && options.temperature.is_finite()) {
                        return Err(Failure(format!(
                            "-t: temperature must be a number >= 0, got {}",
                            value.to_string_lossy()
                        )));
                    }
                }
                "-p" => {
                    options.top_p = number(&name, value)?;
                    if !(0.0..=1.0).contains(&options.top_p) {
                        return Err(Failure(format!(
                            "-p: top-p must be between 0 and 1, got {}",
                            value.to_string_lossy()
                        )));
                    }
                }
                "-s" => options.seed = seed(value)?,
                "-n" => {
                    let steps: i64 = number(&name, value)?;
                    if steps < 0 {
                        return Err(Failure(format!("-n: steps must be 0 or more, got {steps}")));
                    }
                    options.steps = usize::try_from(steps).unwrap_or(usize::MAX);
                }
                "-i" => options.prompt = Some(bytes_of(value)),
                "-z" => options.tokenizer = value.clone(),
                "-m" => {
                    let mode = value.to_string_lossy().into_owned();
                    if !["generate", "chat", "eval"].contains(&mode.as_str()) {
                        return Err(Failure(format!(
                            "-m: unknown mode {mode:?} (expected generate, chat or eval)"
                        )));
                    }
                    options.mode = mode;
                }
                "-y" => options.system_prompt = Some(bytes_of(value)),
                "--threads" => {
                    let threads: usize = number(&name, value)?;
                    if threads == 0 {
                        return Err(Failure("--threads: must be at least 1".into()));
                    }
                    options.threads = Some(threads);
                }
                "--top-k" => options.top_k = number(&name, value)?,
                _ => unreachable!("checked against the known flags"),
            }
        }
        if options.top_k > 0 && options.mode != "generate" {
            return Err(Failure(format!(
                "--top-k: only in generate mode, not -m {}",
                options.mode
            )));
        }
        if options.seed == 0 {
            // run.c seeds from the clock when no seed (or 0) is given.
            options.seed = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_secs() as u32 as u64);
        }
        Ok(options)
    }

    fn configure_threads(&self) -> Result<(), Failure> {
        configure_threads(self.threads)
    }
}

/// Size rayon's global pool (`--threads`); without the `parallel` feature there are no threads.
fn configure_threads(threads: Option<usize>) -> Result<(), Failure> {
    #[cfg(feature = "parallel")]
    if let Some(threads) = threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .map_err(|e| Failure(format!("--threads: {e}")))?;
    }
    #[cfg(not(feature = "parallel"))]
    let _ = threads;
    Ok(())
}

fn number<T: std::str::FromStr>(flag: &str, value: &OsStr) -> Result<T, Failure> {
    let text = value.to_string_lossy();
    text.trim()
        .parse()
        .map_err(|_| Failure(format!("{flag}: {text:?} is not a valid number")))
}

/// A seed as run.c reads it with C's `atoi`: a decimal integer (saturating like `strtol`)
/// cut to a 32-bit `int`, then widened with its sign to the 64-bit generator state. So
/// `-s 4294967295` is the same seed as `-s -1`, and a result of 0 means "seed from the clock".
fn seed(value: &OsStr) -> Result<u64, Failure> {
    let text = value.to_string_lossy();
    let digits = text.trim();
    let is_integer = {
        let unsigned = digits.strip_prefix(['-', '+']).unwrap_or(digits);
        !unsigned.is_empty() && unsigned.bytes().all(|b| b.is_ascii_digit())
    };
    if !is_integer {
        return Err(Failure(format!("-s: {text:?} is not a valid integer seed")));
    }
    let long = digits.parse::<i64>().unwrap_or(if digits.starts_with('-') {
        i64::MIN
    } else {
        i64::MAX
    });
    Ok(long as i32 as i64 as u64)
}

/// The raw bytes of an argument: prompts may be any bytes, as in C.
fn bytes_of(value: &OsStr) -> Vec<u8> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        value.as_bytes().to_vec()
    }
    #[cfg(not(unix))]
    {
        value.to_string_lossy().into_owned().into_bytes()
    }
}

/// Write to stdout; a closed pipe (`llama2 ... | head`) ends the program quietly.
fn emit(out: &mut impl Write, bytes: &[u8]) -> Result<bool, Failure> {
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn generate(model: &Model, tokenizer: &Tokenizer, options: &Options) -> Result<(), Failure> {
    let sampler =
        Sampler::new(options.temperature, options.top_p, options.seed)?.with_top_k(options.top_k);
    let prompt = options.prompt.as_deref().unwrap_or(b"");
    let mut generator =
        Generator::new(model, tokenizer, sampler, prompt, options.steps).map_err(blame_flag)?;
    let mut out = io::stdout().lock();
    // Like run.c, time from the end of the first step, which includes one-off warm-up costs
    // and, here, the whole prompt (run as one batch): the figure is the decoding speed.
    let mut start = None;
    let mut prev = generator.prompt_tokens()[0];
    let mut position = 0;
    while let Some(token) = generator.next() {
        let token = token?;
        position += 1;
        if options.top_k > 0 && !token.from_prompt {
            show_top_k(&mut out, tokenizer, &generator, position, prev, &token)?;
        }
        prev = token.id;
        if !emit(&mut out, token.printable())? {
            return Ok(());
        }
        start.get_or_insert_with(|| (Instant::now(), generator.positions()));
    }
    emit(&mut out, b"\n")?;
    if let Some((start, first_positions)) = start {
        let positions = generator.positions() - first_positions;
        if positions > 0 {
            let seconds = start.elapsed().as_secs_f64();
            eprintln!("achieved tok/s: {:.6}", positions as f64 / seconds);
        }
    }
    Ok(())
}

/// Print the candidates `token` was sampled from, at `position` of the sequence after `prev`:
/// on its own line between the text when stdout is a terminal, as a line on stderr otherwise.
fn show_top_k(
    out: &mut impl Write,
    tokenizer: &Tokenizer,
    generator: &Generator,
    position: usize,
    prev: u32,
    token: &Token,
) -> Result<(), Failure> {
    let candidates = generator.sampler().top_k();
    let line = top_k::describe(tokenizer, position, prev, token.id, candidates)?;
    if io::stdout().is_terminal() {
        emit(out, format!("\n{line}\n").as_bytes())?;
    } else {
        eprintln!("{line}");
    }
    Ok(())
}

/// Name the flag to change when the library refuses to start a run: a prompt it cannot take
/// (too long, not encodable) is `-i`'s fault, a KV cache too large for memory is `-n`'s.
fn blame_flag(e: llama2::Error) -> Failure {
    match e {
        llama2::Error::InvalidInput(problem) => Failure(format!("-i: {problem}")),
        e @ llama2::Error::OutOfMemory { .. } => Failure(format!("{e}; a smaller -n needs less")),
        other => other.into(),
    }
}

fn chat(model: &Model, tokenizer: &Tokenizer, options: &Options) -> Result<(), Failure> {
    let sampler = Sampler::new(options.temperature, options.top_p, options.seed)?;
    let mut chat = Chat::new(model, tokenizer, sampler, options.steps).map_err(blame_flag)?;
    let mut out = io::stdout().lock();
    let mut input = io::stdin().lock();
    let mut system = Vec::new();
    while !chat.is_finished() {
        if chat.is_first_turn() {
            system = match &options.system_prompt {
                Some(s) => s.clone(),
                None => match ask(&mut out, &mut input, "Enter system prompt (optional): ")? {
                    Some(line) => line,
                    None => break,
                },
            };
        }
        let user = match (&options.prompt, chat.is_first_turn()) {
            (Some(prompt), true) => prompt.clone(),
            _ => match ask(&mut out, &mut input, "User: ")? {
                Some(line) => line,
                None => break,
            },
        };
        let user_from_flag = options.prompt.is_some() && chat.is_first_turn();
        emit(&mut out, b"Assistant: ")?;
        let mut open = true;
        chat.turn(&system, &user, |bytes| {
            if open {
                open = matches!(emit(&mut out, bytes), Ok(true));
            }
        })
        .map_err(|e| {
            if user_from_flag {
                blame_flag(e)
            } else {
                e.into()
            }
        })?;
        if !open {
            return Ok(());
        }
    }
    emit(&mut out, b"\n")?;
    Ok(())
}

/// Print `question` and read one line from stdin without its newline; `None` at end of input.
fn ask(
    out: &mut impl Write,
    input: &mut impl BufRead,
    question: &str,
) -> Result<Option<Vec<u8>>, Failure> {
    emit(out, question.as_bytes())?;
    let mut line = Vec::new();
    let read = input
        .read_until(b'\n', &mut line)
        .map_err(|e| Failure(format!("reading stdin: {e}")))?;
    if read == 0 {
        return Ok(None);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    Ok(Some(line))
}

fn eval(model: &Model, tokenizer: &Tokenizer, options: &Options) -> Result<(), Failure> {
    let text = match &options.prompt {
        Some(text) => text.clone(),
        None => read_stdin()?,
    };
    let result = evaluate(model, tokenizer, &text)?;
    println!(
        "tokens {}, loss {:.4} nats, perplexity {:.4}",
        result.tokens,
        result.loss,
        result.perplexity()
    );
    Ok(())
}

fn read_stdin() -> Result<Vec<u8>, Failure> {
    let mut text = Vec::new();
    io::Read::read_to_end(&mut io::stdin().lock(), &mut text)
        .map_err(|e| Failure(format!("reading stdin: {e}")))?;
    Ok(text)
}

fn tokenize(options: &Options) -> Result<(), Failure> {
    let tokenizer = Tokenizer::open_all(&options.tokenizer)?;
    let text = match &options.prompt {
        Some(text) => text.clone(),
        None => read_stdin()?,
    };
    let ids = tokenizer.encode(&text, true, false)?;
    let line: Vec<String> = ids.iter().map(u32::to_string).collect();
    println!("{}", line.join(" "));
    Ok(())
}

/// `llama2 quantize IN OUT [--group-size N]`.
fn quantize(args: &[OsString]) -> Result<(), Failure> {
    let mut paths = Vec::new();
    let mut group_size = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if is_help(arg) {
            print!("{USAGE}");
            return Ok(());
        }
        if arg == "--group-size" {
            let value = rest
                .next()
                .ok_or_else(|| Failure("flag --group-size needs a value".into()))?;
            group_size = Some(number::<usize>("--group-size", value)?);
        } else if arg.to_string_lossy().starts_with('-') {
            return Err(Failure(format!(
                "quantize: unknown flag {} (run 'llama2 --help' for usage)",
                arg.to_string_lossy()
            )));
        } else {
            paths.push(arg);
        }
    }
    let [input, output] = paths[..] else {
        return Err(Failure(
            "quantize: expected an input and an output path: \
             llama2 quantize <float checkpoint> <int8 output> [--group-size <int>]"
                .into(),
        ));
    };
    let model = Model::open_with(input, Arithmetic::Exact)?;
    let result = convert::quantize_to_file(&model, output.as_ref(), group_size)?;
    println!(
        "wrote {}: group size {}, largest quantization error {}",
        output.to_string_lossy(),
        result.group_size,
        result.max_error
    );
    Ok(())
}

/// `llama2 train FLAGS`: progress lines on stderr, the outcome on stdout.
fn train(args: &[OsString]) -> Result<(), Failure> {
    if args.iter().any(|a| is_help(a)) {
        print!("{}", train::TrainOptions::usage());
        return Ok(());
    }
    let args: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let options = train::TrainOptions::parse(&args)?;
    configure_threads(options.threads)?;
    let mut max_iters = 0;
    let summary = train::run(&options, |event| match event {
        train::Progress::Start(info) => {
            max_iters = info.settings.max_iters;
            eprintln!("{}", info.describe());
        }
        train::Progress::Row(row, eta) => eprintln!("{}", row.progress_line(max_iters, eta)),
        train::Progress::SavedModel(step) => eprintln!("step {step}: saved model.bin"),
    })?;
    let best = summary
        .best_val_loss
        .map_or(String::new(), |l| format!(", best val loss {l:.4}"));
    println!(
        "trained to step {}{best}: {}",
        summary.step,
        summary.model.display()
    );
    Ok(())
}

/// The arguments of a command that reads a corpus: flag values, then input paths.
struct CorpusArgs {
    values: Vec<(String, OsString)>,
    inputs: Vec<PathBuf>,
}

impl CorpusArgs {
    /// `flags` name the flags that take a value; anything not starting with `-` is an input.
    /// `None` when help was asked for (and printed).
    fn parse(command: &str, args: &[OsString], flags: &[&str]) -> Result<Option<Self>, Failure> {
        let mut parsed = CorpusArgs {
            values: Vec::new(),
            inputs: Vec::new(),
        };
        let mut rest = args.iter();
        while let Some(arg) = rest.next() {
            if is_help(arg) {
                print!("{USAGE}");
                return Ok(None);
            }
            let name = arg.to_string_lossy().into_owned();
            if flags.contains(&name.as_str()) {
                let value = rest
                    .next()
                    .ok_or_else(|| Failure(format!("flag {name} needs a value")))?;
                parsed.values.push((name, value.clone()));
            } else if name.starts_with('-') {
                return Err(Failure(format!(
                    "{command}: unknown flag {name} (run 'llama2 --help' for usage)"
                )));
            } else {
                parsed.inputs.push(PathBuf::from(arg));
            }
        }
        if parsed.inputs.is_empty() {
            return Err(Failure(format!("{command}: no input files given")));
        }
        Ok(Some(parsed))
    }

    /// The value of a required flag (the last one given), or an error naming it.
    fn required(&self, flag: &str) -> Result<&OsString, Failure> {
        self.values
            .iter()
            .rev()
            .find(|(name, _)| name == flag)
            .map(|(_, value)| value)
            .ok_or_else(|| Failure(format!("missing flag {flag}")))
    }
}

/// A progress line on stderr, once work has run for a second (quick runs stay quiet).
fn progress(start: Instant, line: &str) {
    let seconds = start.elapsed().as_secs_f64();
    if seconds >= 1.0 {
        eprintln!("[{seconds:6.1}s] {line}");
    }
}

/// `llama2 train-tokenizer --vocab-size N -o OUT INPUT...`.
fn train_tokenizer(args: &[OsString]) -> Result<(), Failure> {
    let Some(args) = CorpusArgs::parse("train-tokenizer", args, &["--vocab-size", "-o"])? else {
        return Ok(());
    };
    let vocab_size: usize = number("--vocab-size", args.required("--vocab-size")?)?;
    let out = PathBuf::from(args.required("-o")?);
    let start = Instant::now();
    let vocabulary = bpe::train_from_files(&args.inputs, vocab_size, |line| progress(start, line))
        .map_err(|e| match e {
            llama2::Error::InvalidInput(problem) if problem.starts_with("a vocabulary of") => {
                Failure(format!("--vocab-size: {problem}"))
            }
            other => other.into(),
        })?;
    vocabulary.write(&out)?;
    println!(
        "wrote {}: {} tokens in {:.1}s",
        out.display(),
        vocabulary.pieces.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `llama2 pretokenize -z TOKENIZER -o OUT INPUT...`.
fn pretokenize(args: &[OsString]) -> Result<(), Failure> {
    let Some(args) = CorpusArgs::parse("pretokenize", args, &["-z", "-o"])? else {
        return Ok(());
    };
    let tokenizer = Tokenizer::open_all(args.required("-z")?)?;
    let out = PathBuf::from(args.required("-o")?);
    let start = Instant::now();
    let stats = pretokenize::pretokenize_to_file(&tokenizer, &args.inputs, &out, |so_far| {
        let line = format!(
            "{} documents, {} tokens",
            so_far.corpus.documents, so_far.tokens
        );
        progress(start, &line)
    })?;
    let c = &stats.corpus;
    println!(
        "wrote {}: {} documents, {} tokens, {:.4} tokens per byte ({} empty and {} non-UTF-8 skipped)",
        out.display(),
        c.documents,
        stats.tokens,
        stats.tokens_per_byte(),
        c.skipped_empty,
        c.skipped_invalid
    );
    Ok(())
}

/// `llama2 inspect MODEL [--stats]`.
fn inspect(args: &[OsString]) -> Result<(), Failure> {
    let mut path = None;
    let mut stats = false;
    for arg in args {
        if is_help(arg) {
            print!("{USAGE}");
            return Ok(());
        }
        if arg == "--stats" {
            stats = true;
        } else if arg.to_string_lossy().starts_with('-') {
            return Err(Failure(format!(
                "inspect: unknown flag {} (run 'llama2 --help' for usage)",
                arg.to_string_lossy()
            )));
        } else if path.replace(arg).is_some() {
            return Err(Failure(
                "inspect: expected one checkpoint path: llama2 inspect <checkpoint> [--stats]"
                    .into(),
            ));
        }
    }
    let Some(path) = path else {
        return Err(Failure(
            "inspect: missing checkpoint path: llama2 inspect <checkpoint> [--stats]".into(),
        ));
    };
    let model = Model::open_with(path, Arithmetic::Exact)?;
    let report = llama2::inspect::Inspection::of(&model)?.report(stats);
    emit(&mut io::stdout().lock(), report.as_bytes())?;
    Ok(())
}

/// `llama2 attention MODEL [-z TOKENIZER] -i TEXT -o FILE.svg`.
fn attention(args: &[OsString]) -> Result<(), Failure> {
    let usage = "llama2 attention <checkpoint> [-z <tokenizer>] -i <text> -o <picture.svg>";
    let mut path = None;
    let mut tokenizer_path = OsString::from("tokenizer.bin");
    let (mut prompt, mut output) = (None, None);
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if is_help(arg) {
            print!("{USAGE}");
            return Ok(());
        }
        let flag = arg.to_string_lossy();
        if !flag.starts_with('-') {
            if path.replace(arg).is_some() {
                return Err(Failure(format!(
                    "attention: expected one checkpoint path: {usage}"
                )));
            }
            continue;
        }
        if !["-z", "-i", "-o"].contains(&flag.as_ref()) {
            return Err(Failure(format!(
                "attention: unknown flag {flag} (run 'llama2 --help' for usage)"
            )));
        }
        let value = rest
            .next()
            .ok_or_else(|| Failure(format!("flag {flag} needs a value")))?;
        match flag.as_ref() {
            "-z" => tokenizer_path = value.clone(),
            "-i" => prompt = Some(bytes_of(value)),
            _ => output = Some(value),
        }
    }
    let Some(path) = path else {
        return Err(Failure(format!(
            "attention: missing checkpoint path: {usage}"
        )));
    };
    let Some(prompt) = prompt else {
        return Err(Failure(format!(
            "attention: -i <text> is required: {usage}"
        )));
    };
    let Some(output) = output else {
        return Err(Failure(format!(
            "attention: -o <picture.svg> is required: {usage}"
        )));
    };
    let model = Model::open_with(path, Arithmetic::Exact)?;
    let tokenizer = Tokenizer::open(&tokenizer_path, model.config().vocab_size)?;
    let maps = AttentionMaps::of_prompt(path.as_ref(), &tokenizer, &prompt).map_err(blame_flag)?;
    let picture = maps.to_svg(&token_labels(&tokenizer, maps.tokens()));
    std::fs::write(output, picture)
        .map_err(|e| Failure(format!("-o: {}: {e}", output.to_string_lossy())))?;
    println!(
        "wrote {}: {} layers x {} heads, {} tokens",
        output.to_string_lossy(),
        maps.layers(),
        maps.heads(),
        maps.tokens().len()
    );
    Ok(())
}
