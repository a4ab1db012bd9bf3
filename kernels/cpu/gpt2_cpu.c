/* gpt2_cpu.c -- the CPU backend: GPT-2's forward pass over a batch of sequences at different positions, with paged KV blocks, across a pool of threads.
 *
 * The reference every other backend is checked against. One step:
 *
 *   x = wte[token] + wpe[pos]                                  every new token
 *   for each block:
 *     h = LayerNorm_1(x);  q,k,v = h Wqkv + b                  (one product)
 *     k, v -> KV blocks at the tokens' positions
 *     a = softmax(q k^T * scale, causal) v                     per sequence and head
 *     x = x + a Wproj + b
 *     h = LayerNorm_2(x);  x = x + act(h Wfc + b) Wmp + b
 *   logits = LayerNorm_f(x) wte^T                              only the rows asked for
 *   (a sequence classifier: LayerNorm_f(x) score^T, num_labels wide)
 *   hidden = LayerNorm_f(x)                                    every new token of a sequence that asks
 *
 * Matrices are kept output-major ([out][in], Hugging Face's Conv1D stores
 * [in][out]) in the checkpoint's own type (F32, F16 or BF16), so a decode
 * step streams each weight once for the whole batch and half-precision files
 * read half the bytes. Activations, LayerNorm parameters, biases and position
 * embeddings are F32; the KV blocks F32 or F16 (kv_dtype, llm.h: auto makes
 * them F16 under half-precision or Q8_0 matrices), K and V rows rounded to
 * F16 as they are written and widened in registers as attention reads them
 * (ops_scores_f16, ops_mix_f16), so a long context or a large batch reads
 * half the KV bytes.
 *
 * With dtype Q8 the four matrices of every block and the LM head are
 * quantized at load into int8 rows of Q8_0 blocks, laid out as the level's
 * int8 products read them (ops.h, ops_q8_pack_rows); each product
 * quantizes its input rows the same way first (once, before the threads
 * split the outputs) and runs on integers. The embedding table the tokens
 * are looked up in stays in the file's type.
 *
 * Where the kernel level has the packed product (ops_packed: AVX2 and up), the
 * four matrices of every block and the LM head are instead repacked at load
 * into ops_pack's panels of 64 outputs, once, in place of the output-major
 * copy (no second copy is kept). A tied embedding table is the LM head, so
 * it is kept packed only, and a token's embedding row is read back out of
 * the panels (768 reads 256 bytes apart per token, ops_packed_row); the
 * cost is the padding of V to a multiple of 64 (47 rows for GPT-2). Every
 * packed product of a model runs on the kernel of its tuning (llm.h:
 * latency or throughput, resolved once at load), whatever the step's rows. */
#include "backend.h"
#include "cpu/ops.h"
#include "cpu/threads.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

struct cpu_layer {
    const float *ln_1_g, *ln_1_b, *ln_2_g, *ln_2_b;
    const float *qkv_b, *proj_b, *fc_b, *mproj_b;
    const void *qkv_w;      /* [3C][C] */
    const void *proj_w;     /* [C][C] */
    const void *fc_w;       /* [F][C] */
    const void *mproj_w;    /* [C][F] */
    float attn_scale;       /* 1/sqrt(head_dim), and / (layer+1) when the config asks */
};

struct cpu_model {
    int L, C, H, hd, F, V, P;
    float eps;
    enum ops_act act;
    enum ckpt_dtype wdt;            /* the matrices' type (q8: the embedding table's) */
    bool q8;                        /* matrices and LM head are Q8_0 rows */
    bool packed;                    /* matrices and LM head are ops_pack panels */
    bool wte_packed;                /* wte is the (tied) packed LM head */
    enum ops_tuning tuning;         /* every packed product's, fixed at load (llm.h's llm_tuning) */

    /* Weights: one allocation, carved below. */
    void *wmem;
    const void *wte;                /* [V][C] in wdt: embedding rows and the tied LM head */
    const void *lm_head;            /* [V][C]; == wte when tied; q8: its own Q8_0 rows */
    const float *score;             /* classifiers: [NL][C] F32 (tiny), used instead of lm_head */
    int NL;                         /* its rows (num_labels); 0 for a language model */
    const float *wpe;               /* [P][C] */
    const float *ln_f_g, *ln_f_b;
    struct cpu_layer *layers;       /* L */

    /* KV pool: block b holds, for each layer, K then V of B positions x C,
     * head-major (kv_at), in F32 or (kv_half) F16. */
    void *kv;
    bool kv_half;
    int B, n_blocks;
    size_t block_elems;             /* values in one block */

    /* Activations: one allocation for the largest step. */
    void *amem;
    int S, R;                       /* most tokens, most logits rows per step */
    float *x, *h, *qkv, *att, *ff;  /* [S][C], [S][C], [S][3C], [S][C], [S][F] */
    float *hf;                      /* [R][C]: final-LayerNorm rows the logits are made from */
    float *scores;                  /* [threads][ATT_Q][P] */
    int *row0;                      /* [S] first row of each sequence (a step has at most S) */
    void *xq;                       /* q8: a product's input prepared (ops_q8_x_bytes of S rows of F) */

    struct tpool *pool;
    int threads;
};

/* ------------------------------------------------------------------ parallel jobs */

/* y = act(x W^T + b) (+ y), split over blocks of `block` outputs. */
struct mm_job {
    float *y;
    const float *x;
    const void *xq;                 /* q8: x quantized (then w is Q8_0 rows) */
    const void *w;
    enum ckpt_dtype wt;
    const float *bias;
    int T, I, O, block;
    bool accumulate;
    bool packed;                    /* w is ops_pack panels */
    int act;                        /* -1: none, else enum ops_act */
    enum ops_tuning tuning;         /* the model's (packed products) */
};

static void mm_task(void *ctx, int task, int thread)
{
    (void)thread;
    const struct mm_job *j = ctx;
    int o0 = task * j->block, o1 = o0 + j->block < j->O ? o0 + j->block : j->O;
    if (j->xq)
        ops_matmul_q8x(j->y, j->xq, j->w, j->bias, j->T, j->I, j->O, o0, o1, j->accumulate);
    else if (j->packed)
        ops_matmul_packed(j->y, j->x, j->w, j->wt, j->bias, j->T, j->I, j->O, o0, o1, j->accumulate, j->tuning);
    else
        ops_matmul(j->y, j->x, j->w, j->wt, j->bias, j->T, j->I, j->O, o0, o1, j->accumulate);
    if (j->act >= 0)
        for (int t = 0; t < j->T; t++)
            ops_activate(j->y + (size_t)t * j->O + o0, o1 - o0, (enum ops_act)j->act);
}

/* q8: the input prepared once for every task of the product (quantized,
 * and at the AMX level packed as its tiles read it: ops_q8_prepare_x), a
 * task per part. */
struct q8_job {
    void *dst;
    const float *x;
    int T, I;
};

static void q8_task(void *ctx, int task, int thread)
{
    (void)thread;
    const struct q8_job *j = ctx;
    ops_q8_prepare_x(j->dst, j->x, j->T, j->I, task);
}

static void matmul(struct cpu_model *m, float *y, const float *x, const void *w, const float *bias,
                   int T, int I, int O, bool accumulate, int act)
{
    /* Blocks of 16 outputs (a multiple of the 4-wide kernel tile), larger for
     * the vocabulary-wide LM head so the task count stays reasonable, and for
     * int8 at 2+ rows, where a call prepares x's block sums and scales once
     * for its 16-output panels (ops_q8.c). */
    bool packed = m->packed && w != m->score;
    int block = packed ? OPS_PANEL : O > 8192 || (m->q8 && w != m->score && T > 1) ? 64 : 16;
    /* int8 at 2+ rows: 128 where that still leaves 4 tasks a thread, as a
     * call's fixed part (the tiles' configuration; at 2-4 rows the VNNI
     * panel's preparation of x) then serves 8 groups of 16 outputs */
    if (m->q8 && w != m->score && T > 1 && O / 128 >= 4 * tpool_threads(m->pool))
        block = 128;
    /* and 512 where that still does (the LM head): 1-5% less thread CPU
     * time for the step's products at 32 rows, best of 8, three pairs */
    if (m->q8 && w != m->score && T > 1 && O / 512 >= 4 * tpool_threads(m->pool))
        block = 512;
    /* int8 at one row: one contiguous range of outputs a thread (whole
     * groups of 16), so each thread's weights are one run the hardware
     * prefetcher follows. Tasks of 16 outputs (13 KiB at I = 768), taken
     * alternately by the threads, left 2 threads at 1.25x one thread's
     * tokens/s (F16: 1.7x). Batch-1 best step, interleaved rounds
     * (cpu_bench MODEL 2 16 1 160 32 q8): tasks of 64 outputs beat 16 in
     * six of six (177-207 against 135-177 tok/s), one range a thread beat
     * 64 in five of five (211-240 against 173-193), two a thread in four
     * of five, and one a thread ahead of two in the average rate.
     * The price: no thread takes over another's share if it is
     * descheduled. F16 and BF16 (96 KiB tasks already) gained nothing
     * clear from the same split. Measured on the AVX2 level only (Zen 3). */
    if (m->q8 && w != m->score && T == 1) {
        int nt = tpool_threads(m->pool);
        int b = ((O + nt - 1) / nt + 15) / 16 * 16;   /* the grouped layout groups 16 rows */
        block = b > block ? b : block;
    }
    /* packed at 2+ rows: 4 panels a task where that still leaves 4 tasks a
     * thread, as the AMX tile kernels split x into bf16 parts once a call
     * (4.5 us a call at 32 rows for F32; doc/cpu-kernels.md "F32 on the
     * AMX tiles"); an output's bits do not depend on the range */
    if (packed && !m->q8 && T > 1 && O / (4 * OPS_PANEL) >= 4 * tpool_threads(m->pool))
        block = 4 * OPS_PANEL;
    const void *xq = NULL;
    if (m->q8 && w != m->score) {
        struct q8_job qj = {m->xq, x, T, I};
        tpool_run(m->pool, q8_task, &qj, ops_q8_x_parts(T, I));
        xq = m->xq;
    }
    struct mm_job j = {y, x, xq, w, w == m->score ? CKPT_F32 : m->wdt, bias, T, I, O, block, accumulate, packed, act,
                       m->tuning};
    tpool_run(m->pool, mm_task, &j, (O + block - 1) / block);
}

/* LayerNorm over rows, split in chunks of rows. */
struct ln_job {
    float *y;
    const float *x;
    const float *g, *b;
    int C, rows;
    float eps;
};

#define LN_ROWS 8
static void ln_task(void *ctx, int task, int thread)
{
    (void)thread;
    const struct ln_job *j = ctx;
    int r1 = (task + 1) * LN_ROWS < j->rows ? (task + 1) * LN_ROWS : j->rows;
    for (int r = task * LN_ROWS; r < r1; r++)
        ops_layernorm(j->y + (size_t)r * j->C, j->x + (size_t)r * j->C, j->g, j->b, j->C, j->eps);
}

static void layernorm_rows(struct cpu_model *m, float *y, const float *x, const float *g, const float *b, int rows)
{
    struct ln_job j = {y, x, g, b, m->C, rows, m->eps};
    tpool_run(m->pool, ln_task, &j, (rows + LN_ROWS - 1) / LN_ROWS);
}

/* Attention for one layer: a task per (sequence, group of heads). */
#define ATT_Q 4         /* queries of a sequence mixed together (ops_mix) */
#define ATT_BLOCKS 256  /* KV blocks a decode query takes through ops_attend1 */
/* Tasks a thread is given at least, where the heads allow: 4, so batch 8
 * on 2 threads runs all 12 heads of a sequence in one task (a task's first
 * head waits for its misses, the others find theirs in flight; 8 gave 6
 * heads a task there, and decode attention took 1.98-2.01 ms a step against
 * 1.80-1.87, fastest of 64 steps, four interleaved pairs: doc/cpu-kernels.md
 * "Batch 8 against its bytes"). */
#define ATT_TASKS 4
struct attn_job {
    struct cpu_model *m;
    const struct llm_seq *seqs;
    const int *row0;                /* first row of each sequence */
    int layer;
    int nh, groups;                 /* heads a task takes; tasks a sequence is split into */
};

/* Where head h's K (which 0) or V (1) row at position pos is, in values
 * from the pool's start. A block holds, per layer, K then V, each
 * head-major: a head's B positions are one run of B x hd values (4 KiB for
 * GPT-2 in F32, 2 KiB in F16), so a head's attention reads whole pages in
 * order instead of a piece of every C-wide row. */
static size_t kv_at(const struct cpu_model *m, const struct llm_seq *s, int layer, int which, int h, int pos)
{
    size_t block = (size_t)s->blocks[pos / m->B];
    return block * m->block_elems +
           (((size_t)(layer * 2 + which) * m->H + (size_t)h) * m->B + (size_t)(pos % m->B)) * m->hd;
}

/* The new token's K or V row of a head into the pool (rounded to F16 there). */
static void kv_put(const struct cpu_model *m, size_t at, const float *row, int n)
{
    if (m->kv_half)
        ops_to_f16((uint16_t *)m->kv + at, row, (size_t)n);
    else
        memcpy((float *)m->kv + at, row, (size_t)n * sizeof(float));
}

/* ops_scores / ops_mix over the pool's K or V rows from value `at` on. */
static void kv_scores(const struct cpu_model *m, float *s, const float *q, size_t at, int n, float scale)
{
    if (m->kv_half)
        ops_scores_f16(s, q, (const uint16_t *)m->kv + at, (size_t)m->hd, n, m->hd, scale);
    else
        ops_scores(s, q, (const float *)m->kv + at, (size_t)m->hd, n, m->hd, scale);
}

/* kv_scores for nq queries (q + i x ldq, into s + i x lds) over the same keys. */
static void kv_scores_q(const struct cpu_model *m, float *s, size_t lds, const float *q, size_t ldq, int nq, size_t at,
                        int n, float scale)
{
    if (m->kv_half)
        ops_scores_q_f16(s, lds, q, ldq, nq, (const uint16_t *)m->kv + at, (size_t)m->hd, n, m->hd, scale);
    else
        ops_scores_q(s, lds, q, ldq, nq, (const float *)m->kv + at, (size_t)m->hd, n, m->hd, scale);
}

static void kv_mix(const struct cpu_model *m, float *out, const float *a, int nq, size_t at, int n)
{
    if (m->kv_half)
        ops_mix_f16(out, (size_t)m->C, a, (size_t)m->P, nq, (const uint16_t *)m->kv + at, (size_t)m->hd, n, m->hd);
    else
        ops_mix(out, (size_t)m->C, a, (size_t)m->P, nq, (const float *)m->kv + at, (size_t)m->hd, n, m->hd);
}

/* For each new token j of the sequence (position p = pos + j), head h:
 *   s_k = (q . K_k) * scale for k <= p;  a = softmax(s);  out = sum_k a_k V_k */
static void attn_task(void *ctx, int task, int thread)
{
    const struct attn_job *j = ctx;
    struct cpu_model *m = j->m;
    int si = task / j->groups, h0 = task % j->groups * j->nh, hd = m->hd, C = m->C;
    int h1 = h0 + j->nh < m->H ? h0 + j->nh : m->H;
    const struct llm_seq *s = &j->seqs[si];
    const struct cpu_layer *ly = &m->layers[j->layer];
    float *scores = m->scores + (size_t)thread * ATT_Q * m->P;

    /* These heads' K and V of the new tokens go to their blocks first, so
     * the tokens of a prefill chunk see each other. */
    for (int h = h0; h < h1; h++)
        for (int t = 0; t < s->n_tokens; t++) {
            const float *row = m->qkv + (size_t)(j->row0[si] + t) * 3 * C;
            kv_put(m, kv_at(m, s, j->layer, 0, h, s->pos + t), row + C + h * hd, hd);
            kv_put(m, kv_at(m, s, j->layer, 1, h, s->pos + t), row + 2 * C + h * hd, hd);
        }
    /* Decode (one new token) of up to ATT_BLOCKS blocks: ops_attend1 over
     * the heads, which prefetches each head's K and V runs of every block
     * ahead of its arithmetic, then the same calls as the loop below. A
     * block's heads are head-major, so the heads' runs are hstride apart. */
    int nb = (s->pos + 1 + m->B - 1) / m->B;
    if (s->n_tokens == 1 && nb <= ATT_BLOCKS) {
        const void *kb[ATT_BLOCKS], *vb[ATT_BLOCKS];
        size_t es = m->kv_half ? sizeof(uint16_t) : sizeof(float);
        for (int b = 0; b < nb; b++) {
            kb[b] = (const char *)m->kv + kv_at(m, s, j->layer, 0, h0, b * m->B) * es;
            vb[b] = (const char *)m->kv + kv_at(m, s, j->layer, 1, h0, b * m->B) * es;
        }
        int r = j->row0[si];
        ops_attend1(m->att + (size_t)r * C + h0 * hd, scores, m->qkv + (size_t)r * 3 * C + h0 * hd, kb, vb, s->pos + 1,
                    m->B, hd, h1 - h0, (size_t)m->B * hd, ly->attn_scale, m->kv_half);
        return;
    }
    /* Up to ATT_Q consecutive tokens at a time: the keys they all see
     * (positions up to the first one's) scored for the group together
     * (ops_scores_q; AVX2 loads each K row once for 4 queries), each token's
     * later keys alone, then each its softmax (zero weights for the
     * group's later keys it must not see), then one pass over the V rows
     * for all of them (AVX-512 loads a V row once for 4 queries). A score
     * has the same bits either way, and adding a zero weight leaves a sum
     * as it was, so a token's output does not depend on its group. */
    for (int h = h0; h < h1; h++)
        for (int t0 = 0; t0 < s->n_tokens; t0 += ATT_Q) {
            int nq = s->n_tokens - t0 < ATT_Q ? s->n_tokens - t0 : ATT_Q, p0 = s->pos + t0, pmax = p0 + nq - 1;
            const float *q0 = m->qkv + (size_t)(j->row0[si] + t0) * 3 * C + h * hd;
            /* A KV block's positions of a head are hd values apart: one call per block. */
            for (int k0 = 0; k0 <= p0; k0 += m->B)
                kv_scores_q(m, scores + k0, (size_t)m->P, q0, (size_t)3 * C, nq, kv_at(m, s, j->layer, 0, h, k0),
                            p0 + 1 - k0 < m->B ? p0 + 1 - k0 : m->B, ly->attn_scale);
            for (int g = 0; g < nq; g++) {
                int r = j->row0[si] + t0 + g, p = p0 + g;
                const float *q = m->qkv + (size_t)r * 3 * C + h * hd;
                float *sc = scores + (size_t)g * m->P;
                for (int k = p0 + 1, n; k <= p; k += n) {
                    int end = (k / m->B + 1) * m->B;   /* where k's KV block ends */
                    n = (end < p + 1 ? end : p + 1) - k;
                    kv_scores(m, sc + k, q, kv_at(m, s, j->layer, 0, h, k), n, ly->attn_scale);
                }
                ops_softmax(sc, p + 1);
                for (int k = p + 1; k <= pmax; k++)
                    sc[k] = 0.0f;
                memset(m->att + (size_t)r * C + h * hd, 0, (size_t)hd * sizeof(float));
            }
            for (int k0 = 0; k0 <= pmax; k0 += m->B)
                kv_mix(m, m->att + (size_t)(j->row0[si] + t0) * C + h * hd, scores + k0, nq,
                       kv_at(m, s, j->layer, 1, h, k0), pmax + 1 - k0 < m->B ? pmax + 1 - k0 : m->B);
        }
}

/* A layer's attention on the pool: each sequence's heads in as few groups
 * as still give every thread ATT_TASKS tasks (all of a sequence's heads in
 * one task from batch 8 on with 2 threads, two heads a task at batch 1), so a
 * task's reads run on from head to head through the same blocks. */
static void attention(struct cpu_model *m, const struct llm_seq *seqs, int n_seqs, const int *row0, int layer)
{
    int groups = (ATT_TASKS * m->threads + n_seqs - 1) / n_seqs;
    groups = groups < 1 ? 1 : groups > m->H ? m->H : groups;
    int nh = (m->H + groups - 1) / groups;
    struct attn_job aj = {m, seqs, row0, layer, nh, (m->H + nh - 1) / nh};
    tpool_run(m->pool, attn_task, &aj, n_seqs * aj.groups);
}

/* ------------------------------------------------------------------ forward */

static void embed_row(const struct cpu_model *m, float *x, int token, int pos)
{
    if (m->wte_packed)
        ops_packed_row(x, m->wte, m->wdt, m->C, token);
    else
        ops_to_f32(x, (const char *)m->wte + (size_t)token * m->C * ckpt_dtype_size(m->wdt), m->wdt, (size_t)m->C);
    const float *pe = m->wpe + (size_t)pos * m->C;
    for (int i = 0; i < m->C; i++)
        x[i] += pe[i];
}

static int cpu_forward(void *impl, const struct llm_seq *seqs, int n_seqs, float *logits, float *const *hidden,
                       char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    struct cpu_model *m = impl;
    int C = m->C, F = m->F;

    /* Rows: the new tokens of all sequences, in order. */
    int *row0 = m->row0;
    int T = 0;
    for (int si = 0; si < n_seqs; si++) {
        row0[si] = T;
        for (int t = 0; t < seqs[si].n_tokens; t++, T++)
            embed_row(m, m->x + (size_t)T * C, seqs[si].tokens[t], seqs[si].pos + t);
    }

    for (int l = 0; l < m->L; l++) {
        const struct cpu_layer *ly = &m->layers[l];
        layernorm_rows(m, m->h, m->x, ly->ln_1_g, ly->ln_1_b, T);
        matmul(m, m->qkv, m->h, ly->qkv_w, ly->qkv_b, T, C, 3 * C, false, -1);
        attention(m, seqs, n_seqs, row0, l);
        matmul(m, m->x, m->att, ly->proj_w, ly->proj_b, T, C, C, true, -1);
        layernorm_rows(m, m->h, m->x, ly->ln_2_g, ly->ln_2_b, T);
        matmul(m, m->ff, m->h, ly->fc_w, ly->fc_b, T, C, F, false, (int)m->act);
        matmul(m, m->x, m->ff, ly->mproj_w, ly->mproj_b, T, F, C, true, -1);
    }

    /* The hidden rows asked for (embeddings): the final LayerNorm's output. */
    for (int si = 0; hidden && si < n_seqs; si++)
        if (hidden[si])
            layernorm_rows(m, hidden[si], m->x + (size_t)row0[si] * C, m->ln_f_g, m->ln_f_b, seqs[si].n_tokens);

    /* The rows asked for, through the final LayerNorm and the LM head. */
    int R = 0;
    for (int si = 0; si < n_seqs; si++) {
        const struct llm_seq *s = &seqs[si];
        int first = s->logits == LLM_LOGITS_ALL ? 0 : s->logits == LLM_LOGITS_LAST ? s->n_tokens - 1 : s->n_tokens;
        for (int t = first; t < s->n_tokens; t++, R++)
            memcpy(m->h + (size_t)R * C, m->x + (size_t)(row0[si] + t) * C, (size_t)C * sizeof(float));
    }
    if (R > 0) {
        layernorm_rows(m, m->hf, m->h, m->ln_f_g, m->ln_f_b, R);
        if (m->NL)
            matmul(m, logits, m->hf, m->score, NULL, R, C, m->NL, false, -1);
        else
            matmul(m, logits, m->hf, m->lm_head, NULL, R, C, m->V, false, -1);
    }
    return 0;
}

/* ------------------------------------------------------------------ load */

/* Copies output rows [first, end) of a checkpoint matrix into dst as
 * [end - first][in] in type dt. Conv1D tensors are [in][out] (transpose);
 * Linear ones (wte, lm_head) are already [out][in]. */
static void put_rows(void *dst, enum ckpt_dtype dt, const struct ckpt_tensor *src, bool transpose, size_t first,
                     size_t end)
{
    size_t rows = (size_t)src->shape[0], cols = (size_t)src->shape[1];
    size_t in = transpose ? rows : cols;
    size_t es = ckpt_dtype_size(dt);
    bool raw = dt == src->dtype;
    /* Tiles of 64 x 64 keep the transposed reads within a few cache lines. */
    for (size_t o0 = first; o0 < end; o0 += 64)
        for (size_t i0 = 0; i0 < in; i0 += 64)
            for (size_t o = o0; o < end && o < o0 + 64; o++)
                for (size_t i = i0; i < in && i < i0 + 64; i++) {
                    size_t si = transpose ? i * cols + o : o * cols + i;
                    char *d = (char *)dst + ((o - first) * in + i) * es;
                    if (raw) {
                        memcpy(d, (const char *)src->data + si * es, es);
                        continue;
                    }
                    float v = ckpt_get(src, si);
                    if (dt == CKPT_F32)
                        memcpy(d, &v, 4);
                    else {
                        uint16_t hv = dt == CKPT_F16 ? ckpt_f32_to_f16(v) : ckpt_f32_to_bf16(v);
                        memcpy(d, &hv, 2);
                    }
                }
}

static void put_matrix(void *dst, enum ckpt_dtype dt, const struct ckpt_tensor *src, bool transpose)
{
    put_rows(dst, dt, src, transpose, 0, (size_t)(transpose ? src->shape[1] : src->shape[0]));
}

/* put_matrix into ops_pack's panels, through an output-major copy of one
 * panel at a time. Returns 0, or -1 when out of memory. */
static int put_matrix_packed(void *dst, enum ckpt_dtype dt, const struct ckpt_tensor *src, bool transpose)
{
    size_t out = (size_t)(transpose ? src->shape[1] : src->shape[0]), in = (size_t)(transpose ? src->shape[0] : src->shape[1]);
    void *tmp = malloc(OPS_PANEL * in * ckpt_dtype_size(dt));
    if (!tmp)
        return -1;
    for (size_t o0 = 0; o0 < out; o0 += OPS_PANEL) {
        size_t o1 = out - o0 < OPS_PANEL ? out : o0 + OPS_PANEL;
        put_rows(tmp, dt, src, transpose, o0, o1);
        ops_pack(dst, tmp, dt, (int)in, (int)out, (int)o0, (int)o1);
    }
    free(tmp);
    return 0;
}

/* put_matrix into Q8_0 rows (ops_q8_quantize_row) through an F32 copy of
 * up to 64 output rows at a time, laid out as the level's int8 products
 * read them (ops_q8_pack_rows: groups of 16 rows at AVX-512 VNNI).
 * Returns 0, or -1 when out of memory. */
static int put_matrix_q8(void *dst, const struct ckpt_tensor *src, bool transpose)
{
    size_t rows = (size_t)src->shape[0], cols = (size_t)src->shape[1];
    size_t out = transpose ? cols : rows, in = transpose ? rows : cols, rb = ops_q8_row_bytes((int)in);
    float *tmp = malloc(64 * in * sizeof(float));
    char *q = malloc(64 * rb);
    if (!tmp || !q) {
        free(tmp);
        free(q);
        return -1;
    }
    for (size_t o0 = 0; o0 < out; o0 += 64) {
        size_t n = out - o0 < 64 ? out - o0 : 64;
        for (size_t i = 0; i < in; i++)
            for (size_t o = 0; o < n; o++)
                tmp[o * in + i] = ckpt_get(src, transpose ? i * cols + o0 + o : (o0 + o) * cols + i);
        for (size_t o = 0; o < n; o++)
            ops_q8_quantize_row(q + o * rb, tmp + o * in, (int)in);
        ops_q8_pack_rows(dst, q, (int)in, (int)out, (int)o0, (int)n);
    }
    free(tmp);
    free(q);
    return 0;
}

static void put_vector(float *dst, const struct ckpt_tensor *src)
{
    size_t n = src->nbytes / ckpt_dtype_size(src->dtype);
    for (size_t i = 0; i < n; i++)
        dst[i] = ckpt_get(src, i);
}

/* Copies, then lets the file's pages go so that the peak resident set is
 * about one copy of the weights, not two. */
static int take_matrix(const struct gpt2_checkpoint *ck, void *dst, enum ckpt_dtype dt, bool q8, bool packed,
                       const struct ckpt_tensor *src, bool transpose)
{
    if (q8 && put_matrix_q8(dst, src, transpose) != 0)
        return -1;
    if (packed && put_matrix_packed(dst, dt, src, transpose) != 0)
        return -1;
    if (!q8 && !packed)
        put_matrix(dst, dt, src, transpose);
    ckpt_tensor_done(ck, src);
    return 0;
}

/* Bytes of a matrix of `out` rows of `in` values: Q8_0 rows (ops_q8_mat_bytes), ops_pack
 * panels of type dt, or es-byte values. */
static size_t mat_bytes(bool q8, bool packed, enum ckpt_dtype dt, size_t out, size_t in)
{
    return q8 ? ops_q8_mat_bytes((int)in, (int)out) : packed ? ops_pack_bytes(dt, (int)in, (int)out) : out * in * ckpt_dtype_size(dt);
}

/* ops.c's name for each activation config.json may name. */
static const enum ops_act ops_act_of[] = {
    [CKPT_ACT_GELU_TANH] = OPS_GELU_TANH, [CKPT_ACT_GELU_ERF] = OPS_GELU_ERF,
    [CKPT_ACT_RELU] = OPS_RELU,           [CKPT_ACT_QUICK_GELU] = OPS_QUICK_GELU,
};

static void cpu_free(void *impl)
{
    struct cpu_model *m = impl;
    if (!m)
        return;
    tpool_free(m->pool);
    free(m->wmem);
    free(m->kv);
    free(m->amem);
    free(m->layers);
    free(m);
}

/* Allocations of HUGE_MIN and more (the weights, the KV pool, a large
 * step's activations) are 2 MiB-aligned and asked for huge pages, because
 * Linux's transparent huge pages are often "madvise" only: a decode step
 * streams every weight once, and in 4 KiB pages that is a TLB miss and a
 * page walk every 4 KiB (120,000 a step for GPT-2 124M in F32); measured,
 * an F32 step at 8 rows went from 28.7 to 25.1 ms (doc/cpu-kernels.md).
 * The advice may be refused (then 4 KiB pages, as before).
 * Every page is also written once here, at load: with THP's defrag at
 * "madvise" (this host's, and a common default) the first touch of an
 * advised 2 MiB page may compact memory synchronously, and the KV pool's
 * pages were first touched by decode steps: a batch-8 F32 step that
 * entered new KV blocks (every 16th) took 30-90 ms instead of 23, which
 * was 2-3 ms of every step on average (doc/cpu-kernels.md "Batch 8
 * against its bytes"). So the pool is committed at load, as large as
 * kv_cache asks. Caller frees with free(). */
#define HUGE_PAGE ((size_t)2 << 20)
#define HUGE_MIN ((size_t)4 << 20)
static void *alloc64(size_t bytes)
{
    void *p = NULL;
    if (bytes >= HUGE_MIN) {
        size_t round = (bytes + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
        if (posix_memalign(&p, HUGE_PAGE, round) != 0)
            return NULL;
#ifdef MADV_HUGEPAGE
        (void)madvise(p, round, MADV_HUGEPAGE);
#endif
        for (size_t off = 0; off < round; off += 4096)
            ((volatile char *)p)[off] = 0;
        return p;
    }
    if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0)
        return NULL;
    return p;
}

/* Carves the next `bytes` (rounded up to 64) out of *cursor. */
static void *carve(char **cursor, size_t bytes)
{
    void *p = *cursor;
    *cursor += (bytes + 63) & ~(size_t)63;
    return p;
}

static int cpu_load(const struct gpt2_checkpoint *ck, const struct llm_load_opts *o, struct llm_info *info,
                    void **impl, char *err, size_t errlen)
{
    const struct gpt2_config *cfg = &ck->cfg;
    *impl = NULL;
    ops_init(OPS_BEST);
    struct cpu_model *m = calloc(1, sizeof *m);
    if (!m) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    m->L = cfg->n_layer;
    m->C = cfg->n_embd;
    m->H = cfg->n_head;
    m->hd = cfg->n_embd / cfg->n_head;
    m->F = cfg->n_inner;
    m->V = cfg->vocab_size;
    m->P = cfg->n_positions;
    m->eps = cfg->layer_norm_epsilon;
    m->act = ops_act_of[cfg->act];
    m->q8 = o->dtype == LLM_DTYPE_Q8;
    if (ckpt_matrix_dtype(ck, llm_dtype_pick(o->dtype, false), &m->wdt, err, errlen) != 0) {
        cpu_free(m);
        return -1;
    }
    bool q8 = m->q8;
    m->packed = !q8 && ops_packed();
    bool packed = m->packed;
    size_t L = (size_t)m->L, C = (size_t)m->C, F = (size_t)m->F, V = (size_t)m->V, P = (size_t)m->P;
    size_t es = ckpt_dtype_size(m->wdt);
    bool tied = ck->lm_head.data == NULL || ck->lm_head.data == ck->wte.data;

    /* Weights. */
    enum ckpt_dtype dt = m->wdt;
    size_t layer_mat = mat_bytes(q8, packed, dt, 3 * C, C) + mat_bytes(q8, packed, dt, C, C) +
                       mat_bytes(q8, packed, dt, F, C) + mat_bytes(q8, packed, dt, C, F);
    size_t head_bytes = mat_bytes(q8, packed, dt, V, C);
    m->wte_packed = packed && tied;
    size_t wte_bytes = m->wte_packed ? head_bytes : V * C * es;
    size_t layer_vec = (4 * C + 3 * C + C + F + C) * sizeof(float);
    size_t wbytes = 0;
    wbytes += (wte_bytes + 63) & ~(size_t)63;
    if (!tied || q8)
        wbytes += (head_bytes + 63) & ~(size_t)63;
    wbytes += (P * C * sizeof(float) + 63) & ~(size_t)63;
    wbytes += 2 * ((C * sizeof(float) + 63) & ~(size_t)63);
    wbytes += L * (layer_mat + layer_vec + 12 * 64);
    size_t NL = cfg->classifier ? (size_t)cfg->num_labels : 0;
    wbytes += (NL * C * sizeof(float) + 63) & ~(size_t)63;
    m->wmem = alloc64(wbytes);
    m->layers = calloc(L, sizeof *m->layers);
    if (!m->wmem || !m->layers) {
        snprintf(err, errlen, "%s: out of memory for %zu bytes of weights", ck->dir, wbytes);
        cpu_free(m);
        return -1;
    }
    char *cur = m->wmem;
    /* q8: the embedding rows stay in wdt and the head gets its own Q8_0
     * copy (of wte when tied, so wte's pages go only after both). */
    void *wte = carve(&cur, wte_bytes);
    if (!m->wte_packed)
        put_matrix(wte, m->wdt, &ck->wte, false);
    else if (put_matrix_packed(wte, m->wdt, &ck->wte, false) != 0)
        goto oom;
    m->wte = wte;
    m->lm_head = wte;
    if (!tied || q8) {
        void *lm = carve(&cur, head_bytes);
        if (take_matrix(ck, lm, m->wdt, q8, packed, tied ? &ck->wte : &ck->lm_head, false) != 0)
            goto oom;
        m->lm_head = lm;
    }
    ckpt_tensor_done(ck, &ck->wte);
    if (NL) {
        float *sc = carve(&cur, NL * C * sizeof(float));
        put_vector(sc, &ck->score);         /* nn.Linear: [out][in] already */
        ckpt_tensor_done(ck, &ck->score);
        m->score = sc;
        m->NL = (int)NL;
    }
    float *wpe = carve(&cur, P * C * sizeof(float));
    put_vector(wpe, &ck->wpe);
    m->wpe = wpe;
    float *g = carve(&cur, C * sizeof(float)), *b = carve(&cur, C * sizeof(float));
    put_vector(g, &ck->ln_f_w);
    put_vector(b, &ck->ln_f_b);
    m->ln_f_g = g;
    m->ln_f_b = b;
    for (size_t l = 0; l < L; l++) {
        const struct gpt2_layer_tensors *lt = &ck->layers[l];
        struct cpu_layer *ly = &m->layers[l];
        struct {
            const float **dst;
            const struct ckpt_tensor *src;
        } vecs[] = {
            {&ly->ln_1_g, &lt->ln_1_w}, {&ly->ln_1_b, &lt->ln_1_b}, {&ly->ln_2_g, &lt->ln_2_w},
            {&ly->ln_2_b, &lt->ln_2_b}, {&ly->qkv_b, &lt->c_attn_b}, {&ly->proj_b, &lt->c_proj_b},
            {&ly->fc_b, &lt->c_fc_b},   {&ly->mproj_b, &lt->mlp_proj_b},
        };
        for (size_t k = 0; k < sizeof vecs / sizeof vecs[0]; k++) {
            float *v = carve(&cur, vecs[k].src->nbytes / ckpt_dtype_size(vecs[k].src->dtype) * sizeof(float));
            put_vector(v, vecs[k].src);
            *vecs[k].dst = v;
        }
        struct {
            const void **dst;
            const struct ckpt_tensor *src;
        } mats[] = {
            {&ly->qkv_w, &lt->c_attn_w}, {&ly->proj_w, &lt->c_proj_w},
            {&ly->fc_w, &lt->c_fc_w},    {&ly->mproj_w, &lt->mlp_proj_w},
        };
        for (size_t k = 0; k < sizeof mats / sizeof mats[0]; k++) {
            /* Conv1D: [in][out] */
            void *w = carve(&cur, mat_bytes(q8, packed, dt, (size_t)mats[k].src->shape[1],
                                            (size_t)mats[k].src->shape[0]));
            if (take_matrix(ck, w, m->wdt, q8, packed, mats[k].src, true) != 0)
                goto oom;
            *mats[k].dst = w;
        }
        ly->attn_scale = cfg->scale_attn_weights ? 1.0f / sqrtf((float)m->hd) : 1.0f;
        if (cfg->scale_attn_by_inverse_layer_idx)
            ly->attn_scale /= (float)(l + 1);
    }

    /* KV pool. */
    m->B = info->kv_block_tokens;
    m->n_blocks = info->kv_blocks;
    m->block_elems = L * 2 * (size_t)m->B * C;
    m->kv_half = llm_cpu_kv_half(ck, o);
    size_t kv_es = m->kv_half ? sizeof(uint16_t) : sizeof(float);
    m->kv = alloc64((size_t)m->n_blocks * m->block_elems * kv_es);
    if (!m->kv) {
        snprintf(err, errlen, "%s: out of memory for %d KV blocks", ck->dir, m->n_blocks);
        cpu_free(m);
        return -1;
    }

    /* Threads and activations. */
    m->threads = o->threads > 0 ? o->threads : tpool_online_cpus();
    if (tpool_new(m->threads, &m->pool) != 0) {
        snprintf(err, errlen, "cannot start %d threads", m->threads);
        cpu_free(m);
        return -1;
    }
    m->S = info->max_step_tokens;
    m->R = info->max_step_logits;
    /* auto: throughput when the model runs LLM_TUNING_WIDE sequences at
     * once (a step carries at most S of them), else latency */
    enum llm_tuning tu = o->tuning;
    if (tu == LLM_TUNING_AUTO)
        tu = o->max_seqs >= LLM_TUNING_WIDE && m->S >= LLM_TUNING_WIDE ? LLM_TUNING_THROUGHPUT : LLM_TUNING_LATENCY;
    m->tuning = tu == LLM_TUNING_THROUGHPUT ? OPS_THROUGHPUT : OPS_LATENCY;
    info->tuning = tu;
    size_t S = (size_t)m->S, R = (size_t)m->R;
    size_t abytes = 0;
    size_t sizes[] = {S * C, S * C, S * 3 * C, S * C, S * F, R * C, (size_t)m->threads * ATT_Q * P};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++)
        abytes += (sizes[k] * sizeof(float) + 63) & ~(size_t)63;
    abytes += (S * sizeof(int) + 63) & ~(size_t)63;
    size_t xq_bytes = q8 ? ops_q8_x_bytes(S, m->F > m->C ? m->F : m->C) : 0;
    abytes += (xq_bytes + 63) & ~(size_t)63;
    m->amem = alloc64(abytes);
    if (!m->amem) {
        snprintf(err, errlen, "out of memory for %zu bytes of activations", abytes);
        cpu_free(m);
        return -1;
    }
    cur = m->amem;
    m->x = carve(&cur, sizes[0] * sizeof(float));
    m->h = carve(&cur, sizes[1] * sizeof(float));
    m->qkv = carve(&cur, sizes[2] * sizeof(float));
    m->att = carve(&cur, sizes[3] * sizeof(float));
    m->ff = carve(&cur, sizes[4] * sizeof(float));
    m->hf = carve(&cur, sizes[5] * sizeof(float));
    m->scores = carve(&cur, sizes[6] * sizeof(float));
    m->row0 = carve(&cur, S * sizeof(int));
    m->xq = q8 ? carve(&cur, xq_bytes) : NULL;

    info->weight_dtype = m->wdt;
    info->weight_bytes = wbytes;
    info->step_weight_bytes = L * layer_mat + (NL ? NL * C * sizeof(float) : head_bytes) + L * layer_vec;
    snprintf(info->weight_format, sizeof info->weight_format, "%s", q8 ? "Q8_0" : ckpt_dtype_name(m->wdt));
    info->kv_block_bytes = m->block_elems * kv_es;
    snprintf(info->kv_format, sizeof info->kv_format, "%s", m->kv_half ? "F16" : "F32");
    info->threads = m->threads;
    /* the tuning named where it changes a kernel (packed products at the AMX level) */
    snprintf(info->device_name, sizeof info->device_name, "cpu, %d threads, %s%s%s", m->threads, ops_simd_name(),
             packed && ops_tuning_matters() ? ", " : "", packed && ops_tuning_matters() ? llm_tuning_name(tu) : "");
    *impl = m;
    return 0;
oom:
    snprintf(err, errlen, "%s: out of memory repacking the weights", ck->dir);
    cpu_free(m);
    return -1;
}

const struct llm_backend llm_cpu_backend = {"cpu", cpu_load, cpu_free, cpu_forward, NULL};  /* greedy: llm.c's, on the logits */
