//! Int8 (version 2) models: identical output to llama2.c's runq.c where groups align with rows,
//! float maths where they straddle rows, and `llama2 quantize`.

mod common;

use common::*;
use llama2::checkpoint::Format;
use llama2::convert::{write_float, write_int8, FloatTensors};
use llama2::{evaluate, Generator, Model, Sampler, Tokenizer};

fn runq_fixture(file: &str) -> std::path::PathBuf {
    repo(&format!("tests/fixtures/runq/{file}"))
}

const STORIES_GS4: &str = "stories260K-q80-gs4.bin";
const RANDOM_GS48: &str = "random96-q80-gs48.bin";

/// (expected output, model, flags): see tests/fixtures/runq/README.md.
const RUNQ_CASES: &[(&str, &str, &[&str])] = &[
    ("stories_t0_n200", STORIES_GS4, &["-t", "0", "-n", "200"]),
    (
        "stories_t1_p0.9_s133742",
        STORIES_GS4,
        &["-t", "1", "-p", "0.9", "-s", "133742"],
    ),
    (
        "stories_prompt_s42",
        STORIES_GS4,
        &[
            "-t",
            "1",
            "-p",
            "0.9",
            "-s",
            "42",
            "-n",
            "120",
            "-i",
            "One day, Lily met a Shoggoth",
        ],
    ),
    (
        "stories_t0.8_p0.95_s7",
        STORIES_GS4,
        &[
            "-t",
            "0.8",
            "-p",
            "0.95",
            "-s",
            "7",
            "-i",
            "Tim and his dog",
        ],
    ),
    (
        "stories_multinomial_s1234",
        STORIES_GS4,
        &["-t", "1", "-p", "0", "-s", "1234", "-n", "150"],
    ),
    (
        "stories_t0_whole_context",
        STORIES_GS4,
        &["-t", "0", "-n", "0", "-i", "Once upon a time"],
    ),
    (
        "random_t1_s5",
        RANDOM_GS48,
        &["-t", "1", "-s", "5", "-n", "64"],
    ),
    (
        "random_prompt_s99",
        RANDOM_GS48,
        &[
            "-t", "0.9", "-p", "0.9", "-s", "99", "-n", "64", "-i", "The cat",
        ],
    ),
    (
        "random_t0",
        RANDOM_GS48,
        &["-t", "0", "-n", "64", "-i", "Hello"],
    ),
];

#[test]
fn row_aligned_int8_models_print_exactly_what_runq_prints() {
    let tok = tok512();
    for &(expected, model, flags) in RUNQ_CASES {
        let model = runq_fixture(model);
        let mut args = vec![
            model.to_str().unwrap(),
            "-z",
            tok.to_str().unwrap(),
            "--exact",
        ];
        args.extend_from_slice(flags);
        let output = llama2_str(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{expected}: {stderr}");
        let wanted = std::fs::read(runq_fixture(&format!("expected/{expected}.txt"))).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&wanted),
            "{expected}"
        );
    }
}

#[test]
fn our_quantizer_writes_export_py_bytes() {
    let float = Model::open(stories260k())
        .unwrap()
        .with_arithmetic(llama2::Arithmetic::Exact);
    let tensors = FloatTensors::from_model(&float);
    // llama2.c's own export of this model, group size 8 (groups straddle rows).
    let mut ours = Vec::new();
    write_int8(&mut ours, &tensors, 8).unwrap();
    assert!(ours == std::fs::read(stories260k_q8()).unwrap());
    // The numpy export at group size 4 (whose largest error it also printed: 0.005558222532...),
    // through the command line's default choice.
    let dir = TempDir::new("quantize-bytes");
    let out = dir.path("q.bin");
    let output = llama2(
        &[
            "quantize".as_ref(),
            stories260k().as_os_str(),
            out.as_os_str(),
        ],
        b"",
    );
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!(
            "wrote {}: group size 4, largest quantization error 0.0055582225\n",
            out.display()
        )
    );
    assert!(std::fs::read(&out).unwrap() == std::fs::read(runq_fixture(STORIES_GS4)).unwrap());
}

/// Greedy text of `steps` positions from an empty prompt.
fn greedy_story(model: &Model, steps: usize) -> String {
    let tokenizer = Tokenizer::open(tok512(), 512).unwrap();
    let sampler = Sampler::new(0.0, 0.9, 1).unwrap();
    let mut text = Vec::new();
    for token in Generator::new(model, &tokenizer, sampler, b"", steps).unwrap() {
        text.extend_from_slice(token.unwrap().printable());
    }
    String::from_utf8(text).unwrap()
}

#[test]
fn straddling_groups_tell_the_story_of_the_dequantized_float_model() {
    // stories260K-q8.bin: group size 8, hidden_dim 172, so w2's rows start mid-group.
    let int8 = Model::open(stories260k_q8())
        .unwrap()
        .with_arithmetic(llama2::Arithmetic::Exact);
    assert_eq!(int8.format(), Format::Int8V2 { group_size: 8 });
    let mut float_bytes = Vec::new();
    write_float(
        &mut float_bytes,
        &FloatTensors::from_model(&int8),
        Format::Float32V1,
    )
    .unwrap();
    let dequantized = Model::from_bytes(float_bytes)
        .unwrap()
        .with_arithmetic(llama2::Arithmetic::Exact);
    let story = greedy_story(&dequantized, 200);
    assert_eq!(greedy_story(&int8, 200), story);
    // The same through the command line, which prints it with a newline.
    let output = llama2_str(&[
        stories260k_q8().to_str().unwrap(),
        "-z",
        tok512().to_str().unwrap(),
        "--exact",
        "-t",
        "0",
        "-n",
        "200",
    ]);
    assert_eq!(String::from_utf8_lossy(&output.stdout), story + "\n");
}

#[test]
fn quantized_model_stays_close_to_the_float_one() {
    let float = Model::open(stories260k())
        .unwrap()
        .with_arithmetic(llama2::Arithmetic::Exact);
    let dir = TempDir::new("quantize-close");
    let out = dir.path("q.bin");
    let quantized =
        llama2::convert::quantize_to_file(&float, &out, None).expect("stories260K quantizes");
    assert_eq!(quantized.group_size, 4);
    assert!(quantized.max_error < 0.01, "{quantized:?}");
    let int8 = Model::open(&out)
        .unwrap()
        .with_arithmetic(llama2::Arithmetic::Exact);

    // Logits along a story stay within a small fraction of their spread.
    let tokenizer = Tokenizer::open(tok512(), 512).unwrap();
    let tokens = tokenizer
        .encode(b"Once upon a time, there was a little dog.", true, false)
        .unwrap();
    let (mut fs, mut qs) = (float.new_state().unwrap(), int8.new_state().unwrap());
    for (pos, &token) in tokens.iter().enumerate() {
        let f = float.forward(&mut fs, token, pos).unwrap().to_vec();
        let q = int8.forward(&mut qs, token, pos).unwrap();
        let spread = f.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let worst = f
            .iter()
            .zip(q.iter())
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst < 0.05 * spread, "position {pos}: {worst} of {spread}");
    }

    // And so does the loss on a text.
    let text = std::fs::read(repo("tests/expected/stories260K_t0.0_n200.txt")).unwrap();
    let f = evaluate(&float, &tokenizer, &text).unwrap();
    let q = evaluate(&int8, &tokenizer, &text).unwrap();
    assert_eq!(f.tokens, q.tokens);
    assert!((f.loss - q.loss).abs() < 0.005, "{f:?} vs {q:?}");
}

#[test]
fn quantize_command_errors_are_one_line() {
    let dir = TempDir::new("quantize-errors");
    let out = dir.path("out.bin");
    let (float, int8) = (stories260k(), stories260k_q8());
    let (float, int8, out_s) = (
        float.to_str().unwrap(),
        int8.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    let unwritable = dir.path("missing-dir/out.bin");
    let cases: &[(&[&str], &str)] = &[
        (&["quantize"], "expected an input and an output path"),
        (&["quantize", float], "expected an input and an output path"),
        (&["quantize", float, out_s, "extra"], "expected an input"),
        (&["quantize", float, out_s, "--group-size"], "needs a value"),
        (
            &["quantize", float, out_s, "--group-size", "x"],
            "not a valid number",
        ),
        (
            &["quantize", float, out_s, "--group-size", "0"],
            "group size must be at least 1",
        ),
        (
            &["quantize", float, out_s, "--group-size", "8"],
            "use a divisor of 4",
        ),
        (
            &["quantize", float, out_s, "--bits", "4"],
            "unknown flag --bits",
        ),
        (&["quantize", int8, out_s], "already an int8"),
        (
            &["quantize", "no-such-model.bin", out_s],
            "no-such-model.bin",
        ),
        (
            &["quantize", float, unwritable.to_str().unwrap()],
            "missing-dir",
        ),
    ];
    for &(args, expected) in cases {
        assert_clean_failure(&llama2_str(args), expected);
    }
    assert_eq!(
        std::fs::read_dir(&dir.0).unwrap().count(),
        0,
        "no files left behind"
    );
}

#[test]
fn quantizing_a_model_onto_its_own_path_is_safe() {
    let dir = TempDir::new("quantize-in-place");
    let path = dir.path("model.bin");
    std::fs::copy(stories260k(), &path).unwrap();
    let output = llama2(
        &["quantize".as_ref(), path.as_os_str(), path.as_os_str()],
        b"",
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(std::fs::read(&path).unwrap() == std::fs::read(runq_fixture(STORIES_GS4)).unwrap());
    assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 1);
}
