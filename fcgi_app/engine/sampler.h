/* sampler.h -- next-token choice for the local engine: penalties, HF warpers, greedy or seeded draw, logprobs. */
#ifndef LLMCGI_SAMPLER_H
#define LLMCGI_SAMPLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sample.h"     /* kernels/: the greedy request a backend runs */

/* Return codes of the sampler functions. */
#define SAMPLER_OK 0
#define SAMPLER_ERR_INVAL (-1)      /* bad argument: NULL, token id out of range, ... */
#define SAMPLER_ERR_NO_TOKEN (-2)   /* every logit is -inf or NaN: nothing can be chosen */
#define SAMPLER_ERR_NOMEM (-3)

#define SAMPLER_TOP_N_MAX 20        /* OpenAI's top_logprobs bound */

/* What the API layers fill in. Ranges (checked by sampler_params_check):
 *   temperature        >= 0; 0 means greedy (TGI), 1 leaves the logits alone
 *   top_k              >= 0; 0 = off
 *   top_p              (0, 1]; 1 = off
 *   typical_p          (0, 1]; 1 = off
 *   repetition_penalty > 0; 1 = off (Hugging Face semantics, prompt + generated)
 *   frequency_penalty  [-2, 2]; 0 = off (OpenAI semantics, generated tokens only)
 *   presence_penalty   [-2, 2]; 0 = off (OpenAI semantics, generated tokens only)
 *   top_n              [0, 20]: alternatives reported with each token
 * do_sample false (or temperature 0) is greedy decoding: the penalties still
 * apply, temperature and the truncation warpers do not, and no random number
 * is drawn. The seed makes a sampled sequence reproducible: the generator is
 * xoshiro256** seeded through splitmix64, bit-identical on every machine. */
struct sampler_params {
    bool do_sample;
    float temperature;
    int top_k;
    float top_p;
    float typical_p;
    float repetition_penalty;
    float frequency_penalty;
    float presence_penalty;
    uint64_t seed;
    int top_n;
};

/* Greedy, every knob off, seed 0, top_n 0 (Hugging Face generate()'s defaults;
 * the OpenAI layer turns do_sample on, TGI's turns it on when asked). */
struct sampler_params sampler_params_default(void);

/* 0 when every field is in range; otherwise SAMPLER_ERR_INVAL with a message
 * naming the parameter and its allowed range in err (always NUL-terminated
 * when errlen > 0), e.g. "top_p must be > 0 and <= 1 (got 1.5)". */
int sampler_params_check(const struct sampler_params *p, char *err, size_t errlen);

struct sample_logprob {
    int32_t id;
    float logprob;
};

/* One chosen token. Log-probabilities are those of the model's distribution
 * after the penalties (repetition, frequency, presence) but before
 * temperature and truncation (top_k/top_p/typical_p): the model's own view of
 * the token, comparable across sampling settings and what OpenAI and TGI
 * report. top[] holds the top_n most likely tokens under that distribution,
 * most likely first, lower id first among equals; tokens whose logit is -inf
 * (or NaN) are never listed, so n_top can be below top_n. */
struct sample_out {
    int32_t id;
    float logprob;
    int n_top;
    struct sample_logprob top[SAMPLER_TOP_N_MAX];
};

/* Per-sequence sampler: parameters, random generator, counts of generated
 * tokens and scratch space for n_vocab logits (24 bytes per vocabulary entry,
 * + 4 with a repetition penalty, + 8 with frequency/presence penalties: about
 * 1.2-1.8 MB for GPT-2, allocated here once: nothing is allocated per token).
 * One thread at a time; separate samplers are independent.
 *
 * Reproducibility: a seed gives the same tokens for the same logits on every
 * machine. The generator is integer-only; the float work uses only IEEE
 * operations in a fixed order (exp() is a fixed polynomial, sums go in a
 * fixed order), and the AVX2 code used where the CPU has it computes the
 * same bits as the portable code (LLMCGI_SAMPLER_NO_AVX2=1 in the
 * environment forces the latter, for tests). Builds that let the compiler
 * fuse multiply-adds (-march=native on FMA machines) may differ in the last
 * bits. */
struct sampler;

/* Allocates a sampler for a vocabulary of n_vocab tokens, parameters copied.
 * Returns NULL with errno EINVAL (parameters out of range, n_vocab < 1) or
 * ENOMEM. The caller owns the result and releases it with sampler_free(). */
struct sampler *sampler_new(const struct sampler_params *p, int32_t n_vocab);
void sampler_free(struct sampler *s);               /* NULL is fine */

/* Back to the state right after sampler_new(): generator reseeded from the
 * parameters' seed, generated-token counts cleared. */
void sampler_reset(struct sampler *s);

/* Chooses the next token from one row of logits (n_vocab floats; the caller
 * owns them and they are overwritten: on return they hold the penalised
 * logits). context[0..n_context) is the prompt followed by the tokens
 * generated so far (ids outside [0, n_vocab) are ignored); it is read only.
 *
 * Steps, in Hugging Face generate()'s order (_get_logits_processor):
 *   1. repetition_penalty over the distinct tokens of context (HF's
 *      RepetitionPenaltyLogitsProcessor: l < 0 ? l * p : l / p, once each).
 *   2. frequency/presence penalty over the tokens passed to sampler_accept()
 *      (OpenAI: l -= count * frequency + (count > 0) * presence).
 *   3. NaN logits become -inf (never chosen); +inf becomes the largest float
 *      (the +inf tokens share the mass).
 *   4. greedy: argmax (lowest id on ties, as torch.argmax). Otherwise HF's
 *      warpers with min_tokens_to_keep = 1, in this order: temperature
 *      (l / T), top_k (ties with the k-th kept), top_p (drop where the
 *      ascending cumulative probability is <= 1 - top_p; among equal logits
 *      cut through, the higher ids stay, as with a stable sort: torch's own
 *      sort leaves that order undefined), typical_p (entropy-based; ties at
 *      the cut stay); then one draw (one 53-bit uniform number) from the
 *      softmax of what is left.
 * Fills *out; returns SAMPLER_OK, SAMPLER_ERR_NO_TOKEN (all logits -inf or
 * NaN) or SAMPLER_ERR_INVAL. Does not record the token: call sampler_accept()
 * with the id that is appended to the sequence. */
int sampler_next(struct sampler *s, float *logits, const int32_t *context, size_t n_context,
                 struct sample_out *out);

/* Records a generated token for the frequency/presence penalties. Returns
 * SAMPLER_OK or SAMPLER_ERR_INVAL (id out of range). */
int sampler_accept(struct sampler *s, int32_t id);

/* Does s choose greedily (do_sample off, or temperature 0)? */
bool sampler_greedy(const struct sampler *s);

/* Ints sampler_greedy_row() may write for a context of n_context tokens. */
size_t sampler_greedy_ints(const struct sampler *s, size_t n_context);

/* What a backend needs to choose as sampler_next() would for greedy s on
 * context[0..n_context) (kernels/sample.h's ksample_greedy_ref, or the
 * device's): its penalties and top_n into *r, with r's arrays in ids
 * (caller-owned, sampler_greedy_ints() ints): the distinct ids of context
 * when the repetition penalty is on, the distinct generated ids and their
 * counts when frequency or presence is. r borrows ids. Returns the ints
 * written, or SAMPLER_ERR_INVAL when s is not greedy. */
int sampler_greedy_row(struct sampler *s, const int32_t *context, size_t n_context, int32_t *ids,
                       struct ksample_row *r);

/* The distribution sampler_next() would draw from, without drawing: the same
 * steps 1-4, then probs[i] (n_vocab floats, caller's buffer) is the final
 * probability of token i, 0 for filtered tokens; greedy gives 1 at the argmax.
 * kept (n_vocab bools, caller's buffer, or NULL) marks the tokens that survive
 * the warpers (HF: a score other than -inf), which includes survivors whose
 * probability underflows to 0. logits are overwritten as in sampler_next(),
 * and no random number is drawn. For tests and diagnostics. */
int sampler_probs(struct sampler *s, float *logits, const int32_t *context, size_t n_context,
                  float *probs, bool *kept);

#endif
