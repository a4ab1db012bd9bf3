/* gpt2_cuda.cu -- the CUDA backend: GPT-2's forward pass over a batch of sequences at different positions, paged KV blocks in device memory, products through cuBLAS.
 *
 * The same step as kernels/cpu/gpt2_cpu.c (the reference it is tested
 * against), with these device buffers (rows = the step's new tokens):
 *
 *   x = wte[token] + wpe[pos]                                   x: F32 residual stream
 *   h = LayerNorm_1(x)                                          h: dt
 *   for each block:
 *     y = h Wqkv;  qkv = y + b                                  y: F32 product, qkv: dt
 *     k, v -> KV blocks;  att = softmax(q k^T * scale, causal) v   att: dt
 *     y = att Wproj;  x += y + b;  h = LayerNorm_2(x)           one fused kernel
 *     y = h Wfc;  ff = act(y + b)                               ff: dt
 *     y = ff Wmp;  x += y + b;  h = LayerNorm(x)                the next block's LN_1, or LN_f after the last
 *   logits = h[rows asked for] wte^T                            F32, copied to the caller
 *   (a sequence classifier: h[rows] score^T, num_labels wide)
 *   hidden = LayerNorm_f(x) in F32 (into y)                     the rows of sequences that ask, copied out
 *
 * dt is what llm_load_opts.dtype asks (llm.h): by default half precision,
 * the checkpoint's F16/BF16, or an F32 checkpoint narrowed at load (to F16
 * when its values fit, else BF16). Matrices, the activations that feed a
 * product and the KV blocks are in dt; the residual stream and every
 * product's output stay F32 so that half precision rounds each value once
 * between products instead of accumulating rounding along the 2L residual
 * adds. LayerNorm parameters, biases and wpe are F32 (small).
 *
 * Memory: three device allocations made at load and never during a step:
 * the weights, the KV pool (the engine's blocks and one sink block for graph
 * padding rows), and the step scratch (activations for max_step_tokens rows,
 * logits for max_step_logits rows, the step's metadata, cuBLAS's workspace);
 * plus three pinned host buffers, the metadata and a greedy step's requests
 * going in, the logits (and hidden rows, or a greedy step's choices) coming
 * back. A step is one host-to-device copy of its
 * metadata, the kernels and products on the model's stream (a decode step:
 * one CUDA graph launch, the graph of its bucket of rows), one device-to-host
 * copy of the logits into pinned memory and one synchronisation; then a host
 * memcpy into the caller's buffer.
 *
 * A greedy step (llm_forward_greedy) appends kcu_sample_greedy (sample.cu)
 * after the LM head, inside the decode graph (a graph of its own per
 * bucket: its requests live in fixed device buffers, copied in with the
 * metadata), and copies back only each row's ksample_out (id, logprob,
 * top-n: 172 bytes) instead of its logits row (4 V bytes, 201 KB for GPT-2). */
#include "backend.h"
#include "cuda/kernels.h"
#include "cuda/sample_cuda.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Decode steps run as CUDA graphs, one per bucket of rows: a step of n
 * sequences is padded to the smallest bucket >= n. */
static const int graph_buckets[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
#define GRAPH_NBUCKETS (int)(sizeof graph_buckets / sizeof graph_buckets[0])

struct cuda_layer {
    const float *ln_1_g, *ln_1_b, *ln_2_g, *ln_2_b;
    const float *qkv_b, *proj_b, *fc_b, *mproj_b;
    const void *qkv_w;      /* [C][3C] in dt: Conv1D [in][out], as the file stores it */
    const void *proj_w;     /* [C][C] */
    const void *fc_w;       /* [C][F] */
    const void *mproj_w;    /* [F][C] */
    float attn_scale;       /* 1/sqrt(head_dim), and / (layer+1) when the config asks */
};

struct cuda_model {
    int device;
    int L, C, H, hd, F, V, P;
    float eps;
    enum kcu_act act;
    enum ckpt_dtype wdt;            /* dt above */

    /* Weights: one device allocation, carved below. */
    void *wmem;
    size_t wbytes;
    const void *wte;                /* [V][C]: embedding rows and the tied LM head */
    const void *lm_head;            /* [V][C]; == wte when tied */
    const void *score;              /* classifiers: score.weight [NL][C] in dt, used instead of lm_head */
    int NL;                         /* its rows (num_labels); 0 for a language model */
    int O;                          /* floats per logits row: V, or NL for a classifier */
    const float *wpe;               /* [P][C] */
    const float *ln_f_g, *ln_f_b;
    struct cuda_layer *layers;      /* host array (L) of device pointers */

    /* KV pool: n_blocks blocks laid out as kernels.h says. */
    void *kv;
    struct kcu_kv_layout kl;
    int n_blocks;                   /* the engine's; block n_blocks (one more) is the padding rows' sink */

    /* Step scratch: one device allocation for the largest step. */
    void *amem;
    int S, R;                       /* most rows, most logits rows per step */
    size_t max_tab;                 /* most block-table entries per step */
    float *x;                       /* [S][C] residual stream */
    float *y;                       /* [S][max(3C, F)] product outputs */
    void *h, *qkv, *att, *ff;       /* [S][C], [S][3C], [S][C], [S][F] in dt */
    void *hf;                       /* [R][C] in dt: the rows the logits are made from */
    float *logits;                  /* [R][O] */
    struct kcu_sample_row *dreq;    /* greedy steps: [R] requests ... */
    int32_t *dids;                  /* ... their id arrays [R * 3P] (context ids, generated ids, counts) ... */
    struct ksample_out *dout;       /* ... the choices [R] ... */
    double *swork;                  /* ... and kcu_sample_greedy's work */
    int32_t *dmeta;                 /* the step's metadata on the device (layout of hmeta) */
    void *ws;                       /* cuBLAS workspace */
    float *att_work;                /* split decode attention's partials (kcu_decode_work_floats) */
    int sms;                        /* the device's multiprocessors: how far decode attention splits */
    size_t ws_bytes;

    /* The step's metadata, built on the host and copied in one piece:
     * tokens [S], pos [S], tab [S], logit rows [R], block tables [max_tab]. */
    int32_t *hmeta;                 /* pinned */
    size_t meta_ints;
    /* What comes back: the logits rows [R][O], then the hidden rows [S][C]
     * when asked; pinned, so the copy is DMA without staging, and copied to
     * the caller's buffers after the step's one synchronisation. */
    float *hout;
    /* A greedy step's requests, as dreq and dids lay them out: [R] rows then
     * [R * 3P] ids; pinned, copied in one piece with the step. */
    int32_t *hsamp;
    size_t samp_ids;                /* R * 3P */

    /* Decode graphs (graph_bucket): instantiated on a bucket's first step;
     * graphs_off under LLMCGI_CUDA_SYNC=1, LLMCGI_CUDA_GRAPHS=0, or once a
     * capture failed (said on standard error, once). */
    cudaGraphExec_t graph[2][GRAPH_NBUCKETS];   /* [greedy][bucket] */
    bool graphs_off;

    cudaStream_t st;
    cublasHandle_t blas;

    /* Debug modes, read from the environment at load:
     * LLMCGI_CUDA_SYNC=1: the stream is synchronised after every launch, so an
     *   error a kernel or product causes asynchronously is reported against that
     *   launch (and its layer) instead of against the step's final synchronisation;
     * LLMCGI_CUDA_CHECK_KV=1: attention's reads of KV positions that no step wrote
     *   fail the step, naming the row, position and block (kernels.h, kl.written). */
    bool sync, check_kv;
    uint8_t *kv_written;            /* [n_blocks][L][block_tokens], check_kv only */
    int32_t *kv_fault;              /* 4 ints, check_kv only */
};

/* Failed CUDA / cuBLAS calls become -1 with the call and the library's words in err. */
#define CUDA_TRY(call)                                                                                       \
    do {                                                                                                     \
        cudaError_t e_ = (call);                                                                             \
        if (e_ != cudaSuccess) {                                                                             \
            snprintf(err, errlen, "cuda: %s: %s", #call, cudaGetErrorString(e_));                            \
            return -1;                                                                                       \
        }                                                                                                    \
    } while (0)

#define BLAS_TRY(call)                                                                                       \
    do {                                                                                                     \
        cublasStatus_t s_ = (call);                                                                          \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                                   \
            snprintf(err, errlen, "cuda: %s: %s", #call, cublasGetStatusString(s_));                         \
            return -1;                                                                                       \
        }                                                                                                    \
    } while (0)

/* One launch of the step: its launch error at once; under LLMCGI_CUDA_SYNC=1
 * also what it did asynchronously, reported against it (and the layer). */
#define SYNC_AFTER(what)                                                                                     \
    do {                                                                                                     \
        if (m->sync) {                                                                                       \
            cudaError_t e_ = cudaStreamSynchronize(st);                                                      \
            if (e_ != cudaSuccess) {                                                                         \
                snprintf(err, errlen, "cuda: %s (layer %d of the step): %s", what, at_layer,                 \
                         cudaGetErrorString(e_));                                                            \
                return -1;                                                                                   \
            }                                                                                                \
        }                                                                                                    \
    } while (0)
#define LAUNCH(call)                                                                                         \
    do {                                                                                                     \
        CUDA_TRY(call);                                                                                      \
        SYNC_AFTER(#call);                                                                                   \
    } while (0)
#define BLAS_LAUNCH(call)                                                                                    \
    do {                                                                                                     \
        BLAS_TRY(call);                                                                                      \
        SYNC_AFTER(#call);                                                                                   \
    } while (0)

static bool env_on(const char *name)
{
    const char *v = getenv(name);
    return v && *v && strcmp(v, "0") != 0;
}

/* ------------------------------------------------------------------ forward */

/* Fills the pinned metadata for the step; returns the ints to copy, with
 * *T rows and *R logits rows. The sizes were checked by llm_forward. With
 * pad > T (a graph's bucket) rows T..pad-1 are padding: token 0 at position 0
 * of the model's sink block (one past the engine's pool, never read by a real
 * row), their logits row computed and not copied back. */
static size_t build_meta(struct cuda_model *m, const struct llm_seq *seqs, int n_seqs, int pad, int *T_out,
                         int *R_out)
{
    int32_t *tok = m->hmeta, *pos = tok + m->S, *tab = pos + m->S, *lrow = tab + m->S, *tables = lrow + m->R;
    int T = 0, R = 0, nt = 0, B = m->kl.block_tokens;
    for (int si = 0; si < n_seqs; si++) {
        const struct llm_seq *s = &seqs[si];
        int used = (s->pos + s->n_tokens + B - 1) / B;
        memcpy(tables + nt, s->blocks, sizeof(int32_t) * (size_t)used);
        int first = s->logits == LLM_LOGITS_ALL ? 0 : s->logits == LLM_LOGITS_LAST ? s->n_tokens - 1 : s->n_tokens;
        for (int t = 0; t < s->n_tokens; t++, T++) {
            tok[T] = s->tokens[t];
            pos[T] = s->pos + t;
            tab[T] = nt;
            if (t >= first)
                lrow[R++] = T;
        }
        nt += used;
    }
    *T_out = T;
    *R_out = R;
    if (pad > T) {
        tables[nt] = m->n_blocks;
        for (int r = T; r < pad; r++) {
            tok[r] = 0;
            pos[r] = 0;
            tab[r] = nt;
            lrow[r] = r;    /* a decode bucket: one logits row per row */
        }
        nt++;
    }
    return (size_t)3 * m->S + m->R + nt;
}

/* The step's kernels and products from the embedding to the logits, on T
 * rows with R logits rows, everything it reads in device memory: what a CUDA
 * graph captures (no copy to or from the host, no synchronisation unless
 * LLMCGI_CUDA_SYNC, which never captures). Attention (attention.cu) is the
 * tiled prefill kernel when `prefill` (a sequence brings a prompt chunk),
 * else decode split n_split ways over each row's own KV sequence. */
static int step_body(struct cuda_model *m, int T, int R, bool prefill, int n_split, bool greedy, char *err,
                     size_t errlen)
{
    int C = m->C, F = m->F;
    enum ckpt_dtype dt = m->wdt;
    cudaStream_t st = m->st;
    const int32_t *d_tok = m->dmeta, *d_pos = d_tok + m->S, *d_tab = d_pos + m->S, *d_lrow = d_tab + m->S,
                  *d_tables = d_lrow + m->R;
    int at_layer = -1;
    LAUNCH(kcu_embed(m->x, d_tok, d_pos, m->wte, dt, m->wpe, T, C, st));
    const float *g0 = m->L > 0 ? m->layers[0].ln_1_g : m->ln_f_g, *b0 = m->L > 0 ? m->layers[0].ln_1_b : m->ln_f_b;
    LAUNCH(kcu_residual_layernorm(m->x, NULL, NULL, m->h, dt, g0, b0, T, C, m->eps, st));

    for (int l = 0; l < m->L; l++) {
        const struct cuda_layer *ly = &m->layers[l];
        at_layer = l;
        BLAS_LAUNCH(kcu_gemm(m->blas, m->y, m->h, ly->qkv_w, dt, KCU_W_IN_OUT, T, C, 3 * C));
        LAUNCH(kcu_bias_act(m->qkv, dt, m->y, ly->qkv_b, T, 3 * C, KCU_ACT_NONE, st));
        LAUNCH(kcu_kv_store(m->kv, m->qkv, dt, d_pos, d_tab, d_tables, T, l, m->kl, st));
        if (prefill)
            LAUNCH(kcu_attention_prefill(m->att, m->qkv, m->kv, dt, d_pos, d_tab, d_tables, T, l, m->kl,
                                         ly->attn_scale, st));
        else
            LAUNCH(kcu_attention_decode(m->att, m->qkv, m->kv, dt, d_pos, d_tab, d_tables, T, l, m->kl,
                                        ly->attn_scale, n_split, m->att_work, st));
        BLAS_LAUNCH(kcu_gemm(m->blas, m->y, m->att, ly->proj_w, dt, KCU_W_IN_OUT, T, C, C));
        LAUNCH(kcu_residual_layernorm(m->x, m->y, ly->proj_b, m->h, dt, ly->ln_2_g, ly->ln_2_b, T, C, m->eps, st));
        BLAS_LAUNCH(kcu_gemm(m->blas, m->y, m->h, ly->fc_w, dt, KCU_W_IN_OUT, T, C, F));
        LAUNCH(kcu_bias_act(m->ff, dt, m->y, ly->fc_b, T, F, m->act, st));
        BLAS_LAUNCH(kcu_gemm(m->blas, m->y, m->ff, ly->mproj_w, dt, KCU_W_IN_OUT, T, F, C));
        const float *g = l + 1 < m->L ? m->layers[l + 1].ln_1_g : m->ln_f_g;
        const float *b = l + 1 < m->L ? m->layers[l + 1].ln_1_b : m->ln_f_b;
        LAUNCH(kcu_residual_layernorm(m->x, m->y, ly->mproj_b, m->h, dt, g, b, T, C, m->eps, st));
    }
    at_layer = -1;

    /* h now holds LayerNorm_f of every row; the LM head runs on the rows asked for. */
    if (R > 0) {
        LAUNCH(kcu_gather_rows(m->hf, m->h, dt, d_lrow, R, C, st));
        BLAS_LAUNCH(kcu_gemm(m->blas, m->logits, m->hf, m->NL ? m->score : m->lm_head, dt, KCU_W_OUT_IN, R, C, m->O));
        if (greedy)
            LAUNCH(kcu_sample_greedy(m->logits, R, m->O, m->dreq, m->dids, m->dout, m->swork, st));
    }
    return 0;
}

/* The graph bucket of a step of T rows: the smallest of KCU_GRAPH_BUCKETS
 * that holds it, or -1 when the step is not a plain decode step (a prompt
 * chunk, all rows' logits, hidden states asked, or too wide for a bucket that
 * fits the scratch), or graphs are off. */
static int graph_bucket(const struct cuda_model *m, const struct llm_seq *seqs, int n_seqs, float *const *hidden)
{
    if (m->graphs_off)
        return -1;
    for (int si = 0; si < n_seqs; si++)
        if (seqs[si].n_tokens != 1 || seqs[si].logits != LLM_LOGITS_LAST || (hidden && hidden[si]))
            return -1;
    for (int b = 0; b < GRAPH_NBUCKETS; b++)
        if (graph_buckets[b] >= n_seqs)
            return graph_buckets[b] <= m->S && graph_buckets[b] <= m->R ? b : -1;
    return -1;
}

/* Turns graphs off for the model's life, saying why on standard error once
 * (the server's log): a capture or instantiation CUDA refused. The step that
 * found it runs with plain launches. */
static void graphs_fail(struct cuda_model *m, const char *why)
{
    m->graphs_off = true;
    (void)cudaGetLastError();
    fprintf(stderr, "llmcgi: cuda:%d: CUDA graphs off, decode steps launch each kernel: %s\n", m->device, why);
}

/* Runs bucket b's graph, capturing and instantiating it on first use.
 * Returns 0; 1 when graphs just turned off (the caller launches plainly);
 * -1 with err when the launch failed. */
static int run_graph(struct cuda_model *m, int b, bool greedy, char *err, size_t errlen)
{
    cudaStream_t st = m->st;
    cudaGraphExec_t *ge = &m->graph[greedy][b];
    if (!*ge) {
        char why[256] = "";
        cudaGraph_t g = NULL;
        cudaError_t e = cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal);
        if (e != cudaSuccess) {
            snprintf(why, sizeof why, "cudaStreamBeginCapture: %s", cudaGetErrorString(e));
            graphs_fail(m, why);
            return 1;
        }
        /* the split count from the whole context, not this step's longest
         * row: the graph is replayed as contexts grow, and a split past a
         * row's own context is empty (it writes an empty partial) */
        int rows = graph_buckets[b];
        int rc = step_body(m, rows, rows, false, kcu_decode_splits(rows * m->H, m->P, m->sms), greedy, why,
                           sizeof why);
        e = cudaStreamEndCapture(st, &g);
        if (rc != 0 || e != cudaSuccess) {
            if (rc == 0)
                snprintf(why, sizeof why, "capturing the step of %d rows: %s", graph_buckets[b],
                         cudaGetErrorString(e));
            if (g)
                cudaGraphDestroy(g);
            graphs_fail(m, why);
            return 1;
        }
        e = cudaGraphInstantiate(ge, g, 0);
        cudaGraphDestroy(g);
        if (e != cudaSuccess) {
            *ge = NULL;
            snprintf(why, sizeof why, "cudaGraphInstantiate (%d rows): %s", graph_buckets[b], cudaGetErrorString(e));
            graphs_fail(m, why);
            return 1;
        }
    }
    CUDA_TRY(cudaGraphLaunch(*ge, st));
    return 0;
}

static_assert(sizeof(struct kcu_sample_row) % sizeof(int32_t) == 0, "kcu_sample_row packs into int32s");

/* Fills the pinned requests of a greedy step: rows[0..R) then padding rows
 * up to `pad` (a graph's bucket: penalties off, no top-n), their ids packed
 * after. Returns the ints to copy, or 0 with err when the ids do not fit. */
static size_t build_samp(struct cuda_model *m, const struct ksample_row *rows, int R, int pad, char *err,
                         size_t errlen)
{
    const size_t RQ = sizeof(struct kcu_sample_row) / sizeof(int32_t);
    struct kcu_sample_row *req = (struct kcu_sample_row *)m->hsamp;
    int32_t *ids = m->hsamp + (size_t)m->R * RQ;
    size_t n = 0;
    for (int r = 0; r < R; r++) {
        const struct ksample_row *q = &rows[r];
        bool rep = q->repetition_penalty != 1.0f, fp = q->frequency_penalty != 0.0f || q->presence_penalty != 0.0f;
        size_t need = (rep ? (size_t)q->n_rep : 0) + (fp ? 2 * (size_t)q->n_gen : 0);
        if (n + need > m->samp_ids) {
            snprintf(err, errlen, "cuda: a greedy step's penalties name more than %zu ids", m->samp_ids);
            return 0;
        }
        req[r] = kcu_sample_row{rep ? q->repetition_penalty : 1.0f, fp ? q->frequency_penalty : 0.0f,
                                fp ? q->presence_penalty : 0.0f, (int)n, rep ? q->n_rep : 0, 0, 0, q->top_n};
        if (rep) {
            memcpy(ids + n, q->rep_ids, sizeof(int32_t) * (size_t)q->n_rep);
            n += (size_t)q->n_rep;
        }
        if (fp) {
            req[r].gen_off = (int)n;
            req[r].n_gen = q->n_gen;
            memcpy(ids + n, q->gen_ids, sizeof(int32_t) * (size_t)q->n_gen);
            memcpy(ids + n + q->n_gen, q->gen_counts, sizeof(int32_t) * (size_t)q->n_gen);
            n += 2 * (size_t)q->n_gen;
        }
    }
    for (int r = R; r < pad; r++)
        req[r] = kcu_sample_row{1.0f, 0.0f, 0.0f, 0, 0, 0, 0, 0};
    return (size_t)m->R * RQ + n;
}

/* One step: logits into `logits`, or with rows (a greedy step) the rows'
 * choices into out. */
static int forward_step(struct cuda_model *m, const struct llm_seq *seqs, int n_seqs, float *logits,
                        float *const *hidden, const struct ksample_row *rows, struct ksample_out *out, char *err,
                        size_t errlen)
{
    const bool greedy = rows != NULL;
    int C = m->C, T, R;
    cudaStream_t st = m->st;

    /* llm_forward checked what bounds these: at most S rows and R logits
     * rows, and each sequence (>= 1 row) covers <= ceil(P/B) blocks, so the
     * tables fit in max_tab = S * ceil(P/B) (+ 1 for the padding rows' sink
     * block). The test below only guards against the two sizings drifting
     * apart. */
    int b = graph_bucket(m, seqs, n_seqs, hidden);
    size_t ints = build_meta(m, seqs, n_seqs, b >= 0 ? graph_buckets[b] : 0, &T, &R);
    if (T > m->S || R > m->R || ints > m->meta_ints) {
        snprintf(err, errlen, "cuda: a step of %d rows and %d logits rows does not fit the scratch", T, R);
        return -1;
    }
    size_t samp_ints = 0;
    if (greedy && (samp_ints = build_samp(m, rows, R, b >= 0 ? graph_buckets[b] : 0, err, errlen)) == 0)
        return -1;

    CUDA_TRY(cudaSetDevice(m->device));     /* the engine thread may not be the loading one */
    /* A launch wrapper returns cudaGetLastError(): clear what an earlier call
     * left (not this step's doing) so that it is not reported against this
     * step's first launch. An error that broke the context (sticky) comes back
     * at the next call anyway. */
    (void)cudaGetLastError();
    /* One copy in (the metadata, from pinned memory), the kernels (one graph
     * launch for a decode step), one copy out (into pinned memory), one
     * synchronisation. */
    CUDA_TRY(cudaMemcpyAsync(m->dmeta, m->hmeta, ints * sizeof(int32_t), cudaMemcpyHostToDevice, st));
    if (greedy)     /* dreq and dids are one piece, as hsamp */
        CUDA_TRY(cudaMemcpyAsync(m->dreq, m->hsamp, samp_ints * sizeof(int32_t), cudaMemcpyHostToDevice, st));
    int g = b >= 0 ? run_graph(m, b, greedy, err, errlen) : 1;
    if (g < 0)
        return -1;
    if (g == 1) {
        int max_ctx = 0, max_new = 0;
        for (int si = 0; si < n_seqs; si++) {
            max_ctx = seqs[si].pos + seqs[si].n_tokens > max_ctx ? seqs[si].pos + seqs[si].n_tokens : max_ctx;
            max_new = seqs[si].n_tokens > max_new ? seqs[si].n_tokens : max_new;
        }
        bool prefill = max_new >= 8;
        if (step_body(m, T, R, prefill, prefill ? 1 : kcu_decode_splits(T * m->H, max_ctx, m->sms), greedy, err,
                      errlen) != 0)
            return -1;
    }
    size_t out_floats = greedy ? 0 : (size_t)R * m->O;
    if (R > 0 && greedy)    /* the choices only (into pinned memory, as the logits would go) */
        CUDA_TRY(cudaMemcpyAsync(m->hout, m->dout, sizeof(struct ksample_out) * (size_t)R, cudaMemcpyDeviceToHost, st));
    else if (R > 0)
        CUDA_TRY(cudaMemcpyAsync(m->hout, m->logits, sizeof(float) * out_floats, cudaMemcpyDeviceToHost, st));
    /* Embeddings: LayerNorm_f again, in F32 whatever dt is, into y (free
     * after the last block), and the rows of the sequences that ask copied
     * out after the logits. */
    bool any = false;
    for (int si = 0; hidden && si < n_seqs && !any; si++)
        any = hidden[si] != NULL;
    if (any) {
        int at_layer = -1;
        LAUNCH(kcu_residual_layernorm(m->x, NULL, NULL, m->y, CKPT_F32, m->ln_f_g, m->ln_f_b, T, C, m->eps, st));
        for (int si = 0, row = 0; si < n_seqs; row += seqs[si].n_tokens, si++)
            if (hidden[si])
                CUDA_TRY(cudaMemcpyAsync(m->hout + out_floats + (size_t)row * C, m->y + (size_t)row * C,
                                         sizeof(float) * (size_t)seqs[si].n_tokens * C, cudaMemcpyDeviceToHost, st));
    }
    cudaError_t e = cudaStreamSynchronize(st);
    if (e != cudaSuccess) {
        /* Whichever kernel, product or copy of the step failed, it shows only here. */
        snprintf(err, errlen, "cuda: a kernel, product or copy of this step failed: %s (LLMCGI_CUDA_SYNC=1 names "
                 "the launch)", cudaGetErrorString(e));
        return -1;
    }
    if (m->check_kv) {
        int32_t f[4];
        CUDA_TRY(cudaMemcpy(f, m->kv_fault, sizeof f, cudaMemcpyDeviceToHost));
        if (f[0]) {
            CUDA_TRY(cudaMemset(m->kv_fault, 0, sizeof f));
            snprintf(err, errlen, "cuda: attention read position %d of row %d's sequence from KV block %d, which no "
                     "step wrote (LLMCGI_CUDA_CHECK_KV)", f[2], f[1], f[3]);
            return -1;
        }
    }
    /* From pinned memory to the caller's buffers: host copies, after the one synchronisation. */
    if (R > 0 && greedy)
        memcpy(out, m->hout, sizeof(struct ksample_out) * (size_t)R);
    else if (R > 0)
        memcpy(logits, m->hout, sizeof(float) * out_floats);
    for (int si = 0, row = 0; any && si < n_seqs; row += seqs[si].n_tokens, si++)
        if (hidden[si])
            memcpy(hidden[si], m->hout + out_floats + (size_t)row * C, sizeof(float) * (size_t)seqs[si].n_tokens * C);
    return 0;
}

static int cuda_forward(void *impl, const struct llm_seq *seqs, int n_seqs, float *logits, float *const *hidden,
                        char *err, size_t errlen)
{
    struct cuda_model *m = (struct cuda_model *)impl;
    if (forward_step(m, seqs, n_seqs, logits, hidden, NULL, NULL, err, errlen) == 0)
        return 0;
    /* A step that failed half-way may still have copies and kernels in
     * flight (the next step rewrites the pinned metadata): let them end. */
    cudaStreamSynchronize(m->st);
    return -1;
}

static int cuda_forward_greedy(void *impl, const struct llm_seq *seqs, int n_seqs, const struct ksample_row *rows,
                               struct ksample_out *out, char *err, size_t errlen)
{
    struct cuda_model *m = (struct cuda_model *)impl;
    if (forward_step(m, seqs, n_seqs, NULL, NULL, rows, out, err, errlen) == 0)
        return 0;
    cudaStreamSynchronize(m->st);
    return -1;
}

/* ------------------------------------------------------------------ load */

/* Hands out 256-byte aligned pieces of one allocation. With base == NULL it
 * only counts, so one carving function both sizes and fills an allocation. */
struct carver {
    char *base;
    size_t off;
};

static void *carve(struct carver *c, size_t bytes)
{
    void *p = c->base ? c->base + c->off : NULL;
    c->off += (bytes + 255) & ~(size_t)255;
    return p;
}

/* A tensor to copy to the device, converted to dt on the way when its type differs. */
struct upload {
    const struct ckpt_tensor *src;
    void *dst;
    enum ckpt_dtype dt;
};

static size_t tensor_elems(const struct ckpt_tensor *t)
{
    return t->nbytes / ckpt_dtype_size(t->dtype);
}

static bool lm_head_tied(const struct gpt2_checkpoint *ck)
{
    return ck->lm_head.data == NULL || ck->lm_head.data == ck->wte.data;
}

/* Carves the weights out of c (in the order of the CPU backend) and lists
 * the copies to make; *n counts them (up). */
static void carve_weights(struct cuda_model *m, const struct gpt2_checkpoint *ck, struct carver *c,
                          struct upload *jobs, int *n)
{
    *n = 0;
#define PUT(dstp, srct, type)                                                                                \
    do {                                                                                                     \
        void *p_ = carve(c, tensor_elems(srct) * ckpt_dtype_size(type));                                     \
        jobs[*n].src = (srct);                                                                               \
        jobs[*n].dst = p_;                                                                                   \
        jobs[*n].dt = (type);                                                                                \
        (*n)++;                                                                                              \
        dstp = (decltype(dstp))p_;                                                                           \
    } while (0)
    const void *p;
    PUT(p, &ck->wte, m->wdt);
    m->wte = m->lm_head = p;
    if (!lm_head_tied(ck)) {
        PUT(p, &ck->lm_head, m->wdt);
        m->lm_head = p;
    }
    if (m->NL)
        PUT(m->score, &ck->score, m->wdt);      /* nn.Linear: [out][in] already */
    PUT(m->wpe, &ck->wpe, CKPT_F32);
    PUT(m->ln_f_g, &ck->ln_f_w, CKPT_F32);
    PUT(m->ln_f_b, &ck->ln_f_b, CKPT_F32);
    for (int l = 0; l < m->L; l++) {
        const struct gpt2_layer_tensors *lt = &ck->layers[l];
        struct cuda_layer *ly = &m->layers[l];
        PUT(ly->ln_1_g, &lt->ln_1_w, CKPT_F32);
        PUT(ly->ln_1_b, &lt->ln_1_b, CKPT_F32);
        PUT(ly->ln_2_g, &lt->ln_2_w, CKPT_F32);
        PUT(ly->ln_2_b, &lt->ln_2_b, CKPT_F32);
        PUT(ly->qkv_b, &lt->c_attn_b, CKPT_F32);
        PUT(ly->proj_b, &lt->c_proj_b, CKPT_F32);
        PUT(ly->fc_b, &lt->c_fc_b, CKPT_F32);
        PUT(ly->mproj_b, &lt->mlp_proj_b, CKPT_F32);
        PUT(ly->qkv_w, &lt->c_attn_w, m->wdt);
        PUT(ly->proj_w, &lt->c_proj_w, m->wdt);
        PUT(ly->fc_w, &lt->c_fc_w, m->wdt);
        PUT(ly->mproj_w, &lt->mlp_proj_w, m->wdt);
    }
#undef PUT
}

/* Copies every listed tensor to the device, converting through one host
 * staging buffer where the types differ, and lets the file's pages go. */
static int upload_all(const struct gpt2_checkpoint *ck, const struct upload *jobs, int n, char *err, size_t errlen)
{
    size_t stage = 0;
    for (int i = 0; i < n; i++)
        if (jobs[i].src->dtype != jobs[i].dt && tensor_elems(jobs[i].src) * ckpt_dtype_size(jobs[i].dt) > stage)
            stage = tensor_elems(jobs[i].src) * ckpt_dtype_size(jobs[i].dt);
    char *buf = stage ? (char *)malloc(stage) : NULL;
    if (stage && !buf) {
        snprintf(err, errlen, "out of memory for a %zu-byte staging buffer", stage);
        return -1;
    }
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        const struct ckpt_tensor *t = jobs[i].src;
        size_t ne = tensor_elems(t), es = ckpt_dtype_size(jobs[i].dt);
        const void *from = t->data;
        if (t->dtype != jobs[i].dt) {
            for (size_t k = 0; k < ne; k++) {
                float v = ckpt_get(t, k);
                if (jobs[i].dt == CKPT_F32)
                    memcpy(buf + k * 4, &v, 4);
                else {
                    uint16_t hv = jobs[i].dt == CKPT_F16 ? ckpt_f32_to_f16(v) : ckpt_f32_to_bf16(v);
                    memcpy(buf + k * 2, &hv, 2);
                }
            }
            from = buf;
        }
        cudaError_t e = cudaMemcpy(jobs[i].dst, from, ne * es, cudaMemcpyHostToDevice);
        if (e != cudaSuccess) {
            snprintf(err, errlen, "cuda: copying the weights to the device: %s", cudaGetErrorString(e));
            rc = -1;
        }
        ckpt_tensor_done(ck, t);
    }
    free(buf);
    return rc;
}

/* Carves the step scratch out of c. */
static void carve_scratch(struct cuda_model *m, struct carver *c)
{
    size_t S = (size_t)m->S, R = (size_t)m->R, C = (size_t)m->C, F = (size_t)m->F, O = (size_t)m->O;
    size_t es = ckpt_dtype_size(m->wdt), ywide = 3 * C > F ? 3 * C : F;
    m->x = (float *)carve(c, S * C * sizeof(float));
    m->y = (float *)carve(c, S * ywide * sizeof(float));
    m->h = carve(c, S * C * es);
    m->qkv = carve(c, S * 3 * C * es);
    m->att = carve(c, S * C * es);
    m->ff = carve(c, S * F * es);
    m->hf = carve(c, R * C * es);
    m->logits = (float *)carve(c, R * O * sizeof(float));
    m->dmeta = (int32_t *)carve(c, m->meta_ints * sizeof(int32_t));
    /* dreq then dids in one piece (build_samp's layout) */
    m->dreq = (struct kcu_sample_row *)carve(c, R * sizeof(struct kcu_sample_row) + m->samp_ids * sizeof(int32_t));
    m->dids = (int32_t *)(m->dreq + R);
    m->dout = (struct ksample_out *)carve(c, R * sizeof(struct ksample_out));
    m->swork = (double *)carve(c, kcu_sample_work_doubles(m->R, m->O) * sizeof(double));
    m->ws = carve(c, m->ws_bytes);
    m->att_work = (float *)carve(c, kcu_decode_work_floats(m->S * m->H, m->hd, m->sms) * sizeof(float));
}

/* The kernels' name for each activation config.json may name. */
static enum kcu_act kcu_act_of(enum ckpt_act a)
{
    switch (a) {
    case CKPT_ACT_GELU_ERF: return KCU_ACT_GELU_ERF;
    case CKPT_ACT_RELU: return KCU_ACT_RELU;
    case CKPT_ACT_QUICK_GELU: return KCU_ACT_QUICK_GELU;
    case CKPT_ACT_GELU_TANH: break;
    }
    return KCU_ACT_GELU_TANH;
}

/* Frees everything a (possibly half-built) model holds. */
static void cuda_free(void *impl)
{
    struct cuda_model *m = (struct cuda_model *)impl;
    if (!m)
        return;
    /* Nothing to report from here: errors (a context already broken) are ignored. */
    cudaSetDevice(m->device);
    for (int g = 0; g < 2; g++)
        for (int b = 0; b < GRAPH_NBUCKETS; b++)
            if (m->graph[g][b])
                cudaGraphExecDestroy(m->graph[g][b]);
    if (m->blas)
        cublasDestroy(m->blas);
    if (m->st)
        cudaStreamDestroy(m->st);
    cudaFree(m->wmem);
    cudaFree(m->kv);
    cudaFree(m->amem);
    cudaFree(m->kv_written);
    cudaFree(m->kv_fault);
    cudaFreeHost(m->hmeta);
    cudaFreeHost(m->hout);
    cudaFreeHost(m->hsamp);
    free(m->layers);
    free(m);
}

/* cudaMalloc with a message that says what did not fit on which device. */
static int dev_alloc(const struct cuda_model *m, void **p, size_t bytes, const char *what, char *err, size_t errlen)
{
    cudaError_t e = cudaMalloc(p, bytes ? bytes : 256);
    if (e != cudaSuccess) {
        *p = NULL;
        cudaGetLastError();     /* an allocation failure is not sticky; clear it */
        snprintf(err, errlen, "cuda:%d: cannot allocate %zu bytes of device memory for %s: %s", m->device, bytes,
                 what, cudaGetErrorString(e));
        return -1;
    }
    return 0;
}

/* Everything cuda_load does; on failure the caller frees the half-built m. */
static int load_model(struct cuda_model *m, const struct gpt2_checkpoint *ck, const struct llm_load_opts *o,
                      struct llm_info *info, char *err, size_t errlen)
{
    const struct gpt2_config *cfg = &ck->cfg;
    m->device = o->device_index;
    m->L = cfg->n_layer;
    m->C = cfg->n_embd;
    m->H = cfg->n_head;
    m->F = cfg->n_inner;
    m->V = cfg->vocab_size;
    m->P = cfg->n_positions;
    m->eps = cfg->layer_norm_epsilon;
    m->NL = cfg->classifier ? cfg->num_labels : 0;
    m->O = m->NL ? m->NL : m->V;
    if (m->H < 1 || m->C % m->H != 0) {
        snprintf(err, errlen, "%s: n_embd %d is not a multiple of n_head %d", ck->dir, m->C, m->H);
        return -1;
    }
    m->hd = m->C / m->H;
    if (m->hd > KCU_MAX_HEAD_DIM) {
        snprintf(err, errlen, "%s: head size %d is more than the CUDA attention kernel's %d", ck->dir, m->hd,
                 KCU_MAX_HEAD_DIM);
        return -1;
    }
    m->act = kcu_act_of(cfg->act);
    if (ckpt_matrix_dtype(ck, llm_dtype_pick(o->dtype, true), &m->wdt, err, errlen) != 0)
        return -1;

    cudaDeviceProp prop;
    CUDA_TRY(cudaSetDevice(m->device));
    CUDA_TRY(cudaGetDeviceProperties(&prop, m->device));
    m->sms = prop.multiProcessorCount;
    CUDA_TRY(cudaStreamCreateWithFlags(&m->st, cudaStreamNonBlocking));

    /* Weights. */
    m->layers = (struct cuda_layer *)calloc((size_t)m->L > 0 ? (size_t)m->L : 1, sizeof *m->layers);
    int max_jobs = 6 + 12 * m->L;
    struct upload *jobs = (struct upload *)calloc((size_t)max_jobs, sizeof *jobs);
    if (!m->layers || !jobs) {
        free(jobs);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int n_jobs;
    struct carver c = {NULL, 0};
    carve_weights(m, ck, &c, jobs, &n_jobs);
    m->wbytes = c.off;
    if (dev_alloc(m, &m->wmem, m->wbytes, "the weights", err, errlen) != 0) {
        free(jobs);
        return -1;
    }
    c = carver{(char *)m->wmem, 0};
    carve_weights(m, ck, &c, jobs, &n_jobs);
    int rc = upload_all(ck, jobs, n_jobs, err, errlen);
    free(jobs);
    if (rc != 0)
        return -1;
    for (int l = 0; l < m->L; l++) {
        struct cuda_layer *ly = &m->layers[l];
        ly->attn_scale = cfg->scale_attn_weights ? 1.0f / sqrtf((float)m->hd) : 1.0f;
        if (cfg->scale_attn_by_inverse_layer_idx)
            ly->attn_scale /= (float)(l + 1);
    }

    /* KV pool. */
    m->kl = kcu_kv_layout{m->L, m->H, m->hd, info->kv_block_tokens};
    m->n_blocks = info->kv_blocks;
    size_t es = ckpt_dtype_size(m->wdt), block_bytes = kcu_kv_block_elems(m->kl) * es;
    if (dev_alloc(m, &m->kv, ((size_t)m->n_blocks + 1) * block_bytes, "the KV blocks", err, errlen) != 0)
        return -1;
    m->sync = env_on("LLMCGI_CUDA_SYNC");
    const char *gv = getenv("LLMCGI_CUDA_GRAPHS");
    m->graphs_off = m->sync || (gv && !strcmp(gv, "0"));
    m->check_kv = env_on("LLMCGI_CUDA_CHECK_KV");
    if (m->check_kv) {
        size_t wb = ((size_t)m->n_blocks + 1) * m->L * m->kl.block_tokens;
        if (dev_alloc(m, (void **)&m->kv_written, wb, "the KV check", err, errlen) != 0 ||
            dev_alloc(m, (void **)&m->kv_fault, 4 * sizeof(int32_t), "the KV check", err, errlen) != 0)
            return -1;
        CUDA_TRY(cudaMemset(m->kv_written, 0, wb));
        CUDA_TRY(cudaMemset(m->kv_fault, 0, 4 * sizeof(int32_t)));
        m->kl.written = m->kv_written;
        m->kl.fault = m->kv_fault;
    }

    /* Step scratch, metadata and cuBLAS's workspace (32 MiB on Hopper, 4
     * MiB before, as cuBLAS's documentation recommends). */
    m->S = info->max_step_tokens;
    m->R = info->max_step_logits;
    int blocks_per_seq = (m->P + m->kl.block_tokens - 1) / m->kl.block_tokens;
    m->max_tab = (size_t)m->S * (size_t)blocks_per_seq;
    m->meta_ints = (size_t)3 * m->S + (size_t)m->R + m->max_tab + 1;
    m->ws_bytes = (size_t)(prop.major >= 9 ? 32 : 4) << 20;
    m->samp_ids = (size_t)m->R * 3 * (size_t)m->P;     /* per row: <= P context ids, <= P generated, their counts */
    c = carver{NULL, 0};
    carve_scratch(m, &c);
    size_t abytes = c.off;
    if (dev_alloc(m, &m->amem, abytes, "the step's activations", err, errlen) != 0)
        return -1;
    c = carver{(char *)m->amem, 0};
    carve_scratch(m, &c);
    CUDA_TRY(cudaMallocHost((void **)&m->hmeta, m->meta_ints * sizeof(int32_t)));
    size_t hout_bytes = ((size_t)m->R * m->O + (size_t)m->S * m->C) * sizeof(float);
    if (hout_bytes < (size_t)m->R * sizeof(struct ksample_out))
        hout_bytes = (size_t)m->R * sizeof(struct ksample_out);
    CUDA_TRY(cudaMallocHost((void **)&m->hout, hout_bytes));
    CUDA_TRY(cudaMallocHost((void **)&m->hsamp, (size_t)m->R * sizeof(struct kcu_sample_row) +
                                                    m->samp_ids * sizeof(int32_t)));

    BLAS_TRY(cublasCreate(&m->blas));
    BLAS_TRY(cublasSetStream(m->blas, m->st));
    BLAS_TRY(cublasSetWorkspace(m->blas, m->ws, m->ws_bytes));
    BLAS_TRY(cublasSetMathMode(m->blas, CUBLAS_DEFAULT_MATH));   /* no TF32: F32 models compute in F32 */

    /* Whatever went wrong asynchronously in the copies shows here. */
    CUDA_TRY(cudaDeviceSynchronize());

    size_t L = (size_t)m->L, C = (size_t)m->C, F = (size_t)m->F, V = (size_t)m->V;
    size_t layer_mat = (3 * C * C + C * C + C * F + F * C) * es;
    size_t layer_vec = (4 * C + 3 * C + C + F + C) * sizeof(float);
    info->weight_dtype = m->wdt;
    info->weight_bytes = m->wbytes;
    info->step_weight_bytes = L * layer_mat + (m->NL ? (size_t)m->NL : V) * C * es + L * layer_vec;
    info->kv_block_bytes = block_bytes;
    info->threads = 0;
    snprintf(info->device_name, sizeof info->device_name, "cuda:%d %s (sm_%d%d, %.0f GiB)", m->device, prop.name,
             prop.major, prop.minor, (double)prop.totalGlobalMem / (1 << 30));
    return 0;
}

static int cuda_load(const struct gpt2_checkpoint *ck, const struct llm_load_opts *o, struct llm_info *info,
                     void **impl, char *err, size_t errlen)
{
    *impl = NULL;
    struct cuda_model *m = (struct cuda_model *)calloc(1, sizeof *m);
    if (!m) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (load_model(m, ck, o, info, err, errlen) != 0) {
        cuda_free(m);
        return -1;
    }
    *impl = m;
    return 0;
}

const struct llm_backend llm_cuda_backend = {"cuda", cuda_load, cuda_free, cuda_forward, cuda_forward_greedy};
