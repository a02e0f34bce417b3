//! The sampler's comparisons, pinned to `run.c`'s. Each case uses dyadic probabilities (sums of
//! powers of two, so every sum is exact in `f32`) placed where the alternative comparison, or
//! sort, would pick a different token. The expected tokens were printed by `run.c`'s own
//! `sample_topp` and `sample_mult` (commit 350e04f, gcc 12.2 `-O3`, glibc 2.36) called on these
//! very arrays and coins.

use llama2::sampler::{argmax, sample_multinomial, sample_top_p};

fn top_p(probabilities: &[f32], p: f32, coin: f32) -> u32 {
    sample_top_p(probabilities, p, coin, &mut Vec::new())
}

#[test]
fn the_nucleus_ends_where_the_sum_exceeds_top_p_not_where_it_reaches_it() {
    // Sorted: 0.5 (1), 0.25 (3), 0.125 (0), 0.125 (2). The sum reaches 0.75 after two tokens
    // but exceeds it only after three, so the nucleus is {1, 3, 0} and its sum 0.875: the coin
    // 0.99 lands on the third (with `>=` the nucleus would stop at {1, 3} and give 3).
    let probabilities = [0.125, 0.5, 0.125, 0.25];
    assert_eq!(top_p(&probabilities, 0.75, 0.99), 0);
}

#[test]
fn tokens_exactly_at_the_cutoff_stay_candidates() {
    // The cutoff is (1 - 0.75) / (5 - 1) = 0.0625 exactly. Kept (`>=`), the four tokens at it
    // join the nucleus after 0.75 and a high coin picks the first of them; dropped (`>`), only
    // token 1 would remain.
    let probabilities = [0.0625, 0.75, 0.0625, 0.0625, 0.0625];
    assert_eq!(top_p(&probabilities, 0.75, 0.99), 0);
    assert_eq!(top_p(&probabilities, 0.75, 0.5), 1);
}

#[test]
fn a_coin_on_a_boundary_of_the_nucleus_goes_to_the_next_token() {
    // Nucleus 0.5 (1), 0.25 (0), 0.25 (2), sum 1; the coin 0.5 makes r = 0.5, exactly the first
    // cumulative sum: `r < cdf` moves on to token 0 (`<=` would stop at token 1).
    assert_eq!(top_p(&[0.25, 0.5, 0.25], 0.9, 0.5), 0);
}

#[test]
fn a_coin_on_a_boundary_of_the_distribution_goes_to_the_next_token() {
    // `coin < cdf`: a coin equal to a cumulative sum belongs to the next token.
    let probabilities = [0.25, 0.5, 0.25];
    assert_eq!(sample_multinomial(&probabilities, 0.25), 1);
    assert_eq!(sample_multinomial(&probabilities, 0.75), 2);
    assert_eq!(sample_multinomial(&probabilities, 0.0), 0);
}

/// Sorting the candidates: `run.c` calls `qsort`, which glibc implements as a merge sort
/// whenever it can get a buffer (always, at these sizes), so it is stable: equal probabilities
/// keep the order of their token ids. The crate sorts stably too. 33 candidates: more than
/// the 20 below which Rust's unstable sort falls back to an insertion sort (stable by
/// accident), so an unstable sort here does reorder them.
#[test]
fn equal_probabilities_keep_their_token_order() {
    // 0.5 at token 40, 1/64 at 32 scattered tokens, 0 elsewhere (below the cutoff).
    let mut probabilities = [0.0f32; 64];
    probabilities[40] = 0.5;
    let equal: Vec<usize> = (5..10).chain((11..64).step_by(2)).collect();
    assert_eq!(equal.len(), 32);
    for &i in &equal {
        probabilities[i] = 1.0 / 64.0;
    }
    // The nucleus for 0.75 is token 40 and the first 17 equal tokens (sum 0.765625). Aim the
    // coin at the middle of each candidate's interval; run.c printed these tokens.
    let printed_by_run_c = [
        40, 5, 6, 7, 8, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31, 33,
    ];
    for (j, &expected) in printed_by_run_c.iter().enumerate() {
        let target = if j == 0 {
            0.25
        } else {
            0.5 + (j as f32 - 0.5) / 64.0
        };
        let coin = target / 0.765625;
        assert_eq!(top_p(&probabilities, 0.75, coin), expected, "candidate {j}");
    }
}

#[test]
fn greedy_takes_the_first_of_equal_maxima() {
    assert_eq!(argmax(&[0.25, 0.5, 0.125, 0.5]), 1);
}
