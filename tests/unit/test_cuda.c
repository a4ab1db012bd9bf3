/* test_cuda.c -- the CUDA backend: device selection (everywhere), then on a CUDA device each kernel against a CPU reference and the whole model against the CPU backend (logits, greedy tokens, batched vs one at a time).
 *
 * Without CUDA in the build or without a usable device only the device
 * selection runs and the rest is a TAP skip saying why, or a failure when
 * LLMCGI_REQUIRE_GPU=1 (tools/gpu-check sets it: on the GPU machine a skip
 * would hide a device that was not seen).
 *
 * Kernels run on fresh random inputs (the seed is printed; LLMCGI_TEST_SEED
 * repeats a run) with every output buffer filled with 0xff bytes first, a NaN
 * in F32, F16 and BF16 alike, so an element a kernel forgets to write fails
 * the comparison. Errors are max |got - want| / max |want| over the output:
 * F32 <= 1e-5, F16/BF16 <= 1e-2 (one rounding of the output to 8 or 11
 * bits). Whole models: F32 <= 1e-4, F16/BF16 <= 2e-2 against the CPU
 * backend, which computes in F32 from the same half-precision weights. */
#include "config.h"
#include "checkpoint.h"
#include "gpu.h"
#include "llm.h"
#include "scratch.h"
#include "tap.h"
#include "../../tools/gen_gpt2.h"
#include "cpu/ops.h"
#include "cuda/kref.h"
#ifdef HAVE_CUDA
#include "cuda/kernels.h"
#include "cuda/sample_cuda.h"
#endif

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char tmp_root[256];

/* Removes the model directory make_model wrote (they are large in the 124M shape). */
static void drop_model(struct gpt2_checkpoint *ck)
{
    if (!ck)
        return;
    char dir[600];
    snprintf(dir, sizeof dir, "%s", ck->dir);
    gpt2_checkpoint_close(ck);
    scratch_remove(dir);
}

/* Writes a generated model under tmp_root/name and opens it (NULL on failure, reported). */
static struct gpt2_checkpoint *make_model(const char *name, struct gen_gpt2_opts *o)
{
    char dir[512], err[512];
    snprintf(dir, sizeof dir, "%s/%s", tmp_root, name);
    o->out_dir = dir;
    if (gen_gpt2_write(o, err, sizeof err) != 0) {
        ok(0, "%s: checkpoint generated: %s", name, err);
        return NULL;
    }
    struct gpt2_checkpoint *ck;
    if (gpt2_checkpoint_open(dir, &ck, err, sizeof err) != 0) {
        ok(0, "%s: checkpoint opens: %s", name, err);
        return NULL;
    }
    return ck;
}

/* ------------------------------------------------------------------ device selection */

static void test_device_selection(const struct gpu_info *g)
{
    struct gen_gpt2_opts o;
    gen_gpt2_defaults(&o);
    o.n_positions = 32;
    o.vocab_size = 300;
    struct gpt2_checkpoint *ck = make_model("select", &o);
    if (!ck)
        return;
    char err[512] = "";
    struct llm_model *m = NULL;
    struct llm_load_opts lo = {.device = LLM_DEVICE_CPU};
    int rc = llm_load(ck, &lo, &m, err, sizeof err);
    ok(rc == 0 && !strcmp(llm_get_info(m)->backend, "cpu") && !llm_get_info(m)->fallback[0],
       "device cpu: the CPU backend, no fallback note");
    llm_free(m);
    m = NULL;

    lo.device = LLM_DEVICE_CUDA;
    err[0] = 0;
    rc = llm_load(ck, &lo, &m, err, sizeof err);
#ifndef HAVE_CUDA
    (void)g;
    ok(rc == -1 && m == NULL, "device cuda in a build without CUDA is an error");
    has_str(err, "no CUDA backend", "  that names the reason");
#else
    if (g->devices == 0) {
        ok(rc == -1 && m == NULL, "device cuda without a usable device is an error");
        has_str(err, "no CUDA device", "  that names the reason (%s)", err);
    } else {
        ok(rc == 0 && m && !strcmp(llm_get_info(m)->backend, "cuda"), "device cuda: the CUDA backend (%s)",
           rc == 0 ? llm_get_info(m)->device_name : err);
        ok(rc == 0 && !llm_get_info(m)->fallback[0], "  no fallback note");
        llm_free(m);
        m = NULL;
        lo.device_index = g->devices;
        rc = llm_load(ck, &lo, &m, err, sizeof err);
        ok(rc == -1 && m == NULL, "device cuda:%d (past the last device) is an error", g->devices);
        has_str(err, "no CUDA device", "  that names the reason (%s)", err);
        lo.device_index = 0;
    }
#endif
    llm_free(m);
    m = NULL;

    lo.device = LLM_DEVICE_AUTO;
    rc = llm_load(ck, &lo, &m, err, sizeof err);
    if (!ok(rc == 0, "device auto loads"))
        printf("# %s\n", err);
    if (rc == 0) {
        const struct llm_info *in = llm_get_info(m);
#ifndef HAVE_CUDA
        ok(!strcmp(in->backend, "cpu") && !in->fallback[0], "device auto without CUDA: the CPU, quietly");
#else
        if (g->devices == 0) {
            ok(!strcmp(in->backend, "cpu"), "device auto without a device: the CPU");
            has_str(in->fallback, "using the CPU", "  and the fallback says so (%s)", in->fallback);
            has_str(in->fallback, "no CUDA device", "  and why");
        } else {
            ok(!strcmp(in->backend, "cuda") && !in->fallback[0], "device auto with a device: CUDA (%s)",
               in->device_name);
        }
#endif
    }
    llm_free(m);
    drop_model(ck);
}

/* ------------------------------------------------------------------ helpers (random inputs, dtypes) */

static uint64_t rng;

static uint64_t rng_next(void)
{
    uint64_t z = (rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform on [-1, 1). */
static float urand(void)
{
    return (float)((double)(rng_next() >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static int irand(int n)
{
    return (int)(rng_next() % (uint64_t)n);
}

/* perm = a random permutation of 0..n-1 (Fisher-Yates). */
static void shuffle(int32_t *perm, int n)
{
    for (int i = 0; i < n; i++)
        perm[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = irand(i + 1);
        int32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

static float *rand_f32(size_t n, float scale, float offset)
{
    float *v = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        v[i] = offset + urand() * scale;
    return v;
}

/* ------------------------------------------------------------------ the CPU references (kref.h), in every build
 *
 * Each reference the device kernels are checked against is itself checked
 * here, with no device, against the CPU backend's own ops on the same
 * inputs: attention as kernels/cpu/gpt2_cpu.c's attn_task computes it
 * (ops_dot, ops_softmax, ops_axpy over the block table) and ops_layernorm. */

/* max |got - want| / max |want| over F32 values; a NaN or infinity in got is infinitely wrong. */
static double rel_err_f(const float *got, const float *want, size_t n)
{
    double e = 0, mx = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i]))
            return INFINITY;
        e = fmax(e, fabs((double)got[i] - want[i]));
        mx = fmax(mx, fabs((double)want[i]));
    }
    return mx > 0 ? e / mx : e;
}

/* v as dt would hold it (the device computes from dt values). */
static float round_to(enum ckpt_dtype dt, float v)
{
    return dt == CKPT_F16 ? ckpt_f16_to_f32(ckpt_f32_to_f16(v)) : dt == CKPT_BF16 ? ckpt_bf16_to_f32(ckpt_f32_to_bf16(v)) : v;
}

/* One attention problem: a batch of sequences, sequence s with n[s] new rows
 * from position pos[s], scattered block tables, the new rows' K and V
 * already in the pool (as kcu_kv_store leaves them). Values are rounded to
 * dt, so the F32 arrays are exactly what a dt device buffer holds. */
struct att_prob {
    const char *name;
    struct kref_kv kl;
    int layer, T, nt, C, n_blocks, max_ctx, max_new;
    size_t pool_elems;
    int32_t *row_pos, *row_tab, *tables;
    float *qkv, *pool;
    float tol_f32;      /* F32 tolerance: 1e-5, looser where scores are huge */
};

struct att_shape {
    const char *name;
    int L, H, hd, B, layer, n_seqs;
    int pos[8], n[8];
    float qscale;       /* q's magnitude: 1.5, or thousands for the overflow cases */
};

static const struct att_shape att_shapes[] = {
    {"decodes at contexts 1, 2, 127, 128, 1023, 1024 and 1000 in one batch, heads of 64, blocks of 16", 1, 2, 64,
     16, 0, 7, {0, 1, 126, 127, 1022, 1023, 999}, {1, 1, 1, 1, 1, 1, 1}, 1.5f},
    {"decodes at contexts 5, 100, 301 over blocks of 7, 3 heads of 40 (padded lanes), layer 1 of 2", 2, 3, 40, 7, 1,
     3, {4, 99, 300}, {1, 1, 1}, 1.5f},
    {"a chunk of 37 rows at 100, a decode at 64, a prompt of 20, heads of 64", 1, 2, 64, 16, 0, 3, {100, 63, 0},
     {37, 1, 20}, 1.5f},
    {"a 512-token prompt, heads of 64, blocks of 16", 1, 2, 64, 16, 0, 1, {0}, {512}, 1.5f},
    {"one head of 256 (the largest), blocks of 1", 1, 1, 256, 1, 0, 2, {40, 3}, {1, 5}, 1.5f},
    {"heads of 33 (no vector width), blocks of 5, a decode and a prompt of 12", 1, 2, 33, 5, 0, 2, {10, 0}, {1, 12},
     1.5f},
    {"scores near +-1000 (e^s overflows F32 unless the max is taken first), context 1024 and a chunk", 1, 2, 64, 16, 0,
     2, {1023, 200}, {1, 17}, 3000.0f},
};

static void att_prob_free(struct att_prob *a)
{
    free(a->row_pos);
    free(a->row_tab);
    free(a->tables);
    free(a->qkv);
    free(a->pool);
    memset(a, 0, sizeof *a);
}

static void att_prob_make(struct att_prob *a, const struct att_shape *sh, enum ckpt_dtype dt)
{
    memset(a, 0, sizeof *a);
    a->name = sh->name;
    a->kl = (struct kref_kv){sh->L, sh->H, sh->hd, sh->B};
    a->layer = sh->layer;
    a->C = sh->H * sh->hd;
    a->tol_f32 = sh->qscale > 100 ? 1e-3f : 1e-5f;
    for (int s = 0; s < sh->n_seqs; s++) {
        a->T += sh->n[s];
        a->nt += (sh->pos[s] + sh->n[s] + sh->B - 1) / sh->B;
        a->max_ctx = sh->pos[s] + sh->n[s] > a->max_ctx ? sh->pos[s] + sh->n[s] : a->max_ctx;
        a->max_new = sh->n[s] > a->max_new ? sh->n[s] : a->max_new;
    }
    a->n_blocks = a->nt + 3;        /* a few the tables never name */
    size_t block_elems = (size_t)sh->L * 2 * sh->H * sh->B * sh->hd;
    a->pool_elems = (size_t)a->n_blocks * block_elems;
    a->row_pos = malloc(sizeof(int32_t) * a->T);
    a->row_tab = malloc(sizeof(int32_t) * a->T);
    a->tables = malloc(sizeof(int32_t) * a->n_blocks);
    a->qkv = malloc(sizeof(float) * (size_t)a->T * 3 * a->C);
    a->pool = malloc(sizeof(float) * a->pool_elems);
    shuffle(a->tables, a->n_blocks);
    for (size_t i = 0; i < a->pool_elems; i++)
        a->pool[i] = round_to(dt, urand());
    for (int r = 0; r < a->T; r++)
        for (int c = 0; c < 3 * a->C; c++)
            a->qkv[(size_t)r * 3 * a->C + c] = round_to(dt, urand() * (c < a->C ? sh->qscale : 1.0f));
    int T = 0, nt = 0;
    for (int s = 0; s < sh->n_seqs; s++) {
        for (int t = 0; t < sh->n[s]; t++, T++) {
            int p = sh->pos[s] + t, block = a->tables[nt + p / sh->B], j = p % sh->B;
            a->row_pos[T] = p;
            a->row_tab[T] = nt;
            for (int c = 0; c < a->C; c++) {
                int h = c / sh->hd, d = c % sh->hd;
                const float *row = a->qkv + (size_t)T * 3 * a->C;
                a->pool[kref_kv_index(a->kl, block, a->layer, 0, h, j) + d] = row[a->C + c];
                a->pool[kref_kv_index(a->kl, block, a->layer, 1, h, j) + d] = row[2 * a->C + c];
            }
        }
        nt += (sh->pos[s] + sh->n[s] + sh->B - 1) / sh->B;
    }
}

/* Attention as the CPU backend computes it (gpt2_cpu.c, attn_task). */
static void att_cpu_backend(const struct att_prob *a, float scale, float *out)
{
    int hd = a->kl.head_dim, B = a->kl.block_tokens;
    float *scores = malloc(sizeof(float) * (size_t)(a->max_ctx + 1));
    for (int r = 0; r < a->T; r++) {
        int p = a->row_pos[r];
        const int32_t *tab = a->tables + a->row_tab[r];
        for (int h = 0; h < a->kl.n_head; h++) {
            const float *q = a->qkv + (size_t)r * 3 * a->C + (size_t)h * hd;
            for (int k = 0; k <= p; k++)
                scores[k] = ops_dot(q, a->pool + kref_kv_index(a->kl, tab[k / B], a->layer, 0, h, k % B), hd) * scale;
            ops_softmax(scores, p + 1);
            float *o = out + (size_t)r * a->C + (size_t)h * hd;
            memset(o, 0, sizeof(float) * (size_t)hd);
            for (int k = 0; k <= p; k++)
                ops_axpy(o, scores[k], a->pool + kref_kv_index(a->kl, tab[k / B], a->layer, 1, h, k % B), hd);
        }
    }
    free(scores);
}

/* The splits tried for each problem: one, a few, the rule's choice for a
 * 132-multiprocessor device, and the most. */
static int att_splits(const struct att_prob *a, int sms, int *sp)
{
    int n = 0;
    sp[n++] = 1;
    sp[n++] = 2;
    sp[n++] = 7;
    sp[n++] = kref_decode_splits(a->T * a->kl.n_head, a->max_ctx, sms);
    sp[n++] = KREF_MAX_SPLITS;
    return n;
}

static void test_ref_attention(void)
{
    for (size_t c = 0; c < sizeof att_shapes / sizeof att_shapes[0]; c++) {
        struct att_prob a;
        att_prob_make(&a, &att_shapes[c], CKPT_F32);
        float scale = 1.0f / sqrtf((float)a.kl.head_dim);
        size_t n = (size_t)a.T * a.C;
        float *want = malloc(sizeof(float) * n), *got = malloc(sizeof(float) * n);
        att_cpu_backend(&a, scale, want);
        int sp[8], ns = att_splits(&a, 132, sp);
        double worst = 0;
        for (int i = 0; i < ns; i++) {
            for (size_t k = 0; k < n; k++)
                got[k] = NAN;
            kref_attention_decode(got, a.qkv, a.pool, a.kl, a.row_pos, a.row_tab, a.tables, a.T, a.layer, scale, sp[i]);
            double e = rel_err_f(got, want, n);
            if (!(e <= a.tol_f32))
                tap_diag("  %d splits: error %.3g", sp[i], e);
            worst = fmax(worst, e);
        }
        ok(worst <= a.tol_f32, "reference split decode attention = the CPU backend's, 1 to %d splits, %s (%.2g)",
           KREF_MAX_SPLITS, a.name, worst);
        for (size_t k = 0; k < n; k++)
            got[k] = NAN;
        kref_attention_prefill(got, a.qkv, a.pool, a.kl, a.row_pos, a.row_tab, a.tables, a.T, a.layer, scale);
        double e = rel_err_f(got, want, n);
        ok(e <= a.tol_f32, "reference tiled prefill attention = the CPU backend's, %s (%.2g)", a.name, e);
        free(want);
        free(got);
        att_prob_free(&a);
    }
}

/* The split rule and the slices: every key in exactly one slice, split 0
 * never empty, the partials within kref_decode_work_floats. */
static void test_ref_splits(void)
{
    static const int ctxs[] = {1, 2, 31, 32, 33, 127, 128, 1000, 1023, 1024, 4096};
    static const int smss[] = {1, 108, 132};
    int bad_cover = 0, bad_work = 0, bad_range = 0;
    for (size_t i = 0; i < sizeof ctxs / sizeof ctxs[0]; i++) {
        for (int ns = 1; ns <= KREF_MAX_SPLITS; ns++) {
            int next = 0;
            for (int s = 0; s < ns; s++) {
                int k0, k1;
                kref_split_slice(ctxs[i], ns, s, &k0, &k1);
                if (k0 != next || k1 < k0 || (s == 0 && k1 == 0))
                    bad_cover++;
                next = k1;
            }
            bad_cover += next != ctxs[i];
        }
        for (size_t j = 0; j < sizeof smss / sizeof smss[0]; j++)
            for (int rh = 1; rh <= 4000; rh += rh < 64 ? 1 : 37) {
                int ns = kref_decode_splits(rh, ctxs[i], smss[j]);
                bad_range += ns < 1 || ns > KREF_MAX_SPLITS || (ctxs[i] <= KREF_SPLIT_MIN_KEYS && ns != 1);
                bad_work += (size_t)rh * ns * (64 + 2) > kref_decode_work_floats(rh, 64, smss[j]);
            }
    }
    ok(!bad_cover, "split slices cover each context exactly once, split 0 never empty (%d bad)", bad_cover);
    ok(!bad_range, "split counts within 1..%d, 1 for contexts of at most %d keys (%d bad)", KREF_MAX_SPLITS,
       KREF_SPLIT_MIN_KEYS, bad_range);
    ok(!bad_work, "split partials fit kref_decode_work_floats for every batch (%d bad)", bad_work);
    /* the 124M shape on an H100 (132 SMs): batch 1 splits, batch 256 does not */
    ok(kref_decode_splits(1 * 12, 1024, 132) >= 8 && kref_decode_splits(256 * 12, 1024, 132) == 1 &&
           kref_decode_splits(12, 128, 132) == 4,
       "124M shape on 132 SMs: batch 1 at context 1024 splits %d ways, at 128 %d, batch 256 %d",
       kref_decode_splits(12, 1024, 132), kref_decode_splits(12, 128, 132), kref_decode_splits(256 * 12, 1024, 132));
}

static void test_ref_layernorm(void)
{
    static const int Cs[] = {768, 100, 4, 2052};
    for (size_t k = 0; k < sizeof Cs / sizeof Cs[0]; k++) {
        enum { T = 13 };
        int C = Cs[k];
        size_t n = (size_t)T * C;
        float *x = rand_f32(n, 3.0f, 0.5f), *r = rand_f32(n, 1.0f, 0.0f), *rb = rand_f32((size_t)C, 0.3f, 0.0f);
        float *g = rand_f32((size_t)C, 0.2f, 1.0f), *b = rand_f32((size_t)C, 0.1f, 0.0f);
        float *xs = malloc(n * sizeof(float)), *got = malloc(n * sizeof(float)), *want = malloc(n * sizeof(float));
        int same_x = 1;
        memcpy(xs, x, n * sizeof(float));
        kref_residual_layernorm(xs, r, rb, got, g, b, T, C, 1e-5f);
        for (size_t i = 0; i < n; i++) {
            float v = x[i] + (r[i] + rb[i % C]);
            same_x &= v == xs[i];
            x[i] = v;
        }
        for (int t = 0; t < T; t++)
            ops_layernorm(want + (size_t)t * C, x + (size_t)t * C, g, b, C, 1e-5f);
        double e = rel_err_f(got, want, n);
        ok(e <= 1e-5 && same_x, "reference residual + LayerNorm = ops_layernorm after x += r + bias, C %d (%.2g)", C, e);
        free(x);
        free(r);
        free(rb);
        free(g);
        free(b);
        free(xs);
        free(got);
        free(want);
    }
}

static void test_references(void)
{
    ops_init(OPS_BEST);
    test_ref_splits();
    test_ref_attention();
    test_ref_layernorm();
}

#ifdef HAVE_CUDA
/* ------------------------------------------------------------------ helpers for the device tests */

static const char *dt_name(enum ckpt_dtype dt)
{
    return ckpt_dtype_name(dt);
}

static double kernel_tol(enum ckpt_dtype dt)
{
    return dt == CKPT_F32 ? 1e-5 : 1e-2;
}

/* Element i of a buffer of dt values, as the device stores them. */
static void raw_put(void *raw, enum ckpt_dtype dt, size_t i, float v)
{
    if (dt == CKPT_F32)
        ((float *)raw)[i] = v;
    else
        ((uint16_t *)raw)[i] = dt == CKPT_F16 ? ckpt_f32_to_f16(v) : ckpt_f32_to_bf16(v);
}

static float raw_get(const void *raw, enum ckpt_dtype dt, size_t i)
{
    if (dt == CKPT_F32)
        return ((const float *)raw)[i];
    uint16_t h = ((const uint16_t *)raw)[i];
    return dt == CKPT_F16 ? ckpt_f16_to_f32(h) : ckpt_bf16_to_f32(h);
}

/* n random values in [-scale, scale) as dt (caller frees). */
static void *rand_raw(enum ckpt_dtype dt, size_t n, float scale)
{
    void *raw = malloc(n * ckpt_dtype_size(dt));
    for (size_t i = 0; i < n; i++)
        raw_put(raw, dt, i, urand() * scale);
    return raw;
}


/* A failed CUDA call fails the test case that made it. */
static int cu(cudaError_t e, const char *what)
{
    if (e == cudaSuccess)
        return 1;
    ok(0, "%s: %s", what, cudaGetErrorString(e));
    return 0;
}

/* A device copy of bytes of host memory (NULL on failure, reported). */
static void *dev_copy(const void *host, size_t bytes)
{
    void *d = NULL;
    if (!cu(cudaMalloc(&d, bytes), "cudaMalloc"))
        return NULL;
    if (!cu(cudaMemcpy(d, host, bytes, cudaMemcpyHostToDevice), "cudaMemcpy to the device")) {
        cudaFree(d);
        return NULL;
    }
    return d;
}

/* A device buffer filled with 0xff bytes: NaN in every float type. */
static void *dev_poison(size_t bytes)
{
    void *d = NULL;
    if (!cu(cudaMalloc(&d, bytes), "cudaMalloc"))
        return NULL;
    if (!cu(cudaMemset(d, 0xff, bytes), "cudaMemset")) {
        cudaFree(d);
        return NULL;
    }
    return d;
}

/* Waits for the kernels and copies bytes back. */
static int dev_get(void *host, const void *d, size_t bytes)
{
    return cu(cudaDeviceSynchronize(), "the kernel") && cu(cudaMemcpy(host, d, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy back");
}

/* max |got - want| / max |want|; a NaN or infinity in got is infinitely wrong. */
static double rel_err(const float *got, const double *want, size_t n)
{
    double e = 0, mx = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i]))
            return INFINITY;
        e = fmax(e, fabs(got[i] - want[i]));
        mx = fmax(mx, fabs(want[i]));
    }
    return mx > 0 ? e / mx : e;
}

/* The same over a dt buffer. */
static double rel_err_raw(const void *got, enum ckpt_dtype dt, const double *want, size_t n)
{
    float *f = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        f[i] = raw_get(got, dt, i);
    double e = rel_err(f, want, n);
    free(f);
    return e;
}

/* ------------------------------------------------------------------ kernels */

static void test_embed(enum ckpt_dtype dt, int C)
{
    enum { V = 517, P = 64, T = 37 };
    void *wte = rand_raw(dt, (size_t)V * C, 1.0f);
    float *wpe = rand_f32((size_t)P * C, 0.5f, 0.0f);
    int32_t tok[T], pos[T];
    for (int t = 0; t < T; t++) {
        tok[t] = irand(V);
        pos[t] = irand(P);
    }
    tok[0] = V - 1;
    pos[1] = P - 1;
    void *d_wte = dev_copy(wte, (size_t)V * C * ckpt_dtype_size(dt)), *d_wpe = dev_copy(wpe, sizeof(float) * P * C);
    void *d_tok = dev_copy(tok, sizeof tok), *d_pos = dev_copy(pos, sizeof pos), *d_x = dev_poison(sizeof(float) * T * C);
    float *x = malloc(sizeof(float) * T * C);
    double *want = malloc(sizeof(double) * T * C);
    if (d_wte && d_wpe && d_tok && d_pos && d_x &&
        cu(kcu_embed(d_x, d_tok, d_pos, d_wte, dt, d_wpe, T, C, 0), "kcu_embed") &&
        dev_get(x, d_x, sizeof(float) * T * C)) {
        for (int t = 0; t < T; t++)
            for (int c = 0; c < C; c++)
                want[t * C + c] = (double)raw_get(wte, dt, (size_t)tok[t] * C + c) + wpe[pos[t] * C + c];
        double e = rel_err(x, want, (size_t)T * C);
        ok(e <= kernel_tol(dt), "embed %s, C %d: wte[token] + wpe[pos] (error %.2g)", dt_name(dt), C, e);
    }
    cudaFree(d_wte);
    cudaFree(d_wpe);
    cudaFree(d_tok);
    cudaFree(d_pos);
    cudaFree(d_x);
    free(wte);
    free(wpe);
    free(x);
    free(want);
}

static void test_layernorm(enum ckpt_dtype dt, int C, bool residual)
{
    enum { T = 13 };
    size_t n = (size_t)T * C;
    float eps = 1e-5f;
    float *x = rand_f32(n, 3.0f, 0.5f), *r = rand_f32(n, 1.0f, 0.0f), *rb = rand_f32((size_t)C, 0.3f, 0.0f);
    float *g = rand_f32((size_t)C, 0.2f, 1.0f), *b = rand_f32((size_t)C, 0.1f, 0.0f);
    float *xs = malloc(n * sizeof(float));
    void *out = malloc(n * ckpt_dtype_size(dt));
    double *want = malloc(n * sizeof(double)), *want_x = malloc(n * sizeof(double));
    float *d_x = dev_copy(x, n * sizeof(float)), *d_r = dev_copy(r, n * sizeof(float));
    float *d_rb = dev_copy(rb, C * sizeof(float)), *d_g = dev_copy(g, C * sizeof(float)), *d_b = dev_copy(b, C * sizeof(float));
    void *d_out = dev_poison(n * ckpt_dtype_size(dt));
    if (d_x && d_r && d_rb && d_g && d_b && d_out &&
        cu(kcu_residual_layernorm(d_x, residual ? d_r : NULL, residual ? d_rb : NULL, d_out, dt, d_g, d_b, T, C, eps, 0),
           "kcu_residual_layernorm") &&
        dev_get(out, d_out, n * ckpt_dtype_size(dt)) && dev_get(xs, d_x, n * sizeof(float))) {
        for (int t = 0; t < T; t++) {
            double mean = 0, var = 0;
            for (int c = 0; c < C; c++) {
                size_t i = (size_t)t * C + c;
                want_x[i] = residual ? (double)x[i] + ((double)r[i] + rb[c]) : x[i];
                mean += want_x[i];
            }
            mean /= C;
            for (int c = 0; c < C; c++)
                var += (want_x[(size_t)t * C + c] - mean) * (want_x[(size_t)t * C + c] - mean);
            var /= C;
            for (int c = 0; c < C; c++) {
                size_t i = (size_t)t * C + c;
                want[i] = (want_x[i] - mean) / sqrt(var + eps) * g[c] + b[c];
            }
        }
        double e = rel_err_raw(out, dt, want, n), ex = rel_err(xs, want_x, n);
        ok(e <= kernel_tol(dt) && ex <= 1e-6, "layernorm %s, C %d, %s: output error %.2g, residual error %.2g",
           dt_name(dt), C, residual ? "x += r + bias first" : "no residual", e, ex);
        /* and against its CPU reference: the same residual sums bit for bit */
        float *rx = malloc(n * sizeof(float)), *ro = malloc(n * sizeof(float)), *go = malloc(n * sizeof(float));
        memcpy(rx, x, n * sizeof(float));
        kref_residual_layernorm(rx, residual ? r : NULL, residual ? rb : NULL, ro, g, b, T, C, eps);
        for (size_t i = 0; i < n; i++)
            go[i] = raw_get(out, dt, i);
        double er = rel_err_f(go, ro, n);
        ok(er <= kernel_tol(dt) && !memcmp(rx, xs, n * sizeof(float)),
           "layernorm %s, C %d: = kref_residual_layernorm (%.2g), x identical", dt_name(dt), C, er);
        free(rx);
        free(ro);
        free(go);
    }
    cudaFree(d_x);
    cudaFree(d_r);
    cudaFree(d_rb);
    cudaFree(d_g);
    cudaFree(d_b);
    cudaFree(d_out);
    free(x);
    free(r);
    free(rb);
    free(g);
    free(b);
    free(xs);
    free(out);
    free(want);
    free(want_x);
}

static double act_ref(double v, enum kcu_act act)
{
    switch (act) {
    case KCU_ACT_GELU_TANH: return 0.5 * v * (1.0 + tanh(sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v)));
    case KCU_ACT_GELU_ERF: return 0.5 * v * (1.0 + erf(v / sqrt(2.0)));
    case KCU_ACT_RELU: return v > 0 ? v : 0;
    case KCU_ACT_QUICK_GELU: return v / (1.0 + exp(-1.702 * v));
    default: return v;
    }
}

static void test_bias_act(enum ckpt_dtype dt, enum kcu_act act, int N)
{
    static const char *names[] = {"bias", "bias + gelu_new", "bias + gelu (erf)", "bias + relu", "bias + quick_gelu"};
    enum { T = 7 };
    size_t n = (size_t)T * N;
    float *in = rand_f32(n, 3.0f, 0.0f), *bias = rand_f32(N, 0.5f, 0.0f);
    void *out = malloc(n * ckpt_dtype_size(dt));
    double *want = malloc(n * sizeof(double));
    float *d_in = dev_copy(in, n * sizeof(float)), *d_bias = dev_copy(bias, N * sizeof(float));
    void *d_out = dev_poison(n * ckpt_dtype_size(dt));
    if (d_in && d_bias && d_out && cu(kcu_bias_act(d_out, dt, d_in, d_bias, T, N, act, 0), "kcu_bias_act") &&
        dev_get(out, d_out, n * ckpt_dtype_size(dt))) {
        for (size_t i = 0; i < n; i++)
            want[i] = act_ref((double)in[i] + bias[i % N], act);
        double e = rel_err_raw(out, dt, want, n);
        ok(e <= kernel_tol(dt), "%s %s, rows of %d (error %.2g)", names[act], dt_name(dt), N, e);
    }
    cudaFree(d_in);
    cudaFree(d_bias);
    cudaFree(d_out);
    free(want);
    free(in);
    free(bias);
    free(out);
}

/* F16 outputs saturate at +-65504 instead of overflowing to infinity
 * (kernels.h), and gelu_new of a huge input is the input or -0, not NaN. */
static void test_f16_saturation(void)
{
    enum { N = 8 };
    static const float in[N] = {1e5f, -1e5f, 7e4f, 65000.0f, 3e38f, -3e38f, 1e6f, -7e4f};
    float *d_in = dev_copy(in, sizeof in);
    void *d_out = dev_poison(N * 2);
    uint16_t out[N];
    /* rows of 8: the float4 kernel; rows of 6: the scalar one */
    for (int w = 8; w >= 6; w -= 2)
        for (int a = KCU_ACT_NONE; a <= KCU_ACT_GELU_TANH && d_in && d_out; a++) {
            if (!cu(kcu_bias_act(d_out, CKPT_F16, d_in, NULL, 1, w, (enum kcu_act)a, 0), "kcu_bias_act") ||
                !dev_get(out, d_out, sizeof out))
                break;
            int good = 1;
            for (int i = 0; i < w; i++) {
                float v = ckpt_f16_to_f32(out[i]);
                float want = in[i] > 0 ? fminf(in[i], 65504.0f) : a == KCU_ACT_NONE ? fmaxf(in[i], -65504.0f) : 0.0f;
                good &= isfinite(v) && fabsf(v - ckpt_f16_to_f32(ckpt_f32_to_f16(want))) <= 32.0f;
            }
            ok(good, "F16 %s of inputs past 65504, rows of %d: saturated, finite", a == KCU_ACT_NONE ? "bias" : "gelu_new",
               w);
        }
    cudaFree(d_in);
    cudaFree(d_out);
}

static void test_gather(enum ckpt_dtype dt, int C)
{
    enum { T = 20, R = 6 };
    size_t es = ckpt_dtype_size(dt);
    void *src = rand_raw(dt, (size_t)T * C, 2.0f), *dst = malloc((size_t)R * C * es);
    int32_t rows[R] = {19, 0, 7, 7, 3, 12};
    void *d_src = dev_copy(src, (size_t)T * C * es), *d_rows = dev_copy(rows, sizeof rows);
    void *d_dst = dev_poison((size_t)R * C * es);
    if (d_src && d_rows && d_dst && cu(kcu_gather_rows(d_dst, d_src, dt, d_rows, R, C, 0), "kcu_gather_rows") &&
        dev_get(dst, d_dst, (size_t)R * C * es)) {
        int same = 1;
        for (int i = 0; i < R; i++)
            same &= !memcmp((char *)dst + (size_t)i * C * es, (char *)src + (size_t)rows[i] * C * es, C * es);
        ok(same, "gather rows %s, rows of %d: exact copies", dt_name(dt), C);
    }
    cudaFree(d_src);
    cudaFree(d_rows);
    cudaFree(d_dst);
    free(src);
    free(dst);
}

static void test_gemm(cublasHandle_t h, enum ckpt_dtype dt, enum kcu_wlayout wl, int T)
{
    enum { I = 96, O = 80 };
    size_t es = ckpt_dtype_size(dt);
    void *x = rand_raw(dt, (size_t)T * I, 1.0f), *w = rand_raw(dt, (size_t)I * O, 0.2f);
    float *y = malloc(sizeof(float) * T * O);
    double *want = malloc(sizeof(double) * T * O);
    void *d_x = dev_copy(x, (size_t)T * I * es), *d_w = dev_copy(w, (size_t)I * O * es);
    float *d_y = dev_poison(sizeof(float) * T * O);
    cublasStatus_t s = CUBLAS_STATUS_NOT_INITIALIZED;
    if (d_x && d_w && d_y) {
        s = kcu_gemm(h, d_y, d_x, d_w, dt, wl, T, I, O);
        if (s != CUBLAS_STATUS_SUCCESS)
            ok(0, "kcu_gemm: %s", cublasGetStatusString(s));
    }
    if (s == CUBLAS_STATUS_SUCCESS && dev_get(y, d_y, sizeof(float) * T * O)) {
        for (int t = 0; t < T; t++)
            for (int o = 0; o < O; o++) {
                double acc = 0;
                for (int i = 0; i < I; i++)
                    acc += (double)raw_get(x, dt, (size_t)t * I + i) *
                           raw_get(w, dt, wl == KCU_W_IN_OUT ? (size_t)i * O + o : (size_t)o * I + i);
                want[t * O + o] = acc;
            }
        double e = rel_err(y, want, (size_t)T * O);
        ok(e <= kernel_tol(dt), "gemm %s, W %s, %d rows (error %.2g)", dt_name(dt),
           wl == KCU_W_IN_OUT ? "[in][out]" : "[out][in]", T, e);
    }
    cudaFree(d_x);
    cudaFree(d_w);
    cudaFree(d_y);
    free(x);
    free(w);
    free(y);
    free(want);
}

struct att_case {
    const char *name;
    int L, H, hd, B, n_blocks, layer;
    int n_seqs;
    int pos[6], n[6];
};

/* kcu_kv_store then kcu_attention for a batch of sequences (decodes and
 * prefill chunks at different positions) with shuffled block tables,
 * against a double-precision reference on a host copy of the pool. */
static void test_attention(enum ckpt_dtype dt, const struct att_case *ac)
{
    struct kcu_kv_layout kl = {ac->L, ac->H, ac->hd, ac->B, NULL, NULL};
    int C = ac->H * ac->hd, T = 0, nt = 0;
    size_t es = ckpt_dtype_size(dt), pool_elems = (size_t)ac->n_blocks * kcu_kv_block_elems(kl);
    int32_t *perm = malloc(sizeof(int32_t) * ac->n_blocks), row_pos[256], row_tab[256], tables[512];
    shuffle(perm, ac->n_blocks);
    for (int s = 0; s < ac->n_seqs; s++) {
        int used = (ac->pos[s] + ac->n[s] + ac->B - 1) / ac->B;
        for (int k = 0; k < used; k++)
            tables[nt + k] = perm[nt + k];      /* distinct blocks across sequences */
        for (int t = 0; t < ac->n[s]; t++, T++) {
            row_pos[T] = ac->pos[s] + t;
            row_tab[T] = nt;
        }
        nt += used;
    }
    void *qkv = rand_raw(dt, (size_t)T * 3 * C, 1.5f), *pool = rand_raw(dt, pool_elems, 1.0f);
    void *pool_got = malloc(pool_elems * es), *out = malloc((size_t)T * C * es);
    double *want = malloc(sizeof(double) * T * C), *sc = malloc(sizeof(double) * 4096);
    void *d_qkv = dev_copy(qkv, (size_t)T * 3 * C * es), *d_pool = dev_copy(pool, pool_elems * es);
    void *d_pos = dev_copy(row_pos, sizeof(int32_t) * T), *d_tab = dev_copy(row_tab, sizeof(int32_t) * T);
    void *d_tables = dev_copy(tables, sizeof(int32_t) * nt), *d_out = dev_poison((size_t)T * C * es);
    float scale = 1.0f / sqrtf((float)ac->hd);
    if (d_qkv && d_pool && d_pos && d_tab && d_tables && d_out &&
        cu(kcu_kv_store(d_pool, d_qkv, dt, d_pos, d_tab, d_tables, T, ac->layer, kl, 0), "kcu_kv_store") &&
        cu(kcu_attention(d_out, d_qkv, d_pool, dt, d_pos, d_tab, d_tables, T, ac->layer, kl, scale, 0),
           "kcu_attention") &&
        dev_get(out, d_out, (size_t)T * C * es) && dev_get(pool_got, d_pool, pool_elems * es)) {
        /* the reference store: raw elements, so the pool must match bit for bit */
        for (int r = 0; r < T; r++) {
            int p = row_pos[r], block = tables[row_tab[r] + p / ac->B], j = p % ac->B;
            for (int c = 0; c < C; c++) {
                int h = c / ac->hd, d = c % ac->hd;
                memcpy((char *)pool + (kcu_kv_index(kl, block, ac->layer, 0, h, j) + d) * es,
                       (char *)qkv + ((size_t)r * 3 * C + C + c) * es, es);
                memcpy((char *)pool + (kcu_kv_index(kl, block, ac->layer, 1, h, j) + d) * es,
                       (char *)qkv + ((size_t)r * 3 * C + 2 * C + c) * es, es);
            }
        }
        ok(!memcmp(pool, pool_got, pool_elems * es), "kv store %s, %s: every new K and V in its block, nothing else moved",
           dt_name(dt), ac->name);
        for (int r = 0; r < T; r++) {
            int p = row_pos[r];
            const int32_t *tab = tables + row_tab[r];
            for (int h = 0; h < ac->H; h++) {
                double mx = -INFINITY, sum = 0;
                for (int k = 0; k <= p; k++) {
                    size_t ki = kcu_kv_index(kl, tab[k / ac->B], ac->layer, 0, h, k % ac->B);
                    double s = 0;
                    for (int d = 0; d < ac->hd; d++)
                        s += (double)raw_get(qkv, dt, (size_t)r * 3 * C + (size_t)h * ac->hd + d) *
                             raw_get(pool, dt, ki + d);
                    sc[k] = s * scale;
                    mx = fmax(mx, sc[k]);
                }
                for (int k = 0; k <= p; k++)
                    sum += sc[k] = exp(sc[k] - mx);
                for (int d = 0; d < ac->hd; d++) {
                    double a = 0;
                    for (int k = 0; k <= p; k++)
                        a += sc[k] / sum *
                             raw_get(pool, dt, kcu_kv_index(kl, tab[k / ac->B], ac->layer, 1, h, k % ac->B) + d);
                    want[(size_t)r * C + (size_t)h * ac->hd + d] = a;
                }
            }
        }
        double e = rel_err_raw(out, dt, want, (size_t)T * C);
        ok(e <= kernel_tol(dt), "attention %s, %s (error %.2g)", dt_name(dt), ac->name, e);
    }
    cudaFree(d_qkv);
    cudaFree(d_pool);
    cudaFree(d_pos);
    cudaFree(d_tab);
    cudaFree(d_tables);
    cudaFree(d_out);
    free(perm);
    free(qkv);
    free(pool);
    free(pool_got);
    free(out);
    free(want);
    free(sc);
}

/* kcu_attention_decode (one to KREF_MAX_SPLITS splits, and the count the
 * rule picks for this device) and kcu_attention_prefill against their CPU
 * references (kref.c, themselves checked against the CPU backend above) on
 * the same dt inputs; outputs start as NaN, the partials too. */
static void test_attention_kernels(enum ckpt_dtype dt, const struct att_shape *sh, int sms)
{
    struct att_prob a;
    att_prob_make(&a, sh, dt);
    struct kcu_kv_layout kl = {a.kl.n_layer, a.kl.n_head, a.kl.head_dim, a.kl.block_tokens, NULL, NULL};
    size_t es = ckpt_dtype_size(dt), n = (size_t)a.T * a.C, nq = (size_t)a.T * 3 * a.C;
    void *qkv = malloc(nq * es), *pool = malloc(a.pool_elems * es), *out = malloc(n * es);
    for (size_t i = 0; i < nq; i++)
        raw_put(qkv, dt, i, a.qkv[i]);
    for (size_t i = 0; i < a.pool_elems; i++)
        raw_put(pool, dt, i, a.pool[i]);
    float *want = malloc(n * sizeof(float)), *got = malloc(n * sizeof(float));
    size_t wf = (size_t)a.T * a.kl.n_head * KREF_MAX_SPLITS * (a.kl.head_dim + 2);
    void *d_qkv = dev_copy(qkv, nq * es), *d_pool = dev_copy(pool, a.pool_elems * es);
    void *d_pos = dev_copy(a.row_pos, sizeof(int32_t) * a.T), *d_tab = dev_copy(a.row_tab, sizeof(int32_t) * a.T);
    void *d_tables = dev_copy(a.tables, sizeof(int32_t) * a.n_blocks), *d_out = dev_poison(n * es);
    float *d_work = dev_poison(wf * sizeof(float));
    float scale = 1.0f / sqrtf((float)a.kl.head_dim);
    double tol = fmax(kernel_tol(dt), a.tol_f32), worst = 0;
    int sp[8], ns = att_splits(&a, sms, sp), ran = 0;
    for (int i = 0; i < ns && d_qkv && d_pool && d_pos && d_tab && d_tables && d_out && d_work; i++) {
        if (!cu(cudaMemset(d_out, 0xff, n * es), "cudaMemset") ||
            !cu(kcu_attention_decode(d_out, d_qkv, d_pool, dt, d_pos, d_tab, d_tables, a.T, a.layer, kl, scale, sp[i],
                                     d_work, 0), "kcu_attention_decode") ||
            !dev_get(out, d_out, n * es))
            break;
        kref_attention_decode(want, a.qkv, a.pool, a.kl, a.row_pos, a.row_tab, a.tables, a.T, a.layer, scale, sp[i]);
        for (size_t k = 0; k < n; k++)
            got[k] = raw_get(out, dt, k);
        double e = rel_err_f(got, want, n);
        if (!(e <= tol))
            tap_diag("  %d splits: error %.3g", sp[i], e);
        worst = fmax(worst, e);
        ran++;
    }
    if (ran == ns)
        ok(worst <= tol, "split decode attention %s, 1 to %d splits and %d (this device's), %s (%.2g)", dt_name(dt),
           KREF_MAX_SPLITS, sp[3], a.name, worst);
    if (ran == ns && cu(cudaMemset(d_out, 0xff, n * es), "cudaMemset") &&
        cu(kcu_attention_prefill(d_out, d_qkv, d_pool, dt, d_pos, d_tab, d_tables, a.T, a.layer, kl, scale, 0),
           "kcu_attention_prefill") &&
        dev_get(out, d_out, n * es)) {
        kref_attention_prefill(want, a.qkv, a.pool, a.kl, a.row_pos, a.row_tab, a.tables, a.T, a.layer, scale);
        for (size_t k = 0; k < n; k++)
            got[k] = raw_get(out, dt, k);
        double e = rel_err_f(got, want, n);
        ok(e <= tol, "tiled prefill attention %s, %s (%.2g)", dt_name(dt), a.name, e);
    }
    cudaFree(d_qkv);
    cudaFree(d_pool);
    cudaFree(d_pos);
    cudaFree(d_tab);
    cudaFree(d_tables);
    cudaFree(d_out);
    cudaFree(d_work);
    free(qkv);
    free(pool);
    free(out);
    free(want);
    free(got);
    att_prob_free(&a);
}

/* The KV check (kl.written, LLMCGI_CUDA_CHECK_KV) in both new kernels: one
 * position of the first sequence marked never written is reported, with
 * its position; with every position marked, nothing is. */
static void test_attention_kv_check(int sms)
{
    struct att_prob a;
    att_prob_make(&a, &att_shapes[2], CKPT_F16);
    struct kcu_kv_layout kl = {a.kl.n_layer, a.kl.n_head, a.kl.head_dim, a.kl.block_tokens, NULL, NULL};
    size_t n = (size_t)a.T * a.C, nq = (size_t)a.T * 3 * a.C, wb = (size_t)a.n_blocks * a.kl.n_layer * a.kl.block_tokens;
    uint16_t *qkv = malloc(nq * 2), *pool = malloc(a.pool_elems * 2);
    for (size_t i = 0; i < nq; i++)
        qkv[i] = ckpt_f32_to_f16(a.qkv[i]);
    for (size_t i = 0; i < a.pool_elems; i++)
        pool[i] = ckpt_f32_to_f16(a.pool[i]);
    uint8_t *written = malloc(wb);
    memset(written, 1, wb);
    const int hole = 50;    /* a position of sequence 0 (rows at 100..136) */
    written[((size_t)a.tables[hole / a.kl.block_tokens] * a.kl.n_layer + a.layer) * a.kl.block_tokens +
            hole % a.kl.block_tokens] = 0;
    void *d_qkv = dev_copy(qkv, nq * 2), *d_pool = dev_copy(pool, a.pool_elems * 2);
    void *d_pos = dev_copy(a.row_pos, sizeof(int32_t) * a.T), *d_tab = dev_copy(a.row_tab, sizeof(int32_t) * a.T);
    void *d_tables = dev_copy(a.tables, sizeof(int32_t) * a.n_blocks), *d_out = dev_poison(n * 2);
    int splits = kref_decode_splits(a.T * a.kl.n_head, a.max_ctx, sms);
    float *d_work = dev_poison((size_t)a.T * a.kl.n_head * splits * (a.kl.head_dim + 2) * sizeof(float));
    uint8_t *d_written = dev_copy(written, wb);
    int32_t zero[4] = {0}, f[4];
    int32_t *d_fault = dev_copy(zero, sizeof zero);
    kl.written = d_written;
    kl.fault = d_fault;
    float scale = 0.125f;
    for (int k = 0; k < 4 && d_qkv && d_pool && d_pos && d_tab && d_tables && d_out && d_work && d_written && d_fault;
         k++) {
        bool prefill = k % 2, whole = k >= 2;
        if (whole && !cu(cudaMemset(d_written, 1, wb), "cudaMemset"))
            break;
        if (!cu(cudaMemset(d_fault, 0, sizeof zero), "cudaMemset") ||
            !cu(prefill ? kcu_attention_prefill(d_out, d_qkv, d_pool, CKPT_F16, d_pos, d_tab, d_tables, a.T, a.layer,
                                                kl, scale, 0)
                        : kcu_attention_decode(d_out, d_qkv, d_pool, CKPT_F16, d_pos, d_tab, d_tables, a.T, a.layer,
                                               kl, scale, splits, d_work, 0),
                "attention") ||
            !dev_get(f, d_fault, sizeof f))
            break;
        if (!whole)
            ok(f[0] == 1 && f[2] == hole, "KV check, %s attention: the read of never-written position %d reported "
               "(fault %d, position %d)", prefill ? "tiled prefill" : "split decode", hole, f[0], f[2]);
        else
            ok(f[0] == 0, "KV check, %s attention: nothing reported when every position was written",
               prefill ? "tiled prefill" : "split decode");
    }
    cudaFree(d_qkv);
    cudaFree(d_pool);
    cudaFree(d_pos);
    cudaFree(d_tab);
    cudaFree(d_tables);
    cudaFree(d_out);
    cudaFree(d_work);
    cudaFree(d_written);
    cudaFree(d_fault);
    free(qkv);
    free(pool);
    free(written);
    att_prob_free(&a);
}

static uint32_t float_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* kcu_sample_greedy against ksample_greedy_ref (kernels/sample.c, itself
 * checked against the engine's sampler in test_sampler): rows of n logits
 * with NaN, +-inf, ties and every penalty; ids and top-n ids identical,
 * log-probabilities within one float ulp (log() in double may differ by an
 * ulp between CUDA and the C library). */
static void test_sample(int n, int rows)
{
    float *l = malloc(sizeof(float) * (size_t)n * rows), *lr = malloc(sizeof(float) * (size_t)n * rows);
    struct kcu_sample_row *q = calloc((size_t)rows, sizeof *q);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)rows * 96);
    struct ksample_out *ref = calloc((size_t)rows, sizeof *ref), *got = calloc((size_t)rows, sizeof *got);
    int nid = 0;
    for (int r = 0; r < rows; r++) {
        float sc = r % 3 == 0 ? 60.0f : r % 3 == 1 ? 3.0f : 0.01f;
        for (int i = 0; i < n; i++) {
            float v = (urand() * 2 - 1) * sc;
            int k = irand(400);
            l[(size_t)r * n + i] = k == 0 ? NAN : k == 1 ? -INFINITY : (k == 2 && r == 5) ? INFINITY
                                   : (k < 15 && i > 0) ? l[(size_t)r * n + irand(i)] : v;
        }
        if (r == rows - 1)
            for (int i = 0; i < n; i++)
                l[(size_t)r * n + i] = -INFINITY;
        q[r] = (struct kcu_sample_row){r % 2 ? 1.3f : 1.0f, r % 4 >= 2 ? 0.5f : 0.0f, r % 3 ? -0.25f : 0.0f,
                                       nid, 0, 0, 0, r % 21};
        int nr = irand(30);
        for (int k = 0; k < nr; k++) {      /* distinct ids */
            int32_t id = irand(n), d = 0;
            while (d < q[r].n_rep && ids[nid + d] != id)
                d++;
            if (d == q[r].n_rep)
                ids[nid + q[r].n_rep++] = id;
        }
        nid += q[r].n_rep;
        q[r].gen_off = nid;
        q[r].n_gen = q[r].n_rep < 10 ? q[r].n_rep : 10;
        for (int k = 0; k < q[r].n_gen; k++) {
            ids[nid + k] = ids[q[r].rep_off + k];
            ids[nid + q[r].n_gen + k] = 1 + irand(4);
        }
        nid += 2 * q[r].n_gen;
    }
    memcpy(lr, l, sizeof(float) * (size_t)n * rows);
    int ref_rc[64];
    for (int r = 0; r < rows; r++) {
        struct ksample_row kr = {q[r].repetition_penalty, ids + q[r].rep_off, q[r].n_rep, q[r].frequency_penalty,
                                 q[r].presence_penalty, ids + q[r].gen_off, ids + q[r].gen_off + q[r].n_gen,
                                 q[r].n_gen, q[r].top_n};
        ref_rc[r] = ksample_greedy_ref(lr + (size_t)r * n, n, &kr, &ref[r]);
    }
    float *dl = dev_copy(l, sizeof(float) * (size_t)n * rows);
    void *dq = dev_copy(q, sizeof *q * (size_t)rows), *di = dev_copy(ids, sizeof(int32_t) * (size_t)(nid + 1));
    void *dout = dev_poison(sizeof *got * (size_t)rows), *dw = dev_poison(sizeof(double) * kcu_sample_work_doubles(rows, n));
    int same = 0, lp_ulps = 0;
    if (dl && dq && di && dout && dw &&
        cu(kcu_sample_greedy(dl, rows, n, dq, di, dout, dw, 0), "kcu_sample_greedy") == 0 &&
        cu(cudaDeviceSynchronize(), "kcu_sample_greedy ran") == 0 && dev_get(got, dout, sizeof *got * (size_t)rows) == 0) {
        for (int r = 0; r < rows; r++) {
            if (ref_rc[r] != 0) {
                same += got[r].id == -1;
                continue;
            }
            bool eq = got[r].id == ref[r].id && got[r].n_top == ref[r].n_top;
            int u = abs((int)((int32_t)float_bits(got[r].logprob) - (int32_t)float_bits(ref[r].logprob)));
            for (int j = 0; eq && j < ref[r].n_top; j++) {
                eq = got[r].top_id[j] == ref[r].top_id[j];
                int uj = abs((int)((int32_t)float_bits(got[r].top_logprob[j]) -
                                   (int32_t)float_bits(ref[r].top_logprob[j])));
                u = uj > u ? uj : u;
            }
            lp_ulps = u > lp_ulps ? u : lp_ulps;
            same += eq && u <= 1;
        }
    }
    is_int(same, rows, "kcu_sample_greedy, %d rows of %d: ids and top-n as the CPU reference, logprobs within 1 ulp "
                       "(worst %d)", rows, n, lp_ulps);
    cudaFree(dl);
    cudaFree(dq);
    cudaFree(di);
    cudaFree(dout);
    cudaFree(dw);
    free(l);
    free(lr);
    free(q);
    free(ids);
    free(ref);
    free(got);
}

static void test_kernels(void)
{
    static const enum ckpt_dtype dts[] = {CKPT_F32, CKPT_F16, CKPT_BF16};
    static const struct att_case cases[] = {
        {"2 layers, 3 heads of 40, blocks of 4, decodes and chunks", 2, 3, 40, 4, 48, 1, 5,
         {9, 0, 7, 0, 30}, {1, 6, 5, 1, 3}},
        {"heads of 64, blocks of 16, a decode at 500 and a chunk of 20", 1, 2, 64, 16, 80, 0, 3,
         {500, 100, 0}, {1, 20, 17}},
        {"one head of 256 (the largest), blocks of 1", 1, 1, 256, 1, 64, 0, 2, {40, 3}, {1, 5}},
    };
    cublasHandle_t h;
    cublasStatus_t s = cublasCreate(&h);
    if (!ok(s == CUBLAS_STATUS_SUCCESS, "cublasCreate"))
        return;
    cublasSetMathMode(h, CUBLAS_DEFAULT_MATH);
    const char *q = getenv("LLMCGI_CUDA_QUICK");
    bool quick = q && *q && strcmp(q, "0");
    int sms = 0;
    if (!cu(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0), "cudaDeviceGetAttribute"))
        sms = 132;
    for (size_t k = 0; k < sizeof dts / sizeof dts[0]; k++) {
        enum ckpt_dtype dt = dts[k];
        test_embed(dt, 100);    /* 4 columns per thread */
        test_embed(dt, 101);    /* one */
        test_layernorm(dt, 100, false);
        test_layernorm(dt, 100, true);
        test_layernorm(dt, 768, true);
        test_layernorm(dt, 2048, true);     /* the warp kernel's widest row */
        test_layernorm(dt, 101, true);      /* not a multiple of 4: one block per row */
        test_layernorm(dt, 2052, true);     /* too wide for the warp kernel's registers */
        for (int a = KCU_ACT_NONE; a <= KCU_ACT_QUICK_GELU; a++) {
            test_bias_act(dt, (enum kcu_act)a, 300);    /* float4 path */
            test_bias_act(dt, (enum kcu_act)a, 301);    /* scalar path */
        }
        test_gather(dt, 70);    /* one element at a time */
        test_gather(dt, 64);    /* 16-byte pieces */
        test_gemm(h, dt, KCU_W_IN_OUT, 1);
        test_gemm(h, dt, KCU_W_IN_OUT, 7);
        test_gemm(h, dt, KCU_W_OUT_IN, 1);
        test_gemm(h, dt, KCU_W_OUT_IN, 7);
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
            test_attention(dt, &cases[c]);
        /* under compute-sanitizer (LLMCGI_CUDA_QUICK) F16 only: the same kernels' code paths, a third of the time */
        for (size_t c = 0; c < sizeof att_shapes / sizeof att_shapes[0] && (!quick || dt == CKPT_F16); c++)
            test_attention_kernels(dt, &att_shapes[c], sms);
    }
    test_attention_kv_check(sms);
    test_f16_saturation();
    test_sample(65, 16);
    test_sample(1000, 16);
    test_sample(50257, 24);
    cublasDestroy(h);
}

/* ------------------------------------------------------------------ whole models */

static int32_t argmax(const float *z, int n)
{
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (z[i] > z[best])
            best = i;
    return best;
}

/* Worst over rows of max |a - b| / max |b| (b the reference); NaN counts as infinite. */
static double rows_err(const float *a, const float *b, int rows, int V)
{
    double worst = 0;
    for (int r = 0; r < rows; r++) {
        double e = 0, mx = 0;
        for (int i = 0; i < V; i++) {
            size_t k = (size_t)r * V + i;
            if (!isfinite(a[k]))
                return INFINITY;
            e = fmax(e, fabs((double)a[k] - b[k]));
            mx = fmax(mx, fabs((double)b[k]));
        }
        worst = fmax(worst, mx > 0 ? e / mx : e);
    }
    return worst;
}

static struct llm_model *load_on(const struct gpt2_checkpoint *ck, enum llm_device dev, int blocks, int S,
                                 const char *what)
{
    char err[512];
    /* The checkpoint's own type on both backends (auto would narrow F32 to half on the GPU). */
    enum llm_dtype dt = ck->wte.dtype == CKPT_F16 ? LLM_DTYPE_F16 : ck->wte.dtype == CKPT_BF16 ? LLM_DTYPE_BF16
                                                                                              : LLM_DTYPE_F32;
    struct llm_load_opts lo = {.device = dev, .kv_block_tokens = 16, .kv_blocks = blocks, .max_step_tokens = S,
                               .max_step_logits = S, .dtype = dt};
    struct llm_model *m = NULL;
    if (llm_load(ck, &lo, &m, err, sizeof err) != 0) {
        ok(0, "%s: loads on the %s: %s", what, dev == LLM_DEVICE_CPU ? "CPU" : "GPU", err);
        return NULL;
    }
    return m;
}

/* One llm_forward; the logits rows it should write are NaN before it. */
static int step(struct llm_model *m, const struct llm_seq *seqs, int n, float *logits, const char *what)
{
    char err[512];
    size_t rows = 0;
    for (int i = 0; i < n; i++)
        rows += seqs[i].logits == LLM_LOGITS_ALL ? (size_t)seqs[i].n_tokens : seqs[i].logits == LLM_LOGITS_LAST;
    memset(logits, 0xff, rows * sizeof(float) * (size_t)llm_get_info(m)->cfg.vocab_size);
    if (llm_forward(m, seqs, n, logits, err, sizeof err) != 0) {
        ok(0, "%s: step: %s", what, err);
        return -1;
    }
    return 0;
}

/* (b) The same steps on both backends: one batch prefilling three prompts
 * (one asking for every row), then three batched decode steps; every logits
 * row compared. */
static void compare_backends(const struct gpt2_checkpoint *ck, const char *what, double tol)
{
    enum { NS = 3, DECODE = 3, BPS = 8 };
    int V = ck->cfg.vocab_size, P = ck->cfg.n_positions;
    int lens[NS] = {5, 17, 33};
    for (int s = 0; s < NS; s++)
        if (lens[s] + DECODE > P)
            lens[s] = P - DECODE;
    int total = lens[0] + lens[1] + lens[2];
    struct llm_model *cpu = load_on(ck, LLM_DEVICE_CPU, NS * BPS, total, what);
    struct llm_model *gpu = load_on(ck, LLM_DEVICE_CUDA, NS * BPS, total, what);
    int32_t prompt[NS][64], tables[NS][BPS], dec[DECODE][NS], perm[NS * BPS];
    shuffle(perm, NS * BPS);
    for (int s = 0; s < NS; s++) {
        for (int t = 0; t < lens[s]; t++)
            prompt[s][t] = irand(V);
        for (int b = 0; b < BPS; b++)
            tables[s][b] = perm[s * BPS + b];
    }
    for (int k = 0; k < DECODE; k++)
        for (int s = 0; s < NS; s++)
            dec[k][s] = irand(V);
    if (!cpu || !gpu) {
        llm_free(cpu);
        llm_free(gpu);
        return;
    }
    const struct llm_info *in = llm_get_info(gpu);
    printf("# %s: %s, %s weights, %zu weight bytes, KV block %zu bytes\n", what, in->device_name,
           ckpt_dtype_name(in->weight_dtype), in->weight_bytes, in->kv_block_bytes);
    float *a = malloc(sizeof(float) * (size_t)V * total), *b = malloc(sizeof(float) * (size_t)V * total);
    struct llm_seq seqs[NS];
    for (int s = 0; s < NS; s++)
        seqs[s] = (struct llm_seq){prompt[s], lens[s], 0, tables[s], BPS, s == 0 ? LLM_LOGITS_ALL : LLM_LOGITS_LAST};
    int rows = lens[0] + NS - 1;
    double worst = 0;
    if (step(cpu, seqs, NS, a, what) == 0 && step(gpu, seqs, NS, b, what) == 0) {
        worst = rows_err(b, a, rows, V);
        for (int k = 0; k < DECODE; k++) {
            for (int s = 0; s < NS; s++)
                seqs[s] = (struct llm_seq){&dec[k][s], 1, lens[s] + k, tables[s], BPS, LLM_LOGITS_LAST};
            if (step(cpu, seqs, NS, a, what) != 0 || step(gpu, seqs, NS, b, what) != 0) {
                worst = INFINITY;
                break;
            }
            worst = fmax(worst, rows_err(b, a, NS, V));
        }
        ok(worst <= tol, "%s: GPU logits within %g of the CPU's over a batched prefill and %d decode steps (%.2g)",
           what, tol, DECODE, worst);
    }
    free(a);
    free(b);
    llm_free(cpu);
    llm_free(gpu);
}

/* (c) Greedy decoding from one prompt on each backend: the same tokens. */
static void compare_greedy(const struct gpt2_checkpoint *ck, const char *what, int steps)
{
    int V = ck->cfg.vocab_size, n0 = 8;
    int blocks = (n0 + steps + 15) / 16;
    int32_t ids[2][256], table[64];
    for (int i = 0; i < blocks; i++)
        table[i] = blocks - 1 - i;
    for (int t = 0; t < n0; t++)
        ids[0][t] = ids[1][t] = irand(V);
    float *z = malloc(sizeof(float) * (size_t)V);
    for (int k = 0; k < 2; k++) {
        struct llm_model *m = load_on(ck, k == 0 ? LLM_DEVICE_CPU : LLM_DEVICE_CUDA, blocks, n0, what);
        if (!m) {
            free(z);
            return;
        }
        struct llm_seq s = {ids[k], n0, 0, table, blocks, LLM_LOGITS_LAST};
        for (int i = 0; i < steps; i++) {
            if (step(m, &s, 1, z, what) != 0) {
                llm_free(m);
                free(z);
                return;
            }
            ids[k][n0 + i] = argmax(z, V);
            s = (struct llm_seq){&ids[k][n0 + i], 1, n0 + i, table, blocks, LLM_LOGITS_LAST};
        }
        llm_free(m);
    }
    int same = 0;
    while (same < steps && ids[0][n0 + same] == ids[1][n0 + same])
        same++;
    is_int(same, steps, "%s: %d greedy tokens identical on the GPU and the CPU", what, steps);
    free(z);
}

/* (d) On the GPU: one step mixing decodes and prefill chunks at different
 * positions with scattered block tables gives what the same sequences give
 * one per step, and so do the decode steps after it (which read the KV the
 * mixed step wrote). */
static void compare_batched(const struct gpt2_checkpoint *ck, const char *what, double tol)
{
    enum { NS = 4, BPS = 4, AFTER = 3 };
    int V = ck->cfg.vocab_size;
    /* phase 0 (alone, both worlds): prompt[0..pre); the mixed step: [pre, pre + n) */
    int pre[NS] = {9, 21, 8, 0}, n[NS] = {1, 1, 6, 30};
    int mode[NS] = {LLM_LOGITS_LAST, LLM_LOGITS_LAST, LLM_LOGITS_ALL, LLM_LOGITS_LAST};
    int32_t toks[NS][64], perm[2 * NS * BPS], tab[2][NS][BPS];
    for (int s = 0; s < NS; s++)
        for (int t = 0; t < 64; t++)
            toks[s][t] = irand(V);
    shuffle(perm, 2 * NS * BPS);
    for (int w = 0; w < 2; w++)
        for (int s = 0; s < NS; s++)
            for (int b = 0; b < BPS; b++)
                tab[w][s][b] = perm[(w * NS + s) * BPS + b];
    struct llm_model *m = load_on(ck, LLM_DEVICE_CUDA, 2 * NS * BPS, 64, what);
    if (!m)
        return;
    float *za = malloc(sizeof(float) * (size_t)V * 64), *zb = malloc(sizeof(float) * (size_t)V * 64);
    struct llm_seq seqs[NS];
    int rc = 0;
    /* phase 0, one sequence per step, in both worlds */
    for (int w = 0; w < 2 && rc == 0; w++)
        for (int s = 0; s < NS && rc == 0; s++)
            if (pre[s] > 0) {
                seqs[0] = (struct llm_seq){toks[s], pre[s], 0, tab[w][s], BPS, LLM_LOGITS_NONE};
                rc = step(m, seqs, 1, za, what);
            }
    /* the mixed step: world 0 in one step, world 1 one sequence per step */
    int rows = 0;
    for (int s = 0; s < NS; s++)
        seqs[s] = (struct llm_seq){toks[s] + pre[s], n[s], pre[s], tab[0][s], BPS, mode[s]};
    if (rc == 0)
        rc = step(m, seqs, NS, za, what);
    for (int s = 0; s < NS && rc == 0; s++) {
        struct llm_seq one = {toks[s] + pre[s], n[s], pre[s], tab[1][s], BPS, mode[s]};
        rc = step(m, &one, 1, zb + (size_t)rows * V, what);
        rows += mode[s] == LLM_LOGITS_ALL ? n[s] : 1;
    }
    double worst = 0;
    int same_argmax = 1;
    if (rc == 0) {
        worst = rows_err(za, zb, rows, V);
        for (int r = 0; r < rows; r++)
            same_argmax &= argmax(za + (size_t)r * V, V) == argmax(zb + (size_t)r * V, V);
    }
    /* decode steps after it, batched in world 0 and one by one in world 1 */
    for (int k = 0; k < AFTER && rc == 0; k++) {
        for (int s = 0; s < NS; s++)
            seqs[s] = (struct llm_seq){&toks[s][40 + k], 1, pre[s] + n[s] + k, tab[0][s], BPS, LLM_LOGITS_LAST};
        rc = step(m, seqs, NS, za, what);
        for (int s = 0; s < NS && rc == 0; s++) {
            struct llm_seq one = {&toks[s][40 + k], 1, pre[s] + n[s] + k, tab[1][s], BPS, LLM_LOGITS_LAST};
            rc = step(m, &one, 1, zb + (size_t)s * V, what);
        }
        if (rc == 0) {
            worst = fmax(worst, rows_err(za, zb, NS, V));
            for (int s = 0; s < NS; s++)
                same_argmax &= argmax(za + (size_t)s * V, V) == argmax(zb + (size_t)s * V, V);
        }
    }
    if (rc == 0) {
        ok(worst <= tol, "%s: a step of 2 decodes and 2 prefill chunks, and 3 batched decodes after it, match one "
                         "sequence per step (%.2g)", what, worst);
        ok(same_argmax, "%s: and every row's argmax is the same", what);
    }
    free(za);
    free(zb);
    llm_free(m);
}

/* Rows whose argmax agrees, rows whose GPU argmax is in the CPU's top 5,
 * and the RMS of (gpu - cpu) over the RMS of cpu, over `rows` rows. */
struct agree {
    int rows, argmax, top5;
    double se, ss;
};

static void agree_add(struct agree *a, const float *gpu, const float *cpu, int rows, int V)
{
    for (int r = 0; r < rows; r++) {
        const float *g = gpu + (size_t)r * V, *c = cpu + (size_t)r * V;
        int32_t ga = argmax(g, V), ca = argmax(c, V);
        int above = 0;          /* CPU logits above the CPU's value at the GPU's argmax */
        for (int i = 0; i < V; i++) {
            above += c[i] > c[ga];
            double d = (double)g[i] - c[i];
            a->se += isfinite(d) ? d * d : INFINITY;
            a->ss += (double)c[i] * c[i];
        }
        a->rows++;
        a->argmax += ga == ca;
        a->top5 += above < 5;
    }
}

/* (e) One sequence to the end of the context: a prefill in chunks of 256 up
 * to position P - 24 (the last chunk's rows all returned), then 24 decode
 * steps to position P - 1, on both backends from a scrambled block table.
 * Every row: argmax agreement, the GPU's argmax in the CPU's top 5, the RMS
 * error; the decode rows near P also within tol of the CPU's. */
static void compare_long(const struct gpt2_checkpoint *ck, const char *what, double tol)
{
    enum { CH = 256, DEC = 24 };
    int V = ck->cfg.vocab_size, P = ck->cfg.n_positions, nb = (P + 15) / 16, pre = P - DEC;
    int32_t *toks = malloc(sizeof(int32_t) * (size_t)P), *table = malloc(sizeof(int32_t) * (size_t)nb);
    shuffle(table, nb);
    for (int t = 0; t < P; t++)
        toks[t] = irand(V);
    struct llm_model *cpu = load_on(ck, LLM_DEVICE_CPU, nb, CH, what);
    struct llm_model *gpu = cpu ? load_on(ck, LLM_DEVICE_CUDA, nb, CH, what) : NULL;
    float *a = malloc(sizeof(float) * (size_t)V * CH), *b = malloc(sizeof(float) * (size_t)V * CH);
    struct agree ag = {0};
    double worst = 0;
    int rc = cpu && gpu ? 0 : -1;
    for (int p = 0; p < pre && rc == 0; p += CH) {
        int n = pre - p < CH ? pre - p : CH;
        bool last = p + n == pre;
        struct llm_seq sq = {toks + p, n, p, table, nb, last ? LLM_LOGITS_ALL : LLM_LOGITS_NONE};
        rc = step(cpu, &sq, 1, a, what) || step(gpu, &sq, 1, b, what) ? -1 : 0;
        if (rc == 0 && last)
            agree_add(&ag, b, a, n, V);
    }
    for (int k = 0; k < DEC && rc == 0; k++) {
        struct llm_seq sq = {toks + pre + k, 1, pre + k, table, nb, LLM_LOGITS_LAST};
        rc = step(cpu, &sq, 1, a, what) || step(gpu, &sq, 1, b, what) ? -1 : 0;
        if (rc == 0) {
            agree_add(&ag, b, a, 1, V);
            worst = fmax(worst, rows_err(b, a, 1, V));
        }
    }
    if (rc == 0) {
        double rms = ag.ss > 0 ? sqrt(ag.se / ag.ss) : INFINITY;
        tap_diag("%s: to position %d: argmax agrees on %d of %d rows, in the CPU's top 5 on %d; RMS error %.3g; "
                 "worst decode row %.3g", what, P - 1, ag.argmax, ag.rows, ag.top5, rms, worst);
        ok(ag.argmax * 100 >= ag.rows * 95, "%s: argmax equal to the CPU's on >= 95%% of %d rows up to position %d "
           "(%d)", what, ag.rows, P - 1, ag.argmax);
        ok(ag.top5 == ag.rows, "%s: the GPU's argmax is in the CPU's top 5 on every row (%d of %d)", what, ag.top5,
           ag.rows);
        ok(rms <= tol / 2, "%s: RMS error of the logits <= %g of the CPU's RMS (%.3g)", what, tol / 2, rms);
        ok(worst <= tol, "%s: decode rows at positions %d..%d within %g of the CPU's (%.3g)", what, pre, P - 1, tol,
           worst);
    }
    free(a);
    free(b);
    free(toks);
    free(table);
    llm_free(cpu);
    llm_free(gpu);
}

/* The debug modes of the CUDA backend: LLMCGI_CUDA_CHECK_KV=1 fails a step
 * whose attention reads KV positions no step wrote, and passes one that
 * reads only what was written; LLMCGI_CUDA_SYNC=1 gives the same logits. */
static void test_debug_modes(const struct gpt2_checkpoint *ck, const char *what)
{
    int V = ck->cfg.vocab_size;
    int32_t toks[8], table[2] = {1, 0};
    for (int i = 0; i < 8; i++)
        toks[i] = irand(V);
    float *a = malloc(sizeof(float) * (size_t)V), *b = malloc(sizeof(float) * (size_t)V);
    char err[512] = "";
    setenv("LLMCGI_CUDA_CHECK_KV", "1", 1);
    struct llm_model *m = load_on(ck, LLM_DEVICE_CUDA, 2, 8, what);
    unsetenv("LLMCGI_CUDA_CHECK_KV");
    if (m) {
        struct llm_seq s = {toks + 7, 1, 7, table, 2, LLM_LOGITS_LAST};
        int rc = llm_forward(m, &s, 1, a, err, sizeof err);
        ok(rc == -1, "%s: LLMCGI_CUDA_CHECK_KV=1: a decode at position 7 over blocks never written fails", what);
        has_str(err, "no step wrote", "  saying what was read (%s)", err);
        s = (struct llm_seq){toks, 7, 0, table, 2, LLM_LOGITS_NONE};
        struct llm_seq d = {toks + 7, 1, 7, table, 2, LLM_LOGITS_LAST};
        ok(llm_forward(m, &s, 1, a, err, sizeof err) == 0 && llm_forward(m, &d, 1, a, err, sizeof err) == 0,
           "%s:   and the same decode after a prefill of positions 0-6 passes (%s)", what, err);
        llm_free(m);
    }
    setenv("LLMCGI_CUDA_SYNC", "1", 1);
    m = load_on(ck, LLM_DEVICE_CUDA, 2, 8, what);
    unsetenv("LLMCGI_CUDA_SYNC");
    struct llm_model *plain = load_on(ck, LLM_DEVICE_CUDA, 2, 8, what);
    if (m && plain) {
        struct llm_seq s = {toks, 8, 0, table, 2, LLM_LOGITS_LAST};
        ok(step(m, &s, 1, a, what) == 0 && step(plain, &s, 1, b, what) == 0 && rows_err(a, b, 1, V) <= 1e-6,
           "%s: LLMCGI_CUDA_SYNC=1 (a synchronisation after every launch): the same logits", what);
    }
    llm_free(m);
    llm_free(plain);
    free(a);
    free(b);
}


/* (f) Decode steps through CUDA graphs (a bucket per batch size, padded rows
 * writing only the sink block) give what plain launches give
 * (LLMCGI_CUDA_GRAPHS=0): NS sequences prefilled, then decode steps whose
 * batch sizes walk 5, 3, 1, 2, 4, 5 ... (buckets 8, 4, 1, 2, 4, 8), every
 * sequence's position moving, the pool filled by the sequences themselves so
 * a padding row landing in a real block would change a later step; also
 * under LLMCGI_CUDA_CHECK_KV (the padding rows read only what they wrote). */
static void compare_graphs(const struct gpt2_checkpoint *ck, const char *what, double tol)
{
    enum { NS = 5, BPS = 3, PRE = 7, STEPS = 18 };
    int V = ck->cfg.vocab_size;
    static const int sizes[] = {5, 3, 1, 2, 4};
    int32_t toks[NS][64], tab[NS][BPS], perm[NS * BPS];
    for (int s = 0; s < NS; s++)
        for (int t = 0; t < 64; t++)
            toks[s][t] = irand(V);
    shuffle(perm, NS * BPS);
    for (int s = 0; s < NS; s++)
        for (int b = 0; b < BPS; b++)
            tab[s][b] = perm[s * BPS + b];
    setenv("LLMCGI_CUDA_CHECK_KV", "1", 1);
    struct llm_model *g = load_on(ck, LLM_DEVICE_CUDA, NS * BPS, 16, what);
    unsetenv("LLMCGI_CUDA_CHECK_KV");
    setenv("LLMCGI_CUDA_GRAPHS", "0", 1);
    struct llm_model *p = load_on(ck, LLM_DEVICE_CUDA, NS * BPS, 16, what);
    unsetenv("LLMCGI_CUDA_GRAPHS");
    float *za = malloc(sizeof(float) * (size_t)V * NS), *zb = malloc(sizeof(float) * (size_t)V * NS);
    int rc = g && p && za && zb ? 0 : -1, pos[NS], same_argmax = 1, steps = 0;
    double worst = 0;
    struct llm_seq seqs[NS];
    for (int s = 0; s < NS && rc == 0; s++) {
        seqs[0] = (struct llm_seq){toks[s], PRE, 0, tab[s], BPS, LLM_LOGITS_NONE};
        rc = step(g, seqs, 1, za, what);
        if (rc == 0)
            rc = step(p, seqs, 1, zb, what);
        pos[s] = PRE;
    }
    for (int k = 0; k < STEPS && rc == 0; k++) {
        int n = sizes[k % 5], first = k % NS;
        for (int i = 0; i < n; i++) {
            int s = (first + i) % NS;
            seqs[i] = (struct llm_seq){&toks[s][pos[s]], 1, pos[s], tab[s], BPS, LLM_LOGITS_LAST};
        }
        rc = step(g, seqs, n, za, what);
        if (rc == 0)
            rc = step(p, seqs, n, zb, what);
        if (rc != 0)
            break;
        worst = fmax(worst, rows_err(za, zb, n, V));
        for (int i = 0; i < n; i++) {
            same_argmax &= argmax(za + (size_t)i * V, V) == argmax(zb + (size_t)i * V, V);
            pos[(first + i) % NS]++;
        }
        steps++;
    }
    if (rc == 0) {
        ok(worst <= tol, "%s: %d decode steps of 5, 3, 1, 2, 4 sequences as CUDA graphs (padded to 8, 4, 1, 2, 4) "
                         "match plain launches (%.2g), under the KV check", what, steps, worst);
        ok(same_argmax, "%s: and every row's argmax is the same", what);
    }
    free(za);
    free(zb);
    llm_free(g);
    llm_free(p);
}

/* The request of history h[0..len) whose first n0 ids are the prompt, as
 * the engine's sampler makes it (sampler_greedy_row): distinct ids of the
 * context, distinct generated ids and their counts, in ids (3 * len ints). */
static void greedy_row(struct ksample_row *r, const int32_t *h, int len, int n0, int V, float rep, float fp, float pp,
                       int top_n, int32_t *ids)
{
    int k = 0;
    for (int i = 0; i < len; i++) {
        int dup = 0;
        for (int j = 0; j < k && !dup; j++)
            dup = ids[j] == h[i];
        if (!dup && h[i] >= 0 && h[i] < V)
            ids[k++] = h[i];
    }
    int g = 0;
    int32_t *gid = ids + k, *cnt = ids + k + (len - n0);
    for (int i = n0; i < len; i++) {
        int j = 0;
        while (j < g && gid[j] != h[i])
            j++;
        if (j == g) {
            gid[g] = h[i];
            cnt[g++] = 0;
        }
        cnt[j]++;
    }
    memmove(ids + k + g, cnt, sizeof(int32_t) * (size_t)g);
    *r = (struct ksample_row){rep, ids, k, fp, pp, gid, ids + k + g, g, top_n};
}

/* (g) Greedy steps chosen on the device (llm_forward_greedy: the LM head
 * then kcu_sample_greedy, inside the decode graph) against the same GPU
 * model's logits chosen by ksample_greedy_ref on the host (the same ids and
 * alternatives, logprobs within 1 ulp), and against the CPU backend's greedy
 * path (the same ids on an F32 model), over a prefill step (plain launches)
 * and decode steps of 5, 3, 1, 2, 4 sequences (graphs padded to 8, 4, 1, 2,
 * 4), with every penalty and top_n. */
static void compare_greedy_device(const struct gpt2_checkpoint *ck, const char *what, bool same_ids)
{
    enum { NS = 5, BPS = 3, PRE = 7, STEPS = 15, MAXL = 48 };
    static const float reps[NS] = {1, 1.3f, 1, 0.8f, 1.2f}, fps[NS] = {0, 0, 0.6f, -0.5f, 0.4f},
                       pps[NS] = {0, 0, 0.3f, 1.0f, -0.2f};
    static const int tops[NS] = {0, 5, 20, 1, 3}, sizes[] = {5, 3, 1, 2, 4};
    int V = ck->cfg.vocab_size;
    int32_t h[NS][MAXL], tab[NS][BPS], perm[NS * BPS], ids[NS][3 * MAXL];
    int len[NS];
    for (int s = 0; s < NS; s++) {
        for (int t = 0; t < PRE; t++)
            h[s][t] = irand(V);
        len[s] = PRE;
    }
    shuffle(perm, NS * BPS);
    for (int s = 0; s < NS; s++)
        for (int b = 0; b < BPS; b++)
            tab[s][b] = perm[s * BPS + b];
    struct llm_model *g = load_on(ck, LLM_DEVICE_CUDA, NS * BPS, NS * PRE, what);
    struct llm_model *c = load_on(ck, LLM_DEVICE_CPU, NS * BPS, NS * PRE, what);
    float *z = malloc(sizeof(float) * (size_t)V * NS), *scratch = malloc(sizeof(float) * (size_t)V * NS);
    struct ksample_row rows[NS];
    struct ksample_out dev[NS], host[NS], cpu[NS];
    struct llm_seq seqs[NS];
    int rc = g && c && z && scratch ? 0 : -1, rows_seen = 0, same_dev = 0, same_cpu = 0;
    char err[512];
    for (int k = -1; k < STEPS && rc == 0; k++) {
        /* k = -1: every prompt in one step (plain launches); then decode steps */
        int n = k < 0 ? NS : sizes[k % 5], first = k < 0 ? 0 : k % NS;
        for (int i = 0; i < n; i++) {
            int s = (first + i) % NS, from = k < 0 ? 0 : len[s] - 1;
            seqs[i] = (struct llm_seq){&h[s][from], len[s] - from, from, tab[s], BPS, LLM_LOGITS_LAST};
            greedy_row(&rows[i], h[s], len[s], PRE, V, reps[s], fps[s], pps[s], tops[s], ids[s]);
        }
        if (step(g, seqs, n, z, what) != 0 ||
            llm_forward_greedy(g, seqs, n, rows, dev, NULL, err, sizeof err) != 0 ||
            llm_forward_greedy(c, seqs, n, rows, cpu, scratch, err, sizeof err) != 0) {
            ok(0, "%s: greedy step %d: %s", what, k, err);
            rc = -1;
            break;
        }
        for (int i = 0; i < n; i++) {
            int s = (first + i) % NS;
            if (ksample_greedy_ref(z + (size_t)i * V, V, &rows[i], &host[i]) != 0)
                host[i].id = -1;
            bool eq = dev[i].id == host[i].id && dev[i].n_top == host[i].n_top &&
                      fabsf(dev[i].logprob - host[i].logprob) <= fabsf(host[i].logprob) * FLT_EPSILON;
            for (int j = 0; eq && j < host[i].n_top; j++)
                eq = dev[i].top_id[j] == host[i].top_id[j] &&
                     fabsf(dev[i].top_logprob[j] - host[i].top_logprob[j]) <= fabsf(host[i].top_logprob[j]) * FLT_EPSILON;
            if (!eq)
                printf("# %s step %d seq %d: device id %d (%.9g, %d top), host %d (%.9g, %d top)\n", what, k, s,
                       dev[i].id, dev[i].logprob, dev[i].n_top, host[i].id, host[i].logprob, host[i].n_top);
            same_dev += eq;
            same_cpu += cpu[i].id == dev[i].id;
            rows_seen++;
            if (len[s] < MAXL && dev[i].id >= 0)
                h[s][len[s]++] = dev[i].id;
        }
    }
    if (rc == 0) {
        is_int(same_dev, rows_seen, "%s: %d greedy rows chosen on the device as ksample_greedy_ref chooses from the "
               "GPU's logits (penalties, top_n, graphs)", what, rows_seen);
        if (same_ids)
            is_int(same_cpu, rows_seen, "%s: and as the CPU backend's greedy path", what);
        else
            printf("# %s: %d of %d rows as the CPU backend's greedy path\n", what, same_cpu, rows_seen);
    }
    free(z);
    free(scratch);
    llm_free(g);
    llm_free(c);
}

static void test_models(void)
{
    /* The 124M shape is left out under the sanitizers and LLMCGI_CUDA_QUICK
     * (tools/gpu-check's compute-sanitizer run). */
    const char *san = getenv("LLMCGI_SANITIZERS"), *quick = getenv("LLMCGI_CUDA_QUICK");
    bool big = !(san && !strcmp(san, "yes")) && !(quick && *quick && strcmp(quick, "0"));
    static const enum ckpt_dtype dts[] = {CKPT_F32, CKPT_F16, CKPT_BF16};
    for (size_t k = 0; k < 3; k++) {
        enum ckpt_dtype dt = dts[k];
        double tol = dt == CKPT_F32 ? 1e-4 : 2e-2;
        char name[64];
        struct gen_gpt2_opts o;

        /* the tiny default shape */
        gen_gpt2_defaults(&o);
        o.dtype = dt;
        snprintf(name, sizeof name, "tiny-%s", dt_name(dt));
        struct gpt2_checkpoint *ck = make_model(name, &o);
        if (ck) {
            compare_backends(ck, name, tol);
            if (dt == CKPT_F32)
                compare_greedy(ck, name, 64);
            if (dt != CKPT_F16)
                compare_batched(ck, name, dt == CKPT_F32 ? 1e-5 : 1e-2);
            if (dt == CKPT_F32)
                test_debug_modes(ck, name);
            compare_graphs(ck, name, dt == CKPT_F32 ? 1e-5 : 1e-2);
            compare_greedy_device(ck, name, dt == CKPT_F32);
            drop_model(ck);
        }

        /* odd sizes everywhere, untied head, erf GELU, prefixed names */
        gen_gpt2_defaults(&o);
        o.dtype = dt;
        o.n_layer = 3;
        o.n_head = 3;
        o.n_embd = 96;
        o.n_inner = 200;
        o.n_positions = 80;
        o.vocab_size = 1003;
        o.untied = true;
        o.prefix = true;
        o.activation = "gelu";
        o.seed = 77;
        snprintf(name, sizeof name, "odd-%s", dt_name(dt));
        ck = make_model(name, &o);
        if (ck) {
            compare_backends(ck, name, tol);
            if (dt == CKPT_F32)
                compare_greedy(ck, name, 64);
            drop_model(ck);
        }

        /* the 124M shape, in half precision */
        if (dt != CKPT_F32 && big) {
            gen_gpt2_defaults(&o);
            o.dtype = dt;
            o.n_layer = 12;
            o.n_head = 12;
            o.n_embd = 768;
            o.n_positions = 1024;
            snprintf(name, sizeof name, "gpt2-124M-shape-%s", dt_name(dt));
            ck = make_model(name, &o);
            if (ck) {
                compare_backends(ck, name, tol);
                compare_long(ck, name, tol);
                compare_batched(ck, name, 1e-2);
                compare_graphs(ck, name, 1e-2);
                compare_greedy_device(ck, name, false);
                drop_model(ck);
            }
        }
    }
}
#endif /* HAVE_CUDA */

int main(void)
{
    if (scratch_make(tmp_root, sizeof tmp_root, "llmcgi-cuda") != 0)
        return printf("Bail out! mkdtemp failed\n"), 1;
    struct gpu_info g;
    gpu_probe(&g, false);
    test_device_selection(&g);
    const char *seed = getenv("LLMCGI_TEST_SEED");
    rng = seed ? strtoull(seed, NULL, 0) : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    tap_diag("random seed %llu (LLMCGI_TEST_SEED repeats it)", (unsigned long long)rng);
    test_references();
    /* On the GPU machine (tools/gpu-check sets it) no device is a failure, not a skip. */
    const char *req = getenv("LLMCGI_REQUIRE_GPU");
    bool require = req && *req && strcmp(req, "0");
#ifndef HAVE_CUDA
    if (require)
        ok(0, "LLMCGI_REQUIRE_GPU is set, but this build has no CUDA backend (%s)", g.error);
    else
        printf("ok %d # SKIP kernels and models: %s\n", ++tap_count, g.error);
#else
    if (g.devices == 0 && require) {
        ok(0, "LLMCGI_REQUIRE_GPU is set, but there is no usable CUDA device: %s", g.error);
    } else if (g.devices == 0) {
        printf("ok %d # SKIP kernels: no CUDA device (%s)\n", ++tap_count, g.error);
        printf("ok %d # SKIP whole models against the CPU: no CUDA device\n", ++tap_count);
    } else {
        tap_diag("device %s (sm_%d%d)", g.name, g.cc_major, g.cc_minor);
        /* LLMCGI_CUDA_TESTS=kernels or models runs one half (the sanitizer runs of tools/gpu-check). */
        const char *which = getenv("LLMCGI_CUDA_TESTS");
        if (!which || !*which || strstr(which, "kernels"))
            test_kernels();
        if (!which || !*which || strstr(which, "models"))
            test_models();
    }
#endif
    scratch_remove(tmp_root);
    int rc = tap_done();
    return require && tap_failures ? 1 : rc;   /* and a failing exit status for scripts */
}
