//! llama2.c's own test: stories260K must print exactly llama2.c's expected text.

mod common;

use common::*;

fn run_and_compare(extra: &[&str], expected_file: &str) {
    let model = stories260k();
    let tok = tok512();
    let mut args = vec![
        model.to_str().unwrap(),
        "-z",
        tok.to_str().unwrap(),
        "--exact",
    ];
    args.extend_from_slice(extra);
    let output = llama2_str(&args);
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let expected = std::fs::read(repo(expected_file)).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&expected)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("achieved tok/s: "), "stderr: {stderr}");
}

#[test]
fn greedy_200_steps_matches_llama2c() {
    run_and_compare(
        &["-t", "0.0", "-n", "200"],
        "tests/expected/stories260K_t0.0_n200.txt",
    );
}

#[test]
fn seeded_top_p_sample_matches_llama2c() {
    run_and_compare(
        &["-t", "1.0", "-p", "0.9", "-s", "133742"],
        "tests/expected/stories260K_t1.0_p0.9_s133742.txt",
    );
}
