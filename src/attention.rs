//! Attention pictures (`llama2 attention`): how much every head of every layer attends to each
//! earlier position of a prompt, drawn as a grid of heat maps, one per (layer, head).
//!
//! [`AttentionMaps`] holds the weights, `(layers, heads, n, n)` for `n` tokens: row `q` of a map
//! is the softmax that position `q`'s query spread over positions `0..=q`, so it sums to 1, and
//! everything above the diagonal is 0 (the causal mask: no position sees a later one).
//! [`AttentionMaps::to_svg`] draws them with [`crate::svg`].
//!
//! The fast forward pass ([`crate::Model`]) keeps no attention weights: it overwrites them head
//! by head. The maps come from a forward pass that reports them, an [`AttentionSource`], run
//! position by position by [`AttentionMaps::record`]: the plain one of [`crate::reference`]
//! ([`ReferenceSource`]), which the tests hold to the fast one bit for bit.

use std::path::Path;

use crate::error::{Error, Result};
use crate::reference;
use crate::svg::{Anchor, Svg, TextStyle};
use crate::text::escape_piece;
use crate::tokenizer::Tokenizer;

/// Longest prompt drawn: the picture has `layers * heads * n²` cells.
pub const MAX_TOKENS: usize = 64;

/// The attention weights of every layer and head for a sequence of tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionMaps {
    layers: usize,
    heads: usize,
    tokens: Vec<u32>,
    /// `(layers, heads, n, n)`: `[l][h][q][k]` is how much head `h` of layer `l` at position
    /// `q` attends to position `k`.
    weights: Vec<f32>,
}

/// A forward pass that reports every head's attention weights.
pub trait AttentionSource {
    /// Number of layers and of query heads per layer.
    fn shape(&self) -> (usize, usize);

    /// Run `token` at position `pos` (positions fed in order from 0) and return the attention
    /// weights of this position, `[layer][head][t]` for `t` in `0..=pos`.
    fn attend(&mut self, token: u32, pos: usize) -> Result<Vec<Vec<Vec<f32>>>>;
}

impl AttentionMaps {
    /// Run `tokens` through `source`, one position after the other, and keep every head's
    /// weights. Errors if the source fails or reports weights of the wrong shape.
    pub fn record(source: &mut impl AttentionSource, tokens: &[u32]) -> Result<AttentionMaps> {
        let (layers, heads) = source.shape();
        let n = tokens.len();
        let mut weights = vec![0.0f32; layers * heads * n * n];
        for (q, &token) in tokens.iter().enumerate() {
            let attention = source.attend(token, q)?;
            let wrong = attention.len() != layers
                || attention
                    .iter()
                    .any(|l| l.len() != heads || l.iter().any(|h| h.len() != q + 1));
            if wrong {
                return Err(Error::input(format!(
                    "attention weights at position {q} are not {layers} layers x {heads} heads \
                     of {} positions",
                    q + 1
                )));
            }
            for (l, layer) in attention.iter().enumerate() {
                for (h, row) in layer.iter().enumerate() {
                    let start = ((l * heads + h) * n + q) * n;
                    weights[start..start + q + 1].copy_from_slice(row);
                }
            }
        }
        AttentionMaps::new(layers, heads, tokens.to_vec(), weights)
    }

    /// The maps of `prompt` (encoded with BOS) for the checkpoint at `path`, read with
    /// `tokenizer`. Errors if the prompt is longer than [`MAX_TOKENS`] or the model's context.
    pub fn of_prompt(path: &Path, tokenizer: &Tokenizer, prompt: &[u8]) -> Result<AttentionMaps> {
        let tokens = tokenizer.encode(prompt, true, false)?;
        if tokens.len() > MAX_TOKENS {
            return Err(Error::input(format!(
                "the prompt is {} tokens (BOS included); attention pictures take at most \
                 {MAX_TOKENS}",
                tokens.len()
            )));
        }
        let mut source = ReferenceSource::open(path)?;
        if tokens.len() > source.weights.config.seq_len {
            return Err(Error::input(format!(
                "the prompt is {} tokens, longer than the {}-position context of model {}",
                tokens.len(),
                source.weights.config.seq_len,
                path.display()
            )));
        }
        AttentionMaps::record(&mut source, &tokens)
    }

    /// Maps from weights laid out `(layers, heads, n, n)` with `n = tokens.len()`. Errors if the
    /// number of weights does not match.
    pub fn new(
        layers: usize,
        heads: usize,
        tokens: Vec<u32>,
        weights: Vec<f32>,
    ) -> Result<AttentionMaps> {
        let n = tokens.len();
        let expected = layers
            .checked_mul(heads)
            .and_then(|m| m.checked_mul(n))
            .and_then(|m| m.checked_mul(n));
        if expected != Some(weights.len()) {
            return Err(Error::input(format!(
                "{} attention weights do not make {layers} layers x {heads} heads of {n} x {n}",
                weights.len()
            )));
        }
        Ok(AttentionMaps {
            layers,
            heads,
            tokens,
            weights,
        })
    }

    /// Number of layers.
    pub fn layers(&self) -> usize {
        self.layers
    }

    /// Number of (query) heads per layer.
    pub fn heads(&self) -> usize {
        self.heads
    }

    /// The tokens, position by position.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Row `query` of the map of head `head` in layer `layer`: its weight on every position,
    /// `(n,)`, zero after `query`.
    pub fn row(&self, layer: usize, head: usize, query: usize) -> &[f32] {
        let n = self.tokens.len();
        let start = ((layer * self.heads + head) * n + query) * n;
        &self.weights[start..start + n]
    }

    /// The picture: one heat map per layer (rows of the grid) and head (columns), query
    /// positions down and key positions across, labelled with `labels` (one per token, e.g.
    /// [`token_labels`]; missing ones become `#position`). Each cell's tooltip gives its exact
    /// weight.
    pub fn to_svg(&self, labels: &[String]) -> String {
        // One label per position: positions without one are labelled by their number.
        let labels: Vec<String> = (0..self.tokens.len())
            .map(|i| labels.get(i).cloned().unwrap_or_else(|| format!("#{i}")))
            .collect();
        let labels = &labels[..];
        let layout = Layout::new(self.tokens.len(), labels);
        let (width, height) = layout.size(self.layers, self.heads);
        let mut svg = Svg::new(width, height);
        let title = TextStyle {
            size: 14.0,
            ..TextStyle::default()
        };
        svg.text(
            (MARGIN, 22.0),
            "attention weights: row = query position, column = the position it attends to",
            title,
        );
        draw_legend(&mut svg, width - MARGIN - LEGEND_WIDTH, 12.0);
        for layer in 0..self.layers {
            for head in 0..self.heads {
                self.draw_map(&mut svg, &layout, labels, layer, head);
            }
        }
        svg.finish()
    }

    /// One heat map, with its title, and token labels if it is on the left or bottom edge.
    fn draw_map(&self, svg: &mut Svg, at: &Layout, labels: &[String], layer: usize, head: usize) {
        let n = self.tokens.len();
        let (x0, y0) = at.origin(layer, head);
        let side = at.cell * n as f64;
        let small = TextStyle {
            size: 11.0,
            ..TextStyle::default()
        };
        svg.text(
            (x0, y0 - 5.0),
            &format!("layer {layer}, head {head}"),
            small,
        );
        // The masked triangle stays grey: those positions are in the future.
        svg.rect(x0, y0, side, side, MASKED, None);
        for q in 0..n {
            for (k, &w) in self.row(layer, head, q)[..=q].iter().enumerate() {
                let tip = format!(
                    "layer {layer} head {head}: position {q} to {k} = {w:.6} ({} to {})",
                    labels[q], labels[k]
                );
                let (x, y) = (x0 + k as f64 * at.cell, y0 + q as f64 * at.cell);
                svg.rect(x, y, at.cell, at.cell, &heat(w), Some(&tip));
            }
        }
        let label = TextStyle {
            size: LABEL_FONT,
            anchor: Anchor::End,
            rotate: 0.0,
        };
        if head == 0 {
            for (q, text) in labels.iter().enumerate() {
                let y = y0 + (q as f64 + 0.5) * at.cell + LABEL_FONT / 3.0;
                svg.text((x0 - 4.0, y), text, label);
            }
        }
        if layer + 1 == self.layers {
            let down = TextStyle {
                rotate: -90.0,
                ..label
            };
            for (k, text) in labels.iter().enumerate() {
                let x = x0 + (k as f64 + 0.5) * at.cell + LABEL_FONT / 3.0;
                svg.text((x, y0 + side + 4.0), text, down);
            }
        }
    }
}

/// The plain forward pass of [`crate::reference`] as an [`AttentionSource`]: it returns every
/// head's attention weights along with the logits. It copies the weights (dequantizing int8
/// ones), so it suits the small models pictures are drawn for.
pub struct ReferenceSource {
    weights: reference::Weights,
    cache: reference::KvCache,
}

impl ReferenceSource {
    /// A source running `weights`, with an empty cache.
    pub fn new(weights: reference::Weights) -> ReferenceSource {
        let cache = reference::KvCache::new(&weights.config);
        ReferenceSource { weights, cache }
    }

    /// Read the checkpoint at `path` (any format) with the reference reader.
    pub fn open(path: &Path) -> Result<ReferenceSource> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let weights = reference::parse(&bytes).map_err(|e| match e {
            Error::Checkpoint { problem, .. } => {
                Error::checkpoint(&path.display().to_string(), problem)
            }
            other => other,
        })?;
        Ok(ReferenceSource::new(weights))
    }
}

impl AttentionSource for ReferenceSource {
    fn shape(&self) -> (usize, usize) {
        (self.weights.config.n_layers, self.weights.config.n_heads)
    }

    fn attend(&mut self, token: u32, pos: usize) -> Result<Vec<Vec<Vec<f32>>>> {
        Ok(reference::forward(&self.weights, &mut self.cache, token, pos)?.attention)
    }
}

/// A readable label for each token: its piece, quoted and escaped ([`escape_piece`]),
/// shortened to [`LABEL_CHARS`] characters.
pub fn token_labels(tokenizer: &Tokenizer, tokens: &[u32]) -> Vec<String> {
    tokens
        .iter()
        .map(|&id| {
            let piece = tokenizer.piece(id).unwrap_or(b"?");
            let label = escape_piece(piece);
            if label.chars().count() > LABEL_CHARS {
                let short: String = label.chars().take(LABEL_CHARS - 1).collect();
                format!("{short}…")
            } else {
                label
            }
        })
        .collect()
}

/// Longest token label, in characters.
pub const LABEL_CHARS: usize = 16;
/// Font size of the token labels, and the width of one of their characters (roughly).
const LABEL_FONT: f64 = 10.0;
const LABEL_CHAR_WIDTH: f64 = 6.0;
/// Space around the picture, between maps, and above the first row (title and legend).
const MARGIN: f64 = 12.0;
const GAP: f64 = 22.0;
const HEADER: f64 = 60.0;
const LEGEND_WIDTH: f64 = 160.0;
/// Colour of the positions the causal mask hides.
const MASKED: &str = "#e8e8e8";

/// Where the maps go.
struct Layout {
    /// Side of one cell, in pixels.
    cell: f64,
    /// Side of one map.
    side: f64,
    /// Room for the token labels left of and below the maps.
    labels: f64,
}

impl Layout {
    fn new(n: usize, labels: &[String]) -> Layout {
        // Maps of about 240 pixels, with cells between 4 and 18 pixels.
        let cell = (240 / n.max(1)).clamp(4, 18) as f64;
        let longest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
        Layout {
            cell,
            side: cell * n as f64,
            labels: longest as f64 * LABEL_CHAR_WIDTH + 8.0,
        }
    }

    /// Top left corner of the map of `layer` (row) and `head` (column).
    fn origin(&self, layer: usize, head: usize) -> (f64, f64) {
        (
            MARGIN + self.labels + head as f64 * (self.side + GAP),
            HEADER + layer as f64 * (self.side + GAP),
        )
    }

    /// Width and height of the whole picture.
    fn size(&self, layers: usize, heads: usize) -> (f64, f64) {
        let (x, y) = self.origin(layers, heads);
        let width = (x - GAP + MARGIN).max(2.0 * MARGIN + LEGEND_WIDTH + 420.0);
        (width, y - GAP + self.labels + MARGIN)
    }
}

/// The colour of weight `w` in `[0, 1]`: white for 0 to deep blue for 1.
fn heat(w: f32) -> String {
    let w = w.clamp(0.0, 1.0) as f64;
    let mix = |from: f64, to: f64| (from + (to - from) * w).round() as u8;
    format!(
        "rgb({},{},{})",
        mix(255.0, 8.0),
        mix(255.0, 48.0),
        mix(255.0, 107.0)
    )
}

/// A colour bar from 0 to 1 with its ends labelled.
fn draw_legend(svg: &mut Svg, x: f64, y: f64) {
    const STEPS: usize = 20;
    let step = LEGEND_WIDTH / STEPS as f64;
    for i in 0..STEPS {
        let w = (i as f32 + 0.5) / STEPS as f32;
        svg.rect(x + i as f64 * step, y, step, 12.0, &heat(w), None);
    }
    let small = TextStyle {
        size: 10.0,
        anchor: Anchor::Middle,
        rotate: 0.0,
    };
    svg.text((x, y + 24.0), "0", small);
    svg.text((x + LEGEND_WIDTH, y + 24.0), "1", small);
    let masked_at = (x - 90.0, y);
    svg.rect(masked_at.0, masked_at.1, 12.0, 12.0, MASKED, None);
    let note = TextStyle {
        size: 10.0,
        ..TextStyle::default()
    };
    svg.text((masked_at.0 + 16.0, y + 10.0), "masked", note);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heat_runs_from_white_to_blue() {
        assert_eq!(heat(0.0), "rgb(255,255,255)");
        assert_eq!(heat(1.0), "rgb(8,48,107)");
        assert_eq!(heat(7.0), heat(1.0));
    }

    #[test]
    fn weights_must_fill_the_maps() {
        assert!(AttentionMaps::new(2, 3, vec![1, 5], vec![0.0; 2 * 3 * 4]).is_ok());
        assert!(AttentionMaps::new(2, 3, vec![1, 5], vec![0.0; 23]).is_err());
        assert!(AttentionMaps::new(usize::MAX, 3, vec![1, 5], vec![]).is_err());
    }
}
