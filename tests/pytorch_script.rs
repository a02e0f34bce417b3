//! scripts/model_bin_to_pytorch.py: a model.bin loaded into llama2.c's model.py `Transformer` and
//! written back with llama2.c's legacy export has every weight unchanged, for a shared and a
//! separate classifier. Needs PyTorch and a llama2.c checkout (`LLAMA2C_DIR`); skipped with a
//! note without them.

mod common;

use std::path::Path;
use std::process::Command;

use common::{repo, stories260k, TempDir};
use llama2::convert::{write_float, FloatTensors};
use llama2::{Config, Format, Model, Params};

/// The llama2.c checkout to import model.py from, if PyTorch and one are available.
fn llama2c_dir() -> Option<String> {
    let torch = Command::new("python3")
        .args(["-c", "import torch"])
        .output();
    if !torch.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: python3 -c \"import torch\" fails (PyTorch not installed)");
        return None;
    }
    match std::env::var("LLAMA2C_DIR") {
        Ok(dir) if Path::new(&dir).join("model.py").exists() => Some(dir),
        _ => {
            eprintln!("skipped: set LLAMA2C_DIR to a checkout of karpathy/llama2.c (model.py)");
            None
        }
    }
}

fn round_trip(llama2c: &str, model_bin: &Path, exported: &Path) {
    let output = Command::new("python3")
        .arg(repo("scripts/model_bin_to_pytorch.py"))
        .args([
            llama2c,
            model_bin.to_str().unwrap(),
            "--export",
            exported.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let before = Params::from_model(&Model::open(model_bin).unwrap()).unwrap();
    let after = Params::from_model(&Model::open(exported).unwrap()).unwrap();
    assert_eq!(before.config(), after.config());
    // Bit for bit: compare the bits, so that NaNs or -0.0 would count too.
    let bits = |p: &Params| p.data().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert!(
        bits(&before) == bits(&after),
        "{} changed",
        model_bin.display()
    );
}

#[test]
fn model_bin_survives_pytorch_and_llama2cs_export() {
    let Some(llama2c) = llama2c_dir() else { return };
    let tmp = TempDir::new("pytorch-script");
    round_trip(&llama2c, &stories260k(), &tmp.path("shared.bin"));
    let config = Config {
        dim: 16,
        hidden_dim: 48,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        vocab_size: 40,
        seq_len: 12,
        shared_classifier: false,
    };
    let mut bytes = Vec::new();
    write_float(&mut bytes, &FloatTensors::random(config, 3), Format::Legacy).unwrap();
    std::fs::write(tmp.path("separate.bin"), bytes).unwrap();
    round_trip(
        &llama2c,
        &tmp.path("separate.bin"),
        &tmp.path("separate-out.bin"),
    );
}
