/* llm.h -- the numerics interface the engine calls: load a GPT-2 model onto a backend, run one batched forward step over paged KV blocks.
 *
 * A model lives on one backend (the CPU one in kernels/cpu/, the CUDA one in
 * kernels/cuda/); both implement this header the same way and the CPU one is
 * the reference the others are tested against.
 *
 * KV memory is a pool of fixed-size blocks owned by the model, allocated once
 * at load. Which block holds which positions of which sequence is the
 * engine's business: each sequence in a step brings its block table (block
 * i holds positions [i*block_tokens, (i+1)*block_tokens)). The backend only
 * reads and writes the blocks it is given, so sequences come and go between
 * steps without the backend keeping any per-sequence state.
 *
 * One step takes any mix of sequences: some prefilling a chunk of prompt,
 * some decoding one token, each at its own position. The weights are read
 * once per step for the whole batch. */
#ifndef LLMCGI_LLM_H
#define LLMCGI_LLM_H

#include "checkpoint.h"
#include "sample.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum llm_device { LLM_DEVICE_AUTO, LLM_DEVICE_CPU, LLM_DEVICE_CUDA };

/* What the matrices (wte/lm_head, each block's four) are kept in:
 *   AUTO  on the CPU the checkpoint's own type (F32 when its matrices
 *         disagree); on a GPU half precision: a F16/BF16 checkpoint keeps its
 *         type, an F32 (or mixed) one is narrowed at load to F16 when every
 *         matrix value fits F16's range (+-65504), else to BF16;
 *   F32   widened at load; F16, BF16: converted at load (F16 refuses a
 *         checkpoint with a value beyond its range, naming the tensor);
 *   Q8    int8 Q8_0 blocks, CPU only (kernels/cpu/ops_q8.c). */
enum llm_dtype { LLM_DTYPE_AUTO, LLM_DTYPE_F32, LLM_DTYPE_F16, LLM_DTYPE_BF16, LLM_DTYPE_Q8 };

/* What the CPU backend keeps K and V in:
 *   AUTO  F16 when the matrices are F16, BF16 or Q8_0; F32 when they are
 *         F32 (so F32 models compute exactly as before);
 *   F32, F16  as asked (F16: K and V rounded to nearest as they are written).
 * The CUDA backend keeps K and V in the matrices' own type: it refuses F32
 * or F16 (device = auto then picks the CPU, saying why). */
enum llm_kv_dtype { LLM_KV_AUTO, LLM_KV_F32, LLM_KV_F16 };

/* What the CPU backend's matrix products are tuned for, fixed at load for
 * the whole model (every row count of every step takes the same kernel, so
 * a sequence's result never depends on what shares its batch):
 *   LATENCY     the kernels fastest at one sequence a step;
 *   THROUGHPUT  the kernels fastest at many: on AMX CPUs F16 weights on the
 *               tiles (measured ~15-20% more tokens/s at 32 sequences,
 *               ~15% fewer at one);
 *   AUTO        THROUGHPUT when the model runs at least LLM_TUNING_WIDE
 *               sequences at once (max_seqs below, the engine's
 *               max_concurrent), else LATENCY.
 * Where the CPU has one kernel for both (below AMX) the choice changes
 * nothing. The CUDA backend ignores it. */
enum llm_tuning { LLM_TUNING_AUTO, LLM_TUNING_LATENCY, LLM_TUNING_THROUGHPUT };
#define LLM_TUNING_WIDE 32

/* How to load. Zero means "the default" for every field. */
struct llm_load_opts {
    enum llm_device device;
    int device_index;          /* cuda:N */
    int threads;               /* CPU worker threads; 0 = one per online core */
    int kv_block_tokens;       /* positions per KV block; 0 = 16 */
    int kv_blocks;             /* blocks in the pool; 0 = from kv_bytes, else enough for one full context */
    size_t kv_bytes;           /* with kv_blocks 0: as many blocks as this many bytes hold in the
                                  backend's KV type (at least one full context) */
    int max_step_tokens;       /* most tokens one step may carry (scratch size); 0 = n_positions */
    int max_step_logits;       /* most logits rows one step may return; 0 = max_step_tokens */
    enum llm_dtype dtype;      /* the matrices' type (above); with Q8 embeddings and LayerNorms stay F32/F16 */
    enum llm_kv_dtype kv_dtype; /* the KV blocks' type (above) */
    enum llm_tuning tuning;    /* the products' tuning (above) */
    int max_seqs;              /* most sequences one step runs (the engine's max_concurrent), for
                                  tuning auto; 0 = not known (auto is then latency) */
};

/* What a loaded model is. */
struct llm_info {
    struct gpt2_config cfg;
    const char *backend;       /* "cpu", "cuda" */
    char device_name[128];     /* e.g. "cpu, 2 threads, avx2+fma+f16c", "cuda:0 NVIDIA H100 ..." */
    char fallback[160];        /* device auto landed on the CPU: why, e.g. "no CUDA device (...); using the CPU"; "" otherwise */
    enum ckpt_dtype weight_dtype;   /* what the matrices are stored in (with dtype Q8: the embeddings) */
    char weight_format[8];     /* the matrices' format: "F32", "F16", "BF16" or "Q8_0" */
    size_t weight_bytes;       /* bytes of weights the backend holds */
    size_t step_weight_bytes;  /* bytes of weights one decode step reads (the bandwidth floor's numerator) */
    int kv_block_tokens, kv_blocks;
    size_t kv_block_bytes;     /* all layers, K and V */
    char kv_format[8];         /* what the KV blocks hold: "F32", "F16" (CUDA: the matrices' type) */
    int max_step_tokens, max_step_logits;
    int threads;
    enum llm_tuning tuning;    /* the CPU's resolved choice: LATENCY or THROUGHPUT (AUTO on CUDA) */
    /* Floats in one logits row: vocab_size for a language model; num_labels
     * for a sequence classifier (cfg.classifier), whose rows are its score
     * head's logits (score.weight applied to the final-LayerNormed hidden
     * state) at the positions asked for. */
    int out_dim;
};

struct llm_model;

/* One sequence in a step. */
enum { LLM_LOGITS_NONE = 0, LLM_LOGITS_LAST = 1, LLM_LOGITS_ALL = 2 };
struct llm_seq {
    const int32_t *tokens;     /* the new tokens of this step */
    int n_tokens;              /* >= 1 */
    int pos;                   /* positions already in the KV blocks = position of tokens[0] */
    const int32_t *blocks;     /* block table; must cover pos + n_tokens positions */
    int n_blocks;
    int logits;                /* LLM_LOGITS_*: none, the last new token's row, or one row per new token */
};

/* Loads the checkpoint onto the backend o->device picks: cpu; cuda / cuda:N
 * (an error when this build has no CUDA or the device is not usable, saying
 * why); auto: CUDA device o->device_index when built with CUDA and the device
 * is usable and the model loads there, else the CPU, with the reason in
 * info.fallback for the caller to log. The backend copies what it
 * needs; ck may be closed after this returns. On success *out is a new model
 * (free with llm_free) and 0 is returned; on failure -1 with a message in err. */
int llm_load(const struct gpt2_checkpoint *ck, const struct llm_load_opts *o,
             struct llm_model **out, char *err, size_t errlen);

/* Frees the model, its KV pool and its threads (NULL is fine). */
void llm_free(struct llm_model *m);

/* Borrowed; valid while m lives. */
const struct llm_info *llm_get_info(const struct llm_model *m);

/* Runs one forward step over n_seqs sequences. Writes the K and V of every
 * new token into its blocks, and the logits rows asked for into `logits`
 * (caller-owned, info.out_dim floats per row), in sequence order. Returns 0,
 * or -1 with a message in err when the step is malformed (bad token id,
 * position past n_positions, block table too short or naming blocks outside
 * the pool, too many tokens or rows for the scratch) or the device failed;
 * nothing is written on a malformed step. Not thread-safe per model: one
 * engine thread drives a model. */
int llm_forward(struct llm_model *m, const struct llm_seq *seqs, int n_seqs,
                float *logits, char *err, size_t errlen);

/* llm_forward, and for embeddings the final hidden states: hidden[i] (NULL,
 * or caller-owned room for seqs[i].n_tokens rows of n_embd floats) gets
 * the final LayerNorm's output (ln_f, what the LM or score head reads,
 * GPT2Model's last_hidden_state) at every new token of sequence i.
 * hidden itself may be NULL (none wanted). */
int llm_forward_hidden(struct llm_model *m, const struct llm_seq *seqs, int n_seqs, float *logits,
                       float *const *hidden, char *err, size_t errlen);

/* llm_forward with each logits row chosen greedily where the model runs
 * (kernels/sample.h's steps: penalties, argmax, log-probability, top-n):
 * rows[r] is the request of logits row r (rows in sequence order, one per
 * sequence that asks LLM_LOGITS_LAST; LLM_LOGITS_ALL is refused), out[r]
 * gets its choice, id -1 when no logit of the row is above -inf (NaN
 * counts as -inf). On a GPU only the ids and the log-probabilities asked for
 * come back, not the logits rows. scratch: caller-owned room for the rows'
 * logits (info.out_dim floats each), used by backends that choose on the
 * host (the CPU's: its logits and ksample_greedy_ref), left unspecified.
 * A language model only (not a classifier). Returns 0, or -1 with err as
 * llm_forward, or when a row's request is out of range. */
int llm_forward_greedy(struct llm_model *m, const struct llm_seq *seqs, int n_seqs, const struct ksample_row *rows,
                       struct ksample_out *out, float *scratch, char *err, size_t errlen);

/* Does llm_forward_greedy choose where the model runs (a GPU: only ids and
 * logprobs come back), rather than on the host from the logits
 * (ksample_greedy_ref: scalar, ~0.4 ms a GPT-2 row, several times the
 * engine's own vectorised sampler)? */
bool llm_greedy_on_device(const struct llm_model *m);

/* "auto", "cpu", "cuda" (also "cuda:N"): parses a device name. Returns 0 or -1. */
int llm_device_parse(const char *s, enum llm_device *dev, int *index);

/* "auto", "f32", "f16", "bf16", "q8": parses a dtype name. Returns 0 or -1. */
int llm_dtype_parse(const char *s, enum llm_dtype *dt);

/* "auto", "f32", "f16": parses a kv_dtype name. Returns 0 or -1. */
int llm_kv_dtype_parse(const char *s, enum llm_kv_dtype *kt);

/* "auto", "latency", "throughput": parses a tuning name. Returns 0 or -1. */
int llm_tuning_parse(const char *s, enum llm_tuning *tu);

/* The name llm_tuning_parse reads for t (static). */
const char *llm_tuning_name(enum llm_tuning t);

#ifdef __cplusplus
}
#endif

#endif
