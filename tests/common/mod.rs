//! Helpers shared by the integration tests: paths of the bundled files and running the binary.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// A path inside the repository.
pub fn repo(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// The bundled 260K-parameter TinyStories model (llama2.c legacy float format).
pub fn stories260k() -> PathBuf {
    repo("tests/models/stories260K.bin")
}

/// Its 512-token tokenizer.
pub fn tok512() -> PathBuf {
    repo("tests/models/tok512.bin")
}

/// The int8 (version 2, group size 8) export of stories260K.
pub fn stories260k_q8() -> PathBuf {
    repo("tests/models/stories260K-q8.bin")
}

/// The Llama 2 32000-token tokenizer.
pub fn llama_tokenizer() -> PathBuf {
    repo("tokenizer.bin")
}

/// Run the `llama2` binary with `args` and `stdin`, returning its output.
pub fn llama2(args: &[&std::ffi::OsStr], stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_llama2"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the llama2 binary runs");
    let mut input = child.stdin.take().expect("stdin is piped");
    let stdin = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let output = child
        .wait_with_output()
        .expect("the llama2 binary finishes");
    writer.join().expect("stdin writer finishes");
    output
}

/// Run the binary with string arguments and no stdin.
pub fn llama2_str(args: &[&str]) -> Output {
    let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    llama2(&args, b"")
}

/// A temporary directory unique to one test, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("llama2-rs-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
