//! Helpers shared by the integration tests: paths of the bundled files and running the binary.
#![allow(dead_code)]

pub mod xml;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// `llama2::reference`'s forward pass over a checkpoint, one position at a time: the oracle
/// the fast forward pass is held to.
pub struct Reference {
    pub weights: llama2::reference::Weights,
    cache: llama2::reference::KvCache,
}

impl Reference {
    /// Parse `bytes` (any checkpoint format) with the reference reader.
    pub fn new(bytes: &[u8]) -> Reference {
        let weights = llama2::reference::parse(bytes).expect("the reference reads the checkpoint");
        let cache = llama2::reference::KvCache::new(&weights.config);
        Reference { weights, cache }
    }

    /// The logits after running `token` at `pos` (positions in order, or rewinding).
    pub fn logits(&mut self, token: u32, pos: usize) -> Vec<f32> {
        llama2::reference::forward(&self.weights, &mut self.cache, token, pos)
            .expect("token and position fit the model")
            .logits
    }
}

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

/// stories260K rewritten in the version 1 layout (float32 with a 256-byte header).
pub fn stories260k_v1_bytes() -> Vec<u8> {
    use llama2::convert::{write_float, FloatTensors};
    let model = llama2::Model::open(stories260k())
        .expect("stories260K loads")
        .with_arithmetic(llama2::Arithmetic::Exact);
    let mut bytes = Vec::new();
    write_float(
        &mut bytes,
        &FloatTensors::from_model(&model),
        llama2::Format::Float32V1,
    )
    .expect("writing to memory cannot fail");
    bytes
}

/// The Llama 2 32000-token tokenizer.
pub fn llama_tokenizer() -> PathBuf {
    repo("tokenizer.bin")
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

/// How long any one run of the binary may take before a test calls it hung. Generous: it only
/// catches hangs, it does not measure speed.
pub const HANG_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Run the `llama2` binary with `args` and `stdin`, returning its output. A run that takes
/// longer than [`HANG_LIMIT`] is killed and fails the test.
pub fn llama2(args: &[&std::ffi::OsStr], stdin: &[u8]) -> Output {
    use std::io::{Read, Write};
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
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().expect("stdout is piped")));
    let stderr = read_all(Box::new(child.stderr.take().expect("stderr is piped")));
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for llama2") {
            break status;
        }
        if started.elapsed() > HANG_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("llama2 {args:?} hung for more than {HANG_LIMIT:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    writer.join().expect("stdin writer finishes");
    Output {
        status,
        stdout: stdout.join().expect("stdout reader finishes"),
        stderr: stderr.join().expect("stderr reader finishes"),
    }
}

/// Check that a run failed the way every bad input must: exit code 1 (not a signal), exactly
/// one line on stderr that starts with `llama2: ` and contains `names` (the file or flag at
/// fault), no panic message, and nothing on stdout.
pub fn assert_clean_failure(output: &Output, names: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let context = format!("(expected an error naming {names:?}) stderr: {stderr:?}");
    assert_eq!(output.status.code(), Some(1), "{context}");
    assert_eq!(stderr.lines().count(), 1, "{context}");
    assert!(stderr.ends_with('\n'), "{context}");
    assert!(stderr.starts_with("llama2: "), "{context}");
    assert!(stderr.contains(names), "{context}");
    assert!(!stderr.contains("panicked"), "{context}");
    assert!(
        output.stdout.is_empty(),
        "{context} stdout: {:?}",
        String::from_utf8_lossy(&output.stdout)
    );
}
