//! The hand-written SVG: loss charts are well-formed XML whose lines go through the points
//! given, and any text is escaped.

mod common;

use common::xml::{self, Element};
use llama2::svg::{escape, loss_chart, Anchor, Svg, TextStyle};

/// The points of every `<polyline>`, as (x, y) pixels.
fn polylines(elements: &[Element]) -> Vec<Vec<(f64, f64)>> {
    elements
        .iter()
        .filter(|e| e.name == "polyline")
        .map(|e| {
            e.attribute("points")
                .unwrap()
                .split_whitespace()
                .map(|p| {
                    let (x, y) = p.split_once(',').unwrap();
                    (x.parse().unwrap(), y.parse().unwrap())
                })
                .collect()
        })
        .collect()
}

fn texts(elements: &[Element]) -> Vec<&str> {
    elements
        .iter()
        .filter(|e| e.name == "text")
        .map(|e| e.text.as_str())
        .collect()
}

#[test]
fn loss_chart_draws_both_series_through_their_points() {
    // A loss falling from 6 to about 1.2, as training does, and a sparser validation loss.
    let train: Vec<(u64, f32)> = (0..=100)
        .map(|s| (s, 1.0 + 5.0 * (-(s as f32) / 20.0).exp()))
        .collect();
    let val: Vec<(u64, f32)> = (0..=4)
        .map(|i| (i * 25, train[i as usize * 25].1 + 0.1))
        .collect();
    let svg = loss_chart(&train, &val);
    let elements = xml::parse(&svg).unwrap();
    assert_eq!(elements[0].name, "svg");
    assert_eq!(
        elements[0].attribute("xmlns"),
        Some("http://www.w3.org/2000/svg")
    );
    let lines = polylines(&elements);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0].len(), train.len());
    assert_eq!(lines[1].len(), val.len());
    // Steps go right at a constant rate; a lower loss is lower on the page (larger y).
    let dx = lines[0][1].0 - lines[0][0].0;
    for (pair, points) in lines[0].windows(2).zip(train.windows(2)) {
        assert!((pair[1].0 - pair[0].0 - dx).abs() < 0.02);
        assert_eq!(pair[1].1 > pair[0].1, points[1].1 < points[0].1);
    }
    // Validation step 50 sits above training step 50's x.
    assert!((lines[1][2].0 - lines[0][50].0).abs() < 0.01);
    // Loss spans a factor of five: the y axis is logarithmic, so equal ratios are equal
    // distances. Check with three points of the training line.
    let y_of = |loss: f32| {
        let i = train.iter().position(|p| p.1 == loss).unwrap();
        lines[0][i].1
    };
    let (a, b, c) = (train[0].1, train[20].1, train[100].1);
    let expected = (a.ln() - b.ln()) / (a.ln() - c.ln());
    let got = (y_of(a) - y_of(b)) / (y_of(a) - y_of(c));
    assert!((expected as f64 - got).abs() < 1e-3, "{expected} vs {got}");
    let labels = texts(&elements);
    assert!(labels.contains(&"loss (nats) (log scale)"), "{labels:?}");
    assert!(labels.contains(&"training") && labels.contains(&"validation"));
    assert!(labels.contains(&"step"));
}

#[test]
fn loss_chart_is_linear_for_a_narrow_range_and_skips_non_finite_values() {
    let train = [
        (0, 2.0),
        (10, f32::NAN),
        (20, 1.5),
        (30, f32::INFINITY),
        (40, 1.2),
    ];
    let svg = loss_chart(&train, &[]);
    let elements = xml::parse(&svg).unwrap();
    let lines = polylines(&elements);
    assert_eq!(lines[0].len(), 3);
    let (y0, y1, y2) = (lines[0][0].1, lines[0][1].1, lines[0][2].1);
    // Linear: 2.0 -> 1.5 is 0.5 of a 0.8 range.
    assert!(((y1 - y0) / (y2 - y0) - 0.5 / 0.8).abs() < 1e-3);
    assert!(texts(&elements).contains(&"loss (nats)"));
}

#[test]
fn empty_and_single_point_charts_are_well_formed() {
    for (train, val) in [
        (vec![], vec![]),
        (vec![(5, 3.0)], vec![]),
        (vec![(0, 1.0)], vec![(0, 1.0)]),
    ] {
        let svg = loss_chart(&train, &val);
        xml::parse(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
    }
    assert!(loss_chart(&[], &[]).contains("no data yet"));
}

#[test]
fn text_is_escaped() {
    assert_eq!(
        escape(r#"<a & 'b' "c">"#),
        "&lt;a &amp; &apos;b&apos; &quot;c&quot;&gt;"
    );
    assert_eq!(escape("tab\tok\u{1}\u{7f}"), "tab\tok\u{FFFD}\u{7f}");
    let nasty = "</text><script>alert(1)</script> & \u{0} ]]>";
    let mut svg = Svg::new(100.0, 50.0);
    svg.text(
        (1.0, 2.0),
        nasty,
        TextStyle {
            anchor: Anchor::Middle,
            ..TextStyle::default()
        },
    );
    svg.rect(0.0, 0.0, 1.0, 1.0, "red", Some(nasty));
    let doc = svg.finish();
    let elements = xml::parse(&doc).unwrap();
    let texts = texts(&elements);
    assert_eq!(texts, ["</text><script>alert(1)</script> & \u{FFFD} ]]>"]);
    assert!(elements.iter().all(|e| e.name != "script"));
    let title = elements.iter().find(|e| e.name == "title").unwrap();
    assert_eq!(elements[title.parent.unwrap()].name, "rect");
}
#[test]
fn the_checker_rejects_what_is_not_well_formed() {
    assert!(xml::parse("<a><b/></a>").is_ok());
    assert!(xml::parse("<?xml version=\"1.0\"?>\n<a x=\"1 &amp; 2\">t&lt;</a>\n").is_ok());
    for bad in [
        "<a><b></a>",
        "<a>",
        "<a></a><b/>",
        "<a x=1/>",
        "<a x=\"1\" x=\"2\"/>",
        "<a>&bogus;</a>",
        "<a>a & b</a>",
        "<a x=\"<\"/>",
        "<a>\u{1}</a>",
        "text<a/>",
        "",
    ] {
        assert!(xml::parse(bad).is_err(), "accepted {bad:?}");
    }
}
