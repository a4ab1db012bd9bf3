/* sample.h -- the part of next-token choice a device can do beside the forward step: penalties, greedy argmax, log-probabilities and the top-n alternatives of one logits row, with kernels/sample.c as the CPU reference.
 *
 * The same numbers as the engine's sampler (fcgi_app/engine/sampler.c) for
 * a greedy request, bit for bit (tests/unit/test_sampler.c compares them):
 *   1. repetition penalty over rep_ids (the context's distinct ids):
 *      l < 0 ? l * p : l / p;
 *   2. l -= count * frequency + presence over the distinct generated ids;
 *   3. NaN -> -inf, +inf -> FLT_MAX;
 *   4. id = the first index of the maximum mx;
 *   5. logz = log(sum exp(l - mx)), the sum in the sampler's order (blocks
 *      of 64: eight float lanes summed in order, each block's lanes j and
 *      j + 4 added in double into accumulator j % 4, blocks in order; the
 *      last partial block's terms into accumulator 0; (a0 + a1) + (a2 + a3))
 *      with its exp polynomial (Cephes expf, Estrin's scheme, no fused
 *      multiply-add);
 *   6. logprob = (float)((double)(l[id] - mx) - logz), and the top_n most
 *      likely ids (value descending, lower id first among equals, -inf
 *      never) with theirs.
 * Sampled requests (temperature, top_k, top_p, typical_p), constraints and
 * logit_bias stay with the engine's sampler on the host.
 *
 * kernels/cuda/sample.cu runs the same steps on the device, one block per
 * row (kcu_sample_greedy, kernels/cuda/sample_cuda.h); only the ids and the
 * asked-for log-probabilities come back. */
#ifndef LLMCGI_SAMPLE_H
#define LLMCGI_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KSAMPLE_TOP_N_MAX 20

/* One row's request; the arrays are borrowed. */
struct ksample_row {
    float repetition_penalty;       /* 1: off */
    const int32_t *rep_ids;         /* distinct ids of prompt + generated (ids outside the vocabulary skipped) */
    int n_rep;
    float frequency_penalty, presence_penalty;  /* 0: off */
    const int32_t *gen_ids;         /* distinct generated ids ... */
    const int32_t *gen_counts;      /* ... and how often each was generated (> 0) */
    int n_gen;
    int top_n;                      /* 0 .. KSAMPLE_TOP_N_MAX */
};

struct ksample_out {
    int32_t id;
    float logprob;
    int n_top;
    int32_t top_id[KSAMPLE_TOP_N_MAX];
    float top_logprob[KSAMPLE_TOP_N_MAX];
};

/* The steps above on logits[0..n) (overwritten with the penalised,
 * sanitised logits). Returns 0, or -1 when no logit is above -inf (nothing
 * can be chosen) or an argument is out of range. */
int ksample_greedy_ref(float *logits, int n, const struct ksample_row *r, struct ksample_out *out);

#ifdef __cplusplus
}
#endif

#endif
