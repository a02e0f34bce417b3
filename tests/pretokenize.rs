//! `llama2 pretokenize` against llama2.c's `tinystories.py pretokenize`: the ids SentencePiece
//! gives each stripped story, BOS first, as raw little-endian u16 (fixture by
//! `tests/fixtures/tokenizer/make_fixtures.py` with the Llama 2 `tokenizer.model`).

mod common;

use common::{assert_clean_failure, llama2_str, llama_tokenizer, repo, tok512, TempDir};
use llama2::Tokenizer;

fn u16s(bytes: &[u8]) -> Vec<u16> {
    bytes
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .collect()
}

#[test]
fn json_shard_gives_sentencepiece_ids_in_llama2c_layout() {
    let dir = TempDir::new("pretokenize-json");
    let out = dir.path("stories.bin");
    let output = llama2_str(&[
        "pretokenize",
        "-z",
        llama_tokenizer().to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        repo("tests/fixtures/tokenizer/stories.json")
            .to_str()
            .unwrap(),
    ]);
    assert!(output.status.success(), "{output:?}");
    let expected = std::fs::read(repo("tests/fixtures/tokenizer/stories_llama2.bin")).unwrap();
    let ours = std::fs::read(&out).unwrap();
    assert_eq!(u16s(&ours), u16s(&expected));
    assert_eq!(ours, expected);
    let stdout = String::from_utf8_lossy(&output.stdout);
    // 8 stories, of which one empty and one all whitespace.
    assert!(stdout.contains("6 documents"), "{stdout}");
    assert!(
        stdout.contains(&format!("{} tokens", expected.len() / 2)),
        "{stdout}"
    );
    assert!(stdout.contains("tokens per byte"), "{stdout}");
    assert!(stdout.contains("2 empty"), "{stdout}");
}

/// Text files: a document per line, trimmed, empty ones skipped; the same ids as encoding each
/// line with BOS, whatever the number of threads.
#[test]
fn text_lines_are_documents_and_threads_do_not_change_the_output() {
    let dir = TempDir::new("pretokenize-text");
    let input = dir.path("in.txt");
    let mut text = Vec::new();
    let corpus = std::fs::read_to_string(repo("tests/fixtures/tokenizer/corpus.txt")).unwrap();
    // Enough text for several batches, with awkward lines mixed in.
    for _ in 0..14 {
        text.extend_from_slice(corpus.as_bytes());
        text.extend_from_slice(
            b"  padded line \r\n\n\t\nnot \xff utf-8\nlast line without newline",
        );
        text.push(b'\n');
    }
    std::fs::write(&input, &text).unwrap();
    let tokenizer = Tokenizer::open_all(tok512()).unwrap();
    let mut expected = Vec::new();
    let mut documents = 0;
    for line in text.split(|&b| b == b'\n') {
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
        let line = line.trim();
        if !line.is_empty() {
            documents += 1;
            let ids = tokenizer.encode(line.as_bytes(), true, false).unwrap();
            expected.extend(ids.iter().map(|&id| id as u16));
        }
    }
    for threads in ["1", "2"] {
        let out = dir.path(&format!("out{threads}.bin"));
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_llama2"));
        command
            .args(["pretokenize", "-z", tok512().to_str().unwrap(), "-o"])
            .arg(&out)
            .arg(&input)
            .env("RAYON_NUM_THREADS", threads);
        let output = command.output().unwrap();
        assert!(output.status.success(), "{output:?}");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout.contains(&format!("{documents} documents")),
            "{stdout}"
        );
        assert!(stdout.contains("14 non-UTF-8 skipped"), "{stdout}");
        assert!(
            u16s(&std::fs::read(&out).unwrap()) == expected,
            "{threads} threads"
        );
    }
}

#[test]
fn bad_input_is_one_line_and_exit_1() {
    let dir = TempDir::new("pretokenize-bad");
    let out = dir.path("out.bin");
    let out = out.to_str().unwrap();
    let tok = tok512();
    let tok = tok.to_str().unwrap();
    let corpus = repo("tests/fixtures/tokenizer/heldout.txt");
    let corpus = corpus.to_str().unwrap();
    let run = |args: &[&str]| llama2_str(&[&["pretokenize"], args].concat());

    assert_clean_failure(&run(&["-z", tok, "-o", out]), "no input");
    assert_clean_failure(&run(&["-o", out, corpus]), "-z");
    assert_clean_failure(&run(&["-z", tok, corpus]), "-o");
    assert_clean_failure(
        &run(&["-z", "/nonexistent.bin", "-o", out, corpus]),
        "/nonexistent.bin",
    );
    assert_clean_failure(
        &run(&["-z", tok, "-o", out, "/nonexistent/in.txt"]),
        "/nonexistent/in.txt",
    );
    assert_clean_failure(
        &run(&["-z", tok, "-o", "/nonexistent/dir/out.bin", corpus]),
        "/nonexistent/dir/out.bin",
    );
    assert_clean_failure(&run(&["-z", tok, "-x", "-o", out, corpus]), "-x");

    // A vocabulary too large for u16 ids.
    let big = dir.path("big.bin");
    let mut bytes = 1i32.to_le_bytes().to_vec();
    for i in 0..65537u32 {
        bytes.extend_from_slice(&0f32.to_le_bytes());
        let piece = format!("{i}");
        bytes.extend_from_slice(&(piece.len() as i32).to_le_bytes());
        bytes.extend_from_slice(piece.as_bytes());
    }
    std::fs::write(&big, bytes).unwrap();
    assert_clean_failure(
        &run(&["-z", big.to_str().unwrap(), "-o", out, corpus]),
        "65537",
    );

    // Only empty documents: no output at all.
    let empty = dir.path("empty.json");
    std::fs::write(&empty, "[{\"story\": \"  \"}, {\"story\": \"\"}]").unwrap();
    assert_clean_failure(
        &run(&["-z", tok, "-o", out, empty.to_str().unwrap()]),
        "no documents",
    );
    assert!(!dir.path("out.bin").exists());
    assert!(!dir.path("out.bin.partial").exists());
}
