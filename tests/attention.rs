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

#[test]
fn record_puts_each_row_in_place_and_leaves_the_future_zero() {
    let tokens = [1, 40, 41, 42, 43];
    let maps = AttentionMaps::record(
        &mut MadeUp {
            layers: 2,
            heads: 3,
        },
        &tokens,
    )
    .unwrap();
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
    let maps = AttentionMaps::record(
        &mut MadeUp {
            layers: 2,
            heads: 3,
        },
        &tokens,
    )
    .unwrap();
    let labels = token_labels(&tokenizer, &tokens);
    for (label, &id) in labels.iter().zip(&tokens) {
        assert_eq!(*label, escape_piece(tokenizer.piece(id).unwrap()));
    }
    assert!(labels.iter().any(|l| l.contains('<')) && labels.iter().any(|l| l.contains('&')));
    let svg = maps.to_svg(&labels);
    check_picture(&svg, &maps, &labels);
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
    assert!(!std::path::Path::new(out).exists());
}
