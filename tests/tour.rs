//! Keeps the guided tour (`docs/how-it-works.md`) true to the code: every file it links exists,
//! and every function it names is defined in that file, so renaming or moving a function breaks
//! this test until the tour follows.
//!
//! What counts as naming a function:
//! * a Markdown link whose target contains `src/...rs#fn-NAME`: `fn NAME` must be in that file;
//! * a code span `module::path::NAME` in lower case (outside code blocks): `fn NAME` must be in
//!   `src/module/path.rs` or `src/module/path/mod.rs`.
//!
//! Links without an anchor, and code spans that are a path to a `.rs` file (with a `/`), must
//! name files that exist.

use std::fs;
use std::path::{Path, PathBuf};

const TOUR: &str = "docs/how-it-works.md";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// True if `source` defines a function `name`: `fn name(` or `fn name<`.
fn defines(source: &str, name: &str) -> bool {
    let needle = format!("fn {name}");
    source.match_indices(&needle).any(|(i, _)| {
        let before = source[..i].chars().next_back();
        let after = source[i + needle.len()..].chars().next();
        let starts_word = !before.is_some_and(|c| c.is_alphanumeric() || c == '_');
        starts_word && matches!(after, Some('(') | Some('<'))
    })
}

/// Check that `file` (relative to the crate root) exists and, with `function`, defines it.
fn check(root: &Path, file: &str, function: Option<&str>, problems: &mut Vec<String>) {
    let path = root.join(file);
    let Ok(source) = fs::read_to_string(&path) else {
        problems.push(format!("{file}: no such file"));
        return;
    };
    if let Some(name) = function {
        if !defines(&source, name) {
            problems.push(format!("{file}: no `fn {name}`"));
        }
    }
}

/// The targets of the Markdown links `[text](target)` of `doc`.
fn link_targets(doc: &str) -> Vec<&str> {
    doc.match_indices("](")
        .filter_map(|(i, _)| {
            let rest = &doc[i + 2..];
            rest.find(')').map(|end| &rest[..end])
        })
        .collect()
}

/// The inline code spans of `doc`, outside fenced code blocks.
fn code_spans(doc: &str) -> Vec<&str> {
    let mut spans = Vec::new();
    let mut fenced = false;
    for line in doc.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            spans.extend(line.split('`').skip(1).step_by(2));
        }
    }
    spans
}

/// Everything wrong with the links and function names of `doc`, a document in `docs/` of the
/// crate at `root`; and how many functions it named.
fn problems(doc: &str, root: &Path) -> (Vec<String>, usize) {
    let mut problems = Vec::new();
    let mut functions = 0;
    for target in link_targets(doc) {
        if target.starts_with("http") {
            continue;
        }
        let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
        let file = file.strip_prefix("../").unwrap_or(file);
        let function = match anchor.strip_prefix("fn-") {
            Some(name) => Some(name),
            None if anchor.is_empty() => None,
            None => {
                problems.push(format!("{target}: an anchor must be #fn-NAME"));
                continue;
            }
        };
        if function.is_some() && !(file.starts_with("src/") && file.ends_with(".rs")) {
            problems.push(format!(
                "{target}: a function link must point into src/*.rs"
            ));
            continue;
        }
        functions += usize::from(function.is_some());
        check(root, file, function, &mut problems);
    }
    for span in code_spans(doc) {
        let is_ident = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        };
        if span.ends_with(".rs") && span.contains('/') && !span.contains(' ') {
            check(root, span, None, &mut problems);
            continue;
        }
        let segments: Vec<&str> = span.split("::").collect();
        if segments.len() < 2 || !segments.iter().all(|s| is_ident(s)) {
            continue;
        }
        let (name, modules) = segments.split_last().expect("two segments or more");
        let module = modules.join("/");
        let file = [format!("src/{module}.rs"), format!("src/{module}/mod.rs")]
            .into_iter()
            .find(|f| root.join(f).is_file());
        functions += 1;
        match file {
            Some(file) => check(root, &file, Some(name), &mut problems),
            None => problems.push(format!("`{span}`: no module src/{module}.rs")),
        }
    }
    (problems, functions)
}

#[test]
fn every_function_the_tour_names_exists() {
    let root = root();
    let doc = fs::read_to_string(root.join(TOUR)).expect("the tour is in docs/");
    let (problems, functions) = problems(&doc, &root);
    assert!(
        problems.is_empty(),
        "{TOUR} is out of date:\n{}",
        problems.join("\n")
    );
    // The tour points at the code all the way through; an extraction finding little is broken.
    assert!(
        functions >= 80,
        "only {functions} functions found in {TOUR}"
    );
}

#[test]
fn the_readme_links_the_tour() {
    let readme = fs::read_to_string(root().join("README.md")).unwrap();
    assert!(link_targets(&readme).contains(&TOUR));
}

#[test]
fn wrong_names_are_caught() {
    let doc = "\
[a](../src/reference.rs#fn-rmsnorm) [b](../src/reference.rs#fn-no_such_function)
[c](../src/reference.rs#fn-rms) [d](../src/no_such_file.rs#fn-main) [e](../src/model.rs#L3)
`train::ops::rmsnorm_forward` `train::ops::rmsnorm_sideways` `nowhere::f` `src/gone.rs`
```text
`not::checked` inside a code block
```
";
    let (problems, functions) = problems(doc, &root());
    let expected = [
        "src/reference.rs: no `fn no_such_function`",
        "src/reference.rs: no `fn rms`", // a prefix of rmsnorm is not a match
        "src/no_such_file.rs: no such file",
        "../src/model.rs#L3: an anchor must be #fn-NAME",
        "src/train/ops.rs: no `fn rmsnorm_sideways`",
        "`nowhere::f`: no module src/nowhere.rs",
        "src/gone.rs: no such file",
    ];
    assert_eq!(problems, expected);
    assert_eq!(functions, 7);
}

/// The last cell of the table row of `doc` whose second cell starts with `` `symbol` ``, as a
/// number (commas allowed, bold allowed).
fn table_value(doc: &str, symbol: &str) -> usize {
    let row = doc
        .lines()
        .find(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            cells.len() > 3 && cells[2].starts_with(&format!("`{symbol}"))
        })
        .unwrap_or_else(|| panic!("no row for `{symbol}` in {TOUR}"));
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    let number: String = cells[cells.len() - 2]
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    number.parse().unwrap()
}

#[test]
fn the_shapes_are_those_of_stories15m() {
    let doc = fs::read_to_string(root().join(TOUR)).unwrap();
    let config = llama2::Config {
        dim: table_value(&doc, "dim"),
        hidden_dim: table_value(&doc, "hidden_dim"),
        n_layers: table_value(&doc, "n_layers"),
        n_heads: table_value(&doc, "n_heads"),
        n_kv_heads: table_value(&doc, "n_kv_heads"),
        vocab_size: table_value(&doc, "vocab_size"),
        seq_len: table_value(&doc, "seq_len"),
        shared_classifier: true,
    };
    // llama2.c's README: stories15M is dim 288, 6 layers, 6 heads, 6 kv heads, context 256.
    let c = &config;
    let stated = (c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.seq_len);
    assert_eq!(stated, (288, 6, 6, 6, 256));
    assert_eq!(table_value(&doc, "head_size"), config.head_dim());
    assert_eq!(table_value(&doc, "kv_dim"), config.kv_dim());
    let tensors = llama2::params::tensor_table(&config).unwrap();
    let parameters: usize = tensors.iter().map(|t| t.len()).sum();
    assert!(doc.contains(&format!("**{}**", with_commas(parameters))));
    let kv_bytes = 2 * config.n_layers * config.kv_dim() * 4;
    assert!(doc.contains(&format!("{} bytes per position", with_commas(kv_bytes))));
}

/// `15191712` as `15,191,712`.
fn with_commas(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}
