//! `llama2 inspect`: its numbers checked against the raw bytes of the files and the config
//! formula, computed here without the crate's help, for every checkpoint format.

mod common;

use common::*;
use llama2::checkpoint::Format;
use llama2::convert::{write_float, FloatTensors};
use llama2::inspect::Inspection;
use llama2::{Config, Model};

/// Little-endian `i32` at byte `at`.
fn i32_at(bytes: &[u8], at: usize) -> i32 {
    i32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

/// `n` little-endian `f32` from byte `at`.
fn f32s_at(bytes: &[u8], at: usize, n: usize) -> Vec<f32> {
    bytes[at..at + 4 * n]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// `n` int8 values at byte `at`, each times the scale of its group of `gs` (scales follow).
fn dequantized_at(bytes: &[u8], at: usize, n: usize, gs: usize) -> Vec<f32> {
    let scales = f32s_at(bytes, at + n, n / gs);
    (0..n)
        .map(|i| bytes[at + i] as i8 as f32 * scales[i / gs])
        .collect()
}

/// Mean, standard deviation (two passes) and max |w|.
fn stats(values: &[f32]) -> (f64, f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = values
        .iter()
        .map(|&v| (v as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    let max = values.iter().fold(0.0f64, |m, &v| m.max((v as f64).abs()));
    (mean, var.sqrt(), max)
}

/// Parameter count from the config alone: per layer two norms, q and o (dim x dim), k and v
/// (kv_dim x dim) and three feed-forward matrices; plus the embedding, the final norm and an
/// unshared classifier.
fn parameters_by_formula(c: &Config) -> usize {
    let kv_dim = c.n_kv_heads * (c.dim / c.n_heads);
    let per_layer = 2 * c.dim + 2 * c.dim * c.dim + 2 * kv_dim * c.dim + 3 * c.dim * c.hidden_dim;
    let classifier = if c.shared_classifier {
        0
    } else {
        c.vocab_size * c.dim
    };
    c.vocab_size * c.dim + c.n_layers * per_layer + c.dim + classifier
}

/// The row of the `inspect --stats` table for `tensor`, split into its columns.
fn table_row(report: &str, tensor: &str) -> Vec<String> {
    let line = report
        .lines()
        .skip_while(|l| !l.starts_with("tensor "))
        .find(|l| l.split_whitespace().next() == Some(tensor))
        .unwrap_or_else(|| panic!("no row for {tensor} in:\n{report}"));
    line.split_whitespace().map(str::to_string).collect()
}

/// Check the mean, std and max|w| printed for `tensor` (the last three columns).
fn assert_row_stats(report: &str, tensor: &str, values: &[f32]) {
    let row = table_row(report, tensor);
    let printed: Vec<f64> = row[row.len() - 3..]
        .iter()
        .map(|v| v.parse().unwrap())
        .collect();
    let (mean, std, max) = stats(values);
    for (what, got, want) in [
        ("mean", printed[0], mean),
        ("std", printed[1], std),
        ("max", printed[2], max),
    ] {
        assert!(
            (got - want).abs() <= 1e-6 + 1e-5 * want.abs(),
            "{tensor} {what}: printed {got}, computed {want}"
        );
    }
}

/// The number after `label` at the start of a line of the report.
fn number_after(report: &str, label: &str) -> usize {
    let line = report
        .lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no {label:?} line in:\n{report}"));
    line[label.len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn inspect_stats(path: &std::path::Path) -> String {
    let out = llama2(
        &[
            std::ffi::OsStr::new("inspect"),
            path.as_os_str(),
            "--stats".as_ref(),
        ],
        b"",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The config from a legacy header, read here byte by byte.
fn legacy_config(bytes: &[u8]) -> Config {
    let f: Vec<i32> = (0..7).map(|i| i32_at(bytes, 4 * i)).collect();
    Config {
        dim: f[0] as usize,
        hidden_dim: f[1] as usize,
        n_layers: f[2] as usize,
        n_heads: f[3] as usize,
        n_kv_heads: f[4] as usize,
        vocab_size: f[5].unsigned_abs() as usize,
        seq_len: f[6] as usize,
        shared_classifier: f[5] > 0,
    }
}

#[test]
fn legacy_file_numbers_match_its_bytes() {
    let bytes = std::fs::read(stories260k()).unwrap();
    let c = legacy_config(&bytes);
    let report = inspect_stats(&stories260k());

    assert_eq!(
        number_after(&report, "parameters"),
        parameters_by_formula(&c)
    );
    assert_eq!(number_after(&report, "parameters"), 260_032); // stories260K's name says so
    assert_eq!(number_after(&report, "file size"), bytes.len());
    assert_eq!(number_after(&report, "header"), 28);
    let kv_dim = c.n_kv_heads * c.dim / c.n_heads;
    assert_eq!(
        number_after(&report, "KV cache"),
        2 * c.n_layers * kv_dim * 4
    );
    assert!(
        report.contains("8 heads, 4 kv heads, head size 8"),
        "{report}"
    );
    assert!(!report.contains("int8 groups"));

    // Legacy order: embedding, then every layer's attn_norm, then every layer's wq, wk, ...
    let (d, l, v) = (c.dim, c.n_layers, c.vocab_size);
    let embedding = f32s_at(&bytes, 28, v * d);
    let wq_start = 28 + 4 * (v * d + l * d);
    let wq0 = f32s_at(&bytes, wq_start, d * d);
    let wq_end = wq_start + 4 * l * d * d;
    let wk2 = f32s_at(&bytes, wq_end + 4 * 2 * kv_dim * d, kv_dim * d);
    assert_row_stats(&report, "tok_embeddings.weight", &embedding);
    assert_row_stats(&report, "layers.0.attention.wq.weight", &wq0);
    assert_row_stats(&report, "layers.2.attention.wk.weight", &wk2);
    assert_eq!(
        table_row(&report, "layers.2.attention.wk.weight")[1..4],
        ["32", "x", "64"]
    );
    assert_eq!(
        table_row(&report, "layers.2.attention.wk.weight")[5],
        (kv_dim * d).to_string()
    );
    assert!(report
        .lines()
        .all(|l| !l.starts_with("classifier ") || l.contains("shared")));
}

#[test]
fn int8_file_numbers_match_its_dequantized_bytes() {
    let bytes = std::fs::read(stories260k_q8()).unwrap();
    assert_eq!(&bytes[..4], b"24ka"); // "ak42" as a little-endian u32
    let mut c = legacy_config(&bytes[8..]);
    c.shared_classifier = bytes[36] == 1;
    let gs = i32_at(&bytes, 37) as usize;
    let report = inspect_stats(&stories260k_q8());

    assert_eq!(
        number_after(&report, "parameters"),
        parameters_by_formula(&c)
    );
    assert_eq!(number_after(&report, "int8 groups"), gs);
    assert_eq!(number_after(&report, "file size"), bytes.len());
    assert_eq!(number_after(&report, "header"), 256);

    // Version 2 order: all norms (attn, ffn, final) in float32, then the embedding, then every
    // layer's wq, ... each as int8 values followed by their group scales.
    let (d, l, v) = (c.dim, c.n_layers, c.vocab_size);
    let norms_start = 256;
    let ffn_norm1 = f32s_at(&bytes, norms_start + 4 * (l * d + d), d);
    let embedding_start = norms_start + 4 * (2 * l * d + d);
    let embedding = dequantized_at(&bytes, embedding_start, v * d, gs);
    let wq_start = embedding_start + v * d + 4 * (v * d / gs);
    let wq_bytes = d * d + 4 * (d * d / gs);
    let wq3 = dequantized_at(&bytes, wq_start + 3 * wq_bytes, d * d, gs);
    assert_row_stats(&report, "layers.1.ffn_norm.weight", &ffn_norm1);
    assert_row_stats(&report, "tok_embeddings.weight", &embedding);
    assert_row_stats(&report, "layers.3.attention.wq.weight", &wq3);
    assert_eq!(
        table_row(&report, "layers.3.attention.wq.weight")[4],
        format!("int8/{gs}")
    );
    assert_eq!(
        table_row(&report, "layers.3.attention.wq.weight")[6],
        wq_bytes.to_string()
    );
}

/// A small random model with its own classifier, so that the classifier is a tensor of its own.
fn unshared_model() -> FloatTensors<'static> {
    let config = Config {
        dim: 16,
        hidden_dim: 40,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 1,
        vocab_size: 24,
        seq_len: 10,
        shared_classifier: false,
    };
    FloatTensors::random(config, 7)
}

#[test]
fn separate_classifier_is_listed_in_legacy_and_version_1_files() {
    let tensors = unshared_model();
    let c = tensors.config;
    let dir = TempDir::new("inspect-unshared");
    for (format, file) in [
        (Format::Legacy, "legacy.bin"),
        (Format::Float32V1, "v1.bin"),
    ] {
        let path = dir.path(file);
        let mut bytes = Vec::new();
        write_float(&mut bytes, &tensors, format).unwrap();
        std::fs::write(&path, &bytes).unwrap();
        let report = inspect_stats(&path);
        assert_eq!(
            number_after(&report, "parameters"),
            parameters_by_formula(&c)
        );
        assert_eq!(number_after(&report, "file size"), bytes.len());
        assert!(report.contains("multi-query"), "{report}");
        assert!(report.contains("classifier  its own matrix"), "{report}");
        // In both layouts the classifier is the last (vocab_size, dim) floats of the file.
        let n = c.vocab_size * c.dim;
        let classifier = f32s_at(&bytes, bytes.len() - 4 * n, n);
        assert_row_stats(&report, "output.weight", &classifier);
        let version = if format == Format::Legacy {
            "legacy"
        } else {
            "version 1"
        };
        assert!(report.contains(version), "{report}");
    }
}

#[test]
fn library_totals_add_up_to_the_file() {
    let tensors = unshared_model();
    for format in [Format::Legacy, Format::Float32V1] {
        let mut bytes = Vec::new();
        write_float(&mut bytes, &tensors, format).unwrap();
        let size = bytes.len();
        let model = Model::from_bytes(bytes)
            .unwrap()
            .with_arithmetic(llama2::Arithmetic::Exact);
        let inspection = Inspection::of(&model).unwrap();
        let parts =
            inspection.header_bytes() + inspection.tensor_bytes() + inspection.unused_rope_bytes();
        assert_eq!(parts, size, "{format:?}");
        assert_eq!(inspection.tensors.len(), 1 + 9 * 2 + 1 + 1);
    }
    let model = Model::open(stories260k_q8())
        .unwrap()
        .with_arithmetic(llama2::Arithmetic::Exact);
    let inspection = Inspection::of(&model).unwrap();
    assert_eq!(
        inspection.header_bytes() + inspection.tensor_bytes(),
        inspection.file_size
    );
}

#[test]
fn bad_files_and_flags_fail_cleanly() {
    let dir = TempDir::new("inspect-bad");
    let truncated = dir.path("truncated.bin");
    let bytes = std::fs::read(stories260k()).unwrap();
    std::fs::write(&truncated, &bytes[..1000]).unwrap();
    let path = truncated.to_str().unwrap();
    assert_clean_failure(&llama2_str(&["inspect", path]), "truncated.bin");
    assert_clean_failure(
        &llama2_str(&["inspect", "no-such-file.bin"]),
        "no-such-file.bin",
    );
    assert_clean_failure(&llama2_str(&["inspect"]), "inspect");
    let model = stories260k();
    let model = model.to_str().unwrap();
    assert_clean_failure(&llama2_str(&["inspect", model, "--bogus"]), "--bogus");
    assert_clean_failure(&llama2_str(&["inspect", model, model]), "inspect");
}
