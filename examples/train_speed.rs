//! Training speed on random tokens: forward + backward + clipping + AdamW per step, for the
//! stories260K recipe shape (`260k`) or the stories15M shape (`15m`).
//!
//! `cargo run --release --example train_speed -- 260k [T] [steps]`

use llama2::train::{self, AdamW, AdamWConfig, Dropout, Workspace};
use llama2::Config;
use std::time::Instant;

fn main() -> llama2::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let shape = args.get(1).map_or("260k", String::as_str);
    let (config, batch, mut seq_len) = match shape {
        "15m" => (
            Config {
                dim: 288,
                hidden_dim: 768,
                n_layers: 6,
                n_heads: 6,
                n_kv_heads: 6,
                vocab_size: 32000,
                seq_len: 256,
                shared_classifier: true,
            },
            8,
            256,
        ),
        _ => (
            Config {
                dim: 64,
                hidden_dim: 172,
                n_layers: 5,
                n_heads: 8,
                n_kv_heads: 4,
                vocab_size: 512,
                seq_len: 512,
                shared_classifier: true,
            },
            32,
            512,
        ),
    };
    if let Some(t) = args.get(2) {
        seq_len = t.parse().expect("T");
    }
    let steps: usize = args.get(3).map_or(3, |s| s.parse().expect("steps"));
    let mut params = train::init_params(&config, 1)?;
    let mut grads = params.zeros_like()?;
    let mut adam = AdamW::new(&params)?;
    let mut ws = Workspace::new(&config, batch, seq_len)?;
    let mut rng = llama2::sampler::Rng::new(7);
    let n = batch * seq_len;
    let tokens: Vec<u16> = (0..n + 1)
        .map(|_| (rng.next_u32() % config.vocab_size as u32) as u16)
        .collect();
    let (x, y) = (&tokens[..n], &tokens[1..]);
    let (mut t_fb, mut t_opt, mut t_fwd) = (0.0, 0.0, 0.0);
    for step in 0..=steps {
        let t0 = Instant::now();
        let loss = train::forward_backward(&params, &mut grads, &mut ws, x, y, Dropout::OFF, 1.0)?;
        let t1 = Instant::now();
        train::clip_grads(&mut grads, 1.0);
        adam.step(&mut params, &grads, 5e-4, &AdamWConfig::default())?;
        grads.data_mut().fill(0.0);
        let t2 = Instant::now();
        train::loss(&params, &mut ws, x, y)?;
        let t3 = Instant::now();
        if step > 0 {
            t_fb += (t1 - t0).as_secs_f64();
            t_opt += (t2 - t1).as_secs_f64();
            t_fwd += (t3 - t2).as_secs_f64();
        }
        eprintln!("step {step}: loss {loss:.4}");
    }
    let s = steps as f64;
    println!(
        "{shape} B={batch} T={seq_len}: {:.0} ms/step (forward {:.0}, backward {:.0}, optimizer {:.0}), {:.0} tok/s",
        (t_fb + t_opt) / s * 1e3,
        t_fwd / s * 1e3,
        (t_fb - t_fwd) / s * 1e3,
        t_opt / s * 1e3,
        n as f64 / ((t_fb + t_opt) / s)
    );
    Ok(())
}
