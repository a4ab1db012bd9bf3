/* gen_gpt2.h -- writes deterministic random-weight GPT-2 checkpoints in Hugging Face layout (used by tools/gen-gpt2 and the tests).
 *
 * Values. Every element is a pure function of (seed, tensor name without
 * "transformer.", element index): h = splitmix64-mix(key(seed, name) +
 * (i + 1) * 0x9e3779b97f4a7c15), whose top 24 bits k give the odd integer
 * m = 2k - (2^24 - 1), so u = m / 2^24 is uniform on (-1, 1), symmetric, in
 * 2^24 steps. A tensor of standard deviation s gets the float nearest to
 * m * (s * sqrt(3) / 2^24) (one rounding of an exact product, so the same on
 * every IEEE machine; no libm). With X = --std (default 0.08):
 *   wte, lm_head, attn.c_attn/c_proj, mlp.c_fc/c_proj weights: std X
 *   wpe: std X/2;  all linear biases: std X/4
 *   ln_*.weight: 1 + (std X);  ln_*.bias: std X/4
 * so for C = 768 the logits spread with a standard deviation of about
 * sqrt(C) * X = 2.2 and greedy decoding does not sit on near-ties.
 * F16/BF16 files hold those float values rounded to nearest even, so files
 * of one seed in different dtypes agree as closely as the dtypes allow.
 * The extra buffers written with prefix: h.N.attn.bias (BOOL [1, 1, P, P],
 * lower triangle true), as older transformers saved them. */
#ifndef LLMCGI_GEN_GPT2_H
#define LLMCGI_GEN_GPT2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "checkpoint.h"

struct gen_gpt2_opts {
    const char *out_dir;          /* created if missing (one level) */
    int n_layer, n_head, n_embd;
    int n_inner;                  /* 0: null in config.json (4 * n_embd) */
    int n_positions, vocab_size;
    enum ckpt_dtype dtype;
    uint64_t seed;
    double std;                   /* X above */
    int shards;                   /* <= 1: model.safetensors; else that many shards + index */
    bool prefix;                  /* "transformer." names and h.N.attn.bias buffers */
    bool untied;                  /* tie_word_embeddings false and an lm_head.weight of its own */
    const char *activation;       /* activation_function */
    const char *tokenizer_dir;    /* copy vocab.json and merges.txt from here; NULL: none */
    /* A GPT2ForSequenceClassification directory when num_labels > 0: a
     * score.weight [num_labels, n_embd] (std X) instead of an LM head, and
     * config.json's id2label/label2id, problem_type and pad_token_id. */
    int num_labels;
    const char *labels;           /* comma-separated names (num_labels of them); NULL: LABEL_0.. */
    const char *problem_type;     /* "single_label_classification", ...; NULL: null */
    int pad_token_id;             /* -1: null */
};

/* The defaults: 2 layers, 2 heads, 64 wide, 128 positions, vocab 50257,
 * F32, seed 1234, std 0.08, one file, no prefix, tied, gelu_new, a
 * language model (num_labels 0, pad_token_id -1). */
void gen_gpt2_defaults(struct gen_gpt2_opts *o);

/* Writes the model directory. Returns 0, or -1 with a message in err. */
int gen_gpt2_write(const struct gen_gpt2_opts *o, char *err, size_t errlen);

/* The float value of element i of tensor `name` (without "transformer.",
 * e.g. "h.0.attn.c_attn.weight", "lm_head.weight") before any conversion to
 * the file's dtype. */
float gen_gpt2_value(const struct gen_gpt2_opts *o, const char *name, uint64_t i);

/* Bytes of the model weights the options produce (what gpt2_checkpoint_open
 * reports as weight_bytes; the attn.bias buffers are not counted). */
uint64_t gen_gpt2_weight_bytes(const struct gen_gpt2_opts *o);

#endif
