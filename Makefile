# llama2-rs: the everyday commands. `make run` tells a story, `make test` runs every test.

CARGO ?= cargo
MODEL ?= tests/models/stories260K.bin
TOKENIZER ?= tests/models/tok512.bin
ARGS ?=

.PHONY: build run test lint examples bench clean

build:
	$(CARGO) build --release

# Tell a story with the bundled 260K-parameter TinyStories model.
run: build
	./target/release/llama2 $(MODEL) -z $(TOKENIZER) $(ARGS)

# Every test, with and without threads.
test:
	$(CARGO) test --release
	$(CARGO) test --release --no-default-features

# Formatting, lints and documentation must be clean.
lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy --all-targets --no-default-features -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps

# Run both examples on the bundled model.
examples:
	$(CARGO) run --release --example story -- $(MODEL) $(TOKENIZER) "Once upon a time"
	$(CARGO) run --release --example embedded

# Speed on this machine: one table for stories260K and synthetic stories15M/42M/110M (written to
# target/bench-models/ on first use). LLAMA2C_RUN=/path/to/llama2.c/run adds llama2.c's numbers.
bench:
	$(CARGO) bench --bench bench

clean:
	$(CARGO) clean
