# llama2-rs: the everyday commands. `make run` tells a story, `make test` runs every test.

CARGO ?= cargo
MODEL ?= tests/models/stories260K.bin
TOKENIZER ?= tests/models/tok512.bin
ARGS ?=

.PHONY: build run test lint examples bench c-demo clean

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

clean:
	$(CARGO) clean
