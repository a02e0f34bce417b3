/* c-demo: tell a story with llama2-rs from C.
 *
 * Reads a checkpoint and a tokenizer into memory (a device would keep them in flash), opens
 * them through include/llama2.h and prints the story piece by piece as the callback receives it.
 *
 *   usage: c-demo MODEL TOKENIZER [PROMPT]
 *
 * Greedy decoding (temperature 0) for 200 positions, like `run MODEL -z TOKENIZER -t 0 -n 200`.
 */
#include <stdio.h>
#include <stdlib.h>

#include "llama2.h"

/* The demo's own allocator reports its high-water mark (examples/c-demo/src/lib.rs). */
size_t llama2_heap_peak(void);

/* The whole file in a heap buffer (malloc's alignment suits the model's float weights). */
static uint8_t *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *bytes = size > 0 ? malloc((size_t)size) : NULL;
    if (bytes && fread(bytes, 1, (size_t)size, f) != (size_t)size) {
        free(bytes);
        bytes = NULL;
    }
    fclose(f);
    *len = (size_t)size;
    return bytes;
}

static int print_piece(const char *piece, size_t len, void *user) {
    (void)user;
    fwrite(piece, 1, len, stdout);
    fflush(stdout);
    return 0; /* go on */
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL TOKENIZER [PROMPT]\n", argv[0]);
        return 1;
    }
    size_t model_len = 0, tok_len = 0;
    uint8_t *model_bytes = read_all(argv[1], &model_len);
    uint8_t *tok_bytes = read_all(argv[2], &tok_len);
    if (!model_bytes || !tok_bytes) {
        fprintf(stderr, "c-demo: cannot read %s\n", model_bytes ? argv[2] : argv[1]);
        return 1;
    }
    llama2_error error;
    llama2_model *model = NULL;
    llama2_tokenizer *tokenizer = NULL;
    int status = llama2_model_open(model_bytes, model_len, &model, &error);
    if (status == LLAMA2_OK)
        status = llama2_tokenizer_open(tok_bytes, tok_len, model, &tokenizer, &error);
    if (status == LLAMA2_OK)
        status = llama2_generate(model, tokenizer, argc > 3 ? argv[3] : "", 200,
                                 0.0f, 0.9f, 42, print_piece, NULL, &error);
    printf("\n");
    fprintf(stderr, "c-demo: heap high-water mark %zu bytes\n", llama2_heap_peak());
    if (status != LLAMA2_OK) fprintf(stderr, "c-demo: %s (status %d)\n", error.message, status);
    llama2_tokenizer_free(tokenizer);
    llama2_model_free(model);
    free(tok_bytes);
    free(model_bytes);
    return status == LLAMA2_OK ? 0 : 1;
}
