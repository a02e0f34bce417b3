//! Pictures as SVG text, written by hand: a tiny document builder ([`Svg`]) and a line chart
//! ([`LineChart`], and [`loss_chart`] for training and validation loss against steps).
//!
//! SVG is XML, so the only care needed is escaping ([`escape`]): every piece of text that goes
//! into the document passes through it. No dependency, no file access: functions return the
//! document as a `String` for the caller to write.

use std::fmt::Write as _;

/// Escape text for an XML text node or a double-quoted attribute: `& < > " '` become entities,
/// and characters XML 1.0 forbids (control characters other than tab, newline and carriage
/// return, and U+FFFE/U+FFFF) become U+FFFD, so that any input gives a well-formed document.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(ch),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Where a text's anchor point is: at its start, middle or end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Anchor {
    /// The text begins at the point.
    Start,
    /// The text is centred on the point.
    Middle,
    /// The text ends at the point.
    End,
}

/// How a text is drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TextStyle {
    /// Font size in pixels.
    pub size: f64,
    /// Which part of the text sits at the given point.
    pub anchor: Anchor,
    /// Rotation in degrees, clockwise, around the point.
    pub rotate: f64,
}

impl Default for TextStyle {
    fn default() -> TextStyle {
        TextStyle {
            size: 12.0,
            anchor: Anchor::Start,
            rotate: 0.0,
        }
    }
}

/// An SVG document under construction: shapes are appended in drawing order (later on top).
pub struct Svg {
    width: f64,
    height: f64,
    body: String,
}

impl Svg {
    /// An empty white canvas of `width` x `height` pixels.
    pub fn new(width: f64, height: f64) -> Svg {
        let mut svg = Svg {
            width,
            height,
            body: String::new(),
        };
        svg.rect(0.0, 0.0, width, height, "white", None);
        svg
    }

    /// A filled rectangle; `tooltip` becomes its `<title>`, shown when the mouse is over it.
    pub fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, fill: &str, tooltip: Option<&str>) {
        let _ = write!(
            self.body,
            r#"<rect x="{x:.2}" y="{y:.2}" width="{w:.2}" height="{h:.2}" fill="{}""#,
            escape(fill)
        );
        match tooltip {
            Some(tip) => {
                let _ = writeln!(self.body, "><title>{}</title></rect>", escape(tip));
            }
            None => self.body.push_str("/>\n"),
        }
    }

    /// A straight line.
    pub fn line(&mut self, from: (f64, f64), to: (f64, f64), stroke: &str, width: f64) {
        let _ = writeln!(
            self.body,
            r#"<line x1="{:.2}" y1="{:.2}" x2="{:.2}" y2="{:.2}" stroke="{}" stroke-width="{width}"/>"#,
            from.0,
            from.1,
            to.0,
            to.1,
            escape(stroke)
        );
    }

    /// Connected line segments through `points`.
    pub fn polyline(&mut self, points: &[(f64, f64)], stroke: &str, width: f64) {
        let mut coordinates = String::new();
        for (x, y) in points {
            let _ = write!(coordinates, "{x:.2},{y:.2} ");
        }
        let _ = writeln!(
            self.body,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="{width}"/>"#,
            coordinates.trim_end(),
            escape(stroke)
        );
    }

    /// A filled circle.
    pub fn circle(&mut self, center: (f64, f64), radius: f64, fill: &str) {
        let _ = writeln!(
            self.body,
            r#"<circle cx="{:.2}" cy="{:.2}" r="{radius}" fill="{}"/>"#,
            center.0,
            center.1,
            escape(fill)
        );
    }

    /// Text at `at`, escaped.
    pub fn text(&mut self, at: (f64, f64), text: &str, style: TextStyle) {
        let anchor = match style.anchor {
            Anchor::Start => "start",
            Anchor::Middle => "middle",
            Anchor::End => "end",
        };
        let (x, y) = at;
        let _ = write!(
            self.body,
            r#"<text x="{x:.2}" y="{y:.2}" font-size="{}" text-anchor="{anchor}""#,
            style.size
        );
        if style.rotate != 0.0 {
            let _ = write!(
                self.body,
                r#" transform="rotate({} {x:.2} {y:.2})""#,
                style.rotate
            );
        }
        let _ = writeln!(self.body, ">{}</text>", escape(text));
    }

    /// The finished document.
    pub fn finish(self) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
             viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\">\n{}</svg>\n",
            self.body,
            w = self.width,
            h = self.height,
        )
    }
}

/// One line of a [`LineChart`]: its name in the legend, colour, and `(x, y)` points in order.
#[derive(Clone, Debug)]
pub struct Series<'a> {
    /// Name shown in the legend.
    pub name: &'a str,
    /// Any SVG colour, such as `#1f77b4`.
    pub color: &'a str,
    /// The points; those with a value that is not finite are left out.
    pub points: &'a [(u64, f32)],
    /// Draw a dot at every point as well as the line (for sparse series).
    pub dots: bool,
}

/// A chart of one or more series of values against an integer x (steps).
#[derive(Clone, Debug)]
pub struct LineChart<'a> {
    /// Title above the plot.
    pub title: &'a str,
    /// Label of the x axis.
    pub x_label: &'a str,
    /// Label of the y axis (" (log scale)" is added when the scale is logarithmic).
    pub y_label: &'a str,
    /// The lines, drawn in order.
    pub series: Vec<Series<'a>>,
}

/// Size of a chart and of the margins around its plot area, in pixels.
const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;

/// A logarithmic y axis is used when every value is positive and the largest is at least this
/// many times the smallest: then the slow late decrease of a loss is as visible as the fast
/// early one.
pub const LOG_SCALE_RATIO: f64 = 3.0;

/// The chart of training loss (a line) and validation loss (a line with dots) against steps,
/// for `loss.svg`. Points whose loss is not finite are left out; empty series draw nothing.
pub fn loss_chart(train: &[(u64, f32)], val: &[(u64, f32)]) -> String {
    LineChart {
        title: "loss",
        x_label: "step",
        y_label: "loss (nats)",
        series: vec![
            Series {
                name: "training",
                color: "#1f77b4",
                points: train,
                dots: false,
            },
            Series {
                name: "validation",
                color: "#d62728",
                points: val,
                dots: true,
            },
        ],
    }
    .render()
}

/// How a y value maps onto the plot: linearly, or by its logarithm.
#[derive(Clone, Copy, Debug, PartialEq)]
struct YScale {
    log: bool,
    low: f64,
    high: f64,
}

impl YScale {
    /// A scale covering `low..=high` (the smallest and largest value) with a little room
    /// above and below, so that no line runs along the frame.
    fn fit(low: f64, high: f64) -> YScale {
        const ROOM: f64 = 0.04;
        if low > 0.0 && high / low >= LOG_SCALE_RATIO {
            let room = (high / low).powf(ROOM);
            return YScale {
                log: true,
                low: low / room,
                high: high * room,
            };
        }
        let room = if high > low { ROOM * (high - low) } else { 0.5 };
        YScale {
            log: false,
            low: low - room,
            high: high + room,
        }
    }

    /// Where `v` is between the bottom (0) and the top (1).
    fn fraction(&self, v: f64) -> f64 {
        if self.log {
            (v.ln() - self.low.ln()) / (self.high.ln() - self.low.ln())
        } else {
            (v - self.low) / (self.high - self.low)
        }
    }

    /// Values worth a grid line: 1, 2, 5 times powers of ten on a log scale (every digit if
    /// that gives fewer than four), round numbers on a linear one.
    fn ticks(&self) -> Vec<f64> {
        if !self.log {
            return linear_ticks(self.low, self.high);
        }
        let decades = self.low.log10().floor() as i32..=self.high.log10().ceil() as i32;
        let within = |multipliers: &[f64]| -> Vec<f64> {
            decades
                .clone()
                .flat_map(|k| multipliers.iter().map(move |m| m * 10f64.powi(k)))
                .filter(|v| (self.low..=self.high).contains(v))
                .collect()
        };
        let ticks = within(&[1.0, 2.0, 5.0]);
        if ticks.len() >= 4 {
            ticks
        } else {
            within(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])
        }
    }
}

/// About five round numbers (1, 2 or 5 times a power of ten apart) between `low` and `high`.
fn linear_ticks(low: f64, high: f64) -> Vec<f64> {
    let raw = (high - low) / 5.0;
    if !(raw > 0.0 && raw.is_finite()) {
        return vec![low];
    }
    let power = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * power)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * power);
    let first = (low / step).ceil() as i64;
    let last = (high / step).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// A tick value with no more digits than it needs.
fn tick_label(v: f64) -> String {
    if v == 0.0 || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        let decimals = (2 - v.abs().log10().floor() as i32).max(0) as usize;
        let text = format!("{v:.decimals$}");
        let text = if text.contains('.') {
            text.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            text
        };
        text
    }
}

impl LineChart<'_> {
    /// The chart as an SVG document.
    pub fn render(&self) -> String {
        let mut svg = Svg::new(WIDTH, HEIGHT);
        let (plot_w, plot_h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
        let title = TextStyle {
            size: 16.0,
            anchor: Anchor::Middle,
            rotate: 0.0,
        };
        svg.text((LEFT + plot_w / 2.0, TOP - 16.0), self.title, title);
        svg.rect(LEFT, TOP, plot_w, plot_h, "#fafafa", None);

        let finite: Vec<Vec<(u64, f64)>> = self
            .series
            .iter()
            .map(|s| {
                let points = s.points.iter().filter(|(_, v)| v.is_finite());
                points.map(|&(x, v)| (x, v as f64)).collect()
            })
            .collect();
        let all = || finite.iter().flatten();
        let Some(x_low) = all().map(|p| p.0).min() else {
            let middle = TextStyle {
                anchor: Anchor::Middle,
                ..TextStyle::default()
            };
            svg.text(
                (LEFT + plot_w / 2.0, TOP + plot_h / 2.0),
                "no data yet",
                middle,
            );
            return svg.finish();
        };
        let x_high = all().map(|p| p.0).max().unwrap_or(x_low).max(x_low + 1);
        let y_low = all().map(|p| p.1).fold(f64::INFINITY, f64::min);
        let y_high = all().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
        let y = YScale::fit(y_low, y_high);
        let to_px = |(step, v): (u64, f64)| {
            let fx = (step - x_low) as f64 / (x_high - x_low) as f64;
            (LEFT + fx * plot_w, TOP + (1.0 - y.fraction(v)) * plot_h)
        };

        // Grid lines and tick labels.
        let right_aligned = TextStyle {
            anchor: Anchor::End,
            ..TextStyle::default()
        };
        for tick in y.ticks() {
            let (_, py) = to_px((x_low, tick));
            svg.line((LEFT, py), (LEFT + plot_w, py), "#dddddd", 1.0);
            svg.text((LEFT - 6.0, py + 4.0), &tick_label(tick), right_aligned);
        }
        let centered = TextStyle {
            anchor: Anchor::Middle,
            ..TextStyle::default()
        };
        for tick in linear_ticks(x_low as f64, x_high as f64) {
            let (px, _) = to_px((tick as u64, y.low));
            svg.line((px, TOP), (px, TOP + plot_h), "#dddddd", 1.0);
            svg.text((px, TOP + plot_h + 16.0), &tick_label(tick), centered);
        }
        svg.line(
            (LEFT, TOP + plot_h),
            (LEFT + plot_w, TOP + plot_h),
            "black",
            1.0,
        );
        svg.line((LEFT, TOP), (LEFT, TOP + plot_h), "black", 1.0);
        svg.text((LEFT + plot_w / 2.0, HEIGHT - 12.0), self.x_label, centered);
        let y_label = if y.log {
            format!("{} (log scale)", self.y_label)
        } else {
            self.y_label.to_string()
        };
        let vertical = TextStyle {
            rotate: -90.0,
            ..centered
        };
        svg.text((18.0, TOP + plot_h / 2.0), &y_label, vertical);

        // The series, and a legend entry for each in the top right corner.
        for (i, (series, points)) in self.series.iter().zip(&finite).enumerate() {
            let px: Vec<(f64, f64)> = points.iter().map(|&p| to_px(p)).collect();
            svg.polyline(&px, series.color, 1.5);
            if series.dots {
                for &p in &px {
                    svg.circle(p, 3.0, series.color);
                }
            }
            let legend_y = TOP + 16.0 + 18.0 * i as f64;
            let legend_x = LEFT + plot_w - 110.0;
            svg.line(
                (legend_x, legend_y - 4.0),
                (legend_x + 20.0, legend_y - 4.0),
                series.color,
                2.0,
            );
            svg.text(
                (legend_x + 26.0, legend_y),
                series.name,
                TextStyle::default(),
            );
        }
        svg.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_scale_only_for_positive_values_spread_widely() {
        assert!(YScale::fit(1.0, 6.0).log);
        assert!(!YScale::fit(2.0, 3.0).log);
        assert!(!YScale::fit(-1.0, 6.0).log);
        assert!(!YScale::fit(0.0, 6.0).log);
    }

    #[test]
    fn ticks_are_round_and_inside_the_range() {
        assert_eq!(linear_ticks(0.0, 10.0), [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(linear_ticks(3.0, 1000.0)[..2], [200.0, 400.0]);
        assert_eq!(linear_ticks(4.0, 4.0), [4.0]);
        let log = YScale::fit(1.3, 7.0);
        assert_eq!(log.ticks(), [2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
        let log = YScale::fit(0.9, 120.0);
        assert_eq!(log.ticks(), [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]);
    }

    #[test]
    fn tick_labels_have_no_needless_digits() {
        assert_eq!(tick_label(2.0), "2");
        assert_eq!(tick_label(0.25), "0.25");
        assert_eq!(tick_label(1500.0), "1500");
        assert_eq!(tick_label(0.0), "0");
    }

    #[test]
    fn a_log_scale_maps_ratios_to_equal_distances() {
        let y = YScale::fit(1.0, 100.0);
        assert!((y.fraction(10.0) - 0.5).abs() < 1e-12);
        assert!(y.fraction(1.0) > 0.0 && y.fraction(100.0) < 1.0);
        let y = YScale::fit(2.0, 3.0);
        assert!((y.fraction(2.5) - 0.5).abs() < 1e-12);
        assert!(y.fraction(2.0) > 0.0 && y.fraction(3.0) < 1.0);
    }
}
