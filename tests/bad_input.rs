//! Bad input on the command line: broken checkpoints, broken tokenizers, bad flags, odd prompts.
//!
//! Every refusal must be exit code 1 with exactly one line on stderr that names the file or flag
//! at fault, nothing on stdout, and no panic (see `assert_clean_failure`). Inputs that can be run
//! sensibly must run, with the output `run.c` gives where it has one.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;

/// Run the binary with string arguments (hang-guarded).
fn run(args: &[&str]) -> Output {
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    llama2(&args, b"")
}

fn text(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// Eight greedy steps of the checkpoint at `model` with the bundled tokenizer, plus `extra` flags.
fn run_model(model: &Path, extra: &[&str]) -> Output {
    let tok = tok512();
    let mut args = vec![text(model), "-z", text(&tok), "-t", "0", "-n", "8"];
    args.extend_from_slice(extra);
    run(&args)
}

/// Eight greedy steps of stories260K with the tokenizer at `tokenizer`.
fn run_tokenizer(tokenizer: &Path) -> Output {
    let model = stories260k();
    run(&[text(&model), "-z", text(tokenizer), "-t", "0", "-n", "8"])
}

/// What stories260K prints at temperature 0 for 200 steps (llama2.c's own expected text).
fn expected_story() -> String {
    std::fs::read_to_string(repo("tests/expected/stories260K_t0.0_n200.txt")).unwrap()
}

/// A successful greedy run of a stories260K float model: exit 0, and its text is the start
/// of llama2.c's expected story.
fn assert_runs_the_story(output: &Output) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "stderr: {stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let story = stdout.trim_end_matches('\n');
    assert!(story.len() > 10, "stdout: {stdout:?}");
    assert!(expected_story().starts_with(story), "stdout: {stdout:?}");
}

/// The three checkpoint layouts of stories260K, with the byte offset of their seven header
/// fields.
fn checkpoints() -> Vec<(&'static str, Vec<u8>, usize)> {
    vec![
        ("legacy", std::fs::read(stories260k()).unwrap(), 0),
        ("v1", stories260k_v1_bytes(), 8),
        ("v2", std::fs::read(stories260k_q8()).unwrap(), 8),
    ]
}

fn with_i32(mut bytes: Vec<u8>, at: usize, value: i32) -> Vec<u8> {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
    bytes
}

/// Write `bytes` to a new file in `dir` and return its path.
fn file(dir: &TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.path(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Write a bad checkpoint to `dir` and check that running it is refused for `problem`.
fn assert_checkpoint_refused(dir: &TempDir, name: &str, bytes: &[u8], problem: &str) {
    let path = file(dir, name, bytes);
    let output = run_model(&path, &[]);
    assert_clean_failure(&output, text(&path));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(problem), "{name}: {stderr}");
}

// ---- Checkpoints -------------------------------------------------------------------------------

#[test]
fn empty_and_short_checkpoints_are_refused() {
    let dir = TempDir::new("short-checkpoints");
    let legacy = std::fs::read(stories260k()).unwrap();
    let v2 = std::fs::read(stories260k_q8()).unwrap();
    for (name, bytes) in [
        ("empty.bin", &legacy[..0]),
        ("one-byte.bin", &legacy[..1]),
        ("27-bytes.bin", &legacy[..27]),
        ("legacy-header-only.bin", &legacy[..28]),
        ("magic-only.bin", &v2[..4]),
        ("half-v2-header.bin", &v2[..128]),
        ("v2-header-only.bin", &v2[..256]),
    ] {
        let path = file(&dir, name, bytes);
        assert_clean_failure(&run_model(&path, &[]), text(&path));
    }
}

#[test]
fn truncated_checkpoints_are_refused() {
    let dir = TempDir::new("truncated-checkpoints");
    for (format, bytes, _) in checkpoints() {
        let n = bytes.len();
        for len in [300, 4096, n / 3, n / 2, n - 4, n - 1] {
            let path = file(&dir, &format!("{format}-{len}.bin"), &bytes[..len]);
            assert_clean_failure(&run_model(&path, &[]), text(&path));
        }
        // A file that is too long is just as wrong.
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[0; 8]);
        let path = file(&dir, &format!("{format}-longer.bin"), &longer);
        assert_clean_failure(&run_model(&path, &[]), text(&path));
    }
}

#[test]
fn header_fields_that_are_zero_negative_or_huge_are_refused() {
    let dir = TempDir::new("header-fields");
    // The fields are dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len.
    const SEQ_LEN: usize = 6;
    for (format, bytes, header) in checkpoints() {
        for index in 0..7 {
            for value in [0, -1, -512, i32::MIN, 1 << 20, i32::MAX] {
                let at = header + 4 * index;
                let path = file(
                    &dir,
                    &format!("{format}-field{index}-{value}.bin"),
                    &with_i32(bytes.clone(), at, value),
                );
                let output = run_model(&path, &[]);
                // Files with a header do not store the RoPE tables, so their size does not
                // depend on seq_len: any positive context is a valid model.
                let valid = index == SEQ_LEN && format != "legacy" && value > 0;
                // Legacy files say "unshared classifier" with a negative vocab_size; -512 is
                // then the right size only if the classifier follows, which it does not.
                if valid {
                    assert_eq!(output.status.code(), Some(0), "{format} seq_len={value}");
                } else {
                    assert_clean_failure(&output, text(&path));
                }
            }
        }
    }
}

#[test]
fn heads_must_divide_dim_and_kv_heads_must_divide_heads() {
    let dir = TempDir::new("heads");
    for (format, bytes, header) in checkpoints() {
        // dim 64 with 7 heads; 8 heads with 3 or 16 kv heads; 64 heads of width 1 (no RoPE pairs).
        for (index, value, problem) in [
            (3, 7, "not divisible by n_heads"),
            (4, 3, "not a multiple of n_kv_heads"),
            (4, 16, "not a multiple of n_kv_heads"),
            (3, 64, "is odd"),
        ] {
            assert_checkpoint_refused(
                &dir,
                &format!("{format}-{index}-{value}.bin"),
                &with_i32(bytes.clone(), header + 4 * index, value),
                problem,
            );
        }
    }
}

#[test]
fn a_context_too_large_for_memory_is_refused_only_when_asked_for() {
    let dir = TempDir::new("huge-context");
    for (format, bytes, header) in checkpoints() {
        if format == "legacy" {
            continue; // its size grows with seq_len: covered by the header-field test
        }
        let path = file(
            &dir,
            &format!("{format}-huge-context.bin"),
            &with_i32(bytes, header + 24, i32::MAX),
        );
        // -n 0 and a huge -n ask for a KV cache of billions of positions: refused at once,
        // naming the file and the flag to change, without touching that memory.
        for steps in ["0", "2000000000"] {
            let output = run_model(&path, &["-n", steps]);
            assert_clean_failure(&output, text(&path));
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                stderr.contains("KV cache") && stderr.contains("-n"),
                "{stderr}"
            );
        }
        // A few steps need only a few positions.
        let output = run_model(&path, &[]);
        assert_eq!(output.status.code(), Some(0), "{format}");
        if format == "v1" {
            assert_runs_the_story(&output);
        }
    }
}

#[test]
fn wrong_magic_or_version_is_refused() {
    let dir = TempDir::new("magic-version");
    let v2 = std::fs::read(stories260k_q8()).unwrap();
    let mut cases = vec![
        (
            "magic-ak43.bin".to_string(),
            with_i32(v2.clone(), 0, 0x616b_3433),
        ),
        (
            "text.bin".to_string(),
            b"this is not a model, just some text\n".to_vec(),
        ),
    ];
    for version in [0, 3, -1, i32::MAX] {
        cases.push((
            format!("version{version}.bin"),
            with_i32(v2.clone(), 4, version),
        ));
    }
    for (name, bytes) in cases {
        let path = file(&dir, &name, &bytes);
        assert_clean_failure(&run_model(&path, &[]), text(&path));
    }
}

#[test]
fn bad_group_sizes_are_refused() {
    let dir = TempDir::new("group-sizes");
    let v2 = std::fs::read(stories260k_q8()).unwrap();
    for (group_size, problem) in [
        (0, "group size is 0"),
        (-8, "group size is -8"),
        (i32::MIN, "group size is"),
        (7, "does not divide"),
        (1 << 20, "does not divide"),
        (i32::MAX, "does not divide"),
        (4, "header implies"), // divides everything, but then the file has the wrong size
    ] {
        assert_checkpoint_refused(
            &dir,
            &format!("group-{group_size}.bin"),
            &with_i32(v2.clone(), 37, group_size),
            problem,
        );
    }
}

#[test]
fn missing_files_and_directories_are_refused() {
    let dir = TempDir::new("not-files");
    let missing = dir.path("missing.bin");
    assert_clean_failure(&run_model(&missing, &[]), text(&missing));
    assert_clean_failure(&run_model(&dir.0, &[]), text(&dir.0));
    assert_clean_failure(&run_tokenizer(&missing), text(&missing));
    assert_clean_failure(&run_tokenizer(&dir.0), text(&dir.0));
}

// ---- Tokenizers --------------------------------------------------------------------------------

/// Byte offsets of each entry's score and length in tok512.bin.
fn tokenizer_entries(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut entries = Vec::new();
    let mut at = 4;
    while at < bytes.len() {
        let len = i32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        entries.push((at, at + 4));
        at += 8 + len;
    }
    entries
}

#[test]
fn empty_or_truncated_tokenizers_are_refused() {
    let dir = TempDir::new("truncated-tokenizers");
    let tok = std::fs::read(tok512()).unwrap();
    let entries = tokenizer_entries(&tok);
    assert_eq!(entries.len(), 512);
    let (score_100, length_100) = entries[100];
    let mut cuts = vec![
        0,              // empty
        3,              // inside max_token_length
        4,              // no entries at all
        score_100 + 2,  // inside a score
        length_100 + 1, // inside a length
        length_100 + 5, // inside the piece's bytes
        tok.len() - 1,  // the last piece cut short
    ];
    cuts.push(entries[511].0); // exactly 511 whole entries: one fewer than the model's 512
    for len in cuts {
        let path = file(&dir, &format!("tok-{len}.bin"), &tok[..len]);
        assert_clean_failure(&run_tokenizer(&path), text(&path));
    }
}

#[test]
fn negative_or_huge_lengths_are_refused() {
    let dir = TempDir::new("tokenizer-lengths");
    let tok = std::fs::read(tok512()).unwrap();
    let entries = tokenizer_entries(&tok);
    for (entry, value) in [
        (0, -1),
        (7, i32::MIN),
        (300, -6),
        (300, i32::MAX),
        (300, 1 << 20),
        (511, 7),
    ] {
        let path = file(
            &dir,
            &format!("len-{entry}-{value}.bin"),
            &with_i32(tok.clone(), entries[entry].1, value),
        );
        assert_clean_failure(&run_tokenizer(&path), text(&path));
    }
    // A negative max_token_length.
    let path = file(&dir, "max-len-neg.bin", &with_i32(tok.clone(), 0, -7));
    assert_clean_failure(&run_tokenizer(&path), text(&path));
}

#[test]
fn tokenizers_smaller_than_the_vocabulary_are_refused() {
    let dir = TempDir::new("small-tokenizer");
    let tok = std::fs::read(tok512()).unwrap();
    let entries = tokenizer_entries(&tok);
    // The first 300 entries of tok512 make a valid file for a 300-token model, not for ours.
    let path = file(&dir, "tok300.bin", &tok[..entries[300].0]);
    let output = run_tokenizer(&path);
    assert_clean_failure(&output, text(&path));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("300 tokens") && stderr.contains("512"),
        "{stderr}"
    );
    // The Llama 2 tokenizer has more tokens than needed: like run.c, only the first 512 are read.
    let output = run_tokenizer(&llama_tokenizer());
    assert_eq!(output.status.code(), Some(0));
}

// ---- Flags -------------------------------------------------------------------------------------

#[test]
fn unknown_flags_and_missing_values_are_refused() {
    for flag in ["-x", "--temperature", "-tt", "-", "--", "-T", "model.bin"] {
        assert_clean_failure(&run_model(&stories260k(), &[flag, "1"]), flag);
    }
    for flag in ["-t", "-p", "-s", "-n", "-i", "-z", "-m", "-y", "--threads"] {
        let output = run_model(&stories260k(), &[flag]);
        assert_clean_failure(&output, flag);
        assert!(String::from_utf8_lossy(&output.stderr).contains("needs a value"));
    }
}

#[test]
fn numbers_must_be_numbers_in_range() {
    let cases: &[(&str, &str)] = &[
        ("-t", "hot"),
        ("-t", ""),
        ("-t", "1.0.0"),
        ("-t", "-0.5"),
        ("-t", "-inf"),
        ("-t", "inf"),
        ("-t", "NaN"),
        ("-p", "high"),
        ("-p", "-0.1"),
        ("-p", "1.5"),
        ("-p", "NaN"),
        ("-s", "seed"),
        ("-s", "1e3"),
        ("-s", "12abc"),
        ("-s", "-"),
        ("-n", "many"),
        ("-n", "-1"),
        ("-n", "-9999999999"),
        ("-n", "2.5"),
        ("-n", "99999999999999999999"),
        ("--threads", "0"),
        ("--threads", "-2"),
        ("--threads", "all"),
    ];
    for &(flag, value) in cases {
        assert_clean_failure(&run_model(&stories260k(), &[flag, value]), flag);
    }
    // The edges of the ranges are fine.
    for (flag, value) in [
        ("-t", "0"),
        ("-p", "0"),
        ("-p", "1"),
        ("-n", "0"),
        ("-s", "-1"),
    ] {
        let output = run_model(&stories260k(), &[flag, value]);
        assert_eq!(output.status.code(), Some(0), "{flag} {value}");
    }
}

#[test]
fn unknown_modes_are_refused() {
    for mode in ["generat", "Chat", "", "eval "] {
        assert_clean_failure(&run_model(&stories260k(), &["-m", mode]), "-m");
    }
}

#[test]
fn help_is_printed_only_where_a_flag_is_expected() {
    let usage = |output: &Output| {
        assert_eq!(output.status.code(), Some(0));
        assert!(String::from_utf8_lossy(&output.stdout).starts_with("Usage:"));
        assert!(output.stderr.is_empty());
    };
    usage(&run(&["-h"]));
    usage(&run(&["--help"]));
    usage(&run(&["model.bin", "-t", "0", "--help"]));
    usage(&run(&["tokenize", "-h"]));
    // As the value of -i, "-h" is a prompt like any other.
    let output = run_model(&stories260k(), &["-i", "-h", "-n", "3"]);
    assert_eq!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("-h"));
}

#[test]
fn the_checkpoint_must_come_first() {
    let output = run(&[]);
    assert_clean_failure(&output, "missing checkpoint");
    let model = stories260k();
    assert_clean_failure(&run(&["-t", "0.5", text(&model)]), "-t");
    assert_clean_failure(&run(&["-z", text(&tok512())]), "-z");
    // A checkpoint whose name starts with '-' is reachable as ./-name.
    let dir = TempDir::new("dash-name");
    std::fs::copy(&model, dir.path("-model.bin")).unwrap();
    let output = run(&["-model.bin"]);
    assert_clean_failure(&output, "./-model.bin");
    let tok = tok512();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_llama2"))
        .args(["./-model.bin", "-z", text(&tok), "-t", "0", "-n", "8"])
        .current_dir(&dir.0)
        .output()
        .unwrap();
    assert_runs_the_story(&output);
}

#[test]
fn tokenize_refuses_bad_tokenizers_and_flags() {
    let dir = TempDir::new("tokenize");
    let empty = file(&dir, "empty.bin", b"");
    let output = run(&["tokenize", "-z", text(&empty), "-i", "hi"]);
    assert_clean_failure(&output, text(&empty));
    let output = run(&["tokenize", "-z", text(&tok512()), "-q", "hi"]);
    assert_clean_failure(&output, "-q");
}

// ---- Prompts -----------------------------------------------------------------------------------

/// Run stories260K with an arbitrary-bytes prompt.
fn run_prompt(prompt: &[u8], extra: &[&str]) -> Output {
    use std::os::unix::ffi::OsStrExt;
    let (model, tok) = (stories260k(), tok512());
    let mut args: Vec<&OsStr> = vec![
        model.as_os_str(),
        OsStr::new("-z"),
        tok.as_os_str(),
        OsStr::new("-i"),
        OsStr::from_bytes(prompt),
    ];
    args.extend(extra.iter().map(OsStr::new));
    llama2(&args, b"")
}

#[test]
fn invalid_utf8_prompts_run_like_run_c() {
    use std::os::unix::ffi::OsStrExt;
    // Bytes that are not UTF-8 go through byte tokens; run.c prints the same text.
    let output = run_prompt(b"a\xff\xfe b", &["-t", "0", "-n", "20"]);
    assert_eq!(output.status.code(), Some(0));
    let expected = std::fs::read(repo("tests/expected/stories260K_invalid_utf8_prompt.txt"));
    assert_eq!(output.stdout, expected.unwrap());
    // Every mode takes them.
    for mode in ["chat", "eval"] {
        let output = run_prompt(
            b"\xc3\x28 caf\xc3\xa9 \xe2\x82",
            &["-m", mode, "-y", "", "-n", "40"],
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{mode}: {stderr}");
    }
    let tok = tok512();
    let args = [
        OsStr::new("tokenize"),
        OsStr::new("-z"),
        tok.as_os_str(),
        OsStr::new("-i"),
        OsStr::from_bytes(b"\xff"),
    ];
    let output = llama2(&args, b"");
    // BOS, the dummy-prefix space (token 410 of tok512.bin), then 0xFF as byte token 0xFF + 3.
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "1 410 258");
}

fn long_prompt() -> Vec<u8> {
    "word ".repeat(5000).into_bytes()
}

#[test]
fn prompts_longer_than_the_context_are_refused() {
    // 5000 words are over 10000 tokens; stories260K's context is 512 positions. run.c would echo
    // the first 512 tokens of the prompt and stop; we say why nothing can be generated.
    for steps in ["0", "256", "100000"] {
        let output = run_prompt(&long_prompt(), &["-n", steps]);
        assert_clean_failure(&output, "-i");
        assert!(String::from_utf8_lossy(&output.stderr).contains("512-position context"));
    }
    // So is a chat message longer than the whole context.
    let output = run_prompt(&long_prompt(), &["-m", "chat", "-y", "be brief"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1);
    assert!(
        stderr.starts_with("llama2: -i: ") && !stderr.contains("panicked"),
        "{stderr}"
    );
    // Evaluation reads a text longer than the context in windows: 200 words and a space are 601
    // tokens after BOS (" word" is three tokens of tok512.bin), all of them scored.
    let output = run_prompt("word ".repeat(200).as_bytes(), &["-m", "eval"]);
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.starts_with("tokens 601, loss "), "{stdout}");
}

#[test]
fn steps_shorter_than_the_prompt_stop_inside_the_prompt_like_run_c() {
    // run.c prints "Once upon a\n" for this: three positions, all of them the prompt's.
    let output = run_prompt(b"Once upon a time there was", &["-t", "0", "-n", "3"]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "Once upon a\n");
    // One step runs BOS and prints the prompt's first token.
    let output = run_prompt(b"Once upon a time", &["-t", "0", "-n", "1"]);
    assert_eq!(String::from_utf8_lossy(&output.stdout), "Once\n");
    // In chat mode too the context fills inside the message and the conversation ends, with
    // what run.c prints.
    let output = run_prompt(
        b"Tell me a story about a cat",
        &["-m", "chat", "-y", "", "-n", "5"],
    );
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "Assistant: \n");
}
