//! Byte-for-byte parity with llama2.c's `run.c`.
//!
//! Every `tests/fixtures/runc/NAME.args` holds run.c arguments (after the model path), one per
//! line, hex-encoded; `{tok512}` stands for the tokenizer path. `NAME.stdin` (chat cases) is fed
//! to stdin, and `NAME.stdout` is run.c's exact stdout, which our `llama2` binary must reproduce
//! on every instruction set its kernels can use on this CPU (chosen with `LLAMA2_ISA`).
//! See `tests/fixtures/runc/README.md`.

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
    assert!(
        cases.len() >= MIN_CASES,
        "found only {} cases in {} (expected at least {MIN_CASES})",
        cases.len(),
        fixtures.display()
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
        let expected = fs::read(args_file.with_extension("stdout"))
            .unwrap_or_else(|e| panic!("{name}.stdout: {e}"));
        let stdin_file = args_file.with_extension("stdin");
        let stdin = if stdin_file.exists() {
            Some(fs::read(&stdin_file).unwrap_or_else(|e| panic!("{name}.stdin: {e}")))
        } else {
            None
        };

        let mut child = Command::new(binary)
            .env("LLAMA2_ISA", format!("{isa:?}"))
            .arg(&model)
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
