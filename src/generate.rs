//! The loops that drive a model: text generation, Llama 2 chat, and evaluation of a text.
//!
//! Each reproduces `run.c`'s loop step for step, so the same model, tokenizer, sampler settings
//! and prompt give the same tokens. Nothing here prints: output goes to the caller as tokens
//! ([`Generator`] is an iterator) or through a callback ([`Chat::turn`]).

use crate::error::{Error, Result};
use crate::model::{Logits, Model, State};
#[allow(unused_imports)]
use crate::prelude::*;
use crate::sampler::Sampler;
use crate::text::{Text, Token};
use crate::tokenizer::{self, Tokenizer, BOS, EOS};

/// Resolve a requested number of steps as `run.c` does: 0, or more than the context, means the
/// whole context.
pub fn resolve_steps(steps: usize, seq_len: usize) -> usize {
    if steps == 0 || steps > seq_len {
        seq_len
    } else {
        steps
    }
}

fn check_vocabularies(model: &Model, tokenizer: &Tokenizer) -> Result<()> {
    let (m, t) = (model.config().vocab_size, tokenizer.vocab_size());
    if m <= EOS as usize {
        return Err(Error::checkpoint(
            model.name(),
            format!("a vocabulary of {m} tokens has no room for BOS and EOS (ids 1 and 2)"),
        ));
    }
    if m != t {
        return Err(Error::input(format!(
            "the tokenizer has {t} tokens but model {} has a vocabulary of {m}",
            model.name()
        )));
    }
    Ok(())
}

/// Generates text from a prompt, one token per iteration, as `run.c`'s `generate` does.
///
/// The prompt is encoded with BOS. Each step runs one position through the model: while the
/// prompt lasts the next token is the prompt's, afterwards it is sampled. The iterator yields
/// every token after the first (so the prompt's own text comes first), and stops after `steps`
/// positions or when the model produces BOS.
///
/// The prompt goes through the model as one batch on the first step ([`Model::forward_batch`]),
/// which gives the same logits as feeding it one token at a time, only faster; its tokens are
/// then yielded without running the model again.
pub struct Generator<'a> {
    model: &'a Model,
    tokenizer: &'a Tokenizer,
    sampler: Sampler,
    state: State,
    prompt: Vec<u32>,
    steps: usize,
    pos: usize,
    token: u32,
    finished: bool,
    /// Positions already run in the prompt batch (0 before the first step).
    prefilled: usize,
}

impl<'a> Generator<'a> {
    /// Prepare to generate from `prompt` (any bytes) for `steps` positions, prompt included (0
    /// means the whole context; more than the context is capped to it).
    ///
    /// As in `run.c`, a prompt of more than `steps` tokens is run only up to `steps` (the
    /// iterator then yields just that much of the prompt). A prompt longer than the model's
    /// whole context is an error: no position would be left to generate from.
    pub fn new(
        model: &'a Model,
        tokenizer: &'a Tokenizer,
        sampler: Sampler,
        prompt: &[u8],
        steps: usize,
    ) -> Result<Generator<'a>> {
        check_vocabularies(model, tokenizer)?;
        let steps = resolve_steps(steps, model.config().seq_len);
        let prompt = tokenizer.encode(prompt, true, false)?;
        let context = model.config().seq_len;
        if prompt.len() > context {
            return Err(Error::input(format!(
                "the prompt is {} tokens, longer than the {context}-position context of model {}",
                prompt.len(),
                model.name()
            )));
        }
        let state = model.new_state_with_capacity(steps)?;
        Ok(Generator {
            model,
            tokenizer,
            sampler,
            state,
            token: prompt[0],
            prompt,
            steps,
            pos: 0,
            finished: false,
            prefilled: 0,
        })
    }

    /// The prompt's token ids, BOS first.
    pub fn prompt_tokens(&self) -> &[u32] {
        &self.prompt
    }

    /// How many positions have been run through the model so far (the whole prompt is run on
    /// the first step).
    pub fn positions(&self) -> usize {
        self.pos.max(self.prefilled)
    }

    /// The number of positions this generator will run at most.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// The sampler, e.g. to read the candidates of the last sampled token
    /// ([`Sampler::top_k`]).
    pub fn sampler(&self) -> &Sampler {
        &self.sampler
    }

    /// The generated text as `String` chunks, with characters that were spelled in byte tokens
    /// put back together (see [`Text`]).
    pub fn text(self) -> Text<Generator<'a>> {
        Text::new(self)
    }

    fn step(&mut self) -> Result<Option<Token>> {
        if self.finished || self.pos >= self.steps {
            return Ok(None);
        }
        if self.pos == 0 {
            self.prefill()?;
        }
        let logits = if self.pos < self.prefilled {
            // Run in the batch already; the logits kept are the last position's, the only
            // ones sampled from.
            self.state.logits_mut()
        } else {
            self.model.forward(&mut self.state, self.token, self.pos)?
        };
        let from_prompt = self.pos + 1 < self.prompt.len();
        let next = if from_prompt {
            self.prompt[self.pos + 1]
        } else {
            self.sampler.sample(logits)
        };
        self.pos += 1;
        // BOS delimits sequences: the model has finished its story.
        if next == BOS {
            self.finished = true;
            return Ok(None);
        }
        let bytes = self.tokenizer.decode(self.token, next)?.to_vec();
        self.token = next;
        Ok(Some(Token {
            id: next,
            bytes,
            from_prompt,
        }))
    }
}

impl Generator<'_> {
    /// Run, as one batch, the prompt positions `run.c` would feed one at a time: all of them,
    /// unless the steps run out first or a BOS inside the prompt ends generation early.
    fn prefill(&mut self) -> Result<()> {
        let until_bos = self.prompt[1..]
            .iter()
            .position(|&t| t == BOS)
            .map_or(self.prompt.len(), |i| i + 1);
        let batch = until_bos.min(self.steps);
        if batch > 1 {
            let tokens = &self.prompt[..batch];
            self.model
                .forward_batch(&mut self.state, tokens, 0, Logits::Last)?;
            self.prefilled = batch;
        }
        Ok(())
    }
}

impl Iterator for Generator<'_> {
    type Item = Result<Token>;

    fn next(&mut self) -> Option<Result<Token>> {
        match self.step() {
            Ok(token) => token.map(Ok),
            Err(e) => {
                self.finished = true;
                Some(Err(e))
            }
        }
    }
}

/// A Llama 2 chat conversation, turn by turn, as `run.c`'s `chat` runs it.
///
/// Every turn renders the user's message (and, on the first turn, the optional system prompt)
/// into Llama 2's `[INST]` template, runs it through the model, and lets the model answer until
/// it produces EOS. The whole conversation shares one context of `steps` positions.
pub struct Chat<'a> {
    model: &'a Model,
    tokenizer: &'a Tokenizer,
    sampler: Sampler,
    state: State,
    steps: usize,
    pos: usize,
    /// The last sampled token, fed back in once the prompt is used up.
    next: u32,
}

impl<'a> Chat<'a> {
    /// Start a conversation of at most `steps` positions (0 means the whole context).
    pub fn new(
        model: &'a Model,
        tokenizer: &'a Tokenizer,
        sampler: Sampler,
        steps: usize,
    ) -> Result<Chat<'a>> {
        check_vocabularies(model, tokenizer)?;
        let steps = resolve_steps(steps, model.config().seq_len);
        let state = model.new_state_with_capacity(steps)?;
        Ok(Chat {
            model,
            tokenizer,
            sampler,
            state,
            steps,
            pos: 0,
            next: 0,
        })
    }

    /// True while no turn has been taken: only the first turn carries a system prompt.
    pub fn is_first_turn(&self) -> bool {
        self.pos == 0
    }

    /// True once the context is used up.
    pub fn is_finished(&self) -> bool {
        self.pos >= self.steps
    }

    /// Render a turn in Llama 2's chat template. The system prompt is used only on the first turn
    /// and only if not empty.
    pub fn render(&self, system: &[u8], user: &[u8]) -> Vec<u8> {
        let mut text = Vec::new();
        if self.is_first_turn() && !system.is_empty() {
            text.extend_from_slice(b"[INST] <<SYS>>\n");
            text.extend_from_slice(system);
            text.extend_from_slice(b"\n<</SYS>>\n\n");
            text.extend_from_slice(user);
            text.extend_from_slice(b" [/INST]");
        } else {
            text.extend_from_slice(b"[INST] ");
            text.extend_from_slice(user);
            text.extend_from_slice(b" [/INST]");
        }
        text
    }

    /// Take one turn: feed the rendered user message, then let the assistant answer until it
    /// ends its turn or the context is full. `output` receives exactly the bytes `run.c` prints
    /// during the turn (the answer's pieces, and a newline where the model produced EOS).
    ///
    /// As in `run.c`, a message that does not fit in what is left of the conversation is run
    /// until the context is full. A message longer than the model's whole context is refused
    /// with an error before anything is run, so the conversation can go on with a shorter one.
    ///
    /// The message goes through the model in batches. `run.c` samples after every position,
    /// prompt included (which moves the random generator, and prints a newline when the sample
    /// is EOS), so the batches compute the logits of every position and each is sampled in turn.
    pub fn turn(
        &mut self,
        system: &[u8],
        user: &[u8],
        mut output: impl FnMut(&[u8]),
    ) -> Result<()> {
        let rendered = self.render(system, user);
        let prompt = self.tokenizer.encode(&rendered, true, false)?;
        let context = self.model.config().seq_len;
        if prompt.len() > context {
            return Err(Error::input(format!(
                "the chat message is {} tokens, longer than the {context}-position context of \
                 model {}",
                prompt.len(),
                self.model.name()
            )));
        }
        let Chat {
            model,
            tokenizer,
            sampler,
            state,
            steps,
            pos,
            next,
        } = self;
        let vocab_size = model.config().vocab_size;
        // run.c feeds the message until the context is full, and ends the turn right after
        // feeding an EOS (even one from the message).
        let through_eos = prompt
            .iter()
            .position(|&t| t == EOS)
            .map_or(prompt.len(), |i| i + 1);
        let fed = through_eos.min(steps.saturating_sub(*pos));
        let mut used = 0;
        for batch in prompt[..fed].chunks(LOGITS_BATCH) {
            let logits = model.forward_batch(state, batch, *pos, Logits::All)?;
            for (&token, row) in batch.iter().zip(logits.chunks_exact_mut(vocab_size)) {
                used += 1;
                *pos += 1;
                *next = sample_and_show(
                    sampler,
                    tokenizer,
                    token,
                    row,
                    used == prompt.len(),
                    &mut output,
                )?;
                if token == EOS {
                    return Ok(());
                }
            }
        }
        // The answer, one position at a time, each feeding in the token sampled before it.
        while *pos < *steps {
            let token = *next;
            let logits = model.forward(state, token, *pos)?;
            *pos += 1;
            *next = sample_and_show(sampler, tokenizer, token, logits, true, &mut output)?;
            if token == EOS {
                break;
            }
        }
        Ok(())
    }
}

/// Positions per batch when the logits of every position are needed (chat, evaluation): bounds
/// that buffer to 64 x 32000 floats, 8 MB, for the Llama 2 vocabulary.
const LOGITS_BATCH: usize = 64;

/// What `run.c` does after each position of a chat: sample the next token from `logits`; once
/// the message is used up (`answering`), print the piece from `token` to it unless it is EOS;
/// print a newline for EOS. Returns the sampled token.
fn sample_and_show(
    sampler: &mut Sampler,
    tokenizer: &Tokenizer,
    token: u32,
    logits: &mut [f32],
    answering: bool,
    output: &mut impl FnMut(&[u8]),
) -> Result<u32> {
    let next = sampler.sample(logits);
    if answering && next != EOS {
        output(tokenizer::printable(tokenizer.decode(token, next)?));
    }
    if next == EOS {
        output(b"\n");
    }
    Ok(next)
}

/// The result of [`evaluate`]: how well a model predicts a text.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    /// Number of next-token predictions scored.
    pub tokens: usize,
    /// Mean cross-entropy of those predictions, in nats.
    pub loss: f64,
}

impl Evaluation {
    /// `exp(loss)`.
    pub fn perplexity(&self) -> f64 {
        self.loss.exp()
    }
}

/// Teacher-forced evaluation: encode `text` with BOS, run it through the model and average
/// `-ln p(next token)` over every position. Texts longer than the context are scored in
/// consecutive windows of `seq_len` predictions, each starting from an empty cache.
pub fn evaluate(model: &Model, tokenizer: &Tokenizer, text: &[u8]) -> Result<Evaluation> {
    check_vocabularies(model, tokenizer)?;
    let tokens = tokenizer.encode(text, true, false)?;
    let seq_len = model.config().seq_len;
    let mut state = model.new_state_with_capacity(seq_len.min(tokens.len()))?;
    let mut total = 0.0f64;
    let mut scored = 0;
    let vocab_size = model.config().vocab_size;
    // Windows of seq_len inputs, each scored against the token that follows it.
    let inputs = &tokens[..tokens.len() - 1];
    for (w, window) in inputs.chunks(seq_len).enumerate() {
        state.reset();
        for (b, batch) in window.chunks(LOGITS_BATCH).enumerate() {
            let start = b * LOGITS_BATCH;
            let logits = model.forward_batch(&mut state, batch, start, Logits::All)?;
            for (i, row) in logits.chunks_exact(vocab_size).enumerate() {
                total += cross_entropy(row, tokens[w * seq_len + start + i + 1]);
                scored += 1;
            }
        }
    }
    if scored == 0 {
        return Err(Error::input(
            "nothing to evaluate: the text encodes to no tokens after BOS",
        ));
    }
    Ok(Evaluation {
        tokens: scored,
        loss: total / scored as f64,
    })
}

/// `-ln softmax(logits)[target]` as a log-sum-exp in f64, `max + ln Σ e^(v - max) - logit`, so
/// that long texts average accurately and no probability underflows to 0 (which the `f32`
/// softmax of [`crate::kernels::softmax`] does below `e^-103`). `target` must index `logits`
/// (evaluate checks every token against the vocabulary first).
fn cross_entropy(logits: &[f32], target: u32) -> f64 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let sum: f64 = logits.iter().map(|&v| (v as f64 - max).exp()).sum();
    max + sum.ln() - logits[target as usize] as f64
}
