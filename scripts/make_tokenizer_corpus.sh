#!/bin/sh
# Writes text for the tokenizer trainer's tests: stories told by the bundled stories260K model,
# one run of `llama2` per seed, seeds FIRST..LAST, each run's text as it comes (a document per
# line). The committed fixtures were made from the repository root with
#
#     cargo build --release
#     sh scripts/make_tokenizer_corpus.sh 1 600 256 > tests/fixtures/tokenizer/corpus.txt
#     sh scripts/make_tokenizer_corpus.sh 100001 100100 256 > tests/fixtures/tokenizer/heldout.txt
#
# and the ~10 MB speed corpus (not committed) with
#
#     sh scripts/make_tokenizer_corpus.sh 200001 213400 512 > /tmp/corpus10mb.txt
set -eu
first=$1
last=$2
steps=${3:-256}
bin=${LLAMA2:-target/release/llama2}
seq "$first" "$last" | while read -r seed; do
    "$bin" tests/models/stories260K.bin -z tests/models/tok512.bin -t 1.0 -p 0.9 -s "$seed" -n "$steps" 2>/dev/null
done
