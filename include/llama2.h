/* llama2.h: the C interface of llama2-rs (build the crate with the `capi` feature).
 *
 * Open a model and its tokenizer from bytes in memory, generate text with a callback that
 * receives each piece as it comes, free. Every fallible call returns a llama2_status (0 is
 * success) and, when `error` is not NULL, writes a one-line message into it.
 *
 * The model's bytes are used in place and must stay valid, unchanged, until the model is
 * freed (on a microcontroller: a const array in flash). The tokenizer's bytes are copied.
 */
#ifndef LLAMA2_H
#define LLAMA2_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum llama2_status {
    LLAMA2_OK = 0,
    LLAMA2_ERR_ARGUMENT = 1,  /* a NULL pointer, a bad length or an out-of-range value */
    LLAMA2_ERR_MODEL = 2,     /* the model bytes are not a valid checkpoint */
    LLAMA2_ERR_TOKENIZER = 3, /* the tokenizer bytes are invalid or do not fit the model */
    LLAMA2_ERR_MEMORY = 4,    /* an allocation failed */
    LLAMA2_ERR_STOPPED = 5    /* the callback asked to stop (not a failure of the library) */
} llama2_status;

/* A one-line, NUL-terminated description of the last failure of a call. */
typedef struct llama2_error {
    char message[256];
} llama2_error;

typedef struct llama2_model llama2_model;
typedef struct llama2_tokenizer llama2_tokenizer;

/* Receives each piece of generated text (UTF-8, not NUL-terminated) in order. Return 0 to go
 * on, anything else to stop generating. */
typedef int (*llama2_piece_fn)(const char *piece, size_t len, void *user);

/* A checkpoint (llama2.c legacy, version 1 or int8 version 2) read from `len` bytes at `bytes`,
 * which should be 4-byte aligned (otherwise the weights are copied to the heap). */
llama2_status llama2_model_open(const uint8_t *bytes, size_t len, llama2_model **model,
                                llama2_error *error);
void llama2_model_free(llama2_model *model);

/* A llama2.c tokenizer.bin holding at least the model's vocabulary. */
llama2_status llama2_tokenizer_open(const uint8_t *bytes, size_t len, const llama2_model *model,
                                    llama2_tokenizer **tokenizer, llama2_error *error);
void llama2_tokenizer_free(llama2_tokenizer *tokenizer);

/* Generate from the NUL-terminated `prompt` for `steps` positions (prompt included; 0 = the
 * whole context), sampling at `temperature` (0 = greedy) with top-p `topp` and `seed`, as
 * run.c's -t, -p, -s and -n. The prompt's own text is passed to `on_piece` first. */
llama2_status llama2_generate(const llama2_model *model, const llama2_tokenizer *tokenizer,
                              const char *prompt, size_t steps, float temperature, float topp,
                              uint64_t seed, llama2_piece_fn on_piece, void *user,
                              llama2_error *error);

#ifdef __cplusplus
}
#endif

#endif /* LLAMA2_H */
