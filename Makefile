# llama2-rs: the everyday commands. `make run` tells a story, `make test` runs every test.

CARGO ?= cargo
MODEL ?= tests/models/stories260K.bin
TOKENIZER ?= tests/models/tok512.bin
ARGS ?=

.PHONY: build run test lint examples bench bench-train c-demo train clean

build:
	$(CARGO) build --release

# Tell a story with the bundled 260K-parameter TinyStories model.
run: build
	./target/release/llama2 $(MODEL) -z $(TOKENIZER) $(ARGS)

# Every test, with and without threads; then the no_std core (with its C API): it builds with no
# dependency, and without std's maths still tells llama2.c's stories.
test:
	$(CARGO) test --release
	$(CARGO) test --release --no-default-features --features std
	$(CARGO) build --release --no-default-features --features capi
	$(CARGO) test --release --no-default-features --test no_std

# Formatting, lints and documentation must be clean.
lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy --all-targets --no-default-features --features std -- -D warnings
	$(CARGO) clippy --lib --no-default-features --features capi -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps

# Run both examples on the bundled model.
examples:
	$(CARGO) run --release --example story -- $(MODEL) $(TOKENIZER) "Once upon a time"
	$(CARGO) run --release --example embedded

# Speed on this machine: one table for stories260K and synthetic stories15M/42M/110M (written to
# target/bench-models/ on first use). LLAMA2C_RUN=/path/to/llama2.c/run adds llama2.c's numbers.
bench:
	$(CARGO) bench --bench bench

# Training speed on this machine: tokens/s, share of the FLOP peak, forward/backward/optimizer
# times and peak memory for the stories260K recipe and stories15M shapes, float32 and bfloat16.
# scripts/pytorch_train_bench.py prints PyTorch's tokens/s for the same shapes.
bench-train:
	$(CARGO) bench --bench train

# The C API from C: llama2-rs built as a no_std static library (examples/c-demo: a panic handler
# and a heap of the demo's own), linked into a small C program that tells a story: llama2.c's
# greedy story, byte for byte.
C_DEMO := examples/c-demo
c-demo:
	$(CARGO) build --release --manifest-path $(C_DEMO)/Cargo.toml
	$(CC) -O2 -Wall -Wextra -Iinclude $(C_DEMO)/main.c $(C_DEMO)/target/release/libllama2_c.a -o $(C_DEMO)/target/c-demo
	$(C_DEMO)/target/c-demo $(MODEL) $(TOKENIZER) > $(C_DEMO)/target/story.txt
	cat $(C_DEMO)/target/story.txt
	cmp $(C_DEMO)/target/story.txt tests/expected/stories260K_t0.0_n200.txt
# Train a small model from scratch in a minute or two: sample a corpus of short stories from the
# bundled stories260K, train a 512-token vocabulary on it, pretokenize it, train a model, and tell
# a story with the result: raw text to story with nothing but this crate.
# Everything goes to $(TRAIN_DIR); `make train TRAIN_ARGS="--max-iters 600"` trains longer.
TRAIN_DIR ?= target/train-demo
TRAIN_STORIES ?= 400
TRAIN_ARGS ?=
train: build
	@mkdir -p $(TRAIN_DIR)
	@echo "sampling $(TRAIN_STORIES) stories from $(MODEL) into $(TRAIN_DIR)/stories.txt"
	@for seed in $$(seq 1 $(TRAIN_STORIES)); do \
		./target/release/llama2 $(MODEL) -z $(TOKENIZER) -n 256 -t 1.0 -s $$seed 2>/dev/null | tr '\n' ' '; echo; \
	done > $(TRAIN_DIR)/stories.txt
	./target/release/llama2 train-tokenizer --vocab-size 512 -o $(TRAIN_DIR)/tok512.bin $(TRAIN_DIR)/stories.txt
	./target/release/llama2 pretokenize -z $(TRAIN_DIR)/tok512.bin -o $(TRAIN_DIR)/stories.bin $(TRAIN_DIR)/stories.txt
	@rm -rf $(TRAIN_DIR)/run
	./target/release/llama2 train --data $(TRAIN_DIR)/stories.bin --out $(TRAIN_DIR)/run \
		--vocab-size 512 --dim 64 --n-layers 4 --n-heads 4 --max-seq-len 128 \
		--batch-size 16 --gradient-accumulation-steps 1 --learning-rate 3e-3 --warmup-iters 30 \
		--max-iters 300 --eval-interval 50 --eval-iters 4 --dropout 0.0 $(TRAIN_ARGS)
	./target/release/llama2 $(TRAIN_DIR)/run/model.bin -z $(TRAIN_DIR)/tok512.bin -n 200 -t 0.8 -i "Once upon a time"

clean:
	$(CARGO) clean
