/* cpu_bench.c -- times the CPU backend on one model directory (prefill, decode at batch 1 and N) and the machine's copy bandwidth; prints one JSON object for tests/bench/cpu_decode and serve_local. With --agree, how often int8 weights pick F32's greedy token instead.
 *
 *   cpu_bench MODEL_DIR [THREADS] [PROMPT_TOKENS] [BATCH[,BATCH...]] [STEPS] [DECODE_CONTEXT] [auto|f32|q8]
 *             [auto|f32|f16 (kv_dtype)]
 *   (any mode, anywhere: --tuning auto|latency|throughput, llm.h's tuning)
 *   cpu_bench --agree MODEL_DIR GOLDEN_JSON MODEL_NAME [THREADS]
 *   cpu_bench --kernels [THREADS] [WEIGHTS] [ROWS]
 *   cpu_bench --ppl MODEL_DIR PPL_GOLDEN_JSON [THREADS]
 *   cpu_bench --matvec
 *   cpu_bench --packed [ROWS]
 *   cpu_bench --attn [THREADS] [BATCH] [CTX] [f16|f32]
 *   cpu_bench --fma-peak [THREADS]
 *
 * --agree takes the prompts of model MODEL_NAME ("124M") in the golden file,
 * runs 64 greedy steps with F32 weights (a half-precision file widened), then the same
 * prompts with dtype Q8 fed those tokens (teacher forcing) and counts the
 * steps whose argmax is the same: {"agree": N, "steps": M}.
 *
 * BATCH may list several batch sizes ("8,32"): decode is timed at batch 1
 * and at each, "decode_tok_s" maps each size to its tokens/s and
 * "decode_vs_1" to its ratio to batch 1; "batch" and "decodeN_tok_s" are
 * the first of them. "kv_dtype" is the KV cache's format (llm.h's kv_dtype,
 * auto unless the 8th argument says), "kv_step_bytes" the K and V bytes one
 * decode step reads per sequence at DECODE_CONTEXT (every layer's K and V
 * of that many positions; times the batch for a step). "tuning" is the
 * kernels' tuning the model resolved (--tuning; auto with the largest BATCH
 * as the sequences a step runs).
 *
 * --kernels times each matrix product of the 124M shape (qkv, proj, fc,
 * mproj: 12 distinct copies, as a step streams them; the LM head: one) at
 * 1, 8, 32 and 64 rows of x, for F32, F16, BF16 (each output-major and,
 * where the level has it, packed) and Q8_0, split over the threads as the
 * engine splits them (WEIGHTS: only F32, F16, BF16 or Q8_0; ROWS: only that
 * row count; packed products tuned as --tuning says, auto = latency); one JSON line per case, with the bytes and FLOPs
 * doc/cpu-kernels.md predicts from, and the fastest single call.
 *
 * --ppl runs the held-out token stream of PPL_GOLDEN_JSON (made by
 * tests/golden/make_ppl_golden.py: consecutive windows, each predicting its
 * next `window` tokens) through the engine with the matrices in F32, F16,
 * BF16 and Q8_0 (each as llm_load's dtype gives it), and
 * prints each one's mean loss (nats a token) and perplexity, transformers'
 * F32 figure from the file, and Q8_0's perplexity rise over F32 in %.
 *
 * --matvec times the 124M shape's products at one row of x (decode at batch
 * 1) in F32, F16, BF16 and Q8_0 (its input's quantization included) on one
 * thread by that thread's CPU time, not the wall clock, so that other work
 * on a shared machine counts less (it still shares the memory bus): best of
 * 5 sweeps, one JSON line per product and one for a whole step's products.
 *
 * --fma-peak measures the FMA peak the packed products are held to
 * (doc/cpu-kernels.md): each of THREADS threads (default: one per online
 * core) runs 24 independent vfmadd231ps zmm chains (inline asm, so the
 * compiler cannot reorder or spill them) for 2^27 rounds, or on a CPU
 * without AVX-512F the AVX2 level's 12 ymm chains twice a round; fastest of
 * 3, {"fma_peak_gflops": ..., "threads": N, "per_thread_gflops": ...,
 * "vector": "zmm" or "ymm"}.
 *
 * --attn times a decode step's attention alone (12 layers x 12 heads of 64,
 * blocks of 16 positions laid out as the engine's KV pool: per block every
 * layer's K then V, head-major; a sequence's blocks in a row), BATCH
 * sequences (default 32) of one new token at position CTX - 1 (default 128),
 * the pool in huge pages where the kernel gives them (as gpt2_cpu.c's
 * alloc64): "calls" is the per-block ops_scores / ops_softmax / ops_mix
 * sequence without prefetch and "attend1" ops_attend1 of one head, each a
 * task per (sequence, head); "heads" ops_attend1 over a group of a
 * sequence's heads a task, grouped as the engine's attention() does (the
 * engine's decode path); fastest of 30 steps each, interleaved, each step's
 * KV flushed from the caches first, against the K and V bytes a step reads at
 * the measured read bandwidth, and the median of heads / attend1 over the
 * rounds (the two steps back to back). */
#include "config.h"
#include "checkpoint.h"
#include "cpu/ops.h"
#include "cpu/threads.h"
#include "llm.h"

#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>

/* --tuning: the packed products' tuning (llm.h), for every mode. */
static enum llm_tuning tuning = LLM_TUNING_AUTO;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* --matvec, and --kernels at one thread (the pool then runs every task on
 * the calling thread): seconds of this thread's CPU time, which another
 * process's load on the same cores does not add to. */
static double cpu_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* STREAM-like copy over `threads` threads: bytes read per second (a copy
 * reads n and writes n; the read side is what a decode step is bound by). */
struct copy_job {
    char *dst;
    const char *src;
    size_t chunk;
};
static void copy_task(void *ctx, int task, int thread)
{
    (void)thread;
    struct copy_job *j = ctx;
    memcpy(j->dst + (size_t)task * j->chunk, j->src + (size_t)task * j->chunk, j->chunk);
}

/* Read-only: each task sums its part of a buffer (AVX2 where there is one),
 * the access pattern of a decode step reading weights. */
struct read_job {
    const float *src;
    size_t chunk;      /* floats per task */
    float sums[64];
};
#if defined(__x86_64__)
#include <immintrin.h>
__attribute__((target("avx2"))) static float read_sum(const float *p, size_t n)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (size_t i = 0; i + 32 <= n; i += 32) {
        s0 = _mm256_add_ps(s0, _mm256_loadu_ps(p + i));
        s1 = _mm256_add_ps(s1, _mm256_loadu_ps(p + i + 8));
        s2 = _mm256_add_ps(s2, _mm256_loadu_ps(p + i + 16));
        s3 = _mm256_add_ps(s3, _mm256_loadu_ps(p + i + 24));
    }
    float o[8];
    _mm256_storeu_ps(o, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    return o[0] + o[1] + o[2] + o[3] + o[4] + o[5] + o[6] + o[7];
}
/* Out of every cache level, so that a step's KV comes from memory as it
 * does in the engine, where the weights pass between two reads of it (this
 * machine's L3 could otherwise hold a batch's KV from one step to the next). */
static void flush_caches(const void *p, size_t n)
{
    for (size_t o = 0; o < n; o += 64)
        _mm_clflush((const char *)p + o);
    _mm_mfence();
}
#else
static void flush_caches(const void *p, size_t n)
{
    (void)p;
    (void)n;
}
static float read_sum(const float *p, size_t n)
{
    float a[32] = {0}, s = 0;
    for (size_t i = 0; i + 32 <= n; i += 32)
        for (int k = 0; k < 32; k++)
            a[k] += p[i + k];
    for (int k = 0; k < 32; k++)
        s += a[k];
    return s;
}
#endif

static void read_task(void *ctx, int task, int thread)
{
    (void)thread;
    struct read_job *j = ctx;
    j->sums[task] = read_sum(j->src + (size_t)task * j->chunk, j->chunk);
}

/* Bytes read per second by all threads at once, best of 5 over 512 MiB. */
static double read_bandwidth(struct tpool *pool)
{
    size_t n = (size_t)1 << 29;
    float *a = malloc(n);
    if (!a)
        return 0;
    memset(a, 1, n);   /* not 0: malloc + memset 0 may become calloc, and untouched pages read as one */
    struct read_job j = {a, n / sizeof(float) / 64, {0}};
    double best = 0;
    for (int r = 0; r < 5; r++) {
        double t0 = now();
        tpool_run(pool, read_task, &j, 64);
        double dt = now() - t0;
        if (n / dt > best)
            best = (double)n / dt;
    }
    free(a);
    return best;
}

static double copy_bandwidth(struct tpool *pool)
{
    size_t n = (size_t)1 << 29;   /* 512 MiB each way: far past the caches */
    char *a = malloc(n), *b = malloc(n);
    if (!a || !b) {
        free(a);
        free(b);
        return 0;
    }
    memset(a, 1, n);
    memset(b, 2, n);
    struct copy_job j = {b, a, n / 64};
    double best = 0;
    for (int r = 0; r < 5; r++) {
        double t0 = now();
        tpool_run(pool, copy_task, &j, 64);
        double dt = now() - t0;
        if (n / dt > best)
            best = (double)n / dt;
    }
    free(a);
    free(b);
    return best;
}

static int32_t *block_table(int seq, int blocks_per_seq)
{
    int32_t *b = malloc(sizeof *b * (size_t)blocks_per_seq);
    for (int i = 0; i < blocks_per_seq; i++)
        b[i] = seq * blocks_per_seq + i;
    return b;
}

/* The process's CPU seconds so far, all threads together. */
static double proc_cpu(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Decode tokens/s at batch `batch` from a context of `ctx` positions:
 * prefill each sequence, then `steps` steps of one token per sequence.
 * *cpu_s (NULL: not wanted) gets the process's CPU seconds per step: with
 * one thread, a time that other work on the machine bends less than the
 * wall clock. *best (NULL: not wanted) gets the tokens/s of the fastest
 * single step (on a shared machine the steadier figure; every step of a
 * batch does the same work but one position more of context). */
/* Page faults taken inside decode_rate's timed steps, all calls together
 * (a KV block touched for the first time there is zeroed by the kernel
 * inside the step unless the load touched the pool first). */
static long decode_faults;

static long minor_faults(void)
{
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? ru.ru_minflt : 0;
}

static double decode_rate(struct llm_model *m, float *logits, int batch, int ctx, int steps, int blocks_per_seq,
                          double *cpu_s, double *best, char *err, size_t errlen)
{
    const struct llm_info *in = llm_get_info(m);
    int V = in->cfg.vocab_size;
    int32_t *toks = malloc(sizeof *toks * (size_t)ctx);
    int32_t **tables = malloc(sizeof *tables * (size_t)batch);
    for (int i = 0; i < ctx; i++)
        toks[i] = (int32_t)((i * 7919 + 13) % V);
    for (int b = 0; b < batch; b++) {
        tables[b] = block_table(b, blocks_per_seq);
        struct llm_seq s = {toks, ctx, 0, tables[b], blocks_per_seq, LLM_LOGITS_LAST};
        if (llm_forward(m, &s, 1, logits, err, errlen) != 0)
            return -1;
    }
    struct llm_seq *seqs = calloc((size_t)batch, sizeof *seqs);
    int32_t *next = malloc(sizeof *next * (size_t)batch);
    long f0 = minor_faults();
    double t0 = now(), c0 = proc_cpu(), fastest = 1e30;
    for (int step = 0; step < steps; step++) {
        double s0 = now();
        for (int b = 0; b < batch; b++) {
            next[b] = (int32_t)((step * 31 + b * 17) % V);
            seqs[b] = (struct llm_seq){&next[b], 1, ctx + step, tables[b], blocks_per_seq, LLM_LOGITS_LAST};
        }
        if (llm_forward(m, seqs, batch, logits, err, errlen) != 0)
            return -1;
        if (now() - s0 < fastest)
            fastest = now() - s0;
    }
    double dt = now() - t0;
    decode_faults += minor_faults() - f0;
    if (cpu_s)
        *cpu_s = (proc_cpu() - c0) / steps;
    if (best)
        *best = batch / fastest;
    for (int b = 0; b < batch; b++)
        free(tables[b]);
    free(tables);
    free(seqs);
    free(next);
    free(toks);
    return (double)batch * steps / dt;
}

static int32_t argmax(const float *z, int n)
{
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (z[i] > z[best])
            best = i;
    return best;
}

#define AGREE_STEPS 64
#define AGREE_PROMPTS 32

/* 64 steps over n prompts as one batch: prefill, then each step feeds
 * feed[p][step] (NULL: its own argmax, recorded in got). Returns 0 or -1. */
static int greedy_steps(struct llm_model *m, int32_t *const *ids, const int *len, int n, int32_t (*feed)[AGREE_STEPS],
                        int32_t (*got)[AGREE_STEPS], int bps, char *err, size_t errlen)
{
    int V = llm_get_info(m)->cfg.vocab_size;
    float *logits = malloc(sizeof(float) * (size_t)V * (size_t)n);
    struct llm_seq seqs[AGREE_PROMPTS];
    int32_t *tables[AGREE_PROMPTS];
    for (int p = 0; p < n; p++) {
        tables[p] = block_table(p, bps);
        seqs[p] = (struct llm_seq){ids[p], len[p], 0, tables[p], bps, LLM_LOGITS_LAST};
    }
    int rc = 0;
    for (int step = 0; step < AGREE_STEPS && rc == 0; step++) {
        rc = llm_forward(m, seqs, n, logits, err, errlen);
        for (int p = 0; p < n && rc == 0; p++) {
            got[p][step] = argmax(logits + (size_t)p * V, V);
            const int32_t *next = feed ? &feed[p][step] : &got[p][step];
            seqs[p] = (struct llm_seq){next, 1, len[p] + step, tables[p], bps, LLM_LOGITS_LAST};
        }
    }
    for (int p = 0; p < n; p++)
        free(tables[p]);
    free(logits);
    return rc;
}

static int agree_main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: cpu_bench --agree MODEL_DIR GOLDEN_JSON MODEL_NAME [THREADS]\n");
        return 2;
    }
    json_object *root = json_object_from_file(argv[3]), *models = json_object_object_get(root, "models");
    json_object *recs = NULL;
    for (size_t k = 0; k < json_object_array_length(models); k++) {
        json_object *g = json_object_array_get_idx(models, k);
        if (!strcmp(json_object_get_string(json_object_object_get(g, "name")), argv[4]))
            recs = json_object_object_get(g, "prompts");
    }
    if (!recs) {
        fprintf(stderr, "cpu_bench: no model %s in %s\n", argv[4], argv[3]);
        return 1;
    }
    int n = (int)json_object_array_length(recs), len[AGREE_PROMPTS], longest = 0, total = 0;
    if (n > AGREE_PROMPTS)
        n = AGREE_PROMPTS;
    int32_t *ids[AGREE_PROMPTS];
    for (int p = 0; p < n; p++) {
        json_object *a = json_object_object_get(json_object_array_get_idx(recs, p), "ids");
        len[p] = (int)json_object_array_length(a);
        ids[p] = malloc(sizeof(int32_t) * (size_t)len[p]);
        for (int i = 0; i < len[p]; i++)
            ids[p][i] = json_object_get_int(json_object_array_get_idx(a, i));
        longest = len[p] > longest ? len[p] : longest;
        total += len[p];
    }
    int B = 16, bps = (longest + AGREE_STEPS + B - 1) / B;
    static int32_t want[AGREE_PROMPTS][AGREE_STEPS], got[AGREE_PROMPTS][AGREE_STEPS];
    int agree = 0;
    char err[512];
    for (int q8 = 0; q8 < 2; q8++) {
        struct gpt2_checkpoint *ck;
        struct llm_model *m;
        struct llm_load_opts o = {.device = LLM_DEVICE_CPU, .threads = argc > 5 ? atoi(argv[5]) : 0,
                                  .kv_block_tokens = B, .kv_blocks = bps * n, .max_step_tokens = total,
                                  .max_step_logits = n,
                                  .dtype = q8 ? LLM_DTYPE_Q8 : LLM_DTYPE_F32};
        if (gpt2_checkpoint_open(argv[2], &ck, err, sizeof err) != 0 || llm_load(ck, &o, &m, err, sizeof err) != 0) {
            fprintf(stderr, "cpu_bench: %s\n", err);
            return 1;
        }
        gpt2_checkpoint_close(ck);
        int rc = greedy_steps(m, ids, len, n, q8 ? want : NULL, q8 ? got : want, bps, err, sizeof err);
        llm_free(m);
        if (rc != 0) {
            fprintf(stderr, "cpu_bench: %s\n", err);
            return 1;
        }
    }
    for (int p = 0; p < n; p++) {
        for (int s = 0; s < AGREE_STEPS; s++)
            agree += got[p][s] == want[p][s];
        free(ids[p]);
    }
    printf("{\"agree\": %d, \"steps\": %d}\n", agree, n * AGREE_STEPS);
    json_object_put(root);
    return 0;
}

static int ppl_main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: cpu_bench --ppl MODEL_DIR PPL_GOLDEN_JSON [THREADS]\n");
        return 2;
    }
    json_object *root = json_object_from_file(argv[3]), *a = json_object_object_get(root, "ids");
    int W = json_object_get_int(json_object_object_get(root, "window"));
    int n = a ? (int)json_object_array_length(a) : 0, windows = W > 0 ? (n - 1) / W : 0;
    if (windows < 1) {
        fprintf(stderr, "cpu_bench: %s has no ids or window\n", argv[3]);
        return 1;
    }
    int32_t *ids = malloc(sizeof *ids * (size_t)n);
    for (int i = 0; i < n; i++)
        ids[i] = json_object_get_int(json_object_array_get_idx(a, i));
    /* each type as the loader gives it (dtype: an F16 file widened to F32, narrowed to BF16) */
    static const struct {
        const char *name;
        enum llm_dtype load;
    } types[] = {{"f32", LLM_DTYPE_F32}, {"f16", LLM_DTYPE_F16}, {"bf16", LLM_DTYPE_BF16}, {"q8", LLM_DTYPE_Q8}};
    double nll[4];
    char err[512];
    int B = 16, bps = (W + B - 1) / B;
    int32_t *table = block_table(0, bps);
    for (int t = 0; t < 4; t++) {
        struct gpt2_checkpoint *ck;
        struct llm_model *m;
        struct llm_load_opts o = {.device = LLM_DEVICE_CPU, .threads = argc > 4 ? atoi(argv[4]) : 0,
                                  .kv_block_tokens = B, .kv_blocks = bps, .max_step_tokens = W,
                                  .max_step_logits = W, .dtype = types[t].load};
        if (gpt2_checkpoint_open(argv[2], &ck, err, sizeof err) != 0) {
            fprintf(stderr, "cpu_bench: %s\n", err);
            return 1;
        }
        int rc = llm_load(ck, &o, &m, err, sizeof err);
        gpt2_checkpoint_close(ck);
        if (rc != 0) {
            fprintf(stderr, "cpu_bench: %s\n", err);
            return 1;
        }
        int V = llm_get_info(m)->cfg.vocab_size;
        float *z = malloc(sizeof *z * (size_t)V * (size_t)W);
        double total = 0;
        for (int w = 0; w < windows && rc == 0; w++) {
            struct llm_seq s = {ids + (size_t)w * W, W, 0, table, bps, LLM_LOGITS_ALL};
            rc = llm_forward(m, &s, 1, z, err, sizeof err);
            for (int i = 0; i < W && rc == 0; i++) {
                const float *row = z + (size_t)i * V;
                float mx = row[argmax(row, V)];
                double se = 0;
                for (int v = 0; v < V; v++)
                    se += exp((double)row[v] - mx);
                total += (double)mx + log(se) - row[ids[(size_t)w * W + i + 1]];
            }
        }
        free(z);
        llm_free(m);
        if (rc != 0) {
            fprintf(stderr, "cpu_bench: %s\n", err);
            return 1;
        }
        nll[t] = total / ((double)windows * W);
    }
    double golden = json_object_get_double(json_object_object_get(root, "nll"));
    printf("{\"windows\": %d, \"window\": %d, \"golden_nll\": %.6f, \"golden_ppl\": %.4f", windows, W, golden,
           exp(golden));
    for (int t = 0; t < 4; t++)
        printf(", \"%s_nll\": %.6f, \"%s_ppl\": %.4f", types[t].name, nll[t], types[t].name, exp(nll[t]));
    printf(", \"q8_rise_pct\": %.3f}\n", 100.0 * (exp(nll[3] - nll[0]) - 1.0));
    free(table);
    free(ids);
    json_object_put(root);
    return 0;
}

/* --kernels: one product over blocks of 16 outputs (64 for the LM head),
 * or of one 64-output panel when packed, as gpt2_cpu.c's matmul. */
struct kjob {
    float *y;
    const float *x;
    const void *xq, *w;
    enum ckpt_dtype wt;
    int T, I, O, block;
    bool packed;
    enum ops_tuning tuning;
};

static void k_task(void *ctx, int task, int thread)
{
    (void)thread;
    const struct kjob *j = ctx;
    int o0 = task * j->block, o1 = o0 + j->block < j->O ? o0 + j->block : j->O;
    if (j->xq)
        ops_matmul_q8x(j->y, j->xq, j->w, NULL, j->T, j->I, j->O, o0, o1, false);
    else if (j->packed)
        ops_matmul_packed(j->y, j->x, j->w, j->wt, NULL, j->T, j->I, j->O, o0, o1, false, j->tuning);
    else
        ops_matmul(j->y, j->x, j->w, j->wt, NULL, j->T, j->I, j->O, o0, o1, false);
}

/* The input prepared once per product, as gpt2_cpu.c's matmul (ops_q8_prepare_x). */
struct kq_job {
    char *dst;
    const float *x;
    int T, I;
};

static void kq_task(void *ctx, int task, int thread)
{
    (void)thread;
    const struct kq_job *j = ctx;
    ops_q8_prepare_x(j->dst, j->x, j->T, j->I, task);
}

/* One weight row of I values into d: Q8_0 blocks, or F32/F16/BF16 values. */
static void put_row(char *d, const float *row, int I, enum ckpt_dtype wt, bool q8)
{
    if (q8)
        ops_q8_quantize_row(d, row, I);
    else
        for (int i = 0; i < I; i++) {
            uint16_t h = wt == CKPT_F16 ? ckpt_f32_to_f16(row[i]) : ckpt_f32_to_bf16(row[i]);
            if (wt == CKPT_F32)
                memcpy(d + (size_t)i * 4, &row[i], 4);
            else
                memcpy(d + (size_t)i * 2, &h, 2);
        }
}

/* `copies` O x I matrices of Q8_0 rows at w laid out as the int8 products
 * read them (ops_q8_pack_rows, as the engine does at load), each copy at a
 * 64-byte boundary: a new buffer (the caller frees it), w freed; *mb the
 * bytes of one copy. NULL when out of memory. */
static char *q8_lay_out(char *w, int I, int O, int copies, size_t *mb)
{
    size_t gb = (ops_q8_mat_bytes(I, O) + 63) / 64 * 64;
    char *g = aligned_alloc(64, gb * (size_t)copies);
    if (g)
        for (int c = 0; c < copies; c++)
            ops_q8_pack_rows(g + (size_t)c * gb, w + (size_t)c * ops_q8_row_bytes(I) * (size_t)O, I, O, 0, O);
    free(w);
    *mb = gb;
    return g;
}

/* Seconds per product of `copies` distinct O x I matrices (best of 3 sweeps), q8 including its input's quantization;
 * packed: the matrices repacked by ops_pack first (as the engine does at load). *one: the fastest of 60 calls on
 * the first copy alone (cache-warm where it fits; on a shared machine a single short call often runs undisturbed,
 * so this is the steadier figure of the two). */
static double time_kernel(struct tpool *pool, enum ckpt_dtype wt, bool q8, bool packed, int T, int I, int O, int copies,
                          double *one)
{
    size_t rb = q8 ? ops_q8_row_bytes(I) : (size_t)I * ckpt_dtype_size(wt), mb = rb * (size_t)O;
    char *w = malloc(mb * (size_t)copies), *xq = aligned_alloc(64, (ops_q8_x_bytes(T, I) + 63) / 64 * 64);
    float *x = malloc(sizeof(float) * (size_t)T * I), *y = malloc(sizeof(float) * (size_t)T * O);
    float *row = malloc(sizeof(float) * (size_t)I);
    if (!w || !xq || !x || !y || !row)
        return -1;
    uint32_t r = 12345;
    for (size_t k = 0; k < (size_t)O * copies; k++) {
        for (int i = 0; i < I; i++) {
            r = r * 1664525u + 1013904223u;
            row[i] = ((float)(r >> 8) / 16777216.0f - 0.5f) * 0.2f;
        }
        put_row(w + k * rb, row, I, wt, q8);
    }
    for (size_t i = 0; i < (size_t)T * I; i++)
        x[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
    int block = O > 8192 || (q8 && T > 1) ? 64 : 16;   /* as gpt2_cpu.c's matmul */
    if (q8 && T > 1 && O / 128 >= 4 * tpool_threads(pool))
        block = O / 512 >= 4 * tpool_threads(pool) ? 512 : 128;
    if (q8 && !(w = q8_lay_out(w, I, O, copies, &mb)))
        return -1;
    if (packed) {
        size_t pb = ops_pack_bytes(wt, I, O);
        char *pw = malloc(pb * (size_t)copies);
        if (!pw)
            return -1;
        for (int c = 0; c < copies; c++)
            ops_pack(pw + (size_t)c * pb, w + (size_t)c * mb, wt, I, O, 0, O);
        free(w);
        w = pw;
        mb = pb;
        /* 4 panels a task at 2+ rows where that leaves 4 tasks a thread, as gpt2_cpu.c's matmul */
        block = T > 1 && O / (4 * OPS_PANEL) >= 4 * tpool_threads(pool) ? 4 * OPS_PANEL : OPS_PANEL;
    }
    double (*clk)(void) = tpool_threads(pool) == 1 ? cpu_now : now;
    double best = 1e30;
    for (int rep = 0; rep < 4; rep++) {
        double t0 = clk();
        for (int c = 0; c < copies; c++) {
            if (q8) {
                struct kq_job qj = {xq, x, T, I};
                tpool_run(pool, kq_task, &qj, ops_q8_x_parts(T, I));
            }
            struct kjob j = {y, x, q8 ? xq : NULL, w + (size_t)c * mb, wt, T, I, O, block, packed,
                             tuning == LLM_TUNING_THROUGHPUT ? OPS_THROUGHPUT : OPS_LATENCY};
            tpool_run(pool, k_task, &j, (O + block - 1) / block);
        }
        double dt = (clk() - t0) / copies;
        if (rep > 0 && dt < best)   /* the first sweep warms up */
            best = dt;
    }
    *one = 1e30;
    for (int rep = 0; rep < 60; rep++) {
        double t0 = clk();
        if (q8) {
            struct kq_job qj = {xq, x, T, I};
            tpool_run(pool, kq_task, &qj, ops_q8_x_parts(T, I));
        }
        struct kjob j = {y, x, q8 ? xq : NULL, w, wt, T, I, O, block, packed,
                             tuning == LLM_TUNING_THROUGHPUT ? OPS_THROUGHPUT : OPS_LATENCY};
        tpool_run(pool, k_task, &j, (O + block - 1) / block);
        if (clk() - t0 < *one)
            *one = clk() - t0;
    }
    free(w);
    free(xq);
    free(x);
    free(y);
    free(row);
    return best;
}

/* The weight layout a product reads, as --kernels prints it: int8 is
 * "grouped" where this level packs it so (ops_q8_grouped), else "rows". */
static const char *layout_name(bool packed, bool q8, int I)
{
    return packed ? "packed" : q8 && ops_q8_grouped(I) ? "grouped" : "rows";
}

static int kernels_main(int argc, char **argv)
{
    int threads = argc > 2 ? atoi(argv[2]) : 0;
    struct tpool *pool;
    ops_init(OPS_BEST);
    if (tpool_new(threads > 0 ? threads : tpool_online_cpus(), &pool) != 0)
        return 1;
    printf("{\"kernels\": \"%s\", \"tuning\": \"%s\", \"threads\": %d, \"clock\": \"%s\", \"read_bytes_s\": %.0f}\n",
           ops_simd_name(), tuning == LLM_TUNING_THROUGHPUT ? "throughput" : "latency", tpool_threads(pool), tpool_threads(pool) == 1 ? "thread CPU time" : "wall", read_bandwidth(pool));
    static const struct {
        const char *name;
        int O, I, copies;
    } shapes[] = {{"qkv", 2304, 768, 12}, {"proj", 768, 768, 12}, {"fc", 3072, 768, 12},
                  {"mproj", 768, 3072, 12}, {"lm_head", 50257, 768, 1}};
    /* Each of F32/F16/BF16 in the output-major layout and, where the level
     * has it, packed (what the engine then runs), in the same run. */
    static const struct {
        const char *name;
        enum ckpt_dtype wt;
        bool q8, packed;
    } types[] = {{"F32", CKPT_F32, false, false}, {"F32", CKPT_F32, false, true},
                 {"F16", CKPT_F16, false, false}, {"F16", CKPT_F16, false, true},
                 {"BF16", CKPT_BF16, false, false}, {"BF16", CKPT_BF16, false, true},
                 {"Q8_0", CKPT_F32, true, false}};
    static const int rows[] = {1, 8, 32, 64};
    const char *only_type = argc > 3 ? argv[3] : NULL;
    int only_rows = argc > 4 ? atoi(argv[4]) : 0;
    int widest = 0;   /* a step's layout is its widest product's (grouping stops above a width) */
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++)
        widest = shapes[k].I > widest ? shapes[k].I : widest;
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        if (types[t].packed && !ops_packed())
            continue;
        double step[sizeof rows / sizeof rows[0]] = {0}, step_one[sizeof rows / sizeof rows[0]] = {0};
        for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++)
            for (size_t m = 0; m < sizeof rows / sizeof rows[0]; m++) {
                if ((only_type && strcmp(only_type, types[t].name)) || (only_rows && only_rows != rows[m]))
                    continue;
                int O = shapes[k].O, I = shapes[k].I;
                double one = 0, s = time_kernel(pool, types[t].wt, types[t].q8, types[t].packed, rows[m], I, O,
                                            shapes[k].copies, &one);
                size_t bytes = types[t].q8 ? ops_q8_row_bytes(I) * (size_t)O : (size_t)O * I * ckpt_dtype_size(types[t].wt);
                printf("{\"dtype\": \"%s\", \"layout\": \"%s\", \"kernel\": \"%s\", \"rows\": %d, \"O\": %d, "
                       "\"I\": %d, \"bytes\": %zu, \"flops\": %.0f, \"seconds\": %.3e, \"one_call_seconds\": %.3e}\n",
                       types[t].name, layout_name(types[t].packed, types[t].q8, I), shapes[k].name, rows[m], O, I, bytes,
                       2.0 * rows[m] * O * I, s, one);
                fflush(stdout);
                int per_step = shapes[k].copies == 12 ? 12 : 1;   /* the layers' products, the LM head once */
                step[m] += per_step * s;
                step_one[m] += per_step * one;
            }
        /* a decode step's products at that many rows: 12 layers' qkv, proj,
         * fc and mproj and the LM head, each at its streamed figure and at its
         * fastest single call */
        for (size_t m = 0; m < sizeof rows / sizeof rows[0]; m++)
            if (step[m] > 0)
                printf("{\"dtype\": \"%s\", \"layout\": \"%s\", \"rows\": %d, \"step_products_seconds\": %.3e, "
                       "\"step_products_one_call_seconds\": %.3e}\n",
                       types[t].name, layout_name(types[t].packed, types[t].q8, widest), rows[m], step[m],
                       step_one[m]);
    }
    tpool_free(pool);
    return 0;
}

static int matvec_main(void)
{
    ops_init(OPS_BEST);
    static const struct {
        const char *name;
        int O, I, copies, per_step;
    } shapes[] = {{"qkv", 2304, 768, 12, 12}, {"proj", 768, 768, 12, 12}, {"fc", 3072, 768, 12, 12},
                  {"mproj", 768, 3072, 12, 12}, {"lm_head", 50257, 768, 1, 1}};
    static const struct {
        const char *name;
        enum ckpt_dtype wt;
        bool q8;
    } types[] = {{"F32", CKPT_F32, false}, {"F16", CKPT_F16, false}, {"BF16", CKPT_BF16, false}, {"Q8_0", CKPT_F32, true}};
    enum { NT = sizeof types / sizeof types[0] };
    double step[NT] = {0};
    printf("{\"kernels\": \"%s\", \"threads\": 1, \"clock\": \"thread CPU time\"}\n", ops_simd_name());
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        int O = shapes[k].O, I = shapes[k].I, copies = shapes[k].copies;
        float *x = malloc(sizeof(float) * (size_t)I), *y = malloc(sizeof(float) * (size_t)O);
        char *xq = malloc(ops_q8_row_bytes(I)), *w[NT];
        size_t mb[NT];
        for (int t = 0; t < NT; t++) {
            mb[t] = types[t].q8 ? ops_q8_row_bytes(I) * (size_t)O : (size_t)O * I * ckpt_dtype_size(types[t].wt);
            w[t] = malloc(mb[t] * (size_t)copies);
            if (!w[t])
                return 1;
        }
        if (!x || !y || !xq)
            return 1;
        uint32_t r = 12345;
        for (size_t row = 0; row < (size_t)O * copies; row++) {
            for (int i = 0; i < I; i++) {
                r = r * 1664525u + 1013904223u;
                x[i] = ((float)(r >> 8) / 16777216.0f - 0.5f) * 0.2f;
            }
            for (int t = 0; t < NT; t++)
                put_row(w[t] + row * (mb[t] / (size_t)O), x, I, types[t].wt, types[t].q8);
        }
        for (int t = 0; t < NT; t++)
            if (types[t].q8 && !(w[t] = q8_lay_out(w[t], I, O, copies, &mb[t])))
                return 1;
        for (int i = 0; i < I; i++)
            x[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
        double best[NT];
        for (int t = 0; t < NT; t++)
            best[t] = 1e30;
        for (int rep = 0; rep < 6; rep++)
            for (int t = 0; t < NT; t++) {   /* interleaved, so a slow moment hits every type */
                double t0 = cpu_now();
                for (int c = 0; c < copies; c++) {
                    if (types[t].q8) {
                        ops_q8_quantize_row(xq, x, I);
                        ops_matmul_q8(y, xq, w[t] + (size_t)c * mb[t], NULL, 1, I, O, 0, O, false);
                    } else
                        ops_matmul(y, x, w[t] + (size_t)c * mb[t], types[t].wt, NULL, 1, I, O, 0, O, false);
                }
                double dt = (cpu_now() - t0) / copies;
                if (rep > 0 && dt < best[t])
                    best[t] = dt;
            }
        for (int t = 0; t < NT; t++) {
            printf("{\"dtype\": \"%s\", \"kernel\": \"%s\", \"O\": %d, \"I\": %d, \"bytes\": %zu, \"seconds\": %.3e, "
                   "\"bytes_s\": %.0f}\n",
                   types[t].name, shapes[k].name, O, I, mb[t], best[t], (double)mb[t] / best[t]);
            step[t] += best[t] * shapes[k].per_step;
            free(w[t]);
        }
        free(x);
        free(y);
        free(xq);
    }
    printf("{\"step\": {");
    for (int t = 0; t < NT; t++)
        printf("%s\"%s\": %.3e", t ? ", " : "", types[t].name, step[t]);
    printf("}, \"f16_over_q8\": %.3f}\n", step[1] / step[3]);
    return 0;
}

/* --packed: the 124M shape's products over packed weights at ROWS rows of
 * x (default 1) on one thread, by its CPU time (as --matvec): F16 at the
 * AVX-512 BF16 level (the FMA kernel) and at the best level tuned for
 * throughput (AMX: the tiles), BF16 at the best level, F32 as F16 (its
 * tiles with LLMCGI_F32_TILES=1, set here), interleaved; best of 5 sweeps, one JSON
 * line per product and one for a whole step's products. */
static int packed_main(int argc, char **argv)
{
    int T = argc > 2 ? atoi(argv[2]) : 1;
    if (T < 1 || T > 256)
        return 2;
    setenv("LLMCGI_F32_TILES", "1", 1);   /* F32 on the tiles too when tuned for throughput (ops_init) */
    enum ops_level best = ops_init(OPS_BEST);
    static const struct {
        const char *name;
        int O, I, copies, per_step;
    } shapes[] = {{"qkv", 2304, 768, 12, 12}, {"proj", 768, 768, 12, 12}, {"fc", 3072, 768, 12, 12},
                  {"mproj", 768, 3072, 12, 12}, {"lm_head", 50257, 768, 1, 1}};
    struct {
        const char *name;
        enum ckpt_dtype wt;
        enum ops_level level;
        enum ops_tuning tuning;
    } types[] = {{"F16 fma", CKPT_F16, OPS_AVX512_BF16, OPS_LATENCY},
                 {"F16", CKPT_F16, best, OPS_THROUGHPUT},
                 {"BF16", CKPT_BF16, best, OPS_THROUGHPUT},
                 {"F32 fma", CKPT_F32, OPS_AVX512_BF16, OPS_LATENCY},
                 {"F32", CKPT_F32, best, OPS_THROUGHPUT}};
    enum { NT = sizeof types / sizeof types[0] };
    double step[NT] = {0};
    ops_init(OPS_BEST);
    if (!ops_packed())
        return 1;
    printf("{\"kernels\": \"%s\", \"threads\": 1, \"rows\": %d, \"clock\": \"thread CPU time\"}\n", ops_simd_name(), T);
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        int O = shapes[k].O, I = shapes[k].I, copies = shapes[k].copies;
        float *x = malloc(sizeof(float) * (size_t)T * I), *y = malloc(sizeof(float) * (size_t)T * O);
        float *row = malloc(sizeof(float) * (size_t)I);
        char *w = malloc((size_t)O * I * 4), *wp[NT];
        size_t pb[NT];
        if (!x || !y || !row || !w)
            return 1;
        for (int t = 0; t < NT; t++) {
            pb[t] = ops_pack_bytes(types[t].wt, I, O);
            wp[t] = malloc(pb[t] * (size_t)copies);
            if (!wp[t])
                return 1;
        }
        uint32_t r = 12345;
        for (int c = 0; c < copies; c++)
            for (int t = 0; t < NT; t++) {
                for (int o = 0; o < O; o++) {
                    for (int i = 0; i < I; i++) {
                        r = r * 1664525u + 1013904223u;
                        row[i] = ((float)(r >> 8) / 16777216.0f - 0.5f) * 0.2f;
                    }
                    put_row(w + (size_t)o * I * 2, row, I, types[t].wt, false);
                }
                ops_pack(wp[t] + (size_t)c * pb[t], w, types[t].wt, I, O, 0, O);
            }
        for (int i = 0; i < T * I; i++)
            x[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
        double bt[NT];
        for (int t = 0; t < NT; t++)
            bt[t] = 1e30;
        for (int rep = 0; rep < 6; rep++)
            for (int t = 0; t < NT; t++) {   /* interleaved, so a slow moment hits every type */
                ops_init(types[t].level);
                double t0 = cpu_now();
                for (int c = 0; c < copies; c++)
                    ops_matmul_packed(y, x, wp[t] + (size_t)c * pb[t], types[t].wt, NULL, T, I, O, 0, O, false,
                                      types[t].tuning);
                double dt = (cpu_now() - t0) / copies;
                if (rep > 0 && dt < bt[t])
                    bt[t] = dt;
            }
        for (int t = 0; t < NT; t++) {
            printf("{\"dtype\": \"%s\", \"kernel\": \"%s\", \"O\": %d, \"I\": %d, \"bytes\": %zu, \"seconds\": %.3e, "
                   "\"bytes_s\": %.0f}\n",
                   types[t].name, shapes[k].name, O, I, pb[t], bt[t], (double)pb[t] / bt[t]);
            step[t] += bt[t] * shapes[k].per_step;
            free(wp[t]);
        }
        free(x);
        free(y);
        free(row);
        free(w);
    }
    printf("{\"rows\": %d, \"step\": {", T);
    for (int t = 0; t < NT; t++)
        printf("%s\"%s\": %.3e", t ? ", " : "", types[t].name, step[t]);
    printf("}, \"f16_tiles_over_fma\": %.3f, \"f32_tiles_over_fma\": %.3f}\n", step[1] / step[0], step[4] / step[3]);
    ops_init(OPS_BEST);
    return 0;
}

/* --attn */
struct attn_bench {
    const char *kv;
    const float *q;
    float *out, *scores;
    int L, H, hd, B, nb, n, layer, mode, half, nh, groups;
    size_t es;
};

static void attn_bench_task(void *ctx, int task, int thread)
{
    const struct attn_bench *a = ctx;
    int nh = a->mode == 2 ? a->nh : 1, groups = a->mode == 2 ? a->groups : a->H;
    int si = task / groups, h = task % groups * nh;
    nh = h + nh < a->H ? nh : a->H - h;
    size_t block_elems = (size_t)a->L * 2 * a->H * a->B * a->hd;
    const void *kb[64], *vb[64];
    for (int b = 0; b < a->nb; b++) {
        size_t blk = (size_t)si * a->nb + (size_t)b;
        kb[b] = a->kv + (blk * block_elems + ((size_t)(a->layer * 2) * a->H + h) * a->B * a->hd) * a->es;
        vb[b] = a->kv + (blk * block_elems + ((size_t)(a->layer * 2 + 1) * a->H + h) * a->B * a->hd) * a->es;
    }
    const float *q = a->q + ((size_t)si * a->H + h) * a->hd;
    float *out = a->out + ((size_t)si * a->H + h) * a->hd, *s = a->scores + (size_t)thread * a->nb * a->B;
    if (a->mode) {
        ops_attend1(out, s, q, kb, vb, a->n, a->B, a->hd, nh, (size_t)a->B * a->hd, 0.125f, a->half);
        return;
    }
    for (int b = 0; b < a->nb; b++) {
        int rows = a->n - b * a->B < a->B ? a->n - b * a->B : a->B;
        if (a->half)
            ops_scores_f16(s + b * a->B, q, kb[b], (size_t)a->hd, rows, a->hd, 0.125f);
        else
            ops_scores(s + b * a->B, q, kb[b], (size_t)a->hd, rows, a->hd, 0.125f);
    }
    ops_softmax(s, a->n);
    memset(out, 0, (size_t)a->hd * sizeof(float));
    for (int b = 0; b < a->nb; b++) {
        int rows = a->n - b * a->B < a->B ? a->n - b * a->B : a->B;
        if (a->half)
            ops_mix_f16(out, (size_t)a->hd, s + b * a->B, (size_t)a->n, 1, vb[b], (size_t)a->hd, rows, a->hd);
        else
            ops_mix(out, (size_t)a->hd, s + b * a->B, (size_t)a->n, 1, vb[b], (size_t)a->hd, rows, a->hd);
    }
}

static int attn_main(int argc, char **argv)
{
    int threads = argc > 2 ? atoi(argv[2]) : 0, batch = argc > 3 ? atoi(argv[3]) : 32, ctx = argc > 4 ? atoi(argv[4]) : 128;
    int half = !(argc > 5 && !strcmp(argv[5], "f32"));
    struct tpool *pool;
    ops_init(OPS_BEST);
    if (batch < 1 || ctx < 1 || ctx > 1024 || tpool_new(threads > 0 ? threads : tpool_online_cpus(), &pool) != 0)
        return 2;
    struct attn_bench a = {0};
    a.L = 12, a.H = 12, a.hd = 64, a.B = 16, a.n = ctx, a.nb = (ctx + 15) / 16, a.half = half;
    a.es = half ? sizeof(uint16_t) : sizeof(float);
    /* the engine's grouping (gpt2_cpu.c attention(): 8 tasks a thread at least) */
    a.groups = (8 * tpool_threads(pool) + batch - 1) / batch;
    a.groups = a.groups > a.H ? a.H : a.groups;
    a.nh = (a.H + a.groups - 1) / a.groups;
    a.groups = (a.H + a.nh - 1) / a.nh;
    size_t kv_bytes = (size_t)batch * a.nb * a.L * 2 * a.H * a.B * a.hd * a.es;
    size_t huge = (size_t)2 << 20, round = (kv_bytes + huge - 1) / huge * huge;
    char *kv = NULL;
    if (posix_memalign((void **)&kv, huge, round) != 0)   /* as the engine's pool (gpt2_cpu.c alloc64) */
        return 1;
#ifdef MADV_HUGEPAGE
    (void)madvise(kv, round, MADV_HUGEPAGE);
#endif
    float *q = malloc(sizeof(float) * (size_t)batch * a.H * a.hd), *out = malloc(sizeof(float) * (size_t)batch * a.H * a.hd);
    float *sc = malloc(sizeof(float) * (size_t)tpool_threads(pool) * a.nb * a.B);
    if (!kv || !q || !out || !sc)
        return 1;
    for (size_t i = 0; i < kv_bytes / a.es; i++) {
        float v = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
        if (half)
            ((uint16_t *)kv)[i] = ckpt_f32_to_f16(v);
        else
            ((float *)kv)[i] = v;
    }
    for (int i = 0; i < batch * a.H * a.hd; i++)
        q[i] = (float)(i % 17) / 17.0f - 0.5f;
    a.kv = kv, a.q = q, a.out = out, a.scores = sc;
    /* 30 rounds of the three, back to back; besides each one's fastest step,
     * the median over rounds of heads / attend1 in the same round, which the
     * other tenants' swings in bandwidth move less than the separate mins */
    enum { ROUNDS = 30 };
    double best[3] = {1e30, 1e30, 1e30}, ratio[ROUNDS], last1 = 1;
    for (int r = 0; r < 3 * ROUNDS; r++) {
        a.mode = r % 3;
        flush_caches(kv, kv_bytes);
        double t0 = now();
        for (a.layer = 0; a.layer < a.L; a.layer++)
            tpool_run(pool, attn_bench_task, &a, batch * (a.mode == 2 ? a.groups : a.H));
        double dt = now() - t0;
        if (dt < best[a.mode])
            best[a.mode] = dt;
        if (a.mode == 1)
            last1 = dt;
        if (a.mode == 2)
            ratio[r / 3] = dt / last1;
    }
    for (int i = 1; i < ROUNDS; i++)   /* insertion sort: 30 values */
        for (int k = i; k > 0 && ratio[k] < ratio[k - 1]; k--) {
            double t = ratio[k];
            ratio[k] = ratio[k - 1];
            ratio[k - 1] = t;
        }
    /* the bytes a step reads: every layer's K and V of ctx positions per sequence */
    double bytes = (double)batch * a.L * 2 * a.H * ctx * a.hd * a.es, bw = read_bandwidth(pool);
    printf("{\"attn\": \"%s\", \"threads\": %d, \"kv\": \"%s\", \"batch\": %d, \"ctx\": %d, \"step_kv_bytes\": %.0f, "
           "\"read_bytes_s\": %.0f, \"predicted_ms\": %.3f, \"calls_ms\": %.3f, \"attend1_ms\": %.3f, "
           "\"heads_ms\": %.3f, \"heads_a_task\": %d, \"calls_vs_predicted\": %.2f, \"attend1_vs_predicted\": %.2f, "
           "\"heads_vs_predicted\": %.2f, \"heads_vs_attend1_median\": %.2f}\n",
           ops_simd_name(), tpool_threads(pool), half ? "F16" : "F32", batch, ctx, bytes, bw, bytes / bw * 1e3,
           best[0] * 1e3, best[1] * 1e3, best[2] * 1e3, a.nh, best[0] / (bytes / bw), best[1] / (bytes / bw),
           best[2] / (bytes / bw), ratio[ROUNDS / 2]);
    free(kv);
    free(q);
    free(out);
    free(sc);
    tpool_free(pool);
    return 0;
}

/* --fma-peak */
#define FMA_ROUNDS (1L << 27)
#if defined(__x86_64__)
#define FMA1(r) "vfmadd231ps %%zmm30, %%zmm31, %%zmm" #r "\n\t"
__attribute__((target("avx512f"))) static void fma_peak_task(void *ctx, int task, int thread)
{
    (void)ctx, (void)task, (void)thread;
    long n = FMA_ROUNDS;
    __asm__ volatile("vxorps %%xmm30, %%xmm30, %%xmm30\n\t"
                     "vxorps %%xmm31, %%xmm31, %%xmm31\n\t"
                     "1:\n\t" FMA1(0) FMA1(1) FMA1(2) FMA1(3) FMA1(4) FMA1(5) FMA1(6) FMA1(7) FMA1(8) FMA1(9)
                         FMA1(10) FMA1(11) FMA1(12) FMA1(13) FMA1(14) FMA1(15) FMA1(16) FMA1(17) FMA1(18)
                             FMA1(19) FMA1(20) FMA1(21) FMA1(22) FMA1(23) "dec %0\n\t"
                                                                          "jnz 1b"
                     : "+r"(n)
                     :
                     : "cc", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
                       "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18", "xmm19", "xmm20",
                       "xmm21", "xmm22", "xmm23", "xmm30", "xmm31");
}

/* The AVX2 level's peak (no AVX-512): 12 independent ymm chains, 8 lanes each. */
#define FMA2(r) "vfmadd231ps %%ymm14, %%ymm15, %%ymm" #r "\n\t"
__attribute__((target("avx2,fma"))) static void fma_peak_task_avx2(void *ctx, int task, int thread)
{
    (void)ctx, (void)task, (void)thread;
    long n = FMA_ROUNDS;
    __asm__ volatile("vxorps %%xmm14, %%xmm14, %%xmm14\n\t"
                     "vxorps %%xmm15, %%xmm15, %%xmm15\n\t"
                     "1:\n\t" FMA2(0) FMA2(1) FMA2(2) FMA2(3) FMA2(4) FMA2(5) FMA2(6) FMA2(7) FMA2(8) FMA2(9)
                         FMA2(10) FMA2(11) FMA2(0) FMA2(1) FMA2(2) FMA2(3) FMA2(4) FMA2(5) FMA2(6) FMA2(7)
                             FMA2(8) FMA2(9) FMA2(10) FMA2(11) "dec %0\n\t"
                                                               "jnz 1b"
                     : "+r"(n)
                     :
                     : "cc", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
                       "xmm11", "xmm14", "xmm15");
}
#endif

static int fma_peak_main(int argc, char **argv)
{
#if defined(__x86_64__)
    /* 24 FMAs a round either way: 16 lanes with AVX-512F, else 8 with AVX2 */
    bool wide = __builtin_cpu_supports("avx512f");
    if (!wide && !(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))) {
        fprintf(stderr, "cpu_bench: --fma-peak needs AVX-512F or AVX2 + FMA\n");
        return 1;
    }
    int threads = argc > 2 ? atoi(argv[2]) : 0;
    if (threads <= 0)
        threads = tpool_online_cpus();
    struct tpool *pool = NULL;
    if (tpool_new(threads, &pool) != 0) {
        fprintf(stderr, "cpu_bench: cannot start the thread pool\n");
        return 1;
    }
    int n = tpool_threads(pool);
    double best = 0.0;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = now();
        tpool_run(pool, wide ? fma_peak_task : fma_peak_task_avx2, NULL, n);
        double dt = now() - t0, gflops = dt > 0.0 ? (double)n * FMA_ROUNDS * 24 * (wide ? 16 : 8) * 2 / dt / 1e9 : 0.0;
        if (gflops > best)
            best = gflops;
    }
    tpool_free(pool);
    printf("{\"fma_peak_gflops\": %.1f, \"threads\": %d, \"per_thread_gflops\": %.1f, \"vector\": \"%s\"}\n", best, n,
           best / n, wide ? "zmm" : "ymm");
    return 0;
#else
    (void)argc, (void)argv;
    fprintf(stderr, "cpu_bench: --fma-peak is x86-64 only\n");
    return 1;
#endif
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)   /* --tuning WORD, anywhere: taken out of argv */
        if (!strcmp(argv[i], "--tuning")) {
            if (i + 1 >= argc || llm_tuning_parse(argv[i + 1], &tuning) != 0) {
                fprintf(stderr, "cpu_bench: --tuning must be auto, latency or throughput\n");
                return 2;
            }
            memmove(argv + i, argv + i + 2, sizeof *argv * (size_t)(argc - i - 1));   /* with argv[argc] */
            argc -= 2;
            i--;
        }
    if (argc > 1 && !strcmp(argv[1], "--attn"))
        return attn_main(argc, argv);
    if (argc > 1 && !strcmp(argv[1], "--fma-peak"))
        return fma_peak_main(argc, argv);
    if (argc > 1 && !strcmp(argv[1], "--kernels"))
        return kernels_main(argc, argv);
    if (argc > 1 && !strcmp(argv[1], "--agree"))
        return agree_main(argc, argv);
    if (argc > 1 && !strcmp(argv[1], "--ppl"))
        return ppl_main(argc, argv);
    if (argc > 1 && !strcmp(argv[1], "--matvec"))
        return matvec_main();
    if (argc > 1 && !strcmp(argv[1], "--packed"))
        return packed_main(argc, argv);
    if (argc < 2) {
        fprintf(stderr, "usage: cpu_bench MODEL_DIR [THREADS] [PROMPT_TOKENS] [BATCH] [STEPS] [DECODE_CONTEXT] "
                        "[auto|f32|q8] [auto|f32|f16 (kv_dtype)] [--tuning auto|latency|throughput]\n");
        return 2;
    }
    int threads = argc > 2 ? atoi(argv[2]) : 0;
    int prompt = argc > 3 ? atoi(argv[3]) : 512;
    int batches[8], n_batches = 0, batch = 0;
    for (const char *b = argc > 4 ? argv[4] : "8"; *b && n_batches < 8;) {
        char *end;
        long v = strtol(b, &end, 10);
        if (end == b || v < 1 || v > 4096) {
            fprintf(stderr, "cpu_bench: BATCH must be sizes from 1 to 4096, comma-separated\n");
            return 2;
        }
        batches[n_batches++] = (int)v;
        batch = (int)v > batch ? (int)v : batch;
        b = *end == ',' ? end + 1 : end;
    }
    int steps = argc > 5 ? atoi(argv[5]) : 32;
    int ctx = argc > 6 ? atoi(argv[6]) : 128;   /* decode context: positions before the first step */
    if (ctx < 1 || steps < 1 || batch < 1 || prompt < 1) {
        fprintf(stderr, "cpu_bench: PROMPT_TOKENS, BATCH, STEPS and DECODE_CONTEXT must be at least 1\n");
        return 2;
    }
    enum llm_kv_dtype kv_dtype = LLM_KV_AUTO;
    if (argc > 8 && llm_kv_dtype_parse(argv[8], &kv_dtype) != 0) {
        fprintf(stderr, "cpu_bench: the kv_dtype must be auto, f32 or f16\n");
        return 2;
    }
    char err[512];
    struct gpt2_checkpoint *ck;
    double t0 = now();
    if (gpt2_checkpoint_open(argv[1], &ck, err, sizeof err) != 0) {
        fprintf(stderr, "cpu_bench: %s\n", err);
        return 1;
    }
    int B = 16, blocks_per_seq = (prompt > ctx + steps ? prompt : ctx + steps) / B + 1;
    struct llm_load_opts o = {.device = LLM_DEVICE_CPU, .threads = threads, .kv_block_tokens = B,
                              .kv_blocks = blocks_per_seq * batch, .max_step_tokens = (prompt > ctx ? prompt : ctx) + batch,
                              .max_step_logits = batch,
                              .dtype = argc > 7 && !strcmp(argv[7], "f32") ? LLM_DTYPE_F32
                                       : argc > 7 && !strcmp(argv[7], "q8") ? LLM_DTYPE_Q8
                                                                             : LLM_DTYPE_AUTO,
                              .kv_dtype = kv_dtype, .tuning = tuning, .max_seqs = batch};
    struct llm_model *m;
    if (llm_load(ck, &o, &m, err, sizeof err) != 0) {
        fprintf(stderr, "cpu_bench: %s\n", err);
        return 1;
    }
    gpt2_checkpoint_close(ck);
    double load_s = now() - t0;
    const struct llm_info *in = llm_get_info(m);
    float *logits = malloc(sizeof(float) * (size_t)in->cfg.vocab_size * (size_t)batch);
    if (!logits)
        return 1;
    /* touched here, or the first batch-32 steps take its 1,600 page faults */
    memset(logits, 1, sizeof(float) * (size_t)in->cfg.vocab_size * (size_t)batch);

    /* prefill: best of 3 */
    int32_t *toks = malloc(sizeof *toks * (size_t)prompt);
    for (int i = 0; i < prompt; i++)
        toks[i] = (int32_t)((i * 104729 + 7) % in->cfg.vocab_size);
    int32_t *table = block_table(0, blocks_per_seq);
    double best = 1e30;
    for (int r = 0; r < 3; r++) {
        struct llm_seq s = {toks, prompt, 0, table, blocks_per_seq, LLM_LOGITS_LAST};
        double s0 = now();
        if (llm_forward(m, &s, 1, logits, err, sizeof err) != 0) {
            fprintf(stderr, "cpu_bench: %s\n", err);
            return 1;
        }
        if (now() - s0 < best)
            best = now() - s0;
    }
    double prefill = prompt / best;
    double best1, bests[8], d1_cpu = 0;
    double d1 = decode_rate(m, logits, 1, ctx, steps, blocks_per_seq, &d1_cpu, &best1, err, sizeof err);
    double rates[8], dn = 0;
    for (int k = 0; k < n_batches; k++) {
        rates[k] = decode_rate(m, logits, batches[k], ctx, steps, blocks_per_seq, NULL, &bests[k], err, sizeof err);
        if (rates[k] < 0)
            dn = -1;
    }
    if (dn == 0)
        dn = rates[0];
    if (d1 < 0 || dn < 0) {
        fprintf(stderr, "cpu_bench: %s\n", err);
        return 1;
    }
    struct rusage ru;   /* before the copy test's own buffers */
    getrusage(RUSAGE_SELF, &ru);
    struct tpool *pool;
    if (tpool_new(in->threads, &pool) != 0)
        return 1;
    double bw = copy_bandwidth(pool), rbw = read_bandwidth(pool);
    tpool_free(pool);
    printf("{\"backend\": \"%s\", \"device\": \"%s\", \"dtype\": \"%s\", \"threads\": %d, \"load_s\": %.3f, "
           "\"prefill_tokens\": %d, \"prefill_tok_s\": %.2f, \"decode_ctx\": %d, \"decode1_tok_s\": %.3f, "
           "\"batch\": %d, \"decodeN_tok_s\": %.3f, \"step_weight_bytes\": %zu, \"copy_read_bytes_s\": %.0f, "
           "\"read_bytes_s\": %.0f, \"decode1_cpu_s\": %.6f, "
           "\"peak_rss_kb\": %ld, \"kv_dtype\": \"%s\", \"kv_step_bytes\": %zu, \"decode_page_faults\": %ld, "
           "\"tuning\": \"%s\", \"decode_tok_s\": {",
           in->backend, in->device_name, in->weight_format, in->threads, load_s, prompt, prefill, ctx,
           d1, batches[0], dn, in->step_weight_bytes, bw, rbw, d1_cpu, ru.ru_maxrss, in->kv_format,
           in->kv_block_bytes / (size_t)in->kv_block_tokens * (size_t)ctx, decode_faults,
           llm_tuning_name(in->tuning));
    for (int k = 0; k < n_batches; k++)
        printf("%s\"%d\": %.3f", k ? ", " : "", batches[k], rates[k]);
    printf("}, \"decode_vs_1\": {");
    for (int k = 0; k < n_batches; k++)
        printf("%s\"%d\": %.2f", k ? ", " : "", batches[k], rates[k] / d1);
    printf("}, \"best_step_tok_s\": {\"1\": %.3f", best1);
    for (int k = 0; k < n_batches; k++)
        printf(", \"%d\": %.3f", batches[k], bests[k]);
    printf("}}\n");
    free(table);
    free(toks);
    free(logits);
    llm_free(m);
    return 0;
}
