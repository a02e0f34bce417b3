//! Byte-for-byte parity with llama2.c's `run.c`.
//!
//! Every `tests/fixtures/runc/NAME.args` holds run.c arguments (after the model path), one per
//! line, hex-encoded; `{tok512}` stands for the tokenizer path. `NAME.stdin` (chat cases) is fed
//! to stdin, and `NAME.stdout` is run.c's exact stdout, which our `llama2` binary must reproduce
//! on every instruction set its kernels can use on this CPU (chosen with `LLAMA2_ISA`).
//! `chat_eof_*` cases end their stdin mid-conversation: their `NAME.stdout` is run.c's stdout up
//! to the prompt that met the end of input, and ours must be that plus the newline that ends a
//! chat. See `tests/fixtures/runc/README.md`.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use llama2::kernels::Isa;

const MIN_CASES: usize = 50;

fn decode_hex(line: &str, file: &Path) -> Vec<u8> {
    let line = line.trim();
    assert!(
        line.len().is_multiple_of(2),
        "{}: odd-length hex line {line:?}",
        file.display()
    );
    (0..line.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&line[i..i + 2], 16)
                .unwrap_or_else(|_| panic!("{}: bad hex line {line:?}", file.display()))
        })
        .collect()
}

fn read_args(file: &Path, tokenizer: &Path) -> Vec<String> {
    let text = fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    // One argument per line; an empty line is an empty argument (e.g. `-i ""`).
    text.lines()
        .map(|line| {
            let arg = String::from_utf8(decode_hex(line, file))
                .unwrap_or_else(|_| panic!("{}: argument is not UTF-8", file.display()));
            if arg == "{tok512}" {
                tokenizer
                    .to_str()
                    .expect("tokenizer path is UTF-8")
                    .to_string()
            } else {
                arg
            }
        })
        .collect()
}

/// A short, readable window of `bytes` around `offset`.
fn excerpt(bytes: &[u8], offset: usize) -> String {
    let start = offset.saturating_sub(40);
    let end = (offset + 40).min(bytes.len());
    if start >= end {
        return format!("<end of output, {} bytes>", bytes.len());
    }
    format!(
        "[{start}..{end}] {:?}",
        String::from_utf8_lossy(&bytes[start..end])
    )
}

#[test]
fn stdout_matches_run_c() {
    compare_with_run_c(&["--exact"], |_| true);
}

/// True if `args` ask for greedy decoding (`-t 0`).
fn is_greedy(args: &[String]) -> bool {
    args.windows(2)
        .any(|w| w[0] == "-t" && w[1].parse::<f32>() == Ok(0.0))
}

/// Fast arithmetic (the default) rounds differently from run.c, but not enough to change a
/// greedy choice on stories260K: every greedy case prints run.c's text, on every instruction set.
#[test]
fn fast_mode_prints_run_c_text_in_every_greedy_case() {
    compare_with_run_c(&[], is_greedy);
}

/// Run every case whose arguments pass `select`, with `flags` after the model path, on every
/// instruction set, and compare with run.c's stdout.
fn compare_with_run_c(flags: &[&str], select: fn(&[String]) -> bool) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let fixtures = root.join("tests/fixtures/runc");
    let model = root.join("tests/models/stories260K.bin");
    let tokenizer = root.join("tests/models/tok512.bin");
    let binary = env!("CARGO_BIN_EXE_llama2");

    let mut cases: Vec<PathBuf> = fs::read_dir(&fixtures)
        .unwrap_or_else(|e| panic!("{}: {e}", fixtures.display()))
        .map(|entry| entry.expect("reading fixture directory").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "args"))
        .collect();
    cases.sort();
    cases.retain(|case| select(&read_args(case, &tokenizer)));
    assert!(
        cases.len() >= MIN_CASES / 2,
        "found only {} cases in {} (expected at least {})",
        cases.len(),
        fixtures.display(),
        MIN_CASES / 2
    );

    let mut failures = Vec::new();
    let isas = Isa::available();
    for (args_file, isa) in cases
        .iter()
        .flat_map(|case| isas.iter().map(move |isa| (case, isa)))
    {
        let name = args_file
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let args = read_args(args_file, &tokenizer);
        let mut expected = fs::read(args_file.with_extension("stdout"))
            .unwrap_or_else(|e| panic!("{name}.stdout: {e}"));
        if name.starts_with("chat_eof_") {
            // Where run.c goes on with a stale or uninitialized line buffer, we end the chat.
            expected.push(b'\n');
        }
        let stdin_file = args_file.with_extension("stdin");
        let stdin = if stdin_file.exists() {
            Some(fs::read(&stdin_file).unwrap_or_else(|e| panic!("{name}.stdin: {e}")))
        } else {
            None
        };

        let mut child = Command::new(binary)
            .env("LLAMA2_ISA", format!("{isa:?}"))
            .arg(&model)
            .args(flags)
            .args(&args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("running {binary}: {e}"));
        let feeder = stdin.map(|bytes| {
            let mut pipe = child.stdin.take().unwrap();
            // Feed stdin on its own thread so a full stdout pipe cannot deadlock us; the
            // program may exit without reading everything, so write errors are ignored.
            std::thread::spawn(move || {
                let _ = pipe.write_all(&bytes);
            })
        });
        let output = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("waiting for {binary}: {e}"));
        if let Some(feeder) = feeder {
            let _ = feeder.join();
        }

        let actual = output.stdout;
        let status_note = if output.status.success() {
            String::new()
        } else {
            format!(
                "\n    exit status {}; stderr: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )
        };
        if actual != expected || !output.status.success() {
            let offset = actual
                .iter()
                .zip(&expected)
                .position(|(a, e)| a != e)
                .unwrap_or(actual.len().min(expected.len()));
            failures.push(format!(
                "{name} ({isa:?}): args {args:?}\n    stdout differs at byte {offset} (ours {} bytes, run.c {} bytes){status_note}\n    ours:  {}\n    run.c: {}",
                actual.len(),
                expected.len(),
                excerpt(&actual, offset),
                excerpt(&expected, offset),
            ));
        }
    }

    assert!(
        failures.is_empty(),
        "{} of {} run.c parity runs failed:\n{}",
        failures.len(),
        cases.len() * isas.len(),
        failures.join("\n")
    );
}

/// llama2.c's xorshift* generator (`random_u32` in run.c) writing float32 values.
struct RandomFloats {
    state: u64,
    out: Vec<u8>,
}

impl RandomFloats {
    fn next_u32(&mut self) -> u32 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        (self.state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32
    }

    /// Append `n` values `(2u - 1) * scale`, computed in f64 (exactly as Python does) and
    /// rounded once to f32.
    fn matrix(&mut self, n: usize, scale: f64) {
        for _ in 0..n {
            let v = 2.0 * ((self.next_u32() >> 8) as f64 / 16_777_216.0) - 1.0;
            self.out
                .extend_from_slice(&((v * scale) as f32).to_le_bytes());
        }
    }

    /// Append `n` RMSNorm weights `1 + (2u - 1) * 0.1`.
    fn norm(&mut self, n: usize) {
        for _ in 0..n {
            let v = 2.0 * ((self.next_u32() >> 8) as f64 / 16_777_216.0) - 1.0;
            self.out
                .extend_from_slice(&((1.0 + v * 0.1) as f32).to_le_bytes());
        }
    }
}

/// `random288.bin`, byte for byte what `tests/fixtures/runc/random288/make_model.py` writes
/// (the recipe is in its docstring): random weights of dim 288, big enough that the matrix
/// products of our forward pass are split over threads.
fn random288() -> Vec<u8> {
    let (dim, hidden, layers, heads, kv_heads, vocab, seq_len) = (288, 768, 2, 6, 3, 512, 256);
    let (head_size, fan_in) = (dim / heads, |n: usize| 1.0 / (n as f64).sqrt());
    let kv_dim = head_size * kv_heads;
    let mut w = RandomFloats {
        state: 288,
        out: Vec::new(),
    };
    for field in [dim, hidden, layers, heads, kv_heads, vocab, seq_len] {
        let field = if field == vocab {
            -(field as i32)
        } else {
            field as i32
        };
        w.out.extend_from_slice(&field.to_le_bytes());
    }
    w.matrix(vocab * dim, 1.0); // token embedding
    (0..layers).for_each(|_| w.norm(dim));
    for (rows, cols) in [(dim, dim), (kv_dim, dim), (kv_dim, dim), (dim, dim)] {
        (0..layers).for_each(|_| w.matrix(rows * cols, fan_in(cols))); // wq wk wv wo
    }
    (0..layers).for_each(|_| w.norm(dim));
    for (rows, cols) in [(hidden, dim), (dim, hidden), (hidden, dim)] {
        (0..layers).for_each(|_| w.matrix(rows * cols, fan_in(cols))); // w1 w2 w3
    }
    w.norm(dim); // final RMSNorm
    let rope_tables = 2 * seq_len * (head_size / 2) * 4;
    w.out.resize(w.out.len() + rope_tables, 0);
    w.matrix(vocab * dim, fan_in(dim)); // classifier
    w.out
}

/// FNV-1a, 64 bits.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xCBF2_9CE4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

/// The cases of `tests/fixtures/runc/random288/` (same `.args` and `.stdout` files as above) on
/// the random model, with `--threads 1` and `--threads 2`: run.c's text either way.
#[test]
fn threaded_decoding_matches_run_c_on_a_model_past_the_parallel_threshold() {
    let model_bytes = random288();
    // Printed by make_model.py for the file run.c was given.
    assert_eq!(
        (model_bytes.len(), fnv1a64(&model_bytes)),
        (8_533_660, 0x5192_724a_7f43_c39b),
        "random288() no longer writes what make_model.py wrote"
    );
    let dir = common::TempDir::new("random288");
    let model = dir.path("random288.bin");
    fs::write(&model, &model_bytes).unwrap();

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let fixtures = root.join("tests/fixtures/runc/random288");
    let tokenizer = root.join("tests/models/tok512.bin");
    let mut cases: Vec<PathBuf> = fs::read_dir(&fixtures)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "args"))
        .collect();
    cases.sort();
    assert_eq!(cases.len(), 4);
    let run = |case: &Path, flags: &[&str]| {
        let mut args = vec![model.clone().into_os_string()];
        args.extend(read_args(case, &tokenizer).into_iter().map(Into::into));
        args.extend(flags.iter().map(Into::into));
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        let output = common::llama2(&args, b"");
        assert!(output.status.success(), "{case:?} {flags:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    for case in &cases {
        let expected = fs::read(case.with_extension("stdout")).unwrap();
        let expected = String::from_utf8_lossy(&expected);
        for threads in ["1", "2"] {
            let exact = run(case, &["--exact", "--threads", threads]);
            assert_eq!(exact, expected, "{case:?} with {threads} threads");
        }
        // Fast mode: the same text for any number of threads; run.c's where it is greedy.
        let fast = run(case, &["--threads", "1"]);
        assert_eq!(run(case, &["--threads", "2"]), fast, "{case:?}, fast");
        if is_greedy(&read_args(case, &tokenizer)) {
            assert_eq!(fast, expected, "{case:?}, fast");
        }
    }
}
