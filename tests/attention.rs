//! `llama2 attention`: the maps hold the model's attention weights (rows sum to 1, nothing above
//! the diagonal, the same numbers as a recomputation), and the picture is well-formed SVG whose
//! cells and labels say what the maps say, with any token text escaped.

mod common;

use common::xml::{self, Element};
use common::*;
use llama2::attention::{token_labels, AttentionMaps, AttentionSource};
use llama2::text::escape_piece;
use llama2::Tokenizer;

/// A made-up source: layer `l`, head `h` at position `q` weighs position `t` in proportion to
/// `1 + (l + 2h + 3t) % 5`.
struct MadeUp {
    layers: usize,
    heads: usize,
}

fn made_up_row(l: usize, h: usize, q: usize) -> Vec<f32> {
    let raw: Vec<f32> = (0..=q)
        .map(|t| 1.0 + ((l + 2 * h + 3 * t) % 5) as f32)
        .collect();
    let sum: f32 = raw.iter().sum();
    raw.iter().map(|r| r / sum).collect()
}

impl AttentionSource for MadeUp {
    fn shape(&self) -> (usize, usize) {
        (self.layers, self.heads)
    }

    fn attend(&mut self, _token: u32, pos: usize) -> llama2::Result<Vec<Vec<Vec<f32>>>> {
        Ok((0..self.layers)
            .map(|l| (0..self.heads).map(|h| made_up_row(l, h, pos)).collect())
            .collect())
    }
}

/// Maps of 2 layers of 3 heads from [`MadeUp`].
fn made_up_maps(tokens: &[u32]) -> AttentionMaps {
    AttentionMaps::record(
        &mut MadeUp {
            layers: 2,
            heads: 3,
        },
        tokens,
    )
    .unwrap()
}

#[test]
fn record_puts_each_row_in_place_and_leaves_the_future_zero() {
    let tokens = [1, 40, 41, 42, 43];
    let maps = made_up_maps(&tokens);
    assert_eq!(
        (maps.layers(), maps.heads(), maps.tokens()),
        (2, 3, &tokens[..])
    );
    for l in 0..2 {
        for h in 0..3 {
            for q in 0..tokens.len() {
                let row = maps.row(l, h, q);
                assert_eq!(row[..=q], made_up_row(l, h, q)[..]);
                assert!(row[q + 1..].iter().all(|&w| w == 0.0));
            }
        }
    }
}

#[test]
fn a_source_of_the_wrong_shape_is_an_error() {
    struct Short;
    impl AttentionSource for Short {
        fn shape(&self) -> (usize, usize) {
            (1, 1)
        }
        fn attend(&mut self, _: u32, _: usize) -> llama2::Result<Vec<Vec<Vec<f32>>>> {
            Ok(vec![vec![vec![1.0]]]) // always one position
        }
    }
    assert!(AttentionMaps::record(&mut Short, &[1]).is_ok());
    assert!(AttentionMaps::record(&mut Short, &[1, 2]).is_err());
}

/// A cell of the picture, read back from its tooltip.
#[derive(Debug)]
struct Cell {
    layer: usize,
    head: usize,
    query: usize,
    key: usize,
    weight: f64,
    fill: String,
    x: f64,
    y: f64,
}

/// Every heat-map cell: the `<rect>`s with a `<title>` "layer L head H: position Q to K = W (…)".
fn cells(elements: &[Element]) -> Vec<Cell> {
    let mut cells = Vec::new();
    for title in elements.iter().filter(|e| e.name == "title") {
        let rect = &elements[title.parent.unwrap()];
        assert_eq!(rect.name, "rect");
        let (numbers, _) = title.text.split_once(" (").unwrap();
        let words: Vec<&str> = numbers
            .split([' ', ':'])
            .filter(|w| !w.is_empty())
            .collect();
        // ["layer", L, "head", H, "position", Q, "to", K, "=", W]
        assert_eq!(
            (words[0], words[2], words[4], words[6], words[8]),
            ("layer", "head", "position", "to", "=")
        );
        cells.push(Cell {
            layer: words[1].parse().unwrap(),
            head: words[3].parse().unwrap(),
            query: words[5].parse().unwrap(),
            key: words[7].parse().unwrap(),
            weight: words[9].parse().unwrap(),
            fill: rect.attribute("fill").unwrap().to_string(),
            x: rect.attribute("x").unwrap().parse().unwrap(),
            y: rect.attribute("y").unwrap().parse().unwrap(),
        });
    }
    cells
}

/// The colour a weight should have: white (0) to rgb(8, 48, 107) (1), linearly.
fn expected_fill(w: f64) -> String {
    let mix = |to: f64| (255.0 + (to - 255.0) * w).round() as u8;
    format!("rgb({},{},{})", mix(8.0), mix(48.0), mix(107.0))
}

/// Check a picture against its maps: one cell per (layer, head, query, key <= query) with the
/// map's weight and colour, laid out in a grid, rows summing to 1; and the labels as text.
fn check_picture(svg: &str, maps: &AttentionMaps, labels: &[String]) {
    let elements = xml::parse(svg).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(elements[0].name, "svg");
    let n = maps.tokens().len();
    let cells = cells(&elements);
    assert_eq!(cells.len(), maps.layers() * maps.heads() * n * (n + 1) / 2);
    let mut sums = vec![0.0f64; maps.layers() * maps.heads() * n];
    for c in &cells {
        assert!(c.key <= c.query, "a cell above the diagonal: {c:?}");
        let w = maps.row(c.layer, c.head, c.query)[c.key] as f64;
        assert!((c.weight - w).abs() <= 5e-7, "{c:?} vs {w}");
        assert_eq!(c.fill, expected_fill(w), "{c:?}");
        sums[(c.layer * maps.heads() + c.head) * n + c.query] += c.weight;
    }
    for s in sums {
        assert!((s - 1.0).abs() < 1e-5, "a row sums to {s}");
    }
    // In every map, keys go right and queries go down, one cell size per position; the maps
    // of a layer go right head after head, the layers go down.
    let at = |l, h, q, k| {
        let c = cells
            .iter()
            .find(|c| (c.layer, c.head, c.query, c.key) == (l, h, q, k));
        let c = c.unwrap();
        (c.x, c.y)
    };
    let size = at(0, 0, 1, 0).1 - at(0, 0, 0, 0).1;
    assert!(size > 0.0);
    for c in &cells {
        let origin = at(c.layer, c.head, 0, 0);
        assert!((c.x - origin.0 - c.key as f64 * size).abs() < 0.02, "{c:?}");
        assert!(
            (c.y - origin.1 - c.query as f64 * size).abs() < 0.02,
            "{c:?}"
        );
        if c.head > 0 {
            assert!(origin.0 > at(c.layer, c.head - 1, 0, 0).0 + n as f64 * size);
        }
        if c.layer > 0 {
            assert!(origin.1 > at(c.layer - 1, c.head, 0, 0).1 + n as f64 * size);
        }
    }
    let texts: Vec<&str> = elements
        .iter()
        .filter(|e| e.name == "text")
        .map(|e| e.text.as_str())
        .collect();
    for label in labels {
        assert!(texts.contains(&label.as_str()), "label {label:?} missing");
    }
}

#[test]
fn picture_of_made_up_maps_is_well_formed_and_escaped() {
    let tokenizer = Tokenizer::open(tok512(), 512).unwrap();
    let prompt = "a <b> & \"c\" 'd'\n\u{1}]]>";
    let tokens = tokenizer.encode(prompt.as_bytes(), true, false).unwrap();
    let maps = made_up_maps(&tokens);
    let labels = token_labels(&tokenizer, &tokens);
    for (label, &id) in labels.iter().zip(&tokens) {
        assert_eq!(*label, escape_piece(tokenizer.piece(id).unwrap()));
    }
    assert!(labels.iter().any(|l| l.contains('<')) && labels.iter().any(|l| l.contains('&')));
    let svg = maps.to_svg(&labels);
    check_picture(&svg, &maps, &labels);
    // Too few labels: the rest are numbered, nothing breaks.
    let numbered: Vec<String> = (1..tokens.len()).map(|i| format!("#{i}")).collect();
    let mut short = labels[..1].to_vec();
    short.extend(numbered);
    check_picture(&maps.to_svg(&labels[..1]), &maps, &short);
}

#[test]
fn bad_attention_arguments_fail_cleanly() {
    let (model, tok) = (stories260k(), tok512());
    let (model, tok) = (model.to_str().unwrap(), tok.to_str().unwrap());
    let dir = TempDir::new("attention-bad");
    let out = dir.path("a.svg");
    let out = out.to_str().unwrap();
    let run = |args: &[&str]| {
        let mut all = vec!["attention"];
        all.extend(args);
        llama2_str(&all)
    };
    assert_clean_failure(&run(&[model, "-z", tok, "-o", out]), "-i");
    assert_clean_failure(&run(&[model, "-z", tok, "-i", "Hi"]), "-o");
    assert_clean_failure(&run(&["-z", tok, "-i", "Hi", "-o", out]), "checkpoint");
    assert_clean_failure(&run(&[model, "-z", tok, "-i", "Hi", "-o", out, "-t"]), "-t");
    assert_clean_failure(&run(&[model, "-z", tok, "-i"]), "-i");
    let long = "one two three four five six seven eight nine ten ".repeat(4);
    assert_clean_failure(&run(&[model, "-z", tok, "-i", &long, "-o", out]), "-i");
    let truncated = dir.path("truncated.bin");
    std::fs::write(&truncated, &std::fs::read(stories260k()).unwrap()[..5000]).unwrap();
    let truncated = truncated.to_str().unwrap();
    assert_clean_failure(
        &run(&[truncated, "-z", tok, "-i", "Hi", "-o", out]),
        "truncated.bin",
    );
    let nowhere = dir.path("no/such/dir/a.svg");
    let nowhere = nowhere.to_str().unwrap();
    assert_clean_failure(&run(&[model, "-z", tok, "-i", "Hi", "-o", nowhere]), "-o");
    assert!(!std::path::Path::new(out).exists());
}

/// Layer 0's attention weights worked out here in f64 from the checkpoint's tensors:
/// `[head][query][key]` for keys up to the query. Layer 0 reads the embeddings directly, so no
/// other layer is needed: RMSNorm, the q and k projections, RoPE, scaled dot products, softmax.
fn layer0_attention(model: &llama2::Model, tokens: &[u32]) -> Vec<Vec<Vec<f64>>> {
    let t = llama2::convert::FloatTensors::from_model(model);
    let c = t.config;
    let (dim, head_dim) = (c.dim, c.dim / c.n_heads);
    let kv_dim = head_dim * c.n_kv_heads;
    let w = &t.layers[0];
    let project = |m: &[f32], x: &[f64], rows: usize| -> Vec<f64> {
        (0..rows)
            .map(|r| (0..dim).map(|i| m[r * dim + i] as f64 * x[i]).sum())
            .collect()
    };
    let rotate = |v: &mut [f64], pos: usize| {
        for pair in 0..v.len() / 2 {
            let j = pair % (head_dim / 2); // pair index within the head
            let angle = pos as f64 * 10000f64.powf(-2.0 * j as f64 / head_dim as f64);
            let (a, b) = (v[2 * pair], v[2 * pair + 1]);
            v[2 * pair] = a * angle.cos() - b * angle.sin();
            v[2 * pair + 1] = a * angle.sin() + b * angle.cos();
        }
    };
    let mut queries = Vec::new();
    let mut keys = Vec::new();
    for (pos, &token) in tokens.iter().enumerate() {
        let x: Vec<f64> = t.token_embedding[token as usize * dim..][..dim]
            .iter()
            .map(|&v| v as f64)
            .collect();
        let rms = (x.iter().map(|v| v * v).sum::<f64>() / dim as f64 + 1e-5).sqrt();
        let normed: Vec<f64> = x
            .iter()
            .zip(&*w.attn_norm)
            .map(|(v, g)| v / rms * *g as f64)
            .collect();
        let mut q = project(&w.wq, &normed, dim);
        let mut k = project(&w.wk, &normed, kv_dim);
        rotate(&mut q, pos);
        rotate(&mut k, pos);
        queries.push(q);
        keys.push(k);
    }
    (0..c.n_heads)
        .map(|h| {
            let kv = h / (c.n_heads / c.n_kv_heads) * head_dim;
            (0..tokens.len())
                .map(|qpos| {
                    let scores: Vec<f64> = (0..=qpos)
                        .map(|kpos| {
                            let dot: f64 = (0..head_dim)
                                .map(|i| queries[qpos][h * head_dim + i] * keys[kpos][kv + i])
                                .sum();
                            dot / (head_dim as f64).sqrt()
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let sum: f64 = exps.iter().sum();
                    exps.iter().map(|e| e / sum).collect()
                })
                .collect()
        })
        .collect()
}

fn check_model_picture(model_path: &std::path::Path, prompt: &str) {
    let dir = TempDir::new("attention-model");
    let out = dir.path("picture.svg");
    let tok = tok512();
    let args = [
        model_path.as_os_str(),
        "-z".as_ref(),
        tok.as_os_str(),
        "-i".as_ref(),
        prompt.as_ref(),
        "-o".as_ref(),
        out.as_os_str(),
    ];
    let mut all = vec![std::ffi::OsStr::new("attention")];
    all.extend(args);
    let run = llama2(&all, b"");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let svg = std::fs::read_to_string(&out).unwrap();

    let model = llama2::Model::open(model_path)
        .unwrap()
        .with_arithmetic(llama2::Arithmetic::Exact);
    let tokenizer = Tokenizer::open(tok512(), 512).unwrap();
    let maps = AttentionMaps::of_prompt(model_path, &tokenizer, prompt.as_bytes()).unwrap();
    let tokens = tokenizer.encode(prompt.as_bytes(), true, false).unwrap();
    assert_eq!(maps.tokens(), tokens);
    let c = model.config();
    assert_eq!((maps.layers(), maps.heads()), (c.n_layers, c.n_heads));
    let labels = token_labels(&tokenizer, &tokens);
    check_picture(&svg, &maps, &labels);

    // Layer 0, every head and cell, against the recomputation (f32 sums against f64 ones:
    // within 1e-5); and the same from the picture's tooltips.
    let expected = layer0_attention(&model, &tokens);
    for (h, map) in expected.iter().enumerate() {
        for (q, row) in map.iter().enumerate() {
            for (k, &want) in row.iter().enumerate() {
                let got = maps.row(0, h, q)[k] as f64;
                assert!(
                    (got - want).abs() < 1e-5,
                    "layer 0 head {h} {q}->{k}: {got} vs {want}"
                );
            }
        }
    }
    let elements = xml::parse(&svg).unwrap();
    for cell in cells(&elements).iter().filter(|c| c.layer == 0) {
        let want = expected[cell.head][cell.query][cell.key];
        assert!((cell.weight - want).abs() < 1e-5, "{cell:?} vs {want}");
    }
}

#[test]
fn picture_of_stories260k_holds_its_attention_weights() {
    check_model_picture(&stories260k(), "Once upon a time, <Lily> & \"Tom\" ran.\n");
}

#[test]
fn picture_of_the_int8_model_holds_its_attention_weights() {
    // The reference runs int8 models as runq.c does (activations quantized too), so the
    // recomputation here, with dequantized weights and float activations, is only close.
    let model = stories260k_q8();
    let tokenizer = Tokenizer::open(tok512(), 512).unwrap();
    let maps = AttentionMaps::of_prompt(&model, &tokenizer, b"The dog").unwrap();
    let expected = layer0_attention(
        &llama2::Model::open(&model)
            .unwrap()
            .with_arithmetic(llama2::Arithmetic::Exact),
        maps.tokens(),
    );
    for (h, map) in expected.iter().enumerate() {
        for (q, row) in map.iter().enumerate() {
            let got = maps.row(0, h, q);
            let sum: f32 = got.iter().sum();
            assert!((sum - 1.0).abs() < 1e-5);
            for (k, &want) in row.iter().enumerate() {
                assert!(
                    (got[k] as f64 - want).abs() < 0.02,
                    "head {h} {q}->{k}: {} vs {want}",
                    got[k]
                );
            }
        }
    }
}
