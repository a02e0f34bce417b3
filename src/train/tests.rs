//! Finite-difference checks of every backward function and of the whole model, and the
//! optimizer against its formulas. (The matrix products are tested in `crate::gemm`.)
//!
//! A backward function is checked through the scalar `E = sum_i r_i * out_i` for a fixed
//! random `r`: its gradient is what the backward function returns for `d_out = r`, and each
//! input's central difference `(E(x + h) - E(x - h)) / 2h` (in f64 over f32 forward passes) must
//! agree with it.

use super::dropout::{Dropout, Mask};
use super::ops::{self, AttentionShape};
use super::*;
use crate::params::{Params, TensorKind};
use crate::sampler::Rng;
use crate::Config;

fn random(len: usize, std: f64, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed * 7919 + 1);
    (0..len)
        .map(|_| (standard_normal(&mut rng) * std) as f32)
        .collect()
}

fn weighted_sum(out: &[f32], r: &[f32]) -> f64 {
    out.iter().zip(r).map(|(&o, &r)| o as f64 * r as f64).sum()
}

/// Compares `analytic` with central differences of `objective` around `x` (steps `h` and `h / 2`
/// combined to cancel their second-order error), element by element:
/// `|fd - analytic| <= tol * max(1, |analytic|)`. Also fails when every gradient is zero, which
/// would make the check vacuous.
fn check_gradient(
    name: &str,
    x: &[f32],
    analytic: &[f32],
    h: f32,
    tol: f64,
    mut objective: impl FnMut(&[f32]) -> f64,
) -> Vec<f64> {
    assert_eq!(x.len(), analytic.len(), "{name}");
    assert!(
        analytic.iter().any(|&g| g != 0.0),
        "{name}: all gradients are zero"
    );
    let mut worst = 0.0f64;
    let mut xp = x.to_vec();
    let mut all = Vec::with_capacity(x.len());
    for i in 0..x.len() {
        let mut difference = |h: f32| {
            xp[i] = x[i] + h;
            let up = objective(&xp);
            xp[i] = x[i] - h;
            let down = objective(&xp);
            xp[i] = x[i];
            (up - down) / ((x[i] + h) as f64 - (x[i] - h) as f64)
        };
        // Richardson extrapolation: the h^2 error terms of the two differences cancel.
        let fd = (4.0 * difference(h / 2.0) - difference(h)) / 3.0;
        all.push(fd);
        let a = analytic[i] as f64;
        let err = (fd - a).abs() / a.abs().max(1.0);
        worst = worst.max(err);
        assert!(
            err <= tol,
            "{name}[{i}]: finite difference {fd}, backward {a}"
        );
    }
    eprintln!("{name}: worst error {worst:.2e} over {} values", x.len());
    all
}

#[test]
fn linear_backward_matches_finite_differences() {
    let (tokens, din, dout) = (5, 6, 7);
    let x = random(tokens * din, 1.0, 1);
    let w = random(dout * din, 1.0, 2);
    let r = random(tokens * dout, 1.0, 3);
    let mut d_x = vec![0.0; x.len()];
    let mut d_w = vec![0.0; w.len()];
    linear_backward(&mut d_x, &mut d_w, &r, &x, &w, din, dout, false);
    let forward = |x: &[f32], w: &[f32]| {
        let mut out = vec![0.0; tokens * dout];
        linear_forward(&mut out, x, w, din, dout);
        weighted_sum(&out, &r)
    };
    check_gradient("linear x", &x, &d_x, 1e-2, 1e-3, |x| forward(x, &w));
    check_gradient("linear w", &w, &d_w, 1e-2, 1e-3, |w| forward(&x, w));
}

#[test]
fn embedding_backward_matches_finite_differences() {
    let (vocab, dim) = (5, 3);
    let table = random(vocab * dim, 1.0, 1);
    let tokens = [1u16, 4, 1, 0, 1];
    let r = random(tokens.len() * dim, 1.0, 2);
    let mut d_table = vec![0.0; table.len()];
    ops::embedding_backward(&mut d_table, &r, &tokens, dim);
    check_gradient("embedding", &table, &d_table, 1e-2, 1e-4, |t| {
        let mut out = vec![0.0; tokens.len() * dim];
        ops::embedding_forward(&mut out, t, &tokens, dim);
        weighted_sum(&out, &r)
    });
}

#[test]
fn rmsnorm_backward_matches_finite_differences() {
    let (rows, dim) = (4, 9);
    let x = random(rows * dim, 1.0, 1);
    let w: Vec<f32> = random(dim, 0.3, 2).iter().map(|v| v + 1.0).collect();
    let r = random(rows * dim, 1.0, 3);
    let forward = |x: &[f32], w: &[f32]| {
        let (mut out, mut rstd) = (vec![0.0; x.len()], vec![0.0; rows]);
        ops::rmsnorm_forward(&mut out, &mut rstd, x, w);
        weighted_sum(&out, &r)
    };
    let (mut out, mut rstd) = (vec![0.0; x.len()], vec![0.0; rows]);
    ops::rmsnorm_forward(&mut out, &mut rstd, &x, &w);
    // d_x is added to: start from ones and subtract them again.
    let mut d_x = vec![1.0; x.len()];
    let mut d_w = vec![0.0; dim];
    ops::rmsnorm_backward(&mut d_x, &mut d_w, &r, &x, &rstd, &w);
    d_x.iter_mut().for_each(|d| *d -= 1.0);
    check_gradient("rmsnorm x", &x, &d_x, 1e-2, 1e-3, |x| forward(x, &w));
    check_gradient("rmsnorm w", &w, &d_w, 1e-2, 1e-3, |w| forward(&x, w));
}

#[test]
fn rope_backward_matches_finite_differences() {
    let (seq_len, head_dim, heads) = (5, 6, 2);
    let width = heads * head_dim;
    let half = head_dim / 2;
    let (mut cos, mut sin) = (vec![0.0; seq_len * half], vec![0.0; seq_len * half]);
    ops::rope_tables(&mut cos, &mut sin, seq_len, head_dim);
    // Position 1, pair 1 turns by 10000^(-2/6) radians, as run.c's freq_cis.
    let angle = 1.0f32 / 10000f32.powf(2.0 / 6.0);
    assert!((cos[half + 1] - angle.cos()).abs() < 1e-7);
    let x = random(2 * seq_len * width, 1.0, 1); // two sequences
    let r = random(x.len(), 1.0, 2);
    let mut d_x = r.clone();
    ops::rope_backward(&mut d_x, &cos, &sin, head_dim, width);
    check_gradient("rope", &x, &d_x, 1e-2, 1e-3, |x| {
        let mut y = x.to_vec();
        ops::rope_forward(&mut y, &cos, &sin, head_dim, width);
        weighted_sum(&y, &r)
    });
}

#[test]
fn split_and_merge_heads_are_inverse_permutations() {
    let (batch, seq_len, heads, head_dim) = (2, 3, 4, 2);
    let x: Vec<f32> = (0..batch * seq_len * heads * head_dim)
        .map(|i| i as f32)
        .collect();
    let mut split = vec![0.0; x.len()];
    ops::split_heads(&mut split, &x, seq_len, heads, head_dim);
    // Batch 1, head 2, position 1, element 1 comes from token 1 * 3 + 1, column 2 * 2 + 1.
    let want = ((3 + 1) * heads * head_dim + 2 * head_dim + 1) as f32;
    assert_eq!(split[((4 + 2) * seq_len + 1) * head_dim + 1], want);
    let mut back = vec![0.0; x.len()];
    ops::merge_heads(&mut back, &split, seq_len, heads, head_dim);
    assert_eq!(back, x);
}

fn attention_check(dropout: f32) {
    let s = AttentionShape {
        batch: 2,
        seq_len: 5,
        heads: 4,
        kv_heads: 2,
        head_dim: 4,
    };
    let n = s.batch * s.seq_len;
    let q = random(n * s.heads * s.head_dim, 1.0, 1);
    let k = random(n * s.kv_heads * s.head_dim, 1.0, 2);
    let v = random(n * s.kv_heads * s.head_dim, 1.0, 3);
    let r = random(q.len(), 1.0, 4);
    let mask = Dropout::for_step(dropout, 5, 0, 0).mask(1);
    let forward = |q: &[f32], k: &[f32], v: &[f32]| {
        let (mut y, mut lse) = (vec![0.0; q.len()], vec![0.0; n * s.heads]);
        let mut scratch = vec![0.0; s.scratch_len()];
        ops::attention_forward(&mut y, &mut lse, &mut scratch, q, k, v, s, mask);
        (y, lse)
    };
    let (_, lse) = forward(&q, &k, &v);
    let (mut d_q, mut d_k, mut d_v) = (vec![0.0; q.len()], vec![0.0; k.len()], vec![0.0; v.len()]);
    let mut scratch = vec![0.0; s.scratch_len()];
    ops::attention_backward(
        &mut d_q,
        &mut d_k,
        &mut d_v,
        &mut scratch,
        &r,
        &q,
        &k,
        &v,
        &lse,
        s,
        mask,
    );
    let name = |t: &str| format!("attention {t} (dropout {dropout})");
    let obj = |q: &[f32], k: &[f32], v: &[f32]| weighted_sum(&forward(q, k, v).0, &r);
    check_gradient(&name("q"), &q, &d_q, 1e-2, 2e-3, |q| obj(q, &k, &v));
    check_gradient(&name("k"), &k, &d_k, 1e-2, 2e-3, |k| obj(&q, k, &v));
    check_gradient(&name("v"), &v, &d_v, 1e-2, 2e-3, |v| obj(&q, &k, v));
}

#[test]
fn attention_backward_matches_finite_differences() {
    attention_check(0.0);
    attention_check(0.3);
}

/// Causal grouped-query attention and its gradients written out in `f64`, position by
/// position: `(y, d_q, d_k, d_v)` for `q, d_y (B, H, T, hd)`, `k, v (B, H/rep, T, hd)`.
fn naive_attention(
    s: AttentionShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    d_y: &[f32],
) -> [Vec<f64>; 4] {
    let (t_len, hd) = (s.seq_len, s.head_dim);
    let scale = 1.0 / (hd as f64).sqrt();
    let mut y = vec![0.0; q.len()];
    let (mut d_q, mut d_k, mut d_v) = (vec![0.0; q.len()], vec![0.0; k.len()], vec![0.0; v.len()]);
    for b in 0..s.batch {
        for h in 0..s.heads {
            let g = b * s.kv_heads + h / (s.heads / s.kv_heads);
            let qr = |t: usize| (b * s.heads + h) * t_len * hd + t * hd;
            let kr = |t: usize| g * t_len * hd + t * hd;
            for t in 0..t_len {
                let sc: Vec<f64> = (0..=t)
                    .map(|j| {
                        (0..hd)
                            .map(|d| q[qr(t) + d] as f64 * k[kr(j) + d] as f64)
                            .sum::<f64>()
                            * scale
                    })
                    .collect();
                let max = sc.iter().cloned().fold(f64::MIN, f64::max);
                let z: f64 = sc.iter().map(|x| (x - max).exp()).sum();
                let p: Vec<f64> = sc.iter().map(|x| (x - max).exp() / z).collect();
                let da: Vec<f64> = (0..=t)
                    .map(|j| {
                        (0..hd)
                            .map(|d| d_y[qr(t) + d] as f64 * v[kr(j) + d] as f64)
                            .sum()
                    })
                    .collect();
                let p_da: f64 = p.iter().zip(&da).map(|(p, a)| p * a).sum();
                for j in 0..=t {
                    let ds = p[j] * (da[j] - p_da) * scale;
                    for d in 0..hd {
                        y[qr(t) + d] += p[j] * v[kr(j) + d] as f64;
                        d_q[qr(t) + d] += ds * k[kr(j) + d] as f64;
                        d_k[kr(j) + d] += ds * q[qr(t) + d] as f64;
                        d_v[kr(j) + d] += p[j] * d_y[qr(t) + d] as f64;
                    }
                }
            }
        }
    }
    [y, d_q, d_k, d_v]
}

/// The attention kernels against [`naive_attention`] at shapes that reach every block size of
/// the scores, a group of query rows cut short at the end, and each kind of head width.
#[test]
fn attention_matches_a_naive_reference_at_wider_shapes() {
    for (seq_len, heads, kv_heads, head_dim) in [(70, 4, 2, 8), (37, 2, 2, 48), (21, 2, 1, 12)] {
        let s = AttentionShape {
            batch: 2,
            seq_len,
            heads,
            kv_heads,
            head_dim,
        };
        let n = s.batch * seq_len;
        let q = random(n * heads * head_dim, 1.0, 1);
        let k = random(n * kv_heads * head_dim, 1.0, 2);
        let v = random(n * kv_heads * head_dim, 1.0, 3);
        let d_y = random(q.len(), 1.0, 4);
        let mut scratch = vec![0.0; s.scratch_len()];
        let (mut y, mut lse) = (vec![0.0; q.len()], vec![0.0; n * heads]);
        ops::attention_forward(&mut y, &mut lse, &mut scratch, &q, &k, &v, s, Mask::OFF);
        let (mut d_q, mut d_k, mut d_v) =
            (vec![0.0; q.len()], vec![0.0; k.len()], vec![0.0; v.len()]);
        ops::attention_backward(
            &mut d_q,
            &mut d_k,
            &mut d_v,
            &mut scratch,
            &d_y,
            &q,
            &k,
            &v,
            &lse,
            s,
            Mask::OFF,
        );
        let want = naive_attention(s, &q, &k, &v, &d_y);
        for (name, got, want) in [
            ("y", &y, &want[0]),
            ("d_q", &d_q, &want[1]),
            ("d_k", &d_k, &want[2]),
            ("d_v", &d_v, &want[3]),
        ] {
            for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
                assert!(
                    (g as f64 - w).abs() < 2e-5 * (1.0 + w.abs()),
                    "{name}[{i}] at {s:?}: {g} vs {w}"
                );
            }
        }
    }
}

#[test]
fn attention_is_causal_softmax_attention() {
    // One head, three positions: compare with the formula written out.
    let s = AttentionShape {
        batch: 1,
        seq_len: 3,
        heads: 1,
        kv_heads: 1,
        head_dim: 2,
    };
    let q = [0.5f32, -1.0, 1.0, 0.25, -0.5, 2.0];
    let k = [1.0f32, 0.0, 0.5, 1.5, -1.0, 0.75];
    let v = [1.0f32, 2.0, 3.0, -1.0, 0.5, 0.5];
    let (mut y, mut lse, mut scratch) = ([0.0f32; 6], [0.0f32; 3], vec![0.0f32; s.scratch_len()]);
    ops::attention_forward(
        &mut y,
        &mut lse,
        &mut scratch,
        &q,
        &k,
        &v,
        s,
        Dropout::OFF.mask(0),
    );
    for t in 0..3 {
        let scores: Vec<f64> = (0..=t)
            .map(|j| (q[2 * t] * k[2 * j] + q[2 * t + 1] * k[2 * j + 1]) as f64 / 2f64.sqrt())
            .collect();
        let z: f64 = scores.iter().map(|s| s.exp()).sum();
        for d in 0..2 {
            let want: f64 = (0..=t)
                .map(|j| scores[j].exp() / z * v[2 * j + d] as f64)
                .sum();
            assert!((y[2 * t + d] as f64 - want).abs() < 1e-6, "y[{t}][{d}]");
        }
        assert!((lse[t] as f64 - z.ln()).abs() < 1e-6);
    }
}

#[test]
fn swiglu_backward_matches_finite_differences() {
    let h1 = random(12, 2.0, 1);
    let h3 = random(12, 1.0, 2);
    let r = random(12, 1.0, 3);
    let (mut d_h1, mut d_h3) = (vec![0.0; 12], vec![0.0; 12]);
    ops::swiglu_backward(&mut d_h1, &mut d_h3, &r, &h1, &h3);
    let obj = |a: &[f32], b: &[f32]| {
        let mut out = vec![0.0; 12];
        ops::swiglu_forward(&mut out, a, b);
        weighted_sum(&out, &r)
    };
    check_gradient("swiglu h1", &h1, &d_h1, 1e-2, 1e-3, |a| obj(a, &h3));
    check_gradient("swiglu h3", &h3, &d_h3, 1e-2, 1e-3, |b| obj(&h1, b));
}

#[test]
fn residual_and_dropout_backward_match_finite_differences() {
    let x = random(50, 1.0, 1);
    let y = random(50, 1.0, 2);
    let r = random(50, 1.0, 3);
    let mask = Dropout::for_step(0.4, 1, 2, 3).mask(7);
    assert!((0..50).any(|i| mask.scale(i) == 0.0));
    let mut d_y = vec![0.0; 50];
    ops::residual_backward(&mut d_y, &r, mask);
    check_gradient("residual y", &y, &d_y, 1e-2, 1e-4, |y| {
        let mut out = vec![0.0; 50];
        ops::residual_forward(&mut out, &x, y, mask);
        weighted_sum(&out, &r)
    });
    let mut d_x = vec![0.0; 50];
    ops::dropout_backward(&mut d_x, &r, mask);
    check_gradient("dropout", &x, &d_x, 1e-2, 1e-4, |x| {
        let mut out = x.to_vec();
        ops::dropout_forward(&mut out, mask);
        weighted_sum(&out, &r)
    });
}

#[test]
fn cross_entropy_backward_matches_finite_differences() {
    let (rows, vocab) = (3, 7);
    let logits = random(rows * vocab, 2.0, 1);
    let targets = [2u16, 6, 0];
    let r = [0.5f32, -1.0, 2.0]; // a weight per row's loss: checks the scale too
    let obj = |logits: &[f32]| {
        let (mut losses, mut lse) = (vec![0.0; rows], vec![0.0; rows]);
        ops::cross_entropy_forward(&mut losses, &mut lse, logits, &targets, vocab);
        weighted_sum(&losses, &r)
    };
    // The gradient of sum_i r_i loss_i, row by row, through the per-row `scale`.
    let (mut losses, mut lse) = (vec![0.0; rows], vec![0.0; rows]);
    ops::cross_entropy_forward(&mut losses, &mut lse, &logits, &targets, vocab);
    let mut grad = logits.clone();
    for i in 0..rows {
        let row = &mut grad[i * vocab..][..vocab];
        ops::cross_entropy_backward(row, &lse[i..=i], &targets[i..=i], vocab, r[i]);
    }
    check_gradient("cross-entropy", &logits, &grad, 1e-2, 1e-3, obj);
    // And the loss itself: -log softmax at the target.
    let row = &logits[vocab..2 * vocab];
    let z: f64 = row.iter().map(|&x| (x as f64).exp()).sum();
    assert!((losses[1] as f64 - (z.ln() - row[6] as f64)).abs() < 1e-5);
}

#[test]
fn cross_entropy_backward_in_bf16_is_the_rounded_f32_gradient() {
    use crate::gemm::bf16_from_f32;
    // Rows not a multiple of a task's eight, a vocabulary not a multiple of any vector.
    let (rows, vocab) = (37, 517);
    let logits = random(rows * vocab, 4.0, 5);
    let targets: Vec<u16> = (0..rows).map(|i| (i * 97 % vocab) as u16).collect();
    let (mut losses, mut lse) = (vec![0.0; rows], vec![0.0; rows]);
    ops::cross_entropy_forward(&mut losses, &mut lse, &logits, &targets, vocab);
    let mut grad = logits.clone();
    ops::cross_entropy_backward(&mut grad, &lse, &targets, vocab, 0.25);
    let mut grad_bf16 = vec![0u16; rows * vocab];
    ops::cross_entropy_backward_bf16(&mut grad_bf16, &logits, &lse, &targets, vocab, 0.25);
    let want: Vec<u16> = grad.iter().map(|&g| bf16_from_f32(g)).collect();
    assert_eq!(grad_bf16, want);
}

/// The loss and its gradient made in one pass give the bits of the loss pass followed by the
/// gradient pass, in `f32` and in bfloat16.
#[test]
fn loss_with_gradient_is_loss_then_gradient() {
    let (rows, vocab) = (37, 517);
    let logits = random(rows * vocab, 4.0, 6);
    let targets: Vec<u16> = (0..rows).map(|i| (i * 89 % vocab) as u16).collect();
    let (mut losses, mut lse) = (vec![0.0; rows], vec![0.0; rows]);
    ops::cross_entropy_forward(&mut losses, &mut lse, &logits, &targets, vocab);
    let mut grad = logits.clone();
    ops::cross_entropy_backward(&mut grad, &lse, &targets, vocab, 0.3);
    let mut grad_bf16 = vec![0u16; rows * vocab];
    ops::cross_entropy_backward_bf16(&mut grad_bf16, &logits, &lse, &targets, vocab, 0.3);

    let (mut losses_1, mut lse_1, mut grad_1) = (vec![0.0; rows], vec![0.0; rows], logits.clone());
    ops::cross_entropy_with_gradient(&mut losses_1, &mut lse_1, &mut grad_1, &targets, vocab, 0.3);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&losses_1), bits(&losses));
    assert_eq!(bits(&lse_1), bits(&lse));
    assert_eq!(bits(&grad_1), bits(&grad));

    let (mut losses_2, mut lse_2) = (vec![0.0; rows], vec![0.0; rows]);
    let mut grad_bf16_2 = vec![0u16; rows * vocab];
    ops::cross_entropy_with_gradient_bf16(
        &mut losses_2,
        &mut lse_2,
        &mut grad_bf16_2,
        &logits,
        &targets,
        vocab,
        0.3,
    );
    assert_eq!(bits(&losses_2), bits(&losses));
    assert_eq!(bits(&lse_2), bits(&lse));
    assert_eq!(grad_bf16_2, grad_bf16);
}

fn tiny_config(shared: bool) -> Config {
    Config {
        dim: 16,
        hidden_dim: 24,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        vocab_size: 11,
        seq_len: 6,
        shared_classifier: shared,
    }
}

/// Random weights large enough that every gradient is well above rounding noise.
fn tiny_params(config: &Config, seed: u64) -> Params {
    let mut params = init_params(config, seed).unwrap();
    let noise = random(params.len(), 0.3, seed + 100);
    for ((info, _), _) in params.clone().iter().zip(0..) {
        let values = &mut params.data_mut()[info.range()];
        for (v, n) in values.iter_mut().zip(&noise[info.range()]) {
            *v = if info.is_matrix { *n } else { 1.0 + *n };
        }
    }
    params
}

fn tiny_batch(config: &Config, batch: usize, seq_len: usize) -> (Vec<u16>, Vec<u16>) {
    let mut rng = Rng::new(99);
    let tokens: Vec<u16> = (0..batch * seq_len + 1)
        .map(|_| (rng.next_u32() % config.vocab_size as u32) as u16)
        .collect();
    (tokens[..batch * seq_len].to_vec(), tokens[1..].to_vec())
}

fn model_gradient_check(shared: bool, dropout: f32) {
    let config = tiny_config(shared);
    let (batch, seq_len) = (2, 5);
    let params = tiny_params(&config, 3);
    let (inputs, targets) = tiny_batch(&config, batch, seq_len);
    let mut ws = Workspace::new(&config, batch, seq_len).unwrap();
    let drop = Dropout::for_step(dropout, 11, 1, 0);
    let mut grads = params.zeros_like().unwrap();
    let loss =
        forward_backward(&params, &mut grads, &mut ws, &inputs, &targets, drop, 1.0).unwrap();
    assert!(loss.is_finite() && loss > 0.0);
    // A second call adds its scaled gradient: 1 + 2 = 3 times the first.
    let mut thrice = grads.clone();
    forward_backward(&params, &mut thrice, &mut ws, &inputs, &targets, drop, 2.0).unwrap();
    for (t, g) in thrice.data().iter().zip(grads.data()) {
        assert!(
            (t - 3.0 * g).abs() <= 1e-7 + 1e-5 * g.abs(),
            "{t} vs 3 * {g}"
        );
    }
    let mut probe = params.clone();
    let mut probe_grads = params.zeros_like().unwrap();
    let mut objective = |values: &[f32]| {
        probe.data_mut().copy_from_slice(values);
        // The loss with the same dropout masks, unrounded.
        forward_backward(
            &probe,
            &mut probe_grads,
            &mut ws,
            &inputs,
            &targets,
            drop,
            0.0,
        )
        .unwrap();
        ws.mean_loss_f64()
    };
    let name = format!("model (shared {shared}, dropout {dropout})");
    let fd = check_gradient(
        &name,
        params.data(),
        grads.data(),
        1e-2,
        1e-3,
        &mut objective,
    );
    // Tensor by tensor, small gradients too: relative L2 error of the whole tensor (measured
    // at most 6e-4: the noise of f32 forward passes).
    for info in params.tensors() {
        let (a, f) = (&grads.data()[info.range()], &fd[info.range()]);
        let diff: f64 = a.iter().zip(f).map(|(&a, f)| (a as f64 - f).powi(2)).sum();
        let size: f64 = a.iter().map(|&a| (a as f64).powi(2)).sum();
        let rel = (diff / size).sqrt();
        assert!(
            rel < 2e-3,
            "{name} {}: relative error {rel:.2e}",
            info.full_name()
        );
    }
    for kind in [
        TensorKind::TokenEmbedding,
        TensorKind::Classifier,
        TensorKind::W2,
    ] {
        assert!(grads.get(kind, 1).iter().any(|&g| g != 0.0), "{kind:?}");
    }
}

#[test]
fn model_backward_matches_finite_differences() {
    model_gradient_check(true, 0.0);
    model_gradient_check(false, 0.0);
    model_gradient_check(true, 0.25);
}

#[test]
fn loss_of_a_uniform_model_is_log_vocab() {
    // All-zero matrices give equal logits: the loss is ln(vocab) for any tokens.
    let config = tiny_config(false);
    let params = Params::zeros(&config).unwrap();
    let mut ws = Workspace::new(&config, 2, 5).unwrap();
    let (inputs, targets) = tiny_batch(&config, 2, 5);
    let l = loss(&params, &mut ws, &inputs, &targets).unwrap();
    assert!((l - (11f32).ln()).abs() < 1e-6, "{l}");
}

#[test]
fn bad_batches_are_errors() {
    let config = tiny_config(true);
    let params = tiny_params(&config, 1);
    let mut grads = params.zeros_like().unwrap();
    let mut ws = Workspace::new(&config, 2, 5).unwrap();
    let (inputs, mut targets) = tiny_batch(&config, 2, 5);
    assert!(loss(&params, &mut ws, &inputs[1..], &targets[1..]).is_err());
    targets[3] = 11;
    let err = loss(&params, &mut ws, &inputs, &targets).unwrap_err();
    assert!(err.to_string().contains("token id 11"), "{err}");
    targets[3] = 0;
    let bad_dropout = Dropout { p: 1.0, seed: 0 };
    assert!(forward_backward(
        &params,
        &mut grads,
        &mut ws,
        &inputs,
        &targets,
        bad_dropout,
        1.0
    )
    .is_err());
    assert!(Workspace::new(&config, 2, 7).is_err()); // beyond the context of 6
    assert!(Workspace::new(&config, 0, 5).is_err());
    let other = Workspace::new(&tiny_config(false), 2, 5).unwrap();
    let mut other = other;
    assert!(loss(&params, &mut other, &inputs, &targets).is_err());
}

#[cfg(feature = "parallel")]
#[test]
fn results_do_not_depend_on_the_thread_count() {
    // Large enough that every parallel loop does split.
    let config = Config {
        dim: 64,
        hidden_dim: 96,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        vocab_size: 300,
        seq_len: 64,
        shared_classifier: true,
    };
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut params = init_params(&config, 5).unwrap();
            let mut grads = params.zeros_like().unwrap();
            let mut ws = Workspace::new(&config, 4, 64).unwrap();
            let (inputs, targets) = tiny_batch(&config, 4, 64);
            let drop = Dropout::for_step(0.1, 1, 0, 0);
            let l = forward_backward(&params, &mut grads, &mut ws, &inputs, &targets, drop, 1.0);
            let norm = clip_grads(&mut grads, 0.5);
            let mut adam = AdamW::new(&params).unwrap();
            adam.step(&mut params, &grads, 1e-3, &AdamWConfig::default())
                .unwrap();
            (
                l.unwrap(),
                norm,
                grads.data().to_vec(),
                params.data().to_vec(),
            )
        })
    };
    let (one, two) = (run(1), run(2));
    assert_eq!(one.0.to_bits(), two.0.to_bits());
    assert_eq!(one.1.to_bits(), two.1.to_bits());
    assert!(one
        .2
        .iter()
        .zip(&two.2)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
    assert!(one
        .3
        .iter()
        .zip(&two.3)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
}

#[test]
fn init_follows_model_py() {
    let config = Config {
        dim: 64,
        hidden_dim: 128,
        n_layers: 8,
        n_heads: 4,
        n_kv_heads: 4,
        vocab_size: 256,
        seq_len: 16,
        shared_classifier: true,
    };
    let params = init_params(&config, 7).unwrap();
    let std =
        |v: &[f32]| (v.iter().map(|&x| x as f64 * x as f64).sum::<f64>() / v.len() as f64).sqrt();
    let all = |kind| -> Vec<f32> { (0..8).flat_map(|l| params.get(kind, l).to_vec()).collect() };
    let near = |got: f64, want: f64| assert!((got / want - 1.0).abs() < 0.03, "{got} vs {want}");
    near(std(&all(TensorKind::Wq)), 0.02);
    near(std(&all(TensorKind::W1)), 0.02);
    near(std(params.get(TensorKind::TokenEmbedding, 0)), 0.02);
    near(std(&all(TensorKind::Wo)), 0.02 / 4.0);
    near(std(&all(TensorKind::W3)), 0.02 / 4.0);
    assert!(all(TensorKind::FfnNorm).iter().all(|&x| x == 1.0));
    assert!(params
        .get(TensorKind::FinalNorm, 0)
        .iter()
        .all(|&x| x == 1.0));
    let mean: f64 =
        all(TensorKind::W2).iter().map(|&x| x as f64).sum::<f64>() / (8.0 * 64.0 * 128.0);
    assert!(mean.abs() < 2e-4, "{mean}");
    assert_eq!(init_params(&config, 7).unwrap().data(), params.data());
    assert_ne!(init_params(&config, 8).unwrap().data(), params.data());
    assert!(init_params(&config, 0)
        .unwrap()
        .data()
        .iter()
        .any(|&x| x != 0.0 && x != 1.0));
}

#[test]
fn adamw_follows_pytorch_formulas() {
    let config = tiny_config(false);
    let mut params = tiny_params(&config, 1);
    let start = params.clone();
    let hyper = AdamWConfig {
        beta1: 0.8,
        beta2: 0.9,
        eps: 1e-3,
        weight_decay: 0.5,
    };
    let mut adam = AdamW::new(&params).unwrap();
    let mut grads = params.zeros_like().unwrap();
    let g_steps: Vec<Vec<f32>> = (0..3).map(|s| random(params.len(), 1.0, 50 + s)).collect();
    let lrs = [0.1f64, 0.05, 0.02];
    for (g, &lr) in g_steps.iter().zip(&lrs) {
        grads.data_mut().copy_from_slice(g);
        adam.step(&mut params, &grads, lr as f32, &hyper).unwrap();
    }
    assert_eq!(adam.step_count(), 3);
    // The same three steps in f64, written from the formulas of torch.optim.AdamW's docs.
    for info in start.tensors() {
        let wd = if info.is_matrix { 0.5 } else { 0.0 };
        for i in info.range() {
            let (mut p, mut m, mut v) = (start.data()[i] as f64, 0.0f64, 0.0f64);
            for (t, (g, &lr)) in g_steps.iter().zip(&lrs).enumerate() {
                let g = g[i] as f64;
                let t = t as i32 + 1;
                p -= lr * wd * p;
                m = 0.8 * m + 0.2 * g;
                v = 0.9 * v + 0.1 * g * g;
                let m_hat = m / (1.0 - 0.8f64.powi(t));
                let v_hat = v / (1.0 - 0.9f64.powi(t));
                p -= lr * m_hat / (v_hat.sqrt() + 1e-3);
            }
            let got = params.data()[i] as f64;
            assert!(
                (got - p).abs() < 1e-5 * (1.0 + p.abs()),
                "{} [{i}]: {got} vs {p}",
                info.full_name()
            );
            let m_got = adam.m().data()[i] as f64;
            assert!((m_got - m).abs() < 1e-6 * (1.0 + m.abs()));
            assert!((adam.v().data()[i] as f64 - v).abs() < 1e-6 * (1.0 + v));
        }
    }
}

#[test]
fn clipping_scales_to_the_max_norm() {
    let config = tiny_config(true);
    let mut grads = Params::zeros(&config).unwrap();
    grads.data_mut()[0] = 3.0;
    grads.data_mut()[5] = -4.0;
    assert_eq!(grad_norm(&grads), 5.0);
    assert_eq!(clip_grads(&mut grads, 10.0), 5.0);
    assert_eq!(grads.data()[0], 3.0); // under the limit: untouched
    assert_eq!(clip_grads(&mut grads, 0.0), 5.0); // 0 = off
    assert_eq!(clip_grads(&mut grads, 1.0), 5.0);
    assert!((grads.data()[5] + 4.0 / (5.0 + 1e-6)).abs() < 1e-7);
    assert!((grad_norm(&grads) - 1.0).abs() < 1e-6);
}

#[test]
fn learning_rate_is_train_py_get_lr() {
    let s = Schedule {
        learning_rate: 5e-4,
        min_lr: 1e-5,
        warmup_iters: 10,
        lr_decay_iters: 110,
        decay_lr: true,
    };
    let close = |got: f32, want: f64| assert!((got as f64 - want).abs() < 1e-10, "{got} vs {want}");
    close(learning_rate(0, &s), 0.0); // warmup starts at 0
    close(learning_rate(4, &s), 2e-4);
    close(learning_rate(10, &s), 5e-4);
    close(learning_rate(60, &s), 1e-5 + 0.5 * (5e-4 - 1e-5)); // halfway: cos(pi/2) = 0
    close(
        learning_rate(35, &s),
        1e-5 + 0.5 * (1.0 + (std::f64::consts::PI / 4.0).cos()) * 4.9e-4,
    );
    close(learning_rate(110, &s), 1e-5);
    close(learning_rate(1000, &s), 1e-5);
    close(
        learning_rate(
            3,
            &Schedule {
                decay_lr: false,
                ..s
            },
        ),
        5e-4,
    );
    let flat = Schedule {
        warmup_iters: 0,
        lr_decay_iters: 0,
        ..s
    };
    close(learning_rate(0, &flat), 5e-4);
    close(learning_rate(1, &flat), 1e-5);
}

/// `a` rounded to bfloat16 and back.
fn bf16_rounded(a: &[f32]) -> Vec<f64> {
    use crate::gemm::{bf16_from_f32, bf16_to_f32};
    a.iter()
        .map(|&x| bf16_to_f32(bf16_from_f32(x)) as f64)
        .collect()
}

/// `sum_p a[i * si + p * sp] * b[j * sj + p * sq]` over `p < len`, in f64, with the sum of the
/// terms' magnitudes (the scale of an f32 sum's rounding error).
type Strides = (usize, usize, usize, usize);
fn dot64(
    a: &[f64],
    b: &[f64],
    (i, j): (usize, usize),
    (si, sp, sj, sq): Strides,
    len: usize,
) -> (f64, f64) {
    (0..len).fold((0.0, 0.0), |(s, m), p| {
        let t = a[i * si + p * sp] * b[j * sj + p * sq];
        (s + t, m + t.abs())
    })
}

/// The rounded inputs are reused only for the very slice they were made from, within one pass:
/// a product of another slice in the same slot, or of the same slice changed in place before
/// the next pass, sees the new values.
#[test]
fn bf16_inputs_are_rounded_again_for_new_values() {
    use super::linear::{Bf16Copies, Layers};
    use crate::gemm::{matmul_nt_bf16, to_bf16};
    let config = tiny_config(true);
    let mut params = tiny_params(&config, 3);
    let (dim, n) = (config.dim, 12);
    let shape = (config.n_layers, config.dim, config.hidden_dim);
    let mut copies = Bf16Copies::new(params.len(), shape, n, n * config.vocab_size).unwrap();
    let wq = (TensorKind::Wq, 1);
    let wk = (TensorKind::Wk, 1);
    let want = |params: &crate::params::Params, x: &[f32], w: (TensorKind, usize), out_dim| {
        let (mut xb, mut wb) = (vec![0u16; x.len()], vec![0u16; out_dim * dim]);
        to_bf16(&mut xb, x);
        to_bf16(&mut wb, params.get(w.0, w.1));
        let mut out = vec![0.0; n * out_dim];
        matmul_nt_bf16(&mut out, &xb, &wb, n, dim, out_dim, false);
        out
    };
    let (mut x, y) = (random(n * dim, 1.0, 6), random(n * dim, 1.0, 7));
    let kv = config.kv_dim();
    for pass in 0..2 {
        copies.round_weights(&params);
        let mut layers = Layers {
            params: &params,
            bf16: Some(&mut copies),
        };
        let (mut q, mut k) = (vec![0.0; n * dim], vec![0.0; n * kv]);
        layers.forward(&mut q, &x, wq, dim, dim);
        layers.forward(&mut k, &y, wk, dim, kv);
        assert_eq!(q, want(&params, &x, wq, dim), "pass {pass}: wq");
        assert_eq!(
            k,
            want(&params, &y, wk, kv),
            "pass {pass}: wk of another input"
        );
        layers.forward(&mut k, &x, wk, dim, kv);
        assert_eq!(k, want(&params, &x, wk, kv), "pass {pass}: wk");
        // The next pass: new weights, and new values in the same slice.
        x.iter_mut().for_each(|v| *v = -0.5 * *v + 0.25);
        params.data_mut().iter_mut().for_each(|v| *v *= 1.5);
    }
}

#[test]
fn bf16_linear_layer_is_f32_maths_on_rounded_operands() {
    use super::linear::{Bf16Copies, Layers};
    use crate::gemm::{matmul_nn_bf16, matmul_nt_bf16, matmul_tn_bf16, to_bf16};
    let config = tiny_config(true);
    let params = tiny_params(&config, 3);
    let (din, dout, n) = (config.dim, config.hidden_dim, 20);
    let x = random(n * din, 1.0, 4);
    let d_out = random(n * dout, 1.0, 5);
    let w1 = (TensorKind::W1, 1);
    let shape = (config.n_layers, config.dim, config.hidden_dim);
    let mut copies = Bf16Copies::new(params.len(), shape, n, n * dout).unwrap();
    copies.round_weights(&params);
    let mut layers = Layers {
        params: &params,
        bf16: Some(&mut copies),
    };
    let mut out = vec![0.0; n * dout];
    layers.forward(&mut out, &x, w1, din, dout);
    let (mut d_x, mut d_w) = (vec![0.0; n * din], vec![0.5; dout * din]);
    layers.backward(&mut d_x, &mut d_w, &d_out, &x, w1, din, dout, false);

    // Against f64 sums of the rounded operands: equal up to f32 summation error, while the
    // unrounded operands give results further off than that somewhere.
    let w = params.get(w1.0, w1.1);
    let (xr, wr, dr) = (bf16_rounded(&x), bf16_rounded(w), bf16_rounded(&d_out));
    let (x64, w64): (Vec<f64>, Vec<f64>) = (
        x.iter().map(|&v| v as f64).collect(),
        w.iter().map(|&v| v as f64).collect(),
    );
    let mut rounding_mattered = false;
    for t in 0..n {
        for o in 0..dout {
            let (exact, scale) = dot64(&xr, &wr, (t, o), (din, 1, din, 1), din);
            let got = out[t * dout + o] as f64;
            assert!(
                (got - exact).abs() <= 1e-6 * scale,
                "out[{t},{o}] {got} vs {exact}"
            );
            let (unrounded, _) = dot64(&x64, &w64, (t, o), (din, 1, din, 1), din);
            rounding_mattered |= (unrounded - exact).abs() > 1e-5 * scale;
        }
        for i in 0..din {
            let (exact, scale) = dot64(&dr, &wr, (t, i), (dout, 1, 1, din), dout);
            let got = d_x[t * din + i] as f64;
            assert!(
                (got - exact).abs() <= 1e-6 * scale,
                "d_x[{t},{i}] {got} vs {exact}"
            );
        }
    }
    for o in 0..dout {
        for i in 0..din {
            let (exact, scale) = dot64(&dr, &xr, (o, i), (1, dout, 1, din), n);
            let got = d_w[o * din + i] as f64 - 0.5;
            assert!(
                (got - exact).abs() <= 1e-6 * (scale + 0.5),
                "d_w[{o},{i}] {got} vs {exact}"
            );
        }
    }
    assert!(rounding_mattered, "the operands were not rounded");

    // And bit for bit what the bfloat16 kernels give on the rounded operands.
    let bits = |a: &[f32]| -> Vec<u16> {
        let mut r = vec![0; a.len()];
        to_bf16(&mut r, a);
        r
    };
    let (xb, wb, db) = (bits(&x), bits(w), bits(&d_out));
    let mut expect = vec![0.0; n * dout];
    matmul_nt_bf16(&mut expect, &xb, &wb, n, din, dout, false);
    assert_eq!(expect, out);
    let mut expect = vec![0.0; n * din];
    matmul_nn_bf16(&mut expect, &db, &wb, n, dout, din, false);
    assert_eq!(expect, d_x);
    let mut expect = vec![0.5; dout * din];
    matmul_tn_bf16(&mut expect, &db, &xb, dout, n, din, true);
    assert_eq!(expect, d_w);
}

#[test]
fn a_bf16_step_is_close_to_the_f32_step() {
    let config = Config {
        dim: 64,
        hidden_dim: 172,
        n_layers: 2,
        n_heads: 8,
        n_kv_heads: 4,
        vocab_size: 512,
        seq_len: 32,
        shared_classifier: true,
    };
    let params = init_params(&config, 8).unwrap();
    let (inputs, targets) = tiny_batch(&config, 4, 32);
    let step = |precision: Precision| {
        let mut grads = params.zeros_like().unwrap();
        let mut ws = Workspace::with_precision(&config, 4, 32, precision).unwrap();
        assert_eq!(ws.precision(), precision);
        let loss = forward_backward(
            &params,
            &mut grads,
            &mut ws,
            &inputs,
            &targets,
            Dropout::OFF,
            1.0,
        );
        (loss.unwrap(), grads)
    };
    let ((loss32, g32), (loss16, g16)) = (step(Precision::F32), step(Precision::Bf16));
    // bfloat16 keeps 8 significant bits (relative rounding 2^-9 = 0.2%): the loss, a mean over
    // many products, moves by far less; each gradient tensor within a few percent in norm.
    eprintln!("loss f32 {loss32}, bf16 {loss16}");
    assert!(loss16 != loss32 && (loss16 - loss32).abs() <= 1e-3 * loss32);
    for ((info, a), (_, b)) in g32.iter().zip(g16.iter()) {
        let diff: f64 = a
            .iter()
            .zip(b)
            .map(|(&x, &y)| ((x - y) as f64).powi(2))
            .sum();
        let norm: f64 = a.iter().map(|&x| (x as f64).powi(2)).sum();
        let rel = (diff / norm).sqrt();
        assert!(
            rel < 0.03,
            "{}: relative difference {rel}",
            info.full_name()
        );
    }
}
