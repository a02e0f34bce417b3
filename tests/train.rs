//! `llama2 train` end to end, through the binary: log.tsv's rows, the first evaluation against
//! the inference forward pass, stop-and-resume and 1-versus-2-thread byte identity, fine-tuning,
//! and every bad input refused before training starts.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{llama2_str, stories260k, stories260k_q8, tok512, TempDir};
use llama2::{Generator, Model, Sampler, Tokenizer};

/// Stories sampled from stories260K, as a pretokenized file would hold them: each story is BOS
/// followed by its tokens.
fn story_tokens(stories: usize, seed: u64) -> Vec<u16> {
    let model = Model::open(stories260k()).unwrap();
    let tokenizer = Tokenizer::open(tok512(), 512).unwrap();
    let mut ids = Vec::new();
    for s in 0..stories as u64 {
        let sampler = Sampler::new(1.0, 0.9, seed + s).unwrap();
        ids.push(1);
        for token in Generator::new(&model, &tokenizer, sampler, b"", 256).unwrap() {
            ids.push(token.unwrap().id as u16);
        }
    }
    ids
}

fn write_tokens(path: &Path, ids: &[u16]) {
    let bytes: Vec<u8> = ids.iter().flat_map(|id| id.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap();
}

/// A token file of sampled stories in `dir` (made once per test that needs it).
fn stories_file(dir: &TempDir) -> PathBuf {
    let path = dir.path("stories.bin");
    write_tokens(&path, &story_tokens(30, 7));
    path
}

/// Flags of a tiny new model that trains in well under a second per step.
fn tiny(data: &Path) -> Vec<String> {
    let flags = "--vocab-size 512 --dim 32 --n-layers 2 --n-heads 4 --n-kv-heads 2 \
                 --max-seq-len 32 --batch-size 4 --gradient-accumulation-steps 2 \
                 --learning-rate 2e-3 --warmup-iters 3 --eval-interval 5 --eval-iters 2 \
                 --dropout 0.1";
    let mut args: Vec<String> = flags.split_whitespace().map(String::from).collect();
    args.extend(["--data".into(), data.display().to_string()]);
    args
}

/// Arguments that fine-tune stories260K on `data` into `out`, then `flags` (split at spaces).
fn fine_tune(data: &Path, out: &Path, flags: &str) -> Vec<String> {
    let mut args = vec!["--init".to_string(), stories260k().display().to_string()];
    args.extend(["--data".into(), data.display().to_string()]);
    args.extend(out_arg(out));
    args.extend(flags.split_whitespace().map(String::from));
    args
}

fn train(args: &[String], extra: &[&str]) -> std::process::Output {
    let mut all: Vec<&str> = vec!["train"];
    all.extend(args.iter().map(String::as_str));
    all.extend(extra);
    llama2_str(&all)
}

fn assert_ok(output: &std::process::Output) {
    assert!(
        output.status.success(),
        "train failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// log.tsv as rows of fields.
fn log_rows(dir: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(dir.join("log.tsv"))
        .unwrap()
        .lines()
        .map(|l| l.split('\t').map(String::from).collect())
        .collect()
}

/// The log without its timing column, which differs between runs.
fn log_without_speed(dir: &Path) -> Vec<Vec<String>> {
    log_rows(dir)
        .into_iter()
        .map(|mut r| {
            r.pop();
            r
        })
        .collect()
}

fn out_arg(dir: &Path) -> [String; 2] {
    ["--out".into(), dir.display().to_string()]
}

#[test]
fn log_rows_follow_the_schedule_and_the_loss_goes_down() {
    let tmp = TempDir::new("train-log");
    let data = stories_file(&tmp);
    let run = tmp.path("run");
    let mut args = tiny(&data);
    args.extend(out_arg(&run));
    assert_ok(&train(
        &args,
        &["--max-iters", "12", "--lr-decay-iters", "20"],
    ));
    let rows = log_rows(&run);
    assert_eq!(
        rows[0].join("\t"),
        "step\tlr\ttrain_loss\tgrad_norm\tval_loss\ttokens_per_s"
    );
    assert_eq!(rows.len(), 1 + 13, "header, row 0, rows 1..12");
    // Row 0 holds only the evaluation before training.
    assert_eq!(rows[1][0], "0");
    assert!(rows[1][1..4].iter().all(String::is_empty) && rows[1][5].is_empty());
    let val0: f32 = rows[1][4].parse().unwrap();
    // A new model guesses about uniformly over 512 tokens: ln 512 = 6.24.
    assert!((val0 - 512f32.ln()).abs() < 0.05, "{val0}");
    for (k, row) in rows[1..].iter().enumerate() {
        assert_eq!(row[0], k.to_string());
        let evaluated = k % 5 == 0 || k == 12;
        assert_eq!(!row[4].is_empty(), evaluated, "row {k}");
        if k == 0 {
            continue;
        }
        // train.py's get_lr(k - 1): warmup 2e-3 * i / 3, then cosine to 0 at step 20.
        let i = (k - 1) as f64;
        let expected = if i < 3.0 {
            2e-3 * i / 3.0
        } else {
            0.5 * (1.0 + (std::f64::consts::PI * (i - 3.0) / 17.0).cos()) * 2e-3
        };
        let lr: f64 = row[1].parse().unwrap();
        assert!(
            (lr - expected).abs() <= 1e-9,
            "row {k}: lr {lr}, expected {expected}"
        );
        let norm: f32 = row[3].parse().unwrap();
        assert!(norm > 0.0 && norm.is_finite());
        assert!(row[5].parse::<u64>().unwrap() > 0);
    }
    let val12: f32 = rows[13][4].parse().unwrap();
    assert!(val12 < val0 - 0.3, "validation loss {val0} -> {val12}");
    let chart = std::fs::read_to_string(run.join("loss.svg")).unwrap();
    assert!(
        chart.contains("<svg") && chart.contains("polyline"),
        "{chart}"
    );
    // model.bin is a checkpoint the inference code runs.
    let model = Model::open(run.join("model.bin")).unwrap();
    assert_eq!(model.config().dim, 32);
    assert!(model.config().shared_classifier);
}

#[test]
fn the_first_evaluation_is_the_inference_forward_passs_loss() {
    let tmp = TempDir::new("train-eval");
    let val: Vec<u16> = story_tokens(3, 99);
    write_tokens(&tmp.path("val.bin"), &val);
    let data = stories_file(&tmp);
    let run = tmp.path("run");
    let val_flag = format!("--val {}", tmp.path("val.bin").display());
    let flags = "--order sequential --batch-size 3 --max-seq-len 40 --eval-iters 2 --max-iters 0";
    let output = train(&fine_tune(&data, &run, &format!("{val_flag} {flags}")), &[]);
    assert_ok(&output);
    let logged: f64 = log_rows(&run)[1][4].parse().unwrap();
    // Sequential order: the two batches are windows 0..6, window i being tokens [40i, 40i + 40].
    let model = Model::open(stories260k()).unwrap();
    let mut total = 0.0f64;
    for w in 0..6 {
        let mut state = model.new_state().unwrap();
        for pos in 0..40 {
            let logits = model
                .forward(&mut state, u32::from(val[40 * w + pos]), pos)
                .unwrap();
            let max = logits.iter().fold(f32::MIN, |m, &x| m.max(x)) as f64;
            let sum: f64 = logits.iter().map(|&x| (x as f64 - max).exp()).sum();
            let target = val[40 * w + pos + 1] as usize;
            total += max + sum.ln() - logits[target] as f64;
        }
    }
    let expected = total / (6.0 * 40.0);
    assert!(
        (logged - expected).abs() < 1e-4,
        "logged {logged}, inference {expected}"
    );
    // With --max-iters 0 the model written is --init's own weights.
    let saved = Model::open(run.join("model.bin")).unwrap();
    assert_eq!(
        llama2::Params::from_model(&saved).unwrap().data(),
        llama2::Params::from_model(&model).unwrap().data()
    );
}

#[test]
fn a_stopped_and_resumed_run_ends_as_the_uninterrupted_one() {
    let tmp = TempDir::new("train-resume");
    let data = stories_file(&tmp);
    let (whole, halves) = (tmp.path("whole"), tmp.path("halves"));
    let mut args = tiny(&data);
    args.extend(["--lr-decay-iters".into(), "20".into()]);
    let with_out = |dir: &Path| {
        let mut a = args.clone();
        a.extend(out_arg(dir));
        a
    };
    assert_ok(&train(&with_out(&whole), &["--max-iters", "20"]));
    assert_ok(&train(&with_out(&halves), &["--max-iters", "10"]));
    // Resuming needs only the folder: the settings come from the saved state.
    assert_ok(&train(
        &out_arg(&halves),
        &["--resume", "--max-iters", "20"],
    ));
    for file in ["model.bin", "state.bin"] {
        assert!(
            std::fs::read(whole.join(file)).unwrap() == std::fs::read(halves.join(file)).unwrap(),
            "{file} differs"
        );
    }
    assert_eq!(log_without_speed(&whole), log_without_speed(&halves));
}

#[test]
fn a_killed_run_resumes_from_its_last_state_to_the_same_model() {
    let tmp = TempDir::new("train-kill");
    let data = stories_file(&tmp);
    let (whole, killed) = (tmp.path("whole"), tmp.path("killed"));
    let mut args = tiny(&data);
    args.extend([
        "--max-iters".into(),
        "40".into(),
        "--eval-interval".into(),
        "4".into(),
    ]);
    let mut a = args.clone();
    a.extend(out_arg(&whole));
    assert_ok(&train(&a, &[]));

    let mut a = vec!["train".to_string()];
    a.extend(args.clone());
    a.extend(out_arg(&killed));
    let mut child = Command::new(env!("CARGO_BIN_EXE_llama2"))
        .args(&a)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it somewhere after step 9, between or during saves.
    let started = std::time::Instant::now();
    while log_rows_or_none(&killed).is_none_or(|n| n < 12) {
        assert!(started.elapsed() < common::HANG_LIMIT);
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let _ = child.kill();
    child.wait().unwrap();
    let logged = log_rows_or_none(&killed).unwrap();
    assert!(
        logged < 42,
        "the run finished ({logged} log lines) before it was killed"
    );
    let mut resume: Vec<String> = out_arg(&killed).into();
    resume.push("--resume".into());
    // A half-written file of the killed run is cleared away on resuming.
    std::fs::write(killed.join("state.bin.partial-1"), b"half").unwrap();
    assert_ok(&train(&resume, &[]));
    assert!(!killed.join("state.bin.partial-1").exists());
    assert!(
        std::fs::read(whole.join("model.bin")).unwrap()
            == std::fs::read(killed.join("model.bin")).unwrap()
    );
    assert_eq!(log_without_speed(&whole), log_without_speed(&killed));
}

fn log_rows_or_none(dir: &Path) -> Option<usize> {
    std::fs::read_to_string(dir.join("log.tsv"))
        .ok()
        .map(|t| t.lines().count())
}

#[test]
fn one_or_two_threads_give_the_same_bytes() {
    let tmp = TempDir::new("train-threads");
    let data = stories_file(&tmp);
    let dirs = [tmp.path("one"), tmp.path("two")];
    for (dir, threads) in dirs.iter().zip(["1", "2"]) {
        let mut args = tiny(&data);
        args.extend(out_arg(dir));
        assert_ok(&train(&args, &["--max-iters", "6", "--threads", threads]));
    }
    for file in ["model.bin", "state.bin"] {
        assert!(
            std::fs::read(dirs[0].join(file)).unwrap()
                == std::fs::read(dirs[1].join(file)).unwrap(),
            "{file}"
        );
    }
    assert_eq!(log_without_speed(&dirs[0]), log_without_speed(&dirs[1]));
}

#[test]
fn fine_tuning_keeps_the_checkpoints_shape_and_always_saves_when_asked() {
    let tmp = TempDir::new("train-init");
    let data = stories_file(&tmp);
    let run = tmp.path("run");
    let flags = "--batch-size 4 --max-seq-len 64 --gradient-accumulation-steps 1 --max-iters 4 \
                 --eval-interval 2 --eval-iters 1 --learning-rate 1e-4 --warmup-iters 0 \
                 --always-save-checkpoint";
    let output = train(&fine_tune(&data, &run, flags), &[]);
    assert_ok(&output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.matches("saved model.bin").count(), 3, "{stderr}");
    let original = Model::open(stories260k()).unwrap();
    let tuned = Model::open(run.join("model.bin")).unwrap();
    // Same shape, context included (T = 64 is only what training read), weights moved a little.
    assert_eq!(tuned.config(), original.config());
    let (a, b) = (
        llama2::Params::from_model(&original).unwrap(),
        llama2::Params::from_model(&tuned).unwrap(),
    );
    let moved = a
        .data()
        .iter()
        .zip(b.data())
        .filter(|(x, y)| x != y)
        .count();
    assert!(
        moved > a.len() / 2,
        "{moved} of {} weights changed",
        a.len()
    );
}

/// `--dtype bfloat16` fine-tuning stories260K for 20 steps ends within 1% of the `float32`
/// run's validation loss, having computed something else (the logs differ).
#[test]
fn bfloat16_training_ends_near_the_float32_validation_loss() {
    let tmp = TempDir::new("train-bf16");
    let data = stories_file(&tmp);
    let flags = "--batch-size 8 --max-seq-len 64 --gradient-accumulation-steps 1 --max-iters 20 \
                 --eval-interval 20 --eval-iters 2 --learning-rate 3e-4 --warmup-iters 2 \
                 --dropout 0.0";
    let last_val_loss = |dtype: &str| {
        let run = tmp.path(dtype);
        assert_ok(&train(&fine_tune(&data, &run, flags), &["--dtype", dtype]));
        let rows = log_without_speed(&run);
        let val: f32 = rows.last().unwrap()[4].parse().unwrap();
        (val, rows)
    };
    let (fp32, fp32_log) = last_val_loss("float32");
    let (bf16, bf16_log) = last_val_loss("bfloat16");
    assert_ne!(fp32_log, bf16_log, "bfloat16 computed the same as float32");
    eprintln!(
        "validation loss: at the start {}, after 20 steps float32 {fp32}, bfloat16 {bf16}",
        fp32_log[1][4]
    );
    assert!(
        (bf16 - fp32).abs() <= 0.01 * fp32,
        "float32 {fp32}, bfloat16 {bf16}"
    );
}

#[test]
fn without_validation_the_last_model_is_saved_at_the_end() {
    let tmp = TempDir::new("train-noval");
    let data = stories_file(&tmp);
    let run = tmp.path("run");
    let mut args = tiny(&data);
    args.extend(out_arg(&run));
    let output = train(&args, &["--max-iters", "7", "--eval-iters", "0"]);
    assert_ok(&output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.matches("saved model.bin").count(), 1, "{stderr}");
    assert!(stderr.contains("step 7: saved model.bin"));
    assert!(log_rows(&run).iter().skip(1).all(|r| r[4].is_empty()));
}

/// Run `llama2 train` expecting a one-line error that contains `named` and exit code 1.
fn assert_refused(args: &[String], named: &str) {
    let output = train(args, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{args:?} was accepted: {stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("llama2: ") && stderr.contains(named),
        "{args:?}: {stderr}"
    );
}

#[test]
fn bad_input_is_refused_before_training() {
    let tmp = TempDir::new("train-bad");
    let data = stories_file(&tmp);
    let out = tmp.path("out");
    let with = |extra: &[&str]| -> Vec<String> {
        let mut a = tiny(&data);
        a.extend(out_arg(&out));
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let s = |p: PathBuf| p.display().to_string();
    let init = |extra: &[&str]| -> Vec<String> {
        let mut a = fine_tune(&data, &out, "");
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    write_tokens(&tmp.path("big.bin"), &[1, 2, 600, 3]);
    std::fs::write(tmp.path("empty.bin"), b"").unwrap();
    write_tokens(&tmp.path("short.bin"), &story_tokens(1, 3)[..100]);
    std::fs::create_dir_all(tmp.path("nobins")).unwrap();
    std::fs::write(tmp.path("a-file"), b"x").unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            with(&["--data", &s(tmp.path("missing.bin"))]),
            "missing.bin",
        ),
        (with(&["--data", &s(tmp.path("empty.bin"))]), "empty.bin"),
        (with(&["--data", &s(tmp.path("nobins"))]), "no .bin"),
        (with(&["--data", &s(tmp.path("big.bin"))]), "big.bin"),
        (with(&["--val", &s(tmp.path("big.bin"))]), "token id 600"),
        // 100 tokens, T = 32: 2 windows, fewer than a batch of 4.
        (
            with(&["--data", &s(tmp.path("short.bin")), "--eval-iters", "0"]),
            "fewer than one batch",
        ),
        (with(&["--batch-size", "40"]), "fewer than one batch"),
        (with(&["--learning-rate", "-1"]), "--learning-rate"),
        (with(&["--batch-size", "many"]), "--batch-size"),
        (with(&["--order", "shuffled"]), "--order"),
        (with(&["--dtype", "half"]), "--dtype"),
        (with(&["--frobnicate", "1"]), "--frobnicate"),
        (with(&["--n-heads", "3"]), "--n-heads"),
        (init(&["--max-seq-len", "1000"]), "context"),
        (init(&["--dim", "8"]), "--dim"),
        (init(&["--init", &s(stories260k_q8())]), "int8"),
        (
            init(&["--init", &s(tmp.path("missing-model.bin"))]),
            "missing-model.bin",
        ),
        (
            with(&["--out", "/proc/llama2-train-test"]),
            "/proc/llama2-train-test",
        ),
        (
            with(&["--out", &s(tmp.path("a-file").join("run"))]),
            "--out",
        ),
        (with(&["--resume"]), "--resume"),
    ];
    for (args, named) in &cases {
        assert_refused(args, named);
        // Refused before training: nothing was written.
        assert!(!out.join("state.bin").exists() && !out.join("log.tsv").exists());
    }
    // An existing run is not overwritten; a resumed one refuses a new shape or new data.
    assert_ok(&train(&with(&["--max-iters", "1"]), &[]));
    write_tokens(&tmp.path("other.bin"), &story_tokens(30, 8));
    assert_refused(&with(&["--max-iters", "2"]), "--resume");
    assert_refused(&with(&["--resume", "--dim", "64"]), "--dim");
    assert_refused(
        &with(&["--resume", "--data", &s(tmp.path("other.bin"))]),
        "differ",
    );
}

#[cfg(unix)]
#[test]
fn a_read_only_out_folder_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = TempDir::new("train-readonly");
    let data = stories_file(&tmp);
    let out = tmp.path("locked");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o555)).unwrap();
    if std::fs::write(out.join("probe"), b"").is_ok() {
        eprintln!("skipped: this user (root?) can write to a read-only folder");
        return;
    }
    let mut args = tiny(&data);
    args.extend(out_arg(&out));
    assert_refused(&args, "--out");
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755)).unwrap();
}
